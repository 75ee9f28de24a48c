//! `--stats`: a `metrics` recorder that sums what klife records (counters; count, sum
//! and maximum of histograms) and prints it to stderr at the end of a run, to see how
//! the producer batched (records per batch, batches per request, request latency).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use metrics::{Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit};

#[derive(Default)]
struct Summary(Mutex<(u64, f64, f64)>);

impl HistogramFn for Summary {
    fn record(&self, value: f64) {
        let mut s = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        s.0 += 1;
        s.1 += value;
        s.2 = s.2.max(value);
    }
}

/// Sums counters and histograms by key.
#[derive(Default)]
pub(crate) struct Stats {
    counters: Mutex<BTreeMap<String, Arc<AtomicU64>>>,
    histograms: Mutex<BTreeMap<String, Arc<Summary>>>,
}

fn key_text(key: &Key) -> String {
    let labels: Vec<String> = key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
    if labels.is_empty() { key.name().to_owned() } else { format!("{}{{{}}}", key.name(), labels.join(",")) }
}

impl Stats {
    /// Installs a `Stats` as the process's recorder and returns it.
    pub(crate) fn install() -> Result<&'static Stats, String> {
        let stats: &'static Stats = Box::leak(Box::default());
        metrics::set_global_recorder(stats).map_err(|e| format!("cannot install the stats recorder: {e}"))?;
        Ok(stats)
    }

    /// Prints every counter and histogram to stderr.
    pub(crate) fn print(&self) {
        for (k, v) in self.counters.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            eprintln!("{k}: {}", v.load(Ordering::Relaxed));
        }
        for (k, h) in self.histograms.lock().unwrap_or_else(PoisonError::into_inner).iter() {
            let (n, sum, max) = *h.0.lock().unwrap_or_else(PoisonError::into_inner);
            let mean = if n == 0 { 0.0 } else { sum / n as f64 };
            eprintln!("{k}: count {n}, mean {mean:.4}, max {max:.4}");
        }
    }
}

impl Recorder for &'static Stats {
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
