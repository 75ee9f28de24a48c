//! Coordinator lookup and committed offsets. Commits and (v9+) fetches of a group with
//! members are checked against the member and its epoch (KIP-848) or the generation
//! (classic), as Kafka checks them; a group without members takes commits with
//! generation -1 (simple consumers, admin clients).

use std::collections::BTreeMap;

use klife_protocol::ErrorCode;
use klife_protocol::messages::find_coordinator_response::Coordinator;
use klife_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use klife_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions, OffsetFetchResponseTopic,
    OffsetFetchResponseTopics,
};
use klife_protocol::messages::{
    FindCoordinatorRequest, FindCoordinatorResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest,
    OffsetFetchResponse,
};

use super::Ctx;
use crate::coordinator::Group;
use crate::coordinator::consumer::ConsumerGroup;
use crate::state::{Committed, State};

/// Kafka's default `offset.metadata.max.bytes`.
const MAX_METADATA: usize = 4096;

/// The coordinator of `key` as (error, node id, port).
fn locate(state: &State, key_type: i8, key: &str) -> (ErrorCode, i32, i32) {
    if !(0..=1).contains(&key_type) || (key_type == 1 && key.is_empty()) {
        return (ErrorCode::InvalidRequest, -1, -1);
    }
    match state.coordinator(key) {
        Some(id) => (ErrorCode::None, id, state.brokers.get(&id).map_or(-1, |b| i32::from(b.port))),
        None => (ErrorCode::CoordinatorNotAvailable, -1, -1),
    }
}

