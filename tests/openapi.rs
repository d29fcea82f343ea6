//! The OpenAPI document (`contracts/openapi.json`, served at `GET /openapi.json`)
//! describes the API the router serves: every route, and the shapes of its answers.

mod support;

use serde_json::{json, Value};
use std::collections::BTreeSet;
use support::app::TestApp;
use support::contracts::{self, assert_documented_answer, resolve, served_document};

/// Every (method, path) the router serves, in OpenAPI path syntax. Adding a route to
/// `src/http/mod.rs` means adding it here, and the test then fails until it is
/// documented. The history, unmerge and forget routes are those of the admin and
/// history feature, documented ahead of the branch that adds them.
const ROUTES: [(&str, &str); 13] = [
    ("post", "/identify"),
    ("get", "/identify"),
    ("get", "/identities/{id}/history"),
    ("get", "/identities/{id}/explain"),
    ("post", "/identities/{id}/unmerge"),
    ("post", "/forget"),
    ("get", "/reviews"),
    ("post", "/reviews/{id}/approve"),
    ("post", "/reviews/{id}/reject"),
    ("get", "/healthz"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
];

/// Routes that answer without a token even when one is configured.
const OPEN_ROUTES: [&str; 4] = ["/healthz", "/readyz", "/metrics", "/openapi.json"];
/// Routes that need the admin token.
const ADMIN_ROUTES: [&str; 5] = [
    "/identities/{id}/unmerge",
    "/forget",
    "/reviews",
    "/reviews/{id}/approve",
    "/reviews/{id}/reject",
];

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// The documented operations, as (method, path).
fn documented_operations(document: &Value) -> BTreeSet<(String, String)> {
    let paths = document["paths"].as_object().expect("a paths object");
    paths
        .iter()
        .flat_map(|(path, item)| {
            METHODS
                .iter()
                .filter(|m| item.get(**m).is_some())
                .map(move |m| (m.to_string(), path.clone()))
        })
        .collect()
}

async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path_and_query: &str,
    body: Option<&str>,
) -> (u16, Value) {
    send_as(app, None, method, path_and_query, body).await
}

async fn send_as(
    app: &TestApp,
    token: Option<&str>,
    method: reqwest::Method,
    path_and_query: &str,
    body: Option<&str>,
) -> (u16, Value) {
    let mut request = app
        .http
        .request(method, format!("{}{}", app.base_url, path_and_query));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_owned());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[test]
fn the_committed_contracts_are_the_generated_ones() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let stale: Vec<_> = identity_reconciler::contracts::stale(root)
        .into_iter()
        .filter(|path| path.starts_with("contracts/"))
        .collect();
    assert!(
        stale.is_empty(),
        "stale contracts {stale:?}: run `cargo run -- contracts` and commit contracts/"
    );
}

