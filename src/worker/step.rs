//! The worker's step, with no Kafka in it: a batch of messages in; out, as data, what
//! to commit and what to dead-letter. The Kafka adapter ([`super::batch`]) reads the
//! batch, produces the letters, and stores the offsets once they are acknowledged.
//!
//! The step parses every message, then reconciles the valid ones. The batch's
//! partitions are split into at most `apply_lanes` groups of about equal size
//! ([`lanes`]), each applied in a transaction of its own, concurrently: a partition's
//! events all go to one group, in order, and the locks of `store::reconcile` make
//! groups that touch the same identities safe, as they do for two instances. A group
//! that PostgreSQL rejects is applied one event at a time, and the events it rejects
//! become dead letters, as do unparseable events and events whose `eventId` was taken
//! by other content. While PostgreSQL is unavailable the step asks its source to
//! [`Pause`] and retries with the shared back-off ([`crate::backoff`]), from the event
//! each group stopped at, until shutdown.

use super::event::{Message, Source};
use crate::backoff::{Backoff, Cancelled};
use crate::config::Settings;
use crate::domain::{InputError, Request};
use crate::metrics::METRICS;
use crate::store::{Reconciled, Store, StoreError};
use crate::telemetry::chain;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("shutdown requested during a retry")]
    Cancelled,
    #[error(transparent)]
    Fatal(#[from] anyhow::Error),
}

impl From<Cancelled> for WorkerError {
    fn from(_: Cancelled) -> WorkerError {
        WorkerError::Cancelled
    }
}

/// What the step needs of the settings.
#[derive(Clone, Debug)]
pub struct StepSettings {
    /// `Tuning::apply_lanes`.
    pub apply_lanes: usize,
    /// `log.show_personal_data`.
    pub show_personal_data: bool,
    /// `worker.backoff_initial`, `worker.backoff_max`.
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
}

impl StepSettings {
    pub fn from_settings(settings: &Settings) -> StepSettings {
        StepSettings {
            apply_lanes: settings.tuning.apply_lanes,
            show_personal_data: settings.log.show_personal_data,
            backoff_initial: settings.worker.backoff_initial,
            backoff_max: settings.worker.backoff_max,
        }
    }

    pub(super) fn backoff(&self) -> Backoff {
        Backoff::new(self.backoff_initial, self.backoff_max)
    }
}

/// Where the messages come from, told to stop fetching while the step backs off (the
/// Kafka adapter pauses its assignment) and to go on once it succeeds again.
pub trait Pause: Sync {
    fn pause(&self);
    fn resume(&self);
}

/// A source with nothing to pause.
impl Pause for () {
    fn pause(&self) {}
    fn resume(&self) {}
}

/// Waits the next delay of `backoff` with `source` paused; returns early on shutdown.
pub(super) async fn back_off(
    backoff: &mut Backoff,
    source: &dyn Pause,
    shutdown: &CancellationToken,
) -> Result<(), WorkerError> {
    source.pause();
    Ok(backoff.wait(shutdown).await?)
}

/// A message to dead-letter, and why.
#[derive(Debug)]
pub struct Letter<'a> {
    pub message: &'a Message,
    /// The stable reason code (`dlq.reason`).
    pub reason: &'static str,
    /// The error's text (`dlq.error`).
    pub(crate) error: String,
}

/// What a batch leaves to its source.
#[derive(Debug)]
pub struct Outcome<'a> {
    /// Per topic and partition, the offset to commit (one past the batch's last
    /// message there), once the dead letters are delivered.
    pub commit: BTreeMap<(String, i32), i64>,
    /// In batch order.
    pub dead_letters: Vec<Letter<'a>>,
}

/// The step: the store and the settings it needs.
pub struct Step {
    store: Store,
    settings: StepSettings,
}

impl Step {
    pub fn new(store: Store, settings: StepSettings) -> Step {
        Step { store, settings }
    }

