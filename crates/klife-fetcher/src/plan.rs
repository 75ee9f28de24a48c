//! The fetcher's scheduling decisions, sans-io: which waiting fetches go into the next
//! Fetch request, which partitions of an answer are asked again at once, and whether a
//! consumer's next fetch of a partition is answered at once or may wait for records.
//!
//! The rule they keep together: a partition goes into a fetch that may wait for records
//! (`max_wait`) only when the broker's last answer said it had nothing more to read, so
//! a partition that has caught up never holds up one that has records.

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

/// Whether a fetch ending at `next_offset` read everything there is: `Some(true)` when
/// it reached the high watermark (with read_committed, the last stable offset),
/// `Some(false)` when the broker holds more, `None` when the answer did not say (the
/// partition was left out of it: watermarks -1).
pub fn caught_up(
    isolation: IsolationLevel,
    next_offset: i64,
    high_watermark: i64,
    last_stable_offset: i64,
) -> Option<bool> {
    if high_watermark < 0 {
        return None;
    }
    let end = if isolation == IsolationLevel::ReadCommitted && last_stable_offset >= 0 {
        last_stable_offset.min(high_watermark)
    } else {
        high_watermark
    };
    Some(next_offset >= end)
}

/// One partition of a Fetch answer, as [`starved`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Served {
    /// Record bytes the broker returned for the partition.
    pub bytes: usize,
    /// The broker answered it without error and holds records past its fetch offset.
    pub behind: bool,
}

/// Which partitions of an answer, given in request order, went without records only
/// because the answer's bytes went to the partitions before them: no bytes although
/// the broker holds records past the fetch offset, after an earlier partition of the
/// same answer got some. Brokers fill an answer in request order, and some (Tansu)
/// ignore the per-partition limit, so the back of a request can come back empty while
/// it has records. Such a partition is not caught up: it is asked again at once, ahead
/// of the others. A partition the broker starved at the front of a request is not
/// listed (nothing was spent on others), so asking again always makes progress.
pub fn starved(served: &[Served]) -> Vec<bool> {
    let mut fed = false;
    served
        .iter()
        .map(|s| {
            let starved = fed && s.bytes == 0 && s.behind;
            fed |= s.bytes > 0;
            starved
        })
        .collect()
}

/// Whether a fetch answered at once is asked again as one that waits for records
/// instead of being completed: it read nothing, passed over nothing, and the broker
/// says its partition is caught up. Every fetch starts answered at once, so it waits
/// only once the broker has said there is nothing to read.
pub fn waits_next(waited: bool, p: &Progress) -> bool {
    !waited && p.records == 0 && p.next_offset == p.offset && p.caught_up == Some(true)
}

/// How a consumer fetches a partition next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// Answered at once (`max_wait` close to 0): the partition has records, or it is not
    /// known yet whether it has. `first` puts the fetch ahead of those waiting in its
    /// batcher (the last answer gave the partition nothing).
    Now {
        /// Ahead of the fetches waiting in the batcher.
        first: bool,
    },
    /// May wait for records (`max_wait`): the broker said the partition is caught up.
    Wait,
}

impl Pace {
    /// Before any answer: whether the partition has records is not known.
    pub const UNKNOWN: Pace = Pace::Now { first: false };
}

/// What one answer did for a partition, as [`next_pace`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// The offset the fetch started at.
    pub offset: i64,
    /// The offset the next fetch starts at.
    pub next_offset: i64,
    /// Records returned.
    pub records: usize,
    /// [`caught_up`] at `next_offset`.
    pub caught_up: Option<bool>,
}

/// Answers in a row that may move a partition nowhere, while the broker does not say it
/// is caught up, and still have its next fetch answered at once (ahead of the others).
/// After that the fetch may wait for records: a broker that keeps answering such a
/// partition with nothing is not asked again and again at once.
pub const NO_PROGRESS_RETRIES: u32 = 1;

