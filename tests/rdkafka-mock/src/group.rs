//! `group-consume`: librdkafka as a member of a consumer group, beside the members of the
//! client under test, printing what it owns and handles as JSON lines.
//!
//! Every line is flushed as soon as it is written, and carries `at_us`, the wall clock
//! (microseconds since the Unix epoch) when the event happened:
//!
//! - `{"event":"assigned","partitions":[..],"at_us":N}`: before librdkafka takes the
//!   partitions (the pre-rebalance callback), so the ownership starts no later than this;
//! - `{"event":"record","partition":P,"offset":O,"at_us":N}`: printed before the record's
//!   `offset + 1` is committed synchronously;
//! - `{"event":"revoked","partitions":[..],"at_us":N}`: after what was consumed of them is
//!   committed and librdkafka let them go (the post-rebalance callback), so the ownership
//!   ends no earlier than this;
//! - `{"event":"lost","partitions":[..],"at_us":N}`: the same for partitions lost (session
//!   expired, fenced), for which nothing is committed;
//! - `{"event":"closed","at_us":N}`: the consumer closed, after stdin closed.

#![allow(unsafe_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

use crate::args::{Fail, Opts, usage};
use crate::peer::{PeerContext, client_config};

/// Microseconds since the Unix epoch.
fn now_us() -> u128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros())
}

/// Writes one line to stdout and flushes it; a closed stdout asks the consumer to stop.
fn emit(line: &str, stop: &AtomicBool) {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if writeln!(out, "{line}").and_then(|()| out.flush()).is_err() {
        stop.store(true, Ordering::SeqCst);
    }
}

/// The partitions of `topic` in `tpl`, sorted.
fn partitions_of(tpl: &TopicPartitionList, topic: &str) -> Vec<i32> {
    let mut out: Vec<i32> = tpl.elements().iter().filter(|e| e.topic() == topic).map(|e| e.partition()).collect();
    out.sort_unstable();
    out
}

/// `{"event":EVENT,"partitions":[..],"at_us":N}`.
fn partitions_event(event: &str, partitions: &[i32]) -> String {
    let list: Vec<String> = partitions.iter().map(i32::to_string).collect();
    format!(r#"{{"event":"{event}","partitions":[{}],"at_us":{}}}"#, list.join(","), now_us())
}

/// The consumer's callbacks: logging, and the rebalance events with the commits that a
/// graceful revocation owes.
struct GroupContext {
    base: PeerContext,
    topic: String,
    /// Offsets consumed (the next offset to read) and not yet known committed, by partition.
    pending: Mutex<BTreeMap<i32, i64>>,
    /// Whether the revocation being carried out is a loss (set before, read after it).
    losing: AtomicBool,
    /// Set when stdin or stdout closes.
    stop: Arc<AtomicBool>,
}

impl ClientContext for GroupContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.base.log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.base.error(error, reason);
    }
}

impl GroupContext {
    /// Commits, synchronously, what was consumed of `partitions` and not committed yet.
    fn commit_pending(&self, consumer: &BaseConsumer<Self>, partitions: &[i32]) {
        let owed: Vec<(i32, i64)> = {
            let Ok(mut pending) = self.pending.lock() else { return };
            partitions.iter().filter_map(|p| pending.remove(p).map(|o| (*p, o))).collect()
        };
        if owed.is_empty() {
            return;
        }
        let mut tpl = TopicPartitionList::new();
        for (p, o) in &owed {
            if let Err(e) = tpl.add_partition_offset(&self.topic, *p, Offset::Offset(*o)) {
                eprintln!("group-consume: commit on revocation: {e}");
                return;
            }
        }
        if let Err(e) = consumer.commit(&tpl, CommitMode::Sync) {
            eprintln!("group-consume: commit on revocation of {owed:?} failed: {e}");
        }
    }

    /// Forgets what was consumed of `partitions` (lost: nothing more may be committed).
    fn forget(&self, partitions: &[i32]) {
        if let Ok(mut pending) = self.pending.lock() {
            for p in partitions {
                pending.remove(p);
            }
        }
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => emit(&partitions_event("assigned", &partitions_of(tpl, &self.topic)), &self.stop),
            Rebalance::Revoke(tpl) => {
                let partitions = partitions_of(tpl, &self.topic);
                // SAFETY: the handle is the live consumer's, for the duration of the callback.
                let lost = unsafe { rdkafka::bindings::rd_kafka_assignment_lost(consumer.client().native_ptr()) } != 0;
                self.losing.store(lost, Ordering::SeqCst);
                if lost {
                    self.forget(&partitions);
                } else {
                    self.commit_pending(consumer, &partitions);
                }
            }
            Rebalance::Error(e) => eprintln!("group-consume: rebalance error: {e}"),
        }
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if let Rebalance::Revoke(tpl) = rebalance {
            let event = if self.losing.swap(false, Ordering::SeqCst) { "lost" } else { "revoked" };
            emit(&partitions_event(event, &partitions_of(tpl, &self.topic)), &self.stop);
        }
    }
}

