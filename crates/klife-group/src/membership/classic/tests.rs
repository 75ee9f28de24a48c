//! Tests of the classic member: a virtual clock, a scripted coordinator, a table test
//! per error code, and a property test of the invariants.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use klife_protocol::ErrorCode;
use klife_protocol::messages::join_group_response::JoinGroupResponseMember;
use klife_protocol::messages::{HeartbeatResponse, JoinGroupResponse, LeaveGroupResponse, SyncGroupResponse};
use klife_protocol::types::TopicPartition;
use proptest::prelude::*;

use super::*;
use crate::GroupError;
use crate::assignor::RangeAssignor;
use crate::protocol::{Assignment, Subscription};

const INTERVAL: Duration = DEFAULT_HEARTBEAT_INTERVAL;

fn tp(topic: &str, partition: i32) -> TopicPartition {
    TopicPartition::new(topic, partition)
}

fn cooperative() -> ClassicConfig {
    ClassicConfig::new("g", ["t"])
}

fn eager() -> ClassicConfig {
    ClassicConfig::new("g", ["t"]).with_assignors(vec![Arc::new(RangeAssignor)])
}

/// A member on a virtual clock, and what it asked for.
struct H {
    m: ClassicMember,
    now: Instant,
}

impl H {
    fn new(config: ClassicConfig) -> H {
        let now = Instant::now();
        let mut m = ClassicMember::new(config, now).expect("valid config");
        assert_eq!(m.poll_action(), Some(Action::FindCoordinator));
        m.coordinator_found(now);
        H { m, now }
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.m.handle_timeout(self.now);
    }

    fn actions(&mut self) -> Vec<Action> {
        std::iter::from_fn(|| self.m.poll_action()).collect()
    }

    fn request(&mut self) -> OutgoingRequest {
        self.m.poll_request(self.now).expect("a request is due")
    }

    fn no_request(&mut self) {
        assert_eq!(self.m.poll_request(self.now), None);
    }

    fn join(&mut self) -> (RequestId, JoinGroupRequest) {
        let r = self.request();
        let Request::JoinGroup(j) = r.request else { panic!("expected a JoinGroup, got {:?}", r.request) };
        (r.id, j)
    }

    fn sync(&mut self) -> (RequestId, SyncGroupRequest) {
        let r = self.request();
        let Request::SyncGroup(s) = r.request else { panic!("expected a SyncGroup, got {:?}", r.request) };
        (r.id, s)
    }

    fn heartbeat(&mut self) -> (RequestId, HeartbeatRequest) {
        let r = self.request();
        let Request::Heartbeat(h) = r.request else { panic!("expected a Heartbeat, got {:?}", r.request) };
        (r.id, h)
    }

    fn answer(&mut self, id: RequestId, response: Response) {
        self.m.on_response(self.now, id, &response);
    }

    /// Joins as a follower with `generation` and is given `parts`.
    fn joined(&mut self, generation: i32, parts: &[TopicPartition]) -> Vec<Action> {
        let (id, _) = self.join();
        self.answer(id, Response::JoinGroup(join_ok(generation, "m1", "leader")));
        let (id, sync) = self.sync();
        assert!(sync.assignments.is_empty(), "a follower sends no assignment");
        self.answer(id, Response::SyncGroup(sync_ok(parts)));
        self.actions()
    }
}

fn join_ok(generation: i32, member_id: &str, leader: &str) -> JoinGroupResponse {
    JoinGroupResponse::default()
        .with_generation_id(generation)
        .with_member_id(member_id.into())
        .with_leader(leader.into())
        .with_protocol_name(Some("cooperative-sticky".into()))
}

fn join_error(code: ErrorCode) -> Response {
    Response::JoinGroup(JoinGroupResponse::default().with_error_code(code.code()))
}

fn sync_ok(parts: &[TopicPartition]) -> SyncGroupResponse {
    let bytes = Assignment::new(parts.iter().cloned()).encode(3).expect("it encodes");
    SyncGroupResponse::default().with_assignment(bytes)
}

