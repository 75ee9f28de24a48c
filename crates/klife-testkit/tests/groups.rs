//! The group coordinator over the wire: classic joins parked at the barrier and
//! answered when the group completes it, KIP-848 heartbeats, the coordinator checks,
//! the group admin APIs and the test hooks (clock, expiry, coordinator moves, refusing
//! the consumer protocol).

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::Raw;
use klife_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use klife_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use klife_protocol::messages::offset_delete_request::{OffsetDeleteRequestPartition, OffsetDeleteRequestTopic};
use klife_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use klife_protocol::messages::*;
use klife_protocol::{ApiKey, ErrorCode};
use klife_testkit::{FakeCluster, GroupProtocol};

fn join(group: &str, member: &str) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(group.into())
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(30_000)
        .with_member_id(member.into())
        .with_protocol_type("consumer".into())
        .with_protocols(vec![
            JoinGroupRequestProtocol::default().with_name("range".into()).with_metadata(Bytes::from_static(b"sub")),
        ])
}

fn cghb_join(group: &str, member: &str, topic: &str) -> ConsumerGroupHeartbeatRequest {
    ConsumerGroupHeartbeatRequest::default()
        .with_group_id(group.into())
        .with_member_id(member.into())
        .with_rebalance_timeout_ms(30_000)
        .with_subscribed_topic_names(Some(vec![topic.into()]))
        .with_topic_partitions(Some(Vec::new()))
}

async fn coordinator_of(cluster: &FakeCluster, group: &str) -> Raw {
    let node = cluster.coordinator(group).unwrap();
    Raw::connect(&cluster.broker_address(node).unwrap()).await
}

#[tokio::test]
async fn classic_members_meet_at_the_join_and_sync_barriers() {
    let cluster = FakeCluster::builder().brokers(3).manual_clock().start().await.unwrap();
    let mut a = coordinator_of(&cluster, "g").await;
    let mut b = coordinator_of(&cluster, "g").await;
    let r = a.send(&join("g", ""), 9).await;
    assert_eq!(ErrorCode::from_code(r.error_code), ErrorCode::MemberIdRequired);
    let a_id = r.member_id;
    let r = a.send(&join("g", &a_id), 9).await;
    assert_eq!((r.error_code, r.generation_id, r.leader.as_str()), (0, 1, a_id.as_str()));
    let sync = |member: &str, generation, assignments: Vec<SyncGroupRequestAssignment>| {
        SyncGroupRequest::default()
            .with_group_id("g".into())
            .with_member_id(member.into())
            .with_generation_id(generation)
            .with_assignments(assignments)
    };
    let r = a.send(&sync(&a_id, 1, vec![]), 5).await;
    assert_eq!(r.error_code, 0);
    // b joins: parked until a rejoins.
    let b_id = b.send(&join("g", ""), 9).await.member_id;
    let pending = b.send_only(&join("g", &b_id), 9).await;
    let hb = HeartbeatRequest::default().with_group_id("g".into()).with_member_id(a_id.clone()).with_generation_id(1);
    assert_eq!(ErrorCode::from_code(a.send(&hb, 4).await.error_code), ErrorCode::RebalanceInProgress);
    let ra = a.send(&join("g", &a_id), 9).await;
    let rb: JoinGroupResponse = b.receive(9, pending).await;
    assert_eq!((ra.generation_id, rb.generation_id), (2, 2));
    assert_eq!((ra.members.len(), rb.members.len()), (2, 0));
    // b's sync waits for the leader's.
    let pending = b.send_only(&sync(&b_id, 2, vec![]), 5).await;
    let assignments = vec![
        SyncGroupRequestAssignment::default().with_member_id(a_id.clone()).with_assignment(Bytes::from_static(b"A")),
        SyncGroupRequestAssignment::default().with_member_id(b_id.clone()).with_assignment(Bytes::from_static(b"B")),
    ];
    assert_eq!(a.send(&sync(&a_id, 2, assignments), 5).await.assignment.as_ref(), b"A");
    let rb: SyncGroupResponse = b.receive(5, pending).await;
    assert_eq!((rb.error_code, rb.assignment.as_ref(), rb.protocol_name.as_deref()), (0, &b"B"[..], Some("range")));
    let d = cluster.describe_group("g").unwrap();
    assert_eq!((d.protocol, d.state, d.epoch, d.members.len()), (GroupProtocol::Classic, "Stable", 2, 2));
    // b stops heartbeating: its session ends on the cluster clock, not before.
    cluster.advance_clock(Duration::from_secs(9));
    let hb = HeartbeatRequest::default().with_group_id("g".into()).with_member_id(a_id.clone()).with_generation_id(2);
    assert_eq!(a.send(&hb, 4).await.error_code, 0);
    cluster.advance_clock(Duration::from_secs(1));
    assert_eq!(ErrorCode::from_code(a.send(&hb, 4).await.error_code), ErrorCode::RebalanceInProgress);
    assert_eq!(cluster.describe_group("g").unwrap().members.len(), 1);
}

