//! `klife serve`, `klife produce`, `klife consume` and `klife topics`.

use std::collections::BTreeSet;

use bytes::Bytes;
use klife::{Client, ConsumerEvent, FetchOptions, IsolationLevel, ProducerRecord, Record, StartOffset};
use klife_testkit::FakeCluster;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::{CliError, ConnectArgs};

/// Options of `klife serve`.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// Brokers in the cluster.
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=16))]
    brokers: u32,
    /// Topics to create at start, `name:partitions` (repeatable).
    #[arg(long = "topic", value_name = "NAME:PARTITIONS")]
    topics: Vec<String>,
    /// Create unknown topics when a client asks for their metadata, with this many
    /// partitions.
    #[arg(long, value_name = "PARTITIONS")]
    auto_create: Option<i32>,
}

/// `klife serve`.
pub(crate) async fn serve(args: ServeArgs) -> Result<(), CliError> {
    let mut builder = FakeCluster::builder().brokers(args.brokers as usize);
    for t in &args.topics {
        let (name, partitions) = t
            .rsplit_once(':')
            .and_then(|(n, p)| Some((n, p.parse::<i32>().ok().filter(|p| *p > 0)?)))
            .ok_or_else(|| CliError::Failed(format!("--topic {t:?}: expected NAME:PARTITIONS, e.g. orders:6")))?;
        builder = builder.topic(name, partitions);
    }
    if let Some(p) = args.auto_create {
        builder = builder.auto_create_topics(true, p);
    }
    let cluster = builder.start().await?;
    // Standard output carries only the bootstrap line (for scripts); the rest goes to
    // standard error.
    out!("BOOTSTRAP {}", cluster.bootstrap());
    eprintln!("klife serve: a fake cluster of {} brokers is running; Ctrl-C stops it", args.brokers);
    tokio::signal::ctrl_c().await.map_err(|e| CliError::Failed(format!("cannot wait for Ctrl-C: {e}")))?;
    cluster.shutdown().await;
    Ok(())
}

/// Options of `klife produce`.
#[derive(Debug, clap::Args)]
pub(crate) struct ProduceArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Topic to write to.
    #[arg(long, short = 't')]
    topic: String,
    /// Key of every record.
    #[arg(long, short = 'k')]
    key: Option<String>,
    /// Partition (default: the partitioner's choice: murmur2 of the key, sticky without).
    #[arg(long, short = 'p')]
    partition: Option<i32>,
    /// Header `key=value` (repeatable; `key` alone for a null value).
    #[arg(long = "header", short = 'H', value_name = "KEY=VALUE")]
    headers: Vec<String>,
    /// Values to produce; without any, each line of standard input is one value.
    values: Vec<String>,
}

/// `klife produce`.
pub(crate) async fn produce(args: ProduceArgs) -> Result<(), CliError> {
    let headers: Vec<(String, Option<Bytes>)> = args
        .headers
        .iter()
        .map(|h| match h.split_once('=') {
            Some((k, v)) => (k.to_owned(), Some(Bytes::from(v.to_owned()))),
            None => (h.clone(), None),
        })
        .collect();
    let client = args.connect.client().await?;
    let make = |value: String| {
        let mut r = ProducerRecord::new(args.topic.as_str(), value);
        if let Some(k) = &args.key {
            r = r.with_key(k.clone());
        }
        if let Some(p) = args.partition {
            r = r.with_partition(p);
        }
        for (k, v) in &headers {
            r = r.with_header(k.clone(), v.clone());
        }
        r
    };
    let mut failed = 0usize;
    let mut report = |result: Result<klife::RecordMetadata, klife::Error>| match result {
        Ok(m) => out!("{}-{}@{}", m.topic, m.partition, m.offset),
        Err(e) => {
            failed += 1;
            eprintln!("klife: a record failed: {e}");
        }
    };
    if args.values.is_empty() {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        let mut pending = Vec::new();
        while let Some(line) = lines.next_line().await.map_err(|e| CliError::Failed(format!("stdin: {e}")))? {
            pending.push(client.produce_async(make(line)).await?);
            if pending.len() >= 1024 {
                for d in pending.drain(..) {
                    report(d.await.map_err(klife::Error::from));
                }
            }
        }
        for d in pending {
            report(d.await.map_err(klife::Error::from));
        }
    } else {
        let records: Vec<ProducerRecord> = args.values.iter().cloned().map(make).collect();
        for r in client.produce_batch(records).await {
            report(r);
        }
    }
    client.close().await;
    if failed > 0 { Err(CliError::Failed(format!("{failed} records were not produced"))) } else { Ok(()) }
}

