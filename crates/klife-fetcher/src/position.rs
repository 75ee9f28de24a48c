//! How a fetch position is checked against the broker's log, sans-io: which Fetch
//! version a request uses, which leader epochs and topic id each partition of it
//! carries, and what a partition's answer means for its fetch.
//!
//! A position is an offset, and, when known, the leader epoch of the last record batch
//! read before it and the id of the topic it was read from
//! ([`TopicPartitionOffset`](crate::TopicPartitionOffset)). Three checks keep a fetch
//! from reading something other than the log the position belongs to:
//!
//! - **Leader epochs (KIP-320, Fetch v9+).** Each partition carries the leader epoch
//!   the client's metadata knows. A broker with a newer epoch answers
//!   FENCED_LEADER_EPOCH (the metadata is stale: refresh it, fetch again); one with an
//!   older epoch answers UNKNOWN_LEADER_EPOCH (the broker is behind: wait, fetch again).
//! - **Truncation (Fetch v12+).** Each partition also carries the epoch of the last
//!   batch read (`last_fetched_epoch`). The leader looks up where that epoch ends in
//!   its own log; when its log ends that epoch before the position (an unclean leader
//!   election dropped records the client had read, and others may have been written
//!   at their offsets since), it answers with a *diverging epoch*: the epoch and the
//!   offset where the two logs part. The fetch fails with
//!   [`FetchError::LogTruncated`](crate::FetchError::LogTruncated) instead of reading
//!   the records written over the position.
//! - **Topic ids (Fetch v13+).** Topics are named by id. A position remembers the id
//!   of the topic it was read from: when the name has come to stand for another id
//!   (the topic was deleted and created again), the fetch fails with
//!   [`FetchError::TopicRecreated`](crate::FetchError::TopicRecreated) instead of
//!   reading the new topic at an offset of the old one. A request in which some topic
//!   has no known id (a broker or metadata version without ids) names its topics and
//!   goes at v12 at most.

use klife_protocol::{ErrorCode, RetryAction, Uuid, VersionRange};

use crate::consumer::OffsetReset;

/// Lowest Fetch version used: v4 brings isolation levels and the last stable offset.
pub const FETCH_MIN_VERSION: i16 = 4;
/// Highest Fetch version that names topics by name: from v13 they are named by id.
pub const FETCH_MAX_VERSION_BY_NAME: i16 = 12;
/// Highest Fetch version used, the newest the schemas define.
pub const FETCH_MAX_VERSION: i16 = 17;
/// First Fetch version with `current_leader_epoch` (KIP-320).
pub const CURRENT_LEADER_EPOCH_VERSION: i16 = 9;
/// First Fetch version with `last_fetched_epoch` and diverging epochs in answers.
pub const LAST_FETCHED_EPOCH_VERSION: i16 = 12;

/// The version of a Fetch request to a broker whose Fetch range is `broker`: the
/// highest both sides have, at most [`FETCH_MAX_VERSION_BY_NAME`] unless every topic
/// of the request has a known id (`ids_known`). `None` when the broker has none of the
/// versions klife may use.
pub fn fetch_version(broker: VersionRange, ids_known: bool) -> Option<i16> {
    let cap = if ids_known { FETCH_MAX_VERSION } else { FETCH_MAX_VERSION_BY_NAME };
    let version = broker.max.min(cap);
    (version >= FETCH_MIN_VERSION && version >= broker.min).then_some(version)
}

/// The epochs one partition of a Fetch request carries (-1: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Epochs {
    /// `current_leader_epoch`: the leader epoch the client's metadata knows.
    pub current_leader_epoch: i32,
    /// `last_fetched_epoch`: the leader epoch of the last batch read before the
    /// position.
    pub last_fetched_epoch: i32,
}

