//! The outbox relay: publishes committed outbox rows to the identities topic.
//!
//! Only the holder of the relay lease publishes (see `store::outbox`). Rounds are
//! sequential: read the next rows from the head of the outbox (in id order), publish
//! them, delete them. Nothing of a later round is sent before the previous round is
//! settled, so records of one key leave in version order.
//!
//! `relay.mode = "exactly_once"` (the default): every round is one Kafka transaction
//! of a producer whose `transactional.id` belongs to the relay lease (derived from the
//! group and the output topic, the same on every instance). Taking the lease runs
//! `init_transactions`, which fences any earlier holder: its open transaction is
//! aborted and it can commit nothing more. Each round's transaction also writes the
//! round's outbox ids to a small compacted state topic (`<output>.relay-state`); a
//! new holder reads the last committed one back (`read_committed`) and deletes those
//! rows before publishing, so a round committed to Kafka is never published again,
//! even when its holder died between the Kafka commit and the outbox delete.
//! Consumers with `isolation.level=read_committed` see every record exactly once.
//!
//! `relay.mode = "at_least_once"`, for brokers without transactions: the same rounds
//! with the plain idempotent producer. A round's acknowledged prefix is deleted; a
//! failed delete (a database blip) is retried for the same ids before anything else
//! is read, so it repeats nothing. Only a crash between the broker's acknowledgement
//! and the delete repeats the rows of that one round, in their order.

use super::{enqueue, KafkaContext, Shared};
use crate::config::RelayMode;
use crate::metrics::METRICS;
use crate::store::{OutboxRow, RelayLease};
use crate::telemetry::chain;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use std::time::{Duration, Instant};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// librdkafka's blocking transaction calls wait at most this long.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(30);

/// The state topic of the exactly-once relay.
pub fn state_topic(output_topic: &str) -> String {
    format!("{output_topic}.relay-state")
}

/// The relay lease's `transactional.id`: one per deployment (group) and output.
pub fn transactional_id(group_id: &str, output_topic: &str) -> String {
    format!("identity-reconciler-relay/{group_id}/{output_topic}")
}

/// Runs until shutdown; then flushes the producer.
pub(super) async fn run(shared: Shared) -> anyhow::Result<()> {
    let idle = shared.settings.relay.idle_poll;
    tracing::info!(mode = ?shared.settings.relay.mode, "outbox relay started");
    let mut backoff = shared.settings.backoff();
    // Ids the broker has taken (committed) but the outbox still holds: deleted before
    // anything else is read, across lease losses.
    let mut undeleted: Vec<i64> = Vec::new();
    // Kept across leases while it works; dropped after any failure, so that the next
    // lease starts with a new one.
    let mut publisher: Option<Publisher> = None;
    while !shared.shutdown.is_cancelled() {
        match lead(&shared, idle, &mut undeleted, &mut publisher).await {
            Ok(()) => backoff.reset(),
            Err(e) => {
                METRICS.retries.with_label_values(&["relay"]).inc();
                tracing::warn!(error = %chain(e.as_ref()), attempt = backoff.attempt(), "outbox relay interrupted; retrying");
                if backoff.wait(&shared.shutdown).await.is_err() {
                    break;
                }
            }
        }
    }
    let producer = shared.producer.clone();
    tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(10))).await??;
    Ok(())
}

/// How a round reaches the broker.
enum Publisher {
    Plain(FutureProducer<KafkaContext>),
    Transactional {
        producer: FutureProducer<KafkaContext>,
        state_topic: String,
    },
}

impl Publisher {
    /// At-least-once: the shared producer. Exactly-once: a new transactional
    /// producer, initialised, which fences any earlier holder.
    async fn new(shared: &Shared) -> Result<Publisher, BoxError> {
        let settings = &shared.settings;
        match settings.relay.mode {
            RelayMode::AtLeastOnce => Ok(Publisher::Plain(shared.producer.clone())),
            RelayMode::ExactlyOnce => {
                let id = transactional_id(&settings.kafka.group_id, &settings.kafka.output_topic);
                let producer = settings.kafka.transactional_producer(
                    &shared.brokers,
                    shared.health.clone(),
                    &id,
                )?;
                let initialising = producer.clone();
                tokio::task::spawn_blocking(move || {
                    initialising.init_transactions(TRANSACTION_TIMEOUT)
                })
                .await??;
                tracing::info!(transactional_id = %id, "relay producer initialised; earlier holders are fenced");
                Ok(Publisher::Transactional {
                    producer,
                    state_topic: state_topic(&settings.kafka.output_topic),
                })
            }
        }
    }