/// Output format of `klife consume`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum Format {
    /// `topic-partition@offset key=... value=...`, one record per line.
    Text,
    /// One JSON object per record.
    Json,
    /// The value only.
    Value,
}

/// Options of `klife consume`.
#[derive(Debug, clap::Args)]
pub(crate) struct ConsumeArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    /// Topic to read.
    #[arg(long, short = 't')]
    topic: String,
    /// Partitions to read (repeatable; default: all).
    #[arg(long = "partition", short = 'p', conflicts_with = "group")]
    partitions: Vec<i32>,
    /// Where to start: `earliest`, `latest`, or an offset. With `--group`, where a
    /// partition starts when the group has no offset committed for it (`earliest` or
    /// `latest`).
    #[arg(long, default_value = "earliest")]
    from: String,
    #[command(flatten)]
    group: crate::groups::GroupConsumeArgs,
    /// Stop after this many records.
    #[arg(long, short = 'n')]
    count: Option<u64>,
    /// Keep waiting for new records instead of stopping at the end (a group member
    /// always does, until Ctrl-C or `--count`).
    #[arg(long, short = 'f')]
    follow: bool,
    /// Read records of open and aborted transactions too.
    #[arg(long)]
    read_uncommitted: bool,
    /// How to print records.
    #[arg(long, value_enum, default_value = "text")]
    format: Format,
}

fn start_offset(from: &str) -> Result<StartOffset, CliError> {
    match from {
        "earliest" => Ok(StartOffset::Earliest),
        "latest" => Ok(StartOffset::Latest),
        n => n
            .parse::<i64>()
            .ok()
            .filter(|o| *o >= 0)
            .map(StartOffset::Offset)
            .ok_or_else(|| CliError::Failed(format!("--from {n:?}: expected earliest, latest or an offset"))),
    }
}

fn text(b: Option<&Bytes>) -> String {
    b.map_or_else(|| "null".to_owned(), |b| String::from_utf8_lossy(b).into_owned())
}

pub(crate) fn print_record(r: &Record, format: Format) {
    match format {
        Format::Text => {
            let headers: Vec<String> =
                r.headers.iter().map(|h| format!("{}={}", h.key, text(h.value.as_ref()))).collect();
            let headers = if headers.is_empty() { String::new() } else { format!(" headers=[{}]", headers.join(", ")) };
            out!(
                "{}-{}@{} key={} value={}{headers}",
                r.topic,
                r.partition,
                r.offset,
                text(r.key.as_ref()),
                text(r.value.as_ref())
            );
        }
        Format::Json => {
            let headers: Vec<serde_json::Value> = r
                .headers
                .iter()
                .map(|h| serde_json::json!([h.key, h.value.as_ref().map(|v| String::from_utf8_lossy(v))]))
                .collect();
            let line = serde_json::json!({
                "topic": &*r.topic,
                "partition": r.partition,
                "offset": r.offset,
                "timestamp": r.timestamp,
                "key": r.key.as_ref().map(|k| String::from_utf8_lossy(k)),
                "value": r.value.as_ref().map(|v| String::from_utf8_lossy(v)),
                "headers": headers,
            });
            out!("{line}");
        }
        Format::Value => out!("{}", text(r.value.as_ref())),
    }
}

