//! The benchmark's settings, from environment variables (all optional;
//! docs/performance.md, "Settings", lists them).

use crate::workload::Mix;
use anyhow::Context;
use std::path::PathBuf;
use std::str::FromStr;

#[derive(Clone, Debug, serde::Serialize)]
pub struct Knobs {
    /// Events pre-produced for the worker run (BENCH_EVENTS).
    pub events: usize,
    /// Events of an unmeasured worker run first, so that the measured phases find the
    /// broker's JVM compiled and PostgreSQL's caches filled (BENCH_WARMUP_EVENTS; at
    /// most BENCH_EVENTS; 0 skips it).
    pub warmup_events: usize,
    pub mix: Mix,
    /// Length of the fixed-rate latency phase (BENCH_LATENCY_SECONDS).
    pub latency_seconds: f64,
    /// Offered rates of the latency phases, as shares of the measured throughput
    /// (BENCH_LATENCY_LOAD, e.g. "0.5,0.1"); the worker and the simplest chain are
    /// measured at each.
    pub latency_loads: Vec<f64>,
    /// Length of each HTTP run and of its ceiling (BENCH_HTTP_SECONDS).
    pub http_seconds: f64,
    /// Concurrent connections of the HTTP runs (BENCH_HTTP_CONCURRENCY, e.g. "16,64";
    /// "0" skips them).
    pub http_concurrency: Vec<usize>,
    /// Time box of the one-statement-per-event PostgreSQL reference (BENCH_SINGLE_SECONDS).
    pub single_seconds: f64,
    /// Contacts already in the database of the growth run (BENCH_GROWTH_CONTACTS; 0 skips it).
    pub growth_contacts: u64,
    /// Events of the growth run (BENCH_GROWTH_EVENTS).
    pub growth_events: usize,
    /// Old rows in the ledger of the two pruning runs (BENCH_PRUNE_ROWS; 0 skips them).
    pub prune_rows: u64,
    /// Where the JSON report goes (BENCH_REPORT).
    pub report: PathBuf,
}

impl Knobs {
    pub fn from_env() -> anyhow::Result<Knobs> {
        let events = var("BENCH_EVENTS", 200_000)?;
        let http_seconds = var("BENCH_HTTP_SECONDS", 15.0)?;
        // Shorter HTTP runs (a smoke run) shorten the other time boxes too.
        let short = f64::min(10.0, http_seconds);
        let concurrency: String = var("BENCH_HTTP_CONCURRENCY", "16,64".to_owned())?;
        let loads: String = var("BENCH_LATENCY_LOAD", "0.5,0.1".to_owned())?;
        let target = PathBuf::from(
            std::env::var("CARGO_TARGET_DIR")
                .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/target").into()),
        );
        Ok(Knobs {
            events,
            warmup_events: var("BENCH_WARMUP_EVENTS", 100_000)?.min(events),
            mix: Mix {
                seed: var("BENCH_SEED", 42)?,
                hot_share: var("BENCH_HOT_SHARE", 0.0)?,
                hot_identities: var("BENCH_HOT_IDENTITIES", 20)?,
            },
            latency_seconds: var("BENCH_LATENCY_SECONDS", short)?,
            latency_loads: loads
                .split(',')
                .map(|l| l.trim().parse().context("BENCH_LATENCY_LOAD"))
                .collect::<Result<_, _>>()?,
            http_seconds,
            // "0" skips the HTTP runs.
            http_concurrency: concurrency
                .split(',')
                .map(|c| c.trim().parse().context("BENCH_HTTP_CONCURRENCY"))
                .filter(|c| !matches!(c, Ok(0)))
                .collect::<Result<_, _>>()?,
            single_seconds: var("BENCH_SINGLE_SECONDS", short)?,
            growth_contacts: var("BENCH_GROWTH_CONTACTS", 1_000_000)?,
            growth_events: var("BENCH_GROWTH_EVENTS", (events / 4).max(1))?,
            prune_rows: var("BENCH_PRUNE_ROWS", 2 * events as u64)?,
            report: var("BENCH_REPORT", target.join("bench/report.json"))?,
        })
    }
}

fn var<T: FromStr>(name: &str, default: T) -> anyhow::Result<T>
where
    T::Err: std::error::Error + Send + Sync + 'static,
{
    match std::env::var(name) {
        Ok(text) if !text.trim().is_empty() => text
            .trim()
            .parse()
            .with_context(|| format!("{name}={text}")),
        _ => Ok(default),
    }
}
