//! Transactions: a transactional producer (its producer id comes from the transaction
//! coordinator, partitions are added to the transaction before their first batch,
//! commit and abort end it), offsets committed inside a transaction for exactly-once
//! consume-transform-produce, and a pool of transactional producers for
//! `transaction(closure)`.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use klife_connection::sync::lock;
use klife_connection::{Cluster, CoordinatorType, Target};
use klife_protocol::messages::add_partitions_to_txn_request::{AddPartitionsToTxnRequest, AddPartitionsToTxnTopic};
use klife_protocol::messages::txn_offset_commit_request::{
    TxnOffsetCommitRequest, TxnOffsetCommitRequestPartition, TxnOffsetCommitRequestTopic,
};
use klife_protocol::messages::{AddOffsetsToTxnRequest, EndTxnRequest, InitProducerIdRequest};
use klife_protocol::{ErrorCode, Request};
use klife_protocol::{GroupMetadata, ProducerIdAndEpoch, TopicPartition, TopicPartitionOffset};
use tokio::sync::{Notify, oneshot};

use klife_connection::{ConfigError, ConfigProblem};

use crate::{
    DeliveryFuture, ProduceError, Producer, ProducerConfig, ProducerRecord, RecordMetadata, TransactionOperation,
    TransactionState,
};

/// Highest AddPartitionsToTxn version a client sends (v4+ are broker-to-broker).
const ADD_PARTITIONS_MAX_VERSION: i16 = 3;
/// The last EndTxn version of transaction version 1: v5 ends a transaction with a new
/// epoch (KIP-890), which a cluster at transaction version 1 does not run.
const END_TXN_MAX_VERSION_BEFORE_TV2: i16 = 4;

#[derive(Default)]
struct Txn {
    in_transaction: bool,
    partitions: HashSet<TopicPartition>,
    groups: HashSet<Arc<str>>,
    /// Records produced in this transaction whose outcome is not known yet.
    outstanding: usize,
    /// The first failure in this transaction (a record, a partition that could not be
    /// added, offsets that could not be sent): commit must abort instead.
    failed: Option<ProduceError>,
    /// The producer was fenced, or refused for good: every later call fails with this.
    fatal: Option<ProduceError>,
}

impl Txn {
    /// Notes a failure in the transaction, which can then only abort; a fenced
    /// producer can do nothing more.
    fn record_failed(&mut self, e: &ProduceError) {
        self.failed.get_or_insert_with(|| e.clone());
        if e.is_fenced() {
            self.fatal.get_or_insert_with(|| e.clone());
        }
    }
}

/// A producer whose records are written in transactions: all of a transaction's
/// records (and consumer offsets sent to it) become visible to read_committed consumers
/// together at commit, or never, at abort.
#[derive(Clone)]
pub struct TransactionalProducer {
    producer: Producer,
    transactional_id: Arc<str>,
    /// The producer id and epoch; EndTxn v5+ replaces them (KIP-890).
    id: Arc<Mutex<ProducerIdAndEpoch>>,
    state: Arc<Mutex<Txn>>,
    settled: Arc<Notify>,
    /// Serializes begin / commit / abort / send_offsets.
    control: Arc<tokio::sync::Mutex<()>>,
}

impl std::fmt::Debug for TransactionalProducer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransactionalProducer")
            .field("transactional_id", &self.transactional_id)
            .field("id", &self.producer_id())
            .finish()
    }
}

/// Codes that mean the producer was fenced: another producer took its transactional
/// id over, or its epoch is stale.
pub(crate) fn fenced(code: ErrorCode) -> bool {
    matches!(code, ErrorCode::ProducerFenced | ErrorCode::InvalidProducerEpoch)
}

/// Codes after which the transactional producer can do nothing more.
fn fatal(code: ErrorCode) -> bool {
    fenced(code) || code == ErrorCode::TransactionalIdAuthorizationFailed
}

