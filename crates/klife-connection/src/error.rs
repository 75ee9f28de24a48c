//! The connection layer's error type: what went wrong talking to which broker, and
//! whether trying again can help.

use std::sync::Arc;
use std::time::Duration;

use klife_protocol::{ApiKey, DecodeError, EncodeError, ErrorCode, RetryAction, VersionRange};

use crate::cluster::CoordinatorType;
use crate::config::ConfigError;

fn leader_text(leader: Option<i32>) -> String {
    match leader {
        None => "it has no leader".to_owned(),
        Some(id) => format!("its leader, broker {id}, is not among the live brokers"),
    }
}

/// Which timeout a request ran out of ([`Error::Timeout`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TimeoutKind {
    /// The connection's [`request_timeout`](crate::ConnectionConfig::request_timeout),
    /// which every request has unless it brings its own.
    Connection,
    /// A timeout given with this request
    /// ([`Connection::send_with_timeout`](crate::Connection::send_with_timeout),
    /// [`RetryPolicy::with_request_timeout`](crate::RetryPolicy::with_request_timeout)),
    /// such as a JoinGroup's, which waits for the whole rebalance.
    Request,
}

impl std::fmt::Display for TimeoutKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            TimeoutKind::Connection => "the connection's request timeout",
            TimeoutKind::Request => "the timeout given with the request",
        })
    }
}

/// An error from the connection layer.
///
/// Every variant that concerns a broker names it (`broker` is `host:port`, with the
/// node id when known). [`Error::is_retriable`] tells whether the same request may
/// succeed later (after a reconnect or a metadata refresh).
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// TCP connect failed or timed out.
    #[error("cannot connect to broker {broker}: {reason}")]
    Connect {
        /// The broker.
        broker: String,
        /// What the operating system or the timeout said.
        reason: String,
    },
    /// The TLS handshake or TLS configuration failed.
    #[error("TLS with broker {broker} failed: {reason}")]
    Tls {
        /// The broker.
        broker: String,
        /// What failed, and what to fix.
        reason: String,
    },
    /// SASL authentication failed: wrong credentials, an unsupported mechanism, or a
    /// protocol error.
    #[error("SASL {mechanism} authentication with broker {broker} failed: {reason}")]
    Authentication {
        /// The broker.
        broker: String,
        /// The SASL mechanism.
        mechanism: String,
        /// What the broker or the mechanism said.
        reason: String,
    },
    /// The connection broke; requests in flight on it were not answered.
    #[error("connection to broker {broker} lost: {reason}")]
    Disconnected {
        /// The broker.
        broker: String,
        /// Why.
        reason: String,
    },
    /// No answer within the request's timeout; the connection is closed (the
    /// requests queued behind it on that connection would wait too).
    #[error("{api} request to broker {broker} timed out after {timeout:?} ({kind})")]
    Timeout {
        /// The broker.
        broker: String,
        /// The request's API.
        api: ApiKey,
        /// The timeout that expired.
        timeout: Duration,
        /// Which timeout it was: the connection's, or one given with the request.
        kind: TimeoutKind,
    },
    /// The broker and klife have no version of an API in common.
    #[error(
        "broker {broker} does not support {api} in any version klife can use \
         (broker: {broker_versions}, klife: {client_versions})"
    )]
    UnsupportedVersion {
        /// The broker.
        broker: String,
        /// The API.
        api: ApiKey,
        /// What the broker supports (`none` if it does not have the API at all).
        broker_versions: String,
        /// What klife can use.
        client_versions: VersionRange,
    },
    /// The broker answered with an error code.
    #[error("{api} to broker {broker} failed: {code}{}", message.as_ref().map(|m| format!(": {m}")).unwrap_or_default())]
    Broker {
        /// The broker.
        broker: String,
        /// The request's API.
        api: ApiKey,
        /// The error code.
        code: ErrorCode,
        /// The broker's error message, if it sent one.
        message: Option<String>,
    },
    /// A response could not be decoded.
    #[error("cannot decode the {api} v{version} response from broker {broker}: {source}")]
    Decode {
        /// The broker.
        broker: String,
        /// The request's API.
        api: ApiKey,
        /// The version used.
        version: i16,
        /// The codec's error.
        source: DecodeError,
    },
    /// A request could not be encoded.
    #[error("cannot encode the {api} v{version} request: {source}")]
    Encode {
        /// The request's API.
        api: ApiKey,
        /// The version chosen.
        version: i16,
        /// The codec's error.
        source: EncodeError,
    },
    /// Every address tried failed (the bootstrap list, or every known broker).
    #[error("every broker tried failed: {}", attempts.iter().map(|(a, e)| format!("{a}: {e}")).collect::<Vec<_>>().join("; "))]
    Bootstrap {
        /// Each address tried, with its error.
        attempts: Vec<(String, Error)>,
    },
    /// A bootstrap address is not `host:port`.
    #[error("invalid broker address {address:?}: expected host:port")]
    InvalidAddress {
        /// The address as given.
        address: String,
    },
    /// The metadata says a partition cannot be used now: it has no leader, or its
    /// leader is not among the live brokers.
    #[error("partition {topic}-{partition} is unavailable: {} ({code})", leader_text(*.leader))]
    PartitionUnavailable {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// The error code that describes the situation.
        code: ErrorCode,
        /// The leader the metadata names, when it names one that is not live (`None`:
        /// no leader).
        leader: Option<i32>,
    },
    /// The cluster metadata does not know this broker.
    #[error("broker {node_id} is not in the cluster metadata")]
    UnknownBroker {
        /// The node id asked for.
        node_id: i32,
    },
    /// The cluster metadata lists no broker, and no bootstrap address answers.
    #[error("the cluster has no brokers")]
    NoBrokers,
    /// The cluster metadata does not know this topic (it does not exist, or not yet).
    #[error("topic {topic:?} is not in the cluster metadata")]
    UnknownTopic {
        /// The topic.
        topic: String,
    },
    /// The topic has fewer partitions than the one asked for.
    #[error("topic {topic:?} has no partition {partition} (it has {partitions})")]
    UnknownPartition {
        /// The topic.
        topic: String,
        /// The partition asked for.
        partition: i32,
        /// How many partitions the topic has.
        partitions: usize,
    },
    /// FindCoordinator found no coordinator for a key: the answer's error (with the
    /// code) is the source, or none when the answer left the key out.
    #[error("no {kind} coordinator found for {key:?}{}", source.as_ref().map(|s| format!(": {s}")).unwrap_or_default())]
    CoordinatorNotFound {
        /// Group or transaction coordinator.
        kind: CoordinatorType,
        /// The group or transactional id.
        key: String,
        /// The last error, with its code.
        source: Option<Box<Error>>,
    },
    /// A call retried by the retry rule ran out of time or attempts while its error
    /// could still have healed; the last error is the source.
    #[error("{api} gave up after {attempts} attempts in {elapsed:?}: {source}")]
    RetriesExhausted {
        /// The request's API.
        api: ApiKey,
        /// Attempts made.
        attempts: u32,
        /// Time from the first attempt to giving up.
        elapsed: Duration,
        /// The last attempt's error.
        source: Box<Error>,
    },
    /// The client was closed.
    #[error("the client is closed")]
    Closed,
    /// A setting is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// An I/O error outside a broker conversation.
    #[error("I/O error: {0}")]
    Io(Arc<std::io::Error>),
}

