//! `ferrolb-speaker plan`: the node's decision, offline, from the same manifests as file mode.

use serde_json::Value;
use std::process::Command;

const LAB: &str = "apiVersion: v1\nkind: Node\nmetadata: {name: node-a, labels: {l2: \"yes\"}}\n---\napiVersion: v1\nkind: Node\nmetadata: {name: node-b, labels: {l2: \"yes\"}}\n---\napiVersion: v1\nkind: Node\nmetadata: {name: node-c}\n---\napiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: lan}\nspec: {addresses: [192.0.2.0/24]}\n---\napiVersion: ferrolb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: lan}\nspec: {nodeSelectors: [{matchLabels: {l2: \"yes\"}}]}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: vip\n  namespace: kube-system\n  annotations: {ferrolb.io/loadBalancerIPs: 192.0.2.10}\nspec: {type: LoadBalancer, ports: [{port: 6443}]}\n";

fn plan(node: &str, extra: &[&str]) -> (i32, Value) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("lab.yaml"), LAB).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ferrolb-speaker"))
        .args([
            "plan",
            "-f",
            dir.path().to_str().unwrap(),
            "--node",
            node,
            "-o",
            "json",
        ])
        .args(extra)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    (
        out.status.code().unwrap(),
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

#[test]
fn one_owner_one_standby_and_unselected_nodes_stay_out() {
    let (code, a) = plan("node-a", &[]);
    assert_eq!(code, 0, "{a}");
    let (_, b) = plan("node-b", &[]);
    let ranking = a["l2"][0]["ranking"].clone();
    assert_eq!(ranking, b["l2"][0]["ranking"], "both speakers agree");
    assert_eq!(
        ranking.as_array().unwrap().len(),
        2,
        "node-c is not selected"
    );
    let owners = [&a, &b]
        .iter()
        .filter(|p| p["l2"][0]["announcedHere"] == true)
        .count();
    assert_eq!(owners, 1);
    assert_eq!(a["l2"][0]["ip"], "192.0.2.10");
    assert_eq!(a["l2"][0]["interfaces"], serde_json::json!([]));
}

#[test]
fn the_standby_takes_over_when_the_owner_is_not_live() {
    let (_, a) = plan("node-a", &[]);
    let owner = a["l2"][0]["owner"].as_str().unwrap().to_string();
    let other = if owner == "node-a" {
        "node-b"
    } else {
        "node-a"
    };
    let (_, after) = plan(other, &["--live", other]);
    assert_eq!(after["l2"][0]["owner"], other);
    assert_eq!(after["l2"][0]["announcedHere"], true);
}

#[test]
fn unknown_node_and_bad_config_are_errors() {
    let (code, out) = plan("node-z", &[]);
    assert_eq!(code, 1);
    assert_eq!(
        out,
        Value::String("Node/node-z: not found in the manifests\n".into())
    );
}

#[test]
fn metallb_objects_give_the_same_plan() {
    let theirs = LAB.replace(
        "apiVersion: ferrolb.io/v1beta1",
        "apiVersion: metallb.io/v1beta1",
    );
    for node in ["node-a", "node-b"] {
        let (code, ours) = plan(node, &[]);
        assert_eq!(code, 0);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("lab.yaml"), &theirs).unwrap();
        let out = Command::new(env!("CARGO_BIN_EXE_ferrolb-speaker"))
            .args([
                "plan",
                "-f",
                dir.path().to_str().unwrap(),
                "--node",
                node,
                "-o",
                "json",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let theirs: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(ours, theirs, "{node}");
    }
}
