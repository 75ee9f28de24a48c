//! The group admin APIs against groups built with hand-made membership requests: what
//! each answers, and every error, as Kafka 4.4 answers them.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;

use bytes::{BufMut, Bytes, BytesMut};
use klife_protocol::messages::consumer_group_heartbeat_request::TopicPartitions as Owned;
use klife_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use klife_protocol::messages::leave_group_request::MemberIdentity;
use klife_protocol::messages::offset_delete_request::{OffsetDeleteRequestPartition, OffsetDeleteRequestTopic};
use klife_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use klife_protocol::messages::*;
use klife_protocol::{ErrorCode, Uuid};

use super::super::{Client, GroupConfig};
use super::*;
use crate::state::Committed;

const T: Uuid = Uuid([7; 16]);
const U: Uuid = Uuid([9; 16]);
const HOST: &str = "/127.0.0.1";

fn topics() -> Topics {
    Topics::from([("orders".to_owned(), (T, 6)), ("payments".to_owned(), (U, 2))])
}

fn coordinator() -> Coordinator {
    Coordinator::new(GroupConfig {
        heartbeat_interval_ms: 100,
        session_timeout_ms: 1_000,
        assignment_interval_ms: 0,
        ..GroupConfig::default()
    })
}

/// Every group is coordinated here.
fn here(_: &str) -> ErrorCode {
    ErrorCode::None
}

fn code(c: i16) -> ErrorCode {
    ErrorCode::from_code(c)
}

/// Committed offsets of groups: (group, topic, partition) → offset 10.
fn committed(entries: &[(&str, &str, i32)]) -> CommittedOffsets {
    let mut out = CommittedOffsets::new();
    for (g, t, p) in entries {
        out.entry((*g).to_owned())
            .or_default()
            .insert(((*t).to_owned(), *p), Committed { offset: 10, leader_epoch: -1, metadata: None });
    }
    out
}

// ----- KIP-848 members -----

fn cg_join(group: &str, member: &str, names: &[&str]) -> ConsumerGroupHeartbeatRequest {
    ConsumerGroupHeartbeatRequest::default()
        .with_group_id(group.into())
        .with_member_id(member.into())
        .with_rebalance_timeout_ms(5_000)
        .with_subscribed_topic_names(Some(names.iter().map(|n| (*n).to_owned()).collect()))
        .with_topic_partitions(Some(Vec::new()))
}

fn cg_beat(c: &mut Coordinator, from: &str, r: &ConsumerGroupHeartbeatRequest) -> ConsumerGroupHeartbeatResponse {
    let r = c.consumer_heartbeat(Client { id: from, host: HOST }, r, 1, &topics(), 0);
    assert_eq!(code(r.error_code), ErrorCode::None, "{r:?}");
    r
}

/// A leave: epoch -1, or -2 for a static member that will come back.
fn cg_leave(c: &mut Coordinator, group: &str, member: &str, epoch: i32, instance: Option<&str>) {
    let r = ConsumerGroupHeartbeatRequest::default()
        .with_group_id(group.into())
        .with_member_id(member.into())
        .with_member_epoch(epoch)
        .with_instance_id(instance.map(str::to_owned));
    cg_beat(c, "leaver", &r);
}

// ----- classic members -----

/// A version 0 consumer protocol subscription to `topics`.
fn subscription(topics: &[&str]) -> Bytes {
    let mut b = BytesMut::new();
    b.put_i16(0);
    b.put_i32(i32::try_from(topics.len()).unwrap());
    for t in topics {
        b.put_i16(i16::try_from(t.len()).unwrap());
        b.put_slice(t.as_bytes());
    }
    b.put_i32(-1);
    b.freeze()
}

fn classic_join(group: &str, member: &str, protocol_type: &str, metadata: &Bytes) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(group.into())
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(20_000)
        .with_member_id(member.into())
        .with_protocol_type(protocol_type.into())
        .with_protocols(vec![
            JoinGroupRequestProtocol::default().with_name("range".into()).with_metadata(metadata.clone()),
        ])
}

