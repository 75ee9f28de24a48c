//! The `Client` and its builder.

use std::time::Duration;

use klife_connection::{Cluster, ConnectionConfig};

use crate::Error;

/// A connection to a Kafka cluster, cheap to clone (clones share connections).
///
/// Build one with [`Client::builder`]. Admin operations are methods on the client;
/// producing and consuming come in later releases of this crate.
#[derive(Clone, Debug)]
pub struct Client {
    pub(crate) cluster: Cluster,
}

/// Builds a [`Client`].
#[derive(Debug, Clone, Default)]
pub struct ClientBuilder {
    bootstrap: Vec<String>,
    config: ConnectionConfig,
}

impl Client {
    /// A builder with default settings and no bootstrap servers yet.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// The cluster view underneath: metadata, connections by broker, coordinators.
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Closes every connection; later calls fail with an error for which
    /// [`Error::is_closed`] is true.
    pub async fn close(&self) {
        self.cluster.close().await;
    }
}

impl ClientBuilder {
    /// The `host:port` addresses to bootstrap from (any subset of the brokers).
    #[must_use]
    pub fn bootstrap_servers<I, S>(mut self, servers: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.bootstrap = servers.into_iter().map(Into::into).collect();
        self
    }

    /// The client id sent with every request (default `klife`).
    #[must_use]
    pub fn client_id(mut self, id: impl Into<String>) -> Self {
        self.config.client_id = Some(id.into());
        self
    }

    /// Time allowed for connecting and the connection handshakes (default 10 s).
    #[must_use]
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// Time a request may wait for its answer (default 30 s).
    #[must_use]
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.config.request_timeout = timeout;
        self
    }

    /// Requests in flight per connection (default 5).
    #[must_use]
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.config.max_in_flight = n;
        self
    }

    /// Connections per broker (default 1).
    #[must_use]
    pub fn connection_count(mut self, n: usize) -> Self {
        self.config.connection_count = n;
        self
    }

    /// Reconnect backoff: first delay and cap (defaults 50 ms and 1 s).
    #[must_use]
    pub fn reconnect_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.config.reconnect_backoff = initial;
        self.config.reconnect_backoff_max = max;
        self
    }

    /// How often metadata is refreshed at the latest (default 5 min).
    #[must_use]
    pub fn metadata_max_age(mut self, age: Duration) -> Self {
        self.config.metadata_max_age = age;
        self
    }

    /// Whether metadata lookups may create missing topics where the broker allows it
    /// (default `false`).
    #[must_use]
    pub fn allow_auto_topic_creation(mut self, allow: bool) -> Self {
        self.config.allow_auto_topic_creation = allow;
        self
    }

    /// Connects over TLS.
    #[cfg(feature = "tls")]
    #[must_use]
    pub fn tls(mut self, tls: crate::TlsConfig) -> Self {
        self.config.tls = Some(tls);
        self
    }

    /// Authenticates with SASL.
    #[must_use]
    pub fn sasl(mut self, sasl: crate::SaslConfig) -> Self {
        self.config.sasl = Some(sasl);
        self
    }

    /// Replaces every connection setting at once.
    #[must_use]
    pub fn connection_config(mut self, config: ConnectionConfig) -> Self {
        self.config = config;
        self
    }

    /// Connects: bootstraps from the first address that answers, and fetches the
    /// cluster metadata.
    pub async fn build(self) -> Result<Client, Error> {
        if self.bootstrap.is_empty() {
            return Err(Error::invalid_argument("no bootstrap servers: call bootstrap_servers([\"host:port\"])"));
        }
        let cluster = Cluster::connect(&self.bootstrap, self.config).await?;
        Ok(Client { cluster })
    }
}
