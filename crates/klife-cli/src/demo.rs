//! `klife demo` and `klife bench`: produce records with the real producer, read them
//! back with the real fetcher, and (for the demo) check every one, then read them again
//! through a consumer group of three members, one of which leaves half way.

use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use indicatif::{ProgressBar, ProgressStyle};
use klife::{Client, FetchOptions, IsolationLevel, ProducerRecord, StartOffset};
use klife_testkit::FakeCluster;

use crate::{CliError, connect, demo_group};

/// Delivery futures awaited together.
const CHUNK: usize = 4096;
/// How long reading may see no new record before giving up.
const STALL: Duration = Duration::from_secs(30);

/// Options of `klife demo`.
#[derive(Debug, clap::Args)]
pub(crate) struct DemoArgs {
    #[command(flatten)]
    run: RunArgs,
}

/// Options of `klife bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    #[command(flatten)]
    run: RunArgs,
    /// How many times to run (each on a new topic).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

#[derive(Debug, clap::Args)]
struct RunArgs {
    /// Run against this cluster instead of an embedded fake one.
    #[arg(long, short = 'b', value_name = "HOST:PORT")]
    bootstrap: Option<String>,
    /// Records to produce and read back.
    #[arg(long, default_value_t = 1_000_000)]
    records: u64,
    /// Bytes per value (at least 8: each value starts with its sequence number).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(8..=1_048_576))]
    value_size: u32,
    /// Partitions of the topic.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(i32).range(1..=10_000))]
    partitions: i32,
    /// Brokers of the embedded fake cluster.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=16))]
    brokers: u32,
    /// Topic to use (default: a new `klife-demo-...` topic).
    #[arg(long)]
    topic: Option<String>,
    /// Print the report as one JSON line instead of text.
    #[arg(long)]
    json: bool,
    /// Do not draw progress bars.
    #[arg(long)]
    no_progress: bool,
}

/// What one round trip measured.
#[derive(Debug)]
struct Report {
    cluster: String,
    topic: String,
    records: u64,
    value_size: u32,
    partitions: i32,
    produce: Duration,
    consume: Duration,
}

impl Report {
    fn rate(&self, d: Duration) -> f64 {
        self.records as f64 / d.as_secs_f64().max(1e-9)
    }

    fn mb_per_s(&self, d: Duration) -> f64 {
        self.rate(d) * f64::from(self.value_size) / 1e6
    }

    fn json(&self, verified: bool) -> String {
        serde_json::json!({
            "cluster": self.cluster,
            "topic": self.topic,
            "records": self.records,
            "value_size": self.value_size,
            "partitions": self.partitions,
            "produce_s": self.produce.as_secs_f64(),
            "produce_records_per_s": self.rate(self.produce).round(),
            "consume_s": self.consume.as_secs_f64(),
            "consume_records_per_s": self.rate(self.consume).round(),
            "verified": verified,
        })
        .to_string()
    }

    fn text(&self) -> String {
        format!(
            "  produced {} records of {} B in {:.2} s: {:.0} records/s ({:.1} MB/s)\n  read back {} records in {:.2} s: {:.0} records/s ({:.1} MB/s)",
            self.records,
            self.value_size,
            self.produce.as_secs_f64(),
            self.rate(self.produce),
            self.mb_per_s(self.produce),
            self.records,
            self.consume.as_secs_f64(),
            self.rate(self.consume),
            self.mb_per_s(self.consume),
        )
    }
}

/// The cluster a run uses: the embedded one is stopped when this is dropped.
struct Target {
    client: Client,
    description: String,
    _embedded: Option<FakeCluster>,
}

async fn target(args: &RunArgs) -> Result<Target, CliError> {
    match &args.bootstrap {
        Some(b) => {
            let client = connect(b, Duration::from_secs(30)).await?;
            Ok(Target { client, description: b.clone(), _embedded: None })
        }
        None => {
            // Members learn of assignment changes on their heartbeats: a short interval
            // (Kafka's default is 5 s) keeps the group phase's hand-over quick.
            let cluster = FakeCluster::builder()
                .brokers(args.brokers as usize)
                .consumer_heartbeat_interval(Duration::from_millis(250))
                .start()
                .await?;
            let description = format!("embedded fake cluster, {} brokers at {}", args.brokers, cluster.bootstrap());
            let client = connect(&cluster.bootstrap(), Duration::from_secs(30)).await?;
            Ok(Target { client, description, _embedded: Some(cluster) })
        }
    }
}

fn unique_topic() -> String {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("klife-demo-{}-{}", now.as_secs(), now.subsec_nanos())
}

