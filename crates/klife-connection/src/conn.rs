//! One connection to one broker: a writer task and a reader task around a socket,
//! requests pipelined up to a bound and matched to responses by correlation id.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use klife_protocol::frame::{self, FrameError};
use klife_protocol::{ApiKey, Request};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};

use crate::error::{Error, TimeoutKind};
use crate::telemetry;
use crate::versions::BrokerVersions;

/// The reading half of a transport.
pub(crate) type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
/// The writing half of a transport.
pub(crate) type BoxWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// Frames queued for the writer before senders wait.
const WRITE_QUEUE: usize = 256;
/// Bytes the writer buffers before it writes to the socket.
const WRITE_BUFFER: usize = 64 * 1024;
/// How long a closing connection may spend flushing to a peer.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// A connection to a broker, cheap to clone: clones share the socket.
///
/// Requests are written in the order they are sent and answered in that order by the
/// broker; up to `max_in_flight` wait for answers at once, further senders wait for
/// a slot. When the connection breaks, every request in flight fails with
/// [`Error::Disconnected`] and later sends fail at once; the owner reconnects. When
/// the last clone is dropped, the connection closes once the answers still awaited
/// (through a [`Queued`]) have come.
#[derive(Clone)]
pub struct Connection {
    shared: Arc<Shared>,
    writes: mpsc::Sender<Outgoing>,
}

/// A frame for the writer: whole, or in parts written one after the other.
enum Outgoing {
    Frame(Bytes),
    Parts(Vec<Bytes>),
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("id", &self.shared.id)
            .field("broker", &self.shared.broker)
            .field("closed", &self.is_closed())
            .finish()
    }
}

struct Pending {
    tx: oneshot::Sender<Result<Bytes, Error>>,
    _permit: OwnedSemaphorePermit,
}

/// Removes a request's entry from the pending map when dropped.
struct PendingEntry {
    shared: Arc<Shared>,
    id: i32,
}

impl Drop for PendingEntry {
    fn drop(&mut self) {
        self.shared.lock().requests.remove(&self.id);
    }
}

/// A request queued for writing on a [`Connection`], whose answer is awaited with
/// [`response`](Self::response).
///
/// Requests queued one after the other from one task are written in that order, and
/// brokers answer a connection's requests in order: this is how a caller pipelines
/// requests whose order matters (a partition's Produce batches). Dropping it gives up
/// on the answer and frees its slot; the request may still be written. While it is
/// held, the connection stays open for its answer, even if every [`Connection`] handle
/// is gone.
#[must_use = "the answer is only read through `response`"]
pub struct Queued<T> {
    entry: PendingEntry,
    /// Keeps the writer, and so the connection, running until the answer came.
    _connection: mpsc::Sender<Outgoing>,
    rx: oneshot::Receiver<Result<Bytes, Error>>,
    deadline: tokio::time::Instant,
    /// The timeout that sets `deadline`, and which one it is.
    timeout: (Duration, TimeoutKind),
    started: Instant,
    api: ApiKey,
    version: i16,
    /// The request's `klife.request` span (disabled unless a subscriber takes it).
    span: tracing::Span,
    _answer: std::marker::PhantomData<fn() -> T>,
}

impl<T> std::fmt::Debug for Queued<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queued").field("api", &self.api).field("version", &self.version).finish()
    }
}

impl<T: klife_protocol::Response> Queued<T> {
    /// Waits for the answer (within the request's timeout, counted from when the
    /// request was queued) and decodes it.
    pub async fn response(mut self) -> Result<T, Error> {
        let (api, version, started) = (self.api, self.version, self.started);
        let span = std::mem::replace(&mut self.span, tracing::Span::none());
        let shared = self.entry.shared.clone();
        let result = self.frame().await.and_then(|frame| {
            frame::decode_response::<T>(frame, version).map(|(_, r)| r).map_err(|source| Error::Decode {
                broker: shared.broker.clone(),
                api,
                version,
                source,
            })
        });
        let elapsed = started.elapsed();
        telemetry::finish_request(&span, elapsed, result.as_ref().err().map(|e| e as &dyn std::fmt::Display));
        // `error`: no answer (timed out, disconnected), or an unreadable one.
        telemetry::record_request(api, elapsed, result.is_ok());
        result
    }
}

