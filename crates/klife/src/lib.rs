//! # klife
//!
//! A Kafka client for Rust. This is the facade crate: it holds the [`Client`] and
//! re-exports what users of the layers underneath need.
//!
//! ## Contract
//!
//! - [`Client::builder`] configures and connects; the client bootstraps from any
//!   broker, keeps the cluster metadata fresh, and reconnects with backoff.
//! - Every fallible call returns [`Error`]: one opaque type whose predicates say what
//!   happened (retriable, timeout, connection, TLS, authentication, unknown topic,
//!   unsupported version, a fenced producer, an aborted transaction, an invalid
//!   setting, ...), whose `Display` tells what to fix, and whose
//!   `source()` leads to the layer's own error and the broker's error code.
//! - `produce`, `produce_async` and `produce_batch` go through a default producer
//!   (idempotent, per-broker batching; see [`ProducerConfig`]); [`Client::producer`]
//!   makes producers with other settings.
//! - `fetch`, `fetch_many`, `fetch_async` and `fetch_stream` go through a default
//!   fetcher (per-broker batched Fetch requests, read_committed by default; see
//!   [`FetcherConfig`]); [`ClientBuilder::fetcher`] adds named ones, and
//!   [`Client::consumer`] keeps consuming assigned partitions.
//! - Admin basics retry retriable broker errors (refreshing metadata when the error
//!   says leadership or the controller moved) a bounded number of times.
//!
//! ## Cargo features
//!
//! | feature | default | what it switches on |
//! | --- | --- | --- |
//! | `tls` | yes | TLS through rustls with the ring provider: `TlsConfig`, `ClientBuilder::tls` |
//! | `gzip` | yes | gzip record batches (pure Rust) |
//! | `snappy` | yes | snappy record batches (pure Rust) |
//! | `lz4` | yes | lz4 record batches (pure Rust) |
//! | `zstd` | yes | zstd record batches (builds the vendored C zstd library) |
//!
//! Features compose: `default-features = false` builds neither rustls, ring nor the C
//! zstd library, and each feature brings only its own code. What needs a codec the
//! build lacks fails when it is asked for, with an error that names the feature: a
//! producer configured with it is refused ([`Error::is_invalid_argument`]), and a
//! fetched batch compressed with it is an error for its partition
//! ([`Error::is_compression_disabled`]); the other partitions are delivered.
//!
//! ## Example
//!
//! ```no_run
//! use klife::{Client, OffsetSpec, ProducerRecord};
//!
//! # async fn run() -> Result<(), klife::Error> {
//! let client = Client::builder().bootstrap_servers(["127.0.0.1:9092"]).build().await?;
//! client.create_topic("orders", 6).await?;
//! let offsets = client.list_offsets(&[("orders", 0, OffsetSpec::Latest)]).await?;
//! println!("orders-0 ends at {}", offsets[0].as_ref().map(|o| o.offset).unwrap_or(-1));
//! let cluster = client.describe_cluster().await?;
//! println!("{} brokers, controller {}", cluster.brokers.len(), cluster.controller_id);
//!
//! let written = client.produce(ProducerRecord::new("orders", "v").with_key("customer-42")).await?;
//! println!("written at {}-{} offset {}", written.topic, written.partition, written.offset);
//!
//! let fetched = client.fetch("orders", written.partition, written.offset).await?;
//! assert_eq!(fetched.records[0].value.as_deref(), Some(&b"v"[..]));
//! # Ok(())
//! # }
//! ```

mod admin;
mod client;
mod error;

pub use admin::{BrokerDescription, ClusterDescription, NewTopic, Reassignment};
pub use client::{Client, ClientBuilder};
pub use error::Error;

#[doc(inline)]
pub use klife_connection::ConnectionConfig;
#[doc(inline)]
pub use klife_fetcher::{
    BatchInfo, Consumer, FetchOptions, FetchStream, Fetched, Fetcher, FetcherConfig, IsolationLevel, ListedOffset,
    OffsetReset, OffsetSpec, Record, StartOffset, TopicPartitionOffset,
};
#[doc(inline)]
pub use klife_producer::{
    Acks, DeliveryFuture, Producer, ProducerConfig, ProducerRecord, RecordMetadata, TransactionError, TransactionPool,
    TransactionalProducer,
};

#[doc(inline)]
pub use klife_connection::sasl::SaslConfig;
#[cfg(feature = "tls")]
#[doc(inline)]
pub use klife_connection::tls::TlsConfig;
/// Producer internals: partitioners, the accumulator.
pub use klife_producer as producer;

/// Fetcher internals: the request planner, partition decoding, metric names.
pub use klife_fetcher as fetcher;

/// The connection layer, for users who send requests themselves.
pub use klife_connection as connection;
/// The wire codec, for users who need messages klife does not wrap.
pub use klife_protocol as protocol;
