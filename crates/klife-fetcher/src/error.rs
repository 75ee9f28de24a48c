//! The fetcher's errors.

use std::sync::Arc;
use std::time::Duration;

use klife_protocol::error::DecodeError;
use klife_protocol::{ErrorCode, Uuid};

/// Why a fetch or an offset lookup failed.
///
/// Every variant names the partition it concerns. Retriable conditions (a leader that
/// moved, a broker that is down, stale metadata) are retried inside the fetcher until
/// [`FetcherConfig::fetch_timeout`](crate::FetcherConfig::fetch_timeout); what reaches
/// the caller is either not retriable or [`FetchError::Timeout`] with the last
/// failure.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// The topic does not exist (the cluster's metadata does not list it).
    #[error("topic {topic:?} does not exist")]
    UnknownTopic {
        /// The topic.
        topic: String,
    },
    /// The topic exists but has no such partition.
    #[error("topic {topic:?} has no partition {partition} (it has {partitions})")]
    UnknownPartition {
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: i32,
        /// How many partitions the topic has.
        partitions: usize,
    },
    /// A negative offset was asked for. Look offsets up with
    /// [`Fetcher::list_offsets`](crate::Fetcher::list_offsets) (earliest, latest, by
    /// timestamp) instead.
    #[error("{topic}-{partition}: offset {offset} is negative; look up earliest/latest offsets with list_offsets")]
    InvalidOffset {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The offset asked for.
        offset: i64,
    },
    /// The offset is outside the partition's log: below its start (deleted by
    /// retention) or beyond its end. `log_start_offset..high_watermark` is the valid
    /// range when the broker could be asked for it (-1 otherwise).
    #[error(
        "{topic}-{partition}: offset {offset} is out of range (valid offsets: {log_start_offset}..{high_watermark})"
    )]
    OffsetOutOfRange {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The offset asked for.
        offset: i64,
        /// The first offset in the log.
        log_start_offset: i64,
        /// The offset the next record will get.
        high_watermark: i64,
    },
    /// The partition's log was truncated under the position: an unclean leader election
    /// made leader a replica that lacked records read before `offset`, and records
    /// written since may sit at their offsets. The leader's log and the one read agree
    /// up to `end_offset` (below `offset`), the end of leader epoch `epoch` in both; the
    /// records read from `end_offset` up to `offset` are no longer in the log.
    ///
    /// Nothing was read at `offset`. To go on with the log as it is now, fetch from
    /// `end_offset` with `epoch` as the last epoch
    /// ([`TopicPartitionOffset::with_last_epoch`](crate::TopicPartitionOffset::with_last_epoch)).
    /// Detected from Fetch v12 on, for positions that carry their last epoch.
    #[error(
        "{topic}-{partition}: the log was truncated under offset {offset} (read up to it at leader epoch {last_epoch}): the leader's log parts from it at offset {end_offset}, in leader epoch {epoch}"
    )]
    LogTruncated {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The position fetched from.
        offset: i64,
        /// The last epoch the fetch sent: that of the last batch read before `offset`.
        last_epoch: i32,
        /// The first offset at which the leader's log may differ from the one read.
        end_offset: i64,
        /// The last leader epoch the two logs share.
        epoch: i32,
    },
    /// The topic was deleted and created again under the same name: the position
    /// belongs to the topic with id `old_id`, and the name stands for `new_id` now.
    /// Nothing of the new topic was read at the old position; fetch the new topic from
    /// a position of its own (one without a topic id, such as
    /// [`TopicPartitionOffset::new`](crate::TopicPartitionOffset::new), reads whatever
    /// the name stands for).
    #[error(
        "{topic}-{partition}: the topic was deleted and created again (id {old_id}, now {new_id}); offset {offset} belongs to the old one"
    )]
    TopicRecreated {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The position fetched from.
        offset: i64,
        /// The id the position was read from.
        old_id: Uuid,
        /// The id the name stands for now.
        new_id: Uuid,
    },
    /// A batch could not be read: bad CRC, bad lengths, a codec failure. Records
    /// before it in the same answer were delivered; fetching from `offset` again
    /// fails the same way.
    #[error("{topic}-{partition}: the batch at offset {offset} is corrupt: {source}")]
    Corrupt {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The base offset of the corrupt batch.
        offset: i64,
        /// What is wrong with it.
        #[source]
        source: DecodeError,
    },
    /// The next batch is larger than the fetcher may ask for
    /// ([`FetcherConfig::max_bytes_per_request`](crate::FetcherConfig::max_bytes_per_request)).
    #[error(
        "{topic}-{partition}: the batch at offset {offset} is {size} bytes, more than the {limit} a request may ask for"
    )]
    BatchTooLarge {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The offset fetched from.
        offset: i64,
        /// The batch's size in bytes.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The broker answered with an error that retrying does not cure (authorization,
    /// an unsupported feature, ...).
    #[error("{topic}-{partition}: the broker answered {code}{}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    Broker {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The broker's error code.
        code: ErrorCode,
        /// The broker's message, if any.
        message: Option<String>,
    },
    /// A connection-layer failure that retrying did not cure, or that cannot be
    /// retried (authentication, TLS, unsupported versions).
    #[error(transparent)]
    Connection(#[from] klife_connection::Error),
    /// Retries did not succeed within the fetch timeout; `last` is the last failure.
    #[error("{topic}-{partition}: gave up after {elapsed:?}: {last}")]
    Timeout {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// Time spent, retries included.
        elapsed: Duration,
        /// The last failure seen.
        last: Arc<FetchError>,
    },
    /// The fetcher (or the client under it) is closed.
    #[error("the fetcher is closed")]
    Closed,
    /// An invalid setting ([`FetcherConfig::validate`](crate::FetcherConfig::validate)).
    #[error(transparent)]
    Config(#[from] klife_connection::ConfigError),
    /// An argument is invalid.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl FetchError {
    /// Whether the failure may go away by itself (a leader election, a broker
    /// restart): a timeout, a retriable broker error or a retriable connection error.
    pub fn is_retriable(&self) -> bool {
        match self {
            FetchError::Timeout { .. } => true,
            FetchError::Broker { code, .. } => code.is_retriable(),
            FetchError::Connection(e) => e.is_retriable(),
            _ => false,
        }
    }

    /// The broker's error code behind this failure, if there is one.
    pub fn error_code(&self) -> Option<ErrorCode> {
        match self {
            FetchError::Broker { code, .. } => Some(*code),
            FetchError::OffsetOutOfRange { .. } => Some(ErrorCode::OffsetOutOfRange),
            FetchError::UnknownTopic { .. } | FetchError::UnknownPartition { .. } => {
                Some(ErrorCode::UnknownTopicOrPartition)
            }
            FetchError::Corrupt { .. } => Some(ErrorCode::CorruptMessage),
            FetchError::Connection(e) => e.error_code(),
            FetchError::Timeout { last, .. } => last.error_code(),
            _ => None,
        }
    }
}
