//! Metric names recorded by the connection layer, through the `metrics` facade.
//!
//! The application installs a recorder (Prometheus, StatsD, ...); without one these
//! cost next to nothing. Names and labels are part of klife's documented contract.
//!
//! | name | kind | labels | meaning |
//! |---|---|---|---|
//! | `klife_requests_total` | counter | `api`, `outcome` (`ok`/`error`) | requests answered (`ok`) or failed: no answer (timed out, disconnected) or an unreadable one (`error`) |
//! | `klife_request_duration_seconds` | histogram | `api` | time from queueing a request to its decoded answer (answered requests only) |
//! | `klife_bytes_sent_total` | counter | | bytes written to brokers |
//! | `klife_bytes_received_total` | counter | | bytes read from brokers |
//! | `klife_connections_opened_total` | counter | | connections established (after handshakes) |
//! | `klife_connection_errors_total` | counter | `stage` (`connect`/`tls`/`api_versions`/`sasl`) | failed connection attempts |
//! | `klife_metadata_refreshes_total` | counter | `outcome` (`ok`/`error`) | metadata refreshes |
//! | `klife_retries_total` | counter | `api`, `action` (`refresh_metadata`/`find_coordinator`/`backoff`), `decision` (`retry`/`give_up`) | calls sent again by the retry rule, and calls it gave up on when time or attempts ran out |
//!
//! Tracing: connection events are emitted at `debug` (opened, closed, reconnect
//! backoff, a call retried) and `warn` (authentication failures, disabled hostname verification)
//! under the `klife_connection` target.
//!
//! Spans:
//!
//! | name | level | fields |
//! |---|---|---|
//! | `klife.request` | `debug` | `api` (`Produce`, `Fetch`, ...), `version`, `broker` (the node id; `host:port` for a bootstrap connection), `correlation_id`; at the end `duration_ms` (from queueing to the decoded answer), and `error` when it failed: the transport's error, or, for a call through the retry rule ([`Cluster::call`](crate::Cluster::call)), the name of the error code that decided it |
//!
//! One `klife.request` span covers each request from the moment it is queued on a
//! connection (or written during a handshake) to its decoded answer; it is a child of
//! the span current where the request was sent (a group's heartbeat, a commit, ...).
//! It is a `debug` span so that it costs next to nothing when no subscriber asks for
//! `debug` spans of `klife_connection`: one check of the global level filter per request,
//! no field is evaluated.

use std::cell::RefCell;
use std::fmt::Display;
use std::time::Duration;

use klife_protocol::ApiKey;
use tracing::Span;
use tracing::field::Empty;

/// Span (`debug`): one request to a broker, from queueing to its decoded answer.
pub const REQUEST_SPAN: &str = "klife.request";

/// Every span name above, for checks that they are documented.
pub const SPANS: &[&str] = &[REQUEST_SPAN];

/// Counter: requests answered or failed, by `api` and `outcome`.
pub const REQUESTS_TOTAL: &str = "klife_requests_total";
/// Histogram: seconds from sending a request to its decoded answer, by `api`.
pub const REQUEST_DURATION_SECONDS: &str = "klife_request_duration_seconds";
/// Counter: bytes written to brokers.
pub const BYTES_SENT_TOTAL: &str = "klife_bytes_sent_total";
/// Counter: bytes read from brokers.
pub const BYTES_RECEIVED_TOTAL: &str = "klife_bytes_received_total";
/// Counter: connections established.
pub const CONNECTIONS_OPENED_TOTAL: &str = "klife_connections_opened_total";
/// Counter: failed connection attempts, by `stage`.
pub const CONNECTION_ERRORS_TOTAL: &str = "klife_connection_errors_total";
/// Counter: metadata refreshes, by `outcome`.
pub const METADATA_REFRESHES_TOTAL: &str = "klife_metadata_refreshes_total";
/// Counter: calls the retry rule sent again or gave up on, by `api`, `action` and
/// `decision`.
pub const RETRIES_TOTAL: &str = "klife_retries_total";

/// Every metric name above, for checks that they are documented.
pub const NAMES: &[&str] = &[
    REQUESTS_TOTAL,
    REQUEST_DURATION_SECONDS,
    BYTES_SENT_TOTAL,
    BYTES_RECEIVED_TOTAL,
    CONNECTIONS_OPENED_TOTAL,
    CONNECTION_ERRORS_TOTAL,
    METADATA_REFRESHES_TOTAL,
    RETRIES_TOTAL,
];

