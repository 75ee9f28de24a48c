//! `cluster`: a librdkafka mock cluster driven by one-line commands on stdin.

#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::io::{BufRead, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::raw::c_int;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use rdkafka::bindings as rd;
use rdkafka::bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR;
use rdkafka::client::Client;
use rdkafka::types::RDKafkaType;

use crate::args::{Fail, Opts, num, usage};
use crate::ffi;
use crate::peer::{PeerContext, base_config, peer_context};

/// How long a call into the mock cluster may take before [`Mock::with_kick`] wakes its thread.
const KICK_AFTER: Duration = Duration::from_millis(10);

/// Every stdin command, as its usage line.
const COMMANDS: &[&str] = &[
    "ping",
    "bootstrap",
    "create-topic NAME PARTITIONS RF",
    "broker-down ID",
    "broker-up ID",
    "rtt ID MS",
    "rack ID RACK",
    "decommission ID",
    "add-broker ID",
    "leader TOPIC PARTITION BROKER_ID",
    "follower TOPIC PARTITION BROKER_ID",
    "follower-wmarks TOPIC PARTITION LO HI",
    "coordinator group|transaction KEY BROKER_ID",
    "errors APIKEY CODE [CODE...]",
    "clear-errors APIKEY",
    "broker-errors BROKER_ID APIKEY CODE:RTT_MS [CODE:RTT_MS...]",
    "broker-error-count BROKER_ID APIKEY",
    "topic-error TOPIC CODE",
    "apiversion APIKEY MIN MAX",
    "group-initial-rebalance-delay MS",
    "session-timeout MS",
    "heartbeat-interval MS",
    "start-request-tracking",
    "stop-request-tracking",
    "clear-requests",
    "get-requests",
];

/// One mock cluster, destroyed (its thread joined, its listeners closed) on drop.
struct Mock {
    cluster: *mut rd::rd_kafka_mock_cluster_t,
    /// The brokers' listeners at start-up, for [`Mock::with_kick`].
    listeners: Vec<SocketAddr>,
    /// The handle the cluster was made from; it must outlive the cluster.
    _client: Client<PeerContext>,
}

impl Drop for Mock {
    fn drop(&mut self) {
        let cluster = self.cluster;
        // SAFETY: `cluster` came from rd_kafka_mock_cluster_new, is non-null, and is destroyed
        // exactly once, here, before `_client` (whose handle it uses) is dropped.
        self.with_kick(|| unsafe { rd::rd_kafka_mock_cluster_destroy(cluster) });
    }
}

/// Turns a librdkafka return code into `Err(name)`.
fn check(err: rd::rd_kafka_resp_err_t) -> Result<(), String> {
    if err == RD_KAFKA_RESP_ERR_NO_ERROR { Ok(()) } else { Err(ffi::err_name(err as c_int)) }
}

fn cstring(what: &str, s: &str) -> Result<CString, String> {
    CString::new(s).map_err(|_| format!("bad {what}: contains NUL"))
}

fn api_key(word: &str) -> Result<i16, String> {
    let key: i16 = num("api key", word)?;
    if key < 0 { Err(format!("bad api key '{word}'")) } else { Ok(key) }
}

impl Mock {
    fn new(brokers: i32, client: Client<PeerContext>) -> Result<Self, String> {
        // SAFETY: the client handle is valid for the whole life of `Mock` (it is stored in it).
        let cluster = unsafe { rd::rd_kafka_mock_cluster_new(client.native_ptr(), brokers) };
        if cluster.is_null() {
            return Err("rd_kafka_mock_cluster_new failed".into());
        }
        let mut mock = Self { cluster, listeners: Vec::new(), _client: client };
        mock.listeners = mock.bootstrap().split(',').filter_map(|a| a.parse().ok()).collect();
        Ok(mock)
    }

