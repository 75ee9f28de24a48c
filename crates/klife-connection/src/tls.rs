//! Client TLS configuration: trusted roots, client certificates (mTLS) and server names.
//!
//! [`TlsConfig`] only records where things come from; files are read and PEM is
//! parsed when [`TlsConfig::connector`] builds the rustls connector, so every problem
//! surfaces there as a [`TlsError`] that names the file or setting at fault.
//!
//! ```no_run
//! use klife_connection::tls::TlsConfig;
//!
//! # fn demo() -> Result<(), klife_connection::tls::TlsError> {
//! let tls = TlsConfig::new()
//!     .with_root_certificates_file("/etc/kafka/ca.pem")
//!     .with_client_certificate_files("/etc/kafka/client.pem", "/etc/kafka/client.key");
//! let connector = tls.connector()?;
//! let server_name = tls.server_name("broker-1.example.com")?;
//! # let _ = (connector, server_name);
//! # Ok(())
//! # }
//! ```
//!
//! The crypto provider is rustls's `ring` provider, set on each configuration rather
//! than taken from a process-wide default.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use crate::sasl::wipe;

#[cfg(test)]
mod tests;

/// Where PEM data comes from.
#[derive(Clone)]
enum PemSource {
    /// Given in memory.
    Inline(Arc<PemBytes>),
    /// Read from a file when the connector is built.
    File(PathBuf),
}

/// PEM bytes held in memory; wiped when dropped, since they may hold a private key.
struct PemBytes(Vec<u8>);

impl Drop for PemBytes {
    fn drop(&mut self) {
        wipe(std::mem::take(&mut self.0));
    }
}

impl PemSource {
    fn inline(pem: impl AsRef<[u8]>) -> Self {
        PemSource::Inline(Arc::new(PemBytes(pem.as_ref().to_vec())))
    }

    /// Describes the source for error messages, naming the builder method for inline data.
    fn location(&self, method: &str) -> String {
        match self {
            PemSource::Inline(_) => format!("the PEM given to TlsConfig::{method}"),
            PemSource::File(path) => format!("file {}", path.display()),
        }
    }

    /// The PEM bytes, reading the file if there is one.
    fn load(&self, what: &'static str) -> Result<LoadedPem, TlsError> {
        match self {
            PemSource::Inline(bytes) => Ok(LoadedPem::Shared(bytes.clone())),
            PemSource::File(path) => std::fs::read(path)
                .map(|bytes| LoadedPem::Owned(PemBytes(bytes)))
                .map_err(|source| TlsError::ReadFile { what, path: path.clone(), source }),
        }
    }
}

/// PEM bytes ready to parse.
enum LoadedPem {
    Shared(Arc<PemBytes>),
    Owned(PemBytes),
}

impl LoadedPem {
    fn bytes(&self) -> &[u8] {
        match self {
            LoadedPem::Shared(bytes) => &bytes.0,
            LoadedPem::Owned(bytes) => &bytes.0,
        }
    }
}

/// Client TLS settings for the connections to the brokers.
///
/// Cheap to clone. `Debug` shows where certificates come from but never a private key.
#[derive(Clone)]
pub struct TlsConfig {
    /// `None`: the system's roots.
    roots: Option<PemSource>,
    /// Certificate chain and private key for mTLS.
    client_certificate: Option<(PemSource, PemSource)>,
    server_name: Option<String>,
    verify_hostname: bool,
}

impl TlsConfig {
    /// Trusts the operating system's root certificates (through `rustls-native-certs`),
    /// verifies host names, and sends no client certificate.
    ///
    /// If no system root can be loaded, [`TlsConfig::connector`] fails with
    /// [`TlsError::NoSystemRoots`].
    pub fn new() -> Self {
        TlsConfig { roots: None, client_certificate: None, server_name: None, verify_hostname: true }
    }

    /// Trusts exactly the CA certificates in `pem` (one or more `CERTIFICATE` sections)
    /// instead of the system's roots.
    pub fn with_root_certificates_pem(mut self, pem: impl AsRef<[u8]>) -> Self {
        self.roots = Some(PemSource::inline(pem));
        self
    }

    /// Trusts exactly the CA certificates in the PEM file at `path` instead of the
    /// system's roots. The file is read by [`TlsConfig::connector`].
    pub fn with_root_certificates_file(mut self, path: impl AsRef<Path>) -> Self {
        self.roots = Some(PemSource::File(path.as_ref().to_owned()));
        self
    }

    /// Presents a client certificate (mutual TLS): `cert_chain_pem` holds the
    /// certificate first, then any intermediates; `private_key_pem` holds its key as
    /// PKCS#8 (`PRIVATE KEY`), PKCS#1 (`RSA PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`).
    pub fn with_client_certificate_pem(
        mut self,
        cert_chain_pem: impl AsRef<[u8]>,
        private_key_pem: impl AsRef<[u8]>,
    ) -> Self {
        self.client_certificate = Some((PemSource::inline(cert_chain_pem), PemSource::inline(private_key_pem)));
        self
    }

