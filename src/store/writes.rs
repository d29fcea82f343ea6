//! Writing a plan (step 5 of "How reconciliation works"): the new contacts in one
//! statement, then the re-linked contacts, the outbox, the merge journal and refused
//! links in another, each as columns of arrays.

use super::journal::journal_origin;
use super::StoreError;
use crate::domain::reconcile::{Absorbed, ContactRef, Plan, Publish, Refusal};
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
                writes.journal(identity.primary_id, None, &[resolve(a), resolve(b)], origin);
            }
            for refusal in &outcome.refused {
                writes.refusal(identity.primary_id, refusal, resolve, origin);
            }
        }
        writes
    }

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
    sqlx::query_file!(
        "src/store/sql/update_contacts_and_write_outbox.sql",
        &ids,
        &links as &[Option<i64>],
        &versions,
        &writes.keys,
        &writes.payloads,
        &writes.journal_primaries,
        &writes.absorbed as &[Option<i64>],
        &writes.journal_contacts,
        &writes.watermarks as &[Option<i64>],
        &writes.merge_keys as &[Option<String>],
        &writes.merge_sources as &[&str],
        &writes.reasons as &[&str],
        &writes.review_primaries,
        &writes.review_others as &[Option<i64>],
        &writes.review_keys as &[Option<String>],
        &writes.review_sources as &[&str],
        &writes.journal_via as &[Option<String>]
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}
