//! Admin for consumer groups on the facade: list, describe, committed offsets and lag,
//! offset resets, deletion of groups and of committed offsets.
//!
//! - A running group (KIP-848 and classic) is listed with its type and state, and
//!   described with every member, its client id and host, and assignments that cover
//!   every partition once.
//! - Lag is the end offset less the committed offset, per partition, with the owner.
//! - Offsets are reset only while the group has no members: a plan (dry run) writes
//!   nothing, to earliest, latest, an offset (clamped), a shift (clamped) and a
//!   timestamp; the reset then writes the plan.
//! - Deleting a group with members is refused; an unknown group is not found; offsets
//!   of a topic a running group subscribes to are not deleted.
//!
//! Kafka and klife-testkit run them. No case asserts on time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use klife::group::GroupProtocol;
use klife::{GroupState, GroupType, ResetScope, ResetTo, TopicPartition};
use klife_conformance::groups::{HANG_GUARD, Log, recording_member, topic_with, until_committed};
use klife_conformance::{Broker, unique_topic};

klife_conformance::against_brokers!(
    [kafka: Kafka, testkit: Testkit]
    a_running_group_is_listed_and_described,
    classic_a_running_group_is_listed_and_described,
    lag_is_the_end_less_the_commit,
    offsets_are_reset_only_while_the_group_is_empty,
    unknown_groups_are_not_found,
    groups_with_members_are_not_deleted,
    committed_offsets_of_a_subscribed_topic_are_kept,
);

