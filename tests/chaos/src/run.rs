//! One run: the plan's topics and members, producers writing while the faults come
//! at their moments, then waits (each with a hang guard, never a timing threshold)
//! until every acknowledged record was handled, everything is committed and the group
//! has settled, and the invariants checked on what was seen.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use klife::TopicPartition;
use tokio::sync::watch;

use crate::check::{self, Violation, names};
use crate::cluster::Target;
use crate::members::{Member, Setup, client};
use crate::observe::{Log, MemberId};
use crate::plan::{Broker, Fault, Plan};
use crate::produce::{PartitionCounts, Sent, produce};

/// What a run found.
#[derive(Debug, Clone)]
pub struct Report {
    /// The plan.
    pub plan: Plan,
    /// The invariants broken.
    pub violations: Vec<Violation>,
    /// The faults applied, by kind.
    pub faults: BTreeMap<&'static str, usize>,
    /// How long it took.
    pub wall: Duration,
    /// Records acknowledged.
    pub acked: usize,
    /// Records whose produce failed.
    pub failed: usize,
    /// The first produce failure, if any.
    pub first_failure: Option<String>,
    /// Distinct records handled.
    pub handled: usize,
    /// Records handled again.
    pub repeats: usize,
    /// Ownerships that ended in a hard failure.
    pub hard_failures: usize,
    /// Batches held past the rebalance timeout.
    pub stalls: usize,
    /// The most records of one partition handled again per hard failure of it.
    pub worst_repeats_per_failure: usize,
}

impl Report {
    /// The report of `plan` before anything ran.
    pub fn new(plan: Plan) -> Report {
        Report {
            plan,
            violations: Vec::new(),
            faults: BTreeMap::new(),
            wall: Duration::ZERO,
            acked: 0,
            failed: 0,
            first_failure: None,
            handled: 0,
            repeats: 0,
            hard_failures: 0,
            stalls: 0,
            worst_repeats_per_failure: 0,
        }
    }
}

/// How long any wait of a run may take before the run fails as hung.
fn hang_guard(plan: &Plan) -> Duration {
    match plan.broker {
        Broker::Testkit => Duration::from_secs(120),
        // A Kafka node killed with SIGKILL recovers its logs before it serves again.
        Broker::Kafka => Duration::from_secs(300),
    }
}

struct Ctx {
    setup: Setup,
    target: Target,
    admin: klife::Client,
    counts: Arc<PartitionCounts>,
    slots: Vec<tokio::sync::Mutex<Option<Member>>>,
    incarnations: Vec<AtomicU32>,
    /// Brokers go down, and leaders and coordinators move, one at a time.
    cluster_wide: tokio::sync::Mutex<()>,
    adding_partitions: tokio::sync::Mutex<()>,
    problems: Mutex<Vec<Violation>>,
    applied: Mutex<BTreeMap<&'static str, usize>>,
}

impl Ctx {
    fn problem(&self, invariant: &'static str, evidence: impl Into<String>) {
        self.problems.lock().unwrap_or_else(PoisonError::into_inner).push(Violation::new(invariant, evidence));
    }

    /// Starts the next member of `slot` into `place`.
    async fn restart(&self, slot: usize, place: &mut Option<Member>) {
        let incarnation = self.incarnations[slot].fetch_add(1, Ordering::SeqCst) + 1;
        match Member::start(&self.setup, MemberId { slot, incarnation }).await {
            Ok(m) => *place = Some(m),
            Err(e) => self.problem(names::LIVENESS, e),
        }
    }

    /// Shuts a member down gracefully, within the hang guard.
    async fn leave(&self, member: Member) {
        let id = member.id;
        match tokio::time::timeout(hang_guard(&self.setup.plan), member.leave()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => self.problem(names::LIVENESS, e),
            Err(_) => self.problem(names::LIVENESS, format!("member {id}'s graceful shutdown hung")),
        }
    }

