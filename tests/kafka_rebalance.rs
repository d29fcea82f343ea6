//! A rebalance that revokes partitions in the middle of a batch (docs/contract.md §6 v2,
//! "Delivery"): the revoked work is finished or abandoned within the drain timeout
//! before the partitions go, so the rebalance does not wait for a stuck batch, two
//! workers never apply one partition at once, a partition's committed offset never
//! moves backwards (also when the partition comes back), and every partition is
//! applied in offset order.

mod support;

use rdkafka::producer::FutureProducer;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;
use support::assertions::{
    self, assert_applied_in_offset_order, assert_stream_applied, CommittedOffsetsWatch,
};
use support::broker::TopicAdmin;
use support::broker::{self, committed_offsets, send_all, Outgoing};
use support::db::TestDb;
use support::eventually;
use support::names::{unique, Topics};
use support::processes::{self, Service};
use support::workload::{landed, ledger_keys_of, Event, Produced, Workload};

const WAIT: Duration = Duration::from_secs(120);
const PARTITIONS: i32 = 4;

/// A PostgreSQL role of worker A's own, and a trigger that records which role claimed
/// each ledger key, so that the test can tell which worker applied an event.
struct Role {
    name: String,
    pool: sqlx::PgPool,
}

impl Role {
    async fn create(db: &TestDb) -> Role {
        let name = unique("ir_drain");
        for sql in [
            format!("CREATE ROLE {name} LOGIN PASSWORD '{name}'"),
            "CREATE TABLE applied_by_role (key text, role name)".to_owned(),
            "CREATE FUNCTION record_applier() RETURNS trigger LANGUAGE plpgsql AS \
             $$ BEGIN INSERT INTO applied_by_role VALUES (NEW.key, current_user); RETURN NEW; END $$"
                .to_owned(),
            "CREATE TRIGGER record_applier AFTER INSERT ON processed_event \
             FOR EACH ROW EXECUTE FUNCTION record_applier()"
                .to_owned(),
            format!("GRANT USAGE, CREATE ON SCHEMA public TO {name}"),
            format!("GRANT ALL ON ALL TABLES IN SCHEMA public TO {name}"),
            format!("GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {name}"),
        ] {
            sqlx::query(&sql).execute(&db.pool).await.unwrap();
        }
        Role {
            name,
            pool: db.pool.clone(),
        }
    }

    /// `url` with this role as the user.
    fn url(&self, url: &str) -> String {
        let mut url = url::Url::parse(url).unwrap();
        url.set_username(&self.name).unwrap();
        url.set_password(Some(&self.name)).unwrap();
        url.to_string()
    }

    /// Whether one of the role's reconciliations waits on a lock to claim ledger keys.
    async fn waits_on_a_lock(&self) -> bool {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE usename = $1 \
             AND wait_event_type = 'Lock' AND query LIKE 'INSERT INTO processed_event%'",
        )
        .bind(&self.name)
        .fetch_one(&self.pool)
        .await
        .unwrap();
        waiting > 0
    }

    /// Per partition, the roles that applied the events of `produced`.
    async fn appliers(&self, produced: &[Produced]) -> BTreeMap<i32, BTreeSet<String>> {
        let roles: HashMap<String, String> =
            sqlx::query_as::<_, (String, String)>("SELECT key, role::text FROM applied_by_role")
                .fetch_all(&self.pool)
                .await
                .unwrap()
                .into_iter()
                .collect();
        let mut appliers: BTreeMap<i32, BTreeSet<String>> = BTreeMap::new();
        for p in produced {
            let role = if roles.get(&p.key) == Some(&self.name) {
                "worker A"
            } else {
                "worker B"
            };
            appliers
                .entry(p.partition)
                .or_default()
                .insert(role.to_owned());
        }
        appliers
    }

    async fn drop(self) {
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1")
            .bind(&self.name)
            .execute(&self.pool)
            .await
            .unwrap();
        for sql in [
            format!("DROP OWNED BY {}", self.name),
            format!("DROP ROLE {}", self.name),
        ] {
            sqlx::query(&sql).execute(&self.pool).await.unwrap();
        }
    }
}

