//! `GET /identities/{id}/explain`: why the identity's contacts belong together. The
//! JSON shape here is also what the `explain` command prints.
//!
//! Emails and phone numbers appear only to callers who may see them: with
//! `http.auth_token` set, every caller got past the token and sees them; with no
//! token configured, nobody is known, and the answer carries ids, fields and origins
//! only (an explain is reached by contact id, so anyone able to reach the port could
//! otherwise read every identity by counting ids). The `explain` command talks to
//! PostgreSQL directly, as an operator, and shows them.

use super::error::ErrorAnswer;
use super::openapi::{Internal, RequestTimeout, Unauthorized, Unavailable};
use super::{ApiError, AppState};
use crate::domain::InputError;
use crate::store::{Evidence, Explanation, InputOrigin, Review};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use utoipa::openapi::schema::{Object, ObjectBuilder, Type};
use utoipa::ToSchema;

/// Why the identity's contacts are together.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = Explanation)]
pub(super) struct ExplainBody<'a> {
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
pub(super) struct ContactBody {
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
pub(super) struct MergeBody {
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
pub(super) struct SplitBody {
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
pub(super) struct InputBody {
    #[schema(schema_with = input_source)]
    source: &'static str,
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
pub(super) struct EvidenceBody {
    contact_id: i64,
    #[schema(schema_with = crate::store::identifier_field)]
    field: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
}

fn input_source() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(["event", "http", "admin", "unknown"]))
        .build()
}

fn input(origin: &InputOrigin) -> InputBody {
    let (source, event_key, event_id, request_id) = match origin {
        InputOrigin::Event {
            event_key,
            event_id,
        } => ("event", Some(event_key.clone()), event_id.clone(), None),
        InputOrigin::Http { request_id } => ("http", None, None, request_id.clone()),
        InputOrigin::Admin => ("admin", None, None, None),
        InputOrigin::Unknown => ("unknown", None, None, None),
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

/// Why the contacts of the identity contact {id} belongs to are together: the input behind each contact and merge, and the values tying them
///
/// Emails and phone numbers (`value`) are shown when http.auth_token is configured (the
/// caller then holds it) or the caller holds the admin token; otherwise the answer has
/// ids, fields and origins only (`valuesShown` false).
#[utoipa::path(
    get,
    path = "/identities/{id}/explain",
    operation_id = "explainIdentity",
    tag = "identity",
    security(("bearerAuth" = []), ()),
    params(("id" = i64, Path, description = "A contact id (1 to 2^63-1; anything else is a 400 invalid_value).", minimum = 1, maximum = 9223372036854775807_i64)),
    responses(
        (status = 200, description = "The explanation.", body = ExplainBody),
        (status = 400, description = "The id is not a positive integer (code invalid_value).", body = ErrorAnswer),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No live contact has this id (code not_found).", body = ErrorAnswer),
        (status = 408, response = RequestTimeout),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    )
)]
pub(super) async fn explain(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let id = match id {
        Ok(Path(id)) if id > 0 => id,
        _ => {
            return Err(InputError::Invalid {
                field: "id",
                expected: "a contact id (a positive integer)",
            }
            .into())
        }
    };
    let explanation = state
        .store
        .explain(id)
        .await
        .map_err(|e| ApiError::admin(e, "refused"))?;
    // Past the API guard: with an API token configured, the caller holds it; the
    // admin token always sees values.
    let show_values = state.auth_token.is_some()
        || state
            .admin_token
            .as_ref()
            .is_some_and(|token| token.admits(&headers));
    Ok(Json(explanation_json(&explanation, show_values)))
}