/// A member's two joins (MEMBER_ID_REQUIRED, then with its id): its id, and the answer
/// of the second join when not parked.
fn classic_member(
    c: &mut Coordinator,
    group: &str,
    client: &str,
    protocol_type: &str,
    metadata: &Bytes,
) -> (String, Option<JoinGroupResponse>) {
    let from = Client { id: client, host: HOST };
    let r = c.join(from, &classic_join(group, "", protocol_type, metadata), 9, 0).unwrap();
    assert_eq!(code(r.error_code), ErrorCode::MemberIdRequired);
    let id = r.member_id;
    let second = c.join(from, &classic_join(group, &id, protocol_type, metadata), 9, 0).ok();
    (id, second)
}

/// A classic group of one member, Stable with the assignment `assignment`: its id.
fn stable_classic(
    c: &mut Coordinator,
    group: &str,
    protocol_type: &str,
    metadata: &Bytes,
    assignment: &[u8],
) -> String {
    let (id, r) = classic_member(c, group, "app", protocol_type, metadata);
    let generation = r.unwrap().generation_id;
    let sync = SyncGroupRequest::default()
        .with_group_id(group.into())
        .with_member_id(id.clone())
        .with_generation_id(generation)
        .with_assignments(vec![
            SyncGroupRequestAssignment::default()
                .with_member_id(id.clone())
                .with_assignment(Bytes::copy_from_slice(assignment)),
        ]);
    assert_eq!(code(c.sync(&sync, 5).unwrap().error_code), ErrorCode::None);
    id
}

fn classic_leave(c: &mut Coordinator, group: &str, member: &str) {
    let leave = LeaveGroupRequest::default()
        .with_group_id(group.into())
        .with_members(vec![MemberIdentity::default().with_member_id(member.into())]);
    assert_eq!(code(c.leave(&leave, 3, 0).members[0].error_code), ErrorCode::None);
}

fn list(
    c: &Coordinator,
    offsets: &CommittedOffsets,
    states: &[&str],
    types: &[&str],
) -> Vec<(String, String, String, String)> {
    let r = ListGroupsRequest::default()
        .with_states_filter(states.iter().map(|s| (*s).to_owned()).collect())
        .with_types_filter(types.iter().map(|s| (*s).to_owned()).collect());
    let resp = c.list_groups(&r, offsets, &|_| true);
    assert_eq!(code(resp.error_code), ErrorCode::None);
    resp.groups.into_iter().map(|g| (g.group_id, g.protocol_type, g.group_state, g.group_type)).collect()
}

fn row(id: &str, protocol_type: &str, state: &str, kind: &str) -> (String, String, String, String) {
    (id.to_owned(), protocol_type.to_owned(), state.to_owned(), kind.to_owned())
}

// ----- ListGroups -----

#[test]
fn list_groups_shows_every_group_with_its_state_and_type() {
    let mut c = coordinator();
    cg_beat(&mut c, "app", &cg_join("cg", "a", &["orders"]));
    let (_, r) = classic_member(&mut c, "joining", "app", "consumer", &Bytes::new());
    assert!(r.is_some(), "a lone member completes the join at once");
    let left = stable_classic(&mut c, "left", "consumer", &Bytes::new(), b"");
    classic_leave(&mut c, "left", &left);
    let offsets = committed(&[("simple", "orders", 0), ("cg", "orders", 1)]);
    let all = list(&c, &offsets, &[], &[]);
    assert_eq!(
        all,
        vec![
            row("cg", "consumer", "Stable", "consumer"),
            row("joining", "consumer", "CompletingRebalance", "classic"),
            // A classic group keeps its protocol type once empty, as in Kafka.
            row("left", "consumer", "Empty", "classic"),
            // Offsets only: Kafka's simple group, an empty classic group without a protocol type.
            row("simple", "", "Empty", "classic"),
        ]
    );
    // Filters: states trimmed and in any case, types in any case; unknown names match nothing.
    let ids = |rows: Vec<(String, String, String, String)>| rows.into_iter().map(|r| r.0).collect::<Vec<_>>();
    assert_eq!(ids(list(&c, &offsets, &[" EMPTY "], &[])), vec!["left", "simple"]);
    assert_eq!(ids(list(&c, &offsets, &["stable", "CompletingRebalance"], &[])), vec!["cg", "joining"]);
    assert_eq!(ids(list(&c, &offsets, &[], &["Consumer"])), vec!["cg"]);
    assert_eq!(ids(list(&c, &offsets, &["empty"], &["CLASSIC"])), vec!["left", "simple"]);
    assert!(list(&c, &offsets, &["Dead"], &[]).is_empty());
    assert!(list(&c, &offsets, &[], &["share"]).is_empty());
    assert!(list(&c, &offsets, &[], &["nonsense"]).is_empty());
    // Only the groups this broker coordinates.
    let r = c.list_groups(&ListGroupsRequest::default(), &offsets, &|g| g.starts_with('s'));
    assert_eq!(r.groups.iter().map(|g| g.group_id.as_str()).collect::<Vec<_>>(), vec!["simple"]);
}

