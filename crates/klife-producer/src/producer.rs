//! The producer: records go into the accumulator; one sender task groups the ready
//! batches by leader and batcher and hands, per batcher, one Produce request holding a
//! batch of every ready partition it serves (up to `max_in_flight_per_broker` requests
//! at once) to the batcher's lane, which queues its requests on the broker's
//! connection in order.
//!
//! Order per partition: with idempotence a partition has up to
//! `max_in_flight_per_partition` batches in flight, written in take order (a
//! partition stays on one batcher, whose lane queues its requests on a connection of
//! its own, answered in order), and the broker refuses
//! any batch whose sequence does not follow the log. A refused or lost batch goes back
//! among the partition's retries; nothing newer of the partition is sent until the
//! retries, sent one at a time once the partition has nothing else in flight, are
//! written. Without idempotence a partition has one batch in flight.
//!
//! Those decisions (sequences, producer id resets, retries, splits, delivery timeouts)
//! are the sans-io [`Sequencer`]'s; the tasks here move the batches' bytes and wait
//! for answers and timers.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use klife_connection::sync::lock;
use klife_connection::{Cluster, Lane, Metadata};
use klife_protocol::messages::produce_request::{PartitionProduceData, ProduceRequest, TopicProduceData};
use klife_protocol::messages::{InitProducerIdRequest, ProduceResponse};
use klife_protocol::{ApiKey, ErrorCode, ProducerIdAndEpoch};
use tokio::sync::{Notify, mpsc};

use crate::accumulator::{Accumulator, AppendError, QueueId, TopicPartition};
use crate::delivery::{BatchCompletion, DeliveryFuture, Outcome, Written};
use crate::hash::FastMap;
use crate::partitioner::{UNKNOWN_PARTITION, check_partition, random_partition_except};
use crate::telemetry;
use crate::{ProduceError, ProducerConfig, ProducerRecord};

mod flight;
mod sequencing;

use flight::{Body, Flight, Order};
use sequencing::{Action, Answer, Dispatch, Next, ProducerId, Sequencer, SequencerConfig};

/// Highest Produce version used: v12+ names topics by id.
const PRODUCE_MAX_VERSION: i16 = 11;

/// What the producer knows of a topic it produces to: its partitions' queues in the
/// accumulator, so that records neither look up the cluster metadata nor hash the
/// topic a second time.
struct TopicEntry {
    queues: Vec<QueueId>,
    /// The sticky partition of keyless records, when the producer keeps it (the
    /// default partitioner); [`UNKNOWN_PARTITION`] until the first one.
    sticky: i32,
}

impl TopicEntry {
    fn new<T, S: Default>(name: &Arc<str>, partitions: usize, acc: &mut Accumulator<T, S>) -> TopicEntry {
        let queues = (0..partitions as i32)
            .map(|p| acc.queue_id(&TopicPartition { topic: name.clone(), partition: p }))
            .collect();
        TopicEntry { queues, sticky: UNKNOWN_PARTITION }
    }

    /// The sticky partition, chosen at random when there is none yet (or the topic
    /// has fewer partitions than it).
    fn sticky_partition(&mut self, partitions: i32) -> i32 {
        if !(0..partitions).contains(&self.sticky) {
            self.sticky = random_partition_except(partitions, self.sticky);
        }
        self.sticky
    }
}

/// A (broker, batcher) pair: the unit that sends Produce requests, with its own window
/// of `max_in_flight_per_broker` requests.
type BatcherId = (i32, usize);

/// The batcher of a partition among `batchers` per broker, in a cluster of `brokers`.
///
/// Leadership is usually spread round-robin (partition `p` led by broker
/// `(p + k) % brokers`), so a broker's partitions are `brokers` apart: dividing by the
/// broker count first spreads them over its batchers instead of giving them all the
/// same one. A per-topic offset spreads topics of few partitions. The result depends
/// only on the topic, the partition and the broker count, so a partition's batches stay
/// on one batcher, in order.
fn batcher_of(topic: &str, partition: i32, batchers: usize, brokers: usize) -> usize {
    if batchers <= 1 {
        return 0;
    }
    // FNV-1a: stable across runs and builds, unlike std's RandomState.
    let offset = klife_connection::hash::fnv1a(topic.as_bytes());
    let rank = usize::try_from(partition).unwrap_or(0) / brokers.max(1);
    ((offset % batchers as u64) as usize + rank) % batchers
}

struct State {
    acc: Option<Accumulator<(), BatchCompletion>>,
    /// The ordering and idempotence rules: which batch goes next, with which stamp,
    /// and what its answer means.
    seq: Sequencer,
    /// Batches the sequencer holds back (waiting to be sent again, or to be split),
    /// by partition and take order.
    waiting: HashMap<(TopicPartition, Order), Flight>,
    /// The batcher each partition's last batch went out on. While it has batches in
    /// flight to that broker, the partition stays on it, even if the broker count (and
    /// with it [`batcher_of`]) changed: its next batch must not overtake them on
    /// another connection.
    batchers: HashMap<TopicPartition, BatcherId>,
    /// Produce requests in flight per batcher.
    requests: HashMap<BatcherId, usize>,
    /// Topics produced to, with their partition count as of `metadata` (kept up to
    /// date by the sender).
    topics: FastMap<Arc<str>, TopicEntry>,
    /// The metadata snapshot `topics` agrees with.
    metadata: Option<Arc<Metadata>>,
    flushing: usize,
    closed: bool,
}

/// What settling batches asked for, done once the producer's lock is released.
#[derive(Default)]
struct Settlements {
    /// Batches with their outcome.
    done: Vec<(Flight, Result<Written, ProduceError>)>,
    /// Batches refused as too large, to split.
    split: Vec<Flight>,
    refresh: bool,
    /// A new producer id is needed; the current one.
    reset: Option<Option<ProducerId>>,
}

