//! Reconciling a batch of inputs in one transaction.
//!
//! # Locking: why concurrent batches cannot break §2
//!
//! Two kinds of change can race: inserting a contact, and re-linking existing ones
//! (a merge). Each is covered by its own lock, always taken in the same order:
//!
//! 1. **Ledger keys** (events only): `INSERT .. ON CONFLICT DO NOTHING`, keys sorted.
//!    A concurrent duplicate of the same event waits here and then sees it done.
//! 2. **Identifier locks**: a transaction-scoped advisory lock per normalised email and
//!    phone of the batch, in ascending key order. A contact is only ever inserted
//!    carrying the email and phone of the input that created it, so while we hold
//!    these locks nobody else can insert a contact our inputs would match: two
//!    requests with the same new pair cannot both create a primary.
//! 3. **Primary locks**: a transaction-scoped advisory lock per primary of every
//!    cluster our identifiers match, in ascending id order (advisory rather than
//!    `SELECT .. FOR UPDATE`, which writes every row it locks: a few hundred rows per
//!    batch). Every change to a cluster (a new secondary, a demotion, a re-pointed
//!    secondary; an undone merge, an erasure) is made by a transaction holding its
//!    primary's lock, so once ours are held the clusters cannot change under us.
//!    We then load the clusters of the primaries we hold, by id (with a fresh
//!    statement snapshot). A contact carrying one of our identifiers cannot have left
//!    them meanwhile: only an undone merge, a quarantine's split (`quarantine.rs`) or
//!    an erasure takes contacts out of a cluster, and each first takes the identifier
//!    locks of every contact it touches, which we hold. A merge can have absorbed one of our primaries between our read
//!    and our lock: it then shows up linked to a survivor we do not hold, and we lock
//!    that one and load again.
//!
//! Locks of one class are taken in a global order and a transaction never goes back
//! to an earlier class, so waits cannot form a cycle, except in the rare re-lock of
//! step 3; PostgreSQL detects that deadlock, aborts one side, and the whole
//! transaction is retried (as is a serialization failure). A merge cannot be lost:
//! the transaction that demotes a primary holds that primary's lock, so any writer
//! that wanted to link to it waits, re-checks, and follows it to the survivor.
//!
//! New contacts are stamped `greatest(clock_timestamp(), newest loaded contact)` after
//! the locks are held, so they are younger than every contact of the clusters they
//! join; ids are allocated ascending in plan order, which breaks ties inside a batch.

use super::{is_retryable_conflict, sql, Store, StoreError};
use crate::domain::identity::{identity_record, merge_record};
use crate::domain::reconcile::{identity_of, plan, Absorbed, ContactRef, Plan, Refusal};
use crate::domain::{ContactInput, Email, Identity, Origin, Phone, StoredContact};
use crate::metrics::METRICS;
use chrono::{DateTime, Utc};
use rand::Rng;
use sqlx::{Postgres, Row, Transaction};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

/// One input to reconcile and where it came from.
#[derive(Clone, Debug)]
pub struct Request {
    pub input: ContactInput,
    pub origin: Origin,
}

/// The result for one request of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reconciled {
    Applied {
        identity: Identity,
        version: i64,
        changed: bool,
    },
    /// The ledger already held this event's key: nothing was changed or published.
    Replayed,
    /// The ledger already held this event's `eventId` with other content (§6 v2): the
    /// first event stands, nothing was changed or published, and the caller
    /// dead-letters this one with reason `event_id_conflict`.
    Conflict,
    /// The input carries an erased identifier: it was dropped, nothing was stored
    /// (beyond the event's ledger key) and nothing was published.
    Suppressed,
}

/// The result of a read-only lookup.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Lookup {
    Found(Identity),
    NotFound,
    /// The identifiers belong to several identities (they would be merged by a write).
    Ambiguous(Vec<i64>),
}

