//! The ledger of processed events (docs/contract.md §6 v2), against a real PostgreSQL:
//! `eventId` keys and offset keys live in separate namespaces, a reused `eventId`
//! with other content is a conflict (the first stands), a retry of the same event
//! is a replay, and retention pruning removes only rows older than the retention.

mod support;

use identity_reconciler::domain::InputRules;
use identity_reconciler::domain::Request;
use identity_reconciler::store::{Reconciled, Store};
use identity_reconciler::worker::event::{parse_event, Source};
use std::time::Duration;
use support::db::TestDb;

fn event(store: &Store, topic: &str, partition: i32, offset: i64, json: &str) -> Request {
    let settings = store.settings();
    let rules: InputRules<'_> = settings.input_rules();
    let source = Source {
        topic: topic.to_owned(),
        partition,
        offset,
    };
    parse_event(Some(json.as_bytes()), &source, rules).expect("a valid event")
}

fn applied(result: &Reconciled) -> bool {
    matches!(result, Reconciled::Applied { .. })
}

#[tokio::test]
async fn an_event_id_shaped_like_an_offset_key_does_not_hide_the_event_at_that_offset() {
    // Arrange: an event whose eventId is the offset key of partition 0, offset 5.
    let db = TestDb::new().await;
    let store = db.store();
    let lookalike = event(
        &store,
        "order-contacts",
        0,
        1,
        r#"{"eventId":"order-contacts/0/5","email":"first@ledger.test"}"#,
    );
    let plain = event(
        &store,
        "order-contacts",
        0,
        5,
        r#"{"email":"second@ledger.test"}"#,
    );

    // Act
    let first = store.reconcile(&[lookalike]).await.unwrap();
    let second = store.reconcile(std::slice::from_ref(&plain)).await.unwrap();
    let again = store.reconcile(&[plain]).await.unwrap();

    // Assert: both applied; the plain one's redelivery is a replay.
    assert!(applied(&first[0]), "{first:?}");
    assert!(applied(&second[0]), "{second:?}");
    assert_eq!(again, vec![Reconciled::Replayed]);
    assert_eq!(db.count("SELECT count(*) FROM contact").await, 2);
    assert_eq!(
        db.count("SELECT count(*) FROM processed_event WHERE key = 'order-contacts/0/5'")
            .await,
        2,
        "one row per namespace"
    );
}

#[tokio::test]
async fn a_reused_event_id_with_other_content_is_a_conflict_and_the_first_stands() {
    // Arrange
    let db = TestDb::new().await;
    let store = db.store();
    let original = event(
        &store,
        "t",
        0,
        1,
        r#"{"eventId":"dup-X","orderId":"o-1","email":"a@ledger.test"}"#,
    );
    // The same event as a producer's retry would send it: other spelling, same content.
    let retry = event(
        &store,
        "t",
        0,
        2,
        r#"{"eventId":"dup-X","orderId":"o-1","email":" A@Ledger.test ","occurredAt":"2026-12-01T00:00:00Z"}"#,
    );
    let reused = event(
        &store,
        "t",
        0,
        3,
        r#"{"eventId":"dup-X","orderId":"o-1","email":"b@ledger.test","phoneNumber":"5550003"}"#,
    );
    let other_order = event(
        &store,
        "t",
        0,
        4,
        r#"{"eventId":"dup-X","orderId":"o-2","email":"a@ledger.test"}"#,
    );

    // Act
    let first = store.reconcile(&[original]).await.unwrap();
    let later = store
        .reconcile(&[retry, reused, other_order])
        .await
        .unwrap();

    // Assert
    assert!(applied(&first[0]));
    assert_eq!(
        later,
        vec![
            Reconciled::Replayed,
            Reconciled::Conflict,
            Reconciled::Conflict
        ]
    );
    assert_eq!(db.count("SELECT count(*) FROM contact").await, 1);
    assert_eq!(
        db.count("SELECT count(*) FROM contact WHERE email = 'b@ledger.test' OR phone_number = '5550003'")
            .await,
        0,
        "the second content changed nothing"
    );
}

