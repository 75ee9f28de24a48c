//! `rskafka-consume`: a fetch loop per partition with rskafka's
//! `PartitionClient::fetch_records`, from offset 0 until the partitions together
//! returned `--count` records.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use rskafka::client::ClientBuilder;
use rskafka::client::partition::{PartitionClient, UnknownTopicHandling};

use crate::opts::Opts;
use crate::report::Report;

pub(crate) struct Settings {
    bootstrap: String,
    topic: String,
    partitions: i32,
    count: u64,
    max_bytes: i32,
}

impl Settings {
    pub(crate) fn from_opts(mut opts: Opts) -> Result<Settings, String> {
        let s = Settings {
            bootstrap: opts.req("bootstrap")?,
            topic: opts.req("topic")?,
            partitions: opts.req_parse("partitions")?,
            count: opts.req_parse("count")?,
            max_bytes: opts.opt_parse::<i32>("partition-max-kib")?.unwrap_or(1024) << 10,
        };
        opts.finish()?;
        if s.partitions < 1 || s.max_bytes < 1 {
            return Err("--partitions and --partition-max-kib must be at least 1".into());
        }
        Ok(s)
    }
}

/// Reads one partition until every partition together has `total` records.
async fn consume_partition(
    client: PartitionClient,
    max_bytes: i32,
    total: u64,
    read: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
) -> Result<(), String> {
    let mut offset = 0;
    while read.load(Ordering::Relaxed) < total {
        let (records, high_watermark) =
            client.fetch_records(offset, 1..max_bytes, 500).await.map_err(|e| e.to_string())?;
        let mut n = 0;
        let mut b = 0;
        for r in &records {
            if r.offset < offset {
                continue;
            }
            n += 1;
            b += r.record.value.as_ref().map_or(0, |v| v.len() as u64);
            offset = r.offset + 1;
        }
        read.fetch_add(n, Ordering::Relaxed);
        bytes.fetch_add(b, Ordering::Relaxed);
        if n == 0 && offset >= high_watermark {
            // Caught up with this partition: the others still have records.
            return Ok(());
        }
    }
    Ok(())
}

pub(crate) async fn run(s: Settings) -> Result<Report, String> {
    let client =
        ClientBuilder::new(vec![s.bootstrap.clone()]).build().await.map_err(|e| format!("cannot connect: {e}"))?;
    let started = Instant::now();
    let (read, bytes) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut tasks = Vec::new();
    for p in 0..s.partitions {
        let pc = client
            .partition_client(s.topic.as_str(), p, UnknownTopicHandling::Retry)
            .await
            .map_err(|e| format!("partition client {}-{p}: {e}", s.topic))?;
        tasks.push(tokio::spawn(consume_partition(pc, s.max_bytes, s.count, read.clone(), bytes.clone())));
    }
    for t in tasks {
        t.await.map_err(|e| format!("a partition task failed: {e}"))??;
    }
    let elapsed = started.elapsed();
    let records = read.load(Ordering::Relaxed);
    if records < s.count {
        return Err(format!("read {records} of {} records", s.count));
    }
    Ok(Report {
        client: "rskafka",
        records,
        bytes: bytes.load(Ordering::Relaxed),
        elapsed,
        gaps: None,
        first_record: None,
        cpu_since: None,
    })
}
