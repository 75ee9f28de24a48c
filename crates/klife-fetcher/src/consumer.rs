//! [`Consumer`]: a standalone consumer over a fetcher, for partitions the caller
//! assigns (no group): it keeps fetching each partition from where the last answer
//! ended, a bounded number of answers ahead of the caller.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use klife_protocol::Uuid;
use tokio::sync::mpsc;

use crate::config::{FetchOptions, FetcherConfig, IsolationLevel};
use crate::error::FetchError;
use crate::fetcher::Fetcher;
use crate::offsets::OffsetSpec;
use crate::plan::{Pace, Progress, caught_up, next_pace};
use crate::position::{Truncation, on_truncation};
use crate::record::{Fetched, TopicPartitionOffset};
use crate::stream::FetchResult;

/// Where a partition's consumption starts: an [`OffsetSpec`] to look up, or an
/// offset known already.
///
/// [`OffsetSpec`] is what a ListOffsets lookup can answer (earliest, latest, by
/// timestamp); `StartOffset` adds [`Offset`](Self::Offset), a position the caller
/// knows and which needs no lookup. Every `OffsetSpec` converts into the
/// `StartOffset` of the same name ([`From`]), and [`lookup`](Self::lookup) goes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOffset {
    /// The first offset still in the log.
    Earliest,
    /// The end of the log: only records written from now on.
    Latest,
    /// This offset.
    Offset(i64),
    /// The first record at or after this timestamp (milliseconds since the epoch);
    /// the end of the log when there is none.
    Timestamp(i64),
}

impl StartOffset {
    /// The lookup this start needs, or `None` for [`Offset`](Self::Offset).
    pub fn lookup(self) -> Option<OffsetSpec> {
        match self {
            StartOffset::Earliest => Some(OffsetSpec::Earliest),
            StartOffset::Latest => Some(OffsetSpec::Latest),
            StartOffset::Timestamp(ts) => Some(OffsetSpec::Timestamp(ts)),
            StartOffset::Offset(_) => None,
        }
    }
}

impl From<OffsetSpec> for StartOffset {
    fn from(spec: OffsetSpec) -> Self {
        match spec {
            OffsetSpec::Earliest => StartOffset::Earliest,
            OffsetSpec::Latest => StartOffset::Latest,
            OffsetSpec::Timestamp(ts) => StartOffset::Timestamp(ts),
        }
    }
}

/// What [`Consumer::next_event`] yields.
#[derive(Debug)]
#[non_exhaustive]
pub enum ConsumerEvent {
    /// An answer with records of one partition.
    Records(Fetched),
    /// A partition reached the end of what may be read (the high watermark, or for
    /// read_committed the last stable offset): every record written before the answer
    /// was read. Yielded only with [`Consumer::with_partition_eof`], once each time the
    /// partition catches up (again after records arrive and are read). `offset` is the
    /// partition's position, where the next record will be.
    PartitionEof {
        /// The topic.
        topic: Arc<str>,
        /// The partition.
        partition: i32,
        /// The position: the offset of the next record written.
        offset: i64,
    },
    /// An error of one partition (see [`Consumer`] for which stop it).
    Error(FetchError),
}

/// What to do when a partition's position is out of range (its records were deleted
/// by retention), or the log was truncated under it (an unclean leader election
/// dropped records it had read: [`FetchError::LogTruncated`]).
///
/// As in Kafka's Java consumer, a truncation is not an out-of-range position: with a
/// reset policy the partition goes on from the offset where its log and the one read
/// part (the records written there since are read; those read past it are gone), not
/// from the log's start or end. Each truncation is logged at `warn` and counted
/// ([`telemetry::FETCH_LOG_TRUNCATIONS_TOTAL`](crate::telemetry::FETCH_LOG_TRUNCATIONS_TOTAL)),
/// whatever the policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffsetReset {
    /// Out of range: go on from the first offset still in the log (the default).
    /// Truncated: go on from where the logs part.
    #[default]
    Earliest,
    /// Out of range: go on from the end of the log. Truncated: go on from where the
    /// logs part.
    Latest,
    /// Stop the partition and report [`FetchError::OffsetOutOfRange`] or
    /// [`FetchError::LogTruncated`] from [`Consumer::next`]; [`Consumer::seek`]
    /// resumes it.
    Error,
}

