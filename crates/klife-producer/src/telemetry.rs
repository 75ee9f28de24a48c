//! Metric names recorded by the producer, through the `metrics` facade. Nothing is
//! recorded per record: counters are added to once per batch or request.
//!
//! | name | kind | labels | meaning |
//! |---|---|---|---|
//! | `klife_produce_requests_total` | counter | `outcome`: `ok`, `error` | Produce requests sent, by how they ended (`ok`: answered, whatever the answer says; `error`: no answer, e.g. a broken connection) |
//! | `klife_produce_request_duration_seconds` | histogram | | time from queueing a Produce request to its answer |
//! | `klife_produce_batches_per_request` | histogram | | record batches (one per partition) in each Produce request |
//! | `klife_produce_batch_records` | histogram | | records in each batch sent |
//! | `klife_produce_batch_bytes` | histogram | | encoded size of each batch sent |
//! | `klife_produce_records_total` | counter | `outcome`: `ok`, `error` | records settled, by outcome (`ok`: written) |
//! | `klife_produce_batch_retries_total` | counter | `error`: the error code's name | batches to be sent again after a retriable failure; the two halves of a split batch count here with `MESSAGE_TOO_LARGE` (or `RECORD_LIST_TOO_LARGE`) |
//! | `klife_produce_batch_splits_total` | counter | | batches split in two because the broker refused them as too large |
//! | `klife_produce_producer_id_resets_total` | counter | | producer ids replaced after a sequence error |
//! | `klife_produce_buffer_full_total` | counter | `action`: `waited`, `refused` | records that found `buffer_memory` full: waited for room, or refused (`try_produce`, or the delivery timeout passed) |
//!
//! Tracing, under the `klife_producer` target: batch retries and splits at `debug`, producer id
//! resets at `info`, failed resets at `warn`.

use std::time::Duration;

use klife_protocol::ErrorCode;

/// Counter: Produce requests sent, labelled `outcome` (`ok`: answered, `error`: not).
pub const PRODUCE_REQUESTS_TOTAL: &str = "klife_produce_requests_total";
/// Histogram: seconds from queueing a Produce request to its answer.
pub const PRODUCE_REQUEST_DURATION_SECONDS: &str = "klife_produce_request_duration_seconds";
/// Histogram: record batches in each Produce request.
pub const PRODUCE_BATCHES_PER_REQUEST: &str = "klife_produce_batches_per_request";
/// Histogram: records in each batch sent.
pub const PRODUCE_BATCH_RECORDS: &str = "klife_produce_batch_records";
/// Histogram: encoded bytes of each batch sent.
pub const PRODUCE_BATCH_BYTES: &str = "klife_produce_batch_bytes";
/// Counter: records settled, labelled `outcome` (`ok`: written, `error`: failed).
pub const PRODUCE_RECORDS_TOTAL: &str = "klife_produce_records_total";
/// Counter: batches to be sent again, labelled `error` (the error code's name).
pub const PRODUCE_BATCH_RETRIES_TOTAL: &str = "klife_produce_batch_retries_total";
/// Counter: batches split in two because the broker refused them as too large.
pub const PRODUCE_BATCH_SPLITS_TOTAL: &str = "klife_produce_batch_splits_total";
/// Counter: producer ids replaced after a sequence error.
pub const PRODUCE_PRODUCER_ID_RESETS_TOTAL: &str = "klife_produce_producer_id_resets_total";
/// Counter: records that found the buffer full, labelled `action` (`waited`, `refused`).
pub const PRODUCE_BUFFER_FULL_TOTAL: &str = "klife_produce_buffer_full_total";

/// A Produce request queued with these batches (their record counts and sizes).
pub(crate) fn record_request_sent(batches: impl Iterator<Item = (i32, usize)>) {
    let mut n = 0u32;
    for (records, bytes) in batches {
        n += 1;
        metrics::histogram!(PRODUCE_BATCH_RECORDS).record(f64::from(records));
        metrics::histogram!(PRODUCE_BATCH_BYTES).record(bytes as f64);
    }
    metrics::histogram!(PRODUCE_BATCHES_PER_REQUEST).record(f64::from(n));
}

/// A Produce request's answer came after `elapsed` (`None`: it did not come).
pub(crate) fn record_request_done(elapsed: Option<Duration>) {
    match elapsed {
        Some(e) => {
            metrics::counter!(PRODUCE_REQUESTS_TOTAL, "outcome" => "ok").increment(1);
            metrics::histogram!(PRODUCE_REQUEST_DURATION_SECONDS).record(e.as_secs_f64());
        }
        None => metrics::counter!(PRODUCE_REQUESTS_TOTAL, "outcome" => "error").increment(1),
    }
}

/// Records settled: `written` of them written, `failed` failed for good.
pub(crate) fn record_settled(written: u64, failed: u64) {
    if written > 0 {
        metrics::counter!(PRODUCE_RECORDS_TOTAL, "outcome" => "ok").increment(written);
    }
    if failed > 0 {
        metrics::counter!(PRODUCE_RECORDS_TOTAL, "outcome" => "error").increment(failed);
    }
}

pub(crate) fn record_retry(code: ErrorCode) {
    metrics::counter!(PRODUCE_BATCH_RETRIES_TOTAL, "error" => code.name()).increment(1);
}

pub(crate) fn record_split() {
    metrics::counter!(PRODUCE_BATCH_SPLITS_TOTAL).increment(1);
}

pub(crate) fn record_producer_id_reset() {
    metrics::counter!(PRODUCE_PRODUCER_ID_RESETS_TOTAL).increment(1);
}

pub(crate) fn record_buffer_full(waited: bool) {
    metrics::counter!(PRODUCE_BUFFER_FULL_TOTAL, "action" => if waited { "waited" } else { "refused" }).increment(1);
}
