//! The identities topic under sabotage (docs/contract.md §6 v2): a `read_committed` consumer
//! sees, per key, strictly increasing versions and no record twice, while database
//! backends are terminated every 0.3 s, and while the relay-lease holder is killed
//! with SIGKILL at random moments; the last record of every key is the database's.

mod support;

use identity_reconciler::domain::Request;
use identity_reconciler::worker::event::{parse_event, Source};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use sqlx::Connection;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use support::assertions::assert_stream_applied;
use support::broker::TopicAdmin;
use support::broker::{self, kafka_brokers};
use support::db::TestDb;
use support::names::Topics;
use support::processes::Service;
use support::readers::{published_order_ids, Record, TopicReader};
use support::workload::{self, ledger_keys_of, Workload};
use support::{eventually, metrics};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(180);
const EVENTS: usize = 10_000;

/// Per key, in topic order: records whose (version) was seen before, and records
/// whose version is below the previous one. Each as "key: a -> b".
fn repeats_and_regressions(records: &[Record]) -> (Vec<String>, Vec<String>) {
    let mut last: BTreeMap<&str, i64> = BTreeMap::new();
    let mut seen: std::collections::HashSet<(&str, i64)> = Default::default();
    let (mut repeats, mut regressions) = (Vec::new(), Vec::new());
    for record in records {
        let key = record.key.as_deref().expect("keyed");
        let value: Value = record.json();
        let version = value["version"].as_i64().expect("a version");
        if !seen.insert((key, version)) {
            repeats.push(format!("{key}: v{version} again"));
        }
        if let Some(&previous) = last.get(key) {
            if version < previous {
                regressions.push(format!("{key}: v{previous} -> v{version}"));
            }
        }
        last.insert(key, version);
    }
    (repeats, regressions)
}

fn env(
    db_url: &str,
    topics: &Topics,
    brokers: &str,
    name: &str,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut env = topics.env(brokers);
    env.push((
        "DATABASE_URL".to_owned(),
        format!("{db_url}?application_name={name}"),
    ));
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

/// Terminates every other backend of the test database every `every`, until
/// cancelled; returns how many it terminated.
fn terminate_backends(
    url: String,
    every: Duration,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<u64> {
    tokio::spawn(async move {
        let mut killed = 0u64;
        let mut connection: Option<sqlx::PgConnection> = None;
        let mut ticks = tokio::time::interval(every);
        while !stop.is_cancelled() {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = ticks.tick() => {}
            }
            if connection.is_none() {
                connection = sqlx::PgConnection::connect(&url).await.ok();
            }
            let Some(c) = connection.as_mut() else {
                continue;
            };
            match sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE datname = current_database() AND pid <> pg_backend_pid()) t",
            )
            .fetch_one(c)
            .await
            {
                Ok(n) => killed += n as u64,
                Err(_) => connection = None,
            }
        }
        killed
    })
}

async fn whole_output(brokers: &str, topic: &str, db: &TestDb, workload: &Workload) -> Vec<Record> {
    let mut output = TopicReader::open(brokers, topic).await;
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
    output.read_to_end(WAIT).await.to_vec()
}

