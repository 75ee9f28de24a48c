//! Committed offsets, sans-io: what a group member commits and when
//! ([`commit::CommitTracker`]), and where a newly assigned partition starts
//! ([`fetch::OffsetFetcher`]).
//!
//! Both are plain structs under the contract of the membership state machines: events
//! and `now` in; requests, events and the next time to wake up out. Neither sends
//! anything nor reads a clock.
//!
//! The rules (the facts behind them: `reference/consumer-groups.md`, 1.8 and Q4):
//!
//! - The offset committed for a partition is the offset after the last record the
//!   handler finished ([`CommitTracker::done`](commit::CommitTracker::done)), never the
//!   fetch position. A partition's committed offset never goes backwards, and at most
//!   one commit is in flight for it.
//! - Commits go through `committers_count` committers; each partition belongs to one
//!   (by a hash of its topic and index), and each committer has at most one
//!   OffsetCommit in flight, which carries every partition of its own that has
//!   something to commit. A KIP-848 member commits with its member epoch (OffsetCommit
//!   v9+), a classic one with its generation.
//! - STALE_MEMBER_EPOCH: the partition waits for the next epoch
//!   ([`CommitTracker::set_member`](commit::CommitTracker::set_member)) and is committed
//!   again with it; a partition given up meanwhile
//!   ([`CommitTracker::lose`](commit::CommitTracker::lose)) is dropped and its
//!   uncommitted work reported. UNKNOWN_MEMBER_ID, FENCED_MEMBER_EPOCH,
//!   ILLEGAL_GENERATION and REBALANCE_IN_PROGRESS fail the commit: the uncommitted
//!   work is reported for redelivery (the member loses the partition anyway).
//!   NOT_COORDINATOR and COORDINATOR_NOT_AVAILABLE ask for the coordinator; codes that
//!   pass with time are retried after a backoff; the others are typed errors
//!   ([`OffsetError`]).
//! - A revocation flushes its partitions
//!   ([`CommitTracker::flush`](commit::CommitTracker::flush)): the tracker says when
//!   each is committed, or failed, so that the member can release them.
//! - `handler_max_unacked_commits`: a handler may start on a partition's next batch
//!   while at most that many of its finished batches are not committed yet
//!   ([`CommitTracker::may_handle`](commit::CommitTracker::may_handle)); with 0 each
//!   batch waits for the commit of the one before.
//! - A partition's start comes from OffsetFetch (v8+ batches groups, v9+ carries the
//!   member id and epoch): the committed offset with its leader epoch, or, with none,
//!   the reset policy's choice ([`ResetPolicy`]). UNSTABLE_OFFSET_COMMIT (transactional
//!   offsets not settled yet) is asked again after a backoff.
//!
//! How a driver wires them to a member's actions
//! ([`membership::consumer::Action`](crate::membership::consumer::Action), and the
//! classic member's):
//!
//! | member action | offsets |
//! | --- | --- |
//! | `EpochChanged { epoch }` (the member epoch, or the classic generation with the member id) | [`CommitTracker::set_member`](commit::CommitTracker::set_member) and [`OffsetFetcher::set_member`](fetch::OffsetFetcher::set_member) |
//! | `StartPartitions` | [`OffsetFetcher::add`](fetch::OffsetFetcher::add); on [`FetchEvent::Start`], [`CommitTracker::assign`](commit::CommitTracker::assign) with the committed offset, then the partition's consumer starts |
//! | `CommitRevoked` | finish the records in flight, [`CommitTracker::flush`](commit::CommitTracker::flush); on [`CommitEvent::Flushed`], stop the consumers and report the release |
//! | `PartitionsLost` | [`CommitTracker::lose`](commit::CommitTracker::lose) and [`OffsetFetcher::remove`](fetch::OffsetFetcher::remove), nothing committed |
//! | `FindCoordinator` | the coordinator found serves both: `coordinator_found` on each |
//!
//! ## Example
//!
//! A partition's handler finishes records 10 to 14; the committer commits offset 15:
//!
//! ```
//! use std::time::Instant;
//!
//! use klife_group::offsets::{CommitEvent, CommitTracker, GroupProtocol, OffsetsConfig};
//! use klife_protocol::messages::OffsetCommitResponse;
//! use klife_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
//! use klife_protocol::types::TopicPartition;
//!
//! let now = Instant::now();
//! let mut tracker = CommitTracker::new(OffsetsConfig::new("orders-svc", GroupProtocol::Consumer));
//! tracker.set_member(now, "member-1", 3);
//! let orders0 = TopicPartition::new("orders", 0);
//! tracker.assign(now, orders0.clone(), Some(10));
//!
//! assert!(tracker.done(now, &orders0.at(15).with_last_epoch(2), None));
//! assert!(!tracker.may_handle(&orders0), "handler_max_unacked_commits 0: wait for the commit");
//! let commit = tracker.poll_commit(now, 9).expect("a commit is due");
//! assert_eq!(commit.request.generation_id_or_member_epoch, 3);
//! assert_eq!(commit.request.topics[0].partitions[0].committed_offset, 15);
//!
//! let answer = OffsetCommitResponse::default().with_topics(vec![
//!     OffsetCommitResponseTopic::default()
//!         .with_name("orders".into())
//!         .with_partitions(vec![OffsetCommitResponsePartition::default().with_partition_index(0)]),
//! ]);
//! tracker.on_commit_response(now, commit.id, &answer);
//! assert_eq!(tracker.poll_event(), Some(CommitEvent::Committed { offset: orders0.at(15).with_last_epoch(2) }));
//! assert!(tracker.may_handle(&orders0));
//! ```

