//! Produce and fetch straight through the codec and a connection: no producer or
//! fetcher logic in between.

use bytes::Bytes;
use klife_connection::Cluster;
use klife_protocol::messages::fetch_request::{FetchPartition, FetchRequest, FetchTopic};
use klife_protocol::messages::produce_request::{PartitionProduceData, ProduceRequest, TopicProduceData};
use klife_protocol::records::{BatchOptions, RecordBatch, RecordBatchWriter, RecordBatches};
use klife_protocol::{ApiKey, Compression, ErrorCode, Record};

/// Highest Fetch version used here: v13+ name topics by id.
const FETCH_BY_NAME_MAX: i16 = 12;

/// One batch of `records` to the partition's leader with `acks = -1`; returns the base
/// offset the broker assigned.
pub async fn produce(cluster: &Cluster, topic: &str, partition: i32, codec: Compression, records: &[Record]) -> i64 {
    let mut w = RecordBatchWriter::new(BatchOptions { compression: codec, ..BatchOptions::default() });
    for r in records {
        let headers: Vec<_> = r.headers.clone();
        w.append_with_headers(r.timestamp, r.key.as_deref(), r.value.as_deref(), &headers).unwrap();
    }
    let batch = w.finish().unwrap();
    let conn = cluster.leader(topic, partition).await.unwrap().connection;
    let req = ProduceRequest::default().with_acks(-1).with_timeout_ms(10_000).with_topic_data(vec![
        TopicProduceData::default()
            .with_name(topic.to_owned())
            .with_partition_data(vec![PartitionProduceData::default().with_index(partition).with_records(Some(batch))]),
    ]);
    let resp = conn.send(&req).await.unwrap();
    let p = &resp.responses[0].partition_responses[0];
    assert_eq!(
        ErrorCode::from_code(p.error_code),
        ErrorCode::None,
        "produce to {topic}-{partition}: {:?}",
        p.error_message
    );
    p.base_offset
}

/// What one Fetch returned for one partition.
#[derive(Debug)]
pub struct Fetched {
    /// Error code of the partition.
    pub error: ErrorCode,
    /// High watermark.
    pub high_watermark: i64,
    /// Records of every complete batch, in order.
    pub records: Vec<Record>,
    /// Whether the last batch was cut off by the size limit.
    pub truncated: bool,
}

/// The complete batches of one Fetch of one partition from `offset` (control batches
/// included), for tests that look at batch attributes and transaction markers.
pub async fn fetch_batches(cluster: &Cluster, topic: &str, partition: i32, offset: i64) -> Vec<RecordBatch> {
    let conn = cluster.leader(topic, partition).await.unwrap().connection;
    let version = conn.version_for(ApiKey::Fetch, Some(FETCH_BY_NAME_MAX)).unwrap();
    let mut req = FetchRequest::default().with_max_wait_ms(200).with_min_bytes(1).with_topics(vec![
        FetchTopic::default().with_topic(topic.to_owned()).with_partitions(vec![
            FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(1 << 20),
        ]),
    ]);
    if version >= 3 {
        req = req.with_max_bytes(1 << 20);
    }
    let resp = conn.send_version(&req, version).await.unwrap();
    let p = resp.responses.iter().flat_map(|t| t.partitions.iter()).find(|p| p.partition_index == partition).unwrap();
    RecordBatches::new(p.records.clone().unwrap_or_else(Bytes::new)).map(|b| b.unwrap().decode().unwrap()).collect()
}

/// One Fetch of one partition from `offset`, up to `max_bytes`.
pub async fn fetch(cluster: &Cluster, topic: &str, partition: i32, offset: i64, max_bytes: i32) -> Fetched {
    let klife_connection::Leader { leader_epoch: epoch, connection: conn, .. } =
        cluster.leader(topic, partition).await.unwrap();
    let version = conn.version_for(ApiKey::Fetch, Some(FETCH_BY_NAME_MAX)).unwrap();
    let mut req = FetchRequest::default().with_max_wait_ms(50).with_min_bytes(1).with_topics(vec![
        FetchTopic::default().with_topic(topic.to_owned()).with_partitions(vec![
            FetchPartition::default()
                .with_partition(partition)
                .with_fetch_offset(offset)
                .with_partition_max_bytes(max_bytes)
                .with_current_leader_epoch(if version >= 9 { epoch } else { -1 }),
        ]),
    ]);
    if version >= 3 {
        req = req.with_max_bytes(max_bytes);
    }
    let resp = conn.send_version(&req, version).await.unwrap();
    let p = resp
        .responses
        .iter()
        .flat_map(|t| t.partitions.iter())
        .find(|p| p.partition_index == partition)
        .expect("the broker answered for the partition");
    let mut records = Vec::new();
    let mut batches = RecordBatches::new(p.records.clone().unwrap_or_else(Bytes::new));
    for raw in batches.by_ref() {
        let batch = raw.unwrap().decode().unwrap();
        records.extend(batch.to_records().into_iter().filter(|r| r.offset >= offset));
    }
    Fetched {
        error: ErrorCode::from_code(p.error_code),
        high_watermark: p.high_watermark,
        records,
        truncated: batches.is_truncated(),
    }
}

/// Fetches every record of a partition from `offset` up to `end` (or to the high
/// watermark, whichever comes first), refreshing metadata and trying again when
/// leadership moved (bounded).
pub async fn fetch_all(cluster: &Cluster, topic: &str, partition: i32, mut offset: i64, end: i64) -> Vec<Record> {
    let mut out = Vec::new();
    let mut stale = 0;
    for _ in 0..1000 {
        if offset >= end {
            break;
        }
        let f = fetch(cluster, topic, partition, offset, 1 << 20).await;
        if f.error != ErrorCode::None {
            assert!(f.error.is_retriable() && stale < 50, "fetch {topic}-{partition} at {offset}: {}", f.error);
            stale += 1;
            cluster.refresh_metadata().await.unwrap();
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        }
        match f.records.last() {
            Some(last) => offset = last.offset + 1,
            None if offset >= f.high_watermark => break,
            None => {}
        }
        out.extend(f.records);
    }
    out
}
