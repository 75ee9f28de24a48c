//! The partition consumers' lifecycle, sans-io: which partitions run, when a
//! partition's consumer starts, stops, is committed, closes and is released, and when
//! a failed one starts again.
//!
//! Events come in as method calls with `now`; [`LifecycleAction`]s come out of
//! [`Lifecycle::poll_action`], to be carried out in order by the group's task, and
//! [`Lifecycle::poll_timeout`] says when to call [`Lifecycle::handle_timeout`]. The
//! rules:
//!
//! - An assigned partition's start is looked up first (committed offset, or the reset
//!   policy); its consumer starts once the start is known, if it is still owned and no
//!   consumer of it runs. A partition assigned again while its previous consumer still
//!   closes waits for it to close: a partition never has two consumers.
//! - Giving partitions up gracefully (a revocation, the shutdown) goes in steps: each
//!   running consumer is asked to stop and finishes its batch in hand; once all have
//!   stopped, what they finished is flushed to the coordinator; once flushed, they
//!   close (`on_consumer_stop`); once closed, the giving-up is released (the
//!   revocation goes back to the group). Past the rebalance timeout, what is left is
//!   lost instead.
//! - Lost partitions close at once and commit nothing more.
//! - A failed consumer whose failure restarts ([`PartitionError::restarts`](super::PartitionError::restarts))
//!   starts again from the offset the driver says (the last one finished or
//!   committed; looked up again when there is none), after a backoff that doubles
//!   with each failure in a row; the others stay stopped until assigned again.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use klife_fetcher::StartOffset;
use klife_protocol::types::TopicPartition;

use super::handler::StopReason;

/// Names one giving-up of partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct GivingUpId(u64);

/// What the group's task must do, in order.
#[derive(Debug, Clone)]
pub(crate) enum LifecycleAction {
    /// Look these partitions' starts up, then report each with
    /// [`Lifecycle::start_known`].
    LookUpStarts(Vec<TopicPartition>),
    /// Stop looking these partitions' starts up.
    ForgetStarts(Vec<TopicPartition>),
    /// Start consumer `task` of `partition` at `start`, after `delay`.
    Start { partition: TopicPartition, task: u64, start: StartOffset, delay: Duration },
    /// Ask consumer `task` of `partition` to stop (finish its batch in hand, report it
    /// stopped).
    Stop { partition: TopicPartition, task: u64 },
    /// Ask consumer `task` of `partition` to close for `reason`.
    Close { partition: TopicPartition, task: u64, reason: StopReason },
    /// Commit what these partitions finished, then report with
    /// [`Lifecycle::flushed`].
    Flush { giving_up: GivingUpId, partitions: Vec<TopicPartition> },
    /// These partitions are lost: commit nothing more for them.
    Lose(Vec<TopicPartition>),
    /// The giving-up is over: release its revocation, if any.
    Release(GivingUpId),
}

/// Where a partition's consumer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Running,
    /// Asked to stop.
    Stopping,
    /// Stopped; waiting for its flush, then `Close`.
    Stopped,
    /// Asked to close.
    Closing,
    /// Failed: no consumer runs.
    Failed,
}