    /// Presents a client certificate (mutual TLS) read from PEM files, as
    /// [`TlsConfig::with_client_certificate_pem`]. The files are read by
    /// [`TlsConfig::connector`].
    pub fn with_client_certificate_files(mut self, cert_path: impl AsRef<Path>, key_path: impl AsRef<Path>) -> Self {
        self.client_certificate =
            Some((PemSource::File(cert_path.as_ref().to_owned()), PemSource::File(key_path.as_ref().to_owned())));
        self
    }

    /// Uses `name` for SNI and certificate verification with every broker, instead of
    /// the host name each broker advertises. Useful when brokers are reached through
    /// addresses their certificates do not name (a load balancer, a tunnel).
    pub fn with_server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// **Dangerous**: accepts broker certificates whose names do not match the host
    /// connected to.
    ///
    /// The certificate chain is still verified against the trusted roots, and the
    /// handshake signatures are still checked; only the name check is skipped. Anyone
    /// holding any certificate from those roots can then impersonate any broker. A
    /// warning is logged each time a connector is built with this setting. Prefer
    /// [`TlsConfig::with_server_name`] when the brokers share a known name.
    pub fn dangerous_disable_hostname_verification(mut self) -> Self {
        self.verify_hostname = false;
        self
    }

    /// Builds the rustls connector: reads the files, parses the PEM, loads the system
    /// roots if no CA was given, and checks the client key against its certificate.
    ///
    /// Each call does this work again; build the connector once and share it.
    pub fn connector(&self) -> Result<tokio_rustls::TlsConnector, TlsError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = Arc::new(self.root_store()?);
        let verifier = WebPkiServerVerifier::builder_with_provider(roots, provider.clone())
            .build()
            .map_err(|e| TlsError::Config { reason: e.to_string() })?;
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| TlsError::Config { reason: e.to_string() })?;
        let builder = if self.verify_hostname {
            builder.with_webpki_verifier(verifier)
        } else {
            tracing::warn!(
                "TLS host name verification is disabled: any certificate issued by the trusted roots is accepted \
                 for every broker"
            );
            builder.dangerous().with_custom_certificate_verifier(Arc::new(IgnoreHostnameVerifier { inner: verifier }))
        };
        let config = match &self.client_certificate {
            None => builder.with_no_client_auth(),
            Some((chain_source, key_source)) => {
                let chain = load_certificates(chain_source, "client certificate", "with_client_certificate_pem")?;
                let key = load_private_key(key_source)?;
                builder.with_client_auth_cert(chain, key).map_err(|e| TlsError::ClientCertificate {
                    location: key_source.location("with_client_certificate_pem"),
                    reason: e.to_string(),
                })?
            }
        };
        Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
    }

    /// The name to send as SNI and to verify the certificate against when connecting
    /// to `host`: the name set with [`TlsConfig::with_server_name`], or `host` itself.
    /// IP addresses (`10.0.0.1`, `::1`, `[::1]`) become IP address names, which are
    /// checked against the certificate's IP address entries.
    pub fn server_name(&self, host: &str) -> Result<ServerName<'static>, TlsError> {
        let name = self.server_name.as_deref().unwrap_or(host);
        let bare = name.strip_prefix('[').and_then(|n| n.strip_suffix(']')).unwrap_or(name);
        ServerName::try_from(bare.to_owned())
            .map_err(|e| TlsError::InvalidServerName { name: name.to_owned(), reason: e.to_string() })
    }

    fn root_store(&self) -> Result<RootCertStore, TlsError> {
        let mut store = RootCertStore::empty();
        match &self.roots {
            Some(source) => {
                let location = || source.location("with_root_certificates_pem");
                for certificate in load_certificates(source, "CA certificate", "with_root_certificates_pem")? {
                    store.add(certificate).map_err(|e| TlsError::InvalidRootCertificate {
                        location: location(),
                        reason: e.to_string(),
                    })?;
                }
            }
            None => {
                let found = rustls_native_certs::load_native_certs();
                let errors: Vec<String> = found.errors.iter().map(ToString::to_string).collect();
                let (added, ignored) = store.add_parsable_certificates(found.certs);
                if added == 0 {
                    return Err(TlsError::NoSystemRoots { details: errors.join("; ") });
                }
                if !errors.is_empty() || ignored > 0 {
                    tracing::debug!(added, ignored, errors = %errors.join("; "), "some system root certificates were not loaded");
                }
            }
        }
        Ok(store)
    }
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig::new()
    }
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("TlsConfig");
        match &self.roots {
            None => debug.field("roots", &format_args!("<system>")),
            Some(source) => debug.field("roots", &DebugSource { source, secret: false }),
        };
        if let Some((chain, key)) = &self.client_certificate {
            debug
                .field("client_certificate", &DebugSource { source: chain, secret: false })
                .field("client_key", &DebugSource { source: key, secret: true });
        }
        debug.field("server_name", &self.server_name).field("verify_hostname", &self.verify_hostname).finish()
    }
}

