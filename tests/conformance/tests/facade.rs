//! The facade as a user meets it, through `klife::` names only: a topic's partitions,
//! offset lookups answered per partition, a consumer of a whole topic that says when
//! each partition caught up, a consumer's own `max_wait`, producers warmed up before
//! the first record, the default and named producers and fetchers, and `acks = 0`.
//! Each case runs on Apache Kafka and klife-testkit; the warm-up's error path runs on
//! a private fake cluster, which can refuse InitProducerId.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::time::Duration;

use klife::protocol::{ApiKey, ErrorCode};
use klife::{
    Acks, Client, ConsumerEvent, FetchOptions, FetcherConfig, OffsetSpec, ProducerConfig, ProducerRecord, StartOffset,
    TopicPartition,
};
use klife_conformance::{Broker, unique_topic};
use klife_testkit::FakeCluster;

/// A guard against a hang (a bug), not a measure of speed.
const HANG_GUARD: Duration = Duration::from_secs(60);

// Each case on Kafka and klife-testkit.
klife_conformance::against_brokers!(
    [kafka: Kafka, testkit: Testkit]
    partitions_describe_a_topic,
    list_offsets_answers_each_partition_and_fails_whole_only_when_closed,
    a_consumer_assigns_a_whole_topic_and_sees_each_partition_end,
    a_consumer_has_a_max_wait_of_its_own,
    warm_up_creates_the_producers_before_the_first_record,
    default_and_named_producers_and_fetchers,
    acks_no_wait_writes_without_an_answer,
);

async fn guarded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(HANG_GUARD, f).await.expect("the operation hung")
}

/// Produces `counts[p]` records to each partition `p`, waiting for each.
async fn produce(client: &Client, topic: &str, counts: &[usize]) {
    for (p, &n) in counts.iter().enumerate() {
        for i in 0..n {
            let partition = i32::try_from(p).unwrap();
            client.produce(ProducerRecord::new(topic, format!("p{p}-{i}")).with_partition(partition)).await.unwrap();
        }
    }
}

async fn partitions_describe_a_topic(broker: Broker) {
    let client = broker.client().await;
    let topic = unique_topic("facade-partitions");
    broker.create_topic(&client, &topic, 3).await;
    let partitions = client.partitions(&topic).await.unwrap();
    let numbers: Vec<i32> = partitions.iter().map(|p| p.partition()).collect();
    assert_eq!(numbers, vec![0, 1, 2]);
    for p in &partitions {
        assert_eq!(&*p.topic_partition.topic, topic.as_str());
        let leader = p.leader.unwrap_or_else(|| panic!("{p:?} has no leader"));
        assert!(p.replicas.contains(&leader), "{p:?}");
        assert!(p.in_sync_replicas.contains(&leader), "{p:?}");
        assert!(p.offline_replicas.is_empty(), "{p:?}");
    }
    let err = client.partitions(&unique_topic("facade-no-such-topic")).await.unwrap_err();
    assert!(err.is_unknown_topic_or_partition(), "{err}");
    client.close().await;
}

async fn list_offsets_answers_each_partition_and_fails_whole_only_when_closed(broker: Broker) {
    let client = broker.client().await;
    let topic = unique_topic("facade-offsets");
    broker.create_topic(&client, &topic, 2).await;
    produce(&client, &topic, &[3, 0]).await;
    let t = topic.as_str();
    let answers = client
        .list_offsets([
            ((t, 0).into(), OffsetSpec::Earliest),
            ((t, 0).into(), OffsetSpec::Latest),
            ((t, 1).into(), OffsetSpec::Latest),
            ((t, 7).into(), OffsetSpec::Latest),
        ])
        .await
        .unwrap();
    assert_eq!(answers.len(), 4);
    let offsets: Vec<Option<i64>> = answers.iter().map(|a| a.offset().ok()).collect();
    assert_eq!(offsets, vec![Some(0), Some(3), Some(0), None]);
    let missing = answers.get(t, 7).unwrap();
    assert_eq!((missing.topic_partition.clone(), missing.spec), (TopicPartition::new(t, 7), OffsetSpec::Latest));
    let err = missing.offset().unwrap_err();
    assert!(err.is_unknown_topic_or_partition(), "{err}");
    assert_eq!(answers.get(t, 1).unwrap().result.as_ref().unwrap().partition, 1);
    client.close().await;
    let err = client.list_offsets([((t, 0).into(), OffsetSpec::Latest)]).await.unwrap_err();
    assert!(err.is_closed(), "{err}");
}

/// Events of one partition, in order: record values and `eof@offset`.
type Events = BTreeMap<i32, Vec<String>>;

/// Reads events until every partition in `until` had one more end-of-partition event.
async fn read_until_eof(consumer: &mut klife::Consumer, events: &mut Events, until: &[i32]) {
    let mut waiting: Vec<i32> = until.to_vec();
    while !waiting.is_empty() {
        match guarded(consumer.next_event()).await.expect("the consumer stopped") {
            ConsumerEvent::Records(f) => {
                let values = f.records.iter().map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap()).into());
                events.entry(f.partition).or_default().extend(values);
            }
            ConsumerEvent::PartitionEof { partition, offset, .. } => {
                events.entry(partition).or_default().push(format!("eof@{offset}"));
                waiting.retain(|p| *p != partition);
            }
            ConsumerEvent::Error(e) if e.is_retriable() => {}
            ConsumerEvent::Error(e) => panic!("{e}"),
            other => panic!("unexpected event {other:?}"),
        }
    }
}

