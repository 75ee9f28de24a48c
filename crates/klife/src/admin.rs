//! Admin basics: create and delete topics, add partitions, move replicas and elect
//! leaders, list offsets, describe the cluster.

use std::collections::BTreeMap;
use std::sync::Arc;

use klife_connection::Target;
use klife_protocol::messages::DescribeClusterRequest;
use klife_protocol::messages::alter_partition_reassignments_request::{
    AlterPartitionReassignmentsRequest, ReassignablePartition, ReassignableTopic,
};
use klife_protocol::messages::create_partitions_request::{CreatePartitionsRequest, CreatePartitionsTopic};
use klife_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig, CreateTopicsRequest};
use klife_protocol::messages::delete_topics_request::{DeleteTopicState, DeleteTopicsRequest};
use klife_protocol::messages::elect_leaders_request::{ElectLeadersRequest, TopicPartitions};
use klife_protocol::{ApiKey, ErrorCode, Request};

use klife_fetcher::{IsolationLevel, ListedOffset, OffsetSpec};
use klife_protocol::TopicPartition;

use crate::{Client, Error};

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    /// Name.
    pub name: String,
    /// Partitions (-1: the broker's default).
    pub partitions: i32,
    /// Replication factor (-1: the broker's default).
    pub replication_factor: i16,
    /// Topic configuration (`retention.ms`, `cleanup.policy`, ...).
    pub configs: BTreeMap<String, String>,
}

impl NewTopic {
    /// A topic with `partitions` partitions and the broker's default replication.
    pub fn new(name: impl Into<String>, partitions: i32) -> Self {
        NewTopic { name: name.into(), partitions, replication_factor: -1, configs: BTreeMap::new() }
    }

    /// Sets the replication factor.
    #[must_use]
    pub fn with_replication_factor(mut self, factor: i16) -> Self {
        self.replication_factor = factor;
        self
    }

    /// Adds a topic configuration entry.
    #[must_use]
    pub fn with_config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.configs.insert(key.into(), value.into());
        self
    }
}

/// New replicas for a partition, for [`Client::alter_partition_reassignments`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reassignment {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The broker ids that will hold the partition; the first is its preferred leader.
    /// `None` cancels a reassignment in progress.
    pub replicas: Option<Vec<i32>>,
}

impl Reassignment {
    /// Moves `topic`'s `partition` to `replicas` (the first one the preferred leader).
    pub fn new(topic: impl Into<String>, partition: i32, replicas: Vec<i32>) -> Self {
        Reassignment { topic: topic.into(), partition, replicas: Some(replicas) }
    }

    /// Cancels the reassignment in progress of `topic`'s `partition`.
    pub fn cancel(topic: impl Into<String>, partition: i32) -> Self {
        Reassignment { topic: topic.into(), partition, replicas: None }
    }
}

/// One partition of a topic, as the cluster metadata describes it
/// ([`Client::partitions`]).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PartitionDescription {
    /// The topic and partition.
    pub topic_partition: TopicPartition,
    /// The broker id of the leader, `None` while the partition has none (its leader
    /// is offline or being elected).
    pub leader: Option<i32>,
    /// The leader epoch the metadata names (-1 when unknown).
    pub leader_epoch: i32,
    /// The broker ids holding a replica, the preferred leader first.
    pub replicas: Vec<i32>,
    /// The replicas in sync with the leader.
    pub in_sync_replicas: Vec<i32>,
    /// The replicas whose broker is offline.
    pub offline_replicas: Vec<i32>,
}

impl PartitionDescription {
    /// The partition number.
    pub fn partition(&self) -> i32 {
        self.topic_partition.partition
    }
}

/// The answer for one partition of [`Client::list_offsets`].
#[derive(Debug)]
#[non_exhaustive]
pub struct PartitionOffset {
    /// The topic and partition asked for.
    pub topic_partition: TopicPartition,
    /// What was asked.
    pub spec: OffsetSpec,
    /// What was found, or why not (this partition only: a missing partition, a broker
    /// error that retries did not cure).
    pub result: Result<ListedOffset, Error>,
}

impl PartitionOffset {
    /// The offset found (-1 when a timestamp lookup matched no record), or the
    /// partition's error.
    pub fn offset(&self) -> Result<i64, &Error> {
        self.result.as_ref().map(|l| l.offset)
    }
}

/// The answers of [`Client::list_offsets`], one per query in the order asked.
#[derive(Debug)]
pub struct ListedOffsets {
    answers: Vec<PartitionOffset>,
}

