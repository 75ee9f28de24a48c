//! Admin for consumer groups: list, describe, committed offsets and lag, offset resets,
//! deletion.
//!
//! Every call goes to the group's coordinator (found with FindCoordinator, followed when
//! it moves) under the connection layer's one retry rule. A KIP-848 group is described
//! with ConsumerGroupDescribe, a classic one with DescribeGroups; callers see one
//! [`GroupDescription`] either way.
//!
//! Offsets of a group are only changed while it has no members, as
//! `kafka-consumer-groups.sh` does: a member would overwrite them with its next commit.
//! [`Client::plan_offset_reset`] computes the new offsets (a dry run, nothing written);
//! [`Client::reset_offsets`] writes a plan, after checking again that the group is
//! still empty.
//!
//! ```no_run
//! # async fn run(client: klife::Client) -> Result<(), klife::Error> {
//! use klife::{ResetTo, ResetScope};
//! for lag in client.group_lag("billing").await? {
//!     println!("{}: lag {:?}", lag.topic_partition, lag.lag);
//! }
//! let plan = client.plan_offset_reset("billing", ResetScope::Topics(vec!["orders".into()]), ResetTo::Earliest).await?;
//! for p in &plan.partitions {
//!     println!("{}: {:?} -> {}", p.topic_partition, p.current, p.new_offset);
//! }
//! for (partition, result) in client.reset_offsets(&plan).await? {
//!     result.map_err(|e| { eprintln!("{partition}: {e}"); e })?;
//! }
//! # Ok(())
//! # }
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use klife_connection::{CoordinatorType, Target};
use klife_fetcher::OffsetSpec;
use klife_group::protocol::{Assignment, Subscription};
use klife_protocol::messages::consumer_group_describe_response::DescribedGroup as ConsumerDescribed;
use klife_protocol::messages::describe_groups_response::DescribedGroup as ClassicDescribed;
use klife_protocol::messages::offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
use klife_protocol::messages::offset_delete_request::{OffsetDeleteRequestPartition, OffsetDeleteRequestTopic};
use klife_protocol::messages::offset_fetch_request::OffsetFetchRequestGroup;
use klife_protocol::messages::{
    ConsumerGroupDescribeRequest, DeleteGroupsRequest, DescribeGroupsRequest, ListGroupsRequest, OffsetCommitRequest,
    OffsetDeleteRequest, OffsetFetchRequest,
};
use klife_protocol::{ApiKey, ErrorCode, RetryAction, TopicPartition};

use crate::{Client, Error};

/// What protocol a group speaks.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GroupType {
    /// A KIP-848 consumer group (ConsumerGroupHeartbeat).
    Consumer,
    /// A classic group (JoinGroup / SyncGroup), of consumers or of another protocol
    /// type (Kafka Connect, ...).
    Classic,
    /// A share group (KIP-932).
    Share,
    /// A Kafka Streams group (KIP-1071).
    Streams,
    /// A type this client does not know, as the broker spells it.
    Other(String),
}

impl GroupType {
    fn from_wire(name: &str) -> GroupType {
        match name.to_ascii_lowercase().as_str() {
            "consumer" => GroupType::Consumer,
            "classic" => GroupType::Classic,
            "share" => GroupType::Share,
            "streams" => GroupType::Streams,
            _ => GroupType::Other(name.to_owned()),
        }
    }
}

impl fmt::Display for GroupType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GroupType::Consumer => "consumer",
            GroupType::Classic => "classic",
            GroupType::Share => "share",
            GroupType::Streams => "streams",
            GroupType::Other(s) => s,
        })
    }
}

/// A group's state, as Kafka names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GroupState {
    /// No members (the group may still hold committed offsets).
    Empty,
    /// Members, each with its assignment.
    Stable,
    /// Classic: a rebalance started; members are rejoining.
    PreparingRebalance,
    /// Classic: members joined; the leader's assignment is awaited.
    CompletingRebalance,
    /// KIP-848: the group epoch moved; the assignor is computing the target.
    Assigning,
    /// KIP-848: members are moving to their target assignments.
    Reconciling,
    /// The group is being removed, or does not exist.
    Dead,
    /// A state this client does not know, as the broker spells it.
    Other(String),
}

impl GroupState {
    fn from_wire(name: &str) -> GroupState {
        match name.to_ascii_lowercase().as_str() {
            "empty" => GroupState::Empty,
            "stable" => GroupState::Stable,
            "preparingrebalance" => GroupState::PreparingRebalance,
            "completingrebalance" => GroupState::CompletingRebalance,
            "assigning" => GroupState::Assigning,
            "reconciling" => GroupState::Reconciling,
            "dead" => GroupState::Dead,
            _ => GroupState::Other(name.to_owned()),
        }
    }
}

