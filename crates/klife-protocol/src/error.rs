//! Typed errors for encoding and decoding: every malformed input has a named variant.

use crate::compression::Compression;

/// Why bytes could not be decoded.
///
/// Decoders never panic: truncated, oversized or malformed input ends in one of these.
/// `what` names the field or structure being read (for example
/// `"ProduceResponse.responses"`), so the message points at the offending bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input ended before a value was complete.
    #[error("truncated input reading {what}: needed {needed} bytes, {remaining} remaining")]
    Truncated {
        /// The field or structure being read.
        what: &'static str,
        /// Bytes the value needs.
        needed: usize,
        /// Bytes left in the input.
        remaining: usize,
    },
    /// A length prefix is negative (and not the null marker) or otherwise impossible.
    #[error("invalid length {length} for {what}")]
    InvalidLength {
        /// The field or structure being read.
        what: &'static str,
        /// The length read from the wire.
        length: i64,
    },
    /// A length prefix is larger than the rest of the input: rejected before allocating.
    #[error("length {length} for {what} exceeds the {remaining} bytes remaining")]
    LengthExceedsInput {
        /// The field or structure being read.
        what: &'static str,
        /// The length read from the wire.
        length: usize,
        /// Bytes left in the input.
        remaining: usize,
    },
    /// A null value where this version of the message does not allow null.
    #[error("{what} is null, but it is not nullable in this version")]
    UnexpectedNull {
        /// The field being read.
        what: &'static str,
    },
    /// A string is not valid UTF-8.
    #[error("{what} is not valid UTF-8")]
    InvalidUtf8 {
        /// The field being read.
        what: &'static str,
    },
    /// A variable-length integer is longer than its type allows.
    #[error("malformed varint reading {what}")]
    InvalidVarint {
        /// The field being read.
        what: &'static str,
    },
    /// The message does not exist in the requested version.
    #[error("{message} does not support version {version} (valid versions {min}-{max})")]
    UnsupportedVersion {
        /// The message name.
        message: &'static str,
        /// The requested version.
        version: i16,
        /// Lowest valid version.
        min: i16,
        /// Highest valid version.
        max: i16,
    },
    /// The API key is not one this crate knows.
    #[error("unknown api key {0}")]
    UnknownApiKey(i16),
    /// Bytes were left over after a complete structure.
    #[error("{remaining} unexpected bytes after {what}")]
    TrailingBytes {
        /// The structure that was decoded.
        what: &'static str,
        /// Bytes left over.
        remaining: usize,
    },
    /// A record batch's CRC32C does not match its contents.
    #[error(
        "record batch CRC mismatch: header says {expected:#010x}, contents give {actual:#010x}"
    )]
    CrcMismatch {
        /// The CRC stored in the batch header.
        expected: u32,
        /// The CRC computed over the batch.
        actual: u32,
    },
    /// A record batch uses a magic byte (format version) other than 2.
    #[error("unsupported record batch magic {0}: only the v2 format (magic 2) is supported")]
    UnsupportedMagic(i8),
    /// A record batch names a compression codec id that does not exist.
    #[error("unknown compression codec id {0}")]
    UnknownCompression(u8),
    /// A record batch uses a codec this build was compiled without.
    #[error("record batch is compressed with {0}, but klife-protocol was built without the `{feature}` feature", feature = .0.feature_name())]
    CompressionDisabled(Compression),
    /// The compressed payload of a record batch is corrupt.
    #[error("{codec} decompression failed: {reason}")]
    Decompression {
        /// The codec that failed.
        codec: Compression,
        /// What the codec reported.
        reason: String,
    },
    /// A compressed batch inflates past the configured limit.
    #[error("decompressed record batch exceeds the limit of {limit} bytes")]
    DecompressedTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// A value is structurally valid but violates the protocol.
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// The field or structure being read.
        what: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// Why a value could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The message does not exist in the requested version.
    #[error("{message} does not support version {version} (valid versions {min}-{max})")]
    UnsupportedVersion {
        /// The message name.
        message: &'static str,
        /// The requested version.
        version: i16,
        /// Lowest valid version.
        min: i16,
        /// Highest valid version.
        max: i16,
    },
    /// A field has a non-default value but does not exist in the requested version,
    /// and dropping it silently would change the meaning of the message.
    #[error("{field} is set, but version {version} of the message does not have it")]
    FieldNotInVersion {
        /// The field.
        field: &'static str,
        /// The requested version.
        version: i16,
    },
    /// A field is null (`None`) but the requested version does not allow null.
    #[error("{field} is null, but version {version} does not allow null")]
    NullNotAllowed {
        /// The field.
        field: &'static str,
        /// The requested version.
        version: i16,
    },
    /// A string, byte string or array is longer than its length prefix can express.
    #[error("{what} is {length} long, more than the wire format allows ({max})")]
    TooLong {
        /// The field.
        what: &'static str,
        /// Its length.
        length: usize,
        /// The most the encoding allows.
        max: usize,
    },
    /// A record batch was asked to use a codec this build was compiled without.
    #[error("cannot compress with {0}: klife-protocol was built without the `{feature}` feature", feature = .0.feature_name())]
    CompressionDisabled(Compression),
    /// The compressor failed.
    #[error("{codec} compression failed: {reason}")]
    Compression {
        /// The codec that failed.
        codec: Compression,
        /// What the codec reported.
        reason: String,
    },
    /// A value violates the protocol (for example, an empty record batch).
    #[error("invalid {what}: {reason}")]
    Invalid {
        /// The field or structure being written.
        what: &'static str,
        /// What is wrong with it.
        reason: &'static str,
    },
}
