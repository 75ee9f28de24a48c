//! `cargo xtask test`: every check CI runs, in order, stopping at the first failure.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

/// The suite that kills and restarts Kafka's nodes, and the name prefix of such tests
/// elsewhere (klife-chaos's Kafka seeds): they run alone, after the others.
const FAULTS_ON_KAFKA: &str = "kafka_faults";

/// The brokers a test's name can name, as a path segment (`case::kafka`, `kafka::case`;
/// and `kafka_faults::case`), and how the summary calls them.
const BROKERS: [(&str, &str); 4] = [
    ("kafka", "Apache Kafka"),
    ("tansu", "Tansu"),
    ("rdkafka_mock", "the librdkafka mock cluster"),
    ("testkit", "klife-testkit (shared cluster)"),
];

/// How many tests passed, by the broker they ran against.
#[derive(Debug, Default)]
struct Counts {
    by_broker: [usize; BROKERS.len()],
    other: usize,
    failed: usize,
    ignored: usize,
}

impl Counts {
    fn add(&mut self, other: Counts) {
        for (a, b) in self.by_broker.iter_mut().zip(other.by_broker) {
            *a += b;
        }
        self.other += other.other;
        self.failed += other.failed;
        self.ignored += other.ignored;
    }

    /// Counts one line of libtest's output (`test NAME ... ok`).
    fn line(&mut self, line: &str) {
        let Some(rest) = line.strip_prefix("test ") else { return };
        let Some((name, outcome)) = rest.rsplit_once(" ... ") else { return };
        match outcome.trim() {
            "ok" => {}
            "FAILED" => {
                self.failed += 1;
                return;
            }
            o if o.starts_with("ignored") => {
                self.ignored += 1;
                return;
            }
            _ => return,
        }
        let name = name.split_whitespace().next().unwrap_or(name);
        let broker = BROKERS.iter().position(|(word, _)| {
            name.split("::").any(|segment| segment == *word || (*word == "kafka" && segment == FAULTS_ON_KAFKA))
        });
        match broker {
            Some(i) => self.by_broker[i] += 1,
            None => self.other += 1,
        }
    }

    fn summary(&self) -> String {
        let mut s = String::from("tests passed, by broker:\n");
        for ((_, name), n) in BROKERS.iter().zip(self.by_broker) {
            s.push_str(&format!("    {n:>5}  against {name}\n"));
        }
        s.push_str(&format!(
            "    {:>5}  others (unit and property tests, private klife-testkit and mock clusters, scripted peers)\n",
            self.other
        ));
        s.push_str(&format!("    {:>5}  ignored (each says why)", self.ignored));
        s
    }
}

/// Runs a `cargo test` step, passing its output through and counting the tests that
/// passed against each broker.
fn run_counted(root: &Path, title: &str, cmd: &mut Command) -> Result<Counts, String> {
    eprintln!("\n==> {title}\n    $ {}", describe(cmd));
    let started = Instant::now();
    let mut child =
        cmd.current_dir(root).stdout(Stdio::piped()).spawn().map_err(|e| format!("{title}: cannot start: {e}"))?;
    let mut counts = Counts::default();
    if let Some(out) = child.stdout.take() {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            counts.line(&line);
            println!("{line}");
        }
    }
    let status = child.wait().map_err(|e| format!("{title}: {e}"))?;
    eprintln!("    ({title}: {:.1}s)", started.elapsed().as_secs_f64());
    if status.success() { Ok(counts) } else { Err(format!("{title} failed ({status})")) }
}

/// Runs `cmd` in `root`, echoing it, and fails with its exit status.
pub fn run_step(root: &Path, title: &str, cmd: &mut Command) -> Result<(), String> {
    eprintln!("\n==> {title}\n    $ {}", describe(cmd));
    let started = Instant::now();
    let status = cmd.current_dir(root).status().map_err(|e| format!("{title}: cannot start: {e}"))?;
    eprintln!("    ({title}: {:.1}s)", started.elapsed().as_secs_f64());
    if status.success() { Ok(()) } else { Err(format!("{title} failed ({status})")) }
}

