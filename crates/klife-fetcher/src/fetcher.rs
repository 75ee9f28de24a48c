//! The fetcher: routes each fetch to its partition's leader, where a batcher task puts
//! the fetches waiting for that broker into shared Fetch requests.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use klife_connection::Cluster;
use klife_connection::hash::Fnv1a;
use klife_connection::sync::lock;
use klife_protocol::messages::fetch_request::{FetchPartition, FetchTopic, ForgottenTopic};
use klife_protocol::messages::fetch_response::PartitionData;
use klife_protocol::messages::{FetchRequest, FetchResponse};
use klife_protocol::records::DecodeOptions;
use klife_protocol::{ApiKey, ErrorCode, TopicPartition, Uuid};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tokio::time::Instant;

use crate::config::{FetchOptions, FetcherConfig, IsolationLevel};
use crate::decode::{AbortedTransaction, Decoded, PartitionAnswer, decode_partition};
use crate::error::FetchError;
use crate::offsets::OffsetSpec;
use crate::plan::{Pace, Planned, Progress, Served, caught_up, starved, take_request, waits_next};
use crate::position::{self, Divergence, TopicIdCheck, Verdict};
use crate::record::{Fetched, TopicPartitionOffset};
use crate::session::{self, FetchSession, PartitionFetch, Scope, SessionRequest, Watermarks};
use crate::stream::FetchStream;
use crate::telemetry;

/// `max_wait` of fetches answered at once (unless the configured `max_wait` is
/// shorter). Not 0: Tansu reads nothing for a Fetch whose `max_wait` is 0 and leaves
/// every partition out of its answer. A broker answers at once whenever it has
/// records, so the wait only applies to partitions that turn out to have none.
const NOW_MAX_WAIT_MS: i32 = 1;

/// Fetches records, batching the fetches for each broker into shared requests.
///
/// Cheap to clone: clones share the batchers. Each fetch resolves to one
/// `Result<Fetched, FetchError>`; retriable failures (a leader move, a broker
/// restart, stale metadata) are retried until the fetch timeout.
///
/// When the last clone is dropped (without [`close`](Self::close)), the fetcher
/// stops as `close` stops it: fetches waiting in its batchers fail with
/// [`FetchError::Closed`] (their handles and streams get that result), requests in
/// flight finish and deliver theirs, and the batcher tasks close their fetch sessions
/// and end, letting go of the [`Cluster`].
#[derive(Clone)]
pub struct Fetcher {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher").field("config", &self.inner.config).finish_non_exhaustive()
    }
}

pub(crate) struct Inner {
    pub(crate) cluster: Cluster,
    pub(crate) config: FetcherConfig,
    decode: DecodeOptions,
    batchers: Mutex<HashMap<(i32, usize), mpsc::UnboundedSender<Job>>>,
    closed: AtomicBool,
    /// Held by every batcher task as long as it runs (the tasks hold the fetcher
    /// itself only weakly): when it has no other holder, every batcher has ended.
    tasks: Arc<()>,
}

/// Where a fetch's result goes.
pub(crate) enum Reply {
    Once(oneshot::Sender<Result<Fetched, FetchError>>),
    Stream(mpsc::UnboundedSender<(TopicPartitionOffset, Result<Fetched, FetchError>)>),
}

/// One fetch on its way.
pub(crate) struct Job {
    target: TopicPartitionOffset,
    isolation: IsolationLevel,
    max_bytes: usize,
    started: Instant,
    deadline: Instant,
    attempts: u32,
    /// Whether the topic was looked up (fresh metadata) for this fetch already.
    looked_up: bool,
    /// The id of the topic the fetch reads: the position's, else the one the metadata
    /// gave when the fetch was first routed. A later routing that finds another id
    /// under the name fails the fetch (the topic was created again).
    topic_id: Option<Uuid>,
    /// Whether the last routing found the topic's id in the metadata: the request may
    /// name the topic by id (Fetch v13+).
    by_id: bool,
    /// The partition's leader epoch the metadata gave at the last routing (-1: none).
    leader_epoch: i32,
    /// The epoch of the last batch read before the offset (the position's, or one the
    /// broker's log realigned it to).
    last_epoch: Option<i32>,
    /// Whether the broker may hold the fetch up to `max_wait` for records to arrive.
    /// Only fetches of partitions the broker last said were caught up wait; the others
    /// are answered at once, and one that finds its partition caught up with nothing
    /// to read then waits.
    wait: bool,
    /// Goes to the front of its lane (the last answer gave the partition nothing).
    first: bool,
    reply: Reply,
}

impl Job {
    fn complete(self, result: Result<Fetched, FetchError>) {
        match self.reply {
            Reply::Once(tx) => {
                let _ = tx.send(result);
            }
            Reply::Stream(tx) => {
                let _ = tx.send((self.target, result));
            }
        }
    }

    fn is_abandoned(&self) -> bool {
        match &self.reply {
            Reply::Once(tx) => tx.is_closed(),
            Reply::Stream(tx) => tx.is_closed(),
        }
    }

    fn topic(&self) -> String {
        self.target.topic.to_string()
    }
}

impl Planned for Job {
    fn partition(&self) -> (&str, i32) {
        (&self.target.topic, self.target.partition)
    }
    fn max_bytes(&self) -> usize {
        self.max_bytes
    }
    fn isolation(&self) -> IsolationLevel {
        self.isolation
    }
}

/// What the metadata says about where a fetch goes.
enum Route {
    Broker(Routed),
    /// The topic or partition is not known: look it up first.
    Lookup,
    Fail(FetchError),
    Retry(FetchError),
}

/// Where a fetch goes and what it carries.
struct Routed {
    broker: i32,
    leader_epoch: i32,
    /// The topic's id in the metadata (`None`: none; by name).
    topic_id: Option<Uuid>,
}

impl Fetcher {
    /// A fetcher over `cluster`'s connections. Fails only for invalid settings.
    pub fn new(cluster: Cluster, config: FetcherConfig) -> Result<Fetcher, FetchError> {
        config.validate()?;
        let decode =
            DecodeOptions { max_decompressed_size: config.max_decompressed_size, verify_crc: config.check_crcs };
        Ok(Fetcher {
            inner: Arc::new(Inner {
                cluster,
                config,
                decode,
                batchers: Mutex::new(HashMap::new()),
                closed: AtomicBool::new(false),
                tasks: Arc::new(()),
            }),
        })
    }

    /// The settings.
    pub fn config(&self) -> &FetcherConfig {
        &self.inner.config
    }

    /// The cluster underneath.
    pub fn cluster(&self) -> &Cluster {
        &self.inner.cluster
    }

    /// Fetches records of `topic`-`partition` from `offset` on: whatever the broker
    /// has, up to the partition byte limit, waiting up to `max_wait` when it has
    /// nothing yet.
    pub async fn fetch(&self, topic: &str, partition: i32, offset: i64) -> Result<Fetched, FetchError> {
        self.fetch_with(TopicPartitionOffset::new(topic, partition, offset), &FetchOptions::default()).await
    }

