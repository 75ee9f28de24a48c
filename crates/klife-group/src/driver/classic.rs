//! What the task does for a classic member: its requests, each at a version the
//! coordinator offers, and the partition counts its leader assigns from.

use std::sync::Arc;
use std::time::{Duration, Instant};

use klife_connection::{BrokerVersions, Cluster, Connection, Error as ConnectionError, Lane, Metadata};
use klife_protocol::messages::{HeartbeatResponse, JoinGroupResponse, LeaveGroupResponse, SyncGroupResponse};
use klife_protocol::{ApiKey, ErrorCode, Request as WireRequest};

use super::{BoxFuture, Wake};
use crate::membership::classic::{ClassicMember, OutgoingRequest, Request, RequestId, Response};

/// The lowest versions the classic member's requests are filled for: those with the
/// static instance id (KIP-345).
const MIN_VERSIONS: [(ApiKey, i16); 4] =
    [(ApiKey::JoinGroup, 5), (ApiKey::SyncGroup, 3), (ApiKey::Heartbeat, 3), (ApiKey::LeaveGroup, 3)];

/// The version to send `api` at: the highest both klife and the broker speak, if it
/// is no lower than the member's requests need.
pub(super) fn pick_version(versions: &BrokerVersions, api: ApiKey, broker: &str) -> Option<i16> {
    let min = MIN_VERSIONS.iter().find(|(a, _)| *a == api).map_or(0, |(_, v)| *v);
    versions.negotiate(api, None, broker).ok().filter(|v| *v >= min)
}

/// Sends a request on the lane to the coordinator, with the request's own timeout
/// (a JoinGroup's) or `timeout`.
pub(super) fn send(lane: Arc<Lane>, out: OutgoingRequest, timeout: Duration) -> BoxFuture<Wake> {
    let timeout = out.timeout.unwrap_or(timeout);
    let id = out.id;
    tracing::debug!(request = name(&out.request), ?id, "request sent");
    Box::pin(async move {
        let result = async {
            let conn = lane.connection().await?;
            Ok(match out.request {
                Request::JoinGroup(r) => Response::JoinGroup(match exchange(&conn, &r, timeout).await? {
                    Some(a) => a,
                    None => JoinGroupResponse::default().with_error_code(ErrorCode::UnsupportedVersion.code()),
                }),
                Request::SyncGroup(r) => Response::SyncGroup(match exchange(&conn, &r, timeout).await? {
                    Some(a) => a,
                    None => SyncGroupResponse::default().with_error_code(ErrorCode::UnsupportedVersion.code()),
                }),
                Request::Heartbeat(r) => Response::Heartbeat(match exchange(&conn, &r, timeout).await? {
                    Some(a) => a,
                    None => HeartbeatResponse::default().with_error_code(ErrorCode::UnsupportedVersion.code()),
                }),
                Request::LeaveGroup(r) => Response::LeaveGroup(match exchange(&conn, &r, timeout).await? {
                    Some(a) => a,
                    None => LeaveGroupResponse::default().with_error_code(ErrorCode::UnsupportedVersion.code()),
                }),
            })
        }
        .await;
        Wake::Answer(id, result)
    })
}

/// Sends `request` at the version [`pick_version`] gives; `None` when the coordinator
/// offers none the member can use (what a broker answers is UNSUPPORTED_VERSION).
async fn exchange<R: WireRequest>(
    conn: &Connection,
    request: &R,
    timeout: Duration,
) -> Result<Option<R::Response>, ConnectionError> {
    let Some(version) = pick_version(conn.versions(), R::API_KEY, conn.broker()) else {
        tracing::warn!(
            api = ?R::API_KEY,
            broker = conn.broker(),
            offered = ?conn.versions().range(R::API_KEY),
            "the coordinator offers no version of this request the classic member can send"
        );
        return Ok(None);
    };
    conn.send_version_with_timeout(request, version, timeout).await.map(Some)
}

