//! Where a record goes: which producer pulls its partition, which processor handles
//! it, and which batcher groups it, chosen by a hash that is the same in every run,
//! build and process.
//!
//! Every record of a partition is pulled by one producer (in offset order) and handled
//! by one processor, whatever the batch key, so records of one partition reach the
//! batchers in offset order. The [`BatchKey`] then decides how batches group them:
//!
//! - [`BatchKey::Partition`] (the default): a batch holds one partition's records, a
//!   contiguous range of its offsets.
//! - Coarser keys, [`BatchKey::Topic`] and [`BatchKey::Single`], pack several
//!   partitions into one batch. Each partition still goes to one batcher and its
//!   records keep their order inside and across the batches of a key; a batch
//!   interleaves partitions.
//! - A finer key, [`BatchKey::Custom`] (a sub-partition key, such as a message type or
//!   a user id), splits one partition across batches that fill and time out
//!   independently, possibly on different batchers: **per-partition order is given
//!   up**; only the order within each custom key remains.
//!
//! Offsets are committed correctly under every key: the
//! [`AckTracker`](crate::ack::AckTracker) commits a partition's contiguous
//! acknowledged prefix whatever order the batches finish in.

use std::num::NonZeroUsize;
use std::sync::Arc;

use klife_connection::hash::{Fnv1a, fnv1a};
use klife_protocol::TopicPartition;

/// The stable hash of a partition: 64-bit FNV-1a over the topic name's UTF-8 bytes
/// followed by the partition index as 4 big-endian bytes. The same in every run, build
/// and process (unlike std's randomly seeded hasher), and the same as the fetcher uses
/// to spread partitions over its slots.
///
/// ```
/// use klife_connection::hash::fnv1a;
/// use klife_pipeline::route::partition_hash;
/// use klife_protocol::TopicPartition;
///
/// assert_eq!(partition_hash(&TopicPartition::new("orders", 3)), fnv1a(b"orders\0\0\0\x03"));
/// ```
pub fn partition_hash(partition: &TopicPartition) -> u64 {
    let mut h = Fnv1a::new();
    h.write(partition.topic.as_bytes());
    h.write(&partition.partition.to_be_bytes());
    h.finish()
}

/// How a message is grouped into batches; see the [module docs](self) for what each
/// key keeps of the partitions' order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BatchKey {
    /// One batch stream per partition (the default): each batch is a contiguous range
    /// of one partition's offsets.
    Partition(TopicPartition),
    /// One batch stream per topic: coarser, keeps per-partition order.
    Topic(Arc<str>),
    /// One batch stream for everything: coarsest, keeps per-partition order, and
    /// always on batcher 0.
    Single,
    /// A key of the application's: finer than a partition when several keys share a
    /// partition, which gives up per-partition order (each key keeps its own).
    Custom(Arc<str>),
}

impl BatchKey {
    /// The default key of a record of `partition`.
    pub fn partition(partition: &TopicPartition) -> BatchKey {
        BatchKey::Partition(partition.clone())
    }

    /// The stable hash the batcher is chosen by: [`partition_hash`] for a partition,
    /// 64-bit FNV-1a of the UTF-8 bytes for a topic or a custom key, 0 for
    /// [`Single`](Self::Single).
    pub fn stable_hash(&self) -> u64 {
        match self {
            BatchKey::Partition(tp) => partition_hash(tp),
            BatchKey::Topic(name) | BatchKey::Custom(name) => fnv1a(name.as_bytes()),
            BatchKey::Single => 0,
        }
    }
}

/// A stage's count was 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RouteError {
    /// A pipeline pulls with at least one producer.
    #[error("the pipeline needs at least one producer")]
    NoProducers,
    /// A pipeline handles messages with at least one processor.
    #[error("the pipeline needs at least one processor")]
    NoProcessors,
    /// A batcher runs at least one batch stage.
    #[error("a batcher needs a concurrency of at least one")]
    NoBatchers,
}