/// The span of one request: disabled (and then nothing but a level check) unless a
/// subscriber takes `debug` spans of this crate. `node_id` is `None` on a bootstrap
/// connection, whose `broker` is then its address.
#[inline]
pub(crate) fn request_span(
    api: ApiKey,
    version: i16,
    node_id: Option<i32>,
    address: &str,
    correlation_id: i32,
) -> Span {
    let span = tracing::debug_span!(
        REQUEST_SPAN,
        api = api.name(),
        version,
        broker = Empty,
        correlation_id,
        duration_ms = Empty,
        error = Empty
    );
    if !span.is_disabled() {
        match node_id {
            Some(id) => span.record("broker", id),
            None => span.record("broker", address),
        };
        // A call through the retry rule records the error code of the answer on it.
        let _ = CALL_REQUEST.try_with(|slot| *slot.borrow_mut() = Some(span.clone()));
    }
    span
}

/// Ends a request's span: how long it took and, when it failed, why.
#[inline]
pub(crate) fn finish_request(span: &Span, elapsed: Duration, error: Option<&dyn Display>) {
    if span.is_disabled() {
        return;
    }
    span.record("duration_ms", elapsed.as_secs_f64() * 1000.0);
    if let Some(error) = error {
        span.record("error", tracing::field::display(error));
    }
}

tokio::task_local! {
    /// The span of the last request sent within a call of the retry rule.
    static CALL_REQUEST: RefCell<Option<Span>>;
}

/// Runs one attempt of a call, and returns with its outcome the span of the last request
/// the attempt sent (if spans are on), so that the error code the answer carries can be
/// recorded on it.
pub(crate) async fn with_request_span<F: Future>(attempt: F) -> (F::Output, Option<Span>) {
    CALL_REQUEST
        .scope(RefCell::new(None), async {
            let out = attempt.await;
            (out, CALL_REQUEST.with(|slot| slot.borrow_mut().take()))
        })
        .await
}

pub(crate) fn record_request(api: ApiKey, elapsed: Duration, ok: bool) {
    let outcome = if ok { "ok" } else { "error" };
    metrics::counter!(REQUESTS_TOTAL, "api" => api.name(), "outcome" => outcome).increment(1);
    if ok {
        metrics::histogram!(REQUEST_DURATION_SECONDS, "api" => api.name()).record(elapsed.as_secs_f64());
    }
}

pub(crate) fn record_bytes_sent(n: usize) {
    metrics::counter!(BYTES_SENT_TOTAL).increment(n as u64);
}

pub(crate) fn record_bytes_received(n: usize) {
    metrics::counter!(BYTES_RECEIVED_TOTAL).increment(n as u64);
}

pub(crate) fn record_connection_opened() {
    metrics::counter!(CONNECTIONS_OPENED_TOTAL).increment(1);
}

pub(crate) fn record_connection_error(stage: &'static str) {
    metrics::counter!(CONNECTION_ERRORS_TOTAL, "stage" => stage).increment(1);
}

pub(crate) fn record_metadata_refresh(ok: bool) {
    metrics::counter!(METADATA_REFRESHES_TOTAL, "outcome" => if ok { "ok" } else { "error" }).increment(1);
}

