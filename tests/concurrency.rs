//! Many clients at once through `POST /identify`: §2's invariants must hold after any
//! interleaving, and the result must be the one any serial order gives. The sidecar
//! runs with `LANES` coalescing lanes, so that coalesced transactions really run
//! concurrently (with the default single lane they would go one at a time and these
//! tests could not fail); `tests/concurrency_store.rs` drives the store directly.

mod support;

use futures::future::join_all;
use rand::prelude::*;
use serde_json::{json, Value};
use std::sync::Arc;
use support::app::TestApp;
use support::model::{database_clusters, Model};

const CLIENTS: usize = 64;
/// Coalescing lanes: transactions in flight at once.
const LANES: usize = 8;

async fn spawn() -> TestApp {
    TestApp::spawn_http(|settings| {
        settings.tuning.coalesce_lanes = LANES;
        settings.tuning.coalesce_max_batch = 4;
        settings.database.max_connections = 2 * LANES as u32;
    })
    .await
}

async fn fire(app: &Arc<TestApp>, bodies: Vec<String>) -> Vec<(u16, Value)> {
    join_all(bodies.into_iter().map(|body| {
        let app = app.clone();
        tokio::spawn(async move { app.post_identify(&body).await })
    }))
    .await
    .into_iter()
    .map(|r| r.unwrap())
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_new_pair_sent_at_once_creates_one_contact() {
    let app = Arc::new(spawn().await);
    let body = r#"{"email":"twin@x.io","phoneNumber":"424242"}"#.to_owned();

    let answers = fire(&app, vec![body; CLIENTS]).await;

    assert!(answers.iter().all(|(status, _)| *status == 200));
    assert!(
        answers.windows(2).all(|w| w[0].1 == w[1].1),
        "all answers agree"
    );
    assert_eq!(app.db.count("SELECT count(*) FROM contact").await, 1);
    support::invariants::assert_invariants(&app.db.pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chains_merged_from_both_ends_at_once_end_in_one_cluster_under_the_oldest() {
    let app = Arc::new(spawn().await);
    const LINKS: usize = 32;
    let mut first = None;
    for i in 0..=LINKS {
        let (_, answer) = app
            .post_identify(&format!(r#"{{"email":"c{i}@x.io","phoneNumber":"{i}00"}}"#))
            .await;
        first.get_or_insert(answer["contact"]["primaryContactId"].clone());
    }
    // Link i joins cluster i and cluster i+1; send every link twice, walking the chain
    // from the left and from the right at the same time.
    let mut bodies = Vec::new();
    for i in 0..LINKS {
        let j = LINKS - 1 - i;
        bodies.push(format!(
            r#"{{"email":"c{i}@x.io","phoneNumber":"{}00"}}"#,
            i + 1
        ));
        bodies.push(format!(
            r#"{{"email":"c{j}@x.io","phoneNumber":"{}00"}}"#,
            j + 1
        ));
    }

    let answers = fire(&app, bodies).await;

    assert!(
        answers.iter().all(|(status, _)| *status == 200),
        "{answers:?}"
    );
    let primaries = app
        .db
        .count("SELECT count(*) FROM contact WHERE linked_id IS NULL")
        .await;
    assert_eq!(primaries, 1);
    let (_, whole) = app.post_identify(r#"{"email":"c0@x.io"}"#).await;
    assert_eq!(whole["contact"]["primaryContactId"], first.unwrap());
    assert_eq!(
        whole["contact"]["secondaryContactIds"]
            .as_array()
            .unwrap()
            .len(),
        LINKS
    );
    assert_eq!(
        app.db.count("SELECT count(*) FROM contact").await,
        LINKS as i64 + 1,
        "links bring nothing new"
    );
    support::invariants::assert_invariants(&app.db.pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn random_overlapping_traffic_keeps_every_invariant() {
    let app = Arc::new(spawn().await);
    let mut rng = StdRng::seed_from_u64(20261124);
    let mut model = Model::default();
    let mut bodies = Vec::new();
    for _ in 0..CLIENTS * 10 {
        let email = rng
            .gen_bool(0.8)
            .then(|| format!("u{}@x.io", rng.gen_range(0..40)));
        let phone = (email.is_none() || rng.gen_bool(0.8))
            .then(|| format!("{}", 1000 + rng.gen_range(0..40)));
        model.identify(email.as_deref(), phone.as_deref());
        bodies.push(json!({"email": email, "phoneNumber": phone}).to_string());
    }

    // CLIENTS connections, each sending its share one after another.
    let chunks: Vec<Vec<String>> = bodies
        .chunks(bodies.len() / CLIENTS)
        .map(|c| c.to_vec())
        .collect();
    let statuses = join_all(chunks.into_iter().map(|chunk| {
        let app = app.clone();
        tokio::spawn(async move {
            let mut statuses = Vec::new();
            for body in chunk {
                statuses.push(app.post_identify(&body).await.0);
            }
            statuses
        })
    }))
    .await;

    assert!(statuses
        .into_iter()
        .flat_map(|s| s.unwrap())
        .all(|s| s == 200));
    assert_eq!(
        support::invariants::assert_invariants(&app.db.pool).await,
        6
    );
    // Which identifiers end up together does not depend on the order of requests.
    assert_eq!(database_clusters(&app.db.pool).await, model.clusters());
}
