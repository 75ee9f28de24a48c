//! `cargo xtask bench produce` and `cargo xtask bench consume`: klife, librdkafka and
//! rskafka producing to (or reading from) the same broker in the same run, each as its
//! own process, and a table of the medians over the rounds. The broker is Apache Kafka
//! (one node, started once for the whole run) unless `--broker tansu` asks for Tansu
//! (in-memory storage, started afresh for every run since its memory never shrinks).
//!
//! For `consume`, each round fills one topic with klife's producer (untimed), and every
//! client reads all of it, in rotating order; the broker's CPU is measured over each
//! client's run.
//!
//! Every run gets a new topic; the clients' order rotates from round to round, after one
//! uncounted warm-up run of the first client (logged with round number `rounds`). The client processes print one
//! JSON line each (records, bytes, elapsed_s, cpu_user_s, cpu_sys_s, max_rss_kb); the
//! broker's CPU time is read from `/proc` before it is stopped. Every run's line is also
//! appended to `target/bench/produce.jsonl`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::brokers;
use crate::test::run_step;

pub const USAGE: &str =
    "usage: cargo xtask bench group [--records N] [--value-size S] [--partitions P] [--rounds R] [--klife-workers W]
                                [--klife-max-unacked N] [--klife-fetch-max-kib K] [--klife-linger-us U]
                                [--klife-commits-in-flight N]
                                [--cases standalone,klife-1,klife-3,librdkafka-1,librdkafka-3,pipeline,join]
       cargo xtask bench produce|consume [--records N] [--value-size S] [--partitions P] [--rounds R]
                                  [--broker kafka|tansu] [--clients klife,librdkafka,rskafka]
                                  [--rskafka-batch B] [--rskafka-in-flight K] [--klife-workers W]
                                  [--klife-batchers N]

  defaults: Apache Kafka (one node, on this machine), 2000000 records of 100 bytes,
  6 partitions, 3 rounds, every client, rskafka batches of about 500 KB of values on
  Kafka (1 MB on Tansu) with 4 produce calls in flight per partition; klife on a tokio runtime with one worker thread
  per CPU (--klife-workers to change it) and its default producer settings
  (--klife-batchers sets batchers_per_broker);
  for 1 KB records: --value-size 1024 --records 1000000;
  consume: klife's standalone Consumer at its defaults (read_committed, partitions kept
  assigned), librdkafka's BaseConsumer (assign + poll) and an rskafka fetch loop per
  partition, all from offset 0;
  group: klife's standalone consumer, klife's and librdkafka's groups of 1 and 3 members (KIP-848)
  reading one filled topic, then the time to a complete assignment when a second member
  joins, KIP-848 and classic (see xtask/src/bench_group.rs)
";

/// The broker the clients run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BrokerKind {
    /// Apache Kafka, one node.
    Kafka,
    /// Tansu, memory storage.
    Tansu,
}

/// Which side is measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Produce,
    Consume,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Produce => "produce",
            Mode::Consume => "consume",
        }
    }
}

/// The clients compared.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Client {
    Klife,
    Librdkafka,
    Rskafka,
}

const CLIENTS: [Client; 3] = [Client::Klife, Client::Librdkafka, Client::Rskafka];

impl Client {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Client::Klife => "klife",
            Client::Librdkafka => "librdkafka",
            Client::Rskafka => "rskafka",
        }
    }

    fn parse(s: &str) -> Result<Client, String> {
        CLIENTS.into_iter().find(|c| c.name() == s).ok_or_else(|| format!("unknown client {s:?}"))
    }
}

struct Options {
    mode: Mode,
    records: u64,
    value_size: usize,
    partitions: i32,
    rounds: usize,
    clients: Vec<Client>,
    /// Records per rskafka produce call; `None`: about 1 MB of values.
    rskafka_batch: Option<u64>,
    rskafka_in_flight: usize,
    /// Worker threads of klife's tokio runtime; `None`: one per CPU (tokio's default).
    klife_workers: Option<usize>,
    /// klife's `batchers_per_broker`; `None`: the producer's default.
    klife_batchers: Option<usize>,
    broker: BrokerKind,
}

