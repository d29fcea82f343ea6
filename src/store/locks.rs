//! The lock protocol of every transaction that changes contacts, and why it holds.
//!
//! # Why concurrent transactions cannot break §2
//!
//! Two kinds of change can race: inserting a contact, and re-linking existing ones
//! (a merge). Each is covered by its own lock, always taken in the same order:
//!
//! 1. **Ledger keys** (events only): `INSERT .. ON CONFLICT DO NOTHING`, keys sorted.
//!    A concurrent duplicate of the same event waits here and then sees it done.
//! 2. **Identifier locks** ([`lock_identifiers`]): a transaction-scoped advisory lock
//!    per normalised email and phone, in ascending key order. A contact is only ever
//!    inserted carrying the email and phone of the input that created it, so while we
//!    hold these locks nobody else can insert a contact our inputs would match: two
//!    requests with the same new pair cannot both create a primary.
//! 3. **Primary locks** ([`lock_primaries`]): a transaction-scoped advisory lock per
//!    primary of every cluster our identifiers match, in ascending id order (advisory
//!    rather than `SELECT .. FOR UPDATE`, which writes every row it locks: a few
//!    hundred rows per batch). Every change to a cluster (a new secondary, a demotion,
//!    a re-pointed secondary; an undone merge, a quarantine's split, an erasure, an
//!    approved review's merge) is made by a transaction holding its primary's lock, so
//!    once ours are held the clusters cannot change under us. We then load the
//!    clusters of the primaries we hold, by id (with a fresh statement snapshot). A
//!    contact carrying one of our identifiers cannot have left them meanwhile: only an
//!    undone merge, a quarantine's split or an erasure takes contacts out of a
//!    cluster, and each first takes the identifier locks of every contact it touches
//!    ([`lock_identity`], [`lock_holders`]), which we hold. A merge can have absorbed
//!    one of our primaries between our read and our lock: it then shows up linked to a
//!    survivor we do not hold, and we lock that one and load again.
//!
//! Every transaction takes these classes in this one order: reconciliation (all
//! three), an undo and an erasure ([`lock_identity`]: identifiers, then the primary),
//! a quarantine's split ([`lock_holders`]: identifiers, then primaries) and a review's
//! merge (primaries only: contacts only join a cluster there). Locks of one class are
//! taken in a global order and a transaction never waits for a lock of an earlier
//! class, so waits cannot form a cycle, except in the rare re-lock of step 3 (a
//! survivor with a smaller id than a primary we hold); PostgreSQL detects that
//! deadlock, aborts one side, and the whole transaction is retried with back-off (as
//! is a serialization failure; see `retry.rs`).
//!
//! An undo, an erasure and a split learn which identifiers to lock by reading the
//! cluster, and a contact with a new identifier can join it between that read and
//! the primary lock. They then need one more identifier lock while holding a primary
//! lock, which would go back to an earlier class. So they take it with a try-lock
//! ([`try_lock_identifier_values`]), which never waits: if another transaction holds
//! it, the attempt fails with [`StoreError::Busy`], its transaction rolls back
//! (releasing every lock) and runs again from scratch after a back-off. A transaction
//! holding a primary lock thus never waits for an identifier lock, and the order
//! above holds for every wait.
//!
//! A merge cannot be lost: the transaction that demotes a primary holds that
//! primary's lock, so any writer that wanted to link to it waits, re-checks, and
//! follows it to the survivor.
//!
//! New contacts are stamped `greatest(clock_timestamp(), newest loaded contact)` after
//! the locks are held, so they are younger than every contact of the clusters they
//! join; ids are allocated ascending in plan order, which breaks ties inside a batch.
//!
//! # Key spaces
//!
//! PostgreSQL keeps an advisory lock's single-`bigint` keys and its two-`int4` keys
//! apart (they are different lock tags): `pg_advisory_lock(1)` and
//! `pg_advisory_lock(0, 1)` do not conflict. Identifier locks use `bigint` keys
//! ([`lock_key`]); primary locks use two `int4`s, `(id >> 31, id & 0x7fffffff)`, whose
//! first half is never negative for an id below 2^62; the relay lease
//! ([`RELAY_LEASE`]) is a two-`int4` key with a negative first half, which no primary
//! can take.

