//! The documented metrics move as documented: a known workload (events including a
//! replay, a poison message and a merge, plus HTTP requests) moves each counter by
//! exactly what it should.
//!
//! Metrics are process-wide, so this is the only test of its binary (nextest also
//! runs every test in a process of its own) and it asserts deltas, not totals.

mod support;

use identity_reconciler::Mode;
use serde_json::{json, Value};
use std::cell::Cell;
use std::collections::BTreeMap;
use std::time::Duration;
use support::app::TestApp;
use support::broker::TopicAdmin;
use support::broker::{self, kafka_brokers, Outgoing};
use support::db::TestDb;
use support::eventually;
use support::names::Topics;

const WAIT: Duration = Duration::from_secs(60);
const PREFIX: &str = "identity_reconciler_";

/// One scrape: every sample by `name{label="value",…}` with labels in name order.
#[derive(Debug)]
struct Scrape(BTreeMap<String, f64>);

impl Scrape {
    fn parse(text: &str) -> Scrape {
        let mut samples = BTreeMap::new();
        for line in text
            .lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
        {
            let (series, value) = line.rsplit_once(' ').expect("`series value`");
            let key = match series.split_once('{') {
                Some((name, labels)) => {
                    let mut labels: Vec<&str> = labels
                        .trim_end_matches('}')
                        .split(',')
                        .filter(|l| !l.is_empty())
                        .collect();
                    labels.sort_unstable();
                    format!("{name}{{{}}}", labels.join(","))
                }
                None => series.to_owned(),
            };
            samples.insert(key, value.parse().expect("a number"));
        }
        Scrape(samples)
    }

    /// A series' value; a series not created yet counts as 0.
    fn get(&self, series: &str) -> f64 {
        self.0
            .get(&format!("{PREFIX}{series}"))
            .copied()
            .unwrap_or(0.0)
    }
}

/// Scrapes `/metrics`, counting the scrapes: each one is itself an HTTP request that
/// shows up in `http_requests_total` from the next scrape on.
struct Scraper<'a> {
    app: &'a TestApp,
    scrapes: Cell<u32>,
}

