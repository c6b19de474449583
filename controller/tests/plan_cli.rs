//! `ferrolb-controller plan`: the operator's answer to "why has my Service no IP?".

use serde_json::Value;
use std::process::Command;

fn plan(yaml: &str, extra: &[&str]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.yaml");
    std::fs::write(&path, yaml).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ferrolb-controller"))
        .args(["plan", "-f", path.to_str().unwrap()])
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
    )
}

const POOLS: &str = "apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: small}\nspec: {addresses: [192.0.2.0/31]}\n---\napiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: v6}\nspec: {addresses: [2001:db8::/64], autoAssign: false}\n";

fn service(name: &str, extra_meta: &str, extra_spec: &str, status_ip: Option<&str>) -> String {
    let status = status_ip.map_or(String::new(), |ip| {
        format!("status:\n  loadBalancer:\n    ingress:\n    - ip: {ip}\n")
    });
    format!("---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: app\n{extra_meta}spec:\n  type: LoadBalancer\n  ports: [{{port: 80}}]\n{extra_spec}{status}")
}

#[test]
fn json_names_ips_pools_and_exact_reasons() {
    let yaml = [
        POOLS.to_string(),
        service("a", "", "", None),
        service("b", "", "", None),
        service("c", "", "", None),
        service("six", "  annotations: {ferrolb.io/address-pool: v6}\n", "  ipFamilies: [IPv6]\n", None),
        service("bad", "  annotations: {ferrolb.io/loadBalancerIPs: nope}\n", "", None),
        "---\napiVersion: v1\nkind: Service\nmetadata: {name: cluster-ip, namespace: app}\nspec: {ports: [{port: 80}]}\n".to_string(),
    ]
    .concat();
    let (code, out) = plan(&yaml, &["-o", "json"]);
    assert_eq!(code, 0, "{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    let services = v["services"].as_array().unwrap();
    assert_eq!(services.len(), 5, "the ClusterIP Service is not ours");
    let by_name = |n: &str| services.iter().find(|s| s["name"] == n).unwrap().clone();
    assert_eq!(by_name("a")["ips"], serde_json::json!(["192.0.2.0"]));
    assert_eq!(by_name("a")["pool"], "small");
    assert_eq!(by_name("b")["ips"], serde_json::json!(["192.0.2.1"]));
    assert_eq!(by_name("c")["ips"], serde_json::json!([]));
    assert_eq!(
        by_name("c")["error"],
        "no IPAddressPool serving this Service has a free IPv4 address (tried small)"
    );
    assert_eq!(by_name("six")["ips"], serde_json::json!(["2001:db8::"]));
    assert_eq!(
        by_name("bad")["error"],
        "Service/app/bad: metadata.annotations[ferrolb.io/loadBalancerIPs]: \"nope\" is not an IP address"
    );
    let pools = v["pools"].as_array().unwrap();
    assert_eq!(pools[0]["name"], "small");
    assert_eq!(pools[0]["assignedIPv4"], 2);
    assert_eq!(pools[0]["availableIPv4"], 0);
    assert_eq!(pools[1]["assignedIPv6"], 1);
    assert_eq!(
        pools[1]["availableIPv6"], "18446744073709551615",
        "exact beyond int64, as a string"
    );
}

#[test]
fn status_is_honoured_so_a_restart_changes_nothing() {
    // "a" sorts first and would get .0 if status were not loaded first.
    let yaml = [
        POOLS.to_string(),
        service("a", "", "", None),
        service("z", "", "", Some("192.0.2.0")),
    ]
    .concat();
    let (_, out) = plan(&yaml, &["-o", "json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["services"][0]["ips"], serde_json::json!(["192.0.2.1"]));
    assert_eq!(v["services"][1]["ips"], serde_json::json!(["192.0.2.0"]));
}

#[test]
fn load_balancer_class_selects_services() {
    let yaml = [
        POOLS.to_string(),
        service("mine", "", "  loadBalancerClass: example.org/lb\n", None),
        service("plain", "", "", None),
    ]
    .concat();
    let (_, out) = plan(&yaml, &["-o", "json", "--lb-class", "example.org/lb"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    let names: Vec<&str> = v["services"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["mine"]);
}

#[test]
fn table_output_and_invalid_configuration() {
    let (code, out) = plan(
        &[POOLS.to_string(), service("a", "", "", None)].concat(),
        &[],
    );
    assert_eq!(code, 0);
    assert!(out.starts_with("NAMESPACE   NAME   IPS         POOL    PROBLEM\napp         a      192.0.2.0   small\n"), "{out}");
    let (code, out) = plan("apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: x}\nspec: {addresses: [nope]}\n", &[]);
    assert_eq!(code, 1);
    assert!(
        out.ends_with("invalid configuration: 1 problems; nothing planned\n"),
        "{out}"
    );
}

/// MetalLB's pools and a Service it served (its status, its annotation spellings) plan the same
/// as FerroLB's: the address stays.
#[test]
fn metallb_objects_and_annotations_plan_the_same() {
    let served = service(
        "served",
        "  annotations: {metallb.universe.tf/ip-allocated-from-pool: small}\n",
        "",
        Some("192.0.2.1"),
    );
    let pinned = service(
        "pinned",
        "  annotations: {metallb.io/address-pool: v6}\n",
        "  ipFamilies: [IPv6]\n",
        None,
    );
    let ours = [POOLS.to_string(), served.clone(), pinned.clone()].concat();
    let theirs = ours.replace(
        "apiVersion: ferrolb.io/v1beta1",
        "apiVersion: metallb.io/v1beta1",
    );
    let (code, a) = plan(&ours, &["-o", "json"]);
    assert_eq!(code, 0, "{a}");
    let (code, b) = plan(&theirs, &["-o", "json"]);
    assert_eq!(code, 0, "{b}");
    assert_eq!(a, b);
    let v: Value = serde_json::from_str(&a).unwrap();
    let text = v.to_string();
    assert!(text.contains("192.0.2.1"), "{text}");
    assert!(text.contains("2001:db8::"), "{text}");
}
