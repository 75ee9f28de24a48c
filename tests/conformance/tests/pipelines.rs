//! Pipelines over a consumer group (`ConsumerGroupBuilder::pipeline`, klife-pipeline's
//! runtime) end to end.
//!
//! - Every record is handled once, in offset order per partition, by producers and
//!   processors running concurrently; failed and panicking messages go through
//!   `handle_failed` and are committed like the others; bad settings are refused.
//! - Batchers group messages by key (a coarser key than the partition mixes partitions
//!   and keeps each one's order) and commit them once the batch is handled.
//! - Records a message produces (`Message::produce`, from `handle_message` or
//!   `handle_failed`) are written before its offset is committed.
//! - A partition revoked from a pipeline is handed over only after its messages in
//!   flight are committed: the other member handles nothing twice; a shutdown commits
//!   everything and leaves.
//!
//! Kafka and klife-testkit run them. No case asserts on time: each waits for what it
//! needs under a generous hang guard.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use klife::ProducerRecord;
use klife::group::{GroupProtocol, Mode, ResetPolicy, TopicConfig};
use klife::pipeline::{BatchKey, Message, PipelineConfig, Processor};
use klife_conformance::groups::{HANG_GUARD, Log, driver_for, recording_member, until_committed};
use klife_conformance::{Broker, unique_topic};

klife_conformance::against_brokers!(
    [kafka: Kafka, testkit: Testkit]
    a_pipeline_handles_every_record_once_in_partition_order_and_commits_it,
    batchers_group_messages_by_key_and_keep_each_partitions_order,
    a_revoked_partition_is_handed_over_after_its_messages_are_committed,
    pipelines_joining_and_leaving_process_every_record_once_in_order,
    records_messages_produce_are_written_before_their_offsets_are_committed,
);

async fn produce(client: &klife::Client, topic: &str, partitions: i32, from: usize, to: usize) {
    let records = (0..partitions)
        .flat_map(|p| {
            (from..to).map(move |i| ProducerRecord::new(topic.to_owned(), format!("{p}-{i}")).with_partition(p))
        })
        .collect();
    for r in client.produce_batch(records).await {
        r.unwrap();
    }
}

async fn topic_with(broker: Broker, client: &klife::Client, prefix: &str, partitions: i32, per: usize) -> String {
    let topic = unique_topic(prefix);
    broker.create_topic(client, &topic, partitions).await;
    produce(client, &topic, partitions, 0, per).await;
    topic
}

fn topic_config(topic: &str) -> TopicConfig {
    TopicConfig::new(topic).offset_reset(ResetPolicy::Earliest).fetch_interval(Duration::from_millis(50))
}

/// What a pipeline saw.
#[derive(Default)]
struct Seen {
    /// (partition, offset) handled, with how many times.
    handled: BTreeMap<(i32, i64), usize>,
    /// The last offset handled per partition, to check the order.
    last: BTreeMap<i32, i64>,
    out_of_order: Vec<(i32, i64)>,
    /// (partition, offset) → the failure handle_failed saw.
    failed: BTreeMap<(i32, i64), String>,
    /// The batches: their key and (partition, offset)s.
    batches: Vec<(BatchKey, Vec<(i32, i64)>)>,
}

#[derive(Clone, Default)]
struct Recorder {
    seen: Arc<Mutex<Seen>>,
    log: Log,
    /// Each record's value ending so is failed; ending so is a panic.
    fail_suffix: Option<&'static str>,
    panic_suffix: Option<&'static str>,
    /// Coarsen the batch key to the topic.
    by_topic: bool,
    /// The member this recorder runs in (the `Log`'s member number).
    member: usize,
    /// Checks in each batch that the group's committed offsets are not past it:
    /// client, group, topic, partitions.
    check_commits: Option<(klife::Client, String, String, i32)>,
    /// Batches whose partition was committed past their first record.
    committed_past: Arc<Mutex<Vec<(i32, i64, i64)>>>,
}

impl Recorder {
    fn read<T>(&self, f: impl FnOnce(&Seen) -> T) -> T {
        f(&self.seen.lock().unwrap())
    }
}

