//! The fetcher against third-party brokers: what was produced (by klife or by
//! librdkafka, with every codec) is read back whole and in order, across byte limits;
//! offsets are looked up; bad input is a typed error that spares the other partitions;
//! each broker is read at the newest Fetch version it shares with klife, topics by id;
//! positions carry their last epoch and topic id, so that a stale leader epoch, a log
//! truncated by an unclean election and a topic created again are noticed.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use bytes::Bytes;
use klife::{
    Client, Consumer, FetchOptions, FetcherConfig, IsolationLevel, OffsetReset, OffsetSpec, ProducerRecord,
    StartOffset, TopicPartitionOffset,
};
use klife_conformance::{Broker, MockCluster, peer, unique_topic};
use klife_fetcher::{FetchError, Fetcher, Record, TopicPartition};
use klife_producer::{Producer, ProducerConfig};
use klife_protocol::ApiKey;
use klife_protocol::Compression;
use klife_testkit::FakeCluster;
use klife_testkit::metrics::CapturedMetrics;

klife_conformance::against_every_broker!(
    fetch_returns_every_field_the_producer_wrote,
    fetch_many_answers_each_target_and_repeats_of_a_partition,
    fetch_async_and_stream_deliver_every_result,
    records_of_every_codec_read_back_including_librdkafkas,
    small_byte_limits_split_the_log_without_loss_or_repeats,
    offsets_are_looked_up,
    bad_targets_fail_alone_with_typed_errors,
    the_consumer_reads_every_partition_to_the_end,
    fetches_go_at_the_newest_version_the_broker_has,
    many_idle_partitions_are_read_through_a_fetch_session,
    a_raw_fetch_session_opens_answers_news_only_and_closes,
);

klife_conformance::against_brokers!([kafka: Kafka, testkit: Testkit] offsets_of_partitions_added_later_are_looked_up);

fn producer_config(compression: Compression) -> ProducerConfig {
    let mut c = ProducerConfig::default();
    c.linger = Duration::from_millis(2);
    c.batch_size = 16 * 1024;
    c.compression = compression;
    c
}

/// A fetcher with test-friendly waits.
fn fetcher(client: &Client, tweak: impl FnOnce(&mut FetcherConfig)) -> Fetcher {
    let mut c = FetcherConfig::default();
    c.max_wait = Duration::from_millis(100);
    c.fetch_timeout = Duration::from_secs(20);
    tweak(&mut c);
    Fetcher::new(client.cluster().clone(), c).unwrap()
}

/// Produces `n` records per partition (`p{partition}-{i}`, keyed, with headers) and
/// returns them by partition.
async fn produce(
    client: &Client,
    topic: &str,
    partitions: i32,
    n: usize,
    compression: Compression,
) -> BTreeMap<i32, Vec<ProducerRecord>> {
    let producer = Producer::new(client.cluster().clone(), producer_config(compression)).await.unwrap();
    let mut sent: BTreeMap<i32, Vec<ProducerRecord>> = BTreeMap::new();
    let mut records = Vec::new();
    for p in 0..partitions {
        for i in 0..n {
            let r = ProducerRecord::new(topic, format!("p{p}-{i}"))
                .with_key(format!("k{i}"))
                .with_partition(p)
                .with_header("h", Some(Bytes::from(format!("{i}"))))
                .with_header("h", None)
                .with_timestamp(1_700_000_000_000 + i as i64);
            sent.entry(p).or_default().push(r.clone());
            records.push(r);
        }
    }
    for r in producer.produce_batch(records).await {
        r.unwrap();
    }
    producer.close().await;
    sent
}

/// Reads a partition from `offset` to `end` by following `next_offset`.
async fn read_to(fetcher: &Fetcher, topic: &str, partition: i32, mut offset: i64, end: i64) -> Vec<Record> {
    let mut out = Vec::new();
    let mut empty = 0;
    while offset < end {
        let f = fetcher.fetch(topic, partition, offset).await.unwrap();
        assert!(f.next_offset >= offset, "next_offset went back: {} < {offset}", f.next_offset);
        if f.records.is_empty() {
            empty += 1;
            assert!(empty < 100, "{topic}-{partition}: no progress at {offset} (high watermark {})", f.high_watermark);
        }
        offset = f.next_offset;
        out.extend(f.records);
    }
    out
}

fn value(r: &Record) -> String {
    String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned()
}

/// Checks that `got` is exactly `sent`, in order, at consecutive offsets from `base`
/// (the brokers here do not compact).
fn assert_same(topic: &str, partition: i32, got: &[Record], sent: &[ProducerRecord]) {
    let got_values: Vec<String> = got.iter().map(value).collect();
    let sent_values: Vec<String> =
        sent.iter().map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned()).collect();
    assert_eq!(got_values, sent_values, "{topic}-{partition}");
    for w in got.windows(2) {
        assert_eq!(w[1].offset, w[0].offset + 1, "{topic}-{partition}: offsets not consecutive");
    }
}

async fn fetch_returns_every_field_the_producer_wrote(broker: Broker) {
    let client = broker.client().await;
    let topic = unique_topic("fetch-fields");
    broker.create_topic(&client, &topic, 4).await;
    let sent = produce(&client, &topic, 4, 5, Compression::None).await;
    let f = client.fetch(&topic, 2, 0).await.unwrap();
    assert_eq!((f.topic.as_ref(), f.partition, f.offset), (topic.as_str(), 2, 0));
    assert_eq!(f.records.len(), 5, "{f:?}");
    assert_eq!(f.next_offset, 5);
    assert_eq!(f.high_watermark, 5);
    assert_eq!(f.lag(), 0);
    for (i, (r, s)) in f.records.iter().zip(&sent[&2]).enumerate() {
        assert_eq!(r.offset, i as i64);
        assert_eq!(r.key, s.key);
        assert_eq!(r.value, s.value);
        assert_eq!(r.timestamp, 1_700_000_000_000 + i as i64);
        assert_eq!(r.timestamp_type, klife_fetcher::TimestampType::CreateTime);
        let headers: Vec<(&str, Option<&[u8]>)> =
            r.headers.iter().map(|h| (h.key.as_str(), h.value.as_deref())).collect();
        assert_eq!(headers, vec![("h", Some(format!("{i}").as_bytes())), ("h", None)]);
        // Idempotent by default: the batch carries the producer's id and sequence.
        assert!(r.batch.producer_id >= 0, "{:?}", r.batch);
        assert!(!r.batch.is_transactional);
        assert_eq!(r.batch.compression, Compression::None);
    }
    // From the middle.
    let f = client.fetch(&topic, 2, 3).await.unwrap();
    assert_eq!(f.records.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![3, 4]);
    // At the end: nothing yet, and no error.
    let f = client.fetch(&topic, 2, 5).await.unwrap();
    assert!(f.records.is_empty());
    assert_eq!(f.next_offset, 5);
    client.close().await;
}

