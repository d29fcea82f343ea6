//! What `/readyz` reports about the Kafka side, kept up to date by the worker.

use std::sync::atomic::{AtomicBool, Ordering};

#[derive(Debug, Default)]
pub struct Health {
    worker_running: AtomicBool,
    broker_reachable: AtomicBool,
}

impl Health {
    /// The worker has started; from now on readiness includes Kafka.
    pub fn worker_started(&self) {
        self.worker_running.store(true, Ordering::Relaxed);
    }

    pub fn set_broker_reachable(&self, reachable: bool) {
        self.broker_reachable.store(reachable, Ordering::Relaxed);
    }

    /// `None` when no worker runs in this process (`http` mode).
    pub fn kafka_ready(&self) -> Option<bool> {
        self.worker_running
            .load(Ordering::Relaxed)
            .then(|| self.broker_reachable.load(Ordering::Relaxed))
    }
}
