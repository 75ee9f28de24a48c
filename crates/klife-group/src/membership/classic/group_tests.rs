//! Members together in one group, against a scripted classic coordinator (join and
//! sync barriers, generations, rebalances started by joins and leaves): members join,
//! the assignment is complete and disjoint, a member joining or leaving moves
//! partitions, a static member restarted comes back without a rebalance, and no
//! partition is ever owned by two members at once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use klife_protocol::ErrorCode;
use klife_protocol::messages::join_group_response::JoinGroupResponseMember;
use klife_protocol::messages::{HeartbeatResponse, JoinGroupResponse, LeaveGroupResponse, SyncGroupResponse};
use klife_protocol::types::TopicPartition;

use super::*;
use crate::assignor::{RangeAssignor, RoundRobinAssignor};

const PARTITIONS: i32 = 6;

type Reply = (usize, RequestId, Response);

/// A classic group coordinator reduced to its barriers.
#[derive(Default)]
struct Coordinator {
    generation: i32,
    next_member: u32,
    /// Members and their metadata.
    members: BTreeMap<String, Bytes>,
    rebalancing: bool,
    joins: BTreeMap<String, (usize, RequestId, Bytes, String)>,
    syncs: Vec<(usize, RequestId, String)>,
    assignments: Option<BTreeMap<String, Bytes>>,
    leader: String,
    rebalances: u32,
    /// Static members: instance id to member id.
    instances: BTreeMap<String, String>,
}

impl Coordinator {
    fn handle(&mut self, from: usize, id: RequestId, request: Request) -> Vec<Reply> {
        match request {
            Request::JoinGroup(mut j) if j.member_id.is_empty() && j.group_instance_id.is_some() => {
                let instance = j.group_instance_id.clone().unwrap_or_default();
                self.next_member += 1;
                let member_id = format!("m{}", self.next_member);
                let known = self.instances.insert(instance, member_id.clone());
                if let Some(old) = known
                    && !self.rebalancing
                {
                    // A static member back under a new member id: no rebalance
                    // (KIP-345); a leader is told to skip the assignment (KIP-814).
                    let metadata = self.members.remove(&old).unwrap_or_default();
                    self.members.insert(member_id.clone(), metadata);
                    if let Some(a) = &mut self.assignments
                        && let Some(bytes) = a.remove(&old)
                    {
                        a.insert(member_id.clone(), bytes);
                    }
                    let leader = self.leader == old;
                    if leader {
                        self.leader.clone_from(&member_id);
                    }
                    let r = JoinGroupResponse::default()
                        .with_generation_id(self.generation)
                        .with_member_id(member_id)
                        .with_leader(self.leader.clone())
                        .with_protocol_name(Some(j.protocols[0].name.clone()))
                        .with_skip_assignment(leader);
                    return vec![(from, id, Response::JoinGroup(r))];
                }
                // A new static member joins at once, with an id of the coordinator's.
                j.member_id = member_id;
                self.handle(from, id, Request::JoinGroup(j))
            }
            Request::JoinGroup(j) if j.member_id.is_empty() => {
                self.next_member += 1;
                let member_id = format!("m{}", self.next_member);
                let r = JoinGroupResponse::default()
                    .with_error_code(ErrorCode::MemberIdRequired.code())
                    .with_member_id(member_id);
                vec![(from, id, Response::JoinGroup(r))]
            }
            Request::JoinGroup(j) => {
                let p = &j.protocols[0];
                self.members.entry(j.member_id.clone()).or_insert_with(|| p.metadata.clone());
                self.joins.insert(j.member_id, (from, id, p.metadata.clone(), p.name.clone()));
                self.rebalancing = true;
                self.try_complete_join()
            }
            Request::SyncGroup(s) => {
                if s.generation_id != self.generation || !self.members.contains_key(&s.member_id) {
                    let r = SyncGroupResponse::default().with_error_code(ErrorCode::IllegalGeneration.code());
                    return vec![(from, id, Response::SyncGroup(r))];
                }
                if s.member_id == self.leader && self.assignments.is_none() {
                    self.assignments = Some(s.assignments.into_iter().map(|a| (a.member_id, a.assignment)).collect());
                }
                self.syncs.push((from, id, s.member_id));
                let Some(assignments) = &self.assignments else { return vec![] };
                self.syncs
                    .drain(..)
                    .map(|(to, id, member)| {
                        let bytes = assignments.get(&member).cloned().unwrap_or_default();
                        (to, id, Response::SyncGroup(SyncGroupResponse::default().with_assignment(bytes)))
                    })
                    .collect()
            }
            Request::Heartbeat(h) => {
                let code = if !self.members.contains_key(&h.member_id) {
                    ErrorCode::UnknownMemberId
                } else if self.rebalancing {
                    ErrorCode::RebalanceInProgress
                } else if h.generation_id != self.generation {
                    ErrorCode::IllegalGeneration
                } else {
                    ErrorCode::None
                };
                vec![(from, id, Response::Heartbeat(HeartbeatResponse::default().with_error_code(code.code())))]
            }
            Request::LeaveGroup(l) => {
                for m in &l.members {
                    self.members.remove(&m.member_id);
                }
                self.rebalancing = !self.members.is_empty();
                let mut out = vec![(from, id, Response::LeaveGroup(LeaveGroupResponse::default()))];
                out.extend(self.try_complete_join());
                out
            }
        }
    }

