//! The group coordinator: KIP-848 consumer groups and classic groups, sans-io. Every
//! entry point takes the decoded request, the topics as they are and the cluster clock's
//! `now` (milliseconds), and returns the answer; requests that wait for a barrier (a
//! classic join or sync) are parked under a ticket and their answers collected in
//! [`Coordinator::take_answer`] once a later request or [`Coordinator::tick`]
//! completes the barrier.

mod admin;
mod assignor;
pub(crate) mod classic;
pub(crate) mod consumer;
mod regex;

use std::collections::BTreeMap;

use klife_protocol::messages::consumer_group_heartbeat_response::{Assignment, TopicPartitions};
use klife_protocol::messages::{
    ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse, HeartbeatRequest, HeartbeatResponse,
    JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, SyncGroupRequest, SyncGroupResponse,
};
use klife_protocol::{AnyResponse, ErrorCode, Uuid};

use classic::{ClassicGroup, ClassicSettings, ClassicState, Outcome, Parked};
use consumer::{ConsumerGroup, ConsumerSettings, ReconciliationState};

/// Topics as the coordinator sees them: name → (id, partition count).
pub(crate) type Topics = BTreeMap<String, (Uuid, i32)>;

/// An error answer with its message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GroupError {
    pub(crate) code: ErrorCode,
    pub(crate) message: String,
}

impl GroupError {
    pub(crate) fn new(code: ErrorCode, message: &str) -> GroupError {
        GroupError { code, message: message.to_owned() }
    }
}

/// Who sent a request: the client id of its header and the address of its connection
/// as Kafka prints it (`/127.0.0.1`); DescribeGroups and ConsumerGroupDescribe show both.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Client<'a> {
    pub(crate) id: &'a str,
    pub(crate) host: &'a str,
}

/// A random member id part: a version 4 UUID in its usual text form, as the
/// `java.util.UUID` in Kafka's classic member ids (`client-id-uuid`).
pub(crate) fn random_id() -> String {
    let b = crate::state::random_uuid().0;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..])
}

/// Settings of the coordinator (Kafka broker configs), changeable while running.
#[derive(Debug, Clone, Copy)]
pub(crate) struct GroupConfig {
    /// `group.consumer.heartbeat.interval.ms`.
    pub(crate) heartbeat_interval_ms: i32,
    /// `group.consumer.session.timeout.ms`.
    pub(crate) session_timeout_ms: i64,
    /// `group.consumer.assignment.interval.ms`.
    pub(crate) assignment_interval_ms: i64,
    /// `group.initial.rebalance.delay.ms`.
    pub(crate) initial_rebalance_delay_ms: i64,
    /// `group.max.size` and `group.consumer.max.size`.
    pub(crate) max_size: usize,
    /// Advertise ConsumerGroupHeartbeat but answer it with UNSUPPORTED_VERSION.
    pub(crate) refuse_consumer_protocol: bool,
    /// Advertise ConsumerGroupHeartbeat in ApiVersions (when not, it is refused too).
    pub(crate) advertise_consumer_protocol: bool,
}

impl Default for GroupConfig {
    fn default() -> Self {
        GroupConfig {
            heartbeat_interval_ms: 5_000,
            session_timeout_ms: 45_000,
            assignment_interval_ms: 1_000,
            initial_rebalance_delay_ms: 0,
            max_size: usize::MAX,
            refuse_consumer_protocol: false,
            advertise_consumer_protocol: true,
        }
    }
}

/// A group with members, of one protocol or the other.
#[derive(Debug, Clone)]
pub(crate) enum Group {
    Consumer(ConsumerGroup),
    Classic(ClassicGroup),
}

/// Every group's membership, and the answers of parked requests.
#[derive(Debug, Default)]
pub(crate) struct Coordinator {
    pub(crate) config: GroupConfig,
    pub(crate) groups: BTreeMap<String, Group>,
    answers: BTreeMap<u64, AnyResponse>,
    abandoned: std::collections::BTreeSet<u64>,
    next_ticket: u64,
}

