//! Tests of the acknowledgement tracker: a table of refused calls, the commit point
//! through gaps, skips, epochs and releases, and property tests against a model.

use proptest::prelude::*;

use super::*;

fn tp(partition: i32) -> TopicPartition {
    TopicPartition::new("orders", partition)
}

fn window_len(t: &AckTracker, partition: &TopicPartition) -> usize {
    t.partitions.get(partition).map_or(0, |p| p.window.len())
}

#[test]
fn refused_calls_are_typed_and_change_nothing() {
    type Setup = fn(&mut AckTracker) -> Result<(), AckError>;
    let cases: Vec<(&str, Setup, AckError)> = vec![
        (
            "the same offset twice",
            |t| t.deliver(&tp(0), 5, None).map(drop),
            AckError::OffsetNotIncreasing { partition: tp(0), offset: 5, last: 5 },
        ),
        (
            "a lower offset",
            |t| t.deliver(&tp(0), 4, None).map(drop),
            AckError::OffsetNotIncreasing { partition: tp(0), offset: 4, last: 5 },
        ),
        (
            "a negative offset",
            |t| t.deliver(&tp(1), -1, None).map(drop),
            AckError::InvalidOffset { partition: tp(1), offset: -1 },
        ),
        (
            "the largest i64",
            |t| t.deliver(&tp(1), i64::MAX, None).map(drop),
            AckError::InvalidOffset { partition: tp(1), offset: i64::MAX },
        ),
        (
            "a skip below the last delivery",
            |t| t.skip_to(&tp(0), 5, None),
            AckError::OffsetNotIncreasing { partition: tp(0), offset: 4, last: 5 },
        ),
        (
            "a skip to offset 0",
            |t| t.skip_to(&tp(1), 0, None),
            AckError::InvalidOffset { partition: tp(1), offset: -1 },
        ),
        (
            "a second ack inside the window",
            |t| {
                let d = t.deliver(&tp(0), 9, None)?;
                t.ack(&d)?;
                t.ack(&d)
            },
            AckError::AlreadyAcked { partition: tp(0), offset: 9 },
        ),
        (
            "a second ack of the committed prefix",
            |t| {
                let d = t.deliver(&tp(1), 0, None)?;
                t.ack(&d)?;
                t.ack(&d)
            },
            AckError::AlreadyAcked { partition: tp(1), offset: 0 },
        ),
        (
            "an ack after the release",
            |t| {
                let d = t.deliver(&tp(1), 3, None)?;
                t.release(&tp(1));
                t.ack(&d)
            },
            AckError::Stale { partition: tp(1), offset: 3 },
        ),
        (
            "an ack after the release and a new delivery of the same offset",
            |t| {
                let old = t.deliver(&tp(1), 3, None)?;
                t.release(&tp(1));
                t.deliver(&tp(1), 3, None)?;
                t.ack(&old)
            },
            AckError::Stale { partition: tp(1), offset: 3 },
        ),
        (
            "another tracker's delivery",
            |t| {
                let mut other = AckTracker::new();
                let d = other.deliver(&tp(0), 5, None)?;
                t.ack(&d)
            },
            AckError::Stale { partition: tp(0), offset: 5 },
        ),
    ];
    for (name, setup, expected) in cases {
        let mut t = AckTracker::new();
        let five = t.deliver(&tp(0), 5, None).expect("first delivery");
        let before = (t.unacked(&tp(0)), t.commit_point(&tp(0)), window_len(&t, &tp(0)));
        assert_eq!(setup(&mut t), Err(expected), "{name}");
        // Whatever the case did before failing, offset 5 of partition 0 is untouched.
        assert_eq!((t.unacked(&tp(0)), t.commit_point(&tp(0))), (before.0, before.1), "{name}");
        t.ack(&five).expect("offset 5 still pending");
    }
}

#[test]
fn errors_say_what_was_refused() {
    let e = AckError::OffsetNotIncreasing { partition: tp(2), offset: 4, last: 7 };
    assert_eq!(e.to_string(), "offset 4 of orders-2 delivered after offset 7: offsets must increase");
    let e = AckError::Stale { partition: tp(2), offset: 4 };
    assert_eq!(e.to_string(), "offset 4 of orders-2 belongs to a partition released since");
}

