//! Framing: the 4-byte size prefix, request and response headers with the header
//! version each API and version requires, for both the client and the server side.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, EncodeError};
use crate::messages::{AnyRequest, AnyResponse, ApiKey, RequestHeader, ResponseHeader};
use crate::{Message, Request, Response};

/// Frames larger than this are refused unless a caller chooses its own limit
/// (Kafka's default `socket.request.max.bytes` is 100 MiB).
pub const DEFAULT_MAX_FRAME_SIZE: usize = 100 * 1024 * 1024;

/// Why a frame could not be split off a byte stream.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// The size prefix is negative.
    #[error("frame size {0} is negative")]
    NegativeSize(i32),
    /// The size prefix is larger than the limit.
    #[error("frame of {size} bytes exceeds the limit of {limit} bytes")]
    TooLarge {
        /// The announced size.
        size: usize,
        /// The limit.
        limit: usize,
    },
}

/// Splits one complete frame (without its size prefix) off the front of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed. Reserves room for the rest of a
/// partial frame so that the next read fills it.
pub fn split_frame(buf: &mut BytesMut, max_size: usize) -> Result<Option<Bytes>, FrameError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let size = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let size = usize::try_from(size).map_err(|_| FrameError::NegativeSize(size))?;
    if size > max_size {
        return Err(FrameError::TooLarge { size, limit: max_size });
    }
    if buf.len() < 4 + size {
        buf.reserve(4 + size - buf.len());
        return Ok(None);
    }
    buf.advance(4);
    Ok(Some(buf.split_to(size).freeze()))
}

/// Writes a size placeholder, runs `body`, then fills in the size.
fn sized(buf: &mut BytesMut, body: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>) -> Result<(), EncodeError> {
    let start = buf.len();
    buf.put_i32(0);
    body(buf)?;
    set_size(buf, start, buf.len() - start - 4)
}

/// Writes `size` into the 4-byte frame size at `start`.
fn set_size(buf: &mut BytesMut, start: usize, size: usize) -> Result<(), EncodeError> {
    let size = i32::try_from(size).map_err(|_| EncodeError::TooLong {
        what: "frame",
        length: size,
        max: i32::MAX as usize,
    })?;
    buf[start..start + 4].copy_from_slice(&size.to_be_bytes());
    Ok(())
}

fn request_header(api_key: ApiKey, version: i16, correlation_id: i32, client_id: Option<&str>) -> RequestHeader {
    RequestHeader::default()
        .with_request_api_key(api_key.code())
        .with_request_api_version(version)
        .with_correlation_id(correlation_id)
        .with_client_id(client_id.map(str::to_owned))
}

/// Appends a complete request frame to `buf`: size, header (at the header version
/// `version` of `R`'s API requires) and body.
pub fn encode_request<R: Request>(
    buf: &mut BytesMut,
    correlation_id: i32,
    client_id: Option<&str>,
    version: i16,
    request: &R,
) -> Result<(), EncodeError> {
    let header = request_header(R::API_KEY, version, correlation_id, client_id);
    let header_version = R::API_KEY.request_header_version(version);
    sized(buf, |buf| {
        // `ClientId` is ignorable: header v0 simply leaves it out.
        header.encode(buf, header_version)?;
        request.encode(buf, version)
    })
}

/// Appends the head of a request frame whose body of `body_len` bytes the caller sends
/// separately (as parts, say, from
/// [`ProduceRequest::encode_parts`](crate::messages::ProduceRequest::encode_parts)):
/// the frame size, which counts the body, and the request header. The head followed by
/// the body is exactly what [`encode_request`] writes.
pub fn encode_request_head(
    buf: &mut BytesMut,
    api_key: ApiKey,
    correlation_id: i32,
    client_id: Option<&str>,
    version: i16,
    body_len: usize,
) -> Result<(), EncodeError> {
    let header = request_header(api_key, version, correlation_id, client_id);
    let start = buf.len();
    buf.put_i32(0);
    header.encode(buf, api_key.request_header_version(version))?;
    set_size(buf, start, buf.len() - start - 4 + body_len)
}

/// [`encode_request`] for a request chosen at run time.
pub fn encode_any_request(
    buf: &mut BytesMut,
    correlation_id: i32,
    client_id: Option<&str>,
    version: i16,
    request: &AnyRequest,
) -> Result<(), EncodeError> {
    let api_key = request.api_key();
    let header = request_header(api_key, version, correlation_id, client_id);
    sized(buf, |buf| {
        header.encode(buf, api_key.request_header_version(version))?;
        request.encode(buf, version)
    })
}