impl Store {
    /// Reconciles `requests` in order, in one transaction, retried as a whole on
    /// serialization failures and deadlocks. Returns one result per request.
    ///
    /// A batch that quarantines an identifier splits what the identifier had linked
    /// right after it commits, in a transaction of its own (see `quarantine.rs`); if
    /// that fails, the split stays pending for the retention task and the batch's
    /// results stand.
    pub async fn reconcile(&self, requests: &[Request]) -> Result<Vec<Reconciled>, StoreError> {
        let (results, tripped) = self.reconcile_retrying(requests).await?;
        for quarantine in tripped {
            if let Err(e) = self.split_quarantined(quarantine).await {
                tracing::warn!(
                    quarantine,
                    error = ?e,
                    "could not split what a quarantined identifier linked; the retention task retries"
                );
            }
        }
        Ok(results)
    }

    async fn reconcile_retrying(
        &self,
        requests: &[Request],
    ) -> Result<(Vec<Reconciled>, Vec<i64>), StoreError> {
        let mut attempt = 1;
        loop {
            match self.reconcile_once(requests).await {
                Err(StoreError::Unavailable(e))
                    if is_retryable_conflict(&e) && attempt < self.settings.max_attempts =>
                {
                    tracing::debug!(attempt, error = %e, "reconciliation conflicted; retrying");
                    let jitter = rand::thread_rng().gen_range(0..(5 << attempt.min(6)));
                    tokio::time::sleep(Duration::from_millis(jitter)).await;
                    attempt += 1;
                }
                result => return result,
            }
        }
    }

    /// [`Store::reconcile`], except that a batch PostgreSQL rejects (a value it
    /// refuses: [`StoreError::Rejected`]) is applied again one request at a time, so
    /// that only the requests it refuses fail. One outcome per request, in order, up to
    /// the first error that is not a rejection: that one is the last outcome, and the
    /// requests after it were not attempted. Any other error of the whole batch is
    /// returned as is.
    pub async fn reconcile_each(
        &self,
        requests: &[Request],
    ) -> Result<Vec<Result<Reconciled, StoreError>>, StoreError> {
        match self.reconcile(requests).await {
            Ok(results) => Ok(results.into_iter().map(Ok).collect()),
            Err(e @ StoreError::Rejected(_)) if requests.len() > 1 => {
                tracing::warn!(error = %crate::telemetry::chain(&e), size = requests.len(), "batch rejected; applying its requests one by one");
                let mut outcomes = Vec::with_capacity(requests.len());
                for request in requests {
                    let outcome = self
                        .reconcile(std::slice::from_ref(request))
                        .await
                        .map(|mut results| results.remove(0));
                    let stop = matches!(&outcome, Err(e) if !matches!(e, StoreError::Rejected(_)));
                    outcomes.push(outcome);
                    if stop {
                        break;
                    }
                }
                Ok(outcomes)
            }
            Err(e @ StoreError::Rejected(_)) => Ok(vec![Err(e)]),
            Err(e) => Err(e),
        }
    }

