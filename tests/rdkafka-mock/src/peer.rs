//! `produce` and `consume`: librdkafka as the peer of a Kafka client or broker under test.

use std::io::Write;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, Timestamp, TopicPartitionList};

use crate::args::{Fail, Opts, usage};

/// Client callbacks: librdkafka's log lines and client errors go to stderr with `--log`, and
/// nowhere otherwise (a test that stops brokers would drown in connection errors).
pub(crate) struct PeerContext {
    /// Print librdkafka's log lines and errors to stderr.
    pub(crate) log: bool,
}

impl ClientContext for PeerContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        if self.log {
            eprintln!("librdkafka {level:?} {fac}: {log_message}");
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        if self.log {
            eprintln!("librdkafka error {error}: {reason}");
        }
    }
}

impl ConsumerContext for PeerContext {}

/// A client configuration from the repeated `--set KEY=VALUE` options.
pub(crate) fn base_config(opts: &mut Opts) -> Result<ClientConfig, Fail> {
    let mut config = ClientConfig::new();
    for kv in opts.all("set")? {
        let Some((k, v)) = kv.split_once('=') else {
            return usage(format!("--set: expected KEY=VALUE, got '{kv}'"));
        };
        config.set(k, v);
    }
    Ok(config)
}

/// `base_config` plus `--bootstrap LIST`, with `--log`.
pub(crate) fn client_config(opts: &mut Opts) -> Result<(ClientConfig, PeerContext), Fail> {
    let bootstrap = opts.req("bootstrap")?;
    let mut config = base_config(opts)?;
    config.set("bootstrap.servers", bootstrap);
    let ctx = peer_context(&mut config, opts)?;
    Ok((config, ctx))
}

/// The context for `--log`: with it, librdkafka hands over every line it makes (debug lines
/// only for the contexts named by `--set debug=...`).
pub(crate) fn peer_context(config: &mut ClientConfig, opts: &mut Opts) -> Result<PeerContext, Fail> {
    let log = opts.flag("log")?;
    if log {
        config.set_log_level(RDKafkaLogLevel::Debug);
    }
    Ok(PeerContext { log })
}

/// A `--codec` value, checked.
pub(crate) fn codec(opts: &mut Opts) -> Result<String, Fail> {
    let codec = opts.opt("codec")?.unwrap_or_else(|| "none".into());
    match codec.as_str() {
        "none" | "gzip" | "snappy" | "lz4" | "zstd" => Ok(codec),
        _ => usage(format!("--codec: expected none|gzip|snappy|lz4|zstd, got '{codec}'")),
    }
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2 + 2);
    s.push('"');
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s.push('"');
    s
}

fn opt_hex(bytes: Option<&[u8]>) -> String {
    bytes.map_or_else(|| "null".into(), hex)
}

/// A JSON string literal.
fn json_str(s: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One record as a JSON line: partition, offset, key and value in hex (or null), headers as
/// `[key, hex-or-null]` pairs in order, timestamp in milliseconds (or null) and its type
/// (`"create"`, `"log_append"` or null).
fn record_json<M: Message>(m: &M) -> String {
    let headers = m
        .headers()
        .map(|h| h.iter().map(|h| format!("[{},{}]", json_str(h.key), opt_hex(h.value))).collect::<Vec<_>>())
        .unwrap_or_default();
    let (ts, ts_type) = match m.timestamp() {
        Timestamp::NotAvailable => ("null".into(), "null"),
        Timestamp::CreateTime(t) => (t.to_string(), r#""create""#),
        Timestamp::LogAppendTime(t) => (t.to_string(), r#""log_append""#),
    };
    format!(
        r#"{{"partition":{},"offset":{},"key":{},"value":{},"headers":[{}],"timestamp":{},"timestamp_type":{}}}"#,
        m.partition(),
        m.offset(),
        opt_hex(m.key()),
        opt_hex(m.payload()),
        headers.join(","),
        ts,
        ts_type
    )
}

/// The value of record `i`: its decimal index, zero-padded (or cut to its last digits) to
/// `size` bytes.
fn index_value(i: u64, size: usize) -> Vec<u8> {
    let digits = format!("{i:0size$}");
    digits.as_bytes()[digits.len() - size..].to_vec()
}

/// Producer context for `produce`: keeps each delivery report, in the order they arrive.
struct Deliveries {
    base: PeerContext,
    reports: Mutex<Vec<Result<String, String>>>,
}

impl ClientContext for Deliveries {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        self.base.log(level, fac, log_message);
    }

    fn error(&self, error: KafkaError, reason: &str) {
        self.base.error(error, reason);
    }
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, (): ()) {
        let report = match result {
            Ok(m) => Ok(record_json(m)),
            Err((e, m)) => Err(format!("delivery failed for the record with value {}: {e}", opt_hex(m.payload()))),
        };
        if let Ok(mut reports) = self.reports.lock() {
            reports.push(report);
        }
    }
}

/// Sends `record`, polling for delivery reports while librdkafka's queue is full.
pub(crate) fn send<C: ProducerContext>(
    producer: &BaseProducer<C>,
    mut record: BaseRecord<'_, [u8], [u8], C::DeliveryOpaque>,
) -> Result<(), String> {
    loop {
        match producer.send(record) {
            Ok(()) => return Ok(()),
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                record = r;
                producer.poll(Duration::from_millis(5));
            }
            Err((e, _)) => return Err(format!("send: {e}")),
        }
    }
}

