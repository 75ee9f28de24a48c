//! The `Client` and its builder.

use std::time::Duration;

use std::collections::HashMap;
use std::sync::Arc;

use klife_connection::{Cluster, ConnectionConfig};
use klife_fetcher::{Consumer, FetchOptions, FetchStream, Fetched, Fetcher, FetcherConfig, TopicPartitionOffset};
use klife_producer::{
    DeliveryFuture, Producer, ProducerConfig, ProducerRecord, RecordMetadata, TransactionPool, TransactionalProducer,
};
use tokio::sync::OnceCell;

use crate::Error;

/// A connection to a Kafka cluster, cheap to clone (clones share connections).
///
/// Build one with [`Client::builder`]. Admin operations and producing are methods on
/// the client: `produce*` use a default producer (configured with
/// [`ClientBuilder::producer_config`]), and [`Client::producer`] makes more, each with
/// its own settings and batches.
#[derive(Clone, Debug)]
pub struct Client {
    pub(crate) cluster: Cluster,
    /// The producer behind `produce*`, created on first use with `producer_config`.
    default_producer: Arc<OnceCell<Producer>>,
    producer_config: ProducerConfig,
    /// Named producers, created on first use.
    named: Arc<HashMap<String, (ProducerConfig, OnceCell<Producer>)>>,
    /// Topic -> producer name, for topics that do not use the default producer.
    topic_producers: Arc<HashMap<String, String>>,
    /// The fetcher behind `fetch*`.
    fetcher: Fetcher,
    /// Named fetchers.
    fetchers: Arc<HashMap<String, Fetcher>>,
}

/// Builds a [`Client`].
#[derive(Debug, Clone, Default)]
pub struct ClientBuilder {
    bootstrap: Vec<String>,
    config: ConnectionConfig,
    producer: ProducerConfig,
    named: Vec<(String, ProducerConfig)>,
    topic_producers: HashMap<String, String>,
    fetcher: FetcherConfig,
    fetchers: Vec<(String, FetcherConfig)>,
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

    /// Flushes the default producer, then closes every connection; later calls fail
    /// with an error for which [`Error::is_closed`] is true.
    pub async fn close(&self) {
        self.fetcher.close();
        for f in self.fetchers.values() {
            f.close();
        }
        if let Some(p) = self.default_producer.get() {
            p.close().await;
        }
        for (_, cell) in self.named.values() {
            if let Some(p) = cell.get() {
                p.close().await;
            }
        }
        self.cluster.close().await;
    }

    /// A new producer with its own settings, batches and sender, sharing this client's
    /// connections.
    pub async fn producer(&self, config: ProducerConfig) -> Result<Producer, Error> {
        Ok(Producer::new(self.cluster.clone(), config).await?)
    }

    /// A transactional producer for `transactional_id` (fencing any older producer with
    /// that id).
    pub async fn transactional_producer(
        &self,
        transactional_id: &str,
        transaction_timeout: Duration,
    ) -> Result<TransactionalProducer, Error> {
        Ok(TransactionalProducer::new(
            self.cluster.clone(),
            self.producer_config.clone(),
            transactional_id,
            transaction_timeout,
        )
        .await?)
    }

    /// A pool of `size` transactional producers with ids `{base_transactional_id}-{i}`,
    /// for `pool.transaction(|txn| ...)` and `pool.produce_batch_txn(records)`.
    pub async fn transaction_pool(
        &self,
        base_transactional_id: &str,
        size: usize,
        transaction_timeout: Duration,
    ) -> Result<TransactionPool, Error> {
        Ok(TransactionPool::new(
            self.cluster.clone(),
            self.producer_config.clone(),
            base_transactional_id,
            size,
            transaction_timeout,
        )
        .await?)
    }

    async fn default_producer(&self) -> Result<&Producer, Error> {
        self.default_producer
            .get_or_try_init(|| async { Producer::new(self.cluster.clone(), self.producer_config.clone()).await })
            .await
            .map_err(Error::from)
    }

    /// The named producer (configured with [`ClientBuilder::producer`]), created on
    /// first use.
    pub async fn named_producer(&self, name: &str) -> Result<&Producer, Error> {
        let (config, cell) = self
            .named
            .get(name)
            .ok_or_else(|| Error::invalid_argument(format!("no producer named {name:?} is configured")))?;
        cell.get_or_try_init(|| async { Producer::new(self.cluster.clone(), config.clone()).await })
            .await
            .map_err(Error::from)
    }

