//! The task of one consumer group member: it takes the member's changes of assignment
//! ([`MemberEvent`]) and carries out three state machines: the partition consumers'
//! [`Lifecycle`], and the offsets' [`CommitTracker`] and [`OffsetFetcher`] against the
//! group coordinator. It only moves bytes and timers: which consumer starts, stops or
//! closes, what is committed and when, and where a partition starts are decided by
//! those state machines.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use klife_connection::{Cluster, CoordinatorType, Error as ConnectionError, Lane};
use klife_fetcher::{FetchError, Fetcher, IsolationLevel, OffsetSpec, StartOffset};
use klife_producer::Producer;
use klife_protocol::messages::{OffsetCommitResponse, OffsetFetchResponse};
use klife_protocol::types::TopicPartition;
use klife_protocol::{ApiKey, ErrorCode};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tracing::field::Empty;
use tracing::{Instrument, Span};

use super::config::{Mode, TopicSettings};
use super::handler::{Handler, PartitionContext, StopReason};
use super::lifecycle::{GivingUpId, Lifecycle, LifecycleAction};
use super::manual::Slot;
use super::partition::{Control, PartitionConsumer, Report};
use super::{GroupStopped, PartitionFailure};
use crate::driver::{Ended, GroupMember, MemberEvent, Revocation};
use crate::membership::consumer::Outcome;
use crate::offsets::{
    CommitEvent, CommitId, CommitTracker, FetchEvent, FetchId, FlushId, GroupProtocol, OffsetFetcher, ResetPolicy,
    StartPosition,
};
use crate::telemetry::{self, COMMIT_SPAN, Lag, PartitionMetrics, RECONCILE_SPAN, REVOKE_SPAN};

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
    pub(crate) protocol: Mutex<Option<GroupProtocol>>,
    /// The manual partitions' slots, for [`ConsumerGroup::lease`](super::ConsumerGroup::lease).
    pub(crate) slots: Mutex<HashMap<TopicPartition, Arc<Slot>>>,
    /// Wakes the group's stream: the slots changed, or one of them has news.
    pub(crate) activity: Arc<Notify>,
}

/// The group coordinator as the offsets requests use it.
#[derive(Clone)]
struct Coordinator {
    /// The lane of the OffsetFetch requests, and of the first committer's first commit
    /// connection.
    lane: Arc<Lane>,
    /// The commits' lanes: committer `c`'s connection `s` is
    /// `commit_lanes[c * commits_in_flight + s]`.
    commit_lanes: Arc<Vec<Arc<Lane>>>,
    commit_version: i16,
    fetch_version: i16,
}

/// What a spawned request came back with.
enum Io {
    Coordinator(Result<Coordinator, ConnectionError>),
    /// An OffsetCommit's answer, with when it was sent and its span.
    Commit(CommitId, Instant, Span, Result<OffsetCommitResponse, ConnectionError>),
    Fetch(FetchId, Result<OffsetFetchResponse, ConnectionError>),
}

/// A partition about to start at its reset position (no committed offset), whose
/// position is looked up together with the others starting at the same moment: one
/// ListOffsets for all of them rather than one per partition, and their first fetches
/// go out together.
struct StartLookup {
    partition: TopicPartition,
    spec: OffsetSpec,
    isolation: IsolationLevel,
    fetcher: Fetcher,
    reply: oneshot::Sender<Result<i64, FetchError>>,
}

/// A running partition consumer's channels.
struct Consumer {
    task: u64,
    control: watch::Sender<Control>,
    committed: watch::Sender<Option<i64>>,
    lag: Arc<Lag>,
}

pub(crate) struct GroupTask<H> {
    pub(crate) group: Arc<str>,
    pub(crate) lifecycle: Lifecycle,
    pub(crate) settings: HashMap<String, Arc<TopicSettings>>,
    pub(crate) fetchers: HashMap<String, Fetcher>,
    /// The settings and fetcher of topics the topic regex matched.
    pub(crate) matched: Option<(Arc<TopicSettings>, Fetcher)>,
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
    /// Dropped when the task ends, however it ends: the group's stream learns it.
    pub(crate) _alive: watch::Sender<()>,
}

