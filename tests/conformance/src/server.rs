//! A scripted Kafka peer for TLS and SASL cases, which neither third-party broker
//! here supports. The security is not klife's own code: TLS is rustls's server side,
//! SASL is the `sasl` crate's server mechanisms (PLAIN, SCRAM-SHA-256). The peer
//! answers ApiVersions, SaslHandshake, SaslAuthenticate and Metadata (itself as the
//! only broker); other requests are refused by closing the connection.

use std::sync::Arc;

use bytes::BytesMut;
use klife_protocol::frame;
use klife_protocol::messages::RequestHeader;
use klife_protocol::messages::api_versions_response::ApiVersion;
use klife_protocol::messages::metadata_response::MetadataResponseBroker;
use klife_protocol::messages::{
    ApiVersionsResponse, MetadataResponse, SaslAuthenticateResponse, SaslHandshakeResponse,
};
use klife_protocol::{AnyRequest, AnyResponse, ApiKey, ErrorCode};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use sasl::common::scram::Sha256;
use sasl::common::{ChannelBinding, Identity};
use sasl::server::mechanisms::{Plain, Scram};
use sasl::server::{Mechanism, Provider, ProviderError, Response, Validator, ValidatorError};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

/// A certificate authority for tests.
pub struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
}

impl TestCa {
    /// A new CA named `name`.
    pub fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        TestCa { cert, key }
    }

    /// The CA certificate, PEM.
    pub fn pem(&self) -> String {
        self.cert.pem()
    }

    /// A server certificate for `names`: (certificate PEM, key PEM).
    pub fn issue(&self, names: &[&str]) -> (String, String) {
        let mut params = CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, names.first().copied().unwrap_or("server"));
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

/// SASL settings of the scripted peer: one user, these mechanisms.
#[derive(Clone, Debug)]
pub struct SaslUsers {
    /// The user name.
    pub user: String,
    /// The password.
    pub password: String,
    /// Mechanisms offered (`PLAIN`, `SCRAM-SHA-256`).
    pub mechanisms: Vec<&'static str>,
}

impl Provider<sasl::secret::Pbkdf2Sha256> for SaslUsers {
    fn provide(&self, identity: &Identity) -> Result<sasl::secret::Pbkdf2Sha256, ProviderError> {
        if identity != &Identity::Username(self.user.clone()) {
            return Err(ProviderError::AuthenticationFailed);
        }
        Ok(sasl::secret::Pbkdf2Sha256::derive(&self.password, b"scripted-salt-01", 4096)?)
    }
}

sasl::impl_validator_using_provider!(SaslUsers, sasl::secret::Pbkdf2Sha256);

impl Validator<sasl::secret::Plain> for SaslUsers {
    fn validate(&self, identity: &Identity, value: &sasl::secret::Plain) -> Result<(), ValidatorError> {
        if identity == &Identity::Username(self.user.clone()) && value.0 == self.password {
            Ok(())
        } else {
            Err(ValidatorError::AuthenticationFailed)
        }
    }
}

/// A running scripted peer.
pub struct ScriptedBroker {
    /// `127.0.0.1:port`.
    pub address: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ScriptedBroker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ScriptedBroker {
    /// Starts the peer; `tls` is (certificate PEM, key PEM).
    pub async fn start(tls: Option<(String, String)>, sasl: Option<SaslUsers>) -> ScriptedBroker {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let acceptor = tls.map(|(cert, key)| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let certs: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(cert.as_bytes()).collect::<Result<_, _>>().unwrap();
            let key = PrivateKeyDer::from_pem_slice(key.as_bytes()).unwrap();
            let config = ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .unwrap();
            tokio_rustls::TlsAcceptor::from(Arc::new(config))
        });
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else { return };
                let acceptor = acceptor.clone();
                let sasl = sasl.clone();
                tokio::spawn(async move {
                    match acceptor {
                        Some(a) => {
                            if let Ok(tls) = a.accept(tcp).await {
                                serve(tls, port, sasl).await;
                            }
                        }
                        None => serve(tcp, port, sasl).await,
                    }
                });
            }
        });
        ScriptedBroker { address: format!("127.0.0.1:{port}"), task }
    }
}

