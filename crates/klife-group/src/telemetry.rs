//! Metric and span names recorded by consumer groups, through the `metrics` facade and
//! `tracing`.
//!
//! Every metric carries the `group` label, so that a process running two groups tells
//! them apart; `outcome` is `ok` or `error`, as in every crate of klife.
//!
//! | name | kind | labels | meaning |
//! |---|---|---|---|
//! | `klife_group_batches_total` | counter | `group`, `topic` | batches given to handlers |
//! | `klife_group_records_total` | counter | `group`, `topic` | records given to handlers (again when retried) |
//! | `klife_group_handler_duration_seconds` | histogram | `group`, `topic` | time a handler took over a batch |
//! | `klife_group_retried_records_total` | counter | `group`, `topic` | records a handler asked to be given again |
//! | `klife_group_dead_letters_total` | counter | `group`, `topic` | records produced to a dead-letter topic |
//! | `klife_group_partition_failures_total` | counter | `group`, `topic` | partition consumers that failed (a handler's panic or misuse, a dead letter not written, a fetch or offset failure) |
//! | `klife_group_lag` | gauge | `group`, `topic`, `partition` | records between the partition's high watermark (as of the last fetch answer with records) and the group's committed offset (before the first commit: the offset consumption started at); set when a fetch answer comes and when a commit is confirmed, 0 once the partition's consumer stopped (revoked, lost, shut down) |
//! | `klife_group_commits_total` | counter | `group`, `outcome` | OffsetCommit requests answered with every partition committed (`ok`), or with some refused or without an answer (`error`) |
//! | `klife_group_commit_duration_seconds` | histogram | `group` | time from sending an OffsetCommit to its answer |
//! | `klife_group_heartbeat_duration_seconds` | histogram | `group` | time from sending a heartbeat (ConsumerGroupHeartbeat, or a classic Heartbeat) to its answer |
//! | `klife_group_rebalances_total` | counter | `group`, `protocol` (`consumer`/`classic`) | rebalances a member took part in: each new member epoch (KIP-848) or generation (classic) it joined |
//! | `klife_group_partitions_assigned_total` | counter | `group` | partitions assigned to a member |
//! | `klife_group_partitions_revoked_total` | counter | `group` | partitions revoked from a member (given up gracefully) |
//! | `klife_group_partitions_lost_total` | counter | `group` | partitions a member lost (fenced, expired) |
//! | `klife_group_owned_partitions` | gauge | `group` | partitions a member of the group runs now |
//!
//! Spans, under the `klife_group` target; each has the fields `group` and `member_id`
//! (empty for a classic member until the coordinator gave it one):
//!
//! | name | level | other fields | covers |
//! |---|---|---|---|
//! | `klife.group.member` | `info` | | a member's task ([`GroupMember`](crate::driver::GroupMember)), from its start to its end |
//! | `klife.group` | `info` | | a consumer group's task ([`ConsumerGroup`](crate::runtime::ConsumerGroup)) |
//! | `klife.group.join` | `info` | `protocol`, `error` | KIP-848: the heartbeat that joins (member epoch 0); classic: from the first JoinGroup to the SyncGroup that gave the assignment |
//! | `klife.group.heartbeat` | `debug` | `epoch`, `error` | one heartbeat, to its answer |
//! | `klife.group.reconcile` | `info` | `partitions` | an assignment applied by a consumer group: from the partitions assigned to each of them started (or failed, or given up again) |
//! | `klife.group.revoke` | `info` | `partitions`, `reason` (`revoked`, `shutdown`, `lost`) | partitions given up: finished, committed and stopped, up to their release to the group (`lost`: stopped at once, nothing committed) |
//! | `klife.group.commit` | `debug` | `partitions`, `outcome`, `error` | one OffsetCommit, to its answer |
//!
//! The requests sent within them (`klife.request` spans of `klife_connection`) are
//! their children. Events: a member's joins, assignments, revocations and losses at
//! `info`, its heartbeats at `debug`; each partition consumer's start and stop at
//! `info`, its failures at `error`, its dead letters at `info`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};

