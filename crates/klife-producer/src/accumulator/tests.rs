//! Tests of the accumulator: batching, readiness, memory bound, stamping, order.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use klife_protocol::Compression;
use klife_protocol::records::{Header, RecordBatch};
use proptest::prelude::*;

use super::*;

const NO_HEADERS: &[Header] = &[];

fn config(batch_size: usize) -> AccumulatorConfig {
    AccumulatorConfig { batch_size, linger: Duration::from_millis(10), ..AccumulatorConfig::default() }
}

fn tp(p: i32) -> TopicPartition {
    TopicPartition::new("t", p)
}

fn append(acc: &mut Accumulator<u32>, p: i32, i: u32, now: Instant) -> Appended {
    let value = format!("value-{i}");
    acc.append(&tp(p), 1_000 + i64::from(i), Some(b"k"), Some(value.as_bytes()), NO_HEADERS, i, now).unwrap()
}

fn decode(bytes: &Bytes) -> RecordBatch {
    RecordBatch::decode(&mut bytes.clone()).unwrap()
}

#[test]
fn records_of_a_partition_share_a_batch_in_order() {
    let now = Instant::now();
    let mut acc = Accumulator::new(config(1 << 20));
    assert!(append(&mut acc, 0, 0, now).new_batch);
    for i in 1..10 {
        assert!(!append(&mut acc, 0, i, now).new_batch);
    }
    append(&mut acc, 1, 100, now);
    assert_eq!(acc.waiting_records(), 11);
    let b = acc.drain(&tp(0), None).unwrap().unwrap();
    assert_eq!(b.tokens, (0..10).collect::<Vec<_>>());
    let batch = decode(&b.bytes);
    assert_eq!(batch.len(), 10);
    for (i, r) in batch.to_records().iter().enumerate() {
        assert_eq!(r.value.as_deref(), Some(format!("value-{i}").as_bytes()));
        assert_eq!(r.timestamp, 1_000 + i as i64);
    }
    assert_eq!(acc.waiting_records(), 1);
    assert!(acc.drain(&tp(0), None).is_none());
}

#[test]
fn a_full_batch_is_sealed_and_the_next_record_opens_another() {
    let now = Instant::now();
    let mut acc = Accumulator::new(config(200));
    let mut batches = 0;
    for i in 0..40 {
        if append(&mut acc, 0, i, now).new_batch {
            batches += 1;
        }
    }
    assert!(batches > 1, "a 200-byte batch size must split 40 records");
    let mut tokens = Vec::new();
    let mut drained = 0;
    while let Some(b) = acc.drain(&tp(0), None) {
        let b = b.unwrap();
        assert!(b.bytes.len() <= 200 + 30, "a sealed batch stays near the batch size: {}", b.bytes.len());
        assert_eq!(decode(&b.bytes).len(), b.tokens.len());
        tokens.extend(b.tokens);
        drained += 1;
    }
    assert_eq!(drained, batches);
    assert_eq!(tokens, (0..40).collect::<Vec<_>>(), "order is kept across batches");
}

#[test]
fn batches_become_ready_when_full_or_after_the_linger() {
    let t0 = Instant::now();
    let mut acc = Accumulator::new(config(1 << 20));
    append(&mut acc, 0, 0, t0);
    append(&mut acc, 1, 1, t0 + Duration::from_millis(4));
    let r = acc.ready(t0 + Duration::from_millis(5), false);
    assert!(r.ready.is_empty());
    assert_eq!(r.next_ready_at, Some(t0 + Duration::from_millis(10)));
    let r = acc.ready(t0 + Duration::from_millis(10), false);
    assert_eq!(r.ready, vec![tp(0)]);
    assert_eq!(r.next_ready_at, Some(t0 + Duration::from_millis(14)));
    assert_eq!(acc.ready(t0, true).ready, vec![tp(0), tp(1)], "flush makes every batch ready");

    let mut small = Accumulator::new(config(120));
    for i in 0..10 {
        append(&mut small, 0, i, t0);
    }
    assert_eq!(small.ready(t0, false).ready, vec![tp(0)], "a full batch does not wait for the linger");
}

