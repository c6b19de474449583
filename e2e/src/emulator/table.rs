//! `meta.k8s.io/v1` Table output, which `kubectl get` asks for: the usual columns of the
//! built-in kinds, and a CRD's `additionalPrinterColumns`.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::registry::{Builtin, ResourceType};

struct Column {
    name: String,
    kind: &'static str,
    /// Columns with priority above 0 show only with `-o wide`.
    priority: i64,
    cell: Box<dyn Fn(&Value) -> Value>,
}

fn column(
    name: impl Into<String>,
    kind: &'static str,
    cell: impl Fn(&Value) -> Value + 'static,
) -> Column {
    Column {
        name: name.into(),
        kind,
        priority: 0,
        cell: Box::new(cell),
    }
}

/// Age as kubectl prints it: 45s, 5m10s, 3h, 12d.
pub fn age(timestamp: &Value) -> Value {
    let Some(created) = timestamp
        .as_str()
        .and_then(|s| s.parse::<k8s_openapi::jiff::Timestamp>().ok())
    else {
        return Value::from("<unknown>");
    };
    let secs = (k8s_openapi::jiff::Timestamp::now().as_second() - created.as_second()).max(0);
    Value::from(match secs {
        s if s < 120 => format!("{s}s"),
        s if s < 600 => format!("{}m{}s", s / 60, s % 60),
        s if s < 3 * 3600 => format!("{}m", s / 60),
        s if s < 48 * 3600 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86400),
    })
}

fn creation_age(o: &Value) -> Value {
    age(&o["metadata"]["creationTimestamp"])
}

/// Evaluates the simple JSONPaths printer columns use: `.a.b`, `.a[0].b`.
fn json_path(object: &Value, path: &str) -> Value {
    let mut cur = object;
    for part in path
        .trim_start_matches('.')
        .split('.')
        .filter(|p| !p.is_empty())
    {
        let (field, index) = match part.split_once('[') {
            Some((f, rest)) => (f, rest.trim_end_matches(']').parse::<usize>().ok()),
            None => (part, None),
        };
        cur = &cur[field];
        if let Some(i) = index {
            cur = &cur[i];
        }
    }
    match cur {
        Value::Null => Value::Null,
        Value::String(_) | Value::Number(_) | Value::Bool(_) => cur.clone(),
        other => Value::from(other.to_string()),
    }
}

fn service_ports(o: &Value) -> Value {
    let ports: Vec<String> = o["spec"]["ports"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let proto = p["protocol"].as_str().unwrap_or("TCP");
            match p["nodePort"].as_u64() {
                Some(n) => format!("{}:{n}/{proto}", p["port"]),
                None => format!("{}/{proto}", p["port"]),
            }
        })
        .collect();
    Value::from(if ports.is_empty() {
        "<none>".to_string()
    } else {
        ports.join(",")
    })
}

fn external_ip(o: &Value) -> Value {
    let ingress: Vec<String> = o["status"]["loadBalancer"]["ingress"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|i| {
            i["ip"]
                .as_str()
                .or(i["hostname"].as_str())
                .map(String::from)
        })
        .collect();
    Value::from(match (ingress.is_empty(), o["spec"]["type"].as_str()) {
        (false, _) => ingress.join(","),
        (true, Some("LoadBalancer")) => "<pending>".to_string(),
        _ => "<none>".to_string(),
    })
}

fn columns(rt: &ResourceType) -> Vec<Column> {
    let name = column("Name", "string", |o| o["metadata"]["name"].clone());
    let age_col = || column("Age", "string", creation_age);
    if !rt.printer_columns.is_empty() {
        let mut cols = vec![name];
        for c in &rt.printer_columns {
            let path = c["jsonPath"].as_str().unwrap_or_default().to_string();
            let is_date = c["type"].as_str() == Some("date");
            let title = c["name"].as_str().unwrap_or_default().to_string();
            let mut col = column(title, "string", move |o| {
                let v = json_path(o, &path);
                if is_date {
                    age(&v)
                } else {
                    v
                }
            });
            col.priority = c["priority"].as_i64().unwrap_or(0);
            cols.push(col);
        }
        return cols;
    }
    match rt.builtin() {
        Some(Builtin::Service) => vec![
            name,
            column("Type", "string", |o| o["spec"]["type"].clone()),
            column("Cluster-IP", "string", |o| o["spec"]["clusterIP"].clone()),
            column("External-IP", "string", external_ip),
            column("Port(s)", "string", service_ports),
            age_col(),
        ],
        Some(Builtin::Namespace) => {
            vec![
                name,
                column("Status", "string", |o| o["status"]["phase"].clone()),
                age_col(),
            ]
        }
        Some(Builtin::Lease) => {
            vec![
                name,
                column("Holder", "string", |o| o["spec"]["holderIdentity"].clone()),
                age_col(),
            ]
        }
        Some(Builtin::CustomResourceDefinition) => {
            vec![
                name,
                column("Created At", "string", |o| {
                    o["metadata"]["creationTimestamp"].clone()
                }),
            ]
        }
        _ => vec![name, age_col()],
    }
}

/// A Table of `items`, with the row objects as `includeObject` asks (metadata by default).
pub fn table(
    rt: &ResourceType,
    items: &[Value],
    list_meta: &Value,
    query: &HashMap<String, String>,
) -> Value {
    let columns = columns(rt);
    let definitions: Vec<Value> = columns
        .iter()
        .map(|c| {
            let format = if c.name == "Name" { "name" } else { "" };
            json!({"name": c.name, "type": c.kind, "format": format, "description": "", "priority": c.priority})
        })
        .collect();
    let include = query
        .get("includeObject")
        .map(String::as_str)
        .unwrap_or("Metadata");
    let rows: Vec<Value> = items
        .iter()
        .map(|o| {
            let cells: Vec<Value> = columns.iter().map(|c| (c.cell)(o)).collect();
            let mut row = json!({"cells": cells});
            match include {
                "None" => {}
                "Object" => row["object"] = o.clone(),
                _ => {
                    row["object"] = json!({
                        "kind": "PartialObjectMetadata",
                        "apiVersion": "meta.k8s.io/v1",
                        "metadata": o["metadata"],
                    })
                }
            }
            row
        })
        .collect();
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": list_meta,
        "columnDefinitions": definitions,
        "rows": rows,
    })
}