    /// [`fetch`](Self::fetch) with per-call options.
    pub async fn fetch_with(
        &self,
        target: TopicPartitionOffset,
        options: &FetchOptions,
    ) -> Result<Fetched, FetchError> {
        self.fetch_async(target, options).await
    }

    /// Starts a fetch and returns a handle to await its result; dropping the handle
    /// abandons the fetch.
    pub fn fetch_async(&self, target: TopicPartitionOffset, options: &FetchOptions) -> FetchHandle {
        let (tx, rx) = oneshot::channel();
        self.inner.submit(self.inner.job(target, options, Reply::Once(tx)));
        FetchHandle { rx }
    }

    /// Fetches several partitions at once; fetches for the same broker share
    /// requests. Returns one result per target, in the order given. A partition may
    /// appear more than once (with different offsets): each is fetched separately.
    pub async fn fetch_many<I, T>(
        &self,
        targets: I,
        options: &FetchOptions,
    ) -> Vec<(TopicPartitionOffset, Result<Fetched, FetchError>)>
    where
        I: IntoIterator<Item = T>,
        T: Into<TopicPartitionOffset>,
    {
        let handles: Vec<(TopicPartitionOffset, FetchHandle)> = targets
            .into_iter()
            .map(|t| {
                let t = t.into();
                let h = self.fetch_async(t.clone(), options);
                (t, h)
            })
            .collect();
        let mut out = Vec::with_capacity(handles.len());
        for (t, h) in handles {
            out.push((t, h.await));
        }
        out
    }

    /// Fetches several partitions at once and yields each result as it arrives, as
    /// a [`Stream`](futures_core::Stream) (or with [`FetchStream::recv`]).
    pub fn fetch_stream<I, T>(&self, targets: I, options: &FetchOptions) -> FetchStream
    where
        I: IntoIterator<Item = T>,
        T: Into<TopicPartitionOffset>,
    {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut count = 0;
        for t in targets {
            count += 1;
            self.inner.submit(self.inner.job(t.into(), options, Reply::Stream(tx.clone())));
        }
        FetchStream::new(rx, count)
    }

    /// Starts a fetch whose result goes to `tx` (used by consumers), at `pace`:
    /// [`Pace::Wait`] lets the broker hold it for records (the partition was caught up);
    /// [`Pace::Now`] is answered at once, ahead of the fetches waiting in its batcher
    /// when `first` (the last answer gave the partition nothing, and brokers fill
    /// answers in order).
    pub(crate) fn submit_to(
        &self,
        target: TopicPartitionOffset,
        options: &FetchOptions,
        pace: Pace,
        tx: mpsc::UnboundedSender<(TopicPartitionOffset, Result<Fetched, FetchError>)>,
    ) {
        let mut job = self.inner.job(target, options, Reply::Stream(tx));
        (job.wait, job.first) = match pace {
            Pace::Wait => (true, false),
            Pace::Now { first } => (false, first),
        };
        self.inner.submit(job);
    }

    /// Looks up offsets: one result per partition and [`OffsetSpec`], in the order given.
    /// Lookups for the same leader share a request; `latest` is the last stable
    /// offset with [`IsolationLevel::ReadCommitted`] and the high watermark otherwise.
    pub async fn list_offsets(
        &self,
        queries: &[(TopicPartition, OffsetSpec)],
        isolation: IsolationLevel,
    ) -> Vec<Result<crate::offsets::ListedOffset, FetchError>> {
        crate::offsets::list_offsets(&self.inner, queries, isolation).await
    }

    /// Stops the batchers: fetches waiting in them fail with [`FetchError::Closed`],
    /// and so do later ones. Requests in flight finish.
    pub fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        lock(&self.inner.batchers).clear();
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.inner.closed.load(Ordering::Acquire)
    }
}

/// A fetch started with [`Fetcher::fetch_async`]: await it for the result, or drop
/// it to abandon the fetch.
#[derive(Debug)]
#[must_use = "a fetch handle does nothing unless awaited"]
pub struct FetchHandle {
    rx: oneshot::Receiver<Result<Fetched, FetchError>>,
}

impl Future for FetchHandle {
    type Output = Result<Fetched, FetchError>;

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.rx).poll(cx).map(|r| r.unwrap_or(Err(FetchError::Closed)))
    }
}

impl Inner {
    fn job(&self, target: TopicPartitionOffset, options: &FetchOptions, reply: Reply) -> Job {
        let now = Instant::now();
        Job {
            topic_id: target.topic_id.filter(|id| !id.is_nil()),
            last_epoch: target.last_epoch.filter(|e| *e >= 0),
            target,
            isolation: options.isolation_level.unwrap_or(self.config.isolation_level),
            max_bytes: options.max_bytes.unwrap_or(self.config.partition_max_bytes),
            started: now,
            deadline: now + self.config.fetch_timeout,
            attempts: 0,
            looked_up: false,
            by_id: false,
            leader_epoch: -1,
            wait: false,
            first: false,
            reply,
        }
    }

    /// Sends a fetch to its leader's batcher, or fails it, or looks its topic up first.
    fn submit(self: &Arc<Self>, job: Job) {
        if self.closed.load(Ordering::Acquire) || self.cluster.is_closed() {
            return job.complete(Err(FetchError::Closed));
        }
        let t = &job.target;
        if t.offset < 0 {
            let e = FetchError::InvalidOffset { topic: job.topic(), partition: t.partition, offset: t.offset };
            return job.complete(Err(e));
        }
        if job.max_bytes == 0 || i32::try_from(job.max_bytes).is_err() {
            let e = FetchError::InvalidArgument(format!(
                "max_bytes must be between 1 and {}, not {}",
                i32::MAX,
                job.max_bytes
            ));
            return job.complete(Err(e));
        }
        match self.route(&job) {
            Route::Broker(routed) => {
                let mut job = job;
                job.leader_epoch = routed.leader_epoch;
                job.by_id = routed.topic_id.is_some();
                job.topic_id = routed.topic_id.or(job.topic_id);
                self.enqueue(routed.broker, job)
            }
            Route::Fail(e) => job.complete(Err(e)),
            Route::Retry(e) => self.retry(job, e, true),
            Route::Lookup => {
                let inner = self.clone();
                tokio::spawn(async move {
                    let mut job = job;
                    job.looked_up = true;
                    match inner.cluster.add_topics(&[&*job.target.topic]).await {
                        Ok(_) => inner.submit(job),
                        Err(e) => inner.retry(job, FetchError::Connection(e), false),
                    }
                });
            }
        }
    }

