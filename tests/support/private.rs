//! Private PostgreSQL and Kafka instances for tests that stop and restart them: the
//! shared services stay untouched for the tests running in parallel.

use super::db::TestDb;
use super::names::unique;
use identity_reconciler::config::Settings;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, what: &str) {
    let until = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < until, "{what} did not open port {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// A PostgreSQL cluster of its own, in a temporary directory, on a free port.
pub struct PrivatePostgres {
    bin: PathBuf,
    dir: PathBuf,
    pub port: u16,
}

impl PrivatePostgres {
    pub fn start() -> PrivatePostgres {
        let root = Path::new("/usr/lib/postgresql");
        let version = std::fs::read_dir(root)
            .expect("PostgreSQL server binaries under /usr/lib/postgresql")
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .max()
            .expect("a PostgreSQL version directory");
        let bin = root.join(version.to_string()).join("bin");
        let dir = std::env::temp_dir().join(unique("pg"));
        std::fs::create_dir_all(&dir).unwrap();
        if running_as_root() {
            // initdb refuses to run as root.
            let status = Command::new("chown")
                .args(["postgres:postgres", dir.to_str().unwrap()])
                .status()
                .unwrap();
            assert!(status.success(), "chown the data directory");
        }
        let postgres = PrivatePostgres {
            bin,
            dir,
            port: free_port(),
        };
        postgres.run(
            "initdb",
            &[
                "-D",
                postgres.data(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        );
        postgres.start_again();
        postgres
    }

    fn data(&self) -> &str {
        self.dir.to_str().unwrap()
    }

    fn run(&self, tool: &str, args: &[&str]) {
        let program = self.bin.join(tool);
        let mut command = if running_as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        let output = command
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("cannot run {tool}: {e}"));
        assert!(
            output.status.success(),
            "{tool} {args:?} failed: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Starts (again) on the same port and data directory; returns once it accepts
    /// connections.
    pub fn start_again(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off",
            self.port,
            self.data()
        );
        let log = self.dir.join("postgres.log");
        self.run(
            "pg_ctl",
            &[
                "-D",
                self.data(),
                "-o",
                &options,
                "-l",
                log.to_str().unwrap(),
                "-w",
                "start",
            ],
        );
    }

    /// A fast shutdown: sessions are terminated, as in a real restart or failover.
    pub fn stop(&self) {
        self.run("pg_ctl", &["-D", self.data(), "-m", "fast", "-w", "stop"]);
    }

    /// URL of a database (created by the service when missing).
    pub fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// A new, migrated database on this server, as the other tests' `TestDb`.
    pub async fn test_db(&self) -> TestDb {
        let url = self.url(&unique("ir_test"));
        let mut settings = Settings::load(None).unwrap();
        settings.database.url = url.clone().into();
        let pool = identity_reconciler::store::connect(&settings.database)
            .await
            .expect("create and migrate a database on the private server");
        TestDb { url, pool }
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let program = self.bin.join("pg_ctl");
        let mut command = if running_as_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        let _ = command
            .args(["-D", self.data(), "-m", "immediate", "-w", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A single-node Apache Kafka of its own (`scripts/services.sh` with a state
/// directory of its own: fresh data, free ports), so that a test can kill it.
pub struct PrivateBroker {
    dir: PathBuf,
    brokers: String,
}

impl PrivateBroker {
    pub fn start() -> PrivateBroker {
        PrivateBroker::start_with(&[])
    }

    /// The same, with `scripts/services.sh` options from the environment (e.g.
    /// `IR_KAFKA_AUTO_CREATE_TOPICS`).
    pub fn start_with(env: &[(&str, &str)]) -> PrivateBroker {
        let dir = std::env::temp_dir().join(unique("kafka"));
        let output = Self::script(&dir, &["start"], env);
        let brokers = String::from_utf8(output)
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("export KAFKA_BROKERS="))
            .expect("services.sh prints KAFKA_BROKERS")
            .to_owned();
        PrivateBroker { dir, brokers }
    }

    fn script(dir: &Path, args: &[&str], env: &[(&str, &str)]) -> Vec<u8> {
        let output = Command::new("bash")
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/services.sh"))
            .args(args)
            .env("IR_SERVICES_DIR", dir)
            .envs(env.iter().copied())
            .stderr(Stdio::inherit())
            .output()
            .expect("run scripts/services.sh");
        assert!(output.status.success(), "services.sh {args:?} failed");
        output.stdout
    }

    pub fn brokers(&self) -> String {
        self.brokers.clone()
    }

    /// Starts the node again, on the same ports and data; returns once it serves.
    pub fn start_again(&mut self) {
        Self::script(&self.dir, &["node", "start", "1"], &[]);
    }

    /// `kill -9`: the broker vanishes without a goodbye.
    pub fn kill(&mut self) {
        Self::script(&self.dir, &["node", "kill", "1"], &[]);
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.dir.join("kafka-1.log")).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "--- last lines of the private broker's log:\n{}",
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
        }
        Self::script(&self.dir, &["stop"], &[]);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