use std::time::{Duration, Instant};

use klife_protocol::ErrorCode;
use klife_protocol::types::TopicPartition;

pub mod commit;
pub mod fetch;
#[cfg(test)]
mod tests;

pub use commit::{Commit, CommitEvent, CommitId, CommitTracker, FlushId, Uncommitted};
pub use fetch::{FetchEvent, FetchId, OffsetFetch, OffsetFetcher, StartPosition};

/// What a partition waits for before its next commit or fetch is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// Nothing.
    Ready,
    /// The end of a backoff.
    Until(Instant),
    /// A member epoch other than the one the refused request carried.
    Epoch(i32),
}

/// The first OffsetCommit and OffsetFetch version with which a KIP-848 member is
/// checked by its member epoch (v9).
pub const CONSUMER_PROTOCOL_MIN_VERSION: i16 = 9;
/// The first OffsetFetch version that batches groups (v8).
pub const FETCH_GROUPS_MIN_VERSION: i16 = 8;
/// The first OffsetCommit version that carries a generation and member id (v1).
pub const CLASSIC_COMMIT_MIN_VERSION: i16 = 1;
/// How many OffsetCommit requests a committer has in flight at most, by default
/// ([`OffsetsConfig::commits_in_flight`]).
pub const DEFAULT_COMMITS_IN_FLIGHT: usize = 2;
/// The first wait before a commit or fetch is sent again after a transient failure.
pub const DEFAULT_OFFSETS_RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between two attempts after transient failures.
pub const DEFAULT_OFFSETS_RETRY_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Which group protocol the member is in: it decides what the generation field of a
/// commit means, and the versions it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupProtocol {
    /// KIP-848 (ConsumerGroupHeartbeat): commits carry the member epoch (v9+).
    Consumer,
    /// Classic (JoinGroup / SyncGroup): commits carry the generation.
    Classic,
    /// A choice, not a protocol a member runs: KIP-848 where the coordinator offers
    /// and accepts it, else classic. The offsets state machines treat it as
    /// [`Consumer`](Self::Consumer); a member that fell back to classic gets offsets
    /// state machines for [`Classic`](Self::Classic).
    Auto,
}

/// What a partition starts from when the group has no committed offset for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResetPolicy {
    /// The log start offset.
    Earliest,
    /// The log end offset (Klife's default).
    #[default]
    Latest,
    /// None: the partition fails with [`OffsetError::NoCommittedOffset`].
    Error,
}