    /// The producer for a topic: its configured one, else the default.
    async fn producer_for(&self, topic: &str) -> Result<&Producer, Error> {
        match self.topic_producers.get(topic) {
            Some(name) => self.named_producer(name).await,
            None => self.default_producer().await,
        }
    }

    /// Produces a record (with its topic's producer) and waits for where it was written.
    pub async fn produce(&self, record: ProducerRecord) -> Result<RecordMetadata, Error> {
        Ok(self.producer_for(&record.topic).await?.produce(record).await?)
    }

    /// Produces a record with the named producer.
    pub async fn produce_with(&self, producer: &str, record: ProducerRecord) -> Result<RecordMetadata, Error> {
        Ok(self.named_producer(producer).await?.produce(record).await?)
    }

    /// Queues a record; the returned future gives its outcome (await it, or drop it:
    /// the record is produced either way).
    pub async fn produce_async(&self, record: ProducerRecord) -> Result<DeliveryFuture, Error> {
        Ok(self.producer_for(&record.topic).await?.produce_async(record).await?)
    }

    /// Queues records; one outcome future (or immediate error) per record, in input
    /// order.
    pub async fn produce_batch_async(&self, records: Vec<ProducerRecord>) -> Vec<Result<DeliveryFuture, Error>> {
        let mut futures = Vec::with_capacity(records.len());
        for r in records {
            futures.push(self.produce_async(r).await);
        }
        futures
    }

    /// Produces records; one result per record, in input order (order kept per
    /// partition; one batch's failure does not affect the others).
    pub async fn produce_batch(&self, records: Vec<ProducerRecord>) -> Vec<Result<RecordMetadata, Error>> {
        let futures = self.produce_batch_async(records).await;
        let mut out = Vec::with_capacity(futures.len());
        for f in futures {
            out.push(match f {
                Ok(f) => f.await.map_err(Error::from),
                Err(e) => Err(e),
            });
        }
        out
    }

    /// Flushes every producer the client made: every record queued so far gets its
    /// outcome.
    pub async fn flush(&self) {
        if let Some(p) = self.default_producer.get() {
            p.flush().await;
        }
        for (_, cell) in self.named.values() {
            if let Some(p) = cell.get() {
                p.flush().await;
            }
        }
    }

    /// The fetcher behind [`fetch`](Self::fetch) (configured with
    /// [`ClientBuilder::fetcher_config`]).
    pub fn fetcher(&self) -> &Fetcher {
        &self.fetcher
    }

    /// The named fetcher (configured with [`ClientBuilder::fetcher`]).
    pub fn named_fetcher(&self, name: &str) -> Result<&Fetcher, Error> {
        self.fetchers
            .get(name)
            .ok_or_else(|| Error::invalid_argument(format!("no fetcher named {name:?} is configured")))
    }

    /// Fetches records of `topic`-`partition` from `offset` on (whatever the broker
    /// has, up to the fetcher's per-partition byte limit).
    pub async fn fetch(&self, topic: &str, partition: i32, offset: i64) -> Result<Fetched, Error> {
        Ok(self.fetcher.fetch(topic, partition, offset).await?)
    }

    /// [`fetch`](Self::fetch) with per-call options (isolation level, bytes).
    pub async fn fetch_with(&self, target: TopicPartitionOffset, options: &FetchOptions) -> Result<Fetched, Error> {
        Ok(self.fetcher.fetch_with(target, options).await?)
    }

    /// Fetches several `(topic, partition, offset)` at once, one request per broker;
    /// one result per target, in the order given.
    pub async fn fetch_many<I, T>(
        &self,
        targets: I,
        options: &FetchOptions,
    ) -> Vec<(TopicPartitionOffset, Result<Fetched, Error>)>
    where
        I: IntoIterator<Item = T>,
        T: Into<TopicPartitionOffset>,
    {
        let results = self.fetcher.fetch_many(targets, options).await;
        results.into_iter().map(|(t, r)| (t, r.map_err(Error::from))).collect()
    }

