//! Record batch compression codecs: gzip, snappy (raw and xerial-framed), lz4 (frame
//! format) and zstd, each behind its own cargo feature.
//!
//! [`compress`] and [`decompress`] work on whole buffers, which is how record batches
//! use them: the records section of a batch is compressed as one unit. The formats
//! written are the ones the Java client writes, so brokers and other clients read them:
//!
//! | codec  | written as | read |
//! |--------|------------|------|
//! | gzip   | one gzip member (RFC 1952) | one or more concatenated members |
//! | snappy | xerial framing: `\x82SNAPPY\0`, version 1, compatible version 1, then `int32`-length-prefixed raw snappy blocks of at most 32 KiB | xerial-framed or a raw snappy block |
//! | lz4    | lz4 frame, 64 KiB independent blocks, no checksums besides the header's | any lz4 frame (linked or independent blocks, any block size, with or without checksums) |
//! | zstd   | one zstd frame | one or more zstd frames |
//!
//! Decompression is bounded: it stops with [`DecodeError::DecompressedTooLarge`] as soon
//! as the output would pass the caller's limit, so a small malicious payload can not make
//! it allocate without bound. Corrupt input gives [`DecodeError::Decompression`], never a
//! panic.

use bytes::{Bytes, BytesMut};

use crate::error::{DecodeError, EncodeError};

/// The compression codec of a record batch (bits 0-2 of the batch attributes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Compression {
    /// No compression (id 0).
    #[default]
    None,
    /// gzip (id 1).
    Gzip,
    /// snappy (id 2).
    Snappy,
    /// lz4, frame format (id 3).
    Lz4,
    /// zstd (id 4).
    Zstd,
}

impl Compression {
    /// Every codec, in id order.
    pub const ALL: [Compression; 5] =
        [Compression::None, Compression::Gzip, Compression::Snappy, Compression::Lz4, Compression::Zstd];

    /// The codec's id in the batch attributes.
    pub const fn id(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Snappy => 2,
            Compression::Lz4 => 3,
            Compression::Zstd => 4,
        }
    }

    /// The codec with this id, if there is one.
    pub const fn from_id(id: u8) -> Option<Compression> {
        match id {
            0 => Some(Compression::None),
            1 => Some(Compression::Gzip),
            2 => Some(Compression::Snappy),
            3 => Some(Compression::Lz4),
            4 => Some(Compression::Zstd),
            _ => None,
        }
    }

    /// The codec's name, as Kafka's `compression.type` spells it.
    pub const fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }

    /// The cargo feature that enables the codec.
    pub const fn feature_name(self) -> &'static str {
        self.name()
    }

    /// Whether this build can compress and decompress with the codec.
    pub const fn is_enabled(self) -> bool {
        match self {
            Compression::None => true,
            Compression::Gzip => cfg!(feature = "gzip"),
            Compression::Snappy => cfg!(feature = "snappy"),
            Compression::Lz4 => cfg!(feature = "lz4"),
            Compression::Zstd => cfg!(feature = "zstd"),
        }
    }
}

impl std::fmt::Display for Compression {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for Compression {
    type Err = UnknownCompressionName;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Compression::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(s))
            .ok_or_else(|| UnknownCompressionName(s.to_owned()))
    }
}

/// A codec name that is not one of `none`, `gzip`, `snappy`, `lz4`, `zstd`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown compression codec {0:?}: expected one of none, gzip, snappy, lz4, zstd")]
pub struct UnknownCompressionName(pub String);

/// The xerial snappy stream header: magic, version 1, minimum compatible version 1.
#[cfg(feature = "snappy")]
const XERIAL_HEADER: [u8; 16] = *b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";

/// Uncompressed bytes per xerial snappy block, as the Java client writes them.
#[cfg(feature = "snappy")]
const XERIAL_BLOCK_SIZE: usize = 32 * 1024;

