//! librdkafka as the peer: produce records it writes, consume records klife wrote.

use std::process::Command;

use serde_json::Value;

use crate::mock_bin;

/// A record as the librdkafka peer printed it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerRecord {
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
    /// Key.
    pub key: Option<Vec<u8>>,
    /// Value.
    pub value: Option<Vec<u8>>,
    /// Headers in order.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// Timestamp (ms).
    pub timestamp: i64,
}

fn hex(v: &Value) -> Option<Vec<u8>> {
    let s = v.as_str()?;
    Some((0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap()).collect())
}

fn parse(stdout: &[u8]) -> Vec<PeerRecord> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("peer printed {l:?}: {e}"));
            PeerRecord {
                partition: v["partition"].as_i64().unwrap() as i32,
                offset: v["offset"].as_i64().unwrap(),
                key: hex(&v["key"]),
                value: hex(&v["value"]),
                headers: v["headers"]
                    .as_array()
                    .map(|hs| hs.iter().map(|h| (h[0].as_str().unwrap().to_owned(), hex(&h[1]))).collect())
                    .unwrap_or_default(),
                timestamp: v["timestamp"].as_i64().unwrap_or(-1),
            }
        })
        .collect()
}

fn run(args: &[String]) -> Vec<PeerRecord> {
    let out = Command::new(mock_bin()).args(args).output().unwrap();
    assert!(out.status.success(), "librdkafka peer {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    parse(&out.stdout)
}

/// Produces `count` records to one partition with librdkafka, with keys, headers
/// (including a repeated key and a null value) and timestamps `1_700_000_000_000 + i`.
pub fn produce(bootstrap: &str, topic: &str, partition: i32, codec: &str, count: usize) -> Vec<PeerRecord> {
    let args: Vec<String> = [
        "produce",
        "--bootstrap",
        bootstrap,
        "--topic",
        topic,
        "--codec",
        codec,
        "--count",
        &count.to_string(),
        "--partition",
        &partition.to_string(),
        "--keys",
        "--headers",
        "--value-size",
        "40",
        "--timestamp-base",
        "1700000000000",
        "--linger-ms",
        "20",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    run(&args)
}

/// Produces `count` records keyed `key-<i>` without choosing their partitions, so that
/// librdkafka's partitioner picks them; `extra_args` are added to the peer's command line
/// (`["--set", "partitioner=murmur2_random"]` selects the Java-compatible partitioner).
pub fn produce_keyed(bootstrap: &str, topic: &str, count: usize, extra_args: &[&str]) -> Vec<PeerRecord> {
    let mut args: Vec<String> = [
        "produce",
        "--bootstrap",
        bootstrap,
        "--topic",
        topic,
        "--count",
        &count.to_string(),
        "--keys",
        "--linger-ms",
        "5",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    args.extend(extra_args.iter().map(|s| (*s).to_owned()));
    run(&args)
}

/// Reads `count` records of one partition from the beginning with librdkafka.
pub fn consume(bootstrap: &str, topic: &str, partition: i32, count: usize) -> Vec<PeerRecord> {
    let args: Vec<String> = [
        "consume",
        "--bootstrap",
        bootstrap,
        "--topic",
        topic,
        "--count",
        &count.to_string(),
        "--partition",
        &partition.to_string(),
        "--timeout-ms",
        "20000",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    run(&args)
}
