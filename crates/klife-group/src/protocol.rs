//! The byte formats of the classic consumer protocol: what a member puts in the
//! metadata of its JoinGroup protocols (ConsumerProtocolSubscription) and what the
//! leader puts in each member's SyncGroup assignment (ConsumerProtocolAssignment).
//!
//! Both are written as an `int16` version followed by the fields of that version
//! (not flexible; the structures are klife-protocol's, generated from Kafka's
//! schemas). Versions (`reference/consumer-groups.md`, 2.3):
//!
//! | version | subscription adds | assignment |
//! | --- | --- | --- |
//! | 0 | topics, user data | partitions, user data |
//! | 1 | owned partitions (cooperative rebalancing) | same |
//! | 2 | generation id (KIP-792) | same |
//! | 3 | rack id (KIP-881) | same |
//!
//! A version above the highest known is read with the highest known layout, the
//! bytes after it ignored: Kafka only ever adds fields at the end of these structures,
//! so a newer member's metadata stays readable. Bytes after a known version's fields
//! are ignored as well, as Kafka's own clients do. Decoding never panics and never
//! allocates more than the input can hold; errors are [`DecodeError`]s.
//!
//! ```
//! use klife_group::protocol::{Assignment, SUBSCRIPTION_VERSION, Subscription};
//! use klife_protocol::TopicPartition;
//!
//! let sub = Subscription::new(["orders"])
//!     .with_owned_partitions([TopicPartition::new("orders", 1)])
//!     .with_generation_id(Some(4));
//! let bytes = sub.encode(SUBSCRIPTION_VERSION).expect("it encodes");
//! assert_eq!(Subscription::decode(bytes).expect("it decodes"), sub);
//!
//! let a = Assignment::new([TopicPartition::new("orders", 0)]);
//! assert_eq!(Assignment::decode(a.encode(3).expect("it encodes")).expect("it decodes"), a);
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use klife_protocol::messages::{
    ConsumerProtocolAssignment, ConsumerProtocolSubscription, consumer_protocol_assignment,
    consumer_protocol_subscription,
};
use klife_protocol::{DecodeError, EncodeError, Message, TopicPartition};

/// The protocol type of consumer groups in JoinGroup and SyncGroup.
pub const PROTOCOL_TYPE: &str = "consumer";
/// The subscription version klife writes: the highest, with owned partitions,
/// generation and rack.
pub const SUBSCRIPTION_VERSION: i16 = 3;
/// The highest assignment version klife knows.
pub const ASSIGNMENT_VERSION: i16 = 3;

/// What a member subscribes to, as the metadata of its JoinGroup protocols.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscription {
    /// The topics, in the order given.
    pub topics: Vec<String>,
    /// The assignor's own data, if any.
    pub user_data: Option<Bytes>,
    /// The partitions the member owns (v1+), sorted and without repeats.
    pub owned_partitions: Vec<TopicPartition>,
    /// The generation in which it owned them (v2+; `None` is written as -1).
    pub generation_id: Option<i32>,
    /// The rack of the member (v3+).
    pub rack_id: Option<String>,
}

impl Subscription {
    /// A subscription to `topics`, owning nothing.
    pub fn new<I, S>(topics: I) -> Subscription
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Subscription { topics: topics.into_iter().map(Into::into).collect(), ..Subscription::default() }
    }

    /// Sets the owned partitions (sorted, repeats dropped).
    #[must_use]
    pub fn with_owned_partitions(mut self, owned: impl IntoIterator<Item = TopicPartition>) -> Subscription {
        self.owned_partitions = normalize(owned);
        self
    }

    /// Sets the generation the owned partitions are from.
    #[must_use]
    pub fn with_generation_id(mut self, generation_id: Option<i32>) -> Subscription {
        self.generation_id = generation_id;
        self
    }

    /// Sets the rack.
    #[must_use]
    pub fn with_rack_id(mut self, rack_id: Option<String>) -> Subscription {
        self.rack_id = rack_id;
        self
    }

    /// Sets the assignor's user data.
    #[must_use]
    pub fn with_user_data(mut self, user_data: Option<Bytes>) -> Subscription {
        self.user_data = user_data;
        self
    }

    /// The bytes at `version` (0 to [`SUBSCRIPTION_VERSION`]): the version, then the
    /// fields it has (the others are left out).
    pub fn encode(&self, version: i16) -> Result<Bytes, EncodeError> {
        let wire = ConsumerProtocolSubscription::default()
            .with_topics(self.topics.clone())
            .with_user_data(self.user_data.clone())
            .with_owned_partitions(
                group(&self.owned_partitions)
                    .into_iter()
                    .map(|(topic, partitions)| {
                        consumer_protocol_subscription::TopicPartition::default()
                            .with_topic(topic.to_string())
                            .with_partitions(partitions)
                    })
                    .collect(),
            )
            .with_generation_id(self.generation_id.unwrap_or(-1))
            .with_rack_id(self.rack_id.clone());
        encode_versioned(&wire, version)
    }

    /// Reads the bytes of a member's metadata. The version is not kept: fields a
    /// version lacks take their defaults (nothing owned, no generation, no rack).
    pub fn decode(bytes: Bytes) -> Result<Subscription, DecodeError> {
        let wire: ConsumerProtocolSubscription = decode_versioned(bytes)?;
        let owned = wire.owned_partitions.into_iter().flat_map(|t| {
            let topic: Arc<str> = t.topic.into();
            t.partitions.into_iter().map(move |p| TopicPartition { topic: topic.clone(), partition: p })
        });
        Ok(Subscription {
            topics: wire.topics,
            user_data: wire.user_data,
            owned_partitions: normalize(owned),
            generation_id: (wire.generation_id != -1).then_some(wire.generation_id),
            rack_id: wire.rack_id,
        })
    }
}

