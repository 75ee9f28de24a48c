//! # klife-protocol
//!
//! The Kafka wire protocol as plain Rust values, with no I/O: every request and
//! response of every API in every version (generated from Apache Kafka's message
//! schemas), request/response framing, record batches (format v2) with all four
//! compression codecs, and broker error codes with a retry classification.
//!
//! ## Contract
//!
//! - Decoding never panics. Truncated, oversized or malformed input returns a typed
//!   [`DecodeError`]; every length read from the wire is checked against the bytes
//!   that remain before anything is allocated.
//! - Encoding a value and decoding it at the same version gives back the same value;
//!   decoding bytes and encoding them again gives back the same bytes, including
//!   tagged fields this crate does not know.
//! - Encoding a field that the chosen version lacks, with a non-default value, is an
//!   [`EncodeError`] rather than a silent loss.
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

pub mod compression;
pub mod error;
pub mod records;
pub mod wire;

pub use compression::Compression;
pub use error::{DecodeError, EncodeError};
pub use records::{
    BatchOptions, Header, RawBatch, Record, RecordBatch, RecordBatchWriter, RecordBatches,
    RecordView,
};
pub use wire::Uuid;
