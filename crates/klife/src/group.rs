//! Consumer groups: [`Client::consumer_group`], with a handler, as a stream
//! ([`ConsumerGroupBuilder::stream`]) or in manual mode.
//!
//! Everything a group needs is re-exported here from `klife-group`: the [`Handler`]
//! trait, its [`Action`]s, the group's and topics' settings, and the running group's
//! handle, [`ConsumerGroup`]. See [`klife_group::runtime`] for the delivery guarantees.
//!
//! ```no_run
//! use klife::group::{Action, BatchContext, Handler, ResetPolicy, TopicConfig};
//! use klife::Record;
//!
//! struct Orders;
//!
//! impl Handler for Orders {
//!     async fn handle_record_batch(&self, _ctx: &BatchContext, records: Vec<Record>) -> Action {
//!         for r in &records {
//!             println!("{}: {:?}", r.offset, r.value);
//!         }
//!         Action::Commit
//!     }
//! }
//!
//! # async fn run() -> Result<(), klife::Error> {
//! let client = klife::Client::builder().bootstrap_servers(["127.0.0.1:9092"]).build().await?;
//! let group = client
//!     .consumer_group("orders-svc")
//!     .topic(TopicConfig::new("orders").offset_reset(ResetPolicy::Earliest))
//!     .handler(Orders)
//!     .start()
//!     .await?;
//! // ...
//! group.shutdown().await?;
//! # Ok(())
//! # }
//! ```

use std::time::Duration;

pub use klife_group::assignor::{Assignor, CooperativeStickyAssignor, RangeAssignor, RoundRobinAssignor};
pub use klife_group::driver::DriverConfig;
pub use klife_group::membership::consumer::ServerAssignor;
pub use klife_group::offsets::{GroupProtocol, ResetPolicy};
pub use klife_group::runtime::{
    Action, Batch, BatchContext, BatchSize, ConsumerGroup, DLQ_GROUP_HEADER, DLQ_OFFSET_HEADER, DLQ_PARTITION_HEADER,
    DLQ_REASON_HEADER, DLQ_TOPIC_HEADER, FetchStrategy, GroupConfig, GroupEvent, GroupStopped, GroupStream, Handler,
    Lease, ManualError, MisuseError, Mode, PartitionContext, PartitionError, PartitionFailure, RecordAction,
    StopReason, StreamBatch, TopicConfig,
};
pub use klife_group::{ConfigError, GroupError};

use klife_pipeline::runtime::{Pipeline, PipelineConfig, Processor, Source};

use crate::{Client, Error};

/// No handler chosen yet ([`ConsumerGroupBuilder::handler`]).
#[derive(Debug, Clone, Copy)]
pub struct NoHandler;

/// Builds a consumer group on a [`Client`]: [`Client::consumer_group`].
#[derive(Debug)]
pub struct ConsumerGroupBuilder<'a, H = NoHandler> {
    client: &'a Client,
    config: GroupConfig,
    handler: H,
}

impl Client {
    /// A consumer group named `group` on this client: add topics, a handler, then
    /// [`start`](ConsumerGroupBuilder::start). One handler type may run under many
    /// group names, each an independent member.
    pub fn consumer_group(&self, group: impl Into<String>) -> ConsumerGroupBuilder<'_, NoHandler> {
        ConsumerGroupBuilder { client: self, config: GroupConfig::new(group), handler: NoHandler }
    }
}

impl<'a, H> ConsumerGroupBuilder<'a, H> {
    /// Adds a topic.
    #[must_use]
    pub fn topic(mut self, topic: TopicConfig) -> Self {
        self.config.topics.push(topic);
        self
    }

    /// Also consumes every topic whose whole name `regex` matches (RE2/J, resolved by
    /// the broker; KIP-848 only), with the default topic settings.
    #[must_use]
    pub fn topic_regex(mut self, regex: impl Into<String>) -> Self {
        self.config.topic_regex = Some(regex.into());
        self
    }

    /// Sets the settings every topic that does not set its own takes.
    #[must_use]
    pub fn default_topic_config(mut self, defaults: TopicConfig) -> Self {
        self.config.default_topic_config = defaults;
        self
    }

    /// Makes the member static (KIP-345) with this instance id.
    #[must_use]
    pub fn instance_id(mut self, id: impl Into<String>) -> Self {
        self.config.instance_id = Some(id.into());
        self
    }

    /// Sets the rebalance timeout (30 s by default).
    #[must_use]
    pub fn rebalance_timeout(mut self, timeout: Duration) -> Self {
        self.config.rebalance_timeout = timeout;
        self
    }

    /// Sets which fetcher serves the group's topics (the client's default fetcher by
    /// default).
    #[must_use]
    pub fn fetch_strategy(mut self, strategy: FetchStrategy) -> Self {
        self.config.fetch_strategy = strategy;
        self
    }

    /// Sets how many committers share the group's partitions (1 by default).
    #[must_use]
    pub fn committers_count(mut self, n: usize) -> Self {
        self.config.committers_count = n;
        self
    }

