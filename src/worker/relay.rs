//! The outbox relay: publishes committed outbox rows to the identities topic.
//!
//! Only the holder of the relay lease publishes (see `store::outbox`). Each round
//! enqueues the next rows in id order with the idempotent producer; while the broker
//! acknowledges one round the next is read and enqueued. A settled round's
//! acknowledged prefix is deleted: if a record fails, it and everything after it are
//! published again from the head of the table, so the last record of every key on
//! the topic is always its latest state.

use super::{enqueue, Shared};
use crate::http::chain;
use crate::metrics::METRICS;
use crate::store::{OutboxRow, RelayLease};
use rdkafka::error::KafkaError;
use rdkafka::producer::{DeliveryFuture, FutureRecord, Producer};
use std::time::{Duration, Instant};

/// Runs until shutdown; then flushes the producer.
pub(super) async fn run(shared: Shared) -> anyhow::Result<()> {
    let idle = Duration::from_millis(shared.settings.relay.idle_poll_ms);
    let mut failures = 0u32;
    while !shared.shutdown.is_cancelled() {
        match lead(&shared, idle).await {
            Ok(()) => failures = 0,
            Err(e) => {
                METRICS.retries.with_label_values(&["relay"]).inc();
                tracing::warn!(error = %chain(e.as_ref()), "outbox relay interrupted; retrying");
                failures += 1;
                let delay = shared
                    .settings
                    .backoff_initial()
                    .saturating_mul(1 << failures.min(16))
                    .min(shared.settings.backoff_max());
                tokio::select! {
                    _ = shared.shutdown.cancelled() => {}
                    _ = tokio::time::sleep(delay) => {}
                }
            }
        }
    }
    let producer = shared.producer.clone();
    tokio::task::spawn_blocking(move || producer.flush(Duration::from_secs(10))).await??;
    Ok(())
}

/// Takes the lease (or waits for it) and relays until shutdown or an error.
async fn lead(
    shared: &Shared,
    idle: Duration,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let Some(mut lease) = shared.store.try_relay_lease().await? else {
        // Another instance relays; look again later.
        tokio::select! {
            _ = shared.shutdown.cancelled() => {}
            _ = tokio::time::sleep(idle * 5) => {}
        }
        return Ok(());
    };
    tracing::info!("relay lease taken; publishing the outbox");
    // `None`: not checked yet. (Subtracting from `Instant::now()` panics on a host
    // that has been up for less than that long.)
    let mut backlog_checked: Option<Instant> = None;
    // Two rounds overlap: the next one is read and enqueued while the broker is still
    // acknowledging the previous one.
    let mut pending: Option<Round> = None;
    loop {
        if backlog_checked.is_none_or(|at| at.elapsed() >= Duration::from_secs(1)) {
            METRICS
                .outbox_backlog
                .set(shared.store.outbox_backlog().await?);
            backlog_checked = Some(Instant::now());
        }
        let in_flight: Vec<i64> = pending
            .iter()
            .flat_map(|r| r.rows.iter().map(|row| row.id))
            .collect();
        let rows = lease
            .next_rows(&in_flight, shared.settings.relay.batch)
            .await?;
        if rows.is_empty() && pending.is_none() {
            METRICS.outbox_backlog.set(0);
            tokio::select! {
                _ = shared.shutdown.cancelled() => return Ok(()),
                _ = shared.relay_wakeup.notified() => {}
                _ = tokio::time::sleep(idle) => {}
            }
            continue;
        }
        let next = if rows.is_empty() {
            None
        } else {
            Some(enqueue_round(shared, rows).await?)
        };
        if let Some(round) = pending.take() {
            if let Err(e) = settle(&mut lease, round).await {
                // Let the next round finish, but keep its rows: the failed record is
                // published again before them, so every key still ends on its latest.
                if let Some(next) = next {
                    let _ = next.acknowledged().await;
                }
                return Err(e);
            }
        }
        pending = next;
        if shared.shutdown.is_cancelled() {
            if let Some(round) = pending.take() {
                settle(&mut lease, round).await?;
            }
            return Ok(());
        }
    }
}

/// Records handed to the producer, in id order, with their delivery futures.
struct Round {
    rows: Vec<OutboxRow>,
    deliveries: Vec<DeliveryFuture>,
}

impl Round {
    /// Awaits every delivery; returns how many rows from the start were acknowledged,
    /// and the first failure.
    async fn acknowledged(self) -> (Vec<OutboxRow>, Option<KafkaError>) {
        let mut rows = self.rows;
        let mut acknowledged = 0;
        let mut failure = None;
        for delivery in self.deliveries {
            match delivery.await {
                Ok(Ok(_)) if failure.is_none() => acknowledged += 1,
                Ok(Ok(_)) => {}
                Ok(Err((e, _))) => {
                    failure.get_or_insert(e);
                }
                Err(_) => {
                    failure.get_or_insert(KafkaError::Canceled);
                }
            }
        }
        rows.truncate(acknowledged);
        (rows, failure)
    }
}

async fn enqueue_round(shared: &Shared, rows: Vec<OutboxRow>) -> Result<Round, KafkaError> {
    let topic = &shared.settings.kafka.output_topic;
    let mut deliveries = Vec::with_capacity(rows.len());
    for row in &rows {
        let mut record: FutureRecord<'_, str, str> = FutureRecord::to(topic).key(&row.key);
        if let Some(payload) = &row.payload {
            record = record.payload(payload);
        }
        deliveries.push(enqueue(&shared.producer, record).await?);
    }
    Ok(Round { rows, deliveries })
}

/// Waits for a round's acknowledgements and deletes the acknowledged prefix.
async fn settle(
    lease: &mut RelayLease,
    round: Round,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let (acknowledged, failure) = round.acknowledged().await;
    if !acknowledged.is_empty() {
        let ids: Vec<i64> = acknowledged.iter().map(|row| row.id).collect();
        lease.delete(&ids).await?;
        METRICS.relay_published.inc_by(ids.len() as u64);
        let now = chrono::Utc::now();
        for row in &acknowledged {
            let latency = (now - row.created_at).to_std().unwrap_or_default();
            METRICS.relay_latency.observe(latency.as_secs_f64());
        }
    }
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}
