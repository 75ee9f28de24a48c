//! Which partition a producer pulls next: a fair rotation over the partitions it owns,
//! and a pause of `receive_interval` after a whole round that found nothing.
//!
//! Pulls are driven by demand: while the pipeline wants messages, the driver asks
//! [`PullPlan::idle_until`] whether to wait, else pulls [`PullPlan::next`] and reports
//! what it got with [`PullPlan::record_result`]. Without demand it pulls nothing. The
//! rotation goes on from where the last pull left it, so a partition at the head of the
//! list is never served first at the expense of the tail: over `k·n` offers each of
//! `n` partitions is offered `k` times.
//!
//! ```
//! use std::time::{Duration, Instant};
//!
//! use klife_pipeline::pull::PullPlan;
//! use klife_protocol::TopicPartition;
//!
//! let now = Instant::now();
//! let mut plan = PullPlan::new(Duration::from_millis(500));
//! plan.set_partitions(vec![TopicPartition::new("orders", 0), TopicPartition::new("orders", 1)]);
//! for _ in 0..2 {
//!     let tp = plan.next().expect("partitions are assigned");
//!     plan.record_result(&tp, false); // the pull found no record
//! }
//! // A whole round found nothing: wait before the next round.
//! assert_eq!(plan.idle_until(now), Some(now + Duration::from_millis(500)));
//! assert_eq!(plan.idle_until(now), None, "the next round starts");
//! ```

use std::collections::HashSet;
use std::time::{Duration, Instant};

use klife_protocol::TopicPartition;

/// The longest pause between rounds; a longer `receive_interval` is taken as this.
pub const MAX_RECEIVE_INTERVAL: Duration = Duration::from_secs(3600);

/// A producer's rotation over its partitions; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct PullPlan {
    /// The partitions, in rotation order.
    ring: Vec<TopicPartition>,
    /// The same partitions, to look them up.
    members: HashSet<TopicPartition>,
    /// The index in `ring` offered next.
    cursor: usize,
    /// Consecutive pulls, of partitions in the ring, that found nothing.
    empty_streak: usize,
    receive_interval: Duration,
}

impl PullPlan {
    /// A plan with no partition that waits `receive_interval` (at most
    /// [`MAX_RECEIVE_INTERVAL`]) after a round that found nothing; zero polls again at
    /// once.
    pub fn new(receive_interval: Duration) -> PullPlan {
        PullPlan {
            ring: Vec::new(),
            members: HashSet::new(),
            cursor: 0,
            empty_streak: 0,
            receive_interval: receive_interval.min(MAX_RECEIVE_INTERVAL),
        }
    }

    /// The pause after a round that found nothing.
    pub fn receive_interval(&self) -> Duration {
        self.receive_interval
    }

    /// Sets the partitions this producer pulls (the assigned partitions it owns, see
    /// [`Router::owned_by`](crate::route::Router::owned_by)); duplicates are dropped.
    ///
    /// Partitions kept from before stay in their rotation order, starting with the one
    /// that was due next; new ones come after them, in the order given. A new round
    /// starts.
    pub fn set_partitions(&mut self, partitions: Vec<TopicPartition>) {
        let wanted: HashSet<&TopicPartition> = partitions.iter().collect();
        let (before, due) = self.ring.split_at(self.cursor.min(self.ring.len()));
        let mut ring: Vec<TopicPartition> =
            due.iter().chain(before).filter(|tp| wanted.contains(tp)).cloned().collect();
        let mut members: HashSet<TopicPartition> = ring.iter().cloned().collect();
        for tp in &partitions {
            if members.insert(tp.clone()) {
                ring.push(tp.clone());
            }
        }
        self.ring = ring;
        self.members = members;
        self.cursor = 0;
        self.empty_streak = 0;
    }

    /// The partitions, in rotation order from the first round.
    pub fn partitions(&self) -> &[TopicPartition] {
        &self.ring
    }

    /// The partition to pull next, `None` with no partition (the driver then waits for
    /// an assignment, not a timer). Each call moves the rotation on by one.
    #[allow(clippy::should_implement_trait)] // never ends: not an iterator
    pub fn next(&mut self) -> Option<TopicPartition> {
        let tp = self.ring.get(self.cursor)?.clone();
        self.cursor = (self.cursor + 1) % self.ring.len();
        Some(tp)
    }

    /// Reports a pull of `partition`: whether it returned records. A partition not in
    /// the plan (removed since) is ignored.
    pub fn record_result(&mut self, partition: &TopicPartition, got_records: bool) {
        if !self.members.contains(partition) {
            return;
        }
        if got_records {
            self.empty_streak = 0;
        } else {
            self.empty_streak += 1;
        }
    }

    /// Whether the last whole round (one pull of each partition, in a row) found
    /// nothing.
    pub fn is_idle(&self) -> bool {
        !self.ring.is_empty() && self.empty_streak >= self.ring.len()
    }

