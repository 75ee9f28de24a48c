//! `klife-group-consume` and `klife-group-join`: klife's consumer groups on a real
//! broker, beside librdkafka's (`klife-rdkafka-mock bench-group-consume` and
//! `bench-group-join`), for `cargo xtask bench group`.
//!
//! - `klife-group-consume` starts `--members` members of one new group in this process
//!   (one client, the facade's defaults, offset reset earliest), each with a handler
//!   that counts what it is given and commits every batch, and stops once `--count`
//!   records were handled. Until every member holds its share of the partitions
//!   (disjoint, together every partition, as evenly as they go) the handlers count
//!   nothing:
//!   each holds its batch up to 250 ms for that moment, then gives it back
//!   (`Action::Retry`), so a rebalance's hand-overs (a KIP-848 member learns of its
//!   revocation on its next heartbeat) are not in the rate. The report's `elapsed_s`
//!   runs from the first record counted to the last one (the rate once the group
//!   runs), and its CPU time is what the process used from the moment the assignment
//!   was complete; `first_record_s` is the time from the start of the first member to
//!   the first records given to a handler (joining, the assignment, the
//!   committed-offset lookup and the first fetch). Graceful hand-overs hand nothing
//!   twice, so `records` is `--count` rounded up to the last batch.
//!   With `--handler-us U` each handler sleeps U µs per batch before it counts it (a
//!   handler that waits on something: whether fetching goes on meanwhile).
//!   With `--pipeline true` each member runs a pipeline instead (8 no-op processors,
//!   one batcher of 100 records or 100 ms, counting at the batcher): the overhead of
//!   the pipeline's stages over a handler.
//! - `klife-group-join` measures the protocol: one member starts alone and is timed
//!   until it runs every partition (`first_assignment_s`); after `--settle-ms` (300 by
//!   default, so that the two members' heartbeats are not in step) a second member
//!   starts, and the time until the two run disjoint parts of every partition, neither
//!   empty, is `rebalance_s` (the first member's revocation and release included).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use klife::group::{Action, BatchContext, ConsumerGroup, GroupProtocol, Handler, ResetPolicy, TopicConfig};
use klife::pipeline::{BatchKey, Message, Pipeline, PipelineConfig, Processor};
use klife::{Client, Record, TopicPartition};
use tokio::sync::{Notify, watch};

use crate::opts::Opts;
use crate::report::{self, Report};

/// How long a run may wait for the group before it gives up.
const PATIENCE: Duration = Duration::from_secs(300);
/// How long a handler holds a batch waiting for the gate before it gives it back.
const GATE_WAIT: Duration = Duration::from_millis(250);

/// The settings both subcommands share.
struct Common {
    bootstrap: String,
    topic: String,
    group: String,
    protocol: GroupProtocol,
    /// `handler_max_unacked_commits`, when not the default.
    max_unacked: Option<usize>,
    /// `fetch_max_bytes` per partition, when not the default.
    fetch_max_bytes: Option<usize>,
    /// A fetcher of the group's own with this `linger`, instead of the client's.
    linger: Option<Duration>,
    /// `commits_in_flight`, when not the default.
    commits_in_flight: Option<usize>,
}

impl Common {
    fn from_opts(opts: &mut Opts) -> Result<Common, String> {
        let bootstrap = opts.req("bootstrap")?;
        let topic = opts.req("topic")?;
        let group = opts.req("group")?;
        let protocol = match opts.opt("protocol").as_deref() {
            None | Some("consumer") => GroupProtocol::Consumer,
            Some("classic") => GroupProtocol::Classic,
            Some("auto") => GroupProtocol::Auto,
            Some(other) => return Err(format!("--protocol {other:?}: consumer, classic or auto")),
        };
        let max_unacked = opts.opt_parse("max-unacked")?;
        let fetch_max_bytes = opts.opt_parse::<usize>("fetch-max-kib")?.map(|k| k * 1024);
        let linger = opts.opt_parse::<u64>("linger-us")?.map(Duration::from_micros);
        let commits_in_flight = opts.opt_parse("commits-in-flight")?;
        Ok(Common { bootstrap, topic, group, protocol, max_unacked, fetch_max_bytes, linger, commits_in_flight })
    }

