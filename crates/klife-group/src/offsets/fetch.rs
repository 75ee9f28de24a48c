//! Where newly assigned partitions start: their committed offsets, fetched with
//! OffsetFetch, or their reset policy's choice.
//!
//! | event | method |
//! | --- | --- |
//! | partitions were assigned | [`add`](OffsetFetcher::add) |
//! | partitions were given up before they started | [`remove`](OffsetFetcher::remove) |
//! | the member id, epoch or generation changed | [`set_member`](OffsetFetcher::set_member) |
//! | the coordinator was found (after [`FetchEvent::FindCoordinator`]) | [`coordinator_found`](OffsetFetcher::coordinator_found) |
//! | a fetch was answered | [`on_fetch_response`](OffsetFetcher::on_fetch_response) |
//! | a fetch got no answer | [`on_fetch_failed`](OffsetFetcher::on_fetch_failed) |
//!
//! One fetch is in flight at a time; it asks for every partition waiting. Out come
//! [`FetchEvent::Start`] for each partition, or [`FetchEvent::Failed`].

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::Instant;

use klife_protocol::ErrorCode;
use klife_protocol::messages::offset_fetch_request::{
    OffsetFetchRequestGroup, OffsetFetchRequestTopic, OffsetFetchRequestTopics,
};
use klife_protocol::messages::{OffsetFetchRequest, OffsetFetchResponse};
use klife_protocol::types::{TopicPartition, TopicPartitionOffset};

use super::{
    CONSUMER_PROTOCOL_MIN_VERSION, FETCH_GROUPS_MIN_VERSION, GroupProtocol, OffsetError, OffsetsConfig, ResetPolicy,
    Verdict, Wait, verdict,
};

/// Names one OffsetFetch request, to report its answer with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FetchId(u64);

/// An OffsetFetch to send to the group coordinator, at the version given to
/// [`OffsetFetcher::poll_fetch`].
#[derive(Debug, Clone, PartialEq)]
pub struct OffsetFetch {
    /// Its id: report its answer, or its failure, with it.
    pub id: FetchId,
    /// The request.
    pub request: OffsetFetchRequest,
}

/// Where a partition starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartPosition {
    /// At the group's committed offset, with the leader epoch it was committed with in
    /// [`last_epoch`](TopicPartitionOffset::last_epoch) (the fetch then checks the log
    /// was not truncated under it).
    Committed {
        /// The position.
        offset: TopicPartitionOffset,
        /// The metadata committed with it (`None` when empty).
        metadata: Option<String>,
    },
    /// Nothing committed; the reset policy says the log start offset.
    Earliest,
    /// Nothing committed; the reset policy says the log end offset.
    Latest,
}

/// What the fetcher tells its driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchEvent {
    /// A partition's start is known.
    Start {
        /// The partition.
        partition: TopicPartition,
        /// Where it starts.
        start: StartPosition,
    },
    /// A partition's start could not be found; it is no longer asked for.
    Failed(OffsetError),
    /// Look the group coordinator up again, then call
    /// [`OffsetFetcher::coordinator_found`].
    FindCoordinator,
}

/// A partition's answer: committed offset, leader epoch, metadata, code.
type Answer<'a> = (i64, i32, Option<&'a str>, ErrorCode);

#[derive(Debug, Clone)]
struct Pending {
    reset: ResetPolicy,
    wait: Wait,
    failures: u32,
    in_flight: Option<FetchId>,
}

#[derive(Debug, Clone)]
struct InFlight {
    id: FetchId,
    generation: i32,
    partitions: Vec<TopicPartition>,
}

/// The committed-offset lookups of one member. See the [module documentation](self).
#[derive(Debug)]
pub struct OffsetFetcher {
    config: OffsetsConfig,
    member_id: String,
    generation: i32,
    pending: BTreeMap<TopicPartition, Pending>,
    in_flight: Option<InFlight>,
    coordinator_known: bool,
    next_id: u64,
    events: VecDeque<FetchEvent>,
}

impl OffsetFetcher {
    /// A fetcher with nothing to ask yet. The coordinator is taken as known.
    pub fn new(config: OffsetsConfig) -> OffsetFetcher {
        OffsetFetcher {
            config,
            member_id: String::new(),
            generation: -1,
            pending: BTreeMap::new(),
            in_flight: None,
            coordinator_known: true,
            next_id: 0,
            events: VecDeque::new(),
        }
    }

