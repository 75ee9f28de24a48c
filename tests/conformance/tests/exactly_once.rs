//! Exactly-once consume-transform-produce ([`klife::exactly_once`]): a group of three
//! members copies N inputs to an output topic while one crashes and comes back with
//! its transactional id, one crashes and is replaced by a new instance (its open
//! transaction times out), and one leaves gracefully and comes back; on klife-testkit
//! the leaders of every partition also move, and transaction requests are refused
//! once with retriable errors. A read_committed reader of the output sees each
//! input once. The same with brokers killed on Apache Kafka is in `kafka_faults`.

#![allow(clippy::unwrap_used)]

use klife::protocol::{ApiKey, ErrorCode};
use klife_conformance::Broker;
use klife_conformance::exactly_once::{Kind, Stage, scenario};

klife_conformance::against_brokers!(
    [kafka: Kafka, testkit: Testkit]
    each_input_is_output_once_through_member_crashes,
    a_transactional_pipeline_outputs_each_input_once_through_crashes,
);

async fn each_input_is_output_once_through_member_crashes(broker: Broker) {
    run(broker, Kind::Member).await;
}

async fn a_transactional_pipeline_outputs_each_input_once_through_crashes(broker: Broker) {
    run(broker, Kind::Pipeline).await;
}

async fn run(broker: Broker, kind: Kind) {
    let outcome = scenario(broker, kind, 3000, |stage, topics| async move {
        if broker == Broker::Testkit && stage == Stage::Half {
            let cluster = klife_conformance::shared_testkit();
            for topic in &topics {
                for p in 0..3 {
                    cluster.move_leader(topic, p).unwrap();
                }
            }
            cluster.inject_errors(ApiKey::TxnOffsetCommit, &[ErrorCode::CoordinatorLoadInProgress], None);
            cluster.inject_errors(ApiKey::AddPartitionsToTxn, &[ErrorCode::ConcurrentTransactions], None);
            cluster.inject_errors(ApiKey::EndTxn, &[ErrorCode::CoordinatorNotAvailable], None);
        }
    })
    .await;
    assert!(outcome.transformed >= outcome.inputs as u64, "{outcome:?}");
}
