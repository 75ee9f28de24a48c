//! Group membership as sans-io state machines: events and `now` in; requests, timers
//! and changes of the assignment out.

mod action;
mod assignment;
pub mod classic;
mod config;
pub mod consumer;
#[cfg(test)]
mod tests;
