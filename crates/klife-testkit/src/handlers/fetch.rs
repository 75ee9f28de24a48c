//! Fetch: reads from the partition logs under the request's size limits and isolation
//! level. Long polling (min_bytes / max_wait) is the connection task's: it calls
//! [`fetch`] again whenever records are appended, until enough bytes are there or the
//! wait is over.
//!
//! Leader epochs are checked as Kafka checks them: a replica of the partition answers
//! a `current_leader_epoch` older than its own FENCED_LEADER_EPOCH and a newer one
//! UNKNOWN_LEADER_EPOCH (before saying whether it leads); the leader looks up where a
//! `last_fetched_epoch` (v12+) ends in its epoch cache and answers a log that ends it
//! before the fetch offset with a diverging epoch and no records, and an epoch it
//! cannot place with OFFSET_OUT_OF_RANGE. From v13 topics are named by id (an unknown
//! one gets UNKNOWN_TOPIC_ID); from v16 a NOT_LEADER_OR_FOLLOWER or
//! FENCED_LEADER_EPOCH answer names the current leader and its endpoint.
//!
//! Fetch sessions (KIP-227) are not kept: every answer is a full, sessionless one with
//! session id 0, which Kafka also sends when its session cache is full. A request for an
//! existing session id gets FETCH_SESSION_ID_NOT_FOUND, and clients fall back to full
//! fetches.

use bytes::Bytes;
use klife_protocol::ErrorCode;
use klife_protocol::messages::FetchRequest;
use klife_protocol::messages::FetchResponse;
use klife_protocol::messages::fetch_response::{
    AbortedTransaction, EpochEndOffset, FetchableTopicResponse, LeaderIdAndEpoch, NodeEndpoint, PartitionData,
};

use super::{Ctx, check_leader_epoch};
use crate::log::Isolation;
use crate::state::State;

/// How an answer compares with what the request waits for.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FetchStatus {
    /// Record bytes in the answer.
    pub(crate) bytes: usize,
    /// Whether any partition (or the request) has an error: answered at once.
    pub(crate) error: bool,
}

impl FetchStatus {
    /// Whether the answer can go now rather than wait for more records.
    pub(crate) fn ready(&self, r: &FetchRequest) -> bool {
        self.error || r.max_wait_ms <= 0 || self.bytes >= usize::try_from(r.min_bytes.max(0)).unwrap_or(0)
    }
}

fn error_partition(partition: i32, code: ErrorCode) -> PartitionData {
    PartitionData::default()
        .with_partition_index(partition)
        .with_error_code(code.code())
        .with_high_watermark(-1)
        .with_records(Some(Bytes::new()))
}

