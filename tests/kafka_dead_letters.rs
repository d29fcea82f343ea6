//! Dead letters that never stall (docs/contract.md §6 v2), against real PostgreSQL and Apache
//! Kafka: a letter the DLQ topic cannot take whole is kept whole in the `dead_letter`
//! table, a truncated copy goes to the DLQ, and every partition moves on without a
//! pause, also after a restart that reads the letter again. And a reused `eventId`
//! with other content becomes a dead letter `event_id_conflict`.

mod support;

use identity_reconciler::Mode;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;
use serde_json::json;
use std::time::Duration;
use support::app::TestApp;
use support::broker::TopicAdmin;
use support::broker::{self, kafka_brokers, Outgoing};
use support::db::TestDb;
use support::eventually;
use support::metrics::{metric, readiness};
use support::names::Topics;
use support::processes::Service;
use support::readers::{Record, TopicReader};
use tokio::time::Instant;

const WAIT: Duration = Duration::from_secs(60);
/// Below the broker's default limit (1,048,588 bytes), so the input topic takes it;
/// with the `dlq.*` headers the letter is over the producer's 1,000,000.
const HUGE: usize = 999_900;
const PARTITIONS: i32 = 3;

fn service_env(db: &TestDb, topics: &Topics, brokers: &str) -> Vec<(String, String)> {
    let mut env = topics.env(brokers);
    env.push(("DATABASE_URL".to_owned(), db.url.clone()));
    env
}

/// Creates the DLQ topic with `max.message.bytes` = `limit`, before the service
/// creates the other topics.
async fn create_small_dlq(brokers: &str, topic: &str, limit: usize) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let limit = limit.to_string();
    let topic = NewTopic::new(topic, PARTITIONS, TopicReplication::Fixed(1))
        .set("max.message.bytes", &limit);
    let results = admin
        .create_topics(&[topic], &AdminOptions::new())
        .await
        .unwrap();
    for result in results {
        result.expect("create the small DLQ topic");
    }
}

fn invalid(size: usize, key: &str) -> Outgoing {
    Outgoing {
        partition: Some(0),
        key: Some(key.as_bytes().to_vec()),
        value: Some(vec![b'x'; size]),
        headers: vec![("trace-id".to_owned(), format!("trace-{key}"))],
    }
}

fn good_events(round: &str) -> Vec<Outgoing> {
    (0..PARTITIONS)
        .flat_map(|p| {
            (0..3).map(move |n| {
                let event = json!({"eventId": format!("{round}-{p}-{n}"), "orderId": format!("{round}-{p}-{n}"),
                                   "email": format!("{round}.{p}.{n}@dlq.test")});
                Outgoing::event(&event).on_partition(p)
            })
        })
        .collect()
}

