//! Consumer groups under the classic protocol (JoinGroup, SyncGroup, Heartbeat,
//! LeaveGroup), each member driven by klife-group's task
//! (`klife_group::driver::GroupMember::start_classic`), against Apache Kafka (the
//! protocol forced: the test cluster also has KIP-848), Tansu, librdkafka's mock
//! cluster and klife-testkit; and the automatic choice of protocol
//! (`GroupMember::start_auto`).
//!
//! Every case checks ownership on the members' events: a partition is taken from its
//! owner when the owner releases it or loses it, given on `Assigned`, and is never
//! owned by two members at once. The cases:
//!
//! - cooperative-sticky: a member alone gets every partition; a second one takes
//!   half, and the first gives up only those (never all); a graceful leave gives them
//!   back;
//! - eager (range): the first member gives up all its partitions when the second
//!   joins, then both get half;
//! - a member aborted without leaving: its partitions move to the other once its
//!   session timeout passes (6 s here; Kafka's `group.min.session.timeout.ms` is 1 s in
//!   the test cluster);
//! - a revocation the user holds for twice the session timeout (eager, so that the
//!   rebalance waits for it): the member's heartbeats go on, it stays in the group and
//!   loses nothing, and the rebalance completes once it releases (not on the mock
//!   cluster, which removes it: its heartbeats during a rebalance do not count);
//! - a static member (instance id) that leaves (no LeaveGroup) and comes back under
//!   the same instance id within its session timeout gets its partitions back in the
//!   same generation on Kafka: no rebalance (Tansu and klife-testkit rebalance, and
//!   give them back; the mock cluster has no static membership);
//! - automatic choice: on Kafka and klife-testkit the member runs KIP-848; on Tansu
//!   (no ConsumerGroupHeartbeat) it falls back to the classic protocol without an `Ended`
//!   event and is assigned. The shared mock cluster has KIP-848 but aborts on a join
//!   with topic names and no regex (see README.md): the automatic choice runs against
//!   a private mock cluster with ConsumerGroupHeartbeat switched off, where it falls
//!   back.
//!
//! No case asserts on time: each waits for the events, under a generous hang guard.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use klife_conformance::groups::Owners;
use klife_conformance::{Broker, MockCluster, unique_topic};
use klife_group::assignor::RangeAssignor;
use klife_group::driver::{DriverConfig, Ended, GroupMember, MemberEvent};
use klife_group::membership::classic::ClassicConfig;
use klife_group::membership::consumer::{ConsumerConfig, Outcome, Subscription, member_id_from_random};
use klife_group::offsets::GroupProtocol;
use klife_protocol::ApiKey;
use klife_protocol::types::TopicPartition;

klife_conformance::against_brokers!(
    [kafka: Kafka, tansu: Tansu, rdkafka_mock: RdkafkaMock, testkit: Testkit]
    cooperative_a_second_member_takes_only_what_moves_and_a_leave_gives_it_back,
    eager_a_second_member_makes_the_first_give_up_everything,
    a_member_gone_without_leaving_loses_its_partitions_after_the_session_timeout,
);

// Not on the mock cluster: during a rebalance it answers heartbeats
// REBALANCE_IN_PROGRESS without counting them as signs of life, so a member that takes
// longer than its session timeout to rejoin is removed (Kafka counts them).
klife_conformance::against_brokers!(
    [kafka: Kafka, tansu: Tansu, testkit: Testkit]
    a_revocation_held_past_the_session_timeout_keeps_the_member_in_the_group,
);

// Not on the mock cluster: it has no static membership (it finds members by member id
// only), so the member that left stays in the group until its session timeout and the
// rebalance waits for it; a JoinGroup sent again after the first one's request timed
// out, while the mock still holds the first, aborts the mock process
// (`rd_kafka_mock_cgrp.c:603`, `!member->resp`).
klife_conformance::against_brokers!(
    [kafka: Kafka, tansu: Tansu, testkit: Testkit]
    a_static_member_back_within_its_session_timeout_keeps_its_partitions_without_a_rebalance,
);

klife_conformance::against_brokers!(
    [kafka: Kafka, tansu: Tansu, testkit: Testkit]
    the_automatic_choice_runs_kip848_where_the_coordinator_has_it_and_classic_elsewhere,
);