impl fmt::Display for GroupState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GroupState::Empty => "Empty",
            GroupState::Stable => "Stable",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Assigning => "Assigning",
            GroupState::Reconciling => "Reconciling",
            GroupState::Dead => "Dead",
            GroupState::Other(s) => s,
        })
    }
}

/// A group in [`Client::list_groups`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupListing {
    /// The group id.
    pub group_id: String,
    /// Its protocol. Brokers older than ListGroups v5 (Kafka 3.8) only have classic
    /// groups, and are reported so.
    pub group_type: GroupType,
    /// The protocol type (`consumer` for consumer groups; `connect`, ... for others;
    /// empty for a group that only holds committed offsets).
    pub protocol_type: String,
    /// Its state (`None` from brokers older than ListGroups v4, Kafka 2.6).
    pub state: Option<GroupState>,
    /// The broker coordinating it.
    pub coordinator: i32,
}

/// A member in a [`GroupDescription`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupMember {
    /// The member id.
    pub member_id: String,
    /// The static member's instance id.
    pub instance_id: Option<String>,
    /// The client id it connected with.
    pub client_id: String,
    /// The host it connected from, as the broker writes it (`/127.0.0.1`).
    pub client_host: String,
    /// Its rack, when it said.
    pub rack_id: Option<String>,
    /// KIP-848: its member epoch; `None` for classic members.
    pub member_epoch: Option<i32>,
    /// The topics it subscribes to (a classic member's, decoded from its join
    /// metadata when the protocol type is `consumer`).
    pub subscribed_topics: Vec<String>,
    /// KIP-848: the regular expression it subscribes with.
    pub subscribed_regex: Option<String>,
    /// The partitions it owns now (a classic member's, decoded from its SyncGroup
    /// assignment when the protocol type is `consumer`), sorted.
    pub assignment: Vec<TopicPartition>,
    /// KIP-848: the partitions the coordinator means it to own once reconciled.
    pub target_assignment: Option<Vec<TopicPartition>>,
}

/// What [`Client::describe_group`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupDescription {
    /// The group id.
    pub group_id: String,
    /// Its protocol.
    pub group_type: GroupType,
    /// Its state.
    pub state: GroupState,
    /// The protocol type (classic groups; `consumer` for KIP-848 ones).
    pub protocol_type: String,
    /// The assignor (`uniform`, `range`, `cooperative-sticky`, ...); empty when none
    /// was chosen yet.
    pub assignor: String,
    /// KIP-848: the group epoch; classic groups have none on the wire.
    pub epoch: Option<i32>,
    /// KIP-848: the epoch of the target assignment.
    pub assignment_epoch: Option<i32>,
    /// Its members, by member id.
    pub members: Vec<GroupMember>,
    /// The broker coordinating it.
    pub coordinator: i32,
}

impl GroupDescription {
    /// The member owning `partition` now, if any.
    pub fn owner(&self, partition: &TopicPartition) -> Option<&GroupMember> {
        self.members.iter().find(|m| m.assignment.contains(partition))
    }
}

/// A partition's committed offset and lag, from [`Client::group_lag`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionLag {
    /// The partition.
    pub topic_partition: TopicPartition,
    /// The group's committed offset, `None` when nothing is committed.
    pub committed: Option<i64>,
    /// The metadata committed with it.
    pub metadata: Option<String>,
    /// The partition's end (high watermark), `None` when it could not be found.
    pub end_offset: Option<i64>,
    /// `end_offset - committed`; `None` when either is unknown.
    pub lag: Option<i64>,
    /// The member owning the partition now, with its client id and host.
    pub owner: Option<(String, String, String)>,
}

/// Where [`Client::plan_offset_reset`] moves the offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTo {
    /// The log start offset.
    Earliest,
    /// The log end offset (high watermark).
    Latest,
    /// The first offset whose timestamp is at or after this one (milliseconds since
    /// the epoch); the log end when none is.
    Timestamp(i64),
    /// This offset, clamped to the log's range.
    Offset(i64),
    /// The committed offset moved by this many (negative: back), clamped to the log's
    /// range; a partition with nothing committed is left out of the plan.
    ShiftBy(i64),
}

impl std::str::FromStr for ResetTo {
    type Err = Error;

