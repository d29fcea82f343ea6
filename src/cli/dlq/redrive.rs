//! `dlq redrive`'s sending side: the letters back to the input topic once their cause
//! is fixed. Each goes to its source partition where the input topic has it, with an
//! idempotent producer, so the order per source partition is kept.

use super::letters::{Letter, TIMEOUT};
use anyhow::Context;
use identity_reconciler::config::Settings;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};

/// Re-publishes `letters` (in the order given) to the input topic; returns how many.
/// Truncated copies without their whole letter are skipped.
pub async fn redrive(
    settings: &Settings,
    brokers: &str,
    letters: &[Letter],
) -> anyhow::Result<usize> {
    let topic = &settings.kafka.input_topic;
    let producer: FutureProducer = settings.kafka.command_producer_config(brokers).create()?;
    let partitions = {
        let producer = producer.clone();
        let topic = topic.clone();
        tokio::task::spawn_blocking(move || {
            use rdkafka::producer::Producer;
            producer
                .client()
                .fetch_metadata(Some(&topic), TIMEOUT)
                .map(|m| {
                    m.topics()
                        .first()
                        .map_or(0, |t| t.partitions().len() as i32)
                })
        })
        .await??
    };
    let mut deliveries = Vec::new();
    for letter in letters {
        let l = &letter.letter;
        if letter.truncated {
            tracing::warn!(
                topic = %l.source_topic,
                partition = l.source_partition,
                offset = l.source_offset,
                "only a truncated copy of this letter exists; not redriven"
            );
            continue;
        }
        let mut headers = OwnedHeaders::new();
        for (key, value) in &l.headers {
            headers = headers.insert(Header {
                key,
                value: value.as_deref(),
            });
        }
        let from = format!(
            "{}/{}/{}",
            l.source_topic, l.source_partition, l.source_offset
        );
        headers = headers.insert(Header {
            key: "dlq.redriven.from",
            value: Some(&from),
        });
        let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(headers);
        if l.source_partition < partitions {
            record = record.partition(l.source_partition);
        }
        if let Some(key) = &l.key {
            record = record.key(key);
        }
        if let Some(value) = &l.value {
            record = record.payload(value);
        }
        deliveries.push(
            producer
                .send_result(record)
                .map_err(|(e, _)| e)
                .context("cannot enqueue a letter")?,
        );
    }
    let count = deliveries.len();
    for delivery in deliveries {
        delivery
            .await
            .context("the producer went away")?
            .map_err(|(e, _)| e)
            .context("the input topic refused a letter")?;
    }
    Ok(count)
}
