//! Bearer-token authentication of the HTTP sidecar: the API token for the API routes,
//! the admin token for the admin routes, neither implying the other.

mod support;

use reqwest::Method;
use serde_json::Value;
use support::app::TestApp;

const API: &str = "s3cret-token";
const ADMIN: &str = "adm1n-token";

async fn send(
    app: &TestApp,
    method: Method,
    path: &str,
    authorization: Option<&str>,
    body: Option<&str>,
) -> (u16, Value, Option<String>) {
    let mut request = app.http.request(method, format!("{}{path}", app.base_url));
    if let Some(authorization) = authorization {
        request = request.header("authorization", authorization);
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body.to_owned());
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let challenge = response
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body, challenge)
}

#[tokio::test]
async fn with_a_token_the_api_requires_it_but_probes_stay_open() {
    let app = TestApp::spawn_http(|s| s.http.auth_token = Some(API.to_owned().into())).await;
    let body = Some(r#"{"email":"a@x.io"}"#);

    let anonymous = send(&app, Method::POST, "/identify", None, body).await;
    let wrong = send(
        &app,
        Method::POST,
        "/identify",
        Some("Bearer s3cret-tokex"),
        body,
    )
    .await;
    let right = send(
        &app,
        Method::POST,
        "/identify",
        Some("Bearer s3cret-token"),
        body,
    )
    .await;
    let lookup = send(&app, Method::GET, "/identify?email=a@x.io", None, None).await;

    assert_eq!(anonymous.0, 401);
    assert_eq!(anonymous.1["error"]["code"], "unauthorized");
    assert_eq!(
        anonymous.2.as_deref(),
        Some("Bearer"),
        "a 401 names its scheme"
    );
    assert_eq!(wrong.0, 401);
    assert_eq!(right.0, 200);
    assert_eq!(lookup.0, 401);
    for probe in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        assert_eq!(app.get(probe).await.0, 200, "{probe}");
    }
    assert_eq!(
        app.db.count("SELECT count(*) FROM contact").await,
        1,
        "only the authorised request wrote"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_bearer_scheme_name_is_case_insensitive() {
    let app = TestApp::spawn_http(|s| {
        s.http.auth_token = Some(API.to_owned().into());
        s.http.admin_token = Some(ADMIN.to_owned().into());
    })
    .await;
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        let api = format!("{scheme} {API}");
        let (status, _, _) = send(
            &app,
            Method::GET,
            "/identify?email=a@x.io",
            Some(&api),
            None,
        )
        .await;
        assert_eq!(status, 404, "{scheme}: authorised, nothing found");
        let admin = format!("{scheme} {ADMIN}");
        let (status, body, _) = send(
            &app,
            Method::POST,
            "/identities/999/unmerge",
            Some(&admin),
            None,
        )
        .await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (404, &"not_found".into()),
            "{scheme}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn the_api_token_never_grants_the_admin_routes() {
    let app = TestApp::spawn_http(|s| {
        s.http.auth_token = Some(API.to_owned().into());
        s.http.admin_token = Some(ADMIN.to_owned().into());
    })
    .await;
    let (status, id) = app_identify(&app).await;
    assert_eq!(status, 200);
    let forget = format!(r#"{{"id":{id}}}"#);

    let api = format!("Bearer {API}");
    let admin = format!("Bearer {ADMIN}");
    let with_api = send(&app, Method::POST, "/forget", Some(&api), Some(&forget)).await;
    let without = send(&app, Method::POST, "/forget", None, Some(&forget)).await;
    let unmerge_with_api = send(
        &app,
        Method::POST,
        "/identities/1/unmerge",
        Some(&api),
        None,
    )
    .await;
    // The admin token is not an API token either.
    let lookup_with_admin = send(
        &app,
        Method::GET,
        "/identify?email=a@x.io",
        Some(&admin),
        None,
    )
    .await;

    for (what, (status, body, challenge)) in [
        ("forget with the API token", &with_api),
        ("forget without a token", &without),
        ("unmerge with the API token", &unmerge_with_api),
        ("lookup with the admin token", &lookup_with_admin),
    ] {
        assert_eq!(*status, 401, "{what}");
        assert_eq!(body["error"]["code"], "unauthorized", "{what}");
        assert_eq!(challenge.as_deref(), Some("Bearer"), "{what}");
    }
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM contact WHERE deleted_at IS NULL")
            .await,
        1,
        "nothing was erased"
    );

    let (status, body, _) = send(&app, Method::POST, "/forget", Some(&admin), Some(&forget)).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM contact WHERE deleted_at IS NULL")
            .await,
        0
    );
    app.stop().await;
}

#[tokio::test]
async fn admin_routes_are_off_without_an_admin_token_even_with_an_api_token() {
    let app = TestApp::spawn_http(|s| s.http.auth_token = Some(API.to_owned().into())).await;
    let api = format!("Bearer {API}");
    for path in ["/forget", "/identities/1/unmerge"] {
        let (status, body, _) =
            send(&app, Method::POST, path, Some(&api), Some(r#"{"id":1}"#)).await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (403, &"admin_disabled".into()),
            "{path}"
        );
    }
    app.stop().await;
}

#[tokio::test]
async fn the_same_token_for_api_and_admin_is_refused_at_start() {
    let db = support::db::TestDb::new().await;
    let mut settings = db.settings();
    settings.http.auth_token = Some(API.to_owned().into());
    settings.http.admin_token = Some(API.to_owned().into());
    let built = identity_reconciler::Application::build(
        settings,
        identity_reconciler::Mode::Http,
        tokio_util::sync::CancellationToken::new(),
    )
    .await;
    let error = format!("{:#}", built.err().expect("refused"));
    assert!(error.contains("admin_token must differ"), "{error}");
    assert!(!error.contains(API), "the token is not printed: {error}");
}

async fn app_identify(app: &TestApp) -> (u16, i64) {
    let (status, body, _) = send(
        app,
        Method::POST,
        "/identify",
        Some(&format!("Bearer {API}")),
        Some(r#"{"email":"a@x.io"}"#),
    )
    .await;
    (
        status,
        body["contact"]["primaryContactId"].as_i64().unwrap_or(0),
    )
}

#[tokio::test]
async fn an_erasure_never_runs_on_a_body_with_an_unknown_member() {
    let app = TestApp::spawn_http(|s| s.http.admin_token = Some(ADMIN.to_owned().into())).await;
    let (status, id) = app_identify(&app).await;
    assert_eq!(status, 200);
    let admin = format!("Bearer {ADMIN}");
    let body = format!(r#"{{"id":{id},"x-unknown":42}}"#);
    let (status, answer, _) = send(&app, Method::POST, "/forget", Some(&admin), Some(&body)).await;
    assert_eq!(
        (status, &answer["error"]["code"]),
        (400, &"wrong_type".into()),
        "{answer}"
    );
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM contact WHERE deleted_at IS NULL")
            .await,
        1,
        "nothing was erased"
    );
    app.stop().await;
}
