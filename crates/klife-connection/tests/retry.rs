//! The retry rule against the fake cluster: what each kind of answer leads to, counted
//! in requests.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use klife_connection::{Cluster, ConnectionConfig, CoordinatorType, Error, RetryPolicy, Target, TimeoutKind};
use klife_protocol::messages::{DescribeClusterRequest, InitProducerIdRequest};
use klife_protocol::{ApiKey, ErrorCode, RetryAction};
use klife_testkit::FakeCluster;

async fn connect(kafka: &FakeCluster) -> Cluster {
    Cluster::connect(&kafka.addresses(), ConnectionConfig::default()).await.unwrap()
}

fn init(tid: &str) -> InitProducerIdRequest {
    InitProducerIdRequest::default().with_transactional_id(Some(tid.into())).with_transaction_timeout_ms(60_000)
}

/// A policy that never gives up within a test, with short delays.
fn patient() -> RetryPolicy {
    RetryPolicy::default()
        .with_timeout(Duration::from_secs(600))
        .with_backoff(Duration::from_millis(1), Duration::from_millis(5))
}

#[tokio::test]
async fn a_coordinator_loading_busy_or_moved_is_waited_for_and_found_again() {
    let kafka = FakeCluster::builder().brokers(3).start().await.unwrap();
    let cluster = connect(&kafka).await;
    kafka.inject_errors(
        ApiKey::InitProducerId,
        &[ErrorCode::CoordinatorLoadInProgress, ErrorCode::ConcurrentTransactions, ErrorCode::NotCoordinator],
        None,
    );
    let target = Target::Coordinator(CoordinatorType::Transaction, "app");
    let answer = cluster.call(target, &init("app"), &patient(), |r| [r.error_code]).await.unwrap();
    assert!(answer.producer_id >= 0);
    assert_eq!(kafka.request_count(ApiKey::InitProducerId), 4);
    // Looked up once, and once more after NOT_COORDINATOR (the cached one forgotten);
    // loading and busy coordinators are only waited for.
    assert_eq!(kafka.request_count(ApiKey::FindCoordinator), 2);
    cluster.close().await;
}

#[tokio::test]
async fn a_coordinator_lookup_waits_while_the_coordinator_is_not_ready() {
    let kafka = FakeCluster::builder().start().await.unwrap();
    let cluster = connect(&kafka).await;
    kafka.inject_errors(
        ApiKey::FindCoordinator,
        &[ErrorCode::CoordinatorLoadInProgress, ErrorCode::CoordinatorNotAvailable],
        None,
    );
    let node = cluster.coordinator(CoordinatorType::Group, "g").await.unwrap().node_id;
    assert_eq!(Some(node), kafka.coordinator("g"));
    assert_eq!(kafka.request_count(ApiKey::FindCoordinator), 3);
    cluster.close().await;
}

#[tokio::test]
async fn a_fatal_code_is_returned_at_once_with_its_broker() {
    let kafka = FakeCluster::builder().start().await.unwrap();
    let cluster = connect(&kafka).await;
    kafka.inject_errors(ApiKey::InitProducerId, &[ErrorCode::TransactionalIdAuthorizationFailed], None);
    let target = Target::Coordinator(CoordinatorType::Transaction, "app");
    let err = cluster.call(target, &init("app"), &patient(), |r| [r.error_code]).await.unwrap_err();
    assert!(
        matches!(
            &err,
            Error::Broker { api: ApiKey::InitProducerId, code: ErrorCode::TransactionalIdAuthorizationFailed, .. }
        ),
        "{err}"
    );
    assert!(!err.is_retriable());
    assert_eq!(kafka.request_count(ApiKey::InitProducerId), 1);
    cluster.close().await;
}

#[tokio::test]
async fn a_rejoin_code_is_the_callers_business() {
    let kafka = FakeCluster::builder().start().await.unwrap();
    let cluster = connect(&kafka).await;
    kafka.inject_errors(ApiKey::DescribeCluster, &[ErrorCode::RebalanceInProgress], None);
    let err = cluster
        .call(Target::AnyBroker, &DescribeClusterRequest::default(), &patient(), |r| [r.error_code])
        .await
        .unwrap_err();
    assert_eq!(err.retry_action(), Some(RetryAction::Rejoin), "{err}");
    assert_eq!(kafka.request_count(ApiKey::DescribeCluster), 1);
    cluster.close().await;
}

