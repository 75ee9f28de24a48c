//! Helpers for klife's suites against brokers it did not write.
//!
//! `cargo xtask test` starts a 3-node Apache Kafka cluster, Tansu and a 3-broker
//! librdkafka mock cluster and passes their addresses in `KLIFE_TEST_KAFKA` (and the
//! `KLIFE_TEST_KAFKA_*` variables of its TLS and SASL listeners), `KLIFE_TEST_TANSU` and
//! `KLIFE_TEST_RDKAFKA_MOCK`, and the mock program's path in `KLIFE_RDKAFKA_MOCK_BIN`
//! (tests that inject faults start a private mock cluster of their own). Without these
//! variables the suites fail: they are never skipped silently. klife-testkit's fake cluster needs no variable: every suite also
//! runs against one in-process 3-broker cluster, started on first use.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

pub mod exactly_once;
pub mod groups;
pub mod kafka;
pub mod peer;
pub mod raw;
pub mod scripted_fetch;
pub mod server;
pub mod verify;

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use klife_testkit::FakeCluster;

/// A broker the suites run against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broker {
    /// Tansu 0.6, single broker.
    Tansu,
    /// librdkafka 2.12.1's mock cluster, 3 brokers.
    RdkafkaMock,
    /// klife-testkit's fake cluster, 3 brokers, in process (shared by the tests of one
    /// test binary).
    Testkit,
    /// Apache Kafka, the reference: the 3-node cluster `cargo xtask test` starts (or
    /// any cluster named in `KLIFE_TEST_KAFKA`, such as `compose/`'s).
    Kafka,
}

/// The fake cluster the [`Broker::Testkit`] cases share. It runs on a runtime of its
/// own, on a thread that lives as long as the test binary: each `#[tokio::test]` has its
/// own runtime, which ends with the test.
pub fn shared_testkit() -> &'static FakeCluster {
    static CLUSTER: OnceLock<FakeCluster> = OnceLock::new();
    CLUSTER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("klife-testkit".into())
            .spawn(move || {
                let runtime =
                    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
                runtime.block_on(async move {
                    let cluster = FakeCluster::builder()
                        .brokers(3)
                        .cluster_id("klife-conformance")
                        // As the test Kafka cluster tells KIP-848 members.
                        .consumer_heartbeat_interval(Duration::from_secs(1))
                        .auto_create_topics(true, 4)
                        .start()
                        .await
                        .unwrap();
                    tx.send(cluster).unwrap();
                    std::future::pending::<()>().await;
                });
            })
            .unwrap();
        rx.recv().unwrap()
    })
}

pub(crate) fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: the broker suites run through `cargo xtask test`, which starts the brokers")
    })
}

impl Broker {
    /// Every broker, for suites that run against all of them.
    pub const ALL: [Broker; 4] = [Broker::Kafka, Broker::Tansu, Broker::RdkafkaMock, Broker::Testkit];

    /// The bootstrap list.
    pub fn bootstrap(self) -> String {
        match self {
            Broker::Tansu => env("KLIFE_TEST_TANSU"),
            Broker::RdkafkaMock => env("KLIFE_TEST_RDKAFKA_MOCK"),
            Broker::Testkit => shared_testkit().bootstrap(),
            Broker::Kafka => env("KLIFE_TEST_KAFKA"),
        }
    }

    /// The bootstrap addresses, split.
    pub fn addresses(self) -> Vec<String> {
        self.bootstrap().split(',').map(str::to_owned).collect()
    }

    /// Whether the broker has CreateTopics (the mock cluster does not: it creates
    /// topics with 4 partitions when metadata asks for them).
    pub fn has_create_topics(self) -> bool {
        matches!(self, Broker::Tansu | Broker::Testkit | Broker::Kafka)
    }

    /// A client with test-friendly timeouts.
    pub async fn client(self) -> klife::Client {
        klife::Client::builder()
            .bootstrap_servers(self.addresses())
            .request_timeout(Duration::from_secs(10))
            .allow_auto_topic_creation(self == Broker::RdkafkaMock)
            .build()
            .await
            .unwrap_or_else(|e| panic!("cannot connect to {self:?} at {}: {e}", self.bootstrap()))
    }

    /// Creates a topic with `partitions` partitions (CreateTopics where the broker has
    /// it; otherwise through auto-creation, which gives 4 partitions on the mock
    /// cluster, so ask for 4 there).
    pub async fn create_topic(self, client: &klife::Client, name: &str, partitions: i32) {
        if self.has_create_topics() {
            client.create_topic(name, partitions).await.unwrap_or_else(|e| panic!("create topic {name}: {e}"));
        } else {
            assert_eq!(partitions, 4, "the mock cluster auto-creates topics with 4 partitions");
        }
        self.await_topic(client, name, partitions).await;
    }

