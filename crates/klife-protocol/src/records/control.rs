//! Control records: records the broker and the transaction coordinator write into the
//! log for their own use, in batches with the control flag set. Consumers act on them
//! (a transaction marker commits or aborts a producer's transactional records) and do
//! not hand them to the application.
//!
//! A control record's key is `version: int16` (0) and `type: int16`. For transaction
//! markers (type 0 ABORT, 1 COMMIT) the value is `version: int16` (0) and
//! `coordinatorEpoch: int32`.
//!
//! What a control record is comes from its key alone, as the Java client and librdkafka
//! read it: a marker's value is informational, and some brokers write it null. Only an
//! unreadable key is an error.

use bytes::Bytes;

use super::{BatchOptions, NO_SEQUENCE, RecordBatchWriter};
use crate::compression::Compression;
use crate::error::{DecodeError, EncodeError};

/// What a control record is (the `type` in its key).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ControlRecordType {
    /// Transaction marker: the producer's open transaction is aborted (0).
    Abort,
    /// Transaction marker: the producer's open transaction is committed (1).
    Commit,
    /// KRaft: a new leader was elected (2).
    LeaderChange,
    /// KRaft: start of a metadata snapshot (3).
    SnapshotHeader,
    /// KRaft: end of a metadata snapshot (4).
    SnapshotFooter,
    /// KRaft: the finalized `kraft.version` (5).
    KRaftVersion,
    /// KRaft: the voter set (6).
    KRaftVoters,
    /// A type this crate does not know.
    Unknown(i16),
}

impl ControlRecordType {
    /// The type id on the wire.
    pub const fn id(self) -> i16 {
        match self {
            ControlRecordType::Abort => 0,
            ControlRecordType::Commit => 1,
            ControlRecordType::LeaderChange => 2,
            ControlRecordType::SnapshotHeader => 3,
            ControlRecordType::SnapshotFooter => 4,
            ControlRecordType::KRaftVersion => 5,
            ControlRecordType::KRaftVoters => 6,
            ControlRecordType::Unknown(id) => id,
        }
    }

    /// The type with this id.
    pub const fn from_id(id: i16) -> Self {
        match id {
            0 => ControlRecordType::Abort,
            1 => ControlRecordType::Commit,
            2 => ControlRecordType::LeaderChange,
            3 => ControlRecordType::SnapshotHeader,
            4 => ControlRecordType::SnapshotFooter,
            5 => ControlRecordType::KRaftVersion,
            6 => ControlRecordType::KRaftVoters,
            id => ControlRecordType::Unknown(id),
        }
    }

    /// Whether this is a transaction marker (ABORT or COMMIT).
    pub const fn is_transaction_marker(self) -> bool {
        matches!(self, ControlRecordType::Abort | ControlRecordType::Commit)
    }
}

/// The key of a control record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ControlRecordKey {
    /// Key schema version (0).
    pub version: i16,
    /// The record type.
    pub record_type: ControlRecordType,
}

impl ControlRecordKey {
    /// The key version this crate writes.
    pub const CURRENT_VERSION: i16 = 0;

    /// A version-0 key of the given type.
    pub const fn new(record_type: ControlRecordType) -> Self {
        ControlRecordKey { version: Self::CURRENT_VERSION, record_type }
    }

    /// Parses a key. Later versions may append fields, which are ignored.
    pub fn parse(key: &[u8]) -> Result<Self, DecodeError> {
        let Some((version, rest)) = key.split_first_chunk::<2>() else {
            return Err(DecodeError::Truncated { what: "control record key", needed: 4, remaining: key.len() });
        };
        let Some(record_type) = rest.first_chunk::<2>() else {
            return Err(DecodeError::Truncated { what: "control record key", needed: 4, remaining: key.len() });
        };
        let version = i16::from_be_bytes(*version);
        if version < 0 {
            return Err(DecodeError::Invalid { what: "control record key", reason: "negative version" });
        }
        Ok(ControlRecordKey { version, record_type: ControlRecordType::from_id(i16::from_be_bytes(*record_type)) })
    }

    /// Parses a record's key as a control record key: a null key is an error too.
    pub fn parse_record_key(key: Option<&[u8]>) -> Result<Self, DecodeError> {
        Self::parse(key.ok_or(DecodeError::UnexpectedNull { what: "control record key" })?)
    }

    /// The key's four wire bytes.
    pub fn to_bytes(&self) -> [u8; 4] {
        let mut b = [0u8; 4];
        b[..2].copy_from_slice(&self.version.to_be_bytes());
        b[2..].copy_from_slice(&self.record_type.id().to_be_bytes());
        b
    }
}

/// The value of a transaction marker (a COMMIT or ABORT control record).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EndTransactionMarker {
    /// Value schema version (0).
    pub version: i16,
    /// Epoch of the transaction coordinator that wrote the marker.
    pub coordinator_epoch: i32,
}

impl EndTransactionMarker {
    /// The value version this crate writes.
    pub const CURRENT_VERSION: i16 = 0;

    /// A version-0 marker value.
    pub const fn new(coordinator_epoch: i32) -> Self {
        EndTransactionMarker { version: Self::CURRENT_VERSION, coordinator_epoch }
    }

