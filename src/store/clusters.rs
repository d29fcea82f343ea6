//! Reading clusters: whole clusters by their primaries, and a contact's primary.

use super::admin::AdminError;
use super::StoreError;
use crate::domain::{Email, Phone, StoredContact};
use chrono::{DateTime, Utc};
use sqlx::{Postgres, Transaction};

/// A contact as `load_clusters.sql` returns it.
struct ContactRow {
    id: i64,
    email: Option<String>,
    phone_number: Option<String>,
    linked_id: Option<i64>,
    created_at: DateTime<Utc>,
    version: i64,
}

impl From<ContactRow> for StoredContact {
    fn from(row: ContactRow) -> StoredContact {
        StoredContact {
            id: row.id,
            email: row.email.map(Email::from_stored),
            phone: row.phone_number.map(Phone::from_stored),
            linked_id: row.linked_id,
            created_at: row.created_at,
            version: row.version,
        }
    }
}

/// Every live contact of the clusters of `primaries`.
pub(super) async fn load_clusters(
    tx: &mut Transaction<'_, Postgres>,
    primaries: &[i64],
) -> Result<Vec<StoredContact>, StoreError> {
    let rows = sqlx::query_file_as!(ContactRow, "src/store/sql/load_clusters.sql", primaries)
        .fetch_all(&mut **tx)
        .await?;
    Ok(rows.into_iter().map(StoredContact::from).collect())
}

/// The primary of live contact `id` (itself for a primary).
pub(super) async fn primary_of(
    tx: &mut Transaction<'_, Postgres>,
    id: i64,
) -> Result<i64, AdminError> {
    sqlx::query_scalar!(
        r#"SELECT coalesce(linked_id, id) AS "primary!" FROM contact
           WHERE id = $1 AND deleted_at IS NULL"#,
        id
    )
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| AdminError::NotFound(format!("no live contact has id {id}")))
}
