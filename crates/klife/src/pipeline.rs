//! Broadway-style processing pipelines over a consumer group:
//! [`ConsumerGroupBuilder::pipeline`](crate::group::ConsumerGroupBuilder::pipeline).
//!
//! Re-exported from `klife-pipeline`: the [`Processor`] trait, the [`Message`]s it
//! handles, the [`PipelineConfig`], and the running [`Pipeline`]. See
//! [`klife_pipeline::runtime`] for the stages, the ordering and the delivery
//! guarantees.
//!
//! ```no_run
//! use klife::group::{ResetPolicy, TopicConfig};
//! use klife::pipeline::{Message, PipelineConfig, Processor};
//!
//! struct Enrich;
//!
//! impl Processor for Enrich {
//!     async fn handle_message(&self, message: &mut Message) {
//!         if message.data().is_none() {
//!             message.fail("no value");
//!         }
//!     }
//!
//!     async fn handle_failed(&self, messages: &mut [Message]) {
//!         // ... write them to a dead-letter topic ...
//!     }
//! }
//!
//! # async fn run(client: klife::Client) -> Result<(), klife::Error> {
//! let pipeline = client
//!     .consumer_group("enrich")
//!     .topic(TopicConfig::new("orders").offset_reset(ResetPolicy::Earliest))
//!     .pipeline(PipelineConfig::default().processors(8), Enrich)
//!     .await?;
//! // ...
//! pipeline.shutdown().await?;
//! # Ok(())
//! # }
//! ```
//!
//! A message may write records ([`Message::produce`]): they are written before its
//! offset is committed, or, in a pipeline started with
//! [`transactional_pipeline`](crate::group::ConsumerGroupBuilder::transactional_pipeline),
//! in the transaction that commits it, so that a read_committed reader sees them once.

pub use klife_pipeline::message::{Message, Metadata};
pub use klife_pipeline::route::BatchKey;
pub use klife_pipeline::runtime::{BatcherConfig, Pipeline, PipelineConfig, PipelineError, Processor};
