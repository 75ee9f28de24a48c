//! [`FakeCluster`] and its builder: starting brokers, and every control a test has over
//! them (leaders, brokers down and up, latency, injected errors, truncation, unclean
//! elections) and every
//! view into them (records, committed offsets, requests).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use klife_protocol::{ApiKey, ErrorCode};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::coordinator::{Coordinator, GroupConfig, GroupDescription};
use crate::records::{self, Marker, StoredRecord};
use crate::sasl::{SaslMechanism, Users};
use crate::server::{self, Shared};
use crate::state::{Broker, Clock, Config, Fault, FaultAction, RequestRecord, State};
use crate::tls::TlsIdentity;
use crate::txn::Transactions;
use crate::{Error, handlers};

/// Kafka's default `max.message.bytes` (1 MiB and 12 bytes of log overhead).
pub const DEFAULT_MAX_MESSAGE_BYTES: usize = 1_048_588;

/// The finalized `transaction.version` of a cluster by default: 2, as Apache Kafka 4.x
/// clusters start (KIP-890: the producer epoch goes up at every transaction end).
pub const DEFAULT_TRANSACTION_VERSION: i16 = 2;

/// How often the transaction coordinator looks for transactions open past their
/// timeout by default: 10 s, Kafka's default
/// `transaction.abort.timed.out.transaction.cleanup.interval.ms`.
pub const DEFAULT_TRANSACTION_ABORT_CHECK_INTERVAL: Duration =
    Duration::from_millis(crate::txn::DEFAULT_ABORT_CHECK_INTERVAL_MS.unsigned_abs());

/// The highest `transaction.version` the brokers support.
pub(crate) const MAX_TRANSACTION_VERSION: i16 = 2;

/// A topic to create at start: name, partitions, configs.
type TopicSpec = (String, i32, Vec<(String, String)>);

/// Configures and starts a [`FakeCluster`].
#[derive(Debug, Clone)]
pub struct ClusterBuilder {
    brokers: usize,
    first_node_id: i32,
    topics: Vec<TopicSpec>,
    cluster_id: Option<String>,
    auto_create_topics: bool,
    default_partitions: i32,
    max_message_bytes: usize,
    max_frame_size: usize,
    tls: Option<TlsIdentity>,
    users: Vec<(String, String)>,
    mechanisms: Vec<SaslMechanism>,
    sasl: bool,
    transaction_version: i16,
    groups: GroupConfig,
    manual_clock: bool,
    transaction_abort_check_interval: Duration,
}

impl Default for ClusterBuilder {
    fn default() -> Self {
        ClusterBuilder {
            brokers: 1,
            first_node_id: 0,
            topics: Vec::new(),
            cluster_id: None,
            auto_create_topics: true,
            default_partitions: 1,
            max_message_bytes: DEFAULT_MAX_MESSAGE_BYTES,
            max_frame_size: klife_protocol::frame::DEFAULT_MAX_FRAME_SIZE,
            tls: None,
            users: Vec::new(),
            mechanisms: SaslMechanism::ALL.to_vec(),
            sasl: false,
            transaction_version: DEFAULT_TRANSACTION_VERSION,
            groups: GroupConfig::default(),
            manual_clock: false,
            transaction_abort_check_interval: DEFAULT_TRANSACTION_ABORT_CHECK_INTERVAL,
        }
    }
}

impl ClusterBuilder {
    /// The number of brokers (default 1).
    pub fn brokers(mut self, n: usize) -> Self {
        self.brokers = n;
        self
    }

    /// The first broker's node id; the others follow (default 0: ids `0..n`).
    pub fn first_node_id(mut self, id: i32) -> Self {
        self.first_node_id = id;
        self
    }

    /// A topic created at start, its partitions' leaders spread over the brokers.
    pub fn topic(mut self, name: impl Into<String>, partitions: i32) -> Self {
        self.topics.push((name.into(), partitions, Vec::new()));
        self
    }

    /// A topic created at start with topic configs (`max.message.bytes` is honoured;
    /// others are stored and returned by CreateTopics only).
    pub fn topic_with_configs(mut self, name: impl Into<String>, partitions: i32, configs: &[(&str, &str)]) -> Self {
        let configs = configs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        self.topics.push((name.into(), partitions, configs));
        self
    }

    /// The cluster id Metadata and DescribeCluster report (default: random).
    pub fn cluster_id(mut self, id: impl Into<String>) -> Self {
        self.cluster_id = Some(id.into());
        self
    }

