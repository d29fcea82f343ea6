//! The service in-process, on a random port, against a test database.

use super::db::TestDb;
use identity_reconciler::config::Settings;
use identity_reconciler::{Application, Mode};
use tokio_util::sync::CancellationToken;

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
        status_and_body(response).await
    }

    pub async fn get(&self, path_and_query: &str) -> (u16, serde_json::Value) {
        let response = self
            .http
            .get(format!("{}{}", self.base_url, path_and_query))
            .send()
            .await
            .unwrap();
        status_and_body(response).await
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.handle.await.unwrap().unwrap();
    }
}

/// The status code and the body: JSON when it parses, else the text as a JSON string.
async fn status_and_body(response: reqwest::Response) -> (u16, serde_json::Value) {
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}
