//! One load run: topics created, every group's members started and timed to a full
//! assignment, the producers started, progress watched until every group handled every
//! record of its topics (or nothing moved for the hang guard), then the checks, the
//! members shut down and the topics and groups deleted.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use klife::group::{ConsumerGroup, GroupProtocol, ResetPolicy, TopicConfig};
use klife::{Client, FetcherConfig, NewTopic, ProducerConfig};
use klife_testkit::FakeCluster;
use tokio::task::JoinHandle;

use crate::check::{self, Spread};
use crate::memory;
use crate::produce::{self, Produced};
use crate::settings::{Bound, BrokerKind, Settings};
use crate::track::{Clock, Counting, GroupTally, Layout};

/// How long the groups' commits may take to reach the end once everything was handled.
const COMMIT_PATIENCE: Duration = Duration::from_secs(60);
/// How long the topics' partitions may take to get leaders after creation.
const LEADER_PATIENCE: Duration = Duration::from_secs(180);
/// How often progress is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);
/// Problems listed by name before the rest are only counted.
const LISTED: usize = 20;

/// One group's numbers.
#[derive(Debug)]
pub(crate) struct GroupSummary {
    pub(crate) name: String,
    pub(crate) topics: Vec<usize>,
    pub(crate) partitions: usize,
    /// From the start of its first member to a complete, disjoint assignment.
    pub(crate) join: Option<Duration>,
    pub(crate) handled: u64,
    /// Seconds from the start of producing to the partitions' first and last records.
    pub(crate) firsts: Option<Spread>,
    pub(crate) lasts: Option<Spread>,
    pub(crate) protocol: Option<GroupProtocol>,
    /// Consumers started, over all its partitions (one each when no partition moved
    /// after the first assignment).
    pub(crate) starts: u64,
    /// Seconds from the start of producing to each partition's last consumer start.
    pub(crate) last_starts: Option<Spread>,
    /// The members' epochs (generations) gained after the group was complete.
    pub(crate) epochs_after_join: i64,
    /// Consumers stopped as lost or failed.
    pub(crate) bad_stops: u64,
    /// Consumers stopped for a revocation (while running: the shutdown is not one).
    pub(crate) revoked: u64,
}

/// What a run measured and found.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) brokers: usize,
    pub(crate) setup: Duration,
    pub(crate) groups: Vec<GroupSummary>,
    pub(crate) acked: u64,
    pub(crate) failed: u64,
    /// From the start of producing to the last acknowledgement.
    pub(crate) produce_time: Option<Duration>,
    /// From the start of producing to every group having handled every record.
    pub(crate) handled_time: Option<Duration>,
    pub(crate) peak_rss: usize,
    pub(crate) bound: Bound,
    pub(crate) shutdown: Duration,
    pub(crate) problems: Vec<String>,
}

/// A group while it runs.
struct Group {
    name: String,
    topics: Vec<usize>,
    /// Partition indexes of its topics.
    partitions: Vec<usize>,
    tally: Arc<GroupTally>,
    members: Vec<ConsumerGroup>,
    started: Instant,
    joined: Option<Duration>,
    /// Its members' epochs when the group was complete.
    join_epochs: i64,
}

impl Group {
    /// The sum of its members' epochs (generations).
    fn epochs(&self) -> i64 {
        self.members.iter().map(|m| i64::from(m.generation())).sum()
    }

    /// Whether its members run every partition of its topics, each on one member, and
    /// every member runs some (when there are enough partitions): not only the first
    /// member to join, before the others got their share.
    fn assignment_complete(&self, layout: &Layout) -> bool {
        let mut owned = vec![0u32; layout.partitions()];
        for m in &self.members {
            let assigned = m.assigned_partitions();
            if assigned.is_empty() && self.partitions.len() >= self.members.len() {
                return false;
            }
            for tp in assigned {
                match layout.index(&tp.topic, tp.partition) {
                    Some(i) => owned[i] += 1,
                    None => return false,
                }
            }
        }
        self.partitions.iter().all(|p| owned[*p] == 1) && owned.iter().sum::<u32>() as usize == self.partitions.len()
    }
}

/// `future`'s output, or an error naming `what` after `limit`: no step of a run may
/// hang it.
async fn guarded<T>(what: &str, limit: Duration, future: impl Future<Output = T>) -> Result<T, String> {
    tokio::time::timeout(limit, future).await.map_err(|_| format!("{what}: not done after {limit:?}"))
}

fn err(what: &str) -> impl Fn(klife::Error) -> String + '_ {
    move |e| format!("{what}: {e}")
}

