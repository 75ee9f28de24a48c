//! The outputs of a transactional pipeline: which records its messages produced go in
//! which transaction, together with which offsets.
//!
//! A message's outputs are [`held`](Outputs::hold) once it is acknowledged, under its
//! partition and offset. A partition's commit point ([`ready`](Outputs::ready), from
//! the [`AckTracker`](crate::ack::AckTracker)) says every message below it is
//! acknowledged. [`take`](Outputs::take) gives the next transaction: each ready
//! partition's commit point, and the outputs of its messages below that point, in
//! partition and offset order. So a transaction never holds an output whose offset it
//! does not commit, nor commits an offset whose outputs it (or an earlier
//! transaction) does not hold. While a transaction is in flight its partitions are not
//! taken again; [`done`](Outputs::done) ends it (committed or not).
//! [`release`](Outputs::release) forgets a partition given up or restarted: what it
//! held comes again with its messages.
//!
//! ```
//! use klife_pipeline::outputs::Outputs;
//! use klife_protocol::{TopicPartition, TopicPartitionOffset};
//!
//! let tp = TopicPartition::new("orders", 0);
//! let mut outputs: Outputs<&str> = Outputs::default();
//! outputs.hold(&tp, 0, vec!["a"]);
//! outputs.hold(&tp, 2, vec!["c"]); // acknowledged above a gap: offset 1 is not yet
//! outputs.ready(TopicPartitionOffset::new("orders", 0, 1));
//! let txn = outputs.take().unwrap();
//! assert_eq!(txn.outputs, vec!["a"]);
//! assert_eq!(txn.offsets[0].offset, 1);
//! assert!(outputs.take().is_none(), "orders-0 is in flight");
//! outputs.done(&txn);
//! outputs.hold(&tp, 1, vec!["b"]);
//! outputs.ready(TopicPartitionOffset::new("orders", 0, 3));
//! assert_eq!(outputs.take().unwrap().outputs, vec!["b", "c"]);
//! ```

use std::collections::{BTreeMap, BTreeSet};

use klife_protocol::types::{TopicPartition, TopicPartitionOffset};

/// One transaction's work: see the [module documentation](self).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transaction<T> {
    /// The commit point of each partition, sorted by partition.
    pub offsets: Vec<TopicPartitionOffset>,
    /// The outputs of the messages below those points, by partition, then offset.
    pub outputs: Vec<T>,
}

impl<T> Transaction<T> {
    /// The partitions of the transaction.
    pub fn partitions(&self) -> impl Iterator<Item = TopicPartition> + '_ {
        self.offsets.iter().map(TopicPartitionOffset::topic_partition)
    }
}

/// The held outputs and commit points of a transactional pipeline.
#[derive(Debug)]
pub struct Outputs<T> {
    held: BTreeMap<TopicPartition, BTreeMap<i64, Vec<T>>>,
    ready: BTreeMap<TopicPartition, TopicPartitionOffset>,
    in_flight: BTreeSet<TopicPartition>,
}

impl<T> Default for Outputs<T> {
    fn default() -> Self {
        Outputs { held: BTreeMap::new(), ready: BTreeMap::new(), in_flight: BTreeSet::new() }
    }
}

impl<T> Outputs<T> {
    /// Holds the outputs of the acknowledged message at `offset` of `partition`
    /// (nothing for none).
    pub fn hold(&mut self, partition: &TopicPartition, offset: i64, outputs: Vec<T>) {
        if outputs.is_empty() {
            return;
        }
        self.held.entry(partition.clone()).or_default().entry(offset).or_default().extend(outputs);
    }

    /// A partition's new commit point: every message below it is acknowledged. A later
    /// point replaces one not taken yet.
    pub fn ready(&mut self, commit: TopicPartitionOffset) {
        self.ready.insert(commit.topic_partition(), commit);
    }

    /// The next transaction: every ready partition not in flight, with the outputs
    /// below its commit point; `None` when there is nothing to commit. Its partitions
    /// are in flight until [`done`](Self::done).
    pub fn take(&mut self) -> Option<Transaction<T>> {
        let partitions: Vec<TopicPartition> =
            self.ready.keys().filter(|tp| !self.in_flight.contains(*tp)).cloned().collect();
        if partitions.is_empty() {
            return None;
        }
        let mut txn = Transaction { offsets: Vec::with_capacity(partitions.len()), outputs: Vec::new() };
        for tp in partitions {
            let Some(commit) = self.ready.remove(&tp) else { continue };
            if let Some(held) = self.held.get_mut(&tp) {
                let above = held.split_off(&commit.offset);
                txn.outputs.extend(std::mem::replace(held, above).into_values().flatten());
                if held.is_empty() {
                    self.held.remove(&tp);
                }
            }
            self.in_flight.insert(tp);
            txn.offsets.push(commit);
        }
        Some(txn)
    }

    /// Ends a transaction from [`take`](Self::take), committed or not: its partitions
    /// can be taken again. (One that failed restarts its partitions:
    /// [`release`](Self::release) them.)
    pub fn done(&mut self, txn: &Transaction<T>) {
        for tp in txn.partitions() {
            self.in_flight.remove(&tp);
        }
    }

