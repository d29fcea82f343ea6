//! The report: a table on stdout and the same figures as JSON.
//!
//! Every figure of the service comes with the ceiling it is compared to, measured in
//! the same run on the same machine: absolute numbers depend on the machine and on
//! whatever else runs on it, ratios much less.

use crate::chain::ChainReport;
use crate::checks::Check;
use crate::cpu::CpuUse;
use crate::knobs::Knobs;
use crate::load::LoadReport;
use crate::pruning::Pruning;
use crate::worker_run::WorkerReport;
use serde::Serialize;
use std::collections::BTreeMap;

#[derive(Debug, Serialize)]
pub struct Report {
    pub knobs: Knobs,
    pub cpus: usize,
    pub postgres_settings: BTreeMap<String, String>,
    pub seconds: f64,
    pub worker: WorkerReport,
    pub postgres: PostgresCeilings,
    /// The worker's throughput over min(PostgreSQL batched writes, broker consume,
    /// broker produce).
    pub worker_ratio: Ratio,
    /// PostgreSQL WAL per event: the worker against the batched writes.
    pub wal: Wal,
    /// The simplest chain at the worker's latency loads.
    pub chain: Option<ChainReport>,
    /// The worker on a ledger holding old rows, pruning off and on.
    pub pruning: Option<Pruning>,
    pub http: Vec<HttpComparison>,
    pub growth: Option<Growth>,
    pub checks_passed: bool,
}

#[derive(Debug, Serialize)]
pub struct PostgresCeilings {
    pub batched_events_per_s: f64,
    pub batched_cpu: CpuUse,
    /// WAL written by the batched writes, over N.
    pub batched_wal_bytes_per_event: f64,
    pub one_statement_events_per_s: f64,
    /// `Store::reconcile` alone, batches of 500 (a breakdown, not a ceiling).
    pub store_alone_events_per_s: f64,
    pub store_alone_cpu: CpuUse,
}

#[derive(Debug, Serialize)]
pub struct Ratio {
    pub ratio: f64,
    pub ceiling_per_s: f64,
    /// Which ceiling was the lowest.
    pub ceiling: String,
}

/// WAL bytes per event (from the server's WAL position before and after the phase).
#[derive(Debug, Serialize)]
pub struct Wal {
    pub worker_bytes_per_event: f64,
    pub batched_bytes_per_event: f64,
    /// Worker over batched writes.
    pub ratio: f64,
}

