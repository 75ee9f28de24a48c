//! A consumer group's settings: the group's own and each topic's, with the defaults
//! of Klife's `ConsumerGroup` (`seeds/000`).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use klife_fetcher::{FetcherConfig, IsolationLevel, OffsetReset};

use crate::assignor::Assignor;
use crate::driver::DriverConfig;
use crate::error::ConfigError;
use crate::membership::consumer::ServerAssignor;
use crate::offsets::{GroupProtocol, ResetPolicy};

/// How many empty answers in a row lengthen a partition's pause before its next
/// fetch (`fetch_interval` × at most this).
pub const MAX_IDLE_STEPS: u32 = 5;

/// The default rebalance timeout (Klife's `rebalance_timeout_ms`).
pub const DEFAULT_REBALANCE_TIMEOUT: Duration = Duration::from_secs(30);
/// The default `fetch_max_bytes` of a topic.
pub const DEFAULT_FETCH_MAX_BYTES: usize = 1_000_000;
/// The default `fetch_interval` of a topic.
pub const DEFAULT_FETCH_INTERVAL: Duration = Duration::from_millis(1000);

/// Which fetcher serves a group's (or a topic's) partitions.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub enum FetchStrategy {
    /// The client's default fetcher (the default).
    #[default]
    Default,
    /// A fetcher the client already has, by name.
    Shared(String),
    /// A fetcher of its own with these settings: one for the group when set on the
    /// group, one for the topic when set on a topic.
    Exclusive(FetcherConfig),
}

/// How many records a handler call gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BatchSize {
    /// All the records of one fetch answer (the default).
    #[default]
    Dynamic,
    /// At most this many.
    Max(usize),
}

/// Who takes a topic's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// The group's [`Handler`](super::Handler) (the default).
    #[default]
    Handler,
    /// Nobody inside the group: an external driver pulls each partition's batches
    /// through a [`Lease`](super::Lease) and commits what it finished
    /// ([`ConsumerGroup::lease`](super::ConsumerGroup::lease)). The group still joins,
    /// fetches ahead (`max_queue_size` batches of at most `handler_max_batch_size`
    /// records), calls the handler's `on_consumer_start` / `on_consumer_stop`, and
    /// waits on a revocation for what was pulled to be committed.
    Manual,
}

/// A topic of the group and its settings; unset ones come from the group's
/// `default_topic_config`, then from the defaults listed with each setter.
#[derive(Debug, Clone, Default)]
pub struct TopicConfig {
    /// The topic.
    pub name: String,
    /// Overrides the group's fetch strategy for this topic.
    pub fetch_strategy: Option<FetchStrategy>,
    /// Read committed (default) or uncommitted records.
    pub isolation_level: Option<IsolationLevel>,
    /// Where a partition without committed offset starts (default latest).
    pub offset_reset: Option<ResetPolicy>,
    /// The most bytes of the partition per fetch (default 1,000,000); less than the
    /// fetcher's `max_bytes_per_request`.
    pub fetch_max_bytes: Option<usize>,
    /// How many fetched batches a partition keeps ahead of its handler (default 5
    /// with a dynamic batch size, 20 otherwise).
    pub max_queue_size: Option<usize>,
    /// The pause before fetching again after an answer with nothing (default 1 s);
    /// it grows linearly with each empty answer in a row, up to
    /// [`MAX_IDLE_STEPS`] times.
    pub fetch_interval: Option<Duration>,
    /// The wait between two handler calls of a partition (default 0); the handler
    /// may override it for one cycle ([`BatchContext::set_cooldown`](super::BatchContext::set_cooldown)).
    pub handler_cooldown: Option<Duration>,
    /// How many finished batches of a partition may wait for their commit while the
    /// handler goes on (default 0: each batch waits for the commit of the one before).
    /// After a hard failure, at most these batches and the one in hand are handled
    /// again.
    pub handler_max_unacked_commits: Option<usize>,
    /// How many records a handler call gets (default dynamic: one fetch answer); in
    /// manual mode, how many records a pull gets.
    pub handler_max_batch_size: Option<BatchSize>,
    /// Whether the handler takes the records or an external driver pulls them
    /// (default [`Mode::Handler`]).
    pub mode: Option<Mode>,
}