/// What the leader gives a member, in its SyncGroup assignment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assignment {
    /// The partitions, sorted and without repeats.
    pub partitions: Vec<TopicPartition>,
    /// The assignor's own data, if any.
    pub user_data: Option<Bytes>,
}

impl Assignment {
    /// An assignment of `partitions` (sorted, repeats dropped).
    pub fn new(partitions: impl IntoIterator<Item = TopicPartition>) -> Assignment {
        Assignment { partitions: normalize(partitions), user_data: None }
    }

    /// The bytes at `version` (0 to [`ASSIGNMENT_VERSION`]; the layouts are the same).
    pub fn encode(&self, version: i16) -> Result<Bytes, EncodeError> {
        let wire = ConsumerProtocolAssignment::default()
            .with_assigned_partitions(
                group(&self.partitions)
                    .into_iter()
                    .map(|(topic, partitions)| {
                        consumer_protocol_assignment::TopicPartition::default()
                            .with_topic(topic.to_string())
                            .with_partitions(partitions)
                    })
                    .collect(),
            )
            .with_user_data(self.user_data.clone());
        encode_versioned(&wire, version)
    }

    /// Reads the bytes of a SyncGroup answer. Empty bytes are an empty assignment:
    /// Kafka answers so when the leader gave the member nothing.
    pub fn decode(bytes: Bytes) -> Result<Assignment, DecodeError> {
        if bytes.is_empty() {
            return Ok(Assignment::default());
        }
        let wire: ConsumerProtocolAssignment = decode_versioned(bytes)?;
        let parts = wire.assigned_partitions.into_iter().flat_map(|t| {
            let topic: Arc<str> = t.topic.into();
            t.partitions.into_iter().map(move |p| TopicPartition { topic: topic.clone(), partition: p })
        });
        Ok(Assignment { partitions: normalize(parts), user_data: wire.user_data })
    }
}

/// Sorted, without repeats.
fn normalize(parts: impl IntoIterator<Item = TopicPartition>) -> Vec<TopicPartition> {
    parts.into_iter().collect::<BTreeSet<_>>().into_iter().collect()
}

/// The partitions by topic, in order.
fn group(parts: &[TopicPartition]) -> BTreeMap<Arc<str>, Vec<i32>> {
    let mut out: BTreeMap<Arc<str>, BTreeSet<i32>> = BTreeMap::new();
    for tp in parts {
        out.entry(tp.topic.clone()).or_default().insert(tp.partition);
    }
    out.into_iter().map(|(t, ps)| (t, ps.into_iter().collect())).collect()
}

fn encode_versioned<M: Message>(message: &M, version: i16) -> Result<Bytes, EncodeError> {
    let mut buf = BytesMut::new();
    buf.put_i16(version);
    message.encode(&mut buf, version)?;
    Ok(buf.freeze())
}