fn assignment_of(partitions: &assignor::Partitions) -> Assignment {
    Assignment::default().with_topic_partitions(
        partitions
            .iter()
            .map(|(t, ps)| TopicPartitions::default().with_topic_id(*t).with_partitions(ps.iter().copied().collect()))
            .collect(),
    )
}

impl Coordinator {
    pub(crate) fn new(config: GroupConfig) -> Coordinator {
        Coordinator { config, ..Coordinator::default() }
    }

    fn classic_settings(&self) -> ClassicSettings {
        ClassicSettings {
            initial_rebalance_delay_ms: self.config.initial_rebalance_delay_ms,
            max_size: self.config.max_size,
        }
    }

    fn consumer_settings(&self) -> ConsumerSettings {
        ConsumerSettings {
            session_timeout_ms: self.config.session_timeout_ms,
            assignment_interval_ms: self.config.assignment_interval_ms,
            max_size: self.config.max_size,
        }
    }

    fn ticket(&mut self) -> u64 {
        self.next_ticket += 1;
        self.next_ticket
    }

    fn deliver(&mut self, answers: classic::Answers) {
        for (ticket, answer) in answers {
            if !self.abandoned.remove(&ticket) {
                self.answers.insert(ticket, answer);
            }
        }
    }

    /// The answer of a parked request, once there is one.
    pub(crate) fn take_answer(&mut self, ticket: u64) -> Option<AnyResponse> {
        self.answers.remove(&ticket)
    }

    /// A parked request whose connection went away: its answer is dropped.
    pub(crate) fn abandon(&mut self, ticket: u64) {
        if self.answers.remove(&ticket).is_none() {
            self.abandoned.insert(ticket);
        }
    }

    // ----- KIP-848 -----

    /// ConsumerGroupHeartbeat (the caller checked the coordinator).
    pub(crate) fn consumer_heartbeat(
        &mut self,
        from: Client<'_>,
        r: &ConsumerGroupHeartbeatRequest,
        version: i16,
        topics: &Topics,
        now: i64,
    ) -> ConsumerGroupHeartbeatResponse {
        let interval = self.config.heartbeat_interval_ms;
        match self.consumer_heartbeat_inner(from, r, version, topics, now) {
            Ok(a) => ConsumerGroupHeartbeatResponse::default()
                .with_member_id(Some(a.member_id))
                .with_member_epoch(a.epoch)
                .with_heartbeat_interval_ms(interval)
                .with_assignment(a.assignment.as_ref().map(assignment_of)),
            Err(e) => ConsumerGroupHeartbeatResponse::default()
                .with_error_code(e.code.code())
                .with_error_message(Some(e.message))
                .with_member_epoch(-1)
                .with_heartbeat_interval_ms(0),
        }
    }

    fn consumer_heartbeat_inner(
        &mut self,
        from: Client<'_>,
        r: &ConsumerGroupHeartbeatRequest,
        version: i16,
        topics: &Topics,
        now: i64,
    ) -> Result<consumer::HeartbeatAnswer, GroupError> {
        if self.config.refuse_consumer_protocol || !self.config.advertise_consumer_protocol {
            return Err(GroupError::new(
                ErrorCode::UnsupportedVersion,
                "The new consumer group protocol is not enabled on this cluster.",
            ));
        }
        consumer::validate(r, version)?;
        let joining = r.member_epoch == 0;
        let not_consumer =
            || GroupError::new(ErrorCode::GroupIdNotFound, &format!("Group {} is not a consumer group", r.group_id));
        match self.groups.get(&r.group_id) {
            None if !joining => {
                return Err(GroupError::new(
                    ErrorCode::GroupIdNotFound,
                    &format!("Consumer group {} not found.", r.group_id),
                ));
            }
            None => {
                self.groups.insert(r.group_id.clone(), Group::Consumer(ConsumerGroup::default()));
            }
            Some(Group::Classic(g)) if joining && g.is_empty() => {
                self.groups.insert(r.group_id.clone(), Group::Consumer(ConsumerGroup::default()));
            }
            Some(Group::Classic(_)) => return Err(not_consumer()),
            Some(Group::Consumer(_)) => {}
        }
        let settings = self.consumer_settings();
        let Some(Group::Consumer(g)) = self.groups.get_mut(&r.group_id) else { return Err(not_consumer()) };
        if r.member_epoch < 0 {
            return g.leave(r);
        }
        let answer = g.heartbeat(from, r, topics, &settings, now);
        if let Ok(a) = &answer {
            tracing::debug!(group = %r.group_id, member = %a.member_id, epoch = a.epoch, group_epoch = g.epoch, "consumer group heartbeat");
        }
        answer
    }

