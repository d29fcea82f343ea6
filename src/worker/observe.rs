//! What the worker tells about each event: a span naming where the event came from,
//! and a debug line saying what it carries.
//!
//! Events are reconciled in batches, so the per-event span covers what is done per
//! event (parsing, dead-lettering decisions); batch-level lines carry batch sizes.
//! Emails and phone numbers appear only when `log.show_personal_data` is on, and then
//! only masked.

use super::event::{parse_event, Source};
use crate::domain::{Email, InputError, InputRules, Origin, Phone};
use crate::store::Request;

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