fn heartbeat(code: ErrorCode) -> Response {
    Response::Heartbeat(HeartbeatResponse::default().with_error_code(code.code()))
}

fn subscription_of(join: &JoinGroupRequest) -> Subscription {
    Subscription::decode(join.protocols[0].metadata.clone()).expect("it decodes")
}

#[test]
fn member_id_required_rejoins_at_once_with_the_given_id() {
    let mut h = H::new(cooperative());
    let r = h.request();
    assert_eq!(r.timeout, Some(DEFAULT_REBALANCE_TIMEOUT + JOIN_TIMEOUT_MARGIN), "a join waits for the rebalance");
    let Request::JoinGroup(j) = &r.request else { panic!() };
    assert_eq!(j.member_id, "");
    assert_eq!(j.protocol_type, "consumer");
    assert_eq!(j.protocols[0].name, "cooperative-sticky");
    assert_eq!(j.rebalance_timeout_ms, 30_000);
    h.no_request();
    h.answer(
        r.id,
        Response::JoinGroup(
            JoinGroupResponse::default()
                .with_error_code(ErrorCode::MemberIdRequired.code())
                .with_member_id("m1".into()),
        ),
    );
    let (_, j) = h.join();
    assert_eq!(j.member_id, "m1");
}

#[test]
fn the_leader_assigns_with_the_chosen_assignor() {
    let mut h = H::new(cooperative());
    let (id, _) = h.join();
    let meta = |topics: &[&str]| Subscription::new(topics.iter().copied()).encode(3).expect("it encodes");
    let members = vec![
        JoinGroupResponseMember::default().with_member_id("m1".into()).with_metadata(meta(&["t"])),
        JoinGroupResponseMember::default().with_member_id("m2".into()).with_metadata(meta(&["t", "u"])),
        JoinGroupResponseMember::default().with_member_id("m3".into()).with_metadata(Bytes::from_static(&[0xff])),
    ];
    h.answer(id, Response::JoinGroup(join_ok(1, "m1", "m1").with_members(members)));
    assert_eq!(h.actions(), vec![Action::DescribeTopics { topics: vec!["t".into(), "u".into()] }]);
    assert_eq!(h.m.state(), ClassicState::Assigning);
    h.no_request();
    h.m.on_partition_counts(h.now, [("t", 4), ("u", 1)]);
    let (id, sync) = h.sync();
    assert_eq!(sync.generation_id, 1);
    assert_eq!(sync.protocol_name.as_deref(), Some("cooperative-sticky"));
    let mut given = BTreeSet::new();
    for a in &sync.assignments {
        for p in Assignment::decode(a.assignment.clone()).expect("it decodes").partitions {
            assert!(given.insert(p), "given twice");
        }
    }
    assert_eq!(given.len(), 5, "every partition assigned, none to the member whose metadata is unreadable");
    let mine = Assignment::decode(sync.assignments[0].assignment.clone()).expect("it decodes").partitions;
    h.answer(id, Response::SyncGroup(sync_ok(&mine)));
    assert_eq!(h.actions(), vec![Action::EpochChanged { epoch: 1 }, Action::StartPartitions { partitions: mine }]);
    assert_eq!(h.m.state(), ClassicState::Stable);
    // The counts it assigned from, for its driver to compare with the metadata.
    let counts: Vec<(&str, i32)> =
        h.m.leader_counts().expect("it leads").iter().map(|(t, n)| (t.as_str(), *n)).collect();
    assert_eq!(counts, [("t", 4), ("u", 1)]);
    h.m.request_rejoin(h.now);
    assert!(h.m.leader_counts().is_none(), "only while the group is stable");
}

#[test]
fn a_follower_has_no_counts_to_watch() {
    let mut h = H::new(cooperative());
    h.joined(1, &[tp("t", 0)]);
    assert!(h.m.leader_counts().is_none());
}

/// A user's cooperative assignor that hands every partition to the first member,
/// whoever owns it.
#[derive(Debug)]
struct Greedy;

