//! Tests of the offsets core: the requests at each version, a table test per error
//! code for commits and fetches, the scenarios of the issue (a commit racing an epoch
//! bump, a revocation's flush, committers, unacknowledged commits), on a virtual
//! clock, and property tests of the invariants.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use klife_protocol::messages::offset_commit_response::{OffsetCommitResponsePartition, OffsetCommitResponseTopic};
use klife_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions, OffsetFetchResponseTopic,
    OffsetFetchResponseTopics,
};
use klife_protocol::messages::{OffsetCommitResponse, OffsetFetchResponse};
use klife_protocol::types::TopicPartition;
use klife_protocol::{ErrorCode, Message};

use super::*;
use crate::test_clock::Clock;

const MEMBER: &str = "member-1";
const BACKOFF: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_millis(800);

fn tp(topic: &str, partition: i32) -> TopicPartition {
    TopicPartition::new(topic, partition)
}

fn config(protocol: GroupProtocol) -> OffsetsConfig {
    OffsetsConfig::new("g", protocol).with_retry_backoff(BACKOFF, BACKOFF_MAX)
}

/// A KIP-848 tracker at epoch 5 owning `parts`, none committed.
fn tracker(now: Instant, parts: &[TopicPartition]) -> CommitTracker {
    let mut t = CommitTracker::new(config(GroupProtocol::Consumer));
    t.set_member(now, MEMBER, 5);
    for p in parts {
        t.assign(now, p.clone(), None);
    }
    t
}

/// The partitions of a commit request with their offsets, sorted.
fn sent(commit: &Commit) -> Vec<(TopicPartition, i64)> {
    let mut out: Vec<(TopicPartition, i64)> = commit
        .request
        .topics
        .iter()
        .flat_map(|t| t.partitions.iter().map(move |p| (tp(&t.name, p.partition_index), p.committed_offset)))
        .collect();
    out.sort();
    out
}

/// An answer to `commit` with `code` for every partition.
fn answer(commit: &Commit, code: ErrorCode) -> OffsetCommitResponse {
    answer_with(commit, |_| code)
}

fn answer_with(commit: &Commit, code: impl Fn(&TopicPartition) -> ErrorCode) -> OffsetCommitResponse {
    OffsetCommitResponse::default().with_topics(
        commit
            .request
            .topics
            .iter()
            .map(|t| {
                OffsetCommitResponseTopic::default().with_name(t.name.clone()).with_partitions(
                    t.partitions
                        .iter()
                        .map(|p| {
                            OffsetCommitResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(code(&tp(&t.name, p.partition_index)).code())
                        })
                        .collect(),
                )
            })
            .collect(),
    )
}

fn events(t: &mut CommitTracker) -> Vec<CommitEvent> {
    std::iter::from_fn(|| t.poll_event()).collect()
}

fn encodes<M: Message>(m: &M, version: i16) {
    let mut buf = BytesMut::new();
    m.encode(&mut buf, version).unwrap_or_else(|e| panic!("v{version}: {e}"));
}

#[test]
fn commit_requests_carry_the_member_epoch_or_the_generation() {
    let clock = Clock::new();
    let now = clock.now();
    let a = tp("orders", 0);
    let b = tp("orders", 3);
    let c = tp("audit", 1);

    // KIP-848, v9: the member epoch, the member id, the instance id, the leader epoch
    // of the last record finished, the reason as metadata.
    let mut t = CommitTracker::new(config(GroupProtocol::Consumer).with_instance_id("i-1"));
    t.set_member(now, MEMBER, 7);
    for p in [&a, &b, &c] {
        t.assign(now, p.clone(), Some(10));
    }
    assert!(t.done(now, &a.at(15).with_last_epoch(4), Some("skipped: bad payload".into())));
    assert!(t.done(now, &b.at(11), None));
    assert!(t.done(now, &c.at(20).with_last_epoch(2), None));
    let commit = t.poll_commit(now, 9).expect("a commit is due");
    let r = &commit.request;
    assert_eq!((r.group_id.as_str(), r.member_id.as_str(), r.generation_id_or_member_epoch), ("g", MEMBER, 7));
    assert_eq!(r.group_instance_id.as_deref(), Some("i-1"));
    assert_eq!(sent(&commit), vec![(c.clone(), 20), (a.clone(), 15), (b.clone(), 11)]);
    let orders = r.topics.iter().find(|t| t.name == "orders").expect("orders committed");
    assert_eq!(orders.partitions[0].committed_leader_epoch, 4);
    assert_eq!(orders.partitions[0].committed_metadata.as_deref(), Some("skipped: bad payload"));
    assert_eq!(orders.partitions[1].committed_leader_epoch, -1);
    assert_eq!(orders.partitions[1].committed_metadata.as_deref(), Some(""));
    encodes(r, 9);
    assert!(t.poll_commit(now, 9).is_none(), "one commit in flight per committer and partition");

    // Classic: the generation; below v7 no instance id, below v6 no leader epoch.
    for (version, instance, leader_epoch) in [(8, Some("i-1"), 4), (6, None, 4), (5, None, -1), (2, None, -1)] {
        let mut t = CommitTracker::new(config(GroupProtocol::Classic).with_instance_id("i-1"));
        t.set_member(now, "classic-member", 3);
        t.assign(now, a.clone(), None);
        t.done(now, &a.at(15).with_last_epoch(4), None);
        let commit = t.poll_commit(now, version).expect("a commit is due");
        let r = &commit.request;
        assert_eq!((r.member_id.as_str(), r.generation_id_or_member_epoch), ("classic-member", 3));
        assert_eq!(r.group_instance_id.as_deref(), instance, "v{version}");
        assert_eq!(r.topics[0].partitions[0].committed_leader_epoch, leader_epoch, "v{version}");
        encodes(r, version);
    }
}

#[test]
fn a_kip848_member_needs_offset_commit_v9() {
    let clock = Clock::new();
    let now = clock.now();
    let a = tp("t", 0);
    let mut t = tracker(now, std::slice::from_ref(&a));
    t.done(now, &a.at(3), None);
    assert!(t.poll_commit(now, 8).is_none());
    assert_eq!(
        events(&mut t),
        vec![CommitEvent::Failed {
            error: OffsetError::UnsupportedVersion { partition: a.clone(), version: 8 },
            uncommitted: Some(Uncommitted { partition: a, from: None, to: 3 }),
        }]
    );
}

#[test]
fn nothing_is_committed_outside_the_group() {
    let clock = Clock::new();
    let now = clock.now();
    let a = tp("t", 0);
    let mut t = tracker(now, std::slice::from_ref(&a));
    t.done(now, &a.at(3), None);
    t.set_member(now, MEMBER, 0);
    assert!(t.poll_commit(now, 9).is_none(), "epoch 0: not a member");
    t.set_member(now, MEMBER, 1);
    assert_eq!(t.poll_commit(now, 9).map(|c| c.request.generation_id_or_member_epoch), Some(1));

    let mut c = CommitTracker::new(config(GroupProtocol::Classic));
    c.assign(now, a.clone(), None);
    c.done(now, &a.at(3), None);
    assert!(c.poll_commit(now, 8).is_none(), "no generation yet");
    c.set_member(now, "m", 0);
    assert!(c.poll_commit(now, 8).is_some(), "generation 0 is a classic generation");
}

/// What a code in a commit answer leads to.
#[derive(Debug, Clone, Copy)]
enum Then {
    Committed,
    /// Sent again once the backoff passed, not before.
    Backoff,
    /// The coordinator is looked up; sent again once found.
    Coordinator,
    /// Sent again once the epoch changes.
    NextEpoch,
    /// Failed, with this error, and the work reported.
    Fails(fn(TopicPartition) -> OffsetError),
}