impl Options {
    fn parse(mode: Mode, args: &[String]) -> Result<Options, String> {
        let mut o = Options {
            mode,
            records: 2_000_000,
            value_size: 100,
            partitions: 6,
            rounds: 3,
            clients: CLIENTS.to_vec(),
            rskafka_batch: None,
            rskafka_in_flight: 4,
            klife_workers: None,
            klife_batchers: None,
            broker: BrokerKind::Kafka,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let mut value = || it.next().ok_or_else(|| format!("{a} needs a value\n\n{USAGE}"));
            fn num<T: std::str::FromStr>(flag: &str, v: &str) -> Result<T, String> {
                v.parse().map_err(|_| format!("{flag} {v:?}: not a number"))
            }
            match a.as_str() {
                "--records" => o.records = num(a, value()?)?,
                "--value-size" => o.value_size = num(a, value()?)?,
                "--partitions" => o.partitions = num(a, value()?)?,
                "--rounds" => o.rounds = num(a, value()?)?,
                "--rskafka-batch" => o.rskafka_batch = Some(num(a, value()?)?),
                "--rskafka-in-flight" => o.rskafka_in_flight = num(a, value()?)?,
                "--klife-workers" => o.klife_workers = Some(num(a, value()?)?),
                "--klife-batchers" => o.klife_batchers = Some(num(a, value()?)?),
                "--broker" => {
                    o.broker = match value()?.as_str() {
                        "kafka" => BrokerKind::Kafka,
                        "tansu" => BrokerKind::Tansu,
                        other => return Err(format!("--broker {other:?}: kafka or tansu")),
                    }
                }
                "--clients" => o.clients = value()?.split(',').map(Client::parse).collect::<Result<_, _>>()?,
                other => return Err(format!("bench {}: unknown argument {other:?}\n\n{USAGE}", mode.name())),
            }
        }
        if o.records == 0
            || o.value_size == 0
            || o.partitions < 1
            || o.rounds == 0
            || o.clients.is_empty()
            || o.klife_batchers == Some(0)
        {
            return Err(format!(
                "records, value size, partitions, rounds, clients and klife batchers must not be zero\n\n{USAGE}"
            ));
        }
        Ok(o)
    }

    /// Records per rskafka produce call: `--rskafka-batch`, else about 1 MB of values on
    /// Tansu (where rskafka ran fastest) and 500 KB on Kafka (a call is one batch, and
    /// 1 MB of values with the records' framing is over Kafka's default
    /// `message.max.bytes`).
    fn rskafka_batch(&self) -> u64 {
        let values = match self.broker {
            BrokerKind::Kafka => 500_000,
            BrokerKind::Tansu => 1_000_000,
        };
        self.rskafka_batch.unwrap_or_else(|| (values / self.value_size as u64).max(1))
    }
}

/// `cargo xtask bench ...`.
pub fn run_cli(root: &Path, args: &[String]) -> Result<(), String> {
    match args.split_first() {
        Some((what, rest)) if what == "group" => crate::bench_group::run(root, rest),
        Some((what, rest)) if what == "produce" => bench(root, &Options::parse(Mode::Produce, rest)?),
        Some((what, rest)) if what == "consume" => bench(root, &Options::parse(Mode::Consume, rest)?),
        _ => Err(USAGE.to_owned()),
    }
}

/// The broker of a run; dropping it stops it.
pub(crate) enum Broker {
    Tansu { child: Child, port: u16 },
    Kafka(crate::kafka::KafkaCluster),
}

impl Broker {
    fn start_tansu(root: &Path, log: &Path) -> Result<Broker, String> {
        let (child, port) = brokers::start_tansu(root, log)?;
        Ok(Broker::Tansu { child, port })
    }

    pub(crate) fn bootstrap(&self) -> String {
        match self {
            Broker::Tansu { port, .. } => format!("127.0.0.1:{port}"),
            Broker::Kafka(k) => k.bootstrap(),
        }
    }

    /// User plus system CPU seconds the broker's processes have used, from
    /// `/proc/PID/stat`.
    pub(crate) fn cpu_seconds(&self, ticks_per_second: f64) -> Option<f64> {
        let pids = match self {
            Broker::Tansu { child, .. } => vec![child.id()],
            Broker::Kafka(k) => k.pids(),
        };
        pids.into_iter().map(|pid| process_cpu_seconds(pid, ticks_per_second)).sum()
    }
}

