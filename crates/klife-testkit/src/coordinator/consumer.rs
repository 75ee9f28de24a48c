//! KIP-848 consumer groups (ConsumerGroupHeartbeat): members with epochs, a group epoch,
//! a target assignment computed by a server-side assignor, and each member reconciled
//! towards its target as Kafka's `CurrentAssignmentBuilder` does: a partition leaves its
//! owner (UNREVOKED_PARTITIONS) before another member gets it (UNRELEASED_PARTITIONS),
//! so that no partition is ever owned by two members.

use std::collections::{BTreeMap, BTreeSet};

use klife_protocol::messages::ConsumerGroupHeartbeatRequest;
use klife_protocol::messages::consumer_group_heartbeat_request::TopicPartitions as OwnedPartitions;
use klife_protocol::{ErrorCode, Uuid};

use super::assignor::{self, MemberSpec, Partitions};
use super::regex::Regex;
use super::{Client, GroupError, Topics};

/// Where a member is in its reconciliation, as Kafka names the states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReconciliationState {
    /// At the target epoch with its whole target assignment.
    Stable,
    /// Asked to revoke partitions; stays at its epoch until it acknowledges.
    UnrevokedPartitions,
    /// At the target epoch, waiting for partitions other members still own.
    UnreleasedPartitions,
}

/// One member of a consumer group.
#[derive(Debug, Clone)]
pub(crate) struct ConsumerMember {
    pub(crate) member_id: String,
    pub(crate) instance_id: Option<String>,
    pub(crate) rack_id: Option<String>,
    /// The client id and address of its last heartbeat.
    pub(crate) client_id: String,
    pub(crate) client_host: String,
    pub(crate) epoch: i32,
    pub(crate) previous_epoch: i32,
    pub(crate) state: ReconciliationState,
    pub(crate) rebalance_timeout_ms: i32,
    pub(crate) server_assignor: Option<String>,
    pub(crate) subscribed_names: BTreeSet<String>,
    pub(crate) regex: Option<String>,
    pub(crate) assigned: Partitions,
    pub(crate) pending_revocation: Partitions,
    /// The member epoch at which it was given each partition it owns (assigned or
    /// pending revocation): KIP-1251's assignment epochs, which a commit at an older
    /// epoch is checked against.
    pub(crate) assigned_at: BTreeMap<(Uuid, i32), i32>,
    pub(crate) session_deadline: i64,
    pub(crate) revocation_deadline: Option<i64>,
}

impl ConsumerMember {
    fn new(member_id: String) -> ConsumerMember {
        ConsumerMember {
            member_id,
            instance_id: None,
            rack_id: None,
            client_id: String::new(),
            client_host: String::new(),
            epoch: 0,
            previous_epoch: 0,
            state: ReconciliationState::Stable,
            rebalance_timeout_ms: -1,
            server_assignor: None,
            subscribed_names: BTreeSet::new(),
            regex: None,
            assigned: Partitions::new(),
            pending_revocation: Partitions::new(),
            assigned_at: BTreeMap::new(),
            session_deadline: 0,
            revocation_deadline: None,
        }
    }

    /// The topics this member subscribes to that exist: its names, and the topics its
    /// regex was resolved to (none before the group resolved it).
    fn subscribed_topics(&self, topics: &Topics, resolved: &BTreeMap<String, BTreeSet<String>>) -> BTreeMap<Uuid, i32> {
        let matched = self.regex.as_ref().and_then(|r| resolved.get(r));
        topics
            .iter()
            .filter(|(name, _)| self.subscribed_names.contains(*name) || matched.is_some_and(|m| m.contains(*name)))
            .map(|(_, (id, n))| (*id, *n))
            .collect()
    }

    fn update_epoch(&mut self, epoch: i32) {
        self.previous_epoch = self.epoch;
        self.epoch = epoch;
    }

