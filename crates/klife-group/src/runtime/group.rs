//! The task of one consumer group member: it takes the member's changes of assignment
//! ([`MemberEvent`]), starts and stops the partitions' consumers, and carries out the
//! offsets state machines ([`CommitTracker`], [`OffsetFetcher`]) against the group
//! coordinator. It only moves bytes and timers; what to commit, when, and where a
//! partition starts are decided by those state machines.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use klife_connection::{Cluster, CoordinatorType, Error as ConnectionError, Lane};
use klife_fetcher::{Fetcher, StartOffset};
use klife_producer::Producer;
use klife_protocol::ApiKey;
use klife_protocol::messages::{OffsetCommitResponse, OffsetFetchResponse};
use klife_protocol::types::TopicPartition;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinSet;

use super::config::TopicSettings;
use super::handler::{Handler, PartitionContext, StopReason};
use super::partition::{Control, PartitionConsumer, Report};
use super::{GroupStopped, PartitionFailure};
use crate::driver::{Ended, GroupMember, MemberEvent, Revocation};
use crate::membership::consumer::Outcome;
use crate::offsets::{
    CommitEvent, CommitId, CommitTracker, FetchEvent, FetchId, FlushId, OffsetFetcher, ResetPolicy, StartPosition,
};
use crate::telemetry;

/// The wait between two coordinator lookups that failed.
const LOOKUP_BACKOFF: Duration = Duration::from_millis(200);
/// How long an OffsetCommit or OffsetFetch waits for its answer.
const OFFSETS_TIMEOUT: Duration = Duration::from_secs(30);

/// What the handle asks of the task.
pub(crate) enum Command {
    /// Stop every partition gracefully, commit, leave; then answer.
    Shutdown(oneshot::Sender<()>),
    /// End at once, as a crash would: commit nothing more, do not leave.
    Abort,
}

/// What the handle and the task share.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub(crate) running: Mutex<Vec<TopicPartition>>,
    pub(crate) member_id: Mutex<String>,
    pub(crate) epoch: Mutex<i32>,
}

/// The group coordinator as the offsets requests use it.
#[derive(Clone)]
struct Coordinator {
    lane: Arc<Lane>,
    commit_version: i16,
    fetch_version: i16,
}

/// What a spawned request came back with.
enum Io {
    Coordinator(Result<Coordinator, ConnectionError>),
    Commit(CommitId, Instant, Result<OffsetCommitResponse, ConnectionError>),
    Fetch(FetchId, Result<OffsetFetchResponse, ConnectionError>),
}

/// Where a partition's consumer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Running,
    /// Asked to stop; waiting for [`Report::Stopped`].
    Stopping,
    /// Stopped; waiting for its commit flush, then `Close`.
    Stopped,
    /// Asked to close; waiting for [`Report::Closed`].
    Closing,
    /// Failed for good: no task runs.
    Failed,
}

struct Part {
    task: u64,
    control: watch::Sender<Control>,
    committed: watch::Sender<Option<i64>>,
    phase: Phase,
    failures: u32,
}

/// A graceful giving-up of partitions under way: a revocation or the shutdown.
struct GivingUp {
    revocation: Option<Revocation>,
    reason: StopReason,
    partitions: Vec<TopicPartition>,
    stopping: BTreeSet<TopicPartition>,
    flush: Option<FlushId>,
    flushed: bool,
    closing: BTreeSet<TopicPartition>,
    deadline: Instant,
}

pub(crate) struct GroupTask<H> {
    pub(crate) group: Arc<str>,
    pub(crate) rebalance_timeout: Duration,
    pub(crate) restart_backoff: (Duration, Duration),
    pub(crate) settings: HashMap<String, Arc<TopicSettings>>,
    pub(crate) fetchers: HashMap<String, Fetcher>,
    pub(crate) handler: Arc<H>,
    pub(crate) producer: Option<Producer>,
    pub(crate) cluster: Cluster,
    pub(crate) member: Option<GroupMember>,
    pub(crate) tracker: CommitTracker,
    pub(crate) offsets: OffsetFetcher,
    pub(crate) commands: mpsc::UnboundedReceiver<Command>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) failures: mpsc::UnboundedSender<PartitionFailure>,
    pub(crate) reports_tx: mpsc::UnboundedSender<Report>,
    pub(crate) reports: mpsc::UnboundedReceiver<Report>,
    pub(crate) state: TaskState,
}

