//! Splitting what a quarantined identifier had linked (docs/design/quarantine-split.md).
//!
//! The batch that quarantines an identifier only writes the `quarantine` row (its
//! `split_at` NULL: pending) and commits; [`Store::reconcile`] then splits right away,
//! in a transaction of its own, and the retention task splits whatever is still
//! pending (a crash or a database blip in between), at start and at every interval.
//! So the hot path gains nothing, not even a statement, when no quarantine trips,
//! and its lock order stays as it is: the split is an operator-like action that
//! takes its locks from scratch.
//!
//! The split takes the locks an undo takes (`locks.rs`: `lock_holders`), for every
//! cluster holding the identifier: the identifier's own lock, then the identifiers of
//! every contact of those clusters, then their primaries; it moves contacts between
//! clusters, so reconciliation must not load any of them meanwhile. Only then is the
//! quarantine row read again, under its row lock: a release (it takes the
//! identifier's lock first too) or an erasure of the value (it holds every
//! identifier's lock) decided before us wins, and nothing is split.

use super::locks::lock_holders;
use super::outbox::publish_identity;
use super::retry::retrying;
use super::{Store, StoreError};
use crate::domain::split::{quarantine_groups, Identifier, JournalLink};
use crate::domain::{Email, Origin, Phone, StoredContact};
use sqlx::{Postgres, Transaction};
use std::collections::HashMap;

/// What a split did: for each identity the identifier had linked, the primaries of
/// the identities it became (the first is the one that kept its primary).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct QuarantineSplit {
    pub(crate) quarantine_id: i64,
    pub(crate) identities: Vec<Vec<i64>>,
}

impl Store {
    /// Splits what the identifier of quarantine `id` had linked, unless it is split
    /// already, released or gone. Retried on serialization failures and deadlocks.
    pub(crate) async fn split_quarantined(
        &self,
        id: i64,
    ) -> Result<Option<QuarantineSplit>, StoreError> {
        retrying(|| self.split_once(id)).await
    }

