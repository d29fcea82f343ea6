//! Model check: random request sequences (small alphabets, so that merges are
//! frequent) go through the database and through the plain model of §3; every answer
//! must match, whether requests are applied one per transaction (HTTP) or in batches
//! of random sizes (the worker).

mod support;

use identity_reconciler::domain::Request;
use identity_reconciler::domain::{ContactInput, Email, Normalization, Origin, Phone};
use identity_reconciler::store::{Reconciled, Store};
use proptest::prelude::*;
use support::db::TestDb;
use support::model::{database_clusters, Model, ModelIdentity};

#[derive(Clone, Debug)]
struct Step {
    email: Option<String>,
    phone: Option<String>,
}

fn step() -> impl Strategy<Value = Step> {
    let email = proptest::option::weighted(
        0.75,
        (0..6u8).prop_map(|i| format!("{}@x.io", (b'a' + i) as char)),
    );
    let phone = proptest::option::weighted(0.75, (1..7u8).prop_map(|i| format!("{i}{i}{i}")));
    (email, phone)
        .prop_filter("an input has an identifier", |(e, p)| {
            e.is_some() || p.is_some()
        })
        .prop_map(|(email, phone)| Step { email, phone })
}

fn request(step: &Step, n: usize, from_event: bool) -> Request {
    let mode = Normalization::Standard;
    let input = ContactInput::new(
        step.email
            .as_deref()
            .and_then(|e| Email::parse(e, mode).unwrap()),
        step.phone
            .as_deref()
            .and_then(|p| Phone::parse(p, mode).unwrap()),
    )
    .unwrap();
    let origin = if from_event {
        Origin::Event {
            event_id: Some(format!("e-{n}")),
            order_id: None,
            ledger_key: format!("e-{n}"),
        }
    } else {
        Origin::Http { request_id: None }
    };
    Request { input, origin }
}

fn as_model(result: &Reconciled) -> ModelIdentity {
    match result {
        Reconciled::Applied { identity, .. } => ModelIdentity {
            primary: identity.primary_id,
            emails: identity.emails.clone(),
            phones: identity.phone_numbers.clone(),
            secondaries: identity.secondary_ids.clone(),
        },
        other => panic!("fresh input reported as {other:?}"),
    }
}

async fn reset(store: &Store) {
    sqlx::query(
        "TRUNCATE contact, outbox, processed_event, merge_journal, link_review, keep_apart, \
         quarantine, counterpart, contact_origin RESTART IDENTITY",
    )
    .execute(store.pool())
    .await
    .unwrap();
}

/// Applies `steps` in batches whose sizes are `cuts` (cycled), and compares.
async fn check(
    store: &Store,
    steps: &[Step],
    cuts: &[usize],
    from_event: bool,
) -> Result<(), TestCaseError> {
    reset(store).await;
    let mut model = Model::default();
    let requests: Vec<Request> = steps
        .iter()
        .enumerate()
        .map(|(n, s)| request(s, n, from_event))
        .collect();
    let mut start = 0;
    for &size in cuts.iter().cycle() {
        if start >= requests.len() {
            break;
        }
        let end = (start + size).min(requests.len());
        let results = store.reconcile(&requests[start..end]).await.unwrap();
        for (offset, result) in results.iter().enumerate() {
            let step = &steps[start + offset];
            let expected = model.identify(step.email.as_deref(), step.phone.as_deref());
            prop_assert_eq!(
                as_model(result),
                expected,
                "request {} of {:?}",
                start + offset,
                steps
            );
        }
        start = end;
    }
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM contact")
        .fetch_one(store.pool())
        .await
        .unwrap();
    prop_assert_eq!(rows as usize, model.contact_count());
    prop_assert_eq!(database_clusters(store.pool()).await, model.clusters());
    support::invariants::assert_invariants(store.pool()).await;
    Ok(())
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn one_request_per_transaction_answers_like_the_model() {
    let rt = runtime();
    let db = rt.block_on(TestDb::new());
    let store = db.store();
    proptest!(ProptestConfig::with_cases(48), |(steps in proptest::collection::vec(step(), 1..40))| {
        rt.block_on(check(&store, &steps, &[1], false))?;
    });
}

#[test]
fn batches_of_events_answer_like_the_model() {
    let rt = runtime();
    let db = rt.block_on(TestDb::new());
    let store = db.store();
    proptest!(ProptestConfig::with_cases(48), |(
        steps in proptest::collection::vec(step(), 1..60),
        cuts in proptest::collection::vec(1..20usize, 1..5),
    )| {
        rt.block_on(check(&store, &steps, &cuts, true))?;
    });
}

/// Applies `before`, then records keep-apart decisions between the contacts picked
/// by `picks` (indexes into the contacts, taken modulo their count; pairs already in
/// one cluster are skipped, as an undo only ever separates two clusters), then
/// applies `after` in batches of `cuts`. Answers and clusters must equal the model's,
/// in which those pairs are never joined.
async fn check_keep_apart(
    store: &Store,
    before: &[Step],
    picks: &[(usize, usize)],
    after: &[Step],
    cuts: &[usize],
) -> Result<(), TestCaseError> {
    reset(store).await;
    let mut model = Model::default();
    let mut n = 0;
    for step in before {
        let results = store.reconcile(&[request(step, n, true)]).await.unwrap();
        model.identify(step.email.as_deref(), step.phone.as_deref());
        prop_assert_eq!(results.len(), 1);
        n += 1;
    }
    let count = model.contact_count() as i64;
    for &(a, b) in picks {
        let (a, b) = ((a as i64 % count) + 1, (b as i64 % count) + 1);
        if model.same_cluster(a, b) {
            continue;
        }
        model.keep_apart(a, b);
        sqlx::query(
            "INSERT INTO keep_apart (contact_a, contact_b, source) VALUES ($1, $2, 'unmerge')",
        )
        .bind(a)
        .bind(b)
        .execute(store.pool())
        .await
        .unwrap();
    }
    let requests: Vec<Request> = after
        .iter()
        .enumerate()
        .map(|(i, s)| request(s, n + i, true))
        .collect();
    let mut start = 0;
    for &size in cuts.iter().cycle() {
        if start >= requests.len() {
            break;
        }
        let end = (start + size).min(requests.len());
        let results = store.reconcile(&requests[start..end]).await.unwrap();
        for (offset, result) in results.iter().enumerate() {
            let step = &after[start + offset];
            let expected = model.identify(step.email.as_deref(), step.phone.as_deref());
            prop_assert_eq!(
                as_model(result),
                expected,
                "request {} after the decisions",
                start + offset
            );
        }
        start = end;
    }
    prop_assert_eq!(database_clusters(store.pool()).await, model.clusters());
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM contact")
        .fetch_one(store.pool())
        .await
        .unwrap();
    prop_assert_eq!(rows as usize, model.contact_count());
    Ok(())
}

#[test]
fn keep_apart_decisions_hold_like_the_model() {
    let rt = runtime();
    let db = rt.block_on(TestDb::new());
    let store = db.store();
    proptest!(ProptestConfig::with_cases(48), |(
        before in proptest::collection::vec(step(), 2..20),
        picks in proptest::collection::vec((0..40usize, 0..40usize), 1..4),
        after in proptest::collection::vec(step(), 1..40),
        cuts in proptest::collection::vec(1..20usize, 1..5),
    )| {
        rt.block_on(check_keep_apart(&store, &before, &picks, &after, &cuts))?;
    });
}
