//! TLS tests: real handshakes against a rustls server on 127.0.0.1, with
//! certificates made by rcgen for each test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use super::*;

/// A certificate authority that can issue certificates.
struct Ca {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl Ca {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        Ca { cert, key }
    }

    fn pem(&self) -> String {
        self.cert.pem()
    }

    /// Issues a leaf certificate; returns (certificate PEM, key PEM).
    fn issue(&self, names: &[&str], purpose: ExtendedKeyUsagePurpose) -> (String, String) {
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, names.first().copied().unwrap_or("client"));
        params.extended_key_usages = vec![purpose];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

fn certs(pem: &str) -> Vec<CertificateDer<'static>> {
    CertificateDer::pem_slice_iter(pem.as_bytes()).collect::<Result<_, _>>().unwrap()
}

/// A TLS server for one connection; `client_ca` turns on required client authentication.
async fn serve_once(
    cert_pem: &str,
    key_pem: &str,
    client_ca: Option<&Ca>,
) -> (std::net::SocketAddr, tokio::task::JoinHandle<Result<(), std::io::Error>>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions().unwrap();
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = RootCertStore::empty();
            roots.add(ca.cert.der().clone()).unwrap();
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap();
            builder.with_client_cert_verifier(verifier)
        }
    };
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let config = builder.with_single_cert(certs(cert_pem), key).unwrap();
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await?;
        let mut tls = acceptor.accept(tcp).await?;
        let mut byte = [0u8; 1];
        tls.read_exact(&mut byte).await?;
        tls.write_all(&byte).await?;
        tls.shutdown().await?;
        Ok(())
    });
    (address, server)
}

/// Connects, handshakes and echoes one byte. Errors are rendered as text.
async fn connect(tls: &TlsConfig, address: std::net::SocketAddr, host: &str) -> Result<(), String> {
    let connector = tls.connector().map_err(|e| e.to_string())?;
    let name = tls.server_name(host).map_err(|e| e.to_string())?;
    let tcp = TcpStream::connect(address).await.map_err(|e| e.to_string())?;
    let mut stream = connector.connect(name, tcp).await.map_err(|e| e.to_string())?;
    // With TLS 1.3 the server's verdict on a client certificate arrives after the
    // client's handshake completes, so exchange a byte to see it.
    stream.write_all(b"k").await.map_err(|e| e.to_string())?;
    let mut byte = [0u8; 1];
    stream.read_exact(&mut byte).await.map_err(|e| e.to_string())?;
    assert_eq!(&byte, b"k");
    Ok(())
}

