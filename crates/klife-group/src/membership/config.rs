//! What a KIP-848 member is configured with: its group, ids, subscription, server
//! assignor and the timings of its state machine.

use std::time::Duration;

use crate::error::ConfigError;

/// The rebalance timeout when none is set, as Klife's: how long the coordinator waits
/// for the member to give up revoked partitions before it fences the member.
pub const DEFAULT_REBALANCE_TIMEOUT: Duration = Duration::from_secs(30);
/// The broker's default `group.consumer.session.timeout.ms`. Under KIP-848 the
/// session timeout is a broker setting; the member only uses it to tell when it must
/// consider its partitions lost because no heartbeat got through.
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(45);
/// The heartbeat interval until the coordinator gives one (the broker's default
/// `group.consumer.heartbeat.interval.ms`).
pub const DEFAULT_HEARTBEAT_INTERVAL: Duration = Duration::from_secs(5);
/// The first wait before a heartbeat is sent again after a transient failure.
pub const DEFAULT_RETRY_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between two heartbeats after transient failures, and between two
/// metadata lookups for topic ids not known yet.
pub const DEFAULT_RETRY_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// The jitter of the backoff: each wait within ±20% of its exponential value.
pub const DEFAULT_RETRY_JITTER: f64 = 0.2;
/// How many times a join refused with UNRELEASED_INSTANCE_ID is retried before the
/// error is final: the previous holder of a static instance id may take a moment to
/// leave.
pub const DEFAULT_UNRELEASED_INSTANCE_ID_RETRIES: u32 = 3;

/// A member id as Kafka's own clients make them (a random UUID, URL-safe base64
/// without padding: 22 characters) from 128 random bits the caller draws.
///
/// ```
/// use klife_group::membership::consumer::member_id_from_random;
///
/// let id = member_id_from_random(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef);
/// assert_eq!(id.len(), 22);
/// assert_eq!(id, member_id_from_random(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef));
/// ```
pub fn member_id_from_random(random: u128) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let bytes = random.to_be_bytes();
    let mut out = String::with_capacity(22);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let chars = chunk.len() + 1;
        for i in 0..chars {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

/// The assignor the coordinator runs for the group (KIP-848 assigns on the broker).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ServerAssignor {
    /// `uniform`: spreads partitions evenly and moves as few as it can (Kafka's default).
    Uniform,
    /// `range`: each member gets a range of every topic's partitions, co-partitioned
    /// topics line up.
    Range,
    /// An assignor by the name the brokers' `group.consumer.assignors` gives it.
    Named(String),
}

impl ServerAssignor {
    /// The name sent to the coordinator.
    pub fn name(&self) -> &str {
        match self {
            ServerAssignor::Uniform => "uniform",
            ServerAssignor::Range => "range",
            ServerAssignor::Named(name) => name,
        }
    }
}

/// What the member subscribes to: topic names, a regular expression the broker
/// resolves, or both (the union).
///
/// The broker reads the expression as RE2/J and matches whole names: `orders` matches
/// only `orders`, `orders.*` also matches `orders-eu`. A topic created later that
/// matches is assigned without any change on the member.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Subscription {
    /// Topic names (kept sorted, without repeats).
    names: Vec<String>,
    /// The regular expression, if any.
    regex: Option<String>,
}

impl Subscription {
    /// A subscription to these topic names.
    pub fn names<I, S>(names: I) -> Subscription
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut names: Vec<String> = names.into_iter().map(Into::into).collect();
        names.sort();
        names.dedup();
        Subscription { names, regex: None }
    }

    /// A subscription to the topics whose whole name matches `regex` (RE2/J).
    pub fn regex(regex: impl Into<String>) -> Subscription {
        Subscription { names: Vec::new(), regex: Some(regex.into()) }
    }

    /// Adds a regular expression to a subscription by names.
    #[must_use]
    pub fn with_regex(mut self, regex: impl Into<String>) -> Subscription {
        self.regex = Some(regex.into());
        self
    }

    /// The topic names, sorted.
    pub fn topic_names(&self) -> &[String] {
        &self.names
    }

    /// The regular expression.
    pub fn topic_regex(&self) -> Option<&str> {
        self.regex.as_deref()
    }
}

