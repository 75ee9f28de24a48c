//! Primitive wire types: fixed-width integers, varints, strings, bytes, uuids, array
//! lengths and tagged fields, in both the classic and the flexible ("compact") encodings.
//!
//! Readers take `&mut Bytes` and advance it; they check every length against what
//! remains *before* allocating or slicing, and return [`DecodeError`] instead of
//! panicking. Byte strings are zero-copy slices of the input. Writers append to a
//! [`BytesMut`].

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::error::{DecodeError, EncodeError};

/// Most elements preallocated for an array before its elements are actually read.
/// Larger arrays grow as their elements arrive, so memory stays proportional to input.
pub const MAX_PREALLOCATED_ELEMENTS: usize = 256;

/// A 128-bit UUID as Kafka sends it (topic ids, directory ids, ...): 16 big-endian bytes.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Uuid(pub [u8; 16]);

impl Uuid {
    /// The all-zero UUID, Kafka's "no id".
    pub const NIL: Uuid = Uuid([0; 16]);

    /// Builds a UUID from its 128-bit value.
    pub const fn from_u128(v: u128) -> Self {
        Uuid(v.to_be_bytes())
    }

    /// The 128-bit value.
    pub const fn as_u128(&self) -> u128 {
        u128::from_be_bytes(self.0)
    }

    /// Whether this is the all-zero UUID.
    pub const fn is_nil(&self) -> bool {
        self.as_u128() == 0
    }
}

impl std::fmt::Display for Uuid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]
        )
    }
}

impl std::fmt::Debug for Uuid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Uuid({self})")
    }
}

/// A tagged field this crate does not know, kept so that it re-encodes unchanged.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RawTaggedField {
    /// The field's tag.
    pub tag: u32,
    /// The field's encoded value.
    pub data: Bytes,
}

#[inline]
fn need(buf: &Bytes, n: usize, what: &'static str) -> Result<(), DecodeError> {
    if buf.remaining() < n {
        Err(DecodeError::Truncated { what, needed: n, remaining: buf.remaining() })
    } else {
        Ok(())
    }
}

