//! Reconciling a batch of inputs in one transaction, in the five steps of "How
//! reconciliation works" (docs/how-it-works.md): claim the ledger keys, lock the identifiers,
//! lock and load the clusters, plan (the pure domain), write the plan. Why the locks
//! make this safe under any concurrency is in `locks.rs`.

use super::ledger::{claim_ledger_keys, Claimed};
use super::locks::{lock_and_load, lock_identifiers};
use super::retry::retrying;
use super::suppression::suppressed_inputs;
use super::writes::write_plan;
use super::{decisions, Store, StoreError};
use crate::domain::reconcile::plan;
use crate::domain::{ContactInput, Identity, Origin, Plan, Request, StoredContact};
use crate::metrics::METRICS;
use sqlx::{Postgres, Transaction};
use std::collections::HashSet;

/// The result for one request of a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reconciled {
    Applied {
        identity: Identity,
        version: i64,
        changed: bool,
    },
    /// The ledger already held this event's key: nothing was changed or published.
    Replayed,
    /// The ledger already held this event's `eventId` with other content (§6 v2): the
    /// first event stands, nothing was changed or published, and the caller
    /// dead-letters this one with reason `event_id_conflict`.
    Conflict,
    /// The input carries an erased identifier: it was dropped, nothing was stored
    /// (beyond the event's ledger key) and nothing was published.
    Suppressed,
}

/// The requests of a batch left to apply once the identifiers are locked.
struct Live {
    /// Indexes into the batch, in order.
    at: Vec<usize>,
    /// Their requests, with quarantined identifiers left out of the inputs.
    requests: Vec<Request>,
    /// Batch indexes of the requests dropped for an erased identifier.
    suppressed: Vec<usize>,
    /// Inputs whose every identifier is quarantined: answered only.
    answer_only: HashSet<usize>,
    /// Quarantines this batch made.
    tripped: Vec<i64>,
}

impl Store {
    /// Reconciles `requests` in order, in one transaction, retried as a whole on
    /// serialization failures and deadlocks. Returns one result per request.
    ///
    /// A batch that quarantines an identifier splits what the identifier had linked
    /// right after it commits, in a transaction of its own (see `quarantine.rs`); if
    /// that fails, the split stays pending for the retention task and the batch's
    /// results stand.
    pub async fn reconcile(&self, requests: &[Request]) -> Result<Vec<Reconciled>, StoreError> {
        let (results, tripped) = retrying(|| self.reconcile_once(requests)).await?;
        for quarantine in tripped {
            if let Err(e) = self.split_quarantined(quarantine).await {
                tracing::warn!(
                    quarantine,
                    error = ?e,
                    "could not split what a quarantined identifier linked; the retention task retries"
                );
            }
        }
        Ok(results)
    }

    /// [`Store::reconcile`], except that a batch PostgreSQL rejects (a value it
    /// refuses: [`StoreError::Rejected`]) is applied again one request at a time, so
    /// that only the requests it refuses fail. One outcome per request, in order, up to
    /// the first error that is not a rejection: that one is the last outcome, and the
    /// requests after it were not attempted. Any other error of the whole batch is
    /// returned as is.
    pub(crate) async fn reconcile_each(
        &self,
        requests: &[Request],
    ) -> Result<Vec<Result<Reconciled, StoreError>>, StoreError> {
        match self.reconcile(requests).await {
            Ok(results) => Ok(results.into_iter().map(Ok).collect()),
            Err(e @ StoreError::Rejected(_)) if requests.len() > 1 => {
                tracing::warn!(error = %crate::telemetry::chain(&e), size = requests.len(), "batch rejected; applying its requests one by one");
                let mut outcomes = Vec::with_capacity(requests.len());
                for request in requests {
                    let outcome = self
                        .reconcile(std::slice::from_ref(request))
                        .await
                        .map(|mut results| results.remove(0));
                    let stop = matches!(&outcome, Err(e) if !matches!(e, StoreError::Rejected(_)));
                    outcomes.push(outcome);
                    if stop {
                        break;
                    }
                }
                Ok(outcomes)
            }
            Err(e @ StoreError::Rejected(_)) => Ok(vec![Err(e)]),
            Err(e) => Err(e),
        }
    }

