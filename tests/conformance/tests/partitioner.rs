//! klife's murmur2 partitioning against librdkafka's `murmur2_random` partitioner (the
//! Java client's choice for keyed records): librdkafka picks the partition of each
//! keyed record itself, and klife must name the same one.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;

use klife_conformance::{MockCluster, peer};
use klife_producer::partitioner::murmur2_partition;

const COUNT: usize = 200;
const MURMUR2_RANDOM: [&str; 2] = ["--set", "partitioner=murmur2_random"];

fn key_of(record: &peer::PeerRecord) -> &[u8] {
    record.key.as_deref().unwrap_or_else(|| panic!("a keyed record came back without its key: {record:?}"))
}

/// Has librdkafka partition `COUNT` keyed records of a topic with `partitions`
/// partitions, and checks klife's choice for every one.
fn same_partitions_as_librdkafka(partitions: i32) {
    let topic = format!("keys-{partitions}");
    let mock = MockCluster::start(1, &[(&topic, partitions)]);
    let delivered = peer::produce_keyed(mock.bootstrap(), &topic, COUNT, &MURMUR2_RANDOM);
    assert_eq!(delivered.len(), COUNT, "every record is delivered");

    let mut keys = HashSet::new();
    let mut used = HashSet::new();
    for record in &delivered {
        let key = key_of(record);
        assert!(keys.insert(key.to_vec()), "key {:?} delivered twice", String::from_utf8_lossy(key));
        assert_eq!(
            murmur2_partition(key, partitions),
            record.partition,
            "key {:?} with {partitions} partitions",
            String::from_utf8_lossy(key)
        );
        used.insert(record.partition);
    }
    let expected_keys: HashSet<Vec<u8>> = (0..COUNT).map(|i| format!("key-{i}").into_bytes()).collect();
    assert_eq!(keys, expected_keys);
    // Not one partition for everything: the keys really were spread.
    assert!(used.len() as i32 >= partitions.min(6), "{partitions} partitions, used {used:?}");
}

#[test]
fn murmur2_matches_librdkafka_with_6_partitions() {
    same_partitions_as_librdkafka(6);
}

#[test]
fn murmur2_matches_librdkafka_with_32_partitions() {
    same_partitions_as_librdkafka(32);
}

/// The check above can fail: librdkafka's default partitioner (`consistent_random`,
/// CRC32 of the key) puts many of the same keys elsewhere.
#[test]
fn another_partitioner_disagrees() {
    let mock = MockCluster::start(1, &[("crc", 6)]);
    let delivered = peer::produce_keyed(mock.bootstrap(), "crc", COUNT, &[]);
    assert_eq!(delivered.len(), COUNT);
    let disagree = delivered.iter().filter(|r| murmur2_partition(key_of(r), 6) != r.partition).count();
    assert!(disagree > COUNT / 2, "only {disagree} of {COUNT} keys placed differently by consistent_random");
}
