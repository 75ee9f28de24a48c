//! Admin basics: create and delete topics, add partitions, list offsets, describe
//! the cluster.

use std::collections::BTreeMap;
use std::time::Duration;

use klife_connection::backoff::Backoff;
use klife_protocol::messages::DescribeClusterRequest;
use klife_protocol::messages::create_partitions_request::{CreatePartitionsRequest, CreatePartitionsTopic};
use klife_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig, CreateTopicsRequest};
use klife_protocol::messages::delete_topics_request::{DeleteTopicState, DeleteTopicsRequest};
use klife_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsRequest, ListOffsetsTopic};
use klife_protocol::{ApiKey, ErrorCode, RetryAction};

use crate::{Client, Error};

/// Attempts for admin operations that hit retriable errors.
const ADMIN_ATTEMPTS: u32 = 6;

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
    pub fn replication_factor(mut self, factor: i16) -> Self {
        self.replication_factor = factor;
        self
    }

    /// Adds a topic configuration entry.
    #[must_use]
    pub fn config(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.configs.insert(key.into(), value.into());
        self
    }
}

/// Which offset to look up with [`Client::list_offsets`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OffsetSpec {
    /// The first offset still in the log (the log start offset).
    Earliest,
    /// The offset the next record will get (the high watermark).
    Latest,
    /// The first offset whose timestamp is at or after this one (milliseconds since
    /// the epoch); [`ListedOffset::offset`] is -1 when there is none.
    Timestamp(i64),
}

impl OffsetSpec {
    fn wire(self) -> i64 {
        match self {
            OffsetSpec::Earliest => -2,
            OffsetSpec::Latest => -1,
            OffsetSpec::Timestamp(t) => t,
        }
    }
}

/// An offset found by [`Client::list_offsets`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedOffset {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// The offset (-1 when no record matches a timestamp).
    pub offset: i64,
    /// The timestamp of that record, when looking up by timestamp (-1 otherwise).
    pub timestamp: i64,
    /// The leader epoch of the record, when the broker reports it.
    pub leader_epoch: Option<i32>,
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

/// Whether an error code means "look again where the thing lives now".
fn refresh_needed(code: ErrorCode) -> bool {
    code == ErrorCode::NotController || code.retry_action() == RetryAction::RefreshMetadata
}

impl Client {
    /// The time admin requests give the controller: three quarters of the request
    /// timeout, so that the controller's own answer (including its timeout error) comes
    /// back before the client gives up on the connection.
    fn broker_timeout_ms(&self) -> i32 {
        let ms = self.cluster.config().request_timeout.as_millis() * 3 / 4;
        i32::try_from(ms).unwrap_or(i32::MAX).max(1)
    }

