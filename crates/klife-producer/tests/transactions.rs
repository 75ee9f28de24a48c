//! One transactional producer across several transactions on the fake cluster, read
//! back with read_committed, at transaction version 2 (KIP-890: every EndTxn bumps the
//! producer epoch) and 1.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use klife_connection::{Cluster, ConnectionConfig};
use klife_fetcher::{Fetcher, FetcherConfig};
use klife_producer::{ProducerConfig, ProducerIdAndEpoch, ProducerRecord, TransactionalProducer};
use klife_protocol::ApiKey;
use klife_testkit::FakeCluster;

/// Commit, abort, commit with one producer; returns its first epoch and the epochs it
/// held after each transaction.
async fn commit_abort_commit(kafka: &FakeCluster) -> (i16, Vec<i16>) {
    let cluster = Cluster::connect(&kafka.addresses(), ConnectionConfig::default()).await.unwrap();
    let txn = TransactionalProducer::new(cluster.clone(), ProducerConfig::default(), "app", Duration::from_secs(60))
        .await
        .unwrap();
    let ProducerIdAndEpoch { id: pid, epoch: first_epoch } = txn.producer_id();
    let mut epochs = Vec::new();
    for (values, commit) in [(["c1", "c2"], true), (["a1", "a2"], false), (["c3", "c4"], true)] {
        txn.begin().await.unwrap();
        for v in values {
            txn.produce(ProducerRecord::new("t", v).with_partition(0)).await.unwrap();
        }
        if commit {
            txn.commit().await.unwrap();
        } else {
            txn.abort().await.unwrap();
        }
        assert_eq!(txn.producer_id().id, pid);
        epochs.push(txn.producer_id().epoch);
    }
    txn.close().await;

    let fetcher = Fetcher::new(cluster, FetcherConfig::default()).unwrap();
    let fetched = fetcher.fetch("t", 0, 0).await.unwrap();
    let values: Vec<&[u8]> = fetched.records.iter().map(|r| r.value.as_deref().unwrap()).collect();
    assert_eq!(values, [&b"c1"[..], b"c2", b"c3", b"c4"]);
    assert_eq!(fetched.next_offset, kafka.high_watermark("t", 0).unwrap());
    (first_epoch, epochs)
}

fn end_txn_versions(kafka: &FakeCluster) -> Vec<i16> {
    kafka.requests().iter().filter(|r| r.api_key == ApiKey::EndTxn).map(|r| r.version).collect()
}

#[tokio::test]
async fn one_producer_runs_transactions_in_a_row_at_transaction_version_2() {
    let kafka = FakeCluster::builder().topic("t", 1).transaction_version(2).start().await.unwrap();
    let (first, epochs) = commit_abort_commit(&kafka).await;
    assert_eq!(epochs, [first + 1, first + 2, first + 3], "every EndTxn bumps the epoch");
    let markers: Vec<(bool, i16)> = kafka.markers("t", 0).iter().map(|m| (m.commit, m.producer_epoch)).collect();
    assert_eq!(markers, [(true, first + 1), (false, first + 2), (true, first + 3)], "markers carry the new epoch");
    assert_eq!(end_txn_versions(&kafka), [5, 5, 5]);
    assert_eq!(kafka.transactional_producers()["app"].1, first + 3);
}

#[tokio::test]
async fn one_producer_runs_transactions_in_a_row_at_transaction_version_1() {
    let kafka = FakeCluster::builder().topic("t", 1).transaction_version(1).start().await.unwrap();
    let (first, epochs) = commit_abort_commit(&kafka).await;
    assert_eq!(epochs, [first, first, first]);
    assert_eq!(end_txn_versions(&kafka), [4, 4, 4]);
}
