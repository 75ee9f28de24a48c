//! `cargo xtask chaos`: seeded chaos runs of klife's producers and consumer groups
//! (`tests/chaos`, the `klife-chaos` program), on klife-testkit or Apache Kafka. Each
//! seed's plan is printed; a failing seed prints the command that replays it; the
//! summary gives seeds run, faults injected by kind, violations and wall time. The
//! task fails if any seed failed.
//!
//! On Kafka the runs need the cluster `cargo xtask brokers --serve` starts
//! (`KLIFE_TEST_KAFKA` and its control port `KLIFE_TEST_KAFKA_CONTROL`, whose nodes the
//! runs stop and start); without those variables this task starts its own 3-node
//! cluster for the run, as `cargo xtask test` does, and stops it afterwards.

use std::path::Path;
use std::process::Command;

use crate::test::run_step;

pub const USAGE: &str = "usage: cargo xtask chaos [--seeds N] [--first S] [--seed S] [--broker testkit|kafka]

  --seeds N    run N seeds (default 1) from --first (default 1)
  --seed S     run seed S alone (what a failing seed prints to replay it)
  --broker B   testkit (default: a fresh in-process cluster per seed) or kafka (the
               cluster of KLIFE_TEST_KAFKA / KLIFE_TEST_KAFKA_CONTROL, or one started
               for the run when they are not set)

  KLIFE_CHAOS_LOG=FILTER keeps klife's tracing events of each seed (e.g. klife_group=debug)
  and writes those of a failing seed to target/chaos/seed-S-BROKER.log.
  See docs/chaos.md.";

/// `cargo xtask chaos [...]`.
pub fn run(root: &Path, args: &[String]) -> Result<(), String> {
    let mut kafka = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seeds" | "--first" | "--seed" => {
                let n = it.next().ok_or_else(|| format!("{a} needs a whole number\n\n{USAGE}"))?;
                n.parse::<u64>().map_err(|_| format!("{a} needs a whole number, not {n:?}\n\n{USAGE}"))?;
            }
            "--broker" => match it.next().map(String::as_str) {
                Some("testkit") => kafka = false,
                Some("kafka") => kafka = true,
                Some(other) => return Err(format!("--broker takes testkit or kafka, not {other:?}\n\n{USAGE}")),
                None => return Err(format!("--broker takes testkit or kafka\n\n{USAGE}")),
            },
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => return Err(format!("chaos: unknown argument {other:?}\n\n{USAGE}")),
        }
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["run", "--quiet", "-p", "klife-chaos", "--bin", "klife-chaos", "--"]).args(args);
    // Kept alive (and stopped when dropped) for the whole run when started here.
    let mut _started = None;
    if kafka {
        let given = ["KLIFE_TEST_KAFKA", "KLIFE_TEST_KAFKA_CONTROL"]
            .iter()
            .all(|v| std::env::var(v).is_ok_and(|s| !s.is_empty()));
        if !given {
            eprintln!(
                "\n==> KLIFE_TEST_KAFKA and KLIFE_TEST_KAFKA_CONTROL are not set: starting a 3-node Apache Kafka \
                 cluster for this run (`cargo xtask brokers --serve` keeps one running between runs)"
            );
            let cluster = crate::kafka::start(root)?;
            for (k, v) in &cluster.env {
                cmd.env(k, v);
            }
            _started = Some(cluster);
        }
    }
    run_step(root, "chaos runs", &mut cmd)
}
