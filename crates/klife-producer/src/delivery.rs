//! Delivery outcomes: one completion per batch, shared by the futures of its records.
//!
//! A batch's records succeed or fail together, so the producer settles a batch once
//! ([`BatchCompletion::complete`]) and each record's [`DeliveryFuture`] reads its own
//! outcome from the shared result (its offset is the batch's base offset plus its
//! position). Waiting tasks are woken once per batch, and no record needs a channel.

use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::task::{Context, Poll, Waker};

use tokio::sync::oneshot;

use crate::{ProduceError, RecordMetadata};

/// A record's outcome.
pub(crate) type Outcome = Result<RecordMetadata, ProduceError>;

/// Where a batch was written.
#[derive(Debug)]
pub(crate) struct Written {
    pub(crate) topic: Arc<str>,
    pub(crate) partition: i32,
    /// Offset of the first record; -1 when unknown (`acks = 0`, or a duplicate).
    pub(crate) base: i64,
    /// The broker's append time, or -1 for the records' create time.
    pub(crate) append_time: i64,
}

/// The shared result of one batch.
#[derive(Debug, Default)]
struct BatchResult {
    result: OnceLock<Result<Written, ProduceError>>,
    /// Tasks waiting for the result; taken (and woken) when it is set.
    wakers: Mutex<Vec<Waker>>,
}

/// The producer's side of a batch's result: settles every record of the batch at once.
/// Dropped without [`complete`](Self::complete) (the producer went away with the
/// batch), it fails the records with [`ProduceError::Closed`].
#[derive(Debug, Default)]
pub(crate) struct BatchCompletion {
    shared: Arc<BatchResult>,
}

impl BatchCompletion {
    /// The future of the batch's record number `index`, with its create time.
    pub(crate) fn future(&self, index: usize, timestamp: i64) -> DeliveryFuture {
        DeliveryFuture {
            kind: Kind::Batch { shared: self.shared.clone(), index: index as i64, timestamp, waker_slot: None },
        }
    }

    /// Settles the batch (a second call changes nothing) and wakes its waiters.
    pub(crate) fn complete(&self, result: Result<Written, ProduceError>) {
        if self.shared.result.set(result).is_ok() {
            let wakers = std::mem::take(&mut *self.shared.wakers.lock().unwrap_or_else(PoisonError::into_inner));
            for w in wakers {
                w.wake();
            }
        }
    }
}

impl Drop for BatchCompletion {
    fn drop(&mut self) {
        if self.shared.result.get().is_none() {
            self.complete(Err(ProduceError::Closed));
        }
    }
}

#[derive(Debug)]
enum Kind {
    /// A record of a batch.
    Batch {
        shared: Arc<BatchResult>,
        index: i64,
        timestamp: i64,
        /// Where this future's waker is in the batch's list, once registered.
        waker_slot: Option<usize>,
    },
    /// An outcome sent by some other means (a transaction's bookkeeping).
    Channel(oneshot::Receiver<Outcome>),
}

/// The outcome of one record, to await or to drop (the record is produced either way).
#[derive(Debug)]
pub struct DeliveryFuture {
    kind: Kind,
}

impl DeliveryFuture {
    pub(crate) fn from_receiver(rx: oneshot::Receiver<Outcome>) -> Self {
        DeliveryFuture { kind: Kind::Channel(rx) }
    }
}

/// A record's outcome from its batch's.
fn outcome(result: &Result<Written, ProduceError>, index: i64, timestamp: i64) -> Outcome {
    match result {
        Ok(w) => Ok(RecordMetadata {
            topic: w.topic.clone(),
            partition: w.partition,
            offset: if w.base >= 0 { w.base + index } else { -1 },
            timestamp: if w.append_time >= 0 { w.append_time } else { timestamp },
        }),
        Err(e) => Err(e.clone()),
    }
}

impl Future for DeliveryFuture {
    type Output = Outcome;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        match &mut self.kind {
            Kind::Channel(rx) => Pin::new(rx).poll(cx).map(|r| r.unwrap_or(Err(ProduceError::Closed))),
            Kind::Batch { shared, index, timestamp, waker_slot } => {
                if let Some(r) = shared.result.get() {
                    return Poll::Ready(outcome(r, *index, *timestamp));
                }
                let mut wakers = shared.wakers.lock().unwrap_or_else(PoisonError::into_inner);
                // Set before the list was taken: the list is no longer looked at.
                if let Some(r) = shared.result.get() {
                    drop(wakers);
                    return Poll::Ready(outcome(r, *index, *timestamp));
                }
                match *waker_slot {
                    Some(i) if i < wakers.len() => wakers[i].clone_from(cx.waker()),
                    _ => {
                        *waker_slot = Some(wakers.len());
                        wakers.push(cx.waker().clone());
                    }
                }
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn written(base: i64, append_time: i64) -> Written {
        Written { topic: "t".into(), partition: 2, base, append_time }
    }

    #[tokio::test]
    async fn every_record_reads_its_offset_from_the_batch() {
        let c = BatchCompletion::default();
        let futures: Vec<_> = (0..3).map(|i| c.future(i, 100 + i as i64)).collect();
        let waiting = tokio::spawn(async move {
            let mut out = Vec::new();
            for f in futures {
                out.push(f.await.unwrap());
            }
            out
        });
        tokio::task::yield_now().await;
        c.complete(Ok(written(40, -1)));
        let out = waiting.await.unwrap();
        assert_eq!(out.iter().map(|m| m.offset).collect::<Vec<_>>(), [40, 41, 42]);
        assert_eq!(out.iter().map(|m| m.timestamp).collect::<Vec<_>>(), [100, 101, 102]);
        assert!(out.iter().all(|m| m.partition == 2 && &*m.topic == "t"));
    }

    #[tokio::test]
    async fn append_time_and_unknown_offsets() {
        let c = BatchCompletion::default();
        let f = c.future(5, 1);
        c.complete(Ok(written(-1, 9_000)));
        let m = f.await.unwrap();
        assert_eq!((m.offset, m.timestamp), (-1, 9_000));
        // A later call changes nothing.
        c.complete(Err(ProduceError::Closed));
        assert!(c.future(0, 0).await.is_ok());
    }

    #[tokio::test]
    async fn a_failed_or_dropped_batch_fails_every_record() {
        let c = BatchCompletion::default();
        let (a, b) = (c.future(0, 0), c.future(1, 0));
        c.complete(Err(ProduceError::Encode("boom".into())));
        assert!(matches!(a.await, Err(ProduceError::Encode(_))));
        assert!(matches!(b.await, Err(ProduceError::Encode(_))));

        let c = BatchCompletion::default();
        let f = c.future(0, 0);
        let waiting = tokio::spawn(f);
        tokio::task::yield_now().await;
        drop(c);
        assert!(matches!(waiting.await.unwrap(), Err(ProduceError::Closed)));
    }

    #[tokio::test]
    async fn futures_polled_together_are_all_woken() {
        let c = BatchCompletion::default();
        let futures: Vec<_> = (0..50).map(|i| c.future(i, 0)).collect();
        let waiting = tokio::spawn(async move {
            let mut set = tokio::task::JoinSet::new();
            for f in futures {
                set.spawn(f);
            }
            let mut n = 0;
            while let Some(r) = set.join_next().await {
                r.unwrap().unwrap();
                n += 1;
            }
            n
        });
        tokio::task::yield_now().await;
        c.complete(Ok(written(0, -1)));
        assert_eq!(waiting.await.unwrap(), 50);
    }
}
