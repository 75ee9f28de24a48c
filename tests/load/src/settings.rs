//! The run's settings: the command line, the topics and which group reads which, and
//! the memory bound the settings imply. Plain data, no I/O.

use std::time::Duration;

use klife::group::GroupProtocol;

/// Bytes in a MiB.
pub(crate) const MIB: usize = 1024 * 1024;

/// Bytes of a record's key: the producer's number and the record's sequence number.
/// Delivery futures a producer keeps before it waits for the oldest. Above what
/// `buffer_memory` holds at the default settings (about 7,000 records of 100 bytes in
/// 1 MiB), so that the buffer, not this window, is what makes a producer wait.
pub(crate) const WINDOW: usize = 16 * 1024;

pub(crate) const KEY_SIZE: usize = 8;

/// The most a record adds to its key and value inside a batch: length, attributes,
/// timestamp and offset deltas, key and value lengths, header count (all varints).
const RECORD_OVERHEAD: usize = 21;

/// A record batch's header.
const BATCH_HEADER: usize = 61;

pub(crate) const USAGE: &str = "usage: klife-load [--broker testkit|kafka] [--bootstrap HOST:PORT,...]
                  [--partitions P] [--topics T] [--producers N] [--groups G] [--members M]
                  [--records R] [--value-size B] [--buffer-memory-kib K] [--batch-size-kib K]
                  [--fetch-max-bytes-kib K] [--max-queue-size Q] [--max-bytes-per-request-kib K]
                  [--fetch-in-flight F] [--protocol auto|consumer|classic]
                  [--hang-guard-s S] [--overhead-mib O]

  --broker       testkit (default: a 3-node klife-testkit cluster in this process) or kafka
                 (--bootstrap, or the cluster named by KLIFE_TEST_KAFKA)
  --partitions   partitions in all (default 1000), spread evenly over --topics (default 10)
  --producers    idempotent producers writing at once (default 64), each to every partition
  --groups       consumer groups (default 10) of --members members (default 3), each
                 reading its own run of consecutive topics, so that every topic is read
                 by at least one group and most by two
  --records      records produced in all (default 1000000), of --value-size bytes (100)
  memory settings (defaults): producers' buffer_memory 1024 KiB and batch_size 32 KiB;
                 groups' fetch_max_bytes 32 KiB and max_queue_size 2; the fetcher's
                 max_bytes_per_request 4096 KiB with 2 requests in flight per broker
  --hang-guard-s how long no record may be handled before the run fails (default 180)
  --overhead-mib the fixed overhead allowed above the computed bound (default 128)";

/// Where the run goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BrokerKind {
    /// A klife-testkit cluster of 3 brokers in this process.
    Testkit,
    /// Apache Kafka at these bootstrap servers.
    Kafka(String),
}

impl BrokerKind {
    pub(crate) fn name(&self) -> &'static str {
        match self {
            BrokerKind::Testkit => "klife-testkit (3 brokers, in process)",
            BrokerKind::Kafka(_) => "Apache Kafka",
        }
    }
}

/// Everything a run is told.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) broker: BrokerKind,
    pub(crate) partitions: usize,
    pub(crate) topics: usize,
    pub(crate) producers: usize,
    pub(crate) groups: usize,
    pub(crate) members: usize,
    pub(crate) records: u64,
    pub(crate) value_size: usize,
    /// Each producer's `buffer_memory`.
    pub(crate) buffer_memory: usize,
    /// Each producer's `batch_size`: no stored batch is larger, so no partition's
    /// fetch answer is larger than `fetch_max_bytes` when this is not larger.
    pub(crate) batch_size: usize,
    /// Each group topic's `fetch_max_bytes`.
    pub(crate) fetch_max_bytes: usize,
    /// Each group topic's `max_queue_size`.
    pub(crate) max_queue_size: usize,
    /// The fetcher's `max_bytes_per_request`.
    pub(crate) max_bytes_per_request: usize,
    /// The fetcher's `max_in_flight` (per broker: one batcher per broker).
    pub(crate) fetch_in_flight: usize,
    pub(crate) protocol: GroupProtocol,
    pub(crate) hang_guard: Duration,
    /// Allowed above the bound: the runtime, tasks and their state, connections,
    /// metadata, this program's own counters.
    pub(crate) overhead: usize,
}

