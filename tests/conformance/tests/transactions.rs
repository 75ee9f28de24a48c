//! Transactions against Apache Kafka, Tansu and klife-testkit (the brokers here with
//! working transaction coordinators; the mock cluster's are partial, see README.md):
//! begin, produce, commit and abort end to end, offsets sent to a transaction, and
//! `transaction(closure)`, typed misuse errors; and, against Kafka and klife-testkit,
//! a producer fenced by a newer one with the same transactional id.
//!
//! Tansu does not keep the transactional attribute of batches nor write commit/abort
//! control batches into the log (see README.md), so what the markers say is checked
//! against Kafka and klife-testkit; on all three, the coordinator calls succeed in
//! order, the data is written under the coordinator's producer id, and offsets are
//! committed.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use klife_conformance::{Broker, raw, unique_topic};
use klife_producer::{
    GroupMetadata, ProduceError, ProducerConfig, ProducerIdAndEpoch, ProducerRecord, TopicPartitionOffset,
    TransactionError, TransactionOperation, TransactionState, TransactionalProducer,
};
use klife_protocol::messages::offset_fetch_request::{OffsetFetchRequest, OffsetFetchRequestTopic};
use klife_protocol::records::ControlRecord;

// Each case against Kafka, Tansu and klife-testkit.
klife_conformance::against_brokers!(
    [kafka: Kafka, tansu: Tansu, testkit: Testkit]
    commit_and_abort_leave_their_markers,
    offsets_sent_to_a_transaction_are_committed_with_it,
    a_transaction_closure_commits_on_ok_and_aborts_on_err,
    a_pool_runs_transactions_concurrently_and_all_or_nothing,
);

// Each case against Kafka and klife-testkit: Tansu closes the connection on an EndTxn
// from a producer another one took over, where Kafka answers PRODUCER_FENCED (see
// README.md).
klife_conformance::against_brokers!([kafka: Kafka, testkit: Testkit] a_newer_producer_with_the_same_transactional_id_fences_the_older);

async fn txn_producer(client: &klife::Client, id: &str) -> TransactionalProducer {
    let mut c = ProducerConfig::default();
    c.linger = Duration::from_millis(2);
    TransactionalProducer::new(client.cluster().clone(), c, id, Duration::from_secs(30)).await.unwrap()
}

/// The batches of a partition: (is transactional, producer id, record count, marker).
/// (Tansu reports the transactional flag as false and has no markers: see above.)
async fn log(client: &klife::Client, topic: &str, partition: i32) -> Vec<(bool, i64, usize, Option<&'static str>)> {
    raw::fetch_batches(client.cluster(), topic, partition, 0)
        .await
        .iter()
        .map(|b| {
            let marker = b.control_record().map(|c| match c.unwrap() {
                ControlRecord::Commit(_) => "commit",
                ControlRecord::Abort(_) => "abort",
                _ => "other",
            });
            (b.attributes().is_transactional(), b.producer_id(), b.len(), marker)
        })
        .collect()
}

