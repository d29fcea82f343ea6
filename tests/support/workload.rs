//! A seeded workload of order events, the model's clusters for it, and where each
//! event landed once produced (and so its ledger key).

use super::broker::{producer, send_all, Outgoing};
use super::model::Model;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rdkafka::producer::FutureProducer;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

/// One generated order event, and its normalised identifiers for the model.
#[derive(Clone, Debug)]
pub struct Event {
    pub value: Value,
    pub event_id: Option<String>,
    pub order_id: String,
    pub email: Option<String>,
    pub phone: Option<String>,
}

/// Where an event landed, and so its ledger key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Produced {
    pub key: String,
    pub partition: i32,
    pub offset: i64,
}

/// Produces `events` (keyed by `eventId` where there is one), in order.
pub async fn produce_events(
    producer: &FutureProducer,
    topic: &str,
    events: &[Event],
) -> Vec<Produced> {
    let records: Vec<Outgoing> = events.iter().map(|e| Outgoing::event(&e.value)).collect();
    let coordinates = send_all(producer, topic, &records).await;
    landed(topic, events, coordinates)
}

/// Where each of `events` landed on `topic`, from the (partition, offset) the broker
/// acknowledged for each: an event without `eventId` is keyed by its position.
pub fn landed(topic: &str, events: &[Event], coordinates: Vec<(i32, i64)>) -> Vec<Produced> {
    events
        .iter()
        .zip(coordinates)
        .map(|(e, (partition, offset))| Produced {
            key: e
                .event_id
                .clone()
                .unwrap_or_else(|| format!("{topic}/{partition}/{offset}")),
            partition,
            offset,
        })
        .collect()
}

/// Produces `events` as a steady load in the background: equal slices, one a second,
/// over `seconds`. The task returns where each event landed.
pub fn paced_load(
    brokers: &str,
    topic: &str,
    events: &[Event],
    seconds: usize,
) -> tokio::task::JoinHandle<Vec<Produced>> {
    let (brokers, topic, events) = (brokers.to_owned(), topic.to_owned(), events.to_vec());
    tokio::spawn(async move {
        let producer = producer(&brokers);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut produced: Vec<Produced> = Vec::new();
        for slice in events.chunks(events.len().div_ceil(seconds).max(1)) {
            tick.tick().await;
            produced.extend(produce_events(&producer, &topic, slice).await);
        }
        produced
    })
}

/// The ledger keys the service must end up with once it has read `produced`.
pub fn ledger_keys_of(produced: &[Produced]) -> BTreeSet<String> {
    produced.iter().map(|p| p.key.clone()).collect()
}

/// A seeded stream of events over small alphabets of emails and phones, so that
/// identities overlap and merge. Some events carry an `eventId`, some do not; a few
/// are sent twice (a producer retry: same `eventId`, same payload); some identifiers
/// are written un-normalised (case, spaces, dashes, JSON numbers).
pub struct Workload {
    pub events: Vec<Event>,
    /// Normalised inputs sent through `POST /identify` besides the events; they count
    /// for the model's clusters but have no order id.
    pub http_inputs: Vec<(Option<String>, Option<String>)>,
}

impl Workload {
    pub fn generate(seed: u64, count: usize, alphabet: usize, prefix: &str) -> Workload {
        let mut rng = StdRng::seed_from_u64(seed);
        let mut events: Vec<Event> = Vec::with_capacity(count);
        // Indexes of the events that have an `eventId` (those a producer can retry).
        let mut with_id: Vec<usize> = Vec::new();
        for n in 0..count {
            if n > 10 && rng.gen_bool(0.03) && !with_id.is_empty() {
                let again = events[with_id[rng.gen_range(0..with_id.len())]].clone();
                events.push(again);
                continue;
            }
            let kind = rng.gen_range(0..100);
            let email = (kind < 75).then(|| rng.gen_range(0..alphabet));
            let phone = (kind >= 40).then(|| rng.gen_range(0..alphabet));
            let email_norm = email.map(|k| format!("c{k}@{prefix}.test"));
            let phone_norm = phone.map(|k| format!("55{k:06}"));
            let email_wire = email_norm.as_ref().map(|e| {
                if rng.gen_bool(0.15) {
                    Value::from(format!("  {} ", e.to_uppercase()))
                } else {
                    Value::from(e.clone())
                }
            });
            let phone_wire = phone_norm.as_ref().map(|p| match rng.gen_range(0..10) {
                0 => Value::from(p.parse::<u64>().unwrap()),
                1 => Value::from(format!("{}-{} {}", &p[..2], &p[2..5], &p[5..])),
                _ => Value::from(p.clone()),
            });
            let event_id = rng.gen_bool(0.6).then(|| format!("{prefix}-ev-{n}"));
            let order_id = format!("{prefix}-o-{n}");
            let mut value = json!({"orderId": order_id});
            if let Some(id) = &event_id {
                value["eventId"] = id.clone().into();
            }
            if let Some(e) = email_wire {
                value["email"] = e;
            }
            if let Some(p) = phone_wire {
                value["phoneNumber"] = p;
            }
            if event_id.is_some() {
                with_id.push(events.len());
            }
            events.push(Event {
                value,
                event_id,
                order_id,
                email: email_norm,
                phone: phone_norm,
            });
        }
        Workload {
            events,
            http_inputs: Vec::new(),
        }
    }

    /// Produces every event (keyed by `eventId` where there is one).
    pub async fn produce(&self, producer: &FutureProducer, topic: &str) -> Vec<Produced> {
        produce_events(producer, topic, &self.events).await
    }

    pub fn order_ids(&self) -> BTreeSet<String> {
        self.events.iter().map(|e| e.order_id.clone()).collect()
    }

    /// The model's clusters after every event (the partition of identifiers into
    /// clusters does not depend on the order the events were applied in).
    pub fn model_clusters(&self) -> BTreeSet<BTreeSet<String>> {
        let mut model = Model::default();
        for e in &self.events {
            model.identify(e.email.as_deref(), e.phone.as_deref());
        }
        for (email, phone) in &self.http_inputs {
            model.identify(email.as_deref(), phone.as_deref());
        }
        model.clusters()
    }
}
