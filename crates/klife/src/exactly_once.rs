//! Exactly-once consume-transform-produce: a consumer group member whose every batch
//! is transformed into records that are produced, together with the batch's offsets,
//! in one transaction.
//!
//! [`ConsumerGroupBuilder::exactly_once`](crate::group::ConsumerGroupBuilder::exactly_once)
//! starts a member with one transactional producer (KIP-447: one per member, the
//! offsets carrying the member's id, generation or member epoch and instance id). For
//! each batch of a partition it owns, the member:
//!
//! 1. calls [`Transform::transform`] with the batch's records;
//! 2. begins a transaction, produces the records returned, adds the batch's next
//!    offset for the group (TxnOffsetCommit) and commits;
//! 3. only then takes the partition's next batch.
//!
//! The output of a batch and the group's progress past it become visible together, or
//! not at all. A read_committed reader of the output sees each input record's output
//! once, whatever members crash, are fenced or rebalance:
//!
//! - A member fenced out of the group (its session expired, a rebalance moved the
//!   partition, a zombie waking up with an old epoch) has its offsets refused by the
//!   coordinator, so its transaction aborts: its output is never visible, and the
//!   partition's new owner starts from the last committed transaction.
//! - A member that crashes leaves its transaction open; the coordinator aborts it when
//!   the transaction times out, or when a producer with the same transactional id starts
//!   again. Until then the partition's next owner waits (its committed-offset lookup is
//!   answered UNSTABLE_OFFSET_COMMIT), so it never reads past an undecided transaction.
//! - A transaction that fails otherwise (a record refused, a broker gone, an unknown
//!   outcome) is aborted and the batch processed again from the last commit, after a
//!   backoff; [`ExactlyOnceConfig::max_attempts`] failures of the same batch in a row
//!   stop the member with the last error. So does a [`Transform`] error, counted the
//!   same way.
//! - A producer fenced by another with the same transactional id stops the member:
//!   each live member needs its own [`transactional_id`](ExactlyOnceConfig::new).
//!
//! The input is read read_committed (the topics' default). Transactions go one at a
//! time per member, one per batch: a batch's size ([`TopicConfig::handler_max_batch_size`](crate::group::TopicConfig::handler_max_batch_size))
//! trades latency for throughput.
//!
//! ```no_run
//! use klife::exactly_once::{ExactlyOnceConfig, Transform, TransformError};
//! use klife::group::{ResetPolicy, TopicConfig};
//! use klife::{ProducerRecord, Record};
//!
//! struct Upper;
//!
//! impl Transform for Upper {
//!     async fn transform(&self, records: &[Record]) -> Result<Vec<ProducerRecord>, TransformError> {
//!         Ok(records
//!             .iter()
//!             .map(|r| {
//!                 let value = r.value.as_ref().map(|v| v.to_ascii_uppercase()).unwrap_or_default();
//!                 ProducerRecord::new("orders-upper", value)
//!             })
//!             .collect())
//!     }
//! }
//!
//! # async fn run(client: klife::Client) -> Result<(), klife::Error> {
//! let member = client
//!     .consumer_group("upper")
//!     .topic(TopicConfig::new("orders").offset_reset(ResetPolicy::Earliest))
//!     .exactly_once(ExactlyOnceConfig::new("upper-host-1"), Upper)
//!     .await?;
//! // ...
//! let stats = member.shutdown().await?;
//! println!("{} transactions committed", stats.transactions_committed);
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use klife_group::runtime::{AbortHandle, GroupEvent, GroupStream, StreamBatch};
use klife_producer::{ProduceError, ProducerRecord, TransactionalProducer};
use klife_protocol::{GroupMetadata, TopicPartition, TopicPartitionOffset};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::{Error, Record};

/// Why a [`Transform`] could not transform a batch.
pub type TransformError = Box<dyn std::error::Error + Send + Sync>;

/// What an exactly-once member makes of its records.
pub trait Transform: Send + Sync + 'static {
    /// The records to produce for `records` (one batch of one partition, in offset
    /// order), in the order to produce them. An error aborts the batch's transaction:
    /// the batch comes again after a backoff, and the member stops once it failed
    /// [`ExactlyOnceConfig::max_attempts`] times in a row.
    fn transform(&self, records: &[Record])
    -> impl Future<Output = Result<Vec<ProducerRecord>, TransformError>> + Send;
}

