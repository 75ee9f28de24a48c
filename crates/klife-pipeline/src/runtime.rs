//! The pipeline's tokio driver: producers pull the member's manual partitions,
//! processors handle messages, batchers group them, and acknowledgements become
//! commits. The decisions are the sans-io cores' ([`Router`], [`PullPlan`],
//! [`Batcher`], [`AckTracker`]); the tasks here only move messages and timers.
//!
//! ## Stages
//!
//! - **Source**: one consumer group member, every topic in manual mode. Either the
//!   pipeline starts it ([`Source::group`]), or it also runs a handler's lifecycle
//!   callbacks, `on_consumer_start` / `on_consumer_stop` ([`Source::group_with_callbacks`]):
//!   exactly one member, whose settings the pipeline takes as they are, except the
//!   mode.
//! - **Producers** (`producers`, 1 by default): each pulls the assigned partitions a
//!   stable hash gives it ([`Router::producer_for`]), in rotation, while the
//!   processors' bounded queues have room; a round that finds nothing waits
//!   `receive_interval`.
//! - **Processors** (`processors`, 4 by default): every record of a partition goes to
//!   the same processor, in offset order; [`Processor::handle_message`] runs one
//!   message at a time per processor. The routing is the pipeline's: there is no
//!   user-set routing key, since one would break the order of a partition.
//! - **Batchers** (optional): messages that did not fail are grouped by
//!   [`Message::batch_key`] (the partition by default), up to `batch_size` or
//!   `batch_timeout`, and handed to [`Processor::handle_batch`].
//! - **Acknowledgement**: a message is acknowledged when its last stage is done with it;
//!   failed ones go through [`Processor::handle_failed`] first (where a dead-letter
//!   topic is written). A partition's offset is committed, through the member's
//!   committers, once it and every lower message of it are acknowledged.
//!
//! ## Revocation and shutdown
//!
//! A partition given up by the member is no longer pulled; the messages of it already
//! pulled go through their stages and are committed, and only then is the partition
//! handed over (within the rebalance timeout, and at most `batch_timeout` later with
//! batchers). [`Pipeline::shutdown`] does the same for every partition, then the
//! member leaves. A partition lost without a hand-over (session lost, fenced) drops
//! the acknowledgements still to come: its next owner starts at the last commit, and
//! what was handled after it comes again (at least once). A handler that panics fails
//! the message (or the whole batch) with the panic's message.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use klife_group::ConfigError;
use klife_group::runtime::{
    BatchSize, ConsumerGroup, GroupConfig, GroupStopped, Handler, Lease, ManualError, Mode, Resources, catch_unwind,
    panic_message,
};
use klife_producer::{Producer, ProducerRecord, TransactionalProducer};
use klife_protocol::types::{GroupMetadata, TopicPartition};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::ack::{AckError, AckTracker};
use crate::batch::{BatchConfig, BatchConfigError, Batcher};
use crate::message::Message;
use crate::outputs::Outputs;
use crate::pull::PullPlan;
use crate::route::{BatchKey, RouteError, Router};

/// The user's stages. Only [`handle_message`](Self::handle_message) is required.
pub trait Processor: Send + Sync + 'static {
    /// Handles one message; [`Message::fail`] marks it failed. Messages of a partition
    /// come in offset order, one at a time per processor.
    fn handle_message(&self, message: &mut Message) -> impl Future<Output = ()> + Send;

    /// Handles a batch of messages that did not fail, all of one [`BatchKey`] (only in
    /// a pipeline with batchers). Messages marked failed here go to
    /// [`handle_failed`](Self::handle_failed).
    fn handle_batch(&self, key: &BatchKey, messages: &mut [Message]) -> impl Future<Output = ()> + Send {
        let _ = (key, messages);
        async {}
    }

    /// Called with the messages that failed, before they are acknowledged (their
    /// offsets are committed like the others): write them to a dead-letter topic
    /// here. A panic here is logged; the messages are acknowledged all the same.
    fn handle_failed(&self, messages: &mut [Message]) -> impl Future<Output = ()> + Send {
        let _ = messages;
        async {}
    }
}

/// The batchers of a pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatcherConfig {
    /// How many batcher tasks (each key goes to one of them).
    pub concurrency: usize,
    /// When a batch closes.
    pub batch: BatchConfig,
}

