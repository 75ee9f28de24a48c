//! Property tests: random batches round-trip through every codec, and truncated or
//! corrupted batches give typed errors, never panics.
#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use proptest::prelude::*;

use super::*;
use crate::compression::Compression;
use crate::error::DecodeError;

fn codec() -> impl Strategy<Value = Compression> {
    prop::sample::select(Compression::ALL.into_iter().filter(|c| c.is_enabled()).collect::<Vec<_>>())
}

fn nullable_bytes(max: usize) -> impl Strategy<Value = Option<Bytes>> {
    prop::option::of(prop::collection::vec(any::<u8>(), 0..max).prop_map(Bytes::from))
}

fn header() -> impl Strategy<Value = Header> {
    // A small key alphabet, so that duplicate keys are common; some non-ASCII keys.
    let key = prop_oneof![
        prop::sample::select(vec!["a", "b", "trace-id", "", "ключ"]).prop_map(str::to_owned),
        "[a-z]{0,12}",
    ];
    (key, nullable_bytes(24)).prop_map(|(key, value)| Header { key, value })
}

fn timestamp() -> impl Strategy<Value = i64> {
    prop_oneof![
        4 => 1_700_000_000_000i64..1_700_000_100_000,
        1 => -1i64..2,
        1 => any::<i64>(),
    ]
}

/// Record parts: offset gap to the previous record, timestamp, key, value, headers.
type Parts = (u8, i64, Option<Bytes>, Option<Bytes>, Vec<Header>);

fn parts() -> impl Strategy<Value = Parts> {
    (0u8..4, timestamp(), nullable_bytes(16), nullable_bytes(200), prop::collection::vec(header(), 0..4))
}

fn options() -> impl Strategy<Value = BatchOptions> {
    (
        (codec(), prop::option::of(timestamp()), any::<bool>(), any::<bool>(), any::<bool>()),
        (-1i64..1 << 40, any::<i32>(), any::<i64>(), any::<i16>(), any::<i32>()),
    )
        .prop_map(|((compression, base_timestamp, log_append, transactional, control), ids)| {
            let (base_offset, partition_leader_epoch, producer_id, producer_epoch, base_sequence) = ids;
            BatchOptions {
                base_offset,
                partition_leader_epoch,
                compression,
                timestamp_type: if log_append { TimestampType::LogAppendTime } else { TimestampType::CreateTime },
                transactional,
                control,
                producer_id,
                producer_epoch,
                base_sequence,
                base_timestamp,
                ..BatchOptions::default()
            }
        })
}

fn records_from(options: &BatchOptions, parts: Vec<Parts>) -> Vec<Record> {
    let mut offset = options.base_offset;
    parts
        .into_iter()
        .enumerate()
        .map(|(i, (gap, timestamp, key, value, headers))| {
            if i > 0 {
                offset += 1 + i64::from(gap);
            }
            Record { offset, timestamp, key, value, headers }
        })
        .collect()
}

