//! What consumer group cases share: a log of what a group's members handled, started
//! and stopped, waits on it, and the group's committed offsets.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Poll;
use std::time::Duration;

use klife_connection::CoordinatorType;
use klife_group::driver::{Ended, GroupMember, MemberEvent};
use klife_protocol::messages::OffsetFetchRequest;
use klife_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use klife_protocol::types::TopicPartition;
use tokio::sync::Notify;

/// The longest any wait of a group case may take before it fails as hung (a member
/// killed hard waits for Kafka's 45 s session timeout; a killed coordinator node for
/// its logs to load).
pub const HANG_GUARD: Duration = Duration::from_secs(300);

/// What the members of a case saw.
#[derive(Debug, Default)]
pub struct Seen {
    /// Every record handled: (partition, offset) → the members that handled it, once
    /// per time.
    pub handled: BTreeMap<(i32, i64), Vec<usize>>,
    /// Which member runs each partition now.
    pub running: HashMap<i32, usize>,
    /// Partitions started, by member.
    pub started: Vec<(usize, i32)>,
    /// Stops: member, partition and the reason's name (`revoked`, `lost`, `shutdown`,
    /// `failed`).
    pub stopped: Vec<(usize, i32, String)>,
    /// The sizes of the batches handled.
    pub batches: Vec<usize>,
}

impl Seen {
    /// How many times each partition's records were handled more than once.
    pub fn repeats_per_partition(&self) -> BTreeMap<i32, usize> {
        let mut out = BTreeMap::new();
        for ((partition, _), by) in &self.handled {
            if by.len() > 1 {
                *out.entry(*partition).or_default() += by.len() - 1;
            }
        }
        out
    }

    /// How many times `partition` was stopped for `reason`.
    pub fn stops(&self, partition: i32, reason: &str) -> usize {
        self.stopped.iter().filter(|(_, p, r)| *p == partition && r == reason).count()
    }
}

/// A shared [`Seen`], with a wake-up for every change.
#[derive(Debug, Clone, Default)]
pub struct Log {
    /// What was seen.
    pub seen: Arc<Mutex<Seen>>,
    changed: Arc<Notify>,
}

impl Log {
    /// Changes what was seen, and wakes the waiters.
    pub fn with<T>(&self, f: impl FnOnce(&mut Seen) -> T) -> T {
        let out = f(&mut self.seen.lock().unwrap_or_else(PoisonError::into_inner));
        self.changed.notify_waiters();
        out
    }