    /// Sets how many OffsetCommit requests each committer may have in flight, each on
    /// a connection of its own (2 by default). A broker answers one request of a
    /// connection at a time, and Apache Kafka holds each commit for its append linger
    /// (5 ms): a second connection lets a partition that finished just after a commit
    /// left commit at once instead of after that commit's answer. A partition is in one
    /// commit at a time whatever this is, so its committed offset only moves forward.
    #[must_use]
    pub fn commits_in_flight(mut self, n: usize) -> Self {
        self.config.commits_in_flight = n;
        self
    }

    /// Sets the group protocol ([`GroupProtocol::Auto`] by default: KIP-848 where the
    /// coordinator has it, else classic).
    #[must_use]
    pub fn protocol(mut self, protocol: GroupProtocol) -> Self {
        self.config.protocol = protocol;
        self
    }

    /// Sets the member's rack.
    #[must_use]
    pub fn rack_id(mut self, rack: impl Into<String>) -> Self {
        self.config.rack_id = Some(rack.into());
        self
    }

    /// Sets the server-side assignor of a KIP-848 group.
    #[must_use]
    pub fn server_assignor(mut self, assignor: ServerAssignor) -> Self {
        self.config.server_assignor = Some(assignor);
        self
    }

    /// Classic protocol: the assignors offered when this member leads, in order of
    /// preference (cooperative-sticky by default).
    #[must_use]
    pub fn assignors(mut self, assignors: Vec<std::sync::Arc<dyn Assignor>>) -> Self {
        self.config.assignors = Some(assignors);
        self
    }

    /// Classic protocol: the session timeout (45 s by default).
    #[must_use]
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.config.session_timeout = Some(timeout);
        self
    }

    /// Classic protocol: the time between heartbeats (3 s by default).
    #[must_use]
    pub fn heartbeat_interval(mut self, interval: Duration) -> Self {
        self.config.heartbeat_interval = Some(interval);
        self
    }

    /// Sets the member task's settings (heartbeat timeout, version caps).
    #[must_use]
    pub fn driver(mut self, driver: DriverConfig) -> Self {
        self.config.driver = driver;
        self
    }

    /// Replaces every setting at once.
    #[must_use]
    pub fn config(mut self, config: GroupConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets the handler.
    pub fn handler<H2: Handler>(self, handler: H2) -> ConsumerGroupBuilder<'a, H2> {
        ConsumerGroupBuilder { client: self.client, config: self.config, handler }
    }

    /// Resources of the client for a group.
    async fn resources(&self) -> Result<klife_group::runtime::Resources, Error> {
        let client = self.client;
        let producer = client.default_producer().await?.clone();
        Ok(klife_group::runtime::Resources {
            cluster: client.cluster.clone(),
            default_fetcher: client.default_fetcher().clone(),
            named_fetchers: client.named_fetchers_map(),
            producer: Some(producer),
        })
    }
}

impl ConsumerGroupBuilder<'_, NoHandler> {
    /// Starts a member whose topics are all in [`Mode::Manual`]: a driver pulls their
    /// batches through [`ConsumerGroup::lease`] and commits them. A topic in handler
    /// mode is refused ([`Error::is_invalid_argument`]).
    ///
    /// ```no_run
    /// use klife::group::{Mode, ResetPolicy, TopicConfig};
    ///
    /// # async fn run(client: klife::Client) -> Result<(), klife::Error> {
    /// let group = client
    ///     .consumer_group("orders-pipeline")
    ///     .topic(TopicConfig::new("orders").mode(Mode::Manual).offset_reset(ResetPolicy::Earliest))
    ///     .start_manual()
    ///     .await?;
    /// # tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    /// for tp in group.assigned_partitions() {
    ///     let lease = group.lease(&tp.topic, tp.partition)?;
    ///     while let Some(batch) = lease.pull()? {
    ///         // ... handle batch.records ...
    ///         lease.commit(batch.next_offset)?;
    ///     }
    /// }
    /// group.shutdown().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn start_manual(self) -> Result<ConsumerGroup, Error> {
        let resources = self.resources().await?;
        ConsumerGroup::start_manual(resources, self.config).map_err(Error::group_config)
    }

    /// Starts a member as a [`GroupStream`]: the batches of every partition it owns
    /// and the changes of its assignment, in order, with explicit commits. Every topic
    /// runs in [`Mode::Manual`]; one that sets [`Mode::Handler`] is refused
    /// ([`Error::is_invalid_argument`]).
    ///
    /// ```no_run
    /// use klife::group::{GroupEvent, ResetPolicy, TopicConfig};
    ///
    /// # async fn run(client: klife::Client) -> Result<(), klife::Error> {
    /// let mut stream = client
    ///     .consumer_group("orders-svc")
    ///     .topic(TopicConfig::new("orders").offset_reset(ResetPolicy::Earliest))
    ///     .stream()
    ///     .await?;
    /// while let Some(event) = stream.next().await {
    ///     match event {
    ///         GroupEvent::Batch(batch) => {
    ///             for r in batch.records() {
    ///                 println!("{}-{} {}: {:?}", r.topic, r.partition, r.offset, r.value);
    ///             }
    ///             batch.commit()?;
    ///         }
    ///         // Nothing is held here: every batch was committed as it came. A loop
    ///         // that holds batches commits those of these partitions now.
    ///         GroupEvent::Revoking(_partitions) => {}
    ///         other => println!("{other:?}"),
    ///     }
    /// #   stream.close();
    /// }
    /// stream.shutdown().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub async fn stream(self) -> Result<GroupStream, Error> {
        let resources = self.resources().await?;
        ConsumerGroup::start_stream(resources, self.config).map_err(Error::group_config)
    }
}

