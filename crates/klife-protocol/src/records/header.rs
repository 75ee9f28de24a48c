//! The fixed 61-byte batch header, and [`RawBatch`]: one complete, undecoded batch.

use bytes::Bytes;

use super::decode::{DecodeOptions, RecordBatch};
use super::{BATCH_HEADER_SIZE, BatchAttributes, LOG_OVERHEAD, MAGIC, TimestampType};
use crate::compression::Compression;
use crate::error::DecodeError;

/// Byte offsets of the header fields.
pub(crate) mod at {
    pub(crate) const BASE_OFFSET: usize = 0;
    pub(crate) const BATCH_LENGTH: usize = 8;
    pub(crate) const PARTITION_LEADER_EPOCH: usize = 12;
    pub(crate) const MAGIC: usize = 16;
    pub(crate) const CRC: usize = 17;
    pub(crate) const ATTRIBUTES: usize = 21;
    pub(crate) const LAST_OFFSET_DELTA: usize = 23;
    pub(crate) const BASE_TIMESTAMP: usize = 27;
    pub(crate) const MAX_TIMESTAMP: usize = 35;
    pub(crate) const PRODUCER_ID: usize = 43;
    pub(crate) const PRODUCER_EPOCH: usize = 51;
    pub(crate) const BASE_SEQUENCE: usize = 53;
    pub(crate) const RECORDS_COUNT: usize = 57;
}

/// Reads `N` bytes at `at` from a buffer already known to hold the whole header.
#[inline]
fn field<const N: usize>(b: &[u8; BATCH_HEADER_SIZE], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    out.copy_from_slice(&b[at..at + N]);
    out
}

/// The fixed header of a v2 record batch, every field as it is on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BatchHeader {
    /// Offset of the first record (the base of every record's offset delta).
    pub base_offset: i64,
    /// Bytes in the batch after this field: the batch is `12 + batch_length` bytes long.
    pub batch_length: i32,
    /// The leader epoch the broker stamped when it appended the batch; -1 from producers.
    pub partition_leader_epoch: i32,
    /// Format version, 2.
    pub magic: i8,
    /// CRC32C of the batch from `attributes` to the end.
    pub crc: u32,
    /// Codec, timestamp type and flags.
    pub attributes: BatchAttributes,
    /// Offset delta of the last record (kept by compaction even if that record is gone).
    pub last_offset_delta: i32,
    /// Base of every record's timestamp delta (the delete horizon, if that flag is set).
    pub base_timestamp: i64,
    /// Largest record timestamp, or the append time for log-append-time batches.
    pub max_timestamp: i64,
    /// Idempotent producer id, or -1.
    pub producer_id: i64,
    /// Idempotent producer epoch, or -1.
    pub producer_epoch: i16,
    /// Sequence number of the first record, or -1.
    pub base_sequence: i32,
    /// Number of records.
    pub records_count: i32,
}

