//! The producer's ordering and idempotence rules, sans-io: which batch of a partition
//! goes next and with which producer id and sequence, and what an answer (or its
//! absence) means for the batch and for the ones behind it.
//!
//! [`Sequencer`] holds, per partition, the batches in flight, the batches waiting to
//! be sent again and the next sequence; the bytes of the batches stay with the caller,
//! which names them by partition and [`Order`]. Events come in as method calls, with
//! the time given (`now`):
//!
//! | event | method |
//! | --- | --- |
//! | a new batch is about to be taken | [`Sequencer::stamp_new`], then [`Sequencer::send_new`] |
//! | a batch waiting for a retry is due | [`Sequencer::next`], then [`Sequencer::send_retry`] |
//! | the answer for a partition of a request | [`Sequencer::on_answer`] ([`Answer`]) |
//! | a batch refused as too large was split | [`Sequencer::on_split`] |
//! | a producer id was obtained (or not) | [`Sequencer::on_producer_id`], [`Sequencer::adopt_producer_id`] |
//!
//! and the decisions come out as the [`Dispatch`] of a send and as [`Action`]s, taken
//! with [`Sequencer::poll_action`]: complete a batch, split it, refresh the metadata,
//! get a new producer id. [`Sequencer::poll_timeout`] says when a retry is due. Leader
//! moves need no event of their own: each send names the partition's current leader.
//!
//! The rules:
//!
//! - A partition has at most `max_in_flight` batches in flight (one without
//!   idempotence), sent in take order. Until its leader has written a batch under the
//!   current producer id, it has one: a broker that knows nothing of a producer accepts
//!   any sequence from it, so a batch sent behind a first one that fails would be
//!   written before it.
//! - A refused or lost batch goes back among the partition's retries, in take order;
//!   nothing newer of the partition is sent until the retries are written, and they go
//!   one at a time, once the partition has nothing else in flight.
//! - A sequence error (OUT_OF_ORDER_SEQUENCE_NUMBER, UNKNOWN_PRODUCER_ID,
//!   INVALID_PRODUCER_EPOCH) behind an earlier unsettled batch of the partition, or of
//!   a batch stamped under an older producer id, is the echo of that failure: the batch
//!   is retried. Otherwise a transactional producer fails it (fenced, or the
//!   transaction must abort) and an idempotent one gets a new producer id
//!   ([`Action::ResetProducerId`]); meanwhile nothing is sent.
//! - Under a new producer id every partition's sequences start again at 0, and a
//!   batch stamped under an older one is re-stamped as it is sent again, except a
//!   batch whose outcome is unknown (its request broke or timed out after it was
//!   sent): the broker may have written it, so it fails with
//!   [`ProduceError::OutcomeUnknown`] rather than risk a duplicate. Under its own
//!   producer id such a batch is sent again as it was, and DUPLICATE_SEQUENCE_NUMBER
//!   says it was written.
//! - A batch over the broker's size limit is split in two halves that keep its place
//!   and its sequences, down to single records.
//! - A retriable failure is retried after `retry_backoff` until `delivery_timeout` has
//!   passed since the batch's first record was appended; a batch found expired when it
//!   is due to go is failed instead of sent.
//! - A batch that fails for good (refused, expired, unsplittable, bad bytes) must not
//!   leave a gap in its partition's sequences. When the broker has not written it and
//!   no later batch of the partition under the current producer id has gone out, the
//!   later ones move down in its place (re-stamped as they go) and so does the next
//!   sequence. Otherwise an idempotent producer gets a new producer id; a
//!   transactional one keeps the gap (its transaction aborts).
//! - A partition's batches complete in take order: a batch settled while an earlier one
//!   is still in flight, waiting for a retry or being split waits for it (the answer
//!   for a batch sent again after a lost answer can come after its successors').
//! - A request that failed before it reached the connection's socket
//!   ([`Answer::NotSent`]) was not seen by the broker: its batches are retried as
//!   never written.
//!
//! The producer's tasks drive it under the producer's lock: the sender plans with
//! [`Sequencer::next`] and the sends, the tasks awaiting answers report them.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use klife_protocol::{ErrorCode, ProducerIdAndEpoch, RetryAction};

use super::flight::Order;
use crate::accumulator::{ProducerStamp, TopicPartition};
use crate::delivery::Written;
use crate::{AttemptError, ProduceError, telemetry};

/// A producer id and its epoch.
pub(crate) type ProducerId = ProducerIdAndEpoch;

/// The producer id and epoch a batch was stamped with.
fn stamped_with(s: &ProducerStamp) -> ProducerId {
    ProducerIdAndEpoch::new(s.producer_id, s.producer_epoch)
}

/// The settings the rules depend on.
#[derive(Debug, Clone)]
pub(crate) struct SequencerConfig {
    /// Batches of a partition in flight at once, once its leader has written one
    /// under the current producer id (1 without idempotence).
    pub(crate) max_in_flight: usize,
    /// How long after its first record was appended a batch may still be sent.
    pub(crate) delivery_timeout: Duration,
    /// The wait before a failed batch goes again.
    pub(crate) retry_backoff: Duration,
    /// The transactional id of a transactional producer: its batches are stamped
    /// transactional, and its sequence errors are not repaired by a new producer id.
    pub(crate) transactional_id: Option<Arc<str>>,
}

/// What the sequencer asks of the code that drives it.
#[derive(Debug)]
pub(crate) enum Action {
    /// The batch is settled: give its records this outcome (and release its memory).
    Complete { partition: TopicPartition, order: Order, result: Result<Written, ProduceError> },
    /// The broker refused the batch as too large: split its bytes in two and report
    /// with [`Sequencer::on_split`].
    Split { partition: TopicPartition, order: Order },
    /// Refresh the cluster metadata: a leader moved or is unknown.
    RefreshMetadata,
    /// Get a new producer id (or a bumped epoch of `current`), then report with
    /// [`Sequencer::on_producer_id`]; nothing is sent meanwhile.
    ResetProducerId { current: Option<ProducerId> },
}

/// What a partition would send now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Its first batch waiting to be sent again.
    Retry,
    /// A new batch from the accumulator, if it has one.
    New,
}

/// What to do with a batch about to be sent.
#[derive(Debug)]
pub(crate) enum Dispatch {
    /// Send it to `broker` with this stamp; with `restamped`, the stamp is new and
    /// must be written into its bytes first.
    Send { order: Order, broker: i32, stamp: Option<ProducerStamp>, restamped: bool },
    /// Kept among the retries (the partition has no leader): nothing to send.
    Parked,
    /// Not sent: it is settled with its error (its [`Action::Complete`] comes in take
    /// order).
    Failed,
    /// Nothing of the partition to send.
    Nothing,
}

/// The answer for one batch of a Produce request.
#[derive(Debug)]
pub(crate) enum Answer {
    /// Written at `base` (-1 when unknown), at the broker's `append_time` (-1 for the
    /// create time); also what a request without answer (`acks = 0`) comes to.
    Written { base: i64, append_time: i64 },
    /// The partition's error code in the answer, for a batch of `bytes` bytes.
    Refused { code: ErrorCode, message: Option<String>, bytes: usize },
    /// The answer left the partition out.
    NotAnswered,
    /// The request failed; after a broken connection or a timeout the broker may have
    /// written the batch (its outcome is unknown).
    Lost(klife_connection::Error),
    /// The request failed before it reached the connection's socket (no free slot in
    /// time, or the connection was already closed): the broker has not seen it.
    NotSent(klife_connection::Error),
    /// Its bytes could not be finished or re-stamped: it was never sent.
    Invalid(String),
}

/// A batch between the accumulator and its outcome, as the rules see it.
#[derive(Debug, Clone)]
struct Batch {
    order: Order,
    records: i32,
    /// When its first record was appended.
    created: Instant,
    stamp: Option<ProducerStamp>,
    /// The producer id current when it was last sent.
    sent_under: Option<ProducerId>,
    /// An earlier attempt's outcome is unknown: the broker may have written it.
    maybe_written: bool,
    /// Its sequence moved down to close the gap of an earlier batch that failed for
    /// good: its bytes must be stamped again before it goes.
    shifted: bool,
    retry_at: Option<Instant>,
    last_error: Option<AttemptError>,
}

/// A partition's batches between the accumulator and their outcome.
#[derive(Debug, Default)]
struct Partition {
    in_flight: Vec<Batch>,
    /// Waiting to be sent again, in take order.
    retries: VecDeque<Batch>,
    /// Refused as too large, waiting for the caller to split it.
    splitting: Vec<(Batch, ErrorCode)>,
    /// Sequence of the partition's next batch (idempotence).
    next_seq: i32,
    /// The producer id the partition's leader last wrote a batch under.
    confirmed: Option<ProducerId>,
    /// The latest batch (in take order) written under the current producer id.
    last_written: Option<Order>,
    /// The broker its batches in flight went to.
    broker: Option<i32>,
    /// Settled batches waiting for an earlier batch of the partition to settle, in
    /// take order: a partition's batches complete in the order they were taken.
    held: Vec<(Order, Result<Written, ProduceError>)>,
}

impl Partition {
    fn push_retry(&mut self, batch: Batch) {
        let at = self.retries.iter().position(|r| r.order > batch.order).unwrap_or(self.retries.len());
        self.retries.insert(at, batch);
    }

