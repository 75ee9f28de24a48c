//! Record accumulation: per-partition batches being filled, sealed when full, ready
//! when full or when they have lingered long enough, drained into finished batch bytes
//! for a Produce request. Plain data: the caller passes `now` and owns every clock,
//! task and socket.
//!
//! Each record carries a token of the caller's type `T` (a completion handle, say);
//! tokens come back, in record order, with the drained batch, so the caller can tell
//! each record's sender what became of it.
//!
//! Memory is bounded: every record reserves its encoded size against
//! `buffer_memory` until the caller releases its batch (after the broker answered for
//! it, or it failed for good). A full buffer refuses the record, handing its token back.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use klife_protocol::Compression;
use klife_protocol::records::{BATCH_HEADER_SIZE, BatchOptions, HeaderRef, RecordBatchWriter, encoded_record_size};

/// A topic and partition. Cheap to clone: the topic is shared.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// Topic name.
    pub topic: Arc<str>,
    /// Partition index.
    pub partition: i32,
}

impl TopicPartition {
    /// A topic and partition.
    pub fn new(topic: impl Into<Arc<str>>, partition: i32) -> Self {
        TopicPartition { topic: topic.into(), partition }
    }
}

impl std::fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

/// How batches are built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccumulatorConfig {
    /// A batch is sealed (and ready) once its records take this many bytes
    /// (uncompressed). A single larger record still gets a batch of its own.
    pub batch_size: usize,
    /// A batch is ready this long after its first record, full or not.
    pub linger: Duration,
    /// Codec of the finished batches.
    pub compression: Compression,
    /// Most bytes of records held at once, across all partitions, until released.
    pub buffer_memory: usize,
    /// Largest batch accepted for one record (the broker's `max.request.size` side):
    /// a record whose batch would be larger is refused.
    pub max_record_batch_size: usize,
}

impl Default for AccumulatorConfig {
    fn default() -> Self {
        AccumulatorConfig {
            batch_size: 512 * 1024,
            linger: Duration::from_millis(5),
            compression: Compression::None,
            buffer_memory: 64 * 1024 * 1024,
            max_record_batch_size: 1024 * 1024,
        }
    }
}

/// Why a record was not accepted; the token comes back.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AppendError<T> {
    /// The buffer holds `buffer_memory` bytes already; try again after batches complete.
    #[error("the producer buffer is full: {buffered} of {limit} bytes held, and this record needs {needed}")]
    BufferFull {
        /// Bytes held.
        buffered: usize,
        /// The limit.
        limit: usize,
        /// Bytes this record needs.
        needed: usize,
        /// The record's token.
        token: T,
    },
    /// The record alone makes a batch larger than the limit.
    #[error("the record's batch would be {size} bytes, over the limit of {limit} bytes (max_record_batch_size)")]
    RecordTooLarge {
        /// The batch size the record would make.
        size: usize,
        /// The limit.
        limit: usize,
        /// The record's token.
        token: T,
    },
    /// The record could not be encoded (an offset delta or length beyond the format).
    #[error("the record cannot be encoded: {reason}")]
    Encode {
        /// What the codec said.
        reason: String,
        /// The record's token.
        token: T,
    },
}

impl<T> AppendError<T> {
    /// The token of the refused record.
    pub fn into_token(self) -> T {
        match self {
            AppendError::BufferFull { token, .. }
            | AppendError::RecordTooLarge { token, .. }
            | AppendError::Encode { token, .. } => token,
        }
    }
}

/// What happened to an accepted record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The record opened a new batch for its partition (the sticky partitioner moves on
    /// when the previous one is done).
    pub new_batch: bool,
    /// The partition's batch is now full: it can be sent without waiting for the linger.
    pub batch_full: bool,
}

/// Which partitions have batches to send.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Readiness {
    /// Partitions with a batch ready now.
    pub ready: Vec<TopicPartition>,
    /// The earliest time a batch that is not ready yet becomes ready.
    pub next_ready_at: Option<Instant>,
}

