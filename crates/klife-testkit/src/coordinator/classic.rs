//! Classic groups (JoinGroup, SyncGroup, Heartbeat, LeaveGroup) as Kafka's coordinator
//! runs them: MEMBER_ID_REQUIRED on a first join (v4+), the join barrier (known members
//! rejoin, up to the rebalance timeout; a new group waits the initial rebalance delay),
//! a leader given every member's metadata, generations, the sync barrier (followers
//! wait for the leader's assignment), static members, session expiry. Assignments are
//! opaque bytes chosen by the leader.
//!
//! Requests that wait (a join during a rebalance, a follower's sync) are parked under a
//! ticket; their answers come out of later calls as `(ticket, response)` pairs.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use klife_protocol::messages::join_group_response::JoinGroupResponseMember;
use klife_protocol::messages::leave_group_response::MemberResponse;
use klife_protocol::messages::{
    HeartbeatRequest, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, SyncGroupRequest,
    SyncGroupResponse,
};
use klife_protocol::{AnyResponse, ErrorCode};

use super::Client;

/// Kafka's `group.min.session.timeout.ms` and `group.max.session.timeout.ms` defaults.
pub(crate) const MIN_SESSION_TIMEOUT_MS: i32 = 6_000;
/// See [`MIN_SESSION_TIMEOUT_MS`].
pub(crate) const MAX_SESSION_TIMEOUT_MS: i32 = 1_800_000;

/// A classic group's state, as Kafka names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ClassicState {
    /// No members (offsets only, or everyone left).
    Empty,
    /// Waiting for members to (re)join.
    PreparingRebalance,
    /// Joined; waiting for the leader's SyncGroup.
    CompletingRebalance,
    /// Every member has its assignment.
    Stable,
}

impl ClassicState {
    /// Kafka's name of the state (`ClassicGroupState`).
    pub(crate) fn name(self) -> &'static str {
        match self {
            ClassicState::Empty => "Empty",
            ClassicState::PreparingRebalance => "PreparingRebalance",
            ClassicState::CompletingRebalance => "CompletingRebalance",
            ClassicState::Stable => "Stable",
        }
    }
}

/// A parked request: its ticket and the version to answer at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Parked {
    pub(crate) ticket: u64,
    pub(crate) version: i16,
}

#[derive(Debug, Clone)]
pub(crate) struct ClassicMember {
    pub(crate) member_id: String,
    pub(crate) instance_id: Option<String>,
    /// The client id and address of its join.
    pub(crate) client_id: String,
    pub(crate) client_host: String,
    pub(crate) session_timeout_ms: i32,
    pub(crate) rebalance_timeout_ms: i32,
    pub(crate) protocol_type: String,
    pub(crate) protocols: Vec<(String, Bytes)>,
    pub(crate) assignment: Bytes,
    pub(crate) awaiting_join: Option<Parked>,
    pub(crate) awaiting_sync: Option<Parked>,
    /// Sent its SyncGroup for the current generation.
    pub(crate) synced: bool,
    pub(crate) session_deadline: i64,
    /// Join order, for choosing a leader.
    pub(crate) order: u64,
}

impl ClassicMember {
    pub(crate) fn metadata(&self, protocol: &str) -> Bytes {
        self.protocols.iter().find(|(n, _)| n == protocol).map(|(_, m)| m.clone()).unwrap_or_default()
    }
}

