//! The HTTP sidecar: `POST /identify`, `GET /identify`, health, readiness, metrics.

mod admin;
mod auth;
mod coalesce;
mod error;
mod explain;
mod openapi;
mod responses;
mod reviews;
mod serve;

pub(crate) use auth::Token;
pub(crate) use coalesce::{CoalescedError, Coalescer};
pub(crate) use error::ApiError;
pub(crate) use error::{ErrorCode, ERROR_CODES};
pub(crate) use openapi::document_text as openapi_document;
pub(crate) use openapi::inputs::schemas as input_schemas;
pub(crate) use serve::{serve, ServeOptions};

use crate::domain::vocabulary::ReviewReason;
use crate::domain::{parse_json_object, ContactInput, IdentityResponse, InputError};
use crate::health::Health;
use crate::metrics::METRICS;
use crate::store::{Lookup, Reconciled, Store};
use crate::views::{Dependency, Readiness, ReadyStatus};
use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, MatchedPath, Query, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use error::ErrorAnswer;
use openapi::inputs::{IdentifyRequest, QueryEmail, QueryPhone};
use responses::{
    Internal, PayloadTooLarge, Rejected, RequestTimeout, Unauthorized, Unavailable,
    UnsupportedMediaType,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};

#[derive(Clone)]
pub(crate) struct AppState {
    pub(crate) store: Store,
    /// Bearer token required on API routes; `None` disables authentication.
    pub(crate) auth_token: Option<Token>,
    /// Bearer token required on admin routes; `None` turns them off (403).
    pub(crate) admin_token: Option<Token>,
    /// `POST /identify` goes through here; lookups go to the store directly.
    pub(crate) coalescer: Coalescer,
    pub(crate) health: Arc<Health>,
    pub(crate) body_limit: usize,
    /// Longest time a request body may take to arrive (408 past it).
    pub(crate) body_read_timeout: Duration,
}

/// Builds the router with every route and layer.
pub(crate) fn router(state: AppState, request_timeout: Duration) -> Router {
    let body_limit = state.body_limit;
    let api = Router::new()
        .route("/identify", get(lookup).post(identify))
        .route("/identities/{id}/history", get(admin::history))
        .route("/identities/{id}/explain", get(explain::explain))
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_api_token,
        ));
    Router::new()
        .merge(api)
        .merge(admin::routes(&state))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi::openapi))
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .fallback(|| async { ApiError::NoRoute })
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(tower_http::catch_panic::CatchPanicLayer::custom(error::panicked))
        .layer(axum::middleware::from_fn(move |request, next| {
            within(request_timeout, request, next)
        }))
        .layer(axum::middleware::map_response(error::json_errors))
        .layer(axum::middleware::from_fn(record_metrics))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(tower_http::trace::TraceLayer::new_for_http().make_span_with(|request: &axum::http::Request<_>| {
            let id = request
                .extensions()
                .get::<RequestId>()
                .and_then(|id| id.header_value().to_str().ok())
                .unwrap_or_default();
            tracing::info_span!("http", method = %request.method(), path = %request.uri().path(), request_id = %id)
        }))
        .layer(SetRequestIdLayer::x_request_id(SequentialRequestId::default()))
        .with_state(state)
}

/// Request ids for requests that do not bring their own `x-request-id`.
#[derive(Clone, Default)]
struct SequentialRequestId(Arc<AtomicU64>);

impl MakeRequestId for SequentialRequestId {
    fn make_request_id<B>(&mut self, _: &axum::http::Request<B>) -> Option<RequestId> {
        let n = self.0.fetch_add(1, Ordering::Relaxed);
        let id = format!("{:x}-{n}", std::process::id());
        HeaderValue::from_str(&id).ok().map(RequestId::new)
    }
}

/// The whole request within `limit`, or 503 `timeout` with the JSON error body.
async fn within(limit: Duration, request: axum::extract::Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::Timeout.into_response(),
    }
}

async fn record_metrics(request: axum::extract::Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".into());
    let started = Instant::now();
    let response = next.run(request).await;
    METRICS
        .http_duration
        .with_label_values(&[&route])
        .observe(started.elapsed().as_secs_f64());
    METRICS
        .http_requests
        .with_label_values(&[&route, response.status().as_str()])
        .inc();
    response
}