use super::clusters::{load_clusters, primary_of, primary_of_target, ForgetTarget};
use super::StoreError;
use crate::domain::split::Identifier;
use crate::domain::{ContactInput, Email, Phone, StoredContact};
use sqlx::{Postgres, Transaction};
use std::collections::{BTreeMap, BTreeSet};

/// The relay lease's session-level advisory lock, in the two-`int4` form
/// (`pg_try_advisory_lock(-1, 1)`): apart from every identifier lock (`bigint` keys)
/// and every primary lock (two `int4`s, the first never negative).
pub(super) const RELAY_LEASE: (i32, i32) = (-1, 1);

/// An identifier as locked: tagged `e` (email) or `p` (phone), with the stored value.
pub(super) type IdentifierValue = (char, String);

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

/// The distinct emails and phones of `inputs`, each sorted.
pub(super) fn identifiers<'a>(
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

/// The lock keys of tagged identifiers, ascending: the lock order.
fn keys<'a>(values: impl IntoIterator<Item = (u8, &'a str)>) -> Vec<i64> {
    let mut keys: Vec<i64> = values
        .into_iter()
        .map(|(tag, value)| lock_key(tag, value))
        .collect();
    keys.sort_unstable();
    keys.dedup();
    keys
}

/// Step 2: advisory locks on every identifier of `inputs`, waiting for each.
pub(super) async fn lock_identifiers(
    tx: &mut Transaction<'_, Postgres>,
    inputs: &[&ContactInput],
) -> Result<(), StoreError> {
    let (emails, phones) = identifiers(inputs.iter().copied());
    let tagged = emails.iter().map(|e| (b'e', *e));
    lock_keys(tx, keys(tagged.chain(phones.iter().map(|p| (b'p', *p))))).await
}

/// Step 2 for identifiers read from stored contacts; only before any primary lock.
pub(super) async fn lock_identifier_values(
    tx: &mut Transaction<'_, Postgres>,
    values: &BTreeSet<IdentifierValue>,
) -> Result<(), StoreError> {
    lock_keys(tx, tagged_keys(values)).await
}

/// Identifier locks for a transaction that already holds a primary lock: never
/// waits. [`StoreError::Busy`] when one is held elsewhere; the caller's retry loop
/// then runs the whole transaction again.
pub(super) async fn try_lock_identifier_values(
    tx: &mut Transaction<'_, Postgres>,
    values: &BTreeSet<IdentifierValue>,
) -> Result<(), StoreError> {
    let keys = tagged_keys(values);
    if keys.is_empty() {
        return Ok(());
    }
    let granted = sqlx::query_file_scalar!("src/store/sql/try_lock_identifiers.sql", &keys)
        .fetch_one(&mut **tx)
        .await?;
    if granted {
        Ok(())
    } else {
        Err(StoreError::Busy)
    }
}

fn tagged_keys(values: &BTreeSet<IdentifierValue>) -> Vec<i64> {
    keys(
        values
            .iter()
            .map(|(kind, value)| (*kind as u8, value.as_str())),
    )
}

async fn lock_keys(tx: &mut Transaction<'_, Postgres>, keys: Vec<i64>) -> Result<(), StoreError> {
    if keys.is_empty() {
        return Ok(());
    }
    sqlx::query_file!("src/store/sql/lock_identifiers.sql", &keys)
        .fetch_all(&mut **tx)
        .await?;
    Ok(())
}