impl State {
    /// Carries out the sequencer's actions; `held` are batches the caller holds (the
    /// ones it just settled), the others are among the waiting ones. A batch of
    /// `held` that no action names is waiting to be sent again.
    fn apply_actions(&mut self, held: Vec<Flight>, out: &mut Settlements) {
        let mut held: HashMap<(TopicPartition, Order), Flight> =
            held.into_iter().map(|f| ((f.partition.clone(), f.order), f)).collect();
        while let Some(action) = self.seq.poll_action() {
            match action {
                Action::Complete { partition, order, result } => {
                    let key = (partition, order);
                    let Some(mut f) = held.remove(&key).or_else(|| self.waiting.remove(&key)) else { continue };
                    if let Some(acc) = self.acc.as_mut() {
                        acc.release(f.reserved);
                        if result.is_ok()
                            && let Body::Finished(bytes) = std::mem::replace(&mut f.body, Body::Finished(Bytes::new()))
                        {
                            acc.recycle(bytes);
                        }
                    }
                    out.done.push((f, result));
                }
                Action::Split { partition, order } => {
                    let key = (partition, order);
                    if let Some(f) = held.remove(&key).or_else(|| self.waiting.remove(&key)) {
                        out.split.push(f);
                    }
                }
                Action::RefreshMetadata => out.refresh = true,
                Action::ResetProducerId { current } => out.reset = Some(current),
            }
        }
        self.waiting.extend(held);
    }
}

struct Inner {
    cluster: Cluster,
    config: ProducerConfig,
    /// The transactional id, for a transactional producer: it goes into every Produce
    /// request (brokers refuse transactional batches without it), batches are stamped
    /// transactional, and sequence errors are not repaired by a new producer id (the
    /// transaction must abort instead).
    transactional_id: Option<Arc<str>>,
    /// The partitioner leaves keyless records to the producer's own sticky partition
    /// per topic (see [`Partitioner::builtin_sticky`](crate::partitioner::Partitioner::builtin_sticky)).
    builtin_sticky: bool,
    state: Mutex<State>,
    /// Wakes the sender: a batch is full or new, a request finished, a flush started.
    wake: Notify,
    /// Wakes producers waiting for buffer room, and flushers.
    progress: Notify,
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        lock(&self.state)
    }
}

impl Inner {
    /// The last handle is gone without [`Producer::close`]: records still buffered
    /// fail with [`ProduceError::Closed`] (their completions are dropped unsettled),
    /// and the sender stops at its next look (it finds no accumulator). Requests in
    /// flight are still answered and settle their batches; a batch waiting to be sent
    /// again fails with [`ProduceError::Closed`] too.
    fn handles_gone(&self) {
        let (acc, waiting) = {
            let mut state = self.lock();
            state.closed = true;
            (state.acc.take(), std::mem::take(&mut state.waiting))
        };
        // Dropped outside the lock: their futures wake.
        drop(acc);
        drop(waiting);
        self.wake.notify_one();
        self.progress.notify_waiters();
    }
}

/// What every clone of a [`Producer`] shares: the last one to go stops the producer's
/// tasks ([`Inner::handles_gone`]), which alone hold the [`Inner`] after that.
struct Handle(Arc<Inner>);

impl std::ops::Deref for Handle {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.0.handles_gone();
    }
}

/// A producer over a [`Cluster`]. Cheap to clone; clones share batches and the sender.
///
/// Call [`close`](Self::close) to send what is buffered before letting it go. When
/// the last clone is dropped without it, the producer stops: records still buffered
/// fail with [`ProduceError::Closed`] (their [`DeliveryFuture`]s resolve so; nothing
/// is lost silently), requests already sent are answered and settle their records,
/// and then the producer's tasks end and let go of the [`Cluster`].
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Handle>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer").field("config", &self.inner.config).finish()
    }
}

/// What one attempt to queue a record came to.
enum Attempt {
    /// Queued, or refused for good.
    Done(Result<DeliveryFuture, ProduceError>),
    /// The topic's metadata is needed first: the topic is not cached yet, or the
    /// record's partition is beyond the cached partition count (the topic may have
    /// grown since the cache was refreshed).
    UnknownTopic,
    /// The buffer is full.
    BufferFull { limit: usize },
}

/// Awaits each queued record's outcome, in order; records refused before queueing keep
/// their error.
pub(crate) async fn outcomes_in_order(queued: Vec<Result<DeliveryFuture, ProduceError>>) -> Vec<Outcome> {
    let mut out = Vec::with_capacity(queued.len());
    for q in queued {
        out.push(match q {
            Ok(f) => f.await,
            Err(e) => Err(e),
        });
    }
    out
}

/// The wall clock in milliseconds since the epoch: a record's default timestamp.
#[cfg(any(target_os = "linux", target_os = "android"))]
fn now_millis() -> i64 {
    // One vDSO call, and no 128-bit or checked arithmetic on the per-record path.
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Realtime);
    t.tv_sec.saturating_mul(1000).saturating_add(t.tv_nsec / 1_000_000)
}

/// The wall clock in milliseconds since the epoch: a record's default timestamp.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn now_millis() -> i64 {
    // Seconds and milliseconds apart: no 128-bit arithmetic on the per-record path.
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX / 1000) * 1000 + i64::from(d.subsec_millis()))
}

impl Producer {
    /// A producer on `cluster`; with idempotence, it first gets a producer id.
    pub async fn new(cluster: Cluster, config: ProducerConfig) -> Result<Producer, ProduceError> {
        config.validate()?;
        let id = if config.idempotence { Some(init_producer_id(&cluster, None).await?) } else { None };
        Ok(Self::start(cluster, config, id, None))
    }