/// A classic group.
#[derive(Debug, Clone)]
pub(crate) struct ClassicGroup {
    pub(crate) state: ClassicState,
    pub(crate) generation: i32,
    /// Set by the first member and kept, as in Kafka, once the group is empty again;
    /// `None` for a group that never had a member.
    pub(crate) protocol_type: Option<String>,
    pub(crate) protocol_name: Option<String>,
    /// The topics the members subscribe to, read from their `consumer` protocol
    /// metadata when a generation starts; `None` when not known (another protocol
    /// type, no generation yet, metadata that does not parse).
    pub(crate) subscribed_topics: Option<BTreeSet<String>>,
    pub(crate) leader: Option<String>,
    pub(crate) members: BTreeMap<String, ClassicMember>,
    /// Member ids handed out with MEMBER_ID_REQUIRED, not joined yet, with their expiry.
    pub(crate) pending: BTreeMap<String, i64>,
    /// When the join barrier gives up on members that have not rejoined.
    join_deadline: Option<i64>,
    /// The end of the initial delay of a new group's first rebalance.
    initial_delay_until: Option<i64>,
    /// When members that have not sent SyncGroup are removed.
    sync_deadline: Option<i64>,
    next_order: u64,
}

/// Settings the classic protocol uses.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClassicSettings {
    pub(crate) initial_rebalance_delay_ms: i64,
    pub(crate) max_size: usize,
}

/// The answers to parked requests, as they complete.
pub(crate) type Answers = Vec<(u64, AnyResponse)>;

/// A join's or sync's outcome: answered now, or parked.
#[derive(Debug)]
pub(crate) enum Outcome<T> {
    Now(T),
    Parked,
}

/// The protocol type of consumers (Kafka's `ConsumerProtocol.PROTOCOL_TYPE`).
pub(crate) const CONSUMER_PROTOCOL_TYPE: &str = "consumer";

/// The topics of a consumer protocol subscription (an int16 version, then read as
/// version 0: the topic names and the user data); `None` if it does not parse.
fn subscription_topics(metadata: &[u8]) -> Option<Vec<String>> {
    fn take<'a>(buf: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, tail) = buf.split_at_checked(n)?;
        *buf = tail;
        Some(head)
    }
    fn int16(buf: &mut &[u8]) -> Option<i16> {
        Some(i16::from_be_bytes(take(buf, 2)?.try_into().ok()?))
    }
    fn int32(buf: &mut &[u8]) -> Option<i32> {
        Some(i32::from_be_bytes(take(buf, 4)?.try_into().ok()?))
    }
    let mut buf = metadata;
    // The version, whatever it is: version 0 is the prefix of every version.
    int16(&mut buf)?;
    let count = usize::try_from(int32(&mut buf)?).ok()?;
    let mut topics = Vec::new();
    for _ in 0..count {
        let len = usize::try_from(int16(&mut buf)?).ok()?;
        topics.push(String::from_utf8(take(&mut buf, len)?.to_vec()).ok()?);
    }
    // The user data (nullable bytes) must be there too.
    if let Ok(len) = usize::try_from(int32(&mut buf)?) {
        take(&mut buf, len)?;
    }
    Some(topics)
}

fn join_error(code: ErrorCode, member_id: &str) -> JoinGroupResponse {
    JoinGroupResponse::default()
        .with_error_code(code.code())
        .with_member_id(member_id.to_owned())
        .with_protocol_name(None)
        .with_generation_id(-1)
}

/// A JoinGroup error answer at `version` (the protocol name is nullable from v7 only).
pub(crate) fn join_error_at(code: ErrorCode, member_id: &str, version: i16) -> JoinGroupResponse {
    let r = join_error(code, member_id);
    if version < 7 { r.with_protocol_name(Some(String::new())) } else { r }
}

fn sync_answer(code: ErrorCode, version: i16, group: &ClassicGroup, assignment: Bytes) -> SyncGroupResponse {
    let r = SyncGroupResponse::default().with_error_code(code.code()).with_assignment(assignment);
    if version >= 5 && code == ErrorCode::None {
        r.with_protocol_type(group.protocol_type.clone()).with_protocol_name(group.protocol_name.clone())
    } else {
        r
    }
}

