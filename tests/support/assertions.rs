//! The checks a pipeline test ends with: the stream applied once and in order, the
//! output describing the database, and the group's committed offsets never going back.

use super::broker::{committed_offsets_of, partition_count};
use super::db::{database_identity, ledger_keys, TestDb};
use super::eventually;
use super::invariants::assert_invariants;
use super::model::database_clusters;
use super::readers::{published_order_ids, Record, TopicReader};
use super::workload::{Produced, Workload};
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

/// Waits until the ledger holds `keys` and the outbox is empty, then reads the whole
/// output topic once it has a record for every event of `workload`.
pub async fn drained_output(
    db: &TestDb,
    brokers: &str,
    output_topic: &str,
    workload: &Workload,
    keys: &BTreeSet<String>,
    deadline: Duration,
) -> Vec<Record> {
    eventually(deadline, "every event to be applied", || async {
        (db.count("SELECT count(*) FROM processed_event").await as usize >= keys.len())
            .then_some(())
    })
    .await;
    eventually(deadline, "the outbox to drain", || async {
        (db.count("SELECT count(*) FROM outbox").await == 0).then_some(())
    })
    .await;
    let mut output = TopicReader::open(brokers, output_topic).await;
    let order_ids = workload.order_ids();
    output
        .read_until(deadline, "a record for every event", |r| {
            published_order_ids(r).is_superset(&order_ids)
        })
        .await;
    output.read_to_end(deadline).await.to_vec()
}

/// Every input partition was applied in offset order: walking a partition's events
/// by offset, the transaction that applied each one (the ledger's `applied_by`) never
/// goes back. (A retried event, whose key came earlier, is a replay and ignored.) Two
/// instances applying one partition at once, or a consumer that rewound past applied
/// work and applied older events after newer ones, break this. Returns the number of
/// events checked.
pub async fn assert_applied_in_offset_order(pool: &sqlx::PgPool, produced: &[Produced]) -> usize {
    let applied: HashMap<String, i64> = sqlx::query_as::<_, (String, i64)>(
        "SELECT key, applied_by::text::bigint FROM processed_event",
    )
    .fetch_all(pool)
    .await
    .unwrap()
    .into_iter()
    .collect();
    let mut seen = BTreeSet::new();
    let mut by_partition: BTreeMap<i32, Vec<&Produced>> = BTreeMap::new();
    for p in produced {
        if seen.insert(p.key.as_str()) {
            by_partition.entry(p.partition).or_default().push(p);
        }
    }
    let mut checked = 0;
    for (partition, mut events) in by_partition {
        events.sort_by_key(|p| p.offset);
        let mut previous: Option<(i64, i64)> = None;
        for event in events {
            let xact = *applied.get(&event.key).unwrap_or_else(|| {
                panic!("event at {partition}/{} is not in the ledger", event.offset)
            });
            if let Some((offset, before)) = previous {
                assert!(
                    xact >= before,
                    "partition {partition}: the event at offset {} was applied (transaction {xact}) \
                     before the one at offset {offset} (transaction {before})",
                    event.offset
                );
            }
            previous = Some((event.offset, xact));
            checked += 1;
        }
    }
    checked
}

/// Polls a group's committed offsets on a topic in the background and records every
/// time one moved backwards.
pub struct CommittedOffsetsWatch {
    stop: tokio_util::sync::CancellationToken,
    task: tokio::task::JoinHandle<(usize, Vec<String>)>,
}

