//! Configuration files: one TOML file configures a client, its producers, fetchers,
//! transaction pools and consumer groups ([`ClientConfig`], [`Client::from_config`]).
//!
//! The file's keys, their types and defaults, and every error message are listed in
//! `docs/configuration.md`.
//!
//! ## Contract
//!
//! - One file, one client: `[connection]` (with `[connection.tls]` and
//!   `[connection.sasl]`), `[producers.<name>]`, `[topics.<name>]`, `[fetchers.<name>]`,
//!   `[txn_pools.<name>]` and `[groups.<name>]`. The producer and the fetcher named
//!   `default` are the client's default ones (behind [`Client::produce`] and
//!   [`Client::fetch`]); every other name makes a named one.
//! - A key left out takes the default of the setting it maps to
//!   ([`ProducerConfig`], [`FetcherConfig`], [`ConnectionConfig`], [`GroupConfig`]).
//! - **Durations** are strings: a whole number and a unit, `ms`, `s`, `m` or `h`
//!   (`"500ms"`, `"30s"`, `"5m"`, `"1h"`). A bare number is refused, since it does not
//!   say its unit. Sizes and counts are TOML integers, 0 or more.
//! - **Secrets** are never written in the file: `[connection.sasl]` names the
//!   environment variable that holds the password (`password_env = "KAFKA_PASSWORD"`),
//!   read when the file is read; a literal `password` key is an error. A secret is
//!   held as a [`Secret`], whose `Debug` prints `<redacted>`, and no error names more
//!   than the variable.
//! - Every problem is an [`Error`] for which [`Error::is_invalid_argument`] is true,
//!   whose [`config_key`](Error::config_key) is the dotted path of the key at fault
//!   (`producers.bulk.linger`) and whose `Display` says what is allowed: unknown keys
//!   (every table refuses them), values of the wrong type, unit or range, names of
//!   producers or fetchers that are not defined, missing environment variables.
//! - [`ClientConfig::to_toml_string`] writes the keys that are set (secrets stay
//!   variable names); reading it back gives an equal value.
//!
//! ## Example
//!
//! ```no_run
//! use klife::config::ClientConfig;
//! use klife::{Client, ProducerRecord};
//!
//! # async fn run() -> Result<(), klife::Error> {
//! // klife.toml:
//! //   [connection]
//! //   bootstrap = ["127.0.0.1:9092"]
//! //   [producers.bulk]
//! //   linger = "50ms"
//! //   compression = "zstd"
//! //   [topics.events]
//! //   producer = "bulk"
//! //   [groups.billing.topics.invoices]
//! //   offset_reset = "earliest"
//! let cfg = ClientConfig::from_file("klife.toml")?;
//! let client = Client::from_config(&cfg).await?;
//! client.produce(ProducerRecord::new("events", "v")).await?; // through "bulk"
//! let bulk = cfg.producer(&client, "bulk").await?;
//! bulk.produce(ProducerRecord::new("other", "v")).await?;
//! let group = cfg.group(&client, "billing")?; // add a handler, then start()
//! # drop(group);
//! # Ok(())
//! # }
//! ```
//!
//! Reading from a string, with the environment given explicitly:
//!
//! ```
//! use klife::config::ClientConfig;
//!
//! let text = r#"
//!     [connection]
//!     bootstrap = ["127.0.0.1:9092"]
//!     request_timeout = "10s"
//!     [connection.sasl]
//!     mechanism = "SCRAM-SHA-512"
//!     username = "billing"
//!     password_env = "KAFKA_PASSWORD"
//! "#;
//! let env = |name: &str| (name == "KAFKA_PASSWORD").then(|| "hunter2".to_owned());
//! let cfg = ClientConfig::from_toml_str_with_env(text, env).unwrap();
//! assert!(!format!("{cfg:?}").contains("hunter2"));
//!
//! let e = ClientConfig::from_toml_str_with_env("[connection]\nbootstrap = []\ntimeout = 5", env).unwrap_err();
//! assert_eq!(e.config_key(), Some("connection.timeout"));
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use klife_connection::sasl::SaslConfig;
use klife_connection::{ConfigError, ConfigProblem, ConnectionConfig};
use klife_fetcher::{Fetcher, FetcherConfig, IsolationLevel};
use klife_group::assignor::{Assignor, CooperativeStickyAssignor, RangeAssignor, RoundRobinAssignor};
use klife_group::membership::consumer::ServerAssignor;
use klife_group::offsets::{GroupProtocol, ResetPolicy};
use klife_group::runtime::{BatchSize, FetchStrategy, GroupConfig, Mode, TopicConfig};
use klife_producer::partitioner::{DefaultPartitioner, RoundRobinPartitioner};
use klife_producer::{Acks, Producer, ProducerConfig, TransactionPool};
use klife_protocol::Compression;
use serde::de::{self, Deserializer, Visitor};
use serde::ser::{self, Serializer};
use serde::{Deserialize, Serialize};

use crate::group::{ConsumerGroupBuilder, NoHandler};
use crate::{Client, ClientBuilder, Error};

/// A secret string (a password); `Debug` and `Display` print `<redacted>`.
pub use klife_connection::sasl::Secret;

/// The name of the client's default producer and default fetcher.
pub const DEFAULT: &str = "default";

/// The default `transaction_timeout` of a transaction pool (Kafka's
/// `transaction.timeout.ms`).
pub const DEFAULT_TRANSACTION_TIMEOUT: Duration = Duration::from_secs(60);

/// A whole configuration file: see the [module documentation](self).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct ClientConfig {
    /// `[connection]`: how to reach and authenticate to the cluster.
    pub connection: ConnectionSection,
    /// `[producers.<name>]`: `default` sets the default producer; other names add named
    /// producers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub producers: BTreeMap<String, ProducerSection>,
    /// `[topics.<name>]`: which producer a topic's records go through.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub topics: BTreeMap<String, TopicSection>,
    /// `[fetchers.<name>]`: `default` sets the default fetcher; other names add named
    /// fetchers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fetchers: BTreeMap<String, FetcherSection>,
    /// `[txn_pools.<name>]`: pools of transactional producers.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub txn_pools: BTreeMap<String, TxnPoolSection>,
    /// `[groups.<name>]`: consumer groups.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub groups: BTreeMap<String, GroupSection>,
}

