//! The outbox relay: publishes committed outbox rows to the identities topic.
//!
//! Only the holder of the relay lease publishes (see `store::outbox`). Rounds are
//! sequential: one statement deletes what the previous round published and reads the
//! next rows from the head of the outbox (in id order), then they are published.
//! Nothing of a later round is sent before the previous round is settled, so records
//! of one key leave in version order.
//!
//! Woken at commit: a trigger on the outbox sends `NOTIFY ir_outbox` from every
//! transaction that inserts into it (the worker's batches, the sidecar, the admin
//! endpoints, other instances), and the lease holder `LISTEN`s on a connection of its
//! own. It reads until a round comes back empty, then waits for a notification; a
//! slow poll ([`FALLBACK_POLL`]) is only a safety net. The worker never waits for the
//! relay: a batch's transaction commits and the consumer goes on to the next batch
//! while the relay publishes this one's records.
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

use super::topics::{self, state_topic};
use super::{enqueue, KafkaContext, Shared};
use crate::config::RelayMode;
use crate::metrics::METRICS;
use crate::store::{OutboxRow, RelayLease};
use crate::telemetry::chain;
use futures::FutureExt;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::PgPool;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// librdkafka's blocking transaction calls wait at most this long.
const TRANSACTION_TIMEOUT: Duration = Duration::from_secs(30);

/// The channel the outbox's trigger notifies (migration `…_outbox_notify.sql`).
const OUTBOX_CHANNEL: &str = "ir_outbox";

/// Outbox rows per round (one Kafka transaction). A round takes whatever is waiting,
/// up to this many: in steady state that is one batch's records, so the size only
/// matters when a backlog has built up. Larger rounds measured no faster in the
/// benchmark (docs/performance.md) and hold more in memory.
const ROUND_ROWS: i64 = 1000;

/// How long an idle relay waits for a notification before it reads anyway. A
/// notification can only be missed while the listening connection is down, and
/// the relay reads once when it is back; this catches what nothing announced (rows
/// inserted with triggers disabled, e.g. by a restore with
/// `session_replication_role = replica`), so it can be slow.
const FALLBACK_POLL: Duration = Duration::from_secs(5);

/// How often an instance without the lease tries to take it.
const LEASE_RETRY: Duration = Duration::from_secs(1);

/// The relay lease's `transactional.id`: one per deployment (group) and output.
pub(crate) fn transactional_id(group_id: &str, output_topic: &str) -> String {
    format!("identity-reconciler-relay/{group_id}/{output_topic}")
}