    /// After a whole round that found nothing, when to pull again: `now +
    /// receive_interval`; the round is then over, and the next call is `None` until
    /// another whole round finds nothing. `None` when the driver should pull now (or
    /// there is no partition).
    pub fn idle_until(&mut self, now: Instant) -> Option<Instant> {
        if !self.is_idle() {
            return None;
        }
        self.empty_streak = 0;
        // At most an hour from a real `Instant`: no platform's clock overflows there,
        // and if one did, pulling at once is the safe side.
        Some(now.checked_add(self.receive_interval).unwrap_or(now))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    fn tps(partitions: &[i32]) -> Vec<TopicPartition> {
        partitions.iter().map(|p| TopicPartition::new("orders", *p)).collect()
    }

    fn offers(plan: &mut PullPlan, n: usize) -> Vec<i32> {
        (0..n).map(|_| plan.next().expect("partitions").partition).collect()
    }

    #[test]
    fn no_partition_means_nothing_to_pull_and_no_timer() {
        let mut plan = PullPlan::new(Duration::from_millis(10));
        assert_eq!(plan.next(), None);
        assert!(!plan.is_idle());
        assert_eq!(plan.idle_until(Instant::now()), None);
    }

    #[test]
    fn the_rotation_goes_round() {
        let mut plan = PullPlan::new(Duration::from_millis(10));
        plan.set_partitions(tps(&[0, 1, 2]));
        assert_eq!(offers(&mut plan, 7), vec![0, 1, 2, 0, 1, 2, 0]);
    }

    #[test]
    fn idle_after_a_whole_empty_round_only() {
        let now = Instant::now();
        let mut plan = PullPlan::new(Duration::from_millis(250));
        plan.set_partitions(tps(&[0, 1, 2]));
        for got in [false, false, true, false, false] {
            let tp = plan.next().expect("partitions");
            plan.record_result(&tp, got);
            assert_eq!(plan.idle_until(now), None, "not a whole empty round yet");
        }
        let tp = plan.next().expect("partitions");
        plan.record_result(&tp, false);
        assert_eq!(plan.idle_until(now), Some(now + Duration::from_millis(250)));
        assert_eq!(plan.idle_until(now), None);
        assert_eq!(plan.next().map(|tp| tp.partition), Some(0), "the rotation goes on where it was");
    }

    #[test]
    fn results_of_removed_partitions_are_ignored() {
        let mut plan = PullPlan::new(Duration::ZERO);
        plan.set_partitions(tps(&[0]));
        plan.record_result(&TopicPartition::new("orders", 9), false);
        assert!(!plan.is_idle());
        plan.record_result(&TopicPartition::new("orders", 0), false);
        assert!(plan.is_idle());
        let now = Instant::now();
        assert_eq!(plan.idle_until(now), Some(now), "a zero interval polls again at once");
    }

    #[test]
    fn new_partitions_queue_behind_the_kept_ones() {
        let mut plan = PullPlan::new(Duration::from_millis(10));
        plan.set_partitions(tps(&[0, 1, 2, 3]));
        assert_eq!(offers(&mut plan, 2), vec![0, 1]);
        plan.set_partitions(tps(&[5, 3, 0, 3, 2]));
        assert_eq!(plan.partitions(), &tps(&[2, 3, 0, 5])[..]);
        assert_eq!(offers(&mut plan, 4), vec![2, 3, 0, 5]);
    }

    #[test]
    fn a_huge_interval_is_capped() {
        let plan = PullPlan::new(Duration::MAX);
        assert_eq!(plan.receive_interval(), MAX_RECEIVE_INTERVAL);
    }

    proptest! {
        /// Over k·n offers, whatever the pulls found and however often the driver asked
        /// whether to wait, each of n partitions is offered at least k times.
        #[test]
        fn no_partition_starves(
            n in 1usize..12,
            k in 1usize..8,
            skip in 0usize..12,
            results in proptest::collection::vec(any::<(bool, bool)>(), 96),
        ) {
            let mut plan = PullPlan::new(Duration::from_millis(100));
            plan.set_partitions(tps(&(0..n as i32).collect::<Vec<_>>()));
            // Start mid-rotation.
            for _ in 0..skip {
                plan.next();
            }
            let now = Instant::now();
            let mut count: HashMap<TopicPartition, usize> = HashMap::new();
            for i in 0..k * n {
                let (got, ask) = results[i % results.len()];
                if ask {
                    plan.idle_until(now);
                }
                let tp = plan.next().expect("partitions");
                plan.record_result(&tp, got);
                *count.entry(tp).or_default() += 1;
            }
            prop_assert_eq!(count.len(), n);
            prop_assert!(count.values().all(|c| *c >= k), "{:?}", count);
        }

        /// After any change of partitions, the next k·n offers still reach each of the
        /// n partitions at least k times, and only those.
        #[test]
        fn no_partition_starves_across_changes(
            before in proptest::collection::vec(0i32..16, 0..12),
            after in proptest::collection::vec(0i32..16, 1..12),
            pulled in 0usize..20,
            k in 1usize..5,
        ) {
            let mut plan = PullPlan::new(Duration::from_millis(100));
            plan.set_partitions(tps(&before));
            for _ in 0..pulled {
                plan.next();
            }
            plan.set_partitions(tps(&after));
            let mut distinct = after.clone();
            distinct.sort_unstable();
            distinct.dedup();
            let n = distinct.len();
            let mut count: HashMap<i32, usize> = HashMap::new();
            for _ in 0..k * n {
                *count.entry(plan.next().expect("partitions").partition).or_default() += 1;
            }
            let mut offered: Vec<i32> = count.keys().copied().collect();
            offered.sort_unstable();
            prop_assert_eq!(offered, distinct);
            prop_assert!(count.values().all(|c| *c >= k));
        }
    }
}
