//! Ledger pruning under load (issue 13): does the retention task slow the hot path?
//!
//! The worker run twice more, on the same N events, each time with a ledger that
//! already holds `BENCH_PRUNE_ROWS` rows processed eight days ago (older than the
//! default `ledger.retention`, 7 days):
//! - *pruning off*: `ledger.retention = "36500d"`: the retention task runs as always
//!   but finds nothing due;
//! - *pruning on*: `ledger.retention = "7d"` (the default): the task deletes the old
//!   rows in steps of `ledger.prune_batch` (the default, 1,000) while the worker
//!   drains.
//!
//! Both with `ledger.prune_interval = "1s"`, so that the first round starts with the
//! drain. The figure is the second run's throughput over the first's; both runs carry
//! the same old rows (the same table and index sizes), so the difference is the
//! deleting alone. This is the worst case of pruning, a backlog of due rows (the task
//! switched on for an old ledger, or after being down); in a steady state a round
//! deletes only what aged past the retention since the last one.

use crate::knobs::Knobs;
use crate::ledger::LedgerPlan;
use crate::services::Servers;
use crate::worker_run::{self, RunPlan, WorkerReport};
use anyhow::Context;
use serde::Serialize;

/// Both runs and the ratio.
#[derive(Debug, Serialize)]
pub struct Pruning {
    pub off: WorkerReport,
    pub on: WorkerReport,
    /// Throughput with pruning over throughput without.
    pub throughput_ratio: f64,
}

/// The two runs, pruning off then on; `None` when `BENCH_PRUNE_ROWS=0`.
pub async fn run(servers: &Servers, knobs: &Knobs) -> anyhow::Result<Option<Pruning>> {
    if knobs.prune_rows == 0 {
        return Ok(None);
    }
    let mut reports = Vec::new();
    for (label, prune) in [("prune_off", false), ("prune_on", true)] {
        eprintln!(
            "bench: worker with {} old ledger rows, pruning {}",
            knobs.prune_rows,
            if prune { "on" } else { "off" }
        );
        let report = worker_run::run(
            servers,
            &RunPlan {
                label,
                events: knobs.events,
                mix: &knobs.mix,
                latency: None,
                broker_ceilings: false,
                preload_contacts: 0,
                ledger: Some(LedgerPlan {
                    prefill: knobs.prune_rows,
                    prune,
                }),
            },
        )
        .await
        .with_context(|| format!("{label} run"))?;
        reports.push(report);
    }
    let on = reports.pop().expect("two runs");
    let off = reports.pop().expect("two runs");
    Ok(Some(Pruning {
        throughput_ratio: on.events_per_s / off.events_per_s,
        off,
        on,
    }))
}