impl<T> Queued<T> {
    /// Waits for the raw answer frame.
    async fn frame(self) -> Result<Bytes, Error> {
        let Queued { entry, rx, deadline, timeout: (timeout, kind), api, _connection, .. } = self;
        let shared = &entry.shared;
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(result) => result.unwrap_or_else(|_| Err(shared.disconnected())),
            Err(_) => {
                // The Java client does the same: a broker that does not answer in time
                // is suspect, and the requests queued behind this one would wait too.
                shared.close("request timed out");
                Err(Error::Timeout { broker: shared.broker.clone(), api, timeout, kind })
            }
        }
    }

    /// Waits for the raw answer frame, and ends the request's span.
    async fn raw(mut self) -> Result<Bytes, Error> {
        let (span, started) = (std::mem::replace(&mut self.span, tracing::Span::none()), self.started);
        let result = self.frame().await;
        telemetry::finish_request(&span, started.elapsed(), result.as_ref().err().map(|e| e as &dyn std::fmt::Display));
        result
    }
}

#[derive(Default)]
struct PendingState {
    /// Set once the connection is closed, with the reason.
    closed: Option<String>,
    requests: HashMap<i32, Pending>,
}

struct Shared {
    id: u64,
    broker: String,
    /// The broker's node id (`None` for a bootstrap connection), for request spans.
    node_id: Option<i32>,
    client_id: Option<String>,
    versions: BrokerVersions,
    request_timeout: Duration,
    correlation: AtomicI32,
    in_flight: Arc<Semaphore>,
    pending: Mutex<PendingState>,
    closed: watch::Sender<bool>,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, PendingState> {
        crate::sync::lock(&self.pending)
    }

    /// Closes the connection: fails every request in flight and stops both tasks.
    fn close(&self, reason: &str) {
        let drained: Vec<Pending> = {
            let mut state = self.lock();
            if state.closed.is_some() {
                return;
            }
            state.closed = Some(reason.to_owned());
            state.requests.drain().map(|(_, p)| p).collect()
        };
        if !drained.is_empty() {
            tracing::debug!(broker = %self.broker, reason, in_flight = drained.len(), "connection closed with requests in flight");
        } else {
            tracing::debug!(broker = %self.broker, reason, "connection closed");
        }
        for p in drained {
            let _ = p.tx.send(Err(Error::Disconnected { broker: self.broker.clone(), reason: reason.to_owned() }));
        }
        self.in_flight.close();
        self.closed.send_replace(true);
    }

    fn disconnected(&self) -> Error {
        let reason = self.lock().closed.clone().unwrap_or_else(|| "closed".to_owned());
        Error::Disconnected { broker: self.broker.clone(), reason }
    }
}

/// Settings for one connection's tasks.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionParams {
    pub(crate) broker: String,
    /// The broker's node id; `None` for a bootstrap connection.
    pub(crate) node_id: Option<i32>,
    pub(crate) client_id: Option<String>,
    pub(crate) max_in_flight: usize,
    pub(crate) request_timeout: Duration,
    pub(crate) max_frame_size: usize,
}

impl Connection {
    /// Starts the reader and writer tasks on an established, authenticated transport.
    pub(crate) fn spawn(
        params: ConnectionParams,
        versions: BrokerVersions,
        read: BoxRead,
        write: BoxWrite,
        next_correlation_id: i32,
    ) -> Connection {
        let (closed, closed_rx) = watch::channel(false);
        static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let shared = Arc::new(Shared {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            broker: params.broker,
            node_id: params.node_id,
            client_id: params.client_id,
            versions,
            request_timeout: params.request_timeout,
            correlation: AtomicI32::new(next_correlation_id),
            in_flight: Arc::new(Semaphore::new(params.max_in_flight)),
            pending: Mutex::new(PendingState::default()),
            closed,
        });
        let (writes, rx) = mpsc::channel(WRITE_QUEUE);
        tokio::spawn(writer(shared.clone(), write, rx, closed_rx.clone()));
        tokio::spawn(reader(shared.clone(), read, params.max_frame_size, closed_rx));
        Connection { shared, writes }
    }

