//! Encoding record batches: the streaming [`RecordBatchWriter`], whole-batch helpers,
//! and re-stamping producer state on encoded bytes.

use bytes::{Bytes, BytesMut};

use super::decode::HeaderView;
use super::header::at;
use super::varint::{Cursor, varint_size, varlong_size, zigzag32, zigzag64};
use super::{BATCH_HEADER_SIZE, BatchAttributes, BatchHeader, Header, LOG_OVERHEAD, MAGIC, Record, RecordBatch};
use super::{NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID, NO_SEQUENCE, NO_TIMESTAMP, TimestampType};
use crate::compression::{self, Compression};
use crate::error::{DecodeError, EncodeError};

/// Batch-level settings for [`RecordBatchWriter`] and [`encode_records`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchOptions {
    /// Offset of the first record (default 0: producers send relative offsets and the
    /// broker assigns real ones).
    pub base_offset: i64,
    /// Partition leader epoch (default -1; the broker sets it).
    pub partition_leader_epoch: i32,
    /// Codec for the records section (default none).
    pub compression: Compression,
    /// Codec level; `None` is the codec's default. See
    /// [`compress_with_level`](crate::compression::compress_with_level).
    pub compression_level: Option<i32>,
    /// Timestamp type (default create time).
    pub timestamp_type: TimestampType,
    /// Whether the batch is part of a transaction (default `false`).
    pub transactional: bool,
    /// Whether the batch holds control records (default `false`).
    pub control: bool,
    /// Idempotent producer id (default -1).
    pub producer_id: i64,
    /// Idempotent producer epoch (default -1).
    pub producer_epoch: i16,
    /// Sequence number of the first record (default -1).
    pub base_sequence: i32,
    /// Base of the records' timestamp deltas; `None` (the default) takes the first
    /// record's timestamp, as the Java client does.
    pub base_timestamp: Option<i64>,
}

impl Default for BatchOptions {
    fn default() -> Self {
        BatchOptions {
            base_offset: 0,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            compression: Compression::None,
            compression_level: None,
            timestamp_type: TimestampType::CreateTime,
            transactional: false,
            control: false,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            base_sequence: NO_SEQUENCE,
            base_timestamp: None,
        }
    }
}

impl BatchOptions {
    /// The attributes these options give.
    pub fn attributes(&self) -> BatchAttributes {
        BatchAttributes::new()
            .with_compression(self.compression)
            .with_timestamp_type(self.timestamp_type)
            .with_transactional(self.transactional)
            .with_control(self.control)
    }
}

/// Anything that can be written as a record header: [`Header`], [`HeaderView`],
/// `(key, Option<value>)` and `(&str, &[u8])` pairs.
pub trait HeaderRef {
    /// The header's key.
    fn header_key(&self) -> &str;
    /// The header's value; `None` is null.
    fn header_value(&self) -> Option<&[u8]>;
}

impl HeaderRef for Header {
    fn header_key(&self) -> &str {
        &self.key
    }
    fn header_value(&self) -> Option<&[u8]> {
        self.value.as_deref()
    }
}

impl HeaderRef for HeaderView<'_> {
    fn header_key(&self) -> &str {
        self.key()
    }
    fn header_value(&self) -> Option<&[u8]> {
        self.value()
    }
}

impl<K: AsRef<str>, V: AsRef<[u8]>> HeaderRef for (K, Option<V>) {
    fn header_key(&self) -> &str {
        self.0.as_ref()
    }
    fn header_value(&self) -> Option<&[u8]> {
        self.1.as_ref().map(AsRef::as_ref)
    }
}

impl HeaderRef for (&str, &[u8]) {
    fn header_key(&self) -> &str {
        self.0
    }
    fn header_value(&self) -> Option<&[u8]> {
        Some(self.1)
    }
}