/// The configuration of a KIP-848 member ([`ConsumerMember`](super::consumer::ConsumerMember)).
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct ConsumerConfig {
    /// The group id.
    pub group_id: String,
    /// The member id, generated by the client and kept for the life of the member,
    /// across fencing (see [`member_id_from_random`]).
    pub member_id: String,
    /// The static instance id (KIP-345): a member that leaves with it is expected back
    /// and keeps its partitions for the session timeout.
    pub instance_id: Option<String>,
    /// The rack of the client, for rack-aware assignors.
    pub rack_id: Option<String>,
    /// How long the coordinator waits for the member to give up revoked partitions.
    pub rebalance_timeout: Duration,
    /// What the member subscribes to.
    pub subscription: Subscription,
    /// The broker-side assignor to ask for (`None`: the broker's default).
    pub server_assignor: Option<ServerAssignor>,
    /// The broker's session timeout as the member assumes it: when no heartbeat was
    /// answered for this long, the partitions are lost.
    pub session_timeout: Duration,
    /// The first wait after a transient failure; doubles per failure in a row.
    pub retry_backoff: Duration,
    /// The longest such wait, and the wait between metadata lookups for unknown topic ids.
    pub retry_backoff_max: Duration,
    /// Each wait is drawn uniformly within ± this fraction of its exponential value
    /// (0 to 1; 0.2 by default), so that the members of a group that lost their
    /// coordinator together do not come back together.
    pub retry_jitter: f64,
    /// The seed of the member's random draws (the jitter): give each member its own
    /// random value. The member is deterministic for a given seed.
    pub random_seed: u64,
    /// Joins refused with UNRELEASED_INSTANCE_ID that are retried before the error is final.
    pub unreleased_instance_id_retries: u32,
    /// Whether UNSUPPORTED_VERSION on the first join ends the member with
    /// [`Outcome::FallBackToClassic`](super::consumer::Outcome::FallBackToClassic)
    /// (`true`) rather than an error.
    pub classic_fallback: bool,
}

impl ConsumerConfig {
    /// A member of `group_id` with id `member_id` and this subscription, the other
    /// settings at their defaults.
    pub fn new(group_id: impl Into<String>, member_id: impl Into<String>, subscription: Subscription) -> Self {
        ConsumerConfig {
            group_id: group_id.into(),
            member_id: member_id.into(),
            instance_id: None,
            rack_id: None,
            rebalance_timeout: DEFAULT_REBALANCE_TIMEOUT,
            subscription,
            server_assignor: None,
            session_timeout: DEFAULT_SESSION_TIMEOUT,
            retry_backoff: DEFAULT_RETRY_BACKOFF,
            retry_backoff_max: DEFAULT_RETRY_BACKOFF_MAX,
            retry_jitter: DEFAULT_RETRY_JITTER,
            random_seed: 0,
            unreleased_instance_id_retries: DEFAULT_UNRELEASED_INSTANCE_ID_RETRIES,
            classic_fallback: true,
        }
    }

    /// Makes the member static, with this instance id.
    #[must_use]
    pub fn with_instance_id(mut self, id: impl Into<String>) -> Self {
        self.instance_id = Some(id.into());
        self
    }

    /// Sets the rack id.
    #[must_use]
    pub fn with_rack_id(mut self, rack: impl Into<String>) -> Self {
        self.rack_id = Some(rack.into());
        self
    }

    /// Sets the rebalance timeout.
    #[must_use]
    pub fn with_rebalance_timeout(mut self, timeout: Duration) -> Self {
        self.rebalance_timeout = timeout;
        self
    }

    /// Asks for a server assignor.
    #[must_use]
    pub fn with_server_assignor(mut self, assignor: ServerAssignor) -> Self {
        self.server_assignor = Some(assignor);
        self
    }