    /// Completes the join once every member has joined: a new generation.
    fn try_complete_join(&mut self) -> Vec<Reply> {
        if self.joins.is_empty() || !self.members.keys().all(|m| self.joins.contains_key(m)) {
            return vec![];
        }
        self.generation += 1;
        self.rebalances += 1;
        self.rebalancing = false;
        self.assignments = None;
        self.syncs.clear();
        let joins = std::mem::take(&mut self.joins);
        self.members = joins.iter().map(|(m, (_, _, meta, _))| (m.clone(), meta.clone())).collect();
        self.leader = joins.keys().next().cloned().unwrap_or_default();
        let listed: Vec<_> = joins
            .iter()
            .map(|(m, (_, _, meta, _))| {
                JoinGroupResponseMember::default().with_member_id(m.clone()).with_metadata(meta.clone())
            })
            .collect();
        joins
            .into_iter()
            .map(|(member, (to, id, _, protocol))| {
                let leader = member == self.leader;
                let r = JoinGroupResponse::default()
                    .with_generation_id(self.generation)
                    .with_member_id(member)
                    .with_leader(self.leader.clone())
                    .with_protocol_name(Some(protocol))
                    .with_members(if leader { listed.clone() } else { vec![] });
                (to, id, Response::JoinGroup(r))
            })
            .collect()
    }
}

/// Members, the coordinator and a virtual clock. Releases are reported one step after
/// they are asked for, as a handler finishing its records would.
struct Group {
    now: Instant,
    coordinator: Coordinator,
    members: Vec<ClassicMember>,
    /// What each member runs, from its actions.
    running: Vec<BTreeSet<TopicPartition>>,
    releases: Vec<(usize, ReleaseId, Vec<TopicPartition>)>,
    finished: Vec<bool>,
}

impl Group {
    fn new() -> Group {
        Group {
            now: Instant::now(),
            coordinator: Coordinator::default(),
            members: vec![],
            running: vec![],
            releases: vec![],
            finished: vec![],
        }
    }

    fn add(&mut self, config: ClassicConfig) -> usize {
        self.members.push(ClassicMember::new(config, self.now).expect("valid config"));
        self.running.push(BTreeSet::new());
        self.finished.push(false);
        self.members.len() - 1
    }

    /// One round: releases asked for last round, then every member's actions and
    /// requests. Returns whether anything happened.
    fn step(&mut self) -> bool {
        let mut progress = false;
        for (i, release, parts) in std::mem::take(&mut self.releases) {
            for p in parts {
                self.running[i].remove(&p);
            }
            self.members[i].released(self.now, release);
            progress = true;
        }
        for i in 0..self.members.len() {
            while let Some(a) = self.members[i].poll_action() {
                progress = true;
                match a {
                    Action::FindCoordinator => self.members[i].coordinator_found(self.now),
                    Action::DescribeTopics { topics } => {
                        let counts: Vec<_> = topics.into_iter().map(|t| (t, PARTITIONS)).collect();
                        self.members[i].on_partition_counts(self.now, counts);
                    }
                    Action::StartPartitions { partitions } => {
                        for p in partitions {
                            for (j, other) in self.running.iter().enumerate() {
                                assert!(!other.contains(&p), "{p} started on member {i} while member {j} runs it");
                            }
                            self.running[i].insert(p);
                        }
                    }
                    Action::CommitRevoked { release, partitions, .. } => {
                        self.releases.push((i, release, partitions));
                    }
                    Action::PartitionsLost { release, partitions, .. } => {
                        self.releases.push((i, release, partitions));
                    }
                    Action::Finished(outcome) => {
                        assert_eq!(outcome, Outcome::Left);
                        self.finished[i] = true;
                    }
                    Action::StopFetching { .. } | Action::EpochChanged { .. } => {}
                    Action::RefreshMetadata { .. } => panic!("a classic member asked for topic ids"),
                }
            }
            while let Some(r) = self.members[i].poll_request(self.now) {
                progress = true;
                for (to, id, response) in self.coordinator.handle(i, r.id, r.request) {
                    self.members[to].on_response(self.now, id, &response);
                }
            }
        }
        progress
    }