    /// Keeps the assignment epoch of every partition still owned and gives the ones
    /// new to the member its current epoch.
    fn track_assignment_epochs(&mut self) {
        let owned: BTreeSet<(Uuid, i32)> = self
            .assigned
            .iter()
            .chain(self.pending_revocation.iter())
            .flat_map(|(t, ps)| ps.iter().map(move |p| (*t, *p)))
            .collect();
        self.assigned_at.retain(|tp, _| owned.contains(tp));
        for tp in owned {
            self.assigned_at.entry(tp).or_insert(self.epoch);
        }
    }
}

/// A consumer group.
///
/// As in Kafka 4.3 and later (KAFKA-20268), a new group starts at group epoch 1 with a
/// target assignment of epoch 1 computed at no time, so the first member's join bumps
/// the epoch to 2 and is assigned at once.
#[derive(Debug, Clone)]
pub(crate) struct ConsumerGroup {
    pub(crate) epoch: i32,
    pub(crate) assignment_epoch: i32,
    /// When the target assignment was last computed; `None` (Kafka's timestamp 0)
    /// for a new group and a group whose last member went: the next bump is assigned
    /// at once rather than after the assignment interval.
    assignment_time: Option<i64>,
    pub(crate) target: BTreeMap<String, Partitions>,
    pub(crate) members: BTreeMap<String, ConsumerMember>,
    /// The subscribed topics as last seen: a change (a new topic matching a regex, more
    /// partitions) bumps the group epoch.
    subscription_metadata: BTreeMap<Uuid, i32>,
    /// The members' regexes and the topics they matched when last resolved. As in
    /// Kafka, where resolution runs in the background after the heartbeat that brought
    /// a new regex, a regex counts from the group's next heartbeat on, which resolves
    /// it (and every other) again and bumps the group epoch when the result changed.
    resolved_regexes: BTreeMap<String, BTreeSet<String>>,
}

impl Default for ConsumerGroup {
    fn default() -> Self {
        ConsumerGroup {
            epoch: 1,
            assignment_epoch: 1,
            assignment_time: None,
            target: BTreeMap::new(),
            members: BTreeMap::new(),
            subscription_metadata: BTreeMap::new(),
            resolved_regexes: BTreeMap::new(),
        }
    }
}

/// Settings the heartbeat answers and timers use.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ConsumerSettings {
    pub(crate) session_timeout_ms: i64,
    /// `group.consumer.assignment.interval.ms`: the least time between two target
    /// assignments of a group.
    pub(crate) assignment_interval_ms: i64,
    pub(crate) max_size: usize,
}

/// What a heartbeat came to: the answer's member id, epoch and assignment (when sent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HeartbeatAnswer {
    pub(crate) member_id: String,
    pub(crate) epoch: i32,
    pub(crate) assignment: Option<Partitions>,
}

fn is_subset(owned: Option<&[OwnedPartitions]>, assigned: &Partitions) -> bool {
    owned.is_some_and(|o| {
        o.iter().all(|t| t.partitions.iter().all(|p| assigned.get(&t.topic_id).is_some_and(|s| s.contains(p))))
    })
}

fn intersects(owned: Option<&[OwnedPartitions]>, revoked: &Partitions) -> bool {
    match owned {
        // Not told: assume the member still owns them.
        None => true,
        Some(o) => {
            o.iter().any(|t| t.partitions.iter().any(|p| revoked.get(&t.topic_id).is_some_and(|s| s.contains(p))))
        }
    }
}

fn invalid(message: &str) -> GroupError {
    GroupError::new(ErrorCode::InvalidRequest, message)
}

