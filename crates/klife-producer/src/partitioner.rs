//! Choosing the partition of a record: Java-compatible murmur2, KIP-480 sticky
//! partitioning, round robin, and custom rules.
//!
//! A [`Partitioner`] is asked for a partition with the topic's current partition count.
//! Its answer is checked with [`check_partition`] before the record is accepted: a
//! partition outside `0..partitions` is rejected with [`InvalidPartition`], never
//! wrapped around or clamped.

use std::fmt;
use std::sync::RwLock;
use std::sync::atomic::{AtomicI32, AtomicU32, Ordering};

use klife_connection::sync::{read, write};

use crate::hash::FastMap;

/// The answer of the built-in partitioners when the partition count is zero or less,
/// so that no partition is valid (the value the Java client uses for an unknown
/// partition). [`check_partition`] rejects it.
pub const UNKNOWN_PARTITION: i32 = -1;

/// Kafka's murmur2 hash, exactly as the Java client's `Utils.murmur2` computes it.
///
/// MurmurHash2 (32-bit) with seed `0x9747b28c`, reading the data in little-endian 4-byte
/// words; the result is the hash's bits as an `i32`, like Java's `int`. The Java client
/// and librdkafka's `murmur2` / `murmur2_random` partitioners hash keys with it.
///
/// ```
/// use klife_producer::partitioner::murmur2;
///
/// assert_eq!(murmur2(b"21"), -973_932_308);
/// assert_eq!(murmur2(b"foobar"), -790_332_482);
/// ```
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;

    // Java arrays are shorter than 2^31 bytes; longer data keeps the length's low bits.
    let mut h = SEED ^ (data.len() as u32);

    let mut words = data.chunks_exact(4);
    for word in &mut words {
        let mut k = u32::from_le_bytes([word[0], word[1], word[2], word[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }

    // The last 1 to 3 bytes, byte i shifted left by 8 * i, then one multiplication.
    let tail = words.remainder();
    if !tail.is_empty() {
        for (i, &byte) in tail.iter().enumerate() {
            h ^= u32::from(byte) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }

    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

/// Clears the sign bit: `n & 0x7fffffff`, the Java client's `Utils.toPositive`.
///
/// Unlike `abs`, it maps `i32::MIN` to 0 instead of overflowing.
pub const fn to_positive(n: i32) -> i32 {
    n & 0x7fff_ffff
}

/// The partition the Java client's default partitioner gives a keyed record:
/// `to_positive(murmur2(key)) % partitions`.
///
/// Returns [`UNKNOWN_PARTITION`] when `partitions` is zero or less (no partition is
/// valid then; [`check_partition`] rejects it).
///
/// ```
/// use klife_producer::partitioner::murmur2_partition;
///
/// assert_eq!(murmur2_partition(b"abc", 6), 3);
/// assert_eq!(murmur2_partition(b"abc", 32), 27);
/// ```
pub fn murmur2_partition(key: &[u8], partitions: i32) -> i32 {
    if partitions <= 0 {
        return UNKNOWN_PARTITION;
    }
    to_positive(murmur2(key)) % partitions
}

/// A partition that is not one of the topic's partitions.
///
/// A partitioner (usually a custom one) answered `partition` for a topic with
/// `partitions` partitions, and only `0..partitions` is valid. This is the caller's
/// error: the record is rejected, it is never sent to another partition instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[error("partition {partition} is out of range: {}", ValidRange(*.partitions))]
pub struct InvalidPartition {
    /// The partition the partitioner chose.
    pub partition: i32,
    /// The topic's partition count.
    pub partitions: i32,
}

/// The valid partitions for a partition count, for [`InvalidPartition`]'s message.
struct ValidRange(i32);

impl fmt::Display for ValidRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            n if n <= 0 => write!(f, "the topic has no partitions (partition count {n}), no partition is valid"),
            1 => write!(f, "the topic has 1 partition, the only valid partition is 0"),
            n => write!(f, "the topic has {n} partitions, valid partitions are 0 to {}", n - 1),
        }
    }
}

/// Checks a partitioner's answer: `Ok(partition)` when it is in `0..partitions`,
/// otherwise [`InvalidPartition`]. Every partition count of zero or less is an error.
///
/// ```
/// use klife_producer::partitioner::{InvalidPartition, check_partition};
///
/// assert_eq!(check_partition(5, 6), Ok(5));
/// assert_eq!(check_partition(-1, 6), Err(InvalidPartition { partition: -1, partitions: 6 }));
/// assert!(check_partition(0, 0).is_err());
/// ```
pub fn check_partition(partition: i32, partitions: i32) -> Result<i32, InvalidPartition> {
    if partitions > 0 && (0..partitions).contains(&partition) {
        Ok(partition)
    } else {
        Err(InvalidPartition { partition, partitions })
    }
}

/// Chooses the partition of each record.
///
/// The producer calls [`partition`](Partitioner::partition) once per record with the
/// topic's current partition count, checks the answer with [`check_partition`] (an
/// answer outside `0..partitions` fails the record with [`InvalidPartition`]), and calls
/// [`on_new_batch`](Partitioner::on_new_batch) when the batch of a partition is sent or
/// full, so that sticky partitioners move on (KIP-480).
///
/// Implementations are shared between threads and called on the producer's hot path,
/// while the producer holds its lock: they should be cheap, must not block, and must
/// not call back into the producer. They should not panic either; a partition
/// count of zero or less has no valid answer, and the built-in partitioners return
/// [`UNKNOWN_PARTITION`] for it.
pub trait Partitioner: Send + Sync + fmt::Debug {
    /// The partition of a record of `topic` with this key and value, in
    /// `0..partitions`.
    fn partition(&self, topic: &str, key: Option<&[u8]>, value: Option<&[u8]>, partitions: i32) -> i32;

    /// The batch of partition `previous` of `topic` was sent or filled up, and the next
    /// record for it would start a new batch: a sticky partitioner whose current
    /// partition for `topic` is `previous` picks another one now. The default does
    /// nothing.
    fn on_new_batch(&self, topic: &str, partitions: i32, previous: i32) {
        let _ = (topic, partitions, previous);
    }

    /// Whether the producer may place keyless records (without an explicit partition)
    /// itself, on a sticky partition per topic (KIP-480), instead of calling
    /// [`partition`](Self::partition) and [`on_new_batch`](Self::on_new_batch) for
    /// them. The producer keeps that choice with its per-topic state, under the lock it
    /// holds anyway, and moves on as soon as a record would start a new batch on the
    /// sticky partition, so that the record goes to the next partition instead, as the
    /// Java client's built-in partitioner does (KIP-794). Records with a key still go
    /// through [`partition`](Self::partition); `on_new_batch` is then not called.
    ///
    /// [`DefaultPartitioner`] answers `true`; the default is `false`.
    fn builtin_sticky(&self) -> bool {
        false
    }
}

/// One value per topic. Looking up a known topic takes a shared lock and does not
/// allocate; only the first use of a topic takes the exclusive lock.
#[derive(Debug, Default)]
struct PerTopic<T> {
    topics: RwLock<FastMap<String, T>>,
}

impl<T> PerTopic<T> {
    /// Runs `f` on the topic's value, creating it with `init` on first use.
    fn with<R>(&self, topic: &str, init: impl FnOnce() -> T, f: impl FnOnce(&T) -> R) -> R {
        {
            let topics = read(&self.topics);
            if let Some(value) = topics.get(topic) {
                return f(value);
            }
        }
        let mut topics = write(&self.topics);
        let value = topics.entry(topic.to_owned()).or_insert_with(init);
        f(value)
    }

    /// Runs `f` on the topic's value if the topic has one.
    fn get<R>(&self, topic: &str, f: impl FnOnce(&T) -> R) -> Option<R> {
        let topics = read(&self.topics);
        topics.get(topic).map(f)
    }
}

/// A partition in `0..partitions` (which must be at least 1) other than `previous`
/// when there is one, uniformly at random.
pub(crate) fn random_partition_except(partitions: i32, previous: i32) -> i32 {
    if partitions <= 1 {
        return 0;
    }
    if (0..partitions).contains(&previous) {
        let p = fastrand::i32(0..partitions - 1);
        if p >= previous { p + 1 } else { p }
    } else {
        fastrand::i32(0..partitions)
    }
}

/// The sticky partition of each topic (KIP-480).
#[derive(Debug, Default)]
struct StickyPartitions {
    current: PerTopic<AtomicI32>,
}

impl StickyPartitions {
    /// The topic's sticky partition, chosen at random on first use (or when it is not
    /// valid for `partitions`).
    fn partition(&self, topic: &str, partitions: i32) -> i32 {
        if partitions <= 0 {
            return UNKNOWN_PARTITION;
        }
        self.current.with(
            topic,
            || AtomicI32::new(UNKNOWN_PARTITION),
            |current| {
                let seen = current.load(Ordering::Relaxed);
                if (0..partitions).contains(&seen) {
                    return seen;
                }
                let chosen = random_partition_except(partitions, seen);
                match current.compare_exchange(seen, chosen, Ordering::Relaxed, Ordering::Relaxed) {
                    Ok(_) => chosen,
                    // Another thread chose first: use its choice when it fits.
                    Err(other) if (0..partitions).contains(&other) => other,
                    Err(_) => chosen,
                }
            },
        )
    }

    /// Moves the topic's sticky partition off `previous`, if it is still there.
    fn on_new_batch(&self, topic: &str, partitions: i32, previous: i32) {
        if partitions <= 0 {
            return;
        }
        // A topic without a sticky partition gets one when a keyless record comes.
        self.current.get(topic, |current| {
            let seen = current.load(Ordering::Relaxed);
            if seen == previous || !(0..partitions).contains(&seen) {
                let next = random_partition_except(partitions, previous);
                // Losing the race means another thread already moved it: keep theirs.
                let _ = current.compare_exchange(seen, next, Ordering::Relaxed, Ordering::Relaxed);
            }
        });
    }
}

/// The Java client's default partitioning (before KIP-794): keyed records by murmur2,
/// keyless records to a sticky partition per topic (KIP-480).
///
/// - A record with a key (even an empty one) goes to [`murmur2_partition`]`(key,
///   partitions)`, the partition the Java client and librdkafka's `murmur2_random`
///   choose.
/// - Records without a key go to the topic's sticky partition, chosen at random the
///   first time. It stays the same until
///   [`on_new_batch`](Partitioner::on_new_batch) is called for it; then another
///   partition is chosen at random (when the topic has more than one), so keyless
///   records fill one batch at a time instead of many small ones.
///
/// The partition count comes with every call: a sticky partition that is no longer
/// valid for it is chosen again.
#[derive(Debug, Default)]
pub struct DefaultPartitioner {
    sticky: StickyPartitions,
}

impl DefaultPartitioner {
    /// A partitioner with no sticky partition chosen yet.
    pub fn new() -> DefaultPartitioner {
        DefaultPartitioner::default()
    }
}

impl Partitioner for DefaultPartitioner {
    fn partition(&self, topic: &str, key: Option<&[u8]>, _value: Option<&[u8]>, partitions: i32) -> i32 {
        match key {
            Some(key) => murmur2_partition(key, partitions),
            None => self.sticky.partition(topic, partitions),
        }
    }

    fn on_new_batch(&self, topic: &str, partitions: i32, previous: i32) {
        self.sticky.on_new_batch(topic, partitions, previous);
    }

    fn builtin_sticky(&self) -> bool {
        true
    }
}

/// Cycles through the partitions of each topic: 0, 1, ..., `partitions - 1`, 0, ...,
/// ignoring keys and values.
///
/// Each topic has its own counter, starting at partition 0. The counter is 32 bits
/// wide: after 2^32 records of one topic it starts over at 0, which skips part of a
/// cycle unless the partition count is a power of two.
#[derive(Debug, Default)]
pub struct RoundRobinPartitioner {
    counters: PerTopic<AtomicU32>,
}

impl RoundRobinPartitioner {
    /// A partitioner whose topics all start at partition 0.
    pub fn new() -> RoundRobinPartitioner {
        RoundRobinPartitioner::default()
    }
}

impl Partitioner for RoundRobinPartitioner {
    fn partition(&self, topic: &str, _key: Option<&[u8]>, _value: Option<&[u8]>, partitions: i32) -> i32 {
        if partitions <= 0 {
            return UNKNOWN_PARTITION;
        }
        let n = self.counters.with(topic, AtomicU32::default, |counter| counter.fetch_add(1, Ordering::Relaxed));
        // `partitions` is positive, so it fits in a u32 and the remainder fits in an i32.
        (n % partitions as u32) as i32
    }
}

/// A partitioner made of a closure `(topic, key, value, partitions) -> partition`, for
/// rules of one's own.
///
/// The closure must answer in `0..partitions`. Any other answer is the caller's error:
/// the producer rejects the record with [`InvalidPartition`] (see [`check_partition`])
/// rather than sending it elsewhere. It should not panic, and it is called on the
/// producer's hot path from several threads, so it should be cheap.
///
/// [`on_new_batch`](Partitioner::on_new_batch) does nothing.
///
/// ```
/// use klife_producer::partitioner::{FnPartitioner, Partitioner};
///
/// // Records keyed "audit-..." go to partition 0, the others spread by key length.
/// let partitioner = FnPartitioner::new(|_topic, key, _value, partitions| match key {
///     Some(key) if key.starts_with(b"audit-") => 0,
///     Some(key) => key.len() as i32 % partitions,
///     None => 0,
/// });
/// assert_eq!(partitioner.partition("events", Some(b"audit-1"), None, 4), 0);
/// assert_eq!(partitioner.partition("events", Some(b"abc"), None, 4), 3);
/// ```
pub struct FnPartitioner<F> {
    f: F,
}

impl<F> FnPartitioner<F>
where
    F: Fn(&str, Option<&[u8]>, Option<&[u8]>, i32) -> i32 + Send + Sync,
{
    /// Wraps `f`.
    pub fn new(f: F) -> FnPartitioner<F> {
        FnPartitioner { f }
    }
}

impl<F> fmt::Debug for FnPartitioner<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FnPartitioner").finish_non_exhaustive()
    }
}