macro_rules! fixed_readers {
    ($($(#[$doc:meta])* $name:ident -> $t:ty = $get:ident;)*) => {$(
        $(#[$doc])*
        #[inline]
        pub fn $name(buf: &mut Bytes, what: &'static str) -> Result<$t, DecodeError> {
            need(buf, std::mem::size_of::<$t>(), what)?;
            Ok(buf.$get())
        }
    )*};
}

fixed_readers! {
    /// Reads an `int8`.
    get_i8 -> i8 = get_i8;
    /// Reads a big-endian `int16`.
    get_i16 -> i16 = get_i16;
    /// Reads a big-endian `uint16`.
    get_u16 -> u16 = get_u16;
    /// Reads a big-endian `int32`.
    get_i32 -> i32 = get_i32;
    /// Reads a big-endian `uint32`.
    get_u32 -> u32 = get_u32;
    /// Reads a big-endian `int64`.
    get_i64 -> i64 = get_i64;
    /// Reads a big-endian IEEE 754 `float64`.
    get_f64 -> f64 = get_f64;
}

/// Reads a `bool`: any non-zero byte is `true`, as in the Java client.
#[inline]
pub fn get_bool(buf: &mut Bytes, what: &'static str) -> Result<bool, DecodeError> {
    Ok(get_i8(buf, what)? != 0)
}

/// Reads a `uuid`.
#[inline]
pub fn get_uuid(buf: &mut Bytes, what: &'static str) -> Result<Uuid, DecodeError> {
    need(buf, 16, what)?;
    let mut b = [0u8; 16];
    buf.copy_to_slice(&mut b);
    Ok(Uuid(b))
}

/// Reads an unsigned varint of at most 5 bytes (32 bits).
#[inline]
pub fn get_uvarint(buf: &mut Bytes, what: &'static str) -> Result<u32, DecodeError> {
    let mut value: u32 = 0;
    for i in 0..5 {
        let b = get_i8(buf, what)? as u8;
        if i == 4 && b > 0x0f {
            return Err(DecodeError::InvalidVarint { what });
        }
        value |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(DecodeError::InvalidVarint { what })
}

/// Reads an unsigned varint of at most 10 bytes (64 bits).
#[inline]
pub fn get_uvarlong(buf: &mut Bytes, what: &'static str) -> Result<u64, DecodeError> {
    let mut value: u64 = 0;
    for i in 0..10 {
        let b = get_i8(buf, what)? as u8;
        if i == 9 && b > 0x01 {
            return Err(DecodeError::InvalidVarint { what });
        }
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(DecodeError::InvalidVarint { what })
}

/// Reads a zigzag-encoded signed varint (32 bits).
#[inline]
pub fn get_varint(buf: &mut Bytes, what: &'static str) -> Result<i32, DecodeError> {
    let v = get_uvarint(buf, what)?;
    Ok(((v >> 1) as i32) ^ -((v & 1) as i32))
}

/// Reads a zigzag-encoded signed varlong (64 bits).
#[inline]
pub fn get_varlong(buf: &mut Bytes, what: &'static str) -> Result<i64, DecodeError> {
    let v = get_uvarlong(buf, what)?;
    Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
}

/// Takes `n` bytes as a zero-copy slice, after checking they are there.
#[inline]
pub fn take(buf: &mut Bytes, n: usize, what: &'static str) -> Result<Bytes, DecodeError> {
    if n > buf.remaining() {
        return Err(DecodeError::LengthExceedsInput { what, length: n, remaining: buf.remaining() });
    }
    Ok(buf.split_to(n))
}

/// Reads a length prefix: `int16`/`int32` in classic encodings, unsigned varint (length + 1)
/// in compact ones. `None` is the null marker (-1, or 0 in compact form).
#[inline]
fn get_len(buf: &mut Bytes, compact: bool, wide: bool, what: &'static str) -> Result<Option<usize>, DecodeError> {
    let len: i64 = if compact {
        i64::from(get_uvarint(buf, what)?) - 1
    } else if wide {
        i64::from(get_i32(buf, what)?)
    } else {
        i64::from(get_i16(buf, what)?)
    };
    match len {
        -1 => Ok(None),
        l if l < -1 => Err(DecodeError::InvalidLength { what, length: l }),
        l => {
            let l = l as usize;
            if l > buf.remaining() {
                Err(DecodeError::LengthExceedsInput { what, length: l, remaining: buf.remaining() })
            } else {
                Ok(Some(l))
            }
        }
    }
}

/// Reads a nullable string (`int16` length, or compact varint length).
#[inline]
pub fn get_nullable_string(buf: &mut Bytes, compact: bool, what: &'static str) -> Result<Option<String>, DecodeError> {
    match get_len(buf, compact, false, what)? {
        None => Ok(None),
        Some(n) => {
            let s = std::str::from_utf8(&buf[..n]).map_err(|_| DecodeError::InvalidUtf8 { what })?;
            let s = s.to_owned();
            buf.advance(n);
            Ok(Some(s))
        }
    }
}

/// Reads a non-nullable string.
///
/// A null here decodes as the empty string rather than failing: some brokers
/// (librdkafka's mock cluster, in error answers) send null for non-nullable strings,
/// and librdkafka's client accepts it. Lengths below -1 are still errors.
#[inline]
pub fn get_string(buf: &mut Bytes, compact: bool, what: &'static str) -> Result<String, DecodeError> {
    Ok(get_nullable_string(buf, compact, what)?.unwrap_or_default())
}

/// Reads nullable bytes (`int32` length, or compact varint length) as a zero-copy slice.
#[inline]
pub fn get_nullable_bytes(buf: &mut Bytes, compact: bool, what: &'static str) -> Result<Option<Bytes>, DecodeError> {
    match get_len(buf, compact, true, what)? {
        None => Ok(None),
        Some(n) => Ok(Some(buf.split_to(n))),
    }
}

/// Reads non-nullable bytes as a zero-copy slice.
#[inline]
pub fn get_bytes(buf: &mut Bytes, compact: bool, what: &'static str) -> Result<Bytes, DecodeError> {
    get_nullable_bytes(buf, compact, what)?.ok_or(DecodeError::UnexpectedNull { what })
}

/// Reads an array length (`int32`, or compact varint). `None` is a null array.
///
/// Every element takes at least one byte, so a length above the bytes remaining is
/// rejected here, before anything is allocated.
#[inline]
pub fn get_array_len(buf: &mut Bytes, compact: bool, what: &'static str) -> Result<Option<usize>, DecodeError> {
    get_len(buf, compact, true, what)
}

/// Reads a non-nullable array length.
#[inline]
pub fn get_required_array_len(buf: &mut Bytes, compact: bool, what: &'static str) -> Result<usize, DecodeError> {
    get_array_len(buf, compact, what)?.ok_or(DecodeError::UnexpectedNull { what })
}

/// A `Vec` with room for `len` elements, but never more than
/// [`MAX_PREALLOCATED_ELEMENTS`] up front.
#[inline]
pub fn vec_for<T>(len: usize) -> Vec<T> {
    Vec::with_capacity(len.min(MAX_PREALLOCATED_ELEMENTS))
}

/// Reads the header of a tagged-field section: the number of tagged fields.
#[inline]
pub fn get_tagged_count(buf: &mut Bytes, what: &'static str) -> Result<u32, DecodeError> {
    let n = get_uvarint(buf, what)?;
    // Each tagged field takes at least two bytes (tag and size).
    if n as usize > buf.remaining() / 2 {
        return Err(DecodeError::LengthExceedsInput { what, length: n as usize, remaining: buf.remaining() });
    }
    Ok(n)
}

/// Reads one tagged field's tag and its data as a slice.
#[inline]
pub fn get_tagged_field(buf: &mut Bytes, what: &'static str) -> Result<(u32, Bytes), DecodeError> {
    let tag = get_uvarint(buf, what)?;
    let size = get_uvarint(buf, what)? as usize;
    Ok((tag, take(buf, size, what)?))
}

/// Checks that a tagged field's data was read completely.
#[inline]
pub fn expect_consumed(data: &Bytes, what: &'static str) -> Result<(), DecodeError> {
    if data.is_empty() { Ok(()) } else { Err(DecodeError::TrailingBytes { what, remaining: data.len() }) }
}

// ---------------------------------------------------------------------------------
// Writers
// ---------------------------------------------------------------------------------

/// Writes an unsigned varint (32 bits).
#[inline]
pub fn put_uvarint(buf: &mut BytesMut, mut v: u32) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

/// Writes an unsigned varlong (64 bits).
#[inline]
pub fn put_uvarlong(buf: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        buf.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    buf.put_u8(v as u8);
}

/// Writes a zigzag-encoded signed varint.
#[inline]
pub fn put_varint(buf: &mut BytesMut, v: i32) {
    put_uvarint(buf, ((v << 1) ^ (v >> 31)) as u32);
}

/// Writes a zigzag-encoded signed varlong.
#[inline]
pub fn put_varlong(buf: &mut BytesMut, v: i64) {
    put_uvarlong(buf, ((v << 1) ^ (v >> 63)) as u64);
}

/// Number of bytes [`put_uvarint`] writes for `v`.
#[inline]
pub const fn uvarint_len(v: u32) -> usize {
    crate::records::varint::uvarint_size(v as u64)
}

/// Number of bytes [`put_varint`] writes for `v`.
#[inline]
pub const fn varint_len(v: i32) -> usize {
    crate::records::varint::varint_size(v)
}

/// Number of bytes [`put_varlong`] writes for `v`.
#[inline]
pub const fn varlong_len(v: i64) -> usize {
    crate::records::varint::varlong_size(v)
}

/// Writes a bool as one byte.
#[inline]
pub fn put_bool(buf: &mut BytesMut, v: bool) {
    buf.put_u8(u8::from(v));
}

/// Writes a uuid.
#[inline]
pub fn put_uuid(buf: &mut BytesMut, v: &Uuid) {
    buf.put_slice(&v.0);
}

#[inline]
fn put_len(
    buf: &mut BytesMut,
    len: Option<usize>,
    compact: bool,
    wide: bool,
    what: &'static str,
) -> Result<(), EncodeError> {
    if compact {
        let n = match len {
            None => 0,
            Some(l) => u32::try_from(l).ok().and_then(|l| l.checked_add(1)).ok_or(EncodeError::TooLong {
                what,
                length: l,
                max: u32::MAX as usize - 1,
            })?,
        };
        put_uvarint(buf, n);
    } else if wide {
        let n = match len {
            None => -1,
            Some(l) => {
                i32::try_from(l).map_err(|_| EncodeError::TooLong { what, length: l, max: i32::MAX as usize })?
            }
        };
        buf.put_i32(n);
    } else {
        let n = match len {
            None => -1,
            Some(l) => {
                i16::try_from(l).map_err(|_| EncodeError::TooLong { what, length: l, max: i16::MAX as usize })?
            }
        };
        buf.put_i16(n);
    }
    Ok(())
}

/// Writes the length of a nullable bytes field (`None` for null), without the bytes:
/// for an encoder that hands the bytes on separately (see
/// [`ProduceRequest::encode_parts`](crate::messages::ProduceRequest::encode_parts)).
#[inline]
pub fn put_nullable_bytes_len(
    buf: &mut BytesMut,
    len: Option<usize>,
    compact: bool,
    what: &'static str,
) -> Result<(), EncodeError> {
    put_len(buf, len, compact, true, what)
}

/// Writes a nullable string.
#[inline]
pub fn put_nullable_string(
    buf: &mut BytesMut,
    v: Option<&str>,
    compact: bool,
    what: &'static str,
) -> Result<(), EncodeError> {
    put_len(buf, v.map(str::len), compact, false, what)?;
    if let Some(s) = v {
        buf.put_slice(s.as_bytes());
    }
    Ok(())
}

/// Writes a string.
#[inline]
pub fn put_string(buf: &mut BytesMut, v: &str, compact: bool, what: &'static str) -> Result<(), EncodeError> {
    put_nullable_string(buf, Some(v), compact, what)
}

/// Writes nullable bytes.
#[inline]
pub fn put_nullable_bytes(
    buf: &mut BytesMut,
    v: Option<&[u8]>,
    compact: bool,
    what: &'static str,
) -> Result<(), EncodeError> {
    put_nullable_bytes_len(buf, v.map(<[u8]>::len), compact, what)?;
    if let Some(b) = v {
        buf.put_slice(b);
    }
    Ok(())
}

/// Writes bytes.
#[inline]
pub fn put_bytes(buf: &mut BytesMut, v: &[u8], compact: bool, what: &'static str) -> Result<(), EncodeError> {
    put_nullable_bytes(buf, Some(v), compact, what)
}

/// Writes an array length (`None` for a null array).
#[inline]
pub fn put_array_len(
    buf: &mut BytesMut,
    len: Option<usize>,
    compact: bool,
    what: &'static str,
) -> Result<(), EncodeError> {
    put_len(buf, len, compact, true, what)
}

/// Writes one tagged field whose value was encoded into `data`.
#[inline]
pub fn put_tagged_field(buf: &mut BytesMut, tag: u32, data: &[u8]) {
    put_uvarint(buf, tag);
    put_uvarint(buf, data.len() as u32);
    buf.put_slice(data);
}

/// Writes the unknown tagged fields whose tag is below `below`, advancing the iterator.
/// Generated encoders call this before each known tagged field so that all tags are
/// written in ascending order.
#[inline]
pub fn put_unknown_tagged_below<'a>(
    buf: &mut BytesMut,
    unknown: &mut std::iter::Peekable<std::slice::Iter<'a, RawTaggedField>>,
    below: u64,
) {
    while let Some(f) = unknown.next_if(|f| u64::from(f.tag) < below) {
        put_tagged_field(buf, f.tag, &f.data);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn roundtrip_varint(v: i32) {
        let mut b = BytesMut::new();
        put_varint(&mut b, v);
        assert_eq!(b.len(), varint_len(v));
        let mut r = b.freeze();
        assert_eq!(get_varint(&mut r, "v").unwrap(), v);
        assert!(r.is_empty());
    }

    #[test]
    fn varints_roundtrip_at_the_edges() {
        for v in [0, 1, -1, 63, -64, 64, -65, 8191, -8192, i32::MAX, i32::MIN] {
            roundtrip_varint(v);
        }
        for v in [0i64, -1, 1, i64::MAX, i64::MIN, 1 << 40] {
            let mut b = BytesMut::new();
            put_varlong(&mut b, v);
            assert_eq!(b.len(), varlong_len(v));
            assert_eq!(get_varlong(&mut b.freeze(), "v").unwrap(), v);
        }
    }

    #[test]
    fn zigzag_matches_the_protocol_guide() {
        // 0 -> 0, -1 -> 1, 1 -> 2, -2 -> 3, 2 -> 4
        for (v, z) in [(0, 0u8), (-1, 1), (1, 2), (-2, 3), (2, 4)] {
            let mut b = BytesMut::new();
            put_varint(&mut b, v);
            assert_eq!(&b[..], &[z]);
        }
        let mut b = BytesMut::new();
        put_uvarint(&mut b, 300);
        assert_eq!(&b[..], &[0xac, 0x02]);
    }

    #[test]
    fn overlong_varints_are_rejected() {
        let mut b = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0xff, 0x01]);
        assert_eq!(get_uvarint(&mut b, "v"), Err(DecodeError::InvalidVarint { what: "v" }));
        let mut b = Bytes::from_static(&[0xff; 11]);
        assert_eq!(get_uvarlong(&mut b, "v"), Err(DecodeError::InvalidVarint { what: "v" }));
        let mut b = Bytes::from_static(&[0x80]);
        assert!(matches!(get_uvarint(&mut b, "v"), Err(DecodeError::Truncated { .. })));
    }

    #[test]
    fn lengths_are_checked_before_allocating() {
        let mut b = Bytes::from_static(&[0x7f, 0xff, 0xff, 0xff, 1, 2]);
        assert_eq!(
            get_array_len(&mut b, false, "a"),
            Err(DecodeError::LengthExceedsInput { what: "a", length: i32::MAX as usize, remaining: 2 })
        );
        let mut b = Bytes::from_static(&[0xff, 0xfe]);
        assert_eq!(get_nullable_string(&mut b, false, "s"), Err(DecodeError::InvalidLength { what: "s", length: -2 }));
        let mut b = Bytes::from_static(&[0xff, 0xff]);
        assert_eq!(get_string(&mut b, false, "s"), Ok(String::new()));
        let mut b = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff]);
        assert_eq!(get_bytes(&mut b, false, "b"), Err(DecodeError::UnexpectedNull { what: "b" }));
        let mut b = Bytes::from_static(&[0x00]);
        assert_eq!(get_nullable_string(&mut b, true, "s"), Ok(None));
        let mut b = Bytes::from_static(&[0x03, 0xff, 0xfe]);
        assert_eq!(get_nullable_string(&mut b, true, "s"), Err(DecodeError::InvalidUtf8 { what: "s" }));
    }

    #[test]
    fn strings_and_bytes_roundtrip_in_both_encodings() {
        for compact in [false, true] {
            let mut b = BytesMut::new();
            put_nullable_string(&mut b, Some("héllo"), compact, "s").unwrap();
            put_nullable_string(&mut b, None, compact, "s").unwrap();
            put_nullable_bytes(&mut b, Some(b"\x00\x01"), compact, "b").unwrap();
            put_nullable_bytes(&mut b, None, compact, "b").unwrap();
            let mut r = b.freeze();
            assert_eq!(get_nullable_string(&mut r, compact, "s").unwrap().as_deref(), Some("héllo"));
            assert_eq!(get_nullable_string(&mut r, compact, "s").unwrap(), None);
            assert_eq!(get_nullable_bytes(&mut r, compact, "b").unwrap().as_deref(), Some(&b"\x00\x01"[..]));
            assert_eq!(get_nullable_bytes(&mut r, compact, "b").unwrap(), None);
            assert!(r.is_empty());
        }
    }

    #[test]
    fn too_long_strings_are_refused() {
        let s = "x".repeat(i16::MAX as usize + 1);
        let mut b = BytesMut::new();
        assert!(matches!(put_string(&mut b, &s, false, "s"), Err(EncodeError::TooLong { .. })));
        assert!(put_string(&mut b, &s, true, "s").is_ok());
    }

    #[test]
    fn uuid_displays_hyphenated() {
        let u = Uuid::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        assert_eq!(u.to_string(), "01234567-89ab-cdef-0011-223344556677");
        assert!(Uuid::NIL.is_nil());
    }
}