async fn a_consumer_assigns_a_whole_topic_and_sees_each_partition_end(broker: Broker) {
    let client = broker.client().await;
    let topic = unique_topic("facade-eof");
    broker.create_topic(&client, &topic, 3).await;
    produce(&client, &topic, &[2, 0, 3]).await;
    let mut consumer = client.consumer(FetchOptions::new()).with_partition_eof(true);
    consumer.assign_topic(&topic, StartOffset::Earliest).await.unwrap();
    let assigned: Vec<(i32, i64)> = consumer.positions().into_iter().map(|(_, p, o)| (p, o)).collect();
    assert_eq!(assigned, vec![(0, 0), (1, 0), (2, 0)], "every partition, from its start");
    let mut events = Events::new();
    read_until_eof(&mut consumer, &mut events, &[0, 1, 2]).await;
    let expected: Events = [
        (0, vec!["p0-0".to_owned(), "p0-1".into(), "eof@2".into()]),
        (1, vec!["eof@0".into()]),
        (2, vec!["p2-0".into(), "p2-1".into(), "p2-2".into(), "eof@3".into()]),
    ]
    .into();
    assert_eq!(events, expected);
    // A record arrives: the partition reads it and reaches its end once more; the
    // others, still at their ends, say nothing.
    client.produce(ProducerRecord::new(topic.as_str(), "late").with_partition(1)).await.unwrap();
    let mut more = Events::new();
    read_until_eof(&mut consumer, &mut more, &[1]).await;
    assert_eq!(more, [(1, vec!["late".to_owned(), "eof@1".into()])].into());
    // Without the option, `next_event` never yields the end of a partition.
    let mut plain = client.consumer(FetchOptions::new());
    plain.assign_topic(&topic, StartOffset::Latest).await.unwrap();
    client.produce(ProducerRecord::new(topic.as_str(), "after").with_partition(2)).await.unwrap();
    match guarded(plain.next_event()).await.unwrap() {
        ConsumerEvent::Records(f) => assert_eq!((f.partition, f.records[0].value.as_deref()), (2, Some(&b"after"[..]))),
        other => panic!("expected the new record, got {other:?}"),
    }
    let err = consumer.assign_topic(&unique_topic("facade-no-such-topic"), StartOffset::Earliest).await.unwrap_err();
    assert!(klife::Error::from(err).is_unknown_topic_or_partition());
    client.close().await;
}

async fn a_consumer_has_a_max_wait_of_its_own(broker: Broker) {
    let client = broker.client().await;
    let topic = unique_topic("facade-max-wait");
    broker.create_topic(&client, &topic, 1).await;
    produce(&client, &topic, &[2]).await;
    let default_wait = client.default_fetcher().config().max_wait;
    let mut consumer = client.consumer(FetchOptions::new()).with_max_wait(Duration::from_millis(20)).unwrap();
    assert_eq!(consumer.fetcher().config().max_wait, Duration::from_millis(20));
    assert_eq!(client.default_fetcher().config().max_wait, default_wait, "the client's fetcher is unchanged");
    consumer.assign_topic(&topic, StartOffset::Earliest).await.unwrap();
    let fetched = guarded(consumer.next()).await.unwrap().unwrap();
    assert_eq!(fetched.records[0].value.as_deref(), Some(&b"p0-0"[..]));
    // A wait the wire cannot carry is refused.
    let err = client.consumer(FetchOptions::new()).with_max_wait(Duration::from_secs(u64::MAX)).unwrap_err();
    assert!(klife::Error::from(err).is_invalid_argument());
    client.close().await;
}

async fn warm_up_creates_the_producers_before_the_first_record(broker: Broker) {
    let client = Client::builder()
        .bootstrap_servers(broker.addresses())
        .request_timeout(Duration::from_secs(10))
        .named_producer("bulk", ProducerConfig::default().with_linger(Duration::from_millis(5)))
        .build()
        .await
        .unwrap();
    let topic = unique_topic("facade-warm-up");
    broker.create_topic(&client, &topic, 1).await;
    client.warm_up().await.unwrap();
    let a = client.produce(ProducerRecord::new(topic.as_str(), "a")).await.unwrap();
    let b = client.produce_with("bulk", ProducerRecord::new(topic.as_str(), "b")).await.unwrap();
    assert_eq!((a.offset, b.offset), (0, 1));
    client.close().await;
}

