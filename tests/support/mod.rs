//! Test helpers: real services from the environment (`DATABASE_URL`, `KAFKA_BROKERS`),
//! or from testcontainers when those are unset and Docker is available; a fresh
//! database per test; the service started in-process on a random port.
#![allow(dead_code)]

pub mod contracts;
pub mod kafka;
pub mod model;
pub mod private;

use identity_reconciler::config::Settings;
use identity_reconciler::store::Store;
use identity_reconciler::{Application, Mode};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use std::future::Future;
use std::time::Duration;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

/// A unique suffix for databases, topics and groups of one test.
pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}_{}_{:08x}",
        std::process::id(),
        rand::random::<u32>()
    )
}

fn docker_available() -> bool {
    std::process::Command::new("docker")
        .arg("info")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

static POSTGRES: OnceCell<String> = OnceCell::const_new();
static KAFKA: OnceCell<String> = OnceCell::const_new();

/// URL of a PostgreSQL server whose `postgres` database we may create databases from.
pub async fn postgres_server_url() -> String {
    POSTGRES
        .get_or_init(|| async {
            if let Ok(url) = std::env::var("DATABASE_URL") {
                return url;
            }
            assert!(
                docker_available(),
                "set DATABASE_URL (e.g. postgres://postgres@127.0.0.1:5432/postgres) or make Docker available"
            );
            use testcontainers::runners::AsyncRunner;
            let container = testcontainers_modules::postgres::Postgres::default()
                .start()
                .await
                .expect("start a PostgreSQL container");
            let port = container.get_host_port_ipv4(5432).await.unwrap();
            // Kept for the life of the test process.
            std::mem::forget(container);
            format!("postgres://postgres:postgres@127.0.0.1:{port}/postgres")
        })
        .await
        .clone()
}

/// Bootstrap servers of a Kafka-compatible broker.
pub async fn kafka_brokers() -> String {
    KAFKA
        .get_or_init(|| async {
            if let Ok(brokers) = std::env::var("KAFKA_BROKERS") {
                return brokers;
            }
            assert!(
                docker_available(),
                "set KAFKA_BROKERS (scripts/services.sh start starts a local broker) or make Docker available"
            );
            use testcontainers::runners::AsyncRunner;
            let container = testcontainers_modules::kafka::apache::Kafka::default()
                .start()
                .await
                .expect("start a Kafka container");
            let port = container
                .get_host_port_ipv4(testcontainers_modules::kafka::apache::KAFKA_PORT)
                .await
                .unwrap();
            std::mem::forget(container);
            format!("127.0.0.1:{port}")
        })
        .await
        .clone()
}

/// A database of its own for one test.
pub struct TestDb {
    pub url: String,
    pub pool: PgPool,
}

impl TestDb {
    pub async fn new() -> TestDb {
        let server = postgres_server_url().await;
        let mut url = url::Url::parse(&server).expect("DATABASE_URL is a URL");
        url.set_path(&format!("/{}", unique("ir_test")));
        let url = url.to_string();
        let mut settings = Settings::load(None).unwrap();
        settings.database.url = url.clone().into();
        let pool = identity_reconciler::store::connect(&settings.database)
            .await
            .expect("create and migrate the test database");
        TestDb { url, pool }
    }

    pub fn settings(&self) -> Settings {
        let mut settings = Settings::load(None).unwrap();
        settings.database.url = self.url.clone().into();
        settings.http.addr = "127.0.0.1:0".parse().unwrap();
        settings
    }

    pub fn store(&self) -> Store {
        Store::new(self.pool.clone(), self.settings().reconcile)
    }

    /// A second pool, for concurrent checks.
    pub async fn extra_pool(&self, size: u32) -> PgPool {
        PgPoolOptions::new()
            .max_connections(size)
            .connect(&self.url)
            .await
            .unwrap()
    }

    pub async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.pool).await.unwrap()
    }
}

impl Drop for TestDb {
    /// Drops the database of a test that passed; keeps the database of a test that
    /// failed, for inspection, and says where it is.
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("test database kept for inspection: {}", self.url);
            return;
        }
        let url = self.url.clone();
        // Drop runs inside the test's runtime: the async work gets a thread of its own.
        // Best effort: a server already gone (a private one, stopped) is left alone.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .ok()?;
            runtime.block_on(async {
                use sqlx::Connection;
                let mut admin = url::Url::parse(&url).ok()?;
                let name = admin.path().trim_start_matches('/').to_owned();
                admin.set_path("/postgres");
                let connect = sqlx::PgConnection::connect(admin.as_str());
                let mut connection = tokio::time::timeout(Duration::from_secs(5), connect)
                    .await
                    .ok()?
                    .ok()?;
                // FORCE: the test's pool and any service it started still hold connections.
                sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .execute(&mut connection)
                    .await
                    .ok()
            })
        })
        .join();
    }
}

