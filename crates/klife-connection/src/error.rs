//! The connection layer's error type: what went wrong talking to which broker, and
//! whether trying again can help.

use std::sync::Arc;
use std::time::Duration;

use klife_protocol::{ApiKey, DecodeError, EncodeError, ErrorCode, VersionRange};

use crate::config::ConfigError;

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
    /// No answer within the request timeout; the connection is closed.
    #[error("{api} request to broker {broker} timed out after {timeout:?}")]
    Timeout {
        /// The broker.
        broker: String,
        /// The request's API.
        api: ApiKey,
        /// The timeout that expired.
        timeout: Duration,
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
    /// The metadata says a partition cannot be used now (no leader, its leader is
    /// down, or the topic has an error).
    #[error("partition {topic}-{partition} is unavailable: {reason} ({code})")]
    PartitionUnavailable {
        /// Topic.
        topic: String,
        /// Partition.
        partition: i32,
        /// The error code that describes the situation.
        code: ErrorCode,
        /// What the metadata says.
        reason: String,
    },
    /// The cluster metadata does not know a broker, topic or partition.
    #[error("{0}")]
    Metadata(String),
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
            Error::Broker { code, .. } | Error::PartitionUnavailable { code, .. } => {
                code.is_retriable() || code.retry_action().is_retry()
            }
            Error::Metadata(_) => true,
            _ => false,
        }
    }

    /// The broker error code, if the broker answered with one.
    pub fn error_code(&self) -> Option<ErrorCode> {
        match self.primary() {
            Error::Broker { code, .. } | Error::PartitionUnavailable { code, .. } => Some(*code),
            _ => None,
        }
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        Error::Io(Arc::new(e))
    }
}