pub(crate) fn record_retry(api: ApiKey, action: &'static str, exhausted: bool) {
    let decision = if exhausted { "give_up" } else { "retry" };
    metrics::counter!(RETRIES_TOTAL, "api" => api.name(), "action" => action, "decision" => decision).increment(1);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use bytes::BytesMut;
    use klife_protocol::messages::{InitProducerIdRequest, MetadataRequest, MetadataResponse};
    use klife_protocol::{ErrorCode, VersionRange, frame};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Metadata};

    use super::*;
    use crate::conn::{Connection, ConnectionParams};
    use crate::versions::BrokerVersions;
    use crate::{Cluster, ConnectionConfig, RetryPolicy, Target};

    type Fields = BTreeMap<String, String>;

    /// Every span opened on this thread, with its fields as recorded so far.
    #[derive(Clone, Default)]
    struct Spans(Arc<Mutex<Vec<(&'static str, Fields)>>>);

    impl Spans {
        fn named(&self, name: &str) -> Vec<Fields> {
            self.0.lock().unwrap().iter().filter(|(n, _)| *n == name).map(|(_, f)| f.clone()).collect()
        }
    }

    struct Visit<'a>(&'a mut Fields);

    impl tracing::field::Visit for Visit<'_> {
        fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
            self.0.insert(field.name().to_owned(), value.to_owned());
        }

        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            self.0.insert(field.name().to_owned(), format!("{value:?}"));
        }
    }

    impl tracing::Subscriber for Spans {
        fn enabled(&self, _: &Metadata<'_>) -> bool {
            true
        }

        fn new_span(&self, attrs: &Attributes<'_>) -> Id {
            let mut fields = Fields::new();
            attrs.record(&mut Visit(&mut fields));
            let mut all = self.0.lock().unwrap();
            all.push((attrs.metadata().name(), fields));
            Id::from_u64(all.len() as u64)
        }

        fn record(&self, id: &Id, values: &Record<'_>) {
            let mut all = self.0.lock().unwrap();
            values.record(&mut Visit(&mut all[id.into_u64() as usize - 1].1));
        }

        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, _: &Event<'_>) {}
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }

    #[tokio::test]
    async fn a_request_span_names_the_request_and_says_how_it_ended() {
        let spans = Spans::default();
        let _default = tracing::subscriber::set_default(spans.clone());
        let (client, mut broker) = tokio::io::duplex(1 << 16);
        let (r, w) = tokio::io::split(client);
        let params = ConnectionParams {
            broker: "7@test:9092".into(),
            node_id: Some(7),
            client_id: None,
            max_in_flight: 4,
            request_timeout: Duration::from_secs(30),
            max_frame_size: 1 << 20,
        };
        let versions = BrokerVersions::from_ranges([(ApiKey::Metadata, VersionRange::new(0, 12))]);
        let conn = Connection::spawn(params, versions, Box::new(r), Box::new(w), 40);

        let answered = tokio::spawn({
            let conn = conn.clone();
            async move { conn.send_version(&MetadataRequest::default(), 12).await }
        });
        let size = broker.read_i32().await.unwrap();
        let mut body = vec![0; size as usize];
        broker.read_exact(&mut body).await.unwrap();
        let id = frame::decode_request(body.into()).unwrap().0.correlation_id;
        let mut out = BytesMut::new();
        frame::encode_response(&mut out, id, 12, &MetadataResponse::default()).unwrap();
        broker.write_all(&out).await.unwrap();
        answered.await.unwrap().unwrap();

        // The next one is never answered: the broker goes away.
        let failed = tokio::spawn({
            let conn = conn.clone();
            async move { conn.send_version(&MetadataRequest::default(), 9).await }
        });
        broker.read_i32().await.unwrap();
        drop(broker);
        failed.await.unwrap().unwrap_err();

        let requests = spans.named(REQUEST_SPAN);
        assert_eq!(requests.len(), 2, "{requests:?}");
        let (ok, lost) = (&requests[0], &requests[1]);
        for (field, want) in [("api", "Metadata"), ("version", "12"), ("broker", "7"), ("correlation_id", "40")] {
            assert_eq!(ok[field], want, "{field}: {ok:?}");
        }
        assert!(ok["duration_ms"].parse::<f64>().unwrap() >= 0.0, "{ok:?}");
        assert!(!ok.contains_key("error"), "{ok:?}");
        assert_eq!((lost["version"].as_str(), lost["correlation_id"].as_str()), ("9", "41"));
        assert!(lost.contains_key("duration_ms"), "{lost:?}");
        assert!(lost["error"].contains("lost"), "the disconnection: {lost:?}");
    }

    #[tokio::test]
    async fn a_call_records_the_error_code_that_decided_it_on_its_request_span() {
        let kafka = klife_testkit::FakeCluster::builder().start().await.unwrap();
        let cluster = Cluster::connect(&kafka.addresses(), ConnectionConfig::default()).await.unwrap();
        let spans = Spans::default();
        let _default = tracing::subscriber::set_default(spans.clone());
        kafka.inject_errors(ApiKey::InitProducerId, &[ErrorCode::TransactionalIdAuthorizationFailed], None);
        let request = InitProducerIdRequest::default()
            .with_transactional_id(Some("t".into()))
            .with_transaction_timeout_ms(60_000);
        let target = Target::Coordinator(crate::CoordinatorType::Transaction, "t");
        let err = cluster.call(target, &request, &RetryPolicy::default(), |r| [r.error_code]).await.unwrap_err();
        assert!(err.to_string().contains("TRANSACTIONAL_ID_AUTHORIZATION_FAILED"), "{err}");
        let calls: Vec<Fields> =
            spans.named(REQUEST_SPAN).into_iter().filter(|f| f["api"] == "InitProducerId").collect();
        assert_eq!(calls.len(), 1, "{calls:?}");
        assert_eq!(calls[0]["error"], "TRANSACTIONAL_ID_AUTHORIZATION_FAILED");
        assert!(calls[0]["broker"].parse::<i32>().is_ok(), "a node id: {:?}", calls[0]);
        cluster.close().await;
    }
}