#[test]
fn consumer_group_states_are_kafkas() {
    let mut c = coordinator();
    let offsets = CommittedOffsets::new();
    let state = |c: &Coordinator| list(c, &offsets, &[], &[])[0].2.clone();
    cg_beat(&mut c, "app", &cg_join("cg", "a", &["orders"]));
    assert_eq!(state(&c), "Stable");
    // b joins: a must revoke first.
    cg_beat(&mut c, "app", &cg_join("cg", "b", &["orders"]));
    assert_eq!(state(&c), "Reconciling");
    // An epoch bump without a new target yet.
    assert!(c.force_rebalance("cg", 0));
    assert_eq!(state(&c), "Assigning");
    cg_leave(&mut c, "cg", "a", -1, None);
    cg_leave(&mut c, "cg", "b", -1, None);
    assert_eq!(state(&c), "Empty");
}

// ----- DescribeGroups -----

fn describe(
    c: &Coordinator,
    version: i16,
    offsets: &CommittedOffsets,
    ids: &[&str],
    ops: bool,
) -> DescribeGroupsResponse {
    let r = DescribeGroupsRequest::default()
        .with_groups(ids.iter().map(|g| (*g).to_owned()).collect())
        .with_include_authorized_operations(ops);
    c.describe_groups(&r, version, offsets, &here)
}

#[test]
fn describe_groups_shows_classic_groups_as_kafka() {
    let mut c = coordinator();
    let meta = subscription(&["orders"]);
    let a = stable_classic(&mut c, "k", "consumer", &meta, b"A");
    let offsets = committed(&[("simple", "orders", 0)]);
    let r = describe(&c, 5, &offsets, &["k"], false);
    let g = &r.groups[0];
    assert_eq!(code(g.error_code), ErrorCode::None);
    assert_eq!(
        (g.group_id.as_str(), g.group_state.as_str(), g.protocol_type.as_str(), g.protocol_data.as_str()),
        ("k", "Stable", "consumer", "range")
    );
    assert_eq!(g.authorized_operations, i32::MIN, "not asked for");
    let m = &g.members[0];
    assert_eq!((m.member_id.as_str(), m.client_id.as_str(), m.client_host.as_str()), (a.as_str(), "app", HOST));
    assert!(m.member_id.starts_with("app-"), "a classic member id starts with the client id");
    assert_eq!((m.member_metadata.clone(), m.member_assignment.as_ref()), (meta.clone(), &b"A"[..]));
    // A second member: PreparingRebalance. No protocol nor metadata; the old assignment stays.
    let (b, parked) = classic_member(&mut c, "k", "other", "consumer", &meta);
    assert!(parked.is_none(), "b waits for a to rejoin");
    let g = &describe(&c, 5, &offsets, &["k"], false).groups[0];
    assert_eq!((g.group_state.as_str(), g.protocol_data.as_str()), ("PreparingRebalance", ""));
    let members: BTreeMap<&str, (&[u8], &[u8], &str)> = g
        .members
        .iter()
        .map(|m| {
            (m.member_id.as_str(), (m.member_metadata.as_ref(), m.member_assignment.as_ref(), m.client_id.as_str()))
        })
        .collect();
    assert_eq!(members[a.as_str()], (&b""[..], &b"A"[..], "app"));
    assert_eq!(members[b.as_str()], (&b""[..], &b""[..], "other"));
    // Offsets only: an empty classic group without a protocol type.
    let g = &describe(&c, 6, &offsets, &["simple"], false).groups[0];
    assert_eq!(
        (code(g.error_code), g.group_state.as_str(), g.protocol_type.as_str(), g.members.len()),
        (ErrorCode::None, "Empty", "", 0)
    );
    // Authorized operations, v3+: every operation of a group (no authorizer).
    assert_eq!(describe(&c, 3, &offsets, &["k"], true).groups[0].authorized_operations, 3400);
    assert_eq!(describe(&c, 2, &offsets, &["k"], true).groups[0].authorized_operations, i32::MIN);
}

