//! Bad input ends within a bounded time in a typed error whose message says what to
//! fix: unreachable or malformed bootstrap addresses, a wrong CA, a hostname mismatch,
//! failed SASL logins, a mechanism the broker does not offer. TLS and SASL run against
//! the scripted peer, whose TLS is rustls's server side and whose SASL is the `sasl`
//! crate's server mechanisms.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use klife::{Client, SaslConfig, TlsConfig};
use klife_conformance::server::{SaslUsers, ScriptedBroker, TestCa};

/// Far longer than any case needs: reaching it means something hung.
const HANG_GUARD: Duration = Duration::from_secs(30);

async fn connect(
    addresses: Vec<String>,
    tls: Option<TlsConfig>,
    sasl: Option<SaslConfig>,
) -> Result<Client, klife::Error> {
    let mut b = Client::builder().bootstrap_servers(addresses).connect_timeout(Duration::from_secs(3));
    if let Some(t) = tls {
        b = b.tls(t);
    }
    if let Some(s) = sasl {
        b = b.sasl(s);
    }
    tokio::time::timeout(HANG_GUARD, b.build()).await.expect("connecting hung")
}

fn users(mechanisms: Vec<&'static str>) -> SaslUsers {
    SaslUsers { user: "alice".into(), password: "alice-secret".into(), mechanisms }
}

#[tokio::test]
async fn an_unreachable_bootstrap_address_names_itself() {
    let err = connect(vec!["127.0.0.1:1".into()], None, None).await.unwrap_err();
    assert!(err.is_connection() && err.is_retriable(), "{err}");
    let text = err.to_string();
    assert!(text.contains("127.0.0.1:1") && text.to_lowercase().contains("refused"), "{text}");
}

#[tokio::test]
async fn an_unresolvable_host_is_a_connection_error() {
    let err = connect(vec!["no-such-host.invalid:9092".into()], None, None).await.unwrap_err();
    assert!(err.is_connection(), "{err}");
    assert!(err.to_string().contains("no-such-host.invalid:9092"), "{err}");
}

#[tokio::test]
async fn malformed_and_missing_bootstrap_addresses_are_invalid_arguments() {
    for bad in ["localhost", "host:notaport", ":9092"] {
        let err = connect(vec![bad.into()], None, None).await.unwrap_err();
        assert!(err.is_invalid_argument(), "{bad}: {err}");
        assert!(err.to_string().contains(bad), "{err}");
    }
    let err = connect(Vec::new(), None, None).await.unwrap_err();
    assert!(err.is_invalid_argument() && err.to_string().contains("bootstrap"), "{err}");
}

#[tokio::test]
async fn tls_with_the_right_ca_connects() {
    let ca = TestCa::new("klife test CA");
    let broker = ScriptedBroker::start(Some(ca.issue(&["localhost", "127.0.0.1"])), None).await;
    let client =
        connect(vec![broker.address.clone()], Some(TlsConfig::new().with_root_certificates_pem(ca.pem())), None)
            .await
            .unwrap();
    assert_eq!(client.cluster().metadata().cluster_id.as_deref(), Some("scripted"));
}

#[tokio::test]
async fn tls_with_a_wrong_ca_is_refused_with_advice() {
    let ca = TestCa::new("the broker's CA");
    let other = TestCa::new("some other CA");
    let broker = ScriptedBroker::start(Some(ca.issue(&["127.0.0.1"])), None).await;
    let err =
        connect(vec![broker.address.clone()], Some(TlsConfig::new().with_root_certificates_pem(other.pem())), None)
            .await
            .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("UnknownIssuer") && text.contains("root certificates"), "{text}");
    assert!(!err.is_retriable());
}

#[tokio::test]
async fn a_hostname_mismatch_is_refused_unless_explicitly_allowed() {
    let ca = TestCa::new("klife test CA");
    let broker = ScriptedBroker::start(Some(ca.issue(&["kafka.example.com"])), None).await;
    let tls = TlsConfig::new().with_root_certificates_pem(ca.pem());
    let err = connect(vec![broker.address.clone()], Some(tls.clone()), None).await.unwrap_err();
    assert!(err.to_string().contains("dangerous_disable_hostname_verification"), "{err}");
    connect(vec![broker.address.clone()], Some(tls.dangerous_disable_hostname_verification()), None).await.unwrap();
}

#[tokio::test]
async fn plaintext_to_a_tls_listener_fails_within_the_timeout() {
    let ca = TestCa::new("klife test CA");
    let broker = ScriptedBroker::start(Some(ca.issue(&["127.0.0.1"])), None).await;
    let err = connect(vec![broker.address.clone()], None, None).await.unwrap_err();
    let text = err.to_string();
    assert!(text.contains(&broker.address) && text.contains("TLS listener"), "{text}");
}

#[tokio::test]
async fn scram_and_plain_logins_succeed_with_the_right_password() {
    let broker = ScriptedBroker::start(None, Some(users(vec!["PLAIN", "SCRAM-SHA-256"]))).await;
    for sasl in [SaslConfig::scram_sha256("alice", "alice-secret"), SaslConfig::plain("alice", "alice-secret")] {
        let client = connect(vec![broker.address.clone()], None, Some(sasl)).await.unwrap();
        assert_eq!(client.cluster().metadata().brokers.len(), 1);
    }
}

#[tokio::test]
async fn sasl_over_tls_works() {
    let ca = TestCa::new("klife test CA");
    let broker = ScriptedBroker::start(Some(ca.issue(&["127.0.0.1"])), Some(users(vec!["SCRAM-SHA-256"]))).await;
    connect(
        vec![broker.address.clone()],
        Some(TlsConfig::new().with_root_certificates_pem(ca.pem())),
        Some(SaslConfig::scram_sha256("alice", "alice-secret")),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn a_wrong_password_is_an_authentication_error_without_the_password() {
    let broker = ScriptedBroker::start(None, Some(users(vec!["PLAIN", "SCRAM-SHA-256"]))).await;
    for sasl in [SaslConfig::scram_sha256("alice", "not-the-password"), SaslConfig::plain("alice", "not-the-password")]
    {
        let mechanism = sasl.mechanism();
        let err = connect(vec![broker.address.clone()], None, Some(sasl)).await.unwrap_err();
        let text = err.to_string();
        assert!(err.is_authentication() && !err.is_retriable(), "{text}");
        assert!(text.contains(mechanism) && text.contains("SASL_AUTHENTICATION_FAILED"), "{text}");
        assert!(text.contains("check the username and password"), "{text}");
        assert!(!text.contains("not-the-password") && !format!("{err:?}").contains("not-the-password"));
    }
}

#[tokio::test]
async fn a_mechanism_the_broker_lacks_names_those_it_offers() {
    let broker = ScriptedBroker::start(None, Some(users(vec!["PLAIN"]))).await;
    let err = connect(vec![broker.address.clone()], None, Some(SaslConfig::scram_sha512("alice", "alice-secret")))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(err.is_authentication(), "{text}");
    assert!(text.contains("does not enable SCRAM-SHA-512") && text.contains("PLAIN"), "{text}");
}
