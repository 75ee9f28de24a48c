//! `klife-bench`: benchmark tooling, never shipped. Each produce subcommand sends records
//! of incompressible bytes to a real broker and prints one JSON line with its throughput,
//! CPU time and peak memory, in the format of `klife-rdkafka-mock bench-produce`, so that
//! `cargo xtask bench produce` can put klife, librdkafka and rskafka side by side.
//!
//! - `create-topic`: creates a topic through klife's admin API.
//! - `klife-produce`: klife's ordinary per-record API (`Producer::produce_async`).
//! - `rskafka-produce`: rskafka's leanest API (`PartitionClient::produce` with
//!   application-built batches, several requests in flight per partition).
//! - `klife-consume`: klife's standalone `Consumer`, every partition from offset 0;
//!   `--live true` reads as an application does (facade defaults, partitions kept).
//! - `klife-group-consume`: `--members` members of a new consumer group counting and
//!   committing until `--count` records were handled; `klife-group-join`: the time to a
//!   complete assignment for one member, then for a second one joining (see
//!   `klife_group.rs`).
//! - `rskafka-consume`: a `PartitionClient::fetch_records` loop per partition.
//! - `fetch-sessions`: full Fetch requests against KIP-227 incremental fetch sessions,
//!   raw, on one Kafka node (see `sessions.rs`).
//!
//! See `README.md` beside this crate.

mod klife_consume;
mod klife_group;
mod klife_produce;
mod opts;
mod report;
mod rskafka_consume;
mod rskafka_produce;
mod sessions;
mod stats;

use std::io::Write;
use std::process::ExitCode;

use opts::Opts;