impl<T: HeaderRef + ?Sized> HeaderRef for &T {
    fn header_key(&self) -> &str {
        (**self).header_key()
    }
    fn header_value(&self) -> Option<&[u8]> {
        (**self).header_value()
    }
}

/// `len` as a wire length, or `TooLong`.
#[inline(always)]
fn wire_len(len: usize, what: &'static str) -> Result<i32, EncodeError> {
    i32::try_from(len).map_err(|_| EncodeError::TooLong { what, length: len, max: i32::MAX as usize })
}

/// A nullable byte string's wire length (-1 for null) and payload size.
#[inline(always)]
fn nullable_len(v: Option<&[u8]>, what: &'static str) -> Result<(i32, usize), EncodeError> {
    match v {
        None => Ok((-1, 0)),
        Some(b) => Ok((wire_len(b.len(), what)?, b.len())),
    }
}

/// Bytes a record takes in a batch, including its length prefix.
///
/// Lengths too large for the wire format make the result meaningless (appending such a
/// record fails anyway); the sum saturates instead of overflowing.
pub fn encoded_record_size<H: HeaderRef>(
    offset_delta: i32,
    timestamp_delta: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[H],
) -> usize {
    let body = body_size(offset_delta, timestamp_delta, key, value, headers).unwrap_or(usize::MAX);
    varint_size(i32::try_from(body).unwrap_or(i32::MAX)).saturating_add(body)
}

/// Bytes of a record after its length prefix.
#[inline(always)]
fn body_size<H: HeaderRef>(
    offset_delta: i32,
    timestamp_delta: i64,
    key: Option<&[u8]>,
    value: Option<&[u8]>,
    headers: &[H],
) -> Result<usize, EncodeError> {
    let (key_len, key_size) = nullable_len(key, "record key")?;
    let (value_len, value_size) = nullable_len(value, "record value")?;
    let count = wire_len(headers.len(), "record headers")?;
    let mut size = 1
        + varlong_size(timestamp_delta)
        + varint_size(offset_delta)
        + varint_size(key_len)
        + key_size
        + varint_size(value_len)
        + value_size
        + varint_size(count);
    for h in headers {
        let k = h.header_key().as_bytes();
        let (v_len, v_size) = nullable_len(h.header_value(), "record header value")?;
        size += varint_size(wire_len(k.len(), "record header key")?) + k.len() + varint_size(v_len) + v_size;
    }
    Ok(size)
}

/// Header fields taken as given instead of computed, for re-encoding a decoded batch
/// byte for byte.
#[derive(Clone, Copy)]
struct HeaderOverride {
    attributes: BatchAttributes,
    last_offset_delta: i32,
    max_timestamp: i64,
}

/// Builds one record batch, appending records straight into its buffer.
///
/// This is the producer's accumulator: it tracks the record count, the encoded size
/// (to respect `batch.size`), timestamps and offset deltas, and [`finish`](Self::finish)
/// compresses the records, writes the header and the CRC, and hands back the batch.
///
/// ```
/// use klife_protocol::records::{BatchOptions, RecordBatch, RecordBatchWriter};
///
/// let mut writer = RecordBatchWriter::new(BatchOptions::default());
/// writer.append(1_700_000_000_000, Some(b"key"), Some(b"value"))?;
/// writer.append_with_headers(1_700_000_000_001, None, Some(b"v2"), &[("trace", &b"abc"[..])])?;
/// let mut bytes = writer.finish()?;
/// let batch = RecordBatch::decode(&mut bytes)?;
/// assert_eq!(batch.len(), 2);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct RecordBatchWriter {
    /// Header placeholder, then the uncompressed records up to `pos`, then zeroed (or
    /// stale) room to write into.
    buf: BytesMut,
    /// End of the batch so far.
    pos: usize,
    options: BatchOptions,
    count: i32,
    base_timestamp: Option<i64>,
    max_timestamp: i64,
    /// Smallest offset delta the next record may have.
    next_offset_delta: i64,
}

