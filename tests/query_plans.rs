//! The hot path's statements are index lookups, not table scans, for a single request
//! and for a worker batch of 500 emails and 500 phones: EXPLAIN (FORMAT JSON) of each,
//! on a database with 50k contacts, 50k ledger keys, 50k erased identifiers and a
//! 20k-record outbox backlog, 50k recent quarantine counterparts, and on a new, empty
//! one, must show no `Seq Scan` on `contact`, `processed_event`, `outbox`,
//! `suppression`, `merge_journal` or `counterpart`, no bitmap scan of a whole index of
//! theirs, and no scan of an index by age (`processed_at`, `seen_at`: on the hot path
//! that is every recent row) outside the retention task's steps.
//!
//! Each statement is checked with both plans PostgreSQL may pick for it: the custom
//! plan (built for the actual parameters; sqlx's first executions of a prepared
//! statement) and the generic plan (which PostgreSQL may switch to after five
//! executions of the same prepared statement, as the service's are).
//!
//! The statements are the store's own (`identity_reconciler::store::sql`).

mod support;

use serde_json::Value;
use sqlx::pool::PoolConnection;
use sqlx::Postgres;
use support::db::TestDb;

use identity_reconciler::store::sql::*;

const CONTACTS: i64 = 50_000;
const LEDGER_KEYS: i64 = 50_000;
const OUTBOX_ROWS: i64 = 20_000;
const COUNTERPART_ROWS: i64 = 50_000;

/// A statement, the types of its parameters and the values to plan it with.
struct Statement {
    name: &'static str,
    sql: String,
    types: &'static str,
    arguments: String,
    /// A retention step, which finds what it deletes by age.
    by_age: bool,
}

