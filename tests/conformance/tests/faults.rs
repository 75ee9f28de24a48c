//! Faults injected into private librdkafka mock clusters: leader moves, retriable
//! error codes, dropped connections, brokers going down and up, slow brokers. Each
//! must be survived through metadata refresh and retries, or end in a typed error —
//! never a hang (every case runs under a generous guard timeout that only a hang hits).

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use klife::{Client, OffsetSpec};
use klife_conformance::MockCluster;
use klife_connection::CoordinatorType;

/// Far longer than any case needs: reaching it means something hung.
const HANG_GUARD: Duration = Duration::from_secs(60);

async fn client(mock: &MockCluster, request_timeout: Duration) -> Client {
    Client::builder()
        .bootstrap_servers(mock.addresses())
        .request_timeout(request_timeout)
        .connect_timeout(Duration::from_secs(2))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .build()
        .await
        .unwrap()
}

async fn latest(client: &Client, topic: &str, partition: i32) -> Result<i64, klife::Error> {
    let r = client.list_offsets([((topic, partition).into(), OffsetSpec::Latest)]).await?;
    r.into_iter().next().unwrap().result.map(|o| o.offset)
}

async fn guarded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(HANG_GUARD, f).await.expect("the operation hung")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_moves_are_followed_after_a_metadata_refresh() {
    let mut mock = MockCluster::start(3, &[("t", 2)]);
    mock.command("leader t 0 1");
    let client = client(&mock, Duration::from_secs(5)).await;
    assert_eq!(client.cluster().leader("t", 0).await.unwrap().node_id, 1);
    mock.command("leader t 0 2");
    // The client still believes broker 1 leads: its ListOffsets is answered
    // NOT_LEADER_OR_FOLLOWER, the metadata is refreshed, and broker 2 answers.
    mock.command("start-request-tracking");
    assert_eq!(guarded(latest(&client, "t", 0)).await.unwrap(), 0);
    assert_eq!(client.cluster().leader("t", 0).await.unwrap().node_id, 2);
    let requests = mock.command("get-requests");
    let list_offsets_to: Vec<&str> =
        requests.split_whitespace().filter(|r| r.split(':').nth(1) == Some("2")).map(|r| &r[..1]).collect();
    assert_eq!(list_offsets_to, vec!["1", "2"], "first to the old leader, then to the new one: {requests}");
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn injected_retriable_errors_are_retried() {
    let mut mock = MockCluster::start(3, &[("t", 2)]);
    let client = client(&mock, Duration::from_secs(5)).await;
    // ListOffsets (api key 2): NOT_LEADER_OR_FOLLOWER, then REQUEST_TIMED_OUT, then success.
    mock.command("errors 2 6 7");
    assert_eq!(guarded(latest(&client, "t", 1)).await.unwrap(), 0);
    // FindCoordinator (10): COORDINATOR_NOT_AVAILABLE twice, COORDINATOR_LOAD_IN_PROGRESS once.
    mock.command("errors 10 15 15 14");
    let found = guarded(client.cluster().find_coordinators(CoordinatorType::Group, &["g"])).await.unwrap();
    assert!(found[0].1.is_ok(), "{:?}", found[0].1);
    // The mock answers FindCoordinator v3, one key per request: the first key is refused
    // once and found in the second round, after the others, yet answered first.
    mock.command("errors 10 15");
    let keys = ["g-a", "g-b", "g-c"];
    let found = guarded(client.cluster().find_coordinators(CoordinatorType::Group, &keys)).await.unwrap();
    let answered: Vec<(&str, bool)> = found.iter().map(|(key, node)| (key.as_str(), node.is_ok())).collect();
    assert_eq!(answered, [("g-a", true), ("g-b", true), ("g-c", true)], "{found:?}");
    // Metadata (3): the broker drops the connection instead of answering.
    mock.command("errors 3 -195");
    guarded(client.cluster().refresh_metadata()).await.unwrap();
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn non_retriable_errors_end_at_once_with_their_code() {
    let mut mock = MockCluster::start(1, &[("t", 1)]);
    let client = client(&mock, Duration::from_secs(5)).await;
    // TOPIC_AUTHORIZATION_FAILED (29) is not retried.
    mock.command("errors 2 29 29 29 29 29 29 29");
    let err = guarded(latest(&client, "t", 0)).await.unwrap_err();
    assert_eq!(err.error_code(), Some(klife_protocol::ErrorCode::TopicAuthorizationFailed), "{err}");
    assert!(err.is_authentication() && !err.is_retriable());
    assert_eq!(mock.command("clear-errors 2"), "");
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connect_timeout_covers_the_handshakes() {
    let mut mock = MockCluster::start(1, &[("t", 1)]);
    let client = client(&mock, Duration::from_secs(5)).await;
    // Every answer of broker 1 is now 3 s late: a new connection's ApiVersions
    // handshake cannot finish within the 2 s connect timeout.
    mock.command("rtt 1 3000");
    let err = guarded(client.cluster().broker(1)).await.unwrap_err();
    assert!(matches!(err, klife_connection::Error::Connect { .. }), "{err}");
    assert!(err.to_string().contains("connect timeout"), "{err}");
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_going_down_and_up_is_survived() {
    let mut mock = MockCluster::start(3, &[("t", 3)]);
    mock.command("leader t 0 3");
    let client = client(&mock, Duration::from_secs(2)).await;
    assert_eq!(guarded(latest(&client, "t", 0)).await.unwrap(), 0);
    mock.command("broker-down 3");
    // While it is down: a typed, retriable connection error after the bounded retries.
    // The mock drops a down broker from the metadata while it still leads.
    let err = guarded(latest(&client, "t", 0)).await.unwrap_err();
    assert!(err.is_retriable(), "{err}");
    assert!(err.is_connection() || err.error_code() == Some(klife_protocol::ErrorCode::LeaderNotAvailable), "{err}");
    // Down, then up while the client is retrying: the retries get through.
    let lookup = tokio::spawn({
        let client = client.clone();
        async move { latest(&client, "t", 0).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    mock.command("broker-up 3");
    assert_eq!(guarded(lookup).await.unwrap().unwrap(), 0);
    // Other brokers were never affected.
    assert_eq!(guarded(latest(&client, "t", 1)).await.unwrap(), 0);
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_broker_times_out_and_the_connection_recovers() {
    let mut mock = MockCluster::start(1, &[("t", 1)]);
    let client = client(&mock, Duration::from_millis(500)).await;
    let conn = client.cluster().broker(1).await.unwrap();
    mock.command("rtt 1 3000");
    let err = guarded(conn.send(&klife_protocol::messages::MetadataRequest::default())).await.unwrap_err();
    assert!(matches!(err, klife_connection::Error::Timeout { .. }), "{err}");
    assert!(err.is_retriable());
    assert!(conn.is_closed(), "a timed-out connection is closed");
    mock.command("rtt 1 0");
    // The next request reconnects.
    assert_eq!(guarded(latest(&client, "t", 0)).await.unwrap(), 0);
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_all_fail_retriably_when_the_connection_drops() {
    let mut mock = MockCluster::start(1, &[("t", 1)]);
    let client = client(&mock, Duration::from_secs(20)).await;
    let conn = client.cluster().broker(1).await.unwrap();
    // Answers slower than the case, so that all four requests are in flight when the
    // broker drops (once it has received them all).
    mock.command("rtt 1 15000");
    mock.command("start-request-tracking");
    let sends: Vec<_> = (0..4)
        .map(|_| {
            let conn = conn.clone();
            tokio::spawn(async move { conn.send(&klife_protocol::messages::MetadataRequest::default()).await })
        })
        .collect();
    guarded(async {
        // Metadata is api key 3.
        while mock.command("get-requests").split_whitespace().filter(|r| r.split(':').nth(1) == Some("3")).count() < 4 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    mock.command("broker-down 1");
    for s in sends {
        let err = guarded(s).await.unwrap().unwrap_err();
        assert!(matches!(err, klife_connection::Error::Disconnected { .. }), "{err}");
        assert!(err.is_retriable());
    }
    mock.command("broker-up 1");
    mock.command("rtt 1 0");
    assert_eq!(guarded(latest(&client, "t", 0)).await.unwrap(), 0);
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bootstrap_skips_dead_addresses() {
    let mock = MockCluster::start(2, &[("t", 1)]);
    let mut addresses = vec!["127.0.0.1:1".to_owned()];
    addresses.extend(mock.addresses());
    let client = Client::builder().bootstrap_servers(addresses).build().await.unwrap();
    assert_eq!(client.cluster().metadata().brokers.len(), 2);
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_is_refreshed_on_its_interval() {
    let mut mock = MockCluster::start(3, &[("t", 1)]);
    mock.command("leader t 0 1");
    let client = Client::builder()
        .bootstrap_servers(mock.addresses())
        .metadata_max_age(Duration::from_millis(200))
        .build()
        .await
        .unwrap();
    client.cluster().add_topics(&["t"]).await.unwrap();
    assert_eq!(client.cluster().metadata().leader("t", 0).map(|(b, _)| b.node_id), Some(1));
    mock.command("leader t 0 3");
    // No request of ours: only the periodic refresh can learn of the move.
    let moved = guarded(async {
        loop {
            if client.cluster().metadata().leader("t", 0).map(|(b, _)| b.node_id) == Some(3) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    moved.await;
    client.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_queries_of_a_leaderless_partition_end() {
    let mut mock = MockCluster::start(2, &[("t", 2)]);
    let client = client(&mock, Duration::from_secs(2)).await;
    client.cluster().add_topics(&["t"]).await.unwrap();
    mock.command("leader t 0 -1");
    client.cluster().refresh_metadata().await.unwrap();
    let answers = guarded(client.list_offsets([
        (("t", 0).into(), OffsetSpec::Earliest),
        (("t", 0).into(), OffsetSpec::Latest),
        (("t", 1).into(), OffsetSpec::Latest),
    ]))
    .await
    .unwrap();
    for a in answers.iter().take(2) {
        let err = a.offset().unwrap_err();
        assert_eq!(err.error_code(), Some(klife_protocol::ErrorCode::LeaderNotAvailable), "{err}");
    }
    assert_eq!(answers[2].offset().unwrap(), 0);
    client.close().await;
}