/// The longest any wait for an event may take before the case fails as hung.
const HANG_GUARD: Duration = Duration::from_secs(120);

/// The partitions of the topic the members share (the mock cluster auto-creates 4).
const PARTITIONS: i32 = 4;

/// The session timeout of the members: short, for the case of a member gone.
const SESSION_TIMEOUT: Duration = Duration::from_secs(6);

fn config(group: &str, topic: &str) -> ClassicConfig {
    ClassicConfig::new(group, [topic])
        .with_session_timeout(SESSION_TIMEOUT)
        .with_heartbeat_interval(Duration::from_secs(1))
        .with_rebalance_timeout(Duration::from_secs(20))
}

/// The driver's settings for `broker`: librdkafka's mock cluster advertises JoinGroup
/// v6, SyncGroup v4 and LeaveGroup v3-v4 but reads them with older layouts (it closes
/// the connection on them), so the versions its own client sends are the highest.
fn driver(broker: Broker) -> DriverConfig {
    match broker {
        Broker::RdkafkaMock => DriverConfig::default()
            .with_max_version(ApiKey::JoinGroup, 5)
            .with_max_version(ApiKey::SyncGroup, 3)
            .with_max_version(ApiKey::LeaveGroup, 2),
        _ => DriverConfig::default(),
    }
}

fn start(broker: Broker, client: &klife::Client, config: ClassicConfig) -> GroupMember {
    let m = GroupMember::start_classic(client.cluster().clone(), config, driver(broker)).unwrap();
    assert_eq!(m.protocol(), GroupProtocol::Classic);
    m
}

fn all(topic: &str) -> BTreeSet<TopicPartition> {
    (0..PARTITIONS).map(|p| TopicPartition::new(topic, p)).collect()
}

const HALF: usize = PARTITIONS as usize / 2;

async fn topic_and_group(broker: Broker, client: &klife::Client, prefix: &str) -> (String, String) {
    let topic = unique_topic(prefix);
    broker.create_topic(client, &topic, PARTITIONS).await;
    (topic, unique_topic(&format!("{prefix}-g")))
}

async fn cooperative_a_second_member_takes_only_what_moves_and_a_leave_gives_it_back(broker: Broker) {
    let client = broker.client().await;
    let (topic, group) = topic_and_group(broker, &client, "classic-coop").await;
    let mut owners = Owners::default();

    let mut a = start(broker, &client, config(&group, &topic));
    owners.until(&mut [&mut a], |o| o.of(0) == all(&topic)).await;
    assert!(a.epoch() >= 0 && !a.member_id().is_empty());

    let mut b = start(broker, &client, config(&group, &topic));
    owners.until(&mut [&mut a, &mut b], |o| o.split(0, 1, HALF)).await;
    // Cooperative: a gave up only what b took, never everything.
    let given: BTreeSet<_> = owners.revoked(0).iter().flatten().cloned().collect();
    assert_eq!(given, owners.of(1), "a gave up exactly what b was given");
    assert!(
        owners.revoked(0).iter().all(|r| r.len() < PARTITIONS as usize),
        "a never gave up all: {:?}",
        owners.revoked(0)
    );
    assert!(owners.revoked(1).is_empty());
    assert_ne!(a.member_id(), b.member_id());
    assert_eq!(a.epoch(), b.epoch(), "both in the same generation");

    // b leaves gracefully (a LeaveGroup): a gets everything back.
    owners.forget(1);
    assert_eq!(b.leave().await, Ended::Member(Outcome::Left));
    owners.until(&mut [&mut a], |o| o.of(0) == all(&topic)).await;
    assert_eq!(a.leave().await, Ended::Member(Outcome::Left));
}

