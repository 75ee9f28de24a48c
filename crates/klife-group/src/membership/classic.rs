//! Classic membership, sans-io: what a member of a consumer group sends in its
//! JoinGroup, SyncGroup, Heartbeat and LeaveGroup requests and when, what it does
//! with the assignment the leader gives it, and what every answer means.
//!
//! [`ClassicMember`] is a plain struct, driven like the KIP-848
//! [`ConsumerMember`](super::consumer::ConsumerMember): events come in as method calls
//! with the time; requests come out of [`ClassicMember::poll_request`] (at most one
//! group request — JoinGroup, SyncGroup or LeaveGroup — and one heartbeat in flight),
//! actions out of [`ClassicMember::poll_action`], and the next time to call again out
//! of [`ClassicMember::poll_timeout`]:
//!
//! | event | method |
//! | --- | --- |
//! | the coordinator was found (after [`Action::FindCoordinator`]) | [`coordinator_found`](ClassicMember::coordinator_found) |
//! | a request was answered | [`on_response`](ClassicMember::on_response) |
//! | a request got no answer (connection lost, timed out, not sent) | [`on_request_failed`](ClassicMember::on_request_failed) |
//! | the leader's metadata came (after [`Action::DescribeTopics`]) | [`on_partition_counts`](ClassicMember::on_partition_counts) |
//! | partitions were given up ([`Action::CommitRevoked`], [`Action::PartitionsLost`]) | [`released`](ClassicMember::released) |
//! | the subscription changed | [`set_topics`](ClassicMember::set_topics) |
//! | a rebalance is needed (the partitions of a subscribed topic changed) | [`request_rejoin`](ClassicMember::request_rejoin) |
//! | the application shuts the member down | [`leave`](ClassicMember::leave) |
//! | the time of [`poll_timeout`](ClassicMember::poll_timeout) came | [`handle_timeout`](ClassicMember::handle_timeout) |
//!
//! The rules (the facts behind them: `reference/consumer-groups.md`, Q2):
//!
//! - The first JoinGroup goes with an empty member id; MEMBER_ID_REQUIRED gives the
//!   member its id and it joins again at once with it. A JoinGroup waits for the whole
//!   rebalance on the broker: its [`OutgoingRequest::timeout`] is the rebalance timeout
//!   plus 5 s, where other requests take the connection's own.
//! - The JoinGroup offers one protocol per configured [`Assignor`], each with the
//!   member's [`Subscription`] (v3: topics, owned partitions and their generation,
//!   rack). The leader (the coordinator names it) asks for the partition counts of
//!   every member's topics ([`Action::DescribeTopics`]), runs the assignor the
//!   coordinator chose and sends every member's assignment in its SyncGroup; a
//!   follower sends an empty one (so does a static leader the coordinator tells to
//!   skip the assignment, KIP-814). The output of a cooperative assignor, the user's
//!   included, is checked: a partition given to a new owner while another member still
//!   claims it is left for the next rebalance.
//! - The rebalance protocol is cooperative when every assignor is
//!   ([`RebalanceProtocol`]), eager otherwise. Eager: before any rejoin the member
//!   gives up all its partitions ([`Action::StopFetching`], [`Action::CommitRevoked`],
//!   then [`released`](ClassicMember::released)). Cooperative: it keeps them while it
//!   joins; after the SyncGroup it starts what is new at once and gives up only what
//!   the leader took away, then joins again at once so that the group can hand those
//!   partitions to their new owner (KIP-429).
//! - Heartbeats go every `heartbeat_interval` while the member has a generation
//!   (stable, or giving partitions up), on their own timer: a revocation under way does
//!   not hold them back. REBALANCE_IN_PROGRESS on a heartbeat of a stable member starts
//!   a rejoin (after revoking everything, eager); other phases ignore it.
//! - ILLEGAL_GENERATION and UNKNOWN_MEMBER_ID (on any request), or no heartbeat
//!   answered within the session timeout: the partitions are lost
//!   ([`Action::PartitionsLost`], nothing committed), the generation is gone, and the
//!   member joins again once the caller has released them, with its member id after
//!   ILLEGAL_GENERATION ([`LostReason::Fenced`]), with an empty one after
//!   UNKNOWN_MEMBER_ID ([`LostReason::UnknownMember`]); [`LostReason::SessionExpired`]
//!   when no heartbeat got through.
//! - REBALANCE_IN_PROGRESS on a SyncGroup: join again (cooperative members keep their
//!   partitions; eager ones have none by then). On a JoinGroup: again after the backoff.
//! - NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE and requests without answer:
//!   [`Action::FindCoordinator`]; a JoinGroup or SyncGroup starts the join over, a
//!   heartbeat goes again after the backoff. Other retriable codes: again after the
//!   backoff (exponential, from `retry_backoff` to `retry_backoff_max`, no jitter).
//! - FENCED_INSTANCE_ID (another process took the static instance id) and every code
//!   no retry cures end the member with a typed [`GroupError`]
//!   ([`Outcome::Failed`]), its partitions lost.
//! - A leave gives up the partitions as a revocation does ([`RevokeReason::Shutdown`]),
//!   then sends a LeaveGroup — except for a static member, which sends none (it comes
//!   back under its instance id without a rebalance) — and ends with [`Outcome::Left`].
//!
//! The driver carries out the actions in order, sends what `poll_request` gives and
//! reports every request exactly once, with its answer or its failure; it bounds the
//! time a revocation may take by the rebalance timeout (past it the coordinator drops
//! the member from the rebalance anyway), and answers [`Action::DescribeTopics`]
//! promptly (the other members wait for the leader's SyncGroup).
//!
//! The requests are filled for JoinGroup v5+, SyncGroup v3+, Heartbeat v3+ and
//! LeaveGroup v3+ (the versions with the static instance id); the driver sends each at
//! the highest version both it and the coordinator speak.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use klife_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use klife_protocol::messages::leave_group_request::MemberIdentity;
use klife_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use klife_protocol::messages::{
    HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse,
    SyncGroupRequest, SyncGroupResponse,
};
use klife_protocol::types::{GroupMetadata, TopicPartition};
use klife_protocol::{ErrorCode, RetryAction};

