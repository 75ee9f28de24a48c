//! Faults and cluster-wide changes on Apache Kafka itself: a node killed with SIGKILL
//! and started again while an idempotent `acks = all` producer writes, and while a
//! consumer reads; leadership moved with AlterPartitionReassignments and ElectLeaders;
//! the cluster's transaction version switched between 1 and 2 (KIP-890). Nothing
//! acknowledged is lost, nothing is written or read twice, order is kept, committed
//! transactions are read and aborted ones are not; exactly-once consume-transform-produce
//! outputs each input once through member crashes and a killed broker. Then what only a leadership change
//! shows a reader: a fetch naming a leader epoch the cluster has moved past is fenced
//! and goes on at the new leader, and a log truncated under readers by an unclean
//! election is reported (`OffsetReset::Error`) or read on from where the logs part.
//!
//! These cases change what every other Kafka case uses, so `cargo xtask test` runs
//! them alone, one at a time, after all the others (`--test kafka_faults
//! --test-threads 1`). Every step waits for an event (records acknowledged or read, a
//! node started), never for a length of time.

#![allow(clippy::unwrap_used)]

/// Named `kafka_faults::…`, which the main test run skips.
mod kafka_faults {
    use std::collections::BTreeMap;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use bytes::Bytes;
    use klife::{FetchOptions, FetcherConfig, NewTopic, OffsetReset, Reassignment, StartOffset};
    use klife_conformance::verify::verify_log_allowing;
    use klife_conformance::{Broker, kafka, unique_topic};
    use klife_fetcher::{Consumer, FetchError};
    use klife_producer::{Acks, Producer, ProducerConfig, ProducerRecord};
    use klife_protocol::ErrorCode;

    const PARTITIONS: i32 = 6;

    /// How many times a step that waits for the cluster looks again, 100 ms apart, before
    /// the case fails: five minutes. A node killed with SIGKILL recovers every log it
    /// holds when it starts again, and with the hundreds of partitions the other suites
    /// leave behind that took over two minutes on a loaded 2-core machine.
    const PATIENCE: usize = 3000;

