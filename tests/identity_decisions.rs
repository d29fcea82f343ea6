//! Identity decisions (docs/contract.md §8) through the HTTP sidecar, on real PostgreSQL:
//! keep-apart after an undo, the review queue (list, approve, reject, metrics) and
//! the automatic quarantine of a shared identifier.

mod support;

use identity_reconciler::domain::Request;
use identity_reconciler::domain::{ContactInput, Email, Normalization, Origin, Phone};
use identity_reconciler::store::Reconciled;
use identity_reconciler::Mode;
use serde_json::{json, Value};
use support::app::TestApp;
use support::invariants::assert_invariants;

const TOKEN: &str = "decisions-admin-token";

async fn app(tweak: impl FnOnce(&mut identity_reconciler::config::Settings)) -> TestApp {
    TestApp::spawn_http(|settings| {
        settings.http.admin_token = Some(TOKEN.to_owned().into());
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

async fn identify(app: &TestApp, email: Option<&str>, phone: Option<&str>) -> Value {
    let body = json!({"email": email, "phoneNumber": phone});
    let (status, answer) = send(
        app,
        reqwest::Method::POST,
        "/identify",
        Some(body),
        Some(TOKEN),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    answer
}

async fn get(app: &TestApp, path: &str) -> (u16, Value) {
    send(app, reqwest::Method::GET, path, None, Some(TOKEN)).await
}

async fn post(app: &TestApp, path: &str) -> (u16, Value) {
    send(app, reqwest::Method::POST, path, None, Some(TOKEN)).await
}

fn primary(answer: &Value) -> i64 {
    answer["contact"]["primaryContactId"].as_i64().unwrap()
}

async fn metric(app: &TestApp, line_start: &str) -> f64 {
    let text = app
        .http
        .get(format!("{}/metrics", app.base_url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .unwrap_or_else(|| panic!("no metric {line_start}"))
        .parse()
        .unwrap()
}

async fn pending(app: &TestApp, query: &str) -> Vec<Value> {
    let (status, page) = get(app, &format!("/reviews{query}")).await;
    assert_eq!(status, 200, "{page}");
    page["reviews"].as_array().unwrap().clone()
}

/// The second worked example of docs/contract.md §3: george (older) and biffsucks, merged by
/// {george, 717171}.
async fn george_and_biff(app: &TestApp) -> (i64, i64) {
    let george = primary(&identify(app, Some("george@hillvalley.edu"), Some("919191")).await);
    let biff = primary(&identify(app, Some("biffsucks@hillvalley.edu"), Some("717171")).await);
    let merged = identify(app, Some("george@hillvalley.edu"), Some("717171")).await;
    assert_eq!(merged["contact"]["secondaryContactIds"], json!([biff]));
    (george, biff)
}

#[tokio::test]
async fn an_undone_merge_keeps_the_two_sides_apart_and_queues_the_refused_link() {
    let app = app(|_| {}).await;
    let (george, biff) = george_and_biff(&app).await;
    let (status, undone) = post(&app, &format!("/identities/{biff}/unmerge")).await;
    assert_eq!(status, 200, "{undone}");

    // The same bridging input again: answered as george's identity, unchanged.
    let contacts_before = app.db.count("SELECT count(*) FROM contact").await;
    let outbox_before = app.db.count("SELECT count(*) FROM outbox").await;
    let again = identify(&app, Some("george@hillvalley.edu"), Some("717171")).await;
    assert_eq!(
        again,
        json!({"contact": {"primaryContatctId": george, "primaryContactId": george,
            "emails": ["george@hillvalley.edu"], "phoneNumbers": ["919191"],
            "secondaryContactIds": []}})
    );
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM contact WHERE linked_id IS NULL")
            .await,
        2,
        "nothing merged"
    );
    assert_eq!(
        app.db.count("SELECT count(*) FROM contact").await,
        contacts_before
    );
    // An HTTP request that changes nothing publishes nothing.
    assert_eq!(
        app.db.count("SELECT count(*) FROM outbox").await,
        outbox_before
    );

    // The sides grow; an input touching the new contacts of both is refused too,
    // and the pending entry is not repeated.
    identify(&app, Some("george.mcfly@hillvalley.edu"), Some("919191")).await;
    identify(&app, Some("biff.tannen@hillvalley.edu"), Some("717171")).await;
    let grown = identify(&app, Some("biff.tannen@hillvalley.edu"), Some("919191")).await;
    assert_eq!(primary(&grown), george);
    assert_eq!(grown["contact"]["emails"].as_array().unwrap().len(), 2);
    let reviews = pending(&app, "?reason=keep_apart").await;
    assert_eq!(reviews.len(), 1, "{reviews:?}");
    assert_eq!(reviews[0]["primaryContactId"], george);
    assert_eq!(reviews[0]["otherPrimaryContactId"], biff);
    assert_eq!(reviews[0]["source"], "http");
    assert_eq!(
        metric(
            &app,
            "identity_reconciler_review_queue_size{reason=\"keep_apart\"}"
        )
        .await,
        1.0
    );
    assert!(metric(&app, "identity_reconciler_review_queue_oldest_age_seconds").await >= 0.0);
    // (links_refused_total{reason="keep_apart"} counts these too; it is process-wide,
    // shared with the other tests of this binary, so it is not asserted here.)

    // The decision survives a restart.
    let db = app.stop_keeping_db().await;
    let app = TestApp::spawn_on(db, Mode::Http, |s| {
        s.http.admin_token = Some(TOKEN.to_owned().into())
    })
    .await;
    let after_restart = identify(&app, Some("george@hillvalley.edu"), Some("717171")).await;
    assert_eq!(primary(&after_restart), george);
    assert_eq!(
        after_restart["contact"]["secondaryContactIds"]
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Approving makes the merge now, journalled and published.
    let id = reviews[0]["id"].as_i64().unwrap();
    let (status, approved) = post(&app, &format!("/reviews/{id}/approve")).await;
    assert_eq!(status, 200, "{approved}");
    assert_eq!(approved["review"]["status"], "approved");
    assert_eq!(approved["identity"]["contact"]["primaryContactId"], george);
    assert_eq!(
        approved["identity"]["contact"]["emails"],
        json!([
            "george@hillvalley.edu",
            "biffsucks@hillvalley.edu",
            "george.mcfly@hillvalley.edu",
            "biff.tannen@hillvalley.edu"
        ])
    );
    let published: Vec<(String, String)> =
        sqlx::query_as("SELECT key, payload FROM outbox ORDER BY id DESC LIMIT 2")
            .fetch_all(&app.db.pool)
            .await
            .unwrap();
    let merge: Value = serde_json::from_str(&published[1].1).unwrap();
    let identity: Value = serde_json::from_str(&published[0].1).unwrap();
    assert_eq!(published[1].0, biff.to_string());
    assert_eq!(
        (&merge["mergedInto"], &merge["source"]),
        (&json!(george), &json!("review"))
    );
    assert_eq!(published[0].0, george.to_string());
    assert_eq!(identity["source"], "review");
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM merge_journal WHERE kind = 'merge' AND source = 'admin' AND undone_at IS NULL")
            .await,
        1
    );
    assert_eq!(app.db.count("SELECT count(*) FROM keep_apart").await, 0);
    assert!(pending(&app, "").await.is_empty());
    let (status, twice) = post(&app, &format!("/reviews/{id}/approve")).await;
    assert_eq!(
        (status, &twice["error"]["code"]),
        (409, &json!("review_refused"))
    );

    // The approved merge can be undone like any other; rejecting the next refusal
    // keeps them apart for good: later refusals are not queued again.
    let (status, undone) = post(&app, &format!("/identities/{biff}/unmerge")).await;
    assert_eq!(status, 200, "{undone}");
    identify(&app, Some("george@hillvalley.edu"), Some("717171")).await;
    let reviews = pending(&app, "").await;
    assert_eq!(reviews.len(), 1);
    let id = reviews[0]["id"].as_i64().unwrap();
    let (status, rejected) = post(&app, &format!("/reviews/{id}/reject")).await;
    assert_eq!(status, 200, "{rejected}");
    assert_eq!(rejected["review"]["status"], "rejected");
    let refused = identify(&app, Some("biffsucks@hillvalley.edu"), Some("919191")).await;
    assert_eq!(primary(&refused), george);
    assert!(pending(&app, "").await.is_empty());
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM contact WHERE linked_id IS NULL")
            .await,
        2
    );
    assert_invariants(&app.db.pool).await;
    app.stop().await;
}

#[tokio::test]
async fn a_replayed_merging_event_stays_refused_after_its_ledger_key_is_pruned() {
    let app = app(|_| {}).await;
    let store = app.db.store();
    let event = |n: &str, email: &str, phone: &str| {
        let mode = Normalization::Standard;
        Request {
            input: ContactInput::new(
                Email::parse(email, mode).unwrap(),
                Phone::parse(phone, mode).unwrap(),
            )
            .unwrap(),
            origin: Origin::Event {
                event_id: Some(n.into()),
                order_id: None,
                ledger_key: n.into(),
            },
        }
    };
    let merging = event("e-3", "george@hillvalley.edu", "717171");
    store
        .reconcile(&[
            event("e-1", "george@hillvalley.edu", "919191"),
            event("e-2", "biffsucks@hillvalley.edu", "717171"),
            merging.clone(),
        ])
        .await
        .unwrap();
    let biff: i64 = app
        .db
        .count("SELECT id FROM contact WHERE email = 'biffsucks@hillvalley.edu'")
        .await;
    let (status, _) = post(&app, &format!("/identities/{biff}/unmerge")).await;
    assert_eq!(status, 200);

    // A replay while the ledger still holds the key changes nothing; once the key is
    // pruned, the replay is applied again, and refused by the decision.
    assert_eq!(
        store
            .reconcile(std::slice::from_ref(&merging))
            .await
            .unwrap(),
        vec![Reconciled::Replayed]
    );
    sqlx::query("DELETE FROM processed_event")
        .execute(&app.db.pool)
        .await
        .unwrap();
    let [Reconciled::Applied {
        identity, changed, ..
    }] = &store.reconcile(&[merging]).await.unwrap()[..]
    else {
        panic!("the replay is applied")
    };
    assert!(!changed);
    assert!(identity.secondary_ids.is_empty());
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM contact WHERE linked_id IS NULL")
            .await,
        2
    );
    let reviews = pending(&app, "").await;
    assert_eq!(reviews.len(), 1);
    assert_eq!(reviews[0]["reason"], "keep_apart");
    assert_eq!(reviews[0]["eventKey"], "e-3");
    assert_eq!(reviews[0]["source"], "event");
    app.stop().await;
}

#[tokio::test]
async fn the_review_queue_pages_filters_and_refuses_what_it_cannot_do() {
    let app = app(|s| s.reconcile.limits.max_emails = 2).await;
    let a = primary(&identify(&app, Some("a1@x.io"), Some("1")).await);
    identify(&app, Some("a2@x.io"), Some("1")).await;
    let b = primary(&identify(&app, Some("b1@x.io"), Some("2")).await);
    identify(&app, Some("a1@x.io"), Some("2")).await; // merge past the cap
    identify(&app, Some("a3@x.io"), Some("1")).await; // growth past the cap
    identify(&app, Some("a4@x.io"), Some("1")).await; // the same growth: not repeated

    let all = pending(&app, "").await;
    assert_eq!(all.len(), 2, "{all:?}");
    let (status, first) = get(&app, "/reviews?limit=1").await;
    assert_eq!(status, 200);
    assert_eq!(first["reviews"][0]["otherPrimaryContactId"], b);
    let cursor = first["nextCursor"].as_i64().unwrap();
    let (_, second) = get(&app, &format!("/reviews?limit=1&after={cursor}")).await;
    assert_eq!(second["reviews"][0]["otherPrimaryContactId"], Value::Null);
    assert_eq!(second["nextCursor"], Value::Null);
    assert_eq!(pending(&app, "?reason=quarantine").await.len(), 0);
    for bad in [
        "?reason=nope",
        "?limit=0",
        "?limit=501",
        "?after=-1",
        "?limit=x",
        "?other=1",
    ] {
        let (status, body) = get(&app, &format!("/reviews{bad}")).await;
        assert_eq!(status, 400, "{bad}: {body}");
    }

    // A refused growth keeps no values: it cannot be approved, only rejected.
    let growth = second["reviews"][0]["id"].as_i64().unwrap();
    let (status, body) = post(&app, &format!("/reviews/{growth}/approve")).await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (409, &json!("review_refused"))
    );
    let (status, _) = post(&app, &format!("/reviews/{growth}/reject")).await;
    assert_eq!(status, 200);
    let (status, body) = post(&app, "/reviews/999999/approve").await;
    assert_eq!((status, &body["error"]["code"]), (404, &json!("not_found")));
    let (status, _) = post(&app, "/reviews/0/approve").await;
    assert_eq!(status, 400);

    // An approved merge past a cap: the operator's decision overrides it.
    let merge = first["reviews"][0]["id"].as_i64().unwrap();
    let (status, approved) = post(&app, &format!("/reviews/{merge}/approve")).await;
    assert_eq!(status, 200, "{approved}");
    assert_eq!(approved["identity"]["contact"]["primaryContactId"], a);
    assert_eq!(
        approved["identity"]["contact"]["secondaryContactIds"]
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // The admin guard: no token, or a wrong one.
    let (status, _) = send(&app, reqwest::Method::GET, "/reviews", None, None).await;
    assert_eq!(status, 401);
    let (status, _) = send(
        &app,
        reqwest::Method::POST,
        "/reviews/1/reject",
        None,
        Some("x"),
    )
    .await;
    assert_eq!(status, 401);
    assert_invariants(&app.db.pool).await;
    app.stop().await;
}

#[tokio::test]
async fn without_an_admin_token_the_review_routes_are_disabled() {
    let app = TestApp::spawn_http(|_| {}).await;
    let (status, body) = get(&app, "/reviews").await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (403, &json!("admin_disabled"))
    );
    let (status, _) = post(&app, "/reviews/1/approve").await;
    assert_eq!(status, 403);
    app.stop().await;
}

#[tokio::test]
async fn a_shops_phone_typed_with_200_customers_emails_gives_200_identities() {
    // The defaults: the test follows whatever the threshold is.
    let app = app(|_| {}).await;
    let limit = app.db.settings().reconcile.quarantine.max_counterparts;
    assert!(limit > 0 && limit < 200);
    let shop = "+1 555 0100";
    let mut first = Value::Null;
    for n in 0..200 {
        let answer = identify(&app, Some(&format!("customer{n}@mail.example")), Some(shop)).await;
        if n == 0 {
            first = answer.clone();
        }
        if n >= limit {
            // Matched by the email only: a new identity without the shop's phone.
            assert_eq!(answer["contact"]["phoneNumbers"], json!([]), "request {n}");
            assert_eq!(answer["contact"]["secondaryContactIds"], json!([]));
        }
    }
    let oldest = primary(&first);
    // The first `limit` customers had linked through the phone before it was seen
    // with more than `limit` emails; the quarantine split them apart again.
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM contact WHERE linked_id IS NULL")
            .await,
        200
    );
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM contact WHERE link_precedence = 'primary'")
            .await,
        200
    );
    for n in 0..200 {
        let email = format!("customer{n}@mail.example");
        let (status, own) = get(&app, &format!("/identify?email={email}")).await;
        assert_eq!(status, 200, "{own}");
        assert_eq!(own["contact"]["emails"], json!([email]), "customer {n}");
        assert_eq!(own["contact"]["secondaryContactIds"], json!([]));
    }
    // The first customers keep the phone they typed; it links nothing.
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM contact WHERE phone_number = '+15550100'")
            .await as usize,
        limit
    );
    // The phone alone is answered as the oldest identity holding it, linking nothing,
    // by a lookup and by a write alike.
    let (status, shared) = get(&app, &format!("/identify?phoneNumber={}", "%2B15550100")).await;
    assert_eq!(status, 200, "{shared}");
    assert_eq!(primary(&shared), oldest);
    assert_eq!(
        shared["contact"]["emails"],
        json!(["customer0@mail.example"])
    );
    let alone = identify(&app, None, Some(shop)).await;
    assert_eq!(primary(&alone), oldest);
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM link_review WHERE reason <> 'quarantine'")
            .await,
        0
    );

    // Listed for review once, with the value (admins only list the queue).
    let reviews = pending(&app, "?reason=quarantine").await;
    assert_eq!(reviews.len(), 1);
    assert_eq!(
        reviews[0]["quarantine"],
        json!({"field": "phoneNumber", "value": "+15550100", "counterparts": limit + 1, "releasedAt": null})
    );
    assert_eq!(
        metric(
            &app,
            "identity_reconciler_review_queue_size{reason=\"quarantine\"}"
        )
        .await,
        1.0
    );
    assert_invariants(&app.db.pool).await;

    // Released: the phone links again (counted afresh). The release merges nothing by
    // itself; the next customer with the phone meets every identity that kept it and
    // joins them, as any input meeting several identities does.
    let id = reviews[0]["id"].as_i64().unwrap();
    let (status, released) = post(&app, &format!("/reviews/{id}/approve")).await;
    assert_eq!(status, 200, "{released}");
    assert!(released["review"]["quarantine"]["releasedAt"].is_string());
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM contact WHERE linked_id IS NULL")
            .await,
        200
    );
    let relinked = identify(&app, Some("late@mail.example"), Some(shop)).await;
    assert_eq!(primary(&relinked), oldest);
    assert_eq!(
        relinked["contact"]["emails"].as_array().unwrap().len(),
        limit + 1
    );
    assert_invariants(&app.db.pool).await;
    app.stop().await;
}

