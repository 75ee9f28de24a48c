//! Tests of the KIP-848 member: a virtual clock, a scripted coordinator, a table test
//! per error code, the scenarios of the issue, and a property test of the invariants.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::time::Duration;

use klife_protocol::messages::consumer_group_heartbeat_response::{Assignment, TopicPartitions};
use klife_protocol::messages::{ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse};
use klife_protocol::types::TopicPartition;
use klife_protocol::{ErrorCode, Uuid};

use super::consumer::*;
use crate::GroupError;
use crate::test_clock::Clock;

const T1: Uuid = Uuid::from_u128(0x11);
const T2: Uuid = Uuid::from_u128(0x22);
const T3: Uuid = Uuid::from_u128(0x33);
const MEMBER: &str = "member-1";
const INTERVAL: Duration = Duration::from_millis(3000);

fn topic_name(id: Uuid) -> &'static str {
    match id {
        T1 => "t1",
        T2 => "t2",
        T3 => "t3",
        _ => "other",
    }
}

/// The tests' configuration: without jitter, so that waits are exact.
fn config() -> ConsumerConfig {
    ConsumerConfig::new("g", MEMBER, Subscription::names(["t1", "t2"])).with_retry_jitter(0.0)
}

fn assignment(parts: &[(Uuid, &[i32])]) -> Option<Assignment> {
    Some(Assignment::default().with_topic_partitions(
        parts.iter().map(|(t, ps)| TopicPartitions::default().with_topic_id(*t).with_partitions(ps.to_vec())).collect(),
    ))
}

fn ok(epoch: i32, parts: Option<&[(Uuid, &[i32])]>) -> ConsumerGroupHeartbeatResponse {
    ConsumerGroupHeartbeatResponse::default()
        .with_member_id(Some(MEMBER.into()))
        .with_member_epoch(epoch)
        .with_heartbeat_interval_ms(INTERVAL.as_millis() as i32)
        .with_assignment(parts.and_then(assignment))
}

fn error(code: ErrorCode) -> ConsumerGroupHeartbeatResponse {
    ConsumerGroupHeartbeatResponse::default()
        .with_error_code(code.code())
        .with_error_message(Some(format!("{} from the test", code.name())))
        .with_member_epoch(-1)
}

fn tps(parts: &[(&str, i32)]) -> Vec<TopicPartition> {
    parts.iter().map(|(t, p)| TopicPartition::new(*t, *p)).collect()
}

fn drain(m: &mut ConsumerMember) -> Vec<Action> {
    std::iter::from_fn(|| m.poll_action()).collect()
}

/// A member that found its coordinator and knows the names of the test topics.
fn started(clock: &Clock, config: ConsumerConfig) -> ConsumerMember {
    let mut m = ConsumerMember::new(config, clock.now()).expect("valid config");
    assert_eq!(drain(&mut m), vec![Action::FindCoordinator]);
    m.coordinator_found(clock.now());
    m.on_topic_names(clock.now(), [(T1, "t1"), (T2, "t2"), (T3, "t3")]);
    m
}

/// A member in the group at epoch 5 owning t1-0 and t1-1, its acknowledgement answered.
fn stable(clock: &Clock, config: ConsumerConfig) -> ConsumerMember {
    let mut m = started(clock, config);
    let join = m.poll_heartbeat(clock.now()).expect("join");
    m.on_heartbeat_response(clock.now(), join.id, &ok(5, Some(&[(T1, &[0, 1])])));
    assert_eq!(
        drain(&mut m),
        vec![Action::EpochChanged { epoch: 5 }, Action::StartPartitions { partitions: tps(&[("t1", 0), ("t1", 1)]) }]
    );
    let ack = m.poll_heartbeat(clock.now()).expect("ack");
    assert_eq!(ack.request.topic_partitions.as_ref().map(|t| t[0].partitions.clone()), Some(vec![0, 1]));
    m.on_heartbeat_response(clock.now(), ack.id, &ok(5, None));
    assert_eq!(m.state(), MemberState::Stable);
    m
}

fn assert_full_join(r: &ConsumerGroupHeartbeatRequest) {
    assert_eq!(r.member_id, MEMBER, "the same member id");
    assert_eq!(r.member_epoch, 0);
    assert_eq!(r.topic_partitions, Some(vec![]), "a join owns nothing, as a non-null empty list");
    assert_ne!(r.rebalance_timeout_ms, -1);
    assert!(r.subscribed_topic_names.is_some());
    assert!(is_full(r));
}

// ---------------------------------------------------------------------------------
// The request fields.

#[test]
fn the_join_carries_everything_and_later_heartbeats_only_what_changed() {
    let mut clock = Clock::new();
    let config = ConsumerConfig::new("g", MEMBER, Subscription::names(["t2", "t1", "t1"]).with_regex("t.*"))
        .with_instance_id("i-1")
        .with_rack_id("rack-a")
        .with_server_assignor(ServerAssignor::Range)
        .with_rebalance_timeout(Duration::from_secs(20));
    let mut m = started(&clock, config);
    let join = m.poll_heartbeat(clock.now()).expect("a join goes at once");
    let r = &join.request;
    assert_full_join(r);
    assert_eq!(r.group_id, "g");
    assert_eq!(r.instance_id.as_deref(), Some("i-1"));
    assert_eq!(r.rack_id.as_deref(), Some("rack-a"));
    assert_eq!(r.rebalance_timeout_ms, 20_000);
    assert_eq!(r.subscribed_topic_names, Some(vec!["t1".to_owned(), "t2".to_owned()]));
    assert_eq!(r.subscribed_topic_regex.as_deref(), Some("t.*"));
    assert_eq!(r.server_assignor.as_deref(), Some("range"));

    m.on_heartbeat_response(clock.now(), join.id, &ok(1, Some(&[])));
    assert_eq!(drain(&mut m), vec![Action::EpochChanged { epoch: 1 }]);
    assert_eq!(m.state(), MemberState::Stable);
    assert_eq!(m.poll_timeout(), Some(clock.now() + INTERVAL));
    assert!(m.poll_heartbeat(clock.now()).is_none(), "nothing before the interval");
    let now = clock.advance(INTERVAL);
    let hb = m.poll_heartbeat(now).expect("due at the interval");
    let r = &hb.request;
    assert_eq!((r.member_epoch, r.instance_id.as_deref()), (1, Some("i-1")), "the instance id always goes");
    assert_eq!(r.rack_id, None);
    assert_eq!(r.rebalance_timeout_ms, -1);
    assert_eq!(r.subscribed_topic_names, None);
    assert_eq!(r.subscribed_topic_regex, None);
    assert_eq!(r.server_assignor, None);
    assert_eq!(r.topic_partitions, None);
    assert!(!is_full(r));
}

