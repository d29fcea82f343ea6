//! The consolidated identity (§4) and the records published about it (§6).

use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::schema::{Array, ArrayBuilder, Object, ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;
use utoipa::ToSchema;

/// One identity: a primary contact and everything linked to it.
///
/// `emails` and `phone_numbers` hold the primary's value first, then the others in
/// creation order, without duplicates; `secondary_ids` are in creation order.
/// `I` is the contact id: `i64` once stored, a plan reference before that.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity<I = i64> {
    pub primary_id: I,
    pub emails: Vec<String>,
    pub phone_numbers: Vec<String>,
    pub secondary_ids: Vec<I>,
}

impl<I> Identity<I> {
    pub(crate) fn map_ids<J>(self, mut f: impl FnMut(I) -> J) -> Identity<J> {
        Identity {
            primary_id: f(self.primary_id),
            emails: self.emails,
            phone_numbers: self.phone_numbers,
            secondary_ids: self.secondary_ids.into_iter().map(f).collect(),
        }
    }
}

/// The `contact` object of the published contract (§4): the same in the HTTP answers
/// and in the identity records.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = IdentityContact, title = "Consolidated identity (docs/contract.md §4)")]
pub struct ContactBody<'a> {
    /// The primary contact's id, spelled as the published contract spells it (clients
    /// depend on it). Same value as primaryContactId.
    #[serde(rename = "primaryContatctId")]
    #[schema(minimum = 1)]
    primary_contatct_id: i64,
    /// The primary contact's id, correctly spelled.
    #[schema(minimum = 1)]
    primary_contact_id: i64,
    #[schema(schema_with = stored_emails)]
    emails: &'a [String],
    #[schema(schema_with = stored_phones)]
    phone_numbers: &'a [String],
    #[schema(schema_with = contact_ids)]
    secondary_contact_ids: &'a [i64],
}

/// `{"contact": {...}}`, the answer of `POST /identify` and `GET /identify`.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = IdentityResponse, examples(json!({"contact": {
    "primaryContatctId": 1, "primaryContactId": 1,
    "emails": ["lorraine@hillvalley.edu", "mcfly@hillvalley.edu"],
    "phoneNumbers": ["123456"], "secondaryContactIds": [23]}})))]
pub struct IdentityResponse<'a> {
    contact: ContactBody<'a>,
}

fn unique_array(description: &str, items: ObjectBuilder) -> Array {
    ArrayBuilder::new()
        .description(Some(description))
        .items(RefOr::T(Schema::Object(items.build())))
        .unique_items(true)
        .build()
}

fn stored_emails() -> Array {
    unique_array(
        "The primary's email first (if it has one), then the others in creation order.",
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(3))
            .max_length(Some(super::input::MAX_EMAIL_LEN))
            .pattern(Some(r"^\S+@[^\s@]+$")),
    )
}

fn stored_phones() -> Array {
    unique_array(
        "The primary's phone number first (if it has one), then the others in creation order. Always strings.",
        ObjectBuilder::new()
            .schema_type(Type::String)
            .min_length(Some(1))
            .max_length(Some(super::input::MAX_PHONE_LEN))
            .pattern(Some(r"^\+?[0-9 ().-]+$")),
    )
}

fn contact_ids() -> Array {
    unique_array(
        "Ids of the secondary contacts, in creation order.",
        ObjectBuilder::new()
            .schema_type(Type::Integer)
            .minimum(Some(1)),
    )
}

impl Identity {
    fn contact_body(&self) -> ContactBody<'_> {
        ContactBody {
            primary_contatct_id: self.primary_id,
            primary_contact_id: self.primary_id,
            emails: &self.emails,
            phone_numbers: &self.phone_numbers,
            secondary_contact_ids: &self.secondary_ids,
        }
    }

    /// The answer of `POST /identify` and `GET /identify`.
    pub(crate) fn response(&self) -> IdentityResponse<'_> {
        IdentityResponse {
            contact: self.contact_body(),
        }
    }

    /// [`Identity::response`] as JSON.
    pub(crate) fn to_response(&self) -> Value {
        serde_json::to_value(self.response()).expect("plain data serialises")
    }
}

/// Where a reconciliation request came from; it is echoed in the published records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// `POST /identify`; `request_id` is the request's `x-request-id` (kept with the
    /// contacts it creates, for explain; not published).
    Http { request_id: Option<String> },
    /// An operator's action (`unmerge`, `review`) or the split of a quarantine
    /// (`quarantine`); published as the record's `source`.
    Admin { action: &'static str },
    /// An order-contact event; `ledger_key` is its idempotency key (§6).
    Event {
        event_id: Option<String>,
        order_id: Option<String>,
        ledger_key: String,
    },
}

impl Origin {
    /// What a record says of this origin.
    fn provenance(&self) -> Provenance<'_> {
        match self {
            Origin::Http { .. } => Provenance::Source("http"),
            Origin::Admin { action } => Provenance::Source(action),
            Origin::Event {
                event_id, order_id, ..
            } => Provenance::Event {
                event_id: event_id.as_deref(),
                order_id: order_id.as_deref(),
            },
        }
    }
}

enum Provenance<'a> {
    Event {
        event_id: Option<&'a str>,
        order_id: Option<&'a str>,
    },
    Source(&'a str),
}

