//! Consumer groups with handlers (`client.consumer_group(..)`), end to end: records
//! produced, handled by a group's members, committed, handed over.
//!
//! - Every record is handled, and the offsets committed are the ends of the
//!   partitions once everything is handled; a graceful shutdown commits before it
//!   leaves, so a member started after it handles nothing again.
//! - Two members split the partitions; one shutting down hands its partitions to the
//!   other without any record handled twice, and no partition is ever handled by both
//!   at once (checked on `on_consumer_start` / `on_consumer_stop`).
//! - The handler's actions: per-record retry, skip, dead letter (the record lands in
//!   the dead-letter topic with the headers naming its source), a misuse (a commit
//!   above a retried record) and a panic, each failing the partition, which starts
//!   again and delivers the record again.
//! - Reset policies: `latest` skips what was there before, `error` reports the
//!   partition.
//! - A member killed hard (no commit, no leave) loses its partitions to the other
//!   after the session timeout, and the records handled twice are at most the batch
//!   in hand plus `handler_max_unacked_commits` batches per partition.
//!
//! Kafka runs them under KIP-848, and so does klife-testkit's coordinator. No case
//! asserts on time: each waits for what it needs under a generous hang guard.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use klife::group::{
    Action, BatchContext, BatchSize, DLQ_OFFSET_HEADER, DLQ_REASON_HEADER, DLQ_TOPIC_HEADER, GroupProtocol, Handler,
    MisuseError, PartitionContext, PartitionError, RecordAction, ResetPolicy, StopReason, TopicConfig,
};
use klife::{ProducerRecord, Record};
use klife_conformance::groups::{HANG_GUARD, Log, driver_for, handled_ends, until_committed};
use klife_conformance::{Broker, unique_topic};

// The protocol chosen automatically: KIP-848 on Kafka and the testkit, classic on
// Tansu (no ConsumerGroupHeartbeat). The librdkafka mock cluster aborts on a KIP-848
// join with topic names (see README.md): it runs the classic cases, and creates topics
// with 4 partitions only.
klife_conformance::against_brokers!(
    [kafka: Kafka, testkit: Testkit, tansu: Tansu]
    every_record_is_handled_and_committed_and_a_shutdown_commits_before_leaving,
    two_members_hand_partitions_over_without_handling_a_record_twice,
    retries_skips_dead_letters_misuse_and_panics,
    reset_policies_latest_and_error,
);

// The classic protocol forced.
klife_conformance::against_brokers!(
    [kafka: Kafka, testkit: Testkit, rdkafka_mock: RdkafkaMock]
    classic_every_record_is_handled_and_committed_and_a_shutdown_commits_before_leaving,
);

klife_conformance::against_brokers!(
    [kafka: Kafka, testkit: Testkit]
    classic_two_members_hand_partitions_over_without_handling_a_record_twice,
    classic_retries_skips_dead_letters_misuse_and_panics,
);

klife_conformance::against_brokers!(
    [kafka: Kafka, testkit: Testkit]
    a_topic_regex_consumes_every_matching_topic,
);

klife_conformance::against_brokers!(
    [kafka: Kafka]
    a_member_killed_hard_redelivers_at_most_its_unacked_batches,
    classic_a_member_killed_hard_redelivers_at_most_its_unacked_batches,
);

/// Instantiates `case` (taking the broker and the protocol) under `GroupProtocol::Auto`
/// and, as `classic_case`, under `GroupProtocol::Classic`.
macro_rules! both_protocols {
    ($($case:ident => $classic:ident),* $(,)?) => {
        $(
            async fn $case(broker: Broker) {
                cases::$case(broker, GroupProtocol::Auto).await;
            }
            async fn $classic(broker: Broker) {
                cases::$case(broker, GroupProtocol::Classic).await;
            }
        )*
    };
}

both_protocols!(
    every_record_is_handled_and_committed_and_a_shutdown_commits_before_leaving
        => classic_every_record_is_handled_and_committed_and_a_shutdown_commits_before_leaving,
    two_members_hand_partitions_over_without_handling_a_record_twice
        => classic_two_members_hand_partitions_over_without_handling_a_record_twice,
    retries_skips_dead_letters_misuse_and_panics => classic_retries_skips_dead_letters_misuse_and_panics,
    a_member_killed_hard_redelivers_at_most_its_unacked_batches
        => classic_a_member_killed_hard_redelivers_at_most_its_unacked_batches,
);

