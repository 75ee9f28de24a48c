//! klife's one error type: opaque, with predicates for what callers branch on, and the
//! layer's own error behind `source()`.

use klife_protocol::{ApiKey, ErrorCode, RetryAction};

/// An error from klife.
///
/// Ask it what kind of failure it is ([`is_retriable`](Error::is_retriable),
/// [`is_timeout`](Error::is_timeout), [`is_connection`](Error::is_connection),
/// [`is_authentication`](Error::is_authentication), [`error_code`](Error::error_code),
/// ...) rather than matching on its structure, which may grow. `Display` gives the
/// whole story in one line.
pub struct Error {
    inner: Box<Inner>,
}

#[derive(Debug)]
enum Inner {
    Connection(klife_connection::Error),
    Produce(klife_producer::ProduceError),
    Fetch(klife_fetcher::FetchError),
    Broker { context: String, api: ApiKey, code: ErrorCode, message: Option<String> },
    InvalidArgument(String),
}

impl Error {
    pub(crate) fn broker(context: impl Into<String>, api: ApiKey, code: ErrorCode, message: Option<String>) -> Self {
        Error { inner: Box::new(Inner::Broker { context: context.into(), api, code, message }) }
    }

    pub(crate) fn invalid_argument(message: impl Into<String>) -> Self {
        Error { inner: Box::new(Inner::InvalidArgument(message.into())) }
    }

    /// The connection-layer error that explains this one, if it came from there (for a
    /// failed bootstrap: the most telling attempt).
    fn connection(&self) -> Option<&klife_connection::Error> {
        match &*self.inner {
            Inner::Connection(e) | Inner::Produce(klife_producer::ProduceError::Connection(e)) => Some(e.primary()),
            _ => None,
        }
    }

    fn produce(&self) -> Option<&klife_producer::ProduceError> {
        match &*self.inner {
            Inner::Produce(e) => Some(e),
            _ => None,
        }
    }

    /// Whether the producer's buffer was full.
    pub fn is_buffer_full(&self) -> bool {
        matches!(self.produce(), Some(klife_producer::ProduceError::BufferFull { .. }))
    }

    /// Whether a record was not delivered within the delivery timeout.
    pub fn is_delivery_timeout(&self) -> bool {
        matches!(self.produce(), Some(klife_producer::ProduceError::DeliveryTimeout { .. }))
    }

    /// The broker error code, when a broker answered with one.
    pub fn error_code(&self) -> Option<ErrorCode> {
        match &*self.inner {
            Inner::Broker { code, .. } => Some(*code),
            Inner::Connection(e) => e.error_code(),
            Inner::Produce(e) => e.error_code(),
            Inner::Fetch(e) => e.error_code(),
            Inner::InvalidArgument(_) => None,
        }
    }

    /// What a client should do about the broker error code, if there is one.
    pub fn retry_action(&self) -> Option<RetryAction> {
        self.error_code().map(ErrorCode::retry_action)
    }

    /// Whether trying the same operation again may succeed.
    pub fn is_retriable(&self) -> bool {
        match &*self.inner {
            Inner::Connection(e) => e.is_retriable(),
            Inner::Broker { code, .. } => code.is_retriable() || code.retry_action().is_retry(),
            Inner::Produce(e) => match e {
                klife_producer::ProduceError::Connection(c) => c.is_retriable(),
                klife_producer::ProduceError::BufferFull { .. }
                | klife_producer::ProduceError::DeliveryTimeout { .. } => true,
                other => other.error_code().is_some_and(|c| c.is_retriable()),
            },
            Inner::Fetch(e) => e.is_retriable(),
            Inner::InvalidArgument(_) => false,
        }
    }

    fn fetch(&self) -> Option<&klife_fetcher::FetchError> {
        match &*self.inner {
            Inner::Fetch(e) => Some(e),
            _ => None,
        }
    }

    /// Whether a fetch asked for an offset outside the partition's log;
    /// [`offset_range`](Self::offset_range) gives the valid range.
    pub fn is_offset_out_of_range(&self) -> bool {
        matches!(self.fetch(), Some(klife_fetcher::FetchError::OffsetOutOfRange { .. }))
    }

    /// For an out-of-range fetch: the partition's valid offsets, `log_start..high_watermark`
    /// (-1 where unknown).
    pub fn offset_range(&self) -> Option<std::ops::Range<i64>> {
        match self.fetch() {
            Some(klife_fetcher::FetchError::OffsetOutOfRange { log_start_offset, high_watermark, .. }) => {
                Some(*log_start_offset..*high_watermark)
            }
            _ => None,
        }
    }

    /// Whether fetched data could not be read (bad CRC, bad lengths, a codec failure).
    pub fn is_corrupt(&self) -> bool {
        matches!(self.fetch(), Some(klife_fetcher::FetchError::Corrupt { .. }))
            || self.error_code() == Some(ErrorCode::CorruptMessage)
    }

    /// Whether a request timed out, or retries ran out of time.
    pub fn is_timeout(&self) -> bool {
        matches!(self.fetch(), Some(klife_fetcher::FetchError::Timeout { .. }))
            || matches!(self.connection(), Some(klife_connection::Error::Timeout { .. }))
            || self.error_code() == Some(ErrorCode::RequestTimedOut)
    }

