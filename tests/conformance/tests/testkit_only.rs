//! Cases only klife-testkit's fake cluster can serve here (neither Tansu nor the mock
//! cluster has read_committed filtering, transaction markers, TLS or SASL; Tansu has a
//! single broker; only the fake cluster lists the requests it served, for the cases
//! that count them): each starts a private fake cluster.
//!
//! read_committed is checked with raw Fetch requests.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use klife::{Client, OffsetSpec, ProducerRecord, SaslConfig, TlsConfig};
use klife_conformance::groups::{Log, Recorder};
use klife_connection::CoordinatorType;
use klife_producer::{Producer, ProducerConfig};
use klife_protocol::messages::add_partitions_to_txn_request::AddPartitionsToTxnTopic;
use klife_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use klife_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use klife_protocol::messages::{
    AddPartitionsToTxnRequest, EndTxnRequest, FetchRequest, InitProducerIdRequest, ProduceRequest,
};
use klife_protocol::records::{BatchOptions, RecordBatchWriter, RecordBatches};
use klife_protocol::{ApiKey, ErrorCode};
use klife_testkit::{FakeCluster, SaslMechanism, TestCertificates, TxnStatus};

async fn client(cluster: &FakeCluster) -> Client {
    Client::builder()
        .bootstrap_servers(cluster.addresses())
        .request_timeout(Duration::from_secs(5))
        .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(100))
        .build()
        .await
        .unwrap()
}

fn config() -> ProducerConfig {
    let mut c = ProducerConfig::default();
    c.linger = Duration::from_millis(5);
    c
}

