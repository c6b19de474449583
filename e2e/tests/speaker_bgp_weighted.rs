//! Weighted ECMP by endpoints (BGPAdvertisement `weightByEndpoints`) against real FRR: three
//! nodes hold 1, 2 and 3 serving endpoints of an externalTrafficPolicy Local Service; each
//! speaker sends the link bandwidth extended community in proportion; FRR's kernel route gets
//! next-hop weights in that ratio, and UDP flows from many source ports split accordingly at the
//! nodes' echo servers. When the endpoints change, the weights follow without the route going
//! away. Root-only; skips with `SKIP:` otherwise.

use ferrolb_e2e::lab::bgp_lab::{node_name, node_v4, node_v4s, nodes_yaml, BgpLab, ROUTER_V4};
use ferrolb_e2e::lab::{skip, wait_for};
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;

const ECHO: &str = env!("CARGO_BIN_EXE_ferrolb-lab-echo");
const VIP: &str = "203.0.113.40";
const FLOWS: usize = 2000;

/// FRR (AS 64500) peering eBGP with the nodes, multipath over them.
fn frr_conf(nodes: &[usize]) -> String {
    let mut n = String::new();
    let mut act = String::new();
    for a in node_v4s(nodes) {
        n.push_str(&format!(
            " neighbor {a} remote-as 64512\n neighbor {a} timers connect 1\n"
        ));
        act.push_str(&format!("  neighbor {a} activate\n"));
    }
    format!(
        "frr defaults datacenter\nhostname router\n!\nrouter bgp 64500\n bgp router-id {ROUTER_V4}\n no bgp ebgp-requires-policy\n bgp bestpath as-path multipath-relax\n{n} address-family ipv4 unicast\n  maximum-paths 8\n{act} exit-address-family\n!\n"
    )
}

/// The manifests with `endpoints[i]` serving endpoints on node i+1.
fn manifests(endpoints: &[usize]) -> String {
    let mut eps = String::new();
    let mut k = 10;
    for (i, count) in endpoints.iter().enumerate() {
        for _ in 0..*count {
            eps.push_str(&format!(
                "{{addresses: [198.51.100.{k}], nodeName: {}, conditions: {{ready: true}}}}, ",
                node_name(i + 1)
            ));
            k += 1;
        }
    }
    format!(
        "{}apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: public, namespace: ferrolb-system}}\nspec: {{addresses: [203.0.113.0/25]}}\n---\napiVersion: ferrolb.io/v1beta1\nkind: BGPPeer\nmetadata: {{name: router, namespace: ferrolb-system}}\nspec: {{myASN: 64512, peerASN: 64500, peerAddress: {ROUTER_V4}, connectTime: 1s}}\n---\napiVersion: ferrolb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {{name: public, namespace: ferrolb-system}}\nspec: {{ipAddressPools: [public], weightByEndpoints: true}}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: default\n  annotations: {{ferrolb.io/loadBalancerIPs: \"{VIP}\"}}\nspec: {{type: LoadBalancer, externalTrafficPolicy: Local, ports: [{{port: 7, protocol: UDP}}]}}\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: web-1, namespace: default, labels: {{kubernetes.io/service-name: web}}}}\naddressType: IPv4\nendpoints: [{eps}]\nports: [{{port: 7, protocol: UDP}}]\n",
        nodes_yaml(endpoints.len(), |_| String::new())
    )
}

/// The router's kernel route to the VIP: next hop address -> weight.
fn kernel_weights(lab: &BgpLab) -> BTreeMap<String, u64> {
    let out = lab
        .router
        .exec("ip", &["-j", "route", "show", VIP])
        .unwrap_or_default();
    let routes: Value = serde_json::from_str(&out).unwrap_or(Value::Null);
    let mut weights = BTreeMap::new();
    for r in routes.as_array().into_iter().flatten() {
        for hop in r["nexthops"].as_array().into_iter().flatten() {
            if let Some(gw) = hop["gateway"].as_str() {
                weights.insert(gw.to_string(), hop["weight"].as_u64().unwrap_or(1));
            }
        }
    }
    weights
}