/// Customers of one shop (phone `+15550100`) with `max_counterparts = 4`: a and c
/// are tied by a's second phone 777, f joined them by a merge through c's email, g
/// by a merge through the shop's phone only; b and d came with the shop's phone.
async fn a_shop_with_ties_beside_its_phone(app: &TestApp) -> Vec<i64> {
    let shop = "+1 555 0100";
    let inputs = [
        ("a@shop.test", shop),
        ("a@shop.test", "777"),
        ("b@shop.test", shop),
        ("c@shop.test", "777"),
        ("f@shop.test", "888"),
        ("c@shop.test", "888"),
        ("g@shop.test", "999"),
        ("g@shop.test", shop),
        ("d@shop.test", shop),
    ];
    let mut primaries = Vec::new();
    for (email, phone) in inputs {
        primaries.push(primary(&identify(app, Some(email), Some(phone)).await));
    }
    primaries
}

#[tokio::test]
async fn a_quarantine_keeps_together_what_another_shared_value_or_merge_ties() {
    let app = app(|settings| settings.reconcile.quarantine.max_counterparts = 4).await;
    let before = a_shop_with_ties_beside_its_phone(&app).await;
    let shop_id = before[0];
    assert_eq!(before.last(), Some(&shop_id));
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM contact WHERE linked_id IS NULL")
            .await,
        1,
        "one identity before the quarantine"
    );
    let ids: Vec<(String, i64)> = sqlx::query_as("SELECT email, id FROM contact ORDER BY id")
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
    let id_of = |email: &str| ids.iter().find(|(e, _)| e == email).unwrap().1;
    let outbox_before = app.db.count("SELECT count(*) FROM outbox").await;
    let version_before = app
        .db
        .count(&format!("SELECT version FROM contact WHERE id = {shop_id}"))
        .await;

    // Act: a fifth email with the shop's phone quarantines it.
    let fifth = identify(&app, Some("e@shop.test"), Some("+1 555 0100")).await;
    assert_eq!(fifth["contact"]["phoneNumbers"], json!([]));

    // a, c (777) and f (the merge through c's email) stay one identity; b, d and g
    // (the merge through the phone) are each their own.
    let identity = |email: &'static str| {
        let app = &app;
        async move {
            let (status, answer) = get(app, &format!("/identify?email={email}")).await;
            assert_eq!(status, 200, "{answer}");
            answer["contact"].clone()
        }
    };
    let kept = identity("a@shop.test").await;
    assert_eq!(kept["primaryContactId"], shop_id);
    assert_eq!(
        kept["emails"],
        json!(["a@shop.test", "c@shop.test", "f@shop.test"])
    );
    assert_eq!(kept["phoneNumbers"], json!(["+15550100", "777", "888"]));
    for email in ["b@shop.test", "d@shop.test", "g@shop.test"] {
        let alone = identity(email).await;
        assert_eq!(alone["primaryContactId"], id_of(email), "{email}");
        assert_eq!(alone["emails"], json!([email]));
    }
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM contact WHERE linked_id IS NULL")
            .await,
        5,
        "a-c-f, b, d, g and e"
    );

    // Records: one for each identity the split made and a new version of the one
    // that kept its primary, all `source: quarantine`, in the quarantine's commit
    // order after the fifth customer's own record.
    let published: Vec<(String, String)> = sqlx::query_as(&format!(
        "SELECT key, payload FROM outbox ORDER BY id OFFSET {}",
        outbox_before + 1
    ))
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    let mut keys: Vec<i64> = published.iter().map(|(k, _)| k.parse().unwrap()).collect();
    keys.sort_unstable();
    let mut expected = vec![
        shop_id,
        id_of("b@shop.test"),
        id_of("d@shop.test"),
        id_of("g@shop.test"),
    ];
    expected.sort_unstable();
    assert_eq!(keys, expected, "{published:?}");
    for (key, payload) in &published {
        let record: Value = serde_json::from_str(payload).unwrap();
        assert_eq!(record["source"], "quarantine");
        assert_eq!(record["contact"]["primaryContactId"].to_string(), *key);
        if key.parse::<i64>().unwrap() == shop_id {
            assert_eq!(record["version"], version_before + 1);
            assert_eq!(
                record["contact"]["secondaryContactIds"]
                    .as_array()
                    .unwrap()
                    .len(),
                3
            );
        }
    }
    // g had been published under its own key before it was merged: its new version
    // follows its mergedInto record.
    let g = id_of("g@shop.test");
    let g_versions: Vec<i64> = sqlx::query_scalar(&format!(
        "SELECT (payload::json->>'version')::bigint FROM outbox WHERE key = '{g}' ORDER BY id"
    ))
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert!(
        g_versions.windows(2).all(|w| w[0] < w[1]) && g_versions.len() >= 3,
        "{g_versions:?}"
    );

    // Journalled: the merge through the phone is undone, the other stands; history
    // and explain show the split.
    assert_eq!(
        app.db
            .count(
                "SELECT count(*) FROM merge_journal WHERE kind = 'merge' AND undone_at IS NOT NULL"
            )
            .await,
        1
    );
    assert_eq!(
        app.db
            .count(
                "SELECT count(*) FROM merge_journal WHERE kind = 'split' AND source = 'quarantine'"
            )
            .await,
        3
    );
    let (status, history) = get(&app, &format!("/identities/{g}/history")).await;
    assert_eq!(status, 200, "{history}");
    let split = history["entries"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "split")
        .unwrap_or_else(|| panic!("no split in {history}"));
    assert_eq!(
        (&split["fromPrimaryId"], &split["primaryId"]),
        (&json!(shop_id), &json!(g))
    );
    let (status, explained) = get(&app, &format!("/identities/{g}/explain")).await;
    assert_eq!(status, 200, "{explained}");
    assert_eq!(explained["splits"][0]["fromPrimaryId"], shop_id);
    assert!(
        explained["merges"][0]["undoneAt"].is_string(),
        "{explained}"
    );
    assert_invariants(&app.db.pool).await;
    app.stop().await;
}

