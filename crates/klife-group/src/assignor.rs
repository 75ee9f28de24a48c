//! The assignors of the classic protocol: the group leader runs one on every
//! member's subscription and gives each member its partitions.
//!
//! [`Assignor`] is the trait; a user may write their own. klife has three, all
//! deterministic (the same input gives the same output, whatever the order of the
//! members in it):
//!
//! - [`RangeAssignor`] (`range`): for each topic, its partitions in ranges over the
//!   members that subscribe to it, in order of member; co-partitioned topics line up.
//! - [`RoundRobinAssignor`] (`roundrobin`): every partition in order, dealt out to the
//!   members in turn, skipping those that do not subscribe to its topic.
//! - [`CooperativeStickyAssignor`] (`cooperative-sticky`, KIP-429): balanced (no
//!   member has two partitions more than another that could take one of them), sticky
//!   (a member keeps what it owns unless balance asks otherwise) and cooperative: a
//!   partition that moves is only taken away from its owner in one rebalance, and given
//!   to its new owner in the next, so no partition is ever owned by two members.
//!
//! Members are ordered by their static instance id when they have one, else by their
//! member id (so a static member keeps its place across restarts).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use klife_protocol::TopicPartition;

use crate::protocol::Subscription;

/// What each member is given: every member of the input has an entry (maybe empty).
pub type GroupAssignment = BTreeMap<String, BTreeSet<TopicPartition>>;

/// How members give partitions up when the group rebalances.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RebalanceProtocol {
    /// Every member gives up every partition before it joins again.
    Eager,
    /// Members keep their partitions and give up only those the leader takes away
    /// (KIP-429); they join again at once after giving them up.
    Cooperative,
}

/// One member, as the leader sees it in the JoinGroup answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSubscription {
    /// The member id.
    pub member_id: String,
    /// The static instance id, if any.
    pub instance_id: Option<String>,
    /// What the member sent.
    pub subscription: Subscription,
}

/// What an assignor works from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AssignorInput {
    /// The members.
    pub members: Vec<MemberSubscription>,
    /// The number of partitions of each topic the members subscribe to; a topic
    /// missing (or with 0) has no partition to assign.
    pub partition_counts: BTreeMap<String, i32>,
}

impl AssignorInput {
    /// The members in assignment order: by instance id when they have one, else by
    /// member id.
    pub fn sorted_members(&self) -> Vec<&MemberSubscription> {
        let mut members: Vec<_> = self.members.iter().collect();
        members.sort_by(|a, b| sort_key(a).cmp(&sort_key(b)));
        members.dedup_by(|a, b| a.member_id == b.member_id);
        members
    }

    /// The partitions of `topic`.
    pub fn partitions(&self, topic: &str) -> impl Iterator<Item = TopicPartition> + use<> {
        let n = self.partition_counts.get(topic).copied().unwrap_or(0).max(0);
        let topic: Arc<str> = topic.into();
        (0..n).map(move |p| TopicPartition { topic: topic.clone(), partition: p })
    }

    /// An empty assignment for every member.
    pub fn empty_assignment(&self) -> GroupAssignment {
        self.members.iter().map(|m| (m.member_id.clone(), BTreeSet::new())).collect()
    }
}

fn sort_key(m: &MemberSubscription) -> (bool, &str, &str) {
    match &m.instance_id {
        Some(id) => (false, id.as_str(), m.member_id.as_str()),
        None => (true, m.member_id.as_str(), m.member_id.as_str()),
    }
}

fn subscribes(m: &MemberSubscription, topic: &str) -> bool {
    m.subscription.topics.iter().any(|t| t == topic)
}

/// Every topic some member subscribes to, in order.
fn subscribed_topics(input: &AssignorInput) -> BTreeSet<&str> {
    input.members.iter().flat_map(|m| m.subscription.topics.iter().map(String::as_str)).collect()
}

/// A partition assignor of the classic protocol, run by the group leader.
///
/// The output must give each partition of a subscribed topic to at most one member,
/// and only to a member that subscribes to its topic; a member missing from the output
/// is given nothing. A [`RebalanceProtocol::Cooperative`] assignor must not give a
/// member a partition that another member owns (in its subscription's owned
/// partitions): it takes it away, and gives it in the next rebalance.
pub trait Assignor: fmt::Debug + Send + Sync {
    /// The protocol name in JoinGroup: members of a group must share one.
    fn name(&self) -> &str;

    /// How members rebalance under this assignor.
    fn rebalance_protocol(&self) -> RebalanceProtocol {
        RebalanceProtocol::Eager
    }

    /// The assignment of the group.
    fn assign(&self, input: &AssignorInput) -> GroupAssignment;
}

/// `range`: for each topic, consecutive partitions to each member that subscribes to
/// it; the first members get one more when the count does not divide evenly.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RangeAssignor;

impl Assignor for RangeAssignor {
    fn name(&self) -> &str {
        "range"
    }

    fn assign(&self, input: &AssignorInput) -> GroupAssignment {
        let mut out = input.empty_assignment();
        let members = input.sorted_members();
        for topic in subscribed_topics(input) {
            let takers: Vec<_> = members.iter().filter(|m| subscribes(m, topic)).collect();
            let parts: Vec<_> = input.partitions(topic).collect();
            let (each, extra) = (parts.len() / takers.len(), parts.len() % takers.len());
            let mut start = 0;
            for (i, m) in takers.iter().enumerate() {
                let len = each + usize::from(i < extra);
                if let Some(set) = out.get_mut(&m.member_id) {
                    set.extend(parts[start..start + len].iter().cloned());
                }
                start += len;
            }
        }
        out
    }
}

