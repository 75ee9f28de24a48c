//! Connection settings shared by every broker connection of a client.

use std::time::Duration;

use crate::sasl::SaslConfig;
#[cfg(feature = "tls")]
use crate::tls::TlsConfig;

/// Settings for connections to brokers.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnectionConfig {
    /// The client id sent in every request header (default `klife`).
    pub client_id: Option<String>,
    /// How long a TCP connect plus the TLS, ApiVersions and SASL handshakes may take
    /// (default 10 s).
    pub connect_timeout: Duration,
    /// How long a request may wait for its answer before it fails and the connection
    /// is closed (default 30 s).
    pub request_timeout: Duration,
    /// Requests in flight per connection (default 5).
    pub max_in_flight: usize,
    /// Connections per broker; requests are spread over them round-robin (default 1).
    pub connection_count: usize,
    /// First delay before reconnecting to a broker (default 50 ms); doubles per
    /// failure, with jitter.
    pub reconnect_backoff: Duration,
    /// Longest delay before reconnecting (default 1 s).
    pub reconnect_backoff_max: Duration,
    /// Largest response frame accepted (default 100 MiB).
    pub max_frame_size: usize,
    /// Metadata is refreshed at least this often (default 5 min).
    pub metadata_max_age: Duration,
    /// Let metadata requests create missing topics, where the broker allows it
    /// (default `false`).
    pub allow_auto_topic_creation: bool,
    /// TLS, if brokers are reached over TLS.
    #[cfg(feature = "tls")]
    pub tls: Option<TlsConfig>,
    /// SASL authentication, if brokers require it.
    pub sasl: Option<SaslConfig>,
}

impl Default for ConnectionConfig {
    fn default() -> Self {
        ConnectionConfig {
            client_id: Some("klife".to_owned()),
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_in_flight: 5,
            connection_count: 1,
            reconnect_backoff: Duration::from_millis(50),
            reconnect_backoff_max: Duration::from_secs(1),
            max_frame_size: klife_protocol::frame::DEFAULT_MAX_FRAME_SIZE,
            metadata_max_age: Duration::from_secs(300),
            allow_auto_topic_creation: false,
            #[cfg(feature = "tls")]
            tls: None,
            sasl: None,
        }
    }
}

impl ConnectionConfig {
    /// Checks the values make sense, naming the first one that does not.
    pub fn validate(&self) -> Result<(), crate::Error> {
        let bad = |what: &str| Err(crate::Error::Config(what.to_owned()));
        if self.max_in_flight == 0 {
            return bad("max_in_flight must be at least 1");
        }
        if self.connection_count == 0 {
            return bad("connection_count must be at least 1");
        }
        if self.request_timeout.is_zero() {
            return bad("request_timeout must be above zero");
        }
        if self.connect_timeout.is_zero() {
            return bad("connect_timeout must be above zero");
        }
        if self.max_frame_size < 1024 {
            return bad("max_frame_size must be at least 1024 bytes");
        }
        Ok(())
    }
}
