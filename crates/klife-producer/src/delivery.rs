//! Delivery outcomes: one completion per batch, shared by the futures of its records.
//!
//! A batch's records succeed or fail together, so the producer settles a batch once
//! ([`BatchCompletion::complete`]) and each record's [`DeliveryFuture`] reads its own
//! outcome from the shared result (its offset is the batch's base offset plus its
//! position). Waiting tasks are woken once per batch, and no record needs a channel.
//!
//! A batch the broker refuses as too large is split and its halves sent again
//! ([`BatchCompletion::split`]): each half settles its own records, and the batch's
//! futures wake once every piece is settled.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};

use klife_connection::sync::lock;
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

/// How a batch's records were settled.
#[derive(Debug)]
enum Settlement {
    /// All together.
    Whole(Result<Written, ProduceError>),
    /// In pieces (the batch was split): the record number each piece starts at, and its
    /// result, in record order.
    Pieces(Vec<(i64, Result<Written, ProduceError>)>),
}

/// The shared result of one batch.
#[derive(Debug, Default)]
struct BatchResult {
    result: OnceLock<Settlement>,
    /// Tasks waiting for the result; taken (and woken) when it is set.
    wakers: Mutex<Vec<Waker>>,
}

impl BatchResult {
    /// Settles the batch (a second call changes nothing) and wakes its waiters.
    fn settle(&self, settlement: Settlement) {
        if self.result.set(settlement).is_ok() {
            let wakers = std::mem::take(&mut *lock(&self.wakers));
            for w in wakers {
                w.wake();
            }
        }
    }
}

/// The pieces of a split batch: their results so far, by the record number each
/// starts at. The batch is settled once every piece is.
#[derive(Debug)]
struct Pieces {
    batch: Arc<BatchResult>,
    results: Mutex<BTreeMap<i64, Option<Result<Written, ProduceError>>>>,
}

impl Pieces {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<i64, Option<Result<Written, ProduceError>>>> {
        lock(&self.results)
    }

    /// Settles the piece starting at record `start` (a second call changes nothing);
    /// the last piece settles the batch.
    fn complete(&self, start: i64, result: Result<Written, ProduceError>) {
        let mut results = self.lock();
        match results.get_mut(&start) {
            Some(slot @ None) => *slot = Some(result),
            _ => return,
        }
        if results.values().all(Option::is_some) {
            let pieces = std::mem::take(&mut *results).into_iter().filter_map(|(s, r)| r.map(|r| (s, r))).collect();
            drop(results);
            self.batch.settle(Settlement::Pieces(pieces));
        }
    }
}

/// The producer's side of a batch's result: settles every record of the batch at once.
/// Dropped without [`complete`](Self::complete) (the producer went away with the
/// batch), it fails the records with [`ProduceError::Closed`].
#[derive(Debug)]
pub(crate) struct BatchCompletion {
    kind: Completion,
}

#[derive(Debug)]
enum Completion {
    /// A whole batch.
    Whole(Arc<BatchResult>),
    /// The records of a split batch from record number `start` on, up to the next
    /// piece's start.
    Piece { pieces: Arc<Pieces>, start: i64 },
    /// Split into pieces that settle its records.
    Split,
}

impl Default for BatchCompletion {
    fn default() -> Self {
        BatchCompletion { kind: Completion::Whole(Arc::default()) }
    }
}

impl BatchCompletion {
    /// The future of the batch's record number `index`, with its create time.
    pub(crate) fn future(&self, index: usize, timestamp: i64) -> DeliveryFuture {
        let shared = match &self.kind {
            Completion::Whole(batch) => batch.clone(),
            Completion::Piece { pieces, .. } => pieces.batch.clone(),
            Completion::Split => Arc::default(),
        };
        DeliveryFuture { kind: Kind::Batch { shared, index: index as i64, timestamp, waker_slot: None } }
    }

