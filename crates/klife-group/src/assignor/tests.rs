//! Table and property tests of the assignors.

use proptest::prelude::*;

use super::*;

fn tp(topic: &str, partition: i32) -> TopicPartition {
    TopicPartition::new(topic, partition)
}

fn member(id: &str, topics: &[&str]) -> MemberSubscription {
    MemberSubscription {
        member_id: id.into(),
        instance_id: None,
        subscription: Subscription::new(topics.iter().copied()),
    }
}

fn owning(mut m: MemberSubscription, owned: &[TopicPartition], generation: i32) -> MemberSubscription {
    m.subscription = m.subscription.with_owned_partitions(owned.iter().cloned()).with_generation_id(Some(generation));
    m
}

fn input(members: Vec<MemberSubscription>, counts: &[(&str, i32)]) -> AssignorInput {
    AssignorInput { members, partition_counts: counts.iter().map(|(t, n)| (t.to_string(), *n)).collect() }
}

fn parts(a: &GroupAssignment, id: &str) -> Vec<TopicPartition> {
    a[id].iter().cloned().collect()
}

#[test]
fn range_gives_ranges_per_topic() {
    let i = input(vec![member("c1", &["t0", "t1"]), member("c0", &["t0", "t1"])], &[("t0", 3), ("t1", 3)]);
    let a = RangeAssignor.assign(&i);
    assert_eq!(parts(&a, "c0"), vec![tp("t0", 0), tp("t0", 1), tp("t1", 0), tp("t1", 1)]);
    assert_eq!(parts(&a, "c1"), vec![tp("t0", 2), tp("t1", 2)]);
}

#[test]
fn round_robin_deals_in_turn_and_skips_non_subscribers() {
    let i = input(vec![member("c0", &["t0", "t1"]), member("c1", &["t0", "t1"])], &[("t0", 3), ("t1", 3)]);
    let a = RoundRobinAssignor.assign(&i);
    assert_eq!(parts(&a, "c0"), vec![tp("t0", 0), tp("t0", 2), tp("t1", 1)]);
    assert_eq!(parts(&a, "c1"), vec![tp("t0", 1), tp("t1", 0), tp("t1", 2)]);

    let i = input(vec![member("c0", &["t0"]), member("c1", &["t0", "t1"])], &[("t0", 1), ("t1", 2)]);
    let a = RoundRobinAssignor.assign(&i);
    assert_eq!(parts(&a, "c0"), vec![tp("t0", 0)]);
    assert_eq!(parts(&a, "c1"), vec![tp("t1", 0), tp("t1", 1)]);
}

#[test]
fn static_members_are_ordered_by_instance_id() {
    let mut a = member("zzz", &["t"]);
    a.instance_id = Some("a".into());
    let b = member("aaa", &["t"]);
    let out = RangeAssignor.assign(&input(vec![b, a], &[("t", 2)]));
    assert_eq!(parts(&out, "zzz"), vec![tp("t", 0)]);
}

#[test]
fn cooperative_sticky_moves_in_two_rebalances() {
    let owned_a = [tp("t", 0), tp("t", 1), tp("t", 2)];
    let owned_b = [tp("t", 3), tp("t", 4), tp("t", 5)];
    let i = input(
        vec![owning(member("a", &["t"]), &owned_a, 1), owning(member("b", &["t"]), &owned_b, 1), member("c", &["t"])],
        &[("t", 6)],
    );
    let first = CooperativeStickyAssignor.assign(&i);
    // a and b each give one up; c gets nothing yet.
    assert_eq!(parts(&first, "a"), vec![tp("t", 0), tp("t", 1)]);
    assert_eq!(parts(&first, "b"), vec![tp("t", 3), tp("t", 4)]);
    assert!(first["c"].is_empty());

    let i = input(
        vec![
            owning(member("a", &["t"]), &parts(&first, "a"), 2),
            owning(member("b", &["t"]), &parts(&first, "b"), 2),
            member("c", &["t"]),
        ],
        &[("t", 6)],
    );
    let second = CooperativeStickyAssignor.assign(&i);
    assert_eq!(parts(&second, "a"), vec![tp("t", 0), tp("t", 1)]);
    assert_eq!(parts(&second, "b"), vec![tp("t", 3), tp("t", 4)]);
    assert_eq!(parts(&second, "c"), vec![tp("t", 2), tp("t", 5)]);
}