/// Counter: batches given to handlers, by `group` and `topic`.
pub const GROUP_BATCHES_TOTAL: &str = "klife_group_batches_total";
/// Counter: records given to handlers, by `group` and `topic`.
pub const GROUP_RECORDS_TOTAL: &str = "klife_group_records_total";
/// Histogram: seconds a handler took over a batch, by `group` and `topic`.
pub const GROUP_HANDLER_DURATION_SECONDS: &str = "klife_group_handler_duration_seconds";
/// Counter: records a handler asked to be given again, by `group` and `topic`.
pub const GROUP_RETRIED_RECORDS_TOTAL: &str = "klife_group_retried_records_total";
/// Counter: records produced to a dead-letter topic, by `group` and `topic`.
pub const GROUP_DEAD_LETTERS_TOTAL: &str = "klife_group_dead_letters_total";
/// Counter: partition consumers that failed, by `group` and `topic`.
pub const GROUP_PARTITION_FAILURES_TOTAL: &str = "klife_group_partition_failures_total";
/// Gauge: records between a partition's high watermark and the group's position, by
/// `group`, `topic` and `partition`.
pub const GROUP_LAG: &str = "klife_group_lag";
/// Counter: OffsetCommit requests, by `group` and `outcome` (`ok`, `error`).
pub const GROUP_COMMITS_TOTAL: &str = "klife_group_commits_total";
/// Histogram: seconds from sending an OffsetCommit to its answer, by `group`.
pub const GROUP_COMMIT_DURATION_SECONDS: &str = "klife_group_commit_duration_seconds";
/// Histogram: seconds from sending a heartbeat to its answer, by `group`.
pub const GROUP_HEARTBEAT_DURATION_SECONDS: &str = "klife_group_heartbeat_duration_seconds";
/// Counter: rebalances a member took part in, by `group` and `protocol` (`consumer`,
/// `classic`).
pub const GROUP_REBALANCES_TOTAL: &str = "klife_group_rebalances_total";
/// Counter: partitions assigned to a member, by `group`.
pub const GROUP_PARTITIONS_ASSIGNED_TOTAL: &str = "klife_group_partitions_assigned_total";
/// Counter: partitions revoked from a member, by `group`.
pub const GROUP_PARTITIONS_REVOKED_TOTAL: &str = "klife_group_partitions_revoked_total";
/// Counter: partitions a member lost, by `group`.
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
    GROUP_LAG,
    GROUP_COMMITS_TOTAL,
    GROUP_COMMIT_DURATION_SECONDS,
    GROUP_HEARTBEAT_DURATION_SECONDS,
    GROUP_REBALANCES_TOTAL,
    GROUP_PARTITIONS_ASSIGNED_TOTAL,
    GROUP_PARTITIONS_REVOKED_TOTAL,
    GROUP_PARTITIONS_LOST_TOTAL,
    GROUP_OWNED_PARTITIONS,
];

/// Span (`info`): a member's task.
pub const MEMBER_SPAN: &str = "klife.group.member";
/// Span (`info`): a consumer group's task.
pub const GROUP_SPAN: &str = "klife.group";
/// Span (`info`): joining the group.
pub const JOIN_SPAN: &str = "klife.group.join";
/// Span (`debug`): one heartbeat.
pub const HEARTBEAT_SPAN: &str = "klife.group.heartbeat";
/// Span (`info`): an assignment applied.
pub const RECONCILE_SPAN: &str = "klife.group.reconcile";
/// Span (`info`): partitions given up (revoked, shut down or lost).
pub const REVOKE_SPAN: &str = "klife.group.revoke";
/// Span (`debug`): one OffsetCommit.
pub const COMMIT_SPAN: &str = "klife.group.commit";

/// Every span name above, for checks that they are documented.
pub const SPANS: &[&str] =
    &[MEMBER_SPAN, GROUP_SPAN, JOIN_SPAN, HEARTBEAT_SPAN, RECONCILE_SPAN, REVOKE_SPAN, COMMIT_SPAN];

/// The metrics of one partition's consumer, registered once when it starts (each
/// update is then a plain atomic operation on the recorder's side).
pub(crate) struct PartitionMetrics {
    batches: Counter,
    records: Counter,
    handler: Histogram,
    retried: Counter,
    dead_letters: Counter,
    lag: Arc<Lag>,
}

impl PartitionMetrics {
    pub(crate) fn new(group: &str, topic: &str, partition: i32) -> PartitionMetrics {
        let labels = [("group", group.to_owned()), ("topic", topic.to_owned())];
        let with_partition =
            [("group", group.to_owned()), ("topic", topic.to_owned()), ("partition", partition.to_string())];
        PartitionMetrics {
            batches: metrics::counter!(GROUP_BATCHES_TOTAL, &labels),
            records: metrics::counter!(GROUP_RECORDS_TOTAL, &labels),
            handler: metrics::histogram!(GROUP_HANDLER_DURATION_SECONDS, &labels),
            retried: metrics::counter!(GROUP_RETRIED_RECORDS_TOTAL, &labels),
            dead_letters: metrics::counter!(GROUP_DEAD_LETTERS_TOTAL, &labels),
            lag: Arc::new(Lag {
                gauge: metrics::gauge!(GROUP_LAG, &with_partition),
                high_watermark: AtomicI64::new(-1),
                committed: AtomicI64::new(-1),
                stopped: AtomicBool::new(false),
            }),
        }
    }