/// Compresses `input` with `codec` at the codec's default level and appends the result
/// to `out`.
///
/// [`Compression::None`] appends `input` unchanged. A codec this build was compiled
/// without gives [`EncodeError::CompressionDisabled`].
pub fn compress(codec: Compression, input: &[u8], out: &mut BytesMut) -> Result<(), EncodeError> {
    compress_with_level(codec, None, input, out)
}

/// Like [`compress`], with a compression level; `None` is the codec's default.
///
/// Levels mean what Kafka's `compression.<codec>.level` settings mean: gzip 1-9
/// (default 6), zstd -131072..=22 (default 3). lz4 (this implementation has a single
/// fast level) and snappy (which has no levels) ignore it. An out-of-range gzip level is
/// clamped to 0..=9.
pub fn compress_with_level(
    codec: Compression,
    level: Option<i32>,
    input: &[u8],
    out: &mut BytesMut,
) -> Result<(), EncodeError> {
    let _ = level;
    match codec {
        Compression::None => {
            out.extend_from_slice(input);
            Ok(())
        }
        #[cfg(feature = "gzip")]
        Compression::Gzip => gzip::compress(input, level, out),
        #[cfg(feature = "snappy")]
        Compression::Snappy => snappy::compress(input, out),
        #[cfg(feature = "lz4")]
        Compression::Lz4 => lz4::compress(input, out),
        #[cfg(feature = "zstd")]
        Compression::Zstd => zstd::compress(input, level, out),
        #[allow(unreachable_patterns)]
        disabled => Err(EncodeError::CompressionDisabled(disabled)),
    }
}

/// Decompresses `input`, which `codec` compressed, refusing to produce more than `limit`
/// bytes.
///
/// Output past `limit` gives [`DecodeError::DecompressedTooLarge`]; memory use stays
/// proportional to `limit`, whatever the input claims. Corrupt input gives
/// [`DecodeError::Decompression`]. [`Compression::None`] returns a copy of `input`
/// (subject to the same limit). A codec this build was compiled without gives
/// [`DecodeError::CompressionDisabled`].
pub fn decompress(codec: Compression, input: &[u8], limit: usize) -> Result<Bytes, DecodeError> {
    match codec {
        Compression::None => {
            if input.len() > limit {
                return Err(DecodeError::DecompressedTooLarge { limit });
            }
            Ok(Bytes::copy_from_slice(input))
        }
        #[cfg(feature = "gzip")]
        Compression::Gzip => gzip::decompress(input, limit).map(Bytes::from),
        #[cfg(feature = "snappy")]
        Compression::Snappy => snappy::decompress(input, limit).map(Bytes::from),
        #[cfg(feature = "lz4")]
        Compression::Lz4 => lz4::decompress(input, limit).map(Bytes::from),
        #[cfg(feature = "zstd")]
        Compression::Zstd => zstd::decompress(input, limit).map(Bytes::from),
        #[allow(unreachable_patterns)]
        disabled => Err(DecodeError::CompressionDisabled(disabled)),
    }
}

/// Reads `reader` to its end into a `Vec`, failing once more than `limit` bytes come out.
#[cfg(any(feature = "gzip", feature = "lz4", feature = "zstd"))]
fn read_bounded(
    codec: Compression,
    reader: impl std::io::Read,
    input_len: usize,
    limit: usize,
) -> Result<Vec<u8>, DecodeError> {
    use std::io::Read;

    // A guess at the output size that can not be inflated by the input: at most the limit.
    let mut out = Vec::with_capacity(input_len.saturating_mul(4).clamp(64, 1 << 20).min(limit.saturating_add(1)));
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    reader.take(cap).read_to_end(&mut out).map_err(|e| DecodeError::Decompression { codec, reason: e.to_string() })?;
    if out.len() > limit {
        return Err(DecodeError::DecompressedTooLarge { limit });
    }
    Ok(out)
}

/// Appends `len` zero bytes to `out` and returns where they start: room for a codec that
/// writes into a slice.
#[cfg(any(feature = "snappy", feature = "zstd"))]
fn grow(out: &mut BytesMut, len: usize) -> usize {
    let start = out.len();
    out.resize(start + len, 0);
    start
}

#[cfg(feature = "gzip")]
mod gzip {
    use std::io::Write;

