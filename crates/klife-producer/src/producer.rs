//! The producer: records go into the accumulator; one sender task groups the ready
//! batches by leader and sends, per broker, one Produce request holding a batch of
//! every ready partition it leads (up to `max_in_flight_per_broker` requests at once).
//! Each partition has at most one batch in flight, so a retried batch is always sent
//! again before the partition's next one: order is kept, with or without idempotence.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use klife_connection::Cluster;
use klife_protocol::messages::produce_request::{PartitionProduceData, ProduceRequest, TopicProduceData};
use klife_protocol::messages::{InitProducerIdRequest, ProduceResponse};
use klife_protocol::records::with_producer_state;
use klife_protocol::{ApiKey, ErrorCode, RetryAction};
use tokio::sync::{Notify, oneshot};

use crate::accumulator::{Accumulator, AppendError, DrainedBatch, ProducerStamp, TopicPartition};
use crate::partitioner::check_partition;
use crate::{ProduceError, ProducerConfig, ProducerRecord, RecordMetadata};

/// Highest Produce version used: v12+ names topics by id.
const PRODUCE_MAX_VERSION: i16 = 11;

type Outcome = Result<RecordMetadata, ProduceError>;

/// One record's sender, waiting for the outcome.
#[derive(Debug)]
struct Pending {
    tx: oneshot::Sender<Outcome>,
    timestamp: i64,
}

/// A finished batch between the accumulator and the broker's answer.
struct Flight {
    batch: DrainedBatch<Pending>,
    /// (producer id, epoch, base sequence) it is stamped with, when idempotent.
    stamp: Option<ProducerStamp>,
    record_count: i32,
    retry_at: Option<Instant>,
    last_error: Option<String>,
    /// An earlier attempt's outcome is unknown (the connection broke or timed out):
    /// the broker may have written it. Such a batch is only ever sent again with the
    /// same producer id and sequence, so that the broker can recognize a duplicate.
    maybe_written: bool,
}

#[derive(Default)]
struct State {
    acc: Option<Accumulator<Pending>>,
    /// Batches waiting to be sent again, one per partition at most.
    retries: HashMap<TopicPartition, Flight>,
    /// Partitions with a batch in flight.
    in_flight: HashSet<TopicPartition>,
    /// Produce requests in flight per broker.
    requests: HashMap<i32, usize>,
    /// Shared topic names, so that records do not each allocate theirs.
    topic_names: HashMap<String, Arc<str>>,
    /// Next sequence per partition (idempotence).
    sequences: HashMap<TopicPartition, i32>,
    /// Producer id and epoch (idempotence).
    producer: Option<(i64, i16)>,
    flushing: usize,
    closed: bool,
}

struct Inner {
    cluster: Cluster,
    config: ProducerConfig,
    /// Batches are stamped transactional, and sequence errors are not repaired by a new
    /// producer id (the transaction must abort instead).
    transactional: bool,
    state: Mutex<State>,
    /// Wakes the sender: a batch is full or new, a request finished, a flush started.
    wake: Notify,
    /// Wakes producers waiting for buffer room, and flushers.
    progress: Notify,
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A producer over a [`Cluster`]. Cheap to clone; clones share batches and the sender.
#[derive(Clone)]
pub struct Producer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Producer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Producer").field("config", &self.inner.config).finish()
    }
}

/// The outcome of one record, to await or to drop (the record is produced either way).
#[derive(Debug)]
pub struct DeliveryFuture {
    rx: oneshot::Receiver<Outcome>,
}

impl DeliveryFuture {
    pub(crate) fn from_receiver(rx: oneshot::Receiver<Outcome>) -> Self {
        DeliveryFuture { rx }
    }
}

