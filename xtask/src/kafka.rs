//! Apache Kafka, the reference broker: installed from Maven's central repository and run
//! as a 3-node KRaft cluster on loopback for `cargo xtask test` and the benchmarks.
//!
//! - Install: `mvn dependency:copy-dependencies` on a small generated pom that names
//!   `org.apache.kafka:kafka_2.13:KAFKA_VERSION` and a log4j2 binding; the jars land in
//!   `.brokers/kafka-VERSION/libs` (Maven checks each download against the repository's
//!   checksums). Java 17+ and Maven are the prerequisites.
//! - Run: every node is broker and controller, with a PLAINTEXT, an SSL, a SASL_SSL
//!   (SCRAM-SHA-256 and -512) and a SASL_PLAINTEXT (PLAIN) listener on free loopback
//!   ports. Certificates are generated at start; data lives under
//!   `target/kafka-data/PID` and is deleted when the cluster stops; logs stay in
//!   `target/broker-logs`.
//! - Faults: a line protocol on a loopback port (`KLIFE_TEST_KAFKA_CONTROL`) lets the
//!   tests `kill N` (SIGKILL), `stop N` (SIGTERM, waited for) and `start N` a node; each
//!   command is answered `OK` once done, or `ERR reason`.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::test::run_step;

/// The Apache Kafka version the tests and benchmarks run (the same as `compose/`).
pub const KAFKA_VERSION: &str = "4.4.0";
const LOG4J_VERSION: &str = "2.25.3";
const SLF4J_VERSION: &str = "2.0.17";
/// Nodes in the test cluster.
pub const NODES: usize = 3;
/// The SASL user every SASL listener knows (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512).
pub const SASL_USER: &str = "klife";
/// That user's password.
pub const SASL_PASSWORD: &str = "klife-secret";
/// A fixed cluster id (22 characters of URL-safe base64, as Kafka wants).
const CLUSTER_ID: &str = "a2xpZmUtdGVzdC1jbHVzdA";
/// How long a node may take to start on a busy 2-core machine. A node started again
/// after SIGKILL recovers every log it holds first: with the ~1,400 logs of a full test
/// run that took 135 s on a loaded machine.
const START_TIMEOUT: Duration = Duration::from_secs(600);
/// What a node logs once it serves clients (after it is unfenced).
const STARTED: &str = "Kafka Server started";

const INSTALL_JAVA: &str = "Apache Kafka needs Java 17 or newer: install it (Debian: apt-get install openjdk-17-jdk-headless), or set JAVA_HOME";
const INSTALL_MAVEN: &str =
    "Apache Kafka is installed from Maven's central repository: install Maven (Debian: apt-get install maven)";

fn kafka_dir(root: &Path) -> PathBuf {
    root.join(".brokers").join(format!("kafka-{KAFKA_VERSION}"))
}

fn libs_dir(root: &Path) -> PathBuf {
    kafka_dir(root).join("libs")
}

/// Locks `m`, taking the data of a poisoned lock as it is.
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The `java` to run: `$JAVA_HOME/bin/java` when set, else the one on `PATH`; checked
/// to be Java 17 or newer.
fn java() -> Result<PathBuf, String> {
    let java = std::env::var_os("JAVA_HOME")
        .map(|home| PathBuf::from(home).join("bin/java"))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("java"));
    let out = Command::new(&java).arg("-version").output().map_err(|_| INSTALL_JAVA.to_owned())?;
    // `openjdk version "17.0.15" 2025-04-15` (or "1.8.0_392" for Java 8), on stderr.
    let text = String::from_utf8_lossy(&out.stderr);
    let major = text
        .split('"')
        .nth(1)
        .and_then(|v| {
            let mut parts = v.split('.');
            let first: u32 = parts.next()?.parse().ok()?;
            if first == 1 { parts.next()?.parse().ok() } else { Some(first) }
        })
        .ok_or_else(|| format!("{INSTALL_JAVA} (`{} -version` said {:?})", java.display(), text.trim()))?;
    if major < 17 {
        return Err(format!("{INSTALL_JAVA} (found Java {major} at {})", java.display()));
    }
    Ok(java)
}

