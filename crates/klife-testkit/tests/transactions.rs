//! Transactions through raw frames: markers, the last stable offset, the aborted list of
//! read_committed fetches, transactional offsets, fencing, timeouts.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Raw, batch, batches, fetch_request, produce_request};
use klife_protocol::ErrorCode;
use klife_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use klife_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use klife_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use klife_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use klife_protocol::messages::{
    AddOffsetsToTxnRequest, AddPartitionsToTxnRequest, EndTxnRequest, FindCoordinatorRequest, InitProducerIdRequest,
    ListOffsetsRequest, OffsetFetchRequest, TxnOffsetCommitRequest,
};
use klife_protocol::records::{BatchOptions, ControlRecord};
use std::time::Duration;

use common::HANG_GUARD;
use klife_protocol::messages::FetchResponse;
use klife_testkit::{FakeCluster, TxnStatus};

const TID: &str = "app-txn";
const GROUP: &str = "app-group";

struct Txn {
    coordinator: Raw,
    group_coordinator: Raw,
    pid: i64,
    epoch: i16,
    seq: i32,
}

async fn connect_coordinator(cluster: &FakeCluster, key: &str, key_type: i8) -> Raw {
    let mut any = Raw::connect(&cluster.addresses()[0]).await;
    let found = any
        .send(&FindCoordinatorRequest::default().with_key_type(key_type).with_coordinator_keys(vec![key.into()]), 4)
        .await;
    let c = &found.coordinators[0];
    assert_eq!(c.error_code, 0);
    assert_eq!(Some(c.node_id), cluster.coordinator(key));
    Raw::connect(&format!("{}:{}", c.host, c.port)).await
}

impl Txn {
    async fn start(cluster: &FakeCluster) -> Txn {
        Txn::start_with_timeout(cluster, 60_000).await
    }

    async fn start_with_timeout(cluster: &FakeCluster, timeout_ms: i32) -> Txn {
        let mut coordinator = connect_coordinator(cluster, TID, 1).await;
        let group_coordinator = connect_coordinator(cluster, GROUP, 0).await;
        let init = coordinator
            .send(
                &InitProducerIdRequest::default()
                    .with_transactional_id(Some(TID.into()))
                    .with_transaction_timeout_ms(timeout_ms),
                4,
            )
            .await;
        assert_eq!(init.error_code, 0);
        Txn { coordinator, group_coordinator, pid: init.producer_id, epoch: init.producer_epoch, seq: 0 }
    }

    async fn add(&mut self, partitions: &[i32]) {
        let req = AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(TID.into())
            .with_v3_and_below_producer_id(self.pid)
            .with_v3_and_below_producer_epoch(self.epoch)
            .with_v3_and_below_topics(vec![
                AddPartitionsToTxnTopic::default().with_name("t".into()).with_partitions(partitions.to_vec()),
            ]);
        let resp = self.coordinator.send(&req, 3).await;
        for p in &resp.results_by_topic_v3_and_below[0].results_by_partition {
            assert_eq!(p.partition_error_code, 0);
        }
    }

    async fn produce(&mut self, cluster: &FakeCluster, partition: i32, values: &[&str]) -> i16 {
        let records = batch(
            values,
            BatchOptions {
                producer_id: self.pid,
                producer_epoch: self.epoch,
                base_sequence: self.seq,
                transactional: true,
                ..BatchOptions::default()
            },
        );
        let (leader, _) = cluster.leader("t", partition).unwrap();
        let mut c = Raw::connect(&cluster.broker_address(leader).unwrap()).await;
        let mut req = produce_request("t", partition, records, -1);
        req.transactional_id = Some(TID.into());
        let resp = c.send(&req, 9).await;
        let code = resp.responses[0].partition_responses[0].error_code;
        if code == 0 {
            self.seq += i32::try_from(values.len()).unwrap();
        }
        code
    }