impl RecordBatchWriter {
    /// A writer with room for about 1 KiB of records before it grows.
    pub fn new(options: BatchOptions) -> Self {
        Self::with_capacity(options, 1024)
    }

    /// A writer that preallocates `capacity` bytes (the batch size limit is a good
    /// choice).
    pub fn with_capacity(options: BatchOptions, capacity: usize) -> Self {
        Self::with_buffer(options, BytesMut::zeroed(capacity.max(BATCH_HEADER_SIZE + Cursor::SLACK)))
    }

    /// A writer that builds the batch in `buffer`, reusing its memory (its contents are
    /// discarded).
    pub fn with_buffer(options: BatchOptions, mut buffer: BytesMut) -> Self {
        // The writer writes into initialized room and tracks the end itself.
        let room = buffer.capacity().max(BATCH_HEADER_SIZE + Cursor::SLACK);
        buffer.resize(room, 0);
        buffer[..BATCH_HEADER_SIZE].fill(0);
        RecordBatchWriter {
            buf: buffer,
            pos: BATCH_HEADER_SIZE,
            base_timestamp: options.base_timestamp,
            options,
            count: 0,
            max_timestamp: i64::MIN,
            next_offset_delta: 0,
        }
    }

    /// Makes room for `n` more bytes past the end, plus the cursor's slack.
    #[cold]
    #[inline(never)]
    fn grow(&mut self, n: usize) {
        let room = self.room_after(n);
        self.buf.resize(room, 0);
    }

    /// Bytes of memory the writer holds: the batch written so far and the room
    /// allocated past it.
    pub fn room(&self) -> usize {
        self.buf.len()
    }

    /// What [`room`](Self::room) becomes once a record of `record_size` encoded bytes
    /// (as [`next_record_size`](Self::next_record_size) gives) is appended: the same
    /// when it fits, more when the writer must grow.
    pub fn room_after(&self, record_size: usize) -> usize {
        let need = self.pos.saturating_add(record_size).saturating_add(Cursor::SLACK);
        if need <= self.buf.len() { self.buf.len() } else { need.max(self.buf.len().saturating_mul(2)) }
    }

    /// The options the writer was created with.
    pub fn options(&self) -> &BatchOptions {
        &self.options
    }

    /// Sets the producer state the batch is finished with: an idempotent producer
    /// learns its base sequence only when the batch is sent, and stamping it here
    /// costs nothing, where re-stamping finished bytes recomputes the CRC.
    pub fn set_producer_state(
        &mut self,
        producer_id: i64,
        producer_epoch: i16,
        base_sequence: i32,
        transactional: bool,
    ) {
        self.options.producer_id = producer_id;
        self.options.producer_epoch = producer_epoch;
        self.options.base_sequence = base_sequence;
        self.options.transactional = transactional;
    }

    /// Number of records appended.
    pub fn record_count(&self) -> usize {
        self.count as usize
    }

    /// Whether no record was appended yet.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Size of the batch so far, header included, before compression.
    pub fn size_in_bytes(&self) -> usize {
        self.pos
    }

    /// Base timestamp: from the options, or the first record's.
    pub fn base_timestamp(&self) -> Option<i64> {
        self.base_timestamp
    }

    /// Largest timestamp appended so far.
    pub fn max_timestamp(&self) -> Option<i64> {
        (self.count > 0).then_some(self.max_timestamp)
    }

    /// Offset delta the next [`append`](Self::append) assigns.
    pub fn next_offset_delta(&self) -> i64 {
        self.next_offset_delta
    }

    /// Bytes the next [`append`](Self::append) of this record would add.
    pub fn next_record_size<H: HeaderRef>(
        &self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[H],
    ) -> usize {
        let delta = timestamp.wrapping_sub(self.base_timestamp.unwrap_or(timestamp));
        let offset_delta = i32::try_from(self.next_offset_delta).unwrap_or(i32::MAX);
        encoded_record_size(offset_delta, delta, key, value, headers)
    }

