//! A snapshot of the cluster's metadata: brokers, topics, partitions, leaders and
//! leader epochs. Plain data, built from Metadata responses.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use klife_protocol::messages::MetadataResponse;
use klife_protocol::{ErrorCode, Uuid};

/// A broker as the metadata describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerInfo {
    /// Node id.
    pub node_id: i32,
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Rack, if configured.
    pub rack: Option<String>,
}

impl BrokerInfo {
    /// `node@host:port`, the label used in errors and logs.
    pub fn label(&self) -> String {
        format!("{}@{}:{}", self.node_id, self.host, self.port)
    }
}

/// One partition of a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    /// Partition index.
    pub partition: i32,
    /// Leader's node id, or -1 when there is none.
    pub leader: i32,
    /// The leader epoch (-1 when the broker does not report it).
    pub leader_epoch: i32,
    /// Replica node ids.
    pub replicas: Vec<i32>,
    /// In-sync replica node ids.
    pub isr: Vec<i32>,
    /// Offline replica node ids.
    pub offline_replicas: Vec<i32>,
    /// The partition's error in the metadata answer (for example
    /// LEADER_NOT_AVAILABLE during an election).
    pub error: ErrorCode,
}

/// One topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicInfo {
    /// Name.
    pub name: String,
    /// Topic id (nil when the broker does not send one).
    pub id: Uuid,
    /// Whether the topic is internal (`__consumer_offsets`, ...).
    pub is_internal: bool,
    /// The topic's error in the metadata answer (for example UNKNOWN_TOPIC_OR_PARTITION).
    pub error: ErrorCode,
    /// Partitions, ordered by index.
    pub partitions: Vec<PartitionInfo>,
}

impl TopicInfo {
    /// The partition with this index.
    pub fn partition(&self, index: i32) -> Option<&PartitionInfo> {
        let i = usize::try_from(index).ok()?;
        match self.partitions.get(i) {
            Some(p) if p.partition == index => Some(p),
            _ => self.partitions.iter().find(|p| p.partition == index),
        }
    }
}

/// A snapshot of what the cluster said about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata {
    /// Cluster id, if the broker sends one.
    pub cluster_id: Option<String>,
    /// Controller's node id, or -1.
    pub controller_id: i32,
    /// Brokers by node id.
    pub brokers: BTreeMap<i32, BrokerInfo>,
    /// Topics by name. Topics the broker reported an error for are kept, with the
    /// error, so callers can tell "unknown topic" from "not asked about".
    pub topics: HashMap<String, Arc<TopicInfo>>,
}

impl Metadata {
    /// Builds a snapshot from a Metadata response.
    pub fn from_response(resp: &MetadataResponse) -> Metadata {
        let brokers = resp
            .brokers
            .iter()
            .filter_map(|b| {
                Some((
                    b.node_id,
                    BrokerInfo {
                        node_id: b.node_id,
                        host: b.host.clone(),
                        port: u16::try_from(b.port).ok()?,
                        rack: b.rack.clone(),
                    },
                ))
            })
            .collect();
        let topics = resp
            .topics
            .iter()
            .filter_map(|t| {
                let name = t.name.clone()?;
                let mut partitions: Vec<PartitionInfo> = t
                    .partitions
                    .iter()
                    .map(|p| PartitionInfo {
                        partition: p.partition_index,
                        leader: p.leader_id,
                        leader_epoch: p.leader_epoch,
                        replicas: p.replica_nodes.clone(),
                        isr: p.isr_nodes.clone(),
                        offline_replicas: p.offline_replicas.clone(),
                        error: ErrorCode::from_code(p.error_code),
                    })
                    .collect();
                partitions.sort_by_key(|p| p.partition);
                let info = TopicInfo {
                    name: name.clone(),
                    id: t.topic_id,
                    is_internal: t.is_internal,
                    error: ErrorCode::from_code(t.error_code),
                    partitions,
                };
                Some((name, Arc::new(info)))
            })
            .collect();
        Metadata { cluster_id: resp.cluster_id.clone(), controller_id: resp.controller_id, brokers, topics }
    }

