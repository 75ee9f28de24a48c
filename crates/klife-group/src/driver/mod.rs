//! The task that drives a group member against a cluster, under either protocol: it
//! only moves bytes and timers, every decision stays in the member
//! ([`ConsumerMember`] for KIP-848, [`ClassicMember`] for the classic protocol).
//!
//! One tokio task per member, started with
//!
//! - [`GroupMember::start`]: KIP-848 (ConsumerGroupHeartbeat); a coordinator without
//!   it ends the member with [`Outcome::FallBackToClassic`];
//! - [`GroupMember::start_classic`]: the classic protocol (JoinGroup, SyncGroup,
//!   Heartbeat, LeaveGroup);
//! - [`GroupMember::start_auto`]: KIP-848 first and, when the coordinator refuses the
//!   first join as unsupported ([`Outcome::FallBackToClassic`]), the classic protocol
//!   in the same task, without an [`Ended`](MemberEvent::Ended) event in between.
//!   [`GroupMember::protocol`] tells which one runs now.
//!
//! The handle and the events are the same under both. The task
//!
//! - looks the group coordinator up through the [`Cluster`] (again after the member
//!   asks for it, forgetting the cached one) and opens an ordered [`Lane`] to it, so
//!   that the member's requests reach the coordinator in the order sent;
//! - KIP-848: sends each heartbeat the member gives at ConsumerGroupHeartbeat v1
//!   ([`HEARTBEAT_VERSION`](crate::membership::consumer::HEARTBEAT_VERSION)) with a timeout of its own
//!   ([`DriverConfig::heartbeat_timeout`]). A coordinator that does not offer v1 (a
//!   broker without KIP-848, or one with v0 only, whose member ids come from the
//!   coordinator) is reported to the member as UNSUPPORTED_VERSION, which it turns
//!   into [`Outcome::FallBackToClassic`] on a first join;
//! - KIP-848: resolves assigned topic ids to names through the cluster's metadata (the
//!   cached snapshot, then a refresh, then the metadata of every topic);
//! - classic: sends what [`ClassicMember::poll_request`] gives (at most one JoinGroup,
//!   SyncGroup or LeaveGroup and one Heartbeat in flight), each at the highest version
//!   both klife and the coordinator speak (or [`DriverConfig::max_versions`]), no
//!   lower than the versions with the static instance id (JoinGroup v5, SyncGroup v3,
//!   Heartbeat v3; a dynamic member's LeaveGroup goes at any version). A coordinator
//!   offering less is reported to the member as UNSUPPORTED_VERSION, which ends it
//!   with a [`GroupError`](crate::GroupError). A JoinGroup waits for the whole
//!   rebalance: its timeout is the rebalance timeout plus
//!   [`JOIN_TIMEOUT_MARGIN`]; the
//!   others take [`DriverConfig::heartbeat_timeout`]. Heartbeats go on the member's own
//!   timer, also while a revocation waits for the user;
//! - classic: answers the leader's [`Action::DescribeTopics`] with the partition
//!   counts of the cluster's metadata (retried until the metadata comes), and, while
//!   the member leads a stable group, reads those counts again every
//!   [`LEADER_WATCH_INTERVAL`] and asks for a rebalance when partitions were added;
//! - sleeps until the member's `poll_timeout`;
//! - and turns the member's changes into [`MemberEvent`]s:
//!   [`Generation`](MemberEvent::Generation) (member id and epoch or generation),
//!   [`Assigned`](MemberEvent::Assigned), [`Revoked`](MemberEvent::Revoked) (with a
//!   [`Revocation`] the user releases when done with the partitions),
//!   [`Lost`](MemberEvent::Lost) and, last, [`Ended`](MemberEvent::Ended).
//!
//! The task never waits for the user except for a [`Revocation`], and heartbeats go on
//! meanwhile. Fetching and committing are not driven here: a revocation is released as
//! soon as the user releases its [`Revocation`] (or drops it), or at once with
//! [`DriverConfig::auto_release`]; lost partitions are released at once (nothing may
//! be committed for them).
//!
//! Ending, under both protocols:
//!
//! - [`GroupMember::leave`]: the partitions are revoked (released at once), then the
//!   member leaves — KIP-848: the leave heartbeat (epoch -1, or -2 for a static
//!   member); classic: a LeaveGroup for a dynamic member, nothing for a static one,
//!   which the coordinator keeps (with its partitions) until its session timeout, so
//!   that it comes back under its instance id without a rebalance.
//! - Dropping the [`GroupMember`] leaves the same way, in the background: revocations
//!   are released at once and the task ends after the leave, or after the rebalance
//!   timeout plus the heartbeat timeout at the latest (classic: plus
//!   [`JOIN_TIMEOUT_MARGIN`], for a
//!   JoinGroup still in flight).
//! - [`GroupMember::abort`] ends the task at once without leaving, as a crash would:
//!   the coordinator gives the partitions to other members after its session timeout.
//!
//! Tracing: the task runs in a span `klife.group.member` with the group and member
//! id (a classic member's once the coordinator gave it); the join, each request sent
//! and answered (debug), and each step of a reconciliation (assigned, revoked,
//! released, lost) are events in it. Within it, the heartbeat that joins (KIP-848) or
//! the JoinGroup and SyncGroup of a join (classic) run in a span `klife.group.join`,
//! and each other heartbeat in a span `klife.group.heartbeat` (see
//! [`crate::telemetry`]); the requests' own `klife.request` spans are their
//! children. Metrics: the heartbeats' round trips
//! ([`GROUP_HEARTBEAT_DURATION_SECONDS`](crate::telemetry::GROUP_HEARTBEAT_DURATION_SECONDS))
//! and each new epoch or generation
//! ([`GROUP_REBALANCES_TOTAL`](crate::telemetry::GROUP_REBALANCES_TOTAL)).