    fn route(&self, job: &Job) -> Route {
        let m = self.cluster.metadata();
        let (topic, partition) = (&*job.target.topic, job.target.partition);
        let Some(t) = m.topics.get(topic) else {
            return if job.looked_up {
                Route::Fail(FetchError::UnknownTopic { topic: topic.to_owned() })
            } else {
                Route::Lookup
            };
        };
        match t.error {
            ErrorCode::None => {}
            ErrorCode::UnknownTopicOrPartition | ErrorCode::InvalidTopicException if job.looked_up => {
                return Route::Fail(FetchError::UnknownTopic { topic: topic.to_owned() });
            }
            ErrorCode::UnknownTopicOrPartition => return Route::Lookup,
            code => {
                let e = FetchError::Broker { topic: topic.to_owned(), partition, code, message: None };
                return if code.retry_action().is_retry() { Route::Retry(e) } else { Route::Fail(e) };
            }
        }
        // Only the id the position came with (from an answer the caller read) makes a
        // changed id a re-created topic; the id a fetch took from the metadata when it
        // was routed may be stale, and nothing was read under it.
        let topic_id = match position::check_topic_id(job.target.topic_id, t.id, job.looked_up) {
            TopicIdCheck::Fetch(id) => id,
            TopicIdCheck::LookUp => return Route::Lookup,
            TopicIdCheck::Recreated { old, new } => {
                return Route::Fail(FetchError::TopicRecreated {
                    topic: topic.to_owned(),
                    partition,
                    offset: job.target.offset,
                    old_id: old,
                    new_id: new,
                });
            }
        };
        let Some(p) = t.partition(partition) else {
            return if job.looked_up {
                Route::Fail(FetchError::UnknownPartition {
                    topic: topic.to_owned(),
                    partition,
                    partitions: t.partitions.len(),
                })
            } else {
                Route::Lookup
            };
        };
        if p.leader < 0 || !m.brokers.contains_key(&p.leader) {
            return Route::Retry(FetchError::Broker {
                topic: topic.to_owned(),
                partition,
                code: ErrorCode::LeaderNotAvailable,
                message: Some(if p.leader < 0 {
                    "the partition has no leader".into()
                } else {
                    format!("its leader, broker {}, is not among the live brokers", p.leader)
                }),
            });
        }
        Route::Broker(Routed { broker: p.leader, leader_epoch: p.leader_epoch, topic_id })
    }

    fn enqueue(self: &Arc<Self>, broker: i32, job: Job) {
        let slots = self.config.batchers_per_broker;
        let slot = if slots == 1 { 0 } else { slot_of(&job.target.topic, job.target.partition, slots) };
        let mut batchers = lock(&self.batchers);
        if self.closed.load(Ordering::Acquire) {
            drop(batchers);
            return job.complete(Err(FetchError::Closed));
        }
        let tx = batchers.entry((broker, slot)).or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(batcher(Arc::downgrade(self), self.tasks.clone(), broker, rx));
            tx
        });
        if let Err(mpsc::error::SendError(job)) = tx.send(job) {
            // The batcher stopped (its runtime went away): start another.
            batchers.remove(&(broker, slot));
            drop(batchers);
            self.enqueue(broker, job);
        }
    }

    /// Retries a fetch after a pause (refreshing the metadata first if `refresh`), or
    /// fails it with [`FetchError::Timeout`] when its time is up.
    fn retry(self: &Arc<Self>, mut job: Job, error: FetchError, refresh: bool) {
        if job.is_abandoned() {
            return;
        }
        let base = self.config.retry_backoff;
        let factor = 1u32 << job.attempts.min(4);
        let pause = (base * factor).min(Duration::from_secs(1).max(base));
        let pause = pause.mul_f64(0.8 + 0.4 * fastrand::f64());
        job.attempts += 1;
        if Instant::now() + pause >= job.deadline {
            let t = &job.target;
            let e = FetchError::Timeout {
                topic: t.topic.to_string(),
                partition: t.partition,
                elapsed: job.started.elapsed(),
                last: Arc::new(error),
            };
            return job.complete(Err(e));
        }
        telemetry::record_retry();
        tracing::debug!(target: "klife_fetcher", fetch = %job.target, attempt = job.attempts, error = %error, "retrying fetch");
        let inner = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(pause).await;
            if refresh {
                let _ = inner.cluster.refresh_metadata().await;
            }
            inner.submit(job);
        });
    }
}

/// The batcher a partition's fetches go to, among `slots` per broker.
fn slot_of(topic: &str, partition: i32, slots: usize) -> usize {
    // FNV-1a: stable and cheap; only the spread matters.
    let mut h = Fnv1a::new();
    h.write(topic.as_bytes());
    h.write(&partition.to_be_bytes());
    (h.finish() % slots as u64) as usize
}

/// One batcher: takes fetches for one broker and sends everything waiting in as few
/// requests as the limits allow, in two lanes, each on a connection of its own:
///
/// - fetches answered at once (`max_wait` of 1 ms): every fetch starts here, up to
///   `max_in_flight` requests at a time, never queued behind a waiting one;
/// - fetches that may wait for records (`max_wait`), of partitions the broker last said
///   were caught up: one request at a time, which the broker answers as soon as any
///   of its partitions has records.
async fn batcher(inner: Weak<Inner>, _task: Arc<()>, broker: i32, mut rx: mpsc::UnboundedReceiver<Job>) {
    let (max_in_flight, linger, cluster) = match inner.upgrade() {
        Some(i) => (i.config.max_in_flight, i.config.linger, i.config.fetch_sessions.then(|| i.cluster.clone())),
        None => return,
    };
    // The waiting lane's fetch session: its requests go one at a time (one permit).
    let lane_session = cluster.as_ref().map(|_| Arc::new(Mutex::new(LaneSession::default())));
    let now_permits = Arc::new(Semaphore::new(max_in_flight));
    let wait_permits = Arc::new(Semaphore::new(1));
    let mut now: VecDeque<Job> = VecDeque::new();
    let mut waiting: VecDeque<Job> = VecDeque::new();
    let push = |job: Job, now: &mut VecDeque<Job>, waiting: &mut VecDeque<Job>| {
        let lane = if job.wait { waiting } else { now };
        if job.first { lane.push_front(job) } else { lane.push_back(job) }
    };
    'run: loop {
        if now.is_empty() && waiting.is_empty() {
            match rx.recv().await {
                Some(job) => push(job, &mut now, &mut waiting),
                None => break 'run,
            }
            if !linger.is_zero() {
                let until = Instant::now() + linger;
                loop {
                    tokio::select! {
                        job = rx.recv() => match job {
                            Some(job) => push(job, &mut now, &mut waiting),
                            None => break 'run,
                        },
                        _ = tokio::time::sleep_until(until) => break,
                    }
                }
            }
        }
        let (permit, wait) = tokio::select! {
            biased;
            permit = now_permits.clone().acquire_owned(), if !now.is_empty() => match permit {
                Ok(p) => (p, false),
                Err(_) => break 'run,
            },
            permit = wait_permits.clone().acquire_owned(), if !waiting.is_empty() => match permit {
                Ok(p) => (p, true),
                Err(_) => break 'run,
            },
            job = rx.recv() => match job {
                Some(job) => { push(job, &mut now, &mut waiting); continue 'run; }
                None => break 'run,
            },
        };
        while let Ok(job) = rx.try_recv() {
            push(job, &mut now, &mut waiting);
        }
        let lane = if wait { &mut waiting } else { &mut now };
        lane.retain(|j| !j.is_abandoned());
        let Some(inner) = inner.upgrade() else { break 'run };
        // Every caught-up partition of the broker waits in one request: split into
        // requests of `max_bytes_per_request`, each waits `max_wait` in turn, and a
        // record for a partition of the last one arrived seconds late with a thousand
        // partitions. The broker bounds the answer by the request's byte limit; a
        // partition it leaves out for that is starved and asked again at once, one it
        // cuts short in the middle of a batch too.
        let limit = if wait { usize::MAX } else { inner.config.max_bytes_per_request };
        let jobs = take_request(lane, limit);
        if jobs.is_empty() {
            continue;
        }
        let session = if wait { lane_session.clone() } else { None };
        tokio::spawn(send_request(inner, broker, jobs, wait, session, permit));
    }
    for job in now.into_iter().chain(waiting) {
        job.complete(Err(FetchError::Closed));
    }
    if let (Some(cluster), Some(lane_session)) = (cluster, lane_session) {
        // Once the waiting request in flight, if any, is done.
        let _permit = wait_permits.acquire().await;
        close_session(&cluster, broker, &lane_session).await;
    }
}

/// How a fetch session names a topic: by id from Fetch v13, by name before.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum SessionTopic {
    Id(Uuid),
    Name(Arc<str>),
}