/// The service running in-process against a test database.
pub struct TestApp {
    pub db: TestDb,
    pub base_url: String,
    pub http: reqwest::Client,
    pub shutdown: CancellationToken,
    pub handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl TestApp {
    /// `http` mode, default settings changed by `tweak`.
    pub async fn spawn_http(tweak: impl FnOnce(&mut Settings)) -> TestApp {
        TestApp::spawn_on(TestDb::new().await, Mode::Http, tweak).await
    }

    /// The service in `mode` against an existing database, default settings changed by
    /// `tweak` (e.g. Kafka topics for `Mode::Run`: worker, relay and sidecar).
    pub async fn spawn_on(db: TestDb, mode: Mode, tweak: impl FnOnce(&mut Settings)) -> TestApp {
        let mut settings = db.settings();
        tweak(&mut settings);
        let shutdown = CancellationToken::new();
        let app = Application::build(settings, mode, shutdown.clone())
            .await
            .expect("build the service");
        let base_url = format!("http://{}", app.http_addr());
        let handle = tokio::spawn(app.run_until_stopped());
        TestApp {
            db,
            base_url,
            http: reqwest::Client::new(),
            shutdown,
            handle,
        }
    }

    /// Stops gracefully (the worker commits its offsets) and hands the database back,
    /// for a next instance or for checks.
    pub async fn stop_keeping_db(self) -> TestDb {
        self.shutdown.cancel();
        self.handle
            .await
            .expect("the service does not panic")
            .expect("the service stops cleanly");
        self.db
    }

    pub async fn post_identify(&self, body: &str) -> (u16, serde_json::Value) {
        let response = self
            .http
            .post(format!("{}/identify", self.base_url))
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }

    pub async fn get(&self, path_and_query: &str) -> (u16, serde_json::Value) {
        let response = self
            .http
            .get(format!("{}{}", self.base_url, path_and_query))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
        )
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.handle.await.unwrap().unwrap();
    }
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

/// SQL checks of every invariant of §2; returns how many checks ran.
pub async fn assert_invariants(pool: &PgPool) -> usize {
    let checks: [(&str, &str); 6] = [
        (
            "a secondary links to a missing contact or to a secondary",
            "SELECT count(*) FROM contact s LEFT JOIN contact p ON p.id = s.linked_id \
             WHERE s.link_precedence = 'secondary' AND (p.id IS NULL OR p.linked_id IS NOT NULL)",
        ),
        (
            "link_precedence disagrees with linked_id",
            "SELECT count(*) FROM contact WHERE (link_precedence = 'primary') <> (linked_id IS NULL)",
        ),
        // A quarantined identifier links nothing: the identities it had linked were
        // split, and each keeps it.
        (
            "two clusters share an email",
            "SELECT count(*) FROM (SELECT email FROM contact WHERE email IS NOT NULL AND deleted_at IS NULL \
             AND email NOT IN (SELECT value FROM quarantine WHERE kind = 'e' AND released_at IS NULL) \
             GROUP BY email HAVING count(DISTINCT coalesce(linked_id, id)) > 1) x",
        ),
        (
            "two clusters share a phone number",
            "SELECT count(*) FROM (SELECT phone_number FROM contact WHERE phone_number IS NOT NULL AND deleted_at IS NULL \
             AND phone_number NOT IN (SELECT value FROM quarantine WHERE kind = 'p' AND released_at IS NULL) \
             GROUP BY phone_number HAVING count(DISTINCT coalesce(linked_id, id)) > 1) x",
        ),
        (
            "a secondary is older than its primary",
            "SELECT count(*) FROM contact s JOIN contact p ON p.id = s.linked_id \
             WHERE (s.created_at, s.id) < (p.created_at, p.id)",
        ),
        (
            "a secondary brought no email or phone its cluster lacked",
            "SELECT count(*) FROM contact s WHERE s.link_precedence = 'secondary' AND s.deleted_at IS NULL              AND NOT (coalesce(s.email NOT IN (SELECT c.email FROM contact c WHERE (c.id = s.linked_id OR c.linked_id = s.linked_id)                         AND c.email IS NOT NULL AND (c.created_at, c.id) < (s.created_at, s.id)), false)                    OR coalesce(s.phone_number NOT IN (SELECT c.phone_number FROM contact c WHERE (c.id = s.linked_id OR c.linked_id = s.linked_id)                         AND c.phone_number IS NOT NULL AND (c.created_at, c.id) < (s.created_at, s.id)), false))",
        ),
    ];
    for (what, sql) in checks {
        let violations: i64 = sqlx::query_scalar(sql).fetch_one(pool).await.unwrap();
        assert_eq!(violations, 0, "invariant broken: {what}");
    }
    checks.len()
}
