//! The group's members: each on a client of its own (as separate processes would be),
//! in the run's mode, noting what it handles and owns in the [`Log`]; started, killed
//! and shut down by the faults.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use klife::TopicPartition;
use klife::group::{
    Action, BatchContext, BatchSize, ConsumerGroup, GroupEvent, GroupProtocol, GroupStream, Handler, Lease,
    PartitionContext, ResetPolicy, ServerAssignor, StopReason, TopicConfig,
};
use klife::pipeline::{BatchKey, Message, Pipeline, PipelineConfig, Processor};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::observe::{End, Log, MemberId};
use crate::plan::{Assignor, Mode, Plan, Protocol};

/// A handler's or driver's next batch held past the rebalance timeout, once armed.
#[derive(Debug)]
pub struct Stall {
    armed: AtomicBool,
    duration: Duration,
    log: Log,
}

impl Stall {
    fn new(duration: Duration, log: Log) -> Arc<Stall> {
        Arc::new(Stall { armed: AtomicBool::new(false), duration, log })
    }

    /// Arms the stall: the next batch waits.
    pub fn arm(&self) {
        self.armed.store(true, Ordering::SeqCst);
    }

    async fn hold(&self) {
        if self.armed.swap(false, Ordering::SeqCst) {
            self.log.stalled();
            tokio::time::sleep(self.duration).await;
        }
    }
}

/// What every member of a run shares.
#[derive(Debug, Clone)]
pub struct Setup {
    /// The plan.
    pub plan: Arc<Plan>,
    /// The bootstrap addresses.
    pub addresses: Vec<String>,
    /// The group.
    pub group: String,
    /// The topics' names, by number.
    pub topics: Vec<String>,
    /// The log.
    pub log: Log,
}

/// The handler of handler mode, and the lifecycle callbacks of the other modes.
#[derive(Clone)]
struct Recorder {
    id: MemberId,
    log: Log,
    stall: Arc<Stall>,
}

fn tp(p: &PartitionContext) -> TopicPartition {
    TopicPartition::new(p.topic(), p.partition())
}

impl Handler for Recorder {
    async fn handle_record_batch(&self, _ctx: &BatchContext, records: Vec<klife::Record>) -> Action {
        self.stall.hold().await;
        self.log.handled(self.id, &records);
        Action::Commit
    }

    async fn on_consumer_start(&self, p: &PartitionContext) {
        self.log.started(self.id, tp(p));
    }

    async fn on_consumer_stop(&self, p: &PartitionContext, reason: &StopReason) {
        let end = match reason {
            StopReason::Revoked => End::Revoked,
            StopReason::Shutdown => End::Shutdown,
            StopReason::Failed(_) => End::Failed,
            _ => End::Lost,
        };
        self.log.stopped(self.id, tp(p), end);
    }
}

/// The pipeline's processor: notes each record where it is acknowledged.
struct Recording {
    id: MemberId,
    log: Log,
    stall: Arc<Stall>,
    batchers: bool,
}

impl Processor for Recording {
    async fn handle_message(&self, message: &mut Message) {
        self.stall.hold().await;
        if !self.batchers {
            self.log.handled(self.id, [message.record()]);
        }
    }

    async fn handle_batch(&self, _key: &BatchKey, messages: &mut [Message]) {
        self.log.handled(self.id, messages.iter().map(Message::record));
    }
}

enum Run {
    Handler(ConsumerGroup),
    Manual { group: Arc<ConsumerGroup>, scanner: JoinHandle<()>, stop: watch::Sender<bool>, drivers: Drivers },
    Stream { task: JoinHandle<()>, close: watch::Sender<bool>, status: Arc<Mutex<(String, String)>> },
    Pipeline(Pipeline),
}

type Drivers = Arc<Mutex<HashMap<TopicPartition, JoinHandle<()>>>>;

/// A running member.
pub struct Member {
    /// Which member.
    pub id: MemberId,
    client: klife::Client,
    stall: Arc<Stall>,
    run: Run,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member").field("id", &self.id).finish_non_exhaustive()
    }
}

/// A client with the run's timeouts.
pub async fn client(addresses: &[String], kafka: bool) -> Result<klife::Client, String> {
    klife::Client::builder()
        .bootstrap_servers(addresses.to_vec())
        .request_timeout(if kafka { Duration::from_secs(15) } else { Duration::from_secs(5) })
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(500))
        .build()
        .await
        .map_err(|e| format!("connecting to {addresses:?}: {e}"))
}

