//! How a transactional producer meets a coordinator's faults, on the fake cluster
//! where they can be injected: offsets that could not be sent make the transaction
//! abort-only, UNKNOWN_TOPIC_OR_PARTITION is retried only for a partition that exists,
//! and an EndTxn without an answer is an unknown outcome, not a plain failure.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use klife_connection::{Cluster, ConnectionConfig};
use klife_fetcher::{Fetcher, FetcherConfig};
use klife_producer::{
    GroupMetadata, ProduceError, ProducerConfig, ProducerRecord, TopicPartitionOffset, TransactionalProducer,
};
use klife_protocol::{ApiKey, ErrorCode};
use klife_testkit::FakeCluster;

async fn cluster_with(kafka: &FakeCluster, config: ConnectionConfig) -> Cluster {
    Cluster::connect(&kafka.addresses(), config).await.unwrap()
}

async fn txn_producer(cluster: &Cluster) -> TransactionalProducer {
    TransactionalProducer::new(cluster.clone(), ProducerConfig::default(), "app", Duration::from_secs(60))
        .await
        .unwrap()
}

fn record(value: &str) -> ProducerRecord {
    ProducerRecord::new("t", value.to_owned()).with_partition(0)
}

/// The values read_committed sees in t-0.
async fn committed_values(cluster: &Cluster) -> Vec<String> {
    let fetcher = Fetcher::new(cluster.clone(), FetcherConfig::default()).unwrap();
    let fetched = fetcher.fetch("t", 0, 0).await.unwrap();
    fetched.records.iter().map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into()).collect()
}

#[tokio::test]
async fn offsets_that_could_not_be_sent_make_the_commit_abort() {
    let kafka = FakeCluster::builder().topic("t", 1).topic("in", 1).start().await.unwrap();
    let cluster = cluster_with(&kafka, ConnectionConfig::default()).await;
    let txn = txn_producer(&cluster).await;
    txn.begin().await.unwrap();
    txn.produce(record("out")).await.unwrap();
    kafka.inject_errors(ApiKey::TxnOffsetCommit, &[ErrorCode::GroupAuthorizationFailed], None);
    let offsets = [TopicPartitionOffset::new("in", 0, 42)];
    let err = txn.send_offsets_to_transaction(&GroupMetadata::new("g"), &offsets).await.unwrap_err();
    assert!(
        matches!(
            err,
            ProduceError::Coordinator { api: ApiKey::TxnOffsetCommit, code: ErrorCode::GroupAuthorizationFailed, .. }
        ),
        "{err}"
    );

    // The records must not commit without the offsets: the commit aborts.
    let err = txn.commit().await.unwrap_err();
    match &err {
        ProduceError::TransactionAborted { source } => {
            assert!(matches!(**source, ProduceError::Coordinator { api: ApiKey::TxnOffsetCommit, .. }), "{err}");
        }
        other => panic!("expected TransactionAborted, got {other:?}"),
    }
    assert!(committed_values(&cluster).await.is_empty());
    assert!(kafka.committed_offsets("g").is_empty());

    // The next transaction starts clean.
    txn.begin().await.unwrap();
    txn.produce(record("next")).await.unwrap();
    txn.send_offsets_to_transaction(&GroupMetadata::new("g"), &offsets).await.unwrap();
    txn.commit().await.unwrap();
    assert_eq!(committed_values(&cluster).await, ["next"]);
    assert_eq!(kafka.committed_offsets("g").get(&("in".to_owned(), 0)), Some(&42));
    txn.close().await;
    kafka.shutdown().await;
}

