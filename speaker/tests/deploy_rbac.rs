//! deploy/speaker/rbac.yaml grants exactly the API calls `run --source kube` makes
//! (`ferrolb_speaker::api_calls::api_calls()`), to the ServiceAccount it binds, in the namespace
//! of that ServiceAccount. The end-to-end test (e2e/tests/speaker_kube.rs) checks the other
//! half: every request the running speaker sends is declared there.

use ferrolb_kube::api_calls::single_grants;
use ferrolb_speaker::api_calls::{api_calls, metallb_compat_calls, Scope};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::Path;

fn documents() -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/speaker/rbac.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            let v = <serde_yaml::Value as serde::Deserialize>::deserialize(doc).unwrap();
            serde_json::to_value(v).unwrap()
        })
        .filter(|v| !v.is_null())
        .collect()
}

fn find<T: serde::de::DeserializeOwned + k8s_openapi::Resource>() -> T {
    let doc = documents()
        .into_iter()
        .find(|d| d["kind"] == T::KIND)
        .unwrap_or_else(|| panic!("no {} in deploy/speaker/rbac.yaml", T::KIND));
    assert_eq!(doc["metadata"]["name"], "ferrolb-speaker", "{doc}");
    serde_json::from_value(doc).unwrap()
}

use ferrolb_e2e::rbac::grants;
type Grant = ferrolb_e2e::rbac::Grant<Scope>;

#[test]
fn rbac_grants_exactly_the_api_calls_the_speaker_makes() {
    let cluster_role: ClusterRole = find();
    let role: Role = find();
    let mut granted = grants(
        cluster_role.rules.as_deref().unwrap_or_default(),
        Scope::Cluster,
    );
    granted.extend(grants(
        role.rules.as_deref().unwrap_or_default(),
        Scope::OwnNamespace,
    ));
    let used: BTreeSet<Grant> = single_grants(&api_calls());
    let missing: Vec<&Grant> = used.difference(&granted).collect();
    let unused: Vec<&Grant> = granted.difference(&used).collect();
    assert!(
        missing.is_empty() && unused.is_empty(),
        "deploy/speaker/rbac.yaml differs from ferrolb_speaker::api_calls::api_calls()\n\
         used but not granted: {missing:?}\ngranted but not used: {unused:?}"
    );
}

#[test]
fn the_bindings_give_the_roles_to_the_speakers_service_account() {
    let account: ServiceAccount = find();
    let namespace = account.metadata.namespace.clone().unwrap();
    let role: Role = find();
    assert_eq!(role.metadata.namespace.as_deref(), Some(namespace.as_str()));
    let cluster_binding: ClusterRoleBinding = find();
    let binding: RoleBinding = find();
    assert_eq!(
        binding.metadata.namespace.as_deref(),
        Some(namespace.as_str())
    );
    for (subjects, role_ref, kind) in [
        (
            cluster_binding.subjects,
            cluster_binding.role_ref,
            "ClusterRole",
        ),
        (binding.subjects, binding.role_ref, "Role"),
    ] {
        assert_eq!(
            (role_ref.kind.as_str(), role_ref.name.as_str()),
            (kind, "ferrolb-speaker")
        );
        let subjects = subjects.unwrap_or_default();
        assert!(
            subjects.iter().any(|s| s.kind == "ServiceAccount"
                && Some(&s.name) == account.metadata.name.as_ref()
                && s.namespace.as_deref() == Some(namespace.as_str())),
            "{subjects:?}"
        );
    }
}

#[test]
fn the_metallb_compat_role_grants_exactly_what_compatible_mode_calls() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/metallb-compat/rbac.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let role: Role = serde_yaml::Deserializer::from_str(&text)
        .map(|doc| {
            let v = <serde_yaml::Value as serde::Deserialize>::deserialize(doc).unwrap();
            serde_json::to_value(v).unwrap()
        })
        .find(|d: &Value| d["kind"] == "Role" && d["metadata"]["name"] == "ferrolb-speaker-metallb")
        .map(|d| serde_json::from_value(d).unwrap())
        .expect("Role ferrolb-speaker-metallb");
    let granted = grants(
        role.rules.as_deref().unwrap_or_default(),
        Scope::MetallbNamespace,
    );
    let used: BTreeSet<Grant> = single_grants(&metallb_compat_calls());
    assert_eq!(granted, used);
}
