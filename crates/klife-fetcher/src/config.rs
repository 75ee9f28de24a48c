//! Fetcher settings.

use std::time::Duration;

use klife_connection::{ConfigError, ConfigProblem};

/// Which records a fetch may return from transactions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub enum IsolationLevel {
    /// Every record, including those of open and aborted transactions
    /// (`read_uncommitted`).
    ReadUncommitted,
    /// Only records of committed transactions and non-transactional records, up to the
    /// last stable offset (`read_committed`, the default). Records of aborted
    /// transactions are removed by the client from the aborted-transaction list the
    /// broker sends, so brokers that leave them in are still filtered.
    #[default]
    ReadCommitted,
}

impl IsolationLevel {
    /// The wire value (0 or 1).
    pub fn code(self) -> i8 {
        match self {
            IsolationLevel::ReadUncommitted => 0,
            IsolationLevel::ReadCommitted => 1,
        }
    }
}

/// Settings of a fetcher.
///
/// A fetcher owns, per broker, `batchers_per_broker` batcher tasks; every fetch of a
/// partition that broker leads goes through one of them (chosen by topic and
/// partition), and a batcher puts all the fetches waiting in it into as few Fetch
/// requests as the limits below allow.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct FetcherConfig {
    /// Most bytes one Fetch request may ask for (default 50 MiB). The partitions of a
    /// request answered at once together never ask for more, so every partition in it
    /// is answered in full: fetches beyond the limit go into the next request. The
    /// partitions that wait for records (caught up) all go into one request per broker,
    /// whose answer the broker keeps within this limit; a partition it leaves out for
    /// that, or cuts short in the middle of a batch, is asked again at once.
    pub max_bytes_per_request: usize,
    /// Bytes asked for per partition when the call does not say (default 1 MiB). The
    /// broker still returns a whole first batch when it is larger (KIP-74).
    pub partition_max_bytes: usize,
    /// How long the broker may wait for `min_bytes` to arrive (default 500 ms). Only
    /// fetches of partitions the broker last said were caught up wait; the others are
    /// answered at once.
    pub max_wait: Duration,
    /// Bytes the broker waits for before answering, up to `max_wait` (default 1).
    pub min_bytes: usize,
    /// Fetch requests answered at once in flight per batcher (default 2). While they
    /// are all in flight, new fetches wait in the batcher and go out together. Every
    /// fetch is first answered at once; one whose partition the broker then says is
    /// caught up (nothing read), and a consumer's fetches of caught-up partitions, may
    /// wait for records (`max_wait`): those go one request at a time on a connection of
    /// their own, since a broker answers a connection's requests in order.
    pub max_in_flight: usize,
    /// How long a batcher waits, after its first fetch arrives, for more to share a
    /// request (default 0: fetches go out at once, and batch up only while requests
    /// are in flight).
    pub linger: Duration,
    /// Batcher tasks per broker (default 1). Partitions are spread over them by
    /// topic and partition, each with its own `max_in_flight`.
    pub batchers_per_broker: usize,
    /// How long one fetch may take, retries included, before it fails with
    /// [`FetchError::Timeout`](crate::FetchError::Timeout) (default 30 s). Each
    /// request's own timeout is the connection's.
    pub fetch_timeout: Duration,
    /// Pause before retrying a retriable failure (default 100 ms, growing to 1 s).
    pub retry_backoff: Duration,
    /// Isolation level when the call does not say (default read_committed).
    pub isolation_level: IsolationLevel,
    /// Whether to check each batch's CRC (default on).
    pub check_crcs: bool,
    /// Most bytes one compressed batch may inflate to (default 128 MiB); a larger one
    /// fails as corrupt instead of exhausting memory.
    pub max_decompressed_size: usize,
    /// Whether the requests that wait for records use incremental fetch sessions
    /// (KIP-227, Fetch v7 and later; default on). With a session, each batcher's waiting
    /// requests list only the partitions whose fetch changed since the last one and
    /// forget those no longer waiting, and the broker answers only the partitions with
    /// news: with many caught-up partitions, requests and answers stay small. Requests
    /// answered at once never use sessions. A broker that grants none (session id 0)
    /// gets full requests; switch this off for one that grants sessions but mishandles
    /// them.
    pub fetch_sessions: bool,
}

impl Default for FetcherConfig {
    fn default() -> Self {
        FetcherConfig {
            max_bytes_per_request: 50 * 1024 * 1024,
            partition_max_bytes: 1024 * 1024,
            max_wait: Duration::from_millis(500),
            min_bytes: 1,
            max_in_flight: 2,
            linger: Duration::ZERO,
            batchers_per_broker: 1,
            fetch_timeout: Duration::from_secs(30),
            retry_backoff: Duration::from_millis(100),
            isolation_level: IsolationLevel::ReadCommitted,
            check_crcs: true,
            max_decompressed_size: klife_protocol::records::DEFAULT_MAX_DECOMPRESSED_SIZE,
            fetch_sessions: true,
        }
    }
}

