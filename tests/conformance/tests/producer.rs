//! The producer against third-party brokers: every acknowledged record is in the log
//! exactly once, in order per partition; keyed records land where murmur2 says; bad
//! input is a typed error that affects nothing else.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use klife_conformance::verify::verify_log_allowing;
use klife_conformance::{Broker, MockCluster, raw, unique_topic};
use klife_producer::partitioner::murmur2_partition;
use klife_producer::{ProduceError, Producer, ProducerConfig, ProducerRecord, RecordMetadata};
use klife_protocol::Compression;

klife_conformance::against_every_broker!(
    acknowledged_records_are_in_the_log_once_in_order,
    a_record_over_the_topics_limit_fails_alone,
    bad_records_are_refused_without_harming_others,
    the_client_produces_through_its_default_producer,
);

fn config() -> ProducerConfig {
    let mut c = ProducerConfig::default();
    c.linger = Duration::from_millis(2);
    c.batch_size = 4096;
    c
}

/// Checks that the acknowledged records of each partition are exactly the log's.
async fn verify_log(cluster: &klife_connection::Cluster, topic: &str, acked: &[(RecordMetadata, ProducerRecord)]) {
    verify_log_allowing(cluster, topic, acked, &[]).await;
}

async fn acknowledged_records_are_in_the_log_once_in_order(broker: Broker) {
    let client = broker.client().await;
    for codec in [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd] {
        let topic = unique_topic(&format!("produce-{codec}"));
        broker.create_topic(&client, &topic, 4).await;
        let producer = Producer::new(client.cluster().clone(), {
            let mut c = config();
            c.compression = codec;
            c
        })
        .await
        .unwrap();
        let records: Vec<ProducerRecord> = (0..400)
            .map(|i| {
                let r = ProducerRecord::new(topic.clone(), Bytes::from(format!("{codec}-{i}")));
                if i % 3 == 0 { r } else { r.with_key(Bytes::from(format!("key-{}", i % 50))) }
            })
            .collect();
        let results = producer.produce_batch(records.clone()).await;
        let mut acked = Vec::new();
        for (r, sent) in results.into_iter().zip(records) {
            let meta = r.unwrap_or_else(|e| panic!("{codec}: {e}"));
            if let Some(k) = &sent.key {
                assert_eq!(meta.partition, murmur2_partition(k, 4), "keyed records follow murmur2");
            }
            acked.push((meta, sent));
        }
        producer.close().await;
        verify_log(client.cluster(), &topic, &acked).await;
        // The batches on the broker carry the codec.
        let batch = raw::fetch_batches(client.cluster(), &topic, 0, 0).await;
        assert_eq!(batch.first().map(|b| b.compression()), Some(codec));
    }
    client.close().await;
}

