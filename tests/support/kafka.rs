//! Kafka helpers for the pipeline tests: the topics of one test, a producer of JSON
//! events, readers of whole topics from the beginning, the committed offsets of a
//! group, the service as a child process, and a seeded workload together with the
//! checks every crash test ends with.
//!
//! Readers never join a group and never commit: they assign every partition from the
//! beginning, so they see exactly what a new downstream consumer would see.

use super::model::{database_clusters, Model};
use super::{assert_invariants, unique, TestDb};
use futures::FutureExt;
use identity_reconciler::config::Settings;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::consumer::{BaseConsumer, Consumer, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::message::BorrowedMessage;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;
use tokio::time::Instant;

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// The input, output and dead-letter topics and the consumer group of one test.
#[derive(Clone, Debug)]
pub struct Topics {
    pub input: String,
    pub output: String,
    pub dlq: String,
    pub group: String,
}

impl Topics {
    pub fn unique(prefix: &str) -> Topics {
        let base = unique(prefix);
        Topics {
            input: format!("{base}.in"),
            output: format!("{base}.out"),
            dlq: format!("{base}.dlq"),
            group: format!("{base}.group"),
        }
    }

    /// Points `settings` at these topics, this group and `brokers`.
    pub fn apply(&self, settings: &mut Settings, brokers: &str) {
        settings.kafka.brokers = brokers.to_owned();
        settings.kafka.input_topic = self.input.clone();
        settings.kafka.output_topic = self.output.clone();
        settings.kafka.dlq_topic = self.dlq.clone();
        settings.kafka.group_id = self.group.clone();
    }

    pub fn names(&self) -> [&str; 3] {
        [&self.input, &self.output, &self.dlq]
    }

    /// The same, as environment variables of a child process.
    pub fn env(&self, brokers: &str) -> Vec<(String, String)> {
        [
            ("KAFKA_BROKERS", brokers),
            ("KAFKA_INPUT_TOPIC", &self.input),
            ("KAFKA_OUTPUT_TOPIC", &self.output),
            ("KAFKA_DLQ_TOPIC", &self.dlq),
            ("KAFKA_GROUP_ID", &self.group),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// Creates the three topics with `partitions` partitions each (a test may want to
    /// produce before the service starts).
    pub async fn create(&self, brokers: &str, partitions: i32) {
        self.create_replicated(brokers, partitions, -1).await;
    }

    /// The same, each partition on `replication` brokers (-1: the broker's default).
    pub async fn create_replicated(&self, brokers: &str, partitions: i32, replication: i32) {
        let mut settings = Settings::load(None).unwrap();
        self.apply(&mut settings, brokers);
        settings.kafka.topic_partitions = partitions;
        settings.kafka.topic_replication = replication;
        identity_reconciler::worker::create_missing_topics(&settings.kafka, brokers)
            .await
            .expect("create the test's topics");
    }
}

/// Settings (as environment variables) under which the service's clusters are the
/// model's: the model knows no caps and no quarantine.
pub fn unguarded_env() -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = ["MAX_EMAILS", "MAX_PHONES", "MAX_CONTACTS"]
        .iter()
        .map(|cap| {
            (
                format!("IR__RECONCILE__LIMITS__{cap}"),
                "1000000".to_owned(),
            )
        })
        .collect();
    env.push((
        "IR__RECONCILE__QUARANTINE__MAX_COUNTERPARTS".to_owned(),
        "0".to_owned(),
    ));
    env
}

/// An idempotent producer, so that records of one partition keep their send order.
pub fn producer(brokers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "5")
        .set("message.timeout.ms", "120000")
        .create()
        .expect("create a producer")
}

/// A producer that fills large batches (100 ms linger), as busy upstream producers do:
/// many events share one record batch, so offsets committed mid-stream fall inside
/// batches and a consumer that resumes must start reading in the middle of one.
pub fn batching_producer(brokers: &str) -> FutureProducer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("linger.ms", "100")
        .set("batch.size", "1000000")
        .set("batch.num.messages", "10000")
        .set("message.timeout.ms", "120000")
        .create()
        .expect("create a producer")
}

/// One record to send; the partition is the partitioner's choice unless given.
#[derive(Clone, Debug, Default)]
pub struct Outgoing {
    pub partition: Option<i32>,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, String)>,
}

