//! Turning one partition's answer into [`Fetched`] records: skipping what precedes the
//! fetch offset, control batches and aborted transactions. Sans-io.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use klife_protocol::records::{ControlRecordType, DecodeOptions, RecordBatches};

use crate::config::IsolationLevel;
use crate::error::FetchError;
use crate::record::{BatchInfo, Fetched, Record};

/// An aborted transaction as a Fetch answer lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AbortedTransaction {
    /// The producer whose transaction aborted.
    pub producer_id: i64,
    /// The transaction's first offset in this partition.
    pub first_offset: i64,
}

/// One partition's answer, error code already checked.
#[derive(Debug, Clone)]
pub struct PartitionAnswer {
    /// The `records` field.
    pub records: Option<Bytes>,
    /// The high watermark.
    pub high_watermark: i64,
    /// The last stable offset (-1 if absent).
    pub last_stable_offset: i64,
    /// The log start offset (-1 if absent).
    pub log_start_offset: i64,
    /// Aborted transactions (read_committed only).
    pub aborted: Vec<AbortedTransaction>,
}

/// What to do with one partition's answer.
#[derive(Debug)]
pub enum Decoded {
    /// Records (possibly none), or the error that stopped the first batch.
    Done(Result<Fetched, FetchError>),
    /// The answer held only the start of a batch larger than was asked for: ask again
    /// for at least `size` bytes.
    NeedBytes {
        /// The batch's size, log overhead included.
        size: usize,
    },
}

