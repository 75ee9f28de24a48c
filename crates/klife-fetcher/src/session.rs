//! Incremental fetch sessions (KIP-227), sans-io: what a Fetch request to one broker
//! must carry so that it lists only the partitions whose fetch changed, and how its
//! answer is read.
//!
//! A broker keeps, per session, every partition of the session with what the last
//! request that listed it asked (fetch offset, log start offset, byte limit, leader
//! epochs), and the high watermark and log start offset it last answered. An
//! incremental request names the session and its epoch and lists only partitions that
//! are new or whose fetch changed, and the partitions to forget; the broker reads
//! *every* partition of the session, and answers only those with news: records, a new
//! high watermark or log start offset, an error. So:
//!
//! - the partitions a request covers are the session's, not only those it lists: a
//!   partition the caller no longer wants must be forgotten (left out of the `wanted`
//!   set given to [`FetchSession::request`]), or the broker keeps reading it from its
//!   old offset;
//! - a partition left out of an incremental answer has no records and the watermarks
//!   the broker last gave ([`FetchSession::watermarks`]);
//! - epochs make requests of a session one at a time: the next is built only once the
//!   previous one was answered or failed.
//!
//! The broker accepts an incremental request only at the epoch it expects; whenever
//! the client cannot know the broker's state (an error, a request whose answer was
//! lost) the next request is a full one at epoch 0, which closes the old session on the
//! broker and opens a new one. The client's view of the session is the broker's as
//! long as requests are incremental; see the model test below.
//!
//! The fetcher's waiting lane keeps one per batcher (see `docs/architecture.md`); see
//! `docs/benchmarks.md` (fetch sessions) for what they save.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};

use klife_protocol::ErrorCode;

/// The first Fetch version with sessions.
pub(crate) const MIN_VERSION: i16 = 7;
/// No session (the request's `session_id`, or an answer's when none was opened).
pub(crate) const NO_SESSION: i32 = 0;
/// The epoch of a full request that asks for a new session.
pub(crate) const INITIAL_EPOCH: i32 = 0;
/// The epoch of a full request without a session (and that closes the one named).
pub(crate) const FINAL_EPOCH: i32 = -1;

/// The epoch after `epoch`, as Kafka counts: up to `i32::MAX`, then 1 again (0 opens a
/// session, -1 has none).
pub(crate) fn next_epoch(epoch: i32) -> i32 {
    match epoch {
        e if e < 0 => FINAL_EPOCH,
        i32::MAX => 1,
        e => e + 1,
    }
}

/// A topic-partition of a session; `T` names the topic as the requests do (its id
/// from Fetch v13 on, its name before).
pub(crate) type Key<T> = (T, i32);

/// What a request asks of one partition. The broker keeps it in the session, and an
/// incremental request lists the partition again only when it changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct PartitionFetch {
    /// Offset to read from.
    pub(crate) fetch_offset: i64,
    /// The client's log start offset (-1 for consumers).
    pub(crate) log_start_offset: i64,
    /// Bytes to return at most for the partition.
    pub(crate) max_bytes: i32,
    /// The leader epoch the client knows (-1: unknown).
    pub(crate) current_leader_epoch: i32,
    /// The epoch of the last record fetched (-1: unknown).
    pub(crate) last_fetched_epoch: i32,
}

/// What the broker last said of a partition. An incremental answer leaves the
/// partition out while its high watermark and log start offset stay the same and it
/// has no records. (A transaction's end writes a marker, which moves the high
/// watermark, so the last stable offset does not move unseen either.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Watermarks {
    /// The high watermark.
    pub(crate) high_watermark: i64,
    /// The last stable offset.
    pub(crate) last_stable_offset: i64,
    /// The log start offset.
    pub(crate) log_start_offset: i64,
}

impl Watermarks {
    /// Not known: no answer yet, or the last one was an error (the broker then forgets
    /// the partition's high watermark, so its next answer holds the partition again).
    pub(crate) const UNKNOWN: Watermarks =
        Watermarks { high_watermark: -1, last_stable_offset: -1, log_start_offset: -1 };
}

/// What the next Fetch request must carry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SessionRequest<T> {
    /// The request's `session_id`: the session continued, or, in a full request, the
    /// one to close (0: none).
    pub(crate) session_id: i32,
    /// The request's `session_epoch`: [`INITIAL_EPOCH`] for a full request that opens
    /// a session, [`FINAL_EPOCH`] for one without, above 0 for an incremental one.
    pub(crate) epoch: i32,
    /// The partitions to list: every wanted one in a full request, the new and changed
    /// ones in an incremental one.
    pub(crate) send: Vec<(Key<T>, PartitionFetch)>,
    /// The partitions to drop from the session (incremental requests only).
    pub(crate) forget: Vec<Key<T>>,
}

impl<T> SessionRequest<T> {
    /// Whether the request lists every partition it covers.
    pub(crate) fn is_full(&self) -> bool {
        self.epoch <= INITIAL_EPOCH
    }
}