#[test]
fn describe_groups_answers_dead_for_unknown_and_kip848_groups() {
    let mut c = coordinator();
    cg_beat(&mut c, "app", &cg_join("cg", "a", &["orders"]));
    let none = CommittedOffsets::new();
    for version in [0, 5] {
        let r = describe(&c, version, &none, &["nope", "cg"], true);
        for g in &r.groups {
            assert_eq!((code(g.error_code), g.group_state.as_str()), (ErrorCode::None, "Dead"), "v{version}");
            assert!(g.error_message.is_none() && g.members.is_empty() && g.protocol_type.is_empty());
        }
        // Kafka fills the authorized operations of every answer without an error.
        assert_eq!(r.groups[0].authorized_operations, if version >= 3 { 3400 } else { i32::MIN });
    }
    // v6 (KIP-1043): GROUP_ID_NOT_FOUND with Kafka's messages.
    let r = describe(&c, 6, &none, &["nope", "cg"], true);
    let got: Vec<(ErrorCode, &str, Option<&str>, i32)> = r
        .groups
        .iter()
        .map(|g| (code(g.error_code), g.group_state.as_str(), g.error_message.as_deref(), g.authorized_operations))
        .collect();
    assert_eq!(
        got,
        vec![
            (ErrorCode::GroupIdNotFound, "Dead", Some("Group nope not found."), i32::MIN),
            (ErrorCode::GroupIdNotFound, "Dead", Some("Group cg is not a classic group."), i32::MIN),
        ]
    );
    // Another coordinator's group: the error alone.
    let r = DescribeGroupsRequest::default().with_groups(vec!["cg".into()]);
    let g = &c.describe_groups(&r, 6, &none, &|_| ErrorCode::NotCoordinator).groups[0];
    assert_eq!(
        (code(g.error_code), g.group_state.as_str(), g.group_id.as_str()),
        (ErrorCode::NotCoordinator, "", "cg")
    );
}

// ----- ConsumerGroupDescribe -----

fn cg_describe(c: &Coordinator, offsets: &CommittedOffsets, ids: &[&str]) -> ConsumerGroupDescribeResponse {
    let r = ConsumerGroupDescribeRequest::default().with_group_ids(ids.iter().map(|g| (*g).to_owned()).collect());
    c.consumer_group_describe(&r, offsets, &topics(), &here)
}

type Named = Vec<(String, Vec<i32>)>;

fn named(a: &DescribedAssignment) -> Named {
    a.topic_partitions.iter().map(|t| (t.topic_name.clone(), t.partitions.clone())).collect()
}

