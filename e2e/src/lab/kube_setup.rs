//! What every kube-mode lab needs, shared by the kube-mode tests and the soak: the controller's
//! and the speakers' command lines, the Node objects with the addresses membership listens on,
//! and the membership Secret.

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;

/// `ferrolb-controller run` in namespace `system` for class `class`, with short leases (3 s,
/// 1 s grace) so that a killed leader is replaced within seconds; `metallb`: the namespace of
/// MetalLB's objects in compatible mode.
pub fn controller_args(
    system: &str,
    class: &str,
    identity: &str,
    metallb: Option<&str>,
) -> Vec<String> {
    [
        "run",
        "--namespace",
        system,
        "--lb-class",
        class,
        "--metrics-addr",
        "127.0.0.1:0",
        "--identity",
        identity,
        "--lease-duration-seconds",
        "3",
        "--lease-grace-seconds",
        "1",
        // On a real cluster the other tests' objects are in other namespaces.
        "--ignore-objects-elsewhere",
    ]
    .map(String::from)
    .into_iter()
    .chain(metallb_args(metallb))
    .collect()
}

/// `ferrolb-speaker run --source kube` in namespace `system` for class `class`.
pub fn speaker_args(system: &str, class: &str, metallb: Option<&str>) -> Vec<String> {
    [
        "run",
        "--source",
        "kube",
        "--namespace",
        system,
        "--lb-class",
        class,
    ]
    .map(String::from)
    .into_iter()
    .chain(metallb_args(metallb))
    .collect()
}

fn metallb_args(metallb: Option<&str>) -> Vec<String> {
    match metallb {
        Some(ns) => vec!["--metallb-namespace".into(), ns.into()],
        None => vec![],
    }
}

/// Creates the Nodes `(name, InternalIP)`, the addresses in their status (membership listens
/// on them; BGP takes them as default router IDs).
pub async fn create_nodes(client: &kube::Client, nodes: &[(String, String)]) -> kube::Result<()> {
    let node_api: Api<Node> = Api::all(client.clone());
    for (name, address) in nodes {
        let node: Node = serde_json::from_value(json!({
            "metadata": {"name": name},
            "status": {"addresses": [{"type": "InternalIP", "address": address}]},
        }))
        .map_err(kube::Error::SerdeError)?;
        node_api.create(&PostParams::default(), &node).await?;
        node_api
            .patch_status(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": node.status})),
            )
            .await?;
    }
    Ok(())
}

/// The Secret with the speakers' membership key, unique to `owner` (a test's short name).
pub fn membership_secret_yaml(owner: &str) -> String {
    format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: ferrolb-memberlist}}\nstringData: {{secretkey: {owner}-test-membership-key-0123456789abcdef}}\n")
}
