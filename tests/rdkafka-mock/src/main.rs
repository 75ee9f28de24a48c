//! `klife-rdkafka-mock`: test tooling around librdkafka (built from source by the `rdkafka`
//! crate).
//!
//! - `cluster` runs librdkafka's mock Kafka cluster on loopback, prints its bootstrap list and
//!   takes fault-injection commands on stdin until stdin closes.
//! - `produce` / `consume` make librdkafka the peer of a client or broker under test, with
//!   deterministic records printed as JSON lines.
//! - `group-consume` makes librdkafka a member of a consumer group beside the client under
//!   test, printing its assignments, revocations and records as JSON lines until stdin closes.
//! - `bench-produce` / `bench-consume` measure librdkafka's throughput, CPU time and peak RSS;
//!   `bench-group-consume` / `bench-group-join` the same for consumers in a group, and the
//!   time to a complete assignment.
//!
//! See `README.md` beside this crate for the stdin protocol and the mock's gaps.

mod args;
mod bench;
mod bench_group;
mod cluster;
mod ffi;
mod group;
mod peer;

use std::process::ExitCode;

use args::{Fail, Opts};

const USAGE: &str = "\
usage:
  klife-rdkafka-mock cluster --brokers N [--topic NAME:PARTITIONS[:RF]]... [--set KEY=VALUE]... [--log]
  klife-rdkafka-mock produce --bootstrap LIST --topic T --count N [--codec none|gzip|snappy|lz4|zstd]
        [--partition P] [--value-size S] [--keys] [--headers] [--linger-ms MS] [--batch-size B]
        [--acks A] [--timestamp-base MS] [--timeout-ms MS] [--set KEY=VALUE]... [--log]
  klife-rdkafka-mock consume --bootstrap LIST --topic T --count N [--partition P]... [--timeout-ms MS]
        [--set KEY=VALUE]... [--log]
  klife-rdkafka-mock group-consume --bootstrap LIST --topic T --group G [--protocol consumer|classic]
        [--set KEY=VALUE]... [--log]
  klife-rdkafka-mock bench-produce --bootstrap LIST --topic T --count N --value-size S [--codec C]
        [--partition P] [--linger-ms 5] [--acks all] [--batch-size B] [--timeout-ms MS] [--set KEY=VALUE]... [--log]
  klife-rdkafka-mock bench-consume --bootstrap LIST --topic T --count N [--partition P]... [--timeout-ms MS]
        [--set KEY=VALUE]... [--log]
  klife-rdkafka-mock bench-group-consume --bootstrap LIST --topic T --group G --partitions P --count N [--members 1]
        [--protocol consumer|classic] [--set KEY=VALUE]... [--log]
  klife-rdkafka-mock bench-group-join --bootstrap LIST --topic T --group G --partitions P
        [--protocol consumer|classic] [--settle-ms 300] [--set KEY=VALUE]... [--log]
";

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Some((command, rest)) = argv.split_first() else {
        eprint!("{USAGE}");
        return ExitCode::from(2);
    };
    let run: fn(Opts) -> Result<(), Fail> = match command.as_str() {
        "cluster" => cluster::run,
        "produce" => peer::produce,
        "consume" => peer::consume,
        "group-consume" => group::consume,
        "bench-produce" => bench::produce,
        "bench-consume" => bench::consume,
        "bench-group-consume" => bench_group::consume,
        "bench-group-join" => bench_group::join,
        "-h" | "--help" | "help" => {
            eprint!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        other => {
            eprint!("unknown command '{other}'\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let opts = match Opts::parse(rest, &["keys", "headers", "log"]) {
        Ok(opts) => opts,
        Err(e) => {
            eprint!("{command}: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Fail::Usage(e)) => {
            eprint!("{command}: {e}\n{USAGE}");
            ExitCode::from(2)
        }
        Err(Fail::Run(e)) => {
            eprintln!("klife-rdkafka-mock {command}: {e}");
            ExitCode::FAILURE
        }
    }
}
