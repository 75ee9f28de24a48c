//! The words every klife crate shares: where records live ([`TopicPartition`]), where a
//! read is ([`TopicPartitionOffset`]), who writes ([`ProducerIdAndEpoch`]) and which
//! group member commits ([`GroupMetadata`]).
//!
//! They are plain values with no behaviour beyond construction and display, so that
//! the producer, the fetcher and the group code pass them to each other without
//! converting.
//!
//! ```
//! use klife_protocol::types::{GroupMetadata, ProducerIdAndEpoch, TopicPartition, TopicPartitionOffset};
//!
//! let tp = TopicPartition::new("orders", 3);
//! assert_eq!(tp.to_string(), "orders-3");
//! let position = tp.at(42);
//! assert_eq!(position.to_string(), "orders-3@42");
//! assert_eq!(position.topic_partition(), tp);
//!
//! let writer = ProducerIdAndEpoch::new(7, 0);
//! assert!(writer.is_some());
//! assert!(!ProducerIdAndEpoch::NONE.is_some());
//!
//! let member = GroupMetadata::new("billing").with_member("m-1", 5);
//! assert_eq!(member.generation_id, 5);
//! ```

use std::fmt;
use std::sync::Arc;

use crate::Uuid;

/// A topic and partition. Cheap to clone: the topic name is shared.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartition {
    /// Topic name.
    pub topic: Arc<str>,
    /// Partition index.
    pub partition: i32,
}

impl TopicPartition {
    /// A topic and partition.
    pub fn new(topic: impl Into<Arc<str>>, partition: i32) -> Self {
        TopicPartition { topic: topic.into(), partition }
    }

    /// The position `offset` in this partition, with nothing known of the log before it.
    pub fn at(&self, offset: i64) -> TopicPartitionOffset {
        TopicPartitionOffset::new(self.topic.clone(), self.partition, offset)
    }
}

impl fmt::Display for TopicPartition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.topic, self.partition)
    }
}

impl<T: Into<Arc<str>>> From<(T, i32)> for TopicPartition {
    fn from((topic, partition): (T, i32)) -> Self {
        TopicPartition::new(topic, partition)
    }
}

/// A position in a partition: a topic, a partition and an offset, and what is known of
/// the log up to that offset.
///
/// A position that continues an earlier read should carry that read's
/// [`last_epoch`](Self::last_epoch) and [`topic_id`](Self::topic_id): a fetch then fails
/// when an unclean leader election cut the log under the offset, or when the topic was
/// deleted and created again, instead of reading records that are not the ones that
/// followed. Without them (`None`, as [`new`](Self::new) makes it) a fetch reads
/// whatever the log holds at the offset now. A committed offset carries the
/// `last_epoch` as its leader epoch (OffsetCommit v6+).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicPartitionOffset {
    /// The topic.
    pub topic: Arc<str>,
    /// The partition.
    pub partition: i32,
    /// The offset.
    pub offset: i64,
    /// The leader epoch of the last record batch read before `offset`, if known: sent
    /// as the Fetch request's `last_fetched_epoch` (v12+), for the leader to check that
    /// its log still holds what was read up to `offset`.
    pub last_epoch: Option<i32>,
    /// The id of the topic the offset belongs to, if known: a fetch fails rather than
    /// read another topic that has since taken the name.
    pub topic_id: Option<Uuid>,
}

impl TopicPartitionOffset {
    /// `(topic, partition, offset)`, with nothing known of the log before it.
    pub fn new(topic: impl Into<Arc<str>>, partition: i32, offset: i64) -> Self {
        TopicPartitionOffset { topic: topic.into(), partition, offset, last_epoch: None, topic_id: None }
    }

    /// Sets the leader epoch of the last batch read before the offset (a negative
    /// epoch, Kafka's "unknown", leaves it unset).
    #[must_use]
    pub fn with_last_epoch(mut self, epoch: i32) -> Self {
        self.last_epoch = (epoch >= 0).then_some(epoch);
        self
    }

    /// Sets the id of the topic the offset belongs to (the nil id leaves it unset).
    #[must_use]
    pub fn with_topic_id(mut self, id: Uuid) -> Self {
        self.topic_id = (!id.is_nil()).then_some(id);
        self
    }