pub(crate) fn process_cpu_seconds(pid: u32, ticks_per_second: f64) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name (which may contain spaces) start at field 3.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / ticks_per_second)
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Broker::Tansu { child, .. } = self {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What one client run measured.
pub(crate) struct Run {
    pub(crate) client: Client,
    pub(crate) records: u64,
    pub(crate) bytes: u64,
    pub(crate) elapsed_s: f64,
    pub(crate) cpu_s: f64,
    pub(crate) max_rss_kb: f64,
    pub(crate) broker_cpu_s: Option<f64>,
}

impl Run {
    pub(crate) fn records_per_s(&self) -> f64 {
        self.records as f64 / self.elapsed_s
    }
    fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / self.elapsed_s / 1e6
    }
    pub(crate) fn cpu_us_per_record(&self) -> f64 {
        self.cpu_s * 1e6 / self.records as f64
    }
    pub(crate) fn broker_us_per_record(&self) -> Option<f64> {
        self.broker_cpu_s.map(|c| c * 1e6 / self.records as f64)
    }
}

pub(crate) fn parse_report(client: Client, line: &str) -> Result<Run, String> {
    let v: Value =
        serde_json::from_str(line.trim()).map_err(|e| format!("{}: bad report {line:?}: {e}", client.name()))?;
    let num = |k: &str| {
        v.get(k).and_then(Value::as_f64).ok_or_else(|| format!("{}: report lacks {k}: {line}", client.name()))
    };
    Ok(Run {
        client,
        records: num("records")? as u64,
        bytes: num("bytes")? as u64,
        elapsed_s: num("elapsed_s")?,
        cpu_s: num("cpu_user_s")? + num("cpu_sys_s")?,
        max_rss_kb: num("max_rss_kb")?,
        broker_cpu_s: None,
    })
}

pub(crate) fn ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

pub(crate) fn cpu_model() -> String {
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    format!("{model}, {cpus} CPUs")
}

/// Runs `cmd`, failing if it takes longer than `limit`; returns its stdout.
pub(crate) fn run_limited(cmd: &mut Command, limit: Duration, what: &str) -> Result<String, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| format!("{what}: cannot start: {e}"))?;
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().map_err(|e| format!("{what}: {e}"))? {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("{what}: still running after {}s, stopped", limit.as_secs()));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        std::io::Read::read_to_string(&mut stdout, &mut out).map_err(|e| format!("{what}: stdout: {e}"))?;
    }
    if !status.success() {
        return Err(format!("{what} failed ({status})"));
    }
    Ok(out)
}

fn client_command(root: &Path, o: &Options, client: Client, bootstrap: &str, topic: &str) -> Command {
    if o.mode == Mode::Consume {
        return consume_command(root, o, client, bootstrap, topic);
    }
    let release = brokers::target_dir(root).join("release");
    let (count, size, partitions) = (o.records.to_string(), o.value_size.to_string(), o.partitions.to_string());
    let common = ["--bootstrap", bootstrap, "--topic", topic, "--count", &count, "--value-size", &size];
    let mut cmd;
    match client {
        Client::Klife => {
            cmd = Command::new(release.join("klife-bench"));
            cmd.arg("klife-produce").args(common).args(["--linger-ms", "5", "--acks", "all"]);
            if let Some(w) = o.klife_workers {
                cmd.args(["--workers", &w.to_string()]);
            }
            if let Some(b) = o.klife_batchers {
                cmd.args(["--batchers", &b.to_string()]);
            }
        }
        Client::Librdkafka => {
            cmd = Command::new(release.join("klife-rdkafka-mock"));
            cmd.arg("bench-produce").args(common).args([
                "--linger-ms",
                "5",
                "--acks",
                "all",
                "--set",
                "enable.idempotence=true",
            ]);
        }
        Client::Rskafka => {
            cmd = Command::new(release.join("klife-bench"));
            cmd.arg("rskafka-produce").args(common).args(["--partitions", &partitions]).args([
                "--batch",
                &o.rskafka_batch().to_string(),
                "--in-flight",
                &o.rskafka_in_flight.to_string(),
            ]);
        }
    }
    cmd
}

fn consume_command(root: &Path, o: &Options, client: Client, bootstrap: &str, topic: &str) -> Command {
    let release = brokers::target_dir(root).join("release");
    let (count, partitions) = (o.records.to_string(), o.partitions.to_string());
    let common = ["--bootstrap", bootstrap, "--topic", topic, "--count", &count];
    let mut cmd;
    match client {
        Client::Klife => {
            cmd = Command::new(release.join("klife-bench"));
            // As an application reads: the facade's consumer at its defaults
            // (read_committed), every partition kept assigned to the end.
            cmd.arg("klife-consume").args(common).args(["--live", "true"]);
            if let Some(w) = o.klife_workers {
                cmd.args(["--workers", &w.to_string()]);
            }
        }
        Client::Librdkafka => {
            cmd = Command::new(release.join("klife-rdkafka-mock"));
            cmd.arg("bench-consume").args(common);
            for p in 0..o.partitions {
                cmd.args(["--partition", &p.to_string()]);
            }
        }
        Client::Rskafka => {
            cmd = Command::new(release.join("klife-bench"));
            cmd.arg("rskafka-consume").args(common).args(["--partitions", &partitions]);
        }
    }
    cmd
}

