//! The coordinator driven with hand-built requests, on a clock the tests move.

#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use klife_protocol::messages::consumer_group_heartbeat_request::TopicPartitions as Owned;
use klife_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use klife_protocol::messages::leave_group_request::MemberIdentity;
use klife_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use klife_protocol::messages::*;
use klife_protocol::{AnyResponse, ErrorCode, Uuid};
use proptest::prelude::*;

use super::Client as Origin;
use super::*;

const T: Uuid = Uuid([7; 16]);
const U: Uuid = Uuid([9; 16]);

fn topics() -> Topics {
    Topics::from([("orders".to_owned(), (T, 6)), ("payments".to_owned(), (U, 2))])
}

/// A request from no client in particular.
const ANON: Origin<'static> = Origin { id: "", host: "" };

fn client(id: &str) -> Origin<'_> {
    Origin { id, host: "" }
}

/// A coordinator that computes a KIP-848 group's target on every epoch bump.
fn coordinator() -> Coordinator {
    coordinator_with_interval(0)
}

fn coordinator_with_interval(assignment_interval_ms: i64) -> Coordinator {
    Coordinator::new(GroupConfig {
        heartbeat_interval_ms: 100,
        session_timeout_ms: 1_000,
        assignment_interval_ms,
        ..GroupConfig::default()
    })
}

// ----- KIP-848 -----

fn join(member: &str, names: &[&str]) -> ConsumerGroupHeartbeatRequest {
    ConsumerGroupHeartbeatRequest::default()
        .with_group_id("g".into())
        .with_member_id(member.into())
        .with_member_epoch(0)
        .with_rebalance_timeout_ms(5_000)
        .with_subscribed_topic_names(Some(names.iter().map(|n| (*n).to_owned()).collect()))
        .with_topic_partitions(Some(Vec::new()))
}

fn beat(member: &str, epoch: i32, owned: &BTreeMap<Uuid, BTreeSet<i32>>) -> ConsumerGroupHeartbeatRequest {
    ConsumerGroupHeartbeatRequest::default()
        .with_group_id("g".into())
        .with_member_id(member.into())
        .with_member_epoch(epoch)
        .with_topic_partitions(Some(
            owned
                .iter()
                .map(|(t, ps)| Owned::default().with_topic_id(*t).with_partitions(ps.iter().copied().collect()))
                .collect(),
        ))
}

fn assigned(r: &ConsumerGroupHeartbeatResponse) -> Option<BTreeMap<Uuid, BTreeSet<i32>>> {
    r.assignment
        .as_ref()
        .map(|a| a.topic_partitions.iter().map(|t| (t.topic_id, t.partitions.iter().copied().collect())).collect())
}

fn count(a: &BTreeMap<Uuid, BTreeSet<i32>>) -> usize {
    a.values().map(BTreeSet::len).sum()
}

/// No partition owned (assigned or pending revocation) by two members.
fn assert_disjoint(c: &Coordinator) {
    for g in c.groups.values() {
        if let Group::Consumer(g) = g {
            let mut seen = BTreeSet::new();
            for m in g.members.values() {
                for (t, ps) in m.assigned.iter().chain(m.pending_revocation.iter()) {
                    for p in ps {
                        assert!(seen.insert((*t, *p)), "{t}-{p} owned twice: {:?}", g.members);
                    }
                }
            }
        }
    }
}

fn code(r: &ConsumerGroupHeartbeatResponse) -> ErrorCode {
    ErrorCode::from_code(r.error_code)
}

#[test]
fn a_member_alone_gets_every_partition_with_the_interval() {
    let mut c = coordinator();
    let r = c.consumer_heartbeat(ANON, &join("a", &["orders"]), 1, &topics(), 0);
    assert_eq!(code(&r), ErrorCode::None);
    assert_eq!((r.member_id.as_deref(), r.member_epoch, r.heartbeat_interval_ms), (Some("a"), 2, 100));
    assert_eq!(assigned(&r).unwrap()[&T], (0..6).collect());
    // A heartbeat with nothing changed carries no assignment.
    let owned = assigned(&r).unwrap();
    let r = c.consumer_heartbeat(ANON, &beat("a", 2, &owned), 1, &topics(), 10);
    assert_eq!((code(&r), r.member_epoch), (ErrorCode::None, 2));
    assert!(r.assignment.is_none());
}

#[test]
fn a_partition_moves_only_after_its_owner_revoked_it() {
    let mut c = coordinator();
    let a = assigned(&c.consumer_heartbeat(ANON, &join("a", &["orders"]), 1, &topics(), 0)).unwrap();
    let rb = c.consumer_heartbeat(ANON, &join("b", &["orders"]), 1, &topics(), 1);
    assert_eq!(rb.member_epoch, 3);
    // b's target is 3 partitions, but a still owns them.
    assert_eq!(assigned(&rb).map(|x| count(&x)), Some(0));
    assert_disjoint(&c);
    // a is asked to revoke three and stays at epoch 2.
    let ra = c.consumer_heartbeat(ANON, &beat("a", 2, &a), 1, &topics(), 2);
    assert_eq!(ra.member_epoch, 2);
    let a2 = assigned(&ra).unwrap();
    assert_eq!(count(&a2), 3);
    let d = c.describe("g", &topics()).unwrap();
    assert_eq!(d.members[0].reconciliation, Some(ReconciliationState::UnrevokedPartitions));
    assert_eq!(d.members[0].pending_revocation.len(), 3);
    // b asks again: still nothing, a has not acknowledged.
    let rb = c.consumer_heartbeat(ANON, &beat("b", 3, &BTreeMap::new()), 1, &topics(), 3);
    assert_eq!(assigned(&rb), None);
    assert_disjoint(&c);
    // a acknowledges (owns three): epoch 3, stable.
    let ra = c.consumer_heartbeat(ANON, &beat("a", 2, &a2), 1, &topics(), 4);
    assert_eq!((code(&ra), ra.member_epoch), (ErrorCode::None, 3));
    // Now b gets its three.
    let rb = c.consumer_heartbeat(ANON, &beat("b", 3, &BTreeMap::new()), 1, &topics(), 5);
    let b = assigned(&rb).unwrap();
    assert_eq!(count(&b), 3);
    assert!(b[&T].is_disjoint(&a2[&T]));
    assert_disjoint(&c);
    let d = c.describe("g", &topics()).unwrap();
    assert_eq!(d.state, "Stable");
    assert_eq!(d.epoch, 3);
}

