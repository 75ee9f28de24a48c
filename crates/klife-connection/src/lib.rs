//! # klife-connection
//!
//! Connections to Kafka brokers.
//!
//! - [`sasl`]: the SASL mechanisms (PLAIN, SCRAM-SHA-256/512, OAUTHBEARER) as
//!   sans-io state machines.
//! - `tls` (feature `tls`, on by default): the client TLS configuration, built on
//!   rustls with the ring crypto provider.

pub mod sasl;
#[cfg(feature = "tls")]
pub mod tls;
