//! The documents generated from the code and committed to the repository, so that
//! clients and operators can read them without running the service: the contracts
//! of `contracts/` and the references of `docs/reference/`.
//! `identity-reconciler contracts` rewrites them; `--check` (and a test) fails when a
//! committed file differs from what the code generates.
//!
//! The OpenAPI document and the two record schemas come from the types that are
//! serialised; the event schema from the parser's rules (the identifier schemas of
//! `POST /identify`, which parses the same way, and the event's own bounds); the
//! dead-letter headers' schema from the header names the worker writes. The
//! references: see [`reference`]; the CLI page, which only the binary can write, is
//! added by the binary's `contracts` command.

mod reference;

use crate::domain::identity::{IdentityRecord, MergeRecord};
use crate::worker::event::MAX_ID_LEN;
use serde_json::{json, Map, Value};
use std::path::Path;
use utoipa::ToSchema;

/// Every generated document: its path from the repository's root, and its content.
///
/// # Panics
/// When the code contradicts itself, e.g. a setting the settings types read is
/// missing from `config/default.toml`; the message names what to fix.
pub fn generated() -> Vec<(&'static str, String)> {
    vec![
        ("contracts/openapi.json", crate::http::openapi_document()),
        (
            "contracts/identity-record.schema.json",
            json_schema::<IdentityRecord>("identity-record", "Identity record"),
        ),
        (
            "contracts/merge-record.schema.json",
            json_schema::<MergeRecord>("merge-record", "Merge record"),
        ),
        ("contracts/event.schema.json", pretty(&event_schema())),
        (
            "contracts/dlq-headers.schema.json",
            pretty(&dlq_headers_schema()),
        ),
        (
            "docs/reference/configuration.md",
            reference::configuration(),
        ),
        ("docs/reference/metrics.md", reference::metrics()),
        ("docs/reference/http-errors.md", reference::http_errors()),
    ]
}

fn pretty(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).expect("JSON serialises");
    text.push('\n');
    text
}

/// The value of a message on the input topic: what `worker::event::parse_event` takes.
fn event_schema() -> Value {
    let mut defs: Map<String, Value> = crate::http::input_schemas()
        .into_iter()
        .map(|(name, schema)| (name.to_owned(), schema))
        .collect();
    let mut identify = defs["IdentifyRequest"].clone();
    // What the event's identifiers refer to; the HTTP-only schemas stay out.
    defs.retain(|name, _| {
        !matches!(
            name.as_str(),
            "IdentifyRequest" | "ForgetRequest" | "QueryEmail" | "QueryPhone"
        )
    });
    relink(&mut identify);
    defs.values_mut().for_each(relink);
    let id = |what: &str| {
        json!({
            "description": format!("{what} Trimmed; the service also accepts an integer (taken as its decimal text); an empty string is absent."),
            "anyOf": [
                {"type": "string", "maxLength": MAX_ID_LEN, "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f]*$"},
                {"type": "integer"},
                {"type": "null"},
            ],
        })
    };
    let mut properties = Map::new();
    properties.insert(
        "eventId".into(),
        id("Idempotency key: an event with an eventId already applied changes nothing and publishes nothing (with different content it is dead-lettered, event_id_conflict)."),
    );
    properties.insert("orderId".into(), id("Echoed in the identity record."));
    let identifiers = identify["properties"]
        .as_object()
        .expect("properties")
        .clone();
    properties.extend(identifiers);
    properties.insert(
        "occurredAt".into(),
        json!({
            "description": "When the order was placed (RFC 3339). Validated, not used for ordering.",
            "type": ["string", "null"],
            "format": "date-time",
        }),
    );
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "urn:identity-reconciler:contracts:event",
        "title": "Order-contact event",
        "description": "The value of a message on the input topic (order-contacts), docs/contract.md §6. Unknown fields are ignored. At least one of email and phoneNumber must be present, non-null, non-blank and not blocked; otherwise the message is dead-lettered (reason no_identifier, blocked, invalid_value, too_long or wrong_type). The idempotency key is eventId when present, else topic/partition/offset. email and phoneNumber are read exactly as POST /identify reads them.",
        "type": "object",
        "properties": properties,
        "anyOf": identify["anyOf"],
        "additionalProperties": true,
        "examples": [{
            "eventId": "e-1",
            "orderId": "o-1",
            "email": "lorraine@hillvalley.edu",
            "phoneNumber": "123456",
            "occurredAt": "2026-11-24T12:00:00Z",
        }],
        "$defs": defs,
    })
}