/// A batch over the topic's `max.message.bytes` is split and sent again in pieces: only
/// the record too large by itself fails, the others are written once, in order. (The
/// mock cluster has no topic configs: it is told to refuse a Produce request as too
/// large instead, and then every record is written. Tansu 0.6 keeps the config but does
/// not enforce it: every record is written there too.)
async fn a_record_over_the_topics_limit_fails_alone(broker: Broker) {
    let enforced = matches!(broker, Broker::Testkit | Broker::Kafka);
    let mut private_mock = None;
    let client = if broker == Broker::RdkafkaMock {
        let mock = private_mock.insert(MockCluster::start(1, &[("limit", 1)]));
        klife::Client::builder().bootstrap_servers(mock.addresses()).build().await.unwrap()
    } else {
        broker.client().await
    };
    let topic = if broker == Broker::RdkafkaMock { "limit".to_owned() } else { unique_topic("limit") };
    if broker != Broker::RdkafkaMock {
        let created = client
            .create_topics(vec![klife::NewTopic::new(&topic, 1).with_config("max.message.bytes", "3000")])
            .await
            .unwrap();
        assert!(created.iter().all(|(_, r)| r.is_ok()), "{created:?}");
        broker.await_topic(&client, &topic, 1).await;
    }
    let producer = Producer::new(client.cluster().clone(), {
        let mut c = config();
        // Everything below goes into one batch, sent by `flush` however slowly it is
        // queued.
        c.linger = Duration::from_secs(3600);
        c.batch_size = 64 * 1024;
        c
    })
    .await
    .unwrap();
    let value = |i: usize, size: usize| {
        let mut v = format!("record-{i:03}-").into_bytes();
        v.resize(size, b'.');
        Bytes::from(v)
    };
    let big = 20;
    let records: Vec<ProducerRecord> = (0..41)
        .map(|i| ProducerRecord::new(topic.clone(), value(i, if i == big { 5_000 } else { 150 })).with_partition(0))
        .collect();
    if let Some(mock) = private_mock.as_mut() {
        // MESSAGE_TOO_LARGE for the next Produce request.
        mock.command("errors 0 10");
    }
    let deliveries = producer.produce_batch_async(records.clone()).await;
    producer.flush().await;
    let mut acked = Vec::new();
    for (i, (delivery, sent)) in deliveries.into_iter().zip(&records).enumerate() {
        let result = match delivery {
            Ok(d) => d.await,
            Err(e) => Err(e),
        };
        match result {
            Ok(meta) => acked.push((meta, sent.clone())),
            Err(e) if i == big && enforced => {
                assert_eq!(e.error_code(), Some(klife_protocol::ErrorCode::MessageTooLarge), "{e}");
                assert!(e.to_string().contains(&format!("{topic}-0")), "{e}");
            }
            Err(e) => panic!("record {i}: {e}"),
        }
    }
    let expected = if enforced { 40 } else { 41 };
    assert_eq!(acked.len(), expected, "every record but the one too large is written");
    let offsets: Vec<i64> = acked.iter().map(|(m, _)| m.offset).collect();
    assert_eq!(offsets, (0..expected as i64).collect::<Vec<_>>(), "in order, once each");
    producer.close().await;
    verify_log(client.cluster(), &topic, &acked).await;
    client.close().await;
}

async fn bad_records_are_refused_without_harming_others(broker: Broker) {
    let client = broker.client().await;
    let topic = unique_topic("bad");
    broker.create_topic(&client, &topic, 4).await;
    let producer = Producer::new(client.cluster().clone(), {
        let mut c = config();
        c.max_record_batch_size = 10_000;
        c
    })
    .await
    .unwrap();
    let good = producer.produce_async(ProducerRecord::new(topic.clone(), "fine").with_partition(1)).await.unwrap();
    let err = producer.produce(ProducerRecord::new(topic.clone(), "x").with_partition(9)).await.unwrap_err();
    assert!(matches!(err, ProduceError::InvalidPartition { .. }), "{err}");
    assert!(err.to_string().contains("0..4") || err.to_string().contains("0 to 3"), "{err}");
    let err = producer.produce(ProducerRecord::new(topic.clone(), vec![0u8; 20_000])).await.unwrap_err();
    assert!(matches!(err, ProduceError::RecordTooLarge { .. }), "{err}");
    if broker != Broker::RdkafkaMock {
        // Tansu does not create topics from metadata requests; the fake cluster does
        // only when the client allows it, which `Broker::client` does not.
        let err = producer.produce(ProducerRecord::new(unique_topic("missing"), "x")).await.unwrap_err();
        assert!(matches!(err, ProduceError::UnknownTopic { .. }), "{err}");
    }
    let meta = good.await.unwrap();
    assert_eq!((meta.partition, meta.offset), (1, 0), "the good record was not affected");
    let (tx, rx) = tokio::sync::oneshot::channel();
    producer
        .produce_with_callback(ProducerRecord::new(topic.clone(), "called back").with_partition(1), move |outcome| {
            let _ = tx.send(outcome);
        })
        .await
        .unwrap();
    assert_eq!(rx.await.unwrap().unwrap().offset, 1);
    let all: Vec<RecordMetadata> = producer
        .produce_batch(vec![ProducerRecord::new(topic.clone(), "a").with_partition(1); 3])
        .await
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(all.iter().map(|m| m.offset).collect::<Vec<_>>(), vec![2, 3, 4]);
    producer.close().await;
    let err = producer.produce(ProducerRecord::new(topic.clone(), "late")).await.unwrap_err();
    assert!(matches!(err, ProduceError::Closed), "{err}");
    client.close().await;
}