/// `[connection]`: the [`ConnectionConfig`] settings and the bootstrap servers.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct ConnectionSection {
    /// `host:port` addresses to bootstrap from (required, at least one).
    pub bootstrap: Vec<String>,
    /// The client id sent with every request (default `klife`).
    pub client_id: Option<String>,
    /// Time allowed for connecting and the handshakes (default `"10s"`).
    #[serde(with = "duration")]
    pub connect_timeout: Option<Duration>,
    /// Time a request may wait for its answer (default `"30s"`).
    #[serde(with = "duration")]
    pub request_timeout: Option<Duration>,
    /// Requests in flight per connection (default 5).
    #[serde(with = "count")]
    pub max_in_flight: Option<usize>,
    /// Connections per broker for ordinary requests (default 1).
    #[serde(with = "count")]
    pub connection_count: Option<usize>,
    /// First delay before reconnecting to a broker (default `"50ms"`).
    #[serde(with = "duration")]
    pub reconnect_backoff: Option<Duration>,
    /// Longest delay before reconnecting (default `"1s"`).
    #[serde(with = "duration")]
    pub reconnect_backoff_max: Option<Duration>,
    /// How long a retried call may go on (default `"30s"`).
    #[serde(with = "duration")]
    pub retry_timeout: Option<Duration>,
    /// First delay before a retried call is sent again (default `"100ms"`).
    #[serde(with = "duration")]
    pub retry_backoff: Option<Duration>,
    /// Longest delay before a retried call is sent again (default `"1s"`).
    #[serde(with = "duration")]
    pub retry_backoff_max: Option<Duration>,
    /// Largest response frame accepted, in bytes (default 104857600).
    #[serde(with = "count")]
    pub max_frame_size: Option<usize>,
    /// Metadata is refreshed at least this often (default `"5m"`).
    #[serde(with = "duration")]
    pub metadata_max_age: Option<Duration>,
    /// Whether metadata lookups may create missing topics (default `false`).
    pub allow_auto_topic_creation: Option<bool>,
    /// `[connection.tls]`: connect over TLS.
    pub tls: Option<TlsSection>,
    /// `[connection.sasl]`: authenticate with SASL.
    pub sasl: Option<SaslSection>,
}

/// `[connection.tls]`: TLS settings (needs the `tls` cargo feature).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct TlsSection {
    /// Whether to use TLS (default `true`: the table's presence turns it on).
    pub enabled: Option<bool>,
    /// PEM file of the CA certificates to trust (default: the system's roots).
    pub ca_file: Option<PathBuf>,
    /// PEM file of the client certificate chain, for mutual TLS (with `key_file`).
    pub cert_file: Option<PathBuf>,
    /// PEM file of the client certificate's private key (with `cert_file`).
    pub key_file: Option<PathBuf>,
    /// The name to verify broker certificates against, instead of each broker's host.
    pub server_name: Option<String>,
    /// Whether broker certificates must name the host (default `true`; `false` is
    /// dangerous: see `TlsConfig::dangerous_disable_hostname_verification`).
    pub verify_hostname: Option<bool>,
}

/// `[connection.sasl]`: SASL authentication. The password comes from the environment
/// variable `password_env` names.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct SaslSection {
    /// The mechanism.
    pub mechanism: SaslMechanism,
    /// The user name.
    pub username: String,
    /// The environment variable holding the password.
    pub password_env: String,
    /// The password, once read from the environment.
    #[serde(skip)]
    password: Option<Secret>,
}

/// A SASL mechanism a configuration file may name (OAUTHBEARER needs a token provider:
/// set it with [`ClientBuilder::sasl`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SaslMechanism {
    /// `PLAIN`.
    Plain,
    /// `SCRAM-SHA-256`.
    ScramSha256,
    /// `SCRAM-SHA-512`.
    ScramSha512,
}

/// `[producers.<name>]`: the [`ProducerConfig`] settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct ProducerSection {
    /// How long a batch waits for more records (default `"5ms"`).
    #[serde(with = "duration")]
    pub linger: Option<Duration>,
    /// Bytes of records that make a batch full (default 1000000).
    #[serde(with = "count")]
    pub batch_size: Option<usize>,
    /// Most bytes of batches held, allocated room included (default 16777216).
    #[serde(with = "count")]
    pub buffer_memory: Option<usize>,
    /// Largest batch one record may make (default 1048576).
    #[serde(with = "count")]
    pub max_record_batch_size: Option<usize>,
    /// Codec of the batches: `none` (default), `gzip`, `snappy`, `lz4`, `zstd`.
    #[serde(with = "named")]
    pub compression: Option<Compression>,
    /// Acknowledgement to wait for: `all` (default), `leader`, `no_wait`.
    #[serde(with = "named")]
    pub acks: Option<Acks>,
    /// Time from `produce` to the outcome, retries included (default `"2m"`).
    #[serde(with = "duration")]
    pub delivery_timeout: Option<Duration>,
    /// Pause before a retriable failure is retried (default `"100ms"`).
    #[serde(with = "duration")]
    pub retry_backoff: Option<Duration>,
    /// Produce requests in flight per batcher (default 5).
    #[serde(with = "count")]
    pub max_in_flight_per_broker: Option<usize>,
    /// Batches of one partition in flight (default 5, at most 5).
    #[serde(with = "count")]
    pub max_in_flight_per_partition: Option<usize>,
    /// Batchers per broker (default 1).
    #[serde(with = "count")]
    pub batchers_per_broker: Option<usize>,
    /// Idempotent production (default `true`; needs `acks = "all"`).
    pub idempotence: Option<bool>,
    /// Partitions records without one: `default` (sticky, murmur2 of the key) or
    /// `round_robin`.
    #[serde(with = "named")]
    pub partitioner: Option<BuiltinPartitioner>,
}

/// A partitioner a configuration file may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuiltinPartitioner {
    /// `default`: [`DefaultPartitioner`].
    Default,
    /// `round_robin`: [`RoundRobinPartitioner`].
    RoundRobin,
}

/// `[topics.<name>]`: a topic's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct TopicSection {
    /// The producer its records go through by default: `default` or a name of
    /// `[producers]`.
    pub producer: Option<String>,
}

/// `[fetchers.<name>]`: the [`FetcherConfig`] settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct FetcherSection {
    /// Most bytes one Fetch request may ask for (default 52428800).
    #[serde(with = "count")]
    pub max_bytes_per_request: Option<usize>,
    /// Bytes asked for per partition (default 1048576).
    #[serde(with = "count")]
    pub partition_max_bytes: Option<usize>,
    /// How long the broker may wait for `min_bytes` (default `"500ms"`).
    #[serde(with = "duration")]
    pub max_wait: Option<Duration>,
    /// Bytes the broker waits for before answering (default 1).
    #[serde(with = "count")]
    pub min_bytes: Option<usize>,
    /// Fetch requests in flight per batcher (default 2).
    #[serde(with = "count")]
    pub max_in_flight: Option<usize>,
    /// How long a batcher waits for more fetches to share a request (default `"0ms"`).
    #[serde(with = "duration")]
    pub linger: Option<Duration>,
    /// Batchers per broker (default 1).
    #[serde(with = "count")]
    pub batchers_per_broker: Option<usize>,
    /// How long one fetch may take, retries included (default `"30s"`).
    #[serde(with = "duration")]
    pub fetch_timeout: Option<Duration>,
    /// Pause before retrying a retriable failure (default `"100ms"`).
    #[serde(with = "duration")]
    pub retry_backoff: Option<Duration>,
    /// `read_committed` (default) or `read_uncommitted`.
    #[serde(with = "named")]
    pub isolation_level: Option<IsolationLevel>,
    /// Whether to check each batch's CRC (default `true`).
    pub check_crcs: Option<bool>,
    /// Most bytes one compressed batch may inflate to (default 134217728).
    #[serde(with = "count")]
    pub max_decompressed_size: Option<usize>,
    /// Whether waiting requests use incremental fetch sessions (default `true`).
    pub fetch_sessions: Option<bool>,
}