    /// `earliest`, `latest`, `timestamp:MS`, `offset:N`, `shift:N` (N may be
    /// negative).
    fn from_str(s: &str) -> Result<ResetTo, Error> {
        let bad = || {
            Error::invalid_argument(format!(
                "offset reset {s:?}: expected earliest, latest, timestamp:MILLIS, offset:N or shift:N"
            ))
        };
        let number = |n: &str| n.trim().parse::<i64>().map_err(|_| bad());
        match s.split_once(':') {
            None if s.eq_ignore_ascii_case("earliest") => Ok(ResetTo::Earliest),
            None if s.eq_ignore_ascii_case("latest") => Ok(ResetTo::Latest),
            Some((k, n)) if k.eq_ignore_ascii_case("timestamp") => {
                let t = number(n)?;
                if t < 0 {
                    return Err(bad());
                }
                Ok(ResetTo::Timestamp(t))
            }
            Some((k, n)) if k.eq_ignore_ascii_case("offset") => {
                let o = number(n)?;
                if o < 0 {
                    return Err(bad());
                }
                Ok(ResetTo::Offset(o))
            }
            Some((k, n)) if k.eq_ignore_ascii_case("shift") => Ok(ResetTo::ShiftBy(number(n)?)),
            _ => Err(bad()),
        }
    }
}

/// Which partitions [`Client::plan_offset_reset`] moves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResetScope {
    /// Every partition the group has an offset committed for.
    AllCommitted,
    /// Every partition of these topics.
    Topics(Vec<String>),
    /// These partitions.
    Partitions(Vec<TopicPartition>),
}

/// A partition in an [`ResetPlan`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlannedReset {
    /// The partition.
    pub topic_partition: TopicPartition,
    /// The offset committed now, if any.
    pub current: Option<i64>,
    /// The offset the reset commits.
    pub new_offset: i64,
}

/// The new offsets of a group, computed by [`Client::plan_offset_reset`] and written by
/// [`Client::reset_offsets`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResetPlan {
    /// The group.
    pub group_id: String,
    /// The partitions, sorted.
    pub partitions: Vec<PlannedReset>,
}

/// Kafka's committed offset "none".
const NO_OFFSET: i64 = -1;

fn group_call_error(what: impl Into<String>, e: klife_connection::Error) -> Error {
    match e {
        klife_connection::Error::Broker { api, code, message, .. } => Error::broker(what, api, code, message),
        e => Error::from(e),
    }
}

fn sorted(mut partitions: Vec<TopicPartition>) -> Vec<TopicPartition> {
    partitions.sort();
    partitions.dedup();
    partitions
}

fn classic_member(
    protocol_type: &str,
    m: klife_protocol::messages::describe_groups_response::DescribedGroupMember,
) -> GroupMember {
    let consumer = protocol_type == "consumer";
    let subscription = consumer.then(|| Subscription::decode(m.member_metadata.clone()).ok()).flatten();
    let assignment = consumer.then(|| Assignment::decode(m.member_assignment.clone()).ok()).flatten();
    GroupMember {
        member_id: m.member_id,
        instance_id: m.group_instance_id,
        client_id: m.client_id,
        client_host: m.client_host,
        rack_id: subscription.as_ref().and_then(|s| s.rack_id.clone()),
        member_epoch: None,
        subscribed_topics: subscription.map(|s| s.topics).unwrap_or_default(),
        subscribed_regex: None,
        assignment: assignment.map(|a| a.partitions).unwrap_or_default(),
        target_assignment: None,
    }
}

fn consumer_partitions(
    a: &klife_protocol::messages::consumer_group_describe_response::Assignment,
) -> Vec<TopicPartition> {
    sorted(
        a.topic_partitions
            .iter()
            .flat_map(|t| {
                let name: Arc<str> = Arc::from(t.topic_name.as_str());
                t.partitions.iter().map(move |p| TopicPartition::new(name.clone(), *p))
            })
            .collect(),
    )
}

fn consumer_description(g: ConsumerDescribed, coordinator: i32) -> GroupDescription {
    let mut members: Vec<GroupMember> = g
        .members
        .into_iter()
        .map(|m| GroupMember {
            assignment: consumer_partitions(&m.assignment),
            target_assignment: Some(consumer_partitions(&m.target_assignment)),
            member_id: m.member_id,
            instance_id: m.instance_id,
            client_id: m.client_id,
            client_host: m.client_host,
            rack_id: m.rack_id,
            member_epoch: Some(m.member_epoch),
            subscribed_topics: m.subscribed_topic_names,
            subscribed_regex: m.subscribed_topic_regex,
        })
        .collect();
    members.sort_by(|a, b| a.member_id.cmp(&b.member_id));
    GroupDescription {
        group_id: g.group_id,
        group_type: GroupType::Consumer,
        state: GroupState::from_wire(&g.group_state),
        protocol_type: "consumer".to_owned(),
        assignor: g.assignor_name,
        epoch: Some(g.group_epoch),
        assignment_epoch: Some(g.assignment_epoch),
        members,
        coordinator,
    }
}

