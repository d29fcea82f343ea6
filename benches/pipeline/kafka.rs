//! Kafka clients of the benchmark: topics, a pipelined producer, and readers that
//! assign partitions (no group, no commits) so they never disturb the worker's group.

use crate::names::unique;
use anyhow::{bail, Context};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::BorrowedMessage;
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Partitions of every topic the benchmark creates (as the service's default).
pub const PARTITIONS: i32 = 3;

const TIMEOUT: Duration = Duration::from_secs(30);

fn admin(brokers: &str) -> anyhow::Result<AdminClient<DefaultClientContext>> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?)
}

/// Creates topics of `PARTITIONS` partitions before anything is produced.
pub async fn create_topics(brokers: &str, names: &[&str]) -> anyhow::Result<()> {
    let topics: Vec<NewTopic<'_>> = names
        .iter()
        .map(|name| NewTopic::new(name, PARTITIONS, TopicReplication::Fixed(-1)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    for result in admin(brokers)?.create_topics(&topics, &options).await? {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => bail!("cannot create topic {topic}: {code}"),
        }
    }
    Ok(())
}

/// Best effort: a broker that cannot delete topics just keeps them.
pub async fn delete_topics(brokers: &str, names: &[&str]) {
    if let Ok(admin) = admin(brokers) {
        let options = AdminOptions::new().operation_timeout(Some(TIMEOUT));
        admin.delete_topics(names, &options).await.ok();
    }
}

/// An idempotent producer with `acks=all`, as the service's relay uses.
pub fn producer(brokers: &str, linger_ms: u32) -> anyhow::Result<FutureProducer> {
    Ok(ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", linger_ms.to_string())
        .set("queue.buffering.max.messages", "200000")
        .set("message.timeout.ms", "120000")
        .create()?)
}

/// [`producer`], once the broker has given it its producer id: a record sent to a
/// scratch topic is acknowledged first. A new idempotent producer holds its first
/// records until it has an id, and when the broker's first answer is "coordinator
/// load in progress" librdkafka asks again 500 ms later: records stamped with their
/// CreateTime meanwhile would carry that wait into a latency figure.
pub async fn ready_producer(brokers: &str, linger_ms: u32) -> anyhow::Result<FutureProducer> {
    let producer = producer(brokers, linger_ms)?;
    let scratch = unique("bench_producer_id");
    create_topics(brokers, &[&scratch]).await?;
    let record = FutureRecord::<str, str>::to(&scratch).payload("");
    let delivery = producer.send_result(record).map_err(|(e, _)| e)?;
    acknowledged(delivery).await?;
    delete_topics(brokers, &[&scratch]).await;
    Ok(producer)
}

/// One record to produce.
pub struct Outgoing<'a> {
    pub key: &'a str,
    pub payload: &'a str,
    /// Milliseconds since the epoch; the record's CreateTime.
    pub timestamp: Option<i64>,
}

/// Sends records as fast as the producer takes them, keeping many in flight, and
/// waits for every acknowledgement. Returns the time from first send to last ack.
pub async fn produce_all<'a>(
    producer: &FutureProducer,
    topic: &str,
    records: impl IntoIterator<Item = Outgoing<'a>>,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut in_flight: VecDeque<DeliveryFuture> = VecDeque::new();
    for outgoing in records {
        let mut record = FutureRecord::to(topic)
            .key(outgoing.key)
            .payload(outgoing.payload);
        if let Some(timestamp) = outgoing.timestamp {
            record = record.timestamp(timestamp);
        }
        loop {
            match producer.send_result(record) {
                Ok(delivery) => {
                    in_flight.push_back(delivery);
                    break;
                }
                // The local queue is full: wait for the oldest record, then retry.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    record = back;
                    match in_flight.pop_front() {
                        Some(oldest) => acknowledged(oldest).await?,
                        None => tokio::time::sleep(Duration::from_millis(5)).await,
                    }
                }
                Err((e, _)) => return Err(e).context("enqueue a record"),
            }
        }
    }
    for delivery in in_flight {
        acknowledged(delivery).await?;
    }
    Ok(started.elapsed())
}

pub async fn acknowledged(delivery: DeliveryFuture) -> anyhow::Result<()> {
    match delivery.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(e).context("the broker refused a record"),
        Err(_) => bail!("the producer went away"),
    }
}

/// A reader of `topic` from the given offset of every partition.
fn reader(brokers: &str, topic: &str, starts: &[i64]) -> anyhow::Result<BaseConsumer> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        // Required by librdkafka, never used: we assign and never commit.
        .set("group.id", unique("bench_reader"))
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    for (partition, &start) in starts.iter().enumerate() {
        assignment.add_partition_offset(topic, partition as i32, Offset::Offset(start))?;
    }
    consumer.assign(&assignment)?;
    Ok(consumer)
}

/// The end offsets (high watermarks) of every partition.
pub fn end_offsets(brokers: &str, topic: &str) -> anyhow::Result<Vec<i64>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()?;
    (0..PARTITIONS)
        .map(|p| Ok(consumer.fetch_watermarks(topic, p, TIMEOUT)?.1))
        .collect()
}

/// Reads `topic` from `starts` (on a blocking thread: librdkafka's poll blocks),
/// handing every message to `visit` with `state` until it returns `true`; fails at
/// `deadline`. Returns the state.
pub async fn read<S: Send + 'static>(
    brokers: &str,
    topic: &str,
    starts: Vec<i64>,
    deadline: Instant,
    mut state: S,
    visit: fn(&mut S, &BorrowedMessage<'_>) -> bool,
) -> anyhow::Result<S> {
    let consumer = reader(brokers, topic, &starts)?;
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || loop {
        if Instant::now() > deadline {
            bail!("timed out reading {topic}");
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) if visit(&mut state, &message) => return Ok(state),
            Some(Ok(_)) | None => {}
            Some(Err(e)) => eprintln!("bench: reading {topic}: {e}"),
        }
    })
    .await?
}

/// Reads `topic` from `starts` until the consumer's position reaches `ends` on every
/// partition, handing every message to `visit`. The position, not the last record
/// seen, decides: the relay writes transactions, whose commit markers take offsets
/// (the last one of a partition is a marker) but are never delivered.
pub async fn read_to_ends<S: Send + 'static>(
    brokers: &str,
    topic: &str,
    ends: Vec<i64>,
    deadline: Instant,
    mut state: S,
    visit: fn(&mut S, &BorrowedMessage<'_>),
) -> anyhow::Result<S> {
    let consumer = reader(brokers, topic, &vec![0; ends.len()])?;
    let topic = topic.to_owned();
    tokio::task::spawn_blocking(move || loop {
        if Instant::now() > deadline {
            bail!("timed out reading {topic}");
        }
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(message)) => visit(&mut state, &message),
            None => {}
            Some(Err(e)) => eprintln!("bench: reading {topic}: {e}"),
        }
        let position = consumer.position()?;
        let done = ends.iter().enumerate().all(|(partition, &end)| {
            end == 0
                || matches!(
                    position.find_partition(&topic, partition as i32).map(|e| e.offset()),
                    Some(Offset::Offset(at)) if at >= end
                )
        });
        if done {
            return Ok(state);
        }
    })
    .await?
}
