//! One partition's log, sans-io: stored batches, offsets, idempotent producer state,
//! open and aborted transactions, and reads for Fetch.

use std::collections::{BTreeMap, HashMap, VecDeque};

use bytes::{Bytes, BytesMut};
use klife_protocol::ErrorCode;
use klife_protocol::records::{
    BatchHeader, BatchOptions, ControlRecordType, NO_SEQUENCE, RawBatch, end_transaction_batch,
};

/// How many recent batches per producer are remembered to recognise retries, as Kafka
/// does (`max.in.flight.requests.per.connection` may not exceed 5 with idempotence).
pub(crate) const PRODUCER_BATCH_CACHE: usize = 5;

/// A batch as stored: its bytes with the broker's base offset and leader epoch written in.
#[derive(Debug, Clone)]
pub(crate) struct StoredBatch {
    pub(crate) header: BatchHeader,
    pub(crate) bytes: Bytes,
}

impl StoredBatch {
    pub(crate) fn base_offset(&self) -> i64 {
        self.header.base_offset
    }

    pub(crate) fn last_offset(&self) -> i64 {
        self.header.last_offset()
    }
}

/// A transaction that ended in an abort: its data lies in `first_offset..=last_offset`
/// (the last offset is the ABORT marker's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AbortedTxn {
    pub(crate) producer_id: i64,
    pub(crate) first_offset: i64,
    pub(crate) last_offset: i64,
}

/// What the log remembers of one recent batch of a producer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct BatchMeta {
    first_seq: i32,
    last_seq: i32,
    first_offset: i64,
}

/// Per producer id: its epoch and its last few batches.
#[derive(Debug, Clone, Default)]
struct ProducerEntry {
    epoch: i16,
    batches: VecDeque<BatchMeta>,
}

impl ProducerEntry {
    fn last_seq(&self) -> i32 {
        self.batches.back().map_or(NO_SEQUENCE, |b| b.last_seq)
    }
}

/// Why an append was refused: the partition error of the Produce response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AppendError {
    pub(crate) code: ErrorCode,
    pub(crate) message: String,
}

impl AppendError {
    pub(crate) fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        AppendError { code, message: message.into() }
    }
}

/// Which records a read may return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Isolation {
    /// Up to the high watermark.
    ReadUncommitted,
    /// Up to the last stable offset.
    ReadCommitted,
}

impl Isolation {
    pub(crate) fn from_wire(level: i8) -> Self {
        if level == 1 { Isolation::ReadCommitted } else { Isolation::ReadUncommitted }
    }
}

/// What a read returned.
#[derive(Debug, Clone, Default)]
pub(crate) struct ReadResult {
    /// Batches back to back; the last one may be cut short by the size limit, as
    /// Kafka's reads by file position cut it.
    pub(crate) records: Bytes,
    /// Aborted transactions overlapping what was read (read_committed only).
    pub(crate) aborted: Vec<AbortedTxn>,
}

/// One partition's log.
#[derive(Debug, Clone, Default)]
pub(crate) struct PartitionLog {
    batches: Vec<StoredBatch>,
    log_start_offset: i64,
    next_offset: i64,
    producers: HashMap<i64, ProducerEntry>,
    /// Open transactions: producer id → offset of its first record in this partition.
    ongoing: BTreeMap<i64, i64>,
    aborted: Vec<AbortedTxn>,
    /// Kafka's leader epoch cache: (epoch, its first offset), epochs increasing. A
    /// leader adds its epoch at the log end when it takes over, and batches written
    /// under a newer epoch add theirs.
    epochs: Vec<(i32, i64)>,
}

fn in_sequence(last: i32, next: i32) -> bool {
    next == last.wrapping_add(1) || (next == 0 && last == i32::MAX)
}

impl PartitionLog {
    /// The offset of the next record: the log end offset and, with no replication, the
    /// high watermark.
    pub(crate) fn high_watermark(&self) -> i64 {
        self.next_offset
    }

    /// The first offset still in the log.
    pub(crate) fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    /// The first offset of the earliest open transaction, or the high watermark.
    pub(crate) fn last_stable_offset(&self) -> i64 {
        self.ongoing.values().copied().min().unwrap_or(self.next_offset)
    }

