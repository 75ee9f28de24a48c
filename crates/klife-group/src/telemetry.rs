//! Metric names recorded by consumer groups, through the `metrics` facade.
//!
//! | name | kind | labels | meaning |
//! |---|---|---|---|
//! | `klife_group_batches_total` | counter | `topic` | batches given to handlers |
//! | `klife_group_records_total` | counter | `topic` | records given to handlers (again when retried) |
//! | `klife_group_handler_duration_seconds` | histogram | `topic` | time a handler took over a batch |
//! | `klife_group_retried_records_total` | counter | `topic` | records a handler asked to be given again |
//! | `klife_group_dead_letters_total` | counter | `topic` | records produced to a dead-letter topic |
//! | `klife_group_partition_failures_total` | counter | `topic` | partition consumers that failed (a handler's panic or misuse, a dead letter not written, a fetch or offset failure) |
//! | `klife_group_commits_total` | counter | `result` | OffsetCommit requests answered (`ok`: every partition committed; `error`: some refused) or failed (`failed`) |
//! | `klife_group_commit_duration_seconds` | histogram | | time from sending an OffsetCommit to its answer |
//! | `klife_group_partitions_assigned_total` | counter | | partitions assigned to a member |
//! | `klife_group_partitions_revoked_total` | counter | | partitions revoked from a member (given up gracefully) |
//! | `klife_group_partitions_lost_total` | counter | | partitions a member lost (fenced, expired) |
//! | `klife_group_owned_partitions` | gauge | `group` | partitions a member of the group runs now |
//!
//! Tracing, under the `klife_group` target: a member's joins, assignments, revocations
//! and losses at `info`, its heartbeats at `debug`, in a span `klife.group.member`;
//! each partition consumer's start and stop at `info`, its failures at `error`, its
//! dead letters at `info`.

use std::time::Duration;

/// Counter: batches given to handlers, by `topic`.
pub const GROUP_BATCHES_TOTAL: &str = "klife_group_batches_total";
/// Counter: records given to handlers, by `topic`.
pub const GROUP_RECORDS_TOTAL: &str = "klife_group_records_total";
/// Histogram: seconds a handler took over a batch, by `topic`.
pub const GROUP_HANDLER_DURATION_SECONDS: &str = "klife_group_handler_duration_seconds";
/// Counter: records a handler asked to be given again, by `topic`.
pub const GROUP_RETRIED_RECORDS_TOTAL: &str = "klife_group_retried_records_total";
/// Counter: records produced to a dead-letter topic, by `topic`.
pub const GROUP_DEAD_LETTERS_TOTAL: &str = "klife_group_dead_letters_total";
/// Counter: partition consumers that failed, by `topic`.
pub const GROUP_PARTITION_FAILURES_TOTAL: &str = "klife_group_partition_failures_total";
/// Counter: OffsetCommit requests, by `result` (`ok`, `error`, `failed`).
pub const GROUP_COMMITS_TOTAL: &str = "klife_group_commits_total";
/// Histogram: seconds from sending an OffsetCommit to its answer.
pub const GROUP_COMMIT_DURATION_SECONDS: &str = "klife_group_commit_duration_seconds";
/// Counter: partitions assigned to a member.
pub const GROUP_PARTITIONS_ASSIGNED_TOTAL: &str = "klife_group_partitions_assigned_total";
/// Counter: partitions revoked from a member.
pub const GROUP_PARTITIONS_REVOKED_TOTAL: &str = "klife_group_partitions_revoked_total";
/// Counter: partitions a member lost.
pub const GROUP_PARTITIONS_LOST_TOTAL: &str = "klife_group_partitions_lost_total";
/// Gauge: partitions a member of the `group` runs now.
pub const GROUP_OWNED_PARTITIONS: &str = "klife_group_owned_partitions";

/// Every metric name above, for checks that they are documented.
pub const NAMES: &[&str] = &[
    GROUP_BATCHES_TOTAL,
    GROUP_RECORDS_TOTAL,
    GROUP_HANDLER_DURATION_SECONDS,
    GROUP_RETRIED_RECORDS_TOTAL,
    GROUP_DEAD_LETTERS_TOTAL,
    GROUP_PARTITION_FAILURES_TOTAL,
    GROUP_COMMITS_TOTAL,
    GROUP_COMMIT_DURATION_SECONDS,
    GROUP_PARTITIONS_ASSIGNED_TOTAL,
    GROUP_PARTITIONS_REVOKED_TOTAL,
    GROUP_PARTITIONS_LOST_TOTAL,
    GROUP_OWNED_PARTITIONS,
];

pub(crate) fn record_batch(topic: &str, records: usize) {
    metrics::counter!(GROUP_BATCHES_TOTAL, "topic" => topic.to_owned()).increment(1);
    metrics::counter!(GROUP_RECORDS_TOTAL, "topic" => topic.to_owned()).increment(records as u64);
}

pub(crate) fn record_handler_time(topic: &str, elapsed: Duration) {
    metrics::histogram!(GROUP_HANDLER_DURATION_SECONDS, "topic" => topic.to_owned()).record(elapsed.as_secs_f64());
}

pub(crate) fn record_retry(topic: &str, records: usize) {
    metrics::counter!(GROUP_RETRIED_RECORDS_TOTAL, "topic" => topic.to_owned()).increment(records as u64);
}

pub(crate) fn record_dead_letter(topic: &str) {
    metrics::counter!(GROUP_DEAD_LETTERS_TOTAL, "topic" => topic.to_owned()).increment(1);
}

pub(crate) fn record_partition_failure(topic: &str) {
    metrics::counter!(GROUP_PARTITION_FAILURES_TOTAL, "topic" => topic.to_owned()).increment(1);
}

pub(crate) fn record_commit(result: &'static str, elapsed: Option<Duration>) {
    metrics::counter!(GROUP_COMMITS_TOTAL, "result" => result).increment(1);
    if let Some(elapsed) = elapsed {
        metrics::histogram!(GROUP_COMMIT_DURATION_SECONDS).record(elapsed.as_secs_f64());
    }
}

pub(crate) fn record_assignment_change(assigned: usize, revoked: usize, lost: usize) {
    metrics::counter!(GROUP_PARTITIONS_ASSIGNED_TOTAL).increment(assigned as u64);
    metrics::counter!(GROUP_PARTITIONS_REVOKED_TOTAL).increment(revoked as u64);
    metrics::counter!(GROUP_PARTITIONS_LOST_TOTAL).increment(lost as u64);
}

pub(crate) fn record_owned(group: &str, partitions: usize) {
    metrics::gauge!(GROUP_OWNED_PARTITIONS, "group" => group.to_owned()).set(partitions as f64);
}
