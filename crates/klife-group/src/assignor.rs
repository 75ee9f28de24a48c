//! Assignors of the classic protocol.
