//! The commit tracker of one member: what each owned partition's handler finished,
//! what is committed, what is in flight, and the OffsetCommit requests of the
//! committers.
//!
//! | event | method |
//! | --- | --- |
//! | a partition starts (after its committed offset was fetched) | [`assign`](CommitTracker::assign) |
//! | the handler finished records of a partition | [`done`](CommitTracker::done) |
//! | a revocation gives partitions up gracefully | [`flush`](CommitTracker::flush) |
//! | partitions were lost (or stopped without a commit) | [`lose`](CommitTracker::lose) |
//! | the member id, epoch or generation changed | [`set_member`](CommitTracker::set_member) |
//! | the coordinator was found (after [`CommitEvent::FindCoordinator`]) | [`coordinator_found`](CommitTracker::coordinator_found) |
//! | a commit was answered | [`on_commit_response`](CommitTracker::on_commit_response) |
//! | a commit got no answer | [`on_commit_failed`](CommitTracker::on_commit_failed) |
//!
//! Out come the commits to send ([`poll_commit`](CommitTracker::poll_commit)), the
//! [`CommitEvent`]s ([`poll_event`](CommitTracker::poll_event)) and the next time to
//! call again ([`poll_timeout`](CommitTracker::poll_timeout)). The driver reports every
//! commit exactly once, with its answer or its failure.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::time::Instant;

use klife_protocol::ErrorCode;
use klife_protocol::messages::OffsetCommitRequest;
use klife_protocol::messages::OffsetCommitResponse;
use klife_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use klife_protocol::types::{TopicPartition, TopicPartitionOffset};

use super::{GroupProtocol, OffsetError, OffsetsConfig, Verdict, Wait, verdict};

/// Names one OffsetCommit request, to report its answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CommitId(u64);

/// Names one flush of partitions ([`CommitTracker::flush`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlushId(u64);

/// An OffsetCommit to send to the group coordinator, at the version given to
/// [`CommitTracker::poll_commit`].
#[derive(Debug, Clone, PartialEq)]
pub struct Commit {
    /// Its id: report its answer, or its failure, with it.
    pub id: CommitId,
    /// The committer that sends it (`0..committers_count`).
    pub committer: usize,
    /// Which of the committer's connections carries it
    /// (`0..commits_in_flight`): none of the committer's other commits in flight uses
    /// it.
    pub slot: usize,
    /// The request.
    pub request: OffsetCommitRequest,
}

/// Work a handler finished that will not be committed: the records from `from` up to
/// (not including) `to` are delivered again by whoever owns the partition next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uncommitted {
    /// The partition.
    pub partition: TopicPartition,
    /// The last committed offset, where the partition starts again (`None`: nothing
    /// was ever committed; the reset policy decides).
    pub from: Option<i64>,
    /// The offset the finished work reached.
    pub to: i64,
}

/// What the tracker tells its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommitEvent {
    /// A partition's committed offset advanced to `offset` (the next record to
    /// handle). A handler held back by `handler_max_unacked_commits` may go on.
    Committed {
        /// The committed position (with the leader epoch committed).
        offset: TopicPartitionOffset,
    },
    /// A partition's commit failed for good; the tracker no longer tracks it. Its
    /// finished work, if any was not committed, is in `uncommitted`.
    Failed {
        /// Why.
        error: OffsetError,
        /// The work not committed.
        uncommitted: Option<Uncommitted>,
    },
    /// Look the group coordinator up again, then call
    /// [`CommitTracker::coordinator_found`]. No commit goes until then.
    FindCoordinator,
    /// A flush ended: its partitions are no longer tracked, and may be released.
    Flushed {
        /// The flush.
        flush: FlushId,
        /// The partitions whose finished work is all committed, at their committed
        /// offset (`None`: nothing was finished or committed).
        committed: Vec<(TopicPartition, Option<i64>)>,
        /// The partitions whose finished work could not be committed (failed, or
        /// lost during the flush).
        uncommitted: Vec<Uncommitted>,
    },
}

