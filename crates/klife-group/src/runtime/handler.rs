//! What the user writes: a [`Handler`], the [`Action`] it returns for each batch, and
//! what it is told when a partition starts and stops.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use klife_fetcher::{FetchError, Record};
use klife_producer::ProduceError;

use crate::offsets::OffsetError;

/// The code that handles a group's records. One value serves every partition of the
/// group (it is shared, hence `&self`); calls for one partition never overlap and come
/// in offset order, calls for different partitions run concurrently.
///
/// Only [`handle_record_batch`](Self::handle_record_batch) is required. Write the
/// methods as `async fn`; their futures must be `Send`.
///
/// ```
/// use klife_group::runtime::{Action, BatchContext, Handler};
/// use klife_fetcher::Record;
///
/// struct Orders;
///
/// impl Handler for Orders {
///     async fn handle_record_batch(&self, ctx: &BatchContext, records: Vec<Record>) -> Action {
///         for r in &records {
///             println!("{}-{} @{}: {:?}", ctx.topic(), ctx.partition(), r.offset, r.value);
///         }
///         Action::Commit
///     }
/// }
/// ```
pub trait Handler: Send + Sync + 'static {
    /// Handles a batch of records of one partition, in offset order, and says what
    /// becomes of them. The batch is at most the topic's `handler_max_batch_size`
    /// records; records asked to be retried come first in the next batch.
    fn handle_record_batch(&self, ctx: &BatchContext, records: Vec<Record>) -> impl Future<Output = Action> + Send;

    /// A partition starts: its start offset is known and its first batch comes next.
    fn on_consumer_start(&self, partition: &PartitionContext) -> impl Future<Output = ()> + Send {
        let _ = partition;
        async {}
    }

    /// A partition stops, for `reason`. After a graceful stop (revoked, shut down)
    /// everything handled before is committed.
    fn on_consumer_stop(&self, partition: &PartitionContext, reason: &StopReason) -> impl Future<Output = ()> + Send {
        let _ = (partition, reason);
        async {}
    }
}

/// What becomes of a batch the handler was given.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Action {
    /// Every record is done: its offset is committed.
    Commit,
    /// Every record is given again, first in the next batch (after the cooldown).
    Retry,
    /// Every record is passed over and committed; `reason` goes into the commit's
    /// metadata and the logs.
    Skip {
        /// Why.
        reason: String,
    },
    /// Every record is produced to `topic` (with headers naming where it came from and
    /// why), and committed once the dead-letter topic has it.
    DeadLetter {
        /// The dead-letter topic.
        topic: String,
        /// Why; it goes into the `klife.dlq.reason` header and the commit's metadata.
        reason: String,
    },
    /// One action per record, in the order of the batch. No record may be committed
    /// (or skipped, or dead-lettered) above one that is retried: Kafka keeps one
    /// committed offset per partition, so the retried record would be lost on a
    /// restart. Such a batch is refused with [`MisuseError::CommitAboveRetry`].
    Each(Vec<RecordAction>),
}

/// What becomes of one record ([`Action::Each`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordAction {
    /// Done: committed.
    Commit,
    /// Given again in the next batch.
    Retry,
    /// Passed over and committed, for `reason`.
    Skip {
        /// Why.
        reason: String,
    },
    /// Produced to `topic`, then committed.
    DeadLetter {
        /// The dead-letter topic.
        topic: String,
        /// Why.
        reason: String,
    },
}

/// The partition a handler call is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionContext {
    pub(crate) topic: Arc<str>,
    pub(crate) partition: i32,
    pub(crate) group: Arc<str>,
}

impl PartitionContext {
    /// The topic.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The partition.
    pub fn partition(&self) -> i32 {
        self.partition
    }

    /// The group.
    pub fn group(&self) -> &str {
        &self.group
    }
}

/// What a [`Handler::handle_record_batch`] call knows besides its records.
#[derive(Debug)]
pub struct BatchContext {
    pub(crate) partition: PartitionContext,
    pub(crate) high_watermark: i64,
    pub(crate) attempt: u32,
    pub(crate) cooldown: Mutex<Option<Duration>>,
}

impl BatchContext {
    /// The topic.
    pub fn topic(&self) -> &str {
        self.partition.topic()
    }

    /// The partition.
    pub fn partition(&self) -> i32 {
        self.partition.partition()
    }

    /// The group.
    pub fn group(&self) -> &str {
        self.partition.group()
    }

    /// The partition's context.
    pub fn partition_context(&self) -> &PartitionContext {
        &self.partition
    }

    /// The partition's high watermark when its records were fetched (-1 for records
    /// given again).
    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    /// How many times the first record of the batch was given before (0 the first
    /// time; it grows while it is retried).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// Waits `cooldown` before the next batch of this partition, instead of the
    /// topic's `handler_cooldown`, for the next cycle only (a backoff after a failure).
    pub fn set_cooldown(&self, cooldown: Duration) {
        *self.cooldown.lock().unwrap_or_else(PoisonError::into_inner) = Some(cooldown);
    }