    /// Runs `f` (a call into the mock cluster) and, while it has not returned after
    /// [`KICK_AFTER`], wakes the mock cluster's thread by opening and closing a TCP connection
    /// to one of its brokers.
    ///
    /// Most of the C API hands an operation to the mock cluster's thread and waits for it.
    /// librdkafka 2.12.1 can lose the wake-up of that thread when an operation is queued just
    /// after the previous one was answered (the queue's "wake-up sent" flag is reset before the
    /// wake-up pipe is drained), and the operation then waits for the thread's 1 s poll
    /// timeout: one back-to-back command in five or so took a second. Any socket event wakes
    /// the thread, which serves queued operations before anything else. A broker that is down
    /// refuses the connection; with every broker down the wait can still reach 1 s.
    fn with_kick<T>(&self, f: impl FnOnce() -> T) -> T {
        let (done, wait) = mpsc::channel::<()>();
        let listeners = &self.listeners;
        std::thread::scope(|s| {
            s.spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = wait.recv_timeout(KICK_AFTER) {
                    for addr in listeners {
                        if TcpStream::connect_timeout(addr, Duration::from_millis(100)).is_ok() {
                            break;
                        }
                    }
                }
            });
            let out = f();
            drop(done);
            out
        })
    }

    fn bootstrap(&self) -> String {
        // SAFETY: the cluster is live; the returned string is owned by it and copied at once.
        unsafe { CStr::from_ptr(rd::rd_kafka_mock_cluster_bootstraps(self.cluster)) }.to_string_lossy().into_owned()
    }

    fn create_topic(&self, name: &str, partitions: i32, rf: i32) -> Result<(), String> {
        let name = cstring("topic", name)?;
        // SAFETY: live cluster, NUL-terminated topic name that outlives the call.
        check(unsafe { rd::rd_kafka_mock_topic_create(self.cluster, name.as_ptr(), partitions, rf) })
    }

    /// Runs one command line; `Ok(text)` is answered as `OK` or `OK text`.
    fn exec(&self, line: &str) -> Result<String, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let c = self.cluster;
        let done = |r: Result<(), String>| r.map(|()| String::new());
        match words.as_slice() {
            [] => Err("empty command".into()),
            ["ping"] => Ok(String::new()),
            ["bootstrap"] => Ok(self.bootstrap()),
            ["create-topic", name, parts, rf] => {
                done(self.create_topic(name, num("partition count", parts)?, num("replication factor", rf)?))
            }
            ["broker-down", id] => {
                let id = num("broker id", id)?;
                // SAFETY: live cluster; plain integer arguments.
                done(check(unsafe { rd::rd_kafka_mock_broker_set_down(c, id) }))
            }
            ["broker-up", id] => {
                let id = num("broker id", id)?;
                // SAFETY: live cluster; plain integer arguments.
                done(check(unsafe { rd::rd_kafka_mock_broker_set_up(c, id) }))
            }
            ["rtt", id, ms] => {
                let (id, ms) = (num("broker id", id)?, num("milliseconds", ms)?);
                // SAFETY: live cluster; plain integer arguments.
                done(check(unsafe { rd::rd_kafka_mock_broker_set_rtt(c, id, ms) }))
            }
            ["rack", id, rack] => {
                let id = num("broker id", id)?;
                let rack = cstring("rack", rack)?;
                // SAFETY: live cluster; NUL-terminated string that outlives the call.
                done(check(unsafe { rd::rd_kafka_mock_broker_set_rack(c, id, rack.as_ptr()) }))
            }
            ["decommission", id] => {
                let id = num("broker id", id)?;
                // SAFETY: live cluster; plain integer arguments.
                done(check(unsafe { rd::rd_kafka_mock_broker_decommission(c, id) }))
            }
            ["add-broker", id] => {
                let id = num("broker id", id)?;
                // SAFETY: live cluster; plain integer arguments.
                done(check(unsafe { rd::rd_kafka_mock_broker_add(c, id) }))
            }
            ["leader", topic, part, id] => {
                let (part, id) = (num("partition", part)?, num("broker id", id)?);
                let topic = cstring("topic", topic)?;
                // SAFETY: live cluster; NUL-terminated string that outlives the call.
                done(check(unsafe { rd::rd_kafka_mock_partition_set_leader(c, topic.as_ptr(), part, id) }))
            }
            ["follower", topic, part, id] => {
                let (part, id) = (num("partition", part)?, num("broker id", id)?);
                let topic = cstring("topic", topic)?;
                // SAFETY: live cluster; NUL-terminated string that outlives the call.
                done(check(unsafe { rd::rd_kafka_mock_partition_set_follower(c, topic.as_ptr(), part, id) }))
            }
            ["follower-wmarks", topic, part, lo, hi] => {
                let (part, lo, hi) = (num("partition", part)?, num("offset", lo)?, num("offset", hi)?);
                let topic = cstring("topic", topic)?;
                // SAFETY: live cluster; NUL-terminated string that outlives the call.
                done(check(unsafe { rd::rd_kafka_mock_partition_set_follower_wmarks(c, topic.as_ptr(), part, lo, hi) }))
            }
            ["coordinator", kind @ ("group" | "transaction"), key, id] => {
                let id = num("broker id", id)?;
                let (kind, key) = (cstring("key type", kind)?, cstring("key", key)?);
                // SAFETY: live cluster; NUL-terminated strings that outlive the call.
                done(check(unsafe { rd::rd_kafka_mock_coordinator_set(c, kind.as_ptr(), key.as_ptr(), id) }))
            }
            ["errors", key, codes @ ..] if !codes.is_empty() => {
                let key = api_key(key)?;
                let codes = codes.iter().map(|w| ffi::parse_code(w)).collect::<Result<Vec<c_int>, _>>()?;
                // SAFETY: live cluster; `codes` holds `codes.len()` ints and outlives the call,
                // which copies them.
                unsafe { ffi::rd_kafka_mock_push_request_errors_array(c, key, codes.len(), codes.as_ptr()) };
                Ok(String::new())
            }
            ["clear-errors", key] => {
                let key = api_key(key)?;
                // SAFETY: live cluster; plain integer arguments.
                unsafe { rd::rd_kafka_mock_clear_request_errors(c, key) };
                Ok(String::new())
            }
            ["broker-errors", id, key, pairs @ ..] if !pairs.is_empty() => {
                let (id, key) = (num("broker id", id)?, api_key(key)?);
                let pairs = pairs
                    .iter()
                    .map(|w| {
                        let (code, rtt) =
                            w.split_once(':').ok_or_else(|| format!("expected CODE:RTT_MS, got '{w}'"))?;
                        Ok((ffi::parse_code(code)?, num::<c_int>("milliseconds", rtt)?))
                    })
                    .collect::<Result<Vec<_>, String>>()?;
                // One pair per call: the C function appends, so the order is kept.
                for (code, rtt) in pairs {
                    // SAFETY: live cluster; cnt = 1 matches the one (int, int) pair passed.
                    let err = unsafe { ffi::rd_kafka_mock_broker_push_request_error_rtts(c, id, key, 1, code, rtt) };
                    if err != 0 {
                        return Err(ffi::err_name(err));
                    }
                }
                Ok(String::new())
            }
            ["broker-error-count", id, key] => {
                let (id, key) = (num("broker id", id)?, api_key(key)?);
                let mut cnt = 0usize;
                // SAFETY: live cluster; `cnt` is a valid out-pointer for the call.
                check(unsafe { rd::rd_kafka_mock_broker_error_stack_cnt(c, id, key, &mut cnt) })?;
                Ok(cnt.to_string())
            }
            ["topic-error", topic, code] => {
                let code = ffi::parse_code(code)?;
                let topic = cstring("topic", topic)?;
                // SAFETY: live cluster; NUL-terminated string that outlives the call.
                unsafe { ffi::rd_kafka_mock_topic_set_error(c, topic.as_ptr(), code) };
                Ok(String::new())
            }
            ["apiversion", key, min, max] => {
                let (key, min, max) = (api_key(key)?, num("version", min)?, num("version", max)?);
                // SAFETY: live cluster; plain integer arguments.
                done(check(unsafe { rd::rd_kafka_mock_set_apiversion(c, key, min, max) }))
            }
            ["group-initial-rebalance-delay", ms] => {
                let ms = num("milliseconds", ms)?;
                // SAFETY: live cluster; plain integer arguments.
                unsafe { rd::rd_kafka_mock_group_initial_rebalance_delay_ms(c, ms) };
                Ok(String::new())
            }
            ["session-timeout", ms] => {
                let ms = num("milliseconds", ms)?;
                // SAFETY: live cluster; plain integer arguments.
                unsafe { rd::rd_kafka_mock_set_group_consumer_session_timeout_ms(c, ms) };
                Ok(String::new())
            }
            ["heartbeat-interval", ms] => {
                let ms = num("milliseconds", ms)?;
                // SAFETY: live cluster; plain integer arguments.
                unsafe { rd::rd_kafka_mock_set_group_consumer_heartbeat_interval_ms(c, ms) };
                Ok(String::new())
            }
            ["start-request-tracking"] => {
                // SAFETY: live cluster.
                unsafe { rd::rd_kafka_mock_start_request_tracking(c) };
                Ok(String::new())
            }
            ["stop-request-tracking"] => {
                // SAFETY: live cluster.
                unsafe { rd::rd_kafka_mock_stop_request_tracking(c) };
                Ok(String::new())
            }
            ["clear-requests"] => {
                // SAFETY: live cluster.
                unsafe { rd::rd_kafka_mock_clear_requests(c) };
                Ok(String::new())
            }
            ["get-requests"] => Ok(self.requests()),
            [word, ..] => match COMMANDS.iter().find(|u| u.split(' ').next() == Some(*word)) {
                Some(usage) => Err(format!("usage: {usage}")),
                None => Err(format!("unknown command '{word}'")),
            },
        }
    }

    /// The tracked requests as `BROKER:APIKEY:TIMESTAMP_US` words, oldest first.
    fn requests(&self) -> String {
        let mut cnt = 0usize;
        // SAFETY: live cluster; `cnt` is a valid out-pointer.
        let reqs = unsafe { rd::rd_kafka_mock_get_requests(self.cluster, &mut cnt) };
        if reqs.is_null() {
            return String::new();
        }
        let mut out = Vec::with_capacity(cnt);
        for i in 0..cnt {
            // SAFETY: `reqs` is an array of `cnt` valid request pointers owned by us until the
            // destroy call below.
            let (id, key, ts) = unsafe {
                let r = *reqs.add(i);
                (
                    rd::rd_kafka_mock_request_id(r),
                    rd::rd_kafka_mock_request_api_key(r),
                    rd::rd_kafka_mock_request_timestamp(r),
                )
            };
            out.push(format!("{id}:{key}:{ts}"));
        }
        // SAFETY: frees each request and the array, once; nothing points into them afterwards.
        unsafe { rd::rd_kafka_mock_request_destroy_array(reqs, cnt) };
        out.join(" ")
    }
}

