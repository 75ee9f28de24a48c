//! Metadata, DescribeCluster, topic administration and ListOffsets.

use std::collections::BTreeMap;

use klife_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use klife_protocol::messages::create_topics_request::CreatableTopic;
use klife_protocol::messages::create_topics_response::{CreatableTopicConfigs, CreatableTopicResult};
use klife_protocol::messages::delete_topics_response::DeletableTopicResult;
use klife_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use klife_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use klife_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use klife_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse, DeleteTopicsRequest,
    DeleteTopicsResponse, DescribeClusterRequest, DescribeClusterResponse, ListOffsetsRequest, ListOffsetsResponse,
    MetadataRequest, MetadataResponse,
};
use klife_protocol::{ErrorCode, Uuid};

use super::{Ctx, check_leader_epoch};
use crate::log::Isolation;
use crate::state::{State, Topic};

/// Kafka's longest topic name.
const MAX_TOPIC_NAME: usize = 249;

pub(crate) fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() || name == "." || name == ".." {
        return Err(format!("topic name {name:?} is illegal"));
    }
    if name.len() > MAX_TOPIC_NAME {
        return Err(format!("topic name is longer than {MAX_TOPIC_NAME} characters"));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))) {
        return Err(format!("topic name {name:?} contains {c:?}: only ASCII alphanumerics, '.', '_' and '-'"));
    }
    Ok(())
}

fn brokers(state: &State) -> Vec<MetadataResponseBroker> {
    state
        .brokers
        .iter()
        .filter(|(_, b)| b.up)
        .map(|(id, b)| {
            MetadataResponseBroker::default()
                .with_node_id(*id)
                .with_host("127.0.0.1".into())
                .with_port(i32::from(b.port))
        })
        .collect()
}

fn topic_metadata(state: &State, ctx: &Ctx, name: &str, topic: &Topic) -> MetadataResponseTopic {
    let partitions = topic
        .partitions
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let isr: Vec<i32> = p.replicas.iter().copied().filter(|r| state.is_up(*r)).collect();
            let offline: Vec<i32> = p.replicas.iter().copied().filter(|r| !state.is_up(*r)).collect();
            let leader_up = state.is_up(p.leader);
            let mut m = MetadataResponsePartition::default()
                .with_error_code(if leader_up { 0 } else { ErrorCode::LeaderNotAvailable.code() })
                .with_partition_index(i32::try_from(i).unwrap_or(i32::MAX))
                .with_leader_id(if leader_up { p.leader } else { -1 })
                .with_replica_nodes(p.replicas.clone())
                .with_isr_nodes(isr);
            if ctx.version >= 7 {
                m = m.with_leader_epoch(p.leader_epoch);
            }
            if ctx.version >= 5 {
                m = m.with_offline_replicas(offline);
            }
            m
        })
        .collect();
    let mut t = MetadataResponseTopic::default().with_name(Some(name.to_owned())).with_partitions(partitions);
    if ctx.version >= 10 {
        t = t.with_topic_id(topic.id);
    }
    t
}

fn unknown_topic(ctx: &Ctx, name: Option<String>, id: Uuid, code: ErrorCode) -> MetadataResponseTopic {
    let mut t = MetadataResponseTopic::default().with_error_code(code.code()).with_name(name);
    if ctx.version >= 10 {
        t = t.with_topic_id(id);
    }
    t
}

