//! Offset lookups (ListOffsets): earliest, latest, by timestamp.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use klife_connection::retry::{Outcome, RetryState, Step};
use klife_protocol::messages::ListOffsetsRequest;
use klife_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use klife_protocol::{ApiKey, ErrorCode};

use crate::config::IsolationLevel;
use crate::error::FetchError;
use crate::fetcher::Inner;
use crate::record::TopicPartitionOffset;
use klife_protocol::TopicPartition;

/// Which offset to look up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OffsetSpec {
    /// The first offset still in the log (the log start offset).
    Earliest,
    /// The offset the next record will get: the high watermark (read_uncommitted) or
    /// the last stable offset (read_committed).
    Latest,
    /// The first offset whose timestamp is at or after this one (milliseconds since
    /// the epoch); [`ListedOffset::offset`] is -1 when there is none.
    Timestamp(i64),
}

impl OffsetSpec {
    /// The wire value (-2 earliest, -1 latest, else the timestamp).
    pub fn wire(self) -> i64 {
        match self {
            OffsetSpec::Earliest => -2,
            OffsetSpec::Latest => -1,
            OffsetSpec::Timestamp(t) => t,
        }
    }
}

/// An offset found by a lookup.
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

type Slot = Option<Result<ListedOffset, FetchError>>;

pub(crate) async fn list_offsets(
    inner: &Arc<Inner>,
    queries: &[(TopicPartition, OffsetSpec)],
    isolation: IsolationLevel,
) -> Vec<Result<ListedOffset, FetchError>> {
    let cluster = &inner.cluster;
    let mut results: Vec<Slot> = (0..queries.len()).map(|_| None).collect();
    // Look up only topics the metadata does not know yet; known ones are refreshed
    // when an answer says the metadata is stale, or when a partition is beyond the
    // cached count (partitions were added since it was read).
    let known = cluster.metadata();
    let mut missing: Vec<&str> =
        queries.iter().map(|q| &*q.0.topic).filter(|t| !known.topics.contains_key(*t)).collect();
    missing.sort_unstable();
    missing.dedup();
    if !missing.is_empty() {
        if let Err(e) = cluster.add_topics(&missing).await {
            return queries.iter().map(|_| Err(FetchError::Connection(e.clone()))).collect();
        }
    }
    let beyond_cached_count = queries.iter().any(|(tp, _)| {
        known.topics.get(&*tp.topic).is_some_and(|t| t.error == ErrorCode::None && t.partition(tp.partition).is_none())
    });
    if beyond_cached_count {
        // Failing that, the lookup below names the partition as unknown.
        let _ = cluster.refresh_metadata().await;
    }
    let retriable = |r: &Slot| r.as_ref().is_none_or(|r| r.as_ref().is_err_and(FetchError::is_retriable));
    // Rounds go on under the connection layer's retry rule: the codes of the
    // partitions still to retry decide between refreshing the metadata and backing
    // off, within the cluster's retry timeout.
    let policy = cluster.retry_policy().with_backoff(inner.config.retry_backoff, cluster.config().retry_backoff_max);
    let mut state = RetryState::new(&policy, tokio::time::Instant::now().into_std());
    loop {
        // A partition appears at most once per request (the broker answers it once),
        // so repeated queries of one partition go out in further rounds.
        let mut tried = vec![false; queries.len()];
        loop {
            let mut by_leader: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
            let mut in_round: HashSet<(&str, i32)> = HashSet::new();
            let mut deferred = false;
            for (i, (tp, _)) in queries.iter().enumerate() {
                let (topic, partition) = (&*tp.topic, tp.partition);
                if tried[i] || !retriable(&results[i]) {
                    continue;
                }
                if !in_round.insert((topic, partition)) {
                    deferred = true;
                    continue;
                }
                tried[i] = true;
                match route(inner, topic, partition) {
                    Ok(leader) => by_leader.entry(leader).or_default().push(i),
                    Err(e) => results[i] = Some(Err(e)),
                }
            }
            for (leader, indexes) in by_leader {
                if let Err(e) = list_on(inner, leader, queries, &indexes, isolation, &mut results).await {
                    for i in indexes {
                        results[i] = Some(Err(FetchError::Connection(e.clone())));
                    }
                }
            }
            if !deferred {
                break;
            }
        }
        // A failure without a code (a broken connection) asks for fresh metadata, as
        // NETWORK_EXCEPTION does.
        let codes: Vec<ErrorCode> = results
            .iter()
            .filter(|r| retriable(r))
            .map(|r| match r {
                Some(Err(e)) => e.error_code().unwrap_or(ErrorCode::NetworkException),
                _ => ErrorCode::NetworkException,
            })
            .collect();
        if codes.is_empty() {
            break;
        }
        match state.decide(Outcome::Answered(&codes), tokio::time::Instant::now().into_std(), fastrand::f64()) {
            Step::Retry { refresh_metadata, at, .. } => {
                if refresh_metadata {
                    let _ = cluster.refresh_metadata().await;
                }
                tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await;
            }
            Step::Done | Step::GiveUp(_) => break,
        }
    }
    results
        .into_iter()
        .map(|r| r.unwrap_or_else(|| Err(FetchError::InvalidArgument("no answer for this partition".into()))))
        .collect()
}

