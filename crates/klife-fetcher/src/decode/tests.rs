#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use bytes::Bytes;
use klife_protocol::Compression;
use klife_protocol::records::{
    BatchOptions, ControlRecordKey, ControlRecordType, DecodeOptions, RecordBatchWriter, end_transaction_batch,
};
use proptest::prelude::*;

use super::*;

/// A data batch of `values` at `base`.
fn batch(base: i64, values: &[&str], opts: BatchOptions) -> Bytes {
    let mut w = RecordBatchWriter::new(BatchOptions { base_offset: base, ..opts });
    for v in values {
        w.append(1_000, Some(b"k"), Some(v.as_bytes())).expect("append");
    }
    w.finish().expect("finish")
}

fn plain(base: i64, values: &[&str]) -> Bytes {
    batch(base, values, BatchOptions::default())
}

fn txn(base: i64, pid: i64, values: &[&str]) -> Bytes {
    txn_at_epoch(base, pid, 0, values)
}

fn marker(base: i64, pid: i64, result: ControlRecordType) -> Bytes {
    let opts = BatchOptions { base_offset: base, producer_id: pid, producer_epoch: 0, ..BatchOptions::default() };
    end_transaction_batch(&opts, 2_000, result, 0).expect("marker")
}

/// A marker as some brokers write it: the key only, a null value.
fn null_marker(base: i64, pid: i64, epoch: i16, result: ControlRecordType) -> Bytes {
    marker_with_key(base, pid, epoch, &ControlRecordKey::new(result).to_bytes())
}

/// A transactional control batch of one record with this key and a null value.
fn marker_with_key(base: i64, pid: i64, epoch: i16, key: &[u8]) -> Bytes {
    let mut w = RecordBatchWriter::new(BatchOptions {
        base_offset: base,
        producer_id: pid,
        producer_epoch: epoch,
        transactional: true,
        control: true,
        ..BatchOptions::default()
    });
    w.append(2_000, Some(key), None).expect("append");
    w.finish().expect("finish")
}

fn txn_at_epoch(base: i64, pid: i64, epoch: i16, values: &[&str]) -> Bytes {
    batch(
        base,
        values,
        BatchOptions {
            transactional: true,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: 0,
            ..BatchOptions::default()
        },
    )
}

fn answer(parts: &[Bytes], aborted: &[(i64, i64)], lso: i64) -> PartitionAnswer {
    PartitionAnswer {
        records: Some(Bytes::from(parts.concat())),
        high_watermark: 100,
        last_stable_offset: lso,
        log_start_offset: 0,
        aborted: aborted
            .iter()
            .map(|&(producer_id, first_offset)| AbortedTransaction { producer_id, first_offset })
            .collect(),
    }
}

fn run(offset: i64, isolation: IsolationLevel, a: PartitionAnswer) -> Decoded {
    decode_partition(&Arc::from("t"), 3, offset, Some(1), isolation, a, &DecodeOptions::default())
}

fn ok(d: Decoded) -> Fetched {
    match d {
        Decoded::Done(Ok(f)) => f,
        other => panic!("expected records, got {other:?}"),
    }
}

fn values(f: &Fetched) -> Vec<(i64, String)> {
    f.records
        .iter()
        .map(|r| (r.offset, String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned()))
        .collect()
}

#[test]
fn records_before_the_fetch_offset_are_skipped_also_inside_compressed_batches() {
    let gz = batch(0, &["a", "b", "c"], BatchOptions { compression: Compression::Gzip, ..BatchOptions::default() });
    let f = ok(run(1, IsolationLevel::ReadUncommitted, answer(&[gz, plain(3, &["d"])], &[], -1)));
    assert_eq!(values(&f), vec![(1, "b".into()), (2, "c".into()), (3, "d".into())]);
    assert_eq!(f.next_offset, 4);
    assert_eq!((f.topic.as_ref(), f.partition, f.offset), ("t", 3, 1));
    assert_eq!(f.records[0].batch.compression, Compression::Gzip);
    assert_eq!(f.records[2].batch.base_offset, 3);
}

/// `batch` at a partition leader epoch.
fn at_epoch(base: i64, values: &[&str], epoch: i32, opts: BatchOptions) -> Bytes {
    batch(base, values, BatchOptions { partition_leader_epoch: epoch, ..opts })
}

