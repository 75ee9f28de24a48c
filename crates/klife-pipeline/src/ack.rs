//! From acknowledgements to commits: which offset of each partition may be committed,
//! given the records delivered and the ones acknowledged so far.
//!
//! Kafka keeps one committed offset per partition, so a record acknowledged out of
//! order cannot be committed on its own: the offset committed is the one after the
//! largest prefix of delivered records that are all acknowledged. [`AckTracker`]
//! keeps, per partition, only the window from the first unacknowledged record to the
//! last delivered one; the acknowledged prefix is dropped as soon as it forms.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};

use klife_protocol::{TopicPartition, TopicPartitionOffset};

/// Source of incarnation numbers, unique in the process: a [`Delivery`] made before its
/// partition was released, or by another tracker, never matches a partition tracked now.
static INCARNATIONS: AtomicU64 = AtomicU64::new(0);

/// Why a delivery or an acknowledgement was refused. The tracker is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AckError {
    /// Offsets of a partition must be delivered in increasing order; `offset` is not
    /// above the last one delivered (or skipped to) in this partition.
    #[error("offset {offset} of {partition} delivered after offset {last}: offsets must increase")]
    OffsetNotIncreasing {
        /// The partition.
        partition: TopicPartition,
        /// The offset refused.
        offset: i64,
        /// The last offset delivered or skipped to before it.
        last: i64,
    },
    /// A record's offset is in `0..i64::MAX` (so that the offset after it is one too).
    #[error("offset {offset} of {partition} is not a record offset")]
    InvalidOffset {
        /// The partition.
        partition: TopicPartition,
        /// The offset refused.
        offset: i64,
    },
    /// The delivery is not one of a partition tracked now: its partition was released
    /// since (revoked, lost or restarted), or it comes from another tracker. Nothing may
    /// be committed for it; a driver drops such an acknowledgement.
    #[error("offset {offset} of {partition} belongs to a partition released since")]
    Stale {
        /// The partition.
        partition: TopicPartition,
        /// The offset of the delivery.
        offset: i64,
    },
    /// The record was acknowledged already.
    #[error("offset {offset} of {partition} acknowledged twice")]
    AlreadyAcked {
        /// The partition.
        partition: TopicPartition,
        /// The offset acknowledged again.
        offset: i64,
    },
}

/// One delivered record, as handed out by [`AckTracker::deliver`]: what acknowledges it
/// later ([`AckTracker::ack`]).
///
/// It names the record's partition and offset and the partition's incarnation in the
/// tracker, so that an acknowledgement arriving after the partition was released and
/// delivered again (the same offsets may come back) is refused as
/// [`AckError::Stale`] instead of acknowledging the new delivery.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Delivery {
    partition: TopicPartition,
    offset: i64,
    incarnation: u64,
}

impl Delivery {
    /// The record's partition.
    pub fn topic_partition(&self) -> &TopicPartition {
        &self.partition
    }

    /// The record's offset.
    pub fn offset(&self) -> i64 {
        self.offset
    }
}

/// What [`AckTracker::release`] forgot of a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Released {
    /// Delivered records that were not acknowledged: they will be delivered again from
    /// the last commit by whoever owns the partition next.
    pub unacked: usize,
    /// A commit point that advanced since the last [`AckTracker::take_commits`] and
    /// was not taken yet; a driver that releases a revoked partition commits it, one
    /// that releases a lost partition drops it.
    pub untaken_commit: Option<TopicPartitionOffset>,
}

/// The state of one record in a partition's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Delivered, not acknowledged.
    Pending,
    /// Delivered and acknowledged.
    Acked,
    /// Not a record: the end of a range of offsets that carry none
    /// ([`AckTracker::skip_to`]); counts as acknowledged.
    Skipped,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    offset: i64,
    leader_epoch: Option<i32>,
    state: State,
}

#[derive(Debug)]
struct Partition {
    incarnation: u64,
    /// From the first unacknowledged record to the last delivered one, in offset order.
    /// Empty, or its front is [`State::Pending`].
    window: VecDeque<Entry>,
    /// The last offset delivered or skipped to.
    last: i64,
    /// How many entries of the window are [`State::Pending`].
    unacked: usize,
    /// The offset to commit (one after the acknowledged prefix) and the leader epoch of
    /// the record before it; `None` until a prefix is acknowledged.
    commit: Option<(i64, Option<i32>)>,
    /// The commit offset last handed out by `take_commits`.
    taken: Option<i64>,
    /// Whether the partition is in the tracker's `dirty` list.
    dirty: bool,
}

