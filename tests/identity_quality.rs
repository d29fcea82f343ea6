//! Identity quality through the HTTP sidecar, on real PostgreSQL: the blocklist, the
//! per-identity caps, the merge journal, undoing a merge and erasure.

mod support;

use identity_reconciler::store::DeadLetter;
use serde_json::{json, Value};
use support::app::TestApp;
use support::invariants::assert_invariants;
use support::model::{database_clusters, Model};

const TOKEN: &str = "quality-api-token";
const ADMIN_TOKEN: &str = "quality-admin-token";

async fn app_with_token(tweak: impl FnOnce(&mut identity_reconciler::config::Settings)) -> TestApp {
    TestApp::spawn_http(|settings| {
        settings.http.auth_token = Some(TOKEN.to_owned().into());
        settings.http.admin_token = Some(ADMIN_TOKEN.to_owned().into());
        tweak(settings);
    })
    .await
}

async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
    token: Option<&str>,
) -> (u16, Value) {
    let mut request = app.http.request(method, format!("{}{path}", app.base_url));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn identify(app: &TestApp, email: Option<&str>, phone: Option<&str>) -> (u16, Value) {
    let body = json!({"email": email, "phoneNumber": phone});
    send(
        app,
        reqwest::Method::POST,
        "/identify",
        Some(body),
        Some(TOKEN),
    )
    .await
}

async fn get(app: &TestApp, path: &str) -> (u16, Value) {
    send(app, reqwest::Method::GET, path, None, Some(TOKEN)).await
}

async fn admin(app: &TestApp, path: &str, body: Option<Value>) -> (u16, Value) {
    send(app, reqwest::Method::POST, path, body, Some(ADMIN_TOKEN)).await
}

async fn primary_id(answer: &Value) -> i64 {
    answer["contact"]["primaryContactId"].as_i64().unwrap()
}

async fn contacts(app: &TestApp) -> i64 {
    app.db.count("SELECT count(*) FROM contact").await
}

#[tokio::test]
async fn the_default_blocklist_drops_placeholders_and_refuses_inputs_left_empty() {
    let app = app_with_token(|_| {}).await;

    // Only junk: refused like an empty input, nothing stored.
    let (status, body) = identify(&app, Some("test@test.com"), Some("000-000-0000")).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["code"], "blocked");
    let (status, body) = identify(&app, Some("null"), None).await;
    assert_eq!((status, &body["error"]["code"]), (400, &json!("blocked")));
    assert_eq!(contacts(&app).await, 0);

    // Junk beside a real identifier: the junk is dropped, the rest applied.
    let (status, body) = identify(&app, Some("NoReply@Shop.example"), Some("555 0101")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["contact"]["emails"], json!([]));
    assert_eq!(body["contact"]["phoneNumbers"], json!(["5550101"]));
    let stored: i64 = app
        .db
        .count("SELECT count(*) FROM contact WHERE email IS NOT NULL")
        .await;
    assert_eq!(stored, 0, "a blocked email is never stored");

    // Ordinary test data passes.
    for (email, phone) in [("a@test.com", "123456"), ("b@test.com", "111111")] {
        let (status, body) = identify(&app, Some(email), Some(phone)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["contact"]["emails"], json!([email]));
    }
    // A lookup by a blocked value is refused the same way.
    let (status, body) = get(&app, "/identify?phoneNumber=0000000000").await;
    assert_eq!((status, &body["error"]["code"]), (400, &json!("blocked")));
    app.stop().await;
}

#[tokio::test]
async fn a_shared_junk_phone_does_not_fuse_two_customers() {
    let app = app_with_token(|_| {}).await;
    let (_, alice) = identify(&app, Some("alice@example.org"), Some("0000000000")).await;
    let (_, bob) = identify(&app, Some("bob@example.org"), Some("+0000 000 000")).await;
    assert_ne!(primary_id(&alice).await, primary_id(&bob).await);
    assert_eq!(bob["contact"]["emails"], json!(["bob@example.org"]));
    assert_eq!(bob["contact"]["phoneNumbers"], json!([]));
    assert_eq!(contacts(&app).await, 2);
    assert_invariants(&app.db.pool).await;
    app.stop().await;
}

