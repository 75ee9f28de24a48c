//! The group coordinator over the wire: classic joins parked at the barrier and
//! answered when the group completes it, KIP-848 heartbeats, the coordinator checks and
//! the test hooks (clock, expiry, coordinator moves, refusing the consumer protocol).

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::Raw;
use klife_protocol::messages::join_group_request::JoinGroupRequestProtocol;
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
    assert_eq!((r.error_code, r.member_epoch, r.heartbeat_interval_ms), (0, 1, 50));
    assert_eq!(r.assignment.unwrap().topic_partitions[0].partitions, vec![0, 1, 2, 3]);
    let d = cluster.describe_group("g").unwrap();
    assert_eq!((d.protocol, d.epoch), (GroupProtocol::Consumer, 1));
    assert_eq!(d.members[0].assigned.len(), 4);
    // Injected errors reach the heartbeat.
    cluster.inject_errors(ApiKey::ConsumerGroupHeartbeat, &[ErrorCode::CoordinatorLoadInProgress], None);
    let r = c
        .send(
            &ConsumerGroupHeartbeatRequest::default()
                .with_group_id("g".into())
                .with_member_id("a".into())
                .with_member_epoch(1),
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
    assert_eq!(cluster.describe_group("g").unwrap().epoch, 4);
    assert!(cluster.expire_member("g", "b"));
    assert!(!cluster.expire_member("g", "b"));
    // The coordinator moves: the old one says so.
    cluster.move_group_coordinator("g", other).unwrap();
    assert_eq!(cluster.coordinator("g"), Some(other));
    assert_eq!(ErrorCode::from_code(c.send(&cghb_join("g", "a", "t"), 1).await.error_code), ErrorCode::NotCoordinator);
    assert_eq!(wrong.send(&cghb_join("g", "a", "t"), 1).await.error_code, 0);
}

async fn advertised(cluster: &FakeCluster) -> Option<(i16, i16)> {
    let mut c = Raw::connect(&cluster.addresses()[0]).await;
    let r = c
        .send(
            &ApiVersionsRequest::default()
                .with_client_software_name("t".into())
                .with_client_software_version("1".into()),
            3,
        )
        .await;
    r.api_keys
        .iter()
        .find(|k| k.api_key == ApiKey::ConsumerGroupHeartbeat.code())
        .map(|k| (k.min_version, k.max_version))
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

    let without = FakeCluster::builder().consumer_group_protocol(false).start().await.unwrap();
    assert_eq!(advertised(&without).await, None);
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