    /// Applies `batch`: everything it applies is committed in PostgreSQL when this
    /// returns. Fails only on shutdown during a back-off, or on a fatal store error.
    pub async fn apply<'a>(
        &self,
        batch: &'a [Message],
        source: &dyn Pause,
        shutdown: &CancellationToken,
    ) -> Result<Outcome<'a>, WorkerError> {
        let mut items = self.parse(batch);
        self.reconcile_valid(&mut items, source, shutdown).await?;
        let mut commit: BTreeMap<(String, i32), i64> = BTreeMap::new();
        for message in batch {
            let next = commit
                .entry((message.position.topic.clone(), message.position.partition))
                .or_insert(i64::MIN);
            *next = (*next).max(message.position.offset + 1);
        }
        let dead_letters = items
            .into_iter()
            .filter_map(|item| match item.outcome {
                Parsed::Dead { code, message } => Some(Letter {
                    message: item.message,
                    reason: code,
                    error: message,
                }),
                Parsed::Valid(_) => None,
            })
            .collect();
        Ok(Outcome {
            commit,
            dead_letters,
        })
    }

    fn parse<'a>(&self, batch: &'a [Message]) -> Vec<Item<'a>> {
        METRICS.events_consumed.inc_by(batch.len() as u64);
        super::observe::observe_batch_age(batch);
        let rules = self.store.settings().input_rules();
        batch
            .iter()
            .map(|message| {
                let parsed = super::observe::parse_in_span(
                    message.value.as_deref(),
                    &message.position,
                    rules,
                    self.settings.show_personal_data,
                );
                let outcome = match parsed {
                    Ok(request) => {
                        METRICS.count_blocked(request.input.blocked().fields());
                        Parsed::Valid(request)
                    }
                    Err(e) => {
                        if let InputError::Blocked(blocked) = e {
                            METRICS.count_blocked(blocked.fields());
                        }
                        Parsed::Dead {
                            code: e.code(),
                            message: e.to_string(),
                        }
                    }
                };
                Item { message, outcome }
            })
            .collect()
    }

    /// Reconciles the valid items, lanes concurrently (see the module's doc). What a
    /// transient failure interrupts is retried from the event it stopped at.
    async fn reconcile_valid(
        &self,
        items: &mut [Item<'_>],
        source: &dyn Pause,
        shutdown: &CancellationToken,
    ) -> Result<(), WorkerError> {
        let mut pending = lanes(items, self.settings.apply_lanes);
        let mut backoff = self.settings.backoff();
        while !pending.is_empty() {
            let store = &self.store;
            let outcomes = futures::future::join_all(pending.iter().map(|lane| {
                let requests: Vec<Request> =
                    lane.iter().filter_map(|&i| items[i].request()).collect();
                async move {
                    let started = Instant::now();
                    let outcome = store.reconcile_each(&requests).await;
                    (started.elapsed(), outcome)
                }
            }))
            .await;
            let mut failed = Vec::new();
            let mut unavailable = None;
            for (lane, (took, outcome)) in pending.into_iter().zip(outcomes) {
                let fatal = |e: StoreError| {
                    WorkerError::Fatal(anyhow::Error::new(e).context("reconciliation failed"))
                };
                let results = match outcome {
                    Ok(results) => results,
                    Err(e) if e.is_transient() => {
                        unavailable = Some(e);
                        failed.push(lane);
                        continue;
                    }
                    Err(e) => return Err(fatal(e)),
                };
                METRICS.batch_size.observe(lane.len() as f64);
                METRICS.batch_duration.observe(took.as_secs_f64());
                // One result per event up to the first that is not a rejection.
                for (k, result) in results.into_iter().enumerate() {
                    let item = &mut items[lane[k]];
                    match result {
                        Ok(result) => settle(item, result),
                        Err(e @ StoreError::Rejected(_)) => reject(item, &e),
                        Err(e) if e.is_transient() => {
                            unavailable = Some(e);
                            failed.push(lane[k..].to_vec());
                        }
                        Err(e) => return Err(fatal(e)),
                    }
                }
            }
            pending = failed;
            match unavailable {
                Some(e) => {
                    METRICS.retries.with_label_values(&["reconcile"]).inc();
                    tracing::warn!(error = %chain(&e), attempt = backoff.attempt(), "PostgreSQL unavailable; backing off");
                    back_off(&mut backoff, source, shutdown).await?;
                }
                None => source.resume(),
            }
        }
        Ok(())
    }
}

/// A message of the batch and what became of it.
struct Item<'a> {
    message: &'a Message,
    outcome: Parsed,
}

enum Parsed {
    Valid(Request),
    Dead { code: &'static str, message: String },
}

impl Item<'_> {
    fn request(&self) -> Option<Request> {
        match &self.outcome {
            Parsed::Valid(request) => Some(request.clone()),
            Parsed::Dead { .. } => None,
        }
    }

    fn partition(&self) -> i32 {
        self.message.position.partition
    }
}