fn pom() -> String {
    let dep = |g: &str, a: &str, v: &str| {
        format!(
            "    <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId><version>{v}</version></dependency>\n"
        )
    };
    format!(
        "<project xmlns=\"http://maven.apache.org/POM/4.0.0\">\n  <modelVersion>4.0.0</modelVersion>\n  \
         <groupId>rs.klife.test</groupId>\n  <artifactId>apache-kafka-broker</artifactId>\n  <version>{KAFKA_VERSION}</version>\n  \
         <packaging>pom</packaging>\n  <dependencies>\n{}{}{}{}  </dependencies>\n</project>\n",
        dep("org.apache.kafka", "kafka_2.13", KAFKA_VERSION),
        dep("org.slf4j", "slf4j-api", SLF4J_VERSION),
        dep("org.apache.logging.log4j", "log4j-slf4j2-impl", LOG4J_VERSION),
        dep("org.apache.logging.log4j", "log4j-core", LOG4J_VERSION),
    )
}

/// Installs Apache Kafka's jars under `.brokers/` unless a complete copy is there.
pub fn install(root: &Path) -> Result<(), String> {
    java()?;
    let libs = libs_dir(root);
    let marker = libs.join(".complete");
    let broker_jar = libs.join(format!("kafka_2.13-{KAFKA_VERSION}.jar"));
    if marker.is_file() && broker_jar.is_file() {
        eprintln!("    apache kafka {KAFKA_VERSION}: {}", libs.display());
        return Ok(());
    }
    Command::new("mvn").arg("-v").output().map_err(|_| INSTALL_MAVEN.to_owned())?;
    let dir = kafka_dir(root);
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let pom_path = dir.join("pom.xml");
    std::fs::write(&pom_path, pom()).map_err(|e| format!("{}: {e}", pom_path.display()))?;
    let tmp = dir.join("libs.tmp");
    let _ = std::fs::remove_dir_all(&tmp);
    let mut mvn = Command::new("mvn");
    mvn.args(["-B", "-q", "-Dstyle.color=never", "-f"])
        .arg(&pom_path)
        .arg("dependency:copy-dependencies")
        .arg(format!("-DoutputDirectory={}", tmp.display()))
        .arg("-DincludeScope=runtime");
    run_step(root, &format!("download Apache Kafka {KAFKA_VERSION} (Maven central)"), &mut mvn)?;
    if !tmp.join(format!("kafka_2.13-{KAFKA_VERSION}.jar")).is_file() {
        return Err(format!("Maven did not bring kafka_2.13-{KAFKA_VERSION}.jar into {}", tmp.display()));
    }
    let _ = std::fs::remove_dir_all(&libs);
    std::fs::rename(&tmp, &libs).map_err(|e| format!("{}: {e}", libs.display()))?;
    std::fs::write(&marker, KAFKA_VERSION).map_err(|e| format!("{}: {e}", marker.display()))?;
    eprintln!("    apache kafka {KAFKA_VERSION}: installed in {}", libs.display());
    Ok(())
}

fn classpath(root: &Path) -> Result<String, String> {
    let libs = libs_dir(root);
    let mut jars: Vec<String> = std::fs::read_dir(&libs)
        .map_err(|e| format!("{}: {e}", libs.display()))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jar"))
        .map(|p| p.display().to_string())
        .collect();
    jars.sort();
    Ok(jars.join(":"))
}

/// The listeners of a node, by name, in the order of [`Ports::LISTENERS`].
#[derive(Debug, Clone, Copy)]
struct Ports([u16; 5]);

