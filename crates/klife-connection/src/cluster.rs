//! The cluster view: bootstrap, the metadata cache and its refreshes, connections by
//! node id, partition leaders and group/transaction coordinators.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use klife_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use klife_protocol::messages::metadata_request::{MetadataRequest, MetadataRequestTopic};
use klife_protocol::{ApiKey, ErrorCode, RetryAction};

use crate::broker::BrokerPool;
use crate::conn::Connection;
use crate::metadata::Metadata;
use crate::retry::{GiveUp, Outcome, RetryState, Step};
use crate::sync::{self, lock};
use crate::{ConnectionConfig, Error, telemetry};

/// Highest Metadata version klife asks for.
const METADATA_MAX_VERSION: i16 = 12;

/// Which coordinator to look up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CoordinatorType {
    /// A consumer group's coordinator (key: the group id).
    Group,
    /// A transactional producer's coordinator (key: the transactional id).
    Transaction,
}

impl std::fmt::Display for CoordinatorType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            CoordinatorType::Group => "group",
            CoordinatorType::Transaction => "transaction",
        })
    }
}

impl CoordinatorType {
    fn code(self) -> i8 {
        match self {
            CoordinatorType::Group => 0,
            CoordinatorType::Transaction => 1,
        }
    }
}

/// A partition's leader, as [`Cluster::leader`] finds it in the metadata.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Leader {
    /// The leader's node id.
    pub node_id: i32,
    /// The partition's leader epoch the metadata gave with it (-1 when the broker
    /// does not say).
    pub leader_epoch: i32,
    /// A connection to the leader (a shared one, round-robin).
    pub connection: Connection,
}

/// A group or transaction coordinator, as [`Cluster::coordinator`] finds it.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Coordinator {
    /// The coordinator's node id.
    pub node_id: i32,
    /// A connection to it (a shared one, round-robin).
    pub connection: Connection,
}

/// The identity of an ordered [`Lane`]: unique among the lanes of a cluster handle
/// (and its clones), never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LaneId(u64);

impl std::fmt::Display for LaneId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "lane {}", self.0)
    }
}

/// An ordered lane to one broker, owned by whoever opened it with
/// [`Cluster::open_lane`] (a producer's batcher, a group's link to its coordinator).
///
/// The lane has a connection of its own, opened when first asked for, reopened (with
/// the reconnect backoff) after it breaks, and never shared with another lane or with
/// the round-robin connections of [`Cluster::broker`]: requests queued on it in turn
/// reach the broker in that order, and a broker serves different lanes side by side.
/// Dropping the lane lets its connection go: it closes once no clone of it is left and
/// no answer is awaited on it. [`Cluster::close`] closes it at once.
///
/// The lane does not keep the cluster alive: once every [`Cluster`] handle is gone,
/// [`connection`](Self::connection) fails with [`Error::Closed`].
pub struct Lane {
    cluster: Weak<Inner>,
    node_id: i32,
    id: LaneId,
}

impl std::fmt::Debug for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lane").field("node_id", &self.node_id).field("id", &self.id).finish()
    }
}

impl Lane {
    /// The broker the lane goes to.
    pub fn node_id(&self) -> i32 {
        self.node_id
    }

    /// The lane's identity.
    pub fn id(&self) -> LaneId {
        self.id
    }

    /// The lane's connection: the same one while it lives, a new one after it broke
    /// (or after the broker moved to another address).
    pub async fn connection(&self) -> Result<Connection, Error> {
        let inner = self.cluster.upgrade().ok_or(Error::Closed)?;
        let pool = Cluster { inner }.pool(self.node_id)?;
        pool.lane_connection(self.id).await
    }
}

impl Drop for Lane {
    fn drop(&mut self) {
        if let Some(inner) = self.cluster.upgrade() {
            let pool = lock(&inner.brokers).get(&self.node_id).cloned();
            if let Some(pool) = pool {
                pool.remove_lane(self.id);
            }
        }
    }
}