async fn commit_and_abort_leave_their_markers(broker: Broker) {
    let client = broker.client().await;
    let topic = unique_topic("txn");
    broker.create_topic(&client, &topic, 2).await;
    let producer = txn_producer(&client, &unique_topic("txn-id")).await;
    let pid = producer.producer_id().id;

    producer.begin().await.unwrap();
    let results = producer
        .produce_batch((0..5).map(|i| ProducerRecord::new(topic.clone(), format!("c{i}")).with_partition(0)).collect())
        .await;
    assert!(results.iter().all(Result::is_ok), "{results:?}");
    producer.commit().await.unwrap();

    producer.begin().await.unwrap();
    producer.produce(ProducerRecord::new(topic.clone(), "aborted").with_partition(0)).await.unwrap();
    producer.abort().await.unwrap();

    // Kafka answers EndTxn before it writes the markers: wait for the abort's.
    let mut batches = log(&client, &topic, 0).await;
    for _ in 0..200 {
        if broker == Broker::Tansu || batches.last().is_some_and(|b| b.3.is_some()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        batches = log(&client, &topic, 0).await;
    }
    let data: Vec<_> = batches.iter().filter(|b| b.3.is_none()).collect();
    assert!(data.iter().all(|b| b.1 == pid), "written under the coordinator's producer id: {batches:?}");
    assert_eq!(data.iter().map(|b| b.2).sum::<usize>(), 6);
    if broker != Broker::Tansu {
        // The log as Kafka writes it: transactional data, then each transaction's marker.
        let shape: Vec<(bool, usize, Option<&str>)> = batches.iter().map(|b| (b.0, b.2, b.3)).collect();
        let data_batches = shape.iter().filter(|b| b.2.is_none()).count();
        assert!(shape.iter().all(|b| b.0), "every batch is transactional: {shape:?}");
        assert_eq!(shape.iter().filter_map(|b| b.2).collect::<Vec<_>>(), vec!["commit", "abort"], "{shape:?}");
        assert_eq!(shape.last().map(|b| b.2), Some(Some("abort")));
        assert!(data_batches >= 2, "{shape:?}");
    }
    if broker == Broker::Testkit {
        let cluster = klife_conformance::shared_testkit();
        let statuses: Vec<_> = cluster.partition_records(&topic, 0).iter().map(|r| r.status).collect();
        let aborted = statuses.iter().filter(|s| **s == klife_testkit::TxnStatus::Aborted).count();
        assert_eq!((statuses.len(), aborted), (6, 1), "{statuses:?}");
    }
    // Partition 1 was never part of a transaction: nothing there.
    assert!(log(&client, &topic, 1).await.is_empty());
    producer.close().await;
    client.close().await;
}

async fn offsets_sent_to_a_transaction_are_committed_with_it(broker: Broker) {
    let client = broker.client().await;
    let topic = unique_topic("txn-offsets");
    broker.create_topic(&client, &topic, 1).await;
    let group = unique_topic("group");
    let producer = txn_producer(&client, &unique_topic("txn-id")).await;
    producer.begin().await.unwrap();
    producer.produce(ProducerRecord::new(topic.clone(), "out").with_partition(0)).await.unwrap();
    producer
        .send_offsets_to_transaction(
            &GroupMetadata::new(group.as_str()),
            &[TopicPartitionOffset::new(topic.as_str(), 0, 42)],
        )
        .await
        .unwrap();
    producer.commit().await.unwrap();

    // Kafka answers EndTxn before the markers are written; until they are, a stable
    // OffsetFetch (v7+) answers UNSTABLE_OFFSET_COMMIT for the partition.
    let conn = client.cluster().coordinator(klife_connection::CoordinatorType::Group, &group).await.unwrap().connection;
    let version = conn.version_for(klife_protocol::ApiKey::OffsetFetch, Some(7)).unwrap();
    let req =
        OffsetFetchRequest::default().with_group_id(group.clone()).with_require_stable(true).with_topics(Some(vec![
            OffsetFetchRequestTopic::default().with_name(topic.clone()).with_partition_indexes(vec![0]),
        ]));
    let mut committed = None;
    for _ in 0..100 {
        let resp = conn.send_version(&req, version).await.unwrap();
        let partition = resp.topics.iter().flat_map(|t| t.partitions.iter()).next().unwrap();
        if partition.error_code != klife_protocol::ErrorCode::UnstableOffsetCommit.code() {
            assert_eq!(partition.error_code, 0);
            committed = Some(partition.committed_offset);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(committed, Some(42));
    producer.close().await;
    client.close().await;
}

/// TxnOffsetCommit v3+ carries the member (KIP-447): a member and generation the group
/// does not have are refused (a member-less GroupMetadata commits, as in the case
/// above), and the transaction can then only abort.
async fn offsets_from_a_member_the_group_does_not_have_are_refused_and_abort_the_transaction(broker: Broker) {
    let client = broker.client().await;
    let topic = unique_topic("txn-member");
    broker.create_topic(&client, &topic, 1).await;
    let group = GroupMetadata::new(unique_topic("group")).with_member("ghost", 3).with_instance_id("ghost-instance");
    let producer = txn_producer(&client, &unique_topic("txn-id")).await;
    producer.begin().await.unwrap();
    producer.produce(ProducerRecord::new(topic.clone(), "out").with_partition(0)).await.unwrap();
    let err = producer
        .send_offsets_to_transaction(&group, &[TopicPartitionOffset::new(topic.as_str(), 0, 42).with_last_epoch(0)])
        .await
        .unwrap_err();
    match &err {
        ProduceError::Coordinator { code, .. } => assert!(
            matches!(
                code,
                klife_protocol::ErrorCode::IllegalGeneration
                    | klife_protocol::ErrorCode::UnknownMemberId
                    | klife_protocol::ErrorCode::GroupIdNotFound
                    | klife_protocol::ErrorCode::FencedInstanceId
            ),
            "{err}"
        ),
        other => panic!("expected the coordinator to refuse the member, got {other:?}"),
    }
    let aborted = producer.commit().await.unwrap_err();
    assert!(aborted.is_transaction_aborted(), "{aborted}");
    producer.close().await;
    client.close().await;
}

mod offsets_from_a_member_the_group_does_not_have_are_refused_and_abort_the_transaction {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kafka() {
        super::offsets_from_a_member_the_group_does_not_have_are_refused_and_abort_the_transaction(
            klife_conformance::Broker::Kafka,
        )
        .await;
    }
}

async fn a_transaction_closure_commits_on_ok_and_aborts_on_err(broker: Broker) {
    let client = broker.client().await;
    let topic = unique_topic("txn-closure");
    broker.create_topic(&client, &topic, 1).await;
    let producer = txn_producer(&client, &unique_topic("txn-id")).await;
    let t = topic.clone();
    let n = producer
        .transaction(|txn| async move {
            txn.produce(ProducerRecord::new(t.clone(), "kept").with_partition(0)).await?;
            Ok::<_, ProduceError>(1)
        })
        .await
        .unwrap();
    assert_eq!(n, 1);
    let t = topic.clone();
    let err = producer
        .transaction(|txn| async move {
            txn.produce(ProducerRecord::new(t, "dropped").with_partition(0)).await.map_err(|e| e.to_string())?;
            Err::<(), _>("the body changed its mind".to_owned())
        })
        .await
        .unwrap_err();
    assert!(matches!(err, TransactionError::Aborted(ref m) if m == "the body changed its mind"), "{err}");
    let records: usize = log(&client, &topic, 0).await.into_iter().filter(|b| b.3.is_none()).map(|b| b.2).sum();
    assert_eq!(records, 2, "both transactions wrote their record");
    // Misuse is a typed error, naming the call and the state, not a broken producer.
    let outside = producer.produce(ProducerRecord::new(topic.clone(), "outside").with_partition(0)).await;
    assert!(
        matches!(
            outside,
            Err(ProduceError::TransactionState {
                operation: TransactionOperation::Produce,
                state: TransactionState::Idle
            })
        ),
        "{outside:?}"
    );
    producer.begin().await.unwrap();
    let second = producer.begin().await;
    assert!(
        matches!(
            second,
            Err(ProduceError::TransactionState {
                operation: TransactionOperation::Begin,
                state: TransactionState::InTransaction
            })
        ),
        "a second begin is refused: {second:?}"
    );
    producer.abort().await.unwrap();
    let again = producer.abort().await;
    assert!(
        matches!(
            again,
            Err(ProduceError::TransactionState {
                operation: TransactionOperation::Abort,
                state: TransactionState::Idle
            })
        ),
        "{again:?}"
    );
    producer.close().await;
    client.close().await;
}

async fn a_pool_runs_transactions_concurrently_and_all_or_nothing(broker: Broker) {
    let client = broker.client().await;
    let topic = unique_topic("txn-pool");
    broker.create_topic(&client, &topic, 2).await;
    let pool = client.transaction_pool(&unique_topic("pool"), 2, Duration::from_secs(30)).await.unwrap();
    let batches = (0..4).map(|b| {
        (0..5).map(|i| ProducerRecord::new(topic.clone(), format!("{b}-{i}")).with_partition(b % 2)).collect::<Vec<_>>()
    });
    let results = futures_join(batches.map(|records| pool.produce_batch_txn(records))).await;
    for r in &results {
        assert_eq!(r.as_ref().unwrap().len(), 5);
    }
    // A batch with a bad record commits nothing of it: the error names the failure.
    let bad = vec![
        ProducerRecord::new(topic.clone(), "fine").with_partition(0),
        ProducerRecord::new(topic.clone(), "nowhere").with_partition(9),
    ];
    let err = pool.produce_batch_txn(bad).await.unwrap_err();
    assert!(err.to_string().contains("no partition 9") || err.to_string().contains("partition"), "{err}");
    pool.close().await;
    client.close().await;
}

/// A second producer with the same transactional id takes it over (its InitProducerId
/// bumps the epoch and aborts the open transaction): the first one's next call is
/// [`ProduceError::Fenced`], naming its producer id and epoch, and so is every call
/// after; the records of its transaction are never committed.
async fn a_newer_producer_with_the_same_transactional_id_fences_the_older(broker: Broker) {
    let client = broker.client().await;
    let topic = unique_topic("txn-fenced");
    broker.create_topic(&client, &topic, 1).await;
    let id = unique_topic("txn-id");
    let old = txn_producer(&client, &id).await;
    let ProducerIdAndEpoch { id: pid, epoch } = old.producer_id();
    old.begin().await.unwrap();
    old.produce(ProducerRecord::new(topic.clone(), "old").with_partition(0)).await.unwrap();

    let new = txn_producer(&client, &id).await;
    let err = old.commit().await.unwrap_err();
    match &err {
        ProduceError::Fenced { transactional_id, producer_id, epoch: fenced_epoch, code } => {
            assert_eq!((transactional_id, *producer_id, *fenced_epoch), (&id, pid, epoch), "{err}");
            assert!(
                matches!(
                    code,
                    klife_protocol::ErrorCode::ProducerFenced | klife_protocol::ErrorCode::InvalidProducerEpoch
                ),
                "{err}"
            );
        }
        other => panic!("expected the old producer to be fenced, got {other:?}"),
    }
    let facade = klife::Error::from(err);
    assert!(facade.is_fenced() && !facade.is_retriable(), "{facade}");
    assert!(old.begin().await.unwrap_err().is_fenced(), "a fenced producer stays fenced");
    old.close().await;

    new.begin().await.unwrap();
    new.produce(ProducerRecord::new(topic.clone(), "new").with_partition(0)).await.unwrap();
    new.commit().await.unwrap();
    new.close().await;
    // Kafka writes the takeover's abort marker after it answers InitProducerId.
    let mut batches = log(&client, &topic, 0).await;
    for _ in 0..200 {
        if batches.iter().filter(|b| b.3.is_some()).count() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
        batches = log(&client, &topic, 0).await;
    }
    let markers: Vec<_> = batches.iter().filter_map(|b| b.3).collect();
    assert_eq!(markers, ["abort", "commit"], "the old transaction aborted, the new one committed: {batches:?}");
    client.close().await;
}

async fn futures_join<F: Future>(futures: impl Iterator<Item = F>) -> Vec<F::Output> {
    let handles: Vec<_> = futures.collect();
    let mut out = Vec::new();
    // Polled together: the pool has two producers, so two transactions overlap.
    let mut pinned: Vec<_> = handles.into_iter().map(Box::pin).collect();
    let mut done: Vec<Option<F::Output>> = (0..pinned.len()).map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut all = true;
        for (i, f) in pinned.iter_mut().enumerate() {
            if done[i].is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => done[i] = Some(v),
                    std::task::Poll::Pending => all = false,
                }
            }
        }
        if all { std::task::Poll::Ready(()) } else { std::task::Poll::Pending }
    })
    .await;
    out.extend(done.into_iter().flatten());
    out
}
