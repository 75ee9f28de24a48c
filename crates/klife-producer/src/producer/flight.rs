//! A batch between the accumulator and the broker's answer: its records (finished into
//! bytes by the task that sends them), its completion, and its retry state.

use std::time::Instant;

use bytes::Bytes;
use klife_protocol::records::{RecordBatchWriter, with_producer_state};

use crate::ProduceError;
use crate::accumulator::{ProducerStamp, TakenBatch, TopicPartition};
use crate::delivery::BatchCompletion;

/// A batch's records, finished into bytes once they are about to be sent (outside the
/// producer's lock).
pub(super) enum Body {
    Unfinished(RecordBatchWriter),
    Finished(Bytes),
}

impl Body {
    /// Its encoded size so far.
    pub(super) fn len(&self) -> usize {
        match self {
            Body::Unfinished(w) => w.size_in_bytes(),
            Body::Finished(bytes) => bytes.len(),
        }
    }
}

/// A batch between the accumulator and the broker's answer.
pub(super) struct Flight {
    pub(super) partition: TopicPartition,
    /// Take order: batches of a partition are written in this order.
    pub(super) order: u64,
    pub(super) body: Body,
    /// Settles every record of the batch.
    pub(super) completion: BatchCompletion,
    pub(super) record_count: i32,
    /// When its first record was appended.
    pub(super) created: Instant,
    /// Bytes it holds against `buffer_memory`.
    pub(super) reserved: usize,
    /// (producer id, epoch, base sequence) it is stamped with, when idempotent.
    pub(super) stamp: Option<ProducerStamp>,
    pub(super) retry_at: Option<Instant>,
    pub(super) last_error: Option<String>,
    /// An earlier attempt's outcome is unknown (the connection broke or timed out):
    /// the broker may have written it. Such a batch is only ever sent again with the
    /// same producer id and sequence, so that the broker can recognize a duplicate.
    pub(super) maybe_written: bool,
}

impl Flight {
    pub(super) fn new(batch: TakenBatch<(), BatchCompletion>, stamp: Option<ProducerStamp>, order: u64) -> Flight {
        Flight {
            order,
            record_count: batch.tokens.len() as i32,
            partition: batch.partition,
            body: Body::Unfinished(batch.writer),
            completion: batch.shared,
            created: batch.created,
            reserved: batch.reserved,
            stamp,
            retry_at: None,
            last_error: None,
            maybe_written: false,
        }
    }

    /// Stamps the batch with a new producer id, epoch and base sequence.
    pub(super) fn restamp(&mut self, s: ProducerStamp) -> Result<(), String> {
        match &mut self.body {
            Body::Unfinished(w) => {
                w.set_producer_state(s.producer_id, s.producer_epoch, s.base_sequence, s.transactional)
            }
            Body::Finished(bytes) => {
                *bytes = with_producer_state(
                    std::mem::take(bytes),
                    s.producer_id,
                    s.producer_epoch,
                    s.base_sequence,
                    s.transactional,
                )
                .map_err(|e| e.to_string())?;
            }
        }
        Ok(())
    }

    /// Finishes the batch bytes if they are not yet; `Err` when the codec fails.
    pub(super) fn finish(&mut self) -> Result<&Bytes, String> {
        if let Body::Unfinished(_) = self.body {
            let Body::Unfinished(writer) = std::mem::replace(&mut self.body, Body::Finished(Bytes::new())) else {
                unreachable!("checked above")
            };
            self.body = Body::Finished(writer.finish().map_err(|e| e.to_string())?);
        }
        match &self.body {
            Body::Finished(bytes) => Ok(bytes),
            Body::Unfinished(_) => Err("the batch was not finished".into()),
        }
    }

    /// Fails every record of the batch.
    pub(super) fn fail(self, error: ProduceError) {
        self.completion.complete(Err(error));
    }
}