#[tokio::test]
async fn a_cap_refuses_the_merge_and_the_growth_records_both_and_keeps_invariants() {
    let app = app_with_token(|s| s.reconcile.limits.max_emails = 2).await;
    let (_, a) = identify(&app, Some("a1@x.io"), Some("1")).await;
    identify(&app, Some("a2@x.io"), Some("1")).await;
    let (_, b) = identify(&app, Some("b1@x.io"), Some("2")).await;
    let (a, b) = (primary_id(&a).await, primary_id(&b).await);
    let rows_before = contacts(&app).await;

    // Merging would give the identity three emails: refused, A answered unchanged.
    let (status, merge) = identify(&app, Some("a1@x.io"), Some("2")).await;
    assert_eq!(status, 200, "{merge}");
    assert_eq!(merge["contact"]["primaryContactId"], a);
    assert_eq!(merge["contact"]["emails"], json!(["a1@x.io", "a2@x.io"]));
    // A third email for A: refused too.
    let (_, grow) = identify(&app, Some("a3@x.io"), Some("1")).await;
    assert_eq!(grow["contact"]["emails"], json!(["a1@x.io", "a2@x.io"]));
    // B may still grow to its cap.
    let (_, b_grown) = identify(&app, Some("b2@x.io"), Some("2")).await;
    assert_eq!(b_grown["contact"]["emails"], json!(["b1@x.io", "b2@x.io"]));

    assert_eq!(contacts(&app).await, rows_before + 1);
    let primaries: i64 = app
        .db
        .count("SELECT count(*) FROM contact WHERE linked_id IS NULL")
        .await;
    assert_eq!(primaries, 2, "A and B stay apart");
    let reviews: Vec<(String, i64, Option<i64>, String)> = sqlx::query_as(
        "SELECT reason, primary_id, other_primary_id, source FROM link_review ORDER BY id",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(
        reviews,
        vec![
            ("max_emails".into(), a, Some(b), "http".into()),
            ("max_emails".into(), a, None, "http".into()),
        ]
    );
    assert_invariants(&app.db.pool).await;
    app.stop().await;
}

/// C joins B, then B (with C) joins A.
async fn three_way_chain(app: &TestApp) -> (i64, i64, i64) {
    let (_, a) = identify(app, Some("a@x.io"), Some("1")).await;
    let (_, b) = identify(app, Some("b@x.io"), Some("2")).await;
    let (_, c) = identify(app, Some("c@x.io"), Some("3")).await;
    identify(app, Some("b@x.io"), Some("3")).await;
    let (_, all) = identify(app, Some("a@x.io"), Some("2")).await;
    let ids = (
        primary_id(&a).await,
        primary_id(&b).await,
        primary_id(&c).await,
    );
    assert_eq!(all["contact"]["secondaryContactIds"], json!([ids.1, ids.2]));
    ids
}

#[tokio::test]
async fn the_journal_shows_every_merge_of_a_three_way_chain() {
    let app = app_with_token(|_| {}).await;
    let (a, b, c) = three_way_chain(&app).await;

    // Any contact of the identity leads to the same history.
    let (status, history) = get(&app, &format!("/identities/{c}/history")).await;
    assert_eq!(status, 200, "{history}");
    assert_eq!(history["primaryContactId"], a);
    let entries = history["entries"].as_array().unwrap();
    let kinds: Vec<&str> = entries
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["added", "added", "added", "merged", "merged"]);
    let added: Vec<i64> = entries[..3]
        .iter()
        .map(|e| e["contactId"].as_i64().unwrap())
        .collect();
    assert_eq!(added, [a, b, c]);
    assert_eq!(
        (&entries[3]["survivorId"], &entries[3]["absorbedId"]),
        (&json!(b), &json!(c))
    );
    assert_eq!(entries[3]["movedContactIds"], json!([]));
    assert_eq!(
        (&entries[4]["survivorId"], &entries[4]["absorbedId"]),
        (&json!(a), &json!(b))
    );
    assert_eq!(entries[4]["movedContactIds"], json!([c]));
    assert_eq!(entries[4]["source"], "http");

    let (status, missing) = get(&app, "/identities/999999/history").await;
    assert_eq!(
        (status, &missing["error"]["code"]),
        (404, &json!("not_found"))
    );
    app.stop().await;
}