/// Settings of an exactly-once member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExactlyOnceConfig {
    /// The member's transactional id: stable for one instance across restarts (a
    /// restart fences its former self and aborts what it left open), different for
    /// every live member.
    pub transactional_id: String,
    /// How long a transaction may stay open before the coordinator aborts it (60 s):
    /// also how long a crashed member's partitions wait before their next owner reads
    /// them.
    pub transaction_timeout: Duration,
    /// Failed attempts of one batch in a row that stop the member (5).
    pub max_attempts: u32,
    /// The backoff after the first failure of a batch (500 ms), doubling up to
    /// `retry_backoff_max` (10 s).
    pub retry_backoff: Duration,
    /// See `retry_backoff`.
    pub retry_backoff_max: Duration,
}

impl ExactlyOnceConfig {
    /// The defaults, with this transactional id.
    pub fn new(transactional_id: impl Into<String>) -> ExactlyOnceConfig {
        ExactlyOnceConfig {
            transactional_id: transactional_id.into(),
            transaction_timeout: Duration::from_secs(60),
            max_attempts: 5,
            retry_backoff: Duration::from_millis(500),
            retry_backoff_max: Duration::from_secs(10),
        }
    }

    /// Sets [`transaction_timeout`](Self::transaction_timeout).
    pub fn with_transaction_timeout(mut self, timeout: Duration) -> ExactlyOnceConfig {
        self.transaction_timeout = timeout;
        self
    }

    /// Sets [`max_attempts`](Self::max_attempts).
    pub fn with_max_attempts(mut self, attempts: u32) -> ExactlyOnceConfig {
        self.max_attempts = attempts;
        self
    }

    /// Sets [`retry_backoff`](Self::retry_backoff) and its maximum.
    pub fn with_retry_backoff(mut self, first: Duration, max: Duration) -> ExactlyOnceConfig {
        self.retry_backoff = first;
        self.retry_backoff_max = max;
        self
    }

    pub(crate) fn check(&self) -> Result<(), Error> {
        if self.transactional_id.is_empty() {
            return Err(Error::invalid_argument("exactly-once: the transactional id is empty"));
        }
        if self.max_attempts == 0 {
            return Err(Error::invalid_argument("exactly-once: max_attempts must be at least 1"));
        }
        if self.transaction_timeout.is_zero() || self.transaction_timeout > Duration::from_millis(i32::MAX as u64) {
            return Err(Error::invalid_argument(
                "exactly-once: transaction_timeout must be between 1 ms and i32::MAX ms (the broker caps it at transaction.max.timeout.ms, 15 min by default)",
            ));
        }
        if self.retry_backoff > self.retry_backoff_max {
            return Err(Error::invalid_argument("exactly-once: retry_backoff is above retry_backoff_max"));
        }
        Ok(())
    }
}

/// What an exactly-once member did, from [`ExactlyOnce::stats`] and
/// [`ExactlyOnce::shutdown`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExactlyOnceStats {
    /// Transactions committed (one per batch).
    pub transactions_committed: u64,
    /// Transactions aborted (fenced, failed, or the transform failed).
    pub transactions_aborted: u64,
    /// Input records whose transaction committed.
    pub records_in: u64,
    /// Output records committed.
    pub records_out: u64,
}

#[derive(Debug, Default)]
struct Counters {
    committed: AtomicU64,
    aborted: AtomicU64,
    records_in: AtomicU64,
    records_out: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> ExactlyOnceStats {
        ExactlyOnceStats {
            transactions_committed: self.committed.load(Ordering::Relaxed),
            transactions_aborted: self.aborted.load(Ordering::Relaxed),
            records_in: self.records_in.load(Ordering::Relaxed),
            records_out: self.records_out.load(Ordering::Relaxed),
        }
    }
}

/// How the member is asked to end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Run,
    Graceful,
    Crash,
}

/// A running exactly-once member: see the [module documentation](self).
#[derive(Debug)]
pub struct ExactlyOnce {
    task: Option<JoinHandle<Result<(), Error>>>,
    stop: watch::Sender<Stop>,
    counters: Arc<Counters>,
    group: String,
    crash: AbortHandle,
}

