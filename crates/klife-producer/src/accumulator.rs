//! Record accumulation: per-partition batches being filled, sealed when full, ready
//! when full or when they have lingered long enough, drained into finished batch bytes
//! for a Produce request. Plain data: the caller passes `now` and owns every clock,
//! task and socket.
//!
//! Each record carries a token of the caller's type `T` (a completion handle, say);
//! tokens come back, in record order, with the drained batch, so the caller can tell
//! each record's sender what became of it. Each batch also carries one value of the
//! caller's type `S`, shared by its records (the producer keeps there the batch's
//! completion, which every record's future reads, instead of a channel per record).
//!
//! Memory is bounded: every batch holds the memory allocated for it (its records'
//! encoded bytes and the room preallocated past them) against `buffer_memory` until
//! the caller releases it (after the broker answered for it, or it failed for good).
//! A new batch preallocates less when the buffer is short. A full buffer refuses the
//! record, handing its token back.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use klife_protocol::Compression;
use klife_protocol::records::{BATCH_HEADER_SIZE, BatchOptions, HeaderRef, RecordBatchWriter, encoded_record_size};

use crate::hash::FastMap;

pub use klife_protocol::TopicPartition;

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

/// The producer's defaults ([`ProducerConfig::default`](crate::ProducerConfig)).
impl Default for AccumulatorConfig {
    fn default() -> Self {
        crate::ProducerConfig::default().accumulator()
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
    /// The partition has no open batch with room for the record (from
    /// [`Accumulator::append_to_open_batch`] only): a sticky partitioner moves on.
    #[error("the partition has no open batch with room for the record")]
    NoOpenBatch {
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
            | AppendError::NoOpenBatch { token }
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
    /// The record's position in its batch (0 for the first record).
    pub index: usize,
}

/// Which partitions have batches to send.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Readiness {
    /// Partitions with a batch ready now.
    pub ready: Vec<TopicPartition>,
    /// The earliest time a batch that is not ready yet becomes ready.
    pub next_ready_at: Option<Instant>,
}

/// A batch taken out of the accumulator, stamped but not finished yet: finishing
/// (compression and CRC) is left to the caller, so that it can happen outside whatever
/// lock guards the accumulator.
#[derive(Debug)]
pub struct TakenBatch<T, S = ()> {
    /// Where it goes.
    pub partition: TopicPartition,
    /// The records, to be finished into the batch bytes.
    pub writer: RecordBatchWriter,
    /// The records' tokens, in record order.
    pub tokens: Vec<T>,
    /// The value shared by the batch's records (see [`Accumulator::append_record`]).
    pub shared: S,
    /// When its first record was appended.
    pub created: Instant,
    /// Bytes it holds against `buffer_memory`: pass to [`Accumulator::release`] when done.
    pub reserved: usize,
}

impl<T, S> TakenBatch<T, S> {
    /// Finishes the batch bytes (compressed, with the CRC).
    ///
    /// A batch that cannot be finished (its codec fails) comes back as a
    /// [`FinishError`] with its tokens, so that its records can be failed.
    // The error hands the whole batch back on purpose (a codec failure, rare).
    #[allow(clippy::result_large_err)]
    pub fn finish(self) -> Result<DrainedBatch<T, S>, FinishError<T, S>> {
        let TakenBatch { partition, writer, tokens, shared, created, reserved } = self;
        let drained = |bytes| DrainedBatch { partition, bytes, tokens, shared, created, reserved };
        match writer.finish() {
            Ok(bytes) => Ok(drained(bytes)),
            Err(e) => Err(FinishError { reason: e.to_string(), batch: drained(Bytes::new()) }),
        }
    }
}

/// A finished batch, taken out of the accumulator.
#[derive(Debug)]
pub struct DrainedBatch<T, S = ()> {
    /// Where it goes.
    pub partition: TopicPartition,
    /// The complete batch bytes (compressed, with its CRC).
    pub bytes: Bytes,
    /// The records' tokens, in record order.
    pub tokens: Vec<T>,
    /// The value shared by the batch's records (see [`Accumulator::append_record`]).
    pub shared: S,
    /// When its first record was appended.
    pub created: Instant,
    /// Bytes it holds against `buffer_memory`: pass to [`Accumulator::release`] when done.
    pub reserved: usize,
}

/// A batch that could not be finished (its codec failed); its tokens are in `batch`,
/// whose `bytes` are empty.
#[derive(Debug)]
pub struct FinishError<T, S = ()> {
    /// What the codec said.
    pub reason: String,
    /// The batch's records, to be failed.
    pub batch: DrainedBatch<T, S>,
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

struct Batch<T, S> {
    writer: RecordBatchWriter,
    tokens: Vec<T>,
    shared: S,
    created: Instant,
    reserved: usize,
}

struct PartitionQueue<T, S> {
    open: Option<Batch<T, S>>,
    sealed: VecDeque<Batch<T, S>>,
    /// Size of the partition's last batch, to preallocate the next one: a busy
    /// partition gets its batches at full size at once (no regrowth, no copies), a
    /// quiet one small buffers.
    last_size: usize,
}

impl<T, S> PartitionQueue<T, S> {
    fn is_empty(&self) -> bool {
        self.open.is_none() && self.sealed.is_empty()
    }
}

impl<T, S> Default for PartitionQueue<T, S> {
    fn default() -> Self {
        PartitionQueue { open: None, sealed: VecDeque::new(), last_size: 0 }
    }
}

/// A partition's queue in an [`Accumulator`] (see [`Accumulator::queue_id`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct QueueId(usize);

/// Room preallocated for a partition's first batch (it grows as records come; later
/// batches start at the size of the partition's previous one). Small, since it is held
/// against `buffer_memory`: a producer writing to a thousand partitions holds as many
/// open batches.
const FIRST_BATCH_CAPACITY: usize = 1024;

/// A new batch preallocates at most this share of the free buffer (and at least the
/// room for its first record), so that a buffer running short is shared among
/// partitions instead of going to the first few.
const FREE_SHARE: usize = 8;

/// Most buffers of completed batches kept for reuse (see [`Accumulator::recycle`]).
pub const SPARE_BUFFERS: usize = 8;

/// Room past the batch size, so that a batch filled up to it does not regrow.
const CAPACITY_MARGIN: usize = 64;

/// Per-partition record accumulation. See the [module docs](self).
///
/// `T` is a token per record; `S` a value shared by every record of a batch, made with
/// `S::default()` when the batch opens (the producer keeps its batch's completion
/// there, so that records do not each need a channel).
pub struct Accumulator<T, S = ()> {
    config: AccumulatorConfig,
    /// Queues of the partitions seen so far (kept when empty, with their size hint),
    /// at their [`QueueId`].
    queues: Vec<(TopicPartition, PartitionQueue<T, S>)>,
    /// Where each partition's queue is.
    index: FastMap<TopicPartition, QueueId>,
    /// Buffers of completed batches, for new batches to be written into (no fresh
    /// allocation, page faults or zeroing).
    spare: Vec<BytesMut>,
    buffered: usize,
    records: usize,
}

impl<T, S> std::fmt::Debug for Accumulator<T, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Accumulator")
            .field("partitions", &self.queues.len())
            .field("buffered", &self.buffered)
            .field("records", &self.records)
            .finish()
    }
}

