//! A hand-built batch, written out byte by byte, checked against the encoder and the
//! decoder, with its CRC32C recomputed by an independent bitwise implementation.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;

use super::*;

/// CRC-32C (Castagnoli), one bit at a time: reflected polynomial 0x82F63B78, initial
/// value and final xor 0xFFFFFFFF. Slow and obviously correct; shares no code with the
/// `crc32c` crate.
fn crc32c_bitwise(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 { (crc >> 1) ^ 0x82F6_3B78 } else { crc >> 1 };
        }
    }
    !crc
}

/// The CRC stored in [`GOLDEN`]: CRC32C of `GOLDEN[21..]`.
const GOLDEN_CRC: u32 = 0x8B3C_EE76;

/// 1_700_000_000_000 ms (2023-11-14T22:13:20Z) = 0x0000_018B_CFE5_6800.
const BASE_TIMESTAMP: i64 = 1_700_000_000_000;

/// Two uncompressed records:
/// 0. offset 0, timestamp BASE, key "k", value "hello", no headers;
/// 1. offset 1, timestamp BASE + 5, null key, value "world", one header "h" = "v".
#[rustfmt::skip]
pub(crate) const GOLDEN: [u8; 90] = [
    // baseOffset: int64 0
    0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    // batchLength: int32 78 = 49 header bytes after this field + 29 record bytes
    0x00, 0x00, 0x00, 0x4e,
    // partitionLeaderEpoch: int32 -1 (producers leave it to the broker)
    0xff, 0xff, 0xff, 0xff,
    // magic: int8 2
    0x02,
    // crc: uint32 CRC32C of every byte from attributes to the end (see GOLDEN_CRC)
    0x8b, 0x3c, 0xee, 0x76,
    // attributes: int16 0 = no compression, create time, not transactional, not control
    0x00, 0x00,
    // lastOffsetDelta: int32 1 (two records, offset deltas 0 and 1)
    0x00, 0x00, 0x00, 0x01,
    // baseTimestamp: int64 1_700_000_000_000, the first record's timestamp
    0x00, 0x00, 0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x00,
    // maxTimestamp: int64 1_700_000_000_005, the largest record timestamp
    0x00, 0x00, 0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x05,
    // producerId: int64 -1 (not idempotent)
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    // producerEpoch: int16 -1
    0xff, 0xff,
    // baseSequence: int32 -1
    0xff, 0xff, 0xff, 0xff,
    // recordsCount: int32 2
    0x00, 0x00, 0x00, 0x02,
    // record 0: length varint zigzag(12) = 0x18; then the 12 body bytes:
    0x18,
    //   attributes int8 0, timestampDelta varlong zigzag(0), offsetDelta varint zigzag(0)
    0x00, 0x00, 0x00,
    //   key length varint zigzag(1) = 0x02, key "k"
    0x02, b'k',
    //   value length varint zigzag(5) = 0x0a, value "hello"
    0x0a, b'h', b'e', b'l', b'l', b'o',
    //   header count varint zigzag(0)
    0x00,
    // record 1: length varint zigzag(15) = 0x1e; then the 15 body bytes:
    0x1e,
    //   attributes 0, timestampDelta zigzag(5) = 0x0a, offsetDelta zigzag(1) = 0x02
    0x00, 0x0a, 0x02,
    //   key length zigzag(-1) = 0x01: null key
    0x01,
    //   value length zigzag(5) = 0x0a, value "world"
    0x0a, b'w', b'o', b'r', b'l', b'd',
    //   header count zigzag(1) = 0x02
    0x02,
    //   header key length zigzag(1) = 0x02, key "h"; value length zigzag(1) = 0x02, value "v"
    0x02, b'h', 0x02, b'v',
];

#[test]
fn crc32c_check_value() {
    // The standard CRC-32C check value (RFC 3720 appendix B.4 and every CRC catalogue).
    assert_eq!(crc32c_bitwise(b"123456789"), 0xE306_9283);
    assert_eq!(crc32c::crc32c(b"123456789"), 0xE306_9283);
}

#[test]
fn golden_crc_is_the_crc32c_of_attributes_to_end() {
    assert_eq!(crc32c_bitwise(&GOLDEN[21..]), GOLDEN_CRC);
    assert_eq!(u32::from_be_bytes(GOLDEN[17..21].try_into().unwrap()), GOLDEN_CRC);
    assert_eq!(RawBatch::new(Bytes::from_static(&GOLDEN)).unwrap().compute_crc(), GOLDEN_CRC);
}

#[test]
fn golden_batch_length_and_size_agree() {
    assert_eq!(GOLDEN.len(), LOG_OVERHEAD + 78);
    assert_eq!(GOLDEN.len() - BATCH_HEADER_SIZE, 29);
}

#[test]
fn writer_produces_the_golden_bytes() {
    let mut w = RecordBatchWriter::new(BatchOptions::default());
    assert_eq!(w.append(BASE_TIMESTAMP, Some(b"k"), Some(b"hello")).unwrap(), 0);
    let delta =
        w.append_with_headers(BASE_TIMESTAMP + 5, None, Some(b"world"), &[Header::new("h", &b"v"[..])]).unwrap();
    assert_eq!(delta, 1);
    assert_eq!(w.size_in_bytes(), GOLDEN.len());
    assert_eq!(&w.finish().unwrap()[..], &GOLDEN[..]);
}

#[test]
fn encode_records_produces_the_golden_bytes() {
    let records = vec![
        Record::new(0, BASE_TIMESTAMP, "hello").with_key("k"),
        Record::new(1, BASE_TIMESTAMP + 5, "world").with_header(Header::new("h", "v")),
    ];
    assert_eq!(&encode_records(&BatchOptions::default(), &records).unwrap()[..], &GOLDEN[..]);
}

#[test]
fn golden_bytes_decode_to_the_documented_fields() {
    let mut input = Bytes::from_static(&GOLDEN);
    let batch = RecordBatch::decode(&mut input).unwrap();
    assert!(input.is_empty());

    let h = batch.header();
    assert_eq!(
        *h,
        BatchHeader {
            base_offset: 0,
            batch_length: 78,
            partition_leader_epoch: -1,
            magic: 2,
            crc: GOLDEN_CRC,
            attributes: BatchAttributes(0),
            last_offset_delta: 1,
            base_timestamp: BASE_TIMESTAMP,
            max_timestamp: BASE_TIMESTAMP + 5,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            records_count: 2,
        }
    );
    assert_eq!(h.to_bytes()[..], GOLDEN[..BATCH_HEADER_SIZE]);
    assert_eq!(batch.next_offset(), 2);

    let r: Vec<_> = batch.iter().collect();
    assert_eq!(r.len(), 2);
    assert_eq!((r[0].offset(), r[0].timestamp()), (0, BASE_TIMESTAMP));
    assert_eq!(r[0].key(), Some(&b"k"[..]));
    assert_eq!(r[0].value(), Some(&b"hello"[..]));
    assert_eq!(r[0].header_count(), 0);
    assert_eq!((r[1].offset(), r[1].timestamp()), (1, BASE_TIMESTAMP + 5));
    assert_eq!(r[1].key(), None);
    assert_eq!(r[1].value(), Some(&b"world"[..]));
    let headers: Vec<_> = r[1].headers().map(|h| (h.key(), h.value())).collect();
    assert_eq!(headers, vec![("h", Some(&b"v"[..]))]);

    assert_eq!(&batch.encode().unwrap()[..], &GOLDEN[..]);
}
