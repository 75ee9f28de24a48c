//! KIP-848 membership, sans-io: what a member of a consumer group sends in its
//! ConsumerGroupHeartbeat requests and when, how it reconciles the assignment the
//! coordinator gives it, and what every answer means.
//!
//! [`ConsumerMember`] is a plain struct. Events come in as method calls with the time
//! (`now`); what to send comes out of [`ConsumerMember::poll_heartbeat`], what to do
//! out of [`ConsumerMember::poll_action`], and when to call again out of
//! [`ConsumerMember::poll_timeout`]:
//!
//! | event | method |
//! | --- | --- |
//! | the coordinator was found (after [`Action::FindCoordinator`]) | [`coordinator_found`](ConsumerMember::coordinator_found) |
//! | a heartbeat was answered | [`on_heartbeat_response`](ConsumerMember::on_heartbeat_response) |
//! | a heartbeat got no answer (connection lost, timed out, not sent) | [`on_heartbeat_failed`](ConsumerMember::on_heartbeat_failed) |
//! | metadata named topic ids | [`on_topic_names`](ConsumerMember::on_topic_names) |
//! | partitions were given up ([`Action::CommitRevoked`], [`Action::PartitionsLost`]) | [`released`](ConsumerMember::released) |
//! | the subscription changed | [`set_subscription`](ConsumerMember::set_subscription) |
//! | the application shuts the member down | [`leave`](ConsumerMember::leave) |
//! | the time of [`poll_timeout`](ConsumerMember::poll_timeout) came | [`handle_timeout`](ConsumerMember::handle_timeout) |
//!
//! The rules (the facts behind them: `reference/consumer-groups.md`, Q1):
//!
//! - The member id is the client's ([`ConsumerConfig::member_id`]), kept across
//!   fencing. A join is epoch 0 with every field: an empty, non-null owned list, the
//!   rebalance timeout, the subscribed names (an empty list with a regex alone, so the
//!   broker sees a full request) and regex, the server assignor, the instance id and
//!   rack when set. Later heartbeats leave out what did not change since the last one
//!   sent (the instance id always goes, as Java's does); after any error or failure the
//!   next one is full again, and the coordinator answers it with the whole assignment.
//! - One heartbeat in flight. The next goes `heartbeat_interval_ms` (from the last
//!   answer; values ≤ 0 are ignored) after the previous one was sent, at once while
//!   joining, acknowledging a reconciliation or leaving.
//! - An answer's assignment is the target. Reconciliation, one at a time: topic ids
//!   are resolved to names ([`Action::RefreshMetadata`] for unknown ones, asked again
//!   every `retry_backoff_max` while the target holds them; the rest is reconciled
//!   meanwhile); partitions no longer assigned are revoked ([`Action::StopFetching`],
//!   then [`Action::CommitRevoked`], then the caller's [`released`](ConsumerMember::released));
//!   then the new ones start ([`Action::StartPartitions`]) and the owned list changes,
//!   which the next heartbeat, sent at once, carries: the acknowledgement. Heartbeats go
//!   on during the revocation, with the owned list unchanged.
//! - A success answer with an epoch below 1 is ignored, after the backoff the next
//!   heartbeat is full (Kafka's members start at epoch 1; KAFKA-19335 came from taking
//!   a negative one).
//! - FENCED_MEMBER_EPOCH, UNKNOWN_MEMBER_ID (and other codes whose action is
//!   [`RetryAction::Rejoin`](klife_protocol::RetryAction::Rejoin)), or no heartbeat answered within the session timeout: the
//!   partitions are lost ([`Action::PartitionsLost`], nothing committed), the epoch is 0,
//!   and once the caller has released them the member joins again with the same id
//!   (also after UNKNOWN_MEMBER_ID, as Java's consumer does: the id is the process's,
//!   and Kafka lets a fenced member rejoin with it, KAFKA-19233).
//! - NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE and a heartbeat without answer:
//!   [`Action::FindCoordinator`], and the heartbeat goes again once it is found: at once
//!   after a first coordinator error, after the backoff for a heartbeat without answer
//!   or a coordinator error that follows another failure. COORDINATOR_LOAD_IN_PROGRESS and
//!   other [`RetryAction::Backoff`](klife_protocol::RetryAction::Backoff) codes: again after the backoff.
//! - UNRELEASED_INSTANCE_ID is retried `unreleased_instance_id_retries` times after the
//!   backoff, then final. UNSUPPORTED_VERSION before the member ever joined ends it with
//!   [`Outcome::FallBackToClassic`] (if `classic_fallback`). Every other code ends the
//!   member with a [`GroupError`]: its partitions are lost and nothing more is sent.
//!   A member on its way out takes GROUP_ID_NOT_FOUND, as it takes being fenced, for
//!   the end of its membership ([`Outcome::Left`]).
//! - A leave first gives up the partitions as a revocation does (with
//!   [`RevokeReason::Shutdown`]), then sends epoch -1 (-2 for a static member); any
//!   answer, or none, ends it ([`Outcome::Left`]).
//!
//! A thin task drives it: it carries out the actions in order, then sends what
//! `poll_heartbeat` gives (at [`HEARTBEAT_VERSION`]) and reports every heartbeat
//! exactly once, with its answer or its failure, under the heartbeat's id (the member
//! does not time requests out itself: the connection's request timeout does); it
//! sleeps until `poll_timeout` or the next event, and bounds the time a revocation may
//! take by the rebalance timeout (past it the coordinator fences the member anyway).

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use klife_protocol::messages::{ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse};
use klife_protocol::types::{GroupMetadata, TopicPartition};
use klife_protocol::{ErrorCode, Uuid};

