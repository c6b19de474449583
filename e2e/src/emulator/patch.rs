//! Non-apply patches: JSON patch (RFC 6902), JSON merge patch (RFC 7386) and the subset of
//! strategic merge patch that Kubernetes clients send for the built-in kinds used here.

use serde_json::Value;

use super::error::{ApiError, ApiResult};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchKind {
    Json,
    Merge,
    Strategic,
    Apply,
}

impl PatchKind {
    pub fn from_content_type(content_type: &str) -> Option<Self> {
        let essence = content_type.split(';').next().unwrap_or_default().trim();
        Some(match essence {
            "application/json-patch+json" => Self::Json,
            "application/merge-patch+json" => Self::Merge,
            "application/strategic-merge-patch+json" => Self::Strategic,
            "application/apply-patch+yaml" | "application/apply-patch+json" => Self::Apply,
            _ => return None,
        })
    }
}

pub fn json_patch(target: &mut Value, body: &[u8]) -> ApiResult<()> {
    let patch: json_patch::Patch = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON patch: {e}")))?;
    json_patch::patch(target, &patch).map_err(|e| ApiError {
        code: 422,
        reason: "Invalid",
        message: format!("the server rejected our request due to an error in our request: {e}"),
        details: None,
    })
}

pub fn merge_patch(target: &mut Value, body: &[u8]) -> ApiResult<()> {
    let patch: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON merge patch: {e}")))?;
    json_patch::merge(target, &patch);
    Ok(())
}

/// Merge keys of the lists a strategic merge patch merges instead of replacing.
fn merge_key(path: &str) -> Option<&'static str> {
    match path {
        "spec.ports" => Some("port"),
        "status.conditions" | "status.addresses" => Some("type"),
        "spec.containers" | "spec.initContainers" | "spec.volumes" => Some("name"),
        "metadata.ownerReferences" => Some("uid"),
        _ => None,
    }
}

pub fn strategic_merge_patch(target: &mut Value, body: &[u8]) -> ApiResult<()> {
    let patch: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid strategic merge patch: {e}")))?;
    strategic(target, &patch, "");
    Ok(())
}

fn strategic(target: &mut Value, patch: &Value, path: &str) {
    let Some(patch_map) = patch.as_object() else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Default::default());
    }
    let Some(target_map) = target.as_object_mut() else {
        return;
    };
    for (key, pv) in patch_map {
        if key.starts_with("$setElementOrder/") || key == "$retainKeys" {
            continue;
        }
        let here = if path.is_empty() {
            key.clone()
        } else {
            format!("{path}.{key}")
        };
        match pv {
            Value::Null => {
                target_map.remove(key);
            }
            Value::Object(_) => strategic(
                target_map.entry(key.clone()).or_insert(Value::Null),
                pv,
                &here,
            ),
            Value::Array(items) => match (merge_key(&here), target_map.get_mut(key)) {
                (Some(mk), Some(Value::Array(existing))) => {
                    for item in items {
                        let id = item.get(mk);
                        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
                        match existing.iter().position(|e| e.get(mk) == id) {
                            Some(i) if delete => {
                                existing.remove(i);
                            }
                            Some(i) => strategic(&mut existing[i], item, &here),
                            None if !delete => existing.push(item.clone()),
                            None => {}
                        }
                    }
                }
                _ => {
                    target_map.insert(key.clone(), pv.clone());
                }
            },
            _ => {
                target_map.insert(key.clone(), pv.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn strategic_merges_ports_by_port() {
        let mut svc =
            json!({"spec": {"ports": [{"port": 80, "name": "a"}, {"port": 443, "name": "b"}]}});
        let patch = json!({"spec": {"ports": [{"port": 443, "name": "tls"}, {"port": 8080}]}});
        strategic_merge_patch(&mut svc, patch.to_string().as_bytes()).unwrap();
        assert_eq!(
            svc["spec"]["ports"],
            json!([{"port": 80, "name": "a"}, {"port": 443, "name": "tls"}, {"port": 8080}])
        );
    }

    #[test]
    fn json_patch_test_failure_is_422() {
        let mut obj = json!({"a": 1});
        let err =
            json_patch(&mut obj, br#"[{"op": "test", "path": "/a", "value": 2}]"#).unwrap_err();
        assert_eq!(err.code, 422);
    }
}
