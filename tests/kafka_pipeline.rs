//! The Kafka pipeline end to end, against real PostgreSQL and Apache Kafka:
//! events in, contacts and ledger in PostgreSQL, identities and dead letters out
//! (docs/contract.md §3, §4, §6). Failures come from real sabotage: SIGKILL and SIGTERM of the
//! service's process, and restarts of private PostgreSQL and broker instances.

mod support;

use identity_reconciler::Mode;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use support::app::TestApp;
use support::assertions::assert_stream_applied;
use support::broker::TopicAdmin;
use support::broker::{self, kafka_brokers, Outgoing};
use support::db::{contact_rows, ledger_keys, TestDb};
use support::eventually;
use support::metrics::{metric, readiness};
use support::names::Topics;
use support::private::{PrivateBroker, PrivatePostgres};
use support::processes::Service;
use support::readers::{published_order_ids, Record, TopicReader};
use support::workload::{self, ledger_keys_of, Workload};

/// How long any one observable state may take to appear.
const WAIT: Duration = Duration::from_secs(60);

async fn start_worker(db: TestDb, topics: &Topics) -> TestApp {
    let brokers = kafka_brokers().await;
    TestApp::spawn_on(db, Mode::Run, |settings| topics.apply(settings, &brokers)).await
}

async fn outbox_drained(db: &TestDb) {
    eventually(WAIT, "the outbox to drain", || async {
        (db.count("SELECT count(*) FROM outbox").await == 0).then_some(())
    })
    .await;
}

/// The child process's environment: this test's database, broker, topics and group.
fn service_env(
    db: &TestDb,
    topics: &Topics,
    brokers: &str,
    extra: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut env = topics.env(brokers);
    env.push(("DATABASE_URL".to_owned(), db.url.clone()));
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    env
}

async fn ledger_count(db: &TestDb) -> usize {
    db.count("SELECT count(*) FROM processed_event").await as usize
}

async fn wait_for_ledger(db: &TestDb, at_least: usize, what: &str) -> usize {
    eventually(WAIT, what, || async {
        let count = ledger_count(db).await;
        (count >= at_least).then_some(count)
    })
    .await
}

/// The whole output topic, once every event has its record and the outbox is empty.
async fn read_whole_output(
    brokers: &str,
    topic: &str,
    db: &TestDb,
    order_ids: &BTreeSet<String>,
) -> Vec<Record> {
    let mut output = TopicReader::open(brokers, topic).await;
    output
        .read_until(WAIT, "a record for every event", |r| {
            published_order_ids(r).is_superset(order_ids)
        })
        .await;
    outbox_drained(db).await;
    output.read_to_end(WAIT).await.to_vec()
}

/// SIGTERM, then the exit status within `deadline`.
async fn stop_gracefully(service: &mut Service, deadline: Duration) {
    service.terminate();
    let status = service
        .wait_exit(deadline)
        .await
        .unwrap_or_else(|| panic!("the service did not exit within {deadline:?} of SIGTERM"));
    assert!(
        status.success(),
        "the service exited with {status} after SIGTERM"
    );
}

/// Output records grouped by key, each key's records in topic order.
fn by_key(records: &[Record]) -> BTreeMap<String, Vec<Value>> {
    let mut grouped: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for record in records {
        grouped
            .entry(record.key.clone().expect("output records are keyed"))
            .or_default()
            .push(record.json());
    }
    grouped
}