/// A fresh directory under the system's temporary directory.
fn temp_dir() -> PathBuf {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "klife-tls-test-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::SeqCst)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[tokio::test]
async fn handshake_with_the_right_ca() {
    let ca = Ca::new("test CA");
    let (cert, key) = ca.issue(&["localhost"], ExtendedKeyUsagePurpose::ServerAuth);
    let (address, server) = serve_once(&cert, &key, None).await;
    let tls = TlsConfig::new().with_root_certificates_pem(ca.pem());
    connect(&tls, address, "localhost").await.unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn handshake_with_a_ca_file_and_an_ip_address_name() {
    let ca = Ca::new("test CA");
    let (cert, key) = ca.issue(&["127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth);
    let (address, server) = serve_once(&cert, &key, None).await;
    let dir = temp_dir();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    let tls = TlsConfig::new().with_root_certificates_file(dir.join("ca.pem"));
    connect(&tls, address, "127.0.0.1").await.unwrap();
    server.await.unwrap().unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn handshake_fails_with_a_wrong_ca() {
    let ca = Ca::new("test CA");
    let other = Ca::new("other CA");
    let (cert, key) = ca.issue(&["localhost"], ExtendedKeyUsagePurpose::ServerAuth);
    let (address, server) = serve_once(&cert, &key, None).await;
    let tls = TlsConfig::new().with_root_certificates_pem(other.pem());
    let err = connect(&tls, address, "localhost").await.unwrap_err();
    assert!(err.contains("certificate") && err.contains("UnknownIssuer"), "{err}");
    assert!(server.await.unwrap().is_err());
}

#[tokio::test]
async fn hostname_mismatch_fails_by_default() {
    let ca = Ca::new("test CA");
    let (cert, key) = ca.issue(&["broker.example"], ExtendedKeyUsagePurpose::ServerAuth);
    let (address, server) = serve_once(&cert, &key, None).await;
    let tls = TlsConfig::new().with_root_certificates_pem(ca.pem());
    let err = connect(&tls, address, "localhost").await.unwrap_err();
    assert!(err.contains("not valid for name") && err.contains("broker.example"), "{err}");
    assert!(server.await.unwrap().is_err());
}

#[tokio::test]
async fn hostname_mismatch_accepted_when_verification_is_disabled() {
    let ca = Ca::new("test CA");
    let (cert, key) = ca.issue(&["broker.example"], ExtendedKeyUsagePurpose::ServerAuth);
    let (address, server) = serve_once(&cert, &key, None).await;
    let tls = TlsConfig::new().with_root_certificates_pem(ca.pem()).dangerous_disable_hostname_verification();
    connect(&tls, address, "localhost").await.unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn disabled_hostname_verification_still_verifies_the_chain() {
    let ca = Ca::new("test CA");
    let other = Ca::new("other CA");
    let (cert, key) = other.issue(&["broker.example"], ExtendedKeyUsagePurpose::ServerAuth);
    let (address, server) = serve_once(&cert, &key, None).await;
    let tls = TlsConfig::new().with_root_certificates_pem(ca.pem()).dangerous_disable_hostname_verification();
    let err = connect(&tls, address, "localhost").await.unwrap_err();
    assert!(err.contains("UnknownIssuer"), "{err}");
    assert!(server.await.unwrap().is_err());
}

#[tokio::test]
async fn server_name_override_is_used_for_verification() {
    let ca = Ca::new("test CA");
    let (cert, key) = ca.issue(&["broker.example"], ExtendedKeyUsagePurpose::ServerAuth);
    let (address, server) = serve_once(&cert, &key, None).await;
    let tls = TlsConfig::new().with_root_certificates_pem(ca.pem()).with_server_name("broker.example");
    connect(&tls, address, "127.0.0.1").await.unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn mtls_server_rejects_a_client_without_a_certificate() {
    let ca = Ca::new("test CA");
    let (cert, key) = ca.issue(&["localhost"], ExtendedKeyUsagePurpose::ServerAuth);
    let (address, server) = serve_once(&cert, &key, Some(&ca)).await;
    let tls = TlsConfig::new().with_root_certificates_pem(ca.pem());
    connect(&tls, address, "localhost").await.unwrap_err();
    let server_err = server.await.unwrap().unwrap_err();
    assert!(server_err.to_string().contains("certificate"), "{server_err}");
}

#[tokio::test]
async fn mtls_server_accepts_a_client_certificate_from_files() {
    let ca = Ca::new("test CA");
    let (cert, key) = ca.issue(&["localhost"], ExtendedKeyUsagePurpose::ServerAuth);
    let (client_cert, client_key) = ca.issue(&["client.example"], ExtendedKeyUsagePurpose::ClientAuth);
    let (address, server) = serve_once(&cert, &key, Some(&ca)).await;
    let dir = temp_dir();
    std::fs::write(dir.join("client.pem"), &client_cert).unwrap();
    std::fs::write(dir.join("client.key"), &client_key).unwrap();
    let tls = TlsConfig::new()
        .with_root_certificates_pem(ca.pem())
        .with_client_certificate_files(dir.join("client.pem"), dir.join("client.key"));
    connect(&tls, address, "localhost").await.unwrap();
    server.await.unwrap().unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn mtls_server_accepts_an_inline_client_certificate() {
    let ca = Ca::new("test CA");
    let (cert, key) = ca.issue(&["localhost"], ExtendedKeyUsagePurpose::ServerAuth);
    let (client_cert, client_key) = ca.issue(&["client.example"], ExtendedKeyUsagePurpose::ClientAuth);
    let (address, server) = serve_once(&cert, &key, Some(&ca)).await;
    let tls =
        TlsConfig::new().with_root_certificates_pem(ca.pem()).with_client_certificate_pem(client_cert, client_key);
    connect(&tls, address, "localhost").await.unwrap();
    server.await.unwrap().unwrap();
}

#[test]
fn missing_files_are_named() {
    let dir = temp_dir();
    let missing = dir.join("nope").join("ca.pem");
    let err = TlsConfig::new().with_root_certificates_file(&missing).connector().err().unwrap();
    assert!(matches!(&err, TlsError::ReadFile { path, .. } if path == &missing), "{err}");
    assert!(err.to_string().contains(&missing.display().to_string()), "{err}");
    assert!(err.to_string().contains("CA certificate"), "{err}");

    let ca = Ca::new("test CA");
    let (cert, _) = ca.issue(&["client"], ExtendedKeyUsagePurpose::ClientAuth);
    std::fs::write(dir.join("client.pem"), cert).unwrap();
    let tls = TlsConfig::new().with_root_certificates_pem(ca.pem());
    let missing_key = dir.join("client.key");
    let err =
        tls.clone().with_client_certificate_files(dir.join("client.pem"), &missing_key).connector().err().unwrap();
    assert!(err.to_string().contains(&missing_key.display().to_string()) && err.to_string().contains("private key"));
    let missing_cert = dir.join("missing.pem");
    let err = tls.with_client_certificate_files(&missing_cert, &missing_key).connector().err().unwrap();
    assert!(err.to_string().contains(&missing_cert.display().to_string()), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn pem_without_certificates_or_keys() {
    let err = TlsConfig::new().with_root_certificates_pem("not a certificate").connector().err().unwrap();
    assert!(matches!(err, TlsError::NoCertificates { .. }), "{err}");
    assert!(err.to_string().contains("with_root_certificates_pem"), "{err}");

    let dir = temp_dir();
    std::fs::write(dir.join("empty.pem"), "").unwrap();
    let err = TlsConfig::new().with_root_certificates_file(dir.join("empty.pem")).connector().err().unwrap();
    assert!(matches!(err, TlsError::NoCertificates { .. }), "{err}");
    assert!(err.to_string().contains("empty.pem"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();

    let err = TlsConfig::new()
        .with_root_certificates_pem("-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n")
        .connector()
        .err()
        .unwrap();
    assert!(matches!(err, TlsError::InvalidPem { .. }), "{err}");

    let ca = Ca::new("test CA");
    let (cert, _) = ca.issue(&["client"], ExtendedKeyUsagePurpose::ClientAuth);
    let tls = TlsConfig::new().with_root_certificates_pem(ca.pem());
    let err = tls.clone().with_client_certificate_pem(&cert, &cert).connector().err().unwrap();
    assert!(matches!(err, TlsError::NoPrivateKey { .. }), "{err}");
    let err = tls.with_client_certificate_pem("", ca.key.serialize_pem()).connector().err().unwrap();
    assert!(matches!(err, TlsError::NoCertificates { what: "client certificate", .. }), "{err}");
}

#[test]
fn client_key_must_match_its_certificate() {
    let ca = Ca::new("test CA");
    let (cert, _) = ca.issue(&["client"], ExtendedKeyUsagePurpose::ClientAuth);
    let (_, other_key) = ca.issue(&["other"], ExtendedKeyUsagePurpose::ClientAuth);
    let err = TlsConfig::new()
        .with_root_certificates_pem(ca.pem())
        .with_client_certificate_pem(cert, other_key)
        .connector()
        .err()
        .unwrap();
    assert!(matches!(err, TlsError::ClientCertificate { .. }), "{err}");
}

#[test]
fn debug_never_shows_the_private_key() {
    let ca = Ca::new("test CA");
    let (cert, key) = ca.issue(&["client"], ExtendedKeyUsagePurpose::ClientAuth);
    let tls = TlsConfig::new().with_client_certificate_pem(&cert, &key).with_server_name("kafka.example");
    let debug = format!("{tls:?}");
    let key_body = key.lines().nth(1).unwrap();
    assert!(!debug.contains(key_body), "{debug}");
    assert!(debug.contains("<redacted>") && debug.contains("kafka.example"), "{debug}");

    let tls = TlsConfig::new().with_client_certificate_files("/etc/kafka/client.pem", "/etc/kafka/client.key");
    let debug = format!("{tls:?}");
    assert!(debug.contains("/etc/kafka/client.key") && debug.contains("<system>"), "{debug}");
}

#[test]
fn server_names() {
    let tls = TlsConfig::new();
    assert!(matches!(tls.server_name("broker-1.example.com").unwrap(), ServerName::DnsName(_)));
    assert!(matches!(tls.server_name("10.0.0.1").unwrap(), ServerName::IpAddress(_)));
    assert!(matches!(tls.server_name("::1").unwrap(), ServerName::IpAddress(_)));
    assert!(matches!(tls.server_name("[::1]").unwrap(), ServerName::IpAddress(_)));
    let err = tls.server_name("").unwrap_err();
    assert!(matches!(err, TlsError::InvalidServerName { .. }), "{err}");
    let err = tls.server_name("bad name!").unwrap_err();
    assert!(err.to_string().contains("bad name!"), "{err}");

    let tls = TlsConfig::new().with_server_name("kafka.example");
    assert_eq!(tls.server_name("10.0.0.1").unwrap().to_str(), "kafka.example");
}

#[test]
fn system_roots_load_or_explain() {
    match TlsConfig::new().connector() {
        Ok(_) => {}
        Err(err @ TlsError::NoSystemRoots { .. }) => assert!(err.to_string().contains("SSL_CERT_FILE"), "{err}"),
        Err(other) => panic!("unexpected error: {other}"),
    }
}