    /// Whether a broker could not be reached or the connection broke.
    pub fn is_connection(&self) -> bool {
        matches!(
            self.connection(),
            Some(klife_connection::Error::Connect { .. } | klife_connection::Error::Disconnected { .. })
        )
    }

    /// Whether TLS failed (certificates, hostname, handshake).
    pub fn is_tls(&self) -> bool {
        matches!(self.connection(), Some(klife_connection::Error::Tls { .. }))
    }

    /// Whether authentication or authorization failed.
    pub fn is_authentication(&self) -> bool {
        matches!(self.connection(), Some(klife_connection::Error::Authentication { .. }))
            || matches!(
                self.error_code(),
                Some(
                    ErrorCode::SaslAuthenticationFailed
                        | ErrorCode::TopicAuthorizationFailed
                        | ErrorCode::GroupAuthorizationFailed
                        | ErrorCode::ClusterAuthorizationFailed
                        | ErrorCode::TransactionalIdAuthorizationFailed
                )
            )
    }

    /// Whether the broker and klife share no version of a needed API.
    pub fn is_unsupported_version(&self) -> bool {
        matches!(self.connection(), Some(klife_connection::Error::UnsupportedVersion { .. }))
            || self.error_code() == Some(ErrorCode::UnsupportedVersion)
    }

    /// Whether a topic or partition does not exist.
    pub fn is_unknown_topic_or_partition(&self) -> bool {
        matches!(self.error_code(), Some(ErrorCode::UnknownTopicOrPartition | ErrorCode::UnknownTopicId))
            || matches!(
                self.produce(),
                Some(
                    klife_producer::ProduceError::UnknownTopic { .. }
                        | klife_producer::ProduceError::InvalidPartition { .. }
                )
            )
    }

    /// Whether an argument or configuration value was invalid.
    pub fn is_invalid_argument(&self) -> bool {
        matches!(&*self.inner, Inner::InvalidArgument(_))
            || matches!(
                self.fetch(),
                Some(klife_fetcher::FetchError::InvalidOffset { .. } | klife_fetcher::FetchError::InvalidArgument(_))
            )
            || matches!(
                self.produce(),
                Some(klife_producer::ProduceError::RecordTooLarge { .. } | klife_producer::ProduceError::Config(_))
            )
            || matches!(
                self.connection(),
                Some(klife_connection::Error::Config(_) | klife_connection::Error::InvalidAddress { .. })
            )
    }

    /// Whether the client was closed.
    pub fn is_closed(&self) -> bool {
        matches!(self.connection(), Some(klife_connection::Error::Closed))
            || matches!(self.produce(), Some(klife_producer::ProduceError::Closed))
            || matches!(self.fetch(), Some(klife_fetcher::FetchError::Closed))
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &*self.inner {
            Inner::Connection(e) => e.fmt(f),
            Inner::Produce(e) => e.fmt(f),
            Inner::Fetch(e) => e.fmt(f),
            Inner::Broker { context, api, code, message } => {
                write!(f, "{context}: {api} failed with {code}")?;
                if let Some(m) = message.as_ref().filter(|m| !m.is_empty()) {
                    write!(f, ": {m}")?;
                }
                Ok(())
            }
            Inner::InvalidArgument(m) => write!(f, "invalid argument: {m}"),
        }
    }
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("klife::Error").field(&self.inner).finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &*self.inner {
            Inner::Connection(e) => Some(e),
            Inner::Produce(e) => Some(e),
            Inner::Fetch(e) => Some(e),
            Inner::Broker { code, .. } => Some(code),
            Inner::InvalidArgument(_) => None,
        }
    }
}

impl From<klife_producer::ProduceError> for Error {
    fn from(e: klife_producer::ProduceError) -> Self {
        Error { inner: Box::new(Inner::Produce(e)) }
    }
}

impl From<klife_fetcher::FetchError> for Error {
    fn from(e: klife_fetcher::FetchError) -> Self {
        match e {
            klife_fetcher::FetchError::Connection(c) => Error::from(c),
            e => Error { inner: Box::new(Inner::Fetch(e)) },
        }
    }
}

impl From<klife_connection::Error> for Error {
    fn from(e: klife_connection::Error) -> Self {
        Error { inner: Box::new(Inner::Connection(e)) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn predicates_follow_the_cause() {
        let e = Error::broker("topic t", ApiKey::CreateTopics, ErrorCode::TopicAlreadyExists, Some("exists".into()));
        let text = e.to_string();
        assert!(text.starts_with("topic t: CreateTopics(19) failed with TOPIC_ALREADY_EXISTS"), "{text}");
        assert!(text.ends_with(": exists"), "{text}");
        assert!(!e.is_retriable());
        let e: Error = klife_connection::Error::Timeout {
            broker: "b".into(),
            api: ApiKey::Produce,
            timeout: std::time::Duration::from_secs(1),
        }
        .into();
        assert!(e.is_timeout() && e.is_retriable());
        let e = Error::broker("t-0", ApiKey::ListOffsets, ErrorCode::NotLeaderOrFollower, None);
        assert!(e.is_retriable());
        assert_eq!(e.retry_action(), Some(RetryAction::RefreshMetadata));
        assert!(Error::invalid_argument("x").is_invalid_argument());
    }
}
