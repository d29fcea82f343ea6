//! One batch, applied in a task of its own: parse every message, reconcile the valid
//! ones, dead-letter the rest ([`super::dead_letters`]), then store the offsets of
//! what is durable.
//!
//! The batch's partitions are split into at most `Tuning::apply_lanes` groups of about
//! equal size, each applied in a transaction of its own, concurrently: a partition's
//! events all go to one group, in order, and the locks of `store::reconcile` make
//! groups that touch the same identities safe, as they do for two instances. A group
//! that PostgreSQL rejects is applied one event at a time, and the events it rejects
//! become dead letters. Transient failures pause the assignment and retry with the
//! shared back-off ([`crate::backoff`]).

use super::drain::{Received, Ticket};
use super::event::Source;
use super::{pause, KafkaContext, Shared};
use crate::backoff::{Backoff, Cancelled};
use crate::domain::InputError;
use crate::domain::Request;
use crate::metrics::METRICS;
use crate::store::{Reconciled, StoreError};
use crate::telemetry::chain;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::{Message, OwnedMessage};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

pub(super) type Kafka = StreamConsumer<KafkaContext>;

/// A message whose offset may move on once its work is durable.
pub(super) struct Item {
    pub(super) message: OwnedMessage,
    /// Its partition's generation when it was read (see [`super::drain`]).
    generation: u64,
    pub(super) outcome: Parsed,
}

pub(super) enum Parsed {
    Valid(Request),
    Dead { code: &'static str, message: String },
}

impl Item {
    fn request(&self) -> Option<Request> {
        match &self.outcome {
            Parsed::Valid(request) => Some(request.clone()),
            Parsed::Dead { .. } => None,
        }
    }
}

/// The indexes of the valid items, in at most `lanes` groups: whole partitions per
/// group, the largest partitions first, each to the group with the fewest events so
/// far; item order inside a group.
fn lanes(items: &[Item], lanes: usize) -> Vec<Vec<usize>> {
    let mut partitions: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
    for (i, item) in items.iter().enumerate() {
        if matches!(item.outcome, Parsed::Valid(_)) {
            partitions
                .entry(item.message.partition())
                .or_default()
                .push(i);
        }
    }
    let mut by_size: Vec<Vec<usize>> = partitions.into_values().collect();
    by_size.sort_by_key(|p| std::cmp::Reverse(p.len()));
    let mut groups: Vec<Vec<usize>> = vec![Vec::new(); lanes.clamp(1, by_size.len().max(1))];
    for partition in by_size {
        let smallest = groups
            .iter_mut()
            .min_by_key(|g| g.len())
            .expect("at least one group");
        smallest.extend(partition);
    }
    groups.retain(|g| !g.is_empty());
    for group in &mut groups {
        group.sort_unstable();
    }
    groups
}

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("shutdown requested during a retry")]
    Cancelled,
    #[error(transparent)]
    Fatal(#[from] anyhow::Error),
}

