//! The words the API answers with (a merge's `source`, a review's `reason` and
//! `status`, a history entry's `kind`) are the ones the served OpenAPI document
//! allows, along every path that writes them: merge, unmerge, a refused re-merge, an
//! approved and a rejected review, a quarantine and an erasure. And the database
//! allows exactly the words the code knows.

mod support;

use identity_reconciler::domain::vocabulary::{
    DecisionSource, InputSource, JournalKind, ReviewReason, ReviewStatus, Source,
};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use support::app::TestApp;
use support::contracts::{assert_documented_answer, served_document};
use support::db::TestDb;

const TOKEN: &str = "vocabulary-admin-token";
const HISTORY: &str = "/identities/{id}/history";
const EXPLAIN: &str = "/identities/{id}/explain";

/// The service, and every answer it gave, each checked against the served document
/// as it comes.
struct Walk {
    app: TestApp,
    document: Value,
    answers: Vec<Value>,
}

impl Walk {
    async fn start() -> Walk {
        let app = TestApp::spawn_http(|settings| {
            settings.http.admin_token = Some(TOKEN.to_owned().into());
            settings.reconcile.quarantine.max_counterparts = 3;
        })
        .await;
        let document = served_document(&app).await;
        Walk {
            app,
            document,
            answers: Vec::new(),
        }
    }

