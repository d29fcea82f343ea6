//! `Store::reconcile` from many tasks at once, each transaction on its own connection
//! and released together by a barrier: §2's invariants must hold whatever the
//! interleaving, and the clusters must be those of any serial order. Unlike
//! `POST /identify` with one coalescing lane, nothing here serialises the
//! transactions but the store's own locks; removing those locks makes these tests
//! fail (see the note in the "How reconciliation works" in docs/how-it-works.md).

mod support;

use futures::future::join_all;
use identity_reconciler::domain::Request;
use identity_reconciler::domain::{ContactInput, Email, Normalization, Origin};
use identity_reconciler::store::{ForgetTarget, Reconciled, Store};
use rand::prelude::*;
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;
use support::db::TestDb;
use support::eventually;
use support::model::{database_clusters, Model};
use tokio::sync::Barrier;

const TASKS: usize = 48;

async fn store_with_connections(db: &TestDb, connections: u32) -> Store {
    Store::new(db.extra_pool(connections).await, db.settings().reconcile)
}

fn request(store: &Store, email: Option<&str>, phone: Option<&str>) -> Request {
    let object = json!({"email": email, "phoneNumber": phone});
    let input =
        ContactInput::from_json_object(object.as_object().unwrap(), store.settings().input_rules())
            .expect("a valid input");
    Request {
        input,
        origin: Origin::Http { request_id: None },
    }
}

