//! Optional bearer-token authentication of the HTTP sidecar.

mod support;

use support::TestApp;

#[tokio::test]
async fn with_a_token_the_api_requires_it_but_probes_stay_open() {
    let app =
        TestApp::spawn_http(|s| s.http.auth_token = Some("s3cret-token".to_owned().into())).await;
    let identify = format!("{}/identify", app.base_url);
    let body = r#"{"email":"a@x.io"}"#;

    let anonymous = app.http.post(&identify).body(body).send().await.unwrap();
    let wrong = app
        .http
        .post(&identify)
        .bearer_auth("s3cret-tokex")
        .body(body)
        .send()
        .await
        .unwrap();
    let right = app
        .http
        .post(&identify)
        .bearer_auth("s3cret-token")
        .body(body)
        .send()
        .await
        .unwrap();
    let lookup = app
        .http
        .get(format!("{identify}?email=a@x.io"))
        .send()
        .await
        .unwrap();

    assert_eq!(anonymous.status().as_u16(), 401);
    let error: serde_json::Value = anonymous.json().await.unwrap();
    assert_eq!(error["error"]["code"], "unauthorized");
    assert_eq!(wrong.status().as_u16(), 401);
    assert_eq!(right.status().as_u16(), 200);
    assert_eq!(lookup.status().as_u16(), 401);
    for probe in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(app.get(probe).await.0, 200, "{probe}");
    }
    assert_eq!(
        app.db.count("SELECT count(*) FROM contact").await,
        1,
        "only the authorised request wrote"
    );
    app.stop().await;
}