fn batch() -> impl Strategy<Value = (BatchOptions, Vec<Record>)> {
    (options(), prop::collection::vec(parts(), 1..16)).prop_map(|(options, parts)| {
        let records = records_from(&options, parts);
        (options, records)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn encode_then_decode_gives_the_records_back((options, records) in batch()) {
        let bytes = encode_records(&options, &records).unwrap();
        let batch = RecordBatch::decode(&mut bytes.clone()).unwrap();
        prop_assert_eq!(batch.to_records(), records.clone());
        prop_assert_eq!(batch.compression(), options.compression);
        prop_assert_eq!(batch.attributes(), options.attributes());
        let h = batch.header();
        prop_assert_eq!(h.base_offset, options.base_offset);
        prop_assert_eq!(h.partition_leader_epoch, options.partition_leader_epoch);
        prop_assert_eq!((h.producer_id, h.producer_epoch, h.base_sequence),
            (options.producer_id, options.producer_epoch, options.base_sequence));
        prop_assert_eq!(h.records_count as usize, records.len());
        prop_assert_eq!(batch.last_offset(), records.last().unwrap().offset);
        prop_assert_eq!(h.max_timestamp, records.iter().map(|r| r.timestamp).max().unwrap());
        prop_assert_eq!(h.base_timestamp, options.base_timestamp.unwrap_or(records[0].timestamp));
        // The iterator finds exactly this batch.
        let mut it = RecordBatches::new(bytes.clone());
        prop_assert_eq!(it.next().unwrap().unwrap().into_bytes(), bytes.clone());
        prop_assert!(it.next().is_none());
    }

    /// The room a writer says it will hold after a record is the room it holds then,
    /// whether it grew or not (the producer charges its buffer with it beforehand).
    #[test]
    fn the_room_after_a_record_is_predicted(
        values in prop::collection::vec(nullable_bytes(3000), 1..40),
        capacity in 0usize..4096,
    ) {
        let mut w = RecordBatchWriter::with_capacity(BatchOptions::default(), capacity);
        for v in values {
            let size = w.next_record_size::<Header>(0, None, v.as_deref(), &[]);
            let predicted = w.room_after(size);
            prop_assert!(predicted >= w.room());
            w.append_with_headers::<Header>(0, None, v.as_deref(), &[]).unwrap();
            prop_assert_eq!(w.room(), predicted);
            prop_assert!(w.room() >= w.size_in_bytes());
        }
    }

    #[test]
    fn decode_then_encode_gives_the_same_bytes((options, records) in batch()) {
        let bytes = encode_records(&options, &records).unwrap();
        let batch = RecordBatch::decode(&mut bytes.clone()).unwrap();
        prop_assert_eq!(batch.encode().unwrap(), bytes.clone());
        // The streaming writer and the whole-batch helper agree.
        let mut w = RecordBatchWriter::new(options.clone());
        for r in &records {
            w.append_record(r).unwrap();
        }
        prop_assert_eq!(w.finish().unwrap(), bytes);
    }

    /// A control record's type comes from its key alone: whatever the value (null,
    /// short, garbage or a marker), a readable key gives its type, and an unreadable
    /// key is an error, never a wrong type.
    #[test]
    fn control_records_are_typed_by_their_key_alone(
        key in prop::option::of(prop::collection::vec(any::<u8>(), 0..8)),
        value in nullable_bytes(10),
        compression in codec(),
    ) {
        let mut w = RecordBatchWriter::new(BatchOptions { control: true, compression, ..BatchOptions::default() });
        w.append(0, key.as_deref(), value.as_deref()).unwrap();
        let batch = RecordBatch::decode(&mut w.finish().unwrap()).unwrap();
        let expected = key
            .as_deref()
            .filter(|k| k.len() >= 4 && i16::from_be_bytes([k[0], k[1]]) >= 0)
            .map(|k| ControlRecordType::from_id(i16::from_be_bytes([k[2], k[3]])));
        let typed = batch.control_record_type().unwrap();
        let record = batch.control_record().unwrap();
        match expected {
            Some(t) => {
                prop_assert_eq!(typed, Ok(t));
                let record = record.unwrap();
                prop_assert_eq!(record.record_type(), t);
                let marker = value.as_deref().and_then(|v| EndTransactionMarker::parse(v).ok());
                match record {
                    ControlRecord::Commit(m) | ControlRecord::Abort(m) => prop_assert_eq!(m, marker),
                    ControlRecord::Other { value: v, .. } => prop_assert_eq!(v, value),
                }
            }
            None => {
                prop_assert!(typed.is_err());
                prop_assert!(record.is_err());
            }
        }
    }

}

proptest! {
    // These decode every truncation or every corrupted byte of each batch.
    #![proptest_config(ProptestConfig { cases: 40, ..ProptestConfig::default() })]

    #[test]
    fn truncation_never_panics((options, records) in batch()) {
        let bytes = encode_records(&options, &records).unwrap();
        for cut in 0..bytes.len() {
            let partial = bytes.slice(..cut);
            prop_assert!(RecordBatch::decode(&mut partial.clone()).is_err());
            prop_assert!(RawBatch::new(partial.clone()).is_err());
            let mut it = RecordBatches::new(partial.clone());
            prop_assert!(it.next().is_none());
            prop_assert_eq!(it.partial_tail().is_some(), cut > 0);
        }
    }

    #[test]
    fn corruption_gives_typed_errors((options, records) in batch(), mask in 1u8..=255) {
        let bytes = encode_records(&options, &records).unwrap();
        let unchecked = DecodeOptions { verify_crc: false, ..DecodeOptions::default() };
        for i in 0..bytes.len() {
            let mut corrupt = bytes.to_vec();
            corrupt[i] ^= mask;
            let corrupt = Bytes::from(corrupt);
            let result = RecordBatch::decode(&mut corrupt.clone());
            if i >= header::at::CRC {
                // The CRC covers everything from the attributes on; a change to the
                // CRC field itself mismatches too.
                prop_assert!(matches!(result, Err(DecodeError::CrcMismatch { .. })), "byte {}: {:?}", i, result);
            } else if i == header::at::MAGIC {
                prop_assert_eq!(result.unwrap_err(), DecodeError::UnsupportedMagic((2 ^ mask) as i8));
            } else if (header::at::BATCH_LENGTH..header::at::BATCH_LENGTH + 4).contains(&i) {
                prop_assert!(result.is_err());
            } else {
                // Base offset and leader epoch lie outside the CRC.
                prop_assert!(result.is_ok());
            }
            // Without the CRC, the record parser and the decompressors see the damage:
            // any outcome but a panic is fine.
            let _ = RecordBatch::decode_with(&mut corrupt.clone(), &unchecked);
            for raw in RecordBatches::new(corrupt).flatten() {
                let _ = raw.decode_with(&unchecked);
            }
        }
    }

}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..400), codec in codec()) {
        let unchecked = DecodeOptions { verify_crc: false, max_decompressed_size: 1 << 20 };
        // As a whole input, and behind a valid header with the CRC off.
        for raw in RecordBatches::new(Bytes::from(data.clone())).flatten() {
            let _ = raw.decode_with(&unchecked);
        }
        let header = BatchHeader {
            base_offset: 0,
            batch_length: (BATCH_HEADER_SIZE - LOG_OVERHEAD + data.len()) as i32,
            partition_leader_epoch: 0,
            magic: MAGIC,
            crc: 0,
            attributes: BatchAttributes::new().with_compression(codec),
            last_offset_delta: 0,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            records_count: data.first().map_or(0, |&b| i32::from(b % 8)),
        };
        let bytes = Bytes::from([&header.to_bytes()[..], &data[..]].concat());
        let _ = RecordBatch::decode_with(&mut bytes.clone(), &unchecked);
    }
}
