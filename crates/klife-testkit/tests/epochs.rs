//! Leader epochs and topic ids in Fetch, driven with raw frames: the checks Kafka
//! makes of `current_leader_epoch` (a replica before it says whether it leads),
//! `last_fetched_epoch` and its diverging epochs after an unclean election, and topics
//! named by id from v13.

#![allow(clippy::unwrap_used)]

mod common;

use common::{Raw, batch, fetch_request, produce};
use klife_protocol::ErrorCode;
use klife_protocol::messages::FetchRequest;
use klife_protocol::records::BatchOptions;
use klife_testkit::FakeCluster;

async fn cluster() -> FakeCluster {
    FakeCluster::builder().brokers(3).topic("t", 1).auto_create_topics(false, 1).start().await.unwrap()
}

fn with_epochs(mut req: FetchRequest, current: i32, last: i32) -> FetchRequest {
    let p = &mut req.topics[0].partitions[0];
    p.current_leader_epoch = current;
    p.last_fetched_epoch = last;
    req
}

#[tokio::test]
async fn a_replica_fences_an_old_epoch_before_saying_it_no_longer_leads() {
    let cluster = cluster().await;
    let (old, epoch) = cluster.leader("t", 0).unwrap();
    let new = cluster.move_leader("t", 0).unwrap();
    let mut c = Raw::connect(&cluster.broker_address(old).unwrap()).await;
    let id = c.send(&common::metadata_request(&["t"]), 12).await.topics[0].topic_id;
    // The old leader is a follower now: the old epoch is fenced, the current one told
    // it does not lead; from v16 both name the leader.
    for (asked, code) in [(epoch, ErrorCode::FencedLeaderEpoch), (epoch + 1, ErrorCode::NotLeaderOrFollower)] {
        for version in [12, 16] {
            let mut req = with_epochs(fetch_request("t", 0, 0, 0), asked, -1);
            req.topics[0].topic_id = id;
            let resp = c.send(&req, version).await;
            let p = &resp.responses[0].partitions[0];
            assert_eq!(p.error_code, code.code(), "v{version} epoch {asked}");
            let named = (p.current_leader.leader_id, p.current_leader.leader_epoch);
            if version >= 16 {
                assert_eq!(named, (new, epoch + 1));
                assert_eq!(resp.node_endpoints.len(), 1);
            } else {
                assert_eq!(named, (-1, -1), "before v16 the answer names no leader");
            }
        }
    }
    // Epochs mean nothing before v9.
    let resp = c.send(&with_epochs(fetch_request("t", 0, 0, 0), epoch, -1), 8).await;
    assert_eq!(resp.responses[0].partitions[0].error_code, ErrorCode::NotLeaderOrFollower.code());
}

#[tokio::test]
async fn an_unclean_election_gives_readers_past_the_cut_a_diverging_epoch() {
    let cluster = cluster().await;
    for values in [&["a", "b", "c"][..], &["d", "e", "f"], &["g", "h", "i"]] {
        assert_eq!(produce(&cluster, "t", 0, batch(values, BatchOptions::default())).await.error_code, 0);
    }
    let (_, epoch) = cluster.leader("t", 0).unwrap();
    // A reader went up to 9 under `epoch`; the new leader lacks everything from 3.
    let (leader, new_epoch, end) = cluster.truncate_unclean("t", 0, 4).unwrap();
    assert_eq!((new_epoch, end), (epoch + 1, 3), "cut at the start of the batch holding 4");
    assert_eq!(cluster.leader_epochs("t", 0).unwrap(), vec![(epoch, 0), (new_epoch, 3)]);
    for values in [&["x", "y"][..], &["z", "w", "v", "u", "s"]] {
        assert_eq!(produce(&cluster, "t", 0, batch(values, BatchOptions::default())).await.error_code, 0);
    }
    let mut c = Raw::connect(&cluster.broker_address(leader).unwrap()).await;
    let resp = c.send(&with_epochs(fetch_request("t", 0, 9, 0), new_epoch, epoch), 12).await;
    let p = &resp.responses[0].partitions[0];
    assert_eq!(p.error_code, 0);
    assert_eq!((p.diverging_epoch.epoch, p.diverging_epoch.end_offset), (epoch, 3));
    assert!(p.records.as_ref().unwrap().is_empty(), "no records with a divergence");
    assert_eq!(p.high_watermark, 10);
    // From where the logs part, with the epoch they share: the new records.
    let resp = c.send(&with_epochs(fetch_request("t", 0, 3, 0), new_epoch, epoch), 12).await;
    let p = &resp.responses[0].partitions[0];
    assert_eq!((p.error_code, p.diverging_epoch.epoch), (0, -1));
    let values: Vec<String> = common::batches(p.records.clone())
        .iter()
        .flat_map(|b| b.iter().map(|r| String::from_utf8_lossy(r.value().unwrap()).into_owned()).collect::<Vec<_>>())
        .collect();
    assert_eq!(values, ["x", "y", "z", "w", "v", "u", "s"]);
    // Without a last epoch (or before v12) nothing is checked: offset 9 reads the new
    // records written there.
    for (version, last) in [(12, -1), (11, -1)] {
        let resp = c.send(&with_epochs(fetch_request("t", 0, 9, 0), new_epoch, last), version).await;
        let p = &resp.responses[0].partitions[0];
        assert_eq!((p.error_code, p.diverging_epoch.epoch), (0, -1), "v{version}");
        assert!(!p.records.as_ref().unwrap().is_empty());
    }
    // An epoch newer than any the log has cannot be placed: out of range.
    let resp = c.send(&with_epochs(fetch_request("t", 0, 9, 0), new_epoch, new_epoch + 3), 12).await;
    assert_eq!(resp.responses[0].partitions[0].error_code, ErrorCode::OffsetOutOfRange.code());
}

#[tokio::test]
async fn from_v13_topics_go_by_id_and_an_unknown_id_is_named_back() {
    let cluster = cluster().await;
    assert_eq!(produce(&cluster, "t", 0, batch(&["a"], BatchOptions::default())).await.error_code, 0);
    let (leader, epoch) = cluster.leader("t", 0).unwrap();
    let mut c = Raw::connect(&cluster.broker_address(leader).unwrap()).await;
    let meta = c.send(&common::metadata_request(&["t"]), 12).await;
    let id = meta.topics[0].topic_id;
    assert!(!id.is_nil());
    let mut req = with_epochs(fetch_request("t", 0, 0, 0), epoch, -1);
    req.topics[0].topic = String::new();
    req.topics[0].topic_id = id;
    let resp = c.send(&req, 17).await;
    assert_eq!(resp.responses[0].topic_id, id);
    assert_eq!(resp.responses[0].partitions[0].error_code, 0);
    assert_eq!(common::batches(resp.responses[0].partitions[0].records.clone()).len(), 1);
    let other = klife_protocol::Uuid::from_u128(42);
    req.topics[0].topic_id = other;
    let resp = c.send(&req, 17).await;
    assert_eq!(resp.responses[0].topic_id, other);
    assert_eq!(resp.responses[0].partitions[0].error_code, ErrorCode::UnknownTopicId.code());
}
