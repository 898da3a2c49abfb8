//! Generated JSON Schemas in `schemas/` and the backward-compatibility rule that guards them:
//! an event written today must still be readable as the type of tomorrow, so a change may add
//! optional fields but may not remove a field, change its type, or make an optional field required.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::catalog::all_event_types;

/// File name → pretty JSON content, for every file `schemas/` must hold.
pub fn generated_files() -> BTreeMap<String, String> {
    let mut files = BTreeMap::new();
    let mut channels = serde_json::Map::new();
    for info in all_event_types() {
        let mut schema = info.schema.clone();
        if let Some(object) = schema.as_object_mut() {
            object.insert("x-aurora-event-type".into(), json!(info.event_type));
            object.insert("x-aurora-schema-version".into(), json!(info.schema_version));
            object.insert("x-aurora-topic".into(), json!(crate::topics::topic_for_category("", info.category)));
        }
        files.insert(format!("{}.v{}.json", info.event_type, info.schema_version), pretty(&schema));
        let channel = channels.entry(crate::topics::topic_for_category("", info.category)).or_insert_with(|| json!({ "messages": {} }));
        channel["messages"][info.event_type] = json!({
            "name": info.event_type,
            "contentType": crate::cloudevents::CONTENT_TYPE,
            "bindings": { "kafka": { "key": { "type": "string", "description": "stream id" } } },
            "payload": { "$ref": format!("./{}.v{}.json", info.event_type, info.schema_version) },
        });
    }
    let asyncapi = json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "Aurora event log",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "Every topic carries CloudEvents 1.0 in Kafka binary mode: ce_* headers, JSON value, key = stream id."
        },
        "channels": channels,
    });
    files.insert("asyncapi.json".into(), pretty(&asyncapi));
    files
}

fn pretty(value: &Value) -> String {
    let mut text = serde_json::to_string_pretty(value).expect("JSON values always serialize");
    text.push('\n');
    text
}

/// Every way `new` fails to read what `old` described. Empty means backward compatible.
pub fn backward_incompatibilities(old: &Value, new: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    compare_object("", old, new, &mut problems);
    let empty = serde_json::Map::new();
    let old_defs = old.get("$defs").and_then(Value::as_object).unwrap_or(&empty);
    let new_defs = new.get("$defs").and_then(Value::as_object).unwrap_or(&empty);
    for (name, old_def) in old_defs {
        match new_defs.get(name) {
            Some(new_def) => compare_object(&format!("$defs/{name}."), old_def, new_def, &mut problems),
            None => problems.push(format!("definition `{name}` was removed")),
        }
    }
    problems
}

fn compare_object(path: &str, old: &Value, new: &Value, problems: &mut Vec<String>) {
    let empty = serde_json::Map::new();
    let old_properties = old.get("properties").and_then(Value::as_object).unwrap_or(&empty);
    let new_properties = new.get("properties").and_then(Value::as_object).unwrap_or(&empty);
    let required = |schema: &Value| -> Vec<String> {
        schema
            .get("required")
            .and_then(Value::as_array)
            .map(|names| names.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default()
    };
    let old_required = required(old);
    let new_required = required(new);

    for (field, old_field) in old_properties {
        let Some(new_field) = new_properties.get(field) else {
            problems.push(format!("field `{path}{field}` was removed"));
            continue;
        };
        if type_signature(old_field) != type_signature(new_field) {
            problems.push(format!(
                "field `{path}{field}` changed type from {} to {}",
                type_signature(old_field),
                type_signature(new_field)
            ));
        }
        if !old_required.contains(field) && new_required.contains(field) {
            problems.push(format!("optional field `{path}{field}` became required"));
        }
    }
    for field in &new_required {
        if !old_properties.contains_key(field) {
            problems.push(format!("new field `{path}{field}` is required, so events written before it cannot be read"));
        }
    }
}

/// The parts of a property schema that decide which JSON values it accepts.
fn type_signature(schema: &Value) -> String {
    let mut parts = Vec::new();
    for key in ["type", "$ref", "format", "items", "anyOf", "oneOf", "enum"] {
        if let Some(value) = schema.get(key) {
            parts.push(format!("{key}={value}"));
        }
    }
    parts.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema(properties: Value, required: Value) -> Value {
        json!({ "type": "object", "properties": properties, "required": required })
    }

    #[test]
    fn adding_an_optional_field_is_compatible() {
        let old = schema(json!({ "a": { "type": "string" } }), json!(["a"]));
        let new = schema(json!({ "a": { "type": "string" }, "b": { "type": ["string", "null"] } }), json!(["a"]));
        assert!(backward_incompatibilities(&old, &new).is_empty());
    }

    #[test]
    fn removing_retyping_and_requiring_fields_are_not() {
        let old = schema(json!({ "a": { "type": "string" }, "b": { "type": "integer" }, "c": { "type": "string" } }), json!(["a"]));
        let new = schema(json!({ "b": { "type": "string" }, "c": { "type": "string" } }), json!(["c"]));
        let problems = backward_incompatibilities(&old, &new);
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems[0].contains("`a` was removed"));
        assert!(problems[1].contains("`b` changed type"));
        assert!(problems[2].contains("`c` became required"));
    }
}
