//! Logs and personal data: the real binary, JSON logs at debug level, events with
//! known emails and phone numbers through Kafka and HTTP. By default none of those
//! values appears in the logs in any form; with `log.show_personal_data` they appear
//! only masked. Spans name the event's coordinates and the HTTP request id.

mod support;

use serde_json::{json, Value};
use std::time::Duration;
use support::broker::TopicAdmin;
use support::broker::{self, kafka_brokers, Outgoing};
use support::db::TestDb;
use support::eventually;
use support::names::Topics;
use support::processes::Service;
use support::readers::TopicReader;

const WAIT: Duration = Duration::from_secs(60);

/// The personal data this test sends, in every form it could be logged in: as sent,
/// normalised, and the distinctive parts of each.
const EMAILS: [&str; 3] = [
    "Wilhelmina.Quist@pii-logs.test",
    "wilhelmina.quist@pii-logs.test",
    "zebulon.marsh@pii-logs.test",
];
const EMAIL_PARTS: [&str; 3] = ["wilhelmina", "quist", "zebulon.marsh"];
const PHONES: [&str; 3] = ["+44 7911 386 524", "+447911386524", "15550173928"];
/// Digit runs that only the full numbers contain (the masked forms keep 4 digits).
const PHONE_PARTS: [&str; 4] = ["7911386", "386 524", "55501739", "0173928"];

/// The parsed JSON lines of a log, or a panic naming the first line that is not JSON.
fn json_lines(log: &str) -> Vec<Value> {
    log.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON log line ({e}): {l}"))
        })
        .collect()
}

/// Starts `identity-reconciler run` with JSON logs at debug level, sends events and
/// requests carrying the personal data above, waits until everything is processed,
/// stops the process with SIGTERM and returns its log.
async fn run_with_personal_data(show_personal_data: bool) -> String {
    let brokers = kafka_brokers().await;
    let topics = Topics::unique("logs");
    topics.create(&brokers, 1).await;
    let db = TestDb::new().await;
    let mut env = topics.env(&brokers);
    env.extend(
        [
            ("DATABASE_URL", db.url.as_str()),
            ("RUST_LOG", "debug"),
            ("IR__LOG__FORMAT", "json"),
            (
                "IR__LOG__SHOW_PERSONAL_DATA",
                if show_personal_data { "true" } else { "false" },
            ),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned())),
    );
    let mut service = Service::start("logs", &["run"], &env);
    let base_url = eventually(WAIT, "the sidecar to listen", || {
        let log = service.log_text();
        async move {
            log.lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .find(|l| l["message"] == "HTTP sidecar listening")
                .and_then(|l| l["addr"].as_str().map(|a| format!("http://{a}")))
        }
    })
    .await;

    // Kafka: a new identity, a second email for it, a phone sent as a number, and a
    // dead letter whose value holds personal data.
    let events = [
        json!({"eventId": "e-1", "orderId": "o-1", "email": EMAILS[0], "phoneNumber": PHONES[0]}),
        json!({"eventId": "e-2", "orderId": "o-2", "email": EMAILS[2], "phoneNumber": PHONES[1]}),
        json!({"eventId": "e-3", "orderId": "o-3", "phoneNumber": PHONES[2].parse::<u64>().unwrap()}),
    ];
    let mut outgoing: Vec<Outgoing> = events.iter().map(Outgoing::event).collect();
    outgoing.push(Outgoing {
        value: Some(
            json!({"email": EMAILS[2], "phoneNumber": format!("call {}", PHONES[0])})
                .to_string()
                .into_bytes(),
        ),
        ..Outgoing::default()
    });
    broker::send_all(&broker::producer(&brokers), &topics.input, &outgoing).await;
    // HTTP: a change, a lookup by query string, and a rejected value.
    let http = reqwest::Client::new();
    let answer = http
        .post(format!("{base_url}/identify"))
        .json(&json!({"email": EMAILS[0], "phoneNumber": PHONES[2]}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 200);
    let lookup = http
        .get(format!("{base_url}/identify"))
        .query(&[("email", EMAILS[1]), ("phoneNumber", PHONES[0])])
        .send()
        .await
        .unwrap();
    assert_eq!(lookup.status().as_u16(), 200);
    let rejected = http
        .post(format!("{base_url}/identify"))
        .json(&json!({"email": format!("{} x", EMAILS[1])}))
        .send()
        .await
        .unwrap();
    assert_eq!(rejected.status().as_u16(), 400);

    eventually(WAIT, "every event applied and published", || async {
        let applied = db.count("SELECT count(*) FROM processed_event").await == 3;
        let published = db.count("SELECT count(*) FROM outbox").await == 0;
        (applied && published).then_some(())
    })
    .await;
    let mut dlq = TopicReader::open(&brokers, &topics.dlq).await;
    dlq.read_until(WAIT, "the dead letter", |r| !r.is_empty())
        .await;
    service.terminate();
    let status = service
        .wait_exit(Duration::from_secs(30))
        .await
        .expect("the service exits after SIGTERM");
    assert!(status.success(), "exit status {status}");
    service.log_text()
}

