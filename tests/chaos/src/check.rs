//! The invariants every run is checked against, each failure named and with its
//! evidence:
//!
//! - **no acknowledged record lost**: every record the producers had acknowledged was
//!   handled by the group;
//! - **first deliveries in order**: the first time each record of a partition is
//!   handled, it comes after the records below it (checked as they come, in
//!   [`observe`](crate::observe));
//! - **records handled as written**: what a member handled at an offset is what the
//!   log holds there;
//! - **repeats only after hard failures, bounded**: a partition's records are handled
//!   again only if one of its owners was killed, lost it (fenced, session expired,
//!   stalled past the rebalance timeout) or failed, and at most the documented bound
//!   per such failure (see [`repeat_bound`]);
//! - **committed offsets never go backwards** (watched all along the run);
//! - **everything committed** at the end (each partition's committed offset is its
//!   log end);
//! - **one live owner per partition** at the end (checked in [`run`](crate::run));
//! - **idempotent producers**: every acknowledged record is in the log once, at its
//!   offset, in the order sent within its partition; nothing is in the log twice, and
//!   nothing that was not sent.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use bytes::Bytes;
use klife::TopicPartition;

use crate::observe::Seen;
use crate::plan::{Mode, Plan};
use crate::produce::Sent;

/// A broken invariant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Which invariant.
    pub invariant: &'static str,
    /// What shows it.
    pub evidence: String,
}

impl Violation {
    /// A violation of `invariant`.
    pub fn new(invariant: &'static str, evidence: impl Into<String>) -> Violation {
        Violation { invariant, evidence: evidence.into() }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.invariant, self.evidence)
    }
}

/// Invariant names.
pub mod names {
    /// Every acknowledged record handled.
    pub const LOST: &str = "no acknowledged record lost";
    /// First deliveries in offset order.
    pub const ORDER: &str = "first deliveries in order";
    /// Handled values are the log's.
    pub const VALUES: &str = "records handled as written";
    /// Repeats only after hard failures, bounded.
    pub const REPEATS: &str = "repeats only after hard failures, bounded";
    /// Committed offsets never go backwards.
    pub const BACKWARDS: &str = "committed offsets never go backwards";
    /// Everything committed at the end.
    pub const COMMITTED: &str = "everything committed";
    /// One live owner per partition at the end.
    pub const OWNERS: &str = "one live owner per partition";
    /// The idempotent producers' promise.
    pub const IDEMPOTENCE: &str = "idempotent producer: nothing lost, nothing twice, order kept";
    /// The run finished (nothing hung, every member started and stopped).
    pub const LIVENESS: &str = "the run completes";
}

/// Records a partition may be handled again per hard failure, as the docs state
/// (`None`: the docs bound nothing, only that repeats follow a hard failure).
///
/// - handler mode (docs/groups.md, "Delivery"): "at most the batch in hand and
///   `handler_max_unacked_commits` batches per partition";
/// - manual and stream modes: the records pulled and not committed; the run's drivers
///   commit each batch (`commit_and_wait`) before pulling the next, so one batch;
/// - pipeline mode (docs/pipeline.md): "what was handled after [the last commit] is
///   handled again", no bound.
pub fn repeat_bound(plan: &Plan) -> Option<usize> {
    match plan.mode {
        Mode::Handler => Some((plan.max_unacked + 1) * plan.batch_size),
        Mode::Manual | Mode::Stream => Some(plan.batch_size),
        Mode::Pipeline => None,
    }
}