    /// For a lease just taken: the ids of the last round committed to Kafka (by any
    /// holder), which the outbox may still hold.
    ///
    /// A producer kept from an earlier lease of this process is still the newest
    /// holder's only if nobody took the lease meanwhile; if somebody did, their
    /// `init_transactions` fenced it and its next commit fails, which drops it.
    async fn committed(&self, shared: &Shared) -> Result<Vec<i64>, BoxError> {
        match self {
            Publisher::Plain(_) => Ok(Vec::new()),
            Publisher::Transactional { state_topic, .. } => {
                let config = shared.settings.kafka.reader_config(
                    &shared.brokers,
                    "identity-reconciler-relay-state",
                    true,
                );
                let topic = state_topic.clone();
                Ok(
                    tokio::task::spawn_blocking(move || last_committed_round(config, &topic))
                        .await??,
                )
            }
        }
    }

    /// Publishes `rows` in order; returns the ids the broker has taken (for a
    /// transaction, all or none), and the failure that stopped the rest, if any.
    async fn publish(&self, output: &str, rows: &[OutboxRow]) -> (Vec<i64>, Option<BoxError>) {
        match self {
            Publisher::Plain(producer) => {
                let mut deliveries = Vec::with_capacity(rows.len());
                for row in rows {
                    match enqueue(producer, record(output, row)).await {
                        Ok(delivery) => deliveries.push(delivery),
                        Err(e) => return acknowledged(rows, deliveries, Some(e)).await,
                    }
                }
                acknowledged(rows, deliveries, None).await
            }
            Publisher::Transactional {
                producer,
                state_topic,
            } => match transaction(producer, state_topic, output, rows).await {
                Ok(()) => (rows.iter().map(|r| r.id).collect(), None),
                Err(e) => {
                    // Nothing of it is visible to read_committed consumers; a failed
                    // abort (fenced, fatal) is settled by the next holder's init.
                    let aborting = producer.clone();
                    let _ = tokio::task::spawn_blocking(move || {
                        aborting.abort_transaction(TRANSACTION_TIMEOUT)
                    })
                    .await;
                    (Vec::new(), Some(e))
                }
            },
        }
    }
}

fn record<'a>(topic: &'a str, row: &'a OutboxRow) -> FutureRecord<'a, str, str> {
    let mut record: FutureRecord<'_, str, str> = FutureRecord::to(topic).key(&row.key);
    if let Some(payload) = &row.payload {
        record = record.payload(payload);
    }
    record
}

/// The acknowledged prefix of `rows` (deliveries are in row order), and the first
/// failure.
async fn acknowledged(
    rows: &[OutboxRow],
    deliveries: Vec<rdkafka::producer::DeliveryFuture>,
    mut failure: Option<KafkaError>,
) -> (Vec<i64>, Option<BoxError>) {
    let mut ids = Vec::new();
    for (row, delivery) in rows.iter().zip(deliveries) {
        match delivery.await {
            Ok(Ok(_)) if failure.is_none() => ids.push(row.id),
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => {
                failure.get_or_insert(e);
            }
            Err(_) => {
                failure.get_or_insert(KafkaError::Canceled);
            }
        }
    }
    (ids, failure.map(Into::into))
}

/// One round as one transaction: the records, then the round's ids on the state topic.
async fn transaction(
    producer: &FutureProducer<KafkaContext>,
    state_topic: &str,
    output: &str,
    rows: &[OutboxRow],
) -> Result<(), BoxError> {
    producer.begin_transaction()?;
    let mut deliveries = Vec::with_capacity(rows.len() + 1);
    for row in rows {
        deliveries.push(enqueue(producer, record(output, row)).await?);
    }
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let state = serde_json::json!({ "ids": ids }).to_string();
    let state_record: FutureRecord<'_, str, str> =
        FutureRecord::to(state_topic).key("round").payload(&state);
    deliveries.push(enqueue(producer, state_record).await?);
    let committing = producer.clone();
    tokio::task::spawn_blocking(move || committing.commit_transaction(TRANSACTION_TIMEOUT))
        .await??;
    for delivery in deliveries {
        match delivery.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => return Err(e.into()),
            Err(_) => return Err(KafkaError::Canceled.into()),
        }
    }
    Ok(())
}

