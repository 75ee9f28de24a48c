//! `group-consume` against the program's own mock cluster: a member handles every record,
//! leaves on EOF after revoking (and committing) its partitions, and the next member of the
//! group starts where it left off. Both group protocols.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, channel};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_klife-rdkafka-mock");

/// The longest a wait for a line may take before the test fails as hung.
const HANG_GUARD: Duration = Duration::from_secs(120);

/// A child process whose stdout lines arrive on a channel; killed on drop.
struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
}

impl Proc {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(BIN)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the program");
        let stdin = child.stdin.take();
        let stdout = BufReader::new(child.stdout.take().expect("stdout"));
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in stdout.lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, stdin, lines }
    }

    /// The next line; fails when none comes within the hang guard.
    fn line(&self, waiting_for: &str) -> String {
        self.lines.recv_timeout(HANG_GUARD).unwrap_or_else(|e| panic!("no line while waiting for {waiting_for}: {e}"))
    }

    /// Lines until one contains `needle`, which is returned last.
    fn until(&self, needle: &str) -> Vec<String> {
        let mut out = Vec::new();
        loop {
            let line = self.line(needle);
            let done = line.contains(needle);
            out.push(line);
            if done {
                return out;
            }
        }
    }

    fn cmd(&mut self, line: &str) -> String {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write command");
        stdin.flush().expect("flush command");
        self.line(line)
    }

    /// Closes stdin; the lines until `closed`, and the exit status.
    fn stop(mut self) -> (Vec<String>, std::process::ExitStatus) {
        drop(self.stdin.take());
        let lines = self.until(r#""event":"closed""#);
        (lines, self.child.wait().expect("wait"))
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn produce(bootstrap: &str, partition: &str, count: &str) {
    let out = Command::new(BIN)
        .args(["produce", "--bootstrap", bootstrap, "--topic", "t", "--partition", partition, "--count", count])
        .output()
        .expect("run produce");
    assert!(out.status.success(), "produce: {}", String::from_utf8_lossy(&out.stderr));
}

fn records(lines: &[String]) -> Vec<&String> {
    lines.iter().filter(|l| l.contains(r#""event":"record""#)).collect()
}

fn hand_over(protocol: &str, extra: &[&str]) {
    let mut cluster = Proc::start(&["cluster", "--brokers", "1", "--topic", "t:3:1"]);
    let bootstrap = cluster.line("BOOTSTRAP").strip_prefix("BOOTSTRAP ").expect("BOOTSTRAP line").to_owned();
    assert_eq!(cluster.cmd("group-initial-rebalance-delay 0"), "OK");
    for p in ["0", "1", "2"] {
        produce(&bootstrap, p, "10");
    }
    let member = |name: &str| {
        let mut args = vec!["group-consume", "--bootstrap", &bootstrap, "--topic", "t", "--group", name];
        args.extend(["--protocol", protocol]);
        args.extend(extra);
        Proc::start(&args)
    };

    // The first member takes every partition and handles (and commits) every record.
    let a = member("g");
    let first = a.line("the assignment");
    assert!(first.starts_with(r#"{"event":"assigned","partitions":[0,1,2],"at_us":"#), "{first}");
    let mut seen = Vec::new();
    while seen.len() < 30 {
        let line = a.line("30 records");
        assert!(line.starts_with(r#"{"event":"record","partition":"#), "{line}");
        seen.push(line);
    }
    for p in 0..3 {
        for o in 0..10 {
            let want = format!(r#"{{"event":"record","partition":{p},"offset":{o},"at_us":"#);
            assert!(seen.iter().any(|l| l.starts_with(&want)), "no record {p}@{o} in {seen:?}");
        }
    }
    let (rest, status) = a.stop();
    assert!(status.success(), "{status}");
    assert!(rest.iter().any(|l| l.starts_with(r#"{"event":"revoked","partitions":[0,1,2],"#)), "{rest:?}");
    assert!(records(&rest).is_empty(), "{rest:?}");

    // The next member of the group starts after the commits: only the new record.
    let b = member("g");
    let assigned = b.until(r#""event":"assigned""#);
    assert!(assigned.last().is_some_and(|l| l.contains(r#""partitions":[0,1,2]"#)), "{assigned:?}");
    produce(&bootstrap, "1", "1");
    let got = b.until(r#""event":"record""#);
    assert!(
        got.last().is_some_and(|l| l.starts_with(r#"{"event":"record","partition":1,"offset":10,"#)),
        "the second member got a record committed before: {got:?}"
    );
    let (rest, status) = b.stop();
    assert!(status.success(), "{status}");
    assert!(records(&rest).is_empty(), "{rest:?}");
}

/// The mock cluster receives the first member's LeaveGroup but the second member's join
/// still waits for the first one's session timeout (librdkafka's default: 45 s), hence a
/// shorter one.
#[test]
fn classic_members_hand_over_at_the_commits() {
    hand_over("classic", &["--set", "session.timeout.ms=6000"]);
}

#[test]
fn kip848_members_hand_over_at_the_commits() {
    hand_over("consumer", &[]);
}