#[test]
fn consumer_group_describe_shows_members_assignments_and_targets() {
    let mut c = coordinator();
    let none = CommittedOffsets::new();
    let a = cg_join("cg", "a", &["orders"])
        .with_rack_id(Some("rack-1".into()))
        .with_instance_id(Some("i-a".into()))
        .with_server_assignor(Some("range".into()));
    cg_beat(&mut c, "client-a", &a);
    let b = cg_join("cg", "b", &[]).with_subscribed_topic_regex(Some("pay.*".into()));
    cg_beat(&mut c, "client-b", &b);
    // b's regex is resolved on the group's next heartbeat: nothing for it yet, and a
    // has not caught up with epoch 3.
    let g = cg_describe(&c, &none, &["cg"]).groups.remove(0);
    assert_eq!((g.group_state.as_str(), g.group_epoch, g.assignment_epoch), ("Reconciling", 3, 3));
    let mb = &g.members[1];
    assert_eq!((mb.subscribed_topic_names.len(), mb.subscribed_topic_regex.as_deref()), (0, Some("pay.*")));
    assert!(mb.assignment.topic_partitions.is_empty() && mb.target_assignment.topic_partitions.is_empty());
    // a's heartbeat resolves the regex: b's target is payments, not assigned yet.
    let owned = |t: Uuid, ps: &[i32]| vec![Owned::default().with_topic_id(t).with_partitions(ps.to_vec())];
    let beat = |member: &str, epoch: i32, owned: Vec<Owned>| {
        ConsumerGroupHeartbeatRequest::default()
            .with_group_id("cg".into())
            .with_member_id(member.into())
            .with_member_epoch(epoch)
            .with_topic_partitions(Some(owned))
    };
    cg_beat(&mut c, "client-a", &beat("a", 2, owned(T, &[0, 1, 2, 3, 4, 5])));
    let g = cg_describe(&c, &none, &["cg"]).groups.remove(0);
    assert_eq!((g.group_state.as_str(), g.group_epoch, g.assignment_epoch), ("Reconciling", 4, 4));
    let mb = &g.members[1];
    assert_eq!(named(&mb.target_assignment), vec![("payments".to_owned(), vec![0, 1])]);
    assert!(mb.assignment.topic_partitions.is_empty());
    // b takes it: the group is Stable.
    cg_beat(&mut c, "client-b", &beat("b", 3, Vec::new()));
    let g = cg_describe(&c, &none, &["cg"]).groups.remove(0);
    assert_eq!(code(g.error_code), ErrorCode::None);
    assert_eq!((g.group_state.as_str(), g.assignor_name.as_str()), ("Stable", "range"));
    assert_eq!((g.group_epoch, g.assignment_epoch), (4, 4));
    assert_eq!(g.authorized_operations, i32::MIN);
    let (ma, mb) = (&g.members[0], &g.members[1]);
    assert_eq!(
        (ma.member_id.as_str(), ma.member_epoch, ma.instance_id.as_deref(), ma.rack_id.as_deref()),
        ("a", 4, Some("i-a"), Some("rack-1"))
    );
    assert_eq!((ma.client_id.as_str(), ma.client_host.as_str(), ma.member_type), ("client-a", HOST, 1));
    assert_eq!(
        (ma.subscribed_topic_names.clone(), ma.subscribed_topic_regex.clone()),
        (vec!["orders".to_owned()], None)
    );
    assert_eq!(named(&ma.assignment), vec![("orders".to_owned(), (0..6).collect())]);
    assert_eq!(named(&ma.target_assignment), named(&ma.assignment));
    assert_eq!(ma.assignment.topic_partitions[0].topic_id, T);
    assert_eq!((mb.member_epoch, mb.client_id.as_str()), (4, "client-b"));
    assert_eq!(named(&mb.assignment), vec![("payments".to_owned(), vec![0, 1])]);
    // A topic that no longer exists is left out; authorized operations when asked.
    let r = ConsumerGroupDescribeRequest::default()
        .with_group_ids(vec!["cg".into()])
        .with_include_authorized_operations(true);
    let only_orders = Topics::from([("orders".to_owned(), (T, 6))]);
    let g = c.consumer_group_describe(&r, &none, &only_orders, &here).groups.remove(0);
    assert!(
        g.members[1].assignment.topic_partitions.is_empty()
            && g.members[1].target_assignment.topic_partitions.is_empty()
    );
    assert_eq!(g.authorized_operations, 3400);
}

