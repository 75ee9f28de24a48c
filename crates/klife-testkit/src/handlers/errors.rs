//! Answers carrying an injected error code, built from the request alone: the code goes
//! where each API carries errors (every partition of Produce, Fetch, ListOffsets,
//! OffsetCommit, TxnOffsetCommit and AddPartitionsToTxn; every topic of Metadata and the
//! topic admin APIs; every key of a batched FindCoordinator; every group of
//! DescribeGroups, ConsumerGroupDescribe and DeleteGroups; the top level elsewhere, group
//! membership APIs, ListGroups and OffsetDelete included).

use bytes::Bytes;
use klife_protocol::messages::add_partitions_to_txn_response::{
    AddPartitionsToTxnPartitionResult, AddPartitionsToTxnTopicResult,
};
use klife_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use klife_protocol::messages::create_topics_response::CreatableTopicResult;
use klife_protocol::messages::delete_groups_response::DeletableGroupResult;
use klife_protocol::messages::delete_topics_response::DeletableTopicResult;
use klife_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use klife_protocol::messages::find_coordinator_response::Coordinator;
use klife_protocol::messages::list_offsets_response::{ListOffsetsPartitionResponse, ListOffsetsTopicResponse};
use klife_protocol::messages::metadata_response::MetadataResponseTopic;
use klife_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use klife_protocol::messages::offset_fetch_response::OffsetFetchResponseGroup;
use klife_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use klife_protocol::messages::txn_offset_commit_response::{
    TxnOffsetCommitResponsePartition, TxnOffsetCommitResponseTopic,
};
use klife_protocol::messages::*;
use klife_protocol::messages::{consumer_group_describe_response, describe_groups_response};
use klife_protocol::{AnyRequest, ErrorCode};

use super::{Ctx, Reply};
use crate::state::State;