/// Step 3: advisory locks on primaries by id (sorted here); returns them.
pub(super) async fn lock_primaries(
    tx: &mut Transaction<'_, Postgres>,
    primaries: &[i64],
) -> Result<Vec<i64>, StoreError> {
    let mut primaries = primaries.to_vec();
    primaries.sort_unstable();
    primaries.dedup();
    Ok(
        sqlx::query_file!("src/store/sql/lock_primaries.sql", &primaries)
            .fetch_all(&mut **tx)
            .await?
            .into_iter()
            .map(|row| row.p)
            .collect(),
    )
}

/// Step 3 for reconciliation (the identifiers are already locked): returns the whole
/// clusters the inputs touch, with their primaries locked.
pub(super) async fn lock_and_load<'a>(
    tx: &mut Transaction<'_, Postgres>,
    inputs: impl IntoIterator<Item = &'a ContactInput> + Clone,
) -> Result<Vec<StoredContact>, StoreError> {
    let (emails, phones) = identifiers(inputs);
    if emails.is_empty() && phones.is_empty() {
        return Ok(Vec::new());
    }
    // Locks the primaries as this statement's snapshot sees them, even one demoted
    // since: being locked does it no harm, and an empty result then really means
    // that nothing matched, which stays true while we hold the identifier locks.
    let mut locked: Vec<i64> = sqlx::query_file!(
        "src/store/sql/lock_hit_primaries.sql",
        &emails as &[&str],
        &phones as &[&str]
    )
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .map(|row| row.p)
    .collect();
    if locked.is_empty() {
        return Ok(Vec::new());
    }
    loop {
        let snapshot = load_clusters(tx, &locked).await?;
        let unlocked: Vec<i64> = snapshot
            .iter()
            .filter_map(|c| c.linked_id)
            .filter(|p| !locked.contains(p))
            .collect();
        if unlocked.is_empty() {
            return Ok(snapshot);
        }
        // A primary was absorbed after our first read; lock its survivor too.
        locked.extend(lock_primaries(tx, &unlocked).await?);
    }
}

/// Locks every identifier of the identity `target` belongs to, then its primary (an
/// undo's and an erasure's locks); until neither the identity nor the target's place
/// in it changed meanwhile. Returns the primary, its cluster and the identifiers
/// locked. Identifiers found only once the primary is held are try-locked (see the
/// module doc).
pub(super) async fn lock_identity(
    tx: &mut Transaction<'_, Postgres>,
    target: &ForgetTarget,
) -> Result<(i64, Vec<StoredContact>, BTreeSet<IdentifierValue>), StoreError> {
    let mut locked: BTreeSet<IdentifierValue> = BTreeSet::new();
    let mut primary_held = false;
    loop {
        let primary = primary_of_target(tx, target).await?;
        let cluster = load_clusters(tx, &[primary]).await?;
        let values = identifier_values(&cluster);
        let unlocked: BTreeSet<IdentifierValue> = values.difference(&locked).cloned().collect();
        if primary_held {
            try_lock_identifier_values(tx, &unlocked).await?;
        } else {
            lock_identifier_values(tx, &unlocked).await?;
        }
        locked.extend(unlocked);
        primary_held = true;
        if lock_primary_of(tx, primary).await? != primary
            || primary_of_target(tx, target).await? != primary
        {
            continue;
        }
        let cluster = load_clusters(tx, &[primary]).await?;
        if identifier_values(&cluster).is_subset(&locked) {
            return Ok((primary, cluster, locked));
        }
    }
}