pub(crate) fn metadata(state: &mut State, ctx: &Ctx, r: MetadataRequest) -> MetadataResponse {
    let auto_create = state.config.auto_create_topics && (ctx.version < 4 || r.allow_auto_topic_creation);
    let requested = match r.topics {
        None => None,
        Some(t) if t.is_empty() && ctx.version == 0 => None,
        Some(t) => Some(t),
    };
    let topics = match requested {
        None => state.topics.iter().map(|(name, t)| topic_metadata(state, ctx, name, t)).collect::<Vec<_>>(),
        Some(list) => {
            let mut out = Vec::new();
            for t in list {
                match t.name {
                    Some(name) if !name.is_empty() => {
                        if !state.topics.contains_key(&name) && auto_create && validate_topic_name(&name).is_ok() {
                            let partitions = state.config.default_partitions;
                            let rf = state.default_replication_factor();
                            let assignment = state.assign(partitions, rf);
                            state.create_topic(&name, assignment, rf, BTreeMap::new());
                        }
                        match state.topics.get(&name) {
                            Some(topic) => out.push(topic_metadata(state, ctx, &name, topic)),
                            None => out.push(unknown_topic(
                                ctx,
                                Some(name.clone()),
                                Uuid::default(),
                                if validate_topic_name(&name).is_ok() {
                                    ErrorCode::UnknownTopicOrPartition
                                } else {
                                    ErrorCode::InvalidTopicException
                                },
                            )),
                        }
                    }
                    _ => match state.topic_by_id(t.topic_id) {
                        Some((name, topic)) => out.push(topic_metadata(state, ctx, name, topic)),
                        None => out.push(unknown_topic(ctx, None, t.topic_id, ErrorCode::UnknownTopicId)),
                    },
                }
            }
            out
        }
    };
    let mut resp = MetadataResponse::default().with_brokers(brokers(state)).with_topics(topics);
    if ctx.version >= 1 {
        resp = resp.with_controller_id(state.controller());
    }
    if ctx.version >= 2 {
        resp = resp.with_cluster_id(Some(state.config.cluster_id.clone()));
    }
    resp
}

pub(crate) fn describe_cluster(state: &mut State, _ctx: &Ctx, _r: DescribeClusterRequest) -> DescribeClusterResponse {
    let brokers = state
        .brokers
        .iter()
        .filter(|(_, b)| b.up)
        .map(|(id, b)| {
            DescribeClusterBroker::default()
                .with_broker_id(*id)
                .with_host("127.0.0.1".into())
                .with_port(i32::from(b.port))
        })
        .collect();
    DescribeClusterResponse::default()
        .with_cluster_id(state.config.cluster_id.clone())
        .with_controller_id(state.controller())
        .with_brokers(brokers)
}

/// Replica lists per partition, and the replication factor.
type Plan = (Vec<Vec<i32>>, i16);

/// Why a CreateTopics entry is refused, or its assignment and replication factor.
fn plan_topic(state: &mut State, t: &CreatableTopic) -> Result<Plan, (ErrorCode, String)> {
    validate_topic_name(&t.name).map_err(|m| (ErrorCode::InvalidTopicException, m))?;
    if state.topics.contains_key(&t.name) {
        return Err((ErrorCode::TopicAlreadyExists, format!("Topic '{}' already exists.", t.name)));
    }
    for c in &t.configs {
        if c.name == "max.message.bytes" && c.value.as_deref().and_then(|v| v.parse::<usize>().ok()).is_none() {
            return Err((ErrorCode::InvalidConfig, format!("invalid value {:?} for max.message.bytes", c.value)));
        }
    }
    let live = state.live_brokers();
    if !t.assignments.is_empty() {
        if t.num_partitions != -1 || t.replication_factor != -1 {
            return Err((
                ErrorCode::InvalidRequest,
                "both replica assignments and partition count / replication factor are set".into(),
            ));
        }
        let mut assignments = t.assignments.clone();
        assignments.sort_by_key(|a| a.partition_index);
        let mut out = Vec::new();
        for (i, a) in assignments.iter().enumerate() {
            if usize::try_from(a.partition_index).ok() != Some(i)
                || a.broker_ids.is_empty()
                || a.broker_ids.iter().any(|b| !state.brokers.contains_key(b))
            {
                return Err((ErrorCode::InvalidReplicaAssignment, format!("invalid assignment {a:?}")));
            }
            out.push(a.broker_ids.clone());
        }
        let rf = i16::try_from(out[0].len()).unwrap_or(i16::MAX);
        return Ok((out, rf));
    }
    let partitions = match t.num_partitions {
        -1 => state.config.default_partitions,
        n if n > 0 => n,
        n => return Err((ErrorCode::InvalidPartitions, format!("number of partitions must be larger than 0: {n}"))),
    };
    let rf = match t.replication_factor {
        -1 => state.default_replication_factor(),
        n if n > 0 => n,
        n => {
            return Err((
                ErrorCode::InvalidReplicationFactor,
                format!("replication factor must be larger than 0: {n}"),
            ));
        }
    };
    if usize::try_from(rf).unwrap_or(usize::MAX) > live.len() {
        return Err((
            ErrorCode::InvalidReplicationFactor,
            format!("replication factor: {rf} larger than available brokers: {}", live.len()),
        ));
    }
    Ok((state.assign(partitions, rf), rf))
}