    // ----- classic -----

    /// The classic group to join, creating it (or replacing an empty consumer group).
    /// A join with a member id creates no group, as in Kafka (it gets UNKNOWN_MEMBER_ID).
    fn classic_for_join(&mut self, group: &str, member_id: &str) -> Option<&mut ClassicGroup> {
        let replace = match self.groups.get(group) {
            None => member_id.is_empty(),
            Some(Group::Consumer(g)) => g.members.is_empty(),
            Some(Group::Classic(_)) => false,
        };
        if replace {
            self.groups.insert(group.to_owned(), Group::Classic(ClassicGroup::new()));
        }
        match self.groups.get_mut(group) {
            Some(Group::Classic(g)) => Some(g),
            _ => None,
        }
    }

    /// JoinGroup: answered now, or parked under the returned ticket.
    pub(crate) fn join(
        &mut self,
        from: Client<'_>,
        r: &JoinGroupRequest,
        version: i16,
        now: i64,
    ) -> Result<JoinGroupResponse, u64> {
        if r.group_id.is_empty() {
            return Ok(classic::join_error_at(ErrorCode::InvalidGroupId, &r.member_id, version));
        }
        if !(classic::MIN_SESSION_TIMEOUT_MS..=classic::MAX_SESSION_TIMEOUT_MS).contains(&r.session_timeout_ms) {
            return Ok(classic::join_error_at(ErrorCode::InvalidSessionTimeout, &r.member_id, version));
        }
        let ticket = self.ticket();
        let settings = self.classic_settings();
        let prefix = r.group_instance_id.clone().unwrap_or_else(|| from.id.to_owned());
        let new_member_id = format!("{prefix}-{}", random_id());
        let mut out = Vec::new();
        let known = self.groups.contains_key(&r.group_id);
        let outcome = match self.classic_for_join(&r.group_id, &r.member_id) {
            Some(g) => g.join(from, r, version, Parked { ticket, version }, new_member_id, &settings, now, &mut out),
            None if !known => Outcome::Now(classic::join_error_at(ErrorCode::UnknownMemberId, &r.member_id, version)),
            // A consumer group with members: Kafka would take a "consumer" classic
            // member into it (online migration); this coordinator does not.
            None => Outcome::Now(classic::join_error_at(ErrorCode::InconsistentGroupProtocol, &r.member_id, version)),
        };
        self.deliver(out);
        match outcome {
            Outcome::Now(resp) => Ok(resp),
            Outcome::Parked => match self.take_answer(ticket) {
                Some(AnyResponse::JoinGroup(resp)) => Ok(resp),
                _ => Err(ticket),
            },
        }
    }

    /// SyncGroup: answered now, or parked under the returned ticket.
    pub(crate) fn sync(&mut self, r: &SyncGroupRequest, version: i16) -> Result<SyncGroupResponse, u64> {
        if r.group_id.is_empty() {
            return Ok(SyncGroupResponse::default().with_error_code(ErrorCode::InvalidGroupId.code()));
        }
        let ticket = self.ticket();
        let mut out = Vec::new();
        let outcome = match self.groups.get_mut(&r.group_id) {
            Some(Group::Classic(g)) => g.sync(r, version, Parked { ticket, version }, &mut out),
            _ => Outcome::Now(SyncGroupResponse::default().with_error_code(ErrorCode::UnknownMemberId.code())),
        };
        self.deliver(out);
        match outcome {
            Outcome::Now(resp) => Ok(resp),
            Outcome::Parked => match self.take_answer(ticket) {
                Some(AnyResponse::SyncGroup(resp)) => Ok(resp),
                _ => Err(ticket),
            },
        }
    }