/// The epochs a partition carries at `version`, from the metadata's leader epoch
/// (-1 when the broker does not report one) and the position's last epoch. A version
/// without a field carries -1 in it (which the encoder leaves out).
pub fn epochs(version: i16, leader_epoch: i32, last_epoch: Option<i32>) -> Epochs {
    Epochs {
        current_leader_epoch: if version >= CURRENT_LEADER_EPOCH_VERSION && leader_epoch >= 0 {
            leader_epoch
        } else {
            -1
        },
        last_fetched_epoch: match last_epoch {
            Some(e) if version >= LAST_FETCHED_EPOCH_VERSION && e >= 0 => e,
            _ => -1,
        },
    }
}

/// What the metadata's topic id means for a fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicIdCheck {
    /// Fetch the topic by this id (`None`: the metadata has no id; by name).
    Fetch(Option<Uuid>),
    /// The metadata names another id than the position's: look the topic up afresh
    /// before concluding, since an answer from a lagging broker may be old.
    LookUp,
    /// The topic was deleted and created again: the position belongs to `old`, the
    /// name now to `new`.
    Recreated {
        /// The id the position was read from.
        old: Uuid,
        /// The id the name stands for now.
        new: Uuid,
    },
}

/// Checks the id the metadata gives a topic (`current`, nil when it gives none)
/// against the one the position was read from (`expected`); `fresh` says the
/// metadata was looked up for this fetch. Without an id on either side there is
/// nothing to compare: the fetch goes by whatever the metadata says.
pub fn check_topic_id(expected: Option<Uuid>, current: Uuid, fresh: bool) -> TopicIdCheck {
    let current = (!current.is_nil()).then_some(current);
    match (expected.filter(|id| !id.is_nil()), current) {
        (Some(old), Some(new)) if old != new => {
            if fresh {
                TopicIdCheck::Recreated { old, new }
            } else {
                TopicIdCheck::LookUp
            }
        }
        (_, current) => TopicIdCheck::Fetch(current),
    }
}

/// A diverging epoch as an answer carries it (`epoch` -1: none).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Divergence {
    /// The largest epoch of the leader's log not above the one the request named.
    pub epoch: i32,
    /// Where that epoch ends in the leader's log: the first offset at which the
    /// leader's log and the one read may differ.
    pub end_offset: i64,
}

impl Divergence {
    /// No diverging epoch (the wire's default).
    pub const NONE: Divergence = Divergence { epoch: -1, end_offset: -1 };
}

/// What one partition of a Fetch answer means for its fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Read the answer's records (there may be none).
    Records,
    /// The broker's log holds everything below the position, but ends the epoch the
    /// request named earlier than the client's last epoch suggests: fetch again at
    /// once, from the same offset, with `epoch` as the last epoch.
    Realign {
        /// The epoch to send as the last epoch.
        epoch: i32,
    },
    /// The log was truncated under the position: the leader's log and the one read
    /// agree only up to `end_offset`, which lies below the position.
    Truncated {
        /// The last epoch the two logs share.
        epoch: i32,
        /// The first offset at which they may differ.
        end_offset: i64,
    },
    /// The position is outside the log (OFFSET_OUT_OF_RANGE, or a divergence the
    /// broker could not place).
    OutOfRange,
    /// The broker does not know the topic or partition, or not under this id (deleted,
    /// created again, or not known to it yet): look the topic up afresh, then fetch
    /// again, or fail if it is gone or was created again.
    LookUp,
    /// Retry after a pause, refreshing the metadata first when `refresh`.
    Retry {
        /// Refresh the metadata before retrying.
        refresh: bool,
    },
    /// A failure retrying does not cure.
    Fail,
}

/// Failed attempts of a fetch after which UNKNOWN_LEADER_EPOCH also refreshes the
/// metadata. The broker is behind the metadata, so waiting is what helps; but epochs
/// start again when a topic is created anew under its name, and only fresh metadata
/// shows that.
pub const UNKNOWN_EPOCH_REFRESH_AFTER: u32 = 2;

