//! A run's plan: everything a seed decides (topics, members, their protocol and mode,
//! the records, the faults and when they come), drawn from one seeded generator before
//! the run starts, so that a seed always gives the same plan.

use std::fmt;
use std::time::Duration;

use klife_protocol::{ApiKey, ErrorCode};

/// Where a run goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Broker {
    /// A klife-testkit cluster of 3 brokers, in process, new for each run.
    Testkit,
    /// The 3-node Apache Kafka cluster named by `KLIFE_TEST_KAFKA` (its nodes are stopped
    /// and started through `KLIFE_TEST_KAFKA_CONTROL`).
    Kafka,
}

impl Broker {
    /// The name `--broker` takes.
    pub fn name(self) -> &'static str {
        match self {
            Broker::Testkit => "testkit",
            Broker::Kafka => "kafka",
        }
    }

    /// The broker named `name`.
    pub fn from_name(name: &str) -> Option<Broker> {
        match name {
            "testkit" => Some(Broker::Testkit),
            "kafka" => Some(Broker::Kafka),
            _ => None,
        }
    }
}

/// The protocol a member asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// KIP-848 (ConsumerGroupHeartbeat).
    Consumer,
    /// KIP-848 where the coordinator has it (both brokers do), else classic.
    Auto,
    /// JoinGroup / SyncGroup.
    Classic,
}

/// The assignor of the group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assignor {
    /// KIP-848's `uniform` (the broker's default).
    Uniform,
    /// KIP-848's `range`.
    ServerRange,
    /// Classic, cooperative (klife's default).
    CooperativeSticky,
    /// Classic, eager.
    Range,
    /// Classic, eager.
    RoundRobin,
}

/// How the members take their records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `handle_record_batch`, committed by the group.
    Handler,
    /// Leases pulled by a driver task per partition, each batch committed with
    /// `commit_and_wait`.
    Manual,
    /// A `GroupStream`, each batch committed with `commit_and_wait`.
    Stream,
    /// A `Pipeline` (processors, optional batchers).
    Pipeline,
}

/// A pipeline's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PipelinePlan {
    /// Pulling tasks.
    pub producers: usize,
    /// Processor tasks.
    pub processors: usize,
    /// Pulled batches each queue holds.
    pub max_demand: usize,
    /// Batchers: how many, batch size, batch timeout in ms.
    pub batchers: Option<(usize, usize, u64)>,
}

/// The timeouts of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// The session timeout (KIP-848: the broker's or the group's setting; classic: the
    /// member's).
    pub session: Duration,
    /// The heartbeat interval (likewise).
    pub heartbeat: Duration,
    /// The members' rebalance timeout.
    pub rebalance: Duration,
    /// How long a stalled handler or driver holds its batch: past the rebalance
    /// timeout.
    pub stall: Duration,
}

/// A fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Member `slot` ends at once, as a crash would (`abort()`, or a stream or pipeline
    /// dropped without shutdown, then its client closed); a new member takes the slot
    /// after `restart_ms`.
    Kill {
        /// The member.
        slot: usize,
        /// The pause before its replacement starts.
        restart_ms: u64,
    },
    /// Member `slot` shuts down gracefully; a new member takes the slot after
    /// `restart_ms`.
    Leave {
        /// The member.
        slot: usize,
        /// The pause before its replacement starts.
        restart_ms: u64,
    },
    /// Member `slot`'s next batch is held past the rebalance timeout, and member
    /// `bounce` leaves and comes back at once, so that a revocation meets the stall.
    Stall {
        /// The member whose handler stalls.
        slot: usize,
        /// The member that leaves and rejoins.
        bounce: usize,
    },
    /// Broker number `broker` (in id order) goes down for `down_ms`; on Kafka `sigkill`
    /// chooses SIGKILL over a controlled shutdown.
    BrokerDown {
        /// Which broker, in id order.
        broker: usize,
        /// How long it stays down.
        down_ms: u64,
        /// Kafka: SIGKILL rather than SIGTERM.
        sigkill: bool,
    },
    /// A partition's leadership moves to another broker.
    LeaderMove {
        /// The topic's number.
        topic: usize,
        /// The partition.
        partition: i32,
    },
    /// The group's coordinator moves to broker number `broker` (testkit); on Kafka the
    /// coordinator node is stopped and started again.
    CoordinatorMove {
        /// The new coordinator, in id order.
        broker: usize,
    },
    /// `add` partitions more for a topic (CreatePartitions).
    AddPartitions {
        /// The topic's number.
        topic: usize,
        /// How many more.
        add: i32,
    },
    /// The next requests of `api` are answered with these retriable errors (testkit).
    Errors {
        /// The API.
        api: ApiKey,
        /// One code per request.
        codes: Vec<ErrorCode>,
    },
    /// The next request of `api` is executed and its answer lost (testkit).
    LostAnswer {
        /// The API.
        api: ApiKey,
    },
    /// Every answer of broker number `broker` is delayed by `ms` for `for_ms` (testkit).
    Latency {
        /// Which broker, in id order.
        broker: usize,
        /// The delay.
        ms: u64,
        /// For how long.
        for_ms: u64,
    },
    /// The cluster clock jumps `ms` ahead: sessions and rebalance timeouts run out
    /// early (testkit).
    ClockJump {
        /// How far.
        ms: u64,
    },
}

