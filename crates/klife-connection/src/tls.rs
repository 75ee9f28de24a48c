//! stub
#![allow(missing_docs)]
#[derive(Clone, Debug)]
pub struct TlsConfig;
#[derive(Debug)]
pub struct TlsError;
impl std::fmt::Display for TlsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("x")
    }
}
impl TlsConfig {
    pub fn connector(&self) -> Result<tokio_rustls::TlsConnector, TlsError> {
        Err(TlsError)
    }
    pub fn server_name(&self, _h: &str) -> Result<rustls_pki_types::ServerName<'static>, TlsError> {
        Err(TlsError)
    }
}