/// Awaits a fault round's records, closes the producer and checks the log: every
/// acknowledged record once and in order, and no failure but the one an idempotent
/// producer may report under faults (a batch whose earlier attempt's outcome is unknown
/// when the producer id must change), whose records may be in the log at most once.
async fn verify_fault_round(
    seed: u64,
    producer: &Producer,
    cluster: &klife_connection::Cluster,
    topic: &str,
    futures: Vec<klife_producer::DeliveryFuture>,
    sent: Vec<ProducerRecord>,
) {
    let mut acked = Vec::new();
    let mut failed = Vec::new();
    for (f, r) in futures.into_iter().zip(sent) {
        match f.await {
            Ok(m) => acked.push((m, r)),
            Err(ProduceError::OutcomeUnknown { .. }) => failed.push(r),
            Err(e) => panic!("seed {seed}: a record failed: {e}"),
        }
    }
    producer.close().await;
    verify_log_allowing(cluster, topic, &acked, &failed).await;
}

/// Faults while producing, on a schedule drawn from each round's seed: injected
/// retriable errors, dropped connections, leader moves, a broker down and up. Every
/// acknowledged record must be in the log exactly once, in order, in every round. A
/// failing round prints its seed; `KLIFE_FAULT_SEED` replays one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_during_idempotent_production_lose_and_duplicate_nothing() {
    let seeds: Vec<u64> = match std::env::var("KLIFE_FAULT_SEED") {
        Ok(s) => vec![s.parse().expect("KLIFE_FAULT_SEED is a number")],
        Err(_) => (1..=12).collect(),
    };
    for seed in seeds {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut mock = MockCluster::start(3, &[("f", 3)]);
        let client = klife::Client::builder()
            .bootstrap_servers(mock.addresses())
            .request_timeout(Duration::from_secs(3))
            .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
            .build()
            .await
            .unwrap();
        // The mock cluster checks the sequences of transactional producers only: an
        // idempotent producer's batch that is refused while the next one is in flight
        // would land after it. With one batch in flight per partition, order does not
        // depend on the broker's checks. (Pipelined batches under faults are checked
        // against klife-testkit, which checks sequences as Kafka does, below.)
        // One request in flight per connection too: when the mock drops a connection
        // for an injected error, it still writes a request queued behind the dropped
        // one, and the producer's resend of that batch (with its first stamp, which
        // Kafka would answer DUPLICATE_SEQUENCE_NUMBER) is written a second time.
        let mut config = config();
        config.max_in_flight_per_partition = 1;
        config.max_in_flight_per_broker = 1;
        let producer = Producer::new(client.cluster().clone(), config).await.unwrap();
        let mut futures = Vec::new();
        let mut sent = Vec::new();
        let mut down: Option<u32> = None;
        for i in 0..600u64 {
            if i % 40 == 20 {
                match rng.u32(0..5) {
                    // Produce answered NOT_LEADER / REQUEST_TIMED_OUT / NOT_ENOUGH_REPLICAS.
                    0 => {
                        mock.command(&format!("errors 0 {}", ["6", "7", "19", "6 7", "19 19"][rng.usize(0..5)]));
                    }
                    // The connection drops instead of an answer.
                    1 => {
                        mock.command("errors 0 -195");
                    }
                    2 => {
                        mock.command(&format!("leader f {} {}", rng.u32(0..3), rng.u32(1..4)));
                    }
                    3 if down.is_none() => {
                        let b = rng.u32(1..4);
                        mock.command(&format!("broker-down {b}"));
                        down = Some(b);
                    }
                    _ => {
                        if let Some(b) = down.take() {
                            mock.command(&format!("broker-up {b}"));
                        }
                    }
                }
            }
            let r = ProducerRecord::new("f", Bytes::from(format!("s{seed}-{i}")))
                .with_key(Bytes::from(format!("k{}", i % 17)));
            sent.push(r.clone());
            futures.push(producer.produce_async(r).await.unwrap());
            if i % 50 == 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        if let Some(b) = down.take() {
            mock.command(&format!("broker-up {b}"));
        }
        verify_fault_round(seed, &producer, client.cluster(), "f", futures, sent).await;
        client.close().await;
    }
}