/// The outbox ids of the last round committed to the state topic (read_committed),
/// or none. Reads the partition's tail (a committed round takes two offsets: its
/// record and the commit marker), the whole partition if the tail holds none.
fn last_committed_round(config: rdkafka::ClientConfig, topic: &str) -> Result<Vec<i64>, BoxError> {
    let consumer: BaseConsumer = config.create()?;
    let (low, high) = consumer.fetch_watermarks(topic, 0, TRANSACTION_TIMEOUT)?;
    for start in [(high - 64).max(low), low] {
        if high <= start && start == low {
            return Ok(Vec::new());
        }
        let mut assignment = TopicPartitionList::new();
        assignment.add_partition_offset(topic, 0, Offset::Offset(start))?;
        consumer.assign(&assignment)?;
        let deadline = Instant::now() + TRANSACTION_TIMEOUT;
        let mut last = None;
        loop {
            if let Some(received) = consumer.poll(Duration::from_millis(100)) {
                let message = received?;
                if let Some(payload) = message.payload() {
                    last = Some(payload.to_vec());
                }
            }
            let position = consumer
                .position()?
                .find_partition(topic, 0)
                .and_then(|p| p.offset().to_raw())
                .unwrap_or(-1);
            if position >= high {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!("timed out reading the relay state topic {topic}").into());
            }
        }
        if let Some(last) = last {
            let state: serde_json::Value = serde_json::from_slice(&last)?;
            let ids = state["ids"]
                .as_array()
                .ok_or("a relay state record without ids")?
                .iter()
                .filter_map(serde_json::Value::as_i64)
                .collect();
            return Ok(ids);
        }
        if start == low {
            break;
        }
    }
    Ok(Vec::new())
}

/// Takes the lease (or waits for it) and relays until shutdown or an error.
async fn lead(
    shared: &Shared,
    idle: Duration,
    undeleted: &mut Vec<i64>,
    kept: &mut Option<Publisher>,
) -> Result<(), BoxError> {
    let Some(mut lease) = shared.store.try_relay_lease().await? else {
        // Another instance relays; look again later.
        tokio::select! {
            _ = shared.shutdown.cancelled() => {}
            _ = tokio::time::sleep(idle * 5) => {}
        }
        return Ok(());
    };
    tracing::info!("relay lease taken; publishing the outbox");
    let publisher = match kept.take() {
        Some(publisher) => publisher,
        None => Publisher::new(shared).await?,
    };
    undeleted.extend(publisher.committed(shared).await?);
    let mut broken = false;
    let result = relay_rounds(shared, idle, undeleted, &mut lease, &publisher, &mut broken).await;
    // A database failure leaves the producer as good as it was.
    if !broken {
        *kept = Some(publisher);
    }
    result
}

/// Rounds until shutdown or an error.
async fn relay_rounds(
    shared: &Shared,
    idle: Duration,
    undeleted: &mut Vec<i64>,
    lease: &mut RelayLease,
    publisher: &Publisher,
    broken: &mut bool,
) -> Result<(), BoxError> {
    let output = &shared.settings.kafka.output_topic;
    // `None`: not checked yet. (Subtracting from `Instant::now()` panics on a host
    // that has been up for less than that long.)
    let mut backlog_checked: Option<Instant> = None;
    loop {
        if !undeleted.is_empty() {
            delete(lease, undeleted).await?;
        }
        if backlog_checked.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
            METRICS
                .outbox_backlog
                .set(shared.store.outbox_backlog().await?);
            backlog_checked = Some(Instant::now());
        }
        if shared.shutdown.is_cancelled() {
            return Ok(());
        }
        let rows = lease.next_rows(&[], shared.settings.relay.batch).await?;
        if rows.is_empty() {
            METRICS.outbox_backlog.set(0);
            tokio::select! {
                _ = shared.shutdown.cancelled() => return Ok(()),
                _ = shared.relay_wakeup.notified() => {}
                _ = tokio::time::sleep(idle) => {}
            }
            continue;
        }
        let (published, failure) = publisher.publish(output, &rows).await;
        *broken = failure.is_some();
        METRICS.relay_published.inc_by(published.len() as u64);
        let now = chrono::Utc::now();
        for row in rows.iter().take(published.len()) {
            let latency = (now - row.created_at).to_std().unwrap_or_default();
            METRICS.relay_latency.observe(latency.as_secs_f64());
        }
        undeleted.extend(published);
        // Deleted before a failure is reported: the next attempt starts from the first
        // record that was not taken, and nothing after it has left.
        delete(lease, undeleted).await?;
        if let Some(e) = failure {
            return Err(e);
        }
    }
}

/// Deletes published rows; `ids` is emptied only once that succeeded.
async fn delete(lease: &mut RelayLease, ids: &mut Vec<i64>) -> Result<(), BoxError> {
    lease.delete(ids).await?;
    ids.clear();
    Ok(())
}
