//! What the task does for a KIP-848 member: its heartbeats and the names of the topic
//! ids assigned to it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use klife_connection::{Cluster, Error as ConnectionError, Lane, Metadata};
use klife_protocol::messages::ConsumerGroupHeartbeatResponse;
use klife_protocol::{ApiKey, ErrorCode, Uuid};
use tracing::field::Empty;
use tracing::{Instrument, Span};

use super::{BoxFuture, Wake};
use crate::membership::consumer::{
    ConsumerMember, HEARTBEAT_VERSION, Heartbeat, HeartbeatId, coordinator_supports, is_full,
};
use crate::telemetry::{self, HEARTBEAT_SPAN, JOIN_SPAN};

/// Sends a heartbeat on the lane to the coordinator, in a span of its own:
/// `klife.group.join` for the heartbeat that joins (member epoch 0), else
/// `klife.group.heartbeat`.
pub(super) fn send(lane: Arc<Lane>, hb: Heartbeat, timeout: Duration) -> BoxFuture<Wake> {
    tracing::debug!(epoch = hb.request.member_epoch, full = is_full(&hb.request), "heartbeat sent");
    let (group, member_id) = (&hb.request.group_id, &hb.request.member_id);
    let span = if hb.request.member_epoch == 0 {
        tracing::info_span!(JOIN_SPAN, group = %group, member_id = %member_id, protocol = "consumer", error = Empty)
    } else {
        let epoch = hb.request.member_epoch;
        tracing::debug_span!(HEARTBEAT_SPAN, group = %group, member_id = %member_id, epoch, error = Empty)
    };
    let group = group.clone();
    Box::pin(
        async move {
            let result = async {
                let conn = lane.connection().await?;
                let versions = conn.versions().range(ApiKey::ConsumerGroupHeartbeat);
                if !coordinator_supports(versions) {
                    // What a broker answers a version it does not speak.
                    let message = format!(
                        "coordinator {} offers ConsumerGroupHeartbeat {}, not v{HEARTBEAT_VERSION}",
                        conn.broker(),
                        versions.map_or_else(|| "not at all".to_owned(), |v| format!("v{}-v{}", v.min, v.max)),
                    );
                    return Ok(ConsumerGroupHeartbeatResponse::default()
                        .with_error_code(ErrorCode::UnsupportedVersion.code())
                        .with_error_message(Some(message)));
                }
                let sent = Instant::now();
                let answer = conn.send_version_with_timeout(&hb.request, HEARTBEAT_VERSION, timeout).await;
                if answer.is_ok() {
                    telemetry::record_heartbeat(&group, sent.elapsed());
                }
                answer
            }
            .await;
            match &result {
                Ok(r) if r.error_code != 0 => {
                    Span::current().record("error", ErrorCode::from_code(r.error_code).name());
                }
                Ok(_) => {}
                Err(e) => {
                    Span::current().record("error", tracing::field::display(e));
                }
            }
            Wake::Heartbeat(hb.id, result)
        }
        .instrument(span),
    )
}

/// Reports a heartbeat's answer, or its failure, to the member.
pub(super) fn on_answer(
    member: &mut ConsumerMember,
    now: Instant,
    id: HeartbeatId,
    result: Result<ConsumerGroupHeartbeatResponse, ConnectionError>,
) {
    match result {
        Ok(response) => {
            tracing::debug!(
                code = ErrorCode::from_code(response.error_code).name(),
                epoch = response.member_epoch,
                assignment = response.assignment.is_some(),
                "heartbeat answered"
            );
            member.on_heartbeat_response(now, id, &response);
        }
        Err(e) => {
            tracing::debug!(error = %e, "heartbeat failed");
            member.on_heartbeat_failed(now, id);
        }
    }
}

/// Looks names up for topic ids: the metadata cached, then refreshed, then that of
/// every topic (a topic assigned through a regex is not among those kept).
pub(super) fn resolve(cluster: Cluster, topic_ids: Vec<Uuid>, names: Vec<String>) -> BoxFuture<Wake> {
    Box::pin(async move {
        let wanted: BTreeSet<Uuid> = topic_ids.into_iter().collect();
        let mut found = lookup(&cluster.metadata(), &wanted);
        if found.len() < wanted.len() && !names.is_empty() {
            if let Ok(m) = cluster.add_topics(&names).await {
                found = lookup(&m, &wanted);
            }
        }
        if found.len() < wanted.len() {
            if let Ok(m) = cluster.refresh_metadata().await {
                found = lookup(&m, &wanted);
            }
        }
        if found.len() < wanted.len() {
            if let Ok(m) = cluster.all_topics_metadata().await {
                found = lookup(&m, &wanted);
                let extra: Vec<&str> = found.iter().map(|(_, n)| n.as_str()).collect();
                // Keep them in the cluster's view from now on.
                let _ = cluster.add_topics(&extra).await;
            }
        }
        Wake::Names(found)
    })
}

fn lookup(metadata: &Metadata, ids: &BTreeSet<Uuid>) -> Vec<(Uuid, String)> {
    metadata.topics.values().filter(|t| ids.contains(&t.id)).map(|t| (t.id, t.name.clone())).collect()
}
