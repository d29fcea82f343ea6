//! The ledger a worker run starts with (the pruning runs, `crate::pruning`): rows
//! processed eight days before the run, the retention settings under which they are
//! due or not, and what the service's retention task did with them.

use crate::services::Database;
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
