//! Decodes arbitrary bytes as a classic group member's subscription and as a leader's
//! assignment: never a panic, and whatever decodes re-encodes at the highest version
//! to bytes that decode to the same value.
#![no_main]

use bytes::Bytes;
use klife_group::protocol::{ASSIGNMENT_VERSION, Assignment, SUBSCRIPTION_VERSION, Subscription};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let bytes = Bytes::copy_from_slice(data);
    if let Ok(sub) = Subscription::decode(bytes.clone()) {
        let again = sub.encode(SUBSCRIPTION_VERSION).expect("a decoded subscription re-encodes");
        assert_eq!(Subscription::decode(again).expect("re-encoded subscription decodes"), sub);
    }
    if let Ok(assignment) = Assignment::decode(bytes) {
        let again = assignment.encode(ASSIGNMENT_VERSION).expect("a decoded assignment re-encodes");
        assert_eq!(Assignment::decode(again).expect("re-encoded assignment decodes"), assignment);
    }
});
