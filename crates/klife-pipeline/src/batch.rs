//! Batching on a virtual clock: messages grouped by key into batches that close when
//! they reach `batch_size` items or `batch_timeout` after their first item.
//!
//! [`Batcher`] reads no clock: each call takes `now`, and
//! [`next_deadline`](Batcher::next_deadline) says when the driver must
//! [`poll`](Batcher::poll) next. A key has at most one open batch; its items stay in
//! push order within the batch, and its batches come out in the order they were opened
//! (as long as the driver handles what each call returns in order), so a key's items
//! come out in push order overall.

use std::collections::{BTreeMap, HashMap};
use std::hash::Hash;
use std::time::{Duration, Instant};

use crate::route::BatchKey;

/// A batching configuration that was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BatchConfigError {
    /// A batch holds at least one item.
    #[error("batch_size must be at least 1")]
    ZeroSize,
    /// A zero timeout would close every batch at its first item; use a `batch_size` of
    /// 1 for that.
    #[error("batch_timeout must be longer than zero")]
    ZeroTimeout,
}

/// How large a batch grows and how long it stays open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    batch_size: usize,
    batch_timeout: Duration,
}

impl BatchConfig {
    /// Batches of at most `batch_size` items, each closed at the latest `batch_timeout`
    /// after its first item.
    ///
    /// # Errors
    ///
    /// [`BatchConfigError::ZeroSize`] or [`BatchConfigError::ZeroTimeout`].
    pub fn new(batch_size: usize, batch_timeout: Duration) -> Result<BatchConfig, BatchConfigError> {
        if batch_size == 0 {
            return Err(BatchConfigError::ZeroSize);
        }
        if batch_timeout.is_zero() {
            return Err(BatchConfigError::ZeroTimeout);
        }
        Ok(BatchConfig { batch_size, batch_timeout })
    }

    /// The most items in a batch.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// How long after its first item a batch closes.
    pub fn batch_timeout(&self) -> Duration {
        self.batch_timeout
    }
}

impl Default for BatchConfig {
    /// 100 items, 1 second.
    fn default() -> BatchConfig {
        BatchConfig { batch_size: 100, batch_timeout: Duration::from_secs(1) }
    }
}

/// Why a batch closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Closed {
    /// It reached `batch_size` items.
    Full,
    /// `batch_timeout` passed since its first item.
    TimedOut,
    /// [`Batcher::drain`] closed it (shutdown, revocation).
    Drained,
}

/// A closed batch: the items of one key, in push order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch<T, K = BatchKey> {
    /// The key its items were pushed with.
    pub key: K,
    /// The items, in push order; never empty.
    pub items: Vec<T>,
    /// When its first item was pushed.
    pub opened_at: Instant,
    /// Why it closed.
    pub closed: Closed,
}

#[derive(Debug)]
struct Open<T> {
    items: Vec<T>,
    opened_at: Instant,
    /// Its opening order.
    seq: u64,
    /// When it times out; `None` past what an `Instant` can hold (it then closes only
    /// when full or drained).
    deadline: Option<Instant>,
}

/// Groups items by key into batches; see the [module docs](self).
///
/// ```
/// use std::time::{Duration, Instant};
///
/// use klife_pipeline::batch::{BatchConfig, Batcher, Closed};
///
/// let t0 = Instant::now();
/// let mut batcher = Batcher::new(BatchConfig::new(2, Duration::from_millis(50))?);
/// assert!(batcher.push("a", 1, t0).is_none());
/// assert!(batcher.push("b", 2, t0).is_none());
/// let full = batcher.push("a", 3, t0).expect("a is full");
/// assert_eq!((full.items, full.closed), (vec![1, 3], Closed::Full));
///
/// assert_eq!(batcher.next_deadline(), Some(t0 + Duration::from_millis(50)));
/// assert!(batcher.poll(t0 + Duration::from_millis(49)).is_empty());
/// let late = batcher.poll(t0 + Duration::from_millis(50));
/// assert_eq!(late[0].items, vec![2]);
/// assert_eq!(batcher.next_deadline(), None);
/// # Ok::<(), klife_pipeline::batch::BatchConfigError>(())
/// ```
#[derive(Debug)]
pub struct Batcher<T, K = BatchKey> {
    config: BatchConfig,
    open: HashMap<K, Open<T>>,
    /// The open batches that have a deadline, by deadline, then by opening order.
    by_deadline: BTreeMap<(Instant, u64), K>,
    next_seq: u64,
    items: usize,
}

impl<T, K: Clone + Eq + Hash> Batcher<T, K> {
    /// A batcher with no open batch.
    pub fn new(config: BatchConfig) -> Batcher<T, K> {
        Batcher { config, open: HashMap::new(), by_deadline: BTreeMap::new(), next_seq: 0, items: 0 }
    }