async fn fetch_many_answers_each_target_and_repeats_of_a_partition(broker: Broker) {
    let client = broker.client().await;
    let topic = unique_topic("fetch-many");
    broker.create_topic(&client, &topic, 4).await;
    let sent = produce(&client, &topic, 4, 10, Compression::None).await;
    let targets: Vec<(&str, i32, i64)> =
        vec![(&topic, 0, 0), (&topic, 1, 4), (&topic, 2, 9), (&topic, 3, 0), (&topic, 0, 7), (&topic, 3, 10)];
    let results = client.fetch_many(targets.clone(), &FetchOptions::new()).await;
    assert_eq!(results.len(), targets.len());
    for ((t, p, o), (target, result)) in targets.iter().zip(results) {
        assert_eq!(target, TopicPartitionOffset::new(*t, *p, *o));
        let f = result.unwrap();
        let want: Vec<String> = sent[p][*o as usize..]
            .iter()
            .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned())
            .collect();
        assert_eq!(f.records.iter().map(value).collect::<Vec<_>>(), want, "{target}");
    }
    client.close().await;
}

async fn fetch_async_and_stream_deliver_every_result(broker: Broker) {
    let client = broker.client().await;
    let topic = unique_topic("fetch-async");
    broker.create_topic(&client, &topic, 4).await;
    produce(&client, &topic, 4, 3, Compression::None).await;
    let handle = client.fetch_async(TopicPartitionOffset::new(topic.as_str(), 1, 1), &FetchOptions::new());
    // A dropped handle abandons its fetch without disturbing the others.
    drop(client.fetch_async(TopicPartitionOffset::new(topic.as_str(), 2, 0), &FetchOptions::new()));
    let f = handle.await.unwrap();
    assert_eq!(f.records.iter().map(value).collect::<Vec<_>>(), vec!["p1-1", "p1-2"]);

    let mut stream = client.fetch_stream((0..4).map(|p| (topic.as_str(), p, 0i64)), &FetchOptions::new());
    assert_eq!(stream.remaining(), 4);
    let mut seen = HashSet::new();
    while let Some((target, result)) = stream.recv().await {
        let f = result.unwrap();
        assert_eq!(f.records.len(), 3, "{target}");
        assert!(seen.insert(target.partition));
    }
    assert_eq!(seen.len(), 4);
    client.close().await;
}

async fn records_of_every_codec_read_back_including_librdkafkas(broker: Broker) {
    let client = broker.client().await;
    let f = fetcher(&client, |_| {});
    for (codec, name) in [
        (Compression::None, "none"),
        (Compression::Gzip, "gzip"),
        (Compression::Snappy, "snappy"),
        (Compression::Lz4, "lz4"),
        (Compression::Zstd, "zstd"),
    ] {
        let topic = unique_topic(&format!("fetch-codec-{name}"));
        broker.create_topic(&client, &topic, 4).await;
        let sent = produce(&client, &topic, 1, 300, codec).await;
        let got = read_to(&f, &topic, 0, 0, 300).await;
        assert_same(&topic, 0, &got, &sent[&0]);
        assert!(got.iter().all(|r| r.batch.compression == codec), "{name}: {:?}", got[0].batch);

        // librdkafka writes partition 1 with the same codec.
        let written = peer::produce(&broker.bootstrap(), &topic, 1, name, 200);
        assert_eq!(written.len(), 200);
        let got = read_to(&f, &topic, 1, 0, 200).await;
        assert_eq!(got.len(), 200, "{name}");
        for (r, w) in got.iter().zip(&written) {
            assert_eq!(r.offset, w.offset, "{name}");
            assert_eq!(r.key.as_deref(), w.key.as_deref(), "{name}");
            assert_eq!(r.value.as_deref(), w.value.as_deref(), "{name}");
            // The peer prints the produce answer's time, which the mock cluster sets
            // to 1234; the stored record keeps the producer's.
            assert_eq!(r.timestamp, 1_700_000_000_000 + r.offset, "{name}");
            let headers: Vec<(String, Option<Vec<u8>>)> =
                r.headers.iter().map(|h| (h.key.clone(), h.value.as_ref().map(|v| v.to_vec()))).collect();
            assert_eq!(headers, w.headers, "{name}");
        }
    }
    client.close().await;
}

async fn small_byte_limits_split_the_log_without_loss_or_repeats(broker: Broker) {
    let client = broker.client().await;
    let topic = unique_topic("fetch-limits");
    broker.create_topic(&client, &topic, 4).await;
    // 1 KB values in 16 KiB batches: about 15 batches per partition.
    let producer = Producer::new(client.cluster().clone(), producer_config(Compression::None)).await.unwrap();
    let mut sent = Vec::new();
    for i in 0..240 {
        let mut v = format!("{i:08}-").into_bytes();
        v.resize(1000, b'x');
        sent.push(ProducerRecord::new(topic.as_str(), v).with_partition(0));
    }
    for r in producer.produce_batch(sent.clone()).await {
        r.unwrap();
    }
    producer.close().await;
    // Per-partition limits smaller than a batch (each answer is one whole batch, which
    // the fetcher asks for again when it was cut) and larger than a few.
    for limit in [4_000, 40_000] {
        let f = fetcher(&client, |c| {
            c.partition_max_bytes = limit;
            c.max_bytes_per_request = limit.max(20_000);
        });
        let got = read_to(&f, &topic, 0, 0, 240).await;
        assert_same(&topic, 0, &got, &sent);
    }
    client.close().await;
}