#[test]
fn commit_answers_by_code() {
    let table: &[(ErrorCode, Then)] = &[
        (ErrorCode::None, Then::Committed),
        (ErrorCode::CoordinatorLoadInProgress, Then::Backoff),
        (ErrorCode::RequestTimedOut, Then::Backoff),
        (ErrorCode::NotEnoughReplicas, Then::Backoff),
        (ErrorCode::UnstableOffsetCommit, Then::Backoff),
        (ErrorCode::NotCoordinator, Then::Coordinator),
        (ErrorCode::CoordinatorNotAvailable, Then::Coordinator),
        (ErrorCode::StaleMemberEpoch, Then::NextEpoch),
        (ErrorCode::UnknownMemberId, Then::Fails(|partition| OffsetError::UnknownMember { partition })),
        (ErrorCode::FencedMemberEpoch, Then::Fails(|partition| OffsetError::FencedMemberEpoch { partition })),
        (ErrorCode::IllegalGeneration, Then::Fails(|partition| OffsetError::IllegalGeneration { partition })),
        (ErrorCode::RebalanceInProgress, Then::Fails(|partition| OffsetError::RebalanceInProgress { partition })),
        (
            ErrorCode::GroupAuthorizationFailed,
            Then::Fails(|partition| OffsetError::GroupAuthorizationFailed { partition }),
        ),
        (
            ErrorCode::TopicAuthorizationFailed,
            Then::Fails(|partition| OffsetError::TopicAuthorizationFailed { partition }),
        ),
        (ErrorCode::OffsetMetadataTooLarge, Then::Fails(|partition| OffsetError::OffsetMetadataTooLarge { partition })),
        (
            ErrorCode::UnknownTopicOrPartition,
            Then::Fails(|partition| OffsetError::UnknownTopicOrPartition { partition }),
        ),
        (ErrorCode::GroupIdNotFound, Then::Fails(|partition| OffsetError::GroupIdNotFound { partition })),
        (
            ErrorCode::InvalidCommitOffsetSize,
            Then::Fails(|partition| OffsetError::Broker { partition, code: ErrorCode::InvalidCommitOffsetSize }),
        ),
    ];
    for &(code, then) in table {
        let mut clock = Clock::new();
        let now = clock.now();
        let a = tp("t", 0);
        let mut t = tracker(now, std::slice::from_ref(&a));
        t.done(now, &a.at(8).with_last_epoch(2), None);
        assert!(!t.may_handle(&a), "{code:?}: a finished batch waits for its commit");
        let commit = t.poll_commit(now, 9).expect("a commit is due");
        t.on_commit_response(now, commit.id, &answer(&commit, code));
        let evs = events(&mut t);
        match then {
            Then::Committed => {
                assert_eq!(evs, vec![CommitEvent::Committed { offset: a.at(8).with_last_epoch(2) }], "{code:?}");
                assert_eq!(t.committed(&a), Some(8));
                assert!(t.may_handle(&a));
                assert!(t.poll_commit(now, 9).is_none(), "nothing left to commit");
            }
            Then::Backoff => {
                assert!(evs.is_empty(), "{code:?}: {evs:?}");
                assert_eq!(t.poll_timeout(), Some(now + BACKOFF), "{code:?}");
                assert!(t.poll_commit(now, 9).is_none(), "{code:?}: not before the backoff");
                let later = clock.advance(BACKOFF);
                let again = t.poll_commit(later, 9).expect("again after the backoff");
                assert_eq!(sent(&again), vec![(a.clone(), 8)]);
                // A second failure doubles the wait.
                t.on_commit_response(later, again.id, &answer(&again, code));
                assert_eq!(t.poll_timeout(), Some(later + 2 * BACKOFF), "{code:?}");
            }
            Then::Coordinator => {
                assert_eq!(evs, vec![CommitEvent::FindCoordinator], "{code:?}");
                assert!(t.poll_commit(now, 9).is_none(), "{code:?}: not before the coordinator is found");
                t.coordinator_found(now);
                let again = t.poll_commit(now, 9).expect("again at once once found");
                assert_eq!(sent(&again), vec![(a.clone(), 8)]);
            }
            Then::NextEpoch => {
                assert!(evs.is_empty(), "{code:?}: {evs:?}");
                let later = clock.advance(BACKOFF_MAX * 4);
                assert!(t.poll_commit(later, 9).is_none(), "{code:?}: the same epoch is refused again");
                assert_eq!(t.poll_timeout(), None);
                t.set_member(later, MEMBER, 6);
                let again = t.poll_commit(later, 9).expect("again with the new epoch");
                assert_eq!(again.request.generation_id_or_member_epoch, 6);
                assert_eq!(sent(&again), vec![(a.clone(), 8)]);
            }
            Then::Fails(error) => {
                assert_eq!(
                    evs,
                    vec![CommitEvent::Failed {
                        error: error(a.clone()),
                        uncommitted: Some(Uncommitted { partition: a.clone(), from: None, to: 8 }),
                    }],
                    "{code:?}"
                );
                assert!(t.partitions().is_empty(), "{code:?}: no longer tracked");
                let ev_error = error(a.clone());
                assert_eq!(ev_error.partition(), &a);
                assert_eq!(
                    ev_error.is_membership_lost(),
                    matches!(
                        code,
                        ErrorCode::UnknownMemberId
                            | ErrorCode::FencedMemberEpoch
                            | ErrorCode::IllegalGeneration
                            | ErrorCode::RebalanceInProgress
                    )
                );
            }
        }
    }
}

#[test]
fn a_commit_without_answer_backs_off_and_finds_the_coordinator() {
    let mut clock = Clock::new();
    let now = clock.now();
    let a = tp("t", 0);
    let mut t = tracker(now, std::slice::from_ref(&a));
    t.done(now, &a.at(1), None);
    let commit = t.poll_commit(now, 9).expect("a commit is due");
    t.on_commit_failed(now, commit.id);
    assert_eq!(events(&mut t), vec![CommitEvent::FindCoordinator]);
    t.coordinator_found(now);
    assert!(t.poll_commit(now, 9).is_none());
    let later = clock.advance(BACKOFF);
    assert!(t.poll_commit(later, 9).is_some());
    // A late or repeated report of the same commit changes nothing.
    t.on_commit_failed(later, commit.id);
    t.on_commit_response(later, commit.id, &answer(&commit, ErrorCode::None));
    assert!(events(&mut t).is_empty());
}

#[test]
fn a_partition_left_out_of_the_answer_goes_again() {
    let mut clock = Clock::new();
    let now = clock.now();
    let (a, b) = (tp("t", 0), tp("t", 1));
    let mut t = tracker(now, &[a.clone(), b.clone()]);
    t.done(now, &a.at(1), None);
    t.done(now, &b.at(1), None);
    let commit = t.poll_commit(now, 9).expect("a commit is due");
    let mut reply = answer(&commit, ErrorCode::None);
    reply.topics[0].partitions.retain(|p| p.partition_index == 0);
    t.on_commit_response(now, commit.id, &reply);
    assert_eq!(events(&mut t), vec![CommitEvent::Committed { offset: a.at(1) }]);
    let later = clock.advance(BACKOFF);
    assert_eq!(sent(&t.poll_commit(later, 9).expect("a commit is due")), vec![(b, 1)]);
}

