//! The consumer loop: order-contact events in, reconciled in batches.
//!
//! For each batch: parse every message; dead-letter the unusable ones (and wait for
//! the broker's acknowledgement); reconcile the rest in one transaction per group of
//! partitions (`worker.apply_lanes`, run concurrently) that also writes their ledger
//! keys and outbox records; only then store the offsets, which
//! librdkafka auto-commits. A crash anywhere before the offset store means the batch
//! is delivered again, and the ledger turns the repeat into a no-op.
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
//! partitions and retry with jittered exponential back-off, while the loop goes on
//! polling the consumer so that the group membership stays alive; anything librdkafka
//! still delivers during the pause is stashed and processed afterwards, in order.

use super::drain::{Received, Ticket};
use super::event::Source;
use super::{dlq_header, KafkaContext, Shared};
use crate::domain::InputError;
use crate::http::chain;
use crate::metrics::METRICS;
use crate::store::{DeadLetter, Reconciled, Request, StoreError};
use futures::FutureExt;
use rand::Rng;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders, OwnedMessage};
use rdkafka::producer::FutureRecord;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

type Kafka = StreamConsumer<KafkaContext>;

/// A message whose offset may move on once its work is durable.
struct Item {
    message: OwnedMessage,
    /// Its partition's generation when it was read (see [`super::drain`]).
    generation: u64,
    outcome: Parsed,
}

enum Parsed {
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

/// How a batch ended.
enum Applied {
    /// Applied, dead letters sent, offsets stored (those not revoked meanwhile).
    Done,
    /// A revocation cancelled it past `worker.drain_timeout`: nothing of it is
    /// committed that the ledger does not know, no offset was stored. Its messages,
    /// to be applied again (those of revoked partitions are dropped then).
    Abandoned(Vec<Received>),
}

/// Bytes of a message's key and value: what `reconcile.max_batch_bytes` counts.
fn size(message: &OwnedMessage) -> usize {
    message.payload().map_or(0, <[u8]>::len) + message.key().map_or(0, <[u8]>::len)
}

pub(super) struct ConsumerLoop {
    shared: Shared,
    consumer: Arc<Kafka>,
    /// Messages read and not yet in a batch, in the order read.
    stash: VecDeque<Received>,
    /// Bytes of the stash, as [`size`] counts them.
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
        self.stash_bytes -= size(&received.message);
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
                        Ok(message) => break drain.tag(message.detach()),
                        Err(e) => {
                            tracing::warn!(error = %e, "consumer error");
                            tokio::time::sleep(self.shared.settings.backoff_initial()).await;
                        }
                    }
                }
            },
        };
        let max_bytes = self.shared.settings.reconcile.max_batch_bytes.max(1);
        let mut bytes = size(&first.message);
        let mut batch = vec![first];
        while batch.len() < max && bytes < max_bytes {
            if let Some(received) = self.unstash() {
                bytes += size(&received.message);
                batch.push(received);
                continue;
            }
            match self.consumer.recv().now_or_never() {
                Some(Ok(message)) => {
                    let received = drain.tag(message.detach());
                    bytes += size(&received.message);
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
                        let received = drain.tag(message.detach());
                        self.stash_bytes += size(&received.message);
                        self.stash.push_back(received);
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "consumer error");
                        tokio::time::sleep(self.shared.settings.backoff_initial()).await;
                    }
                },
            }
        };
        match joined {
            Ok(Ok(Applied::Done)) => Ok(()),
            Ok(Ok(Applied::Abandoned(messages))) => {
                // Read before everything in the stash: they go first.
                for received in messages.into_iter().rev() {
                    self.stash_bytes += size(&received.message);
                    self.stash.push_front(received);
                }
                // A batch abandoned in back-off left the partitions paused.
                resume(&self.consumer);
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(e) => Err(WorkerError::Fatal(
                anyhow::Error::new(e).context("the batch task failed"),
            )),
        }
    }
}

/// One batch being applied, in a task of its own.
struct Apply {
    shared: Shared,
    consumer: Arc<Kafka>,
}

impl Apply {
    async fn run(mut self, batch: Vec<Received>, ticket: Ticket) -> Result<Applied, WorkerError> {
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
            .map(|received| {
                let Received {
                    message,
                    generation,
                } = received;
                let source = source_of(&message);
                let parsed = super::observe::parse_in_span(
                    message.payload(),
                    &source,
                    rules,
                    show_personal_data,
                );
                let outcome = match parsed {
                    Ok(request) => {
                        METRICS.count_blocked(request.input.blocked());
                        Parsed::Valid(request)
                    }
                    Err(e) => {
                        if let InputError::Blocked(blocked) = e {
                            METRICS.count_blocked(blocked);
                        }
                        dead(&e)
                    }
                };
                Item {
                    message,
                    generation,
                    outcome,
                }
            })
            .collect()
    }