    /// Its configuration.
    pub fn config(&self) -> &BatchConfig {
        &self.config
    }

    /// Adds `item` to the open batch of `key`, opening one at `now` if there is none;
    /// returns the batch if this made it full.
    pub fn push(&mut self, key: K, item: T, now: Instant) -> Option<Batch<T, K>> {
        let batch_size = self.config.batch_size;
        let open = self.open_for(&key, now);
        open.items.push(item);
        let full = open.items.len() >= batch_size;
        self.items += 1;
        if !full {
            return None;
        }
        self.close(key, Closed::Full)
    }

    /// Adds `items`, in order, to the open batch of `key` as [`push`](Self::push)
    /// would one by one (a batch is opened at `now` when needed), looking the key up
    /// once per batch rather than once per item; returns the batches this made full.
    pub fn push_all(&mut self, key: K, items: impl IntoIterator<Item = T>, now: Instant) -> Vec<Batch<T, K>> {
        let batch_size = self.config.batch_size;
        let mut items = items.into_iter().peekable();
        let mut full = Vec::new();
        while items.peek().is_some() {
            let open = self.open_for(&key, now);
            let before = open.items.len();
            open.items.extend(items.by_ref().take(batch_size - before));
            let (after, is_full) = (open.items.len(), open.items.len() >= batch_size);
            self.items += after - before;
            if is_full {
                full.extend(self.close(key.clone(), Closed::Full));
            }
        }
        full
    }

    /// The open batch of `key`, opened at `now` if there is none.
    fn open_for(&mut self, key: &K, now: Instant) -> &mut Open<T> {
        if !self.open.contains_key(key) {
            let (deadline, seq) = (now.checked_add(self.config.batch_timeout), self.next_seq);
            self.next_seq += 1;
            if let Some(deadline) = deadline {
                self.by_deadline.insert((deadline, seq), key.clone());
            }
            let items = Vec::with_capacity(self.config.batch_size.min(1024));
            self.open.insert(key.clone(), Open { items, opened_at: now, seq, deadline });
        }
        self.open.get_mut(key).unwrap_or_else(|| unreachable!("inserted above"))
    }

    /// The batches whose timeout passed at `now`, earliest deadline first (ties in
    /// opening order).
    pub fn poll(&mut self, now: Instant) -> Vec<Batch<T, K>> {
        let mut due = Vec::new();
        while self.by_deadline.first_key_value().is_some_and(|((deadline, _), _)| *deadline <= now) {
            let Some((_, key)) = self.by_deadline.pop_first() else { break };
            due.extend(self.take(key, Closed::TimedOut));
        }
        due
    }

    /// When the earliest open batch times out: the driver polls then. `None` with no
    /// open batch (or none whose deadline an `Instant` can hold).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.by_deadline.first_key_value().map(|((deadline, _), _)| *deadline)
    }

    /// Closes every open batch, in opening order.
    pub fn drain(&mut self) -> Vec<Batch<T, K>> {
        self.by_deadline.clear();
        self.items = 0;
        let mut batches: Vec<(u64, Batch<T, K>)> = self
            .open
            .drain()
            .map(|(key, open)| {
                (open.seq, Batch { key, items: open.items, opened_at: open.opened_at, closed: Closed::Drained })
            })
            .collect();
        batches.sort_unstable_by_key(|(seq, _)| *seq);
        batches.into_iter().map(|(_, batch)| batch).collect()
    }

    /// Closes the open batch of `key` now, if there is one (a driver that must flush
    /// one key, such as a revoked partition's, before the others).
    pub fn flush(&mut self, key: &K) -> Option<Batch<T, K>> {
        self.close(key.clone(), Closed::Drained)
    }

    /// How many batches are open.
    pub fn open_batches(&self) -> usize {
        self.open.len()
    }

    /// How many items wait in open batches.
    pub fn pending_items(&self) -> usize {
        self.items
    }

    /// Whether no batch is open.
    pub fn is_empty(&self) -> bool {
        self.open.is_empty()
    }

    fn close(&mut self, key: K, closed: Closed) -> Option<Batch<T, K>> {
        let open = self.open.get(&key)?;
        if let Some(deadline) = open.deadline {
            self.by_deadline.remove(&(deadline, open.seq));
        }
        self.take(key, closed)
    }

    /// Removes the open batch of `key`, already out of `by_deadline`.
    fn take(&mut self, key: K, closed: Closed) -> Option<Batch<T, K>> {
        let open = self.open.remove(&key)?;
        self.items -= open.items.len();
        Some(Batch { key, items: open.items, opened_at: open.opened_at, closed })
    }
}

#[cfg(test)]
mod tests;