/// The answer to `request` with `code` injected, or `None` for an API without one.
pub(crate) fn error_response(state: &State, ctx: &Ctx, request: &AnyRequest, code: ErrorCode) -> Reply {
    let c = code.code();
    let v = ctx.version;
    match request {
        AnyRequest::Produce(r) => {
            if r.acks == 0 {
                return Reply::Close("an injected error on a Produce request with acks = 0");
            }
            let responses = r
                .topic_data
                .iter()
                .map(|t| {
                    let ps = t
                        .partition_data
                        .iter()
                        .map(|p| {
                            PartitionProduceResponse::default()
                                .with_index(p.index)
                                .with_error_code(c)
                                .with_base_offset(-1)
                        })
                        .collect();
                    TopicProduceResponse::default().with_name(t.name.clone()).with_partition_responses(ps)
                })
                .collect();
            ProduceResponse::default().with_responses(responses).into()
        }
        AnyRequest::Fetch(r) => {
            let responses = r
                .topics
                .iter()
                .map(|t| {
                    let ps = t
                        .partitions
                        .iter()
                        .map(|p| {
                            PartitionData::default()
                                .with_partition_index(p.partition)
                                .with_error_code(c)
                                .with_high_watermark(-1)
                                .with_records(Some(Bytes::new()))
                        })
                        .collect();
                    let topic = FetchableTopicResponse::default().with_partitions(ps);
                    if v >= 13 { topic.with_topic_id(t.topic_id) } else { topic.with_topic(t.topic.clone()) }
                })
                .collect();
            FetchResponse::default().with_responses(responses).into()
        }
        AnyRequest::ListOffsets(r) => {
            let topics = r
                .topics
                .iter()
                .map(|t| {
                    let ps = t
                        .partitions
                        .iter()
                        .map(|p| {
                            ListOffsetsPartitionResponse::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(c)
                        })
                        .collect();
                    ListOffsetsTopicResponse::default().with_name(t.name.clone()).with_partitions(ps)
                })
                .collect();
            ListOffsetsResponse::default().with_topics(topics).into()
        }
        AnyRequest::Metadata(r) => {
            let names: Vec<Option<String>> = match &r.topics {
                Some(ts) if !ts.is_empty() || v > 0 => ts.iter().map(|t| t.name.clone()).collect(),
                _ => state.topics.keys().map(|n| Some(n.clone())).collect(),
            };
            let topics =
                names.into_iter().map(|n| MetadataResponseTopic::default().with_name(n).with_error_code(c)).collect();
            let mut resp = MetadataResponse::default().with_topics(topics);
            if v >= 2 {
                resp = resp.with_cluster_id(Some(state.config.cluster_id.clone()));
            }
            if v >= 1 {
                resp = resp.with_controller_id(state.controller());
            }
            resp.into()
        }
        AnyRequest::OffsetCommit(r) => {
            let topics = r
                .topics
                .iter()
                .map(|t| {
                    let ps = t
                        .partitions
                        .iter()
                        .map(|p| {
                            OffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(c)
                        })
                        .collect();
                    OffsetCommitResponseTopic::default().with_name(t.name.clone()).with_partitions(ps)
                })
                .collect();
            OffsetCommitResponse::default().with_topics(topics).into()
        }
        AnyRequest::OffsetFetch(r) => {
            if v >= 8 {
                let groups = r
                    .groups
                    .iter()
                    .map(|g| OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone()).with_error_code(c))
                    .collect();
                OffsetFetchResponse::default().with_groups(groups).into()
            } else {
                OffsetFetchResponse::default().with_error_code(c).into()
            }
        }
        AnyRequest::FindCoordinator(r) => {
            if v >= 4 {
                let cs = r
                    .coordinator_keys
                    .iter()
                    .map(|k| {
                        Coordinator::default().with_key(k.clone()).with_node_id(-1).with_port(-1).with_error_code(c)
                    })
                    .collect();
                FindCoordinatorResponse::default().with_coordinators(cs).into()
            } else {
                FindCoordinatorResponse::default().with_error_code(c).with_node_id(-1).with_port(-1).into()
            }
        }
        AnyRequest::CreateTopics(r) => {
            let ts = r
                .topics
                .iter()
                .map(|t| CreatableTopicResult::default().with_name(t.name.clone()).with_error_code(c))
                .collect();
            CreateTopicsResponse::default().with_topics(ts).into()
        }
        AnyRequest::DeleteTopics(r) => {
            let ts: Vec<DeletableTopicResult> = if v >= 6 {
                r.topics
                    .iter()
                    .map(|t| {
                        DeletableTopicResult::default()
                            .with_name(t.name.clone())
                            .with_topic_id(t.topic_id)
                            .with_error_code(c)
                    })
                    .collect()
            } else {
                r.topic_names
                    .iter()
                    .map(|n| DeletableTopicResult::default().with_name(Some(n.clone())).with_error_code(c))
                    .collect()
            };
            DeleteTopicsResponse::default().with_responses(ts).into()
        }
        AnyRequest::CreatePartitions(r) => {
            let ts = r
                .topics
                .iter()
                .map(|t| CreatePartitionsTopicResult::default().with_name(t.name.clone()).with_error_code(c))
                .collect();
            CreatePartitionsResponse::default().with_results(ts).into()
        }
        AnyRequest::InitProducerId(_) => {
            InitProducerIdResponse::default().with_error_code(c).with_producer_id(-1).with_producer_epoch(-1).into()
        }
        AnyRequest::AddPartitionsToTxn(r) => {
            if v >= 4 {
                AddPartitionsToTxnResponse::default().with_error_code(c).into()
            } else {
                let ts = r
                    .v3_and_below_topics
                    .iter()
                    .map(|t| {
                        let ps = t
                            .partitions
                            .iter()
                            .map(|p| {
                                AddPartitionsToTxnPartitionResult::default()
                                    .with_partition_index(*p)
                                    .with_partition_error_code(c)
                            })
                            .collect();
                        AddPartitionsToTxnTopicResult::default().with_name(t.name.clone()).with_results_by_partition(ps)
                    })
                    .collect();
                AddPartitionsToTxnResponse::default().with_results_by_topic_v3_and_below(ts).into()
            }
        }
        AnyRequest::AddOffsetsToTxn(_) => AddOffsetsToTxnResponse::default().with_error_code(c).into(),
        AnyRequest::EndTxn(_) => EndTxnResponse::default().with_error_code(c).into(),
        AnyRequest::TxnOffsetCommit(r) => {
            let topics = r
                .topics
                .iter()
                .map(|t| {
                    let ps = t
                        .partitions
                        .iter()
                        .map(|p| {
                            TxnOffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(c)
                        })
                        .collect();
                    TxnOffsetCommitResponseTopic::default().with_name(t.name.clone()).with_partitions(ps)
                })
                .collect();
            TxnOffsetCommitResponse::default().with_topics(topics).into()
        }
        AnyRequest::JoinGroup(r) => crate::coordinator::classic::join_error_at(code, &r.member_id, v).into(),
        AnyRequest::SyncGroup(_) => SyncGroupResponse::default().with_error_code(c).into(),
        AnyRequest::Heartbeat(_) => HeartbeatResponse::default().with_error_code(c).into(),
        AnyRequest::LeaveGroup(_) => LeaveGroupResponse::default().with_error_code(c).into(),
        AnyRequest::ConsumerGroupHeartbeat(_) => {
            ConsumerGroupHeartbeatResponse::default().with_error_code(c).with_member_epoch(-1).into()
        }
        AnyRequest::ListGroups(_) => ListGroupsResponse::default().with_error_code(c).into(),
        AnyRequest::DescribeGroups(r) => {
            let groups = r
                .groups
                .iter()
                .map(|g| {
                    describe_groups_response::DescribedGroup::default().with_group_id(g.clone()).with_error_code(c)
                })
                .collect();
            DescribeGroupsResponse::default().with_groups(groups).into()
        }
        AnyRequest::ConsumerGroupDescribe(r) => {
            let groups = r
                .group_ids
                .iter()
                .map(|g| {
                    consumer_group_describe_response::DescribedGroup::default()
                        .with_group_id(g.clone())
                        .with_error_code(c)
                })
                .collect();
            ConsumerGroupDescribeResponse::default().with_groups(groups).into()
        }
        AnyRequest::DeleteGroups(r) => {
            let results = r
                .groups_names
                .iter()
                .map(|g| DeletableGroupResult::default().with_group_id(g.clone()).with_error_code(c))
                .collect();
            DeleteGroupsResponse::default().with_results(results).into()
        }
        AnyRequest::OffsetDelete(_) => OffsetDeleteResponse::default().with_error_code(c).into(),
        AnyRequest::ApiVersions(_) => ApiVersionsResponse::default().with_error_code(c).into(),
        AnyRequest::SaslHandshake(_) => SaslHandshakeResponse::default().with_error_code(c).into(),
        AnyRequest::SaslAuthenticate(_) => SaslAuthenticateResponse::default().with_error_code(c).into(),
        AnyRequest::DescribeCluster(_) => DescribeClusterResponse::default().with_error_code(c).into(),
        _ => Reply::Close("an injected error for an API this broker does not implement"),
    }
}
