//! TLS and SASL listeners, driven with raw frames: rustls on the client side, the
//! `sasl` crate's client mechanisms (and a hand-written PLAIN token).

#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::{Raw, metadata_request};
use klife_protocol::ErrorCode;
use klife_protocol::messages::{ApiVersionsRequest, SaslAuthenticateRequest, SaslHandshakeRequest};
use klife_testkit::{FakeCluster, SaslMechanism, TestCertificates};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use sasl::client::Mechanism;
use sasl::client::mechanisms::Scram;
use sasl::common::scram::Sha256;
use sasl::common::{ChannelBinding, Credentials};

async fn tls_connect(address: &str, ca_pem: &str) -> Raw {
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(address).await.unwrap();
    let tls = connector.connect(ServerName::try_from("127.0.0.1").unwrap(), tcp).await.unwrap();
    Raw::over(Box::new(tls))
}

async fn handshake(c: &mut Raw, mechanism: &str) -> i16 {
    c.send(&SaslHandshakeRequest::default().with_mechanism(mechanism.into()), 1).await.error_code
}

async fn authenticate(c: &mut Raw, token: Vec<u8>) -> (i16, Vec<u8>) {
    let r = c.send(&SaslAuthenticateRequest::default().with_auth_bytes(token.into()), 2).await;
    (r.error_code, r.auth_bytes.to_vec())
}

#[tokio::test]
async fn tls_listeners_serve_with_generated_certificates() {
    let certs = TestCertificates::localhost().unwrap();
    let cluster = FakeCluster::builder().brokers(2).tls(certs.identity().unwrap()).start().await.unwrap();
    assert_eq!(cluster.security_protocol(), "SSL");
    let mut c = tls_connect(&cluster.addresses()[1], certs.ca_pem()).await;
    let meta = c.send(&metadata_request(&[]), 12).await;
    assert_eq!(meta.brokers.len(), 2);
    // Plaintext to a TLS listener: the handshake fails and the connection closes.
    let mut plain = Raw::connect(&cluster.addresses()[0]).await;
    plain.send_only(&ApiVersionsRequest::default(), 0).await;
    assert!(plain.is_closed().await);
}

#[tokio::test]
async fn sasl_plain_and_scram_log_in_with_the_right_password_only() {
    let cluster = FakeCluster::builder().sasl_user("alice", "alice-secret").start().await.unwrap();
    assert_eq!(cluster.security_protocol(), "SASL_PLAINTEXT");
    let address = cluster.addresses()[0].clone();

    // PLAIN: one token.
    let mut c = Raw::connect(&address).await;
    c.send(&ApiVersionsRequest::default(), 0).await;
    assert_eq!(handshake(&mut c, "PLAIN").await, 0);
    assert_eq!(authenticate(&mut c, b"\0alice\0alice-secret".to_vec()).await.0, 0);
    assert_eq!(c.send(&metadata_request(&[]), 12).await.brokers.len(), 1);

    // SCRAM-SHA-256 with the `sasl` crate's client, as Kafka clients send it ("n,,").
    for (password, ok) in [("alice-secret", true), ("wrong", false)] {
        let mut c = Raw::connect(&address).await;
        assert_eq!(handshake(&mut c, "SCRAM-SHA-256").await, 0);
        let creds = Credentials::default()
            .with_username("alice")
            .with_password(password)
            .with_channel_binding(ChannelBinding::None);
        let mut client = Scram::<Sha256>::from_credentials(creds).unwrap();
        let (code, challenge) = authenticate(&mut c, client.initial()).await;
        assert_eq!(code, 0);
        let (code, verifier) = authenticate(&mut c, client.response(&challenge).unwrap()).await;
        if ok {
            assert_eq!(code, 0);
            client.success(&verifier).unwrap();
            assert_eq!(c.send(&metadata_request(&[]), 12).await.brokers.len(), 1);
        } else {
            assert_eq!(code, ErrorCode::SaslAuthenticationFailed.code());
            assert!(c.is_closed().await, "a failed login closes the connection");
        }
    }

    // A wrong PLAIN password, an unknown user.
    for token in [&b"\0alice\0nope"[..], &b"\0mallory\0alice-secret"[..]] {
        let mut c = Raw::connect(&address).await;
        handshake(&mut c, "PLAIN").await;
        assert_eq!(authenticate(&mut c, token.to_vec()).await.0, ErrorCode::SaslAuthenticationFailed.code());
        assert!(c.is_closed().await);
    }

    // Requests before authentication close the connection.
    let mut c = Raw::connect(&address).await;
    c.send_only(&metadata_request(&[]), 12).await;
    assert!(c.is_closed().await);
    // So does authenticating without a handshake.
    let mut c = Raw::connect(&address).await;
    assert_eq!(authenticate(&mut c, b"\0alice\0alice-secret".to_vec()).await.0, ErrorCode::IllegalSaslState.code());
    assert!(c.is_closed().await);
}

#[tokio::test]
async fn a_mechanism_not_offered_is_refused_with_the_list() {
    let cluster = FakeCluster::builder()
        .sasl_user("alice", "pw")
        .sasl_mechanisms(&[SaslMechanism::ScramSha512])
        .start()
        .await
        .unwrap();
    let mut c = Raw::connect(&cluster.addresses()[0]).await;
    let r = c.send(&SaslHandshakeRequest::default().with_mechanism("PLAIN".into()), 1).await;
    assert_eq!(r.error_code, ErrorCode::UnsupportedSaslMechanism.code());
    assert_eq!(r.mechanisms, vec!["SCRAM-SHA-512".to_owned()]);
    assert!(c.is_closed().await);
}

#[tokio::test]
async fn sasl_over_tls() {
    let certs = TestCertificates::localhost().unwrap();
    let cluster = FakeCluster::builder().tls(certs.identity().unwrap()).sasl_user("bob", "pw").start().await.unwrap();
    assert_eq!(cluster.security_protocol(), "SASL_SSL");
    let mut c = tls_connect(&cluster.addresses()[0], certs.ca_pem()).await;
    assert_eq!(handshake(&mut c, "PLAIN").await, 0);
    assert_eq!(authenticate(&mut c, b"\0bob\0pw".to_vec()).await.0, 0);
    assert_eq!(c.send(&metadata_request(&[]), 12).await.brokers.len(), 1);
}

#[tokio::test]
async fn a_plaintext_listener_refuses_sasl() {
    let cluster = FakeCluster::builder().start().await.unwrap();
    let mut c = Raw::connect(&cluster.addresses()[0]).await;
    assert_eq!(handshake(&mut c, "PLAIN").await, ErrorCode::IllegalSaslState.code());
    assert!(c.is_closed().await);
}
