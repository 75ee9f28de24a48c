//! The conformance suites against an `apache/kafka` container.

#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::path::Path;
use std::process::Command;

use testcontainers::core::{IntoContainerPort, WaitFor};
use testcontainers::runners::AsyncRunner;
use testcontainers::{GenericImage, ImageExt};

/// Apache Kafka's image, in the version `compose/` uses.
const IMAGE: (&str, &str) = ("apache/kafka", "4.1.0");

/// Where a Docker engine would answer, if any: `DOCKER_HOST`, or the default socket.
fn docker_engine() -> Option<String> {
    if let Ok(host) = std::env::var("DOCKER_HOST") {
        return Some(host);
    }
    let socket = Path::new("/var/run/docker.sock");
    #[cfg(unix)]
    {
        if std::os::unix::net::UnixStream::connect(socket).is_ok() {
            return Some(format!("unix://{}", socket.display()));
        }
    }
    None
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test]
async fn conformance_suites_pass_against_apache_kafka() {
    let Some(engine) = docker_engine() else {
        println!(
            "NOT RUN: no Docker engine is reachable (DOCKER_HOST is unset and /var/run/docker.sock does not answer), \
             so the conformance suites did not run against {}:{}. See compose/README.md to run them against Apache \
             Kafka by hand.",
            IMAGE.0, IMAGE.1
        );
        return;
    };
    println!("Docker engine at {engine}: starting {}:{}", IMAGE.0, IMAGE.1);
    let port = free_port();
    let kafka = GenericImage::new(IMAGE.0, IMAGE.1)
        .with_exposed_port(9092.tcp())
        .with_wait_for(WaitFor::message_on_stdout("Kafka Server started"))
        .with_mapped_port(port, 9092.tcp())
        .with_env_var("KAFKA_NODE_ID", "1")
        .with_env_var("KAFKA_PROCESS_ROLES", "broker,controller")
        .with_env_var("KAFKA_LISTENERS", "PLAINTEXT://:9092,CONTROLLER://:9093")
        .with_env_var("KAFKA_ADVERTISED_LISTENERS", format!("PLAINTEXT://127.0.0.1:{port}"))
        .with_env_var("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER")
        .with_env_var("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT")
        .with_env_var("KAFKA_CONTROLLER_QUORUM_VOTERS", "1@localhost:9093")
        .with_env_var("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1")
        .with_env_var("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1")
        .with_env_var("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1")
        .with_env_var("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0")
        .with_env_var("KAFKA_GROUP_COORDINATOR_REBALANCE_PROTOCOLS", "classic,consumer")
        .start()
        .await
        .unwrap_or_else(|e| {
            panic!("a Docker engine answers at {engine}, but {}:{} did not start: {e}", IMAGE.0, IMAGE.1)
        });
    let bootstrap = format!("127.0.0.1:{port}");
    // The suites' `kafka` cases, in a child cargo so that they run as the same tests
    // CI runs against the other brokers.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let status = Command::new(env!("CARGO"))
        .current_dir(&root)
        .args(["test", "-p", "klife-conformance", "--tests", "--", "::kafka", "--test-threads", "2"])
        .env("KLIFE_TEST_BOOTSTRAP", &bootstrap)
        .status()
        .unwrap();
    drop(kafka);
    assert!(status.success(), "the conformance suites failed against Apache Kafka at {bootstrap}");
}
