//! Indexing the records section of a batch: one pass that checks every length and
//! records where each key, value and header lies.
//!
//! The parser is generic over how it reports errors. The hot pass runs with [`Bail`],
//! a zero-sized error, so the loop carries no error payloads; only when it fails is the
//! offending record parsed again with [`DecodeError`] to say exactly what is wrong.

use std::ops::Range;

use super::varint::{VarintFault, read_varint, read_varlong};
use crate::error::DecodeError;

/// The smallest record: length, attributes, timestamp delta, offset delta, key length,
/// value length and header count, one byte each.
const MIN_RECORD_SIZE: usize = 7;

/// A byte range in the batch's buffer; a negative `len` is null.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Span {
    pub(super) start: u32,
    pub(super) len: i32,
}

impl Span {
    const NULL: Span = Span { start: 0, len: -1 };

    #[inline]
    pub(super) fn range(self) -> Option<Range<usize>> {
        let len = usize::try_from(self.len).ok()?;
        let start = self.start as usize;
        Some(start..start + len)
    }
}

/// One record's position in the batch buffer: 40 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct Entry {
    pub(super) timestamp_delta: i64,
    pub(super) offset_delta: i32,
    pub(super) key: Span,
    pub(super) value: Span,
    pub(super) headers_start: u32,
    pub(super) headers_len: u32,
    pub(super) attributes: i8,
}

/// One header's position in the batch buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct HeaderEntry {
    pub(super) key: Span,
    pub(super) value: Span,
}