    /// The member id and its epoch or generation. A KIP-848 member's fetches carry
    /// them (v9+); a fetch refused with STALE_MEMBER_EPOCH goes again with the next.
    pub fn set_member(&mut self, now: Instant, member_id: impl Into<String>, generation: i32) {
        let _ = now;
        self.member_id = member_id.into();
        self.generation = generation;
    }

    /// The coordinator is known (again).
    pub fn coordinator_found(&mut self, now: Instant) {
        let _ = now;
        self.coordinator_known = true;
    }

    /// Asks for the start of these partitions, each with its reset policy. A
    /// partition already asked for keeps its place.
    pub fn add<I>(&mut self, now: Instant, partitions: I)
    where
        I: IntoIterator<Item = (TopicPartition, ResetPolicy)>,
    {
        let _ = now;
        for (tp, reset) in partitions {
            self.pending.entry(tp).or_insert(Pending { reset, wait: Wait::Ready, failures: 0, in_flight: None });
        }
    }

    /// No longer asks for these partitions (given up before they started); an answer
    /// in flight for them is ignored.
    pub fn remove<'a, I>(&mut self, partitions: I)
    where
        I: IntoIterator<Item = &'a TopicPartition>,
    {
        for tp in partitions {
            self.pending.remove(tp);
        }
    }

    /// The partitions still waiting for their start, sorted.
    pub fn waiting(&self) -> Vec<TopicPartition> {
        self.pending.keys().cloned().collect()
    }

    /// The fetch to send now, if partitions wait and none is in flight. `version` is
    /// the OffsetFetch version the coordinator and klife share: v8+ puts the group in
    /// its list of groups, and v9+ adds the member id and epoch of a KIP-848 member;
    /// v7+ asks for stable offsets only (pending transactional commits answer
    /// UNSTABLE_OFFSET_COMMIT, asked again after the backoff).
    pub fn poll_fetch(&mut self, now: Instant, version: i16) -> Option<OffsetFetch> {
        if self.in_flight.is_some() || !self.coordinator_known {
            return None;
        }
        let generation = self.generation;
        let ready: Vec<TopicPartition> = self
            .pending
            .iter()
            .filter(|(_, p)| match p.wait {
                Wait::Ready => true,
                Wait::Until(t) => t <= now,
                Wait::Epoch(e) => e != generation,
            })
            .map(|(tp, _)| tp.clone())
            .collect();
        if ready.is_empty() {
            return None;
        }
        let id = FetchId(self.next_id);
        self.next_id += 1;
        let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
        for tp in &ready {
            topics.entry(&tp.topic).or_default().push(tp.partition);
        }
        let mut request = OffsetFetchRequest::default().with_require_stable(version >= 7);
        if version >= FETCH_GROUPS_MIN_VERSION {
            let topics = topics
                .into_iter()
                .map(|(name, ps)| {
                    OffsetFetchRequestTopics::default().with_name(name.to_owned()).with_partition_indexes(ps)
                })
                .collect();
            let mut group = OffsetFetchRequestGroup::default()
                .with_group_id(self.config.group_id.clone())
                .with_topics(Some(topics));
            if version >= CONSUMER_PROTOCOL_MIN_VERSION
                && self.config.protocol != GroupProtocol::Classic
                && self.config.is_member(generation)
            {
                group = group.with_member_id(Some(self.member_id.clone())).with_member_epoch(generation);
            }
            request = request.with_groups(vec![group]);
        } else {
            let topics = topics
                .into_iter()
                .map(|(name, ps)| {
                    OffsetFetchRequestTopic::default().with_name(name.to_owned()).with_partition_indexes(ps)
                })
                .collect();
            request = request.with_group_id(self.config.group_id.clone()).with_topics(Some(topics));
        }
        for tp in &ready {
            if let Some(p) = self.pending.get_mut(tp) {
                p.in_flight = Some(id);
            }
        }
        self.in_flight = Some(InFlight { id, generation, partitions: ready });
        Some(OffsetFetch { id, request })
    }

