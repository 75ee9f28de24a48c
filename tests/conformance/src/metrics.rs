//! A `metrics` recorder that keeps what it is given, for checking what klife records.
//! Install it for one thread with [`metrics::with_local_recorder`] around a
//! current-thread runtime, so that every task of the test records into it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use metrics::{Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit};

/// A histogram's recorded values.
#[derive(Default)]
struct Values(Mutex<Vec<f64>>);

impl HistogramFn for Values {
    fn record(&self, value: f64) {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).push(value);
    }
}

/// Keeps counters and histograms by name and labels (`name{label=value,...}`); gauges
/// are ignored.
#[derive(Default)]
pub struct Captured {
    counters: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
    histograms: Mutex<BTreeMap<String, Arc<Values>>>,
}

fn key_text(key: &Key) -> String {
    let labels: Vec<String> = key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
    if labels.is_empty() { key.name().to_owned() } else { format!("{}{{{}}}", key.name(), labels.join(",")) }
}

impl Captured {
    /// A counter's value; 0 when it was never registered.
    pub fn counter(&self, key: &str) -> u64 {
        self.counters.lock().unwrap_or_else(PoisonError::into_inner).get(key).map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Every counter whose key starts with `prefix`, with its value.
    pub fn counters(&self, prefix: &str) -> Vec<(String, u64)> {
        let counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        counters
            .iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.load(Ordering::Relaxed)))
            .collect()
    }

    /// A histogram's values, in the order recorded.
    pub fn histogram(&self, key: &str) -> Vec<f64> {
        let histograms = self.histograms.lock().unwrap_or_else(PoisonError::into_inner);
        histograms.get(key).map(|h| h.0.lock().unwrap_or_else(PoisonError::into_inner).clone()).unwrap_or_default()
    }
}

impl Recorder for Captured {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        let mut counters = self.counters.lock().unwrap_or_else(PoisonError::into_inner);
        Counter::from_arc(counters.entry(key_text(key)).or_default().clone())
    }

    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let mut histograms = self.histograms.lock().unwrap_or_else(PoisonError::into_inner);
        Histogram::from_arc(histograms.entry(key_text(key)).or_default().clone())
    }
}
