//! The Apache Kafka cluster `cargo xtask test` starts: its listeners, its CA, and the
//! fault commands its nodes take.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

/// Nodes in the cluster (each a broker and a controller).
pub const NODES: usize = 3;
/// The user every SASL listener knows.
pub const SASL_USER: &str = "klife";
/// That user's password.
pub const SASL_PASSWORD: &str = "klife-secret";

/// A listener of every node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// No TLS, no SASL (`KLIFE_TEST_KAFKA`).
    Plaintext,
    /// TLS, advertised as `localhost` (`KLIFE_TEST_KAFKA_SSL`).
    Ssl,
    /// TLS, then SCRAM-SHA-256 or SCRAM-SHA-512 (`KLIFE_TEST_KAFKA_SASL_SSL`).
    SaslSsl,
    /// SASL PLAIN without TLS (`KLIFE_TEST_KAFKA_SASL_PLAINTEXT`).
    SaslPlaintext,
}

impl Listener {
    fn variable(self) -> &'static str {
        match self {
            Listener::Plaintext => "KLIFE_TEST_KAFKA",
            Listener::Ssl => "KLIFE_TEST_KAFKA_SSL",
            Listener::SaslSsl => "KLIFE_TEST_KAFKA_SASL_SSL",
            Listener::SaslPlaintext => "KLIFE_TEST_KAFKA_SASL_PLAINTEXT",
        }
    }
}

/// The bootstrap addresses of a listener.
pub fn addresses(listener: Listener) -> Vec<String> {
    crate::env(listener.variable()).split(',').map(str::to_owned).collect()
}

/// The CA certificate (PEM file) that signed the brokers' certificates.
pub fn ca_file() -> PathBuf {
    PathBuf::from(crate::env("KLIFE_TEST_KAFKA_CA"))
}

/// Sends one fault command to the cluster's control port (`kill N`: SIGKILL node N;
/// `stop N`: SIGTERM, waited for; `start N`: start it again and wait until it serves
/// clients). Panics unless the command succeeded.
pub fn control(command: &str) {
    if let Err(e) = try_control(command) {
        panic!("{e}");
    }
}

/// [`control`], returning what went wrong instead of panicking.
pub fn try_control(command: &str) -> Result<(), String> {
    let address = crate::env("KLIFE_TEST_KAFKA_CONTROL");
    let mut stream = TcpStream::connect(&address).map_err(|e| format!("kafka control at {address}: {e}"))?;
    writeln!(stream, "{command}").map_err(|e| format!("kafka control at {address}: {e}"))?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).map_err(|e| format!("kafka control at {address}: {e}"))?;
    if answer.starts_with("OK") { Ok(()) } else { Err(format!("kafka control answered {answer:?} to {command:?}")) }
}

/// The nodes a test took down, started again when it is dropped: a case that fails
/// half way must not leave a node down for the cases after it. Every fault of a test
/// goes through one `Outages` (share it with `Arc` between the test's tasks).
#[derive(Debug, Default)]
pub struct Outages {
    down: Mutex<BTreeSet<i32>>,
}

impl Outages {
    /// Nothing down yet.
    pub fn new() -> Self {
        Outages::default()
    }

    /// SIGKILLs node `node`.
    pub async fn kill(&self, node: i32) {
        self.down(node, "kill").await;
    }

    /// Stops node `node` (SIGTERM: a controlled shutdown), waiting until it exited.
    pub async fn stop(&self, node: i32) {
        self.down(node, "stop").await;
    }

    /// Starts node `node` again, waiting until it serves clients.
    pub async fn start(&self, node: i32) {
        let command = format!("start {node}");
        tokio::task::spawn_blocking(move || control(&command)).await.expect("kafka control task");
        self.down.lock().unwrap_or_else(PoisonError::into_inner).remove(&node);
    }

    async fn down(&self, node: i32, how: &str) {
        // Noted before the command: a node the command took down before failing is
        // started again too.
        self.down.lock().unwrap_or_else(PoisonError::into_inner).insert(node);
        let command = format!("{how} {node}");
        tokio::task::spawn_blocking(move || control(&command)).await.expect("kafka control task");
    }
}

impl Drop for Outages {
    fn drop(&mut self) {
        let down = std::mem::take(&mut *self.down.lock().unwrap_or_else(PoisonError::into_inner));
        for node in down {
            if let Err(e) = try_control(&format!("start {node}")) {
                eprintln!("node {node} could not be started again after the test: {e}");
            }
        }
    }
}