#[tokio::test]
async fn a_kip848_member_on_the_cluster_clock_and_the_hooks() {
    let cluster = FakeCluster::builder()
        .brokers(3)
        .topic("t", 4)
        .manual_clock()
        .consumer_heartbeat_interval(Duration::from_millis(50))
        .consumer_session_timeout(Duration::from_secs(2))
        .start()
        .await
        .unwrap();
    let node = cluster.coordinator("g").unwrap();
    let other = cluster.broker_ids().into_iter().find(|b| *b != node).unwrap();
    let mut wrong = Raw::connect(&cluster.broker_address(other).unwrap()).await;
    assert_eq!(
        ErrorCode::from_code(wrong.send(&cghb_join("g", "a", "t"), 1).await.error_code),
        ErrorCode::NotCoordinator
    );
    let mut c = coordinator_of(&cluster, "g").await;
    let r = c.send(&cghb_join("g", "a", "t"), 1).await;
    assert_eq!((r.error_code, r.member_epoch, r.heartbeat_interval_ms), (0, 2, 50));
    assert_eq!(r.assignment.unwrap().topic_partitions[0].partitions, vec![0, 1, 2, 3]);
    let d = cluster.describe_group("g").unwrap();
    assert_eq!((d.protocol, d.epoch), (GroupProtocol::Consumer, 2));
    assert_eq!(d.members[0].assigned.len(), 4);
    // Injected errors reach the heartbeat.
    cluster.inject_errors(ApiKey::ConsumerGroupHeartbeat, &[ErrorCode::CoordinatorLoadInProgress], None);
    let r = c
        .send(
            &ConsumerGroupHeartbeatRequest::default()
                .with_group_id("g".into())
                .with_member_id("a".into())
                .with_member_epoch(2),
            1,
        )
        .await;
    assert_eq!(ErrorCode::from_code(r.error_code), ErrorCode::CoordinatorLoadInProgress);
    // The session ends when the clock passes it.
    cluster.advance_clock(Duration::from_millis(1_999));
    assert_eq!(cluster.describe_group("g").unwrap().members.len(), 1);
    cluster.advance_clock(Duration::from_millis(1));
    assert!(cluster.describe_group("g").unwrap().members.is_empty());
    // Expire by hand, rebalance by hand.
    c.send(&cghb_join("g", "b", "t"), 1).await;
    assert!(cluster.force_rebalance("g"));
    assert_eq!(cluster.describe_group("g").unwrap().epoch, 5);
    assert!(cluster.expire_member("g", "b"));
    assert!(!cluster.expire_member("g", "b"));
    // The coordinator moves: the old one says so.
    cluster.move_group_coordinator("g", other).unwrap();
    assert_eq!(cluster.coordinator("g"), Some(other));
    assert_eq!(ErrorCode::from_code(c.send(&cghb_join("g", "a", "t"), 1).await.error_code), ErrorCode::NotCoordinator);
    assert_eq!(wrong.send(&cghb_join("g", "a", "t"), 1).await.error_code, 0);
}

async fn advertised(cluster: &FakeCluster) -> Option<(i16, i16)> {
    advertised_api(cluster, ApiKey::ConsumerGroupHeartbeat).await
}

async fn advertised_api(cluster: &FakeCluster, api: ApiKey) -> Option<(i16, i16)> {
    let mut c = Raw::connect(&cluster.addresses()[0]).await;
    let r = c
        .send(
            &ApiVersionsRequest::default()
                .with_client_software_name("t".into())
                .with_client_software_version("1".into()),
            3,
        )
        .await;
    r.api_keys.iter().find(|k| k.api_key == api.code()).map(|k| (k.min_version, k.max_version))
}

#[tokio::test]
async fn the_consumer_protocol_can_be_refused_or_not_advertised() {
    let cluster = FakeCluster::builder().topic("t", 1).start().await.unwrap();
    assert_eq!(advertised(&cluster).await, Some((0, 1)));
    cluster.refuse_consumer_group_heartbeat(true);
    assert_eq!(advertised(&cluster).await, Some((0, 1)));
    let mut c = coordinator_of(&cluster, "g").await;
    assert_eq!(
        ErrorCode::from_code(c.send(&cghb_join("g", "a", "t"), 1).await.error_code),
        ErrorCode::UnsupportedVersion
    );
    cluster.refuse_consumer_group_heartbeat(false);
    assert_eq!(c.send(&cghb_join("g", "a", "t"), 1).await.error_code, 0);

    cluster.refuse_consumer_group_heartbeat(true);
    let d = c.send(&ConsumerGroupDescribeRequest::default().with_group_ids(vec!["g".into()]), 1).await;
    assert_eq!(ErrorCode::from_code(d.groups[0].error_code), ErrorCode::UnsupportedVersion);

    let without = FakeCluster::builder().consumer_group_protocol(false).start().await.unwrap();
    assert_eq!(advertised(&without).await, None);
    assert_eq!(advertised_api(&without, ApiKey::ConsumerGroupDescribe).await, None);
    assert_eq!(advertised_api(&cluster, ApiKey::ConsumerGroupDescribe).await, Some((0, 1)));
}

