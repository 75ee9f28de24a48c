//! Property and golden tests of the generated messages.

#![allow(clippy::unwrap_used)]

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;

use crate::frame;
use crate::messages::{self, ApiKey, ApiVersionsRequest, MetadataRequest, metadata_request::MetadataRequestTopic};
use crate::wire::RawTaggedField;
use crate::{Message, Uuid};

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, ..ProptestConfig::default() })]

    /// Every message, at every version: a random valid value encodes, decodes to an
    /// equal value, and re-encodes to the same bytes.
    #[test]
    fn every_message_roundtrips_at_every_version(data in proptest::collection::vec(any::<u8>(), 0..4096)) {
        for (_, check) in messages::ROUNDTRIP_CHECKS {
            check(&data).map_err(TestCaseError::fail)?;
        }
    }

    /// Decoding arbitrary bytes as any response never panics.
    #[test]
    fn decoding_garbage_never_panics(data in proptest::collection::vec(any::<u8>(), 0..512), key in 0usize..100) {
        let api_key = ApiKey::ALL[key % ApiKey::ALL.len()];
        for version in api_key.versions().min..=api_key.versions().max {
            let _ = crate::AnyResponse::decode(api_key, &mut Bytes::from(data.clone()), version);
            let _ = crate::AnyRequest::decode(api_key, &mut Bytes::from(data.clone()), version);
        }
    }
}

#[test]
fn every_message_is_checked() {
    // 186 schema files: 88 requests, 88 responses, 2 headers, 8 data structures.
    assert_eq!(messages::ROUNDTRIP_CHECKS.len(), 186);
    assert_eq!(ApiKey::ALL.len(), 88);
}

fn encode<M: Message>(m: &M, version: i16) -> Vec<u8> {
    let mut buf = BytesMut::new();
    m.encode(&mut buf, version).unwrap();
    buf.to_vec()
}

/// ApiVersionsRequest v3 (api key 18; flexible from v3): two compact strings and the
/// tagged-field trailer, framed with request header v2.
#[test]
fn golden_api_versions_request_v3() {
    let req = ApiVersionsRequest::default()
        .with_client_software_name("klife".into())
        .with_client_software_version("0.1.0".into());
    let body = [
        0x06, b'k', b'l', b'i', b'f', b'e', // compact string: length 5 + 1 = 6, "klife"
        0x06, b'0', b'.', b'1', b'.', b'0', // compact string: "0.1.0"
        0x00, // tagged fields: none
    ];
    assert_eq!(encode(&req, 3), body);

    let mut framed = BytesMut::new();
    frame::encode_request(&mut framed, 0x0102_0304, Some("cli"), 3, &req).unwrap();
    let mut expected = vec![
        0x00, 0x00, 0x00, 0x1b, // frame size: 27 bytes follow
        0x00, 0x12, // api key 18
        0x00, 0x03, // api version 3
        0x01, 0x02, 0x03, 0x04, // correlation id
        0x00, 0x03, b'c', b'l', b'i', // client id: a classic int16-length string even in header v2
        0x00, // header tagged fields: none
    ];
    expected.extend_from_slice(&body);
    assert_eq!(&framed[..], &expected[..]);

    // An unknown tagged field (tag 5, two bytes) is kept and written back in place.
    let with_tag = [&body[..12], &[0x01, 0x05, 0x02, 0xab, 0xcd]].concat();
    let decoded = ApiVersionsRequest::decode(&mut Bytes::from(with_tag.clone()), 3).unwrap();
    assert_eq!(decoded.unknown_tagged_fields, vec![RawTaggedField { tag: 5, data: Bytes::from_static(&[0xab, 0xcd]) }]);
    assert_eq!(encode(&decoded, 3), with_tag);
}

/// MetadataRequest v12 (api key 3; flexible from v9): a compact nullable array of
/// topics with topic ids, then two booleans.
#[test]
fn golden_metadata_request_v12() {
    let id = Uuid::from_u128(0x00112233_4455_6677_8899_aabbccddeeff);
    let req = MetadataRequest::default()
        .with_topics(Some(vec![MetadataRequestTopic::default().with_topic_id(id).with_name(Some("orders".into()))]))
        .with_allow_auto_topic_creation(true)
        .with_include_topic_authorized_operations(false);
    let mut expected = vec![0x02]; // compact array: 1 element + 1
    expected.extend_from_slice(&id.0); // topic id: 16 bytes
    expected.extend_from_slice(&[0x07, b'o', b'r', b'd', b'e', b'r', b's']); // compact nullable string
    expected.push(0x00); // topic tagged fields
    expected.push(0x01); // allow_auto_topic_creation = true
    expected.push(0x00); // include_topic_authorized_operations = false
    expected.push(0x00); // tagged fields
    assert_eq!(encode(&req, 12), expected);

    // A null topic list (all topics) is the single byte 0.
    let all = MetadataRequest::default().with_topics(None);
    assert_eq!(encode(&all, 12)[0], 0x00);
    // include_cluster_authorized_operations exists only in versions 8-10.
    let err = MetadataRequest::default().with_topics(None).with_include_cluster_authorized_operations(true);
    assert!(err.encode(&mut BytesMut::new(), 12).is_err());
    assert!(err.encode(&mut BytesMut::new(), 10).is_ok());
}