async fn serve<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, port: u16, sasl: Option<SaslUsers>) {
    let mut mechanism: Option<Box<dyn Mechanism + Send>> = None;
    let mut authenticated = sasl.is_none();
    loop {
        let Some((header, request)) = read_request(&mut s).await else { return };
        let response: AnyResponse = match request {
            AnyRequest::ApiVersions(_) => api_versions(&[
                (ApiKey::ApiVersions, 0, 3),
                (ApiKey::SaslHandshake, 0, 1),
                (ApiKey::SaslAuthenticate, 0, 2),
                (ApiKey::Metadata, 0, 12),
            ]),
            AnyRequest::SaslHandshake(h) => {
                let offered: Vec<String> =
                    sasl.iter().flat_map(|u| u.mechanisms.iter().map(|m| (*m).to_owned())).collect();
                let users = sasl.clone();
                mechanism = match (h.mechanism.as_str(), users) {
                    ("PLAIN", Some(u)) if u.mechanisms.contains(&"PLAIN") => Some(Box::new(Plain::new(u))),
                    ("SCRAM-SHA-256", Some(u)) if u.mechanisms.contains(&"SCRAM-SHA-256") => {
                        Some(Box::new(Scram::<Sha256, _>::new(u, ChannelBinding::TlsUnique(Vec::new()))))
                    }
                    _ => None,
                };
                let code = if mechanism.is_some() { ErrorCode::None } else { ErrorCode::UnsupportedSaslMechanism };
                SaslHandshakeResponse::default().with_error_code(code.code()).with_mechanisms(offered).into()
            }
            AnyRequest::SaslAuthenticate(a) => {
                let Some(m) = mechanism.as_mut() else { return };
                match m.respond(&a.auth_bytes) {
                    Ok(Response::Proceed(challenge)) => {
                        SaslAuthenticateResponse::default().with_auth_bytes(challenge.into()).into()
                    }
                    Ok(Response::Success(_, last)) => {
                        authenticated = true;
                        SaslAuthenticateResponse::default().with_auth_bytes(last.into()).into()
                    }
                    Err(e) => SaslAuthenticateResponse::default()
                        .with_error_code(ErrorCode::SaslAuthenticationFailed.code())
                        .with_error_message(Some(format!("authentication failed: {e:?}")))
                        .into(),
                }
            }
            AnyRequest::Metadata(_) if authenticated => single_broker_metadata(port).into(),
            // Unauthenticated requests, or ones this peer does not script: the broker
            // closes the connection, as Kafka does.
            _ => return,
        };
        if !write_response(&mut s, &header, &response).await {
            return;
        }
    }
}

/// Reads and decodes one request frame; `None` when the peer closed the connection or
/// sent something undecodable (the scripted peers then close it, as Kafka does).
pub(crate) async fn read_request<S: AsyncRead + Unpin>(s: &mut S) -> Option<(RequestHeader, AnyRequest)> {
    let size = usize::try_from(s.read_i32().await.ok()?).ok()?;
    let mut body = vec![0u8; size];
    s.read_exact(&mut body).await.ok()?;
    frame::decode_request(body.into()).ok()
}

/// Writes the answer to `header`'s request; `false` when the connection broke.
pub(crate) async fn write_response<S: AsyncWrite + Unpin>(
    s: &mut S,
    header: &RequestHeader,
    response: &AnyResponse,
) -> bool {
    let mut out = BytesMut::new();
    frame::encode_any_response(&mut out, header.correlation_id, header.request_api_version, response).unwrap();
    s.write_all(&out).await.is_ok() && s.flush().await.is_ok()
}

/// A Metadata answer naming the scripted peer as the only broker (node 1, also the
/// controller), with no topics.
pub(crate) fn single_broker_metadata(port: u16) -> MetadataResponse {
    MetadataResponse::default().with_cluster_id(Some("scripted".into())).with_controller_id(1).with_brokers(vec![
        MetadataResponseBroker::default().with_node_id(1).with_host("127.0.0.1".into()).with_port(i32::from(port)),
    ])
}

/// An ApiVersions answer listing `(api, min, max)`.
pub(crate) fn api_versions(apis: &[(ApiKey, i16, i16)]) -> AnyResponse {
    ApiVersionsResponse::default()
        .with_api_keys(
            apis.iter()
                .map(|&(k, min, max)| {
                    ApiVersion::default().with_api_key(k.code()).with_min_version(min).with_max_version(max)
                })
                .collect(),
        )
        .into()
}
