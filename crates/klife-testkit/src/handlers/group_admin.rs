//! The group admin APIs: ListGroups, DescribeGroups, ConsumerGroupDescribe,
//! DeleteGroups and OffsetDelete. Each group is answered by its coordinator only (other
//! brokers: NOT_COORDINATOR, or COORDINATOR_NOT_AVAILABLE when none is up), and
//! ListGroups lists the groups of the broker asked, as Kafka does; the answers come from
//! `crate::coordinator`. Timers due at the request's `now` run first, so that a member
//! whose session expired no longer counts.

use std::collections::BTreeMap;

use klife_protocol::ErrorCode;
use klife_protocol::messages::{
    ConsumerGroupDescribeRequest, ConsumerGroupDescribeResponse, DeleteGroupsRequest, DeleteGroupsResponse,
    DescribeGroupsRequest, DescribeGroupsResponse, ListGroupsRequest, ListGroupsResponse, OffsetDeleteRequest,
    OffsetDeleteResponse,
};

use super::Ctx;
use super::groups::coordinator_error;
use crate::state::State;

pub(crate) fn list_groups(state: &mut State, ctx: &Ctx, r: ListGroupsRequest) -> ListGroupsResponse {
    state.coordinator.tick(ctx.now_ms);
    let state = &*state;
    state.coordinator.list_groups(&r, &state.groups, &|g| state.coordinator(g) == Some(ctx.broker))
}

pub(crate) fn describe_groups(state: &mut State, ctx: &Ctx, r: DescribeGroupsRequest) -> DescribeGroupsResponse {
    state.coordinator.tick(ctx.now_ms);
    let state = &*state;
    state.coordinator.describe_groups(&r, ctx.version, &state.groups, &|g| coordinator_error(state, g, ctx.broker))
}

pub(crate) fn consumer_group_describe(
    state: &mut State,
    ctx: &Ctx,
    r: ConsumerGroupDescribeRequest,
) -> ConsumerGroupDescribeResponse {
    state.coordinator.tick(ctx.now_ms);
    let state = &*state;
    let topics = state.topic_view();
    state.coordinator.consumer_group_describe(&r, &state.groups, &topics, &|g| coordinator_error(state, g, ctx.broker))
}

pub(crate) fn delete_groups(state: &mut State, ctx: &Ctx, r: DeleteGroupsRequest) -> DeleteGroupsResponse {
    state.coordinator.tick(ctx.now_ms);
    let routes: BTreeMap<&str, ErrorCode> =
        r.groups_names.iter().map(|g| (g.as_str(), coordinator_error(state, g, ctx.broker))).collect();
    let route = |g: &str| routes.get(g).copied().unwrap_or(ErrorCode::NotCoordinator);
    let (resp, deleted) = state.coordinator.delete_groups(&r, &mut state.groups, &route);
    for g in &deleted {
        state.txns.forget_offsets(g, None);
        tracing::debug!(group = %g, "group deleted");
    }
    resp
}