#[tokio::test]
async fn merges_are_undone_newest_first_and_publish_both_identities() {
    let app = app_with_token(|_| {}).await;
    let (a, b, c) = three_way_chain(&app).await;

    let (status, refused) = admin(&app, &format!("/identities/{c}/unmerge"), None).await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "unmerge_refused");
    assert!(refused["error"]["message"]
        .as_str()
        .unwrap()
        .contains(&format!("absorbed identity {b} after this merge")));

    let (status, unmerged) = admin(&app, &format!("/identities/{b}/unmerge"), None).await;
    assert_eq!(status, 200, "{unmerged}");
    assert_eq!(unmerged["restored"]["contact"]["primaryContactId"], b);
    assert_eq!(
        unmerged["restored"]["contact"]["secondaryContactIds"],
        json!([c])
    );
    assert_eq!(
        unmerged["survivor"]["contact"]["secondaryContactIds"],
        json!([])
    );
    let (status, _) = admin(&app, &format!("/identities/{c}/unmerge"), None).await;
    assert_eq!(status, 200);
    let (status, again) = admin(&app, &format!("/identities/{c}/unmerge"), None).await;
    assert_eq!(
        (status, &again["error"]["code"]),
        (409, &json!("unmerge_refused"))
    );

    let primaries: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM contact WHERE linked_id IS NULL ORDER BY id")
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(primaries, [a, b, c]);
    // Each undo published the identity of both sides, with the next version.
    let records: Vec<(String, Value)> =
        sqlx::query_as("SELECT key, payload::jsonb FROM outbox ORDER BY id")
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    let unmerge_keys: Vec<&str> = records
        .iter()
        .filter(|(_, r)| r["source"] == "unmerge")
        .map(|(k, _)| k.as_str())
        .collect();
    assert_eq!(
        unmerge_keys,
        [b.to_string(), a.to_string(), c.to_string(), b.to_string()]
    );
    let (_, history) = get(&app, &format!("/identities/{b}/history")).await;
    let kinds: Vec<&str> = history["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(kinds, ["added", "merged", "merged", "unmerged", "unmerged"]);
    assert_invariants(&app.db.pool).await;
    app.stop().await;
}

type Input = (Option<&'static str>, Option<&'static str>);

/// Applies `inputs` through the service and the model; returns the service's answers.
async fn apply(app: &TestApp, model: &mut Model, inputs: &[Input]) -> Vec<Value> {
    let mut answers = Vec::new();
    for &(email, phone) in inputs {
        model.identify(email, phone);
        let (status, answer) = identify(app, email, phone).await;
        assert_eq!(status, 200, "{answer}");
        answers.push(answer);
    }
    answers
}

#[tokio::test]
async fn unmerge_restores_the_clusters_the_model_has_without_the_merging_input() {
    let app = app_with_token(|_| {}).await;
    let before: [Input; 4] = [
        (Some("doc@hv.edu"), Some("1985")),
        (Some("emmett@hv.edu"), Some("1985")),
        (Some("marty@hv.edu"), Some("1955")),
        (Some("mcfly@hv.edu"), Some("1955")),
    ];
    let merging: Input = (Some("doc@hv.edu"), Some("1955"));
    let after: [Input; 3] = [
        // Joins through the absorbed side only.
        (Some("calvin@hv.edu"), Some("1955")),
        (Some("calvin@hv.edu"), Some("2015")),
        // Joins through the survivor's side only.
        (Some("brown@hv.edu"), Some("1985")),
    ];
    let mut without_merge = Model::default();
    apply(&app, &mut without_merge, &before).await;
    let (_, merged) = identify(&app, merging.0, merging.1).await;
    let absorbed = merged["contact"]["secondaryContactIds"][1]
        .as_i64()
        .unwrap();
    apply(&app, &mut without_merge, &after).await;
    assert_eq!(
        database_clusters(&app.db.pool).await.len(),
        1,
        "one identity before the undo"
    );

    let (status, unmerged) = admin(&app, &format!("/identities/{absorbed}/unmerge"), None).await;
    assert_eq!(status, 200, "{unmerged}");

    // The merging input inserted nothing, so the model's ids are the database's.
    assert_eq!(
        database_clusters(&app.db.pool).await,
        without_merge.clusters()
    );
    assert_eq!(
        unmerged["restored"],
        without_merge.identity(absorbed).to_json()
    );
    let survivor = unmerged["survivor"]["contact"]["primaryContactId"]
        .as_i64()
        .unwrap();
    assert_eq!(
        unmerged["survivor"],
        without_merge.identity(survivor).to_json()
    );
    assert_invariants(&app.db.pool).await;
    app.stop().await;
}

