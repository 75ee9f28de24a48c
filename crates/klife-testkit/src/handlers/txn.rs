//! Producer ids and transactions: InitProducerId, AddPartitionsToTxn, AddOffsetsToTxn,
//! EndTxn (which writes the markers) and TxnOffsetCommit.

use klife_protocol::ErrorCode;
use klife_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use klife_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnResult, AddPartitionsToTxnTopicResult,
};
use klife_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use klife_protocol::messages::{
    AddOffsetsToTxnRequest, AddOffsetsToTxnResponse, AddPartitionsToTxnRequest, AddPartitionsToTxnResponse,
    EndTxnRequest, EndTxnResponse, InitProducerIdRequest, InitProducerIdResponse, TxnOffsetCommitRequest,
    TxnOffsetCommitResponse,
};

use super::Ctx;
use super::groups::coordinator_error;
use crate::state::{Committed, State};
use crate::txn::{Ended, PendingOffset};

/// PRODUCER_FENCED appeared with KIP-588; older versions of each API get
/// INVALID_PRODUCER_EPOCH instead.
fn fenced(code: ErrorCode, version: i16, first_version_with_fenced: i16) -> ErrorCode {
    if code == ErrorCode::ProducerFenced && version < first_version_with_fenced {
        ErrorCode::InvalidProducerEpoch
    } else {
        code
    }
}

/// Writes the markers of a transaction that ended and applies its offsets.
pub(crate) fn apply_ended(state: &mut State, ended: &Ended, now_ms: i64) {
    for (topic, partition) in &ended.partitions {
        if let Some(p) = state.partition_mut(topic, *partition) {
            let epoch = p.leader_epoch;
            p.log.append_marker(ended.producer_id, ended.epoch, ended.commit, epoch, now_ms);
        }
    }
    for o in &ended.offsets {
        state.commit_offset(
            &o.group,
            &o.topic,
            o.partition,
            Committed { offset: o.offset, leader_epoch: o.leader_epoch, metadata: o.metadata.clone() },
        );
    }
    tracing::debug!(
        producer_id = ended.producer_id,
        commit = ended.commit,
        partitions = ended.partitions.len(),
        "transaction ended"
    );
}

pub(crate) fn init_producer_id(state: &mut State, ctx: &Ctx, r: InitProducerIdRequest) -> InitProducerIdResponse {
    let failed = |code: ErrorCode| {
        InitProducerIdResponse::default().with_error_code(code.code()).with_producer_id(-1).with_producer_epoch(-1)
    };
    let Some(tid) = r.transactional_id.filter(|t| !t.is_empty()) else {
        let id = state.allocate_producer_id();
        return InitProducerIdResponse::default().with_producer_id(id).with_producer_epoch(0);
    };
    let code = coordinator_error(state, &tid, ctx.broker);
    if code != ErrorCode::None {
        return failed(code);
    }
    let mut next = state.next_producer_id;
    let result = state.txns.init(&tid, r.transaction_timeout_ms, (r.producer_id, r.producer_epoch), &mut || {
        next += 1;
        next - 1
    });
    state.next_producer_id = next;
    match result {
        Ok((id, epoch, aborted)) => {
            if let Some(ended) = aborted {
                apply_ended(state, &ended, ctx.now_ms);
            }
            InitProducerIdResponse::default().with_producer_id(id).with_producer_epoch(epoch)
        }
        Err(code) => failed(fenced(code, ctx.version, 4)),
    }
}

/// Adds partitions of one transaction; returns per-topic results.
fn add_partitions(
    state: &mut State,
    ctx: &Ctx,
    tid: &str,
    producer_id: i64,
    epoch: i16,
    topics: Vec<AddPartitionsToTxnTopic>,
    verify_only: bool,
) -> Vec<AddPartitionsToTxnTopicResult> {
    let all: Vec<(String, i32)> =
        topics.iter().flat_map(|t| t.partitions.iter().map(|p| (t.name.clone(), *p))).collect();
    let results = |f: &dyn Fn(&str, i32) -> ErrorCode| -> Vec<AddPartitionsToTxnTopicResult> {
        topics
            .iter()
            .map(|t| {
                let partitions = t
                    .partitions
                    .iter()
                    .map(|p| {
                        AddPartitionsToTxnPartitionResult::default()
                            .with_partition_index(*p)
                            .with_partition_error_code(f(&t.name, *p).code())
                    })
                    .collect();
                AddPartitionsToTxnTopicResult::default().with_name(t.name.clone()).with_results_by_partition(partitions)
            })
            .collect()
    };
    let code = coordinator_error(state, tid, ctx.broker);
    if code != ErrorCode::None {
        return results(&|_, _| code);
    }
    let unknown: Vec<(String, i32)> = all.iter().filter(|(t, p)| state.partition(t, *p).is_none()).cloned().collect();
    if !unknown.is_empty() {
        return results(&|t, p| {
            if unknown.iter().any(|(ut, up)| ut == t && *up == p) {
                ErrorCode::UnknownTopicOrPartition
            } else {
                ErrorCode::OperationNotAttempted
            }
        });
    }
    if verify_only {
        let txns = &state.txns;
        return results(&|t, p| match txns.check_produce(producer_id, epoch, t, p) {
            Ok(()) => ErrorCode::None,
            Err(code) => code,
        });
    }
    match state.txns.add_partitions(tid, producer_id, epoch, all) {
        Ok(()) => results(&|_, _| ErrorCode::None),
        Err(code) => {
            let code = fenced(code, ctx.version, 2);
            results(&|_, _| code)
        }
    }
}

