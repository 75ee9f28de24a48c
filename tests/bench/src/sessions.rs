//! `fetch-sessions`: full Fetch requests against KIP-227 incremental fetch sessions, on
//! one Kafka node, with raw requests shaped as klife's fetcher sends them: many
//! partitions in one request, few of them with records.
//!
//! For each partition count a topic is created with every partition on one node
//! (replication factor 1: no follower fetches), and a few partitions ("busy", spread over
//! the topic) are filled with one-record batches. Two variants:
//!
//! - **busy**: each request reads one batch from every busy partition (every
//!   partition asks for exactly one batch's bytes) and their fetch offsets move every
//!   request (back to 0 at their end); every other partition is empty and caught up;
//! - **idle**: no partition has records, as in klife's waiting lane (a long poll of
//!   caught-up partitions); `max_wait` is 0 here so that every request is answered at
//!   once and the round trip measures the work, not the wait.
//!
//! Two modes, in blocks that alternate (and swap order every repeat) on one connection:
//!
//! - **full**: every request lists every partition (session id 0, epoch -1), as klife's
//!   fetcher does today;
//! - **session**: a full request with epoch 0 opens a session (not counted), then every
//!   request is incremental: it lists only the partitions whose fetch offset changed
//!   since they were last sent and forgets none; a closing request (epoch -1 with the
//!   session id, not counted) ends the block.
//!
//! Per request: the bytes of the request and answer frames (size prefix included); the
//! client's CPU time (thread CPU time) to build and encode the request and to decode the
//! answer and read each partition's next offset; the round trip. Per block: the node's
//! CPU time (utime + stime of its process, from `/proc/PID/stat`) per request, less its
//! idle rate measured just before (1 s without requests). The table gives medians, and
//! full / session ratios taken within each repeat (median and range over the repeats),
//! since the machine's load moves between repeats.

#![allow(unsafe_code)]

use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write as _};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use klife::Client;
use klife_connection::Connection;
use klife_protocol::messages::create_topics_request::{CreatableReplicaAssignment, CreatableTopic};
use klife_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use klife_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use klife_protocol::messages::{CreateTopicsRequest, FetchRequest, FetchResponse, ProduceRequest};
use klife_protocol::{ApiKey, BatchOptions, ErrorCode, RecordBatchWriter, Uuid, frame};

use crate::opts::Opts;

/// `fetch.max.bytes`'s default in Kafka's consumer: the request's byte limit.
const REQUEST_MAX_BYTES: i32 = 50 << 20;

pub(crate) struct Settings {
    bootstrap: String,
    /// The node every partition is put on, and whose CPU is measured.
    node: i32,
    /// That node's process: `--broker-pid`, or asked from `--control`.
    pid: u32,
    partitions: Vec<i32>,
    busy: usize,
    batches: i64,
    value_size: usize,
    block: Duration,
    min_rounds: usize,
    repeats: usize,
    version: i16,
    variants: Vec<Variant>,
}

impl Settings {
    pub(crate) fn from_opts(mut opts: Opts) -> Result<Settings, String> {
        let bootstrap = opts.req("bootstrap")?;
        let node = opts.opt_parse("node")?.unwrap_or(1);
        let pid = match (opts.opt_parse::<u32>("broker-pid")?, opts.opt("control")) {
            (Some(pid), _) => pid,
            (None, Some(control)) => broker_pid(&control, node)?,
            (None, None) => return Err("--broker-pid PID or --control HOST:PORT is required".into()),
        };
        let partitions = match opts.opt("partitions") {
            None => vec![10, 100, 1000, 4000],
            Some(list) => list
                .split(',')
                .map(|p| p.trim().parse::<i32>().map_err(|e| format!("--partitions {p:?}: {e}")))
                .collect::<Result<_, _>>()?,
        };
        let busy = opts.opt_parse("busy")?.unwrap_or(4);
        let batches = opts.opt_parse("batches")?.unwrap_or(64);
        let value_size = opts.opt_parse("value-size")?.unwrap_or(100);
        let block = Duration::from_millis(opts.opt_parse("block-ms")?.unwrap_or(1500));
        let min_rounds = opts.opt_parse("min-rounds")?.unwrap_or(50);
        let repeats = opts.opt_parse("repeats")?.unwrap_or(5);
        let version = opts.opt_parse("fetch-version")?.unwrap_or(17);
        let variants = match opts.opt("variants").as_deref() {
            None | Some("busy,idle") => vec![Variant::Busy, Variant::Idle],
            Some("busy") => vec![Variant::Busy],
            Some("idle") => vec![Variant::Idle],
            Some(other) => return Err(format!("--variants {other:?}: busy, idle or busy,idle")),
        };
        opts.finish()?;
        if partitions.iter().any(|&p| p < 1) || repeats == 0 || min_rounds == 0 || batches < 1 || value_size == 0 {
            return Err("partitions, repeats, min rounds, batches and value size must be at least 1".into());
        }
        if partitions.iter().any(|&p| (p as usize) < busy) {
            return Err(format!("--busy {busy} is more than a topic's partitions"));
        }
        if !(7..=17).contains(&version) {
            return Err(format!("--fetch-version {version}: fetch sessions need version 7 to 17"));
        }
        Ok(Settings {
            bootstrap,
            node,
            pid,
            partitions,
            busy,
            batches,
            value_size,
            block,
            min_rounds,
            repeats,
            version,
            variants,
        })
    }
}

