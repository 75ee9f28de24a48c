//! Producer settings.

use std::sync::Arc;
use std::time::Duration;

use klife_connection::{ConfigError, ConfigProblem};
use klife_protocol::Compression;

use crate::accumulator::AccumulatorConfig;
use crate::partitioner::{DefaultPartitioner, Partitioner};

/// Most batches of one partition in flight: brokers keep the last five batches of each
/// producer and partition to recognize duplicates.
pub const MAX_IN_FLIGHT_PER_PARTITION: usize = 5;

/// Which acknowledgement a Produce request waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Acks {
    /// Every in-sync replica has the records (`acks = -1`, the default).
    #[default]
    All,
    /// The leader has the records (`acks = 1`).
    Leader,
    /// No answer at all (`acks = 0`): the producer does not wait for one, so offsets
    /// are unknown and failures unseen.
    NoWait,
}

impl Acks {
    /// The wire value.
    pub fn code(self) -> i16 {
        match self {
            Acks::All => -1,
            Acks::Leader => 1,
            Acks::NoWait => 0,
        }
    }
}

/// Settings of a producer.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ProducerConfig {
    /// How long a batch waits for more records after its first (default 5 ms).
    pub linger: Duration,
    /// Bytes of records (uncompressed) that make a batch full (default 1,000,000, as in
    /// librdkafka: under Kafka's default `message.max.bytes` of 1,048,588; a topic with
    /// a lower `max.message.bytes` needs a lower value). Under load, batches fill up
    /// before `linger` ends, and bigger batches cost the broker less per record.
    pub batch_size: usize,
    /// Most bytes of batches held across partitions, the room allocated for each batch
    /// included (default 16 MiB, 16 full batches: more only lengthens the queue in front of a busy broker, and records
    /// that wait longer have left the CPU caches by the time they are sent). When full,
    /// `produce` waits for room (up to `delivery_timeout`) and `try_produce` fails.
    pub buffer_memory: usize,
    /// Largest batch one record may make (default 1 MiB, the broker's default
    /// `message.max.bytes`).
    pub max_record_batch_size: usize,
    /// Codec of the batches (default none).
    pub compression: Compression,
    /// Acknowledgement to wait for (default all).
    pub acks: Acks,
    /// Time from `produce` to the outcome, retries included (default 2 min).
    pub delivery_timeout: Duration,
    /// Pause before a retriable failure is retried (default 100 ms).
    pub retry_backoff: Duration,
    /// Produce requests in flight per batcher (default 5; see `batchers_per_broker`).
    pub max_in_flight_per_broker: usize,
    /// Batches of one partition in flight at once, each in its own request (default
    /// 5, at most 5: brokers recognize a resent batch as a duplicate among a producer's
    /// last five per partition). This needs idempotence, which keeps the batches in
    /// order when one of them is retried; without idempotence a partition has one
    /// batch in flight whatever this says, so that a retried batch cannot land after a
    /// later one.
    pub max_in_flight_per_partition: usize,
    /// Batchers per broker (default 1): each broker's partitions are spread over this
    /// many batchers, and each batcher sends its own Produce requests on a connection
    /// (lane) of its own, with its own window of `max_in_flight_per_broker` requests.
    /// A partition's batcher is fixed by its topic and number (an offset hashed from
    /// the topic name, plus the partition number divided by the broker count, modulo
    /// the batchers: with leaders spread round-robin, a broker's partitions spread
    /// evenly over its batchers); while a partition has batches in flight it stays on
    /// the batcher that sent them, so its batches stay in order. A broker serves one
    /// connection's requests one at a time, so more batchers let it work on several
    /// requests of the producer at once; they also mean smaller requests and their
    /// encoding on more tasks at once. One batcher puts every ready partition of a
    /// broker into one request.
    pub batchers_per_broker: usize,
    /// Idempotent production (default on): the broker drops duplicates of retried
    /// batches. Requires `acks = all`.
    pub idempotence: bool,
    /// Chooses partitions for records without one.
    pub partitioner: Arc<dyn Partitioner>,
}

/// The smallest `max_record_batch_size`: a batch header and a small record.
const MIN_RECORD_BATCH_SIZE: usize = 128;

/// The default `batch_size`.
const DEFAULT_BATCH_SIZE: usize = 1_000_000;

impl Default for ProducerConfig {
    fn default() -> Self {
        ProducerConfig {
            linger: Duration::from_millis(5),
            batch_size: DEFAULT_BATCH_SIZE,
            buffer_memory: 16 * 1024 * 1024,
            max_record_batch_size: 1024 * 1024,
            compression: Compression::None,
            acks: Acks::All,
            delivery_timeout: Duration::from_secs(120),
            retry_backoff: Duration::from_millis(100),
            max_in_flight_per_broker: 5,
            max_in_flight_per_partition: 5,
            batchers_per_broker: 1,
            idempotence: true,
            partitioner: Arc::new(DefaultPartitioner::new()),
        }
    }
}

