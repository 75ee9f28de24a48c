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
/// the client: `produce*` use the default producer (configured with
/// [`ClientBuilder::default_producer`]) or a topic's named producer
/// ([`ClientBuilder::named_producer`]); [`Client::new_producer`] makes more, each with
/// its own settings and batches. `fetch*` use the default fetcher
/// ([`ClientBuilder::default_fetcher`]); [`Client::named_fetcher`] reaches the others.
///
/// The names: the *default* producer and fetcher are the ones behind the client's own
/// `produce*` and `fetch*` calls; *named* ones are configured on the builder under a
/// name and kept by the client; [`new_producer`](Client::new_producer) makes a
/// producer the client does not keep.
///
/// ## Warming up
///
/// The default and named producers are created on first use, and creating an
/// idempotent producer asks the cluster for a producer id (InitProducerId): the first
/// record of each pays for it. [`warm_up`](Client::warm_up) creates them all now and
/// returns the error, if any (for example a cluster that refuses idempotence).
///
/// ## Closing and dropping
///
/// [`close`](Client::close) flushes the producers the client keeps, stops its fetchers
/// and closes every connection. A client dropped (with all its clones) without
/// `close()` does not flush: records still buffered in its producers fail with an error
/// for which [`Error::is_closed`] is true (their delivery futures say so; requests
/// already sent are still answered and settle their records), and the background tasks
/// (the producers' senders and lanes, the fetchers' batchers, the periodic metadata
/// refresh, the connections' readers and writers) end once the last handle to what they
/// serve is gone. A [`Producer`], [`Fetcher`] or [`Consumer`] taken from the client is
/// such a handle: it keeps the cluster and its connections alive until it is dropped
/// too. Call `close()` (or at least [`flush`](Client::flush)) before dropping a client
/// whose records matter.
#[derive(Clone, Debug)]
pub struct Client {
    pub(crate) cluster: Cluster,
    /// The default producer, behind `produce*`, created on first use with
    /// `default_producer_config`.
    default_producer: Arc<OnceCell<Producer>>,
    /// The default producer's settings (transactional producers take them too).
    default_producer_config: ProducerConfig,
    /// Named producers, created on first use.
    named_producers: Arc<HashMap<String, (ProducerConfig, OnceCell<Producer>)>>,
    /// Topic -> producer name, for topics that do not use the default producer.
    topic_producers: Arc<HashMap<String, String>>,
    /// The default fetcher, behind `fetch*` and `consumer`.
    default_fetcher: Fetcher,
    /// Named fetchers.
    named_fetchers: Arc<HashMap<String, Fetcher>>,
}

/// Builds a [`Client`].
#[derive(Debug, Clone, Default)]
pub struct ClientBuilder {
    bootstrap: Vec<String>,
    config: ConnectionConfig,
    default_producer: ProducerConfig,
    named_producers: Vec<(String, ProducerConfig)>,
    topic_producers: HashMap<String, String>,
    default_fetcher: FetcherConfig,
    named_fetchers: Vec<(String, FetcherConfig)>,
}

impl Client {
    /// A builder with default settings and no bootstrap servers yet.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// The cluster view underneath: metadata, connections by broker, coordinators
    /// (for sending requests klife does not wrap; see [`protocol`](crate::protocol)).
    pub fn cluster(&self) -> &Cluster {
        &self.cluster
    }

    /// Creates the default producer and every named one now (each asks the cluster
    /// for a producer id when idempotent), so that the first records do not pay for
    /// it; returns the first error, naming the producer.
    pub async fn warm_up(&self) -> Result<(), Error> {
        self.default_producer().await?;
        let mut names: Vec<&String> = self.named_producers.keys().collect();
        names.sort();
        for name in names {
            self.named_producer(name).await?;
        }
        Ok(())
    }

    /// Flushes the default producer, then closes every connection; later calls fail
    /// with an error for which [`Error::is_closed`] is true.
    pub async fn close(&self) {
        self.default_fetcher.close();
        for f in self.named_fetchers.values() {
            f.close();
        }
        if let Some(p) = self.default_producer.get() {
            p.close().await;
        }
        for (_, cell) in self.named_producers.values() {
            if let Some(p) = cell.get() {
                p.close().await;
            }
        }
        self.cluster.close().await;
    }

    /// A new producer with its own settings, batches and sender, sharing this client's
    /// connections. The client does not keep it: [`Client::close`] and
    /// [`Client::flush`] do not reach it (close it yourself).
    pub async fn new_producer(&self, config: ProducerConfig) -> Result<Producer, Error> {
        Ok(Producer::new(self.cluster.clone(), config).await?)
    }