    /// Whether a batch taken before `order` is still unsettled: a sequence error of
    /// batch `order` is then the echo of that one's failure.
    fn earlier_pending(&self, order: Order) -> bool {
        self.in_flight.iter().any(|b| b.order < order)
            || self.splitting.iter().any(|(b, _)| b.order < order)
            || self.retries.front().is_some_and(|r| r.order < order)
    }

    fn idle(&self) -> bool {
        self.in_flight.is_empty() && self.retries.is_empty() && self.splitting.is_empty() && self.held.is_empty()
    }

    /// The take order of its earliest batch still unsettled.
    fn first_pending(&self) -> Option<Order> {
        let in_flight = self.in_flight.iter().map(|b| b.order);
        let splitting = self.splitting.iter().map(|(b, _)| b.order);
        in_flight.chain(splitting).chain(self.retries.front().map(|b| b.order)).min()
    }
}

/// How an answer settles a batch, before the partition's other batches are looked at.
enum Settled {
    Written { base: i64, append_time: i64 },
    Failed { cause: AttemptError, retriable: bool },
    Fenced { code: ErrorCode },
    Sequence { code: ErrorCode, message: Option<String> },
    Invalid(String),
}

/// The ordering and idempotence rules of one producer (see the module's
/// documentation).
#[derive(Debug)]
pub(crate) struct Sequencer {
    config: SequencerConfig,
    partitions: HashMap<TopicPartition, Partition>,
    /// Take order of the next batch.
    next_order: u64,
    producer: Option<ProducerId>,
    /// A new producer id is being obtained: nothing is sent meanwhile.
    resetting: bool,
    actions: VecDeque<Action>,
}

impl Sequencer {
    /// The rules for a producer stamped with `producer` (`None` without idempotence).
    pub(crate) fn new(config: SequencerConfig, producer: Option<ProducerId>) -> Sequencer {
        Sequencer {
            config,
            partitions: HashMap::new(),
            next_order: 0,
            producer,
            resetting: false,
            actions: VecDeque::new(),
        }
    }

    /// The current producer id and epoch.
    pub(crate) fn producer_id(&self) -> Option<ProducerId> {
        self.producer
    }

    /// Whether a new producer id is being obtained (nothing is sent meanwhile).
    pub(crate) fn resetting(&self) -> bool {
        self.resetting
    }

    /// No batch in flight, waiting to be sent again, or being split.
    pub(crate) fn idle(&self) -> bool {
        self.partitions.values().all(Partition::idle)
    }