#[tokio::test]
async fn unmerge_refuses_when_inputs_used_both_sides_together_since() {
    let app = app_with_token(|_| {}).await;
    identify(&app, Some("doc@hv.edu"), Some("1985")).await;
    let (_, marty) = identify(&app, Some("marty@hv.edu"), Some("1955")).await;
    identify(&app, Some("doc@hv.edu"), Some("1955")).await;
    // The same person again, through the other pair of identifiers: without the
    // first merge, this input alone would have merged them.
    identify(&app, Some("marty@hv.edu"), Some("1985")).await;
    let clusters = database_clusters(&app.db.pool).await;

    let marty = primary_id(&marty).await;
    let (status, refused) = admin(&app, &format!("/identities/{marty}/unmerge"), None).await;
    assert_eq!(status, 409, "{refused}");
    assert_eq!(refused["error"]["code"], "unmerge_refused");
    assert!(refused["error"]["message"]
        .as_str()
        .unwrap()
        .contains("used identifiers of both sides together"));
    assert_eq!(
        database_clusters(&app.db.pool).await,
        clusters,
        "nothing changed"
    );
    app.stop().await;
}

/// Every row of every table of the service, as text.
async fn all_rows_text(app: &TestApp) -> String {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT tablename::text FROM pg_tables WHERE schemaname = 'public' ORDER BY 1",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    let mut text = String::new();
    for table in tables {
        let rows: Vec<String> = sqlx::query_scalar(&format!("SELECT t::text FROM \"{table}\" t"))
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
        text.push_str(&rows.join("\n"));
    }
    text
}

