//! `identity-reconciler tail`: the records of the identities topic (or the dead
//! letters) as JSON lines, for a new user watching the quick start and for
//! debugging. It reads as a `read_committed` consumer of its own, assigned to every
//! partition (no group membership, nothing committed), so it never disturbs the
//! service's consumer group.

use anyhow::Context;
use identity_reconciler::config::Settings;
use identity_reconciler::shutdown;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value};
use std::io::Write;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Print the records of the identities topic (or the dead letters) as JSON lines,
/// from now on (or from the beginning), until interrupted.
#[derive(clap::Args)]
pub struct Tail {
    /// Which topic to print.
    #[arg(long, value_enum, default_value = "identities")]
    topic: TailTopic,
    /// Start at the beginning of each partition instead of its end.
    #[arg(long)]
    from_beginning: bool,
    /// Stop after this many records.
    #[arg(long)]
    limit: Option<u64>,
}

/// Which topic to print.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum TailTopic {
    /// The identity and merge records (`kafka.output_topic`).
    Identities,
    /// The dead letters (`kafka.dlq_topic`).
    Dlq,
}

impl Tail {
    pub async fn run(self, settings: &Settings) -> anyhow::Result<()> {
        let token = CancellationToken::new();
        shutdown::cancel_on_signal(token.clone());
        let mut out = std::io::stdout().lock();
        tail(
            settings,
            self.topic,
            self.from_beginning,
            self.limit,
            &mut out,
            token.cancelled(),
        )
        .await
    }
}

/// Prints records of `topic` to `out`, one JSON object per line, from the end of
/// each partition (or its beginning), until `limit` records were printed (forever
/// without one) or `stop` resolves.
async fn tail(
    settings: &Settings,
    topic: TailTopic,
    from_beginning: bool,
    limit: Option<u64>,
    out: &mut impl Write,
    stop: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let brokers = &settings.kafka.brokers;
    anyhow::ensure!(!brokers.trim().is_empty(), "set KAFKA_BROKERS");
    let name = match topic {
        TailTopic::Identities => &settings.kafka.output_topic,
        TailTopic::Dlq => &settings.kafka.dlq_topic,
    };
    let consumer: StreamConsumer = settings
        .kafka
        .reader_config(
            brokers,
            &format!("identity-reconciler-tail-{}", std::process::id()),
            true,
        )
        .create()
        .context("cannot create the Kafka consumer")?;
    let partitions = partitions_of(consumer.client(), name)?;
    let mut assignment = TopicPartitionList::new();
    let start = if from_beginning {
        Offset::Beginning
    } else {
        Offset::End
    };
    for partition in partitions {
        assignment.add_partition_offset(name, partition, start)?;
    }
    consumer.assign(&assignment)?;
    tokio::pin!(stop);
    let mut printed = 0;
    while limit.is_none_or(|l| printed < l) {
        let message = tokio::select! {
            message = consumer.recv() => message?,
            _ = &mut stop => break,
        };
        writeln!(out, "{}", line(&message))?;
        out.flush()?;
        printed += 1;
    }
    Ok(())
}

fn partitions_of(
    client: &rdkafka::client::Client<impl rdkafka::client::ClientContext>,
    topic: &str,
) -> anyhow::Result<Vec<i32>> {
    let metadata = client
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .with_context(|| format!("cannot read the metadata of topic {topic}"))?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|t| t.name() == topic && t.error().is_none())
        .flat_map(|t| t.partitions().iter().map(|p| p.id()))
        .collect();
    anyhow::ensure!(!partitions.is_empty(), "topic {topic} does not exist");
    Ok(partitions)
}

/// One record as JSON: coordinates, timestamp, key, value (parsed when it is JSON,
/// null for a tombstone) and headers.
fn line(message: &impl Message) -> Value {
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let value = match message.payload() {
        None => Value::Null,
        Some(bytes) => serde_json::from_slice(bytes).unwrap_or_else(|_| Value::String(text(bytes))),
    };
    let timestamp = message
        .timestamp()
        .to_millis()
        .and_then(chrono::DateTime::from_timestamp_millis);
    let mut headers = serde_json::Map::new();
    if let Some(list) = message.headers() {
        for header in list.iter() {
            headers.insert(header.key.to_owned(), header.value.map(text).into());
        }
    }
    json!({
        "topic": message.topic(),
        "partition": message.partition(),
        "offset": message.offset(),
        "timestamp": timestamp,
        "key": message.key().map(text),
        "value": value,
        "headers": headers,
    })
}
