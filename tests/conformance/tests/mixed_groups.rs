//! Mixed consumer groups on Apache Kafka: a klife member (`client.consumer_group(..)`)
//! and librdkafka members (`klife-rdkafka-mock group-consume`, a child process) in one
//! group, handing a topic's partitions to each other.
//!
//! Each case, on a topic of 6 partitions with records on every one, adds records after
//! each step and waits until every one is handled:
//!
//! 1. a klife member (`klife-1`) starts alone and takes every partition; a librdkafka
//!    member (`rdkafka-1`) joins and the two split the partitions;
//! 2. `rdkafka-1` leaves gracefully (its stdin closes): `klife-1` takes every partition;
//! 3. a second librdkafka member (`rdkafka-2`) joins and the two split the partitions;
//!    `klife-1` shuts down gracefully: `rdkafka-2` takes every partition;
//! 4. a second klife member (`klife-2`) joins the group `rdkafka-2` is alone in (in a
//!    classic group, `rdkafka-2` is the leader that computes klife's assignment) and they
//!    split the partitions; `rdkafka-2` leaves: `klife-2` takes every partition and
//!    finally shuts down.
//!
//! Each klife member must run the protocol expected (`ConsumerGroup::protocol`).
//!
//! Then it checks:
//!
//! - (a) every record produced was handled;
//! - (b) no partition was owned by two members at once. A klife member owns a partition
//!   from `on_consumer_start` to `on_consumer_stop`; a librdkafka member from its
//!   `assigned` line (printed before librdkafka takes the partitions) to its `revoked`
//!   or `lost` line (printed after it committed and let them go). Intervals of one
//!   partition held by different members, on the wall clock of this machine, must not
//!   overlap;
//! - (c) no record was handled twice: every hand-over is graceful (each side commits what
//!   it handled before it gives a partition up), so nothing is lost and nothing repeats.
//!   A partition lost (or failed) on either side fails the case too, with the timeline.
//!
//! What differs between the protocols:
//!
//! - **KIP-848** (`GroupProtocol::Consumer`, librdkafka `group.protocol=consumer`): the
//!   coordinator computes the assignment (its default assignor) and moves a partition
//!   to its new owner only once the old owner acknowledged its revocation in a
//!   heartbeat; each member commits with its member epoch. A hand-over waits for the
//!   members' next heartbeats.
//! - **Classic** (`GroupProtocol::Classic`, librdkafka `group.protocol=classic` with
//!   `partition.assignment.strategy=cooperative-sticky`): JoinGroup/SyncGroup; the group
//!   leader (klife-1, the first to join, in steps 1-3; rdkafka-2, left alone, in
//!   step 4) computes the assignment with `cooperative-sticky`, which both sides offer,
//!   so the rebalances are incremental (KIP-429): a partition that moves is first
//!   revoked in one generation and assigned in the next. Commits carry the generation.
//!   Hand-overs are slower: a member learns of a rebalance from its next heartbeat (3 s
//!   apart by default on both sides), and a partition that moves takes two rebalances.
//! - **Eager classic** (the same with `range` on both sides: klife's `RangeAssignor`,
//!   librdkafka's `partition.assignment.strategy=range`): every rebalance revokes every
//!   partition of every member before the next generation assigns anything, so the
//!   holds are shorter and more numerous, and a partition that stays put is still
//!   revoked and started again (graceful, so nothing repeats).
//! - **Automatic** (`GroupProtocol::Auto`, beside librdkafka's KIP-848 members): klife
//!   tries KIP-848 first, which Kafka 4 accepts, so it runs like the first case.
//!
//! Nothing here waits on time: each step waits for what it needs under a generous hang
//! guard that fails the case with what was seen. The librdkafka children are killed when
//! their guard drops, so a failed case leaves no process behind.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use klife::group::{
    Action, Assignor, BatchContext, GroupProtocol, Handler, PartitionContext, RangeAssignor, ResetPolicy, StopReason,
    TopicConfig,
};
use klife::{ProducerRecord, Record};
use klife_conformance::{Broker, mock_bin, unique_topic};
use tokio::sync::Notify;