fn hot_path() -> Vec<Statement> {
    // Some identifiers that exist (contacts 7, 10, 12345) and some that do not.
    let identifiers =
        "ARRAY['u7@example.com', 'u12345@example.com', 'nobody@example.com']::text[], \
                       ARRAY['+11000000011', '+19999999999']::text[]";
    let ids = "ARRAY[7, 9, 12341]::bigint[]";
    let statement = |name, sql: &str, types, arguments: &str| Statement {
        name,
        sql: sql.to_owned(),
        types,
        arguments: arguments.to_owned(),
        by_age: name.starts_with("prune"),
    };
    // A worker batch: 500 emails and 500 phones, a third of them known.
    let batch = format!(
        "ARRAY[{}]::text[], ARRAY[{}]::text[]",
        (0..500)
            .map(|i| format!("'u{}@example.com'", i * 97 + 1 + (i % 3) * 1_000_000))
            .collect::<Vec<_>>()
            .join(", "),
        (0..500)
            .map(|i| format!("'+1{}'", 1_000_000_000 + i * 89 + 3 + (i % 3) * 1_000_000))
            .collect::<Vec<_>>()
            .join(", "),
    );
    // A worker batch's hit primaries: 300 ids spread over the table.
    let batch_primaries = format!(
        "ARRAY[{}]::bigint[]",
        (0..300)
            .map(|i| (i * 163 + 1).to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    // A worker batch's identifier hashes: 1,000, a tenth of them with counterparts.
    let batch_hashes = format!(
        "ARRAY[{}]::bytea[]",
        (0..1000)
            .map(|i| format!("sha256('{}')", i * 499 + 1))
            .collect::<Vec<_>>()
            .join(", ")
    );
    vec![
        statement("lookup (several identities)", LOOKUP, "text[], text[]", identifiers),
        statement(
            "lookup (one identity)",
            LOOKUP,
            "text[], text[]",
            "ARRAY['u7@example.com']::text[], ARRAY[]::text[]",
        ),
        statement("HIT_PRIMARIES (a lookup hitting several)", HIT_PRIMARIES, "text[], text[]", identifiers),
        statement("lock the hit primaries", LOCK_HIT_PRIMARIES, "text[], text[]", identifiers),
        statement("lock the hit primaries (a batch)", LOCK_HIT_PRIMARIES, "text[], text[]", &batch),
        statement("lock absorbed primaries' survivors", LOCK_PRIMARIES, "bigint[]", ids),
        statement("load clusters", LOAD_CLUSTERS, "bigint[]", ids),
        statement("load clusters (a batch)", LOAD_CLUSTERS, "bigint[]", &batch_primaries),
        statement(
            "claim ledger keys",
            CLAIM_LEDGER_KEYS,
            "text[], text[], bytea[]",
            "ARRAY['event', 'offset']::text[], ARRAY['event-17', 't/0/5']::text[], ARRAY[sha256('x'), NULL]::bytea[]",
        ),
        statement(
            "stored digests of eventIds seen before",
            LEDGER_DIGESTS,
            "text[]",
            "ARRAY['event-17', 'event-18']::text[]",
        ),
        statement("prune the ledger (a step)", PRUNE_LEDGER, "float8, bigint", "604800, 1000"),
        statement(
            "prune quarantine counterparts (a step)",
            PRUNE_COUNTERPARTS,
            "float8, bigint",
            "2592000, 1000",
        ),
        statement("draw contact ids", DRAW_CONTACT_IDS, "int", "2"),
        statement(
            "insert contacts",
            INSERT_CONTACTS,
            "bigint[], text[], text[], bigint[], bigint[], timestamptz",
            "ARRAY[90001, 90002]::bigint[], ARRAY['new@example.com', 'u7@example.com']::text[], \
             ARRAY['+15550000001', NULL]::text[], ARRAY[NULL, 7]::bigint[], ARRAY[1, 0]::bigint[], now()",
        ),
        statement(
            "update contacts and write the outbox, journal and review",
            UPDATE_CONTACTS_AND_WRITE_OUTBOX,
            "bigint[], bigint[], bigint[], \
             bigint[], bigint[], bigint[], text[], text[], int[], bigint[], int[], bigint[], \
             text[], bigint[], bigint[], text[], text[], \
             text[], text[]",
            "ARRAY[9, 12341]::bigint[], ARRAY[7, 7]::bigint[], ARRAY[3, 4]::bigint[], \
             ARRAY[7, 7]::bigint[], ARRAY[12341, NULL]::bigint[], ARRAY[12342, NULL]::bigint[], \
             ARRAY['event-17', NULL]::text[], ARRAY['event', 'http']::text[], \
             ARRAY[1, 2]::int[], ARRAY[12342, 8, 9]::bigint[], ARRAY[2, NULL]::int[], ARRAY[7, 12341]::bigint[], \
             ARRAY['max_emails']::text[], ARRAY[7]::bigint[], ARRAY[NULL]::bigint[], \
             ARRAY['event-17']::text[], ARRAY['event']::text[], \
             ARRAY['7', '12341']::text[], ARRAY['{}', '{}']::text[]",
        ),
        statement(
            "counterparts of a batch's identifiers",
            COUNTERPARTS,
            "bytea[], float8, float8",
            &format!("{batch_hashes}, 2592000, 162000"),
        ),
        statement(
            "erased identifiers",
            SUPPRESSED,
            "bytea[]",
            "ARRAY[sha256('x'), sha256('y')]::bytea[]",
        ),
        statement("relay: delete the last round, read the next", OUTBOX_ROUND, "bigint[], bigint", "ARRAY[1, 2]::bigint[], 1000"),
        statement("relay: delete published rows", OUTBOX_DELETE, "bigint[]", ids),
        statement("relay: backlog gauge", OUTBOX_BACKLOG, "", ""),
    ]
}

/// 50k contacts (every 10th a secondary of the contact before it, sharing its phone),
/// 50k ledger keys, a 20k-record outbox backlog; then ANALYZE, as autovacuum would.
async fn fill(db: &TestDb) {
    for sql in [
        "INSERT INTO contact (id, email, phone_number, linked_id, link_precedence, created_at, updated_at, version) \
         SELECT i, 'u' || i || '@example.com', \
                '+1' || (1000000000 + CASE WHEN i % 10 = 0 THEN i - 1 ELSE i END)::text, \
                CASE WHEN i % 10 = 0 THEN i - 1 END, \
                CASE WHEN i % 10 = 0 THEN 'secondary' ELSE 'primary' END, \
                timestamptz '2020-01-01' + i * interval '1 second', \
                timestamptz '2020-01-01' + i * interval '1 second', 1 \
         FROM generate_series(1, $1::bigint) AS i",
        "SELECT setval(pg_get_serial_sequence('contact', 'id'), $1::bigint)",
    ] {
        sqlx::query(sql).bind(CONTACTS).execute(&db.pool).await.unwrap();
    }
    sqlx::query("INSERT INTO processed_event (key) SELECT 'event-' || i FROM generate_series(1, $1::bigint) AS i")
        .bind(LEDGER_KEYS)
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO outbox (key, payload) SELECT i::text, repeat('x', 250) FROM generate_series(1, $1::bigint) AS i",
    )
    .bind(OUTBOX_ROWS)
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query("INSERT INTO suppression (hash) SELECT sha256(i::text::bytea) FROM generate_series(1, $1::bigint) AS i")
        .bind(LEDGER_KEYS)
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO counterpart (identifier, other, seen_at) \
         SELECT sha256(i::text::bytea), sha256((-i)::text::bytea), now() FROM generate_series(1, $1::bigint) AS i",
    )
    .bind(COUNTERPART_ROWS)
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE").execute(&db.pool).await.unwrap();
}

