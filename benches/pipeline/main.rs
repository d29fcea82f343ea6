//! End-to-end benchmark of identity-reconciler (`scripts/bench.sh` runs it).
//!
//! Measures the release binary as a child process against the real PostgreSQL and
//! broker of `scripts/services.sh`, and, in the same run, the ceilings it is compared
//! with: what PostgreSQL and the broker do alone with the same data. Prints a table,
//! writes the same figures as JSON (`target/bench/report.json`), and exits non-zero if
//! a correctness check fails, never because of a timing.
//!
//! Phases, in order:
//! 1. worker run (`worker_run`): N events pre-produced, drained by `run`; broker
//!    ceilings on the same topic; latency at fixed offered rates; checks;
//! 2. the simplest chain (`chain`) at the latency phases' rates;
//! 3. ledger pruning under load (`pruning`): the worker run twice more on a ledger
//!    holding old rows, pruning off and on;
//! 4. PostgreSQL ceilings (`ceilings`): batched writes, one statement per event;
//! 5. HTTP runs (`http_run`) at each concurrency, each with its ceiling,
//!    `Store::reconcile` one request per transaction;
//! 6. growth run: the worker run again on a database that already holds many contacts.
//!
//! Settings are environment variables (`knobs`); see `docs/performance.md`.

// Shared with the tests (`testkit/`): the SQL of §2's invariants, so that the
// benchmark checks exactly what the tests check, and the names of a run's topics and
// group, so that both start the service alike. The benchmark's own helpers are the
// modules below.
use ir_testkit::{invariants, names};

mod ceilings;
mod chain;
mod checks;
mod cpu;
mod growth;
mod http_run;
mod kafka;
mod knobs;
mod ledger;
mod load;
mod pruning;
mod report;
mod services;
mod stats;
mod worker_run;
mod workload;

use anyhow::Context;
use knobs::Knobs;
use report::{Growth, HttpComparison, PostgresCeilings, Report, Wal};
use services::Servers;
use std::process::ExitCode;
use std::time::Instant;
use worker_run::RunPlan;

fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a Tokio runtime");
    match runtime.block_on(run()) {
        Ok(report) if report.checks_passed => ExitCode::SUCCESS,
        Ok(_) => {
            eprintln!("bench: correctness checks failed (see the table)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("bench: failed: {e:?}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<Report> {
    let started = Instant::now();
    let knobs = Knobs::from_env()?;
    let out_dir = knobs
        .report
        .parent()
        .map(ToOwned::to_owned)
        .unwrap_or_default();
    let servers = Servers::from_env(&out_dir.join("logs"))?;
    let postgres_settings = servers.postgres_settings().await?;
    eprintln!("bench: {knobs:?}");

    if knobs.warmup_events > 0 {
        // A broker just started spends its first minutes compiling its own code: in a
        // 40,000-event drain the JVM burned 58 µs per event on a fresh broker, 38 after
        // a 40,000-event warm-up, 20 on one that had run a whole benchmark. Its report
        // is dropped.
        eprintln!("bench: warm-up run of {} events", knobs.warmup_events);
        worker_run::run(
            &servers,
            &RunPlan {
                label: "warmup",
                events: knobs.warmup_events,
                mix: &knobs.mix,
                latency: None,
                broker_ceilings: false,
                preload_contacts: 0,
                ledger: None,
            },
        )
        .await
        .context("warm-up run")?;
    }

    let worker = worker_run::run(
        &servers,
        &RunPlan {
            label: "worker",
            events: knobs.events,
            mix: &knobs.mix,
            // A zero time box (e.g. `BENCH_HTTP_SECONDS=0`) skips the latency phases.
            latency: (knobs.latency_seconds > 0.0)
                .then_some((knobs.latency_seconds, knobs.latency_loads.as_slice())),
            broker_ceilings: true,
            preload_contacts: 0,
            ledger: None,
        },
    )
    .await
    .context("worker run")?;

    let chain = if worker.latency.is_empty() {
        None
    } else {
        Some(
            chain::run(&servers, &knobs.mix, &worker, knobs.latency_seconds)
                .await
                .context("simplest chain")?,
        )
    };
    let pruning = pruning::run(&servers, &knobs).await?;

    eprintln!("bench: PostgreSQL ceilings");
    let batched = ceilings::batched_writes(&servers, &knobs.mix, knobs.events).await?;
    let (store_alone_events_per_s, store_alone_cpu) =
        ceilings::store_alone(&servers, &knobs.mix, knobs.events).await?;
    let postgres = PostgresCeilings {
        batched_events_per_s: batched.events_per_s,
        batched_cpu: batched.cpu,
        batched_wal_bytes_per_event: batched.wal_bytes as f64 / knobs.events as f64,
        store_alone_events_per_s,
        store_alone_cpu,
        one_statement_events_per_s: ceilings::one_statement_per_event(
            &servers,
            &knobs.mix,
            knobs.events,
            knobs.single_seconds,
        )
        .await?,
    };

    let mut http = Vec::new();
    for &concurrency in &knobs.http_concurrency {
        eprintln!("bench: HTTP with {concurrency} connections, and its ceiling");
        let (service, checks) =
            http_run::run(&servers, &knobs.mix, concurrency, knobs.http_seconds)
                .await
                .context("HTTP run")?;
        let (ceiling, check) = ceilings::reconcile_per_transaction(
            &servers,
            &knobs.mix,
            concurrency,
            knobs.http_seconds,
        )
        .await?;
        http.push(HttpComparison {
            ratio: service.per_s / ceiling.per_s,
            service,
            ceiling,
            checks,
            ceiling_checks: vec![check],
        });
    }

    let growth = if knobs.growth_contacts > 0 {
        eprintln!("bench: growth run on {} contacts", knobs.growth_contacts);
        let grown = worker_run::run(
            &servers,
            &RunPlan {
                label: "growth",
                events: knobs.growth_events,
                mix: &knobs.mix,
                latency: None,
                broker_ceilings: false,
                preload_contacts: knobs.growth_contacts,
                ledger: None,
            },
        )
        .await
        .context("growth run")?;
        Some(Growth {
            ratio_to_empty: grown.events_per_s / worker.events_per_s,
            worker: grown,
        })
    } else {
        None
    };

    let mut report = Report {
        worker_ratio: Report::worker_ratio(&worker, &postgres),
        wal: Wal::of(&worker, &postgres),
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        postgres_settings,
        seconds: started.elapsed().as_secs_f64(),
        knobs,
        worker,
        postgres,
        chain,
        pruning,
        http,
        growth,
        checks_passed: false,
    };
    report.checks_passed = report.all_checks().iter().all(|(_, c)| c.passed);
    report.print_table();
    std::fs::create_dir_all(&out_dir)?;
    std::fs::write(&report.knobs.report, serde_json::to_string_pretty(&report)?)?;
    eprintln!("bench: report written to {}", report.knobs.report.display());
    Ok(report)
}