    async fn commit_offset(&mut self, offset: i64) -> i16 {
        let add = self
            .coordinator
            .send(
                &AddOffsetsToTxnRequest::default()
                    .with_transactional_id(TID.into())
                    .with_producer_id(self.pid)
                    .with_producer_epoch(self.epoch)
                    .with_group_id(GROUP.into()),
                3,
            )
            .await;
        assert_eq!(add.error_code, 0);
        let resp = self
            .group_coordinator
            .send(
                &TxnOffsetCommitRequest::default()
                    .with_transactional_id(TID.into())
                    .with_group_id(GROUP.into())
                    .with_producer_id(self.pid)
                    .with_producer_epoch(self.epoch)
                    .with_topics(vec![TxnOffsetCommitRequestTopic::default().with_name("t".into()).with_partitions(
                        vec![
                            TxnOffsetCommitRequestPartition::default()
                                .with_partition_index(0)
                                .with_committed_offset(offset),
                        ],
                    )]),
                3,
            )
            .await;
        resp.topics[0].partitions[0].error_code
    }

    async fn end(&mut self, commit: bool) -> i16 {
        let req = EndTxnRequest::default()
            .with_transactional_id(TID.into())
            .with_producer_id(self.pid)
            .with_producer_epoch(self.epoch)
            .with_committed(commit);
        self.coordinator.send(&req, 3).await.error_code
    }
}

async fn committed_offset(c: &mut Raw) -> i64 {
    let req = OffsetFetchRequest::default().with_group_id(GROUP.into()).with_topics(Some(vec![
        OffsetFetchRequestTopic::default().with_name("t".into()).with_partition_indexes(vec![0]),
    ]));
    c.send(&req, 7).await.topics[0].partitions[0].committed_offset
}

/// The group's offset of t-0 and its error as OffsetFetch v7 with `require_stable`
/// answers them.
async fn stable_offset(c: &mut Raw) -> (i64, i16) {
    let req =
        OffsetFetchRequest::default().with_group_id(GROUP.into()).with_require_stable(true).with_topics(Some(vec![
            OffsetFetchRequestTopic::default().with_name("t".into()).with_partition_indexes(vec![0]),
        ]));
    let p = c.send(&req, 7).await.topics[0].partitions[0].clone();
    (p.committed_offset, p.error_code)
}

