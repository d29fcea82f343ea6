//! Running a whole transaction again after a conflict: a serialization failure or
//! a deadlock (by SQLSTATE), or an identifier lock found busy while holding a
//! primary lock ([`StoreError::Busy`], see `locks.rs`). Every attempt starts from
//! scratch, after the shared jittered back-off (`src/backoff.rs`).

use super::StoreError;
use crate::backoff::Backoff;
use std::future::Future;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Attempts of one transaction before its conflict is reported.
const ATTEMPTS: u32 = 10;

/// The first delay, and the longest: conflicts clear in milliseconds.
const FIRST_DELAY: Duration = Duration::from_millis(5);
const MAX_DELAY: Duration = Duration::from_millis(320);

/// Runs `attempt` until it succeeds, fails otherwise than by a conflict, or has
/// conflicted [`ATTEMPTS`] times.
pub(super) async fn retrying<T, F, Fut>(mut attempt: F) -> Result<T, StoreError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut backoff = Backoff::new(FIRST_DELAY, MAX_DELAY);
    // A retry waits at most a few hundred milliseconds: not worth cutting short on
    // shutdown, which waits for the transaction anyway.
    let never = CancellationToken::new();
    loop {
        match attempt().await {
            Err(e) if e.is_conflict() && backoff.attempt() + 1 < ATTEMPTS => {
                tracing::debug!(
                    attempt = backoff.attempt() + 1,
                    "transaction conflicted; retrying"
                );
                backoff.wait(&never).await.expect("never cancelled");
            }
            result => return result,
        }
    }
}
