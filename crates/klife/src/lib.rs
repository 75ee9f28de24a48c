//! # klife
//!
//! A Kafka client for Rust.