/// Scenario: a heartbeat bumps the epoch while a commit with the old one is on the
/// wire; the coordinator refuses it as stale, and it goes again at once with the new
/// epoch, without the partition the new assignment took away.
#[test]
fn a_commit_racing_an_epoch_bump() {
    let clock = Clock::new();
    let now = clock.now();
    let (a, b) = (tp("t", 0), tp("t", 1));
    let mut t = tracker(now, &[a.clone(), b.clone()]);
    t.done(now, &a.at(4), None);
    t.done(now, &b.at(9), None);
    let commit = t.poll_commit(now, 9).expect("a commit is due");
    assert_eq!(commit.request.generation_id_or_member_epoch, 5);

    // The new epoch comes while the commit is in flight; b was lost meanwhile.
    t.set_member(now, MEMBER, 6);
    let lost = t.lose(now, [b.clone()]);
    assert_eq!(lost, vec![Uncommitted { partition: b.clone(), from: None, to: 9 }]);
    t.on_commit_response(now, commit.id, &answer(&commit, ErrorCode::StaleMemberEpoch));
    assert!(events(&mut t).is_empty());

    let again = t.poll_commit(now, 9).expect("the epoch already moved: again at once");
    assert_eq!(again.request.generation_id_or_member_epoch, 6);
    assert_eq!(sent(&again), vec![(a.clone(), 4)]);
    t.on_commit_response(now, again.id, &answer(&again, ErrorCode::None));
    assert_eq!(events(&mut t), vec![CommitEvent::Committed { offset: a.at(4) }]);
}

/// Scenario (chaos seed 21, classic cooperative): the member rejoins while a commit
/// sent under its old generation is on the wire; the coordinator refuses it with
/// ILLEGAL_GENERATION, and it goes again at once under the new generation, which
/// still gives the member the partition (so that a revocation that follows hands it
/// over committed, and a partition kept goes on committing). Refused under the
/// current generation (the member is behind), it waits for the next one.
#[test]
fn a_classic_commit_racing_a_new_generation_goes_again_under_it() {
    let clock = Clock::new();
    let now = clock.now();
    let a = tp("t", 0);
    let mut t = CommitTracker::new(config(GroupProtocol::Classic));
    t.set_member(now, MEMBER, 1);
    t.assign(now, a.clone(), None);
    t.done(now, &a.at(4), None);
    let commit = t.poll_commit(now, 8).expect("a commit is due");
    assert_eq!(commit.request.generation_id_or_member_epoch, 1);

    t.set_member(now, MEMBER, 2);
    t.on_commit_response(now, commit.id, &answer(&commit, ErrorCode::IllegalGeneration));
    assert!(events(&mut t).is_empty(), "not failed: the generation moved on");
    let again = t.poll_commit(now, 8).expect("again at once, under the new generation");
    assert_eq!(again.request.generation_id_or_member_epoch, 2);
    assert_eq!(sent(&again), vec![(a.clone(), 4)]);
    t.on_commit_response(now, again.id, &answer(&again, ErrorCode::None));
    assert_eq!(events(&mut t), vec![CommitEvent::Committed { offset: a.at(4) }]);

    for code in [ErrorCode::IllegalGeneration, ErrorCode::RebalanceInProgress] {
        let generation = t.generation();
        let offset = t.committed(&a).unwrap_or(0) + 2;
        t.done(now, &a.at(offset), None);
        let current = t.poll_commit(now, 8).expect("a commit is due");
        t.on_commit_response(now, current.id, &answer(&current, code));
        assert!(events(&mut t).is_empty(), "{code:?}: not failed");
        assert!(t.poll_commit(now, 8).is_none(), "{code:?}: waits for the next generation");
        t.set_member(now, MEMBER, generation + 1);
        let next = t.poll_commit(now, 8).expect("again under the next generation");
        assert_eq!(next.request.generation_id_or_member_epoch, generation + 1);
        t.on_commit_response(now, next.id, &answer(&next, ErrorCode::None));
        assert_eq!(events(&mut t), vec![CommitEvent::Committed { offset: a.at(offset) }], "{code:?}");
    }
}

#[test]
fn committed_offsets_never_go_backwards_and_handlers_wait_for_unacked_commits() {
    let clock = Clock::new();
    let now = clock.now();
    let a = tp("t", 0);
    let mut t = CommitTracker::new(config(GroupProtocol::Consumer).with_max_unacked_commits(2));
    t.set_member(now, MEMBER, 1);
    t.assign(now, a.clone(), Some(10));
    assert!(!t.done(now, &a.at(10), None), "not above the committed offset");
    assert!(!t.done(now, &a.at(3), None));
    assert!(t.done(now, &a.at(12).with_last_epoch(1), None));
    assert!(t.may_handle(&a), "1 unacknowledged of 2");
    let first = t.poll_commit(now, 9).expect("a commit is due");
    assert!(t.done(now, &a.at(15), None));
    assert!(t.may_handle(&a), "2 of 2");
    assert!(!t.done(now, &a.at(14), None), "never below what was finished");
    assert!(t.done(now, &a.at(18), None));
    assert!(!t.may_handle(&a), "3 of 2: the handler waits");
    assert!(t.poll_commit(now, 9).is_none(), "one commit in flight per partition");
    t.on_commit_response(now, first.id, &answer(&first, ErrorCode::None));
    assert_eq!(
        events(&mut t),
        vec![CommitEvent::Committed { offset: a.at(12).with_last_epoch(1) }],
        "the leader epoch sent with the offset, not the one finished since"
    );
    assert_eq!(t.committed(&a), Some(12));
    assert!(t.may_handle(&a));
    let second = t.poll_commit(now, 9).expect("a commit is due");
    assert_eq!(sent(&second), vec![(a.clone(), 18)], "the highest finished offset");
    t.on_commit_response(now, second.id, &answer(&second, ErrorCode::None));
    assert_eq!(t.committed(&a), Some(18));
    assert_eq!(t.pending(&a), None);
    assert!(!t.may_handle(&tp("t", 9)), "not tracked");
}

/// Kafka's coordinator holds a commit for its append linger, and a connection's
/// requests are served one at a time: a partition finished while its committer's
/// commit is in flight goes at once on the committer's other connection, never in two
/// commits itself; with every connection busy, it waits.
#[test]
fn a_committer_sends_on_a_free_connection_while_a_commit_is_in_flight() {
    let clock = Clock::new();
    let now = clock.now();
    let (a, b, c) = (tp("t", 0), tp("t", 1), tp("t", 2));
    let mut t = CommitTracker::new(config(GroupProtocol::Consumer).with_commits_in_flight(2));
    t.set_member(now, MEMBER, 5);
    for p in [&a, &b, &c] {
        t.assign(now, p.clone(), None);
    }
    t.done(now, &a.at(10), None);
    let first = t.poll_commit(now, 9).expect("a's commit");
    assert_eq!((first.committer, first.slot), (0, 0));
    assert!(t.poll_commit(now, 9).is_none(), "nothing else finished");
    t.done(now, &b.at(20), None);
    t.done(now, &a.at(15), None);
    let second = t.poll_commit(now, 9).expect("b's commit, on the other connection");
    assert_eq!((second.committer, second.slot), (0, 1));
    assert_eq!(sent(&second), vec![(b.clone(), 20)], "a waits for its commit in flight");
    t.done(now, &c.at(30), None);
    assert!(t.poll_commit(now, 9).is_none(), "both connections are busy");
    t.on_commit_response(now, first.id, &answer(&first, ErrorCode::None));
    let third = t.poll_commit(now, 9).expect("a again and c, on the freed connection");
    assert_eq!(third.slot, 0);
    assert_eq!(sent(&third), vec![(a.clone(), 15), (c.clone(), 30)]);
    t.on_commit_response(now, second.id, &answer(&second, ErrorCode::None));
    t.on_commit_response(now, third.id, &answer(&third, ErrorCode::None));
    assert_eq!((t.committed(&a), t.committed(&b), t.committed(&c)), (Some(15), Some(20), Some(30)));

    // One connection: b waits for a's answer.
    let mut t = CommitTracker::new(config(GroupProtocol::Consumer).with_commits_in_flight(1));
    t.set_member(now, MEMBER, 5);
    t.assign(now, a.clone(), None);
    t.assign(now, b.clone(), None);
    t.done(now, &a.at(10), None);
    let first = t.poll_commit(now, 9).expect("a's commit");
    t.done(now, &b.at(20), None);
    assert!(t.poll_commit(now, 9).is_none(), "the committer's one connection is busy");
    t.on_commit_response(now, first.id, &answer(&first, ErrorCode::None));
    assert_eq!(sent(&t.poll_commit(now, 9).expect("b's commit")), vec![(b, 20)]);
}