/// The task's own state, apart from its settings.
#[derive(Default)]
pub(crate) struct TaskState {
    coordinator: Option<Coordinator>,
    lookup: bool,
    io: JoinSet<Io>,
    parts: BTreeMap<TopicPartition, Part>,
    /// Owned by the member (assigned, not revoked or lost).
    owned: BTreeSet<TopicPartition>,
    /// Assigned again while their previous consumer still closes.
    deferred: BTreeSet<TopicPartition>,
    giving_up: Vec<GivingUp>,
    next_task: u64,
    member_ended: Option<Ended>,
    commands_open: bool,
    shutdown: Option<Vec<oneshot::Sender<()>>>,
    aborted: bool,
}

impl TaskState {
    pub(crate) fn new() -> TaskState {
        TaskState { commands_open: true, ..TaskState::default() }
    }
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

impl<H: Handler> GroupTask<H> {
    pub(crate) async fn run(mut self) -> Result<(), GroupStopped> {
        // The offsets requests go to the coordinator: look it up from the start.
        self.find_coordinator();
        loop {
            if self.state.aborted {
                return Err(GroupStopped::Aborted);
            }
            self.pump(now());
            if self.state.shutdown.is_some() && self.state.giving_up.is_empty() {
                if let Some(member) = self.member.take() {
                    tracing::info!(group = %self.group, "partitions given up; leaving the group");
                    let ended = member.leave().await;
                    self.state.member_ended.get_or_insert(ended);
                }
            }
            if let Some(result) = self.finished() {
                return self.finish(result).await;
            }
            let wake = self.wake_at();
            let member_open = self.state.member_ended.is_none() && self.member.is_some();
            let commands_open = self.state.commands_open;
            let has_io = !self.state.io.is_empty();
            tokio::select! {
                event = next_member_event(self.member.as_mut()), if member_open => {
                    self.on_member_event(now(), event);
                }
                Some(report) = self.reports.recv() => self.on_report(now(), report),
                Some(done) = self.state.io.join_next(), if has_io => match done {
                    Ok(io) => self.on_io(now(), io),
                    Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                    Err(_) => {}
                },
                command = self.commands.recv(), if commands_open => self.on_command(now(), command),
                () = sleep_until(wake) => {}
            }
        }
    }

    /// How the task ends, once it has nothing left to run.
    fn finished(&self) -> Option<Result<(), GroupStopped>> {
        let idle = self.state.parts.values().all(|p| p.phase == Phase::Failed) && self.state.giving_up.is_empty();
        match &self.state.member_ended {
            Some(ended) if idle => Some(match ended {
                Ended::Member(Outcome::Left) => Ok(()),
                Ended::Member(Outcome::Failed(e)) => Err(GroupStopped::Member(e.clone())),
                Ended::Member(Outcome::FallBackToClassic { message }) => {
                    Err(GroupStopped::ClassicOnly { message: message.clone() })
                }
                Ended::ClusterClosed => Err(GroupStopped::ClusterClosed),
            }),
            _ => None,
        }
    }

    async fn finish(mut self, result: Result<(), GroupStopped>) -> Result<(), GroupStopped> {
        self.publish();
        if let Some(waiting) = self.state.shutdown.take() {
            for w in waiting {
                let _ = w.send(());
            }
        }
        tracing::info!(group = %self.group, ?result, "the group's member ended");
        result
    }

    fn wake_at(&self) -> Option<Instant> {
        let deadlines = self.state.giving_up.iter().map(|g| g.deadline);
        [self.tracker.poll_timeout(), self.offsets.poll_timeout()].into_iter().flatten().chain(deadlines).min()
    }

