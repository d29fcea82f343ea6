//! Writing a plan (step 5 of "How reconciliation works"): the new contacts in one
//! statement, then the re-linked contacts, the outbox, the merge journal and refused
//! links in another, each as columns of arrays.

use super::journal::journal_origin;
use super::StoreError;
use crate::domain::reconcile::{Absorbed, ContactRef, Plan, Publish, Refusal};
use crate::domain::vocabulary::{ReviewReason, Source};
use crate::domain::{Email, Identity, Origin, Phone};
use chrono::{DateTime, Utc};
use sqlx::{Postgres, Transaction};

/// Writes `plan` (`origins[i]`: where input `i` came from; `newest_loaded`: the newest
/// contact of the snapshot). Returns the identity after each input, with every
/// contact's id.
pub(super) async fn write_plan(
    tx: &mut Transaction<'_, Postgres>,
    plan: &Plan,
    origins: &[&Origin],
    newest_loaded: Option<DateTime<Utc>>,
) -> Result<Vec<Identity>, StoreError> {
    let new_ids = insert_contacts(tx, plan, newest_loaded).await?;
    super::explain::record_origins(tx, plan, &new_ids, origins).await?;
    let resolve = |r: ContactRef| match r {
        ContactRef::Stored(id) => id,
        ContactRef::New(n) => new_ids[n],
    };
    let identities: Vec<Identity> = plan
        .outcomes
        .iter()
        .map(|o| o.identity.clone().map_ids(resolve))
        .collect();
    let writes = Writes::of(plan, &identities, resolve, origins);
    update_contacts_and_write_outbox(tx, plan, resolve, &writes).await?;
    Ok(identities)
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
    let mut ids: Vec<i64> = sqlx::query_file_scalar!(
        "src/store/sql/draw_contact_ids.sql",
        plan.inserts.len() as i32
    )
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
    sqlx::query_file!(
        "src/store/sql/insert_contacts.sql",
        &ids,
        &emails as &[Option<&str>],
        &phones as &[Option<&str>],
        &links as &[Option<i64>],
        &versions,
        newest_loaded as Option<DateTime<Utc>>
    )
    .execute(&mut **tx)
    .await?;
    Ok(ids)
}

/// The rows a batch writes besides contacts, as the columns of one statement
/// (`sql/update_contacts_and_write_outbox.sql`, whose comment names each parameter),
/// grouped by the table they go to.
#[derive(Default)]
struct Writes {
    journal: JournalColumns,
    reviews: ReviewColumns,
    outbox: OutboxColumns,
}

/// `merge_journal`: one element per merge or bridge. A row's `contact_ids` (and
/// `via_ids`) are a run of the flat array, as long as its count: integer arrays of
/// different lengths cannot be columns of one `unnest`.
#[derive(Default)]
struct JournalColumns {
    primaries: Vec<i64>,
    absorbed: Vec<Option<i64>>,
    watermarks: Vec<Option<i64>>,
    event_keys: Vec<Option<String>>,
    sources: Vec<&'static str>,
    contact_counts: Vec<i32>,
    contact_ids: Vec<i64>,
    /// `None` for a bridge: no via_ids are recorded.
    via_counts: Vec<Option<i32>>,
    via_ids: Vec<i64>,
}

/// `link_review`: one element per refused link queued for review.
#[derive(Default)]
struct ReviewColumns {
    reasons: Vec<&'static str>,
    primaries: Vec<i64>,
    others: Vec<Option<i64>>,
    event_keys: Vec<Option<String>>,
    sources: Vec<&'static str>,
}

/// `outbox`: one element per record.
#[derive(Default)]
struct OutboxColumns {
    keys: Vec<String>,
    payloads: Vec<String>,
}