/// The headers of a dead letter, as an object of header name to UTF-8 value.
fn dlq_headers_schema() -> Value {
    use crate::worker::dlq_header::*;
    let decimal = |description: &str| json!({"description": description, "type": "string", "pattern": "^(0|[1-9][0-9]*)$"});
    let mut properties = Map::new();
    properties.insert(REASON.into(), json!({
        "description": "Why the message was dead-lettered, a stable machine-readable code: malformed_json (not JSON, or no value), wrong_type (not an object, or a field of the wrong type), no_identifier (neither email nor phoneNumber), blocked, too_long, invalid_value (e.g. not an email address, a bad occurredAt), rejected (PostgreSQL refused a value), event_id_conflict (an eventId already applied with different content). Consumers should expect codes added later.",
        "type": "string",
        "pattern": "^[a-z][a-z_]*$",
    }));
    properties.insert(ERROR.into(), json!({
        "description": "A sentence for people. Never contains the rejected value (it may be personal data).",
        "type": "string",
        "minLength": 1,
    }));
    properties.insert(
        SOURCE_TOPIC.into(),
        json!({
            "description": "Topic the message was read from.",
            "type": "string",
            "minLength": 1,
        }),
    );
    properties.insert(
        SOURCE_PARTITION.into(),
        decimal("Partition it was read from, in decimal."),
    );
    properties.insert(
        SOURCE_OFFSET.into(),
        decimal("Offset it was read from, in decimal."),
    );
    properties.insert(TRUNCATED.into(), json!({
        "description": "Only on a truncated copy (the letter did not fit the dead-letter topic; it is kept whole in PostgreSQL, table dead_letter): key, value and headers are cut to worker.dlq_truncated_bytes.",
        "const": "true",
    }));
    properties.insert(
        ORIGINAL_VALUE_BYTES.into(),
        decimal("Only on a truncated copy: the size of the original value in bytes."),
    );
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "urn:identity-reconciler:contracts:dlq-headers",
        "title": "Dead-letter headers",
        "description": "The headers of a message on the dead-letter topic (order-contacts.dlq), as an object of header name to UTF-8 value. A dead letter carries the original message's key, value and headers unchanged, followed by these headers. Where a header name occurs more than once, the last occurrence is the one described here (the original message's own headers come first).",
        "type": "object",
        "properties": properties,
        "required": [REASON, ERROR, SOURCE_TOPIC, SOURCE_PARTITION, SOURCE_OFFSET],
        "additionalProperties": {"type": "string"},
    })
}

/// A standalone JSON Schema (draft 2020-12) of `T`, the schemas it refers to under
/// `$defs`.
fn json_schema<T: ToSchema>(id: &str, title: &str) -> String {
    let mut referenced = Vec::new();
    T::schemas(&mut referenced);
    let defs: Map<String, Value> = referenced
        .into_iter()
        .map(|(name, schema)| (name, to_json(&schema)))
        .collect();
    let mut schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": format!("urn:identity-reconciler:contracts:{id}"),
        "title": title,
    });
    let body = to_json(&T::schema());
    let object = schema.as_object_mut().expect("an object");
    object.extend(body.as_object().expect("an object schema").clone());
    object.insert("$defs".into(), Value::Object(defs));
    pretty(&schema)
}

/// A utoipa schema as JSON, its references pointing into `$defs`.
fn to_json(schema: &impl serde::Serialize) -> Value {
    let mut value = serde_json::to_value(schema).expect("schemas serialise");
    relink(&mut value);
    value
}

fn relink(value: &mut Value) {
    match value {
        Value::Object(object) => {
            if let Some(Value::String(target)) = object.get_mut("$ref") {
                *target = target.replace("#/components/schemas/", "#/$defs/");
            }
            object.values_mut().for_each(relink);
        }
        Value::Array(items) => items.iter_mut().for_each(relink),
        _ => {}
    }
}

/// Writes every generated document under `root`, the repository's root.
pub fn write(root: &Path) -> std::io::Result<()> {
    for (path, content) in generated() {
        let path = root.join(path);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, content)?;
    }
    Ok(())
}

/// The generated documents whose file under `root` is missing or differs from the
/// generated one, by their path from `root`.
pub fn stale(root: &Path) -> Vec<&'static str> {
    generated()
        .into_iter()
        .filter(|(path, content)| {
            std::fs::read_to_string(root.join(path)).ok().as_ref() != Some(content)
        })
        .map(|(path, _)| path)
        .collect()
}