#[derive(Debug, Clone)]
struct Part {
    task: u64,
    phase: Phase,
    failures: u32,
    /// Work it finished could not be committed (a commit refused for good): given up,
    /// it closes as lost, since its next owner gets that work again.
    uncommitted: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flush {
    NotAsked,
    Asked,
    Done,
}

#[derive(Debug)]
struct GivingUp {
    id: GivingUpId,
    reason: StopReason,
    partitions: Vec<TopicPartition>,
    stopping: BTreeSet<TopicPartition>,
    flush: Flush,
    closing: BTreeSet<TopicPartition>,
    deadline: Instant,
}

/// The lifecycle of a member's partition consumers. See the [module documentation](self).
#[derive(Debug)]
pub(crate) struct Lifecycle {
    rebalance_timeout: Duration,
    restart_backoff: (Duration, Duration),
    parts: BTreeMap<TopicPartition, Part>,
    owned: BTreeSet<TopicPartition>,
    deferred: BTreeSet<TopicPartition>,
    giving_up: Vec<GivingUp>,
    next_task: u64,
    next_giving_up: u64,
    actions: VecDeque<LifecycleAction>,
}

impl Lifecycle {
    /// No partition yet. A giving-up lasts at most `rebalance_timeout`; a failed
    /// partition waits `restart_backoff.0`, doubled with each failure in a row up to
    /// `restart_backoff.1`.
    pub(crate) fn new(rebalance_timeout: Duration, restart_backoff: (Duration, Duration)) -> Lifecycle {
        Lifecycle {
            rebalance_timeout,
            restart_backoff,
            parts: BTreeMap::new(),
            owned: BTreeSet::new(),
            deferred: BTreeSet::new(),
            giving_up: Vec::new(),
            next_task: 0,
            next_giving_up: 0,
            actions: VecDeque::new(),
        }
    }

    /// The next thing to do.
    pub(crate) fn poll_action(&mut self) -> Option<LifecycleAction> {
        self.actions.pop_front()
    }

    /// When a giving-up runs out of time.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.giving_up.iter().map(|g| g.deadline).min()
    }

    /// The partitions whose consumers run (or finish) now, sorted.
    pub(crate) fn running(&self) -> Vec<TopicPartition> {
        self.parts.iter().filter(|(_, p)| p.phase != Phase::Failed).map(|(tp, _)| tp.clone()).collect()
    }

    /// Every partition with a consumer or being looked up, for the shutdown.
    pub(crate) fn all(&self) -> Vec<TopicPartition> {
        let mut all: BTreeSet<TopicPartition> = self.parts.keys().cloned().collect();
        all.extend(self.owned.iter().cloned());
        all.into_iter().collect()
    }

    /// No consumer runs and nothing is being given up.
    pub(crate) fn is_idle(&self) -> bool {
        self.parts.values().all(|p| p.phase == Phase::Failed) && self.giving_up.is_empty()
    }

    /// The member was assigned these partitions.
    pub(crate) fn assigned(&mut self, partitions: Vec<TopicPartition>) {
        let mut look_up = Vec::new();
        for tp in partitions {
            self.owned.insert(tp.clone());
            match self.parts.get(&tp).map(|p| p.phase) {
                Some(Phase::Failed) => {
                    self.parts.remove(&tp);
                    look_up.push(tp);
                }
                Some(_) => {
                    self.deferred.insert(tp);
                }
                None => look_up.push(tp),
            }
        }
        if !look_up.is_empty() {
            self.actions.push_back(LifecycleAction::LookUpStarts(look_up));
        }
    }

    /// A partition's start is known: its consumer starts if it is still owned and has
    /// none.
    pub(crate) fn start_known(&mut self, partition: TopicPartition, start: StartOffset) {
        if self.owned.contains(&partition) && !self.parts.contains_key(&partition) {
            self.start(partition, start, Duration::ZERO, 0);
        }
    }

    fn start(&mut self, partition: TopicPartition, start: StartOffset, delay: Duration, failures: u32) {
        self.next_task += 1;
        let task = self.next_task;
        self.parts.insert(partition.clone(), Part { task, phase: Phase::Running, failures, uncommitted: false });
        self.actions.push_back(LifecycleAction::Start { partition, task, start, delay });
    }

