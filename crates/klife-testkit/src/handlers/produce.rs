//! Produce: validation as Kafka's log validator does it, then the append.

use bytes::Bytes;
use klife_protocol::messages::ProduceRequest;
use klife_protocol::messages::ProduceResponse;
use klife_protocol::messages::produce_response::{
    LeaderIdAndEpoch, NodeEndpoint, PartitionProduceResponse, TopicProduceResponse,
};
use klife_protocol::records::{BatchHeader, RawBatch};
use klife_protocol::{AnyRequest, DecodeError, ErrorCode};

use super::{Ctx, Reply};
use crate::log::AppendError;
use crate::state::State;

/// Checks one partition's `records` and splits off its only batch.
fn validate(records: Option<Bytes>, max_message_bytes: usize) -> Result<RawBatch, AppendError> {
    let Some(mut records) = records else {
        return Err(AppendError::new(ErrorCode::InvalidRecord, "records are null"));
    };
    let batch = RawBatch::split_from(&mut records).map_err(|e| match e {
        DecodeError::UnsupportedMagic(m) => {
            AppendError::new(ErrorCode::InvalidRecord, format!("record batch magic {m}: Produce v3+ needs magic 2"))
        }
        e => AppendError::new(ErrorCode::CorruptMessage, format!("cannot read the record batch: {e}")),
    })?;
    if !records.is_empty() {
        return Err(AppendError::new(
            ErrorCode::InvalidRecord,
            "Produce requests with version 3 and above must contain exactly one record batch per partition",
        ));
    }
    if batch.as_bytes().len() > max_message_bytes {
        return Err(AppendError::new(
            ErrorCode::MessageTooLarge,
            format!("the batch of {} bytes exceeds max.message.bytes {max_message_bytes}", batch.as_bytes().len()),
        ));
    }
    batch
        .verify_crc()
        .map_err(|e| AppendError::new(ErrorCode::CorruptMessage, format!("record batch CRC check failed: {e}")))?;
    let h = batch.header();
    if h.base_offset != 0 {
        return Err(AppendError::new(
            ErrorCode::InvalidRecord,
            format!("the base offset of the record batch should be 0, but it is {}", h.base_offset),
        ));
    }
    if h.is_control() {
        return Err(AppendError::new(ErrorCode::InvalidRecord, "clients may not write control batches"));
    }
    let decoded = batch
        .decode()
        .map_err(|e| AppendError::new(ErrorCode::CorruptMessage, format!("cannot decode the records: {e}")))?;
    let count = decoded.len();
    if count == 0 || i64::try_from(count).ok() != Some(i64::from(h.last_offset_delta) + 1) {
        return Err(AppendError::new(
            ErrorCode::InvalidRecord,
            format!("{count} records but a last offset delta of {}", h.last_offset_delta),
        ));
    }
    if decoded.iter().enumerate().any(|(i, r)| usize::try_from(r.offset_delta()).ok() != Some(i)) {
        return Err(AppendError::new(ErrorCode::InvalidRecord, "record offset deltas are not 0, 1, 2, ..."));
    }
    Ok(batch)
}

fn append(
    state: &mut State,
    ctx: &Ctx,
    topic: &str,
    partition: i32,
    records: Option<Bytes>,
) -> Result<(i64, i64), AppendError> {
    let (max_message_bytes, leader, leader_epoch) = {
        let t = state.topics.get(topic).ok_or_else(|| {
            AppendError::new(ErrorCode::UnknownTopicOrPartition, "this server does not host this topic-partition")
        })?;
        let p = t.partitions.get(usize::try_from(partition).unwrap_or(usize::MAX)).ok_or_else(|| {
            AppendError::new(ErrorCode::UnknownTopicOrPartition, "this server does not host this topic-partition")
        })?;
        (t.max_message_bytes, p.leader, p.leader_epoch)
    };
    if leader != ctx.broker {
        return Err(AppendError::new(
            ErrorCode::NotLeaderOrFollower,
            format!("broker {} is not the leader", ctx.broker),
        ));
    }
    let batch = validate(records, max_message_bytes)?;
    let h = *batch.header();
    if h.producer_id >= 0 && !state.issued_producer_id(h.producer_id) {
        return Err(AppendError::new(
            ErrorCode::UnknownProducerId,
            format!("producer id {} was never issued by this cluster", h.producer_id),
        ));
    }
    if h.is_transactional() {
        state.txns.check_produce(h.producer_id, h.producer_epoch, topic, partition).map_err(|code| {
            AppendError::new(
                code,
                format!("{topic}-{partition} is not part of producer {}'s open transaction", h.producer_id),
            )
        })?;
    }
    let p = state
        .partition_mut(topic, partition)
        .ok_or_else(|| AppendError::new(ErrorCode::UnknownTopicOrPartition, "the partition is gone"))?;
    let base = p.log.append(&batch, leader_epoch)?;
    Ok((base, p.log.log_start_offset()))
}

