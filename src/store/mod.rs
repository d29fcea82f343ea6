//! PostgreSQL: the contacts, the ledger of processed events and the outbox.
//!
//! All SQL of the service lives in this module. [`Store::reconcile`] is the one unit
//! of work for both the HTTP sidecar and the Kafka worker; see `locks.rs` for the
//! locking scheme that keeps §2's invariants under any concurrency.

mod admin;
mod clusters;
mod dead_letter;
mod decisions;
mod error;
mod explain;
mod journal;
mod ledger;
mod locks;
mod lookup;
mod outbox;
mod quarantine;
mod reconcile;
mod retry;
mod reviews;
pub mod sql;
mod suppression;
pub(crate) mod upkeep;
mod vocabulary;
mod writes;

pub(crate) use admin::{Forgotten, History, HistoryEntry, Unmerged};
pub use clusters::ForgetTarget;
pub use dead_letter::{DeadLetter, StoredDeadLetter};
pub(crate) use error::StoreError;
pub(crate) use explain::{Evidence, Explanation, InputOrigin};
pub(crate) use lookup::Lookup;
pub(crate) use outbox::{OutboxRow, RelayLease};
pub use reconcile::Reconciled;
pub(crate) use reviews::{identifier_field, Quarantined, Review, ReviewDecision, ReviewPage};

use crate::config::{DatabaseSettings, ReconcileSettings};
use sqlx::migrate::Migrator;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions, Connection, PgPool};
use std::sync::Arc;
use tokio::sync::OnceCell;

static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The service's handle on PostgreSQL.
#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    settings: Arc<ReconcileSettings>,
    /// The suppression list's salt, read on first use.
    salt: Arc<OnceCell<String>>,
}

impl Store {
    pub fn new(pool: PgPool, settings: ReconcileSettings) -> Store {
        Store {
            pool,
            settings: Arc::new(settings),
            salt: Arc::default(),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn settings(&self) -> &ReconcileSettings {
        &self.settings
    }

    /// `SELECT 1`: is PostgreSQL reachable?
    pub(crate) async fn ping(&self) -> Result<(), StoreError> {
        sqlx::query_scalar!("SELECT 1 AS one")
            .fetch_one(&self.pool)
            .await?;
        Ok(())
    }
}

/// Opens the pool, creating the database first if asked to, and applies migrations.
pub async fn connect(settings: &DatabaseSettings) -> anyhow::Result<PgPool> {
    use anyhow::Context;
    let options = settings
        .connect_options()
        .context("DATABASE_URL is not a valid PostgreSQL URL")?;
    if settings.create_if_missing {
        create_database_if_missing(&options).await?;
    }
    let pool = settings
        .pool_options()
        .connect_with(options)
        .await
        .context("cannot connect to PostgreSQL")?;
    migrate(&pool).await?;
    Ok(pool)
}

/// Applies pending migrations; safe to run from several instances at once (sqlx
/// serialises them with an advisory lock).
pub(crate) async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    use anyhow::Context;
    MIGRATOR.run(pool).await.context("cannot apply migrations")
}

async fn create_database_if_missing(options: &PgConnectOptions) -> anyhow::Result<()> {
    use anyhow::Context;
    let Some(name) = options.get_database().map(str::to_owned) else {
        return Ok(());
    };
    let mut admin = options
        .clone()
        .database("postgres")
        .connect()
        .await
        .context(
            "cannot connect to PostgreSQL (database `postgres`) to create the service's database",
        )?;
    let exists = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1) AS "exists!""#,
        &name
    )
    .fetch_one(&mut admin)
    .await?;
    if !exists {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        // Runtime-checked: a database name cannot be a bind parameter, and the
        // database this checks does not exist yet.
        match sqlx::query(&format!("CREATE DATABASE {quoted}"))
            .execute(&mut admin)
            .await
        {
            Ok(_) => tracing::info!(database = %name, "created database"),
            // Another instance created it between our check and our CREATE.
            Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42P04") => {}
            Err(e) => return Err(e).context("cannot create the service's database"),
        }
    }
    admin.close().await.ok();
    Ok(())
}