/// A group subscribed by regex only (resolved by the broker, KIP-848) handles the
/// records of every topic it matches, with the default topic settings, and none of a
/// topic it does not match.
async fn a_topic_regex_consumes_every_matching_topic(broker: Broker) {
    let client = broker.client().await;
    let prefix = unique_topic("cg-re");
    let (a, b, other) = (format!("{prefix}-a"), format!("{prefix}-b"), format!("{prefix}x-c"));
    for t in [&a, &b, &other] {
        broker.create_topic(&client, t, 2).await;
        cases::produce(&client, t, 2, &cases::values(t, 10)).await;
    }
    let group = unique_topic("cg-re-g");
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let log = Log::default();
    let g = client
        .consumer_group(group.as_str())
        .topic_regex(format!("{prefix}-[ab]"))
        .default_topic_config(TopicConfig::default().offset_reset(ResetPolicy::Earliest))
        .handler(TopicRecorder { seen: seen.clone(), log: log.clone() })
        .start()
        .await
        .unwrap();
    log.until("the records of both matching topics", |s| s.handled.len() >= 20).await;
    g.shutdown().await.unwrap();
    let topics: BTreeSet<String> =
        seen.lock().unwrap().iter().map(|(t, _, _): &(String, i32, i64)| t.clone()).collect();
    assert_eq!(topics, BTreeSet::from([a, b]), "only the matching topics");
    assert_eq!(seen.lock().unwrap().len(), 20, "every record of both, once");
}

/// Notes (topic, partition, offset) of every record, and counts them in a log.
#[derive(Clone)]
struct TopicRecorder {
    seen: Arc<Mutex<BTreeSet<(String, i32, i64)>>>,
    log: Log,
}

impl Handler for TopicRecorder {
    async fn handle_record_batch(&self, ctx: &BatchContext, records: Vec<Record>) -> Action {
        let mut seen = self.seen.lock().unwrap();
        for r in &records {
            seen.insert((ctx.topic().to_owned(), r.partition, r.offset));
        }
        let n = seen.len() as i64;
        drop(seen);
        // The log holds one entry per distinct record seen so far (1..=n), whatever its topic.
        self.log.handled(0, (0..records.len()).map(|i| (-1, n - i as i64)), records.len());
        Action::Commit
    }
}

async fn reset_policies_latest_and_error(broker: Broker) {
    cases::reset_policies_latest_and_error(broker, GroupProtocol::Auto).await;
}

mod cases {
    use super::*;

    /// What a member's handler does with a record's value.
    #[derive(Clone)]
    struct Member {
        id: usize,
        log: Log,
        /// Values that get a special treatment, the first time only where it says so.
        tricks: Arc<Mutex<BTreeSet<String>>>,
        dlq: String,
    }

    impl Member {
        fn new(id: usize, log: &Log) -> Member {
            Member { id, log: log.clone(), tricks: Arc::default(), dlq: String::new() }
        }

        /// Takes the one-time trick `name` for `value`, if not taken before.
        fn once(&self, trick: &str, value: &str) -> bool {
            self.tricks.lock().unwrap().insert(format!("{trick}:{value}"))
        }
    }

    impl Handler for Member {
        async fn handle_record_batch(&self, ctx: &BatchContext, records: Vec<Record>) -> Action {
            let value = |r: &Record| String::from_utf8_lossy(r.value.as_deref().unwrap_or_default()).into_owned();
            // A misuse and a panic, once each.
            if let Some(r) = records.iter().find(|r| value(r).starts_with("panic")) {
                if self.once("panic", &value(r)) {
                    panic!("the handler panics on {}", value(r));
                }
            }
            if records.len() >= 2 && records.iter().any(|r| value(r).starts_with("misuse")) {
                let v = records.iter().map(value).find(|v| v.starts_with("misuse")).unwrap();
                if self.once("misuse", &v) {
                    let mut each = vec![RecordAction::Commit; records.len()];
                    each[0] = RecordAction::Retry;
                    return Action::Each(each);
                }
            }
            // Per record: retry from the first "retry" one (once), skip, dead-letter.
            let mut each = Vec::with_capacity(records.len());
            let mut retrying = false;
            for r in &records {
                let v = value(r);
                if retrying || (v.starts_with("retry") && self.once("retry", &v)) {
                    retrying = true;
                    each.push(RecordAction::Retry);
                    continue;
                }
                each.push(if v.starts_with("skip") {
                    RecordAction::Skip { reason: format!("{v} is to be skipped") }
                } else if v.starts_with("poison") {
                    RecordAction::DeadLetter { topic: self.dlq.clone(), reason: format!("{v} is poison") }
                } else {
                    RecordAction::Commit
                });
            }
            let handled = records
                .iter()
                .zip(&each)
                .filter(|(_, a)| **a != RecordAction::Retry)
                .map(|(r, _)| (r.partition, r.offset));
            self.log.handled(self.id, handled, records.len());
            if retrying {
                ctx.set_cooldown(Duration::from_millis(10));
            }
            if each.iter().all(|a| *a == RecordAction::Commit) { Action::Commit } else { Action::Each(each) }
        }