#[tokio::test]
async fn a_parked_join_whose_connection_closes_is_dropped() {
    let cluster = FakeCluster::builder().manual_clock().start().await.unwrap();
    let mut a = coordinator_of(&cluster, "g").await;
    let id = a.send(&join("g", ""), 9).await.member_id;
    a.send(&join("g", &id), 9).await;
    let mut b = coordinator_of(&cluster, "g").await;
    let b_id = b.send(&join("g", ""), 9).await.member_id;
    b.send_only(&join("g", &b_id), 9).await;
    drop(b);
    // The barrier completes without b's connection; a gets its answer.
    let r = a.send(&join("g", &id), 9).await;
    assert_eq!((r.error_code, r.generation_id), (0, 2));
}

#[tokio::test]
async fn the_group_admin_apis_answer_from_each_groups_coordinator() {
    let cluster = FakeCluster::builder().brokers(3).topic("t", 2).manual_clock().start().await.unwrap();
    // An admin commit makes "offsets" a group; a KIP-848 member and a classic one make
    // the two others.
    let mut offsets = coordinator_of(&cluster, "offsets").await;
    let commit = OffsetCommitRequest::default()
        .with_group_id("offsets".into())
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default().with_name("t".into()).with_partitions(vec![
            OffsetCommitRequestPartition::default().with_partition_index(0).with_committed_offset(7),
        ])]);
    assert_eq!(offsets.send(&commit, 9).await.topics[0].partitions[0].error_code, 0);
    let mut cg = coordinator_of(&cluster, "cg").await;
    assert_eq!(cg.send(&cghb_join("cg", "a", "t"), 1).await.error_code, 0);
    let mut k = coordinator_of(&cluster, "k").await;
    let id = k.send(&join("k", ""), 9).await.member_id;
    assert_eq!(k.send(&join("k", &id), 9).await.error_code, 0);
    // Each broker lists the groups it coordinates.
    let mut listed = Vec::new();
    for broker in cluster.broker_ids() {
        let mut c = Raw::connect(&cluster.broker_address(broker).unwrap()).await;
        for g in c.send(&ListGroupsRequest::default(), 5).await.groups {
            assert_eq!(cluster.coordinator(&g.group_id), Some(broker));
            listed.push((g.group_id, g.protocol_type, g.group_state, g.group_type));
        }
    }
    listed.sort();
    let row = |a: &str, b: &str, c: &str, d: &str| (a.to_owned(), b.to_owned(), c.to_owned(), d.to_owned());
    assert_eq!(
        listed,
        vec![
            row("cg", "consumer", "Stable", "consumer"),
            row("k", "consumer", "CompletingRebalance", "classic"),
            row("offsets", "", "Empty", "classic"),
        ]
    );
    // Members carry the client id and address of their connection.
    let d = cg.send(&ConsumerGroupDescribeRequest::default().with_group_ids(vec!["cg".into()]), 1).await;
    let m = &d.groups[0].members[0];
    assert_eq!((m.client_id.as_str(), m.client_host.as_str()), ("testkit-tests", "/127.0.0.1"));
    let d = k.send(&DescribeGroupsRequest::default().with_groups(vec!["k".into(), "cg".into()]), 6).await;
    let m = &d.groups[0].members[0];
    assert_eq!((m.client_id.as_str(), m.client_host.as_str()), ("testkit-tests", "/127.0.0.1"));
    let on_k = cluster.coordinator("cg") == cluster.coordinator("k");
    let expected = if on_k { ErrorCode::GroupIdNotFound } else { ErrorCode::NotCoordinator };
    assert_eq!(ErrorCode::from_code(d.groups[1].error_code), expected);
    // OffsetDelete: the KIP-848 group subscribes to t.
    let delete_offsets = |group: &str| {
        OffsetDeleteRequest::default().with_group_id(group.into()).with_topics(vec![
            OffsetDeleteRequestTopic::default()
                .with_name("t".into())
                .with_partitions(vec![OffsetDeleteRequestPartition::default().with_partition_index(0)]),
        ])
    };
    let r = cg.send(&delete_offsets("cg"), 0).await;
    assert_eq!(ErrorCode::from_code(r.topics[0].partitions[0].error_code), ErrorCode::GroupSubscribedToTopic);
    // DeleteGroups, after an injected error.
    cluster.inject_errors(ApiKey::DeleteGroups, &[ErrorCode::CoordinatorLoadInProgress], None);
    let delete = DeleteGroupsRequest::default().with_groups_names(vec!["offsets".into()]);
    let r = offsets.send(&delete, 2).await;
    assert_eq!(ErrorCode::from_code(r.results[0].error_code), ErrorCode::CoordinatorLoadInProgress);
    assert_eq!(cluster.committed_offsets("offsets").len(), 1);
    assert_eq!(offsets.send(&delete, 2).await.results[0].error_code, 0);
    assert!(cluster.committed_offsets("offsets").is_empty());
    let r = offsets.send(&DescribeGroupsRequest::default().with_groups(vec!["offsets".into()]), 6).await;
    assert_eq!(ErrorCode::from_code(r.groups[0].error_code), ErrorCode::GroupIdNotFound);
}
