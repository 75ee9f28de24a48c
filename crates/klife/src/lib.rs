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
//! - `produce`, `produce_async` and `produce_batch` go through the default producer
//!   (idempotent, per-broker batching; see [`ProducerConfig`]) or the named producer
//!   configured for the record's topic ([`ClientBuilder::named_producer`],
//!   [`ClientBuilder::topic_producer`]); [`Client::new_producer`] makes producers with
//!   other settings. [`Client::warm_up`] creates the client's producers ahead of the
//!   first record.
//! - `fetch`, `fetch_many`, `fetch_async` and `fetch_stream` go through the default
//!   fetcher (per-broker batched Fetch requests, read_committed by default; see
//!   [`FetcherConfig`]); [`ClientBuilder::named_fetcher`] adds named ones, and
//!   [`Client::consumer`] keeps consuming assigned partitions or whole topics.
//! - Admin basics ([`Client::create_topics`], [`Client::partitions`],
//!   [`Client::list_offsets`], ...) retry retriable broker errors (refreshing metadata
//!   when the error says leadership or the controller moved) within the client's retry
//!   policy.
//! - [`Client::close`] flushes and closes; what dropping a client without it does is
//!   written at [`Client`].
//!
//! ## Configuration
//!
//! Settings are values configured with chained `with_*` methods from their defaults,
//! each returning the value (the fields stay public for reading):
//!
//! ```
//! use std::time::Duration;
//! use klife::{Acks, FetchOptions, FetcherConfig, IsolationLevel, NewTopic, ProducerConfig};
//!
//! let bulk = ProducerConfig::default().with_linger(Duration::from_millis(20)).with_acks(Acks::Leader);
//! let backfill = FetcherConfig::default().with_max_bytes_per_request(100 << 20);
//! let options = FetchOptions::new().with_isolation_level(IsolationLevel::ReadUncommitted);
//! let topic = NewTopic::new("orders", 6).with_replication_factor(3).with_config("retention.ms", "3600000");
//! # drop((bulk, backfill, options, topic));
//! ```
//!
//! The same holds for [`ConnectionConfig`], `TlsConfig`,
//! [`Consumer`] (`with_offset_reset`, `with_prefetch`, `with_max_wait`,
//! `with_partition_eof`) and the request types of [`protocol`]. The one builder is
//! [`ClientBuilder`], since building a client connects: its methods are named after
//! what they set (`bootstrap_servers`, `request_timeout`, `default_producer`, ...).
//!
//! A whole client (connection, producers, topics, fetchers, transaction pools, consumer
//! groups) can also come from one TOML file: [`config::ClientConfig::from_file`] and
//! [`Client::from_config`] (feature `config`).
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
//! | `config` | yes | configuration files: `config::ClientConfig` (serde, toml), `Client::from_config` |
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
//! use klife::{Client, OffsetSpec, ProducerRecord, StartOffset};
//!
//! # async fn run() -> Result<(), klife::Error> {
//! let client = Client::builder().bootstrap_servers(["127.0.0.1:9092"]).build().await?;
//! client.create_topic("orders", 6).await?;
//! client.warm_up().await?;
//! for p in client.partitions("orders").await? {
//!     println!("orders-{} led by {:?}, replicas {:?}", p.partition(), p.leader, p.replicas);
//! }
//! let offsets = client.list_offsets([(("orders", 0).into(), OffsetSpec::Latest)]).await?;
//! println!("orders-0 ends at {:?}", offsets[0].offset());
//! let cluster = client.describe_cluster().await?;
//! println!("{} brokers, controller {}", cluster.brokers.len(), cluster.controller_id);
//!
//! let written = client.produce(ProducerRecord::new("orders", "v").with_key("customer-42")).await?;
//! println!("written at {}-{} offset {}", written.topic, written.partition, written.offset);
//!
//! let fetched = client.fetch("orders", written.partition, written.offset).await?;
//! assert_eq!(fetched.records[0].value.as_deref(), Some(&b"v"[..]));
//!
//! let mut consumer = client.consumer(klife::FetchOptions::new()).with_partition_eof(true);
//! consumer.assign_topic("orders", StartOffset::Earliest).await?;
//! while let Some(event) = consumer.next_event().await {
//!     match event {
//!         klife::ConsumerEvent::Records(f) => println!("{} records of {}-{}", f.records.len(), f.topic, f.partition),
//!         klife::ConsumerEvent::PartitionEof { partition, .. } => println!("caught up on {partition}"),
//!         klife::ConsumerEvent::Error(e) => return Err(e.into()),
//!         _ => {}
//!     }
//! }
//! # Ok(())
//! # }
//! ```

mod admin;
mod client;
#[cfg(feature = "config")]
pub mod config;
mod error;
pub mod exactly_once;
pub mod group;
mod group_admin;
pub mod pipeline;

pub use admin::{
    BrokerDescription, ClusterDescription, ListedOffsets, NewTopic, PartitionDescription, PartitionOffset, Reassignment,
};
pub use client::{Client, ClientBuilder};
pub use error::Error;
pub use group_admin::{
    GroupDescription, GroupListing, GroupMember, GroupState, GroupType, PartitionLag, PlannedReset, ResetPlan,
    ResetScope, ResetTo,
};

// Shared types.
/// The compression codec of record batches.
#[doc(inline)]
pub use klife_protocol::Compression;
/// A topic id.
#[doc(inline)]
pub use klife_protocol::Uuid;
/// A record header, and how a record's timestamp was set.
#[doc(inline)]
pub use klife_protocol::records::{Header, TimestampType};
#[doc(inline)]
pub use klife_protocol::{GroupMetadata, ProducerIdAndEpoch, TopicPartition, TopicPartitionOffset};

// Connecting.
#[doc(inline)]
pub use klife_connection::sasl::{OAuthToken, SaslConfig, TokenFuture, TokenProvider};
#[cfg(feature = "tls")]
#[doc(inline)]
pub use klife_connection::tls::TlsConfig;
#[doc(inline)]
pub use klife_connection::{
    BrokerInfo, Cluster, ConfigError, ConfigProblem, Connection, ConnectionConfig, CoordinatorType, Metadata,
    PartitionInfo, RetryPolicy, Target, TopicInfo,
};

// Producing.
#[doc(inline)]
pub use klife_producer::partitioner::{DefaultPartitioner, FnPartitioner, Partitioner, RoundRobinPartitioner};
#[doc(inline)]
pub use klife_producer::{
    Acks, AttemptError, DeliveryFuture, ProduceError, Producer, ProducerConfig, ProducerRecord, RecordMetadata,
    TransactionError, TransactionOperation, TransactionPool, TransactionState, TransactionalProducer,
};

// Fetching and consuming.
#[doc(inline)]
pub use klife_fetcher::{
    BatchInfo, Consumer, ConsumerEvent, FetchError, FetchHandle, FetchOptions, FetchResult, FetchStream, Fetched,
    Fetcher, FetcherConfig, IsolationLevel, ListedOffset, OffsetReset, OffsetSpec, Record, StartOffset,
};

/// The wire codec, for users who need messages klife does not wrap (send them with
/// the cluster view of [`Client::cluster`]).
pub use klife_protocol as protocol;
