//! Tests of the batcher on a virtual clock: a base `Instant` plus durations.

use std::collections::HashMap;

use proptest::prelude::*;

use super::*;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn batcher(size: usize, timeout_ms: u64) -> Batcher<u32, &'static str> {
    Batcher::new(BatchConfig::new(size, ms(timeout_ms)).expect("valid config"))
}

#[test]
fn configs_are_checked() {
    let cases = [
        (0, ms(10), Err(BatchConfigError::ZeroSize)),
        (1, Duration::ZERO, Err(BatchConfigError::ZeroTimeout)),
        (0, Duration::ZERO, Err(BatchConfigError::ZeroSize)),
        (1, Duration::from_nanos(1), Ok((1, Duration::from_nanos(1)))),
        (500, ms(250), Ok((500, ms(250)))),
    ];
    for (size, timeout, expected) in cases {
        let got = BatchConfig::new(size, timeout).map(|c| (c.batch_size(), c.batch_timeout()));
        assert_eq!(got, expected, "size {size}, timeout {timeout:?}");
    }
    let default = BatchConfig::default();
    assert_eq!((default.batch_size(), default.batch_timeout()), (100, Duration::from_secs(1)));
    assert_eq!(BatchConfigError::ZeroSize.to_string(), "batch_size must be at least 1");
}

#[test]
fn a_batch_closes_when_full_and_the_next_one_opens_anew() {
    let t0 = Instant::now();
    let mut b = batcher(3, 100);
    assert_eq!(b.push("a", 1, t0), None);
    assert_eq!(b.push("a", 2, t0 + ms(10)), None);
    let full = b.push("a", 3, t0 + ms(20)).expect("full");
    assert_eq!(full, Batch { key: "a", items: vec![1, 2, 3], opened_at: t0, closed: Closed::Full });
    assert!(b.is_empty());
    assert_eq!(b.next_deadline(), None, "a full batch leaves no deadline behind");
    assert_eq!(b.push("a", 4, t0 + ms(30)), None);
    assert_eq!(b.next_deadline(), Some(t0 + ms(130)), "the new batch times out from its own first item");
}

#[test]
fn a_size_of_one_closes_at_every_push() {
    let t0 = Instant::now();
    let mut b = batcher(1, 100);
    for i in 0..5 {
        let batch = b.push("a", i, t0).expect("full at once");
        assert_eq!((batch.items, batch.closed), (vec![i], Closed::Full));
    }
    assert_eq!(b.pending_items(), 0);
}

#[test]
fn the_timeout_counts_from_the_first_item() {
    let t0 = Instant::now();
    let mut b = batcher(10, 50);
    b.push("a", 1, t0);
    b.push("a", 2, t0 + ms(45));
    assert_eq!(b.next_deadline(), Some(t0 + ms(50)));
    assert!(b.poll(t0 + ms(49)).is_empty());
    let due = b.poll(t0 + ms(50));
    assert_eq!(due, vec![Batch { key: "a", items: vec![1, 2], opened_at: t0, closed: Closed::TimedOut }]);
    assert!(b.poll(t0 + ms(500)).is_empty());
}

#[test]
fn poll_returns_due_batches_by_deadline_then_opening_order() {
    let t0 = Instant::now();
    let mut b = batcher(10, 50);
    b.push("late", 1, t0 + ms(20));
    b.push("first", 2, t0);
    b.push("tie", 3, t0 + ms(10));
    b.push("tie-2", 4, t0 + ms(10));
    b.push("open", 5, t0 + ms(40));
    assert_eq!(b.open_batches(), 5);
    let keys: Vec<&str> = b.poll(t0 + ms(70)).into_iter().map(|batch| batch.key).collect();
    assert_eq!(keys, vec!["first", "tie", "tie-2", "late"]);
    assert_eq!(b.next_deadline(), Some(t0 + ms(90)));
    assert_eq!((b.open_batches(), b.pending_items()), (1, 1));
}

#[test]
fn drain_closes_everything_in_opening_order() {
    let t0 = Instant::now();
    let mut b = batcher(10, 50);
    for (i, key) in ["c", "a", "b", "a"].into_iter().enumerate() {
        b.push(key, i as u32, t0 + ms(i as u64));
    }
    let drained: Vec<(&str, Vec<u32>, Closed)> =
        b.drain().into_iter().map(|batch| (batch.key, batch.items, batch.closed)).collect();
    assert_eq!(
        drained,
        vec![("c", vec![0], Closed::Drained), ("a", vec![1, 3], Closed::Drained), ("b", vec![2], Closed::Drained)]
    );
    assert!(b.is_empty());
    assert_eq!((b.pending_items(), b.next_deadline()), (0, None));
    assert!(b.drain().is_empty());
}

