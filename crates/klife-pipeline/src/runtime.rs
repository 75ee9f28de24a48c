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

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use klife_group::ConfigError;
use klife_group::runtime::{
    BatchSize, ConsumerGroup, GroupConfig, GroupStopped, Handler, Lease, ManualError, Mode, Resources, catch_unwind,
    panic_message,
};
use klife_protocol::types::TopicPartition;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::ack::{AckError, AckTracker};
use crate::batch::{BatchConfig, BatchConfigError, Batcher};
use crate::message::Message;
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
        Source { start: Box::new(move || ConsumerGroup::start_manual(resources, config)), config_modes }
    }

    /// A member the pipeline starts and owns, every topic in manual mode, whose
    /// `handler` gets the lifecycle callbacks (`on_consumer_start`,
    /// `on_consumer_stop`) of each partition; its `handle_record_batch` is never called.
    pub fn group_with_callbacks<H: Handler>(resources: Resources, config: GroupConfig, handler: H) -> Source {
        let config_modes = modes(&config);
        let config = manual(config);
        Source { start: Box::new(move || ConsumerGroup::start(resources, config, handler)), config_modes }
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
}

/// The acknowledgements and the leases their commits go through.
#[derive(Debug, Default)]
struct Acks {
    tracker: AckTracker,
    leases: HashMap<TopicPartition, Arc<Lease>>,
}

#[derive(Debug, Default)]
struct Core {
    acks: Mutex<Acks>,
    /// Wakes producers waiting for their partitions to drain.
    drained: tokio::sync::Notify,
}

impl Core {
    fn lock(&self) -> MutexGuard<'_, Acks> {
        self.acks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Acknowledges messages and sends the commits that follows.
    fn ack(&self, messages: &[Message]) {
        let mut acks = self.lock();
        for e in acks.tracker.ack_all(messages.iter().map(|m| &m.delivery)) {
            // Stale: the partition was released (lost, or restarting); its next owner
            // starts at the last commit.
            if !matches!(e, AckError::Stale { .. }) {
                tracing::error!(error = %e, "pipeline: an acknowledgement was refused");
            }
        }
        for commit in acks.tracker.take_commits() {
            let tp = commit.topic_partition();
            if let Some(lease) = acks.leases.get(&tp) {
                if let Err(e) = lease.commit(commit.offset) {
                    tracing::debug!(partition = %tp, error = %e, "pipeline: a commit was refused");
                }
            }
        }
        drop(acks);
        self.drained.notify_waiters();
    }

    /// Forgets a partition: acknowledgements of it are stale from now on.
    fn release(&self, tp: &TopicPartition) {
        let mut acks = self.lock();
        acks.tracker.release(tp);
        acks.leases.remove(tp);
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
        let core = Arc::new(Core::default());
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
        Ok(Pipeline { group: Some(group), stop, producers, stages })
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
        let Some(group) = self.group.take() else { return Ok(()) };
        match Arc::try_unwrap(group) {
            Ok(group) => group.shutdown().await,
            Err(_) => unreachable!("every task holding the member has ended"),
        }
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        for t in self.producers.iter().chain(&self.stages) {
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
            let pending = {
                let acks = self.core.lock();
                self.held.keys().any(|tp| !acks.tracker.is_drained(tp))
            };
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
async fn finish<P: Processor>(processor: &P, core: &Core, messages: Vec<Message>) {
    if !messages.iter().any(Message::is_failed) {
        core.ack(&messages);
        return;
    }
    // One pass (removing the failed ones in place would shift the rest once each).
    let (mut failed, messages): (Vec<Message>, Vec<Message>) = messages.into_iter().partition(Message::is_failed);
    if let Err(panic) = catch_unwind(processor.handle_failed(&mut failed)).await {
        tracing::error!(message = %panic_message(&*panic), n = failed.len(), "pipeline: handle_failed panicked; acknowledging the messages");
    }
    core.ack(&failed);
    core.ack(&messages);
}