    /// Carries out what the state machines ask until they ask nothing more.
    fn pump(&mut self, now: Instant) {
        loop {
            let mut progress = false;
            while let Some(event) = self.tracker.poll_event() {
                progress = true;
                self.on_commit_event(event);
            }
            while let Some(event) = self.offsets.poll_event() {
                progress = true;
                self.on_fetch_event(now, event);
            }
            if let Some(c) = self.state.coordinator.clone() {
                while let Some(commit) = self.tracker.poll_commit(now, c.commit_version) {
                    progress = true;
                    let lane = c.lane.clone();
                    let (id, version) = (commit.id, c.commit_version);
                    self.state.io.spawn(async move {
                        let sent = now;
                        let result = match lane.connection().await {
                            Ok(conn) => conn.send_version_with_timeout(&commit.request, version, OFFSETS_TIMEOUT).await,
                            Err(e) => Err(e),
                        };
                        Io::Commit(id, sent, result)
                    });
                }
                while let Some(fetch) = self.offsets.poll_fetch(now, c.fetch_version) {
                    progress = true;
                    let lane = c.lane.clone();
                    let (id, version) = (fetch.id, c.fetch_version);
                    self.state.io.spawn(async move {
                        let result = match lane.connection().await {
                            Ok(conn) => conn.send_version_with_timeout(&fetch.request, version, OFFSETS_TIMEOUT).await,
                            Err(e) => Err(e),
                        };
                        Io::Fetch(id, result)
                    });
                }
            }
            progress |= self.advance_giving_up(now);
            if !progress {
                break;
            }
        }
        self.publish();
    }

    fn publish(&self) {
        let running: Vec<TopicPartition> =
            self.state.parts.iter().filter(|(_, p)| p.phase != Phase::Failed).map(|(tp, _)| tp.clone()).collect();
        telemetry::record_owned(&self.group, running.len());
        *self.shared.running.lock().unwrap_or_else(PoisonError::into_inner) = running;
    }

    fn find_coordinator(&mut self) {
        if let Some(c) = self.state.coordinator.take() {
            tracing::debug!(node_id = c.lane.node_id(), "offsets: the coordinator moved; looking it up again");
            self.cluster.invalidate_coordinator(CoordinatorType::Group, &self.group);
        }
        if self.state.lookup {
            return;
        }
        self.state.lookup = true;
        let (cluster, group) = (self.cluster.clone(), self.group.clone());
        self.state.io.spawn(async move {
            loop {
                let found = async {
                    let c = cluster.coordinator(CoordinatorType::Group, &group).await?;
                    let lane = Arc::new(cluster.open_lane(c.node_id));
                    let conn = lane.connection().await?;
                    let commit_version = conn.version_for(ApiKey::OffsetCommit, None)?;
                    let fetch_version = conn.version_for(ApiKey::OffsetFetch, None)?;
                    Ok::<_, ConnectionError>(Coordinator { lane, commit_version, fetch_version })
                }
                .await;
                match found {
                    Ok(c) => return Io::Coordinator(Ok(c)),
                    Err(e) if cluster.is_closed() => return Io::Coordinator(Err(e)),
                    Err(e) => {
                        tracing::warn!(error = %e, "offsets: coordinator lookup failed; trying again");
                        cluster.invalidate_coordinator(CoordinatorType::Group, &group);
                        tokio::time::sleep(LOOKUP_BACKOFF).await;
                    }
                }
            }
        });
    }