fn assert_no_personal_data(log: &str) {
    let lower = log.to_lowercase();
    for value in EMAILS.iter().chain(&EMAIL_PARTS) {
        assert!(
            !lower.contains(&value.to_lowercase()),
            "the log contains {value:?}"
        );
    }
    for value in PHONES.iter().chain(&PHONE_PARTS) {
        assert!(!log.contains(value), "the log contains {value:?}");
    }
}

/// Lines inside the span called `name` (the innermost one, as the JSON layer
/// records it under `span`).
fn lines_in_span<'a>(lines: &'a [Value], name: &str) -> Vec<&'a Value> {
    lines.iter().filter(|l| l["span"]["name"] == name).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_debug_logs_hold_no_email_and_no_phone_number() {
    // Act
    let log = run_with_personal_data(false).await;

    // Assert: the log is JSON at debug level, and it is about our events.
    let lines = json_lines(&log);
    assert!(
        lines.iter().any(|l| l["level"] == "DEBUG"),
        "no debug line: RUST_LOG=debug did not take effect"
    );
    let events = lines_in_span(&lines, "event");
    assert_eq!(
        events
            .iter()
            .filter(|l| l["message"] == "event parsed")
            .count(),
        3,
        "one debug line per valid event"
    );
    assert!(events.iter().any(|l| l["message"] == "event unusable"));
    for line in &events {
        let span = &line["span"];
        assert!(
            span["topic"].is_string()
                && span["partition"].is_number()
                && span["offset"].is_number(),
            "an event line without the event's coordinates: {line}"
        );
    }
    let ids: Vec<&str> = events
        .iter()
        .filter_map(|l| l["span"]["event_id"].as_str())
        .collect();
    assert_eq!(ids, ["e-1", "e-2", "e-3"]);
    let requests = lines_in_span(&lines, "http");
    assert!(
        !requests.is_empty(),
        "no line inside an HTTP request's span"
    );
    assert!(
        requests.iter().all(|l| l["span"]["request_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty())),
        "an HTTP line without the request id"
    );

    // Assert: the main point.
    assert_no_personal_data(&log);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_show_personal_data_debug_logs_hold_only_masked_values() {
    // Act
    let log = run_with_personal_data(true).await;

    // Assert: masked forms are there, to tell customers apart...
    let lines = json_lines(&log);
    let parsed: Vec<&Value> = lines_in_span(&lines, "event")
        .into_iter()
        .filter(|l| l["message"] == "event parsed")
        .collect();
    let fields: Vec<(&str, &str)> = parsed
        .iter()
        .map(|l| (l["email"].as_str().unwrap(), l["phone"].as_str().unwrap()))
        .collect();
    assert_eq!(
        fields,
        [
            ("w***@pii-logs.test", "***6524"),
            ("z***@pii-logs.test", "***6524"),
            ("-", "***3928"),
        ]
    );
    // ...and nothing more.
    assert_no_personal_data(&log);
}