impl Outgoing {
    /// A JSON event keyed by its `eventId` (when it has one).
    pub fn event(event: &Value) -> Outgoing {
        Outgoing {
            key: event
                .get("eventId")
                .and_then(Value::as_str)
                .map(|id| id.as_bytes().to_vec()),
            value: Some(event.to_string().into_bytes()),
            ..Outgoing::default()
        }
    }

    pub fn on_partition(mut self, partition: i32) -> Outgoing {
        self.partition = Some(partition);
        self
    }
}

/// Sends `records` in order (pipelined) and waits for every acknowledgement; returns
/// the (partition, offset) of each.
pub async fn send_all(
    producer: &FutureProducer,
    topic: &str,
    records: &[Outgoing],
) -> Vec<(i32, i64)> {
    let mut deliveries = Vec::with_capacity(records.len());
    for outgoing in records {
        let mut headers = OwnedHeaders::new();
        for (key, value) in &outgoing.headers {
            headers = headers.insert(Header {
                key,
                value: Some(value),
            });
        }
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(headers);
        if let Some(partition) = outgoing.partition {
            record = record.partition(partition);
        }
        if let Some(key) = &outgoing.key {
            record = record.key(key);
        }
        if let Some(value) = &outgoing.value {
            record = record.payload(value);
        }
        deliveries.push(
            producer
                .send_result(record)
                .map_err(|(e, _)| e)
                .expect("enqueue a record"),
        );
    }
    let mut coordinates = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        let delivered = delivery
            .await
            .expect("the producer is alive")
            .map_err(|(e, _)| e)
            .expect("the broker acknowledges the record");
        coordinates.push((delivered.partition, delivered.offset));
    }
    coordinates
}

/// JSON events keyed by their `eventId`, all to `partition` when given.
pub async fn send_events(
    producer: &FutureProducer,
    topic: &str,
    partition: Option<i32>,
    events: &[Value],
) -> Vec<(i32, i64)> {
    let records: Vec<Outgoing> = events
        .iter()
        .map(|e| Outgoing {
            partition,
            ..Outgoing::event(e)
        })
        .collect();
    send_all(producer, topic, &records).await
}

/// A record as read back from a topic.
#[derive(Clone, Debug)]
pub struct Record {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Record {
    pub fn json(&self) -> Value {
        serde_json::from_slice(self.value.as_deref().expect("the record has a value"))
            .expect("the record's value is JSON")
    }

    /// The last header called `name`, as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .and_then(|(_, v)| v.as_deref())
            .map(|v| std::str::from_utf8(v).expect("a text header"))
    }

    /// Every header called `name`, in order.
    pub fn headers_named(&self, name: &str) -> Vec<Option<&[u8]>> {
        self.headers
            .iter()
            .filter(|(k, _)| k == name)
            .map(|(_, v)| v.as_deref())
            .collect()
    }
}

