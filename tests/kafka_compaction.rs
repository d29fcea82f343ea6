//! The `identities` topic is meant to be log-compacted (docs/contract.md §6 v2): one current
//! record per key. After merges and an erasure, Apache Kafka's log cleaner must leave
//! exactly one record per live key (the current identity, or the `mergedInto` record
//! of an absorbed primary) and nothing at all for the erased person's keys.

mod support;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use support::broker::TopicAdmin;
use support::broker::{self, send_events};
use support::db::TestDb;
use support::eventually;
use support::names::Topics;
use support::processes::Service;
use support::readers::{Record, TopicReader};

const WAIT: Duration = Duration::from_secs(60);
const TOKEN: &str = "compaction-test-token";

/// The output topic, with a cleaner as eager as Kafka allows: segments roll after
/// 100 ms, any dirty share makes a log cleanable, tombstones go at the next cleaning.
async fn create_eagerly_compacted(brokers: &str, topic: &str) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let new = NewTopic::new(topic, 1, TopicReplication::Fixed(1))
        .set("cleanup.policy", "compact")
        .set("segment.ms", "100")
        .set("min.cleanable.dirty.ratio", "0.01")
        .set("max.compaction.lag.ms", "100")
        .set("delete.retention.ms", "0");
    let results = admin
        .create_topics(&[new], &AdminOptions::new())
        .await
        .expect("create the output topic");
    for result in results {
        result.expect("create the output topic");
    }
}

struct Client {
    http: reqwest::Client,
    base: String,
}

impl Client {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("the sidecar answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

/// The keys of `records`, each with how many records it has and whether the last
/// one has a value.
fn by_key(records: &[Record]) -> BTreeMap<String, (usize, bool)> {
    let mut keys: BTreeMap<String, (usize, bool)> = BTreeMap::new();
    for record in records {
        let entry = keys
            .entry(record.key.clone().expect("output records are keyed"))
            .or_default();
        entry.0 += 1;
        entry.1 = record.value.is_some();
    }
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compacted_identities_topic_keeps_one_record_per_live_key_and_none_for_the_erased() {
    // Arrange: the worker on an eagerly compacted output topic.
    let brokers = support::broker::kafka_brokers().await;
    let topics = Topics::unique("compaction");
    create_eagerly_compacted(&brokers, &topics.output).await;
    topics.create(&brokers, 1).await;
    let db = TestDb::new().await;
    let mut env = topics.env(&brokers);
    env.push(("DATABASE_URL".to_owned(), db.url.clone()));
    env.push(("IR__HTTP__ADMIN_TOKEN".to_owned(), TOKEN.to_owned()));
    let mut worker = Service::start("compaction", &["run"], &env);
    let client = Client {
        http: reqwest::Client::new(),
        base: worker.base_url().await,
    };

    // Act: the worked examples through Kafka (every key gets several records, and a
    // merge), then the erasure of Lorraine.
    let events = [
        json!({"eventId": "c-1", "email": "lorraine@hillvalley.edu", "phoneNumber": "123456"}),
        json!({"eventId": "c-2", "email": "mcfly@hillvalley.edu", "phoneNumber": "123456"}),
        json!({"eventId": "c-3", "email": "mcfly@hillvalley.edu"}),
        json!({"eventId": "c-4", "email": "george@hillvalley.edu", "phoneNumber": "919191"}),
        json!({"eventId": "c-5", "email": "biffsucks@hillvalley.edu", "phoneNumber": "717171"}),
        json!({"eventId": "c-6", "phoneNumber": "717171"}),
        json!({"eventId": "c-7", "email": "george@hillvalley.edu", "phoneNumber": "717171"}),
    ];
    send_events(&broker::producer(&brokers), &topics.input, None, &events).await;
    eventually(WAIT, "every event to be applied", || async {
        (db.count("SELECT count(*) FROM processed_event").await == events.len() as i64)
            .then_some(())
    })
    .await;
    let (_, lorraine) = client
        .call(
            reqwest::Method::GET,
            "/identify?email=lorraine@hillvalley.edu",
            None,
        )
        .await;
    let erased = lorraine["contact"]["primaryContactId"].to_string();
    let (_, george) = client
        .call(
            reqwest::Method::GET,
            "/identify?email=george@hillvalley.edu",
            None,
        )
        .await;
    let george_key = george["contact"]["primaryContactId"].to_string();
    let biff_key = george["contact"]["secondaryContactIds"][0].to_string();
    let (status, _) = client
        .call(
            reqwest::Method::POST,
            "/forget",
            Some(json!({"email": "lorraine@hillvalley.edu"})),
        )
        .await;
    assert_eq!(status, 200, "the erasure is refused");
    eventually(WAIT, "the outbox to drain", || async {
        (db.count("SELECT count(*) FROM outbox").await == 0).then_some(())
    })
    .await;

    // The cleaner compacts only closed segments: new identities (one record each, on
    // new keys) keep rolling the active one until the compacted log is clean.
    let mut rolls = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    let until = tokio::time::Instant::now() + Duration::from_secs(90);
    let keys = loop {
        tick.tick().await;
        rolls += 1;
        let (status, _) = client
            .call(
                reqwest::Method::POST,
                "/identify",
                Some(json!({"email": format!("roll-{rolls}@compaction.test")})),
            )
            .await;
        assert_eq!(status, 200);
        let mut reader = TopicReader::open(&brokers, &topics.output).await;
        let keys = by_key(reader.read_to_end(WAIT).await);
        if keys.values().all(|(count, _)| *count == 1) && !keys.contains_key(&erased) {
            break keys;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "the log was not compacted to one record per key (rolls: {rolls}): {keys:?}"
        );
    };

    // Assert: one record per live key, each with a value; nothing for Lorraine.
    let live: BTreeSet<&String> = keys.keys().collect();
    assert!(live.contains(&george_key), "George's identity is gone");
    assert!(live.contains(&biff_key), "Biff's mergedInto record is gone");
    assert!(
        keys.values().all(|(_, has_value)| *has_value),
        "a tombstone outlived compaction: {keys:?}"
    );
    let mut reader = TopicReader::open(&brokers, &topics.output).await;
    let records = reader.read_to_end(WAIT).await.to_vec();
    let biff = records
        .iter()
        .find(|r| r.key.as_deref() == Some(biff_key.as_str()))
        .unwrap()
        .json();
    assert_eq!(biff["mergedInto"].to_string(), george_key);
    eprintln!(
        "{} records left for {} keys after {rolls} segment rolls",
        records.len(),
        keys.len()
    );
    worker.terminate();
    assert!(worker
        .wait_exit(Duration::from_secs(30))
        .await
        .is_some_and(|s| s.success()));
}
