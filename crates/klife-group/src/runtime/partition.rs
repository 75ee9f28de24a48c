//! The consumer of one assigned partition: it fetches through the group's fetcher,
//! gives batches to the handler, carries out its actions, and reports what is done
//! to the group's task, which commits it. It only moves records and timers: what an
//! action means is decided in [`settle`](super::settle).

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use klife_fetcher::{Consumer, ConsumerEvent, FetchError, FetchOptions, Fetched, Fetcher, Record, StartOffset};
use klife_producer::{Producer, ProducerRecord};
use klife_protocol::records::Header;
use klife_protocol::types::{TopicPartition, TopicPartitionOffset};
use tokio::sync::{mpsc, oneshot, watch};

use super::config::TopicSettings;
use super::handler::{BatchContext, Handler, PartitionContext, PartitionError, StopReason};
use super::manual::{Batch, Slot};
use super::settle::{DeadLetter, settle};
use crate::telemetry::{self, PartitionMetrics};

/// The header naming the topic a dead letter came from.
pub const DLQ_TOPIC_HEADER: &str = "klife.dlq.topic";
/// The header naming the partition a dead letter came from.
pub const DLQ_PARTITION_HEADER: &str = "klife.dlq.partition";
/// The header naming the offset a dead letter had.
pub const DLQ_OFFSET_HEADER: &str = "klife.dlq.offset";
/// The header naming the group that dead-lettered it.
pub const DLQ_GROUP_HEADER: &str = "klife.dlq.group";
/// The header with the handler's reason.
pub const DLQ_REASON_HEADER: &str = "klife.dlq.reason";

/// What the group's task tells a partition's consumer.
#[derive(Debug, Clone)]
pub(crate) enum Control {
    /// Go on.
    Run,
    /// Finish the batch in hand, report [`Report::Stopped`] and wait for `Close`.
    Stop,
    /// Finish the batch in hand (nothing more is reported done), call
    /// `on_consumer_stop` with the reason and end with [`Report::Closed`].
    Close(StopReason),
}

/// What a partition's consumer tells the group's task.
#[derive(Debug)]
pub(crate) enum Report {
    /// The handler finished records up to `position` (the next offset to handle).
    Done { position: TopicPartitionOffset, metadata: Option<String> },
    /// Stopped after a [`Control::Stop`]: nothing more will be done.
    Stopped { partition: TopicPartition, task: u64 },
    /// Ended, after `on_consumer_stop`.
    Closed { partition: TopicPartition, task: u64 },
    /// Failed, after `on_consumer_stop`; the task ended.
    Failed { partition: TopicPartition, task: u64, error: Arc<PartitionError> },
}

/// A partition's consumer, before it runs.
pub(crate) struct PartitionConsumer<H> {
    pub(crate) task: u64,
    pub(crate) handler: Arc<H>,
    pub(crate) ctx: PartitionContext,
    pub(crate) settings: Arc<TopicSettings>,
    pub(crate) fetcher: Fetcher,
    pub(crate) producer: Option<Producer>,
    pub(crate) start: StartOffset,
    /// The position `start` names, looked up with other partitions starting at the
    /// same moment (a failed lookup leaves it to this consumer).
    pub(crate) looked_up: Option<oneshot::Receiver<Result<i64, FetchError>>>,
    /// A wait before starting (after a failure).
    pub(crate) delay: Duration,
    pub(crate) committed: watch::Receiver<Option<i64>>,
    pub(crate) control: watch::Receiver<Control>,
    pub(crate) reports: mpsc::UnboundedSender<Report>,
    /// In manual mode, where the batches go and the lease's state.
    pub(crate) slot: Option<Arc<Slot>>,
    /// The partition's metrics.
    pub(crate) metrics: PartitionMetrics,
}

/// How the consuming loop ended.
enum Exit {
    Stop,
    Close(StopReason),
    Failed(PartitionError),
}