#[test]
fn a_regex_alone_sends_an_empty_name_list_and_a_removed_regex_is_sent_as_empty() {
    let mut clock = Clock::new();
    let mut m = started(&clock, ConsumerConfig::new("g", MEMBER, Subscription::regex("orders.*")));
    let join = m.poll_heartbeat(clock.now()).expect("join");
    assert_eq!(join.request.subscribed_topic_names, Some(vec![]));
    assert_eq!(join.request.subscribed_topic_regex.as_deref(), Some("orders.*"));
    m.on_heartbeat_response(clock.now(), join.id, &ok(1, Some(&[])));

    let now = clock.advance(Duration::from_millis(10));
    m.set_subscription(now, Subscription::names(["t1"]));
    let hb = m.poll_heartbeat(now).expect("a changed subscription goes at once");
    assert_eq!(hb.request.subscribed_topic_names, Some(vec!["t1".to_owned()]));
    assert_eq!(hb.request.subscribed_topic_regex.as_deref(), Some(""), "\"\" removes the regex");
    m.on_heartbeat_response(now, hb.id, &ok(2, None));
    let now = clock.advance(INTERVAL);
    let hb = m.poll_heartbeat(now).expect("next");
    assert_eq!(hb.request.subscribed_topic_regex, None, "sent until answered, then unchanged");
}

#[test]
fn the_broker_interval_is_used_and_values_not_above_zero_ignored() {
    let mut clock = Clock::new();
    let mut m = started(&clock, config());
    let join = m.poll_heartbeat(clock.now()).expect("join");
    m.on_heartbeat_response(clock.now(), join.id, &ok(1, Some(&[])).with_heartbeat_interval_ms(700));
    assert_eq!(m.poll_timeout(), Some(clock.now() + Duration::from_millis(700)));
    for bad in [0, -5] {
        let now = clock.advance(Duration::from_millis(700));
        let hb = m.poll_heartbeat(now).expect("due");
        assert!(m.poll_heartbeat(now).is_none(), "one heartbeat in flight");
        m.on_heartbeat_response(now, hb.id, &ok(1, None).with_heartbeat_interval_ms(bad));
        assert_eq!(m.poll_timeout(), Some(now + Duration::from_millis(700)), "interval {bad} ignored");
    }
}

#[test]
fn member_ids_come_from_the_caller() {
    let clock = Clock::new();
    let id = member_id_from_random(99);
    let mut m = started(&clock, ConsumerConfig::new("g", id.clone(), Subscription::names(["t1"])));
    assert_eq!(m.poll_heartbeat(clock.now()).map(|h| h.request.member_id), Some(id));
    assert_eq!(m.group_metadata().generation_id, 0);
}

// ---------------------------------------------------------------------------------
// Reconciliation.