mod classic;
mod consumer;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use klife_connection::{Cluster, CoordinatorType, Error as ConnectionError, Lane};
use klife_protocol::messages::ConsumerGroupHeartbeatResponse;
use klife_protocol::types::TopicPartition;
use klife_protocol::{ApiKey, Uuid};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::error::ConfigError;
use crate::membership::classic::{ClassicConfig, ClassicMember, JOIN_TIMEOUT_MARGIN, RequestId, Response};
use crate::membership::consumer::{
    Action, ConsumerConfig, ConsumerMember, HeartbeatId, LostReason, Outcome, ReleaseId, RevokeReason,
};
use crate::offsets::GroupProtocol;
use crate::telemetry::{self, MEMBER_SPAN};
/// How long a heartbeat waits for its answer when nothing else is set.
pub const DEFAULT_HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(10);

/// How often the leader of a classic group looks at the partition counts of the
/// subscribed topics, to rebalance when partitions were added (the coordinator does not
/// watch them under the classic protocol; KIP-848's does).
pub const LEADER_WATCH_INTERVAL: Duration = Duration::from_secs(5);

/// The settings of the task that drives a member (the member's own are in
/// [`ConsumerConfig`] and [`ClassicConfig`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DriverConfig {
    /// Release revoked partitions at once, without waiting for the user's
    /// [`Revocation::release`] (`false` by default).
    pub auto_release: bool,
    /// How long a heartbeat waits for its answer before it counts as failed (10 s by
    /// default); under the classic protocol also a SyncGroup and a LeaveGroup (a
    /// JoinGroup waits for the rebalance: the rebalance timeout plus
    /// [`JOIN_TIMEOUT_MARGIN`]). The connection it went on is closed then, as for any
    /// request timeout.
    pub heartbeat_timeout: Duration,
    /// The highest version the task sends of a classic request (JoinGroup, SyncGroup,
    /// Heartbeat, LeaveGroup), per API; none by default: the highest both klife and the
    /// coordinator speak. For a broker that advertises versions it does not read:
    /// librdkafka 2.12's mock cluster advertises JoinGroup v6, SyncGroup v4 and
    /// LeaveGroup v3-v4 but reads them with the layouts of JoinGroup v5, SyncGroup v3
    /// and LeaveGroup v2. (The KIP-848 heartbeat always goes at v1.)
    pub max_versions: Vec<(ApiKey, i16)>,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig { auto_release: false, heartbeat_timeout: DEFAULT_HEARTBEAT_TIMEOUT, max_versions: Vec::new() }
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

    /// Caps the version of `api` the task sends (see
    /// [`max_versions`](Self::max_versions)).
    #[must_use]
    pub fn with_max_version(mut self, api: ApiKey, max: i16) -> Self {
        self.max_versions.retain(|(a, _)| *a != api);
        self.max_versions.push((api, max));
        self
    }

    /// The cap on `api`'s version, if any.
    fn max_version(&self, api: ApiKey) -> Option<i16> {
        self.max_versions.iter().find(|(a, _)| *a == api).map(|(_, v)| *v)
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
#[derive(Debug)]
struct Shared {
    owned: Mutex<Vec<TopicPartition>>,
    epoch: Mutex<i32>,
    member_id: Mutex<String>,
    protocol: Mutex<GroupProtocol>,
}

impl Shared {
    fn new(member: &Member) -> Shared {
        Shared {
            owned: Mutex::new(Vec::new()),
            epoch: Mutex::new(member.epoch()),
            member_id: Mutex::new(member.member_id().to_owned()),
            protocol: Mutex::new(member.protocol()),
        }
    }
}

fn set<T>(slot: &Mutex<T>, value: T) -> T {
    std::mem::replace(&mut *slot.lock().unwrap_or_else(PoisonError::into_inner), value)
}

fn get<T: Clone>(slot: &Mutex<T>) -> T {
    slot.lock().unwrap_or_else(PoisonError::into_inner).clone()
}

/// A member of a group driven by a task of its own, under KIP-848 or the classic
/// protocol. See the [module documentation](self).
#[derive(Debug)]
pub struct GroupMember {
    group_id: String,
    shared: Arc<Shared>,
    commands: Option<mpsc::UnboundedSender<Command>>,
    events: mpsc::UnboundedReceiver<MemberEvent>,
    task: Option<JoinHandle<Ended>>,
}

impl GroupMember {
    /// Starts a KIP-848 member of `config.group_id` on `cluster`, in a task of its own
    /// (on the current tokio runtime: call it from within one). A coordinator without
    /// KIP-848 ends it with [`Outcome::FallBackToClassic`] (see
    /// [`start_auto`](Self::start_auto) to go on under the classic protocol instead).
    pub fn start(cluster: Cluster, config: ConsumerConfig, driver: DriverConfig) -> Result<GroupMember, ConfigError> {
        let member = ConsumerMember::new(config, clock())?;
        Ok(spawn(cluster, Member::Consumer(member), None, driver))
    }

    /// Starts a member of `config.group_id` under the classic protocol on `cluster`,
    /// in a task of its own (on the current tokio runtime: call it from within one).
    /// Its member id is the coordinator's, empty until the first join is answered.
    pub fn start_classic(
        cluster: Cluster,
        config: ClassicConfig,
        driver: DriverConfig,
    ) -> Result<GroupMember, ConfigError> {
        let member = ClassicMember::new(config, clock())?;
        Ok(spawn(cluster, Member::Classic(member), None, driver))
    }

    /// Starts a member that chooses its protocol: KIP-848 with `config` and, when the
    /// coordinator refuses its first join as unsupported (a broker without KIP-848,
    /// or one where the group coordinator does not enable it), the classic protocol
    /// with `classic`, in the same task and with the same events (no
    /// [`Ended`](MemberEvent::Ended) in between). `classic` joins the group of
    /// `config` (its own `group_id` is replaced), and `config`'s
    /// [`classic_fallback`](ConsumerConfig::classic_fallback) is set. Both
    /// configurations are checked here.
    pub fn start_auto(
        cluster: Cluster,
        config: ConsumerConfig,
        mut classic: ClassicConfig,
        driver: DriverConfig,
    ) -> Result<GroupMember, ConfigError> {
        let config = config.with_classic_fallback(true);
        classic.group_id.clone_from(&config.group_id);
        classic.validate()?;
        let member = ConsumerMember::new(config, clock())?;
        Ok(spawn(cluster, Member::Consumer(member), Some(classic), driver))
    }

    /// The group.
    pub fn group_id(&self) -> &str {
        &self.group_id
    }

    /// The member id: the client's under KIP-848; the coordinator's under the classic
    /// protocol (empty until the first join is answered, and again after the
    /// coordinator forgot the member).
    pub fn member_id(&self) -> String {
        get(&self.shared.member_id)
    }

    /// The protocol the member runs now ([`GroupProtocol::Classic`] after a fall back
    /// of [`start_auto`](Self::start_auto)).
    pub fn protocol(&self) -> GroupProtocol {
        get(&self.shared.protocol)
    }

    /// The partitions the member owns now, sorted (revoked ones until released).
    pub fn assignment(&self) -> Vec<TopicPartition> {
        get(&self.shared.owned)
    }

    /// The member epoch (KIP-848: 0 while joining or out of the group) or the
    /// generation (classic: -1 while joining or out of the group).
    pub fn epoch(&self) -> i32 {
        get(&self.shared.epoch)
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

    /// Leaves the group gracefully: the partitions are revoked (released at once), then
    /// KIP-848 sends the leave heartbeat (epoch -1, or -2 for a static member) and the
    /// classic protocol a LeaveGroup (none for a static member: the coordinator keeps
    /// its partitions for it until its session timeout). Returns how the member ended;
    /// events not taken yet are dropped (a revocation among them is released), and a
    /// [`Revocation`] the caller still holds is awaited.
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

fn spawn(cluster: Cluster, member: Member, fallback: Option<ClassicConfig>, driver: DriverConfig) -> GroupMember {
    let group_id = member.group_id().to_owned();
    let shared = Arc::new(Shared::new(&member));
    let (commands_tx, commands) = mpsc::unbounded_channel();
    let (events_tx, events) = mpsc::unbounded_channel();
    let (releases_tx, releases) = mpsc::unbounded_channel();
    let member_id = member.member_id().to_owned();
    let span = tracing::info_span!(MEMBER_SPAN, group = %group_id, member_id = %member_id);
    let task = Task {
        cluster,
        member,
        fallback,
        driver,
        shared: shared.clone(),
        commands,
        commands_open: true,
        events: events_tx,
        releases,
        releases_tx,
        lane: None,
        pending: Vec::new(),
        lookup_pending: false,
        heartbeat_pending: false,
        names_pending: false,
        counts_asked: 0,
        joining: None,
        auto_release: false,
        deadline: None,
        watch_due: None,
        watch_pending: false,
    };
    let task = tokio::spawn(task.run().instrument(span));
    GroupMember { group_id, shared, commands: Some(commands_tx), events, task: Some(task) }
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

/// The member the task drives.
#[derive(Debug)]
// One per task, never moved once the task runs.
#[allow(clippy::large_enum_variant)]
enum Member {
    Consumer(ConsumerMember),
    Classic(ClassicMember),
}

impl Member {
    fn group_id(&self) -> &str {
        match self {
            Member::Consumer(m) => &m.config().group_id,
            Member::Classic(m) => &m.config().group_id,
        }
    }

    fn member_id(&self) -> &str {
        match self {
            Member::Consumer(m) => &m.config().member_id,
            Member::Classic(m) => m.member_id(),
        }
    }

    fn epoch(&self) -> i32 {
        match self {
            Member::Consumer(m) => m.epoch(),
            Member::Classic(m) => m.generation(),
        }
    }

    fn protocol(&self) -> GroupProtocol {
        match self {
            Member::Consumer(_) => GroupProtocol::Consumer,
            Member::Classic(_) => GroupProtocol::Classic,
        }
    }

    fn retry_backoff(&self) -> (Duration, Duration) {
        match self {
            Member::Consumer(m) => (m.config().retry_backoff, m.config().retry_backoff_max),
            Member::Classic(m) => (m.config().retry_backoff, m.config().retry_backoff_max),
        }
    }

    /// The longest a leave in the background may take.
    fn leave_bound(&self, driver: &DriverConfig) -> Duration {
        match self {
            Member::Consumer(m) => m.config().rebalance_timeout + driver.heartbeat_timeout,
            // A JoinGroup in flight is answered first.
            Member::Classic(m) => m.config().rebalance_timeout + JOIN_TIMEOUT_MARGIN + driver.heartbeat_timeout,
        }
    }

    fn poll_action(&mut self) -> Option<Action> {
        match self {
            Member::Consumer(m) => m.poll_action(),
            Member::Classic(m) => m.poll_action(),
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        match self {
            Member::Consumer(m) => m.poll_timeout(),
            Member::Classic(m) => m.poll_timeout(),
        }
    }

    fn handle_timeout(&mut self, now: Instant) {
        match self {
            Member::Consumer(m) => m.handle_timeout(now),
            Member::Classic(m) => m.handle_timeout(now),
        }
    }

    fn coordinator_found(&mut self, now: Instant) {
        match self {
            Member::Consumer(m) => m.coordinator_found(now),
            Member::Classic(m) => m.coordinator_found(now),
        }
    }

    fn released(&mut self, now: Instant, release: ReleaseId) {
        match self {
            Member::Consumer(m) => m.released(now, release),
            Member::Classic(m) => m.released(now, release),
        }
    }

    fn leave(&mut self, now: Instant) {
        match self {
            Member::Consumer(m) => m.leave(now),
            Member::Classic(m) => m.leave(now),
        }
    }

    fn owned(&self) -> Vec<TopicPartition> {
        match self {
            Member::Consumer(m) => m.owned(),
            Member::Classic(m) => m.owned(),
        }
    }
}

/// The task's state.
struct Task {
    cluster: Cluster,
    member: Member,
    /// The classic member's configuration, for a KIP-848 one that may fall back.
    fallback: Option<ClassicConfig>,
    driver: DriverConfig,
    shared: Arc<Shared>,
    commands: mpsc::UnboundedReceiver<Command>,
    commands_open: bool,
    events: mpsc::UnboundedSender<MemberEvent>,
    releases: mpsc::UnboundedReceiver<ReleaseId>,
    releases_tx: mpsc::UnboundedSender<ReleaseId>,
    lane: Option<Arc<Lane>>,
    /// What the task waits for besides the handle and the timer: the coordinator
    /// lookup, requests in flight, metadata.
    pending: Vec<BoxFuture<Wake>>,
    lookup_pending: bool,
    /// KIP-848: a heartbeat in flight (the classic member keeps its own count).
    heartbeat_pending: bool,
    /// KIP-848: a lookup of topic names under way.
    names_pending: bool,
    /// Classic: how many times the leader asked for partition counts; only the answer
    /// to the last one is reported.
    counts_asked: u64,
    /// Classic: the span of the join under way, from the first JoinGroup to the
    /// SyncGroup that gives the assignment.
    joining: Option<tracing::Span>,
    /// Set once the user no longer takes revocations (leave, or the handle dropped).
    auto_release: bool,
    /// When a member left in the background gives up.
    deadline: Option<Instant>,
    /// Classic leader: when the subscribed topics' partition counts are looked at next.
    watch_due: Option<Instant>,
    /// Classic leader: a look at the partition counts under way.
    watch_pending: bool,
}

/// What woke the task.
enum Wake {
    Command(Option<Command>),
    Released(ReleaseId),
    Coordinator(Result<i32, ConnectionError>),
    /// KIP-848: a heartbeat's answer.
    Heartbeat(HeartbeatId, Result<ConsumerGroupHeartbeatResponse, ConnectionError>),
    /// KIP-848: topic names.
    Names(Vec<(Uuid, String)>),
    /// Classic: a request's answer.
    Answer(RequestId, ApiKey, Result<Response, ConnectionError>),
    /// Classic: partition counts, for the request of this number.
    Counts(u64, Vec<(String, i32)>),
    /// Classic leader: the partition counts of the subscribed topics now.
    Watched(Vec<(String, i32)>),
    Timer,
}

impl Task {
    async fn run(mut self) -> Ended {
        match &self.member {
            Member::Consumer(m) => {
                tracing::info!(topics = ?m.config().subscription.topic_names(), fallback = self.fallback.is_some(), "member starts (KIP-848)");
            }
            Member::Classic(m) => {
                tracing::info!(topics = ?m.config().topics, protocol = ?m.rebalance_protocol(), "member starts (classic)");
            }
        }
        loop {
            if let Some(ended) = self.carry_out_actions() {
                return self.end(ended);
            }
            self.publish();
            let now = clock();
            if self.deadline.is_some_and(|d| d <= now) {
                tracing::warn!("the leave did not complete in time: the member ends without it");
                return self.end(Ended::Member(Outcome::Left));
            }
            if self.send_due(now) {
                // Something could not be sent: the member's reaction first.
                continue;
            }
            self.watch_partitions(now);
            let wake_at = [self.member.poll_timeout(), self.deadline, self.watch_due].into_iter().flatten().min();
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
                    self.deadline = Some(now + self.member.leave_bound(&self.driver));
                    self.member.leave(now);
                }
                Wake::Released(id) => {
                    tracing::info!(?id, "revoked partitions released");
                    self.member.released(now, id);
                }
                Wake::Coordinator(Ok(node_id)) => {
                    self.lookup_pending = false;
                    tracing::debug!(node_id, "coordinator found");
                    self.lane = Some(Arc::new(self.cluster.open_lane(node_id)));
                    self.member.coordinator_found(now);
                }
                Wake::Coordinator(Err(e)) => {
                    tracing::warn!(error = %e, "the cluster is closed: the member ends without leaving");
                    let ended = Ended::ClusterClosed;
                    let _ = self.events.send(MemberEvent::Ended(ended.clone()));
                    return ended;
                }
                Wake::Heartbeat(id, result) => {
                    self.heartbeat_pending = false;
                    if let Member::Consumer(m) = &mut self.member {
                        consumer::on_answer(m, now, id, result);
                    }
                }
                Wake::Names(names) => {
                    self.names_pending = false;
                    if let Member::Consumer(m) = &mut self.member {
                        tracing::debug!(resolved = names.len(), "topic ids resolved");
                        m.on_topic_names(now, names);
                    }
                }
                Wake::Answer(id, api, result) => {
                    if let Member::Classic(m) = &mut self.member {
                        let joined = matches!(&result, Ok(Response::SyncGroup(r)) if r.error_code == 0);
                        classic::on_answer(m, now, id, result);
                        if joined || api == ApiKey::LeaveGroup {
                            // The join is over: its span ends.
                            if let Some(span) = self.joining.take() {
                                span.record("member_id", m.member_id());
                            }
                        }
                    }
                }
                Wake::Counts(asked, counts) => {
                    if let Member::Classic(m) = &mut self.member {
                        if asked == self.counts_asked {
                            tracing::debug!(topics = counts.len(), "partition counts found");
                            m.on_partition_counts(now, counts);
                        }
                    }
                }
                Wake::Watched(found) => {
                    self.watch_pending = false;
                    if let Member::Classic(m) = &mut self.member {
                        let grown = m.leader_counts().is_some_and(|assigned| {
                            found.iter().any(|(t, n)| *n > assigned.get(t).copied().unwrap_or(0))
                        });
                        if grown {
                            tracing::info!("partitions were added to a subscribed topic: rebalancing");
                            m.request_rejoin(now);
                        }
                    }
                }
                Wake::Timer => self.member.handle_timeout(now),
            }
        }
    }

    /// Classic: the coordinator does not watch the subscribed topics' partitions, so
    /// the leader of a stable group looks at their counts every
    /// [`LEADER_WATCH_INTERVAL`], and asks for a rebalance when partitions were added
    /// (Java's leader does so when its metadata is refreshed).
    fn watch_partitions(&mut self, now: Instant) {
        let Member::Classic(m) = &self.member else { return };
        let Some(assigned) = m.leader_counts() else {
            self.watch_due = None;
            return;
        };
        let due = *self.watch_due.get_or_insert(now + LEADER_WATCH_INTERVAL);
        if self.watch_pending || now < due {
            return;
        }
        self.watch_pending = true;
        self.watch_due = Some(now + LEADER_WATCH_INTERVAL);
        let mut topics: Vec<String> = assigned.keys().cloned().collect();
        topics.extend(m.config().topics.iter().filter(|t| !assigned.contains_key(*t)).cloned());
        let cluster = self.cluster.clone();
        self.pending.push(Box::pin(async move {
            match cluster.add_topics(&topics).await {
                Ok(metadata) => Wake::Watched(classic::counts(&metadata, &topics)),
                Err(e) => {
                    tracing::debug!(error = %e, "partition counts not read; looking again later");
                    Wake::Watched(Vec::new())
                }
            }
        }));
    }

    fn end(&mut self, ended: Ended) -> Ended {
        tracing::info!(?ended, "member ended");
        self.publish();
        let _ = self.events.send(MemberEvent::Ended(ended.clone()));
        ended
    }

    /// Sends what the member has due; `true` when something could not be sent (the
    /// member was told).
    fn send_due(&mut self, now: Instant) -> bool {
        match &mut self.member {
            Member::Consumer(m) => {
                if self.heartbeat_pending {
                    return false;
                }
                let Some(hb) = m.poll_heartbeat(now) else { return false };
                let Some(lane) = self.lane.clone() else {
                    // No lane without a coordinator, and the member sends only with one.
                    m.on_heartbeat_failed(now, hb.id);
                    return true;
                };
                self.heartbeat_pending = true;
                self.pending.push(consumer::send(lane, hb, self.driver.heartbeat_timeout));
                false
            }
            Member::Classic(m) => {
                while let Some(request) = m.poll_request(now) {
                    let Some(lane) = self.lane.clone() else {
                        // As above.
                        m.on_request_failed(now, request.id);
                        return true;
                    };
                    self.pending.push(classic::send(lane, request, &self.driver, &mut self.joining));
                }
                false
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
            for i in 0..self.pending.len() {
                if let Poll::Ready(wake) = self.pending[i].as_mut().poll(cx) {
                    drop(self.pending.swap_remove(i));
                    return Poll::Ready(wake);
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
                Action::RefreshMetadata { topic_ids } => {
                    if let Member::Consumer(m) = &self.member {
                        if !self.names_pending {
                            // The member asks again after its backoff for ids still unknown.
                            self.names_pending = true;
                            let names = m.config().subscription.topic_names().to_vec();
                            self.pending.push(consumer::resolve(self.cluster.clone(), topic_ids, names));
                        }
                    }
                }
                Action::DescribeTopics { topics } => {
                    self.counts_asked += 1;
                    let backoff = self.member.retry_backoff();
                    self.pending.push(classic::describe(self.cluster.clone(), topics, self.counts_asked, backoff));
                }
                Action::EpochChanged { epoch } => {
                    let old = set(&self.shared.epoch, epoch);
                    let member_id = self.member.member_id().to_owned();
                    let old_id = set(&self.shared.member_id, member_id.clone());
                    if old_id != member_id {
                        tracing::Span::current().record("member_id", member_id.as_str());
                    }
                    if old <= 0 && epoch > 0 || old < 0 && epoch == 0 {
                        tracing::info!(epoch, "joined the group");
                    } else {
                        tracing::debug!(epoch, "epoch changed");
                    }
                    if epoch > 0 && epoch != old {
                        let protocol = match self.member.protocol() {
                            GroupProtocol::Classic => "classic",
                            _ => "consumer",
                        };
                        telemetry::record_rebalance(self.member.group_id(), protocol);
                    }
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
                Action::Finished(Outcome::FallBackToClassic { message }) if self.fallback.is_some() => {
                    if self.auto_release {
                        // Leaving before it ever joined: nothing to fall back for.
                        return Some(Ended::Member(Outcome::Left));
                    }
                    self.fall_back(message);
                }
                Action::Finished(outcome) => return Some(Ended::Member(outcome)),
            }
        }
        None
    }

    /// Goes on under the classic protocol, after the coordinator refused KIP-848.
    fn fall_back(&mut self, message: Option<String>) {
        let Some(config) = self.fallback.take() else { return };
        tracing::info!(
            message = message.as_deref().unwrap_or(""),
            "the coordinator has no KIP-848: the classic protocol takes over"
        );
        // Validated at the start.
        let member = match ClassicMember::new(config, clock()) {
            Ok(m) => m,
            Err(e) => unreachable!("a classic configuration checked at the start fails: {e}"),
        };
        self.member = Member::Classic(member);
        // Same coordinator: the lookup of the classic member finds it in the cache.
        self.lane = None;
        set(&self.shared.protocol, GroupProtocol::Classic);
        set(&self.shared.epoch, self.member.epoch());
        set(&self.shared.member_id, String::new());
        tracing::Span::current().record("member_id", "");
    }

    /// Publishes what the member owns to the handle.
    fn publish(&self) {
        set(&self.shared.owned, self.member.owned());
    }

    fn find_coordinator(&mut self) {
        let group = self.member.group_id().to_owned();
        if self.lane.take().is_some() {
            // The member lost the one it had: forget it, look it up anew.
            self.cluster.invalidate_coordinator(CoordinatorType::Group, &group);
        }
        if self.lookup_pending {
            return;
        }
        self.lookup_pending = true;
        let cluster = self.cluster.clone();
        let (backoff, backoff_max) = self.member.retry_backoff();
        self.pending.push(Box::pin(async move {
            let mut wait = backoff;
            loop {
                match cluster.coordinator(CoordinatorType::Group, &group).await {
                    Ok(c) => return Wake::Coordinator(Ok(c.node_id)),
                    Err(e) if cluster.is_closed() => return Wake::Coordinator(Err(e)),
                    Err(e) => {
                        tracing::warn!(error = %e, "coordinator lookup failed; trying again");
                        // A coordinator the metadata does not list (read while that
                        // broker was down, or before it joined): without a fresh read,
                        // every retry would meet the same stale list.
                        if matches!(e, ConnectionError::UnknownBroker { .. }) {
                            cluster.invalidate_coordinator(CoordinatorType::Group, &group);
                            if let Err(e) = cluster.refresh_metadata().await {
                                tracing::debug!(error = %e, "metadata refresh failed");
                            }
                        }
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(backoff_max);
                    }
                }
            }
        }));
    }
}

fn list(partitions: &[TopicPartition]) -> String {
    partitions.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}
