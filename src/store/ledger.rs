//! The ledger of processed events: a batch's entries, their content digests, and
//! which requests of the batch are to be applied (step 1 of "How reconciliation
//! works").

use super::StoreError;
use crate::domain::{ContactInput, Email, Origin, Phone, Request};
use sqlx::{Postgres, Transaction};
use std::collections::{BTreeMap, HashMap, HashSet};

/// What the ledger says about a batch.
pub(super) struct Claimed {
    /// The requests to apply, in order: all HTTP requests, and events whose key was
    /// not there before.
    pub(crate) apply: Vec<usize>,
    /// Events whose `eventId` is already taken by other content.
    pub(crate) conflicts: Vec<usize>,
}

/// The ledger entry of an event: its namespace, key and content digest.
struct LedgerEntry<'a> {
    kind: &'static str,
    key: &'a str,
    digest: Option<Vec<u8>>,
}

/// The ledger entry of a request; `None` for HTTP and admin requests.
///
/// Two namespaces (§6 v2): `event` for keys that are an `eventId`, `offset` for the
/// `topic/partition/offset` keys of events without one, so neither can take the
/// other's key. An `eventId` entry carries the SHA-256 of the event's content as it
/// is applied: the normalised email and phone and the orderId. Those are what the
/// event does to the identities and what its output record says; a producer's retry
/// of the same event has the same digest even when it spells the email in other case
/// or the phone as a JSON number, while an `eventId` reused for another order or
/// other identifiers does not. (`occurredAt` and unknown fields change nothing the
/// service stores, so they are left out.) An offset key needs no digest: the message
/// at an offset never changes.
fn ledger_entry(request: &Request) -> Option<LedgerEntry<'_>> {
    match &request.origin {
        Origin::Event {
            event_id: Some(_),
            order_id,
            ledger_key,
        } => Some(LedgerEntry {
            kind: "event",
            key: ledger_key,
            digest: Some(content_digest(&request.input, order_id.as_deref())),
        }),
        Origin::Event {
            event_id: None,
            ledger_key,
            ..
        } => Some(LedgerEntry {
            kind: "offset",
            key: ledger_key,
            digest: None,
        }),
        Origin::Http { .. } | Origin::Admin { .. } => None,
    }
}

/// SHA-256 of `[email, phone, orderId]` as JSON (absent values as `null`), so that no
/// two different contents share an encoding.
pub(super) fn content_digest(input: &ContactInput, order_id: Option<&str>) -> Vec<u8> {
    use sha2::Digest;
    let content = serde_json::json!([
        input.email().map(Email::as_str),
        input.phone().map(Phone::as_str),
        order_id,
    ]);
    sha2::Sha256::digest(content.to_string()).to_vec()
}

/// Writes the ledger entries of the batch's events. Returns the indexes of the
/// requests to apply (all HTTP requests, and events whose key was not there before),
/// and those of events whose `eventId` is already taken by other content.
pub(super) async fn claim_ledger_keys(
    tx: &mut Transaction<'_, Postgres>,
    requests: &[Request],
) -> Result<Claimed, StoreError> {
    let entries: Vec<Option<LedgerEntry<'_>>> = requests.iter().map(ledger_entry).collect();
    // The first entry of each key in the batch, in (kind, key) order: the lock order.
    let mut first: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for (i, entry) in entries.iter().enumerate() {
        if let Some(entry) = entry {
            first.entry((entry.kind, entry.key)).or_insert(i);
        }
    }
    let mut fresh: HashSet<(String, String)> = HashSet::new();
    if !first.is_empty() {
        let mut kinds = Vec::with_capacity(first.len());
        let mut keys = Vec::with_capacity(first.len());
        let mut digests = Vec::with_capacity(first.len());
        for (&(kind, key), &i) in &first {
            kinds.push(kind);
            keys.push(key);
            digests.push(entries[i].as_ref().and_then(|e| e.digest.clone()));
        }
        let rows = sqlx::query_file!(
            "src/store/sql/claim_ledger_keys.sql",
            &kinds as &[&str],
            &keys as &[&str],
            &digests as &[Option<Vec<u8>>]
        )
        .fetch_all(&mut **tx)
        .await?;
        fresh.extend(rows.into_iter().map(|row| (row.kind, row.key)));
    }
    // The stored digests of the eventIds seen before: a new statement, so it sees the
    // rows of the concurrent transactions our insert waited for.
    let seen: Vec<&str> = first
        .keys()
        .filter(|(kind, key)| {
            *kind == "event" && !fresh.contains(&(kind.to_string(), key.to_string()))
        })
        .map(|&(_, key)| key)
        .collect();
    let stored: HashMap<String, Option<Vec<u8>>> = if seen.is_empty() {
        HashMap::new()
    } else {
        sqlx::query_file!("src/store/sql/ledger_digests.sql", &seen as &[&str])
            .fetch_all(&mut **tx)
            .await?
            .into_iter()
            .map(|row| (row.key, row.digest))
            .collect()
    };
    let mut apply = Vec::new();
    let mut conflicts = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        let Some(entry) = entry else {
            apply.push(i);
            continue;
        };
        let first_index = first[&(entry.kind, entry.key)];
        // The digest this key stands for: the stored one, or that of its first place
        // in this batch.
        let standing = if first_index == i {
            if fresh.contains(&(entry.kind.to_owned(), entry.key.to_owned())) {
                apply.push(i);
                continue;
            }
            stored.get(entry.key).cloned().flatten()
        } else if fresh.contains(&(entry.kind.to_owned(), entry.key.to_owned())) {
            entries[first_index].as_ref().and_then(|e| e.digest.clone())
        } else {
            stored.get(entry.key).cloned().flatten()
        };
        // A key repeated inside the batch is applied once, at its first place.
        if let (Some(standing), Some(ours)) = (&standing, &entry.digest) {
            if standing != ours {
                conflicts.push(i);
            }
        }
    }
    Ok(Claimed { apply, conflicts })
}