/// Creates `topic` with `partitions` partitions on the broker.
pub(crate) fn create_topic(root: &Path, partitions: i32, bootstrap: &str, topic: &str) -> Result<(), String> {
    let mut create = Command::new(brokers::target_dir(root).join("release/klife-bench"));
    create.args(["create-topic", "--bootstrap", bootstrap, "--topic", topic, "--partitions", &partitions.to_string()]);
    run_limited(&mut create, Duration::from_secs(60), "create-topic").map(|_| ())
}

/// Runs one client against `broker` and checks its report, with the broker's CPU over
/// the run.
fn run_client(
    root: &Path,
    o: &Options,
    client: Client,
    round: usize,
    ticks: f64,
    broker: &Broker,
    topic: &str,
) -> Result<Run, String> {
    let bootstrap = broker.bootstrap();
    let broker_before = broker.cpu_seconds(ticks);
    let mut cmd = client_command(root, o, client, &bootstrap, topic);
    let out = run_limited(&mut cmd, Duration::from_secs(600), client.name())?;
    let line = out
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .ok_or_else(|| format!("{}: printed no report (stdout: {out:?})", client.name()))?;
    let mut run = parse_report(client, line)?;
    run.broker_cpu_s = broker.cpu_seconds(ticks).zip(broker_before).map(|(after, before)| after - before);
    if run.records != o.records {
        return Err(format!("{}: {} records reported, {} asked for", client.name(), run.records, o.records));
    }
    let path = root.join(format!("target/bench/{}.jsonl", o.mode.name()));
    let mut jsonl = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let _ = writeln!(
        jsonl,
        r#"{{"client":"{}","round":{round},"partitions":{},"value_size":{},"report":{},"broker_cpu_s":{}}}"#,
        client.name(),
        o.partitions,
        o.value_size,
        line.trim(),
        run.broker_cpu_s.map_or("null".to_owned(), |c| format!("{c:.2}")),
    );
    Ok(run)
}

/// The broker for a run: Kafka's cluster, started once for the whole benchmark, or a
/// fresh Tansu.
fn broker_for<'a>(root: &Path, kafka: Option<&'a Broker>, log: &str) -> Result<BrokerRef<'a>, String> {
    match kafka {
        Some(k) => Ok(BrokerRef::Shared(k)),
        None => Ok(BrokerRef::Own(Broker::start_tansu(root, &root.join(format!("target/bench/{log}.log")))?)),
    }
}

/// A broker a run uses: its own, or the benchmark's shared one.
enum BrokerRef<'a> {
    Own(Broker),
    Shared(&'a Broker),
}

impl std::ops::Deref for BrokerRef<'_> {
    type Target = Broker;
    fn deref(&self) -> &Broker {
        match self {
            BrokerRef::Own(b) => b,
            BrokerRef::Shared(b) => b,
        }
    }
}

/// One client run on a new topic.
fn run_once(
    root: &Path,
    o: &Options,
    kafka: Option<&Broker>,
    client: Client,
    round: usize,
    ticks: f64,
) -> Result<Run, String> {
    let broker = broker_for(root, kafka, &format!("tansu-{}", client.name()))?;
    let topic = format!("bench-{}-{round}", client.name());
    create_topic(root, o.partitions, &broker.bootstrap(), &topic)?;
    run_client(root, o, client, round, ticks, &broker, &topic)
}

/// A broker and a topic filled with `o.records` records by klife's producer, for the
/// consume runs of one round.
fn filled_broker<'a>(
    root: &Path,
    o: &Options,
    kafka: Option<&'a Broker>,
    round: usize,
) -> Result<(BrokerRef<'a>, String), String> {
    let broker = broker_for(root, kafka, &format!("tansu-consume-{round}"))?;
    let topic = format!("bench-consume-{round}");
    fill_topic(root, &broker.bootstrap(), &topic, o.partitions, o.records, o.value_size)?;
    Ok((broker, topic))
}

