//! `bench-group-consume` and `bench-group-join`: librdkafka's consumers in a group, the
//! peers of `klife-bench klife-group-consume` and `klife-group-join` in
//! `cargo xtask bench group`, measured the same way.
//!
//! - `bench-group-consume`: `--members` consumers of one new group in this process, each
//!   on a thread of its own polling, with librdkafka's defaults (offsets stored as
//!   records are polled and committed every 5 s, and on revocation), from the earliest
//!   offset, until `--count` records were polled. Until every consumer holds its share
//!   of the partitions (disjoint, together every partition, as evenly as they go) nothing is
//!   counted; then each consumer seeks its partitions back to the first offset (none
//!   was ever counted, so none is committed that matters) and counts each partition's
//!   records in offset order from there, so a rebalance's hand-overs are not in the
//!   rate, as for klife's members. `elapsed_s` runs from the first record counted to
//!   the last one, and the CPU time is the process's from the moment the assignment
//!   was complete; `first_record_s` from the first consumer's creation to its first
//!   record (counted or not).
//! - `bench-group-join`: one consumer alone until it holds every partition
//!   (`first_assignment_s`), then, after `--settle-ms` (300 by default, so that the two
//!   consumers' heartbeats are not in step), a second one, and the time until the two
//!   hold disjoint parts of every partition, neither empty (`rebalance_s`).

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::topic_partition_list::Offset;

use crate::args::{Fail, Opts, usage};
use crate::bench::report_with;
use crate::peer::{self, PeerContext};

/// How long a run may wait for the group before it gives up.
const PATIENCE: Duration = Duration::from_secs(300);

/// The group settings both subcommands share: `--group`, `--protocol`, earliest.
fn group_config(opts: &mut Opts) -> Result<(ClientConfig, bool, String), Fail> {
    let (mut config, ctx) = peer::client_config(opts)?;
    let topic = opts.req("topic")?;
    let group = opts.req("group")?;
    let protocol = opts.opt("protocol")?.unwrap_or_else(|| "consumer".into());
    if protocol != "consumer" && protocol != "classic" {
        return usage(format!("--protocol: expected consumer|classic, got '{protocol}'"));
    }
    config.set("group.id", group).set("group.protocol", protocol).set("auto.offset.reset", "earliest");
    Ok((config, ctx.log, topic))
}

/// A consumer of `topic` in the configured group.
fn subscribed(config: &ClientConfig, log: bool, topic: &str) -> Result<BaseConsumer<PeerContext>, String> {
    let consumer: BaseConsumer<PeerContext> =
        config.create_with_context(PeerContext { log }).map_err(|e| format!("cannot create the consumer: {e}"))?;
    consumer.subscribe(&[topic]).map_err(|e| format!("subscribe: {e}"))?;
    Ok(consumer)
}

/// Leaves the group gracefully, polling until librdkafka says it closed.
fn close(consumer: BaseConsumer<PeerContext>) {
    if consumer.close_queue().is_ok() {
        let deadline = Instant::now() + PATIENCE;
        while !consumer.closed() && Instant::now() < deadline {
            drop(consumer.poll(Duration::from_millis(10)));
        }
    }
}

/// What the consumers counted.
struct Tally {
    want: u64,
    records: AtomicU64,
    bytes: AtomicU64,
    /// When a consumer first polled a record (counted or not).
    offered: OnceLock<Instant>,
    first: OnceLock<Instant>,
    done: OnceLock<Instant>,
    stop: AtomicBool,
    failure: Mutex<Option<String>>,
    /// Open once the group's assignment is complete.
    gate: AtomicBool,
}