    pub(crate) fn take_cooldown(&self) -> Option<Duration> {
        self.cooldown.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// Why a partition stopped ([`Handler::on_consumer_stop`]).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum StopReason {
    /// The group gave it to another member; what was handled is committed.
    Revoked,
    /// The member lost it (fenced, or its session expired, also while it was giving
    /// it up and its last commits were refused): another member may own it already,
    /// and nothing more was committed.
    Lost,
    /// The group is shutting down; what was handled is committed.
    Shutdown,
    /// It failed; it starts again from its last committed offset after a backoff
    /// ([`PartitionError::restarts`]) or stays stopped until the next assignment.
    Failed(Arc<PartitionError>),
}

/// A handler misused its [`Action`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MisuseError {
    /// A record was committed above a retried one of the same batch.
    #[error(
        "{topic}-{partition}: the handler committed offset {committed} above offset {retried}, which it asked to retry; \
         Kafka keeps one committed offset per partition, so after a restart or a rebalance offset {retried} would never \
         be delivered again. Retry every record from the failed one on, or commit the failed one and route it elsewhere \
         (Action::DeadLetter or Skip). The partition starts again from its last committed offset"
    )]
    CommitAboveRetry {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The offset committed.
        committed: i64,
        /// The offset retried below it.
        retried: i64,
    },
    /// [`Action::Each`] named another number of actions than the batch has records.
    #[error(
        "{topic}-{partition}: the handler returned {actions} per-record action(s) for a batch of {records} record(s); \
         give one RecordAction per record, in the batch's order"
    )]
    ActionCount {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The records in the batch.
        records: usize,
        /// The actions returned.
        actions: usize,
    },
}

/// Why a partition's consumer failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PartitionError {
    /// The handler misused its action.
    #[error(transparent)]
    Misuse(#[from] MisuseError),
    /// The handler panicked.
    #[error("{topic}-{partition}: the handler panicked: {message}")]
    Panicked {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The panic's message, when it had one.
        message: String,
    },
    /// A record could not be produced to its dead-letter topic: it is not committed.
    #[error("{topic}-{partition}: offset {offset} could not be produced to the dead-letter topic {dead_letter_topic}")]
    DeadLetter {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The record's offset.
        offset: i64,
        /// The dead-letter topic.
        dead_letter_topic: String,
        /// Why.
        #[source]
        source: ProduceError,
    },
    /// A record asked to go to a dead-letter topic could not be read again from the
    /// log to be produced (retention or compaction removed it meanwhile).
    #[error("{topic}-{partition}: offset {offset}, asked to go to a dead-letter topic, is no longer in the log")]
    DeadLetterGone {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The record's offset.
        offset: i64,
    },
    /// A record asked to go to a dead-letter topic, and the group has no producer.
    #[error(
        "{topic}-{partition}: offset {offset} asked for the dead-letter topic {dead_letter_topic}, and the group has no producer"
    )]
    NoDeadLetterProducer {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
        /// The record's offset.
        offset: i64,
        /// The dead-letter topic.
        dead_letter_topic: String,
    },
    /// Fetching (or looking up the start offset) failed: in a way retrying does not
    /// cure (a topic created again, a truncated log or an offset out of range under
    /// the `Error` reset policy, authorization), or in one it may, whose retries ran
    /// out (the partition's leader unavailable for longer than the retry timeout, as
    /// while its broker is down): [`FetchError::is_retriable`].
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// Its start offset could not be had, or its commits failed for good.
    #[error(transparent)]
    Offsets(#[from] OffsetError),
    /// Manual mode: a lease was dropped, or a second one asked for, while records
    /// pulled were not committed; the partition starts again from its last commit and
    /// those records come again.
    #[error("{topic}-{partition}: a lease ended with records pulled and not committed; they are delivered again")]
    LeaseDropped {
        /// The topic.
        topic: String,
        /// The partition.
        partition: i32,
    },
}

impl PartitionError {
    /// Whether the partition starts again by itself (from its last committed offset,
    /// after a backoff): a handler's misuse or panic, a dead-letter failure, a lease
    /// dropped with records not committed and a fetch failure that retrying may cure
    /// do; other fetch and offset failures wait for the next assignment.
    pub fn restarts(&self) -> bool {
        match self {
            PartitionError::Fetch(e) => e.is_retriable(),
            PartitionError::Misuse(_)
            | PartitionError::Panicked { .. }
            | PartitionError::DeadLetter { .. }
            | PartitionError::NoDeadLetterProducer { .. }
            | PartitionError::DeadLetterGone { .. }
            | PartitionError::LeaseDropped { .. } => true,
            PartitionError::Offsets(_) => false,
        }
    }
}