async fn eager_a_second_member_makes_the_first_give_up_everything(broker: Broker) {
    let client = broker.client().await;
    let (topic, group) = topic_and_group(broker, &client, "classic-eager").await;
    let eager = |g: &str| config(g, &topic).with_assignors(vec![Arc::new(RangeAssignor)]);
    let mut owners = Owners::default();

    let mut a = start(broker, &client, eager(&group));
    owners.until(&mut [&mut a], |o| o.of(0) == all(&topic)).await;

    let mut b = start(broker, &client, eager(&group));
    owners.until(&mut [&mut a, &mut b], |o| o.split(0, 1, HALF)).await;
    assert_eq!(owners.revoked(0).first(), Some(&all(&topic)), "eager: a gave up everything before the new assignment");
    let union: BTreeSet<_> = owners.of(0).union(&owners.of(1)).cloned().collect();
    assert_eq!(union, all(&topic));

    owners.forget(1);
    assert_eq!(b.leave().await, Ended::Member(Outcome::Left));
    owners.until(&mut [&mut a], |o| o.of(0) == all(&topic)).await;
    assert_eq!(a.leave().await, Ended::Member(Outcome::Left));
}

async fn a_member_gone_without_leaving_loses_its_partitions_after_the_session_timeout(broker: Broker) {
    let client = broker.client().await;
    let (topic, group) = topic_and_group(broker, &client, "classic-gone").await;
    let mut owners = Owners::default();

    let mut a = start(broker, &client, config(&group, &topic));
    owners.until(&mut [&mut a], |o| o.of(0) == all(&topic)).await;
    let mut b = start(broker, &client, config(&group, &topic));
    owners.until(&mut [&mut a, &mut b], |o| o.split(0, 1, HALF)).await;

    // b's task ends without a LeaveGroup: the coordinator notices after b's session
    // timeout, and the rebalance gives b's partitions to a.
    owners.forget(1);
    b.abort();
    owners.until(&mut [&mut a], |o| o.of(0) == all(&topic)).await;
    assert_eq!(a.leave().await, Ended::Member(Outcome::Left));
}

async fn a_revocation_held_past_the_session_timeout_keeps_the_member_in_the_group(broker: Broker) {
    let client = broker.client().await;
    let (topic, group) = topic_and_group(broker, &client, "classic-slow").await;
    // Eager, so that the rebalance waits for a's release; the rebalance timeout is
    // what bounds the release, not the session timeout.
    let eager = |g: &str| {
        config(g, &topic).with_assignors(vec![Arc::new(RangeAssignor)]).with_rebalance_timeout(Duration::from_secs(90))
    };
    let mut owners = Owners::default();
    let mut a = start(broker, &client, eager(&group));
    owners.until(&mut [&mut a], |o| o.of(0) == all(&topic)).await;

    let mut b = start(broker, &client, eager(&group));
    let revocation = tokio::time::timeout(HANG_GUARD, async {
        loop {
            match a.next_event().await.expect("a's events go on") {
                MemberEvent::Revoked { revocation } => return revocation,
                other => owners.apply(0, other),
            }
        }
    })
    .await
    .expect("a is asked to give its partitions up");
    assert_eq!(revocation.partitions().iter().cloned().collect::<BTreeSet<_>>(), all(&topic));

    // The user takes twice the session timeout to finish with them: a's heartbeats go
    // on meanwhile, so the coordinator keeps a (b is given nothing a still owns: the
    // events would say so), and no partition is lost.
    owners.during(&mut [&mut a, &mut b], 2 * SESSION_TIMEOUT).await;
    assert!(owners.lost.is_empty(), "nothing lost: {:?}", owners.lost);
    assert!(owners.ended.is_empty(), "nothing ended: {:?}", owners.ended);
    for p in revocation.partitions() {
        owners.owner.remove(p);
    }
    revocation.release();
    owners.until(&mut [&mut a, &mut b], |o| o.split(0, 1, HALF)).await;
    assert!(owners.lost.is_empty(), "nothing lost: {:?}", owners.lost);
    assert_eq!(b.leave().await, Ended::Member(Outcome::Left));
    assert_eq!(a.leave().await, Ended::Member(Outcome::Left));
}