impl ExactlyOnce {
    pub(crate) fn start<T: Transform>(
        stream: GroupStream,
        producer: TransactionalProducer,
        config: ExactlyOnceConfig,
        instance_id: Option<String>,
        transform: T,
    ) -> ExactlyOnce {
        let (stop, stop_rx) = watch::channel(Stop::Run);
        let counters = Arc::new(Counters::default());
        let group = stream.group().group().to_owned();
        let crash = stream.group().abort_handle();
        let member =
            Member { producer, config, instance_id, transform, counters: counters.clone(), failures: HashMap::new() };
        let task = tokio::spawn(member.run(stream, stop_rx));
        ExactlyOnce { task: Some(task), stop, counters, group, crash }
    }

    /// The group.
    pub fn group(&self) -> &str {
        &self.group
    }

    /// What the member did so far.
    pub fn stats(&self) -> ExactlyOnceStats {
        self.counters.snapshot()
    }

    /// Waits until the member ends by itself: `Err` with what stopped it (a batch
    /// failed [`ExactlyOnceConfig::max_attempts`] times, the producer was fenced, the
    /// member was fenced for good, the client closed).
    pub async fn wait(&mut self) -> Result<ExactlyOnceStats, Error> {
        match self.task.take() {
            Some(task) => join(task).await.map(|()| self.counters.snapshot()),
            None => Ok(self.counters.snapshot()),
        }
    }

    /// Ends the member gracefully: the transaction in flight finishes, the member
    /// leaves the group, the producer closes.
    pub async fn shutdown(mut self) -> Result<ExactlyOnceStats, Error> {
        let _ = self.stop.send(Stop::Graceful);
        self.wait().await
    }

