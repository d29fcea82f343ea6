//! The review queue's admin routes: `GET /reviews`, `POST /reviews/{id}/approve`,
//! `POST /reviews/{id}/reject`. The JSON shapes here are also what the `reviews`
//! commands print.

use super::{ApiError, AppState};
use crate::domain::InputError;
use crate::store::{ReviewDecision, ReviewPage, REASONS};
use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Longest page of `GET /reviews`, and the default.
pub const MAX_PAGE: i64 = 500;
pub const DEFAULT_PAGE: i64 = 50;

/// Query of `GET /reviews`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReviewQuery {
    pub reason: Option<String>,
    /// The `nextCursor` of the previous page.
    pub after: Option<i64>,
    pub limit: Option<i64>,
}

/// The answer of approve and reject.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct DecisionBody<'a> {
    review: &'a crate::store::Review,
    /// The merged identity after an approved merge, in `POST /identify`'s shape.
    #[serde(skip_serializing_if = "Option::is_none")]
    identity: Option<Value>,
}

impl ReviewQuery {
    /// Checked paging: reason one of the queue's, limit 1..=500.
    pub fn checked(&self) -> Result<(Option<&str>, i64, i64), InputError> {
        let reason = match self.reason.as_deref() {
            None => None,
            Some(r) if REASONS.contains(&r) => Some(r),
            Some(_) => {
                return Err(InputError::Invalid {
                    field: "reason",
                    expected: "one of max_emails, max_phones, max_contacts, keep_apart, quarantine",
                })
            }
        };
        let limit = self.limit.unwrap_or(DEFAULT_PAGE);
        if !(1..=MAX_PAGE).contains(&limit) {
            return Err(InputError::Invalid {
                field: "limit",
                expected: "an integer from 1 to 500",
            });
        }
        let after = self.after.unwrap_or(0);
        if after < 0 {
            return Err(InputError::Invalid {
                field: "after",
                expected: "a review id (a non-negative integer)",
            });
        }
        Ok((reason, after, limit))
    }
}

/// `GET /reviews?reason=&after=&limit=` (admin): pending entries, oldest first.
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

/// `POST /reviews/{id}/approve` (admin).
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

/// `POST /reviews/{id}/reject` (admin).
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

pub fn review_page_json(page: &ReviewPage) -> Value {
    serde_json::to_value(page).expect("plain data serialises")
}

pub fn review_decision_json(decision: &ReviewDecision) -> Value {
    serde_json::to_value(DecisionBody {
        review: &decision.review,
        identity: decision.identity.as_ref().map(|i| i.to_response()),
    })
    .expect("plain data serialises")
}