/// A handle to a cluster, cheap to clone.
///
/// `Cluster::connect` bootstraps from the given addresses; from then on connections
/// are made to the brokers the metadata names, on demand, and metadata is refreshed
/// every `metadata_max_age` and whenever a caller reports stale metadata through
/// [`Cluster::refresh_metadata`]. Concurrent refresh calls share one request.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.metadata();
        f.debug_struct("Cluster").field("cluster_id", &m.cluster_id).field("brokers", &m.brokers.len()).finish()
    }
}

/// The number of a full metadata refresh and what it gave.
type LastRefresh = (u64, Result<Arc<Metadata>, Error>);

struct Inner {
    config: Arc<ConnectionConfig>,
    bootstrap: Vec<Arc<BrokerPool>>,
    metadata: RwLock<Arc<Metadata>>,
    brokers: Mutex<HashMap<i32, Arc<BrokerPool>>>,
    topics: Mutex<BTreeSet<String>>,
    /// Serializes metadata requests; holds the last full refresh: its number and result.
    refresh_lock: tokio::sync::Mutex<Option<LastRefresh>>,
    /// Full refreshes started so far.
    refreshes_started: AtomicU64,
    coordinators: Mutex<HashMap<(CoordinatorType, String), i32>>,
    /// The id of the next lane opened.
    next_lane: AtomicU64,
    closed: Arc<AtomicBool>,
    /// Stops the background tasks: set by `close`, and dropped with the last handle.
    stop: tokio::sync::watch::Sender<bool>,
}

/// Splits `host:port` (or `[v6]:port`).
pub fn parse_address(address: &str) -> Result<(String, u16), Error> {
    let bad = || Error::InvalidAddress { address: address.to_owned() };
    let a = address.trim();
    let (host, port) = if let Some(rest) = a.strip_prefix('[') {
        let (h, p) = rest.split_once("]:").ok_or_else(bad)?;
        (h, p)
    } else {
        a.rsplit_once(':').ok_or_else(bad)?
    };
    if host.is_empty() {
        return Err(bad());
    }
    let port = port.parse::<u16>().map_err(|_| bad())?;
    Ok((host.to_owned(), port))
}

impl Cluster {
    /// Connects to the cluster through the first bootstrap address that answers a
    /// Metadata request, and starts the periodic metadata refresh.
    ///
    /// Fails with [`Error::Bootstrap`], listing each address and its error, when none
    /// answers.
    pub async fn connect<S: AsRef<str>>(bootstrap: &[S], config: ConnectionConfig) -> Result<Cluster, Error> {
        Cluster::connect_with_tasks(bootstrap, config).await.map(|(cluster, _refresh)| cluster)
    }