impl Writes {
    /// What `plan` writes besides contacts: the records it publishes, the merge
    /// journal and the refused links.
    fn of(
        plan: &Plan,
        identities: &[Identity],
        resolve: impl Fn(ContactRef) -> i64 + Copy,
        origins: &[&Origin],
    ) -> Writes {
        let mut writes = Writes::default();
        for record in &plan.records {
            let input = match *record {
                Publish::Identity { input } | Publish::Merge { input, .. } => input,
            };
            let (key, payload) = record.render(plan, identities, resolve, origins[input]);
            writes.record(key, &payload);
        }
        for ((outcome, identity), origin) in plan.outcomes.iter().zip(identities).zip(origins) {
            for absorbed in &outcome.absorbed {
                writes.merge(identity.primary_id, absorbed, resolve, origin);
            }
            if let Some((a, b)) = outcome.bridge {
                writes.journal(
                    identity.primary_id,
                    None,
                    &[resolve(a), resolve(b)],
                    None,
                    origin,
                );
            }
            for refusal in &outcome.refused {
                writes.refusal(identity.primary_id, refusal, resolve, origin);
            }
        }
        writes
    }

    fn record(&mut self, key: i64, payload: &serde_json::Value) {
        self.outbox.keys.push(key.to_string());
        self.outbox.payloads.push(payload.to_string());
    }

    fn merge(
        &mut self,
        survivor: i64,
        absorbed: &Absorbed,
        resolve: impl Fn(ContactRef) -> i64,
        origin: &Origin,
    ) {
        let moved: Vec<i64> = absorbed.moved.iter().map(|&m| resolve(m)).collect();
        let via: Vec<i64> = absorbed.via.iter().map(|&c| resolve(c)).collect();
        self.journal(
            survivor,
            Some((resolve(absorbed.primary), resolve(absorbed.watermark))),
            &moved,
            Some(&via),
            origin,
        );
    }

    fn journal(
        &mut self,
        primary: i64,
        absorbed_and_watermark: Option<(i64, i64)>,
        contacts: &[i64],
        via: Option<&[i64]>,
        origin: &Origin,
    ) {
        let (key, source) = journal_origin(origin);
        let journal = &mut self.journal;
        journal.primaries.push(primary);
        journal
            .absorbed
            .push(absorbed_and_watermark.map(|(a, _)| a));
        journal
            .watermarks
            .push(absorbed_and_watermark.map(|(_, w)| w));
        journal.event_keys.push(key);
        journal.sources.push(Source::from(source).as_str());
        journal.contact_counts.push(count(contacts));
        journal.contact_ids.extend_from_slice(contacts);
        journal.via_counts.push(via.map(count));
        journal.via_ids.extend(via.into_iter().flatten());
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
        let reviews = &mut self.reviews;
        reviews
            .reasons
            .push(ReviewReason::from(refusal.reason).as_str());
        reviews.primaries.push(primary);
        reviews.others.push(refusal.other.map(resolve));
        reviews.event_keys.push(key);
        reviews.sources.push(source.as_str());
    }

    fn is_empty(&self) -> bool {
        self.outbox.keys.is_empty()
            && self.journal.primaries.is_empty()
            && self.reviews.reasons.is_empty()
    }
}

/// A run's length, as the statement's `int4` counts.
fn count(ids: &[i64]) -> i32 {
    i32::try_from(ids.len()).expect("a merge moves fewer than 2^31 contacts")
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
    let (journal, reviews, outbox) = (&writes.journal, &writes.reviews, &writes.outbox);
    sqlx::query_file!(
        "src/store/sql/update_contacts_and_write_outbox.sql",
        // contact
        &ids,
        &links as &[Option<i64>],
        &versions,
        // merge_journal
        &journal.primaries,
        &journal.absorbed as &[Option<i64>],
        &journal.watermarks as &[Option<i64>],
        &journal.event_keys as &[Option<String>],
        &journal.sources as &[&str],
        &journal.contact_counts,
        &journal.contact_ids,
        &journal.via_counts as &[Option<i32>],
        &journal.via_ids,
        // link_review
        &reviews.reasons as &[&str],
        &reviews.primaries,
        &reviews.others as &[Option<i64>],
        &reviews.event_keys as &[Option<String>],
        &reviews.sources as &[&str],
        // outbox
        &outbox.keys,
        &outbox.payloads
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}