/// Runs until shutdown; then flushes the producer.
pub(super) async fn run(shared: Shared) -> anyhow::Result<()> {
    tracing::info!(mode = ?shared.settings.relay.mode, "outbox relay started");
    let mut backoff = shared.settings.backoff();
    // Ids the broker has taken (committed) but the outbox still holds: deleted before
    // anything else is read, across lease losses.
    let mut undeleted: Vec<i64> = Vec::new();
    // Kept across leases while it works; dropped after any failure, so that the next
    // lease starts with a new one.
    let mut publisher: Option<Publisher> = None;
    while !shared.shutdown.is_cancelled() {
        match lead(&shared, &mut undeleted, &mut publisher).await {
            Ok(()) => backoff.reset(),
            Err(e) => {
                METRICS.retries.with_label_values(&["relay"]).inc();
                let settings = &shared.settings;
                let id = transactional_id(&settings.kafka.group_id, &settings.kafka.output_topic);
                match topics::cannot_publish(e.as_ref(), &settings.kafka, &id) {
                    // Readiness fails until a round goes through (see `relay_rounds`).
                    Some(reason) => {
                        tracing::error!(%reason, attempt = backoff.attempt(), "the outbox relay cannot publish; retrying");
                        shared.health.set_relay_blocked(Some(reason));
                    }
                    None => {
                        tracing::warn!(error = %chain(e.as_ref()), attempt = backoff.attempt(), "outbox relay interrupted; retrying")
                    }
                }
                if backoff.wait(&shared.shutdown).await.is_err() {
                    break;
                }
            }
        }
    }
    // Half of the shutdown budget (`worker.shutdown_timeout`): what the shutdown
    // allows in all also has to cover the consumer's last commit and the pool.
    let producer = shared.producer.clone();
    let budget = shared.settings.worker.shutdown_timeout / 2;
    tokio::task::spawn_blocking(move || producer.flush(budget)).await??;
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
    let began = Instant::now();
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
    // Every record acknowledged before the commit: a refused one aborts the round
    // without a commit attempt, and the commit finds nothing left to flush. (The
    // binding's `commit_transaction` flushes first, and a flush with messages still
    // in flight waits in slices of 100 ms for events that the producer's own polling
    // thread takes: one such slice per round, whatever the round's size.)
    for delivery in deliveries {
        match delivery.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => return Err(e.into()),
            Err(_) => return Err(KafkaError::Canceled.into()),
        }
    }
    // An acknowledged message is freed only after its delivery report has been
    // served, by the producer's own thread; a flush that comes first sees it still
    // queued and polls for 100 ms for an event that thread has already taken. So the
    // commit waits for the queue to be empty (a few hundred microseconds at most; a
    // second at worst, then the flush settles it).
    let acknowledged = began.elapsed();
    let freed = Instant::now() + Duration::from_secs(1);
    while producer.in_flight_count() > 0 && Instant::now() < freed {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let committing = producer.clone();
    tokio::task::spawn_blocking(move || committing.commit_transaction(TRANSACTION_TIMEOUT))
        .await??;
    tracing::debug!(
        acknowledged_ms = acknowledged.as_secs_f64() * 1e3,
        committed_ms = (began.elapsed() - acknowledged).as_secs_f64() * 1e3,
        "relay transaction"
    );
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
    undeleted: &mut Vec<i64>,
    kept: &mut Option<Publisher>,
) -> Result<(), BoxError> {
    let Some(mut lease) = shared.store.try_relay_lease().await? else {
        // Another instance relays (this one's readiness does not depend on it); look
        // again later.
        shared.health.set_relay_blocked(None);
        tokio::select! {
            _ = shared.shutdown.cancelled() => {}
            _ = tokio::time::sleep(LEASE_RETRY) => {}
        }
        return Ok(());
    };
    tracing::info!("relay lease taken; publishing the outbox");
    // A missing topic is named here, before the first round: a producer would only
    // wait for its metadata and time out, and the state topic's read would fail
    // without naming it.
    let settings = &shared.settings;
    topics::relay_topics_present(&settings.kafka, &shared.brokers, settings.relay.mode).await?;
    let publisher = match kept.take() {
        Some(publisher) => publisher,
        None => Publisher::new(shared).await?,
    };
    undeleted.extend(publisher.committed(shared).await?);
    // Listening before the first read: a commit after that read wakes the relay.
    let mut wakeups = Wakeups::listen(shared.store.pool()).await?;
    let mut broken = false;
    let result = relay_rounds(
        shared,
        undeleted,
        &mut lease,
        &mut wakeups,
        &publisher,
        &mut broken,
    )
    .await;
    // A database failure leaves the producer as good as it was.
    if !broken {
        *kept = Some(publisher);
    }
    result
}