    /// Waits until the client's metadata has the topic with `partitions` partitions,
    /// each with a leader, and every leader answers for its partition (Kafka's brokers
    /// learn of a new topic from the controller a little after it is created: until
    /// then a leader answers NOT_LEADER_OR_FOLLOWER).
    pub async fn await_topic(self, client: &klife::Client, name: &str, partitions: i32) {
        for _ in 0..300 {
            let m = client.cluster().add_topics(&[name]).await.unwrap();
            let led = m.topic(name).is_some_and(|t| {
                t.partitions.len() == partitions as usize && t.partitions.iter().all(|p| p.leader >= 0)
            });
            if led {
                let queries = (0..partitions).map(|p| (klife::TopicPartition::new(name, p), klife::OffsetSpec::Latest));
                let answered = client.list_offsets(queries).await.is_ok_and(|a| a.iter().all(|a| a.result.is_ok()));
                if answered {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("topic {name} did not appear with {partitions} partitions and leaders that answer for them");
    }
}

/// Instantiates each listed `async fn case(broker: Broker)` as one test per broker
/// named in the brackets, `test_name: BrokerVariant`:
/// `against_brokers!([kafka: Kafka, testkit: Testkit] case_a, case_b)` makes
/// `case_a::kafka`, `case_a::testkit`, `case_b::kafka` and `case_b::testkit`.
#[macro_export]
macro_rules! against_brokers {
    ($brokers:tt $($case:ident),* $(,)?) => {
        $($crate::against_brokers!(@case $case $brokers);)*
    };
    (@case $case:ident [$($test:ident: $broker:ident),+ $(,)?]) => {
        mod $case {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$case($crate::Broker::$broker).await;
                }
            )+
        }
    };
}

/// Instantiates each listed `async fn case(broker: Broker)` as one test per broker:
/// `case::kafka`, `case::tansu`, `case::rdkafka_mock` and `case::testkit`.
#[macro_export]
macro_rules! against_every_broker {
    ($($case:ident),* $(,)?) => {
        $crate::against_brokers!([tansu: Tansu, rdkafka_mock: RdkafkaMock, testkit: Testkit, kafka: Kafka] $($case),*);
    };
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A topic name no other test uses.
pub fn unique_topic(prefix: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    format!("{prefix}-{}-{n}-{nanos}", std::process::id())
}

/// The mock program built by `cargo xtask brokers`.
pub fn mock_bin() -> PathBuf {
    PathBuf::from(env("KLIFE_RDKAFKA_MOCK_BIN"))
}

/// A private librdkafka mock cluster, driven through its stdin commands; stopped on drop.
pub struct MockCluster {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    bootstrap: String,
}

impl MockCluster {
    /// Starts a cluster of `brokers` brokers with the given `name:partitions` topics.
    pub fn start(brokers: usize, topics: &[(&str, i32)]) -> MockCluster {
        let mut cmd = Command::new(mock_bin());
        cmd.args(["cluster", "--brokers", &brokers.to_string()]);
        for (t, p) in topics {
            cmd.args(["--topic", &format!("{t}:{p}")]);
        }
        let mut child = cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit()).spawn().unwrap();
        let stdin = child.stdin.take();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let bootstrap =
            line.trim().strip_prefix("BOOTSTRAP ").unwrap_or_else(|| panic!("mock said {line:?}")).to_owned();
        MockCluster { child, stdin, stdout, bootstrap }
    }

    /// The bootstrap list.
    pub fn bootstrap(&self) -> &str {
        &self.bootstrap
    }

    /// The bootstrap addresses, split.
    pub fn addresses(&self) -> Vec<String> {
        self.bootstrap.split(',').map(str::to_owned).collect()
    }

    /// Sends one command; panics unless the answer is `OK`. Returns what follows `OK`.
    pub fn command(&mut self, line: &str) -> String {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
        let mut answer = String::new();
        self.stdout.read_line(&mut answer).unwrap();
        let answer = answer.trim();
        assert!(answer.starts_with("OK"), "mock cluster answered {answer:?} to {line:?}");
        answer.trim_start_matches("OK").trim().to_owned()
    }
}

impl Drop for MockCluster {
    fn drop(&mut self) {
        drop(self.stdin.take());
        for _ in 0..100 {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