    /// A process-wide unique id of this connection (clones share it), for logs and
    /// tests.
    pub fn id(&self) -> u64 {
        self.shared.id
    }

    /// The broker this connection talks to (`node@host:port`, or `host:port` for a
    /// bootstrap connection).
    pub fn broker(&self) -> &str {
        &self.shared.broker
    }

    /// What the broker said it supports.
    pub fn versions(&self) -> &BrokerVersions {
        &self.shared.versions
    }

    /// Whether the connection is closed (broken, timed out, or closed on purpose).
    pub fn is_closed(&self) -> bool {
        self.shared.lock().closed.is_some()
    }

    /// Closes the connection; requests in flight fail with [`Error::Disconnected`].
    pub fn close(&self) {
        self.shared.close("closed by the client");
    }

    /// The version to use for `api`: the highest both sides support, capped at `max`.
    pub fn version_for(&self, api: ApiKey, max: Option<i16>) -> Result<i16, Error> {
        self.shared.versions.negotiate(api, max, &self.shared.broker)
    }

    /// Sends a request at the highest version both sides support and waits for its
    /// answer.
    pub async fn send<R: Request>(&self, request: &R) -> Result<R::Response, Error> {
        let version = self.version_for(R::API_KEY, None)?;
        self.send_version(request, version).await
    }

    /// Sends a request at `version` (which the caller has negotiated) and waits for
    /// its answer.
    pub async fn send_version<R: Request>(&self, request: &R, version: i16) -> Result<R::Response, Error> {
        self.queue(request, version, 128).await?.response().await
    }

    /// [`send`](Self::send) with a timeout of the request's own instead of the
    /// connection's `request_timeout`: for a request the broker may rightly hold for
    /// long (a classic JoinGroup waits for the whole rebalance; the Java client gives
    /// it the rebalance timeout plus 5 s). Running out fails with [`Error::Timeout`]
    /// of kind [`TimeoutKind::Request`] and closes the connection, as the connection's
    /// timeout does.
    ///
    /// Brokers answer a connection's requests in order, so requests queued behind a
    /// long one wait for it: send it on a connection of its own (a [`Lane`](crate::Lane)).
    pub async fn send_with_timeout<R: Request>(&self, request: &R, timeout: Duration) -> Result<R::Response, Error> {
        let version = self.version_for(R::API_KEY, None)?;
        self.send_version_with_timeout(request, version, timeout).await
    }

    /// [`send_version`](Self::send_version) with a timeout of the request's own (see
    /// [`send_with_timeout`](Self::send_with_timeout)).
    pub async fn send_version_with_timeout<R: Request>(
        &self,
        request: &R,
        version: i16,
        timeout: Duration,
    ) -> Result<R::Response, Error> {
        let client_id = self.shared.client_id.as_deref();
        self.queue_with(R::API_KEY, version, Some(timeout), |id| encode_frame(id, client_id, version, request, 128))
            .await?
            .response()
            .await
    }

    /// Queues a request at `version` for writing, encoded into a buffer of `capacity`
    /// bytes, and returns once it is queued (after waiting for a free slot if all
    /// `max_in_flight` are taken); the answer comes through the returned [`Queued`].
    /// Requests queued in turn by one task are written in that order.
    pub async fn queue<R: Request>(
        &self,
        request: &R,
        version: i16,
        capacity: usize,
    ) -> Result<Queued<R::Response>, Error> {
        let client_id = self.shared.client_id.as_deref();
        self.queue_with(R::API_KEY, version, None, |id| encode_frame(id, client_id, version, request, capacity)).await
    }