#[test]
fn the_target_waits_for_the_assignment_interval() {
    let mut c = coordinator_with_interval(1_000);
    // A new group is assigned at once: epoch 1 -> 2 with the whole topic.
    let a = assigned(&c.consumer_heartbeat(ANON, &join("a", &["orders"]), 1, &topics(), 0)).unwrap();
    assert_eq!(count(&a), 6);
    // b joins within the interval: the group epoch goes up, the target stays, b is
    // answered the old target's epoch with nothing, a keeps everything.
    let rb = c.consumer_heartbeat(ANON, &join("b", &["orders"]), 1, &topics(), 400);
    assert_eq!((rb.member_epoch, assigned(&rb).map(|x| count(&x))), (2, Some(0)));
    let d = c.describe("g", &topics()).unwrap();
    assert_eq!((d.state, d.epoch, d.assignment_epoch), ("Assigning", 3, 2));
    let ra = c.consumer_heartbeat(ANON, &beat("a", 2, &a), 1, &topics(), 999);
    assert_eq!((ra.member_epoch, ra.assignment.is_none()), (2, true));
    // The first heartbeat once the interval passed computes the new target.
    let ra = c.consumer_heartbeat(ANON, &beat("a", 2, &a), 1, &topics(), 1_000);
    assert_eq!((ra.member_epoch, assigned(&ra).map(|x| count(&x))), (2, Some(3)));
    assert_eq!(c.describe("g", &topics()).unwrap().assignment_epoch, 3);
    assert_disjoint(&c);
    // A forced rebalance is computed on the next heartbeat, interval or not.
    assert!(c.force_rebalance("g", 1_001));
    c.consumer_heartbeat(ANON, &beat("b", 2, &BTreeMap::new()), 1, &topics(), 1_002);
    assert_eq!(c.describe("g", &topics()).unwrap().assignment_epoch, 4);
}

#[test]
fn an_emptied_group_assigns_its_next_member_at_once() {
    let mut c = coordinator_with_interval(1_000);
    c.consumer_heartbeat(ANON, &join("a", &["orders"]), 1, &topics(), 0);
    let leave = ConsumerGroupHeartbeatRequest::default()
        .with_group_id("g".into())
        .with_member_id("a".into())
        .with_member_epoch(-1);
    assert_eq!(code(&c.consumer_heartbeat(ANON, &leave, 1, &topics(), 10)), ErrorCode::None);
    let d = c.describe("g", &topics()).unwrap();
    assert_eq!((d.state, d.epoch, d.assignment_epoch), ("Empty", 3, 3));
    // Within the interval of the last target, and yet assigned at once.
    let r = c.consumer_heartbeat(ANON, &join("b", &["orders"]), 1, &topics(), 20);
    assert_eq!((r.member_epoch, assigned(&r).map(|x| count(&x))), (4, Some(6)));
}

#[test]
fn a_join_under_a_known_member_id_starts_that_member_over() {
    let mut c = coordinator();
    let a = assigned(&c.consumer_heartbeat(ANON, &join("a", &["orders"]), 1, &topics(), 0)).unwrap();
    // Kafka 4.2 and later: the member keeps its record, epoch and partitions; the
    // answer carries them all; the group epoch does not move.
    let r = c.consumer_heartbeat(ANON, &join("a", &["orders"]), 1, &topics(), 1);
    assert_eq!((code(&r), r.member_epoch, assigned(&r)), (ErrorCode::None, 2, Some(a)));
    assert_eq!(c.describe("g", &topics()).unwrap().epoch, 2);
    // With another subscription it is a subscription change like any other.
    let r = c.consumer_heartbeat(ANON, &join("a", &["orders", "payments"]), 1, &topics(), 2);
    assert_eq!((code(&r), r.member_epoch, assigned(&r).map(|x| count(&x))), (ErrorCode::None, 3, Some(8)));
}

#[test]
fn a_commit_at_an_older_epoch_passes_for_partitions_owned_since_then() {
    let mut c = coordinator();
    let a = assigned(&c.consumer_heartbeat(ANON, &join("a", &["orders"]), 1, &topics(), 0)).unwrap();
    c.consumer_heartbeat(ANON, &join("b", &["orders"]), 1, &topics(), 1);
    let kept = assigned(&c.consumer_heartbeat(ANON, &beat("a", 2, &a), 1, &topics(), 2)).unwrap();
    let ra = c.consumer_heartbeat(ANON, &beat("a", 2, &kept), 1, &topics(), 3);
    assert_eq!(ra.member_epoch, 3);
    let Some(Group::Consumer(g)) = c.groups.get("g") else { panic!("no consumer group") };
    let kept_one = (Some(T), *kept[&T].first().unwrap());
    let revoked_one = (Some(T), *a[&T].difference(&kept[&T]).next().unwrap());
    // KIP-1251: a kept partition, assigned at epoch 2, may be committed at 2 or 3.
    assert_eq!(g.check_commit_epoch("a", 2, [kept_one]), ErrorCode::None);
    assert_eq!(g.check_commit_epoch("a", 3, [kept_one, revoked_one]), ErrorCode::None);
    // A partition it gave up, an epoch before its assignment, a newer epoch, a topic
    // that does not exist, someone else: stale or unknown.
    assert_eq!(g.check_commit_epoch("a", 2, [kept_one, revoked_one]), ErrorCode::StaleMemberEpoch);
    assert_eq!(g.check_commit_epoch("a", 1, [kept_one]), ErrorCode::StaleMemberEpoch);
    assert_eq!(g.check_commit_epoch("a", 4, [kept_one]), ErrorCode::StaleMemberEpoch);
    assert_eq!(g.check_commit_epoch("a", 2, [(None, 0)]), ErrorCode::StaleMemberEpoch);
    assert_eq!(g.check_commit_epoch("zz", 3, [kept_one]), ErrorCode::UnknownMemberId);
    // Fetches still want the member's epoch exactly.
    assert_eq!(g.check_member_epoch("a", 2), ErrorCode::StaleMemberEpoch);
}