/// A partition of a fetch session.
type SessionKey = session::Key<SessionTopic>;

/// The fetch session of a batcher's waiting lane, and whether its requests name topics
/// by id (`None`: none sent yet). A request that names them otherwise than the session
/// did is full and replaces the session.
#[derive(Debug, Default)]
struct LaneSession {
    session: FetchSession<SessionTopic>,
    by_id: Option<bool>,
}

fn session_key(job: &Job, by_id: bool) -> SessionKey {
    let topic = match job.topic_id {
        Some(id) if by_id => SessionTopic::Id(id),
        _ => SessionTopic::Name(job.target.topic.clone()),
    };
    (topic, job.target.partition)
}

/// What a request asks of a fetch's partition.
fn partition_fetch(job: &Job, version: i16) -> PartitionFetch {
    let epochs = position::epochs(version, job.leader_epoch, job.last_epoch);
    PartitionFetch {
        fetch_offset: job.target.offset,
        log_start_offset: -1,
        max_bytes: i32::try_from(job.max_bytes).unwrap_or(i32::MAX),
        current_leader_epoch: epochs.current_leader_epoch,
        last_fetched_epoch: epochs.last_fetched_epoch,
    }
}

/// Whether a top-level error is about the fetch session rather than its partitions.
fn is_session_error(code: ErrorCode) -> bool {
    matches!(
        code,
        ErrorCode::FetchSessionIdNotFound | ErrorCode::InvalidFetchSessionEpoch | ErrorCode::FetchSessionTopicIdError
    )
}

/// Ends the lane's fetch session on the broker, best effort: the broker would drop it
/// once idle anyway.
async fn close_session(cluster: &Cluster, broker: i32, lane_session: &Mutex<LaneSession>) {
    let close = lock(lane_session).session.close();
    let Ok(Some(close)) = close else { return };
    let Ok(conn) = cluster.fetch_connection(broker, true).await else { return };
    let Some(version) = conn.versions().range(ApiKey::Fetch).and_then(|r| position::fetch_version(r, false)) else {
        return;
    };
    if version < session::MIN_VERSION {
        return;
    }
    let request = FetchRequest::default()
        .with_replica_id(-1)
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(1)
        .with_session_id(close.session_id)
        .with_session_epoch(close.epoch);
    let result = conn.send_version(&request, version).await;
    tracing::debug!(target: "klife_fetcher", broker, session = close.session_id, ok = result.is_ok(), "closed fetch session");
}