impl TopicConfig {
    /// A topic with every setting from the group's defaults.
    pub fn new(name: impl Into<String>) -> TopicConfig {
        TopicConfig { name: name.into(), ..TopicConfig::default() }
    }

    /// Sets the fetch strategy of this topic.
    #[must_use]
    pub fn fetch_strategy(mut self, strategy: FetchStrategy) -> Self {
        self.fetch_strategy = Some(strategy);
        self
    }

    /// Sets the isolation level.
    #[must_use]
    pub fn isolation(mut self, level: IsolationLevel) -> Self {
        self.isolation_level = Some(level);
        self
    }

    /// Sets where a partition without committed offset starts.
    #[must_use]
    pub fn offset_reset(mut self, policy: ResetPolicy) -> Self {
        self.offset_reset = Some(policy);
        self
    }

    /// Sets the most bytes of a partition per fetch.
    #[must_use]
    pub fn fetch_max_bytes(mut self, bytes: usize) -> Self {
        self.fetch_max_bytes = Some(bytes);
        self
    }

    /// Sets how many fetched batches a partition keeps ahead of its handler.
    #[must_use]
    pub fn max_queue_size(mut self, batches: usize) -> Self {
        self.max_queue_size = Some(batches);
        self
    }

    /// Sets the pause before fetching again after an empty answer.
    #[must_use]
    pub fn fetch_interval(mut self, interval: Duration) -> Self {
        self.fetch_interval = Some(interval);
        self
    }

    /// Sets the wait between two handler calls of a partition.
    #[must_use]
    pub fn handler_cooldown(mut self, cooldown: Duration) -> Self {
        self.handler_cooldown = Some(cooldown);
        self
    }

    /// Sets how many finished batches may wait for their commit.
    #[must_use]
    pub fn handler_max_unacked_commits(mut self, batches: usize) -> Self {
        self.handler_max_unacked_commits = Some(batches);
        self
    }

    /// Sets how many records a handler call gets.
    #[must_use]
    pub fn handler_max_batch_size(mut self, size: BatchSize) -> Self {
        self.handler_max_batch_size = Some(size);
        self
    }

    /// Sets who takes the records: the handler, or a driver pulling them.
    #[must_use]
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = Some(mode);
        self
    }

    /// This topic's settings over `defaults` (which have no name).
    fn over(&self, defaults: &TopicConfig) -> TopicConfig {
        TopicConfig {
            name: self.name.clone(),
            fetch_strategy: self.fetch_strategy.clone().or_else(|| defaults.fetch_strategy.clone()),
            isolation_level: self.isolation_level.or(defaults.isolation_level),
            offset_reset: self.offset_reset.or(defaults.offset_reset),
            fetch_max_bytes: self.fetch_max_bytes.or(defaults.fetch_max_bytes),
            max_queue_size: self.max_queue_size.or(defaults.max_queue_size),
            fetch_interval: self.fetch_interval.or(defaults.fetch_interval),
            handler_cooldown: self.handler_cooldown.or(defaults.handler_cooldown),
            handler_max_unacked_commits: self.handler_max_unacked_commits.or(defaults.handler_max_unacked_commits),
            handler_max_batch_size: self.handler_max_batch_size.or(defaults.handler_max_batch_size),
            mode: self.mode.or(defaults.mode),
        }
    }
}

/// A topic's settings, every default filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TopicSettings {
    pub(crate) name: String,
    pub(crate) isolation_level: IsolationLevel,
    pub(crate) offset_reset: ResetPolicy,
    pub(crate) fetch_max_bytes: Option<usize>,
    pub(crate) max_queue_size: usize,
    pub(crate) fetch_interval: Duration,
    pub(crate) handler_cooldown: Duration,
    pub(crate) max_unacked_commits: usize,
    pub(crate) batch_size: BatchSize,
    pub(crate) mode: Mode,
}

impl TopicSettings {
    /// The records per handler call, `None` for all of an answer.
    pub(crate) fn max_batch_size(&self) -> Option<usize> {
        match self.batch_size {
            BatchSize::Dynamic => None,
            BatchSize::Max(n) => Some(n),
        }
    }