/// Reconcile one email and/or phone number into its identity
///
/// Reconciles exactly like an order-contact event: links the input to every identity it
/// matches, merges identities it connects (the oldest primary survives), inserts a
/// contact only when the input brings an email or phone the identity lacks. The change
/// is published on the identities topic with "source": "http".
#[utoipa::path(
    post,
    path = "/identify",
    tag = "identity",
    operation_id = "identify",
    security(("bearerAuth" = []), ()),
    request_body(content = IdentifyRequest, content_type = "application/json"),
    responses(
        (status = 200, description = "The consolidated identity after the request.", body = IdentityResponse),
        (status = 400, description = "Malformed JSON, a wrong type, no identifier, an over-long or unparseable value (codes malformed_json, wrong_type, no_identifier, too_long, invalid_value), or an identifier that is blocked (code blocked). Nothing is written.", body = ErrorAnswer),
        (status = 401, response = Unauthorized),
        (status = 408, response = RequestTimeout),
        (status = 410, description = "An identifier belongs to an identity that was forgotten (code forgotten). Nothing is written.", body = ErrorAnswer),
        (status = 413, response = PayloadTooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Rejected),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    )
)]
async fn identify(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
    JsonObject(object): JsonObject,
) -> Result<Response, ApiError> {
    let input = ContactInput::from_json_object(&object, state.store.settings().input_rules())
        .inspect_err(count_blocked)?;
    METRICS.count_blocked(input.blocked().fields());
    match state
        .coalescer
        .reconcile(input, request_id(&headers))
        .await?
    {
        Reconciled::Applied { identity, .. } => Ok(Json(identity.to_response()).into_response()),
        Reconciled::Suppressed => Err(ApiError::Forgotten),
        Reconciled::Replayed | Reconciled::Conflict => {
            unreachable!("an HTTP request has no ledger key and is always applied")
        }
    }
}

/// Longest request id kept with a contact; a longer `x-request-id` is cut to this.
const MAX_REQUEST_ID_CHARS: usize = 128;

/// The request's `x-request-id` as the `http` span logs it: the client's own (set by
/// `SetRequestIdLayer` before any handler runs) or the one generated for it. Cut to
/// [`MAX_REQUEST_ID_CHARS`]; none when it is not visible ASCII (it is a header).
fn request_id(headers: &axum::http::HeaderMap) -> Option<String> {
    let id = headers.get("x-request-id")?.to_str().ok()?;
    Some(id.chars().take(MAX_REQUEST_ID_CHARS).collect())
}

/// A request body that must be one JSON object, sent as `application/json`.
///
/// 415 for any other content type (a browser form cannot send this one cross-site
/// without a CORS preflight); 408 when the body does not arrive within
/// `http.body_read_timeout`; 413 past the body limit; 400 when it is not a JSON
/// object.
pub(super) struct JsonObject(pub serde_json::Map<String, serde_json::Value>);

impl FromRequest<AppState> for JsonObject {
    type Rejection = ApiError;

    async fn from_request(
        request: axum::extract::Request,
        state: &AppState,
    ) -> Result<JsonObject, ApiError> {
        if !is_json(request.headers()) {
            return Err(ApiError::UnsupportedMediaType);
        }
        let body =
            tokio::time::timeout(state.body_read_timeout, Bytes::from_request(request, state))
                .await
                .map_err(|_| ApiError::BodyTimeout)?;
        let body = body.map_err(|rejection| {
            if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::PayloadTooLarge(state.body_limit)
            } else {
                ApiError::Input(InputError::MalformedJson(rejection.body_text()))
            }
        })?;
        Ok(JsonObject(parse_json_object(&body)?))
    }
}

/// `content-type: application/json`, with no parameter but `charset=utf-8`.
fn is_json(headers: &axum::http::HeaderMap) -> bool {
    let Some(value) = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    let mut parts = value.split(';').map(str::trim);
    let essence = parts.next().unwrap_or_default();
    essence.eq_ignore_ascii_case("application/json")
        && parts.all(|p| {
            p.split_once('=').is_some_and(|(k, v)| {
                k.trim().eq_ignore_ascii_case("charset")
                    && v.trim().trim_matches('"').eq_ignore_ascii_case("utf-8")
            })
        })
}

