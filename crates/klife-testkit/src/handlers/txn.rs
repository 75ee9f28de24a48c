//! Producer ids and transactions: InitProducerId, AddPartitionsToTxn, AddOffsetsToTxn,
//! EndTxn (which writes the markers) and TxnOffsetCommit; and the coordinator's periodic
//! abort of transactions open past their timeout.

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

/// The transaction coordinator's periodic task, when it is due at `now_ms`: aborts the
/// transactions open past their timeout and fences their producers, writing the abort
/// markers. Returns whether it aborted any (and so moved last stable offsets).
pub(crate) fn abort_timed_out_transactions(state: &mut State, now_ms: i64) -> bool {
    let aborted = state.txns.tick(now_ms);
    for (transactional_id, ended) in &aborted {
        tracing::debug!(
            transactional_id = %transactional_id,
            producer_id = ended.producer_id,
            epoch = ended.epoch,
            "transaction timed out: aborted, producer fenced"
        );
        apply_ended(state, ended, now_ms);
    }
    !aborted.is_empty()
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
        // Kafka's verification checks the producer against the transactional id first.
        if let Err(code) = state.txns.check_producer(tid, producer_id, epoch) {
            return results(&|_, _| code);
        }
        let txns = &state.txns;
        return results(&|t, p| match txns.check_produce(producer_id, epoch, t, p) {
            Ok(()) => ErrorCode::None,
            Err(code) => code,
        });
    }
    match state.txns.add_partitions(tid, producer_id, epoch, all, ctx.now_ms) {
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
        let added =
            state.txns.add_offsets(&r.transactional_id, r.producer_id, r.producer_epoch, &r.group_id, ctx.now_ms);
        code = match added {
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

/// TxnOffsetCommit. Kafka's group coordinator first has the transaction coordinator
/// verify the producer (as a partition leader verifies a Produce), then checks the
/// member; a fenced epoch comes back from that verification as INVALID_PRODUCER_EPOCH,
/// at every version (Kafka's `AddPartitionsToTxnManager`; its log's producer state would
/// answer the same).
pub(crate) fn txn_offset_commit(state: &mut State, ctx: &Ctx, r: TxnOffsetCommitRequest) -> TxnOffsetCommitResponse {
    let verified = |code: ErrorCode| match code {
        ErrorCode::ProducerFenced => ErrorCode::InvalidProducerEpoch,
        code => code,
    };
    let mut code = coordinator_error(state, &r.group_id, ctx.broker);
    if code == ErrorCode::None {
        if let Err(c) = state.txns.check_producer(&r.transactional_id, r.producer_id, r.producer_epoch) {
            code = verified(c);
        }
    }
    if code == ErrorCode::None && ctx.version >= 3 {
        state.coordinator.tick(ctx.now_ms);
        let partitions =
            r.topics.iter().flat_map(|t| t.partitions.iter().map(|p| (t.name.as_str(), p.partition_index)));
        code = super::groups::check_txn_commit(
            state,
            &r.group_id,
            r.generation_id,
            &r.member_id,
            r.group_instance_id.as_deref(),
            partitions,
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
            Err(code) => verified(code),
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;

    use klife_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTransaction;
    use klife_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
    use klife_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use klife_protocol::messages::txn_offset_commit_request::{
        TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
    };
    use klife_protocol::messages::{OffsetFetchRequest, ProduceRequest};
    use klife_protocol::records::{BatchOptions, RecordBatchWriter};
    use klife_protocol::{AnyResponse, ErrorCode};

    use super::super::groups::offset_fetch;
    use super::super::produce::produce;
    use super::super::{Ctx, Reply};
    use super::*;
    use crate::records::{TxnStatus, decode_log};
    use crate::txn::Transactions;

    const TID: &str = "app";

    /// One broker, topic `t` with two partitions, transactions looked at every second
    /// from time 0.
    fn state() -> State {
        let mut s = State::for_tests(1);
        s.create_topic("t", vec![vec![0]; 2], 1, BTreeMap::new());
        s.txns = Transactions::new(1_000, 0);
        s
    }

    fn ctx(version: i16, now_ms: i64) -> Ctx {
        Ctx { broker: 0, version, now_ms, client_id: "app".into(), client_host: "/127.0.0.1".into() }
    }

    fn init(s: &mut State, now_ms: i64) -> (i64, i16) {
        let r =
            InitProducerIdRequest::default().with_transactional_id(Some(TID.into())).with_transaction_timeout_ms(5_000);
        let resp = init_producer_id(s, &ctx(4, now_ms), r);
        assert_eq!(resp.error_code, 0);
        (resp.producer_id, resp.producer_epoch)
    }

    fn add_partition(s: &mut State, (pid, epoch): (i64, i16), partition: i32, version: i16, now_ms: i64) -> ErrorCode {
        let r = AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(TID.into())
            .with_v3_and_below_producer_id(pid)
            .with_v3_and_below_producer_epoch(epoch)
            .with_v3_and_below_topics(vec![
                AddPartitionsToTxnTopic::default().with_name("t".into()).with_partitions(vec![partition]),
            ]);
        let resp = add_partitions_to_txn(s, &ctx(version, now_ms), r);
        ErrorCode::from_code(resp.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code)
    }

    /// AddPartitionsToTxn v4 `verify_only`, as a partition leader asks before a Produce.
    fn verify(s: &mut State, (pid, epoch): (i64, i16), partition: i32) -> ErrorCode {
        let r = AddPartitionsToTxnRequest::default().with_transactions(vec![
            AddPartitionsToTxnTransaction::default()
                .with_transactional_id(TID.into())
                .with_producer_id(pid)
                .with_producer_epoch(epoch)
                .with_verify_only(true)
                .with_topics(vec![
                    AddPartitionsToTxnTopic::default().with_name("t".into()).with_partitions(vec![partition]),
                ]),
        ]);
        let resp = add_partitions_to_txn(s, &ctx(4, 0), r);
        ErrorCode::from_code(
            resp.results_by_transaction[0].topic_results[0].results_by_partition[0].partition_error_code,
        )
    }

    fn add_offsets(s: &mut State, (pid, epoch): (i64, i16), version: i16, now_ms: i64) -> ErrorCode {
        let r = AddOffsetsToTxnRequest::default()
            .with_transactional_id(TID.into())
            .with_producer_id(pid)
            .with_producer_epoch(epoch)
            .with_group_id("g".into());
        ErrorCode::from_code(add_offsets_to_txn(s, &ctx(version, now_ms), r).error_code)
    }

    fn commit_offset(s: &mut State, (pid, epoch): (i64, i16), offset: i64, version: i16, now_ms: i64) -> ErrorCode {
        let r = TxnOffsetCommitRequest::default()
            .with_transactional_id(TID.into())
            .with_group_id("g".into())
            .with_producer_id(pid)
            .with_producer_epoch(epoch)
            .with_generation_id(-1)
            .with_topics(vec![TxnOffsetCommitRequestTopic::default().with_name("t".into()).with_partitions(vec![
                TxnOffsetCommitRequestPartition::default().with_partition_index(0).with_committed_offset(offset),
            ])]);
        ErrorCode::from_code(txn_offset_commit(s, &ctx(version, now_ms), r).topics[0].partitions[0].error_code)
    }

    fn end(s: &mut State, (pid, epoch): (i64, i16), commit: bool, version: i16, now_ms: i64) -> EndTxnResponse {
        let r = EndTxnRequest::default()
            .with_transactional_id(TID.into())
            .with_producer_id(pid)
            .with_producer_epoch(epoch)
            .with_committed(commit);
        end_txn(s, &ctx(version, now_ms), r)
    }

    fn produce_one(s: &mut State, (pid, epoch): (i64, i16), partition: i32, seq: i32, value: &str) -> ErrorCode {
        let options = BatchOptions {
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            transactional: true,
            ..BatchOptions::default()
        };
        let mut w = RecordBatchWriter::new(options);
        w.append(1_700_000_000_000, None, Some(value.as_bytes())).unwrap();
        let r = ProduceRequest::default().with_transactional_id(Some(TID.into())).with_acks(-1).with_topic_data(vec![
            TopicProduceData::default().with_name("t".into()).with_partition_data(vec![
                PartitionProduceData::default().with_index(partition).with_records(Some(w.finish().unwrap())),
            ]),
        ]);
        let Reply::Respond(AnyResponse::Produce(resp)) = produce(s, &ctx(9, 0), r) else { panic!("no produce answer") };
        ErrorCode::from_code(resp.responses[0].partition_responses[0].error_code)
    }

    /// The group's offset of t-0 as OffsetFetch v7 with `require_stable` answers it.
    fn stable_offset(s: &mut State) -> (i64, ErrorCode) {
        let r =
            OffsetFetchRequest::default().with_group_id("g".into()).with_require_stable(true).with_topics(Some(vec![
                OffsetFetchRequestTopic::default().with_name("t".into()).with_partition_indexes(vec![0]),
            ]));
        let p = offset_fetch(s, &ctx(7, 0), r).topics[0].partitions[0].clone();
        (p.committed_offset, ErrorCode::from_code(p.error_code))
    }

    fn statuses(s: &State, partition: i32) -> Vec<(String, TxnStatus)> {
        let mut out = Vec::new();
        decode_log("t", partition, &s.partition("t", partition).unwrap().log, |r| {
            if !r.is_control {
                out.push((r.value_str(), r.status));
            }
        });
        out
    }

    fn lso(s: &State, partition: i32) -> i64 {
        s.partition("t", partition).unwrap().log.last_stable_offset()
    }

    #[test]
    fn a_transaction_past_its_timeout_is_aborted_at_the_next_look_and_its_producer_fenced() {
        let mut s = state();
        let zombie = init(&mut s, 0);
        // The clock starts with the first partition, at 2 s, not at InitProducerId.
        assert!(!abort_timed_out_transactions(&mut s, 1_500), "nothing open yet");
        assert_eq!(add_partition(&mut s, zombie, 0, 3, 2_000), ErrorCode::None);
        assert_eq!(produce_one(&mut s, zombie, 0, 0, "lost"), ErrorCode::None);
        assert_eq!(verify(&mut s, zombie, 0), ErrorCode::None);
        assert_eq!(add_offsets(&mut s, zombie, 3, 2_500), ErrorCode::None);
        assert_eq!(commit_offset(&mut s, zombie, 7, 3, 2_500), ErrorCode::None);
        assert_eq!(lso(&s, 0), 0);
        assert_eq!(stable_offset(&mut s), (-1, ErrorCode::UnstableOffsetCommit));

        // 2 s + 5 s is not yet past at 7 s; the look at 8 s aborts it.
        assert!(!abort_timed_out_transactions(&mut s, 7_000));
        assert!(!abort_timed_out_transactions(&mut s, 7_999), "not due before 8 s");
        assert_eq!(statuses(&s, 0), [("lost".into(), TxnStatus::Ongoing)]);
        assert!(abort_timed_out_transactions(&mut s, 8_000));
        assert!(!abort_timed_out_transactions(&mut s, 9_000), "aborted once");

        // An abort marker with the bumped epoch; read_committed readers see nothing of it.
        let log = &s.partition("t", 0).unwrap().log;
        let marker = log.batches().last().unwrap().header;
        assert!(marker.is_control() && marker.is_transactional());
        assert_eq!((marker.producer_id, marker.producer_epoch), (zombie.0, zombie.1 + 1));
        assert_eq!(statuses(&s, 0), [("lost".into(), TxnStatus::Aborted)]);
        assert_eq!((lso(&s, 0), log.high_watermark()), (2, 2));
        assert_eq!(lso(&s, 1), 0, "never added, no marker");
        // The pending offset is gone, not applied.
        assert_eq!(stable_offset(&mut s), (-1, ErrorCode::None));
        assert!(!s.groups.get("g").is_some_and(|g| g.contains_key(&("t".to_owned(), 0))));
        assert_eq!(s.txns.producers()[TID], (zombie.0, zombie.1 + 1));

        // The zombie is fenced, with each API's error for an old epoch at each version.
        assert_eq!(produce_one(&mut s, zombie, 0, 1, "late"), ErrorCode::InvalidProducerEpoch);
        assert_eq!(verify(&mut s, zombie, 0), ErrorCode::ProducerFenced, "the leader answers INVALID_PRODUCER_EPOCH");
        assert_eq!(add_partition(&mut s, zombie, 0, 3, 9_000), ErrorCode::ProducerFenced);
        assert_eq!(add_partition(&mut s, zombie, 0, 1, 9_000), ErrorCode::InvalidProducerEpoch);
        assert_eq!(add_offsets(&mut s, zombie, 3, 9_000), ErrorCode::ProducerFenced);
        assert_eq!(add_offsets(&mut s, zombie, 1, 9_000), ErrorCode::InvalidProducerEpoch);
        for version in [0, 2, 3, 4] {
            assert_eq!(commit_offset(&mut s, zombie, 8, version, 9_000), ErrorCode::InvalidProducerEpoch);
        }
        assert_eq!(end(&mut s, zombie, true, 3, 9_000).error_code, ErrorCode::ProducerFenced.code());
        assert_eq!(end(&mut s, zombie, false, 1, 9_000).error_code, ErrorCode::InvalidProducerEpoch.code());
        // EndTxn v5+ (KIP-890) takes the old epoch's abort for a retry of the one that
        // bumped it, as Kafka does, and refuses its commit.
        let resp = end(&mut s, zombie, true, 5, 9_000);
        assert_eq!((resp.error_code, resp.producer_epoch), (ErrorCode::InvalidTxnState.code(), -1));
        let resp = end(&mut s, zombie, false, 5, 9_000);
        assert_eq!((resp.error_code, resp.producer_id, resp.producer_epoch), (0, zombie.0, zombie.1 + 1));
        assert_eq!(s.partition("t", 0).unwrap().log.batches().len(), 2, "no second marker");

        // A new producer for the id takes the next epoch and runs a transaction.
        let next = init(&mut s, 9_000);
        assert_eq!(next, (zombie.0, zombie.1 + 2));
        assert_eq!(add_partition(&mut s, next, 0, 3, 9_000), ErrorCode::None);
        assert_eq!(produce_one(&mut s, next, 0, 0, "kept"), ErrorCode::None);
        assert_eq!(end(&mut s, next, true, 3, 9_500).error_code, 0);
        assert_eq!(statuses(&s, 0), [("lost".into(), TxnStatus::Aborted), ("kept".into(), TxnStatus::Committed)]);
    }

    #[test]
    fn a_transaction_within_its_timeout_is_left_alone() {
        let mut s = state();
        let producer = init(&mut s, 0);
        // Opened by AddOffsetsToTxn at 4 s: open until 9 s, whatever InitProducerId's time.
        assert_eq!(add_offsets(&mut s, producer, 3, 4_000), ErrorCode::None);
        assert_eq!(commit_offset(&mut s, producer, 7, 3, 4_000), ErrorCode::None);
        assert_eq!(add_partition(&mut s, producer, 1, 3, 8_500), ErrorCode::None);
        assert_eq!(produce_one(&mut s, producer, 1, 0, "slow"), ErrorCode::None);
        for now in [5_000, 6_000, 9_000] {
            assert!(!abort_timed_out_transactions(&mut s, now));
        }
        assert_eq!(stable_offset(&mut s).1, ErrorCode::UnstableOffsetCommit);
        assert_eq!(end(&mut s, producer, true, 3, 9_000).error_code, 0);
        assert_eq!(stable_offset(&mut s), (7, ErrorCode::None));
        assert_eq!(statuses(&s, 1), [("slow".into(), TxnStatus::Committed)]);
        // Ended, it is not aborted later.
        assert!(!abort_timed_out_transactions(&mut s, 60_000));
        assert_eq!(s.txns.producers()[TID], producer);
    }
}
