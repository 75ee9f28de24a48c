//! The group as a stream: [`GroupStream`].

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, PoisonError};
use std::task::{Context, Poll};

use klife_fetcher::Record;
use klife_protocol::types::TopicPartition;
use tokio::sync::{Notify, watch};

use super::ConsumerGroup;
use super::manual::{Batch, Lease, ManualError, Slot};

/// What a [`GroupStream`] yields.
#[derive(Debug)]
#[non_exhaustive]
pub enum GroupEvent {
    /// Partitions this member now owns, sorted; their batches follow.
    Assigned(Vec<TopicPartition>),
    /// A batch of an owned partition.
    Batch(StreamBatch),
    /// Partitions being given up, sorted: no batch of them follows. Commit what you
    /// finished of their batches; the hand-over waits for it.
    Revoking(Vec<TopicPartition>),
    /// Partitions handed over gracefully, sorted, after [`GroupEvent::Revoking`].
    Revoked(Vec<TopicPartition>),
    /// Partitions lost without a hand-over, sorted: another member may own them and
    /// their commits are refused; what was not committed comes again to their next
    /// owner.
    Lost(Vec<TopicPartition>),
}

/// A batch yielded by a [`GroupStream`], with the lease that commits it.
#[derive(Debug)]
pub struct StreamBatch {
    batch: Batch,
    lease: Arc<Lease>,
}

impl StreamBatch {
    /// The partition.
    pub fn topic_partition(&self) -> &TopicPartition {
        self.lease.topic_partition()
    }

    /// The topic.
    pub fn topic(&self) -> &str {
        &self.batch.topic
    }

    /// The partition number.
    pub fn partition(&self) -> i32 {
        self.batch.partition
    }

    /// The records, in offset order (never empty).
    pub fn records(&self) -> &[Record] {
        &self.batch.records
    }

    /// Takes the records out; the batch can still be committed.
    pub fn take_records(&mut self) -> Vec<Record> {
        std::mem::take(&mut self.batch.records)
    }

    /// The offset a commit of the whole batch names.
    pub fn next_offset(&self) -> i64 {
        self.batch.next_offset
    }

    /// The partition's high watermark when the batch was fetched.
    pub fn high_watermark(&self) -> i64 {
        self.batch.high_watermark
    }

    /// Queues the commit of the whole batch (and of every batch of the partition
    /// before it). Batches of one partition are committed in order: committing one
    /// below a batch committed before fails with [`ManualError::CommitBelowCommitted`].
    pub fn commit(&self) -> Result<(), ManualError> {
        self.lease.commit(self.batch.next_offset)
    }

    /// Commits the whole batch and waits until the coordinator has it.
    pub async fn commit_and_wait(&self) -> Result<(), ManualError> {
        self.lease.commit_and_wait(self.batch.next_offset).await
    }

    /// The lease of the partition, to commit part of the batch
    /// ([`Lease::commit`] with the offset after the last record finished).
    pub fn lease(&self) -> &Lease {
        &self.lease
    }
}

/// What the stream holds of an owned partition.
#[derive(Debug)]
struct Held {
    slot: Arc<Slot>,
    lease: Arc<Lease>,
    revoking: bool,
}

type Wait = Pin<Box<dyn Future<Output = bool> + Send>>;

