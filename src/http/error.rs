//! The one error type of the HTTP API and its mapping to status codes and bodies.

use super::CoalescedError;
use crate::domain::InputError;
use crate::store::StoreError;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use utoipa::openapi::schema::{Object, ObjectBuilder, Type};
use utoipa::ToSchema;

#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    #[error(transparent)]
    Input(#[from] InputError),
    #[error("no contact matches the given email or phone number")]
    NotFound,
    #[error("the email and the phone number belong to different identities: {0:?}")]
    Ambiguous(Vec<i64>),
    #[error("the request body is larger than {0} bytes")]
    PayloadTooLarge(usize),
    #[error("a request body must be sent with `content-type: application/json`")]
    UnsupportedMediaType,
    #[error("the request body was not received in time")]
    BodyTimeout,
    #[error("the request took too long; retry later")]
    Timeout,
    #[error("this method is not allowed here")]
    MethodNotAllowed,
    #[error("no such endpoint")]
    NoRoute,
    #[error("missing or wrong bearer token")]
    Unauthorized,
    #[error("missing or wrong admin bearer token (http.admin_token)")]
    AdminUnauthorized,
    #[error("admin endpoints are disabled: set http.admin_token to enable them")]
    AdminDisabled,
    #[error("this person asked to be forgotten: their data is not stored")]
    Forgotten,
    #[error("{0}")]
    Admin(String, StatusCode, &'static str),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Already logged by the coalescing lane.
    #[error(transparent)]
    Coalesced(#[from] CoalescedError),
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Input(e) => (StatusCode::BAD_REQUEST, e.code()),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::Ambiguous(_) => (StatusCode::CONFLICT, "ambiguous"),
            ApiError::PayloadTooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            ApiError::BodyTimeout => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            ApiError::Timeout => (StatusCode::SERVICE_UNAVAILABLE, "timeout"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::NoRoute => (StatusCode::NOT_FOUND, "no_route"),
            ApiError::Unauthorized | ApiError::AdminUnauthorized => {
                (StatusCode::UNAUTHORIZED, "unauthorized")
            }
            ApiError::AdminDisabled => (StatusCode::FORBIDDEN, "admin_disabled"),
            ApiError::Forgotten => (StatusCode::GONE, "forgotten"),
            ApiError::Admin(_, status, code) => (*status, code),
            ApiError::Store(e) if e.is_transient() => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            ApiError::Store(StoreError::Rejected(_)) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "rejected")
            }
            ApiError::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            ApiError::Coalesced(CoalescedError::Unavailable) => {
                (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
            }
            ApiError::Coalesced(CoalescedError::Rejected) => {
                (StatusCode::UNPROCESSABLE_ENTITY, "rejected")
            }
            ApiError::Coalesced(CoalescedError::Internal) => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal")
            }
        }
    }
}

impl ApiError {
    /// An operator action's failure; `refused` is the code of a refusal (409).
    pub(crate) fn admin(error: StoreError, refused: &'static str) -> ApiError {
        match error {
            StoreError::NotFound(m) => ApiError::Admin(m, StatusCode::NOT_FOUND, "not_found"),
            StoreError::Refused(m) => ApiError::Admin(m, StatusCode::CONFLICT, refused),
            e => ApiError::Store(e),
        }
    }
}

/// An error `code`: the status it is answered with and what it means to a client.
pub(crate) struct ErrorCode {
    pub(crate) code: &'static str,
    /// `None`: any client error status that has no code of its own.
    pub(crate) status: Option<StatusCode>,
    pub(crate) meaning: &'static str,
}

const fn code(code: &'static str, status: StatusCode, meaning: &'static str) -> ErrorCode {
    ErrorCode {
        code,
        status: Some(status),
        meaning,
    }
}

