//! A scripted Kafka peer for TLS and SASL tests (filled in below).
