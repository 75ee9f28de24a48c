//! Metric names recorded by the fetcher, through the `metrics` facade.
//!
//! | name | kind | labels | meaning |
//! |---|---|---|---|
//! | `klife_fetch_requests_total` | counter | `version` | Fetch requests answered, by the version they went at (17 at most; 12 at most when a topic of the request has no id) |
//! | `klife_fetch_partitions_per_request` | histogram | | partitions in each Fetch request |
//! | `klife_fetch_request_duration_seconds` | histogram | | time from sending a Fetch to its decoded answer |
//! | `klife_fetch_records_total` | counter | | records returned to callers |
//! | `klife_fetch_retries_total` | counter | | fetches retried after a retriable failure |
//! | `klife_fetch_log_truncations_total` | counter | | fetches that found the log truncated under their position ([`FetchError::LogTruncated`](crate::FetchError::LogTruncated)), whatever the caller then did |
//! | `klife_fetch_incremental_requests_total` | counter | | incremental Fetch requests of a fetch session answered (a waiting lane's, on brokers that grant sessions) |
//! | `klife_fetch_session_resets_total` | counter | | answers of a waiting lane's fetch session that were not read (a session error, or an answer out of step with the session): its fetches are asked again in a full request |
//!
//! Each answer's high watermark reaches the caller in [`Fetched::high_watermark`](crate::Fetched::high_watermark)
//! ([`Fetched::lag`](crate::Fetched::lag)): a consumer group turns it into its
//! `klife_group_lag` gauge. Each Fetch request is a `klife.request` span of
//! `klife_connection` (`api = "Fetch"`).
//!
//! Tracing, under the `klife_fetcher` target: retries and truncations found are logged
//! at `debug`; a [`Consumer`](crate::Consumer)'s reaction to a truncation (going on from
//! where the logs part, or stopping the partition) and to a re-created topic at `warn`.

use std::time::Duration;

/// Counter: Fetch requests answered, by `version`.
pub const FETCH_REQUESTS_TOTAL: &str = "klife_fetch_requests_total";
/// Histogram: partitions in each Fetch request.
pub const FETCH_PARTITIONS_PER_REQUEST: &str = "klife_fetch_partitions_per_request";
/// Histogram: seconds from sending a Fetch request to its decoded answer.
pub const FETCH_REQUEST_DURATION_SECONDS: &str = "klife_fetch_request_duration_seconds";
/// Counter: records returned to callers.
pub const FETCH_RECORDS_TOTAL: &str = "klife_fetch_records_total";
/// Counter: fetches retried.
pub const FETCH_RETRIES_TOTAL: &str = "klife_fetch_retries_total";
/// Counter: fetches that found the log truncated under their position.
pub const FETCH_LOG_TRUNCATIONS_TOTAL: &str = "klife_fetch_log_truncations_total";
/// Counter: incremental Fetch requests answered.
pub const FETCH_INCREMENTAL_REQUESTS_TOTAL: &str = "klife_fetch_incremental_requests_total";
/// Counter: fetch session answers not read, whose fetches go again in a full request.
pub const FETCH_SESSION_RESETS_TOTAL: &str = "klife_fetch_session_resets_total";

/// Every metric name above, for checks that they are documented.
pub const NAMES: &[&str] = &[
    FETCH_REQUESTS_TOTAL,
    FETCH_PARTITIONS_PER_REQUEST,
    FETCH_REQUEST_DURATION_SECONDS,
    FETCH_RECORDS_TOTAL,
    FETCH_RETRIES_TOTAL,
    FETCH_LOG_TRUNCATIONS_TOTAL,
    FETCH_INCREMENTAL_REQUESTS_TOTAL,
    FETCH_SESSION_RESETS_TOTAL,
];

pub(crate) fn record_request(version: i16, partitions: usize, elapsed: Duration) {
    metrics::counter!(FETCH_REQUESTS_TOTAL, "version" => version_label(version)).increment(1);
    metrics::histogram!(FETCH_PARTITIONS_PER_REQUEST).record(partitions as f64);
    metrics::histogram!(FETCH_REQUEST_DURATION_SECONDS).record(elapsed.as_secs_f64());
}

pub(crate) fn record_records(n: usize) {
    metrics::counter!(FETCH_RECORDS_TOTAL).increment(n as u64);
}

pub(crate) fn record_retry() {
    metrics::counter!(FETCH_RETRIES_TOTAL).increment(1);
}

pub(crate) fn record_truncation() {
    metrics::counter!(FETCH_LOG_TRUNCATIONS_TOTAL).increment(1);
}

pub(crate) fn record_incremental_request() {
    metrics::counter!(FETCH_INCREMENTAL_REQUESTS_TOTAL).increment(1);
}

pub(crate) fn record_session_reset() {
    metrics::counter!(FETCH_SESSION_RESETS_TOTAL).increment(1);
}

/// The `version` label: a static string for every version klife sends.
fn version_label(version: i16) -> &'static str {
    const LABELS: [&str; 18] =
        ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "10", "11", "12", "13", "14", "15", "16", "17"];
    usize::try_from(version).ok().and_then(|v| LABELS.get(v)).copied().unwrap_or("other")
}
