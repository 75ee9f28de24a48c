//! A fast hasher for the producer's internal maps, keyed by topic names and partitions
//! that the application itself chooses (so hash flooding is not a concern). It is the
//! "Fx" hash of rustc and Firefox: one rotate, xor and multiply per word, where std's
//! SipHash costs some 20 ns per short key on the per-record path.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A `HashMap` with [`FxHasher`].
pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// The Fx hash. Not for keys chosen by an adversary.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FxHasher {
    hash: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            self.add(u64::from_le_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]));
        }
        let mut tail = words.remainder();
        if !tail.is_empty() {
            // Fixed-size reads: a variable-length copy would call `memcpy`.
            let len = tail.len() as u64;
            let (mut last, mut shift) = (0u64, 0);
            if let Some((four, rest)) = tail.split_first_chunk::<4>() {
                last = u64::from(u32::from_le_bytes(*four));
                (tail, shift) = (rest, 32);
            }
            if let Some((two, rest)) = tail.split_first_chunk::<2>() {
                last |= u64::from(u16::from_le_bytes(*two)) << shift;
                (tail, shift) = (rest, shift + 16);
            }
            if let Some(&one) = tail.first() {
                last |= u64::from(one) << shift;
            }
            // The length keeps "a" and "a\0" apart.
            self.add(last ^ (len << 59));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_i32(&mut self, i: i32) {
        self.add(u64::from(i as u32));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

#[cfg(test)]
mod tests {
    use std::hash::BuildHasher;

    use super::*;

    #[test]
    fn equal_keys_hash_equal_and_close_keys_apart() {
        let b = BuildHasherDefault::<FxHasher>::default();
        assert_eq!(b.hash_one(("orders", 3)), b.hash_one(("orders", 3)));
        assert_ne!(b.hash_one(("orders", 3)), b.hash_one(("orders", 4)));
        assert_ne!(b.hash_one("a"), b.hash_one("a\0"));
        for len in 0..20 {
            let s: String = "abcdefghijklmnopqrstuvwxyz"[..len].into();
            let t = format!("{}z", &s[..len.saturating_sub(1)]);
            assert_eq!(b.hash_one(s.as_str()), b.hash_one(s.clone().as_str()));
            if len > 0 && s != t {
                assert_ne!(b.hash_one(s.as_str()), b.hash_one(t.as_str()), "{s} {t}");
            }
        }
        let mut m: FastMap<String, i32> = FastMap::default();
        m.insert("t".into(), 1);
        assert_eq!(m.get("t"), Some(&1));
    }
}