/// How the parser reports an error.
trait Fault: Sized {
    fn varint(fault: VarintFault, what: &'static str, remaining: usize) -> Self;
    fn length(what: &'static str, length: i64, remaining: usize) -> Self;
    fn truncated(what: &'static str, needed: usize, remaining: usize) -> Self;
    fn trailing(what: &'static str, remaining: usize) -> Self;
    fn utf8(what: &'static str) -> Self;
}

/// "Something is wrong", nothing more: the fast pass's error.
struct Bail;

impl Fault for Bail {
    #[inline(always)]
    fn varint(_: VarintFault, _: &'static str, _: usize) -> Self {
        Bail
    }
    #[inline(always)]
    fn length(_: &'static str, _: i64, _: usize) -> Self {
        Bail
    }
    #[inline(always)]
    fn truncated(_: &'static str, _: usize, _: usize) -> Self {
        Bail
    }
    #[inline(always)]
    fn trailing(_: &'static str, _: usize) -> Self {
        Bail
    }
    #[inline(always)]
    fn utf8(_: &'static str) -> Self {
        Bail
    }
}

impl Fault for DecodeError {
    fn varint(fault: VarintFault, what: &'static str, remaining: usize) -> Self {
        match fault {
            VarintFault::Truncated => DecodeError::Truncated { what, needed: remaining + 1, remaining },
            VarintFault::Malformed => DecodeError::InvalidVarint { what },
        }
    }
    fn length(what: &'static str, length: i64, remaining: usize) -> Self {
        match usize::try_from(length) {
            Ok(length) => DecodeError::LengthExceedsInput { what, length, remaining },
            Err(_) => DecodeError::InvalidLength { what, length },
        }
    }
    fn truncated(what: &'static str, needed: usize, remaining: usize) -> Self {
        DecodeError::Truncated { what, needed, remaining }
    }
    fn trailing(what: &'static str, remaining: usize) -> Self {
        DecodeError::TrailingBytes { what, remaining }
    }
    fn utf8(what: &'static str) -> Self {
        DecodeError::InvalidUtf8 { what }
    }
}

/// Indexes `count` records that must fill `data` exactly. `data` is at most
/// `u32::MAX` bytes long.
pub(super) fn index_records(data: &[u8], count: i32) -> Result<(Vec<Entry>, Vec<HeaderEntry>), DecodeError> {
    let Ok(count) = usize::try_from(count) else {
        return Err(DecodeError::InvalidLength { what: "record batch records count", length: count.into() });
    };
    if count > data.len() / MIN_RECORD_SIZE {
        return Err(DecodeError::LengthExceedsInput {
            what: "record batch records count",
            length: count,
            remaining: data.len(),
        });
    }
    let mut entries = Vec::with_capacity(count);
    let mut headers = Vec::new();
    let mut pos = 0;
    for _ in 0..count {
        if let Some((entry, next)) = plain_record(data, pos) {
            entries.push(entry);
            pos = next;
            continue;
        }
        let at = pos;
        match index_record::<Bail>(data, &mut pos, &mut headers) {
            Ok(entry) => entries.push(entry),
            Err(Bail) => return Err(explain(data, at)),
        }
    }
    if pos != data.len() {
        return Err(DecodeError::TrailingBytes { what: "record batch records", remaining: data.len() - pos });
    }
    Ok((entries, headers))
}

/// Parses the record at `at` again, reporting what is wrong with it.
#[cold]
#[inline(never)]
fn explain(data: &[u8], at: usize) -> DecodeError {
    let mut pos = at;
    match index_record::<DecodeError>(data, &mut pos, &mut Vec::new()) {
        Err(e) => e,
        Ok(_) => DecodeError::Invalid { what: "record", reason: "malformed record" },
    }
}

#[inline(always)]
fn varint<E: Fault>(rec: &[u8], p: &mut usize, what: &'static str) -> Result<i32, E> {
    read_varint(rec, p).map_err(|f| E::varint(f, what, rec.len().saturating_sub(*p)))
}

/// Reads a length-prefixed byte string in `rec` at `*p` (`-1` is null when `nullable`),
/// returning where it lies in the batch buffer (`rec` starts at `base` there).
#[inline(always)]
fn span<E: Fault>(rec: &[u8], p: &mut usize, base: usize, nullable: bool, what: &'static str) -> Result<Span, E> {
    let len = varint(rec, p, what)?;
    span_of(rec, p, base, len, nullable, what)
}

/// [`span`] after its length was read.
#[inline(always)]
fn span_of<E: Fault>(
    rec: &[u8],
    p: &mut usize,
    base: usize,
    len: i32,
    nullable: bool,
    what: &'static str,
) -> Result<Span, E> {
    let start = *p;
    let remaining = rec.len() - start;
    match usize::try_from(len) {
        Ok(n) if n <= remaining => {
            *p = start + n;
            Ok(Span { start: (base + start) as u32, len })
        }
        Err(_) if len == -1 && nullable => Ok(Span::NULL),
        _ => Err(E::length(what, len.into(), remaining)),
    }
}

/// Reads a zigzag varint of one or two bytes at `*i` in a 16-byte window; `None` if it
/// is longer. The masks keep every index in the window.
#[inline(always)]
fn short_varint(w: &[u8; 16], i: &mut usize) -> Option<i32> {
    let b0 = u32::from(w[*i & 15]);
    let z = if b0 < 0x80 {
        *i += 1;
        b0
    } else {
        let b1 = u32::from(w[(*i + 1) & 15]);
        if b1 >= 0x80 {
            return None;
        }
        *i += 2;
        (b0 & 0x7f) | (b1 << 7)
    };
    Some(((z >> 1) as i32) ^ -((z & 1) as i32))
}

/// The fast path for a record's first fields: when the record has at least 16 bytes and
/// its timestamp delta, offset delta and key length take one or two bytes each (almost
/// always), reads them from a fixed window without bounds checks. Returns them and the
/// position after them.
#[inline(always)]
fn short_fields(rec: &[u8]) -> Option<(i32, i32, i32, usize)> {
    let w = rec.first_chunk::<16>()?;
    let mut i = 1;
    let t = short_varint(w, &mut i)?;
    let o = short_varint(w, &mut i)?;
    let k = short_varint(w, &mut i)?;
    Some((t, o, k, i))
}

/// The fast path for the usual record: no headers, and length, timestamp delta, offset
/// delta and key length of one or two bytes each, all in a 16-byte window. Returns the
/// entry and where the next record starts, or `None` to leave the record (valid or not)
/// to [`index_record`]. Accepts exactly the records of that shape that `index_record`
/// accepts, and indexes them the same way.
#[inline(always)]
fn plain_record(data: &[u8], pos: usize) -> Option<(Entry, usize)> {
    let w = data.get(pos..)?.first_chunk::<16>()?;
    let mut i = 0;
    let len = usize::try_from(short_varint(w, &mut i)?).ok()?;
    let base = pos + i;
    let end = base.checked_add(len).filter(|&e| e <= data.len())?;
    let attributes = w[i & 15] as i8;
    i += 1;
    let timestamp_delta = short_varint(w, &mut i)?;
    let offset_delta = short_varint(w, &mut i)?;
    let key_len = short_varint(w, &mut i)?;
    let mut p = pos + i;
    let key = match usize::try_from(key_len) {
        Ok(n) if n <= end.checked_sub(p)? => {
            p += n;
            Span { start: (p - n) as u32, len: key_len }
        }
        Err(_) if key_len == -1 => Span::NULL,
        _ => return None,
    };
    // `p <= end` from here on; the record ends with the value and a zero header count.
    let value_len = read_varint(data, &mut p).ok()?;
    let value_size = usize::try_from(value_len).unwrap_or(0);
    if value_len < -1 || p.checked_add(value_size)?.checked_add(1)? != end || data.get(end - 1) != Some(&0) {
        return None;
    }
    let value = if value_len < 0 { Span::NULL } else { Span { start: p as u32, len: value_len } };
    Some((
        Entry {
            timestamp_delta: timestamp_delta.into(),
            offset_delta,
            key,
            value,
            headers_start: 0,
            headers_len: 0,
            attributes,
        },
        end,
    ))
}

/// Indexes the record at `*pos`, appending its headers to `headers`.
#[inline(always)]
fn index_record<E: Fault>(data: &[u8], pos: &mut usize, headers: &mut Vec<HeaderEntry>) -> Result<Entry, E> {
    let len = varint(data, pos, "record length")?;
    let base = *pos;
    let rest = data.get(base..).unwrap_or_default();
    let rec = match usize::try_from(len) {
        Ok(n) if n <= rest.len() => &rest[..n],
        _ => return Err(E::length("record length", len.into(), rest.len())),
    };
    let Some((&attributes, _)) = rec.split_first() else {
        return Err(E::truncated("record attributes", 1, 0));
    };
    let mut p = 1;
    let (timestamp_delta, offset_delta, key_len) = match short_fields(rec) {
        Some((t, o, k, end)) => {
            p = end;
            (t.into(), o, k)
        }
        None => (
            read_varlong(rec, &mut p).map_err(|f| E::varint(f, "record timestamp delta", rec.len() - p))?,
            varint(rec, &mut p, "record offset delta")?,
            varint(rec, &mut p, "record key")?,
        ),
    };
    let key = span_of(rec, &mut p, base, key_len, true, "record key")?;
    let value = span(rec, &mut p, base, true, "record value")?;
    let header_count = varint(rec, &mut p, "record header count")?;
    let headers_start = headers.len() as u32;
    if header_count != 0 {
        index_headers(rec, &mut p, base, header_count, headers)?;
    }
    if p != rec.len() {
        return Err(E::trailing("record", rec.len() - p));
    }
    *pos = base + rec.len();
    Ok(Entry {
        timestamp_delta,
        offset_delta,
        key,
        value,
        headers_start,
        headers_len: header_count as u32,
        attributes: attributes as i8,
    })
}

fn index_headers<E: Fault>(
    rec: &[u8],
    p: &mut usize,
    base: usize,
    count: i32,
    headers: &mut Vec<HeaderEntry>,
) -> Result<(), E> {
    let remaining = rec.len() - *p;
    // Every header takes at least two bytes (key length and value length).
    match usize::try_from(count) {
        Ok(n) if n <= remaining / 2 => headers.reserve(n),
        _ => {
            return Err(E::length("record header count", count.into(), remaining / 2));
        }
    }
    for _ in 0..count {
        let key = span(rec, p, base, false, "record header key")?;
        let key_bytes = key.range().and_then(|r| rec.get(r.start - base..r.end - base)).unwrap_or_default();
        if std::str::from_utf8(key_bytes).is_err() {
            return Err(E::utf8("record header key"));
        }
        let value = span(rec, p, base, true, "record header value")?;
        headers.push(HeaderEntry { key, value });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;

    use super::*;

    /// One encoded record (no length-prefix games): length, attributes 0, timestamp
    /// delta, offset delta, key, value, no headers.
    fn record(ts: i64, off: i32, key: Option<&[u8]>, value: Option<&[u8]>) -> Vec<u8> {
        let mut body = bytes::BytesMut::new();
        body.extend_from_slice(&[0]);
        crate::wire::put_varlong(&mut body, ts);
        crate::wire::put_varint(&mut body, off);
        for field in [key, value] {
            match field {
                None => crate::wire::put_varint(&mut body, -1),
                Some(b) => {
                    crate::wire::put_varint(&mut body, b.len() as i32);
                    body.extend_from_slice(b);
                }
            }
        }
        body.extend_from_slice(&[0]);
        let mut out = bytes::BytesMut::new();
        crate::wire::put_varint(&mut out, body.len() as i32);
        out.extend_from_slice(&body);
        out.to_vec()
    }

    /// Whenever the fast path takes a record, the general parser agrees with it.
    fn agree(data: &[u8]) -> Result<(), TestCaseError> {
        if let Some((fast, next)) = plain_record(data, 0) {
            let mut pos = 0;
            let general = index_record::<DecodeError>(data, &mut pos, &mut Vec::new());
            prop_assert_eq!(general, Ok(fast));
            prop_assert_eq!(pos, next);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        #[test]
        fn fast_path_agrees_with_the_general_parser(
            ts in -20_000i64..20_000,
            off in -20_000i32..20_000,
            key in prop::option::of(prop::collection::vec(any::<u8>(), 0..20)),
            value in prop::option::of(prop::collection::vec(any::<u8>(), 0..40)),
            tail in prop::collection::vec(any::<u8>(), 0..20),
            flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..3),
        ) {
            let mut data = record(ts, off, key.as_deref(), value.as_deref());
            let valid_len = data.len();
            data.extend_from_slice(&tail);
            if flips.is_empty() {
                let (entry, next) = plain_record(&data, 0)
                    .map_or_else(|| (None, 0), |(e, n)| (Some(e), n));
                // Short fields and enough bytes for the window: the fast path takes it.
                if data.len() >= 16 && ts.unsigned_abs() < 8192 && off.unsigned_abs() < 8192 {
                    prop_assert!(entry.is_some());
                    prop_assert_eq!(next, valid_len);
                }
            }
            for (at, byte) in &flips {
                let i = at.index(valid_len);
                data[i] = *byte;
            }
            agree(&data)?;
        }

        #[test]
        fn fast_path_agrees_on_arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..48)) {
            agree(&data)?;
        }
    }
}