#[tokio::test]
async fn forget_leaves_no_personal_value_and_later_inputs_carrying_one_are_refused() {
    let app = app_with_token(|_| {}).await;
    let (_, jennifer) = identify(&app, Some("jennifer@hv.edu"), Some("555-1955")).await;
    identify(&app, Some("jen.parker@hv.edu"), Some("555-1955")).await;
    let (_, other) = identify(&app, Some("lorraine@hv.edu"), Some("123456")).await;
    let jennifer = primary_id(&jennifer).await;
    assert!(all_rows_text(&app).await.contains("jennifer@hv.edu"));

    let (status, forgotten) =
        admin(&app, "/forget", Some(json!({"email": "Jen.Parker@hv.edu"}))).await;
    assert_eq!(status, 200, "{forgotten}");
    assert_eq!(forgotten["forgotten"]["primaryContactId"], jennifer);
    assert_eq!(
        forgotten["forgotten"]["contactIds"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    let everything = all_rows_text(&app).await;
    for value in ["jennifer@hv.edu", "jen.parker@hv.edu", "5551955"] {
        assert!(!everything.contains(value), "{value} is still stored");
    }
    assert!(
        everything.contains("lorraine@hv.edu"),
        "other people are kept"
    );
    let tombstones: Vec<String> =
        sqlx::query_scalar("SELECT key FROM outbox WHERE payload IS NULL")
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(tombstones, [jennifer.to_string()]);

    // Later inputs carrying an erased identifier recreate nothing.
    let rows = contacts(&app).await;
    for (email, phone) in [
        (Some("jennifer@hv.edu"), Some("555-0000")),
        (Some("new@hv.edu"), Some("(555) 1955")),
    ] {
        let (status, body) = identify(&app, email, phone).await;
        assert_eq!(
            (status, &body["error"]["code"]),
            (410, &json!("forgotten")),
            "{body}"
        );
    }
    assert_eq!(contacts(&app).await, rows);
    assert!(!all_rows_text(&app).await.contains("new@hv.edu"));
    let (status, _) = get(&app, "/identify?email=jennifer@hv.edu").await;
    assert_eq!(status, 404);
    let (status, lorraine) = identify(&app, Some("lorraine@hv.edu"), None).await;
    assert_eq!(status, 200);
    assert_eq!(lorraine, other, "other identities are untouched");

    let (status, again) = admin(&app, "/forget", Some(json!({"id": jennifer}))).await;
    assert_eq!(
        (status, &again["error"]["code"]),
        (404, &json!("not_found"))
    );
    assert_invariants(&app.db.pool).await;
    app.stop().await;
}

/// Every `table.column` of the service's schema whose value contains one of `values`
/// (case-insensitively), found by walking `information_schema.columns`: text, JSON,
/// text arrays, and bytea (as bytes, so dead letters count), so that a table added
/// later is searched too. Also the bytea columns holding the salted hash of an erased
/// identifier, other than the suppression list itself.
async fn columns_holding(pool: &sqlx::PgPool, values: &[&str]) -> Vec<String> {
    let columns: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT table_name::text, column_name::text, data_type::text, udt_name::text \
         FROM information_schema.columns c JOIN pg_tables t \
           ON t.schemaname = c.table_schema AND t.tablename = c.table_name \
         WHERE c.table_schema = 'public' ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let mut searched = Vec::new();
    let mut holding = Vec::new();
    for (table, column, data_type, udt) in columns {
        let col = format!("\"{column}\"");
        let contains = |text: &str| format!("strpos(lower({text}), lower(v)) > 0");
        let test = match (data_type.as_str(), udt.as_str()) {
            ("text" | "character varying" | "character" | "json" | "jsonb", _)
            | ("ARRAY", "_text" | "_varchar" | "_bpchar") => contains(&format!("{col}::text")),
            ("bytea", _) => contains(&format!("encode({col}, 'escape')")),
            ("ARRAY", "_bytea") => format!(
                "EXISTS (SELECT 1 FROM unnest({col}) AS x WHERE {})",
                contains("encode(x, 'escape')")
            ),
            _ => continue,
        };
        searched.push(format!("{table}.{column}"));
        let sql =
            format!("SELECT count(*) FROM \"{table}\" t, unnest($1::text[]) AS v WHERE {test}");
        let found: i64 = sqlx::query_scalar(&sql)
            .bind(values)
            .fetch_one(pool)
            .await
            .unwrap();
        if found > 0 {
            holding.push(format!("{table}.{column}"));
        }
        if data_type == "bytea" && table != "suppression" {
            let hashes: i64 = sqlx::query_scalar(&format!(
                "SELECT count(*) FROM \"{table}\" WHERE {col} IN (SELECT hash FROM suppression)"
            ))
            .fetch_one(pool)
            .await
            .unwrap();
            if hashes > 0 {
                holding.push(format!("{table}.{column} (hash)"));
            }
        }
    }
    // The walk reached the tables that can hold a value.
    for column in [
        "contact.email",
        "quarantine.value",
        "outbox.payload",
        "dead_letter.value",
        "dead_letter.header_values",
    ] {
        assert!(
            searched.iter().any(|c| c == column),
            "{column} not searched"
        );
    }
    holding
}

fn dead_letter(offset: i64, value: &str, header: &str) -> DeadLetter {
    DeadLetter {
        source_topic: "order-contacts".into(),
        source_partition: 0,
        source_offset: offset,
        key: Some(b"order-key".to_vec()),
        value: Some(value.as_bytes().to_vec()),
        headers: vec![("origin".into(), Some(header.as_bytes().to_vec()))],
        reason: "malformed_json".into(),
        error: "the value is not JSON".into(),
    }
}

#[tokio::test]
async fn after_forget_no_table_holds_an_erased_value_quarantines_reviews_and_dead_letters_included()
{
    // Arrange: george and biff merged, undone, and refused again (a keep-apart review
    // entry naming biff; an outbox record of george still listing biff's values);
    // biff's phone quarantined after a third email came with it (a quarantine review
    // entry showing the value, counterpart pairs); dead letters carrying biff's email
    // in other case and his phone formatted, next to one of lorraine's.
    let app = app_with_token(|settings| settings.reconcile.quarantine.max_counterparts = 2).await;
    let (_, george) = identify(&app, Some("george@hv.edu"), Some("919191")).await;
    let (_, biff) = identify(&app, Some("biffsucks@hv.edu"), Some("717171")).await;
    let (george, biff) = (primary_id(&george).await, primary_id(&biff).await);
    identify(&app, Some("george@hv.edu"), Some("717171")).await;
    let (status, _) = admin(&app, &format!("/identities/{biff}/unmerge"), None).await;
    assert_eq!(status, 200);
    identify(&app, Some("george@hv.edu"), Some("717171")).await; // refused: keep apart
    let (_, other_biff) = identify(&app, Some("tannen@hv.edu"), Some("717-171")).await;
    assert_ne!(primary_id(&other_biff).await, biff, "717171 is quarantined");
    let (_, lorraine) = identify(&app, Some("lorraine@hv.edu"), Some("123456")).await;
    let store = app.db.store();
    for letter in [
        dead_letter(
            1,
            r#"{"email":"BiffSucks@HV.edu","phoneNumber":"#,
            "checkout",
        ),
        dead_letter(2, r#"{"phoneNumber":"(717) 171","email":["#, "checkout"),
        dead_letter(
            3,
            r#"{"orderId":"o-3""#,
            r#"{"customer":"biffsucks@hv.edu"}"#,
        ),
        dead_letter(4, r#"{"email":"lorraine@hv.edu","#, "checkout"),
    ] {
        store.keep_dead_letter(&letter, "too large").await.unwrap();
    }
    let (_, reviews) = admin_get(&app, "/reviews").await;
    let reasons: Vec<&str> = reviews["reviews"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["keep_apart", "quarantine"], "{reviews}");
    let erased = ["biffsucks@hv.edu", "717171"];
    let before = columns_holding(&app.db.pool, &erased).await;
    for column in [
        "contact.email",
        "contact.phone_number",
        "quarantine.value",
        "outbox.payload",
        "dead_letter.value",
        "dead_letter.header_values",
    ] {
        assert!(before.iter().any(|c| c == column), "{column}: {before:?}");
    }
    // (The hashes are searched after the erasure, once they are in the suppression list.)
    assert!(app.db.count("SELECT count(*) FROM counterpart").await >= 6);

    // Act
    let (status, forgotten) =
        admin(&app, "/forget", Some(json!({"email": "biffsucks@hv.edu"}))).await;
    assert_eq!(status, 200, "{forgotten}");

    // Assert: no column of any table holds biff's email or phone, nor the hash of
    // one outside the suppression list.
    assert_eq!(
        columns_holding(&app.db.pool, &erased).await,
        Vec::<String>::new()
    );
    let letters: Vec<i64> = sqlx::query_scalar("SELECT source_offset FROM dead_letter ORDER BY 1")
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(letters, [4], "only lorraine's dead letter is left");
    let (_, reviews) = admin_get(&app, "/reviews").await;
    assert_eq!(reviews["reviews"], json!([]), "nothing left to decide");
    // Everyone else is kept: george (whose identity still explains itself), tannen,
    // lorraine.
    for value in [
        "george@hv.edu",
        "919191",
        "tannen@hv.edu",
        "lorraine@hv.edu",
    ] {
        assert!(
            all_rows_text(&app).await.contains(value),
            "{value} was erased"
        );
    }
    let (status, _) = get(&app, &format!("/identities/{george}/explain")).await;
    assert_eq!(status, 200);
    let (status, again) = identify(&app, Some("lorraine@hv.edu"), None).await;
    assert_eq!((status, &again), (200, &lorraine));
    assert_invariants(&app.db.pool).await;
    app.stop().await;
}

async fn admin_get(app: &TestApp, path: &str) -> (u16, Value) {
    send(app, reqwest::Method::GET, path, None, Some(ADMIN_TOKEN)).await
}

#[tokio::test]
async fn admin_endpoints_need_a_configured_token_and_the_right_one() {
    let open = TestApp::spawn_http(|_| {}).await;
    let (status, body) = send(
        &open,
        reqwest::Method::POST,
        "/forget",
        Some(json!({"id": 1})),
        None,
    )
    .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (403, &json!("admin_disabled"))
    );
    let (status, _) = send(
        &open,
        reqwest::Method::POST,
        "/identities/1/unmerge",
        None,
        None,
    )
    .await;
    assert_eq!(status, 403);
    open.stop().await;

    let app = app_with_token(|_| {}).await;
    let (status, body) = send(
        &app,
        reqwest::Method::POST,
        "/forget",
        Some(json!({"id": 1})),
        Some("wrong"),
    )
    .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (401, &json!("unauthorized"))
    );
    let (status, body) = admin(&app, "/forget", Some(json!({"id": 1, "email": "a@b.c"}))).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("wrong_type"))
    );
    let (status, body) = admin(&app, "/identities/abc/unmerge", None).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("invalid_value"))
    );
    app.stop().await;
}

