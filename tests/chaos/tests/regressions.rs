//! The chaos runs' findings, each staged on purpose on a private klife-testkit cluster,
//! so that they stay fixed whatever the seeds draw. Each waits for what it needs under
//! a hang guard, never for a time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use klife::group::{Action, BatchContext, GroupProtocol, Handler, ResetPolicy, TopicConfig};
use klife::{Client, ProducerRecord};
use klife_testkit::FakeCluster;

const HANG_GUARD: Duration = Duration::from_secs(60);

struct Count(Arc<AtomicUsize>);

impl Handler for Count {
    async fn handle_record_batch(&self, _ctx: &BatchContext, records: Vec<klife::Record>) -> Action {
        self.0.fetch_add(records.len(), Ordering::SeqCst);
        Action::Commit
    }
}

async fn until(what: &str, done: impl Fn() -> bool) {
    tokio::time::timeout(HANG_GUARD, async {
        while !done() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("hung waiting for {what}"));
}

/// Seeds 12 and 15 (testkit): a member whose client read the metadata while the
/// group's coordinator was down asked FindCoordinator, got that broker's id, and
/// looked it up in the same stale metadata again and again ("broker 1 is not in the
/// cluster metadata") until the metadata's maximum age ran out: five minutes without
/// joining. The member now reads the metadata again when the coordinator is a broker it
/// does not know.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_whose_metadata_misses_the_coordinator_reads_it_again_and_joins() {
    for protocol in [GroupProtocol::Consumer, GroupProtocol::Classic] {
        let fake = FakeCluster::builder()
            .brokers(3)
            .consumer_heartbeat_interval(Duration::from_millis(100))
            .start()
            .await
            .unwrap();
        fake.create_topic("t", 2).unwrap();
        let group = format!("stale-{protocol:?}");
        let coordinator = fake.coordinator(&group).unwrap();
        let producer = Client::builder().bootstrap_servers(fake.addresses()).build().await.unwrap();
        for i in 0..20 {
            producer.produce(ProducerRecord::new("t", format!("v{i}")).with_partition(i % 2)).await.unwrap();
        }
        // The member's client reads the metadata while the coordinator is down: it
        // lists the two other brokers only.
        let client = Client::builder().bootstrap_servers(fake.addresses()).build().await.unwrap();
        fake.broker_down(coordinator).unwrap();
        let m = client.cluster().refresh_metadata().await.unwrap();
        assert!(!m.brokers.contains_key(&coordinator));
        fake.broker_up(coordinator).await.unwrap();
        assert_eq!(fake.coordinator(&group), Some(coordinator));

        let handled = Arc::new(AtomicUsize::new(0));
        let g = client
            .consumer_group(group.as_str())
            .protocol(protocol)
            .heartbeat_interval(Duration::from_millis(100))
            .topic(TopicConfig::new("t").offset_reset(ResetPolicy::Earliest).fetch_interval(Duration::from_millis(20)))
            .handler(Count(handled.clone()))
            .start()
            .await
            .unwrap();
        until("every record handled", || handled.load(Ordering::SeqCst) == 20).await;
        g.shutdown().await.unwrap();
        client.close().await;
        producer.close().await;
        fake.shutdown().await;
    }
}

/// A handler that holds its first batch until released.
struct Held {
    handled: Arc<AtomicUsize>,
    holding: Arc<tokio::sync::Notify>,
    release: Arc<tokio::sync::Semaphore>,
}

impl Handler for Held {
    async fn handle_record_batch(&self, _ctx: &BatchContext, records: Vec<klife::Record>) -> Action {
        if self.handled.load(Ordering::SeqCst) == 0 {
            self.holding.notify_one();
            let _ = self.release.acquire().await;
        }
        self.handled.fetch_add(records.len(), Ordering::SeqCst);
        Action::Commit
    }
}

