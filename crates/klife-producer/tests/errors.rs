//! The producer's typed errors, each where the producer decides it, on the fake
//! cluster: transaction calls in the wrong state, fencing, a commit that aborts because
//! a record failed, a delivery timeout's last error, a refused producer id, invalid
//! settings.

#![allow(clippy::unwrap_used)]

use std::error::Error as _;
use std::time::Duration;

use klife_connection::{Cluster, ConnectionConfig};
use klife_producer::{
    AttemptError, ConfigProblem, GroupMetadata, ProduceError, Producer, ProducerConfig, ProducerIdAndEpoch,
    ProducerRecord, TopicPartitionOffset, TransactionOperation, TransactionPool, TransactionState,
    TransactionalProducer,
};
use klife_protocol::{ApiKey, ErrorCode};
use klife_testkit::FakeCluster;

async fn cluster(kafka: &FakeCluster) -> Cluster {
    Cluster::connect(&kafka.addresses(), ConnectionConfig::default()).await.unwrap()
}

async fn txn_producer(cluster: &Cluster, id: &str) -> TransactionalProducer {
    TransactionalProducer::new(cluster.clone(), ProducerConfig::default(), id, Duration::from_secs(60)).await.unwrap()
}

fn record(value: &str) -> ProducerRecord {
    ProducerRecord::new("t", value.to_owned()).with_partition(0)
}