    async fn apply(&self, fault: &Fault) {
        let plan = &self.setup.plan;
        match fault {
            Fault::Kill { slot, restart_ms } => {
                let mut place = self.slots[*slot].lock().await;
                if let Some(m) = place.take() {
                    m.kill(&self.setup.log).await;
                }
                // Classic sessions are at least 6 s on klife-testkit: the cluster clock
                // runs ahead so that the killed member expires sooner.
                if let (Some(c), true) = (self.target.testkit(), plan.classic()) {
                    c.advance_clock(plan.timing.session.saturating_sub(Duration::from_secs(3)));
                }
                tokio::time::sleep(Duration::from_millis(*restart_ms)).await;
                self.restart(*slot, &mut place).await;
            }
            Fault::Leave { slot, restart_ms } => {
                let mut place = self.slots[*slot].lock().await;
                if let Some(m) = place.take() {
                    self.leave(m).await;
                }
                tokio::time::sleep(Duration::from_millis(*restart_ms)).await;
                self.restart(*slot, &mut place).await;
            }
            Fault::Stall { slot, bounce } => {
                if let Some(m) = self.slots[*slot].lock().await.as_ref() {
                    m.stall();
                }
                let mut place = self.slots[*bounce].lock().await;
                if let Some(m) = place.take() {
                    self.leave(m).await;
                }
                self.restart(*bounce, &mut place).await;
            }
            Fault::AddPartitions { topic, add } => {
                // One at a time: each asks for the count it read plus its own.
                let _one_at_a_time = self.adding_partitions.lock().await;
                // Kafka refuses new partitions while a node is down (their replication
                // factor cannot be met): not while a broker fault runs.
                let _no_node_down = match plan.broker {
                    Broker::Kafka => Some(self.cluster_wide.lock().await),
                    Broker::Testkit => None,
                };
                let name = &self.setup.topics[*topic];
                let total = self.counts.get(*topic) + add;
                match self.admin.create_partitions(name, total).await {
                    Ok(()) => {
                        self.target.await_partitions(&self.admin, name, total).await;
                        self.counts.set(*topic, total);
                    }
                    Err(e) => self.problem(names::LIVENESS, format!("adding partitions to {name}: {e}")),
                }
            }
            other => {
                let _one_at_a_time = if other.is_cluster_wide() { Some(self.cluster_wide.lock().await) } else { None };
                if let Err(e) = self.target.apply(&self.admin, &self.setup.group, &self.setup.topics, other).await {
                    self.problem(names::LIVENESS, format!("{other}: {e}"));
                }
            }
        }
        *self.applied.lock().unwrap_or_else(PoisonError::into_inner).entry(fault.kind()).or_default() += 1;
    }

    /// The live members, with their group member ids.
    async fn live(&self) -> Vec<(MemberId, String)> {
        let mut out = Vec::new();
        for slot in &self.slots {
            if let Some(m) = slot.lock().await.as_ref() {
                out.push((m.id, m.member_id()));
            }
        }
        out
    }

    /// What each live member says of itself (evidence).
    async fn statuses(&self) -> String {
        let mut statuses = Vec::new();
        for slot in &self.slots {
            if let Some(m) = slot.lock().await.as_ref() {
                statuses.push(format!("{}: {}", m.id, m.status()));
            }
        }
        statuses.join("; ")
    }

