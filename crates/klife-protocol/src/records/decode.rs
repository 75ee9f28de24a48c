//! Decoding a batch's records into a [`RecordBatch`]: one shared buffer and a compact
//! table of positions, read through [`RecordView`]s.
//!
//! Indexing a batch allocates two `Vec`s (records and, if any, headers) and touches no
//! reference counts per record: keys, values and headers are borrowed from the batch's
//! buffer, and become [`Bytes`] (one reference count each) only when asked.

use std::fmt;

use bytes::Bytes;

use super::index::{Entry, HeaderEntry, Span, index_records};
use super::{BATCH_HEADER_SIZE, BatchAttributes, BatchHeader, DEFAULT_MAX_DECOMPRESSED_SIZE, Header, RawBatch, Record};
use super::{TimestampType, control};
use crate::compression::{self, Compression};
use crate::error::DecodeError;

/// How to decode a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeOptions {
    /// Most bytes a compressed batch may inflate to; past it decoding fails with
    /// [`DecodeError::DecompressedTooLarge`]. Defaults to
    /// [`DEFAULT_MAX_DECOMPRESSED_SIZE`](super::DEFAULT_MAX_DECOMPRESSED_SIZE).
    pub max_decompressed_size: usize,
    /// Whether to check the CRC (default `true`). Only skip it for bytes that were
    /// checked already.
    pub verify_crc: bool,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions { max_decompressed_size: DEFAULT_MAX_DECOMPRESSED_SIZE, verify_crc: true }
    }
}

/// A decoded record batch: its header and its records, indexed over one shared buffer
/// (a slice of the input when uncompressed, the decompressed records otherwise).
///
/// Read records with [`iter`](Self::iter) or [`get`](Self::get); take owned copies with
/// [`to_records`](Self::to_records).
#[derive(Clone, PartialEq, Eq)]
pub struct RecordBatch {
    header: BatchHeader,
    compression: Compression,
    data: Bytes,
    entries: Vec<Entry>,
    headers: Vec<HeaderEntry>,
}

impl RecordBatch {
    /// Decodes the batch at the front of `input` with default options and advances
    /// `input` past it. On error `input` is left as it was.
    pub fn decode(input: &mut Bytes) -> Result<RecordBatch, DecodeError> {
        Self::decode_with(input, &DecodeOptions::default())
    }

    /// Like [`decode`](Self::decode), with options.
    pub fn decode_with(input: &mut Bytes, options: &DecodeOptions) -> Result<RecordBatch, DecodeError> {
        let mut rest = input.clone();
        let batch = RawBatch::split_from(&mut rest)?.decode_with(options)?;
        *input = rest;
        Ok(batch)
    }

    pub(crate) fn from_raw(raw: &RawBatch, options: &DecodeOptions) -> Result<RecordBatch, DecodeError> {
        if options.verify_crc {
            raw.verify_crc()?;
        }
        let header = *raw.header();
        let compression = header.compression()?;
        let data = match compression {
            Compression::None => raw.bytes().slice(BATCH_HEADER_SIZE..),
            codec => compression::decompress(codec, raw.records_section(), options.max_decompressed_size)?,
        };
        if u32::try_from(data.len()).is_err() {
            return Err(DecodeError::Invalid { what: "record batch", reason: "records section of 4 GiB or more" });
        }
        let (entries, headers) = index_records(&data, header.records_count)?;
        Ok(RecordBatch { header, compression, data, entries, headers })
    }

    /// The batch header as it was on the wire.
    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    /// Offset of the first record.
    pub fn base_offset(&self) -> i64 {
        self.header.base_offset
    }

    /// Offset of the last record, from the header (compaction may have removed it).
    pub fn last_offset(&self) -> i64 {
        self.header.last_offset()
    }

    /// Where the next fetch starts: `last_offset() + 1`.
    pub fn next_offset(&self) -> i64 {
        self.header.next_offset()
    }

    /// The batch attributes.
    pub fn attributes(&self) -> BatchAttributes {
        self.header.attributes
    }

    /// The codec the batch was compressed with.
    pub fn compression(&self) -> Compression {
        self.compression
    }

    /// The timestamp type.
    pub fn timestamp_type(&self) -> TimestampType {
        self.header.timestamp_type()
    }

    /// Whether the batch is part of a transaction.
    pub fn is_transactional(&self) -> bool {
        self.header.is_transactional()
    }

    /// Whether the batch holds control records.
    pub fn is_control(&self) -> bool {
        self.header.is_control()
    }

    /// The base timestamp.
    pub fn base_timestamp(&self) -> i64 {
        self.header.base_timestamp
    }

