//! What the groups handled, per partition: how many records, whether offsets came in
//! order without gaps or repeats, and when the first and the last came; and the
//! handler that counts them.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use klife::Record;
use klife::group::{Action, BatchContext, Handler, PartitionContext, StopReason};

/// The run's topics and partitions; a partition's index runs over all topics.
#[derive(Debug)]
pub(crate) struct Layout {
    names: Vec<Arc<str>>,
    per_topic: usize,
    by_name: HashMap<String, usize>,
}

impl Layout {
    pub(crate) fn new(prefix: &str, topics: usize, per_topic: usize) -> Layout {
        let names: Vec<Arc<str>> = (0..topics).map(|t| Arc::from(format!("{prefix}-{t:02}"))).collect();
        let by_name = names.iter().enumerate().map(|(i, n)| (n.to_string(), i)).collect();
        Layout { names, per_topic, by_name }
    }

    pub(crate) fn topic(&self, t: usize) -> &str {
        &self.names[t]
    }

    pub(crate) fn topics(&self) -> &[Arc<str>] {
        &self.names
    }

    pub(crate) fn per_topic(&self) -> usize {
        self.per_topic
    }

    pub(crate) fn partitions(&self) -> usize {
        self.names.len() * self.per_topic
    }

    /// The index of a partition of the run's topics.
    pub(crate) fn index(&self, topic: &str, partition: i32) -> Option<usize> {
        let t = *self.by_name.get(topic)?;
        let p = usize::try_from(partition).ok().filter(|p| *p < self.per_topic)?;
        Some(t * self.per_topic + p)
    }

    /// The topic and partition at an index.
    pub(crate) fn at(&self, index: usize) -> (&Arc<str>, i32) {
        let p = i32::try_from(index % self.per_topic).unwrap_or(i32::MAX);
        (&self.names[index / self.per_topic], p)
    }
}

/// Microseconds since the run started; 0 stands for "not yet", so times are stored plus one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock(Instant);

impl Clock {
    pub(crate) fn start() -> Clock {
        Clock(Instant::now())
    }

    pub(crate) fn now_us(&self) -> u64 {
        u64::try_from(self.0.elapsed().as_micros()).unwrap_or(u64::MAX - 1) + 1
    }

    /// A stored time as the time since the run started.
    pub(crate) fn since_start(stored: u64) -> Option<Duration> {
        stored.checked_sub(1).map(Duration::from_micros)
    }
}

/// One partition, as one group handled it.
#[derive(Debug, Default)]
pub(crate) struct Slot {
    /// Records handled.
    pub(crate) handled: AtomicU64,
    /// The offset after the last record handled.
    pub(crate) next: AtomicI64,
    /// Records at an offset handled before.
    pub(crate) repeated: AtomicU64,
    /// Offsets passed over (a record lost, or a control record: none are expected).
    pub(crate) skipped: AtomicU64,
    /// When the first and the last record were handled ([`Clock`]).
    pub(crate) first: AtomicU64,
    pub(crate) last: AtomicU64,
    /// Times a consumer of the partition started on a member, and when the last
    /// one did ([`Clock`]).
    pub(crate) starts: AtomicU64,
    pub(crate) started: AtomicU64,
    /// Times a consumer stopped other than for a revocation or the shutdown.
    pub(crate) bad_stops: AtomicU64,
    /// Times a consumer stopped for a revocation.
    pub(crate) revoked: AtomicU64,
}

/// What one group handled.
#[derive(Debug)]
pub(crate) struct GroupTally {
    pub(crate) name: String,
    /// By partition index; partitions of topics the group does not read stay empty.
    pub(crate) slots: Vec<Slot>,
    /// Records of partitions that are not the run's.
    pub(crate) foreign: AtomicU64,
    /// Records handled by this group.
    pub(crate) handled: AtomicU64,
    /// Records handled by every group.
    pub(crate) all: Arc<AtomicU64>,
    clock: Clock,
    layout: Arc<Layout>,
}

impl GroupTally {
    pub(crate) fn new(name: String, layout: Arc<Layout>, clock: Clock, all: Arc<AtomicU64>) -> GroupTally {
        let slots = (0..layout.partitions()).map(|_| Slot::default()).collect();
        GroupTally { name, slots, foreign: AtomicU64::new(0), handled: AtomicU64::new(0), all, clock, layout }
    }

    /// Counts a batch of one partition. Calls for one partition never overlap, so the
    /// slot's fields need no more than relaxed atomics.
    fn count(&self, topic: &str, partition: i32, records: &[Record]) {
        let n = records.len() as u64;
        self.handled.fetch_add(n, Ordering::Relaxed);
        self.all.fetch_add(n, Ordering::Relaxed);
        let Some(slot) = self.layout.index(topic, partition).map(|i| &self.slots[i]) else {
            self.foreign.fetch_add(n, Ordering::Relaxed);
            return;
        };
        let mut next = slot.next.load(Ordering::Relaxed);
        for r in records {
            if r.offset < next {
                slot.repeated.fetch_add(1, Ordering::Relaxed);
            } else {
                slot.skipped.fetch_add((r.offset - next).unsigned_abs(), Ordering::Relaxed);
                next = r.offset + 1;
            }
        }
        slot.next.store(next, Ordering::Relaxed);
        let now = self.clock.now_us();
        if slot.handled.fetch_add(n, Ordering::Relaxed) == 0 {
            slot.first.store(now, Ordering::Relaxed);
        }
        slot.last.store(now, Ordering::Relaxed);
    }
}

/// The groups' handler: counts, then commits; notes when partitions start and stop.
pub(crate) struct Counting(pub(crate) Arc<GroupTally>);

impl Counting {
    fn slot(&self, partition: &PartitionContext) -> Option<&Slot> {
        let t = &self.0;
        t.layout.index(partition.topic(), partition.partition()).map(|i| &t.slots[i])
    }
}

impl Handler for Counting {
    async fn handle_record_batch(&self, ctx: &BatchContext, records: Vec<Record>) -> Action {
        self.0.count(ctx.topic(), ctx.partition(), &records);
        Action::Commit
    }

    async fn on_consumer_start(&self, partition: &PartitionContext) {
        if let Some(slot) = self.slot(partition) {
            slot.starts.fetch_add(1, Ordering::Relaxed);
            slot.started.store(self.0.clock.now_us(), Ordering::Relaxed);
        }
    }

    async fn on_consumer_stop(&self, partition: &PartitionContext, reason: &StopReason) {
        match (self.slot(partition), reason) {
            (Some(slot), StopReason::Lost | StopReason::Failed(_)) => {
                slot.bad_stops.fetch_add(1, Ordering::Relaxed);
            }
            (Some(slot), StopReason::Revoked) => {
                slot.revoked.fetch_add(1, Ordering::Relaxed);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_run_over_the_topics() {
        let l = Layout::new("load", 3, 4);
        assert_eq!(l.partitions(), 12);
        assert_eq!(l.index("load-01", 2), Some(6));
        assert_eq!((l.at(6).0.as_ref(), l.at(6).1), ("load-01", 2));
        assert_eq!(l.index("load-01", 4), None);
        assert_eq!(l.index("other", 0), None);
        for i in 0..12 {
            let (t, p) = l.at(i);
            assert_eq!(l.index(t, p), Some(i));
        }
    }
}