/// Waits until describing the group shows `members` members whose assignments cover
/// `partitions` partitions once, in state Stable.
async fn until_stable(
    client: &klife::Client,
    group: &str,
    members: usize,
    partitions: usize,
) -> klife::GroupDescription {
    tokio::time::timeout(HANG_GUARD, async {
        loop {
            if let Ok(d) = client.describe_group(group).await {
                let owned: usize = d.members.iter().map(|m| m.assignment.len()).sum();
                if d.state == GroupState::Stable && d.members.len() == members && owned == partitions {
                    return d;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("hung waiting for {group} to be stable with {members} members"))
}

async fn described(broker: Broker, protocol: GroupProtocol) {
    let client = broker.client().await;
    let topic = topic_with(broker, &client, "adm-desc", 4, 3).await;
    let group = unique_topic("adm-desc-g");
    let log = Log::default();
    let a = recording_member(broker, &client, &group, &topic, protocol, 0, &log).await;
    let b = recording_member(broker, &client, &group, &topic, protocol, 1, &log).await;
    let d = until_stable(&client, &group, 2, 4).await;

    let want_type = if protocol == GroupProtocol::Classic { GroupType::Classic } else { GroupType::Consumer };
    assert_eq!(d.group_type, want_type);
    assert_eq!(d.protocol_type, "consumer");
    assert!(!d.assignor.is_empty(), "an assignor is named: {d:?}");
    assert!(d.coordinator >= 0);
    let mut all = BTreeSet::new();
    for m in &d.members {
        assert!(!m.member_id.is_empty());
        assert!(!m.client_id.is_empty(), "{m:?}");
        assert!(m.client_host.contains("127.0.0.1"), "{m:?}");
        assert_eq!(m.subscribed_topics, vec![topic.clone()]);
        for tp in &m.assignment {
            assert!(all.insert(tp.clone()), "{tp} assigned twice: {d:?}");
        }
        if protocol == GroupProtocol::Classic {
            assert_eq!(m.member_epoch, None);
        } else {
            assert!(m.member_epoch.is_some_and(|e| e > 0), "{m:?}");
            assert_eq!(m.target_assignment.as_ref(), Some(&m.assignment), "stable: target reached");
        }
    }
    let want: BTreeSet<TopicPartition> = (0..4).map(|p| TopicPartition::new(topic.as_str(), p)).collect();
    assert_eq!(all, want);
    if protocol == GroupProtocol::Consumer {
        assert!(d.epoch.is_some_and(|e| e > 0));
    }

    let listed = client.list_groups().await.unwrap();
    let ours = listed.iter().find(|g| g.group_id == group).unwrap_or_else(|| panic!("{group} listed: {listed:?}"));
    assert_eq!(ours.group_type, want_type);
    assert_eq!(ours.state, Some(GroupState::Stable));
    assert_eq!(ours.coordinator, d.coordinator);
    let ids: Vec<&str> = listed.iter().map(|g| g.group_id.as_str()).collect();
    let mut sorted_ids = ids.clone();
    sorted_ids.sort_unstable();
    assert_eq!(ids, sorted_ids, "sorted by id");

    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    let d = client.describe_group(&group).await.unwrap();
    assert_eq!(d.state, GroupState::Empty);
    assert!(d.members.is_empty());
}

async fn a_running_group_is_listed_and_described(broker: Broker) {
    described(broker, GroupProtocol::Consumer).await;
}

async fn classic_a_running_group_is_listed_and_described(broker: Broker) {
    described(broker, GroupProtocol::Classic).await;
}

async fn lag_is_the_end_less_the_commit(broker: Broker) {
    let client = broker.client().await;
    let topic = topic_with(broker, &client, "adm-lag", 3, 10).await;
    let group = unique_topic("adm-lag-g");
    // Offsets 4, 0 and nothing: an admin commit on a group that does not exist yet.
    let plan = client
        .plan_offset_reset(
            &group,
            ResetScope::Partitions(vec![TopicPartition::new(topic.as_str(), 0)]),
            ResetTo::Offset(4),
        )
        .await
        .unwrap();
    for (tp, r) in client.reset_offsets(&plan).await.unwrap() {
        r.unwrap_or_else(|e| panic!("{tp}: {e}"));
    }
    let plan = client
        .plan_offset_reset(
            &group,
            ResetScope::Partitions(vec![TopicPartition::new(topic.as_str(), 1)]),
            ResetTo::Earliest,
        )
        .await
        .unwrap();
    client.reset_offsets(&plan).await.unwrap().into_iter().for_each(|(_, r)| r.unwrap());

    let lag = client.group_lag(&group).await.unwrap();
    type Row = (i32, Option<i64>, Option<i64>, Option<i64>);
    let rows: Vec<Row> = lag.iter().map(|l| (l.topic_partition.partition, l.committed, l.end_offset, l.lag)).collect();
    assert_eq!(rows, vec![(0, Some(4), Some(10), Some(6)), (1, Some(0), Some(10), Some(10))]);
    assert!(lag.iter().all(|l| l.owner.is_none()));

    // A running member owns every partition and commits everything.
    let log = Log::default();
    let g = recording_member(broker, &client, &group, &topic, GroupProtocol::Consumer, 0, &log).await;
    until_committed(&client, &group, &topic, &[10, 10, 10]).await;
    let lag = client.group_lag(&group).await.unwrap();
    assert_eq!(lag.len(), 3, "{lag:?}");
    for l in &lag {
        assert_eq!((l.committed, l.end_offset, l.lag), (Some(10), Some(10), Some(0)), "{l:?}");
        assert!(
            l.owner.as_ref().is_some_and(|(member, client_id, _)| !member.is_empty() && !client_id.is_empty()),
            "{l:?}"
        );
    }
    g.shutdown().await.unwrap();
}

async fn offsets_are_reset_only_while_the_group_is_empty(broker: Broker) {
    let client = broker.client().await;
    let topic = topic_with(broker, &client, "adm-reset", 2, 10).await;
    let group = unique_topic("adm-reset-g");
    let log = Log::default();
    let g = recording_member(broker, &client, &group, &topic, GroupProtocol::Consumer, 0, &log).await;
    until_committed(&client, &group, &topic, &[10, 10]).await;

    let refused = client.plan_offset_reset(&group, ResetScope::AllCommitted, ResetTo::Earliest).await.unwrap_err();
    assert!(refused.is_group_not_empty(), "{refused}");
    assert!(refused.to_string().contains("stop its consumers first"), "{refused}");
    g.shutdown().await.unwrap();

    let scope = || ResetScope::Topics(vec![topic.clone()]);
    let planned = |plan: &klife::ResetPlan| -> Vec<(Option<i64>, i64)> {
        plan.partitions.iter().map(|p| (p.current, p.new_offset)).collect()
    };
    let plan = client.plan_offset_reset(&group, scope(), ResetTo::Earliest).await.unwrap();
    assert_eq!(planned(&plan), vec![(Some(10), 0), (Some(10), 0)]);
    assert_eq!(
        client.group_lag(&group).await.unwrap().iter().map(|l| l.committed).collect::<Vec<_>>(),
        vec![Some(10), Some(10)],
        "a plan writes nothing"
    );

    let plan = client.plan_offset_reset(&group, scope(), ResetTo::Offset(25)).await.unwrap();
    assert_eq!(planned(&plan), vec![(Some(10), 10), (Some(10), 10)], "clamped to the end");
    let plan = client.plan_offset_reset(&group, scope(), ResetTo::ShiftBy(-3)).await.unwrap();
    assert_eq!(planned(&plan), vec![(Some(10), 7), (Some(10), 7)]);
    let plan = client.plan_offset_reset(&group, scope(), ResetTo::ShiftBy(-30)).await.unwrap();
    assert_eq!(planned(&plan), vec![(Some(10), 0), (Some(10), 0)], "clamped to the start");
    let plan = client.plan_offset_reset(&group, scope(), ResetTo::Timestamp(0)).await.unwrap();
    assert_eq!(planned(&plan), vec![(Some(10), 0), (Some(10), 0)], "every record is after time 0");
    let plan = client.plan_offset_reset(&group, scope(), ResetTo::Timestamp(i64::MAX / 2)).await.unwrap();
    assert_eq!(planned(&plan), vec![(Some(10), 10), (Some(10), 10)], "no record that late: the end");

    let plan = client.plan_offset_reset(&group, ResetScope::AllCommitted, ResetTo::ShiftBy(-4)).await.unwrap();
    let written = client.reset_offsets(&plan).await.unwrap();
    assert!(written.iter().all(|(_, r)| r.is_ok()), "{written:?}");
    let committed: Vec<(i32, i64)> =
        client.group_committed_offsets(&group).await.unwrap().into_iter().map(|(tp, o, _)| (tp.partition, o)).collect();
    assert_eq!(committed, vec![(0, 6), (1, 6)]);

    // The next member starts at the reset offsets.
    let log = Log::default();
    let g = recording_member(broker, &client, &group, &topic, GroupProtocol::Consumer, 0, &log).await;
    log.until("the records after the reset", |s| s.handled.len() == 8).await;
    log.read(|s| {
        for p in 0..2 {
            let first = s.handled.keys().filter(|(q, _)| *q == p).map(|(_, o)| *o).min();
            assert_eq!(first, Some(6), "partition {p} starts at the reset offset");
        }
    });
    g.shutdown().await.unwrap();

    // Bad scopes.
    let unknown = client
        .plan_offset_reset(
            &group,
            ResetScope::Partitions(vec![TopicPartition::new(topic.as_str(), 7)]),
            ResetTo::Latest,
        )
        .await
        .unwrap_err();
    assert!(unknown.is_unknown_topic_or_partition(), "{unknown}");
    let empty = client
        .plan_offset_reset(&unique_topic("adm-none"), ResetScope::AllCommitted, ResetTo::Latest)
        .await
        .unwrap_err();
    assert!(empty.is_invalid_argument(), "{empty}");
    assert!(empty.to_string().contains("no committed offsets"), "{empty}");
    let missing_topic = client
        .plan_offset_reset(&group, ResetScope::Topics(vec![unique_topic("adm-missing")]), ResetTo::Latest)
        .await
        .unwrap_err();
    assert!(missing_topic.is_unknown_topic_or_partition(), "{missing_topic}");
}

async fn unknown_groups_are_not_found(broker: Broker) {
    let client = broker.client().await;
    let group = unique_topic("adm-unknown-g");
    let e = client.describe_group(&group).await.unwrap_err();
    assert!(e.is_group_not_found(), "{e}");
    let e = client.group_lag(&group).await.unwrap_err();
    assert!(e.is_group_not_found(), "{e}");
    let deleted = client.delete_groups(&[group.as_str()]).await.unwrap();
    assert_eq!(deleted.len(), 1);
    let e = deleted[0].1.as_ref().unwrap_err();
    assert!(e.is_group_not_found(), "{e}");
    let e = client.delete_group_offsets(&group, &[TopicPartition::new("whatever", 0)]).await.unwrap_err();
    assert!(e.is_group_not_found(), "{e}");
    assert!(!client.list_groups().await.unwrap().iter().any(|g| g.group_id == group));
}

async fn groups_with_members_are_not_deleted(broker: Broker) {
    let client = broker.client().await;
    let topic = topic_with(broker, &client, "adm-del", 2, 5).await;
    let group = unique_topic("adm-del-g");
    let log = Log::default();
    let g = recording_member(broker, &client, &group, &topic, GroupProtocol::Consumer, 0, &log).await;
    until_committed(&client, &group, &topic, &[5, 5]).await;
    let refused = client.delete_groups(&[group.as_str()]).await.unwrap();
    let e = refused[0].1.as_ref().unwrap_err();
    assert!(e.is_group_not_empty(), "{e}");
    g.shutdown().await.unwrap();

    let deleted = client.delete_groups(&[group.as_str()]).await.unwrap();
    assert!(deleted[0].1.is_ok(), "{deleted:?}");
    let e = client.describe_group(&group).await.unwrap_err();
    assert!(e.is_group_not_found(), "{e}");
    assert!(client.group_committed_offsets(&group).await.unwrap().is_empty(), "its offsets went with it");
}

async fn committed_offsets_of_a_subscribed_topic_are_kept(broker: Broker) {
    let client = broker.client().await;
    let topic = topic_with(broker, &client, "adm-offdel", 2, 5).await;
    let group = unique_topic("adm-offdel-g");
    let log = Log::default();
    let g = recording_member(broker, &client, &group, &topic, GroupProtocol::Consumer, 0, &log).await;
    until_committed(&client, &group, &topic, &[5, 5]).await;
    let p0 = TopicPartition::new(topic.as_str(), 0);
    let kept = client.delete_group_offsets(&group, std::slice::from_ref(&p0)).await.unwrap();
    let e = kept[0].1.as_ref().unwrap_err();
    assert_eq!(e.error_code(), Some(klife::protocol::ErrorCode::GroupSubscribedToTopic), "{e}");
    g.shutdown().await.unwrap();

    let deleted = client.delete_group_offsets(&group, std::slice::from_ref(&p0)).await.unwrap();
    assert!(deleted[0].1.is_ok(), "{deleted:?}");
    let left: Vec<i32> =
        client.group_committed_offsets(&group).await.unwrap().into_iter().map(|(tp, _, _)| tp.partition).collect();
    assert_eq!(left, vec![1]);
}