#[tokio::test]
async fn a_split_left_pending_by_a_crash_is_done_by_the_retention_step() {
    // Arrange: the state a crash right after the quarantining commit leaves: the
    // quarantine row, pending, and the identities it linked still one. (A store of
    // its own: no running service whose retention task could take the step first.)
    let db = support::db::TestDb::new().await;
    let store = db.store();
    let mode = Normalization::Standard;
    for email in ["p1@crash.test", "p2@crash.test", "p3@crash.test"] {
        store
            .reconcile(&[Request {
                input: ContactInput::new(
                    Email::parse(email, mode).unwrap(),
                    Phone::parse("5550199", mode).unwrap(),
                )
                .unwrap(),
                origin: Origin::Http { request_id: None },
            }])
            .await
            .unwrap();
    }
    assert_eq!(
        db.count("SELECT count(*) FROM contact WHERE linked_id IS NULL")
            .await,
        1
    );
    sqlx::query("INSERT INTO quarantine (kind, value, counterparts) VALUES ('p', '5550199', 41)")
        .execute(&db.pool)
        .await
        .unwrap();

    // Act: the retention task's step (it also runs at start).
    assert_eq!(store.split_pending_quarantines().await.unwrap(), 1);

    // Assert: three identities, the split recorded, and a second step does nothing.
    assert_eq!(
        db.count("SELECT count(*) FROM contact WHERE linked_id IS NULL")
            .await,
        3
    );
    assert_eq!(
        db.count("SELECT count(*) FROM quarantine WHERE split_at IS NULL")
            .await,
        0
    );
    assert_eq!(store.split_pending_quarantines().await.unwrap(), 0);
    assert_invariants(&db.pool).await;
}

