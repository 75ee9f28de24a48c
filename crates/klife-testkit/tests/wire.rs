//! The fake cluster driven with raw frames through klife-protocol: produce and fetch,
//! idempotence, leader moves, faults, long polls, bad input, admin APIs.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{HANG_GUARD, Raw, batch, batches, fetch_request, metadata_request, produce, produce_request};
use klife_protocol::messages::create_partitions_request::CreatePartitionsTopic;
use klife_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use klife_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use klife_protocol::messages::{
    ApiVersionsRequest, ApiVersionsResponse, CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest,
    InitProducerIdRequest, ListOffsetsRequest, MetadataRequest,
};
use klife_protocol::records::BatchOptions;
use klife_protocol::{ApiKey, ErrorCode, frame};
use klife_testkit::{FakeCluster, TxnStatus};

async fn cluster(brokers: usize) -> FakeCluster {
    FakeCluster::builder().brokers(brokers).topic("t", 6).auto_create_topics(false, 1).start().await.unwrap()
}

#[tokio::test]
async fn produce_then_fetch_round_trips_the_producers_bytes() {
    let cluster = cluster(3).await;
    let first = batch(&["a", "b", "c"], BatchOptions::default());
    let p = produce(&cluster, "t", 4, first.clone()).await;
    assert_eq!((p.error_code, p.base_offset), (0, 0));
    let p = produce(&cluster, "t", 4, batch(&["d"], BatchOptions::default())).await;
    assert_eq!((p.error_code, p.base_offset, p.log_start_offset), (0, 3, 0));

    let (leader, epoch) = cluster.leader("t", 4).unwrap();
    let mut c = Raw::connect(&cluster.broker_address(leader).unwrap()).await;
    let resp = c.send(&fetch_request("t", 4, 0, 0), 12).await;
    let part = &resp.responses[0].partitions[0];
    assert_eq!((part.error_code, part.high_watermark, part.last_stable_offset, part.log_start_offset), (0, 4, 4, 0));
    assert_eq!(part.aborted_transactions, None, "read_uncommitted has no aborted list");
    // The first batch comes back byte for byte, but for the broker's offset and epoch.
    let records = part.records.clone().unwrap();
    assert_eq!(&records[16..first.len()], &first[16..]);
    assert_eq!(i32::from_be_bytes(records[12..16].try_into().unwrap()), epoch);
    let got = batches(Some(records));
    assert_eq!(got.len(), 2);
    assert_eq!(got[1].base_offset(), 3);
    // Fetching from the middle of a batch returns the whole batch.
    let resp = c.send(&fetch_request("t", 4, 1, 0), 12).await;
    assert_eq!(batches(resp.responses[0].partitions[0].records.clone())[0].base_offset(), 0);
    // Past the high watermark: OFFSET_OUT_OF_RANGE; at it: nothing.
    let resp = c.send(&fetch_request("t", 4, 5, 0), 12).await;
    assert_eq!(resp.responses[0].partitions[0].error_code, ErrorCode::OffsetOutOfRange.code());
    let resp = c.send(&fetch_request("t", 4, 4, 0), 12).await;
    assert!(resp.responses[0].partitions[0].records.as_ref().unwrap().is_empty());

    let stored = cluster.records("t");
    assert_eq!(stored.iter().map(|r| r.value_str()).collect::<Vec<_>>(), vec!["a", "b", "c", "d"]);
    assert!(stored.iter().all(|r| r.partition == 4 && r.status == TxnStatus::NotTransactional));
    assert_eq!(cluster.records_with_key("t", b"k1").len(), 1);
    assert_eq!(cluster.records_with_value("t", b"d")[0].offset, 3);
}