/// Runs the load test; `Err` when it could not be set up at all.
pub(crate) async fn run(s: &Settings) -> Result<Outcome, String> {
    let clock = Clock::start();
    let fake = match &s.broker {
        BrokerKind::Testkit => Some(
            FakeCluster::builder()
                .brokers(3)
                // As the Apache Kafka test cluster is configured.
                .consumer_heartbeat_interval(Duration::from_secs(1))
                .start()
                .await
                .map_err(|e| format!("cannot start klife-testkit: {e}"))?,
        ),
        BrokerKind::Kafka(_) => None,
    };
    let bootstrap: Vec<String> = match (&s.broker, &fake) {
        (BrokerKind::Kafka(b), _) => b.split(',').map(str::to_owned).collect(),
        (_, Some(f)) => f.addresses(),
        (BrokerKind::Testkit, None) => unreachable!("klife-testkit was started above"),
    };
    let producers_client = Client::builder()
        .bootstrap_servers(bootstrap.iter())
        .client_id("klife-load-producers")
        .build()
        .await
        .map_err(err("cannot connect"))?;
    let groups_client = Client::builder()
        .bootstrap_servers(bootstrap.iter())
        .client_id("klife-load-groups")
        .default_fetcher(
            FetcherConfig::default()
                .with_max_bytes_per_request(s.max_bytes_per_request)
                .with_max_in_flight(s.fetch_in_flight),
        )
        .build()
        .await
        .map_err(err("cannot connect"))?;
    let brokers = producers_client.describe_cluster().await.map_err(err("describing the cluster"))?.brokers.len();
    let prefix = format!("klife-load-{}", std::process::id());
    let layout = Arc::new(Layout::new(&prefix, s.topics, s.per_topic()));

    let setup_started = Instant::now();
    eprintln!("creating {} topics of {} partitions on {brokers} brokers", s.topics, s.per_topic());
    guarded("creating the topics", LEADER_PATIENCE * 2, create_topics(&producers_client, &layout)).await??;
    let setup = setup_started.elapsed();

    let mut problems = Vec::new();
    let handled_all = Arc::new(AtomicU64::new(0));
    eprintln!("starting {} groups of {} members", s.groups, s.members);
    let mut groups = guarded(
        "starting the groups",
        s.hang_guard,
        start_groups(s, &groups_client, &layout, &prefix, clock, &handled_all),
    )
    .await
    .and_then(|r| r);
    let groups_ready = match &mut groups {
        Ok(groups) => wait_for_joins(s, groups, &layout, &mut problems).await,
        Err(e) => {
            problems.push(e.clone());
            false
        }
    };
    let mut groups = groups.unwrap_or_default();

    let produced = Arc::new(Produced::new(layout.partitions()));
    let mut produce_start = None;
    let mut producers = Vec::new();
    let mut handled_at = None;
    if groups_ready {
        let config = ProducerConfig::default().with_buffer_memory(s.buffer_memory).with_batch_size(s.batch_size);
        eprintln!("making {} producers", s.producers);
        for _ in 0..s.producers {
            match guarded("making a producer", s.hang_guard, producers_client.new_producer(config.clone())).await {
                Ok(Ok(p)) => producers.push(p),
                Ok(Err(e)) => {
                    problems.push(format!("cannot make a producer: {e}"));
                    break;
                }
                Err(e) => {
                    problems.push(e);
                    break;
                }
            }
        }
        if producers.len() == s.producers {
            let start = Clock::since_start(clock.now_us()).unwrap_or_default();
            produce_start = Some(start);
            eprintln!(
                "producing {} records with {} producers to {} partitions; {} groups read",
                s.records,
                s.producers,
                layout.partitions(),
                groups.len()
            );
            let value = Bytes::from(vec![b'v'; s.value_size]);
            let tasks: Vec<JoinHandle<()>> = producers
                .iter()
                .enumerate()
                .map(|(i, p)| {
                    let writer = produce::Writer {
                        producer: p.clone(),
                        producers: s.producers,
                        records: s.records,
                        layout: layout.clone(),
                        value: value.clone(),
                        produced: produced.clone(),
                        clock,
                    };
                    tokio::spawn(writer.run(i))
                })
                .collect();
            handled_at =
                watch(s, &mut groups, &layout, &produced, &tasks, &handled_all, clock, start, &mut problems).await;
        }
    }
    let peak_rss = memory::read().map_or(0, |r| r.peak);
    let produced_now: Vec<u64> = produced.per_partition.iter().map(|a| a.load(Ordering::Relaxed)).collect();
    let (acked, failed) = (produced.acked.load(Ordering::Relaxed), produced.failed.load(Ordering::Relaxed));
    if failed > 0 {
        problems
            .push(format!("{failed} records not produced; the first: {}", produced.first_error().unwrap_or_default()));
    }
    let produce_time = produce_start.and_then(|start| {
        Clock::since_start(produced.last_ack.load(Ordering::Relaxed)).map(|t| t.saturating_sub(start))
    });

    if handled_at.is_some() {
        for g in &groups {
            problems.extend(check::handled_problems(&g.tally, &layout, &g.partitions, &produced_now));
        }
        eprintln!("checking the groups' lags and assignments");
        match guarded(
            "the end checks",
            COMMIT_PATIENCE + s.hang_guard,
            end_checks(s, &groups_client, &groups, &layout, &produced_now),
        )
        .await
        {
            Ok(found) => problems.extend(found),
            Err(e) => problems.push(e),
        }
    }
    let summaries: Vec<GroupSummary> = groups
        .iter()
        .map(|g| {
            let (firsts, lasts) =
                produce_start.map_or((None, None), |start| check::progress_spread(&g.tally, &g.partitions, start));
            let slots = || g.partitions.iter().map(|p| &g.tally.slots[*p]);
            let last_starts = produce_start.and_then(|start| {
                Spread::of(
                    slots()
                        .filter_map(|s| Clock::since_start(s.started.load(Ordering::Relaxed)))
                        .map(|t| t.as_secs_f64() - start.as_secs_f64())
                        .collect(),
                )
            });
            GroupSummary {
                name: g.name.clone(),
                topics: g.topics.clone(),
                partitions: g.partitions.len(),
                join: g.joined,
                handled: g.tally.handled.load(Ordering::Relaxed),
                firsts,
                lasts,
                protocol: g.members.first().and_then(ConsumerGroup::protocol),
                starts: slots().map(|s| s.starts.load(Ordering::Relaxed)).sum(),
                last_starts,
                epochs_after_join: if g.joined.is_some() { g.epochs() - g.join_epochs } else { 0 },
                bad_stops: slots().map(|s| s.bad_stops.load(Ordering::Relaxed)).sum(),
                revoked: slots().map(|s| s.revoked.load(Ordering::Relaxed)).sum(),
            }
        })
        .collect();

    let shutdown_started = Instant::now();
    eprintln!("shutting down the members, deleting the topics and groups");
    let stops: Vec<(String, String, JoinHandle<_>)> = groups
        .drain(..)
        .flat_map(|g| {
            let name = g.name.clone();
            g.members.into_iter().map(move |m| (name.clone(), m.member_id(), tokio::spawn(m.shutdown())))
        })
        .collect();
    let deadline = tokio::time::Instant::now() + s.hang_guard;
    for (name, member, mut stop) in stops {
        match tokio::time::timeout_at(deadline, &mut stop).await {
            Ok(Ok(Ok(()))) => {}
            Ok(Ok(Err(e))) => problems.push(format!("{name}: member {member} stopped with {e}")),
            Ok(Err(e)) => problems.push(format!("{name}: member {member}'s shutdown panicked: {e}")),
            Err(_) => {
                problems.push(format!("{name}: member {member} not shut down {:?} after asked", s.hang_guard));
                stop.abort();
            }
        }
    }
    let shutdown = shutdown_started.elapsed();
    let closing = async {
        for p in &producers {
            p.close().await;
        }
    };
    if let Err(e) = guarded("closing the producers", s.hang_guard, closing).await {
        problems.push(e);
    }
    if let Err(e) = guarded(
        "deleting the topics and groups",
        s.hang_guard,
        cleanup(&producers_client, &layout, &summaries, &mut problems),
    )
    .await
    {
        problems.push(e);
    }
    let closing = async {
        groups_client.close().await;
        producers_client.close().await;
        if let Some(f) = fake {
            f.shutdown().await;
        }
    };
    if let Err(e) = guarded("closing the clients", s.hang_guard, closing).await {
        problems.push(e);
    }
    Ok(Outcome {
        brokers,
        setup,
        groups: summaries,
        acked,
        failed,
        produce_time,
        handled_time: handled_at,
        peak_rss,
        bound: s.bound(brokers),
        shutdown,
        problems,
    })
}