/// The checks of what the members handled against the acknowledged records.
pub fn deliveries(plan: &Plan, seen: &Seen, acked: &[&Sent]) -> Vec<Violation> {
    let mut out = Vec::new();
    let missing: Vec<String> = acked
        .iter()
        .filter(|s| s.outcome.as_ref().is_ok_and(|o| !seen.handled.contains_key(&(s.partition.clone(), *o))))
        .map(|s| {
            format!("{}@{} ({})", s.partition, s.outcome.as_ref().map_or(-1, |o| *o), String::from_utf8_lossy(&s.value))
        })
        .collect();
    if !missing.is_empty() {
        out.push(Violation::new(
            names::LOST,
            format!(
                "{} of {} acknowledged records never handled, first: {}",
                missing.len(),
                acked.len(),
                first(&missing)
            ),
        ));
    }
    if !seen.order_breaks.is_empty() {
        out.push(Violation::new(
            names::ORDER,
            format!("{} break(s): {}", seen.order_breaks.len(), first(&seen.order_breaks)),
        ));
    }
    if !seen.value_changes.is_empty() {
        out.push(Violation::new(names::VALUES, first(&seen.value_changes)));
    }
    let hard = seen.hard_failures();
    let bound = repeat_bound(plan);
    for (tp, repeats) in &seen.repeats {
        let failures = hard.get(tp).copied().unwrap_or(0);
        let allowed = bound.map_or(if failures > 0 { usize::MAX } else { 0 }, |b| b * failures);
        if *repeats > allowed {
            out.push(Violation::new(
                names::REPEATS,
                format!(
                    "{tp}: {repeats} records handled again after {failures} hard failure(s); at most {} may be \
                     ({}); owners: {}; again: {}",
                    if allowed == usize::MAX { "any number".to_owned() } else { allowed.to_string() },
                    bound.map_or("the docs bound nothing after a hard failure".to_owned(), |b| format!(
                        "{b} per hard failure"
                    )),
                    seen.history(tp),
                    seen.repeated(tp)
                ),
            ));
        }
    }
    out
}

/// The checks of the logs: the handled values, and the idempotent producers' promise.
pub fn logs(seen: &Seen, sent: &[Sent], logs: &BTreeMap<TopicPartition, Vec<(i64, Option<Bytes>)>>) -> Vec<Violation> {
    let mut out = Vec::new();
    let mut problems = Vec::new();
    let by_value: HashMap<&Bytes, &Sent> = sent.iter().map(|s| (&s.value, s)).collect();
    for (tp, log) in logs {
        let mut seen_values: HashMap<&Bytes, i64> = HashMap::new();
        for (offset, value) in log {
            if let Some(handled) = seen.values.get(&(tp.clone(), *offset)) {
                if handled != value {
                    out.push(Violation::new(
                        names::VALUES,
                        format!("{tp}@{offset}: handled {handled:?}, the log holds {value:?}"),
                    ));
                }
            }
            let Some(value) = value else {
                problems.push(format!("{tp}@{offset}: a record without a value"));
                continue;
            };
            if let Some(before) = seen_values.insert(value, *offset) {
                problems.push(format!("{tp}: {} at offsets {before} and {offset}", String::from_utf8_lossy(value)));
            }
            match by_value.get(value) {
                None => problems.push(format!("{tp}@{offset}: {} was never sent", String::from_utf8_lossy(value))),
                Some(s) if s.partition != *tp => {
                    problems.push(format!(
                        "{tp}@{offset}: {} was sent to {}",
                        String::from_utf8_lossy(value),
                        s.partition
                    ));
                }
                Some(_) => {}
            }
        }
        // Acknowledged records at their offsets, in send order per producer.
        let at: HashMap<&Bytes, i64> = log.iter().filter_map(|(o, v)| v.as_ref().map(|v| (v, *o))).collect();
        let mut last: HashMap<usize, (usize, i64)> = HashMap::new();
        for s in sent.iter().filter(|s| s.partition == *tp) {
            let found = at.get(&s.value).copied();
            if let Ok(offset) = &s.outcome {
                match found {
                    None => problems.push(format!(
                        "{tp}: acknowledged {} (offset {offset}) is not in the log",
                        String::from_utf8_lossy(&s.value)
                    )),
                    Some(o) if o != *offset => problems.push(format!(
                        "{tp}: {} acknowledged at {offset}, in the log at {o}",
                        String::from_utf8_lossy(&s.value)
                    )),
                    Some(_) => {}
                }
            }
            if let Some(o) = found {
                if let Some((number, before)) = last.get(&s.producer) {
                    if o < *before {
                        problems.push(format!(
                            "{tp}: producer {}'s record {} (offset {o}) is before its record {number} (offset {before})",
                            s.producer, s.number
                        ));
                    }
                }
                last.insert(s.producer, (s.number, o));
            }
        }
    }
    if !problems.is_empty() {
        out.push(Violation::new(
            names::IDEMPOTENCE,
            format!("{} problem(s), first: {}", problems.len(), first(&problems)),
        ));
    }
    out
}

fn first(items: &[String]) -> String {
    let shown: Vec<&str> = items.iter().take(3).map(String::as_str).collect();
    let more = if items.len() > 3 { format!(" (and {} more)", items.len() - 3) } else { String::new() };
    format!("{}{more}", shown.join("; "))
}