    /// Runs until `done`, moving the clock to the next timer when nothing happens.
    fn run_until(&mut self, mut done: impl FnMut(&Group) -> bool) {
        for _ in 0..2000 {
            if done(self) {
                return;
            }
            if !self.step() {
                let next = self.members.iter().filter_map(ClassicMember::poll_timeout).min();
                self.now = next.map_or(self.now + Duration::from_secs(1), |t| t.max(self.now));
                for m in &mut self.members {
                    m.handle_timeout(self.now);
                }
            }
        }
        panic!("the group did not settle: {:?}", self.running);
    }

    /// Every live member stable, every partition run by exactly one of them.
    fn settled(&self) -> bool {
        let live: Vec<usize> = (0..self.members.len()).filter(|&i| !self.finished[i]).collect();
        let all: usize = live.iter().map(|&i| self.running[i].len()).sum();
        live.iter().all(|&i| self.members[i].state() == ClassicState::Stable)
            && !self.coordinator.rebalancing
            && self.releases.is_empty()
            && all == PARTITIONS as usize
    }

    fn counts(&self) -> Vec<usize> {
        (0..self.members.len()).filter(|&i| !self.finished[i]).map(|i| self.running[i].len()).collect()
    }
}

fn scenario(assignors: Vec<Arc<dyn Assignor>>) -> (u32, u32) {
    let config = ClassicConfig::new("g", ["t"]).with_assignors(assignors);
    let mut g = Group::new();
    g.add(config.clone());
    g.add(config.clone());
    g.run_until(Group::settled);
    assert_eq!(g.counts(), vec![3, 3]);
    let first = g.coordinator.rebalances;
    // A third member joins: two partitions move to it.
    g.add(config);
    g.run_until(Group::settled);
    assert_eq!(g.counts(), vec![2, 2, 2]);
    let joined = g.coordinator.rebalances - first;
    // A member leaves: its partitions go to the others.
    g.members[0].leave(g.now);
    g.run_until(|g| g.finished[0] && g.settled());
    assert_eq!(g.counts(), vec![3, 3]);
    // Nothing more happens once settled: heartbeats only.
    let before = g.coordinator.rebalances;
    let until = g.now + Duration::from_secs(60);
    g.run_until(|g| g.now >= until);
    assert_eq!(g.coordinator.rebalances, before);
    assert!(g.settled());
    (first, joined)
}

#[test]
fn a_cooperative_group_moves_partitions_in_two_rebalances() {
    let (first, joined) = scenario(vec![Arc::new(CooperativeStickyAssignor)]);
    // The first member is alone in generation 1 (the coordinator completes its join at
    // once); the second joins: one rebalance to revoke, one to assign.
    assert_eq!(first, 3);
    assert_eq!(joined, 2, "one to revoke, one to assign");
}

#[test]
fn an_eager_group_revokes_everything_on_each_rebalance() {
    for assignor in [Arc::new(RangeAssignor) as Arc<dyn Assignor>, Arc::new(RoundRobinAssignor)] {
        let (first, joined) = scenario(vec![assignor]);
        assert_eq!((first, joined), (2, 1), "one rebalance per join");
    }
}

#[test]
fn a_static_member_restarted_comes_back_without_a_rebalance() {
    let config = |instance: &str| ClassicConfig::new("g", ["t"]).with_instance_id(instance);
    // The leader (the first member), then a follower.
    for restarted in [0, 1] {
        let mut g = Group::new();
        g.add(config("a"));
        g.add(config("b"));
        g.run_until(Group::settled);
        let before = g.coordinator.rebalances;
        let owned = g.running[restarted].clone();
        // The process dies (nothing released, no LeaveGroup) and starts again.
        g.members[restarted] = ClassicMember::new(config(["a", "b"][restarted]), g.now).expect("valid config");
        g.running[restarted].clear();
        g.run_until(Group::settled);
        assert_eq!(g.coordinator.rebalances, before, "member {restarted}: no rebalance");
        assert_eq!(g.running[restarted], owned, "member {restarted}: its partitions back");
    }
}