    /// Merges a newer answer into this snapshot: brokers and controller come from the
    /// newer answer; topics it covers replace the old entries, others are kept. A
    /// partition whose answer carries an older leader epoch than the cached one (the
    /// answering broker lags behind) keeps its cached state, as in the Java client.
    pub fn merge(&self, newer: Metadata) -> Metadata {
        let mut topics = self.topics.clone();
        for (name, mut topic) in newer.topics {
            if let Some(old) = self.topics.get(&name).filter(|o| o.id == topic.id && o.error == ErrorCode::None) {
                let lagging = topic.partitions.iter().any(|p| {
                    old.partition(p.partition)
                        .is_some_and(|o| o.leader_epoch >= 0 && p.leader_epoch >= 0 && p.leader_epoch < o.leader_epoch)
                });
                if lagging {
                    let t = Arc::make_mut(&mut topic);
                    for p in &mut t.partitions {
                        if let Some(o) = old.partition(p.partition) {
                            if o.leader_epoch >= 0 && p.leader_epoch >= 0 && p.leader_epoch < o.leader_epoch {
                                *p = o.clone();
                            }
                        }
                    }
                }
            }
            topics.insert(name, topic);
        }
        Metadata {
            cluster_id: newer.cluster_id.or_else(|| self.cluster_id.clone()),
            controller_id: newer.controller_id,
            brokers: newer.brokers,
            topics,
        }
    }

    /// The topic, if the metadata has it without an error.
    pub fn topic(&self, name: &str) -> Option<&Arc<TopicInfo>> {
        self.topics.get(name).filter(|t| t.error == ErrorCode::None)
    }

    /// The leader of a partition and its epoch, if it has one.
    pub fn leader(&self, topic: &str, partition: i32) -> Option<(&BrokerInfo, i32)> {
        let p = self.topic(topic)?.partition(partition)?;
        if p.leader < 0 {
            return None;
        }
        Some((self.brokers.get(&p.leader)?, p.leader_epoch))
    }
}

#[cfg(test)]
mod tests {
    use klife_protocol::messages::metadata_response::{
        MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
    };

    use super::*;

    fn response(leader: i32, topic_error: i16) -> MetadataResponse {
        MetadataResponse::default()
            .with_cluster_id(Some("c".into()))
            .with_controller_id(1)
            .with_brokers(vec![
                MetadataResponseBroker::default().with_node_id(1).with_host("a".into()).with_port(9092),
                MetadataResponseBroker::default().with_node_id(2).with_host("b".into()).with_port(9093),
            ])
            .with_topics(vec![
                MetadataResponseTopic::default()
                    .with_name(Some("t".into()))
                    .with_error_code(topic_error)
                    .with_partitions(vec![
                        MetadataResponsePartition::default()
                            .with_partition_index(1)
                            .with_leader_id(2)
                            .with_leader_epoch(7),
                        MetadataResponsePartition::default()
                            .with_partition_index(0)
                            .with_leader_id(leader)
                            .with_leader_epoch(3),
                    ]),
            ])
    }

    #[test]
    fn leaders_and_epochs_come_from_the_response() {
        let m = Metadata::from_response(&response(1, 0));
        assert_eq!(m.leader("t", 0).map(|(b, e)| (b.node_id, e)), Some((1, 3)));
        assert_eq!(m.leader("t", 1).map(|(b, e)| (b.port, e)), Some((9093, 7)));
        assert_eq!(m.leader("t", 2), None);
        assert_eq!(m.topic("t").map(|t| t.partitions[0].partition), Some(0));
        assert_eq!(m.brokers[&1].label(), "1@a:9092");
    }

    #[test]
    fn no_leader_and_topic_errors_are_visible() {
        let m = Metadata::from_response(&response(-1, 0));
        assert_eq!(m.leader("t", 0), None);
        let m = Metadata::from_response(&response(1, ErrorCode::UnknownTopicOrPartition.code()));
        assert!(m.topic("t").is_none());
        assert_eq!(m.topics["t"].error, ErrorCode::UnknownTopicOrPartition);
    }

    #[test]
    fn merge_ignores_leader_epochs_going_backwards() {
        let current = Metadata::from_response(&response(1, 0)); // t-0: leader 1, epoch 3
        let lagging = Metadata::from_response(&response(2, 0).with_topics(vec![
            MetadataResponseTopic::default().with_name(Some("t".into())).with_partitions(vec![
                MetadataResponsePartition::default().with_partition_index(0).with_leader_id(2).with_leader_epoch(2),
                MetadataResponsePartition::default().with_partition_index(1).with_leader_id(1).with_leader_epoch(8),
            ]),
        ]));
        let merged = current.merge(lagging);
        assert_eq!(merged.leader("t", 0).map(|(b, e)| (b.node_id, e)), Some((1, 3)), "older epoch ignored");
        assert_eq!(merged.leader("t", 1).map(|(b, e)| (b.node_id, e)), Some((1, 8)), "newer epoch taken");
    }

    #[test]
    fn merge_keeps_topics_the_newer_answer_does_not_cover() {
        let old = Metadata::from_response(&response(1, 0));
        let newer = Metadata::from_response(&MetadataResponse::default().with_controller_id(2));
        let merged = old.merge(newer);
        assert_eq!(merged.controller_id, 2);
        assert!(merged.topic("t").is_some());
        assert_eq!(merged.cluster_id.as_deref(), Some("c"));
    }
}