    /// A producer with a producer id obtained elsewhere (a transactional one).
    pub(crate) fn start(
        cluster: Cluster,
        config: ProducerConfig,
        id: Option<ProducerIdAndEpoch>,
        transactional_id: Option<Arc<str>>,
    ) -> Producer {
        let rules = SequencerConfig {
            max_in_flight: config.batches_in_flight_per_partition(),
            delivery_timeout: config.delivery_timeout,
            retry_backoff: config.retry_backoff,
            transactional_id: transactional_id.clone(),
        };
        let state = State {
            acc: Some(Accumulator::with_shared(config.accumulator())),
            seq: Sequencer::new(rules, id),
            waiting: HashMap::new(),
            batchers: HashMap::new(),
            requests: HashMap::new(),
            topics: FastMap::default(),
            metadata: None,
            flushing: 0,
            closed: false,
        };
        let inner = Arc::new(Inner {
            cluster,
            builtin_sticky: config.partitioner.builtin_sticky(),
            config,
            transactional_id,
            state: Mutex::new(state),
            wake: Notify::new(),
            progress: Notify::new(),
        });
        tokio::spawn(sender(inner.clone()));
        Producer { inner: Arc::new(Handle(inner)) }
    }

    /// The producer's id and epoch, when idempotent.
    pub fn producer_id(&self) -> Option<ProducerIdAndEpoch> {
        self.inner.lock().seq.producer_id()
    }

    /// Takes the producer id and epoch a transaction coordinator returned when it ended
    /// a transaction (EndTxn v5+, KIP-890: the epoch goes up at every transaction end).
    /// Called between transactions, with nothing in flight.
    pub(crate) fn adopt_producer_id(&self, id: ProducerIdAndEpoch) {
        self.inner.lock().seq.adopt_producer_id(id);
    }

    /// The cluster the producer writes to.
    pub fn cluster(&self) -> &Cluster {
        &self.inner.cluster
    }

    /// Produces a record and waits for its outcome.
    pub async fn produce(&self, record: ProducerRecord) -> Outcome {
        self.produce_async(record).await?.await
    }

    /// Queues a record, waiting for buffer room if needed (up to the delivery timeout),
    /// and returns its outcome as a future to await or drop.
    pub async fn produce_async(&self, record: ProducerRecord) -> Result<DeliveryFuture, ProduceError> {
        // The record stays where this future keeps it: no copy on the common path.
        let timestamp = record.timestamp.unwrap_or_else(now_millis);
        match self.try_enqueue(&record, timestamp, false) {
            Attempt::Done(result) => result,
            // Boxed, so that this future stays small to move.
            first => Box::pin(self.enqueue_slow(record, first, timestamp, true)).await,
        }
    }

    /// Queues a record and calls `callback` with its outcome when it is known (on a
    /// runtime task); errors before queueing are returned at once, without a call.
    pub async fn produce_with_callback<F>(&self, record: ProducerRecord, callback: F) -> Result<(), ProduceError>
    where
        F: FnOnce(Outcome) + Send + 'static,
    {
        let delivery = self.produce_async(record).await?;
        tokio::spawn(async move { callback(delivery.await) });
        Ok(())
    }

    /// Like [`produce_async`](Self::produce_async), but a full buffer is an immediate
    /// [`ProduceError::BufferFull`].
    pub async fn try_produce(&self, record: ProducerRecord) -> Result<DeliveryFuture, ProduceError> {
        let timestamp = record.timestamp.unwrap_or_else(now_millis);
        match self.try_enqueue(&record, timestamp, false) {
            Attempt::Done(result) => result,
            first => Box::pin(self.enqueue_slow(record, first, timestamp, false)).await,
        }
    }

    /// Queues records; one outcome future (or immediate error) per record, in input
    /// order.
    pub async fn produce_batch_async(&self, records: Vec<ProducerRecord>) -> Vec<Result<DeliveryFuture, ProduceError>> {
        let mut futures = Vec::with_capacity(records.len());
        for r in records {
            futures.push(self.produce_async(r).await);
        }
        futures
    }

    /// Produces records and returns each one's outcome, in input order. Order is kept
    /// per partition; a failure of one batch does not affect the others.
    pub async fn produce_batch(&self, records: Vec<ProducerRecord>) -> Vec<Outcome> {
        outcomes_in_order(self.produce_batch_async(records).await).await
    }

    /// The record's partition, and the topic's partition count.
    pub(crate) async fn partition_of(&self, record: &ProducerRecord) -> Result<(i32, i32), ProduceError> {
        let topic = &record.topic;
        let partitions = self.partition_count(topic, record.partition).await?;
        let p = match record.partition {
            Some(p) => p,
            None => self.inner.config.partitioner.partition(
                topic,
                record.key.as_deref(),
                record.value.as_deref(),
                partitions,
            ),
        };
        let p = check_partition(p, partitions)
            .map_err(|source| ProduceError::InvalidPartition { topic: topic.to_string(), source })?;
        Ok((p, partitions))
    }

    /// The topic's partition count from the cluster metadata, fetched if the topic is
    /// not known, or if `partition` (a record's own) is beyond the known count:
    /// partitions may have been added since the metadata was fetched.
    async fn partition_count(&self, topic: &str, partition: Option<i32>) -> Result<i32, ProduceError> {
        let mut m = self.inner.cluster.metadata();
        let known = m.topics.get(topic).map(|t| t.partitions.len() as i32);
        if known.is_none_or(|n| partition.is_some_and(|p| p >= n)) {
            m = self.inner.cluster.add_topics(&[topic]).await?;
        }
        match m.topics.get(topic) {
            Some(t) if t.error == ErrorCode::None => Ok(t.partitions.len() as i32),
            Some(t) if t.error != ErrorCode::UnknownTopicOrPartition => {
                Err(ProduceError::Broker { topic: topic.to_owned(), partition: -1, code: t.error, message: None })
            }
            _ => Err(ProduceError::UnknownTopic { topic: topic.to_owned() }),
        }
    }

