//! The task that drives a KIP-848 member ([`ConsumerMember`]) against a cluster: it
//! only moves bytes and timers, every decision stays in the member.
//!
//! [`GroupMember::start`] spawns one tokio task per member. The task
//!
//! - looks the group coordinator up through the [`Cluster`] (again after the member
//!   asks for it, forgetting the cached one) and opens an ordered [`Lane`] to it, so
//!   that the member's heartbeats reach the coordinator in the order sent;
//! - sends each heartbeat the member gives at ConsumerGroupHeartbeat v1
//!   ([`HEARTBEAT_VERSION`]) with a timeout of its own
//!   ([`DriverConfig::heartbeat_timeout`]), and reports its answer or failure with the
//!   time. A coordinator that does not offer v1 (a broker without KIP-848, or one
//!   with v0 only, whose member ids come from the coordinator) is reported to the
//!   member as UNSUPPORTED_VERSION, which it turns into
//!   [`Outcome::FallBackToClassic`] on a first join;
//! - resolves assigned topic ids to names through the cluster's metadata (the cached
//!   snapshot, then a refresh, then the metadata of every topic);
//! - sleeps until the member's [`poll_timeout`](ConsumerMember::poll_timeout);
//! - and turns the member's changes of assignment into [`MemberEvent`]s:
//!   [`Assigned`](MemberEvent::Assigned), [`Revoked`](MemberEvent::Revoked) (with a
//!   [`Revocation`] the user releases when done with the partitions),
//!   [`Lost`](MemberEvent::Lost) and, last, [`Ended`](MemberEvent::Ended).
//!
//! Fetching and committing are not driven yet: a revocation is released as soon as
//! the user releases its [`Revocation`] (or drops it), or at once with
//! [`DriverConfig::auto_release`]; lost partitions are released at once (nothing may
//! be committed for them).
//!
//! The member leaves with [`GroupMember::leave`] (its partitions revoked, then the
//! leave heartbeat). Dropping the [`GroupMember`] leaves as well as it can, in the
//! background: revocations are released at once and the task ends after the leave
//! heartbeat, or after the rebalance timeout plus the heartbeat timeout at the latest.
//! [`GroupMember::abort`] ends the task at once without leaving, as a crash would: the
//! coordinator gives the partitions to other members after its session timeout.
//!
//! Tracing: the task runs in a span `klife.group.member` with the group and member
//! id; the join, each heartbeat sent and answered (debug), and each step of a
//! reconciliation (assigned, revoked, released, lost) are events in it.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use klife_connection::{Cluster, CoordinatorType, Error as ConnectionError, Lane, Metadata};
use klife_protocol::messages::ConsumerGroupHeartbeatResponse;
use klife_protocol::types::TopicPartition;
use klife_protocol::{ApiKey, ErrorCode, Uuid};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::error::ConfigError;
use crate::membership::consumer::{
    Action, ConsumerConfig, ConsumerMember, HEARTBEAT_VERSION, Heartbeat, HeartbeatId, LostReason, Outcome, ReleaseId,
    RevokeReason, coordinator_supports,
};

/// How long a heartbeat waits for its answer when nothing else is set.
pub const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(10);

/// The settings of the task that drives a member (the member's own are in
/// [`ConsumerConfig`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DriverConfig {
    /// Release revoked partitions at once, without waiting for the user's
    /// [`Revocation::release`] (`false` by default).
    pub auto_release: bool,
    /// How long a heartbeat waits for its answer before it counts as failed (10 s by
    /// default). The connection it went on is closed then, as for any request timeout.
    pub heartbeat_timeout: Duration,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig { auto_release: false, heartbeat_timeout: DEFAULT_HEARTBEAT_TIMEOUT }
    }
}

impl DriverConfig {
    /// Sets [`auto_release`](Self::auto_release).
    #[must_use]
    pub fn with_auto_release(mut self, auto_release: bool) -> Self {
        self.auto_release = auto_release;
        self
    }