#[test]
fn revocation_comes_before_assignment_and_the_acknowledgement_goes_at_once() {
    let mut clock = Clock::new();
    let mut m = stable(&clock, config());
    let now = clock.advance(INTERVAL);
    let hb = m.poll_heartbeat(now).expect("due");
    m.on_heartbeat_response(now, hb.id, &ok(6, Some(&[(T1, &[1]), (T2, &[0])])));
    let actions = drain(&mut m);
    let release = match &actions[..] {
        [
            Action::EpochChanged { epoch: 6 },
            Action::StopFetching { release, partitions },
            Action::CommitRevoked { release: r2, partitions: p2, reason: RevokeReason::Reassigned },
        ] if release == r2 && partitions == &tps(&[("t1", 0)]) && p2 == partitions => *release,
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(m.state(), MemberState::Reconciling);
    assert_eq!(m.owned(), tps(&[("t1", 0), ("t1", 1)]), "owned until the revocation is done");

    // Heartbeats go on meanwhile, with the owned list unchanged (left out).
    let now = clock.advance(INTERVAL);
    let hb = m.poll_heartbeat(now).expect("heartbeats go on during a revocation");
    assert_eq!(hb.request.topic_partitions, None);
    m.on_heartbeat_response(now, hb.id, &ok(6, None));

    let now = clock.advance(Duration::from_millis(5));
    m.released(now, release);
    assert_eq!(drain(&mut m), vec![Action::StartPartitions { partitions: tps(&[("t2", 0)]) }]);
    assert_eq!(m.owned(), tps(&[("t1", 1), ("t2", 0)]));
    assert_eq!(m.state(), MemberState::Acknowledging);
    assert_eq!(m.poll_timeout(), Some(now));
    let ack = m.poll_heartbeat(now).expect("the ack goes at once");
    let owned: Vec<_> = ack
        .request
        .topic_partitions
        .expect("carries the owned list")
        .iter()
        .map(|t| (t.topic_id, t.partitions.clone()))
        .collect();
    assert_eq!(owned, vec![(T1, vec![1]), (T2, vec![0])]);
    m.released(now, release); // a repeated release changes nothing
    assert!(drain(&mut m).is_empty());
}

#[test]
fn an_unknown_topic_id_is_kept_and_looked_up_until_known() {
    let mut clock = Clock::new();
    let mut m = ConsumerMember::new(config(), clock.now()).expect("config");
    drain(&mut m);
    m.coordinator_found(clock.now());
    m.on_topic_names(clock.now(), [(T1, "t1")]);
    let join = m.poll_heartbeat(clock.now()).expect("join");
    m.on_heartbeat_response(clock.now(), join.id, &ok(1, Some(&[(T1, &[0]), (T3, &[4])])));
    assert_eq!(
        drain(&mut m),
        vec![
            Action::EpochChanged { epoch: 1 },
            Action::RefreshMetadata { topic_ids: vec![T3] },
            Action::StartPartitions { partitions: tps(&[("t1", 0)]) },
        ]
    );
    assert_eq!(m.state(), MemberState::Acknowledging);
    let ack = m.poll_heartbeat(clock.now()).expect("the resolved part is acknowledged");
    assert_eq!(ack.request.topic_partitions.map(|t| t.len()), Some(1));
    m.on_heartbeat_response(clock.now(), ack.id, &ok(1, None));
    assert_eq!(m.state(), MemberState::Reconciling, "t3 is still to come");

    // The metadata does not know it yet: asked again after retry_backoff_max.
    m.on_topic_names(clock.now(), Vec::<(Uuid, &str)>::new());
    assert!(drain(&mut m).is_empty());
    let retry = m.poll_timeout().expect("a timer");
    assert_eq!(clock.at(retry), DEFAULT_RETRY_BACKOFF_MAX);
    let now = clock.advance(DEFAULT_RETRY_BACKOFF_MAX);
    m.handle_timeout(now);
    assert_eq!(drain(&mut m), vec![Action::RefreshMetadata { topic_ids: vec![T3] }]);
    m.on_topic_names(now, [(T3, "t3")]);
    assert_eq!(drain(&mut m), vec![Action::StartPartitions { partitions: tps(&[("t3", 4)]) }]);
    assert_eq!(m.owned(), tps(&[("t1", 0), ("t3", 4)]));
}

#[test]
fn a_success_answer_without_an_epoch_is_ignored() {
    let mut clock = Clock::new();
    let mut m = stable(&clock, config());
    for epoch in [-1, -2, 0] {
        let now = clock.advance(INTERVAL);
        let hb = m.poll_heartbeat(now).expect("due");
        m.on_heartbeat_response(now, hb.id, &ok(epoch, Some(&[])));
        assert!(drain(&mut m).is_empty(), "epoch {epoch}: nothing taken");
        assert_eq!(m.epoch(), 5);
        assert_eq!(m.owned().len(), 2);
        let now = clock.advance(DEFAULT_RETRY_BACKOFF_MAX);
        let hb = m.poll_heartbeat(now).expect("again after the backoff");
        assert!(is_full(&hb.request));
        m.on_heartbeat_response(now, hb.id, &ok(5, None));
    }
}

#[test]
fn duplicated_and_late_answers_are_ignored_and_a_lost_one_makes_the_next_full() {
    let mut clock = Clock::new();
    let mut m = stable(&clock, config());
    let now = clock.advance(INTERVAL);
    let hb = m.poll_heartbeat(now).expect("due");
    m.on_heartbeat_response(now, hb.id, &ok(6, Some(&[(T1, &[0, 1]), (T2, &[3])])));
    drain(&mut m);
    m.on_heartbeat_response(now, hb.id, &error(ErrorCode::FencedMemberEpoch));
    assert!(drain(&mut m).is_empty(), "a duplicate answer is ignored");
    assert_eq!(m.epoch(), 6);

    let ack = m.poll_heartbeat(now).expect("ack");
    m.on_heartbeat_failed(now, ack.id);
    assert_eq!(drain(&mut m), vec![Action::FindCoordinator]);
    m.on_heartbeat_response(now, ack.id, &ok(7, None));
    assert_eq!(m.epoch(), 6, "the answer of a failed heartbeat is late and ignored");
    m.coordinator_found(now);
    assert!(m.poll_heartbeat(now).is_none(), "after the backoff");
    let now = clock.advance(DEFAULT_RETRY_BACKOFF);
    let full = m.poll_heartbeat(now).expect("again");
    assert!(is_full(&full.request));
    assert_eq!(full.request.topic_partitions.map(|t| t.len()), Some(2), "with the owned list");
}

#[test]
fn fenced_while_revoking_loses_everything_and_rejoins_once_released() {
    let mut clock = Clock::new();
    let mut m = stable(&clock, config());
    let now = clock.advance(INTERVAL);
    let hb = m.poll_heartbeat(now).expect("due");
    m.on_heartbeat_response(now, hb.id, &ok(6, Some(&[(T1, &[1])])));
    let revoking = drain(&mut m);
    let Some(Action::CommitRevoked { release: revocation, .. }) = revoking.last() else { panic!("{revoking:?}") };
    let now = clock.advance(INTERVAL);
    let hb = m.poll_heartbeat(now).expect("heartbeats go on");
    m.on_heartbeat_response(now, hb.id, &error(ErrorCode::FencedMemberEpoch));
    let actions = drain(&mut m);
    let lost = match &actions[..] {
        [
            Action::EpochChanged { epoch: 0 },
            Action::PartitionsLost { release, partitions, reason: LostReason::Fenced },
        ] if partitions == &tps(&[("t1", 0), ("t1", 1)]) => *release,
        other => panic!("unexpected {other:?}"),
    };
    assert_eq!(m.state(), MemberState::Fenced);
    assert!(m.owned().is_empty());
    assert!(m.poll_heartbeat(now).is_none(), "no rejoin before the lost partitions are released");
    m.released(now, *revocation);
    assert!(drain(&mut m).is_empty(), "the abandoned revocation completes nothing");
    m.released(now, lost);
    let join = m.poll_heartbeat(now).expect("rejoin at once");
    assert_full_join(&join.request);
}

#[test]
fn the_coordinator_moving_mid_reconciliation_changes_nothing_but_where_heartbeats_go() {
    let mut clock = Clock::new();
    let mut m = stable(&clock, config());
    let now = clock.advance(INTERVAL);
    let hb = m.poll_heartbeat(now).expect("due");
    m.on_heartbeat_response(now, hb.id, &ok(6, Some(&[(T1, &[1])])));
    let Some(Action::CommitRevoked { release, .. }) = drain(&mut m).pop() else { panic!() };
    let now = clock.advance(INTERVAL);
    let hb = m.poll_heartbeat(now).expect("due");
    m.on_heartbeat_response(now, hb.id, &error(ErrorCode::NotCoordinator));
    assert_eq!(drain(&mut m), vec![Action::FindCoordinator]);
    assert!(m.poll_heartbeat(now).is_none(), "not before the coordinator is found");
    assert_eq!(m.poll_timeout(), Some(now + DEFAULT_SESSION_TIMEOUT - INTERVAL), "only the session timer");
    m.released(now, release);
    assert!(drain(&mut m).is_empty(), "nothing added");
    assert_eq!(m.owned(), tps(&[("t1", 1)]));
    let now = clock.advance(Duration::from_millis(30));
    m.coordinator_found(now);
    let full = m.poll_heartbeat(now).expect("at once to the new coordinator");
    assert!(is_full(&full.request));
    assert_eq!(full.request.topic_partitions.map(|t| t[0].partitions.clone()), Some(vec![1]));
}

#[test]
fn a_handler_slower_than_the_rebalance_timeout_is_fenced_and_its_late_commit_ignored() {
    let mut clock = Clock::new();
    let mut m = stable(&clock, config());
    let mut c = Coordinator::new(&[(T1, &[0, 1])]);
    c.epoch = 5;
    c.delivered = Some(c.target.clone());
    c.reassign(&[(T1, &[1])]);
    let revoke_started = clock.now();
    let mut revocation = None;
    // Heartbeats go on while the handler of t1-0 does not finish; the coordinator
    // fences the member once the rebalance timeout has passed without the revocation.
    loop {
        let t = m.poll_timeout().expect("a timer");
        let now = clock.advance(t - clock.now());
        m.handle_timeout(now);
        let Some(hb) = m.poll_heartbeat(now) else { continue };
        assert_eq!(hb.request.topic_partitions, None, "t1-0 is still owned, unchanged");
        if now - revoke_started > DEFAULT_REBALANCE_TIMEOUT {
            c.script.push_back(Scripted::Error(ErrorCode::FencedMemberEpoch));
        }
        let answer = c.answer(&hb.request).expect("answered");
        m.on_heartbeat_response(now, hb.id, &answer);
        let actions = drain(&mut m);
        if let Some(Action::CommitRevoked { release, .. }) = actions.last() {
            revocation = Some(*release);
        }
        if let [Action::EpochChanged { epoch: 0 }, Action::PartitionsLost { release, reason: LostReason::Fenced, .. }] =
            &actions[..]
        {
            let revocation = revocation.expect("the revocation had started");
            m.released(now, revocation);
            assert!(drain(&mut m).is_empty(), "the late commit completes nothing");
            assert_eq!(m.state(), MemberState::Fenced);
            m.released(now, *release);
            assert_full_join(&m.poll_heartbeat(now).expect("rejoin").request);
            return;
        }
        assert!(now - revoke_started < DEFAULT_REBALANCE_TIMEOUT * 2, "fenced in time");
    }
}

#[test]
fn group_id_not_found_while_leaving_ends_the_leave() {
    let mut clock = Clock::new();
    let mut m = stable(&clock, config());
    m.leave(clock.now());
    let Some(Action::CommitRevoked { .. }) = drain(&mut m).pop() else { panic!() };
    let now = clock.advance(INTERVAL);
    let hb = m.poll_heartbeat(now).expect("heartbeats go on while the partitions are committed");
    assert_eq!(hb.request.member_epoch, 5);
    m.on_heartbeat_response(now, hb.id, &error(ErrorCode::GroupIdNotFound));
    let actions = drain(&mut m);
    assert!(
        matches!(
            &actions[..],
            [
                Action::EpochChanged { epoch: 0 },
                Action::PartitionsLost { reason: LostReason::UnknownMember, .. },
                Action::Finished(Outcome::Left),
            ]
        ),
        "{actions:?}"
    );
}

#[test]
fn no_answer_within_the_session_timeout_loses_the_partitions() {
    let mut clock = Clock::new();
    let mut m = stable(&clock, config());
    let sent = clock.now();
    let mut failures = 0;
    loop {
        let t = m.poll_timeout().expect("a timer");
        let now = clock.advance(t.saturating_duration_since(clock.now()));
        m.handle_timeout(now);
        let actions = drain(&mut m);
        if actions.iter().any(|a| matches!(a, Action::PartitionsLost { .. })) {
            assert!(matches!(
                &actions[..],
                [Action::EpochChanged { epoch: 0 }, Action::PartitionsLost { reason: LostReason::SessionExpired, .. }]
            ));
            break;
        }
        if actions.contains(&Action::FindCoordinator) {
            m.coordinator_found(now);
        }
        if let Some(hb) = m.poll_heartbeat(now) {
            failures += 1;
            m.on_heartbeat_failed(now, hb.id);
            assert_eq!(drain(&mut m), vec![Action::FindCoordinator]);
            m.coordinator_found(now);
        }
    }
    assert!(failures > 3);
    assert_eq!(clock.now() - sent, DEFAULT_SESSION_TIMEOUT, "lost when the session would have expired");
    assert_eq!(m.state(), MemberState::Fenced);
}

#[test]
fn unreleased_instance_id_is_retried_then_final() {
    let mut clock = Clock::new();
    let mut m = started(&clock, config().with_instance_id("i-1"));
    for attempt in 1..=4 {
        let join = m.poll_heartbeat(clock.now()).expect("join");
        assert_full_join(&join.request);
        m.on_heartbeat_response(clock.now(), join.id, &error(ErrorCode::UnreleasedInstanceId));
        if attempt <= DEFAULT_UNRELEASED_INSTANCE_ID_RETRIES {
            assert!(drain(&mut m).is_empty());
            assert!(m.poll_heartbeat(clock.now()).is_none(), "after a backoff");
            let t = m.poll_timeout().expect("retry timer");
            clock.advance(t - clock.now());
        }
    }
    let actions = drain(&mut m);
    let [Action::Finished(Outcome::Failed(GroupError::UnreleasedInstanceId { attempts: 4, instance_id, .. }))] =
        &actions[..]
    else {
        panic!("{actions:?}")
    };
    assert_eq!(instance_id, "i-1");
    assert_eq!(m.state(), MemberState::Stopped);
    assert!(m.poll_heartbeat(clock.advance(Duration::from_secs(60))).is_none());
}

#[test]
fn unsupported_version_on_the_first_join_falls_back_to_classic_unless_turned_off() {
    let clock = Clock::new();
    for (fallback, expected) in [(true, true), (false, false)] {
        let mut m = started(&clock, config().with_classic_fallback(fallback));
        let join = m.poll_heartbeat(clock.now()).expect("join");
        m.on_heartbeat_response(clock.now(), join.id, &error(ErrorCode::UnsupportedVersion));
        let actions = drain(&mut m);
        match &actions[..] {
            [Action::Finished(Outcome::FallBackToClassic { message: Some(_) })] => assert!(expected),
            [Action::Finished(Outcome::Failed(GroupError::UnsupportedVersion { .. }))] => assert!(!expected),
            other => panic!("{other:?}"),
        }
    }
}

// ---------------------------------------------------------------------------------
// Leaving.

#[test]
fn a_leave_commits_first_then_sends_the_leave_epoch() {
    for (config, epoch) in [(config(), LEAVE_EPOCH), (config().with_instance_id("i-1"), STATIC_LEAVE_EPOCH)] {
        let mut clock = Clock::new();
        let mut m = stable(&clock, config);
        let now = clock.advance(Duration::from_millis(10));
        m.leave(now);
        let actions = drain(&mut m);
        let [
            Action::StopFetching { .. },
            Action::CommitRevoked { release, partitions, reason: RevokeReason::Shutdown },
        ] = &actions[..]
        else {
            panic!("{actions:?}")
        };
        assert_eq!(partitions, &tps(&[("t1", 0), ("t1", 1)]));
        assert_eq!(m.state(), MemberState::Leaving);
        assert!(m.poll_heartbeat(now).is_none(), "the leave waits for the commit");
        m.released(now, *release);
        let leave = m.poll_heartbeat(now).expect("the leave goes at once");
        assert_eq!(leave.request.member_epoch, epoch);
        assert_eq!(leave.request.instance_id.is_some(), epoch == STATIC_LEAVE_EPOCH);
        assert!(m.owned().is_empty());
        m.on_heartbeat_response(now, leave.id, &error(ErrorCode::UnknownMemberId));
        assert_eq!(drain(&mut m), vec![Action::Finished(Outcome::Left)], "any answer ends the leave");
    }
}

#[test]
fn a_leave_before_anything_was_sent_ends_at_once() {
    let clock = Clock::new();
    let mut m = started(&clock, config());
    m.leave(clock.now());
    assert_eq!(drain(&mut m), vec![Action::Finished(Outcome::Left)]);
    assert!(m.poll_heartbeat(clock.now()).is_none());
}

// ---------------------------------------------------------------------------------
// The error matrix.

/// What a member does with an error answer to a heartbeat.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expect {
    /// Finds the coordinator, then sends a full heartbeat at once.
    Rediscover,
    /// Sends a full heartbeat after the backoff.
    BackOff,
    /// Loses its partitions (no commit), rejoins at epoch 0 once they are released.
    Rejoin(LostReason),
    /// Stops with this code.
    Fatal(ErrorCode),
}

