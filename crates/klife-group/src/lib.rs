//! # klife-group
//!
//! Kafka consumer groups for klife. This first layer is the membership of a consumer
//! in a group under the consumer group protocol of KIP-848 (ConsumerGroupHeartbeat
//! v1, Kafka 4.0+), as a sans-io state machine:
//! [`membership::consumer::ConsumerMember`].
//!
//! ## Contract
//!
//! - No sockets, no async runtime, no clock reads: the caller passes `now` with every
//!   event and the member id it generated (the member is deterministic for a given
//!   sequence of events).
//! - Out come the heartbeat to send ([`poll_heartbeat`](membership::consumer::ConsumerMember::poll_heartbeat),
//!   at most one in flight), the [`Action`](membership::consumer::Action)s to carry out
//!   in order (find the coordinator, refresh metadata for topic ids, stop fetching,
//!   commit and stop revoked partitions, drop lost ones, start assigned ones, the end
//!   of the member), and the next time to wake up
//!   ([`poll_timeout`](membership::consumer::ConsumerMember::poll_timeout)).
//! - The partitions the member owns change only when a reconciliation completes (after
//!   the caller reports that revoked partitions were committed and stopped) or when they
//!   are lost; lost partitions are never to be committed.
//! - The member epoch is never negative; the heartbeat after any error or failure is a
//!   full one.
//! - Errors that end the member are typed ([`GroupError`]), each with what to do about
//!   it; a coordinator without KIP-848 on the first join ends it with
//!   [`Outcome::FallBackToClassic`](membership::consumer::Outcome::FallBackToClassic).
//!
//! The classic protocol (JoinGroup / SyncGroup / Heartbeat / LeaveGroup) has its own
//! member, [`membership::classic::ClassicMember`], under the same contract and with the
//! same actions where they mean the same; its byte formats are in [`protocol`] and the
//! leader's assignors (range, round-robin, cooperative-sticky, or the user's) in
//! [`assignor`].
//!
//! Committed offsets have their own state machines in [`offsets`], under the same
//! contract: [`offsets::CommitTracker`] keeps, per owned partition, the offset after
//! the last record the handler finished (never the fetch position) and the last one
//! committed, which never goes backwards; its committers (`committers_count`) batch
//! the partitions' pending offsets into OffsetCommit requests, one in flight per
//! committer and so per partition, with the member epoch (v9+) or the generation;
//! STALE_MEMBER_EPOCH waits for the next epoch; a revocation flushes its partitions
//! before they are released; `handler_max_unacked_commits` holds a handler back.
//! [`offsets::OffsetFetcher`] turns OffsetFetch answers into start positions: the
//! committed offset with its leader epoch, or the reset policy's choice.
//!
//! [`driver::GroupMember`] drives a member in a tokio task of its own against a
//! [`klife_connection::Cluster`], under KIP-848, the classic protocol, or KIP-848 with
//! a fall back to the classic protocol when the coordinator has no KIP-848: it finds
//! the coordinator, sends the member's requests, answers its metadata questions and
//! reports the changes of assignment as events, the same under both protocols.
//!
//! [`runtime`] runs consumer groups with handlers on top, as Klife does: a
//! [`runtime::Handler`] and its [`runtime::Action`]s, one consumer task per assigned
//! partition over a shared or an exclusive fetcher, commits through the offsets state
//! machines, graceful revocation and shutdown, dead letters through a producer. The
//! partitions' lifecycle is a sans-io state machine too; the tasks only move records,
//! requests and timers. Without a handler, a topic in [`runtime::Mode::Manual`] is
//! pulled and committed through a [`runtime::Lease`] per partition (manual mode, what
//! `klife-pipeline` drives), and [`runtime::GroupStream`] gives the whole member as a
//! stream of batches and assignment changes in order. Metric names are in
//! [`telemetry`].
//!
//! ## Example
//!
//! A member joins, is assigned a partition, and acknowledges it:
//!
//! ```
//! use std::time::{Duration, Instant};
//!
//! use klife_group::membership::consumer::{
//!     Action, ConsumerConfig, ConsumerMember, MemberState, Subscription, member_id_from_random,
//! };
//! use klife_protocol::Uuid;
//! use klife_protocol::messages::ConsumerGroupHeartbeatResponse;
//! use klife_protocol::messages::consumer_group_heartbeat_response::{Assignment, TopicPartitions};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let now = Instant::now();
//! let config = ConsumerConfig::new("orders-svc", member_id_from_random(7), Subscription::names(["orders"]));
//! let mut member = ConsumerMember::new(config, now)?;
//! assert_eq!(member.poll_action(), Some(Action::FindCoordinator));
//! member.coordinator_found(now);
//!
//! // The join: epoch 0, every field, an empty owned list.
//! let join = member.poll_heartbeat(now).expect("a join is due at once");
//! assert_eq!(join.request.member_epoch, 0);
//! assert_eq!(join.request.topic_partitions, Some(vec![]));
//! assert!(member.poll_heartbeat(now).is_none(), "one heartbeat in flight");
//!
//! // The coordinator answers with epoch 1 and partition 0 of a topic.
//! let orders = Uuid::from_u128(42);
//! let answer = ConsumerGroupHeartbeatResponse::default()
//!     .with_member_epoch(1)
//!     .with_heartbeat_interval_ms(3000)
//!     .with_assignment(Some(Assignment::default().with_topic_partitions(vec![
//!         TopicPartitions::default().with_topic_id(orders).with_partitions(vec![0]),
//!     ])));
//! member.on_heartbeat_response(now, join.id, &answer);
//! assert_eq!(member.poll_action(), Some(Action::EpochChanged { epoch: 1 }));
//! // The topic id is not known yet: the metadata names it.
//! assert_eq!(member.poll_action(), Some(Action::RefreshMetadata { topic_ids: vec![orders] }));
//! member.on_topic_names(now, [(orders, "orders")]);
//! let Some(Action::StartPartitions { partitions }) = member.poll_action() else { panic!() };
//! assert_eq!(partitions[0].to_string(), "orders-0");
//!
//! // The acknowledgement goes at once and carries the owned list.
//! assert_eq!(member.state(), MemberState::Acknowledging);
//! let ack = member.poll_heartbeat(now).expect("the acknowledgement is due at once");
//! assert_eq!(ack.request.topic_partitions.as_ref().map(Vec::len), Some(1));
//! member.on_heartbeat_response(now, ack.id, &ConsumerGroupHeartbeatResponse::default().with_member_epoch(1));
//! assert_eq!(member.state(), MemberState::Stable);
//! assert_eq!(member.poll_timeout(), Some(now + Duration::from_secs(3)));
//! # Ok(())
//! # }
//! ```

