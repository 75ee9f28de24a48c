//! Metric names recorded by the connection layer, through the `metrics` facade.
//!
//! The application installs a recorder (Prometheus, StatsD, ...); without one these
//! cost next to nothing. Names and labels are part of klife's documented contract.
//!
//! | name | kind | labels | meaning |
//! |---|---|---|---|
//! | `klife_requests_total` | counter | `api`, `outcome` (`ok`/`error`) | requests answered or failed |
//! | `klife_request_duration_seconds` | histogram | `api` | time from sending to the decoded answer |
//! | `klife_bytes_sent_total` | counter | | bytes written to brokers |
//! | `klife_bytes_received_total` | counter | | bytes read from brokers |
//! | `klife_connections_opened_total` | counter | | connections established (after handshakes) |
//! | `klife_connection_errors_total` | counter | `stage` (`connect`/`tls`/`api_versions`/`sasl`) | failed connection attempts |
//! | `klife_metadata_refreshes_total` | counter | `outcome` (`ok`/`error`) | metadata refreshes |
//! | `klife_retries_total` | counter | `api`, `action` (`refresh_metadata`/`find_coordinator`/`backoff`), `decision` (`retry`/`give_up`) | calls sent again by the retry rule, and calls it gave up on when time or attempts ran out |
//!
//! Tracing: connection events are emitted at `debug` (opened, closed, reconnect
//! backoff, a call retried) and `warn` (authentication failures, disabled hostname verification)
//! under the `klife_connection` target.

use std::time::Duration;

use klife_protocol::ApiKey;

/// Counter: requests answered or failed, by `api` and `outcome`.
pub const REQUESTS_TOTAL: &str = "klife_requests_total";
/// Histogram: seconds from sending a request to its decoded answer, by `api`.
pub const REQUEST_DURATION_SECONDS: &str = "klife_request_duration_seconds";
/// Counter: bytes written to brokers.
pub const BYTES_SENT_TOTAL: &str = "klife_bytes_sent_total";
/// Counter: bytes read from brokers.
pub const BYTES_RECEIVED_TOTAL: &str = "klife_bytes_received_total";
/// Counter: connections established.
pub const CONNECTIONS_OPENED_TOTAL: &str = "klife_connections_opened_total";
/// Counter: failed connection attempts, by `stage`.
pub const CONNECTION_ERRORS_TOTAL: &str = "klife_connection_errors_total";
/// Counter: metadata refreshes, by `outcome`.
pub const METADATA_REFRESHES_TOTAL: &str = "klife_metadata_refreshes_total";
/// Counter: calls the retry rule sent again or gave up on, by `api`, `action` and
/// `decision`.
pub const RETRIES_TOTAL: &str = "klife_retries_total";

pub(crate) fn record_request(api: ApiKey, elapsed: Duration, ok: bool) {
    let outcome = if ok { "ok" } else { "error" };
    metrics::counter!(REQUESTS_TOTAL, "api" => api.name(), "outcome" => outcome).increment(1);
    metrics::histogram!(REQUEST_DURATION_SECONDS, "api" => api.name()).record(elapsed.as_secs_f64());
}

pub(crate) fn record_bytes_sent(n: usize) {
    metrics::counter!(BYTES_SENT_TOTAL).increment(n as u64);
}

pub(crate) fn record_bytes_received(n: usize) {
    metrics::counter!(BYTES_RECEIVED_TOTAL).increment(n as u64);
}

pub(crate) fn record_connection_opened() {
    metrics::counter!(CONNECTIONS_OPENED_TOTAL).increment(1);
}

pub(crate) fn record_connection_error(stage: &'static str) {
    metrics::counter!(CONNECTION_ERRORS_TOTAL, "stage" => stage).increment(1);
}

pub(crate) fn record_metadata_refresh(ok: bool) {
    metrics::counter!(METADATA_REFRESHES_TOTAL, "outcome" => if ok { "ok" } else { "error" }).increment(1);
}

pub(crate) fn record_retry(api: ApiKey, action: &'static str, exhausted: bool) {
    let decision = if exhausted { "give_up" } else { "retry" };
    metrics::counter!(RETRIES_TOTAL, "api" => api.name(), "action" => action, "decision" => decision).increment(1);
}