/// A pipeline's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PipelineConfig {
    /// Producer tasks (1 by default).
    pub producers: usize,
    /// Processor tasks (4 by default).
    pub processors: usize,
    /// Batches of records each processor's and batcher's queue holds (the demand; 4 by
    /// default). A batch is what one pull returns: at most the topic's
    /// `handler_max_batch_size`, [`DEFAULT_PULL_SIZE`] unless the member's settings
    /// give one.
    pub max_demand: usize,
    /// The wait after a round of pulls that found nothing (100 ms by default).
    pub receive_interval: Duration,
    /// Batchers (none by default).
    pub batchers: Option<BatcherConfig>,
}

impl Default for PipelineConfig {
    fn default() -> PipelineConfig {
        PipelineConfig {
            producers: 1,
            processors: 4,
            max_demand: 4,
            receive_interval: Duration::from_millis(100),
            batchers: None,
        }
    }
}

impl PipelineConfig {
    /// Sets the producers.
    #[must_use]
    pub fn producers(mut self, n: usize) -> Self {
        self.producers = n;
        self
    }

    /// Sets the processors.
    #[must_use]
    pub fn processors(mut self, n: usize) -> Self {
        self.processors = n;
        self
    }

    /// Sets the batches each processor's queue holds.
    #[must_use]
    pub fn max_demand(mut self, n: usize) -> Self {
        self.max_demand = n;
        self
    }

    /// Sets the wait after an empty round of pulls.
    #[must_use]
    pub fn receive_interval(mut self, wait: Duration) -> Self {
        self.receive_interval = wait;
        self
    }

    /// Adds `concurrency` batchers closing batches at `batch_size` messages or
    /// `batch_timeout` after their first.
    ///
    /// # Errors
    ///
    /// [`PipelineError::Batch`] for a zero size or timeout.
    pub fn batchers(
        mut self,
        concurrency: usize,
        batch_size: usize,
        batch_timeout: Duration,
    ) -> Result<Self, PipelineError> {
        let batch = BatchConfig::new(batch_size, batch_timeout)?;
        self.batchers = Some(BatcherConfig { concurrency, batch });
        Ok(self)
    }
}

/// Why a pipeline cannot start.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum PipelineError {
    /// Zero producers, processors or batchers.
    #[error(transparent)]
    Route(#[from] RouteError),
    /// A batch size or timeout of zero.
    #[error(transparent)]
    Batch(#[from] BatchConfigError),
    /// `max_demand` of zero: nothing would ever be pulled.
    #[error("max_demand must be at least 1")]
    NoDemand,
    /// A topic of the member set to [`Mode::Handler`]: the pipeline handles every topic.
    #[error("topic {0} is set to handler mode; a pipeline drives every topic of its member")]
    HandlerMode(String),
    /// The member's settings are invalid.
    #[error(transparent)]
    Group(#[from] ConfigError),
}

/// The consumer group member a pipeline runs on.
pub struct Source {
    start: Box<dyn FnOnce() -> Result<ConsumerGroup, ConfigError> + Send>,
    config_modes: Vec<(String, Option<Mode>)>,
    /// Writes what messages produce, at least once.
    producer: Option<Producer>,
    /// Writes what messages produce in transactions with their offsets.
    transactions: Option<Transactions>,
}

/// What a transactional pipeline ([`Source::transactional`]) writes with: the
/// records its messages produce ([`Message::produce`]) and the offsets they
/// acknowledge go in one transaction, so that a read_committed reader sees each
/// message's output once (KIP-447: the offsets carry the member's id, generation or
/// member epoch and instance id, and a member fenced out of its group cannot commit).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Transactions {
    /// The member's transactional producer: stable for one instance across restarts,
    /// different for every live member.
    pub producer: TransactionalProducer,
    /// The member's static instance id, if it has one (sent with the offsets).
    pub instance_id: Option<String>,
    /// Failed transactions of a partition in a row that stop the member (5).
    pub max_attempts: u32,
    /// The backoff after a failed transaction (500 ms), doubling up to
    /// `retry_backoff_max` (10 s).
    pub retry_backoff: Duration,
    /// See `retry_backoff`.
    pub retry_backoff_max: Duration,
}

impl Transactions {
    /// Transactions of `producer`, with the default attempts and backoff.
    pub fn new(producer: TransactionalProducer, instance_id: Option<String>) -> Transactions {
        Transactions {
            producer,
            instance_id,
            max_attempts: 5,
            retry_backoff: Duration::from_millis(500),
            retry_backoff_max: Duration::from_secs(10),
        }
    }
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source").field("topics", &self.config_modes).finish_non_exhaustive()
    }
}

