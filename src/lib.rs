//! identity-reconciler: one identity per customer from a stream of order events.
//!
//! Order-contact events arrive on a Kafka topic; each is reconciled into PostgreSQL
//! following the Bitespeed identity-reconciliation rules, exactly once thanks to a
//! ledger of processed events; the consolidated identity leaves through a
//! transactional outbox to an output topic. An HTTP sidecar serves the same
//! reconciliation (`POST /identify`), a read-only lookup, health and metrics.
//!
//! # Layout
//! - [`domain`]: parsed inputs, the reconciliation rules, the identity view. Pure.
//! - [`store`]: PostgreSQL, one transaction per batch; locking, ledger, outbox.
//! - [`worker`]: the Kafka consumer loop, the rebalance drain, dead letters, the outbox relay.
//! - [`http`]: the axum sidecar.
//! - [`config`], [`telemetry`], [`metrics`], [`health`], [`shutdown`]: plumbing.

pub mod config;
pub mod contracts;
pub mod domain;
pub mod health;
pub mod http;
pub mod metrics;
pub mod shutdown;
pub mod store;
pub mod tail;
pub mod telemetry;
pub mod worker;

use crate::config::Settings;
use crate::health::Health;
use crate::metrics::METRICS;
use crate::store::Store;
use crate::worker::{EmbeddedCluster, Worker};
use anyhow::Context;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// What a process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Worker, outbox relay and HTTP sidecar: the main job.
    Run,
    /// The HTTP sidecar only; needs no Kafka.
    Http,
}

/// A built, not yet running, service: its database is migrated, its listener bound.
pub struct Application {
    settings: Arc<Settings>,
    store: Store,
    listener: tokio::net::TcpListener,
    health: Arc<Health>,
    embedded: Option<EmbeddedCluster>,
    worker: Option<Worker>,
    shutdown: CancellationToken,
}

impl Application {
    pub async fn build(
        settings: Settings,
        mode: Mode,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Application> {
        settings
            .http
            .validate()
            .map_err(|e| anyhow::anyhow!("invalid settings: {e}"))?;
        if matches!(mode, Mode::Run) {
            settings
                .validate_drain_timeout()
                .map_err(|e| anyhow::anyhow!("invalid settings: {e}"))?;
        }
        let settings = Arc::new(settings);
        let pool = store::connect(&settings.database).await?;
        let store = Store::new(pool, settings.reconcile.clone());
        let health = Arc::new(Health::new(settings.stall_timeout()));
        let mut embedded = None;
        let worker = match mode {
            Mode::Http => None,
            Mode::Run => {
                let kafka = &settings.kafka;
                let brokers = if kafka.embedded() {
                    let state_topic = worker::relay_state_topic(&kafka.output_topic);
                    let cluster = EmbeddedCluster::start(
                        &[
                            &kafka.input_topic,
                            &kafka.output_topic,
                            &kafka.dlq_topic,
                            &state_topic,
                        ],
                        kafka.topic_partitions,
                    )
                    .context("cannot start the embedded Kafka cluster")?;
                    let bootstrap = cluster.bootstrap_servers().to_owned();
                    tracing::info!(bootstrap = %bootstrap, "no KAFKA_BROKERS set: started the embedded Kafka cluster (in memory)");
                    tracing::info!(
                        "produce an event with: identity-reconciler produce --brokers {bootstrap} '{{\"eventId\":\"e-1\",\"email\":\"lorraine@hillvalley.edu\",\"phoneNumber\":\"123456\"}}'"
                    );
                    embedded = Some(cluster);
                    bootstrap
                } else {
                    if kafka.create_topics {
                        worker::create_missing_topics(kafka, &kafka.brokers).await?;
                    }
                    kafka.brokers.clone()
                };
                Some(Worker::new(
                    settings.clone(),
                    store.clone(),
                    &brokers,
                    health.clone(),
                    shutdown.clone(),
                )?)
            }
        };
        let listener = tokio::net::TcpListener::bind(settings.http.addr)
            .await
            .with_context(|| format!("cannot listen on {}", settings.http.addr))?;
        Ok(Application {
            settings,
            store,
            listener,
            health,
            embedded,
            worker,
            shutdown,
        })
    }

    pub fn http_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
    }