/// Whether any partition of the request holds a transactional batch.
fn has_transactional_records(r: &ProduceRequest) -> bool {
    r.topic_data
        .iter()
        .flat_map(|t| t.partition_data.iter())
        .any(|p| p.records.as_deref().is_some_and(|b| BatchHeader::parse(b).is_ok_and(|h| h.is_transactional())))
}

pub(crate) fn produce(state: &mut State, ctx: &Ctx, r: ProduceRequest) -> Reply {
    // Kafka refuses the whole request, before looking at any partition, when it holds
    // transactional records but names no transactional id.
    if r.transactional_id.is_none() && has_transactional_records(&r) {
        tracing::debug!("transactional records in a Produce request without a transactional id");
        return super::error_response(
            state,
            ctx,
            &AnyRequest::Produce(r),
            ErrorCode::TransactionalIdAuthorizationFailed,
        );
    }
    let acks_valid = matches!(r.acks, -1..=1);
    let mut any_error = false;
    let mut endpoints = Vec::new();
    let responses: Vec<TopicProduceResponse> = r
        .topic_data
        .into_iter()
        .map(|t| {
            let partitions = t
                .partition_data
                .into_iter()
                .map(|p| {
                    let mut out = PartitionProduceResponse::default().with_index(p.index);
                    let result = if acks_valid {
                        append(state, ctx, &t.name, p.index, p.records)
                    } else {
                        Err(AppendError::new(ErrorCode::InvalidRequiredAcks, format!("acks {} is not -1, 0 or 1", r.acks)))
                    };
                    match result {
                        Ok((base, log_start)) => {
                            out = out.with_base_offset(base);
                            if ctx.version >= 5 {
                                out = out.with_log_start_offset(log_start);
                            }
                        }
                        Err(e) => {
                            any_error = true;
                            tracing::debug!(topic = t.name, partition = p.index, code = %e.code, message = e.message, "produce refused");
                            out = out.with_error_code(e.code.code()).with_base_offset(-1);
                            if ctx.version >= 8 {
                                out = out.with_error_message(Some(e.message));
                            }
                            if e.code == ErrorCode::NotLeaderOrFollower && ctx.version >= 10 {
                                if let Some(part) = state.partition(&t.name, p.index) {
                                    out = out.with_current_leader(
                                        LeaderIdAndEpoch::default()
                                            .with_leader_id(part.leader)
                                            .with_leader_epoch(part.leader_epoch),
                                    );
                                    if let Some(b) = state.brokers.get(&part.leader).filter(|b| b.up) {
                                        if !endpoints.iter().any(|e: &NodeEndpoint| e.node_id == part.leader) {
                                            endpoints.push(
                                                NodeEndpoint::default()
                                                    .with_node_id(part.leader)
                                                    .with_host("127.0.0.1".into())
                                                    .with_port(i32::from(b.port)),
                                            );
                                        }
                                    }
                                }
                            }
                        }
                    }
                    out
                })
                .collect();
            TopicProduceResponse::default().with_name(t.name).with_partition_responses(partitions)
        })
        .collect();
    if r.acks == 0 {
        // With acks = 0 there is no answer; Kafka closes the connection on an error so
        // that the client notices something.
        return if any_error { Reply::Close("a Produce request with acks = 0 failed") } else { Reply::Nothing };
    }
    let mut resp = ProduceResponse::default().with_responses(responses);
    if ctx.version >= 10 {
        resp = resp.with_node_endpoints(endpoints);
    }
    resp.into()
}