/// A record on the output topic (identities), keyed by the primary contact id as a
/// decimal string: the consolidated identity (docs/contract.md §4) after one applied input,
/// with the input's origin, the identity's version and whether the input changed it.
/// One record for every valid event; one for every POST /identify that changed the
/// identity (source http); one for each side of an undone merge (source unmerge); one
/// for a merge made by approving a review entry (source review); one for each identity
/// a quarantined identifier's split leaves (source quarantine). An erased identity
/// gets a tombstone (a null value, not JSON) under every key it was published under.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum IdentityRecord<'a> {
    Event(IdentityFromEvent<'a>),
    Other(IdentityFromOther<'a>),
}

/// An identity record caused by an event.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct IdentityFromEvent<'a> {
    contact: ContactBody<'a>,
    /// The event's eventId; null when the event had none (its key was then
    /// topic/partition/offset).
    #[schema(required = true, max_length = 256)]
    event_id: Option<&'a str>,
    /// The event's orderId, or null.
    #[schema(required = true, max_length = 256)]
    order_id: Option<&'a str>,
    /// Version of this identity: strictly increasing per key.
    #[schema(minimum = 1)]
    version: i64,
    /// Whether this input changed the identity (inserted a contact or merged
    /// identities).
    changed: bool,
}

/// An identity record caused by POST /identify or an operator's action.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct IdentityFromOther<'a> {
    contact: ContactBody<'a>,
    /// `http` for POST /identify, `unmerge` for an undone merge (both identities are
    /// published), `review` for a merge made by approving a review entry,
    /// `quarantine` for a split of what a quarantined identifier had linked (every
    /// identity it leaves is published).
    #[schema(schema_with = identity_sources)]
    source: &'a str,
    /// Version of this identity: strictly increasing per key.
    #[schema(minimum = 1)]
    version: i64,
    /// Whether this input changed the identity (inserted a contact or merged
    /// identities).
    changed: bool,
}

/// A record on the output topic (identities), keyed by the id of a primary that an
/// input merged into an older identity (decimal string). It is the last word on that
/// key: a log-compacted topic keeps it as the current record of the absorbed identity.
/// Published in the same transaction as the surviving identity's record.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum MergeRecord<'a> {
    Event(MergeFromEvent<'a>),
    Other(MergeFromOther<'a>),
}

/// A merge record caused by an event.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct MergeFromEvent<'a> {
    /// Primary contact id of the surviving identity.
    #[schema(minimum = 1)]
    merged_into: i64,
    /// The absorbed primary's id (the record's key), now a secondary of mergedInto.
    #[schema(minimum = 1)]
    primary_contact_id: i64,
    /// The eventId of the event that caused the merge; null when it had none.
    #[schema(required = true, max_length = 256)]
    event_id: Option<&'a str>,
    /// The orderId of the event that caused the merge, or null.
    #[schema(required = true, max_length = 256)]
    order_id: Option<&'a str>,
    /// The absorbed identity's version: one more than its last identity record.
    #[schema(minimum = 1)]
    version: i64,
    #[schema(schema_with = always_true)]
    changed: bool,
}

/// A merge record caused by POST /identify or by approving a review entry.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub(crate) struct MergeFromOther<'a> {
    /// Primary contact id of the surviving identity.
    #[schema(minimum = 1)]
    merged_into: i64,
    /// The absorbed primary's id (the record's key), now a secondary of mergedInto.
    #[schema(minimum = 1)]
    primary_contact_id: i64,
    /// `http` for POST /identify, `review` for an approved review entry.
    #[schema(schema_with = merge_sources)]
    source: &'a str,
    /// The absorbed identity's version: one more than its last identity record.
    #[schema(minimum = 1)]
    version: i64,
    #[schema(schema_with = always_true)]
    changed: bool,
}

fn identity_sources() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(["http", "unmerge", "review", "quarantine"]))
        .build()
}

fn merge_sources() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(["http", "review"]))
        .build()
}

fn always_true() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::Boolean)
        .enum_values(Some([true]))
        .build()
}

/// The record published on the identities topic for one applied request, keyed by
/// the primary id: §4's object plus version, changed and the request's origin.
pub fn identity_record(identity: &Identity, version: i64, changed: bool, origin: &Origin) -> Value {
    let contact = identity.contact_body();
    let record = match origin.provenance() {
        Provenance::Event { event_id, order_id } => IdentityRecord::Event(IdentityFromEvent {
            contact,
            event_id,
            order_id,
            version,
            changed,
        }),
        Provenance::Source(source) => IdentityRecord::Other(IdentityFromOther {
            contact,
            source,
            version,
            changed,
        }),
    };
    serde_json::to_value(record).expect("plain data serialises")
}

/// The record keyed by an absorbed primary: it now lives on as part of `into`.
pub fn merge_record(absorbed: i64, into: i64, version: i64, origin: &Origin) -> Value {
    let record = match origin.provenance() {
        Provenance::Event { event_id, order_id } => MergeRecord::Event(MergeFromEvent {
            merged_into: into,
            primary_contact_id: absorbed,
            event_id,
            order_id,
            version,
            changed: true,
        }),
        Provenance::Source(source) => MergeRecord::Other(MergeFromOther {
            merged_into: into,
            primary_contact_id: absorbed,
            source,
            version,
            changed: true,
        }),
    };
    serde_json::to_value(record).expect("plain data serialises")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_response_uses_both_spellings_of_the_primary_id() {
        let identity = Identity {
            primary_id: 1,
            emails: vec![
                "lorraine@hillvalley.edu".into(),
                "mcfly@hillvalley.edu".into(),
            ],
            phone_numbers: vec!["123456".into()],
            secondary_ids: vec![23],
        };
        assert_eq!(
            identity.to_response(),
            serde_json::json!({"contact": {
                "primaryContatctId": 1, "primaryContactId": 1,
                "emails": ["lorraine@hillvalley.edu", "mcfly@hillvalley.edu"],
                "phoneNumbers": ["123456"], "secondaryContactIds": [23]}})
        );
    }
}