/// Every `code` an error answer can carry. The OpenAPI document's enum of codes and
/// `docs/reference/http-errors.md` are generated from it; a test checks that every
/// error the API can build is here, with the status it is answered with.
pub(crate) const ERROR_CODES: [ErrorCode; 26] = [
    code("malformed_json", StatusCode::BAD_REQUEST,
        "The body is not valid JSON. Fix the request: retried unchanged, it fails the same way."),
    code("wrong_type", StatusCode::BAD_REQUEST,
        "The body is not a JSON object, a member has the wrong JSON type (e.g. `email` is an array), a query parameter is invalid, or `POST /forget` did not get exactly one of `email`, `phoneNumber` and `id`."),
    code("no_identifier", StatusCode::BAD_REQUEST,
        "Neither `email` nor `phoneNumber` is present, non-null and non-blank."),
    code("too_long", StatusCode::BAD_REQUEST,
        "A value is longer than its documented maximum; the message names the field and the limit."),
    code("invalid_value", StatusCode::BAD_REQUEST,
        "A value is not what the field takes (not an email address, not a phone number, not a positive id); the message names the field."),
    code("blocked", StatusCode::BAD_REQUEST,
        "Every identifier given is a placeholder on the blocklist (`reconcile.blocklist`, e.g. test@test.com), so nothing is left to reconcile."),
    code("unauthorized", StatusCode::UNAUTHORIZED,
        "The bearer token is missing or wrong: `http.auth_token` on API routes, `http.admin_token` on admin routes. The answer carries `WWW-Authenticate: Bearer`."),
    code("admin_disabled", StatusCode::FORBIDDEN,
        "An admin route was called while `http.admin_token` is not set; the admin routes are off."),
    code("not_found", StatusCode::NOT_FOUND,
        "Nothing matches: no contact has the email, phone number or id given, or no review entry has the id."),
    code("no_route", StatusCode::NOT_FOUND,
        "No endpoint has this path."),
    code("method_not_allowed", StatusCode::METHOD_NOT_ALLOWED,
        "The path exists but not with this method; the `Allow` header lists the methods it takes."),
    code("ambiguous", StatusCode::CONFLICT,
        "A lookup's email and phone number belong to two different identities; the message lists their primary ids. Look them up one at a time."),
    code("unmerge_refused", StatusCode::CONFLICT,
        "The unmerge is refused and the message says why: the contact was never merged, a later merge must be undone first, or later inputs used both sides together."),
    code("review_refused", StatusCode::CONFLICT,
        "The review entry cannot be decided this way: it was already decided, or there is nothing to approve; the message says which."),
    code("refused", StatusCode::CONFLICT,
        "Another operator action was refused; the message says why."),
    code("forgotten", StatusCode::GONE,
        "The input carries an identifier of a person who asked to be forgotten: nothing of it is stored or returned."),
    code("payload_too_large", StatusCode::PAYLOAD_TOO_LARGE,
        "The body is larger than `http.body_limit_bytes`."),
    code("unsupported_media_type", StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "A request body was sent without `content-type: application/json`."),
    code("request_timeout", StatusCode::REQUEST_TIMEOUT,
        "The client did not send the request's headers within `http.header_read_timeout` (the connection is then closed) or its body within `http.body_read_timeout`."),
    code("rejected", StatusCode::UNPROCESSABLE_ENTITY,
        "PostgreSQL refused a value of the request. Retried unchanged, it fails the same way."),
    code("internal", StatusCode::INTERNAL_SERVER_ERROR,
        "An unexpected server failure (a bug, a broken schema); it is logged with its cause, and the body says nothing of it. Another 5xx status with no code of its own also carries this code."),
    code("unavailable", StatusCode::SERVICE_UNAVAILABLE,
        "The database is unavailable or no pooled connection came free within `database.acquire_timeout`. Retry with back-off."),
    code("timeout", StatusCode::SERVICE_UNAVAILABLE,
        "The request took longer than `http.request_timeout`. Retry later."),
    code("overloaded", StatusCode::SERVICE_UNAVAILABLE,
        "The process already serves `http.max_connections` connections; the answer carries `Retry-After: 1` and the connection is closed."),
    code("bad_request", StatusCode::BAD_REQUEST,
        "A request the server could not parse at all (a framework rejection with no code of its own)."),
    ErrorCode {
        code: "client_error",
        status: None,
        meaning: "Any other client error status without a code of its own.",
    },
];

/// `{"error": {"code": "...", "message": "..."}}`, every error answer.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Error)]
pub(crate) struct ErrorAnswer<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ErrorDetail<'a> {
    /// Stable machine-readable reason.
    #[schema(schema_with = error_code)]
    code: &'a str,
    /// For people; never repeats a submitted email or phone number.
    message: &'a str,
}

fn error_code() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(ERROR_CODES.iter().map(|c| c.code)))
        .build()
}

/// The error body as JSON.
pub(crate) fn error_json(code: &str, message: &str) -> serde_json::Value {
    debug_assert!(
        ERROR_CODES.iter().any(|c| c.code == code),
        "undocumented error code {code}"
    );
    serde_json::to_value(ErrorAnswer {
        error: ErrorDetail { code, message },
    })
    .expect("plain data serialises")
}

