//! The server-side assignors of KIP-848 groups: `uniform` (balanced and sticky, Kafka's
//! default) and `range` (contiguous ranges of each topic, by member id). Both are pure
//! functions from the members' subscriptions and the previous target assignment to the
//! new one; every partition of a subscribed topic goes to exactly one subscribed member.

use std::collections::{BTreeMap, BTreeSet};

use klife_protocol::Uuid;

/// Partitions by topic id.
pub(crate) type Partitions = BTreeMap<Uuid, BTreeSet<i32>>;

/// The assignors this coordinator has, by the names `ServerAssignor` carries.
pub(crate) const ASSIGNORS: &[&str] = &["uniform", "range"];

/// What an assignor is given about one member.
#[derive(Debug, Clone)]
pub(crate) struct MemberSpec {
    /// The topics (id, partition count) the member is subscribed to and that exist.
    pub(crate) topics: BTreeMap<Uuid, i32>,
    /// The member's previous target assignment.
    pub(crate) previous: Partitions,
}

/// Runs the named assignor (`uniform` for any other name).
pub(crate) fn assign(name: &str, members: &BTreeMap<String, MemberSpec>) -> BTreeMap<String, Partitions> {
    match name {
        "range" => range(members),
        _ => uniform(members),
    }
}

/// Every topic some member subscribes to, with its partition count.
fn all_topics(members: &BTreeMap<String, MemberSpec>) -> BTreeMap<Uuid, i32> {
    members.values().flat_map(|m| m.topics.iter().map(|(t, n)| (*t, *n))).collect()
}

/// Per topic, the subscribed members sorted by member id; each gets a contiguous range,
/// the first `partitions % members` one more.
fn range(members: &BTreeMap<String, MemberSpec>) -> BTreeMap<String, Partitions> {
    let mut out: BTreeMap<String, Partitions> = members.keys().map(|m| (m.clone(), Partitions::new())).collect();
    for (topic, count) in all_topics(members) {
        let subscribed: Vec<&String> =
            members.iter().filter(|(_, s)| s.topics.contains_key(&topic)).map(|(m, _)| m).collect();
        let n = i32::try_from(subscribed.len()).unwrap_or(i32::MAX);
        if n == 0 {
            continue;
        }
        let (base, extra) = (count / n, count % n);
        let mut start = 0;
        for (i, m) in subscribed.into_iter().enumerate() {
            let len = base + i32::from(i32::try_from(i).unwrap_or(i32::MAX) < extra);
            if len > 0 {
                out.entry(m.clone()).or_default().entry(topic).or_default().extend(start..start + len);
            }
            start += len;
        }
    }
    out
}

