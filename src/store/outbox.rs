//! The outbox: what an operator's action publishes to it, and the relay's reading.
//!
//! Reconciliation writes its records in its own statement (`writes.rs`); an undo, a
//! review's merge and a quarantine's split publish a whole identity with
//! [`publish_identity`].
//!
//! Per-key order with several instances: only the holder of a session-level advisory
//! lock (the *relay lease*) publishes. It reads rows in id order and deletes them once
//! the broker has taken them, so records of one identity leave in the order their
//! transactions committed. If the holder dies, PostgreSQL ends its session and
//! releases the lease; another instance takes over and publishes whatever was not yet
//! deleted (see `worker::relay` for what it does not publish again).
//!
//! A round is one statement: it deletes what the last round published and reads the
//! next rows. The outbox is a queue, every row inserted once and deleted once, so its
//! dead tuples outnumber the live ones; cleaning them up is autovacuum's job (the
//! table's own autovacuum settings, in the migrations).

use super::clusters::load_clusters;
use super::locks::RELAY_LEASE;
use super::{Store, StoreError};
use crate::domain::identity::identity_record;
use crate::domain::reconcile::identity_of;
use crate::domain::{Identity, Origin};
use sqlx::pool::PoolConnection;
use sqlx::{Postgres, Transaction};

/// A record waiting to be published.
#[derive(Clone, Debug)]
pub(crate) struct OutboxRow {
    pub(crate) id: i64,
    pub(crate) key: String,
    /// `None` publishes a tombstone.
    pub(crate) payload: Option<String>,
    pub(crate) created_at: chrono::DateTime<chrono::Utc>,
}

/// The relay lease, held on a dedicated connection for as long as this value lives;
/// dropping it closes the connection, which releases the lock.
pub(crate) struct RelayLease {
    connection: PoolConnection<Postgres>,
}

impl Store {
    /// Takes the relay lease if no other instance holds it.
    pub(crate) async fn try_relay_lease(&self) -> Result<Option<RelayLease>, StoreError> {
        let mut connection = self.pool.acquire().await?;
        // The two-int4 form: a key space of its own (see `locks.rs`).
        let acquired = sqlx::query_scalar!(
            r#"SELECT pg_try_advisory_lock($1, $2) AS "acquired!""#,
            RELAY_LEASE.0,
            RELAY_LEASE.1
        )
        .fetch_one(&mut *connection)
        .await?;
        if acquired {
            // Never hand this session back to the pool: the lock lives and dies with it.
            connection.close_on_drop();
            Ok(Some(RelayLease { connection }))
        } else {
            Ok(None)
        }
    }

    /// Rows still to publish: `max(id) - min(id) + 1`, an upper bound that two index
    /// probes answer, where `count(*)` would scan every row and dead tuple.
    pub(crate) async fn outbox_backlog(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_file_scalar!("src/store/sql/outbox_backlog.sql")
            .fetch_one(&self.pool)
            .await?)
    }
}

impl RelayLease {
    /// One round trip per round: deletes `published` (rows the broker has taken),
    /// then returns the oldest `limit` rows still to publish, in publication order.
    /// Always read from the head of the table: a row that committed late with a
    /// smaller id is published before anything its key gets later, since that can
    /// only commit after it.
    pub(crate) async fn next_round(
        &mut self,
        published: &[i64],
        limit: i64,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        Ok(sqlx::query_file_as!(
            OutboxRow,
            "src/store/sql/outbox_round.sql",
            published,
            limit
        )
        .fetch_all(&mut *self.connection)
        .await?)
    }

    /// Deletes rows the broker has taken, without reading on (when the relay stops).
    pub(crate) async fn delete(&mut self, ids: &[i64]) -> Result<(), StoreError> {
        sqlx::query_file!("src/store/sql/outbox_delete.sql", ids)
            .execute(&mut *self.connection)
            .await?;
        Ok(())
    }
}

/// Bumps the version of primary `id` and writes its identity record to the outbox.
pub(super) async fn publish_identity(
    tx: &mut Transaction<'_, Postgres>,
    id: i64,
    origin: &Origin,
) -> Result<Identity, StoreError> {
    let version: i64 = sqlx::query_scalar!(
        "UPDATE contact SET version = version + 1 WHERE id = $1 RETURNING version",
        id,
    )
    .fetch_one(&mut **tx)
    .await?;
    let identity = identity_of(load_clusters(tx, &[id]).await?, id)
        .map_err(|e| StoreError::Fatal(e.into()))?;
    let record = identity_record(&identity, version, true, origin);
    sqlx::query!(
        "INSERT INTO outbox (key, payload) VALUES ($1, $2)",
        id.to_string(),
        record.to_string(),
    )
    .execute(&mut **tx)
    .await?;
    Ok(identity)
}
