//! Several worker processes in one consumer group over one database (docs/contract.md §6:
//! "run several instances with the same group to scale out"), under continuous load,
//! while members join and leave: gracefully, and by `kill -9` (the relay-lease holder
//! among them).

mod support;

use std::time::Duration;
use support::assertions::{
    self, assert_applied_in_offset_order, assert_stream_applied, CommittedOffsetsWatch,
};
use support::broker::TopicAdmin;
use support::db::TestDb;
use support::eventually;
use support::names::Topics;
use support::processes::{self, Service};
use support::workload::{self, ledger_keys_of, Workload};

const WAIT: Duration = Duration::from_secs(120);
const PARTITIONS: i32 = 6;
const EVENTS: usize = 12_000;
/// The load lasts about this many seconds: events are sent in equal slices.
const LOAD_SECONDS: usize = 40;

fn assignments(service: &Service) -> usize {
    service
        .log_text()
        .lines()
        .filter(|line| line.contains("partitions assigned"))
        .count()
}

/// What happens to the group at each step of the churn.
#[derive(Clone, Copy, Debug)]
enum Churn {
    Join,
    /// SIGTERM the oldest member: it drains, commits and leaves.
    Leave,
    /// `kill -9` the relay-lease holder: it vanishes without a word.
    KillLeaseHolder,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_joining_and_leaving_under_load_apply_every_event_once_and_in_order() {
    // Arrange: three workers in one group on a 6-partition topic.
    let brokers = support::broker::kafka_brokers().await;
    let topics = Topics::unique("scale_out");
    topics.create(&brokers, PARTITIONS).await;
    let db = TestDb::new().await;
    let mut env = topics.env(&brokers);
    env.push(("DATABASE_URL".to_owned(), db.url.clone()));
    env.push(("IR__RECONCILE__MAX_BATCH".to_owned(), "100".to_owned()));
    // The model knows no caps and no quarantine.
    env.extend(processes::unguarded_env());
    let mut started = 0;
    let mut start = |workers: &mut Vec<Service>| {
        started += 1;
        workers.push(Service::start(
            &format!("scale-out-{started}"),
            &["run"],
            &env,
        ));
    };
    let mut workers: Vec<Service> = Vec::new();
    for _ in 0..3 {
        start(&mut workers);
    }
    for worker in &mut workers {
        worker.base_url().await;
    }
    let watch = CommittedOffsetsWatch::start(&brokers, &topics.group, &topics.input).await;

    // Act: a steady stream of overlapping events (identities span partitions, so the
    // workers touch the same clusters) while the group changes every few seconds.
    let workload = Workload::generate(8, EVENTS, 8_000, "scale-out");
    let load = workload::paced_load(&brokers, &topics.input, &workload.events, LOAD_SECONDS);
    let churn = [
        Churn::Join,
        Churn::KillLeaseHolder,
        Churn::Leave,
        Churn::Join,
        Churn::KillLeaseHolder,
        Churn::Join,
        Churn::Leave,
    ];
    let mut tick = tokio::time::interval(Duration::from_secs(4));
    tick.tick().await;
    let (mut kills, mut leaves, mut joins) = (0, 0, 0);
    for step in churn {
        tick.tick().await;
        match step {
            Churn::Join => {
                start(&mut workers);
                workers.last_mut().unwrap().base_url().await;
                joins += 1;
            }
            Churn::Leave => {
                let mut leaving = workers.remove(0);
                leaving.terminate();
                let status = leaving.wait_exit(Duration::from_secs(30)).await;
                assert!(
                    status.is_some_and(|s| s.success()),
                    "a leaving worker did not stop cleanly: {status:?}"
                );
                leaves += 1;
            }
            Churn::KillLeaseHolder => {
                let holder = eventually(WAIT, "a worker to hold the relay lease", || async {
                    workers
                        .iter()
                        .position(|w| w.log_text().contains("relay lease taken"))
                })
                .await;
                let mut victim = workers.remove(holder);
                victim.kill();
                kills += 1;
            }
        }
    }
    let produced = load.await.unwrap();
    let keys = ledger_keys_of(&produced);
    let records =
        assertions::drained_output(&db, &brokers, &topics.output, &workload, &keys, WAIT).await;
    let rebalances: usize = workers.iter().map(assignments).sum();

    // Assert: exactly once, an output for each event, the model's clusters, §2; per
    // partition, events applied in offset order; committed offsets never went back.
    assert_stream_applied(&db, &workload, &keys, &records).await;
    let in_order = assert_applied_in_offset_order(&db.pool, &produced).await;
    let polls = watch.assert_never_went_back().await;
    eprintln!(
        "{} events, {joins} joins, {leaves} leaves, {kills} kills (lease holders), \
         {rebalances} assignments seen by the survivors, {} output records, \
         {in_order} events checked in order, {polls} polls of the committed offsets",
        produced.len(),
        records.len()
    );
    for worker in &mut workers {
        worker.terminate();
    }
    for worker in &mut workers {
        let status = worker.wait_exit(Duration::from_secs(30)).await;
        assert!(
            status.is_some_and(|s| s.success()),
            "a worker did not stop cleanly: {status:?}"
        );
    }
}
