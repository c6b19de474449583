//! `ferrolb-speaker run --source kube` refuses to start without the membership key (the
//! Secret ferrolb-memberlist in its namespace), or with one too short, naming what to fix;
//! against the API emulator (or the cluster named by FERROLB_E2E_KUBECONFIG).

use ferrolb_e2e::emulator::harness::TestCluster;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use std::path::Path;
use std::time::{Duration, Instant};

const SPEAKER: &str = env!("CARGO_BIN_EXE_ferrolb-speaker");

/// Runs the speaker until it exits (at most 15 s); its output.
async fn refused(cluster: &TestCluster, namespace: &str, node: &str) -> String {
    let mut p = cluster
        .spawn(
            Path::new(SPEAKER),
            &[
                "run",
                "--source",
                "kube",
                "--namespace",
                namespace,
                "--node-name",
                node,
            ],
        )
        .unwrap();
    let start = Instant::now();
    while p.is_running() {
        assert!(
            start.elapsed() < Duration::from_secs(15),
            "the speaker did not refuse to start:\n{}",
            p.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    p.log()
}

#[tokio::test]
async fn kube_mode_refuses_to_start_without_a_usable_membership_key() {
    let cluster = TestCluster::start().await.unwrap();
    cluster.apply_ferrolb_crds().await.unwrap();
    let ns = cluster.create_namespace("flb-kb-key-").await.unwrap();
    let node = if cluster.is_real_cluster() {
        Api::<Node>::all(cluster.client())
            .list(&ListParams::default().limit(1))
            .await
            .unwrap()
            .items[0]
            .metadata
            .name
            .clone()
            .unwrap()
    } else {
        let nodes: Api<Node> = Api::all(cluster.client());
        let node: Node =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "node-a"}})).unwrap();
        nodes.create(&PostParams::default(), &node).await.unwrap();
        // Addresses are status: written through the subresource.
        let status = serde_json::json!({"status": {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"}]}});
        nodes
            .patch_status("node-a", &PatchParams::default(), &Patch::Merge(status))
            .await
            .unwrap();
        "node-a".to_string()
    };

    let log = refused(&cluster, &ns, &node).await;
    assert!(
        log.contains(&format!(
            "create the Secret {ns}/ferrolb-memberlist (key secretkey)"
        )) && log.contains("--insecure-membership"),
        "{log}"
    );

    cluster
        .apply_yaml(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: ferrolb-memberlist}\nstringData: {secretkey: short}\n",
            Some(&ns),
        )
        .await
        .unwrap();
    let log = refused(&cluster, &ns, &node).await;
    assert!(
        log.contains("membership key in namespace") && log.contains("at least"),
        "{log}"
    );
    let _ = cluster.delete_namespace(&ns).await;
}