klife_conformance::against_brokers!(
    [kafka: Kafka]
    klife_and_librdkafka_share_a_kip848_group,
    klife_and_librdkafka_share_a_classic_group,
    klife_and_librdkafka_share_an_eager_classic_group,
    an_automatic_klife_member_shares_a_kip848_group_with_librdkafka,
);

/// The longest any wait may take before the case fails as hung.
const HANG_GUARD: Duration = Duration::from_secs(240);

const PARTITIONS: i32 = 6;

/// Records produced in each round.
const PER_ROUND: usize = 60;

/// Microseconds since the Unix epoch.
fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// One member's hold on one partition, on the wall clock.
#[derive(Debug, Clone)]
struct Hold {
    member: String,
    partition: i32,
    from_us: u64,
    /// The end and how it ended (`revoked`, `lost`, `shutdown`, `failed`, ...); `None`
    /// while held.
    until: Option<(u64, String)>,
}

/// Everything the members of a case saw.
#[derive(Default)]
struct Seen {
    /// (partition, offset) → (member, when) for each time it was handled.
    handled: BTreeMap<(i32, i64), Vec<(String, u64)>>,
    holds: Vec<Hold>,
    /// Librdkafka members whose process printed `closed`.
    closed: BTreeSet<String>,
    /// Lines a child printed that are not events (reported on failure).
    odd_lines: Vec<String>,
}

impl Seen {
    /// The partitions `member` holds now.
    fn held_by(&self, member: &str) -> BTreeSet<i32> {
        self.holds.iter().filter(|h| h.member == member && h.until.is_none()).map(|h| h.partition).collect()
    }

    fn begin(&mut self, member: &str, partition: i32, at: u64) {
        self.holds.push(Hold { member: member.to_owned(), partition, from_us: at, until: None });
    }

    fn end(&mut self, member: &str, partition: i32, at: u64, how: &str) {
        match self.holds.iter_mut().rev().find(|h| h.member == member && h.partition == partition && h.until.is_none())
        {
            Some(h) => h.until = Some((at, how.to_owned())),
            // librdkafka may revoke a partition it never reported: keep it visible.
            None => self.holds.push(Hold {
                member: member.to_owned(),
                partition,
                from_us: at,
                until: Some((at, format!("{how} (never assigned)"))),
            }),
        }
    }

    /// The holds and odd lines, in time order, for failure messages.
    fn timeline(&self) -> String {
        let mut events: Vec<(u64, String)> = Vec::new();
        for h in &self.holds {
            events.push((h.from_us, format!("{} takes {}", h.member, h.partition)));
            if let Some((at, how)) = &h.until {
                events.push((*at, format!("{} ends {} ({how})", h.member, h.partition)));
            }
        }
        events.sort();
        let t0 = events.first().map_or(0, |e| e.0);
        let mut out = String::new();
        for (at, what) in events {
            let _ = writeln!(out, "  +{:>10} us  {what}", at - t0);
        }
        for line in &self.odd_lines {
            let _ = writeln!(out, "  odd line: {line}");
        }
        out
    }
}

#[derive(Clone, Default)]
struct Log {
    seen: Arc<Mutex<Seen>>,
    changed: Arc<Notify>,
}

impl Log {
    fn with<T>(&self, f: impl FnOnce(&mut Seen) -> T) -> T {
        let out = f(&mut self.seen.lock().unwrap());
        self.changed.notify_waiters();
        out
    }

    /// Waits until `done` holds on what was seen; fails with the timeline when hung.
    async fn until(&self, what: &str, done: impl Fn(&Seen) -> bool) {
        let waited = tokio::time::timeout(HANG_GUARD, async {
            loop {
                let notified = self.changed.notified();
                if done(&self.seen.lock().unwrap()) {
                    return;
                }
                notified.await;
            }
        })
        .await;
        if waited.is_err() {
            let s = self.seen.lock().unwrap();
            panic!("hung waiting for {what}; {} records handled; timeline:\n{}", s.handled.len(), s.timeline());
        }
    }
}

/// The klife member's handler: records what it handles and when it holds what.
struct KlifeMember {
    name: &'static str,
    log: Log,
}

