//! What a run's members did, as they did it: every record handled (by whom, how often,
//! in which order the first deliveries of a partition came), and every ownership of a
//! partition with how it ended. The invariants are checked on it at the end; the
//! per-delivery ones (first-delivery order, values) as the records come.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use klife::TopicPartition;
use tokio::sync::Notify;

/// A member: its slot and which of the slot's members it is (0 for the first, one
/// more for each replacement).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemberId {
    /// The slot.
    pub slot: usize,
    /// The replacement count.
    pub incarnation: u32,
}

impl fmt::Display for MemberId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "m{}.{}", self.slot, self.incarnation)
    }
}

/// How a member's ownership of a partition ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Revoked: handed over gracefully.
    Revoked,
    /// Given up in a graceful shutdown.
    Shutdown,
    /// Lost: fenced, session expired (a hard failure).
    Lost,
    /// The partition's consumer failed and restarts from its last commit (a hard
    /// failure).
    Failed,
    /// The member was killed while it owned the partition (a hard failure).
    Killed,
}

impl End {
    /// Whether records handled and not committed may come again.
    pub fn is_hard(self) -> bool {
        matches!(self, End::Lost | End::Failed | End::Killed)
    }
}

/// One member's ownership of one partition.
#[derive(Debug, Clone)]
pub struct Ownership {
    /// The member.
    pub member: MemberId,
    /// The partition.
    pub partition: TopicPartition,
    /// How it ended (`None`: it runs).
    pub end: Option<End>,
}

/// What was seen.
#[derive(Debug, Default)]
pub struct Seen {
    /// How many times each record was handled.
    pub handled: HashMap<(TopicPartition, i64), u32>,
    /// The value of each record, as first handled.
    pub values: HashMap<(TopicPartition, i64), Option<Bytes>>,
    /// The last offset delivered first of each partition.
    pub last_first: HashMap<TopicPartition, i64>,
    /// Records handled more than once, per partition (each repeat counted).
    pub repeats: BTreeMap<TopicPartition, usize>,
    /// Who first handled each record.
    pub first_by: HashMap<(TopicPartition, i64), MemberId>,
    /// Each repeat: the offset, who handled it first and who again (evidence).
    pub again: BTreeMap<TopicPartition, Vec<(i64, MemberId, MemberId)>>,
    /// First deliveries that came below an earlier first delivery (evidence).
    pub order_breaks: Vec<String>,
    /// Records handled again with another value (evidence).
    pub value_changes: Vec<String>,
    /// Every ownership, in the order they started.
    pub ownerships: Vec<Ownership>,
    open: HashMap<(MemberId, TopicPartition), usize>,
    /// Batches handled, and the largest.
    pub batches: usize,
    /// The largest batch handled.
    pub largest_batch: usize,
}

impl Seen {
    /// The hard failures of each partition: ownerships that ended lost, failed or
    /// killed.
    pub fn hard_failures(&self) -> BTreeMap<TopicPartition, usize> {
        let mut out = BTreeMap::new();
        for o in &self.ownerships {
            if o.end.is_some_and(End::is_hard) {
                *out.entry(o.partition.clone()).or_default() += 1;
            }
        }
        out
    }

    /// The members whose ownership of `partition` runs now.
    pub fn open_owners(&self, partition: &TopicPartition) -> Vec<MemberId> {
        let mut out: Vec<MemberId> = self.open.keys().filter(|(_, p)| p == partition).map(|(m, _)| *m).collect();
        out.sort();
        out
    }

    /// The records of `partition` handled again, as ranges `from..=to first→again`
    /// (evidence).
    pub fn repeated(&self, partition: &TopicPartition) -> String {
        let mut runs: Vec<(i64, i64, MemberId, MemberId)> = Vec::new();
        let mut again = self.again.get(partition).cloned().unwrap_or_default();
        again.sort();
        for (o, first, by) in again {
            match runs.last_mut() {
                Some(r) if r.1 + 1 == o && r.2 == first && r.3 == by => r.1 = o,
                _ => runs.push((o, o, first, by)),
            }
        }
        let words: Vec<String> = runs.iter().map(|(a, b, f, by)| format!("{a}..={b} {f}→{by}")).collect();
        words.join(", ")
    }

    /// The ownerships of `partition`, as `member:end` words (evidence).
    pub fn history(&self, partition: &TopicPartition) -> String {
        let words: Vec<String> = self
            .ownerships
            .iter()
            .filter(|o| &o.partition == partition)
            .map(|o| format!("{}:{}", o.member, o.end.map_or("running".to_owned(), |e| format!("{e:?}"))))
            .collect();
        words.join(" ")
    }
}