    /// Sets [`heartbeat_timeout`](Self::heartbeat_timeout).
    #[must_use]
    pub fn with_heartbeat_timeout(mut self, timeout: Duration) -> Self {
        self.heartbeat_timeout = timeout;
        self
    }
}

/// How a driven member ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    /// The member ended with this outcome (it left, must fall back to the classic
    /// protocol, or stopped on an error).
    Member(Outcome),
    /// The cluster handle was closed: nothing can be sent any more. The member did not
    /// leave; the coordinator removes it after its session timeout.
    ClusterClosed,
}

/// A change of a member's assignment, in the order the member made them.
#[derive(Debug)]
pub enum MemberEvent {
    /// The member owns these partitions from now on.
    Assigned {
        /// The partitions.
        partitions: Vec<TopicPartition>,
    },
    /// These partitions are taken from the member (fetching them has stopped): finish
    /// with them, then release them ([`Revocation::release`], or drop the
    /// revocation). The coordinator gives them to another member only then.
    Revoked {
        /// The partitions and their release.
        revocation: Revocation,
    },
    /// These partitions were lost: another member may own them already. Stop using
    /// them and commit nothing for them (they are released at once).
    Lost {
        /// The partitions.
        partitions: Vec<TopicPartition>,
        /// Why.
        reason: LostReason,
    },
    /// The member epoch (KIP-848) or the generation (classic) changed, with the member
    /// id: commits from now on carry them. An epoch of 0 (KIP-848) or -1 (classic)
    /// means out of the group: no commit can succeed until it joins again.
    Generation {
        /// The member id.
        member_id: String,
        /// The member epoch or the generation.
        epoch: i32,
    },
    /// The member ended; no event follows.
    Ended(Ended),
}

/// Revoked partitions, held until the user is done with them: releasing (or
/// dropping) it gives them back to the group.
#[derive(Debug)]
pub struct Revocation {
    partitions: Vec<TopicPartition>,
    reason: RevokeReason,
    release: Option<(ReleaseId, mpsc::UnboundedSender<ReleaseId>)>,
}

impl Revocation {
    /// Revoked partitions that `release` gives back through `tx` (`None`: released
    /// already).
    pub(crate) fn new(
        partitions: Vec<TopicPartition>,
        reason: RevokeReason,
        release: Option<(ReleaseId, mpsc::UnboundedSender<ReleaseId>)>,
    ) -> Revocation {
        Revocation { partitions, reason, release }
    }

    /// The partitions revoked.
    pub fn partitions(&self) -> &[TopicPartition] {
        &self.partitions
    }

    /// Why.
    pub fn reason(&self) -> RevokeReason {
        self.reason
    }

    /// Gives the partitions back to the group (dropping the revocation does the same).
    pub fn release(mut self) {
        self.send();
    }

    fn send(&mut self) {
        if let Some((id, tx)) = self.release.take() {
            // A member that ended no longer waits for it.
            let _ = tx.send(id);
        }
    }
}

impl Drop for Revocation {
    fn drop(&mut self) {
        self.send();
    }
}

/// What the handle asks of the task.
enum Command {
    Leave,
}

/// What the handle and the task share.
#[derive(Debug, Default)]
struct Shared {
    owned: Mutex<Vec<TopicPartition>>,
    epoch: Mutex<i32>,
}

/// A KIP-848 member of a group driven by a task of its own. See the [module
/// documentation](self).
#[derive(Debug)]
pub struct GroupMember {
    group_id: String,
    member_id: String,
    shared: Arc<Shared>,
    commands: Option<mpsc::UnboundedSender<Command>>,
    events: mpsc::UnboundedReceiver<MemberEvent>,
    task: Option<JoinHandle<Ended>>,
}