impl ClassicGroup {
    pub(crate) fn new() -> ClassicGroup {
        ClassicGroup {
            state: ClassicState::Empty,
            generation: 0,
            protocol_type: None,
            protocol_name: None,
            subscribed_topics: None,
            leader: None,
            members: BTreeMap::new(),
            pending: BTreeMap::new(),
            join_deadline: None,
            initial_delay_until: None,
            sync_deadline: None,
            next_order: 0,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.members.is_empty() && self.pending.is_empty()
    }

    fn static_member(&self, instance_id: &str) -> Option<&String> {
        self.members.values().find(|m| m.instance_id.as_deref() == Some(instance_id)).map(|m| &m.member_id)
    }

    /// Kafka's `validateMember`: UNKNOWN_MEMBER_ID, or FENCED_INSTANCE_ID for a static
    /// member replaced by a newer instance.
    pub(crate) fn validate_member(&self, member_id: &str, instance_id: Option<&str>) -> ErrorCode {
        match instance_id {
            Some(i) => match self.static_member(i) {
                Some(id) if id == member_id => ErrorCode::None,
                Some(_) => ErrorCode::FencedInstanceId,
                None => ErrorCode::UnknownMemberId,
            },
            None if self.members.contains_key(member_id) => ErrorCode::None,
            None => ErrorCode::UnknownMemberId,
        }
    }

    /// Whether a member with these protocols can be in the group.
    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)], except: Option<&str>) -> bool {
        let others: Vec<&ClassicMember> =
            self.members.values().filter(|m| Some(m.member_id.as_str()) != except).collect();
        if others.is_empty() {
            return !protocol_type.is_empty() && !protocols.is_empty();
        }
        self.protocol_type.as_deref().is_none_or(|t| t == protocol_type)
            && others.iter().all(|m| m.protocol_type == protocol_type)
            && protocols.iter().any(|(n, _)| others.iter().all(|m| m.protocols.iter().any(|(o, _)| o == n)))
    }

    fn rebalance_timeout(&self) -> i64 {
        self.members.values().map(|m| i64::from(m.rebalance_timeout_ms.max(0))).max().unwrap_or(0)
    }

    /// The protocol every member supports that most members prefer.
    fn select_protocol(&self) -> Option<String> {
        let first = self.members.values().next()?;
        let candidates: Vec<&String> = first
            .protocols
            .iter()
            .map(|(n, _)| n)
            .filter(|n| self.members.values().all(|m| m.protocols.iter().any(|(o, _)| o == *n)))
            .collect();
        let mut votes: BTreeMap<&String, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some((n, _)) = m.protocols.iter().find(|(n, _)| candidates.contains(&n)) {
                *votes.entry(n).or_default() += 1;
            }
        }
        // Most votes; ties to the earliest candidate.
        candidates
            .iter()
            .max_by_key(|c| {
                (votes.get(*c).copied().unwrap_or(0), std::cmp::Reverse(candidates.iter().position(|x| x == *c)))
            })
            .map(|c| (*c).clone())
    }

    fn join_answer(&self, member_id: &str, version: i16, skip_assignment: bool) -> JoinGroupResponse {
        let protocol = self.protocol_name.clone().unwrap_or_default();
        let is_leader = self.leader.as_deref() == Some(member_id);
        let members = if is_leader {
            self.members
                .values()
                .map(|m| {
                    JoinGroupResponseMember::default()
                        .with_member_id(m.member_id.clone())
                        .with_group_instance_id(m.instance_id.clone())
                        .with_metadata(m.metadata(&protocol))
                })
                .collect()
        } else {
            Vec::new()
        };
        let mut r = JoinGroupResponse::default()
            .with_generation_id(self.generation)
            .with_protocol_name(Some(protocol))
            .with_leader(self.leader.clone().unwrap_or_default())
            .with_member_id(member_id.to_owned())
            .with_members(members);
        if version >= 7 {
            r = r.with_protocol_type(self.protocol_type.clone());
        }
        if version >= 9 {
            r = r.with_skip_assignment(skip_assignment && is_leader);
        }
        r
    }

    /// Moves the group to PREPARING_REBALANCE (followers waiting in SyncGroup get
    /// REBALANCE_IN_PROGRESS).
    pub(crate) fn prepare_rebalance(&mut self, settings: &ClassicSettings, now: i64, out: &mut Answers) {
        if self.state == ClassicState::CompletingRebalance {
            // Kafka's resetAndPropagateAssignmentWithError: the assignments go; until
            // then members keep the previous generation's.
            for m in self.members.values_mut() {
                m.assignment = Bytes::new();
                if let Some(p) = m.awaiting_sync.take() {
                    out.push((
                        p.ticket,
                        sync_answer(ErrorCode::RebalanceInProgress, p.version, &ClassicGroup::new(), Bytes::new())
                            .into(),
                    ));
                }
            }
        }
        if self.state == ClassicState::Empty {
            let delay = settings.initial_rebalance_delay_ms.min(self.rebalance_timeout()).max(0);
            self.initial_delay_until = Some(now + delay);
        }
        self.sync_deadline = None;
        self.state = ClassicState::PreparingRebalance;
        self.join_deadline = Some(now + self.rebalance_timeout());
    }

    fn all_joined(&self) -> bool {
        self.pending.is_empty() && self.members.values().all(|m| m.awaiting_join.is_some())
    }

    /// Completes the join barrier if every known member rejoined (after the initial
    /// delay of a new group) or the rebalance timeout passed.
    pub(crate) fn maybe_complete_join(&mut self, settings: &ClassicSettings, now: i64, out: &mut Answers) {
        if self.state != ClassicState::PreparingRebalance {
            return;
        }
        let delayed = self.initial_delay_until.is_some_and(|d| d > now);
        let timed_out = self.join_deadline.is_some_and(|d| d <= now);
        if (self.all_joined() && !delayed) || timed_out {
            self.complete_join(settings, now, out);
        }
    }

    fn complete_join(&mut self, _settings: &ClassicSettings, now: i64, out: &mut Answers) {
        // Dynamic members that did not rejoin are dropped; static ones stay.
        self.members.retain(|_, m| m.awaiting_join.is_some() || m.instance_id.is_some());
        self.pending.clear();
        self.initial_delay_until = None;
        self.join_deadline = None;
        self.generation += 1;
        if self.members.is_empty() {
            self.state = ClassicState::Empty;
            self.protocol_name = None;
            self.leader = None;
            self.subscribed_topics = self.compute_subscribed_topics();
            return;
        }
        self.protocol_type = self.members.values().next().map(|m| m.protocol_type.clone());
        self.protocol_name = self.select_protocol();
        self.subscribed_topics = self.compute_subscribed_topics();
        let leader_ok =
            self.leader.as_ref().is_some_and(|l| self.members.get(l).is_some_and(|m| m.awaiting_join.is_some()));
        if !leader_ok {
            self.leader = self
                .members
                .values()
                .filter(|m| m.awaiting_join.is_some())
                .min_by_key(|m| m.order)
                .map(|m| m.member_id.clone());
        }
        self.state = ClassicState::CompletingRebalance;
        self.sync_deadline = Some(now + self.rebalance_timeout());
        let ids: Vec<String> = self.members.keys().cloned().collect();
        for id in ids {
            let parked = self.members.get_mut(&id).and_then(|m| {
                m.synced = false;
                m.session_deadline = now + i64::from(m.session_timeout_ms);
                m.awaiting_join.take()
            });
            if let Some(p) = parked {
                out.push((p.ticket, self.join_answer(&id, p.version, false).into()));
            }
        }
    }

    /// Kafka's `computeSubscribedTopics`: for protocol type `consumer`, the topics of
    /// every member's subscription (read as version 0, the prefix of every version).
    fn compute_subscribed_topics(&self) -> Option<BTreeSet<String>> {
        if self.protocol_type.as_deref() != Some(CONSUMER_PROTOCOL_TYPE) {
            return None;
        }
        if self.members.is_empty() {
            return Some(BTreeSet::new());
        }
        let protocol = self.protocol_name.as_deref()?;
        let mut topics = BTreeSet::new();
        for m in self.members.values() {
            topics.extend(subscription_topics(&m.metadata(protocol))?);
        }
        Some(topics)
    }

    /// Kafka's `isSubscribedToTopic`: a group that does not know its members' topics
    /// counts as subscribed to every topic if it runs the `consumer` protocol type.
    pub(crate) fn is_subscribed_to(&self, topic: &str) -> bool {
        match &self.subscribed_topics {
            Some(topics) => topics.contains(topic),
            None => self.protocol_type.as_deref() == Some(CONSUMER_PROTOCOL_TYPE),
        }
    }

    /// Removes a member (left or expired); a parked join or sync of it gets
    /// UNKNOWN_MEMBER_ID; the group rebalances.
    pub(crate) fn remove_member(
        &mut self,
        member_id: &str,
        settings: &ClassicSettings,
        now: i64,
        out: &mut Answers,
    ) -> bool {
        if self.pending.remove(member_id).is_some() {
            self.maybe_complete_join(settings, now, out);
            return true;
        }
        let Some(m) = self.members.remove(member_id) else { return false };
        if let Some(p) = m.awaiting_join {
            out.push((p.ticket, join_error_at(ErrorCode::UnknownMemberId, member_id, p.version).into()));
        }
        if let Some(p) = m.awaiting_sync {
            out.push((p.ticket, sync_answer(ErrorCode::UnknownMemberId, p.version, self, Bytes::new()).into()));
        }
        if self.leader.as_deref() == Some(member_id) {
            self.leader = None;
        }
        match self.state {
            ClassicState::Stable | ClassicState::CompletingRebalance => self.prepare_rebalance(settings, now, out),
            _ => {}
        }
        self.maybe_complete_join(settings, now, out);
        true
    }

    fn add_member(&mut self, mut m: ClassicMember, settings: &ClassicSettings, now: i64, out: &mut Answers) {
        m.order = self.next_order;
        self.next_order += 1;
        if self.leader.is_none() {
            self.leader = Some(m.member_id.clone());
        }
        self.members.insert(m.member_id.clone(), m);
        if self.state != ClassicState::PreparingRebalance {
            self.prepare_rebalance(settings, now, out);
        }
        self.maybe_complete_join(settings, now, out);
    }

    /// JoinGroup. `new_member_id` is the id a member without one gets.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn join(
        &mut self,
        from: Client<'_>,
        r: &JoinGroupRequest,
        version: i16,
        parked: Parked,
        new_member_id: String,
        settings: &ClassicSettings,
        now: i64,
        out: &mut Answers,
    ) -> Outcome<JoinGroupResponse> {
        let protocols: Vec<(String, Bytes)> =
            r.protocols.iter().map(|p| (p.name.clone(), p.metadata.clone())).collect();
        let rebalance_timeout_ms = if version == 0 { r.session_timeout_ms } else { r.rebalance_timeout_ms };
        let fresh = |member_id: String| ClassicMember {
            member_id,
            instance_id: r.group_instance_id.clone(),
            client_id: from.id.to_owned(),
            client_host: from.host.to_owned(),
            session_timeout_ms: r.session_timeout_ms,
            rebalance_timeout_ms,
            protocol_type: r.protocol_type.clone(),
            protocols: protocols.clone(),
            assignment: Bytes::new(),
            awaiting_join: Some(parked),
            awaiting_sync: None,
            synced: false,
            session_deadline: now + i64::from(r.session_timeout_ms),
            order: 0,
        };
        let err = |code: ErrorCode| Outcome::Now(join_error_at(code, &r.member_id, version));
        if r.member_id.is_empty() {
            if !self.supports(&r.protocol_type, &protocols, None) {
                return err(ErrorCode::InconsistentGroupProtocol);
            }
            let existing_static = r.group_instance_id.as_deref().and_then(|i| self.static_member(i)).cloned();
            if existing_static.is_none() && self.members.len() + self.pending.len() >= settings.max_size {
                return err(ErrorCode::GroupMaxSizeReached);
            }
            if let Some(old_id) = existing_static {
                return self.replace_static(&old_id, fresh(new_member_id), version, settings, now, out);
            }
            if r.group_instance_id.is_none() && version >= 4 {
                self.pending.insert(new_member_id.clone(), now + i64::from(r.session_timeout_ms));
                return Outcome::Now(join_error_at(ErrorCode::MemberIdRequired, &new_member_id, version));
            }
            self.add_member(fresh(new_member_id), settings, now, out);
            return Outcome::Parked;
        }
        if self.pending.contains_key(&r.member_id) {
            if !self.supports(&r.protocol_type, &protocols, None) {
                return err(ErrorCode::InconsistentGroupProtocol);
            }
            self.pending.remove(&r.member_id);
            self.add_member(fresh(r.member_id.clone()), settings, now, out);
            return Outcome::Parked;
        }
        let code = self.validate_member(&r.member_id, r.group_instance_id.as_deref());
        if code != ErrorCode::None {
            return err(code);
        }
        if !self.supports(&r.protocol_type, &protocols, Some(&r.member_id)) {
            return err(ErrorCode::InconsistentGroupProtocol);
        }
        let Some(member) = self.members.get_mut(&r.member_id) else { return err(ErrorCode::UnknownMemberId) };
        let same = member.protocols == protocols && member.protocol_type == r.protocol_type;
        // A join answered earlier and sent again: the old request gets nothing.
        member.awaiting_join = None;
        member.session_timeout_ms = r.session_timeout_ms;
        member.rebalance_timeout_ms = rebalance_timeout_ms;
        member.session_deadline = now + i64::from(r.session_timeout_ms);
        match self.state {
            ClassicState::PreparingRebalance => {
                member.protocols = protocols;
                member.awaiting_join = Some(parked);
                self.maybe_complete_join(settings, now, out);
                Outcome::Parked
            }
            ClassicState::CompletingRebalance | ClassicState::Stable
                if same
                    && (self.state == ClassicState::CompletingRebalance
                        || self.leader.as_deref() != Some(r.member_id.as_str())) =>
            {
                Outcome::Now(self.join_answer(&r.member_id, version, false))
            }
            _ => {
                member.protocols = protocols;
                member.awaiting_join = Some(parked);
                self.prepare_rebalance(settings, now, out);
                self.maybe_complete_join(settings, now, out);
                Outcome::Parked
            }
        }
    }

    /// A static member joining again without its member id: the new id replaces the
    /// old one (which is fenced); a stable group with unchanged metadata does not
    /// rebalance.
    fn replace_static(
        &mut self,
        old_id: &str,
        mut member: ClassicMember,
        version: i16,
        settings: &ClassicSettings,
        now: i64,
        out: &mut Answers,
    ) -> Outcome<JoinGroupResponse> {
        let Some(old) = self.members.remove(old_id) else {
            return Outcome::Now(join_error_at(ErrorCode::UnknownMemberId, "", version));
        };
        if let Some(p) = old.awaiting_join {
            out.push((p.ticket, join_error_at(ErrorCode::FencedInstanceId, old_id, p.version).into()));
        }
        if let Some(p) = old.awaiting_sync {
            out.push((p.ticket, sync_answer(ErrorCode::FencedInstanceId, p.version, self, Bytes::new()).into()));
        }
        let unchanged = old.protocols == member.protocols && old.protocol_type == member.protocol_type;
        member.order = old.order;
        member.assignment = old.assignment.clone();
        member.synced = old.synced;
        let id = member.member_id.clone();
        if self.leader.as_deref() == Some(old_id) {
            self.leader = Some(id.clone());
        }
        match self.state {
            ClassicState::Stable if unchanged => {
                member.awaiting_join = None;
                self.members.insert(id.clone(), member);
                Outcome::Now(self.join_answer(&id, version, true))
            }
            ClassicState::PreparingRebalance => {
                self.members.insert(id, member);
                self.maybe_complete_join(settings, now, out);
                Outcome::Parked
            }
            _ => {
                self.members.insert(id, member);
                self.prepare_rebalance(settings, now, out);
                self.maybe_complete_join(settings, now, out);
                Outcome::Parked
            }
        }
    }

    /// SyncGroup.
    pub(crate) fn sync(
        &mut self,
        r: &SyncGroupRequest,
        version: i16,
        parked: Parked,
        out: &mut Answers,
    ) -> Outcome<SyncGroupResponse> {
        let err = |code: ErrorCode| Outcome::Now(SyncGroupResponse::default().with_error_code(code.code()));
        let code = self.validate_member(&r.member_id, r.group_instance_id.as_deref());
        if code != ErrorCode::None {
            return err(code);
        }
        if r.generation_id != self.generation {
            return err(ErrorCode::IllegalGeneration);
        }
        let inconsistent = |asked: &Option<String>, have: &Option<String>| asked.is_some() && asked != have;
        if inconsistent(&r.protocol_type, &self.protocol_type) || inconsistent(&r.protocol_name, &self.protocol_name) {
            return err(ErrorCode::InconsistentGroupProtocol);
        }
        match self.state {
            ClassicState::Empty => err(ErrorCode::UnknownMemberId),
            ClassicState::PreparingRebalance => err(ErrorCode::RebalanceInProgress),
            ClassicState::Stable => {
                let a = self.members.get(&r.member_id).map(|m| m.assignment.clone()).unwrap_or_default();
                Outcome::Now(sync_answer(ErrorCode::None, version, self, a))
            }
            ClassicState::CompletingRebalance => {
                if let Some(m) = self.members.get_mut(&r.member_id) {
                    m.synced = true;
                    m.awaiting_sync = Some(parked);
                }
                if self.leader.as_deref() == Some(r.member_id.as_str()) {
                    let given: BTreeMap<&str, &Bytes> =
                        r.assignments.iter().map(|a| (a.member_id.as_str(), &a.assignment)).collect();
                    for m in self.members.values_mut() {
                        m.assignment = given.get(m.member_id.as_str()).map(|b| (*b).clone()).unwrap_or_default();
                    }
                    self.state = ClassicState::Stable;
                    self.sync_deadline = None;
                    let waiting: Vec<(Parked, Bytes)> = self
                        .members
                        .values_mut()
                        .filter_map(|m| m.awaiting_sync.take().map(|p| (p, m.assignment.clone())))
                        .collect();
                    for (p, a) in waiting {
                        out.push((p.ticket, sync_answer(ErrorCode::None, p.version, self, a).into()));
                    }
                }
                Outcome::Parked
            }
        }
    }

    /// Heartbeat.
    pub(crate) fn heartbeat(&mut self, r: &HeartbeatRequest, now: i64) -> ErrorCode {
        if self.state == ClassicState::Empty {
            return ErrorCode::UnknownMemberId;
        }
        let code = self.validate_member(&r.member_id, r.group_instance_id.as_deref());
        if code != ErrorCode::None {
            return code;
        }
        if r.generation_id != self.generation {
            return ErrorCode::IllegalGeneration;
        }
        if let Some(m) = self.members.get_mut(&r.member_id) {
            m.session_deadline = now + i64::from(m.session_timeout_ms);
        }
        if self.state == ClassicState::PreparingRebalance { ErrorCode::RebalanceInProgress } else { ErrorCode::None }
    }

    /// LeaveGroup: one member (v0-2, top-level error) or several (v3+, one error each).
    pub(crate) fn leave(
        &mut self,
        r: &LeaveGroupRequest,
        version: i16,
        settings: &ClassicSettings,
        now: i64,
        out: &mut Answers,
    ) -> LeaveGroupResponse {
        if version < 3 {
            let code = if self.pending.contains_key(&r.member_id) || self.members.contains_key(&r.member_id) {
                self.remove_member(&r.member_id, settings, now, out);
                ErrorCode::None
            } else {
                ErrorCode::UnknownMemberId
            };
            return LeaveGroupResponse::default().with_error_code(code.code());
        }
        let members = r
            .members
            .iter()
            .map(|m| {
                let target = match (m.member_id.as_str(), m.group_instance_id.as_deref()) {
                    ("", Some(i)) => self.static_member(i).cloned().ok_or(ErrorCode::UnknownMemberId),
                    (id, Some(i)) => match self.validate_member(id, Some(i)) {
                        ErrorCode::None => Ok(id.to_owned()),
                        code => Err(code),
                    },
                    (id, None) if self.pending.contains_key(id) || self.members.contains_key(id) => Ok(id.to_owned()),
                    _ => Err(ErrorCode::UnknownMemberId),
                };
                let code = match target {
                    Ok(id) => {
                        self.remove_member(&id, settings, now, out);
                        ErrorCode::None
                    }
                    Err(code) => code,
                };
                MemberResponse::default()
                    .with_member_id(m.member_id.clone())
                    .with_group_instance_id(m.group_instance_id.clone())
                    .with_error_code(code.code())
            })
            .collect();
        LeaveGroupResponse::default().with_members(members)
    }

    /// Expires sessions, pending member ids and barriers. Returns the members removed.
    pub(crate) fn tick(&mut self, settings: &ClassicSettings, now: i64, out: &mut Answers) -> Vec<String> {
        let mut gone = Vec::new();
        let expired: Vec<String> = self.pending.iter().filter(|(_, d)| **d <= now).map(|(id, _)| id.clone()).collect();
        for id in expired {
            self.remove_member(&id, settings, now, out);
        }
        let expired: Vec<String> = self
            .members
            .values()
            .filter(|m| m.awaiting_join.is_none() && m.awaiting_sync.is_none() && m.session_deadline <= now)
            .map(|m| m.member_id.clone())
            .collect();
        for id in expired {
            if self.remove_member(&id, settings, now, out) {
                gone.push(id);
            }
        }
        self.maybe_complete_join(settings, now, out);
        if self.state == ClassicState::CompletingRebalance && self.sync_deadline.is_some_and(|d| d <= now) {
            let unsynced: Vec<String> =
                self.members.values().filter(|m| !m.synced).map(|m| m.member_id.clone()).collect();
            for id in unsynced {
                if let Some(m) = self.members.remove(&id) {
                    gone.push(id.clone());
                    if let Some(p) = m.awaiting_sync {
                        out.push((
                            p.ticket,
                            sync_answer(ErrorCode::UnknownMemberId, p.version, self, Bytes::new()).into(),
                        ));
                    }
                }
            }
            self.prepare_rebalance(settings, now, out);
            self.maybe_complete_join(settings, now, out);
        }
        gone
    }

    /// Checks a commit's generation and member, as Kafka's `ClassicGroup.validateOffsetCommit`
    /// (a transactional commit is not refused for the group's state).
    pub(crate) fn check_commit(
        &self,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        transactional: bool,
    ) -> ErrorCode {
        if generation < 0 && self.state == ClassicState::Empty {
            return ErrorCode::None;
        }
        if generation >= 0 || !member_id.is_empty() || instance_id.is_some() {
            let code = self.validate_member(member_id, instance_id);
            if code != ErrorCode::None {
                return code;
            }
            if generation != self.generation {
                return ErrorCode::IllegalGeneration;
            }
        } else if !transactional && self.state != ClassicState::Empty {
            // No member id and no generation: only an empty group takes it.
            return ErrorCode::UnknownMemberId;
        }
        if !transactional && self.state == ClassicState::CompletingRebalance {
            ErrorCode::RebalanceInProgress
        } else {
            ErrorCode::None
        }
    }
}