/// How an answer's partitions are read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// The answer to a full request: every partition of the request is in it, and one
    /// missing was left out by the broker (nothing read, watermarks unknown).
    Full,
    /// The answer to an incremental request: a partition of the request missing from it
    /// has no records and the watermarks [`FetchSession::watermarks`] gives.
    Incremental,
    /// No partition of the answer counts (a session error, an answer out of step with
    /// the session): every fetch of the request is asked again, in a full request.
    Nothing,
}

/// A misuse of a [`FetchSession`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SessionError {
    /// A request of the session awaits its answer: epochs allow one at a time.
    #[error("the fetch session's previous request has not been answered")]
    InFlight,
    /// An answer came, but no request awaits one.
    #[error("no request of the fetch session awaits an answer")]
    NotInFlight,
    /// The session was closed.
    #[error("the fetch session is closed")]
    Closed,
}

/// The next request of a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Full, at epoch 0: closes session `close` (0: none) and asks for a new one.
    Full { close: i32 },
    /// Incremental, in session `id` at `epoch`.
    Incremental { id: i32, epoch: i32 },
}

/// A partition of the session as the broker holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Cached {
    fetch: PartitionFetch,
    seen: Watermarks,
    /// The last request that wanted it (see [`FetchSession::request`]).
    mark: u64,
}

/// A multiply-rotate hasher (as rustc's `FxHasher`): every request looks each of its
/// partitions up, thousands of them, and the keys are topic ids or names from the
/// cluster's metadata, not input an attacker chooses, so SipHash's cost buys nothing.
#[derive(Debug, Default, Clone, Copy)]
struct KeyHasher(u64);

impl KeyHasher {
    const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(Self::SEED);
    }
}

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(c);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

type Map<K, V> = HashMap<K, V, BuildHasherDefault<KeyHasher>>;

/// The client's side of one fetch session with one broker: one per connection lane
/// whose requests go one at a time.
///
/// Each request: [`request`](Self::request) with every partition the request is to
/// cover, then [`answered`](Self::answered) with the answer's top-level error, session
/// id and partitions, or [`failed`](Self::failed) when the outcome is unknown (timeout,
/// connection lost, request dropped). [`close`](Self::close) gives the request that
/// ends the session on the broker.
#[derive(Debug, Clone)]
pub(crate) struct FetchSession<T> {
    /// Whether sessions are used (Fetch v7 and later); without, every request is full
    /// at epoch -1 and several may be in flight.
    sessions: bool,
    closed: bool,
    next: Next,
    /// The session's partitions, as of the last answered request.
    partitions: Map<Key<T>, Cached>,
    in_flight: Option<SessionRequest<T>>,
    /// Counts requests, to mark the partitions each wants.
    requests: u64,
}

impl<T: Clone + Eq + Hash> Default for FetchSession<T> {
    fn default() -> Self {
        FetchSession::new()
    }
}

impl<T: Clone + Eq + Hash> FetchSession<T> {
    /// A session not opened yet: the first request is full and asks for one.
    pub(crate) fn new() -> Self {
        FetchSession {
            sessions: true,
            closed: false,
            next: Next::Full { close: NO_SESSION },
            partitions: Map::default(),
            in_flight: None,
            requests: 0,
        }
    }

    /// No sessions (a broker below Fetch v7, or a lane that keeps several requests in
    /// flight): every request is full, at epoch -1.
    pub(crate) fn sessionless() -> Self {
        FetchSession { sessions: false, ..FetchSession::new() }
    }

    /// The session the broker holds for this client, as far as it knows (0: none).
    pub(crate) fn session_id(&self) -> i32 {
        match self.next {
            Next::Incremental { id, .. } => id,
            Next::Full { close } => close,
        }
    }

    /// Whether the next request is incremental.
    pub(crate) fn is_incremental(&self) -> bool {
        self.sessions && matches!(self.next, Next::Incremental { .. })
    }

    /// The request covering `wanted` (each partition once, with what to ask of it):
    /// full when there is no session yet or its state is not known, else incremental,
    /// listing the partitions that are new or whose fetch changed and forgetting those
    /// of the session not wanted. A request for no partition closes the session
    /// (epoch -1). The answer may hold every wanted partition, and no other.
    pub(crate) fn request<I>(&mut self, wanted: I) -> Result<SessionRequest<T>, SessionError>
    where
        I: IntoIterator<Item = (Key<T>, PartitionFetch)>,
    {
        if self.closed {
            return Err(SessionError::Closed);
        }
        let wanted = wanted.into_iter();
        if !self.sessions {
            return Ok(SessionRequest {
                session_id: NO_SESSION,
                epoch: FINAL_EPOCH,
                send: wanted.collect(),
                forget: Vec::new(),
            });
        }
        if self.in_flight.is_some() {
            return Err(SessionError::InFlight);
        }
        let mut wanted = wanted.peekable();
        let request = match self.next {
            _ if wanted.peek().is_none() => SessionRequest {
                session_id: self.session_id(),
                epoch: FINAL_EPOCH,
                send: Vec::new(),
                forget: Vec::new(),
            },
            Next::Full { close } => {
                SessionRequest { session_id: close, epoch: INITIAL_EPOCH, send: wanted.collect(), forget: Vec::new() }
            }
            Next::Incremental { id, epoch } => {
                // One lookup per wanted partition, marking those of the session; the
                // unmarked ones are forgotten (none, usually: then no second pass).
                self.requests += 1;
                let mark = self.requests;
                let mut send = Vec::new();
                let mut kept = 0usize;
                for (key, fetch) in wanted {
                    match self.partitions.get_mut(&key) {
                        Some(c) if c.mark == mark => {} // wanted twice: the first counts
                        Some(c) => {
                            c.mark = mark;
                            kept += 1;
                            if c.fetch != fetch {
                                send.push((key, fetch));
                            }
                        }
                        None => send.push((key, fetch)),
                    }
                }
                let forget = if kept == self.partitions.len() {
                    Vec::new()
                } else {
                    self.partitions.iter().filter(|(_, c)| c.mark != mark).map(|(k, _)| k.clone()).collect()
                };
                SessionRequest { session_id: id, epoch, send, forget }
            }
        };
        self.in_flight = Some(request.clone());
        Ok(request)
    }

