//! Record batch encode/decode benchmarks: klife-protocol next to the `kafka-protocol`
//! crate, on the same records, for every codec.
//!
//! Workload: one batch of 1,000 records, each with a null key, a 100-byte pseudo-random
//! (incompressible) value and no headers; timestamps one millisecond apart.
//!
//! - encode: records in memory to complete batch bytes (records, compression, header,
//!   CRC). Each library gets its natural input: borrowed values for klife's writer,
//!   prebuilt `Record` structs for kafka-protocol.
//! - decode: batch bytes to records, CRC checked, then every record's key, value and
//!   header count read. Both libraries decode the same bytes (written by klife; the
//!   setup checks that both read them back correctly).
//!
//! Run: `cargo bench -p klife-protocol --bench record_batch -- --warm-up-time 1 --measurement-time 3`
#![allow(missing_docs, clippy::unwrap_used)]

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use klife_protocol::Compression;
use klife_protocol::records::{BatchOptions, RecordBatch, RecordBatchWriter};

use kafka_protocol::records as kp;

const RECORDS: usize = 1_000;
const VALUE_SIZE: usize = 100;
const BASE_TIMESTAMP: i64 = 1_700_000_000_000;

/// Deterministic pseudo-random values (xorshift64*), so every run measures the same data.
fn values() -> Vec<Bytes> {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..RECORDS)
        .map(|_| {
            let v: Vec<u8> = (0..VALUE_SIZE)
                .map(|_| {
                    state ^= state >> 12;
                    state ^= state << 25;
                    state ^= state >> 27;
                    (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
                })
                .collect();
            Bytes::from(v)
        })
        .collect()
}

fn klife_encode(values: &[Bytes], compression: Compression) -> Bytes {
    let options = BatchOptions { compression, ..BatchOptions::default() };
    let mut writer = RecordBatchWriter::with_capacity(options, 128 * 1024);
    for (i, v) in values.iter().enumerate() {
        writer.append(BASE_TIMESTAMP + i as i64, None, Some(v)).unwrap();
    }
    writer.finish().unwrap()
}

fn kp_records(values: &[Bytes]) -> Vec<kp::Record> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| kp::Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            timestamp_type: kp::TimestampType::Creation,
            offset: i as i64,
            // kafka-protocol batches records whose `offset - sequence` is constant; this
            // keeps all of them in one batch with base sequence -1, like klife's.
            sequence: i as i32 - 1,
            timestamp: BASE_TIMESTAMP + i as i64,
            key: None,
            value: Some(v.clone()),
            headers: Default::default(),
        })
        .collect()
}

fn kp_compression(c: Compression) -> kp::Compression {
    match c {
        Compression::Gzip => kp::Compression::Gzip,
        Compression::Snappy => kp::Compression::Snappy,
        Compression::Lz4 => kp::Compression::Lz4,
        Compression::Zstd => kp::Compression::Zstd,
        _ => kp::Compression::None,
    }
}

fn kp_encode(records: &[kp::Record], compression: Compression) -> Bytes {
    let mut buf = BytesMut::with_capacity(128 * 1024);
    let options = kp::RecordEncodeOptions { version: 2, compression: kp_compression(compression) };
    kp::RecordBatchEncoder::encode(&mut buf, records, &options).unwrap();
    buf.freeze()
}

fn klife_decode(input: &Bytes) -> usize {
    let batch = RecordBatch::decode(&mut input.clone()).unwrap();
    let mut sum = 0;
    for r in &batch {
        sum += r.key().map_or(0, <[u8]>::len) + r.value().map_or(0, <[u8]>::len) + r.header_count();
    }
    sum
}

fn kp_decode(input: &Bytes) -> usize {
    let set = kp::RecordBatchDecoder::decode(&mut input.clone()).unwrap();
    let mut sum = 0;
    for r in &set.records {
        sum += r.key.as_ref().map_or(0, Bytes::len) + r.value.as_ref().map_or(0, Bytes::len) + r.headers.len();
    }
    sum
}

/// Checks that both libraries agree on the workload before timing it.
fn cross_check(values: &[Bytes], compression: Compression) {
    let ours = klife_encode(values, compression);
    let theirs = kp_encode(&kp_records(values), compression);
    let set = kp::RecordBatchDecoder::decode(&mut ours.clone()).unwrap();
    assert_eq!(set.records.len(), RECORDS);
    for (r, v) in set.records.iter().zip(values) {
        assert_eq!(r.value.as_ref(), Some(v));
    }
    let batch = RecordBatch::decode(&mut theirs.clone()).unwrap();
    assert_eq!(batch.len(), RECORDS);
    for (r, v) in batch.iter().zip(values) {
        assert_eq!(r.value(), Some(&v[..]));
    }
    if compression == Compression::None {
        assert_eq!(ours, theirs, "uncompressed batches should be byte-identical");
    }
    assert_eq!(klife_decode(&ours), RECORDS * VALUE_SIZE);
    assert_eq!(kp_decode(&ours), RECORDS * VALUE_SIZE);
}

fn bench(c: &mut Criterion) {
    let values = values();
    let kp_input = kp_records(&values);
    for codec in Compression::ALL {
        cross_check(&values, codec);

        let mut group = c.benchmark_group(format!("encode/{codec}"));
        group.throughput(Throughput::Elements(RECORDS as u64));
        group.bench_function("klife", |b| b.iter(|| klife_encode(black_box(&values), codec)));
        group.bench_function("kafka-protocol", |b| b.iter(|| kp_encode(black_box(&kp_input), codec)));
        group.finish();

        let encoded = klife_encode(&values, codec);
        let mut group = c.benchmark_group(format!("decode/{codec}"));
        group.throughput(Throughput::Elements(RECORDS as u64));
        group.bench_function("klife", |b| b.iter(|| klife_decode(black_box(&encoded))));
        group.bench_function("kafka-protocol", |b| b.iter(|| kp_decode(black_box(&encoded))));
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