    /// A transactional producer for `transactional_id` (fencing any older producer with
    /// that id), with the default producer's settings. The client does not keep it.
    pub async fn transactional_producer(
        &self,
        transactional_id: &str,
        transaction_timeout: Duration,
    ) -> Result<TransactionalProducer, Error> {
        Ok(TransactionalProducer::new(
            self.cluster.clone(),
            self.default_producer_config.clone(),
            transactional_id,
            transaction_timeout,
        )
        .await?)
    }

    /// A pool of `size` transactional producers with ids `{base_transactional_id}-{i}`,
    /// for `pool.transaction(|txn| ...)` and `pool.produce_batch_txn(records)`, with the
    /// default producer's settings. The client does not keep it.
    pub async fn transaction_pool(
        &self,
        base_transactional_id: &str,
        size: usize,
        transaction_timeout: Duration,
    ) -> Result<TransactionPool, Error> {
        Ok(TransactionPool::new(
            self.cluster.clone(),
            self.default_producer_config.clone(),
            base_transactional_id,
            size,
            transaction_timeout,
        )
        .await?)
    }

    /// The default producer (behind [`produce`](Self::produce) for topics without a
    /// named producer; configured with [`ClientBuilder::default_producer`]), created
    /// on first use.
    pub async fn default_producer(&self) -> Result<&Producer, Error> {
        self.default_producer
            .get_or_try_init(|| async {
                Producer::new(self.cluster.clone(), self.default_producer_config.clone()).await
            })
            .await
            .map_err(Error::from)
    }

    /// The named producer (configured with [`ClientBuilder::named_producer`]), created
    /// on first use.
    pub async fn named_producer(&self, name: &str) -> Result<&Producer, Error> {
        let (config, cell) = self
            .named_producers
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
        for (_, cell) in self.named_producers.values() {
            if let Some(p) = cell.get() {
                p.flush().await;
            }
        }
    }

    /// The default fetcher, behind [`fetch`](Self::fetch) and
    /// [`consumer`](Self::consumer) (configured with
    /// [`ClientBuilder::default_fetcher`]).
    pub fn default_fetcher(&self) -> &Fetcher {
        &self.default_fetcher
    }

    /// The named fetcher (configured with [`ClientBuilder::named_fetcher`]).
    pub fn named_fetcher(&self, name: &str) -> Result<&Fetcher, Error> {
        self.named_fetchers
            .get(name)
            .ok_or_else(|| Error::invalid_argument(format!("no fetcher named {name:?} is configured")))
    }

    /// Fetches records of `topic`-`partition` from `offset` on (whatever the broker
    /// has, up to the fetcher's per-partition byte limit).
    pub async fn fetch(&self, topic: &str, partition: i32, offset: i64) -> Result<Fetched, Error> {
        Ok(self.default_fetcher.fetch(topic, partition, offset).await?)
    }

    /// [`fetch`](Self::fetch) with per-call options (isolation level, bytes).
    pub async fn fetch_with(&self, target: TopicPartitionOffset, options: &FetchOptions) -> Result<Fetched, Error> {
        Ok(self.default_fetcher.fetch_with(target, options).await?)
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
        let results = self.default_fetcher.fetch_many(targets, options).await;
        results.into_iter().map(|(t, r)| (t, r.map_err(Error::from))).collect()
    }

