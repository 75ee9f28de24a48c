//! `klife`: the command-line face of klife.
//!
//! - `klife demo` starts an embedded fake cluster (or uses `--bootstrap`), produces a
//!   million records with the real producer, reads them back with the real fetcher,
//!   checks that nothing was lost, repeated or reordered, and reports the rates.
//! - `klife serve` runs a fake cluster until Ctrl-C; `klife produce`, `klife consume`
//!   and `klife topics` work against any cluster; `klife consume --group` joins a
//!   consumer group; `klife groups` lists, describes, shows the lag of, resets and
//!   deletes groups; `klife bench` measures produce and consume throughput.
//!
//! Exit codes: 0 success, 1 an error (printed on stderr), 2 invalid arguments, 3 the
//! demo found records lost, repeated or out of order.

// A command-line tool prints its results.
#![allow(clippy::print_stdout)]

/// `println!` for results: a reader that went away (`klife consume | head`) ends the
/// program quietly instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let mut stdout = std::io::stdout().lock();
        if writeln!(stdout, $($arg)*).is_err() {
            std::process::exit(0);
        }
    }};
}

mod commands;
mod demo;
mod demo_group;
mod groups;
mod stats;

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

/// A Kafka client: demo, produce, consume, topics, bench, and a fake cluster to run
/// them against.
#[derive(Debug, Parser)]
#[command(name = "klife", version, about, propagate_version = true)]
struct Cli {
    /// Print every metric klife recorded (requests, bytes, batches, group commits, ...)
    /// on standard error when the command ends.
    #[arg(long, global = true)]
    stats: bool,
    /// Read the connection (bootstrap, TLS, SASL with secrets from environment
    /// variables, timeouts), producers and fetchers from this TOML file (see
    /// docs/configuration.md); `--bootstrap` still overrides its bootstrap list.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Produce records and read them all back, verified, on an embedded fake cluster
    /// (or on `--bootstrap`).
    Demo(demo::DemoArgs),
    /// Measure produce and consume throughput with klife's client.
    Bench(demo::BenchArgs),
    /// Start a fake cluster on loopback, print its bootstrap list, run until Ctrl-C.
    Serve(commands::ServeArgs),
    /// Produce records: the values given, or one per line of standard input.
    Produce(commands::ProduceArgs),
    /// Print the records of a topic.
    Consume(commands::ConsumeArgs),
    /// List, create or delete topics.
    Topics(commands::TopicsArgs),
    /// Consumer groups: list, describe, lag, reset-offsets, delete, delete-offsets.
    Groups(groups::GroupsArgs),
}

/// Connection options shared by the commands that talk to a cluster.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ConnectArgs {
    /// Brokers to bootstrap from, `host:port[,host:port...]` (default: the `--config`
    /// file's, else 127.0.0.1:9092).
    #[arg(long, short = 'b', value_name = "HOST:PORT")]
    bootstrap: Option<String>,
    /// Seconds a request may take.
    #[arg(long, value_name = "SECONDS", default_value_t = 30)]
    request_timeout: u64,
}

impl ConnectArgs {
    pub(crate) async fn client(&self) -> Result<klife::Client, CliError> {
        let timeout = Duration::from_secs(self.request_timeout);
        match CONFIG_FILE.get().and_then(Option::as_ref) {
            None => connect(self.bootstrap.as_deref().unwrap_or(DEFAULT_BOOTSTRAP), timeout).await,
            Some(path) => {
                let config = klife::config::ClientConfig::from_file(path)?;
                let mut builder = config.client_builder()?;
                let shown = match &self.bootstrap {
                    Some(b) => {
                        builder = builder.bootstrap_servers(servers(b));
                        b.clone()
                    }
                    None => config.connection.bootstrap.join(","),
                };
                finish(builder, &shown).await
            }
        }
    }
}

/// Where the commands connect without `--bootstrap` nor `--config`.
const DEFAULT_BOOTSTRAP: &str = "127.0.0.1:9092";

/// The `--config` file, set once at start.
static CONFIG_FILE: std::sync::OnceLock<Option<std::path::PathBuf>> = std::sync::OnceLock::new();

fn servers(bootstrap: &str) -> Vec<String> {
    bootstrap.split(',').map(|s| s.trim().to_owned()).filter(|s| !s.is_empty()).collect()
}

pub(crate) async fn connect(bootstrap: &str, request_timeout: Duration) -> Result<klife::Client, CliError> {
    let builder = klife::Client::builder()
        .bootstrap_servers(servers(bootstrap))
        .client_id("klife-cli")
        .request_timeout(request_timeout)
        .connect_timeout(Duration::from_secs(10));
    finish(builder, bootstrap).await
}

async fn finish(builder: klife::ClientBuilder, bootstrap: &str) -> Result<klife::Client, CliError> {
    builder.build().await.map_err(|e| {
        let hint = if e.is_connection() || e.is_timeout() {
            format!(" (is a Kafka broker listening at {bootstrap}? `klife serve` starts a fake one)")
        } else {
            String::new()
        };
        CliError::Failed(format!("cannot connect to {bootstrap}: {e}{hint}"))
    })
}

/// Why a command failed.
#[derive(Debug)]
pub(crate) enum CliError {
    /// An error, with the message to print.
    Failed(String),
    /// The demo's check failed.
    Verification(String),
}

impl From<klife::Error> for CliError {
    fn from(e: klife::Error) -> Self {
        CliError::Failed(e.to_string())
    }
}

impl From<klife::FetchError> for CliError {
    fn from(e: klife::FetchError) -> Self {
        CliError::from(klife::Error::from(e))
    }
}

impl From<klife_testkit::Error> for CliError {
    fn from(e: klife_testkit::Error) -> Self {
        CliError::Failed(format!("fake cluster: {e}"))
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let _ = CONFIG_FILE.set(cli.config.clone());
    let stats = if cli.stats { stats::Stats::install() } else { None };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("klife: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Demo(a) => demo::demo(a).await,
            Command::Bench(a) => demo::bench(a).await,
            Command::Serve(a) => commands::serve(a).await,
            Command::Produce(a) => commands::produce(a).await,
            Command::Consume(a) => commands::consume(a).await,
            Command::Topics(a) => commands::topics(a).await,
            Command::Groups(a) => groups::groups(a).await,
        }
    });
    // Tasks still running (connections, fake brokers) end with the runtime.
    runtime.shutdown_timeout(Duration::from_secs(1));
    if let Some(stats) = stats {
        stats.print();
    }
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(CliError::Failed(m)) => {
            eprintln!("klife: error: {m}");
            ExitCode::from(1)
        }
        Err(CliError::Verification(m)) => {
            eprintln!("klife: verification failed: {m}");
            ExitCode::from(3)
        }
    }
}
