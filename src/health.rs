//! What `/readyz` reports about the Kafka side, kept up to date by the worker.
//!
//! The worker is ready when the broker is reachable, the consumer is not stalled and
//! the outbox relay can publish: stalled means messages are waiting (lag above zero)
//! but no batch has completed for longer than the stall timeout; the relay cannot
//! publish while a topic it writes is missing, an authorisation is refused or its
//! producer is fenced, until a round goes through again.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[derive(Debug)]
pub(crate) struct Health {
    worker_running: AtomicBool,
    broker_reachable: AtomicBool,
    /// Unix time (ms) of the last completed batch, or of the worker's start.
    last_progress_ms: AtomicI64,
    /// Total consumer lag over the assigned partitions, from librdkafka statistics.
    lag: AtomicI64,
    stall_timeout: Duration,
    /// Why the relay cannot publish, in words that say what to do; `None` while it can.
    relay_blocked: Mutex<Option<String>>,
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl Health {
    pub(crate) fn new(stall_timeout: Duration) -> Health {
        Health {
            worker_running: AtomicBool::new(false),
            broker_reachable: AtomicBool::new(false),
            last_progress_ms: AtomicI64::new(now_ms()),
            lag: AtomicI64::new(0),
            stall_timeout,
            relay_blocked: Mutex::new(None),
        }
    }

    /// The worker has started; from now on readiness includes Kafka.
    pub(crate) fn worker_started(&self) {
        self.last_progress_ms.store(now_ms(), Ordering::Relaxed);
        self.worker_running.store(true, Ordering::Relaxed);
    }

    pub(crate) fn set_broker_reachable(&self, reachable: bool) {
        self.broker_reachable.store(reachable, Ordering::Relaxed);
    }

    /// A batch was completed (applied, dead-lettered, offsets stored).
    pub(crate) fn progressed(&self) {
        self.last_progress_ms.store(now_ms(), Ordering::Relaxed);
    }

    pub(crate) fn set_lag(&self, lag: i64) {
        self.lag.store(lag, Ordering::Relaxed);
    }

    /// The relay cannot publish until somebody acts (`Some`), or it can again (`None`).
    pub(crate) fn set_relay_blocked(&self, reason: Option<String>) {
        *self.relay_blocked.lock().unwrap_or_else(|e| e.into_inner()) = reason;
    }

    /// Why the relay cannot publish, if it cannot.
    pub(crate) fn relay_blocked(&self) -> Option<String> {
        self.relay_blocked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn stalled(&self) -> bool {
        let idle = now_ms() - self.last_progress_ms.load(Ordering::Relaxed);
        self.lag.load(Ordering::Relaxed) > 0 && idle > self.stall_timeout.as_millis() as i64
    }

    /// `None` when no worker runs in this process (`http` mode).
    pub(crate) fn kafka_ready(&self) -> Option<bool> {
        self.worker_running.load(Ordering::Relaxed).then(|| {
            self.broker_reachable.load(Ordering::Relaxed)
                && !self.stalled()
                && self.relay_blocked().is_none()
        })
    }
}