impl Error {
    /// The error that best explains this one: for [`Error::Bootstrap`], the first
    /// attempt that failed for a reason other than reachability (a TLS, SASL or version
    /// problem is what needs fixing), else the first attempt; otherwise the error itself.
    pub fn primary(&self) -> &Error {
        match self {
            Error::Bootstrap { attempts } => attempts
                .iter()
                .map(|(_, e)| e.primary())
                .find(|e| !matches!(e, Error::Connect { .. } | Error::Disconnected { .. } | Error::Timeout { .. }))
                .or_else(|| attempts.first().map(|(_, e)| e.primary()))
                .unwrap_or(self),
            other => other,
        }
    }

    /// Whether the same request may succeed if tried again later: connection
    /// problems, timeouts, and broker error codes Kafka classifies as retriable.
    pub fn is_retriable(&self) -> bool {
        match self {
            Error::Bootstrap { attempts } if !attempts.is_empty() => self.primary().is_retriable(),
            Error::Connect { .. } | Error::Disconnected { .. } | Error::Timeout { .. } => true,
            Error::Broker { code, .. } | Error::PartitionUnavailable { code, .. } => code_is_retriable(*code),
            // A topic may not have reached every broker yet; a partition index past the
            // topic's partitions stays wrong until partitions are added.
            Error::UnknownBroker { .. }
            | Error::NoBrokers
            | Error::UnknownTopic { .. }
            | Error::RetriesExhausted { .. } => true,
            Error::CoordinatorNotFound { source, .. } => source.as_ref().is_none_or(|s| s.is_retriable()),
            _ => false,
        }
    }

    /// The broker error code, if the broker answered with one.
    /// For an unknown topic or partition, UNKNOWN_TOPIC_OR_PARTITION; for a coordinator
    /// not found or retries run out, the code of the error behind it.
    pub fn error_code(&self) -> Option<ErrorCode> {
        match self.primary() {
            Error::Broker { code, .. } | Error::PartitionUnavailable { code, .. } => Some(*code),
            Error::UnknownTopic { .. } | Error::UnknownPartition { .. } => Some(ErrorCode::UnknownTopicOrPartition),
            Error::CoordinatorNotFound { source, .. } => source.as_ref().and_then(|s| s.error_code()),
            Error::RetriesExhausted { source, .. } => source.error_code(),
            _ => None,
        }
    }

    /// What the retry rule makes of this error's code, if it has one (see
    /// [`retry`](crate::retry)).
    pub fn retry_action(&self) -> Option<RetryAction> {
        self.error_code().map(ErrorCode::retry_action)
    }

    /// Whether the retry rule gave up on a call that might still have healed: its
    /// time or its attempts ran out ([`Error::RetriesExhausted`]).
    pub fn is_retries_exhausted(&self) -> bool {
        matches!(self, Error::RetriesExhausted { .. })
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(Arc::new(e))
    }
}

/// Whether sending the same request again may succeed after a broker answered `code`:
/// Kafka's retriable codes and those the retry rule resends, except the ones that ask a
/// group member to rejoin first (a resend as the same member is refused again).
pub fn code_is_retriable(code: ErrorCode) -> bool {
    let action = code.retry_action();
    (code.is_retriable() || action.is_retry()) && action != RetryAction::Rejoin
}