fn classic_description(g: ClassicDescribed, coordinator: i32) -> GroupDescription {
    let protocol_type = g.protocol_type;
    let mut members: Vec<GroupMember> = g.members.into_iter().map(|m| classic_member(&protocol_type, m)).collect();
    members.sort_by(|a, b| a.member_id.cmp(&b.member_id));
    GroupDescription {
        group_id: g.group_id,
        group_type: GroupType::Classic,
        state: GroupState::from_wire(&g.group_state),
        protocol_type,
        assignor: g.protocol_data,
        epoch: None,
        assignment_epoch: None,
        members,
        coordinator,
    }
}

fn not_found(group: &str, api: ApiKey) -> Error {
    Error::broker(
        format!("describing group {group:?}"),
        api,
        ErrorCode::GroupIdNotFound,
        Some("the group does not exist".to_owned()),
    )
}

/// Whether a per-partition or per-group code concerns where the request went (the
/// coordinator moved or is loading): the retry rule then sends it again.
fn coordinator_retry(code: ErrorCode) -> bool {
    matches!(code.retry_action(), RetryAction::FindCoordinator | RetryAction::Backoff)
}

impl Client {
    /// The node id of the group's coordinator, -1 if it cannot be found.
    async fn coordinator_of(&self, group: &str) -> i32 {
        self.cluster.coordinator(CoordinatorType::Group, group).await.map_or(-1, |c| c.node_id)
    }

    /// Every group in the cluster, sorted by group id: each broker is asked for the
    /// groups it coordinates (ListGroups). Fails when a broker cannot answer, naming it:
    /// a list without that broker's groups would look complete.
    pub async fn list_groups(&self) -> Result<Vec<GroupListing>, Error> {
        let metadata = self.cluster.refresh_metadata().await?;
        let nodes: Vec<i32> = metadata.brokers.keys().copied().collect();
        let mut tasks = tokio::task::JoinSet::new();
        for node in nodes {
            let cluster = self.cluster.clone();
            tasks.spawn(async move {
                let policy = cluster.retry_policy();
                let answer = cluster
                    .call(Target::Broker(node), &ListGroupsRequest::default(), &policy, |r| [(r.error_code, None)])
                    .await
                    .map_err(|e| group_call_error(format!("listing the groups of broker {node}"), e));
                (node, answer)
            });
        }
        let mut groups: BTreeMap<String, GroupListing> = BTreeMap::new();
        let mut failure = None;
        while let Some(joined) = tasks.join_next().await {
            let (node, answer) = joined.map_err(|e| Error::invalid_argument(format!("listing groups: {e}")))?;
            match answer {
                Ok(r) => {
                    for g in r.groups {
                        let group_type = if g.group_type.is_empty() {
                            GroupType::Classic
                        } else {
                            GroupType::from_wire(&g.group_type)
                        };
                        let state = (!g.group_state.is_empty()).then(|| GroupState::from_wire(&g.group_state));
                        groups.entry(g.group_id.clone()).or_insert(GroupListing {
                            group_id: g.group_id,
                            group_type,
                            protocol_type: g.protocol_type,
                            state,
                            coordinator: node,
                        });
                    }
                }
                Err(e) => failure = Some(e),
            }
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(groups.into_values().collect()),
        }
    }

    /// Describes a group: its type, state, assignor and members with their
    /// assignments. A KIP-848 group is described with ConsumerGroupDescribe, a classic
    /// one with DescribeGroups (also on brokers without KIP-848). A group that does not
    /// exist is an error for which [`Error::is_group_not_found`] is true.
    pub async fn describe_group(&self, group: &str) -> Result<GroupDescription, Error> {
        let policy = self.cluster.retry_policy();
        let target = Target::Coordinator(CoordinatorType::Group, group);
        let what = || format!("describing group {group:?}");
        // ConsumerGroupDescribe first, where the coordinator has it; GROUP_ID_NOT_FOUND
        // there may be a classic group, asked next.
        let consumer = self
            .cluster
            .call_with(
                target,
                ApiKey::ConsumerGroupDescribe,
                &policy,
                |conn| async move {
                    if !conn.versions().supports(ApiKey::ConsumerGroupDescribe) {
                        return Ok(None);
                    }
                    let request = ConsumerGroupDescribeRequest::default().with_group_ids(vec![group.to_owned()]);
                    let answer = conn.send(&request).await?;
                    Ok(Some(answer))
                },
                |r| {
                    r.iter()
                        .flat_map(|r| r.groups.iter())
                        .filter(|g| ErrorCode::from_code(g.error_code) != ErrorCode::GroupIdNotFound)
                        .map(|g| (g.error_code, g.error_message.clone()))
                        .collect::<Vec<_>>()
                },
            )
            .await
            .map_err(|e| group_call_error(what(), e))?;
        if let Some(answer) = consumer
            && let Some(g) = answer.groups.into_iter().find(|g| g.group_id == group)
            && ErrorCode::from_code(g.error_code) == ErrorCode::None
        {
            return Ok(consumer_description(g, self.coordinator_of(group).await));
        }
        let request = DescribeGroupsRequest::default().with_groups(vec![group.to_owned()]);
        let answer = self
            .cluster
            .call(target, &request, &policy, |r| {
                r.groups
                    .iter()
                    .filter(|g| ErrorCode::from_code(g.error_code) != ErrorCode::GroupIdNotFound)
                    .map(|g| (g.error_code, g.error_message.clone()))
                    .collect::<Vec<_>>()
            })
            .await
            .map_err(|e| group_call_error(what(), e))?;
        let g = answer
            .groups
            .into_iter()
            .find(|g| g.group_id == group)
            .ok_or_else(|| not_found(group, ApiKey::DescribeGroups))?;
        // Before v6, an unknown group is answered as Dead, with no protocol type.
        let unknown = ErrorCode::from_code(g.error_code) == ErrorCode::GroupIdNotFound
            || (GroupState::from_wire(&g.group_state) == GroupState::Dead
                && g.protocol_type.is_empty()
                && g.members.is_empty());
        if unknown {
            return Err(not_found(group, ApiKey::DescribeGroups));
        }
        Ok(classic_description(g, self.coordinator_of(group).await))
    }

