//! klife-testkit's group coordinator against Apache Kafka's: the same raw
//! ConsumerGroupHeartbeat, JoinGroup, SyncGroup, Heartbeat, LeaveGroup and OffsetCommit
//! requests go to both, and the answers must agree in error code and shape (epochs,
//! generations, how many partitions each member is given, who leads). Kafka is the
//! reference: a difference fails the case, naming the step.
//!
//! Each scenario runs on its own group and topic against both brokers, then the two
//! transcripts are compared step by step.

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use klife_conformance::{Broker, unique_topic};
use klife_connection::{Connection, CoordinatorType};
use klife_protocol::ErrorCode;
use klife_protocol::messages::consumer_group_heartbeat_request::TopicPartitions;
use klife_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use klife_protocol::messages::leave_group_request::MemberIdentity;
use klife_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use klife_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use klife_protocol::messages::*;

/// One step of a transcript: its name, the error code, and what else is compared.
type Step = (&'static str, ErrorCode, String);

async fn coordinator(client: &klife::Client, group: &str) -> Connection {
    client.cluster().coordinator(CoordinatorType::Group, group).await.unwrap().connection
}

fn cghb(group: &str, member: &str, epoch: i32) -> ConsumerGroupHeartbeatRequest {
    ConsumerGroupHeartbeatRequest::default()
        .with_group_id(group.into())
        .with_member_id(member.into())
        .with_member_epoch(epoch)
}

fn cghb_join(group: &str, member: &str, topic: &str) -> ConsumerGroupHeartbeatRequest {
    cghb(group, member, 0)
        .with_rebalance_timeout_ms(30_000)
        .with_subscribed_topic_names(Some(vec![topic.into()]))
        .with_topic_partitions(Some(Vec::new()))
}

fn owned(r: &ConsumerGroupHeartbeatResponse) -> Vec<TopicPartitions> {
    r.assignment
        .as_ref()
        .map(|a| {
            a.topic_partitions
                .iter()
                .map(|t| TopicPartitions::default().with_topic_id(t.topic_id).with_partitions(t.partitions.clone()))
                .collect()
        })
        .unwrap_or_default()
}

fn count(r: &ConsumerGroupHeartbeatResponse) -> Option<usize> {
    r.assignment.as_ref().map(|a| a.topic_partitions.iter().map(|t| t.partitions.len()).sum())
}

fn commit(group: &str, member: &str, generation: i32, topic: &str) -> OffsetCommitRequest {
    OffsetCommitRequest::default()
        .with_group_id(group.into())
        .with_member_id(member.into())
        .with_generation_id_or_member_epoch(generation)
        .with_topics(vec![OffsetCommitRequestTopic::default().with_name(topic.into()).with_partitions(vec![
            OffsetCommitRequestPartition::default().with_partition_index(0).with_committed_offset(1),
        ])])
}

async fn commit_code(conn: &Connection, version: i16, r: OffsetCommitRequest) -> ErrorCode {
    ErrorCode::from_code(conn.send_version(&r, version).await.unwrap().topics[0].partitions[0].error_code)
}

async fn consumer_scenario(broker: Broker) -> Vec<Step> {
    let client = broker.client().await;
    let topic = unique_topic("tk-groups");
    broker.create_topic(&client, &topic, 2).await;
    let group = unique_topic("tk-848");
    let conn = coordinator(&client, &group).await;
    let mut steps: Vec<Step> = Vec::new();
    let send = |r: ConsumerGroupHeartbeatRequest| {
        let conn = conn.clone();
        async move { conn.send_version(&r, 1).await.unwrap() }
    };
    let code = |r: &ConsumerGroupHeartbeatResponse| ErrorCode::from_code(r.error_code);

    let r = send(cghb_join(&group, "a", &topic).with_rebalance_timeout_ms(-1)).await;
    steps.push(("join without a rebalance timeout", code(&r), String::new()));
    let r = send(cghb_join(&group, "a", &topic).with_topic_partitions(None)).await;
    steps.push(("join with null owned partitions", code(&r), String::new()));
    let r = send(cghb_join(&group, "a", &topic).with_server_assignor(Some("nope".into()))).await;
    steps.push(("join with an unknown assignor", code(&r), String::new()));
    let r = send(cghb_join(&group, "a", &topic).with_subscribed_topic_regex(Some("(".into()))).await;
    steps.push(("join with a bad regex", code(&r), String::new()));
    let none = unique_topic("tk-none");
    let r = coordinator(&client, &none).await.send_version(&cghb(&none, "a", 1), 1).await.unwrap();
    steps.push(("heartbeat to a group that does not exist", code(&r), String::new()));

    let a = send(cghb_join(&group, "a", &topic)).await;
    steps.push(("first join", code(&a), format!("epoch {} partitions {:?}", a.member_epoch, count(&a))));
    let a_epoch = a.member_epoch;
    let a_owned = owned(&a);
    let r = send(cghb(&group, "a", a_epoch + 5).with_topic_partitions(Some(a_owned.clone()))).await;
    steps.push(("an epoch ahead", code(&r), String::new()));
    let r = send(cghb(&group, "x", 1)).await;
    steps.push(("an unknown member", code(&r), String::new()));

    let b = send(cghb_join(&group, "b", &topic)).await;
    steps.push(("second join", code(&b), format!("epoch {} partitions {:?}", b.member_epoch, count(&b))));
    let r = send(cghb(&group, "a", a_epoch).with_topic_partitions(Some(a_owned.clone()))).await;
    steps.push((
        "first member asked to revoke",
        code(&r),
        format!("epoch {} partitions {:?}", r.member_epoch, count(&r)),
    ));
    let kept = owned(&r);
    let r = send(cghb(&group, "b", b.member_epoch).with_topic_partitions(Some(Vec::new()))).await;
    steps.push(("second member before the release", code(&r), format!("partitions {:?}", count(&r).unwrap_or(0))));
    let r = send(cghb(&group, "a", a_epoch).with_topic_partitions(Some(kept))).await;
    steps.push(("first member acknowledges", code(&r), format!("epoch {}", r.member_epoch)));
    let a_epoch = r.member_epoch;
    let r = send(cghb(&group, "b", b.member_epoch).with_topic_partitions(Some(Vec::new()))).await;
    steps.push((
        "second member after the release",
        code(&r),
        format!("epoch {} partitions {:?}", r.member_epoch, count(&r)),
    ));

    steps.push((
        "commit at the member epoch",
        commit_code(&conn, 9, commit(&group, "a", a_epoch, &topic)).await,
        String::new(),
    ));
    steps.push((
        "commit at an older epoch",
        commit_code(&conn, 9, commit(&group, "a", a_epoch - 1, &topic)).await,
        String::new(),
    ));
    steps.push((
        "commit at a newer epoch",
        commit_code(&conn, 9, commit(&group, "a", a_epoch + 1, &topic)).await,
        String::new(),
    ));
    steps.push((
        "commit of an unknown member",
        commit_code(&conn, 9, commit(&group, "zz", a_epoch, &topic)).await,
        String::new(),
    ));
    steps.push((
        "simple commit to a group with members",
        commit_code(&conn, 9, commit(&group, "", -1, &topic)).await,
        String::new(),
    ));

    let join = classic_join(&group, "", "other-type");
    let r = conn.send_version(&join, 9).await.unwrap();
    steps.push(("classic join of another protocol type", ErrorCode::from_code(r.error_code), String::new()));

    let mut s1 = cghb_join(&group, "s1", &topic);
    s1.instance_id = Some("instance".into());
    let r = send(s1).await;
    steps.push(("static join", code(&r), String::new()));
    let mut s2 = cghb_join(&group, "s2", &topic);
    s2.instance_id = Some("instance".into());
    let r = send(s2).await;
    steps.push(("a second instance with the same id", code(&r), String::new()));

    let r = send(cghb(&group, "b", -1)).await;
    steps.push(("leave", code(&r), format!("epoch {}", r.member_epoch)));
    let r = send(cghb(&group, "b", -1)).await;
    steps.push(("leave again", code(&r), String::new()));
    client.close().await;
    steps
}

fn classic_join(group: &str, member: &str, protocol_type: &str) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id(group.into())
        .with_session_timeout_ms(30_000)
        .with_rebalance_timeout_ms(30_000)
        .with_member_id(member.into())
        .with_protocol_type(protocol_type.into())
        .with_protocols(vec![
            JoinGroupRequestProtocol::default().with_name("mine".into()).with_metadata(Bytes::from_static(b"metadata")),
        ])
}