async fn offsets_are_looked_up(broker: Broker) {
    let client = broker.client().await;
    let topic = unique_topic("fetch-offsets");
    broker.create_topic(&client, &topic, 4).await;
    produce(&client, &topic, 1, 7, Compression::None).await;
    let f = fetcher(&client, |_| {});
    let found = f
        .list_offsets(
            &[
                (TopicPartition::new(topic.as_str(), 0), OffsetSpec::Earliest),
                (TopicPartition::new(topic.as_str(), 0), OffsetSpec::Latest),
                (TopicPartition::new(topic.as_str(), 1), OffsetSpec::Latest),
            ],
            IsolationLevel::ReadUncommitted,
        )
        .await;
    let offsets: Vec<i64> = found.into_iter().map(|r| r.unwrap().offset).collect();
    assert_eq!(offsets[0], 0);
    assert_eq!(offsets[2], 0);
    // Tansu answers "latest" with the last batch's base offset + 1 (see README); the
    // fetch's high watermark is the authority.
    let hw = f.fetch(&topic, 0, 0).await.unwrap().high_watermark;
    assert_eq!(hw, 7);
    if broker == Broker::Tansu {
        assert!((1..=7).contains(&offsets[1]), "latest = {}", offsets[1]);
    } else {
        assert_eq!(offsets[1], 7);
    }
    if broker == Broker::Testkit {
        // By timestamp (Tansu and the mock cluster do not implement it; see README.md):
        // the records were written at 1_700_000_000_000 + i.
        let found = f
            .list_offsets(
                &[
                    (TopicPartition::new(topic.as_str(), 0), OffsetSpec::Timestamp(1_700_000_000_003)),
                    (TopicPartition::new(topic.as_str(), 0), OffsetSpec::Timestamp(1_800_000_000_000)),
                ],
                IsolationLevel::ReadCommitted,
            )
            .await;
        let found: Vec<(i64, i64)> = found.into_iter().map(|r| r.map(|l| (l.offset, l.timestamp)).unwrap()).collect();
        assert_eq!(found, vec![(3, 1_700_000_000_003), (-1, -1)]);
    }
    let nope = TopicPartition::new(unique_topic("nope"), 0);
    let unknown = f.list_offsets(&[(nope, OffsetSpec::Earliest)], IsolationLevel::ReadCommitted).await;
    if broker != Broker::RdkafkaMock {
        assert!(matches!(unknown[0], Err(FetchError::UnknownTopic { .. })), "{unknown:?}");
    }
    client.close().await;
}

/// A partition beyond the count the client's metadata knows (added by another client
/// since) makes the lookup read the metadata again, instead of failing at once.
async fn offsets_of_partitions_added_later_are_looked_up(broker: Broker) {
    let client = broker.client().await;
    let topic = unique_topic("fetch-added");
    broker.create_topic(&client, &topic, 2).await;
    let f = fetcher(&client, |_| {});
    let admin = broker.client().await;
    admin.create_partitions(&topic, 4).await.unwrap();
    broker.await_topic(&admin, &topic, 4).await;
    let cached = client.cluster().metadata().topic(&topic).map(|t| t.partitions.len());
    assert_eq!(cached, Some(2), "the reading client has not seen the new partitions yet");
    // Each attempt finds the cache short of partition 3 and reads the metadata again;
    // a broker may learn of the new partitions a little after their leaders do.
    let mut last = None;
    for _ in 0..50 {
        let found = f
            .list_offsets(
                &[(TopicPartition::new(topic.as_str(), 3), OffsetSpec::Earliest)],
                IsolationLevel::ReadUncommitted,
            )
            .await;
        match found.into_iter().next().unwrap() {
            Ok(l) => {
                assert_eq!(l.offset, 0);
                last = None;
                break;
            }
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(last.is_none(), "partition 3 was never looked up: {last:?}");
    assert_eq!(client.cluster().metadata().topic(&topic).map(|t| t.partitions.len()), Some(4));
    client.close().await;
    admin.close().await;
}

async fn bad_targets_fail_alone_with_typed_errors(broker: Broker) {
    let client = broker.client().await;
    let topic = unique_topic("fetch-bad");
    broker.create_topic(&client, &topic, 4).await;
    produce(&client, &topic, 1, 3, Compression::None).await;
    let missing = unique_topic("fetch-missing");
    let mut targets: Vec<(&str, i32, i64)> = vec![(&topic, 0, 0), (&topic, 9, 0), (&topic, 0, -1), (&topic, 0, 1000)];
    if broker != Broker::RdkafkaMock {
        // The mock cluster creates any topic a metadata request names.
        targets.push((&missing, 0, 0));
    }
    let results = client.fetch_many(targets, &FetchOptions::new()).await;
    let f = results[0].1.as_ref().unwrap();
    assert_eq!(f.records.len(), 3);
    let e = results[1].1.as_ref().unwrap_err();
    assert!(e.is_unknown_topic_or_partition(), "{e}");
    assert!(e.to_string().contains("no partition 9"), "{e}");
    let e = results[2].1.as_ref().unwrap_err();
    assert!(e.is_invalid_argument(), "{e}");
    match broker {
        Broker::RdkafkaMock | Broker::Testkit | Broker::Kafka => {
            let e = results[3].1.as_ref().unwrap_err();
            assert!(e.is_offset_out_of_range(), "{e}");
            assert_eq!(e.offset_range(), Some(0..3), "{e}");
            assert!(e.to_string().contains("1000"), "{e}");
        }
        // Tansu answers an offset past the end with no records and no error (see the
        // README); the high watermark shows where the log ends.
        Broker::Tansu => {
            let f = results[3].1.as_ref().unwrap();
            assert!(f.records.is_empty());
            assert_eq!((f.next_offset, f.high_watermark), (1000, 3));
        }
    }
    if broker != Broker::RdkafkaMock {
        let e = results[4].1.as_ref().unwrap_err();
        assert!(e.is_unknown_topic_or_partition(), "{e}");
        assert!(e.to_string().contains("does not exist"), "{e}");
    }
    // A closed fetcher says so.
    let f = fetcher(&client, |_| {});
    f.close();
    assert!(matches!(f.fetch(&topic, 0, 0).await, Err(FetchError::Closed)));
    client.close().await;
    let e = client.fetch(&topic, 0, 0).await.unwrap_err();
    assert!(e.is_closed(), "{e}");
}

async fn the_consumer_reads_every_partition_to_the_end(broker: Broker) {
    let client = broker.client().await;
    let topic = unique_topic("fetch-consumer");
    broker.create_topic(&client, &topic, 4).await;
    let sent = produce(&client, &topic, 4, 150, Compression::Lz4).await;
    let mut consumer = client.consumer(FetchOptions::new().with_max_bytes(4096));
    let assignment: Vec<(&str, i32, StartOffset)> =
        (0..4).map(|p| (topic.as_str(), p, StartOffset::Earliest)).collect();
    consumer.assign(&assignment).await.unwrap();
    let mut got: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
    while got.values().map(Vec::len).sum::<usize>() < 600 {
        let f = tokio::time::timeout(Duration::from_secs(30), consumer.next()).await.unwrap().unwrap().unwrap();
        got.entry(f.partition).or_default().extend(f.records);
    }
    for (p, records) in &got {
        assert_same(&topic, *p, records, &sent[p]);
    }
    let positions: Vec<i64> = consumer.positions().into_iter().map(|(_, _, o)| o).collect();
    assert!(positions.iter().all(|&o| o >= 150), "{positions:?}");
    // Seek back: the partition is read again from there.
    consumer.seek(&topic, 2, 148);
    let f = loop {
        let f = consumer.next().await.unwrap().unwrap();
        if f.partition == 2 {
            break f;
        }
    };
    assert_eq!(f.records.iter().map(value).collect::<Vec<_>>(), vec!["p2-148", "p2-149"]);
    // From the end: nothing old.
    let mut latest = Consumer::new(client.default_fetcher().clone(), FetchOptions::new());
    latest.assign(&[(topic.as_str(), 0, StartOffset::Latest)]).await.unwrap();
    assert!(latest.positions()[0].2 >= 1, "{:?}", latest.positions());
    client.close().await;
}

/// Leaders move while a consumer reads: every record is read once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_moves_during_consumption_lose_and_repeat_nothing() {
    let topic = "moving";
    let mut mock = MockCluster::start(3, &[(topic, 4)]);
    let client = Client::builder()
        .bootstrap_servers(mock.addresses())
        .request_timeout(Duration::from_secs(5))
        .build()
        .await
        .unwrap();
    let sent = produce(&client, topic, 4, 400, Compression::None).await;
    let mut consumer = client.consumer(FetchOptions::new().with_max_bytes(2048));
    let assignment: Vec<(&str, i32, StartOffset)> = (0..4).map(|p| (topic, p, StartOffset::Earliest)).collect();
    consumer.assign(&assignment).await.unwrap();
    let mut got: BTreeMap<i32, Vec<Record>> = BTreeMap::new();
    let mut moves = 0;
    while got.values().map(Vec::len).sum::<usize>() < 1600 {
        let f = tokio::time::timeout(Duration::from_secs(30), consumer.next()).await.unwrap().unwrap().unwrap();
        got.entry(f.partition).or_default().extend(f.records);
        if moves < 12 {
            moves += 1;
            mock.command(&format!("leader {topic} {} {}", moves % 4, moves % 3 + 1));
        }
    }
    for (p, records) in &got {
        assert_same(topic, *p, records, &sent[p]);
    }
    client.close().await;
}

/// Fetches for partitions one broker leads share requests: with several partitions
/// asked at once, the mock cluster sees fewer Fetch requests than partitions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetches_for_one_broker_share_a_request() {
    let topic = "shared";
    let mut mock = MockCluster::start(1, &[(topic, 8)]);
    let client = Client::builder().bootstrap_servers(mock.addresses()).build().await.unwrap();
    produce(&client, topic, 8, 2, Compression::None).await;
    let f = fetcher(&client, |c| c.max_in_flight = 1);
    // Warm the connection and metadata so that all fetches meet in the batcher.
    f.fetch(topic, 0, 0).await.unwrap();
    mock.command("start-request-tracking");
    let results = f.fetch_many((0..8).map(|p| (topic, p, 0i64)), &FetchOptions::new()).await;
    // Each answer starts at offset 0. (On a busy machine the producer may write a
    // partition's two records in two batches, and the mock answers a fetch with one
    // batch: the number of records is not what this case checks.)
    assert!(results.iter().all(|(_, r)| r.as_ref().is_ok_and(|f| f.records.first().map(|r| r.offset) == Some(0))));
    let requests = mock.command("get-requests");
    let fetches = requests.split_whitespace().filter(|r| r.split(':').nth(1) == Some("1")).count();
    assert!((1..8).contains(&fetches), "8 partitions took {fetches} Fetch requests: {requests}");
    client.close().await;
}