    /// Queues the record if its topic is known and the buffer has room, without
    /// waiting: one lock, no allocation, one clock read only when a batch opens.
    ///
    /// With `fresh`, the topic's cache entry was just brought up to date: a partition
    /// out of range is the record's error rather than a reason to look again.
    fn try_enqueue(&self, record: &ProducerRecord, timestamp: i64, fresh: bool) -> Attempt {
        let inner = &*self.inner;
        let mut guard = inner.lock();
        let state = &mut *guard;
        if state.closed {
            return Attempt::Done(Err(ProduceError::Closed));
        }
        let Some(entry) = state.topics.get_mut(&*record.topic) else {
            return Attempt::UnknownTopic;
        };
        let partitions = entry.queues.len() as i32;
        let key = record.key.as_deref();
        let value = record.value.as_deref();
        // Keyless records of the default partitioner: the sticky partition is kept here.
        let sticky = inner.builtin_sticky && record.partition.is_none() && key.is_none();
        let partition = match record.partition {
            Some(p) => p,
            None if sticky => entry.sticky_partition(partitions),
            None => inner.config.partitioner.partition(&record.topic, key, value, partitions),
        };
        let partition = match check_partition(partition, partitions) {
            Ok(p) => p,
            Err(_) if !fresh => return Attempt::UnknownTopic,
            Err(source) => {
                return Attempt::Done(Err(ProduceError::InvalidPartition { topic: record.topic.to_string(), source }));
            }
        };
        let Some(acc) = state.acc.as_mut() else { return Attempt::Done(Err(ProduceError::Closed)) };
        let headers = &record.headers;
        let mut queue = entry.queues[partition as usize];
        let mut result = if sticky {
            // The sticky partition takes the record while its open batch has room; a
            // record that would start a new batch goes to another partition, which
            // becomes the sticky one (KIP-480).
            acc.append_to_open_batch(queue, timestamp, key, value, headers, ())
        } else {
            acc.append_record(queue, timestamp, key, value, headers, (), Instant::now)
        };
        if let Err(AppendError::NoOpenBatch { .. }) = result {
            entry.sticky = random_partition_except(partitions, partition);
            queue = entry.queues[entry.sticky as usize];
            result = acc.append_record(queue, timestamp, key, value, headers, (), Instant::now);
        }
        match result {
            Ok((appended, completion)) => {
                let delivery = completion.future(appended.index, timestamp);
                drop(guard);
                if appended.new_batch && !inner.builtin_sticky {
                    inner.config.partitioner.on_new_batch(&record.topic, partitions, partition);
                }
                if appended.new_batch || appended.batch_full {
                    inner.wake.notify_one();
                }
                Attempt::Done(Ok(delivery))
            }
            Err(AppendError::BufferFull { limit, .. }) => {
                drop(guard);
                Attempt::BufferFull { limit }
            }
            Err(AppendError::RecordTooLarge { size, limit, .. }) => {
                Attempt::Done(Err(ProduceError::RecordTooLarge { size, limit }))
            }
            Err(AppendError::Encode { reason, .. }) => Attempt::Done(Err(ProduceError::Encode(reason))),
            Err(AppendError::NoOpenBatch { .. }) => {
                Attempt::Done(Err(ProduceError::Encode("the record found no batch to go into".into())))
            }
        }
    }

    /// Learns unknown topics and waits for buffer room (up to the delivery timeout,
    /// and only with `wait`), trying again each time.
    async fn enqueue_slow(
        &self,
        record: ProducerRecord,
        first: Attempt,
        timestamp: i64,
        wait: bool,
    ) -> Result<DeliveryFuture, ProduceError> {
        let mut attempt = first;
        let mut deadline: Option<Instant> = None;
        loop {
            attempt = match attempt {
                Attempt::Done(result) => return result,
                Attempt::UnknownTopic => {
                    let partitions = self.partition_count(&record.topic, record.partition).await?;
                    let partitions = usize::try_from(partitions).unwrap_or(0);
                    let mut guard = self.inner.lock();
                    let state = &mut *guard;
                    let current = state.topics.get(&*record.topic).map(|e| e.queues.len());
                    if let (true, Some(acc)) = (current != Some(partitions), state.acc.as_mut()) {
                        let entry = TopicEntry::new(&record.topic, partitions, acc);
                        state.topics.insert(record.topic.clone(), entry);
                    }
                    drop(guard);
                    self.try_enqueue(&record, timestamp, true)
                }
                Attempt::BufferFull { limit } => {
                    let now = Instant::now();
                    let first_wait = deadline.is_none();
                    let until = *deadline.get_or_insert(now + self.inner.config.delivery_timeout);
                    if !wait || now >= until {
                        telemetry::record_buffer_full(false);
                        return Err(ProduceError::BufferFull { limit });
                    }
                    if first_wait {
                        telemetry::record_buffer_full(true);
                    }
                    // Made before trying again: room freed after the attempt wakes it.
                    let progressed = self.inner.progress.notified();
                    match self.try_enqueue(&record, timestamp, false) {
                        Attempt::BufferFull { .. } => {
                            let _ = tokio::time::timeout_at(until.into(), progressed).await;
                            self.try_enqueue(&record, timestamp, false)
                        }
                        other => other,
                    }
                }
            };
        }
    }

    /// Sends every buffered record now and waits until each has its outcome.
    pub async fn flush(&self) {
        self.inner.lock().flushing += 1;
        self.inner.wake.notify_one();
        loop {
            let progressed = self.inner.progress.notified();
            {
                let s = self.inner.lock();
                let idle = s.acc.as_ref().is_none_or(|a| a.waiting_records() == 0) && s.seq.idle();
                if idle {
                    break;
                }
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), progressed).await;
        }
        self.inner.lock().flushing -= 1;
    }

    /// Flushes, then stops the producer: later calls fail with [`ProduceError::Closed`].
    pub async fn close(&self) {
        self.flush().await;
        self.inner.lock().closed = true;
        self.inner.wake.notify_one();
    }
}