#[derive(Debug)]
struct Partition {
    /// The offset the next fetch starts at.
    position: i64,
    /// The leader epoch of the last batch read before `position`, if known.
    last_epoch: Option<i32>,
    /// The id of the topic `position` belongs to, once an answer said.
    topic_id: Option<Uuid>,
    /// The offset of the fetch in flight.
    in_flight: Option<i64>,
    /// Answers handed over to `ready` and not yet taken by the caller.
    buffered: usize,
    /// Stopped by an error that retrying does not cure.
    stopped: bool,
    /// How the next fetch goes: it waits for records only when the last answer
    /// reached the end of what may be read ([`plan::next_pace`](crate::plan::next_pace)).
    pace: Pace,
    /// Answers in a row that moved the partition nowhere.
    misses: u32,
    /// The last answer reached the end of what may be read (for the end-of-partition
    /// event: it is yielded when this turns true).
    at_end: bool,
    /// The reset lookup in flight after an out-of-range answer (its number: one a
    /// `seek` made stale is recognized and dropped).
    resetting: Option<u64>,
}

impl Partition {
    /// A fetch or a reset lookup of the partition is in flight: an answer will come.
    fn awaited(&self) -> bool {
        self.in_flight.is_some() || self.resetting.is_some()
    }
}

/// The answer of a reset lookup: where an out-of-range partition goes on.
#[derive(Debug)]
struct Reset {
    key: (Arc<str>, i32),
    /// The lookup's number ([`Partition::resetting`]).
    number: u64,
    /// The position that was out of range.
    from: i64,
    result: Result<i64, FetchError>,
}

/// A consumer of explicitly assigned partitions.
///
/// [`next`](Self::next) returns the next non-empty answer of any partition. Each
/// partition has at most one fetch in flight and at most `prefetch + 1` answers
/// waiting for the caller, so memory is bounded by about
/// `partitions × (prefetch + 2) × partition_max_bytes`. Answers of one partition come
/// in offset order, without gaps or repeats.
///
/// Each fetch carries the partition's position whole: the epoch of the last batch read
/// and the topic's id, so that a log truncated under the position or a topic deleted
/// and created again is noticed rather than read at the old offset.
///
/// Answers are taken in, and each partition's next fetch started, whenever the consumer
/// is polled: by [`next`](Self::next) and [`next_event`](Self::next_event), and by
/// [`receive`](Self::receive), which takes answers in without handing any over, for a
/// caller busy with an earlier answer that still wants the fetches to go on. All three
/// are cancel-safe: dropped before they complete (a `select!` branch that lost), they
/// lose nothing.
///
/// Errors: a retriable one (a timeout after the fetcher's own retries) is returned
/// and the partition is fetched again; any other stops the partition until
/// [`seek`](Self::seek), except an out-of-range position and a truncated log, which
/// the [`OffsetReset`] policy handles. A re-created topic
/// ([`FetchError::TopicRecreated`]) always stops the partition: its old position means
/// nothing in the new topic; `seek` reads the new one from the offset given.
#[derive(Debug)]
pub struct Consumer {
    fetcher: Fetcher,
    options: FetchOptions,
    reset: OffsetReset,
    prefetch: usize,
    tx: mpsc::UnboundedSender<FetchResult>,
    rx: mpsc::UnboundedReceiver<FetchResult>,
    /// Answers of reset lookups (out-of-range positions), each done in a task of its
    /// own so that taking an answer in never waits.
    reset_tx: mpsc::UnboundedSender<Reset>,
    reset_rx: mpsc::UnboundedReceiver<Reset>,
    /// The number of the next reset lookup.
    next_reset: u64,
    partitions: HashMap<(Arc<str>, i32), Partition>,
    ready: VecDeque<ConsumerEvent>,
    partition_eof: bool,
    /// The pause after an answer that brought nothing, and how many such answers in a
    /// row lengthen it.
    idle_backoff: (Duration, u32),
}

