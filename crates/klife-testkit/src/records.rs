//! Owned views of what is in the logs, for assertions: records with their producer and
//! transaction state, and transaction markers.

use bytes::Bytes;
use klife_protocol::records::{ControlRecord, Header, RawBatch};

use crate::log::PartitionLog;

/// Where a record stands with respect to transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxnStatus {
    /// Written outside any transaction.
    NotTransactional,
    /// Part of a transaction that is still open.
    Ongoing,
    /// Part of a committed transaction.
    Committed,
    /// Part of an aborted transaction: read_committed consumers never see it.
    Aborted,
}

/// One record as stored, decoded and owned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRecord {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Timestamp (the record's own, or the batch's for log-append-time batches).
    pub timestamp: i64,
    /// Key.
    pub key: Option<Bytes>,
    /// Value.
    pub value: Option<Bytes>,
    /// Headers, in order.
    pub headers: Vec<Header>,
    /// The batch's producer id (-1 without idempotence).
    pub producer_id: i64,
    /// The batch's producer epoch (-1 without idempotence).
    pub producer_epoch: i16,
    /// The record's sequence number (-1 without idempotence).
    pub sequence: i32,
    /// Whether the batch is transactional.
    pub is_transactional: bool,
    /// Whether this is a control record (a transaction marker).
    pub is_control: bool,
    /// The record's transaction status.
    pub status: TxnStatus,
    /// The base offset of the record's batch.
    pub batch_base_offset: i64,
}

impl StoredRecord {
    /// The value of the first header named `key`, if any (a null value is `None` too).
    pub fn header(&self, key: &str) -> Option<&[u8]> {
        self.headers.iter().find(|h| h.key == key).and_then(|h| h.value.as_deref())
    }

    /// The value as UTF-8 text (lossy), for messages and quick comparisons.
    pub fn value_str(&self) -> String {
        self.value.as_deref().map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default()
    }
}

/// A transaction marker in a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Marker {
    /// Offset of the marker.
    pub offset: i64,
    /// The producer whose transaction it ends.
    pub producer_id: i64,
    /// The producer epoch it was written with.
    pub producer_epoch: i16,
    /// COMMIT (`true`) or ABORT (`false`).
    pub commit: bool,
}

impl Marker {
    pub(crate) fn from_record(r: &StoredRecord) -> Option<Marker> {
        if !r.is_control {
            return None;
        }
        match ControlRecord::parse(r.key.as_deref(), r.value.as_deref()).ok()? {
            ControlRecord::Commit(_) => Some(Marker {
                offset: r.offset,
                producer_id: r.producer_id,
                producer_epoch: r.producer_epoch,
                commit: true,
            }),
            ControlRecord::Abort(_) => Some(Marker {
                offset: r.offset,
                producer_id: r.producer_id,
                producer_epoch: r.producer_epoch,
                commit: false,
            }),
            _ => None,
        }
    }
}

fn status(log: &PartitionLog, producer_id: i64, transactional: bool, offset: i64) -> TxnStatus {
    if !transactional {
        return TxnStatus::NotTransactional;
    }
    if log.aborted().iter().any(|a| a.producer_id == producer_id && a.first_offset <= offset && offset <= a.last_offset)
    {
        return TxnStatus::Aborted;
    }
    match log.ongoing().get(&producer_id) {
        Some(first) if offset >= *first => TxnStatus::Ongoing,
        _ => TxnStatus::Committed,
    }
}

/// Calls `f` with every record (control records included) of a partition's log.
pub(crate) fn decode_log(topic: &str, partition: i32, log: &PartitionLog, mut f: impl FnMut(StoredRecord)) {
    for stored in log.batches() {
        let Ok(batch) = RawBatch::new(stored.bytes.clone()).and_then(|b| b.decode()) else {
            tracing::error!(topic, partition, offset = stored.base_offset(), "a stored batch does not decode");
            continue;
        };
        let h = stored.header;
        for r in batch.iter() {
            if r.offset() < log.log_start_offset() {
                continue;
            }
            let sequence = if h.base_sequence < 0 { -1 } else { h.base_sequence.wrapping_add(r.offset_delta()) };
            f(StoredRecord {
                topic: topic.to_owned(),
                partition,
                offset: r.offset(),
                timestamp: r.timestamp(),
                key: r.key_bytes(),
                value: r.value_bytes(),
                headers: r.headers().map(|h| h.to_header()).collect(),
                producer_id: h.producer_id,
                producer_epoch: h.producer_epoch,
                sequence,
                is_transactional: h.is_transactional(),
                is_control: h.is_control(),
                status: status(log, h.producer_id, h.is_transactional(), r.offset()),
                batch_base_offset: h.base_offset,
            });
        }
    }
}