impl BatchHeader {
    /// Parses the header at the start of `input`.
    ///
    /// Checks the magic byte first, so that a legacy (magic 0 or 1) message set gives
    /// [`DecodeError::UnsupportedMagic`] even when it is shorter than a v2 header. Does
    /// not check the CRC or that the whole batch is present.
    pub fn parse(input: &[u8]) -> Result<BatchHeader, DecodeError> {
        match input.get(at::MAGIC) {
            Some(&magic) if magic as i8 != MAGIC => {
                return Err(DecodeError::UnsupportedMagic(magic as i8));
            }
            _ => {}
        }
        if let Some(length) = input.get(at::BATCH_LENGTH..at::BATCH_LENGTH + 4) {
            let mut b = [0u8; 4];
            b.copy_from_slice(length);
            let length = i32::from_be_bytes(b);
            if i64::from(length) < (BATCH_HEADER_SIZE - LOG_OVERHEAD) as i64 {
                return Err(DecodeError::InvalidLength { what: "record batch length", length: length.into() });
            }
        }
        let Some(b) = input.first_chunk::<BATCH_HEADER_SIZE>() else {
            return Err(DecodeError::Truncated {
                what: "record batch header",
                needed: BATCH_HEADER_SIZE,
                remaining: input.len(),
            });
        };
        let header = BatchHeader {
            base_offset: i64::from_be_bytes(field(b, at::BASE_OFFSET)),
            batch_length: i32::from_be_bytes(field(b, at::BATCH_LENGTH)),
            partition_leader_epoch: i32::from_be_bytes(field(b, at::PARTITION_LEADER_EPOCH)),
            magic: b[at::MAGIC] as i8,
            crc: u32::from_be_bytes(field(b, at::CRC)),
            attributes: BatchAttributes(i16::from_be_bytes(field(b, at::ATTRIBUTES))),
            last_offset_delta: i32::from_be_bytes(field(b, at::LAST_OFFSET_DELTA)),
            base_timestamp: i64::from_be_bytes(field(b, at::BASE_TIMESTAMP)),
            max_timestamp: i64::from_be_bytes(field(b, at::MAX_TIMESTAMP)),
            producer_id: i64::from_be_bytes(field(b, at::PRODUCER_ID)),
            producer_epoch: i16::from_be_bytes(field(b, at::PRODUCER_EPOCH)),
            base_sequence: i32::from_be_bytes(field(b, at::BASE_SEQUENCE)),
            records_count: i32::from_be_bytes(field(b, at::RECORDS_COUNT)),
        };
        Ok(header)
    }

    /// The header as its 61 wire bytes.
    pub fn to_bytes(&self) -> [u8; BATCH_HEADER_SIZE] {
        let mut b = [0u8; BATCH_HEADER_SIZE];
        self.write_to(&mut b);
        b
    }

    /// Writes the header over the first 61 bytes of `out`.
    pub(crate) fn write_to(&self, out: &mut [u8; BATCH_HEADER_SIZE]) {
        let mut put = |at: usize, bytes: &[u8]| out[at..at + bytes.len()].copy_from_slice(bytes);
        put(at::BASE_OFFSET, &self.base_offset.to_be_bytes());
        put(at::BATCH_LENGTH, &self.batch_length.to_be_bytes());
        put(at::PARTITION_LEADER_EPOCH, &self.partition_leader_epoch.to_be_bytes());
        put(at::MAGIC, &self.magic.to_be_bytes());
        put(at::CRC, &self.crc.to_be_bytes());
        put(at::ATTRIBUTES, &self.attributes.0.to_be_bytes());
        put(at::LAST_OFFSET_DELTA, &self.last_offset_delta.to_be_bytes());
        put(at::BASE_TIMESTAMP, &self.base_timestamp.to_be_bytes());
        put(at::MAX_TIMESTAMP, &self.max_timestamp.to_be_bytes());
        put(at::PRODUCER_ID, &self.producer_id.to_be_bytes());
        put(at::PRODUCER_EPOCH, &self.producer_epoch.to_be_bytes());
        put(at::BASE_SEQUENCE, &self.base_sequence.to_be_bytes());
        put(at::RECORDS_COUNT, &self.records_count.to_be_bytes());
    }

    /// Total size of the batch on the wire: `12 + batch_length`.
    pub fn size(&self) -> usize {
        LOG_OVERHEAD + self.batch_length.max(0) as usize
    }

    /// Offset of the last record: `base_offset + last_offset_delta`.
    pub fn last_offset(&self) -> i64 {
        self.base_offset.wrapping_add(self.last_offset_delta.into())
    }

    /// Offset after the batch, where the next fetch starts: `last_offset() + 1`.
    pub fn next_offset(&self) -> i64 {
        self.last_offset().wrapping_add(1)
    }