/// Sends one Fetch request for `jobs` and hands each its result (or retries it).
///
/// With `lane_session` (the waiting lane, sessions on) and a version that has sessions,
/// the request goes in the lane's fetch session: incremental once the broker granted
/// one, and the answer is read as [`FetchSession::answered`] says.
async fn send_request(
    inner: Arc<Inner>,
    broker: i32,
    jobs: Vec<Job>,
    wait: bool,
    lane_session: Option<Arc<Mutex<LaneSession>>>,
    _permit: OwnedSemaphorePermit,
) {
    let conn = match inner.cluster.fetch_connection(broker, wait).await {
        Ok(c) => c,
        Err(e) => return fail_all(&inner, jobs, e),
    };
    // Topics go by id (v13+) only when every topic of the request has one.
    let ids_known = jobs.iter().all(|j| j.by_id);
    let range = conn.versions().range(ApiKey::Fetch);
    let Some(version) = range.and_then(|r| position::fetch_version(r, ids_known)) else {
        let e = klife_connection::Error::UnsupportedVersion {
            broker: conn.broker().to_owned(),
            api: ApiKey::Fetch,
            broker_versions: range.map_or_else(|| "none".to_owned(), |r| r.to_string()),
            client_versions: klife_protocol::VersionRange {
                min: position::FETCH_MIN_VERSION,
                max: position::FETCH_MAX_VERSION,
            },
        };
        return fail_all(&inner, jobs, e);
    };
    let by_id = version > position::FETCH_MAX_VERSION_BY_NAME;
    let jobs = in_request_order(jobs, by_id);
    let lane_session = lane_session.filter(|_| version >= session::MIN_VERSION);
    let session_request = lane_session.as_ref().and_then(|lane| {
        let mut lane = lock(lane);
        if lane.by_id != Some(by_id) {
            // Topics named otherwise: the session's keys would not match the answer's;
            // a full request replaces the session.
            lane.session.restart();
            lane.by_id = Some(by_id);
        }
        lane.session.request(jobs.iter().map(|j| (session_key(j, by_id), partition_fetch(j, version)))).ok()
    });
    let request = build_request(&inner.config, &jobs, wait, version, session_request.as_ref());
    let started = std::time::Instant::now();
    let response = match conn.send_version(&request, version).await {
        Ok(r) => r,
        Err(e) => {
            if let (Some(lane), Some(_)) = (&lane_session, &session_request) {
                lock(lane).session.failed();
            }
            return fail_all(&inner, jobs, e);
        }
    };
    telemetry::record_request(version, jobs.len(), started.elapsed());
    let top = ErrorCode::from_code(response.error_code);
    let mut scope = Scope::Full;
    if let (Some(lane), Some(sent)) = (&lane_session, &session_request) {
        let answered = response.responses.iter().flat_map(|t| {
            let topic = if by_id { SessionTopic::Id(t.topic_id) } else { SessionTopic::Name(t.topic.as_str().into()) };
            t.partitions.iter().map(move |p| {
                let seen = (p.error_code == 0).then_some(Watermarks {
                    high_watermark: p.high_watermark,
                    last_stable_offset: p.last_stable_offset,
                    log_start_offset: p.log_start_offset,
                });
                ((topic.clone(), p.partition_index), seen)
            })
        });
        let mut lane = lock(lane);
        scope = lane.session.answered(top, response.session_id, answered).unwrap_or(Scope::Nothing);
        if scope == Scope::Incremental {
            telemetry::record_incremental_request();
        }
        if scope == Scope::Nothing && (top == ErrorCode::None || is_session_error(top)) {
            drop(lane);
            telemetry::record_session_reset();
            tracing::debug!(target: "klife_fetcher", broker, session = sent.session_id, epoch = sent.epoch, error = %top, "fetch session lost; the next request is full");
            // Nothing of the answer is read. After an incremental request, the next
            // one is full and goes at once; a full one answered so waits.
            for job in jobs {
                if sent.is_full() {
                    let code = if top == ErrorCode::None { ErrorCode::UnknownServerError } else { top };
                    let e =
                        FetchError::Broker { topic: job.topic(), partition: job.target.partition, code, message: None };
                    inner.retry(job, e, false);
                } else {
                    inner.submit(job);
                }
            }
            return;
        }
    }
    if top != ErrorCode::None {
        for job in jobs {
            let e =
                FetchError::Broker { topic: job.topic(), partition: job.target.partition, code: top, message: None };
            let verdict = position::verdict(top, Divergence::NONE, job.target.offset, -1, job.attempts);
            act(&inner, job, verdict, e);
        }
        return;
    }
    let mut answers = index_answers(&response, by_id);
    // An incremental answer leaves out the partitions of the session with no news:
    // nothing read, and the watermarks the broker last gave.
    let quiet: Vec<(Arc<str>, Option<Uuid>, PartitionData)> = match (&lane_session, scope) {
        (Some(lane), Scope::Incremental) => {
            let lane = lock(lane);
            jobs.iter()
                .filter(|j| !answers.contains_key(&(AnswerTopic::of(j, by_id), j.target.partition)))
                .filter_map(|j| {
                    let w = lane.session.watermarks(&session_key(j, by_id))?;
                    let p = PartitionData::default()
                        .with_partition_index(j.target.partition)
                        .with_high_watermark(w.high_watermark)
                        .with_last_stable_offset(w.last_stable_offset)
                        .with_log_start_offset(w.log_start_offset)
                        .with_records(Some(bytes::Bytes::new()));
                    (w.high_watermark >= 0).then(|| (j.target.topic.clone(), j.topic_id, p))
                })
                .collect()
        }
        _ => Vec::new(),
    };
    for (name, id, p) in &quiet {
        let topic = match id {
            Some(id) if by_id => AnswerTopic::Id(*id),
            _ => AnswerTopic::Name(name),
        };
        answers.entry((topic, p.partition_index)).or_insert(p);
    }
    let answer_of = |job: &Job| answers.get(&(AnswerTopic::of(job, by_id), job.target.partition)).copied();
    let served: Vec<Served> = jobs
        .iter()
        .map(|job| match answer_of(job) {
            Some(p) if p.error_code == 0 && p.diverging_epoch.epoch < 0 => Served {
                bytes: p.records.as_ref().map_or(0, bytes::Bytes::len),
                behind: caught_up(job.isolation, job.target.offset, p.high_watermark, p.last_stable_offset)
                    == Some(false),
            },
            _ => Served { bytes: 0, behind: false },
        })
        .collect();
    let starved = starved(&served);
    let mut again: Vec<Job> = Vec::new();
    let mut records = 0usize;
    for (mut job, starved) in jobs.into_iter().zip(starved) {
        if starved {
            // The partitions before it took the answer: it has records, ask at once.
            (job.wait, job.first) = (false, true);
            again.push(job);
            continue;
        }
        let Some(p) = answer_of(&job) else {
            // Kafka lists every partition asked for; some brokers leave out those that
            // did not fit the answer's byte limit. Nothing was read: an empty answer,
            // watermarks unknown (-1), and the caller fetches again from the same offset.
            let t = &job.target;
            let empty = Fetched {
                topic: t.topic.clone(),
                partition: t.partition,
                offset: t.offset,
                records: Vec::new(),
                next_offset: t.offset,
                high_watermark: -1,
                last_stable_offset: -1,
                log_start_offset: -1,
                last_epoch: job.last_epoch,
                topic_id: job.topic_id,
            };
            job.complete(Ok(empty));
            continue;
        };
        let code = ErrorCode::from_code(p.error_code);
        let sent = position::epochs(version, job.leader_epoch, job.last_epoch).last_fetched_epoch;
        let divergence = Divergence { epoch: p.diverging_epoch.epoch, end_offset: p.diverging_epoch.end_offset };
        match position::verdict(code, divergence, job.target.offset, sent, job.attempts) {
            Verdict::Records => {}
            Verdict::Realign { epoch } => {
                // The broker's log holds what was read; ask again, at once, with the
                // epoch it knows.
                job.last_epoch = Some(epoch);
                (job.wait, job.first) = (false, true);
                again.push(job);
                continue;
            }
            Verdict::Truncated { epoch, end_offset } => {
                telemetry::record_truncation();
                let t = &job.target;
                tracing::debug!(target: "klife_fetcher", fetch = %t, last_epoch = sent, end_offset, epoch, "log truncated under the fetch position");
                let e = FetchError::LogTruncated {
                    topic: job.topic(),
                    partition: t.partition,
                    offset: t.offset,
                    last_epoch: sent,
                    end_offset,
                    epoch,
                };
                job.complete(Err(e));
                continue;
            }
            verdict => {
                let e = FetchError::Broker { topic: job.topic(), partition: job.target.partition, code, message: None };
                act(&inner, job, verdict, e);
                continue;
            }
        }
        let answer = PartitionAnswer {
            records: p.records.clone(),
            high_watermark: p.high_watermark,
            last_stable_offset: p.last_stable_offset,
            log_start_offset: p.log_start_offset,
            aborted: p
                .aborted_transactions
                .iter()
                .flatten()
                .map(|a| AbortedTransaction { producer_id: a.producer_id, first_offset: a.first_offset })
                .collect(),
        };
        let t = &job.target;
        let decoded =
            decode_partition(&t.topic, t.partition, t.offset, job.last_epoch, job.isolation, answer, &inner.decode);
        match decoded {
            Decoded::Done(Ok(f))
                if waits_next(
                    wait,
                    &Progress {
                        offset: t.offset,
                        next_offset: f.next_offset,
                        records: f.records.len(),
                        caught_up: caught_up(job.isolation, f.next_offset, f.high_watermark, f.last_stable_offset),
                    },
                ) =>
            {
                // Nothing to read, nothing passed over: wait for records.
                (job.wait, job.first) = (true, false);
                again.push(job);
            }
            Decoded::Done(result) => {
                let result = result.map(|mut f| {
                    f.topic_id = job.topic_id;
                    records += f.records.len();
                    f
                });
                job.complete(result);
            }
            Decoded::NeedBytes { size } => {
                let limit = inner.config.max_bytes_per_request;
                // A batch that fits what the fetch asked for comes cut short when the
                // request's byte limit ran out at it: a waiting request asks for more
                // than the limit in all, and the broker fills the answer up to it.
                // Asked again at once (whose requests never ask for more than the
                // limit), it comes whole. Cut short in an answer at once, it is too
                // large for the broker to send.
                if size > limit || (size <= job.max_bytes && !wait) {
                    let e = FetchError::BatchTooLarge {
                        topic: job.topic(),
                        partition: t.partition,
                        offset: t.offset,
                        size,
                        limit: if size > limit { limit } else { job.max_bytes },
                    };
                    job.complete(Err(e));
                } else {
                    // Ask again, for the whole batch: it is there, so at once.
                    job.max_bytes = job.max_bytes.max(size);
                    (job.wait, job.first) = (false, true);
                    inner.submit(job);
                }
            }
        }
    }
    telemetry::record_records(records);
    // In reverse: each goes to the front of its lane, so they leave in request order.
    for job in again.into_iter().rev() {
        inner.submit(job);
    }
}