    fn on_io(&mut self, now: Instant, io: Io) {
        match io {
            Io::Coordinator(Ok(c)) => {
                self.state.lookup = false;
                let min = self.tracker.config().min_version();
                if c.commit_version < min || c.fetch_version < min.min(crate::offsets::FETCH_GROUPS_MIN_VERSION) {
                    tracing::error!(
                        commit = c.commit_version,
                        fetch = c.fetch_version,
                        min,
                        "offsets: the coordinator's OffsetCommit/OffsetFetch versions are too old for this group protocol"
                    );
                }
                tracing::debug!(node_id = c.lane.node_id(), "offsets: coordinator found");
                self.state.coordinator = Some(c);
                self.tracker.coordinator_found(now);
                self.offsets.coordinator_found(now);
            }
            Io::Coordinator(Err(e)) => {
                self.state.lookup = false;
                tracing::warn!(error = %e, "offsets: the cluster is closed");
            }
            Io::Commit(id, sent, Ok(response)) => {
                let refused = response.topics.iter().flat_map(|t| &t.partitions).any(|p| p.error_code != 0);
                telemetry::record_commit(
                    if refused { "error" } else { "ok" },
                    Some(now.saturating_duration_since(sent)),
                );
                self.tracker.on_commit_response(now, id, &response);
            }
            Io::Commit(id, _, Err(e)) => {
                tracing::debug!(error = %e, "offsets: commit failed");
                telemetry::record_commit("failed", None);
                self.tracker.on_commit_failed(now, id);
            }
            Io::Fetch(id, Ok(response)) => self.offsets.on_fetch_response(now, id, &response),
            Io::Fetch(id, Err(e)) => {
                tracing::debug!(error = %e, "offsets: committed offsets lookup failed");
                self.offsets.on_fetch_failed(now, id);
            }
        }
    }

    fn on_commit_event(&mut self, event: CommitEvent) {
        match event {
            CommitEvent::Committed { offset } => {
                let tp = TopicPartition::new(offset.topic.clone(), offset.partition);
                if let Some(p) = self.state.parts.get(&tp) {
                    p.committed.send_replace(Some(offset.offset));
                }
            }
            CommitEvent::Failed { error, uncommitted } => {
                tracing::warn!(error = %error, ?uncommitted, "offsets: a commit failed for good; the work is redelivered");
                let partition = error.partition().clone();
                let _ = self.failures.send(PartitionFailure { partition, error: Arc::new(error.into()) });
            }
            CommitEvent::FindCoordinator => self.find_coordinator(),
            CommitEvent::Flushed { flush, uncommitted, .. } => {
                if !uncommitted.is_empty() {
                    tracing::warn!(?uncommitted, "offsets: a flush could not commit everything; it is redelivered");
                }
                for g in &mut self.state.giving_up {
                    if g.flush == Some(flush) {
                        g.flushed = true;
                    }
                }
            }
        }
    }

    fn on_fetch_event(&mut self, now: Instant, event: FetchEvent) {
        match event {
            FetchEvent::Start { partition, start } => {
                if !self.state.owned.contains(&partition) || self.state.parts.contains_key(&partition) {
                    return;
                }
                let (committed, start) = match start {
                    StartPosition::Committed { offset, .. } => {
                        (Some(offset.offset), StartOffset::Offset(offset.offset))
                    }
                    StartPosition::Earliest => (None, StartOffset::Earliest),
                    StartPosition::Latest => (None, StartOffset::Latest),
                };
                if !self.tracker.partitions().contains(&partition) {
                    self.tracker.assign(now, partition.clone(), committed);
                }
                self.spawn(partition, start, Duration::ZERO, 0);
            }
            FetchEvent::Failed(error) => {
                let partition = error.partition().clone();
                tracing::error!(error = %error, "offsets: a partition's start could not be found; it is not consumed");
                let _ = self.failures.send(PartitionFailure { partition, error: Arc::new(error.into()) });
            }
            FetchEvent::FindCoordinator => self.find_coordinator(),
        }
    }

