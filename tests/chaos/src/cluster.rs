//! The cluster a run goes to, behind one face: its addresses, its topics, the faults
//! that act on brokers (down and up, leaders and coordinators moved, injected errors,
//! latency, the clock) and the views the checks read (committed offsets, log ends, the
//! records in each log).
//!
//! klife-testkit is driven through [`FakeCluster`]'s fault API and read directly. Apache
//! Kafka's nodes are stopped and started through the control port `cargo xtask brokers`
//! serves, as `klife-conformance`'s `kafka_faults` suite does, and read through the
//! admin client (and raw Fetch requests for the logs).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use klife::{OffsetSpec, Reassignment, TopicPartition};
use klife_conformance::kafka::Outages;
use klife_protocol::ErrorCode;
use klife_protocol::messages::IncrementalAlterConfigsRequest;
use klife_protocol::messages::incremental_alter_configs_request::{AlterConfigsResource, AlterableConfig};
use klife_testkit::FakeCluster;

use crate::plan::{Fault, Plan, Timing};

/// Kafka's config resource type of a group (KIP-848 group configs).
const GROUP_RESOURCE: i8 = 32;

/// Where a run goes.
pub enum Target {
    /// A fake cluster of the run's own.
    Testkit(FakeCluster),
    /// The Apache Kafka cluster of `KLIFE_TEST_KAFKA`.
    Kafka {
        /// The nodes taken down, started again when dropped.
        outages: Arc<Outages>,
    },
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Testkit(c) => write!(f, "Testkit({})", c.bootstrap()),
            Target::Kafka { .. } => f.write_str("Kafka"),
        }
    }
}

impl Target {
    /// A fake cluster for `plan`, or the Kafka cluster of the environment.
    pub async fn start(plan: &Plan) -> Result<Target, String> {
        match plan.broker {
            crate::plan::Broker::Testkit => {
                // KIP-848 sessions and heartbeats are the cluster's; classic ones the members'.
                let (session, heartbeat) = if plan.classic() {
                    (Duration::from_secs(2), Duration::from_millis(100))
                } else {
                    (plan.timing.session, plan.timing.heartbeat)
                };
                let cluster = FakeCluster::builder()
                    .brokers(crate::plan::BROKERS)
                    .cluster_id(format!("klife-chaos-{}", plan.seed))
                    .auto_create_topics(false, 1)
                    .consumer_session_timeout(session)
                    .consumer_heartbeat_interval(heartbeat)
                    .start()
                    .await
                    .map_err(|e| format!("the fake cluster did not start: {e}"))?;
                Ok(Target::Testkit(cluster))
            }
            crate::plan::Broker::Kafka => {
                for name in ["KLIFE_TEST_KAFKA", "KLIFE_TEST_KAFKA_CONTROL"] {
                    if std::env::var(name).map_or(true, |v| v.is_empty()) {
                        return Err(format!(
                            "{name} is not set: chaos runs on Kafka need the cluster `cargo xtask brokers --serve` \
                             starts (`cargo xtask chaos --broker kafka` starts one when the variables are missing)"
                        ));
                    }
                }
                Ok(Target::Kafka { outages: Arc::new(Outages::new()) })
            }
        }
    }

    /// The bootstrap addresses.
    pub fn addresses(&self) -> Vec<String> {
        match self {
            Target::Testkit(c) => c.addresses(),
            Target::Kafka { .. } => klife_conformance::Broker::Kafka.addresses(),
        }
    }

    /// The fake cluster, if the run has one.
    pub fn testkit(&self) -> Option<&FakeCluster> {
        match self {
            Target::Testkit(c) => Some(c),
            Target::Kafka { .. } => None,
        }
    }

    /// Creates a topic and waits until every partition has a leader that answers.
    pub async fn create_topic(&self, admin: &klife::Client, name: &str, partitions: i32) -> Result<(), String> {
        admin.create_topic(name, partitions).await.map_err(|e| format!("creating topic {name}: {e}"))?;
        self.await_partitions(admin, name, partitions).await;
        Ok(())
    }

    /// Waits until the admin client's metadata has `partitions` partitions of `name`,
    /// each led by a broker that answers for it.
    pub async fn await_partitions(&self, admin: &klife::Client, name: &str, partitions: i32) {
        klife_conformance::Broker::Kafka.await_topic(admin, name, partitions).await;
    }