impl Member {
    /// Starts member `id` in the run's mode.
    pub async fn start(setup: &Setup, id: MemberId) -> Result<Member, String> {
        let plan = &setup.plan;
        let client = client(&setup.addresses, plan.broker == crate::plan::Broker::Kafka).await?;
        let stall = Stall::new(plan.timing.stall, setup.log.clone());
        let recorder = Recorder { id, log: setup.log.clone(), stall: stall.clone() };
        let mut builder = client.consumer_group(setup.group.as_str()).rebalance_timeout(plan.timing.rebalance);
        builder = match plan.protocols[id.slot] {
            Protocol::Classic => {
                let assignor: Arc<dyn klife::group::Assignor> = match plan.assignor {
                    Assignor::Range => Arc::new(klife::group::RangeAssignor),
                    Assignor::RoundRobin => Arc::new(klife::group::RoundRobinAssignor),
                    _ => Arc::new(klife::group::CooperativeStickyAssignor),
                };
                builder
                    .protocol(GroupProtocol::Classic)
                    .session_timeout(plan.timing.session)
                    .heartbeat_interval(plan.timing.heartbeat)
                    .assignors(vec![assignor])
            }
            p => {
                let assignor = if plan.assignor == Assignor::ServerRange {
                    ServerAssignor::Range
                } else {
                    ServerAssignor::Uniform
                };
                let protocol = if p == Protocol::Auto { GroupProtocol::Auto } else { GroupProtocol::Consumer };
                builder.protocol(protocol).server_assignor(assignor)
            }
        };
        for name in &setup.topics {
            let mut topic = TopicConfig::new(name.as_str())
                .offset_reset(ResetPolicy::Earliest)
                .handler_max_batch_size(BatchSize::Max(plan.batch_size))
                .fetch_interval(Duration::from_millis(30));
            topic = match plan.mode {
                Mode::Handler => topic.handler_max_unacked_commits(plan.max_unacked),
                _ => topic.mode(klife::group::Mode::Manual),
            };
            builder = builder.topic(topic);
        }
        let started = |e: klife::Error| format!("member {id} did not start: {e}");
        let run = match plan.mode {
            Mode::Handler => Run::Handler(builder.handler(recorder).start().await.map_err(started)?),
            Mode::Manual => {
                let group = Arc::new(builder.handler(recorder).start().await.map_err(started)?);
                let (stop, stopped) = watch::channel(false);
                let drivers = Drivers::default();
                let scanner =
                    tokio::spawn(scan(group.clone(), id, setup.log.clone(), stall.clone(), stopped, drivers.clone()));
                Run::Manual { group, scanner, stop, drivers }
            }
            Mode::Stream => {
                let stream = builder.stream().await.map_err(started)?;
                let (close, closing) = watch::channel(false);
                let status = Arc::new(Mutex::new((String::new(), String::new())));
                let task =
                    tokio::spawn(stream_loop(stream, id, setup.log.clone(), stall.clone(), closing, status.clone()));
                Run::Stream { task, close, status }
            }
            Mode::Pipeline => {
                let p = plan.pipeline.unwrap_or(crate::plan::PipelinePlan {
                    producers: 1,
                    processors: 1,
                    max_demand: 1,
                    batchers: None,
                });
                let mut config = PipelineConfig::default()
                    .producers(p.producers)
                    .processors(p.processors)
                    .max_demand(p.max_demand)
                    .receive_interval(Duration::from_millis(20));
                if let Some((n, size, ms)) = p.batchers {
                    config = config.batchers(n, size, Duration::from_millis(ms)).map_err(|e| e.to_string())?;
                }
                let processor =
                    Recording { id, log: setup.log.clone(), stall: stall.clone(), batchers: p.batchers.is_some() };
                Run::Pipeline(builder.handler(recorder).pipeline(config, processor).await.map_err(started)?)
            }
        };
        Ok(Member { id, client, stall, run })
    }

    /// The group's member id (empty until joined).
    pub fn member_id(&self) -> String {
        match &self.run {
            Run::Handler(g) => g.member_id(),
            Run::Manual { group, .. } => group.member_id(),
            Run::Pipeline(p) => p.group().member_id(),
            Run::Stream { status, .. } => status.lock().unwrap_or_else(PoisonError::into_inner).0.clone(),
        }
    }

    /// What the member says of itself: id, protocol, generation, partitions running
    /// (evidence).
    pub fn status(&self) -> String {
        match &self.run {
            Run::Handler(g) => status_of(g),
            Run::Manual { group, .. } => status_of(group),
            Run::Pipeline(p) => status_of(p.group()),
            Run::Stream { status, task, .. } => {
                let s = status.lock().unwrap_or_else(PoisonError::into_inner).1.clone();
                if task.is_finished() { format!("{s}, its stream ended") } else { s }
            }
        }
    }

    /// Arms the stall of the member's next batch.
    pub fn stall(&self) {
        self.stall.arm();
    }