    /// [`connect`](Self::connect), with the metadata refresh task's handle.
    async fn connect_with_tasks<S: AsRef<str>>(
        bootstrap: &[S],
        config: ConnectionConfig,
    ) -> Result<(Cluster, tokio::task::JoinHandle<()>), Error> {
        config.validate()?;
        if bootstrap.is_empty() {
            return Err(Error::Config(crate::ConfigError::new(
                "Cluster::connect",
                "bootstrap",
                crate::ConfigProblem::Empty,
            )));
        }
        let config = Arc::new(config);
        let closed = Arc::new(AtomicBool::new(false));
        let pools = bootstrap
            .iter()
            .map(|a| {
                let (host, port) = parse_address(a.as_ref())?;
                Ok(Arc::new(BrokerPool::new(
                    format!("{host}:{port}"),
                    None,
                    host,
                    port,
                    config.clone(),
                    closed.clone(),
                )))
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let inner = Arc::new(Inner {
            config,
            bootstrap: pools,
            metadata: RwLock::new(Arc::new(Metadata::default())),
            brokers: Mutex::new(HashMap::new()),
            topics: Mutex::new(BTreeSet::new()),
            refresh_lock: tokio::sync::Mutex::new(None),
            refreshes_started: AtomicU64::new(0),
            coordinators: Mutex::new(HashMap::new()),
            next_lane: AtomicU64::new(0),
            closed,
            stop: tokio::sync::watch::channel(false).0,
        });
        let cluster = Cluster { inner };
        let mut attempts = Vec::new();
        for pool in &cluster.inner.bootstrap {
            match cluster.fetch_metadata_from(pool).await {
                Ok(m) => {
                    cluster.install(m);
                    let refresh = tokio::spawn(refresh_loop(
                        Arc::downgrade(&cluster.inner),
                        cluster.inner.stop.subscribe(),
                        cluster.inner.config.metadata_max_age,
                    ));
                    return Ok((cluster, refresh));
                }
                Err(e) => attempts.push((pool.label().to_owned(), e)),
            }
        }
        Err(Error::Bootstrap { attempts })
    }

    /// The connection settings.
    pub fn config(&self) -> &ConnectionConfig {
        &self.inner.config
    }

    /// The current metadata snapshot.
    pub fn metadata(&self) -> Arc<Metadata> {
        sync::read(&self.inner.metadata).clone()
    }

    fn ensure_open(&self) -> Result<(), Error> {
        if self.inner.closed.load(Ordering::Acquire) { Err(Error::Closed) } else { Ok(()) }
    }

    fn install(&self, newer: Metadata) {
        let merged = {
            let mut guard = sync::write(&self.inner.metadata);
            let merged = Arc::new(guard.merge(newer));
            *guard = merged.clone();
            merged
        };
        // Drop pools of brokers that left or moved (never while holding the metadata
        // lock: `broker()` takes the two locks in the other order).
        lock(&self.inner.brokers)
            .retain(|id, pool| merged.brokers.get(id).is_some_and(|b| pool.address() == (b.host.as_str(), b.port)));
    }

    fn topics_of_interest(&self) -> Vec<String> {
        lock(&self.inner.topics).iter().cloned().collect()
    }

    async fn fetch_metadata_from(&self, pool: &BrokerPool) -> Result<Metadata, Error> {
        let conn = pool.connection().await?;
        self.fetch_metadata(&conn, Some(&self.topics_of_interest())).await
    }

    /// Sends a Metadata request for `topics` (`None`: every topic) on `conn`.
    async fn fetch_metadata(&self, conn: &Connection, topics: Option<&[String]>) -> Result<Metadata, Error> {
        let version = conn.version_for(ApiKey::Metadata, Some(METADATA_MAX_VERSION))?;
        let topics = topics.map(|ts| {
            ts.iter().map(|t| MetadataRequestTopic::default().with_name(Some(t.clone()))).collect::<Vec<_>>()
        });
        let mut req = MetadataRequest::default().with_topics(topics);
        if version >= 4 {
            req = req.with_allow_auto_topic_creation(self.inner.config.allow_auto_topic_creation);
        }
        let resp = conn.send_version(&req, version).await;
        telemetry::record_metadata_refresh(resp.is_ok());
        Ok(Metadata::from_response(&resp?))
    }

    /// Refreshes the metadata of the known topics (and brokers).
    ///
    /// Callers that race share requests: a caller that arrives while a refresh is in
    /// flight waits for it, then shares the result of the next refresh that *starts*
    /// after its arrival (so it never gets an answer older than its question), errors
    /// included.
    pub async fn refresh_metadata(&self) -> Result<Arc<Metadata>, Error> {
        self.ensure_open()?;
        let arrived = self.inner.refreshes_started.load(Ordering::Acquire);
        let mut last = self.inner.refresh_lock.lock().await;
        if let Some((number, result)) = last.as_ref() {
            if *number > arrived {
                return result.clone();
            }
        }
        let number = self.inner.refreshes_started.fetch_add(1, Ordering::AcqRel) + 1;
        let topics = self.topics_of_interest();
        let result = match self.fetch_anywhere(Some(&topics)).await {
            Ok(m) => {
                self.install(m);
                Ok(self.metadata())
            }
            Err(e) => Err(e),
        };
        *last = Some((number, result.clone()));
        result
    }

    /// Adds topics to those whose metadata is kept, and fetches theirs now.
    pub async fn add_topics<S: AsRef<str>>(&self, topics: &[S]) -> Result<Arc<Metadata>, Error> {
        self.ensure_open()?;
        let names: Vec<String> = topics.iter().map(|t| t.as_ref().to_owned()).collect();
        lock(&self.inner.topics).extend(names.iter().cloned());
        // Serialized with full refreshes, but not counted as one: it covers only `names`.
        let _serialized = self.inner.refresh_lock.lock().await;
        let m = self.fetch_anywhere(Some(&names)).await?;
        self.install(m);
        Ok(self.metadata())
    }

    /// Fetches metadata for every topic in the cluster (without adding them to the
    /// kept set).
    pub async fn all_topics_metadata(&self) -> Result<Metadata, Error> {
        self.ensure_open()?;
        self.fetch_anywhere(None).await
    }

    /// Tries known brokers, then the bootstrap addresses.
    async fn fetch_anywhere(&self, topics: Option<&[String]>) -> Result<Metadata, Error> {
        let mut attempts = Vec::new();
        let ids: Vec<i32> = self.metadata().brokers.keys().copied().collect();
        let start = if ids.is_empty() { 0 } else { fastrand::usize(..ids.len()) };
        for k in 0..ids.len() {
            let id = ids[(start + k) % ids.len()];
            // The ids come from the metadata: no refresh for an unknown one.
            let conn = match self.pool(id) {
                Ok(pool) => pool.connection().await,
                Err(e) => Err(e),
            };
            match conn {
                Ok(conn) => match self.fetch_metadata(&conn, topics).await {
                    Ok(m) => return Ok(m),
                    Err(e) => attempts.push((conn.broker().to_owned(), e)),
                },
                Err(e) => attempts.push((format!("broker {id}"), e)),
            }
        }
        for pool in &self.inner.bootstrap {
            match pool.connection().await {
                Ok(conn) => match self.fetch_metadata(&conn, topics).await {
                    Ok(m) => return Ok(m),
                    Err(e) => attempts.push((pool.label().to_owned(), e)),
                },
                Err(e) => attempts.push((pool.label().to_owned(), e)),
            }
        }
        Err(Error::Bootstrap { attempts })
    }

    /// A connection to the broker with this node id.
    pub async fn broker(&self, node_id: i32) -> Result<Connection, Error> {
        self.known_pool(node_id).await?.connection().await
    }

    /// The pool of broker `node_id`; a node the cached metadata does not list (named
    /// by a FindCoordinator or Metadata answer newer than the cache) makes the cluster
    /// read its metadata once before it is [`Error::UnknownBroker`].
    async fn known_pool(&self, node_id: i32) -> Result<Arc<BrokerPool>, Error> {
        match self.pool(node_id) {
            Err(Error::UnknownBroker { .. }) => {
                self.refresh_metadata().await?;
                self.pool(node_id)
            }
            other => other,
        }
    }

    /// A connection to the broker kept for Fetch requests, apart from the others: a
    /// broker answers one connection's requests in order, so a fetch waiting for
    /// records (`max_wait`) would otherwise delay the requests behind it. Fetches that
    /// may wait (`long_poll`) get one connection, fetches expected to be answered at
    /// once another.
    pub async fn fetch_connection(&self, node_id: i32, long_poll: bool) -> Result<Connection, Error> {
        self.known_pool(node_id).await?.fetch_connection(long_poll).await
    }

    /// Opens an ordered [`Lane`] to broker `node_id`, owned by the caller: a
    /// connection of its own (opened on first use), on which requests queued in turn
    /// reach the broker in that order, which a round-robin [`broker`](Self::broker)
    /// connection does not promise when `connection_count` is above 1. A broker serves
    /// each connection's requests one at a time, so different lanes are served side by
    /// side, and no two owners share a lane. Dropping the lane lets its connection go.
    ///
    /// An unknown broker is reported by [`Lane::connection`], not here.
    pub fn open_lane(&self, node_id: i32) -> Lane {
        let id = LaneId(self.inner.next_lane.fetch_add(1, Ordering::Relaxed));
        Lane { cluster: Arc::downgrade(&self.inner), node_id, id }
    }

    fn pool(&self, node_id: i32) -> Result<Arc<BrokerPool>, Error> {
        self.ensure_open()?;
        // Read the metadata before taking the pools' lock: `install` takes them in the
        // other order.
        let metadata = self.metadata();
        let pool = {
            let mut pools = lock(&self.inner.brokers);
            match pools.get(&node_id) {
                Some(p) => p.clone(),
                None => {
                    let b = metadata.brokers.get(&node_id).ok_or(Error::UnknownBroker { node_id })?;
                    let p = Arc::new(BrokerPool::new(
                        b.label(),
                        Some(node_id),
                        b.host.clone(),
                        b.port,
                        self.inner.config.clone(),
                        self.inner.closed.clone(),
                    ));
                    pools.insert(node_id, p.clone());
                    p
                }
            }
        };
        Ok(pool)
    }

    /// A connection to any reachable broker (a random one first).
    pub async fn any_broker(&self) -> Result<Connection, Error> {
        self.ensure_open()?;
        let ids: Vec<i32> = self.metadata().brokers.keys().copied().collect();
        let mut last = None;
        let start = if ids.is_empty() { 0 } else { fastrand::usize(..ids.len()) };
        for k in 0..ids.len() {
            match self.broker(ids[(start + k) % ids.len()]).await {
                Ok(c) => return Ok(c),
                Err(e) => last = Some(e),
            }
        }
        for pool in &self.inner.bootstrap {
            match pool.connection().await {
                Ok(c) => return Ok(c),
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or(Error::NoBrokers))
    }

    /// A connection to the controller (or to any broker when the metadata names no
    /// reachable controller: KRaft clusters forward admin requests).
    pub async fn controller(&self) -> Result<Connection, Error> {
        let m = self.metadata();
        let id = m.controller_id;
        // Some brokers name a controller that is not among the brokers they list.
        if m.brokers.contains_key(&id) { self.broker(id).await } else { self.any_broker().await }
    }

    /// The leader of a partition: its node id, the leader epoch and a connection to
    /// it. Unknown topics are looked up once before failing.
    pub async fn leader(&self, topic: &str, partition: i32) -> Result<Leader, Error> {
        self.ensure_open()?;
        let mut m = self.metadata();
        if !m.topics.contains_key(topic) {
            m = self.add_topics(&[topic]).await?;
        }
        let Some(t) = m.topics.get(topic) else {
            return Err(Error::UnknownTopic { topic: topic.to_owned() });
        };
        if t.error != ErrorCode::None {
            return Err(Error::Broker {
                broker: "metadata".into(),
                api: ApiKey::Metadata,
                code: t.error,
                message: Some(format!("topic {topic:?}")),
            });
        }
        let Some(p) = t.partition(partition) else {
            return Err(Error::UnknownPartition { topic: topic.to_owned(), partition, partitions: t.partitions.len() });
        };
        if p.leader < 0 || !m.brokers.contains_key(&p.leader) {
            // No leader, or one missing from the broker list (it is down).
            return Err(Error::PartitionUnavailable {
                topic: topic.to_owned(),
                partition,
                code: ErrorCode::LeaderNotAvailable,
                leader: (p.leader >= 0).then_some(p.leader),
            });
        }
        let (node_id, leader_epoch) = (p.leader, p.leader_epoch);
        Ok(Leader { node_id, leader_epoch, connection: self.broker(node_id).await? })
    }

    /// The coordinator for `key`, from the cache or FindCoordinator (retried under the
    /// cluster's [`retry_policy`](Self::retry_policy)): its node id and a connection to it.
    pub async fn coordinator(&self, kind: CoordinatorType, key: &str) -> Result<Coordinator, Error> {
        self.ensure_open()?;
        let cached = lock(&self.inner.coordinators).get(&(kind, key.to_owned())).copied();
        let id =
            match cached {
                Some(id) => id,
                None => {
                    self.find_coordinators(kind, &[key]).await?.into_iter().next().map(|(_, r)| r).unwrap_or_else(
                        || Err(Error::CoordinatorNotFound { kind, key: key.to_owned(), source: None }),
                    )?
                }
            };
        Ok(Coordinator { node_id: id, connection: self.broker(id).await? })
    }

    /// The coordinator for `key` from the cache, or from one FindCoordinator request
    /// (no retry: the caller's retry rule decides).
    pub(crate) async fn coordinator_once(&self, kind: CoordinatorType, key: &str) -> Result<Coordinator, Error> {
        self.ensure_open()?;
        let cached = lock(&self.inner.coordinators).get(&(kind, key.to_owned())).copied();
        let id = match cached {
            Some(id) => id,
            None => {
                let (broker, answers) = self.find_coordinators_once(kind, &[key.to_owned()]).await?;
                match answers.into_iter().find(|a| a.0 == key) {
                    Some((_, ErrorCode::None, node, _)) => {
                        lock(&self.inner.coordinators).insert((kind, key.to_owned()), node);
                        node
                    }
                    Some((_, code, _, message)) => {
                        let source = Error::Broker { broker, api: ApiKey::FindCoordinator, code, message };
                        return Err(Error::CoordinatorNotFound {
                            kind,
                            key: key.to_owned(),
                            source: Some(Box::new(source)),
                        });
                    }
                    None => return Err(Error::CoordinatorNotFound { kind, key: key.to_owned(), source: None }),
                }
            }
        };
        Ok(Coordinator { node_id: id, connection: self.broker(id).await? })
    }

    /// Forgets a cached coordinator (after NOT_COORDINATOR or a broken connection).
    pub fn invalidate_coordinator(&self, kind: CoordinatorType, key: &str) {
        lock(&self.inner.coordinators).remove(&(kind, key.to_owned()));
    }

    /// Looks up the coordinators of several keys, in one request where the broker
    /// supports batching (FindCoordinator v4+), one request per key otherwise.
    /// Keys whose coordinator is loading or unavailable are asked for again under the
    /// retry rule ([`retry`](crate::retry), the cluster's
    /// [`retry_policy`](Self::retry_policy)); a key that never gets one is
    /// [`Error::CoordinatorNotFound`] (inside [`Error::RetriesExhausted`] when time ran
    /// out), with the last answer's code as the source. The answers come in the order
    /// of `keys`, whichever was found first.
    pub async fn find_coordinators<S: AsRef<str>>(
        &self,
        kind: CoordinatorType,
        keys: &[S],
    ) -> Result<Vec<(String, Result<i32, Error>)>, Error> {
        self.ensure_open()?;
        let mut pending: Vec<(String, Option<Error>)> = keys.iter().map(|k| (k.as_ref().to_owned(), None)).collect();
        let mut done: Vec<(String, Result<i32, Error>)> = Vec::new();
        let mut state = RetryState::new(&self.retry_policy(), tokio::time::Instant::now().into_std());
        let not_found =
            |key: String, source: Option<Error>| Error::CoordinatorNotFound { kind, key, source: source.map(Box::new) };
        while !pending.is_empty() {
            let names: Vec<String> = pending.iter().map(|(k, _)| k.clone()).collect();
            let round = self.find_coordinators_once(kind, &names).await;
            let now = tokio::time::Instant::now().into_std();
            let step = match round {
                Ok((broker, answers)) => {
                    let mut codes = Vec::new();
                    let mut retry = Vec::new();
                    for (key, last) in pending.drain(..) {
                        match answers.iter().find(|a| a.0 == key) {
                            Some((_, ErrorCode::None, node, _)) => {
                                lock(&self.inner.coordinators).insert((kind, key.clone()), *node);
                                done.push((key, Ok(*node)));
                            }
                            Some((_, code, _, message)) => {
                                let e = Error::Broker {
                                    broker: broker.clone(),
                                    api: ApiKey::FindCoordinator,
                                    code: *code,
                                    message: message.clone(),
                                };
                                if code.retry_action().is_retry() && code.retry_action() != RetryAction::Rejoin {
                                    codes.push(*code);
                                    retry.push((key, Some(e)));
                                } else {
                                    done.push((key.clone(), Err(not_found(key, Some(e)))));
                                }
                            }
                            // A key the answer left out: ask again.
                            None => {
                                codes.push(ErrorCode::CoordinatorNotAvailable);
                                retry.push((key, last));
                            }
                        }
                    }
                    pending = retry;
                    if pending.is_empty() {
                        break;
                    }
                    state.decide(Outcome::Answered(&codes), now, fastrand::f64())
                }
                Err(e) => match state.decide(Outcome::Failed(&e), now, fastrand::f64()) {
                    Step::GiveUp(GiveUp::Final) => return Err(e),
                    Step::GiveUp(GiveUp::Exhausted) => {
                        return Err(Error::RetriesExhausted {
                            api: ApiKey::FindCoordinator,
                            attempts: state.attempts(),
                            elapsed: state.elapsed(now),
                            source: Box::new(e),
                        });
                    }
                    step => step,
                },
            };
            match step {
                Step::Retry { refresh_metadata, at, .. } => {
                    if refresh_metadata {
                        let _ = self.refresh_metadata().await;
                    }
                    tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
                }
                Step::Done | Step::GiveUp(_) => {
                    let (attempts, elapsed) = (state.attempts(), state.elapsed(now));
                    for (key, last) in pending.drain(..) {
                        let source = Box::new(not_found(key.clone(), last));
                        done.push((
                            key,
                            Err(Error::RetriesExhausted { api: ApiKey::FindCoordinator, attempts, elapsed, source }),
                        ));
                    }
                }
            }
        }
        // Keys found in a later round were pushed after the others: back to the caller's order.
        let order: HashMap<&str, usize> = keys.iter().enumerate().rev().map(|(i, k)| (k.as_ref(), i)).collect();
        done.sort_by_key(|(key, _)| order.get(key.as_str()).copied());
        Ok(done)
    }

    /// One FindCoordinator round for `keys`: the answering broker and
    /// (key, code, node id, message) per key answered.
    async fn find_coordinators_once(
        &self,
        kind: CoordinatorType,
        keys: &[String],
    ) -> Result<(String, Vec<(String, ErrorCode, i32, Option<String>)>), Error> {
        let conn = self.any_broker().await?;
        let version = conn.version_for(ApiKey::FindCoordinator, None)?;
        let mut answers = Vec::new();
        if version >= 4 {
            let req = FindCoordinatorRequest::default().with_key_type(kind.code()).with_coordinator_keys(keys.to_vec());
            let resp = conn.send_version(&req, version).await?;
            for c in resp.coordinators {
                answers.push((c.key, ErrorCode::from_code(c.error_code), c.node_id, c.error_message));
            }
        } else {
            if kind == CoordinatorType::Transaction && version < 1 {
                return Err(Error::UnsupportedVersion {
                    broker: conn.broker().to_owned(),
                    api: ApiKey::FindCoordinator,
                    broker_versions: "0 (no transaction coordinators)".into(),
                    client_versions: ApiKey::FindCoordinator.stable_versions(),
                });
            }
            for key in keys {
                let mut req = FindCoordinatorRequest::default().with_key(key.clone());
                if version >= 1 {
                    req = req.with_key_type(kind.code());
                }
                let resp = conn.send_version(&req, version).await?;
                answers.push((key.clone(), ErrorCode::from_code(resp.error_code), resp.node_id, resp.error_message));
            }
        }
        Ok((conn.broker().to_owned(), answers))
    }

    /// Closes every connection and stops the metadata refresh; later calls fail with
    /// [`Error::Closed`].
    pub async fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.stop.send_replace(true);
        let pools: Vec<Arc<BrokerPool>> = lock(&self.inner.brokers).drain().map(|(_, p)| p).collect();
        for p in pools.iter().chain(self.inner.bootstrap.iter()) {
            p.close().await;
        }
    }

    /// Whether [`Cluster::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }
}

/// Refreshes the metadata every `every`, holding the cluster only while it does: it
/// ends when the cluster is closed or its last handle dropped (`stop` changes or is
/// gone), without waiting for the next tick.
async fn refresh_loop(inner: Weak<Inner>, mut stop: tokio::sync::watch::Receiver<bool>, every: Duration) {
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let Some(inner) = inner.upgrade() else { return };
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        let cluster = Cluster { inner };
        if let Err(e) = cluster.refresh_metadata().await {
            tracing::debug!(error = %e, "periodic metadata refresh failed");
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// The cluster's connections to the fake broker: `n` of them, within a bound that is
    /// only a safety net for a failing test.
    async fn await_connections(kafka: &klife_testkit::FakeCluster, broker: i32, n: usize) {
        let reached = kafka.await_connection_count(broker, n, Duration::from_secs(60)).await;
        assert!(reached, "broker {broker} has {} connections, not {n}", kafka.connection_count(broker));
    }

    #[tokio::test]
    async fn dropping_the_last_handle_ends_the_refresh_and_lets_the_cluster_go() {
        let kafka = klife_testkit::FakeCluster::builder().start().await.unwrap();
        let id = kafka.broker_ids()[0];
        // The refresh would next tick in five minutes.
        let config = ConnectionConfig { metadata_max_age: Duration::from_secs(300), ..ConnectionConfig::default() };
        let (cluster, refresh) = Cluster::connect_with_tasks(&kafka.addresses(), config).await.unwrap();
        let weak = Arc::downgrade(&cluster.inner);
        let lane = cluster.open_lane(id);
        lane.connection().await.unwrap();
        cluster.broker(id).await.unwrap();
        let clone = cluster.clone();
        drop(cluster);
        assert!(weak.upgrade().is_some(), "a clone still holds the cluster");
        drop(clone);
        // The task ends now, not at its next tick (the bound only stops a failing test).
        tokio::time::timeout(Duration::from_secs(60), refresh).await.unwrap().unwrap();
        assert!(weak.upgrade().is_none(), "nothing keeps the cluster alive");
        // Its connections close with it (the lane's too, though its owner still holds it).
        await_connections(&kafka, id, 0).await;
        assert!(matches!(lane.connection().await, Err(Error::Closed)));
    }

    #[tokio::test]
    async fn close_ends_the_refresh() {
        let kafka = klife_testkit::FakeCluster::builder().start().await.unwrap();
        let (cluster, refresh) =
            Cluster::connect_with_tasks(&kafka.addresses(), ConnectionConfig::default()).await.unwrap();
        cluster.close().await;
        tokio::time::timeout(Duration::from_secs(60), refresh).await.unwrap().unwrap();
        assert!(cluster.is_closed());
    }

    #[test]
    fn addresses_parse() {
        assert_eq!(parse_address("localhost:9092").unwrap(), ("localhost".into(), 9092));
        assert_eq!(parse_address("[::1]:19092").unwrap(), ("::1".into(), 19092));
        assert_eq!(parse_address(" 10.0.0.1:1 ").unwrap(), ("10.0.0.1".into(), 1));
        for bad in ["localhost", ":9092", "host:port", "host:70000", "[::1]9092"] {
            assert!(matches!(parse_address(bad), Err(Error::InvalidAddress { .. })), "{bad}");
        }
    }
}
