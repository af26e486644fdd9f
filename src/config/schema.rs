//! The JSON Schema of the configuration file (`otpd config-schema`), for editors: built from
//! the shipped defaults as otpd deserializes them, so it names every key with its type and
//! refuses a misspelt one. Tables whose keys are the operator's own names (provider instances,
//! limit rules, signing keys, routes, prices, voices) take any name.

use super::Settings;
use serde_json::{Map, Value, json};

/// The tables keyed by the operator's names, as dotted paths.
const NAMED: [&str; 7] = [
    "amqp.lanes",
    "providers",
    "limits.rules",
    "signing.keys",
    "channels.routes",
    "budget.prices",
    "templates.voices",
];

/// The schema of a configuration file layered over `defaults`. Where the shipped TOML writes
/// a list that the settings hold as one string (a comma-separated list), both forms are
/// allowed.
pub fn schema(defaults: &Settings) -> Value {
    let value = serde_json::to_value(defaults).unwrap_or(Value::Null);
    let shipped: Value = toml::from_str::<toml::Value>(super::DEFAULT_TOML)
        .ok()
        .and_then(|t| serde_json::to_value(t).ok())
        .unwrap_or(Value::Null);
    let mut root = node("", &value, &shipped);
    if let Value::Object(m) = &mut root {
        m.insert(
            "$schema".into(),
            "https://json-schema.org/draft/2020-12/schema".into(),
        );
        m.insert("title".into(), "otpd configuration (TOML)".into());
        m.insert(
            "description".into(),
            "Keys layered over config/default.toml; every key is optional.".into(),
        );
    }
    root
}

fn node(path: &str, v: &Value, shipped: &Value) -> Value {
    match v {
        Value::Object(m) if NAMED.contains(&path) => json!({
            "type": "object",
            "additionalProperties": entry(path, m, shipped),
        }),
        Value::Object(m) => {
            let properties: Map<String, Value> = m
                .iter()
                .map(|(k, v)| (k.clone(), node(&join(path, k), v, &shipped[k])))
                .collect();
            json!({ "type": "object", "additionalProperties": false, "properties": properties })
        }
        Value::String(_) if shipped.is_array() => json!({
            "type": ["string", "array"],
            "items": { "type": "string" },
        }),
        Value::String(_) => json!({ "type": "string" }),
        Value::Bool(_) => json!({ "type": "boolean" }),
        Value::Number(n) if n.is_f64() => json!({ "type": "number" }),
        // A whole number where a float is meant is still a number to TOML's readers.
        Value::Number(_) => json!({ "type": "integer" }),
        Value::Array(items) => match items.first() {
            Some(first) => json!({ "type": "array", "items": node(path, first, &Value::Null) }),
            None => json!({ "type": "array" }),
        },
        Value::Null => json!({}),
    }
}

/// What one entry of a named table may hold: the keys its shipped entries have, with their
/// types, and any other (an entry of another kind has keys of its own).
fn entry(path: &str, entries: &Map<String, Value>, shipped: &Value) -> Value {
    // No shipped entry (signing keys) says nothing of what one holds.
    if entries.is_empty() {
        return json!({});
    }
    let mut properties = Map::new();
    let mut kinds = Vec::new();
    for (name, v) in entries {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    let schema = node(&join(path, k), v, &shipped[name][k]);
                    properties.insert(k.clone(), loosen(schema));
                }
            }
            other => kinds.push(loosen(node(path, other, &Value::Null))),
        }
    }
    match kinds.pop() {
        Some(kind) if properties.is_empty() => kind,
        _ => json!({ "type": "object", "properties": properties }),
    }
}

/// Integers where floats are allowed, so that `price = 1` is a number as TOML readers take it.
fn loosen(mut schema: Value) -> Value {
    if schema["type"] == "number" {
        schema["type"] = json!(["number", "integer"]);
    }
    schema
}

fn join(path: &str, key: &str) -> String {
    match path.is_empty() {
        true => key.to_string(),
        false => format!("{path}.{key}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn validator() -> jsonschema::Validator {
        let defaults = crate::config::load_from_str("").unwrap();
        jsonschema::validator_for(&schema(&defaults)).unwrap()
    }

    fn json(toml_text: &str) -> Value {
        serde_json::to_value(toml::from_str::<toml::Value>(toml_text).unwrap()).unwrap()
    }

    #[test]
    fn the_shipped_defaults_and_named_entries_validate() {
        let v = validator();
        let defaults = json(crate::config::DEFAULT_TOML);
        let errors: Vec<String> = v.iter_errors(&defaults).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}");
        let own = json(
            "[providers.twilio_eu]\nkind = \"twilio\"\naccount_sid = \"AC1\"\n\
             [limits.rules.burst]\nscope = \"phone\"\nper_hour = 3\n\
             [signing.keys]\nk2026 = \"secret\"\n",
        );
        let errors: Vec<String> = v.iter_errors(&own).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn a_misspelt_key_or_a_wrong_type_is_refused() {
        let v = validator();
        assert!(!v.is_valid(&json("[retry]\nattempt_timeout = 5000\n")));
        assert!(!v.is_valid(&json("[retry]\nattempt_timeout_ms = \"5s\"\n")));
        assert!(!v.is_valid(&json("[amqp]\nprefetch = true\n")));
        assert!(v.is_valid(&json("[retry]\nattempt_timeout_ms = 5000\n")));
    }
}
