//! Bearer tokens: `http.auth_token` for the API routes, `http.admin_token` for the
//! admin routes. Neither implies the other.
//!
//! A token is kept as its SHA-256 digest and a presented token is compared digest to
//! digest with [`subtle`], in constant time: the time taken says nothing about how
//! much of the token, or how long a token, was guessed right.

use super::{ApiError, AppState};
use axum::extract::{Request, State};
use axum::http::header::AUTHORIZATION;
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// A configured bearer token.
#[derive(Clone)]
pub(crate) struct Token([u8; 32]);

impl Token {
    pub(crate) fn new(secret: &str) -> Token {
        Token(Sha256::digest(secret.as_bytes()).into())
    }

    /// Whether `headers` carry `Authorization: Bearer <this token>`.
    pub(super) fn admits(&self, headers: &HeaderMap) -> bool {
        let Some(given) = bearer(headers) else {
            return false;
        };
        let given: [u8; 32] = Sha256::digest(given.as_bytes()).into();
        given.ct_eq(&self.0).into()
    }
}

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

/// The credentials of `Authorization: Bearer <credentials>`; the scheme name is
/// case-insensitive (RFC 9110 §11.1), one or more spaces may follow it.
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, credentials) = value.split_once(' ')?;
    let credentials = credentials.trim_start_matches(' ');
    (scheme.eq_ignore_ascii_case("bearer") && !credentials.is_empty()).then_some(credentials)
}

/// API routes: the API token, when one is configured.
pub(super) async fn require_api_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    match &state.auth_token {
        Some(token) if !token.admits(request.headers()) => ApiError::Unauthorized.into_response(),
        _ => next.run(request).await,
    }
}

/// Admin routes: the admin token, always. Without one configured the admin routes are
/// off (403); the API token is never accepted in its place (401).
///
/// This is the one admin guard: [`super::admin::routes`] puts it in front of every
/// admin route, so a new admin route only has to be added there.
pub(super) async fn require_admin_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    match &state.admin_token {
        None => ApiError::AdminDisabled.into_response(),
        Some(token) if !token.admits(request.headers()) => {
            ApiError::AdminUnauthorized.into_response()
        }
        Some(_) => next.run(request).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(authorization: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(AUTHORIZATION, authorization.parse().unwrap());
        headers
    }

    #[test]
    fn the_scheme_name_is_case_insensitive_and_the_token_is_not() {
        let token = Token::new("s3cret");
        for ok in [
            "Bearer s3cret",
            "bearer s3cret",
            "BEARER s3cret",
            "Bearer   s3cret",
        ] {
            assert!(token.admits(&headers(ok)), "{ok}");
        }
        for wrong in [
            "Bearer S3CRET",
            "Bearer s3cre",
            "Basic s3cret",
            "Bearer",
            "s3cret",
        ] {
            assert!(!token.admits(&headers(wrong)), "{wrong}");
        }
        assert!(!token.admits(&HeaderMap::new()));
    }
}