/// Takes the lock every reconciliation needs (inserting ledger keys) and holds it until
/// the transaction is committed.
async fn lock_the_ledger(db: &TestDb) -> sqlx::Transaction<'static, sqlx::Postgres> {
    let mut lock = db.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE processed_event IN EXCLUSIVE MODE")
        .execute(&mut *lock)
        .await
        .unwrap();
    lock
}

/// Round-robin partitions for the events of `workload`, except that an event sent
/// again (same `eventId`: a producer's retry) goes where its first copy went, as a
/// keyed producer would send it, so that per-partition order can be checked.
fn partitions_of(workload: &Workload) -> Vec<i32> {
    let mut first: HashMap<&str, i32> = HashMap::new();
    workload
        .events
        .iter()
        .enumerate()
        .map(|(i, e)| match &e.event_id {
            Some(id) => *first.entry(id).or_insert(i as i32 % PARTITIONS),
            None => i as i32 % PARTITIONS,
        })
        .collect()
}

/// Produces `events` in order, each to its partition in `partitions`.
async fn produce_on(
    producer: &FutureProducer,
    topic: &str,
    events: &[Event],
    partitions: &[i32],
) -> Vec<Produced> {
    let records: Vec<Outgoing> = events
        .iter()
        .zip(partitions)
        .map(|(e, &partition)| Outgoing::event(&e.value).on_partition(partition))
        .collect();
    let coordinates = send_all(producer, topic, &records).await;
    landed(topic, events, coordinates)
}