#[test]
fn a_leave_gives_the_partitions_back() {
    let mut c = coordinator();
    c.consumer_heartbeat(ANON, &join("a", &["orders"]), 1, &topics(), 0);
    let b = assigned(&c.consumer_heartbeat(ANON, &join("b", &["orders"]), 1, &topics(), 0)).unwrap();
    let leave = ConsumerGroupHeartbeatRequest::default()
        .with_group_id("g".into())
        .with_member_id("a".into())
        .with_member_epoch(-1);
    let r = c.consumer_heartbeat(ANON, &leave, 1, &topics(), 1);
    assert_eq!((code(&r), r.member_epoch), (ErrorCode::None, -1));
    let r = c.consumer_heartbeat(ANON, &beat("b", 3, &b), 1, &topics(), 2);
    assert_eq!(count(&assigned(&r).unwrap()), 6);
    assert_eq!(r.member_epoch, 4);
    // Leaving twice: unknown.
    assert_eq!(code(&c.consumer_heartbeat(ANON, &leave, 1, &topics(), 3)), ErrorCode::UnknownMemberId);
}

#[test]
fn sessions_expire_on_the_clock_and_revocations_time_out() {
    let mut c = coordinator();
    c.consumer_heartbeat(ANON, &join("a", &["orders"]), 1, &topics(), 0);
    let b = assigned(&c.consumer_heartbeat(ANON, &join("b", &["orders"]), 1, &topics(), 500)).unwrap();
    assert!(!c.tick(999));
    // a's session (1 s) ends at 1000.
    assert!(c.tick(1_000));
    assert_eq!(c.describe("g", &topics()).unwrap().members.len(), 1);
    let r = c.consumer_heartbeat(ANON, &beat("b", 3, &b), 1, &topics(), 1_001);
    assert_eq!(count(&assigned(&r).unwrap()), 6);
    // An expired member's next heartbeat is unknown.
    assert_eq!(code(&c.consumer_heartbeat(ANON, &beat("a", 2, &b), 1, &topics(), 1_002)), ErrorCode::UnknownMemberId);

    // A member that never acknowledges a revocation is fenced after its rebalance timeout.
    let mut c = coordinator();
    let mut slow = join("a", &["orders"]);
    slow.rebalance_timeout_ms = 300;
    let a = assigned(&c.consumer_heartbeat(ANON, &slow, 1, &topics(), 0)).unwrap();
    c.consumer_heartbeat(ANON, &join("b", &["orders"]), 1, &topics(), 0);
    c.consumer_heartbeat(ANON, &beat("a", 2, &a), 1, &topics(), 100); // revocation asked at 100
    c.consumer_heartbeat(ANON, &beat("a", 2, &a), 1, &topics(), 200); // still owns them
    c.consumer_heartbeat(ANON, &beat("b", 3, &BTreeMap::new()), 1, &topics(), 350);
    assert!(c.tick(400));
    let d = c.describe("g", &topics()).unwrap();
    assert_eq!(d.members.iter().map(|m| m.member_id.as_str()).collect::<Vec<_>>(), ["b"]);
}

#[test]
fn heartbeat_errors_as_kafka_answers_them() {
    let mut c = coordinator();
    let t = topics();
    // Joins missing fields.
    let mut r = join("a", &["orders"]);
    r.rebalance_timeout_ms = -1;
    assert_eq!(code(&c.consumer_heartbeat(ANON, &r, 1, &t, 0)), ErrorCode::InvalidRequest);
    let mut r = join("a", &["orders"]);
    r.topic_partitions = None;
    assert_eq!(code(&c.consumer_heartbeat(ANON, &r, 1, &t, 0)), ErrorCode::InvalidRequest);
    let mut r = join("a", &["orders"]);
    r.subscribed_topic_names = None;
    assert_eq!(code(&c.consumer_heartbeat(ANON, &r, 1, &t, 0)), ErrorCode::InvalidRequest);
    assert_eq!(
        code(&c.consumer_heartbeat(ANON, &join("", &["orders"]), 1, &t, 0)),
        ErrorCode::InvalidRequest,
        "v1 needs a member id"
    );
    let mut r = join("a", &["orders"]);
    r.member_epoch = -3;
    assert_eq!(code(&c.consumer_heartbeat(ANON, &r, 1, &t, 0)), ErrorCode::InvalidRequest);
    let mut r = join("a", &["orders"]);
    r.server_assignor = Some("sticky".into());
    assert_eq!(code(&c.consumer_heartbeat(ANON, &r, 1, &t, 0)), ErrorCode::UnsupportedAssignor);
    let mut r = join("a", &[]);
    r.subscribed_topic_regex = Some("orders(".into());
    assert_eq!(code(&c.consumer_heartbeat(ANON, &r, 1, &t, 0)), ErrorCode::InvalidRegularExpression);
    // No group yet.
    assert_eq!(
        code(&c.consumer_heartbeat(ANON, &beat("a", 1, &BTreeMap::new()), 1, &t, 0)),
        ErrorCode::GroupIdNotFound
    );
    // v0: the coordinator names the member.
    let r = c.consumer_heartbeat(ANON, &join("", &["orders"]), 0, &t, 0);
    assert_eq!(code(&r), ErrorCode::None);
    assert!(!r.member_id.unwrap().is_empty());
    // Unknown member, epochs ahead and behind.
    let owned = assigned(&c.consumer_heartbeat(ANON, &join("a", &["orders"]), 1, &t, 0)).unwrap();
    assert_eq!(
        code(&c.consumer_heartbeat(ANON, &beat("x", 1, &BTreeMap::new()), 1, &t, 0)),
        ErrorCode::UnknownMemberId
    );
    let epoch_of =
        |c: &Coordinator| c.describe("g", &t).unwrap().members.iter().find(|m| m.member_id == "a").unwrap().epoch;
    let e1 = epoch_of(&c);
    assert_eq!(code(&c.consumer_heartbeat(ANON, &beat("a", e1 + 1, &owned), 1, &t, 0)), ErrorCode::FencedMemberEpoch);
    // A new group epoch: a moves to it.
    assert!(c.force_rebalance("g", 0));
    let owned: BTreeMap<Uuid, BTreeSet<i32>> =
        assigned(&c.consumer_heartbeat(ANON, &beat("a", e1, &owned), 1, &t, 0)).unwrap_or(owned);
    let e2 = epoch_of(&c);
    assert_eq!(e2, e1 + 1);
    assert_eq!(code(&c.consumer_heartbeat(ANON, &beat("a", e1 - 1, &owned), 1, &t, 0)), ErrorCode::FencedMemberEpoch);
    // The previous epoch with a subset of the assignment is a lost answer: accepted.
    let r = c.consumer_heartbeat(ANON, &beat("a", e1, &owned), 1, &t, 0);
    assert_eq!((code(&r), r.member_epoch), (ErrorCode::None, e2), "{r:?}");
    // Leave of a static member needs its instance id.
    let r = ConsumerGroupHeartbeatRequest::default()
        .with_group_id("g".into())
        .with_member_id("a".into())
        .with_member_epoch(-2);
    assert_eq!(code(&c.consumer_heartbeat(ANON, &r, 1, &t, 0)), ErrorCode::InvalidRequest);
    // A cap on members.
    let mut capped = Coordinator::new(GroupConfig { max_size: 1, ..GroupConfig::default() });
    assert_eq!(code(&capped.consumer_heartbeat(ANON, &join("a", &["orders"]), 1, &t, 0)), ErrorCode::None);
    assert_eq!(
        code(&capped.consumer_heartbeat(ANON, &join("b", &["orders"]), 1, &t, 0)),
        ErrorCode::GroupMaxSizeReached
    );
    // Refused while advertised.
    let mut refusing = Coordinator::new(GroupConfig { refuse_consumer_protocol: true, ..GroupConfig::default() });
    assert_eq!(
        code(&refusing.consumer_heartbeat(ANON, &join("a", &["orders"]), 1, &t, 0)),
        ErrorCode::UnsupportedVersion
    );
}

