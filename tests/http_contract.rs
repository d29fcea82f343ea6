//! `POST /identify` and `GET /identify` against the published contract (§3–§5), on
//! real PostgreSQL, a fresh database per test.

mod support;

use identity_reconciler::domain::Normalization;
use serde_json::{json, Value};
use support::app::TestApp;

async fn contacts(app: &TestApp) -> i64 {
    app.db.count("SELECT count(*) FROM contact").await
}

/// Inserts a contact row directly, to reproduce the published examples' ids.
async fn seed(
    app: &TestApp,
    id: i64,
    email: &str,
    phone: &str,
    linked: Option<i64>,
    age_days: i32,
) {
    sqlx::query(
        "INSERT INTO contact (id, email, phone_number, linked_id, link_precedence, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, CASE WHEN $4::bigint IS NULL THEN 'primary' ELSE 'secondary' END, \
                 now() - make_interval(days => $5), now() - make_interval(days => $5))",
    )
    .bind(id)
    .bind(email)
    .bind(phone)
    .bind(linked)
    .bind(age_days)
    .execute(&app.db.pool)
    .await
    .unwrap();
}

#[tokio::test]
async fn the_first_worked_example_answers_as_published_and_inserts_nothing() {
    let app = TestApp::spawn_http(|_| {}).await;
    seed(&app, 1, "lorraine@hillvalley.edu", "123456", None, 10).await;
    seed(&app, 23, "mcfly@hillvalley.edu", "123456", Some(1), 9).await;
    let expected = json!({"contact": {
        "primaryContatctId": 1, "primaryContactId": 1,
        "emails": ["lorraine@hillvalley.edu", "mcfly@hillvalley.edu"],
        "phoneNumbers": ["123456"], "secondaryContactIds": [23]}});

    for body in [
        r#"{"email":"mcfly@hillvalley.edu","phoneNumber":"123456"}"#,
        r#"{"email":null,"phoneNumber":"123456"}"#,
        r#"{"email":"lorraine@hillvalley.edu","phoneNumber":null}"#,
        r#"{"email":"mcfly@hillvalley.edu","phoneNumber":null}"#,
    ] {
        let (status, answer) = app.post_identify(body).await;
        assert_eq!((status, &answer), (200, &expected), "for {body}");
    }
    assert_eq!(contacts(&app).await, 2);
    app.stop().await;
}

