//! The group as a stream (`ConsumerGroupBuilder::stream`, `GroupStream`): batches and
//! the changes of the assignment in one ordered sequence, explicit commits.
//!
//! - Every record comes once, in offset order per partition; `Assigned` comes before
//!   a partition's batches; a close yields `Revoking`, then `Revoked` once what was
//!   committed is handed over, then the end; the commits are on the coordinator.
//! - A revocation reaches the stream as `Revoking`: the batches it holds are committed
//!   from the loop, with no callback, and the other member starts exactly there (both
//!   protocols).
//!
//! Kafka and klife-testkit run them. No case asserts on time: each waits for what it
//! needs under a generous hang guard.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use klife::group::{GroupEvent, GroupProtocol, GroupStream, Mode, ResetPolicy, StreamBatch, TopicConfig};
use klife::{ProducerRecord, TopicPartition};
use klife_conformance::groups::{HANG_GUARD, Log, driver_for, recording_member, until_committed, until_started_at};
use klife_conformance::{Broker, unique_topic};

klife_conformance::against_brokers!(
    [kafka: Kafka, testkit: Testkit]
    a_stream_yields_every_record_once_in_order_and_ends_after_a_close,
    a_stream_commits_what_it_holds_when_partitions_are_revoked,
    classic_a_stream_commits_what_it_holds_when_partitions_are_revoked,
);

async fn topic_with(broker: Broker, client: &klife::Client, prefix: &str, partitions: i32, per: usize) -> String {
    let topic = unique_topic(prefix);
    broker.create_topic(client, &topic, partitions).await;
    produce(client, &topic, (0..partitions).map(|p| (p, per))).await;
    topic
}

async fn produce(client: &klife::Client, topic: &str, counts: impl IntoIterator<Item = (i32, usize)>) {
    let records = counts
        .into_iter()
        .flat_map(|(p, n)| {
            (0..n).map(move |i| ProducerRecord::new(topic.to_owned(), format!("{p}-{i}")).with_partition(p))
        })
        .collect();
    for r in client.produce_batch(records).await {
        r.unwrap();
    }
}

async fn stream(
    broker: Broker,
    client: &klife::Client,
    group: &str,
    topic: &str,
    protocol: GroupProtocol,
) -> GroupStream {
    client
        .consumer_group(group)
        .protocol(protocol)
        .driver(driver_for(broker))
        .session_timeout(Duration::from_secs(10))
        .rebalance_timeout(Duration::from_secs(120))
        .topic(TopicConfig::new(topic).offset_reset(ResetPolicy::Earliest).fetch_interval(Duration::from_millis(50)))
        .stream()
        .await
        .unwrap()
}

async fn next(stream: &mut GroupStream) -> GroupEvent {
    tokio::time::timeout(HANG_GUARD, stream.next())
        .await
        .expect("hung waiting for an event")
        .expect("the stream ended early")
}

fn partitions(tps: &[TopicPartition]) -> BTreeSet<i32> {
    tps.iter().map(|tp| tp.partition).collect()
}

/// Checks the order of events per partition as they come.
#[derive(Default)]
struct Order {
    owned: BTreeSet<i32>,
    revoking: BTreeSet<i32>,
    next_offset: BTreeMap<i32, i64>,
}

impl Order {
    fn see(&mut self, event: &GroupEvent) {
        match event {
            GroupEvent::Assigned(tps) => {
                for p in partitions(tps) {
                    assert!(self.owned.insert(p), "partition {p} assigned twice");
                }
            }
            GroupEvent::Batch(batch) => {
                let p = batch.partition();
                assert!(self.owned.contains(&p), "a batch of partition {p} before it was assigned");
                assert!(!self.revoking.contains(&p), "a batch of partition {p} after its revocation began");
                let first = batch.records()[0].offset;
                if let Some(expected) = self.next_offset.get(&p) {
                    assert_eq!(first, *expected, "partition {p}: batches follow each other");
                }
                let offsets: Vec<i64> = batch.records().iter().map(|r| r.offset).collect();
                assert!(offsets.windows(2).all(|w| w[0] < w[1]), "partition {p}: records in offset order");
                self.next_offset.insert(p, batch.next_offset());
            }
            GroupEvent::Revoking(tps) => {
                for p in partitions(tps) {
                    assert!(self.owned.contains(&p), "partition {p} revoked but not owned");
                    assert!(self.revoking.insert(p), "partition {p} revoking twice");
                }
            }
            GroupEvent::Revoked(tps) => {
                for p in partitions(tps) {
                    assert!(self.revoking.remove(&p), "partition {p} revoked without revoking first");
                    self.owned.remove(&p);
                    self.next_offset.remove(&p);
                }
            }
            GroupEvent::Lost(tps) => panic!("partitions lost in a run without failures: {tps:?}"),
            other => panic!("unexpected event {other:?}"),
        }
    }
}

