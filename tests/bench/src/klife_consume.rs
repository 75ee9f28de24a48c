//! `klife-consume`: klife's standalone consumer (`Consumer` over a `Fetcher`), every
//! partition of the topic assigned from its start, until `--count` records were read.
//!
//! Two ways of reading:
//!
//! - drain (the default): the bench's own fetcher settings (read_uncommitted unless
//!   `--isolation` says otherwise), and a partition read to its end is unassigned, as
//!   the rskafka loop stops fetching it;
//! - `--live true`: as an application reads, through the facade
//!   (`Client::consumer(FetchOptions::new())`) with its defaults (read_committed), every
//!   partition staying assigned after it reached its end; only the options given
//!   change the fetcher's settings.
//!
//! Both record the gaps between answers with records: the report's `longest_gap_ms`
//! is the longest (the wait for the first answer included) and `gaps_over_100ms` how
//! many lasted longer than 100 ms; `--gap-log true` lists those on stderr.

use std::time::{Duration, Instant};

use klife::{Client, FetchOptions, FetcherConfig, IsolationLevel, StartOffset};
use klife_connection::{Cluster, ConnectionConfig};
use klife_fetcher::{Consumer, Fetcher};

use crate::opts::Opts;
use crate::report::{Gaps, Report};

/// Gaps longer than this are counted (and logged with `--gap-log`).
const LONG_GAP: Duration = Duration::from_millis(100);

pub(crate) struct Settings {
    bootstrap: String,
    topic: String,
    count: u64,
    config: FetcherConfig,
    live: bool,
    gap_log: bool,
}

impl Settings {
    pub(crate) fn from_opts(mut opts: Opts) -> Result<Settings, String> {
        let bootstrap = opts.req("bootstrap")?;
        let topic = opts.req("topic")?;
        let count = opts.req_parse("count")?;
        let live = opts.opt_parse("live")?.unwrap_or(false);
        let gap_log = opts.opt_parse("gap-log")?.unwrap_or(false);
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
        if let Some(ms) = opts.opt_parse("max-wait-ms")? {
            config.max_wait = Duration::from_millis(ms);
        }
        config.isolation_level = match opts.opt("isolation").as_deref() {
            None if live => config.isolation_level,
            None | Some("read_uncommitted") => IsolationLevel::ReadUncommitted,
            Some("read_committed") => IsolationLevel::ReadCommitted,
            Some(other) => return Err(format!("--isolation {other:?}: read_committed or read_uncommitted")),
        };
        opts.finish()?;
        config.validate().map_err(|e| e.to_string())?;
        Ok(Settings { bootstrap, topic, count, config, live, gap_log })
    }
}

/// The gaps between answers with records, measured as they come.
struct GapClock {
    started: Instant,
    last: Instant,
    gaps: Gaps,
    log: bool,
}

impl GapClock {
    fn start(log: bool) -> GapClock {
        let now = Instant::now();
        GapClock { started: now, last: now, gaps: Gaps::default(), log }
    }

    fn answer(&mut self, partition: i32, records: u64) {
        let now = Instant::now();
        let gap = now - self.last;
        self.last = now;
        self.gaps.longest = self.gaps.longest.max(gap);
        if gap > LONG_GAP {
            self.gaps.over_100ms += 1;
            if self.log {
                eprintln!(
                    "gap {:>6.1} ms ending at {:>8.1} ms: partition {partition} ({records} records, {} read before)",
                    gap.as_secs_f64() * 1e3,
                    (now - self.started).as_secs_f64() * 1e3,
                    self.gaps.records
                );
            }
        }
        self.gaps.records += records;
    }
}

pub(crate) async fn run(s: Settings) -> Result<Report, String> {
    let (mut consumer, partitions) = if s.live { live_consumer(&s).await? } else { drain_consumer(&s).await? };
    let started = Instant::now();
    let start = if s.live { StartOffset::Earliest } else { StartOffset::Offset(0) };
    let assignment: Vec<(&str, i32, StartOffset)> = (0..partitions).map(|p| (s.topic.as_str(), p, start)).collect();
    consumer.assign(&assignment).await.map_err(|e| e.to_string())?;
    let mut clock = GapClock::start(s.gap_log);
    let (mut records, mut bytes) = (0u64, 0u64);
    while records < s.count {
        let fetched = match consumer.next().await {
            Some(Ok(f)) => f,
            Some(Err(e)) => return Err(format!("after {records} records: {e}")),
            None => return Err(format!("every partition stopped after {records} records")),
        };
        clock.answer(fetched.partition, fetched.records.len() as u64);
        for r in &fetched.records {
            bytes += r.value.as_ref().map_or(0, |v| v.len() as u64);
        }
        records += fetched.records.len() as u64;
        // Like the rskafka loop, stop fetching a partition once it is read to its end:
        // idle long polls are not what the drain measures.
        if !s.live && fetched.high_watermark >= 0 && fetched.next_offset >= fetched.high_watermark {
            consumer.unassign(&[(s.topic.as_str(), fetched.partition)]);
        }
    }
    Ok(Report {
        client: "klife",
        records,
        bytes,
        elapsed: started.elapsed(),
        gaps: Some(clock.gaps),
        first_record: None,
        cpu_since: None,
    })
}

/// The facade's consumer, at the client's defaults except for the options given.
async fn live_consumer(s: &Settings) -> Result<(Consumer, i32), String> {
    let client = Client::builder()
        .bootstrap_servers([s.bootstrap.as_str()])
        .default_fetcher(s.config.clone())
        .build()
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", s.bootstrap))?;
    let found = client.partitions(&s.topic).await.map_err(|e| format!("partitions of {}: {e}", s.topic))?;
    let partitions =
        i32::try_from(found.len()).map_err(|_| format!("topic {} has {} partitions", s.topic, found.len()))?;
    if partitions == 0 {
        return Err(format!("topic {} has no partitions", s.topic));
    }
    Ok((client.consumer(FetchOptions::new()), partitions))
}

/// A consumer over a fetcher of the bench's settings.
async fn drain_consumer(s: &Settings) -> Result<(Consumer, i32), String> {
    let cluster = Cluster::connect(&[s.bootstrap.as_str()], ConnectionConfig::default())
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", s.bootstrap))?;
    let partitions = partitions(&cluster, &s.topic).await?;
    let fetcher = Fetcher::new(cluster, s.config.clone()).map_err(|e| e.to_string())?;
    Ok((Consumer::new(fetcher, FetchOptions::new()), partitions))
}

async fn partitions(cluster: &Cluster, topic: &str) -> Result<i32, String> {
    let metadata = cluster.add_topics(&[topic]).await.map_err(|e| format!("metadata of {topic}: {e}"))?;
    match metadata.topic(topic).map_or(0, |t| t.partitions.len()) {
        0 => Err(format!("topic {topic} has no partitions")),
        n => i32::try_from(n).map_err(|_| format!("topic {topic} has {n} partitions")),
    }
}