    use bytes::{BufMut, BytesMut};

    use super::{Compression, read_bounded};
    use crate::error::{DecodeError, EncodeError};

    pub(super) fn compress(input: &[u8], level: Option<i32>, out: &mut BytesMut) -> Result<(), EncodeError> {
        let level = match level {
            None => flate2::Compression::default(),
            Some(l) => flate2::Compression::new(l.clamp(0, 9) as u32),
        };
        let fail = |e: std::io::Error| EncodeError::Compression { codec: Compression::Gzip, reason: e.to_string() };
        out.reserve(input.len() / 2 + 64);
        let mut encoder = flate2::write::GzEncoder::new(out.writer(), level);
        encoder.write_all(input).map_err(fail)?;
        encoder.finish().map_err(fail)?;
        Ok(())
    }

    pub(super) fn decompress(input: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
        read_bounded(Compression::Gzip, flate2::read::MultiGzDecoder::new(input), input.len(), limit)
    }
}

#[cfg(feature = "snappy")]
mod snappy {
    use bytes::{BufMut, BytesMut};

    use super::{Compression, XERIAL_BLOCK_SIZE, XERIAL_HEADER, grow};
    use crate::error::{DecodeError, EncodeError};

    fn fail(e: snap::Error) -> DecodeError {
        DecodeError::Decompression { codec: Compression::Snappy, reason: e.to_string() }
    }

    /// Writes the xerial framing the Java client writes: header, then blocks of at most
    /// [`XERIAL_BLOCK_SIZE`] input bytes, each as an `int32` length and a raw snappy block.
    pub(super) fn compress(input: &[u8], out: &mut BytesMut) -> Result<(), EncodeError> {
        let mut encoder = snap::raw::Encoder::new();
        out.reserve(XERIAL_HEADER.len() + input.len() + input.len() / 6 + 64);
        out.put_slice(&XERIAL_HEADER);
        for chunk in input.chunks(XERIAL_BLOCK_SIZE) {
            let len_at = grow(out, 4);
            let start = grow(out, snap::raw::max_compress_len(chunk.len()));
            let written = encoder
                .compress(chunk, &mut out[start..])
                .map_err(|e| EncodeError::Compression { codec: Compression::Snappy, reason: e.to_string() })?;
            out.truncate(start + written);
            // A block of at most 32 KiB compresses to well under 2 GiB.
            let len = i32::try_from(written).unwrap_or(i32::MAX);
            out[len_at..start].copy_from_slice(&len.to_be_bytes());
        }
        Ok(())
    }

    /// Reads xerial-framed snappy or, when the header is absent, one raw snappy block.
    pub(super) fn decompress(input: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
        let mut decoder = snap::raw::Decoder::new();
        let mut out = Vec::new();
        match input.strip_prefix(&XERIAL_HEADER[..8]) {
            Some(rest) if rest.len() >= 8 => {
                // Skip the version and minimum compatible version.
                let mut rest = &rest[8..];
                while !rest.is_empty() {
                    let Some((len, tail)) = rest.split_first_chunk::<4>() else {
                        return Err(DecodeError::Decompression {
                            codec: Compression::Snappy,
                            reason: "truncated xerial block length".to_owned(),
                        });
                    };
                    let len = usize::try_from(i32::from_be_bytes(*len)).map_err(|_| DecodeError::Decompression {
                        codec: Compression::Snappy,
                        reason: "negative xerial block length".to_owned(),
                    })?;
                    if len > tail.len() {
                        return Err(DecodeError::Decompression {
                            codec: Compression::Snappy,
                            reason: "xerial block length exceeds the input".to_owned(),
                        });
                    }
                    let (block, tail) = tail.split_at(len);
                    append_block(&mut decoder, block, &mut out, limit)?;
                    rest = tail;
                }
            }
            _ => append_block(&mut decoder, input, &mut out, limit)?,
        }
        Ok(out)
    }

