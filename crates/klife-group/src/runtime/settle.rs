//! What a handler's [`Action`] means for its batch, sans-io: the offset that becomes
//! committable, the records given again, the records to dead-letter first, and the
//! commit's metadata — or the misuse that refuses the batch.

use super::handler::{Action, MisuseError, RecordAction};

/// The most bytes of reasons that go into a commit's metadata (Kafka's
/// `offset.metadata.max.bytes` is 4096 by default).
pub(crate) const MAX_METADATA_BYTES: usize = 1024;

/// A dead letter to produce before the batch's offset is committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeadLetter {
    /// The record's index in the batch.
    pub(crate) index: usize,
    /// The dead-letter topic.
    pub(crate) topic: String,
    /// Why.
    pub(crate) reason: String,
}

/// What a batch settles to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Settlement {
    /// The offset after the records done, to commit (`None`: nothing done).
    pub(crate) done: Option<i64>,
    /// The index of the first record given again: it and every record after it come
    /// first in the next batch (`None`: none).
    pub(crate) retry_from: Option<usize>,
    /// Records to produce to dead-letter topics first, in order.
    pub(crate) dead_letters: Vec<DeadLetter>,
    /// Skip and dead-letter reasons, for the commit's metadata.
    pub(crate) metadata: Option<String>,
}

/// Settles a batch of records at `offsets` (ascending) of `topic`-`partition`, whose
/// records end at `end` (the offset after the batch: past control records and
/// filtered ones at the end of a fetch), under `action`.
pub(crate) fn settle(
    topic: &str,
    partition: i32,
    offsets: &[i64],
    end: i64,
    action: Action,
) -> Result<Settlement, MisuseError> {
    let each: Vec<RecordAction> = match action {
        Action::Commit => vec![RecordAction::Commit; offsets.len()],
        Action::Retry => vec![RecordAction::Retry; offsets.len()],
        Action::Skip { reason } => vec![RecordAction::Skip { reason }; offsets.len()],
        Action::DeadLetter { topic, reason } => vec![RecordAction::DeadLetter { topic, reason }; offsets.len()],
        Action::Each(each) => each,
    };
    if each.len() != offsets.len() {
        return Err(MisuseError::ActionCount {
            topic: topic.to_owned(),
            partition,
            records: offsets.len(),
            actions: each.len(),
        });
    }
    let retry_from = each.iter().position(|a| *a == RecordAction::Retry);
    if let Some(first) = retry_from {
        if let Some(above) = each[first..].iter().rposition(|a| *a != RecordAction::Retry) {
            return Err(MisuseError::CommitAboveRetry {
                topic: topic.to_owned(),
                partition,
                committed: offsets[first + above],
                retried: offsets[first],
            });
        }
    }
    let done = match retry_from {
        None if offsets.is_empty() => None,
        None => Some(end.max(offsets[offsets.len() - 1].saturating_add(1))),
        Some(0) => None,
        Some(first) => Some(offsets[first]),
    };
    let mut dead_letters = Vec::new();
    let mut reasons = Vec::new();
    for (index, action) in each.into_iter().enumerate() {
        match action {
            RecordAction::Skip { reason } => reasons.push(format!("skipped {}: {reason}", offsets[index])),
            RecordAction::DeadLetter { topic, reason } => {
                reasons.push(format!("dead-lettered {} to {topic}: {reason}", offsets[index]));
                dead_letters.push(DeadLetter { index, topic, reason });
            }
            RecordAction::Commit | RecordAction::Retry => {}
        }
    }
    let metadata = (!reasons.is_empty()).then(|| cut(reasons.join("; "), MAX_METADATA_BYTES));
    Ok(Settlement { done, retry_from, dead_letters, metadata })
}