    /// Parses a marker value. Later versions may append fields, which are ignored.
    pub fn parse(value: &[u8]) -> Result<Self, DecodeError> {
        let Some((version, rest)) = value.split_first_chunk::<2>() else {
            return Err(DecodeError::Truncated { what: "transaction marker", needed: 6, remaining: value.len() });
        };
        let Some(epoch) = rest.first_chunk::<4>() else {
            return Err(DecodeError::Truncated { what: "transaction marker", needed: 6, remaining: value.len() });
        };
        let version = i16::from_be_bytes(*version);
        if version < 0 {
            return Err(DecodeError::Invalid { what: "transaction marker", reason: "negative version" });
        }
        Ok(EndTransactionMarker { version, coordinator_epoch: i32::from_be_bytes(*epoch) })
    }

    /// The value's six wire bytes.
    pub fn to_bytes(&self) -> [u8; 6] {
        let mut b = [0u8; 6];
        b[..2].copy_from_slice(&self.version.to_be_bytes());
        b[2..].copy_from_slice(&self.coordinator_epoch.to_be_bytes());
        b
    }
}

/// A control record, typed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ControlRecord {
    /// The producer's transaction committed. The marker's value, when it is present
    /// and readable.
    Commit(Option<EndTransactionMarker>),
    /// The producer's transaction aborted. The marker's value, when it is present and
    /// readable.
    Abort(Option<EndTransactionMarker>),
    /// Another control record (KRaft internals, or a type added later); its value is
    /// left to the caller.
    Other {
        /// The parsed key.
        key: ControlRecordKey,
        /// The raw value.
        value: Option<Bytes>,
    },
}

impl ControlRecord {
    /// Parses a control record from its key and value. The type comes from the key,
    /// which must be readable; a transaction marker's value may be null, short or
    /// unreadable (it is then `None`).
    pub fn parse(key: Option<&[u8]>, value: Option<&[u8]>) -> Result<Self, DecodeError> {
        let key = ControlRecordKey::parse_record_key(key)?;
        let marker = || value.and_then(|v| EndTransactionMarker::parse(v).ok());
        Ok(match key.record_type {
            ControlRecordType::Commit => ControlRecord::Commit(marker()),
            ControlRecordType::Abort => ControlRecord::Abort(marker()),
            _ => ControlRecord::Other { key, value: value.map(Bytes::copy_from_slice) },
        })
    }

    /// The record type.
    pub fn record_type(&self) -> ControlRecordType {
        match self {
            ControlRecord::Commit(_) => ControlRecordType::Commit,
            ControlRecord::Abort(_) => ControlRecordType::Abort,
            ControlRecord::Other { key, .. } => key.record_type,
        }
    }
}

/// Builds a control batch: [`RecordBatchWriter`] with the control flag set, appending
/// typed control records.
#[derive(Debug, Clone)]
pub struct ControlBatchBuilder {
    writer: RecordBatchWriter,
}

impl ControlBatchBuilder {
    /// A builder for a control batch with these options (the control flag is forced on).
    pub fn new(options: BatchOptions) -> Self {
        ControlBatchBuilder { writer: RecordBatchWriter::new(BatchOptions { control: true, ..options }) }
    }

    /// Appends a control record with a raw value.
    pub fn append(&mut self, timestamp: i64, key: ControlRecordKey, value: Option<&[u8]>) -> Result<i32, EncodeError> {
        self.writer.append(timestamp, Some(&key.to_bytes()), value)
    }

    /// Appends a transaction marker. `result` must be [`ControlRecordType::Commit`] or
    /// [`ControlRecordType::Abort`].
    pub fn append_end_transaction(
        &mut self,
        timestamp: i64,
        result: ControlRecordType,
        marker: EndTransactionMarker,
    ) -> Result<i32, EncodeError> {
        if !result.is_transaction_marker() {
            return Err(EncodeError::Invalid {
                what: "transaction marker",
                reason: "the record type must be COMMIT or ABORT",
            });
        }
        self.append(timestamp, ControlRecordKey::new(result), Some(&marker.to_bytes()))
    }

    /// Finishes the batch.
    pub fn finish(self) -> Result<Bytes, EncodeError> {
        self.writer.finish()
    }
}

/// Encodes the batch a transaction coordinator writes to end a transaction: one
/// COMMIT or ABORT marker, in an uncompressed, transactional control batch with no
/// sequence number, as the Java broker writes it.
///
/// `options` supplies the base offset, partition leader epoch, producer id and
/// producer epoch; its codec, flags and sequence are overridden.
pub fn end_transaction_batch(
    options: &BatchOptions,
    timestamp: i64,
    result: ControlRecordType,
    coordinator_epoch: i32,
) -> Result<Bytes, EncodeError> {
    let mut builder = ControlBatchBuilder::new(BatchOptions {
        compression: Compression::None,
        compression_level: None,
        transactional: true,
        base_sequence: NO_SEQUENCE,
        base_timestamp: None,
        ..options.clone()
    });
    builder.append_end_transaction(timestamp, result, EndTransactionMarker::new(coordinator_epoch))?;
    builder.finish()
}