    /// Decompresses one raw snappy block onto the end of `out`, checking the length the
    /// block declares against the limit before allocating.
    fn append_block(
        decoder: &mut snap::raw::Decoder,
        block: &[u8],
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Result<(), DecodeError> {
        let len = snap::raw::decompress_len(block).map_err(fail)?;
        let start = out.len();
        if len > limit.saturating_sub(start) {
            return Err(DecodeError::DecompressedTooLarge { limit });
        }
        out.resize(start + len, 0);
        let written = decoder.decompress(block, &mut out[start..]).map_err(fail)?;
        out.truncate(start + written);
        Ok(())
    }
}

#[cfg(feature = "lz4")]
mod lz4 {
    use std::io::Write;

    use bytes::{BufMut, BytesMut};
    use lz4_flex::frame::{BlockMode, BlockSize, FrameDecoder, FrameEncoder, FrameInfo};

    use super::{Compression, read_bounded};
    use crate::error::{DecodeError, EncodeError};

    pub(super) fn compress(input: &[u8], out: &mut BytesMut) -> Result<(), EncodeError> {
        let fail = |reason: String| EncodeError::Compression { codec: Compression::Lz4, reason };
        let info = FrameInfo::new().block_size(BlockSize::Max64KB).block_mode(BlockMode::Independent);
        out.reserve(input.len() / 2 + 64);
        let mut encoder = FrameEncoder::with_frame_info(info, out.writer());
        encoder.write_all(input).map_err(|e| fail(e.to_string()))?;
        encoder.finish().map_err(|e| fail(e.to_string()))?;
        Ok(())
    }

    pub(super) fn decompress(input: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
        read_bounded(Compression::Lz4, FrameDecoder::new(input), input.len(), limit)
    }
}

#[cfg(feature = "zstd")]
mod zstd {
    use bytes::BytesMut;

    use super::{Compression, grow, read_bounded};
    use crate::error::{DecodeError, EncodeError};

    /// Largest window a frame may ask the decoder for: 2^27 bytes, zstd's own default
    /// limit, which every level a Kafka client can configure stays within.
    const WINDOW_LOG_MAX: u32 = 27;

    pub(super) fn compress(input: &[u8], level: Option<i32>, out: &mut BytesMut) -> Result<(), EncodeError> {
        let start = grow(out, ::zstd::zstd_safe::compress_bound(input.len()));
        match ::zstd::bulk::compress_to_buffer(input, &mut out[start..], level.unwrap_or(3)) {
            Ok(written) => {
                out.truncate(start + written);
                Ok(())
            }
            Err(e) => {
                out.truncate(start);
                Err(EncodeError::Compression { codec: Compression::Zstd, reason: e.to_string() })
            }
        }
    }

    pub(super) fn decompress(input: &[u8], limit: usize) -> Result<Vec<u8>, DecodeError> {
        let fail = |e: std::io::Error| DecodeError::Decompression { codec: Compression::Zstd, reason: e.to_string() };
        let mut decoder = ::zstd::stream::read::Decoder::with_buffer(input).map_err(fail)?;
        decoder.window_log_max(WINDOW_LOG_MAX).map_err(fail)?;
        read_bounded(Compression::Zstd, decoder, input.len(), limit)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use proptest::prelude::*;

    use super::*;

    fn sample(len: usize) -> Vec<u8> {
        // Half text-like (compressible), half pseudo-random.
        let mut state = 0x1234_5678_9abc_def0u64;
        (0..len)
            .map(|i| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                if (i / 1000) % 2 == 0 { b"kafka records "[i % 14] } else { (state >> 56) as u8 }
            })
            .collect()
    }

    fn enabled_codecs() -> impl Iterator<Item = Compression> {
        Compression::ALL.into_iter().filter(|c| c.is_enabled())
    }

    #[test]
    fn every_codec_roundtrips() {
        for codec in enabled_codecs() {
            for len in [0, 1, 100, 32 * 1024, 32 * 1024 + 1, 200_000] {
                let input = sample(len);
                let mut out = BytesMut::from(&b"prefix"[..]);
                compress(codec, &input, &mut out).unwrap();
                assert_eq!(&out[..6], b"prefix", "{codec} must append");
                let back = decompress(codec, &out[6..], len).unwrap();
                assert_eq!(back, input, "{codec} len {len}");
            }
        }
    }