    /// Whether the answer to the request in flight may hold `key`: a partition it
    /// lists, or, for an incremental one, any partition of the session it does not
    /// forget.
    pub(crate) fn may_answer(&self, key: &Key<T>) -> bool {
        let Some(request) = &self.in_flight else { return false };
        let listed = request.send.iter().any(|(k, _)| k == key);
        if request.is_full() {
            return listed;
        }
        listed || (self.partitions.contains_key(key) && !request.forget.contains(key))
    }

    /// The watermarks the broker last gave for `key`, for a partition left out of an
    /// incremental answer: [`Watermarks::UNKNOWN`] until it answered the partition
    /// without error; `None` for a partition not in the session.
    pub(crate) fn watermarks(&self, key: &Key<T>) -> Option<Watermarks> {
        self.partitions.get(key).map(|c| c.seen)
    }

    /// Reads the answer to the request in flight: its top-level error, its session id,
    /// and each partition it holds with its watermarks (`None` for a partition answered
    /// with an error). Returns how to read the answer's partitions.
    ///
    /// - A full answer with a session id opens the session (its partitions are those
    ///   the answer holds); with 0, sessions were not granted and the next request is
    ///   full again, asking once more.
    /// - An incremental answer in the session continues it, at the next epoch.
    /// - `FETCH_SESSION_ID_NOT_FOUND` (the broker dropped the session): the next
    ///   request is full. `INVALID_FETCH_SESSION_EPOCH`, `FETCH_SESSION_TOPIC_ID_ERROR`,
    ///   any other top-level error, an answer for another session or holding a
    ///   partition the request did not cover: the next request is full and closes the
    ///   session.
    pub(crate) fn answered<I>(
        &mut self,
        error: ErrorCode,
        session_id: i32,
        partitions: I,
    ) -> Result<Scope, SessionError>
    where
        I: IntoIterator<Item = (Key<T>, Option<Watermarks>)>,
    {
        if !self.sessions {
            return Ok(if error == ErrorCode::None { Scope::Full } else { Scope::Nothing });
        }
        let request = self.in_flight.take().ok_or(SessionError::NotInFlight)?;
        if error != ErrorCode::None {
            self.partitions.clear();
            let close = if error == ErrorCode::FetchSessionIdNotFound { NO_SESSION } else { request.session_id };
            self.next = Next::Full { close };
            return Ok(Scope::Nothing);
        }
        if request.epoch == FINAL_EPOCH {
            // A request for nothing, which closed the session.
            self.partitions.clear();
            self.next = Next::Full { close: NO_SESSION };
            return Ok(Scope::Full);
        }
        if request.is_full() {
            return Ok(self.opened(request, session_id, partitions));
        }
        let id = request.session_id;
        if session_id == NO_SESSION {
            // The broker ended the session and answered the listed partitions alone,
            // without one (Kafka does so when a request forgets every partition).
            self.partitions.clear();
            self.next = Next::Full { close: NO_SESSION };
            return Ok(Scope::Full);
        }
        if session_id != id {
            return Ok(self.out_of_step(id));
        }
        for key in &request.forget {
            self.partitions.remove(key);
        }
        for (key, fetch) in request.send {
            self.partitions.entry(key).and_modify(|c| c.fetch = fetch).or_insert(Cached {
                fetch,
                seen: Watermarks::UNKNOWN,
                mark: 0,
            });
        }
        for (key, seen) in partitions {
            match self.partitions.get_mut(&key) {
                Some(c) => c.seen = seen.unwrap_or(Watermarks::UNKNOWN),
                None => return Ok(self.out_of_step(id)),
            }
        }
        self.next = Next::Incremental { id, epoch: next_epoch(request.epoch) };
        Ok(Scope::Incremental)
    }

