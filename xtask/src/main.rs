//! klife's development tasks, run as `cargo xtask <task>`.
fn main() {}