    /// What the partition's fetches do with an out-of-range position: the group's
    /// reset policy (a committed offset deleted by retention resets like none).
    pub(crate) fn fetch_reset(&self) -> OffsetReset {
        match self.offset_reset {
            ResetPolicy::Earliest => OffsetReset::Earliest,
            ResetPolicy::Latest => OffsetReset::Latest,
            ResetPolicy::Error => OffsetReset::Error,
        }
    }
}

/// A consumer group's settings (Klife's `ConsumerGroup` options).
#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// The group (`group_name`).
    pub group: String,
    /// The static member's instance id (KIP-345), if any.
    pub instance_id: Option<String>,
    /// How long the coordinator waits for the member to give revoked partitions up
    /// (default 30 s); a graceful revocation or shutdown waits for the partitions'
    /// handlers and commits at most this long.
    pub rebalance_timeout: Duration,
    /// Which fetcher serves the group's topics that set none of their own.
    pub fetch_strategy: FetchStrategy,
    /// How many committers share the group's partitions (default 1).
    pub committers_count: usize,
    /// How many OffsetCommit requests each committer may have in flight, each on a
    /// connection of its own (default 2; see
    /// [`OffsetsConfig::commits_in_flight`](crate::offsets::OffsetsConfig::commits_in_flight)).
    /// A partition is in one commit at a time whatever it is.
    pub commits_in_flight: usize,
    /// The settings of every topic that does not set its own.
    pub default_topic_config: TopicConfig,
    /// The topics.
    pub topics: Vec<TopicConfig>,
    /// Also every topic whose whole name this regular expression matches (RE2/J syntax,
    /// resolved by the broker, also for topics created later), with the settings of
    /// `default_topic_config`. It needs the consumer group protocol (KIP-848):
    /// [`GroupProtocol::Auto`] then runs it without a fall back to classic.
    pub topic_regex: Option<String>,
    /// The group protocol: [`GroupProtocol::Auto`] (the default) runs KIP-848 where
    /// the coordinator offers and accepts it and falls back to the classic protocol
    /// when its first join is refused as unsupported; `Consumer` and `Classic` force
    /// one.
    pub protocol: GroupProtocol,
    /// Classic protocol: the assignors offered when this member leads, in order of
    /// preference (`None`: cooperative-sticky).
    pub assignors: Option<Vec<Arc<dyn Assignor>>>,
    /// Classic protocol: the session timeout sent in JoinGroup (`None`: 45 s).
    pub session_timeout: Option<Duration>,
    /// Classic protocol: the time between heartbeats (`None`: 3 s). Under KIP-848 the
    /// coordinator sets it.
    pub heartbeat_interval: Option<Duration>,
    /// The rack of the member, for rack-aware assignors.
    pub rack_id: Option<String>,
    /// The server-side assignor of a KIP-848 group (`uniform` or `range` on Kafka;
    /// `None`: the broker's default).
    pub server_assignor: Option<ServerAssignor>,
    /// The settings of the member's task (heartbeat timeout, version caps for brokers
    /// that misread some versions). Its `auto_release` is ignored: the group releases
    /// revoked partitions once they are committed.
    pub driver: DriverConfig,
    /// The first wait before a failed partition starts again; it doubles with each
    /// failure in a row, up to [`GroupConfig::restart_backoff_max`].
    pub restart_backoff: Duration,
    /// The longest wait before a failed partition starts again.
    pub restart_backoff_max: Duration,
}

impl GroupConfig {
    /// A group with no topic yet and every default.
    pub fn new(group: impl Into<String>) -> GroupConfig {
        GroupConfig {
            group: group.into(),
            instance_id: None,
            rebalance_timeout: DEFAULT_REBALANCE_TIMEOUT,
            fetch_strategy: FetchStrategy::Default,
            committers_count: 1,
            commits_in_flight: crate::offsets::DEFAULT_COMMITS_IN_FLIGHT,
            default_topic_config: TopicConfig::default(),
            topics: Vec::new(),
            topic_regex: None,
            protocol: GroupProtocol::Auto,
            assignors: None,
            session_timeout: None,
            heartbeat_interval: None,
            rack_id: None,
            server_assignor: None,
            driver: DriverConfig::default(),
            restart_backoff: Duration::from_millis(500),
            restart_backoff_max: Duration::from_secs(30),
        }
    }