impl Settings {
    /// Reads the command line; `kafka_env` is `KLIFE_TEST_KAFKA`.
    pub(crate) fn parse(args: &[String], kafka_env: Option<String>) -> Result<Settings, String> {
        let mut s = Settings {
            broker: BrokerKind::Testkit,
            partitions: 1000,
            topics: 10,
            producers: 64,
            groups: 10,
            members: 3,
            records: 1_000_000,
            value_size: 100,
            buffer_memory: MIB,
            batch_size: 32 * 1024,
            fetch_max_bytes: 32 * 1024,
            max_queue_size: 2,
            max_bytes_per_request: 4 * MIB,
            fetch_in_flight: 2,
            protocol: GroupProtocol::Auto,
            hang_guard: Duration::from_secs(180),
            overhead: 128 * MIB,
        };
        let mut broker = "testkit".to_owned();
        let mut bootstrap = None;
        let mut it = args.iter();
        while let Some(a) = it.next() {
            if a == "-h" || a == "--help" {
                return Err(USAGE.to_owned());
            }
            let v = it.next().ok_or_else(|| format!("{a} needs a value\n\n{USAGE}"))?;
            let n = || v.parse::<usize>().map_err(|_| format!("{a} {v:?}: not a whole number"));
            match a.as_str() {
                "--broker" => broker = v.clone(),
                "--bootstrap" => bootstrap = Some(v.clone()),
                "--partitions" => s.partitions = n()?,
                "--topics" => s.topics = n()?,
                "--producers" => s.producers = n()?,
                "--groups" => s.groups = n()?,
                "--members" => s.members = n()?,
                "--records" => s.records = n()? as u64,
                "--value-size" => s.value_size = n()?,
                "--buffer-memory-kib" => s.buffer_memory = n()? * 1024,
                "--batch-size-kib" => s.batch_size = n()? * 1024,
                "--fetch-max-bytes-kib" => s.fetch_max_bytes = n()? * 1024,
                "--max-queue-size" => s.max_queue_size = n()?,
                "--max-bytes-per-request-kib" => s.max_bytes_per_request = n()? * 1024,
                "--fetch-in-flight" => s.fetch_in_flight = n()?,
                "--hang-guard-s" => s.hang_guard = Duration::from_secs(n()? as u64),
                "--overhead-mib" => s.overhead = n()? * MIB,
                "--protocol" => {
                    s.protocol = match v.as_str() {
                        "auto" => GroupProtocol::Auto,
                        "consumer" => GroupProtocol::Consumer,
                        "classic" => GroupProtocol::Classic,
                        other => return Err(format!("--protocol {other:?}: auto, consumer or classic")),
                    }
                }
                other => return Err(format!("unknown argument {other:?}\n\n{USAGE}")),
            }
        }
        s.broker = match broker.as_str() {
            "testkit" => BrokerKind::Testkit,
            "kafka" => BrokerKind::Kafka(bootstrap.or(kafka_env).ok_or(
                "--broker kafka needs --bootstrap or KLIFE_TEST_KAFKA (`cargo xtask brokers --serve` prints it)",
            )?),
            other => return Err(format!("--broker {other:?}: testkit or kafka")),
        };
        let zero = [
            ("--partitions", s.partitions),
            ("--topics", s.topics),
            ("--producers", s.producers),
            ("--groups", s.groups),
            ("--members", s.members),
            ("--value-size", s.value_size),
            ("--max-queue-size", s.max_queue_size),
            ("--fetch-in-flight", s.fetch_in_flight),
        ];
        if let Some((name, _)) = zero.iter().find(|(_, v)| *v == 0) {
            return Err(format!("{name} must not be zero"));
        }
        if s.records == 0 {
            return Err("--records must not be zero".into());
        }
        if s.partitions % s.topics != 0 {
            return Err(format!("--partitions {} must be a multiple of --topics {}", s.partitions, s.topics));
        }
        if s.batch_size > s.fetch_max_bytes {
            return Err("--batch-size-kib must not exceed --fetch-max-bytes-kib: a stored batch larger than \
                        fetch_max_bytes is returned whole, and the bound would not hold"
                .into());
        }
        Ok(s)
    }

    /// Partitions per topic.
    pub(crate) fn per_topic(&self) -> usize {
        self.partitions / self.topics
    }

    /// The topics group `g` reads, as topic numbers: a run of consecutive topics
    /// (wrapping), starting `topics / groups` apart, one longer than needed to cover
    /// every topic, so that neighbouring groups share a topic.
    pub(crate) fn group_topics(&self, g: usize) -> Vec<usize> {
        let (t, n) = (self.topics, self.groups);
        let stride = (t / n).max(1);
        let len = if n > t { 2 } else { t - (n - 1) * stride + 1 }.min(t);
        let start = (g * stride) % t;
        (0..len).map(|i| (start + i) % t).collect()
    }

    /// Partitions group `g` reads.
    pub(crate) fn group_partitions(&self, g: usize) -> usize {
        self.group_topics(g).len() * self.per_topic()
    }