/// Seed 8 (testkit, classic): a member shutting down while its session expired joined
/// again, was assigned partitions and started them, so that the shutdown, which waits
/// until nothing runs, never ended: the member went on heartbeating until its handle
/// was dropped. Partitions assigned during a shutdown are now given up at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_assigned_partitions_while_it_shuts_down_still_leaves() {
    for protocol in [GroupProtocol::Classic, GroupProtocol::Consumer] {
        let fake = FakeCluster::builder()
            .brokers(1)
            .consumer_heartbeat_interval(Duration::from_millis(100))
            .start()
            .await
            .unwrap();
        fake.create_topic("t", 2).unwrap();
        let group = format!("closing-{protocol:?}");
        let client = Client::builder().bootstrap_servers(fake.addresses()).build().await.unwrap();
        for i in 0..20 {
            client.produce(ProducerRecord::new("t", format!("v{i}")).with_partition(i % 2)).await.unwrap();
        }
        let (handled, holding) = (Arc::new(AtomicUsize::new(0)), Arc::new(tokio::sync::Notify::new()));
        let release = Arc::new(tokio::sync::Semaphore::new(0));
        let handler = Held { handled: handled.clone(), holding: holding.clone(), release: release.clone() };
        let mut g = client
            .consumer_group(group.as_str())
            .protocol(protocol)
            .heartbeat_interval(Duration::from_millis(100))
            .rebalance_timeout(Duration::from_secs(2))
            .topic(TopicConfig::new("t").offset_reset(ResetPolicy::Earliest).fetch_interval(Duration::from_millis(20)))
            .handler(handler)
            .start()
            .await
            .unwrap();
        tokio::time::timeout(HANG_GUARD, holding.notified()).await.expect("a batch in hand");
        // The shutdown waits for the batch in hand; meanwhile the session expires, and
        // the member joins again and is given the partitions.
        g.close();
        let member = g.member_id();
        assert!(fake.expire_member(&group, &member), "{member} is in the group");
        until("the member to join again", || fake.describe_group(&group).is_some_and(|d| !d.members.is_empty())).await;
        release.add_permits(1_000);
        tokio::time::timeout(HANG_GUARD, g.wait()).await.expect("the shutdown hung").unwrap();
        client.close().await;
        fake.shutdown().await;
    }
}

/// Seeds 25 and 30 (testkit, KIP-848): partitions added to a topic while the group
/// ran were assigned to a member whose client had read the topic's metadata before;
/// its consumer looked up the partition's earliest offset in that metadata, failed
/// with "topic t has no partition 1 (it has 1)", and the partition stayed unconsumed.
/// The member now reads the metadata again when the coordinator assigns a partition it
/// does not know. Seed 107 (testkit, classic): nobody assigned the new partitions at
/// all, since the classic coordinator does not watch partition counts and the leader
/// did not either; it now looks every `LEADER_WATCH_INTERVAL` and rebalances.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_added_while_the_group_runs_is_consumed() {
    for protocol in [GroupProtocol::Consumer, GroupProtocol::Classic] {
        let fake = FakeCluster::builder()
            .brokers(1)
            .consumer_heartbeat_interval(Duration::from_millis(100))
            .start()
            .await
            .unwrap();
        fake.create_topic("t", 1).unwrap();
        let group = format!("added-{protocol:?}");
        let client = Client::builder().bootstrap_servers(fake.addresses()).build().await.unwrap();
        let handled = Arc::new(AtomicUsize::new(0));
        let g = client
            .consumer_group(group.as_str())
            .protocol(protocol)
            .heartbeat_interval(Duration::from_millis(100))
            .topic(TopicConfig::new("t").offset_reset(ResetPolicy::Earliest).fetch_interval(Duration::from_millis(20)))
            .handler(Count(handled.clone()))
            .start()
            .await
            .unwrap();
        let other = Client::builder().bootstrap_servers(fake.addresses()).build().await.unwrap();
        other.produce(ProducerRecord::new("t", "first").with_partition(0)).await.unwrap();
        until("the first record handled", || handled.load(Ordering::SeqCst) == 1).await;
        other.create_partitions("t", 2).await.unwrap();
        other.produce(ProducerRecord::new("t", "second").with_partition(1)).await.unwrap();
        until("the record of the new partition handled", || handled.load(Ordering::SeqCst) == 2).await;
        g.shutdown().await.unwrap();
        client.close().await;
        other.close().await;
        fake.shutdown().await;
    }
}