const USAGE: &str = "\
usage:
  klife-bench create-topic --bootstrap HOST:PORT --topic T --partitions P
  klife-bench klife-produce --bootstrap HOST:PORT --topic T --count N --value-size S
        [--linger-ms 5] [--acks all|leader|none] [--idempotence true|false] [--batch-size BYTES] [--buffer-mib M] [--batchers N]
        [--max-in-flight N (requests per batcher)] [--connection-in-flight N]
        [--workers W] [--stats true (klife's metrics to stderr at the end)]
  klife-bench rskafka-produce --bootstrap HOST:PORT --topic T --partitions P --count N --value-size S
        [--batch RECORDS] [--in-flight K] [--workers W]
  klife-bench klife-consume --bootstrap HOST:PORT --topic T --count N
        [--partition-max-kib K] [--request-max-kib K] [--max-in-flight N] [--max-wait-ms MS] [--isolation read_committed|read_uncommitted]
        [--live true (the facade's consumer at its defaults, partitions kept to the end)] [--gap-log true]
        [--workers W] [--stats true]
  klife-bench klife-group-consume --bootstrap HOST:PORT --topic T --group G --count N [--members 1]
        [--protocol consumer|classic|auto] [--max-unacked N] [--fetch-max-kib K] [--linger-us U]
        [--commits-in-flight N] [--handler-us U (each batch's handler sleeps U µs)] [--workers W] [--stats true]
  klife-bench klife-group-join --bootstrap HOST:PORT --topic T --group G [--protocol consumer|classic|auto]
        [--settle-ms 300] [--workers W]
  klife-bench rskafka-consume --bootstrap HOST:PORT --topic T --partitions P --count N [--partition-max-kib K]
        [--workers W]
  klife-bench fetch-sessions --bootstrap HOST:PORT (--control HOST:PORT | --broker-pid PID) [--node 1]
        [--partitions 10,100,1000,4000] [--busy 4] [--variants busy,idle] [--repeats 5] [--block-ms 1500]
        [--min-rounds 50] [--batches 64] [--value-size 100] [--fetch-version 17]
";

fn runtime(workers: usize) -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the tokio runtime: {e}"))
}

/// Worker threads of the runtime: `--workers`, else one per CPU.
fn workers(opts: &mut Opts) -> Result<usize, String> {
    let default = std::thread::available_parallelism().map_or(2, usize::from);
    let n = opts.opt_parse("workers")?.unwrap_or(default);
    if n == 0 { Err("--workers must be at least 1".into()) } else { Ok(n) }
}

fn create_topic(mut opts: Opts) -> Result<(), String> {
    let bootstrap = opts.req("bootstrap")?;
    let topic = opts.req("topic")?;
    let partitions: i32 = opts.req_parse("partitions")?;
    opts.finish()?;
    runtime(1)?.block_on(async {
        let client = klife::Client::builder()
            .bootstrap_servers([bootstrap])
            .build()
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        client.create_topic(&topic, partitions).await.map_err(|e| format!("cannot create topic {topic}: {e}"))?;
        // The controller answers before every broker's metadata has the topic: wait
        // until the one we reach lists all its partitions, so producing starts at once.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            match client.partitions(&topic).await {
                Ok(found) if found.len() == partitions as usize => return Ok(()),
                Ok(_) | Err(_) if std::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                }
                Ok(found) => {
                    return Err(format!("topic {topic}: {} of {partitions} partitions after 60 s", found.len()));
                }
                Err(e) => return Err(format!("topic {topic} not in the metadata after 60 s: {e}")),
            }
        }
    })
}

fn run(args: &[String]) -> Result<(), String> {
    let Some((command, rest)) = args.split_first() else { return Err(USAGE.to_owned()) };
    let mut opts = Opts::parse(rest)?;
    match command.as_str() {
        "create-topic" => create_topic(opts),
        "klife-produce" => {
            let workers = workers(&mut opts)?;
            let stats = if opts.opt_parse("stats")?.unwrap_or(false) { Some(stats::install()?) } else { None };
            let settings = klife_produce::Settings::from_opts(opts)?;
            let report = runtime(workers)?.block_on(klife_produce::run(settings))?;
            if let Some(captured) = &stats {
                stats::print(captured);
            }
            report.print()
        }
        "rskafka-produce" => {
            let workers = workers(&mut opts)?;
            let settings = rskafka_produce::Settings::from_opts(opts)?;
            let report = runtime(workers)?.block_on(rskafka_produce::run(settings))?;
            report.print()
        }
        "klife-consume" => {
            let workers = workers(&mut opts)?;
            let stats = if opts.opt_parse("stats")?.unwrap_or(false) { Some(stats::install()?) } else { None };
            let settings = klife_consume::Settings::from_opts(opts)?;
            let report = runtime(workers)?.block_on(klife_consume::run(settings))?;
            if let Some(captured) = &stats {
                stats::print(captured);
            }
            report.print()
        }
        "klife-group-consume" => {
            let workers = workers(&mut opts)?;
            let stats = if opts.opt_parse("stats")?.unwrap_or(false) { Some(stats::install()?) } else { None };
            let settings = klife_group::ConsumeSettings::from_opts(opts)?;
            runtime(workers)?.block_on(async {
                let (report, members) = klife_group::consume(settings).await?;
                if let Some(captured) = &stats {
                    stats::print(captured);
                }
                report.print()?;
                klife_group::leave(members).await
            })
        }
        "klife-group-join" => {
            let workers = workers(&mut opts)?;
            let settings = klife_group::JoinSettings::from_opts(opts)?;
            let line = runtime(workers)?.block_on(klife_group::join(settings))?;
            let mut out = std::io::stdout().lock();
            writeln!(out, "{line}").and_then(|()| out.flush()).map_err(|e| format!("stdout: {e}"))
        }
        "rskafka-consume" => {
            let workers = workers(&mut opts)?;
            let settings = rskafka_consume::Settings::from_opts(opts)?;
            let report = runtime(workers)?.block_on(rskafka_consume::run(settings))?;
            report.print()
        }
        "fetch-sessions" => {
            let settings = sessions::Settings::from_opts(opts)?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| format!("cannot start the tokio runtime: {e}"))?;
            rt.block_on(sessions::run(settings))
        }
        "help" | "--help" | "-h" => {
            eprint!("{USAGE}");
            Ok(())
        }
        other => Err(format!("unknown command {other:?}\n{USAGE}")),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("klife-bench: {e}");
            ExitCode::FAILURE
        }
    }
}
