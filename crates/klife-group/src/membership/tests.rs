//! Tests of the KIP-848 member: table tests per error code, a scripted coordinator, a property test.
