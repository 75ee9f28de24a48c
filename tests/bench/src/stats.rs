//! `--stats true`: klife's metrics, captured over the run and printed to stderr at the
//! end (counters; count, mean and maximum of histograms), to see how the producer
//! batched (records per batch, batches per request, request latency).

use klife_testkit::metrics::CapturedMetrics;

/// Installs a recorder for the whole process and returns a handle to read it.
pub(crate) fn install() -> Result<CapturedMetrics, String> {
    let captured = CapturedMetrics::default();
    metrics::set_global_recorder(captured.clone()).map_err(|e| format!("cannot install the stats recorder: {e}"))?;
    Ok(captured)
}

/// Prints every counter and histogram to stderr.
pub(crate) fn print(captured: &CapturedMetrics) {
    for (k, v) in captured.counters("") {
        eprintln!("{k}: {v}");
    }
    for (k, values) in captured.histograms("") {
        let n = values.len();
        let mean = if n == 0 { 0.0 } else { values.iter().sum::<f64>() / n as f64 };
        let max = values.iter().copied().fold(0.0, f64::max);
        eprintln!("{k}: count {n}, mean {mean:.4}, max {max:.4}");
    }
}