/// Gets a producer id; with `current`, bumps its epoch (KIP-360) where the broker can.
/// Sent to any broker under the connection layer's retry rule ([`Cluster::call_with`]):
/// retriable answers (a transaction coordinator still loading its log after a broker
/// starts, a coordinator not available yet, a dropped connection) are tried again until
/// the cluster's `retry_timeout`. A refusal is [`ProduceError::ProducerId`].
async fn init_producer_id(
    cluster: &Cluster,
    current: Option<ProducerIdAndEpoch>,
) -> Result<ProducerIdAndEpoch, ProduceError> {
    let policy = cluster.retry_policy();
    let resp = cluster
        .call_with(
            klife_connection::Target::AnyBroker,
            ApiKey::InitProducerId,
            &policy,
            |conn| async move {
                let version = conn.version_for(ApiKey::InitProducerId, None)?;
                let mut req =
                    InitProducerIdRequest::default().with_transactional_id(None).with_transaction_timeout_ms(-1);
                if let (Some(current), true) = (current, version >= 3) {
                    req = req.with_producer_id(current.id).with_producer_epoch(current.epoch);
                }
                conn.send_version(&req, version).await
            },
            |r| [r.error_code],
        )
        .await
        .map_err(|e| match e {
            klife_connection::Error::Broker { api: ApiKey::InitProducerId, code, message, .. } => {
                ProduceError::ProducerId { code, message }
            }
            e => ProduceError::Connection(e),
        })?;
    Ok(ProducerIdAndEpoch::new(resp.producer_id, resp.producer_epoch))
}

/// Gets a new producer id (or bumps the epoch) after a sequence error; every
/// partition's sequences start again at 0, and batches stamped with the old id are
/// re-stamped as they are sent again.
async fn reset_producer(inner: &Inner, current: Option<ProducerId>) {
    let result = init_producer_id(&inner.cluster, current).await;
    let mut state = inner.lock();
    match &result {
        Ok(id) => tracing::info!(producer_id = id.id, epoch = id.epoch, "new producer id after a sequence error"),
        Err(e) => tracing::warn!(error = %e, "producer id reset failed; the batches are retried"),
    }
    state.seq.on_producer_id(result.ok());
    drop(state);
    inner.wake.notify_one();
}

async fn sender(inner: Arc<Inner>) {
    let mut lanes: HashMap<BatcherId, mpsc::UnboundedSender<Vec<Flight>>> = HashMap::new();
    loop {
        let now = Instant::now();
        let Plan { requests, next_at, stop, more, reset } = plan(&inner, now);
        if let Some(current) = reset {
            let inner = inner.clone();
            tokio::spawn(async move { reset_producer(&inner, current).await });
        }
        for (batcher, batch) in requests {
            let lane = lanes.entry(batcher).or_insert_with(|| {
                let (tx, rx) = mpsc::unbounded_channel();
                tokio::spawn(lane(inner.clone(), batcher, rx));
                tx
            });
            if let Err(mpsc::error::SendError(batch)) = lane.send(batch) {
                // Lanes end only with the sender; should one be gone, the request
                // still goes, on a task of its own.
                let inner = inner.clone();
                tokio::spawn(async move {
                    let lane = inner.cluster.open_lane(batcher.0);
                    dispatch(&inner, &lane, batcher, batch).await;
                });
            }
        }
        if stop {
            return;
        }
        if more {
            continue;
        }
        let sleep = next_at
            .map_or(Duration::from_millis(100), |t| t.saturating_duration_since(now))
            .min(Duration::from_millis(100));
        let _ = tokio::time::timeout(sleep, inner.wake.notified()).await;
    }
}

/// What the sender does next.
struct Plan {
    /// Produce requests to send: batcher and its batches.
    requests: Vec<(BatcherId, Vec<Flight>)>,
    /// When to look again at the latest, if something waits for its linger or backoff.
    next_at: Option<Instant>,
    /// The producer is closed and idle.
    stop: bool,
    /// Some partition has more batches to send than this plan took: plan again at once.
    more: bool,
    /// A batch that failed before it went asked for a new producer id; the current one.
    reset: Option<Option<ProducerId>>,
}

impl Plan {
    fn stop() -> Plan {
        Plan { requests: Vec::new(), next_at: None, stop: true, more: false, reset: None }
    }
}

/// Brings the cached partition counts in line with a new metadata snapshot; a topic
/// the metadata no longer has (or has with an error) is dropped, so that its next
/// record looks it up again.
fn sync_topics(state: &mut State, metadata: &Arc<Metadata>) {
    if state.metadata.as_ref().is_some_and(|m| Arc::ptr_eq(m, metadata)) {
        return;
    }
    let Some(acc) = state.acc.as_mut() else { return };
    state.topics.retain(|name, entry| match metadata.topics.get(&**name) {
        Some(t) if t.error == ErrorCode::None => {
            if t.partitions.len() != entry.queues.len() {
                *entry = TopicEntry::new(name, t.partitions.len(), acc);
            }
            true
        }
        _ => false,
    });
    state.metadata = Some(metadata.clone());
}

