//! The transaction coordinator's state, sans-io: transactional ids, producer ids and
//! epochs, the partitions and groups of each open transaction, offsets waiting for the
//! commit, and the periodic abort of transactions open past their timeout.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use klife_protocol::ErrorCode;

/// Kafka's default `transaction.max.timeout.ms`.
pub(crate) const MAX_TRANSACTION_TIMEOUT_MS: i32 = 900_000;

/// Kafka's default `transaction.abort.timed.out.transaction.cleanup.interval.ms`: how
/// often the coordinator looks for transactions open past their timeout.
pub(crate) const DEFAULT_ABORT_CHECK_INTERVAL_MS: i64 = 10_000;

/// An offset committed inside a transaction, applied when it commits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PendingOffset {
    pub(crate) group: String,
    pub(crate) topic: String,
    pub(crate) partition: i32,
    pub(crate) offset: i64,
    pub(crate) leader_epoch: i32,
    pub(crate) metadata: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TxnState {
    Empty,
    Ongoing,
    CompleteCommit,
    CompleteAbort,
}

#[derive(Debug, Clone)]
struct TxnMeta {
    producer_id: i64,
    epoch: i16,
    /// The producer id and epoch the last EndTxn v5+ replaced: a retry of that EndTxn
    /// still carries them.
    previous: Option<(i64, i16)>,
    state: TxnState,
    /// The `transaction_timeout_ms` of the last InitProducerId.
    timeout_ms: i32,
    /// When the open transaction started: its first partition or group was added
    /// (Kafka's `txnStartTimestamp`).
    started_ms: Option<i64>,
    partitions: BTreeSet<(String, i32)>,
    groups: BTreeSet<String>,
    pending: Vec<PendingOffset>,
}

/// A transaction that just ended: markers go to `partitions`, and on commit `offsets`
/// become the groups' committed offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Ended {
    pub(crate) producer_id: i64,
    pub(crate) epoch: i16,
    pub(crate) commit: bool,
    pub(crate) partitions: Vec<(String, i32)>,
    pub(crate) offsets: Vec<PendingOffset>,
}

/// Every transactional id the cluster knows, and when to look next for transactions
/// open past their timeout.
#[derive(Debug, Clone)]
pub(crate) struct Transactions {
    by_id: HashMap<String, TxnMeta>,
    abort_check_interval_ms: i64,
    next_abort_check_ms: i64,
}

impl Default for Transactions {
    fn default() -> Self {
        Transactions::new(DEFAULT_ABORT_CHECK_INTERVAL_MS, 0)
    }
}

impl TxnMeta {
    /// Marks the transaction started at `now_ms` unless it already is.
    fn start(&mut self, now_ms: i64) {
        if self.state != TxnState::Ongoing {
            self.state = TxnState::Ongoing;
            self.started_ms = Some(now_ms);
        }
    }

    fn finish(&mut self, commit: bool) -> Ended {
        self.state = if commit { TxnState::CompleteCommit } else { TxnState::CompleteAbort };
        self.started_ms = None;
        let partitions = std::mem::take(&mut self.partitions).into_iter().collect();
        self.groups.clear();
        let offsets = std::mem::take(&mut self.pending);
        Ended {
            producer_id: self.producer_id,
            epoch: self.epoch,
            commit,
            partitions,
            offsets: if commit { offsets } else { Vec::new() },
        }
    }
}

impl Transactions {
    /// No transactional ids yet; the first look for timed-out transactions comes one
    /// `abort_check_interval_ms` after `now_ms`, as Kafka schedules it from its start.
    pub(crate) fn new(abort_check_interval_ms: i64, now_ms: i64) -> Transactions {
        let interval = abort_check_interval_ms.max(1);
        Transactions {
            by_id: HashMap::new(),
            abort_check_interval_ms: interval,
            next_abort_check_ms: now_ms.saturating_add(interval),
        }
    }

