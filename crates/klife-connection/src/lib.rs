//! # klife-connection
//!
//! Connections to Kafka brokers.