    /// Starts a fetch; the returned future gives its result (drop it to abandon the
    /// fetch).
    pub fn fetch_async(
        &self,
        target: TopicPartitionOffset,
        options: &FetchOptions,
    ) -> impl Future<Output = Result<Fetched, Error>> + Send + 'static {
        let handle = self.default_fetcher.fetch_async(target, options);
        async move { Ok(handle.await?) }
    }

    /// Fetches several targets and yields each result as it arrives (a `Stream`;
    /// its errors convert into [`Error`] with `?`).
    pub fn fetch_stream<I, T>(&self, targets: I, options: &FetchOptions) -> FetchStream
    where
        I: IntoIterator<Item = T>,
        T: Into<TopicPartitionOffset>,
    {
        self.default_fetcher.fetch_stream(targets, options)
    }

    /// A standalone consumer over the default fetcher: assign partitions
    /// ([`Consumer::assign`]) or whole topics ([`Consumer::assign_topic`]), then call
    /// `next()`. It resets out-of-range positions and goes on after a log truncated by
    /// an unclean leader election by its [`OffsetReset`](crate::OffsetReset) policy
    /// (`with_offset_reset(OffsetReset::Error)` to be told instead), and stops a
    /// partition whose topic was deleted and created again.
    /// [`Consumer::with_max_wait`] gives it a `max_wait` of its own, and
    /// [`Consumer::with_partition_eof`] reports partitions that caught up.
    pub fn consumer(&self, options: FetchOptions) -> Consumer {
        Consumer::new(self.default_fetcher.clone(), options)
    }

    /// The named fetchers, for consumer groups.
    pub(crate) fn named_fetchers_map(&self) -> HashMap<String, Fetcher> {
        self.named_fetchers.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    /// A standalone consumer over the named fetcher (see [`consumer`](Self::consumer)).
    pub fn named_consumer(&self, fetcher: &str, options: FetchOptions) -> Result<Consumer, Error> {
        Ok(Consumer::new(self.named_fetcher(fetcher)?.clone(), options))
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

    /// How long a call to the cluster (admin, offsets, coordinators, transactions)
    /// keeps retrying what may heal — a moved leader, a coordinator still loading, a
    /// broken connection — before it fails with the last error (default 30 s). See
    /// [`RetryPolicy`](crate::RetryPolicy).
    #[must_use]
    pub fn retry_timeout(mut self, timeout: Duration) -> Self {
        self.config.retry_timeout = timeout;
        self
    }

    /// The wait before such a call's first retry, and its cap as it doubles (defaults
    /// 100 ms and 1 s).
    #[must_use]
    pub fn retry_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.config.retry_backoff = initial;
        self.config.retry_backoff_max = max;
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

    /// Settings of the default producer, behind [`Client::produce`] for topics without
    /// a named producer.
    #[must_use]
    pub fn default_producer(mut self, config: ProducerConfig) -> Self {
        self.default_producer = config;
        self
    }

    /// Adds a named producer, with its own settings and batches (for example, one with
    /// a long linger and compression for bulk topics).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), klife::Error> {
    /// // Four batchers per broker: a broker's partitions are spread over them, and each
    /// // sends its own Produce requests on a connection of its own, with its own
    /// // in-flight window (brokers serve a connection's requests one at a time).
    /// let bulk = klife::ProducerConfig::default()
    ///     .with_linger(std::time::Duration::from_millis(50))
    ///     .with_batchers_per_broker(4);
    /// let client = klife::Client::builder()
    ///     .bootstrap_servers(["127.0.0.1:9092"])
    ///     .named_producer("bulk", bulk)
    ///     .topic_producer("events", "bulk")
    ///     .build()
    ///     .await?;
    /// # drop(client);
    /// # Ok(())
    /// # }
    /// ```
    #[must_use]
    pub fn named_producer(mut self, name: impl Into<String>, config: ProducerConfig) -> Self {
        self.named_producers.push((name.into(), config));
        self
    }

    /// Makes `topic`'s records go through the named producer by default.
    #[must_use]
    pub fn topic_producer(mut self, topic: impl Into<String>, producer: impl Into<String>) -> Self {
        self.topic_producers.insert(topic.into(), producer.into());
        self
    }

    /// Settings of the default fetcher, behind [`Client::fetch`] and
    /// [`Client::consumer`].
    #[must_use]
    pub fn default_fetcher(mut self, config: FetcherConfig) -> Self {
        self.default_fetcher = config;
        self
    }

    /// Adds a named fetcher, with its own settings and batchers (for example, one
    /// with large requests for backfills), reached with [`Client::named_fetcher`].
    #[must_use]
    pub fn named_fetcher(mut self, name: impl Into<String>, config: FetcherConfig) -> Self {
        self.named_fetchers.push((name.into(), config));
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
        self.default_producer.validate().map_err(|e| Error::config("the default producer", e))?;
        let mut named = HashMap::new();
        for (name, config) in self.named_producers {
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
        self.default_fetcher.validate().map_err(|e| Error::config("the default fetcher", e))?;
        for (name, config) in &self.named_fetchers {
            config.validate().map_err(|e| Error::config(format!("fetcher {name:?}"), e))?;
        }
        let cluster = Cluster::connect(&self.bootstrap, self.config).await?;
        let mut fetchers = HashMap::new();
        for (name, config) in self.named_fetchers {
            let f = Fetcher::new(cluster.clone(), config)?;
            if fetchers.insert(name.clone(), f).is_some() {
                return Err(Error::invalid_argument(format!("two fetchers are named {name:?}")));
            }
        }
        Ok(Client {
            default_fetcher: Fetcher::new(cluster.clone(), self.default_fetcher)?,
            named_fetchers: Arc::new(fetchers),
            cluster,
            default_producer: Arc::new(OnceCell::new()),
            default_producer_config: self.default_producer,
            named_producers: Arc::new(named),
            topic_producers: Arc::new(self.topic_producers),
        })
    }
}