/// Who commits and fetches: the group, the member and its timings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetsConfig {
    /// The group id.
    pub group_id: String,
    /// The static instance id, if any.
    pub instance_id: Option<String>,
    /// The group protocol.
    pub protocol: GroupProtocol,
    /// How many committers share the group's partitions (at least 1; seed 000:
    /// `committers_count`, 1 by default).
    pub committers_count: usize,
    /// How many finished batches of a partition may wait for their commit while the
    /// handler goes on (seed 000: `handler_max_unacked_commits`, 0 by default).
    pub max_unacked_commits: usize,
    /// How many OffsetCommit requests each committer may have in flight at once, each
    /// on a connection of its own (at least 1; [`DEFAULT_COMMITS_IN_FLIGHT`] by
    /// default). A broker serves one request of a connection at a time, and Apache
    /// Kafka's coordinator holds each commit for its append linger
    /// (`group.coordinator.append.linger.ms`, 5 ms): with one request at a time, a
    /// partition that finishes just after a commit left waits for that one to be
    /// answered before its own goes. A partition is never in two commits at once, so
    /// its committed offset still only moves forward.
    pub commits_in_flight: usize,
    /// The first backoff after a transient failure; it doubles on each failure that
    /// follows.
    pub retry_backoff: Duration,
    /// The longest backoff.
    pub retry_backoff_max: Duration,
}

impl OffsetsConfig {
    /// A configuration with the defaults: one committer, no unacknowledged commit.
    pub fn new(group_id: impl Into<String>, protocol: GroupProtocol) -> OffsetsConfig {
        OffsetsConfig {
            group_id: group_id.into(),
            instance_id: None,
            protocol,
            committers_count: 1,
            max_unacked_commits: 0,
            commits_in_flight: DEFAULT_COMMITS_IN_FLIGHT,
            retry_backoff: DEFAULT_OFFSETS_RETRY_BACKOFF,
            retry_backoff_max: DEFAULT_OFFSETS_RETRY_BACKOFF_MAX,
        }
    }

    /// Sets the static instance id.
    #[must_use]
    pub fn with_instance_id(mut self, id: impl Into<String>) -> OffsetsConfig {
        self.instance_id = Some(id.into());
        self
    }

    /// Sets the number of committers (0 is taken as 1).
    #[must_use]
    pub fn with_committers_count(mut self, n: usize) -> OffsetsConfig {
        self.committers_count = n.max(1);
        self
    }

    /// Sets how many finished batches may wait for their commit.
    #[must_use]
    pub fn with_max_unacked_commits(mut self, n: usize) -> OffsetsConfig {
        self.max_unacked_commits = n;
        self
    }

    /// Sets how many commits each committer may have in flight (0 is taken as 1).
    #[must_use]
    pub fn with_commits_in_flight(mut self, n: usize) -> OffsetsConfig {
        self.commits_in_flight = n.max(1);
        self
    }

    /// Sets the backoff bounds.
    #[must_use]
    pub fn with_retry_backoff(mut self, first: Duration, max: Duration) -> OffsetsConfig {
        self.retry_backoff = first;
        self.retry_backoff_max = max.max(first);
        self
    }

    /// The lowest OffsetCommit and OffsetFetch version the protocol can use.
    pub fn min_version(&self) -> i16 {
        match self.protocol {
            GroupProtocol::Consumer | GroupProtocol::Auto => CONSUMER_PROTOCOL_MIN_VERSION,
            GroupProtocol::Classic => CLASSIC_COMMIT_MIN_VERSION,
        }
    }

    /// The wait after `failures` transient failures in a row (the first is 1).
    pub(crate) fn backoff(&self, failures: u32) -> Duration {
        let factor = 1u32.checked_shl(failures.saturating_sub(1).min(16)).unwrap_or(u32::MAX);
        self.retry_backoff.saturating_mul(factor).min(self.retry_backoff_max)
    }

    /// Whether a member with this generation or epoch can commit.
    pub(crate) fn is_member(&self, generation: i32) -> bool {
        match self.protocol {
            GroupProtocol::Consumer | GroupProtocol::Auto => generation > 0,
            GroupProtocol::Classic => generation >= 0,
        }
    }
}