const KLIFE_1: &str = "klife-1";
const KLIFE_2: &str = "klife-2";

impl Handler for KlifeMember {
    async fn handle_record_batch(&self, _ctx: &BatchContext, records: Vec<Record>) -> Action {
        let at = now_us();
        self.log.with(|s| {
            for r in &records {
                s.handled.entry((r.partition, r.offset)).or_default().push((self.name.to_owned(), at));
            }
        });
        Action::Commit
    }

    async fn on_consumer_start(&self, p: &PartitionContext) {
        let at = now_us();
        self.log.with(|s| s.begin(self.name, p.partition(), at));
    }

    async fn on_consumer_stop(&self, p: &PartitionContext, reason: &StopReason) {
        let at = now_us();
        let how = match reason {
            StopReason::Revoked => "revoked",
            StopReason::Lost => "lost",
            StopReason::Shutdown => "shutdown",
            StopReason::Failed(_) => "failed",
            _ => "other",
        };
        self.log.with(|s| s.end(self.name, p.partition(), at, how));
    }
}

/// A librdkafka member: the `group-consume` child process, its stdout read on a thread
/// into the log. Killed on drop unless it was stopped.
struct RdkafkaMember {
    name: String,
    child: Option<Child>,
    stdin: Option<ChildStdin>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl RdkafkaMember {
    /// Starts `group-consume` with `args` after the bootstrap, topic and group.
    fn start(name: &str, broker: Broker, topic: &str, group: &str, args: &[&str], log: &Log) -> RdkafkaMember {
        let bin = mock_bin();
        let mut child = Command::new(&bin)
            .args(["group-consume", "--bootstrap", &broker.bootstrap(), "--topic", topic, "--group", group])
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().unwrap();
        let (log, member) = (log.clone(), name.to_owned());
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                log.with(|s| apply_line(s, &member, &line));
            }
        });
        RdkafkaMember { name: name.to_owned(), child: Some(child), stdin, reader: Some(reader) }
    }

    /// Closes its stdin (it revokes, commits and leaves the group) and waits for its exit.
    async fn stop(mut self, log: &Log) {
        drop(self.stdin.take());
        let name = self.name.clone();
        log.until(&format!("{name} to close"), |s| s.closed.contains(&name)).await;
        let reader = self.reader.take().unwrap();
        let mut child = self.child.take().unwrap();
        let status = tokio::task::spawn_blocking(move || {
            let status = child.wait();
            let _ = reader.join();
            status
        })
        .await
        .unwrap()
        .unwrap();
        assert!(status.success(), "{name} exited with {status}");
    }
}

impl Drop for RdkafkaMember {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Applies one line of `group-consume` to what was seen.
fn apply_line(s: &mut Seen, member: &str, line: &str) {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
        s.odd_lines.push(format!("{member}: {line}"));
        return;
    };
    let at = v["at_us"].as_u64().unwrap_or(0);
    let partitions = || -> Vec<i32> {
        v["partitions"]
            .as_array()
            .map(|a| a.iter().filter_map(|p| p.as_i64()).map(|p| p as i32).collect())
            .unwrap_or_default()
    };
    match v["event"].as_str() {
        Some("assigned") => {
            for p in partitions() {
                s.begin(member, p, at);
            }
        }
        Some(how @ ("revoked" | "lost")) => {
            for p in partitions() {
                s.end(member, p, at, how);
            }
        }
        Some("record") => {
            let (Some(p), Some(o)) = (v["partition"].as_i64(), v["offset"].as_i64()) else {
                s.odd_lines.push(format!("{member}: {line}"));
                return;
            };
            s.handled.entry((p as i32, o)).or_default().push((member.to_owned(), at));
        }
        Some("closed") => {
            s.closed.insert(member.to_owned());
        }
        _ => s.odd_lines.push(format!("{member}: {line}")),
    }
}

async fn produce(client: &klife::Client, topic: &str, round: usize) {
    let records = (0..PER_ROUND)
        .map(|i| ProducerRecord::new(topic.to_owned(), format!("r{round}-{i}")).with_partition(i as i32 % PARTITIONS))
        .collect();
    for r in client.produce_batch(records).await {
        r.unwrap();
    }
}