    /// The stored batches, oldest first.
    pub(crate) fn batches(&self) -> &[StoredBatch] {
        &self.batches
    }

    /// The leader epoch cache: (epoch, first offset), oldest first.
    pub(crate) fn epochs(&self) -> &[(i32, i64)] {
        &self.epochs
    }

    /// Starts `epoch` at the log end, as a new leader does, unless the cache already
    /// has it or a newer one.
    pub(crate) fn start_epoch(&mut self, epoch: i32) {
        if epoch >= 0 && self.epochs.last().is_none_or(|(e, _)| *e < epoch) {
            self.epochs.push((epoch, self.next_offset));
        }
    }

    /// Where `epoch` ends in this log, as Kafka's leader epoch cache answers
    /// (OffsetsForLeaderEpoch, and Fetch's `last_fetched_epoch` check): the current
    /// epoch ends at the log end; an older one at the first offset of the next epoch
    /// the cache has, paired with the largest epoch not above it (or `epoch` itself
    /// when the cache has none, its records being gone). `None` (undefined) for a
    /// negative epoch or one newer than any the cache has.
    pub(crate) fn end_offset_for_epoch(&self, epoch: i32) -> Option<(i32, i64)> {
        if epoch < 0 {
            return None;
        }
        if self.epochs.last().is_some_and(|(e, _)| *e == epoch) {
            return Some((epoch, self.next_offset));
        }
        let higher = self.epochs.iter().find(|(e, _)| *e > epoch)?;
        match self.epochs.iter().rev().find(|(e, _)| *e <= epoch) {
            Some((floor, _)) => Some((*floor, higher.1)),
            None => Some((epoch, higher.1)),
        }
    }

    /// Aborted transactions still (partly) in the log.
    pub(crate) fn aborted(&self) -> &[AbortedTxn] {
        &self.aborted
    }

    /// Open transactions: producer id → first offset.
    pub(crate) fn ongoing(&self) -> &BTreeMap<i64, i64> {
        &self.ongoing
    }

    /// Appends one producer batch (already checked for CRC, size and transaction
    /// membership). Returns the base offset: the new one, or the original one when the
    /// batch repeats one of the producer's last five (Kafka answers such retries with
    /// success and the offset first assigned).
    pub(crate) fn append(&mut self, batch: &RawBatch, leader_epoch: i32) -> Result<i64, AppendError> {
        let h = *batch.header();
        if h.producer_id >= 0 && h.base_sequence != NO_SEQUENCE {
            if let Some(original) = self.check_producer(&h)? {
                return Ok(original);
            }
        } else if h.is_transactional() {
            return Err(AppendError::new(ErrorCode::InvalidRecord, "a transactional batch needs a producer id"));
        }
        if h.producer_id >= 0 && !h.is_transactional() && self.ongoing.contains_key(&h.producer_id) {
            return Err(AppendError::new(
                ErrorCode::InvalidTxnState,
                "a non-transactional batch from a producer with an open transaction",
            ));
        }
        let base = self.next_offset;
        self.start_epoch(leader_epoch);
        let stored = stamp(batch.as_bytes(), base, leader_epoch);
        let header = BatchHeader { base_offset: base, partition_leader_epoch: leader_epoch, ..h };
        self.next_offset = header.next_offset();
        if h.producer_id >= 0 {
            if h.is_transactional() {
                self.ongoing.entry(h.producer_id).or_insert(base);
            }
            if h.base_sequence != NO_SEQUENCE {
                let entry = self.producers.entry(h.producer_id).or_default();
                if entry.epoch != h.producer_epoch {
                    entry.batches.clear();
                    entry.epoch = h.producer_epoch;
                }
                entry.batches.push_back(BatchMeta {
                    first_seq: h.base_sequence,
                    last_seq: h.last_sequence(),
                    first_offset: base,
                });
                while entry.batches.len() > PRODUCER_BATCH_CACHE {
                    entry.batches.pop_front();
                }
            }
        }
        self.batches.push(StoredBatch { header, bytes: stored });
        Ok(base)
    }