impl Assignor for Greedy {
    fn name(&self) -> &str {
        "greedy"
    }
    fn rebalance_protocol(&self) -> RebalanceProtocol {
        RebalanceProtocol::Cooperative
    }
    fn assign(&self, input: &AssignorInput) -> GroupAssignment {
        let mut out = input.empty_assignment();
        let first = input.sorted_members()[0].member_id.clone();
        out.insert(first, input.partitions("t").collect());
        out
    }
}

#[test]
fn a_user_assignor_cannot_move_a_partition_in_one_rebalance() {
    let mut h = H::new(ClassicConfig::new("g", ["t"]).with_assignors(vec![Arc::new(Greedy)]));
    let (id, _) = h.join();
    let owning = |parts: &[TopicPartition]| {
        Subscription::new(["t"]).with_owned_partitions(parts.iter().cloned()).encode(3).expect("it encodes")
    };
    let members = vec![
        JoinGroupResponseMember::default().with_member_id("m1".into()).with_metadata(owning(&[])),
        JoinGroupResponseMember::default().with_member_id("m2".into()).with_metadata(owning(&[tp("t", 1)])),
    ];
    let answer = join_ok(3, "m1", "m1").with_protocol_name(Some("greedy".into())).with_members(members);
    h.answer(id, Response::JoinGroup(answer));
    h.actions();
    h.m.on_partition_counts(h.now, [("t", 2)]);
    let (_, sync) = h.sync();
    let given = |i: usize| Assignment::decode(sync.assignments[i].assignment.clone()).expect("it decodes").partitions;
    assert_eq!(given(0), vec![tp("t", 0)], "t-1 stays with m2 until it gives it up");
    assert!(given(1).is_empty());
}

#[test]
fn a_static_leader_told_to_skip_the_assignment_syncs_as_a_follower() {
    let mut h = H::new(cooperative().with_instance_id("i1"));
    let (id, j) = h.join();
    assert_eq!(j.group_instance_id.as_deref(), Some("i1"));
    h.answer(id, Response::JoinGroup(join_ok(4, "m1", "m1").with_skip_assignment(true)));
    let (_, sync) = h.sync();
    assert!(sync.assignments.is_empty());
    assert_eq!(sync.group_instance_id.as_deref(), Some("i1"));
}

#[test]
fn heartbeats_go_at_the_interval_and_during_a_revocation() {
    let mut h = H::new(cooperative());
    h.joined(1, &[tp("t", 0), tp("t", 1)]);
    h.no_request();
    assert_eq!(h.m.poll_timeout(), Some(h.now + INTERVAL));
    h.advance(INTERVAL);
    let (id, hb) = h.heartbeat();
    assert_eq!((hb.generation_id, hb.member_id.as_str()), (1, "m1"));
    h.answer(id, heartbeat(ErrorCode::None));
    // The group rebalances: a cooperative member joins at once and keeps its partitions.
    h.advance(INTERVAL);
    let (id, _) = h.heartbeat();
    h.answer(id, heartbeat(ErrorCode::RebalanceInProgress));
    assert!(h.actions().is_empty(), "nothing revoked before the join");
    let (id, j) = h.join();
    let sub = subscription_of(&j);
    assert_eq!(sub.owned_partitions, vec![tp("t", 0), tp("t", 1)]);
    assert_eq!(sub.generation_id, Some(1));
    // The leader takes t-1 away and gives t-2.
    h.answer(id, Response::JoinGroup(join_ok(2, "m1", "leader")));
    let (id, _) = h.sync();
    h.answer(id, Response::SyncGroup(sync_ok(&[tp("t", 0), tp("t", 2)])));
    let actions = h.actions();
    let Some(Action::CommitRevoked { release, partitions, reason: RevokeReason::Reassigned }) = actions.get(3).cloned()
    else {
        panic!("{actions:?}")
    };
    assert_eq!(partitions, vec![tp("t", 1)]);
    assert_eq!(
        &actions[..3],
        &[
            Action::EpochChanged { epoch: 2 },
            Action::StartPartitions { partitions: vec![tp("t", 2)] },
            Action::StopFetching { release, partitions: vec![tp("t", 1)] },
        ]
    );
    assert_eq!(h.m.state(), ClassicState::Revoking);
    // The handler is slow: heartbeats go on meanwhile, and no join before the release.
    for _ in 0..3 {
        h.advance(INTERVAL);
        let (id, hb) = h.heartbeat();
        assert_eq!(hb.generation_id, 2);
        h.no_request();
        h.answer(id, heartbeat(ErrorCode::None));
    }
    h.m.released(h.now, release);
    let (_, j) = h.join();
    assert_eq!(subscription_of(&j).owned_partitions, vec![tp("t", 0), tp("t", 2)], "rejoins at once after revoking");
}