    /// Every topic's settings, defaults filled in; the first problem otherwise.
    pub(crate) fn topic_settings(
        &self,
        max_bytes_per_request: impl Fn(&str) -> usize,
    ) -> Result<Vec<TopicSettings>, ConfigError> {
        if self.group.is_empty() {
            return Err(ConfigError::EmptyGroupId);
        }
        if self.instance_id.as_deref() == Some("") {
            return Err(ConfigError::EmptyInstanceId);
        }
        if self.committers_count == 0 {
            return Err(ConfigError::NoCommitters);
        }
        if self.commits_in_flight == 0 {
            return Err(ConfigError::NoCommitsInFlight);
        }
        if self.rebalance_timeout.is_zero() || self.rebalance_timeout.as_millis() > i32::MAX as u128 {
            return Err(ConfigError::RebalanceTimeoutOutOfRange);
        }
        match self.topic_regex.as_deref() {
            None if self.topics.is_empty() => return Err(ConfigError::NoTopics),
            Some("") => return Err(ConfigError::EmptyTopicRegex),
            Some(_) if self.protocol == GroupProtocol::Classic => {
                return Err(ConfigError::RegexNeedsConsumerProtocol);
            }
            _ => {}
        }
        if !self.default_topic_config.name.is_empty() {
            return Err(ConfigError::NamedDefaultTopicConfig(self.default_topic_config.name.clone()));
        }
        let mut seen = BTreeSet::new();
        let mut out = Vec::with_capacity(self.topics.len());
        for t in &self.topics {
            if t.name.is_empty() {
                return Err(ConfigError::EmptyTopicName);
            }
            if !seen.insert(t.name.as_str()) {
                return Err(ConfigError::DuplicateTopic(t.name.clone()));
            }
            manual_fits(t, self.default_topic_config.mode)?;
            out.push(settings(t.over(&self.default_topic_config), &max_bytes_per_request)?);
        }
        Ok(out)
    }

    /// The settings of the topics the regex matches (`None` without a regex).
    pub(crate) fn regex_settings(
        &self,
        max_bytes_per_request: impl Fn(&str) -> usize,
    ) -> Result<Option<TopicSettings>, ConfigError> {
        match &self.topic_regex {
            None => Ok(None),
            Some(_) => {
                manual_fits(&self.default_topic_config, None)?;
                settings(self.default_topic_config.clone(), &max_bytes_per_request).map(Some)
            }
        }
    }
}

/// A manual topic must not set what only a handler uses on itself (the group's
/// defaults for them apply to its handler topics only).
fn manual_fits(t: &TopicConfig, default_mode: Option<Mode>) -> Result<(), ConfigError> {
    if t.mode.or(default_mode) != Some(Mode::Manual) {
        return Ok(());
    }
    let setting = if t.handler_cooldown.is_some() {
        "handler_cooldown"
    } else if t.handler_max_unacked_commits.is_some() {
        "handler_max_unacked_commits"
    } else {
        return Ok(());
    };
    Err(ConfigError::HandlerSettingInManualMode { topic: t.name.clone(), setting })
}

