//! Core v1 and `events.k8s.io/v1` Events are one store in two shapes, as in kube-apiserver:
//! objects are stored in the core shape and converted for `events.k8s.io` clients, so an event
//! a kube-rs `Recorder` publishes shows up in `kubectl get events` too.

use serde_json::{Map, Value};

/// (core v1 field, events.k8s.io/v1 field)
const RENAMES: [(&str, &str); 13] = [
    ("involvedObject", "regarding"),
    ("related", "related"),
    ("message", "note"),
    ("reason", "reason"),
    ("type", "type"),
    ("action", "action"),
    ("eventTime", "eventTime"),
    ("series", "series"),
    ("reportingComponent", "reportingController"),
    ("reportingInstance", "reportingInstance"),
    ("source", "deprecatedSource"),
    ("firstTimestamp", "deprecatedFirstTimestamp"),
    ("lastTimestamp", "deprecatedLastTimestamp"),
];

const COUNT: (&str, &str) = ("count", "deprecatedCount");

fn rename(object: &Value, to_events: bool) -> Value {
    let Some(map) = object.as_object() else {
        return object.clone();
    };
    let mut out = Map::new();
    for key in ["apiVersion", "kind", "metadata"] {
        if let Some(v) = map.get(key) {
            out.insert(key.into(), v.clone());
        }
    }
    for (core, events) in RENAMES.iter().chain(std::iter::once(&COUNT)) {
        let (from, to) = if to_events {
            (core, events)
        } else {
            (events, core)
        };
        if let Some(v) = map.get(*from) {
            out.insert(to.to_string(), v.clone());
        }
    }
    Value::Object(out)
}

/// An `events.k8s.io/v1` Event in the stored (core v1) shape.
pub fn to_core(event: &Value) -> Value {
    rename(event, false)
}

/// A stored (core v1) Event as `events.k8s.io/v1` shows it.
pub fn to_events_v1(event: &Value) -> Value {
    rename(event, true)
}

/// Field selector labels of `events.k8s.io/v1`, in the stored shape.
pub fn core_field_label(label: &str) -> String {
    if let Some(rest) = label.strip_prefix("regarding.") {
        return format!("involvedObject.{rest}");
    }
    match label {
        "reportingController" => "reportingComponent".into(),
        other => other.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn round_trips_between_shapes() {
        let v1 = json!({"metadata": {"name": "e"}, "regarding": {"kind": "Service", "name": "s"},
            "note": "assigned", "reportingController": "ferrolb", "series": {"count": 2}, "deprecatedCount": 3});
        let core = to_core(&v1);
        assert_eq!(core["involvedObject"]["name"], "s");
        assert_eq!(core["message"], "assigned");
        assert_eq!(core["reportingComponent"], "ferrolb");
        assert_eq!(core["count"], 3);
        assert_eq!(to_events_v1(&core), v1);
    }
}
