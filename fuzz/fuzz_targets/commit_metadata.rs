//! Settles a batch of arbitrary offsets under arbitrary handler actions (with
//! arbitrary reasons, dead-letter topics and fetch ends): never a panic, and what
//! settles keeps the rules a commit relies on — the commit's metadata fits its cap and
//! names every reason given (cut on a character boundary), the offset committed is
//! never below a record given again nor above the end of what was handled, and the
//! dead letters come in batch order.
#![no_main]

use arbitrary::{Arbitrary, Unstructured};
use klife_group::fuzzing::{MAX_METADATA_BYTES, settle};
use klife_group::runtime::{Action, MisuseError, RecordAction};
use libfuzzer_sys::fuzz_target;

fn record_action(u: &mut Unstructured<'_>) -> arbitrary::Result<RecordAction> {
    Ok(match u.int_in_range(0..=3)? {
        0 => RecordAction::Commit,
        1 => RecordAction::Retry,
        2 => RecordAction::Skip { reason: String::arbitrary(u)? },
        _ => RecordAction::DeadLetter { topic: String::arbitrary(u)?, reason: String::arbitrary(u)? },
    })
}

fn input(u: &mut Unstructured<'_>) -> arbitrary::Result<(Vec<i64>, i64, Action)> {
    // Ascending offsets, as a fetch gives them, from anywhere in the range.
    let n = u.int_in_range(0..=64)?;
    let mut offsets = Vec::with_capacity(n);
    let mut next = i64::arbitrary(u)?;
    for _ in 0..n {
        offsets.push(next);
        let gap = u.int_in_range(1..=3)?;
        match next.checked_add(gap) {
            Some(o) => next = o,
            None => break,
        }
    }
    let end = i64::arbitrary(u)?;
    let action = match u.int_in_range(0..=4)? {
        0 => Action::Commit,
        1 => Action::Retry,
        2 => Action::Skip { reason: String::arbitrary(u)? },
        3 => Action::DeadLetter { topic: String::arbitrary(u)?, reason: String::arbitrary(u)? },
        _ => {
            // Mostly one per record; sometimes a count that does not match.
            let count = if u.ratio(1, 8)? { u.int_in_range(0..=70)? } else { offsets.len() };
            let mut each = Vec::with_capacity(count);
            for _ in 0..count {
                each.push(record_action(u)?);
            }
            Action::Each(each)
        }
    };
    Ok((offsets, end, action))
}

fuzz_target!(|data: &[u8]| {
    let Ok((offsets, end, action)) = input(&mut Unstructured::new(data)) else { return };
    let each: Vec<RecordAction> = match &action {
        Action::Each(each) => each.clone(),
        Action::Commit => vec![RecordAction::Commit; offsets.len()],
        Action::Retry => vec![RecordAction::Retry; offsets.len()],
        Action::Skip { reason } => vec![RecordAction::Skip { reason: reason.clone() }; offsets.len()],
        Action::DeadLetter { topic, reason } => {
            vec![RecordAction::DeadLetter { topic: topic.clone(), reason: reason.clone() }; offsets.len()]
        }
        _ => return,
    };
    let settled = match settle(&offsets, end, action) {
        Ok(s) => s,
        Err(MisuseError::ActionCount { .. }) => {
            assert_ne!(each.len(), offsets.len(), "refused a batch with one action per record");
            return;
        }
        Err(MisuseError::CommitAboveRetry { .. }) => {
            let first = each.iter().position(|a| *a == RecordAction::Retry).expect("a retry");
            assert!(each[first..].iter().any(|a| *a != RecordAction::Retry), "refused without a commit above a retry");
            return;
        }
        Err(e) => panic!("unexpected refusal: {e}"),
    };
    // The metadata: capped, present exactly when a reason was given.
    let reasons = each.iter().filter(|a| matches!(a, RecordAction::Skip { .. } | RecordAction::DeadLetter { .. }));
    assert_eq!(settled.metadata.is_some(), reasons.count() > 0);
    if let Some(m) = &settled.metadata {
        assert!(m.len() <= MAX_METADATA_BYTES, "metadata of {} bytes", m.len());
    }
    // The commit: never at or above a record given again, never below the records done.
    match settled.retry_from {
        Some(first) => {
            assert_eq!(each[first], RecordAction::Retry);
            assert!(each[..first].iter().all(|a| *a != RecordAction::Retry));
            assert!(each[first..].iter().all(|a| *a == RecordAction::Retry));
            let expected = if first == 0 { None } else { Some(offsets[first]) };
            assert_eq!(settled.done, expected);
        }
        None => match offsets.last() {
            None => assert_eq!(settled.done, None),
            Some(last) => {
                let done = settled.done.expect("a commit for a batch done");
                assert!(done > *last || (*last == i64::MAX && done == i64::MAX), "commit {done} not past {last}");
                assert!(done >= end, "commit {done} below the end {end}");
            }
        },
    }
    // The dead letters: in batch order, each a dead-letter action.
    let indices: Vec<usize> = settled.dead_letters.iter().map(|d| d.0).collect();
    assert!(indices.windows(2).all(|w| w[0] < w[1]));
    for (index, topic, reason) in &settled.dead_letters {
        assert_eq!(&each[*index], &RecordAction::DeadLetter { topic: topic.clone(), reason: reason.clone() });
    }
});
