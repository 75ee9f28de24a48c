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
//! - No sockets, no async runtime, no clocks: bytes in, values out.
//!
//! ## Layout
//!
//! - [`messages`]: one generated module per Kafka schema file, each with a struct per
//!   message and nested structure, [`ApiKey`], [`AnyRequest`] and [`AnyResponse`].
//!   Written by `cargo xtask codegen --schemas DIR` from Apache Kafka's JSON schemas.
//! - [`frame`]: size prefixes, request and response headers, both sides of the wire.
//! - [`wire`]: the primitive encodings (varints, compact strings, tagged fields).
//! - [`error_code`]: every broker error code, with what a client should do about it.
//! - [`compression`]: the record batch codecs.
//! - [`types`]: the topic-partitions, positions, producer ids and group members every
//!   crate shares.
//!
//! ## Cargo features
//!
//! | feature | default | what it switches on |
//! | --- | --- | --- |
//! | `gzip` | yes | gzip record batches (pure Rust, `flate2` on `miniz_oxide`) |
//! | `snappy` | yes | snappy record batches, raw and xerial-framed (pure Rust, `snap`) |
//! | `lz4` | yes | lz4 frame record batches (pure Rust, `lz4_flex`) |
//! | `zstd` | yes | zstd record batches (builds the vendored C zstd library) |
//! | `arbitrary` | no | the `testing` module: generators for every message, for fuzzing |
//!
//! A codec left out is not built. Its batches still have a name
//! ([`Compression`]) and [`Compression::is_enabled`] says `false`; encoding one fails
//! with [`EncodeError::CompressionDisabled`] and decoding one with
//! [`DecodeError::CompressionDisabled`], naming the feature to turn on.
//!
//! ## Example
//!
//! Encode a request as a client would send it, read it as a broker would, and answer:
//!
//! ```
//! use bytes::BytesMut;
//! use klife_protocol::frame;
//! use klife_protocol::messages::{MetadataRequest, MetadataResponse, metadata_request::MetadataRequestTopic};
//! use klife_protocol::{AnyRequest, ErrorCode};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let request = MetadataRequest::default()
//!     .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some("orders".into()))]));
//! let mut wire = BytesMut::new();
//! frame::encode_request(&mut wire, 1, Some("my-app"), 12, &request)?;
//!
//! // The broker's side: split the frame off the stream and decode it.
//! let bytes = frame::split_frame(&mut wire, frame::DEFAULT_MAX_FRAME_SIZE)?.expect("a whole frame");
//! let (header, body) = frame::decode_request(bytes)?;
//! assert_eq!(header.client_id.as_deref(), Some("my-app"));
//! assert_eq!(body, AnyRequest::Metadata(request));
//!
//! // ... and its answer, read back by the client.
//! let mut answer = BytesMut::new();
//! frame::encode_response(&mut answer, header.correlation_id, 12, &MetadataResponse::default())?;
//! let bytes = frame::split_frame(&mut answer, frame::DEFAULT_MAX_FRAME_SIZE)?.expect("a whole frame");
//! let (header, response) = frame::decode_response::<MetadataResponse>(bytes, 12)?;
//! assert_eq!(header.correlation_id, 1);
//! assert!(response.topics.is_empty());
//! assert_eq!(ErrorCode::from_code(6).name(), "NOT_LEADER_OR_FOLLOWER");
//! # Ok(())
//! # }
//! ```
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

pub mod compression;
pub mod error;
pub mod error_code;
pub mod frame;
mod message;
#[cfg(test)]
mod message_tests;
pub mod messages;
mod produce_parts;
pub mod records;
#[cfg(any(test, feature = "arbitrary"))]
pub mod testing;
pub mod types;
pub mod wire;

pub use compression::Compression;
pub use error::{DecodeError, EncodeError};
pub use error_code::{ErrorCode, RetryAction};
pub use message::{Message, Request, Response, VersionRange};
pub use messages::{AnyRequest, AnyResponse, ApiKey};
pub use records::{BatchOptions, Header, RawBatch, Record, RecordBatch, RecordBatchWriter, RecordBatches, RecordView};
pub use types::{GroupMetadata, ProducerIdAndEpoch, TopicPartition, TopicPartitionOffset};
pub use wire::Uuid;