    /// Sets the group's KIP-848 session timeout and heartbeat interval (Kafka group
    /// configs, KIP-848): the broker defaults (45 s, 5 s) would make every killed
    /// member cost most of a minute.
    pub async fn configure_group(&self, admin: &klife::Client, group: &str, timing: &Timing) -> Result<(), String> {
        if self.testkit().is_some() {
            return Ok(());
        }
        let set = |name: &str, value: Duration| {
            AlterableConfig::default()
                .with_name(name.to_owned())
                .with_config_operation(0)
                .with_value(Some(value.as_millis().to_string()))
        };
        let request = IncrementalAlterConfigsRequest::default().with_resources(vec![
            AlterConfigsResource::default()
                .with_resource_type(GROUP_RESOURCE)
                .with_resource_name(group.to_owned())
                .with_configs(vec![
                    set("consumer.session.timeout.ms", timing.session),
                    set("consumer.heartbeat.interval.ms", timing.heartbeat),
                ]),
        ]);
        let conn = admin.cluster().any_broker().await.map_err(|e| format!("group configs: {e}"))?;
        let answer = conn.send(&request).await.map_err(|e| format!("group configs: {e}"))?;
        for r in answer.responses {
            if r.error_code != 0 {
                return Err(format!(
                    "group configs of {group}: {} {}",
                    ErrorCode::from_code(r.error_code).name(),
                    r.error_message.unwrap_or_default()
                ));
            }
        }
        Ok(())
    }

    /// The group's committed offsets (the fake cluster's own view on testkit; the
    /// facade's `group_committed_offsets` on Kafka).
    pub async fn committed(&self, admin: &klife::Client, group: &str) -> Result<BTreeMap<TopicPartition, i64>, String> {
        match self {
            Target::Testkit(c) => {
                Ok(c.committed_offsets(group).into_iter().map(|((t, p), o)| (TopicPartition::new(t, p), o)).collect())
            }
            Target::Kafka { .. } => admin
                .group_committed_offsets(group)
                .await
                .map(|v| v.into_iter().map(|(tp, o, _)| (tp, o)).collect())
                .map_err(|e| e.to_string()),
        }
    }

    /// Each partition's log end (high watermark).
    pub async fn ends(
        &self,
        admin: &klife::Client,
        partitions: &[TopicPartition],
    ) -> Result<BTreeMap<TopicPartition, i64>, String> {
        match self {
            Target::Testkit(c) => partitions
                .iter()
                .map(|tp| c.high_watermark(&tp.topic, tp.partition).map(|o| (tp.clone(), o)).map_err(|e| e.to_string()))
                .collect(),
            Target::Kafka { .. } => {
                let answers = admin
                    .list_offsets(partitions.iter().map(|tp| (tp.clone(), OffsetSpec::Latest)))
                    .await
                    .map_err(|e| e.to_string())?;
                partitions
                    .iter()
                    .map(|tp| {
                        let found = answers.get(&tp.topic, tp.partition).ok_or_else(|| format!("no end for {tp}"))?;
                        found.offset().map(|o| (tp.clone(), o)).map_err(|e| format!("{tp}: {e}"))
                    })
                    .collect()
            }
        }
    }

    /// A partition's records, as (offset, value), read straight from the log.
    pub async fn log(&self, admin: &klife::Client, tp: &TopicPartition, end: i64) -> Vec<(i64, Option<Bytes>)> {
        match self {
            Target::Testkit(c) => {
                c.partition_records(&tp.topic, tp.partition).into_iter().map(|r| (r.offset, r.value)).collect()
            }
            Target::Kafka { .. } => klife_conformance::raw::fetch_all(admin.cluster(), &tp.topic, tp.partition, 0, end)
                .await
                .into_iter()
                .map(|r| (r.offset, r.value))
                .collect(),
        }
    }

    /// Forgets injected faults not yet applied and latencies (testkit), before the final
    /// checks.
    pub fn calm(&self) {
        if let Target::Testkit(c) = self {
            c.clear_faults();
            for id in c.broker_ids() {
                let _ = c.set_latency(id, Duration::ZERO);
            }
        }
    }