impl Processor for Recorder {
    async fn handle_message(&self, message: &mut Message) {
        let (p, o) = (message.record().partition, message.record().offset);
        {
            let mut seen = self.seen.lock().unwrap();
            *seen.handled.entry((p, o)).or_default() += 1;
            if seen.last.get(&p).is_some_and(|last| *last >= o) {
                seen.out_of_order.push((p, o));
            }
            seen.last.insert(p, o);
        }
        self.log.handled(self.member, [(p, o)], 1);
        let value = String::from_utf8(message.data().unwrap().to_vec()).unwrap();
        if self.fail_suffix.is_some_and(|s| value.ends_with(s)) {
            message.fail("ends badly");
        }
        assert!(!self.panic_suffix.is_some_and(|s| value.ends_with(s)), "a record that panics");
        if self.by_topic {
            message.put_batch_key(BatchKey::Topic(message.record().topic.clone()));
        }
    }

    async fn handle_batch(&self, key: &BatchKey, messages: &mut [Message]) {
        let offsets: Vec<(i32, i64)> = messages.iter().map(|m| (m.record().partition, m.record().offset)).collect();
        if let Some((client, group, topic, partitions)) = &self.check_commits {
            // Nothing of this batch is acknowledged yet: no commit may be past its
            // first record (a coordinator moving just skips the check).
            if let Ok(committed) = klife_conformance::groups::try_committed(client, group, topic, *partitions).await {
                let (p, first) = offsets[0];
                let c = committed[usize::try_from(p).unwrap()];
                if c > first {
                    self.committed_past.lock().unwrap().push((p, first, c));
                }
            }
        }
        self.seen.lock().unwrap().batches.push((key.clone(), offsets));
    }

    async fn handle_failed(&self, messages: &mut [Message]) {
        let mut seen = self.seen.lock().unwrap();
        for m in messages {
            seen.failed.insert((m.record().partition, m.record().offset), m.failure().unwrap().to_owned());
        }
    }
}

async fn a_pipeline_handles_every_record_once_in_partition_order_and_commits_it(broker: Broker) {
    let client = broker.client().await;
    let topic = topic_with(broker, &client, "pipe-all", 4, 50).await;
    let group = unique_topic("pipe-all-g");

    // Settings a pipeline cannot run with.
    for (config, what) in [
        (PipelineConfig::default().producers(0), "no producer"),
        (PipelineConfig::default().processors(0), "no processor"),
        (PipelineConfig::default().max_demand(0), "no demand"),
    ] {
        let refused = client
            .consumer_group(group.as_str())
            .topic(topic_config(&topic))
            .pipeline(config, Recorder::default())
            .await;
        assert!(refused.unwrap_err().is_invalid_argument(), "{what}");
    }
    let refused = client
        .consumer_group(group.as_str())
        .topic(topic_config(&topic).mode(Mode::Handler))
        .pipeline(PipelineConfig::default(), Recorder::default())
        .await;
    assert!(refused.unwrap_err().is_invalid_argument(), "a topic in handler mode");
    assert!(PipelineConfig::default().batchers(1, 0, Duration::from_secs(1)).is_err(), "a batch of nothing");

    let recorder = Recorder { fail_suffix: Some("-7"), panic_suffix: Some("-13"), ..Recorder::default() };
    let pipeline = client
        .consumer_group(group.as_str())
        .driver(driver_for(broker))
        .topic(topic_config(&topic))
        .pipeline(PipelineConfig::default().producers(2).processors(3), recorder.clone())
        .await
        .unwrap();
    until_committed(&client, &group, &topic, &[50, 50, 50, 50]).await;
    recorder.read(|s| {
        assert_eq!(s.handled.len(), 200, "every record handled");
        assert!(s.handled.values().all(|n| *n == 1), "nothing handled twice");
        assert!(s.out_of_order.is_empty(), "records out of partition order: {:?}", s.out_of_order);
        let mut expected = BTreeMap::new();
        for p in 0..4 {
            expected.insert((p, 7), String::from("ends badly"));
            expected.insert((p, 13), String::from("a record that panics"));
        }
        assert_eq!(s.failed, expected, "failed and panicking records went through handle_failed");
    });

    // More records go through as they come; a shutdown leaves with all committed.
    produce(&client, &topic, 4, 50, 60).await;
    until_committed(&client, &group, &topic, &[60, 60, 60, 60]).await;
    pipeline.shutdown().await.unwrap();
    recorder.read(|s| assert_eq!(s.handled.len(), 240));
}

