//! The group admin APIs as Kafka 4.4's group coordinator answers them: ListGroups,
//! DescribeGroups (classic groups), ConsumerGroupDescribe (KIP-848 groups), DeleteGroups
//! and OffsetDelete. Sans-io like the rest of the coordinator: each takes the decoded
//! request, the committed offsets (a group that only has offsets is, to Kafka, an empty
//! classic group without a protocol type) and which groups this broker coordinates, and
//! returns the answer.
//!
//! Kafka sources followed: `GroupMetadataManager` (`listGroups`, `describeGroups`,
//! `consumerGroupDescribe`), `GroupCoordinatorShard.deleteGroups`,
//! `OffsetMetadataManager.deleteOffsets`, `ClassicGroup` and `ConsumerGroup`
//! (`validateDeleteGroup`, `validateOffsetDelete`, `isSubscribedToTopic`, states),
//! and `KafkaApis` (`handleOffsetDeleteRequest`, `handleDeleteGroupsRequest`).

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use klife_protocol::ErrorCode;
use klife_protocol::messages::consumer_group_describe_response::{
    Assignment as DescribedAssignment, DescribedGroup as ConsumerDescribedGroup, Member, TopicPartitions,
};
use klife_protocol::messages::delete_groups_response::DeletableGroupResult;
use klife_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use klife_protocol::messages::list_groups_response::ListedGroup;
use klife_protocol::messages::offset_delete_response::{OffsetDeleteResponsePartition, OffsetDeleteResponseTopic};
use klife_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, DeleteGroupsRequest, DeleteGroupsResponse,
    DescribeGroupsRequest, DescribeGroupsResponse, ListGroupsRequest, ListGroupsResponse, OffsetDeleteRequest,
    OffsetDeleteResponse,
};

use super::assignor::Partitions;
use super::classic::{CONSUMER_PROTOCOL_TYPE, ClassicGroup, ClassicState};
use super::consumer::ConsumerGroup;
use super::{Coordinator, Group, Topics};
use crate::state::CommittedOffsets;

/// The operations a group resource supports (READ, DELETE, DESCRIBE,
/// DESCRIBE_CONFIGS, ALTER_CONFIGS: Kafka's `AclEntry.supportedOperations`) as a bit
/// field: what Kafka reports as a group's authorized operations without an authorizer.
pub(crate) const GROUP_AUTHORIZED_OPERATIONS: i32 = (1 << 3) | (1 << 6) | (1 << 8) | (1 << 10) | (1 << 11);

/// The answer of an admin request: the error when `group` is not coordinated by this
/// broker (NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE), NONE when it is.
pub(crate) type Route<'a> = &'a dyn Fn(&str) -> ErrorCode;

/// A group as the admin APIs see it.
enum Found<'a> {
    Consumer(&'a ConsumerGroup),
    Classic(&'a ClassicGroup),
    /// A group with offsets only: to Kafka an empty classic group without a protocol
    /// type (a "simple" group).
    Simple,
}

impl Found<'_> {
    fn type_name(&self) -> &'static str {
        match self {
            Found::Consumer(_) => "consumer",
            Found::Classic(_) | Found::Simple => "classic",
        }
    }

    fn state_name(&self) -> &'static str {
        match self {
            Found::Consumer(g) => g.state_name(),
            Found::Classic(g) => g.state.name(),
            Found::Simple => ClassicState::Empty.name(),
        }
    }

    fn protocol_type(&self) -> String {
        match self {
            Found::Consumer(_) => CONSUMER_PROTOCOL_TYPE.to_owned(),
            Found::Classic(g) => g.protocol_type.clone().unwrap_or_default(),
            Found::Simple => String::new(),
        }
    }
}

fn not_found(group: &str) -> String {
    format!("Group {group} not found.")
}