pub(crate) fn offset_delete(state: &mut State, ctx: &Ctx, r: OffsetDeleteRequest) -> OffsetDeleteResponse {
    state.coordinator.tick(ctx.now_ms);
    let code = coordinator_error(state, &r.group_id, ctx.broker);
    let topics = state.topic_view();
    let (resp, deleted) = state.coordinator.delete_offsets(&r, &mut state.groups, &topics, &|_| code);
    for (topic, partition) in &deleted {
        state.txns.forget_offsets(&r.group_id, Some((topic, *partition)));
    }
    resp
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use klife_protocol::messages::ConsumerGroupHeartbeatRequest;
    use klife_protocol::messages::offset_delete_request::{OffsetDeleteRequestPartition, OffsetDeleteRequestTopic};

    use super::*;
    use crate::coordinator::Client;
    use crate::state::Committed;
    use crate::txn::PendingOffset;

    /// Two brokers; "near" is coordinated by 0, "far" by 1; both have an offset.
    fn state() -> State {
        let mut s = State::for_tests(2);
        s.create_topic("t", vec![vec![0]; 2], 1, BTreeMap::new());
        for (g, broker) in [("near", 0), ("far", 1)] {
            s.coordinator_overrides.insert(g.into(), broker);
            s.commit_offset(g, "t", 0, Committed { offset: 5, leader_epoch: -1, metadata: None });
        }
        s
    }

    fn ctx(broker: i32, version: i16, now_ms: i64) -> Ctx {
        Ctx { broker, version, now_ms, client_id: "admin".into(), client_host: "/127.0.0.1".into() }
    }

    fn names(groups: &[&str]) -> Vec<String> {
        groups.iter().map(|g| (*g).to_owned()).collect()
    }

    fn offset_delete_request(group: &str) -> OffsetDeleteRequest {
        OffsetDeleteRequest::default().with_group_id(group.into()).with_topics(vec![
            OffsetDeleteRequestTopic::default()
                .with_name("t".into())
                .with_partitions(vec![OffsetDeleteRequestPartition::default().with_partition_index(0)]),
        ])
    }

    #[test]
    fn each_group_is_answered_by_its_coordinator_only() {
        let mut s = state();
        for (broker, listed) in [(0, "near"), (1, "far")] {
            let r = list_groups(&mut s, &ctx(broker, 5, 0), ListGroupsRequest::default());
            assert_eq!(r.groups.iter().map(|g| g.group_id.as_str()).collect::<Vec<_>>(), vec![listed]);
        }
        let r = describe_groups(
            &mut s,
            &ctx(0, 6, 0),
            DescribeGroupsRequest::default().with_groups(names(&["near", "far"])),
        );
        let codes: Vec<ErrorCode> = r.groups.iter().map(|g| ErrorCode::from_code(g.error_code)).collect();
        assert_eq!(codes, vec![ErrorCode::None, ErrorCode::NotCoordinator]);
        let r = consumer_group_describe(
            &mut s,
            &ctx(0, 1, 0),
            ConsumerGroupDescribeRequest::default().with_group_ids(names(&["far"])),
        );
        assert_eq!(ErrorCode::from_code(r.groups[0].error_code), ErrorCode::NotCoordinator);
        let r = offset_delete(&mut s, &ctx(0, 0, 0), offset_delete_request("far"));
        assert_eq!(ErrorCode::from_code(r.error_code), ErrorCode::NotCoordinator);
        assert_eq!(s.groups["far"].len(), 1);
        let r = delete_groups(
            &mut s,
            &ctx(0, 2, 0),
            DeleteGroupsRequest::default().with_groups_names(names(&["near", "far"])),
        );
        let codes: Vec<ErrorCode> = r.results.iter().map(|g| ErrorCode::from_code(g.error_code)).collect();
        assert_eq!(codes, vec![ErrorCode::None, ErrorCode::NotCoordinator]);
        assert_eq!(s.groups.keys().collect::<Vec<_>>(), vec!["far"]);
        // The coordinator down: COORDINATOR_NOT_AVAILABLE.
        s.brokers.get_mut(&1).unwrap().up = false;
        let r = describe_groups(&mut s, &ctx(0, 6, 0), DescribeGroupsRequest::default().with_groups(names(&["far"])));
        assert_eq!(ErrorCode::from_code(r.groups[0].error_code), ErrorCode::CoordinatorNotAvailable);
    }

    #[test]
    fn expired_members_no_longer_count_and_pending_offsets_go_with_the_group() {
        let mut s = state();
        let join = ConsumerGroupHeartbeatRequest::default()
            .with_group_id("near".into())
            .with_member_id("m".into())
            .with_rebalance_timeout_ms(1_000)
            .with_subscribed_topic_names(Some(vec!["other".into()]))
            .with_topic_partitions(Some(Vec::new()));
        let topics = s.topic_view();
        let from = Client { id: "app", host: "/127.0.0.1" };
        assert_eq!(s.coordinator.consumer_heartbeat(from, &join, 1, &topics, 0).error_code, 0);
        // An open transaction with an offset of the group.
        let mut next = 1000;
        let (pid, _, _) = s
            .txns
            .init("tx", 60_000, (-1, -1), &mut || {
                next += 1;
                next
            })
            .unwrap();
        s.txns.add_offsets("tx", pid, 0, "near", 0).unwrap();
        let pending = PendingOffset {
            group: "near".into(),
            topic: "t".into(),
            partition: 1,
            offset: 9,
            leader_epoch: -1,
            metadata: None,
        };
        s.txns.commit_offsets("tx", pid, 0, vec![pending]).unwrap();
        // OffsetDelete: the group does not subscribe to t; its offsets go, pending or not.
        let mut r = offset_delete_request("near");
        r.topics[0].partitions.push(OffsetDeleteRequestPartition::default().with_partition_index(1));
        let resp = offset_delete(&mut s, &ctx(0, 0, 0), r);
        assert!(resp.topics[0].partitions.iter().all(|p| p.error_code == 0), "{resp:?}");
        assert!(s.groups["near"].is_empty() && !s.txns.has_pending_offset("near", "t", 1));
        // DeleteGroups: refused while the member's session lasts, done once it expired.
        let delete = || DeleteGroupsRequest::default().with_groups_names(names(&["near"]));
        let code = |r: DeleteGroupsResponse| ErrorCode::from_code(r.results[0].error_code);
        assert_eq!(code(delete_groups(&mut s, &ctx(0, 2, 44_999), delete())), ErrorCode::NonEmptyGroup);
        assert_eq!(code(delete_groups(&mut s, &ctx(0, 2, 45_000), delete())), ErrorCode::None);
        assert!(!s.groups.contains_key("near") && s.coordinator.groups.is_empty());
    }
}
