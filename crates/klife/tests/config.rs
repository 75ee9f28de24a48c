//! Configuration files: a full file round trip, the error message of each kind of
//! mistake, secrets kept out of `Debug`, and a client built from a file producing to
//! the fake cluster.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use klife::config::{ClientConfig, ConnectionSection, ProducerSection, SaslMechanism, SaslSection, TopicSection};
use klife::group::{BatchSize, FetchStrategy, GroupEvent, GroupProtocol, Mode, ResetPolicy};
use klife::{Acks, Client, Compression, IsolationLevel, ProducerRecord};
use klife_testkit::FakeCluster;

/// Every table and most keys.
const FULL: &str = r#"
[connection]
bootstrap = ["kafka-1:9092", "kafka-2:9092"]
client_id = "billing"
connect_timeout = "5s"
request_timeout = "30s"
max_in_flight = 5
connection_count = 2
reconnect_backoff = "50ms"
reconnect_backoff_max = "1s"
retry_timeout = "1m"
retry_backoff = "100ms"
retry_backoff_max = "2s"
max_frame_size = 104857600
metadata_max_age = "5m"
allow_auto_topic_creation = false

[connection.tls]
ca_file = "/etc/kafka/ca.pem"
cert_file = "/etc/kafka/client.pem"
key_file = "/etc/kafka/client.key"
server_name = "kafka.internal"
verify_hostname = true

[connection.sasl]
mechanism = "SCRAM-SHA-512"
username = "billing"
password_env = "KAFKA_PASSWORD"

[producers.default]
linger = "5ms"
acks = "all"

[producers.bulk]
linger = "50ms"
batch_size = 1000000
buffer_memory = 33554432
max_record_batch_size = 1048576
compression = "gzip"
acks = "leader"
idempotence = false
delivery_timeout = "2m"
retry_backoff = "250ms"
max_in_flight_per_broker = 5
max_in_flight_per_partition = 1
batchers_per_broker = 4
partitioner = "round_robin"

[topics.events]
producer = "bulk"

[topics."orders.eu"]
producer = "default"

[fetchers.default]
max_wait = "500ms"
isolation_level = "read_committed"

[fetchers.backfill]
max_bytes_per_request = 104857600
partition_max_bytes = 8388608
max_wait = "1s"
min_bytes = 1
max_in_flight = 4
linger = "0ms"
batchers_per_broker = 2
fetch_timeout = "1m"
retry_backoff = "100ms"
isolation_level = "read_uncommitted"
check_crcs = true
max_decompressed_size = 134217728
fetch_sessions = false

[txn_pools.payments]
transactional_id = "payments"
size = 3
transaction_timeout = "90s"
producer = "default"

[groups.billing]
group_id = "billing-v2"
protocol = "classic"
instance_id = "billing-1"
rebalance_timeout = "45s"
session_timeout = "45s"
heartbeat_interval = "3s"
heartbeat_timeout = "10s"
committers_count = 2
commits_in_flight = 3
rack_id = "eu-1a"
assignors = ["cooperative-sticky", "range"]
fetcher = "backfill"
restart_backoff = "500ms"
restart_backoff_max = "30s"

[groups.billing.topic_defaults]
offset_reset = "earliest"
handler_max_unacked_commits = 10

[groups.billing.topics.invoices]
isolation_level = "read_committed"
fetch_max_bytes = 1000000
max_queue_size = 20
fetch_interval = "1s"
handler_cooldown = "0ms"
handler_max_batch_size = 500

[groups.billing.topics.refunds]
handler_max_batch_size = "dynamic"
fetcher = "default"

[groups.audit]
protocol = "consumer"
server_assignor = "uniform"
topic_regex = "audit-.*"

[groups.audit.topics.logins]
mode = "manual"
offset_reset = "latest"
"#;

fn env(name: &str) -> Option<String> {
    match name {
        "KAFKA_PASSWORD" => Some("s3cret-Pa55".to_owned()),
        "EMPTY" => Some(String::new()),
        _ => None,
    }
}

fn parse(text: &str) -> Result<ClientConfig, klife::Error> {
    ClientConfig::from_toml_str_with_env(text, env)
}