/// The number of partitions of `topic`, waiting until the broker knows the topic.
pub async fn partition_count(brokers: &str, topic: &str) -> i32 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("create a metadata client");
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let until = std::time::Instant::now() + METADATA_TIMEOUT;
        loop {
            if let Ok(metadata) = consumer.fetch_metadata(Some(&topic), METADATA_TIMEOUT) {
                let count = metadata
                    .topics()
                    .iter()
                    .find(|t| t.name() == topic)
                    .map_or(0, |t| t.partitions().len());
                if count > 0 {
                    return count as i32;
                }
            }
            assert!(
                std::time::Instant::now() < until,
                "topic {topic} does not exist"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .unwrap()
}

fn record_of(received: KafkaResult<BorrowedMessage<'_>>) -> KafkaResult<Record> {
    let message = received?;
    Ok(Record {
        partition: message.partition(),
        offset: message.offset(),
        key: message
            .key()
            .map(|k| String::from_utf8_lossy(k).into_owned()),
        value: message.payload().map(<[u8]>::to_vec),
        headers: message
            .headers()
            .map(|headers| {
                headers
                    .iter()
                    .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                    .collect()
            })
            .unwrap_or_default(),
    })
}

/// Reads a whole topic from the beginning, keeping every record it has seen.
pub struct TopicReader {
    consumer: StreamConsumer,
    topic: String,
    partitions: i32,
    pub records: Vec<Record>,
    /// Next offset to read, per partition.
    next: HashMap<i32, i64>,
}

impl TopicReader {
    pub async fn open(brokers: &str, topic: &str) -> TopicReader {
        let partitions = partition_count(brokers, topic).await;
        let consumer: StreamConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            // Needed by librdkafka, never joined: partitions are assigned by hand.
            .set("group.id", unique("reader"))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .create()
            .expect("create a reader");
        let mut assignment = TopicPartitionList::new();
        for partition in 0..partitions {
            assignment
                .add_partition_offset(topic, partition, Offset::Beginning)
                .unwrap();
        }
        consumer
            .assign(&assignment)
            .expect("assign every partition");
        TopicReader {
            consumer,
            topic: topic.to_owned(),
            partitions,
            records: Vec::new(),
            next: HashMap::new(),
        }
    }

    /// Waits a little for a record, then takes every record already fetched (so that
    /// callers check their predicates once per batch, not once per record).
    async fn poll_once(&mut self) {
        let waited = tokio::time::timeout(Duration::from_millis(200), self.consumer.recv()).await;
        let Ok(first) = waited else { return };
        let mut batch = vec![record_of(first)];
        while batch.len() < 10_000 {
            match self.consumer.recv().now_or_never() {
                Some(received) => batch.push(record_of(received)),
                None => break,
            }
        }
        for received in batch {
            match received {
                Ok(record) => {
                    self.next.insert(record.partition, record.offset + 1);
                    self.records.push(record);
                }
                Err(e) => eprintln!("reader of {}: {e}", self.topic),
            }
        }
    }

    /// Reads until `done` holds for the records read so far, or panics after `deadline`.
    pub async fn read_until(
        &mut self,
        deadline: Duration,
        what: &str,
        mut done: impl FnMut(&[Record]) -> bool,
    ) -> &[Record] {
        let until = Instant::now() + deadline;
        while !done(&self.records) {
            assert!(
                Instant::now() < until,
                "timed out waiting for {what} on {} ({} records read; next offsets {:?})",
                self.topic,
                self.records.len(),
                self.next
            );
            self.poll_once().await;
        }
        &self.records
    }

    /// Reads every record the topic holds now.
    pub async fn read_to_end(&mut self, deadline: Duration) -> &[Record] {
        let mut ends = HashMap::new();
        for partition in 0..self.partitions {
            let (low, high) = tokio::task::block_in_place(|| {
                self.consumer
                    .fetch_watermarks(&self.topic, partition, METADATA_TIMEOUT)
            })
            .expect("fetch the watermarks");
            if high > low {
                ends.insert(partition, high);
            }
        }
        let until = Instant::now() + deadline;
        loop {
            // A transactional producer's commit markers take offsets too (the last one
            // of a partition is a marker, never delivered): the consumer's position
            // passes them, the last record's offset does not.
            let positions: HashMap<i32, i64> = self
                .consumer
                .position()
                .map(|list| {
                    list.elements_for_topic(&self.topic)
                        .iter()
                        .filter_map(|e| Some((e.partition(), e.offset().to_raw()?)))
                        .collect()
                })
                .unwrap_or_default();
            let behind = ends
                .iter()
                .filter(|(p, high)| {
                    let next = self.next.get(p).copied().unwrap_or(0);
                    next.max(positions.get(p).copied().unwrap_or(0)) < **high
                })
                .count();
            if behind == 0 {
                return &self.records;
            }
            assert!(
                Instant::now() < until,
                "timed out reading {} to its end ({behind} partitions behind)",
                self.topic
            );
            self.poll_once().await;
        }
    }
}

/// The offsets `group` has committed on `topic`, per partition (`None`: nothing yet).
pub async fn committed_offsets(brokers: &str, group: &str, topic: &str) -> Vec<Option<i64>> {
    try_committed_offsets(brokers, group, topic)
        .await
        .expect("fetch the committed offsets")
}

/// The same, or the broker's error (e.g. while the group coordinator moves).
pub async fn try_committed_offsets(
    brokers: &str,
    group: &str,
    topic: &str,
) -> KafkaResult<Vec<Option<i64>>> {
    let partitions = partition_count(brokers, topic).await;
    committed_offsets_of(brokers, group, topic, partitions).await
}

async fn committed_offsets_of(
    brokers: &str,
    group: &str,
    topic: &str,
    partitions: i32,
) -> KafkaResult<Vec<Option<i64>>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        // Only reads the group's offsets: never subscribes, so never joins the group.
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .create()
        .expect("create an offsets client");
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut list = TopicPartitionList::new();
        for partition in 0..partitions {
            list.add_partition(&topic, partition);
        }
        let committed = consumer.committed_offsets(list, METADATA_TIMEOUT)?;
        Ok((0..partitions)
            .map(
                |p| match committed.find_partition(&topic, p).map(|e| e.offset()) {
                    Some(Offset::Offset(offset)) => Some(offset),
                    _ => None,
                },
            )
            .collect())
    })
    .await
    .unwrap()
}