/// How the members of a case are set up.
struct Setup {
    /// The protocol klife is asked for.
    klife: GroupProtocol,
    /// The protocol klife must run.
    expect: GroupProtocol,
    /// Classic: the assignors klife offers (`None`: its default, cooperative-sticky).
    assignors: Option<Vec<Arc<dyn Assignor>>>,
    /// `group-consume`'s options for librdkafka.
    rdkafka: &'static [&'static str],
}

async fn klife_and_librdkafka_share_a_kip848_group(broker: Broker) {
    let setup = Setup {
        klife: GroupProtocol::Consumer,
        expect: GroupProtocol::Consumer,
        assignors: None,
        rdkafka: &["--protocol", "consumer"],
    };
    mixed_group(broker, setup).await;
}

async fn klife_and_librdkafka_share_a_classic_group(broker: Broker) {
    let setup = Setup {
        klife: GroupProtocol::Classic,
        expect: GroupProtocol::Classic,
        assignors: None,
        rdkafka: &["--protocol", "classic"],
    };
    mixed_group(broker, setup).await;
}

/// The classic protocol with the eager `range` assignor on both sides: every rebalance
/// revokes every partition of every member before anything is assigned again.
async fn klife_and_librdkafka_share_an_eager_classic_group(broker: Broker) {
    let setup = Setup {
        klife: GroupProtocol::Classic,
        expect: GroupProtocol::Classic,
        assignors: Some(vec![Arc::new(RangeAssignor)]),
        rdkafka: &["--protocol", "classic", "--set", "partition.assignment.strategy=range"],
    };
    mixed_group(broker, setup).await;
}

/// `GroupProtocol::Auto` on Kafka 4 picks KIP-848, beside librdkafka's KIP-848 members.
async fn an_automatic_klife_member_shares_a_kip848_group_with_librdkafka(broker: Broker) {
    let setup = Setup {
        klife: GroupProtocol::Auto,
        expect: GroupProtocol::Consumer,
        assignors: None,
        rdkafka: &["--protocol", "consumer"],
    };
    mixed_group(broker, setup).await;
}