/// The pace of a partition's next fetch after an answer, and the count of answers in a
/// row that moved it nowhere (`misses`, from the previous call; 0 after any progress).
///
/// - caught up: wait for records;
/// - records returned, or the offset moved past markers and aborted batches: at once;
/// - nothing (left out of the answer, or given nothing by a broker that says there is
///   more): at once and first, up to [`NO_PROGRESS_RETRIES`] times in a row, then wait.
pub fn next_pace(p: &Progress, misses: u32) -> (Pace, u32) {
    if p.caught_up == Some(true) {
        return (Pace::Wait, 0);
    }
    if p.records > 0 || p.next_offset > p.offset {
        return (Pace::Now { first: false }, 0);
    }
    let misses = misses.saturating_add(1);
    if misses <= NO_PROGRESS_RETRIES { (Pace::Now { first: true }, misses) } else { (Pace::Wait, misses) }
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

    #[test]
    fn caught_up_is_read_at_the_isolation_levels_end() {
        // (isolation, next offset, high watermark, last stable offset) → caught up
        let cases = [
            (RU, 10, 10, 5, Some(true)),
            (RU, 9, 10, 5, Some(false)),
            (RC, 5, 10, 5, Some(true)),
            (RC, 4, 10, 5, Some(false)),
            (RC, 9, 10, -1, Some(false)),
            (RC, 10, 10, -1, Some(true)),
            (RC, 10, 10, 12, Some(true)),
            (RU, 0, -1, -1, None),
            (RC, 0, -1, 0, None),
        ];
        for (iso, next, hw, lso, want) in cases {
            assert_eq!(caught_up(iso, next, hw, lso), want, "{iso:?} next {next} hw {hw} lso {lso}");
        }
    }

    fn served(bytes: usize, behind: bool) -> Served {
        Served { bytes, behind }
    }

    #[test]
    fn only_partitions_behind_a_fed_one_are_starved() {
        let answer = [
            served(0, true),    // first and given nothing: not starved, nothing went elsewhere
            served(0, false),   // caught up
            served(500, true),  // fed
            served(0, true),    // starved
            served(0, false),   // caught up: not starved
            served(100, false), // fed, now caught up
            served(0, true),    // starved
        ];
        assert_eq!(starved(&answer), vec![false, false, false, true, false, false, true]);
        assert_eq!(starved(&[]), Vec::<bool>::new());
    }

    fn progress(offset: i64, next_offset: i64, records: usize, caught_up: Option<bool>) -> Progress {
        Progress { offset, next_offset, records, caught_up }
    }

    #[test]
    fn only_a_caught_up_partition_waits_for_records() {
        let now = Pace::Now { first: false };
        let first = Pace::Now { first: true };
        // (answer, misses before) → (pace, misses after)
        let cases = [
            (progress(0, 10, 10, Some(false)), 0, (now, 0)),
            (progress(0, 10, 10, Some(true)), 0, (Pace::Wait, 0)),
            (progress(0, 0, 0, Some(true)), 0, (Pace::Wait, 0)),
            // Past markers or an aborted transaction, more to read: at once.
            (progress(0, 4, 0, Some(false)), 1, (now, 0)),
            // Given nothing though the broker has more, or left out: at once, first ...
            (progress(7, 7, 0, Some(false)), 0, (first, 1)),
            (progress(7, 7, 0, None), 0, (first, 1)),
            // ... once; then it waits rather than spin.
            (progress(7, 7, 0, None), 1, (Pace::Wait, 2)),
            (progress(7, 7, 0, Some(false)), 2, (Pace::Wait, 3)),
            (progress(7, 8, 1, Some(false)), 3, (now, 0)),
        ];
        for (p, misses, want) in cases {
            assert_eq!(next_pace(&p, misses), want, "{p:?} after {misses} misses");
        }
        assert_eq!(Pace::UNKNOWN, now, "a partition not yet answered is asked at once");
    }

    #[test]
    fn a_fetch_answered_at_once_waits_next_only_when_caught_up_with_nothing() {
        assert!(waits_next(false, &progress(5, 5, 0, Some(true))));
        assert!(!waits_next(true, &progress(5, 5, 0, Some(true))), "it waited already: the answer goes out");
        assert!(!waits_next(false, &progress(5, 6, 1, Some(true))), "records go out");
        assert!(!waits_next(false, &progress(5, 7, 0, Some(true))), "markers passed over: the new position goes out");
        assert!(!waits_next(false, &progress(5, 5, 0, Some(false))));
        assert!(!waits_next(false, &progress(5, 5, 0, None)), "left out: the consumer decides");
    }

    /// A broker as the simulation below sees it.
    #[derive(Debug, Clone, Copy)]
    enum Broker {
        /// Whole batches within each partition's limit and the request's, at least one
        /// batch for the first partition with records (KIP-74).
        Kafka,
        /// Batches for each partition in turn until the request's bytes run out,
        /// whatever the partition's limit; the rest come back empty, with watermarks.
        Tansu,
    }

    const RECORD: usize = 100;
    const BATCH: i64 = 10;

    /// What `broker` answers to a request of (partition, fetch offset, bytes asked):
    /// (records returned, high watermark) per partition, in request order.
    fn serve(broker: Broker, ends: &[i64], request: &[(i32, i64, usize)], limit: usize) -> Vec<(i64, i64)> {
        let mut remaining = limit;
        let mut fed = false;
        request
            .iter()
            .map(|&(p, offset, asked)| {
                let end = ends[p as usize];
                let available = end - offset;
                let batch_bytes = BATCH as usize * RECORD;
                let n = match broker {
                    Broker::Kafka => {
                        let fits = (asked.min(remaining) / batch_bytes) as i64 * BATCH;
                        let n = available.min(fits);
                        if n == 0 && !fed { available.min(BATCH) } else { n }
                    }
                    Broker::Tansu if remaining == 0 => 0,
                    Broker::Tansu => available.min((remaining.div_ceil(batch_bytes)) as i64 * BATCH),
                };
                remaining = remaining.saturating_sub(n as usize * RECORD);
                fed |= n > 0;
                (n, end)
            })
            .collect()
    }

    #[derive(Debug)]
    struct Sim {
        partition: i32,
        offset: i64,
        asked: usize,
    }

    impl Planned for Sim {
        fn partition(&self) -> (&str, i32) {
            ("t", self.partition)
        }
        fn max_bytes(&self) -> usize {
            self.asked
        }
        fn isolation(&self) -> IsolationLevel {
            RC
        }
    }

    proptest! {
        /// A consumer's partitions through one batcher, its two lanes and a broker that
        /// fills answers in request order, while records keep arriving: a fetch goes
        /// into the waiting lane only for a partition the broker just said had nothing
        /// more, no partition is asked again and again without progress, and every
        /// record is read.
        #[test]
        fn a_caught_up_partition_never_holds_up_one_with_records(
            tansu in any::<bool>(),
            initial in proptest::collection::vec(0i64..300, 1..8),
            appends in proptest::collection::vec((0usize..40, 0usize..8, 1i64..60), 0..20),
            asked in 1usize..40,
            limit in 1usize..120,
        ) {
            let broker = if tansu { Broker::Tansu } else { Broker::Kafka };
            let (asked, limit) = (asked * RECORD * 5, limit * RECORD * 5);
            let mut ends = initial.clone();
            let parts = ends.len();
            let mut misses = vec![0u32; parts];
            let mut read = vec![0i64; parts];
            let mut now: VecDeque<Sim> = VecDeque::new();
            let mut waiting: VecDeque<Sim> = VecDeque::new();
            for (p, &end) in ends.iter().enumerate() {
                let job = Sim { partition: p as i32, offset: 0, asked };
                match Pace::UNKNOWN {
                    Pace::Wait => {
                        prop_assert!(end == 0, "partition {p} starts waiting with records");
                        waiting.push_back(job);
                    }
                    Pace::Now { .. } => now.push_back(job),
                }
            }
            let last_append = appends.iter().map(|a| a.0).max().unwrap_or(0);
            let mut step = 0usize;
            loop {
                for &(at, p, n) in &appends {
                    if at == step && p < parts {
                        ends[p] += n;
                    }
                }
                let all_read = read.iter().zip(&ends).all(|(r, e)| r == e);
                if step > last_append && all_read {
                    break;
                }
                step += 1;
                prop_assert!(step < 5_000, "no end: read {read:?} of {ends:?}");
                let waited = now.is_empty();
                let lane = if waited { &mut waiting } else { &mut now };
                let jobs = take_request(lane, limit);
                let request: Vec<(i32, i64, usize)> = jobs.iter().map(|j| (j.partition, j.offset, j.asked)).collect();
                let answer = serve(broker, &ends, &request, limit);
                let fed: Vec<Served> = request
                    .iter()
                    .zip(&answer)
                    .map(|(&(_, offset, _), &(n, hw))| served(n as usize * RECORD, offset < hw))
                    .collect();
                let starved = starved(&fed);
                let mut again_first: Vec<Sim> = Vec::new();
                for ((job, &(n, hw)), starved) in jobs.into_iter().zip(&answer).zip(starved) {
                    let p = job.partition as usize;
                    if starved {
                        prop_assert!(job.offset < hw);
                        again_first.push(job);
                        continue;
                    }
                    let next = job.offset + n;
                    let progress = Progress {
                        offset: job.offset,
                        next_offset: next,
                        records: n as usize,
                        caught_up: caught_up(RC, next, hw, hw),
                    };
                    if waits_next(waited, &progress) {
                        prop_assert!(job.offset >= hw, "partition {p} waits with records");
                        waiting.push_back(job);
                        continue;
                    }
                    // Completed: the consumer takes the records and fetches on.
                    prop_assert_eq!(read[p], job.offset);
                    read[p] = next;
                    let (pace, m) = next_pace(&progress, misses[p]);
                    misses[p] = m;
                    prop_assert!(m <= NO_PROGRESS_RETRIES, "partition {p} got nothing {m} times in a row");
                    let next_job = Sim { partition: job.partition, offset: next, asked };
                    match pace {
                        Pace::Wait => {
                            prop_assert!(next >= hw, "partition {p} waits at {next} with records up to {hw}");
                            waiting.push_back(next_job);
                        }
                        Pace::Now { first: true } => again_first.push(next_job),
                        Pace::Now { first: false } => now.push_back(next_job),
                    }
                }
                for job in again_first.into_iter().rev() {
                    now.push_front(job);
                }
            }
        }

        /// Over any run of answers, a partition waits only when caught up, is asked
        /// at once after any progress that left records to read, and is never asked
        /// at once more than `NO_PROGRESS_RETRIES` times in a row without progress.
        #[test]
        fn pace_follows_the_answers(
            answers in proptest::collection::vec((0i64..3, 0usize..3, proptest::option::of(any::<bool>())), 1..40),
        ) {
            let mut misses = 0;
            let mut offset = 100;
            let mut idle_now = 0;
            for (moved, records, caught) in answers {
                let p = progress(offset, offset + moved.max(records as i64), records, caught);
                let (pace, m) = next_pace(&p, misses);
                let progressed = p.next_offset > p.offset || p.records > 0;
                match caught {
                    Some(true) => prop_assert_eq!(pace, Pace::Wait),
                    _ if progressed => prop_assert_eq!(pace, Pace::Now { first: false }),
                    _ => {}
                }
                if pace == Pace::Wait {
                    prop_assert!(caught == Some(true) || misses >= NO_PROGRESS_RETRIES);
                }
                idle_now = if !progressed && caught != Some(true) && pace != Pace::Wait { idle_now + 1 } else { 0 };
                prop_assert!(idle_now <= NO_PROGRESS_RETRIES);
                if progressed || caught == Some(true) {
                    prop_assert_eq!(m, 0);
                }
                misses = m;
                offset = p.next_offset;
            }
        }

        /// A partition is starved exactly when it got nothing, the broker holds more
        /// for it, and a partition before it got bytes.
        #[test]
        fn starved_means_others_took_the_answer(
            answer in proptest::collection::vec((0usize..3, any::<bool>()), 0..12),
        ) {
            let answer: Vec<Served> = answer.into_iter().map(|(b, behind)| served(b * 100, behind)).collect();
            let got = starved(&answer);
            for (i, s) in answer.iter().enumerate() {
                let fed_before = answer[..i].iter().any(|a| a.bytes > 0);
                prop_assert_eq!(got[i], fed_before && s.bytes == 0 && s.behind);
            }
            // The first partition that got bytes is never behind a starved one.
            if let Some(first_fed) = answer.iter().position(|a| a.bytes > 0) {
                prop_assert!(got[..=first_fed].iter().all(|s| !s));
            }
        }
    }
}
