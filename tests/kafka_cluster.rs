//! Broker faults on a three-node Apache Kafka cluster (replication factor 3,
//! `min.insync.replicas=2`), started by `scripts/services.sh start --kafka-nodes 3`:
//! the leader of the busiest input partition killed and restarted, the group
//! coordinator stopped, and a rolling restart of every node, all under load. The
//! worker must recover by itself, lose nothing, and be ready again afterwards. (That
//! `/readyz` reports a broker outage while it lasts is tested on a single node, in
//! `kafka_pipeline.rs`: with one node of three down there is no outage to report.)
//! The group's committed offsets must end at the end of the input; that a reading of
//! them never goes back is required where the coordinator stays put
//! (`kafka_rebalance.rs`, `kafka_scale_out.rs`), not here, where it moves (see
//! `CommittedOffsetsWatch::assert_ends_at`).
//!
//! These tests stop and start the cluster's nodes, so they are `#[ignore]`d in the
//! ordinary run and run one at a time by `scripts/test.sh` against a cluster of
//! their own (`cargo test --test kafka_cluster -- --ignored --test-threads=1`).

mod support;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::ClientConfig;
use std::process::Command;
use std::time::Duration;
use support::assertions::{
    self, assert_applied_in_offset_order, assert_stream_applied, CommittedOffsetsWatch,
};
use support::broker::TopicAdmin;
use support::db::TestDb;
use support::eventually;
use support::metrics::readiness;
use support::names::Topics;
use support::processes::{self, Service};
use support::workload::{self, ledger_keys_of, Workload};

const WAIT: Duration = Duration::from_secs(180);
const PARTITIONS: i32 = 6;
const EVENTS: usize = 6_000;
const LOAD_SECONDS: usize = 30;

/// Nodes this test stopped; whatever is still down when it ends (a failed test) is
/// started again, so the next test finds the whole cluster.
#[derive(Default)]
struct Stopped(std::collections::BTreeSet<i32>);

impl Stopped {
    fn stop(&mut self, action: &str, id: i32) {
        self.0.insert(id);
        node(action, id);
    }

    fn start(&mut self, id: i32) {
        node("start", id);
        self.0.remove(&id);
    }

    /// Starts every stopped node at once (a node whose controller quorum is down
    /// finishes starting only once a majority of controllers is back).
    fn start_all(&mut self) {
        let ids: Vec<String> = std::mem::take(&mut self.0)
            .iter()
            .map(i32::to_string)
            .collect();
        if !ids.is_empty() {
            node("start", ids.join(" "));
        }
    }
}

impl Drop for Stopped {
    fn drop(&mut self) {
        self.start_all();
    }
}

/// Runs `scripts/services.sh node ACTION IDS` on the cluster of `IR_SERVICES_DIR`.
fn node(action: &str, ids: impl std::fmt::Display) {
    assert!(
        std::env::var("IR_SERVICES_DIR").is_ok(),
        "run these tests through scripts/test.sh, which starts the three-node cluster"
    );
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/services.sh");
    let ids = ids.to_string();
    let status = Command::new("bash")
        .args([script, "node", action])
        .args(ids.split(' '))
        .status()
        .expect("run scripts/services.sh");
    assert!(status.success(), "services.sh node {action} {ids} failed");
    eprintln!("node {ids}: {action}");
}

fn metadata_client(brokers: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("create a metadata client")
}

/// The broker leading `partition` of `topic`.
fn leader_of(brokers: &str, topic: &str, partition: i32) -> i32 {
    let metadata = metadata_client(brokers)
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .expect("fetch metadata");
    let topic = metadata
        .topics()
        .iter()
        .find(|t| t.name() == topic)
        .expect("the topic exists");
    topic
        .partitions()
        .iter()
        .find(|p| p.id() == partition)
        .expect("the partition exists")
        .leader()
}

/// The input partition holding the most messages so far.
fn busiest_partition(brokers: &str, topic: &str) -> i32 {
    let client = metadata_client(brokers);
    (0..PARTITIONS)
        .max_by_key(|&p| {
            let (low, high) = client
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .expect("fetch the watermarks");
            high - low
        })
        .unwrap()
}