async fn batchers_group_messages_by_key_and_keep_each_partitions_order(broker: Broker) {
    let client = broker.client().await;
    let topic = topic_with(broker, &client, "pipe-batch", 3, 40).await;
    let group = unique_topic("pipe-batch-g");
    let recorder = Recorder { fail_suffix: Some("-5"), by_topic: true, ..Recorder::default() };
    let config = PipelineConfig::default().processors(2).batchers(2, 7, Duration::from_millis(20)).unwrap();
    let pipeline = client
        .consumer_group(group.as_str())
        .driver(driver_for(broker))
        .topic(topic_config(&topic))
        .pipeline(config, recorder.clone())
        .await
        .unwrap();
    until_committed(&client, &group, &topic, &[40, 40, 40]).await;
    pipeline.shutdown().await.unwrap();
    recorder.read(|s| {
        let key = BatchKey::Topic(Arc::from(topic.as_str()));
        let mut batched = BTreeSet::new();
        let mut last: BTreeMap<i32, i64> = BTreeMap::new();
        for (k, offsets) in &s.batches {
            assert_eq!(*k, key, "every batch has the key its messages were given");
            assert!(!offsets.is_empty() && offsets.len() <= 7, "a batch holds 1 to 7 messages");
            for (p, o) in offsets {
                assert!(last.get(p).is_none_or(|l| l < o), "partition {p}: offset {o} after {:?}", last.get(p));
                last.insert(*p, *o);
                assert!(batched.insert((*p, *o)), "a message in two batches");
            }
        }
        // Failed messages skip the batchers.
        let failed: BTreeSet<(i32, i64)> = s.failed.keys().copied().collect();
        assert_eq!(failed, (0..3).map(|p| (p, 5)).collect(), "record 5 of each partition failed");
        assert!(batched.is_disjoint(&failed));
        assert_eq!(batched.len() + failed.len(), 120, "every record batched or failed");
    });
}