async fn database_blips(mode: &str) {
    // Arrange
    let brokers = kafka_brokers().await;
    let topics = Topics::unique("blips");
    topics.create(&brokers, 3).await;
    let db = TestDb::new().await;
    let workload = Workload::generate(13, EVENTS, EVENTS / 2, "blips");
    // The first half is applied before the service starts, so that the relay has a
    // backlog to publish while the terminations hit it; the second half comes
    // through Kafka meanwhile.
    let (preloaded, streamed) = workload.events.split_at(EVENTS / 2);
    let store = db.store();
    let mut keys: BTreeSet<String> = BTreeSet::new();
    for (n, chunk) in preloaded.chunks(500).enumerate() {
        let requests: Vec<Request> = chunk
            .iter()
            .enumerate()
            .map(|(i, event)| {
                let source = Source {
                    topic: "preloaded".into(),
                    partition: 0,
                    offset: (n * 500 + i) as i64,
                };
                keys.insert(
                    event
                        .event_id
                        .clone()
                        .unwrap_or_else(|| source.ledger_key()),
                );
                let value = event.value.to_string();
                parse_event(
                    Some(value.as_bytes()),
                    &source,
                    store.settings().input_rules(),
                )
                .expect("a valid event")
            })
            .collect();
        store.reconcile(&requests).await.unwrap();
    }
    let mut service = Service::start(
        "blips",
        &["run"],
        &env(
            &db.url,
            &topics,
            &brokers,
            "blips",
            &[("IR__RELAY__MODE", mode)],
        ),
    );
    let base_url = service.base_url().await;
    let stop = CancellationToken::new();
    let terminator = terminate_backends(db.url.clone(), Duration::from_millis(300), stop.clone());

    // Act: the terminations go on until every event is applied and published, or for
    // at most a minute (with every connection cut every 0.3 s, a batch needs a few
    // tries: the stream may not be through by then).
    let produced =
        workload::produce_events(&broker::producer(&brokers), &topics.input, streamed).await;
    keys.extend(ledger_keys_of(&produced));
    let key_count = keys.len() as i64;
    let sabotage = tokio::time::Instant::now();
    while sabotage.elapsed() < Duration::from_secs(60)
        && sqlx::query_as::<_, (i64, i64)>(
            "SELECT (SELECT count(*) FROM processed_event), (SELECT count(*) FROM outbox)",
        )
        .fetch_one(&db.pool)
        .await
        .map_or(true, |(applied, unpublished)| {
            applied < key_count || unpublished > 0
        })
    {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let lasted = sabotage.elapsed();
    stop.cancel();
    let killed = terminator.await.unwrap();
    let output = whole_output(&brokers, &topics.output, &db, &workload).await;
    // What the terminations cost the service: statements it had to retry.
    let retries =
        |operation| format!(r#"identity_reconciler_retries_total{{operation="{operation}"}}"#);
    let relay_retries = metrics::metric(&base_url, &retries("relay")).await as u64;
    let apply_retries = metrics::metric(&base_url, &retries("reconcile")).await as u64;

    // Assert
    assert!(
        !service.has_exited(),
        "the service died:\n{}",
        service.log_text()
    );
    let (repeats, regressions) = repeats_and_regressions(&output);
    eprintln!(
        "{mode}: {EVENTS} events, {killed} backends terminated over {lasted:?} \
         ({relay_retries} relay and {apply_retries} batch retries), {} records, {} repeated, \
         {} versions going back",
        output.len(),
        repeats.len(),
        regressions.len()
    );
    // No crash here: at-least-once repeats nothing either.
    assert!(
        repeats.is_empty(),
        "repeated: {:?}",
        &repeats[..repeats.len().min(10)]
    );
    assert!(
        regressions.is_empty(),
        "versions went back: {:?}",
        &regressions[..regressions.len().min(10)]
    );
    assert_stream_applied(&db, &workload, &keys, &output).await;
    service.kill();
    // The sabotage reached both loops (how many backends that takes depends on the
    // machine's pace: a fast one applies and publishes everything in two seconds).
    assert!(
        relay_retries > 0 && apply_retries > 0,
        "the terminations missed a loop: {relay_retries} relay and {apply_retries} batch retries"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_blips_never_repeat_or_reorder_a_record() {
    database_blips("exactly_once").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn database_blips_never_reorder_a_record_in_at_least_once_mode() {
    database_blips("at_least_once").await;
}

/// The application name of the relay lease's holder, if any holds it. The lease is
/// the two-`int4` advisory lock `(-1, 1)` (`objsubid` 2; the first key as an unsigned
/// `classid`).
async fn lease_holder(db: &TestDb) -> Option<String> {
    sqlx::query_scalar(
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 \
           AND l.classid = 4294967295::oid AND l.objid = 1::oid \
           AND a.datname = current_database()",
    )
    .fetch_optional(&db.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_relay_lease_holder_never_repeats_or_reorders_a_record() {
    // Arrange: two instances; events arrive in 20 chunks.
    let brokers = kafka_brokers().await;
    let topics = Topics::unique("leasekill");
    topics.create(&brokers, 3).await;
    let db = TestDb::new().await;
    let workload = Workload::generate(17, EVENTS, EVENTS / 2, "leasekill");
    let mut rng = StdRng::seed_from_u64(17);
    let mut instances: BTreeMap<String, Service> = BTreeMap::new();
    let mut started = 0;
    let mut start = |instances: &mut BTreeMap<String, Service>| {
        started += 1;
        let name = format!("leasekill-{started}");
        let service = Service::start(
            &name,
            &["run"],
            &env(&db.url, &topics, &brokers, &name, &[]),
        );
        instances.insert(name, service);
    };
    start(&mut instances);
    start(&mut instances);
    let producer = broker::producer(&brokers);
    let chunk = EVENTS / 20;
    let mut produced = Vec::new();
    let mut kills = 0;

    // Act: after each chunk, at a random moment, SIGKILL whoever holds the lease and
    // start a replacement.
    for events in workload.events.chunks(chunk) {
        produced.extend(workload::produce_events(&producer, &topics.input, events).await);
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..800))).await;
        let holder = eventually(WAIT, "a relay lease holder", || async {
            lease_holder(&db)
                .await
                .filter(|h| instances.contains_key(h))
        })
        .await;
        let mut victim = instances.remove(&holder).unwrap();
        victim.kill();
        kills += 1;
        start(&mut instances);
    }
    let output = whole_output(&brokers, &topics.output, &db, &workload).await;

    // Assert
    let (repeats, regressions) = repeats_and_regressions(&output);
    eprintln!(
        "{EVENTS} events, {kills} relay-lease holders killed, {} records, {} repeated, {} versions going back",
        output.len(),
        repeats.len(),
        regressions.len()
    );
    assert!(
        repeats.is_empty(),
        "repeated: {:?}",
        &repeats[..repeats.len().min(10)]
    );
    assert!(
        regressions.is_empty(),
        "versions went back: {:?}",
        &regressions[..regressions.len().min(10)]
    );
    assert_stream_applied(&db, &workload, &ledger_keys_of(&produced), &output).await;
}
