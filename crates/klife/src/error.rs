//! klife's one error type: opaque, with predicates for what callers branch on, and the
//! layer's own error behind `source()`.

use klife_connection::{ConfigError, ConfigProblem};
use klife_producer::ProduceError;
use klife_protocol::{ApiKey, DecodeError, ErrorCode, RetryAction};

/// An error from klife.
///
/// Ask it what kind of failure it is ([`is_retriable`](Error::is_retriable),
/// [`is_timeout`](Error::is_timeout), [`is_connection`](Error::is_connection),
/// [`is_authentication`](Error::is_authentication), [`is_fenced`](Error::is_fenced),
/// [`error_code`](Error::error_code), ...) rather than matching on its structure, which may grow. `Display` gives the
/// whole story in one line.
pub struct Error {
    inner: Box<Inner>,
}

#[derive(Debug)]
enum Inner {
    Connection(klife_connection::Error),
    Produce(ProduceError),
    Fetch(klife_fetcher::FetchError),
    Broker {
        context: String,
        api: ApiKey,
        code: ErrorCode,
        message: Option<String>,
    },
    InvalidArgument(String),
    /// A setting given to the client builder (`context` names which producer or
    /// fetcher it belongs to).
    Config {
        context: String,
        source: ConfigError,
    },
    /// A consumer group's settings.
    GroupConfig(klife_group::ConfigError),
    /// A consumer group's member stopped.
    Group(klife_group::runtime::GroupStopped),
    /// A manual-mode lease could not pull or commit.
    Manual(klife_group::runtime::ManualError),
    /// A pipeline's settings are invalid.
    PipelineConfig(klife_pipeline::runtime::PipelineError),
    /// A group's offsets were to change while it has members.
    GroupNotEmpty {
        group: String,
        members: usize,
        state: String,
    },
    /// A configuration file's key (its dotted path; empty for the whole file).
    ConfigFile {
        file: Option<String>,
        key: String,
        message: String,
    },
}

impl Error {
    pub(crate) fn broker(context: impl Into<String>, api: ApiKey, code: ErrorCode, message: Option<String>) -> Self {
        Error { inner: Box::new(Inner::Broker { context: context.into(), api, code, message }) }
    }

    pub(crate) fn invalid_argument(message: impl Into<String>) -> Self {
        Error { inner: Box::new(Inner::InvalidArgument(message.into())) }
    }

    /// An invalid setting of what `context` names (`default producer`, `producer "x"`).
    pub(crate) fn config(context: impl Into<String>, source: ConfigError) -> Self {
        Error { inner: Box::new(Inner::Config { context: context.into(), source }) }
    }

    pub(crate) fn group_config(source: klife_group::ConfigError) -> Self {
        Error { inner: Box::new(Inner::GroupConfig(source)) }
    }

    pub(crate) fn group_not_empty(group: &str, members: usize, state: String) -> Self {
        Error { inner: Box::new(Inner::GroupNotEmpty { group: group.to_owned(), members, state }) }
    }

    pub(crate) fn pipeline_config(source: klife_pipeline::runtime::PipelineError) -> Self {
        Error { inner: Box::new(Inner::PipelineConfig(source)) }
    }

    /// A configuration file's `key` (dotted path) is invalid: `message` says why.
    #[cfg_attr(not(feature = "config"), allow(dead_code))]
    pub(crate) fn config_file(key: impl Into<String>, message: impl Into<String>) -> Self {
        Error { inner: Box::new(Inner::ConfigFile { file: None, key: key.into(), message: message.into() }) }
    }

    /// Names the file a configuration error is in.
    #[cfg_attr(not(feature = "config"), allow(dead_code))]
    pub(crate) fn in_file(mut self, path: &std::path::Path) -> Self {
        if let Inner::ConfigFile { file, .. } = &mut *self.inner {
            *file = Some(path.display().to_string());
        }
        self
    }

    /// For an error in a configuration file: the dotted path of the key at fault
    /// (`producers.bulk.linger`; empty when it is the whole file, such as a syntax
    /// error).
    pub fn config_key(&self) -> Option<&str> {
        match &*self.inner {
            Inner::ConfigFile { key, .. } => Some(key),
            _ => None,
        }
    }

    /// The connection-layer error that explains this one, if it came from there (for a
    /// failed bootstrap: the most telling attempt).
    fn connection(&self) -> Option<&klife_connection::Error> {
        match &*self.inner {
            Inner::Connection(e) | Inner::Produce(ProduceError::Connection(e)) => Some(e.primary()),
            _ => None,
        }
    }