fn describe(cmd: &Command) -> String {
    let envs: Vec<String> = cmd
        .get_envs()
        .filter_map(|(k, v)| v.map(|v| format!("{}={}", k.to_string_lossy(), v.to_string_lossy())))
        .collect();
    let args: Vec<String> = cmd.get_args().map(|a| a.to_string_lossy().into_owned()).collect();
    format!(
        "{}{}{} {}",
        envs.join(" "),
        if envs.is_empty() { "" } else { " " },
        cmd.get_program().to_string_lossy(),
        args.join(" ")
    )
}

fn cargo(args: &[&str]) -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.args(args);
    if std::env::var_os("CI").is_some() {
        // A one-off build gains nothing from incremental state, which costs gigabytes.
        c.env("CARGO_INCREMENTAL", "0");
    }
    c
}

/// The facade's cargo features, each checked alone on top of `--no-default-features`.
const KLIFE_FEATURES: [&str; 5] = ["tls", "gzip", "snappy", "lz4", "zstd"];

/// Crates that only a feature may bring into `klife`'s build, with that feature
/// (`None`: no feature may): the TLS stack and the C zstd library.
const FEATURE_ONLY_CRATES: [(&str, Option<&str>); 4] =
    [("ring", Some("tls")), ("rustls", Some("tls")), ("aws-lc-sys", None), ("zstd-sys", Some("zstd"))];

/// The crates of `cargo tree --prefix none -f {p}` output that `feature` (or no
/// feature, for `None`) must not bring in.
fn unexpected_crates(tree: &str, feature: Option<&str>) -> Vec<String> {
    let mut found: Vec<String> = tree
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| {
            FEATURE_ONLY_CRATES.iter().any(|(krate, owner)| name == krate && (owner.is_none() || *owner != feature))
        })
        .map(str::to_owned)
        .collect();
    found.sort();
    found.dedup();
    found
}