    /// Splits every pending quarantine, oldest first; returns how many it split. The
    /// retention task's step (also run at start).
    pub async fn split_pending_quarantines(&self) -> Result<usize, StoreError> {
        let pending = sqlx::query_scalar!(
            "SELECT id FROM quarantine WHERE split_at IS NULL AND released_at IS NULL ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut split = 0;
        for id in pending {
            split += usize::from(self.split_quarantined(id).await?.is_some());
        }
        Ok(split)
    }

    async fn split_once(&self, id: i64) -> Result<Option<QuarantineSplit>, StoreError> {
        let mut tx = self.pool.begin().await?;
        let Some(quarantined) = pending(&mut tx, id, false).await? else {
            return Ok(None);
        };
        let clusters = lock_holders(&mut tx, &quarantined).await?;
        // Read again under the locks: a release or an erasure may have come first.
        if pending(&mut tx, id, true).await? != Some(quarantined.clone()) {
            return Ok(None);
        }
        let mut identities = Vec::new();
        let origin = Origin::Admin {
            action: "quarantine",
        };
        for (primary, cluster) in clusters {
            let groups = split_cluster(&mut tx, id, primary, &cluster, &quarantined).await?;
            if groups.len() > 1 {
                for group in &groups {
                    publish_identity(&mut tx, group[0], &origin).await?;
                }
            }
            identities.push(groups.into_iter().map(|g| g[0]).collect());
        }
        sqlx::query!(
            "UPDATE quarantine SET split_at = clock_timestamp() WHERE id = $1",
            id
        )
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        let split = identities
            .iter()
            .map(|i: &Vec<i64>| i.len().saturating_sub(1))
            .sum::<usize>();
        crate::metrics::METRICS
            .quarantine_splits
            .inc_by(split as u64);
        Ok(Some(QuarantineSplit {
            quarantine_id: id,
            identities,
        }))
    }
}

/// A quarantined identifier as stored: kind `e` or `p`, and the normalised value.
struct Stored {
    kind: String,
    value: String,
}

/// The identifier of quarantine `id` while it is active and not split yet; with
/// `lock`, under the row's lock.
async fn pending(
    tx: &mut Transaction<'_, Postgres>,
    id: i64,
    lock: bool,
) -> Result<Option<Identifier>, StoreError> {
    let row = if lock {
        sqlx::query_as!(
            Stored,
            "SELECT kind, value FROM quarantine \
             WHERE id = $1 AND released_at IS NULL AND split_at IS NULL FOR UPDATE",
            id
        )
        .fetch_optional(&mut **tx)
        .await?
    } else {
        sqlx::query_as!(
            Stored,
            "SELECT kind, value FROM quarantine \
             WHERE id = $1 AND released_at IS NULL AND split_at IS NULL",
            id
        )
        .fetch_optional(&mut **tx)
        .await?
    };
    Ok(row.map(|Stored { kind, value }| match kind.as_str() {
        "e" => Identifier::Email(Email::from_stored(value)),
        _ => Identifier::Phone(Phone::from_stored(value)),
    }))
}

/// Splits one cluster (locked, whole) into the groups of
/// [`quarantine_groups`]: re-links its contacts, journals each new identity and
/// marks undone the merges whose two sides now are apart. Returns the groups, the
/// one keeping `primary` first.
async fn split_cluster(
    tx: &mut Transaction<'_, Postgres>,
    quarantine_id: i64,
    primary: i64,
    cluster: &[StoredContact],
    quarantined: &Identifier,
) -> Result<Vec<Vec<i64>>, StoreError> {
    let ids: Vec<i64> = cluster.iter().map(|c| c.id).collect();
    // By the journal's indexes: a merge by its absorbed primary, a bridge by the
    // primary it was journalled under. (A bridge journalled under a primary that an
    // undo has since taken out of this cluster is not found; its contacts are then
    // split unless other evidence ties them.)
    let rows = sqlx::query!(
        "SELECT id, kind, primary_id, absorbed_id, contact_ids, via_ids FROM merge_journal \
         WHERE (primary_id = ANY($1) OR absorbed_id = ANY($1)) \
           AND ((kind = 'merge' AND undone_at IS NULL AND absorbed_id = ANY($1)) \
             OR (kind = 'bridge' AND contact_ids && $1)) ORDER BY id",
        &ids
    )
    .fetch_all(&mut **tx)
    .await?;
    struct Entry {
        id: i64,
        holders: Vec<i64>,
        ends: Option<(i64, i64)>,
    }
    // A merge is held by the contacts its input's values were on (`via_ids`), a
    // bridge by the contacts it journalled.
    let entries: Vec<Entry> = rows
        .into_iter()
        .map(|row| match (row.kind.as_str(), row.absorbed_id) {
            ("merge", Some(absorbed)) => Entry {
                id: row.id,
                holders: row.via_ids.unwrap_or_default(),
                ends: Some((row.primary_id, absorbed)),
            },
            _ => Entry {
                id: row.id,
                holders: row.contact_ids,
                ends: None,
            },
        })
        .collect();
    let links: Vec<JournalLink> = entries
        .iter()
        .map(|e| JournalLink {
            holders: &e.holders,
            ends: e.ends,
        })
        .collect();
    let groups = quarantine_groups(cluster, &links, quarantined);
    if groups.len() < 2 {
        return Ok(groups);
    }
    if groups[0][0] != primary {
        return Err(StoreError::Fatal(anyhow::anyhow!(
            "primary {primary} is not the oldest contact of its cluster"
        )));
    }
    let group_of: HashMap<i64, usize> = groups
        .iter()
        .enumerate()
        .flat_map(|(g, ids)| ids.iter().map(move |&id| (id, g)))
        .collect();
    let undone: Vec<i64> = entries
        .iter()
        .filter_map(|e| {
            let (survivor, absorbed) = e.ends?;
            (group_of.get(&survivor) != group_of.get(&absorbed)).then_some(e.id)
        })
        .collect();
    let (mut new_primaries, mut secondaries, mut links_to) = (Vec::new(), Vec::new(), Vec::new());
    for group in &groups[1..] {
        new_primaries.push(group[0]);
        for &id in &group[1..] {
            secondaries.push(id);
            links_to.push(group[0]);
        }
    }
    // Each new primary's journal entry lists the secondaries linked to it, in group order.
    sqlx::query!(
        "WITH p AS (UPDATE contact SET linked_id = NULL, link_precedence = 'primary', \
               updated_at = clock_timestamp() WHERE id = ANY($1)), \
         s AS (UPDATE contact c SET linked_id = s.link, updated_at = clock_timestamp() \
               FROM unnest($2::bigint[], $3::bigint[]) AS s(id, link) WHERE c.id = s.id), \
         u AS (UPDATE merge_journal SET undone_at = clock_timestamp() WHERE id = ANY($4)) \
         INSERT INTO merge_journal (kind, primary_id, absorbed_id, contact_ids, source, quarantine_id) \
         SELECT 'split', $5, p, coalesce((SELECT array_agg(s.id ORDER BY s.n) \
             FROM unnest($2::bigint[], $3::bigint[]) WITH ORDINALITY AS s(id, link, n) \
             WHERE s.link = p), '{}'), 'quarantine', $6 \
         FROM unnest($1::bigint[]) AS p",
        &new_primaries,
        &secondaries,
        &links_to,
        &undone,
        primary,
        quarantine_id,
    )
    .execute(&mut **tx)
    .await?;
    Ok(groups)
}