/// Every fault kind, as the summary names them.
pub const FAULT_KINDS: [&str; 11] = [
    "kill",
    "leave",
    "stall",
    "broker-down",
    "leader-move",
    "coordinator-move",
    "add-partitions",
    "errors",
    "lost-answer",
    "latency",
    "clock-jump",
];

impl Fault {
    /// The kind's name (one of [`FAULT_KINDS`]).
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Kill { .. } => "kill",
            Fault::Leave { .. } => "leave",
            Fault::Stall { .. } => "stall",
            Fault::BrokerDown { .. } => "broker-down",
            Fault::LeaderMove { .. } => "leader-move",
            Fault::CoordinatorMove { .. } => "coordinator-move",
            Fault::AddPartitions { .. } => "add-partitions",
            Fault::Errors { .. } => "errors",
            Fault::LostAnswer { .. } => "lost-answer",
            Fault::Latency { .. } => "latency",
            Fault::ClockJump { .. } => "clock-jump",
        }
    }

    /// Whether the fault takes a broker down (or moves what a broker serves), so that
    /// such faults are applied one at a time.
    pub fn is_cluster_wide(&self) -> bool {
        matches!(self, Fault::BrokerDown { .. } | Fault::CoordinatorMove { .. } | Fault::LeaderMove { .. })
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Kill { slot, restart_ms } => write!(f, "kill member {slot}, a new one after {restart_ms} ms"),
            Fault::Leave { slot, restart_ms } => write!(f, "member {slot} leaves, a new one after {restart_ms} ms"),
            Fault::Stall { slot, bounce } => write!(f, "member {slot} stalls a batch while member {bounce} rejoins"),
            Fault::BrokerDown { broker, down_ms, sigkill } => {
                write!(f, "broker #{broker} down for {down_ms} ms{}", if *sigkill { " (SIGKILL)" } else { "" })
            }
            Fault::LeaderMove { topic, partition } => write!(f, "leader of t{topic}-{partition} moves"),
            Fault::CoordinatorMove { broker } => write!(f, "coordinator moves to broker #{broker}"),
            Fault::AddPartitions { topic, add } => write!(f, "{add} partition(s) more for t{topic}"),
            Fault::Errors { api, codes } => {
                let names: Vec<&str> = codes.iter().map(|c| c.name()).collect();
                write!(f, "{api:?} answered {}", names.join(", "))
            }
            Fault::LostAnswer { api } => write!(f, "{api:?} executed, answer lost"),
            Fault::Latency { broker, ms, for_ms } => write!(f, "broker #{broker} answers {ms} ms late for {for_ms} ms"),
            Fault::ClockJump { ms } => write!(f, "cluster clock jumps {ms} ms"),
        }
    }
}

/// A fault and when it comes: once `permille` thousandths of the records were handled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scheduled {
    /// Thousandths of the records handled.
    pub permille: u32,
    /// The fault.
    pub fault: Fault,
}