#[test]
fn the_last_epoch_is_that_of_the_batch_ending_at_the_next_offset() {
    let ru = IsolationLevel::ReadUncommitted;
    let rc = IsolationLevel::ReadCommitted;
    let plain_at = |base, values: &[&str], epoch| at_epoch(base, values, epoch, BatchOptions::default());
    // Records of two epochs: the last batch's.
    let f = ok(run(0, ru, answer(&[plain_at(0, &["a", "b"], 2), plain_at(2, &["c"], 5)], &[], -1)));
    assert_eq!((f.next_offset, f.last_epoch), (3, Some(5)));
    assert_eq!(f.records.iter().map(|r| r.leader_epoch).collect::<Vec<_>>(), vec![Some(2), Some(2), Some(5)]);
    // Nothing read: the fetch's own (1 in `run`).
    let f = ok(run(3, ru, answer(&[], &[], -1)));
    assert_eq!((f.next_offset, f.last_epoch), (3, Some(1)));
    // A marker and an aborted batch move the offset, and the epoch with it.
    let abort = BatchOptions {
        partition_leader_epoch: 7,
        transactional: true,
        producer_id: 9,
        producer_epoch: 0,
        base_sequence: 0,
        ..BatchOptions::default()
    };
    let aborted = at_epoch(0, &["x"], 7, abort);
    let marker_at_8 = {
        let opts =
            BatchOptions { base_offset: 1, producer_id: 9, partition_leader_epoch: 8, ..BatchOptions::default() };
        end_transaction_batch(&opts, 2_000, ControlRecordType::Abort, 0).expect("marker")
    };
    let f = ok(run(0, rc, answer(std::slice::from_ref(&aborted), &[(9, 0)], 1)));
    assert_eq!((f.records.len(), f.next_offset, f.last_epoch), (0, 1, Some(7)));
    let f = ok(run(0, rc, answer(&[aborted, marker_at_8], &[(9, 0)], 2)));
    assert_eq!((f.records.len(), f.next_offset, f.last_epoch), (0, 2, Some(8)));
    // Stopped at the last stable offset inside a batch: that batch's epoch.
    let f = ok(run(0, rc, answer(&[plain_at(0, &["a"], 2), plain_at(1, &["b", "c", "d"], 3)], &[], 2)));
    assert_eq!((f.next_offset, f.last_epoch), (2, Some(3)));
    // A broker that keeps no epochs (-1) leaves the one known.
    let f = ok(run(0, ru, answer(&[plain_at(0, &["a"], -1)], &[], -1)));
    assert_eq!((f.next_offset, f.last_epoch), (1, Some(1)));
}

#[test]
fn uncommitted_values_are_slices_of_the_answer() {
    let bytes = Bytes::from(plain(0, &["zero-copy"]).to_vec());
    let range = bytes.as_ptr() as usize..bytes.as_ptr() as usize + bytes.len();
    let f = ok(run(0, IsolationLevel::ReadUncommitted, answer(std::slice::from_ref(&bytes), &[], -1)));
    // `answer` concatenates, so decode straight from `bytes` instead.
    let direct = decode_partition(
        &Arc::from("t"),
        0,
        0,
        None,
        IsolationLevel::ReadUncommitted,
        PartitionAnswer { records: Some(bytes.clone()), ..answer(&[], &[], -1) },
        &DecodeOptions::default(),
    );
    let direct = ok(direct);
    let value = direct.records[0].value.as_ref().expect("value");
    assert!(range.contains(&(value.as_ptr() as usize)), "the value was copied");
    assert_eq!(values(&f), values(&direct));
}