/// A topic's settings with every default filled in, checked.
fn settings(t: TopicConfig, max_bytes_per_request: &impl Fn(&str) -> usize) -> Result<TopicSettings, ConfigError> {
    let batch_size = t.handler_max_batch_size.unwrap_or_default();
    if batch_size == BatchSize::Max(0) {
        return Err(ConfigError::ZeroBatchSize(t.name));
    }
    let max_queue_size = t.max_queue_size.unwrap_or(if batch_size == BatchSize::Dynamic { 5 } else { 20 });
    if max_queue_size == 0 {
        return Err(ConfigError::ZeroQueueSize(t.name));
    }
    let fetch_max_bytes = t.fetch_max_bytes.unwrap_or(DEFAULT_FETCH_MAX_BYTES);
    let max = max_bytes_per_request(&t.name);
    if fetch_max_bytes == 0 || fetch_max_bytes >= max {
        return Err(ConfigError::FetchMaxBytesOutOfRange { topic: t.name, bytes: fetch_max_bytes, max });
    }
    Ok(TopicSettings {
        name: t.name.clone(),
        isolation_level: t.isolation_level.unwrap_or(IsolationLevel::ReadCommitted),
        offset_reset: t.offset_reset.unwrap_or_default(),
        fetch_max_bytes: Some(fetch_max_bytes),
        max_queue_size,
        fetch_interval: t.fetch_interval.unwrap_or(DEFAULT_FETCH_INTERVAL),
        handler_cooldown: t.handler_cooldown.unwrap_or_default(),
        max_unacked_commits: t.handler_max_unacked_commits.unwrap_or(0),
        batch_size,
        mode: t.mode.unwrap_or_default(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    const MAX: usize = 50 * 1024 * 1024;

    #[test]
    fn defaults_are_klifes() {
        let mut g = GroupConfig::new("g");
        g.topics.push(TopicConfig::new("a"));
        g.topics.push(TopicConfig::new("b").handler_max_batch_size(BatchSize::Max(10)));
        let s = g.topic_settings(|_| MAX).unwrap();
        assert_eq!(g.rebalance_timeout, Duration::from_secs(30));
        assert_eq!(g.committers_count, 1);
        assert_eq!(s[0].isolation_level, IsolationLevel::ReadCommitted);
        assert_eq!(s[0].offset_reset, ResetPolicy::Latest);
        assert_eq!(s[0].fetch_max_bytes, Some(1_000_000));
        assert_eq!((s[0].max_queue_size, s[1].max_queue_size), (5, 20));
        assert_eq!(s[0].fetch_interval, Duration::from_secs(1));
        assert_eq!((s[0].handler_cooldown, s[0].max_unacked_commits), (Duration::ZERO, 0));
    }

    #[test]
    fn a_topic_overrides_the_group_defaults_which_override_klifes() {
        let mut g = GroupConfig::new("g");
        g.default_topic_config =
            TopicConfig::default().handler_max_unacked_commits(100).offset_reset(ResetPolicy::Earliest);
        g.topics.push(TopicConfig::new("a"));
        g.topics.push(TopicConfig::new("b").offset_reset(ResetPolicy::Latest));
        let s = g.topic_settings(|_| MAX).unwrap();
        assert_eq!((s[0].offset_reset, s[0].max_unacked_commits), (ResetPolicy::Earliest, 100));
        assert_eq!((s[1].offset_reset, s[1].max_unacked_commits), (ResetPolicy::Latest, 100));
    }

    #[test]
    fn invalid_combinations_are_named() {
        let error = |g: &GroupConfig| g.topic_settings(|_| MAX).unwrap_err();
        let mut g = GroupConfig::new("g");
        assert_eq!(error(&g), ConfigError::NoTopics);
        g.topics.push(TopicConfig::new("a").fetch_max_bytes(MAX));
        assert_eq!(error(&g), ConfigError::FetchMaxBytesOutOfRange { topic: "a".into(), bytes: MAX, max: MAX });
        g.topics[0] = TopicConfig::new("a").handler_max_batch_size(BatchSize::Max(0));
        assert_eq!(error(&g), ConfigError::ZeroBatchSize("a".into()));
        g.topics[0] = TopicConfig::new("a").max_queue_size(0);
        assert_eq!(error(&g), ConfigError::ZeroQueueSize("a".into()));
        g.topics[0] = TopicConfig::new("a");
        g.topics.push(TopicConfig::new("a"));
        assert_eq!(error(&g), ConfigError::DuplicateTopic("a".into()));
        g.topics.pop();
        g.committers_count = 0;
        assert_eq!(error(&g), ConfigError::NoCommitters);
        g.committers_count = 1;
        g.instance_id = Some(String::new());
        assert_eq!(error(&g), ConfigError::EmptyInstanceId);
        g.instance_id = None;
        g.topics.clear();
        g.topic_regex = Some(String::new());
        assert_eq!(error(&g), ConfigError::EmptyTopicRegex);
        g.topic_regex = Some("orders-.*".into());
        g.protocol = GroupProtocol::Classic;
        assert_eq!(error(&g), ConfigError::RegexNeedsConsumerProtocol);
        g.protocol = GroupProtocol::Auto;
        assert_eq!(g.topic_settings(|_| MAX).unwrap(), []);
        assert_eq!(g.regex_settings(|_| MAX).unwrap().map(|s| s.offset_reset), Some(ResetPolicy::Latest));
    }
}