/// Creates `topic` and fills it with `records` records of `value_size` bytes by klife's
/// producer.
pub(crate) fn fill_topic(
    root: &Path,
    bootstrap: &str,
    topic: &str,
    partitions: i32,
    records: u64,
    value_size: usize,
) -> Result<(), String> {
    create_topic(root, partitions, bootstrap, topic)?;
    let mut fill = Command::new(brokers::target_dir(root).join("release/klife-bench"));
    fill.args(["klife-produce", "--bootstrap", bootstrap, "--topic", topic]).args([
        "--count",
        &records.to_string(),
        "--value-size",
        &value_size.to_string(),
    ]);
    run_limited(&mut fill, Duration::from_secs(600), "filling the topic").map(|_| ())
}

pub(crate) fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    match n {
        0 => f64::NAN,
        _ if n % 2 == 1 => xs[n / 2],
        _ => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

/// Medians over the rounds of one client.
struct Summary {
    client: Client,
    records_per_s: f64,
    mb_per_s: f64,
    cpu_us: f64,
    rss_mib: f64,
    broker_us: Option<f64>,
}

fn summarise(client: Client, runs: &[Run]) -> Option<Summary> {
    let mine: Vec<&Run> = runs.iter().filter(|r| r.client == client).collect();
    if mine.is_empty() {
        return None;
    }
    let m = |f: &dyn Fn(&Run) -> f64| median(mine.iter().map(|r| f(r)).collect());
    let broker: Vec<f64> = mine.iter().filter_map(|r| r.broker_us_per_record()).collect();
    Some(Summary {
        client,
        records_per_s: m(&Run::records_per_s),
        mb_per_s: m(&Run::mb_per_s),
        cpu_us: m(&Run::cpu_us_per_record),
        rss_mib: m(&|r| r.max_rss_kb / 1024.0),
        broker_us: (!broker.is_empty()).then(|| median(broker)),
    })
}

fn table(o: &Options, runs: &[Run]) -> String {
    let sums: Vec<Summary> = CLIENTS.into_iter().filter_map(|c| summarise(c, runs)).collect();
    let clients = match o.mode {
        Mode::Produce => format!(
            "klife: {}; rskafka: {} records per produce call, {} calls in flight per partition",
            o.klife_batchers.map_or("default settings".to_owned(), |b| format!("{b} batcher(s) per broker")),
            o.rskafka_batch(),
            o.rskafka_in_flight
        ),
        Mode::Consume => "every client reads every partition from offset 0".to_owned(),
    };
    let mut t = format!(
        "bench {}: {} records x {} B, {} partitions, {} round(s), medians; {} on the same machine; {clients}\n\n",
        o.mode.name(),
        o.records,
        o.value_size,
        o.partitions,
        o.rounds,
        match o.broker {
            BrokerKind::Kafka => format!("Apache Kafka {} (one node)", crate::kafka::KAFKA_VERSION),
            BrokerKind::Tansu => "Tansu (memory storage)".to_owned(),
        },
    );
    t.push_str("| client | records/s | MB/s | client CPU µs/record | peak RSS (MiB) | broker CPU µs/record |\n");
    t.push_str("|---|---:|---:|---:|---:|---:|\n");
    for s in &sums {
        t.push_str(&format!(
            "| {} | {:.0} | {:.1} | {:.3} | {:.0} | {} |\n",
            s.client.name(),
            s.records_per_s,
            s.mb_per_s,
            s.cpu_us,
            s.rss_mib,
            s.broker_us.map_or("-".to_owned(), |b| format!("{b:.2}")),
        ));
    }
    let klife = sums.iter().find(|s| s.client == Client::Klife);
    for other in sums.iter().filter(|s| s.client != Client::Klife) {
        if let Some(k) = klife {
            t.push_str(&format!(
                "\nklife / {}: throughput {:.2}x, CPU per record {:.2}x, peak RSS {:.2}x",
                other.client.name(),
                k.records_per_s / other.records_per_s,
                k.cpu_us / other.cpu_us,
                k.rss_mib / other.rss_mib,
            ));
        }
    }
    t.push('\n');
    t
}

/// Builds the benchmark binaries (release) and makes `target/bench`.
pub(crate) fn build_peers(root: &Path) -> Result<(), String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut build = Command::new(&cargo);
    build.args(["build", "--release", "--locked", "-p", "klife-bench", "-p", "klife-rdkafka-mock"]);
    run_step(root, "build klife-bench and klife-rdkafka-mock (release)", &mut build)?;
    let logs: PathBuf = root.join("target/bench");
    std::fs::create_dir_all(&logs).map_err(|e| format!("{}: {e}", logs.display()))
}