    fn produce(&self) -> Option<&ProduceError> {
        match &*self.inner {
            Inner::Produce(e) => Some(e),
            _ => None,
        }
    }

    /// Whether the producer's buffer was full.
    pub fn is_buffer_full(&self) -> bool {
        matches!(self.produce(), Some(ProduceError::BufferFull { .. }))
    }

    /// Whether a record was not delivered within the delivery timeout.
    pub fn is_delivery_timeout(&self) -> bool {
        matches!(self.produce(), Some(ProduceError::DeliveryTimeout { .. }))
    }

    /// The broker error code, when a broker answered with one.
    pub fn error_code(&self) -> Option<ErrorCode> {
        match &*self.inner {
            Inner::Broker { code, .. } => Some(*code),
            Inner::Connection(e) => e.error_code(),
            Inner::Produce(e) => e.error_code(),
            Inner::Fetch(e) => e.error_code(),
            Inner::Group(klife_group::runtime::GroupStopped::Member(e)) => Some(e.code()),
            Inner::InvalidArgument(_)
            | Inner::Config { .. }
            | Inner::GroupConfig(_)
            | Inner::Group(_)
            | Inner::Manual(_)
            | Inner::PipelineConfig(_)
            | Inner::GroupNotEmpty { .. } => None,
            Inner::ConfigFile { .. } => None,
        }
    }

    /// What a client should do about the broker error code, if there is one.
    pub fn retry_action(&self) -> Option<RetryAction> {
        self.error_code().map(ErrorCode::retry_action)
    }

    /// Whether trying the same operation again may succeed. False for what a resend
    /// cannot fix: invalid arguments and settings, a fenced producer, a transaction
    /// already aborted or called in the wrong state, a batch that may have been
    /// written, a closed client.
    pub fn is_retriable(&self) -> bool {
        match &*self.inner {
            Inner::Connection(e) => e.is_retriable(),
            Inner::Broker { code, .. } => klife_connection::code_is_retriable(*code),
            Inner::Produce(e) => match e {
                ProduceError::Connection(c) => c.is_retriable(),
                ProduceError::BufferFull { .. } | ProduceError::DeliveryTimeout { .. } => true,
                ProduceError::Broker { code, .. }
                | ProduceError::Coordinator { code, .. }
                | ProduceError::ProducerId { code, .. } => code.is_retriable(),
                _ => false,
            },
            Inner::Fetch(e) => e.is_retriable(),
            // A new lease goes on; the same call on this one does not.
            Inner::InvalidArgument(_)
            | Inner::Config { .. }
            | Inner::GroupConfig(_)
            | Inner::Group(_)
            | Inner::Manual(_)
            | Inner::PipelineConfig(_)
            | Inner::GroupNotEmpty { .. } => false,
            Inner::ConfigFile { .. } => false,
        }
    }

    /// Whether a group member must join its group again before this can succeed: the
    /// coordinator does not know the member (UNKNOWN_MEMBER_ID), its generation or
    /// member epoch is stale (ILLEGAL_GENERATION, FENCED_MEMBER_EPOCH), a rebalance is
    /// under way (REBALANCE_IN_PROGRESS), or a first join needs the member id it was
    /// given (MEMBER_ID_REQUIRED). Not [`is_retriable`](Self::is_retriable): resending
    /// as the same member is refused again.
    pub fn is_rebalance(&self) -> bool {
        self.retry_action() == Some(RetryAction::Rejoin)
    }

    /// Whether the transactional producer is fenced: a newer producer with the same
    /// transactional id took over, or its epoch is stale. Nothing retries this; the
    /// producer can only be closed.
    pub fn is_fenced(&self) -> bool {
        matches!(self.produce(), Some(ProduceError::Fenced { .. }))
            || matches!(self.error_code(), Some(ErrorCode::ProducerFenced | ErrorCode::InvalidProducerEpoch))
    }

    /// Whether a commit aborted the transaction instead, because one of its records
    /// had failed (that failure is the error's source).
    pub fn is_transaction_aborted(&self) -> bool {
        matches!(self.produce(), Some(ProduceError::TransactionAborted { .. }))
    }

    /// Whether a transaction operation was called in a state that does not allow it
    /// (`begin` with a transaction open, `produce`, `commit` or `abort` without one).
    pub fn is_invalid_transaction_state(&self) -> bool {
        matches!(self.produce(), Some(ProduceError::TransactionState { .. }))
    }