/// Chooses what to send now: per batcher with room, one batch of each ready partition
/// it serves (a retried batch first). Returns the requests, when to look again, and
/// whether the sender should stop. Batches are finished (compressed, CRC) later, by
/// the task that sends them, outside the lock.
///
/// A partition has up to `max_in_flight_per_partition` batches in flight (one without
/// idempotence), one per request; a partition with more ready batches than this
/// plan's requests carry makes [`Plan::more`] true.
fn plan(inner: &Inner, now: Instant) -> Plan {
    let metadata = inner.cluster.metadata();
    let config = &inner.config;
    let mut state = inner.lock();
    let state = &mut *state;
    sync_topics(state, &metadata);
    let Some(acc) = state.acc.as_mut() else { return Plan::stop() };
    if state.closed && acc.waiting_records() == 0 && state.seq.idle() {
        return Plan::stop();
    }
    if state.seq.resetting() {
        // The reset wakes the sender when it ends; the backoff is a safety net.
        return Plan {
            requests: Vec::new(),
            next_at: Some(now + config.retry_backoff),
            stop: false,
            more: false,
            reset: None,
        };
    }
    let flush = state.flushing > 0 || state.closed;
    let readiness = acc.ready(now, flush);
    // A partition with batches in flight sends its retries once they have answered
    // (each answer wakes the sender).
    let next_at = match (readiness.next_ready_at, state.seq.poll_timeout().filter(|t| *t > now)) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let mut candidates: Vec<TopicPartition> = readiness.ready;
    candidates.extend(state.seq.due_retries(now).cloned());
    candidates.sort();
    candidates.dedup();
    let mut per_batcher: BTreeMap<BatcherId, Vec<Flight>> = BTreeMap::new();
    let mut more = false;
    for tp in candidates {
        let Some(next) = state.seq.next(now, &tp) else { continue };
        // A new batch's record count, for its sequence.
        let records = match next {
            Next::Retry => 0,
            Next::New => match acc.next_batch_len(&tp) {
                Some(len) => len as i32,
                None => continue,
            },
        };
        let leader = metadata.leader(&tp.topic, tp.partition).map(|(b, _)| b.node_id);
        let batcher = match state.batchers.get(&tp) {
            Some(&(b, i)) if state.seq.in_flight_to(&tp) == Some(b) && leader == Some(b) => i,
            _ => batcher_of(&tp.topic, tp.partition, config.batchers_per_broker, metadata.brokers.len()),
        };
        if let Some(l) = leader {
            let busy = state.requests.get(&(l, batcher)).copied().unwrap_or(0) >= config.max_in_flight_per_broker;
            if busy && !per_batcher.contains_key(&(l, batcher)) {
                // Every request of this batcher is in flight: the batch stays where it
                // is and keeps filling (dynamic batching); a finished request wakes us.
                continue;
            }
        }
        let (dispatch, new) = match next {
            Next::Retry => (state.seq.send_retry(now, &tp, leader), None),
            Next::New => {
                // A new batch is stamped as it is finished: one CRC pass, no copy.
                let stamped = state.seq.stamp_new(&tp, records);
                let Some(batch) = acc.take(&tp, stamped.1) else { continue };
                let (created, count) = (batch.created, batch.tokens.len() as i32);
                let flight = Flight::new(batch, stamped.0);
                (state.seq.send_new(now, &tp, stamped, count, created, leader), Some(flight))
            }
        };
        let Dispatch::Send { order, broker, stamp, restamped } = dispatch else {
            // Held back (no leader) or failed: the sequencer's actions say which.
            if let Some(flight) = new {
                state.waiting.insert((tp, flight.order), flight);
            }
            continue;
        };
        let Some(mut flight) = new.or_else(|| state.waiting.remove(&(tp.clone(), order))) else { continue };
        if let (true, Some(stamp)) = (restamped, stamp)
            && let Err(e) = flight.restamp(stamp)
        {
            // Settled with the actions below.
            state.seq.on_answer(now, &tp, order, Answer::Invalid(e));
            state.waiting.insert((tp, order), flight);
            continue;
        }
        state.batchers.insert(tp.clone(), (broker, batcher));
        // One batch of a partition per request: a further ready one goes in the next.
        more |= next == Next::New && state.seq.room_for_more(&tp) && acc.is_ready(&tp, now, flush);
        per_batcher.entry((broker, batcher)).or_default().push(flight);
    }
    for batcher in per_batcher.keys() {
        *state.requests.entry(*batcher).or_default() += 1;
    }
    // Batches expired or refused before they went, and leaderless partitions.
    let mut settled = Settlements::default();
    state.apply_actions(Vec::new(), &mut settled);
    for (f, result) in settled.done {
        f.completion.complete(result);
    }
    if settled.refresh {
        let cluster = inner.cluster.clone();
        tokio::spawn(async move {
            let _ = cluster.refresh_metadata().await;
        });
    }
    Plan { requests: per_batcher.into_iter().collect(), next_at, stop: false, more, reset: settled.reset }
}

/// A batcher's lane: takes its Produce requests in plan order and queues them on the
/// broker's connection in that order (a partition's batches in flight must reach the
/// broker in sequence order); each answer is awaited on a task of its own.
async fn lane(inner: Arc<Inner>, batcher: BatcherId, mut requests: mpsc::UnboundedReceiver<Vec<Flight>>) {
    // A connection of this batcher's own: its requests reach the broker in the order
    // queued, and the broker serves different batchers (of this producer or another
    // on the same cluster) side by side.
    let lane = inner.cluster.open_lane(batcher.0);
    while let Some(flights) = requests.recv().await {
        dispatch(&inner, &lane, batcher, flights).await;
    }
}

/// How far a Produce request got.
enum Queued {
    /// Nothing to send (every batch failed to finish).
    Nothing,
    /// Written, and the broker does not answer (`acks = 0`).
    NoAnswer,
    /// Queued on the connection (at the instant given); the answer comes here.
    Answer(klife_connection::Queued<ProduceResponse>, Instant),
}