/// `[txn_pools.<name>]`: a pool of transactional producers
/// ([`ClientConfig::transaction_pool`]).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct TxnPoolSection {
    /// The base of the producers' transactional ids, `{transactional_id}-{i}`
    /// (required).
    pub transactional_id: String,
    /// How many producers (default 1).
    #[serde(with = "count")]
    pub size: Option<usize>,
    /// The transaction timeout (default `"60s"`).
    #[serde(with = "duration")]
    pub transaction_timeout: Option<Duration>,
    /// Whose settings the producers take: `default` (default) or a name of
    /// `[producers]`.
    pub producer: Option<String>,
}

/// `[groups.<name>]`: a consumer group's [`GroupConfig`] settings; its topics are
/// `[groups.<name>.topics.<topic>]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct GroupSection {
    /// The group id (default: the table's name).
    pub group_id: Option<String>,
    /// `auto` (default: KIP-848 where the coordinator has it, else classic),
    /// `consumer` or `classic`.
    #[serde(with = "named")]
    pub protocol: Option<GroupProtocol>,
    /// The static member's instance id (KIP-345).
    pub instance_id: Option<String>,
    /// How long the coordinator waits for revoked partitions (default `"30s"`).
    #[serde(with = "duration")]
    pub rebalance_timeout: Option<Duration>,
    /// Classic protocol: the session timeout (default `"45s"`).
    #[serde(with = "duration")]
    pub session_timeout: Option<Duration>,
    /// Classic protocol: the time between heartbeats (default `"3s"`).
    #[serde(with = "duration")]
    pub heartbeat_interval: Option<Duration>,
    /// How long a heartbeat waits for its answer (default `"10s"`).
    #[serde(with = "duration")]
    pub heartbeat_timeout: Option<Duration>,
    /// How many committers share the partitions (default 1).
    #[serde(with = "count")]
    pub committers_count: Option<usize>,
    /// How many commits each committer may have in flight, each on a connection of its
    /// own (default 2).
    #[serde(with = "count")]
    pub commits_in_flight: Option<usize>,
    /// The member's rack.
    pub rack_id: Option<String>,
    /// KIP-848: the server-side assignor (`uniform`, `range`, or another name the
    /// brokers know).
    #[serde(with = "server_assignor")]
    pub server_assignor: Option<ServerAssignor>,
    /// Classic protocol: the assignors offered when leading, in order of preference
    /// (default `["cooperative-sticky"]`).
    pub assignors: Option<Vec<BuiltinAssignor>>,
    /// Also every topic whose whole name this regular expression matches (KIP-848).
    pub topic_regex: Option<String>,
    /// The fetcher of the group's topics: `default` (default) or a name of
    /// `[fetchers]`.
    pub fetcher: Option<String>,
    /// The first wait before a failed partition starts again (default `"500ms"`).
    #[serde(with = "duration")]
    pub restart_backoff: Option<Duration>,
    /// The longest wait before a failed partition starts again (default `"30s"`).
    #[serde(with = "duration")]
    pub restart_backoff_max: Option<Duration>,
    /// `[groups.<name>.topic_defaults]`: the settings of every topic that does not set
    /// its own.
    pub topic_defaults: Option<GroupTopicSection>,
    /// `[groups.<name>.topics.<topic>]`: the topics.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub topics: BTreeMap<String, GroupTopicSection>,
}

/// A classic-protocol assignor a configuration file may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum BuiltinAssignor {
    /// `cooperative-sticky`.
    CooperativeSticky,
    /// `range`.
    Range,
    /// `roundrobin`.
    RoundRobin,
}

/// `[groups.<name>.topics.<topic>]`: a topic of a group, the [`TopicConfig`] settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
#[non_exhaustive]
pub struct GroupTopicSection {
    /// `handler` (default) or `manual`.
    #[serde(with = "named")]
    pub mode: Option<Mode>,
    /// `latest` (default), `earliest` or `error`: where a partition without committed
    /// offset starts.
    #[serde(with = "named")]
    pub offset_reset: Option<ResetPolicy>,
    /// `read_committed` (default) or `read_uncommitted`.
    #[serde(with = "named")]
    pub isolation_level: Option<IsolationLevel>,
    /// The most bytes of a partition per fetch (default 1000000).
    #[serde(with = "count")]
    pub fetch_max_bytes: Option<usize>,
    /// Fetched batches a partition keeps ahead of its handler (default 5, or 20 with
    /// a maximum batch size).
    #[serde(with = "count")]
    pub max_queue_size: Option<usize>,
    /// The pause before fetching again after an empty answer (default `"1s"`).
    #[serde(with = "duration")]
    pub fetch_interval: Option<Duration>,
    /// The wait between two handler calls of a partition (default `"0ms"`).
    #[serde(with = "duration")]
    pub handler_cooldown: Option<Duration>,
    /// Finished batches that may wait for their commit (default 0).
    #[serde(with = "count")]
    pub handler_max_unacked_commits: Option<usize>,
    /// Records per handler call (or pull): `"dynamic"` (default: one fetch answer) or
    /// a number above zero.
    #[serde(with = "batch_size")]
    pub handler_max_batch_size: Option<BatchSize>,
    /// The fetcher of this topic: `default` or a name of `[fetchers]` (default: the
    /// group's).
    pub fetcher: Option<String>,
}

impl ClientConfig {
    /// A configuration with this connection and nothing else (the default producer
    /// and fetcher, no group), to fill in from code.
    pub fn new(connection: ConnectionSection) -> ClientConfig {
        ClientConfig {
            connection,
            producers: BTreeMap::new(),
            topics: BTreeMap::new(),
            fetchers: BTreeMap::new(),
            txn_pools: BTreeMap::new(),
            groups: BTreeMap::new(),
        }
    }

    /// Reads a configuration from TOML text, taking secrets from the process
    /// environment; checks every setting.
    pub fn from_toml_str(text: &str) -> Result<ClientConfig, Error> {
        ClientConfig::from_toml_str_with_env(text, |name| std::env::var(name).ok())
    }

    /// [`from_toml_str`](Self::from_toml_str) with the environment given as a lookup
    /// (`None`: the variable is not set).
    pub fn from_toml_str_with_env(text: &str, env: impl Fn(&str) -> Option<String>) -> Result<ClientConfig, Error> {
        let deserializer = toml::Deserializer::parse(text).map_err(|e| syntax_error(text, &e))?;
        let mut config: ClientConfig = serde_path_to_error::deserialize(deserializer).map_err(serde_error)?;
        config.check()?;
        if let Some(sasl) = &mut config.connection.sasl {
            sasl.resolve(&env)?;
        }
        Ok(config)
    }