    /// A full answer: the session the broker opened holds the partitions answered.
    fn opened<I>(&mut self, request: SessionRequest<T>, session_id: i32, partitions: I) -> Scope
    where
        I: IntoIterator<Item = (Key<T>, Option<Watermarks>)>,
    {
        self.partitions.clear();
        let asked: Map<Key<T>, PartitionFetch> = request.send.into_iter().collect();
        for (key, seen) in partitions {
            let Some(&fetch) = asked.get(&key) else {
                return self.out_of_step(session_id);
            };
            self.partitions.insert(key, Cached { fetch, seen: seen.unwrap_or(Watermarks::UNKNOWN), mark: 0 });
        }
        if session_id == NO_SESSION {
            // Not granted (no room in the broker's cache, or no sessions at all).
            self.partitions.clear();
            self.next = Next::Full { close: NO_SESSION };
        } else {
            self.next = Next::Incremental { id: session_id, epoch: next_epoch(INITIAL_EPOCH) };
        }
        Scope::Full
    }

    /// The broker's answer does not fit the session: start again, closing `id`.
    fn out_of_step(&mut self, id: i32) -> Scope {
        self.partitions.clear();
        self.next = Next::Full { close: id };
        Scope::Nothing
    }

    /// Starts over: the next request is full and closes the session the broker holds
    /// (for topics named otherwise from then on, which the session's keys would not
    /// match). Does nothing while a request is in flight (its answer or failure
    /// decides) or once closed.
    pub(crate) fn restart(&mut self) {
        if self.in_flight.is_none() && !self.closed {
            let close = self.session_id();
            self.partitions.clear();
            self.next = Next::Full { close };
        }
    }

    /// The request in flight failed without an answer (timeout, connection lost,
    /// dropped): whether the broker saw it is unknown, so the next request is full and
    /// closes the session. Nothing to do when no request is in flight.
    pub(crate) fn failed(&mut self) {
        if let Some(request) = self.in_flight.take() {
            self.partitions.clear();
            self.next = Next::Full { close: request.session_id };
        }
    }

    /// Ends the session: the request that closes it on the broker (epoch -1 with its
    /// id, no partition; its answer needs no reading), or `None` when the broker holds
    /// none. Later requests fail with [`SessionError::Closed`]. Called once the
    /// request in flight, if any, was answered or failed: a full request still in
    /// flight may open a session that this request would not close.
    pub(crate) fn close(&mut self) -> Result<Option<SessionRequest<T>>, SessionError> {
        if self.in_flight.is_some() {
            return Err(SessionError::InFlight);
        }
        if self.closed {
            return Ok(None);
        }
        self.closed = true;
        let id = self.session_id();
        self.partitions.clear();
        self.next = Next::Full { close: NO_SESSION };
        if !self.sessions || id == NO_SESSION {
            return Ok(None);
        }
        Ok(Some(SessionRequest { session_id: id, epoch: FINAL_EPOCH, send: Vec::new(), forget: Vec::new() }))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use proptest::prelude::*;

    use super::*;

    type K = Key<&'static str>;

    fn fetch(offset: i64) -> PartitionFetch {
        PartitionFetch {
            fetch_offset: offset,
            log_start_offset: -1,
            max_bytes: 1 << 20,
            current_leader_epoch: 0,
            last_fetched_epoch: -1,
        }
    }

    fn marks(hw: i64) -> Option<Watermarks> {
        Some(Watermarks { high_watermark: hw, last_stable_offset: hw, log_start_offset: 0 })
    }

    fn keys(request: &SessionRequest<&'static str>) -> Vec<K> {
        let mut keys: Vec<K> = request.send.iter().map(|(k, _)| *k).collect();
        keys.sort_unstable();
        keys
    }

    /// A session opened on `[("a", 0), ("a", 1), ("b", 0)]` at offsets 0, as session 7.
    fn opened() -> FetchSession<&'static str> {
        let mut s = FetchSession::new();
        let r = s.request([(("a", 0), fetch(0)), (("a", 1), fetch(0)), (("b", 0), fetch(0))]).expect("request");
        assert_eq!((r.session_id, r.epoch, r.is_full()), (0, 0, true));
        let answer = [(("a", 0), marks(5)), (("a", 1), marks(0)), (("b", 0), marks(0))];
        assert_eq!(s.answered(ErrorCode::None, 7, answer), Ok(Scope::Full));
        assert!(s.is_incremental());
        s
    }

    #[test]
    fn incremental_requests_list_what_changed_and_forget_what_is_not_wanted() {
        let mut s = opened();
        // Nothing changed: nothing listed, epoch 1.
        let r = s.request([(("a", 0), fetch(0)), (("a", 1), fetch(0)), (("b", 0), fetch(0))]).expect("request");
        assert_eq!((r.session_id, r.epoch, r.send.len(), r.forget.len()), (7, 1, 0, 0));
        assert!(s.may_answer(&("b", 0)), "the broker reads every partition of the session");
        assert!(!s.may_answer(&("c", 0)));
        assert_eq!(s.answered(ErrorCode::None, 7, [(("a", 0), marks(5))]), Ok(Scope::Incremental));
        // a-0 moved, b-0 asks for other bytes, a-1 is dropped, c-0 is new.
        let mut b0 = fetch(0);
        b0.max_bytes = 10;
        let r = s.request([(("a", 0), fetch(5)), (("b", 0), b0), (("c", 0), fetch(3))]).expect("request");
        assert_eq!(r.epoch, 2);
        assert_eq!(keys(&r), vec![("a", 0), ("b", 0), ("c", 0)]);
        assert_eq!(r.forget, vec![("a", 1)]);
        assert!(!s.may_answer(&("a", 1)), "a forgotten partition is not answered");
        assert!(s.may_answer(&("c", 0)));
        assert_eq!(s.answered(ErrorCode::None, 7, [(("c", 0), marks(3))]), Ok(Scope::Incremental));
        // A leader epoch change is a change too.
        let mut c0 = fetch(3);
        c0.current_leader_epoch = 4;
        let r = s.request([(("a", 0), fetch(5)), (("b", 0), b0), (("c", 0), c0)]).expect("request");
        assert_eq!((r.epoch, keys(&r), r.forget.len()), (3, vec![("c", 0)], 0));
    }

