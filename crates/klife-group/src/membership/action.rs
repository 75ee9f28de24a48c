//! What a member of either protocol asks of the code that drives it: one vocabulary,
//! so that one driver carries out both [`ConsumerMember`](super::consumer::ConsumerMember)
//! (KIP-848) and [`ClassicMember`](super::classic::ClassicMember). Each member emits
//! the variants its protocol needs; the rest never come from it.

use klife_protocol::Uuid;
use klife_protocol::types::TopicPartition;

use super::consumer::{LostReason, Outcome, RevokeReason};

/// Names one giving-up of partitions (a revocation or a loss), for the member's
/// `released`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReleaseId(u64);

impl ReleaseId {
    pub(crate) fn new(id: u64) -> Self {
        ReleaseId(id)
    }
}

/// What the member asks of the code that drives it, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Look the group coordinator up (again), then call the member's
    /// `coordinator_found`. Nothing goes to the coordinator until then.
    FindCoordinator,
    /// KIP-848: refresh the metadata for these topic ids and report their names with
    /// [`ConsumerMember::on_topic_names`](super::consumer::ConsumerMember::on_topic_names).
    RefreshMetadata {
        /// The ids assigned whose names are not known.
        topic_ids: Vec<Uuid>,
    },
    /// Classic: the member leads this rebalance; look up the partition counts of these
    /// topics and report them with
    /// [`ClassicMember::on_partition_counts`](super::classic::ClassicMember::on_partition_counts).
    DescribeTopics {
        /// Every topic a member subscribes to.
        topics: Vec<String>,
    },
    /// The member epoch (KIP-848) or the generation (classic) changed: commits from now
    /// on carry it, with the member id. 0 (KIP-848) or -1 (classic): not a member; no
    /// commit can succeed until it joins again.
    EpochChanged {
        /// The new member epoch or generation.
        epoch: i32,
    },
    /// Stop fetching these partitions; records already fetched may still be handled.
    StopFetching {
        /// The revocation.
        release: ReleaseId,
        /// The partitions.
        partitions: Vec<TopicPartition>,
    },
    /// Finish the records of these partitions in flight, commit them, stop their
    /// consumers (`on_consumer_stop` with the reason), then call the member's
    /// `released` with `release`.
    CommitRevoked {
        /// The revocation.
        release: ReleaseId,
        /// The partitions.
        partitions: Vec<TopicPartition>,
        /// Why.
        reason: RevokeReason,
    },
    /// These partitions are lost: stop fetching and handling them and commit nothing
    /// (this includes partitions of a revocation under way: its commit must not go,
    /// and its release is no longer awaited), then call the member's `released` with
    /// `release` (the member rejoins only then, so that no partition runs twice in this
    /// process).
    PartitionsLost {
        /// The loss.
        release: ReleaseId,
        /// The partitions.
        partitions: Vec<TopicPartition>,
        /// Why.
        reason: LostReason,
    },
    /// The member owns these partitions from now on: start them (committed offsets,
    /// then `on_consumer_start`).
    StartPartitions {
        /// The partitions.
        partitions: Vec<TopicPartition>,
    },
    /// The member ended; nothing more comes from it.
    Finished(Outcome),
}
