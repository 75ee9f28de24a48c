//! Owned records and headers.

use bytes::Bytes;

/// A record header: a UTF-8 key and an optional value.
///
/// A record's headers are an ordered list, not a map: keys may repeat, and order and
/// duplicates survive encoding and decoding.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Header {
    /// The header's key.
    pub key: String,
    /// The header's value; `None` is a null value (distinct from an empty one).
    pub value: Option<Bytes>,
}

impl Header {
    /// A header with a value.
    pub fn new(key: impl Into<String>, value: impl Into<Bytes>) -> Self {
        Header { key: key.into(), value: Some(value.into()) }
    }

    /// A header with a null value.
    pub fn null(key: impl Into<String>) -> Self {
        Header { key: key.into(), value: None }
    }
}

/// A record with owned fields, as the producer hands it over or as
/// [`RecordBatch::to_records`](super::RecordBatch::to_records) returns it.
///
/// `offset` and `timestamp` are absolute. In a batch they are stored as deltas from the
/// batch's base offset and base timestamp; `timestamp` here is the record's own
/// timestamp (base plus delta), also in log-append-time batches, where readers should
/// use the batch's `max_timestamp` instead (as [`RecordView::timestamp`](super::RecordView::timestamp) does).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct Record {
    /// The record's offset.
    pub offset: i64,
    /// The record's timestamp in milliseconds since the Unix epoch.
    pub timestamp: i64,
    /// The key; `None` is a null key (distinct from an empty one).
    pub key: Option<Bytes>,
    /// The value; `None` is a null value, a tombstone in compacted topics.
    pub value: Option<Bytes>,
    /// The headers, in order.
    pub headers: Vec<Header>,
}

impl Record {
    /// A record with a value and no key or headers.
    pub fn new(offset: i64, timestamp: i64, value: impl Into<Bytes>) -> Self {
        Record { offset, timestamp, key: None, value: Some(value.into()), headers: Vec::new() }
    }

    /// This record with its key set.
    pub fn with_key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// This record with a header appended.
    pub fn with_header(mut self, header: Header) -> Self {
        self.headers.push(header);
        self
    }
}