    /// One attempt; also returns the quarantines the batch made.
    async fn reconcile_once(
        &self,
        requests: &[Request],
    ) -> Result<(Vec<Reconciled>, Vec<i64>), StoreError> {
        let salt = self.suppression_salt().await?;
        let mut tx = self.pool.begin().await?;
        let (claimed, conflicts) = claim_ledger_keys(&mut tx, requests).await?;
        let claimed_inputs: Vec<&ContactInput> =
            claimed.iter().map(|&i| &requests[i].input).collect();
        lock_identifiers(&mut tx, &claimed_inputs).await?;
        // After the identifier locks: an erasure holds them while it writes the
        // suppression list, so what we read now stays true until we commit.
        let suppressed = suppressed_inputs(&mut tx, salt, &claimed_inputs).await?;
        let live: Vec<usize> = claimed
            .iter()
            .zip(&suppressed)
            .filter(|(_, &s)| !s)
            .map(|(&i, _)| i)
            .collect();
        let inputs: Vec<ContactInput> = live.iter().map(|&i| requests[i].input.clone()).collect();
        // Quarantined identifiers are left out of the inputs before anything is
        // matched (see `decisions.rs`); the identifier locks above cover them.
        let origins: Vec<&Origin> = live.iter().map(|&i| &requests[i].origin).collect();
        let screened =
            super::decisions::screen(&mut tx, salt, &self.settings.quarantine, &inputs, &origins)
                .await?;
        let inputs = screened.inputs;
        let tripped = screened.tripped;
        let snapshot = lock_and_load(&mut tx, &inputs).await?;
        let decisions = super::decisions::load(&mut tx, &snapshot, screened.answer_only).await?;
        let newest = snapshot.iter().map(|c| c.created_at).max();
        let from_events = requests
            .iter()
            .any(|r| matches!(r.origin, Origin::Event { .. }));
        let plan = plan(
            snapshot,
            &inputs,
            from_events,
            self.settings.limits,
            &decisions,
        )
        .map_err(|e| StoreError::Fatal(e.into()))?;
        let new_ids = insert_contacts(&mut tx, &plan, newest).await?;
        super::explain::record_origins(&mut tx, &plan, &new_ids, &origins).await?;
        let resolve = |r: ContactRef| match r {
            ContactRef::Stored(id) => id,
            ContactRef::New(n) => new_ids[n],
        };
        let mut results = vec![Reconciled::Replayed; requests.len()];
        for &i in &conflicts {
            results[i] = Reconciled::Conflict;
        }
        for (&i, _) in claimed.iter().zip(&suppressed).filter(|(_, &s)| s) {
            results[i] = Reconciled::Suppressed;
        }
        let mut writes = Writes::default();
        for (&i, outcome) in live.iter().zip(plan.outcomes.iter()) {
            let identity = outcome.identity.clone().map_ids(resolve);
            let origin = &requests[i].origin;
            if outcome.changed || from_events {
                let record = identity_record(&identity, outcome.version, outcome.changed, origin);
                writes.record(identity.primary_id, &record);
                for absorbed in &outcome.absorbed {
                    let id = resolve(absorbed.primary);
                    let record = merge_record(id, identity.primary_id, absorbed.version, origin);
                    writes.record(id, &record);
                }
            }
            for absorbed in &outcome.absorbed {
                writes.merge(identity.primary_id, absorbed, resolve, origin);
            }
            if let Some((a, b)) = outcome.bridge {
                writes.journal(identity.primary_id, None, &[resolve(a), resolve(b)], origin);
            }
            for refusal in &outcome.refused {
                writes.refusal(identity.primary_id, refusal, resolve, origin);
            }
            results[i] = Reconciled::Applied {
                identity,
                version: outcome.version,
                changed: outcome.changed,
            };
        }
        update_contacts_and_write_outbox(&mut tx, &plan, resolve, &writes).await?;
        tx.commit().await?;
        METRICS.contacts_inserted.inc_by(plan.inserts.len() as u64);
        METRICS
            .merges
            .inc_by(plan.outcomes.iter().map(|o| o.absorbed.len() as u64).sum());
        METRICS
            .inputs_suppressed
            .inc_by(suppressed.iter().filter(|&&s| s).count() as u64);
        METRICS.event_id_conflicts.inc_by(conflicts.len() as u64);
        for refusal in plan.outcomes.iter().flat_map(|o| &o.refused) {
            METRICS
                .links_refused
                .with_label_values(&[refusal.reason.code()])
                .inc();
        }
        Ok((results, tripped))
    }

    /// The salt of suppression hashes, read once: it never changes.
    pub(super) async fn suppression_salt(&self) -> Result<&str, StoreError> {
        let salt = self
            .salt
            .get_or_try_init(|| async {
                sqlx::query_scalar::<_, String>("SELECT salt FROM suppression_salt")
                    .fetch_one(&self.pool)
                    .await
            })
            .await?;
        Ok(salt)
    }