    /// Starts a consumer for `partition` at `start`, after `delay`.
    fn spawn(&mut self, partition: TopicPartition, start: StartOffset, delay: Duration, failures: u32) {
        let Some(settings) = self.settings.get(&*partition.topic).cloned() else {
            tracing::warn!(%partition, "assigned a partition of a topic the group does not list; it is not consumed");
            return;
        };
        let Some(fetcher) = self.fetchers.get(&*partition.topic).cloned() else { return };
        self.state.next_task += 1;
        let task = self.state.next_task;
        let (control_tx, control) = watch::channel(Control::Run);
        let (committed_tx, committed) = watch::channel(self.tracker.committed(&partition));
        let consumer = PartitionConsumer {
            task,
            handler: self.handler.clone(),
            ctx: PartitionContext {
                topic: partition.topic.clone(),
                partition: partition.partition,
                group: self.group.clone(),
            },
            settings,
            fetcher,
            producer: self.producer.clone(),
            start,
            delay,
            committed,
            control,
            reports: self.reports_tx.clone(),
        };
        tokio::spawn(consumer.run());
        self.state.parts.insert(
            partition,
            Part { task, control: control_tx, committed: committed_tx, phase: Phase::Running, failures },
        );
    }

    fn on_member_event(&mut self, now: Instant, event: Option<MemberEvent>) {
        match event {
            Some(MemberEvent::Generation { member_id, epoch }) => {
                *self.shared.member_id.lock().unwrap_or_else(PoisonError::into_inner) = member_id.clone();
                *self.shared.epoch.lock().unwrap_or_else(PoisonError::into_inner) = epoch;
                self.tracker.set_member(now, member_id.clone(), epoch);
                self.offsets.set_member(now, member_id, epoch);
            }
            Some(MemberEvent::Assigned { partitions }) => {
                telemetry::record_assignment_change(partitions.len(), 0, 0);
                let mut fetch = Vec::new();
                for tp in partitions {
                    self.state.owned.insert(tp.clone());
                    match self.state.parts.get(&tp).map(|p| p.phase) {
                        Some(Phase::Failed) => {
                            self.state.parts.remove(&tp);
                            fetch.push(tp);
                        }
                        Some(_) => {
                            self.state.deferred.insert(tp);
                        }
                        None => fetch.push(tp),
                    }
                }
                self.fetch_starts(now, fetch);
            }
            Some(MemberEvent::Revoked { revocation }) => {
                let partitions = revocation.partitions().to_vec();
                telemetry::record_assignment_change(0, partitions.len(), 0);
                self.give_up(now, partitions, StopReason::Revoked, Some(revocation));
            }
            Some(MemberEvent::Lost { partitions, reason }) => {
                telemetry::record_assignment_change(0, 0, partitions.len());
                tracing::warn!(group = %self.group, ?reason, n = partitions.len(), "partitions lost");
                self.lose(now, &partitions);
            }
            Some(MemberEvent::Ended(ended)) => {
                tracing::info!(group = %self.group, ?ended, "the member ended");
                let all: Vec<TopicPartition> = self.state.parts.keys().cloned().collect();
                self.lose(now, &all);
                self.state.member_ended = Some(ended);
            }
            None => {
                if self.state.member_ended.is_none() {
                    self.state.member_ended = Some(Ended::ClusterClosed);
                }
            }
        }
    }

    /// Looks the starts of `partitions` up (their committed offsets, or the reset
    /// policy).
    fn fetch_starts(&mut self, now: Instant, partitions: Vec<TopicPartition>) {
        let with_reset: Vec<(TopicPartition, ResetPolicy)> = partitions
            .into_iter()
            .map(|tp| {
                let reset = self.settings.get(&*tp.topic).map(|s| s.offset_reset).unwrap_or_default();
                (tp, reset)
            })
            .collect();
        self.offsets.add(now, with_reset);
    }

    /// Lost partitions: stopped without a commit.
    fn lose(&mut self, now: Instant, partitions: &[TopicPartition]) {
        self.offsets.remove(partitions);
        let _ = self.tracker.lose(now, partitions.iter().cloned());
        for tp in partitions {
            self.state.owned.remove(tp);
            self.state.deferred.remove(tp);
            for g in &mut self.state.giving_up {
                g.stopping.remove(tp);
            }
            if let Some(p) = self.state.parts.get_mut(tp) {
                match p.phase {
                    Phase::Failed => {
                        self.state.parts.remove(tp);
                    }
                    Phase::Closing => {}
                    _ => {
                        p.phase = Phase::Closing;
                        p.control.send_replace(Control::Close(StopReason::Lost));
                    }
                }
            }
        }
    }