/// The §4 `contact` object of the identity whose primary is `primary`, built from the
/// rows (not by the service's code): primary first, then by creation.
pub async fn database_identity(pool: &sqlx::PgPool, primary: i64) -> Value {
    let rows: Vec<(i64, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT id, email, phone_number FROM contact WHERE deleted_at IS NULL \
         AND (id = $1 OR linked_id = $1) ORDER BY id <> $1, created_at, id",
    )
    .bind(primary)
    .fetch_all(pool)
    .await
    .unwrap();
    let mut emails: Vec<String> = Vec::new();
    let mut phones: Vec<String> = Vec::new();
    for (_, email, phone) in &rows {
        if let Some(e) = email.as_ref().filter(|e| !emails.contains(e)) {
            emails.push(e.clone());
        }
        if let Some(p) = phone.as_ref().filter(|p| !phones.contains(p)) {
            phones.push(p.clone());
        }
    }
    json!({
        "primaryContatctId": primary,
        "primaryContactId": primary,
        "emails": emails,
        "phoneNumbers": phones,
        "secondaryContactIds": rows.iter().skip(1).map(|r| r.0).collect::<Vec<_>>(),
    })
}

/// The contact rows without their timestamps, in id order.
pub async fn contact_rows(
    pool: &sqlx::PgPool,
) -> Vec<(i64, Option<String>, Option<String>, Option<i64>, String)> {
    sqlx::query_as(
        "SELECT id, email, phone_number, linked_id, link_precedence FROM contact \
         WHERE deleted_at IS NULL ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

pub async fn ledger_keys(pool: &sqlx::PgPool) -> Vec<String> {
    sqlx::query_scalar("SELECT key FROM processed_event ORDER BY key")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// The service binary as a child process; its log goes to a file that is printed if
/// the test fails and deleted if it passes.
pub struct Service {
    child: Child,
    name: String,
    pub log: PathBuf,
}

impl Service {
    /// `identity-reconciler <args>` with `env` on top of the test's environment, the
    /// HTTP sidecar on a random port.
    pub fn start(name: &str, args: &[&str], env: &[(String, String)]) -> Service {
        let log = std::env::temp_dir().join(format!("{}.log", unique(name)));
        let file = std::fs::File::create(&log).expect("create the service's log file");
        // A killed member keeps its partitions until its session expires; the default
        // 45 s would dominate the crash tests' run time. The drain timeout must stay
        // below the session timeout (checked at start).
        let config = log.with_extension("toml");
        std::fs::write(
            &config,
            "[worker]\ndrain_timeout = \"3s\"\n\n[kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"1000\"\n",
        )
        .expect("write the service's config file");
        let child = Command::new(env!("CARGO_BIN_EXE_identity-reconciler"))
            .arg("--config")
            .arg(&config)
            .args(args)
            .env("HTTP_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", "info,rdkafka=warn,sqlx=warn")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("start the service binary");
        Service {
            child,
            name: name.to_owned(),
            log,
        }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(&self.log) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }

    /// `http://addr` of the sidecar, once the log says it listens.
    pub async fn base_url(&mut self) -> String {
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let text = self.log_text();
            let addr = text
                .lines()
                .filter(|l| l.contains("HTTP sidecar listening"))
                .find_map(|l| l.split("addr=").nth(1))
                .and_then(|rest| rest.split_whitespace().next());
            if let Some(addr) = addr {
                return format!("http://{addr}");
            }
            assert!(
                Instant::now() < until,
                "{} never listened; log:\n{text}",
                self.name
            );
            assert!(
                !self.has_exited(),
                "{} exited at start; log:\n{text}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn has_exited(&mut self) -> bool {
        self.child.try_wait().expect("poll the child").is_some()
    }

    /// SIGKILL: no chance to commit, flush or clean up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM: the graceful shutdown path.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {} failed", self.id());
    }

    /// Waits for the process to exit; `None` if it is still running after `deadline`.
    pub async fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + deadline;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the child") {
                return Some(status);
            }
            if Instant::now() >= until {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if std::thread::panicking() {
            print_broker_logs();
            let text = self.log_text();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(60)..].join("\n");
            eprintln!(
                "--- last lines of {} ({}):\n{tail}",
                self.name,
                self.log.display()
            );
        }
        if self.child.try_wait().ok().flatten().is_none() {
            self.kill();
        }
        // Kept (and named above) when the test fails; otherwise nobody will read it.
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
            let _ = std::fs::remove_file(self.log.with_extension("toml"));
        }
    }
}