/// The highest finished position of a partition, and what goes with its commit.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Done {
    offset: i64,
    leader_epoch: Option<i32>,
    metadata: Option<String>,
}

#[derive(Debug, Clone)]
struct Part {
    committer: usize,
    committed: Option<i64>,
    done: Option<Done>,
    /// The offsets reached by finished batches not committed yet, in order.
    unacked: VecDeque<i64>,
    in_flight: Option<(CommitId, i64)>,
    wait: Wait,
    failures: u32,
    flush: Option<FlushId>,
}

impl Part {
    fn uncommitted(&self, partition: &TopicPartition) -> Option<Uncommitted> {
        self.done.as_ref().map(|d| Uncommitted { partition: partition.clone(), from: self.committed, to: d.offset })
    }
}

#[derive(Debug, Clone)]
struct InFlight {
    committer: usize,
    slot: usize,
    generation: i32,
    /// Each partition with the offset and leader epoch sent.
    partitions: Vec<(TopicPartition, i64, Option<i32>)>,
}

#[derive(Debug, Clone, Default)]
struct Flush {
    waiting: BTreeSet<TopicPartition>,
    committed: Vec<(TopicPartition, Option<i64>)>,
    uncommitted: Vec<Uncommitted>,
}

/// The commits of one group member. See the [module documentation](self).
#[derive(Debug)]
pub struct CommitTracker {
    config: OffsetsConfig,
    member_id: String,
    generation: i32,
    parts: BTreeMap<TopicPartition, Part>,
    /// Partitions given up with a commit still in flight: none of theirs goes again
    /// until it is answered.
    ghosts: HashMap<TopicPartition, CommitId>,
    in_flight: HashMap<CommitId, InFlight>,
    flushes: BTreeMap<FlushId, Flush>,
    coordinator_known: bool,
    next_committer: usize,
    next_id: u64,
    events: VecDeque<CommitEvent>,
}

