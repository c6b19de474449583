//! Field ownership (`metadata.managedFields`) and server-side apply.
//!
//! A field set is a set of leaf paths in the `FieldsV1` vocabulary: `f:<name>` for a map key,
//! `k:<json>` for a list-map element, `v:<json>` for a set member, `.` for "the element itself".
//! Lists are atomic unless the schema (or, for built-in kinds, a small table) says `map`/`set`,
//! which is what decides whether two managers can own different entries of one list.

use std::collections::BTreeSet;

use serde_json::{json, Map, Value};

use super::schema::{list_type, ListType};

pub type Path = Vec<String>;
pub type FieldSet = BTreeSet<Path>;

/// Where list semantics come from while walking an object.
#[derive(Debug, Clone, Copy)]
pub struct Shape<'a> {
    /// The CRD schema node for the current position, if the kind is custom.
    pub schema: Option<&'a Value>,
}

impl<'a> Shape<'a> {
    fn child(&self, key: &str) -> Shape<'a> {
        let schema = self.schema.and_then(|s| {
            s.get("properties")
                .and_then(|p| p.get(key))
                .or_else(|| s.get("additionalProperties").filter(|a| a.is_object()))
        });
        Shape { schema }
    }

    fn items(&self) -> Shape<'a> {
        Shape {
            schema: self.schema.and_then(|s| s.get("items")),
        }
    }

    fn list_type(&self, dotted: &str) -> ListType {
        if let Some(lt) = builtin_list_type(dotted) {
            return lt;
        }
        match self.schema {
            Some(s) => list_type(s),
            None => ListType::Atomic,
        }
    }
}

/// List semantics of the built-in types at the paths FerroLB and its tests write.
fn builtin_list_type(dotted: &str) -> Option<ListType> {
    let keys = |k: &[&str]| ListType::Map(k.iter().map(|s| s.to_string()).collect());
    Some(match dotted {
        "metadata.finalizers" => ListType::Set,
        "metadata.ownerReferences" => keys(&["uid"]),
        "spec.ports" => keys(&["port", "protocol"]),
        "status.conditions" => keys(&["type"]),
        "status.addresses" => keys(&["type"]),
        _ => return None,
    })
}

const SERVER_METADATA: [&str; 10] = [
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
];

/// A list-map key field's value, with the default the server would fill in: an applied
/// configuration that omits a Service port's protocol means TCP, as in structured-merge-diff.
fn key_field(item: &Value, key: &str) -> Value {
    match item.get(key) {
        Some(v) if !v.is_null() => v.clone(),
        _ if key == "protocol" => Value::from("TCP"),
        _ => Value::Null,
    }
}

fn key_segment(item: &Value, keys: &[String]) -> String {
    let key: Map<String, Value> = keys
        .iter()
        .map(|k| (k.clone(), key_field(item, k)))
        .collect();
    format!("k:{}", Value::Object(key))
}

fn join(dotted: &str, key: &str) -> String {
    if dotted.is_empty() {
        key.to_string()
    } else {
        format!("{dotted}.{key}")
    }
}

/// The fields an object (or an applied configuration) sets.
pub fn field_set(object: &Value, shape: Shape<'_>) -> FieldSet {
    let mut out = FieldSet::new();
    let mut prefix = Vec::new();
    collect(object, shape, "", &mut prefix, &mut out);
    out
}

fn collect(value: &Value, shape: Shape<'_>, dotted: &str, prefix: &mut Path, out: &mut FieldSet) {
    let Some(map) = value.as_object() else { return };
    for (key, v) in map {
        if dotted.is_empty() && matches!(key.as_str(), "apiVersion" | "kind") {
            continue;
        }
        if dotted == "metadata" && SERVER_METADATA.contains(&key.as_str()) {
            continue;
        }
        let here = join(dotted, key);
        let child = shape.child(key);
        prefix.push(format!("f:{key}"));
        match v {
            Value::Object(m) if !m.is_empty() => collect(v, child, &here, prefix, out),
            Value::Array(items) => match child.list_type(&here) {
                ListType::Atomic => {
                    out.insert(prefix.clone());
                }
                ListType::Set => {
                    for item in items {
                        let mut p = prefix.clone();
                        p.push(format!("v:{item}"));
                        out.insert(p);
                    }
                }
                ListType::Map(keys) => {
                    for item in items {
                        prefix.push(key_segment(item, &keys));
                        let mut dot = prefix.clone();
                        dot.push(".".into());
                        out.insert(dot);
                        collect(item, child.items(), &here, prefix, out);
                        prefix.pop();
                    }
                }
            },
            _ => {
                out.insert(prefix.clone());
            }
        }
        prefix.pop();
    }
}