impl Scraper<'_> {
    async fn scrape(&self) -> Scrape {
        self.scrapes.set(self.scrapes.get() + 1);
        let (status, body) = self.app.get("/metrics").await;
        assert_eq!(status, 200);
        Scrape::parse(body.as_str().expect("the text format"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_known_workload_moves_every_documented_counter_by_exactly_its_share() {
    // Arrange
    let brokers = kafka_brokers().await;
    let topics = Topics::unique("metrics");
    topics.create(&brokers, 3).await;
    let app = TestApp::spawn_on(TestDb::new().await, Mode::Run, |s| {
        topics.apply(s, &brokers)
    })
    .await;
    let scraper = Scraper {
        app: &app,
        scrapes: Cell::new(0),
    };
    let before = scraper.scrape().await;
    let id = |n: &str| format!("{}-{n}", topics.input);
    let event = |json: Value| Outgoing::event(&json).on_partition(0);
    let producer = broker::producer(&brokers);

    // Act: events on one partition, so that their order is defined.
    let first = [
        // a new identity (1 contact)
        event(json!({"eventId": id("a"), "email": "a@metrics.test", "phoneNumber": "1000001"})),
        // grows it (1 contact)
        event(json!({"eventId": id("a2"), "email": "a2@metrics.test", "phoneNumber": "1000001"})),
        // another identity (1 contact)
        event(json!({"eventId": id("b"), "email": "b@metrics.test", "phoneNumber": "1000002"})),
        // merges the two (no contact)
        event(json!({"eventId": id("ab"), "email": "a@metrics.test", "phoneNumber": "1000002"})),
        // poison
        Outgoing {
            value: Some(b"{not json".to_vec()),
            ..Outgoing::default()
        }
        .on_partition(0),
        // a new identity, keyed by its coordinates (1 contact)
        event(json!({"email": "c@metrics.test"})),
    ];
    broker::send_all(&producer, &topics.input, &first).await;
    eventually(WAIT, "the first events applied", || async {
        (app.db.count("SELECT count(*) FROM processed_event").await == 5).then_some(())
    })
    .await;
    // The first event again (a replay), then one more new identity (1 contact).
    let second = [
        first[0].clone(),
        event(json!({"eventId": id("d"), "email": "d@metrics.test"})),
    ];
    broker::send_all(&producer, &topics.input, &second).await;
    // HTTP: a new identity (1 contact), the same again (no change, nothing published),
    // a bad body, a lookup that finds nothing, an unknown path.
    let (status, _) = app.post_identify(r#"{"email":"h@metrics.test"}"#).await;
    assert_eq!(status, 200);
    let (status, _) = app.post_identify(r#"{"email":"h@metrics.test"}"#).await;
    assert_eq!(status, 200);
    let (status, _) = app.post_identify(r#"{"email": 5}"#).await;
    assert_eq!(status, 400);
    // A placeholder email beside a real phone (1 contact), then a placeholder alone.
    let body = r#"{"email":"test@test.com","phoneNumber":"1000009"}"#;
    assert_eq!(app.post_identify(body).await.0, 200);
    assert_eq!(app.post_identify(r#"{"email":"null"}"#).await.0, 400);
    assert_eq!(app.get("/identify?email=nobody@metrics.test").await.0, 404);
    assert_eq!(app.get("/no-such-route").await.0, 404);

    // Wait until every event is counted and every record published.
    let events_done = 7.0;
    let records = 9.0;
    let after = eventually(WAIT, "the workload counted and published", || async {
        let scrape = scraper.scrape().await;
        let counted: f64 = ["events_applied_total", "events_replayed_total"]
            .iter()
            .map(|s| scrape.get(s) - before.get(s))
            .sum();
        let published = scrape.get("relay_published_total") - before.get("relay_published_total");
        (counted == events_done && published == records).then_some(scrape)
    })
    .await;
    // One more scrape, so that anything counted late would show.
    let after_settled = {
        eventually(WAIT, "the outbox to drain", || async {
            (app.db.count("SELECT count(*) FROM outbox").await == 0).then_some(())
        })
        .await;
        scraper.scrape().await
    };

    // Assert: exact deltas.
    let delta = |series: &str| after_settled.get(series) - before.get(series);
    let expected: [(&str, f64); 14] = [
        ("events_consumed_total", 8.0),
        ("events_applied_total", 6.0),
        ("events_replayed_total", 1.0),
        (
            r#"events_dead_lettered_total{reason="malformed_json"}"#,
            1.0,
        ),
        ("merges_total", 1.0),
        ("contacts_inserted_total", 7.0),
        ("relay_published_total", records),
        (
            r#"http_requests_total{route="/identify",status="200"}"#,
            3.0,
        ),
        (
            r#"http_requests_total{route="/identify",status="400"}"#,
            2.0,
        ),
        (
            r#"http_requests_total{route="/identify",status="404"}"#,
            1.0,
        ),
        (
            r#"http_requests_total{route="unmatched",status="404"}"#,
            1.0,
        ),
        (
            r#"http_requests_total{route="/metrics",status="200"}"#,
            // Every scrape but the last is counted by the last.
            f64::from(scraper.scrapes.get() - 1),
        ),
        (r#"retries_total{operation="reconcile"}"#, 0.0),
        (r#"identifiers_blocked_total{field="email"}"#, 2.0),
    ];
    let wrong: Vec<String> = expected
        .iter()
        .filter(|(series, value)| delta(series) != *value)
        .map(|(series, value)| format!("{series}: moved by {}, expected {value}", delta(series)))
        .collect();
    assert!(wrong.is_empty(), "{wrong:#?}");
    assert_eq!(
        after.get("events_consumed_total"),
        after_settled.get("events_consumed_total")
    );
    // Gauges and histograms are there too, named as documented.
    for series in [
        "outbox_backlog",
        "partitions_paused",
        "reconcile_batch_size_count",
        "reconcile_batch_duration_seconds_count",
        "relay_latency_seconds_count",
        r#"http_request_duration_seconds_count{route="/identify"}"#,
        r#"db_pool_connections{state="idle"}"#,
    ] {
        assert!(
            after_settled.0.contains_key(&format!("{PREFIX}{series}")),
            "{series} is missing"
        );
    }
    assert_eq!(after_settled.get("partitions_paused"), 0.0);
    // Lag comes from librdkafka's statistics, every 5 s: it reaches 0 on the partition
    // that the workload used and the worker drained.
    let lag = format!(
        r#"{PREFIX}consumer_lag{{partition="0",topic="{}"}}"#,
        topics.input
    );
    eventually(WAIT, "the consumer lag of partition 0 to be 0", || async {
        let (_, body) = app.get("/metrics").await;
        let scrape = Scrape::parse(body.as_str().unwrap());
        (scrape.0.get(&lag) == Some(&0.0)).then_some(())
    })
    .await;
    app.stop().await;
}