/// The indexes of the valid items, in at most `lanes` groups: whole partitions per
/// group, the largest partitions first, each to the group with the fewest events so
/// far; item order inside a group.
fn lanes(items: &[Item<'_>], lanes: usize) -> Vec<Vec<usize>> {
    let mut partitions: BTreeMap<i32, Vec<usize>> = BTreeMap::new();
    for (i, item) in items.iter().enumerate() {
        if matches!(item.outcome, Parsed::Valid(_)) {
            partitions.entry(item.partition()).or_default().push(i);
        }
    }
    let mut by_size: Vec<Vec<usize>> = partitions.into_values().collect();
    by_size.sort_by_key(|p| std::cmp::Reverse(p.len()));
    let mut groups: Vec<Vec<usize>> = vec![Vec::new(); lanes.clamp(1, by_size.len().max(1))];
    for partition in by_size {
        let smallest = groups
            .iter_mut()
            .min_by_key(|g| g.len())
            .expect("at least one group");
        smallest.extend(partition);
    }
    groups.retain(|g| !g.is_empty());
    for group in &mut groups {
        group.sort_unstable();
    }
    groups
}

/// Counts an applied event; one whose `eventId` was taken by other content becomes a
/// dead letter.
fn settle(item: &mut Item<'_>, result: Reconciled) {
    match result {
        Reconciled::Applied { .. } => METRICS.events_applied.inc(),
        Reconciled::Replayed => METRICS.events_replayed.inc(),
        // Counted by the store; dead-lettered here.
        Reconciled::Conflict => {
            item.outcome = Parsed::Dead {
                code: "event_id_conflict",
                message:
                    "this eventId was already applied with other content; the first event stands"
                        .into(),
            }
        }
        // Counted by the store, for events and HTTP requests alike.
        Reconciled::Suppressed => {}
    }
}

/// An event PostgreSQL refuses (a value it cannot store) becomes a dead letter.
fn reject(item: &mut Item<'_>, error: &StoreError) {
    let Source {
        topic,
        partition,
        offset,
    } = &item.message.position;
    tracing::warn!(%topic, partition, offset, error = %chain(error), "event rejected by PostgreSQL");
    item.outcome = Parsed::Dead {
        code: "rejected",
        message: "PostgreSQL rejected a value of this event".into(),
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Blocklist, InputRules, Normalization};
    use crate::worker::event::parse_event;

    /// Messages at these partitions, in this order; `valid` ones carry an email.
    fn messages(partitions: &[(i32, bool)]) -> Vec<Message> {
        partitions
            .iter()
            .enumerate()
            .map(|(offset, &(partition, valid))| Message {
                key: None,
                value: Some(if valid {
                    format!(r#"{{"email":"c{offset}@x.io"}}"#).into_bytes()
                } else {
                    b"not json".to_vec()
                }),
                headers: Vec::new(),
                position: Source {
                    topic: "orders".into(),
                    partition,
                    offset: offset as i64,
                },
                timestamp_ms: None,
            })
            .collect()
    }

    fn items(messages: &[Message]) -> Vec<Item<'_>> {
        let blocklist = Blocklist::default();
        let rules = InputRules {
            normalization: Normalization::Standard,
            blocklist: &blocklist,
        };
        messages
            .iter()
            .map(|message| Item {
                message,
                outcome: match parse_event(message.value.as_deref(), &message.position, rules) {
                    Ok(request) => Parsed::Valid(request),
                    Err(e) => Parsed::Dead {
                        code: e.code(),
                        message: e.to_string(),
                    },
                },
            })
            .collect()
    }

    #[test]
    fn a_partitions_events_stay_in_one_lane_in_the_order_read() {
        let batch = messages(&[
            (0, true),
            (1, true),
            (0, true),
            (2, true),
            (1, true),
            (0, true),
        ]);

        let lanes = lanes(&items(&batch), 2);

        // Partition 0 (three events) alone; partitions 1 and 2 (two and one) together.
        assert_eq!(lanes, [vec![0, 2, 5], vec![1, 3, 4]]);
    }

    #[test]
    fn the_largest_partitions_go_first_each_to_the_emptiest_lane() {
        let batch = messages(&[
            (0, true),
            (1, true),
            (1, true),
            (1, true),
            (2, true),
            (2, true),
            (3, true),
        ]);

        let lanes = lanes(&items(&batch), 3);

        // 1 (three events), 2 (two), then 0 and 3 (one each) to the lanes with fewest.
        assert_eq!(lanes, [vec![1, 2, 3], vec![4, 5], vec![0, 6]]);
    }

    #[test]
    fn there_are_never_more_lanes_than_partitions_nor_fewer_than_one() {
        let batch = messages(&[(4, true), (4, true), (7, true)]);
        let items = items(&batch);

        assert_eq!(lanes(&items, 8), [vec![0, 1], vec![2]]);
        assert_eq!(lanes(&items, 0), [vec![0, 1, 2]]);
    }

    #[test]
    fn dead_events_are_in_no_lane() {
        let batch = messages(&[(0, false), (0, true), (1, false)]);

        assert_eq!(lanes(&items(&batch), 2), [vec![1]]);
        assert!(lanes(&items(&batch[2..]), 2).is_empty());
    }
}