    /// Kafka's producer state checks. `Ok(Some(offset))` is a duplicate of a cached batch.
    fn check_producer(&self, h: &BatchHeader) -> Result<Option<i64>, AppendError> {
        let Some(entry) = self.producers.get(&h.producer_id) else {
            // No state (a new producer, or one whose records are gone): Kafka (since
            // KIP-360) accepts any sequence.
            return Ok(None);
        };
        if h.producer_epoch < entry.epoch {
            return Err(AppendError::new(
                ErrorCode::InvalidProducerEpoch,
                format!("producer epoch {} is older than the current epoch {}", h.producer_epoch, entry.epoch),
            ));
        }
        if h.producer_epoch == entry.epoch {
            let last_seq = h.last_sequence();
            if let Some(dup) = entry.batches.iter().find(|b| b.first_seq == h.base_sequence && b.last_seq == last_seq) {
                return Ok(Some(dup.first_offset));
            }
            if !in_sequence(entry.last_seq(), h.base_sequence) {
                return Err(AppendError::new(
                    ErrorCode::OutOfOrderSequenceNumber,
                    format!(
                        "out of order sequence number for producer {} at epoch {}: {} (incoming seq. number), {} (current end sequence number)",
                        h.producer_id,
                        h.producer_epoch,
                        h.base_sequence,
                        entry.last_seq()
                    ),
                ));
            }
        } else if h.base_sequence != 0 {
            return Err(AppendError::new(
                ErrorCode::OutOfOrderSequenceNumber,
                format!("invalid sequence number for new epoch {}: {} (must be 0)", h.producer_epoch, h.base_sequence),
            ));
        }
        Ok(None)
    }

    /// Writes a COMMIT or ABORT marker for `producer_id`'s open transaction (a marker is
    /// written even when the producer wrote nothing here, as the coordinator writes one to
    /// every partition it added). Returns the marker's offset.
    pub(crate) fn append_marker(
        &mut self,
        producer_id: i64,
        producer_epoch: i16,
        commit: bool,
        leader_epoch: i32,
        now_ms: i64,
    ) -> i64 {
        let offset = self.next_offset;
        self.start_epoch(leader_epoch);
        let options = BatchOptions {
            base_offset: offset,
            partition_leader_epoch: leader_epoch,
            producer_id,
            producer_epoch,
            ..BatchOptions::default()
        };
        let result = if commit { ControlRecordType::Commit } else { ControlRecordType::Abort };
        // Encoding one fixed-size control record cannot fail.
        let Ok(bytes) = end_transaction_batch(&options, now_ms, result, 0) else {
            tracing::error!(producer_id, "could not encode a transaction marker");
            return offset;
        };
        let Ok(raw) = RawBatch::new(bytes) else {
            tracing::error!(producer_id, "could not read back a transaction marker");
            return offset;
        };
        if let Some(first) = self.ongoing.remove(&producer_id) {
            if !commit {
                self.aborted.push(AbortedTxn { producer_id, first_offset: first, last_offset: offset });
            }
        }
        if let Some(entry) = self.producers.get_mut(&producer_id) {
            if producer_epoch > entry.epoch {
                entry.epoch = producer_epoch;
                entry.batches.clear();
            }
        }
        self.next_offset = raw.header().next_offset();
        self.batches.push(StoredBatch { header: *raw.header(), bytes: raw.into_bytes() });
        offset
    }

    /// Reads from `offset`: whole batches from the one holding `offset`, up to `max_bytes`
    /// (the last batch cut short at the limit), stopping at the high watermark or, for
    /// read_committed, at the last stable offset. With `min_one`, a first batch larger
    /// than `max_bytes` is returned whole (KIP-74).
    pub(crate) fn read(&self, offset: i64, max_bytes: usize, isolation: Isolation, min_one: bool) -> ReadResult {
        let limit = match isolation {
            Isolation::ReadUncommitted => self.high_watermark(),
            Isolation::ReadCommitted => self.last_stable_offset(),
        };
        let start = self.batches.partition_point(|b| b.last_offset() < offset);
        let mut out = BytesMut::new();
        let mut upper = offset;
        for (i, b) in self.batches[start..].iter().enumerate() {
            if b.base_offset() >= limit {
                break;
            }
            let room = max_bytes.saturating_sub(out.len());
            if b.bytes.len() <= room || (i == 0 && min_one) {
                out.extend_from_slice(&b.bytes);
                upper = b.header.next_offset();
            } else {
                out.extend_from_slice(&b.bytes[..room]);
                break;
            }
        }
        let aborted = if isolation == Isolation::ReadCommitted {
            self.aborted.iter().filter(|a| a.last_offset >= offset && a.first_offset < upper).copied().collect()
        } else {
            Vec::new()
        };
        ReadResult { records: out.freeze(), aborted }
    }

