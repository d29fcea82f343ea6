//! The simplest chain (issue 15): the least a pipeline from the input topic to the
//! output topic through PostgreSQL can do, as the latency baseline of the worker.
//!
//! One loop, in this process: take what has arrived (the first message waited for,
//! then whatever is already fetched, up to 500, as the worker forms its batches), look
//! each event's rows up by its `eventId` (the generator knows what applying it writes:
//! its ledger key, the contact it creates, its output records), write them with the
//! batched-writes ceiling's three `unnest` INSERTs in one transaction, commit, then
//! produce the output records (the relay's producer settings: idempotent, `acks=all`,
//! linger 5 ms) and wait for their acknowledgements before the next batch. No
//! reconciliation, no locks, no outbox read-back, no Kafka transaction, no offset
//! commits (a fresh topic read by assignment; nothing to resume).
//!
//! It runs at the offered rates of the worker's latency phases (the same shares of
//! the worker's measured throughput), measured the same way (`latency_phase`: the
//! output record's CreateTime minus the event's).

use crate::ceilings::Batch;
use crate::kafka;
use crate::names::Topics;
use crate::services::{Database, Servers};
use crate::worker_run::{latency_events, latency_phase, LatencyReport, WorkerReport};
use crate::workload::{Effect, Mix, Workload};
use anyhow::Context;
use futures::FutureExt;
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use serde::Serialize;
use std::collections::HashMap;
use tokio_util::sync::CancellationToken;

/// Events per batch at most, as the worker's default `reconcile.max_batch`.
const MAX_BATCH: usize = 500;

#[derive(Debug, Serialize)]
pub struct ChainReport {
    /// One per offered load, in the order of the worker's.
    pub latency: Vec<LatencyReport>,
    /// The worker's p99 over the chain's, at each load.
    pub worker_p99_ratio: Vec<f64>,
    pub batches: u64,
    pub mean_batch_size: f64,
}

/// The chain at each of the worker's latency loads, one phase after the other.
pub async fn run(
    servers: &Servers,
    mix: &Mix,
    worker: &WorkerReport,
    seconds: f64,
) -> anyhow::Result<ChainReport> {
    let db = Database::create(servers, "chain").await?;
    let topics = Topics::unique("bench_chain");
    kafka::create_topics(&servers.brokers, &[&topics.input, &topics.output]).await?;

    // Every phase's events first: the loop looks their rows up as they arrive.
    let mut workload = Workload::new(mix, "c").with_payloads();
    let phases: Vec<_> = worker
        .latency
        .iter()
        .map(|w| {
            let rate = w.offered_events_per_s;
            (w.load, rate, latency_events(&mut workload, rate, seconds))
        })
        .collect();
    let effects: HashMap<String, Effect> = phases
        .iter()
        .flat_map(|(_, _, events)| events.iter())
        .map(|e| (e.event_id.clone(), e.effect.clone()))
        .collect();

    let stop = CancellationToken::new();
    // Ready before the first phase starts, as the worker's relay is.
    let producer = kafka::ready_producer(&servers.brokers, 5).await?;
    let chain = tokio::spawn(chain_loop(
        servers.brokers.clone(),
        producer,
        topics.input.clone(),
        topics.output.clone(),
        db.pool.clone(),
        effects,
        stop.clone(),
    ));
    let mut latency = Vec::new();
    for (load, rate, events) in phases {
        eprintln!("bench: simplest chain at {:.0}% load", load * 100.0);
        match latency_phase(servers, &topics, events, load, rate).await {
            Ok(report) => latency.push(report),
            Err(e) => {
                stop.cancel();
                let failed = chain.await?.err();
                return Err(e.context(format!("the chain: {failed:?}")));
            }
        }
    }
    stop.cancel();
    let (batches, events) = chain.await?.context("the simplest chain")?;
    db.drop_database(servers).await?;
    kafka::delete_topics(&servers.brokers, &[&topics.input, &topics.output]).await;
    Ok(ChainReport {
        worker_p99_ratio: worker
            .latency
            .iter()
            .zip(&latency)
            .map(|(w, c)| w.p99_ms / c.p99_ms)
            .collect(),
        latency,
        batches,
        mean_batch_size: events as f64 / batches.max(1) as f64,
    })
}

/// The loop, until `stop`; returns (batches, events).
async fn chain_loop(
    brokers: String,
    producer: FutureProducer,
    input: String,
    output: String,
    pool: sqlx::PgPool,
    mut effects: HashMap<String, Effect>,
    stop: CancellationToken,
) -> anyhow::Result<(u64, u64)> {
    // The worker's fetch settings (src/worker/mod.rs), without a group.
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", crate::names::unique("bench_chain"))
        .set("enable.auto.commit", "false")
        .set("queued.max.messages.kbytes", "16384")
        .set("fetch.max.bytes", "8388608")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    for partition in 0..kafka::PARTITIONS {
        assignment.add_partition_offset(&input, partition, Offset::Beginning)?;
    }
    consumer.assign(&assignment)?;
    let (mut batches, mut events) = (0u64, 0u64);
    loop {
        let first = tokio::select! {
            _ = stop.cancelled() => return Ok((batches, events)),
            received = consumer.recv() => received?,
        };
        let mut batch = Batch::default();
        add(&mut batch, &mut effects, first.payload())?;
        while batch.len() < MAX_BATCH {
            match consumer.recv().now_or_never() {
                Some(received) => add(&mut batch, &mut effects, received?.payload())?,
                None => break,
            }
        }
        batch.write(&pool).await?;
        let mut deliveries = Vec::new();
        for (key, payload) in batch.records() {
            let record = FutureRecord::to(&output).key(key).payload(payload);
            deliveries.push(producer.send_result(record).map_err(|(e, _)| e)?);
        }
        for delivery in deliveries {
            kafka::acknowledged(delivery).await?;
        }
        batches += 1;
        events += batch.len() as u64;
    }
}

/// Parses the event enough to find its `eventId`, and adds its rows to the batch.
fn add(
    batch: &mut Batch,
    effects: &mut HashMap<String, Effect>,
    payload: Option<&[u8]>,
) -> anyhow::Result<()> {
    let value: serde_json::Value = serde_json::from_slice(payload.unwrap_or_default())?;
    let event_id = value["eventId"]
        .as_str()
        .context("an event without eventId")?;
    let effect = effects
        .remove(event_id)
        .with_context(|| format!("an unknown event {event_id}"))?;
    batch.push(event_id, &effect);
    Ok(())
}