    /// Reads a configuration file (see [`from_toml_str`](Self::from_toml_str)); errors
    /// name the file.
    pub fn from_file(path: impl AsRef<Path>) -> Result<ClientConfig, Error> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::config_file("", format!("cannot read the file: {e}")).in_file(path))?;
        ClientConfig::from_toml_str(&text).map_err(|e| e.in_file(path))
    }

    /// The configuration as TOML, with the keys that are set (secrets as the names of
    /// their variables).
    pub fn to_toml_string(&self) -> Result<String, Error> {
        toml::to_string(self).map_err(|e| Error::config_file("", format!("cannot write the configuration: {e}")))
    }

    /// A client builder with every setting of the file, to adjust before
    /// [`build`](ClientBuilder::build) ([`Client::from_config`] builds it as it is).
    /// A SASL password not read yet is read from the process environment now.
    pub fn client_builder(&self) -> Result<ClientBuilder, Error> {
        self.check()?;
        let mut builder = Client::builder()
            .bootstrap_servers(self.connection.bootstrap.iter().cloned())
            .connection_config(self.connection.to_connection_config()?);
        for (name, section) in &self.producers {
            let config = section.to_producer_config();
            builder = match name.as_str() {
                DEFAULT => builder.default_producer(config),
                _ => builder.named_producer(name.clone(), config),
            };
        }
        for (topic, section) in &self.topics {
            match section.producer.as_deref() {
                None | Some(DEFAULT) => {}
                Some(producer) => builder = builder.topic_producer(topic.clone(), producer),
            }
        }
        for (name, section) in &self.fetchers {
            let config = section.to_fetcher_config();
            builder = match name.as_str() {
                DEFAULT => builder.default_fetcher(config),
                _ => builder.named_fetcher(name.clone(), config),
            };
        }
        Ok(builder)
    }

    /// The settings of the producer `name` (`default`: the default producer's, from
    /// `[producers.default]` or the defaults).
    pub fn producer_config(&self, name: &str) -> Result<ProducerConfig, Error> {
        match self.producers.get(name) {
            Some(section) => Ok(section.to_producer_config()),
            None if name == DEFAULT => Ok(ProducerConfig::default()),
            None => Err(undefined("producers", name, self.producers.keys(), true)),
        }
    }

    /// The settings of the fetcher `name` (`default`: the default fetcher's).
    pub fn fetcher_config(&self, name: &str) -> Result<FetcherConfig, Error> {
        match self.fetchers.get(name) {
            Some(section) => Ok(section.to_fetcher_config()),
            None if name == DEFAULT => Ok(FetcherConfig::default()),
            None => Err(undefined("fetchers", name, self.fetchers.keys(), true)),
        }
    }

    /// The settings of the consumer group `[groups.<name>]`.
    pub fn group_config(&self, name: &str) -> Result<GroupConfig, Error> {
        let section = self.groups.get(name).ok_or_else(|| undefined("groups", name, self.groups.keys(), false))?;
        Ok(section.to_group_config(name))
    }

    /// The producer `name` of a client built from this configuration (`default`: the
    /// default producer), created on first use.
    pub async fn producer<'c>(&self, client: &'c Client, name: &str) -> Result<&'c Producer, Error> {
        match name {
            DEFAULT => client.default_producer().await,
            _ if self.producers.contains_key(name) => client.named_producer(name).await,
            _ => Err(undefined("producers", name, self.producers.keys(), true)),
        }
    }

    /// The fetcher `name` of a client built from this configuration (`default`: the
    /// default fetcher).
    pub fn fetcher<'c>(&self, client: &'c Client, name: &str) -> Result<&'c Fetcher, Error> {
        match name {
            DEFAULT => Ok(client.default_fetcher()),
            _ if self.fetchers.contains_key(name) => client.named_fetcher(name),
            _ => Err(undefined("fetchers", name, self.fetchers.keys(), true)),
        }
    }

    /// The consumer group `[groups.<name>]` on `client`, every setting applied: add a
    /// handler and [`start`](ConsumerGroupBuilder::start) it, or start it in manual
    /// mode or as a stream.
    pub fn group<'c>(&self, client: &'c Client, name: &str) -> Result<ConsumerGroupBuilder<'c, NoHandler>, Error> {
        let config = self.group_config(name)?;
        Ok(client.consumer_group(config.group.clone()).config(config))
    }

    /// Creates the transaction pool `[txn_pools.<name>]` on `client` (each producer
    /// fences older ones with its id). The client does not keep it.
    pub async fn transaction_pool(&self, client: &Client, name: &str) -> Result<TransactionPool, Error> {
        let section =
            self.txn_pools.get(name).ok_or_else(|| undefined("txn_pools", name, self.txn_pools.keys(), false))?;
        let config = self.producer_config(section.producer.as_deref().unwrap_or(DEFAULT))?;
        Ok(TransactionPool::new(
            client.cluster.clone(),
            config,
            &section.transactional_id,
            section.size.unwrap_or(1),
            section.transaction_timeout.unwrap_or(DEFAULT_TRANSACTION_TIMEOUT),
        )
        .await?)
    }

    /// Checks what the file's types alone do not: values in range, settings that go
    /// together, names that refer to tables the file defines.
    fn check(&self) -> Result<(), Error> {
        let c = &self.connection;
        if c.bootstrap.is_empty() {
            return Err(Error::config_file("connection.bootstrap", "must list at least one \"host:port\" address"));
        }
        if let Some(i) = c.bootstrap.iter().position(|a| a.trim().is_empty()) {
            return Err(Error::config_file(format!("connection.bootstrap[{i}]"), "must not be empty"));
        }
        c.base_connection_config().validate().map_err(|e| invalid(&["connection"], &e))?;
        if let Some(tls) = &c.tls {
            tls.check()?;
        }
        if let Some(sasl) = &c.sasl {
            if sasl.username.is_empty() {
                return Err(Error::config_file("connection.sasl.username", "must not be empty"));
            }
            if sasl.password_env.is_empty() {
                return Err(Error::config_file(
                    "connection.sasl.password_env",
                    "must name the environment variable that holds the password",
                ));
            }
        }
        for (name, section) in &self.producers {
            section.to_producer_config().validate().map_err(|e| invalid(&["producers", name], &e))?;
        }
        for (topic, section) in &self.topics {
            if let Some(producer) = &section.producer {
                self.check_producer(&["topics", topic, "producer"], producer)?;
            }
        }
        for (name, section) in &self.fetchers {
            section.to_fetcher_config().validate().map_err(|e| invalid(&["fetchers", name], &e))?;
        }
        for (name, pool) in &self.txn_pools {
            let at = |field| key(&["txn_pools", name, field]);
            if pool.transactional_id.is_empty() {
                return Err(Error::config_file(at("transactional_id"), "is required and must not be empty"));
            }
            if pool.size == Some(0) {
                return Err(Error::config_file(at("size"), "must be above zero"));
            }
            if pool.transaction_timeout.is_some_and(|t| t.is_zero()) {
                return Err(Error::config_file(at("transaction_timeout"), "must be above zero"));
            }
            if let Some(producer) = &pool.producer {
                self.check_producer(&["txn_pools", name, "producer"], producer)?;
            }
        }
        for (name, group) in &self.groups {
            self.check_group(name, group)?;
        }
        Ok(())
    }

    fn check_producer(&self, at: &[&str], name: &str) -> Result<(), Error> {
        if name == DEFAULT || self.producers.contains_key(name) {
            return Ok(());
        }
        Err(Error::config_file(
            key(at),
            format!(
                "no producer {name:?} is defined: add [producers.{}] or use {}",
                key(&[name]),
                names_or_default(self.producers.keys())
            ),
        ))
    }

    fn check_fetcher(&self, at: String, name: &str) -> Result<(), Error> {
        if name == DEFAULT || self.fetchers.contains_key(name) {
            return Ok(());
        }
        Err(Error::config_file(
            at,
            format!(
                "no fetcher {name:?} is defined: add [fetchers.{}] or use {}",
                key(&[name]),
                names_or_default(self.fetchers.keys())
            ),
        ))
    }

    fn check_group(&self, name: &str, group: &GroupSection) -> Result<(), Error> {
        let at = |field: &str| key(&["groups", name, field]);
        let empty = |field: &str, value: &Option<String>| match value.as_deref() {
            Some("") => Err(Error::config_file(at(field), "must not be empty")),
            _ => Ok(()),
        };
        empty("group_id", &group.group_id)?;
        empty("instance_id", &group.instance_id)?;
        empty("topic_regex", &group.topic_regex)?;
        if group.topics.is_empty() && group.topic_regex.is_none() {
            return Err(Error::config_file(
                key(&["groups", name]),
                format!("consumes nothing: add [groups.{}.topics.<topic>] or topic_regex", key(&[name])),
            ));
        }
        if group.topic_regex.is_some() && group.protocol == Some(GroupProtocol::Classic) {
            return Err(Error::config_file(
                at("topic_regex"),
                "needs protocol = \"consumer\" or \"auto\", not \"classic\"",
            ));
        }
        if group.committers_count == Some(0) {
            return Err(Error::config_file(at("committers_count"), "must be above zero"));
        }
        if group.commits_in_flight == Some(0) {
            return Err(Error::config_file(at("commits_in_flight"), "must be above zero"));
        }
        let zero = |d: Option<Duration>| d.is_some_and(|d| d.is_zero());
        for (field, value) in [
            ("rebalance_timeout", group.rebalance_timeout),
            ("session_timeout", group.session_timeout),
            ("heartbeat_interval", group.heartbeat_interval),
            ("heartbeat_timeout", group.heartbeat_timeout),
        ] {
            if zero(value) {
                return Err(Error::config_file(at(field), "must be above zero"));
            }
        }
        if group.assignors.as_ref().is_some_and(Vec::is_empty) {
            return Err(Error::config_file(at("assignors"), "must name at least one assignor"));
        }
        if let Some(ServerAssignor::Named(n)) = &group.server_assignor
            && n.is_empty()
        {
            return Err(Error::config_file(at("server_assignor"), "must not be empty"));
        }
        if let Some(fetcher) = &group.fetcher {
            self.check_fetcher(at("fetcher"), fetcher)?;
        }
        let topics = group.topic_defaults.iter().map(|t| ("topic_defaults".to_owned(), t));
        let topics = topics.chain(group.topics.iter().map(|(n, t)| (format!("topics.{}", key(&[n])), t)));
        for (path, topic) in topics {
            let at = |field: &str| format!("{}.{path}.{field}", key(&["groups", name]));
            for (field, value) in [("fetch_max_bytes", topic.fetch_max_bytes), ("max_queue_size", topic.max_queue_size)]
            {
                if value == Some(0) {
                    return Err(Error::config_file(at(field), "must be above zero"));
                }
            }
            let mode = topic.mode.or(group.topic_defaults.as_ref().and_then(|d| d.mode));
            if mode == Some(Mode::Manual) {
                for (field, set) in [
                    ("handler_cooldown", topic.handler_cooldown.is_some()),
                    ("handler_max_unacked_commits", topic.handler_max_unacked_commits.is_some()),
                ] {
                    if set {
                        return Err(Error::config_file(
                            at(field),
                            "is for mode = \"handler\"; this topic's mode is \"manual\"",
                        ));
                    }
                }
            }
            if let Some(fetcher) = &topic.fetcher {
                if fetcher.is_empty() {
                    return Err(Error::config_file(at("fetcher"), "must not be empty"));
                }
                self.check_fetcher(at("fetcher"), fetcher)?;
            }
        }
        Ok(())
    }
}