#[test]
fn the_buffer_bound_refuses_records_until_batches_are_released() {
    let now = Instant::now();
    let mut acc = Accumulator::new(AccumulatorConfig { buffer_memory: 1000, ..config(1 << 20) });
    let mut accepted = 0;
    let refused = loop {
        let value = [7u8; 20];
        match acc.append(&tp(0), 0, None, Some(&value), NO_HEADERS, accepted, now) {
            Ok(_) => accepted += 1,
            Err(e) => break e,
        }
    };
    assert!(matches!(refused, AppendError::BufferFull { limit: 1000, .. }), "{refused}");
    assert!(accepted > 10, "a batch preallocates no more than the buffer has: {accepted} records taken");
    assert!(refused.to_string().contains("buffer is full"));
    assert_eq!(refused.into_token(), accepted, "the refused record's token comes back");
    let held = acc.buffered();
    assert!(held <= 1000);
    let b = acc.drain(&tp(0), None).unwrap().unwrap();
    assert_eq!(b.tokens.len() as u32, accepted);
    // Drained but not released: still held.
    assert_eq!((acc.buffered(), b.reserved), (held, held));
    acc.release(b.reserved);
    assert_eq!(acc.buffered(), 0);
    assert!(acc.append(&tp(0), 0, None, Some(&[1u8; 20]), NO_HEADERS, 99, now).is_ok());
}

#[test]
fn a_record_too_large_for_any_batch_is_refused() {
    let now = Instant::now();
    let mut acc = Accumulator::new(AccumulatorConfig { max_record_batch_size: 1000, ..config(500) });
    let big = vec![0u8; 2000];
    let err = acc.append(&tp(0), 0, None, Some(&big), NO_HEADERS, 7u32, now).unwrap_err();
    assert!(matches!(err, AppendError::RecordTooLarge { limit: 1000, .. }), "{err}");
    assert_eq!(acc.buffered(), 0);
    // Larger than the batch size but within the limit: a batch of its own.
    let ok = vec![0u8; 800];
    assert!(acc.append(&tp(0), 0, None, Some(&ok), NO_HEADERS, 8, now).unwrap().new_batch);
}

#[test]
fn drained_batches_carry_the_producer_stamp_and_codec() {
    let now = Instant::now();
    let mut acc = Accumulator::new(AccumulatorConfig { compression: Compression::Lz4, ..config(1 << 20) });
    for i in 0..5 {
        append(&mut acc, 3, i, now);
    }
    assert_eq!(acc.next_batch_len(&tp(3)), Some(5));
    let stamp = ProducerStamp { producer_id: 42, producer_epoch: 3, base_sequence: 17, transactional: true };
    let b = acc.drain(&tp(3), Some(stamp)).unwrap().unwrap();
    let batch = decode(&b.bytes);
    let h = batch.header();
    assert_eq!((h.producer_id, h.producer_epoch, h.base_sequence), (42, 3, 17));
    assert!(h.attributes.is_transactional());
    assert_eq!(h.attributes.compression(), Some(Compression::Lz4));
    assert_eq!(batch.len(), 5);
}

