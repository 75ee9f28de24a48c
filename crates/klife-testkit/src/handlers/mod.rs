//! Request handling: one function per API, from a decoded request and the shared state
//! to the response. No I/O and no waiting here; the connection task in `server.rs`
//! reads, writes, sleeps and long-polls.

mod admin;
mod errors;
pub(crate) mod fetch;
mod group_admin;
pub(crate) mod groups;
mod membership;
mod produce;
mod txn;

use klife_protocol::messages::ApiVersionsResponse;
use klife_protocol::messages::api_versions_response::{ApiVersion, FinalizedFeatureKey, SupportedFeatureKey};
use klife_protocol::{AnyRequest, AnyResponse, ApiKey, ErrorCode, VersionRange};

pub(crate) use admin::validate_topic_name;
pub(crate) use errors::error_response;
pub(crate) use txn::abort_timed_out_transactions;

use crate::state::State;

/// The APIs and versions the fake cluster implements and advertises.
pub(crate) const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 11),
    (ApiKey::Fetch, 4, 17),
    (ApiKey::ListOffsets, 1, 10),
    (ApiKey::Metadata, 0, 13),
    (ApiKey::OffsetCommit, 2, 9),
    (ApiKey::OffsetFetch, 1, 9),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::DescribeGroups, 0, 6),
    (ApiKey::ListGroups, 0, 5),
    (ApiKey::FindCoordinator, 0, 6),
    (ApiKey::SaslHandshake, 1, 1),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::InitProducerId, 0, 5),
    (ApiKey::AddPartitionsToTxn, 0, 5),
    (ApiKey::AddOffsetsToTxn, 0, 4),
    (ApiKey::EndTxn, 0, 5),
    (ApiKey::TxnOffsetCommit, 0, 4),
    (ApiKey::SaslAuthenticate, 0, 2),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::OffsetDelete, 0, 0),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::ConsumerGroupHeartbeat, 0, 1),
    (ApiKey::ConsumerGroupDescribe, 0, 1),
];

/// The advertised range of an API, if the fake cluster implements it.
pub(crate) fn supported(api: ApiKey) -> Option<VersionRange> {
    SUPPORTED.iter().find(|(k, _, _)| *k == api).map(|(_, min, max)| VersionRange::new(*min, *max))
}

/// The request being handled: where and at which version.
#[derive(Debug, Clone)]
pub(crate) struct Ctx {
    pub(crate) broker: i32,
    pub(crate) version: i16,
    /// The cluster clock when the request is handled.
    pub(crate) now_ms: i64,
    /// The client id of the request header (classic member ids start with it).
    pub(crate) client_id: String,
    /// The client's address as Kafka prints it (`/127.0.0.1`), empty if not known.
    pub(crate) client_host: String,
}

impl Ctx {
    /// Who sent the request, for the group coordinator.
    pub(crate) fn client(&self) -> crate::coordinator::Client<'_> {
        crate::coordinator::Client { id: &self.client_id, host: &self.client_host }
    }
}

