//! Structural-schema handling for custom resources, in the order the apiserver applies it:
//! prune unknown fields, apply defaults, then validate (types, required, enum, bounds,
//! pattern, lengths, list types, formats, anyOf/allOf/oneOf/not). CEL rules run afterwards
//! (see `store.rs`).

use std::collections::{BTreeSet, HashMap};
use std::net::{Ipv4Addr, Ipv6Addr};
use std::sync::{Mutex, OnceLock};

use regex::Regex;
use serde_json::{Map, Value};

use super::error::FieldError;

const TYPES: [&str; 6] = ["object", "array", "string", "integer", "number", "boolean"];

/// The few structural-schema rules worth rejecting a CRD for: unknown or missing types.
pub fn check_structural(schema: &Value, path: &str, errors: &mut Vec<FieldError>) {
    let Some(obj) = schema.as_object() else {
        errors.push(FieldError::invalid(path, schema, "must be an object"));
        return;
    };
    let int_or_string = obj
        .get("x-kubernetes-int-or-string")
        .and_then(Value::as_bool)
        == Some(true);
    let preserve = obj
        .get("x-kubernetes-preserve-unknown-fields")
        .and_then(Value::as_bool)
        == Some(true);
    match obj.get("type").and_then(Value::as_str) {
        Some(t) if !TYPES.contains(&t) => errors.push(FieldError::not_supported(
            &format!("{path}.type"),
            &Value::from(t),
            &TYPES.iter().map(|t| Value::from(*t)).collect::<Vec<_>>(),
        )),
        None if !int_or_string
            && !preserve
            && (obj.contains_key("properties") || obj.contains_key("items")) =>
        {
            errors.push(FieldError::required(&format!("{path}.type")))
        }
        _ => {}
    }
    if let Some(props) = obj.get("properties").and_then(Value::as_object) {
        for (name, sub) in props {
            check_structural(sub, &format!("{path}.properties[{name}]"), errors);
        }
    }
    if let Some(items) = obj.get("items") {
        check_structural(items, &format!("{path}.items"), errors);
    }
    if let Some(pattern) = obj.get("pattern").and_then(Value::as_str) {
        if Regex::new(pattern).is_err() {
            errors.push(FieldError::invalid(
                &format!("{path}.pattern"),
                &Value::from(pattern),
                "must be a valid regular expression",
            ));
        }
    }
}