pub use super::action::{Action, ReleaseId};
pub use super::consumer::{LostReason, Outcome, RevokeReason};
use crate::assignor::{
    Assignor, AssignorInput, CooperativeStickyAssignor, GroupAssignment, MemberSubscription, RebalanceProtocol,
};
use crate::error::{ConfigError, GroupError};
use crate::protocol::{ASSIGNMENT_VERSION, Assignment, PROTOCOL_TYPE, SUBSCRIPTION_VERSION, Subscription};

pub use super::config::{DEFAULT_REBALANCE_TIMEOUT, DEFAULT_RETRY_BACKOFF, DEFAULT_RETRY_BACKOFF_MAX};

/// The session timeout when none is set (franz-go's and Kafka's consumers' 45 s): the
/// coordinator removes a member it has not heard from for this long.
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(45);
/// The heartbeat interval when none is set.
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(3);
/// What a JoinGroup's request timeout adds to the rebalance timeout: the coordinator
/// answers only once the rebalance is complete, or the rebalance timeout has passed.
pub const JOIN_TIMEOUT_MARGIN: Duration = Duration::from_secs(5);

/// What a classic member is configured with.
#[derive(Debug, Clone)]
pub struct ClassicConfig {
    /// The group.
    pub group_id: String,
    /// The static instance id (KIP-345), if any.
    pub instance_id: Option<String>,
    /// The rack, sent in the subscription (v3) for rack-aware assignors.
    pub rack_id: Option<String>,
    /// The topics subscribed to.
    pub topics: Vec<String>,
    /// The assignors offered, in order of preference (`cooperative-sticky` by default).
    pub assignors: Vec<Arc<dyn Assignor>>,
    /// The session timeout sent in JoinGroup.
    pub session_timeout: Duration,
    /// How long the coordinator waits for members to join in a rebalance (and for them
    /// to give up their partitions).
    pub rebalance_timeout: Duration,
    /// The time between heartbeats.
    pub heartbeat_interval: Duration,
    /// The first wait before a request is sent again after a failure.
    pub retry_backoff: Duration,
    /// The longest wait between two attempts.
    pub retry_backoff_max: Duration,
}

impl ClassicConfig {
    /// A dynamic member of `group_id` subscribing to `topics`, with the defaults.
    pub fn new<I, S>(group_id: impl Into<String>, topics: I) -> ClassicConfig
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ClassicConfig {
            group_id: group_id.into(),
            instance_id: None,
            rack_id: None,
            topics: topics.into_iter().map(Into::into).collect(),
            assignors: vec![Arc::new(CooperativeStickyAssignor)],
            session_timeout: DEFAULT_SESSION_TIMEOUT,
            rebalance_timeout: DEFAULT_REBALANCE_TIMEOUT,
            heartbeat_interval: DEFAULT_HEARTBEAT_INTERVAL,
            retry_backoff: DEFAULT_RETRY_BACKOFF,
            retry_backoff_max: DEFAULT_RETRY_BACKOFF_MAX,
        }
    }

    /// Sets the static instance id.
    #[must_use]
    pub fn with_instance_id(mut self, id: impl Into<String>) -> ClassicConfig {
        self.instance_id = Some(id.into());
        self
    }

    /// Sets the rack.
    #[must_use]
    pub fn with_rack_id(mut self, rack: impl Into<String>) -> ClassicConfig {
        self.rack_id = Some(rack.into());
        self
    }

    /// Sets the assignors, in order of preference.
    #[must_use]
    pub fn with_assignors(mut self, assignors: Vec<Arc<dyn Assignor>>) -> ClassicConfig {
        self.assignors = assignors;
        self
    }

    /// Sets the session timeout.
    #[must_use]
    pub fn with_session_timeout(mut self, timeout: Duration) -> ClassicConfig {
        self.session_timeout = timeout;
        self
    }

    /// Sets the rebalance timeout.
    #[must_use]
    pub fn with_rebalance_timeout(mut self, timeout: Duration) -> ClassicConfig {
        self.rebalance_timeout = timeout;
        self
    }

    /// Sets the heartbeat interval.
    #[must_use]
    pub fn with_heartbeat_interval(mut self, interval: Duration) -> ClassicConfig {
        self.heartbeat_interval = interval;
        self
    }

    /// How members of this configuration rebalance: cooperatively when every
    /// assignor does.
    pub fn rebalance_protocol(&self) -> RebalanceProtocol {
        if !self.assignors.is_empty()
            && self.assignors.iter().all(|a| a.rebalance_protocol() == RebalanceProtocol::Cooperative)
        {
            RebalanceProtocol::Cooperative
        } else {
            RebalanceProtocol::Eager
        }
    }

    /// Checks what the broker would refuse, before anything is sent.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let ms_ok = |d: Duration| d > Duration::ZERO && d.as_millis() <= i32::MAX as u128;
        if self.group_id.is_empty() {
            return Err(ConfigError::EmptyGroupId);
        }
        if self.instance_id.as_deref() == Some("") {
            return Err(ConfigError::EmptyInstanceId);
        }
        if self.rack_id.as_deref() == Some("") {
            return Err(ConfigError::EmptyRackId);
        }
        if !ms_ok(self.rebalance_timeout) {
            return Err(ConfigError::RebalanceTimeoutOutOfRange);
        }
        if !ms_ok(self.session_timeout) {
            return Err(ConfigError::SessionTimeoutOutOfRange);
        }
        if self.heartbeat_interval.is_zero() || self.heartbeat_interval >= self.session_timeout {
            return Err(ConfigError::HeartbeatIntervalOutOfRange);
        }
        if self.assignors.is_empty() {
            return Err(ConfigError::NoAssignor);
        }
        Ok(())
    }
}