/// What to do after a request.
#[derive(Debug)]
pub(crate) enum Reply {
    /// Send this response.
    Respond(AnyResponse),
    /// Send nothing (Produce with acks = 0).
    Nothing,
    /// Close the connection, as Kafka does for requests it cannot serve.
    Close(&'static str),
    /// The answer comes later (a classic join or sync waiting for its group): take it
    /// from the coordinator under this ticket.
    Park(u64),
}

impl<T: Into<AnyResponse>> From<T> for Reply {
    fn from(r: T) -> Self {
        Reply::Respond(r.into())
    }
}

/// The feature that says which transaction protocol the cluster runs (KIP-890).
const TRANSACTION_VERSION_FEATURE: &str = "transaction.version";

/// The ApiVersions answer: every implemented API and (v3+) the supported and finalized
/// `transaction.version` (a level of 0 is not listed as finalized, as Kafka leaves out
/// features at 0), or, for a version this broker does not have, UNSUPPORTED_VERSION with
/// the ApiVersions range only (answered at v0, as Kafka does, so that any client can
/// read it).
pub(crate) fn api_versions(
    version: i16,
    software_name: &str,
    transaction_version: i16,
    hidden: &[ApiKey],
) -> (i16, ApiVersionsResponse) {
    let entry = |(k, min, max): &(ApiKey, i16, i16)| {
        ApiVersion::default().with_api_key(k.code()).with_min_version(*min).with_max_version(*max)
    };
    if !supported(ApiKey::ApiVersions).is_some_and(|r| r.contains(version)) {
        let own = SUPPORTED.iter().filter(|(k, _, _)| *k == ApiKey::ApiVersions).map(entry).collect();
        return (
            0,
            ApiVersionsResponse::default().with_error_code(ErrorCode::UnsupportedVersion.code()).with_api_keys(own),
        );
    }
    if version >= 3 && !valid_software_name(software_name) {
        return (version, ApiVersionsResponse::default().with_error_code(ErrorCode::InvalidRequest.code()));
    }
    let mut resp = ApiVersionsResponse::default()
        .with_api_keys(SUPPORTED.iter().filter(|(k, _, _)| !hidden.contains(k)).map(entry).collect());
    if version >= 3 {
        resp = resp.with_supported_features(vec![
            SupportedFeatureKey::default()
                .with_name(TRANSACTION_VERSION_FEATURE.to_owned())
                .with_min_version(0)
                .with_max_version(crate::cluster::MAX_TRANSACTION_VERSION),
        ]);
        resp = resp.with_finalized_features_epoch(0);
        if transaction_version > 0 {
            resp = resp.with_finalized_features(vec![
                FinalizedFeatureKey::default()
                    .with_name(TRANSACTION_VERSION_FEATURE.to_owned())
                    .with_min_version_level(transaction_version)
                    .with_max_version_level(transaction_version),
            ]);
        }
    }
    (version, resp)
}

/// KIP-511: `[a-zA-Z0-9](?:[a-zA-Z0-9\-.]*[a-zA-Z0-9])?`.
fn valid_software_name(name: &str) -> bool {
    let ok = |c: char| c.is_ascii_alphanumeric();
    let bytes: Vec<char> = name.chars().collect();
    match (bytes.first(), bytes.last()) {
        (Some(f), Some(l)) => ok(*f) && ok(*l) && bytes.iter().all(|c| ok(*c) || *c == '-' || *c == '.'),
        _ => false,
    }
}

/// Handles every API but ApiVersions, SASL and Fetch (the connection task owns those).
pub(crate) fn handle(state: &mut State, ctx: &Ctx, request: AnyRequest) -> Reply {
    match request {
        AnyRequest::Produce(r) => produce::produce(state, ctx, r),
        AnyRequest::Metadata(r) => admin::metadata(state, ctx, r).into(),
        AnyRequest::ListOffsets(r) => admin::list_offsets(state, ctx, r).into(),
        AnyRequest::CreateTopics(r) => admin::create_topics(state, ctx, r).into(),
        AnyRequest::DeleteTopics(r) => admin::delete_topics(state, ctx, r).into(),
        AnyRequest::CreatePartitions(r) => admin::create_partitions(state, ctx, r).into(),
        AnyRequest::DescribeCluster(r) => admin::describe_cluster(state, ctx, r).into(),
        AnyRequest::FindCoordinator(r) => groups::find_coordinator(state, ctx, r).into(),
        AnyRequest::OffsetCommit(r) => groups::offset_commit(state, ctx, r).into(),
        AnyRequest::OffsetFetch(r) => groups::offset_fetch(state, ctx, r).into(),
        AnyRequest::ConsumerGroupHeartbeat(r) => membership::consumer_group_heartbeat(state, ctx, r),
        AnyRequest::JoinGroup(r) => membership::join_group(state, ctx, r),
        AnyRequest::SyncGroup(r) => membership::sync_group(state, ctx, r),
        AnyRequest::Heartbeat(r) => membership::heartbeat(state, ctx, r),
        AnyRequest::LeaveGroup(r) => membership::leave_group(state, ctx, r),
        AnyRequest::ListGroups(r) => group_admin::list_groups(state, ctx, r).into(),
        AnyRequest::DescribeGroups(r) => group_admin::describe_groups(state, ctx, r).into(),
        AnyRequest::ConsumerGroupDescribe(r) => group_admin::consumer_group_describe(state, ctx, r).into(),
        AnyRequest::DeleteGroups(r) => group_admin::delete_groups(state, ctx, r).into(),
        AnyRequest::OffsetDelete(r) => group_admin::offset_delete(state, ctx, r).into(),
        AnyRequest::InitProducerId(r) => txn::init_producer_id(state, ctx, r).into(),
        AnyRequest::AddPartitionsToTxn(r) => txn::add_partitions_to_txn(state, ctx, r).into(),
        AnyRequest::AddOffsetsToTxn(r) => txn::add_offsets_to_txn(state, ctx, r).into(),
        AnyRequest::EndTxn(r) => txn::end_txn(state, ctx, r).into(),
        AnyRequest::TxnOffsetCommit(r) => txn::txn_offset_commit(state, ctx, r).into(),
        _ => Reply::Close("an API this broker does not implement"),
    }
}

/// Kafka's check of a client's `current_leader_epoch` against the partition's.
pub(crate) fn check_leader_epoch(requested: i32, current: i32) -> ErrorCode {
    if requested < 0 || requested == current {
        ErrorCode::None
    } else if requested < current {
        ErrorCode::FencedLeaderEpoch
    } else {
        ErrorCode::UnknownLeaderEpoch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advertised_ranges_are_ones_the_codec_has() {
        for (api, min, max) in SUPPORTED {
            assert!(api.versions().contains(*min) && api.versions().contains(*max), "{api}");
            assert!(min <= max);
        }
    }

    #[test]
    fn api_versions_answers_unknown_versions_at_v0_with_its_own_range() {
        let (v, r) = api_versions(9, "", 2, &[]);
        assert_eq!(v, 0);
        assert_eq!(r.error_code, ErrorCode::UnsupportedVersion.code());
        assert_eq!(r.api_keys.len(), 1);
        assert_eq!(r.api_keys[0].api_key, ApiKey::ApiVersions.code());
        let (v, r) = api_versions(3, "klife", 2, &[]);
        assert_eq!((v, r.error_code), (3, 0));
        assert_eq!(r.api_keys.len(), SUPPORTED.len());
        assert_eq!(api_versions(3, "bad name!", 2, &[]).1.error_code, ErrorCode::InvalidRequest.code());
        assert!(valid_software_name("librdkafka") && valid_software_name("a.b-c1") && !valid_software_name("-x"));
    }

    #[test]
    fn api_versions_reports_the_finalized_transaction_version_from_v3() {
        for level in [1, 2] {
            let (_, r) = api_versions(3, "klife", level, &[]);
            assert_eq!(r.finalized_features.len(), 1);
            let f = &r.finalized_features[0];
            assert_eq!(
                (f.name.as_str(), f.min_version_level, f.max_version_level),
                ("transaction.version", level, level)
            );
            assert_eq!(r.supported_features[0].max_version, 2);
            assert!(r.finalized_features_epoch >= 0);
        }
        assert!(api_versions(3, "klife", 0, &[]).1.finalized_features.is_empty());
        assert!(api_versions(2, "", 2, &[]).1.finalized_features.is_empty());
    }
}