/// Locks a quarantined identifier, then every identifier of the clusters holding it,
/// then their primaries, until none of them changed meanwhile (a quarantine's split:
/// [`lock_identity`] for every identity holding the identifier). Returns the clusters
/// by primary, in id order. Identifiers found once a primary is held are try-locked.
pub(super) async fn lock_holders(
    tx: &mut Transaction<'_, Postgres>,
    quarantined: &Identifier,
) -> Result<Vec<(i64, Vec<StoredContact>)>, StoreError> {
    let (emails, phones): (Vec<&str>, Vec<&str>) = match quarantined {
        Identifier::Email(e) => (vec![e.as_str()], vec![]),
        Identifier::Phone(p) => (vec![], vec![p.as_str()]),
    };
    let mut locked: BTreeSet<IdentifierValue> = BTreeSet::new();
    let mut locked_primaries: BTreeSet<i64> = BTreeSet::new();
    let mut wanted = BTreeSet::from([identifier_value(quarantined)]);
    loop {
        let unlocked: BTreeSet<IdentifierValue> = wanted.difference(&locked).cloned().collect();
        if locked_primaries.is_empty() {
            lock_identifier_values(tx, &unlocked).await?;
        } else {
            try_lock_identifier_values(tx, &unlocked).await?;
        }
        locked.extend(unlocked);
        let mut primaries: Vec<i64> = sqlx::query_file_scalar!(
            "src/store/sql/hit_primaries.sql",
            &emails as &[&str],
            &phones as &[&str]
        )
        .fetch_all(&mut **tx)
        .await?;
        primaries.sort_unstable();
        primaries.dedup();
        let new: Vec<i64> = primaries
            .iter()
            .copied()
            .filter(|p| !locked_primaries.contains(p))
            .collect();
        let contacts = load_clusters(tx, &primaries).await?;
        wanted = identifier_values(&contacts);
        if !wanted.is_subset(&locked) {
            continue;
        }
        if !new.is_empty() {
            locked_primaries.extend(lock_primaries(tx, &new).await?);
            // Loaded again under the locks.
            continue;
        }
        // Every primary read is locked and was locked before this load. A primary
        // demoted before its lock was ours shows up linked to a primary not loaded as
        // one: go round again (the holders' primaries are read afresh).
        let mut clusters: BTreeMap<i64, Vec<StoredContact>> = BTreeMap::new();
        for contact in contacts {
            clusters
                .entry(contact.linked_id.unwrap_or(contact.id))
                .or_default()
                .push(contact);
        }
        let whole = clusters.iter().all(|(primary, cluster)| {
            cluster
                .iter()
                .any(|c| c.id == *primary && c.linked_id.is_none())
        });
        if whole {
            return Ok(clusters.into_iter().collect());
        }
    }
}

/// Locks the primaries of live contacts `a` and `b` in id order, following merges
/// committed while we waited (a review's merge: contacts only join a cluster there,
/// so no identifier lock is needed). Returns the two primaries.
pub(super) async fn lock_primaries_of(
    tx: &mut Transaction<'_, Postgres>,
    a: i64,
    b: i64,
) -> Result<(i64, i64), StoreError> {
    loop {
        let (pa, pb) = (primary_of(tx, a).await?, primary_of(tx, b).await?);
        lock_primaries(tx, &[pa, pb]).await?;
        if (primary_of(tx, a).await?, primary_of(tx, b).await?) == (pa, pb) {
            return Ok((pa, pb));
        }
    }
}

/// The distinct identifiers of contacts.
pub(super) fn identifier_values(contacts: &[StoredContact]) -> BTreeSet<IdentifierValue> {
    contacts
        .iter()
        .flat_map(|c| {
            let email = c.email.as_ref().map(|e| ('e', e.as_str().to_owned()));
            let phone = c.phone.as_ref().map(|p| ('p', p.as_str().to_owned()));
            email.into_iter().chain(phone)
        })
        .collect()
}

fn identifier_value(identifier: &Identifier) -> IdentifierValue {
    match identifier {
        Identifier::Email(e) => ('e', e.as_str().to_owned()),
        Identifier::Phone(p) => ('p', p.as_str().to_owned()),
    }
}

/// Locks the primary of live contact `id` and returns it, following a merge that
/// committed while we waited for the lock.
async fn lock_primary_of(tx: &mut Transaction<'_, Postgres>, id: i64) -> Result<i64, StoreError> {
    loop {
        let primary = primary_of(tx, id).await?;
        lock_primaries(tx, &[primary]).await?;
        if primary_of(tx, id).await? == primary {
            return Ok(primary);
        }
    }
}
