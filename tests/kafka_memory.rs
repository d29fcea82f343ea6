//! Memory bounded in bytes (docs/contract.md §6 v2): with large messages, a worker batch
//! stops at `reconcile.max_batch_bytes`, not at `reconcile.max_batch` messages.

mod support;

use serde_json::json;
use std::time::Duration;
use support::broker::TopicAdmin;
use support::broker::{self, kafka_brokers, Outgoing};
use support::db::TestDb;
use support::eventually;
use support::metrics::metric;
use support::names::Topics;
use support::processes::Service;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batches_of_large_messages_are_bounded_in_bytes() {
    // Arrange: 30 valid events of about 400 kB each (an unknown field pads them), all
    // on one partition, waiting before the worker starts.
    let brokers = kafka_brokers().await;
    let topics = Topics::unique("bytes");
    topics.create(&brokers, 1).await;
    let db = TestDb::new().await;
    let pad = "x".repeat(400_000);
    let events: Vec<Outgoing> = (0..30)
        .map(|n| {
            Outgoing::event(&json!({"eventId": format!("big-{n}"), "email": format!("big{n}@bytes.test"), "pad": pad}))
                .on_partition(0)
        })
        .collect();
    broker::send_all(&broker::producer(&brokers), &topics.input, &events).await;
    let mut env = topics.env(&brokers);
    env.push(("DATABASE_URL".to_owned(), db.url.clone()));
    env.push((
        "IR__RECONCILE__MAX_BATCH_BYTES".to_owned(),
        "1000000".to_owned(),
    ));

    // Act
    let mut service = Service::start("bytes", &["run"], &env);
    let base_url = service.base_url().await;
    eventually(Duration::from_secs(60), "every event applied", || async {
        (db.count("SELECT count(*) FROM contact").await == 30).then_some(())
    })
    .await;

    // Assert: 30 events in batches of at most 3 (1 MB / 400 kB, rounded up).
    let events = metric(&base_url, "identity_reconciler_reconcile_batch_size_sum").await;
    let batches = metric(&base_url, "identity_reconciler_reconcile_batch_size_count").await;
    eprintln!("{events} events in {batches} batches");
    assert_eq!(events, 30.0);
    assert!(batches >= 10.0, "{batches} batches");
    service.kill();
}
