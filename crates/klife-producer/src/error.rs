//! Why a record was not produced.

use std::time::Duration;

use klife_protocol::ErrorCode;

use crate::partitioner::InvalidPartition;

/// Why a record was not produced. Records of the same batch share the outcome; other
/// records are not affected.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ProduceError {
    /// The buffer is full (`try_produce`), or stayed full for the delivery timeout.
    #[error("the producer buffer is full ({limit} bytes): records are produced faster than brokers take them")]
    BufferFull {
        /// `buffer_memory`.
        limit: usize,
    },
    /// The record alone exceeds the largest batch allowed.
    #[error("the record makes a {size}-byte batch, over max_record_batch_size ({limit} bytes)")]
    RecordTooLarge {
        /// Its batch size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The topic does not exist (and was not created automatically).
    #[error("topic {topic:?} does not exist")]
    UnknownTopic {
        /// The topic.
        topic: String,
    },
    /// The record names a partition the topic does not have.
    #[error("topic {topic:?}: {source}")]
    InvalidPartition {
        /// The topic.
        topic: String,
        /// The range check that failed.
        source: InvalidPartition,
    },
    /// The broker refused the batch with an error that retrying cannot fix.
    #[error("{topic}-{partition}: the broker refused the batch: {code}{}", message.as_ref().map(|m| format!(": {m}")).unwrap_or_default())]
    Broker {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// The error code.
        code: ErrorCode,
        /// The broker's message.
        message: Option<String>,
    },
    /// A transaction or group coordinator refused a request.
    #[error("{api} for {key:?} failed: {code}")]
    Coordinator {
        /// The request's API.
        api: klife_protocol::ApiKey,
        /// The transactional id or group id.
        key: String,
        /// The error code.
        code: ErrorCode,
    },
    /// No outcome within the delivery timeout; the last error seen is attached.
    #[error("{topic}-{partition}: not delivered within the delivery timeout of {timeout:?}{}", last_error.as_ref().map(|e| format!(" (last error: {e})")).unwrap_or_default())]
    DeliveryTimeout {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// The timeout.
        timeout: Duration,
        /// What failed last.
        last_error: Option<String>,
    },
    /// The producer could not talk to the cluster.
    #[error(transparent)]
    Connection(#[from] klife_connection::Error),
    /// The idempotent producer could not get or keep a producer id.
    #[error("the idempotent producer failed: {0}")]
    Idempotence(String),
    /// The producer was closed.
    #[error("the producer is closed")]
    Closed,
    /// An invalid setting.
    #[error("invalid producer configuration: {0}")]
    Config(String),
    /// The batch could not be encoded.
    #[error("the batch could not be encoded: {0}")]
    Encode(String),
}

impl ProduceError {
    /// The broker error code, if a broker answered with one.
    pub fn error_code(&self) -> Option<ErrorCode> {
        match self {
            ProduceError::Broker { code, .. } | ProduceError::Coordinator { code, .. } => Some(*code),
            ProduceError::Connection(e) => e.error_code(),
            _ => None,
        }
    }
}
