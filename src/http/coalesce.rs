//! Coalescing concurrent `POST /identify` requests into shared transactions.
//!
//! Under load, one transaction per request spends most of its time in round trips and
//! commit flushes. A few *lanes* take requests from one queue: each lane waits for a
//! request, takes whatever else is already queued (never waiting to fill a batch),
//! reconciles them in one transaction, in queue order, and answers each one. An idle
//! service therefore answers a lone request at once, and a busy one commits many per
//! flush. The answers are those of the requests applied one after another.
//!
//! If PostgreSQL rejects a batch's data, its requests are retried one by one so that
//! only the culprit gets the error.

use crate::domain::Request;
use crate::domain::{ContactInput, Origin};
use crate::store::{Reconciled, Store, StoreError};
use crate::telemetry::chain;
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio::task::JoinSet;

/// Why a coalesced request failed (the store's error, which is not `Clone`, is logged
/// once by the lane).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CoalescedError {
    #[error("PostgreSQL is unavailable")]
    Unavailable,
    #[error("PostgreSQL rejected a value of this request")]
    Rejected,
    #[error("internal error")]
    Internal,
}

impl From<&StoreError> for CoalescedError {
    fn from(error: &StoreError) -> CoalescedError {
        match error {
            StoreError::Unavailable(_) | StoreError::Busy => CoalescedError::Unavailable,
            StoreError::Rejected(_) => CoalescedError::Rejected,
            // Not found and refused come from operators' actions only.
            StoreError::NotFound(_) | StoreError::Refused(_) | StoreError::Fatal(_) => {
                CoalescedError::Internal
            }
        }
    }
}

struct Job {
    input: ContactInput,
    /// The request's `x-request-id`.
    request_id: Option<String>,
    reply: oneshot::Sender<Result<Reconciled, CoalescedError>>,
}

/// The sending side; cheap to clone. Lanes stop when every clone is dropped.
#[derive(Clone)]
pub(crate) struct Coalescer {
    queue: mpsc::Sender<Job>,
}

impl Coalescer {
    /// Starts `lanes` lanes on `tasks`, each reconciling up to `max_batch` requests per
    /// transaction.
    pub(crate) fn start(
        store: Store,
        lanes: usize,
        max_batch: usize,
        tasks: &mut JoinSet<anyhow::Result<()>>,
    ) -> Coalescer {
        let (queue, receiver) = mpsc::channel(max_batch.max(1) * lanes.max(1) * 4);
        let receiver = Arc::new(Mutex::new(receiver));
        for _ in 0..lanes.max(1) {
            let lane = Lane {
                store: store.clone(),
                receiver: receiver.clone(),
                max_batch: max_batch.max(1),
            };
            tasks.spawn(async move {
                lane.run().await;
                Ok(())
            });
        }
        Coalescer { queue }
    }

    /// Reconciles one request, possibly together with concurrent ones; `request_id`
    /// is recorded with the contacts it creates.
    pub(crate) async fn reconcile(
        &self,
        input: ContactInput,
        request_id: Option<String>,
    ) -> Result<Reconciled, CoalescedError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Job {
                input,
                request_id,
                reply,
            })
            .await
            .map_err(|_| CoalescedError::Unavailable)?;
        answer.await.unwrap_or(Err(CoalescedError::Unavailable))
    }
}

struct Lane {
    store: Store,
    receiver: Arc<Mutex<mpsc::Receiver<Job>>>,
    max_batch: usize,
}

impl Lane {
    async fn run(self) {
        while let Some(batch) = self.next_batch().await {
            self.apply(batch).await;
        }
    }

    async fn next_batch(&self) -> Option<Vec<Job>> {
        let mut receiver = self.receiver.lock().await;
        let first = receiver.recv().await?;
        let mut batch = vec![first];
        while batch.len() < self.max_batch {
            match receiver.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        Some(batch)
    }

    async fn apply(&self, batch: Vec<Job>) {
        let requests: Vec<Request> = batch
            .iter()
            .map(|job| Request {
                input: job.input.clone(),
                origin: Origin::Http {
                    request_id: job.request_id.clone(),
                },
            })
            .collect();
        match self.store.reconcile_each(&requests).await {
            Ok(outcomes) => {
                // Outcomes stop at the first error that is not a rejection; the
                // requests after it get that error too.
                let mut last_error = None;
                let mut outcomes = outcomes.into_iter();
                for job in batch {
                    let answer = match outcomes.next() {
                        Some(Ok(result)) => Ok(result),
                        Some(Err(e)) => Err(*last_error.insert(log(&e))),
                        None => Err(last_error.expect("outcomes end with an error")),
                    };
                    let _ = job.reply.send(answer);
                }
            }
            Err(e) => {
                let error = log(&e);
                for job in batch {
                    let _ = job.reply.send(Err(error));
                }
            }
        }
    }
}

fn log(error: &StoreError) -> CoalescedError {
    if error.is_transient() {
        tracing::warn!(error = %chain(error), "reconciliation failed: PostgreSQL unavailable");
    } else {
        tracing::error!(error = %chain(error), "reconciliation failed");
    }
    error.into()
}
