//! Why an identity's contacts belong together (docs/contract.md §8): for each contact, the
//! input that created it and the earlier contact it shares an email or phone with;
//! for each merge, the input that bridged the two sides and the contacts holding the
//! values it carried; the refused links touching the identity.
//!
//! Origins are recorded per contact from migration `20261201003001` on, in the
//! transaction that inserts the contact; older contacts say `unknown`.

use super::clusters::load_clusters;
use super::clusters::primary_of;
use super::{Review, Store, StoreError};
use crate::domain::vocabulary::{InputSource, Source};
use crate::domain::{Origin, Plan};
use chrono::{DateTime, Utc};
use sqlx::{Postgres, Transaction};
use std::collections::HashMap;

/// Where a contact or a merge came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum InputOrigin {
    Event {
        event_key: String,
        event_id: Option<String>,
    },
    /// `POST /identify`; `request_id` is its `x-request-id` (None for contacts
    /// created before request ids were recorded, and for merges).
    Http { request_id: Option<String> },
    /// An operator's approval of a review entry.
    Admin,
    /// Created before origins were recorded.
    Unknown,
}

/// A value and which field it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Evidence {
    /// The contact holding the value.
    pub(crate) contact_id: i64,
    /// `email` or `phoneNumber`.
    pub(crate) field: &'static str,
    pub(crate) value: String,
}

/// One contact of the identity, oldest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ExplainedContact {
    pub(crate) contact_id: i64,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) origin: InputOrigin,
    /// The oldest earlier contact sharing this one's email (else its phone): the edge
    /// of the evidence tree. None for the primary, and for contacts that joined
    /// through a merge only (see the merges).
    pub(crate) tied_to: Option<Evidence>,
}

/// One merge of the journal that touches the identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ExplainedMerge {
    pub(crate) at: DateTime<Utc>,
    pub(crate) survivor_id: i64,
    pub(crate) absorbed_id: i64,
    pub(crate) origin: InputOrigin,
    /// The values the bridging input carried, with the contacts holding them (empty
    /// for merges journalled before this was recorded, and for approved reviews).
    pub(crate) via: Vec<Evidence>,
    pub(crate) undone_at: Option<DateTime<Utc>>,
}

/// A split journalled for the identity: a quarantined identifier was all that linked
/// `primary_id` and `moved_contact_ids` to the identity of `from_primary_id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ExplainedSplit {
    pub(crate) at: DateTime<Utc>,
    pub(crate) from_primary_id: i64,
    pub(crate) primary_id: i64,
    pub(crate) moved_contact_ids: Vec<i64>,
    pub(crate) quarantine_id: Option<i64>,
}

/// The whole explanation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Explanation {
    pub(crate) primary_id: i64,
    pub(crate) contacts: Vec<ExplainedContact>,
    pub(crate) merges: Vec<ExplainedMerge>,
    pub(crate) splits: Vec<ExplainedSplit>,
    pub(crate) refused: Vec<Review>,
}