    async fn client() -> klife::Client {
        klife::Client::builder()
            .bootstrap_servers(Broker::Kafka.addresses())
            .request_timeout(Duration::from_secs(15))
            .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(500))
            .build()
            .await
            .unwrap()
    }

    async fn leader_of(client: &klife::Client, topic: &str, partition: i32) -> i32 {
        client.cluster().add_topics(&[topic]).await.unwrap();
        client.cluster().leader(topic, partition).await.unwrap().node_id
    }

    /// The leader the cluster's metadata names for partition 0 now, if any (none while
    /// an election is pending, or when the metadata could not be read).
    async fn named_leader(client: &klife::Client, topic: &str) -> Option<i32> {
        let m = client.cluster().add_topics(&[topic]).await.ok()?;
        let leader = m.topic(topic)?.partition(0)?.leader;
        (leader >= 0).then_some(leader)
    }

    /// Waits until the cluster's metadata names `node` as the partition's leader (the
    /// controller has elected it; the brokers learn of it a little later).
    async fn await_leader(client: &klife::Client, topic: &str, node: i32) {
        for _ in 0..PATIENCE {
            if named_leader(client, topic).await == Some(node) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{topic}-0: node {node} was elected but is not named leader");
    }

    /// A new topic of [`PARTITIONS`] partitions, each holding `per_partition` records
    /// `p{partition}-{i}`.
    async fn filled_topic(client: &klife::Client, prefix: &str, per_partition: usize) -> String {
        let topic = unique_topic(prefix);
        Broker::Kafka.create_topic(client, &topic, PARTITIONS).await;
        let producer = Producer::new(client.cluster().clone(), ProducerConfig::default()).await.unwrap();
        for p in 0..PARTITIONS {
            let records = (0..per_partition)
                .map(|i| ProducerRecord::new(topic.clone(), Bytes::from(format!("p{p}-{i}"))).with_partition(p))
                .collect();
            assert!(producer.produce_batch(records).await.iter().all(Result::is_ok));
        }
        producer.close().await;
        topic
    }

    /// Kills a node and starts it again when `restart_after` more records were
    /// acknowledged (or read) than when it was killed (or all `total` were), counting
    /// with `progress`.
    async fn kill_and_restart(
        outages: Arc<kafka::Outages>,
        node: i32,
        progress: Arc<AtomicUsize>,
        kill_at: usize,
        restart_after: usize,
        total: usize,
    ) {
        while progress.load(Ordering::SeqCst) < kill_at {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        outages.kill(node).await;
        let killed_at = progress.load(Ordering::SeqCst);
        while progress.load(Ordering::SeqCst) < (killed_at + restart_after).min(total) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        outages.start(node).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_idempotent_producer_loses_and_repeats_nothing_when_a_leader_is_killed() {
        let client = client().await;
        let topic = unique_topic("kill-producing");
        Broker::Kafka.create_topic(&client, &topic, PARTITIONS).await;
        let victim = leader_of(&client, &topic, 0).await;

        let mut config = ProducerConfig::default();
        config.acks = Acks::All;
        config.linger = Duration::from_millis(2);
        config.batch_size = 16 * 1024;
        let producer = Producer::new(client.cluster().clone(), config).await.unwrap();
        let acked_count = Arc::new(AtomicUsize::new(0));
        let fault = tokio::spawn(kill_and_restart(
            Arc::new(kafka::Outages::new()),
            victim,
            acked_count.clone(),
            2_000,
            4_000,
            12_000,
        ));

        // Records go out in waves of 500 so that some are always in flight when the
        // node dies; each wave's acknowledgements are counted before the next.
        let mut acked = Vec::new();
        let mut failed = Vec::new();
        for wave in 0..24u64 {
            let records: Vec<ProducerRecord> = (0..500)
                .map(|i| {
                    let n = wave * 500 + i;
                    ProducerRecord::new(topic.clone(), Bytes::from(format!("r{n}")))
                        .with_key(Bytes::from(format!("k{}", n % 97)))
                })
                .collect();
            let results = producer.produce_batch(records.clone()).await;
            for (r, sent) in results.into_iter().zip(records) {
                match r {
                    Ok(meta) => acked.push((meta, sent)),
                    Err(e) => failed.push((sent, e.to_string())),
                }
            }
            acked_count.store(acked.len(), Ordering::SeqCst);
        }
        fault.await.unwrap();
        producer.close().await;
        let errors: Vec<&String> = failed.iter().map(|(_, e)| e).take(3).collect();
        assert!(failed.is_empty(), "{} records failed with two of three replicas up: {errors:?}", failed.len());
        assert_eq!(acked.len(), 12_000);
        verify_log_allowing(client.cluster(), &topic, &acked, &[]).await;
        client.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_consumer_reads_everything_once_in_order_when_a_leader_is_killed() {
        let client = client().await;
        let per_partition = 3_000usize;
        let topic = filled_topic(&client, "kill-consuming", per_partition).await;
        let victim = leader_of(&client, &topic, 0).await;

        let read = Arc::new(AtomicUsize::new(0));
        let total = per_partition * PARTITIONS as usize;
        let fault = tokio::spawn(kill_and_restart(
            Arc::new(kafka::Outages::new()),
            victim,
            read.clone(),
            total / 4,
            total / 4,
            total,
        ));
        let mut consumer = client.consumer(FetchOptions::new().with_max_bytes(64 * 1024));
        let assignment: Vec<(&str, i32, StartOffset)> =
            (0..PARTITIONS).map(|p| (topic.as_str(), p, StartOffset::Earliest)).collect();
        consumer.assign(&assignment).await.unwrap();
        let mut seen: BTreeMap<i32, Vec<(i64, Bytes)>> = BTreeMap::new();
        while read.load(Ordering::SeqCst) < total {
            let answer = consumer.next().await.expect("the consumer stopped").unwrap_or_else(|e| {
                assert!(e.is_retriable(), "a fetch failed for good: {e}");
                panic!("the consumer surfaced a retriable error instead of retrying it: {e}")
            });
            for r in answer.records {
                seen.entry(r.partition).or_default().push((r.offset, r.value.unwrap()));
            }
            read.store(seen.values().map(Vec::len).sum(), Ordering::SeqCst);
        }
        fault.await.unwrap();
        for (p, records) in &seen {
            let expected: Vec<(i64, Bytes)> =
                (0..per_partition).map(|i| (i as i64, Bytes::from(format!("p{p}-{i}")))).collect();
            assert_eq!(records.len(), per_partition, "partition {p}: read {} records", records.len());
            assert!(records == &expected, "partition {p}: records lost, repeated or out of order");
        }
        client.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn records_written_across_leader_moves_are_all_there_once() {
        let client = client().await;
        let topic = unique_topic("moves");
        Broker::Kafka.create_topic(&client, &topic, 1).await;
        let producer = Producer::new(client.cluster().clone(), ProducerConfig::default()).await.unwrap();
        let mut acked = Vec::new();
        for round in 0..4u64 {
            // Make the next node the preferred leader, then elect it.
            move_leadership(&client, &topic).await;
            let records: Vec<ProducerRecord> = (0..500)
                .map(|i| ProducerRecord::new(topic.clone(), Bytes::from(format!("m{round}-{i}"))).with_partition(0))
                .collect();
            for (r, sent) in producer.produce_batch(records.clone()).await.into_iter().zip(records) {
                acked.push((r.unwrap(), sent));
            }
        }
        producer.close().await;
        verify_log_allowing(client.cluster(), &topic, &acked, &[]).await;
        client.close().await;
    }

    /// Sets the cluster's finalized `transaction.version` feature (UpdateFeatures, sent
    /// to the controller through any broker).
    async fn set_transaction_version(client: &klife::Client, level: i16) {
        use klife_protocol::messages::UpdateFeaturesRequest;
        use klife_protocol::messages::update_features_request::FeatureUpdateKey;
        // Upgrade type 1 is an upgrade, 2 a safe downgrade.
        let update = FeatureUpdateKey::default()
            .with_feature("transaction.version".to_owned())
            .with_max_version_level(level)
            .with_upgrade_type(if level < 2 { 2 } else { 1 });
        let request = UpdateFeaturesRequest::default().with_timeout_ms(30_000).with_feature_updates(vec![update]);
        let conn = client.cluster().any_broker().await.unwrap();
        let response = conn.send(&request).await.unwrap();
        assert_eq!(response.error_code, 0, "UpdateFeatures: {:?}", response.error_message);
        for r in &response.results {
            assert_eq!(r.error_code, 0, "UpdateFeatures {}: {:?}", r.feature, r.error_message);
        }
    }

    /// Reads a partition with read_committed from offset 0 until its last stable offset
    /// reaches its high watermark at `end` (every transaction decided and its marker
    /// written) and returns the values read.
    async fn read_committed(client: &klife::Client, topic: &str, end: i64) -> Vec<String> {
        let mut values = Vec::new();
        let mut offset = 0;
        for _ in 0..1000 {
            let f = client.fetch(topic, 0, offset).await.unwrap();
            values.extend(f.records.iter().map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap()).into_owned()));
            offset = f.next_offset;
            if f.last_stable_offset >= end && offset >= end {
                return values;
            }
            if f.records.is_empty() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        panic!("{topic}: read_committed did not reach offset {end}; read {values:?}");
    }

    /// The log's end once every write so far is in it.
    async fn log_end(client: &klife::Client, topic: &str) -> i64 {
        let latest = client.list_offsets([((topic, 0).into(), klife::OffsetSpec::Latest)]).await.unwrap();
        latest[0].offset().unwrap()
    }

    async fn transaction(producer: &klife::TransactionalProducer, topic: &str, values: &[&str], commit: bool) {
        producer.begin().await.unwrap();
        for v in values {
            producer.produce(ProducerRecord::new(topic.to_owned(), v.to_string()).with_partition(0)).await.unwrap();
        }
        if commit {
            producer.commit().await.unwrap();
        } else {
            producer.abort().await.unwrap();
        }
    }

    /// One transactional producer runs transactions back to back (with transaction
    /// version 2 each EndTxn bumps its epoch, which it must adopt), and then, with a new
    /// producer of the same transactional id for every transaction: commit c1..c3,
    /// abort a1 a2, commit c4, then a plain record p1. read_committed returns exactly
    /// the committed records and the plain one, in order.
    async fn transactions_read_back(level: i16) {
        let admin = client().await;
        set_transaction_version(&admin, level).await;
        admin.close().await;
        // A new client negotiates its versions with the brokers' new feature level.
        let client = client().await;

        let topic = unique_topic(&format!("tv{level}-one-producer"));
        Broker::Kafka.create_topic(&client, &topic, 1).await;
        let id = unique_topic("tv-txn");
        let producer = client.transactional_producer(&id, Duration::from_secs(60)).await.unwrap();
        transaction(&producer, &topic, &["t1", "t2"], true).await;
        transaction(&producer, &topic, &["x1"], false).await;
        transaction(&producer, &topic, &["t3"], true).await;
        transaction(&producer, &topic, &["t4"], true).await;
        producer.close().await;
        let end = log_end(&client, &topic).await;
        assert_eq!(read_committed(&client, &topic, end).await, ["t1", "t2", "t3", "t4"], "transaction version {level}");

        let topic = unique_topic(&format!("tv{level}-producer-per-transaction"));
        Broker::Kafka.create_topic(&client, &topic, 1).await;
        let id = unique_topic("tv-txn");
        let plan: [(&[&str], bool); 3] = [(&["c1", "c2", "c3"], true), (&["a1", "a2"], false), (&["c4"], true)];
        for (values, commit) in plan {
            let producer = client.transactional_producer(&id, Duration::from_secs(60)).await.unwrap();
            transaction(&producer, &topic, values, commit).await;
            producer.close().await;
        }
        client.produce(ProducerRecord::new(topic.clone(), "p1").with_partition(0)).await.unwrap();
        let end = log_end(&client, &topic).await;
        let read = read_committed(&client, &topic, end).await;
        assert_eq!(read, ["c1", "c2", "c3", "c4", "p1"], "transaction version {level}");
        client.close().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn transactions_on_transaction_version_1_then_2() {
        transactions_read_back(1).await;
        // Version 2 last: the cluster stays as it was formatted.
        transactions_read_back(2).await;
    }

    /// Moves a partition's leadership to the next node: makes it the preferred replica
    /// and elects it (retrying while it catches up). Returns the new leader.
    async fn move_leadership(client: &klife::Client, topic: &str) -> i32 {
        let leader = leader_of(client, topic, 0).await;
        let next = leader % kafka::NODES as i32 + 1;
        let replicas: Vec<i32> = (0..kafka::NODES as i32).map(|i| (next - 1 + i) % kafka::NODES as i32 + 1).collect();
        let moved = client.alter_partition_reassignments(&[Reassignment::new(topic, 0, replicas)]).await.unwrap();
        assert!(moved.iter().all(Result::is_ok), "{moved:?}");
        let mut elected = Vec::new();
        // PREFERRED_LEADER_NOT_AVAILABLE until the new preferred leader is in sync.
        for _ in 0..PATIENCE {
            elected = client.elect_preferred_leaders(&[(topic, 0)]).await.unwrap();
            if elected.iter().all(Result::is_ok) {
                break;
            }
            assert!(
                elected.iter().all(|r| r.as_ref().is_ok() || r.as_ref().is_err_and(klife::Error::is_retriable)),
                "{elected:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(elected.iter().all(Result::is_ok), "{elected:?}");
        await_leader(client, topic, next).await;
        next
    }

    /// A Fetch (v17, by topic id) of partition 0 sent straight to `node`, naming
    /// `current_leader_epoch`: the partition's error code.
    async fn raw_fetch_error(client: &klife::Client, topic: &str, node: i32, current_leader_epoch: i32) -> ErrorCode {
        use klife_protocol::messages::FetchRequest;
        use klife_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
        let id = client.cluster().metadata().topic(topic).unwrap().id;
        let request = FetchRequest::default().with_max_wait_ms(0).with_min_bytes(1).with_topics(vec![
            FetchTopic::default().with_topic_id(id).with_partitions(vec![
                FetchPartition::default()
                    .with_partition(0)
                    .with_current_leader_epoch(current_leader_epoch)
                    .with_fetch_offset(0)
                    .with_partition_max_bytes(1 << 16),
            ]),
        ]);
        let conn = client.cluster().broker(node).await.unwrap();
        let response = conn.send_version(&request, 17).await.unwrap();
        ErrorCode::from_code(response.responses[0].partitions[0].error_code)
    }

    /// A client whose metadata predates a leadership move fetches with the old leader
    /// epoch from the old leader, which answers FENCED_LEADER_EPOCH (checked first with
    /// a raw Fetch): the fetcher refreshes its metadata and reads the records from the
    /// new leader; the caller never sees the fencing.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fetch_with_a_stale_leader_epoch_is_fenced_and_goes_on_at_the_new_leader() {
        let admin = client().await;
        let topic = unique_topic("stale-epoch");
        Broker::Kafka.create_topic(&admin, &topic, 1).await;
        let values: Vec<String> = (0..5).map(|i| format!("s{i}")).collect();
        for v in &values {
            admin.produce(ProducerRecord::new(topic.clone(), v.clone()).with_partition(0)).await.unwrap();
        }
        // The reader learns the leader and its epoch, then leadership moves behind its back.
        let reader = client().await;
        assert_eq!(reader.fetch(&topic, 0, 0).await.unwrap().records.len(), 5);
        let (old, epoch) = reader.cluster().metadata().leader(&topic, 0).map(|(b, e)| (b.node_id, e)).unwrap();
        let new = move_leadership(&admin, &topic).await;
        assert_ne!(new, old);
        // The old leader, a follower now, fences the old epoch once it has learned the
        // new one.
        let mut fenced = false;
        for _ in 0..PATIENCE {
            let code = raw_fetch_error(&admin, &topic, old, epoch).await;
            if code == ErrorCode::FencedLeaderEpoch {
                fenced = true;
                break;
            }
            assert_eq!(code, ErrorCode::None, "before it learns, the old leader serves the fetch");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(fenced, "{topic}-0: node {old} never fenced epoch {epoch}");
        assert_eq!(
            reader.cluster().metadata().leader(&topic, 0).map(|(b, e)| (b.node_id, e)),
            Some((old, epoch)),
            "the reader's metadata is still the old one"
        );
        let f = reader.fetch(&topic, 0, 0).await.unwrap();
        let mut got: Vec<String> =
            f.records.iter().map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap()).into_owned()).collect();
        // A new leader may start from an older high watermark than the old one had,
        // until its followers fetch again: read on from where the answer ended.
        let mut next = f.next_position();
        for _ in 0..100 {
            if got.len() >= values.len() {
                break;
            }
            let more = reader.fetch_with(next, &FetchOptions::new()).await.unwrap();
            got.extend(more.records.iter().map(|r| String::from_utf8_lossy(r.value.as_deref().unwrap()).into_owned()));
            next = more.next_position();
        }
        assert_eq!(got, values);
        let (now, new_epoch) = reader.cluster().metadata().leader(&topic, 0).map(|(b, e)| (b.node_id, e)).unwrap();
        assert_eq!(now, new);
        assert!(new_epoch > epoch, "{new_epoch} after {epoch}");
        reader.close().await;
        admin.close().await;
    }

    /// Waits until the cluster's metadata says `check` of the partition's (leader, ISR),
    /// and returns that partition's metadata (a broker that has not heard of the
    /// topic yet is asked again).
    async fn await_partition(
        client: &klife::Client,
        topic: &str,
        what: &str,
        check: impl Fn(i32, &[i32]) -> bool,
    ) -> klife::PartitionInfo {
        for _ in 0..PATIENCE {
            if let Ok(m) = client.cluster().add_topics(&[topic]).await {
                if let Some(p) = m.topic(topic).and_then(|t| t.partition(0)) {
                    if check(p.leader, &p.isr) {
                        return p.clone();
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{topic}-0: {what} did not happen");
    }

    /// Elects `node` leader of partition 0 with an unclean election (ElectLeaders,
    /// election type 1), asking again until the metadata names it.
    async fn elect_uncleanly(client: &klife::Client, topic: &str, node: i32) {
        use klife_protocol::messages::ElectLeadersRequest;
        use klife_protocol::messages::elect_leaders_request::TopicPartitions;
        let request = ElectLeadersRequest::default()
            .with_election_type(1)
            .with_topic_partitions(Some(vec![
                TopicPartitions::default().with_topic(topic.to_owned()).with_partitions(vec![0]),
            ]))
            .with_timeout_ms(30_000);
        let mut answers = Vec::new();
        for _ in 0..PATIENCE {
            // Any broker will do; one that is down or refuses is asked again next round.
            let answer = match client.cluster().any_broker().await {
                Ok(conn) => conn.send(&request).await.ok(),
                Err(_) => None,
            };
            if let Some(response) = answer {
                let codes: Vec<ErrorCode> = response
                    .replica_election_results
                    .iter()
                    .flat_map(|t| t.partition_result.iter())
                    .map(|p| ErrorCode::from_code(p.error_code))
                    .collect();
                answers.push(codes);
            }
            // The partition has no leader until the election is done: read the metadata,
            // not `leader()`, which fails for a partition without one.
            if named_leader(client, topic).await == Some(node) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{topic}-0: node {node} was not elected; ElectLeaders answered {answers:?}");
    }

    /// The next answer with records or the next error that is not a retriable one (a
    /// fetch that timed out while the partition had no leader), skipping those.
    async fn next_answer(consumer: &mut Consumer) -> Result<klife::Fetched, FetchError> {
        loop {
            match consumer.next().await.expect("the consumer stopped") {
                Err(e) if e.is_retriable() => continue,
                other => return other,
            }
        }
    }

    fn values_of(records: &[klife::Record]) -> Vec<(i64, String)> {
        records.iter().map(|r| (r.offset, String::from_utf8_lossy(r.value.as_deref().unwrap()).into_owned())).collect()
    }

    /// An unclean election truncates a partition under two consumers that read it to
    /// its end, and new records are written at the offsets lost.
    ///
    /// How it is provoked, without sleeps: a topic with replicas {L, F} and
    /// `min.insync.replicas=1` (Kafka 4.1 enables eligible leader replicas, KIP-966, on
    /// new clusters: the high watermark does not move while the ISR is smaller than
    /// `min.insync.replicas`, so the records written with F away must not need it).
    /// Five records go to both; F stops (a controlled shutdown takes it out of the ISR
    /// at once); four more go to L alone and are read by both consumers. L is killed;
    /// F starts again, bringing the controller quorum back (every node is a controller,
    /// and two were down); once L is fenced, its partition has no ISR and L as its only
    /// eligible leader, so no clean election can pick F: ElectLeaders with the unclean
    /// election type does. F leads under a new epoch with five records; seven more are
    /// written, at offsets 5 to 11.
    ///
    /// The consumer with `OffsetReset::Error` reports the truncation: at offset 9,
    /// where the logs part (5) and in which epoch. The one with `Earliest` reads the
    /// seven new records from offset 5, neither skipping the four written where the
    /// lost ones were nor reading anything twice. L then starts again, truncates its log
    /// to F's and catches up.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_log_truncated_by_an_unclean_election_is_reported_or_read_on_where_the_logs_part() {
        let client = klife::Client::builder()
            .bootstrap_servers(Broker::Kafka.addresses())
            .request_timeout(Duration::from_secs(15))
            .reconnect_backoff(Duration::from_millis(50), Duration::from_millis(500))
            .default_fetcher({
                // Long enough to outlast the partition's time without a leader, so that
                // the consumers need not resubmit; short waits keep the case quick.
                let mut c = FetcherConfig::default();
                c.fetch_timeout = Duration::from_secs(300);
                c.max_wait = Duration::from_millis(100);
                c
            })
            .build()
            .await
            .unwrap();
        let topic = unique_topic("unclean");
        let created = client
            .create_topics(vec![
                NewTopic::new(&topic, 1).with_replication_factor(2).with_config("min.insync.replicas", "1"),
            ])
            .await
            .unwrap();
        assert!(created.iter().all(|(_, r)| r.is_ok()), "{created:?}");
        Broker::Kafka.await_topic(&client, &topic, 1).await;
        let p = await_partition(&client, &topic, "both replicas in sync", |leader, isr| leader >= 0 && isr.len() == 2)
            .await;
        let (l, f) = (p.leader, *p.replicas.iter().find(|r| **r != p.leader).unwrap());
        let outages = kafka::Outages::new();

        let produce = |client: &klife::Client, values: Vec<String>| {
            let (client, topic) = (client.clone(), topic.clone());
            async move {
                for v in values {
                    client.produce(ProducerRecord::new(topic.clone(), v).with_partition(0)).await.unwrap();
                }
            }
        };
        produce(&client, (0..5).map(|i| format!("a{i}")).collect()).await;
        outages.stop(f).await;
        await_partition(&client, &topic, "F leaving the ISR", |leader, isr| leader == l && isr == [l]).await;
        produce(&client, (0..4).map(|i| format!("b{i}")).collect()).await;

        let mut strict = client.consumer(FetchOptions::new()).with_offset_reset(OffsetReset::Error);
        let mut lenient = client.consumer(FetchOptions::new()).with_offset_reset(OffsetReset::Earliest);
        let mut epoch_read = -1;
        for c in [&mut strict, &mut lenient] {
            c.assign(&[(topic.as_str(), 0, StartOffset::Earliest)]).await.unwrap();
            let mut got = Vec::new();
            while got.len() < 9 {
                let answer = next_answer(c).await.unwrap();
                epoch_read = answer.last_epoch.unwrap();
                got.extend(values_of(&answer.records));
            }
            let want: Vec<(i64, String)> = (0..5)
                .map(|i| format!("a{i}"))
                .chain((0..4).map(|i| format!("b{i}")))
                .enumerate()
                .map(|(i, v)| (i as i64, v))
                .collect();
            assert_eq!(got, want);
        }

        outages.kill(l).await;
        outages.start(f).await;
        await_partition(&client, &topic, "L being fenced", |leader, _| leader < 0).await;
        elect_uncleanly(&client, &topic, f).await;
        // A new producer: the old one's sequence numbers went on past the lost records,
        // and the new leader's producer state ends with its log; what it makes of such
        // a gap is not what this case is about.
        let writer = self::client().await;
        let new: Vec<String> = (0..7).map(|i| format!("c{i}")).collect();
        produce(&writer, new.clone()).await;
        writer.close().await;

        match next_answer(&mut strict).await {
            Err(FetchError::LogTruncated { partition, offset, last_epoch, end_offset, epoch, .. }) => {
                assert_eq!((partition, offset, end_offset), (0, 9, 5));
                assert_eq!((last_epoch, epoch), (epoch_read, epoch_read), "the logs share the epoch read in");
            }
            other => panic!("expected the truncation to be reported, got {other:?}"),
        }
        assert!(strict.next().await.is_none(), "the partition stopped");

        let mut resumed = Vec::new();
        while resumed.len() < new.len() {
            resumed.extend(values_of(&next_answer(&mut lenient).await.unwrap().records));
        }
        let want: Vec<(i64, String)> = new.iter().enumerate().map(|(i, v)| (5 + i as i64, v.clone())).collect();
        assert_eq!(resumed, want, "read on from where the logs part");

        outages.start(l).await;
        await_partition(&client, &topic, "L back in the ISR", |_, isr| isr.len() == 2).await;
        // The log as it is now, read with a fresh consumer: the lost records are gone.
        let expected: Vec<(i64, String)> =
            (0..5).map(|i| format!("a{i}")).chain(new).enumerate().map(|(i, v)| (i as i64, v)).collect();
        let mut fresh = client.consumer(FetchOptions::new());
        fresh.assign(&[(topic.as_str(), 0, StartOffset::Earliest)]).await.unwrap();
        let mut log = Vec::new();
        while log.len() < expected.len() {
            log.extend(values_of(&next_answer(&mut fresh).await.unwrap().records));
        }
        assert_eq!(log, expected);
        client.close().await;
    }

    /// A consumer group goes on when the node that coordinates it is killed: the
    /// member's heartbeats and commits find the new coordinator, every record is
    /// handled and committed, and records are handled again only where a partition was
    /// lost (at most the batch in hand and `handler_max_unacked_commits` batches each
    /// time).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_consumer_group_goes_on_when_its_coordinator_is_killed() {
        use klife::group::{BatchSize, ResetPolicy, TopicConfig};
        use klife_conformance::groups::{Log, Recorder, Seen, ends, until_committed};

        const BATCH: usize = 10;
        const UNACKED: usize = 1;
        let client = client().await;
        let per_partition = 1_000usize;
        let topic = filled_topic(&client, "kill-group", per_partition).await;
        let group = unique_topic("kill-group-g");
        let coordinator =
            client.cluster().coordinator(klife_connection::CoordinatorType::Group, &group).await.unwrap().node_id;

        let log = Log::default();
        let total = per_partition * PARTITIONS as usize;
        let handled = Arc::new(AtomicUsize::new(0));
        let g = client
            .consumer_group(group.as_str())
            .topic(
                TopicConfig::new(topic.as_str())
                    .offset_reset(ResetPolicy::Earliest)
                    .handler_max_batch_size(BatchSize::Max(BATCH))
                    .handler_max_unacked_commits(UNACKED)
                    .handler_cooldown(Duration::from_millis(10))
                    .fetch_interval(Duration::from_millis(50)),
            )
            .handler(Recorder { member: 0, log: log.clone() })
            .start()
            .await
            .unwrap();
        let fault = tokio::spawn(kill_and_restart(
            Arc::new(kafka::Outages::new()),
            coordinator,
            handled.clone(),
            total / 4,
            total,
            total,
        ));
        let counter = {
            let (log, handled) = (log.clone(), handled.clone());
            tokio::spawn(async move {
                loop {
                    handled.store(log.distinct(), Ordering::SeqCst);
                    if log.distinct() >= total {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            })
        };
        log.until("every record handled", |s| s.handled.len() == total).await;
        counter.await.unwrap();
        fault.await.unwrap();
        let end = ends(&client, &topic, PARTITIONS).await;
        until_committed(&client, &group, &topic, &end).await;
        g.shutdown().await.unwrap();
        let (repeats, losses) = log.read(|s: &Seen| {
            let losses: BTreeMap<i32, usize> = (0..PARTITIONS).map(|p| (p, s.stops(p, "lost"))).collect();
            (s.repeats_per_partition(), losses)
        });
        for (partition, again) in repeats {
            let bound = (UNACKED + 1) * BATCH * losses[&partition];
            assert!(
                again <= bound,
                "partition {partition}: {again} records handled again, lost {} time(s): at most {bound} may be",
                losses[&partition]
            );
        }
        client.close().await;
    }

    /// Exactly-once consume-transform-produce while a broker is killed: the scenario's
    /// member crashes and graceful leave, and the leader of an output partition killed
    /// at half way and started again at three quarters. A read_committed reader of the
    /// output sees each input once.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn exactly_once_outputs_each_input_once_when_a_broker_is_killed() {
        let client = client().await;
        let outages = Arc::new(kafka::Outages::new());
        let victim = Arc::new(std::sync::Mutex::new(None));
        let outcome = klife_conformance::exactly_once::scenario(
            Broker::Kafka,
            klife_conformance::exactly_once::Kind::Member,
            3000,
            |stage, [_, out]| {
                let (client, outages, victim) = (&client, outages.clone(), victim.clone());
                async move {
                    use klife_conformance::exactly_once::Stage;
                    match stage {
                        Stage::Half => {
                            let node = leader_of(client, &out, 0).await;
                            *victim.lock().unwrap() = Some(node);
                            outages.kill(node).await;
                        }
                        Stage::ThreeQuarters => {
                            let node = victim.lock().unwrap().take();
                            if let Some(node) = node {
                                outages.start(node).await;
                            }
                        }
                        Stage::Quarter => {}
                    }
                }
            },
        )
        .await;
        assert!(outcome.transformed >= 3000, "{outcome:?}");
        client.close().await;
    }
}