/// Names one request, to report its answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(u64);

/// A request of the classic protocol.
#[derive(Debug, Clone, PartialEq)]
pub enum Request {
    /// JoinGroup.
    JoinGroup(JoinGroupRequest),
    /// SyncGroup.
    SyncGroup(SyncGroupRequest),
    /// Heartbeat.
    Heartbeat(HeartbeatRequest),
    /// LeaveGroup.
    LeaveGroup(LeaveGroupRequest),
}

/// An answer of the classic protocol.
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    /// JoinGroup.
    JoinGroup(JoinGroupResponse),
    /// SyncGroup.
    SyncGroup(SyncGroupResponse),
    /// Heartbeat.
    Heartbeat(HeartbeatResponse),
    /// LeaveGroup.
    LeaveGroup(LeaveGroupResponse),
}

/// A request to send to the coordinator.
#[derive(Debug, Clone, PartialEq)]
pub struct OutgoingRequest {
    /// Its id: report its answer, or its failure, with it.
    pub id: RequestId,
    /// The request.
    pub request: Request,
    /// The request timeout it needs, when the connection's own is not enough: a
    /// JoinGroup's is the rebalance timeout plus [`JOIN_TIMEOUT_MARGIN`].
    pub timeout: Option<Duration>,
}

/// Where a classic member is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClassicState {
    /// Joining: a JoinGroup to send or in flight.
    Joining,
    /// The leader, waiting for the partition counts.
    Assigning,
    /// A SyncGroup to send or in flight.
    Syncing,
    /// In the group, with its assignment.
    Stable,
    /// Giving partitions up, to join again or to leave.
    Revoking,
    /// Out of the group, waiting for its lost partitions to be released to rejoin.
    Lost,
    /// Leaving: a LeaveGroup to send or in flight.
    Leaving,
    /// Ended.
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Then {
    Rejoin,
    Leave,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Joining,
    Assigning,
    Syncing,
    Stable,
    Revoking(ReleaseId, Then),
    Lost(ReleaseId),
    Leaving,
    Stopped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Join,
    Sync,
    Heartbeat,
    Leave,
}

#[derive(Debug, Clone, Copy)]
struct Flight {
    id: RequestId,
    kind: Kind,
    sent_at: Instant,
    generation: i32,
}

/// What an error code asks for.
enum Reaction {
    Rejoin,
    Lost(LostReason),
    Coordinator,
    Backoff,
    Fatal,
}

fn reaction(code: ErrorCode) -> Reaction {
    match code {
        ErrorCode::RebalanceInProgress => Reaction::Rejoin,
        ErrorCode::IllegalGeneration => Reaction::Lost(LostReason::Fenced),
        ErrorCode::UnknownMemberId => Reaction::Lost(LostReason::UnknownMember),
        ErrorCode::FencedInstanceId => Reaction::Fatal,
        _ => match code.retry_action() {
            RetryAction::FindCoordinator => Reaction::Coordinator,
            RetryAction::Backoff | RetryAction::RefreshMetadata => Reaction::Backoff,
            RetryAction::Rejoin => Reaction::Rejoin,
            _ => Reaction::Fatal,
        },
    }
}