pub use self::request::is_full;
pub use super::action::{Action, ReleaseId};
use super::assignment::Partitions;
pub use super::config::{
    ConsumerConfig, DEFAULT_HEARTBEAT_INTERVAL, DEFAULT_REBALANCE_TIMEOUT, DEFAULT_RETRY_BACKOFF,
    DEFAULT_RETRY_BACKOFF_MAX, DEFAULT_RETRY_JITTER, DEFAULT_SESSION_TIMEOUT, DEFAULT_UNRELEASED_INSTANCE_ID_RETRIES,
    ServerAssignor, Subscription, member_id_from_random,
};
use crate::error::{ConfigError, GroupError};

mod answers;
mod request;

/// The ConsumerGroupHeartbeat version the member speaks: v1 (Kafka 4.0+), where the
/// client makes the member id and a subscription may be a regex. A coordinator
/// without it is treated as one without KIP-848.
pub const HEARTBEAT_VERSION: i16 = 1;
/// The epoch of a dynamic member's leave.
pub const LEAVE_EPOCH: i32 = -1;
/// The epoch of a static member's leave: it will be back, under its instance id.
pub const STATIC_LEAVE_EPOCH: i32 = -2;

/// Whether a coordinator whose ConsumerGroupHeartbeat versions are `versions` (`None`:
/// it lists none) can run a KIP-848 member.
pub fn coordinator_supports(versions: Option<klife_protocol::VersionRange>) -> bool {
    versions.is_some_and(|v| v.min <= HEARTBEAT_VERSION && HEARTBEAT_VERSION <= v.max)
}

/// Names one heartbeat, to report its answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HeartbeatId(u64);

/// A heartbeat to send to the coordinator, at [`HEARTBEAT_VERSION`].
#[derive(Debug, Clone, PartialEq)]
pub struct Heartbeat {
    /// Its id: report its answer, or its failure, with it.
    pub id: HeartbeatId,
    /// The request.
    pub request: ConsumerGroupHeartbeatRequest,
}

/// Why partitions are revoked gracefully (their records are finished and committed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeReason {
    /// The coordinator assigned them to another member.
    Reassigned,
    /// The member is leaving the group.
    Shutdown,
}

/// Why partitions were lost (nothing may be committed for them: another member may
/// already own them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostReason {
    /// The coordinator fenced the member's epoch (FENCED_MEMBER_EPOCH).
    Fenced,
    /// The coordinator no longer knows the member (UNKNOWN_MEMBER_ID, or another code
    /// that asks to rejoin).
    UnknownMember,
    /// No heartbeat was answered within the session timeout.
    SessionExpired,
    /// The member stopped on an error ([`Outcome::Failed`] follows).
    Failed,
}

