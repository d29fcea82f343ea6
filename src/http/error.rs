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
pub enum ApiError {
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
    pub fn admin(error: StoreError, refused: &'static str) -> ApiError {
        match error {
            StoreError::NotFound(m) => ApiError::Admin(m, StatusCode::NOT_FOUND, "not_found"),
            StoreError::Refused(m) => ApiError::Admin(m, StatusCode::CONFLICT, refused),
            e => ApiError::Store(e),
        }
    }
}

/// Every `code` an error answer can carry.
pub const ERROR_CODES: [&str; 26] = [
    "malformed_json",
    "wrong_type",
    "no_identifier",
    "too_long",
    "invalid_value",
    "blocked",
    "unauthorized",
    "admin_disabled",
    "not_found",
    "no_route",
    "method_not_allowed",
    "ambiguous",
    "unmerge_refused",
    "review_refused",
    "refused",
    "forgotten",
    "payload_too_large",
    "unsupported_media_type",
    "request_timeout",
    "rejected",
    "internal",
    "unavailable",
    "timeout",
    "overloaded",
    "bad_request",
    "client_error",
];

/// `{"error": {"code": "...", "message": "..."}}`, every error answer.
#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(as = Error)]
pub struct ErrorAnswer<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ErrorDetail<'a> {
    /// Stable machine-readable reason.
    #[schema(schema_with = error_code)]
    code: &'a str,
    /// For people; never repeats a submitted email or phone number.
    message: &'a str,
}

fn error_code() -> Object {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(ERROR_CODES))
        .build()
}

/// The error body as JSON.
pub fn error_json(code: &str, message: &str) -> serde_json::Value {
    debug_assert!(
        ERROR_CODES.contains(&code),
        "undocumented error code {code}"
    );
    serde_json::to_value(ErrorAnswer {
        error: ErrorDetail { code, message },
    })
    .expect("plain data serialises")
}

/// An answer with the JSON error body.
pub fn error_body(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(error_json(code, message))).into_response()
}

/// The last line of defence: an error answer that some layer or extractor produced
/// without the JSON error body (a framework rejection we did not map) gets one, with
/// a code named after its status. Our own errors already have it and pass unchanged.
pub async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let code = match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::NOT_FOUND => "no_route",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::REQUEST_TIMEOUT => "request_timeout",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_server_error() => "internal",
        _ => "client_error",
    };
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

/// A handler that panicked: 500 with the JSON error body, nothing of the panic.
pub fn panicked(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
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