/// Real transactions through klife's transactional producer, on the fake cluster
/// (the only broker here that writes markers and lists aborted transactions): the
/// fetcher's read_committed answer holds exactly the committed records, in order,
/// whether or not the broker filtered them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_committed_hides_aborted_transactions_written_by_the_producer() {
    let cluster = FakeCluster::builder().brokers(3).topic("txn", 1).start().await.unwrap();
    let client = Client::builder().bootstrap_servers(cluster.addresses()).build().await.unwrap();
    let producer = client.transactional_producer("fetch-txn", Duration::from_secs(30)).await.unwrap();
    let mut committed = Vec::new();
    for round in 0..6 {
        producer.begin().await.unwrap();
        for i in 0..3 {
            let v = format!("r{round}-{i}");
            producer.produce(ProducerRecord::new("txn", v.clone()).with_partition(0)).await.unwrap();
            if round % 2 == 0 {
                committed.push(v);
            }
        }
        if round % 2 == 0 {
            producer.commit().await.unwrap();
        } else {
            producer.abort().await.unwrap();
        }
    }
    let f = fetcher(&client, |_| {});
    let end = f.fetch("txn", 0, 0).await.unwrap().high_watermark;
    let got = read_to(&f, "txn", 0, 0, end).await;
    assert_eq!(got.iter().map(value).collect::<Vec<_>>(), committed);
    assert!(got.iter().all(|r| r.batch.is_transactional));

    let all = Fetcher::new(client.cluster().clone(), {
        let mut c = FetcherConfig::default();
        c.isolation_level = IsolationLevel::ReadUncommitted;
        c
    })
    .unwrap();
    let everything = read_to(&all, "txn", 0, 0, end).await;
    assert_eq!(everything.len(), 18, "18 data records, markers skipped");
    client.close().await;
}

/// Runs `work` on a current-thread runtime with a recorder of its own (a local recorder
/// around the runtime, so that every task of the test records into it), and returns
/// what it recorded.
fn metrics_of(work: impl Future<Output = ()>) -> CapturedMetrics {
    let captured = CapturedMetrics::default();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    metrics::with_local_recorder(&captured, || rt.block_on(work));
    captured
}

/// The Fetch version klife and the broker share: the newest the schemas define (17)
/// where the broker has it (Apache Kafka 4.1 advertises 18), lower where the broker
/// stops lower. Every broker here gives topic ids, so none is read by name.
fn shared_fetch_version(broker: Broker) -> i16 {
    match broker {
        Broker::Kafka | Broker::Tansu | Broker::Testkit => 17,
        Broker::RdkafkaMock => 16,
    }
}

async fn fetches_go_at_the_newest_version_the_broker_has(broker: Broker) {
    let captured = tokio::task::spawn_blocking(move || {
        metrics_of(async move {
            let client = broker.client().await;
            let conn = client.cluster().any_broker().await.unwrap();
            let advertised = conn.versions().range(ApiKey::Fetch).unwrap();
            assert_eq!(
                klife_fetcher::position::fetch_version(advertised, true),
                Some(shared_fetch_version(broker)),
                "{broker:?} advertises Fetch {advertised}"
            );
            let topic = unique_topic("fetch-version");
            broker.create_topic(&client, &topic, 4).await;
            produce(&client, &topic, 1, 3, Compression::None).await;
            let id = client.cluster().metadata().topic(&topic).unwrap().id;
            assert!(!id.is_nil(), "{broker:?} gives no topic id");
            let f = client.default_fetcher().fetch(&topic, 0, 0).await.unwrap();
            assert_eq!(f.records.iter().map(value).collect::<Vec<_>>(), ["p0-0", "p0-1", "p0-2"]);
            assert_eq!(f.topic_id, Some(id));
            // The next fetch carries the position whole (its last epoch, when the broker
            // stamps batches with one, and the topic's id): nothing new, and no error.
            let next = f.next_position();
            assert_eq!((next.offset, next.topic_id), (3, Some(id)));
            assert_eq!(next.last_epoch, f.records.last().unwrap().leader_epoch);
            let more = client.default_fetcher().fetch_with(next, &FetchOptions::new()).await.unwrap();
            assert_eq!((more.records.len(), more.next_offset), (0, 3));
            client.close().await;
        })
    })
    .await
    .unwrap();
    let version = shared_fetch_version(broker);
    let by_version = captured.counters(klife_fetcher::telemetry::FETCH_REQUESTS_TOTAL);
    assert!(
        !by_version.is_empty() && by_version.iter().all(|(key, _)| key.ends_with(&format!("{{version={version}}}"))),
        "{broker:?}: {by_version:?}"
    );
}

