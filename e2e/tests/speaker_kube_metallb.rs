//! MetalLB cutover in BGP mode, end to end: MetalLB's own objects (metallb.io IPAddressPool,
//! BGPPeer v1beta2, BGPAdvertisement) in a MetalLB namespace, and Services that MetalLB served
//! (its status and annotations, addresses scattered over the pool). The real
//! `ferrolb-controller` and three `ferrolb-speaker run --source kube`, all with
//! `--metallb-namespace`, against the API emulator; the speakers in the node namespaces of the
//! BGP lab, FRR in the router namespace as the judge.
//!
//! Checked: no Service's address changes; FRR holds every Service's /32 with the three nodes
//! as ECMP next hops; every request a speaker sent is declared (MetalLB-compatible calls
//! included, so deploy/metallb-compat/ grants them). With FERROLB_E2E_KUBECONFIG the network
//! part is skipped; the controller's cutover on a real cluster is
//! controller/tests/controller_run.rs's `metallb_cutover_keeps_every_address_of_a_thousand_services`.

mod kube_common;

use ferrolb_e2e::emulator::harness::TestCluster;
use ferrolb_e2e::emulator::EmulatorConfig;
use ferrolb_e2e::lab::bgp_lab::{node_name, node_v4, BgpLab, CLIENT_V4, ROUTER_V4};
use ferrolb_e2e::lab::bgp_router_view::RouterView;
use ferrolb_e2e::lab::child;
use ferrolb_e2e::lab::l2::LabProcess;
use kube_common::{built, logged_api_calls_with, parent_builds_lab, Env};
use serde_json::json;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

const TEST: &str = "metallb_cutover_in_bgp_mode_keeps_and_announces_every_address";
/// Lab tag: namespaces flb-km-{r,c,n1,n2,n3}, FRR instance flb-km.
const TAG: &str = "km";
const NODES: usize = 3;
/// Services MetalLB served, each with its own address of 203.0.113.0/24.
const SERVICES: usize = 200;

#[test]
fn metallb_cutover_in_bgp_mode_keeps_and_announces_every_address() {
    let real_leaves_out = "the network-namespace part (FRR, BGP sessions, routes) needs the emulator; the controller's cutover on a real cluster is controller_run's metallb_cutover_keeps_every_address_of_a_thousand_services";
    if !parent_builds_lab(TEST, 3, lab_scenario, real_leaves_out, |_, _| async {}) {
        return;
    }
    let started = Instant::now();
    let mut lab = BgpLab::new(TAG, NODES).unwrap();
    lab.start_frr(&frr_conf()).unwrap();
    let result = child::run_in_netns(&lab.client, TEST, Duration::from_secs(120));
    match result {
        Ok(out) => eprintln!("{out}\n{TEST}: {:?}", started.elapsed()),
        Err(e) => panic!("{e}\n{}", lab.frr().log("bgpd")),
    }
    drop(lab);
}

/// The router: AS 64500, eBGP to every node (AS 64512), ECMP.
fn frr_conf() -> String {
    let mut neighbors = String::new();
    let mut activate = String::new();
    for i in 1..=NODES {
        let a = node_v4(i);
        neighbors.push_str(&format!(
            " neighbor {a} remote-as 64512\n neighbor {a} timers connect 1\n"
        ));
        activate.push_str(&format!("  neighbor {a} activate\n"));
    }
    format!(
        "frr defaults datacenter\nhostname router\n!\nrouter bgp 64500\n bgp router-id {ROUTER_V4}\n no bgp ebgp-requires-policy\n bgp bestpath as-path multipath-relax\n{neighbors} address-family ipv4 unicast\n  maximum-paths 8\n{activate} exit-address-family\n!\n"
    )
}

/// MetalLB's address for Service `i`: scattered over the /24 (167 is prime to 256).
fn metallb_ip(i: usize) -> String {
    format!("203.0.113.{}", (i * 167 + 11) % 256)
}