impl Ports {
    const LISTENERS: [&'static str; 5] = ["PLAINTEXT", "SSL", "SASL_SSL", "SASL_PLAINTEXT", "CONTROLLER"];

    fn of(&self, listener: &str) -> u16 {
        let i = Self::LISTENERS.iter().position(|l| *l == listener).unwrap_or(0);
        self.0[i]
    }
}

/// `count` distinct free loopback ports (all held open until every one is found).
fn free_ports(count: usize) -> Result<Vec<u16>, String> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0").map_err(|e| format!("cannot find a free port: {e}")))
        .collect::<Result<Vec<_>, _>>()?;
    listeners.iter().map(|l| l.local_addr().map(|a| a.port()).map_err(|e| e.to_string())).collect()
}

fn node_properties(id: usize, ports: &[Ports], data: &Path) -> String {
    let me = ports[id - 1];
    let replicas = ports.len().min(3);
    let min_isr = replicas.min(2);
    let voters: Vec<String> =
        ports.iter().enumerate().map(|(i, p)| format!("{}@127.0.0.1:{}", i + 1, p.of("CONTROLLER"))).collect();
    let listeners: Vec<String> = Ports::LISTENERS.iter().map(|l| format!("{l}://127.0.0.1:{}", me.of(l))).collect();
    // The SSL listeners are advertised as `localhost`, the name in the certificate.
    let advertised: Vec<String> = Ports::LISTENERS[..4]
        .iter()
        .map(|l| {
            let host = if l.contains("SSL") { "localhost" } else { "127.0.0.1" };
            format!("{l}://{host}:{}", me.of(l))
        })
        .collect();
    let certs = data.join("certs");
    format!(
        "node.id={id}
process.roles=broker,controller
controller.quorum.voters={voters}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listeners={listeners}
advertised.listeners={advertised}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SSL:SSL,SASL_SSL:SASL_SSL,SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={logdir}
ssl.keystore.type=PEM
ssl.keystore.location={keystore}
ssl.truststore.type=PEM
ssl.truststore.location={ca}
ssl.client.auth=none
listener.name.sasl_ssl.sasl.enabled.mechanisms=SCRAM-SHA-256,SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_plaintext.sasl.enabled.mechanisms=PLAIN
listener.name.sasl_plaintext.plain.sasl.jaas.config=org.apache.kafka.common.security.plain.PlainLoginModule required user_{SASL_USER}=\"{SASL_PASSWORD}\";
group.coordinator.rebalance.protocols=classic,consumer
group.initial.rebalance.delay.ms=0
group.min.session.timeout.ms=1000
group.consumer.min.session.timeout.ms=1000
group.consumer.min.heartbeat.interval.ms=100
group.consumer.heartbeat.interval.ms=1000
offsets.topic.replication.factor={replicas}
offsets.topic.num.partitions=6
transaction.state.log.replication.factor={replicas}
transaction.state.log.min.isr={min_isr}
transaction.state.log.num.partitions=6
default.replication.factor={replicas}
min.insync.replicas={min_isr}
num.partitions=4
auto.create.topics.enable=true
unclean.leader.election.enable=false
log.retention.ms=-1
broker.heartbeat.interval.ms=500
broker.session.timeout.ms=3000
replica.lag.time.max.ms=10000
num.network.threads=2
num.io.threads=2
background.threads=2
num.replica.fetchers=1
log.cleaner.threads=1
num.recovery.threads.per.data.dir=2
",
        voters = voters.join(","),
        listeners = listeners.join(","),
        advertised = advertised.join(","),
        logdir = data.join(format!("node-{id}")).display(),
        keystore = certs.join("keystore.pem").display(),
        ca = certs.join("ca.pem").display(),
    )
}

const LOG4J2: &str = "Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: \"[%d] %p %m (%c)%n\"
  Loggers:
    Logger:
      - name: kafka.request.logger
        level: WARN
      - name: org.apache.kafka.common.config
        level: WARN
      - name: state.change.logger
        level: WARN
    Root:
      level: INFO
      AppenderRef:
        - ref: STDOUT
";

/// One node: how to start it, and the process when it runs.
struct Node {
    id: usize,
    config: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

/// What a node runs and where; shared by the control thread.
struct Launcher {
    java: PathBuf,
    classpath: String,
    log4j: PathBuf,
}

impl Launcher {
    fn java(&self) -> Command {
        let mut c = Command::new(&self.java);
        c.arg("-cp").arg(&self.classpath).arg(format!("-Dlog4j2.configurationFile={}", self.log4j.display()));
        c
    }

