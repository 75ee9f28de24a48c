//! What the task does for a classic member: its requests, each at a version the
//! coordinator offers, and the partition counts its leader assigns from.

use std::sync::Arc;
use std::time::{Duration, Instant};

use klife_connection::{BrokerVersions, Cluster, Error as ConnectionError, Lane, Metadata};
use klife_protocol::messages::{
    HeartbeatResponse, JoinGroupResponse, LeaveGroupRequest, LeaveGroupResponse, SyncGroupResponse,
};
use klife_protocol::{ApiKey, ErrorCode};
use tracing::field::Empty;
use tracing::{Instrument, Span};

use super::{BoxFuture, DriverConfig, Wake};
use crate::membership::classic::{ClassicMember, OutgoingRequest, Request, RequestId, Response};
use crate::telemetry::{self, HEARTBEAT_SPAN, JOIN_SPAN};

/// The lowest versions the classic member's requests are filled for: those with the
/// static instance id (KIP-345). A LeaveGroup without one goes lower too (see
/// [`leave_at`]).
const MIN_VERSIONS: [(ApiKey, i16); 4] =
    [(ApiKey::JoinGroup, 5), (ApiKey::SyncGroup, 3), (ApiKey::Heartbeat, 3), (ApiKey::LeaveGroup, 3)];

/// The first LeaveGroup version that lists members (with their instance ids).
const LEAVE_MEMBERS_VERSION: i16 = 3;

/// The version to send `api` at: the highest both klife and the broker speak, capped
/// at `max`, if it is no lower than `min`.
pub(super) fn pick_version(versions: &BrokerVersions, api: ApiKey, min: i16, max: Option<i16>) -> Option<i16> {
    versions.negotiate(api, max, "").ok().filter(|v| *v >= min)
}

fn min_version(api: ApiKey) -> i16 {
    MIN_VERSIONS.iter().find(|(a, _)| *a == api).map_or(0, |(_, v)| *v)
}

/// A LeaveGroup as version `version` carries it: below v3 the one member leaving is
/// named by its id alone (`None` if it has an instance id, which needs v3).
pub(super) fn leave_at(request: &LeaveGroupRequest, version: i16) -> Option<LeaveGroupRequest> {
    if version >= LEAVE_MEMBERS_VERSION {
        return Some(request.clone());
    }
    match request.members.as_slice() {
        [m] if m.group_instance_id.is_none() => Some(
            LeaveGroupRequest::default().with_group_id(request.group_id.clone()).with_member_id(m.member_id.clone()),
        ),
        _ => None,
    }
}

/// Sends a request on the lane to the coordinator, with the request's own timeout
/// (a JoinGroup's) or the driver's. A JoinGroup or SyncGroup goes in the span of the
/// join under way (`joining`, opened by the first JoinGroup), a Heartbeat in a
/// `klife.group.heartbeat` span of its own.
pub(super) fn send(
    lane: Arc<Lane>,
    out: OutgoingRequest,
    driver: &DriverConfig,
    joining: &mut Option<Span>,
) -> BoxFuture<Wake> {
    let timeout = out.timeout.unwrap_or(driver.heartbeat_timeout);
    let id = out.id;
    let api = api(&out.request);
    let max = driver.max_version(api);
    tracing::debug!(request = ?api, ?id, "request sent");
    let span = match &out.request {
        Request::JoinGroup(r) => join_span(joining, &r.group_id, &r.member_id),
        Request::SyncGroup(r) => join_span(joining, &r.group_id, &r.member_id),
        Request::Heartbeat(r) => {
            let (group, member_id, epoch) = (&r.group_id, &r.member_id, r.generation_id);
            tracing::debug_span!(HEARTBEAT_SPAN, group = %group, member_id = %member_id, epoch, error = Empty)
        }
        Request::LeaveGroup(_) => Span::none(),
    };
    let fut = async move {
        let result = async {
            let conn = lane.connection().await?;
            let dynamic_leave = matches!(&out.request, Request::LeaveGroup(r) if leave_at(r, 0).is_some());
            let min = if dynamic_leave { 0 } else { min_version(api) };
            let Some(version) = pick_version(conn.versions(), api, min, max) else {
                tracing::warn!(
                    ?api,
                    broker = conn.broker(),
                    offered = ?conn.versions().range(api),
                    ?max,
                    "the coordinator offers no version of this request the classic member can send"
                );
                // What a broker answers a version it does not speak.
                return Ok(unsupported(api));
            };
            let v = version;
            Ok(match out.request {
                Request::JoinGroup(r) => Response::JoinGroup(conn.send_version_with_timeout(&r, v, timeout).await?),
                Request::SyncGroup(r) => Response::SyncGroup(conn.send_version_with_timeout(&r, v, timeout).await?),
                Request::Heartbeat(r) => {
                    let sent = Instant::now();
                    let answer = conn.send_version_with_timeout(&r, v, timeout).await?;
                    telemetry::record_heartbeat(&r.group_id, sent.elapsed());
                    Response::Heartbeat(answer)
                }
                Request::LeaveGroup(r) => match leave_at(&r, v) {
                    Some(r) => Response::LeaveGroup(conn.send_version_with_timeout(&r, v, timeout).await?),
                    None => unsupported(api),
                },
            })
        }
        .await;
        match &result {
            Ok(response) => {
                let code = code(response);
                // MEMBER_ID_REQUIRED is a step of a dynamic member's first join.
                if code != ErrorCode::None && code != ErrorCode::MemberIdRequired {
                    Span::current().record("error", code.name());
                }
            }
            Err(e) => {
                Span::current().record("error", tracing::field::display(e));
            }
        }
        Wake::Answer(id, api, result)
    };
    Box::pin(fut.instrument(span))
}

