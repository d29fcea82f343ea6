//! Dead letters kept in PostgreSQL, and retention: the steps that prune the ledger
//! and the quarantine's counterpart pairs.
//!
//! A dead letter normally goes to the DLQ topic whole. When the topic cannot take it
//! (the letter is over a size limit, the topic is missing or not writable), the
//! worker keeps it here in full before its partition moves on, so a message the
//! broker accepted is never lost and never stalls its partition (§6 v2).

use super::{Store, StoreError};
use chrono::{DateTime, Utc};
use std::time::Duration;

/// A message that could not be processed, as read from the input topic.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeadLetter {
    pub source_topic: String,
    pub source_partition: i32,
    pub source_offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// The original headers, in order.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    /// `dlq.reason` and `dlq.error`.
    pub reason: String,
    pub error: String,
}

/// A dead letter of the table, and when it was kept.
#[derive(Clone, Debug)]
pub struct StoredDeadLetter {
    pub letter: DeadLetter,
    pub created_at: DateTime<Utc>,
}

impl Store {
    /// Keeps a dead letter whole; a second copy of the same source message is ignored
    /// (the worker may see it again after a crash).
    pub async fn keep_dead_letter(
        &self,
        letter: &DeadLetter,
        publish_error: &str,
    ) -> Result<(), StoreError> {
        let (keys, values): (Vec<&str>, Vec<Option<&[u8]>>) = letter
            .headers
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_deref()))
            .unzip();
        sqlx::query!(
            "INSERT INTO dead_letter (source_topic, source_partition, source_offset, key, value, \
               header_keys, header_values, reason, error, publish_error) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
             ON CONFLICT (source_topic, source_partition, source_offset) DO NOTHING",
            letter.source_topic,
            letter.source_partition,
            letter.source_offset,
            letter.key.as_deref(),
            letter.value.as_deref(),
            &keys as &[&str],
            &values as &[Option<&[u8]>],
            letter.reason,
            letter.error,
            publish_error,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Notes that a truncated copy of the letter reached the DLQ topic.
    pub(crate) async fn mark_truncated_copy(&self, letter: &DeadLetter) -> Result<(), StoreError> {
        sqlx::query!(
            "UPDATE dead_letter SET truncated_copy = true \
             WHERE source_topic = $1 AND source_partition = $2 AND source_offset = $3",
            letter.source_topic,
            letter.source_partition,
            letter.source_offset,
        )
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// The kept dead letters created at or after `since`, in source order (topic,
    /// partition, offset).
    pub async fn dead_letters(
        &self,
        since: Option<DateTime<Utc>>,
    ) -> Result<Vec<StoredDeadLetter>, StoreError> {
        let rows = sqlx::query!(
            "SELECT source_topic, source_partition, source_offset, key, value, header_keys, \
               header_values AS \"header_values: Vec<Option<Vec<u8>>>\", reason, error, created_at \
             FROM dead_letter WHERE created_at >= coalesce($1::timestamptz, '-infinity') \
             ORDER BY source_topic, source_partition, source_offset",
            since,
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|r| StoredDeadLetter {
                letter: DeadLetter {
                    source_topic: r.source_topic,
                    source_partition: r.source_partition,
                    source_offset: r.source_offset,
                    key: r.key,
                    value: r.value,
                    headers: r.header_keys.into_iter().zip(r.header_values).collect(),
                    reason: r.reason,
                    error: r.error,
                },
                created_at: r.created_at,
            })
            .collect())
    }

    /// One step of ledger pruning: deletes at most `batch` rows processed more than
    /// `retention` ago, oldest first; returns how many it deleted. Each step is a
    /// short transaction of its own, so pruning never holds locks the hot path waits
    /// for for long.
    pub async fn prune_ledger(&self, retention: Duration, batch: i64) -> Result<u64, StoreError> {
        let deleted = sqlx::query_file_scalar!(
            "src/store/sql/prune_ledger.sql",
            retention.as_secs_f64(),
            batch
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(deleted.unwrap_or(0) as u64)
    }

    /// One step of counterpart pruning: deletes at most `batch` counterpart pairs last
    /// seen more than `window` ago (`reconcile.quarantine.window`: they no longer
    /// count towards a quarantine), oldest first; returns how many it deleted. A short
    /// transaction of its own, like a ledger step.
    pub async fn prune_counterparts(
        &self,
        window: Duration,
        batch: i64,
    ) -> Result<u64, StoreError> {
        let deleted = sqlx::query_file_scalar!(
            "src/store/sql/prune_counterparts.sql",
            window.as_secs_f64(),
            batch
        )
        .fetch_one(&self.pool)
        .await?;
        Ok(deleted.unwrap_or(0) as u64)
    }

    /// The ledger's row count as the planner estimates it (exact right after ANALYZE).
    pub async fn ledger_size(&self) -> Result<i64, StoreError> {
        let size = sqlx::query_file_scalar!("src/store/sql/ledger_size.sql")
            .fetch_one(&self.pool)
            .await?;
        Ok(size.unwrap_or(0))
    }
}