    /// Sends a request and checks its answer against the documented one of
    /// `documented_path`.
    async fn send(
        &mut self,
        method: Method,
        documented_path: &str,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .app
            .http
            .request(method.clone(), format!("{}{path}", self.app.base_url))
            .bearer_auth(TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.expect("a JSON answer");
        let method = method.as_str().to_lowercase();
        assert_documented_answer(&self.document, &method, documented_path, status, &body);
        self.answers.push(body.clone());
        (status, body)
    }

    async fn identify(&mut self, email: &str, phone: &str) -> i64 {
        let body = json!({"email": email, "phoneNumber": phone});
        let (status, answer) = self
            .send(Method::POST, "/identify", "/identify", Some(body))
            .await;
        assert_eq!(status, 200, "{answer}");
        answer["contact"]["primaryContactId"].as_i64().unwrap()
    }

    async fn post(&mut self, documented_path: &str, path: &str, body: Option<Value>) -> Value {
        let (status, answer) = self.send(Method::POST, documented_path, path, body).await;
        assert_eq!(status, 200, "POST {path}: {answer}");
        answer
    }

    /// The history and the explanation of each of `ids`, and the pending reviews.
    async fn read(&mut self, ids: &[i64]) -> Vec<Value> {
        for id in ids {
            self.send(
                Method::GET,
                HISTORY,
                &format!("/identities/{id}/history"),
                None,
            )
            .await;
            self.send(
                Method::GET,
                EXPLAIN,
                &format!("/identities/{id}/explain"),
                None,
            )
            .await;
        }
        let (status, page) = self.send(Method::GET, "/reviews", "/reviews", None).await;
        assert_eq!(status, 200, "{page}");
        page["reviews"].as_array().unwrap().clone()
    }

    /// Every value of `field` (at any depth) among the answers so far.
    fn seen(&self, field: &str) -> BTreeSet<String> {
        fn collect(value: &Value, field: &str, into: &mut BTreeSet<String>) {
            match value {
                Value::Object(map) => {
                    for (key, value) in map {
                        if key == field {
                            if let Some(text) = value.as_str() {
                                into.insert(text.to_owned());
                            }
                        }
                        collect(value, field, into);
                    }
                }
                Value::Array(values) => values.iter().for_each(|v| collect(v, field, into)),
                _ => {}
            }
        }
        let mut seen = BTreeSet::new();
        for answer in &self.answers {
            collect(answer, field, &mut seen);
        }
        seen
    }
}

fn set(words: &[&str]) -> BTreeSet<String> {
    words.iter().map(|w| w.to_string()).collect()
}

#[tokio::test]
async fn every_answer_along_the_decision_paths_is_the_documented_one() {
    let mut walk = Walk::start().await;

    // Merge: george (older) and biff, bridged by george's email with biff's phone.
    let george = walk.identify("george@hillvalley.edu", "919191").await;
    let biff = walk.identify("biff@hillvalley.edu", "717171").await;
    walk.identify("george@hillvalley.edu", "717171").await;
    walk.read(&[george, biff]).await;

    // Unmerge, then the same bridge again: refused and queued (keep-apart).
    let unmerge = "/identities/{id}/unmerge";
    let biff_unmerge = format!("/identities/{biff}/unmerge");
    walk.post(unmerge, &biff_unmerge, None).await;
    walk.identify("george@hillvalley.edu", "717171").await;
    let pending = walk.read(&[george, biff]).await;
    assert_eq!(pending.len(), 1, "{pending:?}");
    let first = pending[0]["id"].as_i64().unwrap();

    // Approve it: the merge is made by the operator.
    let approve = "/reviews/{id}/approve";
    walk.post(approve, &format!("/reviews/{first}/approve"), None)
        .await;
    walk.read(&[george, biff]).await;

    // Undo the approved merge; the next refusal is rejected for good.
    walk.post(unmerge, &biff_unmerge, None).await;
    walk.identify("george@hillvalley.edu", "717171").await;
    let pending = walk.read(&[george, biff]).await;
    assert_eq!(pending.len(), 1, "{pending:?}");
    let second = pending[0]["id"].as_i64().unwrap();
    let reject = "/reviews/{id}/reject";
    walk.post(reject, &format!("/reviews/{second}/reject"), None)
        .await;
    walk.read(&[george, biff]).await;

    // A shop's phone typed with four customers' emails is quarantined (the cap is 3
    // counterparts); what it had linked is split.
    let mut customers = Vec::new();
    for n in 0..4 {
        let email = format!("customer{n}@mail.example");
        customers.push(walk.identify(&email, "+1 555 0100").await);
    }
    let pending = walk.read(&customers).await;
    assert!(
        pending.iter().any(|r| r["reason"] == "quarantine"),
        "{pending:?}"
    );

    // Erase george: his history and explanation are gone, the queue stays readable.
    let forgotten = walk
        .post(
            "/forget",
            "/forget",
            Some(json!({"email": "george@hillvalley.edu"})),
        )
        .await;
    assert_eq!(forgotten["forgotten"]["primaryContactId"], george);
    walk.read(&[george, biff, customers[0]]).await;

    // The walk met every word it was written for.
    assert_eq!(walk.seen("source"), set(&["admin", "http"]));
    assert_eq!(
        walk.seen("status"),
        set(&["pending", "approved", "rejected"])
    );
    assert_eq!(walk.seen("reason"), set(&["keep_apart", "quarantine"]));
    assert_eq!(
        walk.seen("kind"),
        set(&["added", "merged", "unmerged", "split"])
    );
    walk.app.stop().await;
}

/// The values a `CHECK (column IN (...))` constraint allows.
async fn allowed(db: &TestDb, constraint: &str) -> BTreeSet<String> {
    let definition: String = sqlx::query_scalar(
        "SELECT pg_get_constraintdef(oid) FROM pg_constraint WHERE conname = $1",
    )
    .bind(constraint)
    .fetch_one(&db.pool)
    .await
    .unwrap_or_else(|e| panic!("no constraint {constraint}: {e}"));
    definition
        .split('\'')
        .skip(1)
        .step_by(2)
        .map(str::to_owned)
        .collect()
}

fn words<T: Copy>(all: &[T], word: fn(T) -> &'static str) -> BTreeSet<String> {
    all.iter().map(|&v| word(v).to_owned()).collect()
}

#[tokio::test]
async fn the_database_allows_exactly_the_words_the_code_knows() {
    let db = TestDb::new().await;
    let cases = [
        (
            "merge_journal_source_check",
            words(Source::ALL, Source::as_str),
        ),
        (
            "merge_journal_kind_check",
            words(JournalKind::ALL, JournalKind::as_str),
        ),
        (
            "link_review_reason_check",
            words(ReviewReason::ALL, ReviewReason::as_str),
        ),
        (
            "link_review_status_check",
            words(ReviewStatus::ALL, ReviewStatus::as_str),
        ),
        (
            "link_review_source_check",
            words(InputSource::ALL, InputSource::as_str),
        ),
        (
            "contact_origin_source_check",
            words(InputSource::ALL, InputSource::as_str),
        ),
        (
            "keep_apart_source_check",
            words(DecisionSource::ALL, DecisionSource::as_str),
        ),
    ];
    for (constraint, known) in cases {
        assert_eq!(allowed(&db, constraint).await, known, "{constraint}");
    }
}