/// Finishes the batches of one Produce request (compression and CRC, outside the
/// producer's lock) and queues the request on the broker's connection; a task of its
/// own then awaits the answer and settles each batch.
async fn dispatch(inner: &Arc<Inner>, lane: &Lane, batcher: BatcherId, mut flights: Vec<Flight>) {
    let config = &inner.config;
    // Compression and CRC here, on this task: the producer's lock is not held.
    let mut invalid: Vec<(Flight, String)> = Vec::new();
    let mut sendable = Vec::with_capacity(flights.len());
    for mut f in flights.drain(..) {
        match f.finish() {
            Ok(_) => sendable.push(f),
            Err(reason) => invalid.push((f, reason)),
        }
    }
    let flights = sendable;
    let mut topics: BTreeMap<&str, Vec<PartitionProduceData>> = BTreeMap::new();
    for f in &flights {
        let bytes = match &f.body {
            Body::Finished(bytes) => bytes.clone(),
            Body::Unfinished(_) => Bytes::new(),
        };
        topics
            .entry(&f.partition.topic)
            .or_default()
            .push(PartitionProduceData::default().with_index(f.partition.partition).with_records(Some(bytes)));
    }
    let timeout_ms = i32::try_from(inner.cluster.config().request_timeout.as_millis() * 3 / 4).unwrap_or(i32::MAX);
    let request = ProduceRequest::default()
        .with_transactional_id(inner.transactional_id.as_deref().map(str::to_owned))
        .with_acks(config.acks.code())
        .with_timeout_ms(timeout_ms)
        .with_topic_data(
            topics
                .into_iter()
                .map(|(t, p)| TopicProduceData::default().with_name(t.to_owned()).with_partition_data(p))
                .collect(),
        );
    let queued: Result<Queued, klife_connection::Error> = async {
        if flights.is_empty() {
            return Ok(Queued::Nothing);
        }
        let conn = lane.connection().await?;
        let version = conn.version_for(ApiKey::Produce, Some(PRODUCE_MAX_VERSION))?;
        if config.acks == crate::Acks::NoWait {
            conn.send_no_response(&request, version).await?;
            return Ok(Queued::NoAnswer);
        }
        // The batches go to the socket as they are, not copied into one frame.
        let parts = request.encode_parts(version).map_err(|source| klife_connection::Error::Encode {
            api: ApiKey::Produce,
            version,
            source,
        })?;
        let queued = conn.queue_parts::<ProduceRequest>(version, parts).await?;
        telemetry::record_request_sent(flights.iter().map(|f| (f.record_count, f.body.len())));
        Ok(Queued::Answer(queued, Instant::now()))
    }
    .await;
    drop(request);
    tokio::spawn(complete(inner.clone(), batcher, flights, invalid, queued));
}

