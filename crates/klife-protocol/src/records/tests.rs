//! Unit tests for record batches.
#![allow(clippy::unwrap_used)]

use bytes::{Bytes, BytesMut};

use super::header::at;
use super::*;
use crate::compression::Compression;
use crate::error::{DecodeError, EncodeError};

const TS: i64 = 1_700_000_000_000;

/// The codecs this build has.
fn codecs() -> impl Iterator<Item = Compression> {
    Compression::ALL.into_iter().filter(|c| c.is_enabled())
}

/// Some enabled compressing codec, or none if the build has no codec.
fn some_codec() -> Compression {
    codecs().last().unwrap_or(Compression::None)
}

fn batch_of(options: BatchOptions, n: usize) -> Bytes {
    let mut w = RecordBatchWriter::new(options);
    for i in 0..n {
        let value = format!("value-{i}");
        w.append(TS + i as i64, Some(format!("key-{i}").as_bytes()), Some(value.as_bytes())).unwrap();
    }
    w.finish().unwrap()
}

/// Recomputes the CRC of a batch edited by hand.
fn fix_crc(batch: &mut [u8]) {
    let crc = crc32c::crc32c(&batch[at::ATTRIBUTES..]);
    batch[at::CRC..at::CRC + 4].copy_from_slice(&crc.to_be_bytes());
}

#[test]
fn attributes_bits() {
    let a = BatchAttributes::new()
        .with_compression(Compression::Zstd)
        .with_timestamp_type(TimestampType::LogAppendTime)
        .with_transactional(true)
        .with_control(true)
        .with_delete_horizon(true);
    assert_eq!(a.bits(), 4 | 8 | 16 | 32 | 64);
    assert_eq!(a.compression(), Some(Compression::Zstd));
    assert_eq!(a.timestamp_type(), TimestampType::LogAppendTime);
    assert!(a.is_transactional() && a.is_control() && a.has_delete_horizon());
    let b = a.with_compression(Compression::Gzip).with_transactional(false).with_control(false);
    assert_eq!(b.bits(), 1 | 8 | 64);
    assert_eq!(BatchAttributes(7).compression(), None);
    assert_eq!(BatchAttributes(7).compression_id(), 7);
    assert_eq!(BatchAttributes(-1).compression_id(), 7);
}

#[test]
fn writer_tracks_count_size_and_timestamps() {
    let mut w = RecordBatchWriter::new(BatchOptions::default());
    assert!(w.is_empty());
    assert_eq!(w.size_in_bytes(), BATCH_HEADER_SIZE);
    assert_eq!(w.max_timestamp(), None);
    let timestamps = [TS + 10, TS, TS + 30, TS - 5];
    for (i, ts) in timestamps.into_iter().enumerate() {
        let headers = [("h", Some(&b"x"[..])), ("h", None)];
        let expected = w.next_record_size(ts, Some(b"k"), Some(b"v"), &headers);
        let before = w.size_in_bytes();
        assert_eq!(w.append_with_headers(ts, Some(b"k"), Some(b"v"), &headers).unwrap(), i as i32);
        assert_eq!(w.size_in_bytes() - before, expected);
    }
    assert_eq!(w.record_count(), 4);
    assert!(format!("{w:?}").contains("record_count: 4"));
    assert_eq!(w.base_timestamp(), Some(TS + 10));
    assert_eq!(w.max_timestamp(), Some(TS + 30));
    let size = w.size_in_bytes();
    let bytes = w.finish().unwrap();
    assert_eq!(bytes.len(), size);
    let batch = RecordBatch::decode(&mut bytes.clone()).unwrap();
    assert_eq!(batch.base_timestamp(), TS + 10);
    assert_eq!(batch.max_timestamp(), TS + 30);
    assert_eq!(batch.header().last_offset_delta, 3);
    let got: Vec<_> = batch.iter().map(|r| (r.offset(), r.timestamp(), r.timestamp_delta())).collect();
    assert_eq!(got, vec![(0, TS + 10, 0), (1, TS, -10), (2, TS + 30, 20), (3, TS - 5, -15)]);
}