    /// Whether the group has settled: its members are the live members, each
    /// partition is assigned to exactly one of them, and that one runs it. `Err` says
    /// what is not so yet.
    async fn settled(&self) -> Result<(), String> {
        let live = self.live().await;
        let ids: HashMap<&str, MemberId> = live.iter().map(|(m, id)| (id.as_str(), *m)).collect();
        let d = self.admin.describe_group(&self.setup.group).await.map_err(|e| format!("describe_group: {e}"))?;
        let mut owner: BTreeMap<TopicPartition, MemberId> = BTreeMap::new();
        for m in &d.members {
            let Some(member) = ids.get(m.member_id.as_str()) else {
                return Err(format!("{} is in the group ({:?}) but is no live member", m.member_id, d.state));
            };
            if let Some(target) = &m.target_assignment {
                let (mut a, mut t) = (m.assignment.clone(), target.clone());
                a.sort();
                t.sort();
                if a != t {
                    return Err(format!("{member} owns {a:?}, its target is {t:?}"));
                }
            }
            for tp in &m.assignment {
                if let Some(other) = owner.insert(tp.clone(), *member) {
                    return Err(format!("{tp} assigned to {member} and {other}"));
                }
            }
        }
        if d.members.len() != live.len() {
            let described: Vec<String> =
                d.members.iter().map(|m| format!("{} owns {:?}", m.member_id, m.assignment)).collect();
            return Err(format!(
                "{} live members, {} in the group ({:?}, epoch {:?}): live [{}]; group [{}]",
                live.len(),
                d.members.len(),
                d.state,
                d.epoch,
                self.statuses().await,
                described.join("; ")
            ));
        }
        let partitions = self.counts.partitions(&self.setup.topics);
        self.setup.log.read(|s| {
            for tp in &partitions {
                let Some(member) = owner.get(tp) else { return Err(format!("{tp} is assigned to no member")) };
                let running = s.open_owners(tp);
                if running != [*member] {
                    return Err(format!("{tp} is assigned to {member}, its consumer runs on {running:?}"));
                }
            }
            Ok(())
        })
    }
}

/// Runs a plan.
pub async fn run(plan: Plan) -> Report {
    let started = Instant::now();
    let plan = Arc::new(plan);
    let mut report = Report::new((*plan).clone());
    if let Err(e) = run_in(plan.clone(), &mut report).await {
        report.violations.push(Violation::new(names::LIVENESS, e));
    }
    report.wall = started.elapsed();
    report
}