impl<H: Handler> PartitionConsumer<H> {
    fn partition(&self) -> TopicPartition {
        TopicPartition::new(self.ctx.topic.clone(), self.ctx.partition)
    }

    pub(crate) async fn run(mut self) {
        let exit = match self.slot.clone() {
            Some(slot) => self.consume_manual(&slot).await,
            None => self.consume().await,
        };
        if let Some(slot) = &self.slot {
            slot.release(matches!(exit, Exit::Stop));
        }
        self.metrics.lag().stopped();
        let partition = self.partition();
        let task = self.task;
        let reason = match exit {
            Exit::Failed(error) => {
                let error = Arc::new(error);
                tracing::error!(%partition, error = %error, "the partition's consumer failed");
                telemetry::record_partition_failure(&self.ctx.group, &self.ctx.topic);
                self.call_stop(&StopReason::Failed(error.clone())).await;
                let _ = self.reports.send(Report::Failed { partition, task, error });
                return;
            }
            Exit::Close(reason) => reason,
            Exit::Stop => {
                let _ = self.reports.send(Report::Stopped { partition: partition.clone(), task });
                loop {
                    if let Control::Close(reason) = self.control.borrow_and_update().clone() {
                        break reason;
                    }
                    if self.control.changed().await.is_err() {
                        // The group's task is gone: nothing will be committed.
                        break StopReason::Lost;
                    }
                }
            }
        };
        self.call_stop(&reason).await;
        let _ = self.reports.send(Report::Closed { partition, task });
    }

    async fn call_stop(&self, reason: &StopReason) {
        if let Err(panic) = catch_unwind(self.handler.on_consumer_stop(&self.ctx, reason)).await {
            tracing::error!(partition = %self.partition(), message = %panic_message(&*panic), "on_consumer_stop panicked");
        }
    }

    /// What the group asks now, if it asks to end.
    fn asked_to_end(&mut self) -> Option<Exit> {
        if self.control.has_changed().is_err() {
            // The group's task is gone (aborted): nothing will be committed.
            return Some(Exit::Close(StopReason::Lost));
        }
        match self.control.borrow_and_update().clone() {
            Control::Run => None,
            Control::Stop => Some(Exit::Stop),
            Control::Close(reason) => Some(Exit::Close(reason)),
        }
    }

    /// Waits `wait`, unless the group asks to end meanwhile.
    async fn pause(&mut self, wait: Duration) -> Option<Exit> {
        if wait.is_zero() {
            return self.asked_to_end();
        }
        let sleep = tokio::time::sleep(wait);
        tokio::pin!(sleep);
        loop {
            if let Some(exit) = self.asked_to_end() {
                return Some(exit);
            }
            tokio::select! {
                () = &mut sleep => return self.asked_to_end(),
                changed = self.control.changed() => if changed.is_err() { return Some(Exit::Close(StopReason::Lost)) },
            }
        }
    }