impl Source {
    /// A member the pipeline starts and owns, every topic in manual mode.
    pub fn group(resources: Resources, config: GroupConfig) -> Source {
        let config_modes = modes(&config);
        let config = manual(config);
        let producer = resources.producer.clone();
        Source {
            start: Box::new(move || ConsumerGroup::start_manual(resources, config)),
            config_modes,
            producer,
            transactions: None,
        }
    }

    /// A member the pipeline starts and owns, every topic in manual mode, whose
    /// `handler` gets the lifecycle callbacks (`on_consumer_start`,
    /// `on_consumer_stop`) of each partition; its `handle_record_batch` is never called.
    pub fn group_with_callbacks<H: Handler>(resources: Resources, config: GroupConfig, handler: H) -> Source {
        let config_modes = modes(&config);
        let config = manual(config);
        let producer = resources.producer.clone();
        Source {
            start: Box::new(move || ConsumerGroup::start(resources, config, handler)),
            config_modes,
            producer,
            transactions: None,
        }
    }

    /// Makes the pipeline transactional: the records its messages produce
    /// ([`Message::produce`]) and the offsets they acknowledge are committed together,
    /// in transactions of `transactions.producer`, one at a time. Outputs of a message
    /// above a partition's first unacknowledged one wait for it. A transaction that
    /// fails is aborted and its partitions restart from their last commit (after a
    /// backoff, unless the member was fenced); `max_attempts` failures in a row, or a
    /// fenced producer, stop the member.
    pub fn transactional(mut self, transactions: Transactions) -> Source {
        self.transactions = Some(transactions);
        self
    }
}

fn modes(config: &GroupConfig) -> Vec<(String, Option<Mode>)> {
    let mut modes: Vec<(String, Option<Mode>)> = config.topics.iter().map(|t| (t.name.clone(), t.mode)).collect();
    modes.push((String::from("(default topic config)"), config.default_topic_config.mode));
    modes
}

/// The batches a pipeline's member pulls at most, unless its topics say otherwise:
/// small enough that the queues between stages hold a bounded number of messages
/// and their buffers stay small allocations.
pub const DEFAULT_PULL_SIZE: usize = 500;

fn manual(mut config: GroupConfig) -> GroupConfig {
    config.default_topic_config.mode = Some(Mode::Manual);
    config.default_topic_config.handler_max_batch_size.get_or_insert(BatchSize::Max(DEFAULT_PULL_SIZE));
    for t in &mut config.topics {
        t.mode.get_or_insert(Mode::Manual);
    }
    config
}

/// A running pipeline; see the [module documentation](self).
#[derive(Debug)]
pub struct Pipeline {
    group: Option<Arc<ConsumerGroup>>,
    stop: watch::Sender<bool>,
    producers: Vec<JoinHandle<()>>,
    stages: Vec<JoinHandle<()>>,
    /// The transaction stage of a transactional pipeline.
    transactions: Option<JoinHandle<()>>,
    /// Tells the transaction stage that nothing more comes.
    finished: watch::Sender<bool>,
    /// Holds the member too (to restart partitions): let go before the member shuts
    /// down.
    core: Option<Arc<Core>>,
}

/// The acknowledgements and the leases their commits go through.
#[derive(Debug, Default)]
struct Acks {
    tracker: AckTracker,
    leases: HashMap<TopicPartition, Arc<Lease>>,
    /// Transactional: the outputs of acknowledged messages and the commit points, until
    /// a transaction takes them.
    outputs: Outputs<ProducerRecord>,
}

#[derive(Debug)]
struct Core {
    acks: Mutex<Acks>,
    /// Wakes producers waiting for their partitions to drain.
    drained: tokio::sync::Notify,
    /// Wakes the transaction stage.
    ready: tokio::sync::Notify,
    /// Writes outputs when the pipeline is not transactional.
    producer: Option<Producer>,
    transactional: bool,
    group: Arc<ConsumerGroup>,
}