#[test]
fn has_room_for_respects_the_limit_but_takes_a_first_record() {
    let mut w = RecordBatchWriter::new(BatchOptions::default());
    let big = vec![0u8; 1000];
    assert!(w.has_room_for::<Header>(100, TS, None, Some(&big), &[]));
    w.append(TS, None, Some(&big)).unwrap();
    assert!(!w.has_room_for::<Header>(1100, TS, None, Some(&big), &[]));
    let need = w.size_in_bytes() + w.next_record_size::<Header>(TS, None, Some(&big), &[]);
    assert!(w.has_room_for::<Header>(need, TS, None, Some(&big), &[]));
    assert!(!w.has_room_for::<Header>(need - 1, TS, None, Some(&big), &[]));
}

#[test]
fn empty_writer_does_not_finish() {
    let w = RecordBatchWriter::new(BatchOptions::default());
    assert!(matches!(w.finish(), Err(EncodeError::Invalid { .. })));
}

#[test]
fn append_record_keeps_offsets_and_rejects_going_back() {
    let options = BatchOptions { base_offset: 100, ..BatchOptions::default() };
    let mut w = RecordBatchWriter::new(options.clone());
    w.append_record(&Record::new(100, TS, "a")).unwrap();
    w.append_record(&Record::new(105, TS, "b")).unwrap();
    assert!(matches!(w.append_record(&Record::new(105, TS, "c")), Err(EncodeError::Invalid { .. })));
    assert!(matches!(w.append_record(&Record::new(99, TS, "c")), Err(EncodeError::Invalid { .. })));
    assert!(matches!(w.append_record(&Record::new(100 + (1 << 31), TS, "c")), Err(EncodeError::TooLong { .. })));
    assert_eq!(w.next_offset_delta(), 6);
    let batch = RecordBatch::decode(&mut w.finish().unwrap()).unwrap();
    assert_eq!(batch.iter().map(|r| r.offset()).collect::<Vec<_>>(), vec![100, 105]);
    assert_eq!(batch.last_offset(), 105);
    assert!(matches!(encode_records(&options, &[]), Err(EncodeError::Invalid { .. })));
}

#[test]
fn headers_keep_order_duplicates_and_nulls() {
    let record = Record::new(0, TS, "v")
        .with_header(Header::new("a", "1"))
        .with_header(Header::null("b"))
        .with_header(Header::new("a", "2"))
        .with_header(Header::new("", ""));
    let bytes = encode_records(&BatchOptions::default(), std::slice::from_ref(&record)).unwrap();
    let batch = RecordBatch::decode(&mut bytes.clone()).unwrap();
    let r = batch.get(0).unwrap();
    let got: Vec<_> = r.headers().map(|h| (h.key().to_owned(), h.value().map(<[u8]>::to_vec))).collect();
    assert_eq!(
        got,
        vec![
            ("a".to_owned(), Some(b"1".to_vec())),
            ("b".to_owned(), None),
            ("a".to_owned(), Some(b"2".to_vec())),
            (String::new(), Some(Vec::new())),
        ]
    );
    assert_eq!(batch.to_records(), vec![record]);
}

#[test]
fn uncompressed_slices_share_the_input_buffer() {
    let bytes = batch_of(BatchOptions::default(), 3);
    let range = bytes.as_ptr_range();
    let batch = RecordBatch::decode(&mut bytes.clone()).unwrap();
    for r in &batch {
        for slice in [r.key().unwrap(), r.value().unwrap(), &r.value_bytes().unwrap()[..]] {
            assert!(range.contains(&slice.as_ptr()), "not a slice of the input");
        }
    }
    assert!(range.contains(&batch.data().as_ptr()));
}