    /// Whether Metadata requests that allow it create unknown topics (Kafka's
    /// `auto.create.topics.enable`, default true), and with how many partitions (Kafka's
    /// `num.partitions`, default 1).
    pub fn auto_create_topics(mut self, enabled: bool, partitions: i32) -> Self {
        self.auto_create_topics = enabled;
        self.default_partitions = partitions;
        self
    }

    /// The largest record batch a topic accepts (Kafka's `max.message.bytes`, default
    /// [`DEFAULT_MAX_MESSAGE_BYTES`]); larger ones get MESSAGE_TOO_LARGE.
    pub fn max_message_bytes(mut self, bytes: usize) -> Self {
        self.max_message_bytes = bytes;
        self
    }

    /// The largest request frame (Kafka's `socket.request.max.bytes`, default 100 MiB);
    /// a larger size prefix closes the connection.
    pub fn max_frame_size(mut self, bytes: usize) -> Self {
        self.max_frame_size = bytes;
        self
    }

    /// Serves TLS with this certificate and key (listener `SSL`, or `SASL_SSL` with
    /// [`sasl_user`](Self::sasl_user)).
    pub fn tls(mut self, identity: TlsIdentity) -> Self {
        self.tls = Some(identity);
        self
    }

    /// Requires SASL authentication, and accepts this user (listener `SASL_PLAINTEXT`,
    /// or `SASL_SSL` with [`tls`](Self::tls)). Call once per user.
    pub fn sasl_user(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.sasl = true;
        self.users.push((user.into(), password.into()));
        self
    }

    /// The SASL mechanisms offered (default: PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512).
    pub fn sasl_mechanisms(mut self, mechanisms: &[SaslMechanism]) -> Self {
        self.mechanisms = mechanisms.to_vec();
        self
    }

    /// The cluster's finalized `transaction.version` (KIP-890), which ApiVersions v3+
    /// reports for clients to choose their transaction protocol: 0, 1 or 2 (default
    /// [`DEFAULT_TRANSACTION_VERSION`], as Apache Kafka 4.x clusters start). As in
    /// Kafka, the coordinator follows each request's version: EndTxn v5+ ends the
    /// transaction with a new producer epoch whatever the level.
    pub fn transaction_version(mut self, level: i16) -> Self {
        self.transaction_version = level;
        self
    }

    /// The heartbeat interval KIP-848 members are told (Kafka's
    /// `group.consumer.heartbeat.interval.ms`, default 5 s). Tests want it small.
    pub fn consumer_heartbeat_interval(mut self, interval: Duration) -> Self {
        self.groups.heartbeat_interval_ms = i32::try_from(interval.as_millis()).unwrap_or(i32::MAX);
        self
    }

    /// The session timeout of KIP-848 members (Kafka's `group.consumer.session.timeout.ms`,
    /// default 45 s), on the cluster clock.
    pub fn consumer_session_timeout(mut self, timeout: Duration) -> Self {
        self.groups.session_timeout_ms = i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
        self
    }

    /// The least time between two target assignments of a KIP-848 group (Kafka's
    /// `group.consumer.assignment.interval.ms`, default 1 s), on the cluster clock.
    /// Until it passes after the last one, a member that joins or leaves bumps the
    /// group epoch but members keep reconciling towards the old target; the first
    /// heartbeat after it computes the new one. A new or emptied group is assigned
    /// at once. Zero assigns on every epoch bump.
    pub fn consumer_assignment_interval(mut self, interval: Duration) -> Self {
        self.groups.assignment_interval_ms = i64::try_from(interval.as_millis()).unwrap_or(i64::MAX);
        self
    }

    /// How long a new classic group waits for more members before its first rebalance
    /// completes (Kafka's `group.initial.rebalance.delay.ms`: 3 s in Kafka, 0 here by
    /// default so that tests need not wait).
    pub fn group_initial_rebalance_delay(mut self, delay: Duration) -> Self {
        self.groups.initial_rebalance_delay_ms = i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        self
    }

    /// The most members a group takes (Kafka's `group.max.size` and
    /// `group.consumer.max.size`, unbounded by default); more get GROUP_MAX_SIZE_REACHED.
    pub fn group_max_size(mut self, members: usize) -> Self {
        self.groups.max_size = members;
        self
    }

    /// Whether ApiVersions advertises ConsumerGroupHeartbeat and ConsumerGroupDescribe
    /// (KIP-848; default true). Without them the cluster is a broker without the new
    /// protocol, and answers both with UNSUPPORTED_VERSION.
    pub fn consumer_group_protocol(mut self, enabled: bool) -> Self {
        self.groups.advertise_consumer_protocol = enabled;
        self
    }