    /// Waits for the delay, assigns the partition to a consumer of the fetcher and calls
    /// `on_consumer_start`.
    async fn open(&mut self) -> Result<Consumer, Exit> {
        let delay = self.delay;
        if let Some(exit) = self.pause(delay).await {
            return Err(exit);
        }
        let start = match self.looked_up.take() {
            Some(mut answer) => loop {
                if let Some(exit) = self.asked_to_end() {
                    return Err(exit);
                }
                tokio::select! {
                    answer = &mut answer => break match answer {
                        Ok(Ok(offset)) => StartOffset::Offset(offset),
                        // Looked up again by the consumer, which retries what passes.
                        _ => self.start,
                    },
                    changed = self.control.changed() => if changed.is_err() { return Err(Exit::Close(StopReason::Lost)) },
                }
            },
            None => self.start,
        };
        let s = self.settings.clone();
        let mut consumer = Consumer::new(self.fetcher.clone(), self.fetch_options())
            .with_offset_reset(s.fetch_reset())
            .with_prefetch(s.max_queue_size.saturating_sub(1))
            .with_idle_backoff(s.fetch_interval, super::config::MAX_IDLE_STEPS);
        let target = [(&*self.ctx.topic, self.ctx.partition, start)];
        let mut assigned = consumer.assign(&target).await;
        // The coordinator assigned the partition, so a metadata that does not know it
        // (partitions added since it was read) is behind: read it again, once.
        if let Err(FetchError::UnknownPartition { .. } | FetchError::UnknownTopic { .. }) = &assigned {
            if self.fetcher.cluster().add_topics(&[&*self.ctx.topic]).await.is_ok() {
                assigned = consumer.assign(&target).await;
            }
        }
        if let Err(e) = assigned {
            return Err(Exit::Failed(e.into()));
        }
        if let Err(panic) = catch_unwind(self.handler.on_consumer_start(&self.ctx)).await {
            return Err(Exit::Failed(PartitionError::Panicked {
                topic: self.ctx.topic.to_string(),
                partition: self.ctx.partition,
                message: panic_message(&*panic),
            }));
        }
        tracing::info!(partition = %self.partition(), ?start, "the partition's consumer starts");
        Ok(consumer)
    }

    /// Manual mode: fills the slot's queue for the lease to pull; on a graceful stop,
    /// waits for what was pulled to be committed.
    async fn consume_manual(&mut self, slot: &Slot) -> Exit {
        let mut consumer = match self.open().await {
            Ok(c) => c,
            Err(exit) => return exit,
        };
        let s = self.settings.clone();
        let mut chunks = std::collections::VecDeque::new();
        loop {
            match self.asked_to_end() {
                None => {}
                Some(Exit::Stop) => return self.settle_manual(slot).await,
                Some(exit) => return exit,
            }
            if slot.restart_asked() {
                return Exit::Failed(PartitionError::LeaseDropped {
                    topic: self.ctx.topic.to_string(),
                    partition: self.ctx.partition,
                });
            }
            let room = slot.queued() < s.max_queue_size;
            tokio::select! {
                event = consumer.next_event(), if room => match event {
                    Some(ConsumerEvent::Records(fetched)) => {
                        let (topic, partition) = (fetched.topic.clone(), fetched.partition);
                        self.metrics.lag().fetched(fetched.high_watermark, fetched.offset);
                        chunk(fetched, s.max_batch_size(), &mut chunks);
                        self.metrics.batch(chunks.iter().map(|c| c.0.len()).sum());
                        slot.push(chunks.drain(..).map(|(records, next_offset, high_watermark)| Batch {
                            topic: topic.clone(),
                            partition,
                            records,
                            next_offset,
                            high_watermark,
                        }));
                    }
                    Some(ConsumerEvent::Error(e)) if e.is_retriable() => {
                        tracing::warn!(partition = %self.partition(), error = %e, "fetch failed; fetching again");
                    }
                    Some(ConsumerEvent::Error(e)) => return Exit::Failed(e.into()),
                    Some(_) => {}
                    None => return Exit::Close(StopReason::Lost),
                },
                changed = self.control.changed() => if changed.is_err() { return Exit::Close(StopReason::Lost) },
                () = slot.changed() => {}
            }
        }
    }

    /// A graceful stop in manual mode: no more pulls, then what was pulled is
    /// committed (or the lease dropped) before the consumer reports it stopped.
    async fn settle_manual(&mut self, slot: &Slot) -> Exit {
        slot.begin_stop();
        loop {
            if slot.settled() {
                return Exit::Stop;
            }
            tokio::select! {
                () = slot.changed() => {}
                changed = self.control.changed() => {
                    if changed.is_err() {
                        return Exit::Close(StopReason::Lost);
                    }
                    if let Some(Exit::Close(reason)) = self.asked_to_end() {
                        return Exit::Close(reason);
                    }
                }
            }
        }
    }