/// The group as a stream: [`GroupStream`] yields the batches of every partition the
/// member owns, and the changes of its assignment, in one ordered sequence of
/// [`GroupEvent`]s, so that a consumer loop written as ordinary async code commits on
/// revocation without a callback.
///
/// Underneath, every topic runs in [manual mode](Lease): the stream holds one
/// lease per owned partition, pulls their batches in rotation (no partition starves)
/// and commits through the lease a [`StreamBatch`] carries. The order of events per
/// partition is fixed:
///
/// 1. [`GroupEvent::Assigned`] before any batch of the partition;
/// 2. its [`GroupEvent::Batch`]es, in offset order;
/// 3. [`GroupEvent::Revoking`] when the member gives it up (revoked, or
///    [`GroupStream::close`]): no batch of it follows; the hand-over waits for the
///    batches already yielded to be committed (up to the rebalance timeout);
/// 4. [`GroupEvent::Revoked`] once handed over, or [`GroupEvent::Lost`] when the member
///    lost it without a hand-over (session lost, fenced, its consumer failed): another
///    member may own it, and commits of its batches are refused.
///
/// A partition whose consumer restarts (its fetch failed for good, or a lease of it
/// was taken outside the stream) comes back as `Lost` and then a new `Assigned`; what
/// was yielded and not committed comes again. When the member has ended, the stream yields `Lost` for what it still held
/// and then `None`.
///
/// Built by [`ConsumerGroup::start_stream`]; it owns the member.
pub struct GroupStream {
    group: ConsumerGroup,
    held: HashMap<TopicPartition, Held>,
    /// The pull rotation: the partition to try first next time.
    turn: usize,
    activity: Arc<Notify>,
    alive: watch::Receiver<()>,
    ended: bool,
    wait: Option<Wait>,
    /// Events found and not yielded yet.
    pending: VecDeque<GroupEvent>,
}

