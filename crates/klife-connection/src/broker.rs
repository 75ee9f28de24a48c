//! The connections to one broker: `connection_count` slots used round-robin, each
//! reconnecting on demand with exponential backoff and jitter; two slots kept for
//! Fetch requests; and ordered lanes, one connection each, opened when first asked for
//! and let go when their owner drops the lane.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::cluster::LaneId;
use crate::conn::Connection;
use crate::sync::lock;
use crate::{ConnectionConfig, Error, handshake};

struct Slot {
    conn: Option<Connection>,
    backoff: Backoff,
    /// Until then, callers get `last_error` at once instead of a new attempt.
    retry_at: Option<Instant>,
    last_error: Option<Error>,
}

/// The connections to one broker.
pub(crate) struct BrokerPool {
    label: String,
    /// The node id; `None` for a bootstrap address.
    node_id: Option<i32>,
    host: String,
    port: u16,
    slots: Vec<Mutex<Slot>>,
    /// Connections of their own for Fetch requests, one for fetches answered at once
    /// and one for fetches that may wait for records: brokers answer a connection's
    /// requests in order, so a long-polling fetch would hold up everything behind it.
    fetch_slots: [Mutex<Slot>; 2],
    /// Lanes: a connection each, for a stream of requests that must reach the broker in
    /// the order they were queued (a broker serves a connection's requests one at a
    /// time, in order, and different connections side by side), by the lane's id.
    lanes: std::sync::Mutex<HashMap<LaneId, Arc<Mutex<Slot>>>>,
    next: AtomicUsize,
    config: Arc<ConnectionConfig>,
    /// The owning cluster's closed flag: no connection outlives `Cluster::close`.
    closed: Arc<AtomicBool>,
}

impl Slot {
    fn new(config: &ConnectionConfig) -> Slot {
        Slot {
            conn: None,
            backoff: Backoff::new(config.reconnect_backoff, config.reconnect_backoff_max),
            retry_at: None,
            last_error: None,
        }
    }
}

impl BrokerPool {
    pub(crate) fn new(
        label: String,
        node_id: Option<i32>,
        host: String,
        port: u16,
        config: Arc<ConnectionConfig>,
        closed: Arc<AtomicBool>,
    ) -> Self {
        let slot = || Mutex::new(Slot::new(&config));
        let slots = (0..config.connection_count.max(1)).map(|_| slot()).collect();
        BrokerPool {
            label,
            node_id,
            host,
            port,
            slots,
            fetch_slots: [slot(), slot()],
            lanes: std::sync::Mutex::new(HashMap::new()),
            next: AtomicUsize::new(0),
            config,
            closed,
        }
    }

    pub(crate) fn label(&self) -> &str {
        &self.label
    }

    pub(crate) fn address(&self) -> (&str, u16) {
        (&self.host, self.port)
    }

    /// A live connection, the next one round-robin. A slot without one connects; while
    /// a slot is backing off after a failed attempt, callers get that attempt's error at
    /// once, so a dead broker costs each caller nothing but the one shared attempt.
    pub(crate) async fn connection(&self) -> Result<Connection, Error> {
        let i = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        self.connect_slot(&self.slots[i]).await
    }

    /// A connection kept for Fetch requests (same backoff rules): the one for fetches
    /// that may wait for records (`long_poll`), or the one for the others.
    pub(crate) async fn fetch_connection(&self, long_poll: bool) -> Result<Connection, Error> {
        self.connect_slot(&self.fetch_slots[usize::from(long_poll)]).await
    }

    /// The connection of lane `lane` (same backoff rules), opened when first asked for.
    pub(crate) async fn lane_connection(&self, lane: LaneId) -> Result<Connection, Error> {
        let slot =
            lock(&self.lanes).entry(lane).or_insert_with(|| Arc::new(Mutex::new(Slot::new(&self.config)))).clone();
        self.connect_slot(&slot).await
    }

    /// Forgets lane `lane`: its connection closes once no handle to it is left and no
    /// answer is awaited on it.
    pub(crate) fn remove_lane(&self, lane: LaneId) {
        // Dropped outside the lock.
        let slot = lock(&self.lanes).remove(&lane);
        drop(slot);
    }

    async fn connect_slot(&self, slot: &Mutex<Slot>) -> Result<Connection, Error> {
        let mut slot = slot.lock().await;
        if let Some(c) = &slot.conn {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        slot.conn = None;
        if let (Some(at), Some(e)) = (slot.retry_at, &slot.last_error) {
            if at > Instant::now() {
                return Err(e.clone());
            }
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        match handshake::connect(&self.host, self.port, self.label.clone(), self.node_id, &self.config).await {
            Ok(c) => {
                if self.closed.load(Ordering::Acquire) {
                    c.close();
                    return Err(Error::Closed);
                }
                slot.backoff.reset();
                slot.retry_at = None;
                slot.last_error = None;
                slot.conn = Some(c.clone());
                Ok(c)
            }
            Err(e) => {
                let delay = slot.backoff.next_delay(fastrand::f64());
                slot.retry_at = Some(Instant::now() + delay);
                slot.last_error = Some(e.clone());
                tracing::debug!(broker = %self.label, error = %e, next_attempt_in = ?delay, "connection attempt failed");
                Err(e)
            }
        }
    }

    /// Closes every open connection.
    pub(crate) async fn close(&self) {
        let lanes: Vec<Arc<Mutex<Slot>>> = lock(&self.lanes).values().cloned().collect();
        for s in self.slots.iter().chain(&self.fetch_slots).chain(lanes.iter().map(|s| &**s)) {
            if let Some(c) = s.lock().await.conn.take() {
                c.close();
            }
        }
    }
}