/// What a partition's answer means for its fetch: its error `code`, its diverging
/// epoch, the fetch's `offset` and the last epoch it sent (`last_fetched_epoch`, -1
/// for none), after `attempts` failed attempts.
///
/// A diverging epoch counts only when the fetch sent a last epoch, and a realignment
/// only when it moves to an older epoch than the one sent (so a fetch realigns a
/// bounded number of times); anything else a broker says about divergence is retried.
pub fn verdict(
    code: ErrorCode,
    divergence: Divergence,
    offset: i64,
    last_fetched_epoch: i32,
    attempts: u32,
) -> Verdict {
    match code {
        ErrorCode::None if divergence.epoch < 0 || last_fetched_epoch < 0 => Verdict::Records,
        ErrorCode::None if divergence.end_offset < 0 => Verdict::OutOfRange,
        ErrorCode::None if divergence.end_offset < offset => {
            Verdict::Truncated { epoch: divergence.epoch, end_offset: divergence.end_offset }
        }
        ErrorCode::None if divergence.epoch < last_fetched_epoch => Verdict::Realign { epoch: divergence.epoch },
        ErrorCode::None => Verdict::Retry { refresh: false },
        ErrorCode::OffsetOutOfRange => Verdict::OutOfRange,
        ErrorCode::UnknownTopicOrPartition | ErrorCode::UnknownTopicId | ErrorCode::InconsistentTopicId => {
            Verdict::LookUp
        }
        ErrorCode::UnknownLeaderEpoch => Verdict::Retry { refresh: attempts >= UNKNOWN_EPOCH_REFRESH_AFTER },
        code => match code.retry_action() {
            RetryAction::RefreshMetadata | RetryAction::FindCoordinator => Verdict::Retry { refresh: true },
            RetryAction::Backoff | RetryAction::Rejoin => Verdict::Retry { refresh: false },
            _ => Verdict::Fail,
        },
    }
}

/// What a consumer does when a partition's log was truncated under its position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Truncation {
    /// Go on from where the logs part, with this last epoch: the records read from
    /// `offset` on are gone, and the ones written there since are read.
    Resume {
        /// The new position.
        offset: i64,
        /// The last epoch the new position carries.
        last_epoch: i32,
    },
    /// Stop the partition and report the truncation.
    Stop,
}

