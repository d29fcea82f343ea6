//! The Kafka broker: its address (from `KAFKA_BROKERS` or a container), the topics and
//! group of one test, producers of records and JSON events, and the offsets a group
//! has committed.

use super::docker_available;
use super::names::Topics;
use identity_reconciler::config::Settings;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaResult;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;
use std::time::Duration;
use tokio::sync::OnceCell;

pub const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

static KAFKA: OnceCell<String> = OnceCell::const_new();

/// Bootstrap servers of a Kafka-compatible broker.
pub async fn kafka_brokers() -> String {
    KAFKA
        .get_or_init(|| async {
            if let Ok(brokers) = std::env::var("KAFKA_BROKERS") {
                return brokers;
            }
            assert!(
                docker_available(),
                "set KAFKA_BROKERS (scripts/services.sh start starts a local broker) or make Docker available"
            );
            use testcontainers::runners::AsyncRunner;
            let container = testcontainers_modules::kafka::apache::Kafka::default()
                .start()
                .await
                .expect("start a Kafka container");
            let port = container
                .get_host_port_ipv4(testcontainers_modules::kafka::apache::KAFKA_PORT)
                .await
                .unwrap();
            std::mem::forget(container);
            format!("127.0.0.1:{port}")
        })
        .await
        .clone()
}

/// Topic administration for the topics of one test (`Topics` is `ir-testkit`'s, shared
/// with the benchmark, which administers its topics its own way).
pub trait TopicAdmin {
    /// Points `settings` at these topics, this group and `brokers`.
    fn apply(&self, settings: &mut Settings, brokers: &str);
    /// Creates the three topics with `partitions` partitions each (a test may want to
    /// produce before the service starts).
    async fn create(&self, brokers: &str, partitions: i32);
    /// The same, each partition on `replication` brokers (-1: the broker's default).
    async fn create_replicated(&self, brokers: &str, partitions: i32, replication: i32);
}

impl TopicAdmin for Topics {
    fn apply(&self, settings: &mut Settings, brokers: &str) {
        settings.kafka.brokers = brokers.to_owned();
        settings.kafka.input_topic = self.input.clone();
        settings.kafka.output_topic = self.output.clone();
        settings.kafka.dlq_topic = self.dlq.clone();
        settings.kafka.group_id = self.group.clone();
    }

    async fn create(&self, brokers: &str, partitions: i32) {
        self.create_replicated(brokers, partitions, -1).await;
    }

    async fn create_replicated(&self, brokers: &str, partitions: i32, replication: i32) {
        let mut settings = Settings::load(None).unwrap();
        self.apply(&mut settings, brokers);
        settings.kafka.topic_partitions = partitions;
        settings.kafka.topic_replication = replication;
        identity_reconciler::worker::create_missing_topics(&settings.kafka, brokers)
            .await
            .expect("create the test's topics");
    }
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

/// The offsets `group` has committed on the `partitions` partitions of `topic`.
pub async fn committed_offsets_of(
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