    /// The coordinator answered fetch `id`: each partition is settled by the group's
    /// code, then its own. An answer to no fetch in flight is ignored.
    pub fn on_fetch_response(&mut self, now: Instant, id: FetchId, response: &OffsetFetchResponse) {
        let Some(flight) = self.take_flight(id) else { return };
        // (committed offset, leader epoch, metadata, code) by partition.
        let mut answers: HashMap<(&str, i32), Answer<'_>> = HashMap::new();
        let group_code = if let Some(g) = response.groups.iter().find(|g| g.group_id == self.config.group_id) {
            for t in &g.topics {
                for p in &t.partitions {
                    answers.insert(
                        (t.name.as_str(), p.partition_index),
                        (
                            p.committed_offset,
                            p.committed_leader_epoch,
                            p.metadata.as_deref(),
                            ErrorCode::from_code(p.error_code),
                        ),
                    );
                }
            }
            ErrorCode::from_code(g.error_code)
        } else {
            for t in &response.topics {
                for p in &t.partitions {
                    answers.insert(
                        (t.name.as_str(), p.partition_index),
                        (
                            p.committed_offset,
                            p.committed_leader_epoch,
                            p.metadata.as_deref(),
                            ErrorCode::from_code(p.error_code),
                        ),
                    );
                }
            }
            ErrorCode::from_code(response.error_code)
        };
        let mut settled = Vec::new();
        for tp in &flight.partitions {
            let answer = answers
                .get(&(&*tp.topic, tp.partition))
                .map(|(o, e, m, c)| (*o, *e, m.filter(|m| !m.is_empty()).map(str::to_owned), *c));
            settled.push((tp.clone(), answer));
        }
        for (tp, answer) in settled {
            let Some(p) = self.pending.get_mut(&tp) else { continue };
            if p.in_flight != Some(id) {
                continue;
            }
            p.in_flight = None;
            let code = match (&answer, group_code) {
                (_, c) if c != ErrorCode::None => c,
                (Some((_, _, _, c)), _) => *c,
                // Left out of the answer: asked again after the backoff.
                (None, _) => ErrorCode::RequestTimedOut,
            };
            match verdict(code) {
                Verdict::Ok => {
                    let Some((offset, epoch, metadata, _)) = answer else { continue };
                    let reset = p.reset;
                    self.pending.remove(&tp);
                    let start = if offset >= 0 {
                        StartPosition::Committed { offset: tp.at(offset).with_last_epoch(epoch), metadata }
                    } else {
                        match reset {
                            ResetPolicy::Earliest => StartPosition::Earliest,
                            ResetPolicy::Latest => StartPosition::Latest,
                            ResetPolicy::Error => {
                                self.events
                                    .push_back(FetchEvent::Failed(OffsetError::NoCommittedOffset { partition: tp }));
                                continue;
                            }
                        }
                    };
                    self.events.push_back(FetchEvent::Start { partition: tp, start });
                }
                Verdict::FindCoordinator => {
                    p.failures = p.failures.saturating_add(1);
                    p.wait =
                        if p.failures > 1 { Wait::Until(now + self.config.backoff(p.failures)) } else { Wait::Ready };
                    self.find_coordinator();
                }
                Verdict::Backoff => {
                    p.failures = p.failures.saturating_add(1);
                    p.wait = Wait::Until(now + self.config.backoff(p.failures));
                }
                Verdict::NextEpoch => p.wait = Wait::Epoch(flight.generation),
                Verdict::Fail => {
                    self.pending.remove(&tp);
                    self.events.push_back(FetchEvent::Failed(OffsetError::from_code(tp, code)));
                }
            }
        }
    }

    /// Fetch `id` got no answer: its partitions are asked again after the backoff, of
    /// the coordinator found anew.
    pub fn on_fetch_failed(&mut self, now: Instant, id: FetchId) {
        let Some(flight) = self.take_flight(id) else { return };
        for tp in &flight.partitions {
            if let Some(p) = self.pending.get_mut(tp).filter(|p| p.in_flight == Some(id)) {
                p.in_flight = None;
                p.failures = p.failures.saturating_add(1);
                p.wait = Wait::Until(now + self.config.backoff(p.failures));
            }
        }
        self.find_coordinator();
    }

    /// The next event, in order.
    pub fn poll_event(&mut self) -> Option<FetchEvent> {
        self.events.pop_front()
    }

    /// When [`poll_fetch`](Self::poll_fetch) should be tried again at the latest.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if !self.coordinator_known || self.in_flight.is_some() {
            return None;
        }
        super::earliest(self.pending.values().map(|p| match p.wait {
            Wait::Until(t) => Some(t),
            _ => None,
        }))
    }

    fn take_flight(&mut self, id: FetchId) -> Option<InFlight> {
        if self.in_flight.as_ref().is_some_and(|f| f.id == id) { self.in_flight.take() } else { None }
    }

    fn find_coordinator(&mut self) {
        if self.coordinator_known {
            self.coordinator_known = false;
            self.events.push_back(FetchEvent::FindCoordinator);
        }
    }
}
