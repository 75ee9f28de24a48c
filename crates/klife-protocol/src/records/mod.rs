//! Record batches, format v2 (magic 2): decoding, encoding, control records.
//!
//! Everything Kafka stores or moves is a sequence of record batches: the `records`
//! field of a Produce request or a Fetch response holds one or more of them back to back.
//! This module reads and writes them byte for byte as the broker and the Java client do.
//!
//! # Layout
//!
//! A batch is a fixed 61-byte header followed by its records, which may be compressed
//! as one unit:
//!
//! | offset | field                  | type  |
//! |-------:|------------------------|-------|
//! | 0      | `baseOffset`           | int64 |
//! | 8      | `batchLength` (bytes after this field) | int32 |
//! | 12     | `partitionLeaderEpoch` | int32 |
//! | 16     | `magic` (= 2)          | int8  |
//! | 17     | `crc`: CRC32C of bytes 21..end | uint32 |
//! | 21     | `attributes`           | int16 |
//! | 23     | `lastOffsetDelta`      | int32 |
//! | 27     | `baseTimestamp`        | int64 |
//! | 35     | `maxTimestamp`         | int64 |
//! | 43     | `producerId`           | int64 |
//! | 51     | `producerEpoch`        | int16 |
//! | 53     | `baseSequence`         | int32 |
//! | 57     | `recordsCount`         | int32 |
//! | 61     | records                |       |
//!
//! Each record is a signed varint length, then: attributes (int8, unused), timestamp
//! delta (varlong), offset delta (varint), key (varint length, -1 for null, then bytes),
//! value (same), header count (varint) and headers (varint key length and UTF-8 key,
//! varint value length, -1 for null, and value bytes).
//!
//! # Reading
//!
//! - [`RecordBatches`] walks the `records` bytes of a Fetch response: it yields each
//!   complete batch as a [`RawBatch`] and stops cleanly, without an error, at a batch the
//!   broker cut short.
//! - [`RawBatch::decode`] (or [`RecordBatch::decode`]) checks the CRC, decompresses, and
//!   indexes the records into a [`RecordBatch`]. The batch keeps one shared buffer and a
//!   compact table of positions; [`RecordView`] reads a record's key, value and headers
//!   as borrowed slices, or as [`Bytes`](bytes::Bytes) that share the buffer when owned
//!   values are wanted ([`RecordBatch::to_records`]).
//!
//! # Writing
//!
//! - [`RecordBatchWriter`] appends records one at a time and finishes into the complete
//!   batch bytes, compressed and with its CRC; it reports its size as it grows.
//! - [`encode_records`] and [`RecordBatch::encode`] encode whole batches at once.
//! - [`set_producer_state`] (and [`with_producer_state`] for shared bytes) re-stamps
//!   producer id, epoch, base sequence and the transactional flag on already-encoded
//!   batch bytes and rewrites the CRC, without touching the records.
//! - [`control`] reads and writes control records (transaction markers).

mod attributes;
pub mod control;
mod decode;
mod encode;
mod header;
mod index;
mod iter;
mod record;
pub(crate) mod varint;

#[cfg(test)]
pub(crate) mod golden_tests;
#[cfg(test)]
mod proptests;
#[cfg(test)]
mod tests;

pub use attributes::{BatchAttributes, TimestampType};
pub use control::{
    ControlBatchBuilder, ControlRecord, ControlRecordKey, ControlRecordType, EndTransactionMarker,
    end_transaction_batch,
};
pub use decode::{DecodeOptions, HeaderView, HeaderViews, RecordBatch, RecordView, RecordViews};
pub use encode::{
    BatchOptions, HeaderRef, RecordBatchWriter, encode_records, encoded_record_size, set_producer_state,
    with_producer_state,
};
pub use header::{BatchHeader, RawBatch};
pub use iter::RecordBatches;
pub use record::{Header, Record};

/// The magic byte (format version) of the record batches this module reads and writes.
pub const MAGIC: i8 = 2;

/// Size of the fixed header in front of a batch's records.
pub const BATCH_HEADER_SIZE: usize = 61;

/// Size of the `baseOffset` and `batchLength` fields that frame every batch (and every
/// legacy message set entry): the bytes before what `batchLength` counts.
pub const LOG_OVERHEAD: usize = 12;

/// `producerId` of a batch written without idempotence.
pub const NO_PRODUCER_ID: i64 = -1;

/// `producerEpoch` of a batch written without idempotence.
pub const NO_PRODUCER_EPOCH: i16 = -1;

/// `baseSequence` of a batch written without idempotence.
pub const NO_SEQUENCE: i32 = -1;

/// `partitionLeaderEpoch` of a batch the broker has not stamped yet.
pub const NO_PARTITION_LEADER_EPOCH: i32 = -1;

/// The "no timestamp" value (for example `maxTimestamp` of an empty batch).
pub const NO_TIMESTAMP: i64 = -1;

/// Default [`DecodeOptions::max_decompressed_size`]: 128 MiB.
pub const DEFAULT_MAX_DECOMPRESSED_SIZE: usize = 128 << 20;
