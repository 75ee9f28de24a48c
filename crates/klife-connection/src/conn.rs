//! One connection to one broker: a writer task and a reader task around a socket,
//! requests pipelined up to a bound and matched to responses by correlation id.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use klife_protocol::frame::{self, FrameError};
use klife_protocol::{ApiKey, Request};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};

use crate::Error;
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

/// A connection to a broker, cheap to clone: clones share the socket.
///
/// Requests are written in the order they are sent and answered in that order by the
/// broker; up to `max_in_flight` wait for answers at once, further senders wait for
/// a slot. When the connection breaks, every request in flight fails with
/// [`Error::Disconnected`] and later sends fail at once; the owner reconnects.
#[derive(Clone)]
pub struct Connection {
    shared: Arc<Shared>,
    writes: mpsc::Sender<Bytes>,
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

#[derive(Default)]
struct PendingState {
    /// Set once the connection is closed, with the reason.
    closed: Option<String>,
    requests: HashMap<i32, Pending>,
}

struct Shared {
    id: u64,
    broker: String,
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
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
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
        let started = Instant::now();
        let frame = self.send_raw(request, version).await?;
        let result = frame::decode_response::<R::Response>(frame, version)
            .map(|(_, r)| r)
            .map_err(|source| Error::Decode { broker: self.shared.broker.clone(), api: R::API_KEY, version, source });
        telemetry::record_request(R::API_KEY, started.elapsed(), result.is_ok());
        result
    }

    /// Sends a request and returns the raw response frame (header included), for
    /// callers that decode it themselves.
    pub async fn send_raw<R: Request>(&self, request: &R, version: i16) -> Result<Bytes, Error> {
        let permit = self.shared.in_flight.clone().acquire_owned().await.map_err(|_| self.shared.disconnected())?;
        let id = self.shared.correlation.fetch_add(1, Ordering::Relaxed) & i32::MAX;
        let mut buf = BytesMut::with_capacity(128);
        frame::encode_request(&mut buf, id, self.shared.client_id.as_deref(), version, request)
            .map_err(|source| Error::Encode { api: R::API_KEY, version, source })?;
        let (tx, rx) = oneshot::channel();
        {
            let mut state = self.shared.lock();
            if state.closed.is_some() {
                drop(state);
                return Err(self.shared.disconnected());
            }
            state.requests.insert(id, Pending { tx, _permit: permit });
        }
        if self.writes.send(buf.freeze()).await.is_err() {
            self.shared.lock().requests.remove(&id);
            return Err(self.shared.disconnected());
        }
        match tokio::time::timeout(self.shared.request_timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(self.shared.disconnected()),
            Err(_) => {
                self.shared.lock().requests.remove(&id);
                // The Java client does the same: a broker that does not answer in time
                // is suspect, and the requests queued behind this one would wait too.
                self.shared.close("request timed out");
                Err(Error::Timeout {
                    broker: self.shared.broker.clone(),
                    api: R::API_KEY,
                    timeout: self.shared.request_timeout,
                })
            }
        }
    }

    /// Sends a request the broker does not answer (a Produce with `acks = 0`): returns
    /// once it is queued for writing.
    pub async fn send_no_response<R: Request>(&self, request: &R, version: i16) -> Result<(), Error> {
        let _permit = self.shared.in_flight.acquire().await.map_err(|_| self.shared.disconnected())?;
        let id = self.shared.correlation.fetch_add(1, Ordering::Relaxed) & i32::MAX;
        let mut buf = BytesMut::with_capacity(128);
        frame::encode_request(&mut buf, id, self.shared.client_id.as_deref(), version, request)
            .map_err(|source| Error::Encode { api: R::API_KEY, version, source })?;
        if self.is_closed() {
            return Err(self.shared.disconnected());
        }
        self.writes.send(buf.freeze()).await.map_err(|_| self.shared.disconnected())
    }
}

async fn writer(
    shared: Arc<Shared>,
    write: BoxWrite,
    mut rx: mpsc::Receiver<Bytes>,
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
        let mut failed = None;
        for f in frames.drain(..) {
            telemetry::record_bytes_sent(f.len());
            if let Err(e) = out.write_all(&f).await {
                failed = Some(e);
                break;
            }
        }
        if failed.is_none() && rx.is_empty() {
            failed = out.flush().await.err();
        }
        if let Some(e) = failed {
            break format!("write failed: {e}");
        }
    };
    if !reason.is_empty() {
        shared.close(&reason);
    }
    let _ = out.shutdown().await;
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
        if buf.capacity() - buf.len() < 8 * 1024 {
            buf.reserve(64 * 1024);
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