    async fn client(&self) -> Result<Client, String> {
        Client::builder()
            .bootstrap_servers([self.bootstrap.as_str()])
            .build()
            .await
            .map_err(|e| format!("cannot connect to {}: {e}", self.bootstrap))
    }

    /// Starts one member of the group, with `handler`.
    async fn member<H: Handler>(&self, client: &Client, handler: H) -> Result<ConsumerGroup, String> {
        let mut topic = TopicConfig::new(self.topic.clone()).offset_reset(ResetPolicy::Earliest);
        if let Some(n) = self.max_unacked {
            topic = topic.handler_max_unacked_commits(n);
        }
        if let Some(n) = self.fetch_max_bytes {
            topic = topic.fetch_max_bytes(n);
        }
        if let Some(linger) = self.linger {
            let config = klife::FetcherConfig::default().with_linger(linger);
            topic = topic.fetch_strategy(klife::group::FetchStrategy::Exclusive(config));
        }
        let mut group = client.consumer_group(self.group.clone());
        if let Some(n) = self.commits_in_flight {
            group = group.commits_in_flight(n);
        }
        group
            .topic(topic)
            .protocol(self.protocol)
            .handler(handler)
            .start()
            .await
            .map_err(|e| format!("cannot start a member of {}: {e}", self.group))
    }
}

/// `klife-group-consume` settings.
pub(crate) struct ConsumeSettings {
    common: Common,
    count: u64,
    members: usize,
    /// Each member runs a pipeline (8 no-op processors, batchers of 100) instead of a
    /// handler.
    pipeline: bool,
    /// How long the handler works on each batch (a sleep), beyond counting.
    handler_work: Duration,
}

impl ConsumeSettings {
    pub(crate) fn from_opts(mut opts: Opts) -> Result<ConsumeSettings, String> {
        let common = Common::from_opts(&mut opts)?;
        let count = opts.req_parse("count")?;
        let members = opts.opt_parse("members")?.unwrap_or(1);
        let pipeline = opts.opt_parse("pipeline")?.unwrap_or(false);
        let handler_work = Duration::from_micros(opts.opt_parse("handler-us")?.unwrap_or(0));
        opts.finish()?;
        if members == 0 || count == 0 {
            return Err("--members and --count must be at least 1".into());
        }
        Ok(ConsumeSettings { common, count, members, pipeline, handler_work })
    }
}

/// What the members' handlers counted.
struct Tally {
    want: u64,
    records: AtomicU64,
    bytes: AtomicU64,
    /// When a handler was first given records (counted or not).
    offered: OnceLock<Instant>,
    first: OnceLock<Instant>,
    done: OnceLock<Instant>,
    reached: Notify,
    /// Open once the group's assignment is complete: until then handlers count
    /// nothing and give their batches back.
    gate: watch::Sender<bool>,
}

/// A handler that counts and commits, once the gate is open, after working on the
/// batch for the time given (a sleep: a handler that waits for a database, say).
struct Counting(Arc<Tally>, Duration);

impl Handler for Counting {
    async fn handle_record_batch(&self, _ctx: &BatchContext, records: Vec<Record>) -> Action {
        self.0.offered.get_or_init(Instant::now);
        if !*self.0.gate.borrow() {
            // Wait a little for the gate rather than retry at once (each retry fetches
            // the batch again), but not long: a revocation waits for this batch.
            let mut gate = self.0.gate.subscribe();
            let _ = tokio::time::timeout(GATE_WAIT, gate.wait_for(|open| *open)).await;
            if !*self.0.gate.borrow() {
                return Action::Retry;
            }
        }
        let bytes: u64 = records.iter().map(|r| r.value.as_ref().map_or(0, |v| v.len() as u64)).sum();
        if !self.1.is_zero() {
            tokio::time::sleep(self.1).await;
        }
        self.0.count(records.len() as u64, bytes);
        Action::Commit
    }
}

impl Tally {
    /// Counts records handled.
    fn count(&self, n: u64, bytes: u64) {
        self.offered.get_or_init(Instant::now);
        self.first.get_or_init(Instant::now);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
        if self.records.fetch_add(n, Ordering::Relaxed) + n >= self.want && self.done.set(Instant::now()).is_ok() {
            self.reached.notify_one();
        }
    }
}