async fn contact_id(db: &TestDb, email: &str) -> i64 {
    sqlx::query_scalar("SELECT id FROM contact WHERE email = $1")
        .bind(email)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worked_examples_sent_as_events_publish_the_published_identities() {
    // Arrange
    let brokers = kafka_brokers().await;
    let topics = Topics::unique("worked");
    topics.create(&brokers, 3).await;
    let worker = start_worker(TestDb::new().await, &topics).await;
    let bodies = [
        json!({"email": "lorraine@hillvalley.edu", "phoneNumber": "123456"}),
        json!({"email": "mcfly@hillvalley.edu", "phoneNumber": "123456"}),
        json!({"email": null, "phoneNumber": 123456}),
        json!({"email": "lorraine@hillvalley.edu", "phoneNumber": null}),
        json!({"email": "mcfly@hillvalley.edu", "phoneNumber": null}),
        json!({"email": "george@hillvalley.edu", "phoneNumber": "919191"}),
        json!({"email": "biffsucks@hillvalley.edu", "phoneNumber": "717171"}),
        json!({"email": "george@hillvalley.edu", "phoneNumber": "717171"}),
    ];
    let events: Vec<Value> = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| {
            let mut event = body.clone();
            event["eventId"] = format!("{}-e{i}", topics.input).into();
            event["orderId"] = format!("order-{i}").into();
            event
        })
        .collect();

    // Act: one partition, so that the order of the events is defined.
    broker::send_events(&broker::producer(&brokers), &topics.input, Some(0), &events).await;
    let mut output = TopicReader::open(&brokers, &topics.output).await;
    output
        .read_until(WAIT, "a record per event and the merge record", |r| {
            r.len() > events.len()
        })
        .await;
    outbox_drained(&worker.db).await;
    let records = output.read_to_end(WAIT).await.to_vec();

    // Assert: the published identities, version by version.
    let lorraine = contact_id(&worker.db, "lorraine@hillvalley.edu").await;
    let mcfly = contact_id(&worker.db, "mcfly@hillvalley.edu").await;
    let george = contact_id(&worker.db, "george@hillvalley.edu").await;
    let biff = contact_id(&worker.db, "biffsucks@hillvalley.edu").await;
    let contact = |primary: i64, emails: &[&str], phones: &[&str], secondaries: &[i64]| {
        json!({"primaryContatctId": primary, "primaryContactId": primary,
               "emails": emails, "phoneNumbers": phones, "secondaryContactIds": secondaries})
    };
    let record = |i: usize, contact: Value, version: i64, changed: bool| {
        json!({"contact": contact, "eventId": events[i]["eventId"], "orderId": events[i]["orderId"],
               "version": version, "changed": changed})
    };
    let lm = ["lorraine@hillvalley.edu", "mcfly@hillvalley.edu"];
    let doc = contact(lorraine, &lm, &["123456"], &[mcfly]);
    let mut expected = BTreeMap::new();
    expected.insert(
        lorraine.to_string(),
        vec![
            record(0, contact(lorraine, &[lm[0]], &["123456"], &[]), 1, true),
            record(1, doc.clone(), 2, true),
            record(2, doc.clone(), 3, false),
            record(3, doc.clone(), 4, false),
            record(4, doc.clone(), 5, false),
        ],
    );
    expected.insert(
        george.to_string(),
        vec![
            record(
                5,
                contact(george, &["george@hillvalley.edu"], &["919191"], &[]),
                1,
                true,
            ),
            record(
                7,
                contact(
                    george,
                    &["george@hillvalley.edu", "biffsucks@hillvalley.edu"],
                    &["919191", "717171"],
                    &[biff],
                ),
                2,
                true,
            ),
        ],
    );
    expected.insert(
        biff.to_string(),
        vec![
            record(
                6,
                contact(biff, &["biffsucks@hillvalley.edu"], &["717171"], &[]),
                1,
                true,
            ),
            json!({"mergedInto": george, "primaryContactId": biff, "eventId": events[7]["eventId"],
                   "orderId": events[7]["orderId"], "version": 2, "changed": true}),
        ],
    );
    assert_eq!(by_key(&records), expected);

    // Assert: the same requests through POST /identify answer the same identities and
    // leave the same rows.
    let http = TestApp::spawn_http(|_| {}).await;
    let published: BTreeMap<String, Value> = records
        .iter()
        .map(Record::json)
        .filter(|v| v.get("contact").is_some())
        .map(|v| (v["eventId"].as_str().unwrap().to_owned(), v))
        .collect();
    for (body, event) in bodies.iter().zip(&events) {
        let (status, answer) = http.post_identify(&body.to_string()).await;
        assert_eq!(status, 200, "POST /identify {body}: {answer}");
        let id = event["eventId"].as_str().unwrap();
        assert_eq!(
            answer["contact"], published[id]["contact"],
            "the answer to {body} differs from the event's record"
        );
    }
    assert_eq!(
        contact_rows(&http.db.pool).await,
        contact_rows(&worker.db.pool).await,
        "events and POST /identify left different contacts"
    );
    http.stop().await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replayed_event_changes_nothing_and_publishes_nothing() {
    // Arrange: events with and without eventId, all on one partition, so that a later
    // sentinel event is processed after all of them.
    let brokers = kafka_brokers().await;
    let producer = broker::producer(&brokers);
    let mut topics = Topics::unique("replay");
    topics.create(&brokers, 3).await;
    let worker = start_worker(TestDb::new().await, &topics).await;
    let with_id: Vec<Value> = [
        ("a@replay.test", Some("1001")),
        ("b@replay.test", Some("1002")),
        ("a@replay.test", Some("1002")),
        ("c@replay.test", Some("1001")),
    ]
    .iter()
    .enumerate()
    .map(|(i, (email, phone))| {
        json!({"eventId": format!("{}-e{i}", topics.input), "orderId": format!("with-id-{i}"),
               "email": email, "phoneNumber": phone})
    })
    .collect();
    let without_id: Vec<Value> = [
        ("d@replay.test", Some("1003")),
        ("a@replay.test", Some("1003")),
        ("e@replay.test", None),
    ]
    .iter()
    .enumerate()
    .map(|(i, (email, phone))| {
        json!({"orderId": format!("without-id-{i}"), "email": email, "phoneNumber": phone})
    })
    .collect();
    let originals: Vec<Value> = with_id.iter().chain(&without_id).cloned().collect();
    broker::send_events(&producer, &topics.input, Some(0), &originals).await;
    let mut output = TopicReader::open(&brokers, &topics.output).await;
    let order_ids: BTreeSet<String> = originals
        .iter()
        .map(|e| e["orderId"].as_str().unwrap().to_owned())
        .collect();
    output
        .read_until(WAIT, "the originals' records", |r| {
            published_order_ids(r).is_superset(&order_ids)
        })
        .await;
    outbox_drained(&worker.db).await;
    let records_before = output.read_to_end(WAIT).await.len();
    let rows_before = contact_rows(&worker.db.pool).await;
    let ledger_before = ledger_keys(&worker.db.pool).await;
    assert_eq!(ledger_before.len(), originals.len());

    // Act: the same events again, then a sentinel.
    broker::send_events(&producer, &topics.input, Some(0), &with_id).await;
    let sentinel = json!({"eventId": format!("{}-s1", topics.input), "orderId": "sentinel-1",
                          "email": "sentinel-1@replay.test"});
    broker::send_events(&producer, &topics.input, Some(0), &[sentinel]).await;
    let sentinel_seen = |r: &[Record]| published_order_ids(r).contains("sentinel-1");
    output
        .read_until(WAIT, "the sentinel's record", sentinel_seen)
        .await;
    outbox_drained(&worker.db).await;
    let records = output.read_to_end(WAIT).await.to_vec();

    // Assert: only the sentinel published, changed and was recorded.
    assert_eq!(
        records.len(),
        records_before + 1,
        "replayed events published records: {:?}",
        &records[records_before..]
    );
    let rows = contact_rows(&worker.db.pool).await;
    assert_eq!(rows[..rows.len() - 1], rows_before[..]);
    assert_eq!(rows.len(), rows_before.len() + 1);
    let ledger = ledger_keys(&worker.db.pool).await;
    assert_eq!(ledger.len(), ledger_before.len() + 1);
    assert!(ledger.contains(&format!("{}-s1", topics.input)));

    // Act: a worker with a new group id reads the partition again from the beginning
    // (events without eventId come back at the same offsets, hence the same keys).
    let db = worker.stop_keeping_db().await;
    topics.group = support::names::unique("replay.new-group");
    let worker = start_worker(db, &topics).await;
    let sentinel = json!({"eventId": format!("{}-s2", topics.input), "orderId": "sentinel-2",
                          "email": "sentinel-2@replay.test"});
    broker::send_events(&producer, &topics.input, Some(0), &[sentinel]).await;
    output
        .read_until(WAIT, "the second sentinel's record", |r| {
            published_order_ids(r).contains("sentinel-2")
        })
        .await;
    outbox_drained(&worker.db).await;
    let records_again = output.read_to_end(WAIT).await.to_vec();

    // Assert
    assert_eq!(
        records_again.len(),
        records.len() + 1,
        "re-read events published records: {:?}",
        &records_again[records.len()..]
    );
    let rows_again = contact_rows(&worker.db.pool).await;
    assert_eq!(rows_again[..rows.len()], rows[..]);
    assert_eq!(rows_again.len(), rows.len() + 1);
    assert_eq!(ledger_keys(&worker.db.pool).await.len(), ledger.len() + 1);
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_go_to_the_dead_letter_topic_and_the_partition_moves_on() {
    // Arrange: bad messages between good ones on one partition; the last one is bad.
    let brokers = kafka_brokers().await;
    let topics = Topics::unique("poison");
    topics.create(&brokers, 3).await;
    let worker = start_worker(TestDb::new().await, &topics).await;
    let good = |n: usize| {
        let event = json!({"eventId": format!("{}-good-{n}", topics.input),
                           "orderId": format!("good-{n}"), "email": format!("good{n}@poison.test")});
        Outgoing::event(&event)
    };
    let bad = |key: &str, value: Option<&str>, reason: &'static str| {
        let outgoing = Outgoing {
            partition: None,
            key: Some(key.as_bytes().to_vec()),
            value: value.map(|v| v.as_bytes().to_vec()),
            headers: vec![
                ("trace-id".to_owned(), format!("trace-{key}")),
                ("origin".to_owned(), "checkout".to_owned()),
            ],
        };
        (outgoing, Some(reason))
    };
    let messages: Vec<(Outgoing, Option<&str>)> = vec![
        (good(0), None),
        bad(
            "bad-1",
            Some(r#"{"email": "x@poison.test","#),
            "malformed_json",
        ),
        (good(1), None),
        bad("bad-3", Some(r#"{"email": 42}"#), "wrong_type"),
        bad("bad-4", Some(r#"{"phoneNumber": {"n": 1}}"#), "wrong_type"),
        bad("bad-5", Some(r#"{"orderId": "o-5"}"#), "no_identifier"),
        bad("bad-6", None, "malformed_json"),
        (good(2), None),
        bad(
            "bad-8",
            Some(r#"[{"email": "y@poison.test"}]"#),
            "wrong_type",
        ),
        bad(
            "bad-9",
            Some(r#"{"email": "not-an-email"}"#),
            "invalid_value",
        ),
    ];
    let outgoing: Vec<Outgoing> = messages
        .iter()
        .map(|(m, _)| m.clone().on_partition(0))
        .collect();

    // Act
    let coordinates = broker::send_all(&broker::producer(&brokers), &topics.input, &outgoing).await;
    let end = coordinates.last().unwrap().1 + 1;

    // Assert: the group's committed offset moves past the last (bad) message.
    eventually(
        WAIT,
        "the committed offset to pass the last message",
        || async {
            let committed = broker::committed_offsets(&brokers, &topics.group, &topics.input).await;
            (committed[0] == Some(end)).then_some(())
        },
    )
    .await;

    // Assert: every bad message is on the DLQ, as it was, plus the why and the where.
    let bad_count = messages.iter().filter(|(_, r)| r.is_some()).count();
    let mut dlq = TopicReader::open(&brokers, &topics.dlq).await;
    dlq.read_until(WAIT, "the dead letters", |r| r.len() >= bad_count)
        .await;
    let dead = dlq.read_to_end(WAIT).await.to_vec();
    assert_eq!(dead.len(), bad_count, "dead letters: {dead:?}");
    for ((message, reason), (_, offset)) in messages.iter().zip(&coordinates) {
        let Some(reason) = reason else { continue };
        let letter = dead
            .iter()
            .find(|d| d.header("dlq.source.offset") == Some(&offset.to_string()))
            .unwrap_or_else(|| panic!("no dead letter for offset {offset}"));
        assert_eq!(
            letter.key.as_deref().map(str::as_bytes),
            message.key.as_deref()
        );
        assert_eq!(letter.value, message.value, "the value of offset {offset}");
        let original: Vec<(String, Option<Vec<u8>>)> = message
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), Some(v.as_bytes().to_vec())))
            .collect();
        assert_eq!(
            letter.headers[..original.len()],
            original[..],
            "the original headers of offset {offset}"
        );
        assert_eq!(
            letter.header("dlq.reason"),
            Some(*reason),
            "offset {offset}"
        );
        assert!(letter.header("dlq.error").is_some_and(|e| !e.is_empty()));
        assert_eq!(
            letter.header("dlq.source.topic"),
            Some(topics.input.as_str())
        );
        assert_eq!(letter.header("dlq.source.partition"), Some("0"));
    }

    // Assert: every good event was applied and published, nothing else was.
    let good_keys: Vec<String> = (0..3)
        .map(|n| format!("{}-good-{n}", topics.input))
        .collect();
    assert_eq!(ledger_keys(&worker.db.pool).await, good_keys);
    assert_eq!(worker.db.count("SELECT count(*) FROM contact").await, 3);
    let mut output = TopicReader::open(&brokers, &topics.output).await;
    let expected: BTreeSet<String> = (0..3).map(|n| format!("good-{n}")).collect();
    output
        .read_until(WAIT, "the good events' records", |r| {
            published_order_ids(r) == expected
        })
        .await;
    worker.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_stream_loses_nothing() {
    // Arrange: a stream of overlapping identities waiting on three partitions.
    let brokers = kafka_brokers().await;
    let topics = Topics::unique("crash");
    topics.create(&brokers, 3).await;
    let db = TestDb::new().await;
    let workload = Workload::generate(4, 3000, 1500, "crash");
    let produced = workload
        .produce(&broker::producer(&brokers), &topics.input)
        .await;
    let keys = ledger_keys_of(&produced);
    // Small batches, so that the stream takes long enough to be interrupted.
    let env = service_env(
        &db,
        &topics,
        &brokers,
        &[("IR__RECONCILE__MAX_BATCH", "20")],
    );

    // Act: SIGKILL once part of the stream is applied, then start again.
    let mut first = Service::start("crash-1", &["run"], &env);
    wait_for_ledger(&db, keys.len() / 4, "a quarter of the events applied").await;
    first.kill();
    let at_kill = ledger_count(&db).await;
    assert!(
        at_kill < keys.len(),
        "the worker applied everything before it was killed; the test needs a longer stream"
    );
    let mut second = Service::start("crash-2", &["run"], &env);
    wait_for_ledger(&db, keys.len(), "every event applied after the restart").await;
    let output = read_whole_output(&brokers, &topics.output, &db, &workload.order_ids()).await;

    // Assert
    assert_stream_applied(&db, &workload, &keys, &output).await;
    stop_gracefully(&mut second, Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_exits_cleanly_and_loses_nothing() {
    // Arrange
    let brokers = kafka_brokers().await;
    let topics = Topics::unique("sigterm");
    topics.create(&brokers, 3).await;
    let db = TestDb::new().await;
    let workload = Workload::generate(5, 2000, 1000, "sigterm");
    let produced = workload
        .produce(&broker::producer(&brokers), &topics.input)
        .await;
    let keys = ledger_keys_of(&produced);
    let shutdown_timeout = Duration::from_secs(5);
    let env = service_env(
        &db,
        &topics,
        &brokers,
        &[
            ("IR__RECONCILE__MAX_BATCH", "20"),
            ("IR__WORKER__SHUTDOWN_TIMEOUT", "5s"),
        ],
    );
    let mut first = Service::start("sigterm-1", &["run"], &env);
    wait_for_ledger(&db, keys.len() / 4, "a quarter of the events applied").await;

    // Act
    stop_gracefully(&mut first, shutdown_timeout + Duration::from_secs(10)).await;

    // Assert: the committed offsets cover exactly the events applied, so that nothing
    // applied is delivered again and nothing unapplied is skipped.
    let applied: BTreeSet<String> = ledger_keys(&db.pool).await.into_iter().collect();
    assert!(
        applied.len() < keys.len(),
        "the worker applied everything before SIGTERM; the test needs a longer stream"
    );
    let committed = broker::committed_offsets(&brokers, &topics.group, &topics.input).await;
    let below_committed: BTreeSet<String> = produced
        .iter()
        .filter(|p| committed[p.partition as usize].is_some_and(|c| p.offset < c))
        .map(|p| p.key.clone())
        .collect();
    assert_eq!(
        applied.len(),
        below_committed.len(),
        "applied {} events, committed offsets cover {} (committed: {committed:?})",
        applied.len(),
        below_committed.len()
    );
    assert_eq!(applied, below_committed);

    // Act: start again and let it finish.
    let mut second = Service::start("sigterm-2", &["run"], &env);
    wait_for_ledger(&db, keys.len(), "every event applied after the restart").await;
    let output = read_whole_output(&brokers, &topics.output, &db, &workload.order_ids()).await;

    // Assert
    assert_stream_applied(&db, &workload, &keys, &output).await;
    stop_gracefully(&mut second, shutdown_timeout + Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_survives_a_postgresql_restart() {
    // Arrange: a PostgreSQL of this test's own, so that stopping it disturbs no other.
    let postgres = tokio::task::spawn_blocking(PrivatePostgres::start)
        .await
        .unwrap();
    let db = postgres.test_db().await;
    let brokers = kafka_brokers().await;
    let topics = Topics::unique("pg_restart");
    topics.create(&brokers, 3).await;
    let workload = Workload::generate(6, 1200, 600, "pg-restart");
    let (before, after) = workload.events.split_at(600);
    let producer = broker::producer(&brokers);
    let env = service_env(
        &db,
        &topics,
        &brokers,
        &[
            ("IR__WORKER__BACKOFF_MAX", "1s"),
            // Fail fast on a missing connection, so that the worker backs off soon.
            ("IR__DATABASE__ACQUIRE_TIMEOUT", "1s"),
        ],
    );
    let mut service = Service::start("pg-restart", &["run"], &env);
    let base_url = service.base_url().await;
    let mut produced = workload::produce_events(&producer, &topics.input, before).await;
    wait_for_ledger(
        &db,
        ledger_keys_of(&produced).len(),
        "the first half applied",
    )
    .await;

    // Act: stop PostgreSQL while events keep arriving.
    tokio::task::block_in_place(|| postgres.stop());
    produced.extend(workload::produce_events(&producer, &topics.input, after).await);
    eventually(WAIT, "the worker to notice and back off", || async {
        let unready = readiness(&base_url).await == Some(503);
        let retries = r#"identity_reconciler_retries_total{operation="reconcile"}"#;
        let retried = metric(&base_url, retries).await > 0.0;
        (unready && retried).then_some(())
    })
    .await;
    tokio::task::block_in_place(|| postgres.start_again());

    // Assert
    let keys = ledger_keys_of(&produced);
    wait_for_ledger(&db, keys.len(), "every event applied after the restart").await;
    let output = read_whole_output(&brokers, &topics.output, &db, &workload.order_ids()).await;
    assert_stream_applied(&db, &workload, &keys, &output).await;
    eventually(WAIT, "readiness again", || async {
        (readiness(&base_url).await == Some(200)).then_some(())
    })
    .await;
    stop_gracefully(&mut service, Duration::from_secs(30)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_survives_a_broker_restart() {
    // Arrange: a broker of this test's own, so that killing it disturbs no other.
    let mut broker = tokio::task::spawn_blocking(PrivateBroker::start)
        .await
        .unwrap();
    let brokers = broker.brokers();
    let topics = Topics::unique("broker_restart");
    topics.create(&brokers, 3).await;
    let db = TestDb::new().await;
    let mut workload = Workload::generate(7, 1200, 600, "broker-restart");
    let (before, after) = workload.events.split_at(600);
    let env = service_env(&db, &topics, &brokers, &[("IR__WORKER__BACKOFF_MAX", "1s")]);
    let mut service = Service::start("broker-restart", &["run"], &env);
    let base_url = service.base_url().await;
    let mut produced =
        workload::produce_events(&broker::producer(&brokers), &topics.input, before).await;
    let first_half: BTreeSet<String> = before.iter().map(|e| e.order_id.clone()).collect();
    wait_for_ledger(
        &db,
        ledger_keys_of(&produced).len(),
        "the first half applied",
    )
    .await;
    let mut output = TopicReader::open(&brokers, &topics.output).await;
    output
        .read_until(WAIT, "the first half's records", |r| {
            published_order_ids(r).is_superset(&first_half)
        })
        .await;
    drop(output);

    // Act: kill the broker; once the service notices, change an identity through the
    // sidecar (its record must wait in the outbox, not be lost); bring the broker back
    // and send the rest of the events.
    broker.kill();
    eventually(WAIT, "readiness to report the broker down", || async {
        (readiness(&base_url).await == Some(503)).then_some(())
    })
    .await;
    let known_email = before.iter().find_map(|e| e.email.clone()).unwrap();
    let new_phone = "99900011122";
    let response = reqwest::Client::new()
        .post(format!("{base_url}/identify"))
        .json(&json!({"email": known_email, "phoneNumber": new_phone}))
        .send()
        .await
        .expect("POST /identify while the broker is down");
    assert_eq!(response.status().as_u16(), 200);
    workload
        .http_inputs
        .push((Some(known_email), Some(new_phone.to_owned())));
    tokio::task::block_in_place(|| broker.start_again());
    produced
        .extend(workload::produce_events(&broker::producer(&brokers), &topics.input, after).await);

    // Assert
    let keys = ledger_keys_of(&produced);
    wait_for_ledger(&db, keys.len(), "every event applied after the restart").await;
    let output = read_whole_output(&brokers, &topics.output, &db, &workload.order_ids()).await;
    assert_stream_applied(&db, &workload, &keys, &output).await;
    assert!(
        output
            .iter()
            .map(Record::json)
            .any(|r| r["source"] == "http"
                && r["contact"]["phoneNumbers"]
                    .as_array()
                    .is_some_and(|phones| phones.contains(&json!(new_phone)))),
        "the change made while the broker was down was never published"
    );
    eventually(WAIT, "readiness again", || async {
        (readiness(&base_url).await == Some(200)).then_some(())
    })
    .await;
    stop_gracefully(&mut service, Duration::from_secs(30)).await;
}
