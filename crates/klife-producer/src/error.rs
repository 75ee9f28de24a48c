//! Why a record was not produced.

use std::time::Duration;

use klife_connection::ConfigError;
use klife_protocol::ErrorCode;

use crate::partitioner::InvalidPartition;

/// Why a record was not produced. Records of the same batch share the outcome; other
/// records are not affected.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum ProduceError {
    /// The buffer is full (`try_produce`), or stayed full for the delivery timeout.
    BufferFull {
        /// `buffer_memory`.
        limit: usize,
    },
    /// The record alone exceeds the largest batch allowed.
    RecordTooLarge {
        /// Its batch size.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The topic does not exist (and was not created automatically).
    UnknownTopic {
        /// The topic.
        topic: String,
    },
    /// The record names a partition the topic does not have.
    InvalidPartition {
        /// The topic.
        topic: String,
        /// The range check that failed.
        source: InvalidPartition,
    },
    /// The broker refused the batch with an error that retrying cannot fix.
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
    Coordinator {
        /// The request's API.
        api: klife_protocol::ApiKey,
        /// The transactional id or group id.
        key: String,
        /// The error code.
        code: ErrorCode,
        /// The coordinator's message, if it sent one.
        message: Option<String>,
    },
    /// No outcome within the delivery timeout; the last error seen is attached.
    DeliveryTimeout {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// The timeout.
        timeout: Duration,
        /// What made the last attempt fail, if one was made.
        last_error: Option<AttemptError>,
    },
    /// The producer could not talk to the cluster.
    Connection(klife_connection::Error),
    /// The cluster refused the idempotent producer a producer id (InitProducerId).
    ProducerId {
        /// The error code of the InitProducerId answer.
        code: ErrorCode,
        /// The broker's message, if it sent one.
        message: Option<String>,
    },
    /// An earlier attempt of the batch had an unknown outcome (the connection broke or
    /// timed out) when the producer id had to be reset: the batch may have been
    /// written, and sending it again under the new id could write it twice, so it is
    /// not sent again. Its records are in the log once or not at all.
    OutcomeUnknown {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
    },
    /// The transactional producer is fenced: a newer producer with the same
    /// transactional id took over, or its epoch is stale. Nothing it sends can
    /// succeed; close it (a new `TransactionalProducer` for the same id fences the
    /// other one in turn).
    Fenced {
        /// The transactional id.
        transactional_id: String,
        /// The producer id that was fenced.
        producer_id: i64,
        /// Its epoch.
        epoch: i16,
        /// What the broker or coordinator answered.
        code: ErrorCode,
    },
    /// A transaction operation was called in a state that does not allow it.
    TransactionState {
        /// What was asked.
        operation: TransactionOperation,
        /// The state the producer was in.
        state: TransactionState,
    },
    /// The transaction was aborted instead of committed, because a record of it had
    /// failed (the source).
    TransactionAborted {
        /// The first record failure of the transaction.
        source: Box<ProduceError>,
    },
    /// EndTxn (commit or abort) got no answer before its retries ran out, or its
    /// connection failed after the request may have reached the coordinator: the
    /// transaction may or may not have ended. It is still open on this side: the same
    /// call again sends EndTxn again, which the coordinator answers as it would have
    /// the first time (the same decision is idempotent there).
    TransactionOutcomeUnknown {
        /// Whether a commit (rather than an abort) was asked for.
        commit: bool,
        /// The last failure.
        source: klife_connection::Error,
    },
    /// The producer was closed, or dropped (every handle gone without
    /// [`Producer::close`](crate::Producer::close)) with the record still buffered.
    Closed,
    /// An invalid setting.
    Config(ConfigError),
    /// The batch could not be encoded.
    Encode(String),
}