    /// Gives `partitions` up gracefully: their consumers finish, their work is
    /// committed, then they close and the revocation (if any) is released.
    fn give_up(
        &mut self,
        now: Instant,
        partitions: Vec<TopicPartition>,
        reason: StopReason,
        revocation: Option<Revocation>,
    ) {
        self.offsets.remove(&partitions);
        let mut stopping = BTreeSet::new();
        for tp in &partitions {
            self.state.owned.remove(tp);
            self.state.deferred.remove(tp);
            if let Some(p) = self.state.parts.get_mut(tp) {
                if p.phase == Phase::Running {
                    p.phase = Phase::Stopping;
                    p.control.send_replace(Control::Stop);
                    stopping.insert(tp.clone());
                } else if p.phase == Phase::Failed {
                    self.state.parts.remove(tp);
                }
            }
        }
        tracing::info!(group = %self.group, n = partitions.len(), ?reason, "giving partitions up");
        self.state.giving_up.push(GivingUp {
            revocation,
            reason,
            partitions,
            stopping,
            flush: None,
            flushed: false,
            closing: BTreeSet::new(),
            deadline: now + self.rebalance_timeout,
        });
    }

    /// Moves each giving-up along; `true` when something moved.
    fn advance_giving_up(&mut self, now: Instant) -> bool {
        let mut progress = false;
        let mut i = 0;
        while i < self.state.giving_up.len() {
            let g = &mut self.state.giving_up[i];
            if now >= g.deadline && !(g.stopping.is_empty() && g.flushed && g.closing.is_empty()) {
                tracing::warn!(
                    group = %self.group,
                    stopping = g.stopping.len(),
                    closing = g.closing.len(),
                    "partitions not given up within the rebalance timeout; they are lost"
                );
                let g = self.state.giving_up.remove(i);
                let left: Vec<TopicPartition> = g.stopping.iter().chain(&g.closing).cloned().collect();
                self.lose(now, &left);
                for tp in g.partitions.iter().filter(|tp| !left.contains(tp)) {
                    if let Some(p) = self.state.parts.get_mut(tp) {
                        p.phase = Phase::Closing;
                        p.control.send_replace(Control::Close(StopReason::Lost));
                    }
                }
                progress = true;
                continue;
            }
            if g.stopping.is_empty() && g.flush.is_none() && !g.flushed {
                let tracked = self.tracker.partitions();
                let flush: Vec<TopicPartition> =
                    g.partitions.iter().filter(|tp| tracked.contains(tp)).cloned().collect();
                if flush.is_empty() {
                    g.flushed = true;
                } else {
                    g.flush = Some(self.tracker.flush(now, flush));
                }
                progress = true;
            }
            let g = &mut self.state.giving_up[i];
            if g.flushed && g.stopping.is_empty() {
                // Close the consumers that stopped; done once none is left.
                let mut closing = BTreeSet::new();
                for tp in &g.partitions {
                    if let Some(p) = self.state.parts.get_mut(tp) {
                        if p.phase == Phase::Stopped {
                            p.phase = Phase::Closing;
                            p.control.send_replace(Control::Close(g.reason.clone()));
                            closing.insert(tp.clone());
                        } else if p.phase == Phase::Closing {
                            closing.insert(tp.clone());
                        }
                    }
                }
                if closing.is_empty() {
                    let g = self.state.giving_up.remove(i);
                    tracing::info!(group = %self.group, n = g.partitions.len(), "partitions given up");
                    // Releasing the revocation hands the partitions back to the group.
                    drop(g.revocation);
                    progress = true;
                    continue;
                }
                if closing != g.closing {
                    g.closing = closing;
                    progress = true;
                }
            }
            i += 1;
        }
        progress
    }

