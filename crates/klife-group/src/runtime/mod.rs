//! Consumer groups with handlers, as Klife runs them: one member per group name, one
//! consumer per assigned partition, committers shared by the group's partitions.
//!
//! [`ConsumerGroup::start`] joins the group and returns a handle. For each partition
//! the coordinator assigns, a consumer task looks its committed offset up (or applies
//! the topic's reset policy), calls [`Handler::on_consumer_start`], and then, cycle
//! after cycle, takes a batch from the fetcher, gives it to
//! [`Handler::handle_record_batch`] and carries out the [`Action`] the handler
//! returns. The offset committed is the one after the last record the handler
//! finished, never the fetch position.
//!
//! ## Delivery
//!
//! - **At least once.** A record is committed only after its handler finished it (and,
//!   for a dead letter, after the dead-letter topic acknowledged it).
//! - **Graceful revocation and shutdown hand over without repeats.** A partition given
//!   up (revoked by the coordinator, or [`ConsumerGroup::shutdown`]) stops fetching,
//!   finishes the batch in hand, commits everything finished, calls
//!   [`Handler::on_consumer_stop`], and only then is released to the group — within
//!   the rebalance timeout; past it, the partition counts as lost.
//! - **After a hard failure** (a crash, a lost session) the records handled and not
//!   committed are delivered again: at most the batch in hand plus
//!   `handler_max_unacked_commits` finished batches per partition.
//! - **Lost partitions** (fenced, session expired) commit nothing more: another member
//!   may own them already.
//!
//! ## Actions and failures
//!
//! [`Action::Commit`], [`Action::Retry`] (the records come again first, after the
//! cooldown, with [`BatchContext::attempt`] counting), [`Action::Skip`] (committed;
//! the reason goes into the commit metadata), [`Action::DeadLetter`] (produced with
//! headers [`DLQ_TOPIC_HEADER`], [`DLQ_PARTITION_HEADER`], [`DLQ_OFFSET_HEADER`],
//! [`DLQ_GROUP_HEADER`], [`DLQ_REASON_HEADER`], then committed), and
//! [`Action::Each`] for one action per record. Committing a record above a retried
//! one of the same batch is refused ([`MisuseError::CommitAboveRetry`] says why).
//!
//! A handler that panics or misuses its action, and a dead letter that cannot be
//! written, fail the partition's consumer: [`Handler::on_consumer_stop`] gets
//! [`StopReason::Failed`], [`ConsumerGroup::next_failure`] reports it, and the
//! partition starts again after the last record finished, after a backoff that
//! doubles with each failure in a row. A fetch or offsets failure that retrying does
//! not cure (a topic created again, no committed offset under the `Error` reset
//! policy) leaves the partition stopped until it is assigned again.
//!
//! ## Example
//!
//! ```no_run
//! use klife_connection::{Cluster, ConnectionConfig};
//! use klife_fetcher::{Fetcher, FetcherConfig, Record};
//! use klife_group::offsets::ResetPolicy;
//! use klife_group::runtime::{Action, BatchContext, ConsumerGroup, GroupConfig, Handler, Resources, TopicConfig};
//!
//! struct Orders;
//!
//! impl Handler for Orders {
//!     async fn handle_record_batch(&self, ctx: &BatchContext, records: Vec<Record>) -> Action {
//!         println!("{}-{}: {} records", ctx.topic(), ctx.partition(), records.len());
//!         Action::Commit
//!     }
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let cluster = Cluster::connect(&["127.0.0.1:9092"], ConnectionConfig::default()).await?;
//! let fetcher = Fetcher::new(cluster.clone(), FetcherConfig::default())?;
//! let mut config = GroupConfig::new("orders-svc");
//! config.topics.push(TopicConfig::new("orders").offset_reset(ResetPolicy::Earliest));
//! let group = ConsumerGroup::start(Resources::new(cluster, fetcher), config, Orders)?;
//! // ... later:
//! group.shutdown().await?;
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::sync::{Arc, PoisonError};

use klife_connection::Cluster;
use klife_fetcher::{Fetcher, Record};
use klife_producer::Producer;
use klife_protocol::types::TopicPartition;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use crate::driver::GroupMember;
use crate::error::{ConfigError, GroupError};
use crate::membership::classic::ClassicConfig;
use crate::membership::consumer::{ConsumerConfig, Subscription, member_id_from_random};
use crate::offsets::{CommitTracker, GroupProtocol, OffsetFetcher, OffsetsConfig};

