//! identity-reconciler: one identity per customer from a stream of order events.
//!
//! Order-contact events arrive on a Kafka topic; each is reconciled into PostgreSQL
//! following the Bitespeed identity-reconciliation rules, exactly once thanks to a
//! ledger of processed events; the consolidated identity leaves through a
//! transactional outbox to an output topic. An HTTP sidecar serves the same
//! reconciliation (`POST /identify`), a read-only lookup, health and metrics.
//!
//! "§n" in the code's comments is section n of the product contract,
//! `docs/contract.md`.
//!
//! # Layout
//! Dependencies run one way: `domain` ← `store` ← `worker` / `views` ← `http` ←
//! [`Application`] ← the binary's commands (`src/cli/`, one module each; they live in
//! the binary, so nothing here can depend on them). The leaves (`backoff`,
//! `telemetry`, `metrics`, `shutdown`, `health`, each layer's error type) import
//! nothing of their siblings.
//! - [`domain`]: parsed inputs (`input`, with `normalize` and `quality`), the
//!   reconciliation rules (`reconcile`, `split`), the identity and the records
//!   published about it (`identity`), the wire vocabularies (`vocabulary`). Pure: no
//!   I/O, no sqlx, rdkafka or axum.
//! - [`store`]: all of PostgreSQL. One error type (`store/error.rs`); reconciling a
//!   batch in one transaction (`reconcile`, `writes`, `sql/`); the whole lock protocol
//!   and its proof (`locks`); ledger, outbox, decisions, quarantine, reviews, admin
//!   actions, explain and lookups.
//! - [`worker`]: all of Kafka. The step that applies a batch with no Kafka type in it
//!   (`step`), the consumer loop and its adapter (`consumer`, `batch`), the rebalance
//!   drain (`drain`), dead letters, the fenced outbox relay (`relay`), the topics the
//!   service needs (`topics`).
//! - [`views`]: the JSON answers of history, explain and reviews.
//! - [`http`]: the axum sidecar: routes, error mapping (`error`, `responses`), the
//!   coalescing lane, the OpenAPI document.
//! - [`contracts`]: the generated documents (`contracts/`, `docs/reference/`).
//! - [`config`], [`telemetry`], [`metrics`], [`health`], [`shutdown`], [`backoff`]:
//!   plumbing.
//!
//! The public items are what the binary, the tests and the benchmark use; everything
//! else is crate-private (`unreachable_pub` keeps `pub` meaning exactly that).

#![warn(unreachable_pub)]

pub mod backoff;
pub mod config;
pub mod contracts;
pub mod domain;
pub mod health;
pub mod http;
pub mod metrics;
pub mod shutdown;
pub mod store;
pub mod telemetry;
pub mod views;
pub mod worker;

use crate::config::Settings;
use crate::health::Health;
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
        let health = Arc::new(Health::new(settings.worker.stall_timeout));
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

    /// Runs until the shutdown token is cancelled (or a task fails), then stops every
    /// task within `worker.shutdown_timeout`.
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
        spawn_http(&settings, &store, health, listener, &shutdown, &mut tasks)?;
        store::upkeep::spawn(&store, &settings, &shutdown, &mut tasks);
        if let Some(worker) = worker {
            worker.spawn(&mut tasks);
        }
        let stopped = supervise(tasks, &shutdown, settings.worker.shutdown_timeout).await;
        store.pool().close().await;
        drop(embedded);
        stopped
    }
}

/// The HTTP sidecar's tasks: the coalescing lanes and the server.
fn spawn_http(
    settings: &Settings,
    store: &Store,
    health: Arc<Health>,
    listener: tokio::net::TcpListener,
    shutdown: &CancellationToken,
    tasks: &mut JoinSet<anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let coalescer = http::Coalescer::start(
        store.clone(),
        settings.tuning.coalesce_lanes,
        settings.tuning.coalesce_max_batch,
        tasks,
    );
    let router = http::router(
        http::AppState {
            store: store.clone(),
            auth_token: settings.http.auth_token().map(http::Token::new),
            admin_token: settings.http.admin_token().map(http::Token::new),
            coalescer,
            health,
            body_limit: settings.http.body_limit_bytes,
            body_read_timeout: settings.http.body_read_timeout,
        },
        settings.http.request_timeout,
    );
    tracing::info!(addr = %listener.local_addr()?, "HTTP sidecar listening");
    let stop = shutdown.clone();
    let options = http::ServeOptions {
        header_read_timeout: settings.http.header_read_timeout,
        max_connections: settings.http.max_connections,
    };
    tasks.spawn(async move {
        http::serve(listener, router, options, stop)
            .await
            .context("HTTP server failed")
    });
    Ok(())
}

/// Waits until shutdown is requested or a task fails (which requests it), then gives
/// every task `timeout` to finish. The first failure is the result.
async fn supervise(
    mut tasks: JoinSet<anyhow::Result<()>>,
    shutdown: &CancellationToken,
    timeout: std::time::Duration,
) -> anyhow::Result<()> {
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
    let drained = tokio::time::timeout(timeout, async {
        while let Some(joined) = tasks.join_next().await {
            if let Some(e) = task_error(joined) {
                tracing::error!(error = ?e, "a task failed while shutting down");
                failure.get_or_insert(e);
            }
        }
    })
    .await;
    if drained.is_err() {
        anyhow::bail!(
            "shutdown did not finish within {timeout:?}; unfinished work will be redelivered"
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

fn task_error(joined: Result<anyhow::Result<()>, tokio::task::JoinError>) -> Option<anyhow::Error> {
    match joined {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(e) => Some(anyhow::Error::new(e).context("task panicked")),
    }
}
