//! Fetch: reads from the partition logs under the request's size limits and isolation
//! level. Long polling (min_bytes / max_wait) is the connection task's: it calls
//! [`fetch`] again whenever records are appended, until enough bytes are there or the
//! wait is over.
//!
//! Leader epochs are checked as Kafka checks them: a replica of the partition answers
//! a `current_leader_epoch` older than its own FENCED_LEADER_EPOCH and a newer one
//! UNKNOWN_LEADER_EPOCH (before saying whether it leads); the leader looks up where a
//! `last_fetched_epoch` (v12+) ends in its epoch cache and answers a log that ends it
//! before the fetch offset with a diverging epoch and no records, and an epoch it
//! cannot place with OFFSET_OUT_OF_RANGE. From v13 topics are named by id (an unknown
//! one gets UNKNOWN_TOPIC_ID); from v16 a NOT_LEADER_OR_FOLLOWER or
//! FENCED_LEADER_EPOCH answer names the current leader and its endpoint.
//!
//! Fetch sessions (KIP-227) are kept as Kafka keeps them, per broker: a full request
//! at epoch 0 (v7+) with partitions opens one (closing the session it names), holding
//! each partition with what was asked and the high watermark and log start offset
//! answered; an incremental request (epoch above 0) must name a session of that broker
//! (else FETCH_SESSION_ID_NOT_FOUND) at the epoch it expects (else
//! INVALID_FETCH_SESSION_EPOCH) and name topics as the session did (by id from v13,
//! else FETCH_SESSION_TOPIC_ID_ERROR); it adds or updates the partitions it lists,
//! drops those it forgets, reads every partition of the session, and answers only those
//! with records, a new high watermark or log start offset, or an error. One that
//! forgets every partition ends the session and is answered without one. Epoch -1
//! closes the named session and is answered without one. The session is updated only by
//! the answer that is sent (a long poll reads the logs several times). There is no
//! cache limit; [`FetchSessions::clear`] drops every session, as an eviction would.

use std::collections::BTreeMap;

use bytes::Bytes;
use klife_protocol::messages::FetchRequest;
use klife_protocol::messages::FetchResponse;
use klife_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use klife_protocol::messages::fetch_response::{
    AbortedTransaction, EpochEndOffset, FetchableTopicResponse, LeaderIdAndEpoch, NodeEndpoint, PartitionData,
};
use klife_protocol::{ErrorCode, Uuid};

use super::{Ctx, check_leader_epoch};
use crate::log::Isolation;
use crate::state::State;

/// How an answer compares with what the request waits for.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FetchStatus {
    /// Record bytes in the answer.
    pub(crate) bytes: usize,
    /// Whether any partition (or the request) has an error: answered at once.
    pub(crate) error: bool,
}

impl FetchStatus {
    /// Whether the answer can go now rather than wait for more records.
    pub(crate) fn ready(&self, r: &FetchRequest) -> bool {
        self.error || r.max_wait_ms <= 0 || self.bytes >= usize::try_from(r.min_bytes.max(0)).unwrap_or(0)
    }
}

fn error_partition(partition: i32, code: ErrorCode) -> PartitionData {
    PartitionData::default()
        .with_partition_index(partition)
        .with_error_code(code.code())
        .with_high_watermark(-1)
        .with_records(Some(Bytes::new()))
}

/// A partition of a session: the topic as the requests name it (name before v13, id
/// from v13) and the partition index.
type SessionKey = (String, Uuid, i32);

/// A partition of a session as the broker holds it.
#[derive(Debug, Clone)]
struct Cached {
    fetch: FetchPartition,
    high_watermark: i64,
    log_start_offset: i64,
}

/// One fetch session.
#[derive(Debug, Clone)]
struct Session {
    epoch: i32,
    by_id: bool,
    partitions: BTreeMap<SessionKey, Cached>,
}

