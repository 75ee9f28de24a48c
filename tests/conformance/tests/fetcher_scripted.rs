//! The fetcher against scripted broker answers, for what Tansu and the mock cluster
//! cannot serve: aborted-transaction lists with transaction markers (read_committed),
//! corrupt batches, and partition errors, each next to healthy partitions of the same
//! request.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use klife::{Client, FetchOptions, FetcherConfig, IsolationLevel};
use klife_conformance::scripted_fetch::{ScriptedFetchBroker, ScriptedPartition, TOPIC};
use klife_fetcher::{FetchError, Fetcher, Record};
use klife_protocol::records::{BatchOptions, ControlRecordType, RecordBatchWriter, end_transaction_batch};
use klife_protocol::{Compression, ErrorCode};

fn batch(base: i64, values: &[&str], opts: BatchOptions) -> Bytes {
    let mut w = RecordBatchWriter::new(BatchOptions { base_offset: base, ..opts });
    for v in values {
        w.append(1_000, None, Some(v.as_bytes())).unwrap();
    }
    w.finish().unwrap()
}

fn txn(base: i64, pid: i64, values: &[&str]) -> Bytes {
    let opts = BatchOptions {
        transactional: true,
        producer_id: pid,
        producer_epoch: 0,
        base_sequence: 0,
        compression: Compression::Lz4,
        ..BatchOptions::default()
    };
    batch(base, values, opts)
}

fn marker(base: i64, pid: i64, result: ControlRecordType) -> Bytes {
    let opts = BatchOptions { base_offset: base, producer_id: pid, producer_epoch: 0, ..BatchOptions::default() };
    end_transaction_batch(&opts, 2_000, result, 0).unwrap()
}

/// The batch with its last byte changed: the CRC no longer matches.
fn flip_last(batch: Bytes) -> Vec<u8> {
    let mut v = batch.to_vec();
    let last = v.len() - 1;
    v[last] ^= 0x55;
    v
}

fn values(records: &[Record]) -> Vec<(i64, String)> {
    records.iter().map(|r| (r.offset, String::from_utf8_lossy(r.value.as_deref().unwrap()).into_owned())).collect()
}

/// Partition 0 of the script: two transactions interleaved, one aborted, then a plain
/// batch, then an open transaction past the last stable offset.
fn transactional_partition() -> ScriptedPartition {
    let log = [
        txn(0, 7, &["aborted-a", "aborted-b"]),
        txn(2, 8, &["committed-a"]),
        txn(3, 7, &["aborted-c"]),
        marker(4, 7, ControlRecordType::Abort),
        txn(5, 8, &["committed-b"]),
        marker(6, 8, ControlRecordType::Commit),
        batch(7, &["plain"], BatchOptions::default()),
        txn(8, 9, &["open"]),
    ]
    .concat();
    ScriptedPartition {
        error: ErrorCode::None,
        records: Bytes::from(log),
        high_watermark: 9,
        last_stable_offset: 8,
        aborted: vec![(7, 0)],
        omitted: false,
    }
}

async fn client(broker: &ScriptedFetchBroker, fetch_timeout: Duration) -> Client {
    let mut fetcher = FetcherConfig::default();
    fetcher.fetch_timeout = fetch_timeout;
    fetcher.retry_backoff = Duration::from_millis(20);
    Client::builder().bootstrap_servers([broker.address.clone()]).default_fetcher(fetcher).build().await.unwrap()
}

