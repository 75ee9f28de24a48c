//! The checks of a run, as plain functions of what was counted and what the cluster
//! said: every record handled once per group, lags 0, every partition owned once.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use klife::{GroupDescription, PartitionLag};

use crate::track::{Clock, GroupTally, Layout};

/// The partitions (by index) a group has not finished: handled less than produced.
pub(crate) fn unfinished(tally: &GroupTally, partitions: &[usize], produced: &[u64]) -> Vec<usize> {
    partitions.iter().copied().filter(|p| tally.slots[*p].handled.load(Ordering::Relaxed) < produced[*p]).collect()
}

/// What is wrong with what a group handled: a partition whose records were not each
/// handled exactly once, in order, or records of a partition that is not the run's.
pub(crate) fn handled_problems(
    tally: &GroupTally,
    layout: &Layout,
    partitions: &[usize],
    produced: &[u64],
) -> Vec<String> {
    let mut problems = Vec::new();
    for &p in partitions {
        let s = &tally.slots[p];
        let (handled, repeated, skipped) =
            (s.handled.load(Ordering::Relaxed), s.repeated.load(Ordering::Relaxed), s.skipped.load(Ordering::Relaxed));
        if handled != produced[p] || repeated != 0 || skipped != 0 {
            let (t, n) = layout.at(p);
            problems.push(format!(
                "{}: {t}-{n} handled {handled} of {} produced ({repeated} repeated, {skipped} offsets skipped)",
                tally.name, produced[p]
            ));
        }
    }
    let foreign = tally.foreign.load(Ordering::Relaxed);
    if foreign != 0 {
        problems.push(format!("{}: {foreign} records of partitions that are not the run's", tally.name));
    }
    problems
}

/// What is wrong with a group's lag: a partition of its topics missing, or whose
/// committed offset is not its end (the records produced there).
pub(crate) fn lag_problems(
    group: &str,
    lags: &[PartitionLag],
    layout: &Layout,
    partitions: &[usize],
    produced: &[u64],
) -> Vec<String> {
    let by_index: BTreeMap<usize, &PartitionLag> = lags
        .iter()
        .filter_map(|l| layout.index(&l.topic_partition.topic, l.topic_partition.partition).map(|i| (i, l)))
        .collect();
    let mut problems = Vec::new();
    for &p in partitions {
        let (t, n) = layout.at(p);
        let want = i64::try_from(produced[p]).unwrap_or(i64::MAX);
        match by_index.get(&p) {
            // Nothing was written there, so there is nothing to commit.
            None | Some(PartitionLag { committed: None, .. }) if want == 0 => {}
            None => problems.push(format!("{group}: {t}-{n} has no committed offset")),
            Some(l) if l.lag != Some(0) || l.committed != Some(want) || l.end_offset != Some(want) => {
                problems.push(format!(
                    "{group}: {t}-{n} lag {:?}, committed {:?}, end {:?}, {want} produced",
                    l.lag, l.committed, l.end_offset
                ));
            }
            Some(_) => {}
        }
    }
    problems
}

/// What is wrong with a group's assignment as the coordinator describes it: a
/// partition owned by two members, one of its topics' partitions owned by none, not
/// `members` members.
pub(crate) fn owner_problems(
    d: &GroupDescription,
    layout: &Layout,
    partitions: &[usize],
    members: usize,
) -> Vec<String> {
    let group = &d.group_id;
    let mut owners: BTreeMap<usize, Vec<&str>> = BTreeMap::new();
    for m in &d.members {
        for tp in &m.assignment {
            let i = layout.index(&tp.topic, tp.partition).unwrap_or(usize::MAX);
            owners.entry(i).or_default().push(&m.member_id);
        }
    }
    let mut problems = Vec::new();
    if d.members.len() != members {
        problems.push(format!("{group}: {} members, {members} expected", d.members.len()));
    }
    for (p, who) in &owners {
        if *p == usize::MAX {
            problems.push(format!("{group}: owns a partition that is not the run's ({who:?})"));
        } else if who.len() > 1 {
            let (t, n) = layout.at(*p);
            problems.push(format!("{group}: {t}-{n} owned by {} members: {who:?}", who.len()));
        }
    }
    for &p in partitions {
        if !owners.contains_key(&p) {
            let (t, n) = layout.at(p);
            problems.push(format!("{group}: {t}-{n} owned by no member"));
        }
    }
    problems
}

/// Smallest, median and largest.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Spread {
    pub(crate) min: f64,
    pub(crate) median: f64,
    pub(crate) max: f64,
}

impl Spread {
    pub(crate) fn of(mut xs: Vec<f64>) -> Option<Spread> {
        if xs.is_empty() {
            return None;
        }
        xs.sort_by(f64::total_cmp);
        Some(Spread { min: xs[0], median: xs[xs.len() / 2], max: xs[xs.len() - 1] })
    }
}

