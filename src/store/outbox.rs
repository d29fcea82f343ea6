//! The outbox, read by the relay.
//!
//! Per-key order with several instances: only the holder of a session-level advisory
//! lock (the *relay lease*) publishes. It reads rows in id order and deletes them once
//! the broker has acknowledged them, so records of one identity leave in the order
//! their transactions committed. If the holder dies, PostgreSQL ends its session and
//! releases the lease; another instance takes over and re-publishes whatever was not
//! yet deleted (at-least-once: a record may be duplicated, never lost).

use super::{sql, Store, StoreError};
use sqlx::pool::PoolConnection;
use sqlx::{Postgres, Row};

use super::locks::RELAY_LEASE;

/// A record waiting to be published.
#[derive(Clone, Debug)]
pub struct OutboxRow {
    pub id: i64,
    pub key: String,
    /// `None` publishes a tombstone.
    pub payload: Option<String>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// The relay lease, held on a dedicated connection for as long as this value lives;
/// dropping it closes the connection, which releases the lock.
pub struct RelayLease {
    connection: PoolConnection<Postgres>,
    deleted_since_vacuum: usize,
}

/// Rows the relay deletes between two `VACUUM outbox` of its own.
const VACUUM_EVERY: usize = 20_000;

impl Store {
    /// Takes the relay lease if no other instance holds it.
    pub async fn try_relay_lease(&self) -> Result<Option<RelayLease>, StoreError> {
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
            Ok(Some(RelayLease {
                connection,
                deleted_since_vacuum: 0,
            }))
        } else {
            Ok(None)
        }
    }

    /// Rows still to publish: `max(id) - min(id) + 1`, an upper bound that two index
    /// probes answer, where `count(*)` would scan every row and dead tuple.
    pub async fn outbox_backlog(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query_scalar(sql::OUTBOX_BACKLOG)
            .fetch_one(&self.pool)
            .await?)
    }
}

impl RelayLease {
    /// The oldest `limit` rows, in publication order, leaving out `in_flight` (rows
    /// already handed to the broker). Always read from the head of the table: a row
    /// that committed late with a smaller id is published before anything its key
    /// gets later, since that can only commit after it.
    pub async fn next_rows(
        &mut self,
        in_flight: &[i64],
        limit: i64,
    ) -> Result<Vec<OutboxRow>, StoreError> {
        let rows = sqlx::query(sql::OUTBOX_NEXT_ROWS)
            .bind(in_flight)
            .bind(limit)
            .fetch_all(&mut *self.connection)
            .await?;
        Ok(rows
            .into_iter()
            .map(|row| OutboxRow {
                id: row.get("id"),
                key: row.get("key"),
                payload: row.get("payload"),
                created_at: row.get("created_at"),
            })
            .collect())
    }

    /// Deletes rows the broker has acknowledged.
    ///
    /// The outbox is a queue: every row is inserted once and deleted once, so its dead
    /// tuples outnumber the live ones many times over, and every read of the queue's
    /// head wades through them until a vacuum. The relay vacuums the table itself every
    /// `VACUUM_EVERY` rows instead of relying on autovacuum's thresholds (or on
    /// autovacuum being on at all); a vacuum of a mostly empty table is cheap.
    pub async fn delete(&mut self, ids: &[i64]) -> Result<(), StoreError> {
        sqlx::query(sql::OUTBOX_DELETE)
            .bind(ids)
            .execute(&mut *self.connection)
            .await?;
        self.deleted_since_vacuum += ids.len();
        if self.deleted_since_vacuum >= VACUUM_EVERY {
            sqlx::query("VACUUM outbox")
                .execute(&mut *self.connection)
                .await?;
            self.deleted_since_vacuum = 0;
        }
        Ok(())
    }
}