#[tokio::test]
async fn read_committed_hides_aborted_records_markers_and_the_unstable_tail() {
    let broker = ScriptedFetchBroker::start(vec![transactional_partition()]).await;
    let client = client(&broker, Duration::from_secs(5)).await;

    let committed = client.fetch(TOPIC, 0, 0).await.unwrap();
    assert_eq!(
        values(&committed.records),
        vec![(2, "committed-a".into()), (5, "committed-b".into()), (7, "plain".into())]
    );
    assert_eq!(committed.next_offset, 8, "stops at the last stable offset");
    assert_eq!(committed.last_stable_offset, 8);
    assert!(committed.records[0].batch.is_transactional);
    assert_eq!(committed.records[0].batch.producer_id, 8);
    assert_eq!(committed.records[0].batch.compression, Compression::Lz4);

    let everything = client
        .fetch_with((TOPIC, 0, 0).into(), &FetchOptions::new().with_isolation_level(IsolationLevel::ReadUncommitted))
        .await
        .unwrap();
    assert_eq!(
        values(&everything.records),
        vec![
            (0, "aborted-a".into()),
            (1, "aborted-b".into()),
            (2, "committed-a".into()),
            (3, "aborted-c".into()),
            (5, "committed-b".into()),
            (7, "plain".into()),
            (8, "open".into()),
        ]
    );
    assert_eq!(everything.next_offset, 9);

    // From the middle of the aborted transaction: still hidden (the list's first
    // offset precedes the fetch offset).
    let mid = client.fetch(TOPIC, 0, 3).await.unwrap();
    assert_eq!(values(&mid.records), vec![(5, "committed-b".into()), (7, "plain".into())]);

    // The isolation level went on the wire.
    let levels: Vec<i8> = broker.fetches().iter().map(|f| f.0).collect();
    assert_eq!(levels, vec![1, 0, 1]);
    client.close().await;
}

#[tokio::test]
async fn a_corrupt_batch_and_partition_errors_spare_the_other_partitions() {
    let good = batch(0, &["a", "b"], BatchOptions::default());
    let corrupt = flip_last(batch(0, &["x"], BatchOptions::default()));
    let mut unauthorized = ScriptedPartition::records(Bytes::new(), 0);
    unauthorized.error = ErrorCode::TopicAuthorizationFailed;
    let mut moving = ScriptedPartition::records(Bytes::new(), 0);
    moving.error = ErrorCode::NotLeaderOrFollower;
    let broker = ScriptedFetchBroker::start(vec![
        ScriptedPartition::records(good.clone(), 2),
        ScriptedPartition::records(Bytes::from(corrupt), 1),
        unauthorized,
        moving,
        // A corrupt second batch: the first is still delivered.
        ScriptedPartition::records(
            Bytes::from([good.to_vec(), flip_last(batch(2, &["c"], BatchOptions::default()))].concat()),
            3,
        ),
    ])
    .await;
    let client = client(&broker, Duration::from_millis(600)).await;
    let results = client.fetch_many((0..5).map(|p| (TOPIC, p, 0i64)), &FetchOptions::new()).await;

    assert_eq!(values(&results[0].1.as_ref().unwrap().records), vec![(0, "a".into()), (1, "b".into())]);

    let e = results[1].1.as_ref().unwrap_err();
    assert!(e.is_corrupt(), "{e}");
    assert!(!e.is_retriable(), "{e}");
    assert!(e.to_string().contains("corrupt"), "{e}");

    let e = results[2].1.as_ref().unwrap_err();
    assert_eq!(e.error_code(), Some(ErrorCode::TopicAuthorizationFailed), "{e}");
    assert!(e.is_authentication(), "{e}");

    let e = results[3].1.as_ref().unwrap_err();
    assert!(e.is_timeout(), "{e}");
    assert_eq!(e.error_code(), Some(ErrorCode::NotLeaderOrFollower), "{e}");

    let f = results[4].1.as_ref().unwrap();
    assert_eq!(f.records.len(), 2);
    assert_eq!(f.next_offset, 2);

    // All five went out in the first request; only the moving partition was retried.
    let fetches = broker.fetches();
    assert_eq!(fetches[0].1.len(), 5, "{fetches:?}");
    assert!(fetches[1..].iter().all(|f| f.1.iter().all(|p| p.0 == 3)), "{fetches:?}");
    client.close().await;
}