/// A shared [`Seen`], with a count of distinct records handled and a wake-up for
/// every change.
#[derive(Debug, Clone, Default)]
pub struct Log {
    seen: Arc<Mutex<Seen>>,
    distinct: Arc<AtomicUsize>,
    stalls: Arc<AtomicUsize>,
    changed: Arc<Notify>,
}

impl Log {
    /// Reads what was seen.
    pub fn read<T>(&self, f: impl FnOnce(&Seen) -> T) -> T {
        f(&self.seen.lock().unwrap_or_else(PoisonError::into_inner))
    }

    fn with<T>(&self, f: impl FnOnce(&mut Seen) -> T) -> T {
        let out = f(&mut self.seen.lock().unwrap_or_else(PoisonError::into_inner));
        self.changed.notify_waiters();
        out
    }

    /// How many distinct records were handled.
    pub fn distinct(&self) -> usize {
        self.distinct.load(Ordering::SeqCst)
    }

    /// Waits until `done` holds, or `guard` passed (false then).
    pub async fn until(&self, guard: Duration, done: impl Fn(&Seen) -> bool) -> bool {
        tokio::time::timeout(guard, async {
            loop {
                let notified = self.changed.notified();
                if self.read(&done) {
                    return;
                }
                // Also look again now and then: a condition may read state the log
                // does not own.
                let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
            }
        })
        .await
        .is_ok()
    }

    /// `member` handled these records (a batch, in offset order).
    pub fn handled<'a>(&self, member: MemberId, records: impl IntoIterator<Item = &'a klife::Record>) {
        let mut fresh = 0;
        self.with(|s| {
            let mut n = 0;
            for r in records {
                n += 1;
                let tp = TopicPartition::new(r.topic.clone(), r.partition);
                let key = (tp.clone(), r.offset);
                let times = s.handled.entry(key.clone()).or_default();
                *times += 1;
                if *times == 1 {
                    fresh += 1;
                    s.first_by.insert(key.clone(), member);
                    s.values.insert(key, r.value.clone());
                    let last = s.last_first.entry(tp.clone()).or_insert(-1);
                    if r.offset < *last {
                        s.order_breaks
                            .push(format!("{tp}: offset {} first handled (by {member}) after offset {last}", r.offset));
                    }
                    *last = (*last).max(r.offset);
                } else {
                    *s.repeats.entry(tp.clone()).or_default() += 1;
                    let first = s.first_by.get(&key).copied().unwrap_or(member);
                    s.again.entry(tp.clone()).or_default().push((r.offset, first, member));
                    if s.values.get(&key) != Some(&r.value) {
                        s.value_changes
                            .push(format!("{tp}@{}: handled again by {member} with another value", r.offset));
                    }
                }
            }
            s.batches += 1;
            s.largest_batch = s.largest_batch.max(n);
        });
        self.distinct.fetch_add(fresh, Ordering::SeqCst);
    }

    /// `member` starts owning `partition`.
    pub fn started(&self, member: MemberId, partition: TopicPartition) {
        self.with(|s| {
            let index = s.ownerships.len();
            s.ownerships.push(Ownership { member, partition: partition.clone(), end: None });
            if let Some(old) = s.open.insert((member, partition), index) {
                // Started again without a stop seen: the old one ended without a word.
                s.ownerships[old].end.get_or_insert(End::Failed);
            }
        });
    }

    /// `member` stops owning `partition`.
    pub fn stopped(&self, member: MemberId, partition: TopicPartition, end: End) {
        self.with(|s| {
            if let Some(i) = s.open.remove(&(member, partition)) {
                s.ownerships[i].end.get_or_insert(end);
            }
        });
    }

    /// `member` was killed: everything it owns ends as [`End::Killed`], whatever it
    /// reports later.
    pub fn killed(&self, member: MemberId) {
        self.with(|s| {
            let open: Vec<(MemberId, TopicPartition)> = s.open.keys().filter(|(m, _)| *m == member).cloned().collect();
            for key in open {
                if let Some(i) = s.open.remove(&key) {
                    s.ownerships[i].end.get_or_insert(End::Killed);
                }
            }
        });
    }

    /// What is open for `member` (evidence).
    pub fn owned_by(&self, member: MemberId) -> Vec<TopicPartition> {
        self.read(|s| s.open.keys().filter(|(m, _)| *m == member).map(|(_, p)| p.clone()).collect())
    }

    /// A handler or driver held a batch past the rebalance timeout.
    pub fn stalled(&self) {
        self.stalls.fetch_add(1, Ordering::SeqCst);
    }

    /// How many batches were held past the rebalance timeout.
    pub fn stalls(&self) -> usize {
        self.stalls.load(Ordering::SeqCst)
    }
}
