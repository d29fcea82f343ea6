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

use crate::services::Database;
use crate::worker_run::{self, RunPlan, WorkerReport};
use crate::{knobs::Knobs, services::Servers};
use anyhow::Context;
use serde::Serialize;

/// Keys of the old rows; `checks::RUN_LEDGER_ROWS` leaves them out.
pub const OLD_KEY_PREFIX: &str = "bench-old-";

#[derive(Clone, Copy, Debug)]
pub struct LedgerPlan {
    /// Old rows put in the ledger before the service starts.
    pub prefill: u64,
    /// Whether they are older than the retention (pruned) or not.
    pub prune: bool,
}

impl LedgerPlan {
    /// The service's settings for the run (environment variables, as in production).
    pub fn env(&self) -> Vec<(String, String)> {
        let retention = if self.prune { "7d" } else { "36500d" };
        vec![
            ("IR__LEDGER__RETENTION".into(), retention.into()),
            ("IR__LEDGER__PRUNE_INTERVAL".into(), "1s".into()),
        ]
    }

    /// What the retention task did: rows pruned by the end of the drain (the
    /// service's counter) and by the time it stopped (the old rows gone).
    pub async fn report(
        &self,
        db: &Database,
        pruned_during_drain: u64,
    ) -> anyhow::Result<LedgerReport> {
        let left = db
            .count(&format!(
                "SELECT count(*) FROM processed_event WHERE key LIKE '{OLD_KEY_PREFIX}%'"
            ))
            .await?;
        Ok(LedgerReport {
            old_rows: self.prefill,
            prune: self.prune,
            pruned_during_drain,
            pruned_by_stop: self.prefill - left as u64,
        })
    }
}

#[derive(Debug, Serialize)]
pub struct LedgerReport {
    /// Rows processed eight days before the run, in the ledger when it started.
    pub old_rows: u64,
    /// Whether the retention (7 days) made them due.
    pub prune: bool,
    /// `identity_reconciler_ledger_pruned_total` when the drain ended.
    pub pruned_during_drain: u64,
    /// Old rows gone by the time the service had stopped.
    pub pruned_by_stop: u64,
}

/// Both runs and the ratio.
#[derive(Debug, Serialize)]
pub struct Pruning {
    pub off: WorkerReport,
    pub on: WorkerReport,
    /// Throughput with pruning over throughput without.
    pub throughput_ratio: f64,
}

/// `rows` ledger rows processed eight days ago, one millisecond apart, with keys of
/// their own namespace (`OLD_KEY_PREFIX`): one INSERT … SELECT, then ANALYZE.
pub async fn prefill(db: &Database, rows: u64) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    sqlx::query(&format!(
        "INSERT INTO processed_event (key, kind, processed_at) \
         SELECT '{OLD_KEY_PREFIX}' || i, 'event', now() - interval '8 days' - i * interval '1 millisecond' \
         FROM generate_series(1, $1::bigint) AS i"
    ))
    .bind(rows as i64)
    .execute(&db.pool)
    .await
    .context("prefill the ledger")?;
    sqlx::query("ANALYZE processed_event")
        .execute(&db.pool)
        .await?;
    eprintln!(
        "bench: {rows} old ledger rows in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
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