/// Why a partition's offsets could not be committed or fetched.
///
/// Each variant names the partition and says what to do. The partition's work that
/// was not committed is redelivered from its last committed offset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OffsetError {
    /// The group has no committed offset for the partition and its reset policy is
    /// [`ResetPolicy::Error`].
    ///
    /// Commit a start offset for the group (e.g. with `kafka-consumer-groups.sh
    /// --reset-offsets`), or choose `earliest` or `latest`.
    #[error("{partition}: no committed offset and reset policy error")]
    NoCommittedOffset {
        /// The partition.
        partition: TopicPartition,
    },
    /// UNKNOWN_MEMBER_ID: the coordinator no longer knows the member; it rejoins and
    /// the partition may move.
    #[error("{partition}: the coordinator no longer knows the member (UNKNOWN_MEMBER_ID)")]
    UnknownMember {
        /// The partition.
        partition: TopicPartition,
    },
    /// FENCED_MEMBER_EPOCH: the member was fenced (KIP-848); it rejoins.
    #[error("{partition}: the member epoch was fenced (FENCED_MEMBER_EPOCH)")]
    FencedMemberEpoch {
        /// The partition.
        partition: TopicPartition,
    },
    /// ILLEGAL_GENERATION: the classic group moved to another generation.
    #[error("{partition}: the group's generation changed (ILLEGAL_GENERATION)")]
    IllegalGeneration {
        /// The partition.
        partition: TopicPartition,
    },
    /// REBALANCE_IN_PROGRESS: the classic group is rebalancing; the member rejoins.
    #[error("{partition}: the group is rebalancing (REBALANCE_IN_PROGRESS)")]
    RebalanceInProgress {
        /// The partition.
        partition: TopicPartition,
    },
    /// GROUP_AUTHORIZATION_FAILED: the principal may not use the group.
    ///
    /// Grant the client's principal `READ` on the group resource.
    #[error("{partition}: not authorized to commit or fetch for the group (GROUP_AUTHORIZATION_FAILED)")]
    GroupAuthorizationFailed {
        /// The partition.
        partition: TopicPartition,
    },
    /// TOPIC_AUTHORIZATION_FAILED: the principal may not read the topic.
    ///
    /// Grant the client's principal `READ` on the topic.
    #[error("{partition}: not authorized for the topic (TOPIC_AUTHORIZATION_FAILED)")]
    TopicAuthorizationFailed {
        /// The partition.
        partition: TopicPartition,
    },
    /// OFFSET_METADATA_TOO_LARGE: the commit's metadata (the reason given with it) is
    /// longer than the broker's `offset.metadata.max.bytes`.
    ///
    /// Give shorter reasons, or raise the broker setting.
    #[error("{partition}: the commit's metadata is too large (OFFSET_METADATA_TOO_LARGE)")]
    OffsetMetadataTooLarge {
        /// The partition.
        partition: TopicPartition,
    },
    /// UNKNOWN_TOPIC_OR_PARTITION: the coordinator does not know the partition (the
    /// topic was deleted, or never existed).
    #[error("{partition}: the coordinator does not know the partition (UNKNOWN_TOPIC_OR_PARTITION)")]
    UnknownTopicOrPartition {
        /// The partition.
        partition: TopicPartition,
    },
    /// GROUP_ID_NOT_FOUND: the coordinator has no such group (deleted or converted).
    #[error("{partition}: the coordinator does not know the group (GROUP_ID_NOT_FOUND)")]
    GroupIdNotFound {
        /// The partition.
        partition: TopicPartition,
    },
    /// The coordinator's OffsetCommit or OffsetFetch is older than v9, which a KIP-848
    /// member needs to be checked by its member epoch.
    ///
    /// Use a Kafka 4.0+ coordinator, or the classic protocol.
    #[error("{partition}: version {version} cannot carry a member epoch (v9+ needed)")]
    UnsupportedVersion {
        /// The partition.
        partition: TopicPartition,
        /// The version offered.
        version: i16,
    },
    /// Any other code that no retry cures; its documentation ([`ErrorCode`]) says what
    /// it means.
    #[error("{partition}: the coordinator answered {} ({})", code.name(), code.code())]
    Broker {
        /// The partition.
        partition: TopicPartition,
        /// The code.
        code: ErrorCode,
    },
}