impl ListedOffsets {
    /// The answers, in the order asked.
    pub fn iter(&self) -> std::slice::Iter<'_, PartitionOffset> {
        self.answers.iter()
    }

    /// How many answers (as many as queries).
    pub fn len(&self) -> usize {
        self.answers.len()
    }

    /// Whether there are none (no queries).
    pub fn is_empty(&self) -> bool {
        self.answers.is_empty()
    }

    /// The first answer for `topic`-`partition`, if it was asked.
    pub fn get(&self, topic: &str, partition: i32) -> Option<&PartitionOffset> {
        self.answers.iter().find(|a| &*a.topic_partition.topic == topic && a.topic_partition.partition == partition)
    }
}

impl std::ops::Index<usize> for ListedOffsets {
    type Output = PartitionOffset;

    fn index(&self, i: usize) -> &PartitionOffset {
        &self.answers[i]
    }
}

impl IntoIterator for ListedOffsets {
    type Item = PartitionOffset;
    type IntoIter = std::vec::IntoIter<PartitionOffset>;

    fn into_iter(self) -> Self::IntoIter {
        self.answers.into_iter()
    }
}

impl<'a> IntoIterator for &'a ListedOffsets {
    type Item = &'a PartitionOffset;
    type IntoIter = std::slice::Iter<'a, PartitionOffset>;

    fn into_iter(self) -> Self::IntoIter {
        self.answers.iter()
    }
}

/// A broker in [`ClusterDescription`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerDescription {
    /// Node id.
    pub node_id: i32,
    /// Host.
    pub host: String,
    /// Port.
    pub port: i32,
    /// Rack.
    pub rack: Option<String>,
}

/// What [`Client::describe_cluster`] returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterDescription {
    /// Cluster id (empty if the broker does not report one).
    pub cluster_id: String,
    /// Controller node id, or -1.
    pub controller_id: i32,
    /// Brokers, by node id.
    pub brokers: Vec<BrokerDescription>,
}

/// NOT_CONTROLLER among per-topic answers: the request went to a broker that is not
/// the controller (any more), which concerns the whole call, unlike the other
/// per-topic codes, which are each topic's result.
fn not_controller(codes: impl IntoIterator<Item = i16>) -> Option<ErrorCode> {
    codes.into_iter().map(ErrorCode::from_code).find(|c| *c == ErrorCode::NotController)
}

/// The facade's error for a failed admin call: a code in the answer names `what` was
/// being done; anything else (a connection failure, retries run out) is the
/// connection layer's error.
fn call_error(what: impl Into<String>, e: klife_connection::Error) -> Error {
    match e {
        klife_connection::Error::Broker { api, code, message, .. } => Error::broker(what, api, code, message),
        e => Error::from(e),
    }
}
impl Client {
    /// The time admin requests give the controller: three quarters of the request
    /// timeout, so that the controller's own answer (including its timeout error) comes
    /// back before the client gives up on the connection.
    fn broker_timeout_ms(&self) -> i32 {
        let ms = self.cluster.config().request_timeout.as_millis() * 3 / 4;
        i32::try_from(ms).unwrap_or(i32::MAX).max(1)
    }

    /// Sends `request` to the controller under the connection layer's retry rule
    /// ([`Cluster::call`](klife_connection::Cluster::call): NOT_CONTROLLER refreshes the
    /// metadata and tries the new controller); the top-level error code (and message)
    /// from `error_of`, when not NONE, is an error naming `what`.
    async fn controller_call<R: Request>(
        &self,
        request: &R,
        what: &str,
        error_of: impl Fn(&R::Response) -> (i16, Option<String>),
    ) -> Result<R::Response, Error> {
        let policy = self.cluster.retry_policy();
        self.cluster
            .call(Target::Controller, request, &policy, |r| [error_of(r)])
            .await
            .map_err(|e| call_error(what, e))
    }

