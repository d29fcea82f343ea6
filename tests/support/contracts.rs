//! The committed contracts (`contracts/*.json`) and JSON Schema validation against them.

use super::app::TestApp;
use serde_json::{json, Value};
use std::path::Path;

/// A file of `contracts/`, parsed.
pub fn load(name: &str) -> Value {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("contracts")
        .join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

/// A draft 2020-12 validator that also checks `format` (e.g. `date-time`).
pub fn validator(schema: &Value) -> jsonschema::Validator {
    jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(schema)
        .unwrap_or_else(|e| panic!("not a valid JSON Schema: {e}"))
}

/// Every error `validator` finds in `instance`, as text (empty: valid).
pub fn errors(validator: &jsonschema::Validator, instance: &Value) -> Vec<String> {
    validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

pub fn assert_valid(validator: &jsonschema::Validator, instance: &Value, what: &str) {
    let errors = errors(validator, instance);
    assert!(
        errors.is_empty(),
        "{what} does not match its schema: {errors:#?}\n{instance:#}"
    );
}

/// `GET /openapi.json` of `app`, checked to be served as JSON.
pub async fn served_document(app: &TestApp) -> Value {
    let response = app
        .http
        .get(format!("{}/openapi.json", app.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response.headers()["content-type"].to_str().unwrap(),
        "application/json"
    );
    response.json().await.expect("the document is JSON")
}

/// Follows one local `$ref` (`#/components/...`) in `document`.
pub fn resolve<'a>(document: &'a Value, value: &'a Value) -> &'a Value {
    match value.get("$ref").and_then(Value::as_str) {
        Some(reference) => document
            .pointer(reference.strip_prefix('#').expect("a local reference"))
            .unwrap_or_else(|| panic!("{reference} does not resolve")),
        None => value,
    }
}

/// Checks that `status` is a documented answer of `method path` and that `body`
/// matches the documented JSON schema of that answer.
pub fn assert_documented_answer(
    document: &Value,
    method: &str,
    path: &str,
    status: u16,
    body: &Value,
) {
    let operation = &document["paths"][path][method];
    let response = operation["responses"]
        .get(status.to_string())
        .unwrap_or_else(|| panic!("{method} {path} answered {status}, which is not documented"));
    let response = resolve(document, response);
    let schema = &response["content"]["application/json"]["schema"];
    assert!(
        schema.is_object(),
        "{method} {path} {status} documents no JSON body"
    );
    // The schema is checked in the context of the whole document, so that its
    // `#/components/...` references resolve.
    let mut root = document.clone();
    root["$schema"] = json!("https://json-schema.org/draft/2020-12/schema");
    root["allOf"] = json!([schema]);
    assert_valid(
        &validator(&root),
        body,
        &format!("the {status} answer of {method} {path}"),
    );
}
