//! Zigzag varints on plain slices, with inlined one- and two-byte fast paths: record
//! fields are almost always that short, and these run once per field per record.

/// Why a varint could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum VarintFault {
    /// The input ended inside the varint.
    Truncated,
    /// The varint is longer than its type allows.
    Malformed,
}

#[inline(always)]
fn unzigzag32(v: u32) -> i32 {
    ((v >> 1) as i32) ^ -((v & 1) as i32)
}

#[inline(always)]
fn unzigzag64(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

/// Reads a zigzag varint (32 bits) at `*pos`, advancing `*pos`.
#[inline(always)]
pub(crate) fn read_varint(buf: &[u8], pos: &mut usize) -> Result<i32, VarintFault> {
    let p = *pos;
    if let Some(&b0) = buf.get(p) {
        if b0 < 0x80 {
            *pos = p + 1;
            return Ok(unzigzag32(u32::from(b0)));
        }
        if let Some(&b1) = buf.get(p + 1) {
            if b1 < 0x80 {
                *pos = p + 2;
                return Ok(unzigzag32(u32::from(b0 & 0x7f) | (u32::from(b1) << 7)));
            }
        }
    }
    read_uvarint_slow(buf, pos).map(unzigzag32)
}

#[cold]
#[inline(never)]
fn read_uvarint_slow(buf: &[u8], pos: &mut usize) -> Result<u32, VarintFault> {
    let mut value: u32 = 0;
    for i in 0..5 {
        let Some(&b) = buf.get(*pos + i) else {
            return Err(VarintFault::Truncated);
        };
        if i == 4 && b > 0x0f {
            return Err(VarintFault::Malformed);
        }
        value |= u32::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            *pos += i + 1;
            return Ok(value);
        }
    }
    Err(VarintFault::Malformed)
}

/// Reads a zigzag varlong (64 bits) at `*pos`, advancing `*pos`.
#[inline(always)]
pub(crate) fn read_varlong(buf: &[u8], pos: &mut usize) -> Result<i64, VarintFault> {
    let p = *pos;
    if let Some(&b0) = buf.get(p) {
        if b0 < 0x80 {
            *pos = p + 1;
            return Ok(unzigzag64(u64::from(b0)));
        }
        if let Some(&b1) = buf.get(p + 1) {
            if b1 < 0x80 {
                *pos = p + 2;
                return Ok(unzigzag64(u64::from(b0 & 0x7f) | (u64::from(b1) << 7)));
            }
        }
    }
    read_uvarlong_slow(buf, pos).map(unzigzag64)
}

#[cold]
#[inline(never)]
fn read_uvarlong_slow(buf: &[u8], pos: &mut usize) -> Result<u64, VarintFault> {
    let mut value: u64 = 0;
    for i in 0..10 {
        let Some(&b) = buf.get(*pos + i) else {
            return Err(VarintFault::Truncated);
        };
        if i == 9 && b > 0x01 {
            return Err(VarintFault::Malformed);
        }
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            *pos += i + 1;
            return Ok(value);
        }
    }
    Err(VarintFault::Malformed)
}

/// Bytes a zigzag varint takes for `v`.
#[inline(always)]
pub(crate) const fn varint_size(v: i32) -> usize {
    let z = ((v << 1) ^ (v >> 31)) as u32;
    ((38 - (z | 1).leading_zeros()) / 7) as usize
}

/// Bytes a zigzag varlong takes for `v`.
#[inline(always)]
pub(crate) const fn varlong_size(v: i64) -> usize {
    let z = ((v << 1) ^ (v >> 63)) as u64;
    ((70 - (z | 1).leading_zeros()) / 7) as usize
}

/// Most bytes a record's fixed prefix can take: length, attributes, timestamp delta,
/// offset delta and key length (5 + 1 + 10 + 5 + 5), rounded up.
pub(crate) const SCRATCH: usize = 32;

/// Writes a zigzag varint into `out` at `n`, returning the new end.
#[inline(always)]
pub(crate) fn put_varint(out: &mut [u8; SCRATCH], n: usize, v: i32) -> usize {
    put_uvarlong(out, n, u64::from(((v << 1) ^ (v >> 31)) as u32))
}

/// Writes a zigzag varlong into `out` at `n`, returning the new end.
#[inline(always)]
pub(crate) fn put_varlong(out: &mut [u8; SCRATCH], n: usize, v: i64) -> usize {
    put_uvarlong(out, n, ((v << 1) ^ (v >> 63)) as u64)
}

#[inline(always)]
fn put_uvarlong(out: &mut [u8; SCRATCH], mut n: usize, mut v: u64) -> usize {
    // Callers write at most 26 bytes (see SCRATCH), so `n` stays in bounds; the masks
    // keep the compiler from proving otherwise with a panic path.
    while v >= 0x80 {
        out[n & (SCRATCH - 1)] = (v as u8) | 0x80;
        v >>= 7;
        n += 1;
    }
    out[n & (SCRATCH - 1)] = v as u8;
    n + 1
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use bytes::BytesMut;

    #[test]
    fn agrees_with_the_wire_module() {
        let samples32 = [
            0,
            1,
            -1,
            63,
            -64,
            64,
            -65,
            8191,
            -8192,
            8192,
            1 << 20,
            -(1 << 27),
            i32::MAX,
            i32::MIN,
        ];
        for v in samples32 {
            let mut reference = BytesMut::new();
            crate::wire::put_varint(&mut reference, v);
            let mut out = [0u8; SCRATCH];
            let n = put_varint(&mut out, 0, v);
            assert_eq!(&out[..n], &reference[..], "{v}");
            assert_eq!(varint_size(v), n);
            let mut pos = 0;
            assert_eq!(read_varint(&out[..n], &mut pos), Ok(v));
            assert_eq!(pos, n);
        }
        let samples64 = [
            0,
            1,
            -1,
            1 << 13,
            -(1 << 13),
            1 << 40,
            i64::MAX,
            i64::MIN,
            i64::from(i32::MIN),
        ];
        for v in samples64 {
            let mut reference = BytesMut::new();
            crate::wire::put_varlong(&mut reference, v);
            let mut out = [0u8; SCRATCH];
            let n = put_varlong(&mut out, 0, v);
            assert_eq!(&out[..n], &reference[..], "{v}");
            assert_eq!(varlong_size(v), n);
            let mut pos = 0;
            assert_eq!(read_varlong(&out[..n], &mut pos), Ok(v));
            assert_eq!(pos, n);
        }
    }

    #[test]
    fn faults_are_reported() {
        let mut pos = 0;
        assert_eq!(read_varint(&[0x80], &mut pos), Err(VarintFault::Truncated));
        assert_eq!(
            read_varint(&[0x80, 0x80], &mut pos),
            Err(VarintFault::Truncated)
        );
        assert_eq!(
            read_varint(&[0xff, 0xff, 0xff, 0xff, 0x1f], &mut pos),
            Err(VarintFault::Malformed)
        );
        assert_eq!(
            read_varlong(&[0xff; 10], &mut pos),
            Err(VarintFault::Malformed)
        );
        assert_eq!(read_varlong(&[], &mut pos), Err(VarintFault::Truncated));
        assert_eq!(pos, 0);
    }
}
