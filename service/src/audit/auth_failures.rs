//! Failed authentications, recorded without handing a flood of them the
//! store's write rate. Anyone who can reach the port can fail to
//! authenticate as fast as the network allows; a durable write per attempt,
//! awaited before the answer, would let an unauthenticated caller drive the
//! audit's write load.
//!
//! Time is cut into windows (`audit.auth_failure_window_secs`). In each, the
//! first failure of a (client IP, status, reason) is recorded at once as an
//! `auth.failure` event, durably, before the caller is answered. Later ones
//! in the same window are counted in memory and answered at once. When the
//! window ends, and at shutdown, each count becomes one
//! `auth.failure.aggregate` event: `rows` is how many attempts it stands
//! for, `time` the last of them, `duration_ms` the span from the first.
//! At most `max_keys` (client, reason) pairs are tracked per window;
//! failures beyond them are counted per status with no client or reason. So
//! a window writes at most `2 × max_keys` events plus one per status,
//! however many attempts arrive.
//!
//! The events hold client address, user agent, status and Veil's sanitized
//! message; never the token (the caller builds the event without it).

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::audit::AuditEventExt;
use crate::audit::AuditLog;
use crate::error::Result;
use crate::model::audit::AuditEvent;

/// Action of an aggregated event.
pub const AGGREGATE_ACTION: &str = "auth.failure.aggregate";
/// (client, reason) pairs tracked per window by default.
pub const DEFAULT_MAX_KEYS: usize = 1024;
/// Longest reason kept in a key (Veil's messages are far shorter).
const MAX_REASON_CHARS: usize = 512;
/// Longest client address kept in a key.
const MAX_CLIENT_CHARS: usize = 64;

/// Records authentication failures, aggregating repeats per window.
#[derive(Debug)]
pub struct AuthFailureAudit {
    audit: AuditLog,
    window: Arc<Mutex<Window>>,
    stop: watch::Sender<bool>,
    flusher: tokio::sync::Mutex<Option<JoinHandle<()>>>,
}

/// Whether a failure must be written now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Noted {
    /// The first of its key this window: record it before answering.
    First,
    /// Counted; the window's aggregate event will carry it.
    Counted,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct Key {
    /// The client's IP: a flood over many connections varies the port.
    client: String,
    status: String,
    reason: String,
}

#[derive(Debug, Clone)]
struct Count {
    /// Attempts not recorded one by one (the first of a key is).
    attempts: u64,
    first_ms: i64,
    last_ms: i64,
    /// Of the first attempt counted.
    user_agent: String,
}

impl Count {
    fn new() -> Self {
        Self {
            attempts: 0,
            first_ms: i64::MAX,
            last_ms: i64::MIN,
            user_agent: String::new(),
        }
    }

    fn add(&mut self, e: &AuditEvent) {
        if self.attempts == 0 {
            self.user_agent = e.user_agent.clone();
        }
        self.attempts += 1;
        self.first_ms = self.first_ms.min(e.time_ms);
        self.last_ms = self.last_ms.max(e.time_ms);
    }
}

/// One window's counts; bounded by `max_keys`.
#[derive(Debug)]
struct Window {
    max_keys: usize,
    tracked: HashMap<Key, Count>,
    /// Per status, failures whose key found no room.
    overflow: BTreeMap<String, Count>,
    /// After shutdown nothing would flush a count: record everything.
    closed: bool,
}

impl Window {
    fn new(max_keys: usize) -> Self {
        Self {
            max_keys,
            tracked: HashMap::new(),
            overflow: BTreeMap::new(),
            closed: false,
        }
    }

    fn key(e: &AuditEvent) -> Key {
        let client = e
            .client_address
            .parse::<SocketAddr>()
            .map(|a| a.ip().to_string())
            .unwrap_or_else(|_| e.client_address.chars().take(MAX_CLIENT_CHARS).collect());
        Key {
            client,
            status: e.status.clone(),
            reason: e.message.chars().take(MAX_REASON_CHARS).collect(),
        }
    }

    fn note(&mut self, e: &AuditEvent) -> Noted {
        if self.closed {
            return Noted::First;
        }
        let key = Self::key(e);
        if let Some(c) = self.tracked.get_mut(&key) {
            c.add(e);
            return Noted::Counted;
        }
        if self.tracked.len() < self.max_keys {
            self.tracked.insert(key, Count::new());
            return Noted::First;
        }
        self.overflow
            .entry(key.status)
            .or_insert_with(Count::new)
            .add(e);
        Noted::Counted
    }