impl Partition {
    fn new(last: i64) -> Partition {
        Partition {
            incarnation: INCARNATIONS.fetch_add(1, Ordering::Relaxed),
            window: VecDeque::new(),
            last,
            unacked: 0,
            commit: None,
            taken: None,
            dirty: false,
        }
    }

    /// Marks the delivered record at `offset` acknowledged; whether it was the first
    /// of the window. `Err` when it is not a delivered record waiting (acknowledged
    /// already: deliveries are only made by `deliver`, so an offset below the window
    /// was acknowledged in the prefix dropped since).
    fn ack(&mut self, offset: i64) -> Result<bool, ()> {
        // Offsets are dense but for control records and compaction: look where the
        // offset would be without gaps first.
        let dense = self.window.front().and_then(|f| usize::try_from(offset - f.offset).ok());
        let index = match dense.filter(|i| self.window.get(*i).is_some_and(|e| e.offset == offset)) {
            Some(i) => i,
            None => self.window.binary_search_by_key(&offset, |e| e.offset).map_err(|_| ())?,
        };
        let entry = &mut self.window[index];
        if entry.state != State::Pending {
            return Err(());
        }
        entry.state = State::Acked;
        self.unacked -= 1;
        Ok(index == 0)
    }

    /// Drops the acknowledged prefix; returns whether the commit point moved.
    fn pop_prefix(&mut self) -> bool {
        let mut moved = false;
        while let Some(front) = self.window.front().copied() {
            if front.state == State::Pending {
                break;
            }
            self.window.pop_front();
            self.commit = Some((front.offset + 1, front.leader_epoch));
            moved = true;
        }
        moved
    }

    fn untaken(&self) -> Option<(i64, Option<i32>)> {
        self.commit.filter(|(offset, _)| self.taken != Some(*offset))
    }
}

/// Per partition, the records delivered and acknowledged, and the offset that may be
/// committed: one after the largest prefix of delivered records that are all
/// acknowledged. It never goes backwards while the partition is tracked.
///
/// - [`deliver`](Self::deliver) each record handed to the pipeline, in increasing
///   offset order per partition (gaps are fine: control records and compaction leave
///   offsets without records). Keep the [`Delivery`] with the message.
/// - [`ack`](Self::ack) it when the pipeline is done with it, processed or failed: a
///   failed record counts as acknowledged (after the failure hook ran), since a
///   partition's committed offset cannot move past a record left behind.
/// - [`take_commits`](Self::take_commits) the offsets to commit.
/// - [`release`](Self::release) a partition that is revoked, lost or restarted.
///
/// Memory: per partition, one entry for each record from the first unacknowledged one
/// to the last delivered one.
///
/// ```
/// use klife_pipeline::ack::AckTracker;
/// use klife_protocol::TopicPartition;
///
/// let tp = TopicPartition::new("orders", 0);
/// let mut acks = AckTracker::new();
/// let d5 = acks.deliver(&tp, 5, None)?;
/// let d7 = acks.deliver(&tp, 7, None)?; // offset 6 is a transaction marker
/// acks.ack(&d7)?;
/// assert!(acks.take_commits().is_empty()); // 5 is still in the pipeline
/// acks.ack(&d5)?;
/// assert_eq!(acks.take_commits(), vec![tp.at(8)]);
/// assert!(acks.is_drained(&tp));
/// # Ok::<(), klife_pipeline::ack::AckError>(())
/// ```
#[derive(Debug, Default)]
pub struct AckTracker {
    partitions: HashMap<TopicPartition, Partition>,
    /// Partitions whose commit point may have moved since the last take.
    dirty: Vec<TopicPartition>,
}

impl AckTracker {
    /// A tracker with no partition.
    pub fn new() -> AckTracker {
        AckTracker::default()
    }

    /// Records that the record at `offset` of `partition` was handed to the pipeline.
    /// `leader_epoch` is the record's (its batch's partition leader epoch, if known);
    /// the commit after it carries it.
    ///
    /// A partition not tracked yet starts being tracked (after a [`release`](Self::release),
    /// anew: its offsets may start lower than before).
    ///
    /// # Errors
    ///
    /// [`AckError::InvalidOffset`], or [`AckError::OffsetNotIncreasing`] when `offset`
    /// is not above the last one delivered (or skipped to) in the partition.
    pub fn deliver(
        &mut self,
        partition: &TopicPartition,
        offset: i64,
        leader_epoch: Option<i32>,
    ) -> Result<Delivery, AckError> {
        let p = Self::partition_for(&mut self.partitions, partition, offset)?;
        p.window.push_back(Entry { offset, leader_epoch, state: State::Pending });
        p.last = offset;
        p.unacked += 1;
        Ok(Delivery { partition: partition.clone(), offset, incarnation: p.incarnation })
    }

