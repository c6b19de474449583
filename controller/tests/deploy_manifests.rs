//! `deploy/`: every manifest parses strictly into its k8s-openapi type (an unknown or misspelt
//! field fails, where `kubectl apply` would silently drop it), and the controller's RBAC grants
//! exactly the API calls `run` makes (`ferrolb_controller::run::api_calls::API_CALLS`).

use ferrolb_controller::run::api_calls::{Scope, API_CALLS};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

/// Every YAML document of every manifest under `deploy/`, as JSON, with where it came from.
fn documents() -> Vec<(String, Value)> {
    let mut files = Vec::new();
    yaml_files(&deploy_dir(), &mut files);
    let mut docs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for (index, doc) in serde_yaml::Deserializer::from_str(&text).enumerate() {
            let origin = format!("{}#{index}", file.display());
            let value = <serde_yaml::Value as serde::Deserialize>::deserialize(doc)
                .unwrap_or_else(|e| panic!("{origin}: not YAML: {e}"));
            if value.is_null() {
                continue;
            }
            let json: Value = serde_json::to_value(value)
                .unwrap_or_else(|e| panic!("{origin}: not a JSON-compatible document: {e}"));
            docs.push((origin, json));
        }
    }
    docs
}

/// Deserialises `doc` into `T`, failing on any field `T` does not have.
fn strict<T: DeserializeOwned + k8s_openapi::Resource>(doc: &Value) -> Result<T, String> {
    let api_version = doc["apiVersion"].as_str().unwrap_or_default();
    if api_version != T::API_VERSION {
        return Err(format!(
            "apiVersion {api_version:?}, expected {:?} for {}",
            T::API_VERSION,
            T::KIND
        ));
    }
    let mut unknown = Vec::new();
    let parsed: Result<T, _> =
        serde_ignored::deserialize(doc.clone(), |path| unknown.push(field_path(&path)));
    let parsed = parsed.map_err(|e| e.to_string())?;
    if unknown.is_empty() {
        Ok(parsed)
    } else {
        Err(format!("unknown fields: {}", unknown.join(", ")))
    }
}

/// `spec.template.spec.containers[0].image`, as kubectl names a field.
fn field_path(path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path;
    match path {
        Path::Root => String::new(),
        Path::Seq { parent, index } => format!("{}[{index}]", field_path(parent)),
        Path::Map { parent, key } => match field_path(parent) {
            p if p.is_empty() => key.clone(),
            p => format!("{p}.{key}"),
        },
        Path::Some { parent }
        | Path::NewtypeStruct { parent }
        | Path::NewtypeVariant { parent } => field_path(parent),
    }
}

/// Parses one document by its kind; kinds FerroLB does not ship are an error too.
fn check(doc: &Value) -> Result<(), String> {
    let kind = doc["kind"].as_str().unwrap_or_default();
    match kind {
        "Namespace" => strict::<Namespace>(doc).map(drop),
        "ServiceAccount" => strict::<ServiceAccount>(doc).map(drop),
        "ClusterRole" => strict::<ClusterRole>(doc).map(drop),
        "ClusterRoleBinding" => strict::<ClusterRoleBinding>(doc).map(drop),
        "Role" => strict::<Role>(doc).map(drop),
        "RoleBinding" => strict::<RoleBinding>(doc).map(drop),
        "Deployment" => strict::<Deployment>(doc).map(drop),
        "DaemonSet" => strict::<DaemonSet>(doc).map(drop),
        "ConfigMap" => strict::<ConfigMap>(doc).map(drop),
        "Secret" => strict::<Secret>(doc).map(drop),
        "Service" => strict::<Service>(doc).map(drop),
        "CustomResourceDefinition" => strict::<CustomResourceDefinition>(doc).map(drop),
        other => Err(format!(
            "kind {other:?} is not checked by this test; add it"
        )),
    }
}

#[test]
fn every_manifest_in_deploy_parses_strictly() {
    let docs = documents();
    let failures: Vec<String> = docs
        .iter()
        .filter_map(|(origin, doc)| check(doc).err().map(|e| format!("{origin}: {e}")))
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    let kinds: BTreeSet<&str> = docs
        .iter()
        .filter_map(|(_, d)| d["kind"].as_str())
        .collect();
    for expected in [
        "Namespace",
        "Deployment",
        "ClusterRole",
        "Role",
        "CustomResourceDefinition",
    ] {
        assert!(kinds.contains(expected), "no {expected} in deploy/");
    }
}

#[test]
fn a_misspelt_field_fails_the_strict_parse() {
    let doc = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {
            "replica": 2,
            "selector": {"matchLabels": {"a": "b"}},
            "template": {"spec": {"containers": [{"name": "c", "imagePullPolicy": "Always", "imge": "x"}]}}
        }
    });
    let err = check(&doc).unwrap_err();
    assert!(err.contains("spec.replica"), "{err}");
    assert!(
        err.contains("spec.template.spec.containers[0].imge") || err.contains("imge"),
        "{err}"
    );
    let wrong_version = serde_json::json!({"apiVersion": "apps/v1beta1", "kind": "Deployment"});
    assert!(check(&wrong_version).unwrap_err().contains("apiVersion"));
}

