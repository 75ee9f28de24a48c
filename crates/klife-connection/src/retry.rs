//! The one retry rule for calls to a broker, the controller or a coordinator.
//!
//! Every call klife retries is retried the same way, driven by the
//! [`RetryAction`] of what came back:
//!
//! | what came back | next step |
//! | --- | --- |
//! | an answer without error codes | done |
//! | a code whose action is [`RetryAction::RefreshMetadata`] (a leader moved, NOT_CONTROLLER, an unknown topic) | refresh the metadata, back off, send again |
//! | a code whose action is [`RetryAction::FindCoordinator`] (NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE) | forget the cached coordinator, back off, send again (to the one found anew) |
//! | a code whose action is [`RetryAction::Backoff`] (COORDINATOR_LOAD_IN_PROGRESS, CONCURRENT_TRANSACTIONS, a timeout) | back off, send again |
//! | a connection failure that may heal (refused, broken, timed out) | forget the coordinator, refresh the metadata, back off, send again |
//! | a code whose action is [`RetryAction::Fatal`], [`RetryAction::Rejoin`] or [`RetryAction::None`] on an error, the client closed, any other failure | give up with it (rejoining a group is the group's business) |
//!
//! An answer may carry several codes (one per partition, say): the one that asks for
//! the most decides, in the order Fatal, Rejoin, FindCoordinator, RefreshMetadata,
//! Backoff. The backoff is the connection crate's [`Backoff`], jittered, and the
//! retries are bounded by the [`RetryPolicy`]'s timeout (no attempt is scheduled
//! after it) and, if set, a number of attempts: running out gives up with
//! [`Error::RetriesExhausted`], which carries the last error.
//!
//! [`RetryState`] is the decision alone, without I/O: the outcome of an attempt and
//! `now` in, a [`Step`] out. [`Cluster::call`](crate::Cluster::call) and
//! [`Cluster::call_with`](crate::Cluster::call_with) run it: they send, refresh, forget
//! the coordinator and sleep as it says.

use std::time::{Duration, Instant};

use klife_protocol::{ApiKey, ErrorCode, Request, RetryAction};

use crate::backoff::Backoff;
use crate::{Cluster, Connection, ConnectionConfig, CoordinatorType, Error, telemetry};

/// How one call is retried: for how long, how many times at most, and with what
/// backoff. [`RetryPolicy::from_config`] takes the cluster's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// No attempt starts later than this after the first one.
    pub timeout: Duration,
    /// At most this many attempts (`None`: the timeout alone bounds the call).
    pub max_attempts: Option<u32>,
    /// Delay before the second attempt; doubles per attempt, with 20% jitter.
    pub backoff: Duration,
    /// Longest delay between two attempts.
    pub backoff_max: Duration,
    /// Each attempt's own timeout, instead of the connection's `request_timeout`
    /// (`None`: the connection's), for requests the broker may hold for long.
    pub request_timeout: Option<Duration>,
}

impl RetryPolicy {
    /// The policy of `config`: `retry_timeout`, `retry_backoff`, `retry_backoff_max`,
    /// no bound on the number of attempts.
    pub fn from_config(config: &ConnectionConfig) -> RetryPolicy {
        RetryPolicy {
            timeout: config.retry_timeout,
            max_attempts: None,
            backoff: config.retry_backoff,
            backoff_max: config.retry_backoff_max,
            request_timeout: None,
        }
    }

    /// Sets the timeout.
    #[must_use]
    pub fn with_timeout(mut self, timeout: Duration) -> RetryPolicy {
        self.timeout = timeout;
        self
    }

    /// Bounds the number of attempts (1: no retry).
    #[must_use]
    pub fn with_max_attempts(mut self, attempts: u32) -> RetryPolicy {
        self.max_attempts = Some(attempts.max(1));
        self
    }

    /// Gives each attempt of [`Cluster::call`](crate::Cluster::call) a timeout of its
    /// own instead of the connection's `request_timeout` (see
    /// [`Connection::send_with_timeout`]): a classic JoinGroup's is the rebalance
    /// timeout plus a margin. An attempt that runs out of it fails with
    /// [`Error::Timeout`] of kind [`TimeoutKind::Request`](crate::TimeoutKind::Request),
    /// which is retried as any timeout is, within [`timeout`](Self::timeout).
    #[must_use]
    pub fn with_request_timeout(mut self, timeout: Duration) -> RetryPolicy {
        self.request_timeout = Some(timeout);
        self
    }