    fn format(&self, node: &Node) -> Result<Child, String> {
        let mut c = self.java();
        c.args(["-Xmx256m", "kafka.tools.StorageTool", "format", "-t", CLUSTER_ID, "-c"])
            .arg(&node.config)
            .args(["--add-scram", &format!("SCRAM-SHA-256=[name={SASL_USER},password={SASL_PASSWORD}]")])
            .args(["--add-scram", &format!("SCRAM-SHA-512=[name={SASL_USER},password={SASL_PASSWORD}]")]);
        let log = std::fs::File::create(node.log.with_extension("format.log")).map_err(|e| e.to_string())?;
        c.stdin(Stdio::null())
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot run Kafka's storage tool: {e}"))
    }

    /// Starts a node, its output appended to its log.
    fn start(&self, node: &mut Node) -> Result<(), String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log)
            .map_err(|e| format!("{}: {e}", node.log.display()))?;
        let mut c = self.java();
        c.args([
            "-Xms256m",
            "-Xmx1g",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-XX:+ExitOnOutOfMemoryError",
            "-Djava.awt.headless=true",
            "kafka.Kafka",
        ])
        .arg(&node.config)
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log);
        let child = c.spawn().map_err(|e| format!("cannot start Kafka node {}: {e}", node.id))?;
        crate::brokers::register_child(child.id());
        node.child = Some(child);
        Ok(())
    }
}