    /// The durable part: reconcile, then dead letters; offsets are the caller's.
    async fn process(&mut self, items: &mut [Item]) -> Result<(), WorkerError> {
        self.reconcile_valid(items).await?;
        self.dead_letter(items).await?;
        self.shared.relay_wakeup.notify_one();
        Ok(())
    }

    /// Reconciles the valid items. The batch's partitions are split into at most
    /// `worker.apply_lanes` groups of about equal size, each applied in a transaction
    /// of its own, concurrently: a partition's events all go to one group, in order,
    /// and the locks of `store::reconcile` make groups that touch the same identities
    /// safe, as they do for two instances. A group that PostgreSQL rejects is applied
    /// one event at a time, and the events it rejects become dead letters.
    async fn reconcile_valid(&mut self, items: &mut [Item]) -> Result<(), WorkerError> {
        let mut pending = lanes(items, self.shared.settings.worker.apply_lanes);
        let mut rejected: Vec<usize> = Vec::new();
        let mut attempt = 0;
        while !pending.is_empty() {
            let store = &self.shared.store;
            let outcomes = futures::future::join_all(pending.iter().map(|lane| {
                let requests: Vec<Request> =
                    lane.iter().filter_map(|&i| items[i].request()).collect();
                async move {
                    let started = Instant::now();
                    let outcome = store.reconcile(&requests).await;
                    (requests.len(), started.elapsed(), outcome)
                }
            }))
            .await;
            let mut failed = Vec::new();
            let mut unavailable = None;
            for (lane, (size, took, outcome)) in pending.into_iter().zip(outcomes) {
                match outcome {
                    Ok(results) => {
                        METRICS.batch_size.observe(size as f64);
                        METRICS.batch_duration.observe(took.as_secs_f64());
                        record_results(&results);
                        mark_conflicts(items, &lane, &results);
                    }
                    Err(e @ StoreError::Rejected(_)) => {
                        tracing::warn!(error = %chain(&e), size, "batch rejected; applying its events one by one");
                        rejected.extend(lane);
                    }
                    Err(e) if e.is_transient() => {
                        unavailable = Some(e);
                        failed.push(lane);
                    }
                    Err(e) => {
                        return Err(WorkerError::Fatal(
                            anyhow::Error::new(e).context("reconciliation failed"),
                        ))
                    }
                }
            }
            pending = failed;
            match unavailable {
                Some(e) => {
                    METRICS.retries.with_label_values(&["reconcile"]).inc();
                    tracing::warn!(error = %chain(&e), attempt, "PostgreSQL unavailable; backing off");
                    self.back_off(&mut attempt).await?;
                }
                None => self.resume(),
            }
        }
        rejected.sort_unstable();
        for i in rejected {
            let Some(request) = items[i].request() else {
                continue;
            };
            match self
                .reconcile_with_retry(std::slice::from_ref(&request))
                .await?
            {
                Ok(results) => {
                    record_results(&results);
                    mark_conflicts(items, &[i], &results);
                }
                Err(e) => {
                    let source = source_of(&items[i].message);
                    tracing::warn!(topic = %source.topic, partition = source.partition, offset = source.offset, error = %chain(&e), "event rejected by PostgreSQL");
                    items[i].outcome = Parsed::Dead {
                        code: "rejected",
                        message: "PostgreSQL rejected a value of this event".into(),
                    };
                }
            }
        }
        Ok(())
    }

    /// Retries transient failures until they pass; returns PostgreSQL's rejection of
    /// the data as `Ok(Err(..))`, and stops the worker on anything else.
    async fn reconcile_with_retry(
        &mut self,
        requests: &[Request],
    ) -> Result<Result<Vec<Reconciled>, StoreError>, WorkerError> {
        let mut attempt = 0;
        loop {
            let started = Instant::now();
            match self.shared.store.reconcile(requests).await {
                Ok(results) => {
                    METRICS.batch_size.observe(requests.len() as f64);
                    METRICS
                        .batch_duration
                        .observe(started.elapsed().as_secs_f64());
                    self.resume();
                    return Ok(Ok(results));
                }
                Err(e @ StoreError::Rejected(_)) => {
                    self.resume();
                    return Ok(Err(e));
                }
                Err(e) if e.is_transient() => {
                    METRICS.retries.with_label_values(&["reconcile"]).inc();
                    tracing::warn!(error = %chain(&e), attempt, "PostgreSQL unavailable; backing off");
                    self.back_off(&mut attempt).await?;
                }
                Err(e) => {
                    return Err(WorkerError::Fatal(
                        anyhow::Error::new(e).context("reconciliation failed"),
                    ))
                }
            }
        }
    }