/// Awaits a Produce request's answer and hands each batch's answer to the sequencer,
/// which settles it: written, sent again (split first if too large), or failed.
async fn complete(
    inner: Arc<Inner>,
    batcher: BatcherId,
    flights: Vec<Flight>,
    invalid: Vec<(Flight, String)>,
    queued: Result<Queued, klife_connection::Error>,
) {
    // An error before the request was queued means the broker never saw it; one
    // after may come after the broker wrote it.
    let result: Result<Option<ProduceResponse>, (klife_connection::Error, bool)> = match queued {
        Ok(Queued::Answer(answer, queued_at)) => {
            let answer = answer.response().await;
            telemetry::record_request_done(answer.as_ref().ok().map(|_| queued_at.elapsed()));
            answer.map(Some).map_err(|e| (e, true))
        }
        Ok(Queued::Nothing | Queued::NoAnswer) => Ok(None),
        Err(e) => Err((e, false)),
    };
    let mut answers: Vec<(Flight, Answer)> =
        invalid.into_iter().map(|(f, reason)| (f, Answer::Invalid(reason))).collect();
    for f in flights {
        let answer = match &result {
            Ok(None) => Answer::Written { base: -1, append_time: -1 },
            Ok(Some(resp)) => {
                let tp = &f.partition;
                let answer = resp
                    .responses
                    .iter()
                    .filter(|t| *t.name == *tp.topic)
                    .flat_map(|t| t.partition_responses.iter())
                    .find(|p| p.index == tp.partition);
                match answer {
                    None => Answer::NotAnswered,
                    Some(p) => match ErrorCode::from_code(p.error_code) {
                        ErrorCode::None => Answer::Written { base: p.base_offset, append_time: p.log_append_time_ms },
                        code => Answer::Refused { code, message: p.error_message.clone(), bytes: f.body.len() },
                    },
                }
            }
            Err((e, true)) => Answer::Lost(e.clone()),
            Err((e, false)) => Answer::NotSent(e.clone()),
        };
        answers.push((f, answer));
    }
    let mut settled = Settlements::default();
    {
        let mut state = inner.lock();
        let state = &mut *state;
        if let Some(n) = state.requests.get_mut(&batcher) {
            *n = n.saturating_sub(1);
        }
        let now = Instant::now();
        let mut held = Vec::with_capacity(answers.len());
        for (f, answer) in answers {
            state.seq.on_answer(now, &f.partition, f.order, answer);
            held.push(f);
        }
        state.apply_actions(held, &mut settled);
    }
    // Batches refused as too large: their halves go again in their place (split
    // outside the lock: they are decoded and encoded again).
    for f in std::mem::take(&mut settled.split) {
        let (partition, order) = (f.partition.clone(), f.order);
        let (halves, at) = match f.split() {
            Ok((first, second)) => {
                let at = first.record_count;
                (vec![first, second], Ok(at))
            }
            Err(unsplit) => {
                let (back, reason) = *unsplit;
                (vec![back], Err(reason))
            }
        };
        let mut state = inner.lock();
        state.seq.on_split(Instant::now(), &partition, order, at);
        state.apply_actions(halves, &mut settled);
    }
    let count = |ok: bool| -> u64 {
        settled
            .done
            .iter()
            .filter(|(_, r)| r.is_ok() == ok)
            .map(|(f, _)| u64::from(f.record_count.unsigned_abs()))
            .sum()
    };
    telemetry::record_settled(count(true), count(false));
    // The futures first: once the batches are settled, flush and close may return, and
    // the refresh and the reset below can take a while.
    for (f, result) in settled.done {
        f.completion.complete(result);
    }
    inner.progress.notify_waiters();
    inner.wake.notify_one();
    if settled.refresh {
        let _ = inner.cluster.refresh_metadata().await;
    }
    if let Some(current) = settled.reset {
        reset_producer(&inner, current).await;
    }
    inner.progress.notify_waiters();
    inner.wake.notify_one();
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::{Arc, Weak};
    use std::time::Duration;

    use klife_connection::{Cluster, ConnectionConfig};
    use klife_testkit::FakeCluster;

    use super::{Inner, Producer, batcher_of};
    use crate::{ProduceError, ProducerConfig, ProducerRecord};

    /// Lets the runtime run every other task until `inner` is gone: a bounded number
    /// of turns, each one a pass of the scheduler, no clock involved.
    async fn until_gone(inner: &Weak<Inner>) -> bool {
        for _ in 0..100_000 {
            if inner.strong_count() == 0 {
                return true;
            }
            tokio::task::yield_now().await;
        }
        false
    }

    #[tokio::test]
    async fn the_last_handle_dropped_fails_buffered_records_and_ends_the_tasks() {
        let kafka = FakeCluster::builder().topic("t", 2).start().await.unwrap();
        let cluster = Cluster::connect(&kafka.addresses(), ConnectionConfig::default()).await.unwrap();
        // Records wait in the buffer until a flush: nothing leaves on its own.
        let config = ProducerConfig { linger: Duration::from_secs(3600), ..ProducerConfig::default() };
        let producer = Producer::new(cluster.clone(), config).await.unwrap();
        let written = producer.produce_async(ProducerRecord::new("t", "sent").with_partition(0)).await.unwrap();
        producer.flush().await;
        assert_eq!(written.await.unwrap().offset, 0);

        let buffered = producer.produce_async(ProducerRecord::new("t", "buffered").with_partition(1)).await.unwrap();
        let inner = Arc::downgrade(&producer.inner.0);
        let clone = producer.clone();
        drop(producer);
        // A clone is still a handle: the producer goes on.
        let still = clone.produce_async(ProducerRecord::new("t", "buffered too").with_partition(1)).await.unwrap();
        drop(clone);

        // The sender and the lanes end, and with them the last references to the
        // producer's state (and its cluster handle).
        assert!(until_gone(&inner).await, "the producer's tasks still run");
        // The buffered records failed, typed; none was written.
        assert!(matches!(buffered.await, Err(ProduceError::Closed)));
        assert!(matches!(still.await, Err(ProduceError::Closed)));
        assert_eq!(kafka.high_watermark("t", 1).unwrap(), 0);
        assert_eq!(kafka.high_watermark("t", 0).unwrap(), 1);
        kafka.shutdown().await;
    }

    #[tokio::test]
    async fn a_producer_dropped_with_a_request_in_flight_settles_it_then_ends() {
        let kafka = FakeCluster::builder().topic("t", 1).start().await.unwrap();
        let cluster = Cluster::connect(&kafka.addresses(), ConnectionConfig::default()).await.unwrap();
        let producer = Producer::new(cluster, ProducerConfig::default()).await.unwrap();
        let inner = Arc::downgrade(&producer.inner.0);
        // Queued, and sent once its linger ends: the answer comes after the handle is
        // gone, and still settles the record.
        let future = producer.produce_async(ProducerRecord::new("t", "v").with_partition(0)).await.unwrap();
        drop(producer);
        match future.await {
            // Sent before the drop was seen, or failed as buffered: never lost.
            Ok(written) => assert_eq!((written.offset, kafka.high_watermark("t", 0).unwrap()), (0, 1)),
            Err(e) => assert!(matches!(e, ProduceError::Closed), "{e}"),
        }
        assert!(until_gone(&inner).await, "the producer's tasks still run");
        kafka.shutdown().await;
    }

    #[tokio::test]
    async fn a_record_for_a_partition_added_since_the_metadata_was_fetched_is_produced() {
        use klife_protocol::messages::CreatePartitionsRequest;
        use klife_protocol::messages::create_partitions_request::CreatePartitionsTopic;

        let kafka = FakeCluster::builder().topic("t", 1).start().await.unwrap();
        let cluster = Cluster::connect(&kafka.addresses(), ConnectionConfig::default()).await.unwrap();
        let producer = Producer::new(cluster.clone(), ProducerConfig::default()).await.unwrap();
        assert_eq!(producer.produce(ProducerRecord::new("t", "a").with_partition(0)).await.unwrap().offset, 0);
        // Another client adds a partition: this producer's metadata still says 1.
        let admin = Cluster::connect(&kafka.addresses(), ConnectionConfig::default()).await.unwrap();
        let add = CreatePartitionsRequest::default()
            .with_timeout_ms(5_000)
            .with_topics(vec![CreatePartitionsTopic::default().with_name("t".into()).with_count(2)]);
        let answer = admin.any_broker().await.unwrap().send(&add).await.unwrap();
        assert_eq!(answer.results[0].error_code, 0);
        assert_eq!(cluster.metadata().topic("t").unwrap().partitions.len(), 1);
        let written = producer.produce(ProducerRecord::new("t", "b").with_partition(1)).await.unwrap();
        assert_eq!((written.partition, written.offset), (1, 0));
        // A partition that does not exist is still refused, after looking again.
        let err = producer.produce(ProducerRecord::new("t", "c").with_partition(2)).await.unwrap_err();
        assert!(matches!(err, ProduceError::InvalidPartition { .. }), "{err}");
        kafka.shutdown().await;
    }

    #[test]
    fn one_batcher_takes_every_partition() {
        for p in 0..50 {
            assert_eq!(batcher_of("orders", p, 1, 3), 0);
        }
    }

    #[test]
    fn a_brokers_partitions_spread_evenly_over_its_batchers() {
        // Leaders round-robin over 3 brokers: broker b leads partitions b, b+3, b+6...
        for batchers in [2, 3, 4] {
            for broker in 0..3 {
                let mut counts = vec![0; batchers];
                for p in (broker..60).step_by(3) {
                    counts[batcher_of("orders", p, batchers, 3)] += 1;
                }
                let (min, max) = (counts.iter().min().expect("batchers"), counts.iter().max().expect("batchers"));
                assert!(max - min <= 1, "{batchers} batchers, broker {broker}: {counts:?}");
            }
        }
    }

    #[test]
    fn single_partition_topics_do_not_all_share_a_batcher() {
        let used: std::collections::BTreeSet<usize> =
            (0..20).map(|t| batcher_of(&format!("topic-{t}"), 0, 4, 1)).collect();
        assert!(used.len() > 1, "{used:?}");
    }
}