#[tokio::test]
async fn commits_and_aborts_write_markers_and_read_committed_hides_aborts() {
    let cluster = FakeCluster::builder().brokers(3).topic("t", 2).start().await.unwrap();
    let mut txn = Txn::start(&cluster).await;
    // Not added yet: refused.
    assert_eq!(txn.produce(&cluster, 0, &["early"]).await, ErrorCode::InvalidTxnState.code());

    txn.add(&[0, 1]).await;
    assert_eq!(txn.produce(&cluster, 0, &["c1", "c2"]).await, 0);
    assert_eq!(txn.commit_offset(10).await, 0);
    let (_, lso, hw) = cluster.offsets("t", 0).unwrap();
    assert_eq!((lso, hw), (0, 2), "an open transaction holds the LSO back");
    assert_eq!(txn.end(true).await, 0);
    assert_eq!(cluster.committed_offsets(GROUP).get(&("t".to_owned(), 0)), Some(&10));
    assert_eq!(committed_offset(&mut txn.group_coordinator).await, 10);

    txn.add(&[0]).await;
    assert_eq!(txn.produce(&cluster, 0, &["a1"]).await, 0);
    assert_eq!(txn.commit_offset(20).await, 0);
    assert_eq!(txn.end(false).await, 0);
    assert_eq!(committed_offset(&mut txn.group_coordinator).await, 10, "aborted offsets are dropped");

    // Partition 0: c1 c2 COMMIT a1 ABORT; partition 1: COMMIT only.
    let markers = cluster.markers("t", 0);
    assert_eq!(markers.iter().map(|m| (m.offset, m.commit)).collect::<Vec<_>>(), vec![(2, true), (4, false)]);
    assert_eq!(cluster.markers("t", 1).len(), 1);
    let statuses: Vec<_> = cluster.partition_records("t", 0).iter().map(|r| (r.value_str(), r.status)).collect();
    assert_eq!(
        statuses,
        vec![
            ("c1".into(), TxnStatus::Committed),
            ("c2".into(), TxnStatus::Committed),
            ("a1".into(), TxnStatus::Aborted)
        ]
    );

    let (leader, _) = cluster.leader("t", 0).unwrap();
    let mut c = Raw::connect(&cluster.broker_address(leader).unwrap()).await;
    let resp = c.send(&fetch_request("t", 0, 0, 1), 12).await;
    let p = &resp.responses[0].partitions[0];
    assert_eq!((p.high_watermark, p.last_stable_offset), (5, 5));
    let aborted = p.aborted_transactions.clone().unwrap();
    assert_eq!(aborted.len(), 1);
    assert_eq!((aborted[0].producer_id, aborted[0].first_offset), (txn.pid, 3));
    let got = batches(p.records.clone());
    assert_eq!(got.len(), 4);
    assert!(matches!(got[1].control_record(), Some(Ok(ControlRecord::Commit(_)))));
    assert!(matches!(got[3].control_record(), Some(Ok(ControlRecord::Abort(_)))));
    assert!(got[0].is_transactional() && got[3].is_transactional());
    // read_uncommitted: the same batches, no aborted list.
    let resp = c.send(&fetch_request("t", 0, 0, 0), 12).await;
    assert!(resp.responses[0].partitions[0].aborted_transactions.is_none());

    // An open transaction: read_committed stops at the LSO, ListOffsets latest too.
    txn.add(&[0]).await;
    assert_eq!(txn.produce(&cluster, 0, &["open"]).await, 0);
    let resp = c.send(&fetch_request("t", 0, 5, 1), 12).await;
    let p = &resp.responses[0].partitions[0];
    assert_eq!((p.high_watermark, p.last_stable_offset), (6, 5));
    assert!(p.records.as_ref().unwrap().is_empty());
    let latest = |isolation: i8| {
        ListOffsetsRequest::default().with_replica_id(-1).with_isolation_level(isolation).with_topics(vec![
            ListOffsetsTopic::default()
                .with_name("t".into())
                .with_partitions(vec![ListOffsetsPartition::default().with_partition_index(0).with_timestamp(-1)]),
        ])
    };
    assert_eq!(c.send(&latest(1), 5).await.topics[0].partitions[0].offset, 5);
    assert_eq!(c.send(&latest(0), 5).await.topics[0].partitions[0].offset, 6);
    assert_eq!(cluster.records_with_value("t", b"open")[0].status, TxnStatus::Ongoing);
}

#[tokio::test]
async fn a_new_producer_fences_the_old_one_and_aborts_its_transaction() {
    let cluster = FakeCluster::builder().brokers(2).topic("t", 1).start().await.unwrap();
    let mut old = Txn::start(&cluster).await;
    old.add(&[0]).await;
    assert_eq!(old.produce(&cluster, 0, &["zombie"]).await, 0);
    let mut new = Txn::start(&cluster).await;
    assert_eq!((new.pid, new.epoch), (old.pid, old.epoch + 1));
    // The open transaction was aborted with the new epoch.
    let markers = cluster.markers("t", 0);
    assert_eq!(markers.len(), 1);
    assert!(!markers[0].commit && markers[0].producer_epoch == new.epoch);
    assert_eq!(cluster.records_with_value("t", b"zombie")[0].status, TxnStatus::Aborted);
    // The old producer is fenced everywhere.
    assert_eq!(old.end(true).await, ErrorCode::ProducerFenced.code());
    let req = EndTxnRequest::default()
        .with_transactional_id(TID.into())
        .with_producer_id(old.pid)
        .with_producer_epoch(old.epoch)
        .with_committed(true);
    assert_eq!(
        old.coordinator.send(&req, 1).await.error_code,
        ErrorCode::InvalidProducerEpoch.code(),
        "before KIP-588"
    );
    assert_eq!(old.produce(&cluster, 0, &["late"]).await, ErrorCode::InvalidProducerEpoch.code());
    new.add(&[0]).await;
    assert_eq!(new.produce(&cluster, 0, &["fresh"]).await, 0);
    assert_eq!(new.end(true).await, 0);
    // Ending twice the same way is a retry; the other way is refused.
    assert_eq!(new.end(true).await, 0);
    assert_eq!(new.end(false).await, ErrorCode::InvalidTxnState.code());
    assert_eq!(cluster.transactional_producers().get(TID), Some(&(new.pid, new.epoch)));
}