    /// Like [`queue`](Self::queue), for a request whose body the caller encoded as
    /// parts (a Produce request's record batches, with
    /// [`ProduceRequest::encode_parts`](klife_protocol::messages::ProduceRequest::encode_parts)):
    /// the connection puts the frame head in front, and the parts are written as they
    /// are, without being copied into one buffer.
    pub async fn queue_parts<R: Request>(&self, version: i16, body: Vec<Bytes>) -> Result<Queued<R::Response>, Error> {
        let client_id = self.shared.client_id.as_deref();
        let body_len = body.iter().map(Bytes::len).sum();
        self.queue_with(R::API_KEY, version, None, move |id| {
            let mut head = BytesMut::with_capacity(64 + client_id.map_or(0, str::len));
            frame::encode_request_head(&mut head, R::API_KEY, id, client_id, version, body_len)?;
            let mut parts = Vec::with_capacity(body.len() + 1);
            parts.push(head.freeze());
            parts.extend(body);
            Ok(Outgoing::Parts(parts))
        })
        .await
    }

    /// Takes a slot, encodes the frame with its correlation id, registers it and hands
    /// it to the writer. `timeout` is the request's own (`None`: the connection's).
    async fn queue_with<T>(
        &self,
        api: ApiKey,
        version: i16,
        timeout: Option<Duration>,
        encode: impl FnOnce(i32) -> Result<Outgoing, klife_protocol::EncodeError>,
    ) -> Result<Queued<T>, Error> {
        let started = Instant::now();
        let (timeout, kind) = match timeout {
            Some(t) => (t, TimeoutKind::Request),
            None => (self.shared.request_timeout, TimeoutKind::Connection),
        };
        let timed_out = || Error::Timeout { broker: self.shared.broker.clone(), api, timeout, kind };
        let deadline = tokio::time::Instant::now() + timeout;
        // Waiting for a free slot counts against the request's timeout too.
        let permit = match tokio::time::timeout_at(deadline, self.shared.in_flight.clone().acquire_owned()).await {
            Ok(Ok(p)) => p,
            Ok(Err(_)) => return Err(self.shared.disconnected()),
            Err(_) => return Err(timed_out()),
        };
        let id = self.shared.correlation.fetch_add(1, Ordering::Relaxed) & i32::MAX;
        let span = telemetry::request_span(api, version, self.shared.node_id, &self.shared.broker, id);
        let frame = match encode(id) {
            Ok(frame) => frame,
            Err(source) => {
                let e = Error::Encode { api, version, source };
                telemetry::finish_request(&span, started.elapsed(), Some(&e));
                return Err(e);
            }
        };
        let (tx, rx) = oneshot::channel();
        {
            let mut state = self.shared.lock();
            if state.closed.is_some() {
                drop(state);
                let e = self.shared.disconnected();
                telemetry::finish_request(&span, started.elapsed(), Some(&e));
                return Err(e);
            }
            state.requests.insert(id, Pending { tx, _permit: permit });
        }
        // From here the entry is removed whatever happens (answered, failed, timed
        // out, or dropped by the caller), so its slot is always freed.
        let entry = PendingEntry { shared: self.shared.clone(), id };
        let sent = match tokio::time::timeout_at(deadline, self.writes.send(frame)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(self.shared.disconnected()),
            Err(_) => {
                self.shared.close("request timed out");
                Err(timed_out())
            }
        };
        if let Err(e) = sent {
            telemetry::finish_request(&span, started.elapsed(), Some(&e));
            return Err(e);
        }
        Ok(Queued {
            entry,
            _connection: self.writes.clone(),
            rx,
            deadline,
            timeout: (timeout, kind),
            started,
            api,
            version,
            span,
            _answer: std::marker::PhantomData,
        })
    }

    /// Sends a request and returns the raw response frame (header included), for
    /// callers that decode it themselves.
    pub async fn send_raw<R: Request>(&self, request: &R, version: i16) -> Result<Bytes, Error> {
        self.queue(request, version, 128).await?.raw().await
    }