    /// How often the transaction coordinator looks for transactions open past their
    /// timeout, on the cluster clock (Kafka's
    /// `transaction.abort.timed.out.transaction.cleanup.interval.ms`, default
    /// [`DEFAULT_TRANSACTION_ABORT_CHECK_INTERVAL`], 10 s). A transaction is open from
    /// its first AddPartitionsToTxn or AddOffsetsToTxn; once the `transaction_timeout_ms`
    /// of its InitProducerId has passed, the next look aborts it (abort markers, pending
    /// offsets dropped) and bumps its producer epoch, fencing the producer. Tests want
    /// it short, or a [`manual_clock`](Self::manual_clock). At least 1 ms.
    pub fn transaction_abort_check_interval(mut self, interval: Duration) -> Self {
        self.transaction_abort_check_interval = interval;
        self
    }

    /// Runs the cluster clock (group sessions, rebalance timeouts, barriers, transaction
    /// timeouts) by hand: it stands still until [`FakeCluster::advance_clock`] moves it.
    /// By default it follows real time, and `advance_clock` adds to it.
    pub fn manual_clock(mut self) -> Self {
        self.manual_clock = true;
        self
    }

    /// Binds one loopback port per broker and starts serving. Must be called inside a
    /// tokio runtime, which then runs the cluster's tasks.
    pub async fn start(self) -> Result<FakeCluster, Error> {
        if self.brokers == 0 {
            return Err(Error::InvalidArgument("a cluster needs at least one broker".into()));
        }
        if !(0..=MAX_TRANSACTION_VERSION).contains(&self.transaction_version) {
            return Err(Error::InvalidArgument(format!(
                "transaction version {} is not 0, 1 or 2",
                self.transaction_version
            )));
        }
        let abort_check_interval_ms = i64::try_from(self.transaction_abort_check_interval.as_millis())
            .ok()
            .filter(|ms| *ms > 0)
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "transaction abort check interval {:?}: between 1 ms and i64::MAX ms",
                    self.transaction_abort_check_interval
                ))
            })?;
        if self.sasl && self.mechanisms.is_empty() {
            return Err(Error::InvalidArgument("SASL is enabled but no mechanism is".into()));
        }
        let tls = self.tls.as_ref().map(TlsIdentity::acceptor).transpose()?;
        let sasl = if self.sasl { Some(Users::new(&self.users, &self.mechanisms)?) } else { None };
        let mut listeners = Vec::new();
        let mut brokers = BTreeMap::new();
        let mut kills = BTreeMap::new();
        for i in 0..self.brokers {
            let id =
                self.first_node_id + i32::try_from(i).map_err(|_| Error::InvalidArgument("too many brokers".into()))?;
            let listener = TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|source| Error::Bind { address: "127.0.0.1:0".into(), source })?;
            let port =
                listener.local_addr().map_err(|source| Error::Bind { address: "127.0.0.1:0".into(), source })?.port();
            brokers.insert(id, Broker { port, up: true, latency: Duration::ZERO, connections: 0 });
            kills.insert(id, watch::channel(0u64).0);
            listeners.push((id, listener));
        }
        let cluster_id = self.cluster_id.unwrap_or_else(|| (0..22).map(|_| fastrand::alphanumeric()).collect());
        let config = Config {
            cluster_id,
            max_message_bytes: self.max_message_bytes,
            auto_create_topics: self.auto_create_topics,
            default_partitions: self.default_partitions,
            max_frame_size: self.max_frame_size,
            transaction_version: self.transaction_version,
        };
        let mut state = State::new(config, brokers);
        state.coordinator = Coordinator::new(self.groups);
        state.clock = Clock::new(self.manual_clock);
        state.txns = Transactions::new(abort_check_interval_ms, state.clock.now_ms());
        for (name, partitions, configs) in self.topics {
            handlers::validate_topic_name(&name).map_err(Error::InvalidArgument)?;
            if partitions <= 0 {
                return Err(Error::InvalidArgument(format!("topic {name}: {partitions} partitions")));
            }
            let rf = state.default_replication_factor();
            let assignment = state.assign(partitions, rf);
            state.create_topic(&name, assignment, rf, configs.into_iter().collect());
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            changed: watch::channel(0).0,
            groups_changed: watch::channel(0).0,
            kills,
            shutdown: watch::channel(false).0,
            tls,
            sasl,
        });
        let tasks = listeners
            .into_iter()
            .map(|(id, listener)| (id, server::spawn_listener(shared.clone(), id, listener)))
            .collect();
        let ticker = server::spawn_ticker(shared.clone());
        let cluster = FakeCluster { shared, listeners: Mutex::new(tasks), ticker };
        tracing::info!(bootstrap = cluster.bootstrap(), "fake cluster started");
        Ok(cluster)
    }
}