impl std::fmt::Debug for GroupStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupStream")
            .field("group", &self.group)
            .field("held", &self.held.len())
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl GroupStream {
    pub(crate) fn new(group: ConsumerGroup) -> GroupStream {
        let activity = group.shared.activity.clone();
        let alive = group.alive.clone();
        GroupStream {
            group,
            held: HashMap::new(),
            turn: 0,
            activity,
            alive,
            ended: false,
            wait: None,
            pending: VecDeque::new(),
        }
    }

    /// The member: its id, generation, assignment, failures.
    pub fn group(&self) -> &ConsumerGroup {
        &self.group
    }

    /// The member, to wait for it or take its failures ([`ConsumerGroup::next_failure`]).
    pub fn group_mut(&mut self) -> &mut ConsumerGroup {
        &mut self.group
    }

    /// Starts a graceful shutdown and returns at once: the stream goes on with
    /// [`GroupEvent::Revoking`] for every partition, waits for their batches to be
    /// committed, yields [`GroupEvent::Revoked`], and ends once the member left.
    pub fn close(&self) {
        self.group.close();
    }

    /// The next event; `None` once the member has ended and everything it held was
    /// reported.
    pub async fn next(&mut self) -> Option<GroupEvent> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    /// Ends the stream and the member: a graceful shutdown whose revocations commit
    /// nothing more than was committed, then the member's result.
    pub async fn shutdown(self) -> Result<(), super::GroupStopped> {
        // The leases go first: what they hold not committed comes again to the
        // partitions' next owners.
        let GroupStream { group, held, .. } = self;
        drop(held);
        group.shutdown().await
    }

    /// Ends the stream and the member at once, as a crash would
    /// ([`ConsumerGroup::abort`]): nothing more is committed, the member does not
    /// leave, and what was yielded and not committed comes again to the partitions'
    /// next owners.
    pub fn abort(self) {
        let GroupStream { group, held, .. } = self;
        group.abort();
        drop(held);
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<GroupEvent>> {
        loop {
            if let Some(event) = self.step() {
                return Poll::Ready(Some(event));
            }
            if self.ended {
                let mut lost: Vec<TopicPartition> = self.held.drain().map(|(tp, _)| tp).collect();
                if lost.is_empty() {
                    return Poll::Ready(None);
                }
                lost.sort();
                return Poll::Ready(Some(GroupEvent::Lost(lost)));
            }
            let wait = self.wait.get_or_insert_with(|| {
                let (activity, mut alive) = (self.activity.clone(), self.alive.clone());
                Box::pin(async move {
                    tokio::select! {
                        () = activity.notified() => false,
                        changed = alive.changed() => changed.is_err(),
                    }
                })
            });
            match wait.as_mut().poll(cx) {
                Poll::Ready(ended) => {
                    self.wait = None;
                    self.ended |= ended;
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }

    /// One scan of the slots: the events it finds, queued; the first of them.
    fn step(&mut self) -> Option<GroupEvent> {
        if let Some(event) = self.pending.pop_front() {
            return Some(event);
        }
        let slots: Vec<(TopicPartition, Arc<Slot>)> = {
            let slots = self.group.shared.slots.lock().unwrap_or_else(PoisonError::into_inner);
            slots.iter().map(|(tp, s)| (tp.clone(), s.clone())).collect()
        };
        let mut ends = Ends::default();
        let mut assigned = Vec::new();
        // Partitions whose consumer started: a new one, or one that started again
        // after a restart or a hand-over and a new assignment.
        for (tp, slot) in &slots {
            if let Some(held) = self.held.get(tp) {
                if Arc::ptr_eq(&held.slot, slot) {
                    continue;
                }
                if let Some(held) = self.held.remove(tp) {
                    ends.gone(tp, &held);
                }
            }
            if let Ok(lease) = slot.lease() {
                self.held.insert(tp.clone(), Held { slot: slot.clone(), lease: Arc::new(lease), revoking: false });
                assigned.push(tp.clone());
            }
        }
        // Batches, in rotation; and the partitions being given up or gone.
        let mut order: Vec<TopicPartition> = self.held.keys().cloned().collect();
        order.sort();
        let n = order.len();
        let mut batch = None;
        for i in 0..n {
            let tp = &order[(self.turn + i) % n];
            let Some(held) = self.held.get_mut(tp) else { continue };
            match held.lease.pull() {
                Ok(Some(b)) => {
                    batch = Some(StreamBatch { batch: b, lease: held.lease.clone() });
                    self.turn = (self.turn + i + 1) % n;
                    break;
                }
                Ok(None) => {}
                Err(ManualError::Revoking { .. }) => {
                    if !held.revoking {
                        held.revoking = true;
                        ends.revoking.push(tp.clone());
                    }
                }
                Err(_) => {
                    // Released, restarting, or taken over by a lease outside the stream.
                    if let Some(held) = self.held.remove(tp) {
                        ends.gone(tp, &held);
                    }
                }
            }
        }
        if batch.is_none() && n > 0 {
            self.turn = (self.turn + 1) % n;
        }
        // Per partition, the order of the module documentation holds: gone, then
        // given up, then handed over, then new; a batch is never pulled after
        // `Revoking`.
        let Ends { revoking, revoked, lost } = ends;
        for (tps, event) in [
            (lost, GroupEvent::Lost as fn(Vec<TopicPartition>) -> GroupEvent),
            (revoking, GroupEvent::Revoking),
            (revoked, GroupEvent::Revoked),
            (assigned, GroupEvent::Assigned),
        ] {
            if !tps.is_empty() {
                self.pending.push_back(event(sorted(tps)));
            }
        }
        self.pending.extend(batch.map(GroupEvent::Batch));
        self.pending.pop_front()
    }
}

/// The partitions a scan found given up or gone.
#[derive(Default)]
struct Ends {
    revoking: Vec<TopicPartition>,
    revoked: Vec<TopicPartition>,
    lost: Vec<TopicPartition>,
}

impl Ends {
    /// A partition no longer held: handed over (after `Revoking`, yielded now if the
    /// hand-over was too quick to be seen), or lost.
    fn gone(&mut self, tp: &TopicPartition, held: &Held) {
        if held.lease.handed_over() {
            if !held.revoking {
                self.revoking.push(tp.clone());
            }
            self.revoked.push(tp.clone());
        } else {
            self.lost.push(tp.clone());
        }
    }
}

impl futures_core::Stream for GroupStream {
    type Item = GroupEvent;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<GroupEvent>> {
        self.get_mut().poll_event(cx)
    }
}

fn sorted(mut tps: Vec<TopicPartition>) -> Vec<TopicPartition> {
    tps.sort();
    tps
}