pub(crate) fn create_topics(state: &mut State, ctx: &Ctx, r: CreateTopicsRequest) -> CreateTopicsResponse {
    let mut results = Vec::new();
    for t in &r.topics {
        let mut result = CreatableTopicResult::default().with_name(t.name.clone());
        match plan_topic(state, t) {
            Err((code, message)) => {
                result = result.with_error_code(code.code()).with_error_message(Some(message));
            }
            Ok((assignment, rf)) => {
                let partitions = i32::try_from(assignment.len()).unwrap_or(i32::MAX);
                let configs: BTreeMap<String, String> =
                    t.configs.iter().filter_map(|c| Some((c.name.clone(), c.value.clone()?))).collect();
                let id = if r.validate_only {
                    Uuid::default()
                } else {
                    state.create_topic(&t.name, assignment, rf, configs.clone())
                };
                if ctx.version >= 7 {
                    result = result.with_topic_id(id);
                }
                if ctx.version >= 5 {
                    let configs = configs
                        .into_iter()
                        .map(|(k, v)| CreatableTopicConfigs::default().with_name(k).with_value(Some(v)))
                        .collect();
                    result =
                        result.with_num_partitions(partitions).with_replication_factor(rf).with_configs(Some(configs));
                }
            }
        }
        results.push(result);
    }
    CreateTopicsResponse::default().with_topics(results)
}