#[tokio::test]
async fn not_controller_refreshes_the_metadata_before_the_next_attempt() {
    let kafka = FakeCluster::builder().brokers(3).start().await.unwrap();
    let cluster = connect(&kafka).await;
    kafka.clear_requests();
    kafka.inject_errors(ApiKey::DescribeCluster, &[ErrorCode::NotController], None);
    let answer = cluster
        .call(Target::Controller, &DescribeClusterRequest::default(), &patient(), |r| {
            [(r.error_code, r.error_message.clone())]
        })
        .await
        .unwrap();
    assert_eq!(answer.controller_id, kafka.controller_id());
    let apis: Vec<ApiKey> = kafka
        .requests()
        .iter()
        .map(|r| r.api_key)
        .filter(|a| matches!(a, ApiKey::DescribeCluster | ApiKey::Metadata))
        .collect();
    assert_eq!(apis, [ApiKey::DescribeCluster, ApiKey::Metadata, ApiKey::DescribeCluster]);
    cluster.close().await;
}

#[tokio::test]
async fn retries_that_run_out_keep_the_last_error_and_count_the_attempts() {
    let kafka = FakeCluster::builder().start().await.unwrap();
    let cluster = connect(&kafka).await;
    kafka.inject_errors(ApiKey::InitProducerId, &[ErrorCode::ConcurrentTransactions; 4], None);
    let policy = patient().with_max_attempts(3);
    let target = Target::Coordinator(CoordinatorType::Transaction, "app");
    let err = cluster.call(target, &init("app"), &policy, |r| [r.error_code]).await.unwrap_err();
    let Error::RetriesExhausted { api, attempts, source, .. } = &err else { panic!("{err}") };
    assert_eq!((*api, *attempts), (ApiKey::InitProducerId, 3));
    assert!(matches!(**source, Error::Broker { code: ErrorCode::ConcurrentTransactions, .. }), "{err}");
    assert!(err.is_retriable() && err.is_retries_exhausted());
    assert_eq!(err.error_code(), Some(ErrorCode::ConcurrentTransactions));
    assert_eq!(kafka.request_count(ApiKey::InitProducerId), 3);
    // With time as the only bound, the rule ends too.
    kafka.clear_faults();
    kafka.inject_errors(ApiKey::InitProducerId, &[ErrorCode::ConcurrentTransactions; 10_000], None);
    let policy = RetryPolicy::default()
        .with_timeout(Duration::from_millis(200))
        .with_backoff(Duration::from_millis(10), Duration::from_millis(50));
    let err = cluster.call(target, &init("app"), &policy, |r| [r.error_code]).await.unwrap_err();
    assert!(err.is_retries_exhausted(), "{err}");
    kafka.clear_faults();
    cluster.close().await;
}

#[tokio::test]
async fn each_attempt_of_a_call_may_have_a_timeout_of_its_own() {
    let kafka = FakeCluster::builder().start().await.unwrap();
    let cluster = connect(&kafka).await;
    let id = kafka.broker_ids()[0];
    // Connected first (one connection per broker by default): the handshake is not
    // delayed.
    cluster.broker(id).await.unwrap();
    // The broker holds every answer for an hour: only the request's own timeout ends
    // the attempt (the connection's is the default 30 s).
    kafka.set_latency(id, Duration::from_secs(3600)).unwrap();
    let policy = patient().with_max_attempts(1).with_request_timeout(Duration::from_millis(100));
    let err = cluster
        .call(Target::Broker(id), &DescribeClusterRequest::default(), &policy, |r| [r.error_code])
        .await
        .unwrap_err();
    let Error::RetriesExhausted { attempts: 1, source, .. } = &err else { panic!("{err}") };
    assert!(
        matches!(
            **source,
            Error::Timeout { api: ApiKey::DescribeCluster, kind: TimeoutKind::Request, timeout, .. }
                if timeout == Duration::from_millis(100)
        ),
        "{err}"
    );
    assert_eq!(kafka.request_count_on(ApiKey::DescribeCluster, id), 1);
    cluster.close().await;
}
