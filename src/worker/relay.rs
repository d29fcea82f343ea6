//! The outbox relay: publishes committed outbox rows to the identities topic.
//!
//! Only the holder of the relay lease publishes (see `store::outbox`). Each round
//! enqueues the oldest rows in id order with the idempotent producer, waits for every
//! acknowledgement, and deletes the acknowledged prefix: if a record fails, it and
//! everything after it are published again next round, so the last record of every
//! key on the topic is always its latest state.

use super::{enqueue, Shared};
use crate::http::chain;
use crate::metrics::METRICS;
use crate::store::{OutboxRow, RelayLease};
use rdkafka::producer::{FutureRecord, Producer};
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
    let mut backlog_checked = Instant::now() - Duration::from_secs(60);
    loop {
        if backlog_checked.elapsed() >= Duration::from_secs(1) {
            METRICS
                .outbox_backlog
                .set(shared.store.outbox_backlog().await?);
            backlog_checked = Instant::now();
        }
        let rows = lease.next_rows(shared.settings.relay.batch).await?;
        if rows.is_empty() {
            METRICS.outbox_backlog.set(0);
            tokio::select! {
                _ = shared.shutdown.cancelled() => return Ok(()),
                _ = shared.relay_wakeup.notified() => {}
                _ = tokio::time::sleep(idle) => {}
            }
            continue;
        }
        publish(shared, &mut lease, &rows).await?;
        if shared.shutdown.is_cancelled() {
            return Ok(());
        }
    }
}

/// Publishes `rows` in order and deletes the acknowledged prefix.
async fn publish(
    shared: &Shared,
    lease: &mut RelayLease,
    rows: &[OutboxRow],
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let topic = &shared.settings.kafka.output_topic;
    let mut deliveries = Vec::with_capacity(rows.len());
    for row in rows {
        let mut record: FutureRecord<'_, str, str> = FutureRecord::to(topic).key(&row.key);
        if let Some(payload) = &row.payload {
            record = record.payload(payload);
        }
        deliveries.push(enqueue(&shared.producer, record).await?);
    }
    let mut acknowledged = Vec::with_capacity(rows.len());
    let mut failure = None;
    for (row, delivery) in rows.iter().zip(deliveries) {
        match delivery.await {
            Ok(Ok(_)) if failure.is_none() => acknowledged.push(row.id),
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => {
                failure.get_or_insert(e);
            }
            Err(_) => {
                failure.get_or_insert(rdkafka::error::KafkaError::Canceled);
            }
        }
    }
    if !acknowledged.is_empty() {
        lease.delete(&acknowledged).await?;
        METRICS.relay_published.inc_by(acknowledged.len() as u64);
        let now = chrono::Utc::now();
        for row in &rows[..acknowledged.len()] {
            let latency = (now - row.created_at).to_std().unwrap_or_default();
            METRICS.relay_latency.observe(latency.as_secs_f64());
        }
    }
    match failure {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}