    /// Whether the record fits within `limit` bytes of (uncompressed) batch. An empty
    /// writer always has room, so that a record larger than the limit still gets a batch
    /// of its own, as in the Java client.
    pub fn has_room_for<H: HeaderRef>(
        &self,
        limit: usize,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[H],
    ) -> bool {
        self.count == 0
            || self.size_in_bytes().saturating_add(self.next_record_size(timestamp, key, value, headers)) <= limit
    }

    /// Appends a record without headers at the next offset; returns its offset delta.
    #[inline]
    pub fn append(&mut self, timestamp: i64, key: Option<&[u8]>, value: Option<&[u8]>) -> Result<i32, EncodeError> {
        self.append_with_headers::<Header>(timestamp, key, value, &[])
    }

    /// Appends a record at the next offset; returns its offset delta.
    #[inline]
    pub fn append_with_headers<H: HeaderRef>(
        &mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[H],
    ) -> Result<i32, EncodeError> {
        let delta = self.checked_delta(self.next_offset_delta)?;
        self.write_record(0, delta, timestamp, key, value, headers)?;
        Ok(delta)
    }

    /// Appends an owned record at its own offset, which must be above every offset
    /// appended so far (gaps are allowed, as after compaction).
    pub fn append_record(&mut self, record: &Record) -> Result<(), EncodeError> {
        let delta = record.offset.wrapping_sub(self.options.base_offset);
        if delta < self.next_offset_delta {
            return Err(EncodeError::Invalid {
                what: "record offset",
                reason: "offsets in a batch must be increasing and not below the base offset",
            });
        }
        let delta = self.checked_delta(delta)?;
        self.write_record(0, delta, record.timestamp, record.key.as_deref(), record.value.as_deref(), &record.headers)
    }

    #[inline(always)]
    fn checked_delta(&self, delta: i64) -> Result<i32, EncodeError> {
        i32::try_from(delta).map_err(|_| EncodeError::TooLong {
            what: "record batch offset range",
            length: delta.max(0) as usize,
            max: i32::MAX as usize,
        })
    }

    /// Writes one record. `offset_delta` is not checked against earlier records.
    #[inline(always)]
    fn write_record<H: HeaderRef>(
        &mut self,
        attributes: i8,
        offset_delta: i32,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[H],
    ) -> Result<(), EncodeError> {
        if self.count == i32::MAX {
            return Err(EncodeError::TooLong {
                what: "record batch",
                length: i32::MAX as usize,
                max: i32::MAX as usize,
            });
        }
        let base = self.base_timestamp.unwrap_or(timestamp);
        let timestamp_delta = timestamp.wrapping_sub(base);
        let body = body_size(offset_delta, timestamp_delta, key, value, headers)?;
        let body_len = wire_len(body, "record")?;
        let key_len = key.map_or(-1, |k| k.len() as i32);
        let value_len = value.map_or(-1, |v| v.len() as i32);

        let n = varint_size(body_len) + body;
        if self.buf.len() - self.pos < n + Cursor::SLACK {
            self.grow(n);
        }
        let mut c = Cursor::new(&mut self.buf, self.pos);
        c.varint(zigzag32(body_len));
        c.byte(attributes as u8);
        c.varint(zigzag64(timestamp_delta));
        c.varint(zigzag32(offset_delta));
        c.varint(zigzag32(key_len));
        if let Some(k) = key {
            c.bytes(k);
        }
        c.varint(zigzag32(value_len));
        if let Some(v) = value {
            c.bytes(v);
        }
        c.varint(zigzag32(headers.len() as i32));
        for h in headers {
            let k = h.header_key().as_bytes();
            c.varint(zigzag32(k.len() as i32));
            c.bytes(k);
            let v = h.header_value();
            c.varint(zigzag32(v.map_or(-1, |v| v.len() as i32)));
            if let Some(v) = v {
                c.bytes(v);
            }
        }
        let end = c.finish();
        debug_assert_eq!(end, self.pos + n);
        self.pos = end;

        self.count += 1;
        self.base_timestamp = Some(base);
        self.max_timestamp = self.max_timestamp.max(timestamp);
        self.next_offset_delta = i64::from(offset_delta) + 1;
        Ok(())
    }