// Chained setters: `FetcherConfig::default().with_x(..).with_y(..)`, one per field.
klife_connection::with_setters! {
    FetcherConfig {
        with_max_bytes_per_request => max_bytes_per_request: usize,
        with_partition_max_bytes => partition_max_bytes: usize,
        with_max_wait => max_wait: Duration,
        with_min_bytes => min_bytes: usize,
        with_max_in_flight => max_in_flight: usize,
        with_linger => linger: Duration,
        with_batchers_per_broker => batchers_per_broker: usize,
        with_fetch_timeout => fetch_timeout: Duration,
        with_retry_backoff => retry_backoff: Duration,
        with_isolation_level => isolation_level: IsolationLevel,
        with_check_crcs => check_crcs: bool,
        with_max_decompressed_size => max_decompressed_size: usize,
        with_fetch_sessions => fetch_sessions: bool,
    }
}

impl FetcherConfig {
    /// Checks the settings, naming the first that cannot work: sizes and counts must be
    /// positive and fit the wire's `int32` fields.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, problem| Err(ConfigError::new("FetcherConfig", field, problem));
        // Sizes go on the wire as an i32.
        let sizes = [
            ("max_bytes_per_request", self.max_bytes_per_request),
            ("partition_max_bytes", self.partition_max_bytes),
            ("min_bytes", self.min_bytes),
        ];
        for (field, value) in sizes {
            if value == 0 || i32::try_from(value).is_err() {
                return bad(field, ConfigProblem::OutOfRange { min: 1, max: i32::MAX as u64, value: value as u64 });
            }
        }
        if self.max_in_flight == 0 {
            return bad("max_in_flight", ConfigProblem::Zero);
        }
        if self.batchers_per_broker == 0 {
            return bad("batchers_per_broker", ConfigProblem::Zero);
        }
        // In milliseconds, as an i32 on the wire.
        let max_wait_ms = u64::try_from(self.max_wait.as_millis()).unwrap_or(u64::MAX);
        if max_wait_ms > i32::MAX as u64 {
            return bad("max_wait", ConfigProblem::OutOfRange { min: 0, max: i32::MAX as u64, value: max_wait_ms });
        }
        if self.fetch_timeout.is_zero() {
            return bad("fetch_timeout", ConfigProblem::Zero);
        }
        Ok(())
    }
}

/// Per-call settings of a fetch; unset fields take the fetcher's.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct FetchOptions {
    /// Isolation level for this fetch.
    pub isolation_level: Option<IsolationLevel>,
    /// Bytes to ask for from this partition.
    pub max_bytes: Option<usize>,
}

impl FetchOptions {
    /// Options that take every setting from the fetcher.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the isolation level.
    #[must_use]
    pub fn with_isolation_level(mut self, level: IsolationLevel) -> Self {
        self.isolation_level = Some(level);
        self
    }

    /// Sets the bytes to ask for from the partition.
    #[must_use]
    pub fn with_max_bytes(mut self, bytes: usize) -> Self {
        self.max_bytes = Some(bytes);
        self
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_are_named() {
        assert_eq!(FetcherConfig::default().validate(), Ok(()));
        let invalid = |config: FetcherConfig| config.validate().expect_err("an invalid setting");
        let e = invalid(FetcherConfig { partition_max_bytes: 0, ..FetcherConfig::default() });
        assert_eq!((e.config, e.field), ("FetcherConfig", "partition_max_bytes"));
        assert_eq!(e.problem, ConfigProblem::OutOfRange { min: 1, max: i32::MAX as u64, value: 0 });
        let e = invalid(FetcherConfig { max_bytes_per_request: usize::MAX, ..FetcherConfig::default() });
        assert_eq!(e.field, "max_bytes_per_request");
        let e = invalid(FetcherConfig { batchers_per_broker: 0, ..FetcherConfig::default() });
        assert_eq!((e.field, &e.problem), ("batchers_per_broker", &ConfigProblem::Zero));
        let e = invalid(FetcherConfig { max_in_flight: 0, ..FetcherConfig::default() });
        assert_eq!(e.to_string(), "invalid setting FetcherConfig.max_in_flight: must be above zero");
        let e = invalid(FetcherConfig { max_wait: Duration::from_secs(1 << 40), ..FetcherConfig::default() });
        assert_eq!(e.field, "max_wait");
        let e = invalid(FetcherConfig { fetch_timeout: Duration::ZERO, ..FetcherConfig::default() });
        assert_eq!((e.field, &e.problem), ("fetch_timeout", &ConfigProblem::Zero));
    }
}