impl GroupMember {
    /// Starts a member of `config.group_id` on `cluster`, in a task of its own (on the
    /// current tokio runtime: call it from within one).
    pub fn start(cluster: Cluster, config: ConsumerConfig, driver: DriverConfig) -> Result<GroupMember, ConfigError> {
        let member = ConsumerMember::new(config, clock())?;
        let group_id = member.config().group_id.clone();
        let member_id = member.config().member_id.clone();
        let shared = Arc::new(Shared::default());
        let (commands_tx, commands) = mpsc::unbounded_channel();
        let (events_tx, events) = mpsc::unbounded_channel();
        let (releases_tx, releases) = mpsc::unbounded_channel();
        let span = tracing::info_span!("klife.group.member", group = %group_id, member_id = %member_id);
        let task = Task {
            cluster,
            member,
            driver,
            shared: shared.clone(),
            commands,
            commands_open: true,
            events: events_tx,
            releases,
            releases_tx,
            lane: None,
            lookup: None,
            heartbeat: None,
            metadata: None,
            auto_release: false,
            deadline: None,
        };
        let task = tokio::spawn(task.run().instrument(span));
        Ok(GroupMember { group_id, member_id, shared, commands: Some(commands_tx), events, task: Some(task) })
    }

    /// The group.
    pub fn group_id(&self) -> &str {
        &self.group_id
    }

    /// The member id.
    pub fn member_id(&self) -> &str {
        &self.member_id
    }

