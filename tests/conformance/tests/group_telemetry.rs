//! What a consumer group's run leaves in telemetry, captured by a `metrics` recorder
//! and a `tracing` layer installed for this test binary: N records produced to a topic
//! of P partitions, handled by a group of one member to the end, then
//!
//! - metrics, each with the `group` label: `klife_group_records_total` adds up to N,
//!   `klife_group_batches_total` is at least 1, `klife_group_commits_total` counts
//!   commits with `outcome="ok"` (and none under another label word), a rebalance is
//!   counted with the group's `protocol`, a heartbeat's round trip is timed, and
//!   `klife_group_lag` has one gauge per partition (`topic`, `partition`), 0 once
//!   everything is committed;
//! - spans: `klife.group.join`, `klife.group.heartbeat`, `klife.group.reconcile`,
//!   `klife.group.commit` and, after the shutdown, `klife.group.revoke` with the
//!   `group` and `member_id` fields; `klife.request` spans with `api`, `version`,
//!   `broker`, `correlation_id` and `duration_ms` within them (an OffsetCommit within a
//!   commit, the join's requests within the join).
//!
//! Recorders are process-wide: they are installed once, and every check reads only
//! what carries the case's own (unique) group name, so that the cases of this binary
//! may run side by side. No check is on time: waits end on what they wait for, under
//! a generous hang guard.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use klife::ProducerRecord;
use klife::group::{GroupProtocol, ResetPolicy, TopicConfig};
use klife_conformance::groups::{HANG_GUARD, Log, Recorder, driver_for, handled_ends, until_committed};
use klife_conformance::{Broker, unique_topic};
use klife_group::telemetry as group_metrics;
use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, SharedString, Unit};
use tracing::span::{Attributes, Id, Record as SpanValues};
use tracing::{Subscriber, field::Field};
use tracing_subscriber::Registry;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

// KIP-848 on both (the protocol chosen automatically), and the classic protocol forced.
klife_conformance::against_brokers!(
    [kafka: Kafka, testkit: Testkit]
    a_group_run_leaves_its_metrics_and_spans,
    classic_a_group_run_leaves_its_metrics_and_spans,
);

async fn a_group_run_leaves_its_metrics_and_spans(broker: Broker) {
    group_run(broker, GroupProtocol::Auto, "consumer").await;
}

async fn classic_a_group_run_leaves_its_metrics_and_spans(broker: Broker) {
    group_run(broker, GroupProtocol::Classic, "classic").await;
}

const PARTITIONS: i32 = 3;
const RECORDS: usize = 60;

