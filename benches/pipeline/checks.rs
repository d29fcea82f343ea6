//! Correctness checks run after each measurement. A failed check fails the benchmark
//! (non-zero exit); timings never do.

use crate::services::Database;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Debug, serde::Serialize)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

impl Check {
    fn new(name: &str, passed: bool, detail: String) -> Check {
        if !passed {
            eprintln!("bench: CHECK FAILED: {name}: {detail}");
        }
        Check {
            name: name.to_owned(),
            passed,
            detail,
        }
    }
}

/// §2's invariants, with the SQL of the tests (`testkit/src/invariants.rs`), which panics
/// on a violation: the panic becomes a failed check.
///
/// Statistics first: on a large database without autovacuum the checks' own plans
/// would otherwise be guesses.
pub async fn invariants(db: &Database) -> Check {
    let prepared = sqlx::query("ANALYZE contact").execute(&db.pool);
    if let Err(e) = prepared.await {
        return Check::new("§2 invariants", false, format!("cannot prepare: {e}"));
    }
    let pool = db.pool.clone();
    match tokio::spawn(async move { crate::invariants::assert_invariants(&pool).await }).await {
        Ok(checks) => Check::new("§2 invariants", true, format!("{checks} checks")),
        Err(e) => Check::new("§2 invariants", false, panic_message(e)),
    }
}

fn panic_message(error: tokio::task::JoinError) -> String {
    match error.try_into_panic() {
        Ok(payload) => payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panicked".into()),
        Err(e) => e.to_string(),
    }
}

/// The ledger rows of the run's own events: all of them but the old rows the pruning
/// runs put there beforehand (`crate::ledger::OLD_KEY_PREFIX`).
pub const RUN_LEDGER_ROWS: &str =
    "SELECT count(*) FROM processed_event WHERE key NOT LIKE 'bench-old-%'";

/// The ledger holds every event key exactly once (the primary key makes "once" hold;
/// we check "every" and "nothing else"), old rows of a pruning run aside.
pub async fn ledger(db: &Database, keys: &[String]) -> Check {
    let counts: Result<(i64, i64), sqlx::Error> = sqlx::query_as(&format!(
        "SELECT ({RUN_LEDGER_ROWS}), \
                (SELECT count(*) FROM processed_event WHERE key = ANY($1))"
    ))
    .bind(keys)
    .fetch_one(&db.pool)
    .await;
    match counts {
        Ok((all, ours)) => Check::new(
            "ledger holds every event exactly once",
            all == keys.len() as i64 && ours == keys.len() as i64,
            format!(
                "{} events, {all} ledger rows, {ours} of them ours",
                keys.len()
            ),
        ),
        Err(e) => Check::new(
            "ledger holds every event exactly once",
            false,
            e.to_string(),
        ),
    }
}

/// (primary id, email, phone) of one contact.
type ContactRow = (i64, Option<String>, Option<String>);

/// The clusters of the contacts created by the workload (ids above `after_id`)
/// are exactly the generator's identities: every identifier that appeared together
/// in an event ends in one cluster, and nothing else is merged.
pub async fn clusters(
    db: &Database,
    after_id: i64,
    expected: &BTreeSet<BTreeSet<String>>,
) -> Check {
    let name = "clusters match the generator's identities";
    let rows: Result<Vec<ContactRow>, sqlx::Error> = sqlx::query_as(
        "SELECT coalesce(linked_id, id), email, phone_number FROM contact \
         WHERE deleted_at IS NULL AND id > $1",
    )
    .bind(after_id)
    .fetch_all(&db.pool)
    .await;
    let rows = match rows {
        Ok(rows) => rows,
        Err(e) => return Check::new(name, false, e.to_string()),
    };
    let mut by_primary: BTreeMap<i64, BTreeSet<String>> = BTreeMap::new();
    for (primary, email, phone) in rows {
        by_primary
            .entry(primary)
            .or_default()
            .extend(email.into_iter().chain(phone));
    }
    let actual: BTreeSet<BTreeSet<String>> = by_primary.into_values().collect();
    let missing = expected.difference(&actual).count();
    let unexpected = actual.difference(expected).count();
    Check::new(
        name,
        missing == 0 && unexpected == 0,
        format!(
            "{} identities expected, {} clusters found; {missing} missing, {unexpected} unexpected",
            expected.len(),
            actual.len()
        ),
    )
}

/// Every event has an identity record on the output topic.
pub fn published(expected: usize, published: usize) -> Check {
    Check::new(
        "every event published",
        published == expected,
        format!("{published} of {expected} events have an identity record"),
    )
}

/// docs/contract.md §7: SIGTERM finishes the work in flight and exits with 0.
pub fn clean_exit(status: Option<std::process::ExitStatus>) -> Check {
    let detail = match status {
        Some(status) => status.to_string(),
        None => "did not stop within 30 s".to_owned(),
    };
    Check::new(
        "the service stopped cleanly on SIGTERM",
        status.is_some_and(|s| s.success()),
        detail,
    )
}
