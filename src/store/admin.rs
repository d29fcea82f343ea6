//! Operators' actions: an identity's history, undoing a merge, erasure.
//!
//! Each runs in one transaction and takes the locks of `locks.rs` in its one order (an
//! undo and an erasure: every identifier of the identity, then its primary), so it is
//! safe next to a running worker; records it publishes go through the outbox like any
//! other.

use super::clusters::{load_clusters, primary_of, ForgetTarget};
use super::locks::{lock_identity, IdentifierValue};
use super::outbox::publish_identity;
use super::retry::retrying;
use super::suppression::suppression_hash;
use super::{Store, StoreError};
use crate::domain::split::{absorbed_side, RecordedMerge, Tied};
use crate::domain::vocabulary::{DecisionSource, JournalKind, Source};
use crate::domain::{Identity, Origin};
use crate::metrics::METRICS;
use chrono::{DateTime, Utc};
use sqlx::{Postgres, Transaction};
use std::collections::BTreeSet;

/// The two identities after an undone merge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unmerged {
    pub(crate) restored: Identity,
    pub(crate) survivor: Identity,
}

/// An erased identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Forgotten {
    pub primary_id: i64,
    pub contact_ids: Vec<i64>,
}

/// One line of an identity's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum HistoryEntry {
    /// A contact was created (the identity's first, or a secondary it brought).
    Added { at: DateTime<Utc>, contact_id: i64 },
    Merged {
        at: DateTime<Utc>,
        survivor_id: i64,
        absorbed_id: i64,
        moved_contact_ids: Vec<i64>,
        /// The event's idempotency key; `None` for an HTTP request.
        event_key: Option<String>,
        source: Source,
    },
    Unmerged {
        at: DateTime<Utc>,
        survivor_id: i64,
        absorbed_id: i64,
    },
    /// A quarantined identifier was all that linked `primary_id` (and
    /// `moved_contact_ids`, its secondaries now) to the identity of `from_primary_id`:
    /// they became an identity of their own.
    Split {
        at: DateTime<Utc>,
        from_primary_id: i64,
        primary_id: i64,
        moved_contact_ids: Vec<i64>,
        quarantine_id: Option<i64>,
    },
}

impl HistoryEntry {
    pub(crate) fn at(&self) -> DateTime<Utc> {
        match self {
            HistoryEntry::Added { at, .. }
            | HistoryEntry::Merged { at, .. }
            | HistoryEntry::Unmerged { at, .. }
            | HistoryEntry::Split { at, .. } => *at,
        }
    }
}

/// An identity's merges and additions, oldest first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct History {
    pub(crate) primary_id: i64,
    pub(crate) entries: Vec<HistoryEntry>,
}

/// A merge entry of the journal, not undone.
struct JournalMerge {
    id: i64,
    survivor: i64,
    moved: Vec<i64>,
    watermark: i64,
}