    /// Drops every batch that ends before `offset` and moves the log start offset there
    /// (at most to the high watermark), as DeleteRecords and retention do. The epoch
    /// cache keeps the epoch of the new log start, from there.
    pub(crate) fn truncate_before(&mut self, offset: i64) -> i64 {
        let offset = offset.clamp(self.log_start_offset, self.next_offset);
        self.log_start_offset = offset;
        self.batches.retain(|b| b.last_offset() >= offset);
        self.aborted.retain(|a| a.last_offset >= offset);
        let gone = self.epochs.iter().take_while(|(_, start)| *start <= offset).count();
        if gone > 0 {
            let (epoch, _) = self.epochs[gone - 1];
            self.epochs.drain(..gone);
            self.epochs.insert(0, (epoch, offset));
        }
        offset
    }

    /// Drops every batch from the one holding `offset` on, as a replica does that
    /// becomes leader without them (an unclean election) or that truncates to its new
    /// leader's log: a log is cut between batches, so the end is the base offset of
    /// the batch holding `offset` (never below the log start). Producer state, open
    /// and aborted transactions and the epoch cache forget what went. Returns the new
    /// log end offset.
    pub(crate) fn truncate_from(&mut self, offset: i64) -> i64 {
        let offset = offset.clamp(self.log_start_offset, self.next_offset);
        let end = self
            .batches
            .iter()
            .find(|b| b.last_offset() >= offset)
            .map_or(self.next_offset, |b| b.base_offset().max(self.log_start_offset));
        self.batches.retain(|b| b.base_offset() < end);
        self.next_offset = end;
        self.epochs.retain(|(_, start)| *start < end);
        for entry in self.producers.values_mut() {
            entry.batches.retain(|b| b.first_offset < end);
        }
        self.producers.retain(|_, entry| !entry.batches.is_empty());
        self.ongoing.retain(|_, first| *first < end);
        let mut reopened = Vec::new();
        self.aborted.retain(|a| {
            if a.last_offset < end {
                return true;
            }
            // Its ABORT marker went: the transaction is open again, as far as this log
            // can tell.
            if a.first_offset < end {
                reopened.push((a.producer_id, a.first_offset));
            }
            false
        });
        self.ongoing.extend(reopened);
        end
    }

    /// The first offset whose record has a timestamp at or after `timestamp`, with that
    /// record's timestamp.
    pub(crate) fn offset_for_timestamp(&self, timestamp: i64) -> Option<(i64, i64)> {
        for b in &self.batches {
            if b.header.max_timestamp < timestamp {
                continue;
            }
            let Ok(decoded) = RawBatch::new(b.bytes.clone()).and_then(|r| r.decode()) else { continue };
            for r in decoded.iter() {
                if r.offset() >= self.log_start_offset && r.timestamp() >= timestamp {
                    return Some((r.offset(), r.timestamp()));
                }
            }
        }
        None
    }

    /// The offset and timestamp of the record with the largest timestamp (the first
    /// such record).
    pub(crate) fn max_timestamp(&self) -> Option<(i64, i64)> {
        let mut best: Option<(i64, i64)> = None;
        for b in &self.batches {
            if b.header.is_control() || best.is_some_and(|(_, ts)| b.header.max_timestamp <= ts) {
                continue;
            }
            let Ok(decoded) = RawBatch::new(b.bytes.clone()).and_then(|r| r.decode()) else { continue };
            for r in decoded.iter() {
                if r.offset() >= self.log_start_offset && best.is_none_or(|(_, ts)| r.timestamp() > ts) {
                    best = Some((r.offset(), r.timestamp()));
                }
            }
        }
        best
    }
}