/// Shows a file's path, or only the size of inline PEM (nothing for a secret).
struct DebugSource<'a> {
    source: &'a PemSource,
    secret: bool,
}

impl fmt::Debug for DebugSource<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.source {
            PemSource::File(path) => write!(f, "{path:?}"),
            PemSource::Inline(_) if self.secret => f.write_str("<redacted>"),
            PemSource::Inline(bytes) => write!(f, "<inline PEM, {} bytes>", bytes.0.len()),
        }
    }
}

/// Parses every `CERTIFICATE` section of `source`; at least one is required.
fn load_certificates(
    source: &PemSource,
    what: &'static str,
    method: &str,
) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = source.load(what)?;
    let certificates = CertificateDer::pem_slice_iter(pem.bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::InvalidPem { what, location: source.location(method), reason: e.to_string() })?;
    if certificates.is_empty() {
        return Err(TlsError::NoCertificates { what, location: source.location(method) });
    }
    Ok(certificates)
}

/// Parses the first private key section of `source`.
fn load_private_key(source: &PemSource) -> Result<PrivateKeyDer<'static>, TlsError> {
    let what = "client private key";
    let location = || source.location("with_client_certificate_pem");
    let pem = source.load(what)?;
    PrivateKeyDer::from_pem_slice(pem.bytes()).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => TlsError::NoPrivateKey { location: location() },
        e => TlsError::InvalidPem { what, location: location(), reason: e.to_string() },
    })
}

/// Verifies the chain with webpki but accepts a certificate that does not name the
/// server. webpki checks the name last, after the chain, validity and revocation, so
/// a name error means everything else passed.
#[derive(Debug)]
struct IgnoreHostnameVerifier {
    inner: Arc<WebPkiServerVerifier>,
}

impl ServerCertVerifier for IgnoreHostnameVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => {
                tracing::debug!(server_name = %server_name.to_str(), "accepting a certificate not valid for the server name");
                Ok(ServerCertVerified::assertion())
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Why a TLS configuration cannot be used.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A configured file could not be read.
    #[error("cannot read the {what} file {}: {source}", path.display())]
    ReadFile {
        /// What the file should hold.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// PEM data is malformed.
    #[error("the {what} PEM in {location} is malformed: {reason}")]
    InvalidPem {
        /// What the PEM should hold.
        what: &'static str,
        /// The file or builder method it came from.
        location: String,
        /// The parser's complaint.
        reason: String,
    },
    /// PEM data holds no `CERTIFICATE` section.
    #[error("no PEM certificates (-----BEGIN CERTIFICATE-----) in {location}, which should hold the {what}")]
    NoCertificates {
        /// What the PEM should hold.
        what: &'static str,
        /// The file or builder method it came from.
        location: String,
    },
    /// PEM data holds no private key.
    #[error(
        "no PEM private key in {location}: expected a PRIVATE KEY (PKCS#8), RSA PRIVATE KEY (PKCS#1) or \
         EC PRIVATE KEY (SEC1) section; encrypted keys are not supported"
    )]
    NoPrivateKey {
        /// The file or builder method it came from.
        location: String,
    },
    /// A configured CA certificate cannot be used as a trust anchor.
    #[error("a CA certificate in {location} cannot be used as a trust anchor: {reason}")]
    InvalidRootCertificate {
        /// The file or builder method it came from.
        location: String,
        /// Why it was rejected.
        reason: String,
    },
    /// No CA was configured and no system root certificate could be loaded.
    #[error(
        "no system root certificates could be loaded{}; install the operating system's CA certificates \
         (for example the ca-certificates package), point SSL_CERT_FILE at a CA bundle, or give the CA with \
         TlsConfig::with_root_certificates_file",
        if details.is_empty() { String::new() } else { format!(" ({details})") }
    )]
    NoSystemRoots {
        /// The loader's errors, if any.
        details: String,
    },
    /// The client certificate and key cannot be used together.
    #[error(
        "the client certificate and private key ({location}) cannot be used: {reason}; check that the key \
         belongs to the first certificate of the chain"
    )]
    ClientCertificate {
        /// Where the key came from.
        location: String,
        /// rustls's complaint.
        reason: String,
    },
    /// A broker host or configured server name is not a valid TLS server name.
    #[error("{name:?} is not a valid TLS server name (a DNS name or an IP address): {reason}")]
    InvalidServerName {
        /// The name.
        name: String,
        /// Why it is invalid.
        reason: String,
    },
    /// rustls rejected the configuration.
    #[error("invalid TLS configuration: {reason}")]
    Config {
        /// rustls's complaint.
        reason: String,
    },
}
