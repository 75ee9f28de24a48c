//! `cargo xtask test`: every check CI runs, in order, stopping at the first failure.

use std::path::Path;
use std::process::Command;
use std::time::Instant;

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
    c
}

/// Runs every check.
pub fn run(root: &Path) -> Result<(), String> {
    let started = Instant::now();
    run_step(root, "format", &mut cargo(&["fmt", "--all", "--check"]))?;
    run_step(
        root,
        "clippy",
        &mut cargo(&["clippy", "--workspace", "--all-targets", "--locked", "--", "-D", "warnings"]),
    )?;
    let mut doc = cargo(&["doc", "--workspace", "--no-deps", "--locked"]);
    doc.env("RUSTDOCFLAGS", "-Dwarnings");
    run_step(root, "docs", &mut doc)?;

    let schemas = crate::default_schemas_dir(root);
    if schemas.is_dir() {
        eprintln!("\n==> generated code is current");
        crate::codegen::run(root, &schemas, true)?;
    } else {
        eprintln!(
            "\n==> generated code: NOT CHECKED, {} does not exist (it holds Kafka's message schemas)",
            schemas.display()
        );
    }

    {
        // Stopped when `brokers` goes out of scope, whatever happens to the tests.
        let brokers = crate::brokers::start(root)?;
        let mut tests = cargo(&["test", "--workspace", "--all-targets", "--locked"]);
        for (k, v) in &brokers.env {
            tests.env(k, v);
        }
        run_step(
            root,
            "tests (against Tansu, the librdkafka mock cluster and klife-testkit), benchmarks built and run once",
            &mut tests,
        )?;
    }
    run_step(root, "doc tests", &mut cargo(&["test", "--workspace", "--doc", "--locked"]))?;
    crate::fuzz::smoke(root)?;
    eprintln!("\nall checks passed in {:.0}s", started.elapsed().as_secs_f64());
    Ok(())
}