const MATRIX: &[(ErrorCode, Expect)] = &[
    (ErrorCode::NotCoordinator, Expect::Rediscover),
    (ErrorCode::CoordinatorNotAvailable, Expect::Rediscover),
    (ErrorCode::CoordinatorLoadInProgress, Expect::BackOff),
    (ErrorCode::FencedMemberEpoch, Expect::Rejoin(LostReason::Fenced)),
    (ErrorCode::UnknownMemberId, Expect::Rejoin(LostReason::UnknownMember)),
    (ErrorCode::UnreleasedInstanceId, Expect::BackOff),
    (ErrorCode::FencedInstanceId, Expect::Fatal(ErrorCode::FencedInstanceId)),
    (ErrorCode::GroupAuthorizationFailed, Expect::Fatal(ErrorCode::GroupAuthorizationFailed)),
    (ErrorCode::UnsupportedVersion, Expect::Fatal(ErrorCode::UnsupportedVersion)),
    (ErrorCode::InvalidRequest, Expect::Fatal(ErrorCode::InvalidRequest)),
    (ErrorCode::UnsupportedAssignor, Expect::Fatal(ErrorCode::UnsupportedAssignor)),
    (ErrorCode::GroupMaxSizeReached, Expect::Fatal(ErrorCode::GroupMaxSizeReached)),
    (ErrorCode::InvalidRegularExpression, Expect::Fatal(ErrorCode::InvalidRegularExpression)),
    (ErrorCode::GroupIdNotFound, Expect::Fatal(ErrorCode::GroupIdNotFound)),
    (ErrorCode::UnknownServerError, Expect::Fatal(ErrorCode::UnknownServerError)),
    (ErrorCode::Unknown(9999), Expect::Fatal(ErrorCode::Unknown(9999))),
    // Not in the schema's list; classified by their retry action.
    (ErrorCode::StaleMemberEpoch, Expect::BackOff),
    (ErrorCode::RequestTimedOut, Expect::BackOff),
    (ErrorCode::IllegalGeneration, Expect::Rejoin(LostReason::UnknownMember)),
];