    /// The next thing the driver must do, if any.
    pub(crate) fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// When the earliest retry is due, among partitions with nothing in flight.
    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.partitions
            .values()
            .filter(|p| p.in_flight.is_empty())
            .filter_map(|p| p.retries.front().and_then(|b| b.retry_at))
            .min()
    }

    /// The partitions whose first retry is due at `now` and that have nothing in
    /// flight.
    pub(crate) fn due_retries(&self, now: Instant) -> impl Iterator<Item = &TopicPartition> + '_ {
        self.partitions.iter().filter_map(move |(tp, p)| match p.retries.front() {
            Some(b) if p.in_flight.is_empty() && p.splitting.is_empty() && b.retry_at.is_none_or(|t| t <= now) => {
                Some(tp)
            }
            _ => None,
        })
    }

    /// The broker the partition's batches in flight went to, while it has any: its
    /// next batch must not overtake them on another connection.
    pub(crate) fn in_flight_to(&self, partition: &TopicPartition) -> Option<i32> {
        self.partitions.get(partition).filter(|p| !p.in_flight.is_empty()).and_then(|p| p.broker)
    }

    /// What `partition` would send at `now`, if anything: a retry that is due, or a
    /// new batch while it has room in flight. Nothing while a producer id is being
    /// obtained.
    pub(crate) fn next(&self, now: Instant, partition: &TopicPartition) -> Option<Next> {
        if self.resetting {
            return None;
        }
        let Some(p) = self.partitions.get(partition) else { return Some(Next::New) };
        if !p.splitting.is_empty() {
            // Its halves go first, in its place.
            return None;
        }
        if let Some(first) = p.retries.front() {
            let due = first.retry_at.is_none_or(|t| t <= now);
            return (p.in_flight.is_empty() && due).then_some(Next::Retry);
        }
        let limit = if p.confirmed == self.producer { self.config.max_in_flight } else { 1 };
        // After a producer reset, batches sent under the old id are answered first.
        let stale = p.in_flight.iter().any(|b| b.sent_under != self.producer);
        (p.in_flight.len() < limit && !stale).then_some(Next::New)
    }

    /// Whether `partition` could take one more new batch in flight right after this
    /// one (the driver then plans again at once).
    pub(crate) fn room_for_more(&self, partition: &TopicPartition) -> bool {
        self.partitions.get(partition).is_some_and(|p| {
            p.retries.is_empty()
                && p.confirmed == self.producer
                && p.in_flight.len() < self.config.max_in_flight
                && p.in_flight.iter().all(|b| b.sent_under == self.producer)
        })
    }

    /// The take order and stamp of the partition's next new batch of `records`
    /// records: its sequence is taken. Follow with [`send_new`](Self::send_new).
    pub(crate) fn stamp_new(&mut self, partition: &TopicPartition, records: i32) -> (Order, Option<ProducerStamp>) {
        let order = (self.next_order, 0);
        self.next_order += 1;
        let transactional = self.config.transactional_id.is_some();
        let p = self.partitions.entry(partition.clone()).or_default();
        let stamp = self.producer.map(|id| {
            let stamp = ProducerStamp {
                producer_id: id.id,
                producer_epoch: id.epoch,
                base_sequence: p.next_seq,
                transactional,
            };
            p.next_seq = p.next_seq.wrapping_add(records) & i32::MAX;
            stamp
        });
        (order, stamp)
    }

    /// Sends a new batch (stamped by [`stamp_new`](Self::stamp_new)) to the
    /// partition's `leader`.
    pub(crate) fn send_new(
        &mut self,
        now: Instant,
        partition: &TopicPartition,
        (order, stamp): (Order, Option<ProducerStamp>),
        records: i32,
        created: Instant,
        leader: Option<i32>,
    ) -> Dispatch {
        let batch = Batch {
            order,
            records,
            created,
            stamp,
            sent_under: None,
            maybe_written: false,
            shifted: false,
            retry_at: None,
            last_error: None,
        };
        self.dispatch(now, partition, batch, leader)
    }

    /// Sends the partition's first retry to its `leader`.
    pub(crate) fn send_retry(&mut self, now: Instant, partition: &TopicPartition, leader: Option<i32>) -> Dispatch {
        let Some(batch) = self.partitions.get_mut(partition).and_then(|p| p.retries.pop_front()) else {
            return Dispatch::Nothing;
        };
        self.dispatch(now, partition, batch, leader)
    }

    fn dispatch(&mut self, now: Instant, tp: &TopicPartition, mut batch: Batch, leader: Option<i32>) -> Dispatch {
        let timeout = self.config.delivery_timeout;
        let current = self.producer;
        let transactional = self.config.transactional_id.is_some();
        if now.duration_since(batch.created) >= timeout {
            let error = ProduceError::DeliveryTimeout {
                topic: tp.topic.to_string(),
                partition: tp.partition,
                timeout,
                last_error: batch.last_error.take(),
            };
            self.complete(tp, batch.order, Err(error));
            self.close_gap(tp, &batch);
            return Dispatch::Failed;
        }
        let p = self.partitions.entry(tp.clone()).or_default();
        let Some(broker) = leader else {
            self.actions.push_back(Action::RefreshMetadata);
            batch.retry_at = Some(now + self.config.retry_backoff);
            batch.last_error = Some(AttemptError::NoLeader);
            p.push_retry(batch);
            return Dispatch::Parked;
        };
        let mut restamped = std::mem::take(&mut batch.shifted);
        if let Some(id) = current {
            let stale = batch.stamp.is_some_and(|s| stamped_with(&s) != id);
            if stale && batch.maybe_written {
                // Sequenced again under the new producer id, it could be written twice.
                let error = ProduceError::OutcomeUnknown { topic: tp.topic.to_string(), partition: tp.partition };
                self.complete(tp, batch.order, Err(error));
                return Dispatch::Failed;
            }
            if stale || batch.stamp.is_none() {
                batch.stamp = Some(ProducerStamp {
                    producer_id: id.id,
                    producer_epoch: id.epoch,
                    base_sequence: p.next_seq,
                    transactional,
                });
                p.next_seq = p.next_seq.wrapping_add(batch.records) & i32::MAX;
                restamped = true;
            }
        }
        batch.sent_under = current;
        let (order, stamp) = (batch.order, batch.stamp);
        p.in_flight.push(batch);
        p.broker = Some(broker);
        Dispatch::Send { order, broker, stamp, restamped }
    }

    /// Settles the batch `order` of `partition` with the answer its request got.
    pub(crate) fn on_answer(&mut self, now: Instant, partition: &TopicPartition, order: Order, answer: Answer) {
        let Some(p) = self.partitions.get_mut(partition) else { return };
        let Some(at) = p.in_flight.iter().position(|b| b.order == order) else { return };
        let mut batch = p.in_flight.remove(at);
        if p.in_flight.is_empty() {
            // A producer keeps the state of every partition it wrote to: an idle one
            // holds no room for batches.
            p.in_flight = Vec::new();
        }
        let transactional = self.config.transactional_id.is_some();
        let settled = match answer {
            Answer::Written { base, append_time } => Settled::Written { base, append_time },
            Answer::Invalid(reason) => Settled::Invalid(reason),
            Answer::NotAnswered => Settled::Failed { cause: AttemptError::NotAnswered, retriable: true },
            Answer::Lost(error) => {
                self.actions.push_back(Action::RefreshMetadata);
                batch.maybe_written |= matches!(
                    error,
                    klife_connection::Error::Disconnected { .. } | klife_connection::Error::Timeout { .. }
                );
                let retriable = error.is_retriable();
                Settled::Failed { cause: AttemptError::Connection(error), retriable }
            }
            Answer::NotSent(error) => {
                // The broker may be down: its partitions may have another leader.
                self.actions.push_back(Action::RefreshMetadata);
                let retriable = error.is_retriable();
                Settled::Failed { cause: AttemptError::Connection(error), retriable }
            }
            Answer::Refused { code, message, bytes } => match code {
                code @ (ErrorCode::MessageTooLarge | ErrorCode::RecordListTooLarge)
                    if batch.records > 1 && !batch.maybe_written =>
                {
                    // Its halves go again in its place, down to single records.
                    p.splitting.push((batch, code));
                    self.actions.push_back(Action::Split { partition: partition.clone(), order });
                    return;
                }
                ErrorCode::MessageTooLarge if message.is_none() => Settled::Failed {
                    cause: AttemptError::Broker {
                        code,
                        message: Some(format!(
                            "the batch of {} record(s), {bytes} bytes, is over the topic's max.message.bytes or the broker's \
                             message.max.bytes",
                            batch.records
                        )),
                    },
                    retriable: false,
                },
                ErrorCode::None => Settled::Written { base: -1, append_time: -1 },
                ErrorCode::ProducerFenced if transactional => Settled::Fenced { code },
                // A retried batch the broker already has: it was written.
                ErrorCode::DuplicateSequenceNumber => Settled::Written { base: -1, append_time: -1 },
                ErrorCode::OutOfOrderSequenceNumber
                | ErrorCode::UnknownProducerId
                | ErrorCode::InvalidProducerEpoch => Settled::Sequence { code, message },
                code => {
                    let refresh = code.retry_action() == RetryAction::RefreshMetadata;
                    if refresh {
                        self.actions.push_back(Action::RefreshMetadata);
                    }
                    let cause = AttemptError::Broker { code, message };
                    Settled::Failed { cause, retriable: code.is_retriable() || refresh }
                }
            },
        };
        self.settle(now, partition, batch, settled);
    }

    /// The batch `order`, refused as too large, was split: its first `at` records go
    /// again in its place, the rest right behind; `Err` when its bytes could not be
    /// split (it fails with the broker's refusal and the reason).
    pub(crate) fn on_split(&mut self, now: Instant, partition: &TopicPartition, order: Order, at: Result<i32, String>) {
        let Some(p) = self.partitions.get_mut(partition) else { return };
        let Some(i) = p.splitting.iter().position(|(b, _)| b.order == order) else { return };
        let (batch, code) = p.splitting.remove(i);
        let at = match at {
            Ok(at) if 0 < at && at < batch.records => Ok(at),
            Ok(at) => Err(format!("cannot split a batch of {} record(s) at {at}", batch.records)),
            Err(reason) => Err(reason),
        };
        let at = match at {
            Ok(at) => at,
            Err(reason) => return self.fail(partition, batch, AttemptError::Broker { code, message: Some(reason) }),
        };
        telemetry::record_split();
        tracing::debug!(partition = %partition, "splitting a batch the broker refused as too large");
        let half = |order: Order, records: i32, shift: i32| Batch {
            order,
            records,
            stamp: batch
                .stamp
                .map(|s| ProducerStamp { base_sequence: s.base_sequence.wrapping_add(shift) & i32::MAX, ..s }),
            retry_at: None,
            maybe_written: false,
            shifted: false,
            ..batch.clone()
        };
        let first = half(batch.order, at, 0);
        let second = half((batch.order.0, batch.order.1 + at), batch.records - at, at);
        for half in [first, second] {
            self.retry(now, partition, half, Some(now), AttemptError::Broker { code, message: None }, false);
        }
    }

    /// The producer id asked for by [`Action::ResetProducerId`]: `Some` starts every
    /// partition's sequences again at 0 under it; `None` (it could not be had) leaves
    /// the old one, and the batches are retried.
    pub(crate) fn on_producer_id(&mut self, id: Option<ProducerId>) {
        self.resetting = false;
        if let Some(id) = id {
            telemetry::record_producer_id_reset();
            self.use_producer_id(id);
        }
    }

    /// Takes a producer id obtained elsewhere (a transaction coordinator's bumped
    /// epoch), between transactions.
    pub(crate) fn adopt_producer_id(&mut self, id: ProducerId) {
        if self.producer != Some(id) {
            self.use_producer_id(id);
        }
    }

    fn use_producer_id(&mut self, id: ProducerId) {
        self.producer = Some(id);
        for p in self.partitions.values_mut() {
            p.next_seq = 0;
            p.last_written = None;
        }
    }

    fn settle(&mut self, now: Instant, tp: &TopicPartition, batch: Batch, settled: Settled) {
        let current = self.producer;
        let transactional = self.config.transactional_id.is_some();
        let p = self.partitions.entry(tp.clone()).or_default();
        let settled = match settled {
            Settled::Sequence { code, message } => {
                let stale = batch.stamp.map(|s| stamped_with(&s)) != current;
                let cause = AttemptError::Broker { code, message };
                if stale || p.earlier_pending(batch.order) {
                    // The echo of an earlier failure or of a producer reset: it goes
                    // again after the earlier ones, re-stamped if need be.
                    Settled::Failed { cause, retriable: true }
                } else if transactional && crate::transaction::fenced(code) {
                    Settled::Fenced { code }
                } else if transactional {
                    // A transactional producer cannot repair its sequences.
                    Settled::Failed { cause, retriable: false }
                } else {
                    // The broker lost track of this producer's sequence: a new
                    // producer id, and the batches are re-stamped.
                    if !self.resetting {
                        self.resetting = true;
                        self.actions.push_back(Action::ResetProducerId { current });
                    }
                    Settled::Failed { cause, retriable: true }
                }
            }
            other => other,
        };
        match settled {
            Settled::Written { base, append_time } => {
                if let Some(s) = batch.stamp {
                    p.confirmed = Some(stamped_with(&s));
                    if p.confirmed == current {
                        p.last_written = p.last_written.max(Some(batch.order));
                    }
                }
                let written = Written { topic: tp.topic.clone(), partition: tp.partition, base, append_time };
                self.complete(tp, batch.order, Ok(written));
            }
            Settled::Failed { cause, retriable: true } => {
                let at = Some(now + self.config.retry_backoff);
                self.retry(now, tp, batch, at, cause, true);
            }
            Settled::Failed { cause, retriable: false } => self.fail(tp, batch, cause),
            Settled::Sequence { .. } => unreachable!("decided above"),
            Settled::Fenced { code } => {
                let (producer_id, epoch) = batch.stamp.map_or((-1, -1), |s| (s.producer_id, s.producer_epoch));
                let error = ProduceError::Fenced {
                    transactional_id: self.config.transactional_id.as_deref().unwrap_or_default().to_owned(),
                    producer_id,
                    epoch,
                    code,
                };
                self.complete(tp, batch.order, Err(error));
            }
            Settled::Invalid(reason) => {
                let error = ProduceError::Encode(reason);
                self.complete(tp, batch.order, Err(error));
                self.close_gap(tp, &batch);
            }
        }
    }

    /// Puts a batch back among the retries, due at `at`, after a failure for `cause`
    /// (kept as its last error with `remember`); past its delivery timeout, it fails
    /// instead.
    fn retry(
        &mut self,
        now: Instant,
        tp: &TopicPartition,
        mut batch: Batch,
        at: Option<Instant>,
        cause: AttemptError,
        remember: bool,
    ) {
        let timeout = self.config.delivery_timeout;
        if now.duration_since(batch.created) >= timeout {
            let last_error = Some(cause);
            let error = ProduceError::DeliveryTimeout {
                topic: tp.topic.to_string(),
                partition: tp.partition,
                timeout,
                last_error,
            };
            self.complete(tp, batch.order, Err(error));
            self.close_gap(tp, &batch);
            return;
        }
        let code = cause.code();
        tracing::debug!(partition = %tp, %code, "retrying batch");
        telemetry::record_retry(code);
        batch.retry_at = at;
        if remember {
            batch.last_error = Some(cause);
        }
        self.partitions.entry(tp.clone()).or_default().push_retry(batch);
    }

    /// Settles the batch `order` of `tp` with `result`. Its [`Action::Complete`] is
    /// queued once every earlier batch of the partition has settled, and with it the
    /// later ones that waited for it.
    fn complete(&mut self, tp: &TopicPartition, order: Order, result: Result<Written, ProduceError>) {
        let p = self.partitions.entry(tp.clone()).or_default();
        if p.held.is_empty() && p.first_pending().is_none_or(|f| order < f) {
            // Nothing earlier is unsettled (the usual case): no need to hold it.
            self.actions.push_back(Action::Complete { partition: tp.clone(), order, result });
            return;
        }
        let at = p.held.partition_point(|(o, _)| *o < order);
        p.held.insert(at, (order, result));
        let first_pending = p.first_pending();
        let ready = p.held.partition_point(|(o, _)| first_pending.is_none_or(|f| *o < f));
        for (order, result) in p.held.drain(..ready) {
            self.actions.push_back(Action::Complete { partition: tp.clone(), order, result });
        }
        if p.held.is_empty() {
            p.held = Vec::new();
        }
    }

    /// Fails a batch for good with `cause`.
    fn fail(&mut self, tp: &TopicPartition, batch: Batch, cause: AttemptError) {
        let error = match cause {
            AttemptError::Connection(e) => ProduceError::Connection(e),
            AttemptError::Broker { code, message } => {
                ProduceError::Broker { topic: tp.topic.to_string(), partition: tp.partition, code, message }
            }
            other => ProduceError::Broker {
                topic: tp.topic.to_string(),
                partition: tp.partition,
                code: other.code(),
                message: Some(other.to_string()),
            },
        };
        self.complete(tp, batch.order, Err(error));
        self.close_gap(tp, &batch);
    }

    /// A batch of `tp` failed for good: the sequences it took must not stay a gap the
    /// broker refuses the partition's later batches for. When the broker has not
    /// written it and none of the later batches stamped under the current producer id
    /// has gone out yet (nor was written), they move down in its place and the
    /// partition's next sequence with them (none of them was written: a broker that
    /// checks sequences refuses what follows a gap). Otherwise an idempotent producer gets a new
    /// producer id, which starts every sequence again.
    fn close_gap(&mut self, tp: &TopicPartition, batch: &Batch) {
        let Some(stamp) = batch.stamp else { return };
        let current = self.producer;
        let under_current = |s: &ProducerStamp| Some(stamped_with(s)) == current;
        if !under_current(&stamp) {
            // Its sequence belongs to an older producer id: the current one has no gap.
            return;
        }
        let Some(p) = self.partitions.get_mut(tp) else { return };
        let later = |b: &Batch| b.order > batch.order && b.stamp.as_ref().is_some_and(under_current);
        let shiftable = !batch.maybe_written
            && p.last_written.is_none_or(|o| o < batch.order)
            && !p.in_flight.iter().any(later)
            && !p.splitting.iter().any(|(b, _)| later(b))
            && !p.retries.iter().any(|b| later(b) && (b.maybe_written || b.sent_under.is_some()));
        if shiftable {
            for b in p.retries.iter_mut().filter(|b| later(b)) {
                if let Some(s) = b.stamp.as_mut() {
                    s.base_sequence = s.base_sequence.wrapping_sub(batch.records) & i32::MAX;
                    b.shifted = true;
                }
            }
            p.next_seq = p.next_seq.wrapping_sub(batch.records) & i32::MAX;
        } else if self.config.transactional_id.is_none() && !self.resetting {
            self.resetting = true;
            self.actions.push_back(Action::ResetProducerId { current });
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::collections::{BTreeMap, HashSet};

    use proptest::prelude::*;

    use super::*;

    const BACKOFF: Duration = Duration::from_millis(100);
    const TIMEOUT: Duration = Duration::from_secs(10);
    const PID: ProducerId = ProducerIdAndEpoch::new(7, 0);

    fn tp(partition: i32) -> TopicPartition {
        TopicPartition { topic: "orders".into(), partition }
    }

    fn config(max_in_flight: usize, transactional: bool) -> SequencerConfig {
        SequencerConfig {
            max_in_flight,
            delivery_timeout: TIMEOUT,
            retry_backoff: BACKOFF,
            transactional_id: transactional.then(|| "tx".into()),
        }
    }

    /// A completed batch: its order, and its offset or error.
    type Completion = (Order, Result<i64, ProduceError>);

    /// A sequencer, a virtual clock and what it asked for.
    struct Rig {
        s: Sequencer,
        t0: Instant,
        now: Instant,
    }

    impl Rig {
        fn new(max_in_flight: usize, producer: Option<ProducerId>) -> Rig {
            Rig::with(config(max_in_flight, false), producer)
        }

        fn with(config: SequencerConfig, producer: Option<ProducerId>) -> Rig {
            let t0 = Instant::now();
            Rig { s: Sequencer::new(config, producer), t0, now: t0 }
        }

        fn advance(&mut self, by: Duration) {
            self.now += by;
        }

        /// Sends a new batch of `records` records of `p` to broker 1, created now.
        fn send_new(&mut self, p: i32, records: i32) -> (Order, Option<ProducerStamp>) {
            assert_eq!(self.s.next(self.now, &tp(p)), Some(Next::New), "partition {p} has room");
            let stamped = self.s.stamp_new(&tp(p), records);
            match self.s.send_new(self.now, &tp(p), stamped, records, self.now, Some(1)) {
                Dispatch::Send { order, stamp, restamped: false, broker: 1 } => (order, stamp),
                other => panic!("{other:?}"),
            }
        }

        /// Sends the partition's first retry to `broker`.
        fn send_retry(&mut self, p: i32, broker: i32) -> (Order, Option<ProducerStamp>, bool) {
            assert_eq!(self.s.next(self.now, &tp(p)), Some(Next::Retry), "partition {p} has a retry due");
            match self.s.send_retry(self.now, &tp(p), Some(broker)) {
                Dispatch::Send { order, stamp, restamped, broker: b } if b == broker => (order, stamp, restamped),
                other => panic!("{other:?}"),
            }
        }

        fn answer(&mut self, p: i32, order: Order, answer: Answer) {
            self.s.on_answer(self.now, &tp(p), order, answer);
        }

        fn refuse(&mut self, p: i32, order: Order, code: ErrorCode) {
            self.answer(p, order, Answer::Refused { code, message: None, bytes: 100 });
        }

        fn ok(&mut self, p: i32, order: Order, base: i64) {
            self.answer(p, order, Answer::Written { base, append_time: -1 });
        }

        fn actions(&mut self) -> Vec<Action> {
            std::iter::from_fn(|| self.s.poll_action()).collect()
        }

        /// The completions among the actions, as (order, offset or error); the
        /// other actions are returned apart.
        fn completions(&mut self) -> (Vec<Completion>, Vec<Action>) {
            let mut done = Vec::new();
            let mut rest = Vec::new();
            for a in self.actions() {
                match a {
                    Action::Complete { order, result, .. } => done.push((order, result.map(|w| w.base))),
                    other => rest.push(other),
                }
            }
            (done, rest)
        }
    }

    /// The order of a dispatch that sends.
    impl Dispatch {
        fn order(&self) -> Option<Order> {
            match self {
                Dispatch::Send { order, .. } => Some(*order),
                _ => None,
            }
        }
    }

    /// Each completion's order and offset (`None` for an error).
    fn offsets(done: Vec<Completion>) -> Vec<(Order, Option<i64>)> {
        done.into_iter().map(|(o, r)| (o, r.ok())).collect()
    }

    fn seq(stamp: Option<ProducerStamp>) -> (i64, i16, i32) {
        let s = stamp.expect("stamped");
        (s.producer_id, s.producer_epoch, s.base_sequence)
    }

    fn lost() -> Answer {
        Answer::Lost(klife_connection::Error::Disconnected { broker: "1".into(), reason: "reset".into() })
    }

    #[test]
    fn new_batches_take_consecutive_sequences_one_in_flight_until_the_leader_confirms() {
        let mut r = Rig::new(5, Some(PID));
        let (a, sa) = r.send_new(0, 3);
        assert_eq!(seq(sa), (7, 0, 0));
        // The leader has written nothing under this id yet: one batch at a time.
        assert_eq!(r.s.next(r.now, &tp(0)), None);
        r.ok(0, a, 0);
        let (done, _) = r.completions();
        assert_eq!(done.len(), 1);
        let mut sent = Vec::new();
        for _ in 0..5 {
            sent.push(r.send_new(0, 2));
        }
        assert_eq!(sent.iter().map(|(_, s)| seq(*s).2).collect::<Vec<_>>(), [3, 5, 7, 9, 11]);
        assert_eq!(r.s.next(r.now, &tp(0)), None, "at max_in_flight");
        assert_eq!(r.s.next(r.now, &tp(1)), Some(Next::New), "partitions are apart");
    }

    #[test]
    fn without_idempotence_batches_are_not_stamped_and_go_one_at_a_time() {
        let mut r = Rig::new(1, None);
        let (a, stamp) = r.send_new(0, 4);
        assert!(stamp.is_none());
        assert_eq!(r.s.next(r.now, &tp(0)), None);
        r.ok(0, a, 40);
        assert_eq!(offsets(r.completions().0), [(a, Some(40))]);
        let (_, stamp) = r.send_new(0, 4);
        assert!(stamp.is_none());
    }

    #[test]
    fn a_sequence_error_gets_a_new_producer_id_and_the_batches_start_again_at_0() {
        let mut r = Rig::new(5, Some(PID));
        let (a, _) = r.send_new(0, 2);
        r.ok(0, a, 0);
        let (b, sb) = r.send_new(0, 2);
        let (c, sc) = r.send_new(0, 3);
        let (d, _) = r.send_new(1, 1);
        assert_eq!((seq(sb).2, seq(sc).2), (2, 4));
        r.completions();
        // The broker lost track of the producer: b is refused, and c behind it echoes.
        r.refuse(0, c, ErrorCode::OutOfOrderSequenceNumber);
        let (done, rest) = r.completions();
        assert!(done.is_empty() && rest.is_empty(), "c waits behind b: {rest:?}");
        r.refuse(0, b, ErrorCode::OutOfOrderSequenceNumber);
        let (done, rest) = r.completions();
        assert!(done.is_empty());
        assert!(matches!(rest[..], [Action::ResetProducerId { current: Some(PID) }]), "{rest:?}");
        assert!(r.s.resetting());
        // Nothing goes while the new id is obtained; a second error asks for no second one.
        r.advance(BACKOFF);
        assert_eq!(r.s.next(r.now, &tp(0)), None);
        assert_eq!(r.s.next(r.now, &tp(1)), None);
        r.refuse(1, d, ErrorCode::UnknownProducerId);
        assert!(r.completions().1.is_empty());
        r.s.on_producer_id(Some(ProducerIdAndEpoch::new(8, 0)));
        assert_eq!(r.s.producer_id(), Some(ProducerIdAndEpoch::new(8, 0)));
        // Re-stamped in their order, from 0, under the new id.
        let (o1, s1, re1) = r.send_retry(0, 1);
        assert_eq!((o1, seq(s1), re1), (b, (8, 0, 0), true));
        assert_eq!(r.s.next(r.now, &tp(0)), None, "one retry at a time");
        r.ok(0, b, 10);
        let (o2, s2, re2) = r.send_retry(0, 1);
        assert_eq!((o2, seq(s2), re2), (c, (8, 0, 2), true));
        r.ok(0, c, 12);
        let (_, s3) = r.send_new(0, 1);
        assert_eq!(seq(s3), (8, 0, 5), "new batches follow the re-stamped ones");
        r.advance(BACKOFF);
        let (o4, s4, _) = r.send_retry(1, 1);
        assert_eq!((o4, seq(s4)), (d, (8, 0, 0)));
        assert_eq!(offsets(r.completions().0), [(b, Some(10)), (c, Some(12))]);
    }

    #[test]
    fn a_producer_id_that_cannot_be_had_leaves_the_old_one_and_the_batches_retry() {
        let mut r = Rig::new(5, Some(PID));
        let (a, _) = r.send_new(0, 2);
        r.refuse(0, a, ErrorCode::OutOfOrderSequenceNumber);
        assert!(matches!(r.completions().1[..], [Action::ResetProducerId { .. }]));
        r.s.on_producer_id(None);
        assert!(!r.s.resetting());
        r.advance(BACKOFF);
        let (o, s, restamped) = r.send_retry(0, 1);
        assert_eq!((o, seq(s), restamped), (a, (7, 0, 0), false));
    }

    #[test]
    fn a_batch_whose_outcome_is_unknown_goes_again_as_it_was_and_a_duplicate_is_written() {
        let mut r = Rig::new(5, Some(PID));
        let (a, _) = r.send_new(0, 2);
        r.ok(0, a, 0);
        let (b, sb) = r.send_new(0, 2);
        let (c, sc) = r.send_new(0, 2);
        r.completions();
        // The connection breaks after both were sent: either may have been written.
        r.answer(0, b, lost());
        r.answer(0, c, lost());
        let (done, rest) = r.completions();
        assert!(done.is_empty());
        assert!(rest.iter().all(|a| matches!(a, Action::RefreshMetadata)) && !rest.is_empty());
        assert_eq!(r.s.poll_timeout(), Some(r.now + BACKOFF));
        assert_eq!(r.s.next(r.now, &tp(0)), None, "not before the backoff");
        r.advance(BACKOFF);
        let (o, s, restamped) = r.send_retry(0, 2);
        assert_eq!((o, s, restamped), (b, sb, false), "the same id and sequence, to the new leader");
        r.refuse(0, b, ErrorCode::DuplicateSequenceNumber);
        let (o, s, _) = r.send_retry(0, 2);
        assert_eq!((o, s), (c, sc));
        r.ok(0, c, 4);
        assert_eq!(offsets(r.completions().0), [(b, Some(-1)), (c, Some(4))]);
        assert!(r.s.idle());
    }

    #[test]
    fn a_batch_whose_outcome_is_unknown_is_not_sent_under_a_new_producer_id() {
        let mut r = Rig::new(5, Some(PID));
        let (a, _) = r.send_new(0, 2);
        r.ok(0, a, 0);
        let (b, _) = r.send_new(0, 2);
        let (c, _) = r.send_new(0, 2);
        r.completions();
        r.answer(0, b, lost());
        // c's answer came through: OUT_OF_ORDER behind b, an echo.
        r.refuse(0, c, ErrorCode::OutOfOrderSequenceNumber);
        assert!(!r.s.resetting());
        r.advance(BACKOFF);
        r.send_retry(0, 1);
        // b is refused: the broker lost track of the producer; a new id.
        r.refuse(0, b, ErrorCode::UnknownProducerId);
        assert!(r.s.resetting());
        r.s.on_producer_id(Some(ProducerIdAndEpoch::new(7, 1)));
        r.advance(BACKOFF);
        assert_eq!(r.s.send_retry(r.now, &tp(0), Some(1)).order(), None, "b fails");
        let (done, _) = r.completions();
        assert!(
            matches!(done[..], [(o, Err(ProduceError::OutcomeUnknown { partition: 0, .. }))] if o == b),
            "{done:?}"
        );
        // c was never maybe-written: it goes again under the new epoch, from 0.
        let (o, s, restamped) = r.send_retry(0, 1);
        assert_eq!((o, seq(s), restamped), (c, (7, 1, 0), true));
    }

    #[test]
    fn answers_for_a_partitions_batches_in_flight_settle_in_any_order_and_complete_in_take_order() {
        let mut r = Rig::new(5, Some(PID));
        let (a, _) = r.send_new(0, 1);
        r.ok(0, a, 0);
        let sent: Vec<Order> = (0..4).map(|_| r.send_new(0, 1).0).collect();
        r.completions();
        for (i, &o) in sent.iter().enumerate().skip(1).rev() {
            r.ok(0, o, 1 + i as i64);
        }
        assert!(r.completions().0.is_empty(), "the later batches wait for the first");
        assert!(!r.s.idle());
        r.ok(0, sent[0], 1);
        // An answer for a batch not in flight (already settled) is ignored.
        r.ok(0, sent[0], 99);
        let done = offsets(r.completions().0);
        let expected: Vec<_> = sent.iter().enumerate().map(|(i, o)| (*o, Some(1 + i as i64))).collect();
        assert_eq!(done, expected);
        assert!(r.s.idle());
    }

    #[test]
    fn a_batch_resent_after_a_lost_answer_completes_before_the_later_ones_already_written() {
        let mut r = Rig::new(2, Some(PID));
        let (a, _) = r.send_new(0, 1);
        r.ok(0, a, 0);
        r.completions();
        let (b, _) = r.send_new(0, 1);
        let (c, _) = r.send_new(0, 1);
        // b was written but its answer lost; c's answer comes.
        r.answer(0, b, lost());
        r.ok(0, c, 2);
        let (done, _) = r.completions();
        assert!(done.is_empty(), "c waits for b: {done:?}");
        r.advance(BACKOFF);
        let (b_again, _, restamped) = r.send_retry(0, 1);
        assert_eq!((b_again, restamped), (b, false));
        r.refuse(0, b, ErrorCode::DuplicateSequenceNumber);
        assert_eq!(offsets(r.completions().0), [(b, Some(-1)), (c, Some(2))]);
        assert!(r.s.idle());
    }

    #[test]
    fn a_leader_move_refreshes_the_metadata_and_the_batches_go_again_in_order_to_the_new_leader() {
        let mut r = Rig::new(5, Some(PID));
        let (a, _) = r.send_new(0, 1);
        r.ok(0, a, 0);
        let (b, sb) = r.send_new(0, 1);
        let (c, sc) = r.send_new(0, 1);
        r.completions();
        assert_eq!(r.s.in_flight_to(&tp(0)), Some(1));
        // c's answer first, then b's: both NOT_LEADER_OR_FOLLOWER.
        r.refuse(0, c, ErrorCode::NotLeaderOrFollower);
        r.refuse(0, b, ErrorCode::NotLeaderOrFollower);
        let (done, rest) = r.completions();
        assert!(done.is_empty());
        assert_eq!(rest.iter().filter(|a| matches!(a, Action::RefreshMetadata)).count(), 2);
        assert_eq!(r.s.in_flight_to(&tp(0)), None);
        r.advance(BACKOFF);
        assert_eq!(r.s.due_retries(r.now).collect::<Vec<_>>(), [&tp(0)]);
        // The metadata names no leader yet: kept, and the metadata refreshed again.
        assert!(matches!(r.s.send_retry(r.now, &tp(0), None), Dispatch::Parked));
        assert!(matches!(r.completions().1[..], [Action::RefreshMetadata]));
        r.advance(BACKOFF);
        let (o, s, restamped) = r.send_retry(0, 2);
        assert_eq!((o, s, restamped), (b, sb, false));
        assert_eq!(r.s.next(r.now, &tp(0)), None, "c waits for b");
        r.ok(0, b, 1);
        assert_eq!(r.s.next(r.now, &tp(0)), Some(Next::Retry), "c before anything new");
        let (o, s, _) = r.send_retry(0, 2);
        assert_eq!((o, s), (c, sc));
        assert_eq!(r.s.in_flight_to(&tp(0)), Some(2));
        r.ok(0, c, 2);
        assert_eq!(offsets(r.completions().0), [(b, Some(1)), (c, Some(2))]);
    }

    #[test]
    fn a_batch_refused_as_too_large_is_split_in_its_place_down_to_single_records() {
        let mut r = Rig::new(5, Some(PID));
        let (a, _) = r.send_new(0, 1);
        r.ok(0, a, 0);
        let (b, sb) = r.send_new(0, 4);
        let (c, sc) = r.send_new(0, 1);
        r.completions();
        assert_eq!((seq(sb).2, seq(sc).2), (1, 5));
        r.refuse(0, b, ErrorCode::MessageTooLarge);
        assert!(matches!(r.completions().1[..], [Action::Split { order, .. }] if order == b));
        // c echoes b's refusal meanwhile: retried behind b's halves.
        r.refuse(0, c, ErrorCode::OutOfOrderSequenceNumber);
        assert!(!r.s.resetting());
        r.advance(BACKOFF);
        assert_eq!(r.s.next(r.now, &tp(0)), None, "c is due, but waits for b's halves");
        r.s.on_split(r.now, &tp(0), b, Ok(3));
        // The halves go at once (no backoff), keeping the batch's sequences.
        let (o1, s1, re1) = r.send_retry(0, 1);
        assert_eq!((o1, seq(s1), re1), (b, (7, 0, 1), false));
        r.refuse(0, o1, ErrorCode::RecordListTooLarge);
        assert!(matches!(r.completions().1[..], [Action::Split { .. }]));
        r.s.on_split(r.now, &tp(0), o1, Ok(1));
        let halves: Vec<_> = (0..3)
            .map(|_| {
                let (o, s, _) = r.send_retry(0, 1);
                r.ok(0, o, 10 + i64::from(seq(s).2));
                (o, seq(s).2)
            })
            .collect();
        assert_eq!(halves, [((b.0, 0), 1), ((b.0, 1), 2), ((b.0, 3), 4)]);
        let (o, s, _) = r.send_retry(0, 1);
        assert_eq!((o, s), (c, sc));
        // A single record too large fails with the broker's code.
        r.refuse(0, c, ErrorCode::MessageTooLarge);
        let (done, _) = r.completions();
        assert_eq!(done.len(), 4);
        assert!(matches!(
            done.last(),
            Some((o, Err(ProduceError::Broker { code: ErrorCode::MessageTooLarge, message: Some(m), .. })))
                if *o == c && m.contains("1 record(s), 100 bytes")
        ));
        // Bytes that cannot be split fail the batch with the reason.
        let (d, _) = r.send_new(0, 2);
        r.refuse(0, d, ErrorCode::MessageTooLarge);
        r.actions();
        r.s.on_split(r.now, &tp(0), d, Err("bad bytes".into()));
        assert!(matches!(
            &r.completions().0[..],
            [(o, Err(ProduceError::Broker { message: Some(m), .. }))] if *o == d && m == "bad bytes"
        ));
        assert!(r.s.idle());
    }

    #[test]
    fn batches_past_the_delivery_timeout_fail_with_their_last_error() {
        let mut r = Rig::new(5, Some(PID));
        let (a, _) = r.send_new(0, 1);
        r.advance(TIMEOUT / 2);
        r.refuse(0, a, ErrorCode::NotLeaderOrFollower);
        r.actions();
        // Due again, but expired by the time it would go.
        r.advance(TIMEOUT);
        assert!(matches!(r.s.send_retry(r.now, &tp(0), Some(1)), Dispatch::Failed));
        let (done, _) = r.completions();
        assert!(
            matches!(
                &done[..],
                [(o, Err(ProduceError::DeliveryTimeout { last_error: Some(AttemptError::Broker { code: ErrorCode::NotLeaderOrFollower, .. }), .. }))] if *o == a
            ),
            "{done:?}"
        );
        // A retriable failure after the deadline is not retried.
        let (b, _) = r.send_new(0, 1);
        r.advance(TIMEOUT);
        r.answer(0, b, lost());
        let (done, _) = r.completions();
        assert!(matches!(
            &done[..],
            [(o, Err(ProduceError::DeliveryTimeout { last_error: Some(AttemptError::Connection(_)), .. }))] if *o == b
        ));
        // A new batch already expired is not sent.
        let stamped = r.s.stamp_new(&tp(0), 1);
        let created = r.now;
        r.advance(TIMEOUT);
        assert!(matches!(r.s.send_new(r.now, &tp(0), stamped, 1, created, Some(1)), Dispatch::Failed));
        assert_eq!(r.completions().0.len(), 1);
        assert!(r.s.idle());
        assert!(r.now > r.t0);
    }

    #[test]
    fn a_transactional_producer_does_not_repair_sequences_and_is_fenced() {
        for (code, fenced) in [
            (ErrorCode::OutOfOrderSequenceNumber, false),
            (ErrorCode::InvalidProducerEpoch, true),
            (ErrorCode::ProducerFenced, true),
        ] {
            let mut r = Rig::with(config(5, true), Some(PID));
            let (a, s) = r.send_new(0, 1);
            assert!(s.expect("stamped").transactional);
            r.refuse(0, a, code);
            let (done, rest) = r.completions();
            assert!(rest.is_empty(), "{code}: no new producer id");
            match &done[..] {
                [(_, Err(ProduceError::Fenced { transactional_id, producer_id: 7, epoch: 0, code: c }))] => {
                    assert!(fenced && transactional_id == "tx" && *c == code);
                }
                [(_, Err(ProduceError::Broker { code: c, .. }))] => assert!(!fenced && *c == code),
                other => panic!("{code}: {other:?}"),
            }
        }
    }

    #[test]
    fn other_refusals_fail_at_once_and_bad_bytes_fail_as_encoding_errors() {
        let mut r = Rig::new(5, Some(PID));
        let (a, _) = r.send_new(0, 1);
        r.refuse(0, a, ErrorCode::TopicAuthorizationFailed);
        let (b, _) = r.send_new(0, 1);
        r.answer(0, b, Answer::Invalid("codec".into()));
        let (done, rest) = r.completions();
        assert!(rest.is_empty());
        assert!(matches!(
            &done[..],
            [(_, Err(ProduceError::Broker { code: ErrorCode::TopicAuthorizationFailed, .. })), (_, Err(ProduceError::Encode(m)))] if m == "codec"
        ));
    }

    #[test]
    fn an_adopted_producer_id_restarts_sequences() {
        let mut r = Rig::with(config(5, true), Some(PID));
        let (a, _) = r.send_new(0, 3);
        r.ok(0, a, 0);
        r.s.adopt_producer_id(ProducerIdAndEpoch::new(7, 1));
        let (_, s) = r.send_new(0, 1);
        assert_eq!(seq(s), (7, 1, 0));
    }

    // A new batch found expired at dispatch has already taken its sequence (stamp_new
    // runs first): it gives it back, or the next batch would leave a gap the broker
    // refuses.
    #[test]
    fn an_expired_new_batch_does_not_leave_a_sequence_gap() {
        let mut r = Rig::new(5, Some(PID));
        let mut log = Log::default();
        let (a, s) = r.send_new(0, 1);
        assert_eq!(log.append(s.unwrap(), &[1], true), Ok(0));
        r.ok(0, a, 0);
        r.actions();
        // B sat in the accumulator past the delivery timeout.
        let created = r.now;
        r.advance(TIMEOUT);
        let stamped = r.s.stamp_new(&tp(0), 1);
        assert!(matches!(r.s.send_new(r.now, &tp(0), stamped, 1, created, Some(1)), Dispatch::Failed));
        r.actions();
        // C was appended just now.
        let (_, s) = r.send_new(0, 1);
        assert_eq!(log.append(s.unwrap(), &[3], true), Ok(1), "C refused: sequence {:?}", seq(s));
    }

    // A transactional producer whose batch fails for good (INVALID_RECORD, a delivery
    // timeout) must not keep stamping after the hole: under transaction version 1
    // nothing re-bases the partition's sequences, and every later transaction that
    // writes to it would fail with OUT_OF_ORDER_SEQUENCE_NUMBER.
    #[test]
    fn a_transactional_batch_failed_for_good_does_not_break_later_transactions() {
        let mut r = Rig::with(config(5, true), Some(PID));
        let mut log = Log::default();
        let (a, s) = r.send_new(0, 1);
        assert_eq!(log.append(s.unwrap(), &[1], true), Ok(0));
        r.ok(0, a, 0);
        r.actions();
        // B: the broker refuses it (a record without key on a compacted topic).
        let (b, _) = r.send_new(0, 1);
        r.refuse(0, b, ErrorCode::InvalidRecord);
        let (done, rest) = r.completions();
        assert!(done.len() == 1 && rest.is_empty(), "{done:?} {rest:?}");
        // The transaction aborts (EndTxn v4: no new epoch). The next one writes C.
        let (c, s) = r.send_new(0, 1);
        let answer = log.append(s.unwrap(), &[3], true);
        if let Err(code) = answer {
            r.refuse(0, c, code);
        }
        assert_eq!(answer, Ok(1), "the next transaction's batch is refused; {:?}", r.completions());
    }

    #[test]
    fn a_batch_refused_for_good_gives_its_sequences_to_the_later_ones_not_yet_sent() {
        let mut r = Rig::new(5, Some(PID));
        let mut log = Log::default();
        let (a, s) = r.send_new(0, 1);
        assert_eq!(log.append(s.unwrap(), &[1], true), Ok(0));
        r.ok(0, a, 0);
        r.actions();
        let (b, _) = r.send_new(0, 2);
        // C is taken while the partition has no leader: it waits, stamped after B.
        let stamped = r.s.stamp_new(&tp(0), 1);
        assert!(matches!(r.s.send_new(r.now, &tp(0), stamped, 1, r.now, None), Dispatch::Parked));
        r.actions();
        r.refuse(0, b, ErrorCode::InvalidRecord);
        let (done, rest) = r.completions();
        assert!(done.len() == 1 && done[0].1.is_err() && rest.is_empty(), "{done:?} {rest:?}");
        r.advance(BACKOFF);
        let (_, s, restamped) = r.send_retry(0, 1);
        assert!(restamped, "C's bytes carry its old sequence");
        assert_eq!(log.append(s.unwrap(), &[3], true), Ok(1), "C refused: sequence {:?}", seq(s));
        let (_, s) = r.send_new(0, 1);
        assert_eq!(seq(s), (7, 0, 2));
    }

    #[test]
    fn a_batch_that_may_have_been_written_and_fails_for_good_gets_a_new_producer_id() {
        let mut r = Rig::new(5, Some(PID));
        let (a, _) = r.send_new(0, 1);
        r.answer(0, a, lost());
        r.actions();
        r.advance(TIMEOUT);
        assert!(matches!(r.s.send_retry(r.now, &tp(0), Some(1)), Dispatch::Failed));
        let (done, rest) = r.completions();
        assert_eq!(done.len(), 1);
        assert!(matches!(rest[..], [Action::ResetProducerId { current: Some(PID) }]), "{rest:?}");
        assert!(r.s.resetting());
    }

    #[test]
    fn a_request_that_never_reached_the_socket_is_stamped_again_under_a_new_producer_id() {
        let mut r = Rig::new(5, Some(PID));
        let (a, _) = r.send_new(0, 1);
        let timeout = klife_connection::Error::Timeout {
            broker: "1".into(),
            api: klife_protocol::ApiKey::Produce,
            timeout: Duration::from_secs(30),
            kind: klife_connection::TimeoutKind::Connection,
        };
        r.answer(0, a, Answer::NotSent(timeout));
        assert!(matches!(r.actions()[..], [Action::RefreshMetadata]));
        r.s.on_producer_id(Some(ProducerIdAndEpoch::new(7, 1)));
        r.advance(BACKOFF);
        let (order, s, restamped) = r.send_retry(0, 1);
        assert_eq!((order, seq(s), restamped), (a, (7, 1, 0), true));
    }

    /// The model of a partition's log on a Kafka broker, with its idempotence checks:
    /// per producer id, its epoch and its last five batches.
    #[derive(Default)]
    struct Log {
        /// Record ids, in offset order.
        records: Vec<u64>,
        producers: HashMap<i64, (i16, VecDeque<RecentBatch>)>,
    }

    /// A batch a model log remembers: first and last sequence, base offset.
    type RecentBatch = (i32, i32, i64);

    /// The most records a batch may hold on the model broker (its size limit).
    const MAX_RECORDS: usize = 3;

    impl Log {
        /// Appends a batch as Kafka does; `strict`: a producer id the log does not
        /// know must start at sequence 0 (otherwise any sequence is taken).
        fn append(&mut self, stamp: ProducerStamp, records: &[u64], strict: bool) -> Result<i64, ErrorCode> {
            if records.len() > MAX_RECORDS {
                return Err(ErrorCode::MessageTooLarge);
            }
            let first = stamp.base_sequence;
            let last = first.wrapping_add(records.len() as i32 - 1) & i32::MAX;
            match self.producers.get(&stamp.producer_id) {
                None if strict && first != 0 => return Err(ErrorCode::OutOfOrderSequenceNumber),
                None => {}
                Some((epoch, _)) if stamp.producer_epoch < *epoch => return Err(ErrorCode::InvalidProducerEpoch),
                Some((epoch, _)) if stamp.producer_epoch > *epoch && first != 0 => {
                    return Err(ErrorCode::OutOfOrderSequenceNumber);
                }
                Some((epoch, _)) if stamp.producer_epoch > *epoch => {}
                Some((_, batches)) => {
                    if batches.iter().any(|&(f, l, _)| (f, l) == (first, last)) {
                        return Err(ErrorCode::DuplicateSequenceNumber);
                    }
                    let expected = batches.back().map_or(0, |&(_, l, _)| l.wrapping_add(1) & i32::MAX);
                    if first != expected {
                        return Err(ErrorCode::OutOfOrderSequenceNumber);
                    }
                }
            }
            let base = self.records.len() as i64;
            self.records.extend_from_slice(records);
            let entry = self.producers.entry(stamp.producer_id).or_insert((stamp.producer_epoch, VecDeque::new()));
            if entry.0 != stamp.producer_epoch {
                *entry = (stamp.producer_epoch, VecDeque::new());
            }
            entry.1.push_back((first, last, base));
            if entry.1.len() > 5 {
                entry.1.pop_front();
            }
            Ok(base)
        }
    }

    /// What becomes of a request on its way.
    #[derive(Debug, Clone, Copy)]
    enum Fate {
        /// The broker handles it and its answer comes back.
        Answered,
        /// The broker handles it, the answer is lost (a timeout).
        WrittenThenLost,
        /// The connection breaks before the broker reads it.
        Lost,
        /// The partition's leader moved: NOT_LEADER_OR_FOLLOWER.
        NotLeader,
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Records appended to a partition: a new batch of that many.
        Append(usize, usize),
        /// The driver sends what the partition has to send.
        Send(usize, Fate),
        /// One of the answers on their way comes back (any of them, in any order).
        Answer(usize),
        /// Time passes.
        Advance(u64),
        /// The broker forgets every producer of a partition (their state expired).
        Forget(usize),
        /// A producer id asked for is obtained, or not.
        ProducerId(bool),
        /// The metadata names no leader for a partition, or names one again.
        Leaderless(usize, bool),
    }

    fn op() -> impl Strategy<Value = Op> {
        let fate = prop_oneof![
            6 => Just(Fate::Answered),
            1 => Just(Fate::WrittenThenLost),
            1 => Just(Fate::Lost),
            1 => Just(Fate::NotLeader),
        ];
        prop_oneof![
            4 => (0..PARTITIONS, 1..6usize).prop_map(|(p, n)| Op::Append(p, n)),
            4 => (0..PARTITIONS, fate).prop_map(|(p, f)| Op::Send(p, f)),
            4 => any::<usize>().prop_map(Op::Answer),
            2 => (0..3_000u64).prop_map(Op::Advance),
            1 => (0..PARTITIONS).prop_map(Op::Forget),
            1 => any::<bool>().prop_map(Op::ProducerId),
            1 => (0..PARTITIONS, any::<bool>()).prop_map(|(p, l)| Op::Leaderless(p, l)),
        ]
    }

    const PARTITIONS: usize = 2;

    /// A driver around the sequencer with model brokers, checking the invariants.
    struct World {
        r: Rig,
        strict: bool,
        /// Answers come back as on one connection: in the order sent, and when one
        /// is lost (the connection broke or timed out) every answer still due is
        /// lost with it.
        connection: bool,
        /// Per partition, the records acknowledged, in the order acknowledged.
        acked: Vec<Vec<u64>>,
        logs: Vec<Log>,
        /// Per partition, appended batches not yet taken: their record ids.
        queued: Vec<VecDeque<Vec<u64>>>,
        /// Record ids of every batch the sequencer knows, by partition and order.
        bodies: BTreeMap<(usize, Order), Vec<u64>>,
        /// Answers on their way: partition, batch, what the broker said.
        answers: Vec<(usize, Order, Answer)>,
        next_record: u64,
        appended: HashSet<u64>,
        /// Each record's outcome: its offset, -1 for a duplicate, `None` for an error.
        outcomes: HashMap<u64, Option<i64>>,
        /// Which record each (producer id, epoch, partition, sequence) was sent for.
        sequences: HashMap<(i64, i16, usize, i32), u64>,
        reset_asked: bool,
        next_producer: i64,
        leaderless: [bool; PARTITIONS],
    }

    impl World {
        fn new(max_in_flight: usize, strict: bool, connection: bool) -> World {
            World {
                r: Rig::new(max_in_flight, Some(PID)),
                strict,
                connection,
                acked: vec![Vec::new(); PARTITIONS],
                logs: (0..PARTITIONS).map(|_| Log::default()).collect(),
                queued: vec![VecDeque::new(); PARTITIONS],
                bodies: BTreeMap::new(),
                answers: Vec::new(),
                next_record: 0,
                appended: HashSet::new(),
                outcomes: HashMap::new(),
                sequences: HashMap::new(),
                reset_asked: false,
                next_producer: PID.id + 1,
                leaderless: [false; PARTITIONS],
            }
        }

        fn apply(&mut self, op: Op) {
            match op {
                Op::Append(p, n) => {
                    let ids: Vec<u64> = (self.next_record..self.next_record + n as u64).collect();
                    self.next_record += n as u64;
                    self.appended.extend(ids.iter().copied());
                    self.queued[p].push_back(ids);
                }
                Op::Send(p, fate) => self.send(p, fate),
                Op::Answer(i) if !self.answers.is_empty() => {
                    let at = if self.connection { 0 } else { i % self.answers.len() };
                    let (p, order, answer) = self.answers.remove(at);
                    if self.connection && matches!(answer, Answer::Lost(_)) {
                        for (_, _, later) in &mut self.answers {
                            *later = lost();
                        }
                    }
                    self.r.s.on_answer(self.r.now, &tp(p as i32), order, answer);
                }
                Op::Answer(_) => {}
                Op::Advance(ms) => self.r.advance(Duration::from_millis(ms)),
                // Kafka expires a producer's state only once it has been idle long:
                // forgotten with a batch of it unsettled, a retry of a batch already
                // written could be written twice, whatever the client does. And only
                // on a strict broker: one that takes any sequence from a producer it
                // does not know writes the second batch of a burst before a refused
                // first one (the sequencer sends up to `max_in_flight`
                // batches to a leader that confirmed the producer id,
                // and cannot see that the leader forgot it since).
                Op::Forget(p) => {
                    let idle = self.r.s.partitions.get(&tp(p as i32)).is_none_or(Partition::idle);
                    if self.strict && idle && self.answers.iter().all(|(q, _, _)| *q != p) {
                        self.logs[p].producers.clear();
                    }
                }
                Op::ProducerId(ok) if self.reset_asked => {
                    self.reset_asked = false;
                    let id = ok.then(|| {
                        self.next_producer += 1;
                        ProducerIdAndEpoch::new(self.next_producer, 0)
                    });
                    self.r.s.on_producer_id(id);
                }
                Op::ProducerId(_) => {}
                Op::Leaderless(p, l) => self.leaderless[p] = l,
            }
            self.drain_actions();
        }

        fn send(&mut self, p: usize, fate: Fate) {
            let now = self.r.now;
            let leader = (!self.leaderless[p]).then_some(1);
            let dispatch = match self.r.s.next(now, &tp(p as i32)) {
                None => return,
                Some(Next::Retry) => self.r.s.send_retry(now, &tp(p as i32), leader),
                Some(Next::New) => {
                    let Some(ids) = self.queued[p].pop_front() else { return };
                    let stamped = self.r.s.stamp_new(&tp(p as i32), ids.len() as i32);
                    self.bodies.insert((p, stamped.0), ids.clone());
                    self.r.s.send_new(now, &tp(p as i32), stamped, ids.len() as i32, now, leader)
                }
            };
            let Dispatch::Send { order, stamp, .. } = dispatch else { return };
            let stamp = stamp.expect("idempotent");
            let ids = self.bodies[&(p, order)].clone();
            for (i, id) in ids.iter().enumerate() {
                let sequence = stamp.base_sequence.wrapping_add(i as i32) & i32::MAX;
                let key = (stamp.producer_id, stamp.producer_epoch, p, sequence);
                // A sequence goes to another record only when the batch that had it
                // failed without being written (its gap closed).
                let earlier = *self.sequences.entry(key).or_insert(*id);
                if earlier != *id {
                    let written = self.logs[p].records.contains(&earlier);
                    assert!(!written, "sequence {key:?} reused for another record while {earlier} is in the log");
                    self.sequences.insert(key, *id);
                }
            }
            let answer = match fate {
                Fate::Lost => lost(),
                Fate::NotLeader => {
                    Answer::Refused { code: ErrorCode::NotLeaderOrFollower, message: None, bytes: ids.len() }
                }
                Fate::Answered | Fate::WrittenThenLost => {
                    let written = self.logs[p].append(stamp, &ids, self.strict);
                    match (fate, written) {
                        (Fate::WrittenThenLost, _) => Answer::Lost(klife_connection::Error::Timeout {
                            broker: "1".into(),
                            api: klife_protocol::ApiKey::Produce,
                            timeout: TIMEOUT,
                            kind: klife_connection::TimeoutKind::Connection,
                        }),
                        (_, Ok(base)) => Answer::Written { base, append_time: -1 },
                        (_, Err(code)) => Answer::Refused { code, message: None, bytes: ids.len() },
                    }
                }
            };
            self.answers.push((p, order, answer));
        }

        fn drain_actions(&mut self) {
            while let Some(action) = self.r.s.poll_action() {
                match action {
                    Action::Complete { partition, order, result } => {
                        let p = partition.partition as usize;
                        let ids = self.bodies.remove(&(p, order)).expect("a batch completed once, and known");
                        if result.is_ok() {
                            self.acked[p].extend(ids.iter().copied());
                        }
                        for (i, id) in ids.iter().enumerate() {
                            let outcome = result.as_ref().ok().map(|w| if w.base < 0 { -1 } else { w.base + i as i64 });
                            assert!(self.outcomes.insert(*id, outcome).is_none(), "record {id} completed twice");
                        }
                    }
                    Action::Split { partition, order } => {
                        let p = partition.partition as usize;
                        let ids = self.bodies.remove(&(p, order)).expect("a batch being split is known");
                        let at = ids.len() / 2;
                        self.bodies.insert((p, order), ids[..at].to_vec());
                        self.bodies.insert((p, (order.0, order.1 + at as i32)), ids[at..].to_vec());
                        self.r.s.on_split(self.r.now, &partition, order, Ok(at as i32));
                    }
                    Action::RefreshMetadata => {}
                    Action::ResetProducerId { current } => {
                        assert!(!self.reset_asked, "one reset at a time");
                        assert_eq!(current, self.r.s.producer_id());
                        self.reset_asked = true;
                    }
                }
            }
        }

        /// Everything answered and sent until nothing is left (leaders back, no more
        /// faults), then the invariants.
        fn settle_and_check(&mut self) {
            self.leaderless = [false; PARTITIONS];
            for _ in 0..10_000 {
                if self.r.s.idle() && self.answers.is_empty() && self.queued.iter().all(VecDeque::is_empty) {
                    break;
                }
                while !self.answers.is_empty() {
                    self.apply(Op::Answer(0));
                }
                self.apply(Op::ProducerId(true));
                for p in 0..PARTITIONS {
                    self.apply(Op::Send(p, Fate::Answered));
                }
                if let Some(t) = self.r.s.poll_timeout() {
                    self.r.now = self.r.now.max(t);
                }
            }
            assert!(self.r.s.idle(), "the sequencer settles");
            assert!(self.bodies.is_empty(), "every batch completed: {:?}", self.bodies.keys());
            let done: HashSet<u64> = self.outcomes.keys().copied().collect();
            assert_eq!(done, self.appended, "every record completed exactly once");
            for (p, log) in self.logs.iter().enumerate() {
                // Each partition's log holds its records once each, in append order.
                assert!(log.records.windows(2).all(|w| w[0] < w[1]), "partition {p}: {:?}", log.records);
                for (offset, id) in log.records.iter().enumerate() {
                    match self.outcomes[id] {
                        Some(o) if o >= 0 => assert_eq!(o, offset as i64, "record {id}'s acknowledged offset"),
                        _ => {}
                    }
                }
            }
            if self.connection {
                // Answers in the order sent: records are acknowledged in append order.
                for (p, acked) in self.acked.iter().enumerate() {
                    assert!(acked.windows(2).all(|w| w[0] < w[1]), "partition {p} acknowledged {acked:?}");
                }
            }
            for (id, outcome) in &self.outcomes {
                if outcome.is_some() {
                    assert!(self.logs.iter().any(|l| l.records.contains(id)), "record {id} acknowledged, not written");
                }
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// Whatever the faults and the order answers come back in: every record is
        /// completed exactly once, a sequence is never reused for another record
        /// under one producer id and epoch, each partition's log holds its records
        /// once each and in append order (so acknowledged offsets grow in append
        /// order), and every record acknowledged is in the log at its offset. With
        /// answers in the order sent (as on one connection), records are also
        /// acknowledged in the order appended.
        #[test]
        fn batches_settle_once_in_order_without_duplicates(
            max_in_flight in 1..6usize,
            strict in any::<bool>(),
            connection in any::<bool>(),
            ops in proptest::collection::vec(op(), 1..120),
        ) {
            let mut world = World::new(max_in_flight, strict, connection);
            for op in ops {
                world.apply(op);
            }
            world.settle_and_check();
        }
    }
}
