//! A fixed handful of chaos seeds, on every `cargo xtask test`: seeds 1 to 5 on fresh
//! klife-testkit clusters, and two seeds on Apache Kafka (`KLIFE_TEST_KAFKA`, whose
//! nodes they stop and start through `KLIFE_TEST_KAFKA_CONTROL`: without those
//! variables they fail, they are not skipped). The Kafka seeds are named
//! `kafka_faults::…`: `cargo xtask test` runs them alone, after the other suites, with
//! klife-conformance's `kafka_faults`. `cargo xtask chaos` runs any number of seeds;
//! see docs/chaos.md.

use klife_chaos::{Broker, run_seed};

/// Runs a seed and fails with its violations and the command that replays it.
fn check(seed: u64, broker: Broker) {
    let report = run_seed(seed, broker);
    let violations: Vec<String> = report.violations.iter().map(|v| format!("  {v}")).collect();
    assert!(
        violations.is_empty(),
        "chaos seed {seed} on {} broke {} invariant(s):\n{}\nplan:\n{}replay: {}",
        broker.name(),
        violations.len(),
        violations.join("\n"),
        report.plan,
        report.plan.replay_command()
    );
}

mod testkit {
    use super::{Broker, check};

    #[test]
    fn seed_1() {
        check(1, Broker::Testkit);
    }

    #[test]
    fn seed_2() {
        check(2, Broker::Testkit);
    }

    #[test]
    fn seed_3() {
        check(3, Broker::Testkit);
    }

    #[test]
    fn seed_4() {
        check(4, Broker::Testkit);
    }

    #[test]
    fn seed_5() {
        check(5, Broker::Testkit);
    }
}

/// Named so that the main test run skips them (they stop Kafka's nodes).
mod kafka_faults {
    use super::{Broker, check};

    #[test]
    fn chaos_seed_1() {
        check(1, Broker::Kafka);
    }

    #[test]
    fn chaos_seed_2() {
        check(2, Broker::Kafka);
    }
}
