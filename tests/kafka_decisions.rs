//! Keep-apart on the Kafka path, against real PostgreSQL and a real broker: after an
//! undo, an event that would join the two sides again is published as the side it
//! would have joined, unchanged, with no merge record, and queued for review; a
//! restarted worker and a replay of the original merging event (its ledger key
//! pruned) are refused alike.

mod support;

use identity_reconciler::Mode;
use serde_json::{json, Value};
use std::time::Duration;
use support::app::TestApp;
use support::broker;
use support::broker::kafka_brokers;
use support::broker::TopicAdmin;
use support::db::TestDb;
use support::invariants::assert_invariants;
use support::names::Topics;
use support::readers::{published_order_ids, Record, TopicReader};

const WAIT: Duration = Duration::from_secs(60);
const TOKEN: &str = "kafka-decisions-token";

fn event(topics: &Topics, n: usize, email: &str, phone: &str) -> Value {
    json!({"eventId": format!("{}-e{n}", topics.input), "orderId": format!("order-{n}"),
           "email": email, "phoneNumber": phone})
}

fn with_order(records: &[Record], order: &str) -> Vec<Value> {
    records
        .iter()
        .filter(|r| r.value.is_some())
        .map(Record::json)
        .filter(|v| v["orderId"] == order)
        .collect()
}