impl TransactionalProducer {
    /// A transactional producer for `transactional_id`: asks the transaction coordinator
    /// for its producer id, which fences any older producer with the same id and
    /// aborts a transaction it left open.
    pub async fn new(
        cluster: Cluster,
        mut config: ProducerConfig,
        transactional_id: impl Into<String>,
        transaction_timeout: Duration,
    ) -> Result<TransactionalProducer, ProduceError> {
        config.idempotence = true;
        config.acks = crate::Acks::All;
        config.validate()?;
        let transactional_id: Arc<str> = transactional_id.into().into();
        let timeout_ms = i32::try_from(transaction_timeout.as_millis()).unwrap_or(i32::MAX);
        let req = InitProducerIdRequest::default()
            .with_transactional_id(Some(transactional_id.to_string()))
            .with_transaction_timeout_ms(timeout_ms);
        let resp = coordinator_call(
            &cluster,
            CoordinatorType::Transaction,
            &transactional_id,
            None,
            |_| req.clone(),
            |r| [(r.error_code, None)],
        )
        .await?;
        let id = ProducerIdAndEpoch::new(resp.producer_id, resp.producer_epoch);
        Ok(TransactionalProducer {
            producer: Producer::start(cluster, config, Some(id), Some(transactional_id.clone())),
            transactional_id,
            id: Arc::new(Mutex::new(id)),
            state: Arc::new(Mutex::new(Txn::default())),
            settled: Arc::new(Notify::new()),
            control: Arc::new(tokio::sync::Mutex::new(())),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Txn> {
        lock(&self.state)
    }

    /// The transactional id.
    pub fn transactional_id(&self) -> &str {
        &self.transactional_id
    }

    /// The producer id and epoch the coordinator gave (with transaction version 2, the
    /// epoch goes up at the end of every transaction).
    pub fn producer_id(&self) -> ProducerIdAndEpoch {
        *lock(&self.id)
    }

    fn check_usable(&self) -> Result<(), ProduceError> {
        match &self.lock().fatal {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// Fails `operation` unless a transaction is open.
    fn check_open(&self, operation: TransactionOperation) -> Result<(), ProduceError> {
        if self.lock().in_transaction {
            Ok(())
        } else {
            Err(ProduceError::TransactionState { operation, state: TransactionState::Idle })
        }
    }

    /// Starts a transaction.
    pub async fn begin(&self) -> Result<(), ProduceError> {
        let _control = self.control.lock().await;
        self.check_usable()?;
        let mut s = self.lock();
        if s.in_transaction {
            return Err(ProduceError::TransactionState {
                operation: TransactionOperation::Begin,
                state: TransactionState::InTransaction,
            });
        }
        *s = Txn { in_transaction: true, fatal: s.fatal.take(), ..Txn::default() };
        Ok(())
    }

    /// Produces a record in the open transaction; the future gives its outcome. A
    /// record that fails, here or in its future, makes the transaction's
    /// [`commit`](Self::commit) abort it instead.
    pub async fn produce_async(&self, mut record: ProducerRecord) -> Result<DeliveryFuture, ProduceError> {
        self.check_usable()?;
        self.check_open(TransactionOperation::Produce)?;
        let added: Result<(), ProduceError> = async {
            let (partition, _) = self.producer.partition_of(&record).await?;
            record.partition = Some(partition);
            let key = TopicPartition::new(record.topic.clone(), partition);
            if !self.lock().partitions.contains(&key) {
                self.add_partition(&key).await?;
                self.lock().partitions.insert(key);
            }
            Ok(())
        }
        .await;
        if let Err(e) = added {
            self.lock().record_failed(&e);
            return Err(e);
        }
        let (tx, rx) = oneshot::channel();
        self.lock().outstanding += 1;
        let state = self.state.clone();
        let settled = self.settled.clone();
        let result = self
            .producer
            .produce_with_callback(record, move |outcome| {
                {
                    let mut s = lock(&state);
                    s.outstanding -= 1;
                    if let Err(e) = &outcome {
                        s.record_failed(e);
                    }
                }
                settled.notify_waiters();
                let _ = tx.send(outcome);
            })
            .await;
        if let Err(e) = result {
            let mut s = self.lock();
            s.outstanding -= 1;
            s.record_failed(&e);
            return Err(e);
        }
        Ok(DeliveryFuture::from_receiver(rx))
    }

    /// Produces a record in the open transaction and waits for its outcome.
    pub async fn produce(&self, record: ProducerRecord) -> Result<RecordMetadata, ProduceError> {
        self.produce_async(record).await?.await
    }

    /// Produces records in the open transaction; one result per record, in order.
    pub async fn produce_batch(&self, records: Vec<ProducerRecord>) -> Vec<Result<RecordMetadata, ProduceError>> {
        let mut queued = Vec::with_capacity(records.len());
        for r in records {
            queued.push(self.produce_async(r).await);
        }
        crate::producer::outcomes_in_order(queued).await
    }

    /// Adds a partition to the transaction (AddPartitionsToTxn). UNKNOWN_TOPIC_OR_PARTITION
    /// is retried, as the Java client does, while the cluster metadata still has the
    /// partition (the coordinator may not know a topic just created yet); once the
    /// refreshed metadata says it is gone, the call fails with
    /// [`ProduceError::UnknownTopic`] rather than retrying until the retry timeout.
    async fn add_partition(&self, tp: &TopicPartition) -> Result<(), ProduceError> {
        let id = self.producer_id();
        let req = AddPartitionsToTxnRequest::default()
            .with_v3_and_below_transactional_id(self.transactional_id.to_string())
            .with_v3_and_below_producer_id(id.id)
            .with_v3_and_below_producer_epoch(id.epoch)
            .with_v3_and_below_topics(vec![
                AddPartitionsToTxnTopic::default().with_name(tp.topic.to_string()).with_partitions(vec![tp.partition]),
            ]);
        let cluster = self.producer.cluster();
        let resp = coordinator_call(
            cluster,
            CoordinatorType::Transaction,
            &self.transactional_id,
            Some(ADD_PARTITIONS_MAX_VERSION),
            |_| req.clone(),
            |r| {
                let codes = r
                    .results_by_topic_v3_and_below
                    .iter()
                    .flat_map(|t| t.results_by_partition.iter().map(move |p| (&*t.name, p)))
                    .map(|(topic, p)| (topic, p.partition_index, ErrorCode::from_code(p.partition_error_code)));
                still_retriable(cluster, codes)
            },
        )
        .await
        .and_then(|r| {
            let gone = r
                .results_by_topic_v3_and_below
                .iter()
                .flat_map(|t| t.results_by_partition.iter())
                .any(|p| ErrorCode::from_code(p.partition_error_code) == ErrorCode::UnknownTopicOrPartition);
            if gone { Err(ProduceError::UnknownTopic { topic: tp.topic.to_string() }) } else { Ok(()) }
        });
        self.note_fencing(resp)
    }

    /// A coordinator's answer: one that fences the producer becomes
    /// [`ProduceError::Fenced`], and that (or an authorization failure) is what every
    /// later call returns.
    fn note_fencing<T>(&self, r: Result<T, ProduceError>) -> Result<T, ProduceError> {
        let e = match r {
            Err(e) if e.error_code().is_some_and(fatal) => e,
            other => return other,
        };
        let e = match e.error_code() {
            Some(code) if fenced(code) => {
                let id = self.producer_id();
                ProduceError::Fenced {
                    transactional_id: self.transactional_id.to_string(),
                    producer_id: id.id,
                    epoch: id.epoch,
                    code,
                }
            }
            _ => e,
        };
        self.lock().fatal.get_or_insert_with(|| e.clone());
        Err(e)
    }

    /// Adds consumer offsets to the open transaction (exactly-once
    /// consume-transform-produce): they are committed for the group if, and only if,
    /// the transaction commits. Each offset is the next one to read, with the leader
    /// epoch of the last record read ([`TopicPartitionOffset::last_epoch`]) when known
    /// (sent as the committed leader epoch from TxnOffsetCommit v2).
    ///
    /// `group` names the group; a member of it passes its member id, generation (or
    /// member epoch) and instance id ([`GroupMetadata::with_member`]), which brokers
    /// with TxnOffsetCommit v3+ (Kafka 2.5+) check so that a member fenced out of the
    /// group cannot commit for it (older brokers are sent the group id alone).
    /// [`GroupMetadata::new`] without a member is a producer outside the group.
    ///
    /// If it fails (other than for the transaction's state), the transaction can only
    /// abort: [`commit`](Self::commit) aborts it and returns
    /// [`ProduceError::TransactionAborted`] with this failure as its source, so that the
    /// records are never committed without the offsets.
    pub async fn send_offsets_to_transaction(
        &self,
        group: &GroupMetadata,
        offsets: &[TopicPartitionOffset],
    ) -> Result<(), ProduceError> {
        let _control = self.control.lock().await;
        self.check_usable()?;
        self.check_open(TransactionOperation::SendOffsets)?;
        let result = self.send_offsets(group, offsets).await;
        if let Err(e) = &result {
            self.lock().record_failed(e);
        }
        result
    }

    async fn send_offsets(&self, group: &GroupMetadata, offsets: &[TopicPartitionOffset]) -> Result<(), ProduceError> {
        let cluster = self.producer.cluster();
        let group_id = &*group.group_id;
        if !self.lock().groups.contains(group_id) {
            let id = self.producer_id();
            let req = AddOffsetsToTxnRequest::default()
                .with_transactional_id(self.transactional_id.to_string())
                .with_producer_id(id.id)
                .with_producer_epoch(id.epoch)
                .with_group_id(group_id.to_owned());
            let r = coordinator_call(
                cluster,
                CoordinatorType::Transaction,
                &self.transactional_id,
                None,
                |_| req.clone(),
                |r| [(r.error_code, None)],
            )
            .await;
            self.note_fencing(r.map(|_| ()))?;
            self.lock().groups.insert(group.group_id.clone());
        }
        // The metadata must know the topics for UNKNOWN_TOPIC_OR_PARTITION to be told
        // apart: a partition the coordinator does not know yet, or one that is gone.
        let known = cluster.metadata();
        let mut missing: Vec<&str> =
            offsets.iter().map(|o| &*o.topic).filter(|t| !known.topics.contains_key(*t)).collect();
        missing.sort_unstable();
        missing.dedup();
        if !missing.is_empty() {
            cluster.add_topics(&missing).await?;
        }
        let id = self.producer_id();
        let build = |version: i16| {
            let mut topics: Vec<TxnOffsetCommitRequestTopic> = Vec::new();
            for o in offsets {
                let mut p = TxnOffsetCommitRequestPartition::default()
                    .with_partition_index(o.partition)
                    .with_committed_offset(o.offset)
                    .with_committed_metadata(Some(String::new()));
                if let (Some(epoch), true) = (o.last_epoch, version >= 2) {
                    p = p.with_committed_leader_epoch(epoch);
                }
                match topics.iter_mut().find(|t| *t.name == *o.topic) {
                    Some(t) => t.partitions.push(p),
                    None => topics.push(
                        TxnOffsetCommitRequestTopic::default().with_name(o.topic.to_string()).with_partitions(vec![p]),
                    ),
                }
            }
            let mut req = TxnOffsetCommitRequest::default()
                .with_transactional_id(self.transactional_id.to_string())
                .with_group_id(group_id.to_owned())
                .with_producer_id(id.id)
                .with_producer_epoch(id.epoch)
                .with_topics(topics);
            if version >= 3 {
                req = req
                    .with_member_id(group.member_id.to_string())
                    .with_generation_id(group.generation_id)
                    .with_group_instance_id(group.group_instance_id.as_deref().map(str::to_owned));
            }
            req
        };
        let r = coordinator_call(cluster, CoordinatorType::Group, group_id, None, build, |r| {
            let codes = r
                .topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(move |p| (&*t.name, p)))
                .map(|(topic, p)| (topic, p.partition_index, ErrorCode::from_code(p.error_code)));
            still_retriable(cluster, codes)
        })
        .await
        .and_then(|r| {
            let gone = r.topics.iter().find(|t| {
                t.partitions.iter().any(|p| ErrorCode::from_code(p.error_code) == ErrorCode::UnknownTopicOrPartition)
            });
            match gone {
                Some(t) => Err(ProduceError::UnknownTopic { topic: t.name.to_string() }),
                None => Ok(()),
            }
        });
        self.note_fencing(r)
    }

    /// Waits until every record of the transaction has its outcome.
    async fn settle(&self) {
        self.producer.flush().await;
        loop {
            let notified = self.settled.notified();
            if self.lock().outstanding == 0 {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
        }
    }

    /// Commits the open transaction. If any of its records failed, the transaction is
    /// aborted instead: [`ProduceError::TransactionAborted`], with the first failure as
    /// its source.
    pub async fn commit(&self) -> Result<(), ProduceError> {
        let _control = self.control.lock().await;
        self.check_usable()?;
        self.check_open(TransactionOperation::Commit)?;
        self.settle().await;
        let failed = self.lock().failed.clone();
        if let Some(first) = failed {
            self.end(false).await?;
            return Err(ProduceError::TransactionAborted { source: Box::new(first) });
        }
        self.end(true).await
    }

    /// Aborts the open transaction: none of its records or offsets become visible to
    /// read_committed consumers.
    pub async fn abort(&self) -> Result<(), ProduceError> {
        let _control = self.control.lock().await;
        self.check_usable()?;
        self.check_open(TransactionOperation::Abort)?;
        self.settle().await;
        self.end(false).await
    }

    /// Ends the open transaction (checked by the caller, under the control lock).
    async fn end(&self, commit: bool) -> Result<(), ProduceError> {
        let touched = {
            let s = self.lock();
            !s.partitions.is_empty() || !s.groups.is_empty()
        };
        // A transaction that touched nothing is unknown to the coordinator: ending it
        // there would be an error, and there is nothing to end.
        if touched {
            let id = self.producer_id();
            let req = EndTxnRequest::default()
                .with_transactional_id(self.transactional_id.to_string())
                .with_producer_id(id.id)
                .with_producer_epoch(id.epoch)
                .with_committed(commit);
            // Transaction version 2 (KIP-890) comes with EndTxn v5; on a cluster still
            // at version 1, ask for the protocol it runs, as the Java client does.
            let cluster = self.producer.cluster();
            let max_version = match cluster.any_broker().await {
                Ok(conn) if conn.versions().transaction_version() >= 2 => None,
                _ => Some(END_TXN_MAX_VERSION_BEFORE_TV2),
            };
            let r = coordinator_call(
                cluster,
                CoordinatorType::Transaction,
                &self.transactional_id,
                max_version,
                |_| req.clone(),
                |r| [(r.error_code, None)],
            )
            .await;
            // No answer, or none before the retries ran out: the coordinator may have
            // ended the transaction. It stays open here, for the caller to ask again.
            let r = r.map_err(|e| match e {
                ProduceError::Connection(source) => ProduceError::TransactionOutcomeUnknown { commit, source },
                e => e,
            });
            let resp = self.note_fencing(r)?;
            // With transaction version 2 the coordinator ends every transaction with a
            // new epoch (or, when the epoch runs out, a new producer id), and fences the
            // old one: the next transaction must use it.
            if resp.producer_id >= 0 && resp.producer_epoch >= 0 {
                let new = ProducerIdAndEpoch::new(resp.producer_id, resp.producer_epoch);
                *lock(&self.id) = new;
                self.producer.adopt_producer_id(new);
            }
        }
        let mut s = self.lock();
        *s = Txn { fatal: s.fatal.take(), ..Txn::default() };
        Ok(())
    }

    /// Runs `body` in a transaction: commits when it returns `Ok`, aborts when it
    /// returns `Err` (and returns that error), aborts and reports when the commit fails.
    pub async fn transaction<T, E, F, Fut>(&self, body: F) -> Result<T, TransactionError<E>>
    where
        F: FnOnce(TransactionalProducer) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        self.begin().await.map_err(TransactionError::Producer)?;
        match body(self.clone()).await {
            Ok(value) => {
                self.commit().await.map_err(TransactionError::Producer)?;
                Ok(value)
            }
            Err(e) => {
                self.abort().await.map_err(TransactionError::Producer)?;
                Err(TransactionError::Aborted(e))
            }
        }
    }

    /// Flushes and stops the producer.
    pub async fn close(&self) {
        self.producer.close().await;
    }
}

/// A pool of transactional producers, `{base}-0` … `{base}-{size-1}`: each transaction
/// takes a free producer for its duration, so up to `size` transactions run at once.
pub struct TransactionPool {
    free: tokio::sync::Mutex<Vec<TransactionalProducer>>,
    slots: tokio::sync::Semaphore,
    all: Vec<TransactionalProducer>,
}

impl std::fmt::Debug for TransactionPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransactionPool").field("size", &self.all.len()).finish()
    }
}

impl TransactionPool {
    /// Creates `size` transactional producers with ids `{base_transactional_id}-{i}`.
    pub async fn new(
        cluster: Cluster,
        config: ProducerConfig,
        base_transactional_id: &str,
        size: usize,
        transaction_timeout: Duration,
    ) -> Result<TransactionPool, ProduceError> {
        if size == 0 {
            return Err(ConfigError::new("TransactionPool::new", "size", ConfigProblem::Zero).into());
        }
        let mut all = Vec::with_capacity(size);
        for i in 0..size {
            let id = format!("{base_transactional_id}-{i}");
            all.push(TransactionalProducer::new(cluster.clone(), config.clone(), id, transaction_timeout).await?);
        }
        Ok(TransactionPool {
            free: tokio::sync::Mutex::new(all.clone()),
            slots: tokio::sync::Semaphore::new(size),
            all,
        })
    }

    /// Runs `body` in a transaction on a free producer of the pool (waiting for one):
    /// commits on `Ok`, aborts on `Err`.
    pub async fn transaction<T, E, F, Fut>(&self, body: F) -> Result<T, TransactionError<E>>
    where
        F: FnOnce(TransactionalProducer) -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        let _slot = self.slots.acquire().await.map_err(|_| TransactionError::Producer(ProduceError::Closed))?;
        let producer = self.free.lock().await.pop().ok_or(TransactionError::Producer(ProduceError::Closed))?;
        let result = producer.transaction(body).await;
        self.free.lock().await.push(producer);
        result
    }

    /// Produces `records` in one transaction: all are committed, or, if any fails,
    /// none (the error names the first failure).
    pub async fn produce_batch_txn(
        &self,
        records: Vec<ProducerRecord>,
    ) -> Result<Vec<RecordMetadata>, TransactionError<ProduceError>> {
        self.transaction(|txn| async move { txn.produce_batch(records).await.into_iter().collect() }).await
    }

    /// Flushes and stops every producer of the pool.
    pub async fn close(&self) {
        self.slots.close();
        for p in &self.all {
            p.close().await;
        }
    }
}

/// How [`TransactionalProducer::transaction`] can fail.
#[derive(Debug, thiserror::Error)]
pub enum TransactionError<E> {
    /// The body returned an error; the transaction was aborted.
    #[error("the transaction was aborted: {0}")]
    Aborted(E),
    /// The producer or the coordinator failed (begin, commit or abort).
    #[error(transparent)]
    Producer(ProduceError),
}

/// Sends a request to the coordinator of `key` under the connection layer's retry rule
/// ([`Cluster::call_with`]: NOT_COORDINATOR finds the coordinator again,
/// COORDINATOR_LOAD_IN_PROGRESS and CONCURRENT_TRANSACTIONS back off, a broken
/// connection is tried again). `build` makes the request for the version sent (at
/// most `max_version`); `errors` reads the codes (with the coordinator's message) the
/// rule decides on. A code the rule does not retry is [`ProduceError::Coordinator`],
/// with the coordinator's message; retries that ran out keep the last error.
async fn coordinator_call<R, B, F, I>(
    cluster: &Cluster,
    kind: CoordinatorType,
    key: &str,
    max_version: Option<i16>,
    build: B,
    errors: F,
) -> Result<R::Response, ProduceError>
where
    R: Request,
    B: Fn(i16) -> R,
    F: Fn(&R::Response) -> I,
    I: IntoIterator,
    I::Item: Into<klife_connection::retry::AnswerError>,
{
    let policy = cluster.retry_policy();
    let build = &build;
    let result = cluster
        .call_with(
            Target::Coordinator(kind, key),
            R::API_KEY,
            &policy,
            |conn| async move {
                let version = conn.version_for(R::API_KEY, max_version)?;
                conn.send_version(&build(version), version).await
            },
            errors,
        )
        .await;
    result.map_err(|e| match e {
        klife_connection::Error::Broker { api, code, message, .. } if api == R::API_KEY => {
            ProduceError::Coordinator { api, key: key.to_owned(), code, message }
        }
        e => ProduceError::Connection(e),
    })
}

/// The codes of per-partition answers the retry rule decides on: all of them but
/// UNKNOWN_TOPIC_OR_PARTITION for a partition the cluster metadata no longer has
/// (refreshed by the rule after such an answer), which no retry can fix and the
/// caller reports.
fn still_retriable<'a>(
    cluster: &Cluster,
    codes: impl Iterator<Item = (&'a str, i32, ErrorCode)>,
) -> Vec<(ErrorCode, Option<String>)> {
    let metadata = cluster.metadata();
    codes
        .filter(|&(topic, partition, code)| {
            code != ErrorCode::UnknownTopicOrPartition
                || metadata
                    .topics
                    .get(topic)
                    .is_some_and(|t| t.error != ErrorCode::UnknownTopicOrPartition && t.partition(partition).is_some())
        })
        .map(|(_, _, code)| (code, None))
        .collect()
}
