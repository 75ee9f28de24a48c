//! Random values for property tests and fuzzing: every generated message can produce
//! a random instance that is valid for a given version.

use arbitrary::{Result, Unstructured};
use bytes::{Bytes, BytesMut};

use crate::Message;
use crate::wire::RawTaggedField;

/// Most elements in a random array (keeps nested messages small).
const MAX_ARRAY: usize = 3;
/// Most bytes in a random string or byte string.
const MAX_BYTES: usize = 24;

/// A message that can produce a random value valid for a version.
pub trait ArbitraryMessage: Message {
    /// A random value that is valid for `version`.
    fn arbitrary_for_version(u: &mut Unstructured<'_>, version: i16) -> Result<Self>;
}

/// A random finite `f64` (NaN would not compare equal to itself).
pub fn arb_f64(u: &mut Unstructured<'_>) -> Result<f64> {
    let v: f64 = u.arbitrary()?;
    Ok(if v.is_finite() { v } else { 0.0 })
}

/// A short random string.
pub fn arb_string(u: &mut Unstructured<'_>) -> Result<String> {
    let len = u.int_in_range(0..=MAX_BYTES)?;
    let mut s = String::with_capacity(len);
    for _ in 0..len {
        s.push(u.arbitrary::<char>()?);
    }
    Ok(s)
}

/// A short random byte string.
pub fn arb_bytes(u: &mut Unstructured<'_>) -> Result<Bytes> {
    let len = u.int_in_range(0..=MAX_BYTES)?;
    Ok(Bytes::copy_from_slice(u.bytes(len)?))
}

/// A short random array.
pub fn arb_vec<T>(u: &mut Unstructured<'_>, mut f: impl FnMut(&mut Unstructured<'_>) -> Result<T>) -> Result<Vec<T>> {
    let len = u.int_in_range(0..=MAX_ARRAY)?;
    (0..len).map(|_| f(u)).collect()
}

/// Random unknown tagged fields: ascending tags that avoid the `known` ones.
pub fn arb_unknown_tagged(u: &mut Unstructured<'_>, known: &[u32]) -> Result<Vec<RawTaggedField>> {
    let n = u.int_in_range(0..=2)?;
    let mut tags: Vec<u32> = Vec::with_capacity(n);
    for _ in 0..n {
        let t = u.int_in_range(0..=20_000u32)?;
        if !known.contains(&t) && !tags.contains(&t) {
            tags.push(t);
        }
    }
    tags.sort_unstable();
    tags.into_iter().map(|tag| Ok(RawTaggedField { tag, data: arb_bytes(u)? })).collect()
}

/// A round-trip check over random input, for one message type across its versions.
pub type RoundtripCheck = fn(&[u8]) -> std::result::Result<(), String>;

/// For every version of `M`: a random value encodes, decodes to an equal value, and
/// encodes again to the same bytes.
pub fn roundtrip<M: ArbitraryMessage>(data: &[u8]) -> std::result::Result<(), String> {
    for version in M::VERSIONS.min..=M::VERSIONS.max {
        let mut u = Unstructured::new(data);
        let Ok(value) = M::arbitrary_for_version(&mut u, version) else { continue };
        let mut buf = BytesMut::new();
        value.encode(&mut buf, version).map_err(|e| format!("{} v{version}: encode: {e}\n{value:#?}", M::NAME))?;
        let bytes = buf.freeze();
        let mut input = bytes.clone();
        let decoded =
            M::decode(&mut input, version).map_err(|e| format!("{} v{version}: decode: {e}\n{value:#?}", M::NAME))?;
        if !input.is_empty() {
            return Err(format!("{} v{version}: {} bytes left after decode", M::NAME, input.len()));
        }
        if decoded != value {
            return Err(format!("{} v{version}: decoded value differs\nwrote {value:#?}\nread {decoded:#?}", M::NAME));
        }
        let mut again = BytesMut::new();
        decoded.encode(&mut again, version).map_err(|e| format!("{} v{version}: re-encode: {e}", M::NAME))?;
        if again.freeze() != bytes {
            return Err(format!("{} v{version}: re-encoding gives different bytes", M::NAME));
        }
    }
    Ok(())
}