    /// The memory these settings allow klife (and, on klife-testkit, the in-process
    /// cluster) to hold, with the load program's own delivery windows.
    pub(crate) fn bound(&self, brokers: usize) -> Bound {
        let producers = self.producers * self.buffer_memory;
        let consumers: usize = (0..self.groups).map(|g| self.group_partitions(g)).sum();
        // Per partition consumer: `max_queue_size` answers waiting, one in flight and
        // one in the handler's hands (the Consumer's documented
        // `partitions × (prefetch + 2) × partition_max_bytes`, with prefetch =
        // max_queue_size - 1), plus the batch being handled.
        let groups = consumers * (self.max_queue_size + 2) * self.fetch_max_bytes;
        // One fetch batcher per broker: `max_in_flight` requests answered at once and
        // one waiting for records, each answer at most `max_bytes_per_request`.
        let fetcher = brokers * (self.fetch_in_flight + 1) * self.max_bytes_per_request;
        let testkit = match self.broker {
            // Every record stored, at the most it can take: its own batch.
            // and the log's entry for that batch, twice (the list grows by doubling).
            BrokerKind::Testkit => {
                self.records as usize
                    * (self.value_size
                        + KEY_SIZE
                        + RECORD_OVERHEAD
                        + BATCH_HEADER
                        + 2 * klife_testkit::stored_batch_overhead())
            }
            BrokerKind::Kafka(_) => 0,
        };
        // The load program's own: each producer's window of delivery futures, allocated
        // whole and cycled through (a ring).
        let windows = self.producers * WINDOW * size_of::<klife::DeliveryFuture>();
        Bound { producers, consumers, groups, fetcher, testkit, windows }
    }
}

/// The memory a run's settings allow, by what holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bound {
    /// `producers × buffer_memory`.
    pub(crate) producers: usize,
    /// Partition consumers in all groups (each partition once per group reading it).
    pub(crate) consumers: usize,
    /// `consumers × (max_queue_size + 2) × fetch_max_bytes`.
    pub(crate) groups: usize,
    /// `brokers × (max_in_flight + 1) × max_bytes_per_request`.
    pub(crate) fetcher: usize,
    /// klife-testkit only: every record stored in its own batch.
    pub(crate) testkit: usize,
    /// The load program's: `producers × WINDOW × size_of::<DeliveryFuture>()`.
    pub(crate) windows: usize,
}

impl Bound {
    pub(crate) fn total(&self) -> usize {
        self.producers + self.groups + self.fetcher + self.testkit + self.windows
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn settings(args: &[&str]) -> Settings {
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        Settings::parse(&args, None).expect("valid settings")
    }

    #[test]
    fn every_topic_is_read_and_groups_differ() {
        for (topics, groups) in [(10, 10), (10, 3), (10, 1), (4, 9), (1, 1), (7, 2), (10, 20), (3, 3)] {
            let s = settings(&[
                "--topics",
                &topics.to_string(),
                "--partitions",
                &(topics * 5).to_string(),
                "--groups",
                &groups.to_string(),
            ]);
            let mut read = BTreeSet::new();
            let mut subsets = BTreeSet::new();
            for g in 0..groups {
                let t = s.group_topics(g);
                let distinct: BTreeSet<usize> = t.iter().copied().collect();
                assert_eq!(distinct.len(), t.len(), "{topics} topics, {groups} groups: group {g} reads {t:?}");
                assert!(t.iter().all(|t| *t < topics));
                read.extend(distinct.iter().copied());
                subsets.insert(distinct);
            }
            assert_eq!(read.len(), topics, "{topics} topics, {groups} groups: a topic is not read");
            assert_eq!(subsets.len(), groups.min(topics), "{topics} topics, {groups} groups: subsets repeat");
        }
    }

    #[test]
    fn the_default_run_reads_each_topic_twice() {
        let s = settings(&[]);
        let mut readers = [0; 10];
        for g in 0..10 {
            assert_eq!(s.group_topics(g), vec![g, (g + 1) % 10]);
            for t in s.group_topics(g) {
                readers[t] += 1;
            }
        }
        assert_eq!(readers, [2; 10]);
    }

    #[test]
    fn the_bound_adds_what_each_setting_allows() {
        let s = settings(&[]);
        let b = s.bound(3);
        assert_eq!(b.producers, 64 * MIB);
        assert_eq!(b.consumers, 2000);
        assert_eq!(b.groups, 2000 * 4 * 32 * 1024);
        assert_eq!(b.fetcher, 3 * 3 * 4 * MIB);
        assert_eq!(b.testkit, 1_000_000 * (100 + 8 + 21 + 61 + 2 * klife_testkit::stored_batch_overhead()));
        assert_eq!(b.windows, 64 * WINDOW * size_of::<klife::DeliveryFuture>());
        let kafka = settings(&["--broker", "kafka", "--bootstrap", "h:1"]).bound(3);
        assert_eq!(kafka.testkit, 0);
        assert_eq!(kafka.total(), b.total() - b.testkit);
    }

    #[test]
    fn settings_that_would_break_the_bound_are_refused() {
        let args = |a: &[&str]| a.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert!(Settings::parse(&args(&["--batch-size-kib", "64"]), None).is_err());
        assert!(Settings::parse(&args(&["--partitions", "1001"]), None).is_err());
        assert!(Settings::parse(&args(&["--groups", "0"]), None).is_err());
        assert!(Settings::parse(&args(&["--broker", "kafka"]), None).is_err());
        assert!(Settings::parse(&args(&["--broker", "kafka"]), Some("h:1".into())).is_ok());
    }
}