    /// Compresses the records, writes the header and CRC, and returns the batch.
    ///
    /// A writer with no records gives [`EncodeError::Invalid`]: Kafka has no use for an
    /// empty batch from a producer.
    pub fn finish(self) -> Result<Bytes, EncodeError> {
        if self.count == 0 {
            return Err(EncodeError::Invalid { what: "record batch", reason: "a batch needs at least one record" });
        }
        self.finish_with(None)
    }

    fn finish_with(self, over: Option<HeaderOverride>) -> Result<Bytes, EncodeError> {
        let RecordBatchWriter { mut buf, pos, options, count, base_timestamp, max_timestamp, next_offset_delta } = self;
        buf.truncate(pos);
        let attributes = match over {
            Some(o) => o.attributes.with_compression(options.compression),
            None => options.attributes(),
        };
        let mut out = match options.compression {
            Compression::None => buf,
            codec => {
                let records = buf.get(BATCH_HEADER_SIZE..).unwrap_or_default();
                let mut out = BytesMut::with_capacity(BATCH_HEADER_SIZE + records.len() / 2 + 64);
                out.resize(BATCH_HEADER_SIZE, 0);
                compression::compress_with_level(codec, options.compression_level, records, &mut out)?;
                out
            }
        };
        let batch_length = wire_len(out.len() - LOG_OVERHEAD, "record batch")?;
        let header = BatchHeader {
            base_offset: options.base_offset,
            batch_length,
            partition_leader_epoch: options.partition_leader_epoch,
            magic: MAGIC,
            crc: 0,
            attributes,
            last_offset_delta: over.map_or((next_offset_delta - 1) as i32, |o| o.last_offset_delta),
            base_timestamp: base_timestamp.unwrap_or(NO_TIMESTAMP),
            max_timestamp: match over {
                Some(o) => o.max_timestamp,
                None if count == 0 => NO_TIMESTAMP,
                None => max_timestamp,
            },
            producer_id: options.producer_id,
            producer_epoch: options.producer_epoch,
            base_sequence: options.base_sequence,
            records_count: count,
        };
        let Some(head) = out.first_chunk_mut::<BATCH_HEADER_SIZE>() else {
            return Err(EncodeError::Invalid { what: "record batch", reason: "buffer shorter than the header" });
        };
        header.write_to(head);
        write_crc(&mut out);
        Ok(out.freeze())
    }
}

impl std::fmt::Debug for RecordBatchWriter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordBatchWriter")
            .field("options", &self.options)
            .field("record_count", &self.count)
            .field("size_in_bytes", &self.pos)
            .field("base_timestamp", &self.base_timestamp)
            .field("max_timestamp", &self.max_timestamp())
            .finish()
    }
}

/// Computes the CRC of a complete batch and stores it in the header.
fn write_crc(batch: &mut [u8]) {
    let crc = crc32c::crc32c(batch.get(at::ATTRIBUTES..).unwrap_or_default());
    if let Some(field) = batch.get_mut(at::CRC..at::CRC + 4) {
        field.copy_from_slice(&crc.to_be_bytes());
    }
}

/// Encodes `records` as one batch. Each record's offset must be above the previous one
/// and not below `options.base_offset`.
pub fn encode_records(options: &BatchOptions, records: &[Record]) -> Result<Bytes, EncodeError> {
    let estimate: usize = records
        .iter()
        .map(|r| 24 + r.key.as_ref().map_or(0, Bytes::len) + r.value.as_ref().map_or(0, Bytes::len))
        .sum();
    let mut writer = RecordBatchWriter::with_capacity(options.clone(), BATCH_HEADER_SIZE + estimate);
    for record in records {
        writer.append_record(record)?;
    }
    writer.finish()
}