    /// One attempt; also returns the quarantines the batch made.
    async fn reconcile_once(
        &self,
        requests: &[Request],
    ) -> Result<(Vec<Reconciled>, Vec<i64>), StoreError> {
        let salt = self.suppression_salt().await?;
        let mut tx = self.pool.begin().await?;
        let claimed = claim_ledger_keys(&mut tx, requests).await?;
        let live = self
            .lock_identifiers(&mut tx, salt, requests, &claimed)
            .await?;
        let snapshot = lock_and_load(&mut tx, live.requests.iter().map(|r| &r.input)).await?;
        let newest_loaded = snapshot.iter().map(|c| c.created_at).max();
        let plan = self.plan(&mut tx, snapshot, &live).await?;
        let origins: Vec<&Origin> = live.requests.iter().map(|r| &r.origin).collect();
        let identities = write_plan(&mut tx, &plan, &origins, newest_loaded).await?;
        tx.commit().await?;
        count(&plan, &claimed, &live);
        let results = results(requests.len(), &claimed, &live, &plan, identities);
        Ok((results, live.tripped))
    }

    /// Step 2: locks the identifiers of the claimed requests, then sets aside those
    /// carrying an erased identifier and screens the rest for quarantined ones.
    async fn lock_identifiers(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        salt: &str,
        requests: &[Request],
        claimed: &Claimed,
    ) -> Result<Live, StoreError> {
        let claimed_inputs: Vec<&ContactInput> =
            claimed.apply.iter().map(|&i| &requests[i].input).collect();
        lock_identifiers(tx, &claimed_inputs).await?;
        // After the identifier locks: an erasure holds them while it writes the
        // suppression list, so what we read now stays true until we commit.
        let suppressed = suppressed_inputs(tx, salt, &claimed_inputs).await?;
        let (mut at, mut dropped) = (Vec::new(), Vec::new());
        for (&i, suppressed) in claimed.apply.iter().zip(suppressed) {
            if suppressed { &mut dropped } else { &mut at }.push(i);
        }
        // Quarantined identifiers are left out of the inputs before anything is
        // matched (see `decisions.rs`); the identifier locks above cover them.
        let inputs: Vec<ContactInput> = at.iter().map(|&i| requests[i].input.clone()).collect();
        let origins: Vec<_> = at.iter().map(|&i| &requests[i].origin).collect();
        let screened =
            decisions::screen(tx, salt, &self.settings.quarantine, &inputs, &origins).await?;
        let requests = (screened.inputs.into_iter().zip(origins))
            .map(|(input, origin)| Request {
                input,
                origin: origin.clone(),
            })
            .collect();
        Ok(Live {
            at,
            requests,
            suppressed: dropped,
            answer_only: screened.answer_only,
            tripped: screened.tripped,
        })
    }

    /// Step 4: the pure domain's plan for the live requests against the snapshot, with
    /// the keep-apart decisions between its contacts.
    async fn plan(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        snapshot: Vec<StoredContact>,
        live: &Live,
    ) -> Result<Plan, StoreError> {
        let decisions = decisions::load(tx, &snapshot, live.answer_only.clone()).await?;
        plan(snapshot, &live.requests, self.settings.limits, &decisions)
            .map_err(|e| StoreError::Fatal(e.into()))
    }
}

/// One result per request of the batch.
fn results(
    size: usize,
    claimed: &Claimed,
    live: &Live,
    plan: &Plan,
    identities: Vec<Identity>,
) -> Vec<Reconciled> {
    let mut results = vec![Reconciled::Replayed; size];
    for &i in &claimed.conflicts {
        results[i] = Reconciled::Conflict;
    }
    for &i in &live.suppressed {
        results[i] = Reconciled::Suppressed;
    }
    for ((&i, outcome), identity) in live.at.iter().zip(&plan.outcomes).zip(identities) {
        results[i] = Reconciled::Applied {
            identity,
            version: outcome.version,
            changed: outcome.changed,
        };
    }
    results
}

/// The batch's metrics, once it committed.
fn count(plan: &Plan, claimed: &Claimed, live: &Live) {
    METRICS.contacts_inserted.inc_by(plan.inserts.len() as u64);
    METRICS
        .merges
        .inc_by(plan.outcomes.iter().map(|o| o.absorbed.len() as u64).sum());
    METRICS
        .inputs_suppressed
        .inc_by(live.suppressed.len() as u64);
    METRICS
        .event_id_conflicts
        .inc_by(claimed.conflicts.len() as u64);
    for refusal in plan.outcomes.iter().flat_map(|o| &o.refused) {
        METRICS
            .links_refused
            .with_label_values(&[refusal.reason.code()])
            .inc();
    }
}