#[tokio::test]
async fn the_forget_command_erases_from_the_command_line() {
    let app = app_with_token(|_| {}).await;
    let (_, biff) = identify(&app, Some("biff@hv.edu"), Some("717171")).await;
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_identity-reconciler"))
        .args(["forget", "--phone", "717-171"])
        .env("DATABASE_URL", &app.db.url)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(
        printed["forgotten"]["primaryContactId"],
        biff["contact"]["primaryContactId"]
    );
    assert!(!all_rows_text(&app).await.contains("biff@hv.edu"));

    let output = std::process::Command::new(env!("CARGO_BIN_EXE_identity-reconciler"))
        .args(["unmerge", "1"])
        .env("DATABASE_URL", &app.db.url)
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("no live contact has id 1"));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_erasure_racing_new_orders_of_the_same_person_leaves_nothing_of_her() {
    let app = app_with_token(|_| {}).await;
    identify(&app, Some("clara@hv.edu"), Some("1885")).await;

    // 32 orders bringing new phones, racing the erasure of her email.
    let orders = (0..32).map(|i| {
        let app = &app;
        async move {
            let phone = format!("1885{i:03}");
            identify(app, Some("clara@hv.edu"), Some(&phone)).await.0
        }
    });
    let erasure = admin(&app, "/forget", Some(json!({"email": "clara@hv.edu"})));
    let (statuses, (erased, body)) = tokio::join!(futures::future::join_all(orders), erasure);

    // Each order landed before the erasure (and was erased with her) or after it
    // (and was refused): nothing of her is left either way.
    assert_eq!(erased, 200, "{body}");
    assert!(
        statuses.iter().all(|&s| s == 200 || s == 410),
        "{statuses:?}"
    );
    let live = app
        .db
        .count("SELECT count(*) FROM contact WHERE deleted_at IS NULL")
        .await;
    assert_eq!(live, 0);
    assert!(!all_rows_text(&app).await.contains("clara@hv.edu"));
    assert_invariants(&app.db.pool).await;
    app.stop().await;
}