#[test]
fn committers_batch_their_own_partitions_one_request_at_a_time() {
    let clock = Clock::new();
    let now = clock.now();
    let mut t = CommitTracker::new(config(GroupProtocol::Consumer).with_committers_count(3));
    t.set_member(now, MEMBER, 2);
    let parts: Vec<TopicPartition> = (0..12).map(|p| tp(if p % 2 == 0 { "a" } else { "b" }, p)).collect();
    for p in &parts {
        t.assign(now, p.clone(), None);
        t.done(now, &p.at(5), None);
    }
    let mut commits = Vec::new();
    while let Some(c) = t.poll_commit(now, 9) {
        commits.push(c);
    }
    let mut committers: Vec<usize> = commits.iter().map(|c| c.committer).collect();
    committers.sort();
    committers.dedup();
    assert_eq!(committers.len(), commits.len(), "one request per committer");
    assert!(commits.len() <= 3);
    let mut all: Vec<TopicPartition> = commits.iter().flat_map(|c| sent(c).into_iter().map(|(p, _)| p)).collect();
    all.sort();
    for c in &commits {
        for (p, _) in sent(c) {
            assert_eq!(t.committer_of(&p), c.committer, "{p} on its own committer");
        }
    }
    let mut expected = parts.clone();
    expected.sort();
    assert_eq!(all, expected, "every partition, once");
    assert_eq!(t.committer_of(&tp("a", 0)), t.committer_of(&tp("a", 0)));
}

#[test]
fn a_flush_commits_then_releases() {
    let mut clock = Clock::new();
    let now = clock.now();
    let (a, b, c) = (tp("t", 0), tp("t", 1), tp("t", 2));
    let mut t = tracker(now, &[a.clone(), b.clone(), c.clone()]);
    t.done(now, &a.at(7), None);
    t.done(now, &b.at(3), None);
    // A commit of a is in flight and failing; b waits in a backoff.
    let commit = t.poll_commit(now, 9).expect("a commit is due");
    t.on_commit_response(
        now,
        commit.id,
        &answer_with(&commit, |p| if *p == b { ErrorCode::RequestTimedOut } else { ErrorCode::None }),
    );
    let _ = events(&mut t);
    t.done(now, &a.at(9), None);

    let flush = t.flush(now, [a.clone(), b.clone(), c.clone(), tp("t", 7)]);
    assert!(events(&mut t).is_empty(), "not committed yet");
    // The flush does not wait out b's backoff.
    let commit = t.poll_commit(now, 9).expect("the flush commits at once");
    assert_eq!(sent(&commit), vec![(a.clone(), 9), (b.clone(), 3)]);
    let now = clock.advance(Duration::from_millis(5));
    t.on_commit_response(now, commit.id, &answer(&commit, ErrorCode::None));
    let evs = events(&mut t);
    assert_eq!(evs.len(), 3, "{evs:?}");
    let CommitEvent::Flushed { flush: id, mut committed, uncommitted } = evs[2].clone() else { panic!("{evs:?}") };
    committed.sort();
    assert_eq!(id, flush);
    assert_eq!(committed, vec![(a.clone(), Some(9)), (b.clone(), Some(3)), (c.clone(), None), (tp("t", 7), None)]);
    assert!(uncommitted.is_empty());
    assert!(t.partitions().is_empty(), "released");
}

#[test]
fn a_flush_reports_what_could_not_be_committed() {
    let clock = Clock::new();
    let now = clock.now();
    let (a, b) = (tp("t", 0), tp("t", 1));
    let mut t = tracker(now, &[a.clone(), b.clone()]);
    t.assign(now, b.clone(), Some(2));
    t.done(now, &a.at(7), None);
    t.done(now, &b.at(4), None);
    let flush = t.flush(now, [a.clone(), b.clone()]);
    let commit = t.poll_commit(now, 9).expect("a commit is due");
    t.on_commit_response(now, commit.id, &answer(&commit, ErrorCode::FencedMemberEpoch));
    let evs = events(&mut t);
    assert_eq!(
        evs.last(),
        Some(&CommitEvent::Flushed {
            flush,
            committed: vec![],
            uncommitted: vec![
                Uncommitted { partition: a.clone(), from: None, to: 7 },
                Uncommitted { partition: b.clone(), from: None, to: 4 },
            ],
        })
    );
    assert!(matches!(&evs[0], CommitEvent::Failed { error: OffsetError::FencedMemberEpoch { .. }, uncommitted: None }));

    // A flush with nothing to commit ends at once; a loss during a flush ends it too.
    let mut t = tracker(now, &[a.clone(), b.clone()]);
    let f1 = t.flush(now, [a.clone()]);
    assert_eq!(
        events(&mut t),
        vec![CommitEvent::Flushed { flush: f1, committed: vec![(a.clone(), None)], uncommitted: vec![] }]
    );
    t.done(now, &b.at(2), None);
    let f2 = t.flush(now, [b.clone()]);
    assert!(t.lose(now, [b.clone()]).is_empty(), "the flush reports it");
    assert_eq!(
        events(&mut t),
        vec![CommitEvent::Flushed {
            flush: f2,
            committed: vec![],
            uncommitted: vec![Uncommitted { partition: b.clone(), from: None, to: 2 }],
        }]
    );
}

#[test]
fn a_partition_lost_and_assigned_again_waits_for_its_old_commit() {
    let clock = Clock::new();
    let now = clock.now();
    let a = tp("t", 0);
    let mut t = tracker(now, std::slice::from_ref(&a));
    t.done(now, &a.at(5), None);
    let old = t.poll_commit(now, 9).expect("a commit is due");
    assert_eq!(t.lose(now, [a.clone()]), vec![Uncommitted { partition: a.clone(), from: None, to: 5 }]);
    t.set_member(now, MEMBER, 6);
    t.assign(now, a.clone(), Some(3));
    t.done(now, &a.at(4), None);
    assert!(t.poll_commit(now, 9).is_none(), "the old commit is still on the wire");
    t.on_commit_response(now, old.id, &answer(&old, ErrorCode::None));
    assert!(events(&mut t).is_empty(), "an answer about a partition given up");
    assert_eq!(t.committed(&a), Some(3));
    let new = t.poll_commit(now, 9).expect("a commit is due");
    assert_eq!(sent(&new), vec![(a, 4)]);
}