async fn a_stream_yields_every_record_once_in_order_and_ends_after_a_close(broker: Broker) {
    let client = broker.client().await;
    let topic = topic_with(broker, &client, "stream-all", 3, 30).await;
    let group = unique_topic("stream-all-g");

    // A topic set to handler mode has no handler here.
    let refused =
        client.consumer_group(group.as_str()).topic(TopicConfig::new(&topic).mode(Mode::Handler)).stream().await;
    assert!(refused.unwrap_err().is_invalid_argument());

    let mut s = stream(broker, &client, &group, &topic, GroupProtocol::Auto).await;
    let mut order = Order::default();
    let mut seen: BTreeMap<i32, Vec<i64>> = BTreeMap::new();
    while seen.values().map(Vec::len).sum::<usize>() < 90 {
        let event = next(&mut s).await;
        order.see(&event);
        if let GroupEvent::Batch(batch) = event {
            seen.entry(batch.partition()).or_default().extend(batch.records().iter().map(|r| r.offset));
            batch.commit().unwrap();
        }
    }
    for p in 0..3 {
        assert_eq!(seen[&p], (0..30).collect::<Vec<i64>>(), "partition {p}: every record once, in order");
    }
    until_committed(&client, &group, &topic, &[30, 30, 30]).await;

    // More records come as they are produced.
    produce(&client, &topic, [(1, 4)]).await;
    loop {
        let event = next(&mut s).await;
        order.see(&event);
        if let GroupEvent::Batch(batch) = event {
            batch.commit_and_wait().await.unwrap();
            if batch.next_offset() == 34 {
                break;
            }
        }
    }

    // A close gives everything up and ends the stream.
    s.close();
    let mut revoked = BTreeSet::new();
    while let Some(event) = tokio::time::timeout(HANG_GUARD, s.next()).await.expect("hung waiting for the end") {
        order.see(&event);
        if let GroupEvent::Revoked(tps) = &event {
            revoked.extend(partitions(tps));
        }
    }
    assert_eq!(revoked, (0..3).collect(), "every partition handed over before the end");
    assert!(order.owned.is_empty());
    s.shutdown().await.unwrap();
    until_committed(&client, &group, &topic, &[30, 34, 30]).await;
}

/// Commits the batches held of these partitions, in order, and lets them go.
fn commit_held(held: &mut BTreeMap<i32, Vec<StreamBatch>>, partitions: &BTreeSet<i32>) {
    for p in partitions {
        for batch in held.remove(p).unwrap_or_default() {
            batch.commit().unwrap();
        }
    }
}

async fn a_stream_commits_what_it_holds_when_partitions_are_revoked(broker: Broker) {
    revocation(broker, GroupProtocol::Auto).await;
}

async fn classic_a_stream_commits_what_it_holds_when_partitions_are_revoked(broker: Broker) {
    revocation(broker, GroupProtocol::Classic).await;
}

async fn revocation(broker: Broker, protocol: GroupProtocol) {
    let client = broker.client().await;
    let topic = topic_with(broker, &client, "stream-rev", 4, 10).await;
    let group = unique_topic("stream-rev-g");
    let mut a = stream(broker, &client, &group, &topic, protocol).await;
    let mut order = Order::default();
    // The stream holds every batch, committing nothing, until all 40 records came.
    let mut held: BTreeMap<i32, Vec<StreamBatch>> = BTreeMap::new();
    while held.values().flatten().map(|b| b.records().len()).sum::<usize>() < 40 {
        let event = next(&mut a).await;
        order.see(&event);
        if let GroupEvent::Batch(batch) = event {
            held.entry(batch.partition()).or_default().push(batch);
        }
    }

    let log = Log::default();
    let b = recording_member(broker, &client, &group, &topic, protocol, 1, &log).await;

    // The revocation comes in the stream; what it holds of those partitions is
    // committed from the loop, in order; then they are handed over.
    let mut revoking = BTreeSet::new();
    let mut revoked = BTreeSet::new();
    while revoked.is_empty() || revoked != revoking {
        let event = next(&mut a).await;
        order.see(&event);
        if let GroupEvent::Revoked(tps) = &event {
            revoked.extend(partitions(tps));
        }
        if let GroupEvent::Revoking(tps) = &event {
            let now = partitions(tps);
            // Nothing moved yet: the batches held are not committed.
            assert!(
                log.read(|s| s.handled.keys().all(|(p, _)| !now.contains(p))),
                "the other member handled records of a partition whose batches were not committed"
            );
            commit_held(&mut held, &now);
            // Records produced after the commit give the other member something to
            // start with.
            produce(&client, &topic, now.iter().map(|p| (*p, 1))).await;
            revoking.extend(now);
        }
    }
    // The other member starts each revoked partition exactly at the commit: 10.
    let revoking: Vec<i32> = revoking.into_iter().collect();
    until_started_at(&log, &revoking, |_| 10).await;
    // The partitions kept: committed on their revocation by the close; the end.
    a.close();
    while let Some(event) = tokio::time::timeout(HANG_GUARD, a.next()).await.expect("hung waiting for the end") {
        order.see(&event);
        if let GroupEvent::Revoking(tps) = &event {
            commit_held(&mut held, &partitions(tps));
        }
    }
    assert!(held.is_empty(), "every partition was revoked: {:?}", held.keys());
    drop(held);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}
