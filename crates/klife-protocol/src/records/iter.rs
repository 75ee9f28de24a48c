//! [`RecordBatches`]: the batches in the `records` bytes of a Fetch response.

use bytes::Bytes;

use super::header::at;
use super::{LOG_OVERHEAD, MAGIC, RawBatch};
use crate::error::DecodeError;

/// Iterator over the batches in a `records` field, such as a Fetch response partition's.
///
/// Yields each complete batch as a [`RawBatch`] (header parsed, CRC and records not yet
/// checked: call [`RawBatch::decode`]). The broker fills a fetch up to its byte limit and
/// may cut the last batch short; the iterator then ends (`None`) without an error, and
/// [`partial_tail`](Self::partial_tail) returns the incomplete bytes.
///
/// Every batch, of any format version, starts with `baseOffset: int64` and
/// `batchLength: int32`, so a batch that can not be used is still skipped whole: a
/// legacy (magic 0 or 1) message set yields [`DecodeError::UnsupportedMagic`] and an
/// unusable v2 header yields its error, and iteration goes on after them. Only a
/// negative `batchLength`, which leaves no way to find the next batch, ends iteration
/// with an error.
///
/// ```
/// use bytes::Bytes;
/// use klife_protocol::records::{BatchOptions, RecordBatchWriter, RecordBatches};
///
/// let mut w = RecordBatchWriter::new(BatchOptions::default());
/// w.append(0, None, Some(b"hello"))?;
/// let batch = w.finish()?;
/// // One complete batch followed by the first 20 bytes of another.
/// let fetched = Bytes::from([&batch[..], &batch[..20]].concat());
///
/// let mut batches = RecordBatches::new(fetched);
/// let first = batches.next().expect("one batch")?.decode()?;
/// assert_eq!(first.get(0).and_then(|r| r.value()), Some(&b"hello"[..]));
/// assert!(batches.next().is_none());
/// assert_eq!(batches.partial_tail().map(|b| b.len()), Some(20));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct RecordBatches {
    rest: Bytes,
    failed: bool,
}

impl RecordBatches {
    /// Iterates over the batches in `records`.
    pub fn new(records: Bytes) -> Self {
        RecordBatches { rest: records, failed: false }
    }

    /// The bytes not consumed yet.
    pub fn remaining(&self) -> &Bytes {
        &self.rest
    }

    /// The incomplete batch at the end of the input, once the iterator has reached it:
    /// bytes are left but too few for the batch they start. `None` if the input ended
    /// on a batch boundary, if more complete batches remain, or after an error.
    pub fn partial_tail(&self) -> Option<&Bytes> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        match frame_size(&self.rest) {
            Frame::Partial => Some(&self.rest),
            Frame::Complete(_) | Frame::Invalid(_) => None,
        }
    }

    /// Whether iteration stopped at an incomplete trailing batch.
    pub fn is_truncated(&self) -> bool {
        self.partial_tail().is_some()
    }
}

enum Frame {
    /// A whole batch of this many bytes is present.
    Complete(usize),
    /// The batch is cut short.
    Partial,
    /// `batchLength` is negative.
    Invalid(i32),
}

fn frame_size(input: &[u8]) -> Frame {
    let Some(length) = input.get(at::BATCH_LENGTH..LOG_OVERHEAD) else {
        return Frame::Partial;
    };
    let mut b = [0u8; 4];
    b.copy_from_slice(length);
    let length = i32::from_be_bytes(b);
    match usize::try_from(length) {
        Err(_) => Frame::Invalid(length),
        Ok(n) if LOG_OVERHEAD + n > input.len() => Frame::Partial,
        Ok(n) => Frame::Complete(LOG_OVERHEAD + n),
    }
}

impl Iterator for RecordBatches {
    type Item = Result<RawBatch, DecodeError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.rest.is_empty() {
            return None;
        }
        match frame_size(&self.rest) {
            Frame::Partial => None,
            Frame::Invalid(length) => {
                self.failed = true;
                Some(Err(DecodeError::InvalidLength { what: "record batch length", length: length.into() }))
            }
            Frame::Complete(size) => {
                let bytes = self.rest.split_to(size);
                match bytes.get(at::MAGIC) {
                    Some(&m) if m as i8 != MAGIC => Some(Err(DecodeError::UnsupportedMagic(m as i8))),
                    _ => Some(RawBatch::new(bytes)),
                }
            }
        }
    }
}

impl std::iter::FusedIterator for RecordBatches {}