impl std::fmt::Display for Spread {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:.1} / {:.1} / {:.1}", self.min, self.median, self.max)
    }
}

/// The spread over a group's partitions of the time from the start of producing to
/// their first and to their last record, in seconds.
pub(crate) fn progress_spread(
    tally: &GroupTally,
    partitions: &[usize],
    produce_start: Duration,
) -> (Option<Spread>, Option<Spread>) {
    let since = |stored: u64| Clock::since_start(stored).map(|t| t.saturating_sub(produce_start).as_secs_f64());
    let firsts = partitions.iter().filter_map(|p| since(tally.slots[*p].first.load(Ordering::Relaxed))).collect();
    let lasts = partitions.iter().filter_map(|p| since(tally.slots[*p].last.load(Ordering::Relaxed))).collect();
    (Spread::of(firsts), Spread::of(lasts))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicU64;

    use klife::{GroupMember, GroupState, GroupType, TopicPartition};

    use super::*;

    fn layout() -> Arc<Layout> {
        Arc::new(Layout::new("t", 2, 2))
    }

    fn member(id: &str, owns: &[(&str, i32)]) -> GroupMember {
        GroupMember {
            member_id: id.into(),
            instance_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            rack_id: None,
            member_epoch: Some(1),
            subscribed_topics: vec![],
            subscribed_regex: None,
            assignment: owns.iter().map(|(t, p)| TopicPartition::new(*t, *p)).collect(),
            target_assignment: None,
        }
    }

    fn group(members: Vec<GroupMember>) -> GroupDescription {
        GroupDescription {
            group_id: "g".into(),
            group_type: GroupType::Consumer,
            state: GroupState::Stable,
            protocol_type: "consumer".into(),
            assignor: "uniform".into(),
            epoch: Some(1),
            assignment_epoch: Some(1),
            members,
            coordinator: 0,
        }
    }

    #[test]
    fn a_partition_owned_twice_or_by_none_is_named() {
        let l = layout();
        let ok = group(vec![member("a", &[("t-00", 0), ("t-00", 1)]), member("b", &[("t-01", 0), ("t-01", 1)])]);
        assert!(owner_problems(&ok, &l, &[0, 1, 2, 3], 2).is_empty());
        let twice = group(vec![member("a", &[("t-00", 0), ("t-00", 1)]), member("b", &[("t-00", 1)])]);
        let p = owner_problems(&twice, &l, &[0, 1], 2);
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(p[0].contains("t-00-1 owned by 2 members"), "{p:?}");
        let none = owner_problems(&ok, &l, &[0, 1, 2, 3], 3);
        assert_eq!(none, vec!["g: 2 members, 3 expected".to_owned()]);
        let missing = group(vec![member("a", &[("t-00", 0)])]);
        assert_eq!(owner_problems(&missing, &l, &[0, 1], 1), vec!["g: t-00-1 owned by no member".to_owned()]);
    }

    #[test]
    fn lag_must_be_zero_at_the_produced_end() {
        let l = layout();
        let lag = |p: i32, committed: i64, end: i64| PartitionLag {
            topic_partition: TopicPartition::new("t-01", p),
            committed: Some(committed),
            metadata: None,
            end_offset: Some(end),
            lag: Some(end - committed),
            owner: None,
        };
        let produced = [0, 0, 5, 7];
        assert!(lag_problems("g", &[lag(0, 5, 5), lag(1, 7, 7)], &l, &[2, 3], &produced).is_empty());
        assert_eq!(lag_problems("g", &[lag(0, 5, 5)], &l, &[2, 3], &produced).len(), 1);
        assert_eq!(lag_problems("g", &[lag(0, 4, 5), lag(1, 7, 7)], &l, &[2, 3], &produced).len(), 1);
        // An empty partition needs no commit.
        assert!(lag_problems("g", &[lag(0, 5, 5), lag(1, 7, 7)], &l, &[0, 2, 3], &produced).is_empty());
    }

    #[test]
    fn unfinished_partitions_are_those_behind_what_was_produced() {
        let l = layout();
        let t = GroupTally::new("g".into(), l.clone(), Clock::start(), Arc::new(AtomicU64::new(0)));
        t.slots[1].handled.store(3, Ordering::Relaxed);
        assert_eq!(unfinished(&t, &[0, 1, 2], &[0, 3, 1]), vec![2]);
        let problems = handled_problems(&t, &l, &[0, 1, 2], &[0, 3, 1]);
        assert_eq!(problems, vec!["g: t-01-0 handled 0 of 1 produced (0 repeated, 0 offsets skipped)".to_owned()]);
    }

    #[test]
    fn spreads_take_min_median_max() {
        assert_eq!(Spread::of(vec![3.0, 1.0, 2.0]), Some(Spread { min: 1.0, median: 2.0, max: 3.0 }));
        assert_eq!(Spread::of(vec![]), None);
    }
}
