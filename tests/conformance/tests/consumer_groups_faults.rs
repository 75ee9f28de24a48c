//! Consumer groups under what only a fake cluster stages on demand (private
//! klife-testkit clusters, whose group coordinator answers as Kafka's does; see
//! `tests/testkit_groups.rs` for the comparison with Kafka):
//!
//! - the group's coordinator moves to another broker mid-run (the old one answers
//!   NOT_COORDINATOR): the member and its commits follow, nothing is lost, and no
//!   record is handled twice;
//! - the coordinator expires the member (as a session timeout would): its partitions
//!   are lost, nothing more is committed for them, it joins again and goes on; records
//!   are handled again only after a loss, at most (`handler_max_unacked_commits` + 1)
//!   batches per partition and loss;
//! - the coordinator advertises ConsumerGroupHeartbeat but refuses it as unsupported:
//!   the group chosen automatically runs under the classic protocol;
//! - a rebalance forced on a classic group and on a KIP-848 group mid-run: partitions
//!   go back and forth without a record handled twice.
//! - a partition's leader unavailable for longer than the client's retry timeout
//!   (LEADER_NOT_AVAILABLE, as while a broker is down): the partition fails, starts
//!   again by itself and reads everything once the leader is back.
//!
//! Each case waits for what it needs under a generous hang guard, never for a time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use klife::group::{BatchSize, ConsumerGroup, GroupProtocol, ResetPolicy, TopicConfig};
use klife::protocol::{ApiKey, ErrorCode};
use klife::{Client, ProducerRecord};
use klife_conformance::groups::{Log, Recorder, handled_ends, until_committed};
use klife_testkit::FakeCluster;

const PARTITIONS: i32 = 4;
const BATCH: usize = 5;
const UNACKED: usize = 1;

async fn cluster() -> (FakeCluster, Client) {
    let fake = FakeCluster::builder()
        .brokers(3)
        .consumer_heartbeat_interval(Duration::from_millis(100))
        .start()
        .await
        .unwrap();
    fake.create_topic("t", PARTITIONS).unwrap();
    let client = Client::builder().bootstrap_servers(fake.addresses()).build().await.unwrap();
    (fake, client)
}

async fn produce(client: &Client, from: usize, n: usize) {
    let records = (from..from + n)
        .map(|i| ProducerRecord::new("t", format!("v{i}")).with_partition(i as i32 % PARTITIONS))
        .collect();
    for r in client.produce_batch(records).await {
        r.unwrap();
    }
}

async fn start(client: &Client, group: &str, protocol: GroupProtocol, member: usize, log: &Log) -> ConsumerGroup {
    client
        .consumer_group(group)
        .protocol(protocol)
        .heartbeat_interval(Duration::from_millis(100))
        .topic(
            TopicConfig::new("t")
                .offset_reset(ResetPolicy::Earliest)
                .handler_max_batch_size(BatchSize::Max(BATCH))
                .handler_max_unacked_commits(UNACKED)
                .handler_cooldown(Duration::from_millis(2))
                .fetch_interval(Duration::from_millis(20)),
        )
        .handler(Recorder { member, log: log.clone() })
        .start()
        .await
        .unwrap()
}

/// Records handled again only where a partition was lost, at most the batch in hand
/// and the unacknowledged ones each time.
fn assert_repeats_bounded(log: &Log) {
    log.read(|s| {
        for (partition, again) in s.repeats_per_partition() {
            let losses = s.stops(partition, "lost");
            let bound = (UNACKED + 1) * BATCH * losses;
            assert!(again <= bound, "partition {partition}: {again} records handled again after {losses} loss(es)");
        }
    });
}

