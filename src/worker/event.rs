//! Order-contact events: from a Kafka message to a reconciliation request (§6).

use crate::domain::Request;
use crate::domain::{parse_json_object, ContactInput, InputError, InputRules, Origin};
use serde_json::Value;

/// Longest `eventId` / `orderId` accepted.
pub(crate) const MAX_ID_LEN: usize = 256;

/// Where a message was read from; also the idempotency key of events without `eventId`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

impl Source {
    pub fn ledger_key(&self) -> String {
        format!("{}/{}/{}", self.topic, self.partition, self.offset)
    }
}

/// A message of the input topic as the worker handles it once read: its bytes and
/// where it was read, with no Kafka type left in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    /// In the order the producer wrote them; a header may have no value.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub position: Source,
    /// When it was produced (milliseconds since the epoch), where the broker says.
    pub timestamp_ms: Option<i64>,
}

impl Message {
    /// Bytes of its key and value: what `reconcile.max_batch_bytes` counts.
    pub(crate) fn size(&self) -> usize {
        self.value.as_ref().map_or(0, Vec::len) + self.key.as_ref().map_or(0, Vec::len)
    }
}

/// Parses an event value into a request, or says why it must be dead-lettered.
pub fn parse_event(
    value: Option<&[u8]>,
    source: &Source,
    rules: InputRules<'_>,
) -> Result<Request, InputError> {
    let value =
        value.ok_or_else(|| InputError::MalformedJson("the message has no value".into()))?;
    let object = parse_json_object(value)?;
    let event_id = optional_id(&object, "eventId")?;
    let order_id = optional_id(&object, "orderId")?;
    if let Some(occurred_at) = object.get("occurredAt").filter(|v| !v.is_null()) {
        let valid = occurred_at
            .as_str()
            .is_some_and(|s| chrono::DateTime::parse_from_rfc3339(s).is_ok());
        if !valid {
            return Err(InputError::Invalid {
                field: "occurredAt",
                expected: "an RFC 3339 timestamp",
            });
        }
    }
    let input = ContactInput::from_json_object(&object, rules)?;
    let ledger_key = event_id.clone().unwrap_or_else(|| source.ledger_key());
    Ok(Request {
        input,
        origin: Origin::Event {
            event_id,
            order_id,
            ledger_key,
        },
    })
}

/// `eventId` and `orderId`: a non-empty string (an integer is taken as its decimal
/// text), at most `MAX_ID_LEN` characters, without control characters.
fn optional_id(
    object: &serde_json::Map<String, Value>,
    field: &'static str,
) -> Result<Option<String>, InputError> {
    let text = match object.get(field) {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(s)) => s.trim().to_owned(),
        Some(Value::Number(n)) if n.is_u64() || n.is_i64() => n.to_string(),
        Some(_) => {
            return Err(InputError::WrongType(format!(
                "`{field}` must be a string or null"
            )))
        }
    };
    if text.is_empty() {
        return Ok(None);
    }
    if text.chars().count() > MAX_ID_LEN {
        return Err(InputError::TooLong {
            field,
            max: MAX_ID_LEN,
        });
    }
    if text.chars().any(char::is_control) {
        return Err(InputError::Invalid {
            field,
            expected: "text without control characters",
        });
    }
    Ok(Some(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(blocklist: &crate::domain::Blocklist) -> InputRules<'_> {
        InputRules {
            normalization: crate::domain::Normalization::Standard,
            blocklist,
        }
    }

    fn source() -> Source {
        Source {
            topic: "order-contacts".into(),
            partition: 2,
            offset: 7,
        }
    }

    #[test]
    fn the_event_id_is_the_idempotency_key_else_the_message_coordinates() {
        let blocklist = Default::default();
        let with_id = parse_event(
            Some(br#"{"eventId":"e-1","email":"a@x.io"}"#),
            &source(),
            rules(&blocklist),
        )
        .unwrap();
        let without = parse_event(
            Some(br#"{"phoneNumber":5,"extra":[1]}"#),
            &source(),
            rules(&blocklist),
        )
        .unwrap();
        let key = |r: &Request| match &r.origin {
            Origin::Event { ledger_key, .. } => ledger_key.clone(),
            Origin::Http { .. } | Origin::Admin { .. } => unreachable!(),
        };
        assert_eq!(key(&with_id), "e-1");
        assert_eq!(key(&without), "order-contacts/2/7");
    }

    #[test]
    fn unusable_events_say_why() {
        let blocklist = Default::default();
        for (value, code) in [
            (None, "malformed_json"),
            (Some(&b"not json"[..]), "malformed_json"),
            (
                Some(&br#"{"eventId":{"a":1},"email":"a@x.io"}"#[..]),
                "wrong_type",
            ),
            (
                Some(&br#"{"email":"a@x.io","occurredAt":"yesterday"}"#[..]),
                "invalid_value",
            ),
            (Some(&br#"{"orderId":"o-1"}"#[..]), "no_identifier"),
        ] {
            assert_eq!(
                parse_event(value, &source(), rules(&blocklist))
                    .unwrap_err()
                    .code(),
                code
            );
        }
    }
}