#[tokio::test]
async fn coordinator_requests_at_the_wrong_broker_are_refused() {
    let cluster = FakeCluster::builder().brokers(3).topic("t", 1).start().await.unwrap();
    let right = cluster.coordinator(TID).unwrap();
    let wrong = cluster.broker_ids().into_iter().find(|b| *b != right).unwrap();
    let mut c = Raw::connect(&cluster.broker_address(wrong).unwrap()).await;
    let init = c
        .send(
            &InitProducerIdRequest::default()
                .with_transactional_id(Some(TID.into()))
                .with_transaction_timeout_ms(1_000),
            4,
        )
        .await;
    assert_eq!(init.error_code, ErrorCode::NotCoordinator.code());
    // v3 FindCoordinator: one key.
    let found = c.send(&FindCoordinatorRequest::default().with_key(TID.into()).with_key_type(1), 3).await;
    assert_eq!((found.error_code, found.node_id), (0, right));
    let bad = c.send(&FindCoordinatorRequest::default().with_key("x".into()).with_key_type(7), 3).await;
    assert_eq!(bad.error_code, ErrorCode::InvalidRequest.code());
}

#[tokio::test]
async fn end_txn_v5_ends_with_a_new_epoch_and_fences_the_old_one() {
    let cluster = FakeCluster::builder().topic("t", 1).start().await.unwrap();
    let mut txn = Txn::start(&cluster).await;
    let first = txn.epoch;
    txn.add(&[0]).await;
    assert_eq!(txn.produce(&cluster, 0, &["c1"]).await, 0);
    let pid = txn.pid;
    let end = |epoch: i16, commit: bool| {
        EndTxnRequest::default()
            .with_transactional_id(TID.into())
            .with_producer_id(pid)
            .with_producer_epoch(epoch)
            .with_committed(commit)
    };
    let resp = txn.coordinator.send(&end(first, true), 5).await;
    assert_eq!((resp.error_code, resp.producer_id, resp.producer_epoch), (0, txn.pid, first + 1));
    // A retry with the old epoch is answered with the new one; a stale end is fenced
    // and the answer carries no producer.
    let retry = txn.coordinator.send(&end(first, true), 5).await;
    assert_eq!((retry.error_code, retry.producer_id, retry.producer_epoch), (0, txn.pid, first + 1));
    let stale = txn.coordinator.send(&end(first + 5, true), 5).await;
    assert_eq!((stale.error_code, stale.producer_id, stale.producer_epoch), (ErrorCode::ProducerFenced.code(), -1, -1));
    let markers = cluster.markers("t", 0);
    assert_eq!(markers.iter().map(|m| (m.commit, m.producer_epoch)).collect::<Vec<_>>(), [(true, first + 1)]);
    // The old epoch: Produce gets INVALID_PRODUCER_EPOCH (from the marker's epoch on),
    // AddPartitionsToTxn PRODUCER_FENCED.
    assert_eq!(txn.produce(&cluster, 0, &["late"]).await, ErrorCode::InvalidProducerEpoch.code());
    let add = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(TID.into())
        .with_v3_and_below_producer_id(txn.pid)
        .with_v3_and_below_producer_epoch(first)
        .with_v3_and_below_topics(vec![
            AddPartitionsToTxnTopic::default().with_name("t".into()).with_partitions(vec![0]),
        ]);
    let resp = txn.coordinator.send(&add, 3).await;
    assert_eq!(
        resp.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code,
        ErrorCode::ProducerFenced.code()
    );
    // The new epoch aborts the next transaction, its sequences from 0.
    txn.epoch = first + 1;
    txn.seq = 0;
    txn.add(&[0]).await;
    assert_eq!(txn.produce(&cluster, 0, &["a1"]).await, 0);
    let resp = txn.coordinator.send(&end(first + 1, false), 5).await;
    assert_eq!((resp.error_code, resp.producer_epoch), (0, first + 2));
    // read_committed: the committed record, the aborted one listed.
    let mut c = Raw::connect(&cluster.broker_address(cluster.leader("t", 0).unwrap().0).unwrap()).await;
    let resp = c.send(&fetch_request("t", 0, 0, 1), 12).await;
    let p = &resp.responses[0].partitions[0];
    assert_eq!((p.high_watermark, p.last_stable_offset), (4, 4));
    let aborted = p.aborted_transactions.clone().unwrap();
    assert_eq!(aborted.iter().map(|a| (a.producer_id, a.first_offset)).collect::<Vec<_>>(), [(txn.pid, 2)]);
    let statuses: Vec<_> = cluster.partition_records("t", 0).iter().map(|r| (r.value_str(), r.status)).collect();
    assert_eq!(statuses, [("c1".into(), TxnStatus::Committed), ("a1".into(), TxnStatus::Aborted)]);
    assert_eq!(cluster.transactional_producers().get(TID), Some(&(txn.pid, first + 2)));
}