    /// The topic and partition of this position.
    pub fn topic_partition(&self) -> TopicPartition {
        TopicPartition { topic: self.topic.clone(), partition: self.partition }
    }
}

impl<T: Into<Arc<str>>> From<(T, i32, i64)> for TopicPartitionOffset {
    fn from((topic, partition, offset): (T, i32, i64)) -> Self {
        TopicPartitionOffset::new(topic, partition, offset)
    }
}

impl fmt::Display for TopicPartitionOffset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}@{}", self.topic, self.partition, self.offset)
    }
}

/// A producer id and the epoch it writes with: who wrote a batch, for idempotence and
/// transactions. [`NONE`](Self::NONE) (-1, -1) is a producer without one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProducerIdAndEpoch {
    /// The producer id (-1: none).
    pub id: i64,
    /// The producer epoch (-1: none).
    pub epoch: i16,
}

impl ProducerIdAndEpoch {
    /// No producer id: what a producer that is not idempotent writes with.
    pub const NONE: ProducerIdAndEpoch = ProducerIdAndEpoch { id: -1, epoch: -1 };

    /// A producer id and epoch.
    pub const fn new(id: i64, epoch: i16) -> Self {
        ProducerIdAndEpoch { id, epoch }
    }

    /// Whether this is a real producer id (not [`NONE`](Self::NONE)).
    pub const fn is_some(&self) -> bool {
        self.id >= 0
    }
}

impl Default for ProducerIdAndEpoch {
    fn default() -> Self {
        ProducerIdAndEpoch::NONE
    }
}

impl fmt::Display for ProducerIdAndEpoch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "producer {} epoch {}", self.id, self.epoch)
    }
}

/// What a group member tells a transaction coordinator when it commits offsets inside
/// a transaction (TxnOffsetCommit v3+, KIP-447), so that a member fenced out of its
/// group cannot commit for it: the group, the member, its generation (classic
/// protocol) or member epoch (KIP-848), and its static instance id.
///
/// [`new`](Self::new) without a member is what a producer outside any group sends:
/// the coordinator then checks nothing but the group id.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct GroupMetadata {
    /// The group id.
    pub group_id: Arc<str>,
    /// The member id ("" when not a member).
    pub member_id: Arc<str>,
    /// The generation (classic) or member epoch (KIP-848); -1 when not a member.
    pub generation_id: i32,
    /// The static member's instance id, if any.
    pub group_instance_id: Option<Arc<str>>,
}

impl GroupMetadata {
    /// A group, without a member.
    pub fn new(group_id: impl Into<Arc<str>>) -> Self {
        GroupMetadata { group_id: group_id.into(), member_id: "".into(), generation_id: -1, group_instance_id: None }
    }

    /// Sets the member id and its generation or member epoch.
    #[must_use]
    pub fn with_member(mut self, member_id: impl Into<Arc<str>>, generation_id: i32) -> Self {
        self.member_id = member_id.into();
        self.generation_id = generation_id;
        self
    }

    /// Sets the static member's instance id.
    #[must_use]
    pub fn with_instance_id(mut self, instance_id: impl Into<Arc<str>>) -> Self {
        self.group_instance_id = Some(instance_id.into());
        self
    }
}

impl fmt::Display for GroupMetadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "group {}", self.group_id)?;
        if !self.member_id.is_empty() {
            write!(f, " member {} generation {}", self.member_id, self.generation_id)?;
        }
        if let Some(id) = &self.group_instance_id {
            write!(f, " instance {id}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_epochs_and_nil_ids_stay_unset() {
        let p = TopicPartitionOffset::new("t", 0, 5).with_last_epoch(-1).with_topic_id(Uuid::default());
        assert_eq!((p.last_epoch, p.topic_id), (None, None));
        let p = p.with_last_epoch(3);
        assert_eq!(p.last_epoch, Some(3));
    }

    #[test]
    fn display_names_what_is_set() {
        assert_eq!(GroupMetadata::new("g").to_string(), "group g");
        let m = GroupMetadata::new("g").with_member("m", 2).with_instance_id("i");
        assert_eq!(m.to_string(), "group g member m generation 2 instance i");
        assert_eq!(ProducerIdAndEpoch::default(), ProducerIdAndEpoch::NONE);
        assert_eq!(ProducerIdAndEpoch::new(4, 1).to_string(), "producer 4 epoch 1");
    }
}
