//! A raw Kafka client for the tests: klife-protocol's client-side framing over a TCP
//! (or TLS) stream, nothing else.

#![allow(dead_code, clippy::unwrap_used, unreachable_pub)]

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use klife_protocol::frame;
use klife_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use klife_protocol::messages::metadata_request::MetadataRequestTopic;
use klife_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use klife_protocol::messages::produce_response::PartitionProduceResponse;
use klife_protocol::messages::{FetchRequest, MetadataRequest, ProduceRequest};
use klife_protocol::records::{BatchOptions, RecordBatch, RecordBatchWriter, RecordBatches};
use klife_protocol::{Request, Response};
use klife_testkit::FakeCluster;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reaching this means something hung.
pub const HANG_GUARD: Duration = Duration::from_secs(30);

pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

pub struct Raw {
    pub stream: Box<dyn Stream>,
    correlation_id: i32,
    buf: BytesMut,
}

impl Raw {
    pub async fn connect(address: &str) -> Raw {
        let tcp = TcpStream::connect(address).await.unwrap();
        Raw::over(Box::new(tcp))
    }

    pub fn over(stream: Box<dyn Stream>) -> Raw {
        Raw { stream, correlation_id: 0, buf: BytesMut::new() }
    }

    pub async fn write(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    /// The next frame, or `None` when the broker closed the connection (or sent
    /// something that is not a frame).
    pub async fn read_frame(&mut self) -> Option<Bytes> {
        tokio::time::timeout(HANG_GUARD, async {
            loop {
                // Bytes that are no frame (a TLS alert to a plaintext client) count as closing.
                match frame::split_frame(&mut self.buf, frame::DEFAULT_MAX_FRAME_SIZE) {
                    Ok(Some(f)) => return Some(f),
                    Ok(None) => {}
                    Err(_) => return None,
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("the broker neither answered nor closed")
    }

    /// Sends without waiting for the answer; returns the correlation id.
    pub async fn send_only<R: Request>(&mut self, request: &R, version: i16) -> i32 {
        self.correlation_id += 1;
        let mut out = BytesMut::new();
        frame::encode_request(&mut out, self.correlation_id, Some("testkit-tests"), version, request).unwrap();
        self.write(&out).await;
        self.correlation_id
    }

    pub async fn receive<R: Response>(&mut self, version: i16, correlation_id: i32) -> R {
        let frame = self.read_frame().await.expect("the broker closed the connection");
        let (header, body) = frame::decode_response_exact::<R>(frame, version).unwrap();
        assert_eq!(header.correlation_id, correlation_id);
        body
    }

    pub async fn send<R: Request>(&mut self, request: &R, version: i16) -> R::Response {
        let id = self.send_only(request, version).await;
        self.receive::<R::Response>(version, id).await
    }

    /// Whether the broker closed the connection (rather than answering).
    pub async fn is_closed(&mut self) -> bool {
        self.read_frame().await.is_none()
    }
}

/// One uncompressed batch of values.
pub fn batch(values: &[&str], options: BatchOptions) -> Bytes {
    let mut w = RecordBatchWriter::new(options);
    for (i, v) in values.iter().enumerate() {
        w.append(1_700_000_000_000 + i as i64, Some(format!("k{i}").as_bytes()), Some(v.as_bytes())).unwrap();
    }
    w.finish().unwrap()
}

pub fn produce_request(topic: &str, partition: i32, records: Bytes, acks: i16) -> ProduceRequest {
    ProduceRequest::default().with_acks(acks).with_timeout_ms(5_000).with_topic_data(vec![
        TopicProduceData::default().with_name(topic.to_owned()).with_partition_data(vec![
            PartitionProduceData::default().with_index(partition).with_records(Some(records)),
        ]),
    ])
}

/// Produces one batch to a partition's leader; returns the partition's answer.
pub async fn produce(cluster: &FakeCluster, topic: &str, partition: i32, records: Bytes) -> PartitionProduceResponse {
    let (leader, _) = cluster.leader(topic, partition).unwrap();
    let mut c = Raw::connect(&cluster.broker_address(leader).unwrap()).await;
    let resp = c.send(&produce_request(topic, partition, records, -1), 11).await;
    resp.responses[0].partition_responses[0].clone()
}

pub fn fetch_request(topic: &str, partition: i32, offset: i64, isolation: i8) -> FetchRequest {
    FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_isolation_level(isolation)
        .with_topics(vec![FetchTopic::default().with_topic(topic.to_owned()).with_partitions(vec![
                FetchPartition::default()
                    .with_partition(partition)
                    .with_fetch_offset(offset)
                    .with_partition_max_bytes(1 << 20),
            ])])
}

/// The batches of one fetch, decoded.
pub fn batches(records: Option<Bytes>) -> Vec<RecordBatch> {
    RecordBatches::new(records.unwrap_or_default()).map(|b| b.unwrap().decode().unwrap()).collect()
}

pub fn metadata_request(topics: &[&str]) -> MetadataRequest {
    MetadataRequest::default().with_allow_auto_topic_creation(false).with_topics(Some(
        topics.iter().map(|t| MetadataRequestTopic::default().with_name(Some((*t).to_owned()))).collect(),
    ))
}
