//! `klife-consume`: klife's standalone consumer (`Consumer` over a `Fetcher`), every
//! partition of the topic assigned from offset 0, until `--count` records were read; a
//! partition read to its end is unassigned, as the rskafka loop stops fetching it.

use std::time::{Duration, Instant};

use klife_connection::{Cluster, ConnectionConfig};
use klife_fetcher::{Consumer, FetchOptions, Fetcher, FetcherConfig, IsolationLevel, StartOffset};

use crate::opts::Opts;
use crate::report::Report;

pub(crate) struct Settings {
    bootstrap: String,
    topic: String,
    count: u64,
    config: FetcherConfig,
}

impl Settings {
    pub(crate) fn from_opts(mut opts: Opts) -> Result<Settings, String> {
        let bootstrap = opts.req("bootstrap")?;
        let topic = opts.req("topic")?;
        let count = opts.req_parse("count")?;
        let mut config = FetcherConfig::default();
        if let Some(kib) = opts.opt_parse::<usize>("partition-max-kib")? {
            config.partition_max_bytes = kib << 10;
        }
        if let Some(kib) = opts.opt_parse::<usize>("request-max-kib")? {
            config.max_bytes_per_request = kib << 10;
        }
        if let Some(n) = opts.opt_parse("max-in-flight")? {
            config.max_in_flight = n;
        }
        config.max_wait = Duration::from_millis(opts.opt_parse("max-wait-ms")?.unwrap_or(500));
        config.isolation_level = match opts.opt("isolation").as_deref() {
            None | Some("read_uncommitted") => IsolationLevel::ReadUncommitted,
            Some("read_committed") => IsolationLevel::ReadCommitted,
            Some(other) => return Err(format!("--isolation {other:?}: read_committed or read_uncommitted")),
        };
        opts.finish()?;
        config.validate()?;
        Ok(Settings { bootstrap, topic, count, config })
    }
}

pub(crate) async fn run(s: Settings) -> Result<Report, String> {
    let cluster = Cluster::connect(&[s.bootstrap.as_str()], ConnectionConfig::default())
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", s.bootstrap))?;
    let metadata =
        cluster.add_topics(&[s.topic.as_str()]).await.map_err(|e| format!("metadata of {}: {e}", s.topic))?;
    let partitions = metadata.topic(&s.topic).map_or(0, |t| t.partitions.len()) as i32;
    if partitions == 0 {
        return Err(format!("topic {} has no partitions", s.topic));
    }
    let fetcher = Fetcher::new(cluster, s.config).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut consumer = Consumer::new(fetcher, FetchOptions::new());
    let assignment: Vec<(&str, i32, StartOffset)> =
        (0..partitions).map(|p| (s.topic.as_str(), p, StartOffset::Offset(0))).collect();
    consumer.assign(&assignment).await.map_err(|e| e.to_string())?;
    let (mut records, mut bytes) = (0u64, 0u64);
    while records < s.count {
        let fetched = match consumer.next().await {
            Some(Ok(f)) => f,
            Some(Err(e)) => return Err(format!("after {records} records: {e}")),
            None => return Err(format!("every partition stopped after {records} records")),
        };
        for r in &fetched.records {
            bytes += r.value.as_ref().map_or(0, |v| v.len() as u64);
        }
        records += fetched.records.len() as u64;
        // Like the rskafka loop, stop fetching a partition once it is read to its end:
        // idle long polls are not what is measured (and Tansu answers other fetches
        // late while one waits).
        if fetched.high_watermark >= 0 && fetched.next_offset >= fetched.high_watermark {
            consumer.unassign(&[(s.topic.as_str(), fetched.partition)]);
        }
    }
    Ok(Report { client: "klife", records, bytes, elapsed: started.elapsed() })
}