    /// Creates topics. Returns one result per topic, in the order given; a topic that
    /// already exists gives an error whose code is `TOPIC_ALREADY_EXISTS`.
    pub async fn create_topics(&self, topics: Vec<NewTopic>) -> Result<Vec<(String, Result<(), Error>)>, Error> {
        let timeout_ms = self.broker_timeout_ms();
        let request = CreateTopicsRequest::default().with_timeout_ms(timeout_ms).with_topics(
            topics
                .iter()
                .map(|t| {
                    CreatableTopic::default()
                        .with_name(t.name.clone())
                        .with_num_partitions(t.partitions)
                        .with_replication_factor(t.replication_factor)
                        .with_configs(
                            t.configs
                                .iter()
                                .map(|(k, v)| {
                                    CreatableTopicConfig::default().with_name(k.clone()).with_value(Some(v.clone()))
                                })
                                .collect(),
                        )
                })
                .collect(),
        );
        let policy = self.cluster.retry_policy();
        let response = self
            .cluster
            .call(Target::Controller, &request, &policy, |r| not_controller(r.topics.iter().map(|t| t.error_code)))
            .await
            .map_err(|e| call_error("creating topics", e))?;
        let _ = self.cluster.refresh_metadata().await;
        Ok(topics
            .into_iter()
            .map(|t| {
                let result = match response.topics.iter().find(|r| r.name == t.name) {
                    None => Err(Error::invalid_argument(format!("the broker did not answer for topic {:?}", t.name))),
                    Some(r) => match ErrorCode::from_code(r.error_code) {
                        ErrorCode::None => Ok(()),
                        code => Err(Error::broker(
                            format!("creating topic {:?}", t.name),
                            ApiKey::CreateTopics,
                            code,
                            r.error_message.clone(),
                        )),
                    },
                };
                (t.name, result)
            })
            .collect())
    }

    /// Creates one topic with `partitions` partitions (broker-default replication).
    pub async fn create_topic(&self, name: &str, partitions: i32) -> Result<(), Error> {
        let mut results = self.create_topics(vec![NewTopic::new(name, partitions)]).await?;
        results.pop().map(|(_, r)| r).unwrap_or(Ok(()))
    }

    /// Deletes topics. Returns one result per topic, in the order given.
    pub async fn delete_topics<S: AsRef<str>>(&self, topics: &[S]) -> Result<Vec<(String, Result<(), Error>)>, Error> {
        let names: Vec<String> = topics.iter().map(|t| t.as_ref().to_owned()).collect();
        let timeout_ms = self.broker_timeout_ms();
        let policy = self.cluster.retry_policy();
        let names_ref = &names;
        let response = self
            .cluster
            .call_with(
                Target::Controller,
                ApiKey::DeleteTopics,
                &policy,
                |conn| async move {
                    let version = conn.version_for(ApiKey::DeleteTopics, None)?;
                    let mut req = DeleteTopicsRequest::default().with_timeout_ms(timeout_ms);
                    if version >= 6 {
                        req = req.with_topics(
                            names_ref.iter().map(|n| DeleteTopicState::default().with_name(Some(n.clone()))).collect(),
                        );
                    } else {
                        req = req.with_topic_names(names_ref.clone());
                    }
                    conn.send_version(&req, version).await
                },
                |r| not_controller(r.responses.iter().map(|t| t.error_code)),
            )
            .await
            .map_err(|e| call_error("deleting topics", e))?;
        let _ = self.cluster.refresh_metadata().await;
        Ok(names
            .into_iter()
            .map(|n| {
                let result = match response.responses.iter().find(|r| r.name.as_deref() == Some(n.as_str())) {
                    None => Err(Error::invalid_argument(format!("the broker did not answer for topic {n:?}"))),
                    Some(r) => match ErrorCode::from_code(r.error_code) {
                        ErrorCode::None => Ok(()),
                        code => Err(Error::broker(
                            format!("deleting topic {n:?}"),
                            ApiKey::DeleteTopics,
                            code,
                            r.error_message.clone(),
                        )),
                    },
                };
                (n, result)
            })
            .collect())
    }

    /// Raises a topic's partition count to `total`.
    pub async fn create_partitions(&self, topic: &str, total: i32) -> Result<(), Error> {
        let timeout_ms = self.broker_timeout_ms();
        let request = CreatePartitionsRequest::default().with_timeout_ms(timeout_ms).with_topics(vec![
            CreatePartitionsTopic::default().with_name(topic.to_owned()).with_count(total).with_assignments(None),
        ]);
        let policy = self.cluster.retry_policy();
        let resp = self
            .cluster
            .call(Target::Controller, &request, &policy, |r| not_controller(r.results.iter().map(|t| t.error_code)))
            .await
            .map_err(|e| call_error(format!("adding partitions to {topic:?}"), e))?;
        let r = resp
            .results
            .iter()
            .find(|r| r.name == topic)
            .ok_or_else(|| Error::invalid_argument(format!("the broker did not answer for topic {topic:?}")))?;
        match ErrorCode::from_code(r.error_code) {
            ErrorCode::None => {}
            code => {
                return Err(Error::broker(
                    format!("adding partitions to {topic:?}"),
                    ApiKey::CreatePartitions,
                    code,
                    r.error_message.clone(),
                ));
            }
        }
        let _ = self.cluster.add_topics(&[topic]).await;
        Ok(())
    }

