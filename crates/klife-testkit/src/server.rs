//! The async driver: one listener task per broker, one task per connection. A
//! connection task reads frames, decodes them with klife-protocol, runs TLS and SASL,
//! calls the handlers under the state lock (never held across an await), long-polls
//! fetches, and writes the answers in order, as Kafka answers one request of a
//! connection at a time.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use klife_protocol::frame::{self, FrameError};
use klife_protocol::messages::{FetchRequest, SaslAuthenticateResponse, SaslHandshakeResponse};
use klife_protocol::{AnyRequest, AnyResponse, ApiKey, ErrorCode};
use sasl::server::{Mechanism, Response};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::handlers::{self, Ctx, Reply, fetch};
use crate::sasl::Users;
use crate::state::{FaultAction, RequestRecord, State};

/// How long a TLS handshake may take before the connection is dropped.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the listener and connection tasks share with the [`FakeCluster`](crate::FakeCluster).
pub(crate) struct Shared {
    pub(crate) state: Mutex<State>,
    /// Bumped whenever records are appended or leadership changes: wakes long polls.
    pub(crate) changed: watch::Sender<u64>,
    /// Bumped to drop every connection of a broker.
    pub(crate) kills: BTreeMap<i32, watch::Sender<u64>>,
    /// Bumped whenever a group's membership moved on: wakes parked joins and syncs.
    pub(crate) groups_changed: watch::Sender<u64>,
    /// Set once, to stop every task.
    pub(crate) shutdown: watch::Sender<bool>,
    pub(crate) tls: Option<TlsAcceptor>,
    pub(crate) sasl: Option<Users>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared").field("tls", &self.tls.is_some()).field("sasl", &self.sasl).finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn notify_changed(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    pub(crate) fn notify_groups(&self) {
        self.groups_changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    pub(crate) fn kill_connections(&self, broker: i32) {
        if let Some(k) = self.kills.get(&broker) {
            k.send_modify(|v| *v = v.wrapping_add(1));
        }
    }

    /// Runs the timers due on the cluster clock now, and wakes whoever waits on what
    /// they changed.
    pub(crate) fn run_timers(&self) {
        let (groups, logs) = {
            let mut state = self.lock();
            let now = state.clock.now_ms();
            let groups = state.coordinator.tick(now);
            (groups, handlers::abort_timed_out_transactions(&mut state, now))
        };
        if groups {
            self.notify_groups();
        }
        if logs {
            self.notify_changed();
        }
    }
}

/// How often the cluster runs its timers (group sessions and barriers, the transaction
/// coordinator's look for timed-out transactions when due) on its own; tests with a
/// manual clock run them through `FakeCluster::advance_clock`.
const TICK: Duration = Duration::from_millis(10);

/// Runs the cluster's timers until shutdown.
pub(crate) fn spawn_ticker(shared: Arc<Shared>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut shutdown = shared.shutdown.subscribe();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(TICK) => {}
                _ = shutdown.changed() => return,
            }
            shared.run_timers();
        }
    })
}

/// A parked request's ticket: dropped before its answer came (the connection closed),
/// it tells the coordinator to drop the answer.
struct ParkedTicket<'a> {
    shared: &'a Shared,
    ticket: u64,
    answered: bool,
}

impl Drop for ParkedTicket<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.shared.lock().coordinator.abandon(self.ticket);
        }
    }
}

/// Waits for the answer of a parked join or sync.
async fn await_parked(shared: &Shared, ticket: u64) -> AnyResponse {
    let mut guard = ParkedTicket { shared, ticket, answered: false };
    let mut changed = shared.groups_changed.subscribe();
    loop {
        if let Some(answer) = shared.lock().coordinator.take_answer(ticket) {
            guard.answered = true;
            return answer;
        }
        // A closed channel means shutdown: the connection ends through its own select.
        if changed.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// Accepts connections for `broker` until shutdown or until the task is aborted (which
/// closes the listening socket: the broker is down).
pub(crate) fn spawn_listener(shared: Arc<Shared>, broker: i32, listener: TcpListener) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut shutdown = shared.shutdown.subscribe();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        tracing::debug!(broker, %peer, "connection accepted");
                        tokio::spawn(connection(shared.clone(), broker, tcp));
                    }
                    Err(e) => {
                        tracing::warn!(broker, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                },
                _ = shutdown.changed() => return,
            }
        }
    })
}

