//! The worker's step, driven directly against real PostgreSQL, no broker: what a batch
//! commits, what it dead-letters and why, and how it rides out PostgreSQL refusing a
//! value or dropping its connection.

mod support;

use identity_reconciler::worker::event::{Message, Source};
use identity_reconciler::worker::step::{Letter, Outcome, Pause, Step, StepSettings, WorkerError};
use sqlx::PgPool;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;
use support::db::TestDb;
use support::eventually;
use tokio_util::sync::CancellationToken;

const TOPIC: &str = "order-contacts";

fn message(partition: i32, offset: i64, value: Option<&[u8]>) -> Message {
    Message {
        key: Some(format!("k-{offset}").into_bytes()),
        value: value.map(<[u8]>::to_vec),
        headers: vec![
            ("trace".to_owned(), Some(b"t-1".to_vec())),
            ("empty".to_owned(), None),
        ],
        position: Source {
            topic: TOPIC.to_owned(),
            partition,
            offset,
        },
        timestamp_ms: None,
    }
}

fn event(partition: i32, offset: i64, json: &str) -> Message {
    message(partition, offset, Some(json.as_bytes()))
}

fn step(db: &TestDb) -> Step {
    let settings = db.settings();
    Step::new(
        db.store(),
        StepSettings {
            backoff_initial: Duration::from_millis(10),
            backoff_max: Duration::from_millis(100),
            ..StepSettings::from_settings(&settings)
        },
    )
}

/// The reasons of the letters, with the offsets of their messages.
fn letters(outcome: &Outcome<'_>) -> Vec<(i64, &'static str)> {
    outcome
        .dead_letters
        .iter()
        .map(
            |Letter {
                 message, reason, ..
             }| (message.position.offset, *reason),
        )
        .collect()
}

fn commit(offsets: &[(i32, i64)]) -> BTreeMap<(String, i32), i64> {
    offsets
        .iter()
        .map(|&(partition, next)| ((TOPIC.to_owned(), partition), next))
        .collect()
}

