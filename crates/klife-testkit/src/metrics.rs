//! A `metrics` recorder that keeps everything it is given, for checking in tests what
//! klife (or anything else using the `metrics` facade) recorded.
//!
//! Keys are the metric's name, followed by its labels in braces when it has any:
//! `klife_produce_records_total{outcome=ok}`. Gauges are not kept.
//!
//! ```
//! use klife_testkit::metrics::CapturedMetrics;
//!
//! let captured = CapturedMetrics::default();
//! metrics::with_local_recorder(&captured, || {
//!     metrics::counter!("requests_total", "outcome" => "ok").increment(2);
//!     metrics::histogram!("batch_records").record(10.0);
//! });
//! assert_eq!(captured.counter("requests_total{outcome=ok}"), 2);
//! assert_eq!(captured.histogram("batch_records"), vec![10.0]);
//! ```
//!
//! `metrics::with_local_recorder` installs it for one thread: run a current-thread
//! tokio runtime inside it so that every task records into it. Clones share what is
//! captured, so one clone can be installed globally (`metrics::set_global_recorder`)
//! and another read.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use ::metrics::{Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit};

/// A histogram's recorded values.
#[derive(Default)]
struct Values(Mutex<Vec<f64>>);

impl HistogramFn for Values {
    fn record(&self, value: f64) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).push(value);
    }
}

#[derive(Default)]
struct Store {
    counters: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
    histograms: Mutex<BTreeMap<String, Arc<Values>>>,
}

/// Counters and histograms recorded, by key (see the [module docs](self)).
#[derive(Clone, Default)]
pub struct CapturedMetrics {
    store: Arc<Store>,
}

impl std::fmt::Debug for CapturedMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CapturedMetrics").field("counters", &self.counters("")).finish_non_exhaustive()
    }
}

fn key_text(key: &Key) -> String {
    let labels: Vec<String> = key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
    if labels.is_empty() { key.name().to_owned() } else { format!("{}{{{}}}", key.name(), labels.join(",")) }
}

impl CapturedMetrics {
    /// A counter's value; 0 when it was never registered.
    pub fn counter(&self, key: &str) -> u64 {
        let counters = self.store.counters.lock().unwrap_or_else(PoisonError::into_inner);
        counters.get(key).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Every counter whose key starts with `prefix`, with its value, sorted by key.
    pub fn counters(&self, prefix: &str) -> Vec<(String, u64)> {
        let counters = self.store.counters.lock().unwrap_or_else(PoisonError::into_inner);
        counters
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.load(Ordering::Relaxed)))
            .collect()
    }

    /// A histogram's values, in the order recorded; empty when it was never registered.
    pub fn histogram(&self, key: &str) -> Vec<f64> {
        let histograms = self.store.histograms.lock().unwrap_or_else(PoisonError::into_inner);
        histograms.get(key).map(|h| h.0.lock().unwrap_or_else(PoisonError::into_inner).clone()).unwrap_or_default()
    }

    /// Every histogram whose key starts with `prefix`, with its values, sorted by key.
    pub fn histograms(&self, prefix: &str) -> Vec<(String, Vec<f64>)> {
        let histograms = self.store.histograms.lock().unwrap_or_else(PoisonError::into_inner);
        histograms
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, h)| (k.clone(), h.0.lock().unwrap_or_else(PoisonError::into_inner).clone()))
            .collect()
    }
}

impl Recorder for CapturedMetrics {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let mut counters = self.store.counters.lock().unwrap_or_else(PoisonError::into_inner);
        Counter::from_arc(counters.entry(key_text(key)).or_default().clone())
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let mut histograms = self.store.histograms.lock().unwrap_or_else(PoisonError::into_inner);
        Histogram::from_arc(histograms.entry(key_text(key)).or_default().clone())
    }
}