impl Core {
    fn lock(&self) -> MutexGuard<'_, Acks> {
        self.acks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Acknowledges messages and sends the commits that follows (transactional: hands
    /// their outputs and offsets to the transaction stage).
    fn ack(&self, messages: &mut [Message]) {
        let mut acks = self.lock();
        let mut stale: HashSet<(TopicPartition, i64)> = HashSet::new();
        for e in acks.tracker.ack_all(messages.iter().map(|m| &m.delivery)) {
            // Stale: the partition was released (lost, or restarting); its next owner
            // starts at the last commit.
            match e {
                AckError::Stale { partition, offset } => {
                    stale.insert((partition, offset));
                }
                e => tracing::error!(error = %e, "pipeline: an acknowledgement was refused"),
            }
        }
        let commits = acks.tracker.take_commits();
        if self.transactional {
            for m in messages.iter_mut() {
                let outputs = m.take_outputs();
                let key = (m.topic_partition().clone(), m.record().offset);
                if !stale.contains(&key) {
                    acks.outputs.hold(&key.0, key.1, outputs);
                }
            }
            let any = !commits.is_empty();
            for commit in commits {
                acks.outputs.ready(commit);
            }
            drop(acks);
            if any {
                self.ready.notify_one();
            }
        } else {
            for commit in commits {
                let tp = commit.topic_partition();
                if let Some(lease) = acks.leases.get(&tp) {
                    if let Err(e) = lease.commit(commit.offset) {
                        tracing::debug!(partition = %tp, error = %e, "pipeline: a commit was refused");
                    }
                }
            }
            drop(acks);
        }
        self.drained.notify_waiters();
    }

    /// Forgets a partition: acknowledgements of it are stale from now on.
    fn release(&self, tp: &TopicPartition) {
        let mut acks = self.lock();
        acks.tracker.release(tp);
        acks.leases.remove(tp);
        acks.outputs.release(tp);
    }

    /// Whether every message of the partition pulled so far is acknowledged, and
    /// (transactional) committed.
    fn settled(&self, tp: &TopicPartition) -> bool {
        let acks = self.lock();
        acks.tracker.is_drained(tp) && acks.outputs.settled(tp)
    }

    /// Restarts a partition from its last commit, if this member still owns it: a
    /// lease taken while the pipeline's holds messages not committed makes the
    /// pipeline's lease report the partition released, and its messages come again.
    fn restart(&self, tp: &TopicPartition) {
        tracing::info!(partition = %tp, "pipeline: restarting the partition from its last commit");
        let _ = self.group.lease(&tp.topic, tp.partition);
    }

    /// Writes the records the messages produced (not transactional), before they are
    /// acknowledged; a partition whose write failed restarts from its last commit and
    /// its messages are not acknowledged.
    async fn write_outputs(&self, messages: &mut Vec<Message>) {
        let mut sent = Vec::new();
        for m in messages.iter_mut() {
            let outputs = m.take_outputs();
            if outputs.is_empty() {
                continue;
            }
            let tp = m.topic_partition().clone();
            let Some(producer) = &self.producer else {
                tracing::error!(partition = %tp, "pipeline: a message produced records, and the pipeline has no producer");
                sent.push((tp, None));
                continue;
            };
            for record in outputs {
                sent.push((tp.clone(), Some(producer.produce_async(record).await)));
            }
        }
        let mut failed: HashSet<TopicPartition> = HashSet::new();
        for (tp, delivery) in sent {
            let ok = match delivery {
                Some(Ok(d)) => match d.await {
                    Ok(_) => true,
                    Err(e) => {
                        tracing::warn!(partition = %tp, error = %e, "pipeline: a record a message produced was not written");
                        false
                    }
                },
                Some(Err(e)) => {
                    tracing::warn!(partition = %tp, error = %e, "pipeline: a record a message produced was not written");
                    false
                }
                None => false,
            };
            if !ok {
                failed.insert(tp);
            }
        }
        if failed.is_empty() {
            return;
        }
        for tp in &failed {
            self.restart(tp);
            self.release(tp);
        }
        messages.retain(|m| !failed.contains(m.topic_partition()));
    }
}

type Queue = mpsc::Sender<Vec<Message>>;

impl Pipeline {
    /// Starts the member and the pipeline's tasks on the current tokio runtime.
    ///
    /// # Errors
    ///
    /// [`PipelineError`] for invalid settings, before anything starts.
    pub fn start<P: Processor>(
        source: Source,
        config: PipelineConfig,
        processor: P,
    ) -> Result<Pipeline, PipelineError> {
        if let Some((topic, _)) = source.config_modes.iter().find(|(_, m)| *m == Some(Mode::Handler)) {
            return Err(PipelineError::HandlerMode(topic.clone()));
        }
        let batchers = config.batchers.map_or(1, |b| b.concurrency);
        let router = Router::new(config.producers, config.processors, batchers)?;
        if config.max_demand == 0 {
            return Err(PipelineError::NoDemand);
        }
        let group = Arc::new((source.start)()?);
        let processor = Arc::new(processor);
        let core = Arc::new(Core {
            acks: Mutex::new(Acks::default()),
            drained: tokio::sync::Notify::new(),
            ready: tokio::sync::Notify::new(),
            producer: source.producer,
            transactional: source.transactions.is_some(),
            group: group.clone(),
        });
        let (stop, stopped) = watch::channel(false);
        let mut stages = Vec::new();

        let batcher_queues: Vec<Queue> = match config.batchers {
            Some(b) => (0..b.concurrency)
                .map(|_| {
                    let (tx, rx) = mpsc::channel(config.max_demand);
                    stages.push(tokio::spawn(batch_stage(rx, b.batch, processor.clone(), core.clone())));
                    tx
                })
                .collect(),
            None => Vec::new(),
        };
        let processor_queues: Vec<Queue> = (0..config.processors)
            .map(|_| {
                let (tx, rx) = mpsc::channel(config.max_demand);
                let batchers = (!batcher_queues.is_empty()).then(|| (router, batcher_queues.clone()));
                stages.push(tokio::spawn(process_stage(rx, processor.clone(), core.clone(), batchers)));
                tx
            })
            .collect();
        drop(batcher_queues);
        let producers = (0..config.producers)
            .map(|i| {
                let producer = PullStage {
                    index: i,
                    router,
                    group: group.clone(),
                    core: core.clone(),
                    queues: processor_queues.clone(),
                    plan: PullPlan::new(config.receive_interval),
                    held: HashMap::new(),
                    stopped: stopped.clone(),
                };
                tokio::spawn(producer.run())
            })
            .collect();
        let (finished, finishing) = watch::channel(false);
        let transactions =
            source.transactions.map(|t| tokio::spawn(transaction_stage(core.clone(), group.clone(), t, finishing)));
        Ok(Pipeline { group: Some(group), stop, producers, stages, transactions, finished, core: Some(core) })
    }