#[test]
fn a_full_file_reads_into_the_settings_and_round_trips() {
    let cfg = parse(FULL).unwrap();

    let c = &cfg.connection;
    assert_eq!(c.bootstrap, ["kafka-1:9092", "kafka-2:9092"]);
    assert_eq!(c.retry_timeout, Some(Duration::from_secs(60)));
    let connection = c.to_connection_config().unwrap();
    assert_eq!(connection.client_id.as_deref(), Some("billing"));
    assert_eq!(connection.connect_timeout, Duration::from_secs(5));
    assert_eq!(connection.connection_count, 2);
    assert_eq!(connection.sasl.as_ref().map(|s| s.mechanism()), Some("SCRAM-SHA-512"));
    assert!(connection.tls.is_some());
    let sasl = c.sasl.as_ref().unwrap();
    assert_eq!((sasl.mechanism, sasl.username.as_str()), (SaslMechanism::ScramSha512, "billing"));
    assert_eq!(sasl.password().map(|p| p.expose()), Some("s3cret-Pa55"));

    let bulk = cfg.producer_config("bulk").unwrap();
    assert_eq!(bulk.linger, Duration::from_millis(50));
    assert_eq!((bulk.compression, bulk.acks, bulk.idempotence), (Compression::Gzip, Acks::Leader, false));
    assert_eq!((bulk.buffer_memory, bulk.max_in_flight_per_partition, bulk.batchers_per_broker), (32 << 20, 1, 4));
    assert_eq!(cfg.producer_config("default").unwrap().linger, Duration::from_millis(5));

    let backfill = cfg.fetcher_config("backfill").unwrap();
    assert_eq!(backfill.isolation_level, IsolationLevel::ReadUncommitted);
    assert_eq!((backfill.partition_max_bytes, backfill.fetch_sessions), (8 << 20, false));

    let billing = cfg.group_config("billing").unwrap();
    assert_eq!(billing.group, "billing-v2");
    assert_eq!(billing.protocol, GroupProtocol::Classic);
    assert_eq!(billing.committers_count, 2);
    assert_eq!(billing.commits_in_flight, 3);
    assert_eq!(billing.session_timeout, Some(Duration::from_secs(45)));
    assert_eq!(billing.driver.heartbeat_timeout, Duration::from_secs(10));
    let assignors: Vec<String> = billing.assignors.as_ref().unwrap().iter().map(|a| a.name().to_owned()).collect();
    assert_eq!(assignors, ["cooperative-sticky", "range"]);
    assert!(matches!(&billing.fetch_strategy, FetchStrategy::Shared(name) if name == "backfill"));
    assert_eq!(billing.default_topic_config.offset_reset, Some(ResetPolicy::Earliest));
    assert_eq!(billing.default_topic_config.handler_max_unacked_commits, Some(10));
    let names: Vec<&str> = billing.topics.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["invoices", "refunds"]);
    assert_eq!(billing.topics[0].handler_max_batch_size, Some(BatchSize::Max(500)));
    assert_eq!(billing.topics[1].handler_max_batch_size, Some(BatchSize::Dynamic));
    assert!(matches!(billing.topics[1].fetch_strategy, Some(FetchStrategy::Default)));
    let audit = cfg.group_config("audit").unwrap();
    assert_eq!(audit.group, "audit", "the table's name is the group id by default");
    assert_eq!(audit.topic_regex.as_deref(), Some("audit-.*"));
    assert_eq!(audit.topics[0].mode, Some(Mode::Manual));

    let text = cfg.to_toml_string().unwrap();
    assert!(!text.contains("s3cret"), "{text}");
    assert!(text.contains("password_env = \"KAFKA_PASSWORD\""), "{text}");
    assert!(text.contains("retry_timeout = \"1m\""), "{text}");
    let again = parse(&text).unwrap();
    assert_eq!(again, cfg, "{text}");
    assert_eq!(again.to_toml_string().unwrap(), text);
}

