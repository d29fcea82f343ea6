//! What the worker tells about each event: a span naming where the event came from,
//! and a debug line saying what it carries.
//!
//! Events are reconciled in batches, so the per-event span covers what is done per
//! event (parsing, dead-lettering decisions); batch-level lines carry batch sizes.
//! Emails and phone numbers appear only when `log.show_personal_data` is on, and then
//! only masked.

use super::event::{parse_event, Message, Source};
use crate::domain::Request;
use crate::domain::{Email, InputError, InputRules, Origin, Phone};
use crate::metrics::METRICS;
use std::collections::HashMap;
use std::sync::Mutex;

/// Partitions whose last statistics showed no lag, by topic and partition: the
/// lag in seconds is reset after two such reports in a row (one full statistics
/// interval caught up), so that a scrape right after a batch still sees its age.
static CAUGHT_UP: Mutex<Option<HashMap<(String, i32), bool>>> = Mutex::new(None);

/// Consumer lag in seconds: when a batch is taken, its first message of each
/// partition is that partition's oldest unconsumed message; its age (now minus its
/// timestamp) is `consumer_lag_seconds{partition}`.
pub(super) fn observe_batch_age<'a>(batch: impl IntoIterator<Item = &'a Message>) {
    let now = chrono::Utc::now().timestamp_millis();
    let mut seen = Vec::new();
    for message in batch {
        let key = (message.position.topic.clone(), message.position.partition);
        if seen.contains(&key) {
            continue;
        }
        if let Some(ms) = message.timestamp_ms {
            METRICS
                .consumer_lag_seconds
                .with_label_values(&[&key.1.to_string()])
                .set((now - ms).max(0) as f64 / 1000.0);
        }
        if let Some(map) = CAUGHT_UP.lock().expect("not poisoned").as_mut() {
            map.remove(&key);
        }
        seen.push(key);
    }
}

/// From the consumer's statistics of one partition: the records lead (the
/// consumer's position minus the log start offset: how many records retention may
/// delete before the consumer falls behind it), and the reset of the lag in seconds
/// once the partition has been caught up for a whole statistics interval.
pub(super) fn observe_partition(
    topic: &str,
    partition: i32,
    app_offset: i64,
    lo_offset: i64,
    lag: i64,
) {
    let label = partition.to_string();
    if app_offset >= 0 && lo_offset >= 0 {
        METRICS
            .consumer_records_lead
            .with_label_values(&[&label])
            .set(app_offset - lo_offset);
    }
    if lag != 0 {
        return;
    }
    let mut guard = CAUGHT_UP.lock().expect("not poisoned");
    let map = guard.get_or_insert_with(HashMap::new);
    let key = (topic.to_owned(), partition);
    if map.insert(key, true) == Some(true) {
        METRICS
            .consumer_lag_seconds
            .with_label_values(&[&label])
            .set(0.0);
    }
}

/// Parses one message inside an `event` span carrying its topic, partition, offset
/// and event id, and logs the outcome at debug level.
pub(super) fn parse_in_span(
    value: Option<&[u8]>,
    source: &Source,
    rules: InputRules<'_>,
    show_personal_data: bool,
) -> Result<Request, InputError> {
    let span = tracing::debug_span!(
        "event",
        topic = %source.topic,
        partition = source.partition,
        offset = source.offset,
        event_id = tracing::field::Empty,
    );
    let _entered = span.enter();
    let parsed = parse_event(value, source, rules);
    match &parsed {
        Ok(request) => {
            if let Origin::Event {
                event_id: Some(id), ..
            } = &request.origin
            {
                span.record("event_id", id.as_str());
            }
            let input = &request.input;
            if show_personal_data {
                let email = input.email().map(Email::masked);
                let phone = input.phone().map(Phone::masked);
                tracing::debug!(
                    email = email.as_deref().unwrap_or("-"),
                    phone = phone.as_deref().unwrap_or("-"),
                    "event parsed"
                );
            } else {
                tracing::debug!(
                    has_email = input.email().is_some(),
                    has_phone = input.phone().is_some(),
                    "event parsed"
                );
            }
        }
        Err(e) => tracing::debug!(reason = e.code(), "event unusable"),
    }
    parsed
}
