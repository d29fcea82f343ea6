//! PostgreSQL: the server (from `DATABASE_URL` or a container), a database of its own
//! for each test, and rows read back by plain SQL (not by the service's code).

use super::docker_available;
use super::names::unique;
use identity_reconciler::config::Settings;
use identity_reconciler::store::Store;
use serde_json::{json, Value};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use std::time::Duration;
use tokio::sync::OnceCell;

static POSTGRES: OnceCell<String> = OnceCell::const_new();

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

/// The §4 `contact` object of the identity whose primary is `primary`, built from the
/// rows (not by the service's code): primary first, then by creation.
pub async fn database_identity(pool: &sqlx::PgPool, primary: i64) -> Value {
    let rows: Vec<(i64, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT id, email, phone_number FROM contact WHERE deleted_at IS NULL \
         AND (id = $1 OR linked_id = $1) ORDER BY id <> $1, created_at, id",
    )
    .bind(primary)
    .fetch_all(pool)
    .await
    .unwrap();
    let mut emails: Vec<String> = Vec::new();
    let mut phones: Vec<String> = Vec::new();
    for (_, email, phone) in &rows {
        if let Some(e) = email.as_ref().filter(|e| !emails.contains(e)) {
            emails.push(e.clone());
        }
        if let Some(p) = phone.as_ref().filter(|p| !phones.contains(p)) {
            phones.push(p.clone());
        }
    }
    json!({
        "primaryContatctId": primary,
        "primaryContactId": primary,
        "emails": emails,
        "phoneNumbers": phones,
        "secondaryContactIds": rows.iter().skip(1).map(|r| r.0).collect::<Vec<_>>(),
    })
}

/// The contact rows without their timestamps, in id order.
pub async fn contact_rows(
    pool: &sqlx::PgPool,
) -> Vec<(i64, Option<String>, Option<String>, Option<i64>, String)> {
    sqlx::query_as(
        "SELECT id, email, phone_number, linked_id, link_precedence FROM contact \
         WHERE deleted_at IS NULL ORDER BY id",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

pub async fn ledger_keys(pool: &sqlx::PgPool) -> Vec<String> {
    sqlx::query_scalar("SELECT key FROM processed_event ORDER BY key")
        .fetch_all(pool)
        .await
        .unwrap()
}
