//! What a producer sends and what it learns back.

use std::sync::Arc;

use bytes::Bytes;
use klife_protocol::records::Header;

/// A record to produce.
///
/// The topic is an `Arc<str>`: an application that produces many records to one topic
/// keeps the name in an `Arc<str>` and clones it (a reference count, no copy of the
/// name); a `&str` or `String` works too, at the cost of one allocation per record.
///
/// ```
/// use std::sync::Arc;
/// use klife_producer::ProducerRecord;
///
/// let topic: Arc<str> = Arc::from("events");
/// let first = ProducerRecord::new(topic.clone(), "one").with_key("user-1");
/// let second = ProducerRecord::new("events", "two");
/// assert_eq!(first.topic, second.topic);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProducerRecord {
    /// Topic.
    pub topic: Arc<str>,
    /// Partition; `None` lets the partitioner choose.
    pub partition: Option<i32>,
    /// Key.
    pub key: Option<Bytes>,
    /// Value.
    pub value: Option<Bytes>,
    /// Headers, in order (duplicate keys allowed).
    pub headers: Vec<Header>,
    /// Timestamp in milliseconds since the epoch; `None` is the time of `produce`.
    pub timestamp: Option<i64>,
}

impl ProducerRecord {
    /// A record with a value, for the partitioner to place.
    pub fn new(topic: impl Into<Arc<str>>, value: impl Into<Bytes>) -> Self {
        ProducerRecord {
            topic: topic.into(),
            partition: None,
            key: None,
            value: Some(value.into()),
            headers: Vec::new(),
            timestamp: None,
        }
    }

    /// Sets the key.
    #[must_use]
    pub fn with_key(mut self, key: impl Into<Bytes>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Sets the partition.
    #[must_use]
    pub fn with_partition(mut self, partition: i32) -> Self {
        self.partition = Some(partition);
        self
    }

    /// Adds a header.
    #[must_use]
    pub fn with_header(mut self, key: impl Into<String>, value: Option<Bytes>) -> Self {
        self.headers.push(Header { key: key.into(), value });
        self
    }

    /// Sets the timestamp.
    #[must_use]
    pub fn with_timestamp(mut self, timestamp: i64) -> Self {
        self.timestamp = Some(timestamp);
        self
    }
}

/// Where a record was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordMetadata {
    /// Topic (shared by every record of the batch).
    pub topic: Arc<str>,
    /// Partition.
    pub partition: i32,
    /// Offset; -1 with `acks = 0`, where the broker does not answer.
    pub offset: i64,
    /// The record's timestamp (the broker's append time for LogAppendTime topics).
    pub timestamp: i64,
}