/// `klife` without default features, and with each feature alone: the dependency
/// tree holds nothing another feature brings (no rustls or ring without `tls`, no C
/// zstd without `zstd`), and the crate checks.
fn feature_sets(root: &Path) -> Result<(), String> {
    let sets: Vec<Option<&str>> = std::iter::once(None).chain(KLIFE_FEATURES.map(Some)).collect();
    for feature in &sets {
        let mut args = vec!["-p", "klife", "--no-default-features", "--locked"];
        if let Some(f) = feature {
            args.extend(["--features", f]);
        }
        let label = feature.map_or_else(|| "no default features".to_owned(), |f| format!("only `{f}`"));
        let mut tree = cargo(&["tree", "-e", "normal", "--prefix", "none", "-f", "{p}"]);
        tree.args(&args);
        eprintln!("\n==> klife's dependencies with {label}\n    $ {}", describe(&tree));
        let out = tree.current_dir(root).output().map_err(|e| format!("cargo tree: cannot start: {e}"))?;
        if !out.status.success() {
            return Err(format!("cargo tree failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr)));
        }
        let unexpected = unexpected_crates(&String::from_utf8_lossy(&out.stdout), *feature);
        if !unexpected.is_empty() {
            return Err(format!("klife with {label} builds {}", unexpected.join(", ")));
        }
        let mut check = cargo(&["check"]);
        check.args(&args);
        run_step(root, &format!("klife checks with {label}"), &mut check)?;
    }
    Ok(())
}

/// Runs every check.
/// Says how much disk is free where cargo builds: the whole run needs about
/// `DISK_NEEDED_GIB`, and a full disk otherwise shows up as a C compiler's error.
fn report_free_disk(root: &Path) {
    let dir = crate::brokers::target_dir(root);
    let probe = if dir.exists() { dir } else { root.to_path_buf() };
    let Ok(out) = Command::new("df").arg("-Pk").arg(&probe).output() else { return };
    let text = String::from_utf8_lossy(&out.stdout);
    let free_kib = text.lines().nth(1).and_then(|l| l.split_whitespace().nth(3)).and_then(|v| v.parse::<u64>().ok());
    if let Some(kib) = free_kib {
        let gib = kib as f64 / (1024.0 * 1024.0);
        eprintln!("==> {gib:.1} GiB free at {}", probe.display());
        if gib < DISK_NEEDED_GIB {
            eprintln!("    warning: the run needs about {DISK_NEEDED_GIB} GiB; it may fail for lack of disk");
        }
    }
}

/// About what a run from a clean clone writes (build output, broker logs).
const DISK_NEEDED_GIB: f64 = 12.0;

pub fn run(root: &Path) -> Result<(), String> {
    let started = Instant::now();
    report_free_disk(root);
    run_step(root, "format", &mut cargo(&["fmt", "--all", "--check"]))?;
    run_step(
        root,
        "clippy",
        &mut cargo(&["clippy", "--workspace", "--all-targets", "--locked", "--", "-D", "warnings"]),
    )?;
    let mut doc = cargo(&["doc", "--workspace", "--no-deps", "--locked"]);
    doc.env("RUSTDOCFLAGS", "-Dwarnings");
    run_step(root, "docs", &mut doc)?;
    feature_sets(root)?;

    let schemas = crate::default_schemas_dir(root);
    if !schemas.is_dir() {
        return Err(format!(
            "the generated-code check needs Kafka's message schemas at {}, beside the repository",
            schemas.display()
        ));
    }
    eprintln!("\n==> generated code is current");
    crate::codegen::run(root, &schemas, true)?;

    {
        // Stopped when `brokers` goes out of scope, whatever happens to the tests.
        let brokers = crate::brokers::start(root)?;
        // Every target but the benchmarks (whose harness takes no test filter), with
        // the suite that stops Kafka's nodes left out: it runs alone, after the others.
        let mut tests = cargo(&[
            "test",
            "--workspace",
            "--lib",
            "--bins",
            "--tests",
            "--examples",
            "--locked",
            "--no-fail-fast",
            "--",
            "--skip",
            FAULTS_ON_KAFKA,
        ]);
        for (k, v) in &brokers.env {
            tests.env(k, v);
        }
        let main = run_counted(
            root,
            "tests (against Apache Kafka, Tansu, the librdkafka mock cluster and klife-testkit)",
            &mut tests,
        );
        // klife-chaos's fixed seeds on Kafka stop its nodes too: named `kafka_faults::…`,
        // they are left out above and run here, alone, after conformance's suite.
        let mut faults = cargo(&[
            "test",
            "-p",
            "klife-conformance",
            "-p",
            "klife-chaos",
            "--test",
            FAULTS_ON_KAFKA,
            "--test",
            "fixed_seeds",
            "--locked",
        ]);
        faults.args(["--", "--test-threads", "1", FAULTS_ON_KAFKA]);
        for (k, v) in &brokers.env {
            faults.env(k, v);
        }
        let faults = run_counted(root, "faults and cluster-wide changes on Apache Kafka, alone", &mut faults);
        let mut counts = main?;
        counts.add(faults?);
        eprintln!("\n{}", counts.summary());
    }
    run_step(root, "benchmarks built and run once", &mut cargo(&["test", "--workspace", "--benches", "--locked"]))?;
    run_step(root, "doc tests", &mut cargo(&["test", "--workspace", "--doc", "--locked"]))?;
    crate::fuzz::smoke(root)?;
    eprintln!("\nall checks passed in {:.0}s", started.elapsed().as_secs_f64());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::unexpected_crates;

    const TREE: &str = "klife v0.1.0 (/k/crates/klife)\nring v0.17.14\nrustls v0.23.46\nrustls-pki-types v1.15.1\n\
                        zstd-sys v2.1.2+zstd.1.5.7\nring v0.17.14 (*)\n";

    #[test]
    fn a_crate_is_unexpected_unless_its_feature_is_on() {
        assert_eq!(unexpected_crates(TREE, None), ["ring", "rustls", "zstd-sys"]);
        assert_eq!(unexpected_crates(TREE, Some("tls")), ["zstd-sys"]);
        assert_eq!(unexpected_crates(TREE, Some("zstd")), ["ring", "rustls"]);
        assert_eq!(unexpected_crates("aws-lc-sys v0.30.0\n", Some("tls")), ["aws-lc-sys"]);
        assert!(unexpected_crates("klife v0.1.0\nbytes v1.10.0\n", None).is_empty());
    }
}
