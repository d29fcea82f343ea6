//! The services under test: fresh databases, the release binary as a child process
//! (as in production: its own process, its own allocator, its own runtime), and what
//! we read from outside it (Prometheus metrics, /proc).

use crate::names::unique;
use anyhow::{bail, Context};
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// The binary `cargo bench` built next to this benchmark (target/release).
pub const BINARY: &str = env!("CARGO_BIN_EXE_identity-reconciler");

/// Where the servers are: `DATABASE_URL` (any database of the server; we create our
/// own next to it) and `KAFKA_BROKERS`, as printed by `scripts/services.sh start`.
#[derive(Clone, Debug)]
pub struct Servers {
    pub postgres: url::Url,
    pub brokers: String,
    /// Logs of the child processes.
    pub log_dir: PathBuf,
}

impl Servers {
    pub fn from_env(log_dir: &Path) -> anyhow::Result<Servers> {
        let database = std::env::var("DATABASE_URL").context(
            "set DATABASE_URL and KAFKA_BROKERS (eval \"$(scripts/services.sh start)\")",
        )?;
        let brokers = std::env::var("KAFKA_BROKERS").context("set KAFKA_BROKERS")?;
        std::fs::create_dir_all(log_dir)?;
        Ok(Servers {
            postgres: url::Url::parse(&database).context("DATABASE_URL is not a URL")?,
            brokers,
            log_dir: log_dir.to_owned(),
        })
    }

    /// The server settings that shape the figures, for the report.
    pub async fn postgres_settings(&self) -> anyhow::Result<BTreeMap<String, String>> {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect(&self.url_of("postgres"))
            .await?;
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT name, current_setting(name) FROM pg_settings WHERE name IN \
             ('server_version', 'autovacuum', 'synchronous_commit', 'fsync', 'shared_buffers', \
              'max_connections', 'plan_cache_mode')",
        )
        .fetch_all(&pool)
        .await?;
        pool.close().await;
        Ok(rows.into_iter().collect())
    }

    fn url_of(&self, database: &str) -> String {
        let mut url = self.postgres.clone();
        url.set_path(&format!("/{database}"));
        url.to_string()
    }
}

/// A database of its own for one measurement, migrated by the service's own
/// `migrate` command. Dropped by `drop_database` unless BENCH_KEEP_DATABASES is set.
pub struct Database {
    pub name: String,
    pub url: String,
    pub pool: PgPool,
}

impl Database {
    pub async fn create(servers: &Servers, label: &str) -> anyhow::Result<Database> {
        let name = unique(&format!("ir_bench_{label}"));
        let url = servers.url_of(&name);
        let output = Command::new(BINARY)
            .arg("migrate")
            .env("DATABASE_URL", &url)
            .env("RUST_LOG", "warn")
            .output()
            .context("run identity-reconciler migrate")?;
        if !output.status.success() {
            bail!(
                "identity-reconciler migrate failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        let pool = PgPoolOptions::new()
            .max_connections(4)
            .connect(&url)
            .await
            .with_context(|| format!("connect to {name}"))?;
        // Experiments and diagnostics: settings for every session of this database,
        // e.g. "log_min_duration_statement=50,plan_cache_mode=force_custom_plan".
        if let Ok(settings) = std::env::var("BENCH_DATABASE_SETTINGS") {
            for setting in settings.split(',').filter(|s| !s.trim().is_empty()) {
                let (key, value) = setting
                    .split_once('=')
                    .context("BENCH_DATABASE_SETTINGS: name=value,...")?;
                sqlx::query(&format!(
                    "ALTER DATABASE \"{name}\" SET {} = '{}'",
                    key.trim(),
                    value.trim().replace('\'', "''")
                ))
                .execute(&pool)
                .await?;
            }
        }
        Ok(Database { name, url, pool })
    }

    pub async fn count(&self, sql: &str) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar(sql).fetch_one(&self.pool).await?)
    }

    /// The server's WAL insert position now (`pg_current_wal_lsn()`).
    pub async fn wal_position(&self) -> anyhow::Result<WalPosition> {
        let lsn: String = sqlx::query_scalar("SELECT pg_current_wal_lsn()::text")
            .fetch_one(&self.pool)
            .await?;
        Ok(WalPosition(lsn))
    }

    /// Bytes of WAL written since `since` (`pg_wal_lsn_diff`). The WAL is the whole
    /// server's: whatever else writes meanwhile (another database, autovacuum, other
    /// clients of a shared server) counts too, so a phase's figure is an upper bound.
    pub async fn wal_bytes_since(&self, since: &WalPosition) -> anyhow::Result<i64> {
        Ok(sqlx::query_scalar(
            "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), $1::text::pg_lsn)::bigint",
        )
        .bind(&since.0)
        .fetch_one(&self.pool)
        .await?)
    }