/// Runs each batch of requests in its own transaction, all released at once.
async fn at_once(store: &Store, batches: Vec<Vec<Request>>) -> Vec<Vec<Reconciled>> {
    let barrier = Arc::new(Barrier::new(batches.len()));
    let tasks = batches.into_iter().map(|batch| {
        let (store, barrier) = (store.clone(), barrier.clone());
        tokio::spawn(async move {
            // Each task holds its own connection before the barrier opens.
            let warm = store.pool().acquire().await.unwrap();
            drop(warm);
            barrier.wait().await;
            store.reconcile(&batch).await
        })
    });
    join_all(tasks)
        .await
        .into_iter()
        .map(|r| {
            r.unwrap()
                .expect("reconcile succeeds (conflicts are retried)")
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_new_pair_in_many_transactions_at_once_creates_one_contact() {
    let db = TestDb::new().await;
    let store = store_with_connections(&db, TASKS as u32).await;
    let batches = (0..TASKS)
        .map(|_| vec![request(&store, Some("twin@x.io"), Some("424242"))])
        .collect();

    let results = at_once(&store, batches).await;

    assert_eq!(db.count("SELECT count(*) FROM contact").await, 1);
    let primaries: Vec<i64> = results
        .iter()
        .map(|r| match &r[0] {
            Reconciled::Applied { identity, .. } => identity.primary_id,
            other => panic!("{other:?}"),
        })
        .collect();
    assert!(primaries.windows(2).all(|w| w[0] == w[1]), "{primaries:?}");
    assert_eq!(support::invariants::assert_invariants(&db.pool).await, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chains_merged_from_both_ends_in_transactions_at_once_end_in_one_cluster() {
    let db = TestDb::new().await;
    let store = store_with_connections(&db, TASKS as u32).await;
    const LINKS: usize = 24;
    for i in 0..=LINKS {
        let email = format!("c{i}@x.io");
        let phone = format!("{i}00");
        store
            .reconcile(&[request(&store, Some(&email), Some(&phone))])
            .await
            .unwrap();
    }
    // Link i joins cluster i and i+1; every link twice, from the left and the right.
    let mut batches = Vec::new();
    for i in 0..LINKS {
        let j = LINKS - 1 - i;
        for k in [i, j] {
            let email = format!("c{k}@x.io");
            let phone = format!("{}00", k + 1);
            batches.push(vec![request(&store, Some(&email), Some(&phone))]);
        }
    }

    at_once(&store, batches).await;

    assert_eq!(
        db.count("SELECT count(*) FROM contact WHERE linked_id IS NULL")
            .await,
        1
    );
    let oldest: i64 = sqlx::query_scalar("SELECT min(id) FROM contact")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM contact WHERE id = {oldest} AND linked_id IS NULL"
        ))
        .await,
        1,
        "the oldest contact is the primary"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM contact").await,
        LINKS as i64 + 1
    );
    assert_eq!(support::invariants::assert_invariants(&db.pool).await, 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn overlapping_batches_at_once_give_the_clusters_of_any_serial_order() {
    let db = TestDb::new().await;
    let store = store_with_connections(&db, TASKS as u32).await;
    let mut rng = StdRng::seed_from_u64(20261201);
    let mut model = Model::default();
    for round in 0..5 {
        let mut batches = Vec::new();
        for _ in 0..TASKS {
            let mut batch = Vec::new();
            for _ in 0..8 {
                let email = rng
                    .gen_bool(0.8)
                    .then(|| format!("u{}@x.io", rng.gen_range(0..40)));
                let phone = (email.is_none() || rng.gen_bool(0.7))
                    .then(|| format!("{}", 1000 + rng.gen_range(0..40)));
                model.identify(email.as_deref(), phone.as_deref());
                batch.push(request(&store, email.as_deref(), phone.as_deref()));
            }
            batches.push(batch);
        }
        at_once(&store, batches).await;
        assert_eq!(
            support::invariants::assert_invariants(&db.pool).await,
            6,
            "round {round}"
        );
    }
    assert_eq!(database_clusters(&db.pool).await, model.clusters());
}

/// A deadlock forced from outside: another transaction holds the lock of primary B
/// and then asks for primary A's, while a merge of A and B holds A's and waits for
/// B's. PostgreSQL aborts the merge (it waited first, so its deadlock check runs
/// first) with SQLSTATE 40P01; the store runs the whole transaction again, and it
/// succeeds once the other transaction is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deadlock_is_retried_by_its_sqlstate_and_the_merge_succeeds() {
    let db = TestDb::new().await;
    let store = store_with_connections(&db, 8).await;
    let a = store
        .reconcile(&[request(&store, Some("a@deadlock.test"), None)])
        .await
        .unwrap();
    let b = store
        .reconcile(&[request(&store, None, Some("5550001"))])
        .await
        .unwrap();
    let primary = |r: &[Reconciled]| match &r[0] {
        Reconciled::Applied { identity, .. } => identity.primary_id,
        other => panic!("{other:?}"),
    };
    let (a, b) = (primary(&a), primary(&b));
    assert!(a < b);
    let deadlocks_before: i64 = sqlx::query_scalar(
        "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let lock =
        |p: i64| format!("SELECT pg_advisory_xact_lock(({p} >> 31)::int, ({p} & 2147483647)::int)");

    // Act: the other transaction takes B's lock.
    let mut other = db.pool.begin().await.unwrap();
    sqlx::query("SET LOCAL deadlock_timeout = '5s'")
        .execute(&mut *other)
        .await
        .unwrap();
    sqlx::query(&lock(b)).execute(&mut *other).await.unwrap();
    let merging = {
        let store = store.clone();
        let merge = request(&store, Some("a@deadlock.test"), Some("5550001"));
        tokio::spawn(async move { store.reconcile(&[merge]).await })
    };
    // ... waits until the merge waits for B's lock, then asks for A's.
    eventually(
        Duration::from_secs(30),
        "the merge to wait for a lock",
        || async {
            (db.count(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
             AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
            )
            .await
                > 0)
            .then_some(())
        },
    )
    .await;
    sqlx::query(&lock(a)).execute(&mut *other).await.unwrap();
    other.commit().await.unwrap();

    // Assert: the merge was aborted once by a deadlock and then succeeded.
    let merged = merging
        .await
        .unwrap()
        .expect("the merge is retried and succeeds");
    assert_eq!(primary(&merged), a);
    let deadlocks_after: i64 = sqlx::query_scalar(
        "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(deadlocks_after - deadlocks_before, 1);
    assert_eq!(
        db.count("SELECT count(*) FROM contact WHERE linked_id IS NULL")
            .await,
        1
    );
    assert_eq!(support::invariants::assert_invariants(&db.pool).await, 6);
}

/// The identifier-lock key of `locks.rs` (64-bit FNV-1a of the tag and the value),
/// so that a test transaction can hold an identifier's lock as a reconciliation does.
fn identifier_lock_key(tag: u8, value: &str) -> i64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in std::iter::once(&tag).chain(value.as_bytes()) {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    hash as i64
}

/// Advisory locks waited for in the test's database.
async fn lock_waits(db: &TestDb) -> i64 {
    db.count(
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted \
         AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_erasure_that_finds_a_new_identifier_under_a_primary_lock_never_deadlocks() {
    // Arrange: identity P (a@erase.test, 111). A writer holds P's lock while it adds a
    // secondary with the new phone 222; a second one, like a reconciliation, holds
    // 222's identifier lock and will ask for P's.
    let db = TestDb::new().await;
    let store = store_with_connections(&db, 8).await;
    let created = store
        .reconcile(&[request(&store, Some("a@erase.test"), Some("111"))])
        .await
        .unwrap();
    let p = match &created[0] {
        Reconciled::Applied { identity, .. } => identity.primary_id,
        other => panic!("{other:?}"),
    };
    let deadlocks = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap()
    };
    let deadlocks_before = deadlocks().await;
    let primary_lock =
        format!("SELECT pg_advisory_xact_lock(({p} >> 31)::int, ({p} & 2147483647)::int)");
    let mut writer = db.pool.begin().await.unwrap();
    sqlx::query(&primary_lock)
        .execute(&mut *writer)
        .await
        .unwrap();
    let mut reconciler = db.pool.begin().await.unwrap();
    sqlx::query("SET LOCAL deadlock_timeout = '100ms'")
        .execute(&mut *reconciler)
        .await
        .unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(identifier_lock_key(b'p', "222"))
        .execute(&mut *reconciler)
        .await
        .unwrap();

    // Act: the erasure locks a@erase.test and 111, then waits for P's lock; the second
    // writer queues for P's lock behind it; the first adds 222 to P and commits.
    let erasure = {
        let store = store.clone();
        let target = ForgetTarget::Email(
            Email::parse("a@erase.test", Normalization::Standard)
                .unwrap()
                .unwrap(),
        );
        tokio::spawn(async move { store.forget(&target).await })
    };
    eventually(
        Duration::from_secs(30),
        "the erasure to wait for P",
        || async { (lock_waits(&db).await == 1).then_some(()) },
    )
    .await;
    let reconciler_locks_p = tokio::spawn(async move {
        sqlx::query(&primary_lock)
            .execute(&mut *reconciler)
            .await
            .map(|_| reconciler)
    });
    eventually(
        Duration::from_secs(30),
        "the second writer to wait for P",
        || async { (lock_waits(&db).await == 2).then_some(()) },
    )
    .await;
    sqlx::query(
        "INSERT INTO contact (phone_number, linked_id, link_precedence) VALUES ('222', $1, 'secondary')",
    )
    .bind(p)
    .execute(&mut *writer)
    .await
    .unwrap();
    writer.commit().await.unwrap();

    // Assert: the erasure, holding P and finding 222, does not wait for 222's lock
    // (which would deadlock with the second writer): it starts again, so the second
    // writer gets P and commits, and then the erasure erases both contacts.
    let reconciler = reconciler_locks_p
        .await
        .unwrap()
        .expect("the writer holding an identifier lock gets P's lock, no deadlock");
    reconciler.commit().await.unwrap();
    let forgotten = erasure.await.unwrap().expect("the erasure succeeds");
    assert_eq!(forgotten.primary_id, p);
    assert_eq!(forgotten.contact_ids.len(), 2);
    assert_eq!(deadlocks().await - deadlocks_before, 0);
    assert_eq!(
        db.count("SELECT count(*) FROM contact WHERE deleted_at IS NULL")
            .await,
        0
    );
}