    /// Settles the batch, or this piece of it (a second call changes nothing), and
    /// wakes the waiters once the whole batch is settled.
    pub(crate) fn complete(&self, result: Result<Written, ProduceError>) {
        match &self.kind {
            Completion::Whole(batch) => batch.settle(Settlement::Whole(result)),
            Completion::Piece { pieces, start } => pieces.complete(*start, result),
            Completion::Split => {}
        }
    }

    /// Splits the completion of `records` records after the first `at` of them: the
    /// two halves settle their own records, offsets counted from each half's base. The
    /// futures already handed out keep working.
    pub(crate) fn split(mut self, at: usize) -> (BatchCompletion, BatchCompletion) {
        let at = at as i64;
        let (pieces, start) = match std::mem::replace(&mut self.kind, Completion::Split) {
            Completion::Whole(batch) => {
                let pieces = Arc::new(Pieces { batch, results: Mutex::new(BTreeMap::from([(0, None)])) });
                (pieces, 0)
            }
            Completion::Piece { pieces, start } => (pieces, start),
            // Not reachable (`self` is consumed), and harmless: nothing waits on it.
            Completion::Split => (Arc::new(Pieces { batch: Arc::default(), results: Mutex::default() }), 0),
        };
        pieces.lock().insert(start + at, None);
        let second = BatchCompletion { kind: Completion::Piece { pieces: pieces.clone(), start: start + at } };
        (BatchCompletion { kind: Completion::Piece { pieces, start } }, second)
    }

    /// Whether the records it settles are settled already.
    fn is_settled(&self) -> bool {
        match &self.kind {
            Completion::Whole(batch) => batch.result.get().is_some(),
            Completion::Piece { pieces, start } => !matches!(pieces.lock().get(start), Some(None)),
            Completion::Split => true,
        }
    }
}

impl Drop for BatchCompletion {
    fn drop(&mut self) {
        if !self.is_settled() {
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
fn outcome(settlement: &Settlement, index: i64, timestamp: i64) -> Outcome {
    let (result, index) = match settlement {
        Settlement::Whole(result) => (result, index),
        Settlement::Pieces(pieces) => {
            // The last piece starting at or before the record holds it.
            let at = pieces.partition_point(|(start, _)| *start <= index).saturating_sub(1);
            match pieces.get(at) {
                Some((start, result)) => (result, index - start),
                None => return Err(ProduceError::Closed),
            }
        }
    };
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
                let mut wakers = lock(&shared.wakers);
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

    #[tokio::test]
    async fn a_split_batch_settles_each_piece_from_its_own_base() {
        let c = BatchCompletion::default();
        let futures: Vec<_> = (0..6).map(|i| c.future(i, 100 + i as i64)).collect();
        let (first, rest) = c.split(2);
        // The second piece is split again: records 2-3 and 4-5.
        let (second, third) = rest.split(2);
        let waiting = tokio::spawn(async move {
            let mut out = Vec::new();
            for f in futures {
                out.push(f.await);
            }
            out
        });
        tokio::task::yield_now().await;
        third.complete(Ok(written(70, -1)));
        first.complete(Ok(written(50, -1)));
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "records wait for every piece");
        second.complete(Err(ProduceError::Encode("refused".into())));
        let out = waiting.await.unwrap();
        let offsets: Vec<_> = out.iter().map(|r| r.as_ref().map(|m| m.offset).map_err(|_| ())).collect();
        assert_eq!(offsets, [Ok(50), Ok(51), Err(()), Err(()), Ok(70), Ok(71)]);
        assert_eq!(out[5].as_ref().unwrap().timestamp, 105);
    }

    #[tokio::test]
    async fn a_dropped_piece_fails_only_its_records() {
        let c = BatchCompletion::default();
        let (a, b) = (c.future(0, 0), c.future(1, 0));
        let (first, second) = c.split(1);
        first.complete(Ok(written(9, -1)));
        drop(second);
        assert_eq!(a.await.unwrap().offset, 9);
        assert!(matches!(b.await, Err(ProduceError::Closed)));
    }
}
