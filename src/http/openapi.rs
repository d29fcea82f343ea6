//! `GET /openapi.json`: the OpenAPI 3.1 document of this API, generated.
//!
//! Operations come from the handlers' `#[utoipa::path]` attributes, answer schemas from
//! the types that are serialised (`ToSchema`), and the schemas of the identifiers a
//! client sends from the parser's own rules ([`inputs`]). `contracts/openapi.json` is
//! this document, committed so that clients can read it without running the service;
//! `identity-reconciler contracts` rewrites it and a test fails when it is stale.

use super::error::{ErrorAnswer, ErrorDetail};
use super::responses::{
    AdminDisabled, Internal, PayloadTooLarge, Rejected, RequestTimeout, Unauthorized, Unavailable,
    UnsupportedMediaType,
};
use crate::domain::vocabulary::{InputSource, ReviewReason, ReviewStatus, Source};
use crate::domain::{ContactBody as IdentityContact, IdentityResponse};
use crate::store::{Quarantined, Review, ReviewPage};
use crate::views::explain::{
    ContactBody, EvidenceBody, ExplainBody, InputBody, MergeBody, SplitBody,
};
use crate::views::reviews::DecisionBody;
use crate::views::{
    Dependency, ForgetAnswer, ForgottenContacts, Health, HistoryAnswer, HistoryLine, Readiness,
    ReadyStatus, UnmergeAnswer,
};
use axum::response::IntoResponse;
use serde_json::Value;
use std::sync::LazyLock;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

pub(crate) mod inputs;

use inputs::{Email, ForgetRequest, IdentifyRequest, PhoneString};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "identity-reconciler HTTP sidecar",
        description = "Reconciles contact details into one identity per customer (the Bitespeed \
            identity-reconciliation rules) and serves health, readiness and metrics. Every error \
            answers {\"error\": {\"code\", \"message\"}}, whatever produced it; codes are stable, \
            messages are for people and never repeat a submitted email or phone number. A wrong \
            method on a known path answers 405 (method_not_allowed), an unknown path 404 \
            (no_route). When http.auth_token is set, the identity routes require \
            Authorization: Bearer <token> (401 unauthorized otherwise); the admin routes require \
            http.admin_token and answer 403 admin_disabled while none is configured; /healthz, \
            /readyz, /metrics and /openapi.json are never authenticated."
    ),
    servers((url = "/")),
    security(("bearerAuth" = []), ()),
    tags(
        (name = "identity", description = "Reconciliation and lookup (docs/contract.md §3–§5, §8)."),
        (name = "admin", description = "Operator actions; need http.admin_token set and given as a bearer token."),
        (name = "operations", description = "Probes, metrics and this document; never authenticated."),
    ),
    paths(
        super::identify,
        super::lookup,
        super::admin::history,
        super::explain::explain,
        super::admin::unmerge,
        super::admin::forget,
        super::healthz,
        super::readyz,
        super::metrics,
        openapi,
        super::reviews::list,
        super::reviews::approve,
        super::reviews::reject,
    ),
    components(
        schemas(
            ErrorAnswer, ErrorDetail, IdentifyRequest, IdentityResponse, IdentityContact,
            HistoryAnswer, HistoryLine, Source, UnmergeAnswer, ForgetRequest, ForgetAnswer,
            ForgottenContacts, Health, Readiness, ReadyStatus, Dependency, Review, Quarantined,
            ReviewReason, ReviewStatus, InputSource, ReviewPage, DecisionBody, InputBody, EvidenceBody, ContactBody, MergeBody, SplitBody, ExplainBody,
            Email, PhoneString, inputs::PhoneInteger, inputs::BlockedPhone, inputs::Blank,
            inputs::BlankEmail, inputs::QueryEmail, inputs::QueryPhone,
        ),
        responses(
            Unauthorized, AdminDisabled, PayloadTooLarge, Rejected, Internal, Unavailable,
            RequestTimeout, UnsupportedMediaType,
        ),
    ),
    modifiers(&BearerAuth),
)]
struct ApiDoc;

/// The document, as served and as committed.
pub(crate) fn document() -> Value {
    let mut document = serde_json::to_value(ApiDoc::openapi()).expect("the document serialises");
    document["jsonSchemaDialect"] = "https://json-schema.org/draft/2020-12/schema".into();
    let schemas = document["components"]["schemas"]
        .as_object_mut()
        .expect("components.schemas");
    for (name, schema) in inputs::schemas() {
        schemas.insert(name.to_owned(), schema);
    }
    document
}

/// [`document`] as the committed file holds it.
pub(crate) fn document_text() -> String {
    let mut text = serde_json::to_string_pretty(&document()).expect("JSON serialises");
    text.push('\n');
    text
}

static DOCUMENT: LazyLock<String> = LazyLock::new(document_text);

/// This document
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "operations",
    security(()),
    responses(
        (status = 200, description = "The OpenAPI 3.1 document of this API.", content_type = "application/json", body = Object),
        (status = 408, response = RequestTimeout),
        (status = 500, response = Internal),
        (status = 503, response = Unavailable),
    )
)]
pub(super) async fn openapi() -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        DOCUMENT.as_str(),
    )
}

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearerAuth",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "http.auth_token (IR__HTTP__AUTH_TOKEN) on the identity routes, \
                         http.admin_token (IR__HTTP__ADMIN_TOKEN) on the admin routes. Without \
                         an API token the identity routes are open; without an admin token the \
                         admin routes answer 403 admin_disabled.",
                    ))
                    .build(),
            ),
        );
    }
}