    /// Gives `partitions` up gracefully, for `reason`; [`LifecycleAction::Release`]
    /// with the id returned says when it is over.
    pub(crate) fn give_up(&mut self, now: Instant, partitions: Vec<TopicPartition>, reason: StopReason) -> GivingUpId {
        self.next_giving_up += 1;
        let id = GivingUpId(self.next_giving_up);
        self.actions.push_back(LifecycleAction::ForgetStarts(partitions.clone()));
        let mut stopping = BTreeSet::new();
        for tp in &partitions {
            self.owned.remove(tp);
            self.deferred.remove(tp);
            match self.parts.get_mut(tp) {
                Some(p) if p.phase == Phase::Running => {
                    p.phase = Phase::Stopping;
                    stopping.insert(tp.clone());
                    self.actions.push_back(LifecycleAction::Stop { partition: tp.clone(), task: p.task });
                }
                // Already stopping for an earlier giving-up (a shutdown, then the
                // coordinator's revocation): this one waits for the same stop, or it
                // would be released while the consumer still finishes its work.
                Some(p) if p.phase == Phase::Stopping => {
                    stopping.insert(tp.clone());
                }
                Some(p) if p.phase == Phase::Failed => {
                    self.parts.remove(tp);
                }
                _ => {}
            }
        }
        self.giving_up.push(GivingUp {
            id,
            reason,
            partitions,
            stopping,
            flush: Flush::NotAsked,
            closing: BTreeSet::new(),
            deadline: now + self.rebalance_timeout,
        });
        self.advance();
        id
    }

    /// These partitions are lost: their consumers close at once, nothing more is
    /// committed.
    pub(crate) fn lose(&mut self, partitions: &[TopicPartition]) {
        if partitions.is_empty() {
            return;
        }
        self.actions.push_back(LifecycleAction::ForgetStarts(partitions.to_vec()));
        self.actions.push_back(LifecycleAction::Lose(partitions.to_vec()));
        for tp in partitions {
            self.owned.remove(tp);
            self.deferred.remove(tp);
            for g in &mut self.giving_up {
                g.stopping.remove(tp);
            }
            match self.parts.get_mut(tp) {
                Some(p) if p.phase == Phase::Failed => {
                    self.parts.remove(tp);
                }
                Some(p) if p.phase != Phase::Closing => {
                    p.phase = Phase::Closing;
                    self.actions.push_back(LifecycleAction::Close {
                        partition: tp.clone(),
                        task: p.task,
                        reason: StopReason::Lost,
                    });
                }
                _ => {}
            }
        }
        self.advance();
    }

    /// Loses every partition (the member ended).
    pub(crate) fn lose_all(&mut self) {
        let all = self.all();
        self.lose(&all);
    }

    /// Consumer `task` of `partition` stopped after [`LifecycleAction::Stop`].
    pub(crate) fn stopped(&mut self, partition: &TopicPartition, task: u64) {
        if let Some(p) = self.parts.get_mut(partition).filter(|p| p.task == task && p.phase == Phase::Stopping) {
            p.phase = Phase::Stopped;
            for g in &mut self.giving_up {
                g.stopping.remove(partition);
            }
        }
        self.advance();
    }

    /// The flush of a giving-up is over: its partitions' work is committed, except
    /// that of `uncommitted` (a commit refused for good, the member out of the group),
    /// which close as [`StopReason::Lost`]: their work comes again to the next owner.
    pub(crate) fn flushed(&mut self, giving_up: GivingUpId, uncommitted: &[TopicPartition]) {
        if let Some(g) = self.giving_up.iter_mut().find(|g| g.id == giving_up) {
            g.flush = Flush::Done;
        }
        for tp in uncommitted {
            self.commit_failed(tp);
        }
        self.advance();
    }

    /// Work `partition`'s consumer finished could not be committed (a commit refused
    /// for good): given up, the partition closes as [`StopReason::Lost`].
    pub(crate) fn commit_failed(&mut self, partition: &TopicPartition) {
        if let Some(p) = self.parts.get_mut(partition) {
            p.uncommitted = true;
        }
    }

    /// Consumer `task` of `partition` closed: a partition assigned again meanwhile has
    /// its start looked up.
    pub(crate) fn closed(&mut self, partition: &TopicPartition, task: u64) {
        if self.parts.get(partition).is_some_and(|p| p.task == task) {
            self.parts.remove(partition);
            for g in &mut self.giving_up {
                g.closing.remove(partition);
            }
            if self.deferred.remove(partition) && self.owned.contains(partition) {
                self.actions.push_back(LifecycleAction::LookUpStarts(vec![partition.clone()]));
            }
        }
        self.advance();
    }