#[tokio::test]
async fn fetch_by_topic_id_and_size_limits() {
    let cluster = cluster(1).await;
    for _ in 0..5 {
        produce(&cluster, "t", 0, batch(&["x"; 20], BatchOptions::default())).await;
    }
    let mut c = Raw::connect(&cluster.addresses()[0]).await;
    let meta = c.send(&metadata_request(&["t"]), 12).await;
    let id = meta.topics[0].topic_id;
    let mut req = fetch_request("", 0, 0, 0);
    req.topics[0].topic_id = id;
    req.topics[0].partitions[0].partition_max_bytes = 300;
    let resp = c.send(&req, 13).await;
    assert_eq!(resp.responses[0].topic_id, id);
    let records = resp.responses[0].partitions[0].records.clone().unwrap();
    assert_eq!(records.len(), 300, "the answer is cut at the partition limit");
    assert_eq!(batches(Some(records)).len(), 1, "one whole batch and a cut one");
    // A limit below one batch still returns the first batch whole.
    req.topics[0].partitions[0].partition_max_bytes = 10;
    let resp = c.send(&req, 13).await;
    assert!(resp.responses[0].partitions[0].records.as_ref().unwrap().len() > 10);
    let mut unknown = req.clone();
    unknown.topics[0].topic_id = klife_protocol::Uuid([7; 16]);
    let resp = c.send(&unknown, 13).await;
    assert_eq!(resp.responses[0].partitions[0].error_code, ErrorCode::UnknownTopicId.code());
}

#[tokio::test]
async fn idempotent_retries_get_their_offset_and_gaps_are_refused() {
    let cluster = cluster(1).await;
    let mut c = Raw::connect(&cluster.addresses()[0]).await;
    let init = c.send(&InitProducerIdRequest::default().with_transaction_timeout_ms(60_000), 4).await;
    let (pid, epoch) = (init.producer_id, init.producer_epoch);
    assert!(pid >= 0 && epoch == 0);
    let opts =
        |seq| BatchOptions { producer_id: pid, producer_epoch: 0, base_sequence: seq, ..BatchOptions::default() };
    let first = batch(&["a", "b"], opts(0));
    assert_eq!(produce(&cluster, "t", 0, first.clone()).await.base_offset, 0);
    assert_eq!(produce(&cluster, "t", 0, batch(&["c"], opts(2))).await.base_offset, 2);
    // The retry of the first batch: success with its original offset, nothing written.
    let retry = produce(&cluster, "t", 0, first).await;
    assert_eq!((retry.error_code, retry.base_offset), (0, 0));
    assert_eq!(cluster.records("t").len(), 3);
    let gap = produce(&cluster, "t", 0, batch(&["e"], opts(7))).await;
    assert_eq!(gap.error_code, ErrorCode::OutOfOrderSequenceNumber.code());
    assert!(gap.error_message.unwrap().contains("out of order"));
    let stale = produce(&cluster, "t", 0, batch(&["f"], BatchOptions { producer_epoch: -1, ..opts(3) })).await;
    assert_eq!(stale.error_code, ErrorCode::InvalidProducerEpoch.code());
    // A lost answer: the batch is written, the connection closes; the retry gets the
    // original offset.
    cluster.inject_lost_answer(ApiKey::Produce, None);
    let lost = batch(&["h"], opts(3));
    let mut c = Raw::connect(&cluster.addresses()[0]).await;
    c.send_only(&produce_request("t", 0, lost.clone(), -1), 11).await;
    assert!(c.is_closed().await);
    assert_eq!(produce(&cluster, "t", 0, lost).await.base_offset, 3);
    let unknown = produce(&cluster, "t", 0, batch(&["g"], BatchOptions { producer_id: 424_242, ..opts(0) })).await;
    assert_eq!(unknown.error_code, ErrorCode::UnknownProducerId.code());
    let r = cluster.records("t");
    assert_eq!(r.len(), 4);
    assert_eq!((r[2].producer_id, r[2].sequence), (pid, 2));
}