pub(crate) fn add_partitions_to_txn(
    state: &mut State,
    ctx: &Ctx,
    r: AddPartitionsToTxnRequest,
) -> AddPartitionsToTxnResponse {
    if ctx.version <= 3 {
        let results = add_partitions(
            state,
            ctx,
            &r.v3_and_below_transactional_id,
            r.v3_and_below_producer_id,
            r.v3_and_below_producer_epoch,
            r.v3_and_below_topics,
            false,
        );
        return AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(results);
    }
    let results = r
        .transactions
        .into_iter()
        .map(|t| {
            let topic_results = add_partitions(
                state,
                ctx,
                &t.transactional_id,
                t.producer_id,
                t.producer_epoch,
                t.topics,
                t.verify_only,
            );
            AddPartitionsToTxnResult::default()
                .with_transactional_id(t.transactional_id)
                .with_topic_results(topic_results)
        })
        .collect();
    AddPartitionsToTxnResponse::default().with_results_by_transaction(results)
}

pub(crate) fn add_offsets_to_txn(state: &mut State, ctx: &Ctx, r: AddOffsetsToTxnRequest) -> AddOffsetsToTxnResponse {
    let mut code = coordinator_error(state, &r.transactional_id, ctx.broker);
    if code == ErrorCode::None {
        code = match state.txns.add_offsets(&r.transactional_id, r.producer_id, r.producer_epoch, &r.group_id) {
            Ok(()) => ErrorCode::None,
            Err(code) => fenced(code, ctx.version, 2),
        };
    }
    AddOffsetsToTxnResponse::default().with_error_code(code.code())
}

/// EndTxn. v5+ is transaction version 2 (KIP-890), whatever the cluster's finalized
/// level, as in Kafka: the transaction ends with a new producer epoch, which the answer
/// carries (-1 on an error).
pub(crate) fn end_txn(state: &mut State, ctx: &Ctx, r: EndTxnRequest) -> EndTxnResponse {
    let mut code = coordinator_error(state, &r.transactional_id, ctx.broker);
    if code == ErrorCode::None {
        let bump_epoch = ctx.version >= 5;
        let mut next = state.next_producer_id;
        let result =
            state.txns.end(&r.transactional_id, r.producer_id, r.producer_epoch, r.committed, bump_epoch, &mut || {
                next += 1;
                next - 1
            });
        state.next_producer_id = next;
        code = match result {
            Ok(ended) => {
                if let Some(ended) = ended {
                    apply_ended(state, &ended, ctx.now_ms);
                }
                ErrorCode::None
            }
            Err(code) => fenced(code, ctx.version, 2),
        };
    }
    let mut resp = EndTxnResponse::default().with_error_code(code.code());
    if ctx.version >= 5 && code == ErrorCode::None {
        let (id, epoch) = state.txns.producers().get(&r.transactional_id).copied().unwrap_or((-1, -1));
        resp = resp.with_producer_id(id).with_producer_epoch(epoch);
    }
    resp
}

pub(crate) fn txn_offset_commit(state: &mut State, ctx: &Ctx, r: TxnOffsetCommitRequest) -> TxnOffsetCommitResponse {
    let mut code = coordinator_error(state, &r.group_id, ctx.broker);
    if code == ErrorCode::None && ctx.version >= 3 {
        state.coordinator.tick(ctx.now_ms);
        code = super::groups::check_txn_commit(
            state,
            &r.group_id,
            r.generation_id,
            &r.member_id,
            r.group_instance_id.as_deref(),
        );
    }
    let unknown = r
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |p| (t.name.as_str(), p.partition_index)))
        .any(|(t, p)| state.partition(t, p).is_none());
    if code == ErrorCode::None && !unknown {
        let offsets = r
            .topics
            .iter()
            .flat_map(|t| {
                t.partitions.iter().map(|p| PendingOffset {
                    group: r.group_id.clone(),
                    topic: t.name.clone(),
                    partition: p.partition_index,
                    offset: p.committed_offset,
                    leader_epoch: p.committed_leader_epoch,
                    metadata: p.committed_metadata.clone(),
                })
            })
            .collect();
        code = match state.txns.commit_offsets(&r.transactional_id, r.producer_id, r.producer_epoch, offsets) {
            Ok(()) => ErrorCode::None,
            Err(code) => fenced(code, ctx.version, 3),
        };
    }
    let topics = r
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .iter()
                .map(|p| {
                    let c = if code == ErrorCode::None && unknown {
                        if state.partition(&t.name, p.partition_index).is_none() {
                            ErrorCode::UnknownTopicOrPartition
                        } else {
                            ErrorCode::OperationNotAttempted
                        }
                    } else {
                        code
                    };
                    TxnOffsetCommitResponsePartition::default()
                        .with_partition_index(p.partition_index)
                        .with_error_code(c.code())
                })
                .collect();
            TxnOffsetCommitResponseTopic::default().with_name(t.name).with_partitions(partitions)
        })
        .collect();
    TxnOffsetCommitResponse::default().with_topics(topics)
}
