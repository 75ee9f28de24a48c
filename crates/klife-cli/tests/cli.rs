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

    // The same cluster through a configuration file, and a file with a mistake.
    let dir = std::env::temp_dir().join(unique("klife-cli-config"));
    std::fs::create_dir_all(&dir).unwrap();
    let list: Vec<String> = b.split(',').map(|a| format!("{a:?}")).collect();
    let list = list.join(", ");
    let good = dir.join("klife.toml");
    std::fs::write(&good, format!("[connection]\nbootstrap = [{list}]\nclient_id = \"from-file\"\n")).unwrap();
    let out = klife(&["--config", good.to_str().unwrap(), "consume", "-t", "orders", "--format", "value"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "one\ntwo\n");
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, format!("[connection]\nbootstrap = [{list}]\nrequest_timeout = 30\n")).unwrap();
    let out = klife(&["topics", "list", "--config", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("bad.toml") && err.contains("connection.request_timeout"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();

    let out = klife(&["topics", "-b", b, "delete", "orders"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = klife(&["consume", "-b", b, "-t", "orders"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("does not exist"), "{}", stderr(&out));
}

/// A name no other run uses.
fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// Runs `klife groups ... --format json` and parses what it printed.
fn groups_json(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["groups"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--format", "json"]);
    let out = klife(&all);
    assert!(out.status.success(), "klife {all:?}: {}", stderr(&out));
    let text = stdout(&out);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// Polls `check` (every 100 ms) until it holds; panics as hung after two minutes.
fn until(what: &str, mut check: impl FnMut() -> bool) {
    for _ in 0..1200 {
        if check() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    panic!("hung waiting for {what}");
}

/// `klife consume --group` and `klife groups ...` on the cluster at `b`: a member joins,
/// prints and commits; the group is described, its lag read, its offsets reset (dry
/// run, then written) and the group deleted; bad inputs fail with one line and a
/// non-zero exit code.
fn groups_commands(b: &str) {
    let topic = unique("cli-groups");
    let group = unique("cli-group");
    let out = klife(&["topics", "-b", b, "create", &topic, "--partitions", "3"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for p in ["0", "1", "2"] {
        let values: Vec<String> = (0..10).map(|i| format!("{p}-{i}")).collect();
        let mut args = vec!["produce", "-b", b, "-t", topic.as_str(), "-p", p];
        args.extend(values.iter().map(String::as_str));
        let out = klife(&args);
        assert!(out.status.success(), "{}", stderr(&out));
    }

    // A member prints 5 records, commits them (half of a partition's batch) and leaves.
    let out = klife(&["consume", "-b", b, "-t", &topic, "--group", &group, "--count", "5", "--format", "value"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let printed: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
    assert_eq!(printed.len(), 5, "{printed:?}");
    let partition = &printed[0][..1];
    assert_eq!(printed, (0..5).map(|i| format!("{partition}-{i}")).collect::<Vec<_>>());
    let lag = groups_json(&["-b", b, "lag", &group]);
    assert_eq!(lag["total_lag"], 5, "{lag}");
    assert_eq!(lag["partitions"][0]["committed"], 5, "{lag}");

    // A member that follows until Ctrl-C.
    let mut member = Command::new(env!("CARGO_BIN_EXE_klife"))
        .args(["consume", "-b", b, "-t", &topic, "--group", &group, "--format", "value"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    until("the member to own every partition", || {
        let d = groups_json(&["-b", b, "describe", &group]);
        d["members"]
            .as_array()
            .is_some_and(|m| m.len() == 1 && m[0]["assignment"].as_array().is_some_and(|a| a.len() == 3))
    });
    until("the member to commit everything", || groups_json(&["-b", b, "lag", &group])["total_lag"] == 0);

    let out = klife(&["groups", "-b", b, "describe", &group]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], format!("group        {group}"), "{text}");
    assert!(lines[2] == "state        Stable", "{text}");
    assert!(lines.contains(&"members      1"), "{text}");
    let header = lines.iter().position(|l| l.starts_with("MEMBER-ID")).unwrap_or_else(|| panic!("{text}"));
    let cols: Vec<&str> = lines[header].split_whitespace().collect();
    assert_eq!(cols, ["MEMBER-ID", "CLIENT-ID", "HOST", "INSTANCE-ID", "EPOCH", "PARTITIONS"], "{text}");
    let row: Vec<&str> = lines[header + 1].split_whitespace().collect();
    assert_eq!(row[1], "klife-cli", "{text}");
    assert!(row[2].contains("127.0.0.1"), "{text}");
    assert_eq!(row[3], "-", "{text}");
    assert_eq!(row[5], format!("{topic}:0,1,2"), "{text}");

    let out = klife(&["groups", "-b", b, "lag", &group]);
    let text = stdout(&out);
    assert!(text.starts_with("TOPIC"), "{text}");
    assert!(text.contains("total lag 0 over 3 partitions"), "{text}");

    let listed = groups_json(&["-b", b, "list"]);
    let ours =
        listed.as_array().unwrap().iter().find(|g| g["group"] == group.as_str()).unwrap_or_else(|| panic!("{listed}"));
    assert_eq!(ours["state"], "Stable", "{ours}");

    // Offsets of an active group are not moved; nor is it deleted.
    let out = klife(&["groups", "-b", b, "reset-offsets", &group, "--to", "earliest", "--all-topics"]);
    assert_eq!(out.status.code(), Some(1), "{}", stdout(&out));
    assert!(stderr(&out).contains("stop its consumers first"), "{}", stderr(&out));
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    let out = klife(&["groups", "-b", b, "delete", &group]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("has active members"), "{}", stderr(&out));

    // Ctrl-C: the member leaves cleanly, having printed the 25 records left.
    let status = Command::new("kill").args(["-INT", &member.id().to_string()]).status().unwrap();
    assert!(status.success());
    let out = {
        let status = member.wait().unwrap();
        let mut printed = String::new();
        std::io::Read::read_to_string(&mut member.stdout.take().unwrap(), &mut printed).unwrap();
        let mut errors = String::new();
        std::io::Read::read_to_string(&mut member.stderr.take().unwrap(), &mut errors).unwrap();
        assert!(status.success(), "{errors}");
        assert!(errors.contains("leaving group"), "{errors}");
        printed
    };
    let mut printed: Vec<&str> = out.lines().collect();
    printed.sort_unstable();
    assert_eq!(printed.len(), 25, "{out}");

    // Dry run, then execute.
    let out = klife(&["groups", "-b", b, "reset-offsets", &group, "--to", "shift:-4", "--topic", &topic]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("dry run: nothing written"), "{}", stdout(&out));
    assert_eq!(groups_json(&["-b", b, "lag", &group])["total_lag"], 0);
    let plan = groups_json(&["-b", b, "reset-offsets", &group, "--to", "shift:-4", "--topic", &topic, "--execute"]);
    assert_eq!(plan["executed"], true);
    assert_eq!(plan["partitions"].as_array().unwrap().len(), 3);
    assert_eq!(groups_json(&["-b", b, "lag", &group])["total_lag"], 12);

    // Bad inputs: one line, non-zero.
    let out = klife(&["groups", "-b", b, "reset-offsets", &group, "--to", "sideways", "--topic", &topic]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("expected earliest, latest"), "{}", stderr(&out));
    let out = klife(&["groups", "-b", b, "reset-offsets", &group, "--to", "latest"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("needs --topic, --partition or --all-topics"), "{}", stderr(&out));
    let missing = unique("cli-missing");
    for args in [vec!["describe", missing.as_str()], vec!["lag", missing.as_str()], vec!["delete", missing.as_str()]] {
        let mut all = vec!["groups", "-b", b];
        all.extend(args);
        let out = klife(&all);
        assert_eq!(out.status.code(), Some(1), "{all:?}");
        assert_eq!(stderr(&out).trim(), format!("klife: error: group {missing:?} does not exist"), "{all:?}");
    }

    // --stats prints what klife recorded.
    let out = klife(&["groups", "-b", b, "delete", &group, "--stats"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), format!("deleted group {group}"));
    assert!(
        stderr(&out).contains("klife: stats") && stderr(&out).contains("klife_requests_total{api=DeleteGroups"),
        "{}",
        stderr(&out)
    );
    let out = klife(&["groups", "-b", b, "describe", &group]);
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn group_commands_work_against_a_served_cluster() {
    let serve = Serve::start();
    groups_commands(&serve.1);
}

#[test]
fn group_commands_work_against_apache_kafka() {
    let kafka = std::env::var("KLIFE_TEST_KAFKA")
        .expect("KLIFE_TEST_KAFKA names the Apache Kafka cluster (`cargo xtask test` starts one)");
    groups_commands(kafka.split(',').next().unwrap());
}

#[test]
fn the_demo_runs_and_verifies_on_apache_kafka() {
    let kafka = std::env::var("KLIFE_TEST_KAFKA")
        .expect("KLIFE_TEST_KAFKA names the Apache Kafka cluster (`cargo xtask test` starts one)");
    let out = klife(&["demo", "--bootstrap", &kafka, "--records", "20000", "--partitions", "3", "--json"]);
    assert!(out.status.success(), "demo failed: {}", stderr(&out));
    let line = stdout(&out);
    let report: serde_json::Value = serde_json::from_str(line.trim()).unwrap_or_else(|e| panic!("{e}: {line}"));
    assert_eq!(report["records"], 20000);
    assert_eq!(report["verified"], true);
    assert_eq!(report["group_members"], 3);
    assert!(report["rebalance_ms"].is_u64(), "{report}");
    assert!(!report["cluster"].as_str().unwrap().starts_with("embedded"), "{report}");
}