    /// Heartbeat (classic).
    pub(crate) fn heartbeat(&mut self, r: &HeartbeatRequest, now: i64) -> HeartbeatResponse {
        let code = if r.group_id.is_empty() {
            ErrorCode::InvalidGroupId
        } else {
            match self.groups.get_mut(&r.group_id) {
                Some(Group::Classic(g)) => g.heartbeat(r, now),
                _ => ErrorCode::UnknownMemberId,
            }
        };
        HeartbeatResponse::default().with_error_code(code.code())
    }

    /// LeaveGroup (classic).
    pub(crate) fn leave(&mut self, r: &LeaveGroupRequest, version: i16, now: i64) -> LeaveGroupResponse {
        if r.group_id.is_empty() {
            return LeaveGroupResponse::default().with_error_code(ErrorCode::InvalidGroupId.code());
        }
        let settings = self.classic_settings();
        let mut out = Vec::new();
        let resp = match self.groups.get_mut(&r.group_id) {
            Some(Group::Classic(g)) => g.leave(r, version, &settings, now, &mut out),
            _ => LeaveGroupResponse::default().with_error_code(ErrorCode::UnknownMemberId.code()),
        };
        self.deliver(out);
        resp
    }

    // ----- time and hooks -----

    /// Runs the timers due at `now`: session expiry, revocation timeouts, join and sync
    /// barriers. Returns whether anything changed.
    pub(crate) fn tick(&mut self, now: i64) -> bool {
        let settings = self.classic_settings();
        let mut out = Vec::new();
        let mut changed = false;
        for (id, g) in &mut self.groups {
            let gone = match g {
                Group::Consumer(c) => c.tick(now),
                Group::Classic(c) => {
                    let before = (c.state, c.generation);
                    let gone = c.tick(&settings, now, &mut out);
                    changed |= before != (c.state, c.generation);
                    gone
                }
            };
            for m in &gone {
                tracing::debug!(group = %id, member = %m, "member expired");
            }
            changed |= !gone.is_empty();
        }
        changed |= !out.is_empty();
        self.deliver(out);
        changed
    }

    /// Starts a rebalance of `group`; false if it has no members.
    pub(crate) fn force_rebalance(&mut self, group: &str, now: i64) -> bool {
        let settings = self.classic_settings();
        let mut out = Vec::new();
        let done = match self.groups.get_mut(group) {
            Some(Group::Consumer(g)) if !g.members.is_empty() => {
                g.force_rebalance();
                true
            }
            Some(Group::Classic(g)) if !g.members.is_empty() => {
                if g.state != ClassicState::PreparingRebalance {
                    g.prepare_rebalance(&settings, now, &mut out);
                }
                true
            }
            _ => false,
        };
        self.deliver(out);
        done
    }

    /// Removes a member as its session expiring would; false if there is none.
    pub(crate) fn expire_member(&mut self, group: &str, member_id: &str, now: i64) -> bool {
        let settings = self.classic_settings();
        let mut out = Vec::new();
        let done = match self.groups.get_mut(group) {
            Some(Group::Consumer(g)) => g.remove_member(member_id),
            Some(Group::Classic(g)) => {
                (g.members.contains_key(member_id) || g.pending.contains_key(member_id))
                    && g.remove_member(member_id, &settings, now, &mut out)
            }
            None => false,
        };
        self.deliver(out);
        done
    }

