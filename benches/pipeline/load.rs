//! A closed-loop load driver: `concurrency` tasks, each sending its next request as
//! soon as the previous one is answered, for a fixed time. Used for the HTTP runs and
//! for their PostgreSQL ceiling, so that both see the same offered load.

use crate::cpu::{CpuMeter, CpuUse};
use crate::stats::percentile;
use crate::workload::{Event, Mix, Workload};
use futures::future::BoxFuture;
use serde::Serialize;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Serialize)]
pub struct LoadReport {
    pub concurrency: usize,
    pub seconds: f64,
    pub requests: u64,
    pub errors: u64,
    /// Successful requests per second.
    pub per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// The whole machine's CPU during the run.
    pub cpu: CpuUse,
}

/// One request: `true` when it succeeded.
pub type Call = Arc<dyn Fn(Event) -> BoxFuture<'static, bool> + Send + Sync>;

/// Runs `call` on events of a fresh workload from `concurrency` tasks for `seconds`.
pub async fn closed_loop(mix: &Mix, concurrency: usize, seconds: f64, call: Call) -> LoadReport {
    let workload = Arc::new(Mutex::new(Workload::new(mix, "h")));
    let cpu = CpuMeter::start();
    let started = Instant::now();
    let until = started + Duration::from_secs_f64(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (workload, call) = (workload.clone(), call.clone());
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = 0u64;
            while Instant::now() < until {
                let event = workload.lock().expect("not poisoned").next_event();
                let sent = Instant::now();
                if call(event).await {
                    latencies.push(sent.elapsed().as_secs_f64() * 1e3);
                } else {
                    errors += 1;
                }
            }
            (latencies, errors)
        });
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    while let Some(joined) = tasks.join_next().await {
        let (mine, my_errors) = joined.expect("a load task panicked");
        latencies.extend(mine);
        errors += my_errors;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    LoadReport {
        concurrency,
        seconds: elapsed,
        requests: latencies.len() as u64,
        errors,
        per_s: latencies.len() as f64 / elapsed,
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        cpu: cpu.stop(),
    }
}