    /// The largest timestamp, or the append time for log-append-time batches.
    pub fn max_timestamp(&self) -> i64 {
        self.header.max_timestamp
    }

    /// The producer id, or -1.
    pub fn producer_id(&self) -> i64 {
        self.header.producer_id
    }

    /// The producer epoch, or -1.
    pub fn producer_epoch(&self) -> i16 {
        self.header.producer_epoch
    }

    /// Sequence number of the first record, or -1.
    pub fn base_sequence(&self) -> i32 {
        self.header.base_sequence
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the batch has no records (compaction can leave such batches behind).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The `index`-th record.
    pub fn get(&self, index: usize) -> Option<RecordView<'_>> {
        self.entries.get(index).map(|entry| RecordView { batch: self, entry })
    }

    /// The records, in order.
    pub fn iter(&self) -> RecordViews<'_> {
        RecordViews { batch: self, entries: self.entries.iter() }
    }

    /// Owned copies of the records. Keys, values and header values share the batch's
    /// buffer; header keys are copied into `String`s.
    pub fn to_records(&self) -> Vec<Record> {
        self.iter().map(|r| r.to_record()).collect()
    }

    /// The records section, decompressed: what every view borrows from.
    pub fn data(&self) -> &Bytes {
        &self.data
    }

    /// The control record of a control batch, typed: its key, and for transaction
    /// markers its value when readable. `None` for a batch that is not a control batch
    /// or is empty.
    pub fn control_record(&self) -> Option<Result<control::ControlRecord, DecodeError>> {
        if !self.is_control() {
            return None;
        }
        self.get(0).map(|r| control::ControlRecord::parse(r.key(), r.value()))
    }

    /// The type of a control batch's control record, read from its key alone (the
    /// value is not looked at). `None` for a batch that is not a control batch or is
    /// empty; an error when the key is null or unreadable.
    pub fn control_record_type(&self) -> Option<Result<control::ControlRecordType, DecodeError>> {
        if !self.is_control() {
            return None;
        }
        self.get(0).map(|r| control::ControlRecordKey::parse_record_key(r.key()).map(|k| k.record_type))
    }

    #[inline]
    fn slice(&self, span: Span) -> Option<&[u8]> {
        span.range().and_then(|r| self.data.get(r))
    }

    #[inline]
    fn bytes(&self, span: Span) -> Option<Bytes> {
        span.range().map(|r| self.data.slice(r))
    }
}

impl fmt::Debug for RecordBatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordBatch")
            .field("header", &self.header)
            .field("records", &self.iter().collect::<Vec<_>>())
            .finish()
    }
}

impl<'a> IntoIterator for &'a RecordBatch {
    type Item = RecordView<'a>;
    type IntoIter = RecordViews<'a>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

/// One record of a [`RecordBatch`], borrowed.
#[derive(Clone, Copy)]
pub struct RecordView<'a> {
    batch: &'a RecordBatch,
    entry: &'a Entry,
}

impl<'a> RecordView<'a> {
    /// The record's offset: base offset plus offset delta.
    #[inline]
    pub fn offset(&self) -> i64 {
        self.batch.header.base_offset.wrapping_add(self.entry.offset_delta.into())
    }

    /// The offset delta as stored.
    #[inline]
    pub fn offset_delta(&self) -> i32 {
        self.entry.offset_delta
    }

    /// The record's effective timestamp: the batch's `max_timestamp` in
    /// log-append-time batches, base timestamp plus delta otherwise.
    #[inline]
    pub fn timestamp(&self) -> i64 {
        match self.batch.timestamp_type() {
            TimestampType::LogAppendTime => self.batch.header.max_timestamp,
            TimestampType::CreateTime => self.record_timestamp(),
        }
    }

    /// The timestamp the record itself carries: base timestamp plus delta, whatever the
    /// timestamp type.
    #[inline]
    pub fn record_timestamp(&self) -> i64 {
        self.batch.header.base_timestamp.wrapping_add(self.entry.timestamp_delta)
    }

    /// The timestamp delta as stored.
    #[inline]
    pub fn timestamp_delta(&self) -> i64 {
        self.entry.timestamp_delta
    }

    /// The record attributes byte (unused by Kafka; normally 0).
    #[inline]
    pub fn attributes(&self) -> i8 {
        self.entry.attributes
    }