#[test]
fn encoding_a_field_the_version_lacks_is_an_error() {
    // TransactionalId exists from ProduceRequest v3.
    let req = messages::ProduceRequest::default().with_transactional_id(Some("tx".into()));
    assert_eq!(
        req.encode(&mut BytesMut::new(), 2),
        Err(crate::EncodeError::FieldNotInVersion { field: "ProduceRequest.transactional_id", version: 2 })
    );
    assert!(req.encode(&mut BytesMut::new(), 3).is_ok());
}

#[test]
fn unsupported_versions_are_typed_errors() {
    let err = MetadataRequest::default().encode(&mut BytesMut::new(), 99).unwrap_err();
    assert_eq!(
        err,
        crate::EncodeError::UnsupportedVersion { message: "MetadataRequest", version: 99, min: 0, max: 13 }
    );
    let err = MetadataRequest::decode(&mut Bytes::new(), -1).unwrap_err();
    assert!(matches!(err, crate::DecodeError::UnsupportedVersion { .. }));
}

#[test]
fn api_key_facts() {
    assert_eq!(ApiKey::Produce.code(), 0);
    assert_eq!(ApiKey::from_code(18), Some(ApiKey::ApiVersions));
    assert_eq!(ApiKey::from_code(-5), None);
    assert_eq!(ApiKey::Produce.versions(), crate::VersionRange::new(0, 11));
    assert_eq!(ApiKey::Fetch.versions().max, 17);
    assert_eq!(ApiKey::ConsumerGroupHeartbeat.versions(), crate::VersionRange::new(0, 1));
    assert_eq!(ApiKey::Produce.flexible_min(), Some(9));
    assert_eq!(ApiKey::Produce.request_header_version(8), 1);
    assert_eq!(ApiKey::Produce.request_header_version(9), 2);
    assert_eq!(ApiKey::ControlledShutdown.request_header_version(0), 0);
    assert_eq!(ApiKey::ApiVersions.response_header_version(4), 0);
    assert_eq!(ApiKey::Metadata.response_header_version(9), 1);
    assert!(!ApiKey::ListOffsets.latest_version_unstable());
    assert!(ApiKey::ReadShareGroupState.latest_version_unstable());
    assert_eq!(ApiKey::ListOffsets.stable_versions(), ApiKey::ListOffsets.versions());
    assert!(ApiKey::Produce.is_broker_api());
    assert!(!ApiKey::Vote.is_broker_api());
}

/// ProduceRequest v9 (api key 0; flexible from v9) carrying one record batch: the
/// 90-byte golden batch of `records::golden_tests`, whose every byte and CRC are
/// justified there.
#[test]
fn golden_produce_request_v9_with_one_batch() {
    use crate::messages::produce_request::{PartitionProduceData, TopicProduceData};
    let batch = Bytes::from_static(&crate::records::golden_tests::GOLDEN);
    let req = messages::ProduceRequest::default()
        .with_transactional_id(None)
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default().with_name("t".into()).with_partition_data(vec![
            PartitionProduceData::default().with_index(0).with_records(Some(batch.clone())),
        ])]);
    let mut expected = vec![
        0x00, // transactional_id: compact nullable string, null
        0xff, 0xff, // acks = -1
        0x00, 0x00, 0x75, 0x30, // timeout_ms = 30000
        0x02, // topic_data: compact array of 1
        0x02, b't', // name: compact string "t"
        0x02, // partition_data: compact array of 1
        0x00, 0x00, 0x00, 0x00, // index = 0
        0x5b, // records: compact bytes, 90 + 1 = 91 = 0x5b
    ];
    expected.extend_from_slice(&batch);
    expected.extend_from_slice(&[
        0x00, // partition tagged fields
        0x00, // topic tagged fields
        0x00, // request tagged fields
    ]);
    assert_eq!(encode(&req, 9), expected);
    // The records field decodes as a zero-copy slice of the request bytes.
    let bytes = Bytes::from(expected);
    let decoded = messages::ProduceRequest::decode(&mut bytes.clone(), 9).unwrap();
    let records = decoded.topic_data[0].partition_data[0].records.clone().unwrap();
    assert_eq!(records, batch);
    assert_eq!(records.as_ptr(), bytes[16..].as_ptr());
    let batch = crate::RecordBatch::decode(&mut records.clone()).unwrap();
    assert_eq!(batch.len(), 2);
}