    async fn consume(&mut self) -> Exit {
        let mut consumer = match self.open().await {
            Ok(c) => c,
            Err(exit) => return exit,
        };
        let topic = self.ctx.topic.clone();
        let partition = self.ctx.partition;
        let s = self.settings.clone();
        // Chunks of the answer in hand: records, the offset after them, the high watermark.
        let mut chunks: std::collections::VecDeque<(Vec<Record>, i64, i64)> = std::collections::VecDeque::new();
        // Offsets reached by finished batches not known committed yet.
        let mut unacked: std::collections::VecDeque<i64> = std::collections::VecDeque::new();
        let mut cooldown = Duration::ZERO;
        // The first offset of the last retried batch, and how often it came.
        let mut retried: Option<(i64, u32)> = None;
        loop {
            if let Some(exit) = self.pause(cooldown).await {
                return exit;
            }
            // handler_max_unacked_commits: wait for commits of the batches before.
            loop {
                let committed = *self.committed.borrow_and_update();
                while unacked.front().is_some_and(|o| committed.is_some_and(|c| c >= *o)) {
                    unacked.pop_front();
                }
                if unacked.len() <= s.max_unacked_commits {
                    break;
                }
                tokio::select! {
                    changed = self.committed.changed() => if changed.is_err() { return Exit::Close(StopReason::Lost) },
                    changed = self.control.changed() => if changed.is_err() { return Exit::Close(StopReason::Lost) },
                }
                if let Some(exit) = self.asked_to_end() {
                    return exit;
                }
            }
            let (records, end, high_watermark) = match chunks.pop_front() {
                Some(chunk) => chunk,
                None => {
                    let event = tokio::select! {
                        event = consumer.next_event() => event,
                        changed = self.control.changed() => {
                            if changed.is_err() {
                                return Exit::Close(StopReason::Lost);
                            }
                            cooldown = Duration::ZERO;
                            continue;
                        }
                    };
                    match event {
                        Some(ConsumerEvent::Records(fetched)) => {
                            self.metrics.lag().fetched(fetched.high_watermark, fetched.offset);
                            chunk(fetched, s.max_batch_size(), &mut chunks);
                            cooldown = Duration::ZERO;
                            continue;
                        }
                        Some(ConsumerEvent::Error(e)) if e.is_retriable() => {
                            tracing::warn!(partition = %self.partition(), error = %e, "fetch failed; fetching again");
                            cooldown = Duration::ZERO;
                            continue;
                        }
                        Some(ConsumerEvent::Error(e)) => return Exit::Failed(e.into()),
                        Some(_) => {
                            cooldown = Duration::ZERO;
                            continue;
                        }
                        None => return Exit::Close(StopReason::Lost),
                    }
                }
            };
            let first = records[0].offset;
            let attempt = match retried {
                Some((offset, n)) if offset == first => n,
                _ => 0,
            };
            let ctx = BatchContext { partition: self.ctx.clone(), high_watermark, attempt, cooldown: Mutex::new(None) };
            let offsets: Vec<i64> = records.iter().map(|r| r.offset).collect();
            let last_epoch = records.last().and_then(|r| r.leader_epoch);
            self.metrics.batch(records.len());
            let started = tokio::time::Instant::now();
            let action = match catch_unwind(self.handler.handle_record_batch(&ctx, records)).await {
                Ok(action) => action,
                Err(panic) => {
                    return Exit::Failed(PartitionError::Panicked {
                        topic: topic.to_string(),
                        partition,
                        message: panic_message(&*panic),
                    });
                }
            };
            self.metrics.handler_time(started.elapsed());
            cooldown = ctx.take_cooldown().unwrap_or(s.handler_cooldown);
            let settled = match settle(&topic, partition, &offsets, end, action) {
                Ok(settled) => settled,
                Err(misuse) => return Exit::Failed(misuse.into()),
            };
            if let Err(e) = self.dead_letter(&offsets, &settled.dead_letters).await {
                return Exit::Failed(e);
            }
            if let Some(done) = settled.done {
                let mut position = TopicPartitionOffset::new(topic.clone(), partition, done);
                position.last_epoch = last_epoch;
                unacked.push_back(done);
                let _ = self.reports.send(Report::Done { position, metadata: settled.metadata });
            }
            if let Some(from) = settled.retry_from {
                let offset = offsets[from];
                self.metrics.retry(offsets.len() - from);
                retried = Some((offset, if offset == first { attempt + 1 } else { 1 }));
                // The records from it on come again from the log.
                chunks.clear();
                consumer.seek(&topic, partition, offset);
            }
        }
    }

