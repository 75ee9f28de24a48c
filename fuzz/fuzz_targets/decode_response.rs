//! Decodes arbitrary bytes as a response of any api key and version: never a panic,
//! and whatever decodes re-encodes to bytes that decode to a value that re-encodes to
//! the same bytes.
#![no_main]

use bytes::{Bytes, BytesMut};
use klife_protocol::{AnyResponse, ApiKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [k, v, rest @ ..] = data else { return };
    let api_key = ApiKey::ALL[usize::from(*k) % ApiKey::ALL.len()];
    let range = api_key.versions();
    let version = range.min + i16::from(*v) % (range.max - range.min + 1);
    let mut input = Bytes::copy_from_slice(rest);
    if let Ok(response) = AnyResponse::decode(api_key, &mut input, version) {
        let mut buf = BytesMut::new();
        response.encode(&mut buf, version).expect("a decoded response re-encodes at its version");
        let first = buf.freeze();
        let again = AnyResponse::decode(api_key, &mut first.clone(), version).expect("re-encoded bytes decode");
        // Compared as bytes, not values: a float64 field may hold NaN, which is not
        // equal to itself.
        let mut buf = BytesMut::new();
        again.encode(&mut buf, version).expect("it re-encodes again");
        assert_eq!(buf.freeze(), first);
    }
});