        async fn on_consumer_start(&self, p: &PartitionContext) {
            self.log.started(self.id, p.partition());
        }

        async fn on_consumer_stop(&self, p: &PartitionContext, reason: &StopReason) {
            self.log.stopped(self.id, p.partition(), reason);
        }
    }

    /// A topic with `partitions` partitions and `values` produced round the partitions.
    async fn topic_with(
        broker: Broker,
        client: &klife::Client,
        prefix: &str,
        partitions: i32,
        values: &[String],
    ) -> String {
        let topic = unique_topic(prefix);
        broker.create_topic(client, &topic, partitions).await;
        produce(client, &topic, partitions, values).await;
        topic
    }

    pub(super) async fn produce(client: &klife::Client, topic: &str, partitions: i32, values: &[String]) {
        let records = values
            .iter()
            .enumerate()
            .map(|(i, v)| ProducerRecord::new(topic.to_owned(), v.clone()).with_partition(i as i32 % partitions))
            .collect();
        for r in client.produce_batch(records).await {
            r.unwrap();
        }
    }

    pub(super) fn values(prefix: &str, n: usize) -> Vec<String> {
        (0..n).map(|i| format!("{prefix}-{i}")).collect()
    }

    fn earliest(topic: &str) -> TopicConfig {
        TopicConfig::new(topic).offset_reset(ResetPolicy::Earliest).fetch_interval(Duration::from_millis(50))
    }

    pub(super) async fn every_record_is_handled_and_committed_and_a_shutdown_commits_before_leaving(
        broker: Broker,
        protocol: GroupProtocol,
    ) {
        let client = broker.client().await;
        let vals = values("v", 200);
        let topic = topic_with(broker, &client, "cg-all", 4, &vals).await;
        let group = unique_topic("cg-all-g");
        let log = Log::default();
        let g = client
            .consumer_group(group.as_str())
            .protocol(protocol)
            .driver(driver_for(broker))
            .session_timeout(Duration::from_secs(10))
            .topic(earliest(&topic).handler_max_batch_size(BatchSize::Max(16)))
            .handler(Member::new(0, &log))
            .start()
            .await
            .unwrap();
        log.until("every record handled", |s| s.handled.len() == 200).await;
        let end = log.read(|s| handled_ends(s, 4));
        until_committed(&client, &group, &topic, &end).await;
        assert_eq!(g.assigned_partitions().len(), 4);
        g.shutdown().await.unwrap();
        {
            let s = log.seen.lock().unwrap();
            assert!(s.handled.values().all(|by| by.len() == 1), "a record handled twice");
            assert!(s.batches.iter().all(|n| *n <= 16), "batches over the size: {:?}", s.batches);
            assert_eq!(s.stopped.iter().filter(|(_, _, r)| r == "shutdown").count(), 4);
        }
        // More records; a new member of the group starts at the commits: only these.
        produce(&client, &topic, 4, &values("w", 20)).await;
        let log2 = Log::default();
        let g2 = client
            .consumer_group(group.as_str())
            .protocol(protocol)
            .driver(driver_for(broker))
            .session_timeout(Duration::from_secs(10))
            .topic(earliest(&topic))
            .handler(Member::new(1, &log2))
            .start()
            .await
            .unwrap();
        log2.until("the new records handled", |s| s.handled.len() >= 20).await;
        let end = log2.read(|s| handled_ends(s, 4));
        until_committed(&client, &group, &topic, &end).await;
        g2.shutdown().await.unwrap();
        assert_eq!(log2.distinct(), 20, "the second member handled records committed before");
    }