    /// The codec, or an error for the unassigned ids 5-7.
    pub fn compression(&self) -> Result<Compression, DecodeError> {
        self.attributes.compression().ok_or(DecodeError::UnknownCompression(self.attributes.compression_id()))
    }

    /// The timestamp type.
    pub fn timestamp_type(&self) -> TimestampType {
        self.attributes.timestamp_type()
    }

    /// Whether the batch is part of a transaction.
    pub fn is_transactional(&self) -> bool {
        self.attributes.is_transactional()
    }

    /// Whether the batch holds control records.
    pub fn is_control(&self) -> bool {
        self.attributes.is_control()
    }

    /// Sequence number of the last record, wrapping past `i32::MAX` to 0 as Kafka does,
    /// or -1 when the batch has no sequence.
    pub fn last_sequence(&self) -> i32 {
        if self.base_sequence < 0 {
            return super::NO_SEQUENCE;
        }
        let last = i64::from(self.base_sequence) + i64::from(self.last_offset_delta);
        if last > i64::from(i32::MAX) { (last - i64::from(i32::MAX) - 1) as i32 } else { last as i32 }
    }
}

/// One complete record batch, header parsed, records not yet decoded.
///
/// Holding the batch as [`Bytes`] makes it cheap to pass on (to a cache, another
/// thread, a Produce request) before or instead of decoding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawBatch {
    header: BatchHeader,
    bytes: Bytes,
}

impl RawBatch {
    /// Wraps `bytes`, which must hold exactly one v2 batch.
    pub fn new(bytes: Bytes) -> Result<RawBatch, DecodeError> {
        let header = BatchHeader::parse(&bytes)?;
        let size = header.size();
        match bytes.len().cmp(&size) {
            std::cmp::Ordering::Less => {
                Err(DecodeError::Truncated { what: "record batch", needed: size, remaining: bytes.len() })
            }
            std::cmp::Ordering::Greater => {
                Err(DecodeError::TrailingBytes { what: "record batch", remaining: bytes.len() - size })
            }
            std::cmp::Ordering::Equal => Ok(RawBatch { header, bytes }),
        }
    }

    /// Splits the first batch off the front of `input`.
    ///
    /// On error `input` is left as it was.
    pub fn split_from(input: &mut Bytes) -> Result<RawBatch, DecodeError> {
        let header = BatchHeader::parse(input)?;
        let size = header.size();
        if size > input.len() {
            return Err(DecodeError::Truncated { what: "record batch", needed: size, remaining: input.len() });
        }
        Ok(RawBatch { header, bytes: input.split_to(size) })
    }

    /// The parsed header.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// The whole batch as it was on the wire.
    pub fn as_bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// The whole batch as it was on the wire.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// The records section after the header, compressed if the batch is.
    pub fn records_section(&self) -> &[u8] {
        self.bytes.get(BATCH_HEADER_SIZE..).unwrap_or_default()
    }

    /// The CRC32C of the batch contents (from `attributes` to the end).
    pub fn compute_crc(&self) -> u32 {
        crc32c::crc32c(self.bytes.get(at::ATTRIBUTES..).unwrap_or_default())
    }

    /// Checks the stored CRC against the contents.
    pub fn verify_crc(&self) -> Result<(), DecodeError> {
        let actual = self.compute_crc();
        if actual == self.header.crc {
            Ok(())
        } else {
            Err(DecodeError::CrcMismatch { expected: self.header.crc, actual })
        }
    }

    /// Checks the CRC, decompresses, and indexes the records, with default options.
    pub fn decode(&self) -> Result<RecordBatch, DecodeError> {
        self.decode_with(&DecodeOptions::default())
    }

    /// Like [`decode`](Self::decode), with options.
    pub fn decode_with(&self, options: &DecodeOptions) -> Result<RecordBatch, DecodeError> {
        RecordBatch::from_raw(self, options)
    }

    pub(crate) fn bytes(&self) -> &Bytes {
        &self.bytes
    }
}