/// Flushes `producer`, failing after `timeout`.
pub(crate) fn flush<C: ProducerContext>(producer: &BaseProducer<C>, timeout: Duration) -> Result<(), String> {
    producer.flush(timeout).map_err(|e| format!("flush: {e} (not every record was delivered in {timeout:?})"))
}

/// Runs `produce`.
pub(crate) fn produce(mut opts: Opts) -> Result<(), Fail> {
    let (mut config, base) = client_config(&mut opts)?;
    let topic = opts.req("topic")?;
    let count: u64 = opts.req_parse("count")?;
    let partition: Option<i32> = opts.opt_parse("partition")?;
    let size: usize = opts.opt_parse("value-size")?.unwrap_or(8);
    let keys = opts.flag("keys")?;
    let headers = opts.flag("headers")?;
    let timestamp_base: Option<i64> = opts.opt_parse("timestamp-base")?;
    config.set("compression.type", codec(&mut opts)?);
    if let Some(ms) = opts.opt("linger-ms")? {
        config.set("linger.ms", ms);
    }
    if let Some(b) = opts.opt("batch-size")? {
        config.set("batch.size", b);
    }
    if let Some(acks) = opts.opt("acks")? {
        config.set("acks", acks);
    }
    let timeout = Duration::from_millis(opts.opt_parse("timeout-ms")?.unwrap_or(30_000));
    opts.finish()?;

    let ctx = Deliveries { base, reports: Mutex::new(Vec::new()) };
    let producer: BaseProducer<Deliveries> =
        config.create_with_context(ctx).map_err(|e| format!("cannot create the producer: {e}"))?;
    for i in 0..count {
        let key = format!("key-{i}");
        let value = index_value(i, size);
        let mut record = BaseRecord::to(&topic).payload(value.as_slice());
        if keys {
            record = record.key(key.as_bytes());
        }
        if let Some(p) = partition {
            record = record.partition(p);
        }
        if let Some(base) = timestamp_base {
            record = record.timestamp(base + i as i64);
        }
        if headers {
            let index = i.to_string();
            record = record.headers(
                OwnedHeaders::new()
                    .insert(Header { key: "index", value: Some(index.as_bytes()) })
                    .insert(Header { key: "dup", value: Some("first") })
                    .insert(Header { key: "dup", value: Some("second") })
                    .insert(Header { key: "empty", value: None::<&[u8]> }),
            );
        }
        send(&producer, record)?;
        producer.poll(Duration::ZERO);
    }
    let flushed = flush(&producer, timeout);
    let reports = producer.context().reports.lock().map(|mut r| std::mem::take(&mut *r)).unwrap_or_default();

    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut failures = Vec::new();
    for report in reports {
        match report {
            Ok(line) => writeln!(out, "{line}").map_err(|e| format!("stdout: {e}"))?,
            Err(e) => failures.push(e),
        }
    }
    out.flush().map_err(|e| format!("stdout: {e}"))?;
    flushed?;
    match failures.first() {
        None => Ok(()),
        Some(first) => Err(format!("{} of {count} records failed; first: {first}", failures.len()).into()),
    }
}

