//! Which waiting fetches go into the next Fetch request. Sans-io.

use std::collections::{HashSet, VecDeque};

use crate::config::IsolationLevel;

/// A fetch waiting in a batcher, as the planner sees it.
pub trait Planned {
    /// The topic and partition (a request holds each at most once).
    fn partition(&self) -> (&str, i32);
    /// Bytes the fetch asks for.
    fn max_bytes(&self) -> usize;
    /// The isolation level (one per request).
    fn isolation(&self) -> IsolationLevel;
}

/// Takes the fetches for the next request from `pending`, oldest first: every fetch
/// with the first one's isolation level whose partition is not in the request yet,
/// while the bytes asked for stay within `limit` (the first fetch always goes, so a
/// fetch larger than the limit is not stuck). The rest stay in `pending`, in order.
pub fn take_request<T: Planned>(pending: &mut VecDeque<T>, limit: usize) -> Vec<T> {
    let Some(first) = pending.front() else {
        return Vec::new();
    };
    let isolation = first.isolation();
    let mut taken: Vec<T> = Vec::new();
    let mut kept: VecDeque<T> = VecDeque::new();
    let mut seen: HashSet<(String, i32)> = HashSet::new();
    let mut bytes = 0usize;
    let mut full = false;
    while let Some(item) = pending.pop_front() {
        let fits = taken.is_empty() || bytes.saturating_add(item.max_bytes()) <= limit;
        if full || !fits {
            full = true;
            kept.push_back(item);
            continue;
        }
        let (topic, partition) = item.partition();
        let key = (topic.to_owned(), partition);
        // A partition whose earlier fetch stays behind keeps its later ones behind too,
        // so each partition's fetches go out in the order they came.
        let first_of_partition = seen.insert(key);
        if item.isolation() != isolation || !first_of_partition {
            kept.push_back(item);
            continue;
        }
        bytes = bytes.saturating_add(item.max_bytes());
        taken.push(item);
    }
    *pending = kept;
    taken
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq)]
    struct F(String, i32, usize, IsolationLevel, usize);

    impl Planned for F {
        fn partition(&self) -> (&str, i32) {
            (&self.0, self.1)
        }
        fn max_bytes(&self) -> usize {
            self.2
        }
        fn isolation(&self) -> IsolationLevel {
            self.3
        }
    }

    const RC: IsolationLevel = IsolationLevel::ReadCommitted;
    const RU: IsolationLevel = IsolationLevel::ReadUncommitted;

    fn f(t: &str, p: i32, bytes: usize, iso: IsolationLevel, id: usize) -> F {
        F(t.into(), p, bytes, iso, id)
    }

    #[test]
    fn a_partition_twice_goes_into_two_requests() {
        let mut q: VecDeque<F> = [f("a", 0, 10, RC, 0), f("a", 0, 10, RC, 1), f("a", 1, 10, RC, 2)].into();
        let first: Vec<usize> = take_request(&mut q, 100).iter().map(|x| x.4).collect();
        assert_eq!(first, vec![0, 2]);
        let second: Vec<usize> = take_request(&mut q, 100).iter().map(|x| x.4).collect();
        assert_eq!(second, vec![1]);
        assert!(q.is_empty());
    }

    #[test]
    fn bytes_stay_within_the_limit_but_one_large_fetch_still_goes() {
        let mut q: VecDeque<F> = [f("a", 0, 60, RC, 0), f("a", 1, 60, RC, 1), f("a", 2, 30, RC, 2)].into();
        assert_eq!(take_request(&mut q, 100).len(), 1);
        // Order is kept: the 30-byte fetch waits behind the one that did not fit.
        assert_eq!(q.iter().map(|x| x.4).collect::<Vec<_>>(), vec![1, 2]);
        let mut q: VecDeque<F> = [f("a", 0, 500, RC, 0)].into();
        assert_eq!(take_request(&mut q, 100).len(), 1);
    }

    #[test]
    fn isolation_levels_do_not_mix() {
        let mut q: VecDeque<F> = [f("a", 0, 1, RU, 0), f("a", 1, 1, RC, 1), f("a", 2, 1, RU, 2)].into();
        assert_eq!(take_request(&mut q, 100).iter().map(|x| x.4).collect::<Vec<_>>(), vec![0, 2]);
        assert_eq!(take_request(&mut q, 100).iter().map(|x| x.4).collect::<Vec<_>>(), vec![1]);
    }

    proptest! {
        /// Draining the queue request by request loses and repeats nothing, never
        /// puts a partition twice or two isolation levels in one request, keeps each
        /// partition's fetches in order, and stays within the limit unless alone.
        #[test]
        fn draining_is_lossless_and_valid(
            items in proptest::collection::vec((0u8..3, 0i32..4, 1usize..80, any::<bool>()), 0..40),
            limit in 1usize..200,
        ) {
            let mut q: VecDeque<F> = items
                .iter()
                .enumerate()
                .map(|(i, &(t, p, b, rc))| f(&format!("t{t}"), p, b, if rc { RC } else { RU }, i))
                .collect();
            let mut out = Vec::new();
            let mut rounds = 0;
            while !q.is_empty() {
                rounds += 1;
                prop_assert!(rounds <= items.len());
                let req = take_request(&mut q, limit);
                prop_assert!(!req.is_empty());
                let total: usize = req.iter().map(|x| x.2).sum();
                prop_assert!(req.len() == 1 || total <= limit);
                let keys: HashSet<(String, i32)> = req.iter().map(|x| (x.0.clone(), x.1)).collect();
                prop_assert_eq!(keys.len(), req.len());
                prop_assert!(req.iter().all(|x| x.3 == req[0].3));
                out.extend(req.into_iter().map(|x| x.4));
            }
            let mut sorted = out.clone();
            sorted.sort_unstable();
            prop_assert_eq!(sorted, (0..items.len()).collect::<Vec<_>>());
            // Per partition, fetches leave in the order they came.
            for (t, p) in items.iter().map(|x| (x.0, x.1)) {
                let order: Vec<usize> = out.iter().copied().filter(|&i| (items[i].0, items[i].1) == (t, p)).collect();
                let mut s = order.clone();
                s.sort_unstable();
                prop_assert_eq!(order, s);
            }
        }
    }
}