/// `text` cut to at most `max` bytes on a character boundary, marked with `…` when cut.
fn cut(text: String, max: usize) -> String {
    if text.len() <= max {
        return text;
    }
    let mark = "…";
    let mut at = max - mark.len();
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    format!("{}{mark}", &text[..at])
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use proptest::prelude::*;

    use super::*;

    fn skip(reason: &str) -> RecordAction {
        RecordAction::Skip { reason: reason.into() }
    }

    #[test]
    fn a_batch_commit_commits_up_to_the_end_of_the_fetch() {
        let s = settle("t", 0, &[10, 11, 13], 15, Action::Commit).unwrap();
        assert_eq!(s, Settlement { done: Some(15), retry_from: None, dead_letters: vec![], metadata: None });
        // An end before the last record (records given again) still passes the last one.
        assert_eq!(settle("t", 0, &[10, 11], -1, Action::Commit).unwrap().done, Some(12));
    }

    #[test]
    fn a_batch_ending_at_the_last_offset_there_is_commits_without_overflow() {
        // Found while writing the `commit_metadata` fuzz target: `last + 1` overflowed.
        assert_eq!(settle("t", 0, &[i64::MAX], i64::MIN, Action::Commit).unwrap().done, Some(i64::MAX));
    }

    #[test]
    fn a_batch_retry_commits_nothing_and_gives_every_record_again() {
        let s = settle("t", 0, &[10, 11], 12, Action::Retry).unwrap();
        assert_eq!((s.done, s.retry_from), (None, Some(0)));
    }

    #[test]
    fn records_done_before_the_first_retried_one_are_committed_up_to_it() {
        let each = vec![RecordAction::Commit, skip("bad json"), RecordAction::Retry, RecordAction::Retry];
        let s = settle("t", 3, &[10, 12, 14, 15], 16, Action::Each(each)).unwrap();
        assert_eq!((s.done, s.retry_from), (Some(14), Some(2)));
        assert_eq!(s.metadata.as_deref(), Some("skipped 12: bad json"));
    }

    #[test]
    fn committing_above_a_retried_record_is_refused_with_both_offsets() {
        let each = vec![RecordAction::Retry, RecordAction::Commit];
        let e = settle("orders", 3, &[10, 11], 12, Action::Each(each)).unwrap_err();
        assert_eq!(
            e,
            MisuseError::CommitAboveRetry { topic: "orders".into(), partition: 3, committed: 11, retried: 10 }
        );
        assert!(e.to_string().contains("offset 10 would never be delivered again"), "{e}");
    }

    #[test]
    fn a_wrong_number_of_record_actions_is_refused() {
        let e = settle("t", 0, &[1, 2], 3, Action::Each(vec![RecordAction::Commit])).unwrap_err();
        assert!(matches!(e, MisuseError::ActionCount { records: 2, actions: 1, .. }));
    }

    #[test]
    fn dead_letters_are_listed_in_order_with_their_reasons_in_the_metadata() {
        let dl = |t: &str| RecordAction::DeadLetter { topic: t.into(), reason: "poison".into() };
        let s = settle("t", 0, &[5, 6, 7], 8, Action::Each(vec![dl("dlq"), RecordAction::Commit, dl("dlq2")])).unwrap();
        assert_eq!(s.done, Some(8));
        assert_eq!(
            s.dead_letters.iter().map(|d| (d.index, d.topic.as_str())).collect::<Vec<_>>(),
            [(0, "dlq"), (2, "dlq2")]
        );
        assert_eq!(s.metadata.as_deref(), Some("dead-lettered 5 to dlq: poison; dead-lettered 7 to dlq2: poison"));
    }

    #[test]
    fn long_reasons_are_cut_on_a_character_boundary() {
        let reason = "é".repeat(2000);
        let s = settle("t", 0, &[1], 2, Action::Skip { reason }).unwrap();
        let m = s.metadata.unwrap();
        assert!(m.len() <= MAX_METADATA_BYTES && m.ends_with('…'), "{}", m.len());
    }

    fn record_action() -> impl Strategy<Value = RecordAction> {
        prop_oneof![
            Just(RecordAction::Commit),
            Just(RecordAction::Retry),
            Just(skip("s")),
            Just(RecordAction::DeadLetter { topic: "d".into(), reason: "r".into() }),
        ]
    }

    proptest! {
        /// Whatever the actions: a batch is refused exactly when something not retried
        /// follows a retried record; otherwise the committable offset never passes the
        /// first retried record, and the records given again are exactly the retried ones.
        #[test]
        fn nothing_retried_is_ever_committed_past(
            gaps in proptest::collection::vec(1..4i64, 1..20),
            actions in proptest::collection::vec(record_action(), 1..20),
        ) {
            let n = gaps.len().min(actions.len());
            let offsets: Vec<i64> = gaps[..n].iter().scan(100, |at, g| { *at += g; Some(*at) }).collect();
            let actions = actions[..n].to_vec();
            let end = offsets[n - 1] + 2;
            let first_retry = actions.iter().position(|a| *a == RecordAction::Retry);
            let misuse = first_retry.is_some_and(|f| actions[f..].iter().any(|a| *a != RecordAction::Retry));
            match settle("t", 0, &offsets, end, Action::Each(actions.clone())) {
                Err(MisuseError::CommitAboveRetry { committed, retried, .. }) => {
                    prop_assert!(misuse);
                    prop_assert!(committed > retried);
                }
                Err(e) => prop_assert!(false, "{e}"),
                Ok(s) => {
                    prop_assert!(!misuse);
                    prop_assert_eq!(s.retry_from, first_retry);
                    match first_retry {
                        Some(f) => {
                            prop_assert_eq!(s.done, (f > 0).then(|| offsets[f]));
                            prop_assert!(actions[f..].iter().all(|a| *a == RecordAction::Retry));
                        }
                        None => prop_assert_eq!(s.done, Some(end)),
                    }
                    let dead = actions.iter().filter(|a| matches!(a, RecordAction::DeadLetter { .. })).count();
                    prop_assert_eq!(s.dead_letters.len(), dead);
                }
            }
        }
    }
}
