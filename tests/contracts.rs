//! The JSON Schemas of `contracts/` describe what really flows through Kafka: the
//! events we accept, the identity and merge records we publish, the headers of our
//! dead letters. A real pipeline (worker, relay and sidecar against PostgreSQL and the
//! broker) produces the records; every one of them is validated, and corrupted copies
//! are shown to be rejected, so that the schemas are neither stale nor toothless.

mod support;

use identity_reconciler::Mode;
use serde_json::{json, Map, Value};
use std::time::Duration;
use support::app::TestApp;
use support::broker::TopicAdmin;
use support::broker::{self, kafka_brokers, Outgoing};
use support::contracts::{self, assert_valid, errors};
use support::db::TestDb;
use support::eventually;
use support::names::Topics;
use support::readers::{Record, TopicReader};

const WAIT: Duration = Duration::from_secs(60);

/// The dead letter's headers as the schema sees them: name → text, the last
/// occurrence of a name winning (the original headers come first).
fn header_object(record: &Record) -> Value {
    let mut object = Map::new();
    for (name, value) in &record.headers {
        let text = value
            .as_deref()
            .map(|v| String::from_utf8(v.to_vec()).expect("a text header"))
            .map_or(Value::Null, Value::String);
        object.insert(name.clone(), text);
    }
    Value::Object(object)
}

