//! Declarations of the few librdkafka functions that take error codes chosen by the caller.
//!
//! `rdkafka::bindings` types error codes as a Rust enum, so handing it a code that librdkafka
//! 2.12.1 does not list (a newer Kafka error, say) would be undefined behaviour. These
//! declarations link to the same C symbols but pass codes as plain `int`, which is what the C
//! enum is.

#![allow(unsafe_code)]

use std::os::raw::{c_char, c_int};

use rdkafka::bindings::rd_kafka_mock_cluster_t;

// SAFETY: the signatures match `src/rdkafka_mock.h` and `src/rdkafka.h` of librdkafka 2.12.1,
// with `rd_kafka_resp_err_t` (a C enum, passed as `int`) written as `c_int`.
unsafe extern "C" {
    /// `rd_kafka_mock_push_request_errors_array`.
    pub(crate) fn rd_kafka_mock_push_request_errors_array(
        mcluster: *mut rd_kafka_mock_cluster_t,
        api_key: i16,
        cnt: usize,
        errors: *const c_int,
    );

    /// `rd_kafka_mock_broker_push_request_error_rtts`: `cnt` pairs of `(int err, int rtt_ms)`.
    pub(crate) fn rd_kafka_mock_broker_push_request_error_rtts(
        mcluster: *mut rd_kafka_mock_cluster_t,
        broker_id: i32,
        api_key: i16,
        cnt: usize,
        ...
    ) -> c_int;

    /// `rd_kafka_mock_topic_set_error`.
    pub(crate) fn rd_kafka_mock_topic_set_error(
        mcluster: *mut rd_kafka_mock_cluster_t,
        topic: *const c_char,
        err: c_int,
    );

    /// `rd_kafka_err2name`: a static (or thread-local) string for any code.
    pub(crate) fn rd_kafka_err2name(err: c_int) -> *const c_char;
}

/// librdkafka's name of an error code (`ERR_<n>?` for a code it does not know).
pub(crate) fn err_name(code: c_int) -> String {
    // SAFETY: rd_kafka_err2name accepts any int and returns a NUL-terminated string that stays
    // valid until the next call on this thread; it is copied at once.
    unsafe { std::ffi::CStr::from_ptr(rd_kafka_err2name(code)) }.to_string_lossy().into_owned()
}

/// Lowest and highest codes librdkafka 2.12.1 has names for (`RD_KAFKA_RESP_ERR__BEGIN`,
/// `RD_KAFKA_RESP_ERR_END_ALL`).
const CODE_RANGE: std::ops::RangeInclusive<c_int> = -200..=130;

/// An error code given as a number (Kafka's, or librdkafka's negative internal ones such as
/// `-195` for `_TRANSPORT`, which makes the mock broker drop the connection) or as librdkafka's
/// name (`NOT_COORDINATOR`, `_TRANSPORT`; case-insensitive).
pub(crate) fn parse_code(word: &str) -> Result<c_int, String> {
    if let Ok(n) = word.parse::<c_int>() {
        return Ok(n);
    }
    CODE_RANGE
        .into_iter()
        .find(|&c| err_name(c).eq_ignore_ascii_case(word))
        .ok_or_else(|| format!("unknown error code '{word}'"))
}
