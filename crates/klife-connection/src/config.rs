//! Connection settings shared by every broker connection of a client.

use std::time::Duration;

use crate::sasl::SaslConfig;
#[cfg(feature = "tls")]
use crate::tls::TlsConfig;

/// Writes the chained setters of a configuration struct, one per field:
/// `with_field(value)` sets `field` and returns the struct, documented as
/// "Sets [`field`](Self::field).". The configuration types of every klife crate use it,
/// so that their setters read and behave alike.
#[doc(hidden)]
#[macro_export]
macro_rules! with_setters {
    ($config:ty { $($setter:ident => $field:ident: $value:ty),* $(,)? }) => {
        impl $config {
            $(
                #[doc = concat!("Sets [`", stringify!($field), "`](Self::", stringify!($field), ").")]
                #[must_use]
                pub fn $setter(mut self, $field: $value) -> Self {
                    self.$field = $field;
                    self
                }
            )*
        }
    };
}

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
    /// How long a call retried by the retry rule ([`Cluster::call`](crate::Cluster::call))
    /// may go on: no attempt starts later than this after the first (default 30 s).
    pub retry_timeout: Duration,
    /// First delay before a retried call is sent again (default 100 ms); doubles per
    /// attempt, with jitter.
    pub retry_backoff: Duration,
    /// Longest delay before a retried call is sent again (default 1 s).
    pub retry_backoff_max: Duration,
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
            retry_timeout: Duration::from_secs(30),
            retry_backoff: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(1),
            max_frame_size: klife_protocol::frame::DEFAULT_MAX_FRAME_SIZE,
            metadata_max_age: Duration::from_secs(300),
            allow_auto_topic_creation: false,
            #[cfg(feature = "tls")]
            tls: None,
            sasl: None,
        }
    }
}

/// Chained setters: `ConnectionConfig::default().with_x(..).with_y(..)`, one per field.
impl ConnectionConfig {
    /// Sets [`client_id`](Self::client_id).
    #[must_use]
    pub fn with_client_id(mut self, client_id: impl Into<String>) -> Self {
        self.client_id = Some(client_id.into());
        self
    }

    #[cfg(feature = "tls")]
    /// Sets [`tls`](Self::tls).
    #[must_use]
    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Sets [`sasl`](Self::sasl).
    #[must_use]
    pub fn with_sasl(mut self, sasl: SaslConfig) -> Self {
        self.sasl = Some(sasl);
        self
    }
}

crate::with_setters! {
    ConnectionConfig {
        with_connect_timeout => connect_timeout: Duration,
        with_request_timeout => request_timeout: Duration,
        with_max_in_flight => max_in_flight: usize,
        with_connection_count => connection_count: usize,
        with_reconnect_backoff => reconnect_backoff: Duration,
        with_reconnect_backoff_max => reconnect_backoff_max: Duration,
        with_retry_timeout => retry_timeout: Duration,
        with_retry_backoff => retry_backoff: Duration,
        with_retry_backoff_max => retry_backoff_max: Duration,
        with_max_frame_size => max_frame_size: usize,
        with_metadata_max_age => metadata_max_age: Duration,
        with_allow_auto_topic_creation => allow_auto_topic_creation: bool,
    }
}

impl ConnectionConfig {
    /// Checks the values make sense, naming the first one that does not.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, problem| Err(ConfigError::new("ConnectionConfig", field, problem));
        if self.max_in_flight == 0 {
            return bad("max_in_flight", ConfigProblem::Zero);
        }
        if self.connection_count == 0 {
            return bad("connection_count", ConfigProblem::Zero);
        }
        if self.request_timeout.is_zero() {
            return bad("request_timeout", ConfigProblem::Zero);
        }
        if self.connect_timeout.is_zero() {
            return bad("connect_timeout", ConfigProblem::Zero);
        }
        if self.retry_timeout.is_zero() {
            return bad("retry_timeout", ConfigProblem::Zero);
        }
        if self.max_frame_size < MIN_FRAME_SIZE {
            return bad(
                "max_frame_size",
                ConfigProblem::BelowMinimum { min: MIN_FRAME_SIZE as u64, value: self.max_frame_size as u64 },
            );
        }
        Ok(())
    }
}

/// The smallest `max_frame_size` accepted.
const MIN_FRAME_SIZE: usize = 1024;

/// An invalid setting: which settings struct, which of its fields, and what is wrong
/// with the value. Every klife settings struct's `validate` reports this type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid setting {config}.{field}: {problem}")]
#[non_exhaustive]
pub struct ConfigError {
    /// The settings struct (`ConnectionConfig`, `ProducerConfig`, ...), or the call
    /// whose argument it is.
    pub config: &'static str,
    /// The field (or argument), as the struct spells it.
    pub field: &'static str,
    /// What is wrong with its value.
    pub problem: ConfigProblem,
}

impl ConfigError {
    /// `field` of `config` is invalid because of `problem`.
    pub fn new(config: &'static str, field: &'static str, problem: ConfigProblem) -> ConfigError {
        ConfigError { config, field, problem }
    }
}

/// What is wrong with a setting's value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigProblem {
    /// It must be above zero (a count, a size or a duration).
    #[error("must be above zero")]
    Zero,
    /// It is below the smallest value that works.
    #[error("must be at least {min}, not {value}")]
    BelowMinimum {
        /// The smallest value accepted.
        min: u64,
        /// The value given.
        value: u64,
    },
    /// It is outside the range that works.
    #[error("must be between {min} and {max}, not {value}")]
    OutOfRange {
        /// The smallest value accepted.
        min: u64,
        /// The largest value accepted.
        max: u64,
        /// The value given.
        value: u64,
    },
    /// It works only with another field set to a given value.
    #[error("requires {field} = {value}")]
    Requires {
        /// The other field.
        field: &'static str,
        /// The value that field needs.
        value: &'static str,
    },
    /// It names a compression codec this build was compiled without.
    #[error("{codec} is not in this build: turn on the `{feature}` cargo feature", feature = .codec.feature_name())]
    CodecDisabled {
        /// The codec.
        codec: klife_protocol::Compression,
    },
    /// It must not be empty.
    #[error("must not be empty")]
    Empty,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_names_the_field_and_the_problem() {
        assert_eq!(ConnectionConfig::default().validate(), Ok(()));
        let config = ConnectionConfig { max_in_flight: 0, ..ConnectionConfig::default() };
        let e = config.validate().expect_err("an invalid setting");
        assert_eq!((e.config, e.field, &e.problem), ("ConnectionConfig", "max_in_flight", &ConfigProblem::Zero));
        assert_eq!(e.to_string(), "invalid setting ConnectionConfig.max_in_flight: must be above zero");
        let config = ConnectionConfig { max_frame_size: 10, ..ConnectionConfig::default() };
        let e = config.validate().expect_err("an invalid setting");
        assert_eq!(e.field, "max_frame_size");
        assert_eq!(e.problem, ConfigProblem::BelowMinimum { min: 1024, value: 10 });
    }
}