#[test]
fn a_static_member_keeps_its_assignment_across_a_temporary_leave() {
    let mut c = coordinator();
    let t = topics();
    let mut a = join("a1", &["orders"]);
    a.instance_id = Some("i-a".into());
    c.consumer_heartbeat(ANON, &a, 1, &t, 0);
    let rb = c.consumer_heartbeat(ANON, &join("b", &["orders"]), 1, &t, 0);
    let mut owned_b = assigned(&rb).unwrap();
    // Settle: a revokes, b gets its half.
    let mut owned_a = BTreeMap::new();
    for now in 1..6 {
        let mut r = beat("a1", c.describe("g", &t).unwrap().members[0].epoch, &owned_a);
        r.instance_id = Some("i-a".into());
        let ra = c.consumer_heartbeat(ANON, &r, 1, &t, now);
        if let Some(x) = assigned(&ra) {
            owned_a = x;
        }
        let eb = c.describe("g", &t).unwrap().members.iter().find(|m| m.member_id == "b").unwrap().epoch;
        if let Some(x) = assigned(&c.consumer_heartbeat(ANON, &beat("b", eb, &owned_b), 1, &t, now)) {
            owned_b = x;
        }
        assert_disjoint(&c);
    }
    assert_eq!((count(&owned_a), count(&owned_b)), (3, 3));
    // A second instance with the same id cannot join while a1 holds it.
    let mut dup = join("a2", &["orders"]);
    dup.instance_id = Some("i-a".into());
    assert_eq!(code(&c.consumer_heartbeat(ANON, &dup, 1, &t, 7)), ErrorCode::UnreleasedInstanceId);
    // A request of a1 under another member id is fenced.
    let mut wrong = beat("zz", 1, &owned_a);
    wrong.instance_id = Some("i-a".into());
    assert_eq!(code(&c.consumer_heartbeat(ANON, &wrong, 1, &t, 7)), ErrorCode::FencedInstanceId);
    // a1 leaves for a while (-2): the group epoch does not move, b gets nothing more.
    let epoch = c.describe("g", &t).unwrap().epoch;
    let mut leave = ConsumerGroupHeartbeatRequest::default()
        .with_group_id("g".into())
        .with_member_id("a1".into())
        .with_member_epoch(-2);
    leave.instance_id = Some("i-a".into());
    let r = c.consumer_heartbeat(ANON, &leave, 1, &t, 8);
    assert_eq!((code(&r), r.member_epoch), (ErrorCode::None, -2));
    assert_eq!(c.describe("g", &t).unwrap().epoch, epoch);
    // Rejoined under a new member id with the same instance id: the same partitions.
    let r = c.consumer_heartbeat(ANON, &dup, 1, &t, 9);
    assert_eq!(code(&r), ErrorCode::None);
    assert_eq!(assigned(&r).unwrap(), owned_a);
    assert!(c.describe("g", &t).unwrap().members.iter().all(|m| m.member_id != "a1"));
    assert_disjoint(&c);
}

#[test]
fn regex_subscriptions_and_the_range_assignor() {
    let mut c = coordinator();
    let mut t = topics();
    let mut r = join("a", &[]);
    r.subscribed_topic_regex = Some("orders|pay.*".into());
    r.server_assignor = Some("range".into());
    // As in Kafka, the regex is resolved after the join: nothing yet.
    let r = c.consumer_heartbeat(ANON, &r, 1, &t, 0);
    assert_eq!((r.member_epoch, assigned(&r).map(|a| count(&a))), (2, Some(0)));
    // The next heartbeat resolves it: a new group epoch, and the matching topics.
    let r = c.consumer_heartbeat(ANON, &beat("a", 2, &BTreeMap::new()), 1, &t, 0);
    let owned = assigned(&r).unwrap();
    assert_eq!((r.member_epoch, count(&owned)), (3, 8));
    // A new topic matching the regex bumps the group epoch and is assigned.
    let v = Uuid([3; 16]);
    t.insert("payments-eu".into(), (v, 1));
    let r = c.consumer_heartbeat(ANON, &beat("a", 3, &owned), 1, &t, 1);
    assert_eq!(r.member_epoch, 4);
    assert_eq!(count(&assigned(&r).unwrap()), 9);
    // range: contiguous, b after a.
    let mut rb = join("b", &["orders"]);
    rb.server_assignor = Some("range".into());
    c.consumer_heartbeat(ANON, &rb, 1, &t, 2);
    let d = c.describe("g", &t).unwrap();
    let b = d.members.iter().find(|m| m.member_id == "b").unwrap();
    assert_eq!(b.target, (3..6).map(|p| ("orders".to_owned(), p)).collect::<Vec<_>>());
}

