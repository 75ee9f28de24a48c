//! Decodes arbitrary bytes as a framed request, the way a server reads them: never a
//! panic, and whatever decodes re-encodes to a frame that decodes to the same value.
#![no_main]

use bytes::{Bytes, BytesMut};
use klife_protocol::frame;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok((header, request)) = frame::decode_request(Bytes::copy_from_slice(data)) else { return };
    let version = header.request_api_version;
    let mut buf = BytesMut::new();
    frame::encode_any_request(&mut buf, header.correlation_id, header.client_id.as_deref(), version, &request)
        .expect("a decoded request re-encodes at its version");
    let first = buf.clone().freeze();
    let body = frame::split_frame(&mut buf, usize::MAX).expect("valid frame").expect("complete frame");
    let (header2, request2) = frame::decode_request(body).expect("re-encoded request decodes");
    assert_eq!(header2.correlation_id, header.correlation_id);
    // Compared as bytes, not values: a float64 field may hold NaN, which is not equal
    // to itself.
    let mut again = BytesMut::new();
    frame::encode_any_request(&mut again, header2.correlation_id, header2.client_id.as_deref(), version, &request2)
        .expect("it re-encodes again");
    assert_eq!(again.freeze(), first);
});