    /// Applies a fault that acts on the cluster, and undoes it when it has a duration
    /// (a broker comes back up, latency ends). Member faults are not applied here.
    pub async fn apply(
        &self,
        admin: &klife::Client,
        group: &str,
        topics: &[String],
        fault: &Fault,
    ) -> Result<(), String> {
        match (self, fault) {
            (Target::Testkit(c), Fault::BrokerDown { broker, down_ms, .. }) => {
                let id = c.broker_ids()[*broker];
                c.broker_down(id).map_err(|e| e.to_string())?;
                tokio::time::sleep(Duration::from_millis(*down_ms)).await;
                c.broker_up(id).await.map_err(|e| e.to_string())
            }
            (Target::Kafka { outages }, Fault::BrokerDown { broker, down_ms, sigkill }) => {
                let node = i32::try_from(*broker).unwrap_or(0) + 1;
                if *sigkill {
                    outages.kill(node).await;
                } else {
                    outages.stop(node).await;
                }
                tokio::time::sleep(Duration::from_millis(*down_ms)).await;
                outages.start(node).await;
                Ok(())
            }
            (Target::Testkit(c), Fault::LeaderMove { topic, partition }) => {
                c.move_leader(&topics[*topic], *partition).map(|_| ()).map_err(|e| e.to_string())
            }
            (Target::Kafka { .. }, Fault::LeaderMove { topic, partition }) => {
                move_kafka_leader(admin, &topics[*topic], *partition).await
            }
            (Target::Testkit(c), Fault::CoordinatorMove { broker }) => {
                c.move_group_coordinator(group, c.broker_ids()[*broker]).map_err(|e| e.to_string())
            }
            (Target::Kafka { outages }, Fault::CoordinatorMove { .. }) => {
                // Kafka places a group by its id: moving it means its node going away.
                let node = admin
                    .cluster()
                    .coordinator(klife::CoordinatorType::Group, group)
                    .await
                    .map_err(|e| format!("finding the coordinator: {e}"))?
                    .node_id;
                outages.stop(node).await;
                tokio::time::sleep(Duration::from_secs(3)).await;
                outages.start(node).await;
                Ok(())
            }
            (Target::Testkit(c), Fault::Errors { api, codes }) => {
                c.inject_errors(*api, codes, None);
                Ok(())
            }
            (Target::Testkit(c), Fault::LostAnswer { api }) => {
                c.inject_lost_answer(*api, None);
                Ok(())
            }
            (Target::Testkit(c), Fault::Latency { broker, ms, for_ms }) => {
                let id = c.broker_ids()[*broker];
                c.set_latency(id, Duration::from_millis(*ms)).map_err(|e| e.to_string())?;
                tokio::time::sleep(Duration::from_millis(*for_ms)).await;
                c.set_latency(id, Duration::ZERO).map_err(|e| e.to_string())
            }
            (Target::Testkit(c), Fault::ClockJump { ms }) => {
                c.advance_clock(Duration::from_millis(*ms));
                Ok(())
            }
            (_, other) => Err(format!("{other} cannot be applied to {self:?}")),
        }
    }
}

/// Makes the next replica the preferred leader of a partition and elects it, asking
/// again while it catches up (as `kafka_faults` moves leaders).
async fn move_kafka_leader(admin: &klife::Client, topic: &str, partition: i32) -> Result<(), String> {
    let nodes = klife_conformance::kafka::NODES as i32;
    admin.cluster().add_topics(&[topic]).await.map_err(|e| e.to_string())?;
    let leader = admin.cluster().leader(topic, partition).await.map_err(|e| e.to_string())?.node_id;
    let next = leader % nodes + 1;
    let replicas: Vec<i32> = (0..nodes).map(|i| (next - 1 + i) % nodes + 1).collect();
    let moved = admin
        .alter_partition_reassignments(&[Reassignment::new(topic, partition, replicas)])
        .await
        .map_err(|e| format!("reassigning {topic}-{partition}: {e}"))?;
    if let Some(Err(e)) = moved.into_iter().next() {
        return Err(format!("reassigning {topic}-{partition}: {e}"));
    }
    for _ in 0..600 {
        let elected =
            admin.elect_preferred_leaders(&[(topic, partition)]).await.map_err(|e| format!("electing: {e}"))?;
        match elected.into_iter().next() {
            Some(Ok(())) => return Ok(()),
            Some(Err(e)) if e.is_retriable() => tokio::time::sleep(Duration::from_millis(100)).await,
            Some(Err(e)) => return Err(format!("electing a leader of {topic}-{partition}: {e}")),
            None => return Err("ElectLeaders answered for no partition".to_owned()),
        }
    }
    Err(format!("{topic}-{partition}: the new preferred leader was not elected within a minute"))
}