/// `roundrobin`: every partition, ordered by topic and partition, to the members in
/// turn (a member that does not subscribe to the topic is skipped).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoundRobinAssignor;

impl Assignor for RoundRobinAssignor {
    fn name(&self) -> &str {
        "roundrobin"
    }

    fn assign(&self, input: &AssignorInput) -> GroupAssignment {
        let mut out = input.empty_assignment();
        let members = input.sorted_members();
        let mut next = 0;
        for topic in subscribed_topics(input) {
            for tp in input.partitions(topic) {
                let taker =
                    (0..members.len()).map(|i| (next + i) % members.len()).find(|&i| subscribes(members[i], topic));
                if let Some(i) = taker {
                    if let Some(set) = out.get_mut(&members[i].member_id) {
                        set.insert(tp);
                    }
                    next = (i + 1) % members.len();
                }
            }
        }
        out
    }
}

/// `cooperative-sticky` (KIP-429): balanced, sticky and cooperative (see the [module
/// documentation](self)).
///
/// Ownership claims are read from the members' subscriptions; when two members claim
/// the same partition, the one with the higher generation keeps it, and on a tie
/// neither does (the claims of a member that lost its partitions without knowing it).
/// Unowned partitions go to the member with the fewest partitions that subscribes to
/// their topic; then partitions move from a member to another that subscribes to
/// their topic while the first has two more than the second. A partition that would
/// go to a member that does not claim it, while another does, is left out of this
/// rebalance.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CooperativeStickyAssignor;

impl Assignor for CooperativeStickyAssignor {
    fn name(&self) -> &str {
        "cooperative-sticky"
    }

    fn rebalance_protocol(&self) -> RebalanceProtocol {
        RebalanceProtocol::Cooperative
    }

    fn assign(&self, input: &AssignorInput) -> GroupAssignment {
        let members = input.sorted_members();
        let index: BTreeMap<&str, usize> = members.iter().enumerate().map(|(i, m)| (m.member_id.as_str(), i)).collect();
        let universe: BTreeSet<TopicPartition> =
            subscribed_topics(input).into_iter().flat_map(|t| input.partitions(t)).collect();
        let eligible = |i: usize, tp: &TopicPartition| subscribes(members[i], &tp.topic);

        // Valid claims: the highest generation wins, a tie keeps nobody.
        let mut claims: BTreeMap<&TopicPartition, Vec<(i32, usize)>> = BTreeMap::new();
        for (i, m) in members.iter().enumerate() {
            for tp in &m.subscription.owned_partitions {
                if universe.contains(tp) && eligible(i, tp) {
                    claims.entry(tp).or_default().push((m.subscription.generation_id.unwrap_or(-1), i));
                }
            }
        }
        let mut held: Vec<BTreeSet<TopicPartition>> = vec![BTreeSet::new(); members.len()];
        for (tp, mut c) in claims {
            c.sort_unstable_by(|a, b| b.cmp(a));
            if c.len() == 1 || c[0].0 > c[1].0 {
                held[c[0].1].insert(tp.clone());
            }
        }
        let owned_now: BTreeSet<&TopicPartition> = held.iter().flatten().collect();
        let free: Vec<TopicPartition> = universe.iter().filter(|tp| !owned_now.contains(tp)).cloned().collect();
        for tp in free {
            let taker = (0..members.len()).filter(|&i| eligible(i, &tp)).min_by_key(|&i| (held[i].len(), i));
            if let Some(i) = taker {
                held[i].insert(tp);
            }
        }

        // Balance: move while a member holds two more than one that could take one.
        // Each move lowers the sum of squared counts, so this ends.
        'moves: loop {
            let mut by_count: Vec<usize> = (0..members.len()).collect();
            by_count.sort_by_key(|&i| (std::cmp::Reverse(held[i].len()), i));
            for &from in &by_count {
                for tp in held[from].iter().rev() {
                    let to = (0..members.len())
                        .filter(|&j| j != from && eligible(j, tp) && held[j].len() + 1 < held[from].len())
                        .min_by_key(|&j| (held[j].len(), j));
                    if let Some(to) = to {
                        let tp = tp.clone();
                        held[from].remove(&tp);
                        held[to].insert(tp);
                        continue 'moves;
                    }
                }
            }
            break;
        }

        // Cooperative: a partition new to a member that another member claims is only
        // taken away now (a member keeps what it claims itself, over stale claims).
        let mut claimed_by: BTreeMap<&TopicPartition, BTreeSet<&str>> = BTreeMap::new();
        for m in &members {
            for tp in &m.subscription.owned_partitions {
                claimed_by.entry(tp).or_default().insert(m.member_id.as_str());
            }
        }
        let mut out = input.empty_assignment();
        for (i, parts) in held.into_iter().enumerate() {
            let id = members[i].member_id.as_str();
            let keep = parts.into_iter().filter(|tp| claimed_by.get(tp).is_none_or(|c| c.contains(id) || c.is_empty()));
            if let Some(set) = out.get_mut(id) {
                set.extend(keep);
            }
        }
        debug_assert!(out.keys().all(|k| index.contains_key(k.as_str())));
        out
    }
}

#[cfg(test)]
mod tests;
