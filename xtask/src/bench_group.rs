//! `cargo xtask bench group`: klife's consumer groups beside librdkafka's on one Apache
//! Kafka node, in the same run.
//!
//! The broker is first warmed up (untimed; see [`warm_broker`]). Each round fills one
//! topic with klife's producer (untimed), then every throughput case reads all of it,
//! in rotating order, each as its own process and under a group of its own: klife's
//! standalone consumer (the baseline a group is held to), klife's group of
//! 1 and of 3 members, librdkafka's group of 1 and of 3 members (KIP-848). A group's
//! rate runs from its first record to the last one counted; the time from start to
//! the first record is reported beside it. Then the join cases, on an empty topic of
//! the same partitions: one member alone until it runs every partition, then (300 ms
//! later, so that the heartbeats are not in step) a second member, timed to a complete
//! and disjoint assignment, for klife and librdkafka under both protocols, each with its
//! default assignment (klife's classic members assign with cooperative-sticky,
//! librdkafka's with eager range unless told otherwise: it runs both). Every line is
//! appended to `target/bench/group.jsonl`.

use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::bench::{self, Broker, Client, Run};
use crate::brokers;

/// Options of `cargo xtask bench group`.
struct Options {
    records: u64,
    value_size: usize,
    partitions: i32,
    rounds: usize,
    klife_workers: Option<usize>,
    /// `handler_max_unacked_commits` of klife's groups, when not the default.
    klife_max_unacked: Option<usize>,
    /// Other settings of klife's group members, passed as they are (`--fetch-max-kib`,
    /// `--linger-us`).
    klife_extra: Vec<(String, String)>,
    /// The throughput cases run.
    cases: Vec<Case>,
    /// Whether the join cases run.
    joins: bool,
}

impl Options {
    fn parse(args: &[String]) -> Result<Options, String> {
        let mut o = Options {
            records: 2_000_000,
            value_size: 100,
            partitions: 6,
            rounds: 3,
            klife_workers: None,
            klife_max_unacked: None,
            klife_extra: Vec::new(),
            cases: CASES.to_vec(),
            joins: true,
        };
        let mut it = args.iter();
        while let Some(a) = it.next() {
            let v = it.next().ok_or_else(|| format!("{a} needs a value\n\n{}", bench::USAGE))?;
            let bad = |_| format!("{a} {v:?}: not a number");
            match a.as_str() {
                "--records" => o.records = v.parse().map_err(bad)?,
                "--value-size" => o.value_size = v.parse().map_err(bad)?,
                "--partitions" => o.partitions = v.parse().map_err(bad)?,
                "--rounds" => o.rounds = v.parse().map_err(bad)?,
                "--klife-workers" => o.klife_workers = Some(v.parse().map_err(bad)?),
                "--klife-max-unacked" => o.klife_max_unacked = Some(v.parse().map_err(bad)?),
                "--klife-fetch-max-kib" | "--klife-linger-us" | "--klife-commits-in-flight" => {
                    v.parse::<u64>().map_err(bad)?;
                    o.klife_extra.push((a.replacen("--klife-", "--", 1), v.clone()));
                }
                "--cases" => {
                    let names: Vec<&str> = v.split(',').collect();
                    o.joins = names.contains(&"join");
                    o.cases = names
                        .iter()
                        .filter(|n| **n != "join")
                        .map(|n| {
                            CASES
                                .into_iter()
                                .find(|c| c.name() == *n)
                                .ok_or_else(|| format!("--cases: unknown case {n:?}"))
                        })
                        .collect::<Result<_, _>>()?;
                }
                other => return Err(format!("bench group: unknown argument {other:?}\n\n{}", bench::USAGE)),
            }
        }
        if o.records == 0
            || o.value_size == 0
            || o.partitions < 3
            || o.rounds == 0
            || o.klife_workers == Some(0)
            || (o.cases.is_empty() && !o.joins)
        {
            return Err(format!(
                "records, value size, rounds, klife workers and cases must not be zero, partitions at least 3\n\n{}",
                bench::USAGE
            ));
        }
        Ok(o)
    }
}