/// The counts of a pipeline's stages and the choice of each record's stage in each:
/// `hash % count`, with the stable hashes of [`partition_hash`] and
/// [`BatchKey::stable_hash`].
///
/// Producer, processor and (with the default key) batcher are all chosen by the same
/// partition hash: with equal counts, a partition's records stay on stages of the same
/// index. A pipeline with several named batchers uses one router per batcher (with
/// that batcher's concurrency) or [`Router::with_batchers`].
///
/// ```
/// use klife_pipeline::route::{BatchKey, Router};
/// use klife_protocol::TopicPartition;
///
/// let router = Router::new(2, 8, 4)?;
/// let tp = TopicPartition::new("orders", 3);
/// let producer = router.producer_for(&tp);
/// assert!(router.owns(producer, &tp));
/// assert!(router.processor_for(&tp) < 8);
/// assert_eq!(router.batcher_for(&BatchKey::Single), 0);
/// # Ok::<(), klife_pipeline::route::RouteError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Router {
    producers: NonZeroUsize,
    processors: NonZeroUsize,
    batchers: NonZeroUsize,
}

impl Router {
    /// A router over `producers` producers, `processors` processors and `batchers`
    /// batch stages.
    ///
    /// # Errors
    ///
    /// A [`RouteError`] naming the first count that is 0.
    pub fn new(producers: usize, processors: usize, batchers: usize) -> Result<Router, RouteError> {
        Ok(Router {
            producers: NonZeroUsize::new(producers).ok_or(RouteError::NoProducers)?,
            processors: NonZeroUsize::new(processors).ok_or(RouteError::NoProcessors)?,
            batchers: NonZeroUsize::new(batchers).ok_or(RouteError::NoBatchers)?,
        })
    }

    /// The same router with another number of batch stages (another named batcher).
    ///
    /// # Errors
    ///
    /// [`RouteError::NoBatchers`] when `batchers` is 0.
    pub fn with_batchers(self, batchers: usize) -> Result<Router, RouteError> {
        Ok(Router { batchers: NonZeroUsize::new(batchers).ok_or(RouteError::NoBatchers)?, ..self })
    }

    /// The number of producers.
    pub fn producers(&self) -> usize {
        self.producers.get()
    }

    /// The number of processors.
    pub fn processors(&self) -> usize {
        self.processors.get()
    }

    /// The number of batch stages.
    pub fn batchers(&self) -> usize {
        self.batchers.get()
    }

    /// The producer (in `0..producers`) that pulls `partition`: each assigned partition
    /// is pulled by exactly one producer; producers beyond the partitions stay idle.
    pub fn producer_for(&self, partition: &TopicPartition) -> usize {
        index(partition_hash(partition), self.producers)
    }

    /// Whether producer `producer` pulls `partition`.
    pub fn owns(&self, producer: usize, partition: &TopicPartition) -> bool {
        self.producer_for(partition) == producer
    }

    /// The partitions among `assigned` that producer `producer` pulls, in their order.
    pub fn owned_by<'a, I>(&self, producer: usize, assigned: I) -> Vec<TopicPartition>
    where
        I: IntoIterator<Item = &'a TopicPartition>,
    {
        assigned.into_iter().filter(|tp| self.owns(producer, tp)).cloned().collect()
    }

    /// The processor (in `0..processors`) that handles every record of `partition`,
    /// whatever its batch key.
    pub fn processor_for(&self, partition: &TopicPartition) -> usize {
        index(partition_hash(partition), self.processors)
    }

    /// The batch stage (in `0..batchers`) that groups messages of `key`.
    pub fn batcher_for(&self, key: &BatchKey) -> usize {
        index(key.stable_hash(), self.batchers)
    }
}