#[test]
fn log_append_time_uses_max_timestamp() {
    let options = BatchOptions { timestamp_type: TimestampType::LogAppendTime, ..BatchOptions::default() };
    let mut w = RecordBatchWriter::new(options);
    w.append(TS, None, Some(b"a")).unwrap();
    w.append(TS + 7, None, Some(b"b")).unwrap();
    let batch = RecordBatch::decode(&mut w.finish().unwrap()).unwrap();
    assert_eq!(batch.timestamp_type(), TimestampType::LogAppendTime);
    let r = batch.get(0).unwrap();
    assert_eq!((r.timestamp(), r.record_timestamp()), (TS + 7, TS));
}

#[test]
fn set_producer_state_restamps_and_rewrites_the_crc() {
    for codec in codecs() {
        let bytes = batch_of(BatchOptions { compression: codec, ..BatchOptions::default() }, 5);
        let mut buf = BytesMut::from(&bytes[..]);
        set_producer_state(&mut buf, 42, 7, 1000, true).unwrap();
        let batch = RecordBatch::decode(&mut buf.freeze()).unwrap();
        assert_eq!((batch.producer_id(), batch.producer_epoch(), batch.base_sequence()), (42, 7, 1000));
        assert!(batch.is_transactional());
        assert_eq!(batch.header().last_sequence(), 1004);
        assert_eq!(batch.compression(), codec);
        assert_eq!(batch.len(), 5);
    }
    let bytes = batch_of(BatchOptions::default(), 1);
    let mut longer = bytes.to_vec();
    longer.push(0);
    assert!(set_producer_state(&mut longer, 1, 1, 1, false).is_err());
    assert!(set_producer_state(&mut longer[..40], 1, 1, 1, false).is_err());
}

#[test]
fn with_producer_state_restamps_shared_and_unique_bytes() {
    let unique = batch_of(BatchOptions::default(), 3);
    let ptr = unique.as_ptr();
    let stamped = with_producer_state(unique, 5, 6, 7, false).unwrap();
    assert_eq!(stamped.as_ptr(), ptr, "a unique buffer is re-stamped in place");
    let shared = batch_of(BatchOptions::default(), 3);
    let keep = shared.clone();
    let stamped = with_producer_state(shared, 5, 6, 7, true).unwrap();
    let batch = RecordBatch::decode(&mut stamped.clone()).unwrap();
    assert_eq!((batch.producer_id(), batch.producer_epoch(), batch.base_sequence()), (5, 6, 7));
    assert!(batch.is_transactional());
    assert_eq!(RawBatch::new(keep).unwrap().header().producer_id, NO_PRODUCER_ID);
    assert!(with_producer_state(Bytes::from_static(b"short"), 1, 1, 1, false).is_err());
}

#[test]
fn last_sequence_wraps() {
    let mut h = *RawBatch::new(batch_of(BatchOptions::default(), 3)).unwrap().header();
    assert_eq!(h.last_sequence(), NO_SEQUENCE);
    h.base_sequence = i32::MAX - 1;
    assert_eq!(h.last_sequence(), 0);
}

#[test]
fn batches_iterator_walks_and_stops_at_a_partial_batch() {
    let a = batch_of(BatchOptions { base_offset: 0, ..BatchOptions::default() }, 3);
    let b = batch_of(BatchOptions { base_offset: 3, compression: some_codec(), ..BatchOptions::default() }, 2);
    let whole = Bytes::from([&a[..], &b[..]].concat());

    let mut it = RecordBatches::new(whole.clone());
    assert_eq!(it.next().unwrap().unwrap().as_bytes(), &a);
    assert_eq!(it.next().unwrap().unwrap().decode().unwrap().base_offset(), 3);
    assert!(it.next().is_none());
    assert!(it.partial_tail().is_none());
    assert!(!it.is_truncated());

    for cut in 1..b.len() {
        let input = whole.slice(..a.len() + cut);
        let mut it = RecordBatches::new(input);
        assert!(it.next().unwrap().is_ok());
        assert!(it.next().is_none(), "cut {cut}");
        assert_eq!(it.partial_tail().map(Bytes::len), Some(cut));
        assert!(it.next().is_none());
    }
    assert!(RecordBatches::new(Bytes::new()).next().is_none());
}