    /// Count `e`, whose own record could not be written.
    fn count_unrecorded(&mut self, e: &AuditEvent) {
        let key = Self::key(e);
        let room = self.tracked.len() < self.max_keys;
        let count = match self.tracked.entry(key) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) if room => v.insert(Count::new()),
            std::collections::hash_map::Entry::Vacant(v) => self
                .overflow
                .entry(v.into_key().status)
                .or_insert_with(Count::new),
        };
        count.add(e);
    }

    /// The window's aggregate events; the next window starts empty.
    fn drain(&mut self) -> Vec<AuditEvent> {
        let mut out = Vec::new();
        for (key, c) in self.tracked.drain() {
            if c.attempts > 0 {
                out.push(aggregate(&c, key.status, key.client, key.reason));
            }
        }
        let max_keys = self.max_keys;
        for (status, c) in std::mem::take(&mut self.overflow) {
            let reason = format!(
                "failed authentications beyond the {max_keys} (client, reason) pairs tracked per window; their clients and reasons were not kept"
            );
            out.push(aggregate(&c, status, String::new(), reason));
        }
        out.sort_by_key(|e| e.time_ms);
        out
    }
}

fn aggregate(c: &Count, status: String, client: String, reason: String) -> AuditEvent {
    let mut e = AuditEvent::new(AGGREGATE_ACTION, None);
    e.time_ms = c.last_ms;
    e.duration_ms = Some((c.last_ms - c.first_ms).max(0) as u64);
    e.rows = Some(c.attempts);
    e.status = status;
    e.message = reason;
    e.client_address = client;
    e.user_agent = c.user_agent.clone();
    e
}

impl AuthFailureAudit {
    /// Start aggregating into `audit`, flushing every `window` (at least a
    /// second) and at [`Self::shutdown`].
    pub fn start(audit: AuditLog, window: Duration, max_keys: usize) -> Self {
        let every = window.max(Duration::from_secs(1));
        let counts = Arc::new(Mutex::new(Window::new(max_keys.max(1))));
        let (stop, stopped) = watch::channel(false);
        let flusher = tokio::spawn(run(audit.clone(), Arc::clone(&counts), every, stopped));
        Self {
            audit,
            window: counts,
            stop,
            flusher: tokio::sync::Mutex::new(Some(flusher)),
        }
    }

    /// Record a failed authentication (an `auth.failure` event without the
    /// token). Waits for the store only for the first of its key in the
    /// window; if that write fails, the answer is `Unavailable` and the
    /// attempt is counted for the aggregate instead.
    pub async fn record(&self, event: AuditEvent) -> Result<()> {
        let noted = lock(&self.window).note(&event);
        if noted == Noted::Counted {
            return Ok(());
        }
        let kept = event.clone();
        self.audit.record(event).await.inspect_err(|_| {
            lock(&self.window).count_unrecorded(&kept);
        })
    }

    /// Flush the counts and stop; later failures are recorded one by one.
    pub async fn shutdown(&self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.flusher.lock().await.take() {
            let _ = task.await;
        }
    }
}

fn lock(w: &Mutex<Window>) -> std::sync::MutexGuard<'_, Window> {
    // Counts are plain numbers: one left mid-update by a panic is still
    // worth flushing.
    w.lock().unwrap_or_else(PoisonError::into_inner)
}

async fn run(
    audit: AuditLog,
    window: Arc<Mutex<Window>>,
    every: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = tick.tick() => flush(&audit, &window).await,
        }
    }
    // Close first: a failure arriving now is recorded on its own.
    lock(&window).closed = true;
    flush(&audit, &window).await;
}

