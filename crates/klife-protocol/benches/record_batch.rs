//! Record batch encode/decode benchmarks.
fn main() {}