impl Store {
    /// The history of the identity that contact `id` belongs to.
    pub async fn history(&self, id: i64) -> Result<History, StoreError> {
        let mut tx = self.pool.begin().await?;
        sqlx::query!("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let primary = primary_of(&mut tx, id).await?;
        let cluster = load_clusters(&mut tx, &[primary]).await?;
        let ids: Vec<i64> = cluster.iter().map(|c| c.id).collect();
        // A merge or a split always has an absorbed id (only a bridge has none).
        let rows = sqlx::query!(
            r#"SELECT kind AS "kind: JournalKind", primary_id, absorbed_id AS "absorbed_id!",
                      contact_ids, event_key, source AS "source: Source", created_at, undone_at, quarantine_id
               FROM merge_journal WHERE kind IN ('merge', 'split')
               AND (primary_id = ANY($1) OR absorbed_id = ANY($1)) ORDER BY id"#,
            &ids,
        )
        .fetch_all(&mut *tx)
        .await?;
        tx.commit().await?;
        let mut entries: Vec<HistoryEntry> = cluster
            .iter()
            .map(|c| HistoryEntry::Added {
                at: c.created_at,
                contact_id: c.id,
            })
            .collect();
        for row in rows {
            let (survivor_id, absorbed_id) = (row.primary_id, row.absorbed_id);
            if row.kind == JournalKind::Split {
                entries.push(HistoryEntry::Split {
                    at: row.created_at,
                    from_primary_id: survivor_id,
                    primary_id: absorbed_id,
                    moved_contact_ids: row.contact_ids,
                    quarantine_id: row.quarantine_id,
                });
                continue;
            }
            entries.push(HistoryEntry::Merged {
                at: row.created_at,
                survivor_id,
                absorbed_id,
                moved_contact_ids: row.contact_ids,
                event_key: row.event_key,
                source: row.source,
            });
            if let Some(at) = row.undone_at {
                entries.push(HistoryEntry::Unmerged {
                    at,
                    survivor_id,
                    absorbed_id,
                });
            }
        }
        entries.sort_by_key(HistoryEntry::at);
        Ok(History {
            primary_id: primary,
            entries,
        })
    }

    /// Undoes the merge that absorbed the primary `absorbed`: it becomes a primary
    /// again, with its former secondaries and the contacts that joined through them
    /// since. Publishes both identities. Refuses, changing nothing, when that would
    /// mean guessing (see [`crate::domain::split`]).
    pub async fn unmerge(&self, absorbed: i64) -> Result<Unmerged, StoreError> {
        let unmerged = retrying(|| self.unmerge_once(absorbed)).await?;
        METRICS.unmerges.inc();
        Ok(unmerged)
    }

    async fn unmerge_once(&self, absorbed: i64) -> Result<Unmerged, StoreError> {
        let mut tx = self.pool.begin().await?;
        // The identifiers too, not only the primary: contacts are about to move
        // between clusters (see `lock_identity`).
        let (survivor, cluster, _) = lock_identity(&mut tx, &ForgetTarget::Id(absorbed)).await?;
        if survivor == absorbed {
            return Err(StoreError::Refused(format!(
                "contact {absorbed} is a primary: it is not merged into another identity"
            )));
        }
        // A merge always records its watermark (only a bridge or a split has none).
        let merge = sqlx::query_as!(
            JournalMerge,
            r#"SELECT id, primary_id AS survivor, contact_ids AS moved,
                      watermark_id AS "watermark!"
               FROM merge_journal
               WHERE kind = 'merge' AND absorbed_id = $1 AND undone_at IS NULL
               ORDER BY id DESC LIMIT 1"#,
            absorbed,
        )
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| {
            StoreError::Refused(format!(
                "contact {absorbed} joined identity {survivor} as a secondary, not through a merge: there is no merge to undo"
            ))
        })?;
        let ids: Vec<i64> = cluster.iter().map(|c| c.id).collect();
        let later: Option<i64> = sqlx::query_scalar!(
            r#"SELECT absorbed_id AS "absorbed_id!" FROM merge_journal
               WHERE kind = 'merge' AND id > $1 AND undone_at IS NULL AND absorbed_id = ANY($2)
               ORDER BY id DESC LIMIT 1"#,
            merge.id,
            &ids,
        )
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(later) = later {
            return Err(StoreError::Refused(format!(
                "identity {survivor} absorbed identity {later} after this merge; undo that merge first (merges are undone newest first)"
            )));
        }
        if merge.survivor != survivor {
            return Err(StoreError::Refused(format!(
                "contact {absorbed} was merged into {}, which is now part of identity {survivor}; undo that merge first",
                merge.survivor
            )));
        }
        let bridges: Vec<(i64, i64)> = sqlx::query_scalar!(
            "SELECT contact_ids FROM merge_journal WHERE kind = 'bridge' AND id > $1 \
             AND contact_ids && $2 ORDER BY id",
            merge.id,
            &ids,
        )
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .filter_map(|pair| match pair[..] {
            [a, b] => Some((a, b)),
            _ => None,
        })
        .collect();
        let side = absorbed_side(
            &cluster,
            &RecordedMerge {
                survivor,
                absorbed,
                moved: &merge.moved,
                watermark: merge.watermark,
                bridges: &bridges,
            },
        )
        .map_err(|Tied { contacts }| {
            StoreError::Refused(format!(
                "cannot undo the merge of {absorbed} into {survivor}: since the merge, inputs used identifiers of both sides together (contacts {contacts:?}); without the merge they would have merged the two identities anyway"
            ))
        })?;
        let moved: Vec<i64> = side.iter().copied().filter(|&id| id != absorbed).collect();
        sqlx::query!(
            "WITH restored AS (UPDATE contact SET linked_id = NULL, link_precedence = 'primary', \
                 updated_at = clock_timestamp() WHERE id = $1), \
             moved AS (UPDATE contact SET linked_id = $1, updated_at = clock_timestamp() WHERE id = ANY($2)) \
             UPDATE merge_journal SET undone_at = clock_timestamp() WHERE id = $3",
            absorbed,
            &moved,
            merge.id,
        )
        .execute(&mut *tx)
        .await?;
        // The two sides are distinct people: an input that would join them again is
        // refused and queued for review (docs/contract.md §8).
        super::decisions::keep_apart(&mut tx, absorbed, survivor, false, DecisionSource::Unmerge)
            .await?;
        let origin = Origin::Admin { action: "unmerge" };
        let restored = publish_identity(&mut tx, absorbed, &origin).await?;
        let survivor = publish_identity(&mut tx, survivor, &origin).await?;
        tx.commit().await?;
        Ok(Unmerged { restored, survivor })
    }