/// No-op pipeline stages that count at the batchers.
struct CountingPipeline(Arc<Tally>);

impl Processor for CountingPipeline {
    async fn handle_message(&self, _message: &mut Message) {}

    async fn handle_batch(&self, _key: &BatchKey, messages: &mut [Message]) {
        let bytes: u64 = messages.iter().map(|m| m.data().map_or(0, |v| v.len() as u64)).sum();
        self.0.count(messages.len() as u64, bytes);
    }
}

/// A member of the benchmark's group.
pub(crate) enum Member {
    /// With a handler.
    Group(ConsumerGroup),
    /// Under a pipeline.
    Pipeline(Pipeline),
}

/// Runs `klife-group-consume`; the members leave (untimed) after the report is made.
pub(crate) async fn consume(s: ConsumeSettings) -> Result<(Report, Vec<Member>), String> {
    let client = s.common.client().await?;
    let partitions = client.partitions(&s.common.topic).await.map_err(|e| format!("partitions: {e}"))?.len();
    let tally = Arc::new(Tally {
        want: s.count,
        records: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        offered: OnceLock::new(),
        first: OnceLock::new(),
        done: OnceLock::new(),
        reached: Notify::new(),
        // A pipeline counts at its batchers, ungated.
        gate: watch::Sender::new(s.pipeline),
    });
    let started = Instant::now();
    let mut members = Vec::with_capacity(s.members);
    for _ in 0..s.members {
        let member = if s.pipeline {
            let config = PipelineConfig::default()
                .processors(8)
                .batchers(1, 100, Duration::from_millis(100))
                .map_err(|e| e.to_string())?;
            let topic = TopicConfig::new(s.common.topic.clone()).offset_reset(ResetPolicy::Earliest);
            let pipeline = client
                .consumer_group(s.common.group.clone())
                .topic(topic)
                .protocol(s.common.protocol)
                .pipeline(config, CountingPipeline(tally.clone()))
                .await
                .map_err(|e| format!("cannot start a pipeline of {}: {e}", s.common.group))?;
            Member::Pipeline(pipeline)
        } else {
            Member::Group(s.common.member(&client, Counting(tally.clone(), s.handler_work)).await?)
        };
        members.push(member);
    }
    let mut cpu_since = None;
    if !s.pipeline {
        let groups: Vec<&ConsumerGroup> = members
            .iter()
            .filter_map(|m| match m {
                Member::Group(g) => Some(g),
                Member::Pipeline(_) => None,
            })
            .collect();
        until("the group's assignment complete", || {
            let held: Vec<Vec<TopicPartition>> = groups.iter().map(|g| g.assigned_partitions()).collect();
            split_among(&held, partitions)
        })
        .await?;
        cpu_since = Some(report::usage()?);
        tally.gate.send_replace(true);
    }
    let handled = || tally.records.load(Ordering::Relaxed);
    if tokio::time::timeout(PATIENCE, tally.reached.notified()).await.is_err() {
        return Err(format!("{} of {} records handled after {}s", handled(), s.count, PATIENCE.as_secs()));
    }
    let (Some(offered), Some(first), Some(done)) = (tally.offered.get(), tally.first.get(), tally.done.get()) else {
        return Err("the count was reached without a first record".into());
    };
    let report = Report {
        client: "klife",
        records: handled(),
        bytes: tally.bytes.load(Ordering::Relaxed),
        elapsed: *done - *first,
        gaps: None,
        first_record: Some(*offered - started),
        cpu_since,
    };
    Ok((report, members))
}

/// Shuts the members down; the first failure is returned.
pub(crate) async fn leave(members: Vec<Member>) -> Result<(), String> {
    let mut outcome = Ok(());
    for m in members {
        let left = match m {
            Member::Group(g) => g.shutdown().await,
            Member::Pipeline(p) => p.shutdown().await,
        };
        if let Err(e) = left {
            outcome = outcome.and(Err(format!("shutdown: {e}")));
        }
    }
    outcome
}

/// `klife-group-join` settings.
pub(crate) struct JoinSettings {
    common: Common,
    settle: Duration,
}

impl JoinSettings {
    pub(crate) fn from_opts(mut opts: Opts) -> Result<JoinSettings, String> {
        let common = Common::from_opts(&mut opts)?;
        let settle = Duration::from_millis(opts.opt_parse("settle-ms")?.unwrap_or(300));
        opts.finish()?;
        Ok(JoinSettings { common, settle })
    }
}

