//! The answer of `GET /identities/{id}/explain` and of the `explain` command: why an
//! identity's contacts belong together (see `crate::http::explain` for who sees values).

use crate::store::{Evidence, Explanation, InputOrigin, Review};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

/// Why the identity's contacts are together.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = Explanation)]
pub(crate) struct ExplainBody<'a> {
    primary_contact_id: i64,
    /// Whether emails and phone numbers are shown.
    values_shown: bool,
    /// Every live contact, oldest first.
    contacts: Vec<ContactBody>,
    /// Merges journalled for these contacts, oldest first, undone ones included.
    merges: Vec<MergeBody>,
    /// Splits of a quarantined identifier's links journalled for these contacts
    /// (the identity was split from, or split off), oldest first.
    splits: Vec<SplitBody>,
    /// Review entries naming these contacts, decided ones included.
    refused_links: &'a [Review],
}

/// One live contact of the identity and the input that created it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = ExplainedContact)]
pub(crate) struct ContactBody {
    contact_id: i64,
    created_at: DateTime<Utc>,
    input: InputBody,
    /// The oldest earlier contact sharing this one's email (else its phone): an edge of
    /// the evidence tree. Null for the primary and for contacts that joined through a
    /// merge only.
    #[schema(required = true)]
    tied_to: Option<EvidenceBody>,
}

/// One journalled merge and the input that bridged its two sides.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = ExplainedMerge)]
pub(crate) struct MergeBody {
    at: DateTime<Utc>,
    survivor_id: i64,
    absorbed_id: i64,
    input: InputBody,
    /// The email and the phone the bridging input carried, with the contacts holding
    /// them (empty for merges journalled before this was recorded, and for approved
    /// reviews).
    via: Vec<EvidenceBody>,
    #[schema(required = true)]
    undone_at: Option<DateTime<Utc>>,
}

/// Contacts that a quarantined identifier (`quarantineId`) alone had linked to the
/// identity of `fromPrimaryId`: `primaryId` and its secondaries `movedContactIds`
/// became an identity of their own.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = ExplainedSplit)]
pub(crate) struct SplitBody {
    at: DateTime<Utc>,
    from_primary_id: i64,
    primary_id: i64,
    moved_contact_ids: Vec<i64>,
    #[schema(required = true)]
    quarantine_id: Option<i64>,
}

/// The input behind a contact or a merge: an event (its idempotency key and eventId),
/// an HTTP request, an operator's approval, or unknown (created before origins were
/// recorded).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = ExplainInput)]
pub(crate) struct InputBody {
    #[schema(inline)]
    source: InputKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_id: Option<String>,
    /// The `x-request-id` of the `POST /identify` request (source `http`).
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<String>,
}

/// A value and the contact holding it; `value` only when valuesShown.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = ExplainEvidence)]
pub(crate) struct EvidenceBody {
    contact_id: i64,
    #[schema(schema_with = crate::store::identifier_field)]
    field: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
}

// `source` of `InputBody`: the variants of `InputOrigin`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
enum InputKind {
    Event,
    Http,
    Admin,
    Unknown,
}

fn input(origin: &InputOrigin) -> InputBody {
    let (source, event_key, event_id, request_id) = match origin {
        InputOrigin::Event {
            event_key,
            event_id,
        } => (
            InputKind::Event,
            Some(event_key.clone()),
            event_id.clone(),
            None,
        ),
        InputOrigin::Http { request_id } => (InputKind::Http, None, None, request_id.clone()),
        InputOrigin::Admin => (InputKind::Admin, None, None, None),
        InputOrigin::Unknown => (InputKind::Unknown, None, None, None),
    };
    InputBody {
        source,
        event_key,
        event_id,
        request_id,
    }
}

/// The explanation as JSON; `show_values` includes emails and phone numbers.
pub fn explanation_json(explanation: &Explanation, show_values: bool) -> Value {
    let evidence = |e: &Evidence| EvidenceBody {
        contact_id: e.contact_id,
        field: e.field,
        value: show_values.then(|| e.value.clone()),
    };
    let body = ExplainBody {
        primary_contact_id: explanation.primary_id,
        values_shown: show_values,
        contacts: explanation
            .contacts
            .iter()
            .map(|c| ContactBody {
                contact_id: c.contact_id,
                created_at: c.created_at,
                input: input(&c.origin),
                tied_to: c.tied_to.as_ref().map(evidence),
            })
            .collect(),
        merges: explanation
            .merges
            .iter()
            .map(|m| MergeBody {
                at: m.at,
                survivor_id: m.survivor_id,
                absorbed_id: m.absorbed_id,
                input: input(&m.origin),
                via: m.via.iter().map(evidence).collect(),
                undone_at: m.undone_at,
            })
            .collect(),
        splits: explanation
            .splits
            .iter()
            .map(|s| SplitBody {
                at: s.at,
                from_primary_id: s.from_primary_id,
                primary_id: s.primary_id,
                moved_contact_ids: s.moved_contact_ids.clone(),
                quarantine_id: s.quarantine_id,
            })
            .collect(),
        refused_links: &explanation.refused,
    };
    serde_json::to_value(body).expect("plain data serialises")
}
