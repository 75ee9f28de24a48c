//! Fetcher settings.

use std::time::Duration;

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
    /// that is asked again at once.
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

impl FetcherConfig {
    /// Checks the settings: sizes and counts must be positive and fit the wire's
    /// `int32` fields.
    pub fn validate(&self) -> Result<(), String> {
        let positive_i32 = |what: &str, v: usize| {
            if v == 0 || i32::try_from(v).is_err() {
                Err(format!("{what} must be between 1 and {}, not {v}", i32::MAX))
            } else {
                Ok(())
            }
        };
        positive_i32("max_bytes_per_request", self.max_bytes_per_request)?;
        positive_i32("partition_max_bytes", self.partition_max_bytes)?;
        positive_i32("min_bytes", self.min_bytes)?;
        if self.max_in_flight == 0 {
            return Err("max_in_flight must be at least 1".into());
        }
        if self.batchers_per_broker == 0 {
            return Err("batchers_per_broker must be at least 1".into());
        }
        if i32::try_from(self.max_wait.as_millis()).is_err() {
            return Err(format!("max_wait is too long: {:?}", self.max_wait));
        }
        if self.fetch_timeout.is_zero() {
            return Err("fetch_timeout must be positive".into());
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
    pub fn isolation_level(mut self, level: IsolationLevel) -> Self {
        self.isolation_level = Some(level);
        self
    }

    /// Sets the bytes to ask for from the partition.
    pub fn max_bytes(mut self, bytes: usize) -> Self {
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
        let bad = FetcherConfig { partition_max_bytes: 0, ..FetcherConfig::default() };
        assert!(bad.validate().unwrap_err().contains("partition_max_bytes"));
        let bad = FetcherConfig { max_bytes_per_request: usize::MAX, ..FetcherConfig::default() };
        assert!(bad.validate().unwrap_err().contains("max_bytes_per_request"));
        let bad = FetcherConfig { batchers_per_broker: 0, ..FetcherConfig::default() };
        assert!(bad.validate().unwrap_err().contains("batchers_per_broker"));
        let bad = FetcherConfig { max_in_flight: 0, ..FetcherConfig::default() };
        assert!(bad.validate().unwrap_err().contains("max_in_flight"));
    }
}