    #[test]
    fn partitions_left_out_of_an_incremental_answer_keep_their_watermarks() {
        let mut s = opened();
        assert_eq!(s.watermarks(&("a", 0)), marks(5));
        s.request([(("a", 0), fetch(5)), (("a", 1), fetch(0)), (("b", 0), fetch(0)), (("c", 0), fetch(0))])
            .expect("request");
        let answer = [(("a", 1), marks(2)), (("c", 0), None)];
        assert_eq!(s.answered(ErrorCode::None, 7, answer), Ok(Scope::Incremental));
        assert_eq!(s.watermarks(&("a", 0)), marks(5), "left out: as last answered");
        assert_eq!(s.watermarks(&("a", 1)), marks(2));
        assert_eq!(s.watermarks(&("c", 0)), Some(Watermarks::UNKNOWN), "answered with an error");
        assert_eq!(s.watermarks(&("z", 0)), None);
    }

    #[test]
    fn session_errors_and_lost_answers_make_the_next_request_full() {
        let wanted = [(("a", 0), fetch(0)), (("a", 1), fetch(0)), (("b", 0), fetch(0))];
        // (error, close id of the next full request)
        let cases = [
            (ErrorCode::FetchSessionIdNotFound, 0),
            (ErrorCode::InvalidFetchSessionEpoch, 7),
            (ErrorCode::FetchSessionTopicIdError, 7),
            (ErrorCode::UnknownServerError, 7),
        ];
        for (error, close) in cases {
            let mut s = opened();
            s.request(wanted).expect("request");
            assert_eq!(s.answered(error, 0, []), Ok(Scope::Nothing), "{error:?}");
            let r = s.request(wanted).expect("request");
            assert_eq!((r.session_id, r.epoch, keys(&r).len()), (close, INITIAL_EPOCH, 3), "{error:?}");
            assert_eq!(s.watermarks(&("a", 0)), None);
        }
        let mut s = opened();
        s.request(wanted).expect("request");
        s.failed();
        let r = s.request(wanted).expect("request");
        assert_eq!((r.session_id, r.epoch, r.send.len()), (7, INITIAL_EPOCH, 3), "a lost answer: close and open again");
        // Answers out of step: another session, or a partition the request did not cover.
        let mut s = opened();
        s.request(wanted).expect("request");
        assert_eq!(s.answered(ErrorCode::None, 8, []), Ok(Scope::Nothing));
        assert_eq!(s.request(wanted).expect("request").session_id, 7);
        let mut s = opened();
        s.request(wanted).expect("request");
        assert_eq!(s.answered(ErrorCode::None, 7, [(("z", 9), marks(1))]), Ok(Scope::Nothing));
        assert!(!s.is_incremental());
    }

    #[test]
    fn a_session_not_granted_is_asked_for_again() {
        let mut s = FetchSession::new();
        for _ in 0..3 {
            let r = s.request([(("a", 0), fetch(0))]).expect("request");
            assert_eq!((r.session_id, r.epoch), (NO_SESSION, INITIAL_EPOCH));
            assert_eq!(s.answered(ErrorCode::None, NO_SESSION, [(("a", 0), marks(0))]), Ok(Scope::Full));
            assert!(!s.is_incremental());
        }
        assert_eq!(s.close(), Ok(None), "no session to close");
    }

    #[test]
    fn a_full_answer_opens_the_session_with_the_partitions_it_holds() {
        let mut s = FetchSession::new();
        s.request([(("a", 0), fetch(0)), (("a", 1), fetch(0))]).expect("request");
        // A broker that left a-1 out: it is not in its session, so it is listed again.
        assert_eq!(s.answered(ErrorCode::None, 3, [(("a", 0), marks(0))]), Ok(Scope::Full));
        let r = s.request([(("a", 0), fetch(0)), (("a", 1), fetch(0))]).expect("request");
        assert_eq!((r.epoch, keys(&r)), (1, vec![("a", 1)]));
    }

