//! The store's one error type: what the caller must do about a failed store call.
//!
//! Reconciliation and the operators' actions (history, explain, an undo, an erasure,
//! a review's decision, a quarantine's split) share it. They share the transactions,
//! the lock protocol (`locks.rs`) and the retry loop (`retry.rs`), and the lock
//! protocol itself can answer "no such contact" and "busy": with a second error type
//! for the operators' actions, the locks returned one type, the retry loop knew two,
//! and a busy lock had to travel inside `Fatal`. [`StoreError::NotFound`] and
//! [`StoreError::Refused`] come only from operators' actions; reconciliation never
//! returns them.
//!
//! A leaf: it imports nothing from the other store modules, so any of them can return
//! its errors without importing another for them. Whether a database error is worth
//! retrying is decided here, by SQLSTATE, never by the message.

/// What the caller must do about a failed store call.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// PostgreSQL is unreachable, restarting, overloaded, or kept aborting the
    /// transaction for serialization failures or deadlocks: retry later with back-off.
    #[error("PostgreSQL is unavailable")]
    Unavailable(#[source] sqlx::Error),
    /// An identifier lock was held by another transaction while this one held a
    /// primary lock (`locks.rs`): the transaction rolled back, releasing every lock,
    /// and is run again from scratch; once the attempts are spent, retry later.
    #[error("an identifier lock is held by another transaction; the transaction is run again")]
    Busy,
    /// PostgreSQL refused the data itself (a data exception or an integrity
    /// violation): the input that caused it must be set aside, not retried.
    #[error("PostgreSQL rejected the data")]
    Rejected(#[source] sqlx::Error),
    /// No live contact (or review entry) has the id or identifier an operator gave;
    /// the message says which.
    #[error("{0}")]
    NotFound(String),
    /// An operator's action would have to guess, and changed nothing; the message
    /// explains why and what to do instead.
    #[error("{0}")]
    Refused(String),
    /// Anything else: a bug or a broken schema. Retrying will not help.
    #[error("database error")]
    Fatal(#[source] anyhow::Error),
}

impl StoreError {
    /// Whether the call may succeed later, unchanged: answer "unavailable", retry
    /// with back-off.
    pub(crate) fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Busy)
    }

    /// Whether the whole transaction is simply run again at once (after a short
    /// back-off, `retry.rs`): a serialization failure, a deadlock, a busy lock.
    pub(super) fn is_conflict(&self) -> bool {
        match self {
            StoreError::Unavailable(e) => is_retryable_conflict(e),
            StoreError::Busy => true,
            _ => false,
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(error: sqlx::Error) -> StoreError {
        let class = match &error {
            sqlx::Error::Database(db) => db.code().map(|c| c[..2].to_owned()),
            _ => None,
        };
        if is_transient(&error) {
            StoreError::Unavailable(error)
        } else if matches!(class.as_deref(), Some("22" | "23")) {
            StoreError::Rejected(error)
        } else {
            StoreError::Fatal(error.into())
        }
    }
}

/// SQLSTATEs that mean "try again": serialization failure, deadlock, connection
/// exceptions (class 08), operator intervention (class 57: shutdown, restart) and
/// insufficient resources (class 53: too many connections).
fn is_transient(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code == "40001"
                || code == "40P01"
                || ["08", "57", "53"]
                    .iter()
                    .any(|class| code.starts_with(class))
        }),
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed
        | sqlx::Error::Protocol(_) => true,
        _ => false,
    }
}

/// SQLSTATEs after which the whole transaction is simply run again.
fn is_retryable_conflict(error: &sqlx::Error) -> bool {
    matches!(error, sqlx::Error::Database(db) if matches!(db.code().as_deref(), Some("40001" | "40P01")))
}
