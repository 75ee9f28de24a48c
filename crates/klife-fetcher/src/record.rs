//! What a fetch returns: [`Record`]s and the partition state around them.

use std::sync::Arc;

use bytes::Bytes;
use klife_protocol::records::{Header, TimestampType};
use klife_protocol::{Compression, Uuid};

pub use klife_protocol::TopicPartitionOffset;

/// What the batch a record came in says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchInfo {
    /// The batch's first offset.
    pub base_offset: i64,
    /// The codec the batch was stored with.
    pub compression: Compression,
    /// Whether the batch belongs to a transaction.
    pub is_transactional: bool,
    /// The producer id (-1 for a producer without one).
    pub producer_id: i64,
    /// The producer epoch (-1 without a producer id).
    pub producer_epoch: i16,
    /// The batch's first sequence number (-1 for non-idempotent producers).
    pub base_sequence: i32,
}

/// A record read from a partition.
///
/// Keys, values and header values of uncompressed batches are slices of the fetch
/// response's buffer (no copy); those of compressed batches share the batch's
/// decompressed buffer. Holding any of them keeps that buffer alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The topic.
    pub topic: Arc<str>,
    /// The partition.
    pub partition: i32,
    /// The offset.
    pub offset: i64,
    /// Milliseconds since the epoch: the producer's time, or the broker's when
    /// `timestamp_type` is [`TimestampType::LogAppendTime`].
    pub timestamp: i64,
    /// Who set the timestamp.
    pub timestamp_type: TimestampType,
    /// The key.
    pub key: Option<Bytes>,
    /// The value.
    pub value: Option<Bytes>,
    /// The headers, in the order written, duplicates kept.
    pub headers: Vec<Header>,
    /// The leader epoch the record was written under, if the broker keeps it.
    pub leader_epoch: Option<i32>,
    /// The batch the record came in.
    pub batch: BatchInfo,
}

impl Record {
    /// The first header with this key (`None` when there is none; a header with a
    /// null value is `Some(None)`).
    pub fn header(&self, key: &str) -> Option<Option<&Bytes>> {
        self.headers.iter().find(|h| h.key == key).map(|h| h.value.as_ref())
    }
}

/// The answer for one partition of a fetch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The topic.
    pub topic: Arc<str>,
    /// The partition.
    pub partition: i32,
    /// The offset fetched from.
    pub offset: i64,
    /// The records, in offset order, starting at `offset` or later (offsets of
    /// compacted, aborted or control records are skipped). May be empty: nothing new
    /// arrived within the fetcher's `max_wait`.
    pub records: Vec<Record>,
    /// The offset to fetch from next: one past the last batch this answer covered,
    /// including batches that yielded no records (transaction markers, aborted
    /// transactions). Equal to `offset` when nothing was read.
    pub next_offset: i64,
    /// The partition's high watermark: the offset the next record will get (-1 when
    /// the broker's answer left the partition out, which some brokers do when the
    /// answer is full).
    pub high_watermark: i64,
    /// The last stable offset (-1 when the broker does not report it): with
    /// read_committed, nothing at or beyond it is returned yet.
    pub last_stable_offset: i64,
    /// The first offset still in the log (-1 when the broker does not report it).
    pub log_start_offset: i64,
    /// The leader epoch of the last batch before `next_offset`: that of the last batch
    /// this answer covered, or, when it covered none, the one the fetch was given.
    /// `None` when neither is known (or the broker keeps no epochs).
    pub last_epoch: Option<i32>,
    /// The id of the topic the records came from (`None` when the metadata gives no
    /// topic ids).
    pub topic_id: Option<Uuid>,
}

impl Fetched {
    /// Where the next fetch of the partition starts: `next_offset`, with this answer's
    /// [`last_epoch`](Self::last_epoch) and [`topic_id`](Self::topic_id), so that it
    /// notices a truncated log or a re-created topic.
    pub fn next_position(&self) -> TopicPartitionOffset {
        TopicPartitionOffset {
            topic: self.topic.clone(),
            partition: self.partition,
            offset: self.next_offset,
            last_epoch: self.last_epoch,
            topic_id: self.topic_id,
        }
    }

    /// Records between `next_offset` and the end of the log (the consumer's lag), or
    /// 0 when caught up.
    pub fn lag(&self) -> i64 {
        (self.high_watermark - self.next_offset).max(0)
    }
}

impl IntoIterator for Fetched {
    type Item = Record;
    type IntoIter = std::vec::IntoIter<Record>;

    fn into_iter(self) -> Self::IntoIter {
        self.records.into_iter()
    }
}