mod config;
mod group;
mod handler;
mod lifecycle;
mod manual;
mod partition;
pub(crate) mod settle;
mod stream;

pub use config::{
    BatchSize, DEFAULT_FETCH_INTERVAL, DEFAULT_FETCH_MAX_BYTES, DEFAULT_REBALANCE_TIMEOUT, FetchStrategy, GroupConfig,
    MAX_IDLE_STEPS, Mode, TopicConfig,
};
pub use handler::{
    Action, BatchContext, Handler, MisuseError, PartitionContext, PartitionError, RecordAction, StopReason,
};
pub use manual::{Batch, Lease, ManualError};
pub use partition::{
    CatchUnwind, DLQ_GROUP_HEADER, DLQ_OFFSET_HEADER, DLQ_PARTITION_HEADER, DLQ_REASON_HEADER, DLQ_TOPIC_HEADER,
    catch_unwind, panic_message,
};
pub use stream::{GroupEvent, GroupStream, StreamBatch};

use group::{Command, GroupTask, Shared, TaskState};

/// What a group runs on: the cluster, the fetchers it may share, and the producer its
/// dead letters go through.
#[derive(Debug, Clone)]
pub struct Resources {
    /// The cluster.
    pub cluster: Cluster,
    /// The fetcher of [`FetchStrategy::Default`].
    pub default_fetcher: Fetcher,
    /// The fetchers [`FetchStrategy::Shared`] may name.
    pub named_fetchers: HashMap<String, Fetcher>,
    /// The producer of dead letters (`None`: a dead letter fails its partition).
    pub producer: Option<Producer>,
}

impl Resources {
    /// A cluster and its default fetcher; no named fetcher, no producer.
    pub fn new(cluster: Cluster, default_fetcher: Fetcher) -> Resources {
        Resources { cluster, default_fetcher, named_fetchers: HashMap::new(), producer: None }
    }

    /// Sets the producer of dead letters.
    #[must_use]
    pub fn with_producer(mut self, producer: Producer) -> Resources {
        self.producer = Some(producer);
        self
    }

    /// Adds a fetcher [`FetchStrategy::Shared`] may name.
    #[must_use]
    pub fn with_named_fetcher(mut self, name: impl Into<String>, fetcher: Fetcher) -> Resources {
        self.named_fetchers.insert(name.into(), fetcher);
        self
    }
}

/// A partition's consumer failed ([`ConsumerGroup::next_failure`]).
#[derive(Debug, Clone)]
pub struct PartitionFailure {
    /// The partition.
    pub partition: TopicPartition,
    /// Why; [`PartitionError::restarts`] says whether it starts again by itself.
    pub error: Arc<PartitionError>,
}

/// Why a group's member stopped other than by [`ConsumerGroup::shutdown`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum GroupStopped {
    /// The member stopped on an error it cannot get over.
    #[error(transparent)]
    Member(#[from] GroupError),
    /// The coordinator does not run the consumer group protocol (KIP-848) and the
    /// group was not allowed to fall back to the classic protocol.
    #[error("the coordinator runs only the classic group protocol{}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
    ClassicOnly {
        /// The broker's message.
        message: Option<String>,
    },
    /// The client was closed: nothing more can be sent. The member did not leave; the
    /// coordinator gives its partitions to others after its session timeout.
    #[error("the client was closed")]
    ClusterClosed,
    /// The group's task ended abnormally (it was aborted, or panicked).
    #[error("the group's task ended abnormally")]
    Aborted,
}

/// A running member of a consumer group. See the [module documentation](self).
///
/// Dropping the handle shuts the member down gracefully in the background, as
/// [`shutdown`](Self::shutdown) does without waiting.
#[derive(Debug)]
pub struct ConsumerGroup {
    group: Arc<str>,
    member: Option<GroupMemberAbort>,
    shared: Arc<Shared>,
    commands: Option<mpsc::UnboundedSender<Command>>,
    failures: mpsc::UnboundedReceiver<PartitionFailure>,
    task: Option<JoinHandle<Result<(), GroupStopped>>>,
    /// Closed when the member's task ends.
    alive: watch::Receiver<()>,
}

/// What [`ConsumerGroup::abort`] needs to end the member at once.
#[derive(Debug)]
struct GroupMemberAbort(mpsc::UnboundedSender<Command>);