impl CommitTracker {
    /// A tracker with no partition and no membership yet (nothing is committed until
    /// [`set_member`](Self::set_member) gives one). The coordinator is taken as known.
    pub fn new(config: OffsetsConfig) -> CommitTracker {
        let mut config = config;
        config.committers_count = config.committers_count.max(1);
        config.commits_in_flight = config.commits_in_flight.max(1);
        CommitTracker {
            config,
            member_id: String::new(),
            generation: -1,
            parts: BTreeMap::new(),
            ghosts: HashMap::new(),
            in_flight: HashMap::new(),
            flushes: BTreeMap::new(),
            coordinator_known: true,
            next_committer: 0,
            next_id: 0,
            events: VecDeque::new(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &OffsetsConfig {
        &self.config
    }

    /// The committer a partition belongs to (a hash of its topic and index, the same
    /// in every process).
    pub fn committer_of(&self, partition: &TopicPartition) -> usize {
        // FNV-1a: stable across processes and Rust versions.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in partition.topic.as_bytes().iter().chain(partition.partition.to_be_bytes().iter()) {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        (h % self.config.committers_count as u64) as usize
    }

    /// The member id and its epoch (KIP-848) or generation (classic), as the member
    /// state machine reports them. Commits refused with STALE_MEMBER_EPOCH go again
    /// with a new epoch; none goes while the member is out of the group (epoch 0, or a
    /// negative generation).
    pub fn set_member(&mut self, now: Instant, member_id: impl Into<String>, generation: i32) {
        let _ = now;
        self.member_id = member_id.into();
        self.generation = generation;
    }

    /// The member epoch or generation commits carry now.
    pub fn generation(&self) -> i32 {
        self.generation
    }

    /// The coordinator is known (again): commits may go.
    pub fn coordinator_found(&mut self, now: Instant) {
        let _ = now;
        self.coordinator_known = true;
    }

    /// Starts tracking a partition the member now owns, whose committed offset is
    /// `committed` (`None`: the group has none). A partition already tracked is left
    /// as it is.
    pub fn assign(&mut self, now: Instant, partition: TopicPartition, committed: Option<i64>) {
        let _ = now;
        let committer = self.committer_of(&partition);
        self.parts.entry(partition).or_insert(Part {
            committer,
            committed: committed.filter(|o| *o >= 0),
            done: None,
            unacked: VecDeque::new(),
            in_flight: None,
            wait: Wait::Ready,
            failures: 0,
            flush: None,
        });
    }

    /// The handler finished a partition's records up to `position.offset` (the offset
    /// after the last record finished, not the fetch position), with the leader epoch
    /// of that record in `position.last_epoch`; `metadata` goes with the commit (the
    /// reason of a skip or a dead letter). Returns whether it counts: a position not
    /// above what was finished or committed before, or of a partition not tracked, is
    /// ignored.
    pub fn done(&mut self, now: Instant, position: &TopicPartitionOffset, metadata: Option<String>) -> bool {
        let _ = now;
        let tp = position.topic_partition();
        let Some(part) = self.parts.get_mut(&tp) else { return false };
        let floor = part.done.as_ref().map(|d| d.offset).or(part.committed);
        if floor.is_some_and(|f| position.offset <= f) || position.offset < 0 {
            return false;
        }
        part.done = Some(Done { offset: position.offset, leader_epoch: position.last_epoch, metadata });
        part.unacked.push_back(position.offset);
        true
    }

    /// Whether the handler may start on the partition's next batch: at most
    /// `max_unacked_commits` of its finished batches wait for their commit. `false`
    /// for a partition not tracked.
    pub fn may_handle(&self, partition: &TopicPartition) -> bool {
        self.parts.get(partition).is_some_and(|p| p.unacked.len() <= self.config.max_unacked_commits)
    }

    /// The committed offset of a tracked partition (`None`: none yet, or not tracked).
    pub fn committed(&self, partition: &TopicPartition) -> Option<i64> {
        self.parts.get(partition).and_then(|p| p.committed)
    }

    /// The finished offset of a tracked partition not committed yet, if any.
    pub fn pending(&self, partition: &TopicPartition) -> Option<i64> {
        self.parts.get(partition).and_then(|p| p.done.as_ref().map(|d| d.offset))
    }

    /// The partitions tracked, sorted.
    pub fn partitions(&self) -> Vec<TopicPartition> {
        self.parts.keys().cloned().collect()
    }

    /// The commits in flight.
    pub fn in_flight(&self) -> Vec<CommitId> {
        let mut ids: Vec<CommitId> = self.in_flight.keys().copied().collect();
        ids.sort();
        ids
    }

    /// Commits what the handler finished on these partitions, then stops tracking
    /// them: [`CommitEvent::Flushed`] says when (at once if nothing is left to commit).
    /// The caller finishes the records in flight first, so that nothing handled is
    /// left out. Partitions not tracked count as committed. A flush waits as long as
    /// commits fail in ways that pass (backoffs, the coordinator moving, a stale
    /// epoch): the caller bounds it by the rebalance timeout, and past it gives what
    /// remains up with [`lose`](Self::lose) (the flush then ends, reporting that work
    /// as not committed).
    pub fn flush<I>(&mut self, now: Instant, partitions: I) -> FlushId
    where
        I: IntoIterator<Item = TopicPartition>,
    {
        let id = FlushId(self.next_id);
        self.next_id += 1;
        let mut flush = Flush::default();
        for tp in partitions {
            match self.parts.get_mut(&tp) {
                Some(part) => {
                    part.flush = Some(id);
                    // A flush does not wait out a backoff: the rebalance timeout runs.
                    if matches!(part.wait, Wait::Until(_)) {
                        part.wait = Wait::Ready;
                    }
                    flush.waiting.insert(tp);
                }
                None => flush.committed.push((tp, None)),
            }
        }
        self.flushes.insert(id, flush);
        self.settle_flushes(now);
        id
    }

    /// These partitions are gone without a commit (lost, or their consumer stopped
    /// on a failure): the tracker drops them and returns their finished work that was
    /// not committed. Answers to their commits in flight are ignored.
    pub fn lose<I>(&mut self, now: Instant, partitions: I) -> Vec<Uncommitted>
    where
        I: IntoIterator<Item = TopicPartition>,
    {
        let mut out = Vec::new();
        for tp in partitions {
            if let Some(u) = self.drop_part(&tp) {
                out.push(u);
            }
        }
        self.settle_flushes(now);
        out
    }

    /// The next commit to send now, if a committer has a free connection and
    /// something to commit (a partition whose commit is in flight waits for its answer). `version` is the OffsetCommit version the coordinator and klife share:
    /// a KIP-848 member needs v9+ (below it, its pending partitions fail with
    /// [`OffsetError::UnsupportedVersion`]).
    pub fn poll_commit(&mut self, now: Instant, version: i16) -> Option<Commit> {
        if !self.coordinator_known || !self.config.is_member(self.generation) {
            return None;
        }
        if self.config.protocol != GroupProtocol::Classic && version < super::CONSUMER_PROTOCOL_MIN_VERSION {
            let ready: Vec<TopicPartition> =
                self.parts.iter().filter(|(tp, p)| self.ready(now, tp, p)).map(|(tp, _)| tp.clone()).collect();
            for tp in ready {
                self.fail(now, &tp, OffsetError::UnsupportedVersion { partition: tp.clone(), version });
            }
            return None;
        }
        let n = self.config.committers_count;
        for i in 0..n {
            let committer = (self.next_committer + i) % n;
            let Some(slot) = self.free_slot(committer) else { continue };
            let batch: Vec<TopicPartition> = self
                .parts
                .iter()
                .filter(|(tp, p)| p.committer == committer && self.ready(now, tp, p))
                .map(|(tp, _)| tp.clone())
                .collect();
            if batch.is_empty() {
                continue;
            }
            self.next_committer = (committer + 1) % n;
            return Some(self.build(committer, slot, version, batch));
        }
        None
    }

    /// A connection of `committer` with no commit in flight, if any.
    fn free_slot(&self, committer: usize) -> Option<usize> {
        (0..self.config.commits_in_flight)
            .find(|slot| !self.in_flight.values().any(|f| f.committer == committer && f.slot == *slot))
    }

    fn ready(&self, now: Instant, tp: &TopicPartition, p: &Part) -> bool {
        p.done.is_some()
            && p.in_flight.is_none()
            && !self.ghosts.contains_key(tp)
            && match p.wait {
                Wait::Ready => true,
                Wait::Until(t) => t <= now,
                Wait::Epoch(e) => e != self.generation,
            }
    }

    fn build(&mut self, committer: usize, slot: usize, version: i16, batch: Vec<TopicPartition>) -> Commit {
        let id = CommitId(self.next_id);
        self.next_id += 1;
        let mut topics: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
        let mut sent = Vec::with_capacity(batch.len());
        for tp in &batch {
            let Some(part) = self.parts.get_mut(tp) else { continue };
            let Some(done) = &part.done else { continue };
            let leader_epoch = if version >= 6 { done.leader_epoch.unwrap_or(-1) } else { -1 };
            topics.entry(&tp.topic).or_default().push(
                OffsetCommitRequestPartition::default()
                    .with_partition_index(tp.partition)
                    .with_committed_offset(done.offset)
                    .with_committed_leader_epoch(leader_epoch)
                    .with_committed_metadata(Some(done.metadata.clone().unwrap_or_default())),
            );
            part.in_flight = Some((id, done.offset));
            part.wait = Wait::Ready;
            sent.push((tp.clone(), done.offset, done.leader_epoch));
        }
        let topics = topics
            .into_iter()
            .map(|(name, partitions)| {
                OffsetCommitRequestTopic::default().with_name(name.to_owned()).with_partitions(partitions)
            })
            .collect();
        let instance_id = if version >= 7 { self.config.instance_id.clone() } else { None };
        let request = OffsetCommitRequest::default()
            .with_group_id(self.config.group_id.clone())
            .with_generation_id_or_member_epoch(self.generation)
            .with_member_id(self.member_id.clone())
            .with_group_instance_id(instance_id)
            .with_topics(topics);
        self.in_flight.insert(id, InFlight { committer, slot, generation: self.generation, partitions: sent });
        Commit { id, committer, slot, request }
    }

    /// The coordinator answered commit `id`: each partition is settled by its code.
    /// An answer to no commit in flight is ignored.
    pub fn on_commit_response(&mut self, now: Instant, id: CommitId, response: &OffsetCommitResponse) {
        let Some(flight) = self.take_flight(id) else { return };
        let mut codes: HashMap<(&str, i32), ErrorCode> = HashMap::new();
        for t in &response.topics {
            for p in &t.partitions {
                codes.insert((t.name.as_str(), p.partition_index), ErrorCode::from_code(p.error_code));
            }
        }
        for (tp, offset, leader_epoch) in &flight.partitions {
            if !self.owns_flight(tp, id) {
                continue;
            }
            match codes.get(&(&*tp.topic, tp.partition)).copied() {
                // Left out of the answer: as if it had not been sent.
                None => self.back_off(now, tp),
                Some(code) => self.settle(now, tp, tp.at(*offset), *leader_epoch, flight.generation, code),
            }
        }
        self.settle_flushes(now);
    }

    /// Commit `id` got no answer (the connection failed, the request timed out or
    /// was not sent): its partitions go again after the backoff, to the coordinator
    /// found anew.
    pub fn on_commit_failed(&mut self, now: Instant, id: CommitId) {
        let Some(flight) = self.take_flight(id) else { return };
        for (tp, _, _) in &flight.partitions {
            if self.owns_flight(tp, id) {
                self.back_off(now, tp);
            }
        }
        self.find_coordinator();
    }

    /// The next event, in order.
    pub fn poll_event(&mut self) -> Option<CommitEvent> {
        self.events.pop_front()
    }

    /// When [`poll_commit`](Self::poll_commit) should be tried again at the latest
    /// (`None`: only after an event).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.coordinator_known {
            return None;
        }
        super::earliest(self.parts.values().map(|p| match p.wait {
            Wait::Until(t) if p.done.is_some() && p.in_flight.is_none() => Some(t),
            _ => None,
        }))
    }

    fn take_flight(&mut self, id: CommitId) -> Option<InFlight> {
        let flight = self.in_flight.remove(&id)?;
        self.ghosts.retain(|_, c| *c != id);
        Some(flight)
    }

    /// Whether `tp` is tracked and waits for commit `id`; clears the wait if so.
    fn owns_flight(&mut self, tp: &TopicPartition, id: CommitId) -> bool {
        match self.parts.get_mut(tp) {
            Some(p) if p.in_flight.is_some_and(|(c, _)| c == id) => {
                p.in_flight = None;
                true
            }
            _ => false,
        }
    }

    fn settle(
        &mut self,
        now: Instant,
        tp: &TopicPartition,
        mut position: TopicPartitionOffset,
        leader_epoch: Option<i32>,
        generation: i32,
        code: ErrorCode,
    ) {
        let verdict = match verdict(code) {
            // Classic: refused because a rebalance made (or is making) a generation the
            // commit does not carry. A partition still tracked is the member's in the
            // generation it joins, as a cooperative rebalance keeps what it does not
            // move: the commit goes again under that generation (at once if the member
            // joined it already), as Java's consumer retries it. Dropped instead, the
            // partition's consumer would run on with nothing committed. One the member
            // loses meanwhile stops being tracked, and its work goes to the next owner.
            Verdict::Fail
                if self.config.protocol == GroupProtocol::Classic
                    && matches!(code, ErrorCode::IllegalGeneration | ErrorCode::RebalanceInProgress) =>
            {
                Verdict::NextEpoch
            }
            v => v,
        };
        match verdict {
            Verdict::Ok => {
                let Some(part) = self.parts.get_mut(tp) else { return };
                let offset = position.offset;
                if part.committed.is_none_or(|c| c < offset) {
                    part.committed = Some(offset);
                }
                while part.unacked.front().is_some_and(|o| *o <= offset) {
                    part.unacked.pop_front();
                }
                if part.done.as_ref().is_some_and(|d| d.offset <= offset) {
                    part.done = None;
                }
                position.last_epoch = leader_epoch;
                part.failures = 0;
                part.wait = Wait::Ready;
                self.events.push_back(CommitEvent::Committed { offset: position });
            }
            Verdict::FindCoordinator => {
                let first = self.parts.get(tp).is_some_and(|p| p.failures == 0);
                if first {
                    if let Some(p) = self.parts.get_mut(tp) {
                        p.failures = 1;
                        p.wait = Wait::Ready;
                    }
                } else {
                    self.back_off(now, tp);
                }
                self.find_coordinator();
            }
            Verdict::Backoff => self.back_off(now, tp),
            Verdict::NextEpoch => {
                tracing::debug!(group = %self.config.group_id, %tp, generation, "commit refused as stale: again with the next epoch");
                if let Some(p) = self.parts.get_mut(tp) {
                    p.wait = Wait::Epoch(generation);
                }
            }
            Verdict::Fail => {
                let error = OffsetError::from_code(tp.clone(), code);
                self.fail(now, tp, error);
            }
        }
    }

    /// Ends the tracking of `tp` on an error: its uncommitted work goes with the
    /// event, or to the flush that waits for it.
    fn fail(&mut self, now: Instant, tp: &TopicPartition, error: OffsetError) {
        tracing::warn!(group = %self.config.group_id, %error, "commit failed");
        let uncommitted = self.drop_part(tp);
        self.events.push_back(CommitEvent::Failed { error, uncommitted });
        self.settle_flushes(now);
    }

    /// Stops tracking `tp`; its uncommitted work is returned, or, if a flush waits for
    /// it, given to the flush.
    fn drop_part(&mut self, tp: &TopicPartition) -> Option<Uncommitted> {
        let part = self.parts.remove(tp)?;
        if let Some((id, _)) = part.in_flight {
            self.ghosts.insert(tp.clone(), id);
        }
        let uncommitted = part.uncommitted(tp);
        if let Some(f) = part.flush.and_then(|id| self.flushes.get_mut(&id)) {
            f.waiting.remove(tp);
            match uncommitted {
                Some(u) => f.uncommitted.push(u),
                None => f.committed.push((tp.clone(), part.committed)),
            }
            return None;
        }
        uncommitted
    }

    fn settle_flushes(&mut self, now: Instant) {
        let _ = now;
        let finished: Vec<TopicPartition> = self
            .parts
            .iter()
            .filter(|(_, p)| p.flush.is_some() && p.done.is_none() && p.in_flight.is_none())
            .map(|(tp, _)| tp.clone())
            .collect();
        for tp in finished {
            let _ = self.drop_part(&tp);
        }
        let complete: Vec<FlushId> =
            self.flushes.iter().filter(|(_, f)| f.waiting.is_empty()).map(|(id, _)| *id).collect();
        for id in complete {
            if let Some(f) = self.flushes.remove(&id) {
                self.events.push_back(CommitEvent::Flushed {
                    flush: id,
                    committed: f.committed,
                    uncommitted: f.uncommitted,
                });
            }
        }
    }

    fn back_off(&mut self, now: Instant, tp: &TopicPartition) {
        let Some(part) = self.parts.get_mut(tp) else { return };
        part.failures = part.failures.saturating_add(1);
        part.wait = Wait::Until(now + self.config.backoff(part.failures));
    }

    fn find_coordinator(&mut self) {
        if self.coordinator_known {
            self.coordinator_known = false;
            self.events.push_back(CommitEvent::FindCoordinator);
        }
    }
}
