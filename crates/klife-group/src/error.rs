//! The typed errors of group membership: what stops a member for good, and what is
//! wrong with a member's configuration.

use klife_protocol::ErrorCode;

/// Why a group member stopped for good.
///
/// Every variant is final for the member that reports it: it sends no more
/// heartbeats and has given up its partitions (as lost: nothing was committed for
/// them). Each variant says what the user should change before starting a member
/// again. The broker's own explanation, when it sent one, is kept in `message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GroupError {
    /// GROUP_AUTHORIZATION_FAILED: the principal may not use the group.
    ///
    /// Grant the client's principal `READ` on the group resource (and `DESCRIBE` on
    /// the topics), or use a group it is allowed to join.
    #[error("group {group}: not authorized to join (GROUP_AUTHORIZATION_FAILED){}", suffix(message))]
    GroupAuthorizationFailed {
        /// The group.
        group: String,
        /// The broker's message.
        message: Option<String>,
    },

    /// UNSUPPORTED_VERSION on a member that had joined before, or with the classic
    /// fallback turned off: the coordinator does not run the consumer group protocol
    /// (KIP-848) with ConsumerGroupHeartbeat v1.
    ///
    /// Use a Kafka 4.0+ cluster with the consumer group protocol enabled, or choose the
    /// classic protocol for this group. (On a member's first join, a member that may
    /// fall back reports [`Outcome::FallBackToClassic`](crate::membership::consumer::Outcome::FallBackToClassic)
    /// instead.)
    #[error(
        "group {group}: the coordinator does not support the consumer group protocol (UNSUPPORTED_VERSION){}",
        suffix(message)
    )]
    UnsupportedVersion {
        /// The group.
        group: String,
        /// The broker's message.
        message: Option<String>,
    },

    /// INVALID_REQUEST: the coordinator refused a heartbeat as malformed. This is a
    /// bug in klife (or a broker that reads the protocol otherwise); the broker's
    /// message says which field it refused.
    ///
    /// Report it with the message; meanwhile the classic protocol avoids the path.
    #[error("group {group}: the coordinator refused a heartbeat as invalid (INVALID_REQUEST){}", suffix(message))]
    InvalidRequest {
        /// The group.
        group: String,
        /// The broker's message.
        message: Option<String>,
    },

    /// UNSUPPORTED_ASSIGNOR: the server assignor asked for is not one the
    /// coordinator has.
    ///
    /// Use one the broker offers (Kafka ships `uniform` and `range`; see the broker
    /// setting `group.consumer.assignors`), or none to take the broker's default.
    #[error("group {group}: the coordinator has no assignor {assignor:?} (UNSUPPORTED_ASSIGNOR){}", suffix(message))]
    UnsupportedAssignor {
        /// The group.
        group: String,
        /// The assignor asked for.
        assignor: String,
        /// The broker's message.
        message: Option<String>,
    },

    /// GROUP_MAX_SIZE_REACHED: the group has as many members as the broker allows.
    ///
    /// Stop other members, raise `group.consumer.max.size` on the brokers, or use
    /// another group.
    #[error("group {group}: the group is full (GROUP_MAX_SIZE_REACHED){}", suffix(message))]
    GroupMaxSizeReached {
        /// The group.
        group: String,
        /// The broker's message.
        message: Option<String>,
    },

    /// INVALID_REGULAR_EXPRESSION: the broker could not compile the subscription's
    /// regular expression.
    ///
    /// The broker reads it as RE2/J and matches whole topic names (`orders` does not
    /// match `orders-1`; `orders.*` does). Fix the expression.
    #[error(
        "group {group}: the broker refused the subscription regex {regex:?} (INVALID_REGULAR_EXPRESSION){}",
        suffix(message)
    )]
    InvalidRegularExpression {
        /// The group.
        group: String,
        /// The expression sent.
        regex: Option<String>,
        /// The broker's message.
        message: Option<String>,
    },

    /// UNRELEASED_INSTANCE_ID, still after the retries: another member with the same
    /// static instance id is in the group and has not left.
    ///
    /// Make sure only one process uses the instance id. A member that died without
    /// leaving is released when its session times out on the broker
    /// (`group.consumer.session.timeout.ms`, 45 s by default); start again after that.
    #[error(
        "group {group}: instance id {instance_id:?} is still held by another member after {attempts} attempts (UNRELEASED_INSTANCE_ID){}",
        suffix(message)
    )]
    UnreleasedInstanceId {
        /// The group.
        group: String,
        /// The static instance id.
        instance_id: String,
        /// Joins refused with the code.
        attempts: u32,
        /// The broker's message.
        message: Option<String>,
    },

    /// FENCED_INSTANCE_ID: another member joined with this member's static instance
    /// id and replaced it.
    ///
    /// Give each process its own instance id.
    #[error(
        "group {group}: instance id {instance_id:?} was taken over by another member (FENCED_INSTANCE_ID){}",
        suffix(message)
    )]
    FencedInstanceId {
        /// The group.
        group: String,
        /// The static instance id.
        instance_id: String,
        /// The broker's message.
        message: Option<String>,
    },

    /// GROUP_ID_NOT_FOUND: the coordinator has no such group while the member was in
    /// it (it was deleted, or converted to another type).
    ///
    /// Check that no administrator deleted the group or made it a share or streams
    /// group; start the member again to create it anew.
    #[error("group {group}: the coordinator does not know the group (GROUP_ID_NOT_FOUND){}", suffix(message))]
    GroupIdNotFound {
        /// The group.
        group: String,
        /// The broker's message.
        message: Option<String>,
    },

    /// Any other error code the coordinator answered a heartbeat with, that no retry
    /// or rejoin cures (its [`RetryAction`](klife_protocol::RetryAction) is `Fatal`).
    ///
    /// The code's documentation ([`ErrorCode`]) says what it means.
    #[error("group {group}: the coordinator answered {} ({}){}", code.name(), code.code(), suffix(message))]
    Broker {
        /// The group.
        group: String,
        /// The code.
        code: ErrorCode,
        /// The broker's message.
        message: Option<String>,
    },
}