/// Everything a seed decides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The seed.
    pub seed: u64,
    /// Where it runs.
    pub broker: Broker,
    /// The topics' partition counts at the start.
    pub topics: Vec<i32>,
    /// Each member slot's protocol (all KIP-848, `Consumer` or `Auto`, or all classic).
    pub protocols: Vec<Protocol>,
    /// The group's assignor.
    pub assignor: Assignor,
    /// How records are taken.
    pub mode: Mode,
    /// Records per handler call or pull.
    pub batch_size: usize,
    /// `handler_max_unacked_commits` (handler mode; 0 otherwise).
    pub max_unacked: usize,
    /// The pipeline, in pipeline mode.
    pub pipeline: Option<PipelinePlan>,
    /// Idempotent producers.
    pub producers: usize,
    /// Records produced, all producers together.
    pub records: usize,
    /// Records per wave of a producer.
    pub wave: usize,
    /// The pause between a producer's waves.
    pub pause_ms: u64,
    /// The faults, in the order they come.
    pub faults: Vec<Scheduled>,
    /// The timeouts.
    pub timing: Timing,
}

/// Brokers in each cluster.
pub const BROKERS: usize = 3;

fn pick<T: Copy>(rng: &mut fastrand::Rng, items: &[T]) -> T {
    items[rng.usize(..items.len())]
}

impl Plan {
    /// The plan of `seed` on `broker`.
    pub fn new(seed: u64, broker: Broker) -> Plan {
        let mut rng = fastrand::Rng::with_seed(seed ^ 0x6b6c_6966_6563_6861);
        let kafka = broker == Broker::Kafka;
        let topics: Vec<i32> =
            (0..rng.usize(1..=2)).map(|_| if kafka { rng.i32(2..=6) } else { rng.i32(1..=6) }).collect();
        let classic = rng.u8(..3) == 0;
        let members = rng.usize(2..=5);
        let protocols = (0..members)
            .map(|_| if classic { Protocol::Classic } else { pick(&mut rng, &[Protocol::Consumer, Protocol::Auto]) })
            .collect();
        let assignor = if classic {
            pick(
                &mut rng,
                &[Assignor::CooperativeSticky, Assignor::CooperativeSticky, Assignor::Range, Assignor::RoundRobin],
            )
        } else {
            pick(&mut rng, &[Assignor::Uniform, Assignor::Uniform, Assignor::ServerRange])
        };
        let mode = pick(&mut rng, &[Mode::Handler, Mode::Handler, Mode::Manual, Mode::Stream, Mode::Pipeline]);
        let batch_size = rng.usize(3..=25);
        let max_unacked = if mode == Mode::Handler { rng.usize(0..=3) } else { 0 };
        let pipeline = (mode == Mode::Pipeline).then(|| PipelinePlan {
            producers: rng.usize(1..=2),
            processors: rng.usize(1..=4),
            max_demand: rng.usize(1..=4),
            batchers: rng.bool().then(|| (rng.usize(1..=2), rng.usize(5..=30), rng.u64(20..=100))),
        });
        let producers = rng.usize(1..=2);
        let records = if kafka { rng.usize(400..=1500) } else { rng.usize(300..=1500) };
        let wave = rng.usize(10..=60);
        let pause_ms = rng.u64(10..=50);
        let timing = if kafka {
            Timing {
                session: Duration::from_secs(6),
                heartbeat: Duration::from_millis(500),
                rebalance: Duration::from_secs(5),
                stall: Duration::from_secs(7),
            }
        } else if classic {
            // klife-testkit refuses classic sessions under 6 s, as Kafka does by default.
            Timing {
                session: Duration::from_secs(6),
                heartbeat: Duration::from_millis(300),
                rebalance: Duration::from_secs(2),
                stall: Duration::from_secs(3),
            }
        } else {
            Timing {
                session: Duration::from_secs(2),
                heartbeat: Duration::from_millis(100),
                rebalance: Duration::from_secs(2),
                stall: Duration::from_secs(3),
            }
        };
        let count = if kafka { rng.usize(2..=4) } else { rng.usize(3..=8) };
        let mut permilles: Vec<u32> = (0..count).map(|_| rng.u32(50..=850)).collect();
        permilles.sort_unstable();
        let mut cluster_faults = 0;
        let mut sigkills = 0;
        let faults = permilles
            .into_iter()
            .map(|permille| {
                let fault = loop {
                    let f = if kafka {
                        kafka_fault(&mut rng, members, &topics, &mut sigkills)
                    } else {
                        testkit_fault(&mut rng, members, &topics, classic, &timing)
                    };
                    // Kafka nodes take seconds to stop and start: two such faults a run.
                    if kafka && f.is_cluster_wide() {
                        if cluster_faults == 2 {
                            continue;
                        }
                        cluster_faults += 1;
                    }
                    break f;
                };
                Scheduled { permille, fault }
            })
            .collect();
        Plan {
            seed,
            broker,
            topics,
            protocols,
            assignor,
            mode,
            batch_size,
            max_unacked,
            pipeline,
            producers,
            records,
            wave,
            pause_ms,
            faults,
            timing,
        }
    }