/// The case: klife and librdkafka members set up as `setup` says, in turns, in one group.
async fn mixed_group(broker: Broker, setup: Setup) {
    let client = broker.client().await;
    let topic = unique_topic("mixed");
    broker.create_topic(&client, &topic, PARTITIONS).await;
    let group = unique_topic("mixed-g");
    let log = Log::default();
    let all: BTreeSet<i32> = (0..PARTITIONS).collect();
    let mut produced = 0;
    produce(&client, &topic, 0).await;
    produced += PER_ROUND;

    let start_klife = |name: &'static str| {
        let mut builder = client.consumer_group(group.as_str()).protocol(setup.klife);
        if let Some(assignors) = &setup.assignors {
            builder = builder.assignors(assignors.clone());
        }
        builder
            .topic(
                TopicConfig::new(topic.as_str())
                    .offset_reset(ResetPolicy::Earliest)
                    .fetch_interval(Duration::from_millis(50)),
            )
            .handler(KlifeMember { name, log: log.clone() })
            .start()
    };
    let split = |a: &'static str, b: &'static str| {
        let all = all.clone();
        move |s: &Seen| {
            let (a, b) = (s.held_by(a), s.held_by(b));
            !a.is_empty() && !b.is_empty() && a.len() + b.len() == all.len()
        }
    };

    // 1. klife alone, then a librdkafka member joins; they split the partitions.
    let klife1 = start_klife(KLIFE_1).await.unwrap();
    log.until("klife-1 to hold every partition", |s| s.held_by(KLIFE_1) == all).await;
    assert_eq!(klife1.protocol(), Some(setup.expect), "the protocol klife-1 runs");
    let rd1 = RdkafkaMember::start("rdkafka-1", broker, &topic, &group, setup.rdkafka, &log);
    log.until("klife-1 and rdkafka-1 to split the partitions", split(KLIFE_1, "rdkafka-1")).await;
    produce(&client, &topic, 1).await;
    produced += PER_ROUND;
    log.until("every record handled (round 1)", |s| s.handled.len() == produced).await;

    // 2. librdkafka leaves: klife takes everything.
    rd1.stop(&log).await;
    log.until("klife-1 to hold every partition after rdkafka-1 left", |s| s.held_by(KLIFE_1) == all).await;
    produce(&client, &topic, 2).await;
    produced += PER_ROUND;
    log.until("every record handled (round 2)", |s| s.handled.len() == produced).await;

    // 3. A second librdkafka member joins, then klife leaves: librdkafka takes everything.
    let rd2 = RdkafkaMember::start("rdkafka-2", broker, &topic, &group, setup.rdkafka, &log);
    log.until("klife-1 and rdkafka-2 to split the partitions", split(KLIFE_1, "rdkafka-2")).await;
    klife1.shutdown().await.unwrap();
    log.until("rdkafka-2 to hold every partition after klife-1 left", |s| s.held_by("rdkafka-2") == all).await;
    produce(&client, &topic, 3).await;
    produced += PER_ROUND;
    log.until("every record handled (round 3)", |s| s.handled.len() == produced).await;

    // 4. A second klife member joins the group librdkafka now leads (classic), then
    //    librdkafka leaves: klife takes everything.
    let klife2 = start_klife(KLIFE_2).await.unwrap();
    log.until("rdkafka-2 and klife-2 to split the partitions", split("rdkafka-2", KLIFE_2)).await;
    assert_eq!(klife2.protocol(), Some(setup.expect), "the protocol klife-2 runs");
    rd2.stop(&log).await;
    log.until("klife-2 to hold every partition after rdkafka-2 left", |s| s.held_by(KLIFE_2) == all).await;
    produce(&client, &topic, 4).await;
    produced += PER_ROUND;
    log.until("every record handled (round 4)", |s| s.handled.len() == produced).await;
    klife2.shutdown().await.unwrap();

    let s = log.seen.lock().unwrap();
    let timeline = s.timeline();
    eprintln!("{} records; timeline:\n{timeline}", s.handled.len());
    // (a) Every record handled: the offsets of each partition, without a gap.
    let per_partition = (produced / PARTITIONS as usize) as i64;
    for p in 0..PARTITIONS {
        for o in 0..per_partition {
            assert!(s.handled.contains_key(&(p, o)), "record {p}@{o} never handled; timeline:\n{timeline}");
        }
    }
    assert_eq!(s.handled.len(), produced, "records handled that were not produced?");
    // (b) No partition held by two members at once.
    let mut overlaps = Vec::new();
    for (i, a) in s.holds.iter().enumerate() {
        for b in &s.holds[i + 1..] {
            if a.partition != b.partition || a.member == b.member {
                continue;
            }
            let end = |h: &Hold| h.until.as_ref().map_or(u64::MAX, |(at, _)| *at);
            if a.from_us < end(b) && b.from_us < end(a) {
                overlaps.push(format!("{a:?} and {b:?}"));
            }
        }
    }
    assert!(overlaps.is_empty(), "partitions held by two members at once: {overlaps:#?}\ntimeline:\n{timeline}");
    // Every hold ended gracefully.
    let ungraceful: Vec<&Hold> = s
        .holds
        .iter()
        .filter(|h| !matches!(h.until.as_ref().map(|(_, how)| how.as_str()), Some("revoked" | "shutdown")))
        .collect();
    assert!(ungraceful.is_empty(), "holds that did not end gracefully: {ungraceful:#?}\ntimeline:\n{timeline}");
    // (c) Graceful hand-overs only: nothing handled twice.
    let twice: Vec<_> = s.handled.iter().filter(|(_, by)| by.len() > 1).collect();
    assert!(twice.is_empty(), "records handled twice: {twice:?}\ntimeline:\n{timeline}");
    // Both kinds of member did handle records.
    let by = |m: &str| s.handled.values().flatten().filter(|(who, _)| who == m).count();
    for member in [KLIFE_1, "rdkafka-1", "rdkafka-2", KLIFE_2] {
        assert!(by(member) > 0, "{member} handled nothing\n{timeline}");
    }
    assert!(s.odd_lines.is_empty(), "unexpected lines: {:?}", s.odd_lines);
}
