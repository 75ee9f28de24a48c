//! # klife-testkit
//!
//! An in-process fake Kafka cluster for tests: several brokers, each on its own loopback
//! port, speaking the real wire protocol through [`klife_protocol`] (and nothing else of
//! klife: it is an independent reading of the broker side). Any Kafka client can talk to
//! it; tests control it (leaders, brokers down, latency, injected errors, truncation) and
//! look into it (records with their transaction state, committed offsets, requests).
//!
//! Faults: [`FakeCluster::set_leader`] / [`move_leader`](FakeCluster::move_leader),
//! [`broker_down`](FakeCluster::broker_down) / [`broker_up`](FakeCluster::broker_up),
//! [`drop_connections`](FakeCluster::drop_connections),
//! [`set_latency`](FakeCluster::set_latency), [`inject_errors`](FakeCluster::inject_errors),
//! [`inject_disconnect`](FakeCluster::inject_disconnect) (closed before executing),
//! [`inject_lost_answer`](FakeCluster::inject_lost_answer) (executed, answer lost),
//! [`truncate_before`](FakeCluster::truncate_before),
//! [`truncate_unclean`](FakeCluster::truncate_unclean) (an unclean election that loses
//! a partition's tail under a new leader epoch) and
//! [`recreate_topic`](FakeCluster::recreate_topic) (a new topic id under the same name).
//! Groups: see [Group coordinator](#group-coordinator).
//!
//! ```
//! use klife_testkit::FakeCluster;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let cluster = FakeCluster::builder().brokers(3).topic("orders", 6).start().await?;
//! println!("bootstrap.servers={}", cluster.bootstrap());
//! assert_eq!(cluster.broker_ids(), vec![0, 1, 2]);
//!
//! // Any client connects; this one only opens a socket.
//! let stream = tokio::net::TcpStream::connect(&cluster.addresses()[0]).await?;
//! drop(stream);
//!
//! cluster.set_leader("orders", 0, 2)?;
//! assert_eq!(cluster.leader("orders", 0)?, (2, 1));
//! assert!(cluster.records("orders").is_empty());
//! cluster.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! ## Contract
//!
//! Implemented APIs (the versions advertised by ApiVersions; [`FakeCluster::supported_apis`]):
//!
//! | API | versions | notes |
//! |---|---|---|
//! | ApiVersions | 0-4 | an unknown version is answered at v0 with UNSUPPORTED_VERSION and the ApiVersions range, as Kafka does; v3+ reports the finalized `transaction.version` ([`ClusterBuilder::transaction_version`], default 2) |
//! | Metadata | 0-13 | topic ids, auto-creation (on by default, `num.partitions` 1), down brokers left out, leader epochs |
//! | DescribeCluster | 0-1 | |
//! | CreateTopics | 2-7 | `validate_only`, TOPIC_ALREADY_EXISTS, INVALID_PARTITIONS, INVALID_REPLICATION_FACTOR, INVALID_TOPIC_EXCEPTION, replica assignments, `max.message.bytes` |
//! | DeleteTopics | 1-6 | by name or id |
//! | CreatePartitions | 0-3 | |
//! | Produce | 3-11 | acks 0/1/-1 (no answer for 0; an error closes the connection as in Kafka); CRC → CORRUPT_MESSAGE; one batch per partition, base offset 0 → INVALID_RECORD; MESSAGE_TOO_LARGE; idempotence (duplicates of the last 5 batches answered with their original offset, OUT_OF_ORDER_SEQUENCE_NUMBER, INVALID_PRODUCER_EPOCH, UNKNOWN_PRODUCER_ID for ids this cluster never issued); transactional batches need a transactional id in the request (else TRANSACTIONAL_ID_AUTHORIZATION_FAILED for the whole request, as Kafka answers) and AddPartitionsToTxn (INVALID_TXN_STATE); NOT_LEADER_OR_FOLLOWER with the new leader (v10+) |
//! | Fetch | 4-17 | high watermark, last stable offset, log start offset, aborted transactions for read_committed, size limits (the last batch cut at the limit, the first one whole), long polling on `min_bytes` / `max_wait_ms`, OFFSET_OUT_OF_RANGE, FENCED_LEADER_EPOCH / UNKNOWN_LEADER_EPOCH checked by every replica before leadership, `last_fetched_epoch` (v12+) against a leader epoch cache: a diverging epoch when the log ends that epoch before the fetch offset, OFFSET_OUT_OF_RANGE when it cannot place it; topic ids (v13+, UNKNOWN_TOPIC_ID); the current leader in NOT_LEADER_OR_FOLLOWER and FENCED_LEADER_EPOCH answers (v16+) |
//! | ListOffsets | 1-10 | earliest (-2), latest (-1, the LSO for read_committed), max timestamp (-3), by timestamp |
//! | FindCoordinator | 0-6 | group and transaction keys; one key (v0-3) or batched (v4+) |
//! | OffsetCommit / OffsetFetch | 2-9 / 1-9 | stored per group; batched groups (OffsetFetch v8+); `require_stable` → UNSTABLE_OFFSET_COMMIT; checked against the group's members (see below) |
//! | ConsumerGroupHeartbeat | 0-1 | KIP-848 groups (see below) |
//! | JoinGroup / SyncGroup / Heartbeat / LeaveGroup | 0-9 / 0-5 / 0-4 / 0-5 | classic groups (see below) |
//! | ListGroups, DescribeGroups, ConsumerGroupDescribe | 0-5, 0-6, 0-1 | group administration (see below) |
//! | DeleteGroups, OffsetDelete | 0-2, 0 | group administration (see below) |
//! | InitProducerId | 0-5 | idempotent and transactional; epoch bumps fence older producers (PRODUCER_FENCED, INVALID_PRODUCER_EPOCH before KIP-588 versions); an open transaction is aborted |
//! | AddPartitionsToTxn | 0-5 | client form (v0-3) and batched (v4+, `verify_only`) |
//! | AddOffsetsToTxn, EndTxn, TxnOffsetCommit | 0-4, 0-5, 0-4 | EndTxn writes COMMIT/ABORT control batches to every partition of the transaction, moves the LSO and records aborted transactions; transactional offsets are applied on commit and dropped on abort. EndTxn v5+ is transaction version 2 (KIP-890), as in Kafka whatever the finalized level: every end bumps the producer epoch (a new producer id when it runs out), the markers and the answer carry the new one, and the old epoch is fenced (PRODUCER_FENCED, INVALID_PRODUCER_EPOCH on Produce and TxnOffsetCommit). Transactions open past their timeout are aborted (see [Transaction timeouts](#transaction-timeouts)) |
//! | SaslHandshake / SaslAuthenticate | 1 / 0-2 | PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 (the `sasl` crate's server mechanisms); failure → SASL_AUTHENTICATION_FAILED, then the connection closes |
//!
//! Listeners: `PLAINTEXT` (default), `SSL` ([`ClusterBuilder::tls`], rustls; see
//! [`TestCertificates`] for certificates made on the spot), `SASL_PLAINTEXT`
//! ([`ClusterBuilder::sasl_user`]) and `SASL_SSL` (both).
//!
//! Bad input gets Kafka's treatment and never a panic: a size prefix above the frame
//! limit (100 MiB by default), an unknown api key, an undecodable request, an API this
//! cluster does not implement or a version it does not advertise close the connection
//! (other connections are not affected); so does any request but ApiVersions and SASL
//! before authentication on a SASL listener.
//!
//! Not implemented, by design or not yet:
//! - share and streams groups; and the group differences listed under
//!   [Group coordinator](#group-coordinator).
//! - replication: each partition has replicas for Metadata, but only the leader's log
//!   exists; the high watermark is the log end offset, and `acks` -1 and 1 are the same.
//! - a limit on fetch sessions (KIP-227): sessions are kept as Kafka keeps them, but
//!   never evicted unless [`FakeCluster::evict_fetch_sessions`] is called.
//! - SaslHandshake v0 (raw SASL tokens after the handshake), OAUTHBEARER, ACLs, quotas,
//!   configs APIs, log compaction, log-append-time topics, DeleteRecords (use
//!   [`FakeCluster::truncate_before`]), legacy (magic 0/1) record batches.
//! - InitProducerId for a transactional id with an open transaction aborts it at once
//!   (Kafka answers CONCURRENT_TRANSACTIONS until its abort is written).
//!
//! ## Transaction timeouts
//!
//! As Kafka 4.1's transaction coordinator does (`TransactionCoordinator.abortTimedOutTransactions`,
//! `TransactionStateManager.timedOutTransactions`, `TransactionMetadata`): a transaction
//! is open from its first AddPartitionsToTxn or AddOffsetsToTxn (not from InitProducerId),
//! and every [`ClusterBuilder::transaction_abort_check_interval`] (Kafka's
//! `transaction.abort.timed.out.transaction.cleanup.interval.ms`, 10 s by default) on
//! the cluster clock the coordinator aborts every open transaction whose start plus the
//! `transaction_timeout_ms` of its InitProducerId is past. The abort is an EndTxn abort
//! plus the fencing: the producer epoch goes up by one, ABORT markers carrying it go to
//! every partition of the transaction (the LSO moves on, read_committed fetches list the
//! transaction as aborted), and its pending offsets are dropped (OffsetFetch with
//! `require_stable` no longer answers UNSTABLE_OFFSET_COMMIT for them). The producer
//! that left it open is fenced, with the error Kafka gives each API for an old epoch:
//! Produce and TxnOffsetCommit INVALID_PRODUCER_EPOCH (at every version: Kafka's
//! producer state and the coordinator's verification answer so);
//! AddPartitionsToTxn, AddOffsetsToTxn and EndTxn PRODUCER_FENCED (INVALID_PRODUCER_EPOCH
//! before their v2). EndTxn v5+ (transaction version 2) is the exception, as in Kafka,
//! which tells an EndTxn retry by its epoch alone: an abort with the old epoch is taken
//! for a retry of the abort and answered with success and the new epoch, a commit with
//! INVALID_TXN_STATE. The producer id stays, even when the bump reaches the last
//! epoch; a new InitProducerId for the transactional id gets the next epoch (or a new
//! producer id) and works as usual.
//!
//! With [`ClusterBuilder::manual_clock`] the look runs from
//! [`FakeCluster::advance_clock`] when its time has come: transactions started at the
//! cluster's start with a 10 s timeout and a 1 s interval are still open after
//! `advance_clock(10 s)` and aborted by the next `advance_clock(1 s)`. A clock that jumps
//! over several intervals gets one look, at its new time.
//!
//! Where it differs from Kafka: EndTxn, InitProducerId and these aborts write their
//! markers at once, so there is no PrepareCommit or PrepareAbort state to time out (Kafka
//! 4.1 only aborts Ongoing transactions too, and leaves preparing ones to their markers),
//! and no transaction is ever skipped for a pending state change. The look covers every
//! transactional id, whether its coordinator is up or not (a Kafka coordinator aborts
//! those of the transaction log partitions it leads).
//!
//! ## Group coordinator
//!
//! Each group lives on the broker [`FakeCluster::coordinator`] names (Kafka's placement
//! by the group id's hash over 50 offsets partitions); other brokers answer
//! NOT_COORDINATOR, and COORDINATOR_NOT_AVAILABLE when none is up. A group runs one
//! protocol at a time; once it has no members either protocol may take it over.
//!
//! **KIP-848 (ConsumerGroupHeartbeat v0-1).** Member ids come from the client (v1; v0
//! joins without one get one). A join (epoch 0) is checked as Kafka checks it
//! (INVALID_REQUEST without a rebalance timeout, with a null or non-empty
//! TopicPartitions, without names or regex; a bad epoch; an empty member id at v1).
//! A new group starts at epoch 1, so its first member joins at epoch 2 (as from Kafka
//! 4.3). The group epoch goes up when a member joins, leaves, changes its subscription or
//! assignor, or when the subscribed topics change (a new topic matching a regex, more
//! partitions); the target assignment is then computed, on the first heartbeat at least
//! `group.consumer.assignment.interval.ms` after the last one (1 s by default,
//! [`ClusterBuilder::consumer_assignment_interval`]; at once for a new or emptied group
//! and after [`FakeCluster::force_rebalance`]), as Kafka 4.4 does; until then members
//! reconcile towards the previous target, and a member new to the group gets nothing at
//! that target's epoch. The target comes from the server assignor the members ask for (`uniform`, the default, balanced and sticky; or `range`, contiguous
//! ranges per topic by member id; another name is UNSUPPORTED_ASSIGNOR). Members
//! reconcile to it as in Kafka's `CurrentAssignmentBuilder`: partitions to revoke are
//! taken away first and the member stays at its epoch (UNREVOKED_PARTITIONS) until a
//! heartbeat's owned partitions no longer list them; a partition goes to its new owner
//! only once released (UNRELEASED_PARTITIONS until then), so no partition is ever owned
//! by two members. The assignment is in the answer to full heartbeats and whenever it
//! changed. Epochs: ahead is FENCED_MEMBER_EPOCH; behind is FENCED_MEMBER_EPOCH unless it
//! is the member's previous epoch with owned partitions within its assignment (a lost
//! answer). A join (epoch 0) under a member id the group knows starts that member over:
//! it keeps its record and is answered its epoch and whole assignment (Kafka 4.2 and
//! later). Unknown members get UNKNOWN_MEMBER_ID, heartbeats to unknown groups
//! GROUP_ID_NOT_FOUND. Leaves: epoch -1; a static member's -2 keeps its assignment (and
//! its partitions) for a rejoin under the same instance id with a new member id; another
//! instance joining with a held instance id gets UNRELEASED_INSTANCE_ID, a request
//! under a replaced member id FENCED_INSTANCE_ID. Sessions
//! (`group.consumer.session.timeout.ms`, 45 s by default,
//! [`ClusterBuilder::consumer_session_timeout`]) and revocations (the member's rebalance
//! timeout) expire on the cluster clock; the heartbeat interval
//! (`group.consumer.heartbeat.interval.ms`, 5 s by default,
//! [`ClusterBuilder::consumer_heartbeat_interval`]) is in every answer. Regex
//! subscriptions are resolved after the heartbeat that brings them, as Kafka resolves
//! them in the background: the joining member gets nothing for the regex, and the
//! group's next heartbeat resolves every regex again (new topics included), bumping the
//! group epoch when the result changed. They are matched against whole topic names, as
//! Kafka's RE2/J `matches()` does, by a small engine of this crate (the workspace has no regex crate): literals,
//! `.`, classes, `\d \w \s`, groups, `|`, `* + ? {n,m}`; anything else is
//! INVALID_REGULAR_EXPRESSION.
//!
//! **Classic (JoinGroup v0-9, SyncGroup v0-5, Heartbeat v0-4, LeaveGroup v0-5).** A first join without
//! a member id gets MEMBER_ID_REQUIRED and an id (v4+); then the join barrier: the group
//! waits until every known member rejoined, or its rebalance timeout (the members'
//! largest), dropping dynamic members that did not; a new group first waits
//! `group.initial.rebalance.delay.ms` ([`ClusterBuilder::group_initial_rebalance_delay`],
//! 0 by default where Kafka waits 3 s). The protocol most members prefer among those
//! all support is chosen; the leader (the first to join, kept while it rejoins) gets
//! every member's metadata; followers' SyncGroup waits for the leader's, whose
//! assignment bytes are handed out as given. Heartbeats get REBALANCE_IN_PROGRESS during
//! a rebalance, ILLEGAL_GENERATION for another generation, UNKNOWN_MEMBER_ID,
//! FENCED_INSTANCE_ID for a static member replaced by a newer instance; INCONSISTENT_GROUP_PROTOCOL
//! for a protocol type or name the group does not share, INVALID_SESSION_TIMEOUT outside
//! Kafka's 6 s - 30 min. A static member (group.instance.id) joining again with
//! unchanged metadata in a stable group gets its place back without a rebalance (the
//! leader with `skip_assignment`, v9), and SyncGroup returns its old assignment.
//! Sessions expire on the cluster clock, as does the sync barrier (the rebalance
//! timeout), except while a member waits in a join or a sync, as in Kafka.
//!
//! **Commits.** OffsetCommit to a group with KIP-848 members needs a member and its
//! epoch (v9+; UNKNOWN_MEMBER_ID; an older epoch passes only for partitions the member
//! has owned since that epoch, KIP-1251, as from Kafka 4.3; any other epoch, a newer one
//! included, is STALE_MEMBER_EPOCH, not FENCED_MEMBER_EPOCH; UNSUPPORTED_VERSION below
//! v9); to a classic group a member and its generation
//! (UNKNOWN_MEMBER_ID, also for a commit without member and generation while the group
//! has members; FENCED_INSTANCE_ID; ILLEGAL_GENERATION; REBALANCE_IN_PROGRESS while the
//! group waits for its leader's sync). Generation -1 and no member commit to a group without members (simple
//! consumers); a positive generation to a group that does not exist is GROUP_ID_NOT_FOUND
//! (v9+) or ILLEGAL_GENERATION. TxnOffsetCommit v3+ is checked alike (an older
//! epoch passing for partitions owned since then, as Kafka 4.4 answers), without the
//! group state checks and with ILLEGAL_GENERATION for a KIP-848 member's epoch that
//! does not pass. OffsetFetch v9+ with a member id or epoch is checked
//! against a KIP-848 group at the member's epoch exactly. A group that only has committed offsets is,
//! as in Kafka, an empty classic group without a protocol type (a "simple" group).
//!
//! **Administration.** As Kafka 4.4 answers (its `GroupMetadataManager`,
//! `OffsetMetadataManager`, `ClassicGroup`, `ConsumerGroup` and `KafkaApis`):
//! - ListGroups: each broker lists the groups it coordinates (clients ask every
//!   broker), every kind (classic, KIP-848, offsets only) with protocol type, state
//!   (v4+) and type (v5+, `classic` or `consumer`); the states filter is compared
//!   trimmed and in any case, the types filter in any case.
//! - DescribeGroups: classic groups, in Kafka's states (`Empty`, `PreparingRebalance`,
//!   `CompletingRebalance`, `Stable`); a Stable group shows its protocol (the assignor)
//!   and each member's metadata for it, every state each member's id, instance id,
//!   client id, client host and last assignment. A group that does not exist, or is a
//!   KIP-848 group, is `Dead`, with GROUP_ID_NOT_FOUND from v6 (KIP-1043).
//! - ConsumerGroupDescribe: KIP-848 groups: state (`Empty`, `Assigning`, `Reconciling`,
//!   `Stable`), group and assignment epochs, the assignor most members ask for
//!   (`uniform` by default), members with epochs, client and rack, subscriptions,
//!   assignment and target by topic id and name. GROUP_ID_NOT_FOUND for a group that
//!   does not exist or is classic, INVALID_GROUP_ID for an empty id,
//!   UNSUPPORTED_VERSION while the consumer protocol is refused or not advertised.
//! - DeleteGroups: a group without members goes with its committed offsets (pending
//!   transactional ones included); NON_EMPTY_GROUP if it has members (a static member
//!   away with epoch -2 counts), GROUP_ID_NOT_FOUND if it does not exist.
//! - OffsetDelete: UNKNOWN_TOPIC_OR_PARTITION for topics and partitions that do not
//!   exist; GROUP_SUBSCRIBED_TO_TOPIC for the partitions of a topic the group subscribes
//!   to (a KIP-848 member's names or resolved regex; a classic group's `consumer`
//!   protocol metadata, or every topic when it does not parse); GROUP_ID_NOT_FOUND, or
//!   NON_EMPTY_GROUP for a classic group with members of another protocol type, for
//!   the whole request.
//! - Group ids are routed as the membership APIs are (NOT_COORDINATOR,
//!   COORDINATOR_NOT_AVAILABLE, per group where the answer has one entry per group).
//!   Authorized operations, when asked for, are every operation of a group (Kafka
//!   without an authorizer).
//! - An admin OffsetCommit (generation -1, no member id) resets the offsets of a group
//!   without members, or creates the group; one with members answers UNKNOWN_MEMBER_ID.
//!
//! The client host of members is the connection's address as Kafka prints it
//! (`/127.0.0.1`).
//!
//! **Time.** Sessions, revocation timeouts and barriers run on the cluster clock: real
//! time by default, and [`FakeCluster::advance_clock`] moves it forward (running the
//! timers due before it returns); with [`ClusterBuilder::manual_clock`] it moves only
//! then, for tests that must not depend on timing. A background task runs the timers
//! every 10 ms (the transaction timeout look too, when due), and every group request
//! runs those due first.
//!
//! **Hooks.** [`FakeCluster::describe_group`] (protocol, state, epoch or generation,
//! members with epochs, assignments, pending revocations and targets),
//! [`force_rebalance`](FakeCluster::force_rebalance),
//! [`expire_member`](FakeCluster::expire_member),
//! [`move_group_coordinator`](FakeCluster::move_group_coordinator),
//! [`refuse_consumer_group_heartbeat`](FakeCluster::refuse_consumer_group_heartbeat)
//! (advertised, answered UNSUPPORTED_VERSION: a client's fall back to classic),
//! [`ClusterBuilder::consumer_group_protocol`] (not advertised at all),
//! [`set_consumer_heartbeat_interval`](FakeCluster::set_consumer_heartbeat_interval),
//! [`set_consumer_session_timeout`](FakeCluster::set_consumer_session_timeout),
//! [`ClusterBuilder::group_max_size`] (GROUP_MAX_SIZE_REACHED), and
//! [`inject_errors`](FakeCluster::inject_errors) for the group APIs too (the code in
//! the top-level error).
//!
//! **Where it differs from Kafka 4.4.**
//! - OffsetCommit and OffsetFetch go up to v9, the last version of the schemas klife is
//!   generated from; Kafka 4.4 offers v10 (topic ids instead of names).
//! - No online migration between protocols (Kafka's default
//!   `group.consumer.migration.policy` is BIDIRECTIONAL): a ConsumerGroupHeartbeat join
//!   to a classic group with members gets GROUP_ID_NOT_FOUND ("Group g is not a consumer
//!   group", what Kafka answers when it cannot convert the group), and a JoinGroup to a
//!   KIP-848 group with members gets INCONSISTENT_GROUP_PROTOCOL (Kafka takes a classic
//!   member of protocol type `consumer` into the group).
//! - The assignors place partitions their own way: balanced and sticky (`uniform`),
//!   contiguous by member id (`range`), but not Kafka's exact placement, and without
//!   racks.
//! - Classic: the initial delay is not extended as members keep arriving (Kafka extends
//!   it, up to the rebalance timeout).
//! - Groups and offsets are never expired: Kafka's periodic cleanup removes offsets
//!   past `offsets.retention.minutes` and empty groups without offsets; here they go
//!   only with DeleteGroups and OffsetDelete.
//! - Lists and members come in id order (Kafka's follow its hash maps), and a
//!   request's groups in the order asked (Kafka's come by offsets partition).
//! - A classic group in a KIP-848 group (online migration) does not exist here, so
//!   ConsumerGroupDescribe's member type is always 1 (consumer protocol).
//!
//! ## Storage
//!
//! Each partition keeps the batches as produced, with the broker's base offset and
//! partition leader epoch written in. Neither field is covered by the batch CRC, so the
//! bytes a consumer fetches are the producer's own, CRC included.
//!
//! ## Tracing
//!
//! Events go through `tracing` under the `klife_testkit` target: `info` when a cluster
//! starts, `debug` for connections, refused produce batches, injected faults, leader
//! moves and broker state, transactions ended or aborted for their timeout, `error`
//! only for a response the cluster could not encode (a bug here). The cluster records
//! no metrics.
//!
//! ## Checking metrics
//!
//! [`CapturedMetrics`](crate::metrics::CapturedMetrics) is a `metrics` recorder that keeps what it is given, so
//! that a test can check what klife recorded (see the metric names in each crate's
//! `telemetry` module).

mod cluster;
mod coordinator;
mod error;
mod handlers;
mod log;
pub mod metrics;
mod records;
mod sasl;
mod server;
mod state;
mod tls;
mod txn;

pub use cluster::{
    ClusterBuilder, DEFAULT_MAX_MESSAGE_BYTES, DEFAULT_TRANSACTION_ABORT_CHECK_INTERVAL, DEFAULT_TRANSACTION_VERSION,
    FakeCluster,
};
pub use coordinator::consumer::ReconciliationState;
pub use coordinator::{GroupDescription, GroupProtocol, MemberDescription};
pub use error::Error;
pub use records::{Marker, StoredRecord, TxnStatus};
pub use sasl::SaslMechanism;
pub use state::RequestRecord;
pub use tls::{TestCertificates, TlsIdentity};

/// The memory a partition's log keeps for each stored batch besides the batch's bytes
/// (its decoded header and the handle to its bytes), so that a program running the
/// cluster in its own process can bound the log's memory: at most
/// `stored bytes + 2 × batches × stored_batch_overhead()` (the batch list grows by
/// doubling).
pub fn stored_batch_overhead() -> usize {
    size_of::<log::StoredBatch>()
}