/// The batch bytes with `base_offset` and `partition_leader_epoch` written in. Neither
/// field is covered by the batch CRC (it starts at the attributes), so the CRC stays valid.
fn stamp(batch: &Bytes, base_offset: i64, leader_epoch: i32) -> Bytes {
    let mut out = BytesMut::from(&batch[..]);
    if out.len() >= 16 {
        out[0..8].copy_from_slice(&base_offset.to_be_bytes());
        out[12..16].copy_from_slice(&leader_epoch.to_be_bytes());
    }
    out.freeze()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use klife_protocol::records::{RecordBatchWriter, RecordBatches};

    fn batch(n: usize, pid: i64, epoch: i16, seq: i32, txn: bool) -> RawBatch {
        let mut w = RecordBatchWriter::new(BatchOptions {
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            transactional: txn,
            ..BatchOptions::default()
        });
        for i in 0..n {
            w.append(1_000 + i as i64, None, Some(format!("v{i}").as_bytes())).unwrap();
        }
        RawBatch::new(w.finish().unwrap()).unwrap()
    }

    #[test]
    fn appends_assign_offsets_and_keep_crcs_valid() {
        let mut log = PartitionLog::default();
        assert_eq!(log.append(&batch(3, -1, -1, -1, false), 0).unwrap(), 0);
        assert_eq!(log.append(&batch(2, -1, -1, -1, false), 4).unwrap(), 3);
        assert_eq!(log.high_watermark(), 5);
        let read = log.read(0, 1 << 20, Isolation::ReadUncommitted, true);
        let batches: Vec<_> = RecordBatches::new(read.records).map(|b| b.unwrap()).collect();
        assert_eq!(batches.len(), 2);
        assert_eq!(batches[1].header().base_offset, 3);
        assert_eq!(batches[1].header().partition_leader_epoch, 4);
        batches[1].verify_crc().unwrap();
        let records = batches[1].decode().unwrap().to_records();
        assert_eq!(records.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![3, 4]);
    }

    #[test]
    fn duplicates_of_recent_batches_get_their_original_offset() {
        let mut log = PartitionLog::default();
        for i in 0..6 {
            assert_eq!(log.append(&batch(2, 7, 0, i * 2, false), 0).unwrap(), i64::from(i) * 2);
        }
        // The last five batches are remembered: retries get the original offset.
        assert_eq!(log.append(&batch(2, 7, 0, 10, false), 0).unwrap(), 10);
        assert_eq!(log.append(&batch(2, 7, 0, 2, false), 0).unwrap(), 2);
        assert_eq!(log.high_watermark(), 12);
        // The first batch is no longer cached: it is out of order.
        assert_eq!(log.append(&batch(2, 7, 0, 0, false), 0).unwrap_err().code, ErrorCode::OutOfOrderSequenceNumber);
        // A gap is out of order too.
        assert_eq!(log.append(&batch(1, 7, 0, 13, false), 0).unwrap_err().code, ErrorCode::OutOfOrderSequenceNumber);
        // A new epoch starts at 0; an older epoch is refused.
        assert_eq!(log.append(&batch(1, 7, 1, 5, false), 0).unwrap_err().code, ErrorCode::OutOfOrderSequenceNumber);
        assert_eq!(log.append(&batch(1, 7, 1, 0, false), 0).unwrap(), 12);
        assert_eq!(log.append(&batch(1, 7, 0, 12, false), 0).unwrap_err().code, ErrorCode::InvalidProducerEpoch);
    }

    #[test]
    fn sequences_wrap_at_i32_max() {
        let mut log = PartitionLog::default();
        log.append(&batch(1, 9, 0, i32::MAX, false), 0).unwrap();
        assert_eq!(log.append(&batch(1, 9, 0, 0, false), 0).unwrap(), 1);
    }

    #[test]
    fn transactions_move_the_lso_and_record_aborts() {
        let mut log = PartitionLog::default();
        log.append(&batch(2, -1, -1, -1, false), 0).unwrap(); // 0..=1
        log.append(&batch(3, 5, 0, 0, true), 0).unwrap(); // 2..=4, open
        assert_eq!(log.last_stable_offset(), 2);
        assert_eq!(log.high_watermark(), 5);
        // read_committed stops at the LSO.
        let committed = log.read(0, 1 << 20, Isolation::ReadCommitted, true);
        let n: usize = RecordBatches::new(committed.records).map(|b| b.unwrap().header().records_count as usize).sum();
        assert_eq!(n, 2);
        // A non-transactional write from the same producer is refused meanwhile.
        assert_eq!(log.append(&batch(1, 5, 0, 3, false), 0).unwrap_err().code, ErrorCode::InvalidTxnState);
        let marker = log.append_marker(5, 0, false, 0, 2_000);
        assert_eq!(marker, 5);
        assert_eq!(log.last_stable_offset(), 6);
        assert_eq!(log.aborted(), &[AbortedTxn { producer_id: 5, first_offset: 2, last_offset: 5 }]);
        let read = log.read(0, 1 << 20, Isolation::ReadCommitted, true);
        assert_eq!(read.aborted.len(), 1);
        let batches: Vec<_> = RecordBatches::new(read.records).map(|b| b.unwrap().decode().unwrap()).collect();
        assert!(batches.last().unwrap().is_control());
        // Reads that start after the aborted range do not list it.
        assert!(log.read(6, 1 << 20, Isolation::ReadCommitted, true).aborted.is_empty());
        // Nor does read_uncommitted.
        assert!(log.read(0, 1 << 20, Isolation::ReadUncommitted, true).aborted.is_empty());
    }

    #[test]
    fn reads_cut_the_last_batch_at_the_limit_and_return_one_batch_at_least() {
        let mut log = PartitionLog::default();
        for _ in 0..4 {
            log.append(&batch(10, -1, -1, -1, false), 0).unwrap();
        }
        let size = log.batches()[0].bytes.len();
        let read = log.read(0, size + 10, Isolation::ReadUncommitted, true);
        assert_eq!(read.records.len(), size + 10);
        let mut it = RecordBatches::new(read.records);
        assert!(it.next().unwrap().is_ok());
        assert!(it.next().is_none());
        assert!(it.is_truncated());
        // A limit below one batch: the first batch whole, if allowed.
        assert_eq!(log.read(15, 10, Isolation::ReadUncommitted, true).records.len(), size);
        assert_eq!(log.read(15, 10, Isolation::ReadUncommitted, false).records.len(), 10);
    }

    #[test]
    fn truncation_moves_the_log_start() {
        let mut log = PartitionLog::default();
        for _ in 0..3 {
            log.append(&batch(10, -1, -1, -1, false), 0).unwrap();
        }
        assert_eq!(log.truncate_before(15), 15);
        assert_eq!(log.log_start_offset(), 15);
        assert_eq!(log.batches().len(), 2, "the batch holding offset 15 stays");
        assert_eq!(log.truncate_before(100), 30, "not past the high watermark");
        assert!(log.batches().is_empty());
        assert_eq!(log.truncate_before(3), 30, "never backwards");
    }

    #[test]
    fn the_epoch_cache_answers_as_kafkas() {
        let mut log = PartitionLog::default();
        log.append(&batch(3, -1, -1, -1, false), 0).unwrap(); // 0..=2 at epoch 0
        log.start_epoch(2); // a new leader, nothing written yet
        log.append(&batch(2, -1, -1, -1, false), 2).unwrap(); // 3..=4 at epoch 2
        log.append(&batch(2, -1, -1, -1, false), 4).unwrap(); // 5..=6 at epoch 4
        assert_eq!(log.epochs(), &[(0, 0), (2, 3), (4, 5)]);
        // (requested epoch) → (epoch, end offset)
        let cases = [
            (0, Some((0, 3))),
            (1, Some((0, 3))), // not in the cache: the largest one below, ending where the next starts
            (2, Some((2, 5))),
            (3, Some((2, 5))),
            (4, Some((4, 7))), // the current epoch ends at the log end
            (5, None),
            (-1, None),
        ];
        for (epoch, want) in cases {
            assert_eq!(log.end_offset_for_epoch(epoch), want, "epoch {epoch}");
        }
        // Epochs older than the log start: the requested one, to the next's start.
        log.truncate_before(5);
        assert_eq!(log.epochs(), &[(4, 5)]);
        assert_eq!(log.end_offset_for_epoch(1), Some((1, 5)));
        // Starting an epoch already there (or older) changes nothing.
        log.start_epoch(4);
        log.start_epoch(3);
        assert_eq!(log.epochs(), &[(4, 5)]);
    }

    #[test]
    fn truncating_the_tail_cuts_between_batches_and_forgets_what_went() {
        let mut log = PartitionLog::default();
        log.append(&batch(3, 7, 0, 0, false), 0).unwrap(); // 0..=2
        log.append(&batch(3, 7, 0, 3, false), 0).unwrap(); // 3..=5
        log.append(&batch(2, 8, 0, 0, true), 1).unwrap(); // 6..=7, open transaction, epoch 1
        assert_eq!(log.truncate_from(4), 3, "the batch holding 4 goes whole");
        assert_eq!((log.high_watermark(), log.last_stable_offset()), (3, 3));
        assert_eq!(log.epochs(), &[(0, 0)]);
        assert!(log.ongoing().is_empty());
        // The producer's state is what the log holds: its next batch follows the first.
        assert_eq!(log.append(&batch(1, 7, 0, 3, false), 2).unwrap(), 3);
        assert_eq!(log.epochs(), &[(0, 0), (2, 3)]);
        // An abort whose marker went reopens the transaction.
        let mut log = PartitionLog::default();
        log.append(&batch(2, 5, 0, 0, true), 0).unwrap(); // 0..=1
        log.append_marker(5, 0, false, 0, 0); // 2
        assert_eq!(log.truncate_from(2), 2);
        assert!(log.aborted().is_empty());
        assert_eq!(log.ongoing().get(&5), Some(&0));
        // Past the end, nothing goes.
        assert_eq!(log.truncate_from(10), 2);
    }

    #[test]
    fn timestamps_are_looked_up() {
        let mut log = PartitionLog::default();
        log.append(&batch(5, -1, -1, -1, false), 0).unwrap(); // 1000..=1004
        log.append(&batch(5, -1, -1, -1, false), 0).unwrap(); // 1000..=1004 again
        assert_eq!(log.offset_for_timestamp(1003), Some((3, 1003)));
        assert_eq!(log.offset_for_timestamp(2000), None);
        assert_eq!(log.max_timestamp(), Some((4, 1004)));
    }

    proptest::proptest! {
        /// Fetching from offset 0 onwards under any size limit, in either isolation,
        /// returns every offset below the high watermark (or the last stable offset)
        /// exactly once and in order, markers included.
        #[test]
        fn reads_under_any_limit_see_every_record_once(
            ops in proptest::collection::vec((0u8..4, 1usize..8), 1..25),
            max_bytes in 1usize..600,
            committed in proptest::bool::ANY,
        ) {
            let mut log = PartitionLog::default();
            let mut seq = 0;
            for (op, n) in ops {
                match op {
                    0 => { log.append(&batch(n, -1, -1, -1, false), 0).unwrap(); }
                    1 => {
                        log.append(&batch(n, 1, 0, seq, true), 0).unwrap();
                        seq += i32::try_from(n).unwrap();
                    }
                    c => { log.append_marker(1, 0, c == 2, 0, 0); }
                }
            }
            let isolation = if committed { Isolation::ReadCommitted } else { Isolation::ReadUncommitted };
            let end = if committed { log.last_stable_offset() } else { log.high_watermark() };
            let mut offset = 0;
            let mut seen = Vec::new();
            while offset < end {
                let read = log.read(offset, max_bytes, isolation, true);
                let before = offset;
                for b in RecordBatches::new(read.records) {
                    for r in b.unwrap().decode().unwrap().iter() {
                        if r.offset() >= offset {
                            seen.push(r.offset());
                            offset = r.offset() + 1;
                        }
                    }
                }
                proptest::prop_assert!(offset > before, "no progress at {}", before);
            }
            proptest::prop_assert_eq!(seen, (0..end).collect::<Vec<_>>());
        }
    }
}