impl<T> Accumulator<T> {
    /// An empty accumulator whose batches share no value.
    pub fn new(config: AccumulatorConfig) -> Self {
        Accumulator::with_shared(config)
    }
}

impl<T, S: Default> Accumulator<T, S> {
    /// An empty accumulator whose batches each share an `S`.
    pub fn with_shared(config: AccumulatorConfig) -> Self {
        Accumulator {
            config,
            queues: Vec::new(),
            index: FastMap::default(),
            spare: Vec::new(),
            buffered: 0,
            records: 0,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &AccumulatorConfig {
        &self.config
    }

    /// Bytes held against `buffer_memory`: the memory of open and sealed batches, and of
    /// drained batches not yet released.
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
        let queue = self.queue_id(partition);
        self.append_record(queue, timestamp, key, value, headers, token, || now).map(|(appended, _)| appended)
    }

    /// The partition's queue, made if needed: pass it to
    /// [`append_record`](Self::append_record) to append without looking the partition
    /// up. A partition keeps its queue for the accumulator's life.
    pub fn queue_id(&mut self, partition: &TopicPartition) -> QueueId {
        if let Some(id) = self.index.get(partition) {
            return *id;
        }
        let id = QueueId(self.queues.len());
        self.queues.push((partition.clone(), PartitionQueue::default()));
        self.index.insert(partition.clone(), id);
        id
    }

    fn queue(&self, partition: &TopicPartition) -> Option<&PartitionQueue<T, S>> {
        self.index.get(partition).map(|id| &self.queues[id.0].1)
    }

    fn queue_mut(&mut self, partition: &TopicPartition) -> Option<&mut PartitionQueue<T, S>> {
        self.index.get(partition).map(|id| &mut self.queues[id.0].1)
    }

    /// Like [`append`](Self::append), to the partition of `queue` (from
    /// [`queue_id`](Self::queue_id)), and also returns the value shared by the record's
    /// batch; the record is number [`Appended::index`] of that batch. The clock is read
    /// (`now` called) only when the record opens a new batch.
    #[allow(clippy::too_many_arguments)]
    pub fn append_record<H: HeaderRef>(
        &mut self,
        queue: QueueId,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[H],
        token: T,
        now: impl FnOnce() -> Instant,
    ) -> Result<(Appended, &S), AppendError<T>> {
        self.append_inner(queue, timestamp, key, value, headers, token, Some(now))
    }

    /// Like [`append_record`](Self::append_record), but only into the partition's open
    /// batch: when it has none, or no room for the record, the record is refused with
    /// [`AppendError::NoOpenBatch`] and nothing changes. A sticky partitioner (KIP-480)
    /// then moves on to another partition instead of starting a new batch here.
    #[allow(clippy::too_many_arguments)]
    pub fn append_to_open_batch<H: HeaderRef>(
        &mut self,
        queue: QueueId,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[H],
        token: T,
    ) -> Result<(Appended, &S), AppendError<T>> {
        self.append_inner(queue, timestamp, key, value, headers, token, None::<fn() -> Instant>)
    }

    /// Appends; `now` is `None` when the record may only go into the open batch.
    #[allow(clippy::too_many_arguments)]
    fn append_inner<H: HeaderRef>(
        &mut self,
        queue: QueueId,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[H],
        token: T,
        now: Option<impl FnOnce() -> Instant>,
    ) -> Result<(Appended, &S), AppendError<T>> {
        let config = &self.config;
        let Some((_, queue)) = self.queues.get_mut(queue.0) else {
            return Err(AppendError::Encode { reason: "no such queue in this accumulator".into(), token });
        };
        // What the record costs in the open batch, if it fits there.
        let in_open = queue.open.as_ref().and_then(|b| {
            let size = b.writer.next_record_size(timestamp, key, value, headers);
            let fits = b.writer.is_empty() || b.writer.size_in_bytes().saturating_add(size) <= config.batch_size;
            fits.then_some(size)
        });
        let needed = match (in_open, now.is_some()) {
            (None, false) => return Err(AppendError::NoOpenBatch { token }),
            // Alone in a new batch (offset and timestamp deltas 0) a record takes no
            // more room than in an open one: a record that fits an open batch fits
            // the limit.
            (Some(size), _) if BATCH_HEADER_SIZE + size <= config.max_record_batch_size => size,
            _ => {
                let alone = encoded_record_size(0, 0, key, value, headers);
                if BATCH_HEADER_SIZE + alone > config.max_record_batch_size {
                    return Err(AppendError::RecordTooLarge {
                        size: BATCH_HEADER_SIZE + alone,
                        limit: config.max_record_batch_size,
                        token,
                    });
                }
                in_open.unwrap_or(alone)
            }
        };
        let free = config.buffer_memory.saturating_sub(self.buffered);
        let mut new_batch = false;
        if let (None, Some(now)) = (in_open, now) {
            // A new batch holds its whole allocation against the buffer: the room for
            // this record at least, and as much as the partition's batches took before
            // when the buffer has it.
            let least = BATCH_HEADER_SIZE + needed + CAPACITY_MARGIN;
            if least > free {
                return Err(AppendError::BufferFull {
                    buffered: self.buffered,
                    limit: config.buffer_memory,
                    needed: least,
                    token,
                });
            }
            if let Some(full) = queue.open.take() {
                queue.last_size = full.writer.size_in_bytes();
                queue.sealed.push_back(full);
            }
            let options = BatchOptions { compression: config.compression, ..BatchOptions::default() };
            let hint = if queue.last_size == 0 { FIRST_BATCH_CAPACITY } else { queue.last_size };
            let preferred = (BATCH_HEADER_SIZE + needed).max(hint.min(config.batch_size)) + CAPACITY_MARGIN;
            let capacity = preferred.min((free / FREE_SHARE).max(least));
            // A partition that fills its batches reuses a spare buffer, when there is one
            // and the buffer has room for all of it.
            let writer = match self.spare.pop() {
                Some(buffer)
                    if capacity >= config.batch_size / 2
                        && buffer.capacity() >= capacity
                        && buffer.capacity() <= free =>
                {
                    RecordBatchWriter::with_buffer(options, buffer)
                }
                other => {
                    self.spare.extend(other);
                    RecordBatchWriter::with_capacity(options, capacity)
                }
            };
            let reserved = writer.room();
            self.buffered += reserved;
            queue.open = Some(Batch { writer, tokens: Vec::new(), shared: S::default(), created: now(), reserved });
            new_batch = true;
        } else if let Some(open) = queue.open.as_ref() {
            // A batch that must grow for the record holds its new room too.
            let growth = open.writer.room_after(needed).saturating_sub(open.reserved);
            if growth > free {
                return Err(AppendError::BufferFull {
                    buffered: self.buffered,
                    limit: config.buffer_memory,
                    needed: growth,
                    token,
                });
            }
        }
        let Some(open) = queue.open.as_mut() else {
            return Err(AppendError::Encode { reason: "no open batch".into(), token });
        };
        if let Err(e) = open.writer.append_with_headers(timestamp, key, value, headers) {
            return Err(AppendError::Encode { reason: e.to_string(), token });
        }
        let index = open.tokens.len();
        open.tokens.push(token);
        let room = open.writer.room();
        if room > open.reserved {
            self.buffered += room - open.reserved;
            open.reserved = room;
        }
        self.records += 1;
        let batch_full = BATCH_HEADER_SIZE + open.writer.size_in_bytes() >= config.batch_size;
        Ok((Appended { new_batch, batch_full, index }, &open.shared))
    }

    /// Partitions with a batch ready at `now`: a sealed batch waits, or the open batch
    /// is full or has lingered `linger`. With `flush`, every batch is ready.
    pub fn ready(&self, now: Instant, flush: bool) -> Readiness {
        let mut r = Readiness::default();
        for (tp, q) in &self.queues {
            match self.queue_readiness(q, now, flush) {
                Ok(true) => r.ready.push(tp.clone()),
                Ok(false) => {}
                Err(d) => r.next_ready_at = Some(r.next_ready_at.map_or(d, |n: Instant| n.min(d))),
            }
        }
        r.ready.sort();
        r
    }

    /// Whether the partition has a batch ready at `now` (see [`ready`](Self::ready)).
    pub fn is_ready(&self, partition: &TopicPartition, now: Instant, flush: bool) -> bool {
        self.queue(partition).is_some_and(|q| self.queue_readiness(q, now, flush) == Ok(true))
    }

    /// `Ok(true)` when a batch of the queue is ready, `Ok(false)` when it has none, and
    /// when its open batch becomes ready otherwise.
    fn queue_readiness(&self, q: &PartitionQueue<T, S>, now: Instant, flush: bool) -> Result<bool, Instant> {
        let Some(open) = q.open.as_ref() else { return Ok(!q.sealed.is_empty()) };
        let due = open.created + self.config.linger;
        let full = BATCH_HEADER_SIZE + open.writer.size_in_bytes() >= self.config.batch_size;
        if !q.sealed.is_empty() || full || flush || due <= now { Ok(true) } else { Err(due) }
    }

    /// Takes the partition's oldest batch (a sealed one first, else the open one) and
    /// finishes it, stamped with `stamp` when the producer is idempotent.
    ///
    /// A batch that cannot be finished (its codec fails) comes back as a
    /// [`FinishError`] with its tokens, so that its records can be failed.
    #[allow(clippy::type_complexity)]
    pub fn drain(
        &mut self,
        partition: &TopicPartition,
        stamp: Option<ProducerStamp>,
    ) -> Option<Result<DrainedBatch<T, S>, FinishError<T, S>>> {
        self.take(partition, stamp).map(TakenBatch::finish)
    }

    /// Takes the partition's oldest batch (a sealed one first, else the open one),
    /// stamped with `stamp` when the producer is idempotent, for the caller to
    /// [`finish`](TakenBatch::finish).
    pub fn take(&mut self, partition: &TopicPartition, stamp: Option<ProducerStamp>) -> Option<TakenBatch<T, S>> {
        let queue = self.queue_mut(partition)?;
        let mut batch = match queue.sealed.pop_front() {
            Some(b) => b,
            None => queue.open.take()?,
        };
        queue.last_size = batch.writer.size_in_bytes();
        self.records -= batch.tokens.len();
        if let Some(s) = stamp {
            batch.writer.set_producer_state(s.producer_id, s.producer_epoch, s.base_sequence, s.transactional);
        }
        let Batch { writer, tokens, shared, created, reserved } = batch;
        Some(TakenBatch { partition: partition.clone(), writer, tokens, shared, created, reserved })
    }

    /// The number of records in the partition's next batch to drain (what its base
    /// sequence must cover), if it has one.
    pub fn next_batch_len(&self, partition: &TopicPartition) -> Option<usize> {
        let q = self.queue(partition)?;
        q.sealed.front().or(q.open.as_ref()).map(|b| b.tokens.len())
    }

    /// Gives back the memory of a batch that completed or failed for good.
    pub fn release(&mut self, reserved: usize) {
        self.buffered = self.buffered.saturating_sub(reserved);
    }

    /// Offers the bytes of a batch that is done with (sent and answered) for a later
    /// batch to be written into. They are kept only when nothing else refers to them
    /// and they can hold a full batch, and only a few of them at a time
    /// ([`SPARE_BUFFERS`], outside `buffer_memory`).
    pub fn recycle(&mut self, batch: Bytes) {
        if self.spare.len() >= SPARE_BUFFERS {
            return;
        }
        if let Ok(buffer) = batch.try_into_mut() {
            if buffer.capacity() >= self.config.batch_size {
                self.spare.push(buffer);
            }
        }
    }

    /// Partitions with waiting records.
    pub fn partitions(&self) -> impl Iterator<Item = &TopicPartition> {
        self.queues.iter().filter(|(_, q)| !q.is_empty()).map(|(tp, _)| tp)
    }
}

#[cfg(test)]
mod tests;