    /// Records that the records at `offsets` (with their leader epochs), in increasing
    /// order, of `partition` were handed to the pipeline, as [`deliver`](Self::deliver)
    /// one by one would, looking the partition up once.
    ///
    /// # Errors
    ///
    /// As [`deliver`](Self::deliver), for the first offset that is invalid or not
    /// increasing; then nothing of the run is recorded.
    pub fn deliver_all(
        &mut self,
        partition: &TopicPartition,
        offsets: &[(i64, Option<i32>)],
    ) -> Result<Vec<Delivery>, AckError> {
        let Some(&(first, _)) = offsets.first() else { return Ok(Vec::new()) };
        let mut last = first;
        for &(offset, _) in &offsets[1..] {
            if !(0..i64::MAX).contains(&offset) {
                return Err(AckError::InvalidOffset { partition: partition.clone(), offset });
            }
            if offset <= last {
                return Err(AckError::OffsetNotIncreasing { partition: partition.clone(), offset, last });
            }
            last = offset;
        }
        let p = Self::partition_for(&mut self.partitions, partition, first)?;
        p.window.extend(offsets.iter().map(|&(offset, leader_epoch)| Entry {
            offset,
            leader_epoch,
            state: State::Pending,
        }));
        p.last = last;
        p.unacked += offsets.len();
        let incarnation = p.incarnation;
        Ok(offsets.iter().map(|&(offset, _)| Delivery { partition: partition.clone(), offset, incarnation }).collect())
    }

    /// Records that the offsets of `partition` below `next_offset` which were not
    /// delivered carry no record for the pipeline (a fetch that ended on control
    /// records, for example): once every record delivered before is acknowledged, the
    /// commit point may move up to `next_offset`. `leader_epoch` is the one the commit
    /// at `next_offset` carries. Skipping to one past the last delivered offset changes
    /// nothing.
    ///
    /// # Errors
    ///
    /// [`AckError::InvalidOffset`] when `next_offset` is not in `1..=i64::MAX`, or
    /// [`AckError::OffsetNotIncreasing`] when `next_offset - 1` is below the last
    /// offset delivered or skipped to.
    pub fn skip_to(
        &mut self,
        partition: &TopicPartition,
        next_offset: i64,
        leader_epoch: Option<i32>,
    ) -> Result<(), AckError> {
        let last = next_offset.saturating_sub(1);
        if self.partitions.get(partition).is_some_and(|p| p.last == last) {
            return Ok(());
        }
        let p = Self::partition_for(&mut self.partitions, partition, last)?;
        p.window.push_back(Entry { offset: last, leader_epoch, state: State::Skipped });
        p.last = last;
        if p.pop_prefix() {
            Self::mark_dirty(&mut self.dirty, partition, p);
        }
        Ok(())
    }

    /// Records that the pipeline is done with a delivered record.
    ///
    /// # Errors
    ///
    /// [`AckError::Stale`] when the delivery's partition was released since (or the
    /// delivery is another tracker's), [`AckError::AlreadyAcked`] on a second
    /// acknowledgement.
    pub fn ack(&mut self, delivery: &Delivery) -> Result<(), AckError> {
        let stale = || AckError::Stale { partition: delivery.partition.clone(), offset: delivery.offset };
        let twice = || AckError::AlreadyAcked { partition: delivery.partition.clone(), offset: delivery.offset };
        let p = self.partitions.get_mut(&delivery.partition).ok_or_else(stale)?;
        if p.incarnation != delivery.incarnation {
            return Err(stale());
        }
        let front = p.ack(delivery.offset).map_err(|()| twice())?;
        if front && p.pop_prefix() {
            Self::mark_dirty(&mut self.dirty, &delivery.partition, p);
        }
        Ok(())
    }