/// The task's own state, apart from its settings.
#[derive(Default)]
pub(crate) struct TaskState {
    coordinator: Option<Coordinator>,
    lookup: bool,
    io: JoinSet<Io>,
    consumers: HashMap<TopicPartition, Consumer>,
    revocations: HashMap<GivingUpId, Revocation>,
    /// The `klife.group.revoke` span of each giving-up, until its release.
    giving_up_spans: HashMap<GivingUpId, Span>,
    /// The `klife.group.reconcile` span of each assignment, with its partitions not
    /// started yet.
    reconciling: Vec<(Span, BTreeSet<TopicPartition>)>,
    flushes: HashMap<FlushId, GivingUpId>,
    /// Reset positions to look up at the end of this pump.
    start_lookups: Vec<StartLookup>,
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
            if self.state.shutdown.is_some() && self.lifecycle.is_idle() {
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
                () = sleep_until(wake) => self.lifecycle.handle_timeout(now()),
            }
        }
    }

    /// How the task ends, once it has nothing left to run.
    fn finished(&self) -> Option<Result<(), GroupStopped>> {
        let idle = self.lifecycle.is_idle();
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
        [self.tracker.poll_timeout(), self.offsets.poll_timeout(), self.lifecycle.poll_timeout()]
            .into_iter()
            .flatten()
            .min()
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
                self.on_fetch_event(event);
            }
            if let Some(c) = self.state.coordinator.clone() {
                let per_committer = self.tracker.config().commits_in_flight;
                while let Some(commit) = self.tracker.poll_commit(now, c.commit_version) {
                    progress = true;
                    let lane = c.commit_lanes[commit.committer * per_committer + commit.slot].clone();
                    let (id, version) = (commit.id, c.commit_version);
                    let span = tracing::debug_span!(
                        COMMIT_SPAN,
                        group = %self.group,
                        member_id = %self.member_id(),
                        partitions = commit.request.topics.iter().map(|t| t.partitions.len()).sum::<usize>(),
                        outcome = Empty,
                        error = Empty,
                    );
                    let sending = span.clone();
                    self.state.io.spawn(
                        async move {
                            let sent = now;
                            let result = match lane.connection().await {
                                Ok(conn) => {
                                    conn.send_version_with_timeout(&commit.request, version, OFFSETS_TIMEOUT).await
                                }
                                Err(e) => Err(e),
                            };
                            Io::Commit(id, sent, span, result)
                        }
                        .instrument(sending),
                    );
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
            while let Some(action) = self.lifecycle.poll_action() {
                progress = true;
                self.carry_out(now, action);
            }
            if !progress {
                break;
            }
        }
        self.look_up_starts();
        self.publish();
    }

    /// Looks the reset positions of the partitions started in this pump up, one
    /// ListOffsets per topic, isolation level and policy; each consumer waits for its
    /// answer (and looks its position up itself when the answer is an error).
    fn look_up_starts(&mut self) {
        let mut lookups = std::mem::take(&mut self.state.start_lookups);
        while let Some(first) = lookups.first() {
            let (topic, spec, isolation) = (first.partition.topic.clone(), first.spec, first.isolation);
            let (same, rest): (Vec<StartLookup>, Vec<StartLookup>) = lookups
                .into_iter()
                .partition(|l| l.partition.topic == topic && l.spec == spec && l.isolation == isolation);
            lookups = rest;
            let fetcher = same[0].fetcher.clone();
            tracing::debug!(group = %self.group, %topic, ?spec, partitions = same.len(), "looking up where partitions start");
            tokio::spawn(async move {
                let queries: Vec<(TopicPartition, OffsetSpec)> =
                    same.iter().map(|l| (l.partition.clone(), l.spec)).collect();
                let found = fetcher.list_offsets(&queries, isolation).await;
                let mut found = found.into_iter();
                for lookup in same {
                    let answer = found.next().unwrap_or(Err(FetchError::InvalidArgument("no answer".into())));
                    // A consumer that ended meanwhile no longer waits.
                    let _ = lookup.reply.send(answer.map(|listed| listed.offset));
                }
            });
        }
    }

    /// The member id the group commits with now.
    fn member_id(&self) -> String {
        self.shared.member_id.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Partitions of assignments being applied that will not start (started, given up
    /// again, failed): the spans of assignments with none left end.
    fn reconciled(&mut self, partitions: &[TopicPartition]) {
        if self.state.reconciling.is_empty() {
            return;
        }
        for (_, waiting) in &mut self.state.reconciling {
            for tp in partitions {
                waiting.remove(tp);
            }
        }
        self.state.reconciling.retain(|(_, waiting)| !waiting.is_empty());
    }

    /// A `klife.group.revoke` span for `partitions` given up for `reason`.
    fn revoke_span(&self, partitions: usize, reason: &'static str) -> Span {
        tracing::info_span!(REVOKE_SPAN, group = %self.group, member_id = %self.member_id(), partitions, reason)
    }

    fn publish(&self) {
        let running = self.lifecycle.running();
        telemetry::record_owned(&self.group, running.len());
        let mut slots = self.shared.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if !slots.is_empty() {
            // A manual partition no longer owned (and not restarting) has no lease to give.
            let all = self.lifecycle.all();
            slots.retain(|tp, _| all.contains(tp));
            self.shared.activity.notify_one();
        }
        drop(slots);
        *self.shared.running.lock().unwrap_or_else(PoisonError::into_inner) = running;
    }

    /// Forgets the manual slot of consumer `task` of `partition`.
    fn forget_slot(&self, partition: &TopicPartition, task: u64) {
        let mut slots = self.shared.slots.lock().unwrap_or_else(PoisonError::into_inner);
        if slots.get(partition).is_some_and(|s| s.task == task) {
            slots.remove(partition);
        }
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
        let config = self.tracker.config();
        let commit_lanes = config.committers_count * config.commits_in_flight;
        self.state.io.spawn(async move {
            loop {
                let found = async {
                    let c = cluster.coordinator(CoordinatorType::Group, &group).await?;
                    let lane = Arc::new(cluster.open_lane(c.node_id));
                    let conn = lane.connection().await?;
                    let commit_version = conn.version_for(ApiKey::OffsetCommit, None)?;
                    let fetch_version = conn.version_for(ApiKey::OffsetFetch, None)?;
                    // Lanes connect when first used: a connection only for commits
                    // that overlap.
                    let commit_lanes = std::iter::once(lane.clone())
                        .chain((1..commit_lanes).map(|_| Arc::new(cluster.open_lane(c.node_id))))
                        .collect();
                    Ok::<_, ConnectionError>(Coordinator {
                        lane,
                        commit_lanes: Arc::new(commit_lanes),
                        commit_version,
                        fetch_version,
                    })
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
            Io::Commit(id, sent, span, Ok(response)) => {
                let refused = response
                    .topics
                    .iter()
                    .flat_map(|t| &t.partitions)
                    .find(|p| p.error_code != 0)
                    .map(|p| p.error_code);
                telemetry::record_commit(&self.group, refused.is_none(), Some(now.saturating_duration_since(sent)));
                match refused {
                    None => span.record("outcome", "ok"),
                    Some(code) => span.record("outcome", "error").record("error", ErrorCode::from_code(code).name()),
                };
                self.tracker.on_commit_response(now, id, &response);
            }
            Io::Commit(id, _, span, Err(e)) => {
                tracing::debug!(error = %e, "offsets: commit failed");
                span.record("outcome", "error").record("error", tracing::field::display(&e));
                telemetry::record_commit(&self.group, false, None);
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
                if let Some(c) = self.state.consumers.get(&tp) {
                    c.committed.send_replace(Some(offset.offset));
                    c.lag.committed(offset.offset);
                }
            }
            CommitEvent::Failed { error, uncommitted } => {
                tracing::warn!(error = %error, ?uncommitted, "offsets: a commit failed for good; the work is redelivered");
                let partition = error.partition().clone();
                if uncommitted.is_some() {
                    self.lifecycle.commit_failed(&partition);
                }
                let _ = self.failures.send(PartitionFailure { partition, error: Arc::new(error.into()) });
            }
            CommitEvent::FindCoordinator => self.find_coordinator(),
            CommitEvent::Flushed { flush, uncommitted, .. } => {
                if !uncommitted.is_empty() {
                    tracing::warn!(?uncommitted, "offsets: a flush could not commit everything; it is redelivered");
                }
                if let Some(giving_up) = self.state.flushes.remove(&flush) {
                    let lost: Vec<TopicPartition> = uncommitted.into_iter().map(|u| u.partition).collect();
                    self.lifecycle.flushed(giving_up, &lost);
                }
            }
        }
    }

    fn on_fetch_event(&mut self, event: FetchEvent) {
        match event {
            FetchEvent::Start { partition, start } => {
                let start = match start {
                    StartPosition::Committed { offset, .. } => StartOffset::Offset(offset.offset),
                    StartPosition::Earliest => StartOffset::Earliest,
                    StartPosition::Latest => StartOffset::Latest,
                };
                self.lifecycle.start_known(partition, start);
            }
            FetchEvent::Failed(error) => {
                let partition = error.partition().clone();
                self.reconciled(std::slice::from_ref(&partition));
                tracing::error!(error = %error, "offsets: a partition's start could not be found; it is not consumed");
                let _ = self.failures.send(PartitionFailure { partition, error: Arc::new(error.into()) });
            }
            FetchEvent::FindCoordinator => self.find_coordinator(),
        }
    }

    /// Carries out one of the lifecycle's actions.
    fn carry_out(&mut self, now: Instant, action: LifecycleAction) {
        match action {
            LifecycleAction::LookUpStarts(partitions) => {
                let with_reset: Vec<(TopicPartition, ResetPolicy)> = partitions
                    .into_iter()
                    .map(|tp| {
                        let reset = self.topic(&tp.topic).map(|(s, _)| s.offset_reset).unwrap_or_default();
                        (tp, reset)
                    })
                    .collect();
                self.offsets.add(now, with_reset);
            }
            LifecycleAction::ForgetStarts(partitions) => self.offsets.remove(&partitions),
            LifecycleAction::Start { partition, task, start, delay } => {
                self.reconciled(std::slice::from_ref(&partition));
                if !self.tracker.partitions().contains(&partition) {
                    let committed = match start {
                        StartOffset::Offset(offset) => Some(offset),
                        _ => None,
                    };
                    self.tracker.assign(now, partition.clone(), committed);
                }
                self.spawn(partition, task, start, delay);
            }
            LifecycleAction::Stop { partition, task } => self.control(&partition, task, Control::Stop),
            LifecycleAction::Close { partition, task, reason } => {
                self.control(&partition, task, Control::Close(reason))
            }
            LifecycleAction::Flush { giving_up, partitions } => {
                let tracked = self.tracker.partitions();
                let partitions: Vec<TopicPartition> =
                    partitions.into_iter().filter(|tp| tracked.contains(tp)).collect();
                if partitions.is_empty() {
                    self.lifecycle.flushed(giving_up, &[]);
                } else {
                    let flush = self.tracker.flush(now, partitions);
                    self.state.flushes.insert(flush, giving_up);
                }
            }
            LifecycleAction::Lose(partitions) => {
                let uncommitted = self.tracker.lose(now, partitions);
                if !uncommitted.is_empty() {
                    tracing::info!(?uncommitted, "partitions lost with work not committed: it is delivered again");
                }
            }
            LifecycleAction::Release(giving_up) => {
                // Dropping the revocation hands its partitions back to the group.
                if self.state.revocations.remove(&giving_up).is_some() {
                    tracing::info!(group = %self.group, "revoked partitions released");
                }
                // The giving-up's span ends here.
                self.state.giving_up_spans.remove(&giving_up);
            }
        }
    }

    /// A topic's settings and fetcher: its own if the group lists it, else those of the
    /// topic regex's matches.
    fn topic(&self, topic: &str) -> Option<(Arc<TopicSettings>, Fetcher)> {
        match (self.settings.get(topic), self.fetchers.get(topic)) {
            (Some(s), Some(f)) => Some((s.clone(), f.clone())),
            _ => self.matched.clone(),
        }
    }

    fn control(&mut self, partition: &TopicPartition, task: u64, control: Control) {
        if let Some(c) = self.state.consumers.get(partition).filter(|c| c.task == task) {
            c.control.send_replace(control);
        }
    }

    /// Starts consumer `task` for `partition` at `start`, after `delay`.
    fn spawn(&mut self, partition: TopicPartition, task: u64, start: StartOffset, delay: Duration) {
        let Some((settings, fetcher)) = self.topic(&partition.topic) else {
            tracing::warn!(%partition, "assigned a partition of a topic the group does not list; it is not consumed");
            self.lifecycle.failed(&partition, task, false, None);
            return;
        };
        let (control_tx, control) = watch::channel(Control::Run);
        let (committed_tx, committed) = watch::channel(self.tracker.committed(&partition));
        let metrics = PartitionMetrics::new(&self.group, &partition.topic, partition.partition);
        if let Some(offset) = self.tracker.committed(&partition) {
            metrics.lag().committed(offset);
        }
        let lag = metrics.lag().clone();
        let looked_up = match start.lookup() {
            Some(spec) if delay.is_zero() => {
                let (reply, answer) = oneshot::channel();
                self.state.start_lookups.push(StartLookup {
                    partition: partition.clone(),
                    spec,
                    isolation: settings.isolation_level,
                    fetcher: fetcher.clone(),
                    reply,
                });
                Some(answer)
            }
            _ => None,
        };
        let slot = (settings.mode == Mode::Manual).then(|| {
            let slot = Slot::new(
                partition.clone(),
                task,
                self.reports_tx.clone(),
                committed.clone(),
                self.shared.activity.clone(),
            );
            self.shared.slots.lock().unwrap_or_else(PoisonError::into_inner).insert(partition.clone(), slot.clone());
            self.shared.activity.notify_one();
            slot
        });
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
            looked_up,
            delay,
            committed,
            control,
            reports: self.reports_tx.clone(),
            slot,
            metrics,
        };
        tokio::spawn(consumer.run());
        self.state.consumers.insert(partition, Consumer { task, control: control_tx, committed: committed_tx, lag });
    }

    /// A member that fell back to the classic protocol commits with its generation:
    /// the offsets state machines start again for it (nothing is tracked yet then).
    fn follow_protocol(&mut self, now: Instant) {
        let Some(protocol) = self.member.as_ref().map(GroupMember::protocol) else { return };
        *self.shared.protocol.lock().unwrap_or_else(PoisonError::into_inner) = Some(protocol);
        if self.tracker.config().protocol == protocol {
            return;
        }
        tracing::info!(group = %self.group, ?protocol, "offsets follow the member's protocol");
        let mut config = self.tracker.config().clone();
        config.protocol = protocol;
        self.tracker = CommitTracker::new(config.clone());
        self.offsets = OffsetFetcher::new(config);
        if self.state.coordinator.is_some() {
            self.tracker.coordinator_found(now);
            self.offsets.coordinator_found(now);
        }
    }

    fn on_member_event(&mut self, now: Instant, event: Option<MemberEvent>) {
        match event {
            Some(MemberEvent::Generation { member_id, epoch }) => {
                self.follow_protocol(now);
                *self.shared.member_id.lock().unwrap_or_else(PoisonError::into_inner) = member_id.clone();
                *self.shared.epoch.lock().unwrap_or_else(PoisonError::into_inner) = epoch;
                self.tracker.set_member(now, member_id.clone(), epoch);
                self.offsets.set_member(now, member_id, epoch);
            }
            Some(MemberEvent::Assigned { partitions }) => {
                telemetry::record_assignment_change(&self.group, partitions.len(), 0, 0);
                let span = tracing::info_span!(
                    RECONCILE_SPAN,
                    group = %self.group,
                    member_id = %self.member_id(),
                    partitions = partitions.len()
                );
                let _entered = span.enter();
                if self.state.shutdown.is_some() {
                    // Shutting down: the member leaves once nothing runs, so partitions
                    // given to it now (a rejoin after a lost session, a rebalance) are
                    // given up at once instead of started.
                    self.lifecycle.assigned(partitions.clone());
                    self.lifecycle.give_up(now, partitions, StopReason::Shutdown);
                    return;
                }
                if !span.is_disabled() && !partitions.is_empty() {
                    self.state.reconciling.push((span.clone(), partitions.iter().cloned().collect()));
                }
                self.lifecycle.assigned(partitions);
            }
            Some(MemberEvent::Revoked { revocation }) => {
                let partitions = revocation.partitions().to_vec();
                self.reconciled(&partitions);
                telemetry::record_assignment_change(&self.group, 0, partitions.len(), 0);
                let span = self.revoke_span(partitions.len(), "revoked");
                let _entered = span.enter();
                tracing::info!(group = %self.group, n = partitions.len(), "partitions revoked: finishing and committing them");
                let id = self.lifecycle.give_up(now, partitions, StopReason::Revoked);
                self.state.revocations.insert(id, revocation);
                if !span.is_disabled() {
                    self.state.giving_up_spans.insert(id, span.clone());
                }
            }
            Some(MemberEvent::Lost { partitions, reason }) => {
                self.reconciled(&partitions);
                telemetry::record_assignment_change(&self.group, 0, 0, partitions.len());
                let span = self.revoke_span(partitions.len(), "lost");
                let _entered = span.enter();
                tracing::warn!(group = %self.group, ?reason, n = partitions.len(), "partitions lost");
                self.lifecycle.lose(&partitions);
            }
            Some(MemberEvent::Ended(ended)) => {
                tracing::info!(group = %self.group, ?ended, "the member ended");
                self.lifecycle.lose_all();
                self.state.member_ended = Some(ended);
                self.state.reconciling.clear();
            }
            None => {
                if self.state.member_ended.is_none() {
                    self.state.member_ended = Some(Ended::ClusterClosed);
                }
            }
        }
    }

    fn on_report(&mut self, now: Instant, report: Report) {
        match report {
            Report::Done { position, metadata } => {
                let _ = self.tracker.done(now, &position, metadata);
            }
            Report::Stopped { partition, task } => self.lifecycle.stopped(&partition, task),
            Report::Closed { partition, task } => {
                self.forget_slot(&partition, task);
                if self.state.consumers.get(&partition).is_some_and(|c| c.task == task) {
                    self.state.consumers.remove(&partition);
                }
                self.lifecycle.closed(&partition, task);
            }
            Report::Failed { partition, task, error } => {
                if !error.restarts() {
                    self.forget_slot(&partition, task);
                }
                let _ = self.failures.send(PartitionFailure { partition: partition.clone(), error: error.clone() });
                if self.state.consumers.get(&partition).is_some_and(|c| c.task == task) {
                    self.state.consumers.remove(&partition);
                }
                // It goes on after the last record it finished, committed or not yet.
                let resume = self.tracker.pending(&partition).or_else(|| self.tracker.committed(&partition));
                self.lifecycle.failed(&partition, task, error.restarts(), resume);
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
                self.state.consumers.clear();
                self.state.revocations.clear();
                self.state.giving_up_spans.clear();
                self.state.reconciling.clear();
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
        self.state.reconciling.clear();
        let all = self.lifecycle.all();
        let span = self.revoke_span(all.len(), "shutdown");
        let _entered = span.enter();
        let id = self.lifecycle.give_up(now, all, StopReason::Shutdown);
        if !span.is_disabled() {
            self.state.giving_up_spans.insert(id, span.clone());
        }
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