async fn worker(db: TestDb, topics: &Topics, brokers: &str) -> TestApp {
    TestApp::spawn_on(db, Mode::Run, |s| {
        topics.apply(s, brokers);
        s.http.admin_token = Some(TOKEN.to_owned().into());
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_rejoining_undone_sides_is_published_as_the_oldest_side_and_queued() {
    let brokers = kafka_brokers().await;
    let topics = Topics::unique("decisions");
    topics.create(&brokers, 1).await;
    let producer = broker::producer(&brokers);
    let mut output = TopicReader::open(&brokers, &topics.output).await;
    let app = worker(TestDb::new().await, &topics, &brokers).await;

    let merging = event(&topics, 3, "george@hillvalley.edu", "717171");
    broker::send_events(
        &producer,
        &topics.input,
        Some(0),
        &[
            event(&topics, 1, "george@hillvalley.edu", "919191"),
            event(&topics, 2, "biffsucks@hillvalley.edu", "717171"),
            merging.clone(),
        ],
    )
    .await;
    let records = output
        .read_until(WAIT, "the merge", |r| {
            published_order_ids(r).contains("order-3")
        })
        .await
        .to_vec();
    let george = with_order(&records, "order-1")[0]["contact"]["primaryContactId"].clone();
    let biff = with_order(&records, "order-2")[0]["contact"]["primaryContactId"].clone();
    let response = app
        .http
        .post(format!("{}/identities/{biff}/unmerge", app.base_url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);

    // A new order bridging the two sides, after a restart of the worker.
    let db = app.stop_keeping_db().await;
    let app = worker(db, &topics, &brokers).await;
    broker::send_events(
        &producer,
        &topics.input,
        Some(0),
        &[event(&topics, 4, "biffsucks@hillvalley.edu", "919191")],
    )
    .await;
    let records = output
        .read_until(WAIT, "the refused order", |r| {
            published_order_ids(r).contains("order-4")
        })
        .await
        .to_vec();
    let refused = with_order(&records, "order-4");
    assert_eq!(refused.len(), 1, "no mergedInto record: {refused:?}");
    assert_eq!(refused[0]["contact"]["primaryContactId"], george);
    assert_eq!(refused[0]["contact"]["secondaryContactIds"], json!([]));
    assert_eq!(refused[0]["changed"], false);

    // The original merging event, replayed after its ledger key was pruned.
    sqlx::query("DELETE FROM processed_event")
        .execute(&app.db.pool)
        .await
        .unwrap();
    broker::send_events(&producer, &topics.input, Some(0), &[merging]).await;
    let records = output
        .read_until(WAIT, "the replayed merge", |r| {
            with_order(r, "order-3").len() >= 3
        })
        .await
        .to_vec();
    let replayed = with_order(&records, "order-3");
    let last = replayed.last().unwrap();
    assert_eq!(last["contact"]["primaryContactId"], george);
    assert_eq!(last["changed"], false);
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM contact WHERE linked_id IS NULL")
            .await,
        2
    );
    let queued: Vec<(String, Option<String>, String)> = sqlx::query_as(
        "SELECT reason, event_key, source FROM link_review WHERE status = 'pending' ORDER BY id",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(
        queued,
        [(
            "keep_apart".into(),
            Some(format!("{}-e4", topics.input)),
            "event".into()
        )],
        "one pending entry for the pair, however often it is refused"
    );
    assert_invariants(&app.db.pool).await;
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quarantine_publishes_every_identity_its_split_leaves() {
    let brokers = kafka_brokers().await;
    let topics = Topics::unique("quarantine-split");
    topics.create(&brokers, 1).await;
    let producer = broker::producer(&brokers);
    let mut output = TopicReader::open(&brokers, &topics.output).await;
    let app = TestApp::spawn_on(TestDb::new().await, Mode::Run, |s| {
        topics.apply(s, &brokers);
        s.reconcile.quarantine.max_counterparts = 3;
    })
    .await;

    // Four customers with the shop's phone: the fourth quarantines it.
    let shop = "+1 555 0100";
    let events: Vec<Value> = (1..=4)
        .map(|n| event(&topics, n, &format!("customer{n}@shop.test"), shop))
        .collect();
    broker::send_events(&producer, &topics.input, Some(0), &events).await;
    let records = output
        .read_until(WAIT, "the split's records", |r| {
            r.iter()
                .filter(|r| r.value.is_some() && r.json()["source"] == "quarantine")
                .count()
                >= 3
        })
        .await
        .to_vec();

    // The first three had linked into one identity; the split publishes it (a new
    // version) and each identity split off from it (their first record).
    let first = with_order(&records, "order-1")[0]["contact"]["primaryContactId"]
        .as_i64()
        .unwrap();
    let split: Vec<Value> = records
        .iter()
        .filter(|r| r.value.is_some())
        .map(Record::json)
        .filter(|v| v["source"] == "quarantine")
        .collect();
    assert_eq!(split.len(), 3, "{split:?}");
    let mut emails: Vec<Value> = split
        .iter()
        .map(|v| v["contact"]["emails"].clone())
        .collect();
    emails.sort_by_key(|e| e.to_string());
    assert_eq!(
        emails,
        [
            json!(["customer1@shop.test"]),
            json!(["customer2@shop.test"]),
            json!(["customer3@shop.test"])
        ]
    );
    let survivor = split
        .iter()
        .find(|v| v["contact"]["primaryContactId"] == first)
        .expect("the identity that kept its primary is published");
    let before = with_order(&records, "order-3")[0]["version"]
        .as_i64()
        .unwrap();
    assert_eq!(survivor["version"], before + 1);
    for record in split
        .iter()
        .filter(|v| v["contact"]["primaryContactId"] != first)
    {
        assert_eq!(
            record["version"], 1,
            "a new identity's first record: {record}"
        );
    }
    // Per key, versions strictly increase, no record repeated.
    let mut last: std::collections::HashMap<String, i64> = Default::default();
    for record in records.iter().filter(|r| r.value.is_some()) {
        let version = record.json()["version"].as_i64().unwrap();
        let key = record.key.clone().unwrap();
        if let Some(&previous) = last.get(&key) {
            assert!(version > previous, "key {key}: {previous} then {version}");
        }
        last.insert(key, version);
    }
    assert_eq!(
        app.db
            .count("SELECT count(*) FROM contact WHERE linked_id IS NULL")
            .await,
        4
    );
    assert_invariants(&app.db.pool).await;
    app.stop().await;
}