impl CommittedOffsetsWatch {
    pub async fn start(brokers: &str, group: &str, topic: &str) -> CommittedOffsetsWatch {
        let partitions = partition_count(brokers, topic).await;
        let (brokers, group, topic) = (brokers.to_owned(), group.to_owned(), topic.to_owned());
        let stop = tokio_util::sync::CancellationToken::new();
        let stopped = stop.clone();
        let task = tokio::spawn(async move {
            let mut highest: HashMap<usize, i64> = HashMap::new();
            let mut regressions = Vec::new();
            let mut polls = 0;
            while !stopped.is_cancelled() {
                // A poll fails while the group coordinator moves; the next one counts.
                let offsets = committed_offsets_of(&brokers, &group, &topic, partitions)
                    .await
                    .unwrap_or_default();
                for (partition, offset) in offsets.into_iter().enumerate() {
                    let Some(offset) = offset else { continue };
                    let top = highest.entry(partition).or_insert(offset);
                    if offset < *top {
                        regressions.push(format!("partition {partition}: {top} -> {offset}"));
                    }
                    *top = (*top).max(offset);
                }
                polls += 1;
                tokio::select! {
                    _ = stopped.cancelled() => {}
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
            }
            (polls, regressions)
        });
        CommittedOffsetsWatch { stop, task }
    }

    /// Stops polling; panics if an offset ever moved backwards. Returns the number of
    /// polls made.
    pub async fn assert_never_went_back(self) -> usize {
        self.stop.cancel();
        let (polls, regressions) = self.task.await.unwrap();
        assert!(
            regressions.is_empty(),
            "committed offsets moved backwards: {regressions:?}"
        );
        polls
    }

    /// For faults that move the group coordinator, where a reading can go back without
    /// the group's offsets going back for good: a new coordinator answers at its high
    /// watermark, which can trail its predecessor's until the followers fetch from it,
    /// and librdkafka may send a commit that failed against the old coordinator again
    /// after a newer one. Either way the next readings or the next commit move forward
    /// again, and a redelivered event is skipped by the ledger. So this stops polling
    /// and then requires that the group's offsets end where `produced` ends, on every
    /// partition: everything read was committed, whatever was read back meanwhile.
    /// Returns the number of polls and the readings that went back.
    pub async fn assert_ends_at(
        self,
        brokers: &str,
        group: &str,
        topic: &str,
        produced: &[Produced],
    ) -> (usize, Vec<String>) {
        self.stop.cancel();
        let (polls, regressions) = self.task.await.unwrap();
        let partitions = partition_count(brokers, topic).await;
        let mut end = vec![None; partitions as usize];
        for p in produced {
            let slot = &mut end[p.partition as usize];
            *slot = Some(slot.unwrap_or(0).max(p.offset + 1));
        }
        let mut last = Vec::new();
        let settled = tokio::time::timeout(Duration::from_secs(60), async {
            loop {
                if let Ok(committed) = committed_offsets_of(brokers, group, topic, partitions).await
                {
                    if committed == end {
                        return;
                    }
                    last = committed;
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        })
        .await;
        assert!(
            settled.is_ok(),
            "the group's committed offsets {last:?} did not end at the input's end {end:?} \
             (readings that went back: {regressions:?})"
        );
        (polls, regressions)
    }
}

/// The end state every crash test must reach: the ledger holds exactly `keys`, §2
/// holds, the clusters are the model's, every event has an identity record on the
/// output, and the last record of every key describes the database as it is.
/// `output` must hold the whole output topic, read after the outbox emptied.
pub async fn assert_stream_applied(
    db: &TestDb,
    workload: &Workload,
    keys: &BTreeSet<String>,
    output: &[Record],
) {
    let ledger: BTreeSet<String> = ledger_keys(&db.pool).await.into_iter().collect();
    assert_eq!(
        ledger.len(),
        keys.len(),
        "the ledger holds {} keys, expected {}",
        ledger.len(),
        keys.len()
    );
    assert_eq!(
        &ledger, keys,
        "the ledger holds other keys than the events'"
    );
    assert_invariants(&db.pool).await;
    assert_eq!(
        database_clusters(&db.pool).await,
        workload.model_clusters(),
        "the database's clusters differ from the model's"
    );
    let missing: Vec<String> = workload
        .order_ids()
        .difference(&published_order_ids(output))
        .cloned()
        .collect();
    assert!(
        missing.is_empty(),
        "{} events have no identity record on the output, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    assert_last_records_match_the_database(db, output).await;
}

/// For every key of the output topic, its last record is the current identity of that
/// primary, or, for an absorbed primary, a `mergedInto` record whose chain leads to its
/// current primary; every current primary has a record. Also: per key, the last record
/// carries the highest version seen.
pub async fn assert_last_records_match_the_database(db: &TestDb, output: &[Record]) {
    let mut last: BTreeMap<i64, Value> = BTreeMap::new();
    let mut highest: BTreeMap<i64, i64> = BTreeMap::new();
    for record in output {
        let key: i64 = record
            .key
            .as_deref()
            .expect("output records are keyed")
            .parse()
            .expect("keyed by a contact id");
        let value = record.json();
        let version = value["version"].as_i64().expect("a version");
        let top = highest.entry(key).or_insert(version);
        *top = (*top).max(version);
        last.insert(key, value);
    }
    let current: HashMap<i64, Option<i64>> =
        sqlx::query_as::<_, (i64, Option<i64>)>("SELECT id, linked_id FROM contact")
            .fetch_all(&db.pool)
            .await
            .unwrap()
            .into_iter()
            .collect();
    for (key, value) in &last {
        assert_eq!(
            value["version"].as_i64(),
            Some(highest[key]),
            "the last record of {key} is not its latest version"
        );
        match current.get(key) {
            Some(None) => assert_eq!(
                value["contact"],
                database_identity(&db.pool, *key).await,
                "the last record of primary {key} is not its current identity"
            ),
            Some(Some(primary)) => {
                let mut into = *key;
                let mut hops = 0;
                while let Some(next) = last.get(&into).and_then(|v| v["mergedInto"].as_i64()) {
                    into = next;
                    hops += 1;
                    assert!(hops <= last.len(), "mergedInto records form a cycle");
                }
                assert_eq!(
                    into, *primary,
                    "the mergedInto records of {key} do not lead to its primary"
                );
            }
            None => panic!("the output names contact {key}, which does not exist"),
        }
    }
    for (id, linked) in &current {
        if linked.is_none() {
            assert!(
                last.contains_key(id),
                "primary {id} has no record on the output"
            );
        }
    }
}