/// The last lines of each Kafka node's log (`scripts/services.sh` writes them to
/// `$IR_SERVICES_DIR/kafka-ID.log`), once per test process, when a test fails.
pub fn print_broker_logs() {
    static PRINTED: std::sync::Once = std::sync::Once::new();
    PRINTED.call_once(|| {
        let Ok(dir) = std::env::var("IR_SERVICES_DIR") else {
            return;
        };
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        let mut logs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        logs.sort();
        for log in logs {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            eprintln!("--- last lines of {}:\n{tail}", log.display());
        }
    });
}

/// Sums the samples of a Prometheus metric (all label sets) from `/metrics`.
pub async fn metric(base_url: &str, name: &str) -> f64 {
    let text = reqwest::get(format!("{base_url}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `GET /readyz` status code, or `None` when the sidecar does not answer.
pub async fn readiness(base_url: &str) -> Option<u16> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    client
        .get(format!("{base_url}/readyz"))
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

/// One generated order event, and its normalised identifiers for the model.
#[derive(Clone, Debug)]
pub struct Event {
    pub value: Value,
    pub event_id: Option<String>,
    pub order_id: String,
    pub email: Option<String>,
    pub phone: Option<String>,
}

/// Where an event landed, and so its ledger key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Produced {
    pub key: String,
    pub partition: i32,
    pub offset: i64,
}

/// Produces `events` (keyed by `eventId` where there is one), in order.
pub async fn produce_events(
    producer: &FutureProducer,
    topic: &str,
    events: &[Event],
) -> Vec<Produced> {
    let records: Vec<Outgoing> = events.iter().map(|e| Outgoing::event(&e.value)).collect();
    let coordinates = send_all(producer, topic, &records).await;
    events
        .iter()
        .zip(coordinates)
        .map(|(e, (partition, offset))| Produced {
            key: e
                .event_id
                .clone()
                .unwrap_or_else(|| format!("{topic}/{partition}/{offset}")),
            partition,
            offset,
        })
        .collect()
}

/// Produces `events` as a steady load in the background: equal slices, one a second,
/// over `seconds`. The task returns where each event landed.
pub fn paced_load(
    brokers: &str,
    topic: &str,
    events: &[Event],
    seconds: usize,
) -> tokio::task::JoinHandle<Vec<Produced>> {
    let (brokers, topic, events) = (brokers.to_owned(), topic.to_owned(), events.to_vec());
    tokio::spawn(async move {
        let producer = producer(&brokers);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut produced: Vec<Produced> = Vec::new();
        for slice in events.chunks(events.len().div_ceil(seconds).max(1)) {
            tick.tick().await;
            produced.extend(produce_events(&producer, &topic, slice).await);
        }
        produced
    })
}

/// Waits until the ledger holds `keys` and the outbox is empty, then reads the whole
/// output topic once it has a record for every event of `workload`.
pub async fn drained_output(
    db: &TestDb,
    brokers: &str,
    output_topic: &str,
    workload: &Workload,
    keys: &BTreeSet<String>,
    deadline: Duration,
) -> Vec<Record> {
    super::eventually(deadline, "every event to be applied", || async {
        (db.count("SELECT count(*) FROM processed_event").await as usize >= keys.len())
            .then_some(())
    })
    .await;
    super::eventually(deadline, "the outbox to drain", || async {
        (db.count("SELECT count(*) FROM outbox").await == 0).then_some(())
    })
    .await;
    let mut output = TopicReader::open(brokers, output_topic).await;
    let order_ids = workload.order_ids();
    output
        .read_until(deadline, "a record for every event", |r| {
            published_order_ids(r).is_superset(&order_ids)
        })
        .await;
    output.read_to_end(deadline).await.to_vec()
}

/// Every input partition was applied in offset order: walking a partition's events
/// by offset, the transaction that applied each one (the ledger's `applied_by`) never
/// goes back. (A retried event, whose key came earlier, is a replay and ignored.) Two
/// instances applying one partition at once, or a consumer that rewound past applied
/// work and applied older events after newer ones, break this. Returns the number of
/// events checked.
pub async fn assert_applied_in_offset_order(pool: &sqlx::PgPool, produced: &[Produced]) -> usize {
    let applied: HashMap<String, i64> = sqlx::query_as::<_, (String, i64)>(
        "SELECT key, applied_by::text::bigint FROM processed_event",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let mut seen = BTreeSet::new();
    let mut by_partition: BTreeMap<i32, Vec<&Produced>> = BTreeMap::new();
    for p in produced {
        if seen.insert(p.key.as_str()) {
            by_partition.entry(p.partition).or_default().push(p);
        }
    }
    let mut checked = 0;
    for (partition, mut events) in by_partition {
        events.sort_by_key(|p| p.offset);
        let mut previous: Option<(i64, i64)> = None;
        for event in events {
            let xact = *applied.get(&event.key).unwrap_or_else(|| {
                panic!("event at {partition}/{} is not in the ledger", event.offset)
            });
            if let Some((offset, before)) = previous {
                assert!(
                    xact >= before,
                    "partition {partition}: the event at offset {} was applied (transaction {xact}) \
                     before the one at offset {offset} (transaction {before})",
                    event.offset
                );
            }
            previous = Some((event.offset, xact));
            checked += 1;
        }
    }
    checked
}

/// Polls a group's committed offsets on a topic in the background and records every
/// time one moved backwards.
pub struct CommittedOffsetsWatch {
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<(usize, Vec<String>)>,
}

impl CommittedOffsetsWatch {
    pub async fn start(brokers: &str, group: &str, topic: &str) -> CommittedOffsetsWatch {
        let partitions = partition_count(brokers, topic).await;
        let (brokers, group, topic) = (brokers.to_owned(), group.to_owned(), topic.to_owned());
        let stop = tokio_util::sync::CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut highest: HashMap<usize, i64> = HashMap::new();
            let mut regressions = Vec::new();
            let mut polls = 0;
            while !stopped.is_cancelled() {
                // A poll fails while the group coordinator moves; the next one counts.
                let offsets = committed_offsets_of(&brokers, &group, &topic, partitions)
                    .await
                    .unwrap_or_default();
                for (partition, offset) in offsets.into_iter().enumerate() {
                    let Some(offset) = offset else { continue };
                    let top = highest.entry(partition).or_insert(offset);
                    if offset < *top {
                        regressions.push(format!("partition {partition}: {top} -> {offset}"));
                    }
                    *top = (*top).max(offset);
                }
                polls += 1;
                tokio::select! {
                    _ = stopped.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
            }
            (polls, regressions)
        });
        CommittedOffsetsWatch { stop, task }
    }

    /// Stops polling; panics if an offset ever moved backwards. Returns the number of
    /// polls made.
    pub async fn assert_never_went_back(self) -> usize {
        self.stop.cancel();
        let (polls, regressions) = self.task.await.unwrap();
        assert!(
            regressions.is_empty(),
            "committed offsets moved backwards: {regressions:?}"
        );
        polls
    }

    /// For faults that move the group coordinator, where a reading can go back without
    /// the group's offsets going back for good: a new coordinator answers at its high
    /// watermark, which can trail its predecessor's until the followers fetch from it,
    /// and librdkafka may send a commit that failed against the old coordinator again
    /// after a newer one. Either way the next readings or the next commit move forward
    /// again, and a redelivered event is skipped by the ledger. So this stops polling
    /// and then requires that the group's offsets end where `produced` ends, on every
    /// partition: everything read was committed, whatever was read back meanwhile.
    /// Returns the number of polls and the readings that went back.
    pub async fn assert_ends_at(
        self,
        brokers: &str,
        group: &str,
        topic: &str,
        produced: &[Produced],
    ) -> (usize, Vec<String>) {
        self.stop.cancel();
        let (polls, regressions) = self.task.await.unwrap();
        let partitions = partition_count(brokers, topic).await;
        let mut end = vec![None; partitions as usize];
        for p in produced {
            let slot = &mut end[p.partition as usize];
            *slot = Some(slot.unwrap_or(0).max(p.offset + 1));
        }
        let mut last = Vec::new();
        let settled = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                if let Ok(committed) = committed_offsets_of(brokers, group, topic, partitions).await
                {
                    if committed == end {
                        return;
                    }
                    last = committed;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
        .await;
        assert!(
            settled.is_ok(),
            "the group's committed offsets {last:?} did not end at the input's end {end:?} \
             (readings that went back: {regressions:?})"
        );
        (polls, regressions)
    }
}

/// The ledger keys the service must end up with once it has read `produced`.
pub fn ledger_keys_of(produced: &[Produced]) -> BTreeSet<String> {
    produced.iter().map(|p| p.key.clone()).collect()
}

/// A seeded stream of events over small alphabets of emails and phones, so that
/// identities overlap and merge. Some events carry an `eventId`, some do not; a few
/// are sent twice (a producer retry: same `eventId`, same payload); some identifiers
/// are written un-normalised (case, spaces, dashes, JSON numbers).
pub struct Workload {
    pub events: Vec<Event>,
    /// Normalised inputs sent through `POST /identify` besides the events; they count
    /// for the model's clusters but have no order id.
    pub http_inputs: Vec<(Option<String>, Option<String>)>,
}

impl Workload {
    pub fn generate(seed: u64, count: usize, alphabet: usize, prefix: &str) -> Workload {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut events: Vec<Event> = Vec::with_capacity(count);
        // Indexes of the events that have an `eventId` (those a producer can retry).
        let mut with_id: Vec<usize> = Vec::new();
        for n in 0..count {
            if n > 10 && rng.gen_bool(0.03) && !with_id.is_empty() {
                let again = events[with_id[rng.gen_range(0..with_id.len())]].clone();
                events.push(again);
                continue;
            }
            let kind = rng.gen_range(0..100);
            let email = (kind < 75).then(|| rng.gen_range(0..alphabet));
            let phone = (kind >= 40).then(|| rng.gen_range(0..alphabet));
            let email_norm = email.map(|k| format!("c{k}@{prefix}.test"));
            let phone_norm = phone.map(|k| format!("55{k:06}"));
            let email_wire = email_norm.as_ref().map(|e| {
                if rng.gen_bool(0.15) {
                    Value::from(format!("  {} ", e.to_uppercase()))
                } else {
                    Value::from(e.clone())
                }
            });
            let phone_wire = phone_norm.as_ref().map(|p| match rng.gen_range(0..10) {
                0 => Value::from(p.parse::<u64>().unwrap()),
                1 => Value::from(format!("{}-{} {}", &p[..2], &p[2..5], &p[5..])),
                _ => Value::from(p.clone()),
            });
            let event_id = rng.gen_bool(0.6).then(|| format!("{prefix}-ev-{n}"));
            let order_id = format!("{prefix}-o-{n}");
            let mut value = json!({"orderId": order_id});
            if let Some(id) = &event_id {
                value["eventId"] = id.clone().into();
            }
            if let Some(e) = email_wire {
                value["email"] = e;
            }
            if let Some(p) = phone_wire {
                value["phoneNumber"] = p;
            }
            if event_id.is_some() {
                with_id.push(events.len());
            }
            events.push(Event {
                value,
                event_id,
                order_id,
                email: email_norm,
                phone: phone_norm,
            });
        }
        Workload {
            events,
            http_inputs: Vec::new(),
        }
    }

    /// Produces every event (keyed by `eventId` where there is one).
    pub async fn produce(&self, producer: &FutureProducer, topic: &str) -> Vec<Produced> {
        produce_events(producer, topic, &self.events).await
    }

    pub fn order_ids(&self) -> BTreeSet<String> {
        self.events.iter().map(|e| e.order_id.clone()).collect()
    }

    /// The model's clusters after every event (the partition of identifiers into
    /// clusters does not depend on the order the events were applied in).
    pub fn model_clusters(&self) -> BTreeSet<BTreeSet<String>> {
        let mut model = Model::default();
        for e in &self.events {
            model.identify(e.email.as_deref(), e.phone.as_deref());
        }
        for (email, phone) in &self.http_inputs {
            model.identify(email.as_deref(), phone.as_deref());
        }
        model.clusters()
    }
}

/// Order ids of the identity records (not `mergedInto` records) among `records`.
pub fn published_order_ids(records: &[Record]) -> BTreeSet<String> {
    records
        .iter()
        .filter_map(|r| r.value.as_ref().map(|_| r.json()))
        .filter(|v| v.get("contact").is_some())
        .filter_map(|v| v["orderId"].as_str().map(str::to_owned))
        .collect()
}

/// The end state every crash test must reach: the ledger holds exactly `keys`, §2
/// holds, the clusters are the model's, every event has an identity record on the
/// output, and the last record of every key describes the database as it is.
/// `output` must hold the whole output topic, read after the outbox emptied.
pub async fn assert_stream_applied(
    db: &TestDb,
    workload: &Workload,
    keys: &BTreeSet<String>,
    output: &[Record],
) {
    let ledger: BTreeSet<String> = ledger_keys(&db.pool).await.into_iter().collect();
    assert_eq!(
        ledger.len(),
        keys.len(),
        "the ledger holds {} keys, expected {}",
        ledger.len(),
        keys.len()
    );
    assert_eq!(
        &ledger, keys,
        "the ledger holds other keys than the events'"
    );
    assert_invariants(&db.pool).await;
    assert_eq!(
        database_clusters(&db.pool).await,
        workload.model_clusters(),
        "the database's clusters differ from the model's"
    );
    let missing: Vec<String> = workload
        .order_ids()
        .difference(&published_order_ids(output))
        .cloned()
        .collect();
    assert!(
        missing.is_empty(),
        "{} events have no identity record on the output, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert_last_records_match_the_database(db, output).await;
}

/// For every key of the output topic, its last record is the current identity of that
/// primary, or, for an absorbed primary, a `mergedInto` record whose chain leads to its
/// current primary; every current primary has a record. Also: per key, the last record
/// carries the highest version seen.
pub async fn assert_last_records_match_the_database(db: &TestDb, output: &[Record]) {
    let mut last: BTreeMap<i64, Value> = BTreeMap::new();
    let mut highest: BTreeMap<i64, i64> = BTreeMap::new();
    for record in output {
        let key: i64 = record
            .key
            .as_deref()
            .expect("output records are keyed")
            .parse()
            .expect("keyed by a contact id");
        let value = record.json();
        let version = value["version"].as_i64().expect("a version");
        let top = highest.entry(key).or_insert(version);
        *top = (*top).max(version);
        last.insert(key, value);
    }
    let current: HashMap<i64, Option<i64>> =
        sqlx::query_as::<_, (i64, Option<i64>)>("SELECT id, linked_id FROM contact")
            .fetch_all(&db.pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    for (key, value) in &last {
        assert_eq!(
            value["version"].as_i64(),
            Some(highest[key]),
            "the last record of {key} is not its latest version"
        );
        match current.get(key) {
            Some(None) => assert_eq!(
                value["contact"],
                database_identity(&db.pool, *key).await,
                "the last record of primary {key} is not its current identity"
            ),
            Some(Some(primary)) => {
                let mut into = *key;
                let mut hops = 0;
                while let Some(next) = last.get(&into).and_then(|v| v["mergedInto"].as_i64()) {
                    into = next;
                    hops += 1;
                    assert!(hops <= last.len(), "mergedInto records form a cycle");
                }
                assert_eq!(
                    into, *primary,
                    "the mergedInto records of {key} do not lead to its primary"
                );
            }
            None => panic!("the output names contact {key}, which does not exist"),
        }
    }
    for (id, linked) in &current {
        if linked.is_none() {
            assert!(
                last.contains_key(id),
                "primary {id} has no record on the output"
            );
        }
    }
}