impl OffsetError {
    /// The error a final code gives for `partition`.
    pub(crate) fn from_code(partition: TopicPartition, code: ErrorCode) -> OffsetError {
        match code {
            ErrorCode::UnknownMemberId => OffsetError::UnknownMember { partition },
            ErrorCode::FencedMemberEpoch => OffsetError::FencedMemberEpoch { partition },
            ErrorCode::IllegalGeneration => OffsetError::IllegalGeneration { partition },
            ErrorCode::RebalanceInProgress => OffsetError::RebalanceInProgress { partition },
            ErrorCode::GroupAuthorizationFailed => OffsetError::GroupAuthorizationFailed { partition },
            ErrorCode::TopicAuthorizationFailed => OffsetError::TopicAuthorizationFailed { partition },
            ErrorCode::OffsetMetadataTooLarge => OffsetError::OffsetMetadataTooLarge { partition },
            ErrorCode::UnknownTopicOrPartition => OffsetError::UnknownTopicOrPartition { partition },
            ErrorCode::GroupIdNotFound => OffsetError::GroupIdNotFound { partition },
            code => OffsetError::Broker { partition, code },
        }
    }

    /// The partition.
    pub fn partition(&self) -> &TopicPartition {
        match self {
            OffsetError::NoCommittedOffset { partition }
            | OffsetError::UnknownMember { partition }
            | OffsetError::FencedMemberEpoch { partition }
            | OffsetError::IllegalGeneration { partition }
            | OffsetError::RebalanceInProgress { partition }
            | OffsetError::GroupAuthorizationFailed { partition }
            | OffsetError::TopicAuthorizationFailed { partition }
            | OffsetError::OffsetMetadataTooLarge { partition }
            | OffsetError::UnknownTopicOrPartition { partition }
            | OffsetError::GroupIdNotFound { partition }
            | OffsetError::UnsupportedVersion { partition, .. }
            | OffsetError::Broker { partition, .. } => partition,
        }
    }

    /// Whether the member's place in the group is gone (it rejoins; the partition is
    /// lost, not failed).
    pub fn is_membership_lost(&self) -> bool {
        matches!(
            self,
            OffsetError::UnknownMember { .. }
                | OffsetError::FencedMemberEpoch { .. }
                | OffsetError::IllegalGeneration { .. }
                | OffsetError::RebalanceInProgress { .. }
        )
    }
}

/// What an answer's code asks of one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Done.
    Ok,
    /// Look the coordinator up, then again.
    FindCoordinator,
    /// Again after the backoff.
    Backoff,
    /// Again with the next member epoch.
    NextEpoch,
    /// Final: the error.
    Fail,
}

/// How an OffsetCommit or OffsetFetch answer's code is settled.
pub(crate) fn verdict(code: ErrorCode) -> Verdict {
    match code {
        ErrorCode::None => Verdict::Ok,
        ErrorCode::NotCoordinator | ErrorCode::CoordinatorNotAvailable => Verdict::FindCoordinator,
        ErrorCode::StaleMemberEpoch => Verdict::NextEpoch,
        // The coordinator is the one place these offsets live: its metadata is not
        // stale, so RefreshMetadata codes other than UNKNOWN_TOPIC_OR_PARTITION are
        // waits.
        ErrorCode::UnknownTopicOrPartition => Verdict::Fail,
        code => match code.retry_action() {
            klife_protocol::RetryAction::None => Verdict::Ok,
            klife_protocol::RetryAction::FindCoordinator => Verdict::FindCoordinator,
            klife_protocol::RetryAction::Backoff | klife_protocol::RetryAction::RefreshMetadata => Verdict::Backoff,
            _ => Verdict::Fail,
        },
    }
}

/// The earliest of optional instants.
pub(crate) fn earliest(times: impl IntoIterator<Item = Option<Instant>>) -> Option<Instant> {
    times.into_iter().flatten().min()
}
