//! The `attributes` field of a record batch and the timestamp type it carries.

use crate::compression::Compression;

/// What a batch's timestamps mean (bit 3 of the batch attributes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum TimestampType {
    /// The producer set each record's timestamp when it created the record.
    #[default]
    CreateTime,
    /// The broker stamped the batch when it appended it to the log: every record's
    /// timestamp is the batch's `maxTimestamp`.
    LogAppendTime,
}

/// The 16-bit `attributes` field of a record batch.
///
/// | bits | meaning |
/// |------|---------|
/// | 0-2  | compression codec id |
/// | 3    | timestamp type (1 = log append time) |
/// | 4    | transactional |
/// | 5    | control batch |
/// | 6    | has a delete horizon (set by log compaction) |
/// | 7-15 | unused |
///
/// The raw bits are kept as they are, including unused ones, so that a decoded batch
/// re-encodes unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct BatchAttributes(pub i16);

impl BatchAttributes {
    const COMPRESSION_MASK: i16 = 0b111;
    const TIMESTAMP_TYPE: i16 = 1 << 3;
    const TRANSACTIONAL: i16 = 1 << 4;
    const CONTROL: i16 = 1 << 5;
    const DELETE_HORIZON: i16 = 1 << 6;

    /// Attributes with every bit clear: uncompressed, create time, not transactional.
    pub const fn new() -> Self {
        BatchAttributes(0)
    }

    /// The raw bits.
    pub const fn bits(self) -> i16 {
        self.0
    }

    /// The codec id in bits 0-2 (0-7; only 0-4 name a codec).
    pub const fn compression_id(self) -> u8 {
        (self.0 & Self::COMPRESSION_MASK) as u8
    }

    /// The codec, or `None` for ids 5-7, which name no codec.
    pub const fn compression(self) -> Option<Compression> {
        Compression::from_id(self.compression_id())
    }

    /// The timestamp type (bit 3).
    pub const fn timestamp_type(self) -> TimestampType {
        if self.0 & Self::TIMESTAMP_TYPE != 0 { TimestampType::LogAppendTime } else { TimestampType::CreateTime }
    }

    /// Whether the batch is part of a transaction (bit 4).
    pub const fn is_transactional(self) -> bool {
        self.0 & Self::TRANSACTIONAL != 0
    }

    /// Whether the batch holds control records such as transaction markers (bit 5).
    pub const fn is_control(self) -> bool {
        self.0 & Self::CONTROL != 0
    }

    /// Whether log compaction set a delete horizon in the batch's base timestamp (bit 6).
    pub const fn has_delete_horizon(self) -> bool {
        self.0 & Self::DELETE_HORIZON != 0
    }

    const fn with_bit(self, bit: i16, on: bool) -> Self {
        BatchAttributes(if on { self.0 | bit } else { self.0 & !bit })
    }

    /// These attributes with the codec set.
    pub const fn with_compression(self, codec: Compression) -> Self {
        BatchAttributes((self.0 & !Self::COMPRESSION_MASK) | codec.id() as i16)
    }

    /// These attributes with the timestamp type set.
    pub const fn with_timestamp_type(self, t: TimestampType) -> Self {
        self.with_bit(Self::TIMESTAMP_TYPE, matches!(t, TimestampType::LogAppendTime))
    }

    /// These attributes with the transactional flag set or cleared.
    pub const fn with_transactional(self, on: bool) -> Self {
        self.with_bit(Self::TRANSACTIONAL, on)
    }

    /// These attributes with the control flag set or cleared.
    pub const fn with_control(self, on: bool) -> Self {
        self.with_bit(Self::CONTROL, on)
    }

    /// These attributes with the delete-horizon flag set or cleared.
    pub const fn with_delete_horizon(self, on: bool) -> Self {
        self.with_bit(Self::DELETE_HORIZON, on)
    }
}

impl From<i16> for BatchAttributes {
    fn from(bits: i16) -> Self {
        BatchAttributes(bits)
    }
}

impl From<BatchAttributes> for i16 {
    fn from(a: BatchAttributes) -> Self {
        a.0
    }
}