    #[test]
    fn levels_are_accepted() {
        let input = sample(50_000);
        for codec in enabled_codecs() {
            for level in [None, Some(1), Some(9), Some(-5), Some(100)] {
                let mut out = BytesMut::new();
                match compress_with_level(codec, level, &input, &mut out) {
                    Ok(()) => assert_eq!(decompress(codec, &out, input.len()).unwrap(), input),
                    Err(e) => assert!(codec == Compression::Zstd && level == Some(100), "{codec} {level:?}: {e}"),
                }
            }
        }
    }

    #[test]
    fn the_limit_is_enforced_exactly() {
        let input = vec![0u8; 100_000];
        for codec in Compression::ALL.into_iter().filter(|c| c.is_enabled()) {
            let mut out = BytesMut::new();
            compress(codec, &input, &mut out).unwrap();
            assert_eq!(decompress(codec, &out, 100_000).unwrap().len(), 100_000);
            assert_eq!(
                decompress(codec, &out, 99_999),
                Err(DecodeError::DecompressedTooLarge { limit: 99_999 }),
                "{codec}"
            );
        }
    }

    #[test]
    fn decompression_bombs_stop_at_the_limit() {
        // 4 x 8 MiB of zeros compress to a few hundred KiB at most.
        let zeros = vec![0u8; 8 << 20];
        for codec in enabled_codecs().filter(|&c| c != Compression::None) {
            let mut out = BytesMut::new();
            for _ in 0..4 {
                compress(codec, &zeros, &mut out).unwrap();
                if codec == Compression::Snappy {
                    break; // repeated xerial headers would read as garbage blocks
                }
            }
            assert!(out.len() < 2 << 20, "{codec}: {}", out.len());
            assert_eq!(decompress(codec, &out, 1 << 20), Err(DecodeError::DecompressedTooLarge { limit: 1 << 20 }));
        }
    }

    #[cfg(feature = "snappy")]
    #[test]
    fn snappy_writes_java_compatible_xerial_framing() {
        let input = sample(70_000);
        let mut out = BytesMut::new();
        compress(Compression::Snappy, &input, &mut out).unwrap();
        assert_eq!(&out[..16], b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01");
        // Blocks: 32 KiB, 32 KiB, then the rest, each an int32 length and a raw block.
        let mut rest = &out[16..];
        let mut sizes = Vec::new();
        while !rest.is_empty() {
            let len = i32::from_be_bytes(rest[..4].try_into().unwrap()) as usize;
            let block = &rest[4..4 + len];
            sizes.push(snap::raw::decompress_len(block).unwrap());
            rest = &rest[4 + len..];
        }
        assert_eq!(sizes, vec![32 * 1024, 32 * 1024, 70_000 - 64 * 1024]);
    }

    #[cfg(feature = "snappy")]
    #[test]
    fn snappy_reads_xerial_and_raw_payloads() {
        // Raw snappy for "hello": uncompressed length varint 5, literal tag (5-1)<<2, bytes.
        let raw = b"\x05\x10hello";
        assert_eq!(&decompress(Compression::Snappy, raw, 100).unwrap()[..], b"hello");
        // The same block twice in xerial framing: header, then [int32 7][block] twice.
        let mut xerial = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01".to_vec();
        for _ in 0..2 {
            xerial.extend_from_slice(&7i32.to_be_bytes());
            xerial.extend_from_slice(raw);
        }
        assert_eq!(&decompress(Compression::Snappy, &xerial, 100).unwrap()[..], b"hellohello");
        assert_eq!(decompress(Compression::Snappy, &xerial, 9), Err(DecodeError::DecompressedTooLarge { limit: 9 }));
        // Header only: empty output. Truncated block length or block: errors.
        assert!(decompress(Compression::Snappy, &xerial[..16], 100).unwrap().is_empty());
        for cut in 17..xerial.len() {
            if cut != 16 + 11 {
                assert!(decompress(Compression::Snappy, &xerial[..cut], 100).is_err(), "cut {cut}");
            }
        }
        let mut negative = xerial[..16].to_vec();
        negative.extend_from_slice(&(-1i32).to_be_bytes());
        assert!(decompress(Compression::Snappy, &negative, 100).is_err());
    }

    #[cfg(feature = "lz4")]
    #[test]
    fn lz4_writes_kafka_style_frames_and_reads_others() {
        let input = sample(150_000);
        let mut out = BytesMut::new();
        compress(Compression::Lz4, &input, &mut out).unwrap();
        assert_eq!(&out[..4], &[0x04, 0x22, 0x4d, 0x18], "lz4 frame magic");
        assert_eq!(
            out[4], 0b0110_0000,
            "FLG: version 01, independent blocks, no block or content checksum, no content size, \
             as Kafka's own lz4 stream reader expects"
        );
        assert_eq!(out[5], 0x40, "64 KiB maximum block size");
        // Linked blocks, 4 MiB blocks and checksums decode too.
        let info = lz4_flex::frame::FrameInfo::new()
            .block_mode(lz4_flex::frame::BlockMode::Linked)
            .block_size(lz4_flex::frame::BlockSize::Max4MB)
            .block_checksums(true)
            .content_checksum(true)
            .content_size(Some(input.len() as u64));
        let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, Vec::new());
        std::io::Write::write_all(&mut enc, &input).unwrap();
        let other = enc.finish().unwrap();
        assert_eq!(decompress(Compression::Lz4, &other, input.len()).unwrap(), input);
    }