/// Scenario, with the KIP-848 member: a heartbeat bumps the epoch and revokes t-1
/// while a commit of both partitions with the old epoch is on the wire. The
/// coordinator refuses it as stale; it goes again with the new epoch, the revocation's
/// flush ends with t-1 committed, and only then is t-1 released and acknowledged.
#[test]
fn a_revocation_racing_a_stale_commit_with_the_member() {
    use klife_protocol::Uuid;
    use klife_protocol::messages::ConsumerGroupHeartbeatResponse;
    use klife_protocol::messages::consumer_group_heartbeat_response::{Assignment, TopicPartitions};

    use crate::membership::consumer::{Action, ConsumerConfig, ConsumerMember, Subscription};

    let topic = Uuid::from_u128(0x77);
    let answer_hb = |epoch: i32, parts: &[i32]| {
        ConsumerGroupHeartbeatResponse::default()
            .with_member_epoch(epoch)
            .with_heartbeat_interval_ms(3000)
            .with_assignment(Some(Assignment::default().with_topic_partitions(vec![
                TopicPartitions::default().with_topic_id(topic).with_partitions(parts.to_vec()),
            ])))
    };
    let clock = Clock::new();
    let now = clock.now();
    let member_config = ConsumerConfig::new("g", MEMBER, Subscription::names(["t"])).with_retry_jitter(0.0);
    let mut m = ConsumerMember::new(member_config, now).expect("valid config");
    let mut t = CommitTracker::new(config(GroupProtocol::Consumer));
    let _ = m.poll_action();
    m.coordinator_found(now);
    m.on_topic_names(now, [(topic, "t")]);

    // The join: epoch 1, t-0 and t-1 start from their committed offsets.
    let join = m.poll_heartbeat(now).expect("join");
    m.on_heartbeat_response(now, join.id, &answer_hb(1, &[0, 1]));
    let (a, b) = (tp("t", 0), tp("t", 1));
    for action in std::iter::from_fn(|| m.poll_action()) {
        match action {
            Action::EpochChanged { epoch } => t.set_member(now, MEMBER, epoch),
            Action::StartPartitions { partitions } => {
                for p in partitions {
                    t.assign(now, p, Some(0));
                }
            }
            other => panic!("{other:?}"),
        }
    }
    let ack = m.poll_heartbeat(now).expect("ack");
    m.on_heartbeat_response(now, ack.id, &answer_hb(1, &[0, 1]));
    t.done(now, &a.at(5), None);
    t.done(now, &b.at(7), None);
    let stale = t.poll_commit(now, 9).expect("a commit is due");
    assert_eq!(stale.request.generation_id_or_member_epoch, 1);

    // The next heartbeat: epoch 2, t-1 revoked.
    let hb = m.poll_heartbeat(now + Duration::from_secs(3)).expect("heartbeat");
    let now = now + Duration::from_secs(3);
    m.on_heartbeat_response(now, hb.id, &answer_hb(2, &[0]));
    let mut flush = None;
    let mut release = None;
    for action in std::iter::from_fn(|| m.poll_action()) {
        match action {
            Action::EpochChanged { epoch } => t.set_member(now, MEMBER, epoch),
            Action::StopFetching { .. } => {}
            Action::CommitRevoked { release: r, partitions, .. } => {
                assert_eq!(partitions, vec![b.clone()]);
                flush = Some(t.flush(now, partitions));
                release = Some(r);
            }
            other => panic!("{other:?}"),
        }
    }
    let (flush, release) = (flush.expect("a revocation"), release.expect("a revocation"));
    assert!(events(&mut t).is_empty(), "t-1's commit is in flight");

    t.on_commit_response(now, stale.id, &answer(&stale, ErrorCode::StaleMemberEpoch));
    let again = t.poll_commit(now, 9).expect("again with the new epoch, at once");
    assert_eq!(again.request.generation_id_or_member_epoch, 2);
    assert_eq!(sent(&again), vec![(a.clone(), 5), (b.clone(), 7)]);
    t.on_commit_response(now, again.id, &answer(&again, ErrorCode::None));
    let evs = events(&mut t);
    assert!(evs.contains(&CommitEvent::Flushed { flush, committed: vec![(b.clone(), Some(7))], uncommitted: vec![] }));
    assert_eq!(t.partitions(), vec![a.clone()]);

    // Released: the member acknowledges owning t-0 alone.
    m.released(now, release);
    let ack = m.poll_heartbeat(now).expect("the acknowledgement goes at once");
    assert_eq!(ack.request.topic_partitions.as_ref().map(|ts| ts[0].partitions.clone()), Some(vec![0]));
    assert_eq!(m.owned(), vec![a]);
}

// ---- OffsetFetch ----

fn fetcher(now: Instant, protocol: GroupProtocol, parts: &[(TopicPartition, ResetPolicy)]) -> OffsetFetcher {
    let mut f = OffsetFetcher::new(config(protocol));
    f.set_member(now, MEMBER, 4);
    f.add(now, parts.iter().cloned());
    f
}

/// A v8+ answer: for each partition, (offset, leader epoch, code); and the group's code.
fn fetch_answer(group_code: ErrorCode, parts: &[(TopicPartition, i64, i32, ErrorCode)]) -> OffsetFetchResponse {
    let mut topics: Vec<OffsetFetchResponseTopics> = Vec::new();
    for (p, offset, epoch, code) in parts {
        let part = OffsetFetchResponsePartitions::default()
            .with_partition_index(p.partition)
            .with_committed_offset(*offset)
            .with_committed_leader_epoch(*epoch)
            .with_metadata(Some("m".into()))
            .with_error_code(code.code());
        match topics.iter_mut().find(|t| *t.name == *p.topic) {
            Some(t) => t.partitions.push(part),
            None => topics
                .push(OffsetFetchResponseTopics::default().with_name(p.topic.to_string()).with_partitions(vec![part])),
        }
    }
    OffsetFetchResponse::default().with_groups(vec![
        OffsetFetchResponseGroup::default()
            .with_group_id("g".into())
            .with_topics(topics)
            .with_error_code(group_code.code()),
    ])
}

fn fetch_events(f: &mut OffsetFetcher) -> Vec<FetchEvent> {
    std::iter::from_fn(|| f.poll_event()).collect()
}

#[test]
fn fetch_requests_by_version() {
    let clock = Clock::new();
    let now = clock.now();
    let parts =
        [(tp("a", 0), ResetPolicy::Latest), (tp("a", 2), ResetPolicy::Latest), (tp("b", 1), ResetPolicy::Earliest)];

    let mut f = fetcher(now, GroupProtocol::Consumer, &parts);
    let fetch = f.poll_fetch(now, 9).expect("a fetch is due");
    let g = &fetch.request.groups[0];
    assert_eq!((g.group_id.as_str(), g.member_id.as_deref(), g.member_epoch), ("g", Some(MEMBER), 4));
    let topics = g.topics.as_ref().expect("topics named");
    assert_eq!(
        topics.iter().map(|t| (t.name.as_str(), t.partition_indexes.clone())).collect::<Vec<_>>(),
        vec![("a", vec![0, 2]), ("b", vec![1])]
    );
    assert!(fetch.request.require_stable);
    encodes(&fetch.request, 9);
    assert!(f.poll_fetch(now, 9).is_none(), "one fetch in flight");

    // v8: batched groups, no member; a classic member never sends one.
    let mut f = fetcher(now, GroupProtocol::Consumer, &parts);
    let fetch = f.poll_fetch(now, 8).expect("a fetch is due");
    assert_eq!((fetch.request.groups[0].member_id.as_deref(), fetch.request.groups[0].member_epoch), (None, -1));
    encodes(&fetch.request, 8);
    let mut f = fetcher(now, GroupProtocol::Classic, &parts);
    let fetch = f.poll_fetch(now, 9).expect("a fetch is due");
    assert_eq!(fetch.request.groups[0].member_id, None);
    encodes(&fetch.request, 9);

    // v7 and v6: the group and topics at the top; require_stable from v7.
    for (version, stable) in [(7, true), (6, false), (2, false)] {
        let mut f = fetcher(now, GroupProtocol::Classic, &parts);
        let fetch = f.poll_fetch(now, version).expect("a fetch is due");
        assert_eq!(fetch.request.group_id, "g");
        assert_eq!(fetch.request.topics.as_ref().map(Vec::len), Some(2));
        assert!(fetch.request.groups.is_empty());
        assert_eq!(fetch.request.require_stable, stable);
        encodes(&fetch.request, version);
    }
}

