//! Consumer groups under KIP-848 (ConsumerGroupHeartbeat v1), each member driven by
//! klife-group's task (`klife_group::driver::GroupMember`), against Apache Kafka (the
//! test cluster runs `group.coordinator.rebalance.protocols=classic,consumer`): a
//! member alone gets every partition; a second one splits them 3/3 with the first, and
//! no partition is owned by both at any moment (checked on every event: a partition is
//! taken from its owner when the owner releases it or loses it, and given on
//! `Assigned`); a graceful leave gives everything back; a member that ends without
//! leaving has its partitions moved once the coordinator's session timeout
//! (`group.consumer.session.timeout.ms`, Kafka's default 45 s in the test cluster)
//! passes.
//!
//! A broker without KIP-848 (Tansu, and a klife-testkit cluster built without it: neither
//! advertises ConsumerGroupHeartbeat) ends the member with the typed
//! `Outcome::FallBackToClassic` on its first join.
//!
//! No case asserts on time: each waits for the events, under a generous hang guard.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use klife_conformance::groups::{HANG_GUARD, Owners};
use klife_conformance::{Broker, unique_topic};
use klife_group::driver::{DriverConfig, Ended, GroupMember, MemberEvent};
use klife_group::membership::consumer::{ConsumerConfig, Outcome, Subscription, member_id_from_random};
use klife_protocol::types::TopicPartition;

// Not on librdkafka's mock cluster, which aborts on a join with topic names and no
// regex (see README.md), nor on Tansu, which has no KIP-848.
klife_conformance::against_brokers!(
    [kafka: Kafka, testkit: Testkit]
    a_second_member_splits_the_partitions_and_a_leave_gives_them_back,
);

klife_conformance::against_brokers!(
    [kafka: Kafka]
    a_member_gone_without_leaving_loses_its_partitions_to_the_other,
);

klife_conformance::against_brokers!(
    [tansu: Tansu]
    a_broker_without_kip848_ends_the_member_with_a_fall_back_to_classic,
);

/// The same on a klife-testkit cluster built without KIP-848.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_testkit_without_kip848_ends_the_member_with_a_fall_back_to_classic() {
    let fake = klife_testkit::FakeCluster::builder().brokers(1).consumer_group_protocol(false).start().await.unwrap();
    let client = klife::Client::builder().bootstrap_servers(fake.addresses()).build().await.unwrap();
    falls_back(&client, Broker::Testkit).await;
}

fn member(client: &klife::Client, group: &str, topic: &str) -> GroupMember {
    let config = ConsumerConfig::new(group, member_id_from_random(fastrand::u128(..)), Subscription::names([topic]));
    GroupMember::start(client.cluster().clone(), config, DriverConfig::default()).unwrap()
}

/// The partitions of the topic the members share.
const PARTITIONS: i32 = 6;

fn all(topic: &str, n: i32) -> BTreeSet<TopicPartition> {
    (0..n).map(|p| TopicPartition::new(topic, p)).collect()
}

async fn a_second_member_splits_the_partitions_and_a_leave_gives_them_back(broker: Broker) {
    let client = broker.client().await;
    let topic = unique_topic("group-split");
    let n = PARTITIONS;
    broker.create_topic(&client, &topic, n).await;
    let group = unique_topic("group-split-g");
    let mut owners = Owners::default();

    let mut a = member(&client, &group, &topic);
    owners.until(&mut [&mut a], |o| o.of(0) == all(&topic, n)).await;

    let mut b = member(&client, &group, &topic);
    owners.until(&mut [&mut a, &mut b], |o| o.of(0).len() == n as usize / 2 && o.of(1).len() == n as usize / 2).await;
    let union: BTreeSet<_> = owners.of(0).union(&owners.of(1)).cloned().collect();
    assert_eq!(union, all(&topic, n), "the two members together own every partition");
    assert!(a.epoch() > 0 && b.epoch() > 0);

    // b leaves gracefully; a gets everything back. A leave releases b's revocation in
    // the driver, without an event to the test: b's ownership ends here, before its
    // leave starts, and a can be given the partitions only after b's leave heartbeat.
    let b_owned = owners.of(1);
    for p in &b_owned {
        owners.owner.remove(p);
    }
    let ended = b.leave().await;
    assert_eq!(ended, Ended::Member(Outcome::Left));
    owners.until(&mut [&mut a], |o| o.of(0) == all(&topic, n)).await;
    let ended = a.leave().await;
    assert_eq!(ended, Ended::Member(Outcome::Left));
}

async fn a_member_gone_without_leaving_loses_its_partitions_to_the_other(broker: Broker) {
    let client = broker.client().await;
    let topic = unique_topic("group-gone");
    let n = PARTITIONS;
    broker.create_topic(&client, &topic, n).await;
    let group = unique_topic("group-gone-g");
    let mut owners = Owners::default();

    let mut a = member(&client, &group, &topic);
    let mut b = member(&client, &group, &topic);
    owners.until(&mut [&mut a, &mut b], |o| o.of(0).len() == n as usize / 2 && o.of(1).len() == n as usize / 2).await;

    // b's task ends without a leave: the coordinator only notices after its session
    // timeout, then gives b's partitions to a.
    let b_owned = owners.of(1);
    for p in &b_owned {
        owners.owner.remove(p);
    }
    b.abort();
    owners.until(&mut [&mut a], |o| o.of(0) == all(&topic, n)).await;
    assert_eq!(a.leave().await, Ended::Member(Outcome::Left));
}

async fn a_broker_without_kip848_ends_the_member_with_a_fall_back_to_classic(broker: Broker) {
    let client = broker.client().await;
    falls_back(&client, broker).await;
}

async fn falls_back(client: &klife::Client, broker: Broker) {
    let client = client.clone();
    let topic = unique_topic("group-classic");
    broker.create_topic(&client, &topic, 2).await;
    let group = unique_topic("group-classic-g");
    let mut m = member(&client, &group, &topic);
    let ended = tokio::time::timeout(HANG_GUARD, async {
        loop {
            match m.next_event().await {
                Some(MemberEvent::Ended(e)) => return e,
                Some(MemberEvent::Generation { epoch: 0, .. }) => {}
                Some(other) => panic!("no partition can be assigned without KIP-848: {other:?}"),
                None => panic!("the events ended without Ended"),
            }
        }
    })
    .await
    .expect("the member ends");
    assert!(
        matches!(ended, Ended::Member(Outcome::FallBackToClassic { .. })),
        "a coordinator without ConsumerGroupHeartbeat v1 means the classic protocol: {ended:?}"
    );
    assert!(m.assignment().is_empty());
}