    /// InitProducerId with a transactional id. `expected` is the producer id and epoch the
    /// client sent (v3+, -1 when none). An open transaction is aborted first (Kafka
    /// answers CONCURRENT_TRANSACTIONS until that abort is done; here it is immediate).
    pub(crate) fn init(
        &mut self,
        transactional_id: &str,
        timeout_ms: i32,
        expected: (i64, i16),
        allocate: &mut dyn FnMut() -> i64,
    ) -> Result<(i64, i16, Option<Ended>), ErrorCode> {
        if timeout_ms <= 0 || timeout_ms > MAX_TRANSACTION_TIMEOUT_MS {
            return Err(ErrorCode::InvalidTransactionTimeout);
        }
        let Some(meta) = self.by_id.get_mut(transactional_id) else {
            let producer_id = allocate();
            self.by_id.insert(
                transactional_id.to_owned(),
                TxnMeta {
                    producer_id,
                    epoch: 0,
                    previous: None,
                    state: TxnState::Empty,
                    timeout_ms,
                    started_ms: None,
                    partitions: BTreeSet::new(),
                    groups: BTreeSet::new(),
                    pending: Vec::new(),
                },
            );
            return Ok((producer_id, 0, None));
        };
        if expected.0 >= 0 && (expected.0 != meta.producer_id || expected.1 != meta.epoch) {
            return Err(ErrorCode::ProducerFenced);
        }
        let aborted = if meta.state == TxnState::Ongoing {
            // The markers carry the new epoch: they fence the old producer everywhere.
            meta.epoch = meta.epoch.saturating_add(1);
            Some(meta.finish(false))
        } else {
            if meta.epoch >= i16::MAX - 1 {
                meta.producer_id = allocate();
                meta.epoch = 0;
            } else {
                meta.epoch += 1;
            }
            None
        };
        if aborted.is_some() && meta.epoch >= i16::MAX - 1 {
            meta.producer_id = allocate();
            meta.epoch = 0;
        }
        meta.state = TxnState::Empty;
        meta.previous = None;
        meta.timeout_ms = timeout_ms;
        meta.started_ms = None;
        Ok((meta.producer_id, meta.epoch, aborted))
    }

    fn checked(&mut self, transactional_id: &str, producer_id: i64, epoch: i16) -> Result<&mut TxnMeta, ErrorCode> {
        self.check_producer(transactional_id, producer_id, epoch)?;
        self.by_id.get_mut(transactional_id).ok_or(ErrorCode::InvalidProducerIdMapping)
    }

    /// Whether `producer_id` and `epoch` are the transactional id's current ones, as the
    /// coordinator checks before anything else: INVALID_PRODUCER_ID_MAPPING if not the
    /// id, PRODUCER_FENCED if not the epoch.
    pub(crate) fn check_producer(&self, transactional_id: &str, producer_id: i64, epoch: i16) -> Result<(), ErrorCode> {
        let meta = self.by_id.get(transactional_id).ok_or(ErrorCode::InvalidProducerIdMapping)?;
        if meta.producer_id != producer_id {
            return Err(ErrorCode::InvalidProducerIdMapping);
        }
        if meta.epoch != epoch {
            return Err(ErrorCode::ProducerFenced);
        }
        Ok(())
    }

    /// AddPartitionsToTxn. The transaction's clock starts with its first partition or
    /// group.
    pub(crate) fn add_partitions(
        &mut self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        partitions: impl IntoIterator<Item = (String, i32)>,
        now_ms: i64,
    ) -> Result<(), ErrorCode> {
        let meta = self.checked(transactional_id, producer_id, epoch)?;
        meta.start(now_ms);
        meta.partitions.extend(partitions);
        Ok(())
    }

    /// AddOffsetsToTxn.
    pub(crate) fn add_offsets(
        &mut self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        group: &str,
        now_ms: i64,
    ) -> Result<(), ErrorCode> {
        let meta = self.checked(transactional_id, producer_id, epoch)?;
        meta.start(now_ms);
        meta.groups.insert(group.to_owned());
        Ok(())
    }

    /// TxnOffsetCommit: the offsets wait for the transaction's end.
    pub(crate) fn commit_offsets(
        &mut self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        offsets: Vec<PendingOffset>,
    ) -> Result<(), ErrorCode> {
        let meta = self.checked(transactional_id, producer_id, epoch)?;
        if meta.state != TxnState::Ongoing || offsets.iter().any(|o| !meta.groups.contains(&o.group)) {
            return Err(ErrorCode::InvalidTxnState);
        }
        for o in offsets {
            meta.pending.retain(|p| (&p.group, &p.topic, p.partition) != (&o.group, &o.topic, o.partition));
            meta.pending.push(o);
        }
        Ok(())
    }