#[test]
fn fetched_offsets_become_start_positions() {
    let clock = Clock::new();
    let now = clock.now();
    let (a, b, c, d) = (tp("t", 0), tp("t", 1), tp("t", 2), tp("t", 3));
    let mut f = fetcher(
        now,
        GroupProtocol::Consumer,
        &[
            (a.clone(), ResetPolicy::Latest),
            (b.clone(), ResetPolicy::Earliest),
            (c.clone(), ResetPolicy::Latest),
            (d.clone(), ResetPolicy::Error),
        ],
    );
    let fetch = f.poll_fetch(now, 9).expect("a fetch is due");
    let reply = fetch_answer(
        ErrorCode::None,
        &[
            (a.clone(), 42, 7, ErrorCode::None),
            (b.clone(), -1, -1, ErrorCode::None),
            (c.clone(), -1, -1, ErrorCode::None),
            (d.clone(), -1, -1, ErrorCode::None),
        ],
    );
    f.on_fetch_response(now, fetch.id, &reply);
    assert_eq!(
        fetch_events(&mut f),
        vec![
            FetchEvent::Start {
                partition: a.clone(),
                start: StartPosition::Committed { offset: a.at(42).with_last_epoch(7), metadata: Some("m".into()) },
            },
            FetchEvent::Start { partition: b, start: StartPosition::Earliest },
            FetchEvent::Start { partition: c, start: StartPosition::Latest },
            FetchEvent::Failed(OffsetError::NoCommittedOffset { partition: d.clone() }),
        ]
    );
    assert_eq!(
        OffsetError::NoCommittedOffset { partition: d }.to_string(),
        "t-3: no committed offset and reset policy error"
    );
    assert!(f.waiting().is_empty());
    assert!(f.poll_fetch(now, 9).is_none());

    // A v7 answer: the topics at the top.
    let mut f = fetcher(now, GroupProtocol::Classic, &[(a.clone(), ResetPolicy::Latest)]);
    let fetch = f.poll_fetch(now, 7).expect("a fetch is due");
    let reply = OffsetFetchResponse::default().with_topics(vec![
        OffsetFetchResponseTopic::default().with_name("t".into()).with_partitions(vec![
            OffsetFetchResponsePartition::default()
                .with_partition_index(0)
                .with_committed_offset(5)
                .with_committed_leader_epoch(-1),
        ]),
    ]);
    f.on_fetch_response(now, fetch.id, &reply);
    assert_eq!(
        fetch_events(&mut f),
        vec![FetchEvent::Start {
            partition: a.clone(),
            start: StartPosition::Committed { offset: a.at(5), metadata: None }
        }]
    );
}

#[test]
fn fetch_answers_by_code() {
    // (code, at the group level?, what follows)
    let table: &[(ErrorCode, bool, Then)] = &[
        (ErrorCode::UnstableOffsetCommit, false, Then::Backoff),
        (ErrorCode::CoordinatorLoadInProgress, true, Then::Backoff),
        (ErrorCode::CoordinatorLoadInProgress, false, Then::Backoff),
        (ErrorCode::NotCoordinator, true, Then::Coordinator),
        (ErrorCode::CoordinatorNotAvailable, true, Then::Coordinator),
        (ErrorCode::StaleMemberEpoch, true, Then::NextEpoch),
        (ErrorCode::UnknownMemberId, true, Then::Fails(|partition| OffsetError::UnknownMember { partition })),
        (ErrorCode::FencedMemberEpoch, true, Then::Fails(|partition| OffsetError::FencedMemberEpoch { partition })),
        (
            ErrorCode::GroupAuthorizationFailed,
            true,
            Then::Fails(|partition| OffsetError::GroupAuthorizationFailed { partition }),
        ),
        (
            ErrorCode::TopicAuthorizationFailed,
            false,
            Then::Fails(|partition| OffsetError::TopicAuthorizationFailed { partition }),
        ),
        (
            ErrorCode::UnknownTopicOrPartition,
            false,
            Then::Fails(|partition| OffsetError::UnknownTopicOrPartition { partition }),
        ),
        (ErrorCode::GroupIdNotFound, true, Then::Fails(|partition| OffsetError::GroupIdNotFound { partition })),
    ];
    for &(code, group_level, then) in table {
        let mut clock = Clock::new();
        let now = clock.now();
        let a = tp("t", 0);
        let mut f = fetcher(now, GroupProtocol::Consumer, &[(a.clone(), ResetPolicy::Latest)]);
        let fetch = f.poll_fetch(now, 9).expect("a fetch is due");
        let reply = if group_level {
            fetch_answer(code, &[])
        } else {
            fetch_answer(ErrorCode::None, &[(a.clone(), -1, -1, code)])
        };
        f.on_fetch_response(now, fetch.id, &reply);
        let evs = fetch_events(&mut f);
        match then {
            Then::Committed => unreachable!(),
            Then::Backoff => {
                assert!(evs.is_empty(), "{code:?}: {evs:?}");
                assert_eq!(f.poll_timeout(), Some(now + BACKOFF));
                assert!(f.poll_fetch(now, 9).is_none(), "{code:?}: not before the backoff");
                let later = clock.advance(BACKOFF);
                assert!(f.poll_fetch(later, 9).is_some(), "{code:?}: again after it");
            }
            Then::Coordinator => {
                assert_eq!(evs, vec![FetchEvent::FindCoordinator], "{code:?}");
                assert!(f.poll_fetch(now, 9).is_none());
                f.coordinator_found(now);
                assert!(f.poll_fetch(now, 9).is_some(), "{code:?}: again once found");
            }
            Then::NextEpoch => {
                assert!(evs.is_empty(), "{code:?}: {evs:?}");
                assert!(f.poll_fetch(clock.advance(BACKOFF_MAX), 9).is_none());
                f.set_member(clock.now(), MEMBER, 5);
                let again = f.poll_fetch(clock.now(), 9).expect("again with the new epoch");
                assert_eq!(again.request.groups[0].member_epoch, 5);
            }
            Then::Fails(error) => {
                assert_eq!(evs, vec![FetchEvent::Failed(error(a.clone()))], "{code:?}");
                assert!(f.waiting().is_empty());
            }
        }
    }
}

#[test]
fn a_fetch_without_answer_and_partitions_removed_meanwhile() {
    let mut clock = Clock::new();
    let now = clock.now();
    let (a, b) = (tp("t", 0), tp("t", 1));
    let mut f =
        fetcher(now, GroupProtocol::Consumer, &[(a.clone(), ResetPolicy::Latest), (b.clone(), ResetPolicy::Latest)]);
    let fetch = f.poll_fetch(now, 9).expect("a fetch is due");
    f.on_fetch_failed(now, fetch.id);
    assert_eq!(fetch_events(&mut f), vec![FetchEvent::FindCoordinator]);
    f.coordinator_found(now);
    assert!(f.poll_fetch(now, 9).is_none(), "after the backoff");
    let later = clock.advance(BACKOFF);
    let fetch = f.poll_fetch(later, 9).expect("a fetch is due");
    f.remove([&b]);
    f.add(later, [(tp("t", 2), ResetPolicy::Latest)]);
    let reply =
        fetch_answer(ErrorCode::None, &[(a.clone(), 1, -1, ErrorCode::None), (b.clone(), 1, -1, ErrorCode::None)]);
    f.on_fetch_response(later, fetch.id, &reply);
    let evs = fetch_events(&mut f);
    assert_eq!(evs.len(), 1, "b was removed: {evs:?}");
    assert_eq!(f.waiting(), vec![tp("t", 2)], "added during the fetch: asked next");
    assert!(f.poll_fetch(later, 9).is_some());
    // The old fetch's answer again: ignored.
    f.on_fetch_response(later, fetch.id, &reply);
    assert!(fetch_events(&mut f).is_empty());
}