#[tokio::test]
async fn a_conflict_inside_one_batch_keeps_the_first_event() {
    let db = TestDb::new().await;
    let store = db.store();
    let a = event(
        &store,
        "t",
        1,
        1,
        r#"{"eventId":"in-batch","email":"a@batch.test"}"#,
    );
    let b = event(
        &store,
        "t",
        1,
        2,
        r#"{"eventId":"in-batch","email":"b@batch.test"}"#,
    );
    let a_again = event(
        &store,
        "t",
        1,
        3,
        r#"{"eventId":"in-batch","email":"a@batch.test"}"#,
    );

    let results = store.reconcile(&[a, b, a_again]).await.unwrap();

    assert!(applied(&results[0]));
    assert_eq!(results[1..], [Reconciled::Conflict, Reconciled::Replayed]);
    assert_eq!(
        db.count("SELECT count(*) FROM contact WHERE email = 'b@batch.test'")
            .await,
        0
    );
}

#[tokio::test]
async fn pruning_removes_only_rows_older_than_the_retention_in_small_steps() {
    // Arrange: 10 events, 7 of them processed 8 days ago.
    let db = TestDb::new().await;
    let store = db.store();
    let requests: Vec<Request> = (0..10)
        .map(|i| {
            event(
                &store,
                "t",
                0,
                i,
                &format!(r#"{{"eventId":"p-{i}","email":"p{i}@prune.test"}}"#),
            )
        })
        .collect();
    store.reconcile(&requests).await.unwrap();
    sqlx::query(
        "UPDATE processed_event SET processed_at = now() - interval '8 days' \
         WHERE key IN ('p-0', 'p-1', 'p-2', 'p-3', 'p-4', 'p-5', 'p-6')",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let week = Duration::from_secs(7 * 24 * 3600);

    // Act: steps of 3 rows until a step deletes fewer.
    let mut steps = Vec::new();
    loop {
        let deleted = store.prune_ledger(week, 3).await.unwrap();
        steps.push(deleted);
        if deleted < 3 {
            break;
        }
    }

    // Assert: 3 + 3 + 1, and the recent keys are still there.
    assert_eq!(steps, vec![3, 3, 1]);
    let left: Vec<String> = sqlx::query_scalar("SELECT key FROM processed_event ORDER BY key")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(left, vec!["p-7", "p-8", "p-9"]);
    // A replay within the retention stays a no-op.
    let replay = store.reconcile(&requests[7..]).await.unwrap();
    assert_eq!(replay, vec![Reconciled::Replayed; 3]);
    sqlx::query("ANALYZE processed_event")
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(store.ledger_size().await.unwrap(), 3);
}

#[tokio::test]
async fn the_migration_keeps_old_offset_shaped_keys_in_both_namespaces() {
    // Rows as the old schema wrote them (kind defaulted), then the migration's rule.
    let db = TestDb::new().await;
    let store = db.store();
    sqlx::query(
        "INSERT INTO processed_event (key) VALUES ('order-contacts/2/9'), ('legacy-event-1')",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let migration =
        include_str!("../migrations/20261201002000_dead_letters_and_ledger_namespaces.sql");
    let rule = migration
        .lines()
        .filter(|l| {
            l.starts_with("UPDATE processed_event")
                || l.starts_with("INSERT INTO processed_event")
                || l.starts_with("    SELECT key, processed_at")
        })
        .collect::<Vec<_>>()
        .join("\n");
    sqlx::raw_sql(&rule).execute(&db.pool).await.unwrap();

    // An old eventId event and an old offset-keyed event redelivered: both replays.
    let by_offset = event(&store, "order-contacts", 2, 9, r#"{"email":"x@old.test"}"#);
    let by_id = event(
        &store,
        "order-contacts",
        1,
        1,
        r#"{"eventId":"legacy-event-1","email":"y@old.test"}"#,
    );
    let lookalike = event(
        &store,
        "order-contacts",
        1,
        2,
        r#"{"eventId":"order-contacts/2/9","email":"z@old.test"}"#,
    );
    let results = store
        .reconcile(&[by_offset, by_id, lookalike])
        .await
        .unwrap();
    assert_eq!(results, vec![Reconciled::Replayed; 3]);
}