    /// Read-only: the identity that the identifiers of `input` belong to.
    pub async fn lookup(&self, input: &ContactInput) -> Result<Lookup, StoreError> {
        let (emails, phones) = identifiers([input]);
        let mut tx = self.pool.begin().await?;
        // One snapshot for both queries, so that the cluster we load is the one we hit.
        sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            .execute(&mut *tx)
            .await?;
        let mut primaries = hit_primaries(&mut tx, &emails, &phones).await?;
        if primaries.len() > 1 {
            // Several identities hold a quarantined identifier once its split is done:
            // it is matched as a write would match it (only when nothing else is,
            // as the oldest identity holding it). Costs nothing when unambiguous.
            primaries = without_quarantined(&mut tx, &emails, &phones, primaries).await?;
        }
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
    let mut primaries: Vec<i64> = sqlx::query_scalar(sql::HIT_PRIMARIES)
        .bind(emails)
        .bind(phones)
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
    let quarantined: Vec<(String, String)> = sqlx::query_as(
        "SELECT kind::text, value FROM quarantine WHERE released_at IS NULL \
         AND ((kind = 'e' AND value = ANY($1)) OR (kind = 'p' AND value = ANY($2)))",
    )
    .bind(emails)
    .bind(phones)
    .fetch_all(&mut **tx)
    .await?;
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
        let oldest: Option<i64> = sqlx::query_scalar(
            "SELECT id FROM contact WHERE id = ANY($1) ORDER BY created_at, id LIMIT 1",
        )
        .bind(&primaries)
        .fetch_optional(&mut **tx)
        .await?;
        return Ok(oldest.into_iter().collect());
    }
    let emails: Vec<&str> = emails.iter().map(String::as_str).collect();
    let phones: Vec<&str> = phones.iter().map(String::as_str).collect();
    hit_primaries(tx, &emails, &phones).await
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
async fn claim_ledger_keys(
    tx: &mut Transaction<'_, Postgres>,
    requests: &[Request],
) -> Result<(Vec<usize>, Vec<usize>), StoreError> {
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
        let rows: Vec<(String, String)> = sqlx::query_as(sql::CLAIM_LEDGER_KEYS)
            .bind(&kinds)
            .bind(&keys)
            .bind(&digests)
            .fetch_all(&mut **tx)
            .await?;
        fresh.extend(rows);
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
        sqlx::query_as(sql::LEDGER_DIGESTS)
            .bind(&seen)
            .fetch_all(&mut **tx)
            .await?
            .into_iter()
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
    Ok((apply, conflicts))
}

fn identifiers<'a>(
    inputs: impl IntoIterator<Item = &'a ContactInput> + Clone,
) -> (Vec<&'a str>, Vec<&'a str>) {
    let mut emails: Vec<&str> = inputs
        .clone()
        .into_iter()
        .filter_map(|i| i.email().map(Email::as_str))
        .collect();
    let mut phones: Vec<&str> = inputs
        .into_iter()
        .filter_map(|i| i.phone().map(Phone::as_str))
        .collect();
    emails.sort_unstable();
    emails.dedup();
    phones.sort_unstable();
    phones.dedup();
    (emails, phones)
}