/// A throughput case.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    /// klife's standalone consumer, every partition assigned.
    Standalone,
    /// klife's consumer group of this many members (KIP-848).
    Klife(usize),
    /// librdkafka's consumers in a group, this many (KIP-848).
    Librdkafka(usize),
    /// klife's pipeline on one member: no-op processors (8), batchers of 100.
    Pipeline,
}

const CASES: [Case; 6] =
    [Case::Standalone, Case::Klife(1), Case::Klife(3), Case::Librdkafka(1), Case::Librdkafka(3), Case::Pipeline];

impl Case {
    /// The case's name for `--cases`.
    fn name(self) -> String {
        match self {
            Case::Standalone => "standalone".into(),
            Case::Klife(n) => format!("klife-{n}"),
            Case::Librdkafka(n) => format!("librdkafka-{n}"),
            Case::Pipeline => "pipeline".into(),
        }
    }

    fn label(self) -> String {
        match self {
            Case::Standalone => "klife, standalone consumer".into(),
            Case::Klife(n) => format!("klife, group of {n}"),
            Case::Librdkafka(n) => format!("librdkafka, group of {n}"),
            Case::Pipeline => "klife, pipeline on 1 member (8 no-op processors, batchers of 100)".into(),
        }
    }

    fn client(self) -> Client {
        match self {
            Case::Standalone | Case::Klife(_) | Case::Pipeline => Client::Klife,
            Case::Librdkafka(_) => Client::Librdkafka,
        }
    }
}

/// What a throughput case measured.
struct CaseRun {
    case: Case,
    run: Run,
    /// Groups: from the start to the first record.
    first_record_s: Option<f64>,
}

/// A join case: a client, a protocol (by librdkafka's names for them), and for the
/// classic protocol the assignment strategy when not the client's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Join {
    client: Client,
    protocol: &'static str,
    strategy: Option<&'static str>,
}

const JOINS: [Join; 5] = [
    Join { client: Client::Klife, protocol: "consumer", strategy: None },
    Join { client: Client::Librdkafka, protocol: "consumer", strategy: None },
    Join { client: Client::Klife, protocol: "classic", strategy: None },
    Join { client: Client::Librdkafka, protocol: "classic", strategy: None },
    Join { client: Client::Librdkafka, protocol: "classic", strategy: Some("cooperative-sticky") },
];

impl Join {
    fn label(self) -> String {
        let protocol = if self.protocol == "consumer" { "KIP-848" } else { "classic" };
        let strategy = match (self.client, self.protocol, self.strategy) {
            (_, _, Some(s)) => s,
            (_, "consumer", None) => "server-side uniform",
            (Client::Klife, _, None) => "cooperative-sticky (default)",
            (_, _, None) => "range, roundrobin (default, eager)",
        };
        format!("| {} | {protocol} | {strategy} |", self.client.name())
    }
}

/// What a join case measured.
struct JoinRun {
    join: Join,
    first_assignment_s: f64,
    rebalance_s: f64,
}

fn workers(o: &Options, cmd: &mut Command) {
    if let Some(w) = o.klife_workers {
        cmd.args(["--workers", &w.to_string()]);
    }
}

fn case_command(root: &Path, o: &Options, case: Case, bootstrap: &str, topic: &str, group: &str) -> Command {
    let release = brokers::target_dir(root).join("release");
    let count = o.records.to_string();
    let common = ["--bootstrap", bootstrap, "--topic", topic, "--count", &count];
    let mut cmd;
    match case {
        Case::Standalone => {
            cmd = Command::new(release.join("klife-bench"));
            cmd.arg("klife-consume").args(common).args(["--live", "true"]);
            workers(o, &mut cmd);
        }
        Case::Klife(_) | Case::Pipeline => {
            let n = if let Case::Klife(n) = case { n } else { 1 };
            cmd = Command::new(release.join("klife-bench"));
            cmd.arg("klife-group-consume").args(common).args(["--group", group, "--members", &n.to_string()]);
            if case == Case::Pipeline {
                cmd.args(["--pipeline", "true"]);
            }
            if let Some(m) = o.klife_max_unacked {
                cmd.args(["--max-unacked", &m.to_string()]);
            }
            for (k, v) in &o.klife_extra {
                cmd.args([k, v]);
            }
            workers(o, &mut cmd);
        }
        Case::Librdkafka(n) => {
            cmd = Command::new(release.join("klife-rdkafka-mock"));
            cmd.arg("bench-group-consume")
                .args(common)
                .args(["--group", group, "--members", &n.to_string()])
                .args(["--partitions", &o.partitions.to_string()]);
        }
    }
    cmd
}