/// The classic membership of one consumer in one group. See the [module
/// documentation](self).
#[derive(Debug)]
pub struct ClassicMember {
    config: ClassicConfig,
    protocol: RebalanceProtocol,
    phase: Phase,
    member_id: String,
    generation: i32,
    /// The generation and protocol of the join under way.
    joined_generation: i32,
    protocol_name: Option<String>,
    leader_members: Vec<MemberSubscription>,
    /// The partition counts the member last assigned from as leader (`None` when it
    /// does not lead).
    assigned_counts: Option<BTreeMap<String, i32>>,
    sync_assignments: Vec<SyncGroupRequestAssignment>,
    owned: BTreeSet<TopicPartition>,
    revoking: BTreeSet<TopicPartition>,
    leave_requested: bool,
    coordinator_known: bool,
    group_flight: Option<Flight>,
    heartbeat_flight: Option<Flight>,
    group_due: Instant,
    heartbeat_due: Instant,
    session_deadline: Option<Instant>,
    failures: u32,
    next_id: u64,
    actions: VecDeque<Action>,
}

impl ClassicMember {
    /// A member about to join; its first action is [`Action::FindCoordinator`].
    pub fn new(config: ClassicConfig, now: Instant) -> Result<ClassicMember, ConfigError> {
        config.validate()?;
        Ok(ClassicMember {
            protocol: config.rebalance_protocol(),
            config,
            phase: Phase::Joining,
            member_id: String::new(),
            generation: -1,
            joined_generation: -1,
            protocol_name: None,
            leader_members: Vec::new(),
            assigned_counts: None,
            sync_assignments: Vec::new(),
            owned: BTreeSet::new(),
            revoking: BTreeSet::new(),
            leave_requested: false,
            coordinator_known: false,
            group_flight: None,
            heartbeat_flight: None,
            group_due: now,
            heartbeat_due: now,
            session_deadline: None,
            failures: 0,
            next_id: 0,
            actions: VecDeque::from([Action::FindCoordinator]),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ClassicConfig {
        &self.config
    }

    /// How the member rebalances.
    pub fn rebalance_protocol(&self) -> RebalanceProtocol {
        self.protocol
    }

    /// The member id the coordinator gave (empty before).
    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    /// The generation (-1 out of the group).
    pub fn generation(&self) -> i32 {
        self.generation
    }

    /// The group, member id, generation and instance id, for commits.
    pub fn group_metadata(&self) -> GroupMetadata {
        let m = GroupMetadata::new(self.config.group_id.as_str()).with_member(self.member_id.as_str(), self.generation);
        match &self.config.instance_id {
            Some(id) => m.with_instance_id(id.as_str()),
            None => m,
        }
    }

    /// The state.
    pub fn state(&self) -> ClassicState {
        match self.phase {
            Phase::Joining => ClassicState::Joining,
            Phase::Assigning => ClassicState::Assigning,
            Phase::Syncing => ClassicState::Syncing,
            Phase::Stable => ClassicState::Stable,
            Phase::Revoking(..) => ClassicState::Revoking,
            Phase::Lost(_) => ClassicState::Lost,
            Phase::Leaving => ClassicState::Leaving,
            Phase::Stopped => ClassicState::Stopped,
        }
    }

    /// The partitions the member owns (a revocation under way included), sorted.
    pub fn owned(&self) -> Vec<TopicPartition> {
        self.owned.iter().cloned().collect()
    }

    /// The next thing to do, in order.
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When [`handle_timeout`](Self::handle_timeout) should be called, and
    /// [`poll_request`](Self::poll_request) tried again, at the latest.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let group = self.group_sendable().then_some(self.group_due);
        let heartbeat = self.heartbeat_sendable().then_some(self.heartbeat_due);
        [group, heartbeat, self.session_deadline].into_iter().flatten().min()
    }

    /// Handles the timers due at `now`: the session timeout.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.session_deadline.is_some_and(|d| d <= now) {
            tracing::warn!(group = %self.config.group_id, "no heartbeat answered within the session timeout: partitions lost");
            self.lose(now, LostReason::SessionExpired);
        }
    }

    /// The next request to send now, if one is due: call until `None`.
    pub fn poll_request(&mut self, now: Instant) -> Option<OutgoingRequest> {
        if self.group_sendable() && self.group_due <= now {
            let (kind, request, timeout) = match self.phase {
                Phase::Joining => {
                    let timeout = self.config.rebalance_timeout + JOIN_TIMEOUT_MARGIN;
                    (Kind::Join, Request::JoinGroup(self.join_request()), Some(timeout))
                }
                Phase::Syncing => (Kind::Sync, Request::SyncGroup(self.sync_request()), None),
                _ => (Kind::Leave, Request::LeaveGroup(self.leave_request()), None),
            };
            let id = self.new_request_id();
            self.group_flight = Some(Flight { id, kind, sent_at: now, generation: self.generation });
            return Some(OutgoingRequest { id, request, timeout });
        }
        if self.heartbeat_sendable() && self.heartbeat_due <= now {
            let id = self.new_request_id();
            self.heartbeat_flight =
                Some(Flight { id, kind: Kind::Heartbeat, sent_at: now, generation: self.generation });
            let request = HeartbeatRequest::default()
                .with_group_id(self.config.group_id.clone())
                .with_generation_id(self.generation)
                .with_member_id(self.member_id.clone())
                .with_group_instance_id(self.config.instance_id.clone());
            return Some(OutgoingRequest { id, request: Request::Heartbeat(request), timeout: None });
        }
        None
    }

    /// The coordinator is known (again): requests may go.
    pub fn coordinator_found(&mut self, now: Instant) {
        let _ = now;
        self.coordinator_known = true;
    }