    /// Ends the member at once, as a crash would: the transaction in flight is left
    /// open (the coordinator aborts it after the transaction timeout, or when the same
    /// transactional id starts again), the member does not leave the group.
    pub fn abort(mut self) {
        let _ = self.stop.send(Stop::Crash);
        // The member first, so that dropping the stream with the task cannot leave the
        // group gracefully.
        self.crash.abort();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Drop for ExactlyOnce {
    fn drop(&mut self) {
        // The task sees the sender go and shuts down gracefully in the background.
        let _ = self.stop.send(Stop::Graceful);
    }
}

async fn join(task: JoinHandle<Result<(), Error>>) -> Result<(), Error> {
    match task.await {
        Ok(result) => result,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => Err(Error::invalid_argument("exactly-once: the member was aborted")),
    }
}

/// How a batch's transaction failed.
enum Failure {
    /// Nothing more can be done: stop the member.
    Fatal(Error),
    /// The batch comes again from the last commit (within the attempts).
    Retry(Error),
    /// The member is no longer in the group as it was (fenced, rebalanced): the batch
    /// is not this member's to retry; its next owner starts from the last commit.
    Fenced,
}

struct Member<T> {
    producer: TransactionalProducer,
    config: ExactlyOnceConfig,
    instance_id: Option<String>,
    transform: T,
    counters: Arc<Counters>,
    /// Per partition, the offset whose batch failed and how often in a row.
    failures: HashMap<TopicPartition, (i64, u32)>,
}

/// The error that explains a failed transaction: an aborted one's cause.
fn cause(e: &ProduceError) -> &ProduceError {
    match e {
        ProduceError::TransactionAborted { source } => source,
        other => other,
    }
}

impl<T: Transform> Member<T> {
    async fn run(mut self, mut stream: GroupStream, mut stop: watch::Receiver<Stop>) -> Result<(), Error> {
        let mut closing = false;
        let result = loop {
            let event = tokio::select! {
                event = stream.next() => event,
                changed = stop.changed(), if !closing => {
                    let how = if changed.is_ok() { *stop.borrow() } else { Stop::Graceful };
                    match how {
                        Stop::Crash => {
                            stream.abort();
                            return Ok(());
                        }
                        Stop::Graceful | Stop::Run => {
                            closing = true;
                            stream.close();
                        }
                    }
                    continue;
                }
            };
            let Some(event) = event else { break Ok(()) };
            let GroupEvent::Batch(batch) = event else { continue };
            let outcome = match self.transform.transform(batch.records()).await {
                Ok(outputs) => {
                    let metadata = self.metadata(&stream);
                    self.process(outputs, metadata, &batch).await
                }
                Err(e) => {
                    self.counters.aborted.fetch_add(1, Ordering::Relaxed);
                    Err(Failure::Retry(Error::invalid_argument(format!(
                        "exactly-once: the transform failed on {}-{} at offset {}: {e}",
                        batch.topic(),
                        batch.partition(),
                        batch.records().first().map_or(batch.next_offset(), |r| r.offset)
                    ))))
                }
            };
            match outcome {
                Ok(()) => {
                    self.failures.remove(batch.topic_partition());
                    // The regular commit of the same offset lets the partition be
                    // handed over without waiting; it waits so that it can never land
                    // after the next transaction's offsets.
                    let _ = batch.commit_and_wait().await;
                }
                Err(Failure::Fatal(e)) => break Err(e),
                Err(Failure::Fenced) => {
                    tracing::info!(
                        topic = batch.topic(),
                        partition = batch.partition(),
                        "exactly-once: the member's offsets were refused (fenced or rebalanced); its transaction aborted"
                    );
                    restart(&stream, &batch);
                }
                Err(Failure::Retry(e)) => {
                    let tp = batch.topic_partition().clone();
                    let offset = batch.records().first().map_or(batch.next_offset(), |r| r.offset);
                    let entry = self.failures.entry(tp).or_insert((offset, 0));
                    if entry.0 != offset {
                        *entry = (offset, 0);
                    }
                    entry.1 += 1;
                    let attempts = entry.1;
                    if attempts >= self.config.max_attempts {
                        break Err(e);
                    }
                    tracing::warn!(
                        topic = batch.topic(),
                        partition = batch.partition(),
                        offset,
                        attempts,
                        error = %e,
                        "exactly-once: the batch's transaction failed; it comes again"
                    );
                    let backoff = self
                        .config
                        .retry_backoff
                        .saturating_mul(1 << (attempts - 1).min(16))
                        .min(self.config.retry_backoff_max);
                    restart(&stream, &batch);
                    tokio::time::sleep(backoff).await;
                }
            }
        };
        let shutdown = stream.shutdown().await.map_err(Error::from);
        self.producer.close().await;
        result.and(shutdown)
    }

    /// The member as the group knows it now, for the transaction's offsets.
    fn metadata(&self, stream: &GroupStream) -> GroupMetadata {
        let group = stream.group();
        let metadata = GroupMetadata::new(group.group()).with_member(group.member_id(), group.generation());
        match &self.instance_id {
            Some(id) => metadata.with_instance_id(id.as_str()),
            None => metadata,
        }
    }

    /// The outputs of one batch and its offset in one transaction.
    async fn process(
        &self,
        outputs: Vec<ProducerRecord>,
        metadata: GroupMetadata,
        batch: &StreamBatch,
    ) -> Result<(), Failure> {
        let count = outputs.len() as u64;
        let mut offset =
            TopicPartitionOffset::new(batch.topic_partition().topic.clone(), batch.partition(), batch.next_offset());
        offset.last_epoch = batch.records().last().and_then(|r| r.leader_epoch).filter(|e| *e >= 0);
        let result = self.transaction(outputs, &metadata, &offset).await;
        match result {
            Ok(()) => {
                self.counters.committed.fetch_add(1, Ordering::Relaxed);
                self.counters.records_in.fetch_add(batch.records().len() as u64, Ordering::Relaxed);
                self.counters.records_out.fetch_add(count, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                // Best effort (refused when the commit aborted it already): a failed
                // abort leaves the transaction to time out.
                let _ = self.producer.abort().await;
                self.counters.aborted.fetch_add(1, Ordering::Relaxed);
                let why = cause(&e);
                if why.is_fenced()
                    || why.error_code() == Some(klife_protocol::ErrorCode::TransactionalIdAuthorizationFailed)
                {
                    Err(Failure::Fatal(Error::from(e)))
                } else if e.is_group_member_fenced() {
                    Err(Failure::Fenced)
                } else {
                    Err(Failure::Retry(Error::from(e)))
                }
            }
        }
    }

    async fn transaction(
        &self,
        outputs: Vec<ProducerRecord>,
        metadata: &GroupMetadata,
        offset: &TopicPartitionOffset,
    ) -> Result<(), ProduceError> {
        self.producer.begin().await?;
        for record in outputs {
            // The record's outcome is the transaction's: a failure aborts it at commit.
            drop(self.producer.produce_async(record).await?);
        }
        self.producer.send_offsets_to_transaction(metadata, std::slice::from_ref(offset)).await?;
        self.producer.commit().await
    }
}

/// Restarts the batch's partition from its last commit, if this member still owns it:
/// a lease taken outside the stream while the batch is not committed makes the stream
/// report the partition lost, then assigned again, and deliver it again.
fn restart(stream: &GroupStream, batch: &StreamBatch) {
    let _ = stream.group().lease(batch.topic(), batch.partition());
}