    /// The group's committed offsets: every partition it committed for
    /// (OffsetFetch of all topics), sorted, as `(partition, offset, metadata)`.
    pub async fn group_committed_offsets(
        &self,
        group: &str,
    ) -> Result<Vec<(TopicPartition, i64, Option<String>)>, Error> {
        let policy = self.cluster.retry_policy();
        let target = Target::Coordinator(CoordinatorType::Group, group);
        let found = self
            .cluster
            .call_with(
                target,
                ApiKey::OffsetFetch,
                &policy,
                |conn| async move {
                    let version = conn.version_for(ApiKey::OffsetFetch, None)?;
                    // "Every topic" (null topics) came with v2.
                    if version < 2 {
                        return Err(klife_connection::Error::UnsupportedVersion {
                            broker: conn.broker().to_owned(),
                            api: ApiKey::OffsetFetch,
                            broker_versions: format!("up to {version}"),
                            client_versions: klife_protocol::VersionRange::new(2, 9),
                        });
                    }
                    let request = if version >= 8 {
                        OffsetFetchRequest::default()
                            .with_groups(vec![
                                OffsetFetchRequestGroup::default()
                                    .with_group_id(group.to_owned())
                                    .with_member_epoch(-1)
                                    .with_topics(None),
                            ])
                            .with_require_stable(true)
                    } else {
                        OffsetFetchRequest::default()
                            .with_group_id(group.to_owned())
                            .with_topics(None)
                            .with_require_stable(version >= 7)
                    };
                    let r = conn.send_version(&request, version).await?;
                    let mut out: Vec<(TopicPartition, i64, Option<String>, i16)> = Vec::new();
                    let mut top = r.error_code;
                    for g in &r.groups {
                        top = g.error_code;
                        for t in &g.topics {
                            let name: Arc<str> = Arc::from(t.name.as_str());
                            for p in &t.partitions {
                                out.push((
                                    TopicPartition::new(name.clone(), p.partition_index),
                                    p.committed_offset,
                                    p.metadata.clone(),
                                    p.error_code,
                                ));
                            }
                        }
                    }
                    for t in &r.topics {
                        let name: Arc<str> = Arc::from(t.name.as_str());
                        for p in &t.partitions {
                            out.push((
                                TopicPartition::new(name.clone(), p.partition_index),
                                p.committed_offset,
                                p.metadata.clone(),
                                p.error_code,
                            ));
                        }
                    }
                    Ok((top, out))
                },
                |(top, parts)| {
                    std::iter::once((*top, None)).chain(parts.iter().map(|p| (p.3, None))).collect::<Vec<_>>()
                },
            )
            .await
            .map_err(|e| group_call_error(format!("fetching the committed offsets of group {group:?}"), e))?;
        let mut offsets: Vec<(TopicPartition, i64, Option<String>)> = found
            .1
            .into_iter()
            .filter(|p| p.1 != NO_OFFSET)
            .map(|(tp, offset, metadata, _)| (tp, offset, metadata.filter(|m| !m.is_empty())))
            .collect();
        offsets.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(offsets)
    }