#[test]
fn cooperative_sticky_settles_conflicting_claims_by_generation() {
    let i = input(
        vec![owning(member("a", &["t"]), &[tp("t", 0)], 3), owning(member("b", &["t"]), &[tp("t", 0)], 2)],
        &[("t", 2)],
    );
    let a = CooperativeStickyAssignor.assign(&i);
    assert_eq!(parts(&a, "a"), vec![tp("t", 0)]);
    assert_eq!(parts(&a, "b"), vec![tp("t", 1)]);
}

#[test]
fn cooperative_sticky_frees_topics_no_longer_subscribed() {
    // a owned u-0 but now subscribes to t only: u-0 goes to b, in the next rebalance.
    let i = input(vec![owning(member("a", &["t"]), &[tp("u", 0)], 1), member("b", &["t", "u"])], &[("t", 2), ("u", 1)]);
    let first = CooperativeStickyAssignor.assign(&i);
    assert!(first.values().all(|s| !s.contains(&tp("u", 0))));
    let i = input(
        vec![member("a", &["t"]), owning(member("b", &["t", "u"]), &parts(&first, "b"), 2)],
        &[("t", 2), ("u", 1)],
    );
    let second = CooperativeStickyAssignor.assign(&i);
    assert!(second["b"].contains(&tp("u", 0)));
}

const TOPICS: [&str; 3] = ["t0", "t1", "t2"];

/// Members (ids m0..), each subscribing to a non-empty subset of the topics and
/// claiming some partitions, and the partition counts.
fn arb_input() -> impl Strategy<Value = AssignorInput> {
    (
        prop::collection::vec((1u8..8, prop::collection::vec((0usize..3, 0i32..6), 0..6), 0..3i32), 1..6),
        prop::collection::vec(0..7i32, 3),
    )
        .prop_map(|(members, counts)| {
            let members = members
                .into_iter()
                .enumerate()
                .map(|(i, (mask, owned, generation))| {
                    let topics: Vec<&str> = (0..3).filter(|b| mask & (1 << b) != 0).map(|b| TOPICS[b]).collect();
                    let owned: Vec<_> = owned.into_iter().map(|(t, p)| tp(TOPICS[t], p)).collect();
                    owning(member(&format!("m{i}"), &topics), &owned, generation)
                })
                .collect();
            AssignorInput {
                members,
                partition_counts: TOPICS.iter().zip(counts).map(|(t, n)| (t.to_string(), n)).collect(),
            }
        })
}

/// Each partition to at most one member, and only to one that subscribes to its topic.
fn check_exclusive(input: &AssignorInput, a: &GroupAssignment) -> Result<(), TestCaseError> {
    let mut seen = BTreeSet::new();
    for m in &input.members {
        for tp in &a[&m.member_id] {
            prop_assert!(subscribes(m, &tp.topic), "{tp} given to {} which does not subscribe", m.member_id);
            prop_assert!(input.partitions(&tp.topic).any(|p| p == *tp), "{tp} does not exist");
            prop_assert!(seen.insert(tp.clone()), "{tp} given twice");
        }
    }
    Ok(())
}

/// Every partition of a subscribed topic is given.
fn check_complete(input: &AssignorInput, a: &GroupAssignment) -> Result<(), TestCaseError> {
    let given: BTreeSet<_> = a.values().flatten().collect();
    for t in subscribed_topics(input) {
        for tp in input.partitions(t) {
            prop_assert!(given.contains(&tp), "{tp} not given");
        }
    }
    Ok(())
}

/// No member has two more than one that subscribes to the topic of one of them.
fn check_balanced(input: &AssignorInput, a: &GroupAssignment) -> Result<(), TestCaseError> {
    for m in &input.members {
        for n in &input.members {
            let (mine, theirs) = (&a[&m.member_id], &a[&n.member_id]);
            if mine.len() > theirs.len() + 1 {
                prop_assert!(
                    mine.iter().all(|tp| !subscribes(n, &tp.topic)),
                    "{} has {} and {} only {}",
                    m.member_id,
                    mine.len(),
                    n.member_id,
                    theirs.len()
                );
            }
        }
    }
    Ok(())
}

