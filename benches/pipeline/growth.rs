//! A database with history, for the growth run: `contacts` rows loaded with one
//! INSERT … SELECT after the service's migrations, then ANALYZE.
//!
//! Contact `i` (ids 1..=contacts, oldest first):
//! - every 10th is a secondary of the contact just before it (a primary): a second
//!   email, the same phone, so ~10% are secondaries that each brought something new;
//! - of the primaries, one in ten has no phone and one in ten no email;
//! - emails and phones are distinct and scattered (hash-like prefixes, a multiplier
//!   coprime with the number range), so that the indexes are as deep and as randomly
//!   filled as real ones, not one sorted run.
//!
//! The benchmark's workload uses other domains and other phone prefixes, so it never
//! touches these clusters: the run measures what a big database costs by itself
//! (deeper indexes, less of them in cache).

use crate::services::Database;
use std::time::Instant;

/// `+1` and ten digits, distinct for every i below 9e9 (7919 is prime to 9e9).
const PHONE: &str = "'+1' || (1000000000 + ((i::bigint * 7919) % 9000000000))::text";

pub async fn preload(db: &Database, contacts: u64) -> anyhow::Result<()> {
    let started = Instant::now();
    let phone_of_previous = PHONE.replace("i::bigint", "(i - 1)::bigint");
    let sql = format!(
        "INSERT INTO contact (id, email, phone_number, linked_id, link_precedence, created_at, updated_at, version) \
         SELECT i, \
                CASE WHEN i % 10 = 5 THEN NULL \
                     ELSE substr(md5(i::text), 1, 8) || '.' || i || '@' \
                          || (ARRAY['example.com', 'example.net', 'example.org', 'example.edu'])[1 + i % 4] END, \
                CASE WHEN i % 10 = 0 THEN {phone_of_previous} \
                     WHEN i % 10 = 3 THEN NULL \
                     ELSE {PHONE} END, \
                CASE WHEN i % 10 = 0 THEN i - 1 END, \
                CASE WHEN i % 10 = 0 THEN 'secondary' ELSE 'primary' END, \
                timestamptz '2020-01-01' + i * interval '1 second', \
                timestamptz '2020-01-01' + i * interval '1 second', \
                1 \
         FROM generate_series(1, $1::bigint) AS i"
    );
    sqlx::query(&sql)
        .bind(contacts as i64)
        .execute(&db.pool)
        .await?;
    // Ids were given explicitly: move the sequence past them for the service.
    sqlx::query("SELECT setval(pg_get_serial_sequence('contact', 'id'), $1)")
        .bind(contacts as i64)
        .execute(&db.pool)
        .await?;
    sqlx::query("ANALYZE contact").execute(&db.pool).await?;
    eprintln!(
        "bench: loaded {contacts} contacts in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