#[tokio::test]
async fn a_transaction_past_its_timeout_is_aborted_and_its_producer_fenced() {
    let cluster = FakeCluster::builder()
        .brokers(2)
        .topic("t", 1)
        .manual_clock()
        .transaction_abort_check_interval(Duration::from_secs(1))
        .start()
        .await
        .unwrap();
    let mut zombie = Txn::start_with_timeout(&cluster, 10_000).await;
    zombie.add(&[0]).await;
    assert_eq!(zombie.produce(&cluster, 0, &["lost"]).await, 0);
    assert_eq!(zombie.commit_offset(10).await, 0);
    assert_eq!(stable_offset(&mut zombie.group_coordinator).await, (-1, ErrorCode::UnstableOffsetCommit.code()));
    // A read_committed long poll waits at the LSO for the transaction to end.
    let (leader, _) = cluster.leader("t", 0).unwrap();
    let mut reader = Raw::connect(&cluster.broker_address(leader).unwrap()).await;
    let mut poll = fetch_request("t", 0, 0, 1);
    poll.max_wait_ms = 120_000;
    let polling = reader.send_only(&poll, 12).await;

    // At its timeout it is still open; the look one interval later aborts it.
    cluster.advance_clock(Duration::from_secs(10));
    assert_eq!(cluster.offsets("t", 0).unwrap(), (0, 0, 1));
    assert!(cluster.markers("t", 0).is_empty());
    cluster.advance_clock(Duration::from_secs(1));
    let markers = cluster.markers("t", 0);
    assert_eq!(markers.len(), 1);
    assert!(
        !markers[0].commit && markers[0].producer_id == zombie.pid && markers[0].producer_epoch == zombie.epoch + 1
    );
    assert_eq!(cluster.offsets("t", 0).unwrap(), (0, 2, 2));
    assert_eq!(cluster.records_with_value("t", b"lost")[0].status, TxnStatus::Aborted);
    assert_eq!(cluster.transactional_producers().get(TID), Some(&(zombie.pid, zombie.epoch + 1)));
    // The poll wakes: the batch comes with the abort, and the aborted list tells a
    // read_committed reader to drop it.
    let resp: FetchResponse = tokio::time::timeout(HANG_GUARD, reader.receive(12, polling)).await.unwrap();
    let p = &resp.responses[0].partitions[0];
    assert_eq!((p.high_watermark, p.last_stable_offset), (2, 2));
    let aborted = p.aborted_transactions.clone().unwrap();
    assert_eq!(aborted.iter().map(|a| (a.producer_id, a.first_offset)).collect::<Vec<_>>(), [(zombie.pid, 0)]);
    assert!(matches!(batches(p.records.clone())[1].control_record(), Some(Ok(ControlRecord::Abort(_)))));
    // Its offsets were dropped, not applied.
    assert_eq!(stable_offset(&mut zombie.group_coordinator).await, (-1, 0));
    assert!(cluster.committed_offsets(GROUP).is_empty());

    // The zombie is fenced everywhere.
    assert_eq!(zombie.produce(&cluster, 0, &["late"]).await, ErrorCode::InvalidProducerEpoch.code());
    let add = AddOffsetsToTxnRequest::default()
        .with_transactional_id(TID.into())
        .with_producer_id(zombie.pid)
        .with_producer_epoch(zombie.epoch)
        .with_group_id(GROUP.into());
    assert_eq!(zombie.coordinator.send(&add, 3).await.error_code, ErrorCode::ProducerFenced.code());
    let commit = TxnOffsetCommitRequest::default()
        .with_transactional_id(TID.into())
        .with_group_id(GROUP.into())
        .with_producer_id(zombie.pid)
        .with_producer_epoch(zombie.epoch)
        .with_topics(vec![TxnOffsetCommitRequestTopic::default().with_name("t".into()).with_partitions(vec![
            TxnOffsetCommitRequestPartition::default().with_partition_index(0).with_committed_offset(11),
        ])]);
    let resp = zombie.group_coordinator.send(&commit, 3).await;
    assert_eq!(resp.topics[0].partitions[0].error_code, ErrorCode::InvalidProducerEpoch.code());
    assert_eq!(zombie.end(true).await, ErrorCode::ProducerFenced.code());
    assert_eq!(cluster.markers("t", 0).len(), 1);

    // A new producer for the transactional id takes over.
    let mut next = Txn::start_with_timeout(&cluster, 10_000).await;
    assert_eq!((next.pid, next.epoch), (zombie.pid, zombie.epoch + 2));
    next.add(&[0]).await;
    assert_eq!(next.produce(&cluster, 0, &["kept"]).await, 0);
    assert_eq!(next.commit_offset(12).await, 0);
    assert_eq!(next.end(true).await, 0);
    assert_eq!(stable_offset(&mut next.group_coordinator).await, (12, 0));
    cluster.advance_clock(Duration::from_secs(60));
    assert_eq!(cluster.records_with_value("t", b"kept")[0].status, TxnStatus::Committed);
    assert_eq!(cluster.markers("t", 0).len(), 2);
}

#[tokio::test]
async fn on_the_real_clock_the_cluster_looks_for_timed_out_transactions_by_itself() {
    let cluster = FakeCluster::builder()
        .topic("t", 1)
        .transaction_abort_check_interval(Duration::from_millis(20))
        .start()
        .await
        .unwrap();
    let mut txn = Txn::start_with_timeout(&cluster, 50).await;
    txn.add(&[0]).await;
    assert_eq!(txn.produce(&cluster, 0, &["lost"]).await, 0);
    // A bound for a failing test, not a measure.
    tokio::time::timeout(HANG_GUARD, async {
        while cluster.markers("t", 0).is_empty() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the transaction was never aborted");
    assert_eq!(cluster.records_with_value("t", b"lost")[0].status, TxnStatus::Aborted);
    assert_eq!(cluster.offsets("t", 0).unwrap(), (0, 2, 2));
}

#[tokio::test]
async fn a_zero_abort_check_interval_is_refused() {
    let started = FakeCluster::builder().transaction_abort_check_interval(Duration::ZERO).start().await;
    assert!(matches!(started, Err(klife_testkit::Error::InvalidArgument(_))));
}