fn state_error(result: Result<impl std::fmt::Debug, ProduceError>) -> (TransactionOperation, TransactionState) {
    match result {
        Err(ProduceError::TransactionState { operation, state }) => (operation, state),
        other => panic!("expected a transaction state error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_transaction_call_in_the_wrong_state_names_the_state_and_the_operation() {
    let kafka = FakeCluster::builder().topic("t", 1).start().await.unwrap();
    let cluster = cluster(&kafka).await;
    let txn = txn_producer(&cluster, "app").await;

    use TransactionOperation as Op;
    use TransactionState::{Idle, InTransaction};
    assert_eq!(state_error(txn.produce(record("outside")).await), (Op::Produce, Idle));
    assert_eq!(
        state_error(
            txn.send_offsets_to_transaction(&GroupMetadata::new("g"), &[TopicPartitionOffset::new("t", 0, 1)]).await
        ),
        (Op::SendOffsets, Idle)
    );
    assert_eq!(state_error(txn.commit().await), (Op::Commit, Idle));
    assert_eq!(state_error(txn.abort().await), (Op::Abort, Idle));
    txn.begin().await.unwrap();
    let second = txn.begin().await;
    assert_eq!(
        second.as_ref().unwrap_err().to_string(),
        "cannot begin a transaction: a transaction is already open (commit or abort it first)"
    );
    assert_eq!(state_error(second), (Op::Begin, InTransaction));
    // Misuse leaves the producer working.
    txn.produce(record("inside")).await.unwrap();
    txn.commit().await.unwrap();
    assert_eq!(kafka.high_watermark("t", 0).unwrap(), 2, "the record and the commit marker");
    txn.close().await;
}

#[tokio::test]
async fn a_newer_producer_with_the_same_transactional_id_fences_the_older_at_its_next_call() {
    let kafka = FakeCluster::builder().topic("t", 1).start().await.unwrap();
    let cluster = cluster(&kafka).await;
    let old = txn_producer(&cluster, "app").await;
    let ProducerIdAndEpoch { id: pid, epoch } = old.producer_id();
    old.begin().await.unwrap();
    old.produce(record("before")).await.unwrap();

    // The newer producer bumps the epoch and aborts the older one's transaction.
    let new = txn_producer(&cluster, "app").await;
    assert!(new.producer_id().epoch > epoch);

    // The old epoch's next batch is refused by the partition leader.
    let err = old.produce(record("after")).await.unwrap_err();
    match &err {
        ProduceError::Fenced { transactional_id, producer_id, epoch: fenced_epoch, code } => {
            assert_eq!((transactional_id.as_str(), *producer_id, *fenced_epoch), ("app", pid, epoch), "{err}");
            assert!(matches!(code, ErrorCode::InvalidProducerEpoch | ErrorCode::ProducerFenced), "{err}");
        }
        other => panic!("expected Fenced, got {other:?}"),
    }
    assert!(err.is_fenced());
    // Nothing more can be done with it: every call says so at once.
    assert!(old.commit().await.unwrap_err().is_fenced());
    assert!(old.begin().await.unwrap_err().is_fenced());
    old.close().await;

    // The newer one works.
    new.begin().await.unwrap();
    new.produce(record("new")).await.unwrap();
    new.commit().await.unwrap();
    new.close().await;
}

#[tokio::test]
async fn a_coordinator_that_fences_the_producer_at_commit_is_fenced_with_its_id_and_epoch() {
    let kafka = FakeCluster::builder().topic("t", 1).start().await.unwrap();
    let cluster = cluster(&kafka).await;
    let old = txn_producer(&cluster, "app").await;
    let ProducerIdAndEpoch { id: pid, epoch } = old.producer_id();
    old.begin().await.unwrap();
    old.produce(record("before")).await.unwrap();
    let new = txn_producer(&cluster, "app").await;

    let err = old.commit().await.unwrap_err();
    match &err {
        ProduceError::Fenced { producer_id, epoch: fenced_epoch, code, .. } => {
            assert_eq!((*producer_id, *fenced_epoch), (pid, epoch), "{err}");
            assert!(matches!(code, ErrorCode::InvalidProducerEpoch | ErrorCode::ProducerFenced), "{err}");
        }
        other => panic!("expected Fenced, got {other:?}"),
    }
    assert_eq!(
        err.error_code(),
        Some(match &err {
            ProduceError::Fenced { code, .. } => *code,
            _ => unreachable!("matched above"),
        })
    );
    assert!(old.abort().await.unwrap_err().is_fenced());
    old.close().await;
    new.close().await;
}

#[tokio::test]
async fn a_commit_after_a_failed_record_aborts_and_gives_the_failure_as_source() {
    let kafka = FakeCluster::builder().topic("t", 1).start().await.unwrap();
    let cluster = cluster(&kafka).await;
    let txn = txn_producer(&cluster, "app").await;
    txn.begin().await.unwrap();
    txn.produce(record("kept-until-abort")).await.unwrap();
    kafka.inject_errors(ApiKey::Produce, &[ErrorCode::InvalidRecord], None);
    let failed = txn.produce(record("refused")).await.unwrap_err();
    assert!(matches!(failed, ProduceError::Broker { code: ErrorCode::InvalidRecord, .. }), "{failed}");

    let err = txn.commit().await.unwrap_err();
    assert!(err.is_transaction_aborted(), "{err}");
    let ProduceError::TransactionAborted { source } = &err else { panic!("expected TransactionAborted: {err:?}") };
    assert!(matches!(**source, ProduceError::Broker { code: ErrorCode::InvalidRecord, .. }), "{source}");
    let chained = err.source().and_then(|s| s.downcast_ref::<ProduceError>());
    assert!(matches!(chained, Some(ProduceError::Broker { code: ErrorCode::InvalidRecord, .. })), "{err}");
    let markers: Vec<bool> = kafka.markers("t", 0).iter().map(|m| m.commit).collect();
    assert_eq!(markers, [false], "the transaction was aborted");

    // The next transaction starts clean.
    txn.begin().await.unwrap();
    txn.produce(record("next")).await.unwrap();
    txn.commit().await.unwrap();
    txn.close().await;
}

#[tokio::test]
async fn a_record_refused_before_it_is_queued_also_makes_the_commit_abort() {
    let kafka = FakeCluster::builder().topic("t", 1).start().await.unwrap();
    let cluster = cluster(&kafka).await;
    let txn = txn_producer(&cluster, "app").await;
    txn.begin().await.unwrap();
    txn.produce(record("fine")).await.unwrap();
    let refused = txn.produce(ProducerRecord::new("t", "nowhere").with_partition(7)).await.unwrap_err();
    assert!(matches!(refused, ProduceError::InvalidPartition { .. }), "{refused}");
    let err = txn.commit().await.unwrap_err();
    let ProduceError::TransactionAborted { source } = &err else { panic!("expected TransactionAborted: {err:?}") };
    assert!(matches!(**source, ProduceError::InvalidPartition { .. }), "{source}");
    txn.close().await;
}

#[tokio::test]
async fn a_delivery_timeout_keeps_the_last_error_as_a_typed_source() {
    let kafka = FakeCluster::builder().topic("t", 1).start().await.unwrap();
    let cluster = cluster(&kafka).await;
    let mut config = ProducerConfig::default();
    config.delivery_timeout = Duration::from_millis(300);
    config.retry_backoff = Duration::from_millis(20);
    let producer = Producer::new(cluster, config).await.unwrap();
    // More errors than attempts fit in the delivery timeout: each attempt waits the
    // retry backoff first, so at most 300 / 20 + 1 attempts are made.
    kafka.inject_errors(ApiKey::Produce, &[ErrorCode::NotEnoughReplicas; 100], None);
    let err = producer.produce(record("never")).await.unwrap_err();
    kafka.clear_faults();
    match &err {
        ProduceError::DeliveryTimeout { topic, partition, timeout, last_error } => {
            assert_eq!((topic.as_str(), *partition, *timeout), ("t", 0, Duration::from_millis(300)));
            assert!(
                matches!(last_error, Some(AttemptError::Broker { code: ErrorCode::NotEnoughReplicas, .. })),
                "{err}"
            );
        }
        other => panic!("expected DeliveryTimeout, got {other:?}"),
    }
    let source = err.source().and_then(|s| s.downcast_ref::<AttemptError>()).unwrap();
    assert_eq!(source.code(), ErrorCode::NotEnoughReplicas);
    assert!(err.to_string().contains("NOT_ENOUGH_REPLICAS"), "{err}");
    producer.close().await;
}

#[tokio::test]
async fn a_refused_producer_id_is_a_typed_error() {
    let kafka = FakeCluster::builder().topic("t", 1).start().await.unwrap();
    let cluster = cluster(&kafka).await;
    kafka.inject_errors(ApiKey::InitProducerId, &[ErrorCode::ClusterAuthorizationFailed], None);
    let err = Producer::new(cluster, ProducerConfig::default()).await.unwrap_err();
    assert!(matches!(err, ProduceError::ProducerId { code: ErrorCode::ClusterAuthorizationFailed, .. }), "{err}");
    assert_eq!(err.error_code(), Some(ErrorCode::ClusterAuthorizationFailed));
}

#[tokio::test]
async fn invalid_settings_name_the_field() {
    let kafka = FakeCluster::builder().topic("t", 1).start().await.unwrap();
    let cluster = cluster(&kafka).await;
    let mut config = ProducerConfig::default();
    config.max_in_flight_per_broker = 0;
    let err = Producer::new(cluster.clone(), config).await.unwrap_err();
    let ProduceError::Config(e) = &err else { panic!("expected Config: {err:?}") };
    assert_eq!((e.config, e.field, &e.problem), ("ProducerConfig", "max_in_flight_per_broker", &ConfigProblem::Zero));

    let err =
        TransactionPool::new(cluster, ProducerConfig::default(), "pool", 0, Duration::from_secs(60)).await.unwrap_err();
    let ProduceError::Config(e) = &err else { panic!("expected Config: {err:?}") };
    assert_eq!((e.config, e.field, &e.problem), ("TransactionPool::new", "size", &ConfigProblem::Zero));
}
