//! # klife-producer
//!
//! The producer side of klife. This crate is sans-io: nothing here opens a connection,
//! spawns a task or reads a clock.
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
//! ## Example
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
pub use error::ProduceError;
pub use producer::{Producer, verify_batch};
pub use record::{ProducerRecord, RecordMetadata};
pub use transaction::{TransactionError, TransactionPool, TransactionalProducer};