/// The fetch sessions of every broker of the cluster.
#[derive(Debug, Default)]
pub(crate) struct FetchSessions {
    next_id: i32,
    sessions: BTreeMap<(i32, i32), Session>,
}

impl FetchSessions {
    /// Drops every session, as a broker evicting them from its cache: their next
    /// incremental request gets FETCH_SESSION_ID_NOT_FOUND.
    pub(crate) fn clear(&mut self) {
        self.sessions.clear();
    }

    /// Sessions held, on every broker.
    pub(crate) fn len(&self) -> usize {
        self.sessions.len()
    }
}

fn key_of(topic: &str, id: Uuid, partition: i32, by_id: bool) -> SessionKey {
    if by_id { (String::new(), id, partition) } else { (topic.to_owned(), Uuid::NIL, partition) }
}

/// The session an incremental request continues, with its listed and forgotten
/// partitions applied; or the top-level error that answers the request.
fn continued(sessions: &FetchSessions, ctx: &Ctx, r: &FetchRequest) -> Result<Session, ErrorCode> {
    let Some(session) = sessions.sessions.get(&(ctx.broker, r.session_id)) else {
        return Err(ErrorCode::FetchSessionIdNotFound);
    };
    if session.epoch != r.session_epoch {
        return Err(ErrorCode::InvalidFetchSessionEpoch);
    }
    let by_id = ctx.version >= 13;
    if session.by_id != by_id {
        return Err(ErrorCode::FetchSessionTopicIdError);
    }
    let mut session = session.clone();
    for t in &r.topics {
        for p in &t.partitions {
            let key = key_of(&t.topic, t.topic_id, p.partition, by_id);
            session.partitions.entry(key).and_modify(|c| c.fetch = p.clone()).or_insert(Cached {
                fetch: p.clone(),
                high_watermark: -1,
                log_start_offset: -1,
            });
        }
    }
    for t in &r.forgotten_topics_data {
        for p in &t.partitions {
            session.partitions.remove(&key_of(&t.topic, t.topic_id, *p, by_id));
        }
    }
    Ok(session)
}

/// The partitions of a session, as a request would list them.
fn session_topics(session: &Session) -> Vec<FetchTopic> {
    let mut topics: Vec<FetchTopic> = Vec::new();
    for ((name, id, _), c) in &session.partitions {
        match topics.last_mut() {
            Some(t) if t.topic == *name && t.topic_id == *id => t.partitions.push(c.fetch.clone()),
            _ => topics.push(
                FetchTopic::default()
                    .with_topic(name.clone())
                    .with_topic_id(*id)
                    .with_partitions(vec![c.fetch.clone()]),
            ),
        }
    }
    topics
}

/// Whether a request is an incremental one of a session.
fn is_incremental(ctx: &Ctx, r: &FetchRequest) -> bool {
    ctx.version >= 7 && r.session_epoch > 0
}