    /// The partition counts of the topics of [`Action::DescribeTopics`] (a topic left
    /// out has none): the leader assigns, and its SyncGroup may go.
    pub fn on_partition_counts<I, S>(&mut self, now: Instant, counts: I)
    where
        I: IntoIterator<Item = (S, i32)>,
        S: Into<String>,
    {
        if self.phase != Phase::Assigning {
            return;
        }
        let name = self.protocol_name.clone().unwrap_or_default();
        let Some(assignor) = self.config.assignors.iter().find(|a| a.name() == name).cloned() else {
            tracing::warn!(group = %self.config.group_id, protocol = %name, "the coordinator chose an assignor the member does not have");
            let error = GroupError::Broker {
                group: self.config.group_id.clone(),
                code: ErrorCode::InconsistentGroupProtocol,
                message: Some(format!("no assignor {name:?}")),
            };
            self.fail(now, error);
            return;
        };
        let input = AssignorInput {
            members: std::mem::take(&mut self.leader_members),
            partition_counts: counts.into_iter().map(|(t, n)| (t.into(), n)).collect(),
        };
        self.assigned_counts = Some(input.partition_counts.clone());
        let mut assignment = assignor.assign(&input);
        if assignor.rebalance_protocol() == RebalanceProtocol::Cooperative {
            withhold_claimed(&input, &mut assignment);
        }
        self.sync_assignments = input
            .members
            .iter()
            .filter_map(|m| {
                let parts = assignment.get(&m.member_id).cloned().unwrap_or_default();
                let bytes = Assignment::new(parts).encode(ASSIGNMENT_VERSION).ok()?;
                Some(SyncGroupRequestAssignment::default().with_member_id(m.member_id.clone()).with_assignment(bytes))
            })
            .collect();
        tracing::debug!(group = %self.config.group_id, assignor = %name, members = input.members.len(), "assigned as leader");
        self.phase = Phase::Syncing;
        self.group_due = now;
    }

