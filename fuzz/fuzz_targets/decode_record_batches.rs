//! Walks arbitrary bytes as the `records` of a Fetch response and decodes every batch,
//! decompressing with every codec: never a panic, decompression bounded, and every
//! batch that decodes re-encodes (same codec) to a batch with the same records.
#![no_main]

use bytes::Bytes;
use klife_protocol::records::{DecodeOptions, RecordBatch, RecordBatches};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let options = DecodeOptions { max_decompressed_size: 1 << 20, ..DecodeOptions::default() };
    for raw in RecordBatches::new(Bytes::copy_from_slice(data)).flatten() {
        // The fuzzer cannot forge CRCs: also decode with the check off, so that the
        // record parsing and the decompressors see mutated input.
        let unchecked = DecodeOptions { verify_crc: false, ..options.clone() };
        for opts in [&options, &unchecked] {
            let Ok(batch) = raw.decode_with(opts) else { continue };
            let records = batch.to_records();
            let encoded = batch.encode().expect("a decoded batch re-encodes");
            let again = RecordBatch::decode(&mut encoded.clone()).expect("re-encoded batch decodes");
            assert_eq!(again.to_records(), records);
        }
    }
});
