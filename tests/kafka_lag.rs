//! The consumer's lag in seconds and its records lead, against a real broker: events
//! an hour old show an hour of lag until the worker has caught up, and the lead is
//! the distance from the log start to the consumer's position.

mod support;

use identity_reconciler::Mode;
use rdkafka::producer::FutureRecord;
use serde_json::json;
use std::time::Duration;
use support::app::TestApp;
use support::broker::TopicAdmin;
use support::broker::{self, kafka_brokers};
use support::db::TestDb;
use support::eventually;
use support::names::Topics;

async fn gauge(app: &TestApp, name: &str) -> Option<f64> {
    let text = app
        .http
        .get(format!("{}/metrics", app.base_url))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    let prefix = format!("identity_reconciler_{name}{{partition=\"0\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lag_in_seconds_follows_the_oldest_unconsumed_event_and_the_lead_counts_records() {
    let brokers = kafka_brokers().await;
    let topics = Topics::unique("lag");
    topics.create(&brokers, 1).await;
    let producer = broker::producer(&brokers);
    let an_hour_ago = chrono::Utc::now().timestamp_millis() - 3_600_000;
    for n in 0..5 {
        let value = json!({"eventId": format!("lag-{n}"), "email": format!("c{n}@lag.example")})
            .to_string();
        producer
            .send(
                FutureRecord::<str, str>::to(&topics.input)
                    .payload(&value)
                    .timestamp(an_hour_ago + n),
                Duration::from_secs(30),
            )
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }

    let app = TestApp::spawn_on(TestDb::new().await, Mode::Run, |s| {
        topics.apply(s, &brokers)
    })
    .await;

    let lag = eventually(Duration::from_secs(60), "an hour of lag", || async {
        gauge(&app, "consumer_lag_seconds")
            .await
            .filter(|&s| s > 0.0)
    })
    .await;
    assert!((3600.0..3700.0).contains(&lag), "{lag}");
    eventually(
        Duration::from_secs(60),
        "a lead of five records",
        || async { (gauge(&app, "consumer_records_lead").await == Some(5.0)).then_some(()) },
    )
    .await;
    // Caught up for a whole statistics interval: no lag left.
    eventually(Duration::from_secs(60), "the lag back to zero", || async {
        (gauge(&app, "consumer_lag_seconds").await == Some(0.0)).then_some(())
    })
    .await;
    app.stop().await;
}