/// A handler that commits what it is given.
struct Committing;

impl Handler for Committing {
    async fn handle_record_batch(&self, _ctx: &BatchContext, _records: Vec<Record>) -> Action {
        Action::Commit
    }
}

/// Polls `done` every millisecond until it holds; fails after [`PATIENCE`].
async fn until(what: &str, mut done: impl FnMut() -> bool) -> Result<Instant, String> {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        if Instant::now() >= deadline {
            return Err(format!("{what}: not after {}s", PATIENCE.as_secs()));
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    Ok(Instant::now())
}

/// Whether `a` and `b` are disjoint, neither empty, together every partition, and
/// within one partition of each other in size.
pub(crate) fn split_complete(a: &[TopicPartition], b: &[TopicPartition], partitions: usize) -> bool {
    split_among(&[a.to_vec(), b.to_vec()], partitions)
}

/// Whether the members hold disjoint sets of partitions, none empty, together all
/// `partitions` of the topic, as evenly as they can (the counts within one of each
/// other: a KIP-848 group under the uniform assignor has reached its target then,
/// rather than passing through a split on its way to it).
pub(crate) fn split_among(held: &[Vec<TopicPartition>], partitions: usize) -> bool {
    let mut all: Vec<&TopicPartition> = held.iter().flatten().collect();
    all.sort();
    all.dedup();
    let (least, most) = (held.iter().map(Vec::len).min(), held.iter().map(Vec::len).max());
    least.zip(most).is_some_and(|(l, m)| l > 0 && m - l <= 1)
        && all.len() == partitions
        && held.iter().map(Vec::len).sum::<usize>() == partitions
}

/// Runs `klife-group-join` and prints its line.
pub(crate) async fn join(s: JoinSettings) -> Result<String, String> {
    let client = s.common.client().await?;
    let partitions = client.partitions(&s.common.topic).await.map_err(|e| format!("partitions: {e}"))?.len();
    if partitions < 2 {
        return Err(format!("topic {} needs 2 partitions or more, has {partitions}", s.common.topic));
    }
    let started = Instant::now();
    let first = s.common.member(&client, Committing).await?;
    let alone =
        until("the first member running every partition", || first.assigned_partitions().len() == partitions).await?;
    tokio::time::sleep(s.settle).await;
    let joined = Instant::now();
    let second = s.common.member(&client, Committing).await?;
    let split = until("the two members running disjoint halves", || {
        split_complete(&first.assigned_partitions(), &second.assigned_partitions(), partitions)
    })
    .await?;
    let protocol = match first.protocol() {
        Some(GroupProtocol::Classic) => "classic",
        _ => "consumer",
    };
    let line = format!(
        r#"{{"client":"klife","protocol":"{protocol}","partitions":{partitions},"first_assignment_s":{:.6},"rebalance_s":{:.6}}}"#,
        (alone - started).as_secs_f64(),
        (split - joined).as_secs_f64(),
    );
    leave(vec![Member::Group(first), Member::Group(second)]).await?;
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits() {
        let tp = |p| TopicPartition::new("t", p);
        assert!(split_complete(&[tp(0), tp(2)], &[tp(1)], 3));
        assert!(!split_complete(&[tp(0), tp(1), tp(2)], &[], 3));
        assert!(!split_complete(&[tp(0), tp(1)], &[tp(1), tp(2)], 3));
        assert!(!split_complete(&[tp(0)], &[tp(1)], 3));
        assert!(split_among(&[vec![tp(0), tp(3)], vec![tp(1), tp(4)], vec![tp(2), tp(5)]], 6));
        assert!(!split_among(&[vec![tp(0), tp(1), tp(2), tp(3), tp(4), tp(5)], vec![], vec![]], 6));
        assert!(!split_among(&[vec![tp(0), tp(1), tp(2)], vec![tp(2), tp(3)], vec![tp(4), tp(5)]], 6));
        assert!(split_among(&[vec![tp(0), tp(1)]], 2));
        assert!(!split_among(&[vec![tp(0), tp(1)], vec![tp(2), tp(3), tp(5)], vec![tp(4)]], 6), "on its way");
    }
}