#[test]
fn aborted_transactions_and_markers_are_hidden_with_read_committed() {
    // pid 7 aborts [0, 2), pid 8 commits [2, 3); then a plain batch.
    let parts = [
        txn(0, 7, &["aborted-1", "aborted-2"]),
        txn(2, 8, &["committed"]),
        marker(3, 7, ControlRecordType::Abort),
        marker(4, 8, ControlRecordType::Commit),
        plain(5, &["plain"]),
    ];
    let committed = ok(run(0, IsolationLevel::ReadCommitted, answer(&parts, &[(7, 0)], 6)));
    assert_eq!(values(&committed), vec![(2, "committed".into()), (5, "plain".into())]);
    assert_eq!(committed.next_offset, 6);

    let all = ok(run(0, IsolationLevel::ReadUncommitted, answer(&parts, &[(7, 0)], 6)));
    assert_eq!(
        values(&all),
        vec![(0, "aborted-1".into()), (1, "aborted-2".into()), (2, "committed".into()), (5, "plain".into())]
    );
    assert!(all.records[0].batch.is_transactional);
}

#[test]
fn a_producer_aborting_twice_is_tracked_per_transaction() {
    // pid 7: aborted [0,1), marker at 1, committed [2,3), marker at 3, aborted [4,5), marker 5.
    let parts = [
        txn(0, 7, &["a1"]),
        marker(1, 7, ControlRecordType::Abort),
        txn(2, 7, &["c1"]),
        marker(3, 7, ControlRecordType::Commit),
        txn(4, 7, &["a2"]),
        marker(5, 7, ControlRecordType::Abort),
    ];
    let f = ok(run(0, IsolationLevel::ReadCommitted, answer(&parts, &[(7, 4), (7, 0)], 6)));
    assert_eq!(values(&f), vec![(2, "c1".into())]);
    assert_eq!(f.next_offset, 6);
}

#[test]
fn markers_with_a_null_value_end_transactions_and_keep_later_commits() {
    // One transactional id, a new producer (epoch) per transaction: commit c1..c3,
    // abort a1 a2, commit c4, then a plain record.
    let parts = [
        txn_at_epoch(0, 7, 0, &["c1", "c2", "c3"]),
        null_marker(3, 7, 0, ControlRecordType::Commit),
        txn_at_epoch(4, 7, 1, &["a1", "a2"]),
        null_marker(6, 7, 1, ControlRecordType::Abort),
        txn_at_epoch(7, 7, 2, &["c4"]),
        null_marker(8, 7, 2, ControlRecordType::Commit),
        plain(9, &["p1"]),
    ];
    let f = ok(run(0, IsolationLevel::ReadCommitted, answer(&parts, &[(7, 4)], 10)));
    assert_eq!(
        values(&f),
        vec![(0, "c1".into()), (1, "c2".into()), (2, "c3".into()), (7, "c4".into()), (9, "p1".into())]
    );
    assert_eq!(f.next_offset, 10);
    // From inside the aborted transaction, and from its marker.
    for from in [5, 6] {
        let f = ok(run(from, IsolationLevel::ReadCommitted, answer(&parts[2..], &[(7, 4)], 10)));
        assert_eq!(values(&f), vec![(7, "c4".into()), (9, "p1".into())]);
    }
}

#[test]
fn an_abort_marker_before_the_fetch_offset_still_ends_the_aborted_transaction() {
    // The answer starts before the fetch offset and lists the aborted transaction
    // that the ABORT marker at 1 ended: pid 7's committed transaction after it stays.
    let parts = [
        txn(0, 7, &["a1"]),
        marker(1, 7, ControlRecordType::Abort),
        plain(2, &["p1"]),
        txn(3, 7, &["c1"]),
        marker(4, 7, ControlRecordType::Commit),
    ];
    let f = ok(run(2, IsolationLevel::ReadCommitted, answer(&parts, &[(7, 0)], 5)));
    assert_eq!(values(&f), vec![(2, "p1".into()), (3, "c1".into())]);
    assert_eq!(f.next_offset, 5);
}

