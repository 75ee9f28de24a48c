//! klife's conformance suites against Apache Kafka itself.
//!
//! `tests/apache_kafka.rs` starts an `apache/kafka` container with testcontainers (a
//! single KRaft node, advertised on a free loopback port) and runs the conformance
//! suites against it through `KLIFE_TEST_BOOTSTRAP`. Where no Docker engine is
//! reachable it prints that it did not run, and passes: this suite checks klife
//! against the real broker on machines that can run it, and is not the only check
//! (Tansu, librdkafka's mock cluster and klife-testkit run everywhere).