#[test]
fn the_commit_follows_the_contiguous_prefix_through_gaps() {
    let mut t = AckTracker::new();
    let d: Vec<Delivery> =
        [10, 11, 14, 15, 20].iter().map(|o| t.deliver(&tp(0), *o, None).expect("delivered")).collect();
    t.ack(&d[1]).expect("ack 11");
    t.ack(&d[3]).expect("ack 15");
    assert_eq!(t.take_commits(), vec![]);
    assert_eq!(t.unacked(&tp(0)), 3);
    t.ack(&d[0]).expect("ack 10");
    assert_eq!(t.take_commits(), vec![tp(0).at(12)]);
    assert_eq!(t.take_commits(), vec![], "a commit point is reported once");
    t.ack(&d[2]).expect("ack 14");
    assert_eq!(t.commit_point(&tp(0)), Some(16));
    assert_eq!(window_len(&t, &tp(0)), 1, "only offset 20 is kept");
    t.ack(&d[4]).expect("ack 20");
    assert_eq!(t.take_commits(), vec![tp(0).at(21)]);
    assert!(t.is_drained(&tp(0)));
    assert_eq!(window_len(&t, &tp(0)), 0);
}

#[test]
fn commits_are_sorted_and_carry_the_leader_epoch() {
    let mut t = AckTracker::new();
    let b = TopicPartition::new("billing", 3);
    let d2 = t.deliver(&tp(2), 0, Some(4)).expect("delivered");
    let d0 = t.deliver(&tp(0), 7, None).expect("delivered");
    let db = t.deliver(&b, 1, Some(9)).expect("delivered");
    for d in [&d2, &d0, &db] {
        t.ack(d).expect("acked");
    }
    assert_eq!(t.take_commits(), vec![b.at(2).with_last_epoch(9), tp(0).at(8), tp(2).at(1).with_last_epoch(4)]);
}

#[test]
fn a_skip_moves_the_commit_past_offsets_without_records_once_drained() {
    let mut t = AckTracker::new();
    let d = t.deliver(&tp(0), 3, Some(1)).expect("delivered");
    t.skip_to(&tp(0), 4, Some(1)).expect("one past the last delivery is a no-op");
    t.skip_to(&tp(0), 6, Some(2)).expect("offsets 4 and 5 are markers");
    assert_eq!(t.take_commits(), vec![], "offset 3 is not acknowledged");
    assert_eq!(t.unacked(&tp(0)), 1);
    t.ack(&d).expect("acked");
    assert_eq!(t.take_commits(), vec![tp(0).at(6).with_last_epoch(2)]);
    assert_eq!(t.deliver(&tp(0), 5, None), Err(AckError::OffsetNotIncreasing { partition: tp(0), offset: 5, last: 5 }));
    // A partition whose first fetch held only markers.
    t.skip_to(&tp(1), 40, None).expect("skipped");
    assert_eq!(t.take_commits(), vec![tp(1).at(40)]);
    assert!(t.is_drained(&tp(1)));
}

#[test]
fn release_reports_unacked_records_and_an_untaken_commit() {
    let mut t = AckTracker::new();
    let d: Vec<Delivery> = (0..4).map(|o| t.deliver(&tp(0), o, None).expect("delivered")).collect();
    t.ack(&d[0]).expect("acked");
    t.ack(&d[2]).expect("acked");
    assert_eq!(t.release(&tp(0)), Some(Released { unacked: 2, untaken_commit: Some(tp(0).at(1)) }));
    assert_eq!(t.release(&tp(0)), None);
    assert!(t.is_drained(&tp(0)), "an untracked partition has nothing outstanding");

    // Restarted from offset 1: the new incarnation starts lower and reports anew.
    let again = t.deliver(&tp(0), 1, None).expect("delivered anew");
    t.ack(&again).expect("acked");
    assert_eq!(t.take_commits(), vec![tp(0).at(2)]);
    assert_eq!(t.release(&tp(0)), Some(Released { unacked: 0, untaken_commit: None }));
}