/// Reads the records of one partition's answer from `offset` on.
///
/// - Batches (and records of compressed batches) before `offset` are skipped.
/// - Control batches are never returned; they still advance `next_offset`.
/// - With read_committed, batches of the listed aborted transactions are dropped
///   (tracking each producer from its transaction's first offset to its ABORT marker,
///   as the Java client does), and nothing at or beyond the last stable offset is
///   returned. A marker's type is read from its key alone: its value may be null.
/// - A corrupt batch ends the answer: the records before it are returned, and if it
///   is the first batch, the error is. With read_committed, a control batch whose key
///   cannot be read is a corrupt batch.
/// - [`Fetched::last_epoch`] is the partition leader epoch of the batch that ends at
///   `next_offset` (control and aborted batches included), or `last_epoch` (the
///   fetch's) when the answer moved the offset nowhere.
pub fn decode_partition(
    topic: &Arc<str>,
    partition: i32,
    offset: i64,
    last_epoch: Option<i32>,
    isolation: IsolationLevel,
    answer: PartitionAnswer,
    options: &DecodeOptions,
) -> Decoded {
    let mut fetched = Fetched {
        topic: topic.clone(),
        partition,
        offset,
        records: Vec::new(),
        next_offset: offset,
        high_watermark: answer.high_watermark,
        last_stable_offset: answer.last_stable_offset,
        log_start_offset: answer.log_start_offset,
        last_epoch,
        topic_id: None,
    };
    let Some(bytes) = answer.records else {
        return Decoded::Done(Ok(fetched));
    };
    let committed = isolation == IsolationLevel::ReadCommitted;
    // Only a sane last stable offset limits what is returned.
    let stable_limit = if committed && answer.last_stable_offset >= 0 { answer.last_stable_offset } else { i64::MAX };
    let mut aborted = answer.aborted;
    aborted.sort_by_key(|a| std::cmp::Reverse(a.first_offset));
    let mut aborted_producers: HashSet<i64> = HashSet::new();

    let corrupt = |base: i64, source| FetchError::Corrupt { topic: topic.to_string(), partition, offset: base, source };
    let mut batches = RecordBatches::new(bytes);
    let mut any_batch = false;
    for raw in batches.by_ref() {
        let raw = match raw {
            Ok(raw) => raw,
            Err(e) => {
                let at = fetched.next_offset;
                return finish(fetched, Some(corrupt(at, e)));
            }
        };
        any_batch = true;
        let header = raw.header();
        let next = header.base_offset + i64::from(header.last_offset_delta) + 1;
        // Entirely before the fetch offset (a compressed batch's earlier part, or a
        // broker that answered from an earlier position): its records are not
        // returned, but with read_committed it still opens and ends aborted
        // transactions, as in the Java client.
        let before = next <= fetched.next_offset;
        if header.base_offset >= stable_limit {
            break;
        }
        let attributes = header.attributes;
        if committed && header.producer_id >= 0 {
            let last = next - 1;
            while aborted.last().is_some_and(|a| a.first_offset <= last) {
                if let Some(a) = aborted.pop() {
                    aborted_producers.insert(a.producer_id);
                }
            }
        }
        if attributes.is_control() {
            if committed && header.producer_id >= 0 {
                // The marker's type is read from its key alone; a key that cannot be
                // read stops the answer here, as a corrupt batch does: taking it for
                // anything would drop or expose the producer's later records.
                let record_type = match raw.decode_with(options) {
                    Ok(batch) => batch.control_record_type(),
                    Err(e) => return finish(fetched, Some(corrupt(header.base_offset, e))),
                };
                match record_type {
                    Some(Ok(ControlRecordType::Abort)) => {
                        aborted_producers.remove(&header.producer_id);
                    }
                    Some(Err(e)) => return finish(fetched, Some(corrupt(header.base_offset, e))),
                    Some(Ok(_)) | None => {}
                }
            }
            if !before {
                fetched.next_offset = next;
                fetched.last_epoch = epoch_of(header).or(fetched.last_epoch);
            }
            continue;
        }
        if before {
            continue;
        }
        if committed && attributes.is_transactional() && aborted_producers.contains(&header.producer_id) {
            fetched.next_offset = next;
            fetched.last_epoch = epoch_of(header).or(fetched.last_epoch);
            continue;
        }
        let batch = match raw.decode_with(options) {
            Ok(b) => b,
            Err(e) => return finish(fetched, Some(corrupt(header.base_offset, e))),
        };
        let info = BatchInfo {
            base_offset: header.base_offset,
            compression: batch.compression(),
            is_transactional: attributes.is_transactional(),
            producer_id: header.producer_id,
            producer_epoch: header.producer_epoch,
            base_sequence: header.base_sequence,
        };
        let leader_epoch = epoch_of(header);
        let timestamp_type = batch.timestamp_type();
        fetched.records.reserve(batch.len());
        let mut stopped = false;
        for r in batch.iter() {
            let o = r.offset();
            if o < offset {
                continue;
            }
            if o >= stable_limit {
                stopped = true;
                if stable_limit > fetched.next_offset {
                    fetched.next_offset = stable_limit;
                    fetched.last_epoch = leader_epoch.or(fetched.last_epoch);
                }
                break;
            }
            fetched.records.push(Record {
                topic: topic.clone(),
                partition,
                offset: o,
                timestamp: r.timestamp(),
                timestamp_type,
                key: r.key_bytes(),
                value: r.value_bytes(),
                headers: if r.header_count() == 0 { Vec::new() } else { r.headers().map(|h| h.to_header()).collect() },
                leader_epoch,
                batch: info,
            });
        }
        if stopped {
            break;
        }
        fetched.next_offset = next;
        fetched.last_epoch = leader_epoch.or(fetched.last_epoch);
    }
    if !any_batch {
        if let Some(tail) = batches.partial_tail() {
            // Not even one whole batch: its header says how much to ask for.
            if let Some(size) = batch_size(tail) {
                return Decoded::NeedBytes { size };
            }
        }
    }
    finish(fetched, None)
}

/// A batch's partition leader epoch, when the broker set one.
fn epoch_of(header: &klife_protocol::records::BatchHeader) -> Option<i32> {
    (header.partition_leader_epoch >= 0).then_some(header.partition_leader_epoch)
}

/// Records read before an error are returned; an error before any record is.
fn finish(fetched: Fetched, error: Option<FetchError>) -> Decoded {
    match error {
        Some(e) if fetched.records.is_empty() && fetched.next_offset == fetched.offset => Decoded::Done(Err(e)),
        _ => Decoded::Done(Ok(fetched)),
    }
}

/// The full size of the batch starting `tail`, from its length field.
fn batch_size(tail: &[u8]) -> Option<usize> {
    let length = tail.get(8..12)?;
    let length = i32::from_be_bytes([length[0], length[1], length[2], length[3]]);
    usize::try_from(length).ok().map(|n| n + klife_protocol::records::LOG_OVERHEAD)
}

#[cfg(test)]
mod tests;