async fn group_run(broker: Broker, protocol: GroupProtocol, protocol_label: &str) {
    let capture = capture();
    let client = broker.client().await;
    let topic = unique_topic("tel");
    broker.create_topic(&client, &topic, PARTITIONS).await;
    let records = (0..RECORDS)
        .map(|i| ProducerRecord::new(topic.clone(), format!("v{i}")).with_partition(i as i32 % PARTITIONS))
        .collect();
    for r in client.produce_batch(records).await {
        r.unwrap();
    }
    let group = unique_topic("tel-g");
    let log = Log::default();
    let g = client
        .consumer_group(group.as_str())
        .protocol(protocol)
        .driver(driver_for(broker))
        .session_timeout(Duration::from_secs(10))
        .heartbeat_interval(Duration::from_millis(500))
        .topic(TopicConfig::new(&topic).offset_reset(ResetPolicy::Earliest).fetch_interval(Duration::from_millis(50)))
        .handler(Recorder { member: 0, log: log.clone() })
        .start()
        .await
        .unwrap();
    log.until("every record handled", |s| s.handled.len() == RECORDS).await;
    let end = log.read(|s| handled_ends(s, PARTITIONS));
    until_committed(&client, &group, &topic, &end).await;
    // The lag reads 0 once the member learnt its last commits; a heartbeat after the
    // join comes within the heartbeat interval.
    until("every partition's lag at 0", || {
        let lags = capture.metrics.gauges(group_metrics::GROUP_LAG, &[("group", &group)]);
        lags.len() == PARTITIONS as usize && lags.values().all(|v| *v == 0.0)
    })
    .await;
    until("a heartbeat after the join", || !capture.spans.named("klife.group.heartbeat", &group).is_empty()).await;
    g.shutdown().await.unwrap();
    assert!(log.read(|s| s.handled.values().all(|by| by.len() == 1)), "a record handled twice");

    // Metrics.
    let m = &capture.metrics;
    let of_group = [("group", group.as_str())];
    let in_topic = [("group", group.as_str()), ("topic", topic.as_str())];
    assert_eq!(m.counter(group_metrics::GROUP_RECORDS_TOTAL, &in_topic), RECORDS as u64, "records handled");
    assert!(m.counter(group_metrics::GROUP_BATCHES_TOTAL, &in_topic) >= 1, "batches handled");
    assert!(m.histogram_count(group_metrics::GROUP_HANDLER_DURATION_SECONDS, &in_topic) >= 1, "handler timings");
    let ok = [("group", group.as_str()), ("outcome", "ok")];
    assert!(m.counter(group_metrics::GROUP_COMMITS_TOTAL, &ok) >= 1, "commits with outcome=\"ok\"");
    for labels in m.label_sets(group_metrics::GROUP_COMMITS_TOTAL, &of_group) {
        let names: Vec<&str> = labels.keys().map(String::as_str).collect();
        assert_eq!(names, ["group", "outcome"], "the commits' labels");
        assert!(["ok", "error"].contains(&labels["outcome"].as_str()), "outcome {:?}", labels["outcome"]);
    }
    assert!(m.histogram_count(group_metrics::GROUP_COMMIT_DURATION_SECONDS, &of_group) >= 1, "commit timings");
    let rebalances = [("group", group.as_str()), ("protocol", protocol_label)];
    assert!(m.counter(group_metrics::GROUP_REBALANCES_TOTAL, &rebalances) >= 1, "rebalances with protocol");
    assert!(m.histogram_count(group_metrics::GROUP_HEARTBEAT_DURATION_SECONDS, &of_group) >= 1, "heartbeat timings");
    assert_eq!(
        m.counter(group_metrics::GROUP_PARTITIONS_ASSIGNED_TOTAL, &of_group),
        PARTITIONS as u64,
        "partitions assigned"
    );
    let lags = m.gauges(group_metrics::GROUP_LAG, &of_group);
    let partitions: Vec<(String, String)> =
        lags.keys().map(|labels| (labels["topic"].clone(), labels["partition"].clone())).collect();
    let want: Vec<(String, String)> = (0..PARTITIONS).map(|p| (topic.clone(), p.to_string())).collect();
    assert_eq!(partitions, want, "one lag gauge per partition");
    assert!(lags.values().all(|v| *v == 0.0), "lags at the end: {lags:?}");

    // Spans.
    let spans = &capture.spans;
    for name in ["klife.group.join", "klife.group.heartbeat", "klife.group.reconcile", "klife.group.commit"] {
        let found = spans.named(name, &group);
        assert!(!found.is_empty(), "no {name} span of the group");
        for s in &found {
            assert!(s.fields.contains_key("member_id"), "{name} without member_id: {s:?}");
        }
    }
    let joins = spans.named("klife.group.join", &group);
    assert!(joins.iter().all(|s| s.fields["protocol"] == protocol_label), "{joins:?}");
    assert!(joins.iter().any(|s| !s.fields["member_id"].is_empty()), "no join names its member id: {joins:?}");
    let commits = spans.named("klife.group.commit", &group);
    assert!(commits.iter().any(|s| s.fields.get("outcome").is_some_and(|o| o == "ok")), "{commits:?}");
    let revokes = spans.named("klife.group.revoke", &group);
    assert!(revokes.iter().any(|s| s.fields.get("reason").is_some_and(|r| r == "shutdown")), "{revokes:?}");

    let requests = spans.named("klife.request", &group);
    assert!(!requests.is_empty(), "no klife.request span within the group's spans");
    for r in &requests {
        for field in ["api", "version", "broker", "correlation_id"] {
            assert!(r.fields.contains_key(field), "a request span without {field}: {r:?}");
        }
        assert!(r.fields["broker"].parse::<i32>().is_ok(), "broker is a node id: {r:?}");
    }
    let commit_requests: Vec<&SpanSeen> =
        requests.iter().filter(|r| r.fields["api"] == "OffsetCommit" && r.parent == "klife.group.commit").collect();
    assert!(!commit_requests.is_empty(), "no OffsetCommit request within a commit span");
    assert!(commit_requests.iter().any(|r| r.fields.contains_key("duration_ms")), "{commit_requests:?}");
    let join_api = if protocol_label == "classic" { "JoinGroup" } else { "ConsumerGroupHeartbeat" };
    assert!(
        requests.iter().any(|r| r.fields["api"] == join_api && r.parent == "klife.group.join"),
        "no {join_api} request within the join span"
    );
}

/// Waits until `done` holds; fails as hung after [`HANG_GUARD`].
async fn until(what: &str, done: impl Fn() -> bool) {
    tokio::time::timeout(HANG_GUARD, async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("hung waiting for {what}"));
}

/// What the process recorded, from the start of the first case on.
struct Capture {
    metrics: Arc<Metrics>,
    spans: Arc<Spans>,
}