    /// Changes the subscription: the member joins again (after revoking everything,
    /// eager) to have it taken into account.
    pub fn set_topics<I, S>(&mut self, now: Instant, topics: I)
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config.topics = topics.into_iter().map(Into::into).collect();
        if self.phase == Phase::Stable {
            self.rejoin(now);
        }
    }

    /// While the member leads a stable group: the partition counts it assigned from,
    /// by topic. The coordinator does not watch them under the classic protocol: the
    /// leader compares them with the metadata now and then, and asks for a rebalance
    /// ([`request_rejoin`](Self::request_rejoin)) when partitions were added.
    pub fn leader_counts(&self) -> Option<&BTreeMap<String, i32>> {
        self.assigned_counts.as_ref().filter(|_| self.phase == Phase::Stable)
    }

    /// Asks for a rebalance: a stable member joins again (after revoking everything,
    /// eager). For instance when the leader sees the partition count of a subscribed
    /// topic change, which the coordinator does not watch under the classic protocol.
    pub fn request_rejoin(&mut self, now: Instant) {
        if self.phase == Phase::Stable {
            self.rejoin(now);
        }
    }

    /// The partitions of `release` were given up. A release no longer awaited is
    /// ignored.
    pub fn released(&mut self, now: Instant, release: ReleaseId) {
        match self.phase {
            Phase::Revoking(r, then) if r == release => {
                for tp in std::mem::take(&mut self.revoking) {
                    self.owned.remove(&tp);
                }
                if then == Then::Leave || self.leave_requested {
                    self.begin_leave(now);
                } else {
                    self.start_join(now);
                }
            }
            Phase::Lost(r) if r == release => {
                if self.leave_requested {
                    self.finish(Outcome::Left);
                } else {
                    self.start_join(now);
                }
            }
            _ => tracing::debug!(group = %self.config.group_id, ?release, "release no longer awaited"),
        }
    }

    /// Leaves the group: gives up the partitions gracefully, then sends a LeaveGroup
    /// (none for a static member). Ends with [`Outcome::Left`].
    pub fn leave(&mut self, now: Instant) {
        self.leave_requested = true;
        match self.phase {
            Phase::Stopped | Phase::Leaving | Phase::Lost(_) | Phase::Revoking(_, Then::Leave) => {}
            Phase::Revoking(r, Then::Rejoin) => self.phase = Phase::Revoking(r, Then::Leave),
            Phase::Joining | Phase::Assigning | Phase::Syncing | Phase::Stable => self.begin_leave(now),
        }
    }

    /// The coordinator answered request `id`. An answer to anything but a request in
    /// flight, or of another kind, is ignored.
    pub fn on_response(&mut self, now: Instant, id: RequestId, response: &Response) {
        if let Some(flight) = self.heartbeat_flight.filter(|f| f.id == id) {
            self.heartbeat_flight = None;
            if let Response::Heartbeat(r) = response {
                self.on_heartbeat(now, flight, r);
            }
            return;
        }
        let Some(flight) = self.group_flight.filter(|f| f.id == id) else {
            tracing::debug!(group = %self.config.group_id, ?id, "answer to no request in flight ignored");
            return;
        };
        self.group_flight = None;
        match (flight.kind, response, self.phase) {
            (Kind::Join, Response::JoinGroup(r), Phase::Joining) => self.on_join(now, r),
            (Kind::Sync, Response::SyncGroup(r), Phase::Syncing) => self.on_sync(now, r),
            (Kind::Leave, Response::LeaveGroup(_), _) => self.finish(Outcome::Left),
            _ => tracing::debug!(group = %self.config.group_id, ?id, "answer no longer awaited ignored"),
        }
    }

    /// Request `id` got no answer (the connection failed, the request timed out or
    /// was not sent).
    pub fn on_request_failed(&mut self, now: Instant, id: RequestId) {
        if self.heartbeat_flight.is_some_and(|f| f.id == id) {
            self.heartbeat_flight = None;
            if !self.heartbeating() {
                return;
            }
            self.find_coordinator();
            self.heartbeat_due = now + self.backoff();
            return;
        }
        let Some(flight) = self.group_flight.filter(|f| f.id == id) else { return };
        self.group_flight = None;
        match (flight.kind, self.phase) {
            (Kind::Leave, _) => self.finish(Outcome::Left),
            (Kind::Join, Phase::Joining) | (Kind::Sync, Phase::Syncing) => {
                self.find_coordinator();
                self.phase = Phase::Joining;
                self.group_due = now + self.backoff();
            }
            _ => {}
        }
    }

    fn on_join(&mut self, now: Instant, r: &JoinGroupResponse) {
        let code = ErrorCode::from_code(r.error_code);
        match code {
            ErrorCode::None => {
                self.failures = 0;
                self.member_id.clone_from(&r.member_id);
                self.joined_generation = r.generation_id;
                self.protocol_name.clone_from(&r.protocol_name);
                let leader = r.leader == self.member_id && !r.skip_assignment;
                tracing::debug!(group = %self.config.group_id, generation = r.generation_id, leader, "joined");
                self.assigned_counts = None;
                if leader {
                    self.leader_members = r
                        .members
                        .iter()
                        .map(|m| MemberSubscription {
                            member_id: m.member_id.clone(),
                            instance_id: m.group_instance_id.clone(),
                            subscription: Subscription::decode(m.metadata.clone()).unwrap_or_else(|e| {
                                tracing::warn!(group = %self.config.group_id, member = %m.member_id, error = %e, "unreadable subscription: the member is given nothing");
                                Subscription::default()
                            }),
                        })
                        .collect();
                    let topics: BTreeSet<&String> =
                        self.leader_members.iter().flat_map(|m| &m.subscription.topics).collect();
                    let topics = topics.into_iter().cloned().collect();
                    self.actions.push_back(Action::DescribeTopics { topics });
                    self.phase = Phase::Assigning;
                } else {
                    self.sync_assignments.clear();
                    self.phase = Phase::Syncing;
                    self.group_due = now;
                }
            }
            ErrorCode::MemberIdRequired => {
                self.member_id.clone_from(&r.member_id);
                self.group_due = now;
            }
            _ => self.on_error(now, code, r.error_code),
        }
    }

    fn on_sync(&mut self, now: Instant, r: &SyncGroupResponse) {
        let code = ErrorCode::from_code(r.error_code);
        if code != ErrorCode::None {
            self.on_error(now, code, r.error_code);
            return;
        }
        self.failures = 0;
        let assignment = Assignment::decode(r.assignment.clone()).unwrap_or_else(|e| {
            tracing::warn!(group = %self.config.group_id, error = %e, "unreadable assignment taken as empty");
            Assignment::default()
        });
        let assigned: BTreeSet<TopicPartition> = assignment.partitions.into_iter().collect();
        if self.generation != self.joined_generation {
            self.generation = self.joined_generation;
            self.actions.push_back(Action::EpochChanged { epoch: self.generation });
        }
        self.heartbeat_due = now + self.config.heartbeat_interval;
        self.session_deadline = Some(now + self.config.session_timeout);
        let added: Vec<_> = assigned.difference(&self.owned).cloned().collect();
        let revoked: BTreeSet<_> = self.owned.difference(&assigned).cloned().collect();
        self.owned.extend(added.iter().cloned());
        if !added.is_empty() {
            self.actions.push_back(Action::StartPartitions { partitions: added });
        }
        self.phase = Phase::Stable;
        if !revoked.is_empty() {
            // Cooperative: give up what the leader took away, then join again so that
            // it can go to its new owner. (Eager members own nothing here.)
            self.revoke(revoked, RevokeReason::Reassigned, Then::Rejoin);
        } else if self.leave_requested {
            self.begin_leave(now);
        }
    }

    fn on_heartbeat(&mut self, now: Instant, flight: Flight, r: &HeartbeatResponse) {
        if flight.generation != self.generation || !self.heartbeating() {
            tracing::debug!(group = %self.config.group_id, "heartbeat answer of a past generation ignored");
            return;
        }
        let code = ErrorCode::from_code(r.error_code);
        match reaction(code) {
            _ if code == ErrorCode::None => {
                self.failures = 0;
                self.session_deadline = Some(flight.sent_at + self.config.session_timeout);
                self.heartbeat_due = flight.sent_at + self.config.heartbeat_interval;
            }
            Reaction::Rejoin => {
                self.session_deadline = Some(flight.sent_at + self.config.session_timeout);
                self.heartbeat_due = flight.sent_at + self.config.heartbeat_interval;
                if self.phase == Phase::Stable {
                    tracing::debug!(group = %self.config.group_id, "the group is rebalancing: joining again");
                    self.rejoin(now);
                }
            }
            Reaction::Coordinator => {
                // At once the first time (the coordinator moved), after the backoff
                // when it goes on.
                self.find_coordinator();
                self.heartbeat_due = now + if self.failures == 0 { Duration::ZERO } else { self.backoff() };
                self.failures = self.failures.max(1);
            }
            Reaction::Backoff => self.heartbeat_due = now + self.backoff(),
            Reaction::Lost(reason) => self.lost_on(now, reason),
            Reaction::Fatal => self.fail_with(now, code, r.error_code),
        }
    }

    /// An error answer to a JoinGroup or SyncGroup.
    fn on_error(&mut self, now: Instant, code: ErrorCode, raw: i16) {
        match reaction(code) {
            Reaction::Rejoin => {
                let delay = if self.phase == Phase::Joining { self.backoff() } else { Duration::ZERO };
                self.phase = Phase::Joining;
                self.group_due = now + delay;
            }
            Reaction::Coordinator => {
                self.find_coordinator();
                self.phase = Phase::Joining;
                self.group_due = now + if self.failures == 0 { Duration::ZERO } else { self.backoff() };
                self.failures = self.failures.max(1);
            }
            Reaction::Backoff => {
                self.phase = Phase::Joining;
                self.group_due = now + self.backoff();
            }
            Reaction::Lost(reason) => self.lost_on(now, reason),
            Reaction::Fatal => self.fail_with(now, code, raw),
        }
    }

    fn lost_on(&mut self, now: Instant, reason: LostReason) {
        if reason == LostReason::UnknownMember {
            self.member_id.clear();
        }
        self.lose(now, reason);
    }

    fn fail_with(&mut self, now: Instant, code: ErrorCode, raw: i16) {
        let group = self.config.group_id.clone();
        let error = match code {
            ErrorCode::FencedInstanceId => GroupError::FencedInstanceId {
                group,
                instance_id: self.config.instance_id.clone().unwrap_or_default(),
                message: None,
            },
            ErrorCode::GroupAuthorizationFailed => GroupError::GroupAuthorizationFailed { group, message: None },
            ErrorCode::GroupMaxSizeReached => GroupError::GroupMaxSizeReached { group, message: None },
            _ => {
                tracing::debug!(code = raw, "fatal group error");
                GroupError::Broker { group, code, message: None }
            }
        };
        self.fail(now, error);
    }

    /// Starts a rejoin of a stable member: eager members give everything up first.
    fn rejoin(&mut self, now: Instant) {
        if self.protocol == RebalanceProtocol::Eager && !self.owned.is_empty() {
            let all = self.owned.clone();
            self.revoke(all, RevokeReason::Reassigned, Then::Rejoin);
        } else {
            self.start_join(now);
        }
    }

    fn start_join(&mut self, now: Instant) {
        self.phase = Phase::Joining;
        self.group_due = now;
        // The join keeps the session alive on the coordinator; no heartbeat goes.
        self.session_deadline = None;
    }

    fn revoke(&mut self, partitions: BTreeSet<TopicPartition>, reason: RevokeReason, then: Then) {
        let release = self.new_release();
        let list: Vec<_> = partitions.iter().cloned().collect();
        self.actions.push_back(Action::StopFetching { release, partitions: list.clone() });
        self.actions.push_back(Action::CommitRevoked { release, partitions: list, reason });
        self.revoking = partitions;
        self.phase = Phase::Revoking(release, then);
    }

    fn begin_leave(&mut self, now: Instant) {
        if !self.owned.is_empty() {
            let all = self.owned.clone();
            self.revoke(all, RevokeReason::Shutdown, Then::Leave);
            return;
        }
        if self.config.instance_id.is_some() || self.member_id.is_empty() {
            // A static member sends no LeaveGroup: it comes back under its instance id
            // without a rebalance.
            self.finish(Outcome::Left);
        } else {
            self.phase = Phase::Leaving;
            self.group_due = now;
        }
    }

    /// Gives the partitions up as lost, and the generation; then a rejoin once they are
    /// released (or the end, for a member leaving).
    fn lose(&mut self, now: Instant, reason: LostReason) {
        self.session_deadline = None;
        self.revoking.clear();
        if self.generation != -1 {
            self.generation = -1;
            self.actions.push_back(Action::EpochChanged { epoch: -1 });
        }
        let was_joining = self.phase == Phase::Joining;
        if !self.owned.is_empty() {
            let release = self.new_release();
            let partitions = std::mem::take(&mut self.owned).into_iter().collect();
            self.actions.push_back(Action::PartitionsLost { release, partitions, reason });
            self.phase = Phase::Lost(release);
            return;
        }
        if self.leave_requested {
            self.finish(Outcome::Left);
            return;
        }
        self.phase = Phase::Joining;
        self.group_due = now + if was_joining { self.backoff() } else { Duration::ZERO };
    }

    fn fail(&mut self, now: Instant, error: GroupError) {
        let _ = now;
        self.session_deadline = None;
        if !self.owned.is_empty() {
            let release = self.new_release();
            let partitions = std::mem::take(&mut self.owned).into_iter().collect();
            self.actions.push_back(Action::PartitionsLost { release, partitions, reason: LostReason::Failed });
        }
        self.finish(Outcome::Failed(error));
    }

    fn finish(&mut self, outcome: Outcome) {
        if self.phase == Phase::Stopped {
            return;
        }
        self.phase = Phase::Stopped;
        self.session_deadline = None;
        self.actions.push_back(Action::Finished(outcome));
    }

    fn join_request(&self) -> JoinGroupRequest {
        let owned: Vec<_> = match self.protocol {
            RebalanceProtocol::Cooperative => self.owned.iter().cloned().collect(),
            RebalanceProtocol::Eager => Vec::new(),
        };
        let subscription = Subscription::new(self.config.topics.iter().cloned())
            .with_owned_partitions(owned)
            .with_generation_id((self.generation >= 0).then_some(self.generation))
            .with_rack_id(self.config.rack_id.clone());
        let protocols = self
            .config
            .assignors
            .iter()
            .filter_map(|a| {
                let metadata = subscription.encode(SUBSCRIPTION_VERSION).ok()?;
                Some(JoinGroupRequestProtocol::default().with_name(a.name().to_owned()).with_metadata(metadata))
            })
            .collect();
        JoinGroupRequest::default()
            .with_group_id(self.config.group_id.clone())
            .with_session_timeout_ms(millis(self.config.session_timeout))
            .with_rebalance_timeout_ms(millis(self.config.rebalance_timeout))
            .with_member_id(self.member_id.clone())
            .with_group_instance_id(self.config.instance_id.clone())
            .with_protocol_type(PROTOCOL_TYPE.to_owned())
            .with_protocols(protocols)
    }

    fn sync_request(&self) -> SyncGroupRequest {
        SyncGroupRequest::default()
            .with_group_id(self.config.group_id.clone())
            .with_generation_id(self.joined_generation)
            .with_member_id(self.member_id.clone())
            .with_group_instance_id(self.config.instance_id.clone())
            .with_protocol_type(Some(PROTOCOL_TYPE.to_owned()))
            .with_protocol_name(self.protocol_name.clone())
            .with_assignments(self.sync_assignments.clone())
    }

    fn leave_request(&self) -> LeaveGroupRequest {
        LeaveGroupRequest::default().with_group_id(self.config.group_id.clone()).with_members(vec![
            MemberIdentity::default()
                .with_member_id(self.member_id.clone())
                .with_group_instance_id(self.config.instance_id.clone()),
        ])
    }

    fn heartbeating(&self) -> bool {
        matches!(self.phase, Phase::Stable | Phase::Revoking(..)) && self.generation >= 0
    }

    fn group_sendable(&self) -> bool {
        self.coordinator_known
            && self.group_flight.is_none()
            && matches!(self.phase, Phase::Joining | Phase::Syncing | Phase::Leaving)
    }

    fn heartbeat_sendable(&self) -> bool {
        self.coordinator_known && self.heartbeat_flight.is_none() && self.heartbeating()
    }

    fn find_coordinator(&mut self) {
        if self.coordinator_known {
            self.coordinator_known = false;
            self.actions.push_back(Action::FindCoordinator);
        }
    }

    /// The next wait after a failure: doubling from `retry_backoff` up to
    /// `retry_backoff_max`.
    fn backoff(&mut self) -> Duration {
        let factor = 1u32.checked_shl(self.failures.min(16)).unwrap_or(u32::MAX);
        self.failures = self.failures.saturating_add(1);
        self.config.retry_backoff.saturating_mul(factor).min(self.config.retry_backoff_max)
    }

    fn new_request_id(&mut self) -> RequestId {
        self.next_id += 1;
        RequestId(self.next_id)
    }

    fn new_release(&mut self) -> ReleaseId {
        self.next_id += 1;
        ReleaseId::new(self.next_id)
    }
}

/// Keeps a cooperative assignor's output cooperative, whoever wrote the assignor: a
/// partition given to a member that does not claim it, while another member does, is
/// left out (its owner gives it up, and the next rebalance hands it over), so that no
/// partition is ever owned by two members at once.
fn withhold_claimed(input: &AssignorInput, assignment: &mut GroupAssignment) {
    let mut claims: BTreeMap<&TopicPartition, BTreeSet<&str>> = BTreeMap::new();
    for m in &input.members {
        for tp in &m.subscription.owned_partitions {
            claims.entry(tp).or_default().insert(m.member_id.as_str());
        }
    }
    for (member, parts) in assignment.iter_mut() {
        parts.retain(|tp| {
            let keep = claims.get(tp).is_none_or(|c| c.contains(member.as_str()));
            if !keep {
                tracing::warn!(partition = %tp, member = %member, "the assignor gave a partition another member still owns: left for the next rebalance");
            }
            keep
        });
    }
}

fn millis(d: Duration) -> i32 {
    i32::try_from(d.as_millis()).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod group_tests;
#[cfg(test)]
mod tests;