/// The plan PostgreSQL picks for `statement` in `plan_cache_mode` (JSON).
async fn explain(
    connection: &mut PoolConnection<Postgres>,
    statement: &Statement,
    mode: &str,
) -> Value {
    // `PREPARE hot () AS …` is a syntax error: no parentheses without parameters.
    let parenthesised = |list: &str| {
        if list.is_empty() {
            String::new()
        } else {
            format!("({list})")
        }
    };
    let setup = format!(
        "SET plan_cache_mode = {mode}; PREPARE hot {} AS {}",
        parenthesised(statement.types),
        statement.sql
    );
    sqlx::raw_sql(&setup)
        .execute(&mut **connection)
        .await
        .unwrap();
    let plan: Value = sqlx::query_scalar(&format!(
        "EXPLAIN (FORMAT JSON) EXECUTE hot {}",
        parenthesised(&statement.arguments)
    ))
    .fetch_one(&mut **connection)
    .await
    .unwrap_or_else(|e| panic!("EXPLAIN {}: {e}", statement.name));
    sqlx::raw_sql("DEALLOCATE hot; RESET plan_cache_mode")
        .execute(&mut **connection)
        .await
        .unwrap();
    plan
}

const TABLES: [&str; 6] = [
    "contact",
    "processed_event",
    "outbox",
    "suppression",
    "merge_journal",
    "counterpart",
];

/// Indexes by age, which the retention task's steps read from the oldest end.
const AGE_INDEXES: [&str; 2] = ["processed_event_processed_at", "counterpart_seen_at_idx"];

/// Every node of `plan` that reads one of our tables whole: a `Seq Scan`, or a
/// `Bitmap Index Scan` without an index condition (the whole index, which a partial
/// index allows), or, unless `by_age`, a scan of an index by age.
fn whole_table_reads(plan: &Value, by_age: bool, found: &mut Vec<String>) {
    match plan {
        Value::Object(node) => {
            let text = |key| node.get(key).and_then(Value::as_str).unwrap_or_default();
            let ours = |name: &str| TABLES.iter().any(|t| name.starts_with(t));
            match text("Node Type") {
                "Seq Scan" if ours(text("Relation Name")) => {
                    found.push(format!("Seq Scan on {}", text("Relation Name")));
                }
                "Bitmap Index Scan"
                    if ours(text("Index Name")) && node.get("Index Cond").is_none() =>
                {
                    found.push(format!("the whole of index {}", text("Index Name")));
                }
                _ if !by_age && AGE_INDEXES.contains(&text("Index Name")) => {
                    found.push(format!("rows by age from index {}", text("Index Name")));
                }
                _ => {}
            }
            node.values()
                .for_each(|child| whole_table_reads(child, by_age, found));
        }
        Value::Array(items) => items
            .iter()
            .for_each(|child| whole_table_reads(child, by_age, found)),
        _ => {}
    }
}