    /// Runs `op` until it succeeds, fails with a non-retriable error, or runs out of
    /// attempts; refreshes metadata between attempts when the error calls for it.
    async fn with_retries<T, F, Fut>(&self, mut op: F) -> Result<T, Error>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Error>>,
    {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let mut attempt = 1;
        loop {
            match op().await {
                Err(e) if e.is_retriable() && attempt < ADMIN_ATTEMPTS && !e.is_closed() => {
                    tracing::debug!(error = %e, attempt, "retrying admin request");
                    if e.error_code().is_none_or(refresh_needed) {
                        let _ = self.cluster.refresh_metadata().await;
                    }
                    tokio::time::sleep(backoff.next_delay(fastrand::f64())).await;
                    attempt += 1;
                }
                other => return other,
            }
        }
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
        let response = self
            .with_retries(|| async {
                let conn = self.cluster.controller().await?;
                let resp = conn.send(&request).await?;
                if let Some(t) =
                    resp.topics.iter().find(|t| ErrorCode::from_code(t.error_code) == ErrorCode::NotController)
                {
                    return Err(Error::broker(
                        format!("topic {:?}", t.name),
                        ApiKey::CreateTopics,
                        ErrorCode::NotController,
                        None,
                    ));
                }
                Ok(resp)
            })
            .await?;
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
        let response = self
            .with_retries(|| async {
                let conn = self.cluster.controller().await?;
                let version = conn.version_for(ApiKey::DeleteTopics, None)?;
                let mut req = DeleteTopicsRequest::default().with_timeout_ms(timeout_ms);
                if version >= 6 {
                    req = req.with_topics(
                        names.iter().map(|n| DeleteTopicState::default().with_name(Some(n.clone()))).collect(),
                    );
                } else {
                    req = req.with_topic_names(names.clone());
                }
                let resp = conn.send_version(&req, version).await?;
                if resp.responses.iter().any(|r| ErrorCode::from_code(r.error_code) == ErrorCode::NotController) {
                    return Err(Error::broker("deleting topics", ApiKey::DeleteTopics, ErrorCode::NotController, None));
                }
                Ok(resp)
            })
            .await?;
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
        let request = CreatePartitionsRequest::default()
            .with_timeout_ms(timeout_ms)
            .with_topics(vec![CreatePartitionsTopic::default().with_name(topic.to_owned()).with_count(total)]);
        self.with_retries(|| async {
            let conn = self.cluster.controller().await?;
            let resp = conn.send(&request).await?;
            let r = resp
                .results
                .iter()
                .find(|r| r.name == topic)
                .ok_or_else(|| Error::invalid_argument(format!("the broker did not answer for topic {topic:?}")))?;
            match ErrorCode::from_code(r.error_code) {
                ErrorCode::None => Ok(()),
                code => Err(Error::broker(
                    format!("adding partitions to {topic:?}"),
                    ApiKey::CreatePartitions,
                    code,
                    r.error_message.clone(),
                )),
            }
        })
        .await?;
        let _ = self.cluster.add_topics(&[topic]).await;
        Ok(())
    }