/// A consumer assigned to `partitions` of `topic` (every partition when empty, found through
/// metadata), each from its earliest offset.
pub(crate) fn assigned_consumer(
    config: &ClientConfig,
    ctx: PeerContext,
    topic: &str,
    partitions: &[i32],
    timeout: Duration,
) -> Result<BaseConsumer<PeerContext>, String> {
    let mut config = config.clone();
    config.set("enable.auto.commit", "false").set("enable.auto.offset.store", "false");
    // librdkafka refuses assign() without a group id; nothing is committed to it.
    if config.get("group.id").is_none() {
        config.set("group.id", "klife-rdkafka-mock");
    }
    let consumer: BaseConsumer<PeerContext> =
        config.create_with_context(ctx).map_err(|e| format!("cannot create the consumer: {e}"))?;
    let partitions = if partitions.is_empty() {
        let md = consumer.fetch_metadata(Some(topic), timeout).map_err(|e| format!("metadata: {e}"))?;
        let t = md.topics().iter().find(|t| t.name() == topic).ok_or_else(|| format!("metadata: no topic {topic}"))?;
        if let Some(err) = t.error() {
            return Err(format!("metadata for {topic}: {}", RDKafkaErrorCode::from(err)));
        }
        t.partitions().iter().map(|p| p.id()).collect()
    } else {
        partitions.to_vec()
    };
    if partitions.is_empty() {
        return Err(format!("topic {topic} has no partitions"));
    }
    let mut tpl = TopicPartitionList::new();
    for p in partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning).map_err(|e| format!("assign: {e}"))?;
    }
    consumer.assign(&tpl).map_err(|e| format!("assign: {e}"))?;
    Ok(consumer)
}

/// Polls `consumer` until `count` records were handed to `each` or `timeout` passed.
pub(crate) fn poll_records(
    consumer: &BaseConsumer<PeerContext>,
    count: u64,
    timeout: Duration,
    mut each: impl FnMut(&rdkafka::message::BorrowedMessage<'_>) -> Result<(), String>,
) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut got = 0u64;
    let mut last_error = None;
    while got < count {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            let why = last_error.map(|e| format!("; last error: {e}")).unwrap_or_default();
            return Err(format!("timeout after {timeout:?}: got {got} of {count} records{why}"));
        }
        match consumer.poll(left.min(Duration::from_millis(100))) {
            None => {}
            Some(Ok(m)) => {
                each(&m)?;
                got += 1;
            }
            Some(Err(e)) => last_error = Some(e),
        }
    }
    Ok(())
}

/// Runs `consume`.
pub(crate) fn consume(mut opts: Opts) -> Result<(), Fail> {
    let (config, ctx) = client_config(&mut opts)?;
    let topic = opts.req("topic")?;
    let count: u64 = opts.req_parse("count")?;
    let partitions: Vec<i32> = opts.all_parse("partition")?;
    let timeout = Duration::from_millis(opts.opt_parse("timeout-ms")?.unwrap_or(30_000));
    opts.finish()?;

    let consumer = assigned_consumer(&config, ctx, &topic, &partitions, timeout)?;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    Ok(poll_records(&consumer, count, timeout, |m| {
        writeln!(out, "{}", record_json(m)).and_then(|()| out.flush()).map_err(|e| format!("stdout: {e}"))
    })?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn index_values() {
        assert_eq!(index_value(42, 8), b"00000042");
        assert_eq!(index_value(12345, 3), b"345");
        assert_eq!(index_value(7, 0), b"");
    }

    #[test]
    fn json_escaping() {
        assert_eq!(json_str("a\"b\\c\n"), r#""a\"b\\c\u000a""#);
        assert_eq!(hex(&[0, 255]), r#""00ff""#);
        assert_eq!(opt_hex(None), "null");
    }
}
