//! The exactly-once scenario the suites share: N input records go through a group of
//! exactly-once members ([`klife::exactly_once`]) that copy each input to an output
//! topic, while members crash (and come back with the same transactional id, or with
//! a new one), leave gracefully and come back, and the caller injects its own faults
//! (brokers killed, leaders moved). At the end a read_committed reader of the output
//! must see each input exactly once.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use klife::exactly_once::{ExactlyOnce, ExactlyOnceConfig, Transform, TransformError};
use klife::group::{BatchSize, ResetPolicy, TopicConfig};
use klife::pipeline::{Message, Pipeline, PipelineConfig, Processor};
use klife::{ConsumerEvent, FetchOptions, IsolationLevel, ProducerRecord, Record, StartOffset, TopicPartition};

use crate::groups::{HANG_GUARD, driver_for};
use crate::{Broker, unique_topic};

/// Copies every input record's value to the output topic, keyed by the value; counts
/// its calls (a batch transformed again after an abort counts again).
struct Copy {
    out: String,
    calls: Arc<AtomicU64>,
}

impl Transform for Copy {
    async fn transform(&self, records: &[Record]) -> Result<Vec<ProducerRecord>, TransformError> {
        self.calls.fetch_add(records.len() as u64, Ordering::Relaxed);
        Ok(records
            .iter()
            .map(|r| {
                let value = r.value.clone().unwrap_or_default();
                ProducerRecord::new(self.out.as_str(), value.clone()).with_key(value)
            })
            .collect())
    }
}

/// The same copy as a pipeline's processor: each message produces its copy.
struct CopyProcessor {
    out: String,
    calls: Arc<AtomicU64>,
}

impl Processor for CopyProcessor {
    async fn handle_message(&self, message: &mut Message) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let value = message.record().value.clone().unwrap_or_default();
        message.produce(ProducerRecord::new(self.out.as_str(), value.clone()).with_key(value));
    }
}

/// What runs the copy: exactly-once members, or transactional pipelines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `exactly_once(..)` members.
    Member,
    /// `transactional_pipeline(..)`s, with 2 producers and 3 processors.
    Pipeline,
}

/// A running copier.
enum Running {
    Member(ExactlyOnce),
    Pipeline(Pipeline),
}

impl Running {
    fn crash(self) {
        match self {
            Running::Member(m) => m.abort(),
            Running::Pipeline(p) => {
                p.group().abort_handle().abort();
                drop(p);
            }
        }
    }

    async fn shutdown(self) {
        match self {
            Running::Member(m) => drop(m.shutdown().await.unwrap_or_else(|e| panic!("member shut down: {e}"))),
            Running::Pipeline(p) => p.shutdown().await.unwrap_or_else(|e| panic!("pipeline shut down: {e}")),
        }
    }
}

/// The moments at which the scenario lets the caller inject its faults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// A quarter of the input is committed; member 0 was just crashed.
    Quarter,
    /// Half is committed; member 1 was just crashed.
    Half,
    /// Three quarters are committed; member 2 just left gracefully.
    ThreeQuarters,
}

/// What the scenario saw.
#[derive(Debug)]
pub struct Outcome {
    /// Input records.
    pub inputs: usize,
    /// Records the transforms were called with (repeats after aborts included).
    pub transformed: u64,
}

const PARTITIONS: i32 = 3;

#[allow(clippy::too_many_arguments)]
async fn member(
    kind: Kind,
    client: &klife::Client,
    broker: Broker,
    group: &str,
    input: &str,
    out: &str,
    txn_id: &str,
    calls: &Arc<AtomicU64>,
) -> Running {
    let builder =
        client.consumer_group(group).driver(driver_for(broker)).session_timeout(Duration::from_secs(10)).topic(
            TopicConfig::new(input)
                .offset_reset(ResetPolicy::Earliest)
                .fetch_interval(Duration::from_millis(50))
                .handler_max_batch_size(BatchSize::Max(40)),
        );
    let eos = ExactlyOnceConfig::new(txn_id)
        .with_transaction_timeout(Duration::from_secs(10))
        .with_retry_backoff(Duration::from_millis(100), Duration::from_secs(2))
        .with_max_attempts(50);
    match kind {
        Kind::Member => Running::Member(
            builder
                .exactly_once(eos, Copy { out: out.to_owned(), calls: calls.clone() })
                .await
                .unwrap_or_else(|e| panic!("exactly-once member {txn_id}: {e}")),
        ),
        Kind::Pipeline => Running::Pipeline(
            builder
                .transactional_pipeline(
                    PipelineConfig::default().producers(2).processors(3),
                    eos,
                    CopyProcessor { out: out.to_owned(), calls: calls.clone() },
                )
                .await
                .unwrap_or_else(|e| panic!("transactional pipeline {txn_id}: {e}")),
        ),
    }
}

/// The sum of the group's committed offsets of `topic` (0 while it cannot be read).
async fn committed_sum(client: &klife::Client, group: &str, topic: &str) -> i64 {
    let offsets = client.group_committed_offsets(group).await.unwrap_or_default();
    offsets.iter().filter(|(tp, _, _)| *tp.topic == *topic).map(|(_, o, _)| *o).sum()
}