/// Counts a broker's open connections while alive.
struct ConnectionGuard {
    shared: Arc<Shared>,
    broker: i32,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        if let Some(b) = self.shared.lock().brokers.get_mut(&self.broker) {
            b.connections = b.connections.saturating_sub(1);
        }
    }
}

/// A client address as Kafka prints it (Java's `InetAddress.toString` without a host
/// name): `/127.0.0.1`, or IPv6 in full, `/0:0:0:0:0:0:0:1`.
fn client_host(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => format!("/{v4}"),
        IpAddr::V6(v6) => {
            let groups: Vec<String> = v6.segments().iter().map(|g| format!("{g:x}")).collect();
            format!("/{}", groups.join(":"))
        }
    }
}

async fn connection(shared: Arc<Shared>, broker: i32, tcp: TcpStream) {
    if let Some(b) = shared.lock().brokers.get_mut(&broker) {
        b.connections += 1;
    }
    let _guard = ConnectionGuard { shared: shared.clone(), broker };
    let _ = tcp.set_nodelay(true);
    let host = tcp.peer_addr().map(|a| client_host(a.ip())).unwrap_or_default();
    match shared.tls.clone() {
        Some(acceptor) => match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
            Ok(Ok(tls)) => serve(shared, broker, &host, tls).await,
            Ok(Err(e)) => tracing::debug!(broker, error = %e, "TLS handshake failed"),
            Err(_) => tracing::debug!(broker, "TLS handshake timed out"),
        },
        None => serve(shared, broker, &host, tcp).await,
    }
}

/// SASL progress of one connection.
struct SaslSession {
    users: Option<Users>,
    mechanism: Option<Box<dyn Mechanism + Send>>,
    authenticated: bool,
}