    /// Closes our pool and drops the database (FORCE: a killed child may leave
    /// sessions behind for a moment).
    pub async fn drop_database(self, servers: &Servers) -> anyhow::Result<()> {
        self.pool.close().await;
        if std::env::var_os("BENCH_KEEP_DATABASES").is_some() {
            eprintln!("bench: keeping database {}", self.name);
            return Ok(());
        }
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect(&servers.url_of("postgres"))
            .await?;
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.name
        ))
        .execute(&admin)
        .await?;
        admin.close().await;
        Ok(())
    }
}

/// A WAL position of the server (an LSN), to measure the WAL a phase writes.
#[derive(Clone, Debug)]
pub struct WalPosition(String);

/// `run` or `http`.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    Run,
    Http,
}

/// The release binary running as a child process. Killed if dropped while running
/// (a failed measurement must not leave a worker consuming in the background).
pub struct Service {
    child: Child,
    pub base_url: String,
    http: reqwest::Client,
}

impl Service {
    /// Starts the service with its settings in environment variables (§7) and waits
    /// until it answers `GET /healthz`.
    pub async fn start(
        servers: &Servers,
        mode: Mode,
        label: &str,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Service> {
        let port = free_port()?;
        let log_path = servers.log_dir.join(format!("{label}.log"));
        let log = std::fs::File::create(&log_path)?;
        let mut command = Command::new(BINARY);
        // A settings file layered over the defaults, to benchmark tuned settings.
        if let Some(file) = std::env::var_os("BENCH_SERVICE_CONFIG") {
            command.arg("--config").arg(file);
        }
        command
            .arg(match mode {
                Mode::Run => "run",
                Mode::Http => "http",
            })
            .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env(
                "RUST_LOG",
                std::env::var("BENCH_SERVICE_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        for (key, value) in env {
            command.env(key, value);
        }
        let child = command.spawn().context("start identity-reconciler")?;
        let mut service = Service {
            child,
            base_url: format!("http://127.0.0.1:{port}"),
            http: reqwest::Client::new(),
        };
        service.wait_until_healthy(&log_path).await?;
        Ok(service)
    }

    async fn wait_until_healthy(&mut self, log_path: &Path) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait()? {
                bail!(
                    "identity-reconciler exited at start ({status}); see {}",
                    log_path.display()
                );
            }
            let healthy = self
                .http
                .get(format!("{}/healthz", self.base_url))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if healthy {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "identity-reconciler did not become healthy; see {}",
                    log_path.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The Prometheus text of `GET /metrics`.
    async fn metrics_text(&self) -> anyhow::Result<String> {
        Ok(self
            .http
            .get(format!("{}/metrics", self.base_url))
            .send()
            .await?
            .text()
            .await?)
    }

    /// A counter or gauge without labels from `GET /metrics` (0 when absent).
    pub async fn metric(&self, name: &str) -> anyhow::Result<f64> {
        let text = self.metrics_text().await?;
        Ok(text
            .lines()
            .filter_map(|line| line.strip_prefix(name)?.strip_prefix(' '))
            .find_map(|value| value.trim().parse().ok())
            .unwrap_or(0.0))
    }

    /// The upper bound of the histogram bucket holding quantile `q` of `name`
    /// (`name_bucket{le="…"}` lines): the quantile is at most this. Infinite when it
    /// lies past the last finite bucket, zero when nothing was observed.
    pub async fn histogram_quantile_bound(&self, name: &str, q: f64) -> anyhow::Result<f64> {
        let text = self.metrics_text().await?;
        let prefix = format!("{name}_bucket{{le=\"");
        let buckets: Vec<(f64, f64)> = text
            .lines()
            .filter_map(|line| {
                let (le, count) = line.strip_prefix(&prefix)?.split_once("\"} ")?;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((le, count.trim().parse().ok()?))
            })
            .collect();
        let total = buckets.last().map_or(0.0, |&(_, count)| count);
        if total == 0.0 {
            return Ok(0.0);
        }
        Ok(buckets
            .iter()
            .find(|&&(_, count)| count >= q * total)
            .map_or(f64::INFINITY, |&(le, _)| le))
    }

    /// Resident and peak resident memory, from /proc.
    pub fn memory(&self) -> Option<Memory> {
        Memory::of(self.pid())
    }

    /// SIGTERM, then waits for the graceful shutdown (the contract's exit code is 0).
    pub async fn stop(mut self) -> anyhow::Result<ExitStatus> {
        let pid = self.pid().to_string();
        Command::new("kill").args(["-TERM", &pid]).status()?;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() > deadline {
                self.child.kill().ok();
                bail!("identity-reconciler did not stop within 30 s of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.child.kill().ok();
            self.child.wait().ok();
        }
    }
}

/// Memory of a process in KiB: `VmRSS` now, `VmHWM` its peak so far.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct Memory {
    pub rss_kib: u64,
    pub hwm_kib: u64,
}

impl Memory {
    pub fn of(pid: u32) -> Option<Memory> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let field = |name: &str| -> Option<u64> {
            let line = status.lines().find(|l| l.starts_with(name))?;
            line[name.len()..]
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .ok()
        };
        Some(Memory {
            rss_kib: field("VmRSS:")?,
            hwm_kib: field("VmHWM:")?,
        })
    }
}

/// A port nobody listens on right now (the child binds it a moment later).
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
