//! `GET /openapi.json`: the OpenAPI 3.1 document of this API.
//!
//! The document is a committed file (`contracts/openapi.json`), compiled in, so that
//! what reviewers read is byte for byte what clients download. A test
//! (`tests/openapi.rs`) keeps it honest: every route of the router must be documented,
//! and live answers must match the documented schemas.

use axum::response::IntoResponse;

const DOCUMENT: &str = include_str!("../../contracts/openapi.json");

pub(super) async fn openapi() -> impl IntoResponse {
    ([("content-type", "application/json")], DOCUMENT)
}