    /// Ends the member as a crash would: nothing more is committed and it does not
    /// leave (`abort()`; a stream or a pipeline dropped without shutdown); then its
    /// client closes.
    pub async fn kill(self, log: &Log) {
        log.killed(self.id);
        match self.run {
            Run::Handler(g) => g.abort(),
            Run::Manual { group, scanner, stop: _, drivers } => {
                scanner.abort();
                let _ = scanner.await;
                let handles: Vec<JoinHandle<()>> =
                    drivers.lock().unwrap_or_else(PoisonError::into_inner).drain().map(|(_, h)| h).collect();
                for h in &handles {
                    h.abort();
                }
                match Arc::try_unwrap(group) {
                    Ok(g) => g.abort(),
                    Err(g) => drop(g),
                }
            }
            Run::Stream { task, .. } => {
                task.abort();
                let _ = task.await;
            }
            Run::Pipeline(p) => drop(p),
        }
        self.client.close().await;
    }

    /// Shuts the member down gracefully: what it handled is committed, then it leaves.
    pub async fn leave(self) -> Result<(), String> {
        let id = self.id;
        let result = match self.run {
            Run::Handler(g) => g.shutdown().await.map_err(|e| e.to_string()),
            Run::Manual { group, scanner, stop, drivers } => {
                // Revocations reach the drivers, which commit what they pulled; the
                // scanner stops taking leases.
                group.close();
                let _ = stop.send(true);
                let _ = scanner.await;
                let result = match Arc::try_unwrap(group) {
                    Ok(g) => g.shutdown().await.map_err(|e| e.to_string()),
                    Err(_) => Err("the member is still shared after its scanner ended".to_owned()),
                };
                let handles: Vec<JoinHandle<()>> =
                    drivers.lock().unwrap_or_else(PoisonError::into_inner).drain().map(|(_, h)| h).collect();
                for h in handles {
                    let _ = h.await;
                }
                result
            }
            Run::Stream { task, close, .. } => {
                let _ = close.send(true);
                task.await.map_err(|e| format!("the stream's task: {e}"))
            }
            Run::Pipeline(p) => p.shutdown().await.map_err(|e| e.to_string()),
        };
        self.client.close().await;
        result.map_err(|e| format!("member {id} did not shut down cleanly: {e}"))
    }
}

fn status_of(g: &ConsumerGroup) -> String {
    let running: Vec<String> = g.assigned_partitions().iter().map(ToString::to_string).collect();
    format!(
        "id {:?}, {:?}, generation {}, running [{}]",
        g.member_id(),
        g.protocol(),
        g.generation(),
        running.join(" ")
    )
}

/// Manual mode: takes a lease of every partition assigned, each driven by a task of
/// its own.
async fn scan(
    group: Arc<ConsumerGroup>,
    id: MemberId,
    log: Log,
    stall: Arc<Stall>,
    mut stop: watch::Receiver<bool>,
    drivers: Drivers,
) {
    loop {
        if *stop.borrow() {
            return;
        }
        for tp in group.assigned_partitions() {
            let mut map = drivers.lock().unwrap_or_else(PoisonError::into_inner);
            if map.get(&tp).is_some_and(|h| !h.is_finished()) {
                continue;
            }
            if let Ok(lease) = group.lease(&tp.topic, tp.partition) {
                map.insert(tp, tokio::spawn(drive(lease, id, log.clone(), stall.clone())));
            }
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(20)) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Pulls a lease's batches, notes them handled and commits each before the next.
async fn drive(lease: Lease, id: MemberId, log: Log, stall: Arc<Stall>) {
    loop {
        let Ok(batch) = lease.next_batch().await else { return };
        stall.hold().await;
        log.handled(id, &batch.records);
        // A refused commit (the partition lost): the next pull says what became of it.
        let _ = lease.commit_and_wait(batch.next_offset).await;
    }
}

/// Stream mode: the member's event loop, each batch committed before the next event.
async fn stream_loop(
    mut stream: GroupStream,
    id: MemberId,
    log: Log,
    stall: Arc<Stall>,
    mut close: watch::Receiver<bool>,
    status: Arc<Mutex<(String, String)>>,
) {
    let mut closing = false;
    loop {
        *status.lock().unwrap_or_else(PoisonError::into_inner) =
            (stream.group().member_id(), status_of(stream.group()));
        let event = tokio::select! {
            event = stream.next() => event,
            // Now and then, to keep the member id current while no event comes.
            () = tokio::time::sleep(Duration::from_millis(100)) => continue,
            changed = close.changed(), if !closing => {
                closing = true;
                if changed.is_ok() {
                    stream.close();
                }
                continue;
            }
        };
        let Some(event) = event else { break };
        match event {
            GroupEvent::Assigned(partitions) => {
                for p in partitions {
                    log.started(id, p);
                }
            }
            GroupEvent::Batch(batch) => {
                stall.hold().await;
                log.handled(id, batch.records());
                let _ = batch.commit_and_wait().await;
            }
            GroupEvent::Revoked(partitions) => {
                for p in partitions {
                    log.stopped(id, p, if closing { End::Shutdown } else { End::Revoked });
                }
            }
            GroupEvent::Lost(partitions) => {
                for p in partitions {
                    log.stopped(id, p, End::Lost);
                }
            }
            _ => {}
        }
    }
    let _ = stream.shutdown().await;
}
