//! The committed contracts (`contracts/`): documents generated from the code, kept in
//! the repository so that clients can read them without running the service.
//! `identity-reconciler contracts` rewrites them; `--check` (and a test) fails when a
//! committed file differs from what the code generates.
//!
//! Generated: the OpenAPI document and the schemas of the two records the service
//! publishes, from the types that serialise them. Written by hand: the schemas of the
//! input event and of the dead letters' headers, which the service reads and writes
//! field by field (they are checked against a real pipeline by `tests/contracts.rs`).

use crate::domain::identity::{IdentityRecord, MergeRecord};
use serde_json::{json, Map, Value};
use std::path::Path;
use utoipa::ToSchema;

/// Every generated contract: file name and content.
pub fn generated() -> Vec<(&'static str, String)> {
    vec![
        ("openapi.json", crate::http::openapi_document()),
        (
            "identity-record.schema.json",
            json_schema::<IdentityRecord>("identity-record", "Identity record"),
        ),
        (
            "merge-record.schema.json",
            json_schema::<MergeRecord>("merge-record", "Merge record"),
        ),
    ]
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
    let mut text = serde_json::to_string_pretty(&schema).expect("JSON serialises");
    text.push('\n');
    text
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

/// Writes every contract into `dir`.
pub fn write(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for (name, content) in generated() {
        std::fs::write(dir.join(name), content)?;
    }
    Ok(())
}

/// The contracts whose file in `dir` is missing or differs from the generated one.
pub fn stale(dir: &Path) -> Vec<&'static str> {
    generated()
        .into_iter()
        .filter(|(name, content)| {
            std::fs::read_to_string(dir.join(name)).ok().as_ref() != Some(content)
        })
        .map(|(name, _)| name)
        .collect()
}
