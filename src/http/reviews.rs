//! The review queue's admin routes: `GET /reviews`, `POST /reviews/{id}/approve`,
//! `POST /reviews/{id}/reject`. The JSON shapes here are also what the `reviews`
//! commands print.

use super::error::ErrorAnswer;
use super::responses::{AdminDisabled, Internal, Unauthorized, Unavailable};
use super::{ApiError, AppState};
use crate::domain::InputError;
use crate::store::ReviewPage;
use crate::views::reviews::{review_decision_json, review_page_json, DecisionBody, ReviewQuery};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::Json;
use serde_json::Value;

/// Pending entries of the review queue, oldest first: links refused by a cap, a keep-apart decision or a quarantined identifier
#[utoipa::path(
    get,
    path = "/reviews",
    operation_id = "listReviews",
    tag = "admin",
    security(("bearerAuth" = [])),
    params(ReviewQuery),
    responses(
        (status = 200, description = "A page of pending entries.", body = ReviewPage),
        (status = 400, description = "An unknown reason or query parameter, or a limit or cursor out of range (codes invalid_value, wrong_type).", body = ErrorAnswer),
        (status = 401, response = Unauthorized),
        (status = 403, response = AdminDisabled),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    )
)]
pub(super) async fn list(
    State(state): State<AppState>,
    query: Result<Query<ReviewQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(query) = query.map_err(|e| {
        ApiError::Input(InputError::WrongType(format!(
            "invalid query: {}",
            e.body_text()
        )))
    })?;
    let (reason, after, limit) = query.checked()?;
    let page = state.store.reviews(reason, after, limit).await?;
    Ok(Json(review_page_json(&page)))
}

/// Approve a review entry: make the refused merge now (journalled, published, versions bumped; the older primary survives), or release the quarantined identifier
#[utoipa::path(
    post,
    path = "/reviews/{id}/approve",
    operation_id = "approveReview",
    tag = "admin",
    security(("bearerAuth" = [])),
    params(("id" = i64, Path, description = "A review entry's id (`id` in GET /reviews; 1 to 2^63-1, anything else is a 400 invalid_value).", minimum = 1, maximum = 9223372036854775807_i64)),
    responses(
        (status = 200, description = "The entry, now approved, and after a merge the merged identity.", body = DecisionBody),
        (status = 400, description = "The id is not a positive integer (code invalid_value).", body = ErrorAnswer),
        (status = 401, response = Unauthorized),
        (status = 403, response = AdminDisabled),
        (status = 404, description = "No review entry has this id (code not_found).", body = ErrorAnswer),
        (status = 409, description = "The entry was already decided, or it is a refused new secondary, whose values were not kept (code review_refused).", body = ErrorAnswer),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    )
)]
pub(super) async fn approve(
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let decision = state
        .store
        .approve_review(review_id(id)?)
        .await
        .map_err(|e| ApiError::admin(e, "review_refused"))?;
    Ok(Json(review_decision_json(&decision)))
}

/// Reject a review entry: the two identities are kept apart for good (later refusals are not queued again); a quarantined identifier stays quarantined
#[utoipa::path(
    post,
    path = "/reviews/{id}/reject",
    operation_id = "rejectReview",
    tag = "admin",
    security(("bearerAuth" = [])),
    params(("id" = i64, Path, description = "A review entry's id (`id` in GET /reviews; 1 to 2^63-1, anything else is a 400 invalid_value).", minimum = 1, maximum = 9223372036854775807_i64)),
    responses(
        (status = 200, description = "The entry, now rejected.", body = DecisionBody),
        (status = 400, description = "The id is not a positive integer (code invalid_value).", body = ErrorAnswer),
        (status = 401, response = Unauthorized),
        (status = 403, response = AdminDisabled),
        (status = 404, description = "No review entry has this id (code not_found).", body = ErrorAnswer),
        (status = 409, description = "The entry was already decided (code review_refused).", body = ErrorAnswer),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    )
)]
pub(super) async fn reject(
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let decision = state
        .store
        .reject_review(review_id(id)?)
        .await
        .map_err(|e| ApiError::admin(e, "review_refused"))?;
    Ok(Json(review_decision_json(&decision)))
}

fn review_id(id: Result<Path<i64>, PathRejection>) -> Result<i64, ApiError> {
    match id {
        Ok(Path(id)) if id > 0 => Ok(id),
        _ => Err(InputError::Invalid {
            field: "id",
            expected: "a review id (a positive integer)",
        }
        .into()),
    }
}