fn bench(root: &Path, o: &Options) -> Result<(), String> {
    build_peers(root)?;
    let kafka = match o.broker {
        BrokerKind::Kafka => {
            eprintln!("\n==> start Apache Kafka (one node)");
            Some(Broker::Kafka(crate::kafka::start_cluster(root, 1, "kafka-bench")?))
        }
        BrokerKind::Tansu => {
            eprintln!("\n==> install Tansu");
            brokers::install_tansu(root)?;
            None
        }
    };
    let kafka = kafka.as_ref();
    let ticks = ticks_per_second();
    eprintln!(
        "\n==> bench {}: {} records x {} B, {} partitions, {} round(s) on {}",
        o.mode.name(),
        o.records,
        o.value_size,
        o.partitions,
        o.rounds,
        cpu_model()
    );
    // One run before the rounds, not counted: the first process on a cold machine
    // (page cache, allocator, CPU caches) runs slower, and it would always be round 1's
    // first client.
    let warm_up = o.clients[0];
    let run = match o.mode {
        Mode::Consume => {
            let (broker, topic) = filled_broker(root, o, kafka, o.rounds)?;
            run_client(root, o, warm_up, o.rounds, ticks, &broker, &topic)?
        }
        Mode::Produce => run_once(root, o, kafka, warm_up, o.rounds, ticks)?,
    };
    eprintln!("    warm-up  {:>10}: {:>9.0} records/s (not counted)", warm_up.name(), run.records_per_s());
    let mut runs = Vec::new();
    for round in 0..o.rounds {
        let k = round % o.clients.len();
        let order: Vec<Client> = o.clients[k..].iter().chain(&o.clients[..k]).copied().collect();
        let filled = if o.mode == Mode::Consume { Some(filled_broker(root, o, kafka, round)?) } else { None };
        for client in order {
            let run = match &filled {
                Some((broker, topic)) => run_client(root, o, client, round, ticks, broker, topic)?,
                None => run_once(root, o, kafka, client, round, ticks)?,
            };
            eprintln!(
                "    round {} {:>10}: {:>9.0} records/s {:>7.1} MB/s {:>6.3} µs CPU/record {:>5.0} MiB RSS, broker {} µs/record",
                round + 1,
                client.name(),
                run.records_per_s(),
                run.mb_per_s(),
                run.cpu_us_per_record(),
                run.max_rss_kb / 1024.0,
                run.broker_us_per_record().map_or("-".to_owned(), |b| format!("{b:.2}")),
            );
            runs.push(run);
        }
    }
    println!("\n{}", table(o, &runs));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(Vec::new()).is_nan());
    }

    #[test]
    fn options() {
        let args: Vec<String> =
            ["--records", "10", "--clients", "klife,rskafka"].iter().map(|s| s.to_string()).collect();
        let o = Options::parse(Mode::Produce, &args).expect("parse");
        assert_eq!(o.records, 10);
        assert_eq!(o.clients, vec![Client::Klife, Client::Rskafka]);
        assert_eq!(o.partitions, 6);
        assert_eq!(o.klife_batchers, None);
        assert_eq!(o.broker, BrokerKind::Kafka);
        let tansu = ["--broker".to_owned(), "tansu".to_owned()];
        assert_eq!(Options::parse(Mode::Produce, &tansu).expect("parse").broker, BrokerKind::Tansu);
        assert!(Options::parse(Mode::Produce, &["--broker".to_owned(), "x".to_owned()]).is_err());
        assert!(Options::parse(Mode::Consume, &["--rounds".to_owned(), "0".to_owned()]).is_err());
        assert!(Options::parse(Mode::Produce, &["--klife-batchers".to_owned(), "0".to_owned()]).is_err());
        assert!(Options::parse(Mode::Consume, &["--bogus".to_owned()]).is_err());
    }

    #[test]
    fn reports_parse() {
        let line = r#"{"records":20000,"bytes":4000000,"elapsed_s":0.5,"cpu_user_s":0.03,"cpu_sys_s":0.01,"max_rss_kb":12420}"#;
        let r = parse_report(Client::Librdkafka, line).expect("parse");
        assert_eq!(r.records, 20000);
        assert!((r.cpu_us_per_record() - 2.0).abs() < 1e-9);
        assert!((r.records_per_s() - 40000.0).abs() < 1e-9);
        assert!(parse_report(Client::Klife, "{}").is_err());
    }
}