/// Updates the fetch sessions for the answer `resp` to `r` that is about to be sent
/// (built by [`fetch`] from the same sessions): opens, continues or closes the session,
/// and leaves out of an incremental answer the partitions with no news.
pub(crate) fn answered(state: &mut State, ctx: &Ctx, r: &FetchRequest, mut resp: FetchResponse) -> FetchResponse {
    if ctx.version < 7 || resp.error_code != 0 {
        return resp;
    }
    let sessions = &mut state.fetch_sessions;
    let by_id = ctx.version >= 13;
    if !is_incremental(ctx, r) {
        if r.session_id != 0 {
            sessions.sessions.remove(&(ctx.broker, r.session_id));
        }
        let wanted = r.topics.iter().any(|t| !t.partitions.is_empty());
        if r.session_epoch != 0 || !wanted {
            return resp;
        }
        let mut partitions = BTreeMap::new();
        for (t, answer) in r.topics.iter().zip(&resp.responses) {
            for (p, a) in t.partitions.iter().zip(&answer.partitions) {
                let (high_watermark, log_start_offset) =
                    if a.error_code == 0 { (a.high_watermark, a.log_start_offset) } else { (-1, -1) };
                partitions.insert(
                    key_of(&t.topic, t.topic_id, p.partition, by_id),
                    Cached { fetch: p.clone(), high_watermark, log_start_offset },
                );
            }
        }
        sessions.next_id = sessions.next_id.checked_add(1).unwrap_or(1).max(1);
        let id = sessions.next_id;
        sessions.sessions.insert((ctx.broker, id), Session { epoch: 1, by_id, partitions });
        resp.session_id = id;
        return resp;
    }
    let mut session = match continued(sessions, ctx, r) {
        Ok(session) => session,
        // Dropped while the request waited (Kafka would have found it at the start).
        Err(code) => return FetchResponse::default().with_error_code(code.code()),
    };
    if session.partitions.is_empty() {
        sessions.sessions.remove(&(ctx.broker, r.session_id));
        resp.session_id = 0;
        return resp;
    }
    // `fetch` answered every partition of the session, in the session's order.
    let keys: Vec<SessionKey> = session.partitions.keys().cloned().collect();
    let mut keys = keys.into_iter();
    for topic in &mut resp.responses {
        topic.partitions.retain(|a| {
            let Some(key) = keys.next() else { return true };
            let Some(c) = session.partitions.get_mut(&key) else { return true };
            let records = a.records.as_ref().is_some_and(|b| !b.is_empty());
            let error = a.error_code != 0 || a.diverging_epoch.epoch >= 0;
            let (high_watermark, log_start_offset) =
                if a.error_code == 0 { (a.high_watermark, a.log_start_offset) } else { (-1, -1) };
            let news = records || error || c.high_watermark != high_watermark || c.log_start_offset != log_start_offset;
            (c.high_watermark, c.log_start_offset) = (high_watermark, log_start_offset);
            news
        });
    }
    resp.responses.retain(|t| !t.partitions.is_empty());
    session.epoch = if session.epoch == i32::MAX { 1 } else { session.epoch + 1 };
    sessions.sessions.insert((ctx.broker, r.session_id), session);
    resp.session_id = r.session_id;
    resp
}