/// Look up the identity of an email and/or phone number (read-only)
///
/// Never writes. At least one of the two parameters is required (400 no_identifier
/// otherwise: OpenAPI cannot state that one of two optional parameters is required); an
/// empty parameter is absent.
#[utoipa::path(
    get,
    path = "/identify",
    tag = "identity",
    operation_id = "lookupIdentity",
    security(("bearerAuth" = []), ()),
    params(
        ("email" = Option<QueryEmail>, Query, description = "Normalised like POST /identify (invisible characters removed, trimmed, lower-cased, IDNA domain)."),
        ("phoneNumber" = Option<QueryPhone>, Query, description = "Normalised like POST /identify (separators removed); a blocked placeholder is dropped."),
    ),
    responses(
        (status = 200, description = "The identity both given identifiers belong to.", body = IdentityResponse),
        (status = 400, description = "No identifier, only blocked ones, or an over-long or unparseable value (codes no_identifier, blocked, too_long, invalid_value).", body = ErrorAnswer),
        (status = 401, response = Unauthorized),
        (status = 404, description = "No live contact matches (code not_found).", body = ErrorAnswer),
        (status = 408, response = RequestTimeout),
        (status = 409, description = "The email and the phone number belong to different identities (code ambiguous).", body = ErrorAnswer),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    )
)]
async fn lookup(
    State(state): State<AppState>,
    params: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) = params.map_err(|_| InputError::Invalid {
        field: "query",
        expected: "a query string of UTF-8, percent-encoded `email` and `phoneNumber`",
    })?;
    let input = ContactInput::from_raw(
        params.get("email").map(String::as_str),
        params.get("phoneNumber").map(String::as_str),
        state.store.settings().input_rules(),
    )
    .inspect_err(count_blocked)?;
    METRICS.count_blocked(input.blocked().fields());
    match state.store.lookup(&input).await? {
        Lookup::Found(identity) => Ok(Json(identity.to_response()).into_response()),
        Lookup::NotFound => Err(ApiError::NotFound),
        Lookup::Ambiguous(primaries) => Err(ApiError::Ambiguous(primaries)),
    }
}

fn count_blocked(error: &InputError) {
    if let InputError::Blocked(blocked) = error {
        METRICS.count_blocked(blocked.fields());
    }
}

/// Liveness: 200 while the process runs; touches no dependency
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    operation_id = "health",
    security(()),
    responses(
        (status = 200, description = "Alive.", body = crate::views::Health),
        (status = 408, response = RequestTimeout),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    )
)]
async fn healthz() -> Json<crate::views::Health> {
    Json(crate::views::Health::ALIVE)
}

/// Readiness: PostgreSQL answers and, under `run`, the broker is reachable, the consumer is not stalled and the outbox relay can publish
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    operation_id = "readiness",
    security(()),
    responses(
        (status = 200, description = "Ready.", body = Readiness),
        (status = 408, response = RequestTimeout),
        (status = 500, response = Internal),
        (status = 503, description = "Not ready; the body says which dependency is down, and why where somebody must act.", body = Readiness),
    )
)]
async fn readyz(State(state): State<AppState>) -> Response {
    let database = matches!(
        tokio::time::timeout(Duration::from_secs(2), state.store.ping()).await,
        Ok(Ok(()))
    );
    let kafka = state.health.kafka_ready();
    let ready = database && kafka.unwrap_or(true);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let up = |up| if up { Dependency::Up } else { Dependency::Down };
    let body = Readiness {
        status: if ready {
            ReadyStatus::Ready
        } else {
            ReadyStatus::NotReady
        },
        database: up(database),
        kafka: kafka.map_or(Dependency::NotUsed, up),
        reason: state.health.relay_blocked(),
    };
    (status, Json(body)).into_response()
}

/// Prometheus metrics (text exposition format 0.0.4), all prefixed identity_reconciler_
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    security(()),
    responses(
        (status = 200, description = "Every metric listed in docs/reference/metrics.md.", content_type = "text/plain", body = String),
        (status = 408, response = RequestTimeout),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    )
)]
async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    // The review queue's gauges are read from PostgreSQL at scrape time: any instance
    // (or a CLI command) may have changed the queue. A scrape while PostgreSQL is
    // down keeps the last values.
    if let Ok(Ok(stats)) =
        tokio::time::timeout(Duration::from_secs(2), state.store.review_queue_stats()).await
    {
        let pending: Vec<(&str, i64, f64)> = stats
            .iter()
            .map(|s| (s.reason.as_str(), s.pending, s.oldest_age_seconds))
            .collect();
        let reasons: Vec<&str> = ReviewReason::ALL.iter().map(|r| r.as_str()).collect();
        METRICS.set_review_queue(&reasons, &pending);
    }
    let pool = state.store.pool();
    let idle = pool.num_idle() as i64;
    METRICS
        .db_pool_connections
        .with_label_values(&["idle"])
        .set(idle);
    METRICS
        .db_pool_connections
        .with_label_values(&["in_use"])
        .set(pool.size() as i64 - idle);
    (
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        METRICS.render(),
    )
}