#[tokio::test]
async fn a_released_quarantine_is_not_split() {
    let db = support::db::TestDb::new().await;
    let store = db.store();
    let mode = Normalization::Standard;
    for email in ["r1@release.test", "r2@release.test"] {
        store
            .reconcile(&[Request {
                input: ContactInput::new(
                    Email::parse(email, mode).unwrap(),
                    Phone::parse("5550198", mode).unwrap(),
                )
                .unwrap(),
                origin: Origin::Http { request_id: None },
            }])
            .await
            .unwrap();
    }
    sqlx::query(
        "INSERT INTO quarantine (kind, value, counterparts, released_at) \
         VALUES ('p', '5550198', 41, now())",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    assert_eq!(store.split_pending_quarantines().await.unwrap(), 0);
    assert_eq!(
        db.count("SELECT count(*) FROM contact WHERE linked_id IS NULL")
            .await,
        1
    );
}

#[tokio::test]
async fn explain_shows_the_inputs_and_values_behind_an_identity_after_an_undo() {
    let app = app(|_| {}).await;
    let (george, biff) = george_and_biff(&app).await;
    let (status, _) = post(&app, &format!("/identities/{biff}/unmerge")).await;
    assert_eq!(status, 200);
    identify(&app, Some("george@hillvalley.edu"), Some("717171")).await; // refused
                                                                         // A contact from an event, tied to george by his phone.
    let mode = Normalization::Standard;
    app.db
        .store()
        .reconcile(&[Request {
            input: ContactInput::new(
                Email::parse("g.mcfly@hillvalley.edu", mode).unwrap(),
                Phone::parse("919191", mode).unwrap(),
            )
            .unwrap(),
            origin: Origin::Event {
                event_id: Some("evt-9".into()),
                order_id: Some("ord-9".into()),
                ledger_key: "evt-9".into(),
            },
        }])
        .await
        .unwrap();

    let (status, explained) = get(&app, &format!("/identities/{george}/explain")).await;
    assert_eq!(status, 200, "{explained}");
    println!("explain of {george}: {explained}");
    assert_eq!(explained["primaryContactId"], george);
    assert_eq!(explained["valuesShown"], true);
    let contacts = explained["contacts"].as_array().unwrap();
    assert_eq!(contacts.len(), 2);
    assert_eq!(contacts[0]["contactId"], george);
    assert_eq!(contacts[0]["input"]["source"], "http");
    assert!(
        contacts[0]["input"]["requestId"].is_string(),
        "{}",
        contacts[0]
    );
    assert_eq!(contacts[0]["tiedTo"], Value::Null);
    assert_eq!(
        contacts[1]["input"],
        json!({"source": "event", "eventKey": "evt-9", "eventId": "evt-9"})
    );
    assert_eq!(
        contacts[1]["tiedTo"],
        json!({"contactId": george, "field": "phoneNumber", "value": "919191"})
    );
    let merges = explained["merges"].as_array().unwrap();
    assert_eq!(merges.len(), 1);
    assert_eq!(
        (&merges[0]["survivorId"], &merges[0]["absorbedId"]),
        (&json!(george), &json!(biff))
    );
    assert_eq!(
        merges[0]["via"],
        json!([
            {"contactId": george, "field": "email", "value": "george@hillvalley.edu"},
            {"contactId": biff, "field": "phoneNumber", "value": "717171"},
        ])
    );
    assert!(merges[0]["undoneAt"].is_string());
    let refused = explained["refusedLinks"].as_array().unwrap();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0]["reason"], "keep_apart");
    assert_eq!(refused[0]["otherPrimaryContactId"], biff);

    // The other side explains the same merge from its end.
    let (_, other) = get(&app, &format!("/identities/{biff}/explain")).await;
    assert_eq!(other["merges"].as_array().unwrap().len(), 1);
    let (status, missing) = get(&app, "/identities/99999/explain").await;
    assert_eq!(
        (status, &missing["error"]["code"]),
        (404, &json!("not_found"))
    );

    // With no token configured, nobody is known: ids and origins, no values.
    let db = app.stop_keeping_db().await;
    let open = TestApp::spawn_on(db, Mode::Http, |_| {}).await;
    let (status, anonymous) = get(&open, &format!("/identities/{george}/explain")).await;
    assert_eq!(status, 200);
    assert_eq!(anonymous["valuesShown"], false);
    let text = anonymous.to_string();
    assert!(
        !text.contains("hillvalley") && !text.contains("919191"),
        "{text}"
    );
    assert_eq!(
        anonymous["merges"][0]["via"][0],
        json!({"contactId": george, "field": "email"})
    );
    open.stop().await;
}

