//! `cargo xtask load`: builds `klife-load` (release) and runs it with the arguments
//! given: 1,000 partitions, 64 producers and 10 consumer groups of 3 members at once,
//! on klife-testkit (in the process) or on Apache Kafka (`--broker kafka`: the cluster
//! named by `--bootstrap` or `KLIFE_TEST_KAFKA`, as `cargo xtask brokers --serve`
//! prints it). It fails when a group misses a record, a partition never progresses,
//! a lag is left, a partition is owned twice, or the peak RSS exceeds the bound the
//! settings imply plus a stated overhead. See docs/load.md.

use std::path::Path;
use std::process::Command;

use crate::brokers;
use crate::test::run_step;

pub const USAGE: &str = "usage: cargo xtask load [--broker testkit|kafka] [--bootstrap HOST:PORT,...] [--partitions P]
                        [--topics T] [--producers N] [--groups G] [--members M] [--records R]
                        [--value-size B] [--hang-guard-s S] [--overhead-mib O] [...]

  defaults: klife-testkit (3 brokers in the process), 1000 partitions in 10 topics,
  64 producers, 10 groups of 3 members, 1000000 records of 100 B; `klife-load --help`
  (target/release/klife-load) lists the memory settings";

/// Builds and runs the load test, passing `args` on.
pub fn run(root: &Path, args: &[String]) -> Result<(), String> {
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return Ok(());
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(&cargo);
    build.args(["build", "--release", "--locked", "-p", "klife-load"]);
    run_step(root, "build klife-load (release)", &mut build)?;
    let mut load = Command::new(brokers::target_dir(root).join("release/klife-load"));
    load.args(args);
    run_step(root, "load", &mut load)
}