/// The span of the join under way, opened if there is none.
fn join_span(joining: &mut Option<Span>, group: &str, member_id: &str) -> Span {
    joining
        .get_or_insert_with(|| tracing::info_span!(JOIN_SPAN, group, member_id, protocol = "classic", error = Empty))
        .clone()
}

fn api(request: &Request) -> ApiKey {
    match request {
        Request::JoinGroup(_) => ApiKey::JoinGroup,
        Request::SyncGroup(_) => ApiKey::SyncGroup,
        Request::Heartbeat(_) => ApiKey::Heartbeat,
        Request::LeaveGroup(_) => ApiKey::LeaveGroup,
    }
}

/// The answer UNSUPPORTED_VERSION to a request of `api`.
fn unsupported(api: ApiKey) -> Response {
    let code = ErrorCode::UnsupportedVersion.code();
    match api {
        ApiKey::JoinGroup => Response::JoinGroup(JoinGroupResponse::default().with_error_code(code)),
        ApiKey::SyncGroup => Response::SyncGroup(SyncGroupResponse::default().with_error_code(code)),
        ApiKey::Heartbeat => Response::Heartbeat(HeartbeatResponse::default().with_error_code(code)),
        _ => Response::LeaveGroup(LeaveGroupResponse::default().with_error_code(code)),
    }
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
    use klife_connection::{PartitionInfo, TopicInfo};
    use klife_protocol::VersionRange;
    use klife_protocol::messages::leave_group_request::MemberIdentity;

    use super::*;

    fn offered(api: ApiKey, min: i16, max: i16) -> BrokerVersions {
        BrokerVersions::from_ranges([(api, VersionRange::new(min, max))])
    }

    #[test]
    fn each_request_goes_at_the_highest_common_version_with_the_instance_id() {
        for (api, min) in MIN_VERSIONS {
            let ours = api.stable_versions().max;
            let pick = |max_offered: i16, cap: Option<i16>| pick_version(&offered(api, 0, max_offered), api, min, cap);
            assert_eq!(pick(ours, None), Some(ours), "{api:?}");
            assert_eq!(pick(ours + 3, None), Some(ours), "{api:?}: capped at klife's");
            assert_eq!(pick(min, None), Some(min), "{api:?}");
            assert_eq!(pick(min - 1, None), None, "{api:?}: without the instance id");
            assert_eq!(pick(ours, Some(min)), Some(min), "{api:?}: capped by the driver's setting");
            assert_eq!(pick(ours, Some(min - 1)), None, "{api:?}: a cap below what the member needs");
            assert_eq!(pick_version(&BrokerVersions::default(), api, min, None), None, "{api:?}: not offered");
        }
    }

    #[test]
    fn a_dynamic_members_leave_goes_below_v3_with_its_id_alone() {
        let member = |instance: Option<&str>| {
            MemberIdentity::default()
                .with_member_id("m-1".to_owned())
                .with_group_instance_id(instance.map(str::to_owned))
        };
        let dynamic = LeaveGroupRequest::default().with_group_id("g".to_owned()).with_members(vec![member(None)]);
        assert_eq!(leave_at(&dynamic, 3), Some(dynamic.clone()));
        let old = leave_at(&dynamic, 2).expect("a dynamic member leaves at v2");
        assert_eq!((old.group_id.as_str(), old.member_id.as_str(), old.members.len()), ("g", "m-1", 0));
        let stat = LeaveGroupRequest::default().with_group_id("g".to_owned()).with_members(vec![member(Some("i"))]);
        assert_eq!(leave_at(&stat, 3), Some(stat.clone()));
        assert_eq!(leave_at(&stat, 2), None, "an instance id needs v3");
    }

    #[test]
    fn the_leader_is_given_the_partition_counts_the_metadata_knows() {
        let topic = |name: &str, partitions: i32| {
            let partitions = (0..partitions)
                .map(|partition| PartitionInfo {
                    partition,
                    leader: 1,
                    leader_epoch: 0,
                    replicas: vec![1],
                    isr: vec![1],
                    offline_replicas: vec![],
                    error: ErrorCode::None,
                })
                .collect();
            let info = TopicInfo {
                name: name.to_owned(),
                id: klife_protocol::Uuid::from_u128(7),
                is_internal: false,
                error: ErrorCode::None,
                partitions,
            };
            (name.to_owned(), Arc::new(info))
        };
        let mut metadata = Metadata::default();
        metadata.topics.extend([topic("a", 3), topic("b", 1), topic("unknown", 0), topic("other", 5)]);
        let asked: Vec<String> = ["a", "b", "unknown", "missing"].map(str::to_owned).into();
        assert_eq!(counts(&metadata, &asked), vec![("a".to_owned(), 3), ("b".to_owned(), 1)]);
    }
}