/// How a member ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// It left the group (or was no longer in it).
    Left,
    /// The coordinator refused its first join as unsupported: run the group with the
    /// classic protocol instead.
    FallBackToClassic {
        /// The broker's message.
        message: Option<String>,
    },
    /// It stopped on an error.
    Failed(GroupError),
}

/// Where a member is, as Java's consumer names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    /// Joining (epoch 0) until the coordinator answers.
    Joining,
    /// In the group, with a target it has not reached yet (topic ids to resolve, a
    /// revocation under way).
    Reconciling,
    /// In the group, with a new owned list the coordinator has not been sent yet.
    Acknowledging,
    /// In the group, owning its whole target.
    Stable,
    /// Out of the group, waiting for its lost partitions to be released to rejoin.
    Fenced,
    /// Giving up its partitions to leave, or leaving.
    Leaving,
    /// Ended.
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Joining,
    Member,
    Fenced(ReleaseId),
    /// Giving up the partitions before the leave heartbeat.
    Releasing(ReleaseId),
    Leaving,
    Stopped,
}

/// A revocation under way, and what completes it.
#[derive(Debug, Clone)]
struct Revoking {
    release: ReleaseId,
    revoked: Partitions,
    added: Partitions,
    result: Partitions,
}

/// What the last heartbeat sent carried, to leave out what did not change.
#[derive(Debug, Clone)]
struct Sent {
    names: Vec<String>,
    regex: Option<String>,
    owned_version: u64,
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    id: HeartbeatId,
    sent_at: Instant,
    /// The membership it was sent in: a loss since makes its answer stale.
    incarnation: u64,
    leave: bool,
    clears_regex: bool,
}

/// The KIP-848 membership of one consumer in one group. See the [module
/// documentation](self).
#[derive(Debug)]
pub struct ConsumerMember {
    config: ConsumerConfig,
    phase: Phase,
    epoch: i32,
    /// What the member owns: changed only by a completed reconciliation or a loss.
    owned: Partitions,
    /// Bumped on each change of `owned`.
    owned_version: u64,
    target: Option<Partitions>,
    unresolved: BTreeSet<Uuid>,
    metadata_retry_at: Option<Instant>,
    revoking: Option<Revoking>,
    leave_requested: bool,
    names: HashMap<Uuid, Arc<str>>,
    coordinator_known: bool,
    in_flight: Option<InFlight>,
    sent: Option<Sent>,
    /// When the next heartbeat is due.
    due: Instant,
    /// When the owned list last changed.
    ack_at: Instant,
    not_before: Option<Instant>,
    failures: u32,
    interval: Duration,
    session_deadline: Option<Instant>,
    joined_once: bool,
    ever_sent: bool,
    unreleased_attempts: u32,
    regex_clear_pending: bool,
    incarnation: u64,
    next_id: u64,
    rng: u64,
    actions: VecDeque<Action>,
}

