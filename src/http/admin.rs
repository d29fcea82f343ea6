//! An identity's history, and the operators' endpoints: undo a merge, erase a person.
//! The JSON shapes here are also what the `unmerge` and `forget` commands print.

use super::error::ErrorAnswer;
use super::openapi::inputs::ForgetRequest;
use super::responses::{
    AdminDisabled, Internal, PayloadTooLarge, RequestTimeout, Unauthorized, Unavailable,
    UnsupportedMediaType,
};
use super::{ApiError, AppState};
use crate::domain::{json_u64, Email, InputError, Phone};
use crate::store::ForgetTarget;
use crate::views::{
    forgotten_json, history_json, unmerged_json, ForgetAnswer, HistoryAnswer, UnmergeAnswer,
};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::Value;

/// Every admin route, behind the admin guard ([`super::auth::require_admin_token`]).
/// A new admin route is added here and nowhere else.
pub(super) fn routes(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/identities/{id}/unmerge", post(unmerge))
        .route("/forget", post(forget))
        .route("/reviews", get(super::reviews::list))
        .route("/reviews/{id}/approve", post(super::reviews::approve))
        .route("/reviews/{id}/reject", post(super::reviews::reject))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            super::auth::require_admin_token,
        ))
}

/// What happened to an identity, oldest first
#[utoipa::path(
    get,
    path = "/identities/{id}/history",
    operation_id = "identityHistory",
    tag = "identity",
    security(("bearerAuth" = []), ()),
    params(("id" = i64, Path, description = "A contact id (1 to 2^63-1; anything else is a 400 invalid_value).", minimum = 1, maximum = 9223372036854775807_i64)),
    responses(
        (status = 200, description = "The identity's history.", body = HistoryAnswer),
        (status = 400, description = "The id is not a positive integer (code invalid_value).", body = ErrorAnswer),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No live contact has this id (code not_found).", body = ErrorAnswer),
        (status = 408, response = RequestTimeout),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    )
)]
pub(super) async fn history(
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let history = state
        .store
        .history(contact_id(id)?)
        .await
        .map_err(|e| ApiError::admin(e, "refused"))?;
    Ok(Json(history_json(&history)))
}

/// Undo the merge that absorbed the identity whose former primary is {id}
#[utoipa::path(
    post,
    path = "/identities/{id}/unmerge",
    operation_id = "unmergeIdentity",
    tag = "admin",
    security(("bearerAuth" = [])),
    params(("id" = i64, Path, description = "A contact id (1 to 2^63-1; anything else is a 400 invalid_value).", minimum = 1, maximum = 9223372036854775807_i64)),
    responses(
        (status = 200, description = "The restored identity and the identity it had been merged into, as they are now.", body = UnmergeAnswer),
        (status = 400, description = "The id is not a positive integer (code invalid_value).", body = ErrorAnswer),
        (status = 401, response = Unauthorized),
        (status = 403, response = AdminDisabled),
        (status = 404, description = "No contact has this id (code not_found).", body = ErrorAnswer),
        (status = 408, response = RequestTimeout),
        (status = 409, description = "The unmerge is refused; the message says why, e.g. the contact was never merged or later inputs depend on the merge (code unmerge_refused).", body = ErrorAnswer),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    )
)]
pub(super) async fn unmerge(
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let unmerged = state
        .store
        .unmerge(contact_id(id)?)
        .await
        .map_err(|e| ApiError::admin(e, "unmerge_refused"))?;
    Ok(Json(unmerged_json(&unmerged)))
}

/// Forget the identity an email, phone number or contact id belongs to
///
/// Right to erasure: every contact of the identity is forgotten; later inputs carrying
/// its identifiers answer 410 (code forgotten).
#[utoipa::path(
    post,
    path = "/forget",
    tag = "admin",
    security(("bearerAuth" = [])),
    request_body(content = ForgetRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "What was forgotten.", body = ForgetAnswer),
        (status = 400, description = "Not exactly one of email, phoneNumber and id, or a bad value (codes malformed_json, wrong_type, no_identifier, too_long, invalid_value).", body = ErrorAnswer),
        (status = 401, response = Unauthorized),
        (status = 403, response = AdminDisabled),
        (status = 404, description = "Nothing matches (code not_found).", body = ErrorAnswer),
        (status = 408, response = RequestTimeout),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    )
)]
pub(super) async fn forget(
    State(state): State<AppState>,
    super::JsonObject(object): super::JsonObject,
) -> Result<Json<Value>, ApiError> {
    let target = forget_target(&object, state.store.settings().normalization)?;
    let forgotten = state
        .store
        .forget(&target)
        .await
        .map_err(|e| ApiError::admin(e, "refused"))?;
    Ok(Json(forgotten_json(&forgotten)))
}

fn contact_id(id: Result<Path<i64>, PathRejection>) -> Result<i64, ApiError> {
    match id {
        Ok(Path(id)) if id > 0 => Ok(id),
        _ => Err(InputError::Invalid {
            field: "id",
            expected: "a contact id (a positive integer)",
        }
        .into()),
    }
}

/// The body of `POST /forget`. Any other member makes the body invalid: an erasure
/// never runs on a body the contract calls invalid. The members stay raw JSON here so
/// that a type error is ours and never echoes the value (serde's would).
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct ForgetBody {
    #[serde(default)]
    email: Option<Value>,
    #[serde(default)]
    phone_number: Option<Value>,
    #[serde(default)]
    id: Option<Value>,
}

/// Exactly one of `email`, `phoneNumber` and `id`, and nothing else.
fn forget_target(
    object: &serde_json::Map<String, Value>,
    mode: crate::domain::Normalization,
) -> Result<ForgetTarget, InputError> {
    let body: ForgetBody = serde_json::from_value(Value::Object(object.clone()))
        // With raw members, an unknown member is the only possible error; its name is
        // the client's text and is not echoed.
        .map_err(|_| {
            InputError::WrongType(
                "unknown member: give exactly one of `email`, `phoneNumber` and `id`, nothing else"
                    .into(),
            )
        })?;
    let given: Vec<(&str, &Value)> = [
        ("email", &body.email),
        ("phoneNumber", &body.phone_number),
        ("id", &body.id),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
    .collect();
    let [(field, value)] = given[..] else {
        return Err(InputError::WrongType(
            "give exactly one of `email`, `phoneNumber` and `id`".into(),
        ));
    };
    let absent = || InputError::NoIdentifier;
    match (field, value) {
        ("email", Value::String(s)) => Ok(ForgetTarget::Email(
            Email::parse(s, mode)?.ok_or_else(absent)?,
        )),
        ("phoneNumber", Value::String(s)) => Ok(ForgetTarget::Phone(
            Phone::parse(s, mode)?.ok_or_else(absent)?,
        )),
        ("phoneNumber", Value::Number(n)) if json_u64(n).is_some() => Ok(ForgetTarget::Phone(
            Phone::parse(&json_u64(n).expect("checked").to_string(), mode)?.ok_or_else(absent)?,
        )),
        ("id", Value::Number(n)) => match json_u64(n).and_then(|id| i64::try_from(id).ok()) {
            Some(id) if id > 0 => Ok(ForgetTarget::Id(id)),
            _ => Err(InputError::Invalid {
                field: "id",
                expected: "a contact id (an integer from 1 to 2^63-1)",
            }),
        },
        _ => Err(InputError::WrongType(format!(
            "`{field}` has the wrong type"
        ))),
    }
}