async fn classic_scenario(broker: Broker) -> Vec<Step> {
    let client = broker.client().await;
    let topic = unique_topic("tk-classic");
    broker.create_topic(&client, &topic, 1).await;
    let group = unique_topic("tk-classic");
    let conn = coordinator(&client, &group).await;
    let mut steps: Vec<Step> = Vec::new();
    let jcode = |r: &JoinGroupResponse| ErrorCode::from_code(r.error_code);

    steps.push(("commit to no group, v9", commit_code(&conn, 9, commit(&group, "m", 3, &topic)).await, String::new()));
    steps.push(("commit to no group, v8", commit_code(&conn, 8, commit(&group, "m", 3, &topic)).await, String::new()));
    let r = conn.send_version(&classic_join(&group, "", "test").with_session_timeout_ms(10), 9).await.unwrap();
    steps.push(("join with a tiny session timeout", jcode(&r), String::new()));
    let r = conn.send_version(&classic_join(&group, "", "test"), 9).await.unwrap();
    steps.push(("first join without a member id", jcode(&r), format!("member id given {}", !r.member_id.is_empty())));
    let id = r.member_id;
    let r = conn.send_version(&classic_join(&group, &id, "test"), 9).await.unwrap();
    steps.push((
        "join with the id",
        jcode(&r),
        format!(
            "generation {} leads {} members {} protocol {:?}/{:?}",
            r.generation_id,
            r.leader == id,
            r.members.len(),
            r.protocol_type,
            r.protocol_name
        ),
    ));
    let generation = r.generation_id;
    let hb = |member: &str, generation: i32| {
        HeartbeatRequest::default()
            .with_group_id(group.clone())
            .with_member_id(member.into())
            .with_generation_id(generation)
    };
    let hcode = |r: HeartbeatResponse| ErrorCode::from_code(r.error_code);
    steps.push((
        "heartbeat before the sync",
        hcode(conn.send_version(&hb(&id, generation), 4).await.unwrap()),
        String::new(),
    ));
    steps.push((
        "heartbeat of another generation",
        hcode(conn.send_version(&hb(&id, generation + 1), 4).await.unwrap()),
        String::new(),
    ));
    steps.push((
        "heartbeat of an unknown member",
        hcode(conn.send_version(&hb("nobody", generation), 4).await.unwrap()),
        String::new(),
    ));
    steps.push((
        "commit before the sync",
        commit_code(&conn, 9, commit(&group, &id, generation, &topic)).await,
        String::new(),
    ));
    let sync = |generation: i32| {
        SyncGroupRequest::default()
            .with_group_id(group.clone())
            .with_member_id(id.clone())
            .with_generation_id(generation)
            .with_protocol_type(Some("test".into()))
            .with_protocol_name(Some("mine".into()))
            .with_assignments(vec![
                SyncGroupRequestAssignment::default()
                    .with_member_id(id.clone())
                    .with_assignment(Bytes::from_static(b"all")),
            ])
    };
    let r = conn.send_version(&sync(generation + 1), 5).await.unwrap();
    steps.push(("sync of another generation", ErrorCode::from_code(r.error_code), String::new()));
    let r = conn.send_version(&sync(generation), 5).await.unwrap();
    steps.push((
        "leader's sync",
        ErrorCode::from_code(r.error_code),
        format!("assignment {:?} protocol {:?}", r.assignment, r.protocol_name),
    ));
    steps.push((
        "commit at the generation",
        commit_code(&conn, 9, commit(&group, &id, generation, &topic)).await,
        String::new(),
    ));
    steps.push((
        "commit at another generation",
        commit_code(&conn, 9, commit(&group, &id, generation + 1, &topic)).await,
        String::new(),
    ));
    steps.push((
        "commit of an unknown member",
        commit_code(&conn, 9, commit(&group, "nobody", generation, &topic)).await,
        String::new(),
    ));
    steps.push((
        "simple commit to a group with members",
        commit_code(&conn, 9, commit(&group, "", -1, &topic)).await,
        String::new(),
    ));
    let r = conn.send_version(&classic_join(&group, "", "other"), 9).await.unwrap();
    steps.push(("join of another protocol type", jcode(&r), String::new()));
    let r = conn.send_version(&cghb_join(&group, "k", &topic), 1).await.unwrap();
    steps.push(("KIP-848 join to the classic group", ErrorCode::from_code(r.error_code), String::new()));
    let leave = LeaveGroupRequest::default()
        .with_group_id(group.clone())
        .with_members(vec![MemberIdentity::default().with_member_id(id.clone())]);
    let r = conn.send_version(&leave, 5).await.unwrap();
    steps.push((
        "leave",
        ErrorCode::from_code(r.error_code),
        format!("{:?}", r.members.iter().map(|m| m.error_code).collect::<Vec<_>>()),
    ));
    let r = conn.send_version(&leave, 5).await.unwrap();
    steps.push((
        "leave again",
        ErrorCode::from_code(r.error_code),
        format!("{:?}", r.members.iter().map(|m| m.error_code).collect::<Vec<_>>()),
    ));
    steps.push((
        "heartbeat after leaving",
        hcode(conn.send_version(&hb(&id, generation), 4).await.unwrap()),
        String::new(),
    ));
    client.close().await;
    steps
}

fn compare(kafka: &[Step], testkit: &[Step]) {
    assert_eq!(kafka.len(), testkit.len());
    let mut differences = Vec::new();
    for (k, t) in kafka.iter().zip(testkit) {
        if k != t {
            differences.push(format!("{}: Kafka {:?} {}, klife-testkit {:?} {}", k.0, k.1, k.2, t.1, t.2));
        }
    }
    assert!(differences.is_empty(), "the coordinators differ:\n{}", differences.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kip848_answers_match_kafka() {
    let kafka = consumer_scenario(Broker::Kafka).await;
    let testkit = consumer_scenario(Broker::Testkit).await;
    compare(&kafka, &testkit);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classic_answers_match_kafka() {
    let kafka = classic_scenario(Broker::Kafka).await;
    let testkit = classic_scenario(Broker::Testkit).await;
    compare(&kafka, &testkit);
}