/// Asks the test cluster's control port (`KLIFE_TEST_KAFKA_CONTROL`) for `node`'s process.
fn broker_pid(control: &str, node: i32) -> Result<u32, String> {
    let mut stream = TcpStream::connect(control).map_err(|e| format!("control port {control}: {e}"))?;
    stream.write_all(b"pids\n").map_err(|e| format!("control port: {e}"))?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line).map_err(|e| format!("control port: {e}"))?;
    // `OK 1:PID 2:PID 3:PID`
    let pids = line.trim().strip_prefix("OK").ok_or_else(|| format!("control port answered {line:?}"))?;
    pids.split_whitespace()
        .filter_map(|w| w.split_once(':'))
        .find(|(n, _)| n.parse() == Ok(node))
        .and_then(|(_, p)| p.parse().ok())
        .ok_or_else(|| format!("node {node} is not running (control port: {line:?})"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    Busy,
    Idle,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Variant::Busy => "busy",
            Variant::Idle => "idle",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Full,
    Session,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Full => "full",
            Mode::Session => "session",
        }
    }
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    // SAFETY: clock_gettime only writes into the zero-initialised struct it is given.
    let ts = unsafe {
        let mut ts: libc::timespec = std::mem::zeroed();
        libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts);
        ts
    };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn ticks_per_second() -> f64 {
    // SAFETY: sysconf reads a constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// User plus system CPU seconds of process `pid`.
fn process_cpu(pid: u32, ticks: f64) -> Result<f64, String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).map_err(|e| format!("/proc/{pid}/stat: {e}"))?;
    let rest = stat.rfind(')').map(|i| &stat[i + 1..]).ok_or("unreadable /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).ok_or("unreadable /proc stat");
    Ok((field(11)? + field(12)?) / ticks)
}

/// The offset after the last whole batch in `records`, if any.
fn next_offset(records: &Bytes) -> Option<i64> {
    let mut rest: &[u8] = records;
    let mut next = None;
    // Batch: base offset (8), length (4), leader epoch (4), magic (1), crc (4),
    // attributes (2), last offset delta (4), ...
    while rest.len() >= 27 {
        let base = i64::from_be_bytes(rest[0..8].try_into().ok()?);
        let length = i32::from_be_bytes(rest[8..12].try_into().ok()?);
        let delta = i32::from_be_bytes(rest[23..27].try_into().ok()?);
        let size = 12usize.checked_add(usize::try_from(length).ok()?)?;
        if rest.len() < size {
            break;
        }
        next = Some(base + i64::from(delta) + 1);
        rest = &rest[size..];
    }
    next
}

/// One request's measures.
#[derive(Debug, Clone, Copy)]
struct Sample {
    request_bytes: usize,
    answer_bytes: usize,
    answer_partitions: usize,
    client_cpu: Duration,
    rtt: Duration,
}

/// One block of requests of one mode.
struct Block {
    samples: Vec<Sample>,
    /// The node's CPU per request, its idle rate taken off.
    broker_cpu_us: f64,
}

/// A topic on the node, and the client's view of its partitions.
struct Topic {
    name: String,
    id: Uuid,
    leader_epochs: Vec<i32>,
    /// Fetch offsets, by partition.
    offsets: Vec<i64>,
    /// End offsets of the filled partitions (0 for the others).
    ends: Vec<i64>,
    /// Bytes of one batch: each partition asks for that much.
    batch_bytes: i32,
}