    /// Starts a fetch; the returned future gives its result (drop it to abandon the
    /// fetch).
    pub fn fetch_async(
        &self,
        target: TopicPartitionOffset,
        options: &FetchOptions,
    ) -> impl Future<Output = Result<Fetched, Error>> + Send + 'static {
        let handle = self.fetcher.fetch_async(target, options);
        async move { Ok(handle.await?) }
    }

    /// Fetches several targets and yields each result as it arrives (a `Stream`;
    /// its errors convert into [`Error`] with `?`).
    pub fn fetch_stream<I, T>(&self, targets: I, options: &FetchOptions) -> FetchStream
    where
        I: IntoIterator<Item = T>,
        T: Into<TopicPartitionOffset>,
    {
        self.fetcher.fetch_stream(targets, options)
    }

    /// A standalone consumer over the default fetcher: assign partitions, then call
    /// `next()`. It resets out-of-range positions and goes on after a log truncated by
    /// an unclean leader election by its [`OffsetReset`](crate::OffsetReset) policy
    /// (`offset_reset(OffsetReset::Error)` to be told instead), and stops a partition
    /// whose topic was deleted and created again.
    pub fn consumer(&self, options: FetchOptions) -> Consumer {
        Consumer::new(self.fetcher.clone(), options)
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

    /// Connections per broker for ordinary requests, used round-robin (default 1).
    /// Producer batchers and fetches have connections of their own besides these.
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

    /// Settings of the default producer behind [`Client::produce`].
    #[must_use]
    pub fn producer_config(mut self, config: ProducerConfig) -> Self {
        self.producer = config;
        self
    }

    /// Adds a named producer, with its own settings and batches (for example, one with
    /// a long linger and compression for bulk topics).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), klife::Error> {
    /// let mut bulk = klife::ProducerConfig::default();
    /// bulk.linger = std::time::Duration::from_millis(50);
    /// // Four batchers per broker: a broker's partitions are spread over them, and each
    /// // sends its own Produce requests on a connection of its own, with its own
    /// // in-flight window (brokers serve a connection's requests one at a time).
    /// bulk.batchers_per_broker = 4;
    /// let client = klife::Client::builder()
    ///     .bootstrap_servers(["127.0.0.1:9092"])
    ///     .producer("bulk", bulk)
    ///     .topic_producer("events", "bulk")
    ///     .build()
    ///     .await?;
    /// # drop(client);
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn producer(mut self, name: impl Into<String>, config: ProducerConfig) -> Self {
        self.named.push((name.into(), config));
        self
    }

    /// Makes `topic`'s records go through the named producer by default.
    #[must_use]
    pub fn topic_producer(mut self, topic: impl Into<String>, producer: impl Into<String>) -> Self {
        self.topic_producers.insert(topic.into(), producer.into());
        self
    }

    /// Settings of the default fetcher behind [`Client::fetch`].
    #[must_use]
    pub fn fetcher_config(mut self, config: FetcherConfig) -> Self {
        self.fetcher = config;
        self
    }

    /// Adds a named fetcher, with its own settings and batchers (for example, one
    /// with large requests for backfills), reached with [`Client::named_fetcher`].
    #[must_use]
    pub fn fetcher(mut self, name: impl Into<String>, config: FetcherConfig) -> Self {
        self.fetchers.push((name.into(), config));
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
        self.producer.validate().map_err(|e| Error::config("the default producer", e))?;
        let mut named = HashMap::new();
        for (name, config) in self.named {
            config.validate().map_err(|e| Error::config(format!("producer {name:?}"), e))?;
            if named.insert(name.clone(), (config, OnceCell::new())).is_some() {
                return Err(Error::invalid_argument(format!("two producers are named {name:?}")));
            }
        }
        for (topic, name) in &self.topic_producers {
            if !named.contains_key(name) {
                return Err(Error::invalid_argument(format!(
                    "topic {topic:?} uses producer {name:?}, which is not configured"
                )));
            }
        }
        self.fetcher.validate().map_err(|e| Error::invalid_argument(format!("fetcher: {e}")))?;
        for (name, config) in &self.fetchers {
            config.validate().map_err(|e| Error::invalid_argument(format!("fetcher {name:?}: {e}")))?;
        }
        let cluster = Cluster::connect(&self.bootstrap, self.config).await?;
        let mut fetchers = HashMap::new();
        for (name, config) in self.fetchers {
            let f = Fetcher::new(cluster.clone(), config)?;
            if fetchers.insert(name.clone(), f).is_some() {
                return Err(Error::invalid_argument(format!("two fetchers are named {name:?}")));
            }
        }
        Ok(Client {
            fetcher: Fetcher::new(cluster.clone(), self.fetcher)?,
            fetchers: Arc::new(fetchers),
            cluster,
            default_producer: Arc::new(OnceCell::new()),
            producer_config: self.producer,
            named: Arc::new(named),
            topic_producers: Arc::new(self.topic_producers),
        })
    }
}