impl Client {
    /// Connects a client with every setting of a configuration file ([`ClientConfig`]):
    /// [`ClientConfig::client_builder`], then [`ClientBuilder::build`].
    pub async fn from_config(config: &ClientConfig) -> Result<Client, Error> {
        config.client_builder()?.build().await
    }
}

impl ConnectionSection {
    /// A section with these bootstrap servers and every other setting at its default.
    pub fn new<I, S>(bootstrap: I) -> ConnectionSection
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ConnectionSection { bootstrap: bootstrap.into_iter().map(Into::into).collect(), ..Default::default() }
    }

    /// The settings without TLS and SASL.
    fn base_connection_config(&self) -> ConnectionConfig {
        let d = ConnectionConfig::default();
        let mut c = d.clone();
        c.client_id = self.client_id.clone().or(d.client_id);
        c.connect_timeout = self.connect_timeout.unwrap_or(d.connect_timeout);
        c.request_timeout = self.request_timeout.unwrap_or(d.request_timeout);
        c.max_in_flight = self.max_in_flight.unwrap_or(d.max_in_flight);
        c.connection_count = self.connection_count.unwrap_or(d.connection_count);
        c.reconnect_backoff = self.reconnect_backoff.unwrap_or(d.reconnect_backoff);
        c.reconnect_backoff_max = self.reconnect_backoff_max.unwrap_or(d.reconnect_backoff_max);
        c.retry_timeout = self.retry_timeout.unwrap_or(d.retry_timeout);
        c.retry_backoff = self.retry_backoff.unwrap_or(d.retry_backoff);
        c.retry_backoff_max = self.retry_backoff_max.unwrap_or(d.retry_backoff_max);
        c.max_frame_size = self.max_frame_size.unwrap_or(d.max_frame_size);
        c.metadata_max_age = self.metadata_max_age.unwrap_or(d.metadata_max_age);
        c.allow_auto_topic_creation = self.allow_auto_topic_creation.unwrap_or(d.allow_auto_topic_creation);
        c
    }

    /// Every connection setting, TLS and SASL included (a password not read yet is
    /// read from the process environment).
    pub fn to_connection_config(&self) -> Result<ConnectionConfig, Error> {
        let mut c = self.base_connection_config();
        if let Some(tls) = self.tls.as_ref().filter(|t| t.enabled.unwrap_or(true)) {
            tls.check()?;
            #[cfg(feature = "tls")]
            {
                c.tls = Some(tls.to_tls_config());
            }
        }
        if let Some(sasl) = &self.sasl {
            c.sasl = Some(sasl.to_sasl_config()?);
        }
        Ok(c)
    }
}

impl TlsSection {
    fn check(&self) -> Result<(), Error> {
        if !self.enabled.unwrap_or(true) {
            return Ok(());
        }
        if !cfg!(feature = "tls") {
            return Err(Error::config_file("connection.tls", "this build has no TLS: turn on the `tls` cargo feature"));
        }
        match (&self.cert_file, &self.key_file) {
            (Some(_), None) => Err(Error::config_file("connection.tls.key_file", "is required with cert_file")),
            (None, Some(_)) => Err(Error::config_file("connection.tls.cert_file", "is required with key_file")),
            _ => Ok(()),
        }
    }

    /// The TLS settings (CA, client certificate, server name, host name checks).
    #[cfg(feature = "tls")]
    pub fn to_tls_config(&self) -> crate::TlsConfig {
        let mut tls = crate::TlsConfig::new();
        if let Some(ca) = &self.ca_file {
            tls = tls.with_root_certificates_file(ca);
        }
        if let (Some(cert), Some(key)) = (&self.cert_file, &self.key_file) {
            tls = tls.with_client_certificate_files(cert, key);
        }
        if let Some(name) = &self.server_name {
            tls = tls.with_server_name(name.clone());
        }
        if self.verify_hostname == Some(false) {
            tls = tls.dangerous_disable_hostname_verification();
        }
        tls
    }
}