fn flag(schema: &Value, key: &str) -> bool {
    schema.get(key).and_then(Value::as_bool) == Some(true)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// Drops fields the schema does not know (recording their paths in `unknown`) and fills in
/// defaults, in place. `root` keeps `apiVersion`, `kind` and `metadata`, which the server owns.
pub fn prune_and_default(
    value: &mut Value,
    schema: &Value,
    path: &str,
    root: bool,
    unknown: &mut Vec<String>,
    defaults: bool,
) {
    if flag(schema, "x-kubernetes-int-or-string") {
        return;
    }
    let preserve = flag(schema, "x-kubernetes-preserve-unknown-fields");
    let embedded = flag(schema, "x-kubernetes-embedded-resource");
    match value {
        Value::Object(map) => {
            let props = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            let keys: Vec<String> = map.keys().cloned().collect();
            for key in keys {
                let child_path = join(path, &key);
                if (root || embedded) && matches!(key.as_str(), "apiVersion" | "kind" | "metadata")
                {
                    continue;
                }
                if let Some(sub) = props.and_then(|p| p.get(&key)) {
                    if let Some(v) = map.get_mut(&key) {
                        prune_and_default(v, sub, &child_path, false, unknown, defaults);
                    }
                } else if let Some(sub) = additional.filter(|a| a.is_object()) {
                    if let Some(v) = map.get_mut(&key) {
                        prune_and_default(v, sub, &child_path, false, unknown, defaults);
                    }
                } else if !preserve && additional.and_then(Value::as_bool) != Some(true) {
                    map.remove(&key);
                    unknown.push(child_path);
                }
            }
            if let Some(props) = props.filter(|_| defaults) {
                for (key, sub) in props {
                    let Some(default) = sub.get("default") else {
                        continue;
                    };
                    let missing = match map.get(key) {
                        None => true,
                        Some(Value::Null) => !flag(sub, "nullable"),
                        Some(_) => false,
                    };
                    if missing {
                        let mut v = default.clone();
                        prune_and_default(
                            &mut v,
                            sub,
                            &join(path, key),
                            false,
                            &mut Vec::new(),
                            true,
                        );
                        map.insert(key.clone(), v);
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(sub) = schema.get("items") {
                for (i, item) in items.iter_mut().enumerate() {
                    prune_and_default(item, sub, &format!("{path}[{i}]"), false, unknown, defaults);
                }
            }
        }
        _ => {}
    }
}

fn type_name(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn is_integer(value: &Value) -> bool {
    match value {
        Value::Number(n) => {
            n.is_i64() || n.is_u64() || n.as_f64().is_some_and(|f| f.fract() == 0.0)
        }
        _ => false,
    }
}

fn type_matches(expected: &str, value: &Value) -> bool {
    match expected {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => is_integer(value),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        _ => true,
    }
}

fn regex(pattern: &str) -> Option<Regex> {
    static CACHE: OnceLock<Mutex<HashMap<String, Regex>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut cache = cache.lock().ok()?;
    if let Some(r) = cache.get(pattern) {
        return Some(r.clone());
    }
    let r = Regex::new(pattern).ok()?;
    cache.insert(pattern.to_string(), r.clone());
    Some(r)
}

fn format_ok(format: &str, s: &str) -> bool {
    match format {
        "ipv4" => s.parse::<Ipv4Addr>().is_ok(),
        "ipv6" => s.parse::<Ipv6Addr>().is_ok(),
        "ip" => s.parse::<std::net::IpAddr>().is_ok(),
        "cidr" => s.parse::<ipnet::IpNet>().is_ok(),
        "uuid" => {
            regex("^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
                .is_some_and(|r| r.is_match(s))
        }
        "date-time" => s.parse::<k8s_openapi::jiff::Timestamp>().is_ok(),
        "date" => regex(r"^\d{4}-\d{2}-\d{2}$").is_some_and(|r| r.is_match(s)),
        "mac" => regex("^([0-9a-fA-F]{2}[:-]){5}[0-9a-fA-F]{2}$").is_some_and(|r| r.is_match(s)),
        _ => true,
    }
}

fn number(value: &Value) -> Option<f64> {
    value.as_f64()
}

fn show_number(n: &Value) -> String {
    n.to_string()
}

/// Validates `value` against `schema`, pushing one error per violation (the apiserver reports
/// them all at once).
pub fn validate(
    value: &Value,
    schema: &Value,
    path: &str,
    root: bool,
    errors: &mut Vec<FieldError>,
) {
    if value.is_null() {
        if flag(schema, "nullable") {
            return;
        }
        if let Some(t) = schema.get("type").and_then(Value::as_str) {
            errors.push(FieldError::invalid(
                path,
                &Value::from("null"),
                &format!("{path} in body must be of type {t}: \"null\""),
            ));
        }
        return;
    }
    if flag(schema, "x-kubernetes-int-or-string") {
        if !(value.is_string() || is_integer(value)) {
            errors.push(FieldError::invalid(
                path,
                &Value::from(type_name(value)),
                &format!(
                    "{path} in body must be of type integer-or-string: {}",
                    super::error::show(value)
                ),
            ));
            return;
        }
    } else if let Some(t) = schema.get("type").and_then(Value::as_str) {
        if !type_matches(t, value) {
            errors.push(FieldError::invalid(
                path,
                &Value::from(type_name(value)),
                &format!("{path} in body must be of type {t}: {:?}", type_name(value)),
            ));
            return;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            errors.push(FieldError::not_supported(path, value, allowed));
        }
    }
    if let Some(n) = number(value) {
        if let Some(min) = schema.get("minimum") {
            let exclusive = flag(schema, "exclusiveMinimum");
            let m = min.as_f64().unwrap_or(f64::MIN);
            if (exclusive && n <= m) || n < m {
                let op = if exclusive {
                    "greater than"
                } else {
                    "greater than or equal to"
                };
                errors.push(FieldError::invalid(
                    path,
                    value,
                    &format!("{path} in body should be {op} {}", show_number(min)),
                ));
            }
        }
        if let Some(max) = schema.get("maximum") {
            let exclusive = flag(schema, "exclusiveMaximum");
            let m = max.as_f64().unwrap_or(f64::MAX);
            if (exclusive && n >= m) || n > m {
                let op = if exclusive {
                    "less than"
                } else {
                    "less than or equal to"
                };
                errors.push(FieldError::invalid(
                    path,
                    value,
                    &format!("{path} in body should be {op} {}", show_number(max)),
                ));
            }
        }
        if let Some(k) = schema.get("multipleOf").and_then(Value::as_f64) {
            if k != 0.0 && (n / k).fract() != 0.0 {
                errors.push(FieldError::invalid(
                    path,
                    value,
                    &format!("{path} in body should be a multiple of {k}"),
                ));
            }
        }
        match schema.get("format").and_then(Value::as_str) {
            Some("int32") if is_integer(value) && (n < i32::MIN as f64 || n > i32::MAX as f64) => {
                errors.push(FieldError::invalid(
                    path,
                    value,
                    &format!("{path} in body must be of type int32"),
                ))
            }
            _ => {}
        }
    }
    if let Some(s) = value.as_str() {
        let len = s.chars().count() as u64;
        if let Some(max) = schema.get("maxLength").and_then(Value::as_u64) {
            if len > max {
                errors.push(FieldError::too_long(path, max));
            }
        }
        if let Some(min) = schema.get("minLength").and_then(Value::as_u64) {
            if len < min {
                errors.push(FieldError::invalid(
                    path,
                    value,
                    &format!("{path} in body should be at least {min} chars long"),
                ));
            }
        }
        if let Some(pattern) = schema.get("pattern").and_then(Value::as_str) {
            if let Some(r) = regex(pattern) {
                if !r.is_match(s) {
                    errors.push(FieldError::invalid(
                        path,
                        value,
                        &format!("{path} in body should match '{pattern}'"),
                    ));
                }
            }
        }
        if let Some(format) = schema.get("format").and_then(Value::as_str) {
            if !format_ok(format, s) {
                errors.push(FieldError::invalid(
                    path,
                    value,
                    &format!("{path} in body must be of type {format}: {s:?}"),
                ));
            }
        }
    }
    if let Some(items) = value.as_array() {
        if let Some(max) = schema.get("maxItems").and_then(Value::as_u64) {
            if items.len() as u64 > max {
                errors.push(FieldError::too_many(path, items.len(), max));
            }
        }
        if let Some(min) = schema.get("minItems").and_then(Value::as_u64) {
            if (items.len() as u64) < min {
                errors.push(FieldError::invalid(
                    path,
                    value,
                    &format!("{path} in body should have at least {min} items"),
                ));
            }
        }
        match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
            Some("set") => {
                let mut seen = BTreeSet::new();
                for (i, item) in items.iter().enumerate() {
                    if !seen.insert(item.to_string()) {
                        errors.push(FieldError::duplicate(&format!("{path}[{i}]"), item));
                    }
                }
            }
            Some("map") => {
                let keys: Vec<&str> = schema
                    .get("x-kubernetes-list-map-keys")
                    .and_then(Value::as_array)
                    .map(|k| k.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                let mut seen = BTreeSet::new();
                for (i, item) in items.iter().enumerate() {
                    let key: Map<String, Value> = keys
                        .iter()
                        .map(|k| (k.to_string(), item.get(*k).cloned().unwrap_or(Value::Null)))
                        .collect();
                    let key = Value::Object(key);
                    if !seen.insert(key.to_string()) {
                        errors.push(FieldError::duplicate(&format!("{path}[{i}]"), &key));
                    }
                }
            }
            _ => {}
        }
        if let Some(sub) = schema.get("items") {
            for (i, item) in items.iter().enumerate() {
                validate(item, sub, &format!("{path}[{i}]"), false, errors);
            }
        }
    }
    if let Some(map) = value.as_object() {
        if let Some(required) = schema.get("required").and_then(Value::as_array) {
            for key in required.iter().filter_map(Value::as_str) {
                if !map.contains_key(key) {
                    errors.push(FieldError::required(&join(path, key)));
                }
            }
        }
        if let Some(max) = schema.get("maxProperties").and_then(Value::as_u64) {
            if map.len() as u64 > max {
                errors.push(FieldError::too_many(path, map.len(), max));
            }
        }
        if let Some(min) = schema.get("minProperties").and_then(Value::as_u64) {
            if (map.len() as u64) < min {
                errors.push(FieldError::invalid(
                    path,
                    value,
                    &format!("{path} in body should have at least {min} properties"),
                ));
            }
        }
        let props = schema.get("properties").and_then(Value::as_object);
        let additional = schema.get("additionalProperties").filter(|a| a.is_object());
        for (key, v) in map {
            if root && matches!(key.as_str(), "apiVersion" | "kind" | "metadata") {
                continue;
            }
            if let Some(sub) = props.and_then(|p| p.get(key)).or(additional) {
                validate(v, sub, &join(path, key), false, errors);
            }
        }
    }
    // Value-only combinators (structural schemas forbid types inside them).
    if let Some(all) = schema.get("allOf").and_then(Value::as_array) {
        for sub in all {
            validate(value, sub, path, root, errors);
        }
    }
    let passes = |sub: &Value| {
        let mut e = Vec::new();
        validate(value, sub, path, root, &mut e);
        e.is_empty()
    };
    if let Some(any) = schema.get("anyOf").and_then(Value::as_array) {
        if !any.iter().any(passes) {
            errors.push(FieldError::invalid(
                path,
                value,
                &format!("{path} in body must validate at least one schema (anyOf)"),
            ));
        }
    }
    if let Some(one) = schema.get("oneOf").and_then(Value::as_array) {
        if one.iter().filter(|s| passes(s)).count() != 1 {
            errors.push(FieldError::invalid(
                path,
                value,
                &format!("{path} in body must validate one and only one schema (oneOf)"),
            ));
        }
    }
    if let Some(not) = schema.get("not") {
        if passes(not) {
            errors.push(FieldError::invalid(
                path,
                value,
                &format!("{path} in body must not validate the schema (not)"),
            ));
        }
    }
}

/// The list semantics a schema declares at a path: used by server-side apply to merge lists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListType {
    Atomic,
    Set,
    Map(Vec<String>),
}

pub fn list_type(schema: &Value) -> ListType {
    match schema.get("x-kubernetes-list-type").and_then(Value::as_str) {
        Some("set") => ListType::Set,
        Some("map") => ListType::Map(
            schema
                .get("x-kubernetes-list-map-keys")
                .and_then(Value::as_array)
                .map(|k| {
                    k.iter()
                        .filter_map(|s| s.as_str().map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
        ),
        _ => ListType::Atomic,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "spec": {
                    "type": "object",
                    "required": ["size"],
                    "properties": {
                        "size": {"type": "integer", "minimum": 1},
                        "mode": {"type": "string", "default": "slow"},
                        "note": {"type": "string", "nullable": true},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": true,
                                 "properties": {"known": {"type": "object", "properties": {"a": {"type": "string"}}}}},
                        "either": {"type": "string", "anyOf": [{"pattern": "^a"}, {"pattern": "^b"}]},
                    }
                }
            }
        })
    }

    #[test]
    fn prunes_unknown_fields_but_keeps_preserved_and_map_values() {
        let mut obj = json!({"apiVersion": "x/v1", "kind": "K", "metadata": {"name": "n"}, "top": 1,
            "spec": {"size": 1, "junk": true, "labels": {"a": "b"}, "free": {"anything": 1, "known": {"a": "x", "b": "pruned"}}}});
        let mut unknown = Vec::new();
        prune_and_default(&mut obj, &schema(), "", true, &mut unknown, true);
        unknown.sort();
        assert_eq!(unknown, ["spec.free.known.b", "spec.junk", "top"]);
        assert_eq!(obj["spec"]["labels"]["a"], "b");
        assert_eq!(obj["spec"]["free"]["anything"], 1);
        assert_eq!(obj["spec"]["mode"], "slow");
        assert_eq!(obj["metadata"]["name"], "n");
    }

    #[test]
    fn null_in_a_defaulted_field_takes_the_default_and_nullable_keeps_null() {
        let mut obj = json!({"spec": {"size": 1, "mode": null, "note": null}});
        prune_and_default(&mut obj, &schema(), "", true, &mut Vec::new(), true);
        assert_eq!(obj["spec"]["mode"], "slow");
        let mut errors = Vec::new();
        validate(&obj, &schema(), "", true, &mut errors);
        assert!(errors.is_empty(), "{errors:?}");
    }

    #[test]
    fn reports_every_violation_with_its_path() {
        let obj = json!({"spec": {"size": 0, "labels": {"a": 1}, "either": "c"}});
        let mut errors = Vec::new();
        validate(&obj, &schema(), "", true, &mut errors);
        let messages: Vec<String> = errors.iter().map(FieldError::message).collect();
        assert_eq!(messages.len(), 3, "{messages:?}");
        assert!(
            messages.iter().any(|m| m.starts_with(
                "spec.size: Invalid value: 0: spec.size in body should be greater than or equal to 1"
            )),
            "{messages:?}"
        );
        assert!(
            messages
                .iter()
                .any(|m| m.starts_with("spec.labels.a: Invalid value: \"integer\"")),
            "{messages:?}"
        );
        assert!(messages.iter().any(|m| m.contains("anyOf")), "{messages:?}");
        let mut missing = Vec::new();
        validate(&json!({"spec": {}}), &schema(), "", true, &mut missing);
        assert_eq!(missing, [FieldError::required("spec.size")]);
    }
}
