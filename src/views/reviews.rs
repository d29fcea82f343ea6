//! The review queue's paging (`GET /reviews`'s query, the `reviews list` flags) and
//! the answers of its routes and commands.

use crate::domain::vocabulary::ReviewReason;
use crate::domain::{Identity, IdentityResponse, InputError};
use crate::store::{ReviewDecision, ReviewPage};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::openapi::schema::{Object, ObjectBuilder, Type};
use utoipa::{IntoParams, ToSchema};

/// Longest page of `GET /reviews`, and the default.
pub(crate) const MAX_PAGE: i64 = 500;
pub(crate) const DEFAULT_PAGE: i64 = 50;

/// Query of `GET /reviews`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReviewQuery {
    /// Only entries of this reason.
    #[param(schema_with = reason_param, nullable = false)]
    pub reason: Option<String>,
    /// The nextCursor of the previous page: entries with higher ids.
    #[param(minimum = 0, maximum = 9223372036854775807_i64, nullable = false)]
    pub after: Option<i64>,
    /// Entries per page (default 50).
    #[param(minimum = 1, maximum = 500, nullable = false)]
    pub limit: Option<i64>,
}

/// The answer of approve and reject.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schema(as = ReviewDecision)]
pub(crate) struct DecisionBody<'a> {
    review: &'a crate::store::Review,
    /// The merged identity after an approved merge, in `POST /identify`'s shape.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    identity: Option<IdentityResponse<'a>>,
}

impl ReviewQuery {
    /// Checked paging: reason one of the queue's, limit 1..=500.
    pub fn checked(&self) -> Result<(Option<ReviewReason>, i64, i64), InputError> {
        let reason = match self.reason.as_deref().map(ReviewReason::try_from) {
            None => None,
            Some(Ok(reason)) => Some(reason),
            Some(Err(_)) => {
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

fn reason_param() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(ReviewReason::ALL.iter().map(|r| r.as_str())))
        .build()
}

pub fn review_page_json(page: &ReviewPage) -> Value {
    serde_json::to_value(page).expect("plain data serialises")
}

pub fn review_decision_json(decision: &ReviewDecision) -> Value {
    serde_json::to_value(DecisionBody {
        review: &decision.review,
        identity: decision.identity.as_ref().map(Identity::response),
    })
    .expect("plain data serialises")
}