/// A finished batch, taken out of the accumulator.
#[derive(Debug)]
pub struct DrainedBatch<T> {
    /// Where it goes.
    pub partition: TopicPartition,
    /// The complete batch bytes (compressed, with its CRC).
    pub bytes: Bytes,
    /// The records' tokens, in record order.
    pub tokens: Vec<T>,
    /// When its first record was appended.
    pub created: Instant,
    /// Bytes it holds against `buffer_memory`: pass to [`Accumulator::release`] when done.
    pub reserved: usize,
}

/// A batch that could not be finished (its codec failed); its tokens are in `batch`,
/// whose `bytes` are empty.
#[derive(Debug)]
pub struct FinishError<T> {
    /// What the codec said.
    pub reason: String,
    /// The batch's records, to be failed.
    pub batch: DrainedBatch<T>,
}

/// The producer state a drained batch is stamped with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProducerStamp {
    /// Producer id.
    pub producer_id: i64,
    /// Producer epoch.
    pub producer_epoch: i16,
    /// Sequence of the batch's first record.
    pub base_sequence: i32,
    /// Whether the batch belongs to a transaction.
    pub transactional: bool,
}

struct Batch<T> {
    writer: RecordBatchWriter,
    tokens: Vec<T>,
    created: Instant,
    reserved: usize,
}

struct PartitionQueue<T> {
    open: Option<Batch<T>>,
    sealed: VecDeque<Batch<T>>,
}

impl<T> Default for PartitionQueue<T> {
    fn default() -> Self {
        PartitionQueue { open: None, sealed: VecDeque::new() }
    }
}

/// Per-partition record accumulation. See the [module docs](self).
pub struct Accumulator<T> {
    config: AccumulatorConfig,
    queues: HashMap<TopicPartition, PartitionQueue<T>>,
    buffered: usize,
    records: usize,
}

impl<T> std::fmt::Debug for Accumulator<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accumulator")
            .field("partitions", &self.queues.len())
            .field("buffered", &self.buffered)
            .field("records", &self.records)
            .finish()
    }
}

impl<T> Accumulator<T> {
    /// An empty accumulator.
    pub fn new(config: AccumulatorConfig) -> Self {
        Accumulator { config, queues: HashMap::new(), buffered: 0, records: 0 }
    }

    /// The configuration.
    pub fn config(&self) -> &AccumulatorConfig {
        &self.config
    }

    /// Bytes held against `buffer_memory` (records waiting, and drained batches not yet
    /// released).
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    /// Records waiting in the accumulator (not drained yet).
    pub fn waiting_records(&self) -> usize {
        self.records
    }

    /// Appends a record to its partition's open batch, opening or sealing batches as
    /// needed.
    #[allow(clippy::too_many_arguments)]
    pub fn append<H: HeaderRef>(
        &mut self,
        partition: &TopicPartition,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[H],
        token: T,
        now: Instant,
    ) -> Result<Appended, AppendError<T>> {
        let queue = self.queues.entry(partition.clone()).or_default();
        let config = &self.config;
        // What the record costs in an open batch, or alone in a new one.
        let in_open = queue.open.as_ref().map(|b| b.writer.next_record_size(timestamp, key, value, headers));
        // Alone in a new batch: offset delta 0, timestamp delta 0.
        let alone = encoded_record_size(0, 0, key, value, headers);
        if BATCH_HEADER_SIZE + alone > config.max_record_batch_size {
            return Err(AppendError::RecordTooLarge {
                size: BATCH_HEADER_SIZE + alone,
                limit: config.max_record_batch_size,
                token,
            });
        }
        let fits_open = queue
            .open
            .as_ref()
            .is_some_and(|b| b.writer.has_room_for(config.batch_size, timestamp, key, value, headers));
        let needed = if fits_open { in_open.unwrap_or(alone) } else { alone };
        if self.buffered + needed > config.buffer_memory {
            return Err(AppendError::BufferFull {
                buffered: self.buffered,
                limit: config.buffer_memory,
                needed,
                token,
            });
        }
        let mut new_batch = false;
        if !fits_open {
            if let Some(full) = queue.open.take() {
                queue.sealed.push_back(full);
            }
            let options = BatchOptions { compression: config.compression, ..BatchOptions::default() };
            let capacity = (BATCH_HEADER_SIZE + alone).max(config.batch_size.min(64 * 1024));
            queue.open = Some(Batch {
                writer: RecordBatchWriter::with_capacity(options, capacity),
                tokens: Vec::new(),
                created: now,
                reserved: 0,
            });
            new_batch = true;
        }
        let Some(open) = queue.open.as_mut() else {
            return Err(AppendError::Encode { reason: "no open batch".into(), token });
        };
        if let Err(e) = open.writer.append_with_headers(timestamp, key, value, headers) {
            return Err(AppendError::Encode { reason: e.to_string(), token });
        }
        open.tokens.push(token);
        open.reserved += needed;
        self.buffered += needed;
        self.records += 1;
        let batch_full = BATCH_HEADER_SIZE + open.writer.size_in_bytes() >= config.batch_size;
        Ok(Appended { new_batch, batch_full })
    }