/// A client on a private fake cluster.
async fn testkit_client(cluster: &FakeCluster) -> Client {
    let mut fetcher = FetcherConfig::default();
    fetcher.max_wait = Duration::from_millis(100);
    fetcher.retry_backoff = Duration::from_millis(20);
    Client::builder().bootstrap_servers(cluster.addresses()).default_fetcher(fetcher).build().await.unwrap()
}

/// Produces each value in a request (a batch) of its own, to partition 0.
async fn produce_one_by_one(client: &Client, topic: &str, values: &[String]) {
    for v in values {
        client.produce(ProducerRecord::new(topic, v.clone()).with_partition(0)).await.unwrap();
    }
}

/// Reads from `consumer` until `n` records came, and returns their (offset, value).
async fn consume(consumer: &mut Consumer, n: usize) -> Vec<(i64, String)> {
    let mut got = Vec::new();
    while got.len() < n {
        let f = tokio::time::timeout(Duration::from_secs(30), consumer.next()).await.unwrap().unwrap().unwrap();
        got.extend(f.records.iter().map(|r| (r.offset, value(r))));
    }
    got
}

/// An unclean election cuts a partition under two consumers that read it to the end
/// (klife-testkit's `truncate_unclean`; the same case runs against Apache Kafka in
/// `kafka_faults.rs`). With `OffsetReset::Error` the consumer reports the truncation
/// and stops the partition; with `Earliest` it goes on where the logs part and reads
/// exactly the records written since, neither skipping them nor reading again what it
/// had. A one-shot fetch from the old position fails the same way; without the
/// position's last epoch it would read the new records at the old offset, silently.
#[test]
fn a_truncated_log_is_reported_or_resumed_where_the_logs_part() {
    let captured = metrics_of(async {
        let cluster = FakeCluster::builder().brokers(3).topic("cut", 1).start().await.unwrap();
        let client = testkit_client(&cluster).await;
        let old: Vec<String> = (0..10).map(|i| format!("old-{i}")).collect();
        produce_one_by_one(&client, "cut", &old).await;
        let mut strict = client.consumer(FetchOptions::new()).with_offset_reset(OffsetReset::Error);
        let mut lenient = client.consumer(FetchOptions::new()).with_offset_reset(OffsetReset::Earliest);
        for c in [&mut strict, &mut lenient] {
            c.assign(&[("cut", 0, StartOffset::Earliest)]).await.unwrap();
            let got = consume(c, 10).await;
            assert_eq!(got.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>(), old);
        }
        let (_, epoch) = cluster.leader("cut", 0).unwrap();
        let (_, new_epoch, end) = cluster.truncate_unclean("cut", 0, 6).unwrap();
        assert_eq!((end, new_epoch), (6, epoch + 1));
        let new: Vec<String> = (0..8).map(|i| format!("new-{i}")).collect();
        produce_one_by_one(&client, "cut", &new).await;

        match strict.next().await {
            Some(Err(FetchError::LogTruncated { topic, partition, offset, last_epoch, end_offset, epoch: shared })) => {
                assert_eq!((topic.as_str(), partition, offset, end_offset), ("cut", 0, 10, 6));
                assert_eq!((last_epoch, shared), (epoch, epoch));
            }
            other => panic!("expected the truncation, got {other:?}"),
        }
        assert!(strict.next().await.is_none(), "the partition stopped");
        assert_eq!(strict.positions()[0].2, 10);

        let resumed = consume(&mut lenient, 8).await;
        let want: Vec<(i64, String)> = new.iter().enumerate().map(|(i, v)| (6 + i as i64, v.clone())).collect();
        assert_eq!(resumed, want);

        let fetcher = client.default_fetcher();
        let at_old = TopicPartitionOffset::new("cut", 0, 10).with_last_epoch(epoch);
        let e = fetcher.fetch_with(at_old, &FetchOptions::new()).await.unwrap_err();
        assert!(matches!(e, FetchError::LogTruncated { end_offset: 6, .. }), "{e}");
        let blind = fetcher.fetch("cut", 0, 10).await.unwrap();
        assert_eq!(blind.records.first().map(value).as_deref(), Some("new-4"), "no check without the epoch");
        client.close().await;
    });
    assert_eq!(captured.counter(klife_fetcher::telemetry::FETCH_LOG_TRUNCATIONS_TOTAL), 3);
}

/// A client whose metadata is stale after a leadership move names the old leader
/// epoch: the old leader (a follower now) answers FENCED_LEADER_EPOCH, the fetcher
/// refreshes its metadata and the new leader answers; the caller sees records. A
/// broker that answers UNKNOWN_LEADER_EPOCH (it is behind) is asked again after a
/// pause, without a metadata refresh for the first retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_leader_epoch_is_fenced_then_refreshed() {
    let cluster = FakeCluster::builder().brokers(3).topic("moved", 1).start().await.unwrap();
    let client = testkit_client(&cluster).await;
    produce_one_by_one(&client, "moved", &["a".into(), "b".into()]).await;
    assert_eq!(client.fetch("moved", 0, 0).await.unwrap().records.len(), 2);
    let (old, epoch) = cluster.leader("moved", 0).unwrap();
    let new = cluster.move_leader("moved", 0).unwrap();
    assert_eq!(client.cluster().metadata().leader("moved", 0).map(|(b, e)| (b.node_id, e)), Some((old, epoch)));
    cluster.clear_requests();
    let f = client.fetch("moved", 0, 0).await.unwrap();
    assert_eq!(f.records.iter().map(value).collect::<Vec<_>>(), ["a", "b"]);
    let seen: Vec<(ApiKey, i32)> = cluster
        .requests()
        .iter()
        .filter(|r| matches!(r.api_key, ApiKey::Fetch | ApiKey::Metadata))
        .map(|r| (r.api_key, r.broker))
        .collect();
    assert_eq!(seen.first(), Some(&(ApiKey::Fetch, old)), "{seen:?}");
    assert_eq!(seen.get(1).map(|r| r.0), Some(ApiKey::Metadata), "{seen:?}");
    assert_eq!(seen.last(), Some(&(ApiKey::Fetch, new)), "{seen:?}");
    assert_eq!(client.cluster().metadata().leader("moved", 0).map(|(b, e)| (b.node_id, e)), Some((new, epoch + 1)));

    cluster.clear_requests();
    cluster.inject_errors(ApiKey::Fetch, &[klife_protocol::ErrorCode::UnknownLeaderEpoch; 2], None);
    let f = client.fetch("moved", 0, 1).await.unwrap();
    assert_eq!(f.records.iter().map(value).collect::<Vec<_>>(), ["b"]);
    let apis: Vec<ApiKey> = cluster.requests().iter().map(|r| r.api_key).collect();
    assert_eq!(apis, [ApiKey::Fetch; 3], "retried twice, without asking for metadata");
    client.close().await;
}