fn find_keyed<'v>(items: &'v [Value], seg: &str) -> Option<(usize, &'v Value)> {
    let key: Value = serde_json::from_str(seg.strip_prefix("k:")?).ok()?;
    let key = key.as_object()?;
    items
        .iter()
        .enumerate()
        .find(|(_, item)| key.iter().all(|(k, v)| key_field(item, k) == *v))
}

/// The value at a field path; `.` yields a marker meaning "the element exists".
pub fn value_at(object: &Value, path: &[String]) -> Option<Value> {
    let mut cur = object;
    for seg in path {
        if let Some(name) = seg.strip_prefix("f:") {
            cur = cur.get(name)?;
        } else if seg.starts_with("k:") {
            cur = find_keyed(cur.as_array()?, seg)?.1;
        } else if let Some(v) = seg.strip_prefix("v:") {
            let member: Value = serde_json::from_str(v).ok()?;
            return cur.as_array()?.contains(&member).then_some(member);
        } else if seg == "." {
            return Some(Value::Bool(true));
        }
    }
    Some(cur.clone())
}

/// Removes the field a path names (for `.`, the list element it belongs to).
pub fn remove_path(object: &mut Value, path: &[String]) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    if last == "." {
        if let Some((elem, list_path)) = parents.split_last() {
            remove_path_element(object, list_path, elem);
        }
        return;
    }
    remove_path_element(object, parents, last)
}

fn remove_path_element(object: &mut Value, parents: &[String], last: &str) {
    let mut cur = object;
    for seg in parents {
        let next = if let Some(name) = seg.strip_prefix("f:") {
            cur.get_mut(name)
        } else if seg.starts_with("k:") {
            let idx = cur
                .as_array()
                .and_then(|a| find_keyed(a, seg))
                .map(|(i, _)| i);
            match idx {
                Some(i) => cur.get_mut(i),
                None => None,
            }
        } else {
            None
        };
        match next {
            Some(n) => cur = n,
            None => return,
        }
    }
    if let Some(name) = last.strip_prefix("f:") {
        if let Some(m) = cur.as_object_mut() {
            m.remove(name);
        }
    } else if last.starts_with("k:") {
        let idx = cur
            .as_array()
            .and_then(|a| find_keyed(a, last))
            .map(|(i, _)| i);
        if let (Some(i), Some(a)) = (idx, cur.as_array_mut()) {
            a.remove(i);
        }
    } else if let Some(v) = last.strip_prefix("v:") {
        if let (Ok(member), Some(a)) = (serde_json::from_str::<Value>(v), cur.as_array_mut()) {
            a.retain(|x| *x != member);
        }
    }
}

/// Merges an applied configuration into the live object, honouring list types.
pub fn merge_applied(live: &mut Value, applied: &Value, shape: Shape<'_>, dotted: &str) {
    match (live.as_object_mut(), applied.as_object()) {
        (Some(live_map), Some(applied_map)) => {
            for (key, av) in applied_map {
                let here = join(dotted, key);
                let child = shape.child(key);
                match live_map.get_mut(key) {
                    Some(lv) if lv.is_object() && av.is_object() => {
                        merge_applied(lv, av, child, &here)
                    }
                    Some(Value::Array(live_items)) if av.is_array() => {
                        let applied_items = av.as_array().cloned().unwrap_or_default();
                        match child.list_type(&here) {
                            ListType::Atomic => *live_items = applied_items,
                            ListType::Set => {
                                for item in applied_items {
                                    if !live_items.contains(&item) {
                                        live_items.push(item);
                                    }
                                }
                            }
                            ListType::Map(keys) => {
                                for item in applied_items {
                                    let seg = key_segment(&item, &keys);
                                    match find_keyed(live_items, &seg).map(|(i, _)| i) {
                                        Some(i) => merge_applied(
                                            &mut live_items[i],
                                            &item,
                                            child.items(),
                                            &here,
                                        ),
                                        None => live_items.push(item),
                                    }
                                }
                            }
                        }
                    }
                    _ => {
                        live_map.insert(key.clone(), av.clone());
                    }
                }
            }
        }
        _ => *live = applied.clone(),
    }
}