    #[test]
    fn epochs_wrap_as_kafka_counts_them() {
        assert_eq!(next_epoch(INITIAL_EPOCH), 1);
        assert_eq!(next_epoch(41), 42);
        assert_eq!(next_epoch(i32::MAX), 1);
        assert_eq!(next_epoch(FINAL_EPOCH), FINAL_EPOCH);
        let mut s = opened();
        s.next = Next::Incremental { id: 7, epoch: i32::MAX };
        let wanted = [(("a", 0), fetch(0)), (("a", 1), fetch(0)), (("b", 0), fetch(0))];
        assert_eq!(s.request(wanted).expect("request").epoch, i32::MAX);
        assert_eq!(s.answered(ErrorCode::None, 7, []), Ok(Scope::Incremental));
        assert_eq!(s.request(wanted).expect("request").epoch, 1);
    }

    #[test]
    fn one_request_at_a_time_and_closing() {
        let mut s = opened();
        let wanted = [(("a", 0), fetch(0))];
        s.request(wanted).expect("request");
        assert_eq!(s.request(wanted), Err(SessionError::InFlight));
        assert_eq!(s.close(), Err(SessionError::InFlight));
        assert_eq!(s.answered(ErrorCode::None, 7, []), Ok(Scope::Incremental));
        assert_eq!(s.answered(ErrorCode::None, 7, []), Err(SessionError::NotInFlight));
        let close = s.close().expect("close").expect("a session to close");
        assert_eq!((close.session_id, close.epoch, close.send.len(), close.forget.len()), (7, FINAL_EPOCH, 0, 0));
        assert_eq!(s.request(wanted), Err(SessionError::Closed));
        assert_eq!(s.close(), Ok(None));
        // After a lost answer the session may still be on the broker: closed too.
        let mut s = opened();
        s.request(wanted).expect("request");
        s.failed();
        assert_eq!(s.close().expect("close").map(|r| (r.session_id, r.epoch)), Some((7, FINAL_EPOCH)));
    }

    #[test]
    fn a_restart_closes_the_session_with_the_next_full_request() {
        let mut s = opened();
        s.restart();
        assert!(!s.is_incremental());
        let r = s.request([(("a", 0), fetch(5))]).expect("request");
        assert_eq!((r.session_id, r.epoch, r.send.len()), (7, INITIAL_EPOCH, 1));
        s.restart(); // in flight: the answer decides
        assert_eq!(s.answered(ErrorCode::None, 8, [(("a", 0), marks(5))]), Ok(Scope::Full));
        assert!(s.is_incremental());
        assert_eq!(s.session_id(), 8);
    }

    #[test]
    fn a_request_for_nothing_closes_the_session() {
        let mut s = opened();
        let r = s.request([]).expect("request");
        assert_eq!((r.session_id, r.epoch), (7, FINAL_EPOCH));
        assert_eq!(s.answered(ErrorCode::None, NO_SESSION, []), Ok(Scope::Full));
        let r = s.request([(("a", 0), fetch(0))]).expect("request");
        assert_eq!((r.session_id, r.epoch), (NO_SESSION, INITIAL_EPOCH));
    }

    #[test]
    fn without_sessions_every_request_is_full_and_several_may_be_in_flight() {
        let mut s = FetchSession::sessionless();
        for _ in 0..2 {
            let r = s.request([(("a", 0), fetch(0)), (("a", 1), fetch(0))]).expect("request");
            assert_eq!((r.session_id, r.epoch, r.send.len()), (NO_SESSION, FINAL_EPOCH, 2));
        }
        assert_eq!(s.answered(ErrorCode::None, 0, []), Ok(Scope::Full));
        assert_eq!(s.answered(ErrorCode::UnknownServerError, 0, []), Ok(Scope::Nothing));
        assert!(!s.is_incremental());
        assert_eq!(s.close(), Ok(None));
    }

    // A model of Kafka's side (FetchManager, FetchSession, CachedPartition): sessions by
    // id with their epoch and partitions (what was asked, the high watermark and log
    // start offset last answered), and partition logs (log start 0, high watermark =
    // end). A partition is answered incrementally when it has records, a new high
    // watermark or log start offset, or an error.

    type MK = Key<u8>;

    #[derive(Debug, Clone)]
    struct BrokerPartition {
        fetch: PartitionFetch,
        hw: i64,
        log_start: i64,
    }

    #[derive(Debug, Clone)]
    struct BrokerSession {
        epoch: i32,
        partitions: BTreeMap<MK, BrokerPartition>,
    }

    #[derive(Debug, Default)]
    struct Broker {
        sessions: BTreeMap<i32, BrokerSession>,
        next_id: i32,
        ends: BTreeMap<MK, i64>,
        broken: Vec<MK>,
        refuse: bool,
    }

    /// One partition of an answer: its watermarks (`None`: an error) and whether it
    /// holds records.
    type Answered = (MK, Option<Watermarks>, bool);

    impl Broker {
        fn read(&self, key: &MK, fetch: &PartitionFetch) -> (Option<Watermarks>, bool) {
            if self.broken.contains(key) {
                return (None, false);
            }
            let end = self.ends.get(key).copied().unwrap_or(0);
            let w = Watermarks { high_watermark: end, last_stable_offset: end, log_start_offset: 0 };
            (Some(w), fetch.fetch_offset < end)
        }

