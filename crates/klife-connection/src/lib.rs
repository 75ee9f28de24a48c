//! # klife-connection
//!
//! Connections to Kafka brokers, and the cluster view built on them.
//!
//! ## Contract
//!
//! - [`Cluster::connect`] bootstraps from a list of `host:port` addresses and keeps a
//!   metadata cache (brokers, topics, topic ids, partitions, leaders, leader epochs),
//!   refreshed every `metadata_max_age` and on demand ([`Cluster::refresh_metadata`],
//!   which concurrent callers share).
//! - Each connection negotiates versions first (ApiVersions v3, falling back to what
//!   the broker offers) and authenticates with SASL when configured; every request
//!   then uses the highest version both sides support, or fails with
//!   [`Error::UnsupportedVersion`] naming both ranges.
//! - Requests are pipelined: up to `max_in_flight` per connection, over
//!   `connection_count` connections per broker, used round-robin
//!   ([`Cluster::broker`]). Fetch requests have connections of their own
//!   ([`Cluster::fetch_connection`]). A stream of requests that must reach a broker in
//!   the order queued goes on an ordered [`Lane`] ([`Cluster::open_lane`]), owned by
//!   whoever opened it (a producer's batcher, a group's link to its coordinator): a
//!   connection of its own, shared with no other owner, let go when the owner drops
//!   the lane.
//! - A request unanswered within the connection's `request_timeout`, or within a
//!   timeout of its own ([`Connection::send_with_timeout`], or
//!   [`RetryPolicy::with_request_timeout`] for [`Cluster::call`]: a classic JoinGroup
//!   waits for the whole rebalance), fails with [`Error::Timeout`], whose
//!   [`TimeoutKind`] says which it was, and closes its connection; a broken connection
//!   fails its requests in flight with [`Error::Disconnected`] (retriable), and the next
//!   request reconnects after an exponential backoff with jitter.
//! - [`Cluster::close`] closes every connection and stops the background metadata
//!   refresh. Dropping the last [`Cluster`] handle without it does the same, without
//!   waiting: the refresh task holds the cluster only while it refreshes and ends at
//!   once, a [`Lane`] does not hold it, and each connection closes once no handle to
//!   it is left and no answer is awaited on it (a [`Queued`] request).
//! - TLS is rustls; SASL is PLAIN, SCRAM-SHA-256/512 and OAUTHBEARER. Credentials and
//!   tokens never appear in `Debug` output or logs.
//! - Errors are typed and name the broker; [`Error::is_retriable`] says whether
//!   trying again can help.
//! - Calls that klife retries follow one rule ([`retry`]): [`Cluster::call`] sends a
//!   request to a broker, any broker, the controller or a group/transaction
//!   coordinator ([`Target`]) and sends it again as the [`RetryAction`] of the answer's
//!   error codes (or of the failure) says: refresh the metadata, find the coordinator
//!   again, or back off (jittered); it gives up at once on a fatal code, and on a code
//!   that asks the group to rejoin, returning it as [`Error::Broker`]. A
//!   [`RetryPolicy`] (by default the cluster's `retry_timeout`, `retry_backoff` and
//!   `retry_backoff_max`) bounds the call by a deadline, after which
//!   [`Error::RetriesExhausted`] carries the last error and the number of attempts.
//!   The decision itself is a plain state machine, [`retry::RetryState`].
//!
//! Metric and tracing names are listed in [`telemetry`]. Two small helpers serve every
//! crate of klife: [`sync::lock`] (a lock poisoned by a panic is taken over) and
//! [`hash::fnv1a`] (a hash that is the same in every run and build).
//!
//! [`RetryAction`]: klife_protocol::RetryAction
//!
//! ## Cargo features
//!
//! | feature | default | what it switches on |
//! | --- | --- | --- |
//! | `tls` | yes | TLS through rustls with the ring provider: the `tls` module and `ConnectionConfig::tls` |
//!
//! Without `tls`, neither rustls nor ring is built, and brokers are reached over plain
//! TCP (SASL still works). This crate depends on `klife-protocol` without its codecs:
//! it never compresses or decompresses record batches.
//!
//! ## Example
//!
//! ```no_run
//! use klife_connection::{Cluster, ConnectionConfig};
//! use klife_protocol::messages::DescribeClusterRequest;
//!
//! # async fn run() -> Result<(), klife_connection::Error> {
//! let cluster = Cluster::connect(&["127.0.0.1:9092"], ConnectionConfig::default()).await?;
//! let leader = cluster.leader("orders", 0).await?;
//! println!(
//!     "orders-0 is led by broker {} (epoch {}) at {}",
//!     leader.node_id,
//!     leader.leader_epoch,
//!     leader.connection.broker()
//! );
//! let answer = leader.connection.send(&DescribeClusterRequest::default()).await?;
//! println!("cluster id {}", answer.cluster_id);
//! cluster.close().await;
//! # Ok(())
//! # }
//! ```
//!
//! A call to a transaction coordinator, retried while the coordinator moves, loads its
//! log or finishes an earlier transaction, for at most ten seconds:
//!
//! ```no_run
//! use std::time::Duration;
//! use klife_connection::{Cluster, CoordinatorType, Target};
//! use klife_protocol::messages::InitProducerIdRequest;
//!
//! # async fn run(cluster: Cluster) -> Result<(), klife_connection::Error> {
//! let request = InitProducerIdRequest::default()
//!     .with_transactional_id(Some("payments".into()))
//!     .with_transaction_timeout_ms(60_000);
//! let policy = cluster.retry_policy().with_timeout(Duration::from_secs(10));
//! let target = Target::Coordinator(CoordinatorType::Transaction, "payments");
//! // The closure names the error codes of the answer that concern the whole call.
//! let answer = cluster.call(target, &request, &policy, |r| [r.error_code]).await?;
//! println!("producer id {} epoch {}", answer.producer_id, answer.producer_epoch);
//! # Ok(())
//! # }
//! ```
//!
//! A group's link to its coordinator: a lane of its own, so that a JoinGroup the
//! coordinator holds for the whole rebalance holds up no other request, sent with the
//! rebalance timeout plus a margin instead of the connection's request timeout:
//!
//! ```no_run
//! use std::time::Duration;
//! use klife_connection::{Cluster, CoordinatorType, Error, TimeoutKind};
//! use klife_protocol::messages::JoinGroupRequest;
//!
//! # async fn run(cluster: Cluster) -> Result<(), klife_connection::Error> {
//! let coordinator = cluster.coordinator(CoordinatorType::Group, "billing").await?;
//! let lane = cluster.open_lane(coordinator.node_id);
//! let rebalance_timeout = Duration::from_secs(300);
//! let join = JoinGroupRequest::default()
//!     .with_group_id("billing".into())
//!     .with_session_timeout_ms(45_000)
//!     .with_rebalance_timeout_ms(300_000)
//!     .with_protocol_type("consumer".into());
//! let conn = lane.connection().await?;
//! match conn.send_with_timeout(&join, rebalance_timeout + Duration::from_secs(5)).await {
//!     Ok(answer) => println!("member {} of generation {}", answer.member_id, answer.generation_id),
//!     Err(Error::Timeout { kind: TimeoutKind::Request, timeout, .. }) => {
//!         println!("no answer within {timeout:?}: the connection is closed, join again");
//!     }
//!     Err(e) => return Err(e),
//! }
//! // Dropping the lane lets its connection go.
//! drop(lane);
//! # Ok(())
//! # }
//! ```

pub mod backoff;
mod broker;
mod cluster;
mod config;
mod conn;
mod error;
mod handshake;
pub mod hash;
pub mod metadata;
pub mod retry;
pub mod sasl;
pub mod sync;
pub mod telemetry;
#[cfg(feature = "tls")]
pub mod tls;
mod versions;

pub use cluster::{Cluster, Coordinator, CoordinatorType, Lane, LaneId, Leader, parse_address};
pub use config::{ConfigError, ConfigProblem, ConnectionConfig};
pub use conn::{Connection, Queued};
pub use error::{Error, TimeoutKind, code_is_retriable};
pub use metadata::{BrokerInfo, Metadata, PartitionInfo, TopicInfo};
pub use retry::{AnswerError, RetryPolicy, Target};
pub use versions::{BrokerVersions, TRANSACTION_VERSION_FEATURE};