#[test]
fn a_marker_whose_key_cannot_be_read_is_a_corrupt_batch_with_read_committed() {
    for key in [&[0u8, 0, 0][..], &[0x80, 0, 0, 0][..], &[][..]] {
        let parts = [
            txn(0, 7, &["c1"]),
            marker(1, 7, ControlRecordType::Commit),
            txn(2, 7, &["a1"]),
            marker_with_key(3, 7, 0, key),
            txn(4, 7, &["c2"]),
            marker(5, 7, ControlRecordType::Commit),
        ];
        // The records before it are returned and the answer stops at it ...
        let f = ok(run(0, IsolationLevel::ReadCommitted, answer(&parts, &[(7, 2)], 6)));
        assert_eq!(values(&f), vec![(0, "c1".into())]);
        assert_eq!(f.next_offset, 3);
        // ... where the next fetch gets the error, not records dropped or exposed.
        match run(3, IsolationLevel::ReadCommitted, answer(&parts[3..], &[(7, 2)], 6)) {
            Decoded::Done(Err(FetchError::Corrupt { offset: 3, partition: 3, .. })) => {}
            other => panic!("expected a corrupt batch error, got {other:?}"),
        }
        // A producer with no aborted transaction: the same.
        match run(3, IsolationLevel::ReadCommitted, answer(&parts[3..], &[], 6)) {
            Decoded::Done(Err(FetchError::Corrupt { offset: 3, .. })) => {}
            other => panic!("expected a corrupt batch error, got {other:?}"),
        }
        // read_uncommitted does not read markers.
        let f = ok(run(0, IsolationLevel::ReadUncommitted, answer(&parts, &[(7, 2)], 6)));
        assert_eq!(values(&f), vec![(0, "c1".into()), (2, "a1".into()), (4, "c2".into())]);
    }
}

#[test]
fn nothing_at_or_past_the_last_stable_offset_is_returned_with_read_committed() {
    let parts = [plain(0, &["a", "b"]), txn(2, 9, &["open"]), plain(3, &["after"])];
    let f = ok(run(0, IsolationLevel::ReadCommitted, answer(&parts, &[], 2)));
    assert_eq!(values(&f), vec![(0, "a".into()), (1, "b".into())]);
    assert_eq!(f.next_offset, 2);
    // Inside a batch.
    let f = ok(run(0, IsolationLevel::ReadCommitted, answer(&[plain(0, &["a", "b", "c"])], &[], 1)));
    assert_eq!(values(&f), vec![(0, "a".into())]);
    assert_eq!(f.next_offset, 1);
    // read_uncommitted ignores it.
    let f = ok(run(0, IsolationLevel::ReadUncommitted, answer(&parts, &[], 2)));
    assert_eq!(f.records.len(), 4);
}

#[test]
fn only_control_batches_still_advance_the_offset() {
    let f = ok(run(4, IsolationLevel::ReadCommitted, answer(&[marker(4, 1, ControlRecordType::Commit)], &[], 5)));
    assert!(f.records.is_empty());
    assert_eq!(f.next_offset, 5);
    let f = ok(run(4, IsolationLevel::ReadUncommitted, answer(&[marker(4, 1, ControlRecordType::Commit)], &[], 5)));
    assert_eq!(f.next_offset, 5);
}

#[test]
fn a_corrupt_first_batch_is_an_error_and_a_later_one_ends_the_answer() {
    let good = plain(0, &["a"]);
    let mut bad = plain(1, &["b"]).to_vec();
    let last = bad.len() - 1;
    bad[last] ^= 0xff;
    let bad = Bytes::from(bad);
    match run(1, IsolationLevel::ReadUncommitted, answer(std::slice::from_ref(&bad), &[], -1)) {
        Decoded::Done(Err(FetchError::Corrupt { offset: 1, partition: 3, .. })) => {}
        other => panic!("expected a corrupt batch error, got {other:?}"),
    }
    let f = ok(run(0, IsolationLevel::ReadUncommitted, answer(&[good, bad], &[], -1)));
    assert_eq!(values(&f), vec![(0, "a".into())]);
    assert_eq!(f.next_offset, 1);
}

#[test]
fn a_batch_cut_short_with_nothing_before_it_asks_for_its_size() {
    let whole = plain(0, &["a-long-enough-value"]);
    let cut = whole.slice(..20);
    match run(0, IsolationLevel::ReadUncommitted, answer(&[cut], &[], -1)) {
        Decoded::NeedBytes { size } => assert_eq!(size, whole.len()),
        other => panic!("expected NeedBytes, got {other:?}"),
    }
    // With a whole batch before it, the cut one is simply left for the next fetch.
    let f = ok(run(0, IsolationLevel::ReadUncommitted, answer(&[plain(0, &["x"]), whole.slice(..20)], &[], -1)));
    assert_eq!(f.next_offset, 1);
}