async fn finish(client: &Client, group: &str, log: &Log, g: ConsumerGroup) {
    let end = log.read(|s| handled_ends(s, PARTITIONS));
    until_committed(client, group, "t", &end).await;
    g.shutdown().await.unwrap();
    assert_repeats_bounded(log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coordinator_moving_mid_run_loses_nothing_and_repeats_nothing() {
    for protocol in [GroupProtocol::Consumer, GroupProtocol::Classic] {
        let (fake, client) = cluster().await;
        let group = format!("moving-{protocol:?}");
        produce(&client, 0, 200).await;
        let log = Log::default();
        let g = start(&client, &group, protocol, 0, &log).await;
        log.until("some records handled", |s| s.handled.len() >= 40).await;
        let from = fake.coordinator(&group).unwrap();
        let to = fake.broker_ids().into_iter().find(|b| *b != from).unwrap();
        fake.move_group_coordinator(&group, to).unwrap();
        produce(&client, 200, 100).await;
        log.until("every record handled", |s| s.handled.len() == 300).await;
        finish(&client, &group, &log, g).await;
        assert!(log.read(|s| s.repeats_per_partition().is_empty()), "{protocol:?}: records handled twice");
        assert_eq!(fake.coordinator(&group), Some(to));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_member_loses_its_partitions_rejoins_and_goes_on() {
    for protocol in [GroupProtocol::Consumer, GroupProtocol::Classic] {
        let (fake, client) = cluster().await;
        let group = format!("expired-{protocol:?}");
        produce(&client, 0, 200).await;
        let log = Log::default();
        let g = start(&client, &group, protocol, 0, &log).await;
        log.until("some records handled", |s| s.handled.len() >= 40).await;
        let member = fake.describe_group(&group).unwrap().members[0].member_id.clone();
        assert!(fake.expire_member(&group, &member));
        log.until("the partitions lost", |s| s.stopped.iter().any(|(_, _, r)| r == "lost")).await;
        produce(&client, 200, 100).await;
        log.until("every record handled", |s| s.handled.len() == 300).await;
        log.until("every partition running again", |s| s.running.len() == PARTITIONS as usize).await;
        finish(&client, &group, &log, g).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_consumer_group_heartbeat_makes_an_automatic_group_classic() {
    let (fake, client) = cluster().await;
    fake.refuse_consumer_group_heartbeat(true);
    produce(&client, 0, 40).await;
    let log = Log::default();
    let g = start(&client, "refused", GroupProtocol::Auto, 0, &log).await;
    log.until("every record handled", |s| s.handled.len() == 40).await;
    assert_eq!(g.protocol(), Some(GroupProtocol::Classic));
    assert_eq!(fake.describe_group("refused").unwrap().protocol, klife_testkit::GroupProtocol::Classic);
    finish(&client, "refused", &log, g).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_rebalances_move_partitions_without_repeats() {
    for protocol in [GroupProtocol::Consumer, GroupProtocol::Classic] {
        let (fake, client) = cluster().await;
        let group = format!("rebalanced-{protocol:?}");
        produce(&client, 0, 200).await;
        let log = Log::default();
        let a = start(&client, &group, protocol, 0, &log).await;
        log.until("some records handled", |s| s.handled.len() >= 20).await;
        let b = start(&client, &group, protocol, 1, &log).await;
        log.until("both members run partitions", |s| {
            s.running.values().collect::<std::collections::BTreeSet<_>>().len() == 2
        })
        .await;
        for round in 0..3 {
            assert!(fake.force_rebalance(&group), "round {round}: the group has members");
            produce(&client, 200 + round * 50, 50).await;
            let want = 250 + round * 50;
            log.until("the new records handled", |s| s.handled.len() == want).await;
        }
        a.shutdown().await.unwrap();
        log.until("the second member runs every partition", |s| {
            s.running.len() == PARTITIONS as usize && s.running.values().all(|m| *m == 1)
        })
        .await;
        finish(&client, &group, &log, b).await;
        assert!(log.read(|s| s.repeats_per_partition().is_empty()), "{protocol:?}: records handled twice");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_failing_on_an_unavailable_leader_starts_again() {
    let (fake, producing) = cluster().await;
    produce(&producing, 0, 200).await;
    // The start offsets are looked up under this client's retry rule: 300 ms.
    let client = Client::builder()
        .bootstrap_servers(fake.addresses())
        .retry_timeout(Duration::from_millis(300))
        .build()
        .await
        .unwrap();
    fake.inject_errors(ApiKey::ListOffsets, &[ErrorCode::LeaderNotAvailable; 40], None);
    let log = Log::default();
    let mut g = start(&client, "unavailable", GroupProtocol::Consumer, 0, &log).await;
    let failure = g.next_failure().await.expect("a partition fails while its leader is unavailable");
    assert!(failure.error.restarts(), "{}: {} does not restart", failure.partition, failure.error);
    log.until("every record handled", |s| s.handled.len() == 200).await;
    assert_eq!(fake.pending_faults(), 0);
    finish(&client, "unavailable", &log, g).await;
}
