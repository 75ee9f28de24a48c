//! Kafka broker error codes: every code the protocol defines, with Kafka's retriable flag and a retry action.
//!
//! Every response carries `i16` error codes. [`ErrorCode`] names each one, as listed by
//! Apache Kafka's `Errors` enum (codes `-1` through `135`, as of Kafka 4.4), and keeps
//! codes it does not know in [`ErrorCode::Unknown`], so decoding never fails because a
//! newer broker sent a new code.
//!
//! Two classifications come with each code:
//!
//! - [`ErrorCode::is_retriable`] is Kafka's own: `true` exactly when the Java client's
//!   exception for the code is a `RetriableException`. It says whether trying again
//!   *may* succeed, not what to do first.
//! - [`ErrorCode::retry_action`] says what a client does next, as a [`RetryAction`]:
//!   refresh metadata, find the coordinator again, rejoin the group, back off and
//!   resend, or give up. Where it departs from the Java flag (for example group
//!   membership errors, which Java does not call retriable but which a consumer
//!   recovers from by rejoining), the variant's documentation says why.
//!
//! ```
//! use klife_protocol::{ErrorCode, RetryAction};
//!
//! let err = ErrorCode::from_code(6);
//! assert_eq!(err, ErrorCode::NotLeaderOrFollower);
//! assert_eq!(err.name(), "NOT_LEADER_OR_FOLLOWER");
//! assert!(err.is_retriable());
//! assert_eq!(err.retry_action(), RetryAction::RefreshMetadata);
//!
//! assert_eq!(ErrorCode::check(0), Ok(()));
//! assert_eq!(ErrorCode::check(29), Err(ErrorCode::TopicAuthorizationFailed));
//!
//! // A code from a newer broker survives decoding and encoding unchanged.
//! let new = ErrorCode::from_code(9000);
//! assert_eq!(new, ErrorCode::Unknown(9000));
//! assert_eq!(i16::from(new), 9000);
//! ```

use std::fmt;

/// What a client should do after receiving an error code.
///
/// This is a policy on top of Kafka's retriable flag: it names the *first* step of a
/// recovery. Every retry still needs a bound (a delivery timeout or a retry limit):
/// some conditions, such as a topic that does not exist, look transient but never end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RetryAction {
    /// No error: nothing to do.
    None,
    /// The client's view of the cluster is stale (a partition's leader moved, a topic
    /// is not yet or no longer known, a broker or its disk went away): refresh metadata,
    /// then send the request again, to the broker the fresh metadata names.
    RefreshMetadata,
    /// The broker is not (or not yet) the coordinator for the group or transactional id:
    /// look the coordinator up again with `FindCoordinator`, then resend to it.
    FindCoordinator,
    /// The member's place in its group is no longer valid (unknown member, old
    /// generation or epoch, rebalance in progress): rejoin the group, then redo the
    /// operation with the new membership. Resending the same request would fail again.
    Rejoin,
    /// A transient condition on the broker (a timeout, a coordinator still loading, too
    /// few in-sync replicas, a quota, a transaction still completing): wait for the
    /// backoff, then send the same request again. Nothing about where to send it changed.
    Backoff,
    /// Retrying cannot help: the request is not authorized, invalid, unsupported, fenced,
    /// or already answered. Report the error to the caller. Some of these have a
    /// recovery of their own (aborting a transaction, resetting a consumer's position),
    /// which the code's documentation names; none of them is "resend the request".
    Fatal,
}

impl RetryAction {
    /// Whether the action leads to sending the request again (every action other than
    /// [`RetryAction::None`] and [`RetryAction::Fatal`]).
    pub const fn is_retry(self) -> bool {
        matches!(
            self,
            RetryAction::RefreshMetadata | RetryAction::FindCoordinator | RetryAction::Rejoin | RetryAction::Backoff
        )
    }
}

/// Generates [`ErrorCode`] and its lookups from one table.
///
/// Each row is `code => Variant, "KAFKA_NAME", java_retriable, Action, "description";`,
/// optionally preceded by `///` notes that are added to the variant's documentation.
macro_rules! error_codes {
    ($(
        $(#[$note:meta])*
        $code:literal => $variant:ident, $name:literal, $retriable:literal, $action:ident, $desc:literal;
    )*) => {
        /// A Kafka error code, as carried in the `error_code` fields of responses.
        ///
        /// One variant per code Kafka defines, plus [`ErrorCode::Unknown`] for any other
        /// value, so [`ErrorCode::from_code`] accepts every `i16`. See the
        /// [module documentation](self) for the two classifications each code carries.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $(
                #[doc = concat!("`", $name, "` (", stringify!($code), "): ", $desc)]
                #[doc = ""]
                $(#[$note])*
                #[doc = ""]
                #[doc = concat!(
                    "Retriable in Kafka: `", $retriable, "`. Action: [`RetryAction::",
                    stringify!($action), "`]."
                )]
                $variant,
            )*
            /// A code this crate does not know, kept as received.
            ///
            /// [`ErrorCode::from_code`] only produces it for codes that have no variant of
            /// their own. It is not retriable and its action is [`RetryAction::Fatal`],
            /// as in Kafka's Java client, which treats unknown codes as an unexpected
            /// server error.
            Unknown(i16),
        }

        impl ErrorCode {
            /// Every known code, in ascending code order (including
            /// [`ErrorCode::None`]; [`ErrorCode::Unknown`] is not listed).
            pub const ALL: &[ErrorCode] = &[$(ErrorCode::$variant),*];

            /// The error for a wire code. Total: codes without a variant become
            /// [`ErrorCode::Unknown`].
            pub const fn from_code(code: i16) -> ErrorCode {
                match code {
                    $($code => ErrorCode::$variant,)*
                    other => ErrorCode::Unknown(other),
                }
            }

            /// The wire code.
            pub const fn code(self) -> i16 {
                match self {
                    $(ErrorCode::$variant => $code,)*
                    ErrorCode::Unknown(code) => code,
                }
            }

            /// Kafka's name for the code, in upper snake case (for example
            /// `"NOT_LEADER_OR_FOLLOWER"`); `"UNKNOWN"` for [`ErrorCode::Unknown`].
            pub const fn name(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $name,)*
                    ErrorCode::Unknown(_) => "UNKNOWN",
                }
            }

            /// A one-sentence description of what the code means.
            pub const fn description(self) -> &'static str {
                match self {
                    $(ErrorCode::$variant => $desc,)*
                    ErrorCode::Unknown(_) => {
                        "An error code this crate does not know; a newer broker may have added it."
                    }
                }
            }

            /// Kafka's classification: whether the Java client's exception for this code
            /// is a `RetriableException`, that is, whether the same operation may succeed
            /// if tried again. `false` for [`ErrorCode::None`] and
            /// [`ErrorCode::Unknown`].
            pub const fn is_retriable(self) -> bool {
                match self {
                    $(ErrorCode::$variant => $retriable,)*
                    ErrorCode::Unknown(_) => false,
                }
            }

            /// What a client should do next; see [`RetryAction`].
            pub const fn retry_action(self) -> RetryAction {
                match self {
                    $(ErrorCode::$variant => RetryAction::$action,)*
                    ErrorCode::Unknown(_) => RetryAction::Fatal,
                }
            }
        }
    };
}