    /// Moves partitions to new replicas (AlterPartitionReassignments, sent to the
    /// controller). Returns one result per reassignment, in the order given. Kafka
    /// accepts a reassignment at once and copies data in the background; a new order of
    /// the same replicas only changes the preferred leader, which
    /// [`elect_preferred_leaders`](Self::elect_preferred_leaders) then makes leader.
    pub async fn alter_partition_reassignments(
        &self,
        reassignments: &[Reassignment],
    ) -> Result<Vec<Result<(), Error>>, Error> {
        let mut topics: Vec<ReassignableTopic> = Vec::new();
        for r in reassignments {
            let partition =
                ReassignablePartition::default().with_partition_index(r.partition).with_replicas(r.replicas.clone());
            match topics.iter_mut().find(|t| t.name == r.topic) {
                Some(t) => t.partitions.push(partition),
                None => topics
                    .push(ReassignableTopic::default().with_name(r.topic.clone()).with_partitions(vec![partition])),
            }
        }
        let request =
            AlterPartitionReassignmentsRequest::default().with_timeout_ms(self.broker_timeout_ms()).with_topics(topics);
        let api = ApiKey::AlterPartitionReassignments;
        let response =
            self.controller_call(&request, "moving replicas", |r| (r.error_code, r.error_message.clone())).await?;
        Ok(reassignments
            .iter()
            .map(|r| {
                let what = format!("moving the replicas of {}-{}", r.topic, r.partition);
                let answer = response
                    .responses
                    .iter()
                    .filter(|t| t.name == r.topic)
                    .flat_map(|t| t.partitions.iter())
                    .find(|p| p.partition_index == r.partition);
                match answer.map(|p| (ErrorCode::from_code(p.error_code), p)) {
                    None => Err(Error::invalid_argument(format!("{what}: the controller did not answer for it"))),
                    Some((ErrorCode::None, _)) => Ok(()),
                    Some((code, p)) => Err(Error::broker(what, api, code, p.error_message.clone())),
                }
            })
            .collect())
    }

    /// Makes each partition's preferred replica (the first of its replicas) its leader
    /// (ElectLeaders, preferred election). Returns one result per partition, in the order
    /// given; a partition already led by its preferred replica is `Ok`.
    pub async fn elect_preferred_leaders(&self, partitions: &[(&str, i32)]) -> Result<Vec<Result<(), Error>>, Error> {
        let mut topics: Vec<TopicPartitions> = Vec::new();
        for (topic, partition) in partitions {
            match topics.iter_mut().find(|t| t.topic == *topic) {
                Some(t) => t.partitions.push(*partition),
                None => topics
                    .push(TopicPartitions::default().with_topic((*topic).to_owned()).with_partitions(vec![*partition])),
            }
        }
        let request = ElectLeadersRequest::default()
            .with_election_type(0)
            .with_topic_partitions(Some(topics))
            .with_timeout_ms(self.broker_timeout_ms());
        let api = ApiKey::ElectLeaders;
        let response = self.controller_call(&request, "electing leaders", |r| (r.error_code, None)).await?;
        let results = partitions
            .iter()
            .map(|(topic, partition)| {
                let what = format!("electing the preferred leader of {topic}-{partition}");
                let answer = response
                    .replica_election_results
                    .iter()
                    .filter(|t| t.topic == *topic)
                    .flat_map(|t| t.partition_result.iter())
                    .find(|p| p.partition_id == *partition);
                match answer.map(|p| (ErrorCode::from_code(p.error_code), p)) {
                    None => Err(Error::invalid_argument(format!("{what}: the controller did not answer for it"))),
                    Some((ErrorCode::None | ErrorCode::ElectionNotNeeded, _)) => Ok(()),
                    Some((code, p)) => Err(Error::broker(what, api, code, p.error_message.clone())),
                }
            })
            .collect();
        let _ = self.cluster.refresh_metadata().await;
        Ok(results)
    }

