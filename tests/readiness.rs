//! `/readyz` follows PostgreSQL: 503 while it is down, 200 again once it is back,
//! without a restart of the service. Uses a private PostgreSQL instance, so that
//! stopping it disturbs no other test.

mod support;

use identity_reconciler::Mode;
use serde_json::json;
use std::time::Duration;
use support::app::TestApp;
use support::eventually;
use support::private::PrivatePostgres;

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_while_postgresql_is_down_and_recovers_when_it_returns() {
    // Arrange
    let postgres = tokio::task::spawn_blocking(PrivatePostgres::start)
        .await
        .unwrap();
    let app = TestApp::spawn_on(postgres.test_db().await, Mode::Http, |s| {
        // Fail fast on a missing connection instead of queueing for 5 s.
        s.database.acquire_timeout = std::time::Duration::from_secs(1);
    })
    .await;
    let body = r#"{"email":"ready@readiness.test"}"#;
    assert_eq!(app.get("/readyz").await.0, 200);

    // Act: stop PostgreSQL.
    tokio::task::block_in_place(|| postgres.stop());

    // Assert: not ready, and it says why; alive all the same; requests that need the
    // database answer 503 rather than hang or fail with 500.
    let answer = eventually(WAIT, "/readyz to report the database down", || async {
        let (status, answer) = app.get("/readyz").await;
        (status == 503).then_some(answer)
    })
    .await;
    assert_eq!(
        answer,
        json!({"status": "not_ready", "database": "down", "kafka": "not_used"})
    );
    assert_eq!(app.get("/healthz").await.0, 200);
    let (status, answer) = app.post_identify(body).await;
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["error"]["code"], "unavailable");

    // Act: start it again.
    tokio::task::block_in_place(|| postgres.start_again());

    // Assert: ready again, and serving.
    eventually(WAIT, "/readyz to report ready again", || async {
        (app.get("/readyz").await.0 == 200).then_some(())
    })
    .await;
    assert_eq!(
        app.get("/readyz").await.1,
        json!({"status": "ready", "database": "up", "kafka": "not_used"})
    );
    let (status, answer) = app.post_identify(body).await;
    assert_eq!(status, 200, "{answer}");
    app.stop().await;
}