    /// The fetch options of the topic's settings.
    fn fetch_options(&self) -> FetchOptions {
        let mut options = FetchOptions::new().with_isolation_level(self.settings.isolation_level);
        if let Some(bytes) = self.settings.fetch_max_bytes {
            options = options.with_max_bytes(bytes);
        }
        options
    }

    /// Reads the records at `offsets` (ascending) again from the log: the handler was
    /// given the batch's records, and dead letters are rare enough that reading them
    /// again costs less than keeping a copy of every batch.
    async fn reread(&self, offsets: &[i64]) -> Result<Vec<Record>, PartitionError> {
        let (topic, partition) = (self.ctx.topic.clone(), self.ctx.partition);
        let gone = |offset| PartitionError::DeadLetterGone { topic: topic.to_string(), partition, offset };
        let (Some(&first), Some(&last)) = (offsets.first(), offsets.last()) else { return Ok(Vec::new()) };
        let mut consumer = Consumer::new(self.fetcher.clone(), self.fetch_options());
        consumer.assign(&[(&*topic, partition, StartOffset::Offset(first))]).await?;
        let mut found = Vec::with_capacity(offsets.len());
        while found.len() < offsets.len() {
            match consumer.next_event().await {
                Some(ConsumerEvent::Records(fetched)) => {
                    let past = fetched.records.last().is_some_and(|r| r.offset >= last)
                        || (fetched.high_watermark >= 0 && fetched.next_offset >= fetched.high_watermark);
                    found.extend(fetched.records.into_iter().filter(|r| offsets.binary_search(&r.offset).is_ok()));
                    if past && found.len() < offsets.len() {
                        let missing = offsets.iter().find(|o| !found.iter().any(|r: &Record| r.offset == **o));
                        return Err(gone(missing.copied().unwrap_or(first)));
                    }
                }
                Some(ConsumerEvent::Error(e)) if e.is_retriable() => {}
                Some(ConsumerEvent::Error(e)) => return Err(e.into()),
                Some(_) => {}
                None => return Err(gone(first)),
            }
        }
        Ok(found)
    }