impl SaslSection {
    /// A section whose password is read from the environment variable `password_env`.
    pub fn new(mechanism: SaslMechanism, username: impl Into<String>, password_env: impl Into<String>) -> SaslSection {
        SaslSection { mechanism, username: username.into(), password_env: password_env.into(), password: None }
    }

    /// Uses this password instead of reading `password_env`.
    #[must_use]
    pub fn with_password(mut self, password: impl Into<Secret>) -> SaslSection {
        self.password = Some(password.into());
        self
    }

    /// The password, if it was read (or given).
    pub fn password(&self) -> Option<&Secret> {
        self.password.as_ref()
    }

    fn resolve(&mut self, env: &impl Fn(&str) -> Option<String>) -> Result<(), Error> {
        let at = "connection.sasl.password_env";
        let var = &self.password_env;
        match env(var) {
            None => Err(Error::config_file(at, format!("the environment variable {var} is not set"))),
            Some(v) if v.is_empty() => Err(Error::config_file(at, format!("the environment variable {var} is empty"))),
            Some(v) => {
                self.password = Some(Secret::new(v));
                Ok(())
            }
        }
    }

    /// The SASL settings; a password not read yet is read from the process
    /// environment.
    pub fn to_sasl_config(&self) -> Result<SaslConfig, Error> {
        let mut resolved = self.clone();
        if resolved.password.is_none() {
            resolved.resolve(&|name| std::env::var(name).ok())?;
        }
        let password = resolved.password.unwrap_or_default();
        let user = self.username.clone();
        Ok(match self.mechanism {
            SaslMechanism::Plain => SaslConfig::plain(user, password),
            SaslMechanism::ScramSha256 => SaslConfig::scram_sha256(user, password),
            SaslMechanism::ScramSha512 => SaslConfig::scram_sha512(user, password),
        })
    }
}

impl fmt::Debug for SaslSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SaslSection")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password_env", &self.password_env)
            .field("password", &self.password)
            .finish()
    }
}

impl PartialEq for SaslSection {
    fn eq(&self, other: &Self) -> bool {
        self.mechanism == other.mechanism
            && self.username == other.username
            && self.password_env == other.password_env
            && self.password.as_ref().map(Secret::expose) == other.password.as_ref().map(Secret::expose)
    }
}

impl ProducerSection {
    /// The producer's settings, defaults filled in.
    pub fn to_producer_config(&self) -> ProducerConfig {
        let d = ProducerConfig::default();
        let mut c = d.clone();
        c.linger = self.linger.unwrap_or(d.linger);
        c.batch_size = self.batch_size.unwrap_or(d.batch_size);
        c.buffer_memory = self.buffer_memory.unwrap_or(d.buffer_memory);
        c.max_record_batch_size = self.max_record_batch_size.unwrap_or(d.max_record_batch_size);
        c.compression = self.compression.unwrap_or(d.compression);
        c.acks = self.acks.unwrap_or(d.acks);
        c.delivery_timeout = self.delivery_timeout.unwrap_or(d.delivery_timeout);
        c.retry_backoff = self.retry_backoff.unwrap_or(d.retry_backoff);
        c.max_in_flight_per_broker = self.max_in_flight_per_broker.unwrap_or(d.max_in_flight_per_broker);
        c.max_in_flight_per_partition = self.max_in_flight_per_partition.unwrap_or(d.max_in_flight_per_partition);
        c.batchers_per_broker = self.batchers_per_broker.unwrap_or(d.batchers_per_broker);
        c.idempotence = self.idempotence.unwrap_or(d.idempotence);
        if let Some(p) = self.partitioner {
            c.partitioner = match p {
                BuiltinPartitioner::Default => Arc::new(DefaultPartitioner::new()),
                BuiltinPartitioner::RoundRobin => Arc::new(RoundRobinPartitioner::new()),
            };
        }
        c
    }
}

impl FetcherSection {
    /// The fetcher's settings, defaults filled in.
    pub fn to_fetcher_config(&self) -> FetcherConfig {
        let d = FetcherConfig::default();
        let mut c = d.clone();
        c.max_bytes_per_request = self.max_bytes_per_request.unwrap_or(d.max_bytes_per_request);
        c.partition_max_bytes = self.partition_max_bytes.unwrap_or(d.partition_max_bytes);
        c.max_wait = self.max_wait.unwrap_or(d.max_wait);
        c.min_bytes = self.min_bytes.unwrap_or(d.min_bytes);
        c.max_in_flight = self.max_in_flight.unwrap_or(d.max_in_flight);
        c.linger = self.linger.unwrap_or(d.linger);
        c.batchers_per_broker = self.batchers_per_broker.unwrap_or(d.batchers_per_broker);
        c.fetch_timeout = self.fetch_timeout.unwrap_or(d.fetch_timeout);
        c.retry_backoff = self.retry_backoff.unwrap_or(d.retry_backoff);
        c.isolation_level = self.isolation_level.unwrap_or(d.isolation_level);
        c.check_crcs = self.check_crcs.unwrap_or(d.check_crcs);
        c.max_decompressed_size = self.max_decompressed_size.unwrap_or(d.max_decompressed_size);
        c.fetch_sessions = self.fetch_sessions.unwrap_or(d.fetch_sessions);
        c
    }
}

impl GroupSection {
    /// The group's settings; `name` is the group id unless `group_id` is set.
    pub fn to_group_config(&self, name: &str) -> GroupConfig {
        let mut g = GroupConfig::new(self.group_id.as_deref().unwrap_or(name));
        g.instance_id = self.instance_id.clone();
        g.protocol = self.protocol.unwrap_or(g.protocol);
        g.rebalance_timeout = self.rebalance_timeout.unwrap_or(g.rebalance_timeout);
        g.session_timeout = self.session_timeout;
        g.heartbeat_interval = self.heartbeat_interval;
        if let Some(t) = self.heartbeat_timeout {
            g.driver = g.driver.with_heartbeat_timeout(t);
        }
        g.committers_count = self.committers_count.unwrap_or(g.committers_count);
        g.commits_in_flight = self.commits_in_flight.unwrap_or(g.commits_in_flight);
        g.rack_id = self.rack_id.clone();
        g.server_assignor = self.server_assignor.clone();
        g.assignors = self.assignors.as_ref().map(|names| {
            names
                .iter()
                .map(|a| -> Arc<dyn Assignor> {
                    match a {
                        BuiltinAssignor::CooperativeSticky => Arc::new(CooperativeStickyAssignor),
                        BuiltinAssignor::Range => Arc::new(RangeAssignor),
                        BuiltinAssignor::RoundRobin => Arc::new(RoundRobinAssignor),
                    }
                })
                .collect()
        });
        g.topic_regex = self.topic_regex.clone();
        g.fetch_strategy = fetch_strategy(self.fetcher.as_deref()).unwrap_or_default();
        g.restart_backoff = self.restart_backoff.unwrap_or(g.restart_backoff);
        g.restart_backoff_max = self.restart_backoff_max.unwrap_or(g.restart_backoff_max);
        if let Some(defaults) = &self.topic_defaults {
            g.default_topic_config = defaults.to_topic_config("");
        }
        g.topics = self.topics.iter().map(|(name, t)| t.to_topic_config(name)).collect();
        g
    }
}