#[tokio::test]
async fn unknown_topic_or_partition_is_retried_while_the_partition_exists() {
    let kafka = FakeCluster::builder().topic("t", 1).topic("in", 1).start().await.unwrap();
    let cluster = cluster_with(&kafka, ConnectionConfig::default()).await;
    let txn = txn_producer(&cluster).await;
    txn.begin().await.unwrap();
    // A coordinator that does not know the topic yet (it was just created).
    kafka.inject_errors(ApiKey::AddPartitionsToTxn, &[ErrorCode::UnknownTopicOrPartition; 2], None);
    txn.produce(record("v")).await.unwrap();
    kafka.inject_errors(ApiKey::TxnOffsetCommit, &[ErrorCode::UnknownTopicOrPartition; 2], None);
    txn.send_offsets_to_transaction(&GroupMetadata::new("g"), &[TopicPartitionOffset::new("in", 0, 7)]).await.unwrap();
    assert_eq!(kafka.pending_faults(), 0);
    txn.commit().await.unwrap();
    assert_eq!(committed_values(&cluster).await, ["v"]);
    assert_eq!(kafka.committed_offsets("g").get(&("in".to_owned(), 0)), Some(&7));
    txn.close().await;
    kafka.shutdown().await;
}

#[tokio::test]
async fn unknown_topic_or_partition_for_a_topic_that_does_not_exist_fails_at_once() {
    let kafka = FakeCluster::builder().topic("t", 1).start().await.unwrap();
    let cluster = cluster_with(&kafka, ConnectionConfig::default()).await;
    let txn = txn_producer(&cluster).await;
    txn.begin().await.unwrap();
    txn.produce(record("v")).await.unwrap();
    // Every answer says the partition is unknown, and the metadata agrees: retrying
    // cannot help. The retry timeout (30 s) would allow many more attempts than the
    // one after the metadata was refreshed.
    kafka.inject_errors(ApiKey::TxnOffsetCommit, &[ErrorCode::UnknownTopicOrPartition; 20], None);
    let offsets = [TopicPartitionOffset::new("gone", 0, 7)];
    let err = txn.send_offsets_to_transaction(&GroupMetadata::new("g"), &offsets).await.unwrap_err();
    assert!(matches!(&err, ProduceError::UnknownTopic { topic } if topic == "gone"), "{err}");
    assert!(kafka.pending_faults() >= 18, "{} attempts", 20 - kafka.pending_faults());
    kafka.clear_faults();
    // And the transaction can only abort.
    assert!(txn.commit().await.unwrap_err().is_transaction_aborted());
    assert!(committed_values(&cluster).await.is_empty());
    txn.close().await;
    kafka.shutdown().await;
}

#[tokio::test]
async fn an_end_txn_without_an_answer_is_an_unknown_outcome_and_can_be_asked_again() {
    let kafka = FakeCluster::builder().topic("t", 1).start().await.unwrap();
    // Retries end soon: the coordinator's connection breaks on every EndTxn below.
    let mut config = ConnectionConfig::default();
    config.retry_timeout = Duration::from_millis(300);
    config.retry_backoff = Duration::from_millis(10);
    let cluster = cluster_with(&kafka, config).await;
    let txn = txn_producer(&cluster).await;
    txn.begin().await.unwrap();
    txn.produce(record("v")).await.unwrap();
    for _ in 0..1000 {
        kafka.inject_disconnect(ApiKey::EndTxn, None);
    }
    let err = txn.commit().await.unwrap_err();
    assert!(matches!(err, ProduceError::TransactionOutcomeUnknown { commit: true, .. }), "{err}");
    assert!(err.is_outcome_unknown(), "{err}");
    assert!(committed_values(&cluster).await.is_empty());

    // The transaction is still open here: the same call again ends it.
    kafka.clear_faults();
    txn.commit().await.unwrap();
    assert_eq!(committed_values(&cluster).await, ["v"]);
    txn.close().await;
    kafka.shutdown().await;
}

#[test]
fn a_coordinator_refusal_keeps_the_brokers_message() {
    let e = ProduceError::Coordinator {
        api: ApiKey::TxnOffsetCommit,
        key: "g".into(),
        code: ErrorCode::UnknownMemberId,
        message: Some("member ghost is not in the group".into()),
    };
    assert!(e.to_string().ends_with(": member ghost is not in the group"), "{e}");
    let e = ProduceError::ProducerId { code: ErrorCode::ClusterAuthorizationFailed, message: Some("denied".into()) };
    assert!(e.to_string().ends_with(": denied"), "{e}");
}