// Chained setters: `ProducerConfig::default().with_x(..).with_y(..)`, one per field.
klife_connection::with_setters! {
    ProducerConfig {
        with_linger => linger: Duration,
        with_batch_size => batch_size: usize,
        with_buffer_memory => buffer_memory: usize,
        with_max_record_batch_size => max_record_batch_size: usize,
        with_compression => compression: Compression,
        with_acks => acks: Acks,
        with_delivery_timeout => delivery_timeout: Duration,
        with_retry_backoff => retry_backoff: Duration,
        with_max_in_flight_per_broker => max_in_flight_per_broker: usize,
        with_max_in_flight_per_partition => max_in_flight_per_partition: usize,
        with_batchers_per_broker => batchers_per_broker: usize,
        with_idempotence => idempotence: bool,
        with_partitioner => partitioner: Arc<dyn Partitioner>,
    }
}

impl ProducerConfig {
    /// Checks the settings, naming the first that cannot work.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |field, problem| Err(ConfigError::new("ProducerConfig", field, problem));
        if self.idempotence && self.acks != Acks::All {
            return bad("idempotence", ConfigProblem::Requires { field: "acks", value: "Acks::All" });
        }
        if self.batch_size == 0 {
            return bad("batch_size", ConfigProblem::Zero);
        }
        if self.buffer_memory == 0 {
            return bad("buffer_memory", ConfigProblem::Zero);
        }
        if self.max_record_batch_size < MIN_RECORD_BATCH_SIZE {
            return bad(
                "max_record_batch_size",
                ConfigProblem::BelowMinimum {
                    min: MIN_RECORD_BATCH_SIZE as u64,
                    value: self.max_record_batch_size as u64,
                },
            );
        }
        if self.max_in_flight_per_broker == 0 {
            return bad("max_in_flight_per_broker", ConfigProblem::Zero);
        }
        if !(1..=MAX_IN_FLIGHT_PER_PARTITION).contains(&self.max_in_flight_per_partition) {
            return bad(
                "max_in_flight_per_partition",
                ConfigProblem::OutOfRange {
                    min: 1,
                    max: MAX_IN_FLIGHT_PER_PARTITION as u64,
                    value: self.max_in_flight_per_partition as u64,
                },
            );
        }
        if self.batchers_per_broker == 0 {
            return bad("batchers_per_broker", ConfigProblem::Zero);
        }
        if !self.compression.is_enabled() {
            return bad("compression", ConfigProblem::CodecDisabled { codec: self.compression });
        }
        Ok(())
    }

    /// Batches of a partition in flight at once: one without idempotence.
    pub(crate) fn batches_in_flight_per_partition(&self) -> usize {
        if self.idempotence { self.max_in_flight_per_partition } else { 1 }
    }

    pub(crate) fn accumulator(&self) -> AccumulatorConfig {
        AccumulatorConfig {
            batch_size: self.batch_size,
            linger: self.linger,
            compression: self.compression,
            buffer_memory: self.buffer_memory,
            max_record_batch_size: self.max_record_batch_size,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invalid(config: ProducerConfig) -> ConfigError {
        config.validate().expect_err("an invalid setting")
    }

    #[test]
    fn validate_names_the_field_and_the_problem() {
        assert_eq!(ProducerConfig::default().validate(), Ok(()));
        let e = invalid(ProducerConfig { acks: Acks::Leader, ..ProducerConfig::default() });
        assert_eq!((e.config, e.field), ("ProducerConfig", "idempotence"));
        assert_eq!(e.problem, ConfigProblem::Requires { field: "acks", value: "Acks::All" });
        let e = invalid(ProducerConfig { max_in_flight_per_partition: 6, ..ProducerConfig::default() });
        assert_eq!(e.field, "max_in_flight_per_partition");
        assert_eq!(e.problem, ConfigProblem::OutOfRange { min: 1, max: 5, value: 6 });
        assert_eq!(
            e.to_string(),
            "invalid setting ProducerConfig.max_in_flight_per_partition: must be between 1 and 5, not 6"
        );
        let e = invalid(ProducerConfig { batchers_per_broker: 0, ..ProducerConfig::default() });
        assert_eq!((e.field, &e.problem), ("batchers_per_broker", &ConfigProblem::Zero));
        let e = invalid(ProducerConfig { max_record_batch_size: 100, ..ProducerConfig::default() });
        assert_eq!(e.problem, ConfigProblem::BelowMinimum { min: 128, value: 100 });
    }

    #[test]
    fn a_codec_left_out_of_the_build_is_refused() {
        for codec in Compression::ALL {
            let result = ProducerConfig { compression: codec, ..ProducerConfig::default() }.validate();
            if codec.is_enabled() {
                assert_eq!(result, Ok(()), "{codec}");
            } else {
                let e = result.expect_err("a disabled codec");
                assert_eq!((e.field, &e.problem), ("compression", &ConfigProblem::CodecDisabled { codec }));
                assert!(e.to_string().contains(codec.feature_name()), "{e}");
            }
        }
    }
}