fn index(hash: u64, count: NonZeroUsize) -> usize {
    // `usize` is at most 64 bits on every supported target, and the remainder is below
    // `count`, so both conversions are lossless.
    (hash % count.get() as u64) as usize
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn zero_counts_are_refused() {
        assert_eq!(Router::new(0, 1, 1), Err(RouteError::NoProducers));
        assert_eq!(Router::new(1, 0, 1), Err(RouteError::NoProcessors));
        assert_eq!(Router::new(1, 1, 0), Err(RouteError::NoBatchers));
        let r = Router::new(1, 1, 1).expect("valid");
        assert_eq!(r.with_batchers(0), Err(RouteError::NoBatchers));
        assert_eq!(r.with_batchers(3).map(|r| r.batchers()), Ok(3));
    }

    #[test]
    fn the_hash_is_pinned() {
        // Choices must not change between releases: members of one deployment may run
        // different builds. These values are FNV-1a of the documented byte strings.
        let tp = TopicPartition::new("orders", 3);
        assert_eq!(partition_hash(&tp), fnv1a(b"orders\x00\x00\x00\x03"));
        assert_eq!(partition_hash(&TopicPartition::new("", 0)), fnv1a(&[0, 0, 0, 0]));
        assert_eq!(partition_hash(&TopicPartition::new("a", -1)), fnv1a(b"a\xff\xff\xff\xff"));
        assert_eq!(BatchKey::Topic("orders".into()).stable_hash(), fnv1a(b"orders"));
        assert_eq!(BatchKey::Custom("user-1".into()).stable_hash(), fnv1a(b"user-1"));
        assert_eq!(BatchKey::Single.stable_hash(), 0);
        assert_eq!(BatchKey::partition(&tp).stable_hash(), partition_hash(&tp));
        let r = Router::new(7, 7, 7).expect("valid");
        let expected = (fnv1a(b"orders\x00\x00\x00\x03") % 7) as usize;
        assert_eq!((r.producer_for(&tp), r.processor_for(&tp)), (expected, expected));
    }

    #[test]
    fn single_goes_to_batcher_zero() {
        for n in 1..10 {
            assert_eq!(Router::new(1, 1, n).expect("valid").batcher_for(&BatchKey::Single), 0);
        }
    }

    #[test]
    fn a_topic_key_keeps_each_partition_on_one_batcher() {
        let r = Router::new(1, 4, 4).expect("valid");
        let key = BatchKey::Topic("orders".into());
        let stages: BTreeSet<usize> = (0..32).map(|_| r.batcher_for(&key)).collect();
        assert_eq!(stages.len(), 1);
    }

    #[test]
    fn partitions_spread_over_producers() {
        let r = Router::new(4, 1, 1).expect("valid");
        let assigned: Vec<TopicPartition> = (0..64).map(|p| TopicPartition::new("orders", p)).collect();
        let shares: Vec<Vec<TopicPartition>> = (0..4).map(|i| r.owned_by(i, &assigned)).collect();
        assert!(shares.iter().all(|s| !s.is_empty()), "64 partitions reach all 4 producers: {shares:?}");
        assert_eq!(shares.iter().map(Vec::len).sum::<usize>(), 64);
    }

    proptest! {
        /// Each partition is owned by exactly one producer, in range, and the choice
        /// depends on nothing but the partition and the count.
        #[test]
        fn each_partition_has_exactly_one_producer(
            topic in "[a-z.-]{0,12}",
            partition in any::<i32>(),
            producers in 1usize..17,
            processors in 1usize..17,
        ) {
            let tp = TopicPartition::new(topic.as_str(), partition);
            let r = Router::new(producers, processors, 1)?;
            let owners: Vec<usize> = (0..producers).filter(|i| r.owns(*i, &tp)).collect();
            prop_assert_eq!(owners, vec![r.producer_for(&tp)]);
            prop_assert!(r.processor_for(&tp) < processors);
            let again = Router::new(producers, processors, 1)?;
            prop_assert_eq!(again.producer_for(&TopicPartition::new(topic.as_str(), partition)), r.producer_for(&tp));
        }
    }
}
