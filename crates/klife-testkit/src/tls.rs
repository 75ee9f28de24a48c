//! TLS for the listeners: a certificate and key to serve, and test certificates made
//! on the spot (a CA and a server certificate it signed) for clients to trust.

use std::sync::Arc;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::Error;

/// The certificate chain and private key a TLS listener presents.
#[derive(Debug)]
pub struct TlsIdentity {
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

impl Clone for TlsIdentity {
    fn clone(&self) -> Self {
        TlsIdentity { certs: self.certs.clone(), key: self.key.clone_key() }
    }
}

impl TlsIdentity {
    /// Reads a PEM certificate chain (server certificate first) and a PEM private key
    /// (PKCS#8, PKCS#1 or SEC1).
    pub fn from_pem(cert_chain_pem: &str, key_pem: &str) -> Result<TlsIdentity, Error> {
        let certs = CertificateDer::pem_slice_iter(cert_chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| Error::Tls(format!("cannot read the certificate chain: {e}")))?;
        if certs.is_empty() {
            return Err(Error::Tls("the certificate chain holds no certificate".into()));
        }
        let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
            .map_err(|e| Error::Tls(format!("cannot read the private key: {e}")))?;
        Ok(TlsIdentity { certs, key })
    }

    pub(crate) fn acceptor(&self) -> Result<TlsAcceptor, Error> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Tls(e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(self.certs.clone(), self.key.clone_key())
            .map_err(|e| Error::Tls(format!("the certificate and key do not make a server identity: {e}")))?;
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

/// A throwaway certificate authority and a server certificate it issued, for tests:
/// serve [`identity`](Self::identity) from the cluster and give clients
/// [`ca_pem`](Self::ca_pem) as their root certificate.
#[derive(Debug, Clone)]
pub struct TestCertificates {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

impl TestCertificates {
    /// A CA and a server certificate for `localhost` and `127.0.0.1` (the addresses the
    /// fake cluster advertises).
    pub fn localhost() -> Result<TestCertificates, Error> {
        TestCertificates::for_names(&["localhost", "127.0.0.1"])
    }

    /// A CA and a server certificate whose subject alternative names are `names`
    /// (DNS names or IP addresses).
    pub fn for_names(names: &[&str]) -> Result<TestCertificates, Error> {
        let tls = |e: rcgen::Error| Error::Tls(format!("cannot generate test certificates: {e}"));
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).map_err(tls)?;
        ca_params.distinguished_name.push(DnType::CommonName, "klife-testkit CA");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca_key = KeyPair::generate().map_err(tls)?;
        let ca = ca_params.self_signed(&ca_key).map_err(tls)?;
        let mut params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).map_err(tls)?;
        params.distinguished_name.push(DnType::CommonName, names.first().copied().unwrap_or("klife-testkit"));
        let key = KeyPair::generate().map_err(tls)?;
        let cert = params.signed_by(&key, &ca, &ca_key).map_err(tls)?;
        Ok(TestCertificates { ca_pem: ca.pem(), cert_pem: cert.pem(), key_pem: key.serialize_pem() })
    }

    /// The CA certificate (PEM) that clients should trust.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// The server certificate (PEM).
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The server's private key (PEM, PKCS#8).
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The server certificate and key as a listener identity.
    pub fn identity(&self) -> Result<TlsIdentity, Error> {
        TlsIdentity::from_pem(&self.cert_pem, &self.key_pem)
    }
}
