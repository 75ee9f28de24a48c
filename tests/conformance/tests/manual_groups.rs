//! Manual mode end to end (`Mode::Manual`, `ConsumerGroup::lease`): a driver outside
//! the group pulls each partition's batches through a lease and commits them.
//!
//! - Leases pull every record once, in offset order, in batches of at most
//!   `handler_max_batch_size`; commits above what was pulled or below what was
//!   committed are refused; a second lease when nothing is uncommitted takes over.
//! - A lease dropped with records not committed, or a second lease asked for while the
//!   first holds some, restarts the partition from its last commit: the second lease
//!   gets `Restarting`, and the records not committed come again.
//! - A revocation stops the pulls of the partitions given up (`Revoking`) and waits for
//!   what was pulled to be committed before the partition goes to the other member,
//!   which starts exactly at that commit (both protocols).
//!
//! Kafka and klife-testkit run them. No case asserts on time: each waits for what it
//! needs under a generous hang guard.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use klife::ProducerRecord;
use klife::group::{
    Batch, BatchSize, ConsumerGroup, GroupProtocol, Lease, ManualError, Mode, PartitionError, ResetPolicy, TopicConfig,
};
use klife_conformance::groups::{
    HANG_GUARD, Log, driver_for, recording_member, topic_with, until_committed, until_started_at,
};
use klife_conformance::{Broker, unique_topic};

klife_conformance::against_brokers!(
    [kafka: Kafka, testkit: Testkit]
    leases_pull_every_record_in_order_and_commit_it,
    a_lease_dropped_with_records_not_committed_redelivers_them,
    a_revocation_waits_for_what_was_pulled_to_be_committed,
    classic_a_revocation_waits_for_what_was_pulled_to_be_committed,
);

/// A manual topic read from its start, in batches of at most 5 records.
fn manual(topic: &str) -> TopicConfig {
    TopicConfig::new(topic)
        .mode(Mode::Manual)
        .offset_reset(ResetPolicy::Earliest)
        .fetch_interval(Duration::from_millis(50))
        .handler_max_batch_size(BatchSize::Max(5))
}

async fn start(
    broker: Broker,
    client: &klife::Client,
    group: &str,
    topic: &str,
    protocol: GroupProtocol,
) -> ConsumerGroup {
    client
        .consumer_group(group)
        .protocol(protocol)
        .driver(driver_for(broker))
        .session_timeout(Duration::from_secs(10))
        .rebalance_timeout(Duration::from_secs(120))
        .topic(manual(topic))
        .start_manual()
        .await
        .unwrap()
}

