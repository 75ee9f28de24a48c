//! `rskafka-produce`: rskafka's leanest API. The application builds the batches itself
//! (`--batch` records each) and calls `PartitionClient::produce` for each, keeping up to
//! `--in-flight` calls outstanding per partition; records are spread evenly over the
//! partitions, one task per partition. rskafka has no idempotence; it sends `acks = all`.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use rskafka::client::ClientBuilder;
use rskafka::client::partition::{Compression, PartitionClient, UnknownTopicHandling};
use rskafka::record::Record;

use crate::opts::Opts;
use crate::report::{Report, XorShift};

pub(crate) struct Settings {
    bootstrap: String,
    topic: String,
    partitions: i32,
    count: u64,
    value_size: usize,
    batch: u64,
    in_flight: usize,
}

impl Settings {
    pub(crate) fn from_opts(mut opts: Opts) -> Result<Settings, String> {
        let s = Settings {
            bootstrap: opts.req("bootstrap")?,
            topic: opts.req("topic")?,
            partitions: opts.req_parse("partitions")?,
            count: opts.req_parse("count")?,
            value_size: opts.req_parse("value-size")?,
            batch: opts.opt_parse("batch")?.unwrap_or(1000),
            in_flight: opts.opt_parse("in-flight")?.unwrap_or(4),
        };
        opts.finish()?;
        if s.partitions < 1 || s.batch == 0 || s.in_flight == 0 {
            return Err("--partitions, --batch and --in-flight must be at least 1".into());
        }
        Ok(s)
    }
}

/// Produces `count` records to one partition; returns how many were acknowledged.
async fn produce_partition(
    client: Arc<PartitionClient>,
    count: u64,
    size: usize,
    batch: u64,
    in_flight: usize,
    seed: u64,
) -> Result<u64, String> {
    let mut rng = XorShift(seed);
    let batch_lens =
        (0..count).step_by(usize::try_from(batch).unwrap_or(usize::MAX)).map(move |start| (count - start).min(batch));
    let mut acks = futures_util::stream::iter(batch_lens)
        .map(|len| {
            // One timestamp per application-built batch.
            let timestamp = chrono::Utc::now();
            let records: Vec<Record> = (0..len)
                .map(|_| Record { key: None, value: Some(rng.value(size)), headers: BTreeMap::new(), timestamp })
                .collect();
            let client = client.clone();
            async move {
                let offsets = client.produce(records, Compression::NoCompression).await.map_err(|e| e.to_string())?;
                if offsets.len() as u64 == len {
                    Ok(len)
                } else {
                    Err(format!("{len} records sent, {} offsets back", offsets.len()))
                }
            }
        })
        .buffer_unordered(in_flight);
    let mut acknowledged = 0;
    while let Some(n) = acks.next().await {
        acknowledged += n?;
    }
    Ok(acknowledged)
}

pub(crate) async fn run(s: Settings) -> Result<Report, String> {
    let client =
        ClientBuilder::new(vec![s.bootstrap.clone()]).build().await.map_err(|e| format!("cannot connect: {e}"))?;
    // Setup, outside the timing: one client per partition, which finds its leader.
    let mut clients = Vec::new();
    for p in 0..s.partitions {
        let pc = client
            .partition_client(s.topic.as_str(), p, UnknownTopicHandling::Retry)
            .await
            .map_err(|e| format!("partition client {}-{p}: {e}", s.topic))?;
        clients.push(Arc::new(pc));
    }
    let partitions = s.partitions as u64;
    let started = Instant::now();
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(p, pc)| {
            let p = p as u64;
            let count = s.count / partitions + u64::from(p < s.count % partitions);
            let seed = 0x9E37_79B9_7F4A_7C15 ^ (p + 1).wrapping_mul(0xD6E8_FEB8_6659_FD93);
            tokio::spawn(produce_partition(pc, count, s.value_size, s.batch, s.in_flight, seed))
        })
        .collect();
    let mut acknowledged = 0;
    let mut first_error = None;
    for t in tasks {
        match t.await.map_err(|e| format!("a partition task failed: {e}")).and_then(|r| r) {
            Ok(n) => acknowledged += n,
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    let elapsed = started.elapsed();
    if let Some(e) = first_error {
        return Err(format!("{acknowledged} of {} records acknowledged; first error: {e}", s.count));
    }
    if acknowledged != s.count {
        return Err(format!("{acknowledged} of {} records acknowledged", s.count));
    }
    Ok(Report {
        client: "rskafka",
        records: acknowledged,
        bytes: acknowledged * s.value_size as u64,
        elapsed,
        gaps: None,
        first_record: None,
        cpu_since: None,
    })
}