#[test]
fn an_eager_member_revokes_everything_before_it_joins_again() {
    let mut h = H::new(eager());
    assert_eq!(h.m.rebalance_protocol(), RebalanceProtocol::Eager);
    h.joined(1, &[tp("t", 0)]);
    h.advance(INTERVAL);
    let (id, _) = h.heartbeat();
    h.answer(id, heartbeat(ErrorCode::RebalanceInProgress));
    let actions = h.actions();
    let Some(Action::CommitRevoked { release, partitions, .. }) = actions.get(1).cloned() else {
        panic!("{actions:?}")
    };
    assert_eq!(partitions, vec![tp("t", 0)]);
    h.no_request();
    h.advance(INTERVAL);
    let (id, _) = h.heartbeat();
    h.answer(id, heartbeat(ErrorCode::RebalanceInProgress));
    h.m.released(h.now, release);
    let (_, j) = h.join();
    assert!(subscription_of(&j).owned_partitions.is_empty());
    assert!(h.m.owned().is_empty());
}

/// What a heartbeat answer's code leads to, for a stable member owning t-0.
#[test]
fn heartbeat_errors() {
    enum Then {
        LostAndRejoin { reason: LostReason, member_id: &'static str },
        Fatal(ErrorCode),
        FindCoordinator,
        Backoff,
    }
    let table = [
        (ErrorCode::IllegalGeneration, Then::LostAndRejoin { reason: LostReason::Fenced, member_id: "m1" }),
        (ErrorCode::UnknownMemberId, Then::LostAndRejoin { reason: LostReason::UnknownMember, member_id: "" }),
        (ErrorCode::FencedInstanceId, Then::Fatal(ErrorCode::FencedInstanceId)),
        (ErrorCode::GroupAuthorizationFailed, Then::Fatal(ErrorCode::GroupAuthorizationFailed)),
        (ErrorCode::NotCoordinator, Then::FindCoordinator),
        (ErrorCode::CoordinatorNotAvailable, Then::FindCoordinator),
        (ErrorCode::CoordinatorLoadInProgress, Then::Backoff),
    ];
    for (code, then) in table {
        let mut h = H::new(cooperative().with_instance_id("i1"));
        h.joined(1, &[tp("t", 0)]);
        h.advance(INTERVAL);
        let (id, _) = h.heartbeat();
        h.answer(id, heartbeat(code));
        let actions = h.actions();
        match then {
            Then::LostAndRejoin { reason, member_id } => {
                let Some(Action::PartitionsLost { release, partitions, reason: r }) = actions.get(1).cloned() else {
                    panic!("{code:?}: {actions:?}")
                };
                assert_eq!(actions[0], Action::EpochChanged { epoch: -1 });
                assert_eq!((partitions, r), (vec![tp("t", 0)], reason), "{code:?}");
                h.no_request();
                h.m.released(h.now, release);
                let (_, j) = h.join();
                assert_eq!(j.member_id, member_id, "{code:?}");
                assert!(subscription_of(&j).owned_partitions.is_empty(), "{code:?}: lost partitions are not claimed");
            }
            Then::Fatal(expected) => {
                let Some(Action::Finished(Outcome::Failed(e))) = actions.last() else {
                    panic!("{code:?}: {actions:?}")
                };
                assert_eq!(e.code(), expected);
                if code == ErrorCode::FencedInstanceId {
                    assert!(matches!(e, GroupError::FencedInstanceId { instance_id, .. } if instance_id == "i1"));
                }
                assert!(actions.iter().any(|a| matches!(a, Action::PartitionsLost { reason: LostReason::Failed, .. })));
                h.advance(INTERVAL);
                h.no_request();
            }
            Then::FindCoordinator => {
                assert_eq!(actions, vec![Action::FindCoordinator], "{code:?}");
                h.no_request();
                h.m.coordinator_found(h.now);
                let (_, hb) = h.heartbeat();
                assert_eq!(hb.generation_id, 1, "{code:?}: the member stays in its generation");
            }
            Then::Backoff => {
                assert!(actions.is_empty(), "{code:?}");
                h.no_request();
                h.advance(DEFAULT_RETRY_BACKOFF);
                h.heartbeat();
            }
        }
    }
}

/// What a JoinGroup or SyncGroup answer's code leads to.
#[test]
fn join_and_sync_errors() {
    // Fatal on a join.
    for code in [
        ErrorCode::InconsistentGroupProtocol,
        ErrorCode::InvalidSessionTimeout,
        ErrorCode::GroupAuthorizationFailed,
        ErrorCode::GroupMaxSizeReached,
        ErrorCode::FencedInstanceId,
    ] {
        let mut h = H::new(cooperative());
        let (id, _) = h.join();
        h.answer(id, join_error(code));
        let actions = h.actions();
        assert!(matches!(actions.as_slice(), [Action::Finished(Outcome::Failed(e))] if e.code() == code), "{code:?}");
        h.no_request();
    }
    // A join refused while the group rebalances: again after the backoff.
    let mut h = H::new(cooperative());
    let (id, _) = h.join();
    h.answer(id, join_error(ErrorCode::RebalanceInProgress));
    h.no_request();
    h.advance(DEFAULT_RETRY_BACKOFF);
    h.join();
    // The coordinator moved: find it, then join at once.
    let mut h = H::new(cooperative());
    let (id, _) = h.join();
    h.answer(id, join_error(ErrorCode::NotCoordinator));
    assert_eq!(h.actions(), vec![Action::FindCoordinator]);
    h.no_request();
    h.m.coordinator_found(h.now);
    h.join();
    // UNKNOWN_MEMBER_ID on a join: the id is dropped.
    let mut h = H::new(cooperative());
    let (id, _) = h.join();
    h.answer(id, Response::JoinGroup(JoinGroupResponse::default().with_error_code(79).with_member_id("m1".into())));
    let (id, _) = h.join();
    h.answer(id, join_error(ErrorCode::UnknownMemberId));
    h.advance(DEFAULT_RETRY_BACKOFF);
    assert_eq!(h.join().1.member_id, "");

    // Sync: REBALANCE_IN_PROGRESS joins again at once, keeping the partitions.
    let mut h = H::new(cooperative());
    h.joined(1, &[tp("t", 0)]);
    h.advance(INTERVAL);
    let (id, _) = h.heartbeat();
    h.answer(id, heartbeat(ErrorCode::RebalanceInProgress));
    let (id, _) = h.join();
    h.answer(id, Response::JoinGroup(join_ok(2, "m1", "leader")));
    let (id, _) = h.sync();
    h.answer(id, Response::SyncGroup(SyncGroupResponse::default().with_error_code(27)));
    assert!(h.actions().is_empty());
    assert_eq!(subscription_of(&h.join().1).owned_partitions, vec![tp("t", 0)]);
    // Sync: ILLEGAL_GENERATION loses them.
    let mut h = H::new(cooperative());
    h.joined(1, &[tp("t", 0)]);
    h.m.set_topics(h.now, ["t", "u"]);
    let (id, j) = h.join();
    assert_eq!(subscription_of(&j).topics, vec!["t", "u"]);
    h.answer(id, Response::JoinGroup(join_ok(2, "m1", "leader")));
    let (id, _) = h.sync();
    h.answer(id, Response::SyncGroup(SyncGroupResponse::default().with_error_code(22)));
    let actions = h.actions();
    assert!(matches!(
        actions.as_slice(),
        [Action::EpochChanged { epoch: -1 }, Action::PartitionsLost { reason: LostReason::Fenced, .. }]
    ));
}

/// What a SyncGroup answer's code (or no answer) leads to, for a cooperative member
/// owning t-0 that joins again.
#[test]
fn sync_errors() {
    for code in [
        Some(ErrorCode::UnknownMemberId),
        Some(ErrorCode::NotCoordinator),
        Some(ErrorCode::FencedInstanceId),
        Some(ErrorCode::CoordinatorLoadInProgress),
        None,
    ] {
        let mut h = H::new(cooperative().with_instance_id("i1"));
        h.joined(1, &[tp("t", 0)]);
        h.m.set_topics(h.now, ["t"]);
        let (id, _) = h.join();
        h.answer(id, Response::JoinGroup(join_ok(2, "m1", "leader")));
        let (id, _) = h.sync();
        match code {
            Some(code) => h.answer(id, Response::SyncGroup(SyncGroupResponse::default().with_error_code(code.code()))),
            None => h.m.on_request_failed(h.now, id),
        }
        let actions = h.actions();
        match code {
            Some(ErrorCode::UnknownMemberId) => {
                let Some(Action::PartitionsLost { release, reason: LostReason::UnknownMember, .. }) =
                    actions.get(1).cloned()
                else {
                    panic!("{actions:?}")
                };
                h.m.released(h.now, release);
                assert_eq!(h.join().1.member_id, "");
            }
            Some(ErrorCode::FencedInstanceId) => {
                assert!(matches!(
                    actions.last(),
                    Some(Action::Finished(Outcome::Failed(GroupError::FencedInstanceId { .. })))
                ));
                h.no_request();
            }
            Some(ErrorCode::CoordinatorLoadInProgress) => {
                assert!(actions.is_empty());
                h.no_request();
                h.advance(DEFAULT_RETRY_BACKOFF);
                assert_eq!(subscription_of(&h.join().1).owned_partitions, vec![tp("t", 0)], "the join starts over");
            }
            _ => {
                // The coordinator moved, or did not answer: find it, and the join starts
                // over, keeping the partitions.
                assert_eq!(actions, vec![Action::FindCoordinator], "{code:?}");
                h.no_request();
                h.m.coordinator_found(h.now);
                h.advance(DEFAULT_RETRY_BACKOFF_MAX);
                assert_eq!(subscription_of(&h.join().1).owned_partitions, vec![tp("t", 0)], "{code:?}");
            }
        }
    }
}

#[test]
fn no_heartbeat_answered_within_the_session_timeout_loses_the_partitions() {
    let mut h = H::new(cooperative());
    h.joined(1, &[tp("t", 0)]);
    let mut lost = None;
    for _ in 0..20 {
        h.advance(INTERVAL);
        if let Some(r) = h.m.poll_request(h.now) {
            h.m.on_request_failed(h.now, r.id);
        }
        if h.m.poll_action() == Some(Action::FindCoordinator) {
            h.m.coordinator_found(h.now);
        }
        let actions = h.actions();
        if let Some(Action::PartitionsLost { reason, .. }) =
            actions.iter().find(|a| matches!(a, Action::PartitionsLost { .. }))
        {
            lost = Some(*reason);
            break;
        }
    }
    assert_eq!(lost, Some(LostReason::SessionExpired));
}

#[test]
fn a_rejoin_is_asked_for_only_when_stable() {
    let mut h = H::new(eager());
    h.m.request_rejoin(h.now);
    h.join();
    h.no_request();
    let mut h = H::new(eager());
    h.joined(1, &[tp("t", 0)]);
    h.m.request_rejoin(h.now);
    let actions = h.actions();
    assert!(matches!(actions.as_slice(), [Action::StopFetching { .. }, Action::CommitRevoked { .. }]));
    assert_eq!(h.m.state(), ClassicState::Revoking);
}

#[test]
fn a_stale_heartbeat_answer_is_ignored() {
    let mut h = H::new(cooperative());
    h.joined(1, &[tp("t", 0)]);
    h.advance(INTERVAL);
    let (old, _) = h.heartbeat();
    h.m.set_topics(h.now, ["t"]);
    // The answer comes while the member joins again: it is about the past generation.
    h.answer(old, heartbeat(ErrorCode::IllegalGeneration));
    assert!(h.actions().is_empty());
    assert_eq!(h.m.owned(), vec![tp("t", 0)]);
    h.join();
}

#[test]
fn leaving() {
    // A dynamic member commits, then sends a LeaveGroup.
    let mut h = H::new(cooperative());
    h.joined(1, &[tp("t", 0)]);
    h.m.leave(h.now);
    let actions = h.actions();
    let Some(Action::CommitRevoked { release, reason: RevokeReason::Shutdown, .. }) = actions.get(1).cloned() else {
        panic!("{actions:?}")
    };
    h.no_request();
    h.m.released(h.now, release);
    let r = h.request();
    let Request::LeaveGroup(l) = &r.request else { panic!() };
    assert_eq!(l.members[0].member_id, "m1");
    h.answer(r.id, Response::LeaveGroup(LeaveGroupResponse::default()));
    assert_eq!(h.actions(), vec![Action::Finished(Outcome::Left)]);
    // A static member commits and sends nothing.
    let mut h = H::new(cooperative().with_instance_id("i1"));
    h.joined(1, &[tp("t", 0)]);
    h.m.leave(h.now);
    let Some(Action::CommitRevoked { release, .. }) = h.actions().get(1).cloned() else { panic!() };
    h.m.released(h.now, release);
    assert_eq!(h.actions(), vec![Action::Finished(Outcome::Left)]);
    h.no_request();
}

#[test]
fn configurations_are_checked() {
    let now = Instant::now();
    let bad = [
        (ClassicConfig::new("", ["t"]), ConfigError::EmptyGroupId),
        (cooperative().with_heartbeat_interval(Duration::from_secs(60)), ConfigError::HeartbeatIntervalOutOfRange),
        (cooperative().with_session_timeout(Duration::ZERO), ConfigError::SessionTimeoutOutOfRange),
        (cooperative().with_assignors(vec![]), ConfigError::NoAssignor),
        (cooperative().with_instance_id(""), ConfigError::EmptyInstanceId),
    ];
    for (config, error) in bad {
        assert_eq!(ClassicMember::new(config, now).err(), Some(error));
    }
}

/// One step of the scripted coordinator in the property test.
#[derive(Debug, Clone)]
enum Step {
    Advance(u64),
    Answer(u8, u8),
    Fail,
    Release,
    FoundCoordinator,
    Counts,
    Leave,
    Resubscribe,
}

fn arb_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (0..5000u64).prop_map(Step::Advance),
        32 => (any::<u8>(), any::<u8>()).prop_map(|(c, p)| Step::Answer(c, p)),
        4 => Just(Step::Fail),
        8 => Just(Step::Release),
        4 => Just(Step::FoundCoordinator),
        4 => Just(Step::Counts),
        1 => Just(Step::Leave),
        2 => Just(Step::Resubscribe),
    ]
}

