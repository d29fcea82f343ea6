//! Readers of whole topics. A reader never joins a group and never commits: it assigns
//! every partition from the beginning, so it sees exactly what a new downstream
//! consumer would see.

use super::broker::{partition_count, METADATA_TIMEOUT};
use super::names::unique;
use futures::FutureExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use std::time::Duration;
use tokio::time::Instant;

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

/// Order ids of the identity records (not `mergedInto` records) among `records`.
pub fn published_order_ids(records: &[Record]) -> BTreeSet<String> {
    records
        .iter()
        .filter_map(|r| r.value.as_ref().map(|_| r.json()))
        .filter(|v| v.get("contact").is_some())
        .filter_map(|v| v["orderId"].as_str().map(str::to_owned))
        .collect()
}