    /// Sets the backoff's first and longest delays.
    #[must_use]
    pub fn with_backoff(mut self, initial: Duration, max: Duration) -> RetryPolicy {
        self.backoff = initial;
        self.backoff_max = max;
        self
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy::from_config(&ConnectionConfig::default())
    }
}

/// What one attempt came to.
#[derive(Debug, Clone, Copy)]
pub enum Outcome<'a> {
    /// An answer, with the error codes it carries that concern the whole call (NONE
    /// among them is ignored; none at all is success).
    Answered(&'a [ErrorCode]),
    /// No answer: the connection, the lookup of where to send, or the request failed.
    Failed(&'a Error),
}

/// What to do after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The answer is good: return it.
    Done,
    /// Send again, no earlier than `at`, after the refreshes named.
    Retry {
        /// Refresh the metadata first.
        refresh_metadata: bool,
        /// Forget the cached coordinator first (calls to a coordinator).
        forget_coordinator: bool,
        /// When the next attempt may start (never after the policy's deadline).
        at: Instant,
    },
    /// Stop here.
    GiveUp(GiveUp),
}

/// Why a call stopped without a good answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GiveUp {
    /// What came back is final: a code no retry fixes (Fatal, Rejoin), a failure that
    /// does not heal, or the client closed. Report it as it is.
    Final,
    /// It might have healed, but the timeout or the number of attempts ran out: report
    /// [`Error::RetriesExhausted`] with it as the source.
    Exhausted,
}

/// The retry rule as a plain state machine: the policy, when the call started and
/// how many attempts it made; [`RetryState::decide`] turns an attempt's outcome and
/// `now` into the next [`Step`].
#[derive(Debug, Clone)]
pub struct RetryState {
    deadline: Instant,
    started: Instant,
    max_attempts: Option<u32>,
    attempts: u32,
    backoff: Backoff,
}

/// How much a retry action asks for: the highest wins when an answer carries several.
fn weight(action: RetryAction) -> u8 {
    match action {
        RetryAction::Fatal => 5,
        RetryAction::Rejoin => 4,
        RetryAction::FindCoordinator => 3,
        RetryAction::RefreshMetadata => 2,
        RetryAction::Backoff => 1,
        _ => 0,
    }
}

/// The code among `codes` whose [`RetryAction`] asks for the most (`None` when every
/// code is NONE).
pub fn deciding_code(codes: &[ErrorCode]) -> Option<ErrorCode> {
    codes.iter().copied().filter(|c| *c != ErrorCode::None).max_by_key(|c| weight(c.retry_action()))
}

/// The action a failed attempt calls for: its code's, if it carries one; a
/// connection problem that may heal is answered by looking again (both the metadata
/// and the coordinator); anything else is final.
fn action_of_failure(e: &Error) -> (RetryAction, bool) {
    if matches!(e, Error::Closed) || matches!(e.primary(), Error::Closed) {
        return (RetryAction::Fatal, false);
    }
    match e.error_code() {
        Some(code) => match code.retry_action() {
            RetryAction::None => (RetryAction::Fatal, false),
            action => (action, false),
        },
        None if e.is_retriable() => (RetryAction::RefreshMetadata, true),
        None => (RetryAction::Fatal, false),
    }
}

impl RetryState {
    /// A call starting at `now` under `policy`.
    pub fn new(policy: &RetryPolicy, now: Instant) -> RetryState {
        RetryState {
            deadline: now.checked_add(policy.timeout).unwrap_or(now + Backoff::CEILING),
            started: now,
            max_attempts: policy.max_attempts,
            attempts: 0,
            backoff: Backoff::new(policy.backoff, policy.backoff_max),
        }
    }

    /// Attempts made so far (outcomes given to [`decide`](Self::decide)).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Time from the start of the call to `now`.
    pub fn elapsed(&self, now: Instant) -> Duration {
        now.saturating_duration_since(self.started)
    }