async fn contacts_with_email(db: &TestDb, email: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM contact WHERE email = $1 AND deleted_at IS NULL")
        .bind(email)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

/// A source that records what the step asked of it.
#[derive(Default)]
struct Recorder {
    paused: AtomicBool,
    pauses: AtomicUsize,
    resumes: AtomicUsize,
}

impl Pause for Recorder {
    fn pause(&self) {
        if !self.paused.swap(true, Ordering::SeqCst) {
            self.pauses.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn resume(&self) {
        if self.paused.swap(false, Ordering::SeqCst) {
            self.resumes.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[tokio::test]
async fn a_batch_is_applied_and_commits_every_partition_past_its_last_message() {
    let db = TestDb::new().await;
    let batch = [
        event(0, 5, r#"{"eventId":"e-1","email":"ana@x.io"}"#),
        event(
            1,
            9,
            r#"{"eventId":"e-2","email":"bo@x.io","phoneNumber":"555"}"#,
        ),
        event(
            0,
            6,
            r#"{"eventId":"e-3","email":"ana@x.io","phoneNumber":"556"}"#,
        ),
    ];

    let outcome = step(&db)
        .apply(&batch, &(), &CancellationToken::new())
        .await
        .unwrap();

    assert_eq!(outcome.commit, commit(&[(0, 7), (1, 10)]));
    assert!(outcome.dead_letters.is_empty());
    assert_eq!(contacts_with_email(&db, "ana@x.io").await, 2);
    assert_eq!(contacts_with_email(&db, "bo@x.io").await, 1);
    assert_eq!(db.count("SELECT count(*) FROM processed_event").await, 3);
}

#[tokio::test]
async fn poison_messages_are_dead_lettered_whole_with_their_reason_and_still_committed() {
    let db = TestDb::new().await;
    let batch = [
        event(0, 1, "not json"),
        event(0, 2, r#"{"eventId":"e-1","email":"ana@x.io"}"#),
        event(0, 3, r#"{"orderId":"o-1"}"#),
        message(0, 4, None),
        event(1, 7, r#"{"email":"bo@x.io","occurredAt":"yesterday"}"#),
    ];

    let outcome = step(&db)
        .apply(&batch, &(), &CancellationToken::new())
        .await
        .unwrap();

    assert_eq!(
        letters(&outcome),
        [
            (1, "malformed_json"),
            (3, "no_identifier"),
            (4, "malformed_json"),
            (7, "invalid_value")
        ]
    );
    // Key, value and headers as read: the adapter sends them on unchanged.
    assert_eq!(outcome.dead_letters[0].message, &batch[0]);
    assert_eq!(outcome.commit, commit(&[(0, 5), (1, 8)]));
    assert_eq!(contacts_with_email(&db, "ana@x.io").await, 1);
    assert_eq!(contacts_with_email(&db, "bo@x.io").await, 0);
}

#[tokio::test]
async fn an_event_id_reused_with_other_content_is_dead_lettered_and_the_first_event_stands() {
    let db = TestDb::new().await;
    let step = step(&db);
    let first = [event(0, 1, r#"{"eventId":"e-1","email":"ana@x.io"}"#)];
    step.apply(&first, &(), &CancellationToken::new())
        .await
        .unwrap();

    let again = [
        event(0, 2, r#"{"eventId":"e-1","email":"eve@x.io"}"#),
        event(0, 3, r#"{"eventId":"e-1","email":"ana@x.io"}"#),
    ];
    let outcome = step
        .apply(&again, &(), &CancellationToken::new())
        .await
        .unwrap();

    // The replay (same content) is a no-op, not a letter.
    assert_eq!(letters(&outcome), [(2, "event_id_conflict")]);
    assert_eq!(outcome.commit, commit(&[(0, 4)]));
    assert_eq!(contacts_with_email(&db, "eve@x.io").await, 0);
    assert_eq!(contacts_with_email(&db, "ana@x.io").await, 1);
}

#[tokio::test]
async fn an_oversize_message_is_applied_whole_and_an_oversize_identifier_is_dead_lettered() {
    let db = TestDb::new().await;
    let padding = "x".repeat(4 << 20);
    let long_email = format!("{}@x.io", "a".repeat(300));
    let batch = [
        event(
            0,
            1,
            &format!(r#"{{"email":"big@x.io","note":"{padding}"}}"#),
        ),
        event(0, 2, &format!(r#"{{"email":"{long_email}"}}"#)),
    ];

    let outcome = step(&db)
        .apply(&batch, &(), &CancellationToken::new())
        .await
        .unwrap();

    assert_eq!(letters(&outcome), [(2, "too_long")]);
    assert_eq!(outcome.commit, commit(&[(0, 3)]));
    assert_eq!(contacts_with_email(&db, "big@x.io").await, 1);
}

#[tokio::test]
async fn events_postgresql_rejects_are_dead_lettered_and_the_rest_of_their_lane_applies() {
    // Arrange: PostgreSQL refuses one email (a constraint the schema does not have).
    let db = TestDb::new().await;
    sqlx::query(
        "ALTER TABLE contact ADD CONSTRAINT sabotage CHECK (email IS NULL OR email NOT LIKE 'refused%')",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let batch = [
        event(0, 1, r#"{"eventId":"e-1","email":"ana@x.io"}"#),
        event(0, 2, r#"{"eventId":"e-2","email":"refused@x.io"}"#),
        event(0, 3, r#"{"eventId":"e-3","email":"bo@x.io"}"#),
    ];

    let outcome = step(&db)
        .apply(&batch, &(), &CancellationToken::new())
        .await
        .unwrap();

    assert_eq!(letters(&outcome), [(2, "rejected")]);
    assert_eq!(outcome.commit, commit(&[(0, 4)]));
    assert_eq!(contacts_with_email(&db, "ana@x.io").await, 1);
    assert_eq!(contacts_with_email(&db, "bo@x.io").await, 1);
    // The rejected event is not in the ledger: a redrive applies it once fixed.
    assert_eq!(
        db.count("SELECT count(*) FROM processed_event WHERE key = 'e-2'")
            .await,
        0
    );
}

/// Another session holding the ledger: every batch transaction waits on it.
async fn hold_the_ledger(saboteur: &PgPool) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut blocker = saboteur.begin().await.unwrap();
    sqlx::query("LOCK TABLE processed_event IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    blocker
}

/// Terminates the backends of this database waiting on a lock, until `done`.
async fn kill_lock_waiters_until(saboteur: &PgPool, what: &str, done: impl Fn() -> bool) {
    eventually(Duration::from_secs(30), what, || async {
        sqlx::query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .execute(saboteur)
        .await
        .unwrap();
        done().then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_lost_connection_pauses_the_source_and_the_batch_is_applied_once_when_postgresql_is_back()
{
    let db = TestDb::new().await;
    let saboteur = db.extra_pool(2).await;
    let blocker = hold_the_ledger(&saboteur).await;
    let source = Recorder::default();
    let step = step(&db);
    let batch = [
        event(0, 1, r#"{"eventId":"e-1","email":"ana@x.io"}"#),
        event(1, 1, r#"{"eventId":"e-2","email":"bo@x.io"}"#),
    ];

    // Act: drop the batch's connections until it backs off, then let it through.
    let shutdown = CancellationToken::new();
    let sabotage = async {
        kill_lock_waiters_until(&saboteur, "the source paused", || {
            source.paused.load(Ordering::SeqCst)
        })
        .await;
        blocker.rollback().await.unwrap();
    };
    let (outcome, ()) = tokio::join!(step.apply(&batch, &source, &shutdown), sabotage);

    // Assert
    let outcome = outcome.unwrap();
    assert!(outcome.dead_letters.is_empty());
    assert_eq!(outcome.commit, commit(&[(0, 2), (1, 2)]));
    assert_eq!(source.pauses.load(Ordering::SeqCst), 1);
    assert_eq!(source.resumes.load(Ordering::SeqCst), 1);
    assert_eq!(contacts_with_email(&db, "ana@x.io").await, 1);
    assert_eq!(contacts_with_email(&db, "bo@x.io").await, 1);
    assert_eq!(db.count("SELECT count(*) FROM processed_event").await, 2);
}

#[tokio::test]
async fn shutdown_during_a_back_off_ends_the_step_with_nothing_applied() {
    let db = TestDb::new().await;
    let saboteur = db.extra_pool(2).await;
    let blocker = hold_the_ledger(&saboteur).await;
    let source = Recorder::default();
    let step = step(&db);
    let batch = [event(0, 1, r#"{"eventId":"e-1","email":"ana@x.io"}"#)];

    // Act: once the step backs off, shut down, and keep its retries failing until
    // it has seen the shutdown.
    let shutdown = CancellationToken::new();
    let applying = step.apply(&batch, &source, &shutdown);
    tokio::pin!(applying);
    let sabotage = async {
        kill_lock_waiters_until(&saboteur, "the source paused", || {
            source.paused.load(Ordering::SeqCst)
        })
        .await;
        shutdown.cancel();
        kill_lock_waiters_until(&saboteur, "the step to end", || false).await;
    };
    let outcome = tokio::select! {
        outcome = &mut applying => outcome,
        () = sabotage => unreachable!("the sabotage waits for the step to end"),
    };
    blocker.rollback().await.unwrap();

    assert!(matches!(outcome, Err(WorkerError::Cancelled)));
    assert_eq!(contacts_with_email(&db, "ana@x.io").await, 0);
}