/// Waits until the member runs `n` partitions.
async fn until_assigned(g: &ConsumerGroup, n: usize) {
    tokio::time::timeout(HANG_GUARD, async {
        while g.assigned_partitions().len() != n {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("hung waiting for {n} partitions; has {:?}", g.assigned_partitions()));
}

/// A lease of the partition, waiting while it restarts or is not assigned yet.
async fn lease_when_ready(g: &ConsumerGroup, topic: &str, partition: i32) -> Lease {
    tokio::time::timeout(HANG_GUARD, async {
        loop {
            match g.lease(topic, partition) {
                Ok(lease) => return lease,
                Err(e) if e.retake() || matches!(e, ManualError::NotAssigned { .. }) => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("lease of {topic}-{partition}: {e}"),
            }
        }
    })
    .await
    .expect("hung waiting for a lease")
}

async fn next(lease: &Lease) -> Batch {
    tokio::time::timeout(HANG_GUARD, lease.next_batch()).await.expect("hung waiting for a batch").unwrap()
}

fn offsets(batch: &Batch) -> Vec<i64> {
    batch.records.iter().map(|r| r.offset).collect()
}

async fn leases_pull_every_record_in_order_and_commit_it(broker: Broker) {
    let client = broker.client().await;
    let topic = topic_with(broker, &client, "man-all", 3, 20).await;
    let group = unique_topic("man-all-g");

    // A group without a handler takes manual topics only; a manual topic does not
    // take settings only a handler uses.
    let refused = client.consumer_group(group.as_str()).topic(TopicConfig::new(&topic)).start_manual().await;
    assert!(refused.unwrap_err().is_invalid_argument());
    let refused = client
        .consumer_group(group.as_str())
        .topic(manual(&topic).handler_cooldown(Duration::from_millis(5)))
        .start_manual()
        .await;
    assert!(refused.unwrap_err().is_invalid_argument());

    let g = start(broker, &client, &group, &topic, GroupProtocol::Auto).await;
    until_assigned(&g, 3).await;
    assert!(matches!(g.lease(&topic, 7), Err(ManualError::NotAssigned { partition: 7, .. })));
    for p in 0..3 {
        let lease = g.lease(&topic, p).unwrap();
        assert_eq!(lease.topic_partition().partition, p);
        assert!(matches!(lease.commit(1), Err(ManualError::CommitAbovePulled { pulled: None, .. })));
        let mut seen = Vec::new();
        while seen.len() < 20 {
            let batch = next(&lease).await;
            assert!(!batch.records.is_empty() && batch.records.len() <= 5, "batch of {}", batch.records.len());
            assert!(batch.records.iter().all(|r| r.partition == p));
            seen.extend(offsets(&batch));
            assert!(lease.uncommitted());
            let above = lease.commit(batch.next_offset + 1);
            assert!(matches!(above, Err(ManualError::CommitAbovePulled { .. })), "{above:?}");
            lease.commit(batch.next_offset).unwrap();
            assert!(!lease.uncommitted());
            if batch.next_offset > 1 {
                let below = lease.commit(batch.next_offset - 1);
                assert!(matches!(below, Err(ManualError::CommitBelowCommitted { .. })), "{below:?}");
            }
        }
        assert_eq!(seen, (0..20).collect::<Vec<i64>>(), "partition {p}: every record once, in order");
        // Nothing uncommitted: a second lease takes over.
        let second = g.lease(&topic, p).unwrap();
        assert!(matches!(lease.pull(), Err(ManualError::Superseded { .. })));
        assert!(second.pull().unwrap().is_none(), "nothing more was produced");
        second.commit_and_wait(20).await.unwrap();
        assert_eq!(second.committed(), Some(20));
    }
    until_committed(&client, &group, &topic, &[20, 20, 20]).await;
    g.shutdown().await.unwrap();
}

async fn a_lease_dropped_with_records_not_committed_redelivers_them(broker: Broker) {
    let client = broker.client().await;
    let topic = topic_with(broker, &client, "man-drop", 1, 20).await;
    let group = unique_topic("man-drop-g");
    let mut g = start(broker, &client, &group, &topic, GroupProtocol::Auto).await;
    until_assigned(&g, 1).await;

    let lease = g.lease(&topic, 0).unwrap();
    let first = next(&lease).await;
    lease.commit(first.next_offset).unwrap();
    let held = next(&lease).await;
    // A second lease while the first holds records not committed: the partition
    // restarts, both learn it.
    assert!(matches!(g.lease(&topic, 0), Err(ManualError::Restarting { .. })));
    assert!(matches!(lease.pull(), Err(ManualError::Restarting { .. })));
    drop(lease);
    let failure = tokio::time::timeout(HANG_GUARD, g.next_failure()).await.unwrap().unwrap();
    assert!(matches!(*failure.error, PartitionError::LeaseDropped { partition: 0, .. }), "{:?}", failure.error);

    let lease = lease_when_ready(&g, &topic, 0).await;
    let again = next(&lease).await;
    assert_eq!(again.records[0].offset, first.next_offset, "the restart starts at the commit");
    assert_eq!(offsets(&again), offsets(&held), "the records not committed come again");
    // Dropped with records not committed again: they come a third time.
    drop(lease);
    let lease = lease_when_ready(&g, &topic, 0).await;
    let third = next(&lease).await;
    assert_eq!(offsets(&third), offsets(&held));
    let mut end = third.next_offset;
    lease.commit(end).unwrap();
    while end < 20 {
        let batch = next(&lease).await;
        assert_eq!(batch.records[0].offset, end, "no gap, no repeat");
        end = batch.next_offset;
        lease.commit(end).unwrap();
    }
    until_committed(&client, &group, &topic, &[20]).await;
    drop(lease);
    g.shutdown().await.unwrap();
}

async fn a_revocation_waits_for_what_was_pulled_to_be_committed(broker: Broker) {
    revocation_waits(broker, GroupProtocol::Auto).await;
}

async fn classic_a_revocation_waits_for_what_was_pulled_to_be_committed(broker: Broker) {
    revocation_waits(broker, GroupProtocol::Classic).await;
}

async fn revocation_waits(broker: Broker, protocol: GroupProtocol) {
    let client = broker.client().await;
    let topic = topic_with(broker, &client, "man-rev", 4, 10).await;
    let group = unique_topic("man-rev-g");
    let a = start(broker, &client, &group, &topic, protocol).await;
    until_assigned(&a, 4).await;
    // The first member pulls a batch of each partition and holds it, not committed.
    let mut leases = BTreeMap::new();
    let mut pulled = BTreeMap::new();
    for p in 0..4 {
        let lease = a.lease(&topic, p).unwrap();
        pulled.insert(p, next(&lease).await.next_offset);
        leases.insert(p, lease);
    }

    let log = Log::default();
    let b = recording_member(broker, &client, &group, &topic, protocol, 1, &log).await;

    // The first member learns of the revocation from its pulls.
    let revoking: Vec<i32> = tokio::time::timeout(HANG_GUARD, async {
        loop {
            let mut revoking = Vec::new();
            for (p, lease) in &leases {
                match lease.pull() {
                    Ok(Some(batch)) => {
                        pulled.insert(*p, batch.next_offset);
                    }
                    Ok(None) => {}
                    Err(ManualError::Revoking { .. }) => revoking.push(*p),
                    Err(e) => panic!("partition {p}: {e}"),
                }
            }
            if !revoking.is_empty() {
                return revoking;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("hung waiting for a revocation");
    // What was pulled is not committed: the partitions cannot have moved yet.
    assert!(
        log.read(|s| s.handled.keys().all(|(p, _)| !revoking.contains(p))),
        "the other member handled records of a partition whose pulled records were not committed"
    );
    for p in &revoking {
        leases[p].commit(pulled[p]).unwrap();
    }
    // A record more in each: the other member has something to start with.
    let more =
        revoking.iter().map(|p| ProducerRecord::new(topic.clone(), format!("{p}-more")).with_partition(*p)).collect();
    for r in client.produce_batch(more).await {
        r.unwrap();
    }
    // The other member starts each revoked partition exactly at the commit.
    until_started_at(&log, &revoking, |p| pulled[&p]).await;
    for p in &revoking {
        assert!(matches!(leases[p].pull(), Err(ManualError::Released { .. })));
    }
    // The partitions kept: commit what was pulled, let go, shut down.
    for (p, lease) in &leases {
        if !revoking.contains(p) {
            lease.commit(pulled[p]).unwrap();
        }
    }
    drop(leases);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