#[test]
fn a_minimal_file_takes_every_default() {
    let cfg = parse("[connection]\nbootstrap = [\"127.0.0.1:9092\"]\n").unwrap();
    assert!(cfg.producers.is_empty() && cfg.groups.is_empty());
    assert_eq!(cfg.to_toml_string().unwrap(), "[connection]\nbootstrap = [\"127.0.0.1:9092\"]\n");
    assert_eq!(cfg.producer_config("default").unwrap().batch_size, klife::ProducerConfig::default().batch_size);
    let e = cfg.producer_config("bulk").unwrap_err();
    assert_eq!(e.to_string(), "invalid configuration: producers.bulk: is not defined; defined: default");
    let e = cfg.group_config("billing").unwrap_err();
    assert_eq!(e.to_string(), "invalid configuration: groups.billing: is not defined; defined: none");
}

#[test]
fn a_configuration_built_in_code_writes_the_file_it_came_from() {
    let mut bulk = ProducerSection::default();
    bulk.linger = Some(Duration::from_millis(50));
    bulk.compression = Some(Compression::Zstd);
    let mut events = TopicSection::default();
    events.producer = Some("bulk".to_owned());
    let mut cfg = ClientConfig::new(ConnectionSection::new(["127.0.0.1:9092"]));
    cfg.connection.sasl = Some(SaslSection::new(SaslMechanism::Plain, "u", "KAFKA_PASSWORD"));
    cfg.producers.insert("bulk".to_owned(), bulk);
    cfg.topics.insert("events".to_owned(), events);
    let text = cfg.to_toml_string().unwrap();
    assert_eq!(
        text,
        "[connection]\nbootstrap = [\"127.0.0.1:9092\"]\n\n[connection.sasl]\nmechanism = \"PLAIN\"\nusername = \"u\"\n\
         password_env = \"KAFKA_PASSWORD\"\n\n[producers.bulk]\nlinger = \"50ms\"\ncompression = \"zstd\"\n\n\
         [topics.events]\nproducer = \"bulk\"\n"
    );
    // Read back, the password is read from the environment; in code it was not yet.
    let read = parse(&text).unwrap();
    assert_eq!(read.connection.sasl.as_ref().and_then(|s| s.password()).map(|p| p.expose()), Some("s3cret-Pa55"));
    assert_eq!(read.producers, cfg.producers);
    assert_eq!(read.topics, cfg.topics);
}

const HEAD: &str = "[connection]\nbootstrap = [\"127.0.0.1:9092\"]\n";