#[tokio::test]
async fn bad_batches_are_refused_per_partition() {
    let cluster = FakeCluster::builder().topic("t", 2).max_message_bytes(500).start().await.unwrap();
    let mut corrupt = batch(&["a"], BatchOptions::default()).to_vec();
    let last = corrupt.len() - 1;
    corrupt[last] ^= 0xff;
    assert_eq!(produce(&cluster, "t", 0, corrupt.into()).await.error_code, ErrorCode::CorruptMessage.code());
    let big = batch(&[&"x".repeat(600)], BatchOptions::default());
    assert_eq!(produce(&cluster, "t", 0, big).await.error_code, ErrorCode::MessageTooLarge.code());
    let offset = batch(&["a"], BatchOptions { base_offset: 5, ..BatchOptions::default() });
    assert_eq!(produce(&cluster, "t", 0, offset).await.error_code, ErrorCode::InvalidRecord.code());
    let mut two = batch(&["a"], BatchOptions::default()).to_vec();
    two.extend_from_slice(&batch(&["b"], BatchOptions::default()));
    assert_eq!(produce(&cluster, "t", 0, two.into()).await.error_code, ErrorCode::InvalidRecord.code());
    let mut c = Raw::connect(&cluster.addresses()[0]).await;
    let resp = c.send(&produce_request("nope", 0, batch(&["a"], BatchOptions::default()), -1), 9).await;
    assert_eq!(resp.responses[0].partition_responses[0].error_code, ErrorCode::UnknownTopicOrPartition.code());
    assert!(cluster.records("t").is_empty());
    // A transactional batch outside a transaction.
    let init = c.send(&InitProducerIdRequest::default().with_transaction_timeout_ms(60_000), 4).await;
    let txn = batch(
        &["t"],
        BatchOptions {
            producer_id: init.producer_id,
            producer_epoch: 0,
            base_sequence: 0,
            transactional: true,
            ..BatchOptions::default()
        },
    );
    let mut req = produce_request("t", 1, txn, -1);
    // Without a transactional id, Kafka refuses the whole request.
    let resp = c.send(&req, 9).await;
    assert_eq!(
        resp.responses[0].partition_responses[0].error_code,
        ErrorCode::TransactionalIdAuthorizationFailed.code()
    );
    req.transactional_id = Some("nobody".into());
    let resp = c.send(&req, 9).await;
    assert_eq!(resp.responses[0].partition_responses[0].error_code, ErrorCode::InvalidTxnState.code());
}

#[tokio::test]
async fn acks_zero_gets_no_answer() {
    let cluster = cluster(1).await;
    let mut c = Raw::connect(&cluster.addresses()[0]).await;
    c.send_only(&produce_request("t", 0, batch(&["quiet"], BatchOptions::default()), 0), 9).await;
    // The next answer on the connection is the metadata's.
    let meta = c.send(&MetadataRequest::default().with_topics(Some(Vec::new())), 12).await;
    assert_eq!(meta.brokers.len(), 1);
    assert_eq!(cluster.records("t").len(), 1);
    // An error with acks = 0 closes the connection.
    c.send_only(&produce_request("nope", 0, batch(&["x"], BatchOptions::default()), 0), 9).await;
    assert!(c.is_closed().await);
}

#[tokio::test]
async fn leader_moves_fence_the_old_leader_and_epoch() {
    let cluster = cluster(3).await;
    let (old, epoch) = cluster.leader("t", 0).unwrap();
    let new = cluster.move_leader("t", 0).unwrap();
    assert_ne!(old, new);
    assert_eq!(cluster.leader("t", 0).unwrap(), (new, epoch + 1));
    let mut c = Raw::connect(&cluster.broker_address(old).unwrap()).await;
    let resp = c.send(&produce_request("t", 0, batch(&["a"], BatchOptions::default()), -1), 11).await;
    let p = &resp.responses[0].partition_responses[0];
    assert_eq!(p.error_code, ErrorCode::NotLeaderOrFollower.code());
    assert_eq!((p.current_leader.leader_id, p.current_leader.leader_epoch), (new, epoch + 1));
    assert_eq!(resp.node_endpoints.len(), 1);
    // Metadata says where it went.
    let meta = c.send(&metadata_request(&["t"]), 12).await;
    let m = &meta.topics[0].partitions[0];
    assert_eq!((m.leader_id, m.leader_epoch), (new, epoch + 1));
    // A fetch naming the old epoch is fenced at the new leader.
    let mut c = Raw::connect(&cluster.broker_address(new).unwrap()).await;
    let mut req = fetch_request("t", 0, 0, 0);
    req.topics[0].partitions[0].current_leader_epoch = epoch;
    let resp = c.send(&req, 12).await;
    assert_eq!(resp.responses[0].partitions[0].error_code, ErrorCode::FencedLeaderEpoch.code());
    req.topics[0].partitions[0].current_leader_epoch = epoch + 5;
    let resp = c.send(&req, 12).await;
    assert_eq!(resp.responses[0].partitions[0].error_code, ErrorCode::UnknownLeaderEpoch.code());
}

