//! The run's idempotent producers: each on a client of its own, writing its share of
//! the records in waves to partitions its seeded generator picks, while the group
//! consumes and the faults come. Every record's value names the seed, the producer and
//! its number, so that the log can be checked against what was acknowledged.

use std::sync::Arc;
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use klife::{ProducerConfig, ProducerRecord, TopicPartition};

use crate::plan::Plan;

/// The partition counts of the run's topics, raised by `AddPartitions` faults once the
/// new partitions answer.
#[derive(Debug)]
pub struct PartitionCounts(Vec<AtomicI32>);

impl PartitionCounts {
    /// The counts at the start.
    pub fn new(counts: &[i32]) -> Arc<PartitionCounts> {
        Arc::new(PartitionCounts(counts.iter().map(|c| AtomicI32::new(*c)).collect()))
    }

    /// Topic `topic`'s count.
    pub fn get(&self, topic: usize) -> i32 {
        self.0[topic].load(Ordering::SeqCst)
    }

    /// Sets topic `topic`'s count.
    pub fn set(&self, topic: usize, count: i32) {
        self.0[topic].store(count, Ordering::SeqCst);
    }

    /// Every partition of `topics` (named by number).
    pub fn partitions(&self, topics: &[String]) -> Vec<TopicPartition> {
        topics
            .iter()
            .enumerate()
            .flat_map(|(i, t)| (0..self.get(i)).map(move |p| TopicPartition::new(t.as_str(), p)))
            .collect()
    }
}

/// A record sent, and what became of it.
#[derive(Debug, Clone)]
pub struct Sent {
    /// The producer.
    pub producer: usize,
    /// Its number within the producer's records.
    pub number: usize,
    /// Where it went.
    pub partition: TopicPartition,
    /// Its value.
    pub value: Bytes,
    /// Its offset once acknowledged, or the error.
    pub outcome: Result<i64, String>,
}

/// Produces producer `index`'s share of the plan's records; returns every record with
/// its outcome, in the order sent.
pub async fn produce(
    plan: Arc<Plan>,
    client: klife::Client,
    topics: Vec<String>,
    counts: Arc<PartitionCounts>,
    index: usize,
) -> Result<Vec<Sent>, String> {
    let mut rng = fastrand::Rng::with_seed(plan.seed.wrapping_mul(31).wrapping_add(index as u64));
    let share = plan.records / plan.producers + usize::from(index < plan.records % plan.producers);
    let config = ProducerConfig::default().with_linger(Duration::from_millis(2));
    let producer = client.new_producer(config).await.map_err(|e| format!("producer {index}: {e}"))?;
    let mut sent = Vec::with_capacity(share);
    let mut number = 0;
    while number < share {
        let wave = plan.wave.min(share - number);
        let mut futures = Vec::with_capacity(wave);
        for _ in 0..wave {
            let topic = rng.usize(..topics.len());
            let partition = rng.i32(0..counts.get(topic));
            let value = Bytes::from(format!("s{}-w{index}-{number}", plan.seed));
            let record = ProducerRecord::new(topics[topic].clone(), value.clone()).with_partition(partition);
            let tp = TopicPartition::new(topics[topic].as_str(), partition);
            futures.push((tp, value, number, producer.produce_async(record).await));
            number += 1;
        }
        for (partition, value, number, queued) in futures {
            let outcome = match queued {
                Ok(delivery) => delivery.await.map(|m| m.offset).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            sent.push(Sent { producer: index, number, partition, value, outcome });
        }
        tokio::time::sleep(Duration::from_millis(plan.pause_ms)).await;
    }
    producer.close().await;
    Ok(sent)
}