async fn run_in(plan: Arc<Plan>, report: &mut Report) -> Result<(), String> {
    let guard = hang_guard(&plan);
    let target = Target::start(&plan).await?;
    let kafka = plan.broker == Broker::Kafka;
    let addresses = target.addresses();
    let admin = client(&addresses, kafka).await?;
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let run_id = format!("chaos-{}-{}-{nanos}", plan.seed, std::process::id());
    let topics: Vec<String> = (0..plan.topics.len()).map(|i| format!("{run_id}-t{i}")).collect();
    let group = format!("{run_id}-g");
    for (name, partitions) in topics.iter().zip(&plan.topics) {
        target.create_topic(&admin, name, *partitions).await?;
    }
    if !plan.classic() {
        target.configure_group(&admin, &group, &plan.timing).await?;
    }
    let log = Log::default();
    let setup = Setup {
        plan: plan.clone(),
        addresses: addresses.clone(),
        group: group.clone(),
        topics: topics.clone(),
        log: log.clone(),
    };
    let counts = PartitionCounts::new(&plan.topics);
    let members = plan.protocols.len();
    let ctx = Arc::new(Ctx {
        setup,
        target,
        admin,
        counts: counts.clone(),
        slots: (0..members).map(|_| tokio::sync::Mutex::new(None)).collect(),
        incarnations: (0..members).map(|_| AtomicU32::new(0)).collect(),
        cluster_wide: tokio::sync::Mutex::new(()),
        adding_partitions: tokio::sync::Mutex::new(()),
        problems: Mutex::new(Vec::new()),
        applied: Mutex::new(BTreeMap::new()),
    });
    for slot in 0..members {
        let mut place = ctx.slots[slot].lock().await;
        match Member::start(&ctx.setup, MemberId { slot, incarnation: 0 }).await {
            Ok(m) => *place = Some(m),
            Err(e) => return Err(e),
        }
    }

    let (stop_watch, stopped) = watch::channel(false);
    let watcher = tokio::spawn(watch_commits(ctx.clone(), stopped));
    let mut producers = Vec::new();
    for index in 0..plan.producers {
        let client = client(&addresses, kafka).await?;
        producers.push(tokio::spawn(produce(plan.clone(), client, topics.clone(), counts.clone(), index)));
    }
    let scheduler = tokio::spawn(schedule(ctx.clone(), guard));

    let mut sent: Vec<Sent> = Vec::new();
    for p in producers {
        match p.await {
            Ok(Ok(records)) => sent.extend(records),
            Ok(Err(e)) => ctx.problem(names::LIVENESS, e),
            Err(e) => ctx.problem(names::LIVENESS, format!("a producer task ended abnormally: {e}")),
        }
    }
    if let Err(e) = scheduler.await {
        ctx.problem(names::LIVENESS, format!("the fault scheduler ended abnormally: {e}"));
    }
    ctx.target.calm();
    let acked: Vec<&Sent> = sent.iter().filter(|s| s.outcome.is_ok()).collect();
    report.acked = acked.len();
    report.failed = sent.len() - acked.len();
    report.first_failure = sent.iter().find_map(|s| s.outcome.as_ref().err().map(|e| format!("{}: {e}", s.partition)));

    // Every acknowledged record handled.
    let wanted: Vec<(TopicPartition, i64)> =
        acked.iter().filter_map(|s| s.outcome.as_ref().ok().map(|o| (s.partition.clone(), *o))).collect();
    let all_handled = log.until(guard, |s| wanted.iter().all(|k| s.handled.contains_key(k))).await;
    // Everything committed: each partition's committed offset at its log end.
    let partitions = counts.partitions(&topics);
    let mut ends = BTreeMap::new();
    let mut committed_evidence = String::new();
    if all_handled {
        let deadline = Instant::now() + guard;
        loop {
            let (e, c) =
                (ctx.target.ends(&ctx.admin, &partitions).await, ctx.target.committed(&ctx.admin, &group).await);
            if let (Ok(e), Ok(c)) = (&e, &c) {
                let behind: Vec<String> = e
                    .iter()
                    .filter(|(tp, end)| c.get(*tp).copied().unwrap_or(0) != **end)
                    .map(|(tp, end)| format!("{tp} committed {:?}, end {end}", c.get(tp)))
                    .collect();
                ends = e.clone();
                if behind.is_empty() {
                    committed_evidence.clear();
                    break;
                }
                committed_evidence = behind.join("; ");
            } else {
                committed_evidence = format!("ends {e:?}, committed {c:?}");
            }
            if Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if !committed_evidence.is_empty() {
            ctx.problem(names::COMMITTED, format!("after {guard:?}: {committed_evidence}"));
        }
        // One live owner per partition.
        let deadline = Instant::now() + guard;
        loop {
            match ctx.settled().await {
                Ok(()) => break,
                Err(e) if Instant::now() > deadline => {
                    ctx.problem(names::OWNERS, format!("not settled after {guard:?}: {e}"));
                    break;
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    } else {
        let stuck: BTreeMap<TopicPartition, (i64, usize)> = log.read(|s| {
            let mut out: BTreeMap<TopicPartition, (i64, usize)> = BTreeMap::new();
            for (tp, o) in wanted.iter().filter(|k| !s.handled.contains_key(*k)) {
                let e = out.entry(tp.clone()).or_insert((*o, 0));
                e.0 = e.0.min(*o);
                e.1 += 1;
            }
            out
        });
        let committed = ctx.target.committed(&ctx.admin, &group).await.unwrap_or_default();
        let partitions: Vec<String> = stuck
            .iter()
            .map(|(tp, (first, n))| {
                format!(
                    "{tp}: {n} from offset {first}, committed {:?}, owners {}",
                    committed.get(tp),
                    log.read(|s| s.history(tp))
                )
            })
            .collect();
        ctx.problem(
            names::LIVENESS,
            format!(
                "acknowledged records still not handled after {guard:?}: {}; members: {}",
                partitions.join("; "),
                ctx.statuses().await
            ),
        );
    }
    let _ = stop_watch.send(true);
    match watcher.await {
        Ok(found) => report.violations.extend(found),
        Err(e) => ctx.problem(names::LIVENESS, format!("the commit watcher ended abnormally: {e}")),
    }

    // The checks on what was seen, and on the logs.
    let mut logs = BTreeMap::new();
    for tp in &partitions {
        let end = ends.get(tp).copied().unwrap_or(i64::MAX);
        logs.insert(tp.clone(), ctx.target.log(&ctx.admin, tp, end).await);
    }
    log.read(|seen| {
        report.violations.extend(check::deliveries(&plan, seen, &acked));
        report.violations.extend(check::logs(seen, &sent, &logs));
        report.handled = seen.handled.len();
        report.repeats = seen.repeats.values().sum();
        let hard = seen.hard_failures();
        report.hard_failures = hard.values().sum();
        report.worst_repeats_per_failure = seen
            .repeats
            .iter()
            .filter_map(|(tp, n)| hard.get(tp).filter(|f| **f > 0).map(|f| n.div_ceil(*f)))
            .max()
            .unwrap_or(0);
    });
    report.stalls = log.stalls();

    for slot in &ctx.slots {
        if let Some(m) = slot.lock().await.take() {
            ctx.leave(m).await;
        }
    }
    if kafka {
        let _ = ctx.admin.delete_groups(&[group.as_str()]).await;
        let _ = ctx.admin.delete_topics(&topics).await;
    }
    ctx.admin.close().await;
    report.faults = ctx.applied.lock().unwrap_or_else(PoisonError::into_inner).clone();
    report.violations.extend(ctx.problems.lock().unwrap_or_else(PoisonError::into_inner).drain(..));
    if let Ok(ctx) = Arc::try_unwrap(ctx) {
        if let Target::Testkit(c) = ctx.target {
            c.shutdown().await;
        }
    }
    Ok(())
}

/// Applies the plan's faults, each once the records handled reach its moment; faults
/// overlap (a member restarting while a broker is down), each in a task of its own.
async fn schedule(ctx: Arc<Ctx>, guard: Duration) {
    let plan = ctx.setup.plan.clone();
    let mut tasks = Vec::new();
    for (i, s) in plan.faults.iter().enumerate() {
        let threshold = plan.records * s.permille as usize / 1000;
        let reached = tokio::time::timeout(guard, async {
            while ctx.setup.log.distinct() < threshold {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        if reached.is_err() {
            ctx.problem(
                names::LIVENESS,
                format!(
                    "{} records handled after {guard:?}, fault {i} ({}) waits for {threshold}",
                    ctx.setup.log.distinct(),
                    s.fault
                ),
            );
            break;
        }
        let (ctx, fault) = (ctx.clone(), s.fault.clone());
        tasks.push(tokio::spawn(async move { ctx.apply(&fault).await }));
    }
    for t in tasks {
        if let Err(e) = t.await {
            ctx.problem(names::LIVENESS, format!("a fault's task ended abnormally: {e}"));
        }
    }
}

/// Reads the group's committed offsets all along the run; any that went backwards is
/// a violation.
async fn watch_commits(ctx: Arc<Ctx>, mut stop: watch::Receiver<bool>) -> Vec<Violation> {
    let every = match ctx.setup.plan.broker {
        Broker::Testkit => Duration::from_millis(10),
        Broker::Kafka => Duration::from_millis(250),
    };
    let mut highest: BTreeMap<TopicPartition, i64> = BTreeMap::new();
    let mut reported: BTreeSet<TopicPartition> = BTreeSet::new();
    let mut out = Vec::new();
    loop {
        if let Ok(committed) = ctx.target.committed(&ctx.admin, &ctx.setup.group).await {
            for (tp, offset) in committed {
                let top = highest.entry(tp.clone()).or_insert(offset);
                if offset < *top && reported.insert(tp.clone()) {
                    out.push(Violation::new(
                        names::BACKWARDS,
                        format!(
                            "{tp}: committed {offset} after {top}; owners: {}",
                            ctx.setup.log.read(|s| s.history(&tp))
                        ),
                    ));
                }
                *top = (*top).max(offset);
            }
        }
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = stop.changed() => return out,
        }
    }
}
