//! A batch between the accumulator and the broker's answer: its records (finished into
//! bytes by the task that sends them) and its completion. When and with which stamp it
//! goes is the [`Sequencer`](super::sequencing::Sequencer)'s decision.

use bytes::Bytes;
use klife_protocol::records::{BatchOptions, RecordBatch, RecordBatchWriter, with_producer_state};

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

/// Where a batch goes in its partition's log: the take order of the batch, and the
/// number of its first record in the batch as taken (more than 0 for the second half
/// of a split batch). Batches of a partition are written in this order.
pub(super) type Order = (u64, i32);

/// A batch between the accumulator and the broker's answer.
pub(super) struct Flight {
    pub(super) partition: TopicPartition,
    pub(super) order: Order,
    pub(super) body: Body,
    /// Settles every record of the batch.
    pub(super) completion: BatchCompletion,
    pub(super) record_count: i32,
    /// Bytes it holds against `buffer_memory`.
    pub(super) reserved: usize,
}

impl Flight {
    pub(super) fn new(batch: TakenBatch<(), BatchCompletion>, order: Order) -> Flight {
        Flight {
            order,
            record_count: batch.tokens.len() as i32,
            partition: batch.partition,
            body: Body::Unfinished(batch.writer),
            completion: batch.shared,
            reserved: batch.reserved,
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

    /// Splits the batch in two halves of about the same record count, for a broker
    /// that refused it as too large. The halves keep its place (the first half first),
    /// the sequence numbers of its records and their futures. `Err` gives the
    /// batch back when it cannot be split: a single record, or bytes that do not
    /// decode.
    pub(super) fn split(mut self) -> Result<(Flight, Flight), Box<(Flight, String)>> {
        if self.record_count < 2 {
            return Err(Box::new((self, "a single record cannot be split".into())));
        }
        let halves = match self.finish() {
            Ok(bytes) => split_batch(bytes),
            Err(e) => Err(e),
        };
        let (first, second, at) = match halves {
            Ok(halves) => halves,
            Err(e) => return Err(Box::new((self, e))),
        };
        let reserved = self.reserved * at / self.record_count as usize;
        let Flight { partition, order, completion, record_count, reserved: total, .. } = self;
        let (done_first, done_second) = completion.split(at);
        let half = |order, body, completion, record_count, reserved| Flight {
            partition: partition.clone(),
            order,
            body: Body::Finished(body),
            completion,
            record_count,
            reserved,
        };
        Ok((
            half(order, first, done_first, at as i32, reserved),
            half((order.0, order.1 + at as i32), second, done_second, record_count - at as i32, total - reserved),
        ))
    }
}

/// Re-encodes an encoded batch as two: its first half of records, and the rest (the
/// second half's sequence follows the first's). Returns them and the first's record
/// count.
fn split_batch(bytes: &Bytes) -> Result<(Bytes, Bytes, usize), String> {
    let batch = RecordBatch::decode(&mut bytes.clone()).map_err(|e| format!("cannot split the batch: {e}"))?;
    let at = batch.len() / 2;
    let encode = |from: usize, to: usize, base_sequence: i32| {
        let mut writer = RecordBatchWriter::new(BatchOptions {
            compression: batch.compression(),
            timestamp_type: batch.timestamp_type(),
            transactional: batch.is_transactional(),
            producer_id: batch.producer_id(),
            producer_epoch: batch.producer_epoch(),
            base_sequence,
            ..BatchOptions::default()
        });
        for record in batch.iter().skip(from).take(to - from) {
            let headers: Vec<_> = record.headers().collect();
            writer.append_with_headers(record.record_timestamp(), record.key(), record.value(), &headers)?;
        }
        writer.finish()
    };
    let second_sequence = match batch.base_sequence() {
        seq if seq >= 0 => seq.wrapping_add(at as i32) & i32::MAX,
        none => none,
    };
    let first = encode(0, at, batch.base_sequence()).map_err(|e| format!("cannot split the batch: {e}"))?;
    let second = encode(at, batch.len(), second_sequence).map_err(|e| format!("cannot split the batch: {e}"))?;
    Ok((first, second, at))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use klife_protocol::Compression;

    use super::*;

    fn batch(compression: Compression, sequence: i32) -> Bytes {
        let mut w = RecordBatchWriter::new(BatchOptions {
            compression,
            transactional: true,
            producer_id: 7,
            producer_epoch: 3,
            base_sequence: sequence,
            ..BatchOptions::default()
        });
        for i in 0..5u8 {
            let key = [b'k', i];
            let value = vec![i; 10 + usize::from(i)];
            w.append_with_headers(1_000 + i64::from(i) * 7, Some(&key), Some(&value), &[("h", Some([i]))]).unwrap();
        }
        w.finish().unwrap()
    }

    /// Timestamp, key, value and first header value of a record.
    type Fields = (i64, Vec<u8>, Vec<u8>, Vec<u8>);

    fn records(bytes: &Bytes) -> (RecordBatch, Vec<Fields>) {
        let b = RecordBatch::decode(&mut bytes.clone()).unwrap();
        let r = b
            .iter()
            .map(|r| {
                let header = r.headers().next().and_then(|h| h.value()).unwrap_or_default().to_vec();
                (
                    r.record_timestamp(),
                    r.key().unwrap_or_default().to_vec(),
                    r.value().unwrap_or_default().to_vec(),
                    header,
                )
            })
            .collect();
        (b, r)
    }

    #[test]
    fn a_split_batch_keeps_its_records_codec_and_sequences() {
        for codec in [Compression::None, Compression::Zstd] {
            let whole = batch(codec, i32::MAX - 1);
            let (first, second, at) = split_batch(&whole).unwrap();
            assert_eq!(at, 2);
            let (_, all) = records(&whole);
            let (b1, r1) = records(&first);
            let (b2, r2) = records(&second);
            assert_eq!([r1, r2].concat(), all, "{codec}: the same records, in order");
            for b in [&b1, &b2] {
                assert_eq!((b.producer_id(), b.producer_epoch(), b.compression()), (7, 3, codec));
                assert!(b.is_transactional());
            }
            // The second half's sequence follows the first's, wrapping as Kafka's do.
            assert_eq!((b1.base_sequence(), b2.base_sequence()), (i32::MAX - 1, 0));
        }
    }

    #[test]
    fn a_batch_without_producer_state_splits_without_sequences() {
        let mut w = RecordBatchWriter::new(BatchOptions::default());
        for i in 0..3u8 {
            w.append(5, None, Some(&[i])).unwrap();
        }
        let (first, second, at) = split_batch(&w.finish().unwrap()).unwrap();
        assert_eq!(at, 1);
        let (b1, _) = records(&first);
        let (b2, r2) = records(&second);
        assert_eq!((b1.len(), b2.len(), b1.base_sequence(), b2.base_sequence()), (1, 2, -1, -1));
        assert_eq!(r2.iter().map(|r| r.2.clone()).collect::<Vec<_>>(), [vec![1], vec![2]]);
    }

    #[test]
    fn bytes_that_do_not_decode_are_not_split() {
        assert!(split_batch(&Bytes::from_static(b"not a batch")).is_err());
    }
}