    /// Erases the identity `target` belongs to: every contact's email and phone are
    /// removed and the contacts soft-deleted; salted hashes of the identifiers join the
    /// suppression list; pending outbox records of the identity are dropped and a
    /// tombstone is published for every key it was published under; quarantines,
    /// review entries, counterpart pairs, other pending records and dead letters
    /// holding an erased value go too (see [`erase_traces`]).
    pub async fn forget(&self, target: &ForgetTarget) -> Result<Forgotten, StoreError> {
        let salt = self.suppression_salt().await?.to_owned();
        let forgotten = retrying(|| self.forget_once(target, &salt)).await?;
        METRICS.erasures.inc();
        Ok(forgotten)
    }

    async fn forget_once(
        &self,
        target: &ForgetTarget,
        salt: &str,
    ) -> Result<Forgotten, StoreError> {
        let mut tx = self.pool.begin().await?;
        let (primary, cluster, locked) = lock_identity(&mut tx, target).await?;
        let ids: Vec<i64> = cluster.iter().map(|c| c.id).collect();
        let hashes: Vec<Vec<u8>> = locked
            .iter()
            .map(|(kind, value)| suppression_hash(salt, *kind, value))
            .collect();
        // Every key records were published under: ids that were ever a primary.
        let keys: Vec<String> = cluster
            .iter()
            .filter(|c| c.version > 0 || c.id == primary)
            .map(|c| c.id.to_string())
            .collect();
        let all_keys: Vec<String> = ids.iter().map(i64::to_string).collect();
        sqlx::query!(
            "WITH s AS (INSERT INTO suppression (hash) SELECT unnest($1::bytea[]) ON CONFLICT DO NOTHING), \
             c AS (UPDATE contact SET email = NULL, phone_number = NULL, \
                   deleted_at = clock_timestamp(), updated_at = clock_timestamp() WHERE id = ANY($2)), \
             d AS (DELETE FROM outbox WHERE key = ANY($3)) \
             INSERT INTO outbox (key, payload) SELECT unnest($4::text[]), NULL",
            &hashes,
            &ids,
            &all_keys,
            &keys,
        )
        .execute(&mut *tx)
        .await?;
        erase_traces(&mut tx, &ids, &locked, &hashes).await?;
        tx.commit().await?;
        let mut contact_ids = ids;
        contact_ids.sort_unstable();
        Ok(Forgotten {
            primary_id: primary,
            contact_ids,
        })
    }
}