#[tokio::test]
async fn injected_errors_and_disconnects_hit_the_next_requests() {
    let cluster = cluster(2).await;
    let (leader, _) = cluster.leader("t", 1).unwrap();
    cluster.inject_errors(ApiKey::Produce, &[ErrorCode::NotEnoughReplicas, ErrorCode::RequestTimedOut], Some(leader));
    for code in [ErrorCode::NotEnoughReplicas, ErrorCode::RequestTimedOut, ErrorCode::None] {
        let p = produce(&cluster, "t", 1, batch(&["a"], BatchOptions::default())).await;
        assert_eq!(p.error_code, code.code());
    }
    assert_eq!(cluster.records("t").len(), 1, "the refused requests wrote nothing");
    cluster.inject_errors(ApiKey::Metadata, &[ErrorCode::TopicAuthorizationFailed], None);
    let mut c = Raw::connect(&cluster.addresses()[0]).await;
    let meta = c.send(&metadata_request(&["t"]), 12).await;
    assert_eq!(meta.topics[0].error_code, ErrorCode::TopicAuthorizationFailed.code());
    cluster.inject_disconnect(ApiKey::Metadata, None);
    c.send_only(&metadata_request(&["t"]), 12).await;
    assert!(c.is_closed().await);
    assert_eq!(cluster.pending_faults(), 0);
}

#[tokio::test]
async fn a_long_poll_wakes_when_records_arrive() {
    let cluster = cluster(1).await;
    let mut c = Raw::connect(&cluster.addresses()[0]).await;
    let mut req = fetch_request("t", 0, 0, 0);
    req.max_wait_ms = 120_000;
    let id = c.send_only(&req, 12).await;
    // Nothing yet: the fetch waits.
    assert!(tokio::time::timeout(Duration::from_millis(200), c.read_frame()).await.is_err());
    produce(&cluster, "t", 0, batch(&["wake"], BatchOptions::default())).await;
    let resp: klife_protocol::messages::FetchResponse =
        tokio::time::timeout(HANG_GUARD, c.receive(12, id)).await.expect("the fetch was not woken");
    assert_eq!(batches(resp.responses[0].partitions[0].records.clone()).len(), 1);
    // With a short wait and no data, the answer comes empty at the deadline.
    req.max_wait_ms = 50;
    req.topics[0].partitions[0].fetch_offset = 1;
    let resp = c.send(&req, 12).await;
    assert!(resp.responses[0].partitions[0].records.as_ref().unwrap().is_empty());
}

#[tokio::test]
async fn bad_frames_close_only_their_connection() {
    let cluster = FakeCluster::builder().max_frame_size(1 << 20).start().await.unwrap();
    let address = cluster.addresses()[0].clone();
    let mut healthy = Raw::connect(&address).await;
    healthy.send(&ApiVersionsRequest::default(), 0).await;
    // A size prefix over the limit.
    let mut c = Raw::connect(&address).await;
    c.write(&[0x10, 0, 0, 0, 1, 2, 3]).await;
    assert!(c.is_closed().await);
    // A negative size.
    let mut c = Raw::connect(&address).await;
    c.write(&[0xff, 0xff, 0xff, 0xf0]).await;
    assert!(c.is_closed().await);
    // An unknown api key.
    let mut c = Raw::connect(&address).await;
    c.write(&[0, 0, 0, 10, 0x7f, 0x00, 0, 0, 0, 0, 0, 1, 0xff, 0xff]).await;
    assert!(c.is_closed().await);
    // Garbage inside a well-sized Metadata frame.
    let mut c = Raw::connect(&address).await;
    c.write(&[0, 0, 0, 12, 0, 3, 0, 12, 0, 0, 0, 1, 0xff, 0xff, 0x99, 0x99]).await;
    assert!(c.is_closed().await);
    // A version this broker does not advertise (Produce v2), and an API it lacks.
    let mut c = Raw::connect(&address).await;
    c.send_only(&produce_request("t", 0, batch(&["a"], BatchOptions::default()), -1), 2).await;
    assert!(c.is_closed().await);
    let mut c = Raw::connect(&address).await;
    c.send_only(&klife_protocol::messages::DescribeAclsRequest::default(), 3).await;
    assert!(c.is_closed().await);
    // ApiVersions at an unknown version: v0 answer with UNSUPPORTED_VERSION.
    let mut c = Raw::connect(&address).await;
    let mut out = bytes::BytesMut::new();
    let header = klife_protocol::messages::RequestHeader::default()
        .with_request_api_key(ApiKey::ApiVersions.code())
        .with_request_api_version(99)
        .with_correlation_id(5)
        .with_client_id(Some("x".into()));
    klife_protocol::Message::encode(&header, &mut out, 1).unwrap();
    let mut framed = (out.len() as i32).to_be_bytes().to_vec();
    framed.extend_from_slice(&out);
    c.write(&framed).await;
    let f = c.read_frame().await.unwrap();
    let (h, r) = frame::decode_response::<ApiVersionsResponse>(f, 0).unwrap();
    assert_eq!((h.correlation_id, r.error_code), (5, ErrorCode::UnsupportedVersion.code()));
    assert_eq!(r.api_keys[0].api_key, ApiKey::ApiVersions.code());
    // The first connection did not notice any of it.
    let v = healthy.send(&ApiVersionsRequest::default().with_client_software_name("x".into()), 3).await;
    assert_eq!(v.error_code, 0);
    assert!(v.api_keys.iter().any(|k| k.api_key == ApiKey::Fetch.code() && k.max_version == 17));
}