    pub(super) async fn two_members_hand_partitions_over_without_handling_a_record_twice(
        broker: Broker,
        protocol: GroupProtocol,
    ) {
        let client = broker.client().await;
        let topic = topic_with(broker, &client, "cg-two", 6, &values("a", 120)).await;
        let group = unique_topic("cg-two-g");
        let log = Log::default();
        let start = |id: usize| {
            client
                .consumer_group(group.as_str())
                .protocol(protocol)
                .driver(driver_for(broker))
                .session_timeout(Duration::from_secs(10))
                .topic(earliest(&topic).handler_max_batch_size(BatchSize::Max(5)))
                .handler(Member::new(id, &log))
                .start()
        };
        let a = start(0).await.unwrap();
        log.until("the first member handles records", |s| s.handled.len() >= 10).await;
        let b = start(1).await.unwrap();
        log.until("both members run partitions", |s| s.running.values().collect::<BTreeSet<_>>().len() == 2).await;
        produce(&client, &topic, 6, &values("b", 120)).await;
        log.until("every record handled", |s| s.handled.len() == 240).await;
        // The first member leaves gracefully: its partitions move to the second.
        a.shutdown().await.unwrap();
        log.until("the second member runs every partition", |s| {
            s.running.len() == 6 && s.running.values().all(|m| *m == 1)
        })
        .await;
        produce(&client, &topic, 6, &values("c", 60)).await;
        log.until("every record handled", |s| s.handled.len() == 300).await;
        b.shutdown().await.unwrap();
        let s = log.seen.lock().unwrap();
        let twice: Vec<_> = s.handled.iter().filter(|(_, by)| by.len() > 1).collect();
        assert!(twice.is_empty(), "records handled twice without a hard failure: {twice:?}");
        assert!(s.stopped.iter().any(|(m, _, r)| *m == 0 && r == "revoked"), "the first member had partitions revoked");
    }

    pub(super) async fn retries_skips_dead_letters_misuse_and_panics(broker: Broker, protocol: GroupProtocol) {
        let client = broker.client().await;
        let mut vals = values("ok", 40);
        vals[5] = "retry-5".into();
        vals[9] = "skip-9".into();
        vals[13] = "poison-13".into();
        vals[17] = "misuse-17".into();
        vals[21] = "panic-21".into();
        let topic = topic_with(broker, &client, "cg-actions", 2, &vals).await;
        let dlq = unique_topic("cg-actions-dlq");
        broker.create_topic(&client, &dlq, 1).await;
        let group = unique_topic("cg-actions-g");
        let log = Log::default();
        let mut member = Member::new(0, &log);
        member.dlq = dlq.clone();
        let mut g = client
            .consumer_group(group.as_str())
            .protocol(protocol)
            .driver(driver_for(broker))
            .session_timeout(Duration::from_secs(10))
            .topic(earliest(&topic).handler_max_batch_size(BatchSize::Max(4)))
            .handler(member)
            .start()
            .await
            .unwrap();
        log.until("every record handled", |s| s.handled.len() == 40).await;
        let end = log.read(|s| handled_ends(s, 2));
        until_committed(&client, &group, &topic, &end).await;
        // The misuse and the panic each failed their partition once, which started again.
        let mut failures = Vec::new();
        while failures.len() < 2 {
            let f = tokio::time::timeout(HANG_GUARD, g.next_failure()).await.expect("hung").expect("failure");
            failures.push(f);
        }
        assert!(failures.iter().any(|f| matches!(
            &*f.error,
            PartitionError::Misuse(MisuseError::CommitAboveRetry { committed, retried, .. }) if committed > retried
        )));
        assert!(
            failures
                .iter()
                .any(|f| matches!(&*f.error, PartitionError::Panicked { message, .. } if message.contains("panic-21")))
        );
        assert!(failures.iter().all(|f| f.error.restarts()));
        g.shutdown().await.unwrap();
        let stopped = log.read(|s| s.stopped.clone());
        assert_eq!(stopped.iter().filter(|(_, _, r)| r == "failed").count(), 2, "{stopped:?}");
        // The dead letter, with where it came from.
        let letters = client.fetch(&dlq, 0, 0).await.unwrap();
        assert_eq!(letters.records.len(), 1);
        let letter = &letters.records[0];
        assert_eq!(letter.value.as_deref(), Some(&b"poison-13"[..]));
        let header = |k: &str| letter.header(k).flatten().map(|v| String::from_utf8_lossy(v).into_owned());
        assert_eq!(header(DLQ_TOPIC_HEADER).as_deref(), Some(topic.as_str()));
        assert_eq!(header(DLQ_OFFSET_HEADER).as_deref(), Some("6"), "value 13 is the 7th of partition 1");
        assert_eq!(header(DLQ_REASON_HEADER).as_deref(), Some("poison-13 is poison"));
    }

