//! The Apache Kafka cluster `cargo xtask test` starts: its listeners, its CA, and the
//! fault commands its nodes take.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::path::PathBuf;

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
    let address = crate::env("KLIFE_TEST_KAFKA_CONTROL");
    let mut stream = TcpStream::connect(&address).unwrap_or_else(|e| panic!("kafka control at {address}: {e}"));
    writeln!(stream, "{command}").unwrap();
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer).unwrap();
    assert!(answer.starts_with("OK"), "kafka control answered {answer:?} to {command:?}");
}