    /// Produces the dead letters of a batch (whose offsets are `offsets`), each
    /// acknowledged before the batch's offset may be committed.
    async fn dead_letter(&self, offsets: &[i64], letters: &[DeadLetter]) -> Result<(), PartitionError> {
        if letters.is_empty() {
            return Ok(());
        }
        let Some(producer) = &self.producer else {
            return Err(PartitionError::NoDeadLetterProducer {
                topic: self.ctx.topic.to_string(),
                partition: self.ctx.partition,
                offset: offsets[letters[0].index],
                dead_letter_topic: letters[0].topic.clone(),
            });
        };
        let wanted: Vec<i64> = letters.iter().map(|l| offsets[l.index]).collect();
        let records = self.reread(&wanted).await?;
        for (letter, record) in letters.iter().zip(&records) {
            let mut headers = record.headers.clone();
            let text = |s: String| Some(Bytes::from(s));
            headers.push(Header { key: DLQ_TOPIC_HEADER.into(), value: text(self.ctx.topic.to_string()) });
            headers.push(Header { key: DLQ_PARTITION_HEADER.into(), value: text(self.ctx.partition.to_string()) });
            headers.push(Header { key: DLQ_OFFSET_HEADER.into(), value: text(record.offset.to_string()) });
            headers.push(Header { key: DLQ_GROUP_HEADER.into(), value: text(self.ctx.group.to_string()) });
            headers.push(Header { key: DLQ_REASON_HEADER.into(), value: text(letter.reason.clone()) });
            let mut out = ProducerRecord::new(letter.topic.as_str(), Bytes::new());
            out.key = record.key.clone();
            out.value = record.value.clone();
            out.headers = headers;
            out.timestamp = Some(record.timestamp);
            if let Err(source) = producer.produce(out).await {
                return Err(PartitionError::DeadLetter {
                    topic: self.ctx.topic.to_string(),
                    partition: self.ctx.partition,
                    offset: record.offset,
                    dead_letter_topic: letter.topic.clone(),
                    source,
                });
            }
            self.metrics.dead_letter();
            tracing::info!(
                partition = %self.partition(),
                offset = record.offset,
                to = %letter.topic,
                reason = %letter.reason,
                "record dead-lettered"
            );
        }
        Ok(())
    }
}

/// Splits an answer into batches of at most `max` records (all of it with `None`);
/// the last one ends at the answer's next offset.
fn chunk(fetched: Fetched, max: Option<usize>, into: &mut std::collections::VecDeque<(Vec<Record>, i64, i64)>) {
    let (end, hwm) = (fetched.next_offset, fetched.high_watermark);
    let records = fetched.records;
    if records.is_empty() {
        return;
    }
    let Some(max) = max.filter(|m| *m < records.len()) else {
        into.push_back((records, end, hwm));
        return;
    };
    // Each record moves once (splitting off the tail again and again would copy it
    // once per chunk before it).
    let n = records.len();
    let mut rest = records.into_iter();
    let mut taken = 0;
    while taken < n {
        let chunk: Vec<Record> = rest.by_ref().take(max).collect();
        taken += chunk.len();
        let chunk_end = if taken == n { end } else { chunk[chunk.len() - 1].offset + 1 };
        into.push_back((chunk, chunk_end, hwm));
    }
}

/// A future whose panic comes out as an `Err` with the panic's payload: how user code
/// (handlers, pipeline stages) runs without a panic taking its task down.
pub struct CatchUnwind<'a, T>(Pin<Box<dyn Future<Output = T> + Send + 'a>>);

impl<T> std::fmt::Debug for CatchUnwind<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CatchUnwind")
    }
}

/// Runs `future`, turning a panic into an `Err` with its payload
/// ([`panic_message`] reads it).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use klife_group::runtime::{catch_unwind, panic_message};
///
/// let out = catch_unwind(async { panic!("boom") }).await;
/// assert_eq!(panic_message(&*out.unwrap_err()), "boom");
/// # }
/// ```
pub fn catch_unwind<'a, T>(future: impl Future<Output = T> + Send + 'a) -> CatchUnwind<'a, T> {
    CatchUnwind(Box::pin(future))
}

impl<T> Future for CatchUnwind<'_, T> {
    type Output = Result<T, Box<dyn Any + Send>>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let inner = self.0.as_mut();
        match std::panic::catch_unwind(AssertUnwindSafe(|| inner.poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(out)) => Poll::Ready(Ok(out)),
            Err(panic) => Poll::Ready(Err(panic)),
        }
    }
}

/// The message of a panic's payload (its `&str` or `String`).
pub fn panic_message(panic: &(dyn Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[tokio::test]
    async fn a_panic_comes_out_as_an_error_with_its_message() {
        let out = catch_unwind(async { panic!("boom {}", 7) }).await;
        assert_eq!(panic_message(&*out.unwrap_err()), "boom 7");
        let out: Result<i32, _> = catch_unwind(async { 5 }).await;
        assert_eq!(out.unwrap(), 5);
    }
}
