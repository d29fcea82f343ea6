//! Reading clusters: whole clusters by their primaries, a contact's primary, and the
//! primary of the identity an operator's target names.

use super::StoreError;
use crate::domain::{Email, Phone, StoredContact};
use chrono::{DateTime, Utc};
use sqlx::{Postgres, Transaction};

/// Whom to erase (or, by id, whose merge to undo): a contact, or the identity holding
/// an identifier.
#[derive(Clone, Debug)]
pub enum ForgetTarget {
    Email(Email),
    Phone(Phone),
    Id(i64),
}

/// A contact as `load_clusters.sql` and `lookup.sql` return it.
pub(super) struct ContactRow {
    pub(super) id: i64,
    pub(super) email: Option<String>,
    pub(super) phone_number: Option<String>,
    pub(super) linked_id: Option<i64>,
    pub(super) created_at: DateTime<Utc>,
    pub(super) version: i64,
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
) -> Result<i64, StoreError> {
    sqlx::query_scalar!(
        r#"SELECT coalesce(linked_id, id) AS "primary!" FROM contact
           WHERE id = $1 AND deleted_at IS NULL"#,
        id
    )
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| StoreError::NotFound(format!("no live contact has id {id}")))
}

/// The primary of the identity `target` belongs to, as the statement sees it.
pub(super) async fn primary_of_target(
    tx: &mut Transaction<'_, Postgres>,
    target: &ForgetTarget,
) -> Result<i64, StoreError> {
    let (emails, phones): (Vec<&str>, Vec<&str>) = match target {
        ForgetTarget::Id(id) => return primary_of(tx, *id).await,
        ForgetTarget::Email(e) => (vec![e.as_str()], vec![]),
        ForgetTarget::Phone(p) => (vec![], vec![p.as_str()]),
    };
    sqlx::query_file_scalar!(
        "src/store/sql/hit_primaries.sql",
        &emails as &[&str],
        &phones as &[&str]
    )
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| StoreError::NotFound("no live contact has this identifier".into()))
}