/// Decodes a response frame (size prefix already removed) to `R` at `version`.
///
/// Bytes after a complete response are ignored, as the Java client and librdkafka
/// ignore them (some brokers pad their answers); [`decode_response_exact`] refuses them.
pub fn decode_response<R: Response>(mut frame: Bytes, version: i16) -> Result<(ResponseHeader, R), DecodeError> {
    let header = ResponseHeader::decode(&mut frame, R::API_KEY.response_header_version(version))?;
    let body = R::decode(&mut frame, version)?;
    Ok((header, body))
}

/// [`decode_response`], but leftover bytes are a [`DecodeError::TrailingBytes`]: they
/// mean the version or api key does not match what the peer sent.
pub fn decode_response_exact<R: Response>(mut frame: Bytes, version: i16) -> Result<(ResponseHeader, R), DecodeError> {
    let header = ResponseHeader::decode(&mut frame, R::API_KEY.response_header_version(version))?;
    let body = R::decode(&mut frame, version)?;
    if !frame.is_empty() {
        return Err(DecodeError::TrailingBytes { what: R::NAME, remaining: frame.len() });
    }
    Ok((header, body))
}

/// Reads only the correlation id at the front of a response frame, to route it to
/// the request that is waiting for it.
pub fn peek_correlation_id(frame: &[u8]) -> Result<i32, DecodeError> {
    match frame {
        [a, b, c, d, ..] => Ok(i32::from_be_bytes([*a, *b, *c, *d])),
        _ => Err(DecodeError::Truncated { what: "ResponseHeader.correlation_id", needed: 4, remaining: frame.len() }),
    }
}

/// [`decode_response`] for a response chosen at run time.
pub fn decode_any_response(
    mut frame: Bytes,
    api_key: ApiKey,
    version: i16,
) -> Result<(ResponseHeader, AnyResponse), DecodeError> {
    let header = ResponseHeader::decode(&mut frame, api_key.response_header_version(version))?;
    let body = AnyResponse::decode(api_key, &mut frame, version)?;
    if !frame.is_empty() {
        return Err(DecodeError::TrailingBytes { what: api_key.name(), remaining: frame.len() });
    }
    Ok((header, body))
}

/// The api key and version at the front of a request frame, read without decoding
/// the rest (a server needs them to pick the header and body versions).
pub fn peek_request_key(frame: &[u8]) -> Result<(i16, i16), DecodeError> {
    match frame {
        [a, b, c, d, ..] => Ok((i16::from_be_bytes([*a, *b]), i16::from_be_bytes([*c, *d]))),
        _ => Err(DecodeError::Truncated { what: "RequestHeader", needed: 4, remaining: frame.len() }),
    }
}

/// Server side: decodes a request frame (size prefix already removed) into its header
/// and body.
///
/// An unknown api key gives [`DecodeError::UnknownApiKey`]; a version the API does
/// not have gives [`DecodeError::UnsupportedVersion`]. In both cases the header can
/// still be read with [`decode_request_header`] to answer with an error.
pub fn decode_request(frame: Bytes) -> Result<(RequestHeader, AnyRequest), DecodeError> {
    let (header, mut body, api_key) = decode_request_header(frame)?;
    let version = header.request_api_version;
    let request = AnyRequest::decode(api_key, &mut body, version)?;
    if !body.is_empty() {
        return Err(DecodeError::TrailingBytes { what: api_key.name(), remaining: body.len() });
    }
    Ok((header, request))
}

/// Server side: decodes only the request header, returning it with the body bytes.
pub fn decode_request_header(mut frame: Bytes) -> Result<(RequestHeader, Bytes, ApiKey), DecodeError> {
    let (key, version) = peek_request_key(&frame)?;
    let api_key = ApiKey::try_from(key)?;
    let header_version = if api_key.versions().contains(version) {
        api_key.request_header_version(version)
    } else {
        // A version this crate does not know: the header is at least v1 (ApiVersions
        // requests from newer clients must still be answerable).
        1
    };
    let header = RequestHeader::decode(&mut frame, header_version)?;
    Ok((header, frame, api_key))
}

/// Server side: appends a complete response frame for `R`.
pub fn encode_response<R: Response>(
    buf: &mut BytesMut,
    correlation_id: i32,
    version: i16,
    response: &R,
) -> Result<(), EncodeError> {
    encode_response_parts(buf, correlation_id, R::API_KEY, version, |buf| response.encode(buf, version))
}