/// `klife consume`.
pub(crate) async fn consume(args: ConsumeArgs) -> Result<(), CliError> {
    if let Some(group) = &args.group.group {
        let reset = match args.from.as_str() {
            "earliest" => klife::group::ResetPolicy::Earliest,
            "latest" => klife::group::ResetPolicy::Latest,
            other => {
                return Err(CliError::Failed(format!(
                    "--from {other:?} with --group: expected earliest or latest (`klife groups reset-offsets` moves a group to an offset)"
                )));
            }
        };
        let client = args.connect.client().await?;
        if let Err(e) = client.partitions(&args.topic).await {
            client.close().await;
            return Err(if e.is_unknown_topic_or_partition() {
                CliError::Failed(format!("topic {:?} does not exist", args.topic))
            } else {
                e.into()
            });
        }
        let limit = args.count.unwrap_or(u64::MAX);
        let result =
            crate::groups::consume_group(&client, group, &args.topic, args.group.protocol, reset, limit, args.format)
                .await;
        client.close().await;
        return result;
    }
    let start = start_offset(&args.from)?;
    let client = args.connect.client().await?;
    let count = match client.partitions(&args.topic).await {
        Ok(p) => p.len() as i32,
        Err(e) if e.is_unknown_topic_or_partition() => {
            return Err(CliError::Failed(format!("topic {:?} does not exist", args.topic)));
        }
        Err(e) => return Err(e.into()),
    };
    let partitions: Vec<i32> = if args.partitions.is_empty() { (0..count).collect() } else { args.partitions.clone() };
    if let Some(bad) = partitions.iter().find(|p| !(0..count).contains(*p)) {
        return Err(CliError::Failed(format!("topic {:?} has no partition {bad} (it has {count})", args.topic)));
    }
    let isolation = if args.read_uncommitted { IsolationLevel::ReadUncommitted } else { IsolationLevel::ReadCommitted };
    // Without --follow, each partition is read until it has caught up (the end of what
    // the isolation level may read), which the consumer says with an event.
    let mut consumer =
        client.consumer(FetchOptions::new().with_isolation_level(isolation)).with_partition_eof(!args.follow);
    let assignment: Vec<(&str, i32, StartOffset)> =
        partitions.iter().map(|p| (args.topic.as_str(), *p, start)).collect();
    consumer.assign(&assignment).await?;
    let mut not_at_end: BTreeSet<i32> = partitions.iter().copied().collect();
    let mut printed = 0u64;
    let limit = args.count.unwrap_or(u64::MAX);
    'read: while printed < limit && (args.follow || !not_at_end.is_empty()) {
        match consumer.next_event().await {
            None => break,
            Some(ConsumerEvent::Records(fetched)) => {
                for r in &fetched.records {
                    print_record(r, args.format);
                    printed += 1;
                    if printed >= limit {
                        break 'read;
                    }
                }
            }
            Some(ConsumerEvent::PartitionEof { partition, .. }) => {
                not_at_end.remove(&partition);
            }
            Some(ConsumerEvent::Error(e)) => return Err(e.into()),
            Some(_) => {}
        }
    }
    client.close().await;
    Ok(())
}

/// Options of `klife topics`.
#[derive(Debug, clap::Args)]
pub(crate) struct TopicsArgs {
    #[command(flatten)]
    connect: ConnectArgs,
    #[command(subcommand)]
    action: TopicsAction,
}

#[derive(Debug, clap::Subcommand)]
enum TopicsAction {
    /// List the topics, with their partition counts.
    List,
    /// Create a topic.
    Create {
        /// Its name.
        name: String,
        /// Its partitions.
        #[arg(long, short = 'p', default_value_t = 1)]
        partitions: i32,
        /// Its replication factor (default: the broker's).
        #[arg(long, short = 'r')]
        replication_factor: Option<i16>,
        /// Topic configs, `key=value` (repeatable).
        #[arg(long = "topic-config", short = 'c', value_name = "KEY=VALUE")]
        configs: Vec<String>,
    },
    /// Delete topics.
    Delete {
        /// Their names.
        #[arg(required = true)]
        names: Vec<String>,
    },
}

/// `klife topics`.
pub(crate) async fn topics(args: TopicsArgs) -> Result<(), CliError> {
    let client: Client = args.connect.client().await?;
    let result = match args.action {
        TopicsAction::List => {
            let m = client.cluster().all_topics_metadata().await.map_err(klife::Error::from)?;
            for (name, t) in &m.topics {
                if t.error.is_ok() {
                    out!("{name}\t{} partitions", t.partitions.len());
                }
            }
            Ok(())
        }
        TopicsAction::Create { name, partitions, replication_factor, configs } => {
            let mut topic = klife::NewTopic::new(name.clone(), partitions);
            if let Some(r) = replication_factor {
                topic = topic.with_replication_factor(r);
            }
            for c in &configs {
                let (k, v) = c
                    .split_once('=')
                    .ok_or_else(|| CliError::Failed(format!("--topic-config {c:?}: expected KEY=VALUE")))?;
                topic = topic.with_config(k, v);
            }
            let mut results = client.create_topics(vec![topic]).await?;
            match results.pop() {
                Some((_, Ok(()))) => {
                    out!("created {name} with {partitions} partitions");
                    Ok(())
                }
                Some((_, Err(e))) => Err(CliError::Failed(format!("cannot create {name}: {e}"))),
                None => Err(CliError::Failed(format!("no answer for {name}"))),
            }
        }
        TopicsAction::Delete { names } => {
            let mut failed = Vec::new();
            for (name, r) in client.delete_topics(&names).await? {
                match r {
                    Ok(()) => out!("deleted {name}"),
                    Err(e) => failed.push(format!("{name}: {e}")),
                }
            }
            if failed.is_empty() { Ok(()) } else { Err(CliError::Failed(failed.join("; "))) }
        }
    };
    client.close().await;
    result
}