impl ConsumerMember {
    /// A member about to join; its first action is [`Action::FindCoordinator`].
    pub fn new(config: ConsumerConfig, now: Instant) -> Result<ConsumerMember, ConfigError> {
        config.validate()?;
        let rng = config.random_seed;
        Ok(ConsumerMember {
            config,
            phase: Phase::Joining,
            epoch: 0,
            owned: Partitions::default(),
            owned_version: 0,
            target: None,
            unresolved: BTreeSet::new(),
            metadata_retry_at: None,
            revoking: None,
            leave_requested: false,
            names: HashMap::new(),
            coordinator_known: false,
            in_flight: None,
            sent: None,
            due: now,
            ack_at: now,
            not_before: None,
            failures: 0,
            interval: DEFAULT_HEARTBEAT_INTERVAL,
            session_deadline: None,
            joined_once: false,
            ever_sent: false,
            unreleased_attempts: 0,
            regex_clear_pending: false,
            incarnation: 0,
            next_id: 0,
            rng,
            actions: VecDeque::from([Action::FindCoordinator]),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ConsumerConfig {
        &self.config
    }

    /// The member epoch (0 while joining or out of the group; never negative).
    pub fn epoch(&self) -> i32 {
        self.epoch
    }

    /// The group, member id, epoch and instance id, for commits inside transactions.
    pub fn group_metadata(&self) -> GroupMetadata {
        let m =
            GroupMetadata::new(self.config.group_id.as_str()).with_member(self.config.member_id.as_str(), self.epoch);
        match &self.config.instance_id {
            Some(id) => m.with_instance_id(id.as_str()),
            None => m,
        }
    }

    /// The state.
    pub fn state(&self) -> MemberState {
        match self.phase {
            Phase::Joining => MemberState::Joining,
            Phase::Fenced(_) => MemberState::Fenced,
            Phase::Releasing(_) | Phase::Leaving => MemberState::Leaving,
            Phase::Stopped => MemberState::Stopped,
            Phase::Member if self.ack_due() => MemberState::Acknowledging,
            Phase::Member if self.revoking.is_some() || !self.unresolved.is_empty() => MemberState::Reconciling,
            Phase::Member if self.target.as_ref().is_some_and(|t| *t != self.owned) => MemberState::Reconciling,
            Phase::Member => MemberState::Stable,
        }
    }

    /// The partitions the member owns, sorted.
    pub fn owned(&self) -> Vec<TopicPartition> {
        self.named(&self.owned)
    }

    /// The heartbeat in flight, if any.
    pub fn in_flight(&self) -> Option<HeartbeatId> {
        self.in_flight.map(|f| f.id)
    }

    /// The next thing to do, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should be called, and
    /// [`poll_heartbeat`](Self::poll_heartbeat) tried again, at the latest (`None`: only
    /// after an event).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let heartbeat = self.sendable().then(|| {
            let due = self.due_at();
            self.not_before.map_or(due, |nb| nb.max(due))
        });
        [heartbeat, self.session_deadline, self.metadata_retry_at].into_iter().flatten().min()
    }