/// Waits until the weights of nodes 1..=3 stand in the ratio `want` (FRR scales them to at
/// most 100 and rounds).
fn wait_weights(lab: &BgpLab, want: &[u64]) -> BTreeMap<String, u64> {
    let nodes: Vec<usize> = (1..=want.len()).collect();
    wait_for(Duration::from_secs(30), Duration::from_millis(200), || {
        let w = kernel_weights(lab);
        let got: Vec<u64> = node_v4s(&nodes)
            .iter()
            .map(|a| w.get(a).copied().unwrap_or(0))
            .collect();
        let unit = *got.iter().min()?;
        if unit == 0 {
            return None;
        }
        // FRR scales weights to at most 100 and rounds: compare the ratio within one unit.
        let least = *want.iter().min()? as f64;
        let ok = got.iter().zip(want).all(|(g, w)| {
            let expected = unit as f64 * *w as f64 / least;
            (*g as f64 - expected).abs() <= (want.len() as f64).max(expected * 0.05)
        });
        ok.then_some(w)
    })
    .unwrap_or_else(|| {
        panic!(
            "kernel route to {VIP} never weighted {want:?}: {:?}\n{}",
            kernel_weights(lab),
            lab.logs()
        )
    })
}

/// Flows from fresh source ports, counted by the node that answered.
fn spread(lab: &BgpLab) -> BTreeMap<String, usize> {
    let out = lab
        .client
        .exec(
            ECHO,
            &["spread", &format!("{VIP}:7"), &FLOWS.to_string(), "500"],
        )
        .unwrap();
    out.lines()
        .filter_map(|l| {
            let (name, n) = l.split_once(' ')?;
            Some((name.to_string(), n.parse().ok()?))
        })
        .collect()
}

#[test]
fn ecmp_weights_follow_the_endpoints_on_each_node() {
    let test = "ecmp_weights_follow_the_endpoints_on_each_node";
    if skip(test) {
        return;
    }
    let mut lab = BgpLab::new("bm-w", 3).unwrap();
    lab.start_frr(&frr_conf(&[1, 2, 3])).unwrap();
    lab.write_manifests(&manifests(&[1, 2, 3]));
    for i in 1..=3 {
        lab.start_speaker(i).unwrap();
    }
    lab.serve_echo(&[VIP], std::path::Path::new(ECHO)).unwrap();
    let weights = wait_weights(&lab, &[1, 2, 3]);
    let split = spread(&lab);
    eprintln!("{test}: endpoints 1:2:3, kernel next-hop weights {weights:?}, {FLOWS} flows answered {split:?}");
    assert_eq!(split.get("none"), None, "every flow answered: {split:?}");
    for (i, want) in [(1, 1.0 / 6.0), (2, 2.0 / 6.0), (3, 3.0 / 6.0)] {
        let got = *split.get(&node_name(i)).unwrap_or(&0) as f64 / FLOWS as f64;
        assert!(
            (got - want).abs() <= 0.05,
            "{}: {got:.3} of the flows, want {want:.3} (+-0.05): {split:?}",
            node_name(i)
        );
    }

    // The endpoints move: 3:1:1. The weights follow, and the route never leaves the router.
    let route_gone = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watching = {
        let gone = route_gone.clone();
        let router = lab.router.name().to_string();
        std::thread::spawn(move || {
            for _ in 0..100 {
                let out = std::process::Command::new("ip")
                    .args(["netns", "exec", &router, "ip", "route", "show", VIP])
                    .output();
                if out.map_or(true, |o| o.stdout.is_empty()) {
                    gone.store(true, std::sync::atomic::Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    lab.write_manifests(&manifests(&[3, 1, 1]));
    let weights = wait_weights(&lab, &[3, 1, 1]);
    watching.join().unwrap();
    eprintln!("{test}: endpoints 3:1:1, kernel next-hop weights {weights:?}");
    assert!(
        !route_gone.load(std::sync::atomic::Ordering::SeqCst),
        "the route to {VIP} left the router while its weights changed"
    );
    assert!(weights.contains_key(&node_v4(1)));
}