/// Kafka's checks of a heartbeat's fields before anything else.
pub(crate) fn validate(r: &ConsumerGroupHeartbeatRequest, version: i16) -> Result<(), GroupError> {
    if r.group_id.is_empty() {
        return Err(invalid("GroupId can't be empty."));
    }
    if r.instance_id.as_deref() == Some("") {
        return Err(invalid("InstanceId can't be empty."));
    }
    if r.rack_id.as_deref() == Some("") {
        return Err(invalid("RackId can't be empty."));
    }
    if r.member_id.is_empty() && (version >= 1 || r.member_epoch > 0 || r.member_epoch == -1) {
        return Err(invalid("MemberId can't be empty."));
    }
    match r.member_epoch {
        0 => {
            if r.rebalance_timeout_ms == -1 {
                return Err(invalid("RebalanceTimeoutMs must be provided in first request."));
            }
            if !r.topic_partitions.as_ref().is_some_and(Vec::is_empty) {
                return Err(invalid("TopicPartitions must be empty when (re-)joining."));
            }
            if r.subscribed_topic_names.is_none() && r.subscribed_topic_regex.is_none() {
                return Err(invalid("SubscribedTopicNames or SubscribedTopicRegex must be set in first request."));
            }
        }
        -2 if r.instance_id.is_none() => return Err(invalid("InstanceId can't be null.")),
        e if e < -2 => return Err(invalid("MemberEpoch is invalid.")),
        _ => {}
    }
    if let Some(a) = r.server_assignor.as_deref().filter(|a| !assignor::ASSIGNORS.contains(a)) {
        return Err(GroupError::new(
            ErrorCode::UnsupportedAssignor,
            &format!("ServerAssignor {a} is not supported. Supported assignors: uniform, range."),
        ));
    }
    if let Some(re) = r.subscribed_topic_regex.as_deref().filter(|r| !r.is_empty()) {
        if let Err(e) = Regex::new(re) {
            return Err(GroupError::new(
                ErrorCode::InvalidRegularExpression,
                &format!("SubscribedTopicRegex `{re}` is not a valid regular expression: {}.", e.0),
            ));
        }
    }
    Ok(())
}

fn fenced(received: i32, known: i32) -> GroupError {
    let which = if received > known { "greater" } else { "smaller" };
    GroupError::new(
        ErrorCode::FencedMemberEpoch,
        &format!(
            "The consumer group member has a {which} member epoch ({received}) than the one known by the group coordinator ({known}). The member must abandon all its partitions and rejoin."
        ),
    )
}

fn check_epoch(member: &ConsumerMember, received: i32, owned: Option<&[OwnedPartitions]>) -> Result<(), GroupError> {
    if received > member.epoch {
        return Err(fenced(received, member.epoch));
    }
    if received < member.epoch && (received != member.previous_epoch || !is_subset(owned, &member.assigned)) {
        return Err(fenced(received, member.epoch));
    }
    Ok(())
}

impl ConsumerGroup {
    /// Who owns each partition now (assigned or pending revocation).
    pub(crate) fn owners(&self) -> BTreeMap<(Uuid, i32), String> {
        let mut out = BTreeMap::new();
        for m in self.members.values() {
            for (t, ps) in m.assigned.iter().chain(m.pending_revocation.iter()) {
                for p in ps {
                    out.insert((*t, *p), m.member_id.clone());
                }
            }
        }
        out
    }

    fn static_member(&self, instance_id: &str) -> Option<&ConsumerMember> {
        self.members.values().find(|m| m.instance_id.as_deref() == Some(instance_id))
    }

