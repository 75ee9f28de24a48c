//! klife against librdkafka, both ways, with every codec: batches librdkafka writes
//! decode in klife to exactly the records it wrote, and batches klife writes are read
//! back by librdkafka exactly.

#![allow(clippy::unwrap_used)]

use bytes::Bytes;
use klife_conformance::{Broker, peer, raw, unique_topic};
use klife_protocol::records::Header;
use klife_protocol::{Compression, Record};

const CODECS: [(&str, Compression); 5] = [
    ("none", Compression::None),
    ("gzip", Compression::Gzip),
    ("snappy", Compression::Snappy),
    ("lz4", Compression::Lz4),
    ("zstd", Compression::Zstd),
];
const COUNT: usize = 40;

klife_conformance::against_every_broker!(klife_reads_what_librdkafka_wrote, librdkafka_reads_what_klife_wrote);

fn peer_to_record(p: &peer::PeerRecord) -> Record {
    Record {
        offset: p.offset,
        timestamp: p.timestamp,
        key: p.key.clone().map(Bytes::from),
        value: p.value.clone().map(Bytes::from),
        headers: p.headers.iter().map(|(k, v)| Header { key: k.clone(), value: v.clone().map(Bytes::from) }).collect(),
    }
}

async fn klife_reads_what_librdkafka_wrote(broker: Broker) {
    let client = broker.client().await;
    for (name, _) in CODECS {
        let topic = unique_topic(&format!("from-rdkafka-{name}"));
        broker.create_topic(&client, &topic, 4).await;
        let mut written = peer::produce(&broker.bootstrap(), &topic, 1, name, COUNT);
        assert_eq!(written.len(), COUNT);
        written.sort_by_key(|r| r.offset);
        let got = raw::fetch_all(client.cluster(), &topic, 1, 0, COUNT as i64).await;
        assert_eq!(got.len(), COUNT, "{name}");
        for (g, w) in got.iter().zip(&written) {
            // The delivery report's timestamp is the broker's (the mock sends a fixed
            // log-append time); the record's own timestamp is base + index.
            let want = Record { timestamp: g.timestamp, ..peer_to_record(w) };
            assert_eq!(g, &want, "{name}: record at offset {}", g.offset);
            let index: i64 =
                String::from_utf8_lossy(w.value.as_deref().unwrap()).trim_start_matches('0').parse().unwrap_or(0);
            assert_eq!(g.timestamp, 1_700_000_000_000 + index, "{name}: timestamp of record {index}");
        }
    }
    client.close().await;
}

async fn librdkafka_reads_what_klife_wrote(broker: Broker) {
    let client = broker.client().await;
    for (name, codec) in CODECS {
        let topic = unique_topic(&format!("to-rdkafka-{name}"));
        broker.create_topic(&client, &topic, 4).await;
        let records: Vec<Record> = (0..COUNT)
            .map(|i| Record {
                offset: i as i64,
                timestamp: 1_600_000_000_000 + i as i64,
                key: (i % 4 != 0).then(|| Bytes::from(format!("k{i}"))),
                value: Some(Bytes::from(format!("{name}-value-{i}-{}", "z".repeat(i)))),
                headers: vec![
                    Header { key: "dup".into(), value: Some(Bytes::from_static(b"a")) },
                    Header { key: "dup".into(), value: Some(Bytes::from_static(b"b")) },
                    Header { key: "null".into(), value: None },
                ],
            })
            .collect();
        // Two batches, so that librdkafka reads across a batch boundary.
        raw::produce(client.cluster(), &topic, 3, codec, &records[..COUNT / 2]).await;
        raw::produce(client.cluster(), &topic, 3, codec, &records[COUNT / 2..]).await;
        let read = peer::consume(&broker.bootstrap(), &topic, 3, COUNT);
        assert_eq!(read.len(), COUNT, "{name}");
        for (r, want) in read.iter().zip(&records) {
            assert_eq!(&peer_to_record(r), want, "{name}: record at offset {}", r.offset);
        }
    }
    client.close().await;
}
