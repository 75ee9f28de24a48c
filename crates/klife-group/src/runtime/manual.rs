//! Manual mode: [`Lease`].

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use klife_fetcher::Record;
use klife_protocol::types::{TopicPartition, TopicPartitionOffset};
use tokio::sync::{Notify, mpsc, watch};

use super::partition::Report;

/// A batch pulled from a partition in manual mode.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Batch {
    /// The topic.
    pub topic: Arc<str>,
    /// The partition.
    pub partition: i32,
    /// The records, in offset order (never empty).
    pub records: Vec<Record>,
    /// The offset to commit once every record of the batch is done: after the last
    /// record, or past the control records that followed it.
    pub next_offset: i64,
    /// The partition's high watermark when the batch was fetched.
    pub high_watermark: i64,
}

/// Why a partition's lease cannot pull or commit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ManualError {
    /// The member does not own the partition (never assigned, revoked or lost).
    #[error("{topic}-{partition}: not assigned to this member")]
    NotAssigned {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
    },
    /// The partition's topic is not in manual mode: its handler takes its records.
    #[error("{topic}-{partition}: the topic is not in manual mode")]
    NotManual {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
    },
    /// The partition restarts from its last committed offset (a lease was dropped, or
    /// another was asked for, with records not committed): take a new lease; the
    /// records not committed come again.
    #[error("{topic}-{partition}: restarting from the last committed offset; take a new lease")]
    Restarting {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
    },
    /// Another lease of the partition took over this one.
    #[error("{topic}-{partition}: another lease took this partition over")]
    Superseded {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
    },
    /// The partition is being given up (revoked, or the member shuts down): nothing
    /// more is pulled; commit what was pulled and finished.
    #[error("{topic}-{partition}: being given up; commit what was pulled, nothing more comes")]
    Revoking {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
    },
    /// The partition was released (revoked, lost, failed or shut down): nothing more
    /// can be pulled or committed through this lease.
    #[error("{topic}-{partition}: released by this member")]
    Released {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
    },
    /// A commit above the offset after the last record pulled (`pulled`, `None` when
    /// nothing was pulled): it would skip records nobody handled.
    #[error(
        "{topic}-{partition}: commit of offset {offset} above what was pulled (up to {pulled:?}); it would skip records"
    )]
    CommitAbovePulled {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The offset asked.
        offset: i64,
        /// The offset after the last record pulled.
        pulled: Option<i64>,
    },
    /// A commit below one asked before (or below the first record pulled): a
    /// partition's committed offset never goes backwards.
    #[error("{topic}-{partition}: commit of offset {offset} below offset {floor}, committed or pulled before")]
    CommitBelowCommitted {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The offset asked.
        offset: i64,
        /// The lowest offset a commit may name now.
        floor: i64,
    },
}

impl ManualError {
    /// Whether a new lease of the partition goes on (the partition restarts, or the
    /// lease was superseded), rather than the partition being gone from this member.
    pub fn retake(&self) -> bool {
        matches!(self, ManualError::Restarting { .. } | ManualError::Superseded { .. })
    }
}

/// Where a manual partition's consumer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Running,
    /// Given up gracefully: no more pulls; waiting for the pulled offsets' commits.
    Stopping,
    /// Restarting from the last commit: this consumer ends.
    Restarting,
    /// Ended.
    Released,
}

#[derive(Debug)]
struct Inner {
    state: State,
    queue: VecDeque<Batch>,
    /// The first offset pulled.
    pulled_start: Option<i64>,
    /// The offset after the last record pulled, and that record's leader epoch.
    pulled_end: Option<(i64, Option<i32>)>,
    /// The last commit asked.
    requested: Option<i64>,
    lease: Option<u64>,
    next_lease: u64,
    /// Released after a graceful stop whose pulled records were all committed.
    handed_over: bool,
}

impl Inner {
    fn uncommitted(&self) -> bool {
        match (self.pulled_end, self.requested) {
            (None, _) => false,
            (Some((end, _)), Some(r)) => r < end,
            (Some((end, _)), None) => self.pulled_start.is_some_and(|s| s < end),
        }
    }
}

/// A manual partition's state, shared by its consumer task, the group's task and its
/// lease.
#[derive(Debug)]
pub(crate) struct Slot {
    tp: TopicPartition,
    pub(crate) task: u64,
    inner: Mutex<Inner>,
    /// Wakes a pull waiting for a batch.
    to_lease: Notify,
    /// Wakes the consumer task: room in the queue, a commit, a lease event.
    to_task: Notify,
    reports: mpsc::UnboundedSender<Report>,
    committed: watch::Receiver<Option<i64>>,
    /// Wakes the group's stream: a batch, a revocation, a release.
    activity: Arc<Notify>,
}