impl Tally {
    fn fail(&self, e: String) {
        if let Ok(mut f) = self.failure.lock() {
            f.get_or_insert(e);
        }
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// One member: polls, publishes its assignment, and once the gate is open, seeks
/// back to the start and counts until the tally is complete.
fn member(
    config: ClientConfig,
    log: bool,
    topic: String,
    tally: Arc<Tally>,
    held: Arc<Mutex<Vec<i32>>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let consumer = match subscribed(&config, log, &topic) {
            Ok(c) => c,
            Err(e) => return tally.fail(e),
        };
        // After the gate opened: the next offset each of its partitions counts.
        let mut next: Option<HashMap<i32, i64>> = None;
        while !tally.stop.load(Ordering::SeqCst) {
            if next.is_none() {
                let assigned = match consumer.assignment() {
                    Ok(a) => a,
                    Err(e) => return tally.fail(format!("assignment: {e}")),
                };
                let parts: Vec<i32> =
                    assigned.elements().iter().filter(|e| e.topic() == topic).map(|e| e.partition()).collect();
                if tally.gate.load(Ordering::SeqCst) {
                    for p in &parts {
                        // A partition whose fetch has not started yet (its position
                        // still being looked up) refuses a seek ("Erroneous state"):
                        // poll, uncounted, and try again.
                        let deadline = Instant::now() + Duration::from_secs(30);
                        while let Err(e) = consumer.seek(&topic, *p, Offset::Beginning, Duration::from_secs(10)) {
                            if Instant::now() > deadline {
                                return tally.fail(format!("seek {topic}/{p}: {e}"));
                            }
                            let _ = consumer.poll(Duration::from_millis(10));
                        }
                    }
                    next = Some(parts.iter().map(|p| (*p, 0)).collect());
                } else if let Ok(mut h) = held.lock() {
                    *h = parts;
                }
            }
            match consumer.poll(Duration::from_millis(if next.is_some() { 100 } else { 1 })) {
                None | Some(Err(_)) => {}
                Some(Ok(m)) => {
                    tally.offered.get_or_init(Instant::now);
                    // Counted in order from the seek: anything else is a record of
                    // before it, or of before the gate.
                    let Some(expected) = next.as_mut().and_then(|n| n.get_mut(&m.partition())) else { continue };
                    if m.offset() != *expected {
                        continue;
                    }
                    *expected += 1;
                    tally.first.get_or_init(Instant::now);
                    tally.bytes.fetch_add(m.payload().map_or(0, |p| p.len() as u64), Ordering::Relaxed);
                    if tally.records.fetch_add(1, Ordering::Relaxed) + 1 >= tally.want {
                        let _ = tally.done.set(Instant::now());
                        tally.stop.store(true, Ordering::SeqCst);
                    }
                }
            }
        }
        close(consumer);
    })
}

/// Whether the members hold disjoint sets of partitions, none empty, together all
/// `partitions`, as evenly as they can (the counts within one of each other: the
/// group reached the uniform assignor's target rather than a split on its way to it,
/// after which a partition could still move and its count would stop).
fn split_among(held: &[Vec<i32>], partitions: usize) -> bool {
    let mut all: Vec<i32> = held.iter().flatten().copied().collect();
    all.sort_unstable();
    all.dedup();
    let (least, most) = (held.iter().map(Vec::len).min(), held.iter().map(Vec::len).max());
    least.zip(most).is_some_and(|(l, m)| l > 0 && m - l <= 1)
        && all.len() == partitions
        && held.iter().map(Vec::len).sum::<usize>() == partitions
}

