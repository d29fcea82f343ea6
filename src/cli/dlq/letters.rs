//! The dead letters `dlq list` prints and `dlq redrive` re-publishes.
//!
//! Letters come from the DLQ topic (its copies, minus the `dlq.*` headers) or, with
//! `--from-db`, from the `dead_letter` table (the letters the topic could not take
//! whole). A truncated copy on the topic is replaced by its whole letter from the
//! table, or skipped with a warning when the table does not have it. A letter seen
//! several times (the same source message dead-lettered again after a restart) is
//! taken once, and letters come in source order (topic, partition, offset).

use anyhow::Context;
use chrono::{DateTime, Utc};
use identity_reconciler::config::Settings;
use identity_reconciler::store::{DeadLetter, Store};
use identity_reconciler::worker::dlq_header;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::time::Duration;

pub(super) const TIMEOUT: Duration = Duration::from_secs(30);

/// A dead letter and when it was written.
#[derive(Clone, Debug)]
pub struct Letter {
    pub letter: DeadLetter,
    pub at: Option<DateTime<Utc>>,
    /// Only a truncated copy was found (the whole one is in the table, if anywhere).
    pub truncated: bool,
    /// `topic` or `db`.
    pub from: &'static str,
}

/// `--since`: an RFC 3339 time, or a duration back from now ("2h", "7d").
pub fn parse_since(text: &str) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    let back = humantime_serde::re::humantime::parse_duration(text).with_context(|| {
        format!("--since {text:?} is neither an RFC 3339 time nor a duration such as 2h or 7d")
    })?;
    Ok(Utc::now() - chrono::Duration::from_std(back).context("--since is too far back")?)
}

/// The letters of the DLQ topic (whole records only up to its end now), merged with
/// the table's whole letters for truncated copies; source order, each letter once.
pub async fn letters(
    settings: &Settings,
    brokers: &str,
    store: &Store,
    from_db: bool,
    since: Option<DateTime<Utc>>,
) -> anyhow::Result<Vec<Letter>> {
    let kept: Vec<Letter> = store
        .dead_letters(since)
        .await?
        .into_iter()
        .map(|stored| Letter {
            letter: stored.letter,
            at: Some(stored.created_at),
            truncated: false,
            from: "db",
        })
        .collect();
    let mut by_source: BTreeMap<(String, i32, i64), Letter> = BTreeMap::new();
    let source = |l: &DeadLetter| (l.source_topic.clone(), l.source_partition, l.source_offset);
    if from_db {
        for letter in kept {
            by_source.entry(source(&letter.letter)).or_insert(letter);
        }
        return Ok(by_source.into_values().collect());
    }
    let whole: BTreeMap<(String, i32, i64), Letter> =
        kept.into_iter().map(|l| (source(&l.letter), l)).collect();
    let topic = settings.kafka.dlq_topic.clone();
    let config = settings
        .kafka
        .reader_config(brokers, "identity-reconciler-dlq-reader", false);
    let copies = tokio::task::spawn_blocking(move || read_topic(config, &topic)).await??;
    for copy in copies {
        if since.is_some_and(|since| copy.at.is_some_and(|at| at < since)) {
            continue;
        }
        let key = source(&copy.letter);
        if by_source.contains_key(&key) {
            continue;
        }
        let letter = match (copy.truncated, whole.get(&key)) {
            (true, Some(whole)) => whole.clone(),
            _ => copy,
        };
        by_source.insert(key, letter);
    }
    Ok(by_source.into_values().collect())
}

/// Every record of `topic` up to its end now, as letters.
fn read_topic(config: rdkafka::ClientConfig, topic: &str) -> anyhow::Result<Vec<Letter>> {
    let consumer: BaseConsumer = config.create()?;
    let metadata = consumer
        .fetch_metadata(Some(topic), TIMEOUT)
        .context("cannot read the DLQ topic's metadata")?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic)
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    let mut ends = BTreeMap::new();
    let mut assignment = TopicPartitionList::new();
    for &partition in &partitions {
        let (low, high) = consumer.fetch_watermarks(topic, partition, TIMEOUT)?;
        if high > low {
            ends.insert(partition, high);
            assignment.add_partition_offset(topic, partition, Offset::Beginning)?;
        }
    }
    let mut letters = Vec::new();
    if ends.is_empty() {
        return Ok(letters);
    }
    consumer.assign(&assignment)?;
    let deadline = std::time::Instant::now() + TIMEOUT;
    while !ends.is_empty() {
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "timed out reading the DLQ topic"
        );
        let Some(received) = consumer.poll(Duration::from_millis(200)) else {
            continue;
        };
        let message = received?;
        if ends
            .get(&message.partition())
            .is_some_and(|&end| message.offset() + 1 >= end)
        {
            ends.remove(&message.partition());
        }
        let mut header = BTreeMap::new();
        let mut original = Vec::new();
        if let Some(headers) = message.headers() {
            for h in headers.iter() {
                if h.key.starts_with("dlq.") {
                    let text = h.value.map(|v| String::from_utf8_lossy(v).into_owned());
                    header.insert(h.key.to_owned(), text.unwrap_or_default());
                } else {
                    original.push((h.key.to_owned(), h.value.map(<[u8]>::to_vec)));
                }
            }
        }
        let text = |name: &str| header.get(name).cloned().unwrap_or_default();
        let (Ok(partition), Ok(offset)) = (
            text(dlq_header::SOURCE_PARTITION).parse(),
            text(dlq_header::SOURCE_OFFSET).parse(),
        ) else {
            tracing::warn!(
                partition = message.partition(),
                offset = message.offset(),
                "a record of the DLQ topic without its source; skipped"
            );
            continue;
        };
        letters.push(Letter {
            letter: DeadLetter {
                source_topic: text(dlq_header::SOURCE_TOPIC),
                source_partition: partition,
                source_offset: offset,
                key: message.key().map(<[u8]>::to_vec),
                value: message.payload().map(<[u8]>::to_vec),
                headers: original,
                reason: text(dlq_header::REASON),
                error: text(dlq_header::ERROR),
            },
            at: message
                .timestamp()
                .to_millis()
                .and_then(DateTime::from_timestamp_millis),
            truncated: text(dlq_header::TRUNCATED) == "true",
            from: "topic",
        });
    }
    Ok(letters)
}

/// One line of `dlq list`: where a letter came from and why, without its content.
pub fn describe(letter: &Letter) -> serde_json::Value {
    let l = &letter.letter;
    serde_json::json!({
        "sourceTopic": l.source_topic,
        "sourcePartition": l.source_partition,
        "sourceOffset": l.source_offset,
        "reason": l.reason,
        "error": l.error,
        "valueBytes": l.value.as_ref().map(Vec::len),
        "truncated": letter.truncated,
        "from": letter.from,
        "at": letter.at,
    })
}