impl std::fmt::Display for ProduceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProduceError::BufferFull { limit } => write!(
                f,
                "the producer buffer is full ({limit} bytes): records are produced faster than brokers take them"
            ),
            ProduceError::RecordTooLarge { size, limit } => {
                write!(f, "the record makes a {size}-byte batch, over max_record_batch_size ({limit} bytes)")
            }
            ProduceError::UnknownTopic { topic } => write!(f, "topic {topic:?} does not exist"),
            ProduceError::InvalidPartition { topic, source } => write!(f, "topic {topic:?}: {source}"),
            ProduceError::Broker { topic, partition, code, message } => {
                write!(f, "{topic}-{partition}: the broker refused the batch: {code}")?;
                write_message(f, message.as_deref())
            }
            ProduceError::Coordinator { api, key, code, message } => {
                write!(f, "{api} for {key:?} failed: {code}")?;
                write_message(f, message.as_deref())
            }
            ProduceError::DeliveryTimeout { topic, partition, timeout, last_error } => {
                write!(f, "{topic}-{partition}: not delivered within the delivery timeout of {timeout:?}")?;
                match last_error {
                    Some(e) => write!(f, " (last error: {e})"),
                    None => Ok(()),
                }
            }
            ProduceError::Connection(e) => e.fmt(f),
            ProduceError::ProducerId { code, message } => {
                write!(f, "the cluster refused a producer id: {code}")?;
                write_message(f, message.as_deref())
            }
            ProduceError::OutcomeUnknown { topic, partition } => write!(
                f,
                "{topic}-{partition}: the batch may have been written (an earlier attempt had no answer) and is not \
                 sent again under the new producer id, which could write it twice"
            ),
            ProduceError::Fenced { transactional_id, producer_id, epoch, code } => write!(
                f,
                "the transactional producer {transactional_id:?} (producer id {producer_id}, epoch {epoch}) is \
                 fenced: {code}"
            ),
            ProduceError::TransactionState { operation, state } => write!(f, "cannot {operation}: {state}"),
            ProduceError::TransactionAborted { source } => {
                write!(f, "the transaction was aborted because a record of it failed: {source}")
            }
            ProduceError::TransactionOutcomeUnknown { commit, source } => write!(
                f,
                "the transaction's {} may or may not have happened (EndTxn had no answer: {source}); call {} again \
                 to find out",
                if *commit { "commit" } else { "abort" },
                if *commit { "commit" } else { "abort" },
            ),
            ProduceError::Closed => f.write_str("the producer is closed"),
            ProduceError::Config(e) => e.fmt(f),
            ProduceError::Encode(reason) => write!(f, "the batch could not be encoded: {reason}"),
        }
    }
}

/// Appends a broker's message, when it sent one.
fn write_message(f: &mut std::fmt::Formatter<'_>, message: Option<&str>) -> std::fmt::Result {
    match message {
        Some(m) if !m.is_empty() => write!(f, ": {m}"),
        _ => Ok(()),
    }
}

impl std::error::Error for ProduceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ProduceError::InvalidPartition { source, .. } => Some(source),
            ProduceError::DeliveryTimeout { last_error, .. } => {
                last_error.as_ref().map(|e| e as &(dyn std::error::Error + 'static))
            }
            // Transparent, as their own text is this error's.
            ProduceError::Connection(e) => e.source(),
            ProduceError::Config(e) => e.source(),
            // The failure itself, not its box: it downcasts to `ProduceError`.
            ProduceError::TransactionAborted { source } => Some(&**source),
            ProduceError::TransactionOutcomeUnknown { source, .. } => Some(source),
            _ => None,
        }
    }
}

impl From<klife_connection::Error> for ProduceError {
    fn from(e: klife_connection::Error) -> Self {
        ProduceError::Connection(e)
    }
}

impl From<ConfigError> for ProduceError {
    fn from(e: ConfigError) -> Self {
        ProduceError::Config(e)
    }
}

/// Why an attempt to deliver a batch failed, when the batch was to be tried again:
/// the last one is kept by [`ProduceError::DeliveryTimeout`].
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum AttemptError {
    /// The broker refused the batch with an error code (retriable, or one the producer
    /// repairs: a sequence or producer id error, or a batch too large, split in two).
    #[error("{code}{}", message.as_ref().map(|m| format!(": {m}")).unwrap_or_default())]
    Broker {
        /// The error code.
        code: ErrorCode,
        /// The broker's message.
        message: Option<String>,
    },
    /// The request got no answer: no connection, a broken one, or a timeout.
    #[error(transparent)]
    Connection(klife_connection::Error),
    /// The broker's answer left the partition out.
    #[error("the broker's answer left the partition out")]
    NotAnswered,
    /// The metadata named no live leader for the partition.
    #[error("the partition had no live leader")]
    NoLeader,
}