    /// The partitions the member owns now, sorted (revoked ones until released).
    pub fn assignment(&self) -> Vec<TopicPartition> {
        self.shared.owned.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The member epoch (0 while joining or out of the group).
    pub fn epoch(&self) -> i32 {
        *self.shared.epoch.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The next change of assignment (`None` once the task ended and every event was
    /// taken).
    pub async fn next_event(&mut self) -> Option<MemberEvent> {
        self.events.recv().await
    }

    /// Polls for the next change of assignment, for use as a stream.
    pub fn poll_next_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<MemberEvent>> {
        self.events.poll_recv(cx)
    }

    /// Leaves the group gracefully: the partitions are revoked (released at once) and
    /// the leave heartbeat sent (epoch -1, or -2 for a static member). Returns how the
    /// member ended; events not taken yet are dropped (a revocation among them is
    /// released), and a [`Revocation`] the caller still holds is awaited.
    pub async fn leave(mut self) -> Ended {
        if let Some(tx) = self.commands.take() {
            let _ = tx.send(Command::Leave);
        }
        let task = self.task.take();
        // Keep the revocations flowing while the task ends: no event is taken any
        // more, and those not taken yet are dropped, which releases their revocations.
        self.events.close();
        while self.events.try_recv().is_ok() {}
        match task {
            Some(task) => join(task).await,
            None => Ended::Member(Outcome::Left),
        }
    }

    /// Ends the task at once without leaving the group, as a crash would: the
    /// coordinator gives the partitions to other members once its session timeout
    /// passes.
    pub fn abort(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Drop for GroupMember {
    fn drop(&mut self) {
        // The task sees its command channel close and leaves in the background.
        self.commands.take();
    }
}

async fn join(task: JoinHandle<Ended>) -> Ended {
    match task.await {
        Ok(ended) => ended,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Ended::ClusterClosed,
    }
}

/// The member's clock: tokio's, so that a paused test clock drives it too.
fn clock() -> Instant {
    tokio::time::Instant::now().into_std()
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The task's state.
struct Task {
    cluster: Cluster,
    member: ConsumerMember,
    driver: DriverConfig,
    shared: Arc<Shared>,
    commands: mpsc::UnboundedReceiver<Command>,
    commands_open: bool,
    events: mpsc::UnboundedSender<MemberEvent>,
    releases: mpsc::UnboundedReceiver<ReleaseId>,
    releases_tx: mpsc::UnboundedSender<ReleaseId>,
    lane: Option<Arc<Lane>>,
    lookup: Option<BoxFuture<Result<i32, ConnectionError>>>,
    heartbeat: Option<BoxFuture<(HeartbeatId, Result<ConsumerGroupHeartbeatResponse, ConnectionError>)>>,
    metadata: Option<BoxFuture<Vec<(Uuid, String)>>>,
    /// Set once the user no longer takes revocations (leave, or the handle dropped).
    auto_release: bool,
    /// When a member left in the background gives up.
    deadline: Option<Instant>,
}

/// What woke the task.
enum Wake {
    Command(Option<Command>),
    Released(ReleaseId),
    Coordinator(Result<i32, ConnectionError>),
    Answer(HeartbeatId, Result<ConsumerGroupHeartbeatResponse, ConnectionError>),
    Names(Vec<(Uuid, String)>),
    Timer,
}

impl Task {
    async fn run(mut self) -> Ended {
        tracing::info!(topics = ?self.member.config().subscription.topic_names(), "member starts");
        loop {
            if let Some(ended) = self.carry_out_actions() {
                tracing::info!(?ended, "member ended");
                self.publish();
                let _ = self.events.send(MemberEvent::Ended(ended.clone()));
                return ended;
            }
            self.publish();
            let now = clock();
            if self.deadline.is_some_and(|d| d <= now) {
                tracing::warn!("the leave did not complete in time: the member ends without it");
                let ended = Ended::Member(Outcome::Left);
                let _ = self.events.send(MemberEvent::Ended(ended.clone()));
                return ended;
            }
            if self.heartbeat.is_none() {
                if let Some(hb) = self.member.poll_heartbeat(now) {
                    self.send(hb);
                }
            }
            let wake_at = [self.member.poll_timeout(), self.deadline].into_iter().flatten().min();
            let wake = self.wait(wake_at).await;
            let now = clock();
            match wake {
                Wake::Command(Some(Command::Leave)) => {
                    tracing::info!("leaving the group");
                    self.auto_release = true;
                    self.member.leave(now);
                }
                Wake::Command(None) => {
                    self.commands_open = false;
                    tracing::info!("handle dropped: leaving the group");
                    self.auto_release = true;
                    let c = self.member.config();
                    self.deadline = Some(now + c.rebalance_timeout + self.driver.heartbeat_timeout);
                    self.member.leave(now);
                }
                Wake::Released(id) => {
                    tracing::info!(?id, "revoked partitions released");
                    self.member.released(now, id);
                }
                Wake::Coordinator(Ok(node_id)) => {
                    self.lookup = None;
                    tracing::debug!(node_id, "coordinator found");
                    self.lane = Some(Arc::new(self.cluster.open_lane(node_id)));
                    self.member.coordinator_found(now);
                }
                Wake::Coordinator(Err(e)) => {
                    self.lookup = None;
                    tracing::warn!(error = %e, "the cluster is closed: the member ends without leaving");
                    let ended = Ended::ClusterClosed;
                    let _ = self.events.send(MemberEvent::Ended(ended.clone()));
                    return ended;
                }
                Wake::Answer(id, result) => {
                    self.heartbeat = None;
                    match result {
                        Ok(response) => {
                            tracing::debug!(
                                code = ErrorCode::from_code(response.error_code).name(),
                                epoch = response.member_epoch,
                                assignment = response.assignment.is_some(),
                                "heartbeat answered"
                            );
                            self.member.on_heartbeat_response(now, id, &response);
                        }
                        Err(e) => {
                            tracing::debug!(error = %e, "heartbeat failed");
                            self.member.on_heartbeat_failed(now, id);
                        }
                    }
                }
                Wake::Names(names) => {
                    self.metadata = None;
                    tracing::debug!(resolved = names.len(), "topic ids resolved");
                    self.member.on_topic_names(now, names);
                }
                Wake::Timer => self.member.handle_timeout(now),
            }
        }
    }

    /// Waits for the next event, or until `wake_at`.
    async fn wait(&mut self, wake_at: Option<Instant>) -> Wake {
        let sleep = async {
            match wake_at {
                Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                None => std::future::pending().await,
            }
        };
        tokio::pin!(sleep);
        std::future::poll_fn(|cx| {
            if self.commands_open {
                if let Poll::Ready(c) = self.commands.poll_recv(cx) {
                    return Poll::Ready(Wake::Command(c));
                }
            }
            if let Poll::Ready(Some(id)) = self.releases.poll_recv(cx) {
                return Poll::Ready(Wake::Released(id));
            }
            if let Some(f) = self.lookup.as_mut() {
                if let Poll::Ready(r) = f.as_mut().poll(cx) {
                    return Poll::Ready(Wake::Coordinator(r));
                }
            }
            if let Some(f) = self.heartbeat.as_mut() {
                if let Poll::Ready((id, r)) = f.as_mut().poll(cx) {
                    return Poll::Ready(Wake::Answer(id, r));
                }
            }
            if let Some(f) = self.metadata.as_mut() {
                if let Poll::Ready(names) = f.as_mut().poll(cx) {
                    return Poll::Ready(Wake::Names(names));
                }
            }
            if sleep.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Wake::Timer);
            }
            Poll::Pending
        })
        .await
    }

    /// Carries out the member's actions in order; `Some` once it ended.
    fn carry_out_actions(&mut self) -> Option<Ended> {
        while let Some(action) = self.member.poll_action() {
            match action {
                Action::FindCoordinator => self.find_coordinator(),
                Action::RefreshMetadata { topic_ids } => self.resolve(topic_ids),
                Action::EpochChanged { epoch } => {
                    let old = std::mem::replace(
                        &mut *self.shared.epoch.lock().unwrap_or_else(PoisonError::into_inner),
                        epoch,
                    );
                    if old == 0 && epoch > 0 {
                        tracing::info!(epoch, "joined the group");
                    } else {
                        tracing::debug!(epoch, "member epoch changed");
                    }
                    let member_id = self.member.config().member_id.clone();
                    let _ = self.events.send(MemberEvent::Generation { member_id, epoch });
                }
                Action::StopFetching { partitions, .. } => {
                    tracing::debug!(partitions = %list(&partitions), "reconcile: stop fetching");
                }
                Action::CommitRevoked { release, partitions, reason } => {
                    tracing::info!(partitions = %list(&partitions), ?reason, "reconcile: revoked");
                    if self.auto_release || self.driver.auto_release {
                        let _ = self
                            .events
                            .send(MemberEvent::Revoked { revocation: Revocation::new(partitions, reason, None) });
                        self.member.released(clock(), release);
                    } else {
                        let revocation = Revocation::new(partitions, reason, Some((release, self.releases_tx.clone())));
                        if let Err(mpsc::error::SendError(MemberEvent::Revoked { mut revocation })) =
                            self.events.send(MemberEvent::Revoked { revocation })
                        {
                            // Nobody reads the events: release at once.
                            revocation.release = None;
                            self.member.released(clock(), release);
                        }
                    }
                }
                Action::PartitionsLost { release, partitions, reason } => {
                    tracing::warn!(partitions = %list(&partitions), ?reason, "reconcile: partitions lost");
                    self.publish();
                    let _ = self.events.send(MemberEvent::Lost { partitions, reason });
                    self.member.released(clock(), release);
                }
                Action::StartPartitions { partitions } => {
                    tracing::info!(partitions = %list(&partitions), "reconcile: assigned");
                    self.publish();
                    let _ = self.events.send(MemberEvent::Assigned { partitions });
                }
                Action::Finished(outcome) => return Some(Ended::Member(outcome)),
                // Only a classic member asks for partition counts; this driver runs a KIP-848 one.
                Action::DescribeTopics { .. } => {}
            }
        }
        None
    }

    /// Publishes what the member owns to the handle.
    fn publish(&self) {
        *self.shared.owned.lock().unwrap_or_else(PoisonError::into_inner) = self.member.owned();
    }

    fn find_coordinator(&mut self) {
        let group = self.member.config().group_id.clone();
        if self.lane.take().is_some() {
            // The member lost the one it had: forget it, look it up anew.
            self.cluster.invalidate_coordinator(CoordinatorType::Group, &group);
        }
        if self.lookup.is_some() {
            return;
        }
        let cluster = self.cluster.clone();
        let (backoff, backoff_max) = (self.member.config().retry_backoff, self.member.config().retry_backoff_max);
        self.lookup = Some(Box::pin(async move {
            let mut wait = backoff;
            loop {
                match cluster.coordinator(CoordinatorType::Group, &group).await {
                    Ok(c) => return Ok(c.node_id),
                    Err(e) if cluster.is_closed() => return Err(e),
                    Err(e) => {
                        tracing::warn!(error = %e, "coordinator lookup failed; trying again");
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(backoff_max);
                    }
                }
            }
        }));
    }

    fn send(&mut self, hb: Heartbeat) {
        let Some(lane) = self.lane.clone() else {
            // No lane without a coordinator, and the member sends only with one.
            self.member.on_heartbeat_failed(clock(), hb.id);
            return;
        };
        tracing::debug!(
            epoch = hb.request.member_epoch,
            full = crate::membership::consumer::is_full(&hb.request),
            "heartbeat sent"
        );
        let timeout = self.driver.heartbeat_timeout;
        self.heartbeat = Some(Box::pin(async move {
            let result = async {
                let conn = lane.connection().await?;
                let versions = conn.versions().range(ApiKey::ConsumerGroupHeartbeat);
                if !coordinator_supports(versions) {
                    // What a broker answers a version it does not speak.
                    let message = format!(
                        "coordinator {} offers ConsumerGroupHeartbeat {}, not v{HEARTBEAT_VERSION}",
                        conn.broker(),
                        versions.map_or_else(|| "not at all".to_owned(), |v| format!("v{}-v{}", v.min, v.max)),
                    );
                    return Ok(ConsumerGroupHeartbeatResponse::default()
                        .with_error_code(ErrorCode::UnsupportedVersion.code())
                        .with_error_message(Some(message)));
                }
                conn.send_version_with_timeout(&hb.request, HEARTBEAT_VERSION, timeout).await
            }
            .await;
            (hb.id, result)
        }));
    }

    /// Looks names up for topic ids: the metadata cached, then refreshed, then that of
    /// every topic (a topic assigned through a regex is not among those kept).
    fn resolve(&mut self, topic_ids: Vec<Uuid>) {
        if self.metadata.is_some() {
            // The member asks again after its backoff for ids still unknown.
            return;
        }
        let cluster = self.cluster.clone();
        let names: Vec<String> = self.member.config().subscription.topic_names().to_vec();
        self.metadata = Some(Box::pin(async move {
            let wanted: BTreeSet<Uuid> = topic_ids.into_iter().collect();
            let mut found = lookup(&cluster.metadata(), &wanted);
            if found.len() < wanted.len() && !names.is_empty() {
                if let Ok(m) = cluster.add_topics(&names).await {
                    found = lookup(&m, &wanted);
                }
            }
            if found.len() < wanted.len() {
                if let Ok(m) = cluster.refresh_metadata().await {
                    found = lookup(&m, &wanted);
                }
            }
            if found.len() < wanted.len() {
                if let Ok(m) = cluster.all_topics_metadata().await {
                    found = lookup(&m, &wanted);
                    let extra: Vec<&str> = found.iter().map(|(_, n)| n.as_str()).collect();
                    // Keep them in the cluster's view from now on.
                    let _ = cluster.add_topics(&extra).await;
                }
            }
            found
        }));
    }
}

fn lookup(metadata: &Metadata, ids: &BTreeSet<Uuid>) -> Vec<(Uuid, String)> {
    metadata.topics.values().filter(|t| ids.contains(&t.id)).map(|t| (t.id, t.name.clone())).collect()
}

fn list(partitions: &[TopicPartition]) -> String {
    partitions.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}