impl GroupTopicSection {
    /// The topic's settings in its group (unset ones stay unset: they come from the
    /// group's defaults).
    pub fn to_topic_config(&self, name: &str) -> TopicConfig {
        let mut t = TopicConfig::new(name);
        t.mode = self.mode;
        t.offset_reset = self.offset_reset;
        t.isolation_level = self.isolation_level;
        t.fetch_max_bytes = self.fetch_max_bytes;
        t.max_queue_size = self.max_queue_size;
        t.fetch_interval = self.fetch_interval;
        t.handler_cooldown = self.handler_cooldown;
        t.handler_max_unacked_commits = self.handler_max_unacked_commits;
        t.handler_max_batch_size = self.handler_max_batch_size;
        t.fetch_strategy = fetch_strategy(self.fetcher.as_deref());
        t
    }
}

fn fetch_strategy(fetcher: Option<&str>) -> Option<FetchStrategy> {
    fetcher.map(|name| match name {
        DEFAULT => FetchStrategy::Default,
        name => FetchStrategy::Shared(name.to_owned()),
    })
}

// ---- Errors ----

/// A dotted key path, each part quoted when it is not a bare TOML key.
fn key(parts: &[&str]) -> String {
    let bare = |p: &str| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let quoted: Vec<String> = parts.iter().map(|p| if bare(p) { (*p).to_owned() } else { format!("{p:?}") }).collect();
    quoted.join(".")
}

/// `default` and the names defined, for a message.
fn names_or_default<'a>(names: impl Iterator<Item = &'a String>) -> String {
    let mut all = vec![DEFAULT.to_owned()];
    all.extend(names.filter(|n| *n != DEFAULT).cloned());
    format!("one of {}", all.join(", "))
}

/// A name asked for that the file does not define.
fn undefined<'a>(table: &str, name: &str, names: impl Iterator<Item = &'a String>, has_default: bool) -> Error {
    let names: Vec<&str> = names.map(String::as_str).filter(|n| !has_default || *n != DEFAULT).collect();
    let mut defined = if has_default { vec![DEFAULT] } else { vec![] };
    defined.extend(names);
    let defined = if defined.is_empty() { "none".to_owned() } else { defined.join(", ") };
    Error::config_file(key(&[table, name]), format!("is not defined; defined: {defined}"))
}

/// A settings struct's own check, reported at the key of its field.
fn invalid(table: &[&str], e: &ConfigError) -> Error {
    let mut at = table.to_vec();
    at.push(e.field);
    let message = match &e.problem {
        ConfigProblem::Requires { field: "acks", .. } => "requires acks = \"all\" (or idempotence = false)".to_owned(),
        problem => problem.to_string(),
    };
    Error::config_file(key(&at), message)
}

/// A TOML syntax error, at its line and column.
fn syntax_error(text: &str, e: &toml::de::Error) -> Error {
    let message = e.message().trim_end();
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            Error::config_file("", format!("TOML syntax error at line {line}, column {column}: {message}"))
        }
        None => Error::config_file("", format!("TOML syntax error: {message}")),
    }
}

/// A value that does not fit the model, at its key path; serde's wording of unknown
/// and missing keys made the file's.
fn serde_error(e: serde_path_to_error::Error<toml::de::Error>) -> Error {
    let mut parts: Vec<String> = Vec::new();
    for segment in e.path().iter() {
        match segment {
            serde_path_to_error::Segment::Map { key: k } => parts.push(key(&[k])),
            serde_path_to_error::Segment::Seq { index } => match parts.last_mut() {
                Some(last) => last.push_str(&format!("[{index}]")),
                None => parts.push(format!("[{index}]")),
            },
            serde_path_to_error::Segment::Enum { variant } => parts.push(key(&[variant])),
            serde_path_to_error::Segment::Unknown => parts.push("?".to_owned()),
        }
    }
    let message = e.inner().message().trim_end().to_owned();
    // serde's wording: "unknown field `x`, expected one of `a`, `b`" and
    // "missing field `x`"; the names are between backticks.
    let mut quoted = message.split('`').skip(1).step_by(2);
    if message.starts_with("unknown field `") {
        let field = quoted.next().unwrap_or_default();
        if parts.last().map(String::as_str) != Some(key(&[field]).as_str()) {
            parts.push(key(&[field]));
        }
        let expected: Vec<&str> = quoted.collect();
        let text = if parts.len() >= 2 && parts[parts.len() - 2] == "sasl" && field == "password" {
            "a password is never written in the file: name the environment variable that holds it with password_env"
                .to_owned()
        } else if expected.is_empty() {
            "unknown key".to_owned()
        } else {
            format!("unknown key; expected one of {}", expected.join(", "))
        };
        return Error::config_file(parts.join("."), text);
    }
    if message.starts_with("missing field `") {
        parts.push(key(&[quoted.next().unwrap_or_default()]));
        return Error::config_file(parts.join("."), "is required");
    }
    Error::config_file(parts.join("."), message)
}

// ---- Values ----

/// Values written as one of a fixed set of names.
trait Named: Sized + Copy + PartialEq + 'static {
    /// The names and their values.
    const NAMES: &'static [(&'static str, Self)];
    /// Said after the names when a value is not one of them.
    const NOTE: &'static str = "";

    fn name(self) -> Option<&'static str> {
        Self::NAMES.iter().find(|(_, v)| *v == self).map(|(n, _)| *n)
    }

    fn expected() -> String {
        let names: Vec<&str> = Self::NAMES.iter().map(|(n, _)| *n).collect();
        format!("one of {}", names.join(", "))
    }
}

impl Named for Compression {
    const NAMES: &'static [(&'static str, Self)] = &[
        ("none", Compression::None),
        ("gzip", Compression::Gzip),
        ("snappy", Compression::Snappy),
        ("lz4", Compression::Lz4),
        ("zstd", Compression::Zstd),
    ];
}

impl Named for Acks {
    const NAMES: &'static [(&'static str, Self)] =
        &[("all", Acks::All), ("leader", Acks::Leader), ("no_wait", Acks::NoWait)];
}

impl Named for IsolationLevel {
    const NAMES: &'static [(&'static str, Self)] =
        &[("read_committed", IsolationLevel::ReadCommitted), ("read_uncommitted", IsolationLevel::ReadUncommitted)];
}

impl Named for GroupProtocol {
    const NAMES: &'static [(&'static str, Self)] =
        &[("auto", GroupProtocol::Auto), ("consumer", GroupProtocol::Consumer), ("classic", GroupProtocol::Classic)];
}

impl Named for ResetPolicy {
    const NAMES: &'static [(&'static str, Self)] =
        &[("latest", ResetPolicy::Latest), ("earliest", ResetPolicy::Earliest), ("error", ResetPolicy::Error)];
}

impl Named for Mode {
    const NAMES: &'static [(&'static str, Self)] = &[("handler", Mode::Handler), ("manual", Mode::Manual)];
}

