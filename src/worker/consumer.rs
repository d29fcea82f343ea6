//! The consumer loop: order-contact events in, reconciled in batches.
//!
//! For each batch ([`super::batch`]): parse every message; reconcile the valid ones in
//! one transaction per group of partitions that also writes their ledger keys and
//! outbox records; dead-letter the unusable ones ([`super::dead_letters`]) and wait
//! for the broker's acknowledgement; only then store the offsets, which librdkafka
//! auto-commits. A crash anywhere before the offset store means the batch is
//! delivered again, and the ledger turns the repeat into a no-op.
//!
//! A batch is whatever has already arrived, up to `reconcile.max_batch` messages and
//! about `reconcile.max_batch_bytes` of keys and values: the loop
//! never waits to fill one. Messages are applied in partition order, one batch at a
//! time. The batch runs in a task of its own while the loop keeps polling the
//! consumer, so that a rebalance is served mid-batch and can drain the batch (see
//! [`super::drain`]); what arrives meanwhile waits in the stash, up to
//! `reconcile.max_batch_bytes` of it.
//!
//! Transient failures (PostgreSQL down, the DLQ unwritable) pause the assigned
//! partitions and retry with jittered exponential back-off ([`super::pause`]), while
//! the loop goes on polling the consumer so that the group membership stays alive;
//! anything librdkafka still delivers during the pause is stashed and processed
//! afterwards, in order.

use super::batch::{Applied, Apply};
use super::drain::Received;
use super::event::{self, Source};
use super::step::{Pause, WorkerError};
use super::{Kafka, Shared};
use futures::FutureExt;
use rdkafka::consumer::{CommitMode, Consumer};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// A copy of a message just read, with no Kafka type left in it.
fn read(message: &BorrowedMessage<'_>) -> event::Message {
    event::Message {
        key: message.key().map(<[u8]>::to_vec),
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
        position: Source {
            topic: message.topic().to_owned(),
            partition: message.partition(),
            offset: message.offset(),
        },
        timestamp_ms: message.timestamp().to_millis(),
    }
}

pub(super) struct ConsumerLoop {
    shared: Shared,
    consumer: Arc<Kafka>,
    /// Messages read and not yet in a batch, in the order read.
    stash: VecDeque<Received>,
    /// Bytes of the stash, as [`event::Message::size`] counts them.
    stash_bytes: usize,
}

impl ConsumerLoop {
    pub(super) fn new(shared: Shared, consumer: Arc<Kafka>) -> ConsumerLoop {
        ConsumerLoop {
            shared,
            consumer,
            stash: VecDeque::new(),
            stash_bytes: 0,
        }
    }

    /// Runs until shutdown; then commits what is done.
    pub(super) async fn run(mut self) -> anyhow::Result<()> {
        let topic = self.shared.settings.kafka.input_topic.clone();
        self.consumer.subscribe(&[&topic])?;
        tracing::info!(%topic, group = %self.shared.settings.kafka.group_id, "consuming");
        let result = loop {
            let Some(batch) = self.next_batch().await else {
                break Ok(());
            };
            match self.apply(batch).await {
                Ok(()) => {}
                Err(WorkerError::Cancelled) => break Ok(()),
                Err(WorkerError::Fatal(e)) => break Err(e),
            }
        };
        self.commit();
        result
    }

    /// Synchronous commit of every stored offset (shutdown; revocations do the same
    /// in the rebalance callback).
    fn commit(&self) {
        match self.consumer.commit_consumer_state(CommitMode::Sync) {
            Ok(()) => tracing::info!("offsets committed"),
            Err(e) if super::nothing_to_commit(&e) => {}
            Err(e) => {
                tracing::warn!(error = %e, "could not commit offsets on shutdown; they will be redelivered")
            }
        }
    }

    fn unstash(&mut self) -> Option<Received> {
        let received = self.stash.pop_front()?;
        self.stash_bytes -= received.message.size();
        Some(received)
    }

    /// Waits for one message, then takes whatever else is already there; `None` once
    /// shutdown is requested (the stash is left for the next owner to read again).
    async fn next_batch(&mut self) -> Option<Vec<Received>> {
        if self.shared.shutdown.is_cancelled() {
            return None;
        }
        let max = self.shared.settings.reconcile.max_batch.max(1);
        let drain = self.consumer.context().drain.clone();
        let first = match self.unstash() {
            Some(received) => received,
            None => loop {
                tokio::select! {
                    biased;
                    _ = self.shared.shutdown.cancelled() => return None,
                    received = self.consumer.recv() => match received {
                        Ok(message) => break drain.tag(read(&message)),
                        Err(e) => {
                            tracing::warn!(error = %e, "consumer error");
                            tokio::time::sleep(self.shared.settings.worker.backoff_initial).await;
                        }
                    }
                }
            },
        };
        let max_bytes = self.shared.settings.reconcile.max_batch_bytes.max(1);
        let mut bytes = first.message.size();
        let mut batch = vec![first];
        while batch.len() < max && bytes < max_bytes {
            if let Some(received) = self.unstash() {
                bytes += received.message.size();
                batch.push(received);
                continue;
            }
            match self.consumer.recv().now_or_never() {
                Some(Ok(message)) => {
                    let received = drain.tag(read(&message));
                    bytes += received.message.size();
                    batch.push(received);
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "consumer error");
                    break;
                }
                None => break,
            }
        }
        self.shared.health.set_broker_reachable(true);
        Some(batch)
    }

    /// Applies `batch` in a task of its own, polling the consumer meanwhile: a
    /// rebalance is served mid-batch, and its callback waits for the batch or abandons
    /// it ([`super::drain`]). The stash takes what arrives, up to
    /// `reconcile.max_batch_bytes` (beyond that the loop stops polling until the batch
    /// is done; while the partitions are paused it takes everything, which is little).
    async fn apply(&mut self, batch: Vec<Received>) -> Result<(), WorkerError> {
        let drain = self.consumer.context().drain.clone();
        let (batch, ticket) = drain.begin(batch);
        if batch.is_empty() {
            return Ok(());
        }
        let work = Apply {
            shared: self.shared.clone(),
            consumer: self.consumer.clone(),
        };
        let mut task = tokio::spawn(work.run(batch, ticket));
        let max_bytes = self.shared.settings.reconcile.max_batch_bytes.max(1);
        let joined = loop {
            let room = self.stash_bytes < max_bytes
                || self.consumer.context().paused.load(Ordering::SeqCst);
            tokio::select! {
                joined = &mut task => break joined,
                received = self.consumer.recv(), if room => match received {
                    Ok(message) => {
                        let received = drain.tag(read(&message));
                        self.stash_bytes += received.message.size();
                        self.stash.push_back(received);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "consumer error");
                        tokio::time::sleep(self.shared.settings.worker.backoff_initial).await;
                    }
                },
            }
        };
        match joined {
            Ok(Ok(Applied::Done)) => Ok(()),
            Ok(Ok(Applied::Abandoned(messages))) => {
                // Read before everything in the stash: they go first.
                for received in messages.into_iter().rev() {
                    self.stash_bytes += received.message.size();
                    self.stash.push_front(received);
                }
                // A batch abandoned in back-off left the partitions paused.
                Pause::resume(&*self.consumer);
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(e) => Err(WorkerError::Fatal(
                anyhow::Error::new(e).context("the batch task failed"),
            )),
        }
    }
}