impl GroupError {
    /// The broker error code behind the error.
    pub fn code(&self) -> ErrorCode {
        match self {
            GroupError::GroupAuthorizationFailed { .. } => ErrorCode::GroupAuthorizationFailed,
            GroupError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            GroupError::InvalidRequest { .. } => ErrorCode::InvalidRequest,
            GroupError::UnsupportedAssignor { .. } => ErrorCode::UnsupportedAssignor,
            GroupError::GroupMaxSizeReached { .. } => ErrorCode::GroupMaxSizeReached,
            GroupError::InvalidRegularExpression { .. } => ErrorCode::InvalidRegularExpression,
            GroupError::UnreleasedInstanceId { .. } => ErrorCode::UnreleasedInstanceId,
            GroupError::FencedInstanceId { .. } => ErrorCode::FencedInstanceId,
            GroupError::GroupIdNotFound { .. } => ErrorCode::GroupIdNotFound,
            GroupError::Broker { code, .. } => *code,
        }
    }
}

/// `": message"`, or nothing.
fn suffix(message: &Option<String>) -> String {
    match message {
        Some(m) if !m.is_empty() => format!(": {m}"),
        _ => String::new(),
    }
}

/// What is wrong with a member's configuration; found before anything is sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The group id is empty: the broker refuses it.
    #[error("the group id is empty")]
    EmptyGroupId,
    /// The member id is empty: ConsumerGroupHeartbeat v1 needs one generated by the
    /// client (see [`member_id_from_random`](crate::membership::consumer::member_id_from_random)).
    #[error("the member id is empty")]
    EmptyMemberId,
    /// The static instance id is `""`: the broker refuses it (leave it unset instead).
    #[error("the instance id is empty (leave it unset for a dynamic member)")]
    EmptyInstanceId,
    /// The rack id is `""`: the broker refuses it (leave it unset instead).
    #[error("the rack id is empty (leave it unset)")]
    EmptyRackId,
    /// The rebalance timeout is zero or does not fit the protocol's milliseconds
    /// (1 ms to `i32::MAX` ms).
    #[error("the rebalance timeout must be between 1 ms and {} ms", i32::MAX)]
    RebalanceTimeoutOutOfRange,
    /// The server assignor's name is `""`.
    #[error("the server assignor's name is empty")]
    EmptyServerAssignor,
    /// The session timeout is zero or does not fit the protocol's milliseconds
    /// (classic protocol).
    #[error("the session timeout must be between 1 ms and {} ms", i32::MAX)]
    SessionTimeoutOutOfRange,
    /// The heartbeat interval is zero or not below the session timeout (classic
    /// protocol): the coordinator would remove the member between two heartbeats.
    #[error("the heartbeat interval must be above zero and below the session timeout")]
    HeartbeatIntervalOutOfRange,
    /// No assignor is configured (classic protocol): a JoinGroup needs at least one.
    #[error("no assignor is configured")]
    NoAssignor,
    /// A consumer group lists no topic and has no topic regex.
    #[error("the group lists no topic and has no topic regex")]
    NoTopics,
    /// The topic regex is `""`.
    #[error("the topic regex is empty (leave it unset)")]
    EmptyTopicRegex,
    /// A topic regex with the classic protocol forced: only the consumer group protocol
    /// (KIP-848) has the broker resolve a regex.
    #[error("a topic regex needs the consumer group protocol (KIP-848): use GroupProtocol::Consumer or Auto")]
    RegexNeedsConsumerProtocol,
    /// A topic config has no name.
    #[error("a topic config has no name")]
    EmptyTopicName,
    /// A topic is listed twice.
    #[error("topic {0} is listed twice")]
    DuplicateTopic(String),
    /// The group's `default_topic_config` names a topic: it applies to every topic.
    #[error("the default topic config names topic {0}: leave its name empty")]
    NamedDefaultTopicConfig(String),
    /// `committers_count` is 0.
    #[error("committers_count is 0: a group needs at least one committer")]
    NoCommitters,
    /// `commits_in_flight` is 0.
    #[error("commits_in_flight is 0: a committer needs at least one commit in flight")]
    NoCommitsInFlight,
    /// `handler_max_batch_size` is 0.
    #[error("topic {0}: handler_max_batch_size is 0 (a batch has at least one record)")]
    ZeroBatchSize(String),
    /// `max_queue_size` is 0.
    #[error("topic {0}: max_queue_size is 0 (the queue holds at least one batch)")]
    ZeroQueueSize(String),
    /// `fetch_max_bytes` is 0, or not below the fetcher's `max_bytes_per_request`.
    #[error("topic {topic}: fetch_max_bytes {bytes} is not between 1 and the fetcher's max_bytes_per_request ({max})")]
    FetchMaxBytesOutOfRange {
        /// The topic.
        topic: String,
        /// The value set.
        bytes: usize,
        /// The fetcher's `max_bytes_per_request`, which it must stay below.
        max: usize,
    },
    /// A topic in [`Mode::Manual`](crate::runtime::Mode::Manual) sets a setting only a
    /// handler uses (`handler_cooldown`, `handler_max_unacked_commits`): the driver
    /// paces its pulls and commits itself.
    #[error(
        "topic {topic} is in manual mode: {setting} applies to a handler only (the driver paces pulls and commits)"
    )]
    HandlerSettingInManualMode {
        /// The topic.
        topic: String,
        /// The setting.
        setting: &'static str,
    },
    /// Topics in [`Mode::Handler`](crate::runtime::Mode::Handler) and no handler: a
    /// group started without a handler must have every topic in manual mode.
    #[error("topic {0} is in handler mode and the group has no handler: give it a handler or set Mode::Manual")]
    NoHandler(String),
    /// A shared fetch strategy names a fetcher the client does not have.
    #[error("no fetcher named {0}: name one the client was built with, or use an exclusive fetcher")]
    UnknownFetcher(String),
    /// An exclusive fetcher's settings are invalid.
    #[error("the exclusive fetcher's settings: {0}")]
    Fetcher(#[from] klife_connection::ConfigError),
}
