//! Dead letters: every unusable message of a batch goes to the DLQ, value, key and
//! headers unchanged plus the `dlq.*` headers, and the batch waits for the broker's
//! acknowledgement. A letter the DLQ refuses for good (see
//! [`super::refused_for_good`]) is kept whole in PostgreSQL instead, with a truncated
//! copy on the DLQ where that fits; transient failures pause the partitions and retry
//! the letters that failed. A bad message is never dropped and never stalls its
//! partition.

use super::batch::Apply;
use super::dlq_header;
use super::event::Message;
use super::step::{back_off, Letter, Pause, WorkerError};
use crate::metrics::METRICS;
use crate::store::DeadLetter;
use crate::telemetry::chain;
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{DeliveryFuture, FutureRecord};

impl Apply {
    /// Sends every letter to the DLQ and waits for the broker's acknowledgement.
    pub(super) async fn dead_letter(&self, letters: &[Letter<'_>]) -> Result<(), WorkerError> {
        let mut pending: Vec<&Letter> = letters.iter().collect();
        let mut backoff = self.shared.settings.backoff();
        while !pending.is_empty() {
            let outcomes = self.send_dead_letters(&pending).await;
            let mut failed = Vec::new();
            let mut transient = None;
            for (letter, outcome) in pending.into_iter().zip(outcomes) {
                let Letter {
                    message,
                    reason: code,
                    error,
                } = letter;
                let outcome = match outcome {
                    Ok(()) => "published",
                    Err(e) if super::refused_for_good(&e) => {
                        self.keep_dead_letter(message, code, error, &e).await?
                    }
                    Err(e) => {
                        transient = Some(e);
                        failed.push(letter);
                        continue;
                    }
                };
                METRICS
                    .events_dead_lettered
                    .with_label_values(&[*code])
                    .inc();
                METRICS
                    .dead_letter_outcomes
                    .with_label_values(&[outcome])
                    .inc();
                tracing::info!(
                    topic = message.position.topic,
                    partition = message.position.partition,
                    offset = message.position.offset,
                    reason = code,
                    outcome,
                    "event dead-lettered"
                );
            }
            pending = failed;
            match transient {
                Some(e) => {
                    METRICS.retries.with_label_values(&["dead_letter"]).inc();
                    tracing::warn!(error = %e, attempt = backoff.attempt(), "cannot write to the dead-letter topic; backing off");
                    self.back_off(&mut backoff).await?;
                }
                None => Pause::resume(&*self.consumer),
            }
        }
        Ok(())
    }

    /// Keeps a letter the DLQ refused in the `dead_letter` table (retrying while
    /// PostgreSQL is unavailable), then offers the DLQ a copy cut to
    /// `worker.dlq_truncated_bytes` (retrying transient broker errors). Returns the
    /// outcome for the metrics.
    async fn keep_dead_letter(
        &self,
        message: &Message,
        code: &'static str,
        error: &str,
        refusal: &KafkaError,
    ) -> Result<&'static str, WorkerError> {
        let letter = DeadLetter {
            source_topic: message.position.topic.clone(),
            source_partition: message.position.partition,
            source_offset: message.position.offset,
            key: message.key.clone(),
            value: message.value.clone(),
            headers: message.headers.clone(),
            reason: code.to_owned(),
            error: error.to_owned(),
        };
        tracing::warn!(
            topic = message.position.topic,
            partition = message.position.partition,
            offset = message.position.offset,
            error = %refusal,
            "the dead-letter topic refuses this letter; keeping it whole in PostgreSQL"
        );
        let mut backoff = self.shared.settings.backoff();
        loop {
            match self
                .shared
                .store
                .keep_dead_letter(&letter, &refusal.to_string())
                .await
            {
                Ok(()) => break,
                Err(e) if e.is_transient() => {
                    METRICS.retries.with_label_values(&["dead_letter"]).inc();
                    tracing::warn!(error = %chain(&e), attempt = backoff.attempt(), "PostgreSQL unavailable; backing off");
                    self.back_off(&mut backoff).await?;
                }
                Err(e) => {
                    return Err(WorkerError::Fatal(
                        anyhow::Error::new(e).context("cannot keep a dead letter"),
                    ))
                }
            }
        }
        let limit = self.shared.settings.worker.dlq_truncated_bytes;
        let cut = |bytes: &[u8]| bytes[..bytes.len().min(limit)].to_vec();
        let value_size = message.value.as_ref().map_or(0, Vec::len).to_string();
        let mut backoff = self.shared.settings.backoff();
        loop {
            let mut headers = OwnedHeaders::new();
            for (key, value) in dlq_headers(message, code, error) {
                headers = headers.insert(Header {
                    key,
                    value: Some(&cut(value.as_bytes())),
                });
            }
            for (key, value) in [
                (dlq_header::TRUNCATED, "true"),
                (dlq_header::ORIGINAL_VALUE_BYTES, value_size.as_str()),
            ] {
                headers = headers.insert(Header {
                    key,
                    value: Some(value),
                });
            }
            let key = message.key.as_deref().map(cut);
            let value = message.value.as_deref().map(cut);
            let mut record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&self.shared.settings.kafka.dlq_topic).headers(headers);
            if let Some(key) = &key {
                record = record.key(key);
            }
            if let Some(value) = &value {
                record = record.payload(value);
            }
            match acknowledged(super::enqueue(&self.shared.producer, record).await).await {
                Ok(()) => {
                    // The copy is on the topic; failing to note it only loses a flag.
                    if let Err(e) = self.shared.store.mark_truncated_copy(&letter).await {
                        tracing::warn!(error = %chain(&e), "could not note the truncated copy");
                    }
                    return Ok("stored_truncated");
                }
                Err(e) if super::refused_for_good(&e) => {
                    tracing::warn!(error = %e, "the dead-letter topic refuses even a truncated copy; the letter is only in PostgreSQL");
                    return Ok("stored_only");
                }
                Err(e) => {
                    METRICS.retries.with_label_values(&["dead_letter"]).inc();
                    tracing::warn!(error = %e, attempt = backoff.attempt(), "cannot write to the dead-letter topic; backing off");
                    self.back_off(&mut backoff).await?;
                }
            }
        }
    }

    /// Hands every letter to the producer, then waits for each acknowledgement;
    /// returns one outcome per letter.
    async fn send_dead_letters(&self, dead: &[&Letter<'_>]) -> Vec<Result<(), KafkaError>> {
        let topic = &self.shared.settings.kafka.dlq_topic;
        let mut deliveries = Vec::with_capacity(dead.len());
        for Letter {
            message,
            reason: code,
            error,
        } in dead
        {
            let mut headers = OwnedHeaders::new();
            for (key, value) in &message.headers {
                headers = headers.insert(Header {
                    key,
                    value: value.as_deref(),
                });
            }
            for (key, value) in dlq_headers(message, code, error) {
                headers = headers.insert(Header {
                    key,
                    value: Some(&value),
                });
            }
            let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(headers);
            if let Some(key) = &message.key {
                record = record.key(key);
            }
            if let Some(payload) = &message.value {
                record = record.payload(payload);
            }
            deliveries.push(super::enqueue(&self.shared.producer, record).await);
        }
        let mut outcomes = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            outcomes.push(acknowledged(delivery).await);
        }
        outcomes
    }
}

/// The broker's answer to a record handed to the producer.
async fn acknowledged(enqueued: Result<DeliveryFuture, KafkaError>) -> Result<(), KafkaError> {
    match enqueued?.await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err((e, _))) => Err(e),
        Err(_) => Err(KafkaError::Canceled),
    }
}

/// The `dlq.*` headers of a letter: why, and where it was read.
fn dlq_headers(message: &Message, code: &'static str, error: &str) -> [(&'static str, String); 5] {
    let position = &message.position;
    [
        (dlq_header::REASON, code.to_owned()),
        (dlq_header::ERROR, error.to_owned()),
        (dlq_header::SOURCE_TOPIC, position.topic.clone()),
        (dlq_header::SOURCE_PARTITION, position.partition.to_string()),
        (dlq_header::SOURCE_OFFSET, position.offset.to_string()),
    ]
}

impl Apply {
    /// Pauses the assignment (first time), then waits for the next delay; returns
    /// early on shutdown. The consumer loop polls meanwhile.
    async fn back_off(&self, backoff: &mut crate::backoff::Backoff) -> Result<(), WorkerError> {
        back_off(backoff, &*self.consumer, &self.shared.shutdown).await
    }
}