#[test]
fn batches_iterator_skips_legacy_message_sets() {
    // A magic-1 message: offset, size, then crc, magic 1, attributes, timestamp, key, value.
    let mut legacy = Vec::new();
    legacy.extend_from_slice(&7i64.to_be_bytes());
    let body: Vec<u8> =
        [&[0u8, 0, 0, 0, 1, 0][..], &0i64.to_be_bytes(), &(-1i32).to_be_bytes(), &1i32.to_be_bytes(), b"x"].concat();
    legacy.extend_from_slice(&(body.len() as i32).to_be_bytes());
    legacy.extend_from_slice(&body);
    let v2 = batch_of(BatchOptions { base_offset: 8, ..BatchOptions::default() }, 1);
    let input = Bytes::from([&legacy[..], &v2[..]].concat());

    let mut it = RecordBatches::new(input.clone());
    assert_eq!(it.next().unwrap().unwrap_err(), DecodeError::UnsupportedMagic(1));
    assert_eq!(it.next().unwrap().unwrap().header().base_offset, 8);
    assert!(it.next().is_none());
    assert_eq!(RecordBatch::decode(&mut input.clone()).unwrap_err(), DecodeError::UnsupportedMagic(1));
    assert_eq!(RawBatch::new(Bytes::from(legacy)).unwrap_err(), DecodeError::UnsupportedMagic(1));
}

#[test]
fn batches_iterator_stops_on_a_negative_length() {
    let mut bad = vec![0u8; 20];
    bad[8..12].copy_from_slice(&(-5i32).to_be_bytes());
    let mut it = RecordBatches::new(Bytes::from(bad));
    assert!(matches!(it.next(), Some(Err(DecodeError::InvalidLength { .. }))));
    assert!(it.next().is_none());
    assert!(it.partial_tail().is_none());
}

#[test]
fn short_v2_batch_length_is_an_error_but_skippable() {
    let mut short = [0u8; 30];
    short[8..12].copy_from_slice(&18i32.to_be_bytes());
    short[16] = 2;
    let v2 = batch_of(BatchOptions::default(), 1);
    let mut it = RecordBatches::new(Bytes::from([&short[..], &v2[..]].concat()));
    assert!(matches!(it.next(), Some(Err(DecodeError::InvalidLength { .. }))));
    assert!(it.next().unwrap().is_ok());
}

#[test]
fn crc_mismatch_is_reported_and_can_be_skipped() {
    let mut bytes = batch_of(BatchOptions::default(), 2).to_vec();
    // The last value byte (the very last byte is the header count).
    let last = bytes.len() - 2;
    bytes[last] ^= 0x40;
    let mut input = Bytes::from(bytes);
    assert!(matches!(RecordBatch::decode(&mut input), Err(DecodeError::CrcMismatch { .. })));
    let unchecked = DecodeOptions { verify_crc: false, ..DecodeOptions::default() };
    assert!(RecordBatch::decode_with(&mut input, &unchecked).is_ok());
}

#[test]
fn unknown_and_disabled_codecs_are_typed_errors() {
    let mut bytes = batch_of(BatchOptions::default(), 1).to_vec();
    bytes[at::ATTRIBUTES + 1] |= 5;
    fix_crc(&mut bytes);
    assert_eq!(RecordBatch::decode(&mut Bytes::from(bytes)).unwrap_err(), DecodeError::UnknownCompression(5));
}

