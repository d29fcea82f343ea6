//! The review queue (docs/contract.md §8): links refused by a cap, by a keep-apart decision
//! or because an identifier was quarantined, pending until an operator approves or
//! rejects them.
//!
//! - Approving a refused merge makes it now, as reconciliation would have (the older
//!   primary survives), past any cap and any keep-apart decision between the two
//!   clusters, which it removes. It is journalled (source [`Source::Admin`], so it
//!   can be undone), both keys are published through the outbox and versions are bumped.
//!   The transaction takes the two primaries' locks in id order, as reconciliation
//!   does; contacts only join a cluster here, so no identifier lock is needed.
//! - Approving a quarantine releases the identifier: it links again, and its
//!   counterparts are counted afresh (under its identifier lock, as counting is).
//! - Rejecting keeps apart for good: a final keep-apart decision between the two
//!   clusters, whose later refusals are not queued again. A rejected quarantine
//!   stays quarantined.

use super::clusters::load_clusters;
use super::locks::{lock_identifiers, lock_primaries_of};
use super::outbox::publish_identity;
use super::retry::retrying;
use super::suppression::suppression_hash;
use super::{Store, StoreError};
use crate::domain::identity::merge_record;
use crate::domain::vocabulary::{DecisionSource, InputSource, ReviewReason, ReviewStatus, Source};
use crate::domain::{ContactInput, Email, Identity, Origin, Phone};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{Postgres, Transaction};
use utoipa::openapi::schema::{Object, ObjectBuilder, Type};
use utoipa::ToSchema;

/// A quarantined identifier, in a review entry. Its value is shown: only admins list
/// the queue, and they cannot judge an identifier they cannot see.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Quarantined {
    #[schema(schema_with = identifier_field)]
    pub(crate) field: &'static str,
    /// The identifier as stored (normalised).
    pub(crate) value: String,
    /// Distinct counterparts it had been seen with when quarantined.
    pub(crate) counterparts: i32,
    #[schema(required = true)]
    pub(crate) released_at: Option<DateTime<Utc>>,
}

/// One entry of the review queue. Holds no email or phone, except the quarantined
/// identifier itself (only admins list the queue).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct Review {
    #[schema(minimum = 1)]
    pub(crate) id: i64,
    pub(crate) reason: ReviewReason,
    pub(crate) status: ReviewStatus,
    /// The identity the refused input was answered as (its primary then); null for a
    /// quarantine.
    #[schema(required = true)]
    pub(crate) primary_contact_id: Option<i64>,
    /// The identity whose merge was refused (its primary then); null for a refused new
    /// secondary and for a quarantine.
    #[schema(required = true)]
    pub(crate) other_primary_contact_id: Option<i64>,
    /// The refused input's idempotency key; null for an HTTP request.
    #[schema(required = true)]
    pub(crate) event_key: Option<String>,
    pub(crate) source: InputSource,
    pub(crate) created_at: DateTime<Utc>,
    #[schema(required = true)]
    pub(crate) decided_at: Option<DateTime<Utc>>,
    #[schema(required = true)]
    pub(crate) quarantine: Option<Quarantined>,
}

/// A page of pending entries, oldest first.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReviewPage {
    pub(crate) reviews: Vec<Review>,
    /// Pass as `after` for the next page; null on the last page.
    #[schema(required = true)]
    pub(crate) next_cursor: Option<i64>,
}

/// `email` or `phoneNumber`: which identifier a value is.
pub(crate) fn identifier_field() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(["email", "phoneNumber"]))
        .build()
}

/// What approving or rejecting did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReviewDecision {
    pub(crate) review: Review,
    /// The merged identity, after an approved merge.
    pub(crate) identity: Option<Identity>,
}

/// Pending entries of one reason: how many, and the age of the oldest.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct QueueStats {
    pub(crate) reason: String,
    pub(crate) pending: i64,
    pub(crate) oldest_age_seconds: f64,
}

