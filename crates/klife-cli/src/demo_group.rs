//! The demo's group phase: the records are read again through a consumer group of
//! three members, one of which leaves half way, and checked: every record handled
//! once, each partition's records in order, also across the hand-over.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use indicatif::ProgressBar;
use klife::group::{
    Action, BatchContext, ConsumerGroup, Handler, PartitionContext, ResetPolicy, StopReason, TopicConfig,
};
use klife::{Client, Record};
use tokio::sync::Notify;

use crate::CliError;

/// A condition on the records handled and who runs which partition.
type Done = dyn Fn(u64, &BTreeMap<i32, usize>) -> bool + Send;

/// Members of the demo's group.
pub(crate) const MEMBERS: usize = 3;

/// What the group phase measured.
#[derive(Debug)]
pub(crate) struct GroupReport {
    /// The group's name.
    pub(crate) group: String,
    /// From the first member's start to the last record handled.
    pub(crate) elapsed: Duration,
    /// From the leave of the first member to its partitions running on the others.
    pub(crate) rebalance: Duration,
}

/// What the members saw, shared by their handlers.
#[derive(Debug, Default)]
struct Seen {
    /// Per partition, the sequence number the next record must carry.
    expected: Vec<u64>,
    handled: u64,
    /// Which member runs each partition.
    running: BTreeMap<i32, usize>,
    /// The first broken expectation.
    error: Option<String>,
}

#[derive(Clone)]
struct Member {
    id: usize,
    partitions: u64,
    value_size: usize,
    seen: Arc<Mutex<Seen>>,
    changed: Arc<Notify>,
    progress: ProgressBar,
}

impl Member {
    fn with<T>(&self, f: impl FnOnce(&mut Seen) -> T) -> T {
        let out = f(&mut self.seen.lock().unwrap_or_else(PoisonError::into_inner));
        self.changed.notify_waiters();
        out
    }
}

impl Handler for Member {
    async fn handle_record_batch(&self, ctx: &BatchContext, records: Vec<Record>) -> Action {
        let p = ctx.partition() as usize;
        let (partitions, size) = (self.partitions, self.value_size);
        let n = records.len() as u64;
        self.with(|s| {
            for r in &records {
                let v = r.value.as_deref().unwrap_or_default();
                let seq = v.get(..8).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes);
                if s.error.is_none() && (seq != Some(s.expected[p]) || v.len() != size) {
                    s.error = Some(format!(
                        "{}-{p} offset {}: expected record #{} of {size} bytes, found {} of {} bytes (lost, repeated \
                         or reordered)",
                        ctx.topic(),
                        r.offset,
                        s.expected[p],
                        seq.map_or("no sequence number".to_owned(), |s| format!("#{s}")),
                        v.len()
                    ));
                }
                s.expected[p] += partitions;
            }
            s.handled += n;
        });
        self.progress.inc(n);
        Action::Commit
    }

    async fn on_consumer_start(&self, p: &PartitionContext) {
        let (id, partition) = (self.id, p.partition());
        self.with(|s| {
            if let Some(other) = s.running.insert(partition, id) {
                s.error.get_or_insert(format!("partition {partition} ran on members {other} and {id} at once"));
            }
        });
    }

    async fn on_consumer_stop(&self, p: &PartitionContext, _reason: &StopReason) {
        let (id, partition) = (self.id, p.partition());
        self.with(|s| {
            if s.running.get(&partition) == Some(&id) {
                s.running.remove(&partition);
            }
        });
    }
}

/// Reads the `records` records of `topic` (record `i` in partition `i % partitions`)
/// through a group of [`MEMBERS`] members; the first leaves once half are handled.
pub(crate) async fn read_through_a_group(
    client: &Client,
    topic: &str,
    records: u64,
    partitions: i32,
    value_size: usize,
    progress: &ProgressBar,
    stall: Duration,
) -> Result<GroupReport, CliError> {
    let group = format!("{topic}-group");
    let seen = Arc::new(Mutex::new(Seen { expected: (0..partitions as u64).collect(), ..Seen::default() }));
    let changed = Arc::new(Notify::new());
    let member = |id| Member {
        id,
        partitions: partitions as u64,
        value_size,
        seen: seen.clone(),
        changed: changed.clone(),
        progress: progress.clone(),
    };
    let started = Instant::now();
    let mut members: Vec<ConsumerGroup> = Vec::with_capacity(MEMBERS);
    for id in 0..MEMBERS {
        let g = client
            .consumer_group(group.as_str())
            .topic(
                TopicConfig::new(topic)
                    .offset_reset(ResetPolicy::Earliest)
                    .handler_max_unacked_commits(8)
                    .fetch_interval(Duration::from_millis(20)),
            )
            .handler(member(id))
            .start()
            .await?;
        members.push(g);
    }
    let read = |s: &Seen| (s.handled, s.error.clone(), s.running.clone());
    let wait = |done: Box<Done>, what: &'static str| {
        let (seen, changed) = (seen.clone(), changed.clone());
        async move {
            loop {
                let notified = changed.notified();
                let (handled, error, running) = read(&seen.lock().unwrap_or_else(PoisonError::into_inner));
                if let Some(e) = error {
                    return Err(CliError::Verification(e));
                }
                if done(handled, &running) {
                    return Ok(());
                }
                if tokio::time::timeout(stall, notified).await.is_err() {
                    return Err(CliError::Verification(format!(
                        "nothing happened for {} s waiting for {what} ({handled} of {records} records handled)",
                        stall.as_secs()
                    )));
                }
            }
        }
    };
    wait(Box::new(move |handled, _| handled >= records / 2), "half the records").await?;
    let leaving = members.remove(0);
    let rebalance_started = Instant::now();
    leaving.shutdown().await.map_err(klife::Error::from)?;
    let all = partitions as usize;
    wait(Box::new(move |_, running| running.len() == all && running.values().all(|m| *m != 0)), "the hand-over")
        .await?;
    let rebalance = rebalance_started.elapsed();
    wait(Box::new(move |handled, _| handled >= records), "every record").await?;
    let elapsed = started.elapsed();
    progress.finish();
    for g in members {
        g.shutdown().await.map_err(klife::Error::from)?;
    }
    let handled = seen.lock().unwrap_or_else(PoisonError::into_inner).handled;
    if handled != records {
        return Err(CliError::Verification(format!("the group handled {handled} records, {records} were produced")));
    }
    Ok(GroupReport { group, elapsed, rebalance })
}