async fn lab_scenario() {
    let speaker = built("ferrolb-speaker");
    let controller = built("ferrolb-controller");
    let router = RouterView::of(TAG);
    let cluster = TestCluster::start_with(EmulatorConfig {
        listen: format!("{CLIENT_V4}:0").parse().unwrap(),
        // Room for the Services' cluster IPs: an RFC 2544 range that never leaves the
        // emulator's memory.
        service_cidrs: vec![
            "198.18.0.0/22".parse().unwrap(),
            "2001:db8:5e7::/112".parse().unwrap(),
        ],
        ..Default::default()
    })
    .await
    .unwrap();
    cluster.apply_metallb_crds().await.expect("MetalLB's CRDs");
    let mut env = Env::start(cluster, "km", &format!("flb-{TAG}-kube")).await;
    let metallb = env
        .cluster
        .create_namespace("flb-km-metallb-")
        .await
        .unwrap();
    env.metallb = Some(metallb.clone());
    let nodes: Vec<String> = (1..=NODES).map(node_name).collect();
    let hops: Vec<String> = (1..=NODES).map(node_v4).collect();
    let addressed: Vec<(String, String)> =
        (1..=NODES).map(|i| (node_name(i), node_v4(i))).collect();
    env.create_nodes(&addressed).await;
    env.membership_secret().await;
    // MetalLB's objects, as its users have them.
    env.apply(
        &format!(
            "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: public}}\nspec: {{addresses: [203.0.113.0/24]}}\n---\n\
             apiVersion: metallb.io/v1beta2\nkind: BGPPeer\nmetadata: {{name: router}}\nspec: {{myASN: 64512, peerASN: 64500, peerAddress: {ROUTER_V4}, connectTime: 1s, holdTime: 9s, keepaliveTime: 0s, passwordSecret: {{}}}}\n---\n\
             apiVersion: metallb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {{name: public}}\nspec: {{ipAddressPools: [public]}}\n"
        ),
        &metallb,
    )
    .await;

    // The Services MetalLB served: its status, its annotations, endpoints on every node.
    for i in 0..SERVICES {
        let name = format!("svc-{i:03}");
        let svc = json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "annotations": {
                "metallb.universe.tf/ip-allocated-from-pool": "public",
            }},
            "spec": {"type": "LoadBalancer", "loadBalancerClass": env.class,
                     "ports": [{"port": 7, "protocol": "UDP"}]},
        });
        env.apply(&serde_yaml::to_string(&svc).unwrap(), &env.apps)
            .await;
        let endpoints: Vec<serde_json::Value> = nodes
            .iter()
            .enumerate()
            .map(|(k, n)| json!({"addresses": [format!("192.0.2.{}", 101 + k)], "nodeName": n, "conditions": {"ready": true}}))
            .collect();
        let slice = json!({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": format!("{name}-1"), "labels": {"kubernetes.io/service-name": name}},
            "addressType": "IPv4", "endpoints": endpoints,
            "ports": [{"port": 7, "protocol": "UDP"}],
        });
        env.apply(&serde_yaml::to_string(&slice).unwrap(), &env.apps)
            .await;
        env.services()
            .patch_status(
                &name,
                &kube::api::PatchParams::default(),
                &kube::api::Patch::Merge(
                    json!({"status": {"loadBalancer": {"ingress": [{"ip": metallb_ip(i)}]}}}),
                ),
            )
            .await
            .unwrap();
    }

    let t0 = Instant::now();
    let _controller = env.start_controller(&format!("flb-{TAG}-c"), &controller);
    let in_netns: Vec<(String, String)> = (1..=NODES)
        .map(|i| (node_name(i), format!("flb-{TAG}-n{i}")))
        .collect();
    let speakers = env.start_speakers(&speaker, &in_netns);

    // Every Service's /32 at FRR over the three nodes.
    let want: Vec<String> = (0..SERVICES)
        .map(|i| format!("{}/32", metallb_ip(i)))
        .collect();
    {
        let (router, want, hops) = (router.clone(), want.clone(), hops.clone());
        let check = std::sync::Arc::new(move || {
            let Ok(table) = router.json("show ip bgp json") else {
                return false;
            };
            let routes = &table["routes"];
            want.iter().all(|prefix| {
                routes[prefix].as_array().is_some_and(|paths| {
                    let mut got: Vec<String> = paths
                        .iter()
                        .filter_map(|p| p["nexthops"][0]["ip"].as_str().map(String::from))
                        .collect();
                    got.sort();
                    got == hops
                })
            })
        });
        env.wait(
            "FRR holds every Service's /32 via the three nodes",
            Duration::from_secs(60),
            || {
                let check = check.clone();
                async move {
                    tokio::task::spawn_blocking(move || check())
                        .await
                        .unwrap()
                        .then_some(())
                }
            },
        )
        .await;
    }
    eprintln!(
        "MetalLB cutover (BGP): {SERVICES} Services' /32s at FRR via {NODES} next hops {:?} after the components started",
        t0.elapsed()
    );

    // No address changed.
    let mut changed = BTreeMap::new();
    for i in 0..SERVICES {
        let name = format!("svc-{i:03}");
        let ips: Vec<String> = env
            .ips(&name)
            .await
            .iter()
            .map(ToString::to_string)
            .collect();
        if ips != [metallb_ip(i)] {
            changed.insert(name, ips);
        }
    }
    assert!(changed.is_empty(), "addresses changed: {changed:?}");

    let logs: Vec<String> = speakers.iter().map(LabProcess::log).collect();
    let calls = logged_api_calls_with(&logs, &env.system, Some(&metallb));
    assert!(
        calls.seen.iter().any(|c| c.1 == "metallb.io"),
        "no request for MetalLB's objects logged: {:?}",
        calls.seen
    );
    calls.assert_all_declared();
    env.delete_namespaces().await;
}