/// An answer with the JSON error body.
pub(crate) fn error_body(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(error_json(code, message))).into_response()
}

/// The last line of defence: an error answer that some layer or extractor produced
/// without the JSON error body (a framework rejection we did not map) gets one, with
/// a code named after its status. Our own errors already have it and pass unchanged.
pub(crate) async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let code = fallback_code(status);
    let message = status.canonical_reason().unwrap_or("error").to_lowercase();
    let (mut parts, _) = response.into_parts();
    let mut fixed = error_body(status, code, &message);
    // Keep headers such as Allow, Retry-After and x-request-id.
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    parts.headers.remove(axum::http::header::CONTENT_TYPE);
    for (name, value) in parts.headers.iter() {
        fixed.headers_mut().entry(name).or_insert(value.clone());
    }
    fixed
}

/// The code of an error answer that came without one, named after its status.
fn fallback_code(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::NOT_FOUND => "no_route",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_server_error() => "internal",
        _ => "client_error",
    }
}

/// A handler that panicked: 500 with the JSON error body, nothing of the panic.
pub(crate) fn panicked(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    error_body(
        StatusCode::INTERNAL_SERVER_ERROR,
        "internal",
        "internal error",
    )
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        // Server-side failures are logged once, here, with their cause chain; their
        // bodies never carry internals.
        let message = match &self {
            ApiError::Store(e) => {
                tracing::error!(error = %crate::telemetry::chain(e), "request failed");
                if e.is_transient() {
                    "the database is unavailable; retry later".to_owned()
                } else if matches!(e, StoreError::Rejected(_)) {
                    "the database rejected a value of this request".to_owned()
                } else {
                    "internal error".to_owned()
                }
            }
            other => other.to_string(),
        };
        let mut response = error_body(status, code, &message);
        if status == StatusCode::UNAUTHORIZED {
            // RFC 9110 §15.5.2: a 401 names the scheme it wants.
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::input::Blocked;

    /// Whether `code` is in [`ERROR_CODES`] with `status`.
    fn documented(status: StatusCode, code: &str) -> bool {
        ERROR_CODES
            .iter()
            .any(|c| c.code == code && c.status.map_or(status.is_client_error(), |s| s == status))
    }

    #[test]
    fn every_error_the_api_builds_is_documented_with_its_status() {
        let input = [
            InputError::MalformedJson(String::new()),
            InputError::WrongType(String::new()),
            InputError::NoIdentifier,
            InputError::Blocked(Blocked {
                email: true,
                phone: false,
            }),
            InputError::TooLong {
                field: "email",
                max: 1,
            },
            InputError::Invalid {
                field: "email",
                expected: "an email address",
            },
        ];
        let errors = input.into_iter().map(ApiError::Input).chain([
            ApiError::NotFound,
            ApiError::Ambiguous(vec![1, 2]),
            ApiError::PayloadTooLarge(1),
            ApiError::UnsupportedMediaType,
            ApiError::BodyTimeout,
            ApiError::Timeout,
            ApiError::MethodNotAllowed,
            ApiError::NoRoute,
            ApiError::Unauthorized,
            ApiError::AdminUnauthorized,
            ApiError::AdminDisabled,
            ApiError::Forgotten,
            ApiError::Store(StoreError::Unavailable(sqlx::Error::PoolTimedOut)),
            ApiError::Store(StoreError::Rejected(sqlx::Error::RowNotFound)),
            ApiError::Store(StoreError::Fatal(anyhow::anyhow!("broken"))),
            ApiError::Coalesced(CoalescedError::Unavailable),
            ApiError::Coalesced(CoalescedError::Rejected),
            ApiError::Coalesced(CoalescedError::Internal),
        ]);
        for error in errors {
            let (status, code) = error.status_and_code();
            assert!(documented(status, code), "{code} ({status}) of {error:?}");
        }
        // Every client error; the server errors a layer answers (a panic, an overload).
        let statuses = (400..500)
            .chain([500, 503])
            .filter_map(|s| StatusCode::from_u16(s).ok());
        for status in statuses {
            let code = fallback_code(status);
            assert!(documented(status, code), "{code} ({status})");
        }
    }

    #[test]
    fn every_documented_code_is_listed_once() {
        let mut codes: Vec<&str> = ERROR_CODES.iter().map(|c| c.code).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), ERROR_CODES.len());
    }
}
