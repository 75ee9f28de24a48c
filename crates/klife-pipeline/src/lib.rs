//! # klife-pipeline
//!
//! The decisions of a Broadway-style processing pipeline over a Kafka consumer group,
//! as sans-io state machines. Producers pull batches of records from the partitions
//! assigned to the member, processors handle the messages with some concurrency,
//! optional batchers group them by size and time, and offsets are committed as the
//! messages are acknowledged. The modules `ack`, `batch`, `outputs`, `pull` and `route` decide; a
//! driver moves the records, runs the user's code, keeps the timers and sends the
//! commits. [`runtime`] is that driver on tokio, over a klife-group member in manual
//! mode (the `runtime` feature, on by default); see its documentation for the stages,
//! their settings and the delivery guarantees.
//!
//! ## Contract
//!
//! - The deciding modules have no sockets, no async runtime, no clock reads: every call that depends on time
//!   takes `now`, and the state machines say when they next need the driver
//!   ([`Batcher::next_deadline`](batch::Batcher::next_deadline),
//!   [`PullPlan::idle_until`](pull::PullPlan::idle_until)). The same calls give the
//!   same answers.
//! - **Partition claiming** ([`route`]): each assigned partition is pulled by exactly
//!   one of the member's producers, chosen by a stable hash of the partition (FNV-1a,
//!   the same in every run, build and process), so producers share the partitions
//!   without overlap and without extra group members; producers beyond the partitions
//!   stay idle.
//! - **Ordering**: a producer hands a partition's records on in offset order, and every
//!   record of a partition goes to the same processor
//!   ([`Router::processor_for`](route::Router::processor_for)), so records of one
//!   partition are handled in order while partitions run concurrently. Batches follow
//!   the [`BatchKey`](route::BatchKey): by partition (the default) a batch is a
//!   contiguous range of one partition's offsets; coarser keys (topic, single) mix
//!   partitions but keep each one's order; a key finer than a partition gives up
//!   per-partition order.
//! - **Fair, demand-driven pulls** ([`pull`]): a producer pulls only while the pipeline
//!   has demand, rotates over its partitions so that none starves, and waits
//!   `receive_interval` after a whole round that found nothing.
//! - **Commits** ([`ack`]): an offset is committed only once the record at it and every
//!   lower delivered record of its partition are acknowledged: the commit is one after
//!   the largest acknowledged prefix, whatever order messages finish in, and never goes
//!   backwards. Failed messages are acknowledged too, after the failure hook ran: a
//!   partition's single committed offset cannot move past a record left behind, so
//!   failures are dealt with (a dead-letter topic, say) rather than block the
//!   partition. Delivery is at least once: the unacknowledged records of a partition
//!   released from the member come again from its last commit.
//!
//! ## Example
//!
//! Two records of a partition are batched together; the batch is handled when it times
//! out, and the commit after it follows:
//!
//! ```
//! use std::time::{Duration, Instant};
//!
//! use klife_pipeline::ack::AckTracker;
//! use klife_pipeline::batch::{BatchConfig, Batcher, Closed};
//! use klife_pipeline::route::BatchKey;
//! use klife_protocol::TopicPartition;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let t0 = Instant::now();
//! let tp = TopicPartition::new("orders", 0);
//! let mut acks = AckTracker::new();
//! let mut batcher = Batcher::new(BatchConfig::new(10, Duration::from_millis(100))?);
//!
//! // The producer pulled offsets 41 and 43 (42 is a transaction marker).
//! for offset in [41, 43] {
//!     let delivery = acks.deliver(&tp, offset, Some(3))?;
//!     assert!(batcher.push(BatchKey::partition(&tp), delivery, t0).is_none());
//! }
//!
//! // Nothing is full; the driver sleeps until the deadline.
//! let deadline = batcher.next_deadline().expect("a batch is open");
//! let batches = batcher.poll(deadline);
//! assert_eq!((batches.len(), batches[0].closed), (1, Closed::TimedOut));
//!
//! // The batch was handled: acknowledge its messages, then commit.
//! for delivery in &batches[0].items {
//!     acks.ack(delivery)?;
//! }
//! assert_eq!(acks.take_commits(), vec![tp.at(44).with_last_epoch(3)]);
//! # Ok(())
//! # }
//! ```
//!
//! ## Driving it
//!
//! Per producer, a [`PullPlan`](pull::PullPlan) over its share of the assigned
//! partitions ([`Router::owned_by`](route::Router::owned_by)); each record pulled is
//! [`deliver`](ack::AckTracker::deliver)ed to the member's
//! [`AckTracker`](ack::AckTracker) and the [`Delivery`](ack::Delivery) travels with
//! the message; each batcher stage owns a [`Batcher`](batch::Batcher); acknowledged
//! messages go back to the tracker, whose
//! [`take_commits`](ack::AckTracker::take_commits) feed the group's commits. On a
//! revocation: stop pulling the partition, [`flush`](batch::Batcher::flush) its
//! batches, wait until it [`is_drained`](ack::AckTracker::is_drained), take and commit,
//! then [`release`](ack::AckTracker::release) it; on a loss, release it at once and
//! commit nothing.

#![forbid(unsafe_code)]

pub mod ack;
pub mod batch;
#[cfg(feature = "runtime")]
pub mod message;
pub mod outputs;
pub mod pull;
pub mod route;
#[cfg(feature = "runtime")]
pub mod runtime;