impl<F> Partitioner for FnPartitioner<F>
where
    F: Fn(&str, Option<&[u8]>, Option<&[u8]>, i32) -> i32 + Send + Sync,
{
    fn partition(&self, topic: &str, key: Option<&[u8]>, value: Option<&[u8]>, partitions: i32) -> i32 {
        (self.f)(topic, key, value, partitions)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashSet;
    use std::sync::Arc;

    use proptest::prelude::*;

    use super::*;

    /// The Java client's `UtilsTest.testMurmur2`.
    const JAVA_VECTORS: [(&[u8], i32); 6] = [
        (b"21", -973_932_308),
        (b"foobar", -790_332_482),
        (b"a-little-bit-long-string", -985_981_536),
        (b"a-little-bit-longer-string", -1_486_304_829),
        (b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58_897_971),
        // A byte array rather than a string in the Java test.
        (b"abc", 479_470_107),
    ];

    /// librdkafka's `unittest_murmur2` (Java's results, as unsigned hex), covering every
    /// tail length and unaligned starts.
    const RDKAFKA_VECTORS: [(&[u8], u32); 11] = [
        (b"kafka", 0xd067_cf64),
        (b"giberish123456789", 0x8f55_2b0c),
        (b"1234", 0x9fc9_7b14),
        (b"234", 0xe7c0_09ca),
        (b"34", 0x8739_30da),
        (b"4", 0x5a4b_5ca1),
        (b"PreAmbleWillBeRemoved,ThePrePartThatIs", 0x7842_4f1c),
        (b"reAmbleWillBeRemoved,ThePrePartThatIs", 0x4a62_b377),
        (b"eAmbleWillBeRemoved,ThePrePartThatIs", 0xe0e4_e09e),
        (b"AmbleWillBeRemoved,ThePrePartThatIs", 0x62b8_b43f),
        (b"", 0x106e_08d9),
    ];

    #[test]
    fn murmur2_matches_java() {
        for (data, expected) in JAVA_VECTORS {
            assert_eq!(murmur2(data), expected, "{:?}", String::from_utf8_lossy(data));
        }
    }

    #[test]
    fn murmur2_matches_librdkafka_vectors() {
        for (data, expected) in RDKAFKA_VECTORS {
            assert_eq!(murmur2(data), expected as i32, "{:?}", String::from_utf8_lossy(data));
        }
    }

    #[test]
    fn murmur2_of_empty_key() {
        assert_eq!(murmur2(&[]), 0x106e_08d9);
        assert_eq!(murmur2_partition(&[], 6), 0x106e_08d9 % 6);
        // An empty key is a key: the default partitioner hashes it, it is not sticky.
        let p = DefaultPartitioner::new();
        for _ in 0..20 {
            assert_eq!(p.partition("t", Some(&[]), None, 7), 0x106e_08d9 % 7);
        }
    }

    #[test]
    fn to_positive_clears_the_sign_bit() {
        assert_eq!(to_positive(0), 0);
        assert_eq!(to_positive(5), 5);
        assert_eq!(to_positive(-1), i32::MAX);
        assert_eq!(to_positive(i32::MIN), 0);
        assert_eq!(to_positive(i32::MAX), i32::MAX);
        assert_eq!(to_positive(-973_932_308), 1_173_551_340);
    }

    #[test]
    fn murmur2_partition_is_the_java_formula() {
        for (data, hash) in JAVA_VECTORS {
            for n in [1, 2, 3, 6, 32, 1000] {
                assert_eq!(murmur2_partition(data, n), (hash & 0x7fff_ffff) % n);
            }
        }
        assert_eq!(murmur2_partition(b"21", 6), 0);
    }

    #[test]
    fn murmur2_partition_without_partitions_is_unknown_and_does_not_panic() {
        for n in [0, -1, i32::MIN] {
            assert_eq!(murmur2_partition(b"key", n), UNKNOWN_PARTITION);
            assert!(check_partition(murmur2_partition(b"key", n), n).is_err());
        }
    }

    #[test]
    fn murmur2_spreads_keys_evenly() {
        let mut counts = [0_u32; 6];
        for i in 0..10_000 {
            let p = murmur2_partition(format!("key-{i}").as_bytes(), 6);
            counts[p as usize] += 1;
        }
        for (p, &c) in counts.iter().enumerate() {
            assert!(c >= 1000, "partition {p} got {c} of 10000 keys: {counts:?}");
        }
    }

    #[test]
    fn default_partitioner_hashes_keys() {
        let p = DefaultPartitioner::new();
        for i in 0..500 {
            let key = format!("key-{i}");
            for n in [1, 6, 32] {
                assert_eq!(p.partition("t", Some(key.as_bytes()), Some(b"v"), n), murmur2_partition(key.as_bytes(), n));
            }
        }
        // on_new_batch never moves keyed records.
        p.on_new_batch("t", 6, murmur2_partition(b"key-1", 6));
        assert_eq!(p.partition("t", Some(b"key-1"), None, 6), murmur2_partition(b"key-1", 6));
    }

    #[test]
    fn sticky_partition_stays_until_its_batch_is_done() {
        let p = DefaultPartitioner::new();
        let mut current = p.partition("t", None, Some(b"v"), 6);
        let mut seen = HashSet::new();
        for _ in 0..200 {
            assert!((0..6).contains(&current));
            seen.insert(current);
            for _ in 0..10 {
                assert_eq!(p.partition("t", None, Some(b"v"), 6), current);
            }
            // A new batch on another partition does not move it.
            p.on_new_batch("t", 6, (current + 1) % 6);
            assert_eq!(p.partition("t", None, None, 6), current);
            // A new batch on the sticky partition does.
            p.on_new_batch("t", 6, current);
            let next = p.partition("t", None, None, 6);
            assert_ne!(next, current);
            current = next;
        }
        // Moves are random among the other partitions: in 200 moves each partition
        // is missed with probability below (4/5)^100.
        assert_eq!(seen.len(), 6, "{seen:?}");
    }

    #[test]
    fn sticky_partition_is_per_topic() {
        let p = DefaultPartitioner::new();
        let a = p.partition("a", None, None, 4);
        let b = p.partition("b", None, None, 4);
        p.on_new_batch("a", 4, a);
        assert_ne!(p.partition("a", None, None, 4), a);
        assert_eq!(p.partition("b", None, None, 4), b);
        // A topic without a sticky partition ignores on_new_batch.
        p.on_new_batch("c", 4, 0);
        assert!((0..4).contains(&p.partition("c", None, None, 4)));
    }

    #[test]
    fn sticky_with_one_partition_stays_on_it() {
        let p = DefaultPartitioner::new();
        for _ in 0..20 {
            assert_eq!(p.partition("t", None, None, 1), 0);
            p.on_new_batch("t", 1, 0);
        }
    }

    #[test]
    fn sticky_partition_follows_the_partition_count() {
        let p = DefaultPartitioner::new();
        // Find a sticky partition that is not 0, then shrink the count under it.
        let mut current = p.partition("t", None, None, 8);
        while current < 2 {
            p.on_new_batch("t", 8, current);
            current = p.partition("t", None, None, 8);
        }
        let shrunk = p.partition("t", None, None, 2);
        assert!((0..2).contains(&shrunk));
        assert_eq!(p.partition("t", None, None, 2), shrunk);
        // More partitions keep a sticky partition that is still valid.
        assert_eq!(p.partition("t", None, None, 16), shrunk);
    }

    #[test]
    fn no_partitions_is_unknown_and_does_not_panic() {
        let partitioners: [Box<dyn Partitioner>; 2] =
            [Box::new(DefaultPartitioner::new()), Box::new(RoundRobinPartitioner::new())];
        for p in &partitioners {
            for n in [0, -1, i32::MIN] {
                for key in [None, Some(&b"k"[..])] {
                    let got = p.partition("t", key, None, n);
                    assert_eq!(got, UNKNOWN_PARTITION, "{p:?}");
                    assert_eq!(check_partition(got, n), Err(InvalidPartition { partition: got, partitions: n }));
                }
                p.on_new_batch("t", n, 0);
            }
            // And the topic still works once it has partitions.
            assert!((0..3).contains(&p.partition("t", None, None, 3)));
        }
    }

    #[test]
    fn round_robin_cycles_per_topic_and_ignores_keys() {
        let p = RoundRobinPartitioner::new();
        let got: Vec<i32> = (0..7).map(|i| p.partition("a", Some(format!("k{i}").as_bytes()), None, 3)).collect();
        assert_eq!(got, [0, 1, 2, 0, 1, 2, 0]);
        // Another topic has its own counter.
        assert_eq!(p.partition("b", Some(b"same"), None, 3), 0);
        assert_eq!(p.partition("b", Some(b"same"), None, 3), 1);
        assert_eq!(p.partition("a", None, None, 3), 1);
        p.on_new_batch("a", 3, 1);
        assert_eq!(p.partition("a", None, None, 3), 2);
    }

    #[test]
    fn round_robin_is_even_across_threads() {
        let p = Arc::new(RoundRobinPartitioner::new());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let p = Arc::clone(&p);
                std::thread::spawn(move || (0..3000).map(|_| p.partition("t", None, None, 6)).collect::<Vec<_>>())
            })
            .collect();
        let mut counts = [0_u32; 6];
        for t in threads {
            for partition in t.join().unwrap() {
                counts[partition as usize] += 1;
            }
        }
        assert_eq!(counts, [2000; 6]);
    }

    #[test]
    fn sticky_is_consistent_across_threads() {
        let p: Arc<dyn Partitioner> = Arc::new(DefaultPartitioner::new());
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let p = Arc::clone(&p);
                std::thread::spawn(move || {
                    for _ in 0..2000 {
                        let current = p.partition("t", None, None, 5);
                        assert!((0..5).contains(&current));
                        p.on_new_batch("t", 5, current);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let settled = p.partition("t", None, None, 5);
        assert_eq!(p.partition("t", None, None, 5), settled);
    }

    #[test]
    fn fn_partitioner_calls_the_closure() {
        let p = FnPartitioner::new(|topic: &str, key: Option<&[u8]>, value: Option<&[u8]>, partitions: i32| {
            if topic == "pinned" {
                return 2;
            }
            (key.map_or(0, <[u8]>::len) + value.map_or(0, <[u8]>::len)) as i32 % partitions
        });
        assert_eq!(p.partition("pinned", None, None, 4), 2);
        assert_eq!(p.partition("t", Some(b"ab"), Some(b"c"), 4), 3);
        assert_eq!(p.partition("t", None, Some(b"abcde"), 4), 1);
        p.on_new_batch("t", 4, 1);
        assert_eq!(format!("{p:?}"), "FnPartitioner { .. }");
        // Shared like the built-in ones.
        let shared: Arc<dyn Partitioner> = Arc::new(p);
        assert_eq!(shared.partition("pinned", None, None, 4), 2);
    }

    #[test]
    fn fn_partitioner_out_of_range_answer_is_rejected() {
        let p = FnPartitioner::new(|_: &str, _: Option<&[u8]>, _: Option<&[u8]>, partitions: i32| partitions);
        let answer = p.partition("t", None, None, 4);
        let err = check_partition(answer, 4).unwrap_err();
        assert_eq!(err, InvalidPartition { partition: 4, partitions: 4 });
        assert_eq!(
            err.to_string(),
            "partition 4 is out of range: the topic has 4 partitions, valid partitions are 0 to 3"
        );
    }

    #[test]
    fn check_partition_accepts_exactly_the_range() {
        for n in 1..=5 {
            for p in 0..n {
                assert_eq!(check_partition(p, n), Ok(p));
            }
            for p in [-1, n, n + 1, i32::MIN, i32::MAX] {
                assert_eq!(check_partition(p, n), Err(InvalidPartition { partition: p, partitions: n }));
            }
        }
        for n in [0, -1, i32::MIN] {
            for p in [-1, 0, 1] {
                assert!(check_partition(p, n).is_err());
            }
        }
    }

    #[test]
    fn invalid_partition_messages_give_the_range() {
        let msg = |p, n| check_partition(p, n).unwrap_err().to_string();
        assert_eq!(msg(-1, 6), "partition -1 is out of range: the topic has 6 partitions, valid partitions are 0 to 5");
        assert_eq!(msg(1, 1), "partition 1 is out of range: the topic has 1 partition, the only valid partition is 0");
        assert_eq!(
            msg(0, 0),
            "partition 0 is out of range: the topic has no partitions (partition count 0), no partition is valid"
        );
        assert_eq!(
            msg(-1, -3),
            "partition -1 is out of range: the topic has no partitions (partition count -3), no partition is valid"
        );
    }

    #[test]
    fn partitioners_are_shareable() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<DefaultPartitioner>();
        shareable::<RoundRobinPartitioner>();
        shareable::<Box<dyn Partitioner>>();
        shareable::<InvalidPartition>();
    }

    proptest! {
        #[test]
        fn murmur2_partition_is_always_in_range(key in proptest::collection::vec(any::<u8>(), 0..256), n in 1..10_000_i32) {
            let p = murmur2_partition(&key, n);
            prop_assert!((0..n).contains(&p), "{p} not in 0..{n}");
            prop_assert_eq!(check_partition(p, n), Ok(p));
        }

        #[test]
        fn default_partitioner_is_always_in_range(
            key in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
            n in 1..10_000_i32,
            moves in 0..4_usize,
        ) {
            let partitioner = DefaultPartitioner::new();
            for _ in 0..moves {
                let p = partitioner.partition("t", key.as_deref(), None, n);
                partitioner.on_new_batch("t", n, p);
            }
            let p = partitioner.partition("t", key.as_deref(), None, n);
            prop_assert!((0..n).contains(&p), "{p} not in 0..{n}");
        }

        #[test]
        fn to_positive_is_never_negative(n in any::<i32>()) {
            prop_assert!(to_positive(n) >= 0);
            prop_assert_eq!(to_positive(n), if n >= 0 { n } else { n.wrapping_add(i32::MIN) });
        }
    }
}