/// A `--topic NAME:PARTITIONS[:RF]` argument.
fn parse_topic(spec: &str, brokers: i32) -> Result<(String, i32, i32), String> {
    let bad = || format!("--topic: expected NAME:PARTITIONS[:RF], got '{spec}'");
    let mut parts = spec.split(':');
    let name = parts.next().filter(|n| !n.is_empty()).ok_or_else(bad)?;
    let partitions = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    let rf = match parts.next() {
        Some(rf) => rf.parse().map_err(|_| bad())?,
        None => brokers.min(3),
    };
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok((name.to_owned(), partitions, rf))
}

/// Runs the `cluster` subcommand until stdin closes.
pub(crate) fn run(mut opts: Opts) -> Result<(), Fail> {
    let brokers: i32 = opts.req_parse("brokers")?;
    if brokers < 1 {
        return usage("--brokers must be at least 1".into());
    }
    let topics = opts
        .all("topic")?
        .iter()
        .map(|t| parse_topic(t, brokers))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Fail::Usage)?;
    let mut config = base_config(&mut opts)?;
    let ctx = peer_context(&mut config, &mut opts)?;
    opts.finish()?;

    let client = Client::new(
        &config,
        config.create_native_config().map_err(|e| e.to_string())?,
        RDKafkaType::RD_KAFKA_PRODUCER,
        ctx,
    )
    .map_err(|e| format!("cannot create the librdkafka handle: {e}"))?;
    let mock = Mock::new(brokers, client)?;
    for (name, partitions, rf) in &topics {
        mock.with_kick(|| mock.create_topic(name, *partitions, *rf))
            .map_err(|e| format!("create topic {name}: {e}"))?;
    }

    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let io = |e: std::io::Error| format!("stdout: {e}");
    writeln!(out, "BOOTSTRAP {}", mock.bootstrap()).map_err(io)?;
    out.flush().map_err(io)?;
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| format!("stdin: {e}"))?;
        match mock.with_kick(|| mock.exec(&line)) {
            Ok(s) if s.is_empty() => writeln!(out, "OK"),
            Ok(s) => writeln!(out, "OK {s}"),
            Err(e) => writeln!(out, "ERR {e}"),
        }
        .map_err(io)?;
        out.flush().map_err(io)?;
    }
    drop(mock);
    Ok(())
}