/// The partitions of an answer by topic (its id from v13, its name before) and index;
/// the first wins when a broker repeats one. Each fetch looks up its own partition, so a
/// topic or partition the request did not ask for is never looked at.
fn index_answers(response: &FetchResponse, by_id: bool) -> HashMap<(AnswerTopic<'_>, i32), &PartitionData> {
    let mut answers = HashMap::new();
    for t in &response.responses {
        let topic = if by_id { AnswerTopic::Id(t.topic_id) } else { AnswerTopic::Name(t.topic.as_str()) };
        for p in &t.partitions {
            answers.entry((topic, p.partition_index)).or_insert(p);
        }
    }
    answers
}

/// How an answer names a topic: by id from Fetch v13, by name before.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum AnswerTopic<'a> {
    Name(&'a str),
    Id(Uuid),
}

impl<'a> AnswerTopic<'a> {
    fn of(job: &'a Job, by_id: bool) -> Self {
        match job.topic_id {
            Some(id) if by_id => AnswerTopic::Id(id),
            _ => AnswerTopic::Name(&job.target.topic),
        }
    }
}

/// How a request groups a fetch's partition: under its topic's id from Fetch v13,
/// under its name before.
fn topic_key(job: &Job, by_id: bool) -> (&str, Option<Uuid>) {
    (&job.target.topic, if by_id { job.topic_id } else { None })
}

/// The fetches in the order their partitions appear in the request: grouped by topic,
/// topics in the order they first come, as [`build_request`] writes them.
fn in_request_order(jobs: Vec<Job>, by_id: bool) -> Vec<Job> {
    let mut topics: Vec<(&str, Option<Uuid>)> = Vec::new();
    for job in &jobs {
        let key = topic_key(job, by_id);
        if !topics.contains(&key) {
            topics.push(key);
        }
    }
    if topics.len() < 2 {
        return jobs;
    }
    let order: Vec<usize> =
        jobs.iter().map(|j| topics.iter().position(|t| *t == topic_key(j, by_id)).unwrap_or(0)).collect();
    let mut indexed: Vec<(usize, Job)> = order.into_iter().zip(jobs).collect();
    indexed.sort_by_key(|(i, _)| *i);
    indexed.into_iter().map(|(_, j)| j).collect()
}

/// A failure of the whole request: retried when it may pass, else reported to every
/// fetch in it.
fn fail_all(inner: &Arc<Inner>, jobs: Vec<Job>, e: klife_connection::Error) {
    let retriable = e.is_retriable();
    for job in jobs {
        if retriable {
            inner.retry(job, FetchError::Connection(e.clone()), true);
        } else {
            job.complete(Err(FetchError::Connection(e.clone())));
        }
    }
}

/// Does what a partition's failed answer calls for (see [`position::verdict`]).
fn act(inner: &Arc<Inner>, mut job: Job, verdict: Verdict, error: FetchError) {
    match verdict {
        Verdict::OutOfRange => {
            let inner = inner.clone();
            tokio::spawn(async move {
                let e = crate::offsets::out_of_range(&inner, &job.target, job.isolation).await;
                job.complete(Err(e));
            });
        }
        Verdict::LookUp => {
            // Deleted, created again, or not yet known to this broker: a fresh lookup
            // tells which.
            job.looked_up = false;
            inner.retry(job, error, true);
        }
        Verdict::Retry { refresh } => inner.retry(job, error, refresh),
        // Answers with records or a divergence are read by the caller; neither comes
        // with an error code.
        Verdict::Records | Verdict::Realign { .. } | Verdict::Truncated { .. } | Verdict::Fail => {
            job.complete(Err(error));
        }
    }
}

/// The Fetch request for `jobs`: every partition, or, in a fetch session, those
/// `session` lists (its id and epoch, and the partitions it forgets). Its byte limit
/// covers every fetch either way: an incremental answer may hold any of them.
fn build_request(
    config: &FetcherConfig,
    jobs: &[Job],
    wait: bool,
    version: i16,
    session: Option<&SessionRequest<SessionTopic>>,
) -> FetchRequest {
    let by_id = version > position::FETCH_MAX_VERSION_BY_NAME;
    let mut topics: Vec<FetchTopic> = Vec::new();
    let mut keys: Vec<(&str, Option<Uuid>)> = Vec::new();
    let mut total: usize = 0;
    let listed: Option<HashMap<&SessionKey, &PartitionFetch>> =
        session.filter(|s| !s.is_full()).map(|s| s.send.iter().map(|(k, f)| (k, f)).collect());
    for job in jobs {
        total = total.saturating_add(job.max_bytes);
        let fetch = match &listed {
            None => partition_fetch(job, version),
            Some(listed) => match listed.get(&session_key(job, by_id)) {
                Some(f) => **f,
                None => continue,
            },
        };
        let partition = FetchPartition::default()
            .with_partition(job.target.partition)
            .with_current_leader_epoch(fetch.current_leader_epoch)
            .with_fetch_offset(fetch.fetch_offset)
            .with_last_fetched_epoch(fetch.last_fetched_epoch)
            .with_partition_max_bytes(fetch.max_bytes);
        let key = topic_key(job, by_id);
        match keys.iter().position(|k| *k == key) {
            Some(i) => topics[i].partitions.push(partition),
            None => {
                keys.push(key);
                let mut topic =
                    FetchTopic::default().with_topic(job.target.topic.to_string()).with_partitions(vec![partition]);
                if let Some(id) = key.1 {
                    topic = topic.with_topic_id(id);
                }
                topics.push(topic);
            }
        }
    }
    let max_bytes = total.min(config.max_bytes_per_request.max(jobs.first().map_or(0, |j| j.max_bytes)));
    let max_wait = i32::try_from(config.max_wait.as_millis()).unwrap_or(i32::MAX);
    let (session_id, epoch, forgotten) = match session {
        None => (session::NO_SESSION, session::FINAL_EPOCH, Vec::new()),
        Some(s) => (s.session_id, s.epoch, forgotten_topics(&s.forget)),
    };
    FetchRequest::default()
        .with_replica_id(-1)
        .with_max_wait_ms(if wait { max_wait } else { NOW_MAX_WAIT_MS.min(max_wait) })
        .with_min_bytes(i32::try_from(config.min_bytes).unwrap_or(1))
        .with_max_bytes(i32::try_from(max_bytes).unwrap_or(i32::MAX))
        .with_isolation_level(jobs.first().map_or(0, |j| j.isolation.code()))
        .with_session_id(session_id)
        .with_session_epoch(epoch)
        .with_topics(topics)
        .with_forgotten_topics_data(forgotten)
}

