//! The worker run: N events pre-produced to a fresh topic, then the release binary in
//! `run` mode drains them; end-to-end throughput, outbox backlog, memory, table sizes;
//! then latency at a fixed offered rate; then the correctness checks.
//!
//! Throughput is measured from outside, as an operator would: t0 is when the child's
//! `events_consumed_total` first moves, t1 when every event is in the ledger and the
//! outbox is empty (its last record published). The broker ceilings use the same
//! topic and the same N messages, before the worker starts and after it stopped, so
//! that they never compete with it.

use crate::checks::{self, Check};
use crate::cpu::{CpuMeter, CpuUse};
use crate::kafka::{self, Outgoing};
use crate::ledger::{prefill, LedgerPlan, LedgerReport};
use crate::names::Topics;
use crate::services::{Database, Mode, Servers, Service};
use crate::stats::percentile;
use crate::workload::{Event, Mix, Workload};
use anyhow::{bail, Context};
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::producer::Producer;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// What one worker run measures.
pub struct RunPlan<'a> {
    pub label: &'a str,
    pub events: usize,
    pub mix: &'a Mix,
    /// Length and offered loads (shares of the measured throughput) of the latency
    /// phases, one after the other.
    pub latency: Option<(f64, &'a [f64])>,
    /// Also measure the broker's consume-only and produce-only rates.
    pub broker_ceilings: bool,
    /// Contacts loaded before the run (the growth run).
    pub preload_contacts: u64,
    /// Old rows put in the ledger before the run, and whether the retention task may
    /// prune them (the pruning runs, `crate::pruning`).
    pub ledger: Option<LedgerPlan>,
}

#[derive(Debug, Serialize)]
pub struct WorkerReport {
    pub events: usize,
    /// Share of each kind of event actually generated.
    pub mix: BTreeMap<String, f64>,
    pub preloaded_contacts: u64,
    pub preload_seconds: f64,
    pub preproduce_events_per_s: f64,
    pub seconds: f64,
    pub events_per_s: f64,
    /// The machine's CPU while the worker drained (every process).
    pub cpu: CpuUse,
    pub outbox_peak: i64,
    /// WAL the server wrote from the child's start to the end of the drain.
    pub wal_bytes: i64,
    pub wal_bytes_per_event: f64,
    /// The child's own view of the drain (from its metrics).
    pub inside: Inside,
    pub memory: MemoryReport,
    pub latency: Vec<LatencyReport>,
    /// The pruning runs: the ledger's old rows and what the retention task did.
    pub ledger: Option<LedgerReport>,
    pub output: OutputSummary,
    pub tables: Vec<TableSize>,
    pub broker: Option<BrokerCeilings>,
    pub checks: Vec<Check>,
}

/// Where the worker spent the drain, from its Prometheus metrics.
#[derive(Debug, Default, Serialize)]
pub struct Inside {
    pub batches: f64,
    pub mean_batch_size: f64,
    /// Time inside reconcile transactions, over the drain's wall time.
    pub reconcile_busy_share: f64,
    pub mean_batch_ms: f64,
    pub contacts_inserted: f64,
    pub merges: f64,
    pub relay_published: f64,
    /// Mean time from outbox insert to broker acknowledgement.
    pub mean_relay_latency_ms: f64,
    /// The p99 of the same is at most this (the bound of its histogram bucket).
    pub relay_latency_p99_ms_at_most: f64,
}