impl AttemptError {
    /// The broker error code that describes the failure (NETWORK_EXCEPTION for a
    /// connection failure without one, UNKNOWN_SERVER_ERROR for a missing answer,
    /// LEADER_NOT_AVAILABLE without a leader).
    pub fn code(&self) -> ErrorCode {
        match self {
            AttemptError::Broker { code, .. } => *code,
            AttemptError::Connection(e) => e.error_code().unwrap_or(ErrorCode::NetworkException),
            AttemptError::NotAnswered => ErrorCode::UnknownServerError,
            AttemptError::NoLeader => ErrorCode::LeaderNotAvailable,
        }
    }
}

/// A transaction operation, as [`ProduceError::TransactionState`] names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransactionOperation {
    /// `begin`.
    Begin,
    /// `produce`, `produce_async` or `produce_batch`.
    Produce,
    /// `send_offsets_to_transaction`.
    SendOffsets,
    /// `commit`.
    Commit,
    /// `abort`.
    Abort,
}

impl std::fmt::Display for TransactionOperation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TransactionOperation::Begin => "begin a transaction",
            TransactionOperation::Produce => "produce in a transaction",
            TransactionOperation::SendOffsets => "send offsets to a transaction",
            TransactionOperation::Commit => "commit a transaction",
            TransactionOperation::Abort => "abort a transaction",
        })
    }
}

/// Where a transactional producer is between its transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum TransactionState {
    /// No transaction is open: `begin` first.
    Idle,
    /// A transaction is open: commit or abort it first.
    InTransaction,
}

impl std::fmt::Display for TransactionState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TransactionState::Idle => "no transaction is open (call begin first)",
            TransactionState::InTransaction => "a transaction is already open (commit or abort it first)",
        })
    }
}

impl ProduceError {
    /// The broker error code, if a broker answered with one.
    pub fn error_code(&self) -> Option<ErrorCode> {
        match self {
            ProduceError::Broker { code, .. }
            | ProduceError::Coordinator { code, .. }
            | ProduceError::ProducerId { code, .. }
            | ProduceError::Fenced { code, .. } => Some(*code),
            ProduceError::Connection(e) => e.error_code(),
            _ => None,
        }
    }

    /// Whether the producer is fenced ([`ProduceError::Fenced`]): nothing retries this.
    pub fn is_fenced(&self) -> bool {
        matches!(self, ProduceError::Fenced { .. })
    }

    /// Whether the group coordinator refused a transaction's consumer offsets because
    /// the member that sent them is no longer in its group as it was (KIP-447): its
    /// generation or member epoch moved on, it was removed, or its static instance id
    /// was taken over. For an aborted transaction, its cause is asked. The member's
    /// partitions belong to someone else now; its transaction cannot commit.
    pub fn is_group_member_fenced(&self) -> bool {
        let cause = match self {
            ProduceError::TransactionAborted { source } => source,
            other => other,
        };
        matches!(
            cause.error_code(),
            Some(
                ErrorCode::IllegalGeneration
                    | ErrorCode::UnknownMemberId
                    | ErrorCode::FencedInstanceId
                    | ErrorCode::FencedMemberEpoch
                    | ErrorCode::StaleMemberEpoch
                    | ErrorCode::RebalanceInProgress
            )
        )
    }

    /// Whether the outcome is unknown: a batch that may have been written and was not
    /// sent again ([`ProduceError::OutcomeUnknown`]), or a commit or abort that had no
    /// answer ([`ProduceError::TransactionOutcomeUnknown`]).
    pub fn is_outcome_unknown(&self) -> bool {
        matches!(self, ProduceError::OutcomeUnknown { .. } | ProduceError::TransactionOutcomeUnknown { .. })
    }

    /// Whether a commit aborted the transaction instead, because a record of it
    /// failed ([`ProduceError::TransactionAborted`]).
    pub fn is_transaction_aborted(&self) -> bool {
        matches!(self, ProduceError::TransactionAborted { .. })
    }
}
