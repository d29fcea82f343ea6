//! The error answers that many routes share, documented once under
//! `components.responses` of the OpenAPI document: the handlers name them in their
//! `#[utoipa::path]` attributes, and `openapi.rs` lists them. A leaf: it imports
//! nothing of the handlers, so the document can import the handlers one way.

use utoipa::openapi::{ContentBuilder, HeaderBuilder, ObjectBuilder, Ref, RefOr, Response};
use utoipa::openapi::{ResponseBuilder, Type};
use utoipa::ToResponse;

/// An error answer with the JSON error body and, optionally, a header.
fn error_response(description: &str, header: Option<(&str, &str)>) -> RefOr<Response> {
    let mut response = ResponseBuilder::new().description(description).content(
        "application/json",
        ContentBuilder::new()
            .schema(Some(Ref::from_schema_name("Error")))
            .build(),
    );
    if let Some((name, description)) = header {
        response = response.header(
            name,
            HeaderBuilder::new()
                .schema(ObjectBuilder::new().schema_type(Type::String))
                .description(Some(description))
                .build(),
        );
    }
    RefOr::T(response.build())
}

/// The error answers many routes share, documented once under `components.responses`.
macro_rules! shared_error_responses {
    ($($name:ident: $description:expr $(, header $header:expr)?;)*) => {$(
        pub(crate) struct $name;

        impl<'r> ToResponse<'r> for $name {
            fn response() -> (&'r str, RefOr<Response>) {
                (stringify!($name), error_response($description, None $(.or(Some($header)))?))
            }
        }
    )*};
}

shared_error_responses! {
    Unauthorized: "API routes: http.auth_token is configured and the request lacks it or carries \
        another. Admin routes: the request lacks the admin token (http.admin_token) or carries \
        another; the API token never grants them (code unauthorized). The bearer scheme name is \
        case-insensitive.", header ("WWW-Authenticate", "Bearer");
    AdminDisabled: "Admin routes are off because no http.admin_token is configured (code \
        admin_disabled).";
    PayloadTooLarge: "The body is larger than http.body_limit_bytes (code payload_too_large).";
    Rejected: "PostgreSQL refused a value of the request (code rejected). Nothing is written.";
    Internal: "An unexpected server-side failure (code internal); the message never carries \
        internals.";
    Unavailable: "The database is unavailable (code unavailable), the request took longer than \
        http.request_timeout (code timeout), or more than http.max_connections connections are \
        open (code overloaded, with Retry-After); retry later.",
        header ("Retry-After", "Seconds to wait (on overloaded).");
    RequestTimeout: "The request's headers or body did not arrive within \
        http.header_read_timeout / http.body_read_timeout (code request_timeout); the \
        connection is closed.";
    UnsupportedMediaType: "The body was not sent as application/json (charset=utf-8 allowed), so \
        that a browser form cannot write cross-site (code unsupported_media_type). Nothing is \
        written.";
}