/// Reconciliation loads the clusters it locked by their primaries, trusting that no
/// contact carrying one of its identifiers leaves a cluster meanwhile; an unmerge
/// moves contacts, so it must hold their identifiers first. Orders on both sides race
/// the undo: whichever lands first, every order ends on its own side.
#[tokio::test]
async fn an_unmerge_racing_orders_on_both_sides_puts_every_order_on_its_side() {
    let app = app_with_token(|_| {}).await;
    let (_, doc) = identify(&app, Some("doc@hv.edu"), Some("1955")).await;
    let (_, clara) = identify(&app, Some("clara@hv.edu"), Some("1885")).await;
    let (doc, clara) = (primary_id(&doc).await, primary_id(&clara).await);
    let (status, merged) = identify(&app, Some("doc@hv.edu"), Some("1885")).await;
    assert_eq!((status, primary_id(&merged).await), (200, doc));

    // 24 orders per side, each bringing a new phone, racing the undo of the merge.
    let orders = (0..48).map(|i| {
        let app = &app;
        async move {
            let email = if i % 2 == 0 {
                "doc@hv.edu"
            } else {
                "clara@hv.edu"
            };
            identify(app, Some(email), Some(&format!("19{i:03}")))
                .await
                .0
        }
    });
    let path = format!("/identities/{clara}/unmerge");
    let undo = admin(&app, &path, None);
    let (statuses, (undone, body)) = tokio::join!(futures::future::join_all(orders), undo);
    assert_eq!(undone, 200, "{body}");
    assert!(statuses.iter().all(|&s| s == 200), "{statuses:?}");

    for (email, primary, first_phone, parity) in [
        ("doc@hv.edu", doc, "1955", 0),
        ("clara@hv.edu", clara, "1885", 1),
    ] {
        let (status, identity) = get(&app, &format!("/identify?email={email}")).await;
        assert_eq!(status, 200, "{identity}");
        assert_eq!(primary_id(&identity).await, primary, "{identity}");
        let mut phones: Vec<String> = identity["contact"]["phoneNumbers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p.as_str().unwrap().to_owned())
            .collect();
        phones.sort();
        let mut expected: Vec<String> = (0..48)
            .filter(|i| i % 2 == parity)
            .map(|i| format!("19{i:03}"))
            .chain([first_phone.to_owned()])
            .collect();
        expected.sort();
        assert_eq!(phones, expected, "{email}");
    }
    assert_invariants(&app.db.pool).await;
    app.stop().await;
}