    /// Kafka's state of the group (`ConsumerGroup.maybeUpdateGroupState`): `Empty`
    /// without members, `Assigning` while the target assignment is behind the group
    /// epoch, `Reconciling` while a member is not Stable at the target's epoch, else
    /// `Stable`.
    pub(crate) fn state_name(&self) -> &'static str {
        if self.members.is_empty() {
            "Empty"
        } else if self.epoch > self.assignment_epoch {
            "Assigning"
        } else if self
            .members
            .values()
            .any(|m| m.state != ReconciliationState::Stable || m.epoch != self.assignment_epoch)
        {
            "Reconciling"
        } else {
            "Stable"
        }
    }

    /// Whether the group subscribes to `topic`: a member names it, or a member's regex
    /// was resolved to it (Kafka's `isSubscribedToTopic`, over `subscribedTopicNames`).
    pub(crate) fn is_subscribed_to(&self, topic: &str) -> bool {
        self.members.values().any(|m| m.subscribed_names.contains(topic))
            || self
                .members
                .values()
                .filter_map(|m| m.regex.as_ref())
                .any(|r| self.resolved_regexes.get(r).is_some_and(|topics| topics.contains(topic)))
    }

    /// The assignor the group runs: the one most members ask for, `uniform` if none.
    pub(crate) fn assignor_name(&self) -> String {
        let mut votes: BTreeMap<&str, usize> = BTreeMap::new();
        for m in self.members.values() {
            if let Some(a) = m.server_assignor.as_deref() {
                *votes.entry(a).or_default() += 1;
            }
        }
        votes
            .into_iter()
            .max_by_key(|(name, n)| (*n, std::cmp::Reverse(*name)))
            .map_or("uniform".to_owned(), |(n, _)| n.to_owned())
    }

    /// Resolves the members' regexes against the topics; bumps the group epoch if any
    /// result changed.
    fn resolve_regexes(&mut self, topics: &Topics) {
        let resolved: BTreeMap<String, BTreeSet<String>> = self
            .members
            .values()
            .filter_map(|m| m.regex.clone())
            .map(|r| {
                let matched = Regex::new(&r)
                    .map(|re| topics.keys().filter(|t| re.full_match(t)).cloned().collect())
                    .unwrap_or_default();
                (r, matched)
            })
            .collect();
        if resolved != self.resolved_regexes {
            self.resolved_regexes = resolved;
            if self.refresh_metadata(topics) {
                self.epoch += 1;
            }
        }
    }

    fn refresh_metadata(&mut self, topics: &Topics) -> bool {
        let metadata: BTreeMap<Uuid, i32> =
            self.members.values().flat_map(|m| m.subscribed_topics(topics, &self.resolved_regexes)).collect();
        let changed = metadata != self.subscription_metadata;
        self.subscription_metadata = metadata;
        changed
    }

    /// Computes a new target when the group epoch is ahead of it, as Kafka 4.4 does on
    /// every heartbeat: at once when the last target was computed at no time (a new or
    /// emptied group) or the interval is 0, else once `assignment_interval_ms` passed
    /// since the last one. Until then members reconcile towards the old target.
    fn maybe_compute_target(&mut self, topics: &Topics, settings: &ConsumerSettings, now: i64) {
        let due = match self.assignment_time {
            None => true,
            Some(at) => {
                settings.assignment_interval_ms <= 0 || now >= at.saturating_add(settings.assignment_interval_ms)
            }
        };
        if self.epoch > self.assignment_epoch && due {
            self.compute_target(topics);
            self.assignment_time = Some(now);
        }
    }

    fn compute_target(&mut self, topics: &Topics) {
        let specs: BTreeMap<String, MemberSpec> = self
            .members
            .values()
            .map(|m| {
                let previous = self.target.get(&m.member_id).cloned().unwrap_or_default();
                (
                    m.member_id.clone(),
                    MemberSpec { topics: m.subscribed_topics(topics, &self.resolved_regexes), previous },
                )
            })
            .collect();
        self.target = assignor::assign(&self.assignor_name(), &specs);
        self.assignment_epoch = self.epoch;
    }

    /// Reconciles `member` (not in `self.members` while this runs... it may be: its old
    /// record counts as an owner, as in Kafka) towards its target.
    fn reconcile(&self, member: &mut ConsumerMember, owned: Option<&[OwnedPartitions]>) {
        let target_epoch = self.assignment_epoch;
        match member.state {
            ReconciliationState::Stable if member.epoch == target_epoch => {}
            ReconciliationState::Stable | ReconciliationState::UnreleasedPartitions => {
                self.next_assignment(member, member.epoch, owned);
            }
            ReconciliationState::UnrevokedPartitions => {
                if !intersects(owned, &member.pending_revocation) {
                    self.next_assignment(member, member.epoch + 1, owned);
                }
            }
        }
    }

    fn next_assignment(&self, member: &mut ConsumerMember, epoch: i32, owned: Option<&[OwnedPartitions]>) {
        let empty = Partitions::new();
        let target = self.target.get(&member.member_id).unwrap_or(&empty);
        let owners = self.owners();
        let mut assigned = Partitions::new();
        let mut revoking = Partitions::new();
        let mut adding = Partitions::new();
        let mut unreleased = false;
        let topics: BTreeSet<Uuid> = target.keys().chain(member.assigned.keys()).copied().collect();
        for t in topics {
            let want = target.get(&t).cloned().unwrap_or_default();
            let have = member.assigned.get(&t).cloned().unwrap_or_default();
            let keep: BTreeSet<i32> = have.intersection(&want).copied().collect();
            let revoke: BTreeSet<i32> = have.difference(&keep).copied().collect();
            let mut add: BTreeSet<i32> = want.difference(&keep).copied().collect();
            let before = add.len();
            add.retain(|p| !owners.contains_key(&(t, *p)));
            unreleased |= add.len() != before;
            if !keep.is_empty() {
                assigned.insert(t, keep);
            }
            if !revoke.is_empty() {
                revoking.insert(t, revoke);
            }
            if !add.is_empty() {
                adding.insert(t, add);
            }
        }
        if !revoking.is_empty() && intersects(owned, &revoking) {
            member.state = ReconciliationState::UnrevokedPartitions;
            member.update_epoch(epoch);
            member.assigned = assigned;
            member.pending_revocation = revoking;
            member.track_assignment_epochs();
            return;
        }
        for (t, ps) in adding {
            assigned.entry(t).or_default().extend(ps);
        }
        member.state = if unreleased { ReconciliationState::UnreleasedPartitions } else { ReconciliationState::Stable };
        member.update_epoch(self.assignment_epoch);
        member.assigned = assigned;
        member.pending_revocation = Partitions::new();
        member.track_assignment_epochs();
    }

    /// Removes a member (left, fenced or expired) and bumps the group epoch. A group
    /// left empty takes the new epoch as its target's, computed at no time, as Kafka
    /// does: its next member is assigned at once.
    pub(crate) fn remove_member(&mut self, member_id: &str) -> bool {
        if self.members.remove(member_id).is_some() {
            self.target.remove(member_id);
            self.epoch += 1;
            if self.members.is_empty() {
                self.assignment_epoch = self.epoch;
                self.assignment_time = None;
            }
            true
        } else {
            false
        }
    }

    /// A heartbeat that is not a leave. `r` passed [`validate`].
    pub(crate) fn heartbeat(
        &mut self,
        from: Client<'_>,
        r: &ConsumerGroupHeartbeatRequest,
        topics: &Topics,
        settings: &ConsumerSettings,
        now: i64,
    ) -> Result<HeartbeatAnswer, GroupError> {
        let joining = r.member_epoch == 0;
        let owned = r.topic_partitions.as_deref();
        self.resolve_regexes(topics);
        let member_id = if r.member_id.is_empty() { super::random_id() } else { r.member_id.clone() };
        let known = self.members.contains_key(&member_id)
            || r.instance_id.as_deref().is_some_and(|i| self.static_member(i).is_some());
        if !known && self.members.len() >= settings.max_size {
            return Err(GroupError::new(
                ErrorCode::GroupMaxSizeReached,
                &format!("The consumer group has reached its maximum capacity of {} members.", settings.max_size),
            ));
        }
        let mut replaced: Option<String> = None;
        let old: Option<ConsumerMember> = match r.instance_id.as_deref() {
            None => match self.members.get(&member_id) {
                Some(m) => {
                    // Kafka 4.2 and later take a join (epoch 0) under a known member
                    // id as that member starting over: it keeps its record and is
                    // answered its epoch and whole assignment.
                    if !joining {
                        check_epoch(m, r.member_epoch, owned)?;
                    }
                    Some(m.clone())
                }
                None if joining => None,
                None => {
                    return Err(GroupError::new(
                        ErrorCode::UnknownMemberId,
                        &format!("Member {member_id} is not a member of group {}.", r.group_id),
                    ));
                }
            },
            Some(instance) => match self.static_member(instance) {
                None if joining => match self.members.get(&member_id) {
                    Some(m) => {
                        check_epoch(m, 0, owned)?;
                        Some(m.clone())
                    }
                    None => None,
                },
                None => {
                    return Err(GroupError::new(
                        ErrorCode::UnknownMemberId,
                        &format!("Instance id {instance} is unknown."),
                    ));
                }
                Some(existing) if joining => {
                    if existing.epoch != -2 {
                        return Err(GroupError::new(
                            ErrorCode::UnreleasedInstanceId,
                            &format!(
                                "Static member {} with instance id {instance} cannot join the group because the instance id is owned by member {}.",
                                member_id, existing.member_id
                            ),
                        ));
                    }
                    // The rejoining instance takes over the old member's assignment.
                    let mut m = existing.clone();
                    replaced = Some(existing.member_id.clone());
                    m.member_id = member_id.clone();
                    m.epoch = 0;
                    m.previous_epoch = 0;
                    Some(m)
                }
                Some(existing) => {
                    if existing.member_id != member_id {
                        return Err(GroupError::new(
                            ErrorCode::FencedInstanceId,
                            &format!(
                                "Static member {member_id} with instance id {instance} was fenced by member {}.",
                                existing.member_id
                            ),
                        ));
                    }
                    check_epoch(existing, r.member_epoch, owned)?;
                    Some(existing.clone())
                }
            },
        };
        if let Some(old_id) = &replaced {
            if let Some(t) = self.target.remove(old_id) {
                self.target.insert(member_id.clone(), t);
            }
            self.members.remove(old_id);
        }
        let is_new = old.is_none();
        let previous = old.clone().unwrap_or_else(|| ConsumerMember::new(member_id.clone()));
        let mut member = previous.clone();
        if let Some(i) = &r.instance_id {
            member.instance_id = Some(i.clone());
        }
        member.client_id = from.id.to_owned();
        member.client_host = from.host.to_owned();
        if let Some(rack) = &r.rack_id {
            member.rack_id = Some(rack.clone());
        }
        if r.rebalance_timeout_ms != -1 {
            member.rebalance_timeout_ms = r.rebalance_timeout_ms;
        }
        if let Some(a) = &r.server_assignor {
            member.server_assignor = Some(a.clone());
        }
        if let Some(names) = &r.subscribed_topic_names {
            member.subscribed_names = names.iter().cloned().collect();
        }
        if let Some(re) = &r.subscribed_topic_regex {
            member.regex = if re.is_empty() { None } else { Some(re.clone()) };
        }
        let subscription_changed = is_new
            || member.subscribed_names != previous.subscribed_names
            || member.regex != previous.regex
            || member.server_assignor != previous.server_assignor;
        self.members.insert(member_id.clone(), member.clone());
        let metadata_changed = self.refresh_metadata(topics);
        if subscription_changed || metadata_changed {
            self.epoch += 1;
        }
        self.maybe_compute_target(topics, settings, now);
        // Reconcile against the group as it was (the member's old record owns what it
        // owned), as Kafka does.
        if let Some(old) = &old {
            self.members.insert(member_id.clone(), old.clone());
        } else {
            self.members.remove(&member_id);
        }
        let before_state = member.state;
        let before_epoch = member.epoch;
        self.reconcile(&mut member, owned);
        member.session_deadline = now + settings.session_timeout_ms;
        if member.state == ReconciliationState::UnrevokedPartitions {
            if before_state != ReconciliationState::UnrevokedPartitions
                || before_epoch != member.epoch
                || member.revocation_deadline.is_none()
            {
                member.revocation_deadline = Some(now + i64::from(member.rebalance_timeout_ms.max(0)));
            }
        } else {
            member.revocation_deadline = None;
        }
        let full = joining || (r.rebalance_timeout_ms != -1 && r.subscribed_topic_names.is_some() && owned.is_some());
        let changed = old.as_ref().is_none_or(|o| o.assigned != member.assigned);
        let answer = HeartbeatAnswer {
            member_id: member_id.clone(),
            epoch: member.epoch,
            assignment: (full || changed).then(|| member.assigned.clone()),
        };
        self.members.insert(member_id, member);
        Ok(answer)
    }

    /// A leave (epoch -1, or -2 for a static member that will come back).
    pub(crate) fn leave(&mut self, r: &ConsumerGroupHeartbeatRequest) -> Result<HeartbeatAnswer, GroupError> {
        let member_id = match r.instance_id.as_deref() {
            None => {
                if !self.members.contains_key(&r.member_id) {
                    return Err(GroupError::new(
                        ErrorCode::UnknownMemberId,
                        &format!("Member {} is not a member of group {}.", r.member_id, r.group_id),
                    ));
                }
                r.member_id.clone()
            }
            Some(instance) => {
                let Some(m) = self.static_member(instance) else {
                    return Err(GroupError::new(
                        ErrorCode::UnknownMemberId,
                        &format!("Instance id {instance} is unknown."),
                    ));
                };
                if m.member_id != r.member_id {
                    return Err(GroupError::new(
                        ErrorCode::FencedInstanceId,
                        &format!(
                            "Static member {} with instance id {instance} was fenced by member {}.",
                            r.member_id, m.member_id
                        ),
                    ));
                }
                m.member_id.clone()
            }
        };
        if r.member_epoch == -2 {
            if let Some(m) = self.members.get_mut(&member_id) {
                // Keeps its assignment (and its partitions) for a rejoin under the same
                // instance id; the session timeout still applies.
                m.update_epoch(-2);
            }
        } else {
            self.remove_member(&member_id);
        }
        Ok(HeartbeatAnswer { member_id, epoch: r.member_epoch, assignment: None })
    }

    /// Expires sessions and fences members that did not revoke in time. Returns the
    /// members removed.
    pub(crate) fn tick(&mut self, now: i64) -> Vec<String> {
        let gone: Vec<String> = self
            .members
            .values()
            .filter(|m| m.session_deadline <= now || m.revocation_deadline.is_some_and(|d| d <= now))
            .map(|m| m.member_id.clone())
            .collect();
        for id in &gone {
            self.remove_member(id);
        }
        gone
    }

    /// Checks a fetch's member and epoch (OffsetFetch v9+) as Kafka does: any epoch but
    /// the member's is STALE_MEMBER_EPOCH, newer ones included
    /// (`ConsumerGroup.validateMemberEpoch`).
    pub(crate) fn check_member_epoch(&self, member_id: &str, epoch: i32) -> ErrorCode {
        match self.members.get(member_id) {
            None => ErrorCode::UnknownMemberId,
            Some(m) if m.epoch != epoch => ErrorCode::StaleMemberEpoch,
            Some(_) => ErrorCode::None,
        }
    }

    /// Checks a commit's member and epoch (OffsetCommit v9+) as Kafka 4.3 and later do
    /// (KIP-1251): the member's epoch passes; an older one passes only when every
    /// partition committed is the member's (assigned or pending revocation) and was
    /// given to it at that epoch or before; anything else is STALE_MEMBER_EPOCH. A
    /// partition of a topic that does not exist (`None`) is no member's.
    pub(crate) fn check_commit_epoch(
        &self,
        member_id: &str,
        epoch: i32,
        partitions: impl IntoIterator<Item = (Option<Uuid>, i32)>,
    ) -> ErrorCode {
        let Some(m) = self.members.get(member_id) else { return ErrorCode::UnknownMemberId };
        if epoch == m.epoch {
            return ErrorCode::None;
        }
        let owned_since_then = |(topic, p): (Option<Uuid>, i32)| {
            topic.and_then(|t| m.assigned_at.get(&(t, p))).is_some_and(|since| *since <= epoch)
        };
        if epoch < m.epoch && partitions.into_iter().all(owned_since_then) {
            ErrorCode::None
        } else {
            ErrorCode::StaleMemberEpoch
        }
    }

    /// A rebalance asked for by a test: the group epoch goes up, the next heartbeat
    /// computes a new target whatever the assignment interval, and every member
    /// reconciles to it on its next heartbeat.
    pub(crate) fn force_rebalance(&mut self) {
        self.epoch += 1;
        self.assignment_time = None;
    }
}
