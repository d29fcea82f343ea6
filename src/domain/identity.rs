//! The consolidated identity (§4) and the records published about it (§6).

use serde::Serialize;
use serde_json::Value;

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

/// The `contact` object of the published contract, both spellings of the primary id.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ContactBody<'a> {
    /// Spelled as the published contract spells it; clients depend on it.
    #[serde(rename = "primaryContatctId")]
    primary_contatct_id: i64,
    primary_contact_id: i64,
    emails: &'a [String],
    phone_numbers: &'a [String],
    secondary_contact_ids: &'a [i64],
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

    /// `{"contact": {...}}`, the answer of `POST /identify` and `GET /identify`.
    pub fn to_response(&self) -> Value {
        serde_json::json!({ "contact": self.contact_body() })
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