pub mod assignor;
pub mod driver;
pub mod error;
pub mod membership;
pub mod offsets;
pub mod protocol;
pub mod runtime;
pub mod telemetry;
#[cfg(test)]
mod test_clock;

pub use error::{ConfigError, GroupError};

/// Entry points for the fuzz targets in `fuzz/` (the `fuzzing` feature); not part of
/// the API and not covered by semver.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing {
    use crate::runtime::{Action, MisuseError};

    /// The most bytes a commit's metadata holds.
    pub const MAX_METADATA_BYTES: usize = crate::runtime::settle::MAX_METADATA_BYTES;

    /// What a batch settles to (see the runtime's `settle`).
    #[derive(Debug)]
    pub struct Settled {
        /// The offset to commit.
        pub done: Option<i64>,
        /// The first record given again.
        pub retry_from: Option<usize>,
        /// The records dead-lettered: index, topic, reason.
        pub dead_letters: Vec<(usize, String, String)>,
        /// The commit's metadata.
        pub metadata: Option<String>,
    }

    /// Settles a batch of records at `offsets` ending at `end` under `action`.
    pub fn settle(offsets: &[i64], end: i64, action: Action) -> Result<Settled, MisuseError> {
        let s = crate::runtime::settle::settle("t", 0, offsets, end, action)?;
        Ok(Settled {
            done: s.done,
            retry_from: s.retry_from,
            dead_letters: s.dead_letters.into_iter().map(|d| (d.index, d.topic, d.reason)).collect(),
            metadata: s.metadata,
        })
    }
}
