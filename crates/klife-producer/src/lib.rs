//! # klife-producer
//!
//! The producer side of klife: [`Producer`] sends records to Kafka, batched per broker;
//! [`TransactionPool`] adds transactions. Its building blocks are sans-io and usable
//! alone: the [`accumulator`] (batches under a memory bound) and the [`partitioner`]s
//! (which partition a record goes to). Most applications use it through the `klife`
//! crate's `Client`.
//!
//! ## The producer's contract
//!
//! - **Per-broker batching.** Each broker's ready partitions go out together, one
//!   batch each, in one Produce request per batcher (`batchers_per_broker`, default
//!   1). Each batcher has a connection of its own and up to
//!   `max_in_flight_per_broker` requests in flight; while they are all out, records
//!   keep filling the waiting batches.
//! - **Outcomes.** [`Producer::produce`] returns the written record's partition, offset
//!   and timestamp, or a [`ProduceError`]; [`Producer::produce_async`] returns a
//!   [`DeliveryFuture`] to await or drop (the record is sent either way). Batch calls
//!   return one outcome per record, in input order. Records of one batch share their
//!   outcome; a failure never affects other batches.
//! - **Order.** Records of one partition are written in the order they were produced,
//!   retries included.
//! - **Idempotence** (default on). The producer gets a producer id and numbers its
//!   batches. A resent batch the broker already has is not written again. Sequence
//!   errors are repaired with a new producer id, except where that could write a batch
//!   twice: then the batch fails with [`ProduceError::OutcomeUnknown`] rather than risk
//!   a duplicate. Up to `max_in_flight_per_partition` batches of a partition are in
//!   flight at once.
//! - **Retries.** Retriable failures (leader moves, timeouts, broken connections, a
//!   broker down) are retried after `retry_backoff`, until `delivery_timeout` has passed
//!   since the record was produced: then [`ProduceError::DeliveryTimeout`], whose
//!   source is the last attempt's failure ([`AttemptError`]). A batch over the broker's size limit (the topic's `max.message.bytes`,
//!   which the producer does not know) is split in halves that are sent again in its
//!   place, down to single records: only a record too large by itself fails, with
//!   [`ProduceError::Broker`] and code MESSAGE_TOO_LARGE. Other broker errors fail the
//!   batch at once ([`ProduceError::Broker`], with the code).
//! - **Memory bound.** Batches hold at most `buffer_memory` bytes: their records and
//!   the room allocated past them (a new batch preallocates less when the buffer is
//!   short), so that a producer writing to many partitions stays within it. When it is
//!   full, `produce` waits for room (up to the delivery timeout) and
//!   [`Producer::try_produce`] fails at once with [`ProduceError::BufferFull`].
//! - **Bad input** fails only the record concerned, before anything is sent:
//!   [`ProduceError::UnknownTopic`], [`ProduceError::InvalidPartition`],
//!   [`ProduceError::RecordTooLarge`]; after [`Producer::close`],
//!   [`ProduceError::Closed`].
//! - **Flush and close.** [`Producer::flush`] sends everything buffered and waits for
//!   every outcome; [`Producer::close`] flushes, then refuses new records.
//! - **Settings** are checked when a producer is made: an invalid one is
//!   [`ProduceError::Config`], a [`ConfigError`] naming the settings struct, the field
//!   and the problem ([`ConfigProblem`]).
//! - **Transactions** ([`TransactionalProducer`]). A call the transaction's state does
//!   not allow (`begin` twice, `produce`, `commit` or `abort` with no transaction open)
//!   is [`ProduceError::TransactionState`], naming the [`TransactionOperation`] and the
//!   [`TransactionState`]; the producer still works. A commit after a failure in the
//!   transaction (a record, a partition that could not be added, offsets that could
//!   not be sent) aborts instead: [`ProduceError::TransactionAborted`], with that
//!   failure as its source, so records never commit without their offsets. A commit
//!   or abort that got no answer is [`ProduceError::TransactionOutcomeUnknown`]: the
//!   transaction is still open on this side, and the same call again finds out. When
//!   a newer producer with the same transactional id took over, or the epoch is
//!   stale, the producer is [`ProduceError::Fenced`] (with its producer id and
//!   epoch): that call and every later one fail so, and nothing retries it.
//! - **Dropped without close.** When the last clone of a [`Producer`] (or of a
//!   [`TransactionalProducer`]) goes without [`Producer::close`], records still
//!   buffered fail with [`ProduceError::Closed`] (their futures resolve), requests in
//!   flight settle their records, and the producer's tasks end and let go of the
//!   cluster. Call `close` (or `flush`) first to send what is buffered.
//! - **Telemetry.** The `metrics` names and tracing events are listed in [`telemetry`].
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
//! Each turns on the codec of the same name in `klife-protocol`. A producer configured
//! with a codec this build lacks is refused when it is made: [`ProduceError::Config`]
//! with [`ConfigProblem::CodecDisabled`] for the `compression` field. TLS is
//! `klife-connection`'s `tls` feature.
//!
//! ## Example
//!
//! ```
//! use klife_connection::{Cluster, ConnectionConfig};
//! use klife_producer::{Producer, ProducerConfig, ProducerRecord, ProduceError};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // An in-process cluster stands in for Kafka here.
//! let kafka = klife_testkit::FakeCluster::builder().topic("orders", 3).start().await?;
//! let cluster = Cluster::connect(&kafka.addresses(), ConnectionConfig::default()).await?;
//! let producer = Producer::new(cluster, ProducerConfig::default()).await?;
//!
//! // Records with the same key go to the same partition, in order.
//! let first = producer.produce(ProducerRecord::new("orders", "created").with_key("order-7")).await?;
//! let second = producer.produce(ProducerRecord::new("orders", "paid").with_key("order-7")).await?;
//! assert_eq!(first.partition, second.partition);
//! assert_eq!(second.offset, first.offset + 1);
//!
//! // One outcome per record, in input order; a bad record fails alone.
//! let outcomes = producer
//!     .produce_batch(vec![
//!         ProducerRecord::new("orders", "shipped").with_key("order-7"),
//!         ProducerRecord::new("orders", "lost").with_partition(9),
//!     ])
//!     .await;
//! assert!(outcomes[0].is_ok());
//! assert!(matches!(outcomes[1], Err(ProduceError::InvalidPartition { .. })));
//!
//! producer.close().await;
//! assert!(matches!(producer.produce(ProducerRecord::new("orders", "late")).await, Err(ProduceError::Closed)));
//! # kafka.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! ## Accumulation
//!
//! [`accumulator::Accumulator`] holds the records of every partition in batches being
//! filled: sealed at `batch_size`, ready when full or after `linger`, drained into
//! finished batch bytes stamped with the producer's id, epoch and sequence, under a
//! `buffer_memory` bound that refuses records (handing their tokens back) until
//! completed batches are released. Order within a partition is kept.
//!
//! ## Partitioners
//!
//! [`partitioner`] decides which partition of a topic a record goes to.
//!
//! - [`partitioner::murmur2`] is bit for bit the Java client's `Utils.murmur2`, and
//!   [`partitioner::murmur2_partition`] is its keyed choice
//!   (`(murmur2(key) & 0x7fffffff) % partitions`): a keyed record lands on the partition
//!   the Java client, and librdkafka with `partitioner=murmur2_random`, would pick, so
//!   applications in several languages share one key-to-partition mapping.
//! - [`partitioner::DefaultPartitioner`] hashes keyed records with murmur2 and sends
//!   keyless records to one *sticky* partition per topic (KIP-480) until
//!   [`Partitioner::on_new_batch`](partitioner::Partitioner::on_new_batch) says that
//!   partition's batch is done; then it moves to another partition, at random. Inside a
//!   [`Producer`], keyless records of the default partitioner are placed by the
//!   producer itself ([`Partitioner::builtin_sticky`](partitioner::Partitioner::builtin_sticky)),
//!   as the Java client's built-in partitioner does (KIP-794): the record that would
//!   start a new batch on the sticky partition goes to the next one instead.
//! - [`partitioner::RoundRobinPartitioner`] cycles through the partitions, ignoring keys;
//!   [`partitioner::FnPartitioner`] wraps a closure for any other rule.
//! - Partitioners never panic. A partition count of zero or less has no valid answer:
//!   the built-in partitioners then return
//!   [`UNKNOWN_PARTITION`](partitioner::UNKNOWN_PARTITION). Every answer, built-in or
//!   custom, is checked with [`partitioner::check_partition`], which rejects a
//!   partition outside `0..partitions` with a typed
//!   [`InvalidPartition`](partitioner::InvalidPartition) error.
//! - The partitioners are `Send + Sync` and can be shared as
//!   `Arc<dyn Partitioner>`; once a topic has been seen, choosing a partition does not
//!   allocate.
//!
//! ## Example: partitioners
//!
//! ```
//! use klife_producer::partitioner::{DefaultPartitioner, Partitioner, check_partition, murmur2_partition};
//!
//! let partitioner = DefaultPartitioner::new();
//!
//! // A keyed record goes where the Java client would put it.
//! let keyed = partitioner.partition("orders", Some(b"customer-42"), Some(b"v"), 6);
//! assert_eq!(keyed, murmur2_partition(b"customer-42", 6));
//!
//! // Keyless records stick to one partition...
//! let sticky = partitioner.partition("orders", None, Some(b"v"), 6);
//! assert_eq!(partitioner.partition("orders", None, Some(b"v"), 6), sticky);
//!
//! // ...until its batch is sent or full: then they move to another one.
//! partitioner.on_new_batch("orders", 6, sticky);
//! let next = partitioner.partition("orders", None, Some(b"v"), 6);
//! assert_ne!(next, sticky);
//!
//! // Every answer is checked against the partition count.
//! assert_eq!(check_partition(next, 6), Ok(next));
//! let err = check_partition(6, 6).unwrap_err();
//! assert_eq!(err.to_string(), "partition 6 is out of range: the topic has 6 partitions, valid partitions are 0 to 5");
//! ```

pub mod accumulator;
mod config;
mod delivery;
mod error;
mod hash;
pub mod partitioner;
mod producer;
mod record;
pub mod telemetry;
pub mod transaction;

pub use config::{Acks, MAX_IN_FLIGHT_PER_PARTITION, ProducerConfig};
pub use delivery::DeliveryFuture;
pub use error::{AttemptError, ProduceError, TransactionOperation, TransactionState};
pub use klife_connection::{ConfigError, ConfigProblem};
pub use klife_protocol::{GroupMetadata, ProducerIdAndEpoch, TopicPartition, TopicPartitionOffset};
pub use producer::Producer;
pub use record::{ProducerRecord, RecordMetadata};
pub use transaction::{TransactionError, TransactionPool, TransactionalProducer};