    /// Whether the group runs the classic protocol.
    pub fn classic(&self) -> bool {
        self.protocols.contains(&Protocol::Classic)
    }

    /// The command that runs this seed again.
    pub fn replay_command(&self) -> String {
        format!("cargo xtask chaos --seed {} --broker {}", self.seed, self.broker.name())
    }
}

fn testkit_fault(rng: &mut fastrand::Rng, members: usize, topics: &[i32], classic: bool, timing: &Timing) -> Fault {
    let slot = rng.usize(..members);
    match rng.u32(..100) {
        0..20 => Fault::Kill { slot, restart_ms: rng.u64(100..=1500) },
        20..33 => Fault::Leave { slot, restart_ms: rng.u64(0..=1000) },
        33..41 => Fault::Stall { slot, bounce: (slot + rng.usize(1..members)) % members },
        41..51 => Fault::BrokerDown { broker: rng.usize(..BROKERS), down_ms: rng.u64(200..=2500), sigkill: false },
        51..60 => {
            let topic = rng.usize(..topics.len());
            Fault::LeaderMove { topic, partition: rng.i32(0..topics[topic]) }
        }
        60..67 => Fault::CoordinatorMove { broker: rng.usize(..BROKERS) },
        67..73 => Fault::AddPartitions { topic: rng.usize(..topics.len()), add: rng.i32(1..=2) },
        73..85 => {
            let (api, codes) = retriable_errors(rng, classic);
            let n = rng.usize(1..=4);
            Fault::Errors { api, codes: (0..n).map(|_| pick(rng, codes)).collect() }
        }
        85..91 => {
            let membership = if classic { ApiKey::Heartbeat } else { ApiKey::ConsumerGroupHeartbeat };
            Fault::LostAnswer { api: pick(rng, &[ApiKey::Produce, ApiKey::OffsetCommit, membership, ApiKey::Fetch]) }
        }
        91..97 => Fault::Latency { broker: rng.usize(..BROKERS), ms: rng.u64(20..=300), for_ms: rng.u64(300..=2000) },
        _ => {
            let session = u64::try_from(timing.session.as_millis()).unwrap_or(u64::MAX);
            Fault::ClockJump { ms: rng.u64(session * 3 / 10..=session * 6 / 5) }
        }
    }
}

fn kafka_fault(rng: &mut fastrand::Rng, members: usize, topics: &[i32], sigkills: &mut usize) -> Fault {
    let slot = rng.usize(..members);
    match rng.u32(..100) {
        0..25 => Fault::Kill { slot, restart_ms: rng.u64(500..=4000) },
        25..43 => Fault::Leave { slot, restart_ms: rng.u64(0..=3000) },
        43..53 => Fault::Stall { slot, bounce: (slot + rng.usize(1..members)) % members },
        53..70 => {
            // A node killed with SIGKILL recovers its logs when it starts again: slow.
            let sigkill = *sigkills == 0 && rng.u8(..4) == 0;
            *sigkills += usize::from(sigkill);
            Fault::BrokerDown { broker: rng.usize(..BROKERS), down_ms: rng.u64(1000..=8000), sigkill }
        }
        70..80 => {
            let topic = rng.usize(..topics.len());
            Fault::LeaderMove { topic, partition: rng.i32(0..topics[topic]) }
        }
        80..90 => Fault::CoordinatorMove { broker: rng.usize(..BROKERS) },
        _ => Fault::AddPartitions { topic: rng.usize(..topics.len()), add: rng.i32(1..=2) },
    }
}