/// Waits for `count` contacts whose email ends with `@dlq.test` and starts with
/// `round`, checking all along that the worker neither pauses nor reports unready;
/// returns how long it took.
async fn applied_without_a_pause(db: &TestDb, base_url: &str, round: &str, count: i64) -> Duration {
    let started = Instant::now();
    let pattern = format!("{round}.%@dlq.test");
    loop {
        let applied: i64 = sqlx::query_scalar("SELECT count(*) FROM contact WHERE email LIKE $1")
            .bind(&pattern)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        let paused = metric(base_url, "identity_reconciler_partitions_paused").await;
        assert_eq!(paused, 0.0, "the worker paused its partitions");
        let retries = metric(base_url, "identity_reconciler_retries_total").await;
        assert_eq!(retries, 0.0, "the worker retried something");
        if applied == count {
            // Ready once it has made progress (not before the first assignment).
            assert_eq!(readiness(base_url).await, Some(200), "/readyz");
            return started.elapsed();
        }
        assert!(
            started.elapsed() < WAIT,
            "{applied} of {count} events applied"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn kept_letters(
    db: &TestDb,
) -> Vec<(i32, i64, Option<Vec<u8>>, Option<Vec<u8>>, String, bool)> {
    sqlx::query_as(
        "SELECT source_partition, source_offset, key, value, reason, truncated_copy \
         FROM dead_letter ORDER BY source_offset",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

fn copies_of(records: &[Record], offset: i64) -> Vec<&Record> {
    records
        .iter()
        .filter(|r| r.header("dlq.source.offset") == Some(&offset.to_string()))
        .collect()
}

/// The scenario of both tests: letters of `sizes` on partition 0, then good events on
/// every partition; a second instance with a new group reads everything again.
async fn oversized_letters_never_stall(dlq_limit: Option<usize>, sizes: &[usize]) {
    // Arrange
    let brokers = kafka_brokers().await;
    let topics = Topics::unique("dlqsize");
    if let Some(limit) = dlq_limit {
        create_small_dlq(&brokers, &topics.dlq, limit).await;
    }
    topics.create(&brokers, PARTITIONS).await;
    let db = TestDb::new().await;
    let producer = broker::producer(&brokers);
    let letters: Vec<Outgoing> = sizes
        .iter()
        .enumerate()
        .map(|(i, &size)| invalid(size, &format!("huge-{i}")))
        .collect();
    let letter_coordinates = broker::send_all(&producer, &topics.input, &letters).await;
    broker::send_all(&producer, &topics.input, &good_events("first")).await;

    // Act
    let mut service = Service::start("dlqsize", &["run"], &service_env(&db, &topics, &brokers));
    let base_url = service.base_url().await;

    // Assert: every good event applied within seconds, no pause, no retry.
    let took = applied_without_a_pause(&db, &base_url, "first", 9).await;
    assert!(took < Duration::from_secs(30), "took {took:?}");
    eprintln!("good events applied {took:?} after the service listened");

    // Assert: each letter whole in the table, a truncated copy on the DLQ topic.
    let kept = eventually(WAIT, "the letters in dead_letter", || async {
        let kept = kept_letters(&db).await;
        (kept.len() == sizes.len() && kept.iter().all(|k| k.5)).then_some(kept)
    })
    .await;
    let mut dlq = TopicReader::open(&brokers, &topics.dlq).await;
    dlq.read_until(WAIT, "a truncated copy of every letter", |r| {
        letter_coordinates
            .iter()
            .all(|(_, offset)| !copies_of(r, *offset).is_empty())
    })
    .await;
    for ((letter, (partition, offset)), stored) in
        letters.iter().zip(&letter_coordinates).zip(&kept)
    {
        assert_eq!((stored.0, stored.1), (*partition, *offset));
        assert_eq!(stored.2, letter.key);
        assert_eq!(stored.3, letter.value, "the whole value is kept");
        assert_eq!(stored.4, "malformed_json");
        let copy = copies_of(&dlq.records, *offset)[0];
        assert_eq!(copy.header("dlq.truncated"), Some("true"));
        assert_eq!(copy.header("dlq.reason"), Some("malformed_json"));
        assert_eq!(
            copy.header("dlq.original.value.bytes"),
            Some(&*letter.value.as_ref().unwrap().len().to_string())
        );
        let value = copy.value.as_deref().unwrap();
        assert_eq!(value.len(), 4096);
        assert_eq!(value, &letter.value.as_deref().unwrap()[..4096]);
    }
    assert_eq!(
        metric(&base_url, "identity_reconciler_dead_letter_outcomes_total").await,
        sizes.len() as f64
    );
    service.kill();

    // Act: a restart that reads everything again (a new group), then new events.
    let mut again_topics = topics.clone();
    again_topics.group = format!("{}.again", topics.group);
    let mut again = Service::start(
        "dlqsize-again",
        &["run"],
        &service_env(&db, &again_topics, &brokers),
    );
    let base_url = again.base_url().await;
    broker::send_all(&producer, &topics.input, &good_events("second")).await;

    // Assert: the letters do not block it either, and are kept once.
    let took = applied_without_a_pause(&db, &base_url, "second", 9).await;
    eprintln!("after the restart, new events applied {took:?} after the service listened");
    assert_eq!(kept_letters(&db).await.len(), sizes.len());
    let end = letter_coordinates.last().unwrap().1 + 1 + 3;
    eventually(WAIT, "the new group's offset past the letters", || async {
        let committed =
            broker::committed_offsets(&brokers, &again_topics.group, &topics.input).await;
        (committed[0].is_some_and(|c| c >= end)).then_some(())
    })
    .await;
    again.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_letter_over_the_producers_size_limit_is_kept_whole_and_never_stalls() {
    oversized_letters_never_stall(None, &[HUGE]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dlq_topic_with_a_small_size_limit_gets_truncated_copies_and_never_stalls() {
    // 20,000 bytes: accepted by librdkafka, refused by the topic (max.message.bytes).
    oversized_letters_never_stall(Some(10_000), &[HUGE, 20_000]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reused_event_id_with_other_content_becomes_one_dead_letter() {
    // Arrange
    let brokers = kafka_brokers().await;
    let topics = Topics::unique("conflict");
    topics.create(&brokers, PARTITIONS).await;
    let worker = TestApp::spawn_on(TestDb::new().await, Mode::Run, |s| {
        topics.apply(s, &brokers)
    })
    .await;
    let id = format!("{}-dup-X", topics.input);
    let events = [
        json!({"eventId": id, "email": "a@conflict.test"}),
        // A producer's retry: the same content.
        json!({"eventId": id, "email": "A@conflict.test"}),
        json!({"eventId": id, "email": "b@conflict.test", "phoneNumber": "5550003"}),
        // The colliding-looking eventId, then a plain event at that very offset key.
        json!({"eventId": format!("{}/1/0", topics.input), "email": "lookalike@conflict.test"}),
    ];
    let producer = broker::producer(&brokers);
    let coordinates = broker::send_events(&producer, &topics.input, Some(0), &events).await;
    broker::send_events(
        &producer,
        &topics.input,
        Some(1),
        &[json!({"email": "plain@conflict.test"})],
    )
    .await;

    // Assert: exactly one dead letter, the third event, with the reason.
    let mut dlq = TopicReader::open(&brokers, &topics.dlq).await;
    dlq.read_until(WAIT, "the conflict's dead letter", |r| !r.is_empty())
        .await;
    eventually(WAIT, "every other event applied", || async {
        (worker.db.count("SELECT count(*) FROM contact").await == 3).then_some(())
    })
    .await;
    let dead = dlq.read_to_end(WAIT).await.to_vec();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].header("dlq.reason"), Some("event_id_conflict"));
    assert_eq!(
        dead[0].header("dlq.source.offset"),
        Some(&*coordinates[2].1.to_string())
    );
    assert_eq!(
        dead[0].value.as_deref(),
        Some(events[2].to_string().as_bytes())
    );
    let emails: Vec<String> = sqlx::query_scalar("SELECT email FROM contact ORDER BY email")
        .fetch_all(&worker.db.pool)
        .await
        .unwrap();
    assert_eq!(
        emails,
        [
            "a@conflict.test",
            "lookalike@conflict.test",
            "plain@conflict.test"
        ]
    );
    assert!(
        metric(
            &worker.base_url,
            "identity_reconciler_event_id_conflicts_total"
        )
        .await
            >= 1.0
    );
    worker.stop().await;
}

/// `identity-reconciler <args>` to its end; its standard output.
fn cli(args: &[&str], env: &[(String, String)]) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_identity-reconciler"))
        .args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .env("RUST_LOG", "warn")
        .output()
        .expect("run the command");
    assert!(
        output.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_listed_and_redriven_in_source_order() {
    // Arrange: small letters on partitions 0 and 1, one too large for the DLQ topic.
    let brokers = kafka_brokers().await;
    let topics = Topics::unique("redrive");
    create_small_dlq(&brokers, &topics.dlq, 10_000).await;
    topics.create(&brokers, PARTITIONS).await;
    let db = TestDb::new().await;
    let env = service_env(&db, &topics, &brokers);
    let letters: Vec<Outgoing> = vec![
        invalid(10, "a"),
        invalid(20_000, "big"),
        invalid(30, "c"),
        Outgoing {
            partition: Some(1),
            ..invalid(40, "d")
        },
        Outgoing {
            partition: Some(1),
            ..invalid(50, "e")
        },
    ];
    let producer = broker::producer(&brokers);
    let coordinates = broker::send_all(&producer, &topics.input, &letters).await;
    let mut service = Service::start("redrive", &["run"], &env);
    eventually(WAIT, "the letters dead-lettered", || async {
        let committed = broker::committed_offsets(&brokers, &topics.group, &topics.input).await;
        (committed[0] == Some(3) && committed[1] == Some(2)).then_some(())
    })
    .await;
    service.terminate();
    service.wait_exit(WAIT).await.expect("the service stops");

    // Act
    let listed = cli(&["dlq", "list"], &env);
    let listed_db = cli(&["dlq", "list", "--from-db"], &env);
    let none_since = cli(&["dlq", "list", "--since", "2999-01-01T00:00:00Z"], &env);
    let redriven = cli(&["dlq", "redrive", "--since", "1h"], &env);

    // Assert: the list names every letter once; the table has the big one.
    assert_eq!(listed.lines().count(), letters.len(), "{listed}");
    assert_eq!(listed_db.lines().count(), 1, "{listed_db}");
    assert!(listed_db.contains("\"valueBytes\":20000"), "{listed_db}");
    assert_eq!(none_since, "");
    assert!(redriven.contains("redrove 5"), "{redriven}");
    // Assert: each letter is back on its source partition, whole, in source order.
    let mut input = TopicReader::open(&brokers, &topics.input).await;
    input
        .read_until(WAIT, "the redriven letters", |r| {
            r.iter()
                .filter(|r| r.header("dlq.redriven.from").is_some())
                .count()
                == letters.len()
        })
        .await;
    for partition in [0, 1] {
        let redriven: Vec<&Record> = input
            .records
            .iter()
            .filter(|r| r.partition == partition && r.header("dlq.redriven.from").is_some())
            .collect();
        let expected: Vec<(String, Option<Vec<u8>>)> = letters
            .iter()
            .zip(&coordinates)
            .filter(|(_, (p, _))| *p == partition)
            .map(|(l, (p, o))| (format!("{}/{p}/{o}", topics.input), l.value.clone()))
            .collect();
        let got: Vec<(String, Option<Vec<u8>>)> = redriven
            .iter()
            .map(|r| {
                (
                    r.header("dlq.redriven.from").unwrap().to_owned(),
                    r.value.clone(),
                )
            })
            .collect();
        assert_eq!(got, expected, "partition {partition}");
        assert!(
            redriven.iter().all(|r| r.header("trace-id").is_some()),
            "original headers kept"
        );
        assert!(redriven.iter().all(|r| r.header("dlq.reason").is_none()));
    }
}
