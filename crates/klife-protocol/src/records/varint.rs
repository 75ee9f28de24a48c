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

/// Bytes an unsigned varint takes for `z`; short values, by far the most common, are
/// decided by comparisons alone.
#[inline(always)]
pub(crate) const fn uvarint_size(z: u64) -> usize {
    if z < 0x80 {
        1
    } else if z < 0x4000 {
        2
    } else {
        ((70 - (z | 1).leading_zeros()) / 7) as usize
    }
}

/// Bytes a zigzag varint takes for `v`.
#[inline(always)]
pub(crate) const fn varint_size(v: i32) -> usize {
    uvarint_size(zigzag32(v))
}

/// Bytes a zigzag varlong takes for `v`.
#[inline(always)]
pub(crate) const fn varlong_size(v: i64) -> usize {
    uvarint_size(zigzag64(v))
}

#[inline(always)]
pub(crate) const fn zigzag32(v: i32) -> u64 {
    ((v << 1) ^ (v >> 31)) as u32 as u64
}

#[inline(always)]
pub(crate) const fn zigzag64(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Writes a varint of three bytes or more at `pos`; returns the position after it.
#[cold]
#[inline(never)]
fn put_long_varint(dst: &mut [u8], mut pos: usize, mut z: u64) -> usize {
    while z >= 0x80 {
        dst[pos] = (z as u8) | 0x80;
        z >>= 7;
        pos += 1;
    }
    dst[pos] = z as u8;
    pos + 1
}

/// Writes into a slice at a cursor, collecting the short varints and bytes between a
/// record's payloads in a register and storing them eight bytes at a time.
///
/// Every store is eight bytes wide even when fewer are pending, so the slice needs
/// [`Cursor::SLACK`] spare bytes past the data: what lands there is overwritten by the
/// next write or cut off at the end. Indexing is checked, so a caller that gets the
/// sizes wrong panics instead of writing out of bounds.
pub(crate) struct Cursor<'a> {
    dst: &'a mut [u8],
    pos: usize,
    bits: u64,
    len: u32,
}

impl<'a> Cursor<'a> {
    /// Spare bytes a cursor may write past the data.
    pub(crate) const SLACK: usize = 8;

    /// A cursor writing at `pos`.
    #[inline(always)]
    pub(crate) fn new(dst: &'a mut [u8], pos: usize) -> Self {
        Cursor { dst, pos, bits: 0, len: 0 }
    }

    /// Queues one byte.
    #[inline(always)]
    pub(crate) fn byte(&mut self, b: u8) {
        if self.len == 8 {
            self.flush();
        }
        self.bits |= u64::from(b) << (8 * self.len);
        self.len += 1;
    }

    /// Queues an unsigned varint (a zigzag value from [`zigzag32`] or [`zigzag64`]).
    #[inline(always)]
    pub(crate) fn varint(&mut self, z: u64) {
        let (bits, len) = if z < 0x80 {
            (z, 1)
        } else if z < 0x4000 {
            ((z & 0x7f) | 0x80 | ((z >> 7) << 8), 2)
        } else {
            self.flush();
            self.pos = put_long_varint(self.dst, self.pos, z);
            return;
        };
        if self.len + len > 8 {
            self.flush();
        }
        self.bits |= bits << (8 * self.len);
        self.len += len;
    }

    /// Writes what is pending.
    #[inline(always)]
    pub(crate) fn flush(&mut self) {
        if self.len != 0 {
            self.dst[self.pos..self.pos + 8].copy_from_slice(&self.bits.to_le_bytes());
            self.pos += self.len as usize;
            self.bits = 0;
            self.len = 0;
        }
    }

    /// Writes what is pending, then `bytes`.
    #[inline(always)]
    pub(crate) fn bytes(&mut self, bytes: &[u8]) {
        self.flush();
        self.dst[self.pos..self.pos + bytes.len()].copy_from_slice(bytes);
        self.pos += bytes.len();
    }

    /// Writes what is pending and returns the position after it.
    #[inline(always)]
    pub(crate) fn finish(mut self) -> usize {
        self.flush();
        self.pos
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use bytes::BytesMut;

    #[test]
    fn agrees_with_the_wire_module() {
        let samples32 = [0, 1, -1, 63, -64, 64, -65, 8191, -8192, 8192, 1 << 20, -(1 << 27), i32::MAX, i32::MIN];
        for v in samples32 {
            let mut reference = BytesMut::new();
            crate::wire::put_varint(&mut reference, v);
            let mut out = [0u8; 24];
            let mut c = Cursor::new(&mut out, 0);
            c.varint(zigzag32(v));
            let n = c.finish();
            assert_eq!(&out[..n], &reference[..], "{v}");
            assert_eq!(varint_size(v), n);
            let mut pos = 0;
            assert_eq!(read_varint(&out[..n], &mut pos), Ok(v));
            assert_eq!(pos, n);
        }
        let samples64 = [0, 1, -1, 1 << 13, -(1 << 13), 1 << 40, i64::MAX, i64::MIN, i64::from(i32::MIN)];
        for v in samples64 {
            let mut reference = BytesMut::new();
            crate::wire::put_varlong(&mut reference, v);
            let mut out = [0u8; 24];
            let mut c = Cursor::new(&mut out, 0);
            c.varint(zigzag64(v));
            let n = c.finish();
            assert_eq!(&out[..n], &reference[..], "{v}");
            assert_eq!(varlong_size(v), n);
            let mut pos = 0;
            assert_eq!(read_varlong(&out[..n], &mut pos), Ok(v));
            assert_eq!(pos, n);
        }
    }

    #[test]
    fn cursor_writes_long_sequences_in_order() {
        let values: Vec<i64> = (0..40).map(|i| (1i64 << (i * 3 % 64)).wrapping_sub(7 * i)).collect();
        let mut reference = BytesMut::from(&b"x"[..]);
        let mut out = vec![0u8; 1000];
        out[0] = b'x';
        let mut c = Cursor::new(&mut out, 1);
        for (i, &v) in values.iter().enumerate() {
            crate::wire::put_varlong(&mut reference, v);
            c.varint(zigzag64(v));
            reference.extend_from_slice(&[i as u8]);
            c.byte(i as u8);
            if i % 7 == 0 {
                reference.extend_from_slice(b"payload");
                c.bytes(b"payload");
            }
        }
        let n = c.finish();
        assert_eq!(&out[..n], &reference[..]);
    }

    #[test]
    fn faults_are_reported() {
        let mut pos = 0;
        assert_eq!(read_varint(&[0x80], &mut pos), Err(VarintFault::Truncated));
        assert_eq!(read_varint(&[0x80, 0x80], &mut pos), Err(VarintFault::Truncated));
        assert_eq!(read_varint(&[0xff, 0xff, 0xff, 0xff, 0x1f], &mut pos), Err(VarintFault::Malformed));
        assert_eq!(read_varlong(&[0xff; 10], &mut pos), Err(VarintFault::Malformed));
        assert_eq!(read_varlong(&[], &mut pos), Err(VarintFault::Truncated));
        assert_eq!(pos, 0);
    }
}
