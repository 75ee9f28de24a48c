//! `klife-produce`: klife's ordinary per-record API, one `produce_async` per record.

use std::time::{Duration, Instant};

use klife_connection::{Cluster, ConnectionConfig};
use klife_producer::{Acks, DeliveryFuture, Producer, ProducerConfig, ProducerRecord};

use crate::opts::Opts;
use crate::report::{Report, XorShift};

/// Delivery futures handed to the waiting task at a time.
const CHUNK: usize = 1024;

pub(crate) struct Settings {
    bootstrap: String,
    topic: String,
    count: u64,
    value_size: usize,
    config: ProducerConfig,
    conn_in_flight: Option<usize>,
}

impl Settings {
    pub(crate) fn from_opts(mut opts: Opts) -> Result<Settings, String> {
        let bootstrap = opts.req("bootstrap")?;
        let topic = opts.req("topic")?;
        let count = opts.req_parse("count")?;
        let value_size = opts.req_parse("value-size")?;
        let mut config = ProducerConfig::default();
        config.linger = Duration::from_millis(opts.opt_parse("linger-ms")?.unwrap_or(5));
        config.acks = match opts.opt("acks").as_deref() {
            None | Some("all" | "-1") => Acks::All,
            Some("leader" | "1") => Acks::Leader,
            Some("none" | "0") => Acks::NoWait,
            Some(other) => return Err(format!("--acks {other:?}: expected all, leader or none")),
        };
        if let Some(on) = opts.opt_parse("idempotence")? {
            config.idempotence = on;
        }
        if let Some(b) = opts.opt_parse("batch-size")? {
            config.batch_size = b;
        }
        if let Some(n) = opts.opt_parse("max-in-flight")? {
            config.max_in_flight_per_broker = n;
        }
        if let Some(n) = opts.opt_parse("batchers")? {
            config.batchers_per_broker = n;
        }
        if let Some(mib) = opts.opt_parse::<usize>("buffer-mib")? {
            config.buffer_memory = mib << 20;
        }
        let conn_in_flight = opts.opt_parse("connection-in-flight")?;
        opts.finish()?;
        config.validate().map_err(|e| e.to_string())?;
        Ok(Settings { bootstrap, topic, count, value_size, config, conn_in_flight })
    }
}

/// Awaits the delivery futures in order; returns (acknowledged, failed, first error).
async fn wait_all(mut chunks: tokio::sync::mpsc::Receiver<Vec<DeliveryFuture>>) -> (u64, u64, Option<String>) {
    let (mut ok, mut failed, mut first) = (0u64, 0u64, None);
    while let Some(chunk) = chunks.recv().await {
        for delivery in chunk {
            match delivery.await {
                Ok(_) => ok += 1,
                Err(e) => {
                    failed += 1;
                    first.get_or_insert_with(|| e.to_string());
                }
            }
        }
    }
    (ok, failed, first)
}

pub(crate) async fn run(s: Settings) -> Result<Report, String> {
    let mut conn_config = ConnectionConfig::default();
    if let Some(n) = s.conn_in_flight {
        conn_config.max_in_flight = n;
    }
    let cluster = Cluster::connect(&[s.bootstrap.as_str()], conn_config)
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", s.bootstrap))?;
    // Setup, outside the timing: the topic's metadata and the producer id.
    cluster.add_topics(&[s.topic.as_str()]).await.map_err(|e| format!("metadata of {}: {e}", s.topic))?;
    let producer = Producer::new(cluster, s.config).await.map_err(|e| format!("cannot create the producer: {e}"))?;

    let (tx, rx) = tokio::sync::mpsc::channel(256);
    let started = Instant::now();
    let waiter = tokio::spawn(async move {
        let outcome = wait_all(rx).await;
        (outcome, Instant::now())
    });
    // The application's loop runs as a task, like the waiter, on the runtime's workers.
    let sending = {
        let producer = producer.clone();
        // The topic's name is shared by every record (a reference count, no copy).
        let topic: std::sync::Arc<str> = s.topic.as_str().into();
        let (count, size) = (s.count, s.value_size);
        tokio::spawn(async move {
            let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
            let mut chunk = Vec::with_capacity(CHUNK);
            for _ in 0..count {
                let record = ProducerRecord::new(topic.clone(), rng.value(size));
                chunk.push(producer.produce_async(record).await.map_err(|e| format!("produce_async: {e}"))?);
                if chunk.len() == CHUNK {
                    let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
                    tx.send(full).await.map_err(|_| "the waiting task ended early".to_owned())?;
                }
            }
            if !chunk.is_empty() {
                tx.send(chunk).await.map_err(|_| "the waiting task ended early".to_owned())?;
            }
            Ok::<(), String>(())
        })
    };
    sending.await.map_err(|e| format!("the sending task failed: {e}"))??;
    let ((ok, failed, first), finished) = waiter.await.map_err(|e| format!("the waiting task failed: {e}"))?;
    let elapsed = finished.duration_since(started);
    producer.close().await;
    if failed > 0 || ok != s.count {
        return Err(format!(
            "{failed} of {} records failed ({ok} acknowledged); first error: {}",
            s.count,
            first.unwrap_or_else(|| "none".into())
        ));
    }
    Ok(Report {
        client: "klife",
        records: ok,
        bytes: ok * s.value_size as u64,
        elapsed,
        gaps: None,
        first_record: None,
        cpu_since: None,
    })
}