#[test]
fn every_error_code_of_the_matrix_on_a_member_with_partitions() {
    for &(code, expect) in MATRIX {
        let mut clock = Clock::new();
        let mut m = stable(&clock, config().with_instance_id("i-1"));
        let now = clock.advance(INTERVAL);
        let hb = m.poll_heartbeat(now).expect("due");
        m.on_heartbeat_response(now, hb.id, &error(code));
        let actions = drain(&mut m);
        let name = code.name();
        match expect {
            Expect::Rediscover => {
                assert_eq!(actions, vec![Action::FindCoordinator], "{name}");
                assert!(m.poll_heartbeat(now).is_none(), "{name}: not before found");
                m.coordinator_found(now);
                let next = m.poll_heartbeat(now).expect("at once");
                assert!(is_full(&next.request) && next.request.member_epoch == 5, "{name}");
                assert_eq!(m.owned().len(), 2, "{name}: nothing lost");
            }
            Expect::BackOff => {
                assert!(actions.is_empty(), "{name}: {actions:?}");
                assert!(m.poll_heartbeat(now).is_none(), "{name}: not before the backoff");
                assert_eq!(m.poll_timeout(), Some(now + DEFAULT_RETRY_BACKOFF), "{name}");
                let next = m.poll_heartbeat(clock.advance(DEFAULT_RETRY_BACKOFF)).expect("after the backoff");
                assert!(is_full(&next.request) && next.request.member_epoch == 5, "{name}");
                assert_eq!(m.owned().len(), 2, "{name}: nothing lost");
            }
            Expect::Rejoin(reason) => {
                let [Action::EpochChanged { epoch: 0 }, Action::PartitionsLost { release, partitions, reason: r }] =
                    &actions[..]
                else {
                    panic!("{name}: {actions:?}")
                };
                assert_eq!((*r, partitions.len()), (reason, 2), "{name}");
                assert!(!actions.iter().any(|a| matches!(a, Action::CommitRevoked { .. })), "{name}: no commit");
                assert_eq!(m.epoch(), 0);
                assert!(m.poll_heartbeat(now).is_none(), "{name}: not before the release");
                m.released(now, *release);
                let join = m.poll_heartbeat(now).expect("rejoin at once");
                assert_full_join(&join.request);
                assert_eq!(join.request.instance_id.as_deref(), Some("i-1"));
            }
            Expect::Fatal(expected) => {
                let [
                    Action::EpochChanged { epoch: 0 },
                    Action::PartitionsLost { reason: LostReason::Failed, partitions, .. },
                    Action::Finished(Outcome::Failed(err)),
                ] = &actions[..]
                else {
                    panic!("{name}: {actions:?}")
                };
                assert_eq!(partitions.len(), 2, "{name}");
                assert_eq!(err.code(), expected, "{name}");
                assert!(err.to_string().contains(code.name()), "{name}: {err}");
                assert!(err.to_string().contains("from the test"), "{name}: the broker's message kept: {err}");
                assert_eq!(m.state(), MemberState::Stopped);
                assert!(m.poll_heartbeat(clock.advance(Duration::from_secs(60))).is_none(), "{name}");
                assert_eq!(m.poll_timeout(), None, "{name}");
            }
        }
    }
}