impl Named for SaslMechanism {
    const NAMES: &'static [(&'static str, Self)] = &[
        ("PLAIN", SaslMechanism::Plain),
        ("SCRAM-SHA-256", SaslMechanism::ScramSha256),
        ("SCRAM-SHA-512", SaslMechanism::ScramSha512),
    ];
    const NOTE: &'static str = " (OAUTHBEARER needs a token provider: set it with ClientBuilder::sasl)";
}

impl Named for BuiltinPartitioner {
    const NAMES: &'static [(&'static str, Self)] =
        &[("default", BuiltinPartitioner::Default), ("round_robin", BuiltinPartitioner::RoundRobin)];
}

impl Named for BuiltinAssignor {
    const NAMES: &'static [(&'static str, Self)] = &[
        ("cooperative-sticky", BuiltinAssignor::CooperativeSticky),
        ("range", BuiltinAssignor::Range),
        ("roundrobin", BuiltinAssignor::RoundRobin),
    ];
}

struct NamedVisitor<T>(PhantomData<T>);

impl<T: Named> Visitor<'_> for NamedVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&T::expected())
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        T::NAMES
            .iter()
            .find(|(n, _)| *n == v)
            .map(|(_, value)| *value)
            .ok_or_else(|| E::custom(format!("unknown value {v:?}; expected {}{}", T::expected(), T::NOTE)))
    }
}

fn serialize_named<T: Named, S: Serializer>(value: T, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(value.name().ok_or_else(|| ser::Error::custom("a value without a name in configuration files"))?)
}

macro_rules! serde_by_name {
    ($($t:ty),*) => {$(
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                serialize_named(*self, s)
            }
        }

        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                d.deserialize_any(NamedVisitor(PhantomData))
            }
        }
    )*};
}

serde_by_name!(SaslMechanism, BuiltinPartitioner, BuiltinAssignor);

/// `Option<T>` of a [`Named`] type.
mod named {
    use super::*;

    pub(super) fn serialize<T: Named, S: Serializer>(value: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(v) => serialize_named(*v, s),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, T: Named, D: Deserializer<'de>>(d: D) -> Result<Option<T>, D::Error> {
        d.deserialize_any(NamedVisitor(PhantomData)).map(Some)
    }
}

/// Parses a duration: a whole number and a unit, `ms`, `s`, `m` or `h`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || {
        format!(
            "{text:?} is not a duration: write a whole number and a unit, ms, s, m or h (such as \"500ms\" or \"30s\")"
        )
    };
    let digits = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let n: u64 = number.parse().map_err(|_| bad())?;
    let seconds = |factor: u64| n.checked_mul(factor).map(Duration::from_secs);
    match unit {
        "ms" => Some(Duration::from_millis(n)),
        "s" => seconds(1),
        "m" => seconds(60),
        "h" => seconds(3600),
        _ => return Err(bad()),
    }
    .ok_or_else(|| format!("{text:?} is too long a duration"))
}

/// Writes a duration in the largest unit that keeps it whole.
fn format_duration(d: Duration) -> Option<String> {
    if d.subsec_nanos() % 1_000_000 != 0 {
        return None;
    }
    let ms = d.as_millis();
    Some(match ms {
        0 => "0ms".to_owned(),
        ms if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        ms if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        ms if ms % 1000 == 0 => format!("{}s", ms / 1000),
        ms => format!("{ms}ms"),
    })
}

/// `Option<Duration>` as `"500ms"`, `"30s"`, `"5m"`, `"1h"`.
mod duration {
    use super::*;

    struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration such as \"500ms\", \"30s\", \"5m\" or \"1h\"")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            parse_duration(v).map_err(E::custom)
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            Err(E::custom(format!("a duration is a string with a unit: write \"{v}ms\" or \"{v}s\", not {v}")))
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            self.visit_i64(i64::try_from(v).unwrap_or(i64::MAX))
        }
    }

    pub(super) fn serialize<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => s.serialize_str(
                &format_duration(*d).ok_or_else(|| ser::Error::custom("durations are whole milliseconds"))?,
            ),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        d.deserialize_any(DurationVisitor).map(Some)
    }
}

/// `Option<usize>`: a whole number, 0 or more.
mod count {
    use super::*;

    struct CountVisitor;

    impl Visitor<'_> for CountVisitor {
        type Value = usize;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a whole number, 0 or more")
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<usize, E> {
            usize::try_from(v).map_err(|_| E::custom(format!("must be a whole number, 0 or more, not {v}")))
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<usize, E> {
            usize::try_from(v).map_err(|_| E::custom(format!("{v} is too large")))
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<usize, E> {
            Err(E::custom(format!("must be a whole number, 0 or more, not {v}")))
        }
    }

    pub(super) fn serialize<S: Serializer>(value: &Option<usize>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(n) => s.serialize_u64(*n as u64),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_any(CountVisitor).map(Some)
    }
}

/// `Option<BatchSize>`: `"dynamic"` or a number above zero.
mod batch_size {
    use super::*;

    struct BatchSizeVisitor;

    impl Visitor<'_> for BatchSizeVisitor {
        type Value = BatchSize;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("\"dynamic\" or a number above zero")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<BatchSize, E> {
            match v {
                "dynamic" => Ok(BatchSize::Dynamic),
                _ => Err(E::custom(format!("unknown value {v:?}; expected \"dynamic\" or a number above zero"))),
            }
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<BatchSize, E> {
            match usize::try_from(v) {
                Ok(n) if n > 0 => Ok(BatchSize::Max(n)),
                _ => Err(E::custom(format!("must be \"dynamic\" or a number above zero, not {v}"))),
            }
        }
    }

    pub(super) fn serialize<S: Serializer>(value: &Option<BatchSize>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(BatchSize::Dynamic) => s.serialize_str("dynamic"),
            Some(BatchSize::Max(n)) => s.serialize_u64(*n as u64),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<BatchSize>, D::Error> {
        d.deserialize_any(BatchSizeVisitor).map(Some)
    }
}

/// `Option<ServerAssignor>` by name.
mod server_assignor {
    use super::*;

    pub(super) fn serialize<S: Serializer>(value: &Option<ServerAssignor>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(a) => s.serialize_str(a.name()),
            None => s.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ServerAssignor>, D::Error> {
        Ok(Some(match String::deserialize(d)?.as_str() {
            "uniform" => ServerAssignor::Uniform,
            "range" => ServerAssignor::Range,
            name => ServerAssignor::Named(name.to_owned()),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_keep_their_unit_rule() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        for bad in ["", "s", "30", "30 s", "1.5s", "-1s", "30sec", "1m30s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        for d in [0, 1, 999, 1000, 60_000, 90_000, 3_600_000, 5_400_000] {
            let d = Duration::from_millis(d);
            assert_eq!(parse_duration(&format_duration(d).unwrap_or_default()), Ok(d));
        }
        assert_eq!(format_duration(Duration::from_secs(300)).as_deref(), Some("5m"));
        assert_eq!(format_duration(Duration::from_micros(1500)), None);
    }

    #[test]
    fn keys_are_quoted_when_not_bare() {
        assert_eq!(key(&["topics", "orders.eu", "producer"]), "topics.\"orders.eu\".producer");
        assert_eq!(key(&["groups", "billing-v2"]), "groups.billing-v2");
    }
}