fn retriable_errors(rng: &mut fastrand::Rng, classic: bool) -> (ApiKey, &'static [ErrorCode]) {
    use ErrorCode as E;
    const COORDINATOR: &[ErrorCode] = &[E::NotCoordinator, E::CoordinatorNotAvailable, E::CoordinatorLoadInProgress];
    let membership = if classic {
        pick(rng, &[ApiKey::Heartbeat, ApiKey::JoinGroup, ApiKey::SyncGroup])
    } else {
        ApiKey::ConsumerGroupHeartbeat
    };
    match rng.u8(..8) {
        0 => (ApiKey::Produce, &[E::NotLeaderOrFollower, E::RequestTimedOut, E::NotEnoughReplicas]),
        1 => (ApiKey::Fetch, &[E::NotLeaderOrFollower, E::UnknownLeaderEpoch]),
        2 => (
            ApiKey::OffsetCommit,
            &[E::NotCoordinator, E::CoordinatorNotAvailable, E::CoordinatorLoadInProgress, E::RequestTimedOut],
        ),
        3 => (ApiKey::OffsetFetch, COORDINATOR),
        4 | 5 => (membership, COORDINATOR),
        6 => (ApiKey::FindCoordinator, &[E::CoordinatorNotAvailable]),
        _ => (ApiKey::Metadata, &[E::LeaderNotAvailable]),
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let topics: Vec<String> = self.topics.iter().enumerate().map(|(i, p)| format!("t{i}:{p}")).collect();
        let protocols: Vec<&str> = self
            .protocols
            .iter()
            .map(|p| match p {
                Protocol::Consumer => "consumer",
                Protocol::Auto => "auto",
                Protocol::Classic => "classic",
            })
            .collect();
        writeln!(
            f,
            "seed {} on {}: topics [{}], {} members [{}], assignor {:?}",
            self.seed,
            self.broker.name(),
            topics.join(", "),
            self.protocols.len(),
            protocols.join(", "),
            self.assignor
        )?;
        write!(f, "  mode {:?}, batches of up to {} records", self.mode, self.batch_size)?;
        if self.mode == Mode::Handler {
            write!(f, ", handler_max_unacked_commits {}", self.max_unacked)?;
        }
        if let Some(p) = &self.pipeline {
            write!(f, ", {} producer(s), {} processor(s), max_demand {}", p.producers, p.processors, p.max_demand)?;
            if let Some((n, size, ms)) = p.batchers {
                write!(f, ", {n} batcher(s) of {size} records / {ms} ms")?;
            }
        }
        writeln!(f)?;
        writeln!(
            f,
            "  {} records from {} idempotent producer(s), waves of {} every {} ms; session {:?}, heartbeat {:?}, rebalance timeout {:?}, stall {:?}",
            self.records,
            self.producers,
            self.wave,
            self.pause_ms,
            self.timing.session,
            self.timing.heartbeat,
            self.timing.rebalance,
            self.timing.stall
        )?;
        for s in &self.faults {
            writeln!(f, "  at {:>4.1}% handled: {}", f64::from(s.permille) / 10.0, s.fault)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_always_gives_the_same_plan() {
        for seed in 0..200 {
            for broker in [Broker::Testkit, Broker::Kafka] {
                let plan = Plan::new(seed, broker);
                assert_eq!(plan, Plan::new(seed, broker));
                assert!((2..=5).contains(&plan.protocols.len()));
                assert!(plan.faults.windows(2).all(|w| w[0].permille <= w[1].permille));
                for s in &plan.faults {
                    if let Fault::LeaderMove { topic, partition } = s.fault {
                        assert!((0..plan.topics[topic]).contains(&partition), "seed {seed}: {}", s.fault);
                    }
                }
                let mixed = plan.classic() && plan.protocols.iter().any(|p| *p != Protocol::Classic);
                assert!(!mixed, "seed {seed}: classic and KIP-848 members in one group");
            }
        }
    }

    #[test]
    fn kafka_plans_take_at_most_two_nodes_down_and_one_with_sigkill() {
        for seed in 0..500 {
            let plan = Plan::new(seed, Broker::Kafka);
            assert!(plan.faults.iter().filter(|s| s.fault.is_cluster_wide()).count() <= 2);
            let sigkills = plan.faults.iter().filter(|s| matches!(s.fault, Fault::BrokerDown { sigkill: true, .. }));
            assert!(sigkills.count() <= 1);
            assert!(plan.faults.iter().all(|s| !matches!(
                s.fault,
                Fault::Errors { .. } | Fault::LostAnswer { .. } | Fault::Latency { .. } | Fault::ClockJump { .. }
            )));
        }
    }
}