    /// Sends every dead item to the DLQ and waits for the broker's acknowledgement.
    /// A letter the DLQ refuses for good (see [`super::refused_for_good`]) is kept
    /// whole in PostgreSQL instead, with a truncated copy on the DLQ where that fits;
    /// transient failures pause the partitions and retry the letters that failed. A
    /// bad message is never dropped and never stalls its partition.
    async fn dead_letter(&mut self, items: &[Item]) -> Result<(), WorkerError> {
        let mut pending: Vec<(&OwnedMessage, &'static str, &str)> = items
            .iter()
            .filter_map(|item| match &item.outcome {
                Parsed::Dead { code, message } => Some((&item.message, *code, message.as_str())),
                Parsed::Valid(_) => None,
            })
            .collect();
        let mut attempt = 0;
        while !pending.is_empty() {
            let outcomes = self.send_dead_letters(&pending).await;
            let mut failed = Vec::new();
            let mut transient = None;
            for (letter, outcome) in pending.into_iter().zip(outcomes) {
                let (message, code, error) = letter;
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
                    .with_label_values(&[code])
                    .inc();
                METRICS
                    .dead_letter_outcomes
                    .with_label_values(&[outcome])
                    .inc();
                tracing::info!(
                    topic = message.topic(),
                    partition = message.partition(),
                    offset = message.offset(),
                    reason = code,
                    outcome,
                    "event dead-lettered"
                );
            }
            pending = failed;
            match transient {
                Some(e) => {
                    METRICS.retries.with_label_values(&["dead_letter"]).inc();
                    tracing::warn!(error = %e, attempt, "cannot write to the dead-letter topic; backing off");
                    self.back_off(&mut attempt).await?;
                }
                None => self.resume(),
            }
        }
        Ok(())
    }

    /// Keeps a letter the DLQ refused in the `dead_letter` table (retrying while
    /// PostgreSQL is unavailable), then offers the DLQ a copy cut to
    /// `worker.dlq_truncated_bytes` (retrying transient broker errors). Returns the
    /// outcome for the metrics.
    async fn keep_dead_letter(
        &mut self,
        message: &OwnedMessage,
        code: &'static str,
        error: &str,
        refusal: &KafkaError,
    ) -> Result<&'static str, WorkerError> {
        let letter = DeadLetter {
            source_topic: message.topic().to_owned(),
            source_partition: message.partition(),
            source_offset: message.offset(),
            key: message.key().map(<[u8]>::to_vec),
            value: message.payload().map(<[u8]>::to_vec),
            headers: message
                .headers()
                .map(|h| {
                    h.iter()
                        .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                        .collect()
                })
                .unwrap_or_default(),
            reason: code.to_owned(),
            error: error.to_owned(),
        };
        tracing::warn!(
            topic = message.topic(),
            partition = message.partition(),
            offset = message.offset(),
            error = %refusal,
            "the dead-letter topic refuses this letter; keeping it whole in PostgreSQL"
        );
        let mut attempt = 0;
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
                    tracing::warn!(error = %chain(&e), attempt, "PostgreSQL unavailable; backing off");
                    self.back_off(&mut attempt).await?;
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
        let value_size = message.payload().map_or(0, <[u8]>::len).to_string();
        let mut attempt = 0;
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
            let key = message.key().map(cut);
            let value = message.payload().map(cut);
            let mut record: FutureRecord<'_, [u8], [u8]> =
                FutureRecord::to(&self.shared.settings.kafka.dlq_topic).headers(headers);
            if let Some(key) = &key {
                record = record.key(key);
            }
            if let Some(value) = &value {
                record = record.payload(value);
            }
            let sent = match super::enqueue(&self.shared.producer, record).await {
                Ok(delivery) => match delivery.await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err((e, _))) => Err(e),
                    Err(_) => Err(KafkaError::Canceled),
                },
                Err(e) => Err(e),
            };
            match sent {
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
                    tracing::warn!(error = %e, attempt, "cannot write to the dead-letter topic; backing off");
                    self.back_off(&mut attempt).await?;
                }
            }
        }
    }

    /// Hands every letter to the producer, then waits for each acknowledgement;
    /// returns one outcome per letter.
    async fn send_dead_letters(
        &self,
        dead: &[(&OwnedMessage, &'static str, &str)],
    ) -> Vec<Result<(), KafkaError>> {
        let topic = &self.shared.settings.kafka.dlq_topic;
        let mut deliveries = Vec::with_capacity(dead.len());
        for (message, code, error) in dead {
            let mut headers = OwnedHeaders::new();
            if let Some(original) = message.headers() {
                for header in original.iter() {
                    headers = headers.insert(header);
                }
            }
            for (key, value) in dlq_headers(message, code, error) {
                headers = headers.insert(Header {
                    key,
                    value: Some(&value),
                });
            }
            let mut record: FutureRecord<'_, [u8], [u8]> = FutureRecord::to(topic).headers(headers);
            if let Some(key) = message.key() {
                record = record.key(key);
            }
            if let Some(payload) = message.payload() {
                record = record.payload(payload);
            }
            deliveries.push(super::enqueue(&self.shared.producer, record).await);
        }
        let mut outcomes = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            outcomes.push(match delivery {
                Ok(delivery) => match delivery.await {
                    Ok(Ok(_)) => Ok(()),
                    Ok(Err((e, _))) => Err(e),
                    Err(_) => Err(KafkaError::Canceled),
                },
                Err(e) => Err(e),
            });
        }
        outcomes
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

    /// Pauses the assignment (first time), then sleeps with jittered exponential
    /// back-off; returns early on shutdown. The consumer loop polls meanwhile.
    async fn back_off(&mut self, attempt: &mut u32) -> Result<(), WorkerError> {
        pause(&self.consumer);
        let settings = &self.shared.settings;
        let ceiling = settings
            .backoff_initial()
            .saturating_mul(1 << (*attempt).min(16))
            .min(settings.backoff_max());
        let delay = Duration::from_millis(
            rand::thread_rng()
                .gen_range(ceiling.as_millis() as u64 / 2..=ceiling.as_millis() as u64),
        );
        *attempt += 1;
        tokio::select! {
            biased;
            _ = self.shared.shutdown.cancelled() => Err(WorkerError::Cancelled),
            _ = tokio::time::sleep(delay) => Ok(()),
        }
    }

    fn resume(&mut self) {
        resume(&self.consumer);
    }
}

/// Pauses the assignment, unless it is paused already.
fn pause(consumer: &Kafka) {
    let paused = &consumer.context().paused;
    // Set first: a partition assigned from now on starts paused.
    if paused.swap(true, Ordering::SeqCst) {
        return;
    }
    let done = consumer
        .assignment()
        .is_ok_and(|assignment| consumer.pause(&assignment).is_ok());
    if done {
        METRICS.partitions_paused.set(1);
    } else {
        paused.store(false, Ordering::SeqCst);
    }
}

/// Resumes the assignment after a back-off.
fn resume(consumer: &Kafka) {
    let paused = &consumer.context().paused;
    if !paused.load(Ordering::SeqCst) {
        return;
    }
    if let Ok(assignment) = consumer.assignment() {
        if let Err(e) = consumer.resume(&assignment) {
            tracing::warn!(error = %e, "cannot resume partitions");
            return;
        }
    }
    paused.store(false, Ordering::SeqCst);
    METRICS.partitions_paused.set(0);
    tracing::info!("resumed after back-off");
}

/// The `dlq.*` headers of a letter: why, and where it was read.
fn dlq_headers(
    message: &OwnedMessage,
    code: &'static str,
    error: &str,
) -> [(&'static str, String); 5] {
    [
        (dlq_header::REASON, code.to_owned()),
        (dlq_header::ERROR, error.to_owned()),
        (dlq_header::SOURCE_TOPIC, message.topic().to_owned()),
        (
            dlq_header::SOURCE_PARTITION,
            message.partition().to_string(),
        ),
        (dlq_header::SOURCE_OFFSET, message.offset().to_string()),
    ]
}

fn source_of(message: &OwnedMessage) -> Source {
    Source {
        topic: message.topic().to_owned(),
        partition: message.partition(),
        offset: message.offset(),
    }
}

fn dead(error: &InputError) -> Parsed {
    Parsed::Dead {
        code: error.code(),
        message: error.to_string(),
    }
}

/// Turns the events whose `eventId` was taken by other content into dead letters;
/// `lane` holds the indexes of the items `results` answer, in order.
fn mark_conflicts(items: &mut [Item], lane: &[usize], results: &[Reconciled]) {
    for (&i, result) in lane.iter().zip(results) {
        if *result == Reconciled::Conflict {
            items[i].outcome = Parsed::Dead {
                code: "event_id_conflict",
                message:
                    "this eventId was already applied with other content; the first event stands"
                        .into(),
            };
        }
    }
}

fn record_results(results: &[Reconciled]) {
    for result in results {
        match result {
            Reconciled::Applied { .. } => METRICS.events_applied.inc(),
            Reconciled::Replayed => METRICS.events_replayed.inc(),
            // Counted by the store, then dead-lettered.
            Reconciled::Conflict => {}
            // Counted by the store, for events and HTTP requests alike.
            Reconciled::Suppressed => {}
        }
    }
}