/// The partition counts of the "partitions assigned" lines of `service`'s log that
/// assigned any, in order.
fn assignments(service: &Service) -> Vec<usize> {
    service
        .log_text()
        .lines()
        .filter(|line| line.contains("partitions assigned"))
        .filter_map(|line| line.split("partitions=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next()?.parse().ok())
        .filter(|&n: &usize| n > 0)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitions_revoked_mid_batch_are_drained_so_committed_offsets_never_go_back() {
    // Arrange: worker A alone on a 4-partition topic, on a database role of its own.
    let brokers = support::broker::kafka_brokers().await;
    let topics = Topics::unique("drain");
    topics.create(&brokers, PARTITIONS).await;
    let db = TestDb::new().await;
    let role = Role::create(&db).await;
    let mut env = topics.env(&brokers);
    env.extend(processes::unguarded_env());
    env.push(("IR__RECONCILE__MAX_BATCH".to_owned(), "1000".to_owned()));
    let mut env_a = env.clone();
    env_a.push(("DATABASE_URL".to_owned(), role.url(&db.url)));
    env_a.push(("IR__WORKER__DRAIN_TIMEOUT".to_owned(), "1s".to_owned()));
    let mut env_b = env;
    env_b.push(("DATABASE_URL".to_owned(), db.url.clone()));
    let mut a = Service::start("drain-a", &["run"], &env_a);
    a.base_url().await;
    eventually(WAIT, "worker A to be assigned the partitions", || async {
        (!assignments(&a).is_empty()).then_some(())
    })
    .await;
    let watch = CommittedOffsetsWatch::start(&brokers, &topics.group, &topics.input).await;
    let producer = broker::producer(&brokers);
    let workload = Workload::generate(13, 1_201, 300, "drain");
    let partitions = partitions_of(&workload);
    let (first, second, third) = (0..1, 1..601, 601..workload.events.len());

    // Act 1: A's batch waits on a lock the test holds while events arrive on every
    // partition; the lock is released and at once taken again, so A's next batch, of
    // all four partitions, waits on it too.
    let lock = lock_the_ledger(&db).await;
    let mut produced = produce_on(
        &producer,
        &topics.input,
        &workload.events[first.clone()],
        &partitions[first],
    )
    .await;
    eventually(WAIT, "A's first batch to wait on the lock", || async {
        role.waits_on_a_lock().await.then_some(())
    })
    .await;
    let revocable = produce_on(
        &producer,
        &topics.input,
        &workload.events[second.clone()],
        &partitions[second],
    )
    .await;
    // librdkafka prefetches without being asked; half a second (fetch.wait.max.ms is
    // 500 ms) lets it read these while A's batch waits, so that A's next batch holds
    // events of every partition. (If it took longer, the test would check less, not
    // pass wrongly.)
    tokio::time::sleep(Duration::from_millis(500)).await;
    lock.commit().await.unwrap();
    let lock = lock_the_ledger(&db).await;
    eventually(WAIT, "A's second batch to wait on the lock", || async {
        role.waits_on_a_lock().await.then_some(())
    })
    .await;

    // Act 2: B joins while A's batch is stuck: partitions are revoked from A mid-batch
    // and must reach B within about the drain timeout, the lock still held.
    let mut b = Service::start("drain-b", &["run"], &env_b);
    b.base_url().await;
    let b_partitions = eventually(
        Duration::from_secs(30),
        "worker B to be assigned partitions while A's batch is stuck on the lock",
        || async { assignments(&b).last().copied() },
    )
    .await;

    // Act 3: the lock goes; both apply, and B takes more events on its partitions.
    lock.commit().await.unwrap();
    let later = produce_on(
        &producer,
        &topics.input,
        &workload.events[third.clone()],
        &partitions[third],
    )
    .await;
    let mut ends = vec![0i64; PARTITIONS as usize];
    for p in produced.iter().chain(&revocable).chain(&later) {
        ends[p.partition as usize] = ends[p.partition as usize].max(p.offset + 1);
    }
    eventually(WAIT, "B to commit its partitions to their end", || async {
        let committed = committed_offsets(&brokers, &topics.group, &topics.input).await;
        let done = committed
            .iter()
            .zip(&ends)
            .filter(|(c, end)| **c == Some(**end))
            .count();
        (done >= b_partitions).then_some(())
    })
    .await;

    // Act 4: B leaves and its partitions go back to A.
    let a_assigned = assignments(&a).len();
    b.terminate();
    let status = b.wait_exit(Duration::from_secs(30)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "worker B did not stop cleanly: {status:?}"
    );
    eventually(WAIT, "worker A to get B's partitions back", || async {
        (assignments(&a).len() > a_assigned).then_some(())
    })
    .await;

    // Assert: every event applied exactly once, in offset order per partition, each
    // partition's events after the first by one worker only (A's stuck batch of revoked
    // partitions was abandoned, not applied beside B); the committed offsets end at the
    // end of every partition and never went back.
    produced.extend(revocable.iter().cloned());
    produced.extend(later.iter().cloned());
    let keys = ledger_keys_of(&produced);
    let records =
        assertions::drained_output(&db, &brokers, &topics.output, &workload, &keys, WAIT).await;
    let expected: Vec<Option<i64>> = ends.iter().map(|&end| Some(end)).collect();
    let mut committed = Vec::new();
    let settled = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            committed = committed_offsets(&brokers, &topics.group, &topics.input).await;
            if committed == expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    let polls = watch.assert_never_went_back().await;
    assert!(
        settled.is_ok(),
        "the committed offsets are {committed:?}, not the partitions' ends {expected:?}"
    );
    let appliers = role
        .appliers(&[revocable.as_slice(), later.as_slice()].concat())
        .await;
    let shared: Vec<_> = appliers
        .iter()
        .filter(|(_, roles)| roles.len() > 1)
        .collect();
    assert!(
        shared.is_empty(),
        "events of one partition were applied by both workers (a revoked batch applied \
         beside the new owner): {shared:?}"
    );
    let in_order = assert_applied_in_offset_order(&db.pool, &produced).await;
    assert_stream_applied(&db, &workload, &keys, &records).await;
    let a_log = a.log_text();
    assert!(
        a_log.contains("batch=abandoned"),
        "the revocation did not find A's batch in flight and abandon it at the drain timeout"
    );
    eprintln!(
        "{} events, B took {b_partitions} partitions from A mid-batch, {in_order} events \
         checked in order, {polls} polls of the committed offsets",
        produced.len()
    );
    a.terminate();
    let status = a.wait_exit(Duration::from_secs(30)).await;
    assert!(
        status.is_some_and(|s| s.success()),
        "worker A did not stop cleanly: {status:?}"
    );
    role.drop().await;
}