/// What to do with one request.
enum Outcome {
    Respond { bytes: BytesMut, close: bool },
    Nothing,
    Close(&'static str),
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(shared: Arc<Shared>, broker: i32, host: &str, mut stream: S) {
    let Some(kill) = shared.kills.get(&broker) else { return };
    let mut kill = kill.subscribe();
    let mut shutdown = shared.shutdown.subscribe();
    let users = shared.sasl.clone();
    let mut sasl = SaslSession { authenticated: users.is_none(), users, mechanism: None };
    let max_frame = shared.lock().config.max_frame_size;
    let mut buf = BytesMut::with_capacity(8 * 1024);
    loop {
        let frame = loop {
            match frame::split_frame(&mut buf, max_frame) {
                Ok(Some(f)) => break f,
                Ok(None) => {}
                Err(e) => {
                    let reason = match e {
                        FrameError::TooLarge { .. } => "frame larger than the limit",
                        _ => "negative frame size",
                    };
                    tracing::debug!(broker, error = %e, reason, "closing connection");
                    return;
                }
            }
            tokio::select! {
                read = stream.read_buf(&mut buf) => match read {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {}
                },
                _ = kill.changed() => return,
                _ = shutdown.changed() => return,
            }
        };
        let outcome = tokio::select! {
            o = process(&shared, broker, host, &mut sasl, frame) => o,
            _ = kill.changed() => return,
            _ = shutdown.changed() => return,
        };
        match outcome {
            Outcome::Respond { bytes, close } => {
                let written = tokio::select! {
                    w = async { stream.write_all(&bytes).await?; stream.flush().await } => w.is_ok(),
                    _ = kill.changed() => false,
                    _ = shutdown.changed() => false,
                };
                if !written || close {
                    let _ = stream.shutdown().await;
                    return;
                }
            }
            Outcome::Nothing => {}
            Outcome::Close(reason) => {
                tracing::debug!(broker, reason, "closing connection");
                let _ = stream.shutdown().await;
                return;
            }
        }
    }
}

fn encode(correlation_id: i32, version: i16, response: &AnyResponse, close: bool) -> Outcome {
    let mut out = BytesMut::new();
    match frame::encode_any_response(&mut out, correlation_id, version, response) {
        Ok(()) => Outcome::Respond { bytes: out, close },
        Err(e) => {
            // A bug in the fake cluster: say so loudly, and close rather than send garbage.
            tracing::error!(api = %response.api_key(), version, error = %e, "cannot encode a response");
            Outcome::Close("a response could not be encoded")
        }
    }
}

fn partitions_of(state: &State, request: &AnyRequest) -> Vec<(String, i32)> {
    match request {
        AnyRequest::Produce(r) => {
            r.topic_data.iter().flat_map(|t| t.partition_data.iter().map(|p| (t.name.clone(), p.index))).collect()
        }
        AnyRequest::Fetch(r) => r
            .topics
            .iter()
            .flat_map(|t| {
                // Fetch v13+ names topics by id.
                let name = if t.topic.is_empty() {
                    state.topic_by_id(t.topic_id).map(|(n, _)| n.clone()).unwrap_or_default()
                } else {
                    t.topic.clone()
                };
                t.partitions.iter().map(move |p| (name.clone(), p.partition))
            })
            .collect(),
        _ => Vec::new(),
    }
}

async fn process(shared: &Shared, broker: i32, host: &str, sasl: &mut SaslSession, frame: Bytes) -> Outcome {
    let Ok((header, mut body, api_key)) = frame::decode_request_header(frame) else {
        return Outcome::Close("an unknown api key or an unreadable request header");
    };
    let version = header.request_api_version;
    let correlation_id = header.correlation_id;
    if api_key == ApiKey::ApiVersions && !handlers::supported(api_key).is_some_and(|r| r.contains(version)) {
        let (v, resp) = handlers::api_versions(version, "", 0, &[]);
        return encode(correlation_id, v, &resp.into(), false);
    }
    if !handlers::supported(api_key).is_some_and(|r| r.contains(version)) {
        return Outcome::Close("an API or version this broker does not support");
    }
    let request = match AnyRequest::decode(api_key, &mut body, version) {
        Ok(r) if body.is_empty() => r,
        _ => return Outcome::Close("an undecodable request"),
    };
    if !sasl.authenticated && !matches!(api_key, ApiKey::ApiVersions | ApiKey::SaslHandshake | ApiKey::SaslAuthenticate)
    {
        return Outcome::Close("a request before SASL authentication");
    }
    let (fault, latency) = {
        let mut state = shared.lock();
        let partitions = partitions_of(&state, &request);
        state.requests.push(RequestRecord {
            broker,
            api_key,
            version,
            client_id: header.client_id.clone(),
            correlation_id,
            partitions,
        });
        let fault = state.take_fault(api_key, broker);
        (fault, state.brokers.get(&broker).map_or(Duration::ZERO, |b| b.latency))
    };
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let now_ms = shared.lock().clock.now_ms();
    let ctx = Ctx {
        broker,
        version,
        now_ms,
        client_id: header.client_id.clone().unwrap_or_default(),
        client_host: host.to_owned(),
    };
    let lose_answer = fault == Some(FaultAction::DisconnectAfter);
    let reply = match fault {
        Some(FaultAction::Disconnect) => return Outcome::Close("an injected disconnect"),
        Some(FaultAction::Error(code)) => {
            tracing::debug!(broker, api = %api_key, %code, "answering with an injected error");
            handlers::error_response(&shared.lock(), &ctx, &request, code)
        }
        None | Some(FaultAction::DisconnectAfter) => match request {
            AnyRequest::ApiVersions(r) => {
                let (transaction_version, hidden) = {
                    let state = shared.lock();
                    let hidden = if state.coordinator.config.advertise_consumer_protocol {
                        vec![]
                    } else {
                        vec![ApiKey::ConsumerGroupHeartbeat, ApiKey::ConsumerGroupDescribe]
                    };
                    (state.config.transaction_version, hidden)
                };
                let (v, resp) = handlers::api_versions(version, &r.client_software_name, transaction_version, &hidden);
                return encode(correlation_id, v, &resp.into(), false);
            }
            AnyRequest::SaslHandshake(r) => {
                let (resp, close) = sasl.handshake(&r.mechanism);
                return encode(correlation_id, version, &resp.into(), close);
            }
            AnyRequest::SaslAuthenticate(r) => {
                let (resp, close) = sasl.authenticate(&r.auth_bytes);
                return encode(correlation_id, version, &resp.into(), close);
            }
            AnyRequest::Fetch(r) => long_poll(shared, &ctx, &r).await.into(),
            other => {
                let changes =
                    matches!(other, AnyRequest::Produce(_) | AnyRequest::EndTxn(_) | AnyRequest::InitProducerId(_));
                let membership = matches!(
                    other,
                    AnyRequest::JoinGroup(_)
                        | AnyRequest::SyncGroup(_)
                        | AnyRequest::Heartbeat(_)
                        | AnyRequest::LeaveGroup(_)
                        | AnyRequest::ConsumerGroupHeartbeat(_)
                );
                let reply = handlers::handle(&mut shared.lock(), &ctx, other);
                if changes {
                    shared.notify_changed();
                }
                if membership {
                    shared.notify_groups();
                }
                match reply {
                    Reply::Park(ticket) => Reply::Respond(await_parked(shared, ticket).await),
                    other => other,
                }
            }
        },
    };
    if lose_answer {
        return Outcome::Close("an injected disconnect after executing the request");
    }
    match reply {
        Reply::Respond(resp) => encode(correlation_id, version, &resp, false),
        Reply::Nothing => Outcome::Nothing,
        Reply::Close(reason) => Outcome::Close(reason),
        Reply::Park(_) => Outcome::Close("a parked answer outside the connection task (a bug here)"),
    }
}

/// Answers a fetch once it has `min_bytes` (or an error), or when `max_wait_ms` is over.
async fn long_poll(shared: &Shared, ctx: &Ctx, r: &FetchRequest) -> klife_protocol::messages::FetchResponse {
    let deadline =
        tokio::time::Instant::now() + Duration::from_millis(u64::try_from(r.max_wait_ms.max(0)).unwrap_or(0));
    let mut changed = shared.changed.subscribe();
    loop {
        {
            let mut state = shared.lock();
            let (resp, status) = fetch::fetch(&state, ctx, r);
            if status.ready(r) || tokio::time::Instant::now() >= deadline {
                return fetch::answered(&mut state, ctx, r, resp);
            }
        }
        tokio::select! {
            c = changed.changed() => if c.is_err() {
                let mut state = shared.lock();
                let (resp, _) = fetch::fetch(&state, ctx, r);
                return fetch::answered(&mut state, ctx, r, resp);
            },
            _ = tokio::time::sleep_until(deadline) => {}
        }
    }
}

impl SaslSession {
    fn handshake(&mut self, mechanism: &str) -> (SaslHandshakeResponse, bool) {
        let Some(users) = self.users.as_ref().filter(|_| !self.authenticated) else {
            return (SaslHandshakeResponse::default().with_error_code(ErrorCode::IllegalSaslState.code()), true);
        };
        let offered = users.mechanism_names();
        match users.session(mechanism) {
            Some(m) => {
                self.mechanism = Some(m);
                (SaslHandshakeResponse::default().with_mechanisms(offered), false)
            }
            None => (
                SaslHandshakeResponse::default()
                    .with_error_code(ErrorCode::UnsupportedSaslMechanism.code())
                    .with_mechanisms(offered),
                true,
            ),
        }
    }

    fn authenticate(&mut self, token: &[u8]) -> (SaslAuthenticateResponse, bool) {
        let illegal = || {
            (
                SaslAuthenticateResponse::default()
                    .with_error_code(ErrorCode::IllegalSaslState.code())
                    .with_error_message(Some("SaslAuthenticate without a SaslHandshake".into())),
                true,
            )
        };
        if self.authenticated {
            return illegal();
        }
        let Some(m) = self.mechanism.as_mut() else { return illegal() };
        match m.respond(token) {
            Ok(Response::Proceed(challenge)) => {
                (SaslAuthenticateResponse::default().with_auth_bytes(challenge.into()), false)
            }
            Ok(Response::Success(identity, last)) => {
                tracing::debug!(?identity, "SASL authentication succeeded");
                self.authenticated = true;
                self.mechanism = None;
                (SaslAuthenticateResponse::default().with_auth_bytes(last.into()), false)
            }
            Err(e) => {
                tracing::debug!(error = ?e, "SASL authentication failed");
                (
                    SaslAuthenticateResponse::default()
                        .with_error_code(ErrorCode::SaslAuthenticationFailed.code())
                        .with_error_message(Some("Authentication failed: Invalid username or password".into())),
                    true,
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_hosts_are_printed_as_kafka_prints_them() {
        assert_eq!(client_host(IpAddr::from([127, 0, 0, 1])), "/127.0.0.1");
        assert_eq!(client_host("::1".parse().unwrap_or(IpAddr::from([0; 16]))), "/0:0:0:0:0:0:0:1");
        assert_eq!(client_host("fe80::a:b".parse().unwrap_or(IpAddr::from([0; 16]))), "/fe80:0:0:0:0:0:a:b");
    }
}