/// `POST /identify` with an optional `x-request-id`; the answer and the request id
/// the sidecar echoed.
async fn identify_with_request_id(
    app: &TestApp,
    email: &str,
    phone: &str,
    request_id: Option<&str>,
) -> (Value, String) {
    let mut request = app
        .http
        .post(format!("{}/identify", app.base_url))
        .json(&json!({"email": email, "phoneNumber": phone}));
    if let Some(id) = request_id {
        request = request.header("x-request-id", id);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    let echoed = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    (response.json().await.unwrap(), echoed)
}

#[tokio::test]
async fn explain_names_the_http_request_id_that_created_each_contact() {
    let app = app(|_| {}).await;
    // Arrange: a contact from a request with its own id, a secondary from one without
    // (the sidecar generates one), and a contact from an event.
    let (first, echoed) = identify_with_request_id(
        &app,
        "lorraine@hillvalley.edu",
        "123456",
        Some("checkout-7f3a"),
    )
    .await;
    assert_eq!(echoed, "checkout-7f3a");
    let lorraine = primary(&first);
    let (second, generated) =
        identify_with_request_id(&app, "mcfly@hillvalley.edu", "123456", None).await;
    let mcfly = second["contact"]["secondaryContactIds"][0]
        .as_i64()
        .unwrap();
    assert!(!generated.is_empty());
    let long = "r".repeat(300);
    let (third, _) =
        identify_with_request_id(&app, "lorraine@hillvalley.edu", "555000", Some(&long)).await;
    let third = third["contact"]["secondaryContactIds"][1].as_i64().unwrap();

    // Act
    let (status, explained) = get(&app, &format!("/identities/{mcfly}/explain")).await;

    // Assert: each contact names the request that created it, as the sidecar logged
    // and echoed it; an over-long id is cut to 128 characters.
    assert_eq!(status, 200, "{explained}");
    let inputs: Vec<(i64, Value)> = explained["contacts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["contactId"].as_i64().unwrap(), c["input"].clone()))
        .collect();
    assert_eq!(
        inputs,
        vec![
            (
                lorraine,
                json!({"source": "http", "requestId": "checkout-7f3a"})
            ),
            (mcfly, json!({"source": "http", "requestId": generated})),
            (
                third,
                json!({"source": "http", "requestId": "r".repeat(128)})
            ),
        ]
    );

    // The operator's command prints the same.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_identity-reconciler"))
        .args(["explain", &lorraine.to_string()])
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
        printed["contacts"][0]["input"],
        json!({"source": "http", "requestId": "checkout-7f3a"})
    );
    app.stop().await;
}

/// Rows of `counterpart` (a pair seen together is two rows, one per direction).
async fn counterpart_rows(app: &TestApp) -> i64 {
    app.db.count("SELECT count(*) FROM counterpart").await
}

#[tokio::test]
async fn counterpart_pairs_older_than_the_quarantine_window_are_pruned_in_small_steps() {
    let app = app(|_| {}).await;
    let window = app.db.settings().reconcile.quarantine.window;
    // Arrange: three customers seen 31 days ago (a pair is two rows, one per
    // direction), then two seen now.
    for i in 0..3 {
        identify(
            &app,
            Some(&format!("old{i}@prune.test")),
            Some(&format!("55501{i}")),
        )
        .await;
    }
    sqlx::query("UPDATE counterpart SET seen_at = now() - interval '31 days'")
        .execute(&app.db.pool)
        .await
        .unwrap();
    for i in 0..2 {
        identify(
            &app,
            Some(&format!("new{i}@prune.test")),
            Some(&format!("55502{i}")),
        )
        .await;
    }
    assert_eq!(counterpart_rows(&app).await, 10);
    let store = app.db.store();

    // Act: steps of 4 rows until a step deletes fewer.
    let mut steps = Vec::new();
    loop {
        let deleted = store.prune_counterparts(window, 4).await.unwrap();
        steps.push(deleted);
        if deleted < 4 {
            break;
        }
    }

    // Assert: 4 + 2, and only the recent pairs are left.
    assert_eq!(steps, vec![4, 2]);
    assert_eq!(counterpart_rows(&app).await, 4);
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM counterpart WHERE seen_at > now() - interval '1 hour'")
            .await,
        4
    );
    app.stop().await;
}