/// The input with each member owning what `a` gave it, at `generation`.
fn next_round(input: &AssignorInput, a: &GroupAssignment, generation: i32) -> AssignorInput {
    let mut next = input.clone();
    for m in &mut next.members {
        m.subscription = m
            .subscription
            .clone()
            .with_owned_partitions(a[&m.member_id].iter().cloned())
            .with_generation_id(Some(generation));
    }
    next
}

proptest! {
    #[test]
    fn range_and_round_robin_are_complete_and_exclusive(input in arb_input()) {
        for assignor in [&RangeAssignor as &dyn Assignor, &RoundRobinAssignor] {
            let a = assignor.assign(&input);
            check_exclusive(&input, &a)?;
            check_complete(&input, &a)?;
            let mut shuffled = input.clone();
            shuffled.members.reverse();
            prop_assert_eq!(assignor.assign(&shuffled), a, "deterministic");
        }
    }

    #[test]
    fn round_robin_is_balanced_for_one_subscription(n in 1usize..6, count in 0..20i32) {
        let input = input((0..n).map(|i| member(&format!("m{i}"), &["t0"])).collect(), &[("t0", count)]);
        let a = RoundRobinAssignor.assign(&input);
        let sizes: Vec<_> = a.values().map(BTreeSet::len).collect();
        prop_assert!(sizes.iter().max() <= sizes.iter().min().map(|m| m + 1).as_ref());
    }

    #[test]
    fn cooperative_sticky_is_cooperative_and_settles_complete_balanced_and_sticky(input in arb_input()) {
        let mut round = input.clone();
        let mut settled = None;
        for generation in 10..18 {
            let a = CooperativeStickyAssignor.assign(&round);
            check_exclusive(&round, &a)?;
            // Cooperative: nothing a member claims is given to a new owner in the same
            // rebalance.
            for m in &round.members {
                for tp in a[&m.member_id].iter().filter(|tp| !m.subscription.owned_partitions.contains(tp)) {
                    for other in &round.members {
                        if other.member_id != m.member_id {
                            prop_assert!(!other.subscription.owned_partitions.contains(tp),
                                "{tp} given to {} while {} owns it", m.member_id, other.member_id);
                        }
                    }
                }
            }
            let unchanged = round.members.iter().all(|m| {
                m.subscription.owned_partitions.iter().collect::<BTreeSet<_>>() == a[&m.member_id].iter().collect()
            });
            if unchanged && generation > 10 {
                settled = Some(a);
                break;
            }
            round = next_round(&round, &a, generation);
        }
        // Sticky: the members keep what they own once the group has settled, and it
        // settles within a few rebalances, complete and balanced.
        let Some(settled) = settled else { return Err(TestCaseError::fail("no settled assignment after 8 rebalances")) };
        check_complete(&round, &settled)?;
        check_balanced(&round, &settled)?;
        let mut shuffled = input.clone();
        shuffled.members.reverse();
        prop_assert_eq!(CooperativeStickyAssignor.assign(&shuffled), CooperativeStickyAssignor.assign(&input), "deterministic");
    }

    #[test]
    fn cooperative_sticky_settles_in_two_rebalances_for_one_subscription(
        input in arb_input().prop_map(|mut i| {
            for m in &mut i.members { m.subscription.topics = TOPICS.iter().map(|t| t.to_string()).collect(); }
            i
        }),
    ) {
        let first = CooperativeStickyAssignor.assign(&input);
        let second_input = next_round(&input, &first, 10);
        let second = CooperativeStickyAssignor.assign(&second_input);
        for m in &second_input.members {
            prop_assert!(first[&m.member_id].is_subset(&second[&m.member_id]), "nothing moves in the second rebalance");
        }
        check_complete(&second_input, &second)?;
        let sizes: Vec<_> = second.values().map(BTreeSet::len).collect();
        prop_assert!(sizes.iter().max() <= sizes.iter().min().map(|m| m + 1).as_ref());
        prop_assert_eq!(CooperativeStickyAssignor.assign(&next_round(&second_input, &second, 11)), second);
    }
}
