//! klife's metrics exported to Prometheus: the exporter's recorder is installed with
//! its HTTP listener, then a producer writes records to a topic and a consumer group
//! handles them, until Ctrl-C (or `--seconds`), so that every metric of
//! docs/telemetry.md can be scraped while they run.
//!
//! ```sh
//! cargo run -p klife --example prometheus                              # an embedded fake cluster
//! cargo run -p klife --example prometheus -- --bootstrap 127.0.0.1:9092
//! curl -s http://127.0.0.1:9898/metrics | grep klife_
//! ```
//!
//! Options: `--bootstrap HOST:PORT[,HOST:PORT...]` (default: a klife-testkit cluster of
//! three brokers in this process), `--listen ADDR` (where to scrape, 127.0.0.1:9898 by
//! default), `--topic NAME`, `--partitions N` (for a topic created here, 3 by
//! default), `--group NAME`, `--rate N` (records a second, 200 by default) and
//! `--seconds N` (stop after N seconds instead of at Ctrl-C).

#![allow(clippy::print_stdout, clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use klife::group::{Action, BatchContext, Handler, ResetPolicy, TopicConfig};
use klife::{Client, ProducerRecord, Record};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};

/// Bucket bounds (seconds) for the `_seconds` histograms, which Prometheus then scrapes
/// as histograms rather than summaries.
const SECONDS_BUCKETS: [f64; 14] =
    [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

struct Options {
    bootstrap: Option<Vec<String>>,
    listen: SocketAddr,
    topic: String,
    partitions: i32,
    group: String,
    rate: u64,
    seconds: Option<u64>,
}

const USAGE: &str = "usage: prometheus [--bootstrap HOST:PORT[,...]] [--listen ADDR] [--topic NAME] \
                     [--partitions N] [--group NAME] [--rate N] [--seconds N]";

fn options() -> Result<Options, String> {
    let mut o = Options {
        bootstrap: None,
        listen: SocketAddr::from(([127, 0, 0, 1], 9898)),
        topic: "klife-prometheus-example".to_owned(),
        partitions: 3,
        group: "klife-prometheus-example".to_owned(),
        rate: 200,
        seconds: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "--help" || flag == "-h" {
            return Err(USAGE.to_owned());
        }
        let value = args.next().ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))?;
        let bad = |e: &dyn std::fmt::Display| format!("{flag} {value}: {e}\n{USAGE}");
        match flag.as_str() {
            "--bootstrap" => o.bootstrap = Some(value.split(',').map(str::to_owned).collect()),
            "--listen" => o.listen = value.parse().map_err(|e| bad(&e))?,
            "--topic" => o.topic.clone_from(&value),
            "--partitions" => o.partitions = value.parse().map_err(|e| bad(&e))?,
            "--group" => o.group.clone_from(&value),
            "--rate" => o.rate = value.parse().map_err(|e| bad(&e))?,
            "--seconds" => o.seconds = Some(value.parse().map_err(|e| bad(&e))?),
            _ => return Err(format!("unknown option {flag}\n{USAGE}")),
        }
    }
    Ok(o)
}

/// Counts what it handles, and commits it.
struct Count(Arc<AtomicU64>);

impl Handler for Count {
    async fn handle_record_batch(&self, _ctx: &BatchContext, records: Vec<Record>) -> Action {
        self.0.fetch_add(records.len() as u64, Ordering::Relaxed);
        Action::Commit
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let o = match options() {
        Ok(o) => o,
        Err(message) => {
            eprintln!("{message}");
            std::process::exit(2);
        }
    };

    // First the recorder: metrics recorded before it is installed are lost.
    PrometheusBuilder::new()
        .with_http_listener(o.listen)
        .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), &SECONDS_BUCKETS)?
        .install()?;
    println!("scrape http://{}/metrics", o.listen);

    // Without --bootstrap, a fake cluster in this process (kept until the end).
    let (bootstrap, _fake) = match o.bootstrap.clone() {
        Some(servers) => (servers, None),
        None => {
            let fake = klife_testkit::FakeCluster::builder().brokers(3).start().await?;
            println!("no --bootstrap: an embedded klife-testkit cluster at {}", fake.addresses().join(","));
            (fake.addresses(), Some(fake))
        }
    };
    let client = Client::builder().bootstrap_servers(bootstrap).build().await?;
    match client.create_topic(&o.topic, o.partitions).await {
        Ok(()) => println!("topic {} created with {} partitions", o.topic, o.partitions),
        Err(e) => println!("topic {} not created ({e}); using it as it is", o.topic),
    }

    let handled = Arc::new(AtomicU64::new(0));
    let group = client
        .consumer_group(o.group.as_str())
        .topic(TopicConfig::new(&o.topic).offset_reset(ResetPolicy::Latest))
        .handler(Count(handled.clone()))
        .start()
        .await?;
    println!("group {} consumes {}; producing {} records a second", o.group, o.topic, o.rate);

    let producing = tokio::spawn({
        let (client, topic, rate) = (client.clone(), o.topic.clone(), o.rate.max(1));
        async move {
            // One batch every 100 ms.
            let per_tick = rate.div_ceil(10);
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let mut n = 0u64;
            loop {
                tick.tick().await;
                let records =
                    (0..per_tick).map(|i| ProducerRecord::new(topic.clone(), format!("record {}", n + i))).collect();
                for result in client.produce_batch(records).await {
                    if let Err(e) = result {
                        eprintln!("produce failed: {e}");
                    }
                }
                n += per_tick;
            }
        }
    });

    let stop = async {
        match o.seconds {
            Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
            None => {
                println!("Ctrl-C to stop");
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    let mut report = tokio::time::interval(Duration::from_secs(10));
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => break,
            _ = report.tick() => println!("{} records handled so far", handled.load(Ordering::Relaxed)),
        }
    }

    producing.abort();
    group.shutdown().await?;
    client.close().await;
    println!("{} records handled; stopped", handled.load(Ordering::Relaxed));
    Ok(())
}
