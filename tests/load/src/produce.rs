//! The producers: each writes its share of the records to every partition in turn,
//! starting at a partition of its own, and counts what the brokers acknowledged.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use klife::{Producer, ProducerRecord};

use crate::track::{Clock, Layout};

use crate::settings::WINDOW;

/// What the producers did.
#[derive(Debug)]
pub(crate) struct Produced {
    /// Records acknowledged, by partition index.
    pub(crate) per_partition: Vec<AtomicU64>,
    pub(crate) acked: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) first_error: Mutex<Option<String>>,
    /// When the last acknowledgement came ([`Clock`]).
    pub(crate) last_ack: AtomicU64,
}

impl Produced {
    pub(crate) fn new(partitions: usize) -> Produced {
        Produced {
            per_partition: (0..partitions).map(|_| AtomicU64::new(0)).collect(),
            acked: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            first_error: Mutex::new(None),
            last_ack: AtomicU64::new(0),
        }
    }

    fn fail(&self, error: String) {
        self.failed.fetch_add(1, Ordering::Relaxed);
        self.first_error.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(error);
    }

    pub(crate) fn first_error(&self) -> Option<String> {
        self.first_error.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

/// A delivery's outcome if it is known already.
fn ready<F: Future + Unpin>(delivery: &mut F) -> Option<F::Output> {
    match Pin::new(delivery).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(outcome) => Some(outcome),
        Poll::Pending => None,
    }
}

/// How many of `records` producer `i` of `producers` writes.
pub(crate) fn share(records: u64, producers: usize, i: usize) -> u64 {
    let n = producers as u64;
    records / n + u64::from((i as u64) < records % n)
}

/// The partition index of producer `i`'s record `j`.
pub(crate) fn partition_of(partitions: usize, producers: usize, i: usize, j: u64) -> usize {
    let start = i * partitions / producers;
    ((start as u64 + j) % partitions as u64) as usize
}

/// One producer and what it writes.
pub(crate) struct Writer {
    pub(crate) producer: Producer,
    /// Producers in all.
    pub(crate) producers: usize,
    /// Records in all.
    pub(crate) records: u64,
    pub(crate) layout: Arc<Layout>,
    /// Every record's value.
    pub(crate) value: Bytes,
    pub(crate) produced: Arc<Produced>,
    pub(crate) clock: Clock,
}

impl Writer {
    /// Producer `i`'s run: its share of the records, then waits for every outcome.
    pub(crate) async fn run(self, i: usize) {
        let Writer { producer, producers, records, layout, value, produced, clock } = self;
        let mut window = VecDeque::with_capacity(WINDOW);
        let settle = |outcome: Result<klife::RecordMetadata, klife::ProduceError>| match outcome {
            Ok(m) => match layout.index(&m.topic, m.partition) {
                Some(p) => {
                    produced.per_partition[p].fetch_add(1, Ordering::Relaxed);
                    produced.acked.fetch_add(1, Ordering::Relaxed);
                    produced.last_ack.fetch_max(clock.now_us(), Ordering::Relaxed);
                }
                None => {
                    produced.fail(format!("acknowledged at {}-{}, not a partition of the run", m.topic, m.partition))
                }
            },
            Err(e) => produced.fail(e.to_string()),
        };
        let owner = u32::try_from(i).unwrap_or(u32::MAX).to_be_bytes();
        for j in 0..share(records, producers, i) {
            let (topic, partition) = layout.at(partition_of(layout.partitions(), producers, i, j));
            let mut key = [0u8; crate::settings::KEY_SIZE];
            key[..4].copy_from_slice(&owner);
            key[4..].copy_from_slice(&(j as u32).to_be_bytes());
            let record = ProducerRecord::new(topic.clone(), value.clone())
                .with_partition(partition)
                .with_key(Bytes::copy_from_slice(&key));
            match producer.produce_async(record).await {
                Ok(delivery) => window.push_back(delivery),
                Err(e) => produced.fail(e.to_string()),
            }
            // Outcomes are counted as they come (for the progress lines), and the
            // window waits for the oldest when full.
            while let Some(oldest) = window.front_mut() {
                if let Some(outcome) = ready(oldest) {
                    settle(outcome);
                    window.pop_front();
                } else if window.len() >= WINDOW {
                    if let Some(oldest) = window.pop_front() {
                        settle(oldest.await);
                    }
                } else {
                    break;
                }
            }
        }
        while let Some(delivery) = window.pop_front() {
            settle(delivery.await);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_and_partitions_get_even_counts() {
        let (records, producers, partitions) = (100_003u64, 64, 1000);
        let shares: Vec<u64> = (0..producers).map(|i| share(records, producers, i)).collect();
        assert_eq!(shares.iter().sum::<u64>(), records);
        let mut per = vec![0u64; partitions];
        for (i, n) in shares.iter().enumerate() {
            for j in 0..*n {
                per[partition_of(partitions, producers, i, j)] += 1;
            }
        }
        let (lo, hi) = (per.iter().min().copied(), per.iter().max().copied());
        assert!(lo >= Some(records / partitions as u64 - producers as u64), "{lo:?}..{hi:?}");
        assert!(hi <= Some(records / partitions as u64 + producers as u64), "{lo:?}..{hi:?}");
    }
}