/// Ends a member at once, as a crash would, from outside its handle
/// ([`ConsumerGroup::abort_handle`]): for a driver whose handle is owned elsewhere (a
/// [`GroupStream`] moved into a task). Does nothing once the member ended.
#[derive(Debug, Clone)]
pub struct AbortHandle(mpsc::UnboundedSender<Command>);

impl AbortHandle {
    /// Ends the member as [`ConsumerGroup::abort`] does.
    pub fn abort(&self) {
        let _ = self.0.send(Command::Abort);
    }
}

impl ConsumerGroup {
    /// Starts a member of `config.group` running `handler` over `config.topics`, in
    /// tasks of its own on the current tokio runtime. Fails only for invalid settings;
    /// everything after (joining, fetching) is retried or reported by the handle.
    pub fn start<H: Handler>(
        resources: Resources,
        config: GroupConfig,
        handler: H,
    ) -> Result<ConsumerGroup, ConfigError> {
        let Resources { cluster, default_fetcher, named_fetchers, producer } = resources;
        // Each topic's fetcher: its own strategy, else the group's (one exclusive
        // fetcher for all the topics that take the group's).
        let group_strategy =
            config.default_topic_config.fetch_strategy.clone().unwrap_or_else(|| config.fetch_strategy.clone());
        let resolve = |strategy: FetchStrategy| -> Result<Fetcher, ConfigError> {
            match strategy {
                FetchStrategy::Default => Ok(default_fetcher.clone()),
                FetchStrategy::Shared(name) => {
                    named_fetchers.get(&name).cloned().ok_or(ConfigError::UnknownFetcher(name))
                }
                FetchStrategy::Exclusive(fc) => exclusive(&cluster, fc),
            }
        };
        let group_fetcher = resolve(group_strategy)?;
        let mut fetchers = HashMap::new();
        for t in &config.topics {
            let fetcher = match &t.fetch_strategy {
                Some(s) => resolve(s.clone())?,
                None => group_fetcher.clone(),
            };
            fetchers.insert(t.name.clone(), fetcher);
        }
        let settings = config.topic_settings(|name| {
            fetchers.get(name).map_or(usize::MAX, |f: &Fetcher| f.config().max_bytes_per_request)
        })?;
        let matched = config
            .regex_settings(|_| group_fetcher.config().max_bytes_per_request)?
            .map(|s| (Arc::new(s), group_fetcher.clone()));
        let topics: Vec<String> = config.topics.iter().map(|t| t.name.clone()).collect();

        let mut random = [0u8; 16];
        // Without an entropy source the ids of two members could meet; the time is a
        // fallback good enough for tests on such machines.
        if getrandom::getrandom(&mut random).is_err() {
            let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
            random = (nanos.as_nanos() ^ u128::from(std::process::id())).to_be_bytes();
        }
        let member_id = member_id_from_random(u128::from_be_bytes(random));
        let subscription = match &config.topic_regex {
            Some(regex) => Subscription::names(topics).with_regex(regex.clone()),
            None => Subscription::names(topics),
        };
        let mut member_config = ConsumerConfig::new(config.group.clone(), member_id, subscription)
            .with_rebalance_timeout(config.rebalance_timeout);
        if let Some(id) = &config.instance_id {
            member_config = member_config.with_instance_id(id.clone());
        }
        if let Some(rack) = &config.rack_id {
            member_config = member_config.with_rack_id(rack.clone());
        }
        if let Some(assignor) = &config.server_assignor {
            member_config = member_config.with_server_assignor(assignor.clone());
        }
        let mut classic = ClassicConfig::new(config.group.clone(), config.topics.iter().map(|t| t.name.clone()))
            .with_rebalance_timeout(config.rebalance_timeout);
        if let Some(id) = &config.instance_id {
            classic = classic.with_instance_id(id.clone());
        }
        if let Some(rack) = &config.rack_id {
            classic = classic.with_rack_id(rack.clone());
        }
        if let Some(assignors) = &config.assignors {
            classic = classic.with_assignors(assignors.clone());
        }
        if let Some(timeout) = config.session_timeout {
            classic = classic.with_session_timeout(timeout);
        }
        if let Some(interval) = config.heartbeat_interval {
            classic = classic.with_heartbeat_interval(interval);
        }
        let driver = config.driver.clone().with_auto_release(false);
        let member = match config.protocol {
            GroupProtocol::Consumer => GroupMember::start(cluster.clone(), member_config, driver)?,
            GroupProtocol::Classic => GroupMember::start_classic(cluster.clone(), classic, driver)?,
            // The classic protocol has no broker-side regex: no fall back then.
            GroupProtocol::Auto if config.topic_regex.is_some() => {
                GroupMember::start(cluster.clone(), member_config, driver)?
            }
            GroupProtocol::Auto => GroupMember::start_auto(cluster.clone(), member_config, classic, driver)?,
        };
        let mut offsets_config = OffsetsConfig::new(config.group.clone(), member.protocol())
            .with_committers_count(config.committers_count)
            .with_commits_in_flight(config.commits_in_flight);
        if let Some(id) = &config.instance_id {
            offsets_config = offsets_config.with_instance_id(id.clone());
        }

        let group: Arc<str> = Arc::from(config.group.as_str());
        let shared = Arc::new(Shared::default());
        let (commands_tx, commands) = mpsc::unbounded_channel();
        let (failures_tx, failures) = mpsc::unbounded_channel();
        let (reports_tx, reports) = mpsc::unbounded_channel();
        let (alive_tx, alive) = watch::channel(());
        let task = GroupTask {
            group: group.clone(),
            lifecycle: lifecycle::Lifecycle::new(
                config.rebalance_timeout,
                (config.restart_backoff, config.restart_backoff_max),
            ),
            settings: settings.into_iter().map(|s| (s.name.clone(), Arc::new(s))).collect(),
            fetchers,
            matched,
            handler: Arc::new(handler),
            producer,
            cluster,
            member: Some(member),
            tracker: CommitTracker::new(offsets_config.clone()),
            offsets: OffsetFetcher::new(offsets_config),
            commands,
            shared: shared.clone(),
            failures: failures_tx,
            reports_tx,
            reports,
            state: TaskState::new(),
            _alive: alive_tx,
        };
        let span = tracing::info_span!(crate::telemetry::GROUP_SPAN, group = %group);
        let task = tokio::spawn(tracing::Instrument::instrument(task.run(), span));
        Ok(ConsumerGroup {
            group,
            member: Some(GroupMemberAbort(commands_tx.clone())),
            shared,
            commands: Some(commands_tx),
            failures,
            task: Some(task),
            alive,
        })
    }

