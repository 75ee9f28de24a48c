//! A scripted single-broker peer for Fetch cases no third-party broker here can
//! serve: aborted-transaction lists and transaction markers for read_committed, corrupt
//! batches, injected partition errors. Each partition of topic [`TOPIC`] answers with
//! what the test scripted for it; the peer records every Fetch request it received.
//! It advertises Fetch up to v17 but gives its topic no id (as a broker answering an
//! old Metadata version does), so clients must name the topic: at v12 at most.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use klife_protocol::messages::fetch_response::{AbortedTransaction, FetchableTopicResponse, PartitionData};
use klife_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use klife_protocol::messages::metadata_response::{MetadataResponsePartition, MetadataResponseTopic};
use klife_protocol::messages::{FetchResponse, ListOffsetsResponse};
use klife_protocol::{AnyRequest, AnyResponse, ApiKey, ErrorCode};
use tokio::net::{TcpListener, TcpStream};

use crate::server::{api_versions, read_request, single_broker_metadata, write_response};

/// The topic the peer serves.
pub const TOPIC: &str = "scripted";

/// What one partition answers to every fetch.
#[derive(Debug, Clone)]
pub struct ScriptedPartition {
    /// Error code.
    pub error: ErrorCode,
    /// The record batches, concatenated (served whatever offset is asked).
    pub records: Bytes,
    /// High watermark.
    pub high_watermark: i64,
    /// Last stable offset.
    pub last_stable_offset: i64,
    /// Aborted transactions: (producer id, first offset).
    pub aborted: Vec<(i64, i64)>,
    /// Leave the partition out of answers (as Tansu does with partitions that no longer
    /// fit an answer's byte limit).
    pub omitted: bool,
}

impl ScriptedPartition {
    /// A partition answering with `records` and no error.
    pub fn records(records: Bytes, high_watermark: i64) -> Self {
        ScriptedPartition {
            error: ErrorCode::None,
            records,
            high_watermark,
            last_stable_offset: high_watermark,
            aborted: Vec::new(),
            omitted: false,
        }
    }
}

/// One Fetch request as received: (isolation level, [(partition, offset, max bytes)]).
pub type SeenFetch = (i8, Vec<(i32, i64, i32)>);

/// A running peer; stops when dropped.
pub struct ScriptedFetchBroker {
    /// `127.0.0.1:port`.
    pub address: String,
    seen: Arc<Mutex<Vec<SeenFetch>>>,
    versions: Arc<Mutex<Vec<i16>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ScriptedFetchBroker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ScriptedFetchBroker {
    /// Starts the peer with one scripted answer per partition (partition ids are
    /// the indexes).
    pub async fn start(partitions: Vec<ScriptedPartition>) -> ScriptedFetchBroker {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let versions = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(partitions);
        let (seen2, versions2) = (seen.clone(), versions.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                tokio::spawn(serve(tcp, port, script.clone(), seen2.clone(), versions2.clone()));
            }
        });
        ScriptedFetchBroker { address: format!("127.0.0.1:{port}"), seen, versions, task }
    }

    /// The Fetch requests received so far.
    pub fn fetches(&self) -> Vec<SeenFetch> {
        self.seen.lock().unwrap().clone()
    }

    /// The versions of the Fetch requests received so far.
    pub fn fetch_versions(&self) -> Vec<i16> {
        self.versions.lock().unwrap().clone()
    }
}

async fn serve(
    mut s: TcpStream,
    port: u16,
    script: Arc<Vec<ScriptedPartition>>,
    seen: Arc<Mutex<Vec<SeenFetch>>>,
    versions: Arc<Mutex<Vec<i16>>>,
) {
    loop {
        let Some((header, request)) = read_request(&mut s).await else { return };
        let response: AnyResponse = match request {
            AnyRequest::ApiVersions(_) => api_versions(&[
                (ApiKey::ApiVersions, 0, 3),
                (ApiKey::Metadata, 0, 12),
                (ApiKey::Fetch, 4, 17),
                (ApiKey::ListOffsets, 1, 7),
            ]),
            AnyRequest::Metadata(_) => single_broker_metadata(port)
                .with_topics(vec![
                    MetadataResponseTopic::default().with_name(Some(TOPIC.into())).with_partitions(
                        (0..script.len() as i32)
                            .map(|p| {
                                MetadataResponsePartition::default()
                                    .with_partition_index(p)
                                    .with_leader_id(1)
                                    .with_leader_epoch(0)
                                    .with_replica_nodes(vec![1])
                                    .with_isr_nodes(vec![1])
                            })
                            .collect(),
                    ),
                ])
                .into(),
            AnyRequest::ListOffsets(req) => ListOffsetsResponse::default()
                .with_topics(
                    req.topics
                        .iter()
                        .map(|t| {
                            ListOffsetsTopicResponse::default().with_name(t.name.clone()).with_partitions(
                                t.partitions
                                    .iter()
                                    .map(|p| {
                                        let hw = script.get(p.partition_index as usize).map_or(0, |s| s.high_watermark);
                                        ListOffsetsPartitionResponse::default()
                                            .with_partition_index(p.partition_index)
                                            .with_offset(if p.timestamp == -2 { 0 } else { hw })
                                            .with_timestamp(-1)
                                    })
                                    .collect(),
                            )
                        })
                        .collect(),
                )
                .into(),
            AnyRequest::Fetch(req) => {
                let mut asked = Vec::new();
                let mut topics = Vec::new();
                for t in &req.topics {
                    let mut parts = Vec::new();
                    for p in &t.partitions {
                        asked.push((p.partition, p.fetch_offset, p.partition_max_bytes));
                        if script.get(p.partition as usize).is_some_and(|s| s.omitted) {
                            continue;
                        }
                        let data = match script.get(p.partition as usize) {
                            Some(s) if t.topic == TOPIC => PartitionData::default()
                                .with_partition_index(p.partition)
                                .with_error_code(s.error.code())
                                .with_high_watermark(s.high_watermark)
                                .with_last_stable_offset(s.last_stable_offset)
                                .with_log_start_offset(0)
                                .with_aborted_transactions(Some(
                                    s.aborted
                                        .iter()
                                        .map(|&(pid, first)| {
                                            AbortedTransaction::default().with_producer_id(pid).with_first_offset(first)
                                        })
                                        .collect(),
                                ))
                                .with_records(Some(s.records.clone())),
                            _ => PartitionData::default()
                                .with_partition_index(p.partition)
                                .with_error_code(ErrorCode::UnknownTopicOrPartition.code()),
                        };
                        parts.push(data);
                    }
                    topics.push(FetchableTopicResponse::default().with_topic(t.topic.clone()).with_partitions(parts));
                }
                seen.lock().unwrap().push((req.isolation_level, asked));
                versions.lock().unwrap().push(header.request_api_version);
                FetchResponse::default().with_responses(topics).into()
            }
            _ => return,
        };
        if !write_response(&mut s, &header, &response).await {
            return;
        }
    }
}