    /// EndTxn. A retried EndTxn of a transaction that already ended the same way is
    /// answered with success and nothing to do.
    ///
    /// With `bump_epoch` (EndTxn v5+, transaction version 2, KIP-890: Kafka takes the
    /// client's transaction version from the request version alone) every end bumps
    /// the producer epoch, and the markers carry the new one; when the epoch runs out,
    /// the transactional id gets a new producer id at epoch 0 after the markers. A retry
    /// carries the id and epoch the end replaced; an abort with no open transaction is
    /// allowed (it bumps the epoch and writes no marker).
    pub(crate) fn end(
        &mut self,
        transactional_id: &str,
        producer_id: i64,
        epoch: i16,
        commit: bool,
        bump_epoch: bool,
        allocate: &mut dyn FnMut() -> i64,
    ) -> Result<Option<Ended>, ErrorCode> {
        if !bump_epoch {
            let meta = self.checked(transactional_id, producer_id, epoch)?;
            return match (meta.state, commit) {
                (TxnState::Ongoing, _) => {
                    meta.previous = None;
                    Ok(Some(meta.finish(commit)))
                }
                (TxnState::CompleteCommit, true) | (TxnState::CompleteAbort, false) => Ok(None),
                _ => Err(ErrorCode::InvalidTxnState),
            };
        }
        let meta = self.by_id.get_mut(transactional_id).ok_or(ErrorCode::InvalidProducerIdMapping)?;
        let completed = matches!(meta.state, TxnState::CompleteCommit | TxnState::CompleteAbort);
        let retry = completed && meta.previous == Some((producer_id, epoch));
        if meta.producer_id != producer_id && !retry {
            return Err(ErrorCode::InvalidProducerIdMapping);
        }
        if !retry && epoch != meta.epoch {
            return Err(ErrorCode::ProducerFenced);
        }
        match (meta.state, commit, retry) {
            (TxnState::CompleteCommit, true, true) | (TxnState::CompleteAbort, false, true) => return Ok(None),
            (TxnState::Ongoing, _, _)
            | (TxnState::Empty | TxnState::CompleteCommit | TxnState::CompleteAbort, false, false) => {}
            _ => return Err(ErrorCode::InvalidTxnState),
        }
        let before = (meta.producer_id, meta.epoch);
        let exhausted = meta.epoch >= i16::MAX - 1;
        meta.epoch = meta.epoch.saturating_add(1);
        let ended = meta.finish(commit);
        if exhausted {
            meta.producer_id = allocate();
            meta.epoch = 0;
        }
        meta.previous = Some(before);
        Ok(Some(ended))
    }

    /// Runs the look for timed-out transactions when it is due at `now_ms`, then
    /// schedules the next one interval later (several intervals later when the clock
    /// jumped past them: one look covers them all). Returns the transactions it aborted.
    pub(crate) fn tick(&mut self, now_ms: i64) -> Vec<(String, Ended)> {
        if now_ms < self.next_abort_check_ms {
            return Vec::new();
        }
        let missed = (now_ms - self.next_abort_check_ms) / self.abort_check_interval_ms;
        self.next_abort_check_ms = self
            .next_abort_check_ms
            .saturating_add(missed.saturating_add(1).saturating_mul(self.abort_check_interval_ms));
        self.abort_timed_out(now_ms)
    }