#[tokio::test]
async fn every_route_of_the_router_is_documented_and_nothing_else() {
    // Arrange
    let app = TestApp::spawn_http(|_| {}).await;

    // Act
    let document = served_document(&app).await;

    // Assert: the served document is the committed one, an OpenAPI 3.1 document.
    assert_eq!(document, contracts::load("openapi.json"));
    assert_eq!(document["openapi"], "3.1.0");
    let documented = documented_operations(&document);
    let routes: BTreeSet<(String, String)> = ROUTES
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    let undocumented: Vec<_> = routes.difference(&documented).collect();
    assert!(
        undocumented.is_empty(),
        "routes served but not documented: {undocumented:?}"
    );
    let unknown: Vec<_> = documented.difference(&routes).collect();
    assert!(
        unknown.is_empty(),
        "operations documented but not served: {unknown:?}"
    );
    for (method, path) in &documented {
        let operation = &document["paths"][path][method];
        assert!(
            operation["operationId"].is_string(),
            "{method} {path} has no operationId"
        );
        for (status, response) in operation["responses"].as_object().unwrap() {
            let response = resolve(&document, response);
            assert!(
                response["description"].is_string(),
                "{method} {path} {status} has no description"
            );
            if status.starts_with('4') || status.starts_with('5') {
                if let Some(schema) = response["content"]["application/json"]["schema"].get("$ref")
                {
                    if path != "/readyz" {
                        assert_eq!(
                            schema, "#/components/schemas/Error",
                            "{method} {path} {status} does not use the error body"
                        );
                    }
                }
            }
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn the_documented_security_matches_who_may_call_what() {
    let app = TestApp::spawn_http(|_| {}).await;
    let document = served_document(&app).await;
    let scheme = &document["components"]["securitySchemes"]["bearerAuth"];
    assert_eq!(scheme["type"], "http");
    assert_eq!(scheme["scheme"], "bearer");
    for (method, path) in ROUTES {
        let security = &document["paths"][path][method]["security"];
        let expected = if OPEN_ROUTES.contains(&path) {
            // The empty requirement: no credentials.
            json!([{}])
        } else if ADMIN_ROUTES.contains(&path) {
            json!([{"bearerAuth": []}])
        } else {
            // A token only when one is configured.
            json!([{"bearerAuth": []}, {}])
        };
        assert_eq!(security, &expected, "security of {method} {path}");
        if ADMIN_ROUTES.contains(&path) {
            let responses = &document["paths"][path][method]["responses"];
            assert!(responses.get("401").is_some() && responses.get("403").is_some());
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn live_answers_match_the_documented_schemas() {
    // Arrange: two identities, so that a lookup can be ambiguous.
    let app = TestApp::spawn_http(|s| s.http.body_limit_bytes = 1024).await;
    let document = served_document(&app).await;
    use reqwest::Method;
    let mut exchanges: Vec<(&str, &str, (u16, Value))> = Vec::new();

    // Act
    let body = r#"{"email":"doc@openapi.test","phoneNumber":"+1 555 0100"}"#;
    exchanges.push((
        "post",
        "/identify",
        send(&app, Method::POST, "/identify", Some(body)).await,
    ));
    let body = r#"{"email":"marty@openapi.test","phoneNumber":5550199}"#;
    exchanges.push((
        "post",
        "/identify",
        send(&app, Method::POST, "/identify", Some(body)).await,
    ));
    let body = r#"{"email":"doc@openapi.test","phoneNumber":"5550101"}"#;
    exchanges.push((
        "post",
        "/identify",
        send(&app, Method::POST, "/identify", Some(body)).await,
    ));
    for bad in [r#"{"email": 5}"#, "{", r#"{}"#, r#"{"email":"no-at-sign"}"#] {
        exchanges.push((
            "post",
            "/identify",
            send(&app, Method::POST, "/identify", Some(bad)).await,
        ));
    }
    let huge = format!(r#"{{"email":"{}@openapi.test"}}"#, "a".repeat(2000));
    exchanges.push((
        "post",
        "/identify",
        send(&app, Method::POST, "/identify", Some(&huge)).await,
    ));
    for query in [
        "/identify?email=doc@openapi.test",
        "/identify?email=nobody@openapi.test",
        "/identify?email=doc@openapi.test&phoneNumber=5550199",
        "/identify",
    ] {
        exchanges.push((
            "get",
            "/identify",
            send(&app, Method::GET, query, None).await,
        ));
    }
    exchanges.push((
        "get",
        "/healthz",
        send(&app, Method::GET, "/healthz", None).await,
    ));
    exchanges.push((
        "get",
        "/readyz",
        send(&app, Method::GET, "/readyz", None).await,
    ));
    let secured = TestApp::spawn_http(|s| {
        s.http.auth_token = Some("tok-openapi".to_owned().into());
        s.http.admin_token = Some("adm-openapi".to_owned().into());
    })
    .await;
    let admin_token = Some("adm-openapi");
    let body = r#"{"email":"doc@openapi.test"}"#;
    exchanges.push((
        "post",
        "/identify",
        send(&secured, Method::POST, "/identify", Some(body)).await,
    ));
    // History and the admin routes: a merge, its history, its undo, an erasure.
    let token = Some("tok-openapi");
    let history = "/identities/{id}/history";
    exchanges.push((
        "post",
        "/forget",
        send(&app, Method::POST, "/forget", Some(r#"{"id": 1}"#)).await,
    ));
    for body in [
        r#"{"email":"doc@openapi.test","phoneNumber":"5550100"}"#,
        r#"{"email":"biff@openapi.test","phoneNumber":"717171"}"#,
        r#"{"email":"doc@openapi.test","phoneNumber":"717171"}"#,
        r#"{"email":"test@test.com"}"#,
    ] {
        exchanges.push((
            "post",
            "/identify",
            send_as(&secured, token, Method::POST, "/identify", Some(body)).await,
        ));
    }
    // The second request merged biff into doc's older identity.
    let biff = exchanges[exchanges.len() - 3].2 .1["contact"]["primaryContactId"].clone();
    assert_eq!(
        exchanges[exchanges.len() - 2].2 .1["contact"]["secondaryContactIds"],
        serde_json::json!([biff])
    );
    for id in [biff.to_string(), "99999".to_owned()] {
        let path = format!("/identities/{id}/history");
        exchanges.push((
            "get",
            history,
            send_as(&secured, token, Method::GET, &path, None).await,
        ));
    }
    for id in [biff.to_string(), "99999".to_owned()] {
        let path = format!("/identities/{id}/explain");
        exchanges.push((
            "get",
            "/identities/{id}/explain",
            send_as(&secured, token, Method::GET, &path, None).await,
        ));
    }
    let unmerge = "/identities/{id}/unmerge";
    for id in [1.to_string(), biff.to_string(), 99999.to_string()] {
        let path = format!("/identities/{id}/unmerge");
        exchanges.push((
            "post",
            unmerge,
            send_as(&secured, admin_token, Method::POST, &path, None).await,
        ));
    }
    // The undo kept the two apart: the same bridging input is refused and queued.
    let body = r#"{"email":"doc@openapi.test","phoneNumber":"717171"}"#;
    exchanges.push((
        "post",
        "/identify",
        send_as(&secured, token, Method::POST, "/identify", Some(body)).await,
    ));
    for query in [
        "/reviews?reason=keep_apart&limit=10",
        "/reviews?reason=nope",
    ] {
        exchanges.push((
            "get",
            "/reviews",
            send_as(&secured, admin_token, Method::GET, query, None).await,
        ));
    }
    let review = exchanges[exchanges.len() - 2].2 .1["reviews"][0]["id"].clone();
    assert!(review.is_i64(), "the refused link is queued");
    for (action, id) in [
        ("approve", review.to_string()),
        ("reject", review.to_string()),
        ("approve", "99999".to_owned()),
    ] {
        let path = format!("/reviews/{id}/{action}");
        let documented = if action == "approve" {
            "/reviews/{id}/approve"
        } else {
            "/reviews/{id}/reject"
        };
        exchanges.push((
            "post",
            documented,
            send_as(&secured, admin_token, Method::POST, &path, None).await,
        ));
    }
    for body in [r#"{"email":"biff@openapi.test"}"#, r#"{"id": 99999}"#] {
        exchanges.push((
            "post",
            "/forget",
            send_as(&secured, admin_token, Method::POST, "/forget", Some(body)).await,
        ));
    }
    let body = r#"{"email":"biff@openapi.test"}"#;
    exchanges.push((
        "post",
        "/identify",
        send_as(&secured, token, Method::POST, "/identify", Some(body)).await,
    ));

    // The document itself is open, like the probes.
    let (status, open) = send(&secured, Method::GET, "/openapi.json", None).await;
    assert_eq!(status, 200);
    assert_eq!(open, document);

    // Assert: each status is documented for its route and each body has its shape.
    let statuses: BTreeSet<u16> = exchanges
        .iter()
        .map(|(_, _, (status, _))| *status)
        .collect();
    assert_eq!(
        statuses,
        BTreeSet::from([200, 400, 401, 403, 404, 409, 410, 413]),
        "the exchanges cover the statuses they were written for"
    );
    for (method, path, (status, body)) in &exchanges {
        assert_documented_answer(&document, method, path, *status, body);
    }
    let metrics = app
        .http
        .get(format!("{}/metrics", app.base_url))
        .send()
        .await
        .unwrap();
    assert!(metrics.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert!(
        document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
            .get("text/plain")
            .is_some()
    );
    secured.stop().await;
    app.stop().await;
}

/// The document's identifier schemas say exactly what the parser accepts, so a value
/// the document calls valid is never refused as invalid and the other way round.
/// (Unicode domains, which IDNA may or may not convert, are outside the pattern and
/// left out here; the blocklist's zeros are in it.)
#[test]
fn the_documented_identifier_patterns_accept_exactly_what_the_parser_accepts() {
    use identity_reconciler::domain::{strip_invisible, Email, Normalization, Phone};
    use proptest::prelude::*;
    let document = contracts::load("openapi.json");
    let schemas = &document["components"]["schemas"];
    let email = contracts::validator(&schemas["Email"]);
    let phone = contracts::validator(&schemas["PhoneString"]);
    let blank = contracts::validator(&schemas["Blank"]);
    let blank_email = contracts::validator(&schemas["BlankEmail"]);
    let blocked_phone = contracts::validator(&schemas["BlockedPhone"]);
    let any_of = |alphabet: &'static [char]| {
        prop::collection::vec(prop::sample::select(alphabet), 0..24)
            .prop_map(|chars| chars.into_iter().collect::<String>())
    };
    const EMAIL_CHARS: &[char] = &[
        'a', 'B', 'é', '1', '@', '@', '.', '-', '!', ' ', '\t', '\u{a0}', '\u{200b}', '\u{ad}',
        '\u{202e}', '\u{1}', '\u{7f}',
    ];
    const PHONE_CHARS: &[char] = &[
        '0', '0', '1', '9', '+', ' ', '(', ')', '.', '-', '\t', '\u{a0}', '\u{200b}', '\u{feff}',
        'a', '\u{1}',
    ];
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(2000));
    runner
        .run(&any_of(EMAIL_CHARS), |raw| {
            let value = Value::String(raw.clone());
            let cleaned = strip_invisible(&raw);
            if cleaned.rsplit('@').next().is_some_and(|d| !d.is_ascii()) {
                return Ok(());
            }
            let parsed = Email::parse(&raw, Normalization::Standard);
            prop_assert_eq!(
                email.is_valid(&value),
                matches!(parsed, Ok(Some(_))),
                "email {:?}",
                raw
            );
            prop_assert_eq!(
                blank_email.is_valid(&value),
                matches!(parsed, Ok(None)),
                "{:?}",
                raw
            );
            Ok(())
        })
        .unwrap();
    let blocklist = identity_reconciler::config::Settings::load(None)
        .unwrap()
        .reconcile
        .blocklist;
    runner
        .run(&any_of(PHONE_CHARS), |raw| {
            let value = Value::String(raw.clone());
            let parsed = Phone::parse(&raw, Normalization::Standard);
            let accepted = matches!(&parsed, Ok(Some(p)) if !blocklist.blocks_phone(p.as_str()));
            let blocked = matches!(&parsed, Ok(Some(p)) if blocklist.blocks_phone(p.as_str()));
            prop_assert_eq!(phone.is_valid(&value), accepted, "phone {:?}", raw);
            prop_assert_eq!(
                blocked_phone.is_valid(&value),
                blocked,
                "blocked phone {:?}",
                raw
            );
            prop_assert_eq!(
                blank.is_valid(&value),
                matches!(parsed, Ok(None)),
                "{:?}",
                raw
            );
            Ok(())
        })
        .unwrap();
    // The length bounds, which the generated values above stay far from.
    for n in [64, 65] {
        let raw = " ".repeat(n);
        let parsed = Phone::parse(&raw, Normalization::Standard);
        assert_eq!(
            blank.is_valid(&json!(raw)),
            matches!(parsed, Ok(None)),
            "{n} spaces"
        );
    }
    for n in [254, 255] {
        let raw = " ".repeat(n);
        let parsed = Email::parse(&raw, Normalization::Standard);
        assert_eq!(
            blank_email.is_valid(&json!(raw)),
            matches!(parsed, Ok(None)),
            "{n} spaces"
        );
    }
}