#[test]
fn every_error_code_of_the_matrix_on_the_join() {
    for &(code, expect) in MATRIX {
        let mut clock = Clock::new();
        let mut m = started(&clock, config().with_classic_fallback(false));
        let join = m.poll_heartbeat(clock.now()).expect("join");
        m.on_heartbeat_response(clock.now(), join.id, &error(code));
        let actions = drain(&mut m);
        let name = code.name();
        let next = match expect {
            Expect::Fatal(expected) => {
                let [Action::Finished(Outcome::Failed(err))] = &actions[..] else { panic!("{name}: {actions:?}") };
                assert_eq!(err.code(), expected, "{name}");
                continue;
            }
            Expect::Rediscover => {
                assert_eq!(actions, vec![Action::FindCoordinator], "{name}");
                m.coordinator_found(clock.now());
                m.poll_heartbeat(clock.now())
            }
            // Refused joins wait a backoff, also those that ask to rejoin.
            Expect::BackOff | Expect::Rejoin(_) => {
                assert!(actions.is_empty(), "{name}: {actions:?}");
                assert!(m.poll_heartbeat(clock.now()).is_none(), "{name}");
                m.poll_heartbeat(clock.advance(DEFAULT_RETRY_BACKOFF))
            }
        };
        assert_full_join(&next.expect("joins again").request);
    }
}

#[test]
fn coordinator_errors_in_a_row_back_off() {
    let mut clock = Clock::new();
    let mut m = stable(&clock, config());
    let mut waits = Vec::new();
    for _ in 0..4 {
        let t = m.poll_timeout().expect("timer");
        let now = clock.advance(t.saturating_duration_since(clock.now()));
        let hb = m.poll_heartbeat(now).expect("due");
        m.on_heartbeat_response(now, hb.id, &error(ErrorCode::NotCoordinator));
        assert_eq!(drain(&mut m), vec![Action::FindCoordinator]);
        m.coordinator_found(now);
        waits.push((m.poll_timeout().expect("timer") - now).as_millis());
    }
    assert_eq!(waits, vec![0, 200, 400, 800], "at once the first time, then backing off");
    let hb = m.poll_heartbeat(clock.advance(Duration::from_millis(800))).expect("due");
    m.on_heartbeat_response(clock.now(), hb.id, &ok(5, None));
    assert_eq!(m.poll_timeout(), Some(clock.now() + INTERVAL), "a success ends the backoff");
}

#[test]
fn backoff_jitter_stays_in_bounds_and_follows_the_seed() {
    let waits = |seed: u64| {
        let mut clock = Clock::new();
        let mut m = started(&clock, config().with_retry_jitter(DEFAULT_RETRY_JITTER).with_random_seed(seed));
        let mut waits = Vec::new();
        for _ in 0..8 {
            let t = m.poll_timeout().expect("timer");
            let now = clock.advance(t.saturating_duration_since(clock.now()));
            let join = m.poll_heartbeat(now).expect("due");
            m.on_heartbeat_response(now, join.id, &error(ErrorCode::CoordinatorLoadInProgress));
            waits.push(m.poll_timeout().expect("timer") - now);
        }
        waits
    };
    let a = waits(1);
    assert_eq!(a, waits(1), "deterministic for a seed");
    assert_ne!(a, waits(2), "another seed, other draws");
    for (i, w) in a.iter().enumerate() {
        let base = (DEFAULT_RETRY_BACKOFF * (1 << i)).min(DEFAULT_RETRY_BACKOFF_MAX);
        assert!(*w >= base.mul_f64(0.8) && *w <= base.mul_f64(1.2).min(DEFAULT_RETRY_BACKOFF_MAX), "{i}: {w:?}");
    }
}

#[test]
fn a_heartbeat_without_answer_rediscovers_and_backs_off() {
    let mut clock = Clock::new();
    let mut m = stable(&clock, config());
    let mut delays = Vec::new();
    for _ in 0..6 {
        let t = m.poll_timeout().expect("timer");
        let now = clock.advance(t - clock.now());
        let hb = m.poll_heartbeat(now).expect("due");
        assert_eq!(hb.request.member_epoch, 5);
        m.on_heartbeat_failed(now, hb.id);
        assert_eq!(drain(&mut m), vec![Action::FindCoordinator]);
        m.coordinator_found(now);
        delays.push(m.poll_timeout().expect("timer") - now);
    }
    let ms: Vec<u128> = delays.iter().map(Duration::as_millis).collect();
    assert_eq!(ms, vec![100, 200, 400, 800, 1000, 1000]);
}

// ---------------------------------------------------------------------------------
// A scripted coordinator, end to end.

/// Answers heartbeats as a KIP-848 coordinator does for one member: epochs, the
/// assignment on full requests and when it changes, revocations acknowledged before
/// the new epoch; or with the next scripted answer.
struct Coordinator {
    epoch: i32,
    target: Vec<(Uuid, Vec<i32>)>,
    delivered: Option<Vec<(Uuid, Vec<i32>)>>,
    script: VecDeque<Scripted>,
    requests: Vec<ConsumerGroupHeartbeatRequest>,
}

enum Scripted {
    Error(ErrorCode),
    /// No answer: the heartbeat fails.
    Lost,
}

impl Coordinator {
    fn new(target: &[(Uuid, &[i32])]) -> Coordinator {
        Coordinator {
            epoch: 0,
            target: target.iter().map(|(t, p)| (*t, p.to_vec())).collect(),
            delivered: None,
            script: VecDeque::new(),
            requests: Vec::new(),
        }
    }

    fn reassign(&mut self, target: &[(Uuid, &[i32])]) {
        self.target = target.iter().map(|(t, p)| (*t, p.to_vec())).collect();
        self.epoch += 1;
    }