    /// The latest time an attempt may start.
    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// What to do after an attempt that came to `outcome` at `now`; `random` is a
    /// uniform draw in `[0, 1)` for the backoff's jitter.
    pub fn decide(&mut self, outcome: Outcome<'_>, now: Instant, random: f64) -> Step {
        self.attempts = self.attempts.saturating_add(1);
        let (action, reconnect) = match outcome {
            Outcome::Answered(codes) => match deciding_code(codes) {
                None => return Step::Done,
                Some(code) => match code.retry_action() {
                    // An error code that asks for nothing is still an error: final.
                    RetryAction::None => (RetryAction::Fatal, false),
                    action => (action, false),
                },
            },
            Outcome::Failed(e) => action_of_failure(e),
        };
        let (refresh_metadata, forget_coordinator) = match action {
            RetryAction::RefreshMetadata => (true, reconnect),
            RetryAction::FindCoordinator => (false, true),
            RetryAction::Backoff => (false, false),
            _ => return Step::GiveUp(GiveUp::Final),
        };
        if self.max_attempts.is_some_and(|max| self.attempts >= max) || now >= self.deadline {
            return Step::GiveUp(GiveUp::Exhausted);
        }
        let delay = self.backoff.next_delay(random).min(self.deadline - now);
        Step::Retry { refresh_metadata, forget_coordinator, at: now + delay }
    }
}

/// An error an answer carries: its code, with the broker's message if it sent one.
/// The closure that reads an answer for [`Cluster::call`] gives these (or anything
/// that converts: an [`ErrorCode`], a wire `i16`, either with an `Option<String>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnswerError {
    /// The code (NONE is no error).
    pub code: ErrorCode,
    /// The broker's message.
    pub message: Option<String>,
}

impl From<ErrorCode> for AnswerError {
    fn from(code: ErrorCode) -> Self {
        AnswerError { code, message: None }
    }
}

impl From<i16> for AnswerError {
    fn from(code: i16) -> Self {
        AnswerError { code: ErrorCode::from_code(code), message: None }
    }
}

impl From<(ErrorCode, Option<String>)> for AnswerError {
    fn from((code, message): (ErrorCode, Option<String>)) -> Self {
        AnswerError { code, message }
    }
}

impl From<(i16, Option<String>)> for AnswerError {
    fn from((code, message): (i16, Option<String>)) -> Self {
        AnswerError { code: ErrorCode::from_code(code), message }
    }
}

/// Where a retried call goes; each attempt looks it up again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target<'a> {
    /// The broker with this node id.
    Broker(i32),
    /// Any reachable broker.
    AnyBroker,
    /// The controller ([`Cluster::controller`]).
    Controller,
    /// The group or transaction coordinator of a key (the group or transactional id):
    /// the cached one, or the one FindCoordinator names.
    Coordinator(CoordinatorType, &'a str),
}

fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

fn action_label(refresh_metadata: bool, forget_coordinator: bool) -> &'static str {
    match (refresh_metadata, forget_coordinator) {
        (true, _) => "refresh_metadata",
        (false, true) => "find_coordinator",
        (false, false) => "backoff",
    }
}