    pub(super) async fn reset_policies_latest_and_error(broker: Broker, protocol: GroupProtocol) {
        let client = broker.client().await;
        let topic = unique_topic("cg-reset");
        broker.create_topic(&client, &topic, 2).await;
        // One record per batch: Tansu answers "latest" with the last batch's base
        // offset + 1 (tests/conformance/README.md), which is then the log end.
        for (i, v) in values("old", 10).into_iter().enumerate() {
            client.produce(ProducerRecord::new(topic.clone(), v).with_partition(i as i32 % 2)).await.unwrap();
        }
        // Latest: what was there before is not handled.
        let log = Log::default();
        let group = unique_topic("cg-reset-latest");
        let g = client
            .consumer_group(group.as_str())
            .protocol(protocol)
            .driver(driver_for(broker))
            .session_timeout(Duration::from_secs(10))
            .topic(TopicConfig::new(topic.as_str()).fetch_interval(Duration::from_millis(50)))
            .handler(Member::new(0, &log))
            .start()
            .await
            .unwrap();
        log.until("both partitions started", |s| s.started.len() == 2).await;
        produce(&client, &topic, 2, &values("new", 6)).await;
        log.until("the new records handled", |s| s.handled.len() >= 6).await;
        g.shutdown().await.unwrap();
        assert_eq!(log.distinct(), 6);
        assert!(log.seen.lock().unwrap().handled.keys().all(|(_, offset)| *offset >= 5));
        // Error: no committed offset is a typed failure of each partition.
        let group = unique_topic("cg-reset-error");
        let mut g = client
            .consumer_group(group.as_str())
            .protocol(protocol)
            .driver(driver_for(broker))
            .session_timeout(Duration::from_secs(10))
            .topic(TopicConfig::new(topic.as_str()).offset_reset(ResetPolicy::Error))
            .handler(Member::new(1, &Log::default()))
            .start()
            .await
            .unwrap();
        let mut partitions = BTreeSet::new();
        while partitions.len() < 2 {
            let f = tokio::time::timeout(HANG_GUARD, g.next_failure()).await.expect("hung").expect("failure");
            assert!(
                matches!(
                    &*f.error,
                    PartitionError::Offsets(klife_group::offsets::OffsetError::NoCommittedOffset { .. })
                ),
                "{:?}",
                f.error
            );
            assert!(!f.error.restarts());
            partitions.insert(f.partition.partition);
        }
        assert!(g.assigned_partitions().is_empty(), "no partition runs without a start");
        g.shutdown().await.unwrap();
    }

    pub(super) async fn a_member_killed_hard_redelivers_at_most_its_unacked_batches(
        broker: Broker,
        protocol: GroupProtocol,
    ) {
        const BATCH: usize = 4;
        const UNACKED: usize = 2;
        let client = broker.client().await;
        let topic = topic_with(broker, &client, "cg-kill", 2, &values("k", 400)).await;
        let group = unique_topic("cg-kill-g");
        let log = Log::default();
        let config = earliest(&topic)
            .handler_max_batch_size(BatchSize::Max(BATCH))
            .handler_max_unacked_commits(UNACKED)
            .handler_cooldown(Duration::from_millis(20));
        let a = client
            .consumer_group(group.as_str())
            .protocol(protocol)
            .driver(driver_for(broker))
            .session_timeout(Duration::from_secs(10))
            .topic(config.clone())
            .handler(Member::new(0, &log))
            .start()
            .await
            .unwrap();
        log.until("the first member handles some records", |s| s.handled.len() >= 60).await;
        a.abort();
        let handled_by_a = log.distinct();
        let b = client
            .consumer_group(group.as_str())
            .protocol(protocol)
            .driver(driver_for(broker))
            .session_timeout(Duration::from_secs(10))
            .topic(config)
            .handler(Member::new(1, &log))
            .start()
            .await
            .unwrap();
        log.until("every record handled", |s| s.handled.len() == 400).await;
        b.shutdown().await.unwrap();
        let twice_per_partition = log.read(klife_conformance::groups::Seen::repeats_per_partition);
        for (partition, twice) in &twice_per_partition {
            assert!(
                *twice <= (UNACKED + 1) * BATCH,
                "partition {partition}: {twice} records handled again after the kill; at most {} may be",
                (UNACKED + 1) * BATCH
            );
        }
        assert!(handled_by_a >= 60);
    }
}
