//! # klife-fetcher
//!
//! The consume side of klife without consumer groups: fetch records from partitions
//! you name, look offsets up, or keep consuming assigned partitions.
//!
//! ## Contract
//!
//! - A [`Fetcher`] routes every fetch to its partition's leader. Per broker,
//!   `batchers_per_broker` batcher tasks put the fetches waiting for that broker into
//!   shared Fetch requests: while requests are out, new fetches wait and leave
//!   together. A request never asks for more than `max_bytes_per_request` in total, so
//!   every partition in it is answered in full; a partition appears once per request
//!   (a second fetch of it goes into the next one).
//! - Fetches use connections of their own, apart from produce and admin requests:
//!   fetches that may wait for records (`max_wait`) share one, a request at a time;
//!   a [`Consumer`]'s fetches of partitions with records waiting are answered at once
//!   and pipelined (`max_in_flight`) on another, so an idle partition's long poll
//!   never delays a busy one.
//! - Each fetch resolves to one `Result<`[`Fetched`]`, `[`FetchError`]`>`:
//!   [`Fetcher::fetch`] and [`Fetcher::fetch_many`] await it, [`Fetcher::fetch_async`]
//!   returns a handle, [`Fetcher::fetch_stream`] yields results as they arrive. The
//!   other partitions of a request are delivered whatever happens to one of them.
//! - [`Record`]s keep everything the batch says: key, value, headers (order and
//!   duplicates kept), timestamp and its type, leader epoch, producer and codec.
//!   Values of uncompressed batches are slices of the response buffer, not copies.
//! - [`IsolationLevel::ReadCommitted`] (the default) hides control batches and the
//!   records of aborted transactions on the client, from the aborted-transaction list
//!   and the last stable offset, whatever the broker does; [`Fetched::next_offset`]
//!   moves past them, so fetching from it never stalls.
//! - Retriable failures (a leader that moved, a broker restart, stale metadata) are
//!   retried with backoff until `fetch_timeout`. A missing topic or partition, a
//!   negative or out-of-range offset (reported with the valid range), a corrupt batch
//!   (records before it are still delivered) and broker errors that retrying cannot
//!   cure are typed [`FetchError`]s. Decoding never panics and caps every length
//!   before allocating.
//! - A position ([`TopicPartitionOffset`]) may carry the leader epoch of the last batch
//!   read before it and the topic's id; [`Fetched::next_position`] carries both on. A
//!   fetch from such a position fails with [`FetchError::LogTruncated`] when an unclean
//!   leader election cut the log under it (saying where the logs part), and with
//!   [`FetchError::TopicRecreated`] when the topic was deleted and created again,
//!   rather than read records that do not follow the ones read.
//! - [`Consumer`] keeps fetching assigned partitions from where each answer ended,
//!   with bounded prefetch; it resets out-of-range positions by policy, goes on from
//!   where the logs part after a truncation (or stops the partition, with
//!   [`OffsetReset::Error`]), and stops a partition whose topic was created again.
//!   Its `next`, `next_event` and `receive` (answers taken in while the caller is busy,
//!   so fetching goes on) are cancel-safe.
//! - Metrics and tracing names are listed in [`telemetry`].
//!
//! ## Versions and leader epochs
//!
//! Fetch versions 4 to 17 are used, the highest the broker has: from v13 topics are
//! named by their id from the metadata, and a request in which some topic has no id (a
//! broker or Metadata version without ids) goes at v12 at most, by name. From v9 each
//! partition names the leader epoch the metadata knows (KIP-320): a broker with a newer
//! one answers FENCED_LEADER_EPOCH (the metadata is refreshed and the fetch retried),
//! one with an older one UNKNOWN_LEADER_EPOCH (the fetch is retried after a pause). From
//! v12 it also names the epoch of the last batch read (`last_fetched_epoch`), which lets
//! the leader find truncations; below v12 they go unnoticed. The rules are sans-io, in
//! [`position`]. Brokers older than Kafka 0.11 are refused with a clear error. The
//! requests that wait for records use incremental fetch sessions (KIP-227, v7+) where
//! the broker grants them, so that many caught-up partitions cost little per request
//! ([`FetcherConfig::fetch_sessions`]); the requests answered at once are full.
//!
//! ## Cargo features
//!
//! | feature | default | what it switches on |
//! | --- | --- | --- |
//! | `gzip` | yes | gzip record batches (pure Rust) |
//! | `snappy` | yes | snappy record batches (pure Rust) |
//! | `lz4` | yes | lz4 record batches (pure Rust) |
//! | `zstd` | yes | zstd record batches (builds the vendored C zstd library) |
//!
//! Each turns on the codec of the same name in `klife-protocol`. A batch compressed
//! with a codec this build lacks fails its partition's fetch with
//! [`FetchError::Corrupt`], whose source is
//! [`DecodeError::CompressionDisabled`](klife_protocol::DecodeError::CompressionDisabled)
//! naming the feature; the records before it are still delivered. TLS is
//! `klife-connection`'s `tls` feature.
//!
//! ## Example
//!
//! ```no_run
//! use klife_connection::{Cluster, ConnectionConfig};
//! use klife_fetcher::{Consumer, FetchOptions, Fetcher, FetcherConfig, OffsetSpec, IsolationLevel, StartOffset, TopicPartition};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let cluster = Cluster::connect(&["127.0.0.1:9092"], ConnectionConfig::default()).await?;
//! let fetcher = Fetcher::new(cluster, FetcherConfig::default())?;
//!
//! // One partition, from offset 42.
//! let fetched = fetcher.fetch("orders", 0, 42).await?;
//! for record in &fetched.records {
//!     println!("{}: {:?}", record.offset, record.value);
//! }
//! println!("next: {}, high watermark: {}", fetched.next_offset, fetched.high_watermark);
//!
//! // Several partitions in one request per broker.
//! let results = fetcher.fetch_many([("orders", 0, 0), ("orders", 1, 0)], &FetchOptions::new()).await;
//! for (target, result) in results {
//!     println!("{target}: {} records", result?.records.len());
//! }
//!
//! // Offsets.
//! let latest = [(TopicPartition::new("orders", 0), OffsetSpec::Latest)];
//! let end = fetcher.list_offsets(&latest, IsolationLevel::ReadCommitted).await;
//! println!("orders-0 ends at {}", end[0].as_ref().map(|o| o.offset).unwrap_or(-1));
//!
//! // Keep consuming two partitions from their start.
//! let mut consumer = Consumer::new(fetcher.clone(), FetchOptions::new());
//! consumer.assign(&[("orders", 0, StartOffset::Earliest), ("orders", 1, StartOffset::Earliest)]).await?;
//! while let Some(answer) = consumer.next().await {
//!     let fetched = answer?;
//!     println!("{}-{}: {} records", fetched.topic, fetched.partition, fetched.records.len());
//! }
//! # Ok(())
//! # }
//! ```

mod config;
mod consumer;
pub mod decode;
mod error;
mod fetcher;
mod offsets;
pub mod plan;
pub mod position;
mod record;
#[allow(dead_code)] // not wired into the fetcher yet: see the module's documentation
mod session;
mod stream;
pub mod telemetry;

pub use config::{FetchOptions, FetcherConfig, IsolationLevel};
pub use consumer::{Consumer, ConsumerEvent, OffsetReset, StartOffset};
pub use error::FetchError;
pub use fetcher::{FetchHandle, Fetcher};
pub use klife_protocol::TopicPartition;
pub use offsets::{ListedOffset, OffsetSpec};
pub use record::{BatchInfo, Fetched, Record, TopicPartitionOffset};
pub use stream::{FetchResult, FetchStream};

/// A topic id (re-exported from the codec).
pub use klife_protocol::Uuid;
/// Header of a record (re-exported from the codec).
pub use klife_protocol::records::{Header, TimestampType};