    /// Looks up offsets: one result per `(topic, partition, spec)`, in the order given.
    /// Requests to the same leader share one ListOffsets request; partitions whose
    /// leader moved are retried after a metadata refresh.
    pub async fn list_offsets(
        &self,
        queries: &[(&str, i32, OffsetSpec)],
    ) -> Result<Vec<Result<ListedOffset, Error>>, Error> {
        let mut results: Vec<Option<Result<ListedOffset, Error>>> = (0..queries.len()).map(|_| None).collect();
        // Look up only topics the metadata does not know yet; known ones are refreshed
        // when an answer says the metadata is stale.
        let known = self.cluster.metadata();
        let mut missing: Vec<&str> = queries.iter().map(|q| q.0).filter(|t| !known.topics.contains_key(*t)).collect();
        missing.sort_unstable();
        missing.dedup();
        if !missing.is_empty() {
            self.cluster.add_topics(&missing).await?;
        }
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        for attempt in 1..=ADMIN_ATTEMPTS {
            // A partition appears at most once per request (the broker answers it once),
            // so repeated queries of one partition go out in further rounds. Each query
            // is tried once per attempt; retries wait for the next attempt's backoff.
            let mut tried = vec![false; queries.len()];
            loop {
                let mut by_leader: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
                let mut in_round: std::collections::HashSet<(&str, i32)> = std::collections::HashSet::new();
                let mut deferred = false;
                for (i, &(topic, partition, _)) in queries.iter().enumerate() {
                    let done = results[i]
                        .as_ref()
                        .is_some_and(|r| r.as_ref().is_ok() || !r.as_ref().is_err_and(Error::is_retriable));
                    if done || tried[i] {
                        continue;
                    }
                    if !in_round.insert((topic, partition)) {
                        deferred = true;
                        continue;
                    }
                    tried[i] = true;
                    match self.route(topic, partition) {
                        Ok(leader) => by_leader.entry(leader).or_default().push(i),
                        Err(e) => results[i] = Some(Err(e)),
                    }
                }
                for (leader, indexes) in by_leader {
                    if let Err(e) = self.list_offsets_on(leader, queries, &indexes, &mut results).await {
                        for i in indexes {
                            results[i] = Some(Err(Error::from(e.clone())));
                        }
                    }
                }
                if !deferred {
                    break;
                }
            }
            let retry = results.iter().any(|r| r.as_ref().is_none_or(|r| r.as_ref().is_err_and(Error::is_retriable)));
            if !retry || attempt == ADMIN_ATTEMPTS {
                break;
            }
            let _ = self.cluster.refresh_metadata().await;
            tokio::time::sleep(backoff.next_delay(fastrand::f64())).await;
        }
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(Error::invalid_argument("no answer for this partition"))))
            .collect())
    }

    /// The leader of a partition from the metadata, or the error that prevents asking it.
    fn route(&self, topic: &str, partition: i32) -> Result<i32, Error> {
        let m = self.cluster.metadata();
        let context = || format!("{topic}-{partition}");
        let t = m
            .topics
            .get(topic)
            .ok_or_else(|| Error::broker(context(), ApiKey::Metadata, ErrorCode::UnknownTopicOrPartition, None))?;
        if t.error != ErrorCode::None {
            return Err(Error::broker(context(), ApiKey::Metadata, t.error, None));
        }
        let p = t.partition(partition).ok_or_else(|| {
            Error::broker(
                format!("{topic}-{partition} (the topic has {} partitions)", t.partitions.len()),
                ApiKey::ListOffsets,
                ErrorCode::UnknownTopicOrPartition,
                None,
            )
        })?;
        // A leader missing from the broker list is down (the metadata still names it).
        if p.leader < 0 || !m.brokers.contains_key(&p.leader) {
            return Err(Error::broker(context(), ApiKey::ListOffsets, ErrorCode::LeaderNotAvailable, None));
        }
        Ok(p.leader)
    }

    async fn list_offsets_on(
        &self,
        leader: i32,
        queries: &[(&str, i32, OffsetSpec)],
        indexes: &[usize],
        results: &mut [Option<Result<ListedOffset, Error>>],
    ) -> Result<(), klife_connection::Error> {
        let conn = self.cluster.broker(leader).await?;
        let version = conn.version_for(ApiKey::ListOffsets, None)?;
        let mut topics: BTreeMap<&str, Vec<ListOffsetsPartition>> = BTreeMap::new();
        for &i in indexes {
            let (topic, partition, spec) = queries[i];
            topics
                .entry(topic)
                .or_default()
                .push(ListOffsetsPartition::default().with_partition_index(partition).with_timestamp(spec.wire()));
        }
        let req = ListOffsetsRequest::default().with_replica_id(-1).with_topics(
            topics
                .into_iter()
                .map(|(name, partitions)| {
                    ListOffsetsTopic::default().with_name(name.to_owned()).with_partitions(partitions)
                })
                .collect(),
        );
        let resp = conn.send_version(&req, version).await?;
        for &i in indexes {
            let (topic, partition, _) = queries[i];
            let answer = resp
                .topics
                .iter()
                .filter(|t| t.name == topic)
                .flat_map(|t| t.partitions.iter())
                .find(|p| p.partition_index == partition);
            results[i] = Some(match answer {
                None => Err(Error::invalid_argument(format!("the broker did not answer for {topic}-{partition}"))),
                Some(p) => match ErrorCode::from_code(p.error_code) {
                    ErrorCode::None => Ok(ListedOffset {
                        topic: topic.to_owned(),
                        partition,
                        offset: if version == 0 {
                            p.old_style_offsets.first().copied().unwrap_or(-1)
                        } else {
                            p.offset
                        },
                        timestamp: p.timestamp,
                        leader_epoch: (version >= 4 && p.leader_epoch >= 0).then_some(p.leader_epoch),
                    }),
                    code => Err(Error::broker(format!("{topic}-{partition}"), ApiKey::ListOffsets, code, None)),
                },
            });
        }
        Ok(())
    }

    /// Describes the cluster: its id, controller and brokers (DescribeCluster where the
    /// broker has it, Metadata otherwise).
    pub async fn describe_cluster(&self) -> Result<ClusterDescription, Error> {
        self.with_retries(|| async {
            let conn = self.cluster.any_broker().await?;
            if conn.versions().supports(ApiKey::DescribeCluster) {
                let resp = conn.send(&DescribeClusterRequest::default()).await?;
                match ErrorCode::from_code(resp.error_code) {
                    ErrorCode::None => {}
                    code => {
                        return Err(Error::broker(
                            "describing the cluster",
                            ApiKey::DescribeCluster,
                            code,
                            resp.error_message,
                        ));
                    }
                }
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
        })
        .await
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