error_codes! {
    -1 => UnknownServerError, "UNKNOWN_SERVER_ERROR", false, Fatal,
        "The broker hit an unexpected error of its own while handling the request.";
    0 => None, "NONE", false, None,
        "Success: the operation completed without error.";
    /// A consumer recovers by resetting its position (its offset reset policy), not by
    /// sending the same fetch again.
    1 => OffsetOutOfRange, "OFFSET_OUT_OF_RANGE", false, Fatal,
        "The requested offset lies outside the range the partition's log currently holds.";
    /// Retriable because corruption in transit is transient. If the data itself is bad,
    /// every retry fails the same way, so retries must be bounded.
    2 => CorruptMessage, "CORRUPT_MESSAGE", true, Backoff,
        "A record failed its checksum, is too large, has a null key on a compacted topic, or is otherwise malformed.";
    /// Kafka calls this retriable because the metadata may only be stale (a topic just
    /// created, a partition just moved), but it is also what a topic that does not exist
    /// returns. Refresh and retry, but only until a metadata or delivery timeout.
    3 => UnknownTopicOrPartition, "UNKNOWN_TOPIC_OR_PARTITION", true, RefreshMetadata,
        "This broker has no such topic-partition: its metadata is stale, or the topic does not exist.";
    4 => InvalidFetchSize, "INVALID_FETCH_SIZE", false, Fatal,
        "The fetch size in the request is not valid.";
    5 => LeaderNotAvailable, "LEADER_NOT_AVAILABLE", true, RefreshMetadata,
        "The partition has no leader at the moment, usually because an election is under way.";
    6 => NotLeaderOrFollower, "NOT_LEADER_OR_FOLLOWER", true, RefreshMetadata,
        "The broker is not the partition's leader (or, for requests any replica may serve, not one of its replicas).";
    /// For a produce request the write may still have happened: without idempotence a
    /// retry can duplicate records.
    7 => RequestTimedOut, "REQUEST_TIMED_OUT", true, Backoff,
        "The broker could not complete the request within its timeout.";
    8 => BrokerNotAvailable, "BROKER_NOT_AVAILABLE", false, Fatal,
        "The broker the request refers to is not available.";
    9 => ReplicaNotAvailable, "REPLICA_NOT_AVAILABLE", true, RefreshMetadata,
        "A replica of the partition is not available (requests only a leader or follower may serve report NOT_LEADER_OR_FOLLOWER instead).";
    /// A producer may split the batch and send the parts; the same request fails again.
    10 => MessageTooLarge, "MESSAGE_TOO_LARGE", false, Fatal,
        "A record batch is larger than the broker or topic accepts.";
    11 => StaleControllerEpoch, "STALE_CONTROLLER_EPOCH", false, Fatal,
        "The request came from a controller that has since been replaced.";
    12 => OffsetMetadataTooLarge, "OFFSET_METADATA_TOO_LARGE", false, Fatal,
        "The metadata string attached to a committed offset is too long.";
    /// The Java client treats this as stale metadata (`InvalidMetadataException`): the
    /// broker behind the connection may be gone, so look the target up again before
    /// resending.
    13 => NetworkException, "NETWORK_EXCEPTION", true, RefreshMetadata,
        "The connection closed before the broker produced a response.";
    14 => CoordinatorLoadInProgress, "COORDINATOR_LOAD_IN_PROGRESS", true, Backoff,
        "The coordinator is still loading its state and cannot serve requests yet.";
    15 => CoordinatorNotAvailable, "COORDINATOR_NOT_AVAILABLE", true, FindCoordinator,
        "No coordinator is available (for example its internal topic is missing or moving).";
    16 => NotCoordinator, "NOT_COORDINATOR", true, FindCoordinator,
        "The broker is not the coordinator for this group or transactional id.";
    17 => InvalidTopicException, "INVALID_TOPIC_EXCEPTION", false, Fatal,
        "The topic name is invalid, or the operation is not allowed on this topic (for example an internal one).";
    18 => RecordListTooLarge, "RECORD_LIST_TOO_LARGE", false, Fatal,
        "A record batch is larger than the broker's log segment size.";
    /// Nothing was written and the leader is the right one: only the in-sync replica set
    /// is short. Resend the same request after a backoff; fresh metadata would not change
    /// anything.
    19 => NotEnoughReplicas, "NOT_ENOUGH_REPLICAS", true, Backoff,
        "The write was refused because fewer replicas than min.insync.replicas are in sync.";
    /// The leader has already appended the records: without idempotence a retry
    /// duplicates them.
    20 => NotEnoughReplicasAfterAppend, "NOT_ENOUGH_REPLICAS_AFTER_APPEND", true, Backoff,
        "The leader wrote the records, but fewer in-sync replicas than required acknowledged them.";
    21 => InvalidRequiredAcks, "INVALID_REQUIRED_ACKS", false, Fatal,
        "The produce request's acks value is not one the broker accepts.";
    /// Not retriable in Kafka's sense (the same request fails again), but the member
    /// recovers by rejoining the group.
    22 => IllegalGeneration, "ILLEGAL_GENERATION", false, Rejoin,
        "The group generation in the request is not the current one.";
    23 => InconsistentGroupProtocol, "INCONSISTENT_GROUP_PROTOCOL", false, Fatal,
        "The member's protocol type or protocols do not match the group's, or the first member offered none.";
    24 => InvalidGroupId, "INVALID_GROUP_ID", false, Fatal,
        "The group id is empty or otherwise invalid.";
    /// Not retriable in Kafka's sense (the same request fails again), but the member
    /// recovers by rejoining the group with a new member id.
    25 => UnknownMemberId, "UNKNOWN_MEMBER_ID", false, Rejoin,
        "The coordinator has no member with this id.";
    26 => InvalidSessionTimeout, "INVALID_SESSION_TIMEOUT", false, Fatal,
        "The session timeout is outside the range the broker allows (group.min/max.session.timeout.ms).";
    /// Not retriable in Kafka's sense (the same request fails again), but the member
    /// recovers by rejoining the group.
    27 => RebalanceInProgress, "REBALANCE_IN_PROGRESS", false, Rejoin,
        "The group is rebalancing, so the member has to join again.";
    28 => InvalidCommitOffsetSize, "INVALID_COMMIT_OFFSET_SIZE", false, Fatal,
        "The size of the offset commit is not valid.";
    29 => TopicAuthorizationFailed, "TOPIC_AUTHORIZATION_FAILED", false, Fatal,
        "The principal may not perform this operation on the topic.";
    30 => GroupAuthorizationFailed, "GROUP_AUTHORIZATION_FAILED", false, Fatal,
        "The principal may not perform this operation on the group.";
    31 => ClusterAuthorizationFailed, "CLUSTER_AUTHORIZATION_FAILED", false, Fatal,
        "The principal may not perform this cluster-level operation.";
    32 => InvalidTimestamp, "INVALID_TIMESTAMP", false, Fatal,
        "A record's timestamp is outside the range the topic accepts.";
    33 => UnsupportedSaslMechanism, "UNSUPPORTED_SASL_MECHANISM", false, Fatal,
        "The broker does not offer the SASL mechanism the client asked for.";
    34 => IllegalSaslState, "ILLEGAL_SASL_STATE", false, Fatal,
        "The request is not allowed at this point of the SASL exchange.";
    35 => UnsupportedVersion, "UNSUPPORTED_VERSION", false, Fatal,
        "The broker does not support this version of the API.";
    36 => TopicAlreadyExists, "TOPIC_ALREADY_EXISTS", false, Fatal,
        "The topic to create exists already.";
    37 => InvalidPartitions, "INVALID_PARTITIONS", false, Fatal,
        "The partition count is not valid (below 1, or lower than the current count).";
    38 => InvalidReplicationFactor, "INVALID_REPLICATION_FACTOR", false, Fatal,
        "The replication factor is less than 1 or more than the brokers available.";
    39 => InvalidReplicaAssignment, "INVALID_REPLICA_ASSIGNMENT", false, Fatal,
        "The explicit replica assignment is not valid.";
    40 => InvalidConfig, "INVALID_CONFIG", false, Fatal,
        "A configuration entry is unknown or has an invalid value.";
    /// Refreshing metadata tells the client which broker is the active controller now.
    41 => NotController, "NOT_CONTROLLER", true, RefreshMetadata,
        "The broker is not the cluster's active controller.";
    42 => InvalidRequest, "INVALID_REQUEST", false, Fatal,
        "The broker found the request malformed or not valid for it; the broker log has the details.";
    43 => UnsupportedForMessageFormat, "UNSUPPORTED_FOR_MESSAGE_FORMAT", false, Fatal,
        "The topic's message format version is too old for this request.";
    44 => PolicyViolation, "POLICY_VIOLATION", false, Fatal,
        "The request breaks a policy configured on the broker.";
    /// An idempotent producer may recover by resetting its sequence state, but the
    /// request is not resent as it is.
    45 => OutOfOrderSequenceNumber, "OUT_OF_ORDER_SEQUENCE_NUMBER", false, Fatal,
        "The broker received a producer sequence number out of order.";
    /// The data is already in the log: do not resend it. Producers usually count this
    /// as a success.
    46 => DuplicateSequenceNumber, "DUPLICATE_SEQUENCE_NUMBER", false, Fatal,
        "The broker already has a batch with this producer sequence number.";
    /// With transactions (version 2 in particular) this is abortable: the producer can
    /// abort the transaction and start a new one. The request itself is not resent.
    47 => InvalidProducerEpoch, "INVALID_PRODUCER_EPOCH", false, Fatal,
        "The producer's epoch is older than the one the broker knows.";
    48 => InvalidTxnState, "INVALID_TXN_STATE", false, Fatal,
        "The transactional operation is not valid in the transaction's current state.";
    49 => InvalidProducerIdMapping, "INVALID_PRODUCER_ID_MAPPING", false, Fatal,
        "The producer id is not the one currently assigned to this transactional id.";
    50 => InvalidTransactionTimeout, "INVALID_TRANSACTION_TIMEOUT", false, Fatal,
        "The transaction timeout exceeds the broker's maximum (transaction.max.timeout.ms).";
    51 => ConcurrentTransactions, "CONCURRENT_TRANSACTIONS", true, Backoff,
        "Another operation on the same transaction, such as the previous commit or abort, is still completing.";
    52 => TransactionCoordinatorFenced, "TRANSACTION_COORDINATOR_FENCED", false, Fatal,
        "The transaction coordinator writing markers has been replaced by a newer one.";
    53 => TransactionalIdAuthorizationFailed, "TRANSACTIONAL_ID_AUTHORIZATION_FAILED", false, Fatal,
        "The principal may not use this transactional id.";
    54 => SecurityDisabled, "SECURITY_DISABLED", false, Fatal,
        "The operation needs security features the broker has not enabled.";
    /// Fix or drop the operation that failed and send the rest again; the same request
    /// fails the same way.
    55 => OperationNotAttempted, "OPERATION_NOT_ATTEMPTED", false, Fatal,
        "The broker skipped this operation because another one in the same batched request failed.";
    /// The log directory goes offline and leadership moves to another replica, so the
    /// new leader has to be looked up.
    56 => KafkaStorageError, "KAFKA_STORAGE_ERROR", true, RefreshMetadata,
        "The broker hit a disk error accessing the partition's log.";
    57 => LogDirNotFound, "LOG_DIR_NOT_FOUND", false, Fatal,
        "The requested log directory is not configured on the broker.";
    58 => SaslAuthenticationFailed, "SASL_AUTHENTICATION_FAILED", false, Fatal,
        "The broker rejected the SASL credentials.";
    /// An idempotent producer may recover by resetting its producer state; the request
    /// is not resent as it is.
    59 => UnknownProducerId, "UNKNOWN_PRODUCER_ID", false, Fatal,
        "The broker has no state for this producer id, for example because retention removed all its records.";
    60 => ReassignmentInProgress, "REASSIGNMENT_IN_PROGRESS", false, Fatal,
        "The operation conflicts with a partition reassignment in progress.";
    61 => DelegationTokenAuthDisabled, "DELEGATION_TOKEN_AUTH_DISABLED", false, Fatal,
        "Delegation tokens are not enabled on the broker.";
    62 => DelegationTokenNotFound, "DELEGATION_TOKEN_NOT_FOUND", false, Fatal,
        "The broker has no such delegation token.";
    63 => DelegationTokenOwnerMismatch, "DELEGATION_TOKEN_OWNER_MISMATCH", false, Fatal,
        "The principal is neither the owner nor a renewer of the delegation token.";
    64 => DelegationTokenRequestNotAllowed, "DELEGATION_TOKEN_REQUEST_NOT_ALLOWED", false, Fatal,
        "Delegation token requests are refused on plaintext, one-way TLS and token-authenticated connections.";
    65 => DelegationTokenAuthorizationFailed, "DELEGATION_TOKEN_AUTHORIZATION_FAILED", false, Fatal,
        "The principal may not perform this delegation token operation.";
    66 => DelegationTokenExpired, "DELEGATION_TOKEN_EXPIRED", false, Fatal,
        "The delegation token is past its expiry time.";
    67 => InvalidPrincipalType, "INVALID_PRINCIPAL_TYPE", false, Fatal,
        "The principal type given is not one the broker supports.";
    68 => NonEmptyGroup, "NON_EMPTY_GROUP", false, Fatal,
        "The group still has members, so it cannot be deleted.";
    69 => GroupIdNotFound, "GROUP_ID_NOT_FOUND", false, Fatal,
        "No group with this id exists.";
    /// The retry has to open a new fetch session (a full fetch) instead of reusing the
    /// old session id.
    70 => FetchSessionIdNotFound, "FETCH_SESSION_ID_NOT_FOUND", true, Backoff,
        "The broker has no fetch session with this id, for example because it was evicted.";
    /// The retry has to open a new fetch session (a full fetch).
    71 => InvalidFetchSessionEpoch, "INVALID_FETCH_SESSION_EPOCH", true, Backoff,
        "The fetch session epoch does not match the broker's.";
    /// Usually transient, during a rolling change of the brokers' listeners.
    72 => ListenerNotFound, "LISTENER_NOT_FOUND", true, RefreshMetadata,
        "The partition leader has no listener matching the one the metadata request arrived on.";
    73 => TopicDeletionDisabled, "TOPIC_DELETION_DISABLED", false, Fatal,
        "Topic deletion is disabled on the cluster.";
    74 => FencedLeaderEpoch, "FENCED_LEADER_EPOCH", true, RefreshMetadata,
        "The leader epoch in the request is older than the broker's, so the client's metadata is stale.";
    /// Here the client's metadata is newer than the broker's, so refreshing it does not
    /// help: wait for the broker to learn the new epoch and resend.
    75 => UnknownLeaderEpoch, "UNKNOWN_LEADER_EPOCH", true, Backoff,
        "The leader epoch in the request is newer than the broker's, which has not caught up yet.";
    76 => UnsupportedCompressionType, "UNSUPPORTED_COMPRESSION_TYPE", false, Fatal,
        "The request's version cannot carry the partition's compression type (for example zstd to an old client).";
    77 => StaleBrokerEpoch, "STALE_BROKER_EPOCH", false, Fatal,
        "The request carries an outdated broker epoch.";
    78 => OffsetNotAvailable, "OFFSET_NOT_AVAILABLE", true, Backoff,
        "The new leader's high watermark has not caught up since the election, so it cannot serve offsets yet.";
    /// Part of the JoinGroup handshake: the response carries the member id to join with,
    /// so the member joins again at once. Not retriable in Kafka's sense.
    79 => MemberIdRequired, "MEMBER_ID_REQUIRED", false, Rejoin,
        "The member has to join again with the member id the coordinator has just assigned it.";
    /// Kafka files this under stale metadata, but it answers a leader election the client
    /// asked for: fresh metadata does not bring the replica back, time may.
    80 => PreferredLeaderNotAvailable, "PREFERRED_LEADER_NOT_AVAILABLE", true, Backoff,
        "The preferred replica cannot become the leader right now.";
    81 => GroupMaxSizeReached, "GROUP_MAX_SIZE_REACHED", false, Fatal,
        "The group already has the maximum number of members.";
    82 => FencedInstanceId, "FENCED_INSTANCE_ID", false, Fatal,
        "Another member with the same group.instance.id has replaced this static member.";
    /// Kafka files this under stale metadata, but it answers a leader election the client
    /// asked for: fresh metadata does not bring a replica back, time may.
    83 => EligibleLeadersNotAvailable, "ELIGIBLE_LEADERS_NOT_AVAILABLE", true, Backoff,
        "No eligible replica is available to become the partition's leader.";
    /// Kafka calls this retriable (it is filed under stale metadata), but there is nothing
    /// left to do: the partition already has the leader asked for, and no retry changes
    /// that. Treat it as done, not as a failure to retry.
    84 => ElectionNotNeeded, "ELECTION_NOT_NEEDED", true, Fatal,
        "The partition already has the desired leader, so no election was needed.";
    85 => NoReassignmentInProgress, "NO_REASSIGNMENT_IN_PROGRESS", false, Fatal,
        "There is no partition reassignment in progress to cancel.";
    86 => GroupSubscribedToTopic, "GROUP_SUBSCRIBED_TO_TOPIC", false, Fatal,
        "A topic's offsets cannot be deleted while the group is subscribed to it.";
    87 => InvalidRecord, "INVALID_RECORD", false, Fatal,
        "A record failed the broker's validation and was rejected.";
    88 => UnstableOffsetCommit, "UNSTABLE_OFFSET_COMMIT", true, Backoff,
        "A transactional offset commit for the partition is still pending, so its committed offset is not settled.";
    /// Wait at least the throttle time the response carries.
    89 => ThrottlingQuotaExceeded, "THROTTLING_QUOTA_EXCEEDED", true, Backoff,
        "The principal exceeded a throttling quota, for example on topic or partition creations.";
    90 => ProducerFenced, "PRODUCER_FENCED", false, Fatal,
        "A newer producer with the same transactional id has fenced this one.";
    91 => ResourceNotFound, "RESOURCE_NOT_FOUND", false, Fatal,
        "The request names a resource that does not exist.";
    92 => DuplicateResource, "DUPLICATE_RESOURCE", false, Fatal,
        "The request refers to the same resource more than once.";
    93 => UnacceptableCredential, "UNACCEPTABLE_CREDENTIAL", false, Fatal,
        "The credential does not meet the broker's criteria.";
    94 => InconsistentVoterSet, "INCONSISTENT_VOTER_SET", false, Fatal,
        "The sender or the receiver of a voter-only request is not one of the expected voters.";
    95 => InvalidUpdateVersion, "INVALID_UPDATE_VERSION", false, Fatal,
        "The feature version in the update is not valid.";
    96 => FeatureUpdateFailed, "FEATURE_UPDATE_FAILED", false, Fatal,
        "The finalized features could not be updated because of an unexpected server error.";
    97 => PrincipalDeserializationFailure, "PRINCIPAL_DESERIALIZATION_FAILURE", false, Fatal,
        "The principal of a forwarded request could not be deserialized, pointing at the cluster's security setup.";
    98 => SnapshotNotFound, "SNAPSHOT_NOT_FOUND", false, Fatal,
        "The requested metadata snapshot does not exist.";
    99 => PositionOutOfRange, "POSITION_OUT_OF_RANGE", false, Fatal,
        "The requested snapshot position is negative or beyond the end of the snapshot.";
    /// As with UNKNOWN_TOPIC_OR_PARTITION, the topic may simply have been deleted: refresh
    /// and retry only until a timeout.
    100 => UnknownTopicId, "UNKNOWN_TOPIC_ID", true, RefreshMetadata,
        "The broker does not host a topic with this id.";
    101 => DuplicateBrokerRegistration, "DUPLICATE_BROKER_REGISTRATION", false, Fatal,
        "Another broker is already registered with this broker id.";
    102 => BrokerIdNotRegistered, "BROKER_ID_NOT_REGISTERED", false, Fatal,
        "No broker is registered under this broker id.";
    /// The topic may have been deleted and created again under the same name: fresh
    /// metadata carries the new id.
    103 => InconsistentTopicId, "INCONSISTENT_TOPIC_ID", true, RefreshMetadata,
        "The topic id in the request does not match the one in the partition's log.";
    104 => InconsistentClusterId, "INCONSISTENT_CLUSTER_ID", false, Fatal,
        "The cluster id in the request does not match the broker's.";
    105 => TransactionalIdNotFound, "TRANSACTIONAL_ID_NOT_FOUND", false, Fatal,
        "No transaction state exists for this transactional id.";
    /// The retry has to open a new fetch session (a full fetch).
    106 => FetchSessionTopicIdError, "FETCH_SESSION_TOPIC_ID_ERROR", true, Backoff,
        "The fetch session used topic ids inconsistently (mixing requests with and without ids, or changing an id).";
    107 => IneligibleReplica, "INELIGIBLE_REPLICA", false, Fatal,
        "The proposed in-sync replica set contains a replica that is not eligible.";
    108 => NewLeaderElected, "NEW_LEADER_ELECTED", false, Fatal,
        "The partition state was updated, but the partition's leader changed in the meantime.";
    109 => OffsetMovedToTieredStorage, "OFFSET_MOVED_TO_TIERED_STORAGE", false, Fatal,
        "The requested offset is only available in tiered (remote) storage.";
    /// Not retriable in Kafka's sense, but the member recovers by giving up its
    /// partitions and joining again with member epoch 0.
    110 => FencedMemberEpoch, "FENCED_MEMBER_EPOCH", false, Rejoin,
        "The coordinator fenced the member's epoch; the member has to release all its partitions and join anew.";
    /// Although it concerns group membership, rejoining does not help while the other
    /// member holds the instance id: two live members sharing one group.instance.id is
    /// a configuration error, and the Java consumer treats this code as fatal.
    111 => UnreleasedInstanceId, "UNRELEASED_INSTANCE_ID", false, Fatal,
        "The static member's instance id is still held by another member, which has to leave first.";
    112 => UnsupportedAssignor, "UNSUPPORTED_ASSIGNOR", false, Fatal,
        "The group does not support the requested server-side assignor or its versions.";
    /// The member keeps its membership: the next heartbeat response carries the current
    /// epoch, after which the request (for example an offset commit) can be sent again.
    /// Not retriable in Kafka's sense, as the same request fails again.
    113 => StaleMemberEpoch, "STALE_MEMBER_EPOCH", false, Backoff,
        "The member epoch in the request is stale; the member learns the current one from its next heartbeat.";
    114 => MismatchedEndpointType, "MISMATCHED_ENDPOINT_TYPE", false, Fatal,
        "The request reached the wrong type of endpoint (a broker instead of a controller, or the reverse).";
    115 => UnsupportedEndpointType, "UNSUPPORTED_ENDPOINT_TYPE", false, Fatal,
        "Requests to this type of endpoint are not supported yet.";
    116 => UnknownControllerId, "UNKNOWN_CONTROLLER_ID", false, Fatal,
        "No controller with this id is known.";
    /// The client gets a new subscription with `GetTelemetrySubscriptions` before it
    /// pushes again.
    117 => UnknownSubscriptionId, "UNKNOWN_SUBSCRIPTION_ID", false, Fatal,
        "The telemetry subscription id in the push is unknown or outdated.";
    118 => TelemetryTooLarge, "TELEMETRY_TOO_LARGE", false, Fatal,
        "The pushed telemetry is larger than the broker accepts.";
    119 => InvalidRegistration, "INVALID_REGISTRATION", false, Fatal,
        "The controller rejected the broker's registration as invalid.";
    /// The producer recovers by aborting the transaction; the request is not resent.
    120 => TransactionAbortable, "TRANSACTION_ABORTABLE", false, Fatal,
        "The transaction hit an error; aborting it lets the transactional id be used again.";
    121 => InvalidRecordState, "INVALID_RECORD_STATE", false, Fatal,
        "The record is in a state that does not allow this acknowledgement.";
    /// The retry has to open a new share session.
    122 => ShareSessionNotFound, "SHARE_SESSION_NOT_FOUND", true, Backoff,
        "The broker has no share session for this member.";
    /// The retry has to open a new share session.
    123 => InvalidShareSessionEpoch, "INVALID_SHARE_SESSION_EPOCH", true, Backoff,
        "The share session epoch does not match the broker's.";
    124 => FencedStateEpoch, "FENCED_STATE_EPOCH", false, Fatal,
        "The share coordinator rejected a write carrying an outdated share-group state epoch.";
    125 => InvalidVoterKey, "INVALID_VOTER_KEY", false, Fatal,
        "The voter key (replica id and directory id) does not match the replica that received it.";
    126 => DuplicateVoter, "DUPLICATE_VOTER", false, Fatal,
        "The voter is already in the voter set.";
    127 => VoterNotFound, "VOTER_NOT_FOUND", false, Fatal,
        "The voter is not in the voter set.";
    128 => InvalidRegularExpression, "INVALID_REGULAR_EXPRESSION", false, Fatal,
        "The subscription's regular expression cannot be parsed.";
    /// Not retriable in Kafka's sense, but the remedy is a metadata refresh of a special
    /// kind: it starts again from the bootstrap servers instead of the brokers already
    /// known.
    129 => RebootstrapRequired, "REBOOTSTRAP_REQUIRED", false, RefreshMetadata,
        "The client's metadata is too stale to trust; it has to start over from its bootstrap servers.";
    130 => StreamsInvalidTopology, "STREAMS_INVALID_TOPOLOGY", false, Fatal,
        "The Streams topology the member sent is invalid.";
    131 => StreamsInvalidTopologyEpoch, "STREAMS_INVALID_TOPOLOGY_EPOCH", false, Fatal,
        "The Streams topology epoch is invalid, for example because another topology was registered under it.";
    132 => StreamsTopologyFenced, "STREAMS_TOPOLOGY_FENCED", false, Fatal,
        "The Streams topology epoch is older than the group's.";
    133 => ShareSessionLimitReached, "SHARE_SESSION_LIMIT_REACHED", true, Backoff,
        "The broker cannot open another share session because its limit is reached.";
    134 => GroupDeletionFailed, "GROUP_DELETION_FAILED", false, Fatal,
        "The group could not be deleted; the response's error message says why.";
    135 => StreamsTopologyDescriptionUpdateFailed, "STREAMS_TOPOLOGY_DESCRIPTION_UPDATE_FAILED", false, Fatal,
        "The broker could not store the Streams topology description.";
}