impl RecordBatch {
    /// Encodes the batch again with its own codec (at the codec's default level).
    ///
    /// Decoding a batch and encoding it again gives back the same bytes when the batch is
    /// uncompressed, or when this crate compressed it at the default level. Other
    /// compressors (or levels) may produce different, equally valid, compressed bytes for
    /// the same records; everything else (header fields, record fields, order) is kept.
    pub fn encode(&self) -> Result<Bytes, EncodeError> {
        self.encode_with(self.compression(), None)
    }

    /// Encodes the batch with another codec (and level); every other header field,
    /// every record field and the record order are kept.
    pub fn encode_with(&self, compression: Compression, level: Option<i32>) -> Result<Bytes, EncodeError> {
        let h = self.header();
        let options = BatchOptions {
            base_offset: h.base_offset,
            partition_leader_epoch: h.partition_leader_epoch,
            compression,
            compression_level: level,
            producer_id: h.producer_id,
            producer_epoch: h.producer_epoch,
            base_sequence: h.base_sequence,
            base_timestamp: Some(h.base_timestamp),
            ..BatchOptions::default()
        };
        let capacity = BATCH_HEADER_SIZE + self.data().len();
        let mut writer = RecordBatchWriter::with_capacity(options, capacity);
        let mut headers: Vec<HeaderView<'_>> = Vec::new();
        for r in self {
            headers.clear();
            headers.extend(r.headers());
            writer.write_record(
                r.attributes(),
                r.offset_delta(),
                r.record_timestamp(),
                r.key(),
                r.value(),
                &headers,
            )?;
        }
        writer.finish_with(Some(HeaderOverride {
            attributes: h.attributes,
            last_offset_delta: h.last_offset_delta,
            max_timestamp: h.max_timestamp,
        }))
    }
}

/// Re-stamps an encoded batch with producer id, epoch, base sequence and the
/// transactional flag, and rewrites its CRC.
///
/// An idempotent producer assigns these when it sends a batch, and again when it has to
/// retry it with a new epoch or sequence, without re-encoding the records. `batch` must
/// be exactly one v2 batch. To re-stamp shared [`Bytes`], take them back with
/// [`Bytes::try_into_mut`] (or copy them into a `BytesMut`).
pub fn set_producer_state(
    batch: &mut [u8],
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    transactional: bool,
) -> Result<(), DecodeError> {
    let header = BatchHeader::parse(batch)?;
    if header.size() != batch.len() {
        return Err(DecodeError::Invalid { what: "record batch", reason: "buffer is not exactly one batch" });
    }
    let attributes = header.attributes.with_transactional(transactional);
    let mut put = |at: usize, bytes: &[u8]| {
        if let Some(field) = batch.get_mut(at..at + bytes.len()) {
            field.copy_from_slice(bytes);
        }
    };
    put(at::ATTRIBUTES, &attributes.0.to_be_bytes());
    put(at::PRODUCER_ID, &producer_id.to_be_bytes());
    put(at::PRODUCER_EPOCH, &producer_epoch.to_be_bytes());
    put(at::BASE_SEQUENCE, &base_sequence.to_be_bytes());
    write_crc(batch);
    Ok(())
}

/// [`set_producer_state`] on shared batch bytes: re-stamps them in place when `batch` is
/// the only handle to its buffer (as the bytes [`RecordBatchWriter::finish`] returns
/// are), or re-stamps a copy otherwise.
pub fn with_producer_state(
    batch: Bytes,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    transactional: bool,
) -> Result<Bytes, DecodeError> {
    let mut owned = batch.try_into_mut().unwrap_or_else(|shared| BytesMut::from(&shared[..]));
    set_producer_state(&mut owned, producer_id, producer_epoch, base_sequence, transactional)?;
    Ok(owned.freeze())
}