/// `.spec.ports[port=80,protocol="TCP"].name`, as conflict messages print paths.
pub fn display(path: &[String]) -> String {
    let mut out = String::new();
    for seg in path {
        if let Some(name) = seg.strip_prefix("f:") {
            out.push('.');
            out.push_str(name);
        } else if let Some(k) = seg.strip_prefix("k:") {
            let key: Value = serde_json::from_str(k).unwrap_or(Value::Null);
            let parts: Vec<String> = key
                .as_object()
                .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
                .unwrap_or_default();
            out.push_str(&format!("[{}]", parts.join(",")));
        } else if let Some(v) = seg.strip_prefix("v:") {
            out.push_str(&format!("[={v}]"));
        }
    }
    out
}

/// One `managedFields` entry.
#[derive(Debug, Clone)]
pub struct Entry {
    pub manager: String,
    pub operation: String,
    pub subresource: String,
    pub api_version: String,
    pub time: String,
    pub fields: FieldSet,
}

fn tree(fields: &FieldSet) -> Value {
    let mut root = Map::new();
    for path in fields {
        let mut cur = &mut root;
        for seg in path {
            let next = cur
                .entry(seg.clone())
                .or_insert_with(|| Value::Object(Map::new()));
            cur = match next.as_object_mut() {
                Some(m) => m,
                None => break,
            };
        }
    }
    Value::Object(root)
}

fn untree(node: &Value, prefix: &mut Path, out: &mut FieldSet) {
    let Some(map) = node.as_object() else { return };
    for (seg, child) in map {
        prefix.push(seg.clone());
        if child.as_object().is_none_or(Map::is_empty) {
            out.insert(prefix.clone());
        } else {
            untree(child, prefix, out);
        }
        prefix.pop();
    }
}

pub fn read_entries(object: &Value) -> Vec<Entry> {
    let Some(items) = object["metadata"]["managedFields"].as_array() else {
        return Vec::new();
    };
    items
        .iter()
        .map(|e| {
            let mut fields = FieldSet::new();
            untree(&e["fieldsV1"], &mut Vec::new(), &mut fields);
            Entry {
                manager: e["manager"].as_str().unwrap_or_default().into(),
                operation: e["operation"].as_str().unwrap_or("Update").into(),
                subresource: e["subresource"].as_str().unwrap_or_default().into(),
                api_version: e["apiVersion"].as_str().unwrap_or_default().into(),
                time: e["time"].as_str().unwrap_or_default().into(),
                fields,
            }
        })
        .collect()
}

pub fn write_entries(object: &mut Value, entries: &[Entry]) {
    let items: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.is_empty())
        .map(|e| {
            let mut v = json!({
                "manager": e.manager,
                "operation": e.operation,
                "apiVersion": e.api_version,
                "time": e.time,
                "fieldsType": "FieldsV1",
                "fieldsV1": tree(&e.fields),
            });
            if !e.subresource.is_empty() {
                v["subresource"] = Value::from(e.subresource.clone());
            }
            v
        })
        .collect();
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        if items.is_empty() {
            meta.remove("managedFields");
        } else {
            meta.insert("managedFields".into(), Value::Array(items));
        }
    }
}

/// Keeps only what a write through `subresource` may own: status for `/status`, the rest otherwise.
pub fn restrict(fields: FieldSet, subresource: &str, has_status: bool) -> FieldSet {
    let is_status = |p: &Path| p.first().is_some_and(|s| s == "f:status");
    match (subresource, has_status) {
        ("status", _) => fields.into_iter().filter(is_status).collect(),
        (_, true) => fields.into_iter().filter(|p| !is_status(p)).collect(),
        _ => fields,
    }
}

/// Who wrote and what.
#[derive(Debug, Clone)]
pub struct Writer<'a> {
    pub manager: &'a str,
    pub subresource: &'a str,
    pub api_version: &'a str,
    pub time: &'a str,
    pub has_status: bool,
}