#[tokio::test]
async fn brokers_go_down_and_come_back() {
    let cluster = cluster(3).await;
    let addresses = cluster.addresses();
    let led_by_1: Vec<i32> = (0..6).filter(|p| cluster.leader("t", *p).unwrap().0 == 1).collect();
    let mut kept = Raw::connect(&addresses[1]).await;
    kept.send(&ApiVersionsRequest::default(), 0).await;
    cluster.broker_down(1).unwrap();
    assert!(kept.is_closed().await, "connections of a down broker drop");
    assert!(tokio::net::TcpStream::connect(&addresses[1]).await.is_err(), "its port refuses connections");
    let mut c = Raw::connect(&addresses[0]).await;
    let meta = c.send(&metadata_request(&["t"]), 12).await;
    assert_eq!(meta.brokers.iter().map(|b| b.node_id).collect::<Vec<_>>(), vec![0, 2]);
    for p in &led_by_1 {
        let (leader, epoch) = cluster.leader("t", *p).unwrap();
        assert!(leader != 1 && epoch == 1, "partition {p} failed over");
    }
    cluster.broker_up(1).await.unwrap();
    let mut c = Raw::connect(&addresses[1]).await;
    let meta = c.send(&metadata_request(&["t"]), 12).await;
    assert_eq!(meta.brokers.len(), 3);
    cluster.set_latency(1, Duration::from_millis(20)).unwrap();
    c.send(&ApiVersionsRequest::default(), 0).await;
    cluster.drop_connections(Some(1));
    assert!(c.is_closed().await);
}

#[tokio::test]
async fn requests_are_counted_per_api_and_broker() {
    let cluster = cluster(3).await;
    for p in 0..6 {
        produce(&cluster, "t", p, batch(&["a"], BatchOptions::default())).await;
    }
    assert_eq!(cluster.request_count(ApiKey::Produce), 6);
    let per_broker: usize = cluster.broker_ids().iter().map(|b| cluster.request_count_on(ApiKey::Produce, *b)).sum();
    assert_eq!(per_broker, 6);
    let log = cluster.requests();
    assert!(log.iter().all(|r| r.client_id.as_deref() == Some("testkit-tests") && r.partitions.len() == 1));
    cluster.clear_requests();
    assert!(cluster.requests().is_empty());
}

#[tokio::test]
async fn list_offsets_and_truncation() {
    let cluster = cluster(1).await;
    for i in 0..4 {
        let mut w = klife_protocol::records::RecordBatchWriter::new(BatchOptions::default());
        w.append(1_000 + i * 10, None, Some(b"v")).unwrap();
        w.append(1_005 + i * 10, None, Some(b"v")).unwrap();
        produce(&cluster, "t", 0, w.finish().unwrap()).await;
    }
    let mut c = Raw::connect(&cluster.addresses()[0]).await;
    let ask = |ts: i64| {
        ListOffsetsRequest::default().with_replica_id(-1).with_topics(vec![
            ListOffsetsTopic::default()
                .with_name("t".into())
                .with_partitions(vec![ListOffsetsPartition::default().with_partition_index(0).with_timestamp(ts)]),
        ])
    };
    let mut answers = Vec::new();
    for ts in [-2, -1, -3, 1_011, 1_016, 5_000] {
        let r = c.send(&ask(ts), 8).await;
        let p = &r.topics[0].partitions[0];
        answers.push((p.error_code, p.offset, p.timestamp));
    }
    assert_eq!(answers, vec![(0, 0, -1), (0, 8, -1), (0, 7, 1_035), (0, 3, 1_015), (0, 4, 1_020), (0, -1, -1)]);
    assert_eq!(cluster.truncate_before("t", 0, 3).unwrap(), 3);
    let r = c.send(&ask(-2), 8).await;
    assert_eq!(r.topics[0].partitions[0].offset, 3);
    let resp = c.send(&fetch_request("t", 0, 0, 0), 12).await;
    assert_eq!(resp.responses[0].partitions[0].error_code, ErrorCode::OffsetOutOfRange.code());
    assert_eq!(cluster.partition_records("t", 0).first().map(|r| r.offset), Some(3));
}