#[test]
fn consumer_group_describe_errors() {
    let mut c = coordinator();
    cg_beat(&mut c, "app", &cg_join("cg", "a", &["orders"]));
    stable_classic(&mut c, "k", "consumer", &Bytes::new(), b"");
    let offsets = committed(&[("simple", "orders", 0)]);
    let r = cg_describe(&c, &offsets, &["", "nope", "k", "simple", "cg"]);
    let got: Vec<(&str, ErrorCode, Option<&str>)> =
        r.groups.iter().map(|g| (g.group_id.as_str(), code(g.error_code), g.error_message.as_deref())).collect();
    assert_eq!(
        got,
        vec![
            ("", ErrorCode::InvalidGroupId, None),
            ("nope", ErrorCode::GroupIdNotFound, Some("Group nope not found.")),
            ("k", ErrorCode::GroupIdNotFound, Some("Group k is not a consumer group.")),
            ("simple", ErrorCode::GroupIdNotFound, Some("Group simple is not a consumer group.")),
            ("cg", ErrorCode::None, None),
        ]
    );
    let req = ConsumerGroupDescribeRequest::default().with_group_ids(vec!["cg".into()]);
    let g = &c.consumer_group_describe(&req, &offsets, &topics(), &|_| ErrorCode::NotCoordinator).groups[0];
    assert_eq!((g.group_id.as_str(), code(g.error_code)), ("cg", ErrorCode::NotCoordinator));
    // The consumer protocol turned off: every group UNSUPPORTED_VERSION, as Kafka answers.
    c.config.refuse_consumer_protocol = true;
    let r = cg_describe(&c, &offsets, &["cg", "k"]);
    assert!(r.groups.iter().all(|g| code(g.error_code) == ErrorCode::UnsupportedVersion));
    // An empty group after its members left.
    c.config.refuse_consumer_protocol = false;
    cg_leave(&mut c, "cg", "a", -1, None);
    let g = cg_describe(&c, &offsets, &["cg"]).groups.remove(0);
    assert_eq!((code(g.error_code), g.group_state.as_str(), g.members.len()), (ErrorCode::None, "Empty", 0));
}

// ----- DeleteGroups -----

fn delete(
    c: &mut Coordinator,
    offsets: &mut CommittedOffsets,
    ids: &[&str],
) -> (Vec<(String, ErrorCode)>, Vec<String>) {
    let r = DeleteGroupsRequest::default().with_groups_names(ids.iter().map(|g| (*g).to_owned()).collect());
    let (resp, deleted) =
        c.delete_groups(&r, offsets, &|g| if g == "far" { ErrorCode::NotCoordinator } else { ErrorCode::None });
    (resp.results.into_iter().map(|r| (r.group_id, code(r.error_code))).collect(), deleted)
}

#[test]
fn delete_groups_deletes_groups_without_members_and_their_offsets() {
    let mut c = coordinator();
    cg_beat(&mut c, "app", &cg_join("busy-cg", "a", &["orders"]));
    cg_beat(&mut c, "app", &cg_join("idle-cg", "b", &["orders"]));
    cg_leave(&mut c, "idle-cg", "b", -1, None);
    stable_classic(&mut c, "busy-k", "consumer", &Bytes::new(), b"");
    let left = stable_classic(&mut c, "idle-k", "consumer", &Bytes::new(), b"");
    classic_leave(&mut c, "idle-k", &left);
    // A static KIP-848 member away with epoch -2 is still a member.
    cg_beat(&mut c, "app", &cg_join("away", "s", &["orders"]).with_instance_id(Some("i".into())));
    cg_leave(&mut c, "away", "s", -2, Some("i"));
    let mut offsets = committed(&[
        ("simple", "orders", 0),
        ("idle-cg", "orders", 1),
        ("idle-k", "orders", 2),
        ("busy-cg", "orders", 3),
        ("far", "orders", 4),
    ]);
    let (results, deleted) = delete(
        &mut c,
        &mut offsets,
        &["simple", "idle-cg", "idle-k", "busy-cg", "busy-k", "away", "nope", "far", "simple"],
    );
    let expected = [
        ("simple", ErrorCode::None),
        ("idle-cg", ErrorCode::None),
        ("idle-k", ErrorCode::None),
        ("busy-cg", ErrorCode::NonEmptyGroup),
        ("busy-k", ErrorCode::NonEmptyGroup),
        ("away", ErrorCode::NonEmptyGroup),
        ("nope", ErrorCode::GroupIdNotFound),
        ("far", ErrorCode::NotCoordinator),
    ];
    assert_eq!(results, expected.map(|(g, e)| (g.to_owned(), e)).to_vec(), "each group once");
    assert_eq!(deleted, vec!["simple", "idle-cg", "idle-k"]);
    // Gone with their offsets; the others keep theirs.
    assert_eq!(offsets.keys().collect::<Vec<_>>(), vec!["busy-cg", "far"]);
    let listed: Vec<String> = list(&c, &offsets, &[], &[]).into_iter().map(|r| r.0).collect();
    assert_eq!(listed, vec!["away", "busy-cg", "busy-k", "far"]);
    assert_eq!(code(describe(&c, 6, &offsets, &["idle-k"], false).groups[0].error_code), ErrorCode::GroupIdNotFound);
    // Deleted twice: not found.
    assert_eq!(delete(&mut c, &mut offsets, &["simple"]).0, vec![("simple".to_owned(), ErrorCode::GroupIdNotFound)]);
}