#[tokio::test]
async fn a_batch_larger_than_asked_for_is_fetched_whole_or_refused_past_the_request_limit() {
    let values_: Vec<String> = (0..50).map(|i| format!("{i:04}-{}", "v".repeat(200))).collect();
    let refs: Vec<&str> = values_.iter().map(String::as_str).collect();
    let big = batch(0, &refs, BatchOptions::default());
    // The peer cuts nothing: emulate a broker that sends only what was asked for by
    // scripting the cut batch, then check both answers of the fetcher.
    let cut = big.slice(..1000);
    let broker = ScriptedFetchBroker::start(vec![ScriptedPartition::records(cut, 50)]).await;
    let mut config = FetcherConfig::default();
    config.partition_max_bytes = 1000;
    config.max_bytes_per_request = 4000;
    let client = Client::builder().bootstrap_servers([broker.address.clone()]).build().await.unwrap();
    let fetcher = Fetcher::new(client.cluster().clone(), config.clone()).unwrap();
    // The batch is larger than a request may ask for: a typed error, not a loop.
    match fetcher.fetch(TOPIC, 0, 0).await {
        Err(FetchError::BatchTooLarge { size, limit: 4000, .. }) => assert_eq!(size, big.len()),
        other => panic!("expected BatchTooLarge, got {other:?}"),
    }
    // Within the request limit, the fetcher asks again for the whole batch.
    config.max_bytes_per_request = 64 * 1024;
    let fetcher = Fetcher::new(client.cluster().clone(), config).unwrap();
    // The peer still sends the cut batch: the second ask is for the batch's size.
    let _ = fetcher.fetch(TOPIC, 0, 0).await;
    let asked: Vec<i32> = broker.fetches().iter().flat_map(|f| f.1.iter().map(|p| p.2)).collect();
    assert!(asked.contains(&(big.len() as i32)), "asked for {asked:?}, batch is {}", big.len());
    client.close().await;
}

#[tokio::test]
async fn a_partition_left_out_of_the_answer_is_an_empty_answer() {
    let good = batch(0, &["a"], BatchOptions::default());
    let mut left_out = ScriptedPartition::records(good.clone(), 1);
    left_out.omitted = true;
    let broker = ScriptedFetchBroker::start(vec![ScriptedPartition::records(good, 1), left_out]).await;
    let client = client(&broker, Duration::from_secs(5)).await;
    let results = client.fetch_many([(TOPIC, 0, 0i64), (TOPIC, 1, 0)], &FetchOptions::new()).await;
    assert_eq!(values(&results[0].1.as_ref().unwrap().records), vec![(0, "a".into())]);
    let f = results[1].1.as_ref().unwrap();
    assert!(f.records.is_empty());
    assert_eq!((f.next_offset, f.high_watermark), (0, -1));
    // One request, not a retry loop.
    assert_eq!(broker.fetches().len(), 1, "{:?}", broker.fetches());
    client.close().await;
}

/// A broker whose metadata gives the topic no id is fetched by name, so at v12 at
/// most though it has v17; positions then carry no topic id, but still their last
/// epoch.
#[tokio::test]
async fn a_topic_without_an_id_is_fetched_by_name_at_v12() {
    let log = [batch(0, &["a", "b"], BatchOptions { partition_leader_epoch: 3, ..BatchOptions::default() })].concat();
    let broker = ScriptedFetchBroker::start(vec![ScriptedPartition::records(Bytes::from(log), 2)]).await;
    let client = client(&broker, Duration::from_secs(5)).await;
    let f = client.fetch(TOPIC, 0, 0).await.unwrap();
    assert_eq!(values(&f.records), vec![(0, "a".into()), (1, "b".into())]);
    assert_eq!((f.last_epoch, f.topic_id), (Some(3), None));
    let next = f.next_position();
    assert_eq!((next.offset, next.last_epoch, next.topic_id), (2, Some(3), None));
    // The peer serves the same batches at any offset; what matters is what went out.
    client.fetch_with(next, &FetchOptions::new()).await.unwrap();
    let versions = broker.fetch_versions();
    assert!(versions.len() >= 2 && versions.iter().all(|v| *v == 12), "{versions:?}");
    client.close().await;
}