/// One transaction written with raw requests: InitProducerId, AddPartitionsToTxn,
/// one transactional batch per value list, EndTxn.
async fn raw_transaction(client: &Client, tid: &str, topic: &str, values: &[&str], commit: bool) -> i64 {
    let cluster = client.cluster();
    let coordinator = cluster.coordinator(CoordinatorType::Transaction, tid).await.unwrap().connection;
    let init = coordinator
        .send(
            &InitProducerIdRequest::default()
                .with_transactional_id(Some(tid.into()))
                .with_transaction_timeout_ms(30_000),
        )
        .await
        .unwrap();
    assert_eq!(init.error_code, 0);
    let add = AddPartitionsToTxnRequest::default()
        .with_v3_and_below_transactional_id(tid.into())
        .with_v3_and_below_producer_id(init.producer_id)
        .with_v3_and_below_producer_epoch(init.producer_epoch)
        .with_v3_and_below_topics(vec![
            AddPartitionsToTxnTopic::default().with_name(topic.into()).with_partitions(vec![0]),
        ]);
    let version = coordinator.version_for(ApiKey::AddPartitionsToTxn, Some(3)).unwrap();
    let resp = coordinator.send_version(&add, version).await.unwrap();
    assert_eq!(resp.results_by_topic_v3_and_below[0].results_by_partition[0].partition_error_code, 0);
    let mut w = RecordBatchWriter::new(BatchOptions {
        producer_id: init.producer_id,
        producer_epoch: init.producer_epoch,
        base_sequence: 0,
        transactional: true,
        ..BatchOptions::default()
    });
    for v in values {
        w.append(1_700_000_000_000, None, Some(v.as_bytes())).unwrap();
    }
    let leader = cluster.leader(topic, 0).await.unwrap().connection;
    let produce = ProduceRequest::default()
        .with_transactional_id(Some(tid.into()))
        .with_acks(-1)
        .with_timeout_ms(5_000)
        .with_topic_data(vec![TopicProduceData::default().with_name(topic.into()).with_partition_data(vec![
            PartitionProduceData::default().with_index(0).with_records(Some(w.finish().unwrap())),
        ])]);
    let resp = leader.send(&produce).await.unwrap();
    assert_eq!(resp.responses[0].partition_responses[0].error_code, 0);
    let end = EndTxnRequest::default()
        .with_transactional_id(tid.into())
        .with_producer_id(init.producer_id)
        .with_producer_epoch(init.producer_epoch)
        .with_committed(commit);
    assert_eq!(coordinator.send(&end).await.unwrap().error_code, 0);
    init.producer_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_committed_fetches_list_aborted_transactions_and_stop_at_the_lso() {
    let fake = FakeCluster::builder().brokers(3).topic("rc", 1).start().await.unwrap();
    let client = client(&fake).await;
    client.produce(ProducerRecord::new("rc", "plain-0").with_partition(0)).await.unwrap();
    let committed = raw_transaction(&client, "rc-a", "rc", &["c-0", "c-1"], true).await;
    let aborted = raw_transaction(&client, "rc-b", "rc", &["a-0", "a-1", "a-2"], false).await;
    client.produce(ProducerRecord::new("rc", "plain-1").with_partition(0)).await.unwrap();

    let leader = client.cluster().leader("rc", 0).await.unwrap().connection;
    let version = leader.version_for(ApiKey::Fetch, Some(12)).unwrap();
    let fetch = |isolation: i8| {
        FetchRequest::default()
            .with_max_wait_ms(0)
            .with_min_bytes(1)
            .with_max_bytes(1 << 20)
            .with_isolation_level(isolation)
            .with_topics(vec![FetchTopic::default().with_topic("rc".into()).with_partitions(vec![
                FetchPartition::default().with_partition(0).with_fetch_offset(0).with_partition_max_bytes(1 << 20),
            ])])
    };
    let resp = leader.send_version(&fetch(1), version).await.unwrap();
    let p = &resp.responses[0].partitions[0];
    // plain-0 | c-0 c-1 COMMIT | a-0 a-1 a-2 ABORT | plain-1
    assert_eq!((p.high_watermark, p.last_stable_offset), (9, 9));
    let list = p.aborted_transactions.clone().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!((list[0].producer_id, list[0].first_offset), (aborted, 4));
    // What a read_committed consumer keeps: data records not in an aborted range.
    let mut kept = Vec::new();
    for raw in RecordBatches::new(p.records.clone().unwrap()) {
        let batch = raw.unwrap().decode().unwrap();
        let dropped = batch.is_control()
            || (batch.is_transactional()
                && list.iter().any(|a| a.producer_id == batch.producer_id() && batch.base_offset() >= a.first_offset));
        if !dropped {
            kept.extend(batch.iter().map(|r| String::from_utf8(r.value().unwrap().to_vec()).unwrap()));
        }
    }
    assert_eq!(kept, vec!["plain-0", "c-0", "c-1", "plain-1"]);
    // read_uncommitted: everything, no list.
    let resp = leader.send_version(&fetch(0), version).await.unwrap();
    assert!(resp.responses[0].partitions[0].aborted_transactions.is_none());
    let statuses: Vec<(String, TxnStatus)> =
        fake.records("rc").into_iter().map(|r| (r.value_str(), r.status)).collect();
    assert_eq!(statuses.iter().filter(|s| s.1 == TxnStatus::Aborted).count(), 3);
    assert_eq!(
        fake.markers("rc", 0).iter().map(|m| (m.producer_id, m.commit)).collect::<Vec<_>>(),
        vec![(committed, true), (aborted, false)]
    );
    // ListOffsets "latest" for read_committed is the LSO; with no open transaction, the HW.
    let latest = client.list_offsets([(("rc", 0).into(), OffsetSpec::Latest)]).await.unwrap();
    assert_eq!(latest[0].offset().unwrap(), 9);
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_logs_in_with_every_sasl_mechanism_over_tls() {
    let certs = TestCertificates::localhost().unwrap();
    let fake = FakeCluster::builder()
        .brokers(2)
        .tls(certs.identity().unwrap())
        .sasl_user("alice", "alice-secret")
        .start()
        .await
        .unwrap();
    assert_eq!(fake.security_protocol(), "SASL_SSL");
    let connect = |sasl: SaslConfig| {
        Client::builder()
            .bootstrap_servers(fake.addresses())
            .connect_timeout(Duration::from_secs(5))
            .tls(TlsConfig::new().with_root_certificates_pem(certs.ca_pem()))
            .sasl(sasl)
            .build()
    };
    for (i, sasl) in [
        SaslConfig::scram_sha512("alice", "alice-secret"),
        SaslConfig::scram_sha256("alice", "alice-secret"),
        SaslConfig::plain("alice", "alice-secret"),
    ]
    .into_iter()
    .enumerate()
    {
        let mechanism = sasl.mechanism();
        let client = connect(sasl).await.unwrap_or_else(|e| panic!("{mechanism}: {e}"));
        let topic = format!("secure-{i}");
        client.create_topic(&topic, 2).await.unwrap();
        let meta = client.produce(ProducerRecord::new(topic.clone(), mechanism).with_partition(1)).await.unwrap();
        assert_eq!(meta.offset, 0);
        assert_eq!(fake.records(&topic)[0].value_str(), mechanism);
        client.close().await;
    }
    let err = connect(SaslConfig::scram_sha512("alice", "wrong")).await.unwrap_err();
    assert!(err.is_authentication() && !err.is_retriable(), "{err}");
    assert!(err.to_string().contains("SASL_AUTHENTICATION_FAILED"), "{err}");
    let err = connect(SaslConfig::scram_sha512("mallory", "alice-secret")).await.unwrap_err();
    assert!(err.is_authentication(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_offered_mechanisms_are_accepted_on_plaintext_sasl() {
    let fake = FakeCluster::builder()
        .sasl_user("bob", "pw")
        .sasl_mechanisms(&[SaslMechanism::ScramSha256])
        .start()
        .await
        .unwrap();
    let connect = |sasl: SaslConfig| {
        Client::builder().bootstrap_servers(fake.addresses()).connect_timeout(Duration::from_secs(5)).sasl(sasl).build()
    };
    connect(SaslConfig::scram_sha256("bob", "pw")).await.unwrap().close().await;
    let err = connect(SaslConfig::plain("bob", "pw")).await.unwrap_err();
    assert!(err.is_authentication() && err.to_string().contains("SCRAM-SHA-256"), "{err}");
}

/// Every acknowledged record is in the log once, in send order per partition, at its
/// acknowledged offset.
fn verify(fake: &FakeCluster, topic: &str, acked: &[(i32, i64, Bytes)]) {
    let log = fake.records(topic);
    let mut per_value: BTreeMap<Bytes, Vec<(i32, i64)>> = BTreeMap::new();
    for r in &log {
        per_value.entry(r.value.clone().unwrap()).or_default().push((r.partition, r.offset));
    }
    for (partition, offset, value) in acked {
        assert_eq!(per_value.get(value), Some(&vec![(*partition, *offset)]), "{value:?}");
    }
    assert_eq!(log.len(), acked.len(), "the log holds records nobody acknowledged");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_producer_follows_leader_moves_and_brokers_going_down() {
    let fake = FakeCluster::builder().brokers(3).topic("moves", 3).start().await.unwrap();
    let client = client(&fake).await;
    let producer = Producer::new(client.cluster().clone(), config()).await.unwrap();
    let mut acked = Vec::new();
    for round in 0..4 {
        match round {
            1 => {
                for p in 0..3 {
                    fake.move_leader("moves", p).unwrap();
                }
            }
            2 => fake.broker_down(fake.leader("moves", 0).unwrap().0).unwrap(),
            3 => {
                for id in fake.broker_ids() {
                    fake.broker_up(id).await.unwrap();
                }
            }
            _ => {}
        }
        let records: Vec<ProducerRecord> = (0..30)
            .map(|i| ProducerRecord::new("moves", Bytes::from(format!("r{round}-{i}"))).with_partition(i % 3))
            .collect();
        for (r, sent) in producer.produce_batch(records.clone()).await.into_iter().zip(records) {
            let m = r.unwrap_or_else(|e| panic!("round {round}: {e}"));
            acked.push((m.partition, m.offset, sent.value.clone().unwrap()));
        }
    }
    producer.close().await;
    verify(&fake, "moves", &acked);
    // The moves were noticed: some Produce requests went to a broker that no longer led.
    assert!(fake.requests().iter().filter(|r| r.api_key == ApiKey::Produce).count() > 4);
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_answers_and_injected_errors_are_retried_without_duplicates() {
    let fake = FakeCluster::builder().brokers(2).topic("retry", 2).start().await.unwrap();
    let client = client(&fake).await;
    let producer = Producer::new(client.cluster().clone(), config()).await.unwrap();
    // Retriable errors, then success: 3 Produce requests for one record.
    fake.inject_errors(ApiKey::Produce, &[ErrorCode::NotEnoughReplicas, ErrorCode::RequestTimedOut], None);
    fake.clear_requests();
    let first = producer.produce(ProducerRecord::new("retry", "first").with_partition(0)).await.unwrap();
    assert_eq!(first.offset, 0);
    assert_eq!(fake.request_count(ApiKey::Produce), 3);
    // The broker writes the batch but the answer is lost: the retry is a duplicate,
    // answered with the original offset, and the record is in the log once.
    fake.inject_lost_answer(ApiKey::Produce, None);
    let second = producer.produce(ProducerRecord::new("retry", "second").with_partition(0)).await.unwrap();
    assert_eq!(second.offset, 1);
    // A fatal error fails the record alone.
    fake.inject_errors(ApiKey::Produce, &[ErrorCode::TopicAuthorizationFailed], None);
    let err = producer.produce(ProducerRecord::new("retry", "refused").with_partition(0)).await.unwrap_err();
    assert_eq!(err.error_code(), Some(ErrorCode::TopicAuthorizationFailed), "{err}");
    let third = producer.produce(ProducerRecord::new("retry", "third").with_partition(0)).await.unwrap();
    assert_eq!(third.offset, 2);
    producer.close().await;
    let values: Vec<String> = fake.records("retry").iter().map(|r| r.value_str()).collect();
    assert_eq!(values, vec!["first", "second", "third"]);
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_produce_request_per_broker_carries_all_its_partitions() {
    let fake = FakeCluster::builder().brokers(3).topic("batching", 6).start().await.unwrap();
    let client = client(&fake).await;
    let mut c = config();
    // Nothing is sent before `flush`, however slowly the records are queued: batches
    // are sent when they are full (they are not) or flushed.
    c.linger = Duration::from_secs(3600);
    let producer = Producer::new(client.cluster().clone(), c).await.unwrap();
    fake.clear_requests();
    let records: Vec<ProducerRecord> =
        (0..60).map(|i| ProducerRecord::new("batching", format!("v{i}")).with_partition(i % 6)).collect();
    let deliveries: Vec<_> = producer.produce_batch_async(records).await.into_iter().map(Result::unwrap).collect();
    producer.flush().await;
    for d in deliveries {
        d.await.unwrap();
    }
    let produces: Vec<_> = fake.requests().into_iter().filter(|r| r.api_key == ApiKey::Produce).collect();
    let mut leaders: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
    for p in 0..6 {
        leaders.entry(fake.leader("batching", p).unwrap().0).or_default().push(p);
    }
    assert_eq!(produces.len(), leaders.len(), "one Produce request per broker: {produces:?}");
    for r in &produces {
        let mut partitions: Vec<i32> = r.partitions.iter().map(|(_, p)| *p).collect();
        partitions.sort_unstable();
        assert_eq!(Some(&partitions), leaders.get(&r.broker), "broker {} got {partitions:?}", r.broker);
    }
    producer.close().await;
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offsets_by_timestamp_are_looked_up() {
    let fake = FakeCluster::builder().topic("times", 1).start().await.unwrap();
    let client = client(&fake).await;
    for i in 0..10 {
        let r =
            ProducerRecord::new("times", format!("v{i}")).with_partition(0).with_timestamp(1_700_000_000_000 + i * 10);
        client.produce(r).await.unwrap();
    }
    let found = client
        .list_offsets([
            (("times", 0).into(), OffsetSpec::Timestamp(1_700_000_000_045)),
            (("times", 0).into(), OffsetSpec::Timestamp(1_700_000_000_000)),
            (("times", 0).into(), OffsetSpec::Timestamp(1_800_000_000_000)),
        ])
        .await
        .unwrap();
    let offsets: Vec<i64> = found.iter().map(|f| f.offset().unwrap()).collect();
    assert_eq!(offsets, vec![5, 0, -1]);
    fake.truncate_before("times", 0, 4).unwrap();
    let earliest = client.list_offsets([(("times", 0).into(), OffsetSpec::Earliest)]).await.unwrap();
    assert_eq!(earliest[0].offset().unwrap(), 4);
    client.close().await;
}

/// The default partitioner's keyless records (KIP-480, kept by the producer as in
/// KIP-794): one partition takes the records until its batch is full, and the record
/// that would start a new batch there goes to another partition. In send order, the
/// records therefore come in runs of one full batch each, never two runs in a row on
/// one partition.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyless_records_fill_one_batch_then_move_to_another_partition() {
    let cluster = FakeCluster::builder().topic("s", 4).start().await.unwrap();
    let client = client(&cluster).await;
    let mut config = config();
    // Batches leave only when full (or at the final flush).
    config.linger = Duration::from_secs(30);
    config.batch_size = 1000;
    let producer = Producer::new(client.cluster().clone(), config).await.unwrap();
    let topic: std::sync::Arc<str> = "s".into();
    let mut deliveries = Vec::new();
    for i in 0..200u32 {
        // Same timestamp and value size: every record takes the same room in a batch.
        let value = format!("{i:090}");
        let record = ProducerRecord::new(topic.clone(), value).with_timestamp(1_700_000_000_000);
        deliveries.push(producer.produce_async(record).await.unwrap());
    }
    producer.flush().await;
    let mut partition_of = Vec::new();
    for d in deliveries {
        partition_of.push(d.await.unwrap().partition);
    }
    let mut runs: Vec<(i32, usize)> = Vec::new();
    for p in partition_of {
        match runs.last_mut() {
            Some((last, n)) if *last == p => *n += 1,
            _ => runs.push((p, 1)),
        }
    }
    let full = runs[0].1;
    assert!(full > 1 && runs.len() > 4, "runs: {runs:?}");
    // Every run but the last is one full batch.
    assert!(runs[..runs.len() - 1].iter().all(|(_, n)| *n == full), "runs: {runs:?}");
    // What the log holds agrees: each partition's batches are full but its last.
    for p in 0..4 {
        let mut batches: BTreeMap<i64, usize> = BTreeMap::new();
        for r in cluster.partition_records("s", p) {
            *batches.entry(r.batch_base_offset).or_default() += 1;
        }
        let sizes: Vec<usize> = batches.into_values().collect();
        assert!(sizes.iter().rev().skip(1).all(|n| *n == full), "partition {p}: batches of {sizes:?}");
    }
    producer.close().await;
    client.close().await;
}

/// Runs `work` on a current-thread runtime with a recorder of its own (a local recorder
/// around the runtime, so that every task of the test records into it), and returns
/// what it recorded.
fn metrics_of(work: impl Future<Output = ()>) -> klife_testkit::metrics::CapturedMetrics {
    let captured = klife_testkit::metrics::CapturedMetrics::default();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    metrics::with_local_recorder(&captured, || rt.block_on(work));
    captured
}

/// The producer's metrics (`klife_producer::telemetry`).
#[test]
fn the_producer_records_its_metrics() {
    use klife_producer::telemetry::*;
    let captured = metrics_of(async {
        let fake = FakeCluster::builder().brokers(1).topic("m", 3).start().await.unwrap();
        let client = client(&fake).await;
        let mut c = config();
        c.linger = Duration::from_millis(50);
        let producer = Producer::new(client.cluster().clone(), c).await.unwrap();
        // 30 records over 3 partitions in one request; the first attempt is refused.
        fake.inject_errors(ApiKey::Produce, &[ErrorCode::NotEnoughReplicas], None);
        let records: Vec<ProducerRecord> =
            (0..30).map(|i| ProducerRecord::new("m", format!("v{i}")).with_partition(i % 3)).collect();
        for r in producer.produce_batch(records).await {
            r.unwrap();
        }
        // A record the broker refuses for good.
        fake.inject_errors(ApiKey::Produce, &[ErrorCode::TopicAuthorizationFailed], None);
        producer.produce(ProducerRecord::new("m", "refused").with_partition(0)).await.unwrap_err();
        producer.close().await;
        // A buffer too small for its record: refused by try_produce.
        let mut small = config();
        small.buffer_memory = 64;
        let tiny = Producer::new(client.cluster().clone(), small).await.unwrap();
        let big = ProducerRecord::new("m", vec![0u8; 256]).with_partition(0);
        assert!(tiny.try_produce(big).await.is_err());
        tiny.close().await;
        client.close().await;
    });
    assert_eq!(captured.counter(&format!("{PRODUCE_RECORDS_TOTAL}{{outcome=ok}}")), 30);
    assert_eq!(captured.counter(&format!("{PRODUCE_RECORDS_TOTAL}{{outcome=error}}")), 1);
    // The three batches of the refused request are each retried once.
    assert_eq!(captured.counter(&format!("{PRODUCE_BATCH_RETRIES_TOTAL}{{error=NOT_ENOUGH_REPLICAS}}")), 3);
    // Refused, retried, then the failing record's: three answered requests.
    assert_eq!(captured.counter(&format!("{PRODUCE_REQUESTS_TOTAL}{{outcome=ok}}")), 3);
    assert_eq!(captured.histogram(PRODUCE_BATCHES_PER_REQUEST), vec![3.0, 3.0, 1.0]);
    assert_eq!(captured.histogram(PRODUCE_BATCH_RECORDS), vec![10.0, 10.0, 10.0, 10.0, 10.0, 10.0, 1.0]);
    assert_eq!(captured.histogram(PRODUCE_BATCH_BYTES).len(), 7);
    assert!(captured.histogram(PRODUCE_BATCH_BYTES).iter().all(|b| *b > 61.0), "a batch is more than its header");
    assert_eq!(captured.histogram(PRODUCE_REQUEST_DURATION_SECONDS).len(), 3);
    assert_eq!(captured.counter(&format!("{PRODUCE_BUFFER_FULL_TOTAL}{{action=refused}}")), 1);
    assert_eq!(captured.counter(PRODUCE_PRODUCER_ID_RESETS_TOTAL), 0);
}

/// A batch over the topic's `max.message.bytes` is split (and counted so) until its
/// pieces fit; a record too large by itself fails alone.
#[test]
fn a_batch_too_large_for_the_broker_is_split() {
    use klife_producer::telemetry::*;
    let captured = metrics_of(async {
        let fake = FakeCluster::builder().brokers(1).max_message_bytes(600).topic("s", 1).start().await.unwrap();
        let client = client(&fake).await;
        let mut c = config();
        c.linger = Duration::from_millis(50);
        let producer = Producer::new(client.cluster().clone(), c).await.unwrap();
        // Eight records of 100 B make a batch of about 950 bytes: two halves of four fit.
        let records: Vec<ProducerRecord> =
            (0..8).map(|i| ProducerRecord::new("s", format!("{i:0>100}")).with_partition(0)).collect();
        let offsets: Vec<i64> = producer.produce_batch(records).await.into_iter().map(|r| r.unwrap().offset).collect();
        assert_eq!(offsets, (0..8).collect::<Vec<_>>());
        let err = producer.produce(ProducerRecord::new("s", vec![b'x'; 1_000]).with_partition(0)).await.unwrap_err();
        assert_eq!(err.error_code(), Some(ErrorCode::MessageTooLarge), "{err}");
        assert!(err.to_string().contains("max.message.bytes"), "{err}");
        producer.close().await;
        client.close().await;
    });
    assert_eq!(captured.counter(PRODUCE_BATCH_SPLITS_TOTAL), 1);
    assert_eq!(captured.counter(&format!("{PRODUCE_BATCH_RETRIES_TOTAL}{{error=MESSAGE_TOO_LARGE}}")), 2);
    assert_eq!(captured.histogram(PRODUCE_BATCH_RECORDS), vec![8.0, 4.0, 4.0, 1.0]);
    assert_eq!(captured.counter(&format!("{PRODUCE_RECORDS_TOTAL}{{outcome=ok}}")), 8);
    assert_eq!(captured.counter(&format!("{PRODUCE_RECORDS_TOTAL}{{outcome=error}}")), 1);
    assert_eq!(captured.counter(PRODUCE_PRODUCER_ID_RESETS_TOTAL), 0);
}

/// A member that starts on partitions with no committed offset looks their reset
/// positions up together: one ListOffsets per broker leading some of them, not one per
/// partition, and every partition starts at its first record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_group_looks_up_where_its_new_partitions_start_in_one_request_per_leader() {
    use klife::group::{ResetPolicy, TopicConfig};
    let fake = FakeCluster::builder().brokers(3).topic("starts", 8).start().await.unwrap();
    let client = client(&fake).await;
    for p in 0..8 {
        for i in 0..2 {
            client.produce(ProducerRecord::new("starts", format!("v{p}-{i}")).with_partition(p)).await.unwrap();
        }
    }
    fake.clear_requests();
    let log = Log::default();
    let group = client
        .consumer_group("starts-group")
        .topic(TopicConfig::new("starts").offset_reset(ResetPolicy::Earliest))
        .handler(Recorder { member: 0, log: log.clone() })
        .start()
        .await
        .unwrap();
    log.until("every record", |s| s.handled.len() >= 16).await;
    group.shutdown().await.unwrap();
    let handled: Vec<(i32, i64)> = log.read(|s| s.handled.keys().copied().collect());
    let all: Vec<(i32, i64)> = (0..8).flat_map(|p| [(p, 0), (p, 1)]).collect();
    assert_eq!(handled, all, "every partition from its first record");
    let leaders: BTreeSet<i32> = (0..8).map(|p| fake.leader("starts", p).unwrap().0).collect();
    let lookups: Vec<_> = fake.requests().into_iter().filter(|r| r.api_key == ApiKey::ListOffsets).collect();
    assert_eq!(lookups.len(), leaders.len(), "one ListOffsets per leader: {lookups:?}");
    client.close().await;
}