    /// Forgets a partition: its held outputs and commit point. Its messages come again.
    pub fn release(&mut self, partition: &TopicPartition) {
        self.held.remove(partition);
        self.ready.remove(partition);
    }

    /// Whether the partition has nothing waiting to be committed: no commit point
    /// not taken yet, no transaction in flight.
    pub fn settled(&self, partition: &TopicPartition) -> bool {
        !self.ready.contains_key(partition) && !self.in_flight.contains(partition)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Step {
        /// Acknowledge the next message of partition `p` (its output is `(p, offset)`).
        Ack(usize),
        /// Take a transaction (and end it at once, committed).
        Take,
        /// Release partition `p`: what it held comes again, from its commit.
        Release(usize),
    }

    fn steps() -> impl Strategy<Value = Vec<Step>> {
        proptest::collection::vec(
            prop_oneof![
                6 => (0usize..3).prop_map(Step::Ack),
                3 => Just(Step::Take),
                1 => (0usize..3).prop_map(Step::Release),
            ],
            0..120,
        )
    }

    proptest! {
        /// Messages are acknowledged in any order (out of order within a window), and
        /// the commit point is the AckTracker's rule (one after the acknowledged
        /// prefix). Whatever the interleaving of acknowledgements, transactions and
        /// releases: every output committed is below its partition's offset committed in
        /// the same or an earlier transaction; each output is committed once; and
        /// committed offsets never go backwards.
        #[test]
        fn transactions_hold_exactly_the_outputs_below_their_offsets(steps in steps(), seed in any::<u64>()) {
            let mut rng = seed;
            let mut next_rand = move || { rng ^= rng << 13; rng ^= rng >> 7; rng ^= rng << 17; rng };
            let tps: Vec<TopicPartition> = (0..3).map(|p| TopicPartition::new("t", p)).collect();
            let mut outputs: Outputs<(usize, i64)> = Outputs::default();
            // Per partition: committed offset, next offset to deliver, acknowledged set.
            let mut committed = [0i64; 3];
            let mut next = [0i64; 3];
            let mut acked: [BTreeSet<i64>; 3] = Default::default();
            let mut seen: BTreeSet<(usize, i64)> = BTreeSet::new();
            let mut point = [0i64; 3];
            for step in steps {
                match step {
                    Step::Ack(p) => {
                        // Deliver a window of up to 3 messages and acknowledge one of
                        // them at random: out of order.
                        let window = (next[p] - point[p]).max(0);
                        let offset = if window > 0 && next_rand() % 2 == 0 {
                            point[p] + (next_rand() % window as u64) as i64
                        } else {
                            next[p] += 1;
                            next[p] - 1
                        };
                        if acked[p].insert(offset) {
                            outputs.hold(&tps[p], offset, vec![(p, offset)]);
                            let mut new_point = point[p];
                            while acked[p].contains(&new_point) {
                                new_point += 1;
                            }
                            if new_point > point[p] {
                                point[p] = new_point;
                                outputs.ready(TopicPartitionOffset::new("t", p as i32, new_point));
                            }
                        }
                    }
                    Step::Take => {
                        if let Some(txn) = outputs.take() {
                            for o in &txn.offsets {
                                let p = o.partition as usize;
                                prop_assert!(o.offset >= committed[p], "backwards: {} < {}", o.offset, committed[p]);
                                committed[p] = o.offset;
                            }
                            for (p, offset) in &txn.outputs {
                                prop_assert!(*offset < committed[*p], "output {offset} of {p} above its commit {}", committed[*p]);
                                prop_assert!(seen.insert((*p, *offset)), "output {offset} of {p} twice");
                            }
                            outputs.done(&txn);
                        }
                    }
                    Step::Release(p) => {
                        // Restart from the last commit: what was acknowledged above it
                        // comes again.
                        outputs.release(&tps[p]);
                        acked[p].retain(|o| *o < committed[p]);
                        point[p] = committed[p];
                        next[p] = committed[p];
                    }
                }
            }
            // Whatever remains ready comes out in the end, and then every output below
            // each commit point was committed exactly once.
            while let Some(txn) = outputs.take() {
                for o in &txn.offsets {
                    committed[o.partition as usize] = o.offset;
                }
                for (p, offset) in &txn.outputs {
                    prop_assert!(seen.insert((*p, *offset)));
                }
                outputs.done(&txn);
            }
            for (p, c) in committed.iter().enumerate() {
                for offset in 0..*c {
                    prop_assert!(seen.contains(&(p, offset)), "output {offset} of {p} never committed");
                }
                prop_assert!(outputs.settled(&tps[p]));
            }
        }
    }

    #[test]
    fn a_partition_in_flight_is_not_taken_again_and_release_forgets_it() {
        let tp = TopicPartition::new("t", 0);
        let mut o: Outputs<i64> = Outputs::default();
        o.hold(&tp, 0, vec![0]);
        o.ready(TopicPartitionOffset::new("t", 0, 1));
        let txn = o.take().unwrap();
        assert!(!o.settled(&tp));
        o.hold(&tp, 1, vec![1]);
        o.ready(TopicPartitionOffset::new("t", 0, 2));
        assert!(o.take().is_none());
        o.done(&txn);
        o.release(&tp);
        assert!(o.take().is_none());
        assert!(o.settled(&tp));
    }
}