// ----- OffsetDelete -----

fn offset_delete(group: &str, topics: &[(&str, &[i32])]) -> OffsetDeleteRequest {
    OffsetDeleteRequest::default().with_group_id(group.into()).with_topics(
        topics
            .iter()
            .map(|(t, ps)| {
                OffsetDeleteRequestTopic::default().with_name((*t).to_owned()).with_partitions(
                    ps.iter().map(|p| OffsetDeleteRequestPartition::default().with_partition_index(*p)).collect(),
                )
            })
            .collect(),
    )
}

type PartitionCodes = Vec<(String, Vec<(i32, ErrorCode)>)>;

fn delete_offsets(
    c: &Coordinator,
    offsets: &mut CommittedOffsets,
    r: &OffsetDeleteRequest,
) -> (ErrorCode, PartitionCodes, Vec<(String, i32)>) {
    let (resp, deleted) = c.delete_offsets(r, offsets, &topics(), &here);
    let topics = resp
        .topics
        .into_iter()
        .map(|t| (t.name, t.partitions.into_iter().map(|p| (p.partition_index, code(p.error_code))).collect()))
        .collect();
    (code(resp.error_code), topics, deleted)
}

fn codes(rows: &[(&str, &[(i32, ErrorCode)])]) -> PartitionCodes {
    rows.iter().map(|(t, ps)| ((*t).to_owned(), ps.to_vec())).collect()
}

#[test]
fn offset_delete_spares_topics_a_consumer_group_subscribes_to() {
    let mut c = coordinator();
    cg_beat(&mut c, "app", &cg_join("cg", "a", &["orders"]));
    let mut offsets = committed(&[("cg", "orders", 0), ("cg", "payments", 0), ("cg", "payments", 1)]);
    let r = offset_delete("cg", &[("orders", &[0]), ("payments", &[0, 7]), ("nope", &[0, 1])]);
    let (top, topics, deleted) = delete_offsets(&c, &mut offsets, &r);
    assert_eq!(top, ErrorCode::None);
    // Unknown topics and partitions first (KafkaApis answers them), then the coordinator's.
    let unknown = ErrorCode::UnknownTopicOrPartition;
    assert_eq!(
        topics,
        codes(&[
            ("payments", &[(7, unknown), (0, ErrorCode::None)]),
            ("nope", &[(0, unknown), (1, unknown)]),
            ("orders", &[(0, ErrorCode::GroupSubscribedToTopic)]),
        ])
    );
    assert_eq!(deleted, vec![("payments".to_owned(), 0)]);
    assert_eq!(
        offsets["cg"].keys().cloned().collect::<Vec<_>>(),
        vec![("orders".to_owned(), 0), ("payments".to_owned(), 1)]
    );
    // A topic matched by a member's regex counts as subscribed once resolved.
    let re = cg_join("cg", "b", &[]).with_subscribed_topic_regex(Some("pay.*".into()));
    cg_beat(&mut c, "app", &re);
    let beat = ConsumerGroupHeartbeatRequest::default()
        .with_group_id("cg".into())
        .with_member_id("b".into())
        .with_member_epoch(3)
        .with_topic_partitions(Some(Vec::new()));
    cg_beat(&mut c, "app", &beat);
    let (_, topics, _) = delete_offsets(&c, &mut offsets, &offset_delete("cg", &[("payments", &[1])]));
    assert_eq!(topics, codes(&[("payments", &[(1, ErrorCode::GroupSubscribedToTopic)])]));
}