fn bar(len: u64, label: &str, hidden: bool) -> ProgressBar {
    if hidden {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template(&format!(
        "{label:>9} [{{bar:40}}] {{pos}}/{{len}} records, {{per_sec}}, {{elapsed_precise}}"
    )) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// The value of record `seq`: its sequence number, then incompressible filler.
fn value(seq: u64, size: usize, rng: &mut u64) -> Bytes {
    let mut v = BytesMut::with_capacity(size);
    v.put_u64(seq);
    while v.len() < size {
        // xorshift64
        *rng ^= *rng << 13;
        *rng ^= *rng >> 7;
        *rng ^= *rng << 17;
        let word = rng.to_le_bytes();
        let n = (size - v.len()).min(8);
        v.put_slice(&word[..n]);
    }
    v.freeze()
}

/// Creates the topic (unless it exists) and waits until every partition has a leader.
async fn prepare_topic(client: &Client, topic: &str, partitions: i32) -> Result<(), CliError> {
    let exists = match client.partitions(topic).await {
        Ok(_) => true,
        Err(e) if e.is_unknown_topic_or_partition() => false,
        Err(e) => return Err(e.into()),
    };
    if !exists {
        client
            .create_topic(topic, partitions)
            .await
            .map_err(|e| CliError::Failed(format!("cannot create topic {topic}: {e}")))?;
    }
    for _ in 0..100 {
        let found = client.partitions(topic).await;
        if found.is_ok_and(|p| p.len() == partitions as usize && p.iter().all(|p| p.leader.is_some())) {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err(CliError::Failed(format!("topic {topic} did not get {partitions} partitions with leaders")))
}

/// Produces `records` records, record `i` to partition `i % partitions`; returns the
/// time taken.
async fn produce_all(client: &Client, topic: &str, a: &RunArgs, progress: &ProgressBar) -> Result<Duration, CliError> {
    let producer = client.new_producer(klife::ProducerConfig::default()).await?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<klife::DeliveryFuture>>(64);
    let started = Instant::now();
    let waiter = {
        let progress = progress.clone();
        tokio::spawn(async move {
            while let Some(chunk) = rx.recv().await {
                let n = chunk.len() as u64;
                for d in chunk {
                    d.await.map_err(|e| CliError::Failed(format!("a record was not delivered: {e}")))?;
                }
                progress.inc(n);
            }
            Ok::<(), CliError>(())
        })
    };
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut chunk = Vec::with_capacity(CHUNK);
    for seq in 0..a.records {
        let partition = (seq % a.partitions as u64) as i32;
        let record = ProducerRecord::new(topic, value(seq, a.value_size as usize, &mut rng)).with_partition(partition);
        chunk.push(producer.produce_async(record).await.map_err(|e| CliError::Failed(format!("produce: {e}")))?);
        if chunk.len() == CHUNK && tx.send(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK))).await.is_err() {
            break; // the waiter stopped on an error: it reports it below
        }
    }
    if !chunk.is_empty() {
        let _ = tx.send(chunk).await;
    }
    drop(tx);
    waiter.await.map_err(|e| CliError::Failed(format!("the delivery task failed: {e}")))??;
    let elapsed = started.elapsed();
    producer.close().await;
    progress.finish();
    Ok(elapsed)
}

/// Reads every record back; with `verify`, checks that partition `p` holds exactly
/// records `p, p + P, p + 2P, ...` in order, each with the expected size.
async fn consume_all(
    client: &Client,
    topic: &str,
    a: &RunArgs,
    verify: bool,
    progress: &ProgressBar,
) -> Result<Duration, CliError> {
    let started = Instant::now();
    let mut consumer = client.consumer(FetchOptions::new().with_isolation_level(IsolationLevel::ReadCommitted));
    let assignment: Vec<(&str, i32, StartOffset)> =
        (0..a.partitions).map(|p| (topic, p, StartOffset::Earliest)).collect();
    consumer.assign(&assignment).await?;
    let partitions = a.partitions as u64;
    let mut expected: Vec<u64> = (0..partitions).collect();
    let mut read = 0u64;
    while read < a.records {
        let fetched = match tokio::time::timeout(STALL, consumer.next()).await {
            Ok(Some(Ok(f))) => f,
            Ok(Some(Err(e))) => return Err(CliError::Failed(format!("reading back after {read} records: {e}"))),
            Ok(None) => return Err(CliError::Failed(format!("every partition stopped after {read} records"))),
            Err(_) => {
                return Err(CliError::Verification(format!(
                    "no record for {} s after {read} of {} records: records are missing",
                    STALL.as_secs(),
                    a.records
                )));
            }
        };
        if verify {
            let p = fetched.partition as usize;
            for r in &fetched.records {
                let v = r.value.as_deref().unwrap_or_default();
                let seq = v.get(..8).map(|b| u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]));
                if seq != Some(expected[p]) || v.len() != a.value_size as usize {
                    return Err(CliError::Verification(format!(
                        "{topic}-{p} offset {}: expected record #{} of {} bytes, found {} of {} bytes (lost, repeated or reordered)",
                        r.offset,
                        expected[p],
                        a.value_size,
                        seq.map_or("no sequence number".to_owned(), |s| format!("#{s}")),
                        v.len()
                    )));
                }
                expected[p] += partitions;
            }
        }
        read += fetched.records.len() as u64;
        progress.inc(fetched.records.len() as u64);
    }
    let elapsed = started.elapsed();
    progress.finish();
    if read > a.records {
        return Err(CliError::Verification(format!("read {read} records, {} were produced", a.records)));
    }
    Ok(elapsed)
}