/// Installs the recorder and the subscriber once for the binary.
fn capture() -> &'static Capture {
    static CAPTURE: OnceLock<Capture> = OnceLock::new();
    CAPTURE.get_or_init(|| {
        let capture = Capture { metrics: Arc::default(), spans: Arc::default() };
        metrics::set_global_recorder(MetricsRecorder(capture.metrics.clone())).expect("the only metrics recorder");
        let subscriber = Registry::default().with(SpanLayer(capture.spans.clone()));
        tracing::subscriber::set_global_default(subscriber).expect("the only subscriber");
        capture
    })
}

/// Label name -> value.
type Labels = BTreeMap<String, String>;

/// A histogram's samples, counted.
#[derive(Default)]
struct Samples(AtomicU64);

impl metrics::HistogramFn for Samples {
    fn record(&self, _value: f64) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

/// Every metric registered, by name and labels.
#[derive(Default)]
struct Metrics {
    counters: Mutex<HashMap<Key, Arc<AtomicU64>>>,
    gauges: Mutex<HashMap<Key, Arc<AtomicU64>>>,
    histograms: Mutex<HashMap<Key, Arc<Samples>>>,
}

fn labels(key: &Key) -> Labels {
    key.labels().map(|l| (l.key().to_owned(), l.value().to_owned())).collect()
}

/// Whether `key` is `name` with every label of `wanted`.
fn matches(key: &Key, name: &str, wanted: &[(&str, &str)]) -> bool {
    key.name() == name && wanted.iter().all(|(k, v)| key.labels().any(|l| l.key() == *k && l.value() == *v))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Metrics {
    /// The sum of the counters `name` with these labels (and any others).
    fn counter(&self, name: &str, wanted: &[(&str, &str)]) -> u64 {
        lock(&self.counters)
            .iter()
            .filter(|(k, _)| matches(k, name, wanted))
            .map(|(_, v)| v.load(Ordering::Relaxed))
            .sum()
    }

    /// The label sets of the counters `name` with these labels.
    fn label_sets(&self, name: &str, wanted: &[(&str, &str)]) -> Vec<Labels> {
        lock(&self.counters).keys().filter(|k| matches(k, name, wanted)).map(labels).collect()
    }

    /// The gauges `name` with these labels, by their labels.
    fn gauges(&self, name: &str, wanted: &[(&str, &str)]) -> BTreeMap<Labels, f64> {
        lock(&self.gauges)
            .iter()
            .filter(|(k, _)| matches(k, name, wanted))
            .map(|(k, v)| (labels(k), f64::from_bits(v.load(Ordering::Relaxed))))
            .collect()
    }

    /// How many samples the histograms `name` with these labels took.
    fn histogram_count(&self, name: &str, wanted: &[(&str, &str)]) -> u64 {
        lock(&self.histograms)
            .iter()
            .filter(|(k, _)| matches(k, name, wanted))
            .map(|(_, v)| v.0.load(Ordering::Relaxed))
            .sum()
    }
}

struct MetricsRecorder(Arc<Metrics>);

impl metrics::Recorder for MetricsRecorder {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(lock(&self.0.counters).entry(key.clone()).or_default().clone())
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(lock(&self.0.gauges).entry(key.clone()).or_default().clone())
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(lock(&self.0.histograms).entry(key.clone()).or_default().clone())
    }
}

/// A span as it was opened and recorded.
#[derive(Debug, Clone)]
struct SpanSeen {
    name: &'static str,
    fields: BTreeMap<String, String>,
    /// The parent's name ("" for none).
    parent: &'static str,
    /// The `group` field of the span, or of its nearest ancestor that has one.
    group: Option<String>,
}

/// Every span opened, in order.
#[derive(Default)]
struct Spans(Mutex<Vec<SpanSeen>>);

impl Spans {
    /// The spans `name` of `group` (their own `group` field or an ancestor's).
    fn named(&self, name: &str, group: &str) -> Vec<SpanSeen> {
        lock(&self.0).iter().filter(|s| s.name == name && s.group.as_deref() == Some(group)).cloned().collect()
    }
}

/// Where a span's [`SpanSeen`] is, in its extensions.
struct Index(usize);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl tracing::field::Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

/// Notes every span and the fields recorded on it.
struct SpanLayer(Arc<Spans>);

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for SpanLayer {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        let parent = span.parent();
        let inherited = parent.as_ref().and_then(|p| {
            let seen = lock(&self.0.0);
            p.extensions().get::<Index>().and_then(|i| seen[i.0].group.clone())
        });
        let group = fields.get("group").cloned().or(inherited);
        let seen = SpanSeen { name: span.name(), fields, parent: parent.map_or("", |p| p.name()), group };
        let mut all = lock(&self.0.0);
        all.push(seen);
        span.extensions_mut().insert(Index(all.len() - 1));
    }

    fn on_record(&self, id: &Id, values: &SpanValues<'_>, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let Some(index) = span.extensions().get::<Index>().map(|i| i.0) else { return };
        values.record(&mut Fields(&mut lock(&self.0.0)[index].fields));
    }
}
