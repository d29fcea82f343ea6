//! Identity quality on the Kafka path, against real PostgreSQL and a real broker:
//! blocked events are dead-lettered with reason `blocked`, merges are journalled with
//! their event, an erased person's later events vanish (no record, no dead letter)
//! and erasure publishes a tombstone on the identities topic.

mod support;

use identity_reconciler::Mode;
use serde_json::{json, Value};
use std::time::Duration;
use support::app::TestApp;
use support::broker::TopicAdmin;
use support::broker::{self, kafka_brokers};
use support::db::TestDb;
use support::eventually;
use support::invariants::assert_invariants;
use support::names::Topics;
use support::readers::{published_order_ids, Record, TopicReader};

const WAIT: Duration = Duration::from_secs(60);
const TOKEN: &str = "kafka-quality-token";

fn event(topics: &Topics, n: usize, email: Option<&str>, phone: Option<&str>) -> Value {
    json!({"eventId": format!("{}-e{n}", topics.input), "orderId": format!("order-{n}"),
           "email": email, "phoneNumber": phone})
}

fn records_for<'a>(records: &'a [Record], order_id: &str) -> Vec<&'a Record> {
    records
        .iter()
        .filter(|r| r.value.is_some() && r.json()["orderId"] == order_id)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blocked_events_are_dead_lettered_and_an_erased_person_stays_erased() {
    // Arrange
    let brokers = kafka_brokers().await;
    let topics = Topics::unique("quality");
    topics.create(&brokers, 1).await;
    let worker = TestApp::spawn_on(TestDb::new().await, Mode::Run, |settings| {
        topics.apply(settings, &brokers);
        settings.http.admin_token = Some(TOKEN.to_owned().into());
    })
    .await;
    let producer = broker::producer(&brokers);
    let mut output = TopicReader::open(&brokers, &topics.output).await;

    // Act 1: junk, a real customer with junk beside her email, a second identity and
    // an event that merges the two.
    let first = [
        event(&topics, 0, Some("test@test.com"), Some("0000000000")),
        event(&topics, 1, Some("jennifer@hv.edu"), Some("000 000")),
        event(&topics, 2, Some("jen@hv.edu"), Some("5551955")),
        event(&topics, 3, Some("jennifer@hv.edu"), Some("5551955")),
    ];
    broker::send_events(&producer, &topics.input, Some(0), &first).await;
    output
        .read_until(WAIT, "records of the three usable events", |r| {
            published_order_ids(r).contains("order-3")
        })
        .await;

    // Assert 1: the junk event is a dead letter; the blocked phone was never stored.
    let mut dlq = TopicReader::open(&brokers, &topics.dlq).await;
    let dead = dlq
        .read_until(WAIT, "the dead letter", |r| !r.is_empty())
        .await
        .to_vec();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].header("dlq.reason"), Some("blocked"));
    assert_eq!(dead[0].header("dlq.source.offset"), Some("0"));
    let stored_zeros = worker
        .db
        .count("SELECT count(*) FROM contact WHERE phone_number LIKE '000%'")
        .await;
    assert_eq!(stored_zeros, 0);
    let journal: Vec<(String, Option<String>, String)> =
        sqlx::query_as("SELECT kind, event_key, source FROM merge_journal ORDER BY id")
            .fetch_all(&worker.db.pool)
            .await
            .unwrap();
    assert_eq!(
        journal,
        [(
            "merge".into(),
            Some(format!("{}-e3", topics.input)),
            "event".into()
        )]
    );
    // Her identity was published under two keys: hers, and the absorbed one's.
    let mut keys: Vec<String> = sqlx::query_scalar(
        "SELECT id::text FROM contact WHERE email IN ('jennifer@hv.edu', 'jen@hv.edu') ORDER BY id",
    )
    .fetch_all(&worker.db.pool)
    .await
    .unwrap();

    // Act 2: erase her, then send events carrying her identifiers, then a sentinel.
    let response = worker
        .http
        .post(format!("{}/forget", worker.base_url))
        .bearer_auth(TOKEN)
        .json(&json!({"phoneNumber": "555-1955"}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let later = [
        event(&topics, 4, Some("jen@hv.edu"), Some("5550000")),
        event(&topics, 5, Some("someone@hv.edu"), Some("555 1955")),
        event(&topics, 6, Some("sentinel@hv.edu"), None),
    ];
    broker::send_events(&producer, &topics.input, Some(0), &later).await;
    let records = output
        .read_until(WAIT, "the tombstones and the sentinel's record", |r| {
            published_order_ids(r).contains("order-6")
                && r.iter().filter(|r| r.value.is_none()).count() >= 2
        })
        .await
        .to_vec();

    // Assert 2: a tombstone for each key of her identity, after its records; her later
    // events published nothing, were not dead-lettered, stored nothing, but are in
    // the ledger.
    let mut tombstoned: Vec<String> = records
        .iter()
        .filter(|r| r.value.is_none())
        .map(|r| r.key.clone().unwrap())
        .collect();
    tombstoned.sort();
    keys.sort();
    assert_eq!(tombstoned, keys);
    for key in &keys {
        let last = records
            .iter()
            .rposition(|r| r.key.as_ref() == Some(key))
            .unwrap();
        assert!(
            records[last].value.is_none(),
            "the tombstone is the last record of {key}"
        );
    }
    assert!(records_for(&records, "order-4").is_empty());
    assert!(records_for(&records, "order-5").is_empty());
    assert_eq!(records_for(&records, "order-6").len(), 1);
    let dead = dlq.read_to_end(WAIT).await;
    assert_eq!(dead.len(), 1, "suppressed events are not dead letters");
    let leaked = worker
        .db
        .count(
            "SELECT count(*) FROM contact WHERE email IN ('jen@hv.edu', 'someone@hv.edu') \
             OR phone_number IN ('5550000', '5551955')",
        )
        .await;
    assert_eq!(leaked, 0);
    eventually(WAIT, "the suppressed events in the ledger", || async {
        let keys = worker
            .db
            .count("SELECT count(*) FROM processed_event")
            .await;
        (keys == 6).then_some(())
    })
    .await;
    assert_invariants(&worker.db.pool).await;
    worker.stop().await;
}