/// A review entry as selected (with its quarantine, if any).
struct ReviewRow {
    id: i64,
    reason: ReviewReason,
    status: ReviewStatus,
    primary_id: Option<i64>,
    other_primary_id: Option<i64>,
    event_key: Option<String>,
    source: InputSource,
    created_at: DateTime<Utc>,
    decided_at: Option<DateTime<Utc>>,
    kind: Option<String>,
    value: Option<String>,
    counterparts: Option<i32>,
    released_at: Option<DateTime<Utc>>,
    quarantine_id: Option<i64>,
}

impl From<ReviewRow> for Review {
    fn from(row: ReviewRow) -> Review {
        let quarantine = match (row.kind, row.value) {
            (Some(kind), Some(value)) => Some(Quarantined {
                field: if kind == "e" { "email" } else { "phoneNumber" },
                value,
                counterparts: row.counterparts.unwrap_or(0),
                released_at: row.released_at,
            }),
            _ => None,
        };
        Review {
            id: row.id,
            reason: row.reason,
            status: row.status,
            primary_contact_id: row.primary_id,
            other_primary_contact_id: row.other_primary_id,
            event_key: row.event_key,
            source: row.source,
            created_at: row.created_at,
            decided_at: row.decided_at,
            quarantine,
        }
    }
}

/// Review entry `id`, locked for the rest of the transaction.
async fn review_for_update(
    tx: &mut Transaction<'_, Postgres>,
    id: i64,
) -> Result<Option<ReviewRow>, sqlx::Error> {
    sqlx::query_as!(
        ReviewRow,
        r#"SELECT r.id, r.reason AS "reason: ReviewReason",
             r.status AS "status: ReviewStatus", r.primary_id, r.other_primary_id,
             r.event_key, r.source AS "source: InputSource", r.created_at, r.decided_at,
             q.kind AS "kind?", q.value AS "value?", q.counterparts AS "counterparts?",
             q.released_at AS "released_at?", r.quarantine_id
           FROM link_review r LEFT JOIN quarantine q ON q.id = r.quarantine_id
           WHERE r.id = $1 FOR UPDATE OF r"#,
        id
    )
    .fetch_optional(&mut **tx)
    .await
}

/// Every review entry, pending or decided, naming one of the primaries `ids`, in id
/// order.
pub(super) async fn reviews_touching(
    tx: &mut Transaction<'_, Postgres>,
    ids: &[i64],
) -> Result<Vec<Review>, sqlx::Error> {
    let rows = sqlx::query_as!(
        ReviewRow,
        r#"SELECT r.id, r.reason AS "reason: ReviewReason",
             r.status AS "status: ReviewStatus", r.primary_id, r.other_primary_id,
             r.event_key, r.source AS "source: InputSource", r.created_at, r.decided_at,
             q.kind AS "kind?", q.value AS "value?", q.counterparts AS "counterparts?",
             q.released_at AS "released_at?", r.quarantine_id
           FROM link_review r LEFT JOIN quarantine q ON q.id = r.quarantine_id
           WHERE r.primary_id = ANY($1) OR r.other_primary_id = ANY($1) ORDER BY r.id"#,
        ids
    )
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows.into_iter().map(Review::from).collect())
}

impl Store {
    /// Pending entries with ids above `after`, oldest first, at most `limit`, of one
    /// `reason` if given.
    pub async fn reviews(
        &self,
        reason: Option<ReviewReason>,
        after: i64,
        limit: i64,
    ) -> Result<ReviewPage, StoreError> {
        let rows = sqlx::query_as!(
            ReviewRow,
            r#"SELECT r.id, r.reason AS "reason: ReviewReason",
                 r.status AS "status: ReviewStatus", r.primary_id, r.other_primary_id,
                 r.event_key, r.source AS "source: InputSource", r.created_at, r.decided_at,
                 q.kind AS "kind?", q.value AS "value?", q.counterparts AS "counterparts?",
                 q.released_at AS "released_at?", r.quarantine_id
               FROM link_review r LEFT JOIN quarantine q ON q.id = r.quarantine_id
               WHERE r.status = 'pending' AND r.id > $1 AND ($2::text IS NULL OR r.reason = $2)
               ORDER BY r.id LIMIT $3"#,
            after,
            reason.map(ReviewReason::as_str),
            limit + 1
        )
        .fetch_all(&self.pool)
        .await?;
        let mut reviews: Vec<Review> = rows.into_iter().map(Review::from).collect();
        let next_cursor = if reviews.len() as i64 > limit {
            reviews.truncate(limit as usize);
            reviews.last().map(|r| r.id)
        } else {
            None
        };
        Ok(ReviewPage {
            reviews,
            next_cursor,
        })
    }