    /// Aborts every open transaction whose timeout has passed at `now_ms` (started
    /// plus `transaction_timeout_ms` before `now_ms`, as Kafka's
    /// `TransactionStateManager.timedOutTransactions`), as Kafka's
    /// `TransactionCoordinator.abortTimedOutTransactions` does: the producer epoch goes
    /// up by one, which fences the producer, and the transaction ends with an abort
    /// under the new epoch (its markers carry it; its pending offsets are dropped). The
    /// producer id stays, even when that epoch is the last one: the next InitProducerId
    /// replaces it. The epoch the abort replaced is remembered as an EndTxn's is, so that
    /// the producer's own EndTxn v5+ abort with it is answered as a retry of this one
    /// (Kafka recognises it from the epoch alone). By transactional id.
    pub(crate) fn abort_timed_out(&mut self, now_ms: i64) -> Vec<(String, Ended)> {
        let mut out: Vec<(String, Ended)> = self
            .by_id
            .iter_mut()
            .filter(|(_, m)| {
                m.state == TxnState::Ongoing
                    && m.started_ms.is_some_and(|s| s.saturating_add(i64::from(m.timeout_ms)) < now_ms)
            })
            .map(|(id, m)| {
                let before = (m.producer_id, m.epoch);
                m.epoch = m.epoch.saturating_add(1);
                let ended = m.finish(false);
                m.previous = Some(before);
                (id.clone(), ended)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Whether a transactional batch of `producer_id` at `epoch` may be written to
    /// `topic`-`partition`: the partition must have been added to its open transaction.
    pub(crate) fn check_produce(
        &self,
        producer_id: i64,
        epoch: i16,
        topic: &str,
        partition: i32,
    ) -> Result<(), ErrorCode> {
        let Some(meta) = self.by_id.values().find(|m| m.producer_id == producer_id) else {
            return Err(ErrorCode::InvalidTxnState);
        };
        if epoch < meta.epoch {
            return Err(ErrorCode::InvalidProducerEpoch);
        }
        if meta.state != TxnState::Ongoing || !meta.partitions.contains(&(topic.to_owned(), partition)) {
            return Err(ErrorCode::InvalidTxnState);
        }
        Ok(())
    }

    /// Partitions of open transactions with pending offsets for `group` (for
    /// OffsetFetch with `require_stable`).
    pub(crate) fn has_pending_offset(&self, group: &str, topic: &str, partition: i32) -> bool {
        self.by_id.values().any(|m| {
            m.state == TxnState::Ongoing
                && m.pending.iter().any(|p| p.group == group && p.topic == topic && p.partition == partition)
        })
    }

    /// Drops the offsets of `group` waiting in open transactions: all of them, or one
    /// partition's (DeleteGroups and OffsetDelete, whose tombstones remove pending
    /// transactional offsets too in Kafka).
    pub(crate) fn forget_offsets(&mut self, group: &str, partition: Option<(&str, i32)>) {
        for m in self.by_id.values_mut() {
            m.pending.retain(|p| {
                p.group != group || partition.is_some_and(|(t, i)| (p.topic.as_str(), p.partition) != (t, i))
            });
        }
    }

    /// Forgets `topic` in every open transaction (the topic was deleted).
    pub(crate) fn forget_topic(&mut self, topic: &str) {
        for m in self.by_id.values_mut() {
            m.partitions.retain(|(t, _)| t != topic);
        }
    }

    /// The state of a transactional id, for tests.
    #[cfg(test)]
    fn state(&self, transactional_id: &str) -> Option<TxnState> {
        self.by_id.get(transactional_id).map(|m| m.state)
    }

    /// Producer id and epoch per transactional id.
    pub(crate) fn producers(&self) -> BTreeMap<String, (i64, i16)> {
        self.by_id.iter().map(|(k, m)| (k.clone(), (m.producer_id, m.epoch))).collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn counter() -> impl FnMut() -> i64 {
        let mut next = 1000;
        move || {
            next += 1;
            next
        }
    }

    fn offset(group: &str, o: i64) -> PendingOffset {
        PendingOffset {
            group: group.into(),
            topic: "t".into(),
            partition: 0,
            offset: o,
            leader_epoch: -1,
            metadata: None,
        }
    }

    #[test]
    fn a_transaction_commits_its_partitions_and_offsets() {
        let mut txns = Transactions::default();
        let mut alloc = counter();
        let (pid, epoch, none) = txns.init("app", 60_000, (-1, -1), &mut alloc).unwrap();
        assert_eq!((pid, epoch, none), (1001, 0, None));
        assert_eq!(txns.check_produce(pid, 0, "t", 0), Err(ErrorCode::InvalidTxnState));
        txns.add_partitions("app", pid, 0, [("t".into(), 0), ("t".into(), 1)], 0).unwrap();
        txns.check_produce(pid, 0, "t", 0).unwrap();
        assert_eq!(txns.check_produce(pid, 0, "t", 2), Err(ErrorCode::InvalidTxnState));
        assert_eq!(txns.commit_offsets("app", pid, 0, vec![offset("g", 5)]), Err(ErrorCode::InvalidTxnState));
        txns.add_offsets("app", pid, 0, "g", 0).unwrap();
        txns.commit_offsets("app", pid, 0, vec![offset("g", 5)]).unwrap();
        assert!(txns.has_pending_offset("g", "t", 0));
        let ended = txns.end("app", pid, 0, true, false, &mut alloc).unwrap().unwrap();
        assert_eq!(ended.partitions, vec![("t".into(), 0), ("t".into(), 1)]);
        assert_eq!(ended.offsets, vec![offset("g", 5)]);
        assert_eq!(txns.state("app"), Some(TxnState::CompleteCommit));
        // A retried commit is fine; an abort now is not.
        assert_eq!(txns.end("app", pid, 0, true, false, &mut alloc), Ok(None));
        assert_eq!(txns.end("app", pid, 0, false, false, &mut alloc), Err(ErrorCode::InvalidTxnState));
    }

    #[test]
    fn deleted_groups_and_offsets_leave_open_transactions() {
        let mut txns = Transactions::default();
        let mut alloc = counter();
        let (pid, _, _) = txns.init("app", 60_000, (-1, -1), &mut alloc).unwrap();
        for g in ["g", "h"] {
            txns.add_offsets("app", pid, 0, g, 0).unwrap();
        }
        let other = PendingOffset { partition: 1, ..offset("g", 6) };
        txns.commit_offsets("app", pid, 0, vec![offset("g", 5), other, offset("h", 7)]).unwrap();
        txns.forget_offsets("g", Some(("t", 0)));
        assert!(!txns.has_pending_offset("g", "t", 0));
        assert!(txns.has_pending_offset("g", "t", 1) && txns.has_pending_offset("h", "t", 0));
        txns.forget_offsets("g", None);
        assert!(!txns.has_pending_offset("g", "t", 1));
        let ended = txns.end("app", pid, 0, true, false, &mut alloc).unwrap().unwrap();
        assert_eq!(ended.offsets, vec![offset("h", 7)]);
    }

    #[test]
    fn aborts_drop_pending_offsets() {
        let mut txns = Transactions::default();
        let mut alloc = counter();
        let (pid, _, _) = txns.init("app", 60_000, (-1, -1), &mut alloc).unwrap();
        txns.add_offsets("app", pid, 0, "g", 0).unwrap();
        txns.commit_offsets("app", pid, 0, vec![offset("g", 5)]).unwrap();
        let ended = txns.end("app", pid, 0, false, false, &mut alloc).unwrap().unwrap();
        assert!(ended.offsets.is_empty() && !ended.commit);
    }

    #[test]
    fn a_new_init_fences_the_old_producer_and_aborts_its_transaction() {
        let mut txns = Transactions::default();
        let mut alloc = counter();
        let (pid, _, _) = txns.init("app", 60_000, (-1, -1), &mut alloc).unwrap();
        txns.add_partitions("app", pid, 0, [("t".into(), 0)], 0).unwrap();
        let (pid2, epoch2, aborted) = txns.init("app", 60_000, (-1, -1), &mut alloc).unwrap();
        assert_eq!((pid2, epoch2), (pid, 1));
        let aborted = aborted.unwrap();
        assert!(!aborted.commit);
        assert_eq!(aborted.epoch, 1, "markers carry the new epoch");
        assert_eq!(txns.end("app", pid, 0, true, false, &mut alloc), Err(ErrorCode::ProducerFenced));
        assert_eq!(txns.add_partitions("app", pid, 0, [], 0), Err(ErrorCode::ProducerFenced));
        assert_eq!(txns.check_produce(pid, 0, "t", 0), Err(ErrorCode::InvalidProducerEpoch));
        assert_eq!(txns.end("app", 999, 1, true, false, &mut alloc), Err(ErrorCode::InvalidProducerIdMapping));
        assert_eq!(txns.end("other", pid, 1, true, false, &mut alloc), Err(ErrorCode::InvalidProducerIdMapping));
        // KIP-360: the expected producer id and epoch must be the current ones.
        assert_eq!(txns.init("app", 60_000, (pid, 0), &mut alloc), Err(ErrorCode::ProducerFenced));
        assert_eq!(txns.init("app", 60_000, (pid, 1), &mut alloc).unwrap().1, 2);
        assert_eq!(txns.init("app", 0, (-1, -1), &mut alloc), Err(ErrorCode::InvalidTransactionTimeout));
    }

    #[test]
    fn with_transaction_version_2_every_end_bumps_the_epoch_and_fences_the_old_one() {
        let mut txns = Transactions::default();
        let mut alloc = counter();
        let (pid, _, _) = txns.init("app", 60_000, (-1, -1), &mut alloc).unwrap();
        txns.add_partitions("app", pid, 0, [("t".into(), 0)], 0).unwrap();
        let ended = txns.end("app", pid, 0, true, true, &mut alloc).unwrap().unwrap();
        assert_eq!((ended.producer_id, ended.epoch, ended.commit), (pid, 1, true), "markers carry the new epoch");
        assert_eq!(txns.producers()["app"], (pid, 1));
        assert_eq!(txns.state("app"), Some(TxnState::CompleteCommit));
        // The retry of that EndTxn, with the epoch it replaced: success, nothing to do.
        assert_eq!(txns.end("app", pid, 0, true, true, &mut alloc), Ok(None));
        assert_eq!(txns.end("app", pid, 0, false, true, &mut alloc), Err(ErrorCode::InvalidTxnState));
        // The old epoch is fenced everywhere else.
        assert_eq!(txns.add_partitions("app", pid, 0, [("t".into(), 0)], 0), Err(ErrorCode::ProducerFenced));
        assert_eq!(txns.add_offsets("app", pid, 0, "g", 0), Err(ErrorCode::ProducerFenced));
        assert_eq!(txns.check_produce(pid, 0, "t", 0), Err(ErrorCode::InvalidProducerEpoch));
        assert_eq!(txns.end("app", pid, 2, true, true, &mut alloc), Err(ErrorCode::ProducerFenced));
        // The new epoch runs the next transaction, and an abort bumps it again.
        txns.add_partitions("app", pid, 1, [("t".into(), 0)], 0).unwrap();
        txns.check_produce(pid, 1, "t", 0).unwrap();
        let ended = txns.end("app", pid, 1, false, true, &mut alloc).unwrap().unwrap();
        assert_eq!((ended.epoch, ended.commit, ended.partitions.len()), (2, false, 1));
        assert_eq!(txns.end("app", pid, 1, false, true, &mut alloc), Ok(None));
        // Committing with nothing open is refused; aborting is allowed and bumps.
        assert_eq!(txns.end("app", pid, 2, true, true, &mut alloc), Err(ErrorCode::InvalidTxnState));
        let ended = txns.end("app", pid, 2, false, true, &mut alloc).unwrap().unwrap();
        assert!(ended.partitions.is_empty() && !ended.commit);
        assert_eq!(txns.producers()["app"], (pid, 3));
        assert_eq!(txns.end("app", 999, 3, true, true, &mut alloc), Err(ErrorCode::InvalidProducerIdMapping));
        assert_eq!(txns.end("other", pid, 3, true, true, &mut alloc), Err(ErrorCode::InvalidProducerIdMapping));
    }

    #[test]
    fn with_transaction_version_2_an_exhausted_epoch_ends_with_a_new_producer_id() {
        let mut txns = Transactions::default();
        let mut alloc = counter();
        let (pid, _, _) = txns.init("app", 60_000, (-1, -1), &mut alloc).unwrap();
        let last = i16::MAX - 1;
        txns.by_id.get_mut("app").unwrap().epoch = last;
        txns.add_partitions("app", pid, last, [("t".into(), 0)], 0).unwrap();
        let ended = txns.end("app", pid, last, true, true, &mut alloc).unwrap().unwrap();
        assert_eq!((ended.producer_id, ended.epoch), (pid, i16::MAX));
        assert_eq!(txns.producers()["app"], (1002, 0));
        // A retry with the old id is recognised.
        assert_eq!(txns.end("app", pid, last, true, true, &mut alloc), Ok(None));
        txns.add_partitions("app", 1002, 0, [("t".into(), 0)], 0).unwrap();
    }

    #[test]
    fn an_exhausted_epoch_gets_a_new_producer_id() {
        let mut txns = Transactions::default();
        let mut alloc = counter();
        txns.init("app", 60_000, (-1, -1), &mut alloc).unwrap();
        txns.by_id.get_mut("app").unwrap().epoch = i16::MAX - 1;
        let (pid, epoch, _) = txns.init("app", 60_000, (-1, -1), &mut alloc).unwrap();
        assert_eq!((pid, epoch), (1002, 0));
    }

    #[test]
    fn timed_out_transactions_are_looked_for_once_per_interval() {
        let mut txns = Transactions::new(1_000, 500);
        let mut alloc = counter();
        let (pid, _, _) = txns.init("app", 1, (-1, -1), &mut alloc).unwrap();
        txns.init("idle", 1, (-1, -1), &mut alloc).unwrap();
        txns.add_partitions("app", pid, 0, [("t".into(), 0)], 0).unwrap();
        assert!(txns.tick(1_499).is_empty(), "timed out, but the first look is at 1.5 s");
        let aborted = txns.tick(1_500);
        assert_eq!(aborted.len(), 1, "only the open one: {aborted:?}");
        assert_eq!(aborted[0].0, "app");
        assert_eq!(txns.state("idle"), Some(TxnState::Empty));
        // The clock jumps over several looks: one runs, and the next is on the grid.
        txns.add_partitions("app", pid, 1, [("t".into(), 0)], 10_000).unwrap();
        assert_eq!(txns.tick(10_200).len(), 1);
        txns.add_partitions("app", pid, 2, [("t".into(), 0)], 10_300).unwrap();
        assert!(txns.tick(10_499).is_empty());
        assert_eq!(txns.tick(10_500).len(), 1);
    }

    #[test]
    fn a_timed_out_transaction_ends_in_an_abort_under_the_next_epoch() {
        let mut txns = Transactions::new(1_000, 0);
        let mut alloc = counter();
        let (pid, _, _) = txns.init("app", 60_000, (-1, -1), &mut alloc).unwrap();
        txns.add_offsets("app", pid, 0, "g", 1_000).unwrap();
        txns.commit_offsets("app", pid, 0, vec![offset("g", 5)]).unwrap();
        txns.add_partitions("app", pid, 0, [("t".into(), 0)], 30_000).unwrap();
        assert!(txns.abort_timed_out(61_000).is_empty(), "started at 1 s: open until 61 s");
        let aborted = txns.abort_timed_out(61_001);
        let expected =
            Ended { producer_id: pid, epoch: 1, commit: false, partitions: vec![("t".into(), 0)], offsets: vec![] };
        assert_eq!(aborted, vec![("app".to_owned(), expected)]);
        assert_eq!(txns.state("app"), Some(TxnState::CompleteAbort));
        assert!(!txns.has_pending_offset("g", "t", 0));
        // Fenced: the coordinator's PRODUCER_FENCED, the partitions' INVALID_PRODUCER_EPOCH.
        assert_eq!(txns.check_producer("app", pid, 0), Err(ErrorCode::ProducerFenced));
        assert_eq!(txns.add_partitions("app", pid, 0, [("t".into(), 0)], 62_000), Err(ErrorCode::ProducerFenced));
        assert_eq!(txns.add_offsets("app", pid, 0, "g", 62_000), Err(ErrorCode::ProducerFenced));
        assert_eq!(txns.commit_offsets("app", pid, 0, vec![offset("g", 6)]), Err(ErrorCode::ProducerFenced));
        assert_eq!(txns.check_produce(pid, 0, "t", 0), Err(ErrorCode::InvalidProducerEpoch));
        assert_eq!(txns.end("app", pid, 0, false, false, &mut alloc), Err(ErrorCode::ProducerFenced));
        // With transaction version 2 the old epoch's abort is the retry of this one.
        assert_eq!(txns.end("app", pid, 0, true, true, &mut alloc), Err(ErrorCode::InvalidTxnState));
        assert_eq!(txns.end("app", pid, 0, false, true, &mut alloc), Ok(None));
        assert_eq!(txns.producers()["app"], (pid, 1));
        assert_eq!(txns.init("app", 60_000, (pid, 0), &mut alloc), Err(ErrorCode::ProducerFenced));
        assert_eq!(txns.init("app", 60_000, (pid, 1), &mut alloc).unwrap(), (pid, 2, None));
    }

    #[test]
    fn a_timed_out_transaction_at_the_last_epoch_keeps_its_producer_id_until_the_next_init() {
        let mut txns = Transactions::new(1_000, 0);
        let mut alloc = counter();
        let (pid, _, _) = txns.init("app", 1_000, (-1, -1), &mut alloc).unwrap();
        let last = i16::MAX - 1;
        txns.by_id.get_mut("app").unwrap().epoch = last;
        txns.add_partitions("app", pid, last, [("t".into(), 0)], 0).unwrap();
        let aborted = txns.abort_timed_out(1_001);
        assert_eq!((aborted[0].1.producer_id, aborted[0].1.epoch), (pid, i16::MAX));
        assert_eq!(txns.producers()["app"], (pid, i16::MAX));
        let (next, epoch, _) = txns.init("app", 1_000, (-1, -1), &mut alloc).unwrap();
        assert_eq!((next, epoch), (1002, 0));
    }
}