    /// Reads what was seen.
    pub fn read<T>(&self, f: impl FnOnce(&Seen) -> T) -> T {
        f(&self.seen.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Waits until `done` holds on what was seen; fails as hung after [`HANG_GUARD`].
    pub async fn until(&self, what: &str, done: impl Fn(&Seen) -> bool) {
        tokio::time::timeout(HANG_GUARD, async {
            loop {
                let notified = self.changed.notified();
                if self.read(&done) {
                    return;
                }
                notified.await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("hung waiting for {what}"));
    }

    /// How many distinct records were handled.
    pub fn distinct(&self) -> usize {
        self.read(|s| s.handled.len())
    }

    /// Notes that `member` handled the records at these (partition, offset).
    pub fn handled(&self, member: usize, records: impl IntoIterator<Item = (i32, i64)>, batch: usize) {
        self.with(|s| {
            s.batches.push(batch);
            for k in records {
                s.handled.entry(k).or_default().push(member);
            }
        });
    }

    /// Notes that `member` started `partition`; fails when another member runs it.
    pub fn started(&self, member: usize, partition: i32) {
        self.with(|s| {
            if let Some(other) = s.running.insert(partition, member) {
                panic!("partition {partition} started on member {member} while member {other} runs it");
            }
            s.started.push((member, partition));
        });
    }

    /// Notes that `member` stopped `partition` for `reason`.
    pub fn stopped(&self, member: usize, partition: i32, reason: &klife::group::StopReason) {
        let reason = match reason {
            klife::group::StopReason::Revoked => "revoked",
            klife::group::StopReason::Lost => "lost",
            klife::group::StopReason::Shutdown => "shutdown",
            klife::group::StopReason::Failed(_) => "failed",
            _ => "other",
        };
        self.with(|s| {
            if s.running.get(&partition) == Some(&member) {
                s.running.remove(&partition);
            }
            s.stopped.push((member, partition, reason.to_owned()));
        });
    }
}

/// A handler that handles every record by noting it in a [`Log`].
#[derive(Debug, Clone)]
pub struct Recorder {
    /// The member's number in the log.
    pub member: usize,
    /// The log.
    pub log: Log,
}

impl klife::group::Handler for Recorder {
    async fn handle_record_batch(
        &self,
        _ctx: &klife::group::BatchContext,
        records: Vec<klife::Record>,
    ) -> klife::group::Action {
        self.log.handled(self.member, records.iter().map(|r| (r.partition, r.offset)), records.len());
        klife::group::Action::Commit
    }

    async fn on_consumer_start(&self, p: &klife::group::PartitionContext) {
        self.log.started(self.member, p.partition());
    }

    async fn on_consumer_stop(&self, p: &klife::group::PartitionContext, reason: &klife::group::StopReason) {
        self.log.stopped(self.member, p.partition(), reason);
    }
}

/// Starts a handler-mode member of `group` over `topic` (from the earliest offset,
/// fetching every 50 ms, a 10 s session) that notes what it handles in `log` as
/// `member`.
pub async fn recording_member(
    broker: crate::Broker,
    client: &klife::Client,
    group: &str,
    topic: &str,
    protocol: klife::group::GroupProtocol,
    member: usize,
    log: &Log,
) -> klife::group::ConsumerGroup {
    client
        .consumer_group(group)
        .protocol(protocol)
        .driver(driver_for(broker))
        .session_timeout(Duration::from_secs(10))
        .topic(
            klife::group::TopicConfig::new(topic)
                .offset_reset(klife::group::ResetPolicy::Earliest)
                .fetch_interval(Duration::from_millis(50)),
        )
        .handler(Recorder { member, log: log.clone() })
        .start()
        .await
        .unwrap_or_else(|e| panic!("member {member} of {group}: {e}"))
}

/// Waits until `partitions` were handled, and checks that each was first handled at
/// `start(partition)`: where the member that took them over began.
pub async fn until_started_at(log: &Log, partitions: &[i32], start: impl Fn(i32) -> i64) {
    log.until("the partitions handed over being handled", |s| {
        partitions.iter().all(|p| s.handled.keys().any(|(q, _)| q == p))
    })
    .await;
    log.read(|s| {
        for p in partitions {
            let first = s.handled.keys().filter(|(q, _)| q == p).map(|(_, o)| *o).min();
            assert_eq!(first, Some(start(*p)), "partition {p}: the next owner starts at the commit");
        }
    });
}

/// A new topic (named from `prefix`) of `partitions` partitions with `per` records in
/// each, valued `{partition}-{i}`.
pub async fn topic_with(
    broker: crate::Broker,
    client: &klife::Client,
    prefix: &str,
    partitions: i32,
    per: usize,
) -> String {
    let topic = crate::unique_topic(prefix);
    broker.create_topic(client, &topic, partitions).await;
    let records = (0..partitions)
        .flat_map(|p| {
            let topic = topic.clone();
            (0..per).map(move |i| klife::ProducerRecord::new(topic.clone(), format!("{p}-{i}")).with_partition(p))
        })
        .collect();
    for r in client.produce_batch(records).await {
        r.unwrap_or_else(|e| panic!("producing to {topic}: {e}"));
    }
    topic
}

/// The group's committed offsets of `topic`'s partitions (-1: none).
pub async fn committed(client: &klife::Client, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    try_committed(client, group, topic, partitions).await.unwrap_or_else(|e| panic!("{e}"))
}

/// [`committed`], or what went wrong (a coordinator moving, a node down).
pub async fn try_committed(
    client: &klife::Client,
    group: &str,
    topic: &str,
    partitions: i32,
) -> Result<Vec<i64>, String> {
    let cluster = client.cluster();
    let c = cluster.coordinator(CoordinatorType::Group, group).await.map_err(|e| format!("coordinator: {e}"))?;
    let conn = cluster.broker(c.node_id).await.map_err(|e| format!("connection: {e}"))?;
    let request = OffsetFetchRequest::default().with_group_id(group.into()).with_topics(Some(vec![
        OffsetFetchRequestTopic::default().with_name(topic.into()).with_partition_indexes((0..partitions).collect()),
    ]));
    let version = conn.version_for(klife_protocol::ApiKey::OffsetFetch, Some(7)).map_err(|e| e.to_string())?;
    let answer = conn.send_version(&request, version).await.map_err(|e| format!("OffsetFetch: {e}"))?;
    if answer.error_code != 0 {
        cluster.invalidate_coordinator(CoordinatorType::Group, group);
        return Err(format!("OffsetFetch: {}", klife_protocol::ErrorCode::from_code(answer.error_code).name()));
    }
    let mut out = vec![-1; partitions as usize];
    for t in answer.topics {
        for p in t.partitions {
            out[p.partition_index as usize] = p.committed_offset;
        }
    }
    Ok(out)
}

/// The member task's settings for `broker`: librdkafka 2.12's mock cluster advertises
/// JoinGroup v6, SyncGroup v4 and LeaveGroup v3-v4 but reads them with older layouts
/// (it closes the connection on them), so the versions its own client sends are the
/// highest it gets.
pub fn driver_for(broker: crate::Broker) -> klife_group::driver::DriverConfig {
    use klife_protocol::ApiKey;
    let driver = klife_group::driver::DriverConfig::default();
    match broker {
        crate::Broker::RdkafkaMock => driver
            .with_max_version(ApiKey::JoinGroup, 5)
            .with_max_version(ApiKey::SyncGroup, 3)
            .with_max_version(ApiKey::LeaveGroup, 2),
        _ => driver,
    }
}

/// The offsets after the last record handled of each of `partitions` partitions (0
/// for none): what a group commits once it handled everything. (Tansu's ListOffsets
/// answers "latest" with the last batch's base offset + 1, not the log end.)
pub fn handled_ends(seen: &Seen, partitions: i32) -> Vec<i64> {
    (0..partitions)
        .map(|p| seen.handled.keys().filter(|(q, _)| *q == p).map(|(_, o)| o + 1).max().unwrap_or(0))
        .collect()
}

/// The partitions' end offsets.
pub async fn ends(client: &klife::Client, topic: &str, partitions: i32) -> Vec<i64> {
    let queries = (0..partitions).map(|p| (TopicPartition::new(topic, p), klife::OffsetSpec::Latest));
    let answers = client.list_offsets(queries).await.expect("the end offsets");
    answers.into_iter().map(|a| a.result.expect("an end offset").offset).collect()
}

/// Waits until the group's commits of `topic` reach `want`; fails as hung after
/// [`HANG_GUARD`].
pub async fn until_committed(client: &klife::Client, group: &str, topic: &str, want: &[i64]) {
    tokio::time::timeout(HANG_GUARD, async {
        loop {
            // A coordinator moving answers with an error: look again.
            if try_committed(client, group, topic, want.len() as i32).await.is_ok_and(|c| c == want) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("hung waiting for the commits to reach {want:?}"));
}

/// What the members' events say: who owns what (fails on a partition owned twice),
/// what each gave up, its generations, how it ended.
#[derive(Default)]
pub struct Owners {
    /// See the struct's documentation.
    pub owner: HashMap<TopicPartition, usize>,
    /// See the struct's documentation.
    pub revoked: HashMap<usize, Vec<BTreeSet<TopicPartition>>>,
    /// See the struct's documentation.
    pub generations: HashMap<usize, Vec<i32>>,
    /// See the struct's documentation.
    pub lost: HashMap<usize, usize>,
    /// See the struct's documentation.
    pub ended: HashMap<usize, Ended>,
}

impl Owners {
    /// The partitions `member` owns.
    pub fn of(&self, member: usize) -> BTreeSet<TopicPartition> {
        self.owner.iter().filter(|(_, m)| **m == member).map(|(p, _)| p.clone()).collect()
    }

    /// The last generation `member` reported.
    pub fn generation(&self, member: usize) -> Option<i32> {
        self.generations.get(&member).and_then(|g| g.last().copied())
    }

    /// Whether members `a` and `b` each own `half` of the partitions, in the same
    /// generation (the rebalance is over for both).
    pub fn split(&self, a: usize, b: usize, half: usize) -> bool {
        self.of(a).len() == half && self.of(b).len() == half && self.generation(a) == self.generation(b)
    }

    /// The partitions `member` gave up, each revocation apart.
    pub fn revoked(&self, member: usize) -> &[BTreeSet<TopicPartition>] {
        self.revoked.get(&member).map_or(&[], Vec::as_slice)
    }

    /// Takes `member`'s `event` into account; fails on a partition owned twice.
    pub fn apply(&mut self, member: usize, event: MemberEvent) {
        match event {
            MemberEvent::Assigned { partitions } => {
                for p in partitions {
                    if let Some(other) = self.owner.insert(p.clone(), member) {
                        panic!("{p} assigned to member {member} while member {other} owns it");
                    }
                }
            }
            MemberEvent::Revoked { revocation } => {
                for p in revocation.partitions() {
                    assert_eq!(self.owner.remove(p), Some(member), "{p} revoked from member {member}, not its owner");
                }
                self.revoked.entry(member).or_default().push(revocation.partitions().iter().cloned().collect());
                // Given back only now that no member owns them here.
                revocation.release();
            }
            MemberEvent::Lost { partitions, .. } => {
                *self.lost.entry(member).or_default() += 1;
                for p in &partitions {
                    assert_eq!(self.owner.remove(p), Some(member), "{p} lost by member {member}, not its owner");
                }
            }
            MemberEvent::Generation { member_id, epoch } => {
                assert!(epoch >= -1, "member {member}: generation {epoch}");
                assert!(epoch < 0 || !member_id.is_empty(), "member {member}: generation {epoch} without a member id");
                self.generations.entry(member).or_default().push(epoch);
            }
            MemberEvent::Ended(e) => {
                assert!(self.ended.insert(member, e).is_none(), "member {member} ended twice");
            }
        }
    }

    /// Takes the members' events until `done` holds and the members' own views agree
    /// with the events.
    pub async fn until(&mut self, members: &mut [&mut GroupMember], done: impl Fn(&Owners) -> bool) {
        let work = async {
            loop {
                let settled = done(self)
                    && members
                        .iter()
                        .enumerate()
                        .all(|(i, m)| m.assignment().into_iter().collect::<BTreeSet<_>>() == self.of(i));
                if settled {
                    return;
                }
                let next = std::future::poll_fn(|cx| {
                    for (i, m) in members.iter_mut().enumerate() {
                        if let Poll::Ready(Some(e)) = m.poll_next_event(cx) {
                            return Poll::Ready((i, e));
                        }
                    }
                    Poll::Pending
                });
                // A member's view follows a release a moment after the event: when no
                // event comes, look at the views again.
                if let Ok((i, e)) = tokio::time::timeout(Duration::from_millis(50), next).await {
                    self.apply(i, e);
                }
            }
        };
        if tokio::time::timeout(HANG_GUARD, work).await.is_err() {
            panic!(
                "hung: owners {:?}, views {:?}, ended {:?}",
                self.owner,
                members.iter().map(|m| m.assignment()).collect::<Vec<_>>(),
                self.ended
            );
        }
    }

    /// Takes the members' events for `span` (the user's processing in the case that
    /// holds a revocation).
    pub async fn during(&mut self, members: &mut [&mut GroupMember], span: Duration) {
        let work = async {
            loop {
                let next = std::future::poll_fn(|cx| {
                    for (i, m) in members.iter_mut().enumerate() {
                        if let Poll::Ready(Some(e)) = m.poll_next_event(cx) {
                            return Poll::Ready((i, e));
                        }
                    }
                    Poll::Pending
                });
                let (i, e) = next.await;
                self.apply(i, e);
            }
        };
        let _ = tokio::time::timeout(span, work).await;
    }

    /// Forgets what `member` owns: its leave releases its revocation without an event
    /// to the test, so its ownership ends before the leave starts.
    pub fn forget(&mut self, member: usize) -> BTreeSet<TopicPartition> {
        let owned = self.of(member);
        for p in &owned {
            self.owner.remove(p);
        }
        owned
    }
}
