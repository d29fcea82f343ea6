//! A worker killed with `kill -9` mid-stream resumes from its committed offsets and
//! loses nothing (docs/contract.md §6: input at-least-once, database effect exactly once,
//! output never lost).
//!
//! The events are produced in large batches, so the committed offsets the worker
//! resumes from lie inside record batches: the broker must serve a fetch that starts
//! in the middle of one, and the worker must skip what it already applied.

mod support;

use std::time::Duration;
use support::assertions::{self, assert_applied_in_offset_order, assert_stream_applied};
use support::broker::TopicAdmin;
use support::broker::{self, committed_offsets};
use support::db::TestDb;
use support::eventually;
use support::names::Topics;
use support::processes::{self, Service};
use support::workload::{ledger_keys_of, Workload};

const WAIT: Duration = Duration::from_secs(120);
const EVENTS: usize = 20_000;

async fn ledger_count(db: &TestDb) -> usize {
    db.count("SELECT count(*) FROM processed_event").await as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_stream_resumes_inside_record_batches_and_loses_nothing() {
    // Arrange: 20,000 overlapping events on three partitions, produced in big batches.
    let brokers = support::broker::kafka_brokers().await;
    let topics = Topics::unique("resume");
    topics.create(&brokers, 3).await;
    let db = TestDb::new().await;
    let workload = Workload::generate(11, EVENTS, 12_000, "resume");
    let produced = workload
        .produce(&broker::batching_producer(&brokers), &topics.input)
        .await;
    let keys = ledger_keys_of(&produced);
    let mut env = topics.env(&brokers);
    env.push(("DATABASE_URL".to_owned(), db.url.clone()));
    // Small batches, so that offsets are committed many times along the stream.
    env.push(("IR__RECONCILE__MAX_BATCH".to_owned(), "100".to_owned()));
    // The model knows no caps and no quarantine.
    env.extend(processes::unguarded_env());

    // Act: kill the worker twice, each time once it has committed offsets past the
    // start of the stream and before it has applied everything.
    let mut kills = 0;
    for share in [4, 2] {
        let mut worker = Service::start("resume", &["run"], &env);
        worker.base_url().await;
        let target = keys.len() / share;
        eventually(WAIT, "the worker to apply part of the stream", || async {
            (ledger_count(&db).await >= target).then_some(())
        })
        .await;
        let committed = committed_offsets(&brokers, &topics.group, &topics.input).await;
        worker.kill();
        kills += 1;
        assert!(
            ledger_count(&db).await < keys.len(),
            "the worker applied everything before it was killed; the stream is too short"
        );
        eprintln!("kill {kills}: committed offsets {committed:?}");
    }
    let mut worker = Service::start("resume", &["run"], &env);
    worker.base_url().await;
    let records =
        assertions::drained_output(&db, &brokers, &topics.output, &workload, &keys, WAIT).await;

    // Assert: every event in the ledger exactly once, an output for each, the clusters
    // of the model, §2, and each partition applied in offset order across the kills.
    assert_stream_applied(&db, &workload, &keys, &records).await;
    let checked = assert_applied_in_offset_order(&db.pool, &produced).await;
    eprintln!(
        "{} events ({} keys), {kills} kills, {} output records, {checked} checked in order",
        produced.len(),
        keys.len(),
        records.len()
    );
    worker.terminate();
    let status = worker.wait_exit(Duration::from_secs(30)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "unclean exit: {status:?}"
    );
}