    /// Handles the timers due at `now`: the session timeout, the metadata lookup of
    /// topic ids still unknown.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.session_deadline.is_some_and(|d| d <= now) {
            tracing::warn!(group = %self.config.group_id, "no heartbeat answered within the session timeout: partitions lost");
            self.lose(now, LostReason::SessionExpired);
        }
        if self.metadata_retry_at.is_some_and(|t| t <= now) && !self.unresolved.is_empty() {
            self.actions.push_back(Action::RefreshMetadata { topic_ids: self.unresolved.iter().copied().collect() });
            self.metadata_retry_at = Some(now + self.config.retry_backoff_max);
        }
    }

    /// The heartbeat to send now, if one is due (at most one in flight).
    pub fn poll_heartbeat(&mut self, now: Instant) -> Option<Heartbeat> {
        if !self.sendable() || self.not_before.is_some_and(|t| t > now) || self.due_at() > now {
            return None;
        }
        let id = HeartbeatId(self.next_id);
        self.next_id += 1;
        let leave = self.phase == Phase::Leaving;
        let request = if leave { self.leave_request() } else { self.request() };
        let clears_regex = request.subscribed_topic_regex.as_deref() == Some("");
        self.in_flight = Some(InFlight { id, sent_at: now, incarnation: self.incarnation, leave, clears_regex });
        self.ever_sent = true;
        Some(Heartbeat { id, request })
    }

    /// The coordinator is known (again): heartbeats may go.
    pub fn coordinator_found(&mut self, now: Instant) {
        let _ = now;
        self.coordinator_known = true;
    }

    /// Names of topic ids, from metadata: assigned partitions of these topics can be
    /// reconciled.
    pub fn on_topic_names<I, S>(&mut self, now: Instant, names: I)
    where
        I: IntoIterator<Item = (Uuid, S)>,
        S: Into<Arc<str>>,
    {
        for (id, name) in names {
            if !id.is_nil() {
                self.names.insert(id, name.into());
            }
        }
        self.reconcile(now);
    }

    /// Changes the subscription; the next heartbeat, sent at once, carries it (a regex
    /// removed is sent as `""`).
    pub fn set_subscription(&mut self, now: Instant, subscription: Subscription) {
        if self.config.subscription.topic_regex().is_some() && subscription.topic_regex().is_none() {
            self.regex_clear_pending = true;
        }
        self.config.subscription = subscription;
        self.due = now;
    }

    /// The partitions of `release` were given up (committed and stopped, or stopped
    /// after a loss). A release that is no longer awaited is ignored.
    pub fn released(&mut self, now: Instant, release: ReleaseId) {
        match self.phase {
            Phase::Member if self.revoking.as_ref().is_some_and(|r| r.release == release) => {
                let Some(r) = self.revoking.take() else { return };
                if self.leave_requested {
                    self.set_owned(now, self.owned.minus(&r.revoked));
                    self.begin_release_for_leave(now);
                    return;
                }
                self.set_owned(now, r.result);
                if !r.added.is_empty() {
                    self.actions.push_back(Action::StartPartitions { partitions: self.named(&r.added) });
                }
                self.reconcile(now);
            }
            Phase::Fenced(r) if r == release => {
                self.phase = Phase::Joining;
                self.due = now;
            }
            Phase::Releasing(r) if r == release => {
                self.set_owned(now, Partitions::default());
                self.phase = Phase::Leaving;
                self.due = now;
            }
            _ => tracing::debug!(group = %self.config.group_id, ?release, "release no longer awaited"),
        }
    }

    /// Leaves the group: gives up the partitions gracefully, then sends the leave
    /// heartbeat. Ends with [`Outcome::Left`].
    pub fn leave(&mut self, now: Instant) {
        match self.phase {
            Phase::Stopped | Phase::Leaving | Phase::Releasing(_) => {}
            Phase::Fenced(_) => self.finish(Outcome::Left),
            Phase::Joining if !self.ever_sent => self.finish(Outcome::Left),
            Phase::Joining => {
                self.phase = Phase::Leaving;
                self.due = now;
            }
            Phase::Member => {
                self.leave_requested = true;
                if self.revoking.is_none() {
                    self.begin_release_for_leave(now);
                }
            }
        }
    }

    /// The coordinator answered heartbeat `id`. An answer to anything but the
    /// heartbeat in flight (a duplicate, a late one) is ignored.
    pub fn on_heartbeat_response(&mut self, now: Instant, id: HeartbeatId, response: &ConsumerGroupHeartbeatResponse) {
        let Some(flight) = self.settle_flight(id) else { return };
        if flight.incarnation != self.incarnation {
            // Sent before the partitions were lost: what it says is about a membership
            // the member gave up. The next heartbeat is a full one.
            self.sent = None;
            return;
        }
        let code = ErrorCode::from_code(response.error_code);
        if code == ErrorCode::None {
            self.on_success(now, flight, response);
        } else {
            self.on_error(now, code, response.error_message.clone());
        }
    }

    /// Ends heartbeat `id` if it is the one in flight, and returns it when its outcome
    /// still matters: not after the member stopped, and not for a leave, which any
    /// outcome completes.
    fn settle_flight(&mut self, id: HeartbeatId) -> Option<InFlight> {
        let Some(flight) = self.in_flight.filter(|f| f.id == id) else {
            tracing::debug!(group = %self.config.group_id, ?id, "outcome of no heartbeat in flight ignored");
            return None;
        };
        self.in_flight = None;
        if self.phase == Phase::Stopped {
            return None;
        }
        if flight.leave {
            self.finish(Outcome::Left);
            return None;
        }
        Some(flight)
    }

    /// Heartbeat `id` got no answer (the connection failed, the request timed out or
    /// was not sent). The next heartbeat is full, after the backoff, to the
    /// coordinator found anew.
    pub fn on_heartbeat_failed(&mut self, now: Instant, id: HeartbeatId) {
        if self.settle_flight(id).is_none() {
            return;
        }
        self.sent = None;
        self.find_coordinator();
        self.back_off(now);
    }

    fn on_success(&mut self, now: Instant, flight: InFlight, response: &ConsumerGroupHeartbeatResponse) {
        if response.member_epoch < 1 {
            tracing::warn!(group = %self.config.group_id, epoch = response.member_epoch, "success answer without a member epoch ignored");
            self.sent = None;
            self.back_off(now);
            return;
        }
        self.failures = 0;
        self.not_before = None;
        self.unreleased_attempts = 0;
        if flight.clears_regex {
            self.regex_clear_pending = false;
        }
        if response.heartbeat_interval_ms > 0 {
            self.interval = Duration::from_millis(response.heartbeat_interval_ms.unsigned_abs().into());
        }
        self.due = flight.sent_at + self.interval;
        self.session_deadline = Some(flight.sent_at + self.config.session_timeout);
        if response.member_epoch != self.epoch {
            self.epoch = response.member_epoch;
            self.actions.push_back(Action::EpochChanged { epoch: self.epoch });
        }
        if self.phase == Phase::Joining {
            tracing::debug!(group = %self.config.group_id, epoch = self.epoch, "joined");
            self.phase = Phase::Member;
            self.joined_once = true;
        }
        if let Some(assignment) = &response.assignment {
            self.target = Some(Partitions::from_assignment(assignment));
        }
        self.reconcile(now);
    }

    /// Gives up the partitions as lost, and the membership: epoch 0, then a rejoin (or
    /// the end, for a member leaving).
    fn lose(&mut self, now: Instant, reason: LostReason) {
        let leaving = self.leaving();
        let joining = self.phase == Phase::Joining;
        self.drop_membership();
        let release = self.give_up_lost(now, reason);
        if leaving {
            self.finish(Outcome::Left);
            return;
        }
        match release {
            Some(r) => self.phase = Phase::Fenced(r),
            None => {
                self.phase = Phase::Joining;
                self.due = now;
                if joining {
                    // Refused while joining: no partitions to wait for, so wait a
                    // backoff rather than join again in a tight loop.
                    self.back_off(now);
                }
            }
        }
    }

    /// Ends the member after a loss of its partitions with `outcome`.
    fn fail(&mut self, now: Instant, outcome: Outcome) {
        self.drop_membership();
        self.give_up_lost(now, LostReason::Failed);
        self.finish(outcome);
    }

    fn drop_membership(&mut self) {
        self.incarnation += 1;
        self.revoking = None;
        self.target = None;
        self.unresolved.clear();
        self.metadata_retry_at = None;
        self.session_deadline = None;
        self.sent = None;
        if self.epoch != 0 {
            self.epoch = 0;
            self.actions.push_back(Action::EpochChanged { epoch: 0 });
        }
    }

    fn give_up_lost(&mut self, now: Instant, reason: LostReason) -> Option<ReleaseId> {
        if self.owned.is_empty() {
            return None;
        }
        let release = self.new_release();
        let partitions = self.named(&self.owned);
        self.set_owned(now, Partitions::default());
        self.actions.push_back(Action::PartitionsLost { release, partitions, reason });
        Some(release)
    }

    fn finish(&mut self, outcome: Outcome) {
        if self.phase == Phase::Stopped {
            return;
        }
        self.phase = Phase::Stopped;
        self.session_deadline = None;
        self.metadata_retry_at = None;
        self.actions.push_back(Action::Finished(outcome));
    }

    fn begin_release_for_leave(&mut self, now: Instant) {
        if self.owned.is_empty() {
            self.phase = Phase::Leaving;
            self.due = now;
            return;
        }
        let release = self.new_release();
        let partitions = self.named(&self.owned);
        self.actions.push_back(Action::StopFetching { release, partitions: partitions.clone() });
        self.actions.push_back(Action::CommitRevoked { release, partitions, reason: RevokeReason::Shutdown });
        self.phase = Phase::Releasing(release);
    }

    /// Moves towards the target: resolves ids, then revokes or starts partitions.
    fn reconcile(&mut self, now: Instant) {
        if self.phase != Phase::Member || self.revoking.is_some() || self.leave_requested {
            return;
        }
        let Some(target) = &self.target else { return };
        let (resolved, unresolved) = target.split(|id| self.names.contains_key(&id));
        if unresolved.is_empty() {
            self.metadata_retry_at = None;
        } else if !unresolved.is_subset(&self.unresolved) || self.metadata_retry_at.is_none() {
            self.actions.push_back(Action::RefreshMetadata { topic_ids: unresolved.iter().copied().collect() });
            self.metadata_retry_at = Some(now + self.config.retry_backoff_max);
        }
        self.unresolved = unresolved;
        let revoked = self.owned.minus(&resolved);
        let added = resolved.minus(&self.owned);
        if !revoked.is_empty() {
            let release = self.new_release();
            let partitions = self.named(&revoked);
            self.actions.push_back(Action::StopFetching { release, partitions: partitions.clone() });
            self.actions.push_back(Action::CommitRevoked { release, partitions, reason: RevokeReason::Reassigned });
            self.revoking = Some(Revoking { release, revoked, added, result: resolved });
        } else if !added.is_empty() {
            self.set_owned(now, resolved);
            self.actions.push_back(Action::StartPartitions { partitions: self.named(&added) });
        }
    }

    fn set_owned(&mut self, now: Instant, owned: Partitions) {
        if owned != self.owned {
            self.owned = owned;
            self.owned_version += 1;
            self.ack_at = now;
        }
    }

    fn new_release(&mut self) -> ReleaseId {
        let id = ReleaseId::new(self.next_id);
        self.next_id += 1;
        id
    }

    fn find_coordinator(&mut self) {
        if self.coordinator_known {
            self.coordinator_known = false;
            self.actions.push_back(Action::FindCoordinator);
        }
    }

    /// After a coordinator error: at once the first time (the coordinator moved), after
    /// the backoff when the failures go on (the lookup keeps finding a broker that is
    /// not, or not yet, the coordinator).
    fn retry_soon(&mut self, now: Instant) {
        if self.failures == 0 {
            self.failures = 1;
            self.due = now;
        } else {
            self.back_off(now);
        }
    }

    fn back_off(&mut self, now: Instant) {
        let factor = 1u32.checked_shl(self.failures.min(16)).unwrap_or(u32::MAX);
        let max = self.config.retry_backoff_max;
        let base = self.config.retry_backoff.saturating_mul(factor).min(max);
        let jitter = self.config.retry_jitter.clamp(0.0, 1.0);
        let delay = if jitter > 0.0 {
            let scale = 1.0 + jitter * (2.0 * self.random() - 1.0);
            base.mul_f64(scale).min(max)
        } else {
            base
        };
        self.failures = self.failures.saturating_add(1);
        self.not_before = Some(now + delay);
        self.due = now;
    }

    /// A uniform draw in `[0, 1)` (splitmix64 over the configured seed).
    fn random(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Whether the member is on its way out of the group.
    fn leaving(&self) -> bool {
        self.leave_requested || matches!(self.phase, Phase::Releasing(_) | Phase::Leaving)
    }

    /// Whether a heartbeat could go if it were due.
    fn sendable(&self) -> bool {
        self.coordinator_known
            && self.in_flight.is_none()
            && matches!(self.phase, Phase::Joining | Phase::Member | Phase::Releasing(_) | Phase::Leaving)
    }

    /// Whether the owned list changed since the last heartbeat sent.
    fn ack_due(&self) -> bool {
        self.sent.as_ref().is_some_and(|s| s.owned_version != self.owned_version)
    }

    /// When the next heartbeat is due: at once (`due` was set to the time it became
    /// so) while joining or leaving, when the owned list changed since the last one
    /// sent (the acknowledgement), else at the interval.
    fn due_at(&self) -> Instant {
        if self.ack_due() { self.due.min(self.ack_at) } else { self.due }
    }

    fn named(&self, parts: &Partitions) -> Vec<TopicPartition> {
        parts
            .iter()
            .map(|(id, p)| {
                let name = self.names.get(&id).cloned().unwrap_or_else(|| id.to_string().into());
                TopicPartition { topic: name, partition: p }
            })
            .collect()
    }
}