/// Builds the answer to `r` from the logs as they are now: for an incremental request,
/// of every partition of its session (see [`answered`], which trims it).
pub(crate) fn fetch(state: &State, ctx: &Ctx, r: &FetchRequest) -> (FetchResponse, FetchStatus) {
    let mut status = FetchStatus::default();
    let session_topics_owned;
    let topics: &[FetchTopic] = if is_incremental(ctx, r) {
        match continued(&state.fetch_sessions, ctx, r) {
            Ok(session) => {
                session_topics_owned = session_topics(&session);
                &session_topics_owned
            }
            Err(code) => {
                status.error = true;
                return (FetchResponse::default().with_error_code(code.code()), status);
            }
        }
    } else {
        &r.topics
    };
    let isolation = Isolation::from_wire(r.isolation_level);
    let mut remaining = usize::try_from(r.max_bytes.max(0)).unwrap_or(0);
    let mut min_one = true;
    let mut endpoints: Vec<NodeEndpoint> = Vec::new();
    let by_id = ctx.version >= 13;
    let responses = topics
        .iter()
        .map(|t| {
            let name =
                if by_id { state.topic_by_id(t.topic_id).map(|(n, _)| n.clone()) } else { Some(t.topic.clone()) };
            let partitions = t
                .partitions
                .iter()
                .map(|fp| {
                    let Some(name) = &name else {
                        status.error = true;
                        return error_partition(fp.partition, ErrorCode::UnknownTopicId);
                    };
                    let Some(part) = state.partition(name, fp.partition) else {
                        status.error = true;
                        return error_partition(fp.partition, ErrorCode::UnknownTopicOrPartition);
                    };
                    // A replica knows the partition's epoch and checks the client's
                    // first; a broker that holds no replica only says it does not lead.
                    let replica = part.replicas.contains(&ctx.broker) || part.leader == ctx.broker;
                    let epoch_error = if replica {
                        check_leader_epoch(fp.current_leader_epoch, part.leader_epoch)
                    } else {
                        ErrorCode::None
                    };
                    let error = match epoch_error {
                        ErrorCode::None if part.leader != ctx.broker => ErrorCode::NotLeaderOrFollower,
                        code => code,
                    };
                    if error != ErrorCode::None {
                        status.error = true;
                        let mut out = error_partition(fp.partition, error);
                        if ctx.version >= 16
                            && matches!(error, ErrorCode::NotLeaderOrFollower | ErrorCode::FencedLeaderEpoch)
                        {
                            out = out.with_current_leader(
                                LeaderIdAndEpoch::default()
                                    .with_leader_id(part.leader)
                                    .with_leader_epoch(part.leader_epoch),
                            );
                            if let Some(b) = state.brokers.get(&part.leader).filter(|b| b.up) {
                                if !endpoints.iter().any(|e| e.node_id == part.leader) {
                                    endpoints.push(
                                        NodeEndpoint::default()
                                            .with_node_id(part.leader)
                                            .with_host("127.0.0.1".into())
                                            .with_port(i32::from(b.port)),
                                    );
                                }
                            }
                        }
                        return out;
                    }
                    let log = &part.log;
                    let out = PartitionData::default()
                        .with_partition_index(fp.partition)
                        .with_high_watermark(log.high_watermark())
                        .with_last_stable_offset(log.last_stable_offset())
                        .with_log_start_offset(log.log_start_offset());
                    let out_of_range = |out: PartitionData| {
                        out.with_error_code(ErrorCode::OffsetOutOfRange.code()).with_records(Some(Bytes::new()))
                    };
                    if ctx.version >= 12 && fp.last_fetched_epoch >= 0 {
                        // Kafka's check of the client's log against its own: where does
                        // the epoch of the client's last batch end here?
                        let Some((epoch, end_offset)) = log.end_offset_for_epoch(fp.last_fetched_epoch) else {
                            status.error = true;
                            return out_of_range(out);
                        };
                        if fp.fetch_offset < log.log_start_offset() {
                            status.error = true;
                            return out_of_range(out);
                        }
                        if epoch < fp.last_fetched_epoch || end_offset < fp.fetch_offset {
                            // Answered at once, as Kafka answers a divergence.
                            status.error = true;
                            return out
                                .with_diverging_epoch(
                                    EpochEndOffset::default().with_epoch(epoch).with_end_offset(end_offset),
                                )
                                .with_records(Some(Bytes::new()));
                        }
                    }
                    if fp.fetch_offset < log.log_start_offset() || fp.fetch_offset > log.high_watermark() {
                        status.error = true;
                        return out_of_range(out);
                    }
                    let limit = usize::try_from(fp.partition_max_bytes.max(0)).unwrap_or(0).min(remaining);
                    let read = log.read(fp.fetch_offset, limit, isolation, min_one);
                    if !read.records.is_empty() {
                        min_one = false;
                    }
                    remaining = remaining.saturating_sub(read.records.len());
                    status.bytes += read.records.len();
                    let aborted = (isolation == Isolation::ReadCommitted).then(|| {
                        read.aborted
                            .iter()
                            .map(|a| {
                                AbortedTransaction::default()
                                    .with_producer_id(a.producer_id)
                                    .with_first_offset(a.first_offset)
                            })
                            .collect()
                    });
                    out.with_aborted_transactions(aborted).with_records(Some(read.records))
                })
                .collect();
            let topic = FetchableTopicResponse::default().with_partitions(partitions);
            if by_id { topic.with_topic_id(t.topic_id) } else { topic.with_topic(t.topic.clone()) }
        })
        .collect();
    let mut resp = FetchResponse::default().with_responses(responses);
    if ctx.version >= 16 {
        resp = resp.with_node_endpoints(endpoints);
    }
    (resp, status)
}