impl Wal {
    pub fn of(worker: &WorkerReport, postgres: &PostgresCeilings) -> Wal {
        Wal {
            worker_bytes_per_event: worker.wal_bytes_per_event,
            batched_bytes_per_event: postgres.batched_wal_bytes_per_event,
            ratio: worker.wal_bytes_per_event / postgres.batched_wal_bytes_per_event,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct HttpComparison {
    pub service: LoadReport,
    /// `Store::reconcile`, one request per transaction, same concurrency.
    pub ceiling: LoadReport,
    pub ratio: f64,
    pub checks: Vec<Check>,
    pub ceiling_checks: Vec<Check>,
}

#[derive(Debug, Serialize)]
pub struct Growth {
    pub worker: WorkerReport,
    /// Throughput over the empty-database run's.
    pub ratio_to_empty: f64,
}

impl Report {
    pub fn worker_ratio(worker: &WorkerReport, postgres: &PostgresCeilings) -> Ratio {
        let mut ceilings = vec![("PostgreSQL batched writes", postgres.batched_events_per_s)];
        if let Some(broker) = &worker.broker {
            ceilings.push(("broker consume-only", broker.consume_events_per_s));
            ceilings.push(("broker produce-only", broker.produce_events_per_s));
        }
        let (name, lowest) = ceilings
            .into_iter()
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .expect("at least one ceiling");
        Ratio {
            ratio: worker.events_per_s / lowest,
            ceiling_per_s: lowest,
            ceiling: name.to_owned(),
        }
    }

    /// Every check, with the phase it belongs to.
    pub fn all_checks(&self) -> Vec<(String, &Check)> {
        let mut all: Vec<(String, &Check)> = Vec::new();
        all.extend(self.worker.checks.iter().map(|c| ("worker".to_owned(), c)));
        if let Some(pruning) = &self.pruning {
            for (phase, run) in [("pruning off", &pruning.off), ("pruning on", &pruning.on)] {
                all.extend(run.checks.iter().map(|c| (phase.to_owned(), c)));
            }
        }
        for http in &self.http {
            let phase = format!("http {}", http.service.concurrency);
            all.extend(http.checks.iter().map(|c| (phase.clone(), c)));
            let phase = format!("reconcile ceiling {}", http.service.concurrency);
            all.extend(http.ceiling_checks.iter().map(|c| (phase.clone(), c)));
        }
        if let Some(growth) = &self.growth {
            all.extend(
                growth
                    .worker
                    .checks
                    .iter()
                    .map(|c| ("growth".to_owned(), c)),
            );
        }
        all
    }

    pub fn print_table(&self) {
        let k = &self.knobs;
        println!();
        println!(
            "identity-reconciler benchmark: {} events, seed {}, hot share {} ({} heavy hitters), {} CPUs, {:.0} s",
            k.events, k.mix.seed, k.mix.hot_share, k.mix.hot_identities, self.cpus, self.seconds
        );
        let settings: Vec<String> = self
            .postgres_settings
            .iter()
            .map(|(name, value)| format!("{name}={value}"))
            .collect();
        println!("PostgreSQL: {}", settings.join(", "));
        self.print_worker();
        self.print_pruning();
        self.print_http();
        self.print_growth();
        println!("\nChecks");
        for (phase, check) in self.all_checks() {
            let mark = if check.passed { "ok  " } else { "FAIL" };
            println!("  [{mark}] {phase}: {} ({})", check.name, check.detail);
        }
        println!();
    }

    fn print_worker(&self) {
        let w = &self.worker;
        println!(
            "\nWorker (`run`, empty database, {} partitions)",
            crate::kafka::PARTITIONS
        );
        let mix: Vec<String> = w
            .mix
            .iter()
            .map(|(kind, share)| format!("{kind} {:.1}%", share * 100.0))
            .collect();
        row("event mix", mix.join(", "));
        row(
            "throughput",
            format!(
                "{} events/s ({} events in {:.1} s)",
                int(w.events_per_s),
                w.events,
                w.seconds
            ),
        );
        row(
            "PostgreSQL ceilings",
            format!(
                "{} events/s batched (500/transaction); {} events/s one statement per event",
                int(self.postgres.batched_events_per_s),
                int(self.postgres.one_statement_events_per_s)
            ),
        );
        row(
            "store alone",
            format!(
                "{} events/s: Store::reconcile, 500 events per call, no broker, no relay",
                int(self.postgres.store_alone_events_per_s)
            ),
        );
        if let Some(b) = &w.broker {
            row(
                "broker ceilings",
                format!(
                    "{} events/s consume-only; {} records/s produce-only ({} B, acks=all, idempotent); \
                     input pre-produced at {} events/s",
                    int(b.consume_events_per_s),
                    int(b.produce_events_per_s),
                    b.produce_record_bytes,
                    int(w.preproduce_events_per_s)
                ),
            );
        }
        let r = &self.worker_ratio;
        if let Some(b) = &w.broker {
            let together = &b.all_at_once;
            row(
                "all at once",
                format!(
                    "{} events/s: consume-only, produce-only and PostgreSQL batched writes run together \
                     ({:.2} cores busy); the worker is {:.2} of it",
                    int(together.events_per_s),
                    together.cpu.busy_cores,
                    w.events_per_s / together.events_per_s
                ),
            );
            let n = w.events;
            row(
                "CPU per event",
                format!(
                    "worker {:.0} µs ({:.2} cores busy); consume-only {:.0} µs; produce-only {:.0} µs; \
                     PostgreSQL batched {:.0} µs; store alone {:.0} µs (every process on the machine)",
                    w.cpu.us_per(n),
                    w.cpu.busy_cores,
                    b.consume_cpu.us_per(n),
                    b.produce_cpu.us_per(n),
                    self.postgres.batched_cpu.us_per(n),
                    self.postgres.store_alone_cpu.us_per(n)
                ),
            );
            row(
                "worker CPU by process",
                format!("{} (per event)", by_process(&w.cpu, n)),
            );
        }
        row(
            "ratio to ceiling",
            format!(
                "{:.2} of {} events/s ({})",
                r.ratio,
                int(r.ceiling_per_s),
                r.ceiling
            ),
        );
        row(
            "WAL per event",
            format!(
                "worker {:.0} B; PostgreSQL batched {:.0} B; the worker writes {:.2}× (whole server)",
                self.wal.worker_bytes_per_event, self.wal.batched_bytes_per_event, self.wal.ratio
            ),
        );
        for (i, l) in w.latency.iter().enumerate() {
            row(
                &format!("latency at {:.0}%", l.load * 100.0),
                format!(
                    "p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms at {} events/s for {} events",
                    l.p50_ms,
                    l.p99_ms,
                    l.max_ms,
                    int(l.achieved_events_per_s),
                    l.events
                ),
            );
            if let Some(inside) = &l.inside {
                row(
                    "  inside the worker",
                    format!(
                        "{} batches of {:.1} events, {:.1} ms each; relay {:.0} ms outbox to ack on average",
                        inside.batches,
                        inside.mean_batch_size,
                        inside.mean_batch_ms,
                        inside.mean_relay_latency_ms
                    ),
                );
            }
            let chain = self.chain.as_ref();
            if let Some((c, ratio)) =
                chain.and_then(|c| Some((c.latency.get(i)?, c.worker_p99_ratio[i])))
            {
                row(
                    "  simplest chain",
                    format!(
                        "p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms at {} events/s; worker p99 ÷ chain p99 = {:.2}",
                        c.p50_ms,
                        c.p99_ms,
                        c.max_ms,
                        int(c.achieved_events_per_s),
                        ratio
                    ),
                );
            }
        }
        if let Some(c) = &self.chain {
            row(
                "simplest chain",
                format!(
                    "{} batches of {:.1} events: consume, the batched writes' INSERTs, produce",
                    c.batches, c.mean_batch_size
                ),
            );
        }
        print_run_details(w);
    }

    fn print_pruning(&self) {
        let Some(p) = &self.pruning else {
            return;
        };
        let (off, on) = (&p.off, &p.on);
        let old = on.ledger.as_ref().map_or(0, |l| l.old_rows);
        println!(
            "\nLedger pruning under load (`run`, {old} ledger rows 8 days old; retention 36500d, then 7d)"
        );
        row(
            "pruning off",
            format!(
                "{} events/s ({} events in {:.1} s); CPU {:.0} µs, WAL {:.0} B per event",
                int(off.events_per_s),
                off.events,
                off.seconds,
                off.cpu.us_per(off.events),
                off.wal_bytes_per_event
            ),
        );
        let pruned = on
            .ledger
            .as_ref()
            .map_or((0, 0), |l| (l.pruned_during_drain, l.pruned_by_stop));
        row(
            "pruning on",
            format!(
                "{} events/s ({} events in {:.1} s); CPU {:.0} µs, WAL {:.0} B per event; \
                 {} rows pruned during the drain, {} by the stop",
                int(on.events_per_s),
                on.events,
                on.seconds,
                on.cpu.us_per(on.events),
                on.wal_bytes_per_event,
                int(pruned.0 as f64),
                int(pruned.1 as f64)
            ),
        );
        row(
            "ratio",
            format!(
                "{:.2}: throughput with pruning ÷ without",
                p.throughput_ratio
            ),
        );
    }

    fn print_http(&self) {
        if self.http.is_empty() {
            return;
        }
        println!("\nHTTP (`http`, POST /identify, keep-alive) vs Store::reconcile, one request per transaction");
        println!(
            "  {:>5} {:>9} {:>8} {:>8} {:>7} | {:>9} {:>8} {:>8} | {:>5}",
            "conns",
            "req/s",
            "p50 ms",
            "p99 ms",
            "errors",
            "ceiling/s",
            "p50 ms",
            "p99 ms",
            "ratio"
        );
        for h in &self.http {
            let (s, c) = (&h.service, &h.ceiling);
            println!(
                "  {:>5} {:>9} {:>8.1} {:>8.1} {:>7} | {:>9} {:>8.1} {:>8.1} | {:>5.2}",
                s.concurrency,
                int(s.per_s),
                s.p50_ms,
                s.p99_ms,
                s.errors,
                int(c.per_s),
                c.p50_ms,
                c.p99_ms,
                h.ratio
            );
        }
        for h in &self.http {
            let (s, c) = (&h.service, &h.ceiling);
            let us = |r: &LoadReport| r.cpu.us_per(r.requests as usize);
            println!(
                "  {:>5} CPU per request: {:.0} µs, {:.2} cores busy ({}); ceiling {:.0} µs, {:.2} cores busy",
                s.concurrency,
                us(s),
                s.cpu.busy_cores,
                by_process(&s.cpu, s.requests as usize),
                us(c),
                c.cpu.busy_cores
            );
        }
    }

    fn print_growth(&self) {
        let Some(g) = &self.growth else {
            return;
        };
        let w = &g.worker;
        println!(
            "\nGrowth (`run` on a database holding {} contacts, loaded in {:.0} s)",
            w.preloaded_contacts, w.preload_seconds
        );
        row(
            "throughput",
            format!(
                "{} events/s ({} events in {:.1} s); {:.2} of the empty-database run",
                int(w.events_per_s),
                w.events,
                w.seconds,
                g.ratio_to_empty
            ),
        );
        print_run_details(w);
    }
}

fn print_run_details(w: &WorkerReport) {
    let i = &w.inside;
    row(
        "inside the worker",
        format!(
            "{:.0} batches of {:.0} events, {:.1} ms each, in transactions {:.0}% of the time; \
             relay: {:.0} records, {:.0} ms outbox to ack on average, p99 at most {:.0} ms",
            i.batches,
            i.mean_batch_size,
            i.mean_batch_ms,
            i.reconcile_busy_share * 100.0,
            i.relay_published,
            i.mean_relay_latency_ms,
            i.relay_latency_p99_ms_at_most
        ),
    );
    row("outbox backlog peak", format!("{} records", w.outbox_peak));
    let rss: Vec<String> = w
        .memory
        .rss_mib_over_time
        .iter()
        .map(|(_, mib)| format!("{mib:.0}"))
        .collect();
    row(
        "memory",
        format!(
            "peak RSS {:.0} MiB; RSS over the run {} MiB",
            w.memory.peak_rss_mib,
            rss.join(" → ")
        ),
    );
    let tables: Vec<String> = w
        .tables
        .iter()
        .map(|t| {
            format!(
                "{} {} rows {:.1} MiB",
                t.table,
                t.rows,
                t.bytes as f64 / 1_048_576.0
            )
        })
        .collect();
    row("tables after", tables.join("; "));
    row(
        "output topic",
        format!(
            "{} records, {:.0} B on average",
            w.output.records, w.output.mean_record_bytes
        ),
    );
}

fn row(label: &str, value: String) {
    println!("  {label:<22} {value}");
}

/// A rate, rounded, with thousands separators.
fn int(x: f64) -> String {
    let digits = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Who spent `cpu`, in microseconds per one of `n` events or requests.
fn by_process(cpu: &CpuUse, n: usize) -> String {
    let by = &cpu.by_process;
    let us = |core_seconds: f64| core_seconds * 1e6 / n.max(1) as f64;
    format!(
        "service {:.0} µs; PostgreSQL {:.0} µs; broker {:.0} µs; load generator {:.0} µs; other {:.0} µs",
        us(by.service),
        us(by.postgres),
        us(by.broker),
        us(by.load_generator),
        us(by.other)
    )
}