#[test]
fn a_partition_released_with_a_pending_report_is_reported_once_when_tracked_again() {
    let mut t = AckTracker::new();
    let d = t.deliver(&tp(0), 0, None).expect("delivered");
    t.ack(&d).expect("acked");
    t.release(&tp(0));
    let d = t.deliver(&tp(0), 0, None).expect("delivered anew");
    t.ack(&d).expect("acked");
    assert_eq!(t.take_commits(), vec![tp(0).at(1)]);
}

#[test]
fn memory_is_the_window_from_the_first_unacked_record() {
    let mut t = AckTracker::new();
    let d: Vec<Delivery> = (0..1000).map(|o| t.deliver(&tp(0), o, None).expect("delivered")).collect();
    for x in d.iter().skip(1) {
        t.ack(x).expect("acked");
    }
    assert_eq!(window_len(&t, &tp(0)), 1000, "offset 0 holds the prefix back");
    t.ack(&d[0]).expect("acked");
    assert_eq!(window_len(&t, &tp(0)), 0);
    assert_eq!(t.take_commits(), vec![tp(0).at(1000)]);
}

/// The offset after the acknowledged prefix of `entries` (offset, acknowledged).
fn model_commit(entries: &[(i64, bool)]) -> Option<i64> {
    entries.iter().take_while(|(_, acked)| *acked).last().map(|(offset, _)| offset + 1)
}

/// Increasing offsets with gaps, a subset of their indices in any order, and after
/// which acknowledgements commits are taken.
fn deliveries_and_acks() -> impl Strategy<Value = (Vec<i64>, Vec<usize>, Vec<bool>)> {
    (0i64..1000, proptest::collection::vec(1i64..4, 1..60)).prop_flat_map(|(base, gaps)| {
        let offsets: Vec<i64> = gaps
            .iter()
            .scan(base, |next, gap| {
                let offset = *next;
                *next += gap;
                Some(offset)
            })
            .collect();
        let n = offsets.len();
        (
            Just(offsets),
            proptest::sample::subsequence((0..n).collect::<Vec<_>>(), 0..=n).prop_shuffle(),
            proptest::collection::vec(any::<bool>(), n),
        )
    })
}

#[derive(Debug, Clone)]
enum Op {
    Deliver { part: usize, gap: i64 },
    Skip { part: usize, gap: i64 },
    Ack { part: usize, pick: usize },
    AckAgain { part: usize, pick: usize },
    AckStale { pick: usize },
    Take,
    Release { part: usize },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0usize..3, 1i64..4).prop_map(|(part, gap)| Op::Deliver { part, gap }),
        1 => (0usize..3, 0i64..4).prop_map(|(part, gap)| Op::Skip { part, gap }),
        6 => (0usize..3, any::<usize>()).prop_map(|(part, pick)| Op::Ack { part, pick }),
        1 => (0usize..3, any::<usize>()).prop_map(|(part, pick)| Op::AckAgain { part, pick }),
        1 => any::<usize>().prop_map(|pick| Op::AckStale { pick }),
        2 => Just(Op::Take),
        1 => (0usize..3).prop_map(|part| Op::Release { part }),
    ]
}

fn epoch_of(offset: i64) -> Option<i32> {
    i32::try_from(offset / 5).ok()
}

/// One partition as the model sees it.
#[derive(Debug, Default)]
struct ModelPartition {
    /// Every entry of this incarnation: offset, acknowledged (skips are), delivery.
    entries: Vec<(i64, bool, Option<Delivery>)>,
    last: Option<i64>,
    reported: Option<i64>,
}

impl ModelPartition {
    fn commit(&self) -> Option<i64> {
        let flags: Vec<(i64, bool)> = self.entries.iter().map(|(o, a, _)| (*o, *a)).collect();
        model_commit(&flags)
    }

    fn pending(&self) -> usize {
        self.entries.iter().filter(|(_, acked, _)| !acked).count()
    }

