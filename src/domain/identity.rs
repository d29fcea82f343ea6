//! The consolidated identity (§4) and the records published about it (§6).

use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::schema::{Array, ArrayBuilder, ObjectBuilder, Schema, Type};
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
    pub fn map_ids<J>(self, mut f: impl FnMut(I) -> J) -> Identity<J> {
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
#[schema(as = IdentityContact, title = "Consolidated identity (CONTRACT §4)")]
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
    pub fn response(&self) -> IdentityResponse<'_> {
        IdentityResponse {
            contact: self.contact_body(),
        }
    }

    /// [`Identity::response`] as JSON.
    pub fn to_response(&self) -> Value {
        serde_json::to_value(self.response()).expect("plain data serialises")
    }
}

/// Where a reconciliation request came from; it is echoed in the published records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// `POST /identify`; `request_id` is the request's `x-request-id` (kept with the
    /// contacts it creates, for explain; not published).
    Http { request_id: Option<String> },
    /// An operator's action (`unmerge`); published as the record's `source`.
    Admin { action: &'static str },
    /// An order-contact event; `ledger_key` is its idempotency key (§6).
    Event {
        event_id: Option<String>,
        order_id: Option<String>,
        ledger_key: String,
    },
}

impl Origin {
    fn describe(&self, record: &mut serde_json::Map<String, Value>) {
        match self {
            Origin::Http { .. } => {
                record.insert("source".into(), "http".into());
            }
            Origin::Admin { action } => {
                record.insert("source".into(), (*action).into());
            }
            Origin::Event {
                event_id, order_id, ..
            } => {
                record.insert("eventId".into(), event_id.clone().into());
                record.insert("orderId".into(), order_id.clone().into());
            }
        }
    }
}

/// The record published on the identities topic for one applied request, keyed by
/// the primary id: §4's object plus version, changed and the request's origin.
pub fn identity_record(identity: &Identity, version: i64, changed: bool, origin: &Origin) -> Value {
    let mut record = serde_json::Map::new();
    record.insert(
        "contact".into(),
        serde_json::to_value(identity.contact_body()).expect("plain data serialises"),
    );
    origin.describe(&mut record);
    record.insert("version".into(), version.into());
    record.insert("changed".into(), changed.into());
    Value::Object(record)
}

/// The record keyed by an absorbed primary: it now lives on as part of `into`.
pub fn merge_record(absorbed: i64, into: i64, version: i64, origin: &Origin) -> Value {
    let mut record = serde_json::Map::new();
    record.insert("mergedInto".into(), into.into());
    record.insert("primaryContactId".into(), absorbed.into());
    origin.describe(&mut record);
    record.insert("version".into(), version.into());
    record.insert("changed".into(), true.into());
    Value::Object(record)
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