    /// Whether a producer could not tell if a batch was written: an earlier attempt
    /// had no answer when its producer id had to change, and it was not sent again so
    /// as not to write it twice. Its records are in the log once or not at all. Also a
    /// transaction's commit or abort that had no answer: calling it again finds out.
    pub fn is_outcome_unknown(&self) -> bool {
        self.produce().is_some_and(ProduceError::is_outcome_unknown)
    }

    /// Whether a compression codec this build was compiled without was needed: a
    /// producer configured with it, or a fetched batch compressed with it. The error
    /// names the cargo feature to turn on.
    pub fn is_compression_disabled(&self) -> bool {
        matches!(self.config_error(), Some(ConfigError { problem: ConfigProblem::CodecDisabled { .. }, .. }))
            || matches!(
                self.fetch(),
                Some(klife_fetcher::FetchError::Corrupt { source: DecodeError::CompressionDisabled(_), .. })
            )
    }

    /// The invalid setting, when a setting was invalid: which settings struct, which
    /// field, and what is wrong with its value.
    pub fn config_error(&self) -> Option<&ConfigError> {
        match &*self.inner {
            Inner::Config { source, .. } => Some(source),
            Inner::Produce(ProduceError::Config(e)) => Some(e),
            Inner::Fetch(klife_fetcher::FetchError::Config(e)) => Some(e),
            _ => match self.connection() {
                Some(klife_connection::Error::Config(e)) => Some(e),
                _ => None,
            },
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
    /// A batch compressed with a codec this build lacks is not corrupt:
    /// [`is_compression_disabled`](Self::is_compression_disabled).
    pub fn is_corrupt(&self) -> bool {
        (matches!(self.fetch(), Some(klife_fetcher::FetchError::Corrupt { .. }))
            || self.error_code() == Some(ErrorCode::CorruptMessage))
            && !self.is_compression_disabled()
    }

    /// Whether a request timed out, or retries ran out of time (or of attempts) with an
    /// error that might still have healed: [`error_code`](Self::error_code) is then the
    /// last attempt's code.
    pub fn is_timeout(&self) -> bool {
        matches!(self.fetch(), Some(klife_fetcher::FetchError::Timeout { .. }))
            || matches!(
                self.connection(),
                Some(klife_connection::Error::Timeout { .. } | klife_connection::Error::RetriesExhausted { .. })
            )
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
            || matches!(self.produce(), Some(ProduceError::UnknownTopic { .. } | ProduceError::InvalidPartition { .. }))
    }

    /// Whether an argument or configuration value was invalid.
    pub fn is_invalid_argument(&self) -> bool {
        matches!(&*self.inner, Inner::InvalidArgument(_) | Inner::GroupConfig(_) | Inner::PipelineConfig(_))
            || matches!(&*self.inner, Inner::ConfigFile { .. })
            || self.config_error().is_some()
            || matches!(
                self.fetch(),
                Some(klife_fetcher::FetchError::InvalidOffset { .. } | klife_fetcher::FetchError::InvalidArgument(_))
            )
            || matches!(self.produce(), Some(ProduceError::RecordTooLarge { .. }))
            || matches!(self.connection(), Some(klife_connection::Error::InvalidAddress { .. }))
    }

    /// The manual-mode error, when a lease could not pull or commit;
    /// [`ManualError::retake`](klife_group::runtime::ManualError::retake) says whether a
    /// new lease of the partition goes on.
    pub fn manual(&self) -> Option<&klife_group::runtime::ManualError> {
        match &*self.inner {
            Inner::Manual(e) => Some(e),
            _ => None,
        }
    }

    /// Whether a consumer group does not exist (GROUP_ID_NOT_FOUND): describing,
    /// deleting or reading the lag of an unknown group.
    pub fn is_group_not_found(&self) -> bool {
        self.error_code() == Some(ErrorCode::GroupIdNotFound)
    }

    /// Whether a consumer group has members, so that its offsets cannot be reset nor
    /// the group deleted (NON_EMPTY_GROUP): stop its consumers first.
    pub fn is_group_not_empty(&self) -> bool {
        matches!(&*self.inner, Inner::GroupNotEmpty { .. }) || self.error_code() == Some(ErrorCode::NonEmptyGroup)
    }

    /// Whether the client was closed.
    pub fn is_closed(&self) -> bool {
        matches!(self.connection(), Some(klife_connection::Error::Closed))
            || matches!(self.produce(), Some(ProduceError::Closed))
            || matches!(self.fetch(), Some(klife_fetcher::FetchError::Closed))
            || matches!(&*self.inner, Inner::Group(klife_group::runtime::GroupStopped::ClusterClosed))
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
            Inner::Config { context, source } => write!(f, "{context}: {source}"),
            Inner::GroupConfig(e) => write!(f, "consumer group settings: {e}"),
            Inner::Group(e) => write!(f, "consumer group: {e}"),
            Inner::Manual(e) => write!(f, "manual consumer group partition: {e}"),
            Inner::PipelineConfig(e) => write!(f, "pipeline settings: {e}"),
            Inner::ConfigFile { file, key, message } => {
                write!(f, "invalid configuration")?;
                if let Some(file) = file {
                    write!(f, " in {file}")?;
                }
                match key.as_str() {
                    "" => write!(f, ": {message}"),
                    key => write!(f, ": {key}: {message}"),
                }
            }
            Inner::GroupNotEmpty { group, members: 0, state } => {
                write!(f, "group {group:?} is {state}: it gained members; stop its consumers first")
            }
            Inner::GroupNotEmpty { group, members, state } => {
                write!(f, "group {group:?} has {members} active member(s) ({state}): stop its consumers first")
            }
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
            Inner::Config { source, .. } => Some(source),
            Inner::GroupConfig(e) => Some(e),
            Inner::Group(e) => Some(e),
            Inner::Manual(e) => Some(e),
            Inner::PipelineConfig(e) => Some(e),
            Inner::GroupNotEmpty { .. } => None,
            Inner::ConfigFile { .. } => None,
        }
    }
}

impl From<ProduceError> for Error {
    fn from(e: ProduceError) -> Self {
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

impl From<klife_group::runtime::ManualError> for Error {
    fn from(e: klife_group::runtime::ManualError) -> Self {
        Error { inner: Box::new(Inner::Manual(e)) }
    }
}

impl From<klife_group::runtime::GroupStopped> for Error {
    fn from(e: klife_group::runtime::GroupStopped) -> Self {
        Error { inner: Box::new(Inner::Group(e)) }
    }
}

impl From<klife_connection::Error> for Error {
    fn from(e: klife_connection::Error) -> Self {
        Error { inner: Box::new(Inner::Connection(e)) }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

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
            timeout: Duration::from_secs(1),
            kind: klife_connection::TimeoutKind::Connection,
        }
        .into();
        assert!(e.is_timeout() && e.is_retriable());
        let e = Error::broker("t-0", ApiKey::ListOffsets, ErrorCode::NotLeaderOrFollower, None);
        assert!(e.is_retriable());
        assert_eq!(e.retry_action(), Some(RetryAction::RefreshMetadata));
        assert!(Error::invalid_argument("x").is_invalid_argument());
    }

    #[test]
    fn rejoin_codes_are_rebalances_not_retries() {
        for code in [
            ErrorCode::UnknownMemberId,
            ErrorCode::IllegalGeneration,
            ErrorCode::RebalanceInProgress,
            ErrorCode::FencedMemberEpoch,
            ErrorCode::MemberIdRequired,
        ] {
            let e = Error::broker("group g", ApiKey::OffsetCommit, code, None);
            assert!(e.is_rebalance() && !e.is_retriable(), "{e}");
        }
        let e = Error::broker("group g", ApiKey::OffsetCommit, ErrorCode::CoordinatorLoadInProgress, None);
        assert!(!e.is_rebalance() && e.is_retriable(), "{e}");
        // A partition index the topic does not have stays wrong; a topic not yet known
        // everywhere may appear.
        let e: Error =
            klife_connection::Error::UnknownPartition { topic: "t".into(), partition: 99, partitions: 4 }.into();
        assert!(e.is_unknown_topic_or_partition() && !e.is_retriable(), "{e}");
        let e: Error = klife_connection::Error::UnknownTopic { topic: "t".into() }.into();
        assert!(e.is_unknown_topic_or_partition() && e.is_retriable(), "{e}");
    }

    #[test]
    fn retries_run_out_keep_the_last_code() {
        let last = klife_connection::Error::Broker {
            broker: "b:9092".into(),
            api: ApiKey::FindCoordinator,
            code: ErrorCode::CoordinatorNotAvailable,
            message: None,
        };
        let not_found = klife_connection::Error::CoordinatorNotFound {
            kind: klife_connection::CoordinatorType::Transaction,
            key: "app".into(),
            source: Some(Box::new(last)),
        };
        let e: Error = klife_connection::Error::RetriesExhausted {
            api: ApiKey::EndTxn,
            attempts: 7,
            elapsed: Duration::from_secs(30),
            source: Box::new(not_found),
        }
        .into();
        assert!(e.is_timeout() && e.is_retriable(), "{e}");
        assert_eq!(e.error_code(), Some(ErrorCode::CoordinatorNotAvailable));
        assert_eq!(e.retry_action(), Some(RetryAction::FindCoordinator));
        let text = e.to_string();
        assert!(text.contains("after 7 attempts") && text.contains("\"app\""), "{text}");
        // Through the producer too.
        let e: Error = ProduceError::Connection(klife_connection::Error::UnknownTopic { topic: "t".into() }).into();
        assert!(e.is_unknown_topic_or_partition() && e.is_retriable() && !e.is_timeout(), "{e}");
    }

    #[test]
    fn a_fenced_producer_is_fenced_and_not_retriable() {
        let e: Error = ProduceError::Fenced {
            transactional_id: "app".into(),
            producer_id: 7,
            epoch: 3,
            code: ErrorCode::ProducerFenced,
        }
        .into();
        assert!(e.is_fenced() && !e.is_retriable(), "{e}");
        assert_eq!(e.error_code(), Some(ErrorCode::ProducerFenced));
        assert!(e.to_string().contains("producer id 7, epoch 3"), "{e}");
        // A stale epoch reported by a broker is fencing too.
        let e = Error::broker("t-0", ApiKey::Produce, ErrorCode::InvalidProducerEpoch, None);
        assert!(e.is_fenced());
        assert!(!Error::from(ProduceError::Closed).is_fenced());
    }

    #[test]
    fn transaction_errors_are_told_apart_and_not_retriable() {
        let first =
            ProduceError::Broker { topic: "t".into(), partition: 0, code: ErrorCode::InvalidRecord, message: None };
        let e: Error = ProduceError::TransactionAborted { source: Box::new(first) }.into();
        assert!(e.is_transaction_aborted() && !e.is_retriable() && !e.is_fenced(), "{e}");
        // The chain leads to the record's own failure.
        let produce = std::error::Error::source(&e).expect("the producer's error");
        let cause = produce.source().and_then(|c| c.downcast_ref::<ProduceError>());
        assert!(matches!(cause, Some(ProduceError::Broker { code: ErrorCode::InvalidRecord, .. })), "{e}");

        let e: Error = ProduceError::TransactionState {
            operation: klife_producer::TransactionOperation::Commit,
            state: klife_producer::TransactionState::Idle,
        }
        .into();
        assert!(e.is_invalid_transaction_state() && !e.is_retriable() && !e.is_transaction_aborted(), "{e}");

        let e: Error = ProduceError::OutcomeUnknown { topic: "t".into(), partition: 0 }.into();
        assert!(e.is_outcome_unknown() && !e.is_retriable(), "{e}");
        let e: Error = ProduceError::DeliveryTimeout {
            topic: "t".into(),
            partition: 0,
            timeout: Duration::from_secs(1),
            last_error: None,
        }
        .into();
        assert!(e.is_delivery_timeout() && e.is_retriable(), "{e}");
    }

    #[test]
    fn an_invalid_setting_names_its_field_wherever_it_comes_from() {
        let bad = ConfigError::new("ProducerConfig", "batch_size", ConfigProblem::Zero);
        for e in [
            Error::config("the default producer", bad.clone()),
            Error::from(ProduceError::Config(bad.clone())),
            Error::from(klife_connection::Error::Config(bad.clone())),
        ] {
            assert!(e.is_invalid_argument() && !e.is_retriable(), "{e}");
            assert_eq!(e.config_error().map(|c| c.field), Some("batch_size"), "{e}");
            assert!(!e.is_compression_disabled());
        }
        assert_eq!(
            Error::config("the default producer", bad).to_string(),
            "the default producer: invalid setting ProducerConfig.batch_size: must be above zero"
        );
    }

    #[test]
    fn a_codec_left_out_of_the_build_is_compression_disabled_not_corrupt() {
        let codec = klife_protocol::Compression::Zstd;
        let e = Error::config(
            "the default producer",
            ConfigError::new("ProducerConfig", "compression", ConfigProblem::CodecDisabled { codec }),
        );
        assert!(e.is_compression_disabled() && e.is_invalid_argument(), "{e}");
        let fetched = |source| {
            Error::from(klife_fetcher::FetchError::Corrupt { topic: "t".into(), partition: 0, offset: 5, source })
        };
        let e = fetched(DecodeError::CompressionDisabled(codec));
        assert!(e.is_compression_disabled() && !e.is_corrupt() && !e.is_retriable(), "{e}");
        let e = fetched(DecodeError::CrcMismatch { expected: 1, actual: 2 });
        assert!(e.is_corrupt() && !e.is_compression_disabled(), "{e}");
    }
}