fn decode_versioned<M: Message>(mut bytes: Bytes) -> Result<M, DecodeError> {
    if bytes.remaining() < 2 {
        return Err(DecodeError::Truncated { what: M::NAME, needed: 2, remaining: bytes.remaining() });
    }
    let version = bytes.get_i16();
    if version < 0 {
        return Err(DecodeError::Invalid { what: M::NAME, reason: "negative version" });
    }
    M::decode(&mut bytes, version.min(M::VERSIONS.max))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn tp(topic: &str, partition: i32) -> TopicPartition {
        TopicPartition::new(topic, partition)
    }

    #[test]
    fn version_3_bytes_are_kafkas_layout() {
        let sub = Subscription::new(["a"])
            .with_owned_partitions([tp("a", 1)])
            .with_generation_id(Some(7))
            .with_rack_id(Some("r".into()));
        let bytes = sub.encode(3).expect("it encodes");
        let expected: &[u8] = &[
            0, 3, // version
            0, 0, 0, 1, 0, 1, b'a', // topics
            0xff, 0xff, 0xff, 0xff, // null user data
            0, 0, 0, 1, 0, 1, b'a', 0, 0, 0, 1, 0, 0, 0, 1, // owned a-1
            0, 0, 0, 7, // generation
            0, 1, b'r', // rack
        ];
        assert_eq!(&bytes[..], expected);
    }

    #[test]
    fn older_versions_leave_out_newer_fields() {
        let sub = Subscription::new(["a"])
            .with_owned_partitions([tp("a", 1)])
            .with_generation_id(Some(7))
            .with_rack_id(Some("r".into()));
        let v0 = Subscription::decode(sub.encode(0).expect("it encodes")).expect("it decodes");
        assert_eq!(v0, Subscription::new(["a"]));
        let v1 = Subscription::decode(sub.encode(1).expect("it encodes")).expect("it decodes");
        assert_eq!(v1, Subscription::new(["a"]).with_owned_partitions([tp("a", 1)]));
        let v2 = Subscription::decode(sub.encode(2).expect("it encodes")).expect("it decodes");
        assert_eq!(v2, Subscription::new(["a"]).with_owned_partitions([tp("a", 1)]).with_generation_id(Some(7)));
    }

    #[test]
    fn a_newer_version_is_read_with_the_newest_layout() {
        let sub = Subscription::new(["a"]).with_rack_id(Some("r".into()));
        let mut bytes = BytesMut::from(&sub.encode(3).expect("it encodes")[..]);
        bytes[1] = 9; // version 9
        bytes.put_slice(b"fields of a later version");
        assert_eq!(Subscription::decode(bytes.freeze()).expect("it decodes"), sub);
    }

    #[test]
    fn bad_input_is_a_typed_error() {
        assert!(matches!(Subscription::decode(Bytes::from_static(&[0])), Err(DecodeError::Truncated { .. })));
        assert!(matches!(Subscription::decode(Bytes::from_static(&[0xff, 0xff])), Err(DecodeError::Invalid { .. })));
        // Four billion topics announced in ten bytes: refused before allocating.
        let huge: &[u8] = &[0, 0, 0x7f, 0xff, 0xff, 0xff, 0, 0, 0, 0];
        assert!(Subscription::decode(Bytes::from_static(huge)).is_err());
        assert!(Assignment::decode(Bytes::from_static(&[0, 0, 0, 0])).is_err());
        assert_eq!(Assignment::decode(Bytes::new()).expect("it decodes"), Assignment::default());
    }

    fn arb_tp() -> impl Strategy<Value = TopicPartition> {
        ("[a-c]{1,3}", 0..8i32).prop_map(|(t, p)| TopicPartition::new(t, p))
    }

    fn arb_subscription() -> impl Strategy<Value = Subscription> {
        (
            prop::collection::vec("[a-z.]{0,6}", 0..4),
            prop::option::of(prop::collection::vec(any::<u8>(), 0..8)),
            prop::collection::vec(arb_tp(), 0..6),
            prop::option::of(0..i32::MAX),
            prop::option::of("[a-z]{0,4}"),
        )
            .prop_map(|(topics, user_data, owned, generation, rack)| {
                Subscription::new(topics)
                    .with_user_data(user_data.map(Bytes::from))
                    .with_owned_partitions(owned)
                    .with_generation_id(generation)
                    .with_rack_id(rack)
            })
    }

    proptest! {
        #[test]
        fn subscriptions_round_trip(sub in arb_subscription(), version in 0..=3i16) {
            let back = Subscription::decode(sub.encode(version).expect("it encodes")).expect("it decodes");
            let mut expected = sub.clone();
            if version < 1 { expected.owned_partitions.clear(); }
            if version < 2 { expected.generation_id = None; }
            if version < 3 { expected.rack_id = None; }
            prop_assert_eq!(back, expected);
        }

        #[test]
        fn assignments_round_trip(
            parts in prop::collection::vec(arb_tp(), 0..8),
            user_data in prop::option::of(prop::collection::vec(any::<u8>(), 0..8)),
            version in 0..=3i16,
        ) {
            let a = Assignment { partitions: normalize(parts), user_data: user_data.map(Bytes::from) };
            prop_assert_eq!(Assignment::decode(a.encode(version).expect("it encodes")).expect("it decodes"), a);
        }

        #[test]
        fn arbitrary_bytes_never_panic(version in -1..6i16, body in prop::collection::vec(any::<u8>(), 0..64)) {
            let mut bytes = BytesMut::new();
            bytes.put_i16(version);
            bytes.put_slice(&body);
            let bytes = bytes.freeze();
            let _ = Subscription::decode(bytes.clone());
            let _ = Assignment::decode(bytes.clone());
            let _ = Subscription::decode(Bytes::from(body.clone()));
            let _ = Assignment::decode(Bytes::from(body));
        }
    }
}