/// The state an incremental session keeps on the client: its id, next epoch and the
/// fetch offset each partition was last sent with.
struct Session {
    id: i32,
    epoch: i32,
    sent: Vec<i64>,
}

struct Bench<'a> {
    s: &'a Settings,
    conn: Connection,
    topic: Topic,
    ticks: f64,
    /// The node's CPU seconds per second while no request runs.
    idle_rate: f64,
}

impl Bench<'_> {
    fn partition(&self, p: usize) -> FetchPartition {
        FetchPartition::default()
            .with_partition(p as i32)
            .with_current_leader_epoch(self.topic.leader_epochs[p])
            .with_fetch_offset(self.topic.offsets[p])
            .with_last_fetched_epoch(-1)
            .with_log_start_offset(-1)
            .with_partition_max_bytes(self.topic.batch_bytes)
    }

    fn request(&self, partitions: Vec<FetchPartition>, session_id: i32, epoch: i32) -> FetchRequest {
        let topic = if self.s.version >= 13 {
            FetchTopic::default().with_topic_id(self.topic.id)
        } else {
            FetchTopic::default().with_topic(self.topic.name.clone())
        };
        let topics = if partitions.is_empty() { Vec::new() } else { vec![topic.with_partitions(partitions)] };
        FetchRequest::default()
            .with_replica_id(-1)
            .with_max_wait_ms(0)
            .with_min_bytes(1)
            .with_max_bytes(REQUEST_MAX_BYTES)
            .with_isolation_level(0)
            .with_session_id(session_id)
            .with_session_epoch(epoch)
            .with_topics(topics)
    }

    /// Sends `request`; returns the answer and the sample (the client's CPU so far is
    /// `cpu`, the time spent building it).
    async fn round_trip(&mut self, request: &FetchRequest, cpu: Duration) -> Result<(FetchResponse, Sample), String> {
        let started = thread_cpu();
        let mut buf = BytesMut::with_capacity(256);
        frame::encode_request(&mut buf, 1, Some("klife"), self.s.version, request).map_err(|e| e.to_string())?;
        let request_bytes = buf.len();
        let encoded = thread_cpu();
        let sent = Instant::now();
        let answer = self.conn.send_raw(request, self.s.version).await.map_err(|e| format!("fetch: {e}"))?;
        let rtt = sent.elapsed();
        let answer_bytes = answer.len() + 4;
        let decoding = thread_cpu();
        let (_, response) = frame::decode_response::<FetchResponse>(answer, self.s.version)
            .map_err(|e| format!("fetch answer: {e}"))?;
        let answer_partitions = self.apply(&response)?;
        let done = thread_cpu();
        let client_cpu = cpu + (encoded - started) + (done - decoding);
        Ok((response, Sample { request_bytes, answer_bytes, answer_partitions, client_cpu, rtt }))
    }

    /// Takes the answer's next offsets (a filled partition read to its end starts again
    /// at 0); returns how many partitions it holds.
    fn apply(&mut self, response: &FetchResponse) -> Result<usize, String> {
        let code = ErrorCode::from_code(response.error_code);
        if code != ErrorCode::None {
            return Err(format!("fetch answered {code:?} (session {})", response.session_id));
        }
        let mut count = 0;
        for t in &response.responses {
            for p in &t.partitions {
                count += 1;
                let code = ErrorCode::from_code(p.error_code);
                if code != ErrorCode::None {
                    return Err(format!("partition {} answered {code:?}", p.partition_index));
                }
                let i = usize::try_from(p.partition_index).map_err(|_| "negative partition index")?;
                let Some(next) = p.records.as_ref().and_then(next_offset) else { continue };
                let end = self.topic.ends.get(i).copied().ok_or("partition index out of range")?;
                self.topic.offsets[i] = if next >= end { 0 } else { next };
            }
        }
        Ok(count)
    }

    async fn block(&mut self, mode: Mode) -> Result<Block, String> {
        let n = self.topic.offsets.len();
        let mut session = match mode {
            Mode::Full => None,
            Mode::Session => Some(self.open().await?),
        };
        let mut samples = Vec::new();
        let broker_before = process_cpu(self.s.pid, self.ticks)?;
        let started = Instant::now();
        while samples.len() < self.s.min_rounds || started.elapsed() < self.s.block {
            let building = thread_cpu();
            let request = match &mut session {
                None => self.request((0..n).map(|p| self.partition(p)).collect(), 0, -1),
                Some(session) => {
                    let mut changed = Vec::new();
                    for p in 0..n {
                        if session.sent[p] != self.topic.offsets[p] {
                            session.sent[p] = self.topic.offsets[p];
                            changed.push(self.partition(p));
                        }
                    }
                    self.request(changed, session.id, session.epoch)
                }
            };
            let built = thread_cpu() - building;
            let (response, sample) = self.round_trip(&request, built).await?;
            if let Some(session) = &mut session {
                if response.session_id != session.id {
                    return Err(format!("session {} answered as session {}", session.id, response.session_id));
                }
                session.epoch = if session.epoch == i32::MAX { 1 } else { session.epoch + 1 };
            } else if sample.answer_partitions != n {
                return Err(format!("a full fetch of {n} partitions was answered for {}", sample.answer_partitions));
            }
            samples.push(sample);
        }
        let wall = started.elapsed();
        let broker = process_cpu(self.s.pid, self.ticks)? - broker_before;
        if let Some(session) = session {
            // Closing: epoch -1 with the id, no partitions.
            let close = self.request(Vec::new(), session.id, -1);
            self.conn.send_raw(&close, self.s.version).await.map_err(|e| format!("closing the session: {e}"))?;
        }
        let idle = self.idle_rate * wall.as_secs_f64();
        let broker_cpu_us = (broker - idle).max(0.0) * 1e6 / samples.len() as f64;
        Ok(Block { samples, broker_cpu_us })
    }

    /// Waits until the node answers every partition without error: it may learn that
    /// it leads the new partitions after the metadata said so.
    async fn ready(&mut self) -> Result<(), String> {
        let n = self.topic.offsets.len();
        let deadline = Instant::now() + Duration::from_secs(120);
        loop {
            let request = self.request((0..n).map(|p| self.partition(p)).collect(), 0, -1);
            let response = self.conn.send_version(&request, self.s.version).await.map_err(|e| format!("fetch: {e}"))?;
            let failed = response
                .responses
                .iter()
                .flat_map(|t| &t.partitions)
                .map(|p| (p.partition_index, ErrorCode::from_code(p.error_code)))
                .find(|(_, code)| *code != ErrorCode::None);
            match failed {
                None => return Ok(()),
                Some((p, code)) if Instant::now() > deadline => {
                    return Err(format!("partition {p} still answers {code:?} after 120 s"));
                }
                Some(_) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Opens a session with a full request at epoch 0 (not measured).
    async fn open(&mut self) -> Result<Session, String> {
        let n = self.topic.offsets.len();
        let request = self.request((0..n).map(|p| self.partition(p)).collect(), 0, 0);
        let (response, sample) = self.round_trip(&request, Duration::ZERO).await?;
        if response.session_id == 0 {
            return Err(format!("the broker granted no session for {n} partitions (session id 0)"));
        }
        if sample.answer_partitions != n {
            return Err(format!(
                "the session's first fetch of {n} partitions was answered for {}",
                sample.answer_partitions
            ));
        }
        Ok(Session { id: response.session_id, epoch: 1, sent: request_offsets(&request, n) })
    }
}

/// The fetch offsets a request carried, by partition (-1 for those it left out).
fn request_offsets(request: &FetchRequest, n: usize) -> Vec<i64> {
    let mut sent = vec![-1; n];
    for t in &request.topics {
        for p in &t.partitions {
            if let Some(slot) = usize::try_from(p.partition).ok().and_then(|i| sent.get_mut(i)) {
                *slot = p.fetch_offset;
            }
        }
    }
    sent
}

/// Creates `name` with `n` partitions, all on `node`, and waits until the node leads
/// them all.
async fn create_topic(client: &Client, conn: &Connection, name: &str, n: i32, node: i32) -> Result<Topic, String> {
    let assignments: Vec<CreatableReplicaAssignment> = (0..n)
        .map(|p| CreatableReplicaAssignment::default().with_partition_index(p).with_broker_ids(vec![node]))
        .collect();
    let request = CreateTopicsRequest::default()
        .with_topics(vec![
            CreatableTopic::default()
                .with_name(name.to_owned())
                .with_num_partitions(-1)
                .with_replication_factor(-1)
                .with_assignments(assignments),
        ])
        .with_timeout_ms(60_000);
    let response = conn.send(&request).await.map_err(|e| format!("creating {name}: {e}"))?;
    for t in &response.topics {
        let code = ErrorCode::from_code(t.error_code);
        if code != ErrorCode::None {
            return Err(format!("creating {name}: {code:?} {}", t.error_message.as_deref().unwrap_or("")));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let cluster = client.cluster();
    let mut metadata = cluster.add_topics(&[name]).await.map_err(|e| format!("metadata of {name}: {e}"))?;
    loop {
        if let Some(t) = metadata.topic(name) {
            let ready = t.error == ErrorCode::None
                && t.partitions.len() == n as usize
                && t.partitions.iter().all(|p| p.leader == node && p.error == ErrorCode::None);
            if ready {
                let mut leader_epochs = vec![-1; n as usize];
                for p in &t.partitions {
                    if let Some(e) = usize::try_from(p.partition).ok().and_then(|i| leader_epochs.get_mut(i)) {
                        *e = p.leader_epoch;
                    }
                }
                return Ok(Topic {
                    name: name.to_owned(),
                    id: t.id,
                    leader_epochs,
                    offsets: vec![0; n as usize],
                    ends: vec![0; n as usize],
                    batch_bytes: 0,
                });
            }
        }
        if Instant::now() > deadline {
            return Err(format!("{name}: node {node} does not lead its {n} partitions after 120 s"));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        metadata = cluster.refresh_metadata().await.map_err(|e| format!("metadata of {name}: {e}"))?;
    }
}

/// Writes `batches` one-record batches into each of `busy`; returns a batch's size.
async fn fill(
    conn: &Connection,
    topic: &mut Topic,
    busy: &[usize],
    batches: i64,
    value_size: usize,
) -> Result<i32, String> {
    let value: Vec<u8> = (0..value_size).map(|i| (i * 131 % 251) as u8).collect();
    let now = chrono::Utc::now().timestamp_millis();
    let mut size = 0;
    for _ in 0..batches {
        let mut partitions = Vec::new();
        for &p in busy {
            let mut writer = RecordBatchWriter::new(BatchOptions::default());
            writer.append(now, None, Some(&value)).map_err(|e| e.to_string())?;
            let batch = writer.finish().map_err(|e| e.to_string())?;
            size = batch.len();
            partitions.push(PartitionProduceData::default().with_index(p as i32).with_records(Some(batch)));
        }
        let request = ProduceRequest::default().with_acks(-1).with_timeout_ms(30_000).with_topic_data(vec![
            TopicProduceData::default().with_name(topic.name.clone()).with_partition_data(partitions),
        ]);
        // The node may learn that it leads the new partitions a little after the
        // metadata said so: retriable errors are tried again for a while.
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let response = conn.send(&request).await.map_err(|e| format!("filling {}: {e}", topic.name))?;
            // A partition written by an earlier try holds the batch twice: the ends
            // come from the offsets the node gave.
            for p in response.responses.iter().flat_map(|t| &t.partition_responses) {
                if let (ErrorCode::None, Ok(i)) = (ErrorCode::from_code(p.error_code), usize::try_from(p.index)) {
                    if let Some(end) = topic.ends.get_mut(i) {
                        *end = (*end).max(p.base_offset + 1);
                    }
                }
            }
            let failed = response
                .responses
                .iter()
                .flat_map(|t| &t.partition_responses)
                .map(|p| (p.index, ErrorCode::from_code(p.error_code)))
                .find(|(_, code)| *code != ErrorCode::None);
            match failed {
                None => break,
                Some((_, code)) if code.is_retriable() && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Some((p, code)) => return Err(format!("filling {}-{p}: {code:?}", topic.name)),
            }
        }
    }
    i32::try_from(size).map_err(|_| "batch too large".to_owned())
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    match xs.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => xs[n / 2],
        n => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

/// The medians of one block, per request.
#[derive(Debug, Clone, Copy)]
struct Medians {
    request_bytes: f64,
    answer_bytes: f64,
    answer_partitions: f64,
    client_us: f64,
    rtt_us: f64,
    broker_us: f64,
}

impl Medians {
    fn of(blocks: &[&Block]) -> Medians {
        let all = |f: &dyn Fn(&Sample) -> f64| median(blocks.iter().flat_map(|b| b.samples.iter().map(f)).collect());
        Medians {
            request_bytes: all(&|s| s.request_bytes as f64),
            answer_bytes: all(&|s| s.answer_bytes as f64),
            answer_partitions: all(&|s| s.answer_partitions as f64),
            client_us: all(&|s| s.client_cpu.as_secs_f64() * 1e6),
            rtt_us: all(&|s| s.rtt.as_secs_f64() * 1e6),
            broker_us: median(blocks.iter().map(|b| b.broker_cpu_us).collect()),
        }
    }
}

/// Every block of one partition count and variant.
struct Case {
    partitions: i32,
    variant: Variant,
    /// (full, session) per repeat.
    repeats: Vec<(Block, Block)>,
}

impl Case {
    fn rows(&self, out: &mut String) {
        let full: Vec<&Block> = self.repeats.iter().map(|r| &r.0).collect();
        let session: Vec<&Block> = self.repeats.iter().map(|r| &r.1).collect();
        let (f, s) = (Medians::of(&full), Medians::of(&session));
        let label = format!("{} {}", self.partitions, self.variant.name());
        for (mode, m) in [(Mode::Full, f), (Mode::Session, s)] {
            let _ = writeln!(
                out,
                "| {label} | {} | {:.0} | {:.0} | {:.0} | {:.1} | {:.0} | {:.1} |",
                mode.name(),
                m.request_bytes,
                m.answer_bytes,
                m.answer_partitions,
                m.client_us,
                m.rtt_us,
                m.broker_us
            );
        }
        // Ratios within each repeat, then their median and range.
        let ratio = |g: &dyn Fn(&Medians) -> f64| {
            let rs: Vec<f64> = self
                .repeats
                .iter()
                .map(|(a, b)| g(&Medians::of(&[a])) / g(&Medians::of(&[b])))
                .filter(|r| r.is_finite())
                .collect();
            if rs.is_empty() {
                return "-".to_owned();
            }
            let lo = rs.iter().copied().fold(f64::INFINITY, f64::min);
            let hi = rs.iter().copied().fold(0.0, f64::max);
            format!("{:.1}× ({:.1}-{:.1})", median(rs), lo, hi)
        };
        let _ = writeln!(
            out,
            "| {label} | full / session | {:.0}× | {:.0}× | | {} | {} | {} |",
            f.request_bytes / s.request_bytes,
            f.answer_bytes / s.answer_bytes,
            ratio(&|m| m.client_us),
            ratio(&|m| m.rtt_us),
            ratio(&|m| m.broker_us),
        );
    }
}

async fn run_partitions(s: &Settings, client: &Client, n: i32, ticks: f64) -> Result<(String, Vec<Case>), String> {
    let conn = client.cluster().broker(s.node).await.map_err(|e| format!("node {}: {e}", s.node))?;
    let name = format!("fetch-sessions-{n}-{}-{}", std::process::id(), chrono::Utc::now().timestamp_millis());
    eprintln!("==> {n} partitions: topic {name} on node {}", s.node);
    let mut topic = create_topic(client, &conn, &name, n, s.node).await?;
    // Busy partitions spread over the topic.
    let busy: Vec<usize> = (0..s.busy).map(|i| i * n as usize / s.busy.max(1)).collect();
    topic.batch_bytes = fill(&conn, &mut topic, &busy, s.batches, s.value_size).await?;
    let fetch_conn =
        client.cluster().fetch_connection(s.node, false).await.map_err(|e| format!("node {}: {e}", s.node))?;
    let broker_max = fetch_conn.version_for(ApiKey::Fetch, Some(s.version)).map_err(|e| e.to_string())?;
    if broker_max != s.version {
        return Err(format!("node {} speaks Fetch up to v{broker_max}, not v{}", s.node, s.version));
    }
    eprintln!("    batches of {} B", topic.batch_bytes);
    let mut bench = Bench { s, conn: fetch_conn, topic, ticks, idle_rate: 0.0 };
    bench.ready().await?;
    // Warm-up, not counted: the node's JIT and caches, for both modes.
    for mode in [Mode::Full, Mode::Session, Mode::Full, Mode::Session] {
        bench.block(mode).await?;
    }
    let mut cases = Vec::new();
    for &variant in &s.variants {
        let mut repeats = Vec::new();
        for r in 0..s.repeats {
            // The node's idle CPU rate now, taken off this repeat's blocks.
            bench.idle_rate = idle_rate(s.pid, ticks).await?;
            eprintln!("    node {} idle: {:.1} ms CPU per second", s.node, bench.idle_rate * 1e3);
            // Idle: every partition caught up. Busy: the filled ones read from the start.
            for (p, offset) in bench.topic.offsets.iter_mut().enumerate() {
                *offset = if variant == Variant::Idle { bench.topic.ends[p] } else { 0 };
            }
            let order = if r % 2 == 0 { [Mode::Full, Mode::Session] } else { [Mode::Session, Mode::Full] };
            let mut blocks: HashMap<&str, Block> = HashMap::new();
            for mode in order {
                let block = bench.block(mode).await?;
                let m = Medians::of(&[&block]);
                eprintln!(
                    "    {n} {} repeat {} {:>7}: {:>5} requests, {:>7.0} B out, {:>7.0} B in, client {:>7.1} µs, rtt {:>7.0} µs, broker {:>7.1} µs",
                    variant.name(),
                    r + 1,
                    mode.name(),
                    block.samples.len(),
                    m.request_bytes,
                    m.answer_bytes,
                    m.client_us,
                    m.rtt_us,
                    m.broker_us
                );
                blocks.insert(mode.name(), block);
            }
            match (blocks.remove("full"), blocks.remove("session")) {
                (Some(f), Some(s)) => repeats.push((f, s)),
                _ => return Err("a block is missing".into()),
            }
        }
        cases.push(Case { partitions: n, variant, repeats });
    }
    Ok((name, cases))
}

/// The node's CPU seconds per second over one second without requests.
async fn idle_rate(pid: u32, ticks: f64) -> Result<f64, String> {
    let before = process_cpu(pid, ticks)?;
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await;
    Ok((process_cpu(pid, ticks)? - before) / started.elapsed().as_secs_f64())
}

pub(crate) async fn run(s: Settings) -> Result<(), String> {
    let client = Client::builder()
        .bootstrap_servers(s.bootstrap.split(',').map(str::trim))
        .build()
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", s.bootstrap))?;
    let ticks = ticks_per_second();
    let mut cases = Vec::new();
    let mut topics = Vec::new();
    // The topics are deleted at the end: Kafka deletes a topic's files a minute after
    // it was deleted, which would load the node during the next partition count.
    let mut result = Ok(());
    for &n in &s.partitions {
        match run_partitions(&s, &client, n, ticks).await {
            Ok((topic, more)) => {
                topics.push(topic);
                cases.extend(more);
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    if let Err(e) = client.delete_topics(&topics).await {
        eprintln!("could not delete the topics {topics:?}: {e}");
    }
    result?;
    let mut out = format!(
        "fetch-sessions: Fetch v{}, node {} (pid {}), {} busy partition(s) of one {}-byte record per batch, blocks of at least {} ms and {} requests, {} repeat(s), medians; ratios within each repeat, median (range)\n\n",
        s.version,
        s.node,
        s.pid,
        s.busy,
        s.value_size,
        s.block.as_millis(),
        s.min_rounds,
        s.repeats
    );
    out.push_str("| partitions | mode | request B | answer B | partitions in answer | client CPU µs/request | round trip µs | broker CPU µs/request |\n");
    out.push_str("|---|---|---:|---:|---:|---:|---:|---:|\n");
    for case in &cases {
        case.rows(&mut out);
    }
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "\n{out}").and_then(|()| stdout.flush()).map_err(|e| format!("stdout: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_offsets_come_from_whole_batches() {
        let mut writer = RecordBatchWriter::new(BatchOptions { base_offset: 40, ..BatchOptions::default() });
        for _ in 0..3 {
            writer.append(0, None, Some(b"v")).expect("append");
        }
        let batch = writer.finish().expect("batch");
        assert_eq!(next_offset(&batch), Some(43));
        let mut two = BytesMut::new();
        two.extend_from_slice(&batch);
        two.extend_from_slice(&batch[..batch.len() - 1]);
        assert_eq!(next_offset(&two.freeze()), Some(43), "a partial batch at the end is not read");
        assert_eq!(next_offset(&Bytes::new()), None);
        assert_eq!(next_offset(&batch.slice(..20)), None);
    }

    #[test]
    fn medians() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
    }
}