    /// The member.
    pub fn group(&self) -> &ConsumerGroup {
        self.group.as_deref().unwrap_or_else(|| unreachable!("the member is taken only by shutdown"))
    }

    /// Stops pulling, lets every message pulled go through its stages and be
    /// committed, then shuts the member down (it leaves the group).
    pub async fn shutdown(mut self) -> Result<(), GroupStopped> {
        self.stop.send_replace(true);
        for p in self.producers.drain(..) {
            let _ = p.await;
        }
        for s in self.stages.drain(..) {
            let _ = s.await;
        }
        self.finished.send_replace(true);
        if let Some(t) = self.transactions.take() {
            let _ = t.await;
        }
        // The tasks that used the core have ended.
        self.core.take();
        let Some(group) = self.group.take() else { return Ok(()) };
        match Arc::try_unwrap(group) {
            Ok(group) => group.shutdown().await,
            Err(_) => unreachable!("every task holding the member has ended"),
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        for t in self.producers.iter().chain(&self.stages).chain(&self.transactions) {
            t.abort();
        }
    }
}

/// What a producer holds of a partition.
struct Held {
    lease: Arc<Lease>,
    /// Given up: no more pulls; its lease goes once its messages are acknowledged.
    revoking: bool,
}

struct PullStage {
    index: usize,
    router: Router,
    group: Arc<ConsumerGroup>,
    core: Arc<Core>,
    queues: Vec<Queue>,
    plan: PullPlan,
    held: HashMap<TopicPartition, Held>,
    stopped: watch::Receiver<bool>,
}

impl PullStage {
    async fn run(mut self) {
        loop {
            let stopping = *self.stopped.borrow();
            if stopping {
                break;
            }
            self.claim();
            let got = self.round().await;
            if !got {
                let wait = self.plan.receive_interval();
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    _ = self.stopped.changed() => {}
                }
            }
        }
        // Stopping: the messages pulled go through, then the leases go.
        loop {
            let drained = self.core.drained.notified();
            let pending = self.held.keys().any(|tp| !self.core.settled(tp));
            if !pending {
                break;
            }
            drained.await;
        }
        for tp in self.held.keys() {
            self.core.release(tp);
        }
    }