/// Runs `bench-group-consume`.
pub(crate) fn consume(mut opts: Opts) -> Result<(), Fail> {
    let (config, log, topic) = group_config(&mut opts)?;
    let count: u64 = opts.req_parse("count")?;
    let members: usize = opts.opt_parse("members")?.unwrap_or(1);
    let partitions: usize = opts.req_parse("partitions")?;
    opts.finish()?;
    if members == 0 || count == 0 {
        return usage("--members and --count must be at least 1".into());
    }
    let tally = Arc::new(Tally {
        want: count,
        records: AtomicU64::new(0),
        bytes: AtomicU64::new(0),
        offered: OnceLock::new(),
        first: OnceLock::new(),
        done: OnceLock::new(),
        stop: AtomicBool::new(false),
        failure: Mutex::new(None),
        gate: AtomicBool::new(false),
    });
    let started = Instant::now();
    let held: Vec<Arc<Mutex<Vec<i32>>>> = (0..members).map(|_| Arc::default()).collect();
    let threads: Vec<JoinHandle<()>> =
        held.iter().map(|h| member(config.clone(), log, topic.clone(), tally.clone(), h.clone())).collect();
    let mut cpu_since = None;
    while !tally.stop.load(Ordering::SeqCst) {
        if cpu_since.is_none() {
            let now: Vec<Vec<i32>> = held.iter().map(|h| h.lock().map(|h| h.clone()).unwrap_or_default()).collect();
            if split_among(&now, partitions) {
                cpu_since = Some(crate::bench::usage()?);
                tally.gate.store(true, Ordering::SeqCst);
            }
        }
        if started.elapsed() > PATIENCE {
            tally.fail(format!(
                "{} of {count} records after {}s",
                tally.records.load(Ordering::Relaxed),
                PATIENCE.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(if cpu_since.is_none() { 1 } else { 5 }));
    }
    if let Some(e) = tally.failure.lock().ok().and_then(|mut f| f.take()) {
        return Err(e.into());
    }
    let (Some(offered), Some(first), Some(done)) = (tally.offered.get(), tally.first.get(), tally.done.get()) else {
        return Err("the count was reached without a first record".to_owned().into());
    };
    let extra = format!(r#","first_record_s":{:.6}"#, (*offered - started).as_secs_f64());
    report_with(
        tally.records.load(Ordering::Relaxed),
        tally.bytes.load(Ordering::Relaxed),
        *done - *first,
        cpu_since,
        &extra,
    )?;
    for t in threads {
        t.join().map_err(|_| "a consumer thread panicked".to_owned())?;
    }
    Ok(())
}

/// A consumer polling on a thread of its own, publishing its assignment after each poll.
struct Polled {
    assignment: Arc<Mutex<Vec<i32>>>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Result<(), String>>,
}

impl Polled {
    fn start(config: &ClientConfig, log: bool, topic: &str) -> Polled {
        let assignment = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (config, topic, seen, halt) = (config.clone(), topic.to_owned(), assignment.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let consumer = subscribed(&config, log, &topic)?;
            while !halt.load(Ordering::SeqCst) {
                drop(consumer.poll(Duration::from_millis(1)));
                let now = consumer.assignment().map_err(|e| format!("assignment: {e}"))?;
                let mut parts: Vec<i32> =
                    now.elements().iter().filter(|e| e.topic() == topic).map(|e| e.partition()).collect();
                parts.sort_unstable();
                if let Ok(mut a) = seen.lock() {
                    *a = parts;
                }
            }
            close(consumer);
            Ok(())
        });
        Polled { assignment, stop, thread }
    }

    fn partitions(&self) -> Vec<i32> {
        self.assignment.lock().map(|a| a.clone()).unwrap_or_default()
    }

    fn finish(self) -> Result<(), String> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().map_err(|_| "a consumer thread panicked".to_owned())?
    }
}

/// Waits until `done` holds, checking every millisecond.
fn until(what: &str, polled: &[&Polled], mut done: impl FnMut() -> bool) -> Result<Instant, String> {
    let deadline = Instant::now() + PATIENCE;
    while !done() {
        if Instant::now() >= deadline {
            return Err(format!("{what}: not after {}s", PATIENCE.as_secs()));
        }
        if polled.iter().any(|p| p.thread.is_finished()) {
            return Err(format!("{what}: a consumer stopped"));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(Instant::now())
}

/// Runs `bench-group-join`.
pub(crate) fn join(mut opts: Opts) -> Result<(), Fail> {
    let (config, log, topic) = group_config(&mut opts)?;
    let partitions: usize = opts.req_parse("partitions")?;
    let settle = Duration::from_millis(opts.opt_parse("settle-ms")?.unwrap_or(300));
    opts.finish()?;
    if partitions < 2 {
        return usage("--partitions must be 2 or more".into());
    }
    let protocol = config.get("group.protocol").unwrap_or("consumer").to_owned();
    let started = Instant::now();
    let first = Polled::start(&config, log, &topic);
    let alone =
        until("the first consumer holding every partition", &[&first], || first.partitions().len() == partitions)?;
    std::thread::sleep(settle);
    let joined = Instant::now();
    let second = Polled::start(&config, log, &topic);
    let split = until("the two consumers holding disjoint halves", &[&first, &second], || {
        let (a, b) = (first.partitions(), second.partitions());
        !a.is_empty() && !b.is_empty() && a.len() + b.len() == partitions && a.iter().all(|p| !b.contains(p))
    })?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        r#"{{"client":"librdkafka","protocol":"{protocol}","partitions":{partitions},"first_assignment_s":{:.6},"rebalance_s":{:.6}}}"#,
        (alone - started).as_secs_f64(),
        (split - joined).as_secs_f64(),
    )
    .and_then(|()| out.flush())
    .map_err(|e| format!("stdout: {e}"))?;
    drop(out);
    first.finish()?;
    second.finish()?;
    Ok(())
}
