//! `bench-produce` and `bench-consume`: librdkafka's throughput, for side-by-side comparisons.

#![allow(unsafe_code)]

use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};

use crate::args::{Fail, Opts};
use crate::peer::{self, PeerContext};

/// CPU time and peak memory of this process so far.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Usage {
    user_s: f64,
    sys_s: f64,
    max_rss_kb: i64,
}

pub(crate) fn usage() -> Result<Usage, String> {
    // SAFETY: getrusage only writes the zero-initialised struct it is given.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut ru) != 0 {
            return Err(format!("getrusage: {}", std::io::Error::last_os_error()));
        }
        ru
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(Usage { user_s: secs(ru.ru_utime), sys_s: secs(ru.ru_stime), max_rss_kb: ru.ru_maxrss })
}

fn report(records: u64, bytes: u64, elapsed: Duration) -> Result<(), String> {
    report_with(records, bytes, elapsed, None, "")
}

/// The report line, with `extra` (`,"name":value...`) before its closing brace; the
/// CPU time is the process's since `cpu_since` when given, else since it started.
pub(crate) fn report_with(
    records: u64,
    bytes: u64,
    elapsed: Duration,
    cpu_since: Option<Usage>,
    extra: &str,
) -> Result<(), String> {
    let mut u = usage()?;
    if let Some(base) = cpu_since {
        (u.user_s, u.sys_s) = (u.user_s - base.user_s, u.sys_s - base.sys_s);
    }
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    writeln!(
        out,
        r#"{{"records":{records},"bytes":{bytes},"elapsed_s":{:.6},"cpu_user_s":{:.6},"cpu_sys_s":{:.6},"max_rss_kb":{}{extra}}}"#,
        elapsed.as_secs_f64(),
        u.user_s,
        u.sys_s,
        u.max_rss_kb
    )
    .and_then(|()| out.flush())
    .map_err(|e| format!("stdout: {e}"))
}

/// xorshift64: incompressible bytes, cheap to make.
struct XorShift(u64);

impl XorShift {
    fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for chunk in &mut chunks {
            chunk.copy_from_slice(&self.next().to_le_bytes());
        }
        let tail = chunks.into_remainder();
        if !tail.is_empty() {
            let x = self.next().to_le_bytes();
            tail.copy_from_slice(&x[..tail.len()]);
        }
    }

    /// The next 8 bytes (whole words are copied with a fixed length, which compiles
    /// to one store rather than a call to `memcpy`).
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }
}

/// Producer context for `bench-produce`: counts deliveries and keeps the first failure.
struct Counter {
    base: PeerContext,
    delivered: AtomicU64,
    failed: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl ClientContext for Counter {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.base.log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.base.error(error, reason);
    }
}

impl ProducerContext for Counter {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, (): ()) {
        match result {
            Ok(_) => {
                self.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                if let Ok(mut first) = self.first_error.lock() {
                    first.get_or_insert_with(|| e.to_string());
                }
            }
        }
    }
}

/// Runs `bench-produce`.
pub(crate) fn produce(mut opts: Opts) -> Result<(), Fail> {
    let (mut config, base) = peer::client_config(&mut opts)?;
    let topic = opts.req("topic")?;
    let count: u64 = opts.req_parse("count")?;
    let size: usize = opts.req_parse("value-size")?;
    let partition: Option<i32> = opts.opt_parse("partition")?;
    config.set("compression.type", peer::codec(&mut opts)?);
    config.set("linger.ms", opts.opt("linger-ms")?.unwrap_or_else(|| "5".into()));
    config.set("acks", opts.opt("acks")?.unwrap_or_else(|| "all".into()));
    if let Some(b) = opts.opt("batch-size")? {
        config.set("batch.size", b);
    }
    let timeout = Duration::from_millis(opts.opt_parse("timeout-ms")?.unwrap_or(120_000));
    opts.finish()?;

    let ctx = Counter { base, delivered: AtomicU64::new(0), failed: AtomicU64::new(0), first_error: Mutex::new(None) };
    let producer: BaseProducer<Counter> =
        config.create_with_context(ctx).map_err(|e| format!("cannot create the producer: {e}"))?;
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut value = vec![0u8; size];
    let started = Instant::now();
    for i in 0..count {
        rng.fill(&mut value);
        let mut record = BaseRecord::to(&topic).payload(value.as_slice());
        if let Some(p) = partition {
            record = record.partition(p);
        }
        peer::send(&producer, record)?;
        if i % 1024 == 0 {
            producer.poll(Duration::ZERO);
        }
    }
    peer::flush(&producer, timeout)?;
    let elapsed = started.elapsed();
    let ctx = producer.context();
    let failed = ctx.failed.load(Ordering::Relaxed);
    if failed > 0 {
        let first = ctx.first_error.lock().ok().and_then(|f| f.clone()).unwrap_or_default();
        return Err(format!("{failed} of {count} records failed; first: {first}").into());
    }
    let delivered = ctx.delivered.load(Ordering::Relaxed);
    Ok(report(delivered, delivered * size as u64, elapsed)?)
}

/// Runs `bench-consume`.
pub(crate) fn consume(mut opts: Opts) -> Result<(), Fail> {
    let (config, ctx) = peer::client_config(&mut opts)?;
    let topic = opts.req("topic")?;
    let count: u64 = opts.req_parse("count")?;
    let partitions = opts.all_parse("partition")?;
    let timeout = Duration::from_millis(opts.opt_parse("timeout-ms")?.unwrap_or(120_000));
    opts.finish()?;

    let started = Instant::now();
    let consumer = peer::assigned_consumer(&config, ctx, &topic, &partitions, timeout)?;
    let mut bytes = 0u64;
    peer::poll_records(&consumer, count, timeout, |m| {
        bytes += m.payload().map_or(0, |p| p.len() as u64);
        Ok(())
    })?;
    let elapsed = started.elapsed();
    Ok(report(count, bytes, elapsed)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xorshift_fills_odd_lengths() {
        let mut a = vec![0u8; 13];
        XorShift(1).fill(&mut a);
        assert!(a.iter().any(|&b| b != 0));
        let mut b = vec![0u8; 13];
        XorShift(1).fill(&mut b);
        assert_eq!(a, b);
    }

    #[test]
    fn usage_reads() {
        let u = usage().expect("getrusage");
        assert!(u.max_rss_kb > 0);
    }
}