/// On a private fake cluster: a refused InitProducerId is the warm-up's error, and once
/// warmed up, producing asks for no producer id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn warm_up_reports_a_refused_producer_id_and_saves_the_first_record_the_request() {
    let fake = FakeCluster::builder().brokers(1).start().await.unwrap();
    fake.create_topic("w", 1).unwrap();
    let client = Client::builder()
        .bootstrap_servers(fake.addresses())
        .named_producer("bulk", ProducerConfig::default())
        .build()
        .await
        .unwrap();
    fake.inject_errors(ApiKey::InitProducerId, &[ErrorCode::ClusterAuthorizationFailed], None);
    let err = client.warm_up().await.unwrap_err();
    assert_eq!(err.error_code(), Some(ErrorCode::ClusterAuthorizationFailed), "{err}");
    assert_eq!(fake.pending_faults(), 0);
    client.warm_up().await.unwrap();
    // Any InitProducerId from now on would be refused.
    fake.inject_errors(ApiKey::InitProducerId, &[ErrorCode::ClusterAuthorizationFailed], None);
    client.produce(ProducerRecord::new("w", "a")).await.unwrap();
    client.produce_with("bulk", ProducerRecord::new("w", "b")).await.unwrap();
    assert_eq!(fake.pending_faults(), 1, "producing sent an InitProducerId");
    client.close().await;
}

async fn default_and_named_producers_and_fetchers(broker: Broker) {
    let client = Client::builder()
        .bootstrap_servers(broker.addresses())
        .request_timeout(Duration::from_secs(10))
        .default_producer(ProducerConfig::default().with_linger(Duration::from_millis(1)))
        .named_producer("bulk", ProducerConfig::default().with_linger(Duration::from_millis(20)))
        .default_fetcher(FetcherConfig::default().with_max_wait(Duration::from_millis(100)))
        .named_fetcher("backfill", FetcherConfig::default().with_partition_max_bytes(4096))
        .build()
        .await
        .unwrap();
    let topic = unique_topic("facade-names");
    broker.create_topic(&client, &topic, 1).await;
    let default = client.default_producer().await.unwrap();
    let bulk = client.named_producer("bulk").await.unwrap();
    assert!(std::ptr::eq(default, client.default_producer().await.unwrap()), "one default producer, kept");
    assert!(std::ptr::eq(bulk, client.named_producer("bulk").await.unwrap()), "one named producer, kept");
    assert!(!std::ptr::eq(default, bulk));
    assert!(client.named_producer("nope").await.unwrap_err().is_invalid_argument());
    assert_eq!(client.default_fetcher().config().max_wait, Duration::from_millis(100));
    assert_eq!(client.named_fetcher("backfill").unwrap().config().partition_max_bytes, 4096);
    assert!(client.named_fetcher("nope").unwrap_err().is_invalid_argument());
    let extra = client.new_producer(ProducerConfig::default()).await.unwrap();
    let written = extra.produce(ProducerRecord::new(topic.as_str(), "x")).await.unwrap();
    extra.close().await;
    let mut consumer = client.named_consumer("backfill", FetchOptions::new()).unwrap();
    consumer.assign_topic(&topic, StartOffset::Offset(written.offset)).await.unwrap();
    let fetched = guarded(consumer.next()).await.unwrap().unwrap();
    assert_eq!(fetched.records[0].value.as_deref(), Some(&b"x"[..]));
    client.close().await;
}

async fn acks_no_wait_writes_without_an_answer(broker: Broker) {
    let client = broker.client().await;
    let topic = unique_topic("facade-acks-0");
    broker.create_topic(&client, &topic, 1).await;
    let producer =
        client.new_producer(ProducerConfig::default().with_acks(Acks::NoWait).with_idempotence(false)).await.unwrap();
    let written = producer.produce(ProducerRecord::new(topic.as_str(), "fire")).await.unwrap();
    assert_eq!(written.offset, -1, "no answer, no offset");
    producer.close().await;
    let mut consumer = client.consumer(FetchOptions::new());
    consumer.assign_topic(&topic, StartOffset::Earliest).await.unwrap();
    let fetched = guarded(consumer.next()).await.unwrap().unwrap();
    assert_eq!(fetched.records[0].value.as_deref(), Some(&b"fire"[..]));
    client.close().await;
}

/// The client's retry settings reach the retry rule the cluster's calls use, and at
/// their defaults a call answered with retriable errors asks again past them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_settings_of_the_builder_are_the_clusters() {
    let fake = FakeCluster::builder().brokers(1).start().await.unwrap();
    let tuned = Client::builder()
        .bootstrap_servers(fake.addresses())
        .retry_timeout(Duration::from_secs(7))
        .retry_backoff(Duration::from_millis(7), Duration::from_millis(70))
        .build()
        .await
        .unwrap();
    let policy = tuned.cluster().retry_policy();
    let settings = (policy.timeout, policy.backoff, policy.backoff_max);
    assert_eq!(settings, (Duration::from_secs(7), Duration::from_millis(7), Duration::from_millis(70)));
    tuned.close().await;

    let client = Client::builder().bootstrap_servers(fake.addresses()).build().await.unwrap();
    fake.inject_errors(ApiKey::DescribeCluster, &[ErrorCode::RequestTimedOut, ErrorCode::RequestTimedOut], None);
    guarded(client.describe_cluster()).await.unwrap();
    assert_eq!(fake.pending_faults(), 0, "both errors were answered, then the call went through");
    client.close().await;
}