    fn window(&self) -> usize {
        self.entries.iter().position(|(_, acked, _)| !acked).map_or(0, |first| self.entries.len() - first)
    }

    fn next_offset(&self, gap: i64) -> i64 {
        self.last.map_or(gap - 1, |last| last + gap)
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// For any delivery sequence and any order and subset of acknowledgements, every
    /// commit taken is exactly one after the largest acknowledged prefix, no commit is
    /// reported without a move, and commits never go backwards.
    #[test]
    fn commits_are_the_acknowledged_prefix((offsets, acks, takes) in deliveries_and_acks()) {
        let mut t = AckTracker::new();
        let d: Vec<Delivery> = offsets.iter().map(|o| t.deliver(&tp(0), *o, epoch_of(*o))).collect::<Result<_, _>>()?;
        let mut acked = vec![false; offsets.len()];
        let mut reported: Option<i64> = None;
        for (i, index) in acks.iter().enumerate() {
            t.ack(&d[*index])?;
            acked[*index] = true;
            if takes[i] || i + 1 == acks.len() {
                let expected = model_commit(&offsets.iter().copied().zip(acked.iter().copied()).collect::<Vec<_>>());
                let commits = t.take_commits();
                if expected == reported {
                    prop_assert!(commits.is_empty());
                } else {
                    let offset = expected.expect("a move is to some offset");
                    prop_assert_eq!(commits, vec![tp(0).at(offset).with_last_epoch(epoch_of(offset - 1).expect("small"))]);
                    prop_assert!(reported < expected, "never backwards");
                    reported = expected;
                }
            }
        }
        let pending = acked.iter().filter(|a| !**a).count();
        prop_assert_eq!(t.unacked(&tp(0)), pending);
        prop_assert_eq!(t.is_drained(&tp(0)), pending == 0);
    }

    /// Against a model, for any interleaving of deliveries, skips, acknowledgements
    /// (fresh, repeated, stale), takes and releases over three partitions: the counts,
    /// the commit point and the window agree after every step, and each take reports
    /// exactly the partitions whose commit point moved.
    #[test]
    fn the_tracker_follows_the_model(ops in proptest::collection::vec(op(), 0..150)) {
        let parts = [tp(0), tp(1), TopicPartition::new("billing", 0)];
        let mut t = AckTracker::new();
        let mut model: Vec<ModelPartition> = (0..3).map(|_| ModelPartition::default()).collect();
        let mut stale: Vec<Delivery> = Vec::new();
        for op in &ops {
            match *op {
                Op::Deliver { part, gap } => {
                    let offset = model[part].next_offset(gap);
                    let d = t.deliver(&parts[part], offset, epoch_of(offset))?;
                    model[part].entries.push((offset, false, Some(d)));
                    model[part].last = Some(offset);
                }
                Op::Skip { part, gap } => {
                    // A gap of 0 skips to one past the last offset: nothing changes.
                    let last = model[part].last;
                    let offset = last.map_or(gap.max(1) - 1, |last| last + gap);
                    t.skip_to(&parts[part], offset + 1, epoch_of(offset))?;
                    if last != Some(offset) {
                        model[part].entries.push((offset, true, None));
                    }
                    model[part].last = Some(offset);
                }
                Op::Ack { part, pick } => {
                    let m = &mut model[part];
                    let pending: Vec<usize> = (0..m.entries.len()).filter(|i| !m.entries[*i].1).collect();
                    if let Some(i) = pending.get(pick % pending.len().max(1)) {
                        let d = m.entries[*i].2.clone().expect("pending entries are deliveries");
                        t.ack(&d)?;
                        m.entries[*i].1 = true;
                    }
                }
                Op::AckAgain { part, pick } => {
                    let m = &model[part];
                    let done: Vec<&Delivery> =
                        m.entries.iter().filter(|e| e.1).filter_map(|e| e.2.as_ref()).collect();
                    if let Some(d) = done.get(pick % done.len().max(1)) {
                        let expected = AckError::AlreadyAcked { partition: d.partition.clone(), offset: d.offset };
                        prop_assert_eq!(t.ack(d), Err(expected));
                    }
                }
                Op::AckStale { pick } => {
                    if let Some(d) = stale.get(pick % stale.len().max(1)) {
                        let expected = AckError::Stale { partition: d.partition.clone(), offset: d.offset };
                        prop_assert_eq!(t.ack(d), Err(expected));
                    }
                }
                Op::Take => {
                    let commits = t.take_commits();
                    let mut expected = Vec::new();
                    for (part, m) in model.iter_mut().enumerate() {
                        let commit = m.commit();
                        if commit != m.reported {
                            let offset = commit.expect("a move is to some offset");
                            prop_assert!(m.reported < commit, "never backwards");
                            let epoch = epoch_of(offset - 1).expect("small");
                            expected.push(parts[part].at(offset).with_last_epoch(epoch));
                            m.reported = commit;
                        }
                    }
                    expected.sort();
                    prop_assert_eq!(commits, expected);
                }
                Op::Release { part } => {
                    let m = std::mem::take(&mut model[part]);
                    let released = t.release(&parts[part]);
                    if m.last.is_none() {
                        prop_assert_eq!(released, None);
                    } else {
                        let untaken_commit = m.commit().filter(|c| m.reported != Some(*c)).map(|offset| {
                            parts[part].at(offset).with_last_epoch(epoch_of(offset - 1).expect("small"))
                        });
                        prop_assert_eq!(released, Some(Released { unacked: m.pending(), untaken_commit }));
                    }
                    stale.extend(m.entries.into_iter().filter_map(|e| e.2));
                }
            }
            for (part, m) in model.iter().enumerate() {
                prop_assert_eq!(t.unacked(&parts[part]), m.pending());
                prop_assert_eq!(t.commit_point(&parts[part]), m.commit());
                prop_assert_eq!(window_len(&t, &parts[part]), m.window());
            }
        }
    }

    /// Delivering in runs and acknowledging in runs (`deliver_all`, `ack_all`) gives
    /// the same deliveries, errors and commits as one by one, over two partitions.
    #[test]
    fn runs_are_one_by_one(
        runs in proptest::collection::vec((0usize..2, 1usize..6, 1i64..3), 1..12),
        order in proptest::collection::vec(any::<prop::sample::Index>(), 0..60),
        chunk in 1usize..5,
    ) {
        let parts = [tp(0), tp(1)];
        let (mut one, mut all) = (AckTracker::new(), AckTracker::new());
        let mut next = [0i64, 0];
        let (mut by_one, mut by_all) = (Vec::new(), Vec::new());
        for (part, n, gap) in runs {
            let offsets: Vec<(i64, Option<i32>)> = (0..n)
                .map(|_| {
                    let o = next[part];
                    next[part] += gap;
                    (o, epoch_of(o))
                })
                .collect();
            for (o, e) in &offsets {
                by_one.push(one.deliver(&parts[part], *o, *e)?);
            }
            by_all.extend(all.deliver_all(&parts[part], &offsets)?);
        }
        prop_assert_eq!(&by_one.iter().map(|d| (d.topic_partition().clone(), d.offset())).collect::<Vec<_>>(),
            &by_all.iter().map(|d| (d.topic_partition().clone(), d.offset())).collect::<Vec<_>>());
        // The same picks (repeats included: those are refused twice the same way).
        let picks: Vec<usize> = order.iter().map(|i| i.index(by_one.len())).collect();
        for c in picks.chunks(chunk) {
            let errors_one: Vec<AckError> = c.iter().filter_map(|i| one.ack(&by_one[*i]).err()).collect();
            let errors_all = all.ack_all(c.iter().map(|i| &by_all[*i]));
            prop_assert_eq!(errors_one, errors_all);
            prop_assert_eq!(one.take_commits(), all.take_commits());
        }
        // Out of order within a run, and a run that goes backwards, are refused whole.
        let bad = [(next[0] + 2, None), (next[0] + 1, None)];
        prop_assert!(all.deliver_all(&parts[0], &bad).is_err());
        prop_assert_eq!(all.unacked(&parts[0]), one.unacked(&parts[0]));
    }
}