/// Every value of `topic`, read_committed from the start to the end of each partition.
pub async fn read_committed_values(client: &klife::Client, topic: &str) -> Vec<String> {
    let mut consumer = client
        .consumer(FetchOptions::new().with_isolation_level(IsolationLevel::ReadCommitted))
        .with_partition_eof(true);
    let assignment: Vec<(&str, i32, StartOffset)> =
        (0..PARTITIONS).map(|p| (topic, p, StartOffset::Earliest)).collect();
    consumer.assign(&assignment).await.unwrap();
    let mut at_end = std::collections::BTreeSet::new();
    let mut values = Vec::new();
    tokio::time::timeout(HANG_GUARD, async {
        while at_end.len() < PARTITIONS as usize {
            match consumer.next_event().await {
                Some(ConsumerEvent::Records(fetched)) => values.extend(
                    fetched
                        .records
                        .iter()
                        .map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned()),
                ),
                Some(ConsumerEvent::PartitionEof { partition, .. }) => {
                    at_end.insert(partition);
                }
                Some(ConsumerEvent::Error(e)) => panic!("reading {topic}: {e}"),
                Some(_) => {}
                None => panic!("the consumer of {topic} ended"),
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("hung reading {topic}"));
    values
}

/// Runs the scenario on `broker` with `n` inputs; `fault` runs at each [`Stage`], given
/// the input and output topics.
/// Panics unless a read_committed reader of the output sees each input exactly once.
pub async fn scenario<F, Fut>(broker: Broker, kind: Kind, n: usize, mut fault: F) -> Outcome
where
    F: FnMut(Stage, [String; 2]) -> Fut,
    Fut: Future<Output = ()>,
{
    let client = broker.client().await;
    let input = unique_topic("eos-in");
    let out = unique_topic("eos-out");
    broker.create_topic(&client, &input, PARTITIONS).await;
    broker.create_topic(&client, &out, PARTITIONS).await;
    let records: Vec<ProducerRecord> = (0..n)
        .map(|i| ProducerRecord::new(input.as_str(), format!("in-{i:06}")).with_partition(i as i32 % PARTITIONS))
        .collect();
    for r in client.produce_batch(records).await {
        r.unwrap();
    }
    let group = unique_topic("eos-g");
    let calls = Arc::new(AtomicU64::new(0));
    let mut members: BTreeMap<usize, Running> = BTreeMap::new();
    for slot in 0..3 {
        members.insert(
            slot,
            member(kind, &client, broker, &group, &input, &out, &format!("{group}-{slot}"), &calls).await,
        );
    }
    let stages = [(n / 4, Stage::Quarter), (n / 2, Stage::Half), (3 * n / 4, Stage::ThreeQuarters)];
    for (at, stage) in stages {
        let target = (at as i64).max(1);
        if tokio::time::timeout(HANG_GUARD, async {
            while committed_sum(&client, &group, &input).await < target {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .is_err()
        {
            panic!("hung before {stage:?}: {} committed", committed_sum(&client, &group, &input).await);
        }
        let (slot, txn_id) = match stage {
            // A crash, and the same instance back: its producer fences the old one and
            // aborts what it left open.
            Stage::Quarter => (0, format!("{group}-0")),
            // A crash, and a new instance: what the old one left open times out.
            Stage::Half => (1, format!("{group}-1b")),
            // A graceful leave, and back.
            Stage::ThreeQuarters => (2, format!("{group}-2")),
        };
        let old = members.remove(&slot).unwrap();
        if stage == Stage::ThreeQuarters {
            old.shutdown().await;
        } else {
            old.crash();
        }
        members.insert(slot, member(kind, &client, broker, &group, &input, &out, &txn_id, &calls).await);
        fault(stage, [input.clone(), out.clone()]).await;
    }
    // Done when the group committed the end of every input partition.
    tokio::time::timeout(HANG_GUARD, async {
        while committed_sum(&client, &group, &input).await != n as i64 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("hung waiting for the group to commit every input"));
    let outcome = Outcome { inputs: n, transformed: calls.load(Ordering::Relaxed) };
    for (_, m) in members {
        m.shutdown().await;
    }

    // A crashed member's transaction stays open until it times out, and holds the
    // output's last stable offset below what the others committed: wait until nothing
    // is open (the last stable offset at the high watermark) before reading.
    tokio::time::timeout(HANG_GUARD, async {
        let queries: Vec<(TopicPartition, klife::OffsetSpec)> =
            (0..PARTITIONS).map(|p| (TopicPartition::new(out.as_str(), p), klife::OffsetSpec::Latest)).collect();
        loop {
            let stable = client.default_fetcher().list_offsets(&queries, IsolationLevel::ReadCommitted).await;
            let high = client.default_fetcher().list_offsets(&queries, IsolationLevel::ReadUncommitted).await;
            let offsets = |found: Vec<Result<klife::ListedOffset, klife::FetchError>>| -> Option<Vec<i64>> {
                found.into_iter().map(|r| r.ok().map(|l| l.offset)).collect()
            };
            if let (Some(stable), Some(high)) = (offsets(stable), offsets(high))
                && stable == high
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("hung waiting for the transactions left open on {out} to end"));
    let values = read_committed_values(&client, &out).await;
    let mut seen: BTreeMap<&str, usize> = BTreeMap::new();
    for v in &values {
        *seen.entry(v.as_str()).or_default() += 1;
    }
    let twice: Vec<(&&str, &usize)> = seen.iter().filter(|(_, c)| **c > 1).take(10).collect();
    assert!(twice.is_empty(), "outputs seen more than once: {twice:?} ({} outputs for {n} inputs)", values.len());
    let missing: Vec<String> =
        (0..n).map(|i| format!("in-{i:06}")).filter(|v| !seen.contains_key(v.as_str())).take(10).collect();
    assert!(missing.is_empty(), "inputs without output: {missing:?} ({} outputs for {n} inputs)", values.len());
    assert_eq!(values.len(), n);
    // Each input partition's offsets are committed to its end.
    let committed: Vec<(TopicPartition, i64)> =
        client.group_committed_offsets(&group).await.unwrap().into_iter().map(|(tp, o, _)| (tp, o)).collect();
    assert_eq!(committed.len(), PARTITIONS as usize, "{committed:?}");
    client.close().await;
    outcome
}