/// Removes what else holds the erased identifiers (`values`, whose salted hashes are
/// `hashes`) or names the erased contacts `ids`, besides the contacts themselves:
/// - quarantines of an erased identifier, with their review entries (the
///   suppression supersedes them: inputs carrying it are dropped whole), and the
///   review entries naming an erased contact on either side (nothing is left to
///   decide about a person who is gone);
/// - counterpart pairs of an erased identifier, both directions (pairs are written
///   in both directions, and a release deletes both, so one index probe per side
///   finds them all);
/// - pending outbox records of other keys that still list an erased value (only a
///   record older than the unmerge that moved the value out of that identity can:
///   the unmerge's own, later record of that key stays and is what it publishes);
/// - dead letters kept in PostgreSQL whose key, value or headers contain an erased
///   value: an email anywhere, case-insensitively; a phone's digits anywhere once
///   spaces, dashes, dots, parentheses and `+` are removed. A dead letter could not
///   be parsed, so it is searched as bytes; a coincidental match is erased too.
///
/// Kept, without values: the merge journal, keep-apart decisions and contact origins
/// (contact ids, event keys and request ids), and the ledger (see docs/operations.md).
async fn erase_traces(
    tx: &mut Transaction<'_, Postgres>,
    ids: &[i64],
    values: &BTreeSet<IdentifierValue>,
    hashes: &[Vec<u8>],
) -> Result<(), StoreError> {
    let (kinds, values): (Vec<String>, Vec<String>) = values
        .iter()
        .map(|(kind, value)| (kind.to_string(), value.clone()))
        .unzip();
    let emails: Vec<&str> = kinds
        .iter()
        .zip(&values)
        .filter(|(kind, _)| *kind == "e")
        .map(|(_, v)| v.as_str())
        .collect();
    let phones: Vec<&str> = kinds
        .iter()
        .zip(&values)
        .filter(|(kind, _)| *kind == "p")
        .map(|(_, v)| v.as_str())
        .collect();
    // Review entries first: they reference the quarantines.
    sqlx::query!(
        "WITH q AS (SELECT id FROM quarantine \
                    WHERE (kind::text, value) IN (SELECT * FROM unnest($2::text[], $3::text[]))) \
         DELETE FROM link_review WHERE primary_id = ANY($1) OR other_primary_id = ANY($1) \
            OR quarantine_id IN (SELECT id FROM q)",
        ids,
        &kinds,
        &values,
    )
    .execute(&mut **tx)
    .await?;
    sqlx::query!(
        "DELETE FROM quarantine \
         WHERE (kind::text, value) IN (SELECT * FROM unnest($1::text[], $2::text[]))",
        &kinds,
        &values,
    )
    .execute(&mut **tx)
    .await?;
    sqlx::query!(
        "WITH gone AS (DELETE FROM counterpart WHERE identifier = ANY($1) RETURNING other) \
         DELETE FROM counterpart WHERE identifier IN (SELECT other FROM gone) \
            AND other = ANY($1) AND NOT identifier = ANY($1)",
        hashes,
    )
    .execute(&mut **tx)
    .await?;
    sqlx::query!(
        "DELETE FROM outbox WHERE payload IS NOT NULL \
           AND EXISTS (SELECT 1 FROM unnest($1::text[]) AS v WHERE strpos(payload, to_json(v)::text) > 0)",
        &values,
    )
    .execute(&mut **tx)
    .await?;
    sqlx::query!(
        "WITH letters AS (SELECT id, lower(concat_ws(' ', encode(key, 'escape'), encode(value, 'escape'), \
                  array_to_string(header_keys, ' '), \
                  (SELECT string_agg(encode(h, 'escape'), ' ') FROM unnest(header_values) AS h))) AS text \
                FROM dead_letter) \
         DELETE FROM dead_letter d USING letters l WHERE d.id = l.id AND ( \
             EXISTS (SELECT 1 FROM unnest($1::text[]) AS e \
                     WHERE strpos(l.text, lower(encode(convert_to(e, 'UTF8'), 'escape'))) > 0) \
          OR EXISTS (SELECT 1 FROM unnest($2::text[]) AS p \
                     WHERE regexp_replace(p, '[ ().+-]', '', 'g') <> '' \
                       AND strpos(regexp_replace(l.text, '[ ().+-]', '', 'g'), \
                                  regexp_replace(p, '[ ().+-]', '', 'g')) > 0))",
        &emails as &[&str],
        &phones as &[&str],
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}