    /// Bootstrap servers of the embedded cluster, when one was started.
    pub fn embedded_brokers(&self) -> Option<&str> {
        self.embedded
            .as_ref()
            .map(EmbeddedCluster::bootstrap_servers)
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Runs until the shutdown token is cancelled (or a task fails), then stops every
    /// task within `worker.shutdown_timeout_ms`.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Application {
            settings,
            store,
            listener,
            health,
            embedded,
            worker,
            shutdown,
        } = self;
        let mut tasks: JoinSet<anyhow::Result<()>> = JoinSet::new();
        let coalescer = http::Coalescer::start(
            store.clone(),
            settings.http.coalesce_lanes,
            settings.http.coalesce_max_batch,
            &mut tasks,
        );
        let router = http::router(
            http::AppState {
                store: store.clone(),
                auth_token: settings.http.auth_token().map(http::Token::new),
                admin_token: settings.http.admin_token().map(http::Token::new),
                coalescer,
                health,
                body_limit: settings.http.body_limit_bytes,
                body_read_timeout: std::time::Duration::from_millis(
                    settings.http.body_read_timeout_ms,
                ),
            },
            std::time::Duration::from_millis(settings.http.request_timeout_ms),
        );
        if let Some(every) = settings.maintenance_interval() {
            tasks.spawn(keep_statistics_fresh(
                store.clone(),
                every,
                shutdown.clone(),
            ));
        }
        tasks.spawn(prune_old_rows(
            store.clone(),
            settings.ledger.clone(),
            settings.reconcile.quarantine.window,
            shutdown.clone(),
        ));
        tracing::info!(addr = %listener.local_addr()?, "HTTP sidecar listening");
        let stop = shutdown.clone();
        let options = http::ServeOptions {
            header_read_timeout: std::time::Duration::from_millis(
                settings.http.header_read_timeout_ms,
            ),
            max_connections: settings.http.max_connections,
        };
        tasks.spawn(async move {
            http::serve(listener, router, options, stop)
                .await
                .context("HTTP server failed")
        });
        if let Some(worker) = worker {
            worker.spawn(&mut tasks);
        }

        let mut failure = None;
        while let Some(joined) = tokio::select! {
            joined = tasks.join_next() => joined,
            _ = shutdown.cancelled() => None,
        } {
            if let Some(e) = task_error(joined) {
                tracing::error!(error = ?e, "a task failed; shutting down");
                failure = Some(e);
                shutdown.cancel();
            }
        }
        shutdown.cancel();
        let drained = tokio::time::timeout(settings.shutdown_timeout(), async {
            while let Some(joined) = tasks.join_next().await {
                if let Some(e) = task_error(joined) {
                    tracing::error!(error = ?e, "a task failed while shutting down");
                    failure.get_or_insert(e);
                }
            }
        })
        .await;
        store.pool().close().await;
        drop(embedded);
        if drained.is_err() {
            anyhow::bail!(
                "shutdown did not finish within {:?}; unfinished work will be redelivered",
                settings.shutdown_timeout()
            );
        }
        match failure {
            Some(e) => Err(e),
            None => {
                tracing::info!("stopped");
                Ok(())
            }
        }
    }
}

/// Every `every`, analyzes and vacuums the hot path's tables when autovacuum would
/// (see [`Store::maintain_tables`]). Failures are logged and retried next time.
async fn keep_statistics_fresh(
    store: Store,
    every: std::time::Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = ticks.tick() => {}
        }
        match store.maintain_tables().await {
            Ok(done) if !done.is_empty() => tracing::debug!(?done, "table maintenance"),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %http::chain(&e), "could not maintain the tables")
            }
        }
    }
}

/// The retention task: every `ledger.prune_interval`, deletes ledger rows older than
/// `ledger.retention` and quarantine counterpart pairs last seen before
/// `reconcile.quarantine.window`, each in steps of `ledger.prune_batch` rows (see
/// [`Store::prune_ledger`], [`Store::prune_counterparts`]), off the hot path, does the
/// quarantine splits still pending ([`Store::split_pending_quarantines`]), and sets
/// the ledger-size gauge. Failures are logged and retried next time.
async fn prune_old_rows(
    store: Store,
    settings: config::LedgerSettings,
    counterpart_window: std::time::Duration,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut ticks = tokio::time::interval(settings.prune_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let batch = settings.prune_batch;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            _ = ticks.tick() => {}
        }
        prune_in_steps("ledger", batch, &METRICS.ledger_pruned, &shutdown, || {
            store.prune_ledger(settings.retention, batch)
        })
        .await;
        prune_in_steps(
            "quarantine counterparts",
            batch,
            &METRICS.counterparts_pruned,
            &shutdown,
            || store.prune_counterparts(counterpart_window, batch),
        )
        .await;
        // Splits a tripping batch could not finish (see `store/quarantine.rs`); the
        // first tick is at start.
        match store.split_pending_quarantines().await {
            Ok(0) => {}
            Ok(split) => tracing::info!(split, "pending quarantine splits done"),
            Err(e) => tracing::warn!(error = %http::chain(&e), "could not split a quarantine"),
        }
        match store.ledger_size().await {
            Ok(rows) => METRICS.ledger_rows.set(rows),
            Err(e) => tracing::warn!(error = %http::chain(&e), "could not size the ledger"),
        }
    }
}

/// Runs `step` (one short transaction deleting at most `batch` rows) until a step
/// deletes fewer than `batch`, counting what was deleted in `pruned`.
async fn prune_in_steps<F, Fut>(
    what: &str,
    batch: i64,
    pruned: &prometheus::IntCounter,
    shutdown: &CancellationToken,
    mut step: F,
) where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<u64, store::StoreError>>,
{
    loop {
        match step().await {
            Ok(deleted) => {
                pruned.inc_by(deleted);
                if deleted < batch.max(1) as u64 || shutdown.is_cancelled() {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %http::chain(&e), what, "could not prune old rows");
                return;
            }
        }
    }
}

fn task_error(joined: Result<anyhow::Result<()>, tokio::task::JoinError>) -> Option<anyhow::Error> {
    match joined {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(e) => Some(anyhow::Error::new(e).context("task panicked")),
    }
}