pub(crate) fn find_coordinator(state: &mut State, ctx: &Ctx, r: FindCoordinatorRequest) -> FindCoordinatorResponse {
    if ctx.version >= 4 {
        let coordinators = r
            .coordinator_keys
            .iter()
            .map(|key| {
                let (code, node, port) = locate(state, r.key_type, key);
                let host = if node >= 0 { "127.0.0.1" } else { "" };
                Coordinator::default()
                    .with_key(key.clone())
                    .with_node_id(node)
                    .with_host(host.into())
                    .with_port(port)
                    .with_error_code(code.code())
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    let (code, node, port) = locate(state, r.key_type, &r.key);
    let host = if node >= 0 { "127.0.0.1" } else { "" };
    FindCoordinatorResponse::default()
        .with_error_code(code.code())
        .with_node_id(node)
        .with_host(host.into())
        .with_port(port)
}

/// The error for a request to `group`'s coordinator arriving at `broker`.
pub(crate) fn coordinator_error(state: &State, group: &str, broker: i32) -> ErrorCode {
    match state.coordinator(group) {
        Some(c) if c == broker => ErrorCode::None,
        Some(_) => ErrorCode::NotCoordinator,
        None => ErrorCode::CoordinatorNotAvailable,
    }
}

/// Kafka's check of a commit's generation (or member epoch) and member id against the
/// group (`OffsetMetadataManager.validateOffsetCommit` and the groups' own checks).
fn check_commit(state: &State, version: i16, r: &OffsetCommitRequest) -> ErrorCode {
    let generation = r.generation_id_or_member_epoch;
    let instance = if version >= 7 { r.group_instance_id.as_deref() } else { None };
    match state.coordinator.groups.get(&r.group_id) {
        Some(Group::Consumer(g)) => {
            if generation < 0 && g.members.is_empty() {
                return ErrorCode::None;
            }
            if !g.members.contains_key(&r.member_id) {
                return ErrorCode::UnknownMemberId;
            }
            if version < 9 {
                // Members of the consumer protocol commit with v9+.
                return ErrorCode::UnsupportedVersion;
            }
            let partitions =
                r.topics.iter().flat_map(|t| t.partitions.iter().map(|p| (t.name.as_str(), p.partition_index)));
            check_consumer_commit(state, g, &r.member_id, generation, partitions)
        }
        Some(Group::Classic(g)) => g.check_commit(generation, &r.member_id, instance, false),
        None if state.groups.contains_key(&r.group_id) || generation < 0 => {
            // A group with offsets only is an empty classic group to Kafka.
            crate::coordinator::classic::ClassicGroup::new().check_commit(generation, &r.member_id, instance, false)
        }
        None if version >= 9 => ErrorCode::GroupIdNotFound,
        None => ErrorCode::IllegalGeneration,
    }
}

/// A KIP-848 member's commit of `partitions` at `epoch`: its own epoch passes, and so
/// does an older one for partitions it has owned since that epoch (KIP-1251, Kafka
/// 4.3+); anything else is STALE_MEMBER_EPOCH.
fn check_consumer_commit<'a>(
    state: &State,
    group: &ConsumerGroup,
    member_id: &str,
    epoch: i32,
    partitions: impl IntoIterator<Item = (&'a str, i32)>,
) -> ErrorCode {
    match group.check_member_epoch(member_id, epoch) {
        ErrorCode::StaleMemberEpoch => {
            let topics = state.topic_view();
            let partitions = partitions.into_iter().map(|(t, p)| (topics.get(t).map(|(id, _)| *id), p));
            group.check_commit_epoch(member_id, epoch, partitions)
        }
        code => code,
    }
}

/// Kafka's check of a TxnOffsetCommit's member (KIP-447, v3+; older versions carry
/// none and pass) committing `partitions`: as a commit's, KIP-1251 included, but without
/// the group state checks, and an epoch that does not pass for a KIP-848 member is
/// ILLEGAL_GENERATION (`OffsetMetadataManager.validateTransactionalOffsetCommit`).
pub(crate) fn check_txn_commit<'a>(
    state: &State,
    group: &str,
    generation: i32,
    member_id: &str,
    instance_id: Option<&str>,
    partitions: impl IntoIterator<Item = (&'a str, i32)>,
) -> ErrorCode {
    match state.coordinator.groups.get(group) {
        Some(Group::Consumer(g)) => {
            if generation < 0 && g.members.is_empty() {
                return ErrorCode::None;
            }
            match check_consumer_commit(state, g, member_id, generation, partitions) {
                ErrorCode::StaleMemberEpoch => ErrorCode::IllegalGeneration,
                code => code,
            }
        }
        Some(Group::Classic(g)) => g.check_commit(generation, member_id, instance_id, true),
        None if state.groups.contains_key(group) || generation < 0 => {
            crate::coordinator::classic::ClassicGroup::new().check_commit(generation, member_id, instance_id, true)
        }
        None => ErrorCode::IllegalGeneration,
    }
}

/// Kafka's check of an OffsetFetch (v9+) member id and epoch: only consumer groups check.
fn check_fetch(state: &State, group: &str, member_id: Option<&str>, epoch: i32) -> ErrorCode {
    match state.coordinator.groups.get(group) {
        Some(Group::Consumer(g)) if member_id.is_some() || epoch >= 0 => {
            g.check_member_epoch(member_id.unwrap_or_default(), epoch)
        }
        _ => ErrorCode::None,
    }
}

pub(crate) fn offset_commit(state: &mut State, ctx: &Ctx, r: OffsetCommitRequest) -> OffsetCommitResponse {
    let group_error = if r.group_id.is_empty() {
        ErrorCode::InvalidGroupId
    } else {
        match coordinator_error(state, &r.group_id, ctx.broker) {
            ErrorCode::None => {
                state.coordinator.tick(ctx.now_ms);
                check_commit(state, ctx.version, &r)
            }
            code => code,
        }
    };
    let topics = r
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let code = if group_error != ErrorCode::None {
                        group_error
                    } else if state.partition(&t.name, p.partition_index).is_none() {
                        ErrorCode::UnknownTopicOrPartition
                    } else if p.committed_metadata.as_ref().is_some_and(|m| m.len() > MAX_METADATA) {
                        ErrorCode::OffsetMetadataTooLarge
                    } else {
                        state.commit_offset(
                            &r.group_id,
                            &t.name,
                            p.partition_index,
                            Committed {
                                offset: p.committed_offset,
                                leader_epoch: p.committed_leader_epoch,
                                metadata: p.committed_metadata,
                            },
                        );
                        ErrorCode::None
                    };
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(code.code())
                })
                .collect();
            OffsetCommitResponseTopic::default().with_name(t.name).with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// One group's committed offsets for the requested partitions (all when `None`), as
/// (topic, [(partition, offset, leader epoch, metadata, error)]).
type GroupOffsets = Vec<(String, Vec<(i32, i64, i32, Option<String>, ErrorCode)>)>;

fn group_offsets(
    state: &State,
    group: &str,
    topics: Option<Vec<(String, Vec<i32>)>>,
    require_stable: bool,
) -> GroupOffsets {
    let committed = state.groups.get(group);
    let topics = topics.unwrap_or_else(|| {
        let mut all: BTreeMap<String, Vec<i32>> = BTreeMap::new();
        for (t, p) in committed.into_iter().flat_map(|c| c.keys()) {
            all.entry(t.clone()).or_default().push(*p);
        }
        all.into_iter().collect()
    });
    topics
        .into_iter()
        .map(|(topic, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|p| {
                    if require_stable && state.txns.has_pending_offset(group, &topic, p) {
                        return (p, -1, -1, Some(String::new()), ErrorCode::UnstableOffsetCommit);
                    }
                    match committed.and_then(|c| c.get(&(topic.clone(), p))) {
                        Some(c) => (p, c.offset, c.leader_epoch, c.metadata.clone(), ErrorCode::None),
                        None => (p, -1, -1, Some(String::new()), ErrorCode::None),
                    }
                })
                .collect();
            (topic, partitions)
        })
        .collect()
}

pub(crate) fn offset_fetch(state: &mut State, ctx: &Ctx, r: OffsetFetchRequest) -> OffsetFetchResponse {
    if ctx.version >= 8 {
        let groups = r
            .groups
            .into_iter()
            .map(|g| {
                let out = OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
                let mut code = coordinator_error(state, &g.group_id, ctx.broker);
                if code == ErrorCode::None && ctx.version >= 9 {
                    code = check_fetch(state, &g.group_id, g.member_id.as_deref(), g.member_epoch);
                }
                if code != ErrorCode::None {
                    return out.with_error_code(code.code());
                }
                let wanted = g.topics.map(|ts| ts.into_iter().map(|t| (t.name, t.partition_indexes)).collect());
                let topics = group_offsets(state, &g.group_id, wanted, r.require_stable)
                    .into_iter()
                    .map(|(name, partitions)| {
                        let partitions = partitions
                            .into_iter()
                            .map(|(p, offset, epoch, metadata, code)| {
                                OffsetFetchResponsePartitions::default()
                                    .with_partition_index(p)
                                    .with_committed_offset(offset)
                                    .with_committed_leader_epoch(epoch)
                                    .with_metadata(metadata)
                                    .with_error_code(code.code())
                            })
                            .collect();
                        OffsetFetchResponseTopics::default().with_name(name).with_partitions(partitions)
                    })
                    .collect();
                out.with_topics(topics)
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let code = coordinator_error(state, &r.group_id, ctx.broker);
    let wanted: Option<Vec<(String, Vec<i32>)>> =
        r.topics.map(|ts| ts.into_iter().map(|t| (t.name, t.partition_indexes)).collect());
    if code != ErrorCode::None {
        if ctx.version >= 2 {
            return OffsetFetchResponse::default().with_error_code(code.code());
        }
        // v1 has no top-level error: every partition carries it.
        let topics = wanted
            .unwrap_or_default()
            .into_iter()
            .map(|(name, ps)| {
                let partitions = ps
                    .into_iter()
                    .map(|p| {
                        OffsetFetchResponsePartition::default()
                            .with_partition_index(p)
                            .with_committed_offset(-1)
                            .with_metadata(Some(String::new()))
                            .with_error_code(code.code())
                    })
                    .collect();
                OffsetFetchResponseTopic::default().with_name(name).with_partitions(partitions)
            })
            .collect();
        return OffsetFetchResponse::default().with_topics(topics);
    }
    let topics = group_offsets(state, &r.group_id, wanted, ctx.version >= 7 && r.require_stable)
        .into_iter()
        .map(|(name, partitions)| {
            let partitions = partitions
                .into_iter()
                .map(|(p, offset, epoch, metadata, code)| {
                    let mut out = OffsetFetchResponsePartition::default()
                        .with_partition_index(p)
                        .with_committed_offset(offset)
                        .with_metadata(metadata)
                        .with_error_code(code.code());
                    if ctx.version >= 5 {
                        out = out.with_committed_leader_epoch(epoch);
                    }
                    out
                })
                .collect();
            OffsetFetchResponseTopic::default().with_name(name).with_partitions(partitions)
        })
        .collect();
    OffsetFetchResponse::default().with_topics(topics)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use klife_protocol::messages::consumer_group_heartbeat_request::TopicPartitions;
    use klife_protocol::messages::join_group_request::JoinGroupRequestProtocol;
    use klife_protocol::messages::leave_group_request::MemberIdentity;
    use klife_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
    use klife_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
    use klife_protocol::messages::{ConsumerGroupHeartbeatRequest, JoinGroupRequest, LeaveGroupRequest};

    use super::*;
    use crate::coordinator::Client;

    fn state() -> State {
        let mut s = State::for_tests(1);
        s.create_topic("t", vec![vec![0]; 2], 1, BTreeMap::new());
        s
    }

    fn ctx(version: i16) -> Ctx {
        Ctx { broker: 0, version, now_ms: 0, client_id: String::new(), client_host: String::new() }
    }

    fn commit(generation: i32, member: &str) -> OffsetCommitRequest {
        OffsetCommitRequest::default()
            .with_group_id("g".into())
            .with_generation_id_or_member_epoch(generation)
            .with_member_id(member.into())
            .with_topics(vec![OffsetCommitRequestTopic::default().with_name("t".into()).with_partitions(vec![
                OffsetCommitRequestPartition::default().with_partition_index(0).with_committed_offset(5),
            ])])
    }

    fn commit_code(s: &mut State, version: i16, r: OffsetCommitRequest) -> ErrorCode {
        ErrorCode::from_code(offset_commit(s, &ctx(version), r).topics[0].partitions[0].error_code)
    }

    #[test]
    fn commits_without_members_need_generation_minus_one() {
        let mut s = state();
        assert_eq!(commit_code(&mut s, 9, commit(3, "m")), ErrorCode::GroupIdNotFound);
        assert_eq!(commit_code(&mut s, 8, commit(3, "m")), ErrorCode::IllegalGeneration);
        assert_eq!(commit_code(&mut s, 9, commit(-1, "")), ErrorCode::None);
        // Now the group exists (offsets only): a member id it does not have is unknown.
        assert_eq!(commit_code(&mut s, 9, commit(3, "m")), ErrorCode::UnknownMemberId);
        assert_eq!(commit_code(&mut s, 9, commit(-1, "")), ErrorCode::None);
    }

    /// How an admin client resets a group's offsets: generation -1 and no member id,
    /// taken by a group without members (or none at all) at any version, refused with
    /// UNKNOWN_MEMBER_ID while the group has members (Kafka's `ClassicGroup` and
    /// `ConsumerGroup.validateOffsetCommit`).
    #[test]
    fn admin_commits_reset_groups_without_members_only() {
        let mut s = state();
        let topics = s.topic_view();
        let cg = ConsumerGroupHeartbeatRequest::default()
            .with_group_id("g".into())
            .with_member_id("a".into())
            .with_rebalance_timeout_ms(1000)
            .with_subscribed_topic_names(Some(vec!["t".into()]))
            .with_topic_partitions(Some(Vec::<TopicPartitions>::new()));
        s.coordinator.consumer_heartbeat(Client::default(), &cg, 1, &topics, 0);
        for version in [2, 8, 9] {
            assert_eq!(commit_code(&mut s, version, commit(-1, "")), ErrorCode::UnknownMemberId, "v{version}");
        }
        let leave = cg.clone().with_member_epoch(-1);
        s.coordinator.consumer_heartbeat(Client::default(), &leave, 1, &topics, 0);
        for version in [2, 8, 9] {
            assert_eq!(commit_code(&mut s, version, commit(-1, "")), ErrorCode::None, "v{version}");
        }
        // A classic group, once its last member left.
        let join = JoinGroupRequest::default()
            .with_group_id("k".into())
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(10_000)
            .with_group_instance_id(Some("i".into()))
            .with_protocol_type("consumer".into())
            .with_protocols(vec![JoinGroupRequestProtocol::default().with_name("range".into())]);
        let id = s.coordinator.join(Client { id: "c", host: "" }, &join, 9, 0).unwrap().member_id;
        let to_k = |r: OffsetCommitRequest| r.with_group_id("k".into());
        assert_eq!(commit_code(&mut s, 9, to_k(commit(-1, ""))), ErrorCode::UnknownMemberId);
        let leave = LeaveGroupRequest::default()
            .with_group_id("k".into())
            .with_members(vec![MemberIdentity::default().with_member_id(id)]);
        s.coordinator.leave(&leave, 3, 0);
        assert_eq!(commit_code(&mut s, 9, to_k(commit(-1, ""))), ErrorCode::None);
        assert_eq!(s.groups["k"][&("t".to_owned(), 0)].offset, 5);
    }

    #[test]
    fn commits_and_fetches_of_a_consumer_group_check_the_member_epoch() {
        let mut s = state();
        let topics = s.topic_view();
        let join = ConsumerGroupHeartbeatRequest::default()
            .with_group_id("g".into())
            .with_member_id("a".into())
            .with_rebalance_timeout_ms(1000)
            .with_subscribed_topic_names(Some(vec!["t".into()]))
            .with_topic_partitions(Some(Vec::<TopicPartitions>::new()));
        let epoch = s.coordinator.consumer_heartbeat(Client::default(), &join, 1, &topics, 0).member_epoch;
        assert_eq!(commit_code(&mut s, 9, commit(epoch, "a")), ErrorCode::None);
        assert_eq!(commit_code(&mut s, 9, commit(epoch - 1, "a")), ErrorCode::StaleMemberEpoch);
        // Kafka answers STALE_MEMBER_EPOCH for a newer epoch too.
        assert_eq!(commit_code(&mut s, 9, commit(epoch + 1, "a")), ErrorCode::StaleMemberEpoch);
        assert_eq!(commit_code(&mut s, 9, commit(epoch, "b")), ErrorCode::UnknownMemberId);
        assert_eq!(commit_code(&mut s, 9, commit(-1, "")), ErrorCode::UnknownMemberId, "the group has members");
        assert_eq!(commit_code(&mut s, 8, commit(epoch, "a")), ErrorCode::UnsupportedVersion);
        let fetch = |member: Option<&str>, epoch: i32| {
            OffsetFetchRequest::default().with_groups(vec![
                OffsetFetchRequestGroup::default()
                    .with_group_id("g".into())
                    .with_member_id(member.map(str::to_owned))
                    .with_member_epoch(epoch),
            ])
        };
        let code = |s: &mut State, r| ErrorCode::from_code(offset_fetch(s, &ctx(9), r).groups[0].error_code);
        assert_eq!(code(&mut s, fetch(Some("a"), epoch)), ErrorCode::None);
        assert_eq!(code(&mut s, fetch(Some("a"), epoch - 1)), ErrorCode::StaleMemberEpoch);
        assert_eq!(code(&mut s, fetch(Some("b"), epoch)), ErrorCode::UnknownMemberId);
        assert_eq!(code(&mut s, fetch(None, -1)), ErrorCode::None, "an admin fetch");
        assert_eq!(check_txn_commit(&s, "g", epoch - 1, "a", None, [("t", 0)]), ErrorCode::IllegalGeneration);
        assert_eq!(check_txn_commit(&s, "g", epoch, "a", None, [("t", 0)]), ErrorCode::None);
    }

    #[test]
    fn commits_of_a_classic_group_check_the_generation() {
        let mut s = state();
        let join = JoinGroupRequest::default()
            .with_group_id("g".into())
            .with_session_timeout_ms(10_000)
            .with_rebalance_timeout_ms(10_000)
            .with_group_instance_id(Some("i".into()))
            .with_protocol_type("consumer".into())
            .with_protocols(vec![JoinGroupRequestProtocol::default().with_name("range".into())]);
        let r = s.coordinator.join(Client { id: "c", host: "" }, &join, 9, 0).unwrap();
        let (id, generation) = (r.member_id, r.generation_id);
        // CompletingRebalance: the leader has not synced.
        assert_eq!(commit_code(&mut s, 9, commit(generation, &id)), ErrorCode::RebalanceInProgress);
        let sync = klife_protocol::messages::SyncGroupRequest::default()
            .with_group_id("g".into())
            .with_member_id(id.clone())
            .with_generation_id(generation);
        s.coordinator.sync(&sync, 5).unwrap();
        assert_eq!(commit_code(&mut s, 9, commit(generation, &id)), ErrorCode::None);
        assert_eq!(commit_code(&mut s, 9, commit(generation + 1, &id)), ErrorCode::IllegalGeneration);
        assert_eq!(commit_code(&mut s, 9, commit(generation, "other")), ErrorCode::UnknownMemberId);
        assert_eq!(commit_code(&mut s, 9, commit(-1, "")), ErrorCode::UnknownMemberId, "the group has members");
        let mut fenced = commit(generation, "other");
        fenced.group_instance_id = Some("i".into());
        assert_eq!(commit_code(&mut s, 9, fenced), ErrorCode::FencedInstanceId);
        assert_eq!(s.groups["g"][&("t".to_owned(), 0)].offset, 5);
        // Transactional commits: the same member checks, no state checks.
        assert_eq!(check_txn_commit(&s, "g", generation, &id, Some("i"), [("t", 0)]), ErrorCode::None);
        assert_eq!(check_txn_commit(&s, "g", generation + 1, &id, Some("i"), [("t", 0)]), ErrorCode::IllegalGeneration);
        assert_eq!(
            check_txn_commit(&s, "g", -1, "", None, [("t", 0)]),
            ErrorCode::None,
            "a member-less transactional commit"
        );
        assert_eq!(check_txn_commit(&s, "nope", 3, "ghost", None, [("t", 0)]), ErrorCode::IllegalGeneration);
        assert_eq!(check_txn_commit(&s, "nope", -1, "", None, [("t", 0)]), ErrorCode::None);
    }
}
