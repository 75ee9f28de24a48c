//! Runs the built program: a mock cluster driven over stdin, and a produce/consume round trip
//! through the librdkafka peers with every codec.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_klife-rdkafka-mock");

struct Cluster {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    bootstrap: String,
}

impl Cluster {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .arg("cluster")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the cluster");
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let mut first = String::new();
        stdout.read_line(&mut first).expect("read BOOTSTRAP");
        let bootstrap = first.strip_prefix("BOOTSTRAP ").expect("BOOTSTRAP line").trim().to_owned();
        Self { child, stdin, stdout, bootstrap }
    }

    fn cmd(&mut self, line: &str) -> String {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write command");
        stdin.flush().expect("flush command");
        let mut reply = String::new();
        self.stdout.read_line(&mut reply).expect("read reply");
        reply.trim_end().to_owned()
    }

    /// Closes stdin and returns the exit status.
    fn stop(mut self) -> std::process::ExitStatus {
        drop(self.stdin.take());
        self.child.wait().expect("wait for the cluster")
    }
}

fn run(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().expect("run the peer")
}

#[test]
fn cluster_commands_and_exit_on_eof() {
    let mut c = Cluster::start(&["--brokers", "3", "--topic", "t:4"]);
    assert_eq!(c.bootstrap.split(',').count(), 3);
    for (line, want) in [
        ("ping", "OK"),
        ("create-topic x 2 1", "OK"),
        ("create-topic x 2 1", "ERR TOPIC_ALREADY_EXISTS"),
        ("leader t 0 2", "OK"),
        ("leader t 0 9", "ERR BROKER_NOT_AVAILABLE"),
        ("broker-down 2", "OK"),
        ("broker-up 2", "OK"),
        ("rtt 1 5", "OK"),
        ("errors 0 6 6", "OK"),
        ("errors 68 UNKNOWN_MEMBER_ID", "OK"),
        ("clear-errors 0", "OK"),
        ("clear-errors 68", "OK"),
        ("broker-errors 1 3 0:10 _TRANSPORT:0", "OK"),
        ("broker-error-count 1 3", "OK 2"),
        ("broker-errors 9 3 0:10", "ERR _UNKNOWN_BROKER"),
        ("apiversion 99 0 1", "ERR _INVALID_ARG"),
        ("coordinator group g 3", "OK"),
        ("group-initial-rebalance-delay 100", "OK"),
        ("session-timeout 6000", "OK"),
        ("heartbeat-interval 500", "OK"),
        ("leader t 0", "ERR usage: leader TOPIC PARTITION BROKER_ID"),
        ("frobnicate", "ERR unknown command 'frobnicate'"),
        ("", "ERR empty command"),
    ] {
        assert_eq!(c.cmd(line), want, "command {line:?}");
    }
    assert_eq!(c.cmd("bootstrap"), format!("OK {}", c.bootstrap));
    assert!(c.stop().success());
}

#[test]
fn produce_and_consume_every_codec() {
    let mut c = Cluster::start(&["--brokers", "2", "--topic", "t:2"]);
    assert_eq!(c.cmd("leader t 1 2"), "OK");
    assert_eq!(c.cmd("start-request-tracking"), "OK");
    let bs = c.bootstrap.clone();
    let mut produced = Vec::new();
    for codec in ["none", "gzip", "snappy", "lz4", "zstd"] {
        let out = run(&[
            "produce",
            "--bootstrap",
            &bs,
            "--topic",
            "t",
            "--partition",
            "1",
            "--codec",
            codec,
            "--count",
            "10",
            "--keys",
            "--headers",
            "--timestamp-base",
            "1700000000000",
        ]);
        assert!(out.status.success(), "produce {codec}: {}", String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8(out.stdout).expect("utf-8");
        assert_eq!(text.lines().count(), 10, "produce {codec}: {text}");
        produced.extend(text.lines().map(str::to_owned));
    }
    let out = run(&["consume", "--bootstrap", &bs, "--topic", "t", "--partition", "1", "--count", "50"]);
    assert!(out.status.success(), "consume: {}", String::from_utf8_lossy(&out.stderr));
    let consumed: Vec<String> = String::from_utf8(out.stdout).expect("utf-8").lines().map(str::to_owned).collect();
    // The mock answers Produce with log_append_time 1234, so compare everything before the
    // timestamp.
    let strip = |l: &String| l.split(",\"timestamp\"").next().unwrap_or_default().to_owned();
    assert_eq!(consumed.iter().map(strip).collect::<Vec<_>>(), produced.iter().map(strip).collect::<Vec<_>>());
    assert!(consumed[0].contains(r#""timestamp":1700000000000,"timestamp_type":"create""#), "{}", consumed[0]);
    assert!(
        consumed[0]
            .contains(r#""headers":[["index","30"],["dup","6669727374"],["dup","7365636f6e64"],["empty",null]]"#)
    );

    let requests = c.cmd("get-requests");
    assert!(requests.split(' ').any(|r| r.starts_with("2:0:")), "no Produce to broker 2: {requests}");

    let out = run(&["consume", "--bootstrap", &bs, "--topic", "t", "--count", "51", "--timeout-ms", "1500"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("got 50 of 51"));
    assert!(c.stop().success());
}

#[test]
fn bench_modes_report_one_line() {
    let c = Cluster::start(&["--brokers", "1", "--topic", "b:1"]);
    let bs = c.bootstrap.clone();
    for args in [
        &[
            "bench-produce",
            "--bootstrap",
            &bs,
            "--topic",
            "b",
            "--count",
            "2000",
            "--value-size",
            "100",
            "--codec",
            "lz4",
        ][..],
        &["bench-consume", "--bootstrap", &bs, "--topic", "b", "--count", "2000"][..],
    ] {
        let out = run(args);
        assert!(out.status.success(), "{}: {}", args[0], String::from_utf8_lossy(&out.stderr));
        let text = String::from_utf8(out.stdout).expect("utf-8");
        assert!(text.starts_with(r#"{"records":2000,"bytes":200000,"elapsed_s":"#), "{}: {text}", args[0]);
        assert_eq!(text.lines().count(), 1);
    }
    assert!(c.stop().success());
}

#[test]
fn usage_errors_exit_2() {
    let out = run(&["produce", "--topic", "t"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--bootstrap is required"));
    assert_eq!(run(&["nope"]).status.code(), Some(2));
}