/// A topic deleted and created again under its name is never read at a position of
/// the old one: a fetch from such a position fails with TopicRecreated (naming both
/// ids) once fresh metadata shows the new id, while a position without an id reads
/// the new topic.
async fn a_recreated_topic_is_not_read_at_an_old_position(broker: Broker) {
    let client = broker.client().await;
    let topic = unique_topic("fetch-recreated");
    broker.create_topic(&client, &topic, 1).await;
    let old: Vec<String> = (0..5).map(|i| format!("old-{i}")).collect();
    produce_one_by_one(&client, &topic, &old).await;
    let fetcher = client.default_fetcher();
    // A fetch may come back before every acknowledged record is readable (Tansu did
    // once on a loaded machine): read on from where it stopped.
    let mut f = fetcher.fetch(&topic, 0, 0).await.unwrap();
    let mut read = f.records.len();
    while read < 5 {
        f = fetcher.fetch_with(f.next_position(), &FetchOptions::new()).await.unwrap();
        read += f.records.len();
    }
    assert_eq!(read, 5);
    let old_id = f.topic_id.unwrap();

    let deleted = client.delete_topics(&[&topic]).await.unwrap();
    assert!(deleted.iter().all(|(_, r)| r.is_ok()), "{deleted:?}");
    // The name is free again once the deletion went through.
    let mut created = Err(None);
    for _ in 0..300 {
        match client.create_topic(&topic, 1).await {
            Ok(()) => {
                created = Ok(());
                break;
            }
            Err(e) => created = Err(Some(e)),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    created.unwrap_or_else(|e| panic!("{topic} was not created again: {e:?}"));
    broker.await_topic(&client, &topic, 1).await;
    let new: Vec<String> = (0..8).map(|i| format!("new-{i}")).collect();
    produce_one_by_one(&client, &topic, &new).await;

    match fetcher.fetch_with(f.next_position(), &FetchOptions::new()).await {
        Err(FetchError::TopicRecreated { topic: t, partition: 0, offset: 5, old_id: o, new_id }) => {
            assert_eq!((t.as_str(), o), (topic.as_str(), old_id));
            assert_eq!(Some(new_id), client.cluster().metadata().topic(&topic).map(|t| t.id));
            assert_ne!(new_id, old_id);
        }
        other => panic!("{broker:?}: expected the topic to be found created again, got {other:?}"),
    }
    let mut fresh = Vec::new();
    let mut offset = 5;
    while fresh.len() < 3 {
        let f = fetcher.fetch(&topic, 0, offset).await.unwrap();
        offset = f.next_offset;
        fresh.extend(f.records.iter().map(value));
    }
    assert_eq!(fresh, ["new-5", "new-6", "new-7"]);
    client.close().await;
}

/// `a_recreated_topic_is_not_read_at_an_old_position` where the broker deletes and
/// creates topics (the mock cluster does neither).
mod a_recreated_topic_is_not_read_at_an_old_position {
    use klife_conformance::Broker;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kafka() {
        super::a_recreated_topic_is_not_read_at_an_old_position(Broker::Kafka).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn tansu() {
        super::a_recreated_topic_is_not_read_at_an_old_position(Broker::Tansu).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn testkit() {
        super::a_recreated_topic_is_not_read_at_an_old_position(Broker::Testkit).await;
    }
}

/// A consumer whose topic is deleted and created again while it reads stops the
/// partition with TopicRecreated, whatever its reset policy, and reads nothing of the
/// new topic until told where to start (klife-testkit: the topic is re-created in one
/// step, so the consumer never sees it missing).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_stops_a_partition_whose_topic_was_created_again() {
    let cluster = FakeCluster::builder().brokers(3).topic("again", 1).start().await.unwrap();
    let client = testkit_client(&cluster).await;
    produce_one_by_one(&client, "again", &["old-0".into(), "old-1".into()]).await;
    let mut consumer = client.consumer(FetchOptions::new()).with_offset_reset(OffsetReset::Earliest);
    consumer.assign(&[("again", 0, StartOffset::Earliest)]).await.unwrap();
    assert_eq!(consume(&mut consumer, 2).await, [(0, "old-0".into()), (1, "old-1".into())]);
    let new_id = cluster.recreate_topic("again", 1).unwrap();
    let new: Vec<String> = (0..4).map(|i| format!("new-{i}")).collect();
    produce_one_by_one(&client, "again", &new).await;
    match consumer.next().await {
        Some(Err(FetchError::TopicRecreated { offset: 2, new_id: id, .. })) => assert_eq!(id, new_id),
        other => panic!("expected the topic to be found created again, got {other:?}"),
    }
    assert!(consumer.next().await.is_none(), "the partition stopped");
    consumer.seek("again", 0, 0);
    let got = consume(&mut consumer, 4).await;
    assert_eq!(got.iter().map(|(_, v)| v.clone()).collect::<Vec<_>>(), new);
    client.close().await;
}

/// Polls `consumer.next()` once and drops it when it is not ready: a `select!` branch
/// that lost.
async fn next_or_drop(consumer: &mut Consumer) -> Option<Option<Result<klife::Fetched, FetchError>>> {
    tokio::select! {
        biased;
        next = consumer.next() => Some(next),
        () = std::future::ready(()) => None,
    }
}

/// `receive` takes answers in, and starts the next fetches, while the caller hands
/// nothing over: with one answer of prefetch, two answers come in and the position
/// moves past both before `next` is called. `next` dropped after one poll (a lost
/// `select!` branch) loses nothing, also while an out-of-range position is being
/// reset: every record comes once, in order (klife-testkit: records deleted under the
/// position with `truncate_before`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_takes_answers_in_while_the_caller_is_busy_and_loses_nothing_when_dropped() {
    let cluster = FakeCluster::builder().brokers(1).topic("busy", 1).start().await.unwrap();
    let client = testkit_client(&cluster).await;
    let values: Vec<String> = (0..10).map(|i| format!("v-{i}")).collect();
    produce_one_by_one(&client, "busy", &values).await;
    // One batch (one record) per answer.
    let mut consumer = client
        .consumer(FetchOptions::new().with_max_bytes(1))
        .with_prefetch(1)
        .with_offset_reset(OffsetReset::Earliest);
    consumer.assign(&[("busy", 0, StartOffset::Earliest)]).await.unwrap();
    let guard = Duration::from_secs(30);
    for _ in 0..2 {
        tokio::time::timeout(guard, consumer.receive()).await.unwrap();
    }
    assert_eq!(consumer.positions()[0].2, 2, "two answers taken in, none handed over");

    // Read through polls dropped unless ready, waiting with `receive` in between.
    async fn read(consumer: &mut Consumer, n: usize, guard: Duration) -> Vec<(i64, String)> {
        let mut got = Vec::new();
        while got.len() < n {
            match next_or_drop(consumer).await {
                Some(Some(Ok(f))) => got.extend(f.records.iter().map(|r| (r.offset, value(r)))),
                Some(other) => panic!("after {got:?}: {other:?}"),
                None => tokio::time::timeout(guard, consumer.receive()).await.unwrap(),
            }
        }
        got
    }
    let want = |from: usize| -> Vec<(i64, String)> { (from..10).map(|i| (i as i64, values[i].clone())).collect() };
    assert_eq!(read(&mut consumer, 10, guard).await, want(0));

    // Deleted under the position: out of range, reset to the earliest record left.
    assert_eq!(cluster.truncate_before("busy", 0, 6).unwrap(), 6);
    consumer.seek("busy", 0, 2);
    assert_eq!(read(&mut consumer, 4, guard).await, want(6));
    client.close().await;
}

/// Whether the broker grants fetch sessions (KIP-227): Apache Kafka and klife-testkit
/// do; Tansu and the mock cluster answer every request with session id 0.
fn grants_fetch_sessions(broker: Broker) -> bool {
    matches!(broker, Broker::Kafka | Broker::Testkit)
}

/// A consumer of every partition of `topic` from the start, while a few of them get
/// records in `rounds` rounds (`between(round)` runs before each round is written):
/// every record is read once, in order. Returns nothing; panics on a mismatch.
async fn read_busy_among_idle(
    client: &Client,
    topic: &str,
    partitions: i32,
    busy: &[i32],
    rounds: usize,
    mut between: impl FnMut(usize),
) {
    let mut consumer = client.consumer(FetchOptions::new());
    let assignment: Vec<(&str, i32, StartOffset)> =
        (0..partitions).map(|p| (topic, p, StartOffset::Earliest)).collect();
    consumer.assign(&assignment).await.unwrap();
    let producer = Producer::new(client.cluster().clone(), producer_config(Compression::None)).await.unwrap();
    let mut sent: BTreeMap<i32, Vec<String>> = BTreeMap::new();
    let mut got: BTreeMap<i32, Vec<(i64, String)>> = BTreeMap::new();
    for round in 0..rounds {
        between(round);
        let mut records = Vec::new();
        for (i, p) in busy.iter().enumerate() {
            // Not every busy partition gets records every round.
            if (round + i) % 3 == 2 {
                continue;
            }
            for n in 0..=round {
                let v = format!("p{p}-r{round}-{n}");
                sent.entry(*p).or_default().push(v.clone());
                records.push(ProducerRecord::new(topic, v).with_partition(*p));
            }
        }
        for r in producer.produce_batch(records).await {
            r.unwrap();
        }
        let want: usize = sent.values().map(Vec::len).sum();
        while got.values().map(Vec::len).sum::<usize>() < want {
            let f = tokio::time::timeout(Duration::from_secs(30), consumer.next())
                .await
                .unwrap_or_else(|_| panic!("round {round}: no records within 30 s; got {got:?}"))
                .unwrap()
                .unwrap();
            got.entry(f.partition).or_default().extend(f.records.iter().map(|r| (r.offset, value(r))));
        }
    }
    producer.close().await;
    let sent_by: BTreeMap<i32, Vec<(i64, String)>> = sent
        .into_iter()
        .map(|(p, values)| (p, values.into_iter().enumerate().map(|(i, v)| (i as i64, v)).collect()))
        .collect();
    assert_eq!(got, sent_by, "every record once, in order, at consecutive offsets");
}

/// Many partitions, a few of them with records written in rounds while a consumer
/// reads them all: the fetches of the caught-up partitions wait in a fetch session where
/// the broker grants one (only changed partitions listed, answers holding only those
/// with news), and every record still arrives once and in order. Brokers that grant no
/// session are read with full requests.
async fn many_idle_partitions_are_read_through_a_fetch_session(broker: Broker) {
    let captured = tokio::task::spawn_blocking(move || {
        metrics_of(async move {
            let client = broker.client().await;
            let topic = unique_topic("fetch-sessions");
            let partitions = if broker.has_create_topics() { 120 } else { 4 };
            broker.create_topic(&client, &topic, partitions).await;
            let busy: Vec<i32> = if partitions > 4 { vec![0, 17, 64, 119] } else { vec![1, 2] };
            read_busy_among_idle(&client, &topic, partitions, &busy, 6, |_| {}).await;
            client.close().await;
        })
    })
    .await
    .unwrap();
    let incremental = captured.counter(klife_fetcher::telemetry::FETCH_INCREMENTAL_REQUESTS_TOTAL);
    let resets = captured.counter(klife_fetcher::telemetry::FETCH_SESSION_RESETS_TOTAL);
    if grants_fetch_sessions(broker) {
        assert!(incremental > 0, "{broker:?}: no incremental request answered");
    } else {
        assert_eq!(incremental, 0, "{broker:?} grants fetch sessions");
    }
    assert_eq!(resets, 0, "{broker:?}: a fetch session was lost");
}

/// The fake cluster drops every fetch session (as a broker evicts them from a full
/// cache) between rounds of records: the incremental request that follows gets
/// FETCH_SESSION_ID_NOT_FOUND, its fetches go again in a full request that opens a new
/// session, and every record still arrives once and in order. Closing the fetcher closes
/// its sessions on the brokers.
#[test]
fn evicted_fetch_sessions_are_opened_again_without_loss() {
    let captured = metrics_of(async {
        let cluster = FakeCluster::builder().brokers(3).topic("evicted", 30).start().await.unwrap();
        let client = testkit_client(&cluster).await;
        read_busy_among_idle(&client, "evicted", 30, &[2, 11, 29], 6, |round| {
            if round > 0 {
                cluster.evict_fetch_sessions();
            }
        })
        .await;
        assert!(cluster.fetch_sessions() > 0, "no fetch session open");
        // The batchers close their sessions as they stop, after their last request:
        // wait for that, not for a time. (`Client::close` closes the connections right
        // after the fetcher, so there the close requests are best effort.)
        client.default_fetcher().close();
        for _ in 0..100 {
            if cluster.fetch_sessions() == 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(cluster.fetch_sessions(), 0, "sessions left open after the fetcher closed");
        client.close().await;
    });
    assert!(captured.counter(klife_fetcher::telemetry::FETCH_INCREMENTAL_REQUESTS_TOTAL) > 0);
    assert!(captured.counter(klife_fetcher::telemetry::FETCH_SESSION_RESETS_TOTAL) > 0, "no session was lost");
}

/// Fetch sessions with raw requests, where the broker grants them (Apache Kafka is the
/// reference, klife-testkit must answer the same): a full request at epoch 0 opens one;
/// an incremental one is answered only with partitions that have news; a stale epoch
/// gets INVALID_FETCH_SESSION_EPOCH and leaves the session as it was; an unknown id
/// gets FETCH_SESSION_ID_NOT_FOUND; epoch -1 closes the session. The others answer the
/// full request with session id 0.
async fn a_raw_fetch_session_opens_answers_news_only_and_closes(broker: Broker) {
    use klife_protocol::ErrorCode;
    use klife_protocol::messages::FetchRequest;
    use klife_protocol::messages::fetch_request::{FetchPartition, FetchTopic};

    let client = broker.client().await;
    let topic = unique_topic("fetch-session-raw");
    let partitions = if broker.has_create_topics() { 6 } else { 4 };
    broker.create_topic(&client, &topic, partitions).await;
    let m = client.cluster().metadata();
    let t = m.topic(&topic).unwrap();
    let id = t.id;
    // Two partitions with the same leader: a session lives on one broker.
    let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for p in 0..partitions {
        by_leader.entry(t.partition(p).unwrap().leader).or_default().push(p);
    }
    let (leader, pair) = by_leader.into_iter().find(|(_, ps)| ps.len() >= 2).expect("two partitions on one leader");
    let (a, b) = (pair[0], pair[1]);
    let version = shared_fetch_version(broker);
    let conn = client.cluster().fetch_connection(leader, false).await.unwrap();
    let part = |p: i32, offset: i64| {
        FetchPartition::default()
            .with_partition(p)
            .with_fetch_offset(offset)
            .with_current_leader_epoch(-1)
            .with_last_fetched_epoch(-1)
            .with_partition_max_bytes(1 << 20)
    };
    let request = |session_id: i32, epoch: i32, listed: Vec<FetchPartition>| {
        let topics = if listed.is_empty() {
            Vec::new()
        } else {
            vec![FetchTopic::default().with_topic(topic.clone()).with_topic_id(id).with_partitions(listed)]
        };
        FetchRequest::default()
            .with_replica_id(-1)
            .with_max_wait_ms(50)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_isolation_level(1)
            .with_session_id(session_id)
            .with_session_epoch(epoch)
            .with_topics(topics)
    };
    // (partition, high watermark, records held)
    let answered = |r: &klife_protocol::messages::FetchResponse| -> Vec<(i32, i64, bool)> {
        r.responses
            .iter()
            .flat_map(|t| &t.partitions)
            .map(|p| (p.partition_index, p.high_watermark, p.records.as_ref().is_some_and(|b| !b.is_empty())))
            .collect()
    };
    let full = conn.send_version(&request(0, 0, vec![part(a, 0), part(b, 0)]), version).await.unwrap();
    assert_eq!(full.error_code, 0);
    let mut got = answered(&full);
    got.sort();
    assert_eq!(got, [(a, 0, false), (b, 0, false)], "{broker:?}");
    let session = full.session_id;
    if !grants_fetch_sessions(broker) {
        assert_eq!(session, 0, "{broker:?} grants fetch sessions");
        client.close().await;
        return;
    }
    assert_ne!(session, 0, "{broker:?} grants no fetch session");
    client.produce(ProducerRecord::new(topic.as_str(), "news").with_partition(b)).await.unwrap();
    // Nothing listed: the session's partitions are read, only b has news.
    let news = conn.send_version(&request(session, 1, Vec::new()), version).await.unwrap();
    assert_eq!((news.error_code, news.session_id), (0, session));
    assert_eq!(answered(&news), [(b, 1, true)]);
    // The same epoch again: refused, the session unchanged.
    let stale = conn.send_version(&request(session, 1, Vec::new()), version).await.unwrap();
    assert_eq!(ErrorCode::from_code(stale.error_code), ErrorCode::InvalidFetchSessionEpoch);
    // b moves past its record: nothing new anywhere, an empty answer.
    let quiet = conn.send_version(&request(session, 2, vec![part(b, 1)]), version).await.unwrap();
    assert_eq!((quiet.error_code, quiet.session_id), (0, session));
    assert_eq!(answered(&quiet), []);
    let unknown = session.checked_add(1_000_003).unwrap_or(1);
    let lost = conn.send_version(&request(unknown, 1, Vec::new()), version).await.unwrap();
    assert_eq!(ErrorCode::from_code(lost.error_code), ErrorCode::FetchSessionIdNotFound);
    // Closed: answered without a session, and gone.
    let close = conn.send_version(&request(session, -1, Vec::new()), version).await.unwrap();
    assert_eq!((close.error_code, close.session_id), (0, 0));
    let gone = conn.send_version(&request(session, 3, Vec::new()), version).await.unwrap();
    assert_eq!(ErrorCode::from_code(gone.error_code), ErrorCode::FetchSessionIdNotFound);
    client.close().await;
}

/// A position that carries no topic id reads whatever the topic holds at its offset:
/// when the topic was deleted and created again while this client's metadata still
/// named the old id, the fetch finds the new id and reads the new topic, rather than
/// failing as re-created (only a position that read the old topic is bound to it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_position_without_a_topic_id_reads_a_topic_created_again() {
    let cluster = FakeCluster::builder().brokers(3).topic("again", 1).start().await.unwrap();
    let client = testkit_client(&cluster).await;
    produce_one_by_one(&client, "again", &["old-0".into()]).await;
    cluster.recreate_topic("again", 1).unwrap();
    // Written by another client: this one's metadata still names the old id.
    let other = testkit_client(&cluster).await;
    produce_one_by_one(&other, "again", &["new-0".into(), "new-1".into()]).await;
    let mut consumer = client.consumer(FetchOptions::new()).with_offset_reset(OffsetReset::Earliest);
    consumer.assign(&[("again", 0, StartOffset::Offset(0))]).await.unwrap();
    let got = tokio::time::timeout(Duration::from_secs(60), consumer.next()).await.expect("an answer");
    match got {
        Some(Ok(f)) => {
            let first = f.records.first().map(|r| (r.offset, value(r)));
            assert_eq!(first, Some((0, "new-0".to_owned())), "{f:?}");
        }
        other => panic!("a position without a topic id read nothing: {other:?}"),
    }
    other.close().await;
    client.close().await;
}