    /// Sets the session timeout the member assumes.
    #[must_use]
    pub fn with_session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = timeout;
        self
    }

    /// Sets the backoff after transient failures.
    #[must_use]
    pub fn with_retry_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.retry_backoff = initial;
        self.retry_backoff_max = max.max(initial);
        self
    }

    /// Sets the jitter of the backoff (clamped to 0..=1).
    #[must_use]
    pub fn with_retry_jitter(mut self, jitter: f64) -> Self {
        self.retry_jitter = if jitter.is_nan() { 0.0 } else { jitter.clamp(0.0, 1.0) };
        self
    }

    /// Sets the seed of the member's random draws.
    #[must_use]
    pub fn with_random_seed(mut self, seed: u64) -> Self {
        self.random_seed = seed;
        self
    }

    /// Sets how many UNRELEASED_INSTANCE_ID refusals are retried.
    #[must_use]
    pub fn with_unreleased_instance_id_retries(mut self, retries: u32) -> Self {
        self.unreleased_instance_id_retries = retries;
        self
    }

    /// Sets whether UNSUPPORTED_VERSION on the first join falls back to the classic protocol.
    #[must_use]
    pub fn with_classic_fallback(mut self, fallback: bool) -> Self {
        self.classic_fallback = fallback;
        self
    }

    /// Checks what the broker would refuse, before anything is sent.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.group_id.is_empty() {
            return Err(ConfigError::EmptyGroupId);
        }
        if self.member_id.is_empty() {
            return Err(ConfigError::EmptyMemberId);
        }
        if self.instance_id.as_deref() == Some("") {
            return Err(ConfigError::EmptyInstanceId);
        }
        if self.rack_id.as_deref() == Some("") {
            return Err(ConfigError::EmptyRackId);
        }
        if self.server_assignor.as_ref().is_some_and(|a| a.name().is_empty()) {
            return Err(ConfigError::EmptyServerAssignor);
        }
        let ms = self.rebalance_timeout.as_millis();
        if ms == 0 || ms > i32::MAX as u128 {
            return Err(ConfigError::RebalanceTimeoutOutOfRange);
        }
        Ok(())
    }

    /// The rebalance timeout in the protocol's milliseconds (checked by [`validate`](Self::validate)).
    pub(crate) fn rebalance_timeout_ms(&self) -> i32 {
        i32::try_from(self.rebalance_timeout.as_millis()).unwrap_or(i32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_ids_are_kafka_style_uuids() {
        assert_eq!(member_id_from_random(0), "AAAAAAAAAAAAAAAAAAAAAA");
        assert_eq!(member_id_from_random(u128::MAX), "_____________________w");
        assert_ne!(member_id_from_random(1), member_id_from_random(2));
    }

    #[test]
    fn invalid_settings_are_named() {
        let ok = ConsumerConfig::new("g", "m", Subscription::names(["t"]));
        assert_eq!(ok.validate(), Ok(()));
        let cases = [
            (ConsumerConfig { group_id: String::new(), ..ok.clone() }, ConfigError::EmptyGroupId),
            (ConsumerConfig { member_id: String::new(), ..ok.clone() }, ConfigError::EmptyMemberId),
            (ok.clone().with_instance_id(""), ConfigError::EmptyInstanceId),
            (ok.clone().with_rack_id(""), ConfigError::EmptyRackId),
            (ok.clone().with_rebalance_timeout(Duration::ZERO), ConfigError::RebalanceTimeoutOutOfRange),
            (ok.clone().with_rebalance_timeout(Duration::from_secs(u64::MAX)), ConfigError::RebalanceTimeoutOutOfRange),
            (ok.clone().with_server_assignor(ServerAssignor::Named(String::new())), ConfigError::EmptyServerAssignor),
        ];
        for (config, err) in cases {
            assert_eq!(config.validate(), Err(err));
        }
    }
}
