//! Two workers in one consumer group over the same database (CONTRACT §6: "run several
//! instances with the same group to scale out"), one of them killed midway.
//!
//! tansu loses partitions when a group has several members, so this test runs on
//! librdkafka's mock cluster (the crate's `EmbeddedCluster`), reached by the worker
//! processes over TCP like a real broker.

mod support;

use identity_reconciler::worker::EmbeddedCluster;
use std::time::Duration;
use support::kafka::{
    self, assert_stream_applied, ledger_keys_of, metric, published_order_ids, Service, TopicReader,
    Topics, Workload,
};
use support::{eventually, TestDb};

const WAIT: Duration = Duration::from_secs(60);

async fn ledger_count(db: &TestDb) -> usize {
    db.count("SELECT count(*) FROM processed_event").await as usize
}

/// Whether the service's log says it was assigned at least one partition.
fn has_partitions(service: &Service) -> bool {
    service.log_text().lines().any(|line| {
        line.contains("partitions assigned") && !line.trim_end().ends_with("partitions=0")
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_in_one_group_apply_every_event_exactly_once() {
    // Arrange: two workers sharing a group and a database, each owning partitions.
    let topics = Topics::unique("scale_out");
    let cluster = EmbeddedCluster::start(&[&topics.input, &topics.output, &topics.dlq], 4)
        .expect("start the mock cluster");
    let brokers = cluster.bootstrap_servers().to_owned();
    let db = TestDb::new().await;
    let mut env = topics.env(&brokers);
    env.push(("DATABASE_URL".to_owned(), db.url.clone()));
    // The mock cluster already has the topics, and it never answers CreateTopics (the
    // admin request times out after 30 s and the service refuses to start).
    env.push(("IR__KAFKA__CREATE_TOPICS".to_owned(), "false".to_owned()));
    // Small batches, so that both workers are busy for a while.
    env.push(("IR__RECONCILE__MAX_BATCH".to_owned(), "20".to_owned()));
    let mut workers = [
        Service::start("scale-out-1", &["run"], &env),
        Service::start("scale-out-2", &["run"], &env),
    ];
    let urls = [workers[0].base_url().await, workers[1].base_url().await];
    eventually(WAIT, "both workers to own partitions", || async {
        workers.iter().all(has_partitions).then_some(())
    })
    .await;
    // The victim is the relay's lease holder, so that the relay fails over too.
    let victim = eventually(WAIT, "one worker to take the relay lease", || async {
        workers
            .iter()
            .position(|w| w.log_text().contains("relay lease taken"))
    })
    .await;
    let survivor = 1 - victim;

    // Act: identities that span partitions (the same emails and phones in events on
    // different partitions), so that both workers touch the same clusters; kill one
    // worker once both have applied some.
    let workload = Workload::generate(8, 3000, 1500, "scale-out");
    let produced = workload
        .produce(&kafka::producer(&brokers), &topics.input)
        .await;
    let keys = ledger_keys_of(&produced);
    eventually(WAIT, "both workers to apply events", || async {
        let applied = "identity_reconciler_events_applied_total";
        let both = metric(&urls[0], applied).await > 0.0 && metric(&urls[1], applied).await > 0.0;
        (both && ledger_count(&db).await >= keys.len() / 4).then_some(())
    })
    .await;
    workers[victim].kill();
    assert!(
        ledger_count(&db).await < keys.len(),
        "the workers applied everything before one was killed; the test needs a longer stream"
    );
    eventually(WAIT, "the survivor to apply every event", || async {
        (ledger_count(&db).await >= keys.len()).then_some(())
    })
    .await;
    let mut output = TopicReader::open(&brokers, &topics.output).await;
    let order_ids = workload.order_ids();
    output
        .read_until(WAIT, "a record for every event", |r| {
            published_order_ids(r).is_superset(&order_ids)
        })
        .await;
    eventually(WAIT, "the outbox to drain", || async {
        (db.count("SELECT count(*) FROM outbox").await == 0).then_some(())
    })
    .await;
    let records = output.read_to_end(WAIT).await.to_vec();

    // Assert
    assert_stream_applied(&db, &workload, &keys, &records).await;
    assert!(
        workers[survivor].log_text().contains("relay lease taken"),
        "the survivor never took over the relay"
    );
    workers[survivor].terminate();
    let status = workers[survivor].wait_exit(Duration::from_secs(30)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "the survivor did not stop cleanly: {status:?}"
    );
    drop(cluster);
}