    /// The group's lag: for every partition it committed for or has assigned, the
    /// committed offset, the partition's end (high watermark) and their difference,
    /// with the member that owns it. A group that does not exist is an error for which
    /// [`Error::is_group_not_found`] is true.
    pub async fn group_lag(&self, group: &str) -> Result<Vec<PartitionLag>, Error> {
        let description = self.describe_group(group).await?;
        let committed = self.group_committed_offsets(group).await?;
        let mut rows: BTreeMap<TopicPartition, (Option<i64>, Option<String>)> =
            committed.into_iter().map(|(tp, o, m)| (tp, (Some(o), m))).collect();
        for m in &description.members {
            for tp in &m.assignment {
                rows.entry(tp.clone()).or_insert((None, None));
            }
        }
        let ends = self.list_offsets(rows.keys().map(|tp| (tp.clone(), OffsetSpec::Latest))).await?;
        Ok(rows
            .into_iter()
            .zip(ends)
            .map(|((topic_partition, (committed, metadata)), end)| {
                let end_offset = end.offset().ok().filter(|o| *o >= 0);
                let owner = description
                    .owner(&topic_partition)
                    .map(|m| (m.member_id.clone(), m.client_id.clone(), m.client_host.clone()));
                PartitionLag {
                    lag: committed.zip(end_offset).map(|(c, e)| (e - c).max(0)),
                    topic_partition,
                    committed,
                    metadata,
                    end_offset,
                    owner,
                }
            })
            .collect())
    }

    /// The offsets `spec` finds for each partition, in order; the first partition's
    /// failure fails the call.
    async fn offsets_of(&self, partitions: &[TopicPartition], spec: OffsetSpec) -> Result<Vec<i64>, Error> {
        self.list_offsets(partitions.iter().map(|tp| (tp.clone(), spec)))
            .await?
            .into_iter()
            .map(|p| p.result.map(|l| l.offset))
            .collect()
    }