/// The leader of a partition from the metadata, or the error that prevents asking it.
fn route(inner: &Inner, topic: &str, partition: i32) -> Result<i32, FetchError> {
    let m = inner.cluster.metadata();
    let t = m.topics.get(topic).ok_or_else(|| FetchError::UnknownTopic { topic: topic.to_owned() })?;
    match t.error {
        ErrorCode::None => {}
        ErrorCode::UnknownTopicOrPartition => return Err(FetchError::UnknownTopic { topic: topic.to_owned() }),
        code => return Err(FetchError::Broker { topic: topic.to_owned(), partition, code, message: None }),
    }
    let p = t.partition(partition).ok_or_else(|| FetchError::UnknownPartition {
        topic: topic.to_owned(),
        partition,
        partitions: t.partitions.len(),
    })?;
    // A leader missing from the broker list is down (the metadata still names it).
    if p.leader < 0 || !m.brokers.contains_key(&p.leader) {
        return Err(FetchError::Broker {
            topic: topic.to_owned(),
            partition,
            code: ErrorCode::LeaderNotAvailable,
            message: None,
        });
    }
    Ok(p.leader)
}

async fn list_on(
    inner: &Inner,
    leader: i32,
    queries: &[(TopicPartition, OffsetSpec)],
    indexes: &[usize],
    isolation: IsolationLevel,
    results: &mut [Slot],
) -> Result<(), klife_connection::Error> {
    let conn = inner.cluster.broker(leader).await?;
    let version = conn.version_for(ApiKey::ListOffsets, None)?;
    let mut topics: BTreeMap<&str, Vec<ListOffsetsPartition>> = BTreeMap::new();
    for &i in indexes {
        let (tp, spec) = &queries[i];
        let (topic, partition) = (&*tp.topic, tp.partition);
        topics
            .entry(topic)
            .or_default()
            .push(ListOffsetsPartition::default().with_partition_index(partition).with_timestamp(spec.wire()));
    }
    let req = ListOffsetsRequest::default().with_replica_id(-1).with_isolation_level(isolation.code()).with_topics(
        topics
            .into_iter()
            .map(|(name, partitions)| {
                ListOffsetsTopic::default().with_name(name.to_owned()).with_partitions(partitions)
            })
            .collect(),
    );
    let resp = conn.send_version(&req, version).await?;
    for &i in indexes {
        let (topic, partition) = (&*queries[i].0.topic, queries[i].0.partition);
        let answer = resp
            .topics
            .iter()
            .filter(|t| t.name == topic)
            .flat_map(|t| t.partitions.iter())
            .find(|p| p.partition_index == partition);
        results[i] = Some(match answer {
            None => Err(FetchError::Broker {
                topic: topic.to_owned(),
                partition,
                code: ErrorCode::UnknownServerError,
                message: Some("the broker's answer left this partition out".into()),
            }),
            Some(p) => match ErrorCode::from_code(p.error_code) {
                ErrorCode::None => Ok(ListedOffset {
                    topic: topic.to_owned(),
                    partition,
                    offset: if version == 0 { p.old_style_offsets.first().copied().unwrap_or(-1) } else { p.offset },
                    timestamp: p.timestamp,
                    leader_epoch: (version >= 4 && p.leader_epoch >= 0).then_some(p.leader_epoch),
                }),
                code => Err(FetchError::Broker { topic: topic.to_owned(), partition, code, message: None }),
            },
        });
    }
    Ok(())
}

/// The error for a fetch whose offset is out of range, with the partition's valid
/// range when it can be looked up (-1 where it cannot).
pub(crate) async fn out_of_range(
    inner: &Arc<Inner>,
    target: &TopicPartitionOffset,
    isolation: IsolationLevel,
) -> FetchError {
    let (topic, partition) = (&*target.topic, target.partition);
    let tp = target.topic_partition();
    let found = list_offsets(inner, &[(tp.clone(), OffsetSpec::Earliest), (tp, OffsetSpec::Latest)], isolation).await;
    let offset_of =
        |r: Option<&Result<ListedOffset, FetchError>>| r.and_then(|r| r.as_ref().ok()).map_or(-1, |l| l.offset);
    FetchError::OffsetOutOfRange {
        topic: topic.to_owned(),
        partition,
        offset: target.offset,
        log_start_offset: offset_of(found.first()),
        high_watermark: offset_of(found.get(1)),
    }
}