    /// Consumer `task` of `partition` failed (and ended). With `restarts`, a partition
    /// still owned and running starts again from `resume_from` (looked up again when
    /// `None`) after its backoff.
    pub(crate) fn failed(&mut self, partition: &TopicPartition, task: u64, restarts: bool, resume_from: Option<i64>) {
        let Some(p) = self.parts.get_mut(partition).filter(|p| p.task == task) else { return };
        let failures = p.failures + 1;
        let restart = restarts && p.phase == Phase::Running && self.owned.contains(partition);
        p.phase = Phase::Failed;
        p.failures = failures;
        for g in &mut self.giving_up {
            g.stopping.remove(partition);
            g.closing.remove(partition);
        }
        if restart {
            let (first, max) = self.restart_backoff;
            let factor = 1u32.checked_shl(failures.saturating_sub(1).min(16)).unwrap_or(u32::MAX);
            let delay = first.saturating_mul(factor).min(max);
            match resume_from {
                Some(offset) => self.start(partition.clone(), StartOffset::Offset(offset), delay, failures),
                None => {
                    self.parts.remove(partition);
                    self.actions.push_back(LifecycleAction::LookUpStarts(vec![partition.clone()]));
                }
            }
        }
        self.advance();
    }

    /// Gives up what ran out of time.
    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        while let Some(at) = self.giving_up.iter().position(|g| g.deadline <= now) {
            let g = self.giving_up.remove(at);
            let left: Vec<TopicPartition> = g
                .partitions
                .iter()
                .filter(|tp| self.parts.get(*tp).is_some_and(|p| p.phase != Phase::Failed))
                .cloned()
                .collect();
            tracing::warn!(
                partitions = left.len(),
                "partitions not given up within the rebalance timeout; they are lost"
            );
            self.lose(&left);
            self.actions.push_back(LifecycleAction::Release(g.id));
        }
    }

    /// Moves each giving-up along.
    fn advance(&mut self) {
        let mut i = 0;
        while i < self.giving_up.len() {
            let g = &mut self.giving_up[i];
            if !g.stopping.is_empty() {
                i += 1;
                continue;
            }
            if g.flush == Flush::NotAsked {
                g.flush = Flush::Asked;
                let partitions = g.partitions.clone();
                self.actions.push_back(LifecycleAction::Flush { giving_up: g.id, partitions });
                i += 1;
                continue;
            }
            if g.flush == Flush::Asked {
                i += 1;
                continue;
            }
            for tp in &g.partitions {
                if let Some(p) = self.parts.get_mut(tp) {
                    if p.phase == Phase::Stopped {
                        p.phase = Phase::Closing;
                        let reason = if p.uncommitted { StopReason::Lost } else { g.reason.clone() };
                        self.actions.push_back(LifecycleAction::Close { partition: tp.clone(), task: p.task, reason });
                    }
                    if p.phase == Phase::Closing {
                        g.closing.insert(tp.clone());
                    }
                }
            }
            if g.closing.is_empty() {
                let id = g.id;
                self.giving_up.remove(i);
                self.actions.push_back(LifecycleAction::Release(id));
                continue;
            }
            i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use proptest::prelude::*;

    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(30);
    const BACKOFF: (Duration, Duration) = (Duration::from_millis(100), Duration::from_millis(350));

    fn tp(p: i32) -> TopicPartition {
        TopicPartition::new("t", p)
    }

    fn actions(l: &mut Lifecycle) -> Vec<LifecycleAction> {
        std::iter::from_fn(|| l.poll_action()).collect()
    }

    /// Starts partitions and returns their tasks.
    fn running(l: &mut Lifecycle, parts: &[i32]) -> Vec<u64> {
        l.assigned(parts.iter().map(|p| tp(*p)).collect());
        for p in parts {
            l.start_known(tp(*p), StartOffset::Offset(0));
        }
        actions(l)
            .into_iter()
            .filter_map(|a| match a {
                LifecycleAction::Start { task, .. } => Some(task),
                _ => None,
            })
            .collect()
    }

    fn names(actions: &[LifecycleAction]) -> Vec<String> {
        actions
            .iter()
            .map(|a| match a {
                LifecycleAction::LookUpStarts(p) => format!("look-up {}", p.len()),
                LifecycleAction::ForgetStarts(p) => format!("forget {}", p.len()),
                LifecycleAction::Start { partition, .. } => format!("start {}", partition.partition),
                LifecycleAction::Stop { partition, .. } => format!("stop {}", partition.partition),
                LifecycleAction::Close { partition, reason, .. } => format!("close {} {reason:?}", partition.partition),
                LifecycleAction::Flush { partitions, .. } => format!("flush {}", partitions.len()),
                LifecycleAction::Lose(p) => format!("lose {}", p.len()),
                LifecycleAction::Release(_) => "release".into(),
            })
            .collect()
    }

    #[test]
    fn an_assigned_partition_starts_once_its_start_is_known_and_only_while_owned() {
        let mut l = Lifecycle::new(TIMEOUT, BACKOFF);
        l.assigned(vec![tp(0), tp(1)]);
        assert_eq!(names(&actions(&mut l)), ["look-up 2"]);
        l.start_known(tp(0), StartOffset::Offset(5));
        l.lose(&[tp(1)]);
        l.start_known(tp(1), StartOffset::Earliest);
        assert_eq!(names(&actions(&mut l)), ["start 0", "forget 1", "lose 1"]);
        assert_eq!(l.running(), [tp(0)]);
    }

    #[test]
    fn a_revocation_stops_then_flushes_then_closes_then_releases() {
        let now = Instant::now();
        let mut l = Lifecycle::new(TIMEOUT, BACKOFF);
        let tasks = running(&mut l, &[0, 1]);
        let id = l.give_up(now, vec![tp(0), tp(1)], StopReason::Revoked);
        assert_eq!(names(&actions(&mut l)), ["forget 2", "stop 0", "stop 1"]);
        l.stopped(&tp(0), tasks[0]);
        assert!(actions(&mut l).is_empty(), "the flush waits for every consumer to stop");
        l.stopped(&tp(1), tasks[1]);
        assert_eq!(names(&actions(&mut l)), ["flush 2"]);
        l.flushed(id, &[]);
        assert_eq!(names(&actions(&mut l)), ["close 0 Revoked", "close 1 Revoked"]);
        l.closed(&tp(0), tasks[0]);
        assert!(actions(&mut l).is_empty(), "released once every consumer closed");
        l.closed(&tp(1), tasks[1]);
        assert_eq!(names(&actions(&mut l)), ["release"]);
        assert!(l.is_idle());
    }

    #[test]
    fn a_partition_given_up_twice_is_released_by_neither_before_it_stopped() {
        let now = Instant::now();
        let mut l = Lifecycle::new(TIMEOUT, BACKOFF);
        let tasks = running(&mut l, &[0, 1]);
        let shutdown = l.give_up(now, vec![tp(0), tp(1)], StopReason::Shutdown);
        assert_eq!(names(&actions(&mut l)), ["forget 2", "stop 0", "stop 1"]);
        // The coordinator revokes one of them while the shutdown still waits.
        let revoked = l.give_up(now, vec![tp(1)], StopReason::Revoked);
        assert_eq!(names(&actions(&mut l)), ["forget 1"], "no second stop, and no release yet");
        l.stopped(&tp(0), tasks[0]);
        assert!(actions(&mut l).is_empty(), "partition 1 still finishes its work");
        l.stopped(&tp(1), tasks[1]);
        assert_eq!(names(&actions(&mut l)), ["flush 2", "flush 1"]);
        l.flushed(revoked, &[]);
        assert_eq!(names(&actions(&mut l)), ["close 1 Revoked"]);
        l.closed(&tp(1), tasks[1]);
        assert_eq!(names(&actions(&mut l)), ["release"]);
        l.flushed(shutdown, &[]);
        assert_eq!(names(&actions(&mut l)), ["close 0 Shutdown"]);
        l.closed(&tp(0), tasks[0]);
        assert_eq!(names(&actions(&mut l)), ["release"]);
        assert!(l.is_idle());
    }

    #[test]
    fn a_partition_given_up_twice_and_never_stopped_is_lost_at_the_deadline() {
        let now = Instant::now();
        let mut l = Lifecycle::new(TIMEOUT, BACKOFF);
        let tasks = running(&mut l, &[0]);
        l.give_up(now, vec![tp(0)], StopReason::Shutdown);
        l.give_up(now + Duration::from_secs(1), vec![tp(0)], StopReason::Revoked);
        actions(&mut l);
        l.handle_timeout(now + TIMEOUT);
        // The shutdown's deadline loses the partition; the revocation goes on with it.
        assert_eq!(names(&actions(&mut l)), ["forget 1", "lose 1", "close 0 Lost", "flush 1", "release"]);
        let revoked = l.giving_up.first().map(|g| g.id).expect("the revocation waits");
        l.flushed(revoked, &[]);
        assert!(actions(&mut l).is_empty(), "released once the lost consumer closed");
        l.closed(&tp(0), tasks[0]);
        assert_eq!(names(&actions(&mut l)), ["release"]);
        assert!(l.is_idle());
    }

    #[test]
    fn a_partition_lost_while_given_up_closes_at_once_and_the_rest_goes_on() {
        let now = Instant::now();
        let mut l = Lifecycle::new(TIMEOUT, BACKOFF);
        let tasks = running(&mut l, &[0, 1]);
        let id = l.give_up(now, vec![tp(0), tp(1)], StopReason::Revoked);
        actions(&mut l);
        l.lose(&[tp(1)]);
        assert_eq!(names(&actions(&mut l)), ["forget 1", "lose 1", "close 1 Lost"]);
        l.stopped(&tp(0), tasks[0]);
        assert_eq!(names(&actions(&mut l)), ["flush 2"]);
        l.flushed(id, &[]);
        assert_eq!(names(&actions(&mut l)), ["close 0 Revoked"]);
        l.closed(&tp(1), tasks[1]);
        l.closed(&tp(0), tasks[0]);
        assert_eq!(names(&actions(&mut l)), ["release"]);
    }

    #[test]
    fn a_partition_whose_work_the_flush_could_not_commit_closes_as_lost() {
        let now = Instant::now();
        let mut l = Lifecycle::new(TIMEOUT, BACKOFF);
        let tasks = running(&mut l, &[0, 1]);
        let id = l.give_up(now, vec![tp(0), tp(1)], StopReason::Revoked);
        actions(&mut l);
        l.stopped(&tp(0), tasks[0]);
        l.stopped(&tp(1), tasks[1]);
        assert_eq!(names(&actions(&mut l)), ["flush 2"]);
        l.flushed(id, &[tp(1)]);
        assert_eq!(names(&actions(&mut l)), ["close 0 Revoked", "close 1 Lost"]);
        l.closed(&tp(0), tasks[0]);
        l.closed(&tp(1), tasks[1]);
        assert_eq!(names(&actions(&mut l)), ["release"]);

        // A commit refused for good before the giving-up: the same.
        let tasks = running(&mut l, &[2, 3]);
        l.commit_failed(&tp(3));
        let id = l.give_up(now, vec![tp(2), tp(3)], StopReason::Shutdown);
        actions(&mut l);
        l.stopped(&tp(2), tasks[0]);
        l.stopped(&tp(3), tasks[1]);
        assert_eq!(names(&actions(&mut l)), ["flush 2"]);
        l.flushed(id, &[]);
        assert_eq!(names(&actions(&mut l)), ["close 2 Shutdown", "close 3 Lost"]);
        l.closed(&tp(2), tasks[0]);
        l.closed(&tp(3), tasks[1]);
        assert_eq!(names(&actions(&mut l)), ["release"]);
    }

    #[test]
    fn past_the_rebalance_timeout_what_is_left_is_lost_and_released() {
        let now = Instant::now();
        let mut l = Lifecycle::new(TIMEOUT, BACKOFF);
        running(&mut l, &[0]);
        l.give_up(now, vec![tp(0)], StopReason::Revoked);
        actions(&mut l);
        assert_eq!(l.poll_timeout(), Some(now + TIMEOUT));
        l.handle_timeout(now + TIMEOUT - Duration::from_millis(1));
        assert!(actions(&mut l).is_empty());
        l.handle_timeout(now + TIMEOUT);
        assert_eq!(names(&actions(&mut l)), ["forget 1", "lose 1", "close 0 Lost", "release"]);
    }

    #[test]
    fn a_partition_assigned_again_while_closing_starts_after_it_closed() {
        let now = Instant::now();
        let mut l = Lifecycle::new(TIMEOUT, BACKOFF);
        let tasks = running(&mut l, &[0]);
        l.lose(&[tp(0)]);
        l.assigned(vec![tp(0)]);
        assert_eq!(names(&actions(&mut l)), ["forget 1", "lose 1", "close 0 Lost"]);
        l.closed(&tp(0), tasks[0]);
        assert_eq!(names(&actions(&mut l)), ["look-up 1"]);
        l.start_known(tp(0), StartOffset::Offset(3));
        assert_eq!(names(&actions(&mut l)), ["start 0"]);
        let _ = now;
    }

    #[test]
    fn a_failed_partition_starts_again_with_a_doubling_backoff_from_where_it_was() {
        let mut l = Lifecycle::new(TIMEOUT, BACKOFF);
        let mut task = running(&mut l, &[0])[0];
        let mut delays = Vec::new();
        for _ in 0..4 {
            l.failed(&tp(0), task, true, Some(42));
            match actions(&mut l).pop() {
                Some(LifecycleAction::Start { task: t, start: StartOffset::Offset(42), delay, .. }) => {
                    task = t;
                    delays.push(delay.as_millis());
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(delays, [100, 200, 350, 350]);
        // Nothing finished nor committed: the start is looked up again.
        l.failed(&tp(0), task, true, None);
        assert_eq!(names(&actions(&mut l)), ["look-up 1"]);
        // A failure that does not restart leaves it stopped.
        l.start_known(tp(0), StartOffset::Offset(0));
        let task = match actions(&mut l).pop() {
            Some(LifecycleAction::Start { task, .. }) => task,
            other => panic!("{other:?}"),
        };
        l.failed(&tp(0), task, false, Some(1));
        assert!(actions(&mut l).is_empty());
        assert!(l.running().is_empty() && l.is_idle());
    }

    #[test]
    fn reports_of_an_older_consumer_of_a_partition_are_ignored() {
        let now = Instant::now();
        let mut l = Lifecycle::new(TIMEOUT, BACKOFF);
        let old = running(&mut l, &[0])[0];
        l.failed(&tp(0), old, true, Some(7));
        let new = match actions(&mut l).pop() {
            Some(LifecycleAction::Start { task, .. }) => task,
            other => panic!("{other:?}"),
        };
        l.closed(&tp(0), old);
        l.stopped(&tp(0), old);
        assert_eq!(l.running(), [tp(0)]);
        l.give_up(now, vec![tp(0)], StopReason::Shutdown);
        assert_eq!(names(&actions(&mut l)), ["forget 1", "stop 0"]);
        l.stopped(&tp(0), new);
        assert_eq!(names(&actions(&mut l)), ["flush 1"]);
    }

    #[derive(Debug, Clone)]
    enum Op {
        Assign(i32),
        Known(i32),
        Revoke(i32),
        Lose(i32),
        Stopped(i32),
        Flushed,
        Closed(i32),
        Fail(i32, bool),
        Advance(u64),
    }

    fn op() -> impl Strategy<Value = Op> {
        let p = 0..3i32;
        prop_oneof![
            p.clone().prop_map(Op::Assign),
            p.clone().prop_map(Op::Known),
            p.clone().prop_map(Op::Revoke),
            p.clone().prop_map(Op::Lose),
            p.clone().prop_map(Op::Stopped),
            Just(Op::Flushed),
            p.clone().prop_map(Op::Closed),
            (p, any::<bool>()).prop_map(|(p, r)| Op::Fail(p, r)),
            (0..40_000u64).prop_map(Op::Advance),
        ]
    }

    proptest! {
        /// Whatever happens: a partition never has two consumers alive at once, a
        /// consumer closes only after it was stopped and flushed (or lost), and every
        /// giving-up is released exactly once.
        #[test]
        fn one_consumer_per_partition_and_every_giving_up_released_once(ops in proptest::collection::vec(op(), 1..80)) {
            let mut now = Instant::now();
            let mut l = Lifecycle::new(TIMEOUT, BACKOFF);
            // Consumers alive (started, not closed nor failed): partition -> task.
            let mut alive: BTreeMap<i32, u64> = BTreeMap::new();
            let mut asked_stop: BTreeSet<u64> = BTreeSet::new();
            let mut reported_stop: BTreeSet<u64> = BTreeSet::new();
            let mut closing: BTreeSet<u64> = BTreeSet::new();
            let mut flushes: Vec<GivingUpId> = Vec::new();
            let mut flushed: BTreeSet<u64> = BTreeSet::new();
            let mut given: BTreeSet<GivingUpId> = BTreeSet::new();
            let mut released: BTreeSet<GivingUpId> = BTreeSet::new();
            for op in ops {
                match op {
                    Op::Assign(p) => l.assigned(vec![tp(p)]),
                    Op::Known(p) => l.start_known(tp(p), StartOffset::Offset(0)),
                    Op::Revoke(p) => { given.insert(l.give_up(now, vec![tp(p)], StopReason::Revoked)); }
                    Op::Lose(p) => l.lose(&[tp(p)]),
                    Op::Stopped(p) => if let Some(t) = alive.get(&p).copied() {
                        if asked_stop.contains(&t) && reported_stop.insert(t) { l.stopped(&tp(p), t) }
                    },
                    Op::Flushed => if let Some(id) = flushes.pop() { l.flushed(id, &[]) },
                    Op::Closed(p) => if let Some(t) = alive.get(&p).copied() {
                        if closing.contains(&t) { alive.remove(&p); l.closed(&tp(p), t); }
                    },
                    Op::Fail(p, restarts) => if let Some(t) = alive.remove(&p) { l.failed(&tp(p), t, restarts, Some(1)) },
                    Op::Advance(ms) => { now += Duration::from_millis(ms); l.handle_timeout(now); }
                }
                for a in actions(&mut l) {
                    match a {
                        LifecycleAction::Start { partition, task, .. } => {
                            let before = alive.insert(partition.partition, task);
                            prop_assert!(before.is_none(), "partition {} got a second consumer", partition.partition);
                        }
                        LifecycleAction::Stop { task, .. } => { asked_stop.insert(task); }
                        LifecycleAction::Close { task, reason, .. } => {
                            // A graceful close follows the consumer's stop and its flush.
                            if !matches!(reason, StopReason::Lost) {
                                prop_assert!(reported_stop.contains(&task) && flushed.contains(&task));
                            }
                            closing.insert(task);
                        }
                        LifecycleAction::Flush { giving_up, partitions } => {
                            for p in partitions {
                                if let Some(t) = alive.get(&p.partition) { flushed.insert(*t); }
                            }
                            flushes.push(giving_up);
                        }
                        LifecycleAction::Release(id) => {
                            prop_assert!(given.contains(&id));
                            prop_assert!(released.insert(id), "released twice");
                        }
                        _ => {}
                    }
                }
            }
        }
    }
}