    fn answer(&mut self, r: &ConsumerGroupHeartbeatRequest) -> Option<ConsumerGroupHeartbeatResponse> {
        self.requests.push(r.clone());
        match self.script.pop_front() {
            Some(Scripted::Error(code)) => return Some(error(code)),
            Some(Scripted::Lost) => return None,
            None => {}
        }
        if r.member_epoch < 0 {
            return Some(ok(r.member_epoch, None));
        }
        if r.member_epoch == 0 {
            self.epoch = self.epoch.max(1);
            self.delivered = None;
        }
        let send = is_full(r) || self.delivered.as_ref() != Some(&self.target);
        let parts: Vec<(Uuid, &[i32])> = self.target.iter().map(|(t, p)| (*t, p.as_slice())).collect();
        if send {
            self.delivered = Some(self.target.clone());
        }
        Some(ok(self.epoch, send.then_some(&parts[..])))
    }
}

/// Runs the member against the coordinator until `until` passes, releasing revoked and
/// lost partitions at once; returns the partitions started and stopped, in order.
fn run(m: &mut ConsumerMember, c: &mut Coordinator, clock: &mut Clock, until: Duration) -> Vec<String> {
    let mut log = Vec::new();
    let end = clock.now() + until;
    while clock.now() < end && !log.iter().any(|l: &String| l.starts_with("finished")) {
        let now = clock.now();
        m.handle_timeout(now);
        while let Some(a) = m.poll_action() {
            match a {
                Action::FindCoordinator => m.coordinator_found(now),
                Action::RefreshMetadata { topic_ids } => {
                    m.on_topic_names(now, topic_ids.iter().map(|id| (*id, topic_name(*id))))
                }
                Action::CommitRevoked { release, partitions, .. } => {
                    log.push(format!("commit {partitions:?}"));
                    m.released(now, release);
                }
                Action::PartitionsLost { release, partitions, .. } => {
                    log.push(format!("lost {partitions:?}"));
                    m.released(now, release);
                }
                Action::StartPartitions { partitions } => log.push(format!("start {partitions:?}")),
                Action::Finished(o) => log.push(format!("finished {o:?}")),
                Action::EpochChanged { .. } | Action::StopFetching { .. } => {}
                Action::DescribeTopics { .. } => panic!("a KIP-848 member asked for partition counts"),
            }
        }
        if let Some(hb) = m.poll_heartbeat(now) {
            match c.answer(&hb.request) {
                Some(r) => m.on_heartbeat_response(now, hb.id, &r),
                None => m.on_heartbeat_failed(now, hb.id),
            }
            continue;
        }
        match m.poll_timeout() {
            Some(t) if t > now => {
                clock.advance((t - now).min(end.saturating_duration_since(now)).max(Duration::from_millis(1)));
            }
            Some(_) => {}
            None => break,
        }
    }
    log
}

#[test]
fn against_a_scripted_coordinator() {
    let mut clock = Clock::new();
    let mut m = ConsumerMember::new(config(), clock.now()).expect("config");
    let mut c = Coordinator::new(&[(T1, &[0, 1])]);
    let log = run(&mut m, &mut c, &mut clock, Duration::from_secs(10));
    assert_eq!(log, vec![format!("start {:?}", tps(&[("t1", 0), ("t1", 1)]))]);
    assert_eq!((m.epoch(), m.state()), (1, MemberState::Stable));
    assert_full_join(&c.requests[0]);
    assert_eq!(c.requests[1].topic_partitions.as_ref().map(Vec::len), Some(1), "the ack");
    assert!(c.requests[2..].iter().all(|r| !is_full(r) && r.topic_partitions.is_none()), "then keepalives");

    // t1-0 moves away and t2-0 comes; a lost answer and a fence on the way.
    c.reassign(&[(T1, &[1]), (T2, &[0])]);
    let log = run(&mut m, &mut c, &mut clock, Duration::from_secs(10));
    assert_eq!(
        log,
        vec![format!("commit {:?}", tps(&[("t1", 0)])), format!("start {:?}", tps(&[("t2", 0)]))],
        "revoked before assigned"
    );
    c.script.extend([Scripted::Lost, Scripted::Error(ErrorCode::FencedMemberEpoch)]);
    let log = run(&mut m, &mut c, &mut clock, Duration::from_secs(10));
    assert_eq!(
        log,
        vec![format!("lost {:?}", tps(&[("t1", 1), ("t2", 0)])), format!("start {:?}", tps(&[("t1", 1), ("t2", 0)]))]
    );
    let n = c.requests.len();
    let fenced_at = c.requests.iter().rposition(|r| r.member_epoch == 0).expect("a rejoin");
    assert!(fenced_at > 0 && is_full(&c.requests[fenced_at - 1]), "the heartbeat after a lost answer is full");
    assert!(n > fenced_at + 1);

    m.leave(clock.now());
    let log = run(&mut m, &mut c, &mut clock, Duration::from_secs(1));
    assert_eq!(log, vec![format!("commit {:?}", tps(&[("t1", 1), ("t2", 0)])), "finished Left".to_owned()]);
    assert_eq!(c.requests.last().map(|r| r.member_epoch), Some(LEAVE_EPOCH));
}

// ---------------------------------------------------------------------------------
// Invariants under random answers, errors and time.