impl From<Cancelled> for WorkerError {
    fn from(_: Cancelled) -> WorkerError {
        WorkerError::Cancelled
    }
}

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
        let mut items = self.parse(batch);
        let processed = tokio::select! {
            biased;
            _ = cancelled.cancelled() => None,
            processed = self.process(&mut items) => Some(processed),
        };
        match processed {
            // Dropping `process` dropped its open transactions: they roll back.
            None => Ok(Applied::Abandoned(
                items
                    .into_iter()
                    .map(|item| Received {
                        message: item.message,
                        generation: item.generation,
                    })
                    .collect(),
            )),
            Some(Err(e)) => Err(e),
            Some(Ok(())) => {
                ticket.finish(|current| self.store_offsets(&items, current));
                self.shared.health.progressed();
                Ok(Applied::Done)
            }
        }
    }

    fn parse(&self, batch: Vec<Received>) -> Vec<Item> {
        METRICS.events_consumed.inc_by(batch.len() as u64);
        super::observe::observe_batch_age(batch.iter().map(|r| &r.message));
        let rules = self.shared.settings.reconcile.input_rules();
        let show_personal_data = self.shared.settings.log.show_personal_data;
        batch
            .into_iter()
            .map(
                |Received {
                     message,
                     generation,
                 }| {
                    let source = source_of(&message);
                    let parsed = super::observe::parse_in_span(
                        message.payload(),
                        &source,
                        rules,
                        show_personal_data,
                    );
                    let outcome = match parsed {
                        Ok(request) => {
                            METRICS.count_blocked(request.input.blocked().fields());
                            Parsed::Valid(request)
                        }
                        Err(e) => {
                            if let InputError::Blocked(blocked) = e {
                                METRICS.count_blocked(blocked.fields());
                            }
                            Parsed::Dead {
                                code: e.code(),
                                message: e.to_string(),
                            }
                        }
                    };
                    Item {
                        message,
                        generation,
                        outcome,
                    }
                },
            )
            .collect()
    }

    /// The durable part: reconcile, then dead letters; offsets are the caller's.
    async fn process(&self, items: &mut [Item]) -> Result<(), WorkerError> {
        self.reconcile_valid(items).await?;
        self.dead_letter(items).await?;
        Ok(())
    }

    /// Reconciles the valid items, lanes concurrently (see the module's doc). What a
    /// transient failure interrupts is retried from the event it stopped at.
    async fn reconcile_valid(&self, items: &mut [Item]) -> Result<(), WorkerError> {
        let mut pending = lanes(items, self.shared.settings.tuning.apply_lanes);
        let mut backoff = self.shared.settings.backoff();
        while !pending.is_empty() {
            let store = &self.shared.store;
            let outcomes = futures::future::join_all(pending.iter().map(|lane| {
                let requests: Vec<Request> =
                    lane.iter().filter_map(|&i| items[i].request()).collect();
                async move {
                    let started = Instant::now();
                    let outcome = store.reconcile_each(&requests).await;
                    (started.elapsed(), outcome)
                }
            }))
            .await;
            let mut failed = Vec::new();
            let mut unavailable = None;
            for (lane, (took, outcome)) in pending.into_iter().zip(outcomes) {
                let fatal = |e: StoreError| {
                    WorkerError::Fatal(anyhow::Error::new(e).context("reconciliation failed"))
                };
                let results = match outcome {
                    Ok(results) => results,
                    Err(e) if e.is_transient() => {
                        unavailable = Some(e);
                        failed.push(lane);
                        continue;
                    }
                    Err(e) => return Err(fatal(e)),
                };
                METRICS.batch_size.observe(lane.len() as f64);
                METRICS.batch_duration.observe(took.as_secs_f64());
                // One result per event up to the first that is not a rejection.
                for (k, result) in results.into_iter().enumerate() {
                    let item = &mut items[lane[k]];
                    match result {
                        Ok(result) => settle(item, result),
                        Err(e @ StoreError::Rejected(_)) => reject(item, &e),
                        Err(e) if e.is_transient() => {
                            unavailable = Some(e);
                            failed.push(lane[k..].to_vec());
                        }
                        Err(e) => return Err(fatal(e)),
                    }
                }
            }
            pending = failed;
            match unavailable {
                Some(e) => {
                    METRICS.retries.with_label_values(&["reconcile"]).inc();
                    tracing::warn!(error = %chain(&e), attempt = backoff.attempt(), "PostgreSQL unavailable; backing off");
                    self.back_off(&mut backoff).await?;
                }
                None => self.resume(),
            }
        }
        Ok(())
    }

    /// Stores, per partition, the offset after the last message of the batch, for the
    /// messages `current` says were not revoked since they were read.
    fn store_offsets(&self, items: &[Item], current: &dyn Fn(i32, u64) -> bool) {
        let mut last: BTreeMap<(&str, i32), i64> = BTreeMap::new();
        for item in items {
            if !current(item.message.partition(), item.generation) {
                continue;
            }
            let entry = last
                .entry((item.message.topic(), item.message.partition()))
                .or_insert(i64::MIN);
            *entry = (*entry).max(item.message.offset());
        }
        for ((topic, partition), offset) in last {
            // librdkafka stores offset + 1: the next message to read.
            if let Err(e) = self.consumer.store_offset(topic, partition, offset) {
                tracing::debug!(topic, partition, error = %e, "offset not stored");
            }
        }
    }

    /// Pauses the assignment (first time), then waits for the next delay; returns
    /// early on shutdown. The consumer loop polls meanwhile.
    pub(super) async fn back_off(&self, backoff: &mut Backoff) -> Result<(), WorkerError> {
        pause::pause(&self.consumer);
        Ok(backoff.wait(&self.shared.shutdown).await?)
    }

    pub(super) fn resume(&self) {
        pause::resume(&self.consumer);
    }
}

pub(super) fn source_of(message: &OwnedMessage) -> Source {
    Source {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
    }
}

/// Counts an applied event; one whose `eventId` was taken by other content becomes a
/// dead letter.
fn settle(item: &mut Item, result: Reconciled) {
    match result {
        Reconciled::Applied { .. } => METRICS.events_applied.inc(),
        Reconciled::Replayed => METRICS.events_replayed.inc(),
        // Counted by the store; dead-lettered here.
        Reconciled::Conflict => {
            item.outcome = Parsed::Dead {
                code: "event_id_conflict",
                message:
                    "this eventId was already applied with other content; the first event stands"
                        .into(),
            }
        }
        // Counted by the store, for events and HTTP requests alike.
        Reconciled::Suppressed => {}
    }
}

/// An event PostgreSQL refuses (a value it cannot store) becomes a dead letter.
fn reject(item: &mut Item, error: &StoreError) {
    let source = source_of(&item.message);
    tracing::warn!(topic = %source.topic, partition = source.partition, offset = source.offset, error = %chain(error), "event rejected by PostgreSQL");
    item.outcome = Parsed::Dead {
        code: "rejected",
        message: "PostgreSQL rejected a value of this event".into(),
    };
}