/// Runs `group-consume`.
pub(crate) fn consume(mut opts: Opts) -> Result<(), Fail> {
    let (mut config, base) = client_config(&mut opts)?;
    let topic = opts.req("topic")?;
    let group = opts.req("group")?;
    let protocol = opts.opt("protocol")?.unwrap_or_else(|| "consumer".into());
    opts.finish()?;

    config.set("group.id", group).set("enable.auto.commit", "false").set("enable.auto.offset.store", "false");
    match protocol.as_str() {
        "consumer" => {
            config.set("group.protocol", "consumer");
        }
        "classic" => {
            config.set("group.protocol", "classic");
            if config.get("partition.assignment.strategy").is_none() {
                config.set("partition.assignment.strategy", "cooperative-sticky");
            }
        }
        other => return usage(format!("--protocol: expected consumer|classic, got '{other}'")),
    }
    if config.get("auto.offset.reset").is_none() {
        config.set("auto.offset.reset", "earliest");
    }

    let stop = Arc::new(AtomicBool::new(false));
    let ctx = GroupContext {
        base,
        topic: topic.clone(),
        pending: Mutex::new(BTreeMap::new()),
        losing: AtomicBool::new(false),
        stop: stop.clone(),
    };
    let consumer: BaseConsumer<GroupContext> =
        config.create_with_context(ctx).map_err(|e| format!("cannot create the consumer: {e}"))?;
    consumer.subscribe(&[topic.as_str()]).map_err(|e| format!("subscribe: {e}"))?;

    // Stdin closing (EOF or an error) is the signal to leave.
    {
        let stop = stop.clone();
        std::thread::Builder::new()
            .name("stdin".into())
            .spawn(move || {
                let mut sink = [0u8; 256];
                let mut stdin = std::io::stdin();
                while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
                stop.store(true, Ordering::SeqCst);
            })
            .map_err(|e| format!("cannot start the stdin thread: {e}"))?;
    }

    while !stop.load(Ordering::SeqCst) {
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(e)) => eprintln!("group-consume: {e}"),
            Some(Ok(m)) => {
                let (partition, offset) = (m.partition(), m.offset());
                emit(
                    &format!(r#"{{"event":"record","partition":{partition},"offset":{offset},"at_us":{}}}"#, now_us()),
                    &stop,
                );
                if let Ok(mut pending) = consumer.context().pending.lock() {
                    pending.insert(partition, offset + 1);
                }
                match consumer.commit_message(&m, CommitMode::Sync) {
                    Ok(()) => {
                        if let Ok(mut pending) = consumer.context().pending.lock() {
                            if pending.get(&partition) == Some(&(offset + 1)) {
                                pending.remove(&partition);
                            }
                        }
                    }
                    // Left pending: the revocation commits it.
                    Err(e) => eprintln!("group-consume: commit of {partition}@{offset}: {e}"),
                }
            }
        }
    }

    // Leave gracefully: closing revokes (and commits) what is owned, then leaves the group.
    // Records still handed over while closing are not handled, hence not committed.
    consumer.close_queue().map_err(|e| format!("close: {e}"))?;
    while !consumer.closed() {
        drop(consumer.poll(Duration::from_millis(100)));
    }
    drop(consumer);
    emit(&format!(r#"{{"event":"closed","at_us":{}}}"#, now_us()), &stop);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_as_json() {
        let line = partitions_event("assigned", &[0, 3]);
        assert!(line.starts_with(r#"{"event":"assigned","partitions":[0,3],"at_us":"#), "{line}");
        assert!(partitions_event("lost", &[]).starts_with(r#"{"event":"lost","partitions":[],"#));
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition("t", 2);
        tpl.add_partition("u", 0);
        tpl.add_partition("t", 1);
        assert_eq!(partitions_of(&tpl, "t"), vec![1, 2]);
    }
}