    /// Starts a member whose topics are all in [`Mode::Manual`]: nothing handles
    /// records inside the group; a driver pulls them through [`lease`](Self::lease).
    /// A topic in handler mode (set on it or by the default topic config) is refused
    /// with [`ConfigError::NoHandler`].
    pub fn start_manual(resources: Resources, config: GroupConfig) -> Result<ConsumerGroup, ConfigError> {
        let default_mode = config.default_topic_config.mode;
        let handled = config.topics.iter().find(|t| t.mode.or(default_mode).unwrap_or_default() != Mode::Manual);
        if let Some(t) = handled {
            return Err(ConfigError::NoHandler(t.name.clone()));
        }
        if config.topic_regex.is_some() && default_mode.unwrap_or_default() != Mode::Manual {
            return Err(ConfigError::NoHandler(config.topic_regex.clone().unwrap_or_default()));
        }
        ConsumerGroup::start(resources, config, Unhandled)
    }

    /// Starts a member as a [`GroupStream`]: every topic runs in [`Mode::Manual`] (a
    /// topic, or the default topic config, that sets [`Mode::Handler`] is refused with
    /// [`ConfigError::NoHandler`]), and the stream yields their batches and the
    /// changes of the assignment in order.
    pub fn start_stream(resources: Resources, mut config: GroupConfig) -> Result<GroupStream, ConfigError> {
        config.default_topic_config.mode.get_or_insert(Mode::Manual);
        ConsumerGroup::start_manual(resources, config).map(GroupStream::new)
    }

    /// Asks the member to shut down gracefully, as [`shutdown`](Self::shutdown) does,
    /// and returns at once; [`wait`](Self::wait) waits for the end. Manual partitions
    /// wait for what was pulled to be committed.
    pub fn close(&self) {
        if let Some(commands) = &self.commands {
            let (tx, _) = oneshot::channel();
            let _ = commands.send(Command::Shutdown(tx));
        }
    }