    /// Partitions with a batch ready at `now`: a sealed batch waits, or the open batch
    /// is full or has lingered `linger`. With `flush`, every batch is ready.
    pub fn ready(&self, now: Instant, flush: bool) -> Readiness {
        let mut r = Readiness::default();
        for (tp, q) in &self.queues {
            let due = q.open.as_ref().map(|b| b.created + self.config.linger);
            let full =
                q.open.as_ref().is_some_and(|b| BATCH_HEADER_SIZE + b.writer.size_in_bytes() >= self.config.batch_size);
            if !q.sealed.is_empty() || full || (q.open.is_some() && (flush || due.is_some_and(|d| d <= now))) {
                r.ready.push(tp.clone());
            } else if let Some(d) = due {
                r.next_ready_at = Some(r.next_ready_at.map_or(d, |n: Instant| n.min(d)));
            }
        }
        r.ready.sort();
        r
    }

    /// Takes the partition's oldest batch (a sealed one first, else the open one) and
    /// finishes it, stamped with `stamp` when the producer is idempotent.
    ///
    /// A batch that cannot be finished (its codec fails) comes back as a
    /// [`FinishError`] with its tokens, so that its records can be failed.
    pub fn drain(
        &mut self,
        partition: &TopicPartition,
        stamp: Option<ProducerStamp>,
    ) -> Option<Result<DrainedBatch<T>, FinishError<T>>> {
        let queue = self.queues.get_mut(partition)?;
        let mut batch = match queue.sealed.pop_front() {
            Some(b) => b,
            None => queue.open.take()?,
        };
        if queue.open.is_none() && queue.sealed.is_empty() {
            self.queues.remove(partition);
        }
        self.records -= batch.tokens.len();
        if let Some(s) = stamp {
            batch.writer.set_producer_state(s.producer_id, s.producer_epoch, s.base_sequence, s.transactional);
        }
        let Batch { writer, tokens, created, reserved } = batch;
        let drained = |bytes| DrainedBatch { partition: partition.clone(), bytes, tokens, created, reserved };
        Some(match writer.finish() {
            Ok(bytes) => Ok(drained(bytes)),
            Err(e) => Err(FinishError { reason: e.to_string(), batch: drained(Bytes::new()) }),
        })
    }

    /// The number of records in the partition's next batch to drain (what its base
    /// sequence must cover), if it has one.
    pub fn next_batch_len(&self, partition: &TopicPartition) -> Option<usize> {
        let q = self.queues.get(partition)?;
        q.sealed.front().or(q.open.as_ref()).map(|b| b.tokens.len())
    }

    /// Gives back the memory of a batch that completed or failed for good.
    pub fn release(&mut self, reserved: usize) {
        self.buffered = self.buffered.saturating_sub(reserved);
    }

    /// Removes every waiting record of a partition (for example, its topic was deleted),
    /// returning their tokens in order and releasing their memory.
    pub fn abort_partition(&mut self, partition: &TopicPartition) -> Vec<T> {
        let Some(q) = self.queues.remove(partition) else { return Vec::new() };
        let mut tokens = Vec::new();
        for b in q.sealed.into_iter().chain(q.open) {
            self.buffered = self.buffered.saturating_sub(b.reserved);
            self.records -= b.tokens.len();
            tokens.extend(b.tokens);
        }
        tokens
    }

    /// Partitions with waiting records.
    pub fn partitions(&self) -> impl Iterator<Item = &TopicPartition> {
        self.queues.keys()
    }
}

#[cfg(test)]
mod tests;