/// Records the input that created each new contact of `plan` (`origins[i]` is the
/// origin of the plan's input `i`).
pub(super) async fn record_origins(
    tx: &mut Transaction<'_, Postgres>,
    plan: &Plan,
    new_ids: &[i64],
    origins: &[&Origin],
) -> Result<(), StoreError> {
    if plan.inserts.is_empty() {
        return Ok(());
    }
    let mut sources = Vec::with_capacity(new_ids.len());
    let mut keys = Vec::with_capacity(new_ids.len());
    let mut event_ids = Vec::with_capacity(new_ids.len());
    let mut request_ids = Vec::with_capacity(new_ids.len());
    for contact in &plan.inserts {
        sources.push(InputSource::of(origins[contact.input]).as_str());
        match origins[contact.input] {
            Origin::Event {
                ledger_key,
                event_id,
                ..
            } => {
                keys.push(Some(ledger_key.as_str()));
                event_ids.push(event_id.as_deref());
                request_ids.push(None);
            }
            Origin::Http { request_id } => {
                keys.push(None);
                event_ids.push(None);
                request_ids.push(request_id.as_deref());
            }
            Origin::Admin { .. } => {
                keys.push(None);
                event_ids.push(None);
                request_ids.push(None);
            }
        }
    }
    sqlx::query(
        "INSERT INTO contact_origin (contact_id, source, event_key, event_id, request_id) \
         SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[])",
    )
    .bind(new_ids)
    .bind(&sources)
    .bind(&keys)
    .bind(&event_ids)
    .bind(&request_ids)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

fn origin_of(
    source: Source,
    key: Option<String>,
    event_id: Option<String>,
    request_id: Option<String>,
) -> InputOrigin {
    match (source, key) {
        (Source::Event, Some(event_key)) => InputOrigin::Event {
            event_key,
            event_id,
        },
        (Source::Http, _) => InputOrigin::Http { request_id },
        (Source::Admin, _) => InputOrigin::Admin,
        // A quarantine journals splits only, and an event always has its key.
        (Source::Event, None) | (Source::Quarantine, _) => InputOrigin::Unknown,
    }
}

impl Store {
    /// The explanation of the identity contact `id` belongs to.
    pub async fn explain(&self, id: i64) -> Result<Explanation, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query!("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let primary = primary_of(&mut tx, id).await?;
        let mut cluster = load_clusters(&mut tx, &[primary]).await?;
        cluster.sort_by_key(|c| (c.created_at, c.id));
        let ids: Vec<i64> = cluster.iter().map(|c| c.id).collect();
        let origins: HashMap<i64, InputOrigin> = sqlx::query!(
            r#"SELECT contact_id, source AS "source: InputSource", event_key, event_id, request_id
               FROM contact_origin WHERE contact_id = ANY($1)"#,
            &ids
        )
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|row| {
            let origin = origin_of(
                row.source.into(),
                row.event_key,
                row.event_id,
                row.request_id,
            );
            (row.contact_id, origin)
        })
        .collect();
        // A merge always has an absorbed primary (only a bridge has none).
        let merge_rows = sqlx::query!(
            r#"SELECT primary_id, absorbed_id AS "absorbed_id!", via_ids, event_key,
                 source AS "source: Source", created_at, undone_at
               FROM merge_journal WHERE kind = 'merge'
                 AND (primary_id = ANY($1) OR absorbed_id = ANY($1)) ORDER BY id"#,
            &ids
        )
        .fetch_all(&mut *tx)
        .await?;
        let via_ids: Vec<i64> = merge_rows
            .iter()
            .filter_map(|r| r.via_ids.as_deref())
            .flatten()
            .copied()
            .collect();
        let holders: HashMap<i64, (Option<String>, Option<String>)> = sqlx::query!(
            "SELECT id, email, phone_number FROM contact WHERE id = ANY($1)",
            &via_ids
        )
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|row| (row.id, (row.email, row.phone_number)))
        .collect();
        // A split's new identity is its absorbed_id (never null for a split).
        let splits = sqlx::query_as!(
            ExplainedSplit,
            r#"SELECT created_at AS at, primary_id AS from_primary_id,
                 absorbed_id AS "primary_id!", contact_ids AS moved_contact_ids, quarantine_id
               FROM merge_journal WHERE kind = 'split'
                 AND (primary_id = ANY($1) OR absorbed_id = ANY($1)) ORDER BY id"#,
            &ids
        )
        .fetch_all(&mut *tx)
        .await?;
        let refused = super::reviews::reviews_touching(&mut tx, &ids).await?;
        tx.commit().await?;

        let contacts = cluster
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let earlier = &cluster[..i];
                let by_email = c.email.as_ref().and_then(|e| {
                    earlier
                        .iter()
                        .find(|d| d.email.as_ref() == Some(e))
                        .map(|d| Evidence {
                            contact_id: d.id,
                            field: "email",
                            value: e.as_str().to_owned(),
                        })
                });
                let by_phone = || {
                    c.phone.as_ref().and_then(|p| {
                        earlier
                            .iter()
                            .find(|d| d.phone.as_ref() == Some(p))
                            .map(|d| Evidence {
                                contact_id: d.id,
                                field: "phoneNumber",
                                value: p.as_str().to_owned(),
                            })
                    })
                };
                ExplainedContact {
                    contact_id: c.id,
                    created_at: c.created_at,
                    origin: origins.get(&c.id).cloned().unwrap_or(InputOrigin::Unknown),
                    tied_to: by_email.or_else(by_phone),
                }
            })
            .collect();
        let mut merges = Vec::with_capacity(merge_rows.len());
        for row in merge_rows {
            let via = row.via_ids.unwrap_or_default();
            // The first holder carried the input's email, the second its phone (a
            // merging input carries both: one value of each side).
            let evidence = via
                .iter()
                .zip(["email", "phoneNumber"])
                .filter_map(|(id, field)| {
                    let (email, phone) = holders.get(id)?;
                    let value = if field == "email" { email } else { phone };
                    value.clone().map(|value| Evidence {
                        contact_id: *id,
                        field,
                        value,
                    })
                })
                .collect();
            merges.push(ExplainedMerge {
                at: row.created_at,
                survivor_id: row.primary_id,
                absorbed_id: row.absorbed_id,
                origin: origin_of(row.source, row.event_key, None, None),
                via: evidence,
                undone_at: row.undone_at,
            });
        }
        Ok(Explanation {
            primary_id: primary,
            contacts,
            merges,
            splits,
            refused,
        })
    }
}