/// Appends `line` to `target/bench/group.jsonl`.
fn log_line(root: &Path, line: &str) -> Result<(), String> {
    let path = root.join("target/bench/group.jsonl");
    let mut jsonl = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    writeln!(jsonl, "{line}").map_err(|e| format!("{}: {e}", path.display()))
}

/// The last JSON line of `out`.
fn report_line<'a>(what: &str, out: &'a str) -> Result<&'a str, String> {
    out.lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .map(str::trim)
        .ok_or_else(|| format!("{what}: printed no report (stdout: {out:?})"))
}

fn run_case(
    root: &Path,
    o: &Options,
    case: Case,
    round: usize,
    ticks: f64,
    broker: &Broker,
    topic: &str,
) -> Result<CaseRun, String> {
    let label = case.label();
    let group = format!("bench-{}-{round}", label.replace([',', ' '], "-"));
    let before = broker.cpu_seconds(ticks);
    let out = bench::run_limited(
        &mut case_command(root, o, case, &broker.bootstrap(), topic, &group),
        Duration::from_secs(600),
        &label,
    )?;
    let line = report_line(&label, &out)?;
    let mut run = bench::parse_report(case.client(), line)?;
    run.broker_cpu_s = broker.cpu_seconds(ticks).zip(before).map(|(after, before)| after - before);
    if run.records < o.records {
        return Err(format!("{label}: {} records reported, {} asked for", run.records, o.records));
    }
    let v: Value = serde_json::from_str(line).map_err(|e| format!("{label}: {e}"))?;
    let first_record_s = v.get("first_record_s").and_then(Value::as_f64);
    if case != Case::Standalone && first_record_s.is_none() {
        return Err(format!("{label}: the report lacks first_record_s: {line}"));
    }
    log_line(root, &format!(r#"{{"case":"{label}","round":{round},"report":{line}}}"#))?;
    Ok(CaseRun { case, run, first_record_s })
}

fn run_join(
    root: &Path,
    join: Join,
    round: usize,
    o: &Options,
    bootstrap: &str,
    topic: &str,
) -> Result<JoinRun, String> {
    let release = brokers::target_dir(root).join("release");
    let group =
        format!("bench-join-{}-{}-{}-{round}", join.client.name(), join.protocol, join.strategy.unwrap_or("default"));
    let common = ["--bootstrap", bootstrap, "--topic", topic, "--group", &group, "--protocol", join.protocol];
    let mut cmd = match join.client {
        Client::Librdkafka => {
            let mut c = Command::new(release.join("klife-rdkafka-mock"));
            c.arg("bench-group-join").args(common).args(["--partitions", &o.partitions.to_string()]);
            if let Some(strategy) = join.strategy {
                c.args(["--set", &format!("partition.assignment.strategy={strategy}")]);
            }
            c
        }
        _ => {
            let mut c = Command::new(release.join("klife-bench"));
            c.arg("klife-group-join").args(common);
            workers(o, &mut c);
            c
        }
    };
    let what = format!("{} join ({}, {})", join.client.name(), join.protocol, join.strategy.unwrap_or("default"));
    let out = bench::run_limited(&mut cmd, Duration::from_secs(600), &what)?;
    let line = report_line(&what, &out)?;
    let v: Value = serde_json::from_str(line).map_err(|e| format!("{what}: {e}"))?;
    let num = |k: &str| v.get(k).and_then(Value::as_f64).ok_or_else(|| format!("{what}: report lacks {k}: {line}"));
    if v.get("protocol").and_then(Value::as_str) != Some(join.protocol) {
        return Err(format!("{what}: ran another protocol: {line}"));
    }
    log_line(root, &format!(r#"{{"case":"join","round":{round},"report":{line}}}"#))?;
    Ok(JoinRun { join, first_assignment_s: num("first_assignment_s")?, rebalance_s: num("rebalance_s")? })
}

/// Medians of one case's runs.
struct Summary {
    records_per_s: f64,
    cpu_us: f64,
    rss_mib: f64,
    first_record_ms: Option<f64>,
    broker_us: Option<f64>,
}

fn summarise(case: Case, runs: &[CaseRun]) -> Option<Summary> {
    let mine: Vec<&CaseRun> = runs.iter().filter(|r| r.case == case).collect();
    if mine.is_empty() {
        return None;
    }
    let m = |f: &dyn Fn(&CaseRun) -> f64| bench::median(mine.iter().map(|r| f(r)).collect());
    let firsts: Vec<f64> = mine.iter().filter_map(|r| r.first_record_s.map(|s| s * 1e3)).collect();
    let broker: Vec<f64> = mine.iter().filter_map(|r| r.run.broker_us_per_record()).collect();
    Some(Summary {
        records_per_s: m(&|r| r.run.records_per_s()),
        cpu_us: m(&|r| r.run.cpu_us_per_record()),
        rss_mib: m(&|r| r.run.max_rss_kb / 1024.0),
        first_record_ms: (!firsts.is_empty()).then(|| bench::median(firsts)),
        broker_us: (!broker.is_empty()).then(|| bench::median(broker)),
    })
}

fn ms(x: Option<f64>) -> String {
    x.map_or("-".to_owned(), |v| format!("{v:.0}"))
}

fn table(o: &Options, runs: &[CaseRun], joins: &[JoinRun]) -> String {
    let mut t = format!(
        "bench group: {} records x {} B, {} partitions, {} round(s), medians; Apache Kafka {} (one node) on the same machine\n\n",
        o.records,
        o.value_size,
        o.partitions,
        o.rounds,
        crate::kafka::KAFKA_VERSION,
    );
    t.push_str("| case | records/s | client CPU µs/record | peak RSS (MiB) | start to first record (ms) | broker CPU µs/record |\n");
    t.push_str("|---|---:|---:|---:|---:|---:|\n");
    let sums: Vec<(Case, Summary)> = CASES.into_iter().filter_map(|c| summarise(c, runs).map(|s| (c, s))).collect();
    for (case, s) in &sums {
        t.push_str(&format!(
            "| {} | {:.0} | {:.3} | {:.0} | {} | {} |\n",
            case.label(),
            s.records_per_s,
            s.cpu_us,
            s.rss_mib,
            ms(s.first_record_ms),
            s.broker_us.map_or("-".to_owned(), |b| format!("{b:.2}")),
        ));
    }
    let get = |c: Case| sums.iter().find(|(k, _)| *k == c).map(|(_, s)| s);
    if let (Some(p), Some(k)) = (get(Case::Pipeline), get(Case::Klife(1))) {
        t.push_str(&format!(
            "\npipeline / group of 1 with a handler, klife: CPU added per record {:.3} µs (goal <= 0.2 µs), throughput {:.2}x",
            p.cpu_us - k.cpu_us,
            p.records_per_s / k.records_per_s,
        ));
    }
    for n in [1, 3] {
        if let (Some(k), Some(r)) = (get(Case::Klife(n)), get(Case::Librdkafka(n))) {
            t.push_str(&format!(
                "\ngroup of {n}, klife / librdkafka: throughput {:.2}x (goal >= 1.5x), CPU per record {:.2}x (goal <= 0.5x)",
                k.records_per_s / r.records_per_s,
                k.cpu_us / r.cpu_us,
            ));
        }
        if let (Some(k), Some(s)) = (get(Case::Klife(n)), get(Case::Standalone)) {
            t.push_str(&format!(
                "\ngroup of {n} / standalone consumer, klife: throughput {:.2}x (goal >= 0.85x)",
                k.records_per_s / s.records_per_s,
            ));
        }
    }
    if joins.is_empty() {
        return t;
    }
    t.push_str("\n\n| client | protocol | assignment | one member: start to every partition running (ms) | a second member joins: to a complete split (ms) |\n");
    t.push_str("|---|---|---|---:|---:|\n");
    for join in JOINS {
        let mine: Vec<&JoinRun> = joins.iter().filter(|j| j.join == join).collect();
        if mine.is_empty() {
            continue;
        }
        t.push_str(&format!(
            "{} {:.0} | {:.0} |\n",
            join.label(),
            bench::median(mine.iter().map(|j| j.first_assignment_s * 1e3).collect()),
            bench::median(mine.iter().map(|j| j.rebalance_s * 1e3).collect()),
        ));
    }
    t
}

/// Records of the broker's warm-up topic, written in batches of [`WARM_BATCH_BYTES`].
const WARM_RECORDS: u64 = 1_000_000;
/// The producer's batch size on the warm-up topic, and the warm-up fetches' size per
/// partition: small batches, read one at a time, make thousands of Fetch and
/// OffsetCommit requests per run.
const WARM_BATCH_BYTES: usize = 16 * 1024;
/// Runs of a group on the warm-up topic.
const WARM_GROUP_RUNS: usize = 3;

/// Brings the broker to the state a long-running one is in before anything is timed:
/// a JVM compiles a method to native code only after thousands of calls, and one
/// group's run makes a few hundred OffsetCommits (one per fetched batch). Measured
/// cold, the coordinator's paths ran interpreted through every round (about 0.20 s of
/// broker CPU per group-of-1 run, 0.12 s once warm). So, untimed: a topic of small
/// batches is read with fetches of one batch by a group of one ([`WARM_GROUP_RUNS`]
/// times, ~3,000 Fetch and ~4,000 OffsetCommit requests each) and once by the
/// standalone consumer.
fn warm_broker(root: &Path, o: &Options, bootstrap: &str) -> Result<(), String> {
    let topic = "bench-group-warm";
    eprintln!(
        "\n==> warm the broker up: {WARM_RECORDS} records in batches of {WARM_BATCH_BYTES} B, read in fetches of one batch"
    );
    bench::create_topic(root, o.partitions, bootstrap, topic)?;
    let release = brokers::target_dir(root).join("release");
    let (count, batch, kib) =
        (WARM_RECORDS.to_string(), WARM_BATCH_BYTES.to_string(), (WARM_BATCH_BYTES / 1024).to_string());
    let common = ["--bootstrap", bootstrap, "--topic", topic, "--count", &count];
    let mut fill = Command::new(release.join("klife-bench"));
    fill.arg("klife-produce").args(common).args(["--value-size", &o.value_size.to_string(), "--batch-size", &batch]);
    bench::run_limited(&mut fill, Duration::from_secs(600), "filling the warm-up topic")?;
    for run in 0..WARM_GROUP_RUNS {
        let group = format!("bench-warm-{run}");
        let mut cmd = Command::new(release.join("klife-bench"));
        cmd.arg("klife-group-consume").args(common).args(["--group", &group, "--fetch-max-kib", &kib]);
        bench::run_limited(&mut cmd, Duration::from_secs(600), "warming the broker up (group)")?;
    }
    let mut cmd = Command::new(release.join("klife-bench"));
    cmd.arg("klife-consume").args(common).args(["--live", "true", "--partition-max-kib", &kib]);
    bench::run_limited(&mut cmd, Duration::from_secs(600), "warming the broker up (standalone consumer)").map(|_| ())
}

/// `cargo xtask bench group ...`.
pub fn run(root: &Path, args: &[String]) -> Result<(), String> {
    let o = Options::parse(args)?;
    bench::build_peers(root)?;
    eprintln!("\n==> start Apache Kafka (one node)");
    let broker = Broker::Kafka(crate::kafka::start_cluster(root, 1, "kafka-bench")?);
    let ticks = bench::ticks_per_second();
    let bootstrap = broker.bootstrap();
    eprintln!(
        "\n==> bench group: {} records x {} B, {} partitions, {} round(s) on {}",
        o.records,
        o.value_size,
        o.partitions,
        o.rounds,
        bench::cpu_model()
    );
    let join_topic = "bench-group-join";
    if o.joins {
        bench::create_topic(root, o.partitions, &bootstrap, join_topic)?;
    }
    let (mut runs, mut joins) = (Vec::new(), Vec::new());
    if !o.cases.is_empty() {
        warm_broker(root, &o, &bootstrap)?;
        // One uncounted run of every case first, each in a group of its own: the first
        // process on a cold machine runs slower, and the broker's JIT compiles the paths
        // a case uses (Fetch alone for the standalone consumer; OffsetCommit, the
        // heartbeats and the coordinator's writes for a group) only once they run.
        let topic = format!("bench-group-{}", o.rounds);
        bench::fill_topic(root, &bootstrap, &topic, o.partitions, o.records, o.value_size)?;
        for &case in &o.cases {
            let warm = run_case(root, &o, case, o.rounds, ticks, &broker, &topic)?;
            eprintln!(
                "    warm-up  {:>28}: {:>9.0} records/s (not counted)",
                warm.case.label(),
                warm.run.records_per_s()
            );
        }
    }
    for round in 0..o.rounds {
        if !o.cases.is_empty() {
            let topic = format!("bench-group-{round}");
            bench::fill_topic(root, &bootstrap, &topic, o.partitions, o.records, o.value_size)?;
            let k = round % o.cases.len();
            for case in o.cases[k..].iter().chain(&o.cases[..k]).copied() {
                let r = run_case(root, &o, case, round, ticks, &broker, &topic)?;
                eprintln!(
                    "    round {} {:>28}: {:>9.0} records/s {:>6.3} µs CPU/record {:>5.0} MiB RSS, first record {} ms",
                    round + 1,
                    case.label(),
                    r.run.records_per_s(),
                    r.run.cpu_us_per_record(),
                    r.run.max_rss_kb / 1024.0,
                    ms(r.first_record_s.map(|s| s * 1e3)),
                );
                runs.push(r);
            }
        }
        if o.joins {
            let k = round % JOINS.len();
            for join in JOINS[k..].iter().chain(&JOINS[..k]).copied() {
                let j = run_join(root, join, round, &o, &bootstrap, join_topic)?;
                eprintln!(
                    "    round {} join {}: alone {:>6.0} ms, second member {:>6.0} ms",
                    round + 1,
                    join.label(),
                    j.first_assignment_s * 1e3,
                    j.rebalance_s * 1e3,
                );
                joins.push(j);
            }
        }
    }
    println!("\n{}", table(&o, &runs, &joins));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options() {
        let args: Vec<String> = ["--records", "10", "--rounds", "1"].iter().map(|s| s.to_string()).collect();
        let o = Options::parse(&args).expect("parse");
        assert_eq!((o.records, o.rounds, o.partitions), (10, 1, 6));
        assert!(Options::parse(&["--partitions".to_owned(), "2".to_owned()]).is_err());
        assert!(Options::parse(&["--bogus".to_owned(), "1".to_owned()]).is_err());
        assert!(Options::parse(&["--records".to_owned()]).is_err());
        let o = Options::parse(&["--cases".to_owned(), "klife-1,join".to_owned()]).expect("parse");
        assert_eq!((o.cases, o.joins), (vec![Case::Klife(1)], true));
        assert!(Options::parse(&["--cases".to_owned(), "klife-2".to_owned()]).is_err());
    }

    #[test]
    fn labels_make_group_names() {
        assert_eq!(Case::Klife(3).label().replace([',', ' '], "-"), "klife--group-of-3");
        assert_eq!(Case::Librdkafka(1).client(), Client::Librdkafka);
    }
}