    fn on_report(&mut self, now: Instant, report: Report) {
        match report {
            Report::Done { position, metadata } => {
                let _ = self.tracker.done(now, &position, metadata);
            }
            Report::Stopped { partition, task } => {
                if let Some(p) = self.state.parts.get_mut(&partition).filter(|p| p.task == task) {
                    if p.phase == Phase::Stopping {
                        p.phase = Phase::Stopped;
                    }
                }
                for g in &mut self.state.giving_up {
                    g.stopping.remove(&partition);
                }
            }
            Report::Closed { partition, task } => self.closed(now, partition, task),
            Report::Failed { partition, task, error } => {
                let _ = self.failures.send(PartitionFailure { partition: partition.clone(), error: error.clone() });
                let Some(p) = self.state.parts.get_mut(&partition).filter(|p| p.task == task) else { return };
                let failures = p.failures + 1;
                let restart = error.restarts() && p.phase == Phase::Running && self.state.owned.contains(&partition);
                p.phase = Phase::Failed;
                for g in &mut self.state.giving_up {
                    g.stopping.remove(&partition);
                    g.closing.remove(&partition);
                }
                if restart {
                    self.restart(now, partition, failures);
                }
            }
        }
    }

    /// A consumer ended after `Close`: a partition assigned again meanwhile starts.
    fn closed(&mut self, now: Instant, partition: TopicPartition, task: u64) {
        if self.state.parts.get(&partition).is_some_and(|p| p.task == task) {
            self.state.parts.remove(&partition);
        }
        for g in &mut self.state.giving_up {
            g.closing.remove(&partition);
        }
        if self.state.deferred.remove(&partition) && self.state.owned.contains(&partition) {
            self.fetch_starts(now, vec![partition]);
        }
    }

    /// Starts a failed partition again after its backoff, after the last record it
    /// finished (committed or not yet).
    fn restart(&mut self, now: Instant, partition: TopicPartition, failures: u32) {
        let (first, max) = self.restart_backoff;
        let factor = 1u32.checked_shl(failures.saturating_sub(1).min(16)).unwrap_or(u32::MAX);
        let delay = first.saturating_mul(factor).min(max);
        let from = self.tracker.pending(&partition).or_else(|| self.tracker.committed(&partition));
        tracing::info!(%partition, ?from, ?delay, failures, "the partition starts again");
        self.state.parts.remove(&partition);
        match from {
            Some(offset) => self.spawn(partition, StartOffset::Offset(offset), delay, failures),
            None => {
                // Nothing finished nor committed: where it starts is looked up again.
                self.fetch_starts(now, vec![partition]);
            }
        }
    }

    fn on_command(&mut self, now: Instant, command: Option<Command>) {
        let reply = match command {
            Some(Command::Abort) => {
                tracing::warn!(group = %self.group, "aborted: the member ends without committing or leaving");
                if let Some(member) = self.member.take() {
                    member.abort();
                }
                // Dropping the controls ends the consumers; nothing they report is read.
                self.state.parts.clear();
                self.state.giving_up.clear();
                self.state.io.abort_all();
                self.state.aborted = true;
                return;
            }
            Some(Command::Shutdown(reply)) => Some(reply),
            None => {
                self.state.commands_open = false;
                None
            }
        };
        if let Some(waiting) = self.state.shutdown.as_mut() {
            waiting.extend(reply);
            return;
        }
        tracing::info!(group = %self.group, "shutting down: finishing, committing, leaving");
        self.state.shutdown = Some(reply.into_iter().collect());
        let mut all: Vec<TopicPartition> = self.state.parts.keys().cloned().collect();
        all.extend(self.offsets.waiting());
        all.sort();
        all.dedup();
        self.give_up(now, all, StopReason::Shutdown, None);
    }
}

/// The next event of the member, or `None` once it has none.
async fn next_member_event(member: Option<&mut GroupMember>) -> Option<MemberEvent> {
    match member {
        Some(m) => m.next_event().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
        None => std::future::pending().await,
    }
}