/// `(file after HEAD, the key at fault, the whole message)`; a file starting with
/// `!` replaces HEAD.
const INVALID: &[(&str, &str, &str)] = &[
    (
        "!bootstrap = []",
        "bootstrap",
        "unknown key; expected one of connection, producers, topics, fetchers, txn_pools, groups",
    ),
    ("!", "connection", "is required"),
    ("![connection]\nbootstrap = []", "connection.bootstrap", "must list at least one \"host:port\" address"),
    ("![connection]\nbootstrap = \"a:1\"", "connection.bootstrap", "invalid type: string \"a:1\", expected a sequence"),
    (
        "timeout = \"5s\"",
        "connection.timeout",
        "unknown key; expected one of bootstrap, client_id, connect_timeout, request_timeout, max_in_flight, \
         connection_count, reconnect_backoff, reconnect_backoff_max, retry_timeout, retry_backoff, \
         retry_backoff_max, max_frame_size, metadata_max_age, allow_auto_topic_creation, tls, sasl",
    ),
    (
        "request_timeout = \"30 sec\"",
        "connection.request_timeout",
        "\"30 sec\" is not a duration: write a whole number and a unit, ms, s, m or h (such as \"500ms\" or \"30s\")",
    ),
    (
        "request_timeout = 30000",
        "connection.request_timeout",
        "a duration is a string with a unit: write \"30000ms\" or \"30000s\", not 30000",
    ),
    ("request_timeout = \"0s\"", "connection.request_timeout", "must be above zero"),
    ("max_in_flight = -1", "connection.max_in_flight", "must be a whole number, 0 or more, not -1"),
    (
        "[connection.tls]\nca = \"ca.pem\"",
        "connection.tls.ca",
        "unknown key; expected one of enabled, ca_file, cert_file, key_file, server_name, verify_hostname",
    ),
    ("[connection.tls]\ncert_file = \"c.pem\"", "connection.tls.key_file", "is required with cert_file"),
    (
        "[connection.sasl]\nmechanism = \"PLAIN\"\nusername = \"u\"\npassword = \"hunter2\"",
        "connection.sasl.password",
        "a password is never written in the file: name the environment variable that holds it with password_env",
    ),
    (
        "[connection.sasl]\nmechanism = \"OAUTHBEARER\"\nusername = \"u\"\npassword_env = \"KAFKA_PASSWORD\"",
        "connection.sasl.mechanism",
        "unknown value \"OAUTHBEARER\"; expected one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 (OAUTHBEARER needs a \
         token provider: set it with ClientBuilder::sasl)",
    ),
    ("[connection.sasl]\nmechanism = \"PLAIN\"\nusername = \"u\"", "connection.sasl.password_env", "is required"),
    (
        "[connection.sasl]\nmechanism = \"PLAIN\"\nusername = \"u\"\npassword_env = \"NOT_SET_ANYWHERE\"",
        "connection.sasl.password_env",
        "the environment variable NOT_SET_ANYWHERE is not set",
    ),
    (
        "[connection.sasl]\nmechanism = \"PLAIN\"\nusername = \"u\"\npassword_env = \"EMPTY\"",
        "connection.sasl.password_env",
        "the environment variable EMPTY is empty",
    ),
    (
        "[producers.default]\nlingr = \"5ms\"",
        "producers.default.lingr",
        "unknown key; expected one of linger, batch_size, buffer_memory, max_record_batch_size, compression, acks, \
         delivery_timeout, retry_backoff, max_in_flight_per_broker, max_in_flight_per_partition, \
         batchers_per_broker, idempotence, partitioner",
    ),
    (
        "[producers.bulk]\ncompression = \"zip\"",
        "producers.bulk.compression",
        "unknown value \"zip\"; expected one of none, gzip, snappy, lz4, zstd",
    ),
    ("[producers.bulk]\nbatch_size = -5", "producers.bulk.batch_size", "must be a whole number, 0 or more, not -5"),
    ("[producers.bulk]\nbatch_size = 0", "producers.bulk.batch_size", "must be above zero"),
    ("[producers.bulk]\nbatch_size = 1.5", "producers.bulk.batch_size", "must be a whole number, 0 or more, not 1.5"),
    (
        "[producers.bulk]\nmax_in_flight_per_partition = 6",
        "producers.bulk.max_in_flight_per_partition",
        "must be between 1 and 5, not 6",
    ),
    (
        "[producers.bulk]\nacks = \"leader\"",
        "producers.bulk.idempotence",
        "requires acks = \"all\" (or idempotence = false)",
    ),
    (
        "[producers.bulk]\nidempotence = \"no\"",
        "producers.bulk.idempotence",
        "invalid type: string \"no\", expected a boolean",
    ),
    (
        "[topics.events]\nproducer = \"bulk\"",
        "topics.events.producer",
        "no producer \"bulk\" is defined: add [producers.bulk] or use one of default",
    ),
    (
        "[producers.fast]\n[topics.\"orders.eu\"]\nproducer = \"bulk\"",
        "topics.\"orders.eu\".producer",
        "no producer \"bulk\" is defined: add [producers.bulk] or use one of default, fast",
    ),
    ("[topics.events]\npartitions = 6", "topics.events.partitions", "unknown key; expected one of producer"),
    (
        "[fetchers.backfill]\nisolation_level = \"committed\"",
        "fetchers.backfill.isolation_level",
        "unknown value \"committed\"; expected one of read_committed, read_uncommitted",
    ),
    ("[fetchers.backfill]\nmax_in_flight = 0", "fetchers.backfill.max_in_flight", "must be above zero"),
    ("[txn_pools.payments]\nsize = 2", "txn_pools.payments.transactional_id", "is required and must not be empty"),
    (
        "[groups.billing]\nprotocol = \"kip848\"\n[groups.billing.topics.invoices]",
        "groups.billing.protocol",
        "unknown value \"kip848\"; expected one of auto, consumer, classic",
    ),
    (
        "[groups.billing]\nsession_timeout = \"45\"\n[groups.billing.topics.invoices]",
        "groups.billing.session_timeout",
        "\"45\" is not a duration: write a whole number and a unit, ms, s, m or h (such as \"500ms\" or \"30s\")",
    ),
    (
        "[groups.billing]\ncommits_in_flight = 0\n[groups.billing.topics.invoices]",
        "groups.billing.commits_in_flight",
        "must be above zero",
    ),
    (
        "[groups.billing]\ngroup_id = \"billing\"",
        "groups.billing",
        "consumes nothing: add [groups.billing.topics.<topic>] or topic_regex",
    ),
    (
        "[groups.billing.topics.invoices]\nmode = \"auto\"",
        "groups.billing.topics.invoices.mode",
        "unknown value \"auto\"; expected one of handler, manual",
    ),
    (
        "[groups.billing.topics.invoices]\nhandler_max_batch_size = 0",
        "groups.billing.topics.invoices.handler_max_batch_size",
        "must be \"dynamic\" or a number above zero, not 0",
    ),
    (
        "[groups.billing.topics.invoices]\nmode = \"manual\"\nhandler_max_unacked_commits = 5",
        "groups.billing.topics.invoices.handler_max_unacked_commits",
        "is for mode = \"handler\"; this topic's mode is \"manual\"",
    ),
    (
        "[groups.billing.topics.invoices]\nfetcher = \"backfill\"",
        "groups.billing.topics.invoices.fetcher",
        "no fetcher \"backfill\" is defined: add [fetchers.backfill] or use one of default",
    ),
    (
        "[groups.billing.topics.invoices]\nstart_offset = \"earliest\"",
        "groups.billing.topics.invoices.start_offset",
        "unknown key; expected one of mode, offset_reset, isolation_level, fetch_max_bytes, max_queue_size, \
         fetch_interval, handler_cooldown, handler_max_unacked_commits, handler_max_batch_size, fetcher",
    ),
    (
        "[groups.billing]\nassignors = [\"sticky\"]\n[groups.billing.topics.invoices]",
        "groups.billing.assignors[0]",
        "unknown value \"sticky\"; expected one of cooperative-sticky, range, roundrobin",
    ),
    ("[connection", "", "TOML syntax error at line 3, column 12: unclosed table, expected `]`"),
];