proptest! {
    /// Whatever the interleaving of appends, drains and releases: every token comes
    /// out exactly once, in order per partition, and all memory comes back.
    #[test]
    fn every_record_comes_out_once_in_order(
        ops in proptest::collection::vec((0u8..4, 0i32..3, 0usize..300), 1..300),
        batch_size in 100usize..2000,
        buffer_memory in 1000usize..40_000,
    ) {
        let now = Instant::now();
        let mut acc = Accumulator::new(AccumulatorConfig { buffer_memory, ..config(batch_size) });
        let mut next = 0u32;
        let mut sent: Vec<Vec<u32>> = vec![Vec::new(); 3];
        let mut seen: Vec<Vec<u32>> = vec![Vec::new(); 3];
        let mut held = Vec::new();
        for (op, p, len) in ops {
            match op {
                0 | 1 => {
                    let value = vec![b'x'; len];
                    match acc.append(&tp(p), 0, None, Some(&value), NO_HEADERS, next, now) {
                        Ok(_) => {
                            sent[p as usize].push(next);
                            next += 1;
                        }
                        Err(AppendError::BufferFull { .. }) => {}
                        Err(e) => prop_assert!(false, "{e}"),
                    }
                    prop_assert!(acc.buffered() <= buffer_memory, "{} held of {}", acc.buffered(), buffer_memory);
                }
                2 => {
                    if let Some(b) = acc.drain(&tp(p), None) {
                        let b = b.unwrap();
                        prop_assert_eq!(decode(&b.bytes).len(), b.tokens.len());
                        seen[p as usize].extend(b.tokens.iter().copied());
                        held.push(b.reserved);
                    }
                }
                _ => {
                    if let Some(r) = held.pop() {
                        acc.release(r);
                    }
                }
            }
        }
        for p in 0..3 {
            while let Some(b) = acc.drain(&tp(p), None) {
                let b = b.unwrap();
                seen[p as usize].extend(b.tokens.iter().copied());
                held.push(b.reserved);
            }
        }
        for r in held {
            acc.release(r);
        }
        prop_assert_eq!(seen, sent);
        prop_assert_eq!(acc.buffered(), 0);
        prop_assert_eq!(acc.waiting_records(), 0);
    }
}

#[test]
fn restamping_finished_bytes_sets_the_transactional_flag() {
    let now = Instant::now();
    let mut acc = Accumulator::new(config(1 << 20));
    append(&mut acc, 0, 0, now);
    let b = acc.drain(&tp(0), None).unwrap().unwrap();
    let stamped = klife_protocol::records::with_producer_state(b.bytes, 7, 1, 0, true).unwrap();
    let batch = decode(&stamped);
    assert!(batch.header().attributes.is_transactional());
    assert_eq!(batch.producer_id(), 7);
}

#[test]
fn buffers_of_completed_batches_are_reused_by_busy_partitions() {
    let now = Instant::now();
    let mut acc = Accumulator::new(config(1000));
    let mut i = 0;
    while !append(&mut acc, 0, i, now).batch_full {
        i += 1;
    }
    let b = acc.drain(&tp(0), None).unwrap().unwrap();
    let held = b.bytes.clone();
    acc.recycle(b.bytes.clone());
    assert!(acc.spare.is_empty(), "bytes still referred to elsewhere are not reused");
    drop(held);
    acc.recycle(b.bytes);
    assert_eq!(acc.spare.len(), 1);
    // The partition filled its last batch: its next one takes the spare buffer.
    append(&mut acc, 0, 1_000, now);
    assert!(acc.spare.is_empty());
    let b = acc.drain(&tp(0), None).unwrap().unwrap();
    let batch = decode(&b.bytes);
    assert_eq!(batch.len(), 1, "nothing of the earlier batch shows through");
    assert_eq!(batch.to_records()[0].value.as_deref(), Some(&b"value-1000"[..]));
}

#[test]
fn a_producer_writing_to_many_partitions_stays_within_its_buffer() {
    // Every batch's allocation counts, and batches take less once the buffer runs
    // short: a thousand partitions share 256 KiB instead of the first few taking it.
    let now = Instant::now();
    let limit = 256 * 1024;
    let mut acc = Accumulator::new(AccumulatorConfig { buffer_memory: limit, ..config(32 * 1024) });
    let value = [1u8; 100];
    let mut taken = 0;
    for p in 0..1_000 {
        match acc.append(&tp(p), 0, None, Some(&value), NO_HEADERS, p as u32, now) {
            Ok(_) => taken += 1,
            Err(AppendError::BufferFull { .. }) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert!(acc.buffered() <= limit, "{} held of {limit}", acc.buffered());
    assert!(taken >= 200, "partitions whose first record found room: {taken}");
    let rooms: usize =
        (0..taken).map(|p| acc.queue(&tp(p)).and_then(|q| q.open.as_ref()).map_or(0, |b| b.writer.room())).sum();
    assert_eq!(rooms, acc.buffered(), "every byte allocated for a batch is held");
}