#[test]
fn protocols_do_not_mix_in_one_group() {
    let mut c = coordinator();
    c.consumer_heartbeat(ANON, &join("a", &["orders"]), 1, &topics(), 0);
    let j = classic_join("", None);
    let r = c.join(client("c"), &j, 9, 0).unwrap();
    assert_eq!(ErrorCode::from_code(r.error_code), ErrorCode::InconsistentGroupProtocol);
    let mut c = coordinator();
    join_one(&mut c, 0);
    assert_eq!(code(&c.consumer_heartbeat(ANON, &join("a", &["orders"]), 1, &topics(), 0)), ErrorCode::GroupIdNotFound);
}

// ----- classic -----

fn classic_join(member: &str, instance: Option<&str>) -> JoinGroupRequest {
    JoinGroupRequest::default()
        .with_group_id("g".into())
        .with_session_timeout_ms(10_000)
        .with_rebalance_timeout_ms(20_000)
        .with_member_id(member.into())
        .with_group_instance_id(instance.map(str::to_owned))
        .with_protocol_type("consumer".into())
        .with_protocols(vec![
            JoinGroupRequestProtocol::default().with_name("range".into()).with_metadata(Bytes::from_static(b"m")),
        ])
}

fn join_code(r: &JoinGroupResponse) -> ErrorCode {
    ErrorCode::from_code(r.error_code)
}

/// A dynamic member's two joins (MEMBER_ID_REQUIRED, then with the id); the second
/// answered now or parked.
fn join_two_step(c: &mut Coordinator, now: i64) -> (String, Result<JoinGroupResponse, u64>) {
    let r = c.join(client("client"), &classic_join("", None), 9, now).unwrap();
    assert_eq!(join_code(&r), ErrorCode::MemberIdRequired);
    let id = r.member_id.clone();
    (id.clone(), c.join(client("client"), &classic_join(&id, None), 9, now))
}

fn join_one(c: &mut Coordinator, now: i64) -> String {
    let (id, r) = join_two_step(c, now);
    let r = r.unwrap();
    assert_eq!((join_code(&r), r.generation_id, r.leader.as_str()), (ErrorCode::None, 1, id.as_str()));
    id
}

fn parked_join(c: &mut Coordinator, ticket: u64) -> JoinGroupResponse {
    match c.take_answer(ticket) {
        Some(AnyResponse::JoinGroup(r)) => r,
        other => panic!("no join answer: {other:?}"),
    }
}