/// An in-process fake Kafka cluster. See the [crate documentation](crate) for what it
/// implements. Dropping it (or [`shutdown`](Self::shutdown)) stops every broker and
/// connection.
#[derive(Debug)]
pub struct FakeCluster {
    shared: Arc<Shared>,
    listeners: Mutex<BTreeMap<i32, JoinHandle<()>>>,
    ticker: JoinHandle<()>,
}

impl Drop for FakeCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

impl FakeCluster {
    /// A builder: one broker, no topics, plaintext, auto-creation on.
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::default()
    }

    fn stop(&self) {
        self.shared.shutdown.send_replace(true);
        self.ticker.abort();
        for (_, task) in self.listeners.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            task.abort();
        }
    }

    /// Stops every broker and drops every connection.
    pub async fn shutdown(self) {
        self.stop();
        let tasks: Vec<JoinHandle<()>> =
            std::mem::take(&mut *self.listeners.lock().unwrap_or_else(PoisonError::into_inner)).into_values().collect();
        for t in tasks {
            let _ = t.await;
        }
    }

    // ----- addresses -----

    /// The bootstrap list: every broker's `127.0.0.1:port`, comma-separated.
    pub fn bootstrap(&self) -> String {
        self.addresses().join(",")
    }

    /// Every broker's `127.0.0.1:port`, by node id.
    pub fn addresses(&self) -> Vec<String> {
        self.shared.lock().brokers.values().map(|b| format!("127.0.0.1:{}", b.port)).collect()
    }

    /// One broker's address.
    pub fn broker_address(&self, broker: i32) -> Result<String, Error> {
        self.shared
            .lock()
            .brokers
            .get(&broker)
            .map(|b| format!("127.0.0.1:{}", b.port))
            .ok_or(Error::UnknownBroker(broker))
    }

    /// The node ids.
    pub fn broker_ids(&self) -> Vec<i32> {
        self.shared.lock().brokers.keys().copied().collect()
    }

    /// The cluster id.
    pub fn cluster_id(&self) -> String {
        self.shared.lock().config.cluster_id.clone()
    }

    /// The controller Metadata reports: the lowest live node id (-1 if none is up).
    pub fn controller_id(&self) -> i32 {
        self.shared.lock().controller()
    }

    /// The listener's security protocol: `PLAINTEXT`, `SSL`, `SASL_PLAINTEXT` or `SASL_SSL`.
    pub fn security_protocol(&self) -> &'static str {
        match (self.shared.tls.is_some(), self.shared.sasl.is_some()) {
            (false, false) => "PLAINTEXT",
            (true, false) => "SSL",
            (false, true) => "SASL_PLAINTEXT",
            (true, true) => "SASL_SSL",
        }
    }

    /// The APIs and version ranges the brokers advertise.
    pub fn supported_apis() -> Vec<(ApiKey, i16, i16)> {
        handlers::SUPPORTED.to_vec()
    }

    // ----- topics and leadership -----

    /// Creates a topic (as CreateTopics would, with the default replication factor).
    pub fn create_topic(&self, name: &str, partitions: i32) -> Result<(), Error> {
        handlers::validate_topic_name(name).map_err(Error::InvalidArgument)?;
        if partitions <= 0 {
            return Err(Error::InvalidArgument(format!("topic {name}: {partitions} partitions")));
        }
        let mut state = self.shared.lock();
        if state.topics.contains_key(name) {
            return Err(Error::InvalidArgument(format!("topic {name} already exists")));
        }
        let rf = state.default_replication_factor();
        let assignment = state.assign(partitions, rf);
        state.create_topic(name, assignment, rf, BTreeMap::new());
        Ok(())
    }

    /// Deletes a topic and creates it again under the same name, with `partitions`
    /// empty partitions and a new topic id, in one step: no client sees the name
    /// unknown in between. Returns the new id.
    pub fn recreate_topic(&self, name: &str, partitions: i32) -> Result<klife_protocol::Uuid, Error> {
        if partitions <= 0 {
            return Err(Error::InvalidArgument(format!("topic {name}: {partitions} partitions")));
        }
        let id = {
            let mut state = self.shared.lock();
            let Some(old) = state.topics.remove(name) else {
                return Err(Error::InvalidArgument(format!("topic {name} does not exist")));
            };
            let rf = old.replication_factor;
            let assignment = state.assign(partitions, rf);
            state.create_topic(name, assignment, rf, old.configs)
        };
        tracing::debug!(topic = name, "topic created again");
        self.shared.notify_changed();
        Ok(id)
    }

    /// The topic names.
    pub fn topics(&self) -> Vec<String> {
        self.shared.lock().topics.keys().cloned().collect()
    }

    /// The configs a topic was created with.
    pub fn topic_configs(&self, topic: &str) -> Option<BTreeMap<String, String>> {
        self.shared.lock().topics.get(topic).map(|t| t.configs.clone())
    }

    /// The number of partitions of a topic.
    pub fn partition_count(&self, topic: &str) -> Option<i32> {
        self.shared.lock().topics.get(topic).map(|t| i32::try_from(t.partitions.len()).unwrap_or(i32::MAX))
    }

    /// The leader of a partition and its leader epoch.
    pub fn leader(&self, topic: &str, partition: i32) -> Result<(i32, i32), Error> {
        self.shared
            .lock()
            .partition(topic, partition)
            .map(|p| (p.leader, p.leader_epoch))
            .ok_or_else(|| Error::UnknownPartition { topic: topic.to_owned(), partition })
    }

    /// Moves a partition's leadership to `broker` (which becomes a replica if it was not),
    /// bumping the leader epoch: requests to the old leader get NOT_LEADER_OR_FOLLOWER,
    /// and requests naming the old epoch FENCED_LEADER_EPOCH.
    pub fn set_leader(&self, topic: &str, partition: i32, broker: i32) -> Result<(), Error> {
        {
            let mut state = self.shared.lock();
            if !state.brokers.contains_key(&broker) {
                return Err(Error::UnknownBroker(broker));
            }
            if !state.set_leader(topic, partition, broker) {
                return Err(Error::UnknownPartition { topic: topic.to_owned(), partition });
            }
        }
        tracing::debug!(topic, partition, broker, "leader moved");
        self.shared.notify_changed();
        Ok(())
    }

    /// Moves a partition's leadership to the next broker (by node id, wrapping).
    pub fn move_leader(&self, topic: &str, partition: i32) -> Result<i32, Error> {
        let (leader, _) = self.leader(topic, partition)?;
        let ids = self.broker_ids();
        let i = ids.iter().position(|id| *id == leader).map_or(0, |i| (i + 1) % ids.len());
        self.set_leader(topic, partition, ids[i])?;
        Ok(ids[i])
    }

    // ----- brokers -----

    /// Takes a broker down: its listener closes (connections are refused), its
    /// connections drop, Metadata from the others stops listing it, and its partitions'
    /// leadership moves to a live replica (epoch bumped), as Kafka's controller does.
    pub fn broker_down(&self, broker: i32) -> Result<(), Error> {
        {
            let mut state = self.shared.lock();
            let b = state.brokers.get_mut(&broker).ok_or(Error::UnknownBroker(broker))?;
            b.up = false;
            state.fail_over(broker);
        }
        if let Some(task) = self.listeners.lock().unwrap_or_else(PoisonError::into_inner).remove(&broker) {
            task.abort();
        }
        self.shared.kill_connections(broker);
        self.shared.notify_changed();
        tracing::debug!(broker, "broker down");
        Ok(())
    }

    /// Brings a broker back on the same port. Partitions left without a live leader get
    /// one; others keep theirs (no preferred-leader election).
    pub async fn broker_up(&self, broker: i32) -> Result<(), Error> {
        let port = {
            let state = self.shared.lock();
            let b = state.brokers.get(&broker).ok_or(Error::UnknownBroker(broker))?;
            if b.up {
                return Ok(());
            }
            b.port
        };
        let address = format!("127.0.0.1:{port}");
        let mut attempt = 0;
        let listener = loop {
            match TcpListener::bind(&address).await {
                Ok(l) => break l,
                Err(source) if attempt >= 50 => return Err(Error::Bind { address, source }),
                Err(_) => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        };
        {
            let mut state = self.shared.lock();
            if let Some(b) = state.brokers.get_mut(&broker) {
                b.up = true;
            }
            state.elect_missing_leaders();
        }
        let task = server::spawn_listener(self.shared.clone(), broker, listener);
        self.listeners.lock().unwrap_or_else(PoisonError::into_inner).insert(broker, task);
        self.shared.notify_changed();
        tracing::debug!(broker, "broker up");
        Ok(())
    }

    /// Drops every open connection of `broker`, or of every broker with `None`. The
    /// brokers keep listening.
    pub fn drop_connections(&self, broker: Option<i32>) {
        let ids = match broker {
            Some(b) => vec![b],
            None => self.broker_ids(),
        };
        for id in ids {
            self.shared.kill_connections(id);
        }
    }

    /// Open connections of a broker.
    pub fn connection_count(&self, broker: i32) -> usize {
        self.shared.lock().brokers.get(&broker).map_or(0, |b| b.connections)
    }

    /// Waits until `broker` counts `n` open connections, looking again after each
    /// reschedule, and says whether it did before `give_up` passed (a bound for a
    /// failing test, not a measure: clients close connections in tasks of their own).
    pub async fn await_connection_count(&self, broker: i32, n: usize, give_up: Duration) -> bool {
        tokio::time::timeout(give_up, async {
            while self.connection_count(broker) != n {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .is_ok()
    }

    /// Delays every answer of `broker` by `latency` (zero to stop).
    pub fn set_latency(&self, broker: i32, latency: Duration) -> Result<(), Error> {
        let mut state = self.shared.lock();
        let b = state.brokers.get_mut(&broker).ok_or(Error::UnknownBroker(broker))?;
        b.latency = latency;
        Ok(())
    }

    // ----- faults -----

    /// Answers the next `codes.len()` requests of `api` (on `broker`, or on any broker
    /// with `None`) with these error codes, one per request, in order, without
    /// executing them. The code goes where the API carries errors: every partition of
    /// Produce, Fetch, ListOffsets, OffsetCommit, TxnOffsetCommit and AddPartitionsToTxn;
    /// every topic of Metadata and the topic admin APIs; every key of a batched
    /// FindCoordinator; every group of DescribeGroups, ConsumerGroupDescribe and
    /// DeleteGroups; the top-level error code otherwise.
    pub fn inject_errors(&self, api: ApiKey, codes: &[ErrorCode], broker: Option<i32>) {
        let mut state = self.shared.lock();
        for code in codes {
            state.faults.push_back(Fault { api, broker, action: FaultAction::Error(*code) });
        }
    }

    /// Closes the connection instead of answering the next request of `api` (on
    /// `broker`, or on any broker with `None`). The request is not executed.
    pub fn inject_disconnect(&self, api: ApiKey, broker: Option<i32>) {
        self.shared.lock().faults.push_back(Fault { api, broker, action: FaultAction::Disconnect });
    }

    /// Executes the next request of `api` (on `broker`, or on any broker with `None`),
    /// then closes the connection instead of answering: the client cannot know whether
    /// it was executed (a retried Produce is then a duplicate).
    pub fn inject_lost_answer(&self, api: ApiKey, broker: Option<i32>) {
        self.shared.lock().faults.push_back(Fault { api, broker, action: FaultAction::DisconnectAfter });
    }

    /// Forgets every fault not yet applied.
    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    /// Faults not yet applied.
    pub fn pending_faults(&self) -> usize {
        self.shared.lock().faults.len()
    }

    // ----- logs -----

    /// Fetch sessions (KIP-227) the brokers hold.
    pub fn fetch_sessions(&self) -> usize {
        self.shared.lock().fetch_sessions.len()
    }

    /// Drops every fetch session, as brokers evicting them from their caches would:
    /// the next incremental request of each gets FETCH_SESSION_ID_NOT_FOUND.
    pub fn evict_fetch_sessions(&self) {
        self.shared.lock().fetch_sessions.clear();
    }

    /// Deletes records before `offset` (as DeleteRecords or retention would): the log
    /// start offset moves there (at most to the high watermark). Returns the new log
    /// start offset.
    pub fn truncate_before(&self, topic: &str, partition: i32, offset: i64) -> Result<i64, Error> {
        let mut state = self.shared.lock();
        let p = state
            .partition_mut(topic, partition)
            .ok_or_else(|| Error::UnknownPartition { topic: topic.to_owned(), partition })?;
        Ok(p.log.truncate_before(offset))
    }

    /// Makes a partition lose its records from `offset` on through an unclean leader
    /// election, as when the only in-sync replica dies and a follower that had not
    /// replicated them takes over: the next live replica becomes leader under a new
    /// leader epoch, with a log that ends at the start of the batch holding `offset`
    /// (logs are cut between batches). Records written afterwards get the new epoch and
    /// the offsets of the ones lost. Consumers that had read past the cut are told by
    /// Fetch (v12+, with their last fetched epoch) where their log and the leader's
    /// part, as Kafka tells them. Returns the new leader, its epoch and the log end
    /// offset.
    pub fn truncate_unclean(&self, topic: &str, partition: i32, offset: i64) -> Result<(i32, i32, i64), Error> {
        let elected = self
            .shared
            .lock()
            .truncate_unclean(topic, partition, offset)
            .ok_or_else(|| Error::UnknownPartition { topic: topic.to_owned(), partition })?;
        tracing::debug!(topic, partition, leader = elected.0, epoch = elected.1, end = elected.2, "unclean election");
        self.shared.notify_changed();
        Ok(elected)
    }

    /// The leader epoch cache of a partition's log: (epoch, its first offset), oldest
    /// first, as Kafka keeps it.
    pub fn leader_epochs(&self, topic: &str, partition: i32) -> Result<Vec<(i32, i64)>, Error> {
        let state = self.shared.lock();
        let p = state
            .partition(topic, partition)
            .ok_or_else(|| Error::UnknownPartition { topic: topic.to_owned(), partition })?;
        Ok(p.log.epochs().to_vec())
    }

    /// (log start offset, last stable offset, high watermark) of a partition.
    pub fn offsets(&self, topic: &str, partition: i32) -> Result<(i64, i64, i64), Error> {
        let state = self.shared.lock();
        let p = state
            .partition(topic, partition)
            .ok_or_else(|| Error::UnknownPartition { topic: topic.to_owned(), partition })?;
        Ok((p.log.log_start_offset(), p.log.last_stable_offset(), p.log.high_watermark()))
    }

    /// The high watermark of a partition.
    pub fn high_watermark(&self, topic: &str, partition: i32) -> Result<i64, Error> {
        self.offsets(topic, partition).map(|o| o.2)
    }

    /// Every data record of a topic (control records left out), by partition then offset.
    pub fn records(&self, topic: &str) -> Vec<StoredRecord> {
        self.find_records(|r| r.topic == topic)
    }

    /// Every data record of one partition, by offset.
    pub fn partition_records(&self, topic: &str, partition: i32) -> Vec<StoredRecord> {
        self.find_records(|r| r.topic == topic && r.partition == partition)
    }

    /// Every data record of every topic for which `filter` holds.
    pub fn find_records(&self, mut filter: impl FnMut(&StoredRecord) -> bool) -> Vec<StoredRecord> {
        let state = self.shared.lock();
        let mut out = Vec::new();
        for (name, topic) in &state.topics {
            for (i, p) in topic.partitions.iter().enumerate() {
                let partition = i32::try_from(i).unwrap_or(i32::MAX);
                records::decode_log(name, partition, &p.log, |r| {
                    if !r.is_control && filter(&r) {
                        out.push(r);
                    }
                });
            }
        }
        out
    }

    /// Data records of `topic` with this key.
    pub fn records_with_key(&self, topic: &str, key: &[u8]) -> Vec<StoredRecord> {
        self.find_records(|r| r.topic == topic && r.key.as_deref() == Some(key))
    }

    /// Data records of `topic` with this value.
    pub fn records_with_value(&self, topic: &str, value: &[u8]) -> Vec<StoredRecord> {
        self.find_records(|r| r.topic == topic && r.value.as_deref() == Some(value))
    }

    /// Data records of `topic` with a header `key` whose value is `value`.
    pub fn records_with_header(&self, topic: &str, key: &str, value: &[u8]) -> Vec<StoredRecord> {
        self.find_records(|r| r.topic == topic && r.header(key) == Some(value))
    }

    /// The transaction markers (COMMIT / ABORT control records) of a partition.
    pub fn markers(&self, topic: &str, partition: i32) -> Vec<Marker> {
        let state = self.shared.lock();
        let mut out = Vec::new();
        if let Some(p) = state.partition(topic, partition) {
            records::decode_log(topic, partition, &p.log, |r| {
                if let Some(m) = Marker::from_record(&r) {
                    out.push(m);
                }
            });
        }
        out
    }

    // ----- groups and transactions -----

    /// A group's committed offsets: (topic, partition) → offset.
    pub fn committed_offsets(&self, group: &str) -> BTreeMap<(String, i32), i64> {
        self.shared
            .lock()
            .groups
            .get(group)
            .map(|g| g.iter().map(|(k, c)| (k.clone(), c.offset)).collect())
            .unwrap_or_default()
    }

    /// The coordinator node of a group or transactional id.
    pub fn coordinator(&self, key: &str) -> Option<i32> {
        self.shared.lock().coordinator(key)
    }

    /// Makes `broker` the coordinator of `group` (FindCoordinator says so, and the old
    /// coordinator answers NOT_COORDINATOR). The group's members and offsets move with
    /// it, as a coordinator loading the group from the offsets topic would have them.
    pub fn move_group_coordinator(&self, group: &str, broker: i32) -> Result<(), Error> {
        let mut state = self.shared.lock();
        if !state.brokers.contains_key(&broker) {
            return Err(Error::UnknownBroker(broker));
        }
        state.coordinator_overrides.insert(group.to_owned(), broker);
        tracing::debug!(group, broker, "group coordinator moved");
        Ok(())
    }

    /// A group's membership as the coordinator has it: protocol, state, epoch or
    /// generation, members with their epochs and assignments. `None` for a group
    /// without membership (offsets only, or unknown).
    pub fn describe_group(&self, group: &str) -> Option<GroupDescription> {
        let state = self.shared.lock();
        state.coordinator.describe(group, &state.topic_view())
    }

    /// Starts a rebalance of `group`: a classic group goes to PreparingRebalance (its
    /// members learn it from REBALANCE_IN_PROGRESS); a KIP-848 group's epoch goes up
    /// and every member reconciles to it on its next heartbeat. False if the group has
    /// no members.
    pub fn force_rebalance(&self, group: &str) -> bool {
        let done = {
            let mut state = self.shared.lock();
            let now = state.clock.now_ms();
            state.coordinator.force_rebalance(group, now)
        };
        self.shared.notify_groups();
        done
    }

    /// Removes a member from its group as the expiry of its session would (its
    /// partitions or place go to the others). False if there is no such member.
    pub fn expire_member(&self, group: &str, member_id: &str) -> bool {
        let done = {
            let mut state = self.shared.lock();
            let now = state.clock.now_ms();
            state.coordinator.expire_member(group, member_id, now)
        };
        self.shared.notify_groups();
        done
    }

    /// Answers every ConsumerGroupHeartbeat (and each group of a ConsumerGroupDescribe)
    /// with UNSUPPORTED_VERSION while still advertising the API (true), as a Kafka broker
    /// whose coordinator does not run the consumer protocol does: for testing a client's
    /// fall back to the classic protocol.
    pub fn refuse_consumer_group_heartbeat(&self, refuse: bool) {
        self.shared.lock().coordinator.config.refuse_consumer_protocol = refuse;
    }

    /// Sets the heartbeat interval KIP-848 members are told from now on (see
    /// [`ClusterBuilder::consumer_heartbeat_interval`]).
    pub fn set_consumer_heartbeat_interval(&self, interval: Duration) {
        self.shared.lock().coordinator.config.heartbeat_interval_ms =
            i32::try_from(interval.as_millis()).unwrap_or(i32::MAX);
    }

    /// Sets the KIP-848 session timeout, for sessions refreshed from now on (see
    /// [`ClusterBuilder::consumer_session_timeout`]).
    pub fn set_consumer_session_timeout(&self, timeout: Duration) {
        self.shared.lock().coordinator.config.session_timeout_ms =
            i64::try_from(timeout.as_millis()).unwrap_or(i64::MAX);
    }

    /// Sets the KIP-848 assignment interval from now on (see
    /// [`ClusterBuilder::consumer_assignment_interval`]).
    pub fn set_consumer_assignment_interval(&self, interval: Duration) {
        self.shared.lock().coordinator.config.assignment_interval_ms =
            i64::try_from(interval.as_millis()).unwrap_or(i64::MAX);
    }

    /// Moves the cluster clock forward by `by`, then runs the timers that fell due
    /// (sessions expire, barriers complete, the transaction coordinator's look for
    /// timed-out transactions if its interval passed) before returning.
    pub fn advance_clock(&self, by: Duration) {
        self.shared.lock().clock.advance(by);
        self.shared.run_timers();
        self.shared.notify_groups();
    }

    /// The cluster clock: milliseconds since the Unix epoch, plus what
    /// [`advance_clock`](Self::advance_clock) added.
    pub fn clock_ms(&self) -> i64 {
        self.shared.lock().clock.now_ms()
    }

    /// The producer id and epoch of every transactional id.
    pub fn transactional_producers(&self) -> BTreeMap<String, (i64, i16)> {
        self.shared.lock().txns.producers()
    }

    // ----- requests -----

    /// Every request received so far, in order of arrival.
    pub fn requests(&self) -> Vec<RequestRecord> {
        self.shared.lock().requests.clone()
    }

    /// How many requests of `api` the cluster received.
    pub fn request_count(&self, api: ApiKey) -> usize {
        self.shared.lock().requests.iter().filter(|r| r.api_key == api).count()
    }

    /// How many requests of `api` `broker` received.
    pub fn request_count_on(&self, api: ApiKey, broker: i32) -> usize {
        self.shared.lock().requests.iter().filter(|r| r.api_key == api && r.broker == broker).count()
    }

    /// Forgets the requests received so far.
    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }
}