impl Consumer {
    /// A consumer with no partitions yet, fetching with `options`.
    pub fn new(fetcher: Fetcher, options: FetchOptions) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let (reset_tx, reset_rx) = mpsc::unbounded_channel();
        Consumer {
            fetcher,
            options,
            reset: OffsetReset::default(),
            prefetch: 1,
            tx,
            rx,
            reset_tx,
            reset_rx,
            next_reset: 0,
            partitions: HashMap::new(),
            ready: VecDeque::new(),
            partition_eof: false,
            idle_backoff: (Duration::ZERO, 0),
        }
    }

    /// Pauses a partition's next fetch after answers that brought nothing: `interval`
    /// after one, `n × interval` after `n` in a row, up to `max_steps × interval`
    /// (default: no pause). A caught-up partition's fetch already waits at the broker
    /// for records (the fetcher's `max_wait`); the pause comes on top, and spares the
    /// brokers the fetches of idle partitions at the cost of latency.
    #[must_use]
    pub fn with_idle_backoff(mut self, interval: Duration, max_steps: u32) -> Self {
        self.idle_backoff = (interval, max_steps);
        self
    }

    /// Sets what to do with an out-of-range position (default: earliest).
    #[must_use]
    pub fn with_offset_reset(mut self, reset: OffsetReset) -> Self {
        self.reset = reset;
        self
    }

    /// Sets how many answers per partition may wait for the caller beyond the one
    /// being handed over (default 1; 0 fetches only when the caller has taken the
    /// previous answer).
    #[must_use]
    pub fn with_prefetch(mut self, answers: usize) -> Self {
        self.prefetch = answers;
        self
    }

    /// Whether [`next_event`](Self::next_event) yields
    /// [`ConsumerEvent::PartitionEof`] when a partition catches up (default off, as
    /// librdkafka's `enable.partition.eof`). [`next`](Self::next) never yields it.
    #[must_use]
    pub fn with_partition_eof(mut self, on: bool) -> Self {
        self.partition_eof = on;
        self
    }

    /// How long the broker may hold this consumer's fetches of caught-up partitions
    /// waiting for records, instead of the fetcher's
    /// [`max_wait`](FetcherConfig::max_wait). The consumer then fetches through a
    /// fetcher of its own (the same settings otherwise, on the same cluster), with its
    /// own batcher tasks and fetch connections, which end when the consumer is dropped.
    /// Call it before assigning partitions: those assigned before are dropped.
    pub fn with_max_wait(mut self, max_wait: Duration) -> Result<Self, FetchError> {
        let config = FetcherConfig { max_wait, ..self.fetcher.config().clone() };
        config.validate()?;
        self.fetcher = Fetcher::new(self.fetcher.cluster().clone(), config)?;
        self.partitions.clear();
        self.ready.clear();
        Ok(self)
    }

    /// The fetcher this consumer fetches through.
    pub fn fetcher(&self) -> &Fetcher {
        &self.fetcher
    }

    /// Assigns every partition of `topic` (as the cluster metadata knows it now), each
    /// starting where `start` says, like [`assign`](Self::assign). Fails with
    /// [`FetchError::Connection`] when the topic does not exist.
    pub async fn assign_topic(&mut self, topic: &str, start: StartOffset) -> Result<(), FetchError> {
        let metadata = self.fetcher.cluster().add_topics(&[topic]).await?;
        let partitions = match metadata.topics.get(topic) {
            Some(info) if info.error == klife_protocol::ErrorCode::None => {
                info.partitions.iter().map(|p| (topic, p.partition, start)).collect::<Vec<_>>()
            }
            _ => return Err(klife_connection::Error::UnknownTopic { topic: topic.to_owned() }.into()),
        };
        self.assign(&partitions).await
    }

    /// Adds partitions, each starting where `start` says (looked up now), and starts
    /// fetching them. A partition already assigned moves to the new position.
    pub async fn assign<S: AsRef<str>>(&mut self, partitions: &[(S, i32, StartOffset)]) -> Result<(), FetchError> {
        let lookups: Vec<(klife_protocol::TopicPartition, OffsetSpec)> = partitions
            .iter()
            .filter_map(|(t, p, start)| Some((klife_protocol::TopicPartition::new(t.as_ref(), *p), start.lookup()?)))
            .collect();
        let isolation = self.options.isolation_level.unwrap_or(self.fetcher.config().isolation_level);
        let mut found = self.fetcher.list_offsets(&lookups, isolation).await.into_iter();
        let mut positions = Vec::with_capacity(partitions.len());
        for (t, p, start) in partitions {
            let offset = match start {
                StartOffset::Offset(o) => *o,
                _ => {
                    let listed =
                        found.next().unwrap_or_else(|| Err(FetchError::InvalidArgument("no answer".into())))?;
                    if listed.offset >= 0 {
                        listed.offset
                    } else {
                        // No record at or after the timestamp: the end of the log.
                        self.lookup(t.as_ref(), *p, OffsetSpec::Latest).await?
                    }
                }
            };
            positions.push((Arc::<str>::from(t.as_ref()), *p, offset));
        }
        for (t, p, offset) in positions {
            self.seek_arc(t, p, offset);
        }
        Ok(())
    }

    /// Stops consuming these partitions; answers of theirs already waiting are
    /// dropped.
    pub fn unassign<S: AsRef<str>>(&mut self, partitions: &[(S, i32)]) {
        for (t, p) in partitions {
            self.partitions.remove(&(Arc::<str>::from(t.as_ref()), *p));
        }
        let assigned = &self.partitions;
        self.ready.retain(|r| match r {
            ConsumerEvent::Records(Fetched { topic, partition, .. })
            | ConsumerEvent::PartitionEof { topic, partition, .. } => {
                assigned.contains_key(&(topic.clone(), *partition))
            }
            ConsumerEvent::Error(_) => true,
        });
    }

    /// Moves a partition to `offset` (assigning it if needed): answers of its old
    /// position already waiting are dropped, and a stopped partition resumes.
    pub fn seek(&mut self, topic: &str, partition: i32, offset: i64) {
        self.seek_arc(Arc::from(topic), partition, offset);
    }

    fn seek_arc(&mut self, topic: Arc<str>, partition: i32, offset: i64) {
        let key = (topic.clone(), partition);
        self.ready.retain(|r| match r {
            ConsumerEvent::Records(Fetched { topic: t, partition: p, .. })
            | ConsumerEvent::PartitionEof { topic: t, partition: p, .. } => *t != topic || *p != partition,
            ConsumerEvent::Error(_) => true,
        });
        let st = self.partitions.entry(key.clone()).or_insert(Partition {
            position: offset,
            last_epoch: None,
            topic_id: None,
            in_flight: None,
            buffered: 0,
            stopped: false,
            pace: Pace::UNKNOWN,
            misses: 0,
            at_end: false,
            resetting: None,
        });
        st.position = offset;
        // Nothing is known of the log before the new position, nor of the topic it is
        // in: the next answer says.
        (st.last_epoch, st.topic_id) = (None, None);
        st.buffered = 0;
        st.stopped = false;
        // Whether the new position has records is not known: ask at once.
        (st.pace, st.misses, st.at_end) = (Pace::UNKNOWN, 0, false);
        // An answer for the old position still in flight is recognized by its offset
        // (a reset lookup by its number) and dropped; fetch the new one now.
        st.in_flight = None;
        st.resetting = None;
        self.maybe_fetch(&key);
    }

    /// The assigned partitions and the offset each will be fetched from next.
    pub fn positions(&self) -> Vec<(Arc<str>, i32, i64)> {
        let mut v: Vec<_> = self.partitions.iter().map(|((t, p), s)| (t.clone(), *p, s.position)).collect();
        v.sort();
        v
    }

    /// The next answer with records (or error) of any assigned partition; `None` when
    /// no partition is being fetched (none assigned, or all stopped).
    pub async fn next(&mut self) -> Option<Result<Fetched, FetchError>> {
        loop {
            match self.next_event().await? {
                ConsumerEvent::Records(f) => return Some(Ok(f)),
                ConsumerEvent::Error(e) => return Some(Err(e)),
                ConsumerEvent::PartitionEof { .. } => {}
            }
        }
    }

    /// Like [`next`](Self::next), and also yields [`ConsumerEvent::PartitionEof`] when
    /// it is switched on ([`with_partition_eof`](Self::with_partition_eof)).
    pub async fn next_event(&mut self) -> Option<ConsumerEvent> {
        loop {
            if let Some(item) = self.ready.pop_front() {
                if let ConsumerEvent::Records(f) = &item {
                    let key = (f.topic.clone(), f.partition);
                    if let Some(st) = self.partitions.get_mut(&key) {
                        st.buffered = st.buffered.saturating_sub(1);
                    }
                    self.maybe_fetch(&key);
                }
                return Some(item);
            }
            if !self.partitions.values().any(Partition::awaited) {
                return None;
            }
            self.take_in().await;
        }
    }

    /// Waits for the next answer of a fetch (or reset lookup) in flight and takes it
    /// in: its records wait for [`next`](Self::next), and its partition's next fetch
    /// starts unless `prefetch + 1` answers of it wait already. Hands nothing over, and
    /// never completes while nothing is in flight. For a caller busy with an earlier
    /// answer (waiting for its commit, say) that wants the fetches to go on meanwhile:
    /// a consumer not polled takes no answer in, so each partition's next fetch would
    /// wait for the caller. Cancel-safe.
    pub async fn receive(&mut self) {
        if !self.partitions.values().any(Partition::awaited) {
            return std::future::pending().await;
        }
        self.take_in().await;
    }

    /// Takes in the next answer to arrive. Cancel-safe: only the receiving waits.
    async fn take_in(&mut self) {
        tokio::select! {
            Some((target, result)) = self.rx.recv() => self.on_answer(target, result),
            Some(reset) = self.reset_rx.recv() => self.on_reset(reset),
            // Both senders are the consumer's own: the channels never close.
            else => {}
        }
    }

    fn on_answer(&mut self, target: TopicPartitionOffset, result: Result<Fetched, FetchError>) {
        let key = (target.topic.clone(), target.partition);
        let isolation = self.isolation();
        let Some(st) = self.partitions.get_mut(&key) else { return };
        if st.in_flight != Some(target.offset) {
            return; // for a position left by `seek`
        }
        st.in_flight = None;
        match result {
            Ok(f) => {
                st.position = f.next_offset;
                st.last_epoch = f.last_epoch;
                st.topic_id = f.topic_id.or(st.topic_id);
                // The next fetch waits for records only if this answer reached the end
                // of what may be read (for read_committed, the last stable offset).
                let progress = Progress {
                    offset: target.offset,
                    next_offset: f.next_offset,
                    records: f.records.len(),
                    caught_up: caught_up(isolation, f.next_offset, f.high_watermark, f.last_stable_offset),
                };
                (st.pace, st.misses) = next_pace(&progress, st.misses);
                // An answer that does not say (watermarks left out) changes nothing.
                // It reaches the end anew when it was not there, or read records on the way.
                let at_end = progress.caught_up.unwrap_or(st.at_end);
                let reached_end = at_end && (!st.at_end || !f.records.is_empty());
                st.at_end = at_end;
                let position = st.position;
                if !f.records.is_empty() {
                    st.buffered += 1;
                    self.ready.push_back(ConsumerEvent::Records(f));
                }
                if reached_end && self.partition_eof {
                    self.ready.push_back(ConsumerEvent::PartitionEof {
                        topic: key.0.clone(),
                        partition: key.1,
                        offset: position,
                    });
                }
                self.maybe_fetch(&key);
            }
            Err(FetchError::OffsetOutOfRange { .. }) if self.reset != OffsetReset::Error => {
                let spec = if self.reset == OffsetReset::Earliest { OffsetSpec::Earliest } else { OffsetSpec::Latest };
                let number = self.next_reset;
                self.next_reset += 1;
                st.resetting = Some(number);
                let (fetcher, tx, from) = (self.fetcher.clone(), self.reset_tx.clone(), target.offset);
                tokio::spawn(async move {
                    let result = lookup(&fetcher, isolation, &key.0, key.1, spec).await;
                    // A consumer dropped meanwhile no longer reads it.
                    let _ = tx.send(Reset { key, number, from, result });
                });
            }
            Err(e @ FetchError::LogTruncated { offset, end_offset, epoch, .. }) => {
                match on_truncation(self.reset, epoch, end_offset) {
                    Truncation::Resume { offset: to, last_epoch } => {
                        tracing::warn!(
                            target: "klife_fetcher",
                            topic = %key.0,
                            partition = key.1,
                            from = offset,
                            to,
                            epoch,
                            "the log was truncated under the position (an unclean leader election): records read from {to} to {offset} are gone; going on from {to}"
                        );
                        st.position = to;
                        st.last_epoch = Some(last_epoch);
                        (st.pace, st.misses, st.at_end) = (Pace::UNKNOWN, 0, false);
                        self.maybe_fetch(&key);
                    }
                    Truncation::Stop => {
                        tracing::warn!(target: "klife_fetcher", topic = %key.0, partition = key.1, error = %e, "the log was truncated under the position; the partition stops");
                        self.stop(&key, e);
                    }
                }
            }
            Err(e @ FetchError::TopicRecreated { .. }) => {
                tracing::warn!(target: "klife_fetcher", topic = %key.0, partition = key.1, error = %e, "the topic was created again; the partition stops");
                self.stop(&key, e);
            }
            Err(e) if e.is_retriable() => {
                self.ready.push_back(ConsumerEvent::Error(e));
                self.maybe_fetch(&key);
            }
            Err(e) => self.stop(&key, e),
        }
    }

    /// A reset lookup answered: the partition goes on from the offset found, unless a
    /// `seek` moved it meanwhile.
    fn on_reset(&mut self, reset: Reset) {
        let Reset { key, number, from, result } = reset;
        let Some(st) = self.partitions.get_mut(&key) else { return };
        if st.resetting != Some(number) {
            return;
        }
        st.resetting = None;
        match result {
            Ok(offset) => {
                tracing::info!(target: "klife_fetcher", topic = %key.0, partition = key.1, from, to = offset, "offset out of range; reset");
                st.position = offset;
                st.last_epoch = None;
                (st.pace, st.misses, st.at_end) = (Pace::UNKNOWN, 0, false);
                self.maybe_fetch(&key);
            }
            Err(e) => self.stop(&key, e),
        }
    }

    fn stop(&mut self, key: &(Arc<str>, i32), e: FetchError) {
        if let Some(st) = self.partitions.get_mut(key) {
            st.stopped = true;
        }
        self.ready.push_back(ConsumerEvent::Error(e));
    }

    fn isolation(&self) -> IsolationLevel {
        self.options.isolation_level.unwrap_or(self.fetcher.config().isolation_level)
    }

    async fn lookup(&self, topic: &str, partition: i32, spec: OffsetSpec) -> Result<i64, FetchError> {
        lookup(&self.fetcher, self.isolation(), topic, partition, spec).await
    }

    /// Starts the partition's next fetch unless one is in flight, it is stopped, or
    /// enough answers wait.
    fn maybe_fetch(&mut self, key: &(Arc<str>, i32)) {
        let Some(st) = self.partitions.get_mut(key) else { return };
        if st.stopped || st.in_flight.is_some() || st.buffered > self.prefetch {
            return;
        }
        st.in_flight = Some(st.position);
        let target = TopicPartitionOffset {
            topic: key.0.clone(),
            partition: key.1,
            offset: st.position,
            last_epoch: st.last_epoch,
            topic_id: st.topic_id,
        };
        let (interval, max_steps) = self.idle_backoff;
        let pause = interval.saturating_mul(st.misses.min(max_steps));
        if pause.is_zero() {
            self.fetcher.submit_to(target, &self.options, st.pace, self.tx.clone());
            return;
        }
        let (fetcher, options, pace, tx) = (self.fetcher.clone(), self.options.clone(), st.pace, self.tx.clone());
        tokio::spawn(async move {
            tokio::time::sleep(pause).await;
            // A consumer dropped meanwhile no longer reads the answer.
            if !tx.is_closed() {
                fetcher.submit_to(target, &options, pace, tx);
            }
        });
    }
}

/// The offset `spec` names in a partition.
async fn lookup(
    fetcher: &Fetcher,
    isolation: IsolationLevel,
    topic: &str,
    partition: i32,
    spec: OffsetSpec,
) -> Result<i64, FetchError> {
    let found = fetcher.list_offsets(&[(klife_protocol::TopicPartition::new(topic, partition), spec)], isolation).await;
    found.into_iter().next().unwrap_or_else(|| Err(FetchError::InvalidArgument("no answer".into()))).map(|l| l.offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_start_is_a_lookup_or_a_known_offset() {
        for spec in [OffsetSpec::Earliest, OffsetSpec::Latest, OffsetSpec::Timestamp(1_700_000_000_000)] {
            assert_eq!(StartOffset::from(spec).lookup(), Some(spec));
        }
        assert_eq!(StartOffset::Offset(42).lookup(), None);
    }
}