#[tokio::test]
async fn topic_admin_follows_kafkas_rules() {
    let cluster = cluster(3).await;
    let mut c = Raw::connect(&cluster.addresses()[0]).await;
    let topic = |name: &str, partitions: i32, rf: i16| {
        CreatableTopic::default().with_name(name.into()).with_num_partitions(partitions).with_replication_factor(rf)
    };
    let req = CreateTopicsRequest::default().with_timeout_ms(1_000).with_topics(vec![
        topic("t", 1, 1),
        topic("zero", 0, 1),
        topic("rf", 1, 4),
        topic("bad name", 1, 1),
        topic("new", -1, -1).with_configs(vec![
            CreatableTopicConfig::default().with_name("max.message.bytes".into()).with_value(Some("100".into())),
        ]),
    ]);
    let resp = c.send(&req.clone().with_validate_only(true), 7).await;
    let codes: Vec<i16> = resp.topics.iter().map(|t| t.error_code).collect();
    let expected = vec![
        ErrorCode::TopicAlreadyExists.code(),
        ErrorCode::InvalidPartitions.code(),
        ErrorCode::InvalidReplicationFactor.code(),
        ErrorCode::InvalidTopicException.code(),
        0,
    ];
    assert_eq!(codes, expected);
    assert!(cluster.partition_count("new").is_none(), "validate_only creates nothing");
    let resp = c.send(&req, 7).await;
    assert_eq!((resp.topics[4].num_partitions, resp.topics[4].replication_factor), (1, 3));
    assert_ne!(resp.topics[4].topic_id, klife_protocol::Uuid::default());
    let big = produce(&cluster, "new", 0, batch(&[&"x".repeat(200)], BatchOptions::default())).await;
    assert_eq!(big.error_code, ErrorCode::MessageTooLarge.code(), "the topic's max.message.bytes");

    let resp = c
        .send(
            &CreatePartitionsRequest::default().with_timeout_ms(1_000).with_topics(vec![
                CreatePartitionsTopic::default().with_name("new".into()).with_count(4),
                CreatePartitionsTopic::default().with_name("t".into()).with_count(2),
            ]),
            3,
        )
        .await;
    assert_eq!(
        resp.results.iter().map(|r| r.error_code).collect::<Vec<_>>(),
        vec![0, ErrorCode::InvalidPartitions.code()]
    );
    assert_eq!(cluster.partition_count("new"), Some(4));

    let resp = c.send(&DeleteTopicsRequest::default().with_topic_names(vec!["new".into(), "ghost".into()]), 5).await;
    assert_eq!(resp.responses.iter().map(|r| r.error_code).collect::<Vec<_>>(), vec![0, 3]);
    assert_eq!(cluster.topics(), vec!["t".to_owned()]);
}

#[tokio::test]
async fn metadata_auto_creates_topics_when_allowed() {
    let cluster = FakeCluster::builder().brokers(2).auto_create_topics(true, 3).start().await.unwrap();
    let mut c = Raw::connect(&cluster.addresses()[0]).await;
    let refused = c.send(&metadata_request(&["fresh"]), 12).await;
    assert_eq!(refused.topics[0].error_code, ErrorCode::UnknownTopicOrPartition.code());
    let allowed = c.send(&metadata_request(&["fresh"]).with_allow_auto_topic_creation(true), 12).await;
    assert_eq!((allowed.topics[0].error_code, allowed.topics[0].partitions.len()), (0, 3));
    assert_eq!(allowed.controller_id, 0);
    assert_eq!(allowed.cluster_id, Some(cluster.cluster_id()));
    let all = c.send(&MetadataRequest::default().with_topics(None), 12).await;
    assert_eq!(all.topics.len(), 1);
    let _ = Bytes::new();
}