async fn a_revoked_partition_is_handed_over_after_its_messages_are_committed(broker: Broker) {
    let client = broker.client().await;
    let topic = topic_with(broker, &client, "pipe-rev", 4, 30).await;
    let group = unique_topic("pipe-rev-g");
    let log = Log::default();
    let recorder = Recorder { log: log.clone(), ..Recorder::default() };
    let pipeline = client
        .consumer_group(group.as_str())
        .driver(driver_for(broker))
        .session_timeout(Duration::from_secs(10))
        .topic(topic_config(&topic))
        .pipeline(PipelineConfig::default().processors(2), recorder.clone())
        .await
        .unwrap();
    until_committed(&client, &group, &topic, &[30, 30, 30, 30]).await;

    // A second member joins while records keep coming; the pipeline gives some
    // partitions up.
    let b = recording_member(broker, &client, &group, &topic, GroupProtocol::Auto, 1, &log).await;
    for round in 0..3 {
        produce(&client, &topic, 4, 30 + round * 5, 35 + round * 5).await;
    }
    tokio::time::timeout(HANG_GUARD, async {
        while b.assigned_partitions().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("hung waiting for the second member's partitions");
    for round in 3..6 {
        produce(&client, &topic, 4, 30 + round * 5, 35 + round * 5).await;
    }
    until_committed(&client, &group, &topic, &[60, 60, 60, 60]).await;
    log.until("the second member handling records", |s| s.handled.values().any(|m| m.contains(&1))).await;
    pipeline.shutdown().await.unwrap();
    b.shutdown().await.unwrap();

    // Graceful hand-overs only: every record handled once by one member or the other.
    log.read(|s| {
        assert_eq!(s.handled.len(), 240, "every record handled");
        assert!(s.repeats_per_partition().is_empty(), "records handled twice: {:?}", s.repeats_per_partition());
    });
    recorder.read(|s| assert!(s.out_of_order.is_empty()));
}

/// Waits until the pipeline's member owns partitions.
async fn until_owns(pipeline: &klife::pipeline::Pipeline) {
    tokio::time::timeout(HANG_GUARD, async {
        while pipeline.group().assigned_partitions().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("hung waiting for the member's partitions");
}

async fn pipelines_joining_and_leaving_process_every_record_once_in_order(broker: Broker) {
    let client = broker.client().await;
    let partitions = 8;
    let topic = topic_with(broker, &client, "pipe-churn", partitions, 40).await;
    let group = unique_topic("pipe-churn-g");
    let log = Log::default();
    let start = |member: usize| {
        let recorder = Recorder {
            log: log.clone(),
            member,
            check_commits: Some((client.clone(), group.clone(), topic.clone(), partitions)),
            ..Recorder::default()
        };
        let config =
            PipelineConfig::default().producers(4).processors(8).batchers(2, 10, Duration::from_millis(20)).unwrap();
        let builder = client
            .consumer_group(group.as_str())
            .driver(driver_for(broker))
            .session_timeout(Duration::from_secs(10))
            .topic(topic_config(&topic));
        async move { (builder.pipeline(config, recorder.clone()).await.unwrap(), recorder) }
    };
    let member_handled = |member: usize| {
        let log = log.clone();
        async move {
            log.until(&format!("member {member} processing records"), |s| {
                s.handled.values().any(|m| m.contains(&member))
            })
            .await;
        }
    };
    let mut produced = 40;
    let mut more = async |n: usize| {
        produce(&client, &topic, partitions, produced, produced + n).await;
        produced += n;
    };

    let (a, ra) = start(0).await;
    until_committed(&client, &group, &topic, &[40; 8]).await;
    // B joins while records keep coming, then C; then B leaves gracefully.
    let (b, rb) = start(1).await;
    until_owns(&b).await;
    more(10).await;
    member_handled(1).await;
    let (c, rc) = start(2).await;
    until_owns(&c).await;
    more(10).await;
    member_handled(2).await;
    more(10).await;
    b.shutdown().await.unwrap();
    more(10).await;
    until_committed(&client, &group, &topic, &[80; 8]).await;
    a.shutdown().await.unwrap();
    c.shutdown().await.unwrap();

    log.read(|s| {
        assert_eq!(s.handled.len(), 8 * 80, "every record processed");
        assert!(s.repeats_per_partition().is_empty(), "records processed twice: {:?}", s.repeats_per_partition());
    });
    for (member, r) in [(0, &ra), (1, &rb), (2, &rc)] {
        r.read(|s| {
            assert!(s.out_of_order.is_empty(), "member {member}: processed out of order: {:?}", s.out_of_order);
            let mut last: BTreeMap<i32, i64> = BTreeMap::new();
            for (_, offsets) in &s.batches {
                assert!(offsets.len() <= 10);
                for (p, o) in offsets {
                    assert!(
                        last.get(p).is_none_or(|l| l < o),
                        "member {member}: batches out of order in partition {p}"
                    );
                    last.insert(*p, *o);
                }
            }
        });
        assert!(
            r.committed_past.lock().unwrap().is_empty(),
            "commits past an unacknowledged offset: {:?}",
            r.committed_past
        );
    }
}

/// Copies each message to `out`; failed ones (every tenth) go to `dead` from
/// `handle_failed`.
struct Copier {
    out: String,
    dead: String,
}

impl Processor for Copier {
    async fn handle_message(&self, message: &mut Message) {
        let value = message.record().value.clone().unwrap_or_default();
        if message.record().offset % 10 == 9 {
            message.fail("every tenth");
            return;
        }
        message.produce(ProducerRecord::new(self.out.as_str(), value));
    }

    async fn handle_failed(&self, messages: &mut [Message]) {
        for m in messages {
            let value = m.record().value.clone().unwrap_or_default();
            m.produce(ProducerRecord::new(self.dead.as_str(), value));
        }
    }
}

async fn records_messages_produce_are_written_before_their_offsets_are_committed(broker: Broker) {
    let client = broker.client().await;
    let topic = topic_with(broker, &client, "pipe-out-in", 2, 50).await;
    let (out, dead) = (unique_topic("pipe-out"), unique_topic("pipe-dead"));
    broker.create_topic(&client, &out, 2).await;
    broker.create_topic(&client, &dead, 1).await;
    let group = unique_topic("pipe-out-g");
    let pipeline = client
        .consumer_group(&group)
        .driver(driver_for(broker))
        .topic(TopicConfig::new(&topic).offset_reset(ResetPolicy::Earliest).fetch_interval(Duration::from_millis(50)))
        .pipeline(PipelineConfig::default().processors(2), Copier { out: out.clone(), dead: dead.clone() })
        .await
        .unwrap();
    until_committed(&client, &group, &topic, &[50, 50]).await;
    pipeline.shutdown().await.unwrap();
    // Committed, so written: every output is in its topic already.
    let count = |topic: String, partitions: i32| {
        let client = &client;
        async move {
            let queries =
                (0..partitions).map(|p| (klife::TopicPartition::new(topic.as_str(), p), klife::OffsetSpec::Latest));
            client.list_offsets(queries).await.unwrap().into_iter().map(|a| a.result.unwrap().offset).sum::<i64>()
        }
    };
    assert_eq!(count(out, 2).await, 90);
    assert_eq!(count(dead, 1).await, 10);
}