async fn round_trip(t: &Target, a: &RunArgs, topic: String, verify: bool) -> Result<Report, CliError> {
    prepare_topic(&t.client, &topic, a.partitions).await?;
    let hidden = a.no_progress || a.json;
    let produce = produce_all(&t.client, &topic, a, &bar(a.records, "produce", hidden)).await?;
    let consume = consume_all(&t.client, &topic, a, verify, &bar(a.records, "read back", hidden)).await?;
    Ok(Report {
        cluster: t.description.clone(),
        topic,
        records: a.records,
        value_size: a.value_size,
        partitions: a.partitions,
        produce,
        consume,
    })
}

/// `klife demo`.
pub(crate) async fn demo(args: DemoArgs) -> Result<(), CliError> {
    let a = args.run;
    let t = target(&a).await?;
    let topic = a.topic.clone().unwrap_or_else(unique_topic);
    if !a.json {
        out!(
            "klife demo: {} records of {} B, {} partitions, on the {}",
            a.records,
            a.value_size,
            a.partitions,
            t.description
        );
    }
    let report = round_trip(&t, &a, topic, true).await?;
    if !a.json {
        out!("{}", report.text());
        out!(
            "  verified: all {} records read back once, in order, in each of the {} partitions of {}",
            report.records,
            report.partitions,
            report.topic
        );
    }
    let hidden = a.no_progress || a.json;
    let group = demo_group::read_through_a_group(
        &t.client,
        &report.topic,
        a.records,
        a.partitions,
        a.value_size as usize,
        &bar(a.records, "group", hidden),
        STALL,
    )
    .await?;
    if a.json {
        let mut json: serde_json::Value =
            serde_json::from_str(&report.json(true)).map_err(|e| CliError::Failed(format!("the report: {e}")))?;
        json["group"] = serde_json::json!(group.group);
        json["group_members"] = serde_json::json!(demo_group::MEMBERS);
        json["group_s"] = serde_json::json!(group.elapsed.as_secs_f64());
        json["group_records_per_s"] = serde_json::json!(report.rate(group.elapsed).round());
        json["rebalance_ms"] = serde_json::json!(group.rebalance.as_millis());
        out!("{json}");
    } else {
        out!(
            "  read again through consumer group {} of {} members in {:.2} s: {:.0} records/s; one member left half way \
             and its partitions ran on the others {} ms later",
            group.group,
            demo_group::MEMBERS,
            group.elapsed.as_secs_f64(),
            report.rate(group.elapsed),
            group.rebalance.as_millis()
        );
        out!(
            "  verified: every record handled once by the group, in order in each partition, also across the hand-over"
        );
    }
    t.client.close().await;
    Ok(())
}

/// `klife bench`.
pub(crate) async fn bench(args: BenchArgs) -> Result<(), CliError> {
    let a = args.run;
    let t = target(&a).await?;
    if !a.json {
        out!(
            "klife bench: {} records of {} B, {} partitions, on the {}",
            a.records,
            a.value_size,
            a.partitions,
            t.description
        );
    }
    for round in 1..=args.rounds.max(1) {
        let topic = match &a.topic {
            Some(base) => format!("{base}-{round}"),
            None => unique_topic(),
        };
        let report = round_trip(&t, &a, topic, false).await?;
        if a.json {
            out!("{}", report.json(false));
        } else {
            out!("round {round}:\n{}", report.text());
        }
    }
    t.client.close().await;
    Ok(())
}