/// Server side: appends a complete response frame for a response chosen at run time.
pub fn encode_any_response(
    buf: &mut BytesMut,
    correlation_id: i32,
    version: i16,
    response: &AnyResponse,
) -> Result<(), EncodeError> {
    encode_response_parts(buf, correlation_id, response.api_key(), version, |buf| response.encode(buf, version))
}

fn encode_response_parts(
    buf: &mut BytesMut,
    correlation_id: i32,
    api_key: ApiKey,
    version: i16,
    body: impl FnOnce(&mut BytesMut) -> Result<(), EncodeError>,
) -> Result<(), EncodeError> {
    sized(buf, |buf| {
        let header = ResponseHeader::default().with_correlation_id(correlation_id);
        header.encode(buf, api_key.response_header_version(version))?;
        body(buf)
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::messages::{ApiVersionsRequest, ApiVersionsResponse, MetadataRequest};

    #[test]
    fn split_frame_waits_for_whole_frames_and_caps_size() {
        let mut buf = BytesMut::from(&[0, 0, 0, 3, 1, 2][..]);
        assert_eq!(split_frame(&mut buf, 10), Ok(None));
        buf.extend_from_slice(&[3, 0]);
        assert_eq!(split_frame(&mut buf, 10).unwrap().unwrap(), Bytes::from_static(&[1, 2, 3]));
        assert_eq!(&buf[..], &[0]);
        let mut big = BytesMut::from(&[0x7f, 0xff, 0xff, 0xff][..]);
        assert_eq!(split_frame(&mut big, 10), Err(FrameError::TooLarge { size: i32::MAX as usize, limit: 10 }));
        let mut neg = BytesMut::from(&[0xff, 0xff, 0xff, 0xfe][..]);
        assert_eq!(split_frame(&mut neg, 10), Err(FrameError::NegativeSize(-2)));
    }

    #[test]
    fn request_frames_decode_on_the_server_side() {
        let req = MetadataRequest::default().with_topics(None).with_allow_auto_topic_creation(false);
        let mut buf = BytesMut::new();
        encode_request(&mut buf, 42, Some("klife"), 12, &req).unwrap();
        let frame = split_frame(&mut buf, DEFAULT_MAX_FRAME_SIZE).unwrap().unwrap();
        let (header, body) = decode_request(frame).unwrap();
        assert_eq!(header.correlation_id, 42);
        assert_eq!(header.client_id.as_deref(), Some("klife"));
        assert_eq!(body, AnyRequest::Metadata(req));
    }

    #[test]
    fn api_versions_responses_always_use_header_v0() {
        let resp = ApiVersionsResponse::default().with_error_code(35);
        let mut buf = BytesMut::new();
        encode_response(&mut buf, 7, 3, &resp).unwrap();
        // size(4) + correlation id(4), then the body starts with the error code: no
        // tagged-field byte between them.
        assert_eq!(&buf[4..10], &[0, 0, 0, 7, 0, 35]);
        let frame = split_frame(&mut buf, DEFAULT_MAX_FRAME_SIZE).unwrap().unwrap();
        let (h, r) = decode_response::<ApiVersionsResponse>(frame, 3).unwrap();
        assert_eq!(h.correlation_id, 7);
        assert_eq!(r, resp);
    }

    #[test]
    fn trailing_bytes_are_reported() {
        let mut buf = BytesMut::new();
        encode_response(&mut buf, 1, 0, &ApiVersionsResponse::default()).unwrap();
        buf.put_u8(0xff);
        let size = (buf.len() - 4) as i32;
        buf[..4].copy_from_slice(&size.to_be_bytes());
        let frame = split_frame(&mut buf, DEFAULT_MAX_FRAME_SIZE).unwrap().unwrap();
        assert_eq!(
            decode_response_exact::<ApiVersionsResponse>(frame.clone(), 0).unwrap_err(),
            DecodeError::TrailingBytes { what: "ApiVersionsResponse", remaining: 1 }
        );
        assert!(decode_response::<ApiVersionsResponse>(frame, 0).is_ok());
    }

    #[test]
    fn unknown_api_keys_are_typed_errors() {
        let frame = Bytes::from_static(&[0x7f, 0x00, 0, 0, 0, 0, 0, 1, 0xff, 0xff]);
        assert_eq!(decode_request(frame).unwrap_err(), DecodeError::UnknownApiKey(0x7f00));
        let _ = ApiVersionsRequest::default();
    }
}