const CODES: [ErrorCode; 12] = [
    ErrorCode::None,
    ErrorCode::None,
    ErrorCode::None,
    ErrorCode::None,
    ErrorCode::None,
    ErrorCode::None,
    ErrorCode::RebalanceInProgress,
    ErrorCode::IllegalGeneration,
    ErrorCode::UnknownMemberId,
    ErrorCode::NotCoordinator,
    ErrorCode::CoordinatorLoadInProgress,
    ErrorCode::MemberIdRequired,
];

proptest! {
    /// Whatever the coordinator answers: at most one group request and one heartbeat in
    /// flight; the owned partitions are what the actions say; no partition starts twice;
    /// an eager member never joins owning partitions; nothing is sent after the end;
    /// every JoinGroup carries its longer timeout.
    #[test]
    fn invariants(eager_member in any::<bool>(), steps in prop::collection::vec(arb_step(), 1..80)) {
        let mut h = H::new(if eager_member { eager() } else { cooperative() });
        let mut in_flight: Vec<(RequestId, Request)> = Vec::new();
        let mut owned: BTreeSet<TopicPartition> = BTreeSet::new();
        let mut releases = Vec::new();
        let mut stopped = false;
        for step in steps {
            match step {
                Step::Advance(ms) => h.advance(Duration::from_millis(ms)),
                Step::Answer(c, p) => if !in_flight.is_empty() {
                    let (id, req) = in_flight.remove(usize::from(c) % in_flight.len());
                    let code = CODES[usize::from(c) % CODES.len()].code();
                    let parts: Vec<_> = (0..4).filter(|i| p & (1 << i) != 0).map(|i| tp("t", i)).collect();
                    let response = match req {
                        Request::JoinGroup(_) => Response::JoinGroup(
                            join_ok(i32::from(p), "m1", if p % 3 == 0 { "m1" } else { "x" })
                                .with_error_code(code)
                                .with_members(vec![JoinGroupResponseMember::default().with_member_id("m1".into())
                                    .with_metadata(Subscription::new(["t"]).encode(3).expect("it encodes"))]),
                        ),
                        Request::SyncGroup(_) => Response::SyncGroup(sync_ok(&parts).with_error_code(code)),
                        Request::Heartbeat(_) => heartbeat(CODES[usize::from(c) % CODES.len()]),
                        Request::LeaveGroup(_) => Response::LeaveGroup(LeaveGroupResponse::default()),
                    };
                    h.answer(id, response);
                },
                Step::Fail => if let Some((id, _)) = in_flight.pop() { h.m.on_request_failed(h.now, id) },
                Step::Release => if let Some(r) = releases.pop() { h.m.released(h.now, r) },
                Step::FoundCoordinator => h.m.coordinator_found(h.now),
                Step::Counts => h.m.on_partition_counts(h.now, [("t", 4)]),
                Step::Leave => h.m.leave(h.now),
                Step::Resubscribe => h.m.set_topics(h.now, ["t"]),
            }
            for a in h.actions() {
                prop_assert!(!stopped, "an action after the end: {a:?}");
                match a {
                    Action::StartPartitions { partitions } => for p in partitions {
                        prop_assert!(owned.insert(p.clone()), "{p} started twice");
                    },
                    Action::CommitRevoked { release, partitions, .. } => {
                        releases.push(release);
                        for p in &partitions { prop_assert!(owned.contains(p), "{p} revoked but not owned"); }
                        // Released partitions leave `owned` when the release is reported;
                        // the member's own view is checked below.
                    }
                    Action::PartitionsLost { release, partitions, .. } => {
                        releases.push(release);
                        for p in &partitions { prop_assert!(owned.remove(p), "{p} lost but not owned"); }
                    }
                    Action::Finished(_) => stopped = true,
                    _ => {}
                }
            }
            // What the member owns is what was started, less what was lost and released.
            let member_owned: BTreeSet<_> = h.m.owned().into_iter().collect();
            prop_assert!(member_owned.is_subset(&owned));
            owned = member_owned;
            while let Some(r) = h.m.poll_request(h.now) {
                prop_assert!(!stopped, "a request after the end");
                match &r.request {
                    Request::JoinGroup(j) => {
                        prop_assert_eq!(r.timeout, Some(DEFAULT_REBALANCE_TIMEOUT + JOIN_TIMEOUT_MARGIN));
                        if eager_member { prop_assert!(h.m.owned().is_empty(), "an eager member joins owning partitions"); }
                        prop_assert_eq!(subscription_of(j).owned_partitions.len(), if eager_member { 0 } else { h.m.owned().len() });
                    }
                    Request::Heartbeat(hb) => prop_assert!(hb.generation_id >= 0),
                    _ => prop_assert_eq!(r.timeout, None),
                }
                let heartbeat = matches!(r.request, Request::Heartbeat(_));
                prop_assert!(
                    !in_flight.iter().any(|(_, q)| matches!(q, Request::Heartbeat(_)) == heartbeat),
                    "two requests of a kind in flight"
                );
                in_flight.push((r.id, r.request));
            }
        }
    }
}