#[test]
fn every_mistake_names_its_key_and_what_is_allowed() {
    let mut failures = Vec::new();
    for (file, key, message) in INVALID {
        let text = match file.strip_prefix('!') {
            Some(whole) => whole.to_owned(),
            None => format!("{HEAD}{file}\n"),
        };
        let e = match parse(&text) {
            Ok(cfg) => {
                failures.push(format!("{file:?}: accepted as {cfg:?}"));
                continue;
            }
            Err(e) => e,
        };
        assert!(e.is_invalid_argument() && !e.is_retriable(), "{e}");
        let expected = match *key {
            "" => format!("invalid configuration: {message}"),
            key => format!("invalid configuration: {key}: {message}"),
        };
        if e.config_key() != Some(*key) || e.to_string() != expected {
            failures.push(format!("{file:?}:\n  expected {expected}\n  got      {e} (key {:?})", e.config_key()));
        }
        assert!(!e.to_string().contains("hunter2"), "{e}");
    }
    assert!(failures.is_empty(), "{} of {} rows:\n{}", failures.len(), INVALID.len(), failures.join("\n"));
}

#[test]
fn a_file_that_cannot_be_read_and_an_error_in_a_file_name_the_file() {
    let dir = std::env::temp_dir().join(format!("klife-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let missing = dir.join("missing.toml");
    let e = ClientConfig::from_file(&missing).unwrap_err();
    assert!(e.is_invalid_argument());
    assert!(
        e.to_string().starts_with(&format!("invalid configuration in {}: cannot read the file: ", missing.display())),
        "{e}"
    );
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, format!("{HEAD}[producers.bulk]\nlinger = 5\n")).unwrap();
    let e = ClientConfig::from_file(&bad).unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "invalid configuration in {}: producers.bulk.linger: a duration is a string with a unit: write \"5ms\" or \
             \"5s\", not 5",
            bad.display()
        )
    );
    let good = dir.join("good.toml");
    std::fs::write(&good, HEAD).unwrap();
    assert_eq!(ClientConfig::from_file(&good).unwrap().connection.bootstrap, ["127.0.0.1:9092"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn debug_never_shows_the_password() {
    let cfg = parse(FULL).unwrap();
    let debug = format!("{cfg:?}");
    assert!(!debug.contains("s3cret-Pa55"), "{debug}");
    assert!(debug.contains("<redacted>") && debug.contains("KAFKA_PASSWORD"), "{debug}");
    let pretty = format!("{:#?}", cfg.connection.to_connection_config().unwrap());
    assert!(!pretty.contains("s3cret-Pa55"), "{pretty}");
}

#[tokio::test]
async fn a_client_from_a_file_connects_and_produces_through_its_configured_producers() {
    let kafka = FakeCluster::builder()
        .topic("events", 2)
        .topic("orders", 1)
        .sasl_user("billing", "s3cret-Pa55")
        .start()
        .await
        .unwrap();
    let bootstrap: Vec<String> = kafka.addresses().iter().map(|a| format!("{a:?}")).collect();
    let text = format!(
        r#"
        [connection]
        bootstrap = [{}]
        client_id = "config-test"
        request_timeout = "10s"

        [connection.sasl]
        mechanism = "SCRAM-SHA-256"
        username = "billing"
        password_env = "KAFKA_PASSWORD"

        [producers.bulk]
        linger = "20ms"
        compression = "gzip"

        [topics.events]
        producer = "bulk"

        [fetchers.default]
        max_wait = "100ms"

        [txn_pools.payments]
        transactional_id = "payments"
        producer = "bulk"

        [groups.billing]
        group_id = "billing-v2"

        [groups.billing.topics.events]
        offset_reset = "earliest"
        mode = "manual"
        "#,
        bootstrap.join(", ")
    );
    let cfg = parse(&text).unwrap();
    let client = Client::from_config(&cfg).await.unwrap();

    // Through the topic's producer, chosen by the file.
    let written = client.produce(ProducerRecord::new("events", "e1").with_partition(1)).await.unwrap();
    assert_eq!((written.partition, written.offset), (1, 0));
    // Through a producer asked for by name.
    let bulk = cfg.producer(&client, "bulk").await.unwrap();
    let written = bulk.produce(ProducerRecord::new("orders", "o1")).await.unwrap();
    assert_eq!((written.topic.as_ref(), written.offset), ("orders", 0));
    assert!(cfg.producer(&client, "nope").await.unwrap_err().is_invalid_argument());

    let fetched = cfg.fetcher(&client, "default").unwrap().fetch("events", 1, 0).await.unwrap();
    assert_eq!(fetched.records[0].value.as_deref(), Some(&b"e1"[..]));
    assert_eq!(kafka.records("orders").len(), 1);

    // A transaction pool of the file, with its producer's settings.
    let pool = cfg.transaction_pool(&client, "payments").await.unwrap();
    pool.produce_batch_txn(vec![ProducerRecord::new("orders", "t1")]).await.unwrap();
    pool.close().await;
    assert!(kafka.transactional_producers().contains_key("payments-0"));

    // A consumer group of the file, as a stream.
    let mut stream = cfg.group(&client, "billing").unwrap().stream().await.unwrap();
    let batch = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            match stream.next().await.expect("the stream goes on") {
                GroupEvent::Batch(batch) => break batch,
                _ => continue,
            }
        }
    })
    .await
    .expect("a batch within 30 s");
    assert_eq!((batch.topic(), batch.partition()), ("events", 1));
    assert_eq!(batch.records()[0].value.as_deref(), Some(&b"e1"[..]));
    batch.commit_and_wait().await.unwrap();
    assert_eq!(kafka.committed_offsets("billing-v2").get(&("events".to_owned(), 1)), Some(&1));
    stream.shutdown().await.unwrap();
    client.close().await;

    // The same file with the wrong password does not connect.
    let wrong = ClientConfig::from_toml_str_with_env(&text, |_| Some("wrong".to_owned())).unwrap();
    let e = Client::from_config(&wrong).await.unwrap_err();
    assert!(e.is_authentication(), "{e}");
    kafka.shutdown().await;
}