impl Coordinator {
    fn find<'a>(&'a self, group: &str, offsets: &CommittedOffsets) -> Option<Found<'a>> {
        match self.groups.get(group) {
            Some(Group::Consumer(g)) => Some(Found::Consumer(g)),
            Some(Group::Classic(g)) => Some(Found::Classic(g)),
            None if offsets.contains_key(group) => Some(Found::Simple),
            None => None,
        }
    }

    /// Whether the consumer protocol (and so ConsumerGroupDescribe) is off.
    fn consumer_protocol_off(&self) -> bool {
        self.config.refuse_consumer_protocol || !self.config.advertise_consumer_protocol
    }

    /// ListGroups: the groups this broker coordinates (`local`), as every broker
    /// answers for its own offsets partitions; the states filter (v4+) is compared
    /// trimmed and in lower case, the types filter (v5+) in lower case, and a name
    /// that is no state or type matches nothing.
    pub(crate) fn list_groups(
        &self,
        r: &ListGroupsRequest,
        offsets: &CommittedOffsets,
        local: &dyn Fn(&str) -> bool,
    ) -> ListGroupsResponse {
        let states: BTreeSet<String> = r.states_filter.iter().map(|s| s.trim().to_lowercase()).collect();
        let types: BTreeSet<String> = r.types_filter.iter().map(|t| t.to_lowercase()).collect();
        let ids: BTreeSet<&String> = self.groups.keys().chain(offsets.keys()).collect();
        let groups = ids
            .into_iter()
            .filter(|id| local(id))
            .filter_map(|id| self.find(id, offsets).map(|g| (id, g)))
            .filter(|(_, g)| states.is_empty() || states.contains(&g.state_name().to_lowercase()))
            .filter(|(_, g)| types.is_empty() || types.contains(g.type_name()))
            .map(|(id, g)| {
                ListedGroup::default()
                    .with_group_id(id.clone())
                    .with_protocol_type(g.protocol_type())
                    .with_group_state(g.state_name().to_owned())
                    .with_group_type(g.type_name().to_owned())
            })
            .collect();
        ListGroupsResponse::default().with_groups(groups)
    }

    /// DescribeGroups: classic groups. A Stable group shows its protocol and each
    /// member's metadata for it; other states show neither (members keep their
    /// assignment). A group that does not exist, or is a KIP-848 group, is `Dead`, with
    /// GROUP_ID_NOT_FOUND from v6 on (KIP-1043).
    pub(crate) fn describe_groups(
        &self,
        r: &DescribeGroupsRequest,
        version: i16,
        offsets: &CommittedOffsets,
        route: Route<'_>,
    ) -> DescribeGroupsResponse {
        let groups = r
            .groups
            .iter()
            .map(|id| {
                let code = route(id);
                if code != ErrorCode::None {
                    return DescribedGroup::default().with_group_id(id.clone()).with_error_code(code.code());
                }
                let mut out = match self.find(id, offsets) {
                    Some(Found::Classic(g)) => describe_classic(id, g),
                    Some(Found::Simple) => describe_classic(id, &ClassicGroup::new()),
                    found => {
                        let message = match found {
                            Some(Found::Consumer(_)) => format!("Group {id} is not a classic group."),
                            _ => not_found(id),
                        };
                        let dead = DescribedGroup::default().with_group_id(id.clone()).with_group_state("Dead".into());
                        if version >= 6 {
                            dead.with_error_code(ErrorCode::GroupIdNotFound.code()).with_error_message(Some(message))
                        } else {
                            dead
                        }
                    }
                };
                if version >= 3 && r.include_authorized_operations && out.error_code == 0 {
                    out.authorized_operations = GROUP_AUTHORIZED_OPERATIONS;
                }
                out
            })
            .collect();
        DescribeGroupsResponse::default().with_groups(groups)
    }

    /// ConsumerGroupDescribe: KIP-848 groups, with Kafka's group state, the assignor
    /// most members ask for (`uniform` by default), and each member's assignment and
    /// target by topic id and name (topics that no longer exist left out). An empty
    /// group id is INVALID_GROUP_ID; a group that does not exist or is classic is
    /// GROUP_ID_NOT_FOUND; every group is UNSUPPORTED_VERSION while the consumer
    /// protocol is off.
    pub(crate) fn consumer_group_describe(
        &self,
        r: &ConsumerGroupDescribeRequest,
        offsets: &CommittedOffsets,
        topics: &Topics,
        route: Route<'_>,
    ) -> ConsumerGroupDescribeResponse {
        let error = |id: &str, code: ErrorCode| {
            ConsumerDescribedGroup::default().with_group_id(id.to_owned()).with_error_code(code.code())
        };
        let names: BTreeMap<_, &String> = topics.iter().map(|(name, (id, _))| (*id, name)).collect();
        let assignment = |p: &Partitions| {
            DescribedAssignment::default().with_topic_partitions(
                p.iter()
                    .filter_map(|(t, ps)| {
                        names.get(t).map(|name| {
                            TopicPartitions::default()
                                .with_topic_id(*t)
                                .with_topic_name((*name).clone())
                                .with_partitions(ps.iter().copied().collect())
                        })
                    })
                    .collect(),
            )
        };
        let groups = r
            .group_ids
            .iter()
            .map(|id| {
                if self.consumer_protocol_off() {
                    return error(id, ErrorCode::UnsupportedVersion);
                }
                if id.is_empty() {
                    return error(id, ErrorCode::InvalidGroupId);
                }
                let code = route(id);
                if code != ErrorCode::None {
                    return error(id, code);
                }
                let g = match self.find(id, offsets) {
                    Some(Found::Consumer(g)) => g,
                    found => {
                        let message = match found {
                            Some(Found::Classic(_) | Found::Simple) => format!("Group {id} is not a consumer group."),
                            _ => not_found(id),
                        };
                        return error(id, ErrorCode::GroupIdNotFound).with_error_message(Some(message));
                    }
                };
                let members = g
                    .members
                    .values()
                    .map(|m| {
                        Member::default()
                            .with_member_id(m.member_id.clone())
                            .with_instance_id(m.instance_id.clone())
                            .with_rack_id(m.rack_id.clone())
                            .with_member_epoch(m.epoch)
                            .with_client_id(m.client_id.clone())
                            .with_client_host(m.client_host.clone())
                            .with_subscribed_topic_names(m.subscribed_names.iter().cloned().collect())
                            .with_subscribed_topic_regex(m.regex.clone())
                            .with_assignment(assignment(&m.assigned))
                            .with_target_assignment(assignment(
                                &g.target.get(&m.member_id).cloned().unwrap_or_default(),
                            ))
                            // Every member here runs the consumer protocol (1); 0 is a
                            // classic member of a KIP-848 group.
                            .with_member_type(1)
                    })
                    .collect();
                let out = ConsumerDescribedGroup::default()
                    .with_group_id(id.clone())
                    .with_group_state(g.state_name().to_owned())
                    .with_group_epoch(g.epoch)
                    .with_assignment_epoch(g.assignment_epoch)
                    .with_assignor_name(g.assignor_name())
                    .with_members(members);
                if r.include_authorized_operations {
                    out.with_authorized_operations(GROUP_AUTHORIZED_OPERATIONS)
                } else {
                    out
                }
            })
            .collect();
        ConsumerGroupDescribeResponse::default().with_groups(groups)
    }

    /// DeleteGroups: each group named (once) is deleted with its committed offsets if
    /// it has no members (NON_EMPTY_GROUP otherwise; a classic group is empty in state
    /// Empty, a KIP-848 group without members, a static member away with epoch -2
    /// included), GROUP_ID_NOT_FOUND if it does not exist. Returns the answer and the
    /// groups deleted.
    pub(crate) fn delete_groups(
        &mut self,
        r: &DeleteGroupsRequest,
        offsets: &mut CommittedOffsets,
        route: Route<'_>,
    ) -> (DeleteGroupsResponse, Vec<String>) {
        let mut seen = BTreeSet::new();
        let mut deleted = Vec::new();
        let results = r
            .groups_names
            .iter()
            .filter(|id| seen.insert(id.as_str()))
            .map(|id| {
                let code = match route(id) {
                    ErrorCode::None => match self.find(id, offsets) {
                        None => ErrorCode::GroupIdNotFound,
                        Some(Found::Consumer(g)) if !g.members.is_empty() => ErrorCode::NonEmptyGroup,
                        Some(Found::Classic(g)) if g.state != ClassicState::Empty => ErrorCode::NonEmptyGroup,
                        Some(_) => {
                            self.groups.remove(id);
                            offsets.remove(id);
                            deleted.push(id.clone());
                            ErrorCode::None
                        }
                    },
                    code => code,
                };
                DeletableGroupResult::default().with_group_id(id.clone()).with_error_code(code.code())
            })
            .collect();
        (DeleteGroupsResponse::default().with_results(results), deleted)
    }

    /// OffsetDelete: the committed offsets of the partitions named. As Kafka's
    /// `KafkaApis` does first, a topic or partition that does not exist is
    /// UNKNOWN_TOPIC_OR_PARTITION; then, for the others, the group must exist
    /// (GROUP_ID_NOT_FOUND) and, if it is a classic group with members, run the
    /// `consumer` protocol type (NON_EMPTY_GROUP); a topic the group subscribes to is
    /// GROUP_SUBSCRIBED_TO_TOPIC for each of its partitions. A group-level error
    /// replaces every partition's. The group stays, even with no offsets left. Returns
    /// the answer and the partitions whose offsets were deleted.
    pub(crate) fn delete_offsets(
        &self,
        r: &OffsetDeleteRequest,
        offsets: &mut CommittedOffsets,
        topics: &Topics,
        route: Route<'_>,
    ) -> (OffsetDeleteResponse, Vec<(String, i32)>) {
        let top = |code: ErrorCode| (OffsetDeleteResponse::default().with_error_code(code.code()), Vec::new());
        // Unknown topics and partitions, answered by KafkaApis before the coordinator.
        let mut unknown: Vec<OffsetDeleteResponseTopic> = Vec::new();
        let mut valid: Vec<(&String, Vec<i32>)> = Vec::new();
        for t in &r.topics {
            let count = topics.get(&t.name).map(|(_, n)| *n);
            let (known, missing): (Vec<i32>, Vec<i32>) =
                t.partitions.iter().map(|p| p.partition_index).partition(|p| count.is_some_and(|n| (0..n).contains(p)));
            if !missing.is_empty() {
                unknown.push(
                    OffsetDeleteResponseTopic::default().with_name(t.name.clone()).with_partitions(
                        missing
                            .into_iter()
                            .map(|p| {
                                OffsetDeleteResponsePartition::default()
                                    .with_partition_index(p)
                                    .with_error_code(ErrorCode::UnknownTopicOrPartition.code())
                            })
                            .collect(),
                    ),
                );
            }
            if !known.is_empty() {
                valid.push((&t.name, known));
            }
        }
        if r.group_id.is_empty() {
            return top(ErrorCode::InvalidGroupId);
        }
        match route(&r.group_id) {
            ErrorCode::None => {}
            code => return top(code),
        }
        let subscribed: Vec<bool> = match self.find(&r.group_id, offsets) {
            None => return top(ErrorCode::GroupIdNotFound),
            Some(Found::Classic(g))
                if g.state != ClassicState::Empty && g.protocol_type.as_deref() != Some(CONSUMER_PROTOCOL_TYPE) =>
            {
                return top(ErrorCode::NonEmptyGroup);
            }
            Some(Found::Classic(g)) => valid.iter().map(|(t, _)| g.is_subscribed_to(t)).collect(),
            Some(Found::Simple) => vec![false; valid.len()],
            Some(Found::Consumer(g)) => valid.iter().map(|(t, _)| g.is_subscribed_to(t)).collect(),
        };
        let mut deleted = Vec::new();
        let mut answered: Vec<OffsetDeleteResponseTopic> = Vec::new();
        for ((name, partitions), subscribed) in valid.into_iter().zip(subscribed) {
            let partitions = partitions
                .into_iter()
                .map(|p| {
                    let code = if subscribed {
                        ErrorCode::GroupSubscribedToTopic
                    } else {
                        if let Some(committed) = offsets.get_mut(&r.group_id) {
                            committed.remove(&(name.clone(), p));
                        }
                        deleted.push((name.clone(), p));
                        ErrorCode::None
                    };
                    OffsetDeleteResponsePartition::default().with_partition_index(p).with_error_code(code.code())
                })
                .collect();
            answered.push(OffsetDeleteResponseTopic::default().with_name(name.clone()).with_partitions(partitions));
        }
        // Kafka's OffsetDeleteResponse.Builder.merge: the coordinator's topics after the
        // unknown ones, partitions of a topic in both appended to it.
        for t in answered {
            match unknown.iter_mut().find(|u| u.name == t.name) {
                Some(u) => u.partitions.extend(t.partitions),
                None => unknown.push(t),
            }
        }
        (OffsetDeleteResponse::default().with_topics(unknown), deleted)
    }
}

fn describe_classic(id: &str, g: &ClassicGroup) -> DescribedGroup {
    let stable = g.state == ClassicState::Stable;
    let protocol = if stable { g.protocol_name.clone().unwrap_or_default() } else { String::new() };
    let members = g
        .members
        .values()
        .map(|m| {
            DescribedGroupMember::default()
                .with_member_id(m.member_id.clone())
                .with_group_instance_id(m.instance_id.clone())
                .with_client_id(m.client_id.clone())
                .with_client_host(m.client_host.clone())
                .with_member_metadata(if stable { m.metadata(&protocol) } else { Bytes::new() })
                .with_member_assignment(m.assignment.clone())
        })
        .collect();
    DescribedGroup::default()
        .with_group_id(id.to_owned())
        .with_group_state(g.state.name().to_owned())
        .with_protocol_type(g.protocol_type.clone().unwrap_or_default())
        .with_protocol_data(protocol)
        .with_members(members)
}

#[cfg(test)]
mod tests;