    /// Looks up offsets: one answer per `(partition, spec)`, in the order given
    /// ([`ListedOffsets`]). Requests to the same leader share one ListOffsets request;
    /// partitions whose leader moved are retried after a metadata refresh. `Latest` is
    /// the high watermark (read_uncommitted); the fetcher's
    /// [`list_offsets`](crate::Fetcher::list_offsets) also answers with the last
    /// stable offset.
    ///
    /// The call fails as a whole only when the client is closed; everything else
    /// (a missing topic, a broker error) is the answer of the partitions it concerns.
    ///
    /// ```no_run
    /// # async fn run(client: klife::Client) -> Result<(), klife::Error> {
    /// use klife::{OffsetSpec, TopicPartition};
    /// let found = client.list_offsets([(TopicPartition::new("orders", 0), OffsetSpec::Latest)]).await?;
    /// match found[0].offset() {
    ///     Ok(end) => println!("orders-0 ends at {end}"),
    ///     Err(e) => println!("orders-0: {e}"),
    /// }
    /// # Ok(())
    /// # }
    /// ```
    pub async fn list_offsets<I>(&self, queries: I) -> Result<ListedOffsets, Error>
    where
        I: IntoIterator<Item = (TopicPartition, OffsetSpec)>,
    {
        if self.cluster.is_closed() {
            return Err(klife_connection::Error::Closed.into());
        }
        let queries: Vec<(TopicPartition, OffsetSpec)> = queries.into_iter().collect();
        let found = self.default_fetcher().list_offsets(&queries, IsolationLevel::ReadUncommitted).await;
        let answers = queries
            .iter()
            .zip(found)
            .map(|((topic_partition, spec), r)| PartitionOffset {
                topic_partition: topic_partition.clone(),
                spec: *spec,
                result: r.map_err(Error::from),
            })
            .collect();
        Ok(ListedOffsets { answers })
    }

    /// The partitions of `topic`, in partition order, as the cluster metadata
    /// describes them now (fetched for the topic at the call). Fails with an error for
    /// which [`Error::is_unknown_topic_or_partition`] is true when the topic does not
    /// exist.
    pub async fn partitions(&self, topic: &str) -> Result<Vec<PartitionDescription>, Error> {
        let m = self.cluster.add_topics(&[topic]).await?;
        let info = match m.topics.get(topic) {
            Some(info) if info.error == ErrorCode::None => info,
            Some(info) if info.error != ErrorCode::UnknownTopicOrPartition => {
                return Err(Error::broker(format!("topic {topic:?}"), ApiKey::Metadata, info.error, None));
            }
            _ => return Err(klife_connection::Error::UnknownTopic { topic: topic.to_owned() }.into()),
        };
        let name: Arc<str> = Arc::from(topic);
        let mut out: Vec<PartitionDescription> = info
            .partitions
            .iter()
            .map(|p| PartitionDescription {
                topic_partition: TopicPartition::new(name.clone(), p.partition),
                leader: (p.leader >= 0).then_some(p.leader),
                leader_epoch: p.leader_epoch,
                replicas: p.replicas.clone(),
                in_sync_replicas: p.isr.clone(),
                offline_replicas: p.offline_replicas.clone(),
            })
            .collect();
        out.sort_by_key(PartitionDescription::partition);
        Ok(out)
    }

    /// Describes the cluster: its id, controller and brokers (DescribeCluster where the
    /// broker has it, Metadata otherwise).
    pub async fn describe_cluster(&self) -> Result<ClusterDescription, Error> {
        let policy = self.cluster.retry_policy();
        let answer = self
            .cluster
            .call_with(
                Target::AnyBroker,
                ApiKey::DescribeCluster,
                &policy,
                |conn| async move {
                    if conn.versions().supports(ApiKey::DescribeCluster) {
                        conn.send(&DescribeClusterRequest::default()).await.map(Some)
                    } else {
                        Ok(None)
                    }
                },
                |r| r.as_ref().map(|r| (r.error_code, r.error_message.clone())),
            )
            .await
            .map_err(|e| call_error("describing the cluster", e))?;
        if let Some(resp) = answer {
            return Ok(ClusterDescription {
                cluster_id: resp.cluster_id,
                controller_id: resp.controller_id,
                brokers: resp
                    .brokers
                    .into_iter()
                    .map(|b| BrokerDescription { node_id: b.broker_id, host: b.host, port: b.port, rack: b.rack })
                    .collect(),
            });
        }
        let m = self.cluster.refresh_metadata().await?;
        Ok(ClusterDescription {
            cluster_id: m.cluster_id.clone().unwrap_or_default(),
            controller_id: m.controller_id,
            brokers: m
                .brokers
                .values()
                .map(|b| BrokerDescription {
                    node_id: b.node_id,
                    host: b.host.clone(),
                    port: i32::from(b.port),
                    rack: b.rack.clone(),
                })
                .collect(),
        })
    }

    /// Names of every topic in the cluster (internal topics excluded), sorted.
    pub async fn list_topics(&self) -> Result<Vec<String>, Error> {
        let m = self.cluster.all_topics_metadata().await?;
        let mut names: Vec<String> = m
            .topics
            .values()
            .filter(|t| !t.is_internal && t.error == ErrorCode::None)
            .map(|t| t.name.clone())
            .collect();
        names.sort();
        Ok(names)
    }
}
