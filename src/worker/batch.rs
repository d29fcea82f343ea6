//! One batch, applied in a task of its own: the Kafka side of [`super::step`]. The
//! step reconciles the batch and says what to dead-letter and what to commit; this
//! produces the dead letters ([`super::dead_letters`]), then stores the offsets, for
//! the partitions not revoked meanwhile ([`super::drain`]). Transient failures pause
//! the assignment ([`super::pause`]) while the batch backs off.

use super::drain::{Received, Ticket};
use super::event::Message;
use super::step::{Step, StepSettings, WorkerError};
use super::{Kafka, Shared};
use rdkafka::consumer::Consumer;
use std::collections::BTreeMap;
use std::sync::Arc;

/// How a batch ended.
pub(super) enum Applied {
    /// Applied, dead letters sent, offsets stored (those not revoked meanwhile).
    Done,
    /// A revocation cancelled it past `worker.drain_timeout`: nothing of it is
    /// committed that the ledger does not know, no offset was stored. Its messages,
    /// to be applied again (those of revoked partitions are dropped then).
    Abandoned(Vec<Received>),
}

/// One batch being applied, in a task of its own.
pub(super) struct Apply {
    pub(super) shared: Shared,
    pub(super) consumer: Arc<Kafka>,
}

impl Apply {
    pub(super) async fn run(
        self,
        batch: Vec<Received>,
        ticket: Ticket,
    ) -> Result<Applied, WorkerError> {
        let cancelled = ticket.cancelled();
        // A batch holds one generation per partition: `Drain::begin` dropped the rest.
        let generations: BTreeMap<i32, u64> = batch
            .iter()
            .map(|r| (r.message.position.partition, r.generation))
            .collect();
        let messages: Vec<Message> = batch.into_iter().map(|r| r.message).collect();
        let processed = tokio::select! {
            biased;
            _ = cancelled.cancelled() => None,
            processed = self.process(&messages) => Some(processed),
        };
        match processed {
            // Dropping `process` dropped its open transactions: they roll back.
            None => Ok(Applied::Abandoned(
                messages
                    .into_iter()
                    .map(|message| Received {
                        generation: generations[&message.position.partition],
                        message,
                    })
                    .collect(),
            )),
            Some(Err(e)) => Err(e),
            Some(Ok(commit)) => {
                ticket.finish(|current| self.store_offsets(&commit, &generations, current));
                self.shared.health.progressed();
                Ok(Applied::Done)
            }
        }
    }

    /// The durable part: the step, then its dead letters; returns the offsets to
    /// store, which are the caller's.
    async fn process(
        &self,
        messages: &[Message],
    ) -> Result<BTreeMap<(String, i32), i64>, WorkerError> {
        let step = Step::new(
            self.shared.store.clone(),
            StepSettings::from_settings(&self.shared.settings),
        );
        let outcome = step
            .apply(messages, &*self.consumer, &self.shared.shutdown)
            .await?;
        self.dead_letter(&outcome.dead_letters).await?;
        Ok(outcome.commit)
    }

    /// Stores the offsets to commit of the partitions `current` says were not revoked
    /// since the batch was read.
    fn store_offsets(
        &self,
        commit: &BTreeMap<(String, i32), i64>,
        generations: &BTreeMap<i32, u64>,
        current: &dyn Fn(i32, u64) -> bool,
    ) {
        for ((topic, partition), next) in commit {
            if !current(*partition, generations[partition]) {
                continue;
            }
            // librdkafka stores offset + 1: the next message to read.
            if let Err(e) = self.consumer.store_offset(topic, *partition, next - 1) {
                tracing::debug!(topic, partition, error = %e, "offset not stored");
            }
        }
    }
}