#[test]
fn disabled_codecs_are_typed_errors_for_batches() {
    for codec in Compression::ALL.into_iter().filter(|c| !c.is_enabled()) {
        let mut w = RecordBatchWriter::new(BatchOptions { compression: codec, ..BatchOptions::default() });
        w.append(TS, None, Some(b"v")).unwrap();
        assert_eq!(w.finish().unwrap_err(), EncodeError::CompressionDisabled(codec));
        let mut bytes = batch_of(BatchOptions::default(), 1).to_vec();
        bytes[at::ATTRIBUTES + 1] |= codec.id();
        fix_crc(&mut bytes);
        assert_eq!(RecordBatch::decode(&mut Bytes::from(bytes)).unwrap_err(), DecodeError::CompressionDisabled(codec));
    }
}

#[test]
fn decompressed_size_limit_applies() {
    if some_codec() == Compression::None {
        return; // the limit applies to decompression only
    }
    let options = BatchOptions { compression: some_codec(), ..BatchOptions::default() };
    let mut w = RecordBatchWriter::new(options);
    for _ in 0..100 {
        w.append(TS, None, Some(&[0u8; 1000])).unwrap();
    }
    let bytes = w.finish().unwrap();
    let tight = DecodeOptions { max_decompressed_size: 50_000, ..DecodeOptions::default() };
    assert_eq!(
        RecordBatch::decode_with(&mut bytes.clone(), &tight).unwrap_err(),
        DecodeError::DecompressedTooLarge { limit: 50_000 }
    );
    assert_eq!(RecordBatch::decode(&mut bytes.clone()).unwrap().len(), 100);
}

/// Builds a batch whose records section is `records` (uncompressed), claiming `count`
/// records, with a valid CRC.
fn raw_batch(records: &[u8], count: i32) -> Bytes {
    let header = BatchHeader {
        base_offset: 0,
        batch_length: (BATCH_HEADER_SIZE - LOG_OVERHEAD + records.len()) as i32,
        partition_leader_epoch: -1,
        magic: 2,
        crc: 0,
        attributes: BatchAttributes(0),
        last_offset_delta: 0,
        base_timestamp: 0,
        max_timestamp: 0,
        producer_id: -1,
        producer_epoch: -1,
        base_sequence: -1,
        records_count: count,
    };
    let mut bytes = [&header.to_bytes()[..], records].concat();
    fix_crc(&mut bytes);
    Bytes::from(bytes)
}

#[test]
fn malformed_records_are_typed_errors() {
    // A valid minimal record: length 6, attributes, ts 0, offset 0, null key, null value, 0 headers.
    let ok = [0x0c, 0, 0, 0, 1, 1, 0];
    assert_eq!(RecordBatch::decode(&mut raw_batch(&ok, 1)).unwrap().len(), 1);
    let cases: Vec<(Vec<u8>, i32)> = vec![
        (ok.to_vec(), 2),                                 // fewer records than counted
        (ok.to_vec(), -1),                                // negative count
        ([&ok[..], &ok[..]].concat(), 1),                 // trailing record
        (vec![0x0e, 0, 0, 0, 1, 1, 0, 0], 1),             // record longer than its fields
        (vec![0x0a, 0, 0, 0, 1, 1, 0], 1),                // record shorter than its fields
        (vec![0x0c, 0, 0, 0, 3, 1, 0], 1),                // key length -2
        (vec![0x0c, 0, 0, 0, 0x10, 1, 0], 1),             // key longer than the record
        (vec![0x0c, 0, 0, 0, 1, 1, 0x01], 1),             // header count -1
        (vec![0x0c, 0, 0, 0, 1, 1, 0x7e], 1),             // header count 63
        (vec![0x10, 0, 0, 0, 1, 1, 2, 1, 1], 1),          // header with null key
        (vec![0x12, 0, 0, 0, 1, 1, 2, 2, 0xff, 1], 1),    // header key not UTF-8
        (vec![0x0c, 0, 0xff, 0xff, 0xff, 0xff, 0xff], 1), // truncated varint
        (vec![0x01, 0, 0, 0, 1, 1, 0], 1),                // negative record length
        (vec![0x7e, 0, 0, 0, 1, 1, 0], 1),                // record length past the end
        (vec![0x00, 0, 0, 0, 1, 1, 0], 1),                // empty record
    ];
    for (records, count) in cases {
        let result = RecordBatch::decode(&mut raw_batch(&records, count));
        assert!(result.is_err(), "{records:02x?} count {count} decoded");
    }
    assert!(matches!(
        RecordBatch::decode(&mut raw_batch(&[0x12, 0, 0, 0, 1, 1, 2, 2, 0xff, 1], 1)),
        Err(DecodeError::InvalidUtf8 { .. })
    ));
}