    /// Pending entries by reason, for the queue's metrics.
    pub(crate) async fn review_queue_stats(&self) -> Result<Vec<QueueStats>, StoreError> {
        Ok(sqlx::query_as!(
            QueueStats,
            r#"SELECT reason, count(*) AS "pending!",
                 extract(epoch FROM now() - min(created_at))::float8 AS "oldest_age_seconds!"
               FROM link_review WHERE status = 'pending' GROUP BY reason"#
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Approves entry `id`: makes the refused merge, or releases the quarantined
    /// identifier. A refused growth cannot be approved (its values are not kept).
    pub async fn approve_review(&self, id: i64) -> Result<ReviewDecision, StoreError> {
        let salt = self.suppression_salt().await?.to_owned();
        retrying(|| self.decide_once(id, true, &salt)).await
    }

    /// Rejects entry `id`: the two identities are kept apart for good (a quarantined
    /// identifier stays quarantined).
    pub async fn reject_review(&self, id: i64) -> Result<ReviewDecision, StoreError> {
        let salt = self.suppression_salt().await?.to_owned();
        retrying(|| self.decide_once(id, false, &salt)).await
    }

    async fn decide_once(
        &self,
        id: i64,
        approve: bool,
        salt: &str,
    ) -> Result<ReviewDecision, StoreError> {
        let mut tx = self.pool.begin().await?;
        let row = review_for_update(&mut tx, id)
            .await?
            .ok_or_else(|| StoreError::NotFound(format!("no review entry has id {id}")))?;
        let quarantine_id = row.quarantine_id;
        let entry = Review::from(row);
        if entry.status != ReviewStatus::Pending {
            return Err(StoreError::Refused(format!(
                "review {id} was already {}",
                entry.status
            )));
        }
        let mut identity = None;
        match (
            &entry.quarantine,
            entry.primary_contact_id,
            entry.other_primary_contact_id,
        ) {
            (Some(quarantined), _, _) => {
                if approve {
                    release(&mut tx, salt, quarantined, quarantine_id).await?;
                }
            }
            (None, Some(a), Some(b)) => {
                if approve {
                    identity = Some(merge_now(&mut tx, a, b).await?);
                } else {
                    super::decisions::keep_apart(&mut tx, a, b, true, DecisionSource::Review)
                        .await?;
                }
            }
            (None, _, _) => {
                if approve {
                    return Err(StoreError::Refused(format!(
                        "review {id} is a refused new secondary: its email and phone were not kept, so there is nothing to add; raise the cap and send the input again, or reject the entry"
                    )));
                }
            }
        }
        let status = if approve {
            ReviewStatus::Approved
        } else {
            ReviewStatus::Rejected
        };
        sqlx::query!(
            "UPDATE link_review SET status = $2, decided_at = clock_timestamp() WHERE id = $1",
            id,
            status.as_str()
        )
        .execute(&mut *tx)
        .await?;
        let review = review_for_update(&mut tx, id)
            .await?
            .map(Review::from)
            .ok_or_else(|| StoreError::NotFound(format!("no review entry has id {id}")))?;
        tx.commit().await?;
        Ok(ReviewDecision { review, identity })
    }
}

/// Ends a quarantine: the identifier links again and its counterparts count afresh.
async fn release(
    tx: &mut Transaction<'_, Postgres>,
    salt: &str,
    quarantined: &Quarantined,
    quarantine_id: Option<i64>,
) -> Result<(), StoreError> {
    let (kind, email, phone) = match quarantined.field {
        "email" => (
            'e',
            Some(Email::from_stored(quarantined.value.clone())),
            None,
        ),
        _ => (
            'p',
            None,
            Some(Phone::from_stored(quarantined.value.clone())),
        ),
    };
    if let Ok(input) = ContactInput::new(email, phone) {
        lock_identifiers(tx, &[&input]).await?;
    }
    // Both directions of its pairs: the counterparts' own counts lose it too, and an
    // erasure can then find every pair of an identifier from its own side.
    let hash = suppression_hash(salt, kind, &quarantined.value);
    sqlx::query!(
        "WITH q AS (UPDATE quarantine SET released_at = clock_timestamp() \
           WHERE id = $1 AND released_at IS NULL), \
         gone AS (DELETE FROM counterpart WHERE identifier = $2 RETURNING other) \
         DELETE FROM counterpart WHERE identifier IN (SELECT other FROM gone) AND other = $2 \
           AND identifier <> $2",
        quarantine_id,
        hash,
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Merges the identities that contacts `a` and `b` belong to now, as reconciliation
/// would have: the older primary survives. Returns the merged identity.
async fn merge_now(
    tx: &mut Transaction<'_, Postgres>,
    a: i64,
    b: i64,
) -> Result<Identity, StoreError> {
    let (pa, pb) = lock_primaries_of(tx, a, b).await?;
    let origin = Origin::Admin { action: "review" };
    if pa == pb {
        // Joined meanwhile (another approval, or an unmerge undone by a merge).
        let cluster = load_clusters(tx, &[pa]).await?;
        return crate::domain::identity_of(cluster, pa).map_err(|e| StoreError::Fatal(e.into()));
    }
    let clusters = load_clusters(tx, &[pa, pb]).await?;
    let age = |p: i64| {
        clusters
            .iter()
            .find(|c| c.id == p)
            .map(|c| (c.created_at, c.id))
    };
    let (survivor, absorbed) = if age(pa) <= age(pb) {
        (pa, pb)
    } else {
        (pb, pa)
    };
    let side = |p: i64| -> Vec<i64> {
        clusters
            .iter()
            .filter(|c| c.id == p || c.linked_id == Some(p))
            .map(|c| c.id)
            .collect()
    };
    let (survivors, absorbed_side) = (side(survivor), side(absorbed));
    let moved: Vec<i64> = absorbed_side
        .iter()
        .copied()
        .filter(|&c| c != absorbed)
        .collect();
    let watermark = clusters.iter().map(|c| c.id).max().unwrap_or(absorbed);
    let version = sqlx::query_scalar!(
        "WITH d AS (DELETE FROM keep_apart WHERE (contact_a = ANY($3) AND contact_b = ANY($4)) \
               OR (contact_a = ANY($4) AND contact_b = ANY($3))), \
             m AS (UPDATE contact SET linked_id = $1, updated_at = clock_timestamp() WHERE id = ANY($5)), \
             j AS (INSERT INTO merge_journal (kind, primary_id, absorbed_id, contact_ids, watermark_id, source) \
               VALUES ('merge', $1, $2, $5, $6, $7)) \
         UPDATE contact SET linked_id = $1, link_precedence = 'secondary', \
             version = version + 1, updated_at = clock_timestamp() WHERE id = $2 RETURNING version",
        survivor,
        absorbed,
        &survivors,
        &absorbed_side,
        &moved,
        watermark,
        Source::Admin.as_str(),
    )
    .fetch_one(&mut **tx)
    .await?;
    let record = merge_record(absorbed, survivor, version, &origin);
    sqlx::query("INSERT INTO outbox (key, payload) VALUES ($1, $2)")
        .bind(absorbed.to_string())
        .bind(record.to_string())
        .execute(&mut **tx)
        .await?;
    publish_identity(tx, survivor, &origin).await
}