// ---- Properties ----

mod properties {
    use std::collections::{BTreeMap, HashMap};

    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone)]
    enum Op {
        /// The handler of partition `p` finished `n` more records.
        Done(usize, i64),
        /// Send what is due.
        Poll,
        /// Answer the `i`th commit in flight with the `c`th code.
        Answer(usize, usize),
        /// The `i`th commit in flight got no answer.
        NoAnswer(usize),
        /// The epoch moves on.
        Epoch,
        /// Partition `p` is lost.
        Lose(usize),
        /// Partition `p` is assigned (again), from its committed offset.
        Assign(usize),
        /// Partition `p` is flushed.
        Flush(usize),
        /// Time passes.
        Advance(u64),
        /// The coordinator is found.
        Found,
    }

    const CODES: [ErrorCode; 8] = [
        ErrorCode::None,
        ErrorCode::None,
        ErrorCode::None,
        ErrorCode::StaleMemberEpoch,
        ErrorCode::CoordinatorLoadInProgress,
        ErrorCode::NotCoordinator,
        ErrorCode::FencedMemberEpoch,
        ErrorCode::GroupAuthorizationFailed,
    ];
    const PARTS: usize = 4;

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0..PARTS, 1i64..5).prop_map(|(p, n)| Op::Done(p, n)),
            6 => Just(Op::Poll),
            6 => (0usize..4, 0..CODES.len()).prop_map(|(i, c)| Op::Answer(i, c)),
            1 => (0usize..4).prop_map(Op::NoAnswer),
            2 => Just(Op::Epoch),
            3 => (0..PARTS).prop_map(Op::Lose),
            4 => (0..PARTS).prop_map(Op::Assign),
            1 => (0..PARTS).prop_map(Op::Flush),
            2 => (0u64..1000).prop_map(Op::Advance),
            2 => Just(Op::Found),
        ]
    }

    /// What the test knows of each partition: the broker's committed offset, the
    /// highest offset finished in this process, and what was reported not committed.
    #[derive(Default)]
    struct Model {
        /// The committed offset as the tracker reported it, per partition (for "never
        /// backwards").
        committed: BTreeMap<usize, i64>,
        /// The highest offset finished per partition, in the partition's current
        /// tracking, not yet committed nor reported.
        owed: BTreeMap<usize, i64>,
    }

    fn part(p: usize) -> TopicPartition {
        tp(if p % 2 == 0 { "x" } else { "y" }, p as i32)
    }

    fn index(tp: &TopicPartition) -> usize {
        tp.partition as usize
    }

    struct Run {
        clock: Clock,
        t: CommitTracker,
        epoch: i32,
        /// The commits in flight, in the order sent.
        flights: Vec<Commit>,
        model: Model,
    }

    impl Run {
        fn new(committers: usize, unacked: usize, in_flight: usize) -> Run {
            let clock = Clock::new();
            let now = clock.now();
            let mut t = CommitTracker::new(
                config(GroupProtocol::Consumer)
                    .with_committers_count(committers)
                    .with_max_unacked_commits(unacked)
                    .with_commits_in_flight(in_flight),
            );
            t.set_member(now, MEMBER, 1);
            for p in 0..PARTS {
                t.assign(now, part(p), None);
            }
            Run { clock, t, epoch: 1, flights: Vec::new(), model: Model::default() }
        }

        fn settle_owed(&mut self, tp: &TopicPartition, to: i64) {
            let p = index(tp);
            if self.model.owed.get(&p).is_some_and(|o| *o <= to) {
                self.model.owed.remove(&p);
            }
        }

        fn drain(&mut self) -> Result<(), TestCaseError> {
            while let Some(e) = self.t.poll_event() {
                match e {
                    CommitEvent::Committed { offset } => {
                        let p = index(&offset.topic_partition());
                        let before = self.model.committed.insert(p, offset.offset);
                        prop_assert!(before.is_none_or(|b| b <= offset.offset), "{p}: {before:?} -> {}", offset.offset);
                        self.settle_owed(&offset.topic_partition(), offset.offset);
                    }
                    CommitEvent::Failed { uncommitted, .. } => {
                        if let Some(u) = uncommitted {
                            self.settle_owed(&u.partition, u.to);
                        }
                    }
                    CommitEvent::Flushed { committed, uncommitted, .. } => {
                        for (tp, _) in committed {
                            prop_assert!(
                                !self.model.owed.contains_key(&index(&tp)),
                                "{tp} flushed as committed with work owed"
                            );
                        }
                        for u in uncommitted {
                            self.settle_owed(&u.partition, u.to);
                        }
                    }
                    CommitEvent::FindCoordinator => {}
                }
            }
            Ok(())
        }

        fn check(&self) -> Result<(), TestCaseError> {
            // Never two commits in flight for one partition (a commit given up with
            // its partition is still on the wire until answered).
            let mut seen = HashMap::new();
            let mut connections = HashMap::new();
            for c in &self.flights {
                for (tp, _) in sent(c) {
                    prop_assert!(seen.insert(tp.clone(), c.id).is_none(), "{tp} in two commits in flight");
                }
                // A committer's connection carries one commit at a time, and it has
                // `commits_in_flight` of them.
                prop_assert!(
                    c.slot < self.t.config().commits_in_flight,
                    "slot {} of {}",
                    c.slot,
                    self.t.config().commits_in_flight
                );
                prop_assert!(
                    connections.insert((c.committer, c.slot), c.id).is_none(),
                    "two commits on one connection"
                );
            }
            for p in 0..PARTS {
                let tp = part(p);
                if let (Some(c), Some(m)) = (self.t.committed(&tp), self.model.committed.get(&p)) {
                    prop_assert!(c >= *m, "{tp}: committed went back from {m} to {c}");
                }
            }
            Ok(())
        }

        fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
            let now = self.clock.now();
            match *op {
                Op::Done(p, n) => {
                    let tp = part(p);
                    if self.t.partitions().contains(&tp) {
                        let from = self.t.pending(&tp).or(self.t.committed(&tp)).unwrap_or(0);
                        let to = from + n;
                        prop_assert!(self.t.done(now, &tp.at(to), None));
                        self.model.owed.insert(p, to);
                    }
                }
                Op::Poll => {
                    while let Some(c) = self.t.poll_commit(now, 9) {
                        prop_assert_eq!(c.request.generation_id_or_member_epoch, self.t.generation());
                        self.flights.push(c);
                    }
                }
                Op::Answer(i, c) => {
                    if !self.flights.is_empty() {
                        let commit = self.flights.remove(i % self.flights.len());
                        self.t.on_commit_response(now, commit.id, &answer(&commit, CODES[c]));
                    }
                }
                Op::NoAnswer(i) => {
                    if !self.flights.is_empty() {
                        let commit = self.flights.remove(i % self.flights.len());
                        self.t.on_commit_failed(now, commit.id);
                    }
                }
                Op::Epoch => {
                    self.epoch += 1;
                    self.t.set_member(now, MEMBER, self.epoch);
                }
                Op::Lose(p) => {
                    for u in self.t.lose(now, [part(p)]) {
                        self.settle_owed(&u.partition, u.to);
                    }
                }
                Op::Assign(p) => {
                    let tp = part(p);
                    if !self.t.partitions().contains(&tp) {
                        self.t.assign(now, tp, self.model.committed.get(&p).copied());
                    }
                }
                Op::Flush(p) => {
                    let _ = self.t.flush(now, [part(p)]);
                }
                Op::Advance(ms) => {
                    self.clock.advance(Duration::from_millis(ms));
                }
                Op::Found => self.t.coordinator_found(now),
            }
            self.drain()?;
            self.check()
        }

        /// Lets the run settle: every commit answered with success, the coordinator
        /// found, the backoffs passed, a new epoch for stale ones.
        fn quiesce(&mut self) -> Result<(), TestCaseError> {
            for _ in 0..50 {
                self.apply(&Op::Found)?;
                self.apply(&Op::Epoch)?;
                self.apply(&Op::Advance(BACKOFF_MAX.as_millis() as u64))?;
                self.apply(&Op::Poll)?;
                while !self.flights.is_empty() {
                    self.apply(&Op::Answer(0, 0))?;
                }
                if (0..PARTS).all(|p| self.t.pending(&part(p)).is_none()) {
                    break;
                }
            }
            Ok(())
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

        /// For any interleaving of finished work, answers, epochs, losses and flushes:
        /// committed offsets never go backwards, no partition is in two commits in
        /// flight, and every finished offset is in the end committed or reported as
        /// not committed.
        #[test]
        fn commits_keep_their_invariants(
            committers in 1usize..4,
            unacked in 0usize..3,
            in_flight in 1usize..4,
            ops in proptest::collection::vec(op(), 0..120),
        ) {
            let mut run = Run::new(committers, unacked, in_flight);
            for op in &ops {
                run.apply(op)?;
            }
            run.quiesce()?;
            prop_assert!(run.model.owed.is_empty(), "finished work neither committed nor reported: {:?}", run.model.owed);
            for p in 0..PARTS {
                let tp = part(p);
                if run.t.partitions().contains(&tp) {
                    prop_assert!(run.t.may_handle(&tp), "{tp}: a handler still waits with everything committed");
                }
            }
        }
    }

    #[derive(Debug, Clone)]
    enum FetchOp {
        Add(usize, usize),
        Remove(usize),
        Poll,
        /// Answer the fetch in flight: the group's code, then each partition's code
        /// and whether it has a committed offset.
        Answer(usize, Vec<(usize, bool)>),
        NoAnswer,
        Epoch,
        Advance(u64),
        Found,
    }

    const FETCH_CODES: [ErrorCode; 8] = [
        ErrorCode::None,
        ErrorCode::None,
        ErrorCode::None,
        ErrorCode::UnstableOffsetCommit,
        ErrorCode::StaleMemberEpoch,
        ErrorCode::NotCoordinator,
        ErrorCode::UnknownMemberId,
        ErrorCode::TopicAuthorizationFailed,
    ];
    const RESETS: [ResetPolicy; 3] = [ResetPolicy::Earliest, ResetPolicy::Latest, ResetPolicy::Error];

    fn fetch_op() -> impl Strategy<Value = FetchOp> {
        prop_oneof![
            3 => (0..PARTS, 0..RESETS.len()).prop_map(|(p, r)| FetchOp::Add(p, r)),
            1 => (0..PARTS).prop_map(FetchOp::Remove),
            4 => Just(FetchOp::Poll),
            4 => (0..FETCH_CODES.len(), proptest::collection::vec((0..FETCH_CODES.len(), any::<bool>()), PARTS))
                .prop_map(|(g, ps)| FetchOp::Answer(g, ps)),
            1 => Just(FetchOp::NoAnswer),
            1 => Just(FetchOp::Epoch),
            1 => (0u64..1000).prop_map(FetchOp::Advance),
            1 => Just(FetchOp::Found),
        ]
    }

    struct FetchRun {
        clock: Clock,
        f: OffsetFetcher,
        epoch: i32,
        flight: Option<OffsetFetch>,
        /// Partitions added, not removed, and not settled yet.
        waiting: BTreeMap<usize, ResetPolicy>,
    }

    impl FetchRun {
        fn apply(&mut self, op: &FetchOp) -> Result<(), TestCaseError> {
            let now = self.clock.now();
            match op {
                FetchOp::Add(p, r) => {
                    self.f.add(now, [(part(*p), RESETS[*r])]);
                    self.waiting.entry(*p).or_insert(RESETS[*r]);
                }
                FetchOp::Remove(p) => {
                    self.f.remove([&part(*p)]);
                    self.waiting.remove(p);
                }
                FetchOp::Poll => {
                    if let Some(fetch) = self.f.poll_fetch(now, 9) {
                        prop_assert!(self.flight.is_none(), "two fetches in flight");
                        prop_assert_eq!(fetch.request.groups[0].member_epoch, self.epoch);
                        self.flight = Some(fetch);
                    }
                }
                FetchOp::Answer(g, ps) => {
                    if let Some(fetch) = self.flight.take() {
                        let asked: Vec<TopicPartition> = fetch.request.groups[0]
                            .topics
                            .iter()
                            .flatten()
                            .flat_map(|t| t.partition_indexes.iter().map(|i| tp(&t.name, *i)))
                            .collect();
                        let parts: Vec<(TopicPartition, i64, i32, ErrorCode)> = asked
                            .into_iter()
                            .map(|t| {
                                let (c, committed) = ps[index(&t)];
                                (t, if committed { 7 } else { -1 }, 2, FETCH_CODES[c])
                            })
                            .collect();
                        let code = if *g < 5 { ErrorCode::None } else { FETCH_CODES[*g] };
                        self.f.on_fetch_response(now, fetch.id, &fetch_answer(code, &parts));
                    }
                }
                FetchOp::NoAnswer => {
                    if let Some(fetch) = self.flight.take() {
                        self.f.on_fetch_failed(now, fetch.id);
                    }
                }
                FetchOp::Epoch => {
                    self.epoch += 1;
                    self.f.set_member(now, MEMBER, self.epoch);
                }
                FetchOp::Advance(ms) => {
                    self.clock.advance(Duration::from_millis(*ms));
                }
                FetchOp::Found => self.f.coordinator_found(now),
            }
            while let Some(e) = self.f.poll_event() {
                let (p, ok) = match &e {
                    FetchEvent::Start { partition, start } => {
                        let p = index(partition);
                        let reset = self.waiting.get(&p).copied();
                        prop_assert!(reset.is_some(), "{partition} started without being asked for");
                        if let StartPosition::Committed { offset, .. } = start {
                            prop_assert_eq!((offset.offset, offset.last_epoch), (7, Some(2)));
                        } else {
                            prop_assert!(reset != Some(ResetPolicy::Error), "{partition}: reset policy error ignored");
                        }
                        (p, true)
                    }
                    FetchEvent::Failed(error) => (index(error.partition()), false),
                    FetchEvent::FindCoordinator => continue,
                };
                prop_assert!(self.waiting.remove(&p).is_some(), "{p} settled twice or unasked ({ok})");
            }
            Ok(())
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

        /// For any interleaving, one fetch is in flight at most, each partition asked
        /// for is settled once (a start or an error), and in the end none is left
        /// waiting.
        #[test]
        fn fetches_settle_each_partition_once(ops in proptest::collection::vec(fetch_op(), 0..80)) {
            let clock = Clock::new();
            let mut f = OffsetFetcher::new(config(GroupProtocol::Consumer));
            f.set_member(clock.now(), MEMBER, 1);
            let mut run = FetchRun { clock, f, epoch: 1, flight: None, waiting: BTreeMap::new() };
            for op in &ops {
                run.apply(op)?;
            }
            for _ in 0..20 {
                run.apply(&FetchOp::Found)?;
                run.apply(&FetchOp::Epoch)?;
                run.apply(&FetchOp::Advance(BACKOFF_MAX.as_millis() as u64))?;
                run.apply(&FetchOp::Poll)?;
                run.apply(&FetchOp::Answer(0, vec![(0, true); PARTS]))?;
            }
            prop_assert!(run.waiting.is_empty(), "never settled: {:?}", run.waiting);
            prop_assert!(run.f.waiting().is_empty());
        }
    }
}
