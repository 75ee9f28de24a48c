//! `klife-chaos`: runs seeds one after the other and prints each plan, each failure
//! with its replay command, and a summary. Usually run as `cargo xtask chaos`.

#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use klife_chaos::plan::FAULT_KINDS;
use klife_chaos::{Broker, Report};

const USAGE: &str = "usage: klife-chaos [--seeds N] [--first S] [--seed S] [--broker testkit|kafka]

  --seeds N    how many seeds to run (default 1), from --first (default 1)
  --seed S     run seed S only
  --broker B   testkit (default: a fresh in-process cluster per seed) or kafka (the
               cluster named by KLIFE_TEST_KAFKA and KLIFE_TEST_KAFKA_CONTROL)

  KLIFE_CHAOS_LOG=FILTER keeps klife's tracing events (e.g. `klife_group=debug`) of each
  seed and writes those of a failing seed to target/chaos/seed-S-BROKER.log.";

/// The tracing events of the seed running now (`KLIFE_CHAOS_LOG`), written out if it
/// fails.
static TRACE: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// A writer appending to [`TRACE`].
struct Trace;

impl std::io::Write for Trace {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        TRACE.lock().unwrap_or_else(PoisonError::into_inner).extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Options {
    first: u64,
    count: u64,
    broker: Broker,
}

fn parse(args: &[String]) -> Result<Options, String> {
    let mut o = Options { first: 1, count: 1, broker: Broker::Testkit };
    let mut it = args.iter();
    let number = |v: Option<&String>, what: &str| -> Result<u64, String> {
        v.and_then(|v| v.parse().ok()).ok_or_else(|| format!("{what} needs a whole number\n\n{USAGE}"))
    };
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seeds" => o.count = number(it.next(), "--seeds")?,
            "--first" => o.first = number(it.next(), "--first")?,
            "--seed" => {
                o.first = number(it.next(), "--seed")?;
                o.count = 1;
            }
            "--broker" => {
                let name = it.next().ok_or_else(|| format!("--broker needs a name\n\n{USAGE}"))?;
                o.broker = Broker::from_name(name).ok_or_else(|| format!("unknown broker {name:?}\n\n{USAGE}"))?;
            }
            "-h" | "--help" => return Err(USAGE.to_owned()),
            other => return Err(format!("unknown argument {other:?}\n\n{USAGE}")),
        }
    }
    Ok(o)
}

fn faults_line(faults: &BTreeMap<&'static str, usize>) -> String {
    let words: Vec<String> =
        FAULT_KINDS.iter().filter_map(|k| faults.get(k).filter(|n| **n > 0).map(|n| format!("{k}×{n}"))).collect();
    if words.is_empty() { "none".to_owned() } else { words.join(" ") }
}

fn print_report(r: &Report) {
    let verdict = if r.violations.is_empty() { "ok" } else { "FAILED" };
    println!(
        "seed {} on {}: {verdict} in {:.1}s; faults {}; {} acknowledged, {} failed, {} handled, {} handled again \
         after {} hard failure(s); {} batch(es) stalled",
        r.plan.seed,
        r.plan.broker.name(),
        r.wall.as_secs_f64(),
        faults_line(&r.faults),
        r.acked,
        r.failed,
        r.handled,
        r.repeats,
        r.hard_failures,
        r.stalls,
    );
    if let Some(f) = &r.first_failure {
        println!("  seed {}: the first record not produced: {f}", r.plan.seed);
    }
    for v in &r.violations {
        println!("  seed {} violates \"{}\": {}", r.plan.seed, v.invariant, v.evidence);
    }
    if !r.violations.is_empty() {
        println!("  replay: {}", r.plan.replay_command());
    }
}

fn main() -> ExitCode {
    let tracing = std::env::var("KLIFE_CHAOS_LOG").ok();
    if let Some(filter) = &tracing {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
            .with_writer(|| Trace)
            .with_ansi(false)
            .init();
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let o = match parse(&args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let started = Instant::now();
    let mut faults: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut failed: Vec<(u64, usize)> = Vec::new();
    let mut violations: BTreeMap<&'static str, usize> = BTreeMap::new();
    let (mut repeats, mut hard, mut stalls, mut slowest) = (0, 0, 0, Duration::ZERO);
    // The most records handled again per hard failure, against the bound of its plan.
    let mut worst: Option<(u64, usize, Option<usize>)> = None;
    let mut walls: Vec<Duration> = Vec::new();
    for seed in o.first..o.first.saturating_add(o.count) {
        let plan = klife_chaos::Plan::new(seed, o.broker);
        print!("{plan}");
        TRACE.lock().unwrap_or_else(PoisonError::into_inner).clear();
        let report = klife_chaos::run_seed(seed, o.broker);
        print_report(&report);
        if tracing.is_some() && !report.violations.is_empty() {
            let path = std::path::PathBuf::from(format!("target/chaos/seed-{seed}-{}.log", o.broker.name()));
            let trace = std::mem::take(&mut *TRACE.lock().unwrap_or_else(PoisonError::into_inner));
            let written =
                path.parent().map_or(Ok(()), std::fs::create_dir_all).and_then(|()| std::fs::write(&path, trace));
            match written {
                Ok(()) => println!("  trace: {}", path.display()),
                Err(e) => println!("  trace not written to {}: {e}", path.display()),
            }
        }
        for (k, n) in &report.faults {
            *faults.entry(k).or_default() += n;
        }
        for v in &report.violations {
            *violations.entry(v.invariant).or_default() += 1;
        }
        if !report.violations.is_empty() {
            failed.push((seed, report.violations.len()));
        }
        repeats += report.repeats;
        hard += report.hard_failures;
        stalls += report.stalls;
        slowest = slowest.max(report.wall);
        walls.push(report.wall);
        let bound = klife_chaos::check::repeat_bound(&report.plan);
        let share = |n: usize, b: Option<usize>| b.map_or(0.0, |b| n as f64 / b.max(1) as f64);
        if report.worst_repeats_per_failure > 0
            && worst.is_none_or(|(_, n, b)| share(report.worst_repeats_per_failure, bound) > share(n, b))
        {
            worst = Some((seed, report.worst_repeats_per_failure, bound));
        }
    }
    println!("\n== chaos summary ({})", o.broker.name());
    println!("seeds run: {} ({}..={})", o.count, o.first, o.first.saturating_add(o.count).saturating_sub(1));
    println!("faults injected: {}", faults_line(&faults));
    println!("records handled again: {repeats}, after {hard} hard failure(s) of a partition's owner");
    if let Some((seed, n, bound)) = worst {
        let bound = bound.map_or("no bound (pipeline)".to_owned(), |b| format!("the bound {b}"));
        println!("most records handled again per hard failure of a partition: {n} (seed {seed}; {bound})");
    }
    println!("batches held past the rebalance timeout: {stalls}");
    if violations.is_empty() {
        println!("violations: none");
    } else {
        let words: Vec<String> = violations.iter().map(|(k, n)| format!("\"{k}\" ×{n}")).collect();
        println!("violations: {}", words.join(", "));
        for (seed, n) in &failed {
            println!(
                "  seed {seed}: {n} violation(s); replay: cargo xtask chaos --seed {seed} --broker {}",
                o.broker.name()
            );
        }
    }
    walls.sort();
    let median = walls.get(walls.len() / 2).copied().unwrap_or_default();
    println!(
        "wall time: {:.1}s (median seed {:.1}s, slowest {:.1}s)",
        started.elapsed().as_secs_f64(),
        median.as_secs_f64(),
        slowest.as_secs_f64()
    );
    if failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