#[tokio::test]
async fn the_second_worked_example_merges_two_primaries_without_a_new_row() {
    let app = TestApp::spawn_http(|_| {}).await;
    seed(&app, 11, "george@hillvalley.edu", "919191", None, 10).await;
    seed(&app, 27, "biffsucks@hillvalley.edu", "717171", None, 5).await;

    let (status, answer) = app
        .post_identify(r#"{"email":"george@hillvalley.edu","phoneNumber":"717171"}"#)
        .await;

    assert_eq!(status, 200);
    assert_eq!(
        answer,
        json!({"contact": {
            "primaryContatctId": 11, "primaryContactId": 11,
            "emails": ["george@hillvalley.edu", "biffsucks@hillvalley.edu"],
            "phoneNumbers": ["919191", "717171"], "secondaryContactIds": [27]}})
    );
    let (linked, precedence): (Option<i64>, String) =
        sqlx::query_as("SELECT linked_id, link_precedence FROM contact WHERE id = 27")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!((linked, precedence.as_str()), (Some(11), "secondary"));
    assert_eq!(contacts(&app).await, 2);
    app.stop().await;
}

#[tokio::test]
async fn new_identifiers_create_a_primary_then_secondaries_only_for_new_information() {
    let app = TestApp::spawn_http(|_| {}).await;

    let (_, first) = app
        .post_identify(r#"{"email":"doc@hillvalley.edu","phoneNumber":"555"}"#)
        .await;
    let primary = first["contact"]["primaryContactId"].as_i64().unwrap();
    assert_eq!(first["contact"]["secondaryContactIds"], json!([]));

    let (_, second) = app
        .post_identify(r#"{"email":"emmett@hillvalley.edu","phoneNumber":"555"}"#)
        .await;
    assert_eq!(second["contact"]["primaryContactId"], primary);
    assert_eq!(
        second["contact"]["emails"],
        json!(["doc@hillvalley.edu", "emmett@hillvalley.edu"])
    );
    assert_eq!(contacts(&app).await, 2);

    // Known values, alone or together, insert nothing.
    for body in [
        r#"{"email":"emmett@hillvalley.edu"}"#,
        r#"{"phoneNumber":"555"}"#,
        r#"{"email":"doc@hillvalley.edu","phoneNumber":"555"}"#,
    ] {
        let (status, answer) = app.post_identify(body).await;
        assert_eq!((status, &answer), (200, &second), "for {body}");
    }
    assert_eq!(contacts(&app).await, 2);

    // A new phone alone is new information.
    let (_, third) = app
        .post_identify(r#"{"email":"doc@hillvalley.edu","phoneNumber":"777"}"#)
        .await;
    assert_eq!(third["contact"]["phoneNumbers"], json!(["555", "777"]));
    assert_eq!(contacts(&app).await, 3);
    app.stop().await;
}

#[tokio::test]
async fn three_primaries_merge_into_the_oldest_and_demoted_secondaries_follow() {
    let app = TestApp::spawn_http(|_| {}).await;
    let id = |v: &Value| v["contact"]["primaryContactId"].as_i64().unwrap();
    let (_, a) = app
        .post_identify(r#"{"email":"a@x.io","phoneNumber":"1"}"#)
        .await;
    let (_, b) = app
        .post_identify(r#"{"email":"b@x.io","phoneNumber":"2"}"#)
        .await;
    let (_, b2) = app
        .post_identify(r#"{"email":"b2@x.io","phoneNumber":"2"}"#)
        .await; // secondary of b
    app.post_identify(r#"{"email":"c@x.io","phoneNumber":"3"}"#)
        .await;
    assert_eq!(id(&b2), id(&b));

    // b, with its secondary b2, merges into the oldest primary a; then c does.
    let (_, ab) = app
        .post_identify(r#"{"email":"a@x.io","phoneNumber":"2"}"#)
        .await;
    assert_eq!(id(&ab), id(&a));
    let (_, abc) = app
        .post_identify(r#"{"email":"c@x.io","phoneNumber":"1"}"#)
        .await;
    assert_eq!(id(&abc), id(&a));
    assert_eq!(
        abc["contact"]["emails"],
        json!(["a@x.io", "b@x.io", "b2@x.io", "c@x.io"])
    );
    assert_eq!(abc["contact"]["phoneNumbers"], json!(["1", "2", "3"]));

    // A lookup through the demoted primary's former secondary answers with the survivor.
    let (status, through_b2) = app.post_identify(r#"{"email":"b2@x.io"}"#).await;
    assert_eq!((status, through_b2), (200, abc.clone()));
    let chained = app
        .db
        .count("SELECT count(*) FROM contact s JOIN contact p ON p.id = s.linked_id WHERE p.linked_id IS NOT NULL")
        .await;
    assert_eq!(chained, 0);
    assert_eq!(contacts(&app).await, 4, "merges insert no rows");
    app.stop().await;
}

#[tokio::test]
async fn phones_may_be_json_numbers_and_identifiers_are_normalised() {
    let app = TestApp::spawn_http(|_| {}).await;
    let (_, first) = app
        .post_identify(r#"{"email":"  Marty@HillValley.EDU ","phoneNumber":"+1 (555) 010-2030"}"#)
        .await;
    assert_eq!(first["contact"]["emails"], json!(["marty@hillvalley.edu"]));
    assert_eq!(first["contact"]["phoneNumbers"], json!(["+15550102030"]));

    let (_, number) = app
        .post_identify(r#"{"email":"marty@hillvalley.edu","phoneNumber":15550102030}"#)
        .await;
    assert_eq!(
        number["contact"]["phoneNumbers"],
        json!(["+15550102030", "15550102030"])
    );
    assert!(number["contact"]["phoneNumbers"][1].is_string());

    let (_, same) = app
        .post_identify(r#"{"email":"marty@hillvalley.edu","phoneNumber":"+1.555.010.2030"}"#)
        .await;
    assert_eq!(same, number);
    assert_eq!(contacts(&app).await, 2);
    app.stop().await;
}

#[tokio::test]
async fn exact_normalisation_keeps_values_as_sent() {
    let app = TestApp::spawn_http(|s| s.reconcile.normalization = Normalization::Exact).await;
    let (_, first) = app
        .post_identify(r#"{"email":"Marty@X.io","phoneNumber":"555-01"}"#)
        .await;
    let (_, second) = app.post_identify(r#"{"email":"marty@x.io"}"#).await;
    assert_eq!(first["contact"]["phoneNumbers"], json!(["555-01"]));
    assert_ne!(
        first["contact"]["primaryContactId"],
        second["contact"]["primaryContactId"]
    );
    assert_eq!(contacts(&app).await, 2);
    app.stop().await;
}

#[tokio::test]
async fn bad_requests_get_a_clear_error_and_write_nothing() {
    let app = TestApp::spawn_http(|s| s.http.body_limit_bytes = 1024).await;
    let long_email = format!(r#"{{"email":"{}@x.io"}}"#, "a".repeat(300));
    let oversized = format!(r#"{{"email":"a@x.io","pad":"{}"}}"#, "x".repeat(2000));
    for (body, status, code) in [
        ("{}", 400, "no_identifier"),
        (r#"{"email":"","phoneNumber":""}"#, 400, "no_identifier"),
        (r#"{"email":null,"phoneNumber":null}"#, 400, "no_identifier"),
        (r#"{"email":42}"#, 400, "wrong_type"),
        (r#"{"email":["a@x.io"]}"#, 400, "wrong_type"),
        (r#"{"phoneNumber":{"n":"1"}}"#, 400, "wrong_type"),
        (r#"{"phoneNumber":true}"#, 400, "wrong_type"),
        ("[]", 400, "wrong_type"),
        (r#"{"email":"a@x.io""#, 400, "malformed_json"),
        ("not json", 400, "malformed_json"),
        ("", 400, "malformed_json"),
        (r#"{"email":"no-at-sign"}"#, 400, "invalid_value"),
        (r#"{"phoneNumber":"call me"}"#, 400, "invalid_value"),
        (r#"{"phoneNumber":12.5}"#, 400, "invalid_value"),
        (long_email.as_str(), 400, "too_long"),
        (oversized.as_str(), 413, "payload_too_large"),
    ] {
        let (got, answer) = app.post_identify(body).await;
        assert_eq!(got, status, "status for {body:.60}");
        assert_eq!(answer["error"]["code"], code, "code for {body:.60}");
        assert!(answer["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
    }
    let response = app
        .http
        .put(format!("{}/identify", app.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 405);
    assert_eq!(app.db.count("SELECT count(*) FROM contact").await, 0);
    assert_eq!(app.db.count("SELECT count(*) FROM outbox").await, 0);
    app.stop().await;
}

#[tokio::test]
async fn the_lookup_reads_without_writing() {
    let app = TestApp::spawn_http(|_| {}).await;
    let (status, missing) = app.get("/identify?email=nobody@x.io").await;
    assert_eq!(
        (status, missing["error"]["code"].as_str()),
        (404, Some("not_found"))
    );

    let (_, a) = app
        .post_identify(r#"{"email":"a@x.io","phoneNumber":"1"}"#)
        .await;
    app.post_identify(r#"{"email":"b@x.io","phoneNumber":"2"}"#)
        .await;
    let before = contacts(&app).await;

    let (status, found) = app.get("/identify?phoneNumber=1&email=A@X.io").await;
    assert_eq!((status, &found), (200, &a));
    let (status, new_info) = app.get("/identify?email=a@x.io&phoneNumber=99").await;
    assert_eq!(
        (status, &new_info),
        (200, &a),
        "a new phone is not added by a lookup"
    );
    let (status, ambiguous) = app.get("/identify?email=a@x.io&phoneNumber=2").await;
    assert_eq!(
        (status, ambiguous["error"]["code"].as_str()),
        (409, Some("ambiguous"))
    );
    let (status, invalid) = app.get("/identify").await;
    assert_eq!(
        (status, invalid["error"]["code"].as_str()),
        (400, Some("no_identifier"))
    );
    assert_eq!(contacts(&app).await, before);
    app.stop().await;
}

#[tokio::test]
async fn every_change_through_http_is_written_to_the_outbox() {
    let app = TestApp::spawn_http(|_| {}).await;
    app.post_identify(r#"{"email":"a@x.io","phoneNumber":"1"}"#)
        .await;
    app.post_identify(r#"{"email":"a@x.io","phoneNumber":"1"}"#)
        .await; // no change: no record
    app.post_identify(r#"{"email":"b@x.io","phoneNumber":"2"}"#)
        .await;
    app.post_identify(r#"{"email":"a@x.io","phoneNumber":"2"}"#)
        .await; // merge

    let rows: Vec<(String, String)> = sqlx::query_as("SELECT key, payload FROM outbox ORDER BY id")
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
    let records: Vec<(String, Value)> = rows
        .into_iter()
        .map(|(k, p)| (k, serde_json::from_str(&p).unwrap()))
        .collect();
    assert_eq!(records.len(), 4, "{records:?}");
    let (a_key, merged) = (&records[2].0, &records[2].1);
    assert_eq!(merged["source"], "http");
    assert_eq!(merged["changed"], true);
    assert_eq!(merged["version"], 2);
    assert_eq!(merged["contact"]["emails"], json!(["a@x.io", "b@x.io"]));
    assert_eq!(a_key, &records[0].0);
    let (b_key, absorbed) = (&records[3].0, &records[3].1);
    assert_eq!(b_key, &records[1].0);
    assert_eq!(absorbed["mergedInto"].to_string(), *a_key);
    assert_eq!(absorbed["version"], 2);
    app.stop().await;
}

#[tokio::test]
async fn health_readiness_and_metrics_answer() {
    let app = TestApp::spawn_http(|_| {}).await;
    let (status, _) = app.get("/healthz").await;
    assert_eq!(status, 200);
    let (status, ready) = app.get("/readyz").await;
    assert_eq!(
        (status, ready["database"].as_str(), ready["kafka"].as_str()),
        (200, Some("up"), Some("not_used"))
    );
    app.post_identify(r#"{"email":"a@x.io"}"#).await;
    let metrics = app
        .http
        .get(format!("{}/metrics", app.base_url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .contains(r#"identity_reconciler_http_requests_total{route="/identify",status="200"}"#),
        "{metrics}"
    );
    app.stop().await;
}
