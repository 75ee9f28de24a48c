//! Ordered lanes against the fake cluster: one connection per owner, let go when the
//! owner drops its lane.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use klife_connection::{Cluster, ConnectionConfig, Error};
use klife_protocol::messages::MetadataRequest;
use klife_testkit::FakeCluster;

/// The cluster's connections to the fake broker: `n` of them, within a bound that is
/// only a safety net for a failing test.
async fn await_connections(kafka: &FakeCluster, broker: i32, n: usize) {
    let reached = kafka.await_connection_count(broker, n, Duration::from_secs(60)).await;
    assert!(reached, "broker {broker} has {} connections, not {n}", kafka.connection_count(broker));
}

#[tokio::test]
async fn each_owner_has_a_lane_of_its_own_until_it_drops_it() {
    let kafka = FakeCluster::builder().brokers(1).start().await.unwrap();
    let cluster = Cluster::connect(&kafka.addresses(), ConnectionConfig::default()).await.unwrap();
    let id = kafka.broker_ids()[0];
    let shared = cluster.broker(id).await.unwrap();
    // The bootstrap connection and the shared one.
    await_connections(&kafka, id, 2).await;

    let (first, second) = (cluster.open_lane(id), cluster.open_lane(id));
    assert_ne!(first.id(), second.id());
    assert_eq!((first.node_id(), second.node_id()), (id, id));
    let a = first.connection().await.unwrap();
    let b = second.connection().await.unwrap();
    assert_eq!(first.connection().await.unwrap().id(), a.id(), "a lane keeps its connection");
    assert_ne!(a.id(), b.id(), "two owners do not share a connection");
    assert!(![a.id(), b.id()].contains(&shared.id()), "lanes are apart from the shared connections");
    await_connections(&kafka, id, 4).await;

    // An answer awaited on a dropped lane still comes; then its connection closes.
    let queued = a.queue(&MetadataRequest::default().with_topics(Some(Vec::new())), 12, 128).await.unwrap();
    drop((a, first));
    assert!(!queued.response().await.unwrap().brokers.is_empty());
    await_connections(&kafka, id, 3).await;

    // A new lane is a new connection, never the dropped one's.
    let third = cluster.open_lane(id);
    let c = third.connection().await.unwrap();
    assert!(![b.id(), shared.id()].contains(&c.id()));

    // Closing the cluster closes the lanes; they refuse to reconnect.
    cluster.close().await;
    assert!(b.is_closed() && c.is_closed());
    assert!(matches!(second.connection().await, Err(Error::Closed)));
}

#[tokio::test]
async fn a_lane_does_not_keep_its_cluster_alive() {
    let kafka = FakeCluster::builder().start().await.unwrap();
    let cluster = Cluster::connect(&kafka.addresses(), ConnectionConfig::default()).await.unwrap();
    let lane = cluster.open_lane(kafka.broker_ids()[0]);
    lane.connection().await.unwrap();
    drop(cluster);
    assert!(matches!(lane.connection().await, Err(Error::Closed)));
}
