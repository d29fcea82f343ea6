//! The service binary as a child process, for the tests that kill, terminate and
//! restart it, and the settings such a test starts it with.

use super::names::unique;
use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;
use tokio::time::Instant;

/// Settings (as environment variables) under which the service's clusters are the
/// model's: the model knows no caps and no quarantine.
pub fn unguarded_env() -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = ["MAX_EMAILS", "MAX_PHONES", "MAX_CONTACTS"]
        .iter()
        .map(|cap| {
            (
                format!("IR__RECONCILE__LIMITS__{cap}"),
                "1000000".to_owned(),
            )
        })
        .collect();
    env.push((
        "IR__RECONCILE__QUARANTINE__MAX_COUNTERPARTS".to_owned(),
        "0".to_owned(),
    ));
    env
}

/// The service binary as a child process; its log goes to a file that is printed if
/// the test fails and deleted if it passes.
pub struct Service {
    child: Child,
    name: String,
    pub log: PathBuf,
}

impl Service {
    /// `identity-reconciler <args>` with `env` on top of the test's environment, the
    /// HTTP sidecar on a random port.
    pub fn start(name: &str, args: &[&str], env: &[(String, String)]) -> Service {
        let log = std::env::temp_dir().join(format!("{}.log", unique(name)));
        let file = std::fs::File::create(&log).expect("create the service's log file");
        // A killed member keeps its partitions until its session expires; the default
        // 45 s would dominate the crash tests' run time. The drain timeout must stay
        // below the session timeout (checked at start).
        let config = log.with_extension("toml");
        std::fs::write(
            &config,
            "[worker]\ndrain_timeout = \"3s\"\n\n[kafka.properties]\n\"session.timeout.ms\" = \"6000\"\n\"heartbeat.interval.ms\" = \"1000\"\n",
        )
        .expect("write the service's config file");
        let child = Command::new(env!("CARGO_BIN_EXE_identity-reconciler"))
            .arg("--config")
            .arg(&config)
            .args(args)
            .env("HTTP_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", "info,rdkafka=warn,sqlx=warn")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("start the service binary");
        Service {
            child,
            name: name.to_owned(),
            log,
        }
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }

    pub fn log_text(&self) -> String {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(&self.log) {
            let _ = file.read_to_string(&mut text);
        }
        text
    }

    /// `http://addr` of the sidecar, once the log says it listens.
    pub async fn base_url(&mut self) -> String {
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let text = self.log_text();
            let addr = text
                .lines()
                .filter(|l| l.contains("HTTP sidecar listening"))
                .find_map(|l| l.split("addr=").nth(1))
                .and_then(|rest| rest.split_whitespace().next());
            if let Some(addr) = addr {
                return format!("http://{addr}");
            }
            assert!(
                Instant::now() < until,
                "{} never listened; log:\n{text}",
                self.name
            );
            assert!(
                !self.has_exited(),
                "{} exited at start; log:\n{text}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn has_exited(&mut self) -> bool {
        self.child.try_wait().expect("poll the child").is_some()
    }

    /// SIGKILL: no chance to commit, flush or clean up.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM: the graceful shutdown path.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {} failed", self.id());
    }

    /// Waits for the process to exit; `None` if it is still running after `deadline`.
    pub async fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let until = Instant::now() + deadline;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the child") {
                return Some(status);
            }
            if Instant::now() >= until {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        if std::thread::panicking() {
            print_broker_logs();
            let text = self.log_text();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(60)..].join("\n");
            eprintln!(
                "--- last lines of {} ({}):\n{tail}",
                self.name,
                self.log.display()
            );
        }
        if self.child.try_wait().ok().flatten().is_none() {
            self.kill();
        }
        // Kept (and named above) when the test fails; otherwise nobody will read it.
        if !std::thread::panicking() {
            let _ = std::fs::remove_file(&self.log);
            let _ = std::fs::remove_file(self.log.with_extension("toml"));
        }
    }
}

/// The last lines of each Kafka node's log (`scripts/services.sh` writes them to
/// `$IR_SERVICES_DIR/kafka-ID.log`), once per test process, when a test fails.
pub fn print_broker_logs() {
    static PRINTED: std::sync::Once = std::sync::Once::new();
    PRINTED.call_once(|| {
        let Ok(dir) = std::env::var("IR_SERVICES_DIR") else {
            return;
        };
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        let mut logs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "log"))
            .collect();
        logs.sort();
        for log in logs {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            eprintln!("--- last lines of {}:\n{tail}", log.display());
        }
    });
}