impl Cluster {
    /// The retry policy of this cluster's settings ([`RetryPolicy::from_config`]).
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy::from_config(self.config())
    }

    /// Sends `request` to `target` (at the highest version both sides support, within
    /// the policy's [`request_timeout`](RetryPolicy::request_timeout) if it has one),
    /// and again under the retry rule while the answer or the failure calls for it.
    /// `errors` reads the error codes of an answer that concern the whole call (a
    /// per-item error that is a result, such as TOPIC_ALREADY_EXISTS for one topic of
    /// several, is the caller's to report and should be left out).
    ///
    /// Fails with the final error as it is ([`Error::Broker`] for a code in the
    /// answer, naming the broker), or [`Error::RetriesExhausted`] when the policy ran
    /// out with an error that might still have healed.
    pub async fn call<R, C, I>(
        &self,
        target: Target<'_>,
        request: &R,
        policy: &RetryPolicy,
        errors: C,
    ) -> Result<R::Response, Error>
    where
        R: Request,
        C: Fn(&R::Response) -> I,
        I: IntoIterator,
        I::Item: Into<AnswerError>,
    {
        let timeout = policy.request_timeout;
        let attempt = |conn: Connection| async move {
            match timeout {
                Some(t) => conn.send_with_timeout(request, t).await,
                None => conn.send(request).await,
            }
        };
        self.call_with(target, R::API_KEY, policy, attempt, errors).await
    }

    /// [`call`](Self::call) for callers that build the request from the connection
    /// (a version cap, fields that depend on the version): `attempt` sends on the
    /// connection to `target` it is given (with
    /// [`send_version_with_timeout`](Connection::send_version_with_timeout) for the
    /// policy's `request_timeout`); `api` names the call in errors and metrics.
    pub async fn call_with<T, F, Fut, C, I>(
        &self,
        target: Target<'_>,
        api: ApiKey,
        policy: &RetryPolicy,
        mut attempt: F,
        errors: C,
    ) -> Result<T, Error>
    where
        F: FnMut(Connection) -> Fut,
        Fut: Future<Output = Result<T, Error>>,
        C: Fn(&T) -> I,
        I: IntoIterator,
        I::Item: Into<AnswerError>,
    {
        let mut state = RetryState::new(policy, now());
        loop {
            let (result, span) = match self.target_connection(target).await {
                Ok(conn) => {
                    let broker = conn.broker().to_owned();
                    let (result, span) = telemetry::with_request_span(attempt(conn)).await;
                    (result.map(|answer| (answer, broker)), span)
                }
                Err(e) => (Err(e), None),
            };
            let at = now();
            let (step, error) = match result {
                Ok((answer, broker)) => {
                    let reported: Vec<AnswerError> =
                        errors(&answer).into_iter().map(Into::into).filter(|r| r.code != ErrorCode::None).collect();
                    let codes: Vec<ErrorCode> = reported.iter().map(|r| r.code).collect();
                    let step = state.decide(Outcome::Answered(&codes), at, fastrand::f64());
                    let Some(deciding) = deciding_code(&codes) else { return Ok(answer) };
                    if let Some(span) = span {
                        span.record("error", deciding.name());
                    }
                    let message = reported.into_iter().find(|r| r.code == deciding).and_then(|r| r.message);
                    (step, Error::Broker { broker, api, code: deciding, message })
                }
                Err(e) => (state.decide(Outcome::Failed(&e), at, fastrand::f64()), e),
            };
            match step {
                Step::Done | Step::GiveUp(GiveUp::Final) => return Err(error),
                Step::GiveUp(GiveUp::Exhausted) => {
                    let (refresh, forget) = match error.retry_action() {
                        Some(RetryAction::FindCoordinator) => (false, true),
                        Some(RetryAction::Backoff) => (false, false),
                        _ => (true, false),
                    };
                    telemetry::record_retry(api, action_label(refresh, forget), true);
                    tracing::debug!(%api, attempts = state.attempts(), error = %error, "giving up retrying");
                    return Err(Error::RetriesExhausted {
                        api,
                        attempts: state.attempts(),
                        elapsed: state.elapsed(at),
                        source: Box::new(error),
                    });
                }
                Step::Retry { refresh_metadata, forget_coordinator, at } => {
                    telemetry::record_retry(api, action_label(refresh_metadata, forget_coordinator), false);
                    tracing::debug!(%api, attempt = state.attempts(), error = %error, "retrying");
                    if let (true, Target::Coordinator(kind, key)) = (forget_coordinator, target) {
                        self.invalidate_coordinator(kind, key);
                    }
                    if refresh_metadata {
                        if let Err(e) = self.refresh_metadata().await {
                            tracing::debug!(error = %e, "metadata refresh before a retry failed");
                        }
                    }
                    tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
                }
            }
        }
    }

    async fn target_connection(&self, target: Target<'_>) -> Result<Connection, Error> {
        match target {
            Target::Broker(id) => self.broker(id).await,
            Target::AnyBroker => self.any_broker().await,
            Target::Controller => self.controller().await,
            Target::Coordinator(kind, key) => self.coordinator_once(kind, key).await.map(|c| c.connection),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use proptest::prelude::*;

    fn policy() -> RetryPolicy {
        RetryPolicy::default().with_timeout(Duration::from_secs(10))
    }

    fn retry(refresh_metadata: bool, forget_coordinator: bool) -> (bool, bool) {
        (refresh_metadata, forget_coordinator)
    }

    fn first_step(outcome: Outcome<'_>) -> Step {
        let now = Instant::now();
        RetryState::new(&policy(), now).decide(outcome, now, 0.5)
    }

    fn refreshes(step: Step) -> Option<(bool, bool)> {
        match step {
            Step::Retry { refresh_metadata, forget_coordinator, .. } => Some((refresh_metadata, forget_coordinator)),
            _ => None,
        }
    }

    #[test]
    fn answers_are_sorted_by_their_retry_action() {
        use ErrorCode as C;
        type Row<'a> = (&'a [ErrorCode], Option<(bool, bool)>, Option<Step>);
        let table: &[Row<'_>] = &[
            (&[], None, Some(Step::Done)),
            (&[C::None, C::None], None, Some(Step::Done)),
            (&[C::NotController], Some(retry(true, false)), None),
            (&[C::NotLeaderOrFollower], Some(retry(true, false)), None),
            (&[C::UnknownTopicOrPartition], Some(retry(true, false)), None),
            (&[C::NotCoordinator], Some(retry(false, true)), None),
            (&[C::CoordinatorNotAvailable], Some(retry(false, true)), None),
            (&[C::CoordinatorLoadInProgress], Some(retry(false, false)), None),
            (&[C::ConcurrentTransactions], Some(retry(false, false)), None),
            (&[C::RequestTimedOut], Some(retry(false, false)), None),
            (&[C::TopicAuthorizationFailed], None, Some(Step::GiveUp(GiveUp::Final))),
            (&[C::ProducerFenced], None, Some(Step::GiveUp(GiveUp::Final))),
            (&[C::UnknownMemberId], None, Some(Step::GiveUp(GiveUp::Final))),
            (&[C::RebalanceInProgress], None, Some(Step::GiveUp(GiveUp::Final))),
            (&[C::Unknown(9000)], None, Some(Step::GiveUp(GiveUp::Final))),
            // The code that asks for the most decides.
            (&[C::CoordinatorLoadInProgress, C::NotCoordinator], Some(retry(false, true)), None),
            (&[C::ConcurrentTransactions, C::NotLeaderOrFollower], Some(retry(true, false)), None),
            (&[C::NotController, C::TopicAuthorizationFailed], None, Some(Step::GiveUp(GiveUp::Final))),
            (&[C::None, C::NotCoordinator], Some(retry(false, true)), None),
        ];
        for (codes, expect_retry, expect_step) in table {
            let step = first_step(Outcome::Answered(codes));
            match expect_step {
                Some(s) => assert_eq!(step, *s, "{codes:?}"),
                None => assert_eq!(refreshes(step), *expect_retry, "{codes:?}"),
            }
        }
    }

    #[test]
    fn failures_are_sorted_by_what_may_heal() {
        let broker = || "b:1".to_owned();
        let cases: Vec<(Error, Option<(bool, bool)>)> = vec![
            (Error::Disconnected { broker: broker(), reason: "reset".into() }, Some(retry(true, true))),
            (Error::Connect { broker: broker(), reason: "refused".into() }, Some(retry(true, true))),
            (
                Error::Timeout {
                    broker: broker(),
                    api: ApiKey::Produce,
                    timeout: Duration::from_secs(1),
                    kind: crate::TimeoutKind::Connection,
                },
                Some(retry(true, true)),
            ),
            (Error::UnknownBroker { node_id: 3 }, Some(retry(true, true))),
            (Error::UnknownTopic { topic: "t".into() }, Some(retry(true, false))),
            (
                Error::Broker {
                    broker: broker(),
                    api: ApiKey::FindCoordinator,
                    code: ErrorCode::CoordinatorLoadInProgress,
                    message: None,
                },
                Some(retry(false, false)),
            ),
            (Error::Closed, None),
            (Error::InvalidAddress { address: "x".into() }, None),
            (Error::Authentication { broker: broker(), mechanism: "PLAIN".into(), reason: "no".into() }, None),
        ];
        for (e, expect) in cases {
            let step = first_step(Outcome::Failed(&e));
            assert_eq!(refreshes(step), expect, "{e}");
            if expect.is_none() {
                assert_eq!(step, Step::GiveUp(GiveUp::Final), "{e}");
            }
        }
    }

    #[test]
    fn the_deadline_bounds_the_retries() {
        let start = Instant::now();
        let policy = RetryPolicy::default()
            .with_timeout(Duration::from_millis(1000))
            .with_backoff(Duration::from_millis(300), Duration::from_secs(5));
        let mut s = RetryState::new(&policy, start);
        let busy = [ErrorCode::CoordinatorLoadInProgress];
        let mut now = start;
        let mut starts = Vec::new();
        loop {
            match s.decide(Outcome::Answered(&busy), now, 0.5) {
                Step::Retry { at, .. } => {
                    starts.push((at - start).as_millis());
                    now = at;
                }
                Step::GiveUp(why) => {
                    assert_eq!(why, GiveUp::Exhausted);
                    break;
                }
                Step::Done => unreachable!(),
            }
        }
        // 300, then 600 (900), then clipped to the deadline; at the deadline it ends.
        assert_eq!(starts, vec![300, 900, 1000]);
        assert_eq!(s.attempts(), 4);
    }

    #[test]
    fn the_attempt_cap_bounds_the_retries() {
        let now = Instant::now();
        let mut s = RetryState::new(&policy().with_max_attempts(3), now);
        let busy = [ErrorCode::ConcurrentTransactions];
        assert!(matches!(s.decide(Outcome::Answered(&busy), now, 0.1), Step::Retry { .. }));
        assert!(matches!(s.decide(Outcome::Answered(&busy), now, 0.1), Step::Retry { .. }));
        assert_eq!(s.decide(Outcome::Answered(&busy), now, 0.1), Step::GiveUp(GiveUp::Exhausted));
        // A good answer is good whatever the count.
        assert_eq!(s.decide(Outcome::Answered(&[]), now, 0.1), Step::Done);
    }

    fn any_code() -> impl Strategy<Value = ErrorCode> {
        (-1i16..120).prop_map(ErrorCode::from_code)
    }

    proptest! {
        #[test]
        fn the_rule_holds_for_any_history(
            timeout_ms in 1u64..5_000,
            max_attempts in proptest::option::of(1u32..20),
            history in proptest::collection::vec(
                (proptest::collection::vec(any_code(), 0..4), 0u64..3_000, 0.0f64..1.0),
                1..40,
            ),
        ) {
            let start = Instant::now();
            let mut policy = RetryPolicy::default().with_timeout(Duration::from_millis(timeout_ms));
            if let Some(m) = max_attempts {
                policy = policy.with_max_attempts(m);
            }
            let mut s = RetryState::new(&policy, start);
            let mut now = start;
            for (codes, late_ms, random) in history {
                let step = s.decide(Outcome::Answered(&codes), now, random);
                let decider = deciding_code(&codes).map(ErrorCode::retry_action);
                match step {
                    Step::Done => prop_assert!(decider.is_none()),
                    Step::Retry { refresh_metadata, forget_coordinator, at } => {
                        prop_assert!(at <= s.deadline(), "an attempt after the deadline");
                        prop_assert!(at >= now);
                        prop_assert!(max_attempts.is_none_or(|m| s.attempts() < m));
                        for c in &codes {
                            prop_assert_ne!(c.retry_action(), RetryAction::Fatal, "retried a fatal code");
                            prop_assert_ne!(c.retry_action(), RetryAction::Rejoin, "retried a rejoin code");
                        }
                        match decider {
                            Some(RetryAction::RefreshMetadata) => prop_assert!(refresh_metadata),
                            Some(RetryAction::FindCoordinator) => prop_assert!(forget_coordinator),
                            Some(RetryAction::Backoff) => prop_assert!(!refresh_metadata && !forget_coordinator),
                            other => prop_assert!(false, "retried {other:?}"),
                        }
                        // The next attempt's answer arrives some time after it starts.
                        now = at + Duration::from_millis(late_ms);
                    }
                    Step::GiveUp(GiveUp::Final) => prop_assert!(matches!(
                        decider,
                        Some(RetryAction::Fatal | RetryAction::Rejoin | RetryAction::None)
                    )),
                    Step::GiveUp(GiveUp::Exhausted) => {
                        prop_assert!(decider.is_some_and(RetryAction::is_retry));
                        prop_assert!(
                            now >= s.deadline() || max_attempts.is_some_and(|m| s.attempts() >= m)
                        );
                    }
                }
                if !matches!(step, Step::Retry { .. }) {
                    break;
                }
            }
        }
    }
}