async fn flush(audit: &AuditLog, window: &Mutex<Window>) {
    let events = lock(window).drain();
    // Concurrently, so the writer commits them as one group.
    let outcomes = futures::future::join_all(events.iter().map(|e| audit.record(e.clone()))).await;
    for (e, outcome) in events.iter().zip(outcomes) {
        if outcome.is_err() {
            // Nobody waits for these to answer; the log keeps the count.
            tracing::error!(
                attempts = e.rows.unwrap_or(0),
                status = %e.status,
                client = %e.client_address,
                "aggregated authentication failures could not be audited"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(client: &str, message: &str, time_ms: i64) -> AuditEvent {
        let mut e = AuditEvent::new("auth.failure", None);
        e.status = "unauthenticated".into();
        e.message = message.into();
        e.client_address = client.into();
        e.user_agent = "ua".into();
        e.time_ms = time_ms;
        e
    }

    /// The first per (client IP, status, reason) is recorded, the rest are
    /// counted with their span; the port does not make a new client.
    #[test]
    fn repeats_are_counted_once_per_key_and_window() {
        let mut w = Window::new(8);
        assert_eq!(w.note(&failure("10.0.0.1:1000", "bad", 1)), Noted::First);
        for (i, port) in (1001..1100).enumerate() {
            let e = failure(&format!("10.0.0.1:{port}"), "bad", 10 + i as i64);
            assert_eq!(w.note(&e), Noted::Counted);
        }
        assert_eq!(w.note(&failure("10.0.0.1:1", "other", 5)), Noted::First);
        assert_eq!(w.note(&failure("10.0.0.2:1", "bad", 5)), Noted::First);
        let events = w.drain();
        assert_eq!(events.len(), 1, "keys seen once need no aggregate");
        let e = &events[0];
        assert_eq!(e.action, AGGREGATE_ACTION);
        assert_eq!(e.rows, Some(99));
        assert_eq!(e.time_ms, 108);
        assert_eq!(e.duration_ms, Some(98));
        assert_eq!(e.client_address, "10.0.0.1");
        assert_eq!(e.status, "unauthenticated");
        assert_eq!(e.message, "bad");
        assert_eq!(e.user_agent, "ua");
        // A new window starts empty: its first failure is recorded again.
        assert!(w.drain().is_empty());
        assert_eq!(w.note(&failure("10.0.0.1:2", "bad", 200)), Noted::First);
    }

    /// Memory is bounded: beyond `max_keys`, failures share one bucket per
    /// status, and every attempt is still accounted for.
    #[test]
    fn keys_are_bounded_and_counts_add_up() {
        let mut w = Window::new(3);
        let mut recorded = 0u64;
        let total = 1000u64;
        for i in 0..total {
            let e = failure(&format!("10.0.{}.{}:9", i / 256, i % 256), "bad", i as i64);
            if w.note(&e) == Noted::First {
                recorded += 1;
            }
        }
        assert_eq!(recorded, 3);
        assert_eq!(w.tracked.len(), 3);
        let mut denied = failure("10.9.9.9:9", "disabled", 5000);
        denied.status = "permission_denied".into();
        assert_eq!(w.note(&denied), Noted::Counted);
        let events = w.drain();
        assert_eq!(events.len(), 2, "one overflow bucket per status");
        let counted: u64 = events.iter().map(|e| e.rows.unwrap()).sum();
        assert_eq!(recorded + counted, total + 1);
        let overflow = events
            .iter()
            .find(|e| e.status == "unauthenticated")
            .unwrap();
        assert_eq!(overflow.client_address, "");
        assert_eq!(overflow.rows, Some(total - 3));
        assert_eq!(overflow.duration_ms, Some(total - 1 - 3));
        assert!(overflow.message.contains("beyond the 3"));
    }

    /// A first failure whose write failed is counted for the aggregate;
    /// after shutdown every failure is recorded on its own.
    #[test]
    fn unrecorded_firsts_are_counted_and_a_closed_window_records_all() {
        let mut w = Window::new(2);
        let e = failure("10.0.0.1:1", "bad", 1);
        assert_eq!(w.note(&e), Noted::First);
        w.count_unrecorded(&e);
        assert_eq!(w.drain()[0].rows, Some(1));
        w.closed = true;
        assert_eq!(w.note(&e), Noted::First);
        assert_eq!(w.note(&e), Noted::First);
        assert!(w.drain().is_empty());
    }

    /// Through a real audit log: a flood of 500 is a handful of events
    /// whose counts add up to 500, flushed at shutdown, with no token.
    #[tokio::test]
    async fn a_flood_is_a_few_events_flushed_at_shutdown() {
        let dir = tempfile::tempdir().unwrap();
        let store: Arc<dyn crate::store::Store> =
            Arc::new(crate::store::sqlite::SqliteStore::open(&dir.path().join("v.db")).unwrap());
        let key = crate::secrets::MasterKey::from_bytes([5; 32])
            .derive(crate::secrets::KeyPurpose::AuditChain);
        let log = AuditLog::start(
            Arc::clone(&store),
            super::super::chain::AuditSealer::new(key, "n"),
            super::super::checkpoint::CheckpointSink::file(dir.path().join("cp.jsonl")),
            Duration::from_secs(3600),
        );
        let failures = AuthFailureAudit::start(log.clone(), Duration::from_secs(3600), 16);
        for i in 0..500 {
            let reason = if i % 2 == 0 {
                "expired"
            } else {
                "bad signature"
            };
            let e = failure(&format!("127.0.0.1:{}", 40000 + i % 7), reason, i);
            failures.record(e).await.unwrap();
        }
        assert_eq!(log.tail(1000).await.unwrap().len(), 2, "only the firsts");
        failures.shutdown().await;
        let events = log.tail(1000).await.unwrap();
        assert_eq!(events.len(), 4);
        let total: u64 = events
            .iter()
            .map(|e| match e.action.as_str() {
                "auth.failure" => 1,
                AGGREGATE_ACTION => e.rows.unwrap(),
                other => panic!("unexpected {other}"),
            })
            .sum();
        assert_eq!(total, 500);
        // After shutdown a failure is written on its own, not lost.
        failures
            .record(failure("127.0.0.1:1", "expired", 600))
            .await
            .unwrap();
        assert_eq!(log.tail(1000).await.unwrap().len(), 5);
        log.shutdown().await;
    }
}