impl ErrorCode {
    /// `Ok(())` for code 0, otherwise the error the code names.
    pub const fn check(code: i16) -> Result<(), ErrorCode> {
        match ErrorCode::from_code(code) {
            ErrorCode::None => Ok(()),
            err => Err(err),
        }
    }

    /// Whether this is [`ErrorCode::None`] (code 0).
    pub const fn is_none(self) -> bool {
        matches!(self, ErrorCode::None)
    }

    /// Whether this is [`ErrorCode::None`] (code 0): the same as [`ErrorCode::is_none`].
    pub const fn is_ok(self) -> bool {
        self.is_none()
    }

    /// Whether this is any code other than 0.
    pub const fn is_err(self) -> bool {
        !self.is_none()
    }

    /// Whether this crate knows the code (anything but [`ErrorCode::Unknown`]).
    pub const fn is_known(self) -> bool {
        !matches!(self, ErrorCode::Unknown(_))
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (code {}): {}", self.name(), self.code(), self.description())
    }
}

impl std::error::Error for ErrorCode {}

impl From<i16> for ErrorCode {
    fn from(code: i16) -> ErrorCode {
        ErrorCode::from_code(code)
    }
}

impl From<ErrorCode> for i16 {
    fn from(err: ErrorCode) -> i16 {
        err.code()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    /// The codes whose Java exception is a `RetriableException` subclass, listed
    /// independently of the table as a cross-check.
    const JAVA_RETRIABLE: &[i16] = &[
        2, 3, 5, 6, 7, 9, 13, 14, 15, 16, 19, 20, 41, 51, 56, 70, 71, 72, 74, 75, 78, 80, 83, 84, 88, 89, 100, 103,
        106, 122, 123, 133,
    ];

    fn camel_to_upper_snake(camel: &str) -> String {
        let mut out = String::new();
        for (i, c) in camel.chars().enumerate() {
            if c.is_ascii_uppercase() && i > 0 {
                out.push('_');
            }
            out.push(c.to_ascii_uppercase());
        }
        out
    }

    #[test]
    fn every_code_round_trips() {
        for &err in ErrorCode::ALL {
            assert_eq!(ErrorCode::from_code(err.code()), err, "{err:?}");
            assert_eq!(ErrorCode::from(i16::from(err)), err, "{err:?}");
            assert!(err.is_known(), "{err:?}");
        }
    }

    #[test]
    fn codes_are_unique_sorted_and_contiguous() {
        let codes: Vec<i16> = ErrorCode::ALL.iter().map(|e| e.code()).collect();
        let unique: HashSet<i16> = codes.iter().copied().collect();
        assert_eq!(unique.len(), codes.len());
        // Kafka assigns codes without gaps, from -1 up.
        let expected: Vec<i16> = (-1..=135).collect();
        assert_eq!(codes, expected);
    }

    #[test]
    fn names_are_unique_and_match_the_variants() {
        let names: HashSet<&str> = ErrorCode::ALL.iter().map(|e| e.name()).collect();
        assert_eq!(names.len(), ErrorCode::ALL.len());
        assert!(!names.contains("UNKNOWN"));
        for &err in ErrorCode::ALL {
            assert_eq!(camel_to_upper_snake(&format!("{err:?}")), err.name());
            assert!(!err.description().is_empty(), "{err:?}");
            assert!(err.description().ends_with('.'), "{err:?}");
        }
    }

    #[test]
    fn unknown_codes_survive() {
        for code in [-2, 136, 1000, i16::MIN, i16::MAX] {
            let err = ErrorCode::from_code(code);
            assert_eq!(err, ErrorCode::Unknown(code));
            assert_eq!(err.code(), code);
            assert_eq!(i16::from(err), code);
            assert_eq!(err.name(), "UNKNOWN");
            assert!(!err.is_known());
            assert!(!err.is_retriable());
            assert_eq!(err.retry_action(), RetryAction::Fatal);
            assert_eq!(ErrorCode::check(code), Err(err));
        }
    }

    #[test]
    fn spot_checks_against_kafka() {
        let cases: &[(i16, ErrorCode, &str, bool)] = &[
            (-1, ErrorCode::UnknownServerError, "UNKNOWN_SERVER_ERROR", false),
            (0, ErrorCode::None, "NONE", false),
            (1, ErrorCode::OffsetOutOfRange, "OFFSET_OUT_OF_RANGE", false),
            (3, ErrorCode::UnknownTopicOrPartition, "UNKNOWN_TOPIC_OR_PARTITION", true),
            (6, ErrorCode::NotLeaderOrFollower, "NOT_LEADER_OR_FOLLOWER", true),
            (15, ErrorCode::CoordinatorNotAvailable, "COORDINATOR_NOT_AVAILABLE", true),
            (16, ErrorCode::NotCoordinator, "NOT_COORDINATOR", true),
            (25, ErrorCode::UnknownMemberId, "UNKNOWN_MEMBER_ID", false),
            (29, ErrorCode::TopicAuthorizationFailed, "TOPIC_AUTHORIZATION_FAILED", false),
            (35, ErrorCode::UnsupportedVersion, "UNSUPPORTED_VERSION", false),
            (47, ErrorCode::InvalidProducerEpoch, "INVALID_PRODUCER_EPOCH", false),
            (51, ErrorCode::ConcurrentTransactions, "CONCURRENT_TRANSACTIONS", true),
            (56, ErrorCode::KafkaStorageError, "KAFKA_STORAGE_ERROR", true),
            (90, ErrorCode::ProducerFenced, "PRODUCER_FENCED", false),
            (100, ErrorCode::UnknownTopicId, "UNKNOWN_TOPIC_ID", true),
            (110, ErrorCode::FencedMemberEpoch, "FENCED_MEMBER_EPOCH", false),
            (120, ErrorCode::TransactionAbortable, "TRANSACTION_ABORTABLE", false),
            (129, ErrorCode::RebootstrapRequired, "REBOOTSTRAP_REQUIRED", false),
            (133, ErrorCode::ShareSessionLimitReached, "SHARE_SESSION_LIMIT_REACHED", true),
        ];
        for &(code, err, name, retriable) in cases {
            assert_eq!(ErrorCode::from_code(code), err, "code {code}");
            assert_eq!(err.code(), code);
            assert_eq!(err.name(), name);
            assert_eq!(err.is_retriable(), retriable, "{name}");
        }
    }

    #[test]
    fn retriable_flags_match_the_java_hierarchy() {
        let retriable: Vec<i16> = ErrorCode::ALL.iter().filter(|e| e.is_retriable()).map(|e| e.code()).collect();
        assert_eq!(retriable, JAVA_RETRIABLE);
    }

    #[test]
    fn spot_check_actions() {
        use RetryAction as A;
        let cases = [
            (ErrorCode::None, A::None),
            (ErrorCode::NotLeaderOrFollower, A::RefreshMetadata),
            (ErrorCode::UnknownTopicOrPartition, A::RefreshMetadata),
            (ErrorCode::LeaderNotAvailable, A::RefreshMetadata),
            (ErrorCode::FencedLeaderEpoch, A::RefreshMetadata),
            (ErrorCode::KafkaStorageError, A::RefreshMetadata),
            (ErrorCode::CoordinatorNotAvailable, A::FindCoordinator),
            (ErrorCode::NotCoordinator, A::FindCoordinator),
            (ErrorCode::UnknownMemberId, A::Rejoin),
            (ErrorCode::IllegalGeneration, A::Rejoin),
            (ErrorCode::RebalanceInProgress, A::Rejoin),
            (ErrorCode::FencedMemberEpoch, A::Rejoin),
            (ErrorCode::RequestTimedOut, A::Backoff),
            (ErrorCode::CoordinatorLoadInProgress, A::Backoff),
            (ErrorCode::NotEnoughReplicas, A::Backoff),
            (ErrorCode::ConcurrentTransactions, A::Backoff),
            (ErrorCode::ThrottlingQuotaExceeded, A::Backoff),
            (ErrorCode::TopicAuthorizationFailed, A::Fatal),
            (ErrorCode::UnsupportedVersion, A::Fatal),
            (ErrorCode::InvalidConfig, A::Fatal),
            (ErrorCode::ProducerFenced, A::Fatal),
            (ErrorCode::InvalidProducerEpoch, A::Fatal),
        ];
        for (err, action) in cases {
            assert_eq!(err.retry_action(), action, "{err:?}");
        }
    }

    #[test]
    fn classification_is_consistent() {
        // Only NONE has no action, and NONE is not an error.
        for &err in ErrorCode::ALL {
            assert_eq!(err.retry_action() == RetryAction::None, err.is_none(), "{err:?}");
        }

        // Codes Kafka calls retriable get a retry, except those documented on the variant.
        let retriable_but_not_retried: Vec<ErrorCode> =
            ErrorCode::ALL.iter().copied().filter(|e| e.is_retriable() && !e.retry_action().is_retry()).collect();
        assert_eq!(retriable_but_not_retried, [ErrorCode::ElectionNotNeeded]);

        // Codes Kafka does not call retriable but which a client still recovers from by
        // retrying after a step of its own; each is documented on the variant.
        let retried_but_not_retriable: Vec<ErrorCode> =
            ErrorCode::ALL.iter().copied().filter(|e| !e.is_retriable() && e.retry_action().is_retry()).collect();
        assert_eq!(
            retried_but_not_retriable,
            [
                ErrorCode::IllegalGeneration,
                ErrorCode::UnknownMemberId,
                ErrorCode::RebalanceInProgress,
                ErrorCode::MemberIdRequired,
                ErrorCode::FencedMemberEpoch,
                ErrorCode::StaleMemberEpoch,
                ErrorCode::RebootstrapRequired,
            ]
        );

        // Every `Rejoin` is a group membership error, which Kafka never calls retriable.
        for &err in ErrorCode::ALL {
            if err.retry_action() == RetryAction::Rejoin {
                assert!(!err.is_retriable(), "{err:?}");
            }
        }
    }

    #[test]
    fn check_and_predicates() {
        assert_eq!(ErrorCode::check(0), Ok(()));
        assert_eq!(ErrorCode::check(6), Err(ErrorCode::NotLeaderOrFollower));
        assert!(ErrorCode::None.is_none());
        assert!(ErrorCode::None.is_ok());
        assert!(!ErrorCode::None.is_err());
        assert!(ErrorCode::UnknownServerError.is_err());
        assert!(!ErrorCode::UnknownServerError.is_ok());
        assert!(RetryAction::Backoff.is_retry());
        assert!(!RetryAction::Fatal.is_retry());
        assert!(!RetryAction::None.is_retry());
    }

    #[test]
    fn display_and_error() {
        assert_eq!(
            ErrorCode::NotLeaderOrFollower.to_string(),
            format!("NOT_LEADER_OR_FOLLOWER (code 6): {}", ErrorCode::NotLeaderOrFollower.description())
        );
        assert!(ErrorCode::from_code(-1).to_string().starts_with("UNKNOWN_SERVER_ERROR (code -1): "));
        assert!(ErrorCode::from_code(4242).to_string().starts_with("UNKNOWN (code 4242): "));
        let boxed: Box<dyn std::error::Error> = Box::new(ErrorCode::TopicAuthorizationFailed);
        assert!(boxed.to_string().starts_with("TOPIC_AUTHORIZATION_FAILED (code 29)"));
    }
}