/// The partitions a session request forgets, by topic.
fn forgotten_topics(forget: &[SessionKey]) -> Vec<ForgottenTopic> {
    let mut topics: Vec<ForgottenTopic> = Vec::new();
    let mut keys: Vec<&SessionTopic> = Vec::new();
    for (topic, partition) in forget {
        match keys.iter().position(|k| *k == topic) {
            Some(i) => topics[i].partitions.push(*partition),
            None => {
                keys.push(topic);
                let t = match topic {
                    SessionTopic::Id(id) => ForgottenTopic::default().with_topic_id(*id),
                    SessionTopic::Name(name) => ForgottenTopic::default().with_topic(name.to_string()),
                };
                topics.push(t.with_partitions(vec![*partition]));
            }
        }
    }
    topics
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use klife_connection::ConnectionConfig;
    use klife_protocol::messages::fetch_response::FetchableTopicResponse;
    use klife_testkit::FakeCluster;

    use super::*;

    /// Lets the runtime run every other task until nothing holds `what` any more: a
    /// bounded number of turns, each one a pass of the scheduler, no clock involved.
    async fn until_gone<T>(what: &Weak<T>) -> bool {
        for _ in 0..100_000 {
            if what.strong_count() == 0 {
                return true;
            }
            tokio::task::yield_now().await;
        }
        false
    }

    #[tokio::test]
    async fn the_last_handle_dropped_ends_the_batchers() {
        let kafka = FakeCluster::builder().topic("t", 2).start().await.unwrap();
        let cluster = Cluster::connect(&kafka.addresses(), ConnectionConfig::default()).await.unwrap();
        let fetcher = Fetcher::new(cluster, FetcherConfig::default()).unwrap();
        // Two batchers run (one per leader lane used), each with a fetch behind it.
        let fetched = fetcher.fetch("t", 0, 0).await.unwrap();
        assert!(fetched.records.is_empty());
        fetcher.fetch("t", 1, 0).await.unwrap();
        assert!(Arc::strong_count(&fetcher.inner.tasks) > 1, "no batcher started");
        let tasks = Arc::downgrade(&fetcher.inner.tasks);
        let inner = Arc::downgrade(&fetcher.inner);
        let clone = fetcher.clone();
        drop(fetcher);
        // A clone is still a handle: it fetches.
        clone.fetch("t", 0, 0).await.unwrap();
        drop(clone);
        assert!(until_gone(&tasks).await, "the batchers still run");
        assert_eq!(inner.strong_count(), 0);
        kafka.shutdown().await;
    }

    /// One Produce request with a batch of `records` values of 100 bytes in each of
    /// `partitions` of `topic`.
    async fn produce_to_each(cluster: &Cluster, topic: &str, partitions: &[i32], records: usize) {
        use klife_protocol::messages::ProduceRequest;
        use klife_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
        use klife_protocol::records::{BatchOptions, RecordBatchWriter};
        let data = partitions
            .iter()
            .map(|p| {
                let mut w = RecordBatchWriter::new(BatchOptions::default());
                for _ in 0..records {
                    w.append(0, None, Some(&[b'v'; 100])).unwrap();
                }
                PartitionProduceData::default().with_index(*p).with_records(Some(w.finish().unwrap()))
            })
            .collect();
        let conn = cluster.leader(topic, partitions[0]).await.unwrap().connection;
        let request = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(10_000)
            .with_topic_data(vec![TopicProduceData::default().with_name(topic.to_owned()).with_partition_data(data)]);
        let response = conn.send(&request).await.unwrap();
        for p in &response.responses[0].partition_responses {
            assert_eq!(ErrorCode::from_code(p.error_code), ErrorCode::None);
        }
    }

    /// A waiting request carries every caught-up partition of the broker, more bytes in
    /// all than `max_bytes_per_request`; the broker keeps the answer within that limit
    /// and may cut the last partition it fills in the middle of a batch. That partition
    /// is asked again at once, as one left out is: its batch fits what it asks for.
    #[tokio::test]
    async fn a_partition_cut_short_by_the_request_limit_is_asked_again() {
        let kafka = FakeCluster::builder().topic("t", 2).start().await.unwrap();
        let cluster = Cluster::connect(&kafka.addresses(), ConnectionConfig::default()).await.unwrap();
        let config = FetcherConfig::default()
            .with_max_bytes_per_request(1500)
            .with_partition_max_bytes(1200)
            .with_max_wait(Duration::from_millis(200));
        let fetcher = Fetcher::new(cluster.clone(), config).unwrap();
        let mut consumer = crate::Consumer::new(fetcher, FetchOptions::default());
        let from_start = crate::StartOffset::Offset(0);
        consumer.assign(&[("t", 0, from_start), ("t", 1, from_start)]).await.unwrap();
        let reads = tokio::spawn(async move {
            let mut counts = [0usize; 2];
            while counts != [8, 8] {
                match consumer.next().await {
                    Some(Ok(f)) => counts[usize::try_from(f.partition).unwrap()] += f.records.len(),
                    Some(Err(e)) => return Err(e),
                    None => break,
                }
            }
            Ok(counts)
        });
        // Both partitions are caught up: after a round or two their fetches wait in one
        // request, which asks for 2 × 1,200 bytes.
        tokio::time::sleep(Duration::from_millis(800)).await;
        // About 930 bytes each: the answer holds one batch whole and the first 570
        // bytes of the other.
        produce_to_each(&cluster, "t", &[0, 1], 8).await;
        let counts = tokio::time::timeout(Duration::from_secs(20), reads).await.unwrap().unwrap();
        assert_eq!(counts.unwrap(), [8, 8]);
        kafka.shutdown().await;
    }

    fn job(topic: &str, partition: i32, topic_id: Option<Uuid>) -> Job {
        let now = Instant::now();
        let (tx, _) = oneshot::channel();
        Job {
            target: TopicPartitionOffset::new(topic, partition, 10),
            isolation: IsolationLevel::ReadCommitted,
            max_bytes: 100,
            started: now,
            deadline: now,
            attempts: 0,
            looked_up: false,
            topic_id,
            by_id: topic_id.is_some(),
            leader_epoch: 4,
            last_epoch: Some(3),
            wait: false,
            first: false,
            reply: Reply::Once(tx),
        }
    }

    #[test]
    fn requests_carry_ids_and_epochs_where_the_version_has_them() {
        use klife_protocol::Message;
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let jobs = in_request_order(vec![job("a", 0, Some(a)), job("b", 0, Some(b)), job("a", 1, Some(a))], true);
        let config = FetcherConfig::default();
        // (version) → (ids written, current leader epoch, last fetched epoch)
        for (version, ids, current, last) in
            [(17, true, 4, 3), (13, true, 4, 3), (12, false, 4, 3), (11, false, 4, -1), (8, false, -1, -1)]
        {
            let by_id = version > position::FETCH_MAX_VERSION_BY_NAME;
            let jobs = in_request_order(
                jobs.iter().map(|j| job(&j.target.topic, j.target.partition, j.topic_id)).collect(),
                by_id,
            );
            let request = build_request(&config, &jobs, false, version, None);
            let topics: Vec<(&str, Uuid, usize)> =
                request.topics.iter().map(|t| (t.topic.as_str(), t.topic_id, t.partitions.len())).collect();
            let want_ids = if ids { (a, b) } else { (Uuid::NIL, Uuid::NIL) };
            assert_eq!(topics, [("a", want_ids.0, 2), ("b", want_ids.1, 1)], "v{version}");
            for p in request.topics.iter().flat_map(|t| &t.partitions) {
                assert_eq!((p.current_leader_epoch, p.last_fetched_epoch), (current, last), "v{version}");
            }
            let mut buf = bytes::BytesMut::new();
            request.encode(&mut buf, version).unwrap_or_else(|e| panic!("v{version}: {e}"));
        }
    }

    #[test]
    fn a_session_request_lists_only_what_it_sends_and_forgets_by_topic() {
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let jobs = vec![job("a", 0, Some(a)), job("a", 1, Some(a)), job("b", 0, Some(b))];
        let config = FetcherConfig::default();
        let version = 17;
        // Incremental: only a-1 changed; b-3 and b-4 are forgotten.
        let mut changed = partition_fetch(&jobs[1], version);
        changed.fetch_offset = 12;
        let incremental = SessionRequest {
            session_id: 9,
            epoch: 4,
            send: vec![((SessionTopic::Id(a), 1), changed)],
            forget: vec![(SessionTopic::Id(b), 3), (SessionTopic::Id(b), 4)],
        };
        let request = build_request(&config, &jobs, true, version, Some(&incremental));
        assert_eq!((request.session_id, request.session_epoch), (9, 4));
        let listed: Vec<(Uuid, i32, i64)> = request
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter().map(move |p| (t.topic_id, p.partition, p.fetch_offset)))
            .collect();
        assert_eq!(listed, [(a, 1, 12)]);
        let forgotten: Vec<(Uuid, Vec<i32>)> =
            request.forgotten_topics_data.iter().map(|t| (t.topic_id, t.partitions.clone())).collect();
        assert_eq!(forgotten, [(b, vec![3, 4])]);
        // The byte limit covers every fetch of the session the answer may hold.
        assert_eq!(request.max_bytes, 300);
        // Full, opening a session: every partition, nothing forgotten.
        let full = SessionRequest { session_id: 9, epoch: 0, send: Vec::new(), forget: Vec::new() };
        let request = build_request(&config, &jobs, true, version, Some(&full));
        assert_eq!((request.session_id, request.session_epoch), (9, 0));
        assert_eq!(request.topics.iter().map(|t| t.partitions.len()).sum::<usize>(), 3);
        assert!(request.forgotten_topics_data.is_empty());
        // Before v13, by name.
        let by_name = SessionRequest {
            session_id: 9,
            epoch: 2,
            send: Vec::new(),
            forget: vec![(SessionTopic::Name("b".into()), 0)],
        };
        let request = build_request(&config, &jobs, true, 12, Some(&by_name));
        assert!(request.topics.is_empty());
        assert_eq!(request.forgotten_topics_data[0].topic, "b");
        // Without a session: sessionless.
        let request = build_request(&config, &jobs, false, version, None);
        assert_eq!((request.session_id, request.session_epoch), (0, -1));
    }

    #[test]
    fn answers_are_found_by_the_topic_the_request_named() {
        let (asked, other) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let part = |index: i32, hw: i64| PartitionData::default().with_partition_index(index).with_high_watermark(hw);
        // From v13 topics come back by id with empty names: a topic nobody asked for,
        // and a partition repeated, are there but never taken for another.
        let response = FetchResponse::default().with_responses(vec![
            FetchableTopicResponse::default().with_topic_id(other).with_partitions(vec![part(0, 99)]),
            FetchableTopicResponse::default().with_topic_id(asked).with_partitions(vec![part(0, 7), part(0, 8)]),
        ]);
        let answers = index_answers(&response, true);
        assert_eq!(answers.get(&(AnswerTopic::Id(asked), 0)).map(|p| p.high_watermark), Some(7));
        assert_eq!(answers.get(&(AnswerTopic::Id(asked), 1)).map(|p| p.high_watermark), None);
        assert_eq!(answers.get(&(AnswerTopic::Name(""), 0)).map(|p| p.high_watermark), None);
        // Before v13, by name.
        let response = FetchResponse::default().with_responses(vec![
            FetchableTopicResponse::default().with_topic("t".into()).with_partitions(vec![part(3, 5)]),
        ]);
        let answers = index_answers(&response, false);
        assert_eq!(answers.get(&(AnswerTopic::Name("t"), 3)).map(|p| p.high_watermark), Some(5));
        assert_eq!(answers.get(&(AnswerTopic::Id(Uuid::NIL), 3)).map(|p| p.high_watermark), None);
    }

    #[test]
    fn partitions_spread_over_batchers_and_stay_put() {
        let slots: Vec<usize> = (0..64).map(|p| slot_of("orders", p, 4)).collect();
        for s in 0..4 {
            assert!(slots.contains(&s), "slot {s} got no partition: {slots:?}");
        }
        assert_eq!(slot_of("orders", 5, 4), slots[5]);
        assert!((0..64).all(|p| slot_of("x", p, 1) == 0));
    }
}
