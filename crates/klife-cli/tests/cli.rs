//! The `klife` binary end to end: the demo on its embedded fake cluster, and the other
//! commands against a `klife serve` cluster.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};

fn klife(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_klife")).args(args).output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn the_demo_produces_reads_back_and_verifies_every_record() {
    let out = klife(&["demo", "--records", "30000", "--partitions", "4", "--json"]);
    assert!(out.status.success(), "demo failed: {}", stderr(&out));
    let line = stdout(&out);
    let report: serde_json::Value = serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(report["records"], 30000);
    assert_eq!(report["partitions"], 4);
    assert_eq!(report["value_size"], 100);
    assert_eq!(report["verified"], true);
    assert!(report["cluster"].as_str().unwrap().starts_with("embedded fake cluster, 3 brokers"), "{report}");
    assert!(report["produce_records_per_s"].as_f64().unwrap() > 0.0);
    assert!(report["consume_records_per_s"].as_f64().unwrap() > 0.0);
    // The group phase: three members, one leaving half way, every record checked.
    assert_eq!(report["group_members"], 3);
    assert!(report["group_records_per_s"].as_f64().unwrap() > 0.0);
    assert!(report["rebalance_ms"].is_u64(), "{report}");

    let out = klife(&["demo", "--records", "2000", "--no-progress"]);
    assert!(out.status.success(), "demo failed: {}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("produced 2000 records of 100 B"), "{text}");
    assert!(text.contains("verified: all 2000 records read back once, in order"), "{text}");
    assert!(text.contains("verified: every record handled once by the group, in order in each partition"), "{text}");
}

#[test]
fn bad_arguments_and_unreachable_brokers_are_reported_with_exit_codes() {
    let out = klife(&["demo", "--value-size", "4"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("value-size"), "{}", stderr(&out));

    // A port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let bootstrap = format!("127.0.0.1:{port}");
    let out = klife(&["topics", "--bootstrap", &bootstrap, "--request-timeout", "2", "list"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("cannot connect to") && err.contains("klife serve"), "{err}");
}

/// A `klife serve` process, killed on drop.
struct Serve(Child, String);

impl Serve {
    fn start() -> Serve {
        let mut child = Command::new(env!("CARGO_BIN_EXE_klife"))
            .args(["serve", "--brokers", "2", "--topic", "events:3"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        let mut out = BufReader::new(child.stdout.take().unwrap());
        out.read_line(&mut line).unwrap();
        // Keep reading what it prints, so that it never writes into a closed pipe.
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
        let bootstrap =
            line.trim().strip_prefix("BOOTSTRAP ").unwrap_or_else(|| panic!("serve printed {line:?}")).to_owned();
        Serve(child, bootstrap)
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn topics_produce_and_consume_work_against_a_served_cluster() {
    let serve = Serve::start();
    let b = serve.1.as_str();

    let out = klife(&["topics", "-b", b, "create", "orders", "--partitions", "2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = klife(&["topics", "-b", b, "create", "orders", "--partitions", "2"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("TOPIC_ALREADY_EXISTS"), "{}", stderr(&out));
    let list = stdout(&klife(&["topics", "-b", b, "list"]));
    assert!(list.contains("orders\t2 partitions") && list.contains("events\t3 partitions"), "{list}");

    let out = klife(&["produce", "-b", b, "-t", "orders", "-p", "1", "-k", "k1", "-H", "h=v", "-H", "n", "one", "two"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).lines().collect::<Vec<_>>(), vec!["orders-1@0", "orders-1@1"]);

    let out = klife(&["consume", "-b", b, "-t", "orders"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).lines().collect::<Vec<_>>(),
        vec!["orders-1@0 key=k1 value=one headers=[h=v, n=null]", "orders-1@1 key=k1 value=two headers=[h=v, n=null]"]
    );
    let out = klife(&["consume", "-b", b, "-t", "orders", "-p", "1", "--from", "1", "--format", "value"]);
    assert_eq!(stdout(&out), "two\n");
    let out = klife(&["consume", "-b", b, "-t", "orders", "-p", "7"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no partition 7"), "{}", stderr(&out));

    let out = klife(&["topics", "-b", b, "delete", "orders"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = klife(&["consume", "-b", b, "-t", "orders"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
}