#[test]
fn empty_batches_from_compaction_decode_and_reencode() {
    let mut bytes = raw_batch(&[], 0).to_vec();
    bytes[at::LAST_OFFSET_DELTA..at::LAST_OFFSET_DELTA + 4].copy_from_slice(&9i32.to_be_bytes());
    fix_crc(&mut bytes);
    let bytes = Bytes::from(bytes);
    let batch = RecordBatch::decode(&mut bytes.clone()).unwrap();
    assert!(batch.is_empty());
    assert_eq!(batch.next_offset(), 10);
    assert_eq!(batch.encode().unwrap(), bytes);
}

#[test]
fn reencoding_with_another_codec_keeps_everything_else() {
    let options = BatchOptions {
        base_offset: 1234,
        partition_leader_epoch: 9,
        producer_id: 77,
        producer_epoch: 3,
        base_sequence: 50,
        transactional: true,
        ..BatchOptions::default()
    };
    let plain = RecordBatch::decode(&mut batch_of(options, 10)).unwrap();
    for codec in codecs() {
        let bytes = plain.encode_with(codec, None).unwrap();
        let again = RecordBatch::decode(&mut bytes.clone()).unwrap();
        assert_eq!(again.compression(), codec);
        assert_eq!(again.to_records(), plain.to_records());
        let (mut h1, mut h2) = (*plain.header(), *again.header());
        h1.attributes = h1.attributes.with_compression(codec);
        (h1.crc, h2.crc, h1.batch_length, h2.batch_length) = (0, 0, 0, 0);
        assert_eq!(h1, h2);
        assert_eq!(again.encode_with(Compression::None, None).unwrap(), plain.encode().unwrap());
    }
}

#[test]
fn control_keys_and_values_roundtrip() {
    let key = ControlRecordKey::new(ControlRecordType::Commit);
    assert_eq!(key.to_bytes(), [0, 0, 0, 1]);
    assert_eq!(ControlRecordKey::parse(&[0, 0, 0, 0]).unwrap().record_type, ControlRecordType::Abort);
    assert_eq!(ControlRecordKey::parse(&[0, 1, 0, 9, 0xaa]).unwrap().record_type, ControlRecordType::Unknown(9));
    assert!(ControlRecordKey::parse(&[0, 0, 0]).is_err());
    assert!(ControlRecordKey::parse(&[0xff, 0xff, 0, 0]).is_err());
    for id in -2..10 {
        assert_eq!(ControlRecordType::from_id(id).id(), id);
    }
    let marker = EndTransactionMarker::new(0x0102_0304);
    assert_eq!(marker.to_bytes(), [0, 0, 1, 2, 3, 4]);
    assert_eq!(EndTransactionMarker::parse(&marker.to_bytes()).unwrap(), marker);
    assert!(EndTransactionMarker::parse(&[0, 0, 1]).is_err());
    assert!(EndTransactionMarker::parse(&[0x80, 0, 0, 0, 0, 0]).is_err());
}