/// Reports a request's answer, or its failure, to the member.
pub(super) fn on_answer(
    member: &mut ClassicMember,
    now: Instant,
    id: RequestId,
    result: Result<Response, ConnectionError>,
) {
    match result {
        Ok(response) => {
            tracing::debug!(?id, request = answer_name(&response), code = code(&response).name(), "request answered");
            member.on_response(now, id, &response);
        }
        Err(e) => {
            tracing::debug!(?id, error = %e, "request failed");
            member.on_request_failed(now, id);
        }
    }
}

/// Looks the partition counts of `topics` up for the leader (again after the backoff
/// until the metadata comes, or the cluster is closed).
pub(super) fn describe(
    cluster: Cluster,
    topics: Vec<String>,
    asked: u64,
    (backoff, backoff_max): (Duration, Duration),
) -> BoxFuture<Wake> {
    Box::pin(async move {
        let mut wait = backoff;
        loop {
            match cluster.add_topics(&topics).await {
                Ok(m) => return Wake::Counts(asked, counts(&m, &topics)),
                Err(_) if cluster.is_closed() => return Wake::Counts(asked, Vec::new()),
                Err(e) => {
                    tracing::warn!(error = %e, "metadata for the assignment failed; trying again");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(backoff_max);
                }
            }
        }
    })
}

/// The partition counts of `topics` the metadata knows (a topic without partitions,
/// unknown or not created yet, is left out: the assignor gives none of it).
pub(super) fn counts(metadata: &Metadata, topics: &[String]) -> Vec<(String, i32)> {
    topics
        .iter()
        .filter_map(|t| {
            let info = metadata.topics.get(t)?;
            let n = i32::try_from(info.partitions.len()).ok().filter(|n| *n > 0)?;
            Some((t.clone(), n))
        })
        .collect()
}

fn name(request: &Request) -> &'static str {
    match request {
        Request::JoinGroup(_) => "JoinGroup",
        Request::SyncGroup(_) => "SyncGroup",
        Request::Heartbeat(_) => "Heartbeat",
        Request::LeaveGroup(_) => "LeaveGroup",
    }
}

fn answer_name(response: &Response) -> &'static str {
    match response {
        Response::JoinGroup(_) => "JoinGroup",
        Response::SyncGroup(_) => "SyncGroup",
        Response::Heartbeat(_) => "Heartbeat",
        Response::LeaveGroup(_) => "LeaveGroup",
    }
}

fn code(response: &Response) -> ErrorCode {
    ErrorCode::from_code(match response {
        Response::JoinGroup(r) => r.error_code,
        Response::SyncGroup(r) => r.error_code,
        Response::Heartbeat(r) => r.error_code,
        Response::LeaveGroup(r) => r.error_code,
    })
}

#[cfg(test)]
mod tests {
    use klife_protocol::VersionRange;

    use super::*;

    fn offered(api: ApiKey, min: i16, max: i16) -> BrokerVersions {
        BrokerVersions::from_ranges([(api, VersionRange::new(min, max))])
    }

    #[test]
    fn each_request_goes_at_the_highest_common_version_with_the_instance_id() {
        for (api, min) in MIN_VERSIONS {
            let ours = api.stable_versions().max;
            assert_eq!(pick_version(&offered(api, 0, ours), api, "b"), Some(ours), "{api:?}");
            assert_eq!(pick_version(&offered(api, 0, ours + 3), api, "b"), Some(ours), "{api:?}: capped at klife's");
            assert_eq!(pick_version(&offered(api, 0, min), api, "b"), Some(min), "{api:?}");
            assert_eq!(pick_version(&offered(api, 0, min - 1), api, "b"), None, "{api:?}: without the instance id");
            assert_eq!(pick_version(&BrokerVersions::default(), api, "b"), None, "{api:?}: not offered");
        }
    }
}
