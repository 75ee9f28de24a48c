//! The traits every generated message implements, and version ranges.

use bytes::{Bytes, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::messages::ApiKey;

/// An inclusive range of message versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VersionRange {
    /// Lowest version.
    pub min: i16,
    /// Highest version.
    pub max: i16,
}

impl VersionRange {
    /// The range `min..=max`.
    pub const fn new(min: i16, max: i16) -> Self {
        VersionRange { min, max }
    }

    /// Whether `version` is in the range.
    pub const fn contains(&self, version: i16) -> bool {
        version >= self.min && version <= self.max
    }

    /// The versions in both ranges, if any.
    pub const fn intersect(&self, other: &VersionRange) -> Option<VersionRange> {
        let min = if self.min > other.min { self.min } else { other.min };
        let max = if self.max < other.max { self.max } else { other.max };
        if min <= max { Some(VersionRange { min, max }) } else { None }
    }
}

impl std::fmt::Display for VersionRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.min, self.max)
    }
}

/// A Kafka message: a request, a response, a header, or a data structure.
///
/// One Rust value covers every version; the version is chosen when encoding and
/// decoding. Fields that a version lacks decode as their default.
pub trait Message: Sized + Clone + std::fmt::Debug + Default + PartialEq + Send + Sync + 'static {
    /// The message's name in Kafka's schemas (`ProduceRequest`, ...).
    const NAME: &'static str;
    /// The versions this crate can encode and decode.
    const VERSIONS: VersionRange;
    /// The lowest version that uses the flexible encodings, if any.
    const FLEXIBLE_MIN: Option<i16>;

    /// Appends the message's encoding at `version` to `buf`.
    ///
    /// Fails if the version is not in [`Self::VERSIONS`], if a field the version lacks
    /// holds a non-default value (unless Kafka marks it ignorable), or if a field is
    /// null where the version does not allow it.
    fn encode(&self, buf: &mut BytesMut, version: i16) -> Result<(), EncodeError>;

    /// Decodes the message at `version` from the front of `buf`, advancing it.
    ///
    /// Byte strings and `records` fields are zero-copy slices of `buf`.
    fn decode(buf: &mut Bytes, version: i16) -> Result<Self, DecodeError>;

    /// Whether `version` uses the flexible encodings.
    fn is_flexible(version: i16) -> bool {
        Self::FLEXIBLE_MIN.is_some_and(|m| version >= m)
    }
}

/// A request: pairs with its response type and names its api key.
pub trait Request: Message {
    /// The API this request belongs to.
    const API_KEY: ApiKey;
    /// The response the broker answers with.
    type Response: Response<Request = Self>;
}

/// A response: pairs with its request type.
pub trait Response: Message {
    /// The API this response belongs to.
    const API_KEY: ApiKey;
    /// The request this answers.
    type Request: Request<Response = Self>;
}

pub(crate) fn check_encode_version<M: Message>(version: i16) -> Result<(), EncodeError> {
    if M::VERSIONS.contains(version) {
        Ok(())
    } else {
        Err(EncodeError::UnsupportedVersion { message: M::NAME, version, min: M::VERSIONS.min, max: M::VERSIONS.max })
    }
}

pub(crate) fn check_decode_version<M: Message>(version: i16) -> Result<(), DecodeError> {
    if M::VERSIONS.contains(version) {
        Ok(())
    } else {
        Err(DecodeError::UnsupportedVersion { message: M::NAME, version, min: M::VERSIONS.min, max: M::VERSIONS.max })
    }
}
