//! The cluster's shared state: brokers, topics and their logs, committed offsets,
//! transactions, injected faults and the request log. Plain data behind one mutex;
//! nothing here awaits.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use klife_protocol::{ApiKey, ErrorCode, Uuid};

use crate::coordinator::{Coordinator, Topics};
use crate::log::PartitionLog;
use crate::txn::Transactions;

/// The cluster's clock, in milliseconds since the Unix epoch: real time plus whatever
/// tests advanced it by, or (manual) the start time plus that only.
#[derive(Debug, Clone)]
pub(crate) struct Clock {
    manual: bool,
    start_ms: i64,
    offset_ms: i64,
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl Clock {
    pub(crate) fn new(manual: bool) -> Clock {
        Clock { manual, start_ms: wall_ms(), offset_ms: 0 }
    }

    /// The cluster's time now.
    pub(crate) fn now_ms(&self) -> i64 {
        let base = if self.manual { self.start_ms } else { wall_ms() };
        base.saturating_add(self.offset_ms)
    }

    /// Moves the clock forward.
    pub(crate) fn advance(&mut self, by: Duration) {
        self.offset_ms = self.offset_ms.saturating_add(i64::try_from(by.as_millis()).unwrap_or(i64::MAX));
    }
}

/// Settings fixed when the cluster starts.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) cluster_id: String,
    pub(crate) max_message_bytes: usize,
    pub(crate) auto_create_topics: bool,
    pub(crate) default_partitions: i32,
    pub(crate) max_frame_size: usize,
    /// The finalized `transaction.version` ApiVersions reports (KIP-890).
    pub(crate) transaction_version: i16,
}

#[derive(Debug, Clone)]
pub(crate) struct Broker {
    pub(crate) port: u16,
    pub(crate) up: bool,
    pub(crate) latency: Duration,
    pub(crate) connections: usize,
}

#[derive(Debug, Clone)]
pub(crate) struct Partition {
    pub(crate) leader: i32,
    pub(crate) leader_epoch: i32,
    pub(crate) replicas: Vec<i32>,
    pub(crate) log: PartitionLog,
}

#[derive(Debug, Clone)]
pub(crate) struct Topic {
    pub(crate) id: Uuid,
    pub(crate) partitions: Vec<Partition>,
    pub(crate) replication_factor: i16,
    pub(crate) configs: BTreeMap<String, String>,
    pub(crate) max_message_bytes: usize,
}

/// A group's committed offset of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Committed {
    pub(crate) offset: i64,
    pub(crate) leader_epoch: i32,
    pub(crate) metadata: Option<String>,
}

/// Every group's committed offsets: group → (topic, partition) → offset. A group
/// stays here (maybe with no offsets left) from its first commit until DeleteGroups.
pub(crate) type CommittedOffsets = BTreeMap<String, BTreeMap<(String, i32), Committed>>;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FaultAction {
    Error(ErrorCode),
    Disconnect,
    /// Execute the request, then close instead of answering (the answer is lost).
    DisconnectAfter,
}

#[derive(Debug, Clone)]
pub(crate) struct Fault {
    pub(crate) api: ApiKey,
    pub(crate) broker: Option<i32>,
    pub(crate) action: FaultAction,
}

/// One request a broker received, for tests that count requests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestRecord {
    /// The broker that received it.
    pub broker: i32,
    /// The API.
    pub api_key: ApiKey,
    /// The version the client used.
    pub version: i16,
    /// The client id from the request header.
    pub client_id: Option<String>,
    /// The correlation id.
    pub correlation_id: i32,
    /// Topic-partitions named in a Produce or Fetch request, in request order (empty
    /// for other APIs).
    pub partitions: Vec<(String, i32)>,
}

/// Everything the brokers share.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) config: Config,
    pub(crate) brokers: BTreeMap<i32, Broker>,
    pub(crate) topics: BTreeMap<String, Topic>,
    pub(crate) groups: CommittedOffsets,
    pub(crate) txns: Transactions,
    pub(crate) next_producer_id: i64,
    pub(crate) faults: VecDeque<Fault>,
    pub(crate) requests: Vec<RequestRecord>,
    /// Fetch sessions (KIP-227) of every broker.
    pub(crate) fetch_sessions: crate::handlers::fetch::FetchSessions,
    /// Group membership (classic and KIP-848).
    pub(crate) coordinator: Coordinator,
    /// Groups whose coordinator a test moved: group → broker.
    pub(crate) coordinator_overrides: BTreeMap<String, i32>,
    /// The clock sessions and barriers run on.
    pub(crate) clock: Clock,
    next_assignment: usize,
}