mod property {
    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        Advance(u64),
        Answer { epoch: i32, assignment: Option<Vec<(u8, u8)>>, interval: i32 },
        Error(usize),
        Fail,
        Duplicate,
        Release,
        Names(u8),
        Leave,
    }

    const CODES: &[ErrorCode] = &[
        ErrorCode::NotCoordinator,
        ErrorCode::CoordinatorNotAvailable,
        ErrorCode::CoordinatorLoadInProgress,
        ErrorCode::FencedMemberEpoch,
        ErrorCode::UnknownMemberId,
        ErrorCode::UnreleasedInstanceId,
        ErrorCode::StaleMemberEpoch,
        ErrorCode::RequestTimedOut,
        ErrorCode::GroupMaxSizeReached,
        ErrorCode::UnreleasedInstanceId,
        ErrorCode::NotCoordinator,
    ];

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0u64..20_000).prop_map(Op::Advance),
            12 => (-3i32..8, proptest::option::of(proptest::collection::vec((0u8..3, 0u8..4), 0..6)), -1i32..5000)
                .prop_map(|(epoch, assignment, interval)| Op::Answer { epoch, assignment, interval }),
            3 => (0..CODES.len() * 4).prop_map(Op::Error),
            1 => Just(Op::Fail),
            1 => Just(Op::Duplicate),
            6 => Just(Op::Release),
            3 => (0u8..8).prop_map(Op::Names),
            1 => Just(Op::Leave),
        ]
    }

    const IDS: [Uuid; 3] = [T1, T2, T3];

    struct Harness {
        clock: Clock,
        m: ConsumerMember,
        outstanding: Option<HeartbeatId>,
        last_answered: Option<(HeartbeatId, ConsumerGroupHeartbeatResponse)>,
        expect_full: bool,
        model: BTreeSet<TopicPartition>,
        revoking: HashMap<ReleaseId, Vec<TopicPartition>>,
        pending: VecDeque<ReleaseId>,
        finished: bool,
        leave_called: bool,
    }

    impl Harness {
        fn settle(&mut self) -> Result<(), TestCaseError> {
            loop {
                let now = self.clock.now();
                self.m.handle_timeout(now);
                while let Some(a) = self.m.poll_action() {
                    prop_assert!(!self.finished, "an action after the end: {:?}", a);
                    match a {
                        Action::FindCoordinator => self.m.coordinator_found(now),
                        Action::CommitRevoked { release, partitions, .. } => {
                            for p in &partitions {
                                prop_assert!(self.model.contains(p), "revoking {} not owned", p);
                            }
                            self.revoking.insert(release, partitions);
                            self.pending.push_back(release);
                        }
                        Action::PartitionsLost { release, partitions, .. } => {
                            let lost: BTreeSet<_> = partitions.into_iter().collect();
                            prop_assert_eq!(&lost, &self.model, "everything owned is lost");
                            self.model.clear();
                            self.revoking.clear();
                            self.pending.push_back(release);
                        }
                        Action::StartPartitions { partitions } => {
                            for p in partitions {
                                prop_assert!(self.model.insert(p), "started twice");
                            }
                        }
                        Action::EpochChanged { epoch } => prop_assert!(epoch >= 0),
                        Action::Finished(_) => self.finished = true,
                        Action::RefreshMetadata { .. } | Action::StopFetching { .. } => {}
                        Action::DescribeTopics { .. } => {
                            prop_assert!(false, "a KIP-848 member asked for partition counts")
                        }
                    }
                }
                let owned: BTreeSet<_> = self.m.owned().into_iter().collect();
                prop_assert_eq!(&owned, &self.model, "owned changes only through reconciliation or loss");
                prop_assert!(self.m.epoch() >= 0);
                match self.m.poll_heartbeat(now) {
                    Some(hb) => {
                        prop_assert!(self.outstanding.is_none(), "two heartbeats in flight");
                        prop_assert!(!self.finished);
                        let r = &hb.request;
                        if r.member_epoch >= 0 && self.expect_full {
                            prop_assert!(is_full(r), "a full heartbeat after an error: {:?}", r);
                        }
                        if r.member_epoch == 0 {
                            prop_assert!(is_full(r));
                            prop_assert_eq!(&r.topic_partitions, &Some(vec![]));
                        }
                        let leave_epoch =
                            if self.m.config().instance_id.is_some() { STATIC_LEAVE_EPOCH } else { LEAVE_EPOCH };
                        prop_assert!(r.member_epoch >= 0 || r.member_epoch == leave_epoch, "epoch {}", r.member_epoch);
                        prop_assert!(r.member_epoch >= 0 || self.leave_called, "a leave nobody asked for");
                        self.expect_full = false;
                        self.outstanding = Some(hb.id);
                    }
                    None => return Ok(()),
                }
            }
        }

        fn answer(&mut self, r: ConsumerGroupHeartbeatResponse) {
            if let Some(id) = self.outstanding.take() {
                let now = self.clock.now();
                self.expect_full |= r.error_code != 0;
                self.m.on_heartbeat_response(now, id, &r);
                self.last_answered = Some((id, r));
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        #[test]
        fn invariants_hold(ops in proptest::collection::vec(op(), 1..80), static_member: bool, seed: u64) {
            let clock = Clock::new();
            let mut config = config().with_retry_jitter(DEFAULT_RETRY_JITTER).with_random_seed(seed);
            if static_member {
                config = config.with_instance_id("i-1");
            }
            let m = ConsumerMember::new(config, clock.now()).expect("config");
            let mut h = Harness {
                clock, m, outstanding: None, last_answered: None, expect_full: false,
                model: BTreeSet::new(), revoking: HashMap::new(), pending: VecDeque::new(), finished: false, leave_called: false,
            };
            h.settle()?;
            for op in ops {
                match op {
                    Op::Advance(ms) => { h.clock.advance(Duration::from_millis(ms)); }
                    Op::Answer { epoch, assignment: parts, interval } => {
                        let parts = parts.map(|v| {
                            let a: Vec<(Uuid, Vec<i32>)> =
                                v.iter().map(|(t, p)| (IDS[usize::from(*t)], vec![i32::from(*p)])).collect();
                            a
                        });
                        let borrowed: Option<Vec<(Uuid, &[i32])>> =
                            parts.as_ref().map(|v| v.iter().map(|(t, p)| (*t, p.as_slice())).collect());
                        let r = ok(epoch, borrowed.as_deref()).with_heartbeat_interval_ms(interval);
                        h.answer(r);
                    }
                    Op::Error(i) => h.answer(error(CODES[i % CODES.len()])),
                    Op::Fail => {
                        if let Some(id) = h.outstanding.take() {
                            h.expect_full = true;
                            let now = h.clock.now();
                            h.m.on_heartbeat_failed(now, id);
                        }
                    }
                    Op::Duplicate => {
                        if let Some((id, r)) = h.last_answered.clone() {
                            let now = h.clock.now();
                            h.m.on_heartbeat_response(now, id, &r);
                        }
                    }
                    Op::Release => {
                        if let Some(release) = h.pending.pop_front() {
                            if let Some(parts) = h.revoking.remove(&release) {
                                for p in parts {
                                    h.model.remove(&p);
                                }
                            }
                            let now = h.clock.now();
                            h.m.released(now, release);
                        }
                    }
                    Op::Names(mask) => {
                        let now = h.clock.now();
                        let names: Vec<(Uuid, &str)> = IDS
                            .iter()
                            .enumerate()
                            .filter(|(i, _)| mask & (1 << i) != 0)
                            .map(|(_, id)| (*id, topic_name(*id)))
                            .collect();
                        h.m.on_topic_names(now, names);
                    }
                    Op::Leave => {
                        h.leave_called = true;
                        let now = h.clock.now();
                        h.m.leave(now);
                    }
                }
                h.settle()?;
            }
        }
    }
}