    /// The key, borrowed; `None` if null.
    #[inline]
    pub fn key(&self) -> Option<&'a [u8]> {
        self.batch.slice(self.entry.key)
    }

    /// The value, borrowed; `None` if null.
    #[inline]
    pub fn value(&self) -> Option<&'a [u8]> {
        self.batch.slice(self.entry.value)
    }

    /// The key as [`Bytes`] sharing the batch's buffer.
    #[inline]
    pub fn key_bytes(&self) -> Option<Bytes> {
        self.batch.bytes(self.entry.key)
    }

    /// The value as [`Bytes`] sharing the batch's buffer.
    #[inline]
    pub fn value_bytes(&self) -> Option<Bytes> {
        self.batch.bytes(self.entry.value)
    }

    /// Number of headers.
    #[inline]
    pub fn header_count(&self) -> usize {
        self.entry.headers_len as usize
    }

    /// The headers, in order.
    #[inline]
    pub fn headers(&self) -> HeaderViews<'a> {
        let start = self.entry.headers_start as usize;
        let end = start + self.entry.headers_len as usize;
        HeaderViews { batch: self.batch, entries: self.batch.headers.get(start..end).unwrap_or_default().iter() }
    }

    /// An owned copy of the record (see [`Record`] for what `timestamp` holds).
    pub fn to_record(&self) -> Record {
        Record {
            offset: self.offset(),
            timestamp: self.record_timestamp(),
            key: self.key_bytes(),
            value: self.value_bytes(),
            headers: self.headers().map(|h| h.to_header()).collect(),
        }
    }
}

impl fmt::Debug for RecordView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordView")
            .field("offset", &self.offset())
            .field("timestamp", &self.timestamp())
            .field("key", &self.key().map(Bytes::copy_from_slice))
            .field("value", &self.value().map(Bytes::copy_from_slice))
            .field("headers", &self.headers().collect::<Vec<_>>())
            .finish()
    }
}

/// Iterator over the records of a [`RecordBatch`].
#[derive(Clone)]
pub struct RecordViews<'a> {
    batch: &'a RecordBatch,
    entries: std::slice::Iter<'a, Entry>,
}

impl<'a> Iterator for RecordViews<'a> {
    type Item = RecordView<'a>;

    #[inline]
    fn next(&mut self) -> Option<RecordView<'a>> {
        self.entries.next().map(|entry| RecordView { batch: self.batch, entry })
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.entries.size_hint()
    }
}

impl DoubleEndedIterator for RecordViews<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.entries.next_back().map(|entry| RecordView { batch: self.batch, entry })
    }
}

impl ExactSizeIterator for RecordViews<'_> {}
impl std::iter::FusedIterator for RecordViews<'_> {}

/// One header of a record, borrowed.
#[derive(Clone, Copy)]
pub struct HeaderView<'a> {
    batch: &'a RecordBatch,
    entry: &'a HeaderEntry,
}

impl<'a> HeaderView<'a> {
    /// The key (checked to be UTF-8 when the batch was decoded).
    #[inline]
    pub fn key(&self) -> &'a str {
        std::str::from_utf8(self.key_raw()).unwrap_or_default()
    }

    #[inline]
    fn key_raw(&self) -> &'a [u8] {
        self.batch.slice(self.entry.key).unwrap_or_default()
    }

    /// The value, borrowed; `None` if null.
    #[inline]
    pub fn value(&self) -> Option<&'a [u8]> {
        self.batch.slice(self.entry.value)
    }

    /// The value as [`Bytes`] sharing the batch's buffer.
    #[inline]
    pub fn value_bytes(&self) -> Option<Bytes> {
        self.batch.bytes(self.entry.value)
    }

    /// An owned copy.
    pub fn to_header(&self) -> Header {
        Header { key: self.key().to_owned(), value: self.value_bytes() }
    }
}

impl fmt::Debug for HeaderView<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeaderView")
            .field("key", &self.key())
            .field("value", &self.value().map(Bytes::copy_from_slice))
            .finish()
    }
}

/// Iterator over the headers of a record.
#[derive(Clone)]
pub struct HeaderViews<'a> {
    batch: &'a RecordBatch,
    entries: std::slice::Iter<'a, HeaderEntry>,
}

impl<'a> Iterator for HeaderViews<'a> {
    type Item = HeaderView<'a>;

    #[inline]
    fn next(&mut self) -> Option<HeaderView<'a>> {
        self.entries.next().map(|entry| HeaderView { batch: self.batch, entry })
    }

    #[inline]
    fn size_hint(&self) -> (usize, Option<usize>) {
        self.entries.size_hint()
    }
}

impl DoubleEndedIterator for HeaderViews<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        self.entries.next_back().map(|entry| HeaderView { batch: self.batch, entry })
    }
}

impl ExactSizeIterator for HeaderViews<'_> {}
impl std::iter::FusedIterator for HeaderViews<'_> {}