impl Inside {
    async fn scrape(service: &Service, seconds: f64) -> anyhow::Result<Inside> {
        let m = |name: &'static str| service.metric(name);
        let batches = m("identity_reconciler_reconcile_batch_size_count").await?;
        let events = m("identity_reconciler_reconcile_batch_size_sum").await?;
        let busy = m("identity_reconciler_reconcile_batch_duration_seconds_sum").await?;
        let relayed = m("identity_reconciler_relay_latency_seconds_count").await?;
        let relay_latency = m("identity_reconciler_relay_latency_seconds_sum").await?;
        Ok(Inside {
            batches,
            mean_batch_size: events / batches.max(1.0),
            reconcile_busy_share: busy / seconds,
            mean_batch_ms: busy * 1e3 / batches.max(1.0),
            contacts_inserted: m("identity_reconciler_contacts_inserted_total").await?,
            merges: m("identity_reconciler_merges_total").await?,
            relay_published: m("identity_reconciler_relay_published_total").await?,
            mean_relay_latency_ms: relay_latency * 1e3 / relayed.max(1.0),
            relay_latency_p99_ms_at_most: service
                .histogram_quantile_bound("identity_reconciler_relay_latency_seconds", 0.99)
                .await?
                * 1e3,
        })
    }
}

#[derive(Debug, Serialize)]
pub struct MemoryReport {
    /// VmHWM of the child just before it was stopped.
    pub peak_rss_mib: f64,
    /// (seconds since the child started, VmRSS), a few points over the whole run.
    pub rss_mib_over_time: Vec<(f64, f64)>,
}

#[derive(Debug, Serialize)]
pub struct LatencyReport {
    /// Offered rate as a share of the worker's measured throughput.
    pub load: f64,
    pub offered_events_per_s: f64,
    pub achieved_events_per_s: f64,
    pub events: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// The worker's side of the phase, from its metrics (none for the chain).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub inside: Option<PhaseInside>,
}

/// Where a latency phase's time went inside the worker: its batches and its relay.
#[derive(Debug, Serialize)]
pub struct PhaseInside {
    pub batches: f64,
    pub mean_batch_size: f64,
    pub mean_batch_ms: f64,
    /// Mean time from outbox insert to broker acknowledgement.
    pub mean_relay_latency_ms: f64,
}

/// The counters a [`PhaseInside`] is the difference of.
struct PhaseCounters {
    batches: f64,
    events: f64,
    busy: f64,
    relayed: f64,
    relay_latency: f64,
}

impl PhaseCounters {
    async fn scrape(service: &Service) -> anyhow::Result<PhaseCounters> {
        let m = |name: &'static str| service.metric(name);
        Ok(PhaseCounters {
            batches: m("identity_reconciler_reconcile_batch_size_count").await?,
            events: m("identity_reconciler_reconcile_batch_size_sum").await?,
            busy: m("identity_reconciler_reconcile_batch_duration_seconds_sum").await?,
            relayed: m("identity_reconciler_relay_latency_seconds_count").await?,
            relay_latency: m("identity_reconciler_relay_latency_seconds_sum").await?,
        })
    }