/// A consumer's reaction to a truncation (`epoch`, `end_offset`) under its policy, as
/// Kafka's Java consumer reacts to one found by validating its position: with a reset
/// policy, go on from the end offset of the divergence (not from the log's start or
/// end); without one ([`OffsetReset::Error`]), stop and report.
pub fn on_truncation(reset: OffsetReset, epoch: i32, end_offset: i64) -> Truncation {
    match reset {
        OffsetReset::Earliest | OffsetReset::Latest => Truncation::Resume { offset: end_offset, last_epoch: epoch },
        OffsetReset::Error => Truncation::Stop,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;

    use super::*;

    fn range(min: i16, max: i16) -> VersionRange {
        VersionRange::new(min, max)
    }

    #[test]
    fn versions_follow_the_broker_and_the_ids() {
        // (broker range, every topic has an id) → version
        let cases = [
            (range(4, 18), true, Some(17)), // Kafka 4.1 advertises 18, which the schemas lack
            (range(4, 18), false, Some(12)),
            (range(0, 17), true, Some(17)), // Tansu
            (range(0, 16), true, Some(16)), // librdkafka's mock cluster
            (range(0, 16), false, Some(12)),
            (range(0, 12), true, Some(12)), // Kafka 2.8 to 3.0: no ids in Fetch
            (range(0, 11), true, Some(11)), // no last_fetched_epoch
            (range(0, 8), true, Some(8)),   // no leader epochs
            (range(0, 3), true, None),      // older than Kafka 0.11
            (range(13, 17), false, None),   // ids required, none known
            (range(13, 17), true, Some(17)),
        ];
        for (broker, ids, want) in cases {
            assert_eq!(fetch_version(broker, ids), want, "{broker} ids {ids}");
        }
    }

    #[test]
    fn epochs_go_where_the_version_has_them() {
        // (version, metadata epoch, last epoch) → (current, last fetched)
        let cases = [
            (17, 5, Some(4), (5, 4)),
            (12, 5, Some(4), (5, 4)),
            (11, 5, Some(4), (5, -1)),
            (9, 5, Some(4), (5, -1)),
            (8, 5, Some(4), (-1, -1)),
            (17, -1, None, (-1, -1)),
            (17, 3, None, (3, -1)),
            (17, 3, Some(-1), (3, -1)),
        ];
        for (version, leader, last, (current, fetched)) in cases {
            assert_eq!(
                epochs(version, leader, last),
                Epochs { current_leader_epoch: current, last_fetched_epoch: fetched },
                "v{version} leader {leader} last {last:?}"
            );
        }
    }

    fn id(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    #[test]
    fn a_new_id_under_the_name_is_a_recreated_topic_once_looked_up() {
        // (expected, current, fresh) → check
        let cases = [
            (None, id(1), false, TopicIdCheck::Fetch(Some(id(1)))),
            (Some(id(1)), id(1), false, TopicIdCheck::Fetch(Some(id(1)))),
            (Some(id(1)), id(2), false, TopicIdCheck::LookUp),
            (Some(id(1)), id(2), true, TopicIdCheck::Recreated { old: id(1), new: id(2) }),
            // Metadata without ids: nothing to compare, by name.
            (Some(id(1)), Uuid::NIL, true, TopicIdCheck::Fetch(None)),
            (None, Uuid::NIL, false, TopicIdCheck::Fetch(None)),
            // A nil expectation is no expectation.
            (Some(Uuid::NIL), id(3), true, TopicIdCheck::Fetch(Some(id(3)))),
        ];
        for (expected, current, fresh, want) in cases {
            assert_eq!(check_topic_id(expected, current, fresh), want, "{expected:?} {current} {fresh}");
        }
    }

    fn div(epoch: i32, end_offset: i64) -> Divergence {
        Divergence { epoch, end_offset }
    }

    #[test]
    fn answers_mean_what_kafka_says() {
        use ErrorCode as E;
        // (code, divergence, offset, last epoch sent, attempts) → verdict
        let cases = [
            (E::None, Divergence::NONE, 10, 3, 0, Verdict::Records),
            (E::None, Divergence::NONE, 10, -1, 0, Verdict::Records),
            // Truncated under the position: the logs part at 6.
            (E::None, div(3, 6), 10, 3, 0, Verdict::Truncated { epoch: 3, end_offset: 6 }),
            (E::None, div(2, 0), 10, 3, 0, Verdict::Truncated { epoch: 2, end_offset: 0 }),
            // The epoch ended at or past the position: nothing read was lost.
            (E::None, div(2, 10), 10, 3, 0, Verdict::Realign { epoch: 2 }),
            (E::None, div(2, 15), 10, 3, 0, Verdict::Realign { epoch: 2 }),
            // Not a divergence the fetch could have caused: ignored, or retried.
            (E::None, div(2, 6), 10, -1, 0, Verdict::Records),
            (E::None, div(3, 12), 10, 3, 0, Verdict::Retry { refresh: false }),
            (E::None, div(3, -1), 10, 3, 0, Verdict::OutOfRange),
            (E::OffsetOutOfRange, Divergence::NONE, 10, 3, 0, Verdict::OutOfRange),
            (E::FencedLeaderEpoch, Divergence::NONE, 10, 3, 0, Verdict::Retry { refresh: true }),
            (E::NotLeaderOrFollower, Divergence::NONE, 10, 3, 0, Verdict::Retry { refresh: true }),
            (E::UnknownLeaderEpoch, Divergence::NONE, 10, 3, 0, Verdict::Retry { refresh: false }),
            (E::UnknownLeaderEpoch, Divergence::NONE, 10, 3, 1, Verdict::Retry { refresh: false }),
            (E::UnknownLeaderEpoch, Divergence::NONE, 10, 3, 2, Verdict::Retry { refresh: true }),
            (E::UnknownTopicOrPartition, Divergence::NONE, 10, 3, 0, Verdict::LookUp),
            (E::UnknownTopicId, Divergence::NONE, 10, 3, 0, Verdict::LookUp),
            (E::InconsistentTopicId, Divergence::NONE, 10, 3, 0, Verdict::LookUp),
            (E::RequestTimedOut, Divergence::NONE, 10, 3, 0, Verdict::Retry { refresh: false }),
            (E::TopicAuthorizationFailed, Divergence::NONE, 10, 3, 0, Verdict::Fail),
            (E::OffsetMovedToTieredStorage, Divergence::NONE, 10, 3, 0, Verdict::Fail),
        ];
        for (code, d, offset, last, attempts, want) in cases {
            assert_eq!(verdict(code, d, offset, last, attempts), want, "{code} {d:?} at {offset} last {last}");
        }
    }

    #[test]
    fn a_consumer_resumes_at_the_divergence_unless_told_to_stop() {
        let resume = Truncation::Resume { offset: 6, last_epoch: 3 };
        assert_eq!(on_truncation(OffsetReset::Earliest, 3, 6), resume);
        assert_eq!(on_truncation(OffsetReset::Latest, 3, 6), resume, "the divergence, not the log's end");
        assert_eq!(on_truncation(OffsetReset::Error, 3, 6), Truncation::Stop);
    }

    /// A leader's log as the broker's leader epoch cache sees it: (epoch, start offset)
    /// in increasing order, and its end offset. `end_offset_for` is Kafka's lookup.
    #[derive(Debug, Clone)]
    struct Log {
        epochs: Vec<(i32, i64)>,
        end: i64,
    }

    impl Log {
        fn end_offset_for(&self, requested: i32) -> Option<(i32, i64)> {
            if requested < 0 {
                return None;
            }
            if self.epochs.last().is_some_and(|(e, _)| *e == requested) {
                return Some((requested, self.end));
            }
            let higher = self.epochs.iter().find(|(e, _)| *e > requested)?;
            match self.epochs.iter().rev().find(|(e, _)| *e <= requested) {
                None => Some((requested, higher.1)),
                Some((floor, _)) => Some((*floor, higher.1)),
            }
        }

        /// The epoch of the record at `offset`.
        fn epoch_at(&self, offset: i64) -> Option<i32> {
            self.epochs.iter().rev().find(|(_, start)| *start <= offset).map(|(e, _)| *e)
        }

        /// Kafka's answer to a fetch at `offset` with `last` as the last epoch.
        fn answer(&self, offset: i64, last: i32) -> (ErrorCode, Divergence) {
            if last < 0 {
                return (ErrorCode::None, Divergence::NONE);
            }
            match self.end_offset_for(last) {
                None => (ErrorCode::OffsetOutOfRange, Divergence::NONE),
                Some((epoch, end)) if epoch < last || end < offset => (ErrorCode::None, div(epoch, end)),
                Some(_) => (ErrorCode::None, Divergence::NONE),
            }
        }
    }

    /// Two logs that share a prefix and then part, as after an unclean election: the
    /// one a consumer read (`read`) went on under epochs the new leader never had, and
    /// the leader's (`leader`) under a newer epoch from the point where they part.
    /// Returns them, that point, and the last epoch they share.
    fn parted_logs() -> impl Strategy<Value = (Log, Log, i64, i32)> {
        (
            proptest::collection::vec((1i32..3, 1i64..8), 1..4),
            proptest::collection::vec((1i32..3, 1i64..8), 1..4),
            1i32..3,
            0i64..20,
        )
            .prop_map(|(shared, tail, gap, leader_tail)| {
                let mut epochs = Vec::new();
                let (mut epoch, mut at) = (-1, 0);
                for (step, len) in shared {
                    epoch += step;
                    epochs.push((epoch, at));
                    at += len;
                }
                let (parted_at, last_shared) = (at, epoch);
                let leader_epochs = epochs.clone();
                for (step, len) in tail {
                    epoch += step;
                    epochs.push((epoch, at));
                    at += len;
                }
                let read = Log { epochs, end: at };
                let mut leader = Log { epochs: leader_epochs, end: parted_at + leader_tail };
                leader.epochs.push((epoch + gap, parted_at));
                (read, leader, parted_at, last_shared)
            })
    }

    proptest! {
        /// A consumer at the end of a log that an unclean election replaced from
        /// `parted_at` on learns of the truncation and exactly where the logs part,
        /// never reads at its old position, and after resuming there reads the
        /// leader's log; realignments on the way (none here) stay bounded.
        #[test]
        fn a_truncated_position_is_found_and_resumed_where_the_logs_part(
            (read, leader, parted_at, last_shared) in parted_logs(),
        ) {
            let offset = read.end;
            let mut last = read.epoch_at(offset - 1).unwrap();
            let mut realigned = 0;
            let outcome = loop {
                let (code, d) = leader.answer(offset, last);
                match verdict(code, d, offset, last, 0) {
                    Verdict::Realign { epoch } => {
                        realigned += 1;
                        prop_assert!(epoch < last);
                        prop_assert!(realigned <= read.epochs.len());
                        last = epoch;
                    }
                    other => break other,
                }
            };
            prop_assert_eq!(outcome, Verdict::Truncated { epoch: last_shared, end_offset: parted_at });
            match on_truncation(OffsetReset::Earliest, last_shared, parted_at) {
                Truncation::Resume { offset, last_epoch } => {
                    let (code, d) = leader.answer(offset, last_epoch);
                    prop_assert_eq!(verdict(code, d, offset, last_epoch, 0), Verdict::Records);
                }
                Truncation::Stop => prop_assert!(false, "a reset policy resumes"),
            }
            prop_assert_eq!(on_truncation(OffsetReset::Error, last_shared, parted_at), Truncation::Stop);
        }

        /// A consumer whose log is a prefix of the leader's (a clean election) reads on
        /// at its position, whatever epochs the leader added since, and realigns at
        /// most as often as the leader's log has epochs.
        #[test]
        fn a_clean_position_reads_on(
            starts in proptest::collection::vec(0i64..5, 1..6),
            read_len in 1i64..40,
            extra in 0i64..20,
        ) {
            let mut epochs = Vec::new();
            let mut at = 0;
            for (i, gap) in starts.iter().enumerate() {
                epochs.push((i32::try_from(i * 2).unwrap(), at));
                at += gap;
            }
            let leader = Log { epochs, end: at.max(read_len) + extra };
            let offset = read_len.min(leader.end);
            let mut last = leader.epoch_at(offset - 1).unwrap();
            for round in 0.. {
                prop_assert!(round <= leader.epochs.len(), "no end to realigning");
                let (code, d) = leader.answer(offset, last);
                match verdict(code, d, offset, last, 0) {
                    Verdict::Records => break,
                    Verdict::Realign { epoch } => last = epoch,
                    other => prop_assert!(false, "a clean log was answered {:?}", other),
                }
            }
        }

        /// Whatever a broker answers, the verdict is one the fetcher can act on without
        /// looping at once: records and truncations come only without an error code, a
        /// realignment only to an older epoch than was sent, a truncation only below
        /// the position.
        #[test]
        fn verdicts_are_consistent(
            code in 0i16..130,
            epoch in -2i32..10,
            end_offset in -2i64..30,
            offset in 0i64..30,
            last in -2i32..10,
            attempts in 0u32..5,
        ) {
            let code = ErrorCode::from_code(code);
            let v = verdict(code, div(epoch, end_offset), offset, last, attempts);
            match v {
                Verdict::Records => prop_assert_eq!(code, ErrorCode::None),
                Verdict::Realign { epoch: e } => {
                    prop_assert_eq!(code, ErrorCode::None);
                    prop_assert!(e < last && e == epoch && end_offset >= offset);
                }
                Verdict::Truncated { epoch: e, end_offset: end } => {
                    prop_assert_eq!(code, ErrorCode::None);
                    prop_assert!(last >= 0 && e == epoch && end == end_offset && (0..offset).contains(&end));
                }
                Verdict::OutOfRange => prop_assert!(code == ErrorCode::OffsetOutOfRange || code == ErrorCode::None),
                Verdict::Fail => prop_assert_eq!(code.retry_action(), RetryAction::Fatal),
                Verdict::LookUp | Verdict::Retry { .. } => {}
            }
        }
    }
}
