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
use super::responses::{Internal, RequestTimeout, Unauthorized, Unavailable};
use super::{ApiError, AppState};
use crate::domain::InputError;
use crate::views::explain::{explanation_json, ExplainBody};
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::Json;
use serde_json::Value;

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
