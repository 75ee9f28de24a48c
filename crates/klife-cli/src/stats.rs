//! `--stats`: a `metrics` recorder that keeps every metric klife records in memory and
//! prints them on standard error when the command ends (the names are listed in
//! docs/telemetry.md).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use metrics::{Counter, CounterFn, Gauge, GaugeFn, Histogram, HistogramFn, Key, KeyName, Metadata, SharedString, Unit};

/// A counter, a gauge (its f64 bits) or a histogram's count, sum and max.
#[derive(Debug, Default)]
struct Cell {
    value: AtomicU64,
    histogram: Mutex<(u64, f64, f64)>,
}

impl CounterFn for Cell {
    fn increment(&self, value: u64) {
        self.value.fetch_add(value, Ordering::Relaxed);
    }

    fn absolute(&self, value: u64) {
        self.value.fetch_max(value, Ordering::Relaxed);
    }
}

impl GaugeFn for Cell {
    fn increment(&self, value: f64) {
        self.update(|v| v + value);
    }

    fn decrement(&self, value: f64) {
        self.update(|v| v - value);
    }

    fn set(&self, value: f64) {
        self.value.store(value.to_bits(), Ordering::Relaxed);
    }
}

impl HistogramFn for Cell {
    fn record(&self, value: f64) {
        let mut h = self.histogram.lock().unwrap_or_else(PoisonError::into_inner);
        h.0 += 1;
        h.1 += value;
        h.2 = h.2.max(value);
    }
}

impl Cell {
    fn update(&self, f: impl Fn(f64) -> f64) {
        let _ = self
            .value
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| Some(f(f64::from_bits(bits)).to_bits()));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// Every metric recorded, by its name with labels and its kind.
type Cells = BTreeMap<(String, Kind), Arc<Cell>>;

/// The recorder behind `--stats`.
#[derive(Debug, Default, Clone)]
pub(crate) struct Stats {
    cells: Arc<Mutex<Cells>>,
}

fn render(key: &Key) -> String {
    let labels: Vec<String> = key.labels().map(|l| format!("{}={}", l.key(), l.value())).collect();
    if labels.is_empty() { key.name().to_owned() } else { format!("{}{{{}}}", key.name(), labels.join(",")) }
}

impl Stats {
    /// Installs a recorder as the process's `metrics` recorder.
    pub(crate) fn install() -> Option<Stats> {
        let stats = Stats::default();
        metrics::set_global_recorder(stats.clone()).ok().map(|()| stats)
    }

    fn cell(&self, key: &Key, kind: Kind) -> Arc<Cell> {
        let mut cells = self.cells.lock().unwrap_or_else(PoisonError::into_inner);
        cells.entry((render(key), kind)).or_default().clone()
    }

    /// Prints every metric recorded, sorted by name, on standard error.
    pub(crate) fn print(&self) {
        let cells = self.cells.lock().unwrap_or_else(PoisonError::into_inner);
        let width = cells.keys().map(|(k, _)| k.len()).max().unwrap_or(0);
        eprintln!("klife: stats ({} metrics)", cells.len());
        for ((name, kind), cell) in cells.iter() {
            let value = match kind {
                Kind::Counter => cell.value.load(Ordering::Relaxed).to_string(),
                Kind::Gauge => format!("{}", f64::from_bits(cell.value.load(Ordering::Relaxed))),
                Kind::Histogram => {
                    let (count, sum, max) = *cell.histogram.lock().unwrap_or_else(PoisonError::into_inner);
                    let mean = if count == 0 { 0.0 } else { sum / count as f64 };
                    format!("count={count} mean={mean:.6} max={max:.6}")
                }
            };
            eprintln!("  {name:<width$}  {value}");
        }
    }
}

impl metrics::Recorder for Stats {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.cell(key, Kind::Counter))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(self.cell(key, Kind::Gauge))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.cell(key, Kind::Histogram))
    }
}