        fn handle(&mut self, request: &SessionRequest<u8>) -> (ErrorCode, i32, Vec<Answered>) {
            if request.is_full() {
                if request.session_id != NO_SESSION {
                    self.sessions.remove(&request.session_id);
                }
                let answers: Vec<Answered> = request
                    .send
                    .iter()
                    .map(|(k, f)| {
                        let (w, records) = self.read(k, f);
                        (*k, w, records)
                    })
                    .collect();
                if request.epoch == FINAL_EPOCH || self.refuse {
                    return (ErrorCode::None, NO_SESSION, answers);
                }
                self.next_id += 1;
                let partitions = request
                    .send
                    .iter()
                    .zip(&answers)
                    .map(|((k, f), (_, w, _))| {
                        let w = w.unwrap_or(Watermarks::UNKNOWN);
                        (*k, BrokerPartition { fetch: *f, hw: w.high_watermark, log_start: w.log_start_offset })
                    })
                    .collect();
                self.sessions.insert(self.next_id, BrokerSession { epoch: 1, partitions });
                return (ErrorCode::None, self.next_id, answers);
            }
            let Some(mut session) = self.sessions.remove(&request.session_id) else {
                return (ErrorCode::FetchSessionIdNotFound, NO_SESSION, Vec::new());
            };
            if session.epoch != request.epoch {
                self.sessions.insert(request.session_id, session);
                return (ErrorCode::InvalidFetchSessionEpoch, NO_SESSION, Vec::new());
            }
            for (k, f) in &request.send {
                session.partitions.entry(*k).and_modify(|p| p.fetch = *f).or_insert(BrokerPartition {
                    fetch: *f,
                    hw: -1,
                    log_start: -1,
                });
            }
            for k in &request.forget {
                session.partitions.remove(k);
            }
            if session.partitions.is_empty() {
                // Kafka: the session ends, the listed partitions are answered without one.
                return (ErrorCode::None, NO_SESSION, Vec::new());
            }
            session.epoch = next_epoch(session.epoch);
            let mut answers = Vec::new();
            for (k, p) in session.partitions.iter_mut() {
                let (w, records) = self.read(k, &p.fetch);
                let (hw, log_start) = w.map_or((-1, -1), |w| (w.high_watermark, w.log_start_offset));
                let respond = records || w.is_none() || p.hw != hw || p.log_start != log_start;
                (p.hw, p.log_start) = (hw, log_start);
                if respond {
                    answers.push((*k, w, records));
                }
            }
            self.sessions.insert(request.session_id, session);
            (ErrorCode::None, request.session_id, answers)
        }
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Fetch the partitions of the mask; the request is lost before the broker
        /// (0), its answer is lost (1), or it is answered.
        Fetch {
            mask: u8,
            outcome: u8,
        },
        Append {
            key: usize,
            records: i64,
        },
        MaxBytes {
            key: usize,
            bytes: i32,
        },
        Evict,
        Break {
            key: usize,
        },
        Heal,
        Refuse(bool),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (any::<u8>(), 0u8..8).prop_map(|(mask, outcome)| Op::Fetch { mask, outcome }),
            3 => (0usize..8, 1i64..5).prop_map(|(key, records)| Op::Append { key, records }),
            1 => (0usize..8, 1i32..4).prop_map(|(key, bytes)| Op::MaxBytes { key, bytes }),
            1 => Just(Op::Evict),
            1 => (0usize..8).prop_map(|key| Op::Break { key }),
            1 => Just(Op::Heal),
            1 => any::<bool>().prop_map(Op::Refuse),
        ]
    }

    const KEYS: [MK; 8] = [(0, 0), (0, 1), (0, 2), (0, 3), (1, 0), (1, 1), (1, 2), (1, 3)];

    proptest! {
        /// Over any run of fetches (some lost before or after the broker), appends,
        /// evictions, partition errors and refused sessions: the client never sends a
        /// stale epoch; whenever its next request is incremental, the broker holds that
        /// session with the same epoch, partitions, fetches and watermarks, or dropped
        /// it (and says so); every answer read with the watermarks the client kept is
        /// what a full fetch would have answered; and the broker never holds more
        /// sessions than the client opened and lost track of, plus the current one,
        /// none after closing.
        #[test]
        fn the_client_and_the_broker_agree_on_the_session(ops in proptest::collection::vec(op(), 1..80)) {
            let mut broker = Broker::default();
            let mut client: FetchSession<u8> = FetchSession::new();
            let mut offsets: BTreeMap<MK, i64> = BTreeMap::new();
            let mut max_bytes: BTreeMap<MK, i32> = BTreeMap::new();
            let mut evicted: Vec<i32> = Vec::new();
            let mut leaked = 0usize;
            for op in ops {
                match op {
                    Op::Append { key, records } => *broker.ends.entry(KEYS[key]).or_insert(0) += records,
                    Op::MaxBytes { key, bytes } => { max_bytes.insert(KEYS[key], bytes); }
                    Op::Evict => evicted.extend(std::mem::take(&mut broker.sessions).into_keys()),
                    Op::Break { key } => broker.broken.push(KEYS[key]),
                    Op::Heal => broker.broken.clear(),
                    Op::Refuse(refuse) => broker.refuse = refuse,
                    Op::Fetch { mask, outcome } => {
                        let wanted: Vec<(MK, PartitionFetch)> = KEYS
                            .iter()
                            .enumerate()
                            .filter(|(i, _)| mask & (1 << i) != 0)
                            .map(|(_, k)| {
                                let f = PartitionFetch {
                                    fetch_offset: offsets.get(k).copied().unwrap_or(0),
                                    log_start_offset: -1,
                                    max_bytes: max_bytes.get(k).copied().unwrap_or(1),
                                    current_leader_epoch: 0,
                                    last_fetched_epoch: -1,
                                };
                                (*k, f)
                            })
                            .collect();
                        let request = client.request(wanted.clone()).expect("one request at a time");
                        prop_assert_eq!(client.request(wanted.clone()), Err(SessionError::InFlight));
                        if outcome == 0 {
                            client.failed();
                            continue;
                        }
                        // What a full fetch would answer now, for every wanted partition.
                        let truth: BTreeMap<MK, (Option<Watermarks>, bool)> =
                            wanted.iter().map(|(k, f)| (*k, broker.read(k, f))).collect();
                        let sessions_before = broker.sessions.len();
                        let (error, session_id, answers) = broker.handle(&request);
                        prop_assert!(error != ErrorCode::InvalidFetchSessionEpoch, "a stale epoch was sent");
                        if error == ErrorCode::FetchSessionIdNotFound {
                            prop_assert!(evicted.contains(&request.session_id), "session {} lost", request.session_id);
                        }
                        if outcome == 1 {
                            // The broker saw it; the answer is lost.
                            if request.epoch == INITIAL_EPOCH && session_id != NO_SESSION {
                                leaked += 1;
                            }
                            client.failed();
                            continue;
                        }
                        for (k, f) in &wanted {
                            prop_assert!(client.may_answer(k), "{:?} at {} not covered", k, f.fetch_offset);
                        }
                        let scope = client
                            .answered(error, session_id, answers.iter().map(|(k, w, _)| (*k, *w)))
                            .expect("answered");
                        let present: BTreeMap<MK, (Option<Watermarks>, bool)> =
                            answers.iter().map(|(k, w, r)| (*k, (*w, *r))).collect();
                        match scope {
                            Scope::Nothing => prop_assert!(error != ErrorCode::None),
                            Scope::Full => prop_assert_eq!(&present, &truth),
                            Scope::Incremental => {
                                for k in present.keys() {
                                    prop_assert!(truth.contains_key(k), "{:?} answered, not wanted", k);
                                }
                                for (k, want) in &truth {
                                    let got = match present.get(k) {
                                        Some(p) => *p,
                                        None => (client.watermarks(k).filter(|w| w.high_watermark >= 0), false),
                                    };
                                    prop_assert_eq!(&got, want, "{:?}", k);
                                }
                            }
                        }
                        // The broker's session holds what was wanted, as it was wanted.
                        if scope != Scope::Nothing && session_id != NO_SESSION {
                            let held: BTreeMap<MK, PartitionFetch> = broker.sessions[&session_id]
                                .partitions
                                .iter()
                                .map(|(k, p)| (*k, p.fetch))
                                .collect();
                            let wanted: BTreeMap<MK, PartitionFetch> = wanted.iter().copied().collect();
                            prop_assert_eq!(held, wanted);
                        }
                        // The client reads every record returned.
                        for (k, w, records) in &answers {
                            if let (Some(w), true) = (w, records) {
                                offsets.insert(*k, w.high_watermark);
                            }
                        }
                        prop_assert!(broker.sessions.len() <= leaked + 1, "{} sessions", broker.sessions.len());
                        prop_assert!(broker.sessions.len() <= sessions_before + 1);
                    }
                }
                // The client's view of its session is the broker's.
                if let Next::Incremental { id, epoch } = client.next {
                    match broker.sessions.get(&id) {
                        None => prop_assert!(evicted.contains(&id)),
                        Some(b) => {
                            prop_assert_eq!(b.epoch, epoch);
                            let mine: BTreeMap<MK, (PartitionFetch, i64, i64)> = client
                                .partitions
                                .iter()
                                .map(|(k, c)| (*k, (c.fetch, c.seen.high_watermark, c.seen.log_start_offset)))
                                .collect();
                            let theirs: BTreeMap<MK, (PartitionFetch, i64, i64)> =
                                b.partitions.iter().map(|(k, p)| (*k, (p.fetch, p.hw, p.log_start))).collect();
                            prop_assert_eq!(mine, theirs);
                        }
                    }
                }
            }
            let open = client.session_id();
            if let Some(close) = client.close().expect("nothing in flight") {
                prop_assert_eq!(close.session_id, open);
                broker.handle(&close);
            }
            prop_assert!(!broker.sessions.contains_key(&open) || open == NO_SESSION);
            prop_assert!(broker.sessions.len() <= leaked, "{} sessions left", broker.sessions.len());
        }
    }
}
