//! # klife-chaos
//!
//! Seeded, replayable chaos runs of klife's producers and consumer groups. One run is
//! one seed: a [`Plan`] drawn from a generator seeded with it (topics and partition
//! counts, 2 to 5 members with their protocol, the mode they take records in, the
//! records, and faults at seeded moments), carried out against a fresh klife-testkit
//! cluster or the Apache Kafka cluster of `KLIFE_TEST_KAFKA`, and checked against the
//! invariants of [`check`]. A failing run names the seed, the invariant and its
//! evidence, and the command that replays it:
//!
//! ```text
//! cargo xtask chaos --seed 17 --broker testkit
//! ```
//!
//! The same seed always gives the same plan; the interleaving of a run still depends
//! on the machine, so a replay reproduces the conditions, not every step.
//!
//! ```no_run
//! let report = klife_chaos::run_seed(17, klife_chaos::Broker::Testkit);
//! for v in &report.violations {
//!     eprintln!("seed 17: {v}");
//! }
//! ```
//!
//! See `docs/chaos.md` for what a run does and what was measured.

pub mod check;
pub mod cluster;
pub mod members;
pub mod observe;
pub mod plan;
pub mod produce;
pub mod run;

use std::time::Duration;

pub use check::Violation;
pub use plan::{Broker, Plan};
pub use run::Report;

/// Longer than any run takes: past it the run fails as hung.
const RUN_GUARD: Duration = Duration::from_secs(1200);

/// Runs seed `seed` on `broker`, on a runtime of its own (2 worker threads), and
/// reports what it found. A panic or a hang of the run is reported as a violation.
pub fn run_seed(seed: u64, broker: Broker) -> Report {
    let plan = Plan::new(seed, broker);
    let runtime = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(r) => r,
        Err(e) => return failed(plan, format!("no tokio runtime: {e}")),
    };
    let started = std::time::Instant::now();
    let task = runtime.spawn(run::run(plan.clone()));
    let outcome = runtime.block_on(async { tokio::time::timeout(RUN_GUARD, task).await });
    let report = match outcome {
        Ok(Ok(report)) => report,
        Ok(Err(e)) => {
            let what = if e.is_panic() {
                let panic = e.into_panic();
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                    .unwrap_or_else(|| "a panic".to_owned())
            } else {
                e.to_string()
            };
            let mut r = failed(plan, format!("the run panicked: {what}"));
            r.wall = started.elapsed();
            r
        }
        Err(_) => failed(plan, format!("the run did not end within {RUN_GUARD:?}")),
    };
    runtime.shutdown_timeout(Duration::from_secs(5));
    report
}

fn failed(plan: Plan, why: String) -> Report {
    let mut report = Report::new(plan);
    report.violations.push(Violation::new(check::names::LIVENESS, why));
    report
}