/// Partitions of Kafka's internal offsets topic, which coordinators are placed by.
const COORDINATOR_PARTITIONS: i32 = 50;

/// Java's `String.hashCode`, which places groups and transactional ids on coordinators.
fn java_hash(s: &str) -> i32 {
    s.encode_utf16().fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

pub(crate) fn random_uuid() -> Uuid {
    let mut b = [0u8; 16];
    fastrand::fill(&mut b);
    // Version 4, variant 1, as Kafka's Uuid.randomUuid makes them.
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    Uuid(b)
}

impl State {
    pub(crate) fn new(config: Config, brokers: BTreeMap<i32, Broker>) -> State {
        State {
            config,
            brokers,
            topics: BTreeMap::new(),
            groups: BTreeMap::new(),
            txns: Transactions::default(),
            next_producer_id: 1000,
            faults: VecDeque::new(),
            requests: Vec::new(),
            fetch_sessions: Default::default(),
            coordinator: Coordinator::default(),
            coordinator_overrides: BTreeMap::new(),
            clock: Clock::new(false),
            next_assignment: 0,
        }
    }

    /// Broker ids that are up.
    pub(crate) fn live_brokers(&self) -> Vec<i32> {
        self.brokers.iter().filter(|(_, b)| b.up).map(|(id, _)| *id).collect()
    }

    pub(crate) fn is_up(&self, id: i32) -> bool {
        self.brokers.get(&id).is_some_and(|b| b.up)
    }

    /// The controller: the lowest live broker id.
    pub(crate) fn controller(&self) -> i32 {
        self.live_brokers().first().copied().unwrap_or(-1)
    }

    /// Replica lists for `partitions` new partitions, round-robin over the live brokers.
    pub(crate) fn assign(&mut self, partitions: i32, replication_factor: i16) -> Vec<Vec<i32>> {
        let live = self.live_brokers();
        let n = live.len().max(1);
        let rf = usize::try_from(replication_factor).unwrap_or(1).clamp(1, n);
        (0..partitions)
            .map(|_| {
                let start = self.next_assignment;
                self.next_assignment += 1;
                (0..rf).filter_map(|k| live.get((start + k) % n).copied()).collect()
            })
            .collect()
    }

    /// Creates a topic (the caller has validated it).
    pub(crate) fn create_topic(
        &mut self,
        name: &str,
        assignments: Vec<Vec<i32>>,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
    ) -> Uuid {
        let id = random_uuid();
        let max_message_bytes =
            configs.get("max.message.bytes").and_then(|v| v.parse().ok()).unwrap_or(self.config.max_message_bytes);
        let partitions = assignments.into_iter().map(|replicas| self.new_partition(replicas)).collect();
        self.topics.insert(name.to_owned(), Topic { id, partitions, replication_factor, configs, max_message_bytes });
        tracing::debug!(topic = name, "topic created");
        id
    }

    pub(crate) fn new_partition(&self, replicas: Vec<i32>) -> Partition {
        let leader = replicas.iter().copied().find(|r| self.is_up(*r)).unwrap_or(-1);
        Partition { leader, leader_epoch: 0, replicas, log: PartitionLog::default() }
    }

    /// A default replication factor: 3, or fewer with fewer brokers.
    pub(crate) fn default_replication_factor(&self) -> i16 {
        i16::try_from(self.brokers.len().min(3)).unwrap_or(1)
    }

    pub(crate) fn topic_by_id(&self, id: Uuid) -> Option<(&String, &Topic)> {
        self.topics.iter().find(|(_, t)| t.id == id)
    }

    pub(crate) fn partition(&self, topic: &str, partition: i32) -> Option<&Partition> {
        self.topics.get(topic)?.partitions.get(usize::try_from(partition).ok()?)
    }

    pub(crate) fn partition_mut(&mut self, topic: &str, partition: i32) -> Option<&mut Partition> {
        self.topics.get_mut(topic)?.partitions.get_mut(usize::try_from(partition).ok()?)
    }

    /// Makes `broker` the leader of a partition, bumping the leader epoch.
    pub(crate) fn set_leader(&mut self, topic: &str, partition: i32, broker: i32) -> bool {
        let Some(p) = self.partition_mut(topic, partition) else { return false };
        if !p.replicas.contains(&broker) {
            p.replicas.push(broker);
        }
        p.leader = broker;
        p.leader_epoch += 1;
        p.log.start_epoch(p.leader_epoch);
        true
    }

    /// An unclean leader election that loses the partition's records from `offset` on:
    /// the next live replica after the leader (by replica order; the leader itself when
    /// it is the only one) takes over under a new leader epoch with a log that ends
    /// before them, as a follower that had not replicated them would. Returns the new
    /// leader, its epoch and the log end offset (the start of the batch holding
    /// `offset`).
    pub(crate) fn truncate_unclean(&mut self, topic: &str, partition: i32, offset: i64) -> Option<(i32, i32, i64)> {
        let live = self.live_brokers();
        let p = self.partition_mut(topic, partition)?;
        let at = p.replicas.iter().position(|r| *r == p.leader).unwrap_or(0);
        let n = p.replicas.len();
        let next = (1..=n).map(|k| p.replicas[(at + k) % n]).find(|r| live.contains(r)).unwrap_or(p.leader);
        let end = p.log.truncate_from(offset);
        p.leader = next;
        p.leader_epoch += 1;
        p.log.start_epoch(p.leader_epoch);
        Some((next, p.leader_epoch, end))
    }

    /// Moves leadership of every partition led by `broker` to another live replica (or
    /// any live broker), as the controller does when a broker dies.
    pub(crate) fn fail_over(&mut self, broker: i32) {
        let live: Vec<i32> = self.live_brokers();
        for topic in self.topics.values_mut() {
            for (i, p) in topic.partitions.iter_mut().enumerate() {
                if p.leader != broker {
                    continue;
                }
                let next = p
                    .replicas
                    .iter()
                    .copied()
                    .find(|r| *r != broker && live.contains(r))
                    .or_else(|| (!live.is_empty()).then(|| live[i % live.len()]));
                p.leader = next.unwrap_or(-1);
                p.leader_epoch += 1;
                if p.leader >= 0 {
                    p.log.start_epoch(p.leader_epoch);
                }
            }
        }
    }

    /// Gives partitions without a leader one, when a broker comes back.
    pub(crate) fn elect_missing_leaders(&mut self) {
        let live = self.live_brokers();
        for topic in self.topics.values_mut() {
            for p in &mut topic.partitions {
                if p.leader >= 0 && live.contains(&p.leader) {
                    continue;
                }
                if let Some(r) = p.replicas.iter().copied().find(|r| live.contains(r)).or(live.first().copied()) {
                    p.leader = r;
                    p.leader_epoch += 1;
                    p.log.start_epoch(p.leader_epoch);
                }
            }
        }
    }

    /// The coordinator of a group or transactional id: the broker that leads the key's
    /// partition of the (virtual) internal topic; when that broker is down, the next
    /// live one.
    pub(crate) fn coordinator(&self, key: &str) -> Option<i32> {
        if let Some(b) = self.coordinator_overrides.get(key) {
            return self.is_up(*b).then_some(*b);
        }
        let ids: Vec<i32> = self.brokers.keys().copied().collect();
        if ids.is_empty() {
            return None;
        }
        let partition = usize::try_from((java_hash(key) & i32::MAX) % COORDINATOR_PARTITIONS).unwrap_or(0);
        (0..ids.len()).map(|k| ids[(partition + k) % ids.len()]).find(|id| self.is_up(*id))
    }

    /// The topics as the group coordinator sees them.
    pub(crate) fn topic_view(&self) -> Topics {
        self.topics
            .iter()
            .map(|(name, t)| (name.clone(), (t.id, i32::try_from(t.partitions.len()).unwrap_or(i32::MAX))))
            .collect()
    }

    /// A fresh producer id.
    pub(crate) fn allocate_producer_id(&mut self) -> i64 {
        let id = self.next_producer_id;
        self.next_producer_id += 1;
        id
    }

    /// Whether this cluster ever issued `producer_id`.
    pub(crate) fn issued_producer_id(&self, producer_id: i64) -> bool {
        (1000..self.next_producer_id).contains(&producer_id)
    }

    /// Takes the next fault for `api` on `broker`, if one is queued.
    pub(crate) fn take_fault(&mut self, api: ApiKey, broker: i32) -> Option<FaultAction> {
        let i = self.faults.iter().position(|f| f.api == api && f.broker.is_none_or(|b| b == broker))?;
        self.faults.remove(i).map(|f| f.action)
    }

    /// Applies a committed offset.
    pub(crate) fn commit_offset(&mut self, group: &str, topic: &str, partition: i32, committed: Committed) {
        self.groups.entry(group.to_owned()).or_default().insert((topic.to_owned(), partition), committed);
    }
}

/// A cluster state for unit tests: `brokers` live brokers (ids from 0), transaction
/// version 2, 1 MiB limits, no topic.
#[cfg(test)]
impl State {
    pub(crate) fn for_tests(brokers: i32) -> State {
        let config = Config {
            cluster_id: "c".into(),
            max_message_bytes: 1 << 20,
            auto_create_topics: false,
            default_partitions: 1,
            max_frame_size: 1 << 20,
            transaction_version: 2,
        };
        let brokers = (0..brokers)
            .map(|id| (id, Broker { port: 0, up: true, latency: Duration::ZERO, connections: 0 }))
            .collect();
        State::new(config, brokers)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn state(n: i32) -> State {
        State::for_tests(n)
    }

    #[test]
    fn java_hash_matches_java() {
        assert_eq!(java_hash(""), 0);
        assert_eq!(java_hash("hello"), 99_162_322);
        assert_eq!(java_hash("a-much-longer-group-name-that-overflows"), {
            let mut h = 0i32;
            for c in "a-much-longer-group-name-that-overflows".chars() {
                h = h.wrapping_mul(31).wrapping_add(c as i32);
            }
            h
        });
    }

    #[test]
    fn leaders_fail_over_and_come_back() {
        let mut s = state(3);
        let a = s.assign(6, 2);
        s.create_topic("t", a, 2, BTreeMap::new());
        let led_by_0: Vec<usize> =
            s.topics["t"].partitions.iter().enumerate().filter(|(_, p)| p.leader == 0).map(|(i, _)| i).collect();
        assert!(!led_by_0.is_empty());
        if let Some(b) = s.brokers.get_mut(&0) {
            b.up = false;
        }
        s.fail_over(0);
        for i in &led_by_0 {
            let p = &s.topics["t"].partitions[*i];
            assert!(p.leader > 0 && p.leader_epoch == 1, "{p:?}");
        }
        assert!(s.coordinator("g").is_some_and(|c| c != 0));
        for id in 0..3 {
            if let Some(b) = s.brokers.get_mut(&id) {
                b.up = false;
            }
        }
        assert_eq!(s.coordinator("g"), None);
        assert_eq!(s.controller(), -1);
    }

    #[test]
    fn an_unclean_election_cuts_the_log_under_a_new_leader_and_epoch() {
        let mut s = state(3);
        s.create_topic("t", vec![vec![0, 1, 2]], 3, BTreeMap::new());
        let mut w = klife_protocol::records::RecordBatchWriter::new(klife_protocol::records::BatchOptions::default());
        for i in 0..4 {
            w.append(i, None, Some(b"v")).unwrap();
        }
        let batch = klife_protocol::records::RawBatch::new(w.finish().unwrap()).unwrap();
        let p = s.partition_mut("t", 0).unwrap();
        for _ in 0..3 {
            p.log.append(&batch, 0).unwrap();
        }
        assert_eq!(p.log.high_watermark(), 12);
        assert_eq!(s.truncate_unclean("t", 0, 6), Some((1, 1, 4)), "cut at the batch holding 6");
        let p = s.partition("t", 0).unwrap();
        assert_eq!((p.leader, p.leader_epoch, p.log.high_watermark()), (1, 1, 4));
        assert_eq!(p.log.epochs(), &[(0, 0), (1, 4)]);
        assert_eq!(p.log.end_offset_for_epoch(0), Some((0, 4)));
        // The next live replica, skipping one that is down.
        if let Some(b) = s.brokers.get_mut(&2) {
            b.up = false;
        }
        assert_eq!(s.truncate_unclean("t", 0, 0).map(|(leader, epoch, _)| (leader, epoch)), Some((0, 2)));
        assert_eq!(s.truncate_unclean("nope", 0, 0), None);
    }
}
