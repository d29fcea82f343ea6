//! Reading clusters: whole clusters by their primaries, and a contact's primary.

use super::admin::AdminError;
use super::{sql, StoreError};
use crate::domain::{Email, Phone, StoredContact};
use sqlx::{Postgres, Row, Transaction};

fn stored_contact(row: sqlx::postgres::PgRow) -> Result<StoredContact, sqlx::Error> {
    Ok(StoredContact {
        id: row.try_get("id")?,
        email: row
            .try_get::<Option<String>, _>("email")?
            .map(Email::from_stored),
        phone: row
            .try_get::<Option<String>, _>("phone_number")?
            .map(Phone::from_stored),
        linked_id: row.try_get("linked_id")?,
        created_at: row.try_get("created_at")?,
        version: row.try_get("version")?,
    })
}

/// Every live contact of the clusters of `primaries`.
pub(super) async fn load_clusters(
    tx: &mut Transaction<'_, Postgres>,
    primaries: &[i64],
) -> Result<Vec<StoredContact>, StoreError> {
    let rows = sqlx::query(sql::LOAD_CLUSTERS)
        .bind(primaries)
        .fetch_all(&mut **tx)
        .await?;
    Ok(rows
        .into_iter()
        .map(stored_contact)
        .collect::<Result<_, _>>()?)
}

/// The primary of live contact `id` (itself for a primary).
pub(super) async fn primary_of(
    tx: &mut Transaction<'_, Postgres>,
    id: i64,
) -> Result<i64, AdminError> {
    sqlx::query_scalar(
        "SELECT coalesce(linked_id, id) FROM contact WHERE id = $1 AND deleted_at IS NULL",
    )
    .bind(id)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| AdminError::NotFound(format!("no live contact has id {id}")))
}