    pub(crate) fn batch(&self, records: usize) {
        self.batches.increment(1);
        self.records.increment(records as u64);
    }

    pub(crate) fn handler_time(&self, elapsed: Duration) {
        self.handler.record(elapsed.as_secs_f64());
    }

    pub(crate) fn retry(&self, records: usize) {
        self.retried.increment(records as u64);
    }

    pub(crate) fn dead_letter(&self) {
        self.dead_letters.increment(1);
    }

    /// The partition's lag, which the group's task updates too.
    pub(crate) fn lag(&self) -> &Arc<Lag> {
        &self.lag
    }
}

/// The lag of one partition's consumer: the high watermark its fetches saw less the
/// group's committed offset, each set by whoever learns it (the consumer, the group's
/// task).
pub(crate) struct Lag {
    gauge: Gauge,
    high_watermark: AtomicI64,
    committed: AtomicI64,
    stopped: AtomicBool,
}

impl Lag {
    /// A fetch answer with this high watermark (negative: the answer did not say),
    /// fetched from `offset`, which stands for the committed offset until one is known.
    pub(crate) fn fetched(&self, high_watermark: i64, offset: i64) {
        if high_watermark >= 0 {
            self.high_watermark.store(high_watermark, Ordering::Relaxed);
        }
        let _ = self.committed.compare_exchange(-1, offset, Ordering::Relaxed, Ordering::Relaxed);
        self.update();
    }

    /// The group committed `offset` for the partition.
    pub(crate) fn committed(&self, offset: i64) {
        self.committed.store(offset, Ordering::Relaxed);
        self.update();
    }

    /// The consumer stopped: the partition's lag is no longer this member's to report.
    pub(crate) fn stopped(&self) {
        self.stopped.store(true, Ordering::Relaxed);
        self.gauge.set(0.0);
    }

    fn update(&self) {
        let (end, committed) = (self.high_watermark.load(Ordering::Relaxed), self.committed.load(Ordering::Relaxed));
        if end >= 0 && committed >= 0 && !self.stopped.load(Ordering::Relaxed) {
            self.gauge.set((end - committed).max(0) as f64);
        }
    }
}

pub(crate) fn record_partition_failure(group: &str, topic: &str) {
    metrics::counter!(GROUP_PARTITION_FAILURES_TOTAL, "group" => group.to_owned(), "topic" => topic.to_owned())
        .increment(1);
}

/// An OffsetCommit answered with every partition committed (`ok`), or not (`elapsed`
/// is `None` when no answer came).
pub(crate) fn record_commit(group: &str, ok: bool, elapsed: Option<Duration>) {
    if ok {
        metrics::counter!(GROUP_COMMITS_TOTAL, "group" => group.to_owned(), "outcome" => "ok").increment(1);
    } else {
        metrics::counter!(GROUP_COMMITS_TOTAL, "group" => group.to_owned(), "outcome" => "error").increment(1);
    }
    if let Some(elapsed) = elapsed {
        metrics::histogram!(GROUP_COMMIT_DURATION_SECONDS, "group" => group.to_owned()).record(elapsed.as_secs_f64());
    }
}

pub(crate) fn record_heartbeat(group: &str, elapsed: Duration) {
    metrics::histogram!(GROUP_HEARTBEAT_DURATION_SECONDS, "group" => group.to_owned()).record(elapsed.as_secs_f64());
}

/// A member joined a new epoch or generation under `protocol` (`consumer`, `classic`).
pub(crate) fn record_rebalance(group: &str, protocol: &'static str) {
    metrics::counter!(GROUP_REBALANCES_TOTAL, "group" => group.to_owned(), "protocol" => protocol).increment(1);
}

pub(crate) fn record_assignment_change(group: &str, assigned: usize, revoked: usize, lost: usize) {
    let group = || group.to_owned();
    if assigned > 0 {
        metrics::counter!(GROUP_PARTITIONS_ASSIGNED_TOTAL, "group" => group()).increment(assigned as u64);
    }
    if revoked > 0 {
        metrics::counter!(GROUP_PARTITIONS_REVOKED_TOTAL, "group" => group()).increment(revoked as u64);
    }
    if lost > 0 {
        metrics::counter!(GROUP_PARTITIONS_LOST_TOTAL, "group" => group()).increment(lost as u64);
    }
}

pub(crate) fn record_owned(group: &str, partitions: usize) {
    metrics::gauge!(GROUP_OWNED_PARTITIONS, "group" => group.to_owned()).set(partitions as f64);
}