async fn a_static_member_back_within_its_session_timeout_keeps_its_partitions_without_a_rebalance(broker: Broker) {
    let client = broker.client().await;
    let (topic, group) = topic_and_group(broker, &client, "classic-static").await;
    let instance = unique_topic("instance");
    // Long enough for the way back on a loaded machine; no case waits it out.
    let static_config =
        || config(&group, &topic).with_session_timeout(Duration::from_secs(60)).with_instance_id(&instance);
    let mut owners = Owners::default();

    let mut a = start(broker, &client, config(&group, &topic));
    owners.until(&mut [&mut a], |o| o.of(0) == all(&topic)).await;
    let mut b = start(broker, &client, static_config());
    owners.until(&mut [&mut a, &mut b], |o| o.split(0, 1, HALF)).await;
    let generation = b.epoch();
    assert_eq!(a.epoch(), generation);
    let revoked_from_a = owners.revoked(0).len();
    let a_owned = owners.of(0);

    // b leaves: a static member sends no LeaveGroup, the coordinator keeps its place.
    let kept = owners.forget(1);
    assert_eq!(b.leave().await, Ended::Member(Outcome::Left));

    // Back under the same instance id: the same partitions, in the same generation.
    let mut b2 = start(broker, &client, static_config());
    // (b2 is member 1 here, in b's place: the events are keyed by position.)
    owners.until(&mut [&mut a, &mut b2], |o| o.of(1) == kept && o.split(0, 1, HALF)).await;
    if broker == Broker::Kafka {
        assert_eq!(b2.epoch(), generation, "no rebalance: the generation is the one b left");
        assert_eq!(a.epoch(), generation, "no rebalance: a is still in the generation it had");
        assert_eq!(owners.revoked(0).len(), revoked_from_a, "a gave nothing up");
    }
    // Tansu and klife-testkit rebalance when a static member comes back (a new
    // generation); the partitions still come back to it, and a keeps its own.
    assert_eq!(owners.of(0), a_owned, "a keeps its partitions");
    assert_eq!(b2.leave().await, Ended::Member(Outcome::Left));
    assert_eq!(a.leave().await, Ended::Member(Outcome::Left));
}

async fn the_automatic_choice_runs_kip848_where_the_coordinator_has_it_and_classic_elsewhere(broker: Broker) {
    let client = broker.client().await;
    let (topic, group) = topic_and_group(broker, &client, "classic-auto").await;
    let expected = if broker == Broker::Tansu { GroupProtocol::Classic } else { GroupProtocol::Consumer };
    auto_member_is_assigned(&client, &topic, &group, expected, driver(broker)).await;
}

/// The automatic choice on a private mock cluster without ConsumerGroupHeartbeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_automatic_choice_falls_back_on_a_mock_cluster_without_kip848() {
    let topic = unique_topic("classic-auto-mock");
    let mut mock = MockCluster::start(3, &[(topic.as_str(), PARTITIONS)]);
    // ConsumerGroupHeartbeat (68) off: the coordinator has the classic protocol only.
    mock.command("apiversion 68 -1 -1");
    let client = klife::Client::builder()
        .bootstrap_servers(mock.addresses())
        .request_timeout(Duration::from_secs(10))
        .build()
        .await
        .unwrap();
    let group = unique_topic("classic-auto-mock-g");
    auto_member_is_assigned(&client, &topic, &group, GroupProtocol::Classic, driver(Broker::RdkafkaMock)).await;
}

async fn auto_member_is_assigned(
    client: &klife::Client,
    topic: &str,
    group: &str,
    expected: GroupProtocol,
    driver: DriverConfig,
) {
    let kip848 = ConsumerConfig::new(group, member_id_from_random(fastrand::u128(..)), Subscription::names([topic]));
    let mut m = GroupMember::start_auto(client.cluster().clone(), kip848, config("ignored", topic), driver).unwrap();
    assert_eq!(m.protocol(), GroupProtocol::Consumer, "KIP-848 first");
    let mut owners = Owners::default();
    owners.until(&mut [&mut m], |o| o.of(0) == all(topic)).await;
    assert!(owners.ended.is_empty(), "no end on the way: {:?}", owners.ended);
    assert_eq!(m.protocol(), expected);
    assert!(!m.member_id().is_empty());
    assert!(owners.generations[&0].last().is_some_and(|g| *g > 0 || expected == GroupProtocol::Classic && *g >= 0));
    assert_eq!(m.leave().await, Ended::Member(Outcome::Left));
}
