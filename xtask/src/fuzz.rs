//! `cargo xtask fuzz`: builds the libFuzzer targets in `fuzz/` (no sanitizer, so a
//! stable toolchain suffices) and runs them for a bounded time.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::test::run_step;

/// Seconds each target runs in `cargo xtask test`.
const SMOKE_SECONDS: u64 = 10;

/// The instrumentation `cargo fuzz` applies, minus sanitizers.
const RUSTFLAGS: &str = "-Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks";

fn targets(root: &Path) -> Result<Vec<String>, String> {
    let dir = root.join("fuzz/fuzz_targets");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_string_lossy().strip_suffix(".rs").map(str::to_owned))
        .collect();
    names.sort();
    Ok(names)
}

/// The host's target triple. Building for an explicit `--target` keeps the
/// instrumentation flags away from build scripts, which are not linked with libFuzzer.
fn host_triple() -> Result<String, String> {
    let out = Command::new("rustc").arg("-vV").output().map_err(|e| format!("cannot run rustc: {e}"))?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("host: ").map(str::to_owned))
        .ok_or_else(|| "rustc -vV did not name the host triple".to_owned())
}

fn build(root: &Path) -> Result<PathBuf, String> {
    let triple = host_triple()?;
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.args(["build", "--release", "--manifest-path", "fuzz/Cargo.toml", "--bins", "--target", &triple])
        .env("RUSTFLAGS", RUSTFLAGS);
    run_step(root, "build fuzz targets", &mut c)?;
    // Cargo builds into CARGO_TARGET_DIR when it is set, else beside the fuzz manifest.
    let target = match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => crate::brokers::target_dir(root),
        _ => root.join("fuzz/target"),
    };
    Ok(target.join(triple).join("release"))
}

fn run_target(root: &Path, bin_dir: &Path, name: &str, seconds: u64) -> Result<(), String> {
    let corpus = root.join("fuzz/corpus").join(name);
    std::fs::create_dir_all(&corpus).map_err(|e| format!("{}: {e}", corpus.display()))?;
    let artifacts = root.join("fuzz/artifacts").join(name);
    std::fs::create_dir_all(&artifacts).map_err(|e| format!("{}: {e}", artifacts.display()))?;
    let mut c = Command::new(bin_dir.join(name));
    c.arg(format!("-max_total_time={seconds}"))
        .arg(format!("-artifact_prefix={}/", artifacts.display()))
        .arg("-print_final_stats=1")
        .arg(&corpus);
    let seeds = root.join("fuzz/seeds").join(name);
    if seeds.is_dir() {
        c.arg(seeds);
    }
    run_step(root, &format!("fuzz {name} for {seconds}s"), &mut c)
}

/// The short run inside `cargo xtask test`.
pub fn smoke(root: &Path) -> Result<(), String> {
    let bin_dir = build(root)?;
    for t in targets(root)? {
        run_target(root, &bin_dir, &t, SMOKE_SECONDS)?;
    }
    Ok(())
}

/// `cargo xtask fuzz [TARGET] [--seconds N]`.
pub fn run_cli(root: &Path, args: &[String]) -> Result<(), String> {
    let mut seconds = 60;
    let mut only = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => {
                seconds = it.next().and_then(|s| s.parse().ok()).ok_or("--seconds needs a whole number")?;
            }
            t if !t.starts_with('-') => only = Some(t.to_owned()),
            other => return Err(format!("fuzz: unknown argument {other:?}")),
        }
    }
    let bin_dir = build(root)?;
    for t in targets(root)? {
        if only.as_ref().is_none_or(|o| *o == t) {
            run_target(root, &bin_dir, &t, seconds)?;
        }
    }
    Ok(())
}