/// Faults while an idempotent producer has several batches of each partition in flight
/// (the default), on klife-testkit, which checks producer sequences as Kafka does:
/// every answer is delayed so that batches pile up in flight, and requests are refused
/// with retriable errors, dropped before or after they are executed, and sent to
/// brokers that no longer lead or are down. Every acknowledged record must be in the
/// log exactly once, in order, in every seeded round, with one to three batchers per
/// broker. `KLIFE_FAULT_SEED` replays one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_with_pipelined_batches_lose_reorder_and_duplicate_nothing() {
    use klife_protocol::{ApiKey, ErrorCode};
    let seeds: Vec<u64> = match std::env::var("KLIFE_FAULT_SEED") {
        Ok(s) => vec![s.parse().expect("KLIFE_FAULT_SEED is a number")],
        Err(_) => (1..=12).collect(),
    };
    for seed in seeds {
        let mut rng = fastrand::Rng::with_seed(seed);
        let cluster = klife_testkit::FakeCluster::builder().brokers(3).topic("p", 3).start().await.unwrap();
        for b in cluster.broker_ids() {
            cluster.set_latency(b, Duration::from_millis(rng.u64(2..12))).unwrap();
        }
        let client = klife::Client::builder()
            .bootstrap_servers(cluster.addresses())
            .request_timeout(Duration::from_secs(3))
            .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(100))
            .build()
            .await
            .unwrap();
        let mut config = config();
        config.linger = Duration::from_millis(1);
        config.batch_size = 512;
        config.retry_backoff = Duration::from_millis(20);
        assert_eq!(config.max_in_flight_per_partition, 5, "the default pipelines batches");
        // One, two or three batchers per broker, each with a connection of its own.
        config.batchers_per_broker = 1 + (seed % 3) as usize;
        let producer = Producer::new(client.cluster().clone(), config).await.unwrap();
        let mut futures = Vec::new();
        let mut sent = Vec::new();
        let mut down: Option<i32> = None;
        for i in 0..1500u64 {
            if i % 60 == 30 {
                let codes = [ErrorCode::NotLeaderOrFollower, ErrorCode::RequestTimedOut, ErrorCode::NotEnoughReplicas];
                match rng.u32(0..6) {
                    0 => cluster.inject_errors(ApiKey::Produce, &[codes[rng.usize(0..3)]], None),
                    // Refused unexecuted, or executed and the answer lost.
                    1 => cluster.inject_disconnect(ApiKey::Produce, None),
                    2 => cluster.inject_lost_answer(ApiKey::Produce, None),
                    3 => {
                        cluster.move_leader("p", rng.i32(0..3)).unwrap();
                    }
                    4 if down.is_none() => {
                        let b = cluster.broker_ids()[rng.usize(0..3)];
                        cluster.broker_down(b).unwrap();
                        down = Some(b);
                    }
                    _ => {
                        if let Some(b) = down.take() {
                            cluster.broker_up(b).await.unwrap();
                        }
                    }
                }
            }
            let r = ProducerRecord::new("p", Bytes::from(format!("s{seed}-{i}")))
                .with_key(Bytes::from(format!("k{}", i % 17)));
            sent.push(r.clone());
            futures.push(producer.produce_async(r).await.unwrap());
            if i % 100 == 0 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
        if let Some(b) = down.take() {
            cluster.broker_up(b).await.unwrap();
        }
        verify_fault_round(seed, &producer, client.cluster(), "p", futures, sent).await;
        client.close().await;
        cluster.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_errors_are_retried_or_reported() {
    let mut mock = MockCluster::start(1, &[("e", 1)]);
    let client = klife::Client::builder().bootstrap_servers(mock.addresses()).build().await.unwrap();
    let producer = Producer::new(client.cluster().clone(), config()).await.unwrap();
    // Produce (api key 0): NOT_LEADER_OR_FOLLOWER, REQUEST_TIMED_OUT, NOT_ENOUGH_REPLICAS, then success.
    mock.command("start-request-tracking");
    mock.command("errors 0 6 7 19");
    let meta = producer.produce(ProducerRecord::new("e", "retried")).await.unwrap();
    assert_eq!(meta.offset, 0);
    let produce_requests =
        mock.command("get-requests").split_whitespace().filter(|r| r.split(':').nth(1) == Some("0")).count();
    assert_eq!(produce_requests, 4, "three refused attempts and the one that succeeded");
    // TOPIC_AUTHORIZATION_FAILED is not retried: the record fails with the code.
    mock.command("errors 0 29");
    let err = producer.produce(ProducerRecord::new("e", "refused")).await.unwrap_err();
    assert_eq!(err.error_code(), Some(klife_protocol::ErrorCode::TopicAuthorizationFailed), "{err}");
    // The next record is not affected, and lands right after the first.
    let meta = producer.produce(ProducerRecord::new("e", "after")).await.unwrap();
    assert_eq!(meta.offset, 1);
    producer.close().await;
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batchers_per_broker_send_their_own_requests() {
    let mut mock = MockCluster::start(1, &[("b", 4)]);
    let client = klife::Client::builder().bootstrap_servers(mock.addresses()).build().await.unwrap();
    for batchers in [1usize, 2, 4] {
        let mut c = config();
        // Nothing is sent before the flush, which finds every partition ready at once.
        c.linger = Duration::from_secs(60);
        c.batchers_per_broker = batchers;
        let producer = Producer::new(client.cluster().clone(), c).await.unwrap();
        let mut futures = Vec::new();
        for p in 0..4 {
            let r = ProducerRecord::new("b", format!("{batchers}-{p}")).with_partition(p);
            futures.push(producer.produce_async(r).await.unwrap());
        }
        mock.command("start-request-tracking");
        producer.flush().await;
        for (p, f) in futures.into_iter().enumerate() {
            assert_eq!(f.await.unwrap().partition, p as i32);
        }
        let produce_requests =
            mock.command("get-requests").split_whitespace().filter(|r| r.split(':').nth(1) == Some("0")).count();
        // Stopping also forgets what was tracked (librdkafka clears the list).
        mock.command("stop-request-tracking");
        assert_eq!(
            produce_requests, batchers,
            "the broker's 4 partitions are spread over {batchers} batcher(s), each sending its own request"
        );
        producer.close().await;
    }
    client.close().await;
}

async fn the_client_produces_through_its_default_producer(broker: Broker) {
    let client = broker.client().await;
    let topic = unique_topic("client-produce");
    broker.create_topic(&client, &topic, 4).await;
    let first = client.produce(ProducerRecord::new(topic.clone(), "one").with_partition(2)).await.unwrap();
    assert_eq!((first.partition, first.offset), (2, 0));
    let results = client
        .produce_batch(vec![
            ProducerRecord::new(topic.clone(), "two").with_partition(2),
            ProducerRecord::new(topic.clone(), "bad").with_partition(40),
            ProducerRecord::new(topic.clone(), "three").with_partition(2),
        ])
        .await;
    assert_eq!(results[0].as_ref().unwrap().offset, 1);
    let err = results[1].as_ref().unwrap_err();
    assert!(err.is_unknown_topic_or_partition() && !err.is_retriable(), "{err}");
    assert_eq!(results[2].as_ref().unwrap().offset, 2, "the bad record took nothing from the others");
    let pending = client.produce_async(ProducerRecord::new(topic.clone(), "four").with_partition(2)).await.unwrap();
    client.flush().await;
    assert_eq!(pending.await.unwrap().offset, 3);
    let handles =
        client.produce_batch_async(vec![ProducerRecord::new(topic.clone(), "five").with_partition(2); 2]).await;
    let mut offsets = Vec::new();
    for h in handles {
        offsets.push(h.unwrap().await.unwrap().offset);
    }
    assert_eq!(offsets, vec![4, 5]);
    client.close().await;
    let err = client.produce(ProducerRecord::new(topic, "late")).await.unwrap_err();
    assert!(err.is_closed(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_memory_bound_makes_producers_wait_or_fail_fast() {
    let mut mock = MockCluster::start(1, &[("m", 1)]);
    let client = klife::Client::builder().bootstrap_servers(mock.addresses()).build().await.unwrap();
    let mut c = config();
    c.buffer_memory = 3_000;
    c.batch_size = 1_000;
    let producer = Producer::new(client.cluster().clone(), c).await.unwrap();
    // A slow broker: batches stay in flight, the buffer fills.
    mock.command("rtt 1 300");
    let value = Bytes::from(vec![b'x'; 200]);
    let mut waiting = Vec::new();
    let mut refused = 0;
    for _ in 0..40 {
        match producer.try_produce(ProducerRecord::new("m", value.clone())).await {
            Ok(f) => waiting.push(f),
            Err(ProduceError::BufferFull { limit }) => {
                assert_eq!(limit, 3_000);
                refused += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(refused > 0, "a 3 KB buffer cannot take 40 records of 200 B at once");
    // produce_async waits for room instead; everything accepted is delivered.
    for _ in 0..20 {
        waiting.push(producer.produce_async(ProducerRecord::new("m", value.clone())).await.unwrap());
    }
    let mut offsets = Vec::new();
    for f in waiting {
        offsets.push(f.await.unwrap().offset);
    }
    let expected: Vec<i64> = (0..offsets.len() as i64).collect();
    assert_eq!(offsets, expected, "accepted records are written in order, none lost");
    producer.close().await;
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_the_broker_refuses_as_too_large_fails_alone() {
    let mut mock = MockCluster::start(1, &[("big", 2)]);
    let client = klife::Client::builder().bootstrap_servers(mock.addresses()).build().await.unwrap();
    let producer = Producer::new(client.cluster().clone(), config()).await.unwrap();
    // MESSAGE_TOO_LARGE (10) for the next Produce request: not retriable.
    mock.command("errors 0 10");
    let err = producer.produce(ProducerRecord::new("big", "refused").with_partition(0)).await.unwrap_err();
    assert_eq!(err.error_code(), Some(klife_protocol::ErrorCode::MessageTooLarge), "{err}");
    assert!(err.to_string().contains("big-0"), "{err}");
    let ok = producer.produce(ProducerRecord::new("big", "fine").with_partition(0)).await.unwrap();
    assert_eq!(ok.offset, 0, "nothing of the refused batch was written");
    producer.close().await;
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_topics_are_created_only_where_allowed() {
    let mock = MockCluster::start(1, &[]);
    let allowed = klife::Client::builder()
        .bootstrap_servers(mock.addresses())
        .allow_auto_topic_creation(true)
        .build()
        .await
        .unwrap();
    let meta = allowed.produce(ProducerRecord::new("fresh", "v").with_partition(3)).await.unwrap();
    assert_eq!((meta.partition, meta.offset), (3, 0), "the mock creates topics with 4 partitions");
    allowed.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_producers_and_per_topic_defaults() {
    let mock = MockCluster::start(1, &[("plain", 1), ("bulk", 1)]);
    let mut bulk = config();
    bulk.compression = Compression::Zstd;
    let client = klife::Client::builder()
        .bootstrap_servers(mock.addresses())
        .named_producer("bulk", bulk)
        .topic_producer("bulk", "bulk")
        .build()
        .await
        .unwrap();
    client.produce(ProducerRecord::new("bulk", "z")).await.unwrap();
    client.produce(ProducerRecord::new("plain", "p")).await.unwrap();
    client.produce_with("bulk", ProducerRecord::new("plain", "via bulk")).await.unwrap();
    // (The mock cluster answers a fetch with one batch: fetch each offset.)
    let codec = |topic: &'static str, offset: i64| {
        let cluster = client.cluster().clone();
        async move { raw::fetch_batches(&cluster, topic, 0, offset).await.first().map(|b| b.compression()) }
    };
    assert_eq!(codec("bulk", 0).await, Some(Compression::Zstd), "the topic's producer compresses");
    assert_eq!(codec("plain", 0).await, Some(Compression::None), "other topics use the default producer");
    assert_eq!(codec("plain", 1).await, Some(Compression::Zstd), "produce_with picks the named producer");
    let err = client.produce_with("nope", ProducerRecord::new("plain", "x")).await.unwrap_err();
    assert!(err.is_invalid_argument() && err.to_string().contains("nope"), "{err}");
    client.close().await;
    // A topic mapped to a producer that does not exist is refused when building.
    let err = klife::Client::builder()
        .bootstrap_servers(mock.addresses())
        .topic_producer("t", "ghost")
        .build()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("ghost"), "{err}");
}