/// Notes the stops' reasons, and holds the batches of partition 0 after the first
/// while `hold` has no permit.
struct Stops {
    handled: Arc<AtomicUsize>,
    holding: Arc<tokio::sync::Notify>,
    hold: Arc<tokio::sync::Semaphore>,
    stops: Arc<std::sync::Mutex<Vec<(i32, String)>>>,
}

impl Handler for Stops {
    async fn handle_record_batch(&self, ctx: &BatchContext, records: Vec<klife::Record>) -> Action {
        if ctx.partition() == 0 && records[0].offset > 0 {
            self.holding.notify_one();
            let _ = self.hold.acquire().await.map(|p| p.forget());
        }
        self.handled.fetch_add(records.len(), Ordering::SeqCst);
        Action::Commit
    }

    async fn on_consumer_stop(&self, p: &klife::group::PartitionContext, reason: &klife::group::StopReason) {
        self.stops.lock().unwrap().push((p.partition(), format!("{reason:?}")));
    }
}

/// Seed 45 (testkit, classic, pipeline): a member giving a partition up had its last
/// commit refused for good (it was no longer in the group); the partition was reported
/// `Revoked`, "what was handled is committed", and its next owner handled those records
/// again. It is now reported `Lost`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_given_up_whose_last_commit_is_refused_is_reported_lost() {
    let fake = FakeCluster::builder().brokers(1).start().await.unwrap();
    fake.create_topic("t", 2).unwrap();
    let client = Client::builder().bootstrap_servers(fake.addresses()).build().await.unwrap();
    client.produce(ProducerRecord::new("t", "a0").with_partition(0)).await.unwrap();
    let handled = Arc::new(AtomicUsize::new(0));
    let (holding, hold) = (Arc::new(tokio::sync::Notify::new()), Arc::new(tokio::sync::Semaphore::new(0)));
    let stops = Arc::new(std::sync::Mutex::new(Vec::new()));
    let member = |n: usize| {
        let handler =
            Stops { handled: handled.clone(), holding: holding.clone(), hold: hold.clone(), stops: stops.clone() };
        client
            .consumer_group("refused")
            .protocol(GroupProtocol::Classic)
            .heartbeat_interval(Duration::from_millis(100))
            .assignors(vec![Arc::new(klife::group::RangeAssignor)])
            .topic(
                TopicConfig::new("t")
                    .offset_reset(ResetPolicy::Earliest)
                    .fetch_interval(Duration::from_millis(20))
                    .handler_max_batch_size(klife::group::BatchSize::Max(1 + n)),
            )
            .handler(handler)
            .start()
    };
    let a = member(0).await.unwrap();
    until("the first record handled", || handled.load(Ordering::SeqCst) == 1).await;
    until("it committed", || fake.committed_offsets("refused").get(&("t".to_owned(), 0)) == Some(&1)).await;
    client.produce(ProducerRecord::new("t", "a1").with_partition(0)).await.unwrap();
    tokio::time::timeout(HANG_GUARD, holding.notified()).await.expect("a batch in hand");
    // A second member: the eager assignor takes everything from the first, whose
    // commit of the batch in hand is then refused.
    fake.inject_errors(klife_protocol::ApiKey::OffsetCommit, &[klife_protocol::ErrorCode::UnknownMemberId], None);
    let b = member(1).await.unwrap();
    until("the revocation waits for the batch in hand", || {
        fake.describe_group("refused").is_some_and(|d| d.members.len() == 2)
    })
    .await;
    hold.add_permits(1);
    until("partition 0 stopped on the first member", || stops.lock().unwrap().iter().any(|(p, _)| *p == 0)).await;
    let reason = stops.lock().unwrap().iter().find(|(p, _)| *p == 0).map(|(_, r)| r.clone()).unwrap();
    assert_eq!(reason, "Lost", "its last commit was refused: nothing says it was handed over committed");
    hold.add_permits(1_000);
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
    client.close().await;
    fake.shutdown().await;
}