/// Balanced and sticky: a member keeps what it had while it stays subscribed and under
/// its share, the rest goes to the least loaded subscribed member, then partitions move
/// from the most to the least loaded member that can take them until no two eligible
/// members differ by more than one.
fn uniform(members: &BTreeMap<String, MemberSpec>) -> BTreeMap<String, Partitions> {
    let topics = all_topics(members);
    let total: i64 = topics.values().map(|n| i64::from(*n)).sum();
    let share = if members.is_empty() { 0 } else { (total + members.len() as i64 - 1) / members.len() as i64 };
    let mut owner: BTreeMap<(Uuid, i32), String> = BTreeMap::new();
    let mut load: BTreeMap<String, i64> = members.keys().map(|m| (m.clone(), 0)).collect();
    // Keep previous ownership, up to the share.
    for (m, spec) in members {
        for (topic, ps) in &spec.previous {
            let Some(count) = spec.topics.get(topic) else { continue };
            for p in ps {
                if *p < *count && !owner.contains_key(&(*topic, *p)) && load[m] < share {
                    owner.insert((*topic, *p), m.clone());
                    *load.entry(m.clone()).or_default() += 1;
                }
            }
        }
    }
    // The rest to the least loaded subscribed member.
    for (topic, count) in &topics {
        for p in 0..*count {
            if owner.contains_key(&(*topic, p)) {
                continue;
            }
            let best = members
                .iter()
                .filter(|(_, s)| s.topics.contains_key(topic))
                .min_by_key(|(m, _)| (load[*m], (*m).clone()))
                .map(|(m, _)| m.clone());
            if let Some(m) = best {
                owner.insert((*topic, p), m.clone());
                *load.entry(m).or_default() += 1;
            }
        }
    }
    // Even out (matters for members with different subscriptions).
    let mut moved = true;
    let mut rounds = 0;
    while moved && rounds < 10_000 {
        moved = false;
        rounds += 1;
        let keys: Vec<(Uuid, i32)> = owner.keys().copied().collect();
        for key in keys {
            let from = owner[&key].clone();
            let target = members
                .iter()
                .filter(|(m, s)| **m != from && s.topics.contains_key(&key.0))
                .min_by_key(|(m, _)| (load[*m], (*m).clone()))
                .map(|(m, _)| m.clone());
            if let Some(to) = target.filter(|to| load[to] + 1 < load[&from]) {
                *load.entry(from).or_default() -= 1;
                *load.entry(to.clone()).or_default() += 1;
                owner.insert(key, to);
                moved = true;
            }
        }
    }
    let mut out: BTreeMap<String, Partitions> = members.keys().map(|m| (m.clone(), Partitions::new())).collect();
    for ((topic, p), m) in owner {
        out.entry(m).or_default().entry(topic).or_default().insert(p);
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn spec(topics: &[(u8, i32)], previous: &[(u8, &[i32])]) -> MemberSpec {
        MemberSpec {
            topics: topics.iter().map(|(t, n)| (Uuid([*t; 16]), *n)).collect(),
            previous: previous.iter().map(|(t, ps)| (Uuid([*t; 16]), ps.iter().copied().collect())).collect(),
        }
    }

    fn count(a: &Partitions) -> usize {
        a.values().map(BTreeSet::len).sum()
    }

    fn check_complete(out: &BTreeMap<String, Partitions>, topics: &[(u8, i32)]) {
        let mut seen = BTreeSet::new();
        for a in out.values() {
            for (t, ps) in a {
                for p in ps {
                    assert!(seen.insert((*t, *p)), "assigned twice");
                }
            }
        }
        let all: usize = topics.iter().map(|(_, n)| usize::try_from(*n).unwrap()).sum();
        assert_eq!(seen.len(), all);
    }

    #[test]
    fn uniform_balances_and_sticks() {
        let mut members = BTreeMap::new();
        members.insert("a".to_owned(), spec(&[(1, 6)], &[(1, &[0, 1, 2, 3, 4, 5])]));
        members.insert("b".to_owned(), spec(&[(1, 6)], &[]));
        let out = assign("uniform", &members);
        check_complete(&out, &[(1, 6)]);
        assert_eq!((count(&out["a"]), count(&out["b"])), (3, 3));
        // a keeps three of its own.
        assert!(out["a"][&Uuid([1; 16])].iter().all(|p| *p < 6));
        members.insert("c".to_owned(), spec(&[(1, 6)], &[]));
        let out2 = assign("uniform", &members);
        check_complete(&out2, &[(1, 6)]);
        assert!(out2.values().all(|a| count(a) == 2));
    }

    #[test]
    fn uniform_with_different_subscriptions() {
        let mut members = BTreeMap::new();
        members.insert("a".to_owned(), spec(&[(1, 4), (2, 4)], &[]));
        members.insert("b".to_owned(), spec(&[(2, 4)], &[]));
        let out = assign("uniform", &members);
        check_complete(&out, &[(1, 4), (2, 4)]);
        assert_eq!(count(&out["a"]), 4);
        assert_eq!(count(&out["b"]), 4);
        assert!(!out["b"].contains_key(&Uuid([1; 16])));
    }

    #[test]
    fn range_gives_contiguous_ranges() {
        let mut members = BTreeMap::new();
        members.insert("a".to_owned(), spec(&[(1, 5)], &[]));
        members.insert("b".to_owned(), spec(&[(1, 5)], &[]));
        let out = assign("range", &members);
        check_complete(&out, &[(1, 5)]);
        assert_eq!(out["a"][&Uuid([1; 16])], BTreeSet::from([0, 1, 2]));
        assert_eq!(out["b"][&Uuid([1; 16])], BTreeSet::from([3, 4]));
    }
}