#[test]
fn offset_delete_of_classic_and_simple_groups() {
    let mut c = coordinator();
    let mut offsets = committed(&[("k", "payments", 0), ("simple", "orders", 0), ("connect", "orders", 0)]);
    // Members subscribed to orders (the consumer protocol's metadata says so).
    stable_classic(&mut c, "k", "consumer", &subscription(&["orders"]), b"");
    let r = offset_delete("k", &[("orders", &[0]), ("payments", &[0])]);
    let (top, topics, _) = delete_offsets(&c, &mut offsets, &r);
    assert_eq!(top, ErrorCode::None);
    assert_eq!(
        topics,
        codes(&[("orders", &[(0, ErrorCode::GroupSubscribedToTopic)]), ("payments", &[(0, ErrorCode::None)])])
    );
    assert!(offsets["k"].is_empty(), "the group stays, without offsets");
    // Metadata that does not parse: the group may subscribe to anything.
    stable_classic(&mut c, "opaque", "consumer", &Bytes::from_static(b"?"), b"");
    let (_, topics, _) = delete_offsets(&c, &mut offsets, &offset_delete("opaque", &[("payments", &[1])]));
    assert_eq!(topics, codes(&[("payments", &[(1, ErrorCode::GroupSubscribedToTopic)])]));
    // Another protocol type with members: NON_EMPTY_GROUP for the whole request.
    stable_classic(&mut c, "connect", "connect", &Bytes::new(), b"");
    let (top, topics, deleted) =
        delete_offsets(&c, &mut offsets, &offset_delete("connect", &[("orders", &[0]), ("nope", &[0])]));
    assert_eq!((top, topics.len(), deleted.len()), (ErrorCode::NonEmptyGroup, 0, 0));
    assert_eq!(offsets["connect"].len(), 1);
    // A group with offsets only subscribes to nothing.
    let (top, topics, deleted) = delete_offsets(&c, &mut offsets, &offset_delete("simple", &[("orders", &[0])]));
    assert_eq!((top, topics), (ErrorCode::None, codes(&[("orders", &[(0, ErrorCode::None)])])));
    assert_eq!(deleted, vec![("orders".to_owned(), 0)]);
    assert_eq!(list(&c, &offsets, &[], &["classic"]).iter().filter(|r| r.0 == "simple").count(), 1, "still listed");
}

#[test]
fn offset_delete_errors_are_for_the_whole_request() {
    let c = coordinator();
    let mut offsets = committed(&[("g", "orders", 0)]);
    let r = offset_delete("nope", &[("orders", &[0]), ("unknown-topic", &[0])]);
    let (top, answered, _) = delete_offsets(&c, &mut offsets, &r);
    assert_eq!((top, answered.len()), (ErrorCode::GroupIdNotFound, 0));
    let (top, _, _) = delete_offsets(&c, &mut offsets, &offset_delete("", &[("orders", &[0])]));
    assert_eq!(top, ErrorCode::InvalidGroupId);
    let (resp, deleted) = c.delete_offsets(&offset_delete("g", &[("orders", &[0])]), &mut offsets, &topics(), &|_| {
        ErrorCode::NotCoordinator
    });
    assert_eq!((code(resp.error_code), resp.topics.len(), deleted.len()), (ErrorCode::NotCoordinator, 0, 0));
    assert_eq!(offsets["g"].len(), 1);
}