/// Rounds until shutdown or an error.
async fn relay_rounds(
    shared: &Shared,
    undeleted: &mut Vec<i64>,
    lease: &mut RelayLease,
    wakeups: &mut Wakeups,
    publisher: &Publisher,
    broken: &mut bool,
) -> Result<(), BoxError> {
    let output = &shared.settings.kafka.output_topic;
    // `None`: not checked yet. (Subtracting from `Instant::now()` panics on a host
    // that has been up for less than that long.)
    let mut backlog_checked: Option<Instant> = None;
    loop {
        if backlog_checked.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
            METRICS
                .outbox_backlog
                .set(shared.store.outbox_backlog().await?);
            backlog_checked = Some(Instant::now());
        }
        if shared.shutdown.is_cancelled() {
            return delete(lease, undeleted).await;
        }
        wakeups.ready().await?;
        let began = Instant::now();
        let rows = lease.next_round(undeleted, ROUND_ROWS).await?;
        undeleted.clear();
        if rows.is_empty() {
            // Nothing waits, and the topics are there: nothing keeps it from publishing.
            shared.health.set_relay_blocked(None);
            METRICS.outbox_backlog.set(0);
            wakeups.wait(&shared.shutdown).await?;
            continue;
        }
        let read = began.elapsed();
        let (published, failure) = publisher.publish(output, &rows).await;
        tracing::debug!(
            rows = rows.len(),
            read_ms = read.as_secs_f64() * 1e3,
            publish_ms = (began.elapsed() - read).as_secs_f64() * 1e3,
            "relay round"
        );
        *broken = failure.is_some();
        METRICS.relay_published.inc_by(published.len() as u64);
        let now = chrono::Utc::now();
        for row in rows.iter().take(published.len()) {
            let latency = (now - row.created_at).to_std().unwrap_or_default();
            METRICS.relay_latency.observe(latency.as_secs_f64());
        }
        // Deleted by the next round's read, in the same statement.
        undeleted.extend(published);
        if failure.is_none() {
            shared.health.set_relay_blocked(None);
        }
        if let Some(e) = failure {
            // Deleted before the failure is reported: the next attempt, by this
            // instance or by the next holder of the lease, starts from the first
            // record that was not taken, and nothing after it has left.
            delete(lease, undeleted).await?;
            return Err(e);
        }
    }
}

/// Deletes published rows; `ids` is emptied only once that succeeded.
async fn delete(lease: &mut RelayLease, ids: &mut Vec<i64>) -> Result<(), BoxError> {
    if !ids.is_empty() {
        lease.delete(ids).await?;
        ids.clear();
    }
    Ok(())
}

/// Notifications of commits that wrote to the outbox, on a connection of their own.
struct Wakeups {
    listener: PgListener,
    /// The listening connection was lost: notifications sent since are lost too.
    lost: bool,
}

impl Wakeups {
    /// `LISTEN`s on a one-connection pool with the service pool's settings: the
    /// listener keeps its connection for as long as it lives, and takes none from
    /// the pool that the worker and the sidecar share.
    async fn listen(pool: &PgPool) -> Result<Wakeups, BoxError> {
        let own = PgPoolOptions::new()
            .max_connections(1)
            .connect_lazy_with((*pool.connect_options()).clone());
        let mut listener = PgListener::connect_with(&own).await?;
        // Reconnected by `ready`, before a read, never inside a wait that a timer
        // may cancel halfway.
        listener.eager_reconnect(false);
        listener.listen(OUTBOX_CHANNEL).await?;
        Ok(Wakeups {
            listener,
            lost: false,
        })
    }

    /// Before a read: takes the notifications that have already arrived (the read
    /// covers their commits, so they would only cause an empty read after it), and
    /// listens again on a new connection if the last one was lost, so that nothing
    /// committed after the read goes unannounced.
    async fn ready(&mut self) -> Result<(), BoxError> {
        // Polled once each: ready only if a message is already there (`try_recv`
        // keeps a partly read message across a cancellation). Not a zero timeout:
        // the runtime fires even an expired timer only at its next tick, which made
        // every round wait for that tick (docs/performance.md).
        while !self.lost {
            match self.listener.try_recv().now_or_never() {
                Some(received) => self.lost = received?.is_none(),
                None => break,
            }
        }
        if self.lost {
            // Without a connection, `unlisten` only forgets the channel; `listen`
            // connects and listens again.
            self.listener.unlisten(OUTBOX_CHANNEL).await?;
            self.listener.listen(OUTBOX_CHANNEL).await?;
            self.lost = false;
            tracing::info!("relay listening again after a lost connection; reading the outbox");
        }
        Ok(())
    }

    /// Until a commit wrote to the outbox, the listening connection is lost (the
    /// caller then reads once: what was sent meanwhile is lost), [`FALLBACK_POLL`]
    /// passed, or shutdown.
    async fn wait(&mut self, shutdown: &CancellationToken) -> Result<(), BoxError> {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            received = self.listener.try_recv() => self.lost = received?.is_none(),
            _ = tokio::time::sleep(FALLBACK_POLL) => {}
        }
        Ok(())
    }
}
