//! Read-only lookups: the identity that an input's identifiers belong to, without
//! writing or locking anything.

use super::clusters::{load_clusters, ContactRow};
use super::locks::identifiers;
use super::{Store, StoreError};
use crate::domain::reconcile::identity_of;
use crate::domain::{ContactInput, Identity, StoredContact};
use sqlx::{Postgres, Transaction};

/// The result of a read-only lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Lookup {
    Found(Identity),
    NotFound,
    /// The identifiers belong to several identities (they would be merged by a write).
    Ambiguous(Vec<i64>),
}

impl Store {
    /// Read-only: the identity that the identifiers of `input` belong to.
    ///
    /// One statement (`sql/lookup.sql`) finds the primaries the identifiers hit and,
    /// when there is one, loads its cluster: one snapshot, one round trip, no
    /// transaction. Only when several identities are hit does it take a transaction,
    /// to leave out quarantined identifiers as a write would.
    pub(crate) async fn lookup(&self, input: &ContactInput) -> Result<Lookup, StoreError> {
        let (emails, phones) = identifiers([input]);
        let rows = sqlx::query_file!(
            "src/store/sql/lookup.sql",
            &emails as &[&str],
            &phones as &[&str]
        )
        .fetch_all(&self.pool)
        .await?;
        let hits = rows.first().map(|row| row.hits.clone()).unwrap_or_default();
        match hits[..] {
            [] => Ok(Lookup::NotFound),
            [primary] => {
                let cluster = rows
                    .into_iter()
                    .filter_map(|row| {
                        Some(StoredContact::from(ContactRow {
                            id: row.id?,
                            email: row.email,
                            phone_number: row.phone_number,
                            linked_id: row.linked_id,
                            created_at: row.created_at?,
                            version: row.version?,
                        }))
                    })
                    .collect();
                let identity =
                    identity_of(cluster, primary).map_err(|e| StoreError::Fatal(e.into()))?;
                Ok(Lookup::Found(identity))
            }
            _ => self.lookup_among(&emails, &phones).await,
        }
    }

    /// The lookup of identifiers that hit several identities, in one snapshot: once
    /// quarantined identifiers are left out (§8), they may hit one.
    async fn lookup_among(&self, emails: &[&str], phones: &[&str]) -> Result<Lookup, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query!("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let primaries = hit_primaries(&mut tx, emails, phones).await?;
        let primaries = if primaries.len() > 1 {
            without_quarantined(&mut tx, emails, phones, primaries).await?
        } else {
            primaries
        };
        let lookup = match primaries[..] {
            [] => Lookup::NotFound,
            [primary] => {
                let snapshot = load_clusters(&mut tx, &primaries).await?;
                Lookup::Found(
                    identity_of(snapshot, primary).map_err(|e| StoreError::Fatal(e.into()))?,
                )
            }
            _ => Lookup::Ambiguous(primaries),
        };
        tx.commit().await?;
        Ok(lookup)
    }
}

/// The primaries of the live contacts holding any of the identifiers, ascending.
async fn hit_primaries(
    tx: &mut Transaction<'_, Postgres>,
    emails: &[&str],
    phones: &[&str],
) -> Result<Vec<i64>, StoreError> {
    let mut primaries: Vec<i64> = sqlx::query_file_scalar!(
        "src/store/sql/hit_primaries.sql",
        emails as &[&str],
        phones as &[&str]
    )
    .fetch_all(&mut **tx)
    .await?;
    primaries.sort_unstable();
    primaries.dedup();
    Ok(primaries)
}

/// For a lookup that hit several `primaries`: those its identifiers hit once
/// quarantined ones are left out, or, when all are quarantined, the oldest of them.
async fn without_quarantined(
    tx: &mut Transaction<'_, Postgres>,
    emails: &[&str],
    phones: &[&str],
    primaries: Vec<i64>,
) -> Result<Vec<i64>, StoreError> {
    let quarantined: Vec<(String, String)> = sqlx::query!(
        r#"SELECT kind::text AS "kind!", value FROM quarantine WHERE released_at IS NULL
           AND ((kind = 'e' AND value = ANY($1)) OR (kind = 'p' AND value = ANY($2)))"#,
        emails as &[&str],
        phones as &[&str]
    )
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .map(|row| (row.kind, row.value))
    .collect();
    if quarantined.is_empty() {
        return Ok(primaries);
    }
    let kept = |kind: &str, values: &[&str]| -> Vec<String> {
        values
            .iter()
            .filter(|v| !quarantined.iter().any(|(k, q)| k == kind && q == *v))
            .map(|v| v.to_string())
            .collect()
    };
    let (emails, phones) = (kept("e", emails), kept("p", phones));
    if emails.is_empty() && phones.is_empty() {
        let oldest: Option<i64> = sqlx::query_scalar!(
            "SELECT id FROM contact WHERE id = ANY($1) ORDER BY created_at, id LIMIT 1",
            &primaries
        )
        .fetch_optional(&mut **tx)
        .await?;
        return Ok(oldest.into_iter().collect());
    }
    let emails: Vec<&str> = emails.iter().map(String::as_str).collect();
    let phones: Vec<&str> = phones.iter().map(String::as_str).collect();
    hit_primaries(tx, &emails, &phones).await
}