impl Future for DeliveryFuture {
    type Output = Outcome;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Outcome> {
        Pin::new(&mut self.rx).poll(cx).map(|r| r.unwrap_or(Err(ProduceError::Closed)))
    }
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

/// Turns the per-record results of a batch into one result: every record's metadata,
/// or the first error (Klife's `verify_batch`).
pub fn verify_batch(results: Vec<Outcome>) -> Result<Vec<RecordMetadata>, ProduceError> {
    results.into_iter().collect()
}

fn now_millis() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Producer {
    /// A producer on `cluster`; with idempotence, it first gets a producer id.
    pub async fn new(cluster: Cluster, config: ProducerConfig) -> Result<Producer, ProduceError> {
        config.validate().map_err(ProduceError::Config)?;
        let id = if config.idempotence { Some(init_producer_id(&cluster, None).await?) } else { None };
        Ok(Self::start(cluster, config, id, false))
    }

    /// A producer with a producer id obtained elsewhere (a transactional one).
    pub(crate) fn start(
        cluster: Cluster,
        config: ProducerConfig,
        id: Option<(i64, i16)>,
        transactional: bool,
    ) -> Producer {
        let state = State { acc: Some(Accumulator::new(config.accumulator())), producer: id, ..State::default() };
        let inner = Arc::new(Inner {
            cluster,
            config,
            transactional,
            state: Mutex::new(state),
            wake: Notify::new(),
            progress: Notify::new(),
        });
        tokio::spawn(sender(inner.clone()));
        Producer { inner }
    }

    /// The producer's id and epoch, when idempotent.
    pub fn producer_id(&self) -> Option<(i64, i16)> {
        self.inner.lock().producer
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
        self.enqueue(record, true).await
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
        self.enqueue(record, false).await
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
        let mut m = self.inner.cluster.metadata();
        if !m.topics.contains_key(topic) {
            m = self.inner.cluster.add_topics(&[topic]).await?;
        }
        let partitions = match m.topics.get(topic) {
            Some(t) if t.error == ErrorCode::None => t.partitions.len() as i32,
            Some(t) if t.error != ErrorCode::UnknownTopicOrPartition => {
                return Err(ProduceError::Broker { topic: topic.clone(), partition: -1, code: t.error, message: None });
            }
            _ => return Err(ProduceError::UnknownTopic { topic: topic.clone() }),
        };
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
            .map_err(|source| ProduceError::InvalidPartition { topic: topic.clone(), source })?;
        Ok((p, partitions))
    }

    async fn enqueue(&self, record: ProducerRecord, wait: bool) -> Result<DeliveryFuture, ProduceError> {
        let (partition, partitions) = self.partition_of(&record).await?;
        let timestamp = record.timestamp.unwrap_or_else(now_millis);
        let (tx, rx) = oneshot::channel();
        let mut pending = Pending { tx, timestamp };
        let mut deadline: Option<Instant> = None;
        loop {
            let progressed = self.inner.progress.notified();
            {
                let mut guard = self.inner.lock();
                let state = &mut *guard;
                if state.closed {
                    return Err(ProduceError::Closed);
                }
                // One shared name per topic: no allocation per record.
                let topic = match state.topic_names.get(record.topic.as_str()) {
                    Some(t) => t.clone(),
                    None => {
                        let t: Arc<str> = record.topic.as_str().into();
                        state.topic_names.insert(record.topic.clone(), t.clone());
                        t
                    }
                };
                let tp = TopicPartition { topic, partition };
                let acc = state.acc.as_mut().ok_or(ProduceError::Closed)?;
                let key = record.key.as_deref();
                let value = record.value.as_deref();
                let now = Instant::now();
                match acc.append(&tp, timestamp, key, value, &record.headers, pending, now) {
                    Ok(appended) => {
                        drop(guard);
                        if appended.new_batch {
                            self.inner.config.partitioner.on_new_batch(&record.topic, partitions, partition);
                        }
                        if appended.new_batch || appended.batch_full {
                            self.inner.wake.notify_one();
                        }
                        return Ok(DeliveryFuture { rx });
                    }
                    Err(AppendError::BufferFull { token, limit, .. }) => {
                        let until = *deadline.get_or_insert(now + self.inner.config.delivery_timeout);
                        if !wait || now >= until {
                            return Err(ProduceError::BufferFull { limit });
                        }
                        pending = token;
                    }
                    Err(AppendError::RecordTooLarge { size, limit, .. }) => {
                        return Err(ProduceError::RecordTooLarge { size, limit });
                    }
                    Err(AppendError::Encode { reason, .. }) => return Err(ProduceError::Encode(reason)),
                }
            }
            if let Some(until) = deadline {
                let _ = tokio::time::timeout_at(until.into(), progressed).await;
            }
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
                let idle = s.acc.as_ref().is_none_or(|a| a.waiting_records() == 0)
                    && s.in_flight.is_empty()
                    && s.retries.is_empty();
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
async fn init_producer_id(cluster: &Cluster, current: Option<(i64, i16)>) -> Result<(i64, i16), ProduceError> {
    let conn = cluster.any_broker().await?;
    let version = conn.version_for(ApiKey::InitProducerId, None)?;
    let mut req = InitProducerIdRequest::default().with_transactional_id(None).with_transaction_timeout_ms(-1);
    if let (Some((id, epoch)), true) = (current, version >= 3) {
        req = req.with_producer_id(id).with_producer_epoch(epoch);
    }
    let resp = conn.send_version(&req, version).await?;
    match ErrorCode::from_code(resp.error_code) {
        ErrorCode::None => Ok((resp.producer_id, resp.producer_epoch)),
        code => Err(ProduceError::Idempotence(format!("InitProducerId answered {code}"))),
    }
}

/// Fails every record of a batch.
fn fail(batch: DrainedBatch<Pending>, error: &ProduceError) {
    for p in batch.tokens {
        let _ = p.tx.send(Err(error.clone()));
    }
}

async fn sender(inner: Arc<Inner>) {
    loop {
        let now = Instant::now();
        let Plan { requests, next_at, stop } = plan(&inner, now);
        for (broker, batch) in requests {
            tokio::spawn(send(inner.clone(), broker, batch));
        }
        if stop {
            return;
        }
        let sleep = next_at
            .map_or(Duration::from_millis(100), |t| t.saturating_duration_since(now))
            .min(Duration::from_millis(100));
        let _ = tokio::time::timeout(sleep, inner.wake.notified()).await;
    }
}

/// What the sender does next.
struct Plan {
    /// Produce requests to send: broker and its batches.
    requests: Vec<(i32, Vec<Flight>)>,
    /// When to look again at the latest, if something waits for its linger or backoff.
    next_at: Option<Instant>,
    /// The producer is closed and idle.
    stop: bool,
}

impl Plan {
    fn stop() -> Plan {
        Plan { requests: Vec::new(), next_at: None, stop: true }
    }
}

/// How a batch's request ended.
enum Settled {
    /// Written at `base` (-1 when unknown), with the broker's append time (-1 for create time).
    Written { base: i64, append_time: i64 },
    /// Refused or lost; `retriable` says whether to send it again.
    Failed { code: ErrorCode, message: Option<String>, retriable: bool },
}

/// Chooses what to send now: per broker with room, one batch of each ready partition
/// it leads (a retried batch first). Returns the requests, when to look again, and
/// whether the sender should stop.
fn plan(inner: &Inner, now: Instant) -> Plan {
    let metadata = inner.cluster.metadata();
    let config = &inner.config;
    let mut state = inner.lock();
    let state = &mut *state;
    let Some(acc) = state.acc.as_mut() else { return Plan::stop() };
    if state.closed && acc.waiting_records() == 0 && state.in_flight.is_empty() && state.retries.is_empty() {
        return Plan::stop();
    }
    let readiness = acc.ready(now, state.flushing > 0 || state.closed);
    let mut next_at = readiness.next_ready_at;
    let mut candidates: Vec<TopicPartition> = readiness.ready;
    for (tp, f) in &state.retries {
        match f.retry_at {
            Some(t) if t > now => next_at = Some(next_at.map_or(t, |n| n.min(t))),
            _ => candidates.push(tp.clone()),
        }
    }
    candidates.sort();
    candidates.dedup();
    let mut per_broker: BTreeMap<i32, Vec<Flight>> = BTreeMap::new();
    let mut refresh = false;
    for tp in candidates {
        if state.in_flight.contains(&tp) {
            continue;
        }
        let leader = metadata.leader(&tp.topic, tp.partition).map(|(b, _)| b.node_id);
        if let Some(l) = leader {
            let busy = state.requests.get(&l).copied().unwrap_or(0) >= config.max_in_flight_per_broker;
            if busy && !per_broker.contains_key(&l) {
                // Every request to this broker is in flight: the batch stays where it
                // is and keeps filling (dynamic batching); a finished request wakes us.
                continue;
            }
        }
        let flight = match state.retries.remove(&tp) {
            Some(f) => Some(f),
            None => {
                // A new batch is stamped as it is finished: one CRC pass, no copy.
                let stamp = match (state.producer, acc.next_batch_len(&tp)) {
                    (Some((id, epoch)), Some(len)) => {
                        let seq = state.sequences.entry(tp.clone()).or_insert(0);
                        let stamp = ProducerStamp {
                            producer_id: id,
                            producer_epoch: epoch,
                            base_sequence: *seq,
                            transactional: inner.transactional,
                        };
                        *seq = seq.wrapping_add(len as i32) & i32::MAX;
                        Some(stamp)
                    }
                    _ => None,
                };
                match acc.drain(&tp, stamp) {
                    None => None,
                    Some(Err(e)) => {
                        acc.release(e.batch.reserved);
                        fail(e.batch, &ProduceError::Encode(e.reason));
                        None
                    }
                    Some(Ok(batch)) => {
                        let record_count = batch.tokens.len() as i32;
                        Some(Flight {
                            batch,
                            stamp,
                            record_count,
                            retry_at: None,
                            last_error: None,
                            maybe_written: false,
                        })
                    }
                }
            }
        };
        let Some(mut flight) = flight else { continue };
        // Expired: fail it rather than send it.
        if now.duration_since(flight.batch.created) >= config.delivery_timeout {
            acc.release(flight.batch.reserved);
            let e = ProduceError::DeliveryTimeout {
                topic: tp.topic.to_string(),
                partition: tp.partition,
                timeout: config.delivery_timeout,
                last_error: flight.last_error.take(),
            };
            fail(flight.batch, &e);
            continue;
        }
        let Some(leader) = leader else {
            refresh = true;
            flight.retry_at = Some(now + config.retry_backoff);
            flight.last_error = Some(format!("{tp} has no live leader"));
            state.retries.insert(tp, flight);
            continue;
        };
        // Idempotence: stamp (or re-stamp, after a producer reset) the sequence.
        if let Some((id, epoch)) = state.producer {
            let current = flight.stamp.is_some_and(|s| s.producer_id == id && s.producer_epoch == epoch);
            if !current && flight.stamp.is_some() && flight.maybe_written {
                // Re-sequencing it under the new producer id could write it twice.
                acc.release(flight.batch.reserved);
                let e = ProduceError::Idempotence(format!(
                    "{tp}: the producer id had to be reset while an earlier attempt of this batch had an unknown \
                     outcome; it may have been written, and is not sent again to avoid a duplicate"
                ));
                fail(flight.batch, &e);
                continue;
            }
            if !current {
                let seq = state.sequences.entry(tp.clone()).or_insert(0);
                let stamp =
                    ProducerStamp { producer_id: id, producer_epoch: epoch, base_sequence: *seq, transactional: false };
                *seq = seq.wrapping_add(flight.record_count) & i32::MAX;
                match with_producer_state(flight.batch.bytes.clone(), id, epoch, stamp.base_sequence, false) {
                    Ok(bytes) => flight.batch.bytes = bytes,
                    Err(e) => {
                        acc.release(flight.batch.reserved);
                        fail(flight.batch, &ProduceError::Encode(e.to_string()));
                        continue;
                    }
                }
                flight.stamp = Some(stamp);
            }
        }
        state.in_flight.insert(tp);
        per_broker.entry(leader).or_default().push(flight);
    }
    for broker in per_broker.keys() {
        *state.requests.entry(*broker).or_default() += 1;
    }
    if refresh {
        let cluster = inner.cluster.clone();
        tokio::spawn(async move {
            let _ = cluster.refresh_metadata().await;
        });
    }
    Plan { requests: per_broker.into_iter().collect(), next_at, stop: false }
}

/// Sends one Produce request and settles each batch in it.
async fn send(inner: Arc<Inner>, broker: i32, flights: Vec<Flight>) {
    let config = &inner.config;
    let mut topics: BTreeMap<&str, Vec<PartitionProduceData>> = BTreeMap::new();
    for f in &flights {
        topics.entry(&f.batch.partition.topic).or_default().push(
            PartitionProduceData::default()
                .with_index(f.batch.partition.partition)
                .with_records(Some(f.batch.bytes.clone())),
        );
    }
    let timeout_ms = i32::try_from(inner.cluster.config().request_timeout.as_millis() * 3 / 4).unwrap_or(i32::MAX);
    let request = ProduceRequest::default().with_acks(config.acks.code()).with_timeout_ms(timeout_ms).with_topic_data(
        topics
            .into_iter()
            .map(|(t, p)| TopicProduceData::default().with_name(t.to_owned()).with_partition_data(p))
            .collect(),
    );
    let result: Result<Option<ProduceResponse>, klife_connection::Error> = async {
        let conn = inner.cluster.broker(broker).await?;
        let version = conn.version_for(ApiKey::Produce, Some(PRODUCE_MAX_VERSION))?;
        if config.acks == crate::Acks::None {
            conn.send_no_response(&request, version).await?;
            return Ok(None);
        }
        Ok(Some(conn.send_version(&request, version).await?))
    }
    .await;
    let mut reset_producer = false;
    let mut refresh = false;
    let mut settled: Vec<(Flight, Settled)> = Vec::new();
    match result {
        Ok(None) => {
            for f in flights {
                settled.push((f, Settled::Written { base: -1, append_time: -1 }));
            }
        }
        Ok(Some(resp)) => {
            for f in flights {
                let tp = &f.batch.partition;
                let answer = resp
                    .responses
                    .iter()
                    .filter(|t| *t.name == *tp.topic)
                    .flat_map(|t| t.partition_responses.iter())
                    .find(|p| p.index == tp.partition);
                let outcome = match answer {
                    None => Settled::Failed {
                        code: ErrorCode::UnknownServerError,
                        message: Some("the broker did not answer for the partition".into()),
                        retriable: true,
                    },
                    Some(p) => match ErrorCode::from_code(p.error_code) {
                        ErrorCode::None => Settled::Written { base: p.base_offset, append_time: p.log_append_time_ms },
                        // A retried batch the broker already has: it was written.
                        ErrorCode::DuplicateSequenceNumber => Settled::Written { base: -1, append_time: -1 },
                        code @ (ErrorCode::OutOfOrderSequenceNumber
                        | ErrorCode::UnknownProducerId
                        | ErrorCode::InvalidProducerEpoch) => {
                            // An idempotent producer repairs this with a new producer id; a
                            // transactional one cannot: its transaction must abort.
                            reset_producer = !inner.transactional;
                            Settled::Failed { code, message: p.error_message.clone(), retriable: !inner.transactional }
                        }
                        code => {
                            let retry = code.is_retriable() || code.retry_action() == RetryAction::RefreshMetadata;
                            refresh |= code.retry_action() == RetryAction::RefreshMetadata;
                            Settled::Failed { code, message: p.error_message.clone(), retriable: retry }
                        }
                    },
                };
                settled.push((f, outcome));
            }
        }
        Err(e) => {
            refresh = true;
            let retry = e.is_retriable();
            // Sent, or maybe sent: the broker may have written these batches.
            let unknown =
                matches!(e, klife_connection::Error::Disconnected { .. } | klife_connection::Error::Timeout { .. });
            for mut f in flights {
                f.maybe_written |= unknown;
                let code = e.error_code().unwrap_or(ErrorCode::NetworkException);
                settled.push((f, Settled::Failed { code, message: Some(e.to_string()), retriable: retry }));
            }
        }
    }
    if reset_producer {
        let current = inner.lock().producer;
        match init_producer_id(&inner.cluster, current).await {
            Ok(id) => {
                let mut s = inner.lock();
                s.producer = Some(id);
                s.sequences.clear();
            }
            Err(e) => tracing::warn!(error = %e, "producer id reset failed"),
        }
    }
    if refresh {
        let _ = inner.cluster.refresh_metadata().await;
    }
    let now = Instant::now();
    let mut written = Vec::new();
    {
        let mut state = inner.lock();
        let state = &mut *state;
        if let Some(n) = state.requests.get_mut(&broker) {
            *n = n.saturating_sub(1);
        }
        for (mut f, outcome) in settled {
            let tp = f.batch.partition.clone();
            state.in_flight.remove(&tp);
            match outcome {
                Settled::Written { base, append_time } => {
                    if let Some(acc) = state.acc.as_mut() {
                        acc.release(f.batch.reserved);
                    }
                    // Told after the lock is released: producers need it meanwhile.
                    written.push((tp, f.batch.tokens, base, append_time));
                }
                Settled::Failed { code, message, retriable: true }
                    if now.duration_since(f.batch.created) < config.delivery_timeout =>
                {
                    tracing::debug!(partition = %tp, %code, "retrying batch");
                    f.retry_at = Some(now + config.retry_backoff);
                    f.last_error = Some(match &message {
                        Some(m) => format!("{code}: {m}"),
                        None => code.to_string(),
                    });
                    state.retries.insert(tp, f);
                }
                Settled::Failed { code, message, retriable } => {
                    if let Some(acc) = state.acc.as_mut() {
                        acc.release(f.batch.reserved);
                    }
                    let error = if retriable {
                        ProduceError::DeliveryTimeout {
                            topic: tp.topic.to_string(),
                            partition: tp.partition,
                            timeout: config.delivery_timeout,
                            last_error: Some(message.map_or_else(|| code.to_string(), |m| format!("{code}: {m}"))),
                        }
                    } else {
                        ProduceError::Broker { topic: tp.topic.to_string(), partition: tp.partition, code, message }
                    };
                    fail(f.batch, &error);
                }
            }
        }
    }
    inner.progress.notify_waiters();
    inner.wake.notify_one();
    for (tp, tokens, base, append_time) in written {
        for (i, p) in tokens.into_iter().enumerate() {
            let offset = if base >= 0 { base + i as i64 } else { -1 };
            let timestamp = if append_time >= 0 { append_time } else { p.timestamp };
            let _ =
                p.tx.send(Ok(RecordMetadata { topic: tp.topic.clone(), partition: tp.partition, offset, timestamp }));
        }
    }
}