#[test]
fn flush_closes_one_key() {
    let t0 = Instant::now();
    let mut b = batcher(10, 50);
    b.push("a", 1, t0);
    b.push("b", 2, t0 + ms(5));
    let flushed = b.flush(&"a").expect("a is open");
    assert_eq!((flushed.items, flushed.closed), (vec![1], Closed::Drained));
    assert_eq!(b.flush(&"a"), None);
    assert_eq!(b.next_deadline(), Some(t0 + ms(55)));
}

#[test]
fn a_timeout_beyond_the_clock_never_fires() {
    let t0 = Instant::now();
    let mut b: Batcher<u32, &str> = Batcher::new(BatchConfig::new(2, Duration::MAX).expect("valid"));
    b.push("a", 1, t0);
    assert_eq!(b.next_deadline(), None);
    assert!(b.poll(t0 + Duration::from_secs(86_400 * 365)).is_empty());
    assert_eq!(b.push("a", 2, t0).map(|batch| batch.items), Some(vec![1, 2]));
    b.push("b", 3, t0);
    assert_eq!(b.drain().len(), 1);
}

#[derive(Debug, Clone)]
enum Op {
    Push(u8),
    Advance(u64),
    Poll,
    Flush(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0u8..4).prop_map(Op::Push),
        2 => (0u64..80).prop_map(Op::Advance),
        2 => Just(Op::Poll),
        1 => (0u8..4).prop_map(Op::Flush),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// For any pushes, clock moves, polls and flushes, then a drain: every item comes
    /// out exactly once, each key's items in push order; no batch is larger than the
    /// size, full batches are exactly the size, and a batch times out only once its
    /// deadline passed and never stays open after a poll past its deadline.
    #[test]
    fn no_item_is_lost_or_reordered(
        size in 1usize..6,
        timeout_ms in 1u64..100,
        ops in proptest::collection::vec(op(), 0..200),
    ) {
        let t0 = Instant::now();
        let timeout = ms(timeout_ms);
        let mut b: Batcher<u32, u8> = Batcher::new(BatchConfig::new(size, timeout)?);
        let mut now = t0;
        let mut pushed: HashMap<u8, Vec<u32>> = HashMap::new();
        let mut out: Vec<(Batch<u32, u8>, Instant)> = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            let item = u32::try_from(i).expect("few ops");
            match *op {
                Op::Push(key) => {
                    pushed.entry(key).or_default().push(item);
                    out.extend(b.push(key, item, now).map(|batch| (batch, now)));
                }
                Op::Advance(n) => now += ms(n),
                Op::Poll => {
                    out.extend(b.poll(now).into_iter().map(|batch| (batch, now)));
                    prop_assert!(b.next_deadline().is_none_or(|d| d > now));
                }
                Op::Flush(key) => out.extend(b.flush(&key).map(|batch| (batch, now))),
            }
            let waiting: usize = pushed.values().map(Vec::len).sum::<usize>()
                - out.iter().map(|(batch, _)| batch.items.len()).sum::<usize>();
            prop_assert_eq!(b.pending_items(), waiting);
        }
        out.extend(b.drain().into_iter().map(|batch| (batch, now)));
        prop_assert!(b.is_empty());

        let mut got: HashMap<u8, Vec<u32>> = HashMap::new();
        for (batch, at) in &out {
            prop_assert!(!batch.items.is_empty() && batch.items.len() <= size);
            match batch.closed {
                Closed::Full => prop_assert_eq!(batch.items.len(), size),
                Closed::TimedOut => prop_assert!(*at >= batch.opened_at + timeout),
                Closed::Drained => {}
            }
            got.entry(batch.key).or_default().extend(batch.items.iter().copied());
        }
        prop_assert_eq!(got, pushed);
    }

    /// Pushing runs of items with `push_all` closes the same batches, with the same
    /// items, as pushing them one by one.
    #[test]
    fn push_all_is_pushes_one_by_one(
        size in 1usize..8,
        runs in proptest::collection::vec((0u8..3, 0usize..20), 0..30),
    ) {
        let t0 = Instant::now();
        let mut one: Batcher<u32, u8> = Batcher::new(BatchConfig::new(size, ms(10))?);
        let mut all: Batcher<u32, u8> = Batcher::new(BatchConfig::new(size, ms(10))?);
        let (mut by_one, mut by_all) = (Vec::new(), Vec::new());
        let mut next = 0u32;
        for (key, n) in runs {
            let items: Vec<u32> = (next..next + u32::try_from(n).expect("small")).collect();
            next += u32::try_from(n).expect("small");
            by_one.extend(items.iter().filter_map(|i| one.push(key, *i, t0)));
            by_all.extend(all.push_all(key, items, t0));
            prop_assert_eq!(one.pending_items(), all.pending_items());
        }
        by_one.extend(one.drain());
        by_all.extend(all.drain());
        prop_assert_eq!(by_one, by_all);
    }
}
