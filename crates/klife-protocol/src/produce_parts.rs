//! A Produce request encoded as parts: the record batches are handed on as they are
//! (reference-counted [`Bytes`]), not copied into the frame.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::EncodeError;
use crate::messages::ProduceRequest;
use crate::wire::{self, RawTaggedField};

/// Records fields shorter than this are copied into the surrounding part: a separate
/// part costs more than the copy.
const SEPARATE_PART_MIN: usize = 1024;

/// The parts of an encoded request body, in order.
struct Parts {
    parts: Vec<Bytes>,
    current: BytesMut,
}

impl Parts {
    fn push_shared(&mut self, bytes: &Bytes) {
        if bytes.len() < SEPARATE_PART_MIN {
            self.current.put_slice(bytes);
            return;
        }
        if !self.current.is_empty() {
            self.parts.push(self.current.split().freeze());
        }
        self.parts.push(bytes.clone());
    }

    fn finish(mut self) -> Vec<Bytes> {
        if !self.current.is_empty() {
            self.parts.push(self.current.freeze());
        }
        self.parts
    }
}

fn put_tagged(buf: &mut BytesMut, fields: &[RawTaggedField], what: &'static str) -> Result<(), EncodeError> {
    let count = u32::try_from(fields.len()).map_err(|_| EncodeError::TooLong {
        what,
        length: fields.len(),
        max: u32::MAX as usize,
    })?;
    wire::put_uvarint(buf, count);
    for f in fields {
        wire::put_tagged_field(buf, f.tag, &f.data);
    }
    Ok(())
}

impl ProduceRequest {
    /// Encodes the request body at `version` as parts whose concatenation is exactly
    /// what [`Message::encode`](crate::Message::encode) writes: every records field of 1 KiB or more is a part
    /// of its own, the same `Bytes` (no copy), and the bytes between them are
    /// gathered into parts of their own. For a writer that sends the parts one after
    /// the other (or vectored), with a frame head from
    /// [`frame::encode_request_head`](crate::frame::encode_request_head).
    pub fn encode_parts(&self, version: i16) -> Result<Vec<Bytes>, EncodeError> {
        crate::message::check_encode_version::<Self>(version)?;
        let flexible = version >= 9;
        let mut p = Parts { parts: Vec::new(), current: BytesMut::with_capacity(256) };
        if version < 3 && self.transactional_id.is_some() {
            return Err(EncodeError::FieldNotInVersion { field: "ProduceRequest.transactional_id", version });
        }
        let buf = &mut p.current;
        if version >= 3 {
            wire::put_nullable_string(
                buf,
                self.transactional_id.as_deref(),
                flexible,
                "ProduceRequest.transactional_id",
            )?;
        }
        buf.put_i16(self.acks);
        buf.put_i32(self.timeout_ms);
        wire::put_array_len(buf, Some(self.topic_data.len()), flexible, "ProduceRequest.topic_data")?;
        for topic in &self.topic_data {
            let buf = &mut p.current;
            wire::put_string(buf, &topic.name, flexible, "ProduceRequest::TopicProduceData.name")?;
            wire::put_array_len(
                buf,
                Some(topic.partition_data.len()),
                flexible,
                "ProduceRequest::TopicProduceData.partition_data",
            )?;
            for partition in &topic.partition_data {
                let what = "ProduceRequest::PartitionProduceData.records";
                p.current.put_i32(partition.index);
                wire::put_nullable_bytes_len(
                    &mut p.current,
                    partition.records.as_ref().map(Bytes::len),
                    flexible,
                    what,
                )?;
                if let Some(records) = &partition.records {
                    p.push_shared(records);
                }
                if flexible {
                    put_tagged(&mut p.current, &partition.unknown_tagged_fields, "PartitionProduceData")?;
                }
            }
            if flexible {
                put_tagged(&mut p.current, &topic.unknown_tagged_fields, "TopicProduceData")?;
            }
        }
        if flexible {
            put_tagged(&mut p.current, &self.unknown_tagged_fields, "ProduceRequest")?;
        }
        Ok(p.finish())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::Message;
    use crate::messages::produce_request::{PartitionProduceData, TopicProduceData};
    use crate::testing::ArbitraryMessage;

    fn concat(parts: &[Bytes]) -> Vec<u8> {
        parts.iter().flat_map(|p| p.iter().copied()).collect()
    }

    fn request(records: &[Option<Bytes>]) -> ProduceRequest {
        let partitions = records
            .iter()
            .enumerate()
            .map(|(i, r)| PartitionProduceData::default().with_index(i as i32).with_records(r.clone()))
            .collect();
        ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(30_000)
            .with_topic_data(vec![TopicProduceData::default().with_name("t".into()).with_partition_data(partitions)])
    }

    #[test]
    fn parts_concatenate_to_the_encoding_at_every_version() {
        let big = Bytes::from(vec![7u8; 5000]);
        let small = Bytes::from_static(b"tiny batch");
        let r = request(&[Some(big.clone()), None, Some(small), Some(big.clone())]);
        for version in 0..=11 {
            let mut whole = BytesMut::new();
            r.encode(&mut whole, version).unwrap();
            let parts = r.encode_parts(version).unwrap();
            assert_eq!(concat(&parts), whole.to_vec(), "version {version}");
        }
    }

    #[test]
    fn head_and_parts_make_the_whole_frame() {
        let big = Bytes::from(vec![9u8; 3000]);
        let r = request(&[Some(big), None]).with_transactional_id(Some("tx".into()));
        for version in 3..=11 {
            let mut whole = BytesMut::new();
            crate::frame::encode_request(&mut whole, 42, Some("klife"), version, &r).unwrap();
            let parts = r.encode_parts(version).unwrap();
            let mut head = BytesMut::new();
            let body_len = parts.iter().map(Bytes::len).sum();
            crate::frame::encode_request_head(&mut head, crate::ApiKey::Produce, 42, Some("klife"), version, body_len)
                .unwrap();
            let mut framed = head.to_vec();
            framed.extend(concat(&parts));
            assert_eq!(framed, whole.to_vec(), "version {version}");
        }
    }

    #[test]
    fn large_records_are_shared_not_copied() {
        let big = Bytes::from(vec![7u8; 5000]);
        let r = request(&[Some(big.clone()), Some(big.clone())]);
        let parts = r.encode_parts(11).unwrap();
        let shared = parts.iter().filter(|p| p.as_ptr() == big.as_ptr() && p.len() == big.len()).count();
        assert_eq!(shared, 2, "{parts:?}");
    }

    #[test]
    fn a_version_without_the_field_is_refused_as_encode_is() {
        let r = request(&[None]).with_transactional_id(Some("tx".into()));
        assert!(r.encode_parts(2).is_err());
        assert!(r.encode(&mut BytesMut::new(), 2).is_err());
        assert!(r.encode_parts(12).is_err());
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_requests_encode_the_same_in_parts(seed: Vec<u8>, version in 0i16..=11) {
            let mut u = arbitrary::Unstructured::new(&seed);
            let Ok(r) = ProduceRequest::arbitrary_for_version(&mut u, version) else { return Ok(()) };
            let mut whole = BytesMut::new();
            match r.encode(&mut whole, version) {
                Ok(()) => proptest::prop_assert_eq!(concat(&r.encode_parts(version).unwrap()), whole.to_vec()),
                Err(_) => proptest::prop_assert!(r.encode_parts(version).is_err()),
            }
        }
    }
}