/// Records an Update (create, PUT, or non-apply patch): the writer takes the fields it changed,
/// and fields that disappeared are nobody's any more.
pub fn track_update(old: Option<&Value>, new: &mut Value, writer: &Writer<'_>, shape: Shape<'_>) {
    let mut entries = old.map(read_entries).unwrap_or_default();
    let new_fields = restrict(field_set(new, shape), writer.subresource, writer.has_status);
    let old_fields = old
        .map(|o| restrict(field_set(o, shape), writer.subresource, writer.has_status))
        .unwrap_or_default();
    let changed: FieldSet = new_fields
        .iter()
        .filter(|p| old.is_none_or(|o| value_at(o, p) != value_at(new, p)))
        .cloned()
        .collect();
    let removed: FieldSet = old_fields.difference(&new_fields).cloned().collect();
    if changed.is_empty() && removed.is_empty() {
        write_entries(new, &entries);
        return;
    }
    for e in entries.iter_mut() {
        e.fields
            .retain(|p| !changed.contains(p) && !removed.contains(p));
    }
    let mine = entries.iter().position(|e| {
        e.manager == writer.manager
            && e.operation == "Update"
            && e.subresource == writer.subresource
    });
    let idx = match mine {
        Some(i) => i,
        None => {
            entries.push(Entry {
                manager: writer.manager.into(),
                operation: "Update".into(),
                subresource: writer.subresource.into(),
                api_version: writer.api_version.into(),
                time: String::new(),
                fields: FieldSet::new(),
            });
            entries.len() - 1
        }
    };
    entries[idx].fields.extend(changed);
    entries[idx].time = writer.time.into();
    entries[idx].api_version = writer.api_version.into();
    write_entries(new, &entries);
}

/// The outcome of merging an apply request.
#[derive(Debug)]
pub enum ApplyOutcome {
    Merged(Value),
    /// (manager, field) pairs in conflict.
    Conflicts(Vec<(String, String)>),
}

