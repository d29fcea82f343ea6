//! Table upkeep off the hot path, as a task of `run` and `http`: retention (the ledger
//! and the quarantine's counterpart pairs). Statistics and vacuum are autovacuum's, with
//! per-table settings for the hot path's tables (migration `autovacuum_hot_tables`).

use super::{Store, StoreError};
use crate::config::{LedgerSettings, Settings};
use crate::metrics::METRICS;
use crate::telemetry::chain;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Spawns the retention task.
pub(crate) fn spawn(
    store: &Store,
    settings: &Settings,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<anyhow::Result<()>>,
) {
    tasks.spawn(prune_old_rows(
        store.clone(),
        settings.ledger.clone(),
        settings.reconcile.quarantine.window,
        shutdown.clone(),
    ));
}

/// The retention task: every `ledger.prune_interval`, deletes ledger rows older than
/// `ledger.retention` and quarantine counterpart pairs last seen before
/// `reconcile.quarantine.window`, each in steps of `ledger.prune_batch` rows (see
/// [`Store::prune_ledger`], [`Store::prune_counterparts`]), off the hot path, does the
/// quarantine splits still pending ([`Store::split_pending_quarantines`]), and sets
/// the ledger-size gauge. Failures are logged and retried next time.
async fn prune_old_rows(
    store: Store,
    settings: LedgerSettings,
    counterpart_window: std::time::Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut ticks = tokio::time::interval(settings.prune_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let batch = settings.prune_batch;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = ticks.tick() => {}
        }
        prune_in_steps("ledger", batch, &METRICS.ledger_pruned, &shutdown, || {
            store.prune_ledger(settings.retention, batch)
        })
        .await;
        prune_in_steps(
            "quarantine counterparts",
            batch,
            &METRICS.counterparts_pruned,
            &shutdown,
            || store.prune_counterparts(counterpart_window, batch),
        )
        .await;
        // Splits a tripping batch could not finish (see `store/quarantine.rs`); the
        // first tick is at start.
        match store.split_pending_quarantines().await {
            Ok(0) => {}
            Ok(split) => tracing::info!(split, "pending quarantine splits done"),
            Err(e) => tracing::warn!(error = %chain(&e), "could not split a quarantine"),
        }
        match store.ledger_size().await {
            Ok(rows) => METRICS.ledger_rows.set(rows),
            Err(e) => tracing::warn!(error = %chain(&e), "could not size the ledger"),
        }
    }
}

/// Runs `step` (one short transaction deleting at most `batch` rows) until a step
/// deletes fewer than `batch`, counting what was deleted in `pruned`.
async fn prune_in_steps<F, Fut>(
    what: &str,
    batch: i64,
    pruned: &prometheus::IntCounter,
    shutdown: &CancellationToken,
    mut step: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64, StoreError>>,
{
    loop {
        match step().await {
            Ok(deleted) => {
                pruned.inc_by(deleted);
                if deleted < batch.max(1) as u64 || shutdown.is_cancelled() {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %chain(&e), what, "could not prune old rows");
                return;
            }
        }
    }
}
