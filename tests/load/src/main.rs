//! `klife-load`: many partitions, producers and consumer groups at once, on
//! klife-testkit or Apache Kafka, checked for deadlock, starvation and bounded memory.
//! Usually run as `cargo xtask load`; see docs/load.md.

#![allow(clippy::print_stdout)]

mod check;
mod memory;
mod produce;
mod run;
mod settings;
mod track;

use std::process::ExitCode;

use klife::group::GroupProtocol;

use crate::run::Outcome;
use crate::settings::{MIB, Settings};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let settings = match Settings::parse(&args, std::env::var("KLIFE_TEST_KAFKA").ok().filter(|v| !v.is_empty())) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run::run(&settings)) {
        Ok(outcome) => {
            let ok = print_summary(&settings, &outcome);
            if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        Err(e) => {
            eprintln!("klife-load: {e}");
            ExitCode::FAILURE
        }
    }
}

fn mib(bytes: usize) -> String {
    format!("{:.0} MiB", bytes as f64 / MIB as f64)
}

fn spread(s: Option<check::Spread>) -> String {
    s.map_or("-".to_owned(), |x| x.to_string())
}

fn secs(d: Option<std::time::Duration>) -> String {
    d.map_or("-".to_owned(), |d| format!("{:.1}", d.as_secs_f64()))
}

/// Prints the summary table and the verdict; true when the run passed.
fn print_summary(s: &Settings, o: &Outcome) -> bool {
    println!(
        "\nklife load run on {}: {} brokers, {} partitions in {} topics, {} producers, {} groups x {} members, \
         {} records of {} B",
        s.broker.name(),
        o.brokers,
        s.partitions,
        s.topics,
        s.producers,
        s.groups,
        s.members,
        s.records,
        s.value_size
    );
    println!("topics created and led in {:.1}s\n", o.setup.as_secs_f64());
    println!(
        "| group | topics | partitions | handled | handled/s | first record s (min / median / max) | last record s (min / median / max) |"
    );
    println!("|---|---|---|---|---|---|---|");
    for g in &o.groups {
        let rate =
            g.lasts.filter(|l| l.max > 0.0).map_or("-".to_owned(), |l| format!("{:.0}", g.handled as f64 / l.max));
        println!(
            "| {} | {:?} | {} | {} | {rate} | {} | {} |",
            g.name,
            g.topics,
            g.partitions,
            g.handled,
            spread(g.firsts),
            spread(g.lasts),
        );
    }
    println!(
        "\n| group | protocol | join s | consumer starts | revoked | epochs after join | lost or failed | last consumer start s (min / median / max) |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    for g in &o.groups {
        let protocol = match g.protocol {
            Some(GroupProtocol::Consumer) => "consumer",
            Some(GroupProtocol::Classic) => "classic",
            _ => "-",
        };
        println!(
            "| {} | {protocol} | {} | {} | {} | {} | {} | {} |",
            g.name,
            secs(g.join),
            g.starts,
            g.revoked,
            g.epochs_after_join,
            g.bad_stops,
            spread(g.last_starts),
        );
    }
    let produce_rate = o
        .produce_time
        .filter(|t| !t.is_zero())
        .map_or("-".to_owned(), |t| format!("{:.0}", o.acked as f64 / t.as_secs_f64()));
    println!(
        "\nproduced: {} acknowledged ({} failed) in {}s: {produce_rate} records/s",
        o.acked,
        o.failed,
        secs(o.produce_time)
    );
    let handled: u64 = o.groups.iter().map(|g| g.handled).sum();
    let handled_rate = o
        .handled_time
        .filter(|t| !t.is_zero())
        .map_or("-".to_owned(), |t| format!("{:.0}", handled as f64 / t.as_secs_f64()));
    println!(
        "handled: {handled} by all groups, every record of every group's topics {}s after producing started: \
         {handled_rate} records/s in all",
        secs(o.handled_time)
    );
    println!("shutdown of every member: {:.1}s", o.shutdown.as_secs_f64());
    let b = &o.bound;
    let limit = b.total() + s.overhead;
    println!(
        "\nmemory bound {}: producers {} x buffer_memory {} KiB = {}; groups {} partition consumers x \
         (max_queue_size {} + 2) x fetch_max_bytes {} KiB = {}; fetcher {} brokers x (max_in_flight {} + 1) x \
         max_bytes_per_request {} KiB = {}{}; the load program's delivery windows {} x {} futures = {}",
        mib(b.total()),
        s.producers,
        s.buffer_memory / 1024,
        mib(b.producers),
        b.consumers,
        s.max_queue_size,
        s.fetch_max_bytes / 1024,
        mib(b.groups),
        o.brokers,
        s.fetch_in_flight,
        s.max_bytes_per_request / 1024,
        mib(b.fetcher),
        if b.testkit > 0 {
            format!("; klife-testkit's log, every record in a batch of its own, with its entry = {}", mib(b.testkit))
        } else {
            String::new()
        },
        s.producers,
        settings::WINDOW,
        mib(b.windows),
    );
    let memory_ok = o.peak_rss <= limit;
    println!(
        "peak RSS (VmHWM) {}; limit = bound + fixed overhead {} = {}: {}",
        mib(o.peak_rss),
        mib(s.overhead),
        mib(limit),
        if memory_ok { "within" } else { "EXCEEDED" }
    );
    let ok = memory_ok && o.problems.is_empty();
    if ok {
        println!("\nok");
    } else {
        println!("\nFAILED");
        for p in &o.problems {
            println!("  {p}");
        }
    }
    ok
}