impl Slot {
    pub(crate) fn new(
        tp: TopicPartition,
        task: u64,
        reports: mpsc::UnboundedSender<Report>,
        committed: watch::Receiver<Option<i64>>,
        activity: Arc<Notify>,
    ) -> Arc<Slot> {
        Arc::new(Slot {
            tp,
            task,
            inner: Mutex::new(Inner {
                state: State::Running,
                queue: VecDeque::new(),
                pulled_start: None,
                pulled_end: None,
                requested: None,
                lease: None,
                next_lease: 0,
                handed_over: false,
            }),
            to_lease: Notify::new(),
            to_task: Notify::new(),
            reports,
            committed,
            activity,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn error(&self, make: impl FnOnce(String, i32) -> ManualError) -> ManualError {
        make(self.tp.topic.to_string(), self.tp.partition)
    }

    /// A lease of this partition (see the [module documentation](self)).
    pub(crate) fn lease(self: &Arc<Self>) -> Result<Lease, ManualError> {
        let mut inner = self.lock();
        match inner.state {
            State::Running | State::Stopping => {}
            State::Restarting => {
                return Err(self.error(|topic, partition| ManualError::Restarting { topic, partition }));
            }
            State::Released => return Err(self.error(|topic, partition| ManualError::Released { topic, partition })),
        }
        if inner.lease.is_some() && inner.uncommitted() {
            inner.state = State::Restarting;
            drop(inner);
            tracing::info!(partition = %self.tp, "a second lease while the first holds records not committed: restarting");
            self.to_task.notify_one();
            self.wake_lease();
            return Err(self.error(|topic, partition| ManualError::Restarting { topic, partition }));
        }
        let id = inner.next_lease;
        inner.next_lease += 1;
        inner.lease = Some(id);
        drop(inner);
        // A pull of the lease taken over wakes up to learn it.
        self.to_lease.notify_one();
        Ok(Lease { slot: self.clone(), id })
    }

    /// Adds fetched batches to the queue.
    pub(crate) fn push(&self, batches: impl IntoIterator<Item = Batch>) {
        self.lock().queue.extend(batches);
        self.wake_lease();
    }

    /// Wakes a pull waiting on the lease, and the group's stream.
    fn wake_lease(&self) {
        self.to_lease.notify_one();
        self.activity.notify_one();
    }

    /// How many batches wait to be pulled.
    pub(crate) fn queued(&self) -> usize {
        self.lock().queue.len()
    }

    /// Whether a lease dropped or another asked for restarts the partition.
    pub(crate) fn restart_asked(&self) -> bool {
        self.lock().state == State::Restarting
    }

    /// The partition is given up: no more pulls, the queue is dropped.
    pub(crate) fn begin_stop(&self) {
        let mut inner = self.lock();
        if inner.state == State::Running {
            inner.state = State::Stopping;
        }
        inner.queue.clear();
        drop(inner);
        self.wake_lease();
    }

    /// Whether what was pulled is committed (or will never be: the lease was dropped).
    pub(crate) fn settled(&self) -> bool {
        let inner = self.lock();
        let settled = inner.state == State::Restarting || !inner.uncommitted();
        tracing::debug!(
            partition = %self.tp,
            task = self.task,
            state = ?inner.state,
            pulled = ?inner.pulled_end.map(|(end, _)| end),
            requested = ?inner.requested,
            settled,
            "manual partition: settled?"
        );
        settled
    }

    /// The consumer task ended: nothing more is pulled or committed. `handed_over`:
    /// it ended with a graceful stop, everything pulled committed.
    pub(crate) fn release(&self, handed_over: bool) {
        let mut inner = self.lock();
        if inner.state != State::Restarting {
            inner.state = State::Released;
            inner.handed_over = handed_over;
        }
        inner.queue.clear();
        drop(inner);
        self.wake_lease();
    }

    /// Waits for a wake-up of the consumer task (one given while nobody waited is
    /// kept for the next wait).
    pub(crate) async fn changed(&self) {
        self.to_task.notified().await;
    }

    /// Whether the partition is in the state that ends pulls and commits, with the error.
    fn usable(&self, inner: &Inner, id: u64, pulling: bool) -> Result<(), ManualError> {
        if inner.lease != Some(id) {
            return Err(match inner.state {
                State::Restarting => self.error(|topic, partition| ManualError::Restarting { topic, partition }),
                State::Released => self.error(|topic, partition| ManualError::Released { topic, partition }),
                _ => self.error(|topic, partition| ManualError::Superseded { topic, partition }),
            });
        }
        match inner.state {
            State::Running => Ok(()),
            State::Stopping if pulling => {
                Err(self.error(|topic, partition| ManualError::Revoking { topic, partition }))
            }
            State::Stopping => Ok(()),
            State::Restarting => Err(self.error(|topic, partition| ManualError::Restarting { topic, partition })),
            State::Released => Err(self.error(|topic, partition| ManualError::Released { topic, partition })),
        }
    }
}

/// Manual mode: the partitions of a [`Mode::Manual`](super::Mode::Manual) topic are
/// fetched and buffered by the group, and pulled and committed by a driver outside
/// it, through a [`Lease`].
///
/// A partition's consumer task fills a bounded queue of batches (`max_queue_size`
/// batches of at most `handler_max_batch_size` records); the lease pulls them in
/// offset order and commits offsets through the group's committers. What is pulled
/// exists only in the driver's hands until it is committed, so it is leased:
///
/// - one live lease per partition; a second one while the first holds records not
///   committed restarts the partition from its last commit and is refused with
///   [`ManualError::Restarting`]; when the first holds nothing uncommitted, the second
///   takes over and the first is [`ManualError::Superseded`];
/// - a lease dropped with records not committed restarts the partition from its last
///   commit: they are delivered again (at least once);
/// - a commit above what was pulled, or below what was committed, is refused;
/// - a revocation (or the shutdown) stops the pulls ([`ManualError::Revoking`]), drops
///   what was fetched and not pulled, and waits for what was pulled to be committed —
///   at most the rebalance timeout, after which the partition counts as lost.
#[derive(Debug)]
pub struct Lease {
    slot: Arc<Slot>,
    id: u64,
}

impl Lease {
    /// The partition.
    pub fn topic_partition(&self) -> &TopicPartition {
        &self.slot.tp
    }

    /// The next buffered batch, `None` when none is buffered now.
    pub fn pull(&self) -> Result<Option<Batch>, ManualError> {
        let mut inner = self.slot.lock();
        self.slot.usable(&inner, self.id, true)?;
        let Some(batch) = inner.queue.pop_front() else { return Ok(None) };
        if inner.pulled_start.is_none() {
            inner.pulled_start = batch.records.first().map(|r| r.offset);
        }
        inner.pulled_end = Some((batch.next_offset, batch.records.last().and_then(|r| r.leader_epoch)));
        drop(inner);
        tracing::debug!(
            partition = %self.slot.tp,
            task = self.slot.task,
            lease = self.id,
            from = batch.records.first().map(|r| r.offset),
            next = batch.next_offset,
            "lease: pulled"
        );
        self.slot.to_task.notify_one();
        Ok(Some(batch))
    }

    /// The next batch, waiting for one to be fetched.
    pub async fn next_batch(&self) -> Result<Batch, ManualError> {
        loop {
            let notified = self.slot.to_lease.notified();
            if let Some(batch) = self.pull()? {
                return Ok(batch);
            }
            notified.await;
        }
    }

    /// Queues a commit of `offset` (the next offset to read: the one after the last
    /// record finished) through the group's committers. It returns once queued; see
    /// [`commit_and_wait`](Self::commit_and_wait) to know it reached the coordinator.
    pub fn commit(&self, offset: i64) -> Result<(), ManualError> {
        let mut inner = self.slot.lock();
        self.slot.usable(&inner, self.id, false)?;
        let (topic, partition) = (self.slot.tp.topic.to_string(), self.slot.tp.partition);
        let Some((end, epoch)) = inner.pulled_end.filter(|(end, _)| offset <= *end) else {
            let pulled = inner.pulled_end.map(|(end, _)| end);
            return Err(ManualError::CommitAbovePulled { topic, partition, offset, pulled });
        };
        let floor = inner.requested.or(inner.pulled_start).unwrap_or(offset);
        if offset < floor {
            return Err(ManualError::CommitBelowCommitted { topic, partition, offset, floor });
        }
        if inner.requested == Some(offset) {
            return Ok(());
        }
        inner.requested = Some(offset);
        drop(inner);
        tracing::debug!(partition = %self.slot.tp, task = self.slot.task, lease = self.id, offset, "lease: commit");
        let mut position = TopicPartitionOffset::new(self.slot.tp.topic.clone(), partition, offset);
        position.last_epoch = if offset == end { epoch } else { None };
        let _ = self.slot.reports.send(Report::Done { position, metadata: None });
        self.slot.to_task.notify_one();
        Ok(())
    }

    /// Commits `offset` like [`commit`](Self::commit) and waits until the coordinator
    /// has it. Fails with [`ManualError::Released`] if the partition is released first.
    pub async fn commit_and_wait(&self, offset: i64) -> Result<(), ManualError> {
        self.commit(offset)?;
        let mut committed = self.slot.committed.clone();
        loop {
            if committed.borrow_and_update().is_some_and(|c| c >= offset) {
                return Ok(());
            }
            if committed.changed().await.is_err() {
                let (topic, partition) = (self.slot.tp.topic.to_string(), self.slot.tp.partition);
                return Err(ManualError::Released { topic, partition });
            }
        }
    }

    /// The partition's last offset known committed.
    pub fn committed(&self) -> Option<i64> {
        *self.slot.committed.borrow()
    }

    /// Whether the partition was released after a graceful stop with everything
    /// pulled committed (rather than lost, failed or restarting).
    pub(crate) fn handed_over(&self) -> bool {
        let inner = self.slot.lock();
        inner.state == State::Released && inner.handed_over
    }

    /// Whether records pulled through the lease are not committed yet.
    pub fn uncommitted(&self) -> bool {
        let inner = self.slot.lock();
        inner.lease == Some(self.id) && inner.uncommitted()
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let mut inner = self.slot.lock();
        if inner.lease != Some(self.id) {
            return;
        }
        inner.lease = None;
        if inner.uncommitted() && matches!(inner.state, State::Running | State::Stopping) {
            inner.state = State::Restarting;
            drop(inner);
            tracing::info!(partition = %self.slot.tp, "a lease dropped with records not committed: restarting");
            self.slot.to_task.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use bytes::Bytes;
    use klife_fetcher::TimestampType;

    use super::*;

    fn record(offset: i64) -> Record {
        Record {
            topic: Arc::from("t"),
            partition: 0,
            offset,
            timestamp: 0,
            timestamp_type: TimestampType::CreateTime,
            key: None,
            value: Some(Bytes::from_static(b"v")),
            headers: Vec::new(),
            leader_epoch: Some(3),
            batch: klife_fetcher::BatchInfo {
                base_offset: offset,
                compression: klife_protocol::Compression::None,
                is_transactional: false,
                producer_id: -1,
                producer_epoch: -1,
                base_sequence: -1,
            },
        }
    }

    fn batch(offsets: std::ops::Range<i64>, next: i64) -> Batch {
        Batch {
            topic: Arc::from("t"),
            partition: 0,
            records: offsets.map(record).collect(),
            next_offset: next,
            high_watermark: 100,
        }
    }

    fn slot() -> (Arc<Slot>, mpsc::UnboundedReceiver<Report>, watch::Sender<Option<i64>>) {
        let (reports, rx) = mpsc::unbounded_channel();
        let (committed_tx, committed) = watch::channel(None);
        (Slot::new(TopicPartition::new("t", 0), 1, reports, committed, Arc::default()), rx, committed_tx)
    }

    fn done(rx: &mut mpsc::UnboundedReceiver<Report>) -> Option<i64> {
        match rx.try_recv() {
            Ok(Report::Done { position, .. }) => Some(position.offset),
            _ => None,
        }
    }

    #[test]
    fn pulls_in_order_and_commits_within_what_was_pulled() {
        let (slot, mut rx, _c) = slot();
        let lease = slot.lease().unwrap();
        assert!(lease.pull().unwrap().is_none());
        assert!(matches!(lease.commit(5), Err(ManualError::CommitAbovePulled { pulled: None, .. })));
        slot.push([batch(10..12, 12), batch(12..14, 15)]);
        assert_eq!(slot.queued(), 2);
        assert_eq!(lease.pull().unwrap().unwrap().next_offset, 12);
        assert!(lease.uncommitted());
        assert!(matches!(lease.commit(13), Err(ManualError::CommitAbovePulled { pulled: Some(12), .. })));
        assert!(matches!(lease.commit(9), Err(ManualError::CommitBelowCommitted { floor: 10, .. })));
        lease.commit(11).unwrap();
        assert_eq!(done(&mut rx), Some(11));
        assert!(matches!(lease.commit(10), Err(ManualError::CommitBelowCommitted { floor: 11, .. })));
        lease.commit(11).unwrap();
        assert_eq!(done(&mut rx), None, "the same commit again is not sent again");
        lease.commit(12).unwrap();
        assert!(!lease.uncommitted());
        assert_eq!(lease.pull().unwrap().unwrap().next_offset, 15);
        lease.commit(15).unwrap();
        assert_eq!((done(&mut rx), done(&mut rx)), (Some(12), Some(15)));
    }

    #[test]
    fn a_lease_dropped_with_records_not_committed_restarts_the_partition() {
        let (slot, _rx, _c) = slot();
        let lease = slot.lease().unwrap();
        slot.push([batch(0..2, 2)]);
        lease.pull().unwrap().unwrap();
        drop(lease);
        assert!(slot.restart_asked());
        assert!(matches!(slot.lease(), Err(ManualError::Restarting { .. })));
    }

    #[test]
    fn a_lease_dropped_with_everything_committed_just_ends() {
        let (slot, _rx, _c) = slot();
        let lease = slot.lease().unwrap();
        slot.push([batch(0..2, 2)]);
        lease.pull().unwrap().unwrap();
        lease.commit(2).unwrap();
        drop(lease);
        assert!(!slot.restart_asked());
        assert!(slot.lease().is_ok());
    }

    #[test]
    fn a_second_lease_takes_over_or_restarts() {
        let (slot, _rx, _c) = slot();
        let first = slot.lease().unwrap();
        let second = slot.lease().unwrap();
        assert!(matches!(first.pull(), Err(ManualError::Superseded { .. })));
        assert!(first.pull().unwrap_err().retake());
        drop(first);
        slot.push([batch(0..2, 2)]);
        second.pull().unwrap().unwrap();
        let third = slot.lease();
        assert!(matches!(third, Err(ManualError::Restarting { .. })));
        assert!(slot.restart_asked());
        assert!(matches!(second.pull(), Err(ManualError::Restarting { .. })));
    }

    #[test]
    fn giving_up_stops_pulls_and_waits_for_commits() {
        let (slot, mut rx, _c) = slot();
        let lease = slot.lease().unwrap();
        slot.push([batch(0..2, 2), batch(2..4, 4)]);
        lease.pull().unwrap().unwrap();
        slot.begin_stop();
        assert_eq!(slot.queued(), 0, "what was not pulled is dropped");
        assert!(matches!(lease.pull(), Err(ManualError::Revoking { .. })));
        assert!(!slot.settled());
        lease.commit(2).unwrap();
        assert_eq!(done(&mut rx), Some(2));
        assert!(slot.settled());
        slot.release(true);
        assert!(lease.handed_over());
        assert!(matches!(lease.commit(2), Err(ManualError::Released { .. })));
        assert!(matches!(slot.lease(), Err(ManualError::Released { .. })));
    }

    #[test]
    fn dropping_the_lease_while_giving_up_settles_at_once() {
        let (slot, _rx, _c) = slot();
        let lease = slot.lease().unwrap();
        slot.push([batch(0..2, 2)]);
        lease.pull().unwrap().unwrap();
        slot.begin_stop();
        drop(lease);
        assert!(slot.settled());
    }

    #[tokio::test]
    async fn a_commit_is_awaited_until_the_coordinator_has_it() {
        let (slot, mut rx, committed) = slot();
        let lease = slot.lease().unwrap();
        slot.push([batch(0..2, 2)]);
        lease.next_batch().await.unwrap();
        let waiting = tokio::spawn(async move { lease.commit_and_wait(2).await });
        tokio::task::yield_now().await;
        while done(&mut rx).is_none() {
            tokio::task::yield_now().await;
        }
        committed.send_replace(Some(2));
        waiting.await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_waiting_pull_wakes_for_a_batch() {
        let (slot, _rx, _c) = slot();
        let lease = slot.lease().unwrap();
        let pusher = slot.clone();
        let pull = tokio::spawn(async move { lease.next_batch().await.map(|b| b.next_offset) });
        tokio::task::yield_now().await;
        pusher.push([batch(0..1, 1)]);
        assert_eq!(pull.await.unwrap().unwrap(), 1);
    }
}