/// Server-side apply: conflict detection against other managers, removal of fields this
/// manager stopped applying (unless someone else owns them), then the merge.
pub fn apply(
    live: &Value,
    applied: &Value,
    writer: &Writer<'_>,
    force: bool,
    shape: Shape<'_>,
) -> ApplyOutcome {
    let mut entries = read_entries(live);
    let applied_fields = restrict(
        field_set(applied, shape),
        writer.subresource,
        writer.has_status,
    );
    let is_mine = |e: &Entry| {
        e.manager == writer.manager && e.operation == "Apply" && e.subresource == writer.subresource
    };
    let mut conflicts = Vec::new();
    for e in entries.iter_mut().filter(|e| !is_mine(e)) {
        let clashing: Vec<Path> = e
            .fields
            .intersection(&applied_fields)
            .filter(|p| value_at(applied, p) != value_at(live, p))
            .cloned()
            .collect();
        if force {
            for p in &clashing {
                e.fields.remove(p);
            }
        } else {
            conflicts.extend(clashing.iter().map(|p| (e.manager.clone(), display(p))));
        }
    }
    if !conflicts.is_empty() {
        return ApplyOutcome::Conflicts(conflicts);
    }
    let previously: FieldSet = entries
        .iter()
        .filter(|e| is_mine(e))
        .flat_map(|e| e.fields.iter().cloned())
        .collect();
    let others: FieldSet = entries
        .iter()
        .filter(|e| !is_mine(e))
        .flat_map(|e| e.fields.iter().cloned())
        .collect();
    let mut merged = live.clone();
    for path in previously.difference(&applied_fields) {
        if !others.contains(path) {
            remove_path(&mut merged, path);
        }
    }
    let mut body = applied.clone();
    if let Some(m) = body.as_object_mut() {
        m.remove("apiVersion");
        m.remove("kind");
        if let Some(meta) = m.get_mut("metadata").and_then(Value::as_object_mut) {
            for k in SERVER_METADATA {
                meta.remove(k);
            }
        }
        match (writer.subresource, writer.has_status) {
            ("status", _) => m.retain(|k, _| k == "status"),
            (_, true) => {
                m.remove("status");
            }
            _ => {}
        }
    }
    merge_applied(&mut merged, &body, shape, "");
    entries.retain(|e| !is_mine(e));
    entries.push(Entry {
        manager: writer.manager.into(),
        operation: "Apply".into(),
        subresource: writer.subresource.into(),
        api_version: writer.api_version.into(),
        time: writer.time.into(),
        fields: applied_fields,
    });
    write_entries(&mut merged, &entries);
    ApplyOutcome::Merged(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> Shape<'static> {
        Shape { schema: None }
    }

    #[test]
    fn field_sets_use_list_map_keys_for_ports() {
        let svc = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "a", "labels": {"x": "1"}},
            "spec": {"ports": [{"port": 80, "protocol": "TCP", "name": "http"}]}});
        let set = field_set(&svc, shape());
        let want: Path = vec![
            "f:spec".into(),
            "f:ports".into(),
            r#"k:{"port":80,"protocol":"TCP"}"#.into(),
            "f:name".into(),
        ];
        assert!(set.contains(&want), "{set:?}");
        assert!(set.contains(&vec![
            "f:metadata".to_string(),
            "f:labels".into(),
            "f:x".into()
        ]));
        assert!(!set
            .iter()
            .any(|p| p.contains(&"f:name".to_string()) && p.len() == 2));
    }

    #[test]
    fn fields_v1_round_trips() {
        let obj = json!({"metadata": {"name": "a"}, "spec": {"a": 1, "b": {"c": [1, 2]}}, "status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        let set = field_set(&obj, shape());
        let entries = vec![Entry {
            manager: "m".into(),
            operation: "Apply".into(),
            subresource: String::new(),
            api_version: "v1".into(),
            time: "t".into(),
            fields: set.clone(),
        }];
        let mut holder = json!({"metadata": {}});
        write_entries(&mut holder, &entries);
        assert_eq!(read_entries(&holder)[0].fields, set);
    }

    #[test]
    fn second_manager_conflicts_only_on_differing_values() {
        let writer_a = Writer {
            manager: "a",
            subresource: "",
            api_version: "v1",
            time: "t",
            has_status: false,
        };
        let writer_b = Writer {
            manager: "b",
            ..writer_a.clone()
        };
        let base = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}});
        let ApplyOutcome::Merged(live) = apply(
            &base,
            &json!({"data": {"k": "1", "j": "2"}}),
            &writer_a,
            false,
            shape(),
        ) else {
            panic!("first apply conflicted")
        };
        let same = apply(
            &live,
            &json!({"data": {"k": "1"}}),
            &writer_b,
            false,
            shape(),
        );
        assert!(matches!(same, ApplyOutcome::Merged(_)));
        match apply(
            &live,
            &json!({"data": {"k": "2"}}),
            &writer_b,
            false,
            shape(),
        ) {
            ApplyOutcome::Conflicts(c) => {
                assert_eq!(c, vec![("a".to_string(), ".data.k".to_string())])
            }
            other => panic!("expected a conflict, got {other:?}"),
        }
        let ApplyOutcome::Merged(forced) = apply(
            &live,
            &json!({"data": {"k": "2"}}),
            &writer_b,
            true,
            shape(),
        ) else {
            panic!("force must not conflict")
        };
        assert_eq!(forced["data"], json!({"k": "2", "j": "2"}));
        // a stops applying j: it is removed because nobody else owns it.
        let ApplyOutcome::Merged(after) =
            apply(&forced, &json!({"data": {}}), &writer_a, false, shape())
        else {
            panic!()
        };
        assert_eq!(after["data"], json!({"k": "2"}));
    }
}

#[cfg(test)]
mod port_key_tests {
    use super::*;

    #[test]
    fn applied_port_without_protocol_matches_the_defaulted_live_port() {
        let writer = Writer {
            manager: "kubectl",
            subresource: "",
            api_version: "v1",
            time: "t",
            has_status: true,
        };
        let mut live = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"ports": [{"port": 81, "protocol": "TCP", "targetPort": 81, "nodePort": 30000}], "type": "LoadBalancer"}});
        let entries = vec![Entry {
            manager: "kubectl-client-side-apply".into(),
            operation: "Update".into(),
            subresource: String::new(),
            api_version: "v1".into(),
            time: "t".into(),
            fields: field_set(&live, Shape { schema: None }),
        }];
        write_entries(&mut live, &entries);
        let applied = json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"ports": [{"port": 81}], "type": "LoadBalancer"}});
        match apply(&live, &applied, &writer, false, Shape { schema: None }) {
            ApplyOutcome::Merged(m) => assert_eq!(m["spec"]["ports"].as_array().unwrap().len(), 1),
            ApplyOutcome::Conflicts(c) => panic!("{c:?}"),
        }
    }
}