/// Removes the data directories under `parent` whose run (named by its process id) is
/// no longer alive.
fn remove_stale_runs(parent: &Path) {
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    for entry in entries.filter_map(Result::ok) {
        let alive = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
            .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn count_started(log: &Path) -> usize {
    std::fs::read_to_string(log).map_or(0, |s| s.matches(STARTED).count())
}

fn log_tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().filter(|l| l.contains("ERROR") || l.contains("Exception")).collect();
    let tail = &lines[lines.len().saturating_sub(5)..];
    if tail.is_empty() { String::new() } else { format!("; its last errors:\n      {}", tail.join("\n      ")) }
}

/// Waits until every node in `nodes` has logged that it started `after[i] + 1` times.
fn await_started(nodes: &mut [&mut Node], after: &[usize]) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        let mut all = true;
        for (node, before) in nodes.iter_mut().zip(after) {
            let exited = node.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                node.child = None;
                return Err(format!(
                    "Kafka node {} exited during start-up ({status}); log: {}{}",
                    node.id,
                    node.log.display(),
                    log_tail(&node.log)
                ));
            }
            all &= count_started(&node.log) > *before;
        }
        if all {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "Kafka did not start within {} s (logs: {})",
                START_TIMEOUT.as_secs(),
                nodes.iter().map(|n| n.log.display().to_string()).collect::<Vec<_>>().join(", ")
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn kill(node: &mut Node, graceful: bool) {
    if let Some(mut child) = node.child.take() {
        if graceful {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let deadline = Instant::now() + Duration::from_secs(60);
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// A running Apache Kafka cluster; dropping it stops the nodes and deletes their data.
pub struct KafkaCluster {
    nodes: Arc<Mutex<Vec<Node>>>,
    data: PathBuf,
    stop_control: Arc<AtomicBool>,
    control_port: u16,
    /// Environment variables that tell the tests where the cluster is.
    pub env: Vec<(String, String)>,
}

impl KafkaCluster {
    /// The PLAINTEXT bootstrap list.
    pub fn bootstrap(&self) -> String {
        self.env.iter().find(|(k, _)| k == "KLIFE_TEST_KAFKA").map(|(_, v)| v.clone()).unwrap_or_default()
    }

    /// The process ids of the running nodes.
    pub fn pids(&self) -> Vec<u32> {
        lock(&self.nodes).iter().filter_map(|n| n.child.as_ref().map(Child::id)).collect()
    }
}

impl Drop for KafkaCluster {
    fn drop(&mut self) {
        self.stop_control.store(true, Ordering::SeqCst);
        // Wakes the control thread out of `accept`.
        let _ = TcpStream::connect(("127.0.0.1", self.control_port));
        for node in lock(&self.nodes).iter_mut() {
            kill(node, false);
        }
        let _ = std::fs::remove_dir_all(&self.data);
        eprintln!("    apache kafka stopped, {} deleted", self.data.display());
    }
}

/// Starts the tests' 3-node cluster (installing Kafka first if needed) and waits until
/// every node serves clients. Fails, never skips, when a node cannot start.
pub fn start(root: &Path) -> Result<KafkaCluster, String> {
    start_cluster(root, NODES, "kafka")
}

/// Starts a cluster of `nodes` nodes (replication factor and minimum in-sync replicas
/// as far as 3 and 2 allow), its data in `target/NAME-data/PID` and its logs in
/// `target/broker-logs/NAME-N.log`.
pub fn start_cluster(root: &Path, nodes: usize, name: &str) -> Result<KafkaCluster, String> {
    install(root)?;
    // A directory per run (by process id), so that two runs on one checkout do not
    // delete each other's data; those of runs no longer alive are removed.
    let parent = root.join(format!("target/{name}-data"));
    remove_stale_runs(&parent);
    let data = parent.join(std::process::id().to_string());
    let launcher = Arc::new(Launcher { java: java()?, classpath: classpath(root)?, log4j: data.join("log4j2.yaml") });
    let _ = std::fs::remove_dir_all(&data);
    let certs_dir = data.join("certs");
    std::fs::create_dir_all(&certs_dir).map_err(|e| format!("{}: {e}", certs_dir.display()))?;
    crate::brokers::register_cleanup(data.clone());
    let logs = root.join("target/broker-logs");
    std::fs::create_dir_all(&logs).map_err(|e| format!("{}: {e}", logs.display()))?;
    std::fs::write(&launcher.log4j, LOG4J2).map_err(|e| e.to_string())?;

    let certs = klife_testkit::TestCertificates::localhost().map_err(|e| e.to_string())?;
    let ca = certs_dir.join("ca.pem");
    std::fs::write(&ca, certs.ca_pem()).map_err(|e| e.to_string())?;
    std::fs::write(certs_dir.join("keystore.pem"), format!("{}{}", certs.key_pem(), certs.cert_pem()))
        .map_err(|e| e.to_string())?;

    let all_ports = free_ports(nodes * Ports::LISTENERS.len())?;
    let ports: Vec<Ports> =
        all_ports.chunks(Ports::LISTENERS.len()).map(|c| Ports([c[0], c[1], c[2], c[3], c[4]])).collect();
    let mut members = Vec::new();
    for id in 1..=nodes {
        let config = data.join(format!("node-{id}.properties"));
        std::fs::write(&config, node_properties(id, &ports, &data)).map_err(|e| e.to_string())?;
        let log = logs.join(format!("{name}-{id}.log"));
        let _ = std::fs::remove_file(&log);
        members.push(Node { id, config, log, child: None });
    }
    let nodes = members;

    let started = Instant::now();
    let formats = nodes.iter().map(|n| launcher.format(n)).collect::<Result<Vec<_>, _>>()?;
    for (node, mut f) in nodes.iter().zip(formats) {
        let status = f.wait().map_err(|e| e.to_string())?;
        if !status.success() {
            let flog = node.log.with_extension("format.log");
            return Err(format!("formatting Kafka node {} failed ({status}); log: {}", node.id, flog.display()));
        }
    }
    let nodes = Arc::new(Mutex::new(nodes));
    let stop_control = Arc::new(AtomicBool::new(false));
    let control = TcpListener::bind("127.0.0.1:0").map_err(|e| format!("control port: {e}"))?;
    let control_port = control.local_addr().map_err(|e| e.to_string())?.port();
    let list = |listener: &str| {
        let host = if listener.contains("SSL") { "localhost" } else { "127.0.0.1" };
        ports.iter().map(|p| format!("{host}:{}", p.of(listener))).collect::<Vec<_>>().join(",")
    };
    let cluster = KafkaCluster {
        nodes: Arc::clone(&nodes),
        data: data.clone(),
        stop_control: Arc::clone(&stop_control),
        control_port,
        env: vec![
            ("KLIFE_TEST_KAFKA".into(), list("PLAINTEXT")),
            ("KLIFE_TEST_KAFKA_SSL".into(), list("SSL")),
            ("KLIFE_TEST_KAFKA_SASL_SSL".into(), list("SASL_SSL")),
            ("KLIFE_TEST_KAFKA_SASL_PLAINTEXT".into(), list("SASL_PLAINTEXT")),
            ("KLIFE_TEST_KAFKA_CA".into(), ca.display().to_string()),
            ("KLIFE_TEST_KAFKA_CONTROL".into(), format!("127.0.0.1:{control_port}")),
        ],
    };
    {
        let mut guard = lock(&nodes);
        for node in guard.iter_mut() {
            launcher.start(node)?;
        }
        let mut refs: Vec<&mut Node> = guard.iter_mut().collect();
        let before = vec![0; refs.len()];
        await_started(&mut refs, &before)?;
    }
    eprintln!(
        "    apache kafka {KAFKA_VERSION}: {} node(s) started in {:.1}s at {}",
        lock(&nodes).len(),
        started.elapsed().as_secs_f64(),
        cluster.bootstrap()
    );
    let thread_nodes = Arc::clone(&nodes);
    std::thread::Builder::new()
        .name("kafka-control".into())
        .spawn(move || serve_control(control, &thread_nodes, &launcher, &stop_control))
        .map_err(|e| e.to_string())?;
    Ok(cluster)
}

/// Answers fault commands (`kill N`, `stop N`, `start N`, `pids`) until the cluster stops.
fn serve_control(listener: TcpListener, nodes: &Mutex<Vec<Node>>, launcher: &Launcher, stop: &AtomicBool) {
    for stream in listener.incoming() {
        if stop.load(Ordering::SeqCst) {
            return;
        }
        let Ok(stream) = stream else { continue };
        let Ok(reader) = stream.try_clone() else { continue };
        let mut writer = stream;
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            let answer = control_command(line.trim(), nodes, launcher);
            let answer = match answer {
                Ok(text) => format!("OK{}{text}\n", if text.is_empty() { "" } else { " " }),
                Err(e) => format!("ERR {}\n", e.replace('\n', " ")),
            };
            if writer.write_all(answer.as_bytes()).is_err() {
                break;
            }
        }
    }
}

fn control_command(line: &str, nodes: &Mutex<Vec<Node>>, launcher: &Launcher) -> Result<String, String> {
    let mut words = line.split_whitespace();
    let verb = words.next().unwrap_or_default();
    if verb == "pids" {
        let pids: BTreeMap<usize, u32> =
            lock(nodes).iter().filter_map(|n| n.child.as_ref().map(|c| (n.id, c.id()))).collect();
        return Ok(pids.iter().map(|(n, p)| format!("{n}:{p}")).collect::<Vec<_>>().join(" "));
    }
    let id: usize = words.next().and_then(|w| w.parse().ok()).ok_or("expected a node id")?;
    let mut guard = lock(nodes);
    let node = guard.iter_mut().find(|n| n.id == id).ok_or_else(|| format!("no node {id}"))?;
    match verb {
        "kill" | "stop" => {
            if node.child.is_none() {
                return Err(format!("node {id} is not running"));
            }
            kill(node, verb == "stop");
            Ok(String::new())
        }
        "start" => {
            if node.child.is_some() {
                return Err(format!("node {id} is running"));
            }
            let before = count_started(&node.log);
            launcher.start(node)?;
            await_started(&mut [node], &[before])?;
            Ok(String::new())
        }
        other => Err(format!("unknown command {other:?} (kill N, stop N, start N, pids)")),
    }
}