/// The hot path's statements whose plan, in either mode, reads a table whole.
async fn whole_reads_on_hot_path(db: &TestDb) -> Vec<String> {
    let mut connection = db.pool.acquire().await.unwrap();
    let mut failures = Vec::new();
    for statement in hot_path() {
        for mode in ["force_custom_plan", "force_generic_plan"] {
            let plan = explain(&mut connection, &statement, mode).await;
            let mut reads = Vec::new();
            whole_table_reads(&plan, statement.by_age, &mut reads);
            if !reads.is_empty() {
                failures.push(format!(
                    "{} ({mode}): {}\n{}",
                    statement.name,
                    reads.join(", "),
                    serde_json::to_string_pretty(&plan).unwrap()
                ));
            }
        }
    }
    failures
}

#[tokio::test]
async fn hot_path_statements_use_indexes_not_sequential_scans() {
    let db = TestDb::new().await;
    fill(&db).await;
    let failures = whole_reads_on_hot_path(&db).await;
    assert!(
        failures.is_empty(),
        "whole-table reads on the hot path:\n{}",
        failures.join("\n\n")
    );
}

/// A generic plan is kept until the table's statistics change: one made on a new,
/// empty database (the service's first batches) must already probe the indexes, or
/// it scans a table that grows under it until the next ANALYZE.
#[tokio::test]
async fn plans_made_on_an_empty_database_probe_the_indexes() {
    let db = TestDb::new().await;
    let failures = whole_reads_on_hot_path(&db).await;
    assert!(
        failures.is_empty(),
        "whole-table reads on the hot path of an empty database:\n{}",
        failures.join("\n\n")
    );
}

/// The hot path's tables are kept analyzed by autovacuum, with the per-table settings
/// of the migration: a table that grew by 5% since its last ANALYZE is analyzed again
/// (autovacuum's defaults wait for 10%), so the planner knows how big it is.
#[tokio::test]
async fn autovacuum_analyzes_a_contact_table_that_grew_by_five_percent() {
    let db = TestDb::new().await;
    let on: bool = sqlx::query_scalar("SELECT current_setting('autovacuum')::bool")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(on, "the server runs autovacuum (Debian's default)");
    let grow = |from: i64, to: i64| {
        let pool = db.pool.clone();
        async move {
            sqlx::query(
                "INSERT INTO contact (email, link_precedence, created_at, updated_at) \
                 SELECT 'grown-' || i || '@example.com', 'primary', now(), now() \
                 FROM generate_series($1::bigint, $2::bigint) AS i",
            )
            .bind(from)
            .bind(to)
            .execute(&pool)
            .await
            .unwrap();
        }
    };
    let set = |statement: &'static str| {
        let pool = db.pool.clone();
        async move {
            sqlx::query(statement).execute(&pool).await.unwrap();
        }
    };
    let last = |column: &'static str| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, Option<chrono::DateTime<chrono::Utc>>>(&format!(
                "SELECT {column} FROM pg_stat_user_tables \
                 WHERE relname = 'contact' AND schemaname = current_schema()"
            ))
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    // The first 40,000 rows and their ANALYZE out of autovacuum's sight, so that no
    // visit of it can race the manual ANALYZE; the migration's thresholds stay.
    set("ALTER TABLE contact SET (autovacuum_enabled = false)").await;
    grow(1, 40_000).await;
    set("ANALYZE contact").await;
    set("ALTER TABLE contact RESET (autovacuum_enabled)").await;
    // The server publishes its activity counters asynchronously: wait for them.
    let manual = support::eventually(
        std::time::Duration::from_secs(30),
        "the manual ANALYZE to show in the statistics",
        || last("last_analyze"),
    )
    .await;

    grow(40_001, 42_000).await;

    // Autovacuum visits each database once per `autovacuum_naptime` (1 min).
    support::eventually(
        std::time::Duration::from_secs(180),
        "autovacuum to analyze contact again",
        || async { last("last_autoanalyze").await.filter(|at| *at > manual) },
    )
    .await;
    let rows: f32 = sqlx::query_scalar("SELECT reltuples FROM pg_class WHERE relname = 'contact'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(
        rows >= 41_000.0,
        "the statistics count the new rows: {rows}"
    );
}