/// The group coordinator: the leader of the `__consumer_offsets` partition the group
/// maps to (Kafka's rule: the group id's Java `hashCode`, made non-negative, modulo
/// the topic's 50 partitions).
fn coordinator_of(brokers: &str, group: &str) -> i32 {
    let hash = group
        .encode_utf16()
        .fold(0i32, |h, unit| h.wrapping_mul(31).wrapping_add(unit as i32));
    leader_of(brokers, "__consumer_offsets", (hash & 0x7fff_ffff) % 50)
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    /// `kill -9` the leader of the busiest input partition, restart it later.
    KillBusiestLeader,
    /// SIGTERM the group coordinator, restart it later.
    StopCoordinator,
    /// Stop and restart each node in turn.
    RollingRestart,
}

async fn survives(fault: Fault) {
    // Arrange: a worker on replicated topics, then a steady stream of events.
    let brokers = support::broker::kafka_brokers().await;
    let topics = Topics::unique("cluster");
    topics.create_replicated(&brokers, PARTITIONS, 3).await;
    let db = TestDb::new().await;
    let mut env = topics.env(&brokers);
    env.push(("DATABASE_URL".to_owned(), db.url.clone()));
    env.push(("IR__KAFKA__TOPIC_REPLICATION".to_owned(), "3".to_owned()));
    env.push(("IR__RECONCILE__MAX_BATCH".to_owned(), "100".to_owned()));
    // The model knows no caps and no quarantine.
    env.extend(processes::unguarded_env());
    let mut worker = Service::start("cluster", &["run"], &env);
    let url = worker.base_url().await;
    let watch = CommittedOffsetsWatch::start(&brokers, &topics.group, &topics.input).await;
    let workload = Workload::generate(21, EVENTS, 4_000, "cluster");
    let load = workload::paced_load(&brokers, &topics.input, &workload.events, LOAD_SECONDS);
    eventually(WAIT, "the worker to apply events", || async {
        (db.count("SELECT count(*) FROM processed_event").await > 200).then_some(())
    })
    .await;

    // Act
    let mut down = Stopped::default();
    match fault {
        Fault::KillBusiestLeader => {
            let partition = busiest_partition(&brokers, &topics.input);
            let leader = leader_of(&brokers, &topics.input, partition);
            eprintln!("partition {partition} is the busiest; its leader is node {leader}");
            down.stop("kill", leader);
            let moved = eventually(WAIT, "a new leader to be elected", || async {
                let now = leader_of(&brokers, &topics.input, partition);
                (now != leader && now >= 0).then_some(now)
            })
            .await;
            eprintln!("partition {partition} is now led by node {moved}");
            down.start(leader);
        }
        Fault::StopCoordinator => {
            let coordinator = coordinator_of(&brokers, &topics.group);
            eprintln!("the group coordinator is node {coordinator}");
            down.stop("stop", coordinator);
            let moved = eventually(WAIT, "the coordinator to move", || async {
                let now = coordinator_of(&brokers, &topics.group);
                (now != coordinator && now >= 0).then_some(now)
            })
            .await;
            eprintln!("the group coordinator is now node {moved}");
            down.start(coordinator);
        }
        Fault::RollingRestart => {
            for id in 1..=3 {
                down.stop("stop", id);
                down.start(id);
            }
        }
    }
    let produced = load.await.unwrap();
    let keys = ledger_keys_of(&produced);
    let records =
        assertions::drained_output(&db, &brokers, &topics.output, &workload, &keys, WAIT).await;

    // Assert: as after any crash, and the worker recovered by itself.
    assert_stream_applied(&db, &workload, &keys, &records).await;
    let in_order = assert_applied_in_offset_order(&db.pool, &produced).await;
    let (polls, went_back) = watch
        .assert_ends_at(&brokers, &topics.group, &topics.input, &produced)
        .await;
    assert_eq!(
        readiness(&url).await,
        Some(200),
        "the worker is not ready again"
    );
    eprintln!(
        "{fault:?}: {} events, {} output records, {in_order} checked in order, {polls} offset polls, \
         readings that went back meanwhile: {went_back:?}",
        produced.len(),
        records.len()
    );
    worker.terminate();
    let status = worker.wait_exit(Duration::from_secs(60)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "unclean exit: {status:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the three-node cluster of scripts/test.sh"]
async fn killing_the_leader_of_the_busiest_partition_mid_stream_loses_nothing() {
    survives(Fault::KillBusiestLeader).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the three-node cluster of scripts/test.sh"]
async fn stopping_the_group_coordinator_mid_stream_loses_nothing() {
    survives(Fault::StopCoordinator).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs the three-node cluster of scripts/test.sh"]
async fn a_rolling_restart_of_every_node_under_load_loses_nothing() {
    survives(Fault::RollingRestart).await;
}