#[test]
fn every_contract_is_a_valid_draft_2020_12_schema() {
    for name in [
        "event.schema.json",
        "identity-record.schema.json",
        "merge-record.schema.json",
        "dlq-headers.schema.json",
    ] {
        let schema = contracts::load(name);
        assert_eq!(
            schema["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "{name}"
        );
        if let Err(e) = jsonschema::draft202012::meta::validate(&schema) {
            panic!("{name} is not a valid schema: {e}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn everything_the_pipeline_publishes_matches_the_committed_schemas() {
    // Arrange
    let event_schema = contracts::validator(&contracts::load("event.schema.json"));
    let identity_schema = contracts::validator(&contracts::load("identity-record.schema.json"));
    let merge_schema = contracts::validator(&contracts::load("merge-record.schema.json"));
    let dlq_schema = contracts::validator(&contracts::load("dlq-headers.schema.json"));
    let brokers = kafka_brokers().await;
    let topics = Topics::unique("contracts");
    topics.create(&brokers, 3).await;
    let app = TestApp::spawn_on(TestDb::new().await, Mode::Run, |s| {
        topics.apply(s, &brokers)
    })
    .await;
    let id = |n: &str| format!("{}-{n}", topics.input);
    // Creates A; grows A; creates B (no eventId, phone as a number); merges B into A;
    // brings nothing new.
    let events = [
        json!({"eventId": id("create-a"), "orderId": "o-1", "email": "alice@contracts.test",
               "phoneNumber": "+44 7000 000001", "occurredAt": "2026-11-24T12:00:00Z"}),
        json!({"eventId": id("grow-a"), "orderId": "o-2", "email": "alice.work@contracts.test",
               "phoneNumber": "+447000000001", "channel": "web"}),
        json!({"orderId": "o-3", "email": "bob@contracts.test", "phoneNumber": 447000000002u64}),
        json!({"eventId": id("merge"), "orderId": "o-4", "email": "ALICE@contracts.test",
               "phoneNumber": "447000000002", "occurredAt": null}),
        json!({"eventId": id("repeat"), "orderId": "o-5", "email": "alice.work@contracts.test"}),
    ];
    let poison = Outgoing {
        partition: Some(0),
        key: Some(b"poison".to_vec()),
        value: Some(br#"{"eventId": "p-1", "email": 42}"#.to_vec()),
        headers: vec![("trace-id".to_owned(), "t-poison".to_owned())],
    };

    // Act: the events in order on one partition, the poison message after them; then
    // two POST /identify, one creating C, one merging C into A.
    let mut outgoing: Vec<Outgoing> = events
        .iter()
        .map(|e| Outgoing::event(e).on_partition(0))
        .collect();
    outgoing.push(poison.clone());
    broker::send_all(&broker::producer(&brokers), &topics.input, &outgoing).await;
    eventually(WAIT, "the events applied", || async {
        (app.db.count("SELECT count(*) FROM processed_event").await == 5).then_some(())
    })
    .await;
    for body in [
        r#"{"email":"carol@contracts.test","phoneNumber":"447000000003"}"#,
        r#"{"email":"carol@contracts.test","phoneNumber":"+44 7000 000001"}"#,
    ] {
        let (status, answer) = app.post_identify(body).await;
        assert_eq!(status, 200, "{answer}");
    }
    let mut output = TopicReader::open(&brokers, &topics.output).await;
    output
        .read_until(
            WAIT,
            "5 event records, 2 HTTP records and 2 merge records",
            |r| {
                let values: Vec<Value> = r.iter().map(Record::json).collect();
                let merges = values
                    .iter()
                    .filter(|v| v.get("mergedInto").is_some())
                    .count();
                values.len() >= 9 && merges >= 2
            },
        )
        .await;
    eventually(WAIT, "the outbox to drain", || async {
        (app.db.count("SELECT count(*) FROM outbox").await == 0).then_some(())
    })
    .await;
    let records: Vec<Value> = output
        .read_to_end(WAIT)
        .await
        .iter()
        .map(Record::json)
        .collect();
    let mut dlq = TopicReader::open(&brokers, &topics.dlq).await;
    let dead = dlq
        .read_until(WAIT, "the dead letter", |r| !r.is_empty())
        .await
        .to_vec();

    // Assert: what we accepted matches the input schema; the poison does not.
    for event in &events {
        assert_valid(&event_schema, event, "an accepted event");
    }
    let poison_value: Value = serde_json::from_slice(poison.value.as_deref().unwrap()).unwrap();
    assert!(!event_schema.is_valid(&poison_value));

    // Assert: every output record matches the identity or the merge schema, and the
    // run produced every variety the schemas describe.
    assert_eq!(records.len(), 9, "{records:#?}");
    for record in &records {
        if record.get("mergedInto").is_some() {
            assert_valid(&merge_schema, record, "a merge record");
        } else {
            assert_valid(&identity_schema, record, "an identity record");
        }
    }
    let merges: Vec<&Value> = records
        .iter()
        .filter(|r| r.get("mergedInto").is_some())
        .collect();
    assert_eq!(
        merges.iter().filter(|r| r.get("source").is_some()).count(),
        1,
        "{merges:#?}"
    );
    assert!(records
        .iter()
        .any(|r| r["eventId"].is_null() && r["orderId"] == "o-3"));
    assert!(records.iter().any(|r| r["changed"] == false));

    // Assert: the dead letter's headers match the DLQ schema.
    assert_eq!(dead.len(), 1);
    let headers = header_object(&dead[0]);
    assert_valid(&dlq_schema, &headers, "the dead letter's headers");
    assert_eq!(headers["dlq.reason"], "wrong_type");
    assert_eq!(headers["trace-id"], "t-poison");
    app.stop().await;
}

#[test]
fn corrupted_records_are_rejected() {
    let identity_schema = contracts::validator(&contracts::load("identity-record.schema.json"));
    let merge_schema = contracts::validator(&contracts::load("merge-record.schema.json"));
    let dlq_schema = contracts::validator(&contracts::load("dlq-headers.schema.json"));
    let event_schema = contracts::validator(&contracts::load("event.schema.json"));
    let identity = json!({
        "contact": {"primaryContatctId": 1, "primaryContactId": 1,
                    "emails": ["lorraine@hillvalley.edu", "mcfly@hillvalley.edu"],
                    "phoneNumbers": ["123456"], "secondaryContactIds": [23]},
        "eventId": "e-1", "orderId": "o-1", "version": 2, "changed": true});
    let merge = json!({"mergedInto": 11, "primaryContactId": 27, "source": "http",
                       "version": 2, "changed": true});
    let headers = json!({"trace-id": "t", "dlq.reason": "malformed_json",
                         "dlq.error": "the body is not valid JSON", "dlq.source.topic": "order-contacts",
                         "dlq.source.partition": "0", "dlq.source.offset": "17"});
    assert_valid(&identity_schema, &identity, "the worked example");
    assert_valid(&merge_schema, &merge, "a merge record");
    assert_valid(&dlq_schema, &headers, "dead-letter headers");

    let corrupt = |base: &Value, change: &dyn Fn(&mut Value)| {
        let mut copy = base.clone();
        change(&mut copy);
        copy
    };
    let bad_identities = [
        corrupt(&identity, &|v| {
            v["contact"]
                .as_object_mut()
                .unwrap()
                .remove("primaryContatctId");
        }),
        corrupt(&identity, &|v| {
            v["contact"]["phoneNumbers"] = json!([123456])
        }),
        corrupt(&identity, &|v| {
            v["contact"]["emails"] = json!(["a@x.io", "a@x.io"])
        }),
        corrupt(&identity, &|v| {
            v["contact"]["secondaryContactIds"] = json!(["23"])
        }),
        corrupt(&identity, &|v| v["source"] = json!("http")),
        corrupt(&identity, &|v| {
            v.as_object_mut().unwrap().remove("version");
        }),
        corrupt(&identity, &|v| v["changed"] = json!("yes")),
        corrupt(&identity, &|v| v["contact"]["extra"] = json!(1)),
    ];
    for bad in &bad_identities {
        assert!(
            !errors(&identity_schema, bad).is_empty(),
            "accepted a corrupted identity record: {bad}"
        );
    }
    let bad_merges = [
        corrupt(&merge, &|v| {
            v.as_object_mut().unwrap().remove("mergedInto");
        }),
        corrupt(&merge, &|v| v["mergedInto"] = json!("11")),
        corrupt(&merge, &|v| v["changed"] = json!(false)),
        corrupt(&merge, &|v| {
            v.as_object_mut().unwrap().remove("source");
        }),
    ];
    for bad in &bad_merges {
        assert!(
            !merge_schema.is_valid(bad),
            "accepted a corrupted merge record: {bad}"
        );
    }
    let bad_headers = [
        corrupt(&headers, &|v| {
            v.as_object_mut().unwrap().remove("dlq.reason");
        }),
        corrupt(&headers, &|v| v["dlq.source.offset"] = json!("-1")),
        corrupt(&headers, &|v| v["dlq.source.partition"] = json!(0)),
        corrupt(&headers, &|v| v["dlq.error"] = json!("")),
    ];
    for bad in &bad_headers {
        assert!(
            !dlq_schema.is_valid(bad),
            "accepted corrupted headers: {bad}"
        );
    }
    for bad in [
        json!({"email": 42}),
        json!({"orderId": "o-1"}),
        json!({"email": "  ", "phoneNumber": null}),
        json!({"phoneNumber": -1}),
        json!({"phoneNumber": 1.5}),
        json!({"email": "a@x.io", "occurredAt": "yesterday"}),
        json!([{"email": "a@x.io"}]),
    ] {
        assert!(!event_schema.is_valid(&bad), "accepted a bad event: {bad}");
    }
}