/// Builds the answer to `r` from the logs as they are now.
pub(crate) fn fetch(state: &State, ctx: &Ctx, r: &FetchRequest) -> (FetchResponse, FetchStatus) {
    let mut status = FetchStatus::default();
    if ctx.version >= 7 && (r.session_id != 0 || r.session_epoch > 0) {
        let code =
            if r.session_id != 0 { ErrorCode::FetchSessionIdNotFound } else { ErrorCode::InvalidFetchSessionEpoch };
        status.error = true;
        return (FetchResponse::default().with_error_code(code.code()), status);
    }
    let isolation = Isolation::from_wire(r.isolation_level);
    let mut remaining = usize::try_from(r.max_bytes.max(0)).unwrap_or(0);
    let mut min_one = true;
    let mut endpoints: Vec<NodeEndpoint> = Vec::new();
    let by_id = ctx.version >= 13;
    let responses = r
        .topics
        .iter()
        .map(|t| {
            let name =
                if by_id { state.topic_by_id(t.topic_id).map(|(n, _)| n.clone()) } else { Some(t.topic.clone()) };
            let partitions = t
                .partitions
                .iter()
                .map(|fp| {
                    let Some(name) = &name else {
                        status.error = true;
                        return error_partition(fp.partition, ErrorCode::UnknownTopicId);
                    };
                    let Some(part) = state.partition(name, fp.partition) else {
                        status.error = true;
                        return error_partition(fp.partition, ErrorCode::UnknownTopicOrPartition);
                    };
                    // A replica knows the partition's epoch and checks the client's
                    // first; a broker that holds no replica only says it does not lead.
                    let replica = part.replicas.contains(&ctx.broker) || part.leader == ctx.broker;
                    let epoch_error = if replica {
                        check_leader_epoch(fp.current_leader_epoch, part.leader_epoch)
                    } else {
                        ErrorCode::None
                    };
                    let error = match epoch_error {
                        ErrorCode::None if part.leader != ctx.broker => ErrorCode::NotLeaderOrFollower,
                        code => code,
                    };
                    if error != ErrorCode::None {
                        status.error = true;
                        let mut out = error_partition(fp.partition, error);
                        if ctx.version >= 16
                            && matches!(error, ErrorCode::NotLeaderOrFollower | ErrorCode::FencedLeaderEpoch)
                        {
                            out = out.with_current_leader(
                                LeaderIdAndEpoch::default()
                                    .with_leader_id(part.leader)
                                    .with_leader_epoch(part.leader_epoch),
                            );
                            if let Some(b) = state.brokers.get(&part.leader).filter(|b| b.up) {
                                if !endpoints.iter().any(|e| e.node_id == part.leader) {
                                    endpoints.push(
                                        NodeEndpoint::default()
                                            .with_node_id(part.leader)
                                            .with_host("127.0.0.1".into())
                                            .with_port(i32::from(b.port)),
                                    );
                                }
                            }
                        }
                        return out;
                    }
                    let log = &part.log;
                    let out = PartitionData::default()
                        .with_partition_index(fp.partition)
                        .with_high_watermark(log.high_watermark())
                        .with_last_stable_offset(log.last_stable_offset())
                        .with_log_start_offset(log.log_start_offset());
                    let out_of_range = |out: PartitionData| {
                        out.with_error_code(ErrorCode::OffsetOutOfRange.code()).with_records(Some(Bytes::new()))
                    };
                    if ctx.version >= 12 && fp.last_fetched_epoch >= 0 {
                        // Kafka's check of the client's log against its own: where does
                        // the epoch of the client's last batch end here?
                        let Some((epoch, end_offset)) = log.end_offset_for_epoch(fp.last_fetched_epoch) else {
                            status.error = true;
                            return out_of_range(out);
                        };
                        if fp.fetch_offset < log.log_start_offset() {
                            status.error = true;
                            return out_of_range(out);
                        }
                        if epoch < fp.last_fetched_epoch || end_offset < fp.fetch_offset {
                            // Answered at once, as Kafka answers a divergence.
                            status.error = true;
                            return out
                                .with_diverging_epoch(
                                    EpochEndOffset::default().with_epoch(epoch).with_end_offset(end_offset),
                                )
                                .with_records(Some(Bytes::new()));
                        }
                    }
                    if fp.fetch_offset < log.log_start_offset() || fp.fetch_offset > log.high_watermark() {
                        status.error = true;
                        return out_of_range(out);
                    }
                    let limit = usize::try_from(fp.partition_max_bytes.max(0)).unwrap_or(0).min(remaining);
                    let read = log.read(fp.fetch_offset, limit, isolation, min_one);
                    if !read.records.is_empty() {
                        min_one = false;
                    }
                    remaining = remaining.saturating_sub(read.records.len());
                    status.bytes += read.records.len();
                    let aborted = (isolation == Isolation::ReadCommitted).then(|| {
                        read.aborted
                            .iter()
                            .map(|a| {
                                AbortedTransaction::default()
                                    .with_producer_id(a.producer_id)
                                    .with_first_offset(a.first_offset)
                            })
                            .collect()
                    });
                    out.with_aborted_transactions(aborted).with_records(Some(read.records))
                })
                .collect();
            let topic = FetchableTopicResponse::default().with_partitions(partitions);
            if by_id { topic.with_topic_id(t.topic_id) } else { topic.with_topic(t.topic.clone()) }
        })
        .collect();
    let mut resp = FetchResponse::default().with_responses(responses);
    if ctx.version >= 16 {
        resp = resp.with_node_endpoints(endpoints);
    }
    (resp, status)
}