    /// Takes leases of the partitions this producer owns and does not hold yet.
    fn claim(&mut self) {
        let assigned = self.group.assigned_partitions();
        for tp in self.router.owned_by(self.index, &assigned) {
            if self.held.contains_key(&tp) {
                continue;
            }
            match self.group.lease(&tp.topic, tp.partition) {
                Ok(lease) => {
                    let lease = Arc::new(lease);
                    self.core.lock().leases.insert(tp.clone(), lease.clone());
                    tracing::debug!(partition = %tp, producer = self.index, "pipeline: partition claimed");
                    self.held.insert(tp, Held { lease, revoking: false });
                }
                // Restarting, not started yet, or gone meanwhile: next round.
                Err(e) => tracing::trace!(partition = %tp, error = %e, "pipeline: no lease yet"),
            }
        }
        let mut pulled: Vec<TopicPartition> =
            self.held.iter().filter(|(_, h)| !h.revoking).map(|(tp, _)| tp.clone()).collect();
        pulled.sort();
        self.plan.set_partitions(pulled);
    }

    /// One round over the partitions; whether it found records.
    async fn round(&mut self) -> bool {
        let mut got = false;
        for _ in 0..self.plan.partitions().len() {
            let Some(tp) = self.plan.next() else { break };
            let Some(held) = self.held.get(&tp) else { continue };
            match held.lease.pull() {
                Ok(Some(batch)) => {
                    got = true;
                    self.plan.record_result(&tp, true);
                    let epoch = batch.records.last().and_then(|r| r.leader_epoch);
                    let offsets: Vec<(i64, Option<i32>)> =
                        batch.records.iter().map(|r| (r.offset, r.leader_epoch)).collect();
                    let messages = {
                        let mut acks = self.core.lock();
                        // A partition released meanwhile (lost, or restarted after a
                        // failed write or transaction): its batch comes again from the
                        // last commit. Delivered now, it would start the partition's
                        // tracking past what was never committed.
                        if !acks.leases.get(&tp).is_some_and(|l| Arc::ptr_eq(l, &held.lease)) {
                            drop(acks);
                            self.held.remove(&tp);
                            self.plan.record_result(&tp, false);
                            continue;
                        }
                        let mut messages = Vec::with_capacity(batch.records.len());
                        match acks.tracker.deliver_all(&tp, &offsets) {
                            Ok(deliveries) => messages.extend(
                                batch.records.into_iter().zip(deliveries).map(|(r, d)| Message::new(r, d, &tp)),
                            ),
                            // A record out of order: the others go on one by one.
                            Err(_) => {
                                for record in batch.records {
                                    match acks.tracker.deliver(&tp, record.offset, record.leader_epoch) {
                                        Ok(delivery) => messages.push(Message::new(record, delivery, &tp)),
                                        Err(e) => {
                                            tracing::error!(partition = %tp, error = %e, "pipeline: a record out of order")
                                        }
                                    }
                                }
                            }
                        }
                        // Past the control records after the batch's last record.
                        let _ = acks.tracker.skip_to(&tp, batch.next_offset, epoch);
                        messages
                    };
                    let queue = &self.queues[self.router.processor_for(&tp)];
                    if queue.send(messages).await.is_err() {
                        return got;
                    }
                }
                Ok(None) => self.plan.record_result(&tp, false),
                Err(ManualError::Revoking { .. }) => {
                    tracing::debug!(partition = %tp, "pipeline: partition given up; draining it");
                    if let Some(h) = self.held.get_mut(&tp) {
                        h.revoking = true;
                    }
                    self.plan.record_result(&tp, false);
                }
                Err(e) => {
                    tracing::debug!(partition = %tp, error = %e, "pipeline: partition released");
                    self.held.remove(&tp);
                    self.core.release(&tp);
                    self.plan.record_result(&tp, false);
                }
            }
        }
        // Partitions given up are released by the member once their messages are
        // committed; their leases report it to the pull after.
        let revoking: Vec<TopicPartition> =
            self.held.iter().filter(|(_, h)| h.revoking).map(|(tp, _)| tp.clone()).collect();
        for tp in revoking {
            let released = self
                .held
                .get(&tp)
                .is_some_and(|h| matches!(h.lease.pull(), Err(e) if !matches!(e, ManualError::Revoking { .. })));
            if released {
                self.held.remove(&tp);
                self.core.release(&tp);
            }
        }
        got
    }
}

async fn process_stage<P: Processor>(
    mut queue: mpsc::Receiver<Vec<Message>>,
    processor: Arc<P>,
    core: Arc<Core>,
    batchers: Option<(Router, Vec<Queue>)>,
) {
    while let Some(mut messages) = queue.recv().await {
        handle_all(&*processor, &mut messages).await;
        let Some((router, queues)) = &batchers else {
            finish(&*processor, &core, messages).await;
            continue;
        };
        if messages.is_empty() {
            continue;
        }
        // The common case: nothing failed and one batch key (a pulled batch is of one
        // partition): the messages go on as they are.
        if messages.iter().all(|m| !m.is_failed() && m.batch_key() == messages[0].batch_key()) {
            let b = router.batcher_for(messages[0].batch_key());
            if queues[b].send(messages).await.is_err() {
                return;
            }
            continue;
        }
        let (failed, ok): (Vec<Message>, Vec<Message>) = messages.into_iter().partition(Message::is_failed);
        if !failed.is_empty() {
            finish(&*processor, &core, failed).await;
        }
        // In order, grouped by the batcher of their key.
        let mut runs: Vec<(usize, Vec<Message>)> = Vec::new();
        for m in ok {
            let b = router.batcher_for(m.batch_key());
            match runs.last_mut() {
                Some((last, run)) if *last == b => run.push(m),
                _ => runs.push((b, vec![m])),
            }
        }
        for (b, run) in runs {
            if queues[b].send(run).await.is_err() {
                return;
            }
        }
    }
}

/// Runs `handle_message` over the messages in order, under one panic guard per run
/// of messages that do not panic: a panic fails its message, and the next ones go on.
async fn handle_all<P: Processor>(processor: &P, messages: &mut [Message]) {
    let mut next = 0;
    while next < messages.len() {
        let at = std::sync::atomic::AtomicUsize::new(next);
        let run = catch_unwind(async {
            let mut i = at.load(Relaxed);
            while let Some(m) = messages.get_mut(i) {
                processor.handle_message(m).await;
                i += 1;
                at.store(i, Relaxed);
            }
        })
        .await;
        next = at.load(Relaxed);
        if let Err(panic) = run {
            messages[next].fail(panic_message(&*panic));
            next += 1;
        }
    }
}

async fn batch_stage<P: Processor>(
    mut queue: mpsc::Receiver<Vec<Message>>,
    config: BatchConfig,
    processor: Arc<P>,
    core: Arc<Core>,
) {
    let mut batcher: Batcher<Message> = Batcher::new(config);
    loop {
        let deadline = batcher.next_deadline();
        let closed = tokio::select! {
            received = queue.recv() => match received {
                Some(messages) => {
                    let now = Instant::now().into_std();
                    let mut closed = Vec::new();
                    let mut messages = messages.into_iter().peekable();
                    // Each run of one key goes in at once.
                    while let Some(first) = messages.next() {
                        let key = first.batch_key().clone();
                        let run = std::iter::once(first).chain(std::iter::from_fn(|| messages.next_if(|m| *m.batch_key() == key)));
                        closed.extend(batcher.push_all(key.clone(), run, now));
                    }
                    closed
                }
                None => batcher.drain(),
            },
            () = sleep_until(deadline) => batcher.poll(Instant::now().into_std()),
        };
        let done = closed.is_empty() && deadline.is_none() && queue.is_closed() && queue.is_empty();
        for mut batch in closed {
            if let Err(panic) = catch_unwind(processor.handle_batch(&batch.key, &mut batch.items)).await {
                let reason: Arc<str> = Arc::from(panic_message(&*panic));
                for m in &mut batch.items {
                    m.fail(reason.clone());
                }
            }
            finish(&*processor, &core, batch.items).await;
        }
        if done || (queue.is_closed() && batcher.is_empty() && queue.is_empty()) {
            return;
        }
    }
}

async fn sleep_until(deadline: Option<std::time::Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}

/// The failed messages through `handle_failed`, then every message acknowledged.
async fn finish<P: Processor>(processor: &P, core: &Core, mut messages: Vec<Message>) {
    if !messages.iter().any(Message::is_failed) {
        if !core.transactional {
            core.write_outputs(&mut messages).await;
        }
        core.ack(&mut messages);
        return;
    }
    // One pass (removing the failed ones in place would shift the rest once each).
    let (mut failed, mut messages): (Vec<Message>, Vec<Message>) = messages.into_iter().partition(Message::is_failed);
    if let Err(panic) = catch_unwind(processor.handle_failed(&mut failed)).await {
        tracing::error!(message = %panic_message(&*panic), n = failed.len(), "pipeline: handle_failed panicked; acknowledging the messages");
    }
    if !core.transactional {
        core.write_outputs(&mut failed).await;
        core.write_outputs(&mut messages).await;
    }
    core.ack(&mut failed);
    core.ack(&mut messages);
}

/// The transaction stage of a transactional pipeline: one transaction at a time, with
/// the outputs of every message acknowledged below each partition's commit point and
/// those commit points; then the same offsets through the leases, waited for, so that
/// the partitions can be handed over and no later transaction is overtaken.
async fn transaction_stage(
    core: Arc<Core>,
    group: Arc<ConsumerGroup>,
    transactions: Transactions,
    mut finishing: watch::Receiver<bool>,
) {
    let mut failures: HashMap<TopicPartition, u32> = HashMap::new();
    loop {
        let work = core.lock().outputs.take();
        let Some(txn) = work else {
            if *finishing.borrow() {
                transactions.producer.close().await;
                return;
            }
            let notified = core.ready.notified();
            tokio::select! {
                () = notified => {}
                _ = finishing.changed() => {}
            }
            continue;
        };
        let metadata = {
            let m = GroupMetadata::new(group.group()).with_member(group.member_id(), group.generation());
            match &transactions.instance_id {
                Some(id) => m.with_instance_id(id.as_str()),
                None => m,
            }
        };
        let producer = &transactions.producer;
        let partitions: Vec<TopicPartition> = txn.partitions().collect();
        let result = async {
            producer.begin().await?;
            for record in txn.outputs.iter().cloned() {
                // A record that fails aborts the transaction at commit.
                drop(producer.produce_async(record).await?);
            }
            producer.send_offsets_to_transaction(&metadata, &txn.offsets).await?;
            producer.commit().await
        }
        .await;
        match result {
            Ok(()) => {
                let leases: Vec<(i64, Option<Arc<Lease>>)> = {
                    let acks = core.lock();
                    txn.offsets.iter().map(|c| (c.offset, acks.leases.get(&c.topic_partition()).cloned())).collect()
                };
                for (offset, lease) in leases {
                    if let Some(lease) = lease {
                        // Refused when the partition went meanwhile: its next owner
                        // reads the transaction's offsets.
                        let _ = lease.commit_and_wait(offset).await;
                    }
                }
                for tp in &partitions {
                    failures.remove(tp);
                }
            }
            Err(e) => {
                // Refused when the commit aborted it already.
                let _ = producer.abort().await;
                let fatal = e.is_fenced()
                    || e.error_code() == Some(klife_protocol::ErrorCode::TransactionalIdAuthorizationFailed);
                let fenced = e.is_group_member_fenced();
                let mut give_up = fatal;
                let mut attempts = 0;
                for tp in &partitions {
                    if !fenced {
                        let n = failures.entry(tp.clone()).or_insert(0);
                        *n += 1;
                        attempts = attempts.max(*n);
                        give_up |= *n >= transactions.max_attempts;
                    }
                }
                if give_up {
                    tracing::error!(error = %e, attempts, "pipeline: transactions keep failing; stopping the member");
                    group.close();
                } else if fenced {
                    tracing::info!(error = %e, "pipeline: the member's offsets were refused (fenced or rebalanced); its transaction aborted");
                } else {
                    tracing::warn!(error = %e, attempts, "pipeline: a transaction failed; its partitions restart from their last commit");
                }
                // Restarted first (no more pulls from the partition), then forgotten:
                // acknowledgements still to come are stale, and nothing of the
                // partition is taken again before its messages come again.
                for tp in &partitions {
                    core.restart(tp);
                    core.release(tp);
                }
                if !fenced && !give_up {
                    let backoff = transactions
                        .retry_backoff
                        .saturating_mul(1 << attempts.saturating_sub(1).min(16))
                        .min(transactions.retry_backoff_max);
                    tokio::time::sleep(backoff).await;
                }
            }
        }
        core.lock().outputs.done(&txn);
        core.drained.notify_waiters();
    }
}