fn sync(member: &str, generation: i32, assignments: &[(&str, &'static [u8])]) -> SyncGroupRequest {
    SyncGroupRequest::default()
        .with_group_id("g".into())
        .with_member_id(member.into())
        .with_generation_id(generation)
        .with_assignments(
            assignments
                .iter()
                .map(|(m, a)| {
                    SyncGroupRequestAssignment::default()
                        .with_member_id((*m).into())
                        .with_assignment(Bytes::from_static(a))
                })
                .collect(),
        )
}

fn hb(member: &str, generation: i32) -> HeartbeatRequest {
    HeartbeatRequest::default().with_group_id("g".into()).with_member_id(member.into()).with_generation_id(generation)
}

fn hb_code(c: &mut Coordinator, r: &HeartbeatRequest, now: i64) -> ErrorCode {
    ErrorCode::from_code(c.heartbeat(r, now).error_code)
}

#[test]
fn classic_join_sync_and_a_second_member() {
    let mut c = coordinator();
    let a = join_one(&mut c, 0);
    // Leader's sync completes the generation.
    let r = c.sync(&sync(&a, 1, &[(&a, b"all")]), 5).unwrap();
    assert_eq!((ErrorCode::from_code(r.error_code), r.assignment.as_ref()), (ErrorCode::None, &b"all"[..]));
    assert_eq!(r.protocol_name.as_deref(), Some("range"));
    assert_eq!(hb_code(&mut c, &hb(&a, 1), 1), ErrorCode::None);
    // b joins: the group rebalances; a learns it from its heartbeat.
    let (b, rb) = join_two_step(&mut c, 2);
    let tb = rb.unwrap_err();
    assert_eq!(hb_code(&mut c, &hb(&a, 1), 3), ErrorCode::RebalanceInProgress);
    assert_eq!(c.describe("g", &topics()).unwrap().state, "PreparingRebalance");
    // A commit of the current generation is still fine during PreparingRebalance.
    let ra = c.join(client("client"), &classic_join(&a, None), 9, 4).unwrap();
    assert_eq!((join_code(&ra), ra.generation_id, ra.leader.as_str()), (ErrorCode::None, 2, a.as_str()));
    assert_eq!(ra.members.len(), 2, "the leader gets every member");
    assert_eq!(ra.members[0].metadata.as_ref(), b"m");
    let rb = parked_join(&mut c, tb);
    assert_eq!((rb.generation_id, rb.members.len(), rb.member_id.as_str()), (2, 0, b.as_str()));
    assert_eq!(rb.protocol_type.as_deref(), Some("consumer"));
    // The follower's sync waits for the leader's.
    let tf = c.sync(&sync(&b, 2, &[]), 5).unwrap_err();
    assert!(c.take_answer(tf).is_none());
    assert_eq!(ErrorCode::from_code(c.sync(&sync(&b, 1, &[]), 5).unwrap().error_code), ErrorCode::IllegalGeneration);
    let r = c.sync(&sync(&a, 2, &[(&a, b"A"), (&b, b"B")]), 5).unwrap();
    assert_eq!(r.assignment.as_ref(), b"A");
    match c.take_answer(tf) {
        Some(AnyResponse::SyncGroup(r)) => assert_eq!(r.assignment.as_ref(), b"B"),
        other => panic!("{other:?}"),
    }
    assert_eq!(hb_code(&mut c, &hb(&b, 2), 6), ErrorCode::None);
    assert_eq!(hb_code(&mut c, &hb(&b, 1), 6), ErrorCode::IllegalGeneration);
    assert_eq!(hb_code(&mut c, &hb("nobody", 2), 6), ErrorCode::UnknownMemberId);
    // b leaves: a rebalance, generation 3 with a alone.
    let leave = LeaveGroupRequest::default()
        .with_group_id("g".into())
        .with_members(vec![MemberIdentity::default().with_member_id(b.clone())]);
    let r = c.leave(&leave, 3, 7);
    assert_eq!(r.members[0].error_code, 0);
    assert_eq!(hb_code(&mut c, &hb(&a, 2), 8), ErrorCode::RebalanceInProgress);
    let ra = c.join(client("client"), &classic_join(&a, None), 9, 9).unwrap();
    assert_eq!((ra.generation_id, ra.members.len()), (3, 1));
    let r = c.leave(&leave, 3, 10);
    assert_eq!(ErrorCode::from_code(r.members[0].error_code), ErrorCode::UnknownMemberId);
}

#[test]
fn classic_sessions_and_the_join_barrier_run_on_the_clock() {
    let mut c = coordinator();
    let a = join_one(&mut c, 0);
    c.sync(&sync(&a, 1, &[]), 5).unwrap();
    let (b, rb) = join_two_step(&mut c, 1_000);
    let tb = rb.unwrap_err();
    // a heartbeats but never rejoins: the barrier waits for the rebalance timeout
    // (20 s), then goes on without it.
    for now in [5_000, 10_000, 15_000, 20_000] {
        assert_eq!(hb_code(&mut c, &hb(&a, 1), now), ErrorCode::RebalanceInProgress);
    }
    assert!(!c.tick(20_999));
    assert!(c.take_answer(tb).is_none());
    assert!(c.tick(21_000));
    let rb = parked_join(&mut c, tb);
    assert_eq!((rb.generation_id, rb.leader.as_str(), rb.members.len()), (2, b.as_str(), 1));
    assert_eq!(hb_code(&mut c, &hb(&a, 1), 21_001), ErrorCode::UnknownMemberId);
    c.sync(&sync(&b, 2, &[]), 5).unwrap();
    // b's session (10 s) expires without heartbeats: the group empties.
    assert_eq!(hb_code(&mut c, &hb(&b, 2), 25_000), ErrorCode::None);
    assert!(!c.tick(34_999));
    assert!(c.tick(35_000));
    let d = c.describe("g", &topics()).unwrap();
    assert_eq!((d.state, d.epoch, d.members.len()), ("Empty", 3, 0));
}

#[test]
fn classic_static_members_rejoin_without_a_rebalance() {
    let mut c = coordinator();
    let r = c.join(client("client"), &classic_join("", Some("i1")), 9, 0).unwrap();
    assert_eq!((join_code(&r), r.generation_id), (ErrorCode::None, 1), "static members need no second join");
    let old = r.member_id.clone();
    c.sync(&sync(&old, 1, &[(&old, b"mine")]), 5).unwrap();
    // The same instance restarts (no member id): same generation, its old assignment.
    let r = c.join(client("client"), &classic_join("", Some("i1")), 9, 1).unwrap();
    let new = r.member_id.clone();
    assert_ne!(new, old);
    assert_eq!(
        (join_code(&r), r.generation_id, r.leader.as_str(), r.skip_assignment),
        (ErrorCode::None, 1, new.as_str(), true)
    );
    let mut s = sync(&new, 1, &[]);
    s.group_instance_id = Some("i1".into());
    assert_eq!(c.sync(&s, 5).unwrap().assignment.as_ref(), b"mine");
    // The old incarnation is fenced.
    let mut h = hb(&old, 1);
    h.group_instance_id = Some("i1".into());
    assert_eq!(hb_code(&mut c, &h, 2), ErrorCode::FencedInstanceId);
    // Changed metadata means a rebalance.
    let mut j = classic_join("", Some("i1"));
    j.protocols[0].metadata = Bytes::from_static(b"other");
    let t = c.join(client("client"), &j, 9, 3);
    assert!(t.is_ok(), "alone in the group, the barrier completes at once");
    assert_eq!(t.unwrap().generation_id, 2);
}

#[test]
fn classic_join_errors() {
    let mut c = coordinator();
    let mut j = classic_join("", None);
    j.session_timeout_ms = 100;
    assert_eq!(join_code(&c.join(client("c"), &j, 9, 0).unwrap()), ErrorCode::InvalidSessionTimeout);
    let mut j = classic_join("", None);
    j.protocol_type = String::new();
    assert_eq!(join_code(&c.join(client("c"), &j, 9, 0).unwrap()), ErrorCode::InconsistentGroupProtocol);
    let a = join_one(&mut c, 0);
    let mut j = classic_join("", None);
    j.protocols[0].name = "roundrobin".into();
    assert_eq!(join_code(&c.join(client("c"), &j, 9, 0).unwrap()), ErrorCode::InconsistentGroupProtocol);
    assert_eq!(
        join_code(&c.join(client("c"), &classic_join("stranger", None), 9, 0).unwrap()),
        ErrorCode::UnknownMemberId
    );
    // v3 and older: no second join.
    let r = c.join(client("c"), &classic_join("", None), 3, 0);
    assert!(r.is_err(), "parked until the leader rejoins");
    assert_eq!(ErrorCode::from_code(c.sync(&sync(&a, 1, &[]), 5).unwrap().error_code), ErrorCode::RebalanceInProgress);
    let mut capped = Coordinator::new(GroupConfig { max_size: 1, ..GroupConfig::default() });
    join_one(&mut capped, 0);
    assert_eq!(
        join_code(&capped.join(client("c"), &classic_join("", None), 9, 0).unwrap()),
        ErrorCode::GroupMaxSizeReached
    );
}

#[test]
fn the_initial_delay_holds_a_new_group_back() {
    let mut c = Coordinator::new(GroupConfig { initial_rebalance_delay_ms: 3_000, ..GroupConfig::default() });
    let (_, r) = join_two_step(&mut c, 0);
    let t = r.unwrap_err();
    let (_, r2) = join_two_step(&mut c, 1_000);
    let t2 = r2.unwrap_err();
    assert!(!c.tick(2_999));
    assert!(c.tick(3_000));
    let (r, r2) = (parked_join(&mut c, t), parked_join(&mut c, t2));
    assert_eq!((r.generation_id, r2.generation_id), (1, 1));
    assert_eq!(r.members.len() + r2.members.len(), 2, "one leader sees both");
}

// ----- property -----

#[derive(Debug, Clone)]
enum Op {
    Join(usize),
    Beat(usize),
    Leave(usize),
    StaticLeave(usize),
    Expire(usize),
    Advance(i64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        1 => (0..4usize).prop_map(Op::Join),
        4 => (0..4usize).prop_map(Op::Beat),
        1 => (0..4usize).prop_map(Op::Leave),
        1 => (0..4usize).prop_map(Op::StaticLeave),
        1 => (0..4usize).prop_map(Op::Expire),
        1 => (0..700i64).prop_map(Op::Advance),
    ]
}

/// A client as the tests play it: it takes every assignment at once and reports what it
/// owns on its next heartbeat (its acknowledgement).
#[derive(Debug, Default, Clone)]
struct Client {
    joined: bool,
    epoch: i32,
    owned: BTreeMap<Uuid, BTreeSet<i32>>,
    generation: u32,
}

fn member_id(i: usize, c: &Client) -> String {
    format!("m{i}-{}", c.generation)
}

fn client_beat(co: &mut Coordinator, i: usize, c: &mut Client, now: i64) {
    let id = member_id(i, c);
    let mut r = if c.joined {
        beat(&id, c.epoch, &c.owned)
    } else {
        join(&id, if i % 2 == 0 { &["orders", "payments"] } else { &["orders"] })
    };
    if i == 3 {
        r.instance_id = Some("static-3".into());
    }
    let resp = co.consumer_heartbeat(ANON, &r, 1, &topics(), now);
    match ErrorCode::from_code(resp.error_code) {
        ErrorCode::None => {
            c.joined = true;
            c.epoch = resp.member_epoch;
            if let Some(a) = assigned(&resp) {
                c.owned = a;
            }
        }
        ErrorCode::UnreleasedInstanceId => {}
        _ => {
            // Fenced or unknown: lose everything, join again as a new incarnation.
            *c = Client { generation: c.generation + 1, ..Client::default() };
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn no_partition_is_owned_twice_and_a_stable_group_owns_them_all(
        ops in proptest::collection::vec(op(), 1..60),
        interval in prop_oneof![Just(0i64), Just(500i64)],
    ) {
        let mut co = coordinator_with_interval(interval);
        let mut clients = vec![Client::default(); 4];
        let mut now = 0i64;
        for op in ops {
            match op {
                Op::Join(i) | Op::Beat(i) => client_beat(&mut co, i, &mut clients[i], now),
                Op::Leave(i) | Op::StaticLeave(i) if clients[i].joined => {
                    let epoch = if matches!(op, Op::StaticLeave(_)) && i == 3 { -2 } else { -1 };
                    let mut r = ConsumerGroupHeartbeatRequest::default()
                        .with_group_id("g".into())
                        .with_member_id(member_id(i, &clients[i]))
                        .with_member_epoch(epoch);
                    if i == 3 {
                        r.instance_id = Some("static-3".into());
                    }
                    co.consumer_heartbeat(ANON, &r, 1, &topics(), now);
                    clients[i] = Client { generation: clients[i].generation + 1, ..Client::default() };
                }
                Op::Expire(i) => {
                    co.expire_member("g", &member_id(i, &clients[i]), now);
                }
                Op::Advance(ms) => {
                    now += ms;
                    co.tick(now);
                }
                _ => {}
            }
            // A client whose member is gone (expired, fenced) has lost its partitions.
            let live: BTreeSet<String> =
                co.describe("g", &topics()).map(|d| d.members.iter().map(|m| m.member_id.clone()).collect()).unwrap_or_default();
            for (i, c) in clients.iter_mut().enumerate() {
                if c.joined && !live.contains(&member_id(i, c)) {
                    *c = Client { generation: c.generation + 1, ..Client::default() };
                }
            }
            assert_disjoint(&co);
            // What the clients believe they own is disjoint too.
            let mut seen = BTreeSet::new();
            for c in clients.iter().filter(|c| c.joined) {
                for (t, ps) in &c.owned {
                    for p in ps {
                        prop_assert!(seen.insert((*t, *p)), "clients both own {t}-{p}");
                    }
                }
            }
        }
        // Then every client (re)joins and heartbeats until the group is stable: every
        // partition is owned, once, and the clients agree with the coordinator.
        for _ in 0..8 {
            // Past the assignment interval, without running the session timers.
            now += interval;
            for (i, c) in clients.iter_mut().enumerate() {
                client_beat(&mut co, i, c, now);
            }
        }
        let d = co.describe("g", &topics()).unwrap();
        prop_assert_eq!(d.members.len(), 4, "{:?}", d);
        prop_assert!(d.members.iter().all(|m| m.epoch == d.epoch), "{:?}", d);
        prop_assert_eq!(d.state, "Stable", "{:?}", d);
        let owned: BTreeSet<(String, i32)> = d.members.iter().flat_map(|m| m.assigned.iter().cloned()).collect();
        prop_assert_eq!(owned.len(), 8, "{:?}", d);
        prop_assert_eq!(d.members.iter().map(|m| m.assigned.len()).sum::<usize>(), 8);
        let client_owned: usize = clients.iter().map(|c| count(&c.owned)).sum();
        prop_assert_eq!(client_owned, 8);
    }
}

#[derive(Debug, Clone)]
enum ClassicOp {
    Join(usize),
    Sync(usize),
    Beat(usize),
    Leave(usize),
    Advance(i64),
}

fn classic_op() -> impl Strategy<Value = ClassicOp> {
    prop_oneof![
        3 => (0..3usize).prop_map(ClassicOp::Join),
        3 => (0..3usize).prop_map(ClassicOp::Sync),
        2 => (0..3usize).prop_map(ClassicOp::Beat),
        1 => (0..3usize).prop_map(ClassicOp::Leave),
        1 => (0..15_000i64).prop_map(ClassicOp::Advance),
    ]
}

/// A classic client as the tests play it.
#[derive(Debug, Default, Clone)]
struct ClassicClient {
    id: Option<String>,
    generation: Option<i32>,
    members: Vec<String>,
    join: Option<u64>,
    sync: Option<u64>,
}

/// What the clients were told, checked as it comes.
#[derive(Debug, Default)]
struct Told {
    leaders: BTreeMap<i32, String>,
    members: BTreeMap<i32, BTreeSet<String>>,
}

impl Told {
    fn join(&mut self, c: &mut ClassicClient, r: &JoinGroupResponse) -> Result<(), TestCaseError> {
        match ErrorCode::from_code(r.error_code) {
            ErrorCode::None => {
                let leader = self.leaders.entry(r.generation_id).or_insert_with(|| r.leader.clone());
                prop_assert_eq!(&*leader, &r.leader, "two leaders in generation {}", r.generation_id);
                if !r.members.is_empty() {
                    prop_assert_eq!(&r.leader, &r.member_id);
                    let ids: BTreeSet<String> = r.members.iter().map(|m| m.member_id.clone()).collect();
                    prop_assert!(ids.contains(&r.member_id));
                    let known = self.members.entry(r.generation_id).or_insert_with(|| ids.clone());
                    prop_assert_eq!(&*known, &ids);
                }
                c.generation = Some(r.generation_id);
                c.members = r.members.iter().map(|m| m.member_id.clone()).collect();
            }
            _ => *c = ClassicClient::default(),
        }
        Ok(())
    }

    fn sync(&mut self, c: &mut ClassicClient, r: &SyncGroupResponse) -> Result<(), TestCaseError> {
        if ErrorCode::from_code(r.error_code) == ErrorCode::None {
            let expected = format!("{}:{}", c.generation.unwrap_or(-1), c.id.clone().unwrap_or_default());
            prop_assert_eq!(
                String::from_utf8_lossy(&r.assignment),
                expected,
                "an assignment of another member or generation"
            );
        } else {
            c.generation = None;
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn classic_members_agree_on_leaders_members_and_assignments(ops in proptest::collection::vec(classic_op(), 1..80)) {
        let mut co = coordinator();
        let mut clients = vec![ClassicClient::default(); 3];
        let mut told = Told::default();
        let mut now = 0i64;
        let mut generation = 0;
        for op in ops {
            match op {
                ClassicOp::Join(i) => {
                    let c = &mut clients[i];
                    if c.join.is_some() {
                        continue;
                    }
                    let id = match &c.id {
                        Some(id) => id.clone(),
                        None => {
                            let r = co.join(client("p"), &classic_join("", None), 9, now).unwrap();
                            prop_assert_eq!(join_code(&r), ErrorCode::MemberIdRequired);
                            c.id = Some(r.member_id.clone());
                            r.member_id
                        }
                    };
                    match co.join(client("p"), &classic_join(&id, None), 9, now) {
                        Ok(r) => told.join(c, &r)?,
                        Err(t) => c.join = Some(t),
                    }
                }
                ClassicOp::Sync(i) => {
                    let c = &mut clients[i];
                    let (Some(id), Some(g)) = (c.id.clone(), c.generation) else { continue };
                    if c.sync.is_some() || c.join.is_some() {
                        continue;
                    }
                    let assignments: Vec<(String, Vec<u8>)> =
                        c.members.iter().map(|m| (m.clone(), format!("{g}:{m}").into_bytes())).collect();
                    let req = SyncGroupRequest::default()
                        .with_group_id("g".into())
                        .with_member_id(id)
                        .with_generation_id(g)
                        .with_assignments(
                            assignments
                                .into_iter()
                                .map(|(m, a)| SyncGroupRequestAssignment::default().with_member_id(m).with_assignment(Bytes::from(a)))
                                .collect(),
                        );
                    match co.sync(&req, 5) {
                        Ok(r) => told.sync(c, &r)?,
                        Err(t) => c.sync = Some(t),
                    }
                }
                ClassicOp::Beat(i) => {
                    let c = &mut clients[i];
                    if let (Some(id), Some(g)) = (c.id.clone(), c.generation) {
                        match hb_code(&mut co, &hb(&id, g), now) {
                            ErrorCode::None | ErrorCode::RebalanceInProgress => {}
                            _ => *c = ClassicClient::default(),
                        }
                    }
                }
                ClassicOp::Leave(i) => {
                    if let Some(id) = clients[i].id.clone() {
                        let leave = LeaveGroupRequest::default()
                            .with_group_id("g".into())
                            .with_members(vec![MemberIdentity::default().with_member_id(id)]);
                        co.leave(&leave, 3, now);
                        clients[i] = ClassicClient::default();
                    }
                }
                ClassicOp::Advance(ms) => {
                    now += ms;
                    co.tick(now);
                }
            }
            // Parked answers arrive.
            for c in &mut clients {
                if let Some(t) = c.join {
                    if let Some(a) = co.take_answer(t) {
                        c.join = None;
                        match a {
                            AnyResponse::JoinGroup(r) => told.join(c, &r)?,
                            other => prop_assert!(false, "a join answered with {other:?}"),
                        }
                    }
                }
                if let Some(t) = c.sync {
                    if let Some(a) = co.take_answer(t) {
                        c.sync = None;
                        match a {
                            AnyResponse::SyncGroup(r) => told.sync(c, &r)?,
                            other => prop_assert!(false, "a sync answered with {other:?}"),
                        }
                    }
                }
            }
            let d = co.describe("g", &topics());
            let g = d.as_ref().map_or(0, |d| d.epoch);
            prop_assert!(g >= generation, "the generation went back from {generation} to {g}");
            generation = g;
            if let Some(d) = d {
                if d.state == "Stable" {
                    for m in &d.members {
                        let a = String::from_utf8_lossy(m.classic_assignment.as_deref().unwrap_or_default()).into_owned();
                        prop_assert!(a.is_empty() || a == format!("{}:{}", d.epoch, m.member_id), "{a} in {d:?}");
                    }
                }
            }
        }
    }
}
