//! `GET /identities/{id}/explain`: why the identity's contacts belong together. The
//! JSON shape here is also what the `explain` command prints.
//!
//! Emails and phone numbers appear only to callers who may see them: with
//! `http.auth_token` set, every caller got past the token and sees them; with no
//! token configured, nobody is known, and the answer carries ids, fields and origins
//! only (an explain is reached by contact id, so anyone able to reach the port could
//! otherwise read every identity by counting ids). The `explain` command talks to
//! PostgreSQL directly, as an operator, and shows them.

use super::{ApiError, AppState};
use crate::domain::InputError;
use crate::store::{Evidence, Explanation, InputOrigin, Review};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ExplainBody<'a> {
    primary_contact_id: i64,
    /// Whether emails and phone numbers are shown.
    values_shown: bool,
    contacts: Vec<ContactBody>,
    merges: Vec<MergeBody>,
    refused_links: &'a [Review],
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ContactBody {
    contact_id: i64,
    created_at: DateTime<Utc>,
    input: InputBody,
    tied_to: Option<EvidenceBody>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct MergeBody {
    at: DateTime<Utc>,
    survivor_id: i64,
    absorbed_id: i64,
    input: InputBody,
    via: Vec<EvidenceBody>,
    undone_at: Option<DateTime<Utc>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct InputBody {
    /// `event`, `http`, `admin` or `unknown`.
    source: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    event_id: Option<String>,
    /// The `x-request-id` of the `POST /identify` request (source `http`).
    #[serde(skip_serializing_if = "Option::is_none")]
    request_id: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct EvidenceBody {
    contact_id: i64,
    field: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<String>,
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
        refused_links: &explanation.refused,
    };
    serde_json::to_value(body).expect("plain data serialises")
}

/// `GET /identities/{id}/explain`.
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