    /// Fails unless the group has no members: offsets are only changed while nobody
    /// consumes. A group that does not exist passes.
    async fn ensure_inactive(&self, group: &str) -> Result<(), Error> {
        match self.describe_group(group).await {
            Ok(d) if !d.members.is_empty() => Err(Error::group_not_empty(group, d.members.len(), d.state.to_string())),
            Ok(_) => Ok(()),
            Err(e) if e.is_group_not_found() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Computes new offsets for the partitions `scope` names (a dry run: nothing is
    /// written). The group must have no members ([`Error::is_group_not_empty`]);
    /// it may not exist yet when `scope` names topics or partitions. Offsets are
    /// clamped to each partition's log (start to end), as `kafka-consumer-groups.sh`
    /// does.
    pub async fn plan_offset_reset(&self, group: &str, scope: ResetScope, to: ResetTo) -> Result<ResetPlan, Error> {
        self.ensure_inactive(group).await?;
        let committed: BTreeMap<TopicPartition, i64> =
            self.group_committed_offsets(group).await?.into_iter().map(|(tp, o, _)| (tp, o)).collect();
        let partitions: Vec<TopicPartition> = match scope {
            ResetScope::AllCommitted => {
                if committed.is_empty() {
                    return Err(Error::invalid_argument(format!(
                        "group {group:?} has no committed offsets: name the topics or partitions to reset"
                    )));
                }
                committed.keys().cloned().collect()
            }
            ResetScope::Topics(topics) => {
                if topics.is_empty() {
                    return Err(Error::invalid_argument("an offset reset needs at least one topic"));
                }
                let mut all = Vec::new();
                for t in &topics {
                    all.extend(self.partitions(t).await?.into_iter().map(|p| p.topic_partition));
                }
                sorted(all)
            }
            ResetScope::Partitions(partitions) => {
                if partitions.is_empty() {
                    return Err(Error::invalid_argument("an offset reset needs at least one partition"));
                }
                let topics: BTreeSet<&str> = partitions.iter().map(|tp| &*tp.topic).collect();
                for t in topics {
                    let count = self.partitions(t).await?.len();
                    if let Some(tp) = partitions
                        .iter()
                        .find(|tp| &*tp.topic == t && usize::try_from(tp.partition).map_or(true, |p| p >= count))
                    {
                        return Err(Error::broker(
                            format!("resetting the offsets of group {group:?}"),
                            ApiKey::Metadata,
                            ErrorCode::UnknownTopicOrPartition,
                            Some(format!("{tp} does not exist ({t} has {count} partitions)")),
                        ));
                    }
                }
                sorted(partitions)
            }
        };
        let starts = self.offsets_of(&partitions, OffsetSpec::Earliest).await?;
        let ends = self.offsets_of(&partitions, OffsetSpec::Latest).await?;
        let at_time = match to {
            ResetTo::Timestamp(t) => Some(self.offsets_of(&partitions, OffsetSpec::Timestamp(t)).await?),
            _ => None,
        };
        let mut planned = Vec::with_capacity(partitions.len());
        for (i, tp) in partitions.iter().enumerate() {
            let (start, end) = (starts[i], ends[i]);
            let current = committed.get(tp).copied();
            let new_offset = match to {
                ResetTo::Earliest => start,
                ResetTo::Latest => end,
                ResetTo::Timestamp(_) => match at_time.as_ref().map(|a| a[i]) {
                    Some(o) if o >= 0 => o,
                    _ => end,
                },
                ResetTo::Offset(o) => o.clamp(start, end),
                ResetTo::ShiftBy(n) => match current {
                    Some(c) => c.saturating_add(n).clamp(start, end),
                    None => continue,
                },
            };
            planned.push(PlannedReset { topic_partition: tp.clone(), current, new_offset });
        }
        Ok(ResetPlan { group_id: group.to_owned(), partitions: planned })
    }

    /// Writes a plan from [`plan_offset_reset`](Client::plan_offset_reset): one
    /// OffsetCommit as an admin (no member, generation -1), after checking again that
    /// the group has no members. Returns each partition's result, in the plan's order.
    pub async fn reset_offsets(&self, plan: &ResetPlan) -> Result<Vec<(TopicPartition, Result<(), Error>)>, Error> {
        let group = plan.group_id.as_str();
        self.ensure_inactive(group).await?;
        let mut topics: Vec<OffsetCommitRequestTopic> = Vec::new();
        for p in &plan.partitions {
            let partition = OffsetCommitRequestPartition::default()
                .with_partition_index(p.topic_partition.partition)
                .with_committed_offset(p.new_offset)
                .with_committed_leader_epoch(-1)
                .with_commit_timestamp(-1);
            match topics.last_mut() {
                Some(t) if *t.name == *p.topic_partition.topic => t.partitions.push(partition),
                _ => topics.push(
                    OffsetCommitRequestTopic::default()
                        .with_name(p.topic_partition.topic.to_string())
                        .with_partitions(vec![partition]),
                ),
            }
        }
        let request = OffsetCommitRequest::default()
            .with_group_id(group.to_owned())
            .with_generation_id_or_member_epoch(-1)
            .with_retention_time_ms(-1)
            .with_topics(topics);
        let what = format!("resetting the offsets of group {group:?}");
        let policy = self.cluster.retry_policy();
        let answer = self
            .cluster
            .call(Target::Coordinator(CoordinatorType::Group, group), &request, &policy, |r| {
                // Codes that concern the whole group go through the retry rule;
                // the rest are each partition's answer.
                r.topics
                    .iter()
                    .flat_map(|t| t.partitions.iter())
                    .map(|p| ErrorCode::from_code(p.error_code))
                    .filter(|c| coordinator_retry(*c))
                    .map(|c| (c.code(), None))
                    .collect::<Vec<_>>()
            })
            .await
            .map_err(|e| group_call_error(what.clone(), e))?;
        Ok(plan
            .partitions
            .iter()
            .map(|p| {
                let tp = &p.topic_partition;
                let code = answer
                    .topics
                    .iter()
                    .filter(|t| *t.name == *tp.topic)
                    .flat_map(|t| t.partitions.iter())
                    .find(|a| a.partition_index == tp.partition)
                    .map(|a| ErrorCode::from_code(a.error_code));
                let result = match code {
                    Some(ErrorCode::None) => Ok(()),
                    // The group gained a member since the check.
                    Some(ErrorCode::UnknownMemberId | ErrorCode::IllegalGeneration | ErrorCode::StaleMemberEpoch) => {
                        Err(Error::group_not_empty(group, 0, "active".to_owned()))
                    }
                    Some(code) => Err(Error::broker(format!("{what}: {tp}"), ApiKey::OffsetCommit, code, None)),
                    None => Err(Error::invalid_argument(format!("{what}: the coordinator did not answer for {tp}"))),
                };
                (tp.clone(), result)
            })
            .collect())
    }

    /// Deletes groups that have no members, with their committed offsets
    /// (DeleteGroups). Returns one result per group, in the order given: a group with
    /// members is refused ([`Error::is_group_not_empty`]), an unknown one too
    /// ([`Error::is_group_not_found`]).
    pub async fn delete_groups<S: AsRef<str>>(&self, groups: &[S]) -> Result<Vec<(String, Result<(), Error>)>, Error> {
        let policy = self.cluster.retry_policy();
        let mut out = Vec::with_capacity(groups.len());
        for group in groups {
            let group = group.as_ref();
            let request = DeleteGroupsRequest::default().with_groups_names(vec![group.to_owned()]);
            let what = format!("deleting group {group:?}");
            let answer = self
                .cluster
                .call(Target::Coordinator(CoordinatorType::Group, group), &request, &policy, |r| {
                    r.results
                        .iter()
                        .map(|g| ErrorCode::from_code(g.error_code))
                        .filter(|c| coordinator_retry(*c))
                        .map(|c| (c.code(), None))
                        .collect::<Vec<_>>()
                })
                .await;
            let result = match answer {
                Ok(r) => {
                    match r.results.iter().find(|g| g.group_id == group).map(|g| ErrorCode::from_code(g.error_code)) {
                        Some(ErrorCode::None) => Ok(()),
                        Some(code) => Err(Error::broker(what, ApiKey::DeleteGroups, code, None)),
                        None => Err(Error::invalid_argument(format!("{what}: the coordinator did not answer for it"))),
                    }
                }
                Err(e @ klife_connection::Error::Closed) => return Err(e.into()),
                Err(e) => Err(group_call_error(what, e)),
            };
            out.push((group.to_owned(), result));
        }
        Ok(out)
    }

    /// Deletes the group's committed offsets of these partitions (OffsetDelete).
    /// Returns one result per partition, in the order given: a partition of a topic
    /// the group's members subscribe to is refused (GROUP_SUBSCRIBED_TO_TOPIC). An
    /// unknown group fails the call ([`Error::is_group_not_found`]).
    pub async fn delete_group_offsets(
        &self,
        group: &str,
        partitions: &[TopicPartition],
    ) -> Result<Vec<(TopicPartition, Result<(), Error>)>, Error> {
        if partitions.is_empty() {
            return Err(Error::invalid_argument("deleting offsets needs at least one partition"));
        }
        let mut topics: Vec<OffsetDeleteRequestTopic> = Vec::new();
        for tp in sorted(partitions.to_vec()) {
            let p = OffsetDeleteRequestPartition::default().with_partition_index(tp.partition);
            match topics.last_mut() {
                Some(t) if *t.name == *tp.topic => t.partitions.push(p),
                _ => topics
                    .push(OffsetDeleteRequestTopic::default().with_name(tp.topic.to_string()).with_partitions(vec![p])),
            }
        }
        let request = OffsetDeleteRequest::default().with_group_id(group.to_owned()).with_topics(topics);
        let what = format!("deleting the committed offsets of group {group:?}");
        let policy = self.cluster.retry_policy();
        let answer = self
            .cluster
            .call(Target::Coordinator(CoordinatorType::Group, group), &request, &policy, |r| [(r.error_code, None)])
            .await
            .map_err(|e| group_call_error(what.clone(), e))?;
        Ok(partitions
            .iter()
            .map(|tp| {
                let code = answer
                    .topics
                    .iter()
                    .filter(|t| *t.name == *tp.topic)
                    .flat_map(|t| t.partitions.iter())
                    .find(|p| p.partition_index == tp.partition)
                    .map(|p| ErrorCode::from_code(p.error_code));
                let result = match code {
                    Some(ErrorCode::None) => Ok(()),
                    Some(code) => Err(Error::broker(format!("{what}: {tp}"), ApiKey::OffsetDelete, code, None)),
                    None => Err(Error::invalid_argument(format!("{what}: the coordinator did not answer for {tp}"))),
                };
                (tp.clone(), result)
            })
            .collect())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn reset_specs_parse_and_bad_ones_say_what_is_allowed() {
        let ok = [
            ("earliest", ResetTo::Earliest),
            ("LATEST", ResetTo::Latest),
            ("timestamp:1700000000000", ResetTo::Timestamp(1_700_000_000_000)),
            ("offset:42", ResetTo::Offset(42)),
            ("shift:-5", ResetTo::ShiftBy(-5)),
            ("shift:3", ResetTo::ShiftBy(3)),
        ];
        for (text, want) in ok {
            assert_eq!(text.parse::<ResetTo>().unwrap(), want, "{text}");
        }
        for bad in ["", "first", "offset:-1", "offset:x", "timestamp:-3", "shift:", "earliest:1", "offset"] {
            let e = bad.parse::<ResetTo>().unwrap_err();
            assert!(e.is_invalid_argument(), "{bad}");
            assert_eq!(
                e.to_string(),
                format!(
                    "invalid argument: offset reset {bad:?}: expected earliest, latest, timestamp:MILLIS, offset:N or shift:N"
                )
            );
        }
    }

    #[test]
    fn states_and_types_keep_kafkas_spelling() {
        for s in ["Empty", "Stable", "PreparingRebalance", "CompletingRebalance", "Assigning", "Reconciling", "Dead"] {
            assert_eq!(GroupState::from_wire(s).to_string(), s);
            assert_eq!(GroupState::from_wire(&s.to_uppercase()).to_string(), s);
        }
        assert_eq!(GroupState::from_wire("Odd"), GroupState::Other("Odd".into()));
        for t in ["consumer", "classic", "share", "streams"] {
            assert_eq!(GroupType::from_wire(t).to_string(), t);
        }
        assert_eq!(GroupType::from_wire("Other"), GroupType::Other("Other".into()));
    }
}