    /// Sends a request the broker does not answer (a Produce with `acks = 0`): returns
    /// once it is queued for writing.
    pub async fn send_no_response<R: Request>(&self, request: &R, version: i16) -> Result<(), Error> {
        let started = Instant::now();
        let _permit = self.shared.in_flight.acquire().await.map_err(|_| self.shared.disconnected())?;
        let id = self.shared.correlation.fetch_add(1, Ordering::Relaxed) & i32::MAX;
        let span = telemetry::request_span(R::API_KEY, version, self.shared.node_id, &self.shared.broker, id);
        let result = async {
            let mut buf = BytesMut::with_capacity(128);
            frame::encode_request(&mut buf, id, self.shared.client_id.as_deref(), version, request)
                .map_err(|source| Error::Encode { api: R::API_KEY, version, source })?;
            if self.is_closed() {
                return Err(self.shared.disconnected());
            }
            self.writes.send(Outgoing::Frame(buf.freeze())).await.map_err(|_| self.shared.disconnected())
        }
        .await;
        // No answer comes: the span ends once the request is queued for writing.
        telemetry::finish_request(&span, started.elapsed(), result.as_ref().err().map(|e| e as &dyn std::fmt::Display));
        result
    }
}

/// A request's whole frame, encoded into a buffer of `capacity` bytes (at least 128).
fn encode_frame<R: Request>(
    id: i32,
    client_id: Option<&str>,
    version: i16,
    request: &R,
    capacity: usize,
) -> Result<Outgoing, klife_protocol::EncodeError> {
    let mut buf = BytesMut::with_capacity(capacity.max(128));
    frame::encode_request(&mut buf, id, client_id, version, request)?;
    Ok(Outgoing::Frame(buf.freeze()))
}

async fn writer(
    shared: Arc<Shared>,
    write: BoxWrite,
    mut rx: mpsc::Receiver<Outgoing>,
    mut closed: watch::Receiver<bool>,
) {
    let mut out = BufWriter::with_capacity(WRITE_BUFFER, write);
    let mut frames = Vec::with_capacity(64);
    let reason = loop {
        tokio::select! {
            n = rx.recv_many(&mut frames, 64) => {
                if n == 0 {
                    break "every handle to the connection was dropped".to_owned();
                }
            }
            _ = closed.wait_for(|c| *c) => break String::new(),
        }
        let write = async {
            for f in frames.drain(..) {
                match f {
                    Outgoing::Frame(f) => {
                        telemetry::record_bytes_sent(f.len());
                        out.write_all(&f).await?;
                    }
                    Outgoing::Parts(parts) => {
                        telemetry::record_bytes_sent(parts.iter().map(Bytes::len).sum());
                        for p in parts {
                            out.write_all(&p).await?;
                        }
                    }
                }
            }
            if rx.is_empty() {
                out.flush().await?;
            }
            Ok::<(), std::io::Error>(())
        };
        // A broker that stops reading must not keep this task (and the socket) alive
        // once the connection is closed.
        tokio::select! {
            r = write => if let Err(e) = r {
                break format!("write failed: {e}");
            },
            _ = closed.wait_for(|c| *c) => break String::new(),
        }
    };
    if !reason.is_empty() {
        shared.close(&reason);
    }
    let _ = tokio::time::timeout(SHUTDOWN_GRACE, out.shutdown()).await;
}

async fn reader(shared: Arc<Shared>, mut read: BoxRead, max_frame_size: usize, mut closed: watch::Receiver<bool>) {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let reason = 'outer: loop {
        loop {
            match frame::split_frame(&mut buf, max_frame_size) {
                Ok(Some(f)) => dispatch(&shared, f),
                Ok(None) => break,
                Err(e @ FrameError::TooLarge { .. }) => {
                    break 'outer format!("{e} (raise max_frame_size if the broker sends such answers)");
                }
                Err(e) => break 'outer format!("invalid response frame: {e}"),
            }
        }
        // Room for the whole frame being read, in one allocation (a multi-megabyte
        // Fetch answer would otherwise be moved each time the buffer grows), else for
        // the next header and then some.
        let want = match buf.get(..4) {
            Some(h) => {
                let len = usize::try_from(i32::from_be_bytes([h[0], h[1], h[2], h[3]])).unwrap_or(0);
                (4 + len.min(max_frame_size)).saturating_sub(buf.len()).max(8 * 1024)
            }
            None => 64 * 1024,
        };
        if buf.capacity() - buf.len() < want {
            buf.reserve(want.max(64 * 1024));
        }
        tokio::select! {
            r = read.read_buf(&mut buf) => match r {
                Ok(0) => break "the broker closed the connection".to_owned(),
                Ok(n) => telemetry::record_bytes_received(n),
                Err(e) => break format!("read failed: {e}"),
            },
            _ = closed.wait_for(|c| *c) => return,
        }
    };
    shared.close(&reason);
}