#[test]
fn null_records_and_headers_are_kept() {
    let mut w = RecordBatchWriter::new(BatchOptions::default());
    w.append_with_headers(5, None, None, &[("h", Some(&b"1"[..])), ("h", None), ("h", Some(&b"2"[..]))])
        .expect("append");
    let f = ok(run(0, IsolationLevel::ReadUncommitted, answer(&[w.finish().expect("finish")], &[], -1)));
    let r = &f.records[0];
    assert_eq!((r.key.as_ref(), r.value.as_ref(), r.timestamp), (None, None, 5));
    let hs: Vec<_> = r.headers.iter().map(|h| (h.key.as_str(), h.value.as_deref())).collect();
    assert_eq!(hs, vec![("h", Some(&b"1"[..])), ("h", None), ("h", Some(&b"2"[..]))]);
    assert_eq!(r.header("h"), Some(Some(&Bytes::from_static(b"1"))));
}

#[test]
fn an_empty_answer_keeps_the_offset() {
    let a = PartitionAnswer {
        records: None,
        high_watermark: 9,
        last_stable_offset: 9,
        log_start_offset: 2,
        aborted: vec![],
    };
    let f = ok(run(9, IsolationLevel::ReadCommitted, a));
    assert_eq!((f.next_offset, f.high_watermark, f.log_start_offset, f.lag()), (9, 9, 2, 0));
}

proptest! {
    /// Whatever mix of transactions, markers (with or without a value) and plain
    /// batches, producers running one transaction after another: read_committed
    /// returns exactly the records of plain batches and committed transactions, in
    /// order, and next_offset is the end of the last batch.
    #[test]
    fn read_committed_returns_exactly_the_committed_records(
        plan in proptest::collection::vec((0u8..3, 1usize..4, any::<bool>(), any::<bool>()), 1..12),
        start_skip in 0usize..3,
    ) {
        let mut parts = Vec::new();
        let mut aborted = Vec::new();
        let mut expected = Vec::new();
        let mut all = Vec::new();
        let mut offset = 0i64;
        for (i, (kind, n, commit, null_value)) in plan.into_iter().enumerate() {
            // Few producer ids, so that one producer runs several transactions.
            let pid = 100 + (i % 3) as i64;
            let vals: Vec<String> = (0..n).map(|j| format!("{i}-{j}")).collect();
            let refs: Vec<&str> = vals.iter().map(String::as_str).collect();
            match kind {
                0 => {
                    parts.push(plain(offset, &refs));
                    for (j, v) in vals.iter().enumerate() { expected.push((offset + j as i64, v.clone())); }
                }
                _ => {
                    parts.push(txn(offset, pid, &refs));
                    if commit {
                        for (j, v) in vals.iter().enumerate() { expected.push((offset + j as i64, v.clone())); }
                    } else {
                        aborted.push((pid, offset));
                    }
                }
            }
            for (j, v) in vals.iter().enumerate() { all.push((offset + j as i64, v.clone())); }
            offset += n as i64;
            if kind != 0 {
                let result = if commit { ControlRecordType::Commit } else { ControlRecordType::Abort };
                parts.push(if null_value { null_marker(offset, pid, 0, result) } else { marker(offset, pid, result) });
                offset += 1;
            }
        }
        let from = (start_skip as i64).min(offset - 1);
        let f = ok(run(from, IsolationLevel::ReadCommitted, answer(&parts, &aborted, offset)));
        let want: Vec<_> = expected.into_iter().filter(|(o, _)| *o >= from).collect();
        prop_assert_eq!(values(&f), want);
        prop_assert_eq!(f.next_offset, offset);
        let f = ok(run(from, IsolationLevel::ReadUncommitted, answer(&parts, &aborted, offset)));
        let want: Vec<_> = all.into_iter().filter(|(o, _)| *o >= from).collect();
        prop_assert_eq!(values(&f), want);
    }

    /// Arbitrary bytes never panic the decoder.
    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..300), offset in -2i64..50) {
        let a = PartitionAnswer { records: Some(Bytes::from(bytes)), high_watermark: 0, last_stable_offset: -1, log_start_offset: -1, aborted: vec![] };
        let _ = run(offset, IsolationLevel::ReadCommitted, a);
    }
}