#[test]
fn end_transaction_batch_is_what_the_broker_writes() {
    let options = BatchOptions {
        base_offset: 500,
        partition_leader_epoch: 4,
        producer_id: 99,
        producer_epoch: 2,
        base_sequence: 17,
        compression: some_codec(),
        ..BatchOptions::default()
    };
    for (result, commit) in [(ControlRecordType::Commit, true), (ControlRecordType::Abort, false)] {
        let bytes = end_transaction_batch(&options, TS, result, 12).unwrap();
        let batch = RecordBatch::decode(&mut bytes.clone()).unwrap();
        assert!(batch.is_control() && batch.is_transactional());
        assert_eq!(batch.compression(), Compression::None);
        assert_eq!((batch.base_offset(), batch.producer_id(), batch.producer_epoch()), (500, 99, 2));
        assert_eq!(batch.base_sequence(), NO_SEQUENCE);
        assert_eq!(batch.header().partition_leader_epoch, 4);
        let expected = EndTransactionMarker::new(12);
        let control = batch.control_record().unwrap().unwrap();
        assert_eq!(
            control,
            if commit { ControlRecord::Commit(Some(expected)) } else { ControlRecord::Abort(Some(expected)) }
        );
        assert_eq!(batch.control_record_type(), Some(Ok(result)));
        assert_eq!(control.record_type(), result);
        assert_eq!(batch.encode().unwrap(), bytes);
    }
    assert!(end_transaction_batch(&options, TS, ControlRecordType::LeaderChange, 1).is_err());
    let plain = RecordBatch::decode(&mut batch_of(BatchOptions::default(), 1)).unwrap();
    assert!(plain.control_record().is_none());
}

#[test]
fn control_batch_builder_writes_other_types() {
    let mut b = ControlBatchBuilder::new(BatchOptions::default());
    b.append(TS, ControlRecordKey::new(ControlRecordType::LeaderChange), Some(b"\x00\x00")).unwrap();
    let batch = RecordBatch::decode(&mut b.finish().unwrap()).unwrap();
    assert!(batch.is_control() && !batch.is_transactional());
    match batch.control_record().unwrap().unwrap() {
        ControlRecord::Other { key, value } => {
            assert_eq!(key.record_type, ControlRecordType::LeaderChange);
            assert_eq!(value.as_deref(), Some(&b"\x00\x00"[..]));
        }
        other => panic!("unexpected {other:?}"),
    }
    let mut bad = raw_batch(&[0x0c, 0, 0, 0, 1, 1, 0], 1).to_vec();
    bad[at::ATTRIBUTES + 1] |= 0x20;
    fix_crc(&mut bad);
    let batch = RecordBatch::decode(&mut Bytes::from(bad)).unwrap();
    assert_eq!(
        batch.control_record().unwrap().unwrap_err(),
        DecodeError::UnexpectedNull { what: "control record key" }
    );
    assert_eq!(
        batch.control_record_type().unwrap().unwrap_err(),
        DecodeError::UnexpectedNull { what: "control record key" }
    );
}

/// A control batch of one record with this key and value.
fn control_batch(key: Option<&[u8]>, value: Option<&[u8]>) -> RecordBatch {
    let mut w = RecordBatchWriter::new(BatchOptions { control: true, transactional: true, ..BatchOptions::default() });
    w.append(TS, key, value).unwrap();
    RecordBatch::decode(&mut w.finish().unwrap()).unwrap()
}

#[test]
fn a_transaction_marker_with_a_null_value_is_read_from_its_key() {
    for (result, id) in [(ControlRecordType::Commit, 1u8), (ControlRecordType::Abort, 0)] {
        let batch = control_batch(Some(&[0, 0, 0, id]), None);
        let expected = if id == 1 { ControlRecord::Commit(None) } else { ControlRecord::Abort(None) };
        assert_eq!(batch.control_record(), Some(Ok(expected)));
        assert_eq!(batch.control_record_type(), Some(Ok(result)));
        assert_eq!(ControlRecord::parse(Some(&[0, 0, 0, id]), None).unwrap().record_type(), result);
    }
}

