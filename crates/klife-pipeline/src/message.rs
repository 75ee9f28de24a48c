//! What a pipeline's stages handle: a [`Message`] carries the full [`Record`] and the
//! reference that acknowledges it; [`Metadata`] is the broadway_kafka-style view
//! (value + metadata) of the same record.

use std::sync::Arc;

use bytes::Bytes;
use klife_fetcher::Record;
use klife_producer::ProducerRecord;
use klife_protocol::types::TopicPartition;

use crate::ack::Delivery;
use crate::route::BatchKey;

/// One record going through a pipeline.
///
/// A message is acknowledged once the stage that ends it (the processor, or the
/// batcher when the pipeline has batchers) is done with it, failed or not: failed
/// messages go through [`Processor::handle_failed`](crate::runtime::Processor::handle_failed)
/// first. The partition's offset is committed when every lower message of it is
/// acknowledged too.
#[derive(Debug)]
pub struct Message {
    record: Record,
    pub(crate) delivery: Delivery,
    batch_key: BatchKey,
    failure: Option<Arc<str>>,
    outputs: Vec<ProducerRecord>,
}

/// The metadata of a message, in the shape broadway_kafka gives next to the value.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Metadata {
    /// The topic.
    pub topic: Arc<str>,
    /// The partition.
    pub partition: i32,
    /// The offset.
    pub offset: i64,
    /// The key.
    pub key: Option<Bytes>,
    /// The timestamp, in milliseconds since the epoch.
    pub ts: i64,
    /// The headers, in order.
    pub headers: Vec<(String, Option<Bytes>)>,
}

impl Message {
    pub(crate) fn new(record: Record, delivery: Delivery, partition: &TopicPartition) -> Message {
        Message { record, delivery, batch_key: BatchKey::partition(partition), failure: None, outputs: Vec::new() }
    }

    /// The record.
    pub fn record(&self) -> &Record {
        &self.record
    }

    /// The record's value (the broadway_kafka `data`).
    pub fn data(&self) -> Option<&Bytes> {
        self.record.value.as_ref()
    }

    /// The record's metadata, broadway_kafka style.
    pub fn metadata(&self) -> Metadata {
        let r = &self.record;
        Metadata {
            topic: r.topic.clone(),
            partition: r.partition,
            offset: r.offset,
            key: r.key.clone(),
            ts: r.timestamp,
            headers: r.headers.iter().map(|h| (h.key.clone(), h.value.clone())).collect(),
        }
    }

    /// The record's partition.
    pub fn topic_partition(&self) -> &TopicPartition {
        self.delivery.topic_partition()
    }

    /// Marks the message failed: it skips the batcher, goes to
    /// [`Processor::handle_failed`](crate::runtime::Processor::handle_failed), and is
    /// then acknowledged (its offset is committed like any other).
    pub fn fail(&mut self, reason: impl Into<Arc<str>>) {
        self.failure = Some(reason.into());
    }

    /// Why the message failed, if it did.
    pub fn failure(&self) -> Option<&str> {
        self.failure.as_deref()
    }

    /// Whether the message failed.
    pub fn is_failed(&self) -> bool {
        self.failure.is_some()
    }

    /// Queues a record to write for this message, from any stage (`handle_failed`
    /// included: a dead letter). The pipeline writes what a message queued before its
    /// offset is committed: through the member's producer before the message is
    /// acknowledged (at least once), or, in a transactional pipeline
    /// ([`Source::transactional`](crate::runtime::Source::transactional)), in the
    /// transaction that commits its offset (exactly once). A write that fails
    /// restarts the partition from its last commit: its messages come again.
    pub fn produce(&mut self, record: ProducerRecord) {
        self.outputs.push(record);
    }

    /// The records queued with [`produce`](Self::produce), taken out.
    pub(crate) fn take_outputs(&mut self) -> Vec<ProducerRecord> {
        std::mem::take(&mut self.outputs)
    }

    /// The key of the batch the message joins (its partition unless changed).
    pub fn batch_key(&self) -> &BatchKey {
        &self.batch_key
    }

    /// Changes the key of the batch the message joins. A coarser key
    /// ([`BatchKey::Topic`], [`BatchKey::Single`]) keeps each partition's order inside
    /// the batches; a [`BatchKey::Custom`] key finer than a partition spreads one
    /// partition over several batches, which may then be handled out of order.
    pub fn put_batch_key(&mut self, key: BatchKey) {
        self.batch_key = key;
    }
}