fn dispatch(shared: &Shared, f: Bytes) {
    let Ok(id) = frame::peek_correlation_id(&f) else {
        shared.close("a response frame is shorter than its header");
        return;
    };
    let pending = shared.lock().requests.remove(&id);
    match pending {
        Some(p) => {
            let _ = p.tx.send(Ok(f));
        }
        None => tracing::debug!(broker = %shared.broker, correlation_id = id, "answer to a request nobody waits for"),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use klife_protocol::VersionRange;
    use klife_protocol::messages::{MetadataRequest, MetadataResponse};
    use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

    use super::*;

    fn connection(max_in_flight: usize) -> (Connection, DuplexStream) {
        let (client, broker) = tokio::io::duplex(1 << 16);
        let (r, w) = tokio::io::split(client);
        let params = ConnectionParams {
            broker: "test".into(),
            node_id: Some(1),
            client_id: None,
            max_in_flight,
            request_timeout: Duration::from_secs(30),
            max_frame_size: 1 << 20,
        };
        let versions = BrokerVersions::from_ranges([(ApiKey::Metadata, VersionRange::new(0, 12))]);
        (Connection::spawn(params, versions, Box::new(r), Box::new(w), 0), broker)
    }

    async fn read_request(broker: &mut DuplexStream) -> i32 {
        let size = broker.read_i32().await.unwrap();
        let mut body = vec![0; size as usize];
        broker.read_exact(&mut body).await.unwrap();
        frame::decode_request(body.into()).unwrap().0.correlation_id
    }

    async fn answer(broker: &mut DuplexStream, correlation_id: i32) {
        let mut out = BytesMut::new();
        frame::encode_response(&mut out, correlation_id, 12, &MetadataResponse::default()).unwrap();
        broker.write_all(&out).await.unwrap();
    }

    #[tokio::test]
    async fn a_request_dropped_by_its_caller_frees_its_slot() {
        let (conn, mut broker) = connection(1);
        // The broker never answers the first request; its caller gives up.
        let request = MetadataRequest::default();
        let first = tokio::time::timeout(Duration::from_millis(50), conn.send_version(&request, 12));
        assert!(first.await.is_err());
        let first_id = read_request(&mut broker).await;
        // The only in-flight slot must be free again: the next request goes out and is answered.
        let second = tokio::spawn({
            let conn = conn.clone();
            async move { conn.send_version(&MetadataRequest::default(), 12).await }
        });
        let second_id = tokio::time::timeout(Duration::from_secs(10), read_request(&mut broker)).await.unwrap();
        assert_ne!(first_id, second_id);
        answer(&mut broker, second_id).await;
        assert_eq!(second.await.unwrap().unwrap(), MetadataResponse::default());
        // A late answer to the abandoned request is ignored.
        answer(&mut broker, first_id).await;
        assert!(!conn.is_closed());
    }

    #[tokio::test]
    async fn answers_are_routed_by_correlation_id() {
        let (conn, mut broker) = connection(4);
        let sends: Vec<_> = (0..3)
            .map(|i| {
                let conn = conn.clone();
                let req = MetadataRequest::default().with_allow_auto_topic_creation(i % 2 == 0);
                tokio::spawn(async move { conn.send_raw(&req, 12).await })
            })
            .collect();
        let mut ids = Vec::new();
        for _ in 0..3 {
            ids.push(read_request(&mut broker).await);
        }
        // Answered in reverse order: each caller still gets its own answer.
        for id in ids.iter().rev() {
            let mut out = BytesMut::new();
            frame::encode_response(&mut out, *id, 12, &MetadataResponse::default().with_controller_id(*id)).unwrap();
            broker.write_all(&out).await.unwrap();
        }
        let mut got = Vec::new();
        for s in sends {
            let frame = s.await.unwrap().unwrap();
            let (header, resp) = frame::decode_response::<MetadataResponse>(frame, 12).unwrap();
            assert_eq!(resp.controller_id, header.correlation_id);
            got.push(header.correlation_id);
        }
        got.sort_unstable();
        ids.sort_unstable();
        assert_eq!(got, ids);
    }

    #[tokio::test]
    async fn a_connection_without_handles_closes_once_its_awaited_answers_came() {
        let (conn, mut broker) = connection(4);
        let queued = conn.queue(&MetadataRequest::default(), 12, 128).await.unwrap();
        drop(conn);
        let id = read_request(&mut broker).await;
        answer(&mut broker, id).await;
        assert_eq!(queued.response().await.unwrap(), MetadataResponse::default());
        // Nothing is awaited and nobody holds the connection: the broker sees it close.
        let mut rest = Vec::new();
        assert_eq!(broker.read_to_end(&mut rest).await.unwrap(), 0);
    }

    // Virtual time: the clock moves only when every task waits, so the timeouts below
    // expire exactly, whatever the machine's load.
    #[tokio::test(start_paused = true)]
    async fn a_request_may_wait_longer_than_the_connections_timeout_when_it_says_so() {
        let (conn, mut broker) = connection(4);
        let long = tokio::spawn({
            let conn = conn.clone();
            async move { conn.send_version_with_timeout(&MetadataRequest::default(), 12, Duration::from_secs(90)).await }
        });
        let id = read_request(&mut broker).await;
        // Answered after twice the connection's 30 s: within the request's own 90 s.
        tokio::time::sleep(Duration::from_secs(60)).await;
        answer(&mut broker, id).await;
        assert_eq!(long.await.unwrap().unwrap(), MetadataResponse::default());
        assert!(!conn.is_closed());

        // The same wait fails a request without a timeout of its own, naming the
        // connection's timeout.
        let plain = tokio::spawn({
            let conn = conn.clone();
            async move { conn.send_version(&MetadataRequest::default(), 12).await }
        });
        read_request(&mut broker).await;
        let err = plain.await.unwrap().unwrap_err();
        assert!(
            matches!(
                err,
                Error::Timeout { timeout, kind: TimeoutKind::Connection, api: ApiKey::Metadata, .. }
                    if timeout == Duration::from_secs(30)
            ),
            "{err}"
        );
        assert!(conn.is_closed(), "a timed-out request closes its connection");
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_timeout_shorter_than_the_connections_fails_the_request_and_says_so() {
        let (conn, mut broker) = connection(4);
        let short = tokio::spawn({
            let conn = conn.clone();
            async move { conn.send_with_timeout(&MetadataRequest::default(), Duration::from_secs(2)).await }
        });
        read_request(&mut broker).await;
        let err = short.await.unwrap().unwrap_err();
        assert!(
            matches!(err, Error::Timeout { timeout, kind: TimeoutKind::Request, .. } if timeout == Duration::from_secs(2)),
            "{err}"
        );
        assert!(err.is_retriable());
        assert!(err.to_string().contains("the timeout given with the request"), "{err}");
        assert!(conn.is_closed());
    }

    #[tokio::test]
    async fn a_broken_connection_fails_requests_in_flight_and_refuses_new_ones() {
        let (conn, mut broker) = connection(4);
        let pending = tokio::spawn({
            let conn = conn.clone();
            async move { conn.send_version(&MetadataRequest::default(), 12).await }
        });
        read_request(&mut broker).await;
        drop(broker);
        let err = pending.await.unwrap().unwrap_err();
        assert!(matches!(err, Error::Disconnected { .. }) && err.is_retriable(), "{err}");
        let err = conn.send_version(&MetadataRequest::default(), 12).await.unwrap_err();
        assert!(matches!(err, Error::Disconnected { .. }), "{err}");
    }
}
