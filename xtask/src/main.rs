//! klife's development tasks, run as `cargo xtask <task>`:
//!
//! - `codegen [--schemas DIR] [--check]`: generate the protocol messages from Kafka's
//!   schemas (default `../shared/kafka-schemas`), or check the committed ones are current.
//! - `test`: everything CI checks: formatting, clippy, docs, generated code, all tests,
//!   benchmarks built, and a short fuzzing run.
//! - `fuzz [TARGET] [--seconds N]`: run the fuzz targets.
//! - `brokers`: install the brokers the tests run against (Apache Kafka from Maven's
//!   central repository, Tansu, the librdkafka mock cluster program).
//! - `bench produce [...]`: produce throughput of klife, librdkafka and rskafka against
//!   the same broker, in the same run.
//! - `chaos [...]`: seeded chaos runs of producers and consumer groups, with invariants
//!   checked on every run.
//! - `load [...]`: 1,000 partitions, 64 producers and 10 consumer groups at once on
//!   klife-testkit or Apache Kafka, checked for deadlock, starvation and bounded memory.

// A binary: `pub` marks what modules share, nothing is exported.
#![allow(clippy::print_stdout, unreachable_pub)]

mod bench;
mod bench_group;
mod brokers;
mod chaos;
mod codegen;
mod fuzz;
mod kafka;
mod load;
mod test;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

const USAGE: &str = "usage: cargo xtask <task>

tasks:
  codegen [--schemas DIR] [--check]   generate crates/klife-protocol/src/messages from Kafka's
                                      JSON schemas (default DIR: ../shared/kafka-schemas);
                                      --check fails and names the files that are stale
  test                                fmt, clippy, docs, codegen --check, all tests, benches
                                      built, fuzz smoke run (what CI runs)
  fuzz [TARGET] [--seconds N]         run one fuzz target (or all) for N seconds each
  brokers                             install the brokers the tests use: Apache Kafka (pinned,
                                      from Maven central; needs Java 17+ and Maven), Tansu
                                      (pinned, checksum-verified) and the librdkafka mock
                                      cluster program
  brokers --serve                     start them all as `cargo xtask test` does, print the
                                      variables the suites read, and run until Ctrl-C or
                                      until standard input closes
  bench produce [--records N] [--value-size S] [--partitions P] [--rounds R]
                                      produce throughput, CPU and memory of klife, librdkafka
                                      and rskafka on one Tansu broker (see docs/benchmarks.md)
  chaos [--seeds N] [--first S] [--seed S] [--broker testkit|kafka]
                                      seeded chaos runs of producers and consumer groups (killed
                                      members, brokers down, moved leaders and coordinators,
                                      injected errors), invariants checked on every run; a
                                      failing seed prints its replay command (see docs/chaos.md)
  load [--broker testkit|kafka] [--partitions P] [--producers N] [--groups G] [--records R]
                                      many partitions, producers and groups at once: every record
                                      handled, no partition starved, lags 0, peak RSS within the
                                      configured bound (see docs/load.md)
";

/// The workspace root (the parent of `xtask/`).
pub fn workspace_root() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    dir.parent().map(Path::to_path_buf).unwrap_or(dir)
}

/// The default schema directory: `../shared/kafka-schemas` beside the repository.
pub fn default_schemas_dir(root: &Path) -> PathBuf {
    root.join("../shared/kafka-schemas")
}

fn run(args: &[String]) -> Result<(), String> {
    let root = workspace_root();
    let Some((task, rest)) = args.split_first() else { return Err(USAGE.to_owned()) };
    match task.as_str() {
        "codegen" => {
            let mut schemas = default_schemas_dir(&root);
            let mut check = false;
            let mut it = rest.iter();
            while let Some(a) = it.next() {
                match a.as_str() {
                    "--check" => check = true,
                    "--schemas" => schemas = PathBuf::from(it.next().ok_or("--schemas needs a directory")?),
                    other => return Err(format!("codegen: unknown argument {other:?}\n\n{USAGE}")),
                }
            }
            codegen::run(&root, &schemas, check)
        }
        "test" => {
            if let Some(a) = rest.first() {
                return Err(format!("test: unknown argument {a:?}\n\n{USAGE}"));
            }
            test::run(&root)
        }
        "fuzz" => fuzz::run_cli(&root, rest),
        "brokers" => match rest.first().map(String::as_str) {
            None => brokers::install(&root),
            Some("--serve") => brokers::serve(&root),
            Some(other) => Err(format!("brokers: unknown argument {other:?}\n\n{USAGE}")),
        },
        "bench" => bench::run_cli(&root, rest),
        "chaos" => chaos::run(&root, rest),
        "load" => load::run(&root, rest),
        "help" | "--help" | "-h" => {
            print!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown task {other:?}\n\n{USAGE}")),
    }
}

fn main() -> ExitCode {
    brokers::stop_on_interrupt();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e}");
            ExitCode::FAILURE
        }
    }
}