/// 64-bit FNV-1a of a tagged identifier: a stable advisory-lock key that every
/// instance and every version of the service computes alike. A collision only makes
/// two unrelated requests wait for each other.
fn lock_key(tag: u8, value: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in std::iter::once(&tag).chain(value.as_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash as i64
}

/// Step 2 of the module doc: advisory locks on every identifier of `inputs`.
pub(super) async fn lock_identifiers(
    tx: &mut Transaction<'_, Postgres>,
    inputs: &[&ContactInput],
) -> Result<(), StoreError> {
    let (emails, phones) = identifiers(inputs.iter().copied());
    let mut keys: Vec<i64> = emails
        .iter()
        .map(|e| lock_key(b'e', e))
        .chain(phones.iter().map(|p| lock_key(b'p', p)))
        .collect();
    if keys.is_empty() {
        return Ok(());
    }
    keys.sort_unstable();
    keys.dedup();
    sqlx::query(sql::LOCK_IDENTIFIERS)
        .bind(&keys)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The suppression-list hash of an identifier (`kind` `e` or `p`, value as stored).
pub(super) fn suppression_hash(salt: &str, kind: char, value: &str) -> Vec<u8> {
    use sha2::Digest;
    sha2::Sha256::digest(format!("{salt}:{kind}:{value}")).to_vec()
}

/// Which of `inputs` carry an erased identifier.
async fn suppressed_inputs(
    tx: &mut Transaction<'_, Postgres>,
    salt: &str,
    inputs: &[&ContactInput],
) -> Result<Vec<bool>, StoreError> {
    let hashes_of = |input: &ContactInput| {
        let email = input
            .email()
            .map(|e| suppression_hash(salt, 'e', e.as_str()));
        let phone = input
            .phone()
            .map(|p| suppression_hash(salt, 'p', p.as_str()));
        email.into_iter().chain(phone)
    };
    let all: Vec<Vec<u8>> = inputs.iter().flat_map(|i| hashes_of(i)).collect();
    if all.is_empty() {
        return Ok(Vec::new());
    }
    let found: HashSet<Vec<u8>> = sqlx::query_scalar(sql::SUPPRESSED)
        .bind(&all)
        .fetch_all(&mut **tx)
        .await?
        .into_iter()
        .collect();
    Ok(inputs
        .iter()
        .map(|i| hashes_of(i).any(|h| found.contains(&h)))
        .collect())
}

/// Step 3 of the module doc (the identifiers are already locked): returns the whole
/// clusters the inputs touch, with their primaries locked.
async fn lock_and_load(
    tx: &mut Transaction<'_, Postgres>,
    inputs: &[ContactInput],
) -> Result<Vec<StoredContact>, StoreError> {
    if inputs.is_empty() {
        return Ok(Vec::new());
    }
    let (emails, phones) = identifiers(inputs);

    // Locks the primaries as this statement's snapshot sees them, even one demoted
    // since: being locked does it no harm, and an empty result then really means
    // that nothing matched, which stays true while we hold the identifier locks.
    let mut locked: Vec<i64> = sqlx::query_scalar(sql::LOCK_HIT_PRIMARIES)
        .bind(&emails)
        .bind(&phones)
        .fetch_all(&mut **tx)
        .await?;
    if locked.is_empty() {
        return Ok(Vec::new());
    }
    loop {
        let snapshot = load_clusters(tx, &locked).await?;
        let mut unlocked: Vec<i64> = snapshot
            .iter()
            .filter_map(|c| c.linked_id)
            .filter(|p| !locked.contains(p))
            .collect();
        if unlocked.is_empty() {
            return Ok(snapshot);
        }
        // A primary was absorbed after our first read; lock its survivor too.
        unlocked.sort_unstable();
        unlocked.dedup();
        let more: Vec<i64> = sqlx::query_scalar(sql::LOCK_PRIMARIES)
            .bind(&unlocked)
            .fetch_all(&mut **tx)
            .await?;
        locked.extend(more);
    }
}

pub(super) fn stored_contact(row: sqlx::postgres::PgRow) -> Result<StoredContact, sqlx::Error> {
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

/// Inserts the plan's new contacts; returns their ids in plan order. The ids are
/// drawn first, ascending, so that plan order is id order and a new secondary can
/// point at a new primary of the same batch.
async fn insert_contacts(
    tx: &mut Transaction<'_, Postgres>,
    plan: &Plan,
    newest_loaded: Option<DateTime<Utc>>,
) -> Result<Vec<i64>, StoreError> {
    if plan.inserts.is_empty() {
        return Ok(Vec::new());
    }
    let mut ids: Vec<i64> = sqlx::query_scalar(sql::DRAW_CONTACT_IDS)
        .bind(plan.inserts.len() as i32)
        .fetch_all(&mut **tx)
        .await?;
    ids.sort_unstable();
    let mut emails = Vec::with_capacity(ids.len());
    let mut phones = Vec::with_capacity(ids.len());
    let mut links = Vec::with_capacity(ids.len());
    let mut versions = Vec::with_capacity(ids.len());
    for contact in &plan.inserts {
        emails.push(contact.email.as_ref().map(Email::as_str));
        phones.push(contact.phone.as_ref().map(Phone::as_str));
        links.push(contact.linked_id.map(|link| match link {
            ContactRef::Stored(id) => id,
            ContactRef::New(n) => ids[n],
        }));
        versions.push(contact.version);
    }
    sqlx::query(sql::INSERT_CONTACTS)
        .bind(&ids)
        .bind(&emails)
        .bind(&phones)
        .bind(&links)
        .bind(&versions)
        .bind(newest_loaded)
        .execute(&mut **tx)
        .await?;
    Ok(ids)
}

/// The rows a batch writes besides contacts: outbox records, merge-journal entries
/// and refused links, as the columns of one statement.
#[derive(Default)]
struct Writes {
    keys: Vec<String>,
    payloads: Vec<String>,
    journal_primaries: Vec<i64>,
    absorbed: Vec<Option<i64>>,
    journal_contacts: Vec<String>,
    journal_via: Vec<Option<String>>,
    watermarks: Vec<Option<i64>>,
    merge_keys: Vec<Option<String>>,
    merge_sources: Vec<&'static str>,
    reasons: Vec<&'static str>,
    review_primaries: Vec<i64>,
    review_others: Vec<Option<i64>>,
    review_keys: Vec<Option<String>>,
    review_sources: Vec<&'static str>,
}

/// The journal's view of an origin: the event's idempotency key and the source.
pub(super) fn journal_origin(origin: &Origin) -> (Option<String>, &'static str) {
    match origin {
        Origin::Event { ledger_key, .. } => (Some(ledger_key.clone()), "event"),
        Origin::Http { .. } | Origin::Admin { .. } => (None, "http"),
    }
}

impl Writes {
    fn record(&mut self, key: i64, payload: &serde_json::Value) {
        self.keys.push(key.to_string());
        self.payloads.push(payload.to_string());
    }

    fn merge(
        &mut self,
        survivor: i64,
        absorbed: &Absorbed,
        resolve: impl Fn(ContactRef) -> i64,
        origin: &Origin,
    ) {
        let moved: Vec<i64> = absorbed.moved.iter().map(|&m| resolve(m)).collect();
        self.journal(
            survivor,
            Some((resolve(absorbed.primary), resolve(absorbed.watermark))),
            &moved,
            origin,
        );
        let via: Vec<String> = absorbed
            .via
            .iter()
            .map(|&c| resolve(c).to_string())
            .collect();
        *self.journal_via.last_mut().expect("just journalled") =
            Some(format!("{{{}}}", via.join(",")));
    }

    fn journal(
        &mut self,
        primary: i64,
        absorbed_and_watermark: Option<(i64, i64)>,
        contacts: &[i64],
        origin: &Origin,
    ) {
        let contacts: Vec<String> = contacts.iter().map(i64::to_string).collect();
        let (key, source) = journal_origin(origin);
        self.journal_primaries.push(primary);
        self.absorbed.push(absorbed_and_watermark.map(|(a, _)| a));
        self.watermarks.push(absorbed_and_watermark.map(|(_, w)| w));
        self.journal_contacts
            .push(format!("{{{}}}", contacts.join(",")));
        self.journal_via.push(None);
        self.merge_keys.push(key);
        self.merge_sources.push(source);
    }

    fn refusal(
        &mut self,
        primary: i64,
        refusal: &Refusal,
        resolve: impl Fn(ContactRef) -> i64,
        origin: &Origin,
    ) {
        if !refusal.reason.queued() {
            return;
        }
        let (key, source) = journal_origin(origin);
        self.reasons.push(refusal.reason.code());
        self.review_primaries.push(primary);
        self.review_others.push(refusal.other.map(resolve));
        self.review_keys.push(key);
        self.review_sources.push(source);
    }

    fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.journal_primaries.is_empty() && self.reasons.is_empty()
    }
}

/// Re-links and re-versions stored contacts, writes the outbox, the merge journal
/// and refused links, in one statement.
async fn update_contacts_and_write_outbox(
    tx: &mut Transaction<'_, Postgres>,
    plan: &Plan,
    resolve: impl Fn(ContactRef) -> i64,
    writes: &Writes,
) -> Result<(), StoreError> {
    if plan.updates.is_empty() && writes.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = plan.updates.iter().map(|u| u.id).collect();
    let links: Vec<Option<i64>> = plan
        .updates
        .iter()
        .map(|u| u.linked_id.map(&resolve))
        .collect();
    let versions: Vec<i64> = plan.updates.iter().map(|u| u.version).collect();
    sqlx::query(sql::UPDATE_CONTACTS_AND_WRITE_OUTBOX)
        .bind(&ids)
        .bind(&links)
        .bind(&versions)
        .bind(&writes.keys)
        .bind(&writes.payloads)
        .bind(&writes.journal_primaries)
        .bind(&writes.absorbed)
        .bind(&writes.journal_contacts)
        .bind(&writes.watermarks)
        .bind(&writes.merge_keys)
        .bind(&writes.merge_sources)
        .bind(&writes.reasons)
        .bind(&writes.review_primaries)
        .bind(&writes.review_others)
        .bind(&writes.review_keys)
        .bind(&writes.review_sources)
        .bind(&writes.journal_via)
        .execute(&mut **tx)
        .await?;
    Ok(())
}