#[test]
fn a_transaction_marker_value_is_kept_when_readable_and_ignored_otherwise() {
    let value = EndTransactionMarker::new(7).to_bytes();
    let batch = control_batch(Some(&[0, 0, 0, 1]), Some(&value));
    assert_eq!(batch.control_record(), Some(Ok(ControlRecord::Commit(Some(EndTransactionMarker::new(7))))));
    // A later value version with more fields.
    let longer = [0, 1, 0, 0, 0, 9, 0xaa, 0xbb];
    assert_eq!(
        ControlRecord::parse(Some(&[0, 0, 0, 0]), Some(&longer)),
        Ok(ControlRecord::Abort(Some(EndTransactionMarker { version: 1, coordinator_epoch: 9 })))
    );
    // Empty, short and negative-version values: the type still comes from the key.
    for bad in [&[][..], &[0, 0, 1][..], &[0xff, 0xff, 0, 0, 0, 1][..]] {
        assert_eq!(ControlRecord::parse(Some(&[0, 0, 0, 0]), Some(bad)), Ok(ControlRecord::Abort(None)));
        let batch = control_batch(Some(&[0, 0, 0, 1]), Some(bad));
        assert_eq!(batch.control_record(), Some(Ok(ControlRecord::Commit(None))));
        assert_eq!(batch.control_record_type(), Some(Ok(ControlRecordType::Commit)));
    }
}

#[test]
fn a_control_record_with_an_unreadable_key_is_an_error() {
    for (key, error) in [
        (None, DecodeError::UnexpectedNull { what: "control record key" }),
        (Some(&[0, 0, 1][..]), DecodeError::Truncated { what: "control record key", needed: 4, remaining: 3 }),
        (Some(&[][..]), DecodeError::Truncated { what: "control record key", needed: 4, remaining: 0 }),
        (Some(&[0x80, 0, 0, 1][..]), DecodeError::Invalid { what: "control record key", reason: "negative version" }),
    ] {
        let value = EndTransactionMarker::new(0).to_bytes();
        assert_eq!(ControlRecord::parse(key, Some(&value)), Err(error.clone()));
        let batch = control_batch(key, Some(&value));
        assert_eq!(batch.control_record(), Some(Err(error.clone())));
        assert_eq!(batch.control_record_type(), Some(Err(error)));
    }
    let plain = RecordBatch::decode(&mut batch_of(BatchOptions::default(), 1)).unwrap();
    assert_eq!(plain.control_record_type(), None);
}

#[test]
fn decode_leaves_input_alone_on_error_and_advances_on_success() {
    let a = batch_of(BatchOptions::default(), 1);
    let mut input = Bytes::from([&a[..], &a[..10]].concat());
    RecordBatch::decode(&mut input).unwrap();
    assert_eq!(input.len(), 10);
    assert!(RecordBatch::decode(&mut input).is_err());
    assert_eq!(input.len(), 10);
}

#[test]
fn raw_batch_accessors() {
    let bytes = batch_of(BatchOptions::default(), 2);
    let raw = RawBatch::new(bytes.clone()).unwrap();
    assert_eq!(raw.records_section(), &bytes[BATCH_HEADER_SIZE..]);
    raw.verify_crc().unwrap();
    assert_eq!(raw.header().size(), bytes.len());
    assert_eq!(raw.clone().into_bytes(), bytes);
    let mut longer = bytes.to_vec();
    longer.push(1);
    assert!(matches!(RawBatch::new(Bytes::from(longer)), Err(DecodeError::TrailingBytes { .. })));
    assert!(matches!(RawBatch::new(bytes.slice(..30)), Err(DecodeError::Truncated { .. })));
    let dbg = format!("{:?}", raw.decode().unwrap());
    assert!(dbg.contains("key-1"));
}
