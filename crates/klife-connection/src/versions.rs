//! What a broker said it supports (ApiVersions) and the choice of version per request.

use std::collections::HashMap;

use klife_protocol::messages::ApiVersionsResponse;
use klife_protocol::{ApiKey, VersionRange};

use crate::Error;

/// The API versions a broker supports, and the cluster's finalized features, from its
/// ApiVersions answer.
#[derive(Debug, Clone, Default)]
pub struct BrokerVersions {
    ranges: HashMap<i16, VersionRange>,
    /// Finalized feature levels (ApiVersions v3+): name to level.
    features: HashMap<String, i16>,
}

/// The finalized feature that says which transaction protocol the cluster runs
/// (KIP-890: 2 bumps the producer epoch at every transaction end and adds partitions to
/// a transaction implicitly through Produce).
pub const TRANSACTION_VERSION_FEATURE: &str = "transaction.version";

impl BrokerVersions {
    /// Reads the broker's ranges and finalized features from an ApiVersions response.
    pub fn from_response(resp: &ApiVersionsResponse) -> Self {
        let ranges = resp
            .api_keys
            .iter()
            .filter(|k| k.min_version <= k.max_version)
            .map(|k| (k.api_key, VersionRange::new(k.min_version, k.max_version)))
            .collect();
        let features = resp.finalized_features.iter().map(|f| (f.name.clone(), f.max_version_level)).collect();
        BrokerVersions { ranges, features }
    }

    /// Builds the table from explicit ranges (for tests and fakes).
    pub fn from_ranges(ranges: impl IntoIterator<Item = (ApiKey, VersionRange)>) -> Self {
        BrokerVersions { ranges: ranges.into_iter().map(|(k, r)| (k.code(), r)).collect(), features: HashMap::new() }
    }

    /// Sets a finalized feature level (for tests and fakes).
    #[must_use]
    pub fn with_feature(mut self, name: &str, level: i16) -> Self {
        self.features.insert(name.to_owned(), level);
        self
    }

    /// The finalized level of a cluster feature, if the broker reports it (ApiVersions
    /// v3+; Kafka 2.7 and later).
    pub fn finalized_feature(&self, name: &str) -> Option<i16> {
        self.features.get(name).copied()
    }

    /// The cluster's transaction version (`transaction.version`): 0 when the broker
    /// does not report it, as for brokers older than KIP-890.
    pub fn transaction_version(&self) -> i16 {
        self.finalized_feature(TRANSACTION_VERSION_FEATURE).unwrap_or(0)
    }

    /// The broker's range for an API, if it has it.
    pub fn range(&self, api: ApiKey) -> Option<VersionRange> {
        self.ranges.get(&api.code()).copied()
    }

    /// Whether the broker has the API at all.
    pub fn supports(&self, api: ApiKey) -> bool {
        self.ranges.contains_key(&api.code())
    }

    /// The highest version both sides support: klife's stable range for the API,
    /// optionally capped at `max` by the caller, intersected with the broker's.
    pub fn negotiate(&self, api: ApiKey, max: Option<i16>, broker: &str) -> Result<i16, Error> {
        let ours = client_range(api, max);
        let theirs = self.range(api);
        match theirs.and_then(|t| ours.and_then(|o| o.intersect(&t))) {
            Some(common) => Ok(common.max),
            None => Err(Error::UnsupportedVersion {
                broker: broker.to_owned(),
                api,
                broker_versions: theirs.map_or_else(|| "none".to_owned(), |t| t.to_string()),
                client_versions: ours.unwrap_or(api.stable_versions()),
            }),
        }
    }
}

/// klife's usable range for `api`, capped at `max` (`None` when the cap is below the
/// lowest version).
fn client_range(api: ApiKey, max: Option<i16>) -> Option<VersionRange> {
    let stable = api.stable_versions();
    match max {
        None => Some(stable),
        Some(m) if m < stable.min => None,
        Some(m) => Some(VersionRange::new(stable.min, stable.max.min(m))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn broker() -> BrokerVersions {
        BrokerVersions::from_ranges([
            (ApiKey::Produce, VersionRange::new(3, 10)),
            (ApiKey::Fetch, VersionRange::new(4, 16)),
            (ApiKey::ApiVersions, VersionRange::new(0, 2)),
        ])
    }

    #[test]
    fn picks_the_highest_common_version() {
        let b = broker();
        assert_eq!(b.negotiate(ApiKey::Produce, None, "b").unwrap(), 10);
        assert_eq!(b.negotiate(ApiKey::Fetch, Some(12), "b").unwrap(), 12);
        assert_eq!(b.negotiate(ApiKey::ApiVersions, None, "b").unwrap(), 2);
    }

    #[test]
    fn finalized_features_are_read() {
        use klife_protocol::messages::api_versions_response::FinalizedFeatureKey;
        let resp = ApiVersionsResponse::default().with_finalized_features(vec![
            FinalizedFeatureKey::default().with_name("transaction.version".into()).with_max_version_level(2),
            FinalizedFeatureKey::default().with_name("metadata.version".into()).with_max_version_level(27),
        ]);
        let b = BrokerVersions::from_response(&resp);
        assert_eq!(b.transaction_version(), 2);
        assert_eq!(b.finalized_feature("metadata.version"), Some(27));
        assert_eq!(BrokerVersions::default().transaction_version(), 0);
        assert_eq!(broker().with_feature(TRANSACTION_VERSION_FEATURE, 1).transaction_version(), 1);
    }

    #[test]
    fn no_common_version_is_a_clear_error() {
        let b = broker();
        let err = b.negotiate(ApiKey::Produce, Some(2), "b:1").unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("Produce") && msg.contains("3-10"), "{msg}");
        let err = b.negotiate(ApiKey::ConsumerGroupHeartbeat, None, "b:1").unwrap_err();
        assert!(err.to_string().contains("broker: none"), "{err}");
    }
}