fn find<T: DeserializeOwned + k8s_openapi::Resource>(name: &str) -> T {
    documents()
        .into_iter()
        .find(|(_, d)| d["kind"] == T::KIND && d["metadata"]["name"] == name)
        .map(|(origin, d)| strict(&d).unwrap_or_else(|e| panic!("{origin}: {e}")))
        .unwrap_or_else(|| panic!("no {} {name} in deploy/", T::KIND))
}

type Grant = (Scope, String, String, String);

fn grants(rules: &[k8s_openapi::api::rbac::v1::PolicyRule], scope: Scope) -> BTreeSet<Grant> {
    let mut out = BTreeSet::new();
    for rule in rules {
        assert!(
            rule.resource_names.is_none() && rule.non_resource_urls.is_none(),
            "rules are by resource only: {rule:?}"
        );
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                for verb in &rule.verbs {
                    assert_ne!(verb, "*", "no wildcard verbs");
                    assert_ne!(resource, "*", "no wildcard resources");
                    out.insert((scope, group.clone(), resource.clone(), verb.clone()));
                }
            }
        }
    }
    out
}

#[test]
fn rbac_grants_exactly_the_api_calls_the_controller_makes() {
    let cluster_role: ClusterRole = find("ferrolb-controller");
    let role: Role = find("ferrolb-controller");
    let mut granted = grants(
        cluster_role.rules.as_deref().unwrap_or_default(),
        Scope::Cluster,
    );
    granted.extend(grants(
        role.rules.as_deref().unwrap_or_default(),
        Scope::OwnNamespace,
    ));
    let mut used = BTreeSet::new();
    for call in API_CALLS {
        for verb in call.verbs {
            used.insert((
                call.scope,
                call.group.to_string(),
                call.resource.to_string(),
                verb.to_string(),
            ));
        }
    }
    let missing: Vec<&Grant> = used.difference(&granted).collect();
    let unused: Vec<&Grant> = granted.difference(&used).collect();
    assert!(
        missing.is_empty() && unused.is_empty(),
        "RBAC in deploy/controller/rbac.yaml differs from run::api_calls::API_CALLS\n\
         used but not granted: {missing:?}\ngranted but not used: {unused:?}"
    );
}

#[test]
fn the_deployment_runs_two_replicas_as_the_bound_service_account_with_probes() {
    let deployment: Deployment = find("ferrolb-controller");
    let namespace = deployment.metadata.namespace.clone().unwrap();
    let spec = deployment.spec.unwrap();
    assert_eq!(spec.replicas, Some(2));
    let pod = spec.template.spec.unwrap();
    let account = pod.service_account_name.clone().unwrap();

    let role: Role = find("ferrolb-controller");
    assert_eq!(role.metadata.namespace.as_deref(), Some(namespace.as_str()));
    let _: Namespace = find(&namespace);
    let _: ServiceAccount = find(&account);
    let cluster_binding: ClusterRoleBinding = find("ferrolb-controller");
    let binding: RoleBinding = find("ferrolb-controller");
    assert_eq!(
        binding.metadata.namespace.as_deref(),
        Some(namespace.as_str())
    );
    for (subjects, role_ref) in [
        (cluster_binding.subjects, cluster_binding.role_ref),
        (binding.subjects, binding.role_ref),
    ] {
        assert_eq!(role_ref.name, "ferrolb-controller");
        let subjects = subjects.unwrap_or_default();
        assert!(
            subjects.iter().any(|s| s.kind == "ServiceAccount"
                && s.name == account
                && s.namespace.as_deref() == Some(namespace.as_str())),
            "{subjects:?}"
        );
    }

    let container = &pod.containers[0];
    assert_eq!(container.args.as_deref().unwrap()[0], "run");
    let env = container.env.clone().unwrap_or_default();
    for name in ["POD_NAME", "FERROLB_NAMESPACE"] {
        assert!(env.iter().any(|e| e.name == name), "no {name}");
    }
    let port = container.ports.as_ref().unwrap()[0].container_port;
    assert_eq!(port, 7472, "the default --metrics-addr port");
    let probe_path = |p: &Option<k8s_openapi::api::core::v1::Probe>| {
        p.as_ref()
            .and_then(|p| p.http_get.as_ref())
            .and_then(|h| h.path.clone())
    };
    assert_eq!(
        probe_path(&container.liveness_probe).as_deref(),
        Some("/healthz")
    );
    assert_eq!(
        probe_path(&container.readiness_probe).as_deref(),
        Some("/readyz")
    );
    let requests = container
        .resources
        .as_ref()
        .and_then(|r| r.requests.clone())
        .unwrap_or_default();
    assert!(requests.contains_key("cpu") && requests.contains_key("memory"));
}