pub(crate) fn delete_topics(state: &mut State, ctx: &Ctx, r: DeleteTopicsRequest) -> DeleteTopicsResponse {
    let targets: Vec<(Option<String>, Uuid)> = if ctx.version >= 6 {
        r.topics.into_iter().map(|t| (t.name, t.topic_id)).collect()
    } else {
        r.topic_names.into_iter().map(|n| (Some(n), Uuid::default())).collect()
    };
    let mut responses = Vec::new();
    for (name, id) in targets {
        let found = match &name {
            Some(n) => state.topics.contains_key(n).then(|| n.clone()),
            None => state.topic_by_id(id).map(|(n, _)| n.clone()),
        };
        let mut result = DeletableTopicResult::default().with_name(name.clone().or_else(|| found.clone()));
        match found {
            Some(n) => {
                let removed = state.topics.remove(&n);
                state.txns.forget_topic(&n);
                if ctx.version >= 6 {
                    result = result.with_topic_id(removed.map_or(id, |t| t.id));
                }
                tracing::debug!(topic = n, "topic deleted");
            }
            None => {
                let code = if name.is_some() { ErrorCode::UnknownTopicOrPartition } else { ErrorCode::UnknownTopicId };
                result = result.with_error_code(code.code());
                if ctx.version >= 6 {
                    result = result.with_topic_id(id);
                }
            }
        }
        responses.push(result);
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

pub(crate) fn create_partitions(state: &mut State, _ctx: &Ctx, r: CreatePartitionsRequest) -> CreatePartitionsResponse {
    let mut results = Vec::new();
    for t in r.topics {
        let result = CreatePartitionsTopicResult::default().with_name(t.name.clone());
        let Some(topic) = state.topics.get(&t.name) else {
            results.push(result.with_error_code(ErrorCode::UnknownTopicOrPartition.code()));
            continue;
        };
        let current = i32::try_from(topic.partitions.len()).unwrap_or(i32::MAX);
        let rf = topic.replication_factor;
        if t.count <= current {
            let message = format!(
                "topic currently has {current} partitions, which is higher than or equal to the requested {}",
                t.count
            );
            results.push(result.with_error_code(ErrorCode::InvalidPartitions.code()).with_error_message(Some(message)));
            continue;
        }
        let added = t.count - current;
        // A null list, or (leniently) an empty one, lets the cluster place the replicas.
        let assignment = match t.assignments.as_ref().filter(|a| !a.is_empty()) {
            Some(a)
                if a.len() != usize::try_from(added).unwrap_or(0)
                    || a.iter().any(|a| a.broker_ids.iter().any(|b| !state.brokers.contains_key(b))) =>
            {
                results.push(
                    result
                        .with_error_code(ErrorCode::InvalidReplicaAssignment.code())
                        .with_error_message(Some("the assignments do not match the new partitions".into())),
                );
                continue;
            }
            Some(a) => a.iter().map(|a| a.broker_ids.clone()).collect(),
            None => state.assign(added, rf),
        };
        if !r.validate_only {
            let new: Vec<_> = assignment.into_iter().map(|replicas| state.new_partition(replicas)).collect();
            if let Some(topic) = state.topics.get_mut(&t.name) {
                topic.partitions.extend(new);
            }
        }
        results.push(result);
    }
    CreatePartitionsResponse::default().with_results(results)
}

pub(crate) fn list_offsets(state: &mut State, ctx: &Ctx, r: ListOffsetsRequest) -> ListOffsetsResponse {
    let isolation = Isolation::from_wire(r.isolation_level);
    let topics = r
        .topics
        .into_iter()
        .map(|t| {
            let partitions = t
                .partitions
                .into_iter()
                .map(|p| {
                    let mut out = ListOffsetsPartitionResponse::default().with_partition_index(p.partition_index);
                    let Some(part) = state.partition(&t.name, p.partition_index) else {
                        return out.with_error_code(ErrorCode::UnknownTopicOrPartition.code());
                    };
                    if part.leader != ctx.broker {
                        return out.with_error_code(ErrorCode::NotLeaderOrFollower.code());
                    }
                    let epoch_error = check_leader_epoch(p.current_leader_epoch, part.leader_epoch);
                    if epoch_error != ErrorCode::None {
                        return out.with_error_code(epoch_error.code());
                    }
                    let log = &part.log;
                    let latest = match isolation {
                        Isolation::ReadUncommitted => log.high_watermark(),
                        Isolation::ReadCommitted => log.last_stable_offset(),
                    };
                    let found = match p.timestamp {
                        -1 => Some((latest, -1)),
                        -2 | -4 => Some((log.log_start_offset(), -1)),
                        -3 if ctx.version >= 7 => log.max_timestamp(),
                        -5 if ctx.version >= 9 => Some((-1, -1)),
                        ts if ts >= 0 => log.offset_for_timestamp(ts).filter(|(o, _)| *o < latest),
                        _ => {
                            return out.with_error_code(ErrorCode::UnsupportedVersion.code());
                        }
                    };
                    let (offset, timestamp) = found.unwrap_or((-1, -1));
                    out = out.with_offset(offset).with_timestamp(timestamp);
                    if ctx.version >= 4 {
                        out = out.with_leader_epoch(if offset >= 0 { part.leader_epoch } else { -1 });
                    }
                    out
                })
                .collect();
            ListOffsetsTopicResponse::default().with_name(t.name).with_partitions(partitions)
        })
        .collect();
    ListOffsetsResponse::default().with_topics(topics)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("orders.v1_x-2").is_ok());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name("..").is_err());
        assert!(validate_topic_name("a b").is_err());
        assert!(validate_topic_name(&"x".repeat(250)).is_err());
    }
}
