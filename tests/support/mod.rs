//! Test helpers, one file per concern. Services come from the environment
//! (`DATABASE_URL`, `KAFKA_BROKERS`), or from testcontainers when those are unset and
//! Docker is available.
//!
//! - `db`: the PostgreSQL server, a fresh database per test, rows read back by SQL;
//! - `app`: the service in-process on a random port;
//! - `names`: unique names, and the topics and group of one test (`ir-testkit`,
//!   shared with the benchmark);
//! - `broker`: the Kafka broker, topic administration, producers, committed offsets;
//! - `readers`: whole topics read from the beginning;
//! - `processes`: the service binary as a child process;
//! - `metrics`: what a child's HTTP sidecar exposes (`/metrics`, `/readyz`);
//! - `workload`: a seeded stream of events and where each landed;
//! - `assertions`: the end state a pipeline test must reach;
//! - `invariants`: the SQL of docs/contract.md §2 (`ir-testkit`, shared with the
//!   benchmark);
//! - `model`: an in-memory model of §3; `contracts`: the committed JSON Schemas;
//! - `private`: PostgreSQL and Kafka instances of one test's own, to stop and restart.
#![allow(dead_code)]

pub mod app;
pub mod assertions;
pub mod broker;
pub mod contracts;
pub mod db;
pub mod metrics;
pub mod model;
pub mod private;
pub mod processes;
pub mod readers;
pub mod workload;

pub use ir_testkit::{invariants, names};

use std::future::Future;
use std::time::Duration;

/// Whether Docker answers: the services the environment does not name are started as
/// containers (`db::postgres_server_url`, `broker::kafka_brokers`).
fn docker_available() -> bool {
    std::process::Command::new("docker")
        .arg("info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Polls `check` until it returns `Some`, or panics after `deadline`.
pub async fn eventually<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let until = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            tokio::time::Instant::now() < until,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
