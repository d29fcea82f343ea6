//! `identity-reconciler tail` against a real broker: the records of the identities
//! topic and of the dead letters, as JSON lines.

mod support;

use serde_json::{json, Value};
use std::time::Duration;
use support::broker;
use support::broker::TopicAdmin;
use support::broker::{kafka_brokers, Outgoing};
use support::names::Topics;

async fn tail(topics: &Topics, brokers: &str, args: &[&str]) -> Vec<Value> {
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_identity-reconciler"));
    command
        .arg("tail")
        .args(args)
        .envs(topics.env(brokers))
        .env("RUST_LOG", "warn")
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(60), command.output())
        .await
        .expect("tail stops after --limit records")
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).expect("every line is JSON"))
        .collect()
}

#[tokio::test]
async fn tail_prints_identity_records_and_dead_letters_as_json_lines() {
    let brokers = kafka_brokers().await;
    let topics = Topics::unique("tail");
    topics.create(&brokers, 1).await;
    let producer = broker::producer(&brokers);
    let record = json!({"contact": {"primaryContatctId": 11, "primaryContactId": 11,
        "emails": ["george@hillvalley.edu"], "phoneNumbers": ["919191"],
        "secondaryContactIds": []}, "eventId": "e-1", "orderId": null, "version": 1,
        "changed": true});
    broker::send_all(
        &producer,
        &topics.output,
        &[
            Outgoing {
                key: Some(b"11".to_vec()),
                value: Some(record.to_string().into_bytes()),
                ..Outgoing::default()
            },
            // An erased identity's tombstone.
            Outgoing {
                key: Some(b"27".to_vec()),
                ..Outgoing::default()
            },
        ],
    )
    .await;
    broker::send_all(
        &producer,
        &topics.dlq,
        &[Outgoing {
            key: Some(b"k".to_vec()),
            value: Some(b"not json".to_vec()),
            headers: vec![("dlq.reason".into(), "malformed_json".into())],
            ..Outgoing::default()
        }],
    )
    .await;

    let lines = tail(&topics, &brokers, &["--from-beginning", "--limit", "2"]).await;
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["topic"], topics.output.as_str());
    assert_eq!(
        (&lines[0]["partition"], &lines[0]["offset"]),
        (&json!(0), &json!(0))
    );
    assert_eq!(lines[0]["key"], "11");
    assert_eq!(lines[0]["value"], record);
    assert!(lines[0]["timestamp"].is_string());
    assert_eq!(
        (&lines[1]["key"], &lines[1]["value"]),
        (&json!("27"), &Value::Null)
    );

    let lines = tail(
        &topics,
        &brokers,
        &["--topic", "dlq", "--from-beginning", "--limit", "1"],
    )
    .await;
    assert_eq!(lines[0]["value"], "not json");
    assert_eq!(lines[0]["headers"], json!({"dlq.reason": "malformed_json"}));
}

#[tokio::test]
async fn tail_of_a_missing_topic_fails_with_a_clear_error() {
    let brokers = kafka_brokers().await;
    let topics = Topics::unique("tail_missing");
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_identity-reconciler"))
        .args(["tail", "--limit", "1"])
        .envs(topics.env(&brokers))
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("does not exist"));
}