/// Creates the topics (replication factor 1: the partitions, not the replicas, are
/// the load) and waits until every partition has a leader.
async fn create_topics(client: &Client, layout: &Layout) -> Result<(), String> {
    let per_topic = i32::try_from(layout.per_topic()).map_err(|_| "too many partitions per topic")?;
    let topics = layout
        .topics()
        .iter()
        .map(|t| {
            NewTopic::new(t.to_string(), per_topic).with_replication_factor(1).with_config("min.insync.replicas", "1")
        })
        .collect();
    for (topic, result) in client.create_topics(topics).await.map_err(err("creating the topics"))? {
        result.map_err(|e| format!("creating {topic}: {e}"))?;
    }
    let deadline = Instant::now() + LEADER_PATIENCE;
    for topic in layout.topics() {
        loop {
            let led = match client.partitions(topic).await {
                Ok(ps) => ps.iter().filter(|p| p.leader.is_some()).count(),
                Err(_) => 0,
            };
            if led == layout.per_topic() {
                break;
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{topic}: {led} of {} partitions have a leader after {LEADER_PATIENCE:?}",
                    layout.per_topic()
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    Ok(())
}

/// Starts every member of every group.
async fn start_groups(
    s: &Settings,
    client: &Client,
    layout: &Arc<Layout>,
    prefix: &str,
    clock: Clock,
    handled_all: &Arc<AtomicU64>,
) -> Result<Vec<Group>, String> {
    let mut groups = Vec::with_capacity(s.groups);
    for g in 0..s.groups {
        let name = format!("{prefix}-g{g:02}");
        let topics = s.group_topics(g);
        let partitions: Vec<usize> =
            topics.iter().flat_map(|t| (0..layout.per_topic()).map(move |p| t * layout.per_topic() + p)).collect();
        let tally = Arc::new(GroupTally::new(name.clone(), layout.clone(), clock, handled_all.clone()));
        groups.push(Group {
            name,
            topics,
            partitions,
            tally,
            members: Vec::new(),
            started: Instant::now(),
            joined: None,
            join_epochs: 0,
        });
    }
    for group in &mut groups {
        group.started = Instant::now();
        for _ in 0..s.members {
            let mut builder = client.consumer_group(group.name.clone()).protocol(s.protocol);
            for t in &group.topics {
                builder = builder.topic(
                    TopicConfig::new(layout.topic(*t))
                        .offset_reset(ResetPolicy::Earliest)
                        .fetch_max_bytes(s.fetch_max_bytes)
                        .max_queue_size(s.max_queue_size),
                );
            }
            let member = builder
                .handler(Counting(group.tally.clone()))
                .start()
                .await
                .map_err(|e| format!("cannot start a member of {}: {e}", group.name))?;
            group.members.push(member);
        }
    }
    Ok(groups)
}

/// Waits until every group's members run all its partitions, each once; records each
/// group's join time. False when the hang guard passed first.
async fn wait_for_joins(s: &Settings, groups: &mut [Group], layout: &Layout, problems: &mut Vec<String>) -> bool {
    let started = Instant::now();
    loop {
        for g in groups.iter_mut().filter(|g| g.joined.is_none()) {
            if g.assignment_complete(layout) {
                g.joined = Some(g.started.elapsed());
                g.join_epochs = g.epochs();
            }
        }
        let waiting: Vec<&str> = groups.iter().filter(|g| g.joined.is_none()).map(|g| g.name.as_str()).collect();
        if waiting.is_empty() {
            eprintln!("every group joined after {:.1}s", started.elapsed().as_secs_f64());
            return true;
        }
        if started.elapsed() > s.hang_guard {
            problems.push(format!("no complete assignment after {:?}: {}", s.hang_guard, waiting.join(", ")));
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Watches the run until the producers are done and every group handled every record
/// of its topics; returns the time from the start of producing to then, or `None`
/// when nothing was produced or handled for the hang guard.
#[allow(clippy::too_many_arguments)]
async fn watch(
    s: &Settings,
    groups: &mut [Group],
    layout: &Layout,
    produced: &Produced,
    tasks: &[JoinHandle<()>],
    handled_all: &AtomicU64,
    clock: Clock,
    produce_start: Duration,
    problems: &mut Vec<String>,
) -> Option<Duration> {
    let mut moved = (0, 0);
    let mut last_move = Instant::now();
    let mut last_print = Instant::now();
    let mut failures = 0usize;
    loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = (produced.acked.load(Ordering::Relaxed), handled_all.load(Ordering::Relaxed));
        let done_producing = tasks.iter().all(JoinHandle::is_finished);
        let since = || Clock::since_start(clock.now_us()).unwrap_or_default().saturating_sub(produce_start);
        let counts: Vec<u64> = produced.per_partition.iter().map(|a| a.load(Ordering::Relaxed)).collect();
        if done_producing && groups.iter().all(|g| check::unfinished(&g.tally, &g.partitions, &counts).is_empty()) {
            let t = since();
            eprintln!("every group handled every record {:.1}s after producing started", t.as_secs_f64());
            more_failures(failures, problems);
            return Some(t);
        }
        if last_print.elapsed() >= PROGRESS_EVERY {
            last_print = Instant::now();
            let rss = memory::read().unwrap_or_default();
            eprintln!(
                "{:>6.1}s: {} acknowledged, {} handled by all groups, RSS {} MiB (peak {} MiB){}",
                since().as_secs_f64(),
                now.0,
                now.1,
                rss.now >> 20,
                rss.peak >> 20,
                if failures > 0 { format!(", {failures} partition failures") } else { String::new() }
            );
        }
        count_failures(groups, &mut failures, problems).await;
        if now != moved {
            moved = now;
            last_move = Instant::now();
        } else if last_move.elapsed() > s.hang_guard {
            let mut stuck = Vec::new();
            for g in groups.iter() {
                for p in check::unfinished(&g.tally, &g.partitions, &counts) {
                    let (t, n) = layout.at(p);
                    let slot = &g.tally.slots[p];
                    stuck.push(format!(
                        "{} {t}-{n}: {} of {} handled",
                        g.name,
                        slot.handled.load(Ordering::Relaxed),
                        counts[p]
                    ));
                }
            }
            let never = groups
                .iter()
                .flat_map(|g| g.partitions.iter().filter(|p| g.tally.slots[**p].handled.load(Ordering::Relaxed) == 0))
                .count();
            problems.push(format!(
                "nothing produced or handled for {:?} (producers {}): {} partitions unfinished, {never} never progressed: {}{}",
                s.hang_guard,
                if done_producing { "done" } else { "still running" },
                stuck.len(),
                stuck.iter().take(LISTED).cloned().collect::<Vec<_>>().join("; "),
                if stuck.len() > LISTED { "; ..." } else { "" }
            ));
            more_failures(failures, problems);
            return None;
        }
    }
}

/// Counts the partition failures past the listed ones.
fn more_failures(failures: usize, problems: &mut Vec<String>) {
    if failures > LISTED {
        problems.push(format!("... and {} more partition failures", failures - LISTED));
    }
}

/// Takes the partition failures the members reported since the last call and adds
/// them to `seen`; the first [`LISTED`] become problems (no fault is injected, so none
/// is expected), the rest are counted at the end.
async fn count_failures(groups: &mut [Group], seen: &mut usize, problems: &mut Vec<String>) {
    for g in groups {
        for m in &mut g.members {
            while let Ok(Some(f)) = tokio::time::timeout(Duration::ZERO, m.next_failure()).await {
                *seen += 1;
                if *seen <= LISTED {
                    let again = if f.error.restarts() { "starts again" } else { "stays stopped" };
                    problems.push(format!("{}: {} failed ({again}): {}", g.name, f.partition, f.error));
                }
            }
        }
    }
}

/// Lags 0 (waiting for the last commits) and every partition owned once.
async fn end_checks(s: &Settings, client: &Client, groups: &[Group], layout: &Layout, produced: &[u64]) -> Vec<String> {
    let deadline = Instant::now() + COMMIT_PATIENCE;
    let mut problems = Vec::new();
    for g in groups {
        loop {
            let found = match client.group_lag(&g.name).await {
                Ok(lags) => check::lag_problems(&g.name, &lags, layout, &g.partitions, produced),
                Err(e) => vec![format!("{}: group_lag: {e}", g.name)],
            };
            if found.is_empty() || Instant::now() > deadline {
                problems.extend(found);
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        match client.describe_group(&g.name).await {
            Ok(d) => problems.extend(check::owner_problems(&d, layout, &g.partitions, s.members)),
            Err(e) => problems.push(format!("{}: describe_group: {e}", g.name)),
        }
    }
    problems
}

/// Deletes the topics and the groups.
async fn cleanup(client: &Client, layout: &Layout, groups: &[GroupSummary], problems: &mut Vec<String>) {
    match client.delete_topics(layout.topics()).await {
        Ok(results) => {
            for (topic, r) in results {
                if let Err(e) = r {
                    problems.push(format!("deleting {topic}: {e}"));
                }
            }
        }
        Err(e) => problems.push(format!("deleting the topics: {e}")),
    }
    let names: Vec<&str> = groups.iter().map(|g| g.name.as_str()).collect();
    match client.delete_groups(&names).await {
        Ok(results) => {
            for (group, r) in results {
                if let Err(e) = r {
                    problems.push(format!("deleting group {group}: {e}"));
                }
            }
        }
        Err(e) => problems.push(format!("deleting the groups: {e}")),
    }
}