impl ConsumerGroupBuilder<'_, NoHandler> {
    /// Starts an exactly-once member: every batch is given to `transform`, and its
    /// output produced together with the batch's offsets in one transaction of a
    /// transactional producer of the member's own (`config.transactional_id`). Every
    /// topic runs in [`Mode::Manual`]; one set to [`Mode::Handler`] is refused. See
    /// [`crate::exactly_once`] for the guarantees.
    pub async fn exactly_once<T: crate::exactly_once::Transform>(
        self,
        config: crate::exactly_once::ExactlyOnceConfig,
        transform: T,
    ) -> Result<crate::exactly_once::ExactlyOnce, Error> {
        config.check()?;
        let producer = self.client.transactional_producer(&config.transactional_id, config.transaction_timeout).await?;
        let instance_id = self.config.instance_id.clone();
        let stream = match self.stream().await {
            Ok(stream) => stream,
            Err(e) => {
                producer.close().await;
                return Err(e);
            }
        };
        Ok(crate::exactly_once::ExactlyOnce::start(stream, producer, config, instance_id, transform))
    }

    /// Starts the member as the source of a transactional [`Pipeline`]: the records
    /// its messages produce ([`Message::produce`](crate::pipeline::Message::produce))
    /// and the offsets they acknowledge are committed together, in transactions of a
    /// transactional producer of the member's own (`eos.transactional_id`), so that a
    /// read_committed reader sees each message's output once. See
    /// [`Source::transactional`](klife_pipeline::runtime::Source::transactional) and
    /// [`crate::exactly_once`] for the guarantees.
    pub async fn transactional_pipeline<P: Processor>(
        self,
        config: PipelineConfig,
        eos: crate::exactly_once::ExactlyOnceConfig,
        processor: P,
    ) -> Result<Pipeline, Error> {
        eos.check()?;
        let producer = self.client.transactional_producer(&eos.transactional_id, eos.transaction_timeout).await?;
        let mut transactions =
            klife_pipeline::runtime::Transactions::new(producer.clone(), self.config.instance_id.clone());
        transactions.max_attempts = eos.max_attempts;
        transactions.retry_backoff = eos.retry_backoff;
        transactions.retry_backoff_max = eos.retry_backoff_max;
        let resources = match self.resources().await {
            Ok(r) => r,
            Err(e) => {
                producer.close().await;
                return Err(e);
            }
        };
        let source = Source::group(resources, self.config).transactional(transactions);
        match Pipeline::start(source, config, processor) {
            Ok(p) => Ok(p),
            Err(e) => {
                producer.close().await;
                Err(Error::pipeline_config(e))
            }
        }
    }

    /// Starts the member as the source of a [`Pipeline`] it owns: every topic in
    /// manual mode (one set to [`Mode::Handler`] is refused,
    /// [`Error::is_invalid_argument`]); `processor` handles the records. See
    /// [`crate::pipeline`].
    pub async fn pipeline<P: Processor>(self, config: PipelineConfig, processor: P) -> Result<Pipeline, Error> {
        let resources = self.resources().await?;
        Pipeline::start(Source::group(resources, self.config), config, processor).map_err(Error::pipeline_config)
    }
}

impl<H: Handler> ConsumerGroupBuilder<'_, H> {
    /// Starts the member as the source of a [`Pipeline`]: every topic in manual mode,
    /// the handler getting only the lifecycle callbacks (`on_consumer_start`,
    /// `on_consumer_stop`) of each partition; `processor` handles the records.
    pub async fn pipeline<P: Processor>(self, config: PipelineConfig, processor: P) -> Result<Pipeline, Error> {
        let resources = self.resources().await?;
        let source = Source::group_with_callbacks(resources, self.config, self.handler);
        Pipeline::start(source, config, processor).map_err(Error::pipeline_config)
    }

    /// Starts the member. Fails for invalid settings (named with
    /// [`Error::is_invalid_argument`]); joining and consuming go on in the background.
    /// Dead letters go through the client's default producer.
    pub async fn start(self) -> Result<ConsumerGroup, Error> {
        let resources = self.resources().await?;
        ConsumerGroup::start(resources, self.config, self.handler).map_err(Error::group_config)
    }
}