    fn since(&self, before: &PhaseCounters) -> PhaseInside {
        let batches = self.batches - before.batches;
        PhaseInside {
            batches,
            mean_batch_size: (self.events - before.events) / batches.max(1.0),
            mean_batch_ms: (self.busy - before.busy) * 1e3 / batches.max(1.0),
            mean_relay_latency_ms: (self.relay_latency - before.relay_latency) * 1e3
                / (self.relayed - before.relayed).max(1.0),
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct OutputSummary {
    pub records: u64,
    pub mean_record_bytes: f64,
}

#[derive(Debug, Serialize)]
pub struct TableSize {
    pub table: String,
    pub rows: i64,
    pub bytes: i64,
}

#[derive(Debug, Serialize)]
pub struct BrokerCeilings {
    pub consume_events_per_s: f64,
    pub consume_cpu: CpuUse,
    pub produce_events_per_s: f64,
    pub produce_cpu: CpuUse,
    pub produce_record_bytes: usize,
    /// Consume-only, produce-only and the PostgreSQL batched writes, all three at once.
    pub all_at_once: AllAtOnce,
}

/// The three simplest clients run together on the same machine, as the worker has to
/// do their work together: N events per second over the time the last one finished.
#[derive(Debug, Serialize)]
pub struct AllAtOnce {
    pub events_per_s: f64,
    pub cpu: CpuUse,
}

pub async fn run(servers: &Servers, plan: &RunPlan<'_>) -> anyhow::Result<WorkerReport> {
    let db = Database::create(servers, plan.label).await?;
    let preload_started = Instant::now();
    if plan.preload_contacts > 0 {
        crate::growth::preload(&db, plan.preload_contacts).await?;
    }
    let preload_seconds = preload_started.elapsed().as_secs_f64();
    if let Some(ledger) = &plan.ledger {
        prefill(&db, ledger.prefill).await?;
    }

    let topics = Topics::unique(&format!("bench_{}", plan.label));
    kafka::create_topics(&servers.brokers, &topics.names()).await?;
    let mut workload = Workload::new(plan.mix, &plan.label[..1]);
    let events = workload.take(plan.events);
    eprintln!("bench: {}: producing {} events", plan.label, events.len());
    let preproduce = preproduce(&servers.brokers, &topics.input, &events).await?;
    let consume_rate = if plan.broker_ceilings {
        eprintln!("bench: {}: broker consume-only rate", plan.label);
        let cpu = CpuMeter::start();
        let rate = consume_rate(&servers.brokers, &topics.input, events.len()).await?;
        Some((rate, cpu.stop()))
    } else {
        None
    };

    eprintln!("bench: {}: worker draining", plan.label);
    let mut env = topics.env(&servers.brokers);
    env.push(("DATABASE_URL".into(), db.url.clone()));
    if let Some(ledger) = &plan.ledger {
        env.extend(ledger.env());
    }
    let wal = db.wal_position().await?;
    let service = Service::start(
        servers,
        Mode::Run,
        plan.label,
        &env.iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect::<Vec<_>>(),
    )
    .await?;
    let started = Instant::now();
    let sampler = Sampler::start(service.pid(), db.pool.clone(), started);
    let mut keys: Vec<String> = events.iter().map(|e| e.event_id.clone()).collect();
    let cpu = CpuMeter::start();
    let drained = wait_drained(&service, &db, keys.len() as i64, true).await?;
    let cpu = cpu.stop();
    let wal_bytes = db.wal_bytes_since(&wal).await?;
    let seconds = (drained.t1 - drained.t0).as_secs_f64();
    let events_per_s = events.len() as f64 / seconds;
    let inside = Inside::scrape(&service, seconds).await?;
    let pruned_during_drain = service
        .metric("identity_reconciler_ledger_pruned_total")
        .await?;

    let mut latency = Vec::new();
    if let Some((length, loads)) = plan.latency {
        for &load in loads {
            eprintln!(
                "bench: {}: latency at {:.0}% load",
                plan.label,
                load * 100.0
            );
            let rate = events_per_s * load;
            let more = latency_events(&mut workload, rate, length);
            keys.extend(more.iter().map(|e| e.event_id.clone()));
            let before = PhaseCounters::scrape(&service).await?;
            let mut report = latency_phase(servers, &topics, more, load, rate).await?;
            wait_drained(&service, &db, keys.len() as i64, false).await?;
            report.inside = Some(PhaseCounters::scrape(&service).await?.since(&before));
            latency.push(report);
        }
    }
    let peak = service.memory();
    let samples = sampler.stop().await;
    let status = service.stop().await.ok();

    let (output, published) = read_output(&servers.brokers, &topics.output, &keys).await?;
    // Output-sized records of the produce-only ceilings go to topics of their own.
    let ceiling_topics = [".ceiling", ".together"].map(|s| format!("{}{s}", topics.output));
    let broker = match consume_rate {
        Some((consume_events_per_s, consume_cpu)) => {
            eprintln!("bench: {}: broker produce-only rate", plan.label);
            let size = output.mean_record_bytes.round() as usize;
            let produce =
                ProduceOnly::prepare(&servers.brokers, &ceiling_topics[0], events.len(), size)
                    .await?;
            let cpu = CpuMeter::start();
            let took = produce.run().await?;
            let produce_cpu = cpu.stop();
            eprintln!(
                "bench: {}: consume, produce and PostgreSQL writes at once",
                plan.label
            );
            let all_at_once = all_at_once(
                servers,
                &topics.input,
                &ceiling_topics[1],
                plan.mix,
                events.len(),
                size,
            )
            .await?;
            Some(BrokerCeilings {
                consume_events_per_s,
                consume_cpu,
                produce_events_per_s: events.len() as f64 / took.as_secs_f64(),
                produce_cpu,
                produce_record_bytes: size,
                all_at_once,
            })
        }
        None => None,
    };
    let tables = table_sizes(&db).await?;
    let ledger = match &plan.ledger {
        Some(ledger) => Some(ledger.report(&db, pruned_during_drain as u64).await?),
        None => None,
    };
    let checks = vec![
        checks::clean_exit(status),
        checks::ledger(&db, &keys).await,
        checks::published(keys.len(), published),
        checks::invariants(&db).await,
        checks::clusters(&db, plan.preload_contacts as i64, &workload.clusters()).await,
    ];
    db.drop_database(servers).await?;
    // All at the end, once nothing reads them any more.
    kafka::delete_topics(&servers.brokers, &topics.names()).await;
    let ceiling_topics: Vec<&str> = ceiling_topics.iter().map(String::as_str).collect();
    kafka::delete_topics(&servers.brokers, &ceiling_topics).await;

    Ok(WorkerReport {
        events: events.len(),
        mix: mix_shares(&events),
        preloaded_contacts: plan.preload_contacts,
        preload_seconds,
        preproduce_events_per_s: events.len() as f64 / preproduce.as_secs_f64(),
        seconds,
        events_per_s,
        cpu,
        outbox_peak: samples.iter().map(|s| s.outbox).max().unwrap_or(0),
        wal_bytes,
        wal_bytes_per_event: wal_bytes as f64 / events.len() as f64,
        inside,
        memory: MemoryReport {
            peak_rss_mib: peak.map_or(0.0, |m| mib(m.hwm_kib)),
            rss_mib_over_time: thin(&samples, 12),
        },
        latency,
        ledger,
        output,
        tables,
        broker,
        checks,
    })
}

/// Produces the events keyed by eventId, with their occurredAt as CreateTime.
async fn preproduce(brokers: &str, topic: &str, events: &[Event]) -> anyhow::Result<Duration> {
    let now = chrono::Utc::now();
    let payloads: Vec<String> = events.iter().map(|e| e.to_json(now).to_string()).collect();
    let producer = kafka::producer(brokers, 20)?;
    kafka::produce_all(
        &producer,
        topic,
        events.iter().zip(&payloads).map(|(e, p)| Outgoing {
            key: &e.event_id,
            payload: p,
            timestamp: Some(now.timestamp_millis()),
        }),
    )
    .await
}

/// Consume-only rate over the same messages: from the reader's creation (connection,
/// metadata and first fetch included) to the last message. Measuring from the first
/// message instead would only time the client's local queue: librdkafka prefetches
/// whole batches before handing out the first message.
async fn consume_rate(brokers: &str, topic: &str, expected: usize) -> anyhow::Result<f64> {
    struct Count {
        expected: usize,
        seen: usize,
        started: Instant,
        last: Instant,
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    let now = Instant::now();
    let state = Count {
        expected,
        seen: 0,
        started: now,
        last: now,
    };
    let starts = vec![0; kafka::PARTITIONS as usize];
    let count = kafka::read(brokers, topic, starts, deadline, state, |c, _| {
        c.last = Instant::now();
        c.seen += 1;
        c.seen >= c.expected
    })
    .await?;
    Ok(count.seen as f64 / (count.last - count.started).as_secs_f64())
}

/// N output-sized records for a fresh topic, produced with the relay's producer
/// settings (idempotent, acks=all, linger 5 ms).
struct ProduceOnly {
    topic: String,
    producer: rdkafka::producer::FutureProducer,
    payload: String,
    keys: Vec<String>,
}

impl ProduceOnly {
    async fn prepare(brokers: &str, topic: &str, n: usize, size: usize) -> anyhow::Result<Self> {
        kafka::create_topics(brokers, &[topic]).await?;
        Ok(ProduceOnly {
            topic: topic.to_owned(),
            producer: kafka::producer(brokers, 5)?,
            payload: "x".repeat(size.max(1)),
            keys: (1..=n).map(|i| i.to_string()).collect(),
        })
    }

    /// Produces every record; returns the time from first send to last acknowledgement.
    async fn run(&self) -> anyhow::Result<Duration> {
        kafka::produce_all(
            &self.producer,
            &self.topic,
            self.keys.iter().map(|key| Outgoing {
                key,
                payload: &self.payload,
                timestamp: None,
            }),
        )
        .await
    }
}

/// Consume-only, produce-only and the PostgreSQL batched writes started together
/// (each prepared beforehand), timed until the last one finishes.
async fn all_at_once(
    servers: &Servers,
    input: &str,
    output: &str,
    mix: &Mix,
    n: usize,
    size: usize,
) -> anyhow::Result<AllAtOnce> {
    let produce = ProduceOnly::prepare(&servers.brokers, output, n, size).await?;
    let writes = crate::ceilings::BatchedWrites::prepare(servers, mix, n).await?;
    let cpu = CpuMeter::start();
    let started = Instant::now();
    let (consumed, produced, written) = tokio::join!(
        consume_rate(&servers.brokers, input, n),
        produce.run(),
        writes.run()
    );
    let seconds = started.elapsed().as_secs_f64();
    let cpu = cpu.stop();
    consumed?;
    produced?;
    written?;
    writes.finish(servers).await?;
    Ok(AllAtOnce {
        events_per_s: n as f64 / seconds,
        cpu,
    })
}

struct Drained {
    t0: Instant,
    t1: Instant,
}

/// Waits until the ledger holds `expected` keys and the outbox is empty. t0 is when
/// `events_consumed_total` first moved (when `find_start`), t1 the first poll that
/// saw the outbox empty with the ledger complete. Polls the metrics often (cheap) and
/// the database only once the consumer has read everything, so that polling does not
/// compete with the worker for the two cores.
async fn wait_drained(
    service: &Service,
    db: &Database,
    expected: i64,
    find_start: bool,
) -> anyhow::Result<Drained> {
    let mut t0 = (!find_start).then(Instant::now);
    let mut last_progress = (Instant::now(), -1.0, -1);
    loop {
        let consumed = service
            .metric("identity_reconciler_events_consumed_total")
            .await?;
        let now = Instant::now();
        if t0.is_none() && consumed > 0.0 {
            t0 = Some(now);
        }
        let mut outbox = -1;
        if consumed >= expected as f64 {
            outbox = db.count("SELECT count(*) FROM outbox").await?;
            if outbox == 0 && db.count(checks::RUN_LEDGER_ROWS).await? >= expected {
                return Ok(Drained {
                    t0: t0.unwrap_or(now),
                    t1: now,
                });
            }
        }
        if (consumed, outbox) != (last_progress.1, last_progress.2) {
            last_progress = (now, consumed, outbox);
        } else if now - last_progress.0 > Duration::from_secs(60) {
            bail!("the worker made no progress for 60 s ({consumed} events consumed, outbox {outbox})");
        }
        // Until the first event is consumed, poll often: t0's precision is the period.
        let period = if t0.is_none() { 10 } else { 50 };
        tokio::time::sleep(Duration::from_millis(period)).await;
    }
}

/// The events of a latency phase at `rate` for `seconds`.
pub fn latency_events(workload: &mut Workload, rate: f64, seconds: f64) -> Vec<Event> {
    workload.take(((rate * seconds).round() as usize).max(1))
}

/// `events` produced at a fixed rate (`load` is that rate as a share of the worker's
/// throughput, for the report); latency per event from its produce time (its
/// CreateTime) to its identity record's CreateTime on the output topic (stamped by the
/// producer that published it: the relay's, or the simplest chain's).
pub async fn latency_phase(
    servers: &Servers,
    topics: &Topics,
    events: Vec<Event>,
    load: f64,
    rate: f64,
) -> anyhow::Result<LatencyReport> {
    let count = events.len();
    let seconds = count as f64 / rate;
    let keys: Vec<String> = events.iter().map(|e| e.event_id.clone()).collect();

    // Read the output from its current end: everything before is the drained backlog.
    let starts = kafka::end_offsets(&servers.brokers, &topics.output)?;
    let state = Published {
        waiting: keys.iter().cloned().collect(),
        at: HashMap::new(),
    };
    let deadline = Instant::now() + Duration::from_secs_f64(seconds) + Duration::from_secs(120);
    let (brokers, output) = (servers.brokers.clone(), topics.output.clone());
    let reader = tokio::spawn(async move {
        kafka::read(&brokers, &output, starts, deadline, state, Published::visit).await
    });

    let producer = kafka::ready_producer(&servers.brokers, 1).await?;
    // Connected, with its producer id and the topic's metadata, before the clock
    // starts: otherwise the first events of the phase wait for the producer's
    // start-up, whatever the pipeline measured does.
    let client = producer.client();
    tokio::task::block_in_place(|| {
        client.fetch_metadata(Some(&topics.input), Duration::from_secs(30))
    })
    .context("the latency phase's producer: metadata")?;
    let mut sent_at: Vec<i64> = Vec::with_capacity(count);
    let mut deliveries = Vec::with_capacity(count);
    let started = Instant::now();
    while sent_at.len() < count {
        let due = ((started.elapsed().as_secs_f64() * rate) as usize + 1).min(count);
        while sent_at.len() < due {
            let event = &events[sent_at.len()];
            let now = chrono::Utc::now();
            let payload = event.to_json(now).to_string();
            let record = rdkafka::producer::FutureRecord::to(&topics.input)
                .key(&event.event_id)
                .payload(&payload)
                .timestamp(now.timestamp_millis());
            deliveries.push(producer.send_result(record).map_err(|(e, _)| e)?);
            sent_at.push(now.timestamp_millis());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let achieved = count as f64 / started.elapsed().as_secs_f64();
    for delivery in deliveries {
        kafka::acknowledged(delivery).await?;
    }
    let published = reader.await??;

    let mut latencies: Vec<f64> = keys
        .iter()
        .zip(&sent_at)
        .map(|(key, sent)| (published.at[key] - sent) as f64)
        .collect();
    latencies.sort_by(f64::total_cmp);
    Ok(LatencyReport {
        load,
        offered_events_per_s: rate,
        achieved_events_per_s: achieved,
        events: count,
        p50_ms: percentile(&latencies, 0.50),
        p99_ms: percentile(&latencies, 0.99),
        max_ms: latencies.last().copied().unwrap_or(0.0),
        inside: None,
    })
}

/// CreateTime of the first identity record of each awaited event.
struct Published {
    waiting: HashSet<String>,
    at: HashMap<String, i64>,
}

impl Published {
    fn visit(&mut self, message: &BorrowedMessage<'_>) -> bool {
        if let Some(event_id) = identity_record_event(message) {
            if self.waiting.remove(&event_id) {
                let at = message.timestamp().to_millis().unwrap_or(0);
                self.at.insert(event_id, at);
            }
        }
        self.waiting.is_empty()
    }
}

/// The eventId of an identity record (merge records have no `contact`).
fn identity_record_event(message: &BorrowedMessage<'_>) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(message.payload()?).ok()?;
    value.get("contact")?;
    Some(value.get("eventId")?.as_str()?.to_owned())
}

/// Reads the whole output topic: its size, and how many of `keys` have an identity
/// record (each at least once: the relay may publish a record twice, never lose one).
async fn read_output(
    brokers: &str,
    topic: &str,
    keys: &[String],
) -> anyhow::Result<(OutputSummary, usize)> {
    struct Everything {
        records: u64,
        bytes: u64,
        events: HashSet<String>,
    }
    let ends = kafka::end_offsets(brokers, topic)?;
    let state = Everything {
        records: 0,
        bytes: 0,
        events: HashSet::new(),
    };
    if ends.iter().all(|&end| end == 0) {
        return Ok((OutputSummary::default(), 0));
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    let all = kafka::read_to_ends(brokers, topic, ends, deadline, state, |all, message| {
        all.records += 1;
        all.bytes += message.payload_len() as u64;
        if let Some(event_id) = identity_record_event(message) {
            all.events.insert(event_id);
        }
    })
    .await
    .context("read the output topic")?;
    let published = keys.iter().filter(|k| all.events.contains(*k)).count();
    Ok((
        OutputSummary {
            records: all.records,
            mean_record_bytes: all.bytes as f64 / all.records as f64,
        },
        published,
    ))
}

async fn table_sizes(db: &Database) -> anyhow::Result<Vec<TableSize>> {
    let mut sizes = Vec::new();
    for table in ["contact", "processed_event", "outbox"] {
        let (rows, bytes): (i64, i64) = sqlx::query_as(&format!(
            "SELECT (SELECT count(*) FROM {table}), pg_total_relation_size('{table}')"
        ))
        .fetch_one(&db.pool)
        .await?;
        sizes.push(TableSize {
            table: table.to_owned(),
            rows,
            bytes,
        });
    }
    Ok(sizes)
}

#[derive(Clone, Copy, Debug)]
struct Sample {
    seconds: f64,
    rss_kib: u64,
    outbox: i64,
}

/// Samples the child's memory and the outbox backlog four times a second.
struct Sampler {
    stop: CancellationToken,
    handle: tokio::task::JoinHandle<Vec<Sample>>,
}

impl Sampler {
    fn start(pid: u32, pool: sqlx::PgPool, started: Instant) -> Sampler {
        let stop = CancellationToken::new();
        let token = stop.clone();
        let handle = tokio::spawn(async move {
            let mut samples = Vec::new();
            while !token.is_cancelled() {
                let memory = crate::services::Memory::of(pid);
                let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
                    .fetch_one(&pool)
                    .await
                    .unwrap_or(-1);
                if let Some(memory) = memory {
                    samples.push(Sample {
                        seconds: started.elapsed().as_secs_f64(),
                        rss_kib: memory.rss_kib,
                        outbox,
                    });
                }
                tokio::select! {
                    _ = token.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
            }
            samples
        });
        Sampler { stop, handle }
    }

    async fn stop(self) -> Vec<Sample> {
        self.stop.cancel();
        self.handle.await.unwrap_or_default()
    }
}

/// About `points` samples spread over the run, always with the last one.
fn thin(samples: &[Sample], points: usize) -> Vec<(f64, f64)> {
    let step = samples.len().div_ceil(points).max(1);
    let last = samples.len().saturating_sub(1);
    samples
        .iter()
        .enumerate()
        .filter(|(i, _)| i % step == 0 || *i == last)
        .map(|(_, s)| (round1(s.seconds), round1(mib(s.rss_kib))))
        .collect()
}

fn mix_shares(events: &[Event]) -> BTreeMap<String, f64> {
    let mut counts: BTreeMap<String, f64> = BTreeMap::new();
    for event in events {
        *counts
            .entry(format!("{:?}", event.kind).to_lowercase())
            .or_default() += 1.0;
    }
    for share in counts.values_mut() {
        *share = round1(*share * 100.0 / events.len() as f64) / 100.0;
    }
    counts
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}