    /// What a test sees of a group.
    pub(crate) fn describe(&self, group: &str, topics: &Topics) -> Option<GroupDescription> {
        let names: BTreeMap<Uuid, &String> = topics.iter().map(|(n, (id, _))| (*id, n)).collect();
        let list = |p: &assignor::Partitions| -> Vec<(String, i32)> {
            let mut out: Vec<(String, i32)> = p
                .iter()
                .flat_map(|(t, ps)| {
                    let name = names.get(t).map_or_else(|| t.to_string(), |n| (*n).clone());
                    ps.iter().map(move |p| (name.clone(), *p))
                })
                .collect();
            out.sort();
            out
        };
        match self.groups.get(group)? {
            Group::Consumer(g) => Some(GroupDescription {
                protocol: GroupProtocol::Consumer,
                state: g.state_name(),
                epoch: g.epoch,
                assignment_epoch: g.assignment_epoch,
                protocol_name: None,
                leader: None,
                members: g
                    .members
                    .values()
                    .map(|m| MemberDescription {
                        member_id: m.member_id.clone(),
                        instance_id: m.instance_id.clone(),
                        epoch: m.epoch,
                        reconciliation: Some(m.state),
                        assigned: list(&m.assigned),
                        pending_revocation: list(&m.pending_revocation),
                        target: g.target.get(&m.member_id).map(&list).unwrap_or_default(),
                        classic_assignment: None,
                    })
                    .collect(),
            }),
            Group::Classic(g) => Some(GroupDescription {
                protocol: GroupProtocol::Classic,
                state: g.state.name(),
                epoch: g.generation,
                assignment_epoch: g.generation,
                protocol_name: g.protocol_name.clone(),
                leader: g.leader.clone(),
                members: g
                    .members
                    .values()
                    .map(|m| MemberDescription {
                        member_id: m.member_id.clone(),
                        instance_id: m.instance_id.clone(),
                        epoch: g.generation,
                        reconciliation: None,
                        assigned: Vec::new(),
                        pending_revocation: Vec::new(),
                        target: Vec::new(),
                        classic_assignment: Some(m.assignment.to_vec()),
                    })
                    .collect(),
            }),
        }
    }
}

/// The protocol a group runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupProtocol {
    /// KIP-848: ConsumerGroupHeartbeat.
    Consumer,
    /// JoinGroup / SyncGroup / Heartbeat / LeaveGroup.
    Classic,
}

/// A group as [`FakeCluster::describe_group`](crate::FakeCluster::describe_group) shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// Which protocol.
    pub protocol: GroupProtocol,
    /// Kafka's state name: `Empty`, `Stable`, `Assigning` (consumer groups whose
    /// target assignment is behind the group epoch), `Reconciling` (consumer groups
    /// with a member not yet Stable at the target's epoch), `PreparingRebalance`,
    /// `CompletingRebalance`.
    pub state: &'static str,
    /// The group epoch (consumer) or generation (classic).
    pub epoch: i32,
    /// The epoch of the target assignment (consumer); the generation (classic).
    pub assignment_epoch: i32,
    /// The selected protocol (classic: the assignor the members agreed on).
    pub protocol_name: Option<String>,
    /// The leader (classic).
    pub leader: Option<String>,
    /// The members, by member id.
    pub members: Vec<MemberDescription>,
}

/// One member in a [`GroupDescription`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberDescription {
    /// The member id.
    pub member_id: String,
    /// The instance id of a static member.
    pub instance_id: Option<String>,
    /// The member epoch (consumer), or the group's generation (classic).
    pub epoch: i32,
    /// Where the member is in its reconciliation (consumer).
    pub reconciliation: Option<ReconciliationState>,
    /// The partitions the member owns (consumer), sorted.
    pub assigned: Vec<(String, i32)>,
    /// The partitions it was asked to revoke and still owns (consumer).
    pub pending_revocation: Vec<(String, i32)>,
    /// Its target assignment (consumer).
    pub target: Vec<(String, i32)>,
    /// The assignment bytes the leader gave it (classic).
    pub classic_assignment: Option<Vec<u8>>,
}

#[cfg(test)]
mod tests;