    /// Acknowledges `deliveries` as [`ack`](Self::ack) one by one would, looking each
    /// run of one partition up once; the errors of those refused, in order.
    pub fn ack_all<'a>(&mut self, deliveries: impl IntoIterator<Item = &'a Delivery>) -> Vec<AckError> {
        let mut errors = Vec::new();
        let mut deliveries = deliveries.into_iter().peekable();
        while let Some(first) = deliveries.next() {
            let Some(p) = self.partitions.get_mut(&first.partition).filter(|p| p.incarnation == first.incarnation)
            else {
                errors.push(AckError::Stale { partition: first.partition.clone(), offset: first.offset });
                continue;
            };
            let mut moved = false;
            let mut next = Some(first);
            while let Some(d) = next {
                match p.ack(d.offset) {
                    Ok(front) => moved |= front && p.pop_prefix(),
                    Err(()) => errors.push(AckError::AlreadyAcked { partition: d.partition.clone(), offset: d.offset }),
                }
                next = deliveries.next_if(|n| n.incarnation == first.incarnation);
            }
            if moved {
                Self::mark_dirty(&mut self.dirty, &first.partition, p);
            }
        }
        errors
    }

    /// The offsets to commit: for each partition whose commit point advanced since the
    /// last call, one after its acknowledged prefix (with the leader epoch of the
    /// prefix's last record as `last_epoch`), ordered by topic and partition.
    pub fn take_commits(&mut self) -> Vec<TopicPartitionOffset> {
        let mut commits = Vec::new();
        for tp in self.dirty.drain(..) {
            // A partition released and tracked again may be listed twice; the flag
            // keeps it to one commit.
            let Some(p) = self.partitions.get_mut(&tp).filter(|p| p.dirty) else { continue };
            p.dirty = false;
            if let Some((offset, epoch)) = p.untaken() {
                p.taken = Some(offset);
                commits.push(to_commit(&tp, offset, epoch));
            }
        }
        commits.sort_unstable_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        commits
    }

    /// Forgets `partition` (revoked, lost, or restarting from another position):
    /// acknowledgements of its earlier deliveries are [`AckError::Stale`] from now on,
    /// and a later [`deliver`](Self::deliver) starts it anew. `None` if it was not
    /// tracked.
    pub fn release(&mut self, partition: &TopicPartition) -> Option<Released> {
        let p = self.partitions.remove(partition)?;
        let untaken_commit = p.untaken().map(|(offset, epoch)| to_commit(partition, offset, epoch));
        Some(Released { unacked: p.unacked, untaken_commit })
    }

    /// How many delivered records of `partition` are not acknowledged (0 if it is not
    /// tracked).
    pub fn unacked(&self, partition: &TopicPartition) -> usize {
        self.partitions.get(partition).map_or(0, |p| p.unacked)
    }

    /// Whether every delivered record of `partition` is acknowledged (true if it is not
    /// tracked): a revoked partition may be committed and released.
    pub fn is_drained(&self, partition: &TopicPartition) -> bool {
        self.unacked(partition) == 0
    }

    /// The offset `partition` may be committed at now (taken or not), `None` before any
    /// prefix is acknowledged or if it is not tracked.
    pub fn commit_point(&self, partition: &TopicPartition) -> Option<i64> {
        self.partitions.get(partition).and_then(|p| p.commit.map(|(offset, _)| offset))
    }

    /// The partitions tracked, in no particular order.
    pub fn partitions(&self) -> impl Iterator<Item = &TopicPartition> {
        self.partitions.keys()
    }

    /// The partition's state, created if needed, after checking that `offset` may come
    /// next in it.
    fn partition_for<'a>(
        partitions: &'a mut HashMap<TopicPartition, Partition>,
        partition: &TopicPartition,
        offset: i64,
    ) -> Result<&'a mut Partition, AckError> {
        if !(0..i64::MAX).contains(&offset) {
            return Err(AckError::InvalidOffset { partition: partition.clone(), offset });
        }
        if let Some(last) = partitions.get(partition).map(|p| p.last).filter(|last| offset <= *last) {
            return Err(AckError::OffsetNotIncreasing { partition: partition.clone(), offset, last });
        }
        Ok(partitions.entry(partition.clone()).or_insert_with(|| Partition::new(-1)))
    }

    fn mark_dirty(dirty: &mut Vec<TopicPartition>, tp: &TopicPartition, p: &mut Partition) {
        if !p.dirty {
            p.dirty = true;
            dirty.push(tp.clone());
        }
    }
}

fn to_commit(tp: &TopicPartition, offset: i64, epoch: Option<i32>) -> TopicPartitionOffset {
    let commit = tp.at(offset);
    match epoch {
        Some(epoch) => commit.with_last_epoch(epoch),
        None => commit,
    }
}

#[cfg(test)]
mod tests;