    #[cfg(feature = "zstd")]
    #[test]
    fn zstd_reads_concatenated_frames() {
        let mut out = BytesMut::new();
        compress(Compression::Zstd, b"abc", &mut out).unwrap();
        compress(Compression::Zstd, b"def", &mut out).unwrap();
        assert_eq!(&decompress(Compression::Zstd, &out, 6).unwrap()[..], b"abcdef");
    }

    #[cfg(feature = "gzip")]
    #[test]
    fn gzip_reads_concatenated_members() {
        let mut out = BytesMut::new();
        compress(Compression::Gzip, b"abc", &mut out).unwrap();
        compress(Compression::Gzip, b"def", &mut out).unwrap();
        assert_eq!(&decompress(Compression::Gzip, &out, 6).unwrap()[..], b"abcdef");
    }

    #[test]
    fn disabled_codecs_are_reported() {
        for codec in Compression::ALL.into_iter().filter(|c| !c.is_enabled()) {
            assert_eq!(compress(codec, b"x", &mut BytesMut::new()), Err(EncodeError::CompressionDisabled(codec)));
            assert_eq!(decompress(codec, b"x", 10), Err(DecodeError::CompressionDisabled(codec)));
        }
    }

    #[test]
    fn none_copies_within_the_limit() {
        assert_eq!(&decompress(Compression::None, b"abc", 3).unwrap()[..], b"abc");
        assert_eq!(decompress(Compression::None, b"abc", 2), Err(DecodeError::DecompressedTooLarge { limit: 2 }));
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        #[test]
        fn corrupt_input_never_panics(data in prop::collection::vec(any::<u8>(), 0..300)) {
            for codec in enabled_codecs() {
                let _ = decompress(codec, &data, 1 << 20);
            }
        }

        #[test]
        fn corrupted_payloads_never_panic(
            len in 0usize..3000,
            flips in prop::collection::vec((any::<prop::sample::Index>(), 1u8..=255), 1..4),
        ) {
            let input = sample(len);
            for codec in enabled_codecs() {
                let mut out = BytesMut::new();
                compress(codec, &input, &mut out).unwrap();
                if out.is_empty() {
                    continue;
                }
                for (at, mask) in &flips {
                    let i = at.index(out.len());
                    out[i] ^= mask;
                }
                if let Ok(back) = decompress(codec, &out, 1 << 20) {
                    prop_assert!(back.len() <= 1 << 20);
                }
            }
        }
    }
}