#[tokio::test]
async fn the_retention_task_of_a_running_service_prunes_old_counterpart_pairs() {
    // The ledger's retention task runs the counterpart steps too, at its interval.
    let app = app(|settings| {
        settings.ledger.prune_interval = std::time::Duration::from_millis(100);
    })
    .await;
    identify(&app, Some("recent@prune.test"), Some("5550301")).await;
    let before = metric(&app, "identity_reconciler_counterparts_pruned_total").await;
    sqlx::query(
        "INSERT INTO counterpart (identifier, other, seen_at) \
         SELECT sha256(('old-' || i)::bytea), sha256(('other-' || i)::bytea), \
                now() - interval '40 days' FROM generate_series(1, 2500) AS i",
    )
    .execute(&app.db.pool)
    .await
    .unwrap();

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while counterpart_rows(&app).await > 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "old pairs were not pruned: {} rows left",
            counterpart_rows(&app).await
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }

    assert_eq!(
        app.db
            .count("SELECT count(*) FROM counterpart WHERE seen_at > now() - interval '1 hour'")
            .await,
        2,
        "the recent customer's pair is kept"
    );
    let after = metric(&app, "identity_reconciler_counterparts_pruned_total").await;
    assert_eq!(after - before, 2500.0);
    app.stop().await;
}