    /// A lease of `partition` of `topic`, a topic in [`Mode::Manual`]: the right to
    /// pull its batches and commit them (see [`Lease`] for the rules). At most one
    /// lease of a partition is live: a second one while the first holds records not
    /// committed restarts the partition and fails with [`ManualError::Restarting`].
    pub fn lease(&self, topic: &str, partition: i32) -> Result<Lease, ManualError> {
        let tp = TopicPartition::new(topic, partition);
        let slot = self.shared.slots.lock().unwrap_or_else(PoisonError::into_inner).get(&tp).cloned();
        match slot {
            Some(slot) => slot.lease(),
            None if self.assigned_partitions().contains(&tp) => {
                Err(ManualError::NotManual { topic: topic.to_owned(), partition })
            }
            None => Err(ManualError::NotAssigned { topic: topic.to_owned(), partition }),
        }
    }

    /// The group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// The member id (empty until the member joined).
    pub fn member_id(&self) -> String {
        self.shared.member_id.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The member epoch (KIP-848) or generation (classic); 0 while joining.
    pub fn generation(&self) -> i32 {
        *self.shared.epoch.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The protocol the member runs, once it joined (under [`GroupProtocol::Auto`]:
    /// [`GroupProtocol::Consumer`], or [`GroupProtocol::Classic`] after a fall back).
    pub fn protocol(&self) -> Option<GroupProtocol> {
        *self.shared.protocol.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The partitions whose consumers run on this member now, sorted.
    pub fn assigned_partitions(&self) -> Vec<TopicPartition> {
        self.shared.running.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// The next failure of a partition's consumer (`None` once the member ended and
    /// every failure was taken).
    pub async fn next_failure(&mut self) -> Option<PartitionFailure> {
        self.failures.recv().await
    }

    /// Waits until the member ends by itself (it is fenced for good, or the client
    /// closed); `Ok` when it left.
    pub async fn wait(&mut self) -> Result<(), GroupStopped> {
        match self.task.take() {
            Some(task) => join(task).await,
            None => Ok(()),
        }
    }

    /// Shuts the member down gracefully: every partition finishes its batch in hand,
    /// commits what it finished and stops ([`StopReason::Shutdown`]), then the member
    /// leaves the group.
    pub async fn shutdown(mut self) -> Result<(), GroupStopped> {
        let (tx, rx) = oneshot::channel();
        if let Some(commands) = self.commands.take() {
            let _ = commands.send(Command::Shutdown(tx));
        }
        let _ = rx.await;
        match self.task.take() {
            Some(task) => join(task).await,
            None => Ok(()),
        }
    }

    /// Ends the member at once, as a crash would: nothing more is committed, the
    /// member does not leave (the coordinator gives its partitions to others after the
    /// session timeout), and the records handled but not committed are delivered
    /// again to their next owner.
    pub fn abort(mut self) {
        if let Some(GroupMemberAbort(tx)) = self.member.take() {
            let _ = tx.send(Command::Abort);
        }
        self.commands.take();
    }
}

impl ConsumerGroup {
    /// A handle that ends the member at once, as [`abort`](Self::abort) does, without
    /// the member's handle.
    pub fn abort_handle(&self) -> AbortHandle {
        let tx = match &self.member {
            Some(GroupMemberAbort(tx)) => tx.clone(),
            // Aborted already: a handle whose sends go nowhere.
            None => mpsc::unbounded_channel().0,
        };
        AbortHandle(tx)
    }
}

impl Drop for ConsumerGroup {
    fn drop(&mut self) {
        // The task sees its command channel close and shuts down in the background.
        self.member.take();
        self.commands.take();
    }
}

/// The handler of a group whose topics are all manual: never called for records.
struct Unhandled;

impl Handler for Unhandled {
    async fn handle_record_batch(&self, ctx: &BatchContext, _records: Vec<Record>) -> Action {
        tracing::error!(topic = ctx.topic(), partition = ctx.partition(), "records reached a group without a handler");
        Action::Retry
    }
}

fn exclusive(cluster: &Cluster, config: klife_fetcher::FetcherConfig) -> Result<Fetcher, ConfigError> {
    match Fetcher::new(cluster.clone(), config) {
        Ok(fetcher) => Ok(fetcher),
        Err(klife_fetcher::FetchError::Config(e)) => Err(ConfigError::Fetcher(e)),
        Err(other) => unreachable!("a fetcher fails to build only for invalid settings: {other}"),
    }
}

async fn join(task: JoinHandle<Result<(), GroupStopped>>) -> Result<(), GroupStopped> {
    match task.await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(GroupStopped::Aborted),
    }
}
