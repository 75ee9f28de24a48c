//! Sets of partitions named by topic id, as KIP-848 heartbeats carry them, and the
//! differences a reconciliation works from.

use std::collections::{BTreeMap, BTreeSet};

use klife_protocol::Uuid;
use klife_protocol::messages::{consumer_group_heartbeat_request, consumer_group_heartbeat_response};

/// Partitions by topic id. No topic has an empty set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Partitions(BTreeMap<Uuid, BTreeSet<i32>>);

impl Partitions {
    /// The target of an answer's assignment, cleaned: nil topic ids, negative
    /// partitions and repeats are dropped.
    pub(crate) fn from_assignment(a: &consumer_group_heartbeat_response::Assignment) -> Partitions {
        let mut out = Partitions::default();
        for t in &a.topic_partitions {
            if t.topic_id.is_nil() {
                continue;
            }
            for &p in &t.partitions {
                if p >= 0 {
                    out.insert(t.topic_id, p);
                }
            }
        }
        out
    }

    /// Adds one partition.
    pub(crate) fn insert(&mut self, topic: Uuid, partition: i32) {
        self.0.entry(topic).or_default().insert(partition);
    }

    /// Whether there is no partition.
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Every `(topic id, partition)`, in order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (Uuid, i32)> + '_ {
        self.0.iter().flat_map(|(t, ps)| ps.iter().map(move |p| (*t, *p)))
    }

    /// The partitions of the topics `keep` accepts, and the ids of the others.
    pub(crate) fn split(&self, mut keep: impl FnMut(Uuid) -> bool) -> (Partitions, BTreeSet<Uuid>) {
        let mut kept = Partitions::default();
        let mut dropped = BTreeSet::new();
        for (t, ps) in &self.0 {
            if keep(*t) {
                kept.0.insert(*t, ps.clone());
            } else {
                dropped.insert(*t);
            }
        }
        (kept, dropped)
    }

    /// The partitions of `self` that are not in `other`.
    pub(crate) fn minus(&self, other: &Partitions) -> Partitions {
        let mut out = Partitions::default();
        for (t, p) in self.iter() {
            if !other.0.get(&t).is_some_and(|ps| ps.contains(&p)) {
                out.insert(t, p);
            }
        }
        out
    }

    /// The owned list of a heartbeat request.
    pub(crate) fn to_request(&self) -> Vec<consumer_group_heartbeat_request::TopicPartitions> {
        self.0
            .iter()
            .map(|(t, ps)| {
                consumer_group_heartbeat_request::TopicPartitions::default()
                    .with_topic_id(*t)
                    .with_partitions(ps.iter().copied().collect())
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use consumer_group_heartbeat_response::{Assignment, TopicPartitions};

    #[test]
    fn answers_are_cleaned_and_differences_taken() {
        let a = Uuid::from_u128(1);
        let b = Uuid::from_u128(2);
        let assignment = Assignment::default().with_topic_partitions(vec![
            TopicPartitions::default().with_topic_id(a).with_partitions(vec![2, 0, 2, -1]),
            TopicPartitions::default().with_topic_id(Uuid::NIL).with_partitions(vec![0]),
            TopicPartitions::default().with_topic_id(b).with_partitions(vec![-3]),
        ]);
        let target = Partitions::from_assignment(&assignment);
        assert_eq!(target.iter().collect::<Vec<_>>(), vec![(a, 0), (a, 2)]);

        let mut owned = Partitions::default();
        owned.insert(a, 0);
        owned.insert(b, 1);
        assert_eq!(owned.minus(&target).iter().collect::<Vec<_>>(), vec![(b, 1)]);
        assert_eq!(target.minus(&owned).iter().collect::<Vec<_>>(), vec![(a, 2)]);
        let (kept, dropped) = owned.split(|t| t == a);
        assert_eq!(kept.iter().collect::<Vec<_>>(), vec![(a, 0)]);
        assert_eq!(dropped.into_iter().collect::<Vec<_>>(), vec![b]);
        assert_eq!(owned.to_request().len(), 2);
    }
}
