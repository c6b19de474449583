//! BGP mode end to end: FRR (zebra + bgpd) in a router namespace, node namespaces each running
//! the real `ferrolb-speaker run --source file:DIR`, a client namespace behind the router (see
//! `lab::bgp_lab`). The judges are FRR's own tables (`vtysh ... json`), the router's kernel
//! routes, and the client's traffic. Root-only; skips with `SKIP:` otherwise.

use ferrolb_e2e::lab::bgp_lab::{
    node_name, node_v4, node_v4s, node_v6, nodes_yaml, BgpLab, ROUTER_V4, ROUTER_V6,
};
use ferrolb_e2e::lab::l2_scenario;
use ferrolb_e2e::lab::probe::{unix_ns, ProbeStream};
use ferrolb_e2e::lab::{skip, wait_for};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

const ECHO: &str = env!("CARGO_BIN_EXE_ferrolb-lab-echo");
const PROBE: &str = env!("CARGO_BIN_EXE_ferrolb-lab-probe");
const SESSION: Duration = Duration::from_secs(20);

fn pool_yaml(addresses: &str) -> String {
    format!("apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: public, namespace: ferrolb-system}}\nspec: {{addresses: [{addresses}]}}\n---\n")
}

/// A LoadBalancer Service asking for `ips` (comma-separated), with `extra` spec fields.
fn service_yaml(name: &str, ips: &str, extra: &str) -> String {
    let dual = if ips.contains(',') {
        "ipFamilyPolicy: RequireDualStack, ipFamilies: [IPv4, IPv6], "
    } else {
        ""
    };
    format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: default\n  annotations: {{ferrolb.io/loadBalancerIPs: \"{ips}\"}}\nspec: {{type: LoadBalancer, {dual}{extra}ports: [{{port: 7, protocol: UDP}}]}}\n---\n")
}

/// An EndpointSlice putting one serving endpoint of Service `svc` on `node`.
fn endpoints_yaml(svc: &str, node: &str) -> String {
    format!("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: {svc}-1, namespace: default, labels: {{kubernetes.io/service-name: {svc}}}}}\naddressType: IPv4\nendpoints: [{{addresses: [198.51.100.50], nodeName: {node}, conditions: {{ready: true}}}}]\nports: [{{port: 7, protocol: UDP}}]\n---\n")
}

/// FRR as the router: our nodes as `neighbors` (address, remote-as and extra lines), ECMP
/// over up to 8 paths, graceful restart (helper and restarting) on.
fn frr_conf(asn: u32, neighbors: &[(String, String, &str)]) -> String {
    let mut n = String::new();
    let mut v6 = String::new();
    for (addr, remote, extra) in neighbors {
        n.push_str(&format!(
            " neighbor {addr} remote-as {remote}\n neighbor {addr} timers connect 1\n"
        ));
        for line in extra.lines().filter(|l| !l.is_empty()) {
            n.push_str(&format!(" neighbor {addr} {line}\n"));
        }
        v6.push_str(&format!("  neighbor {addr} activate\n"));
    }
    let v4 = v6.clone();
    format!(
        "frr defaults datacenter\nhostname router\n!\nrouter bgp {asn}\n bgp router-id {ROUTER_V4}\n no bgp ebgp-requires-policy\n no bgp network import-check\n bgp graceful-restart\n bgp bestpath as-path multipath-relax\n{n} address-family ipv4 unicast\n  maximum-paths 8\n  maximum-paths ibgp 8\n{v4} exit-address-family\n address-family ipv6 unicast\n  maximum-paths 8\n  maximum-paths ibgp 8\n{v6} exit-address-family\n!\n"
    )
}

fn node_v6s(nodes: &[usize]) -> Vec<String> {
    nodes.iter().map(|&i| node_v6(i)).collect()
}

/// FRR (AS `asn`) peering over IPv4 with every node of `nodes`, each with remote AS `remote`
/// (a number, or `internal`).
fn router_conf(asn: u32, nodes: &[usize], remote: &str) -> String {
    let neighbors: Vec<_> = node_v4s(nodes)
        .into_iter()
        .map(|a| (a, remote.to_string(), ""))
        .collect();
    frr_conf(asn, &neighbors)
}

/// Manifests for `n` nodes: the Node objects, an address pool of `pool`, one BGPPeer `router`
/// with `peer_spec` (the inside of its spec mapping) for every node, an advertisement of every
/// pool, then `services`.
fn peer_manifests(n: usize, pool: &str, peer_spec: &str, services: &str) -> String {
    format!(
        "{}{}apiVersion: ferrolb.io/v1beta1\nkind: BGPPeer\nmetadata: {{name: router, namespace: ferrolb-system}}\nspec: {{{peer_spec}}}\n---\napiVersion: ferrolb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {{name: public, namespace: ferrolb-system}}\n---\n{services}",
        nodes_yaml(n, |_| String::new()),
        pool_yaml(pool),
    )
}

/// The BGPPeer spec of the eBGP labs, with graceful restart on or off.
fn graceful_peer(on: bool) -> String {
    format!("myASN: 64512, peerASN: 64500, peerAddress: {ROUTER_V4}, enableGracefulRestart: {on}")
}

/// A lab of `n` nodes peering eBGP (AS 64512) with FRR (AS 64500), `manifests` written and
/// every speaker started.
fn ebgp_lab(tag: &str, n: usize, manifests: &str) -> BgpLab {
    let mut lab = BgpLab::new(tag, n).unwrap();
    let nodes: Vec<usize> = (1..=n).collect();
    lab.start_frr(&router_conf(64500, &nodes, "64512")).unwrap();
    lab.write_manifests(manifests);
    for i in nodes {
        lab.start_speaker(i).unwrap();
    }
    lab
}

/// Asks the echo at `vip` from the client, from a fresh source port each time: the name of
/// the node that answered.
fn ask(lab: &BgpLab, vip: &str) -> Result<String, String> {
    l2_scenario::ask(&lab.client, Path::new(ECHO), vip)
}

#[test]
fn bgp_mode_three_nodes_ecmp_communities_and_local_traffic() {
    let test = "bgp_mode_three_nodes_ecmp_communities_and_local_traffic";
    if skip(test) {
        return;
    }
    let started = Instant::now();
    let mut lab = BgpLab::new("bm-ecmp", 3).unwrap();
    // iBGP, so FRR shows the local preference too.
    let all = [1, 2, 3];
    lab.start_frr(&router_conf(64512, &all, "internal"))
        .unwrap();
    let config = |local_on: usize| {
        format!(
            "{}{}apiVersion: ferrolb.io/v1beta1\nkind: BGPPeer\nmetadata: {{name: router, namespace: ferrolb-system}}\nspec: {{myASN: 64512, dynamicASN: internal, peerAddress: {ROUTER_V4}, holdTime: 9s, dualStackAddressFamily: true}}\n---\napiVersion: ferrolb.io/v1beta1\nkind: Community\nmetadata: {{name: names, namespace: ferrolb-system}}\nspec: {{communities: [{{name: tenant-a, value: \"64512:300\"}}]}}\n---\napiVersion: ferrolb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {{name: public, namespace: ferrolb-system}}\nspec: {{ipAddressPools: [public], localPref: 150, communities: [\"64512:100\", tenant-a, \"large:64512:7:9\"]}}\n---\napiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: agg, namespace: ferrolb-system}}\nspec: {{addresses: [203.0.113.128/25]}}\n---\napiVersion: ferrolb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {{name: agg, namespace: ferrolb-system}}\nspec: {{ipAddressPools: [agg], aggregationLength: 28}}\n---\n{}{}{}{}",
            nodes_yaml(3, |i| format!("rack: r{i}")),
            pool_yaml("203.0.113.0/25, \"2001:db8:ffff::/112\""),
            service_yaml("agg", "203.0.113.130", ""),
            service_yaml("web", "203.0.113.10,2001:db8:ffff::10", ""),
            service_yaml("local", "203.0.113.20", "externalTrafficPolicy: Local, "),
            endpoints_yaml("local", &node_name(local_on)),
        )
    };
    lab.write_manifests(&config(1));
    lab.serve_echo(
        &["203.0.113.10", "2001:db8:ffff::10", "203.0.113.20"],
        Path::new(ECHO),
    )
    .unwrap();
    for i in all {
        lab.start_speaker(i).unwrap();
    }
    lab.wait_established(&node_v4s(&all), SESSION);

    // Cluster traffic policy: every node is a next hop, in FRR's table and in the kernel.
    lab.wait_next_hops("ipv4", "203.0.113.10/32", &node_v4s(&all), SESSION)
        .unwrap();
    // The IPv6 address over the IPv4 sessions, with each node's IPv6 address as next hop.
    lab.wait_next_hops("ipv6", "2001:db8:ffff::10/128", &node_v6s(&all), SESSION)
        .unwrap();
    let path = lab.frr().path("ipv4", "203.0.113.10/32").unwrap();
    assert_eq!(path["community"]["string"], "64512:100 64512:300", "{path}");
    assert_eq!(path["largeCommunity"]["string"], "64512:7:9", "{path}");
    assert_eq!(path["locPrf"], 150, "{path}");
    // An advertisement with aggregationLength 28 announces the /28 around its address.
    lab.wait_next_hops("ipv4", "203.0.113.128/28", &node_v4s(&all), SESSION)
        .unwrap();
    assert!(lab.rib_next_hops("ipv4", "203.0.113.130/32").is_empty());
    let path6 = lab.frr().path("ipv6", "2001:db8:ffff::10/128").unwrap();
    assert_eq!(
        path6["community"]["string"], "64512:100 64512:300",
        "{path6}"
    );

    // The client reaches the address through the router; different flows land on different
    // nodes (layer-4 hashing over the three next hops).
    let mut answered = std::collections::BTreeSet::new();
    for vip in ["203.0.113.10", "2001:db8:ffff::10"] {
        for _ in 0..12 {
            let who = ask(&lab, vip).unwrap_or_else(|e| panic!("{vip}: {e}"));
            answered.insert(who);
        }
    }
    assert!(
        answered.len() >= 2,
        "ECMP spreads flows: only {answered:?} answered"
    );

    // Local traffic policy: only the node with the endpoint, and the route follows it.
    lab.wait_next_hops("ipv4", "203.0.113.20/32", &node_v4s(&[1]), SESSION)
        .unwrap();
    assert_eq!(ask(&lab, "203.0.113.20").as_deref(), Ok("node-1"));
    let moved = Instant::now();
    lab.write_manifests(&config(3));
    lab.wait_next_hops("ipv4", "203.0.113.20/32", &node_v4s(&[3]), SESSION)
        .unwrap();
    eprintln!(
        "ETP Local: endpoint moved node-1 -> node-3, route followed in {:?}",
        moved.elapsed()
    );
    assert_eq!(ask(&lab, "203.0.113.20").as_deref(), Ok("node-3"));
    // The Cluster route was never touched by the change: same three next hops, sessions up
    // since the start (no flap).
    assert_eq!(lab.rib_next_hops("ipv4", "203.0.113.10/32"), node_v4s(&all));
    for a in node_v4s(&all) {
        let v = lab
            .frr()
            .json(&format!("show bgp neighbors {a} json"))
            .unwrap();
        assert_eq!(v[&a]["connectionsEstablished"], 1, "{a}: {}", v[&a]);
    }
    eprintln!("{test}: {:?}", started.elapsed());
}

#[test]
fn bgp_mode_dead_node_is_withdrawn_within_the_hold_time() {
    let test = "bgp_mode_dead_node_is_withdrawn_within_the_hold_time";
    if skip(test) {
        return;
    }
    let all = [1, 2, 3];
    // eBGP; the speakers accept whatever AS the router has (dynamicASN: external).
    let mut lab = ebgp_lab(
        "bm-kill",
        3,
        &peer_manifests(
            3,
            "203.0.113.0/24",
            &format!("myASN: 64512, dynamicASN: external, peerAddress: {ROUTER_V4}, holdTime: 3s"),
            &service_yaml("web", "203.0.113.10", ""),
        ),
    );
    lab.wait_established(&node_v4s(&all), SESSION);
    lab.wait_next_hops("ipv4", "203.0.113.10/32", &node_v4s(&all), SESSION)
        .unwrap();
    let path = lab.frr().path("ipv4", "203.0.113.10/32").unwrap();
    assert_eq!(path["aspath"]["string"], "64512", "{path}");
    let hold = lab
        .frr()
        .json(&format!("show bgp neighbors {} json", node_v4(2)))
        .unwrap()[node_v4(2)]["bgpTimerHoldTimeMsecs"]
        .as_u64();
    assert_eq!(hold, Some(3000), "negotiated hold time");

    // Node 2 dies: its link goes down first (so no FIN ever reaches the router), then its
    // speaker is killed. Only the hold timer can tell the router.
    let t0 = Instant::now();
    lab.node(2).ip(&["link", "set", "eth0", "down"]).unwrap();
    lab.speaker_proc(2).unwrap().kill();
    lab.wait_next_hop_gone(
        "ipv4",
        "203.0.113.10/32",
        &node_v4(2),
        Duration::from_secs(10),
    )
    .unwrap();
    let withdrawn = t0.elapsed();
    eprintln!("dead node withdrawn from RIB and FIB after {withdrawn:?} (hold time 3 s)");
    // The hold time plus scheduling slack: this machine is shared with CPU-heavy jobs.
    assert!(
        withdrawn <= Duration::from_millis(4500),
        "withdrawn after {withdrawn:?}, well beyond the 3 s hold time"
    );
    // The survivors keep (or, after a load-induced flap, regain) their next hops.
    lab.wait_next_hops("ipv4", "203.0.113.10/32", &node_v4s(&[1, 3]), SESSION)
        .unwrap();
}

/// RFC 8950: a node with no IPv4 address announces an IPv4 address over its IPv6 session, with
/// its IPv6 next hop, to a router that negotiates extended next hop.
#[test]
fn bgp_mode_ipv4_address_over_an_ipv6_only_node_with_rfc8950() {
    let test = "bgp_mode_ipv4_address_over_an_ipv6_only_node_with_rfc8950";
    if skip(test) {
        return;
    }
    let mut lab = BgpLab::new("bm-8950", 1).unwrap();
    lab.start_frr(&frr_conf(
        64500,
        &[(node_v6(1), "64512".into(), "capability extended-nexthop")],
    ))
    .unwrap();
    // The Node has an IPv6 InternalIP only: no IPv4 next hop of its own to give.
    lab.write_manifests(&format!(
        "apiVersion: v1\nkind: Node\nmetadata: {{name: {}}}\nstatus: {{addresses: [{{type: InternalIP, address: \"{}\"}}]}}\n---\n{}apiVersion: ferrolb.io/v1beta1\nkind: BGPPeer\nmetadata: {{name: router, namespace: ferrolb-system}}\nspec: {{myASN: 64512, peerASN: 64500, peerAddress: \"{ROUTER_V6}\", connectTime: 1s, routerID: 192.0.2.201, dualStackAddressFamily: true}}\n---\napiVersion: ferrolb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {{name: public, namespace: ferrolb-system}}\n---\n{}",
        node_name(1),
        node_v6(1),
        pool_yaml("203.0.113.0/24"),
        service_yaml("web", "203.0.113.40", ""),
    ));
    lab.start_speaker(1).unwrap();
    lab.wait_established(&[node_v6(1)], SESSION);
    lab.wait_next_hops("ipv4", "203.0.113.40/32", &[node_v6(1)], SESSION)
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.frr().log("bgpd")));
    let v = lab
        .frr()
        .json(&format!("show bgp neighbors {} json", node_v6(1)))
        .unwrap();
    let caps = v[node_v6(1).as_str()]["neighborCapabilities"].to_string();
    assert!(caps.contains("extendedNexthop"), "{caps}");
}

#[test]
fn bgp_mode_ipv6_session_and_md5_from_a_password_secret() {
    let test = "bgp_mode_ipv6_session_and_md5_from_a_password_secret";
    if skip(test) {
        return;
    }
    const RIGHT: &str = "fr0m-the-Secret";
    const WRONG: &str = "n0t-the-Secret";
    let mut lab = BgpLab::new("bm-md5", 2).unwrap();
    // Node 1 peers over IPv6, node 2 over IPv4; FRR expects RIGHT on both.
    lab.start_frr(&frr_conf(
        64500,
        &[
            (node_v6(1), "64512".into(), &format!("password {RIGHT}")),
            (node_v4(2), "64512".into(), &format!("password {RIGHT}")),
        ],
    ))
    .unwrap();
    let config = |node2_password: &str| {
        format!(
            "{}{}apiVersion: v1\nkind: Secret\nmetadata: {{name: router-v6, namespace: ferrolb-system}}\ntype: kubernetes.io/basic-auth\nstringData: {{password: {RIGHT}}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: router-v4, namespace: ferrolb-system}}\ntype: kubernetes.io/basic-auth\nstringData: {{password: {node2_password}}}\n---\napiVersion: ferrolb.io/v1beta1\nkind: BGPPeer\nmetadata: {{name: router-v6, namespace: ferrolb-system}}\nspec: {{myASN: 64512, peerASN: 64500, peerAddress: \"{ROUTER_V6}\", connectTime: 1s, dualStackAddressFamily: true, passwordSecret: {{name: router-v6}}, nodeSelectors: [{{matchLabels: {{transport: ipv6}}}}]}}\n---\napiVersion: ferrolb.io/v1beta1\nkind: BGPPeer\nmetadata: {{name: router-v4, namespace: ferrolb-system}}\nspec: {{myASN: 64512, peerASN: 64500, peerAddress: {ROUTER_V4}, connectTime: 1s, dualStackAddressFamily: true, passwordSecret: {{name: router-v4}}, nodeSelectors: [{{matchLabels: {{transport: ipv4}}}}]}}\n---\napiVersion: ferrolb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {{name: public, namespace: ferrolb-system}}\n---\n{}",
            nodes_yaml(2, |i| format!("transport: ipv{}", if i == 1 { 6 } else { 4 })),
            pool_yaml("203.0.113.0/24, \"2001:db8:ffff::/112\""),
            service_yaml("web", "203.0.113.30,2001:db8:ffff::30", ""),
        )
    };
    lab.write_manifests(&config(WRONG));
    for i in [1, 2] {
        lab.start_speaker(i).unwrap();
    }
    // IPv6 pool over the IPv6 session, signed with the Secret's password.
    lab.wait_established(&[node_v6(1)], SESSION);
    // dualStackAddressFamily: FRR shows both families negotiated on the IPv6 session.
    let n = lab
        .frr()
        .json(&format!("show bgp neighbors {} json", node_v6(1)))
        .unwrap();
    let mp = &n[node_v6(1).as_str()]["neighborCapabilities"]["multiprotocolExtensions"];
    for fam in ["ipv4Unicast", "ipv6Unicast"] {
        assert_eq!(mp[fam]["advertisedAndReceived"], true, "{fam}: {mp}");
    }
    lab.wait_next_hops("ipv6", "2001:db8:ffff::30/128", &[node_v6(1)], SESSION)
        .unwrap();
    // And the IPv4 address over the same IPv6 session, with the node's IPv4 next hop.
    lab.wait_next_hops("ipv4", "203.0.113.30/32", &[node_v4(1)], SESSION)
        .unwrap();

    // The wrong password: no session, and the speaker says why it may be.
    let s2 = lab.speaker_proc(2).unwrap();
    // Bounded by the session time: under the whole suite's load the hint can take over 10 s.
    s2.wait_log("password mismatch", SESSION).unwrap();
    assert_ne!(
        lab.frr().neighbor_state(&node_v4(2)).as_deref(),
        Some("Established")
    );
    for i in [1, 2] {
        let log = lab.speaker_proc(i).unwrap().log();
        assert!(
            !log.contains(RIGHT) && !log.contains(WRONG),
            "node-{i} logged a password:\n{log}"
        );
    }

    // Fixing the Secret changes only node 2's session, which comes up.
    lab.write_manifests(&config(RIGHT));
    lab.wait_established(&[node_v4(2)], SESSION);
    lab.wait_next_hops(
        "ipv6",
        "2001:db8:ffff::30/128",
        &[node_v6(1), node_v6(2)],
        SESSION,
    )
    .unwrap();
    lab.wait_next_hops(
        "ipv4",
        "203.0.113.30/32",
        &[node_v4(1), node_v4(2)],
        SESSION,
    )
    .unwrap();
    let v = lab
        .frr()
        .json(&format!("show bgp neighbors {} json", node_v6(1)))
        .unwrap();
    assert_eq!(v[node_v6(1)]["connectionsEstablished"], 1, "no flap: {v}");
}

#[test]
fn bgp_mode_graceful_restart_of_a_speaker_loses_no_probes() {
    let test = "bgp_mode_graceful_restart_of_a_speaker_loses_no_probes";
    if skip(test) {
        return;
    }
    // One node: without graceful restart its route would go and every probe with it.
    let mut lab = ebgp_lab(
        "bm-gr",
        1,
        &peer_manifests(
            1,
            "203.0.113.0/24",
            &graceful_peer(true),
            &service_yaml("web", "203.0.113.10", ""),
        ),
    );
    lab.serve_echo(&["203.0.113.10"], Path::new(ECHO)).unwrap();
    lab.wait_established(&[node_v4(1)], SESSION);
    lab.wait_next_hops("ipv4", "203.0.113.10/32", &[node_v4(1)], SESSION)
        .unwrap();
    let v = lab
        .frr()
        .json(&format!("show bgp neighbors {} json", node_v4(1)))
        .unwrap();
    assert!(
        v.to_string().contains("gracefulRestart"),
        "graceful restart negotiated: {v}"
    );

    // A probe every 10 ms for 6 s; the speaker stops (SIGTERM) after 1 s and comes back.
    let probe = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            lab.client.name(),
            PROBE,
            "203.0.113.10:7",
            "10",
            "6000",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let code = lab
        .speaker_proc(1)
        .unwrap()
        .terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0), "the speaker stops cleanly on SIGTERM");
    // The router keeps the route as stale while we are away.
    let stale = wait_for(Duration::from_secs(3), Duration::from_millis(20), || {
        let p = lab.frr().path("ipv4", "203.0.113.10/32")?;
        (p["stale"] == true).then_some(p)
    });
    assert!(
        stale.is_some(),
        "the route is kept as stale\n{}",
        lab.logs()
    );
    assert_eq!(lab.fib_next_hops("203.0.113.10/32"), [node_v4(1)]);
    lab.start_speaker(1).unwrap();
    lab.wait_established(&[node_v4(1)], SESSION);
    wait_for(SESSION, Duration::from_millis(20), || {
        let p = lab.frr().path("ipv4", "203.0.113.10/32")?;
        (p.get("stale").is_none()).then_some(())
    })
    .expect("the route is fresh again after End-of-RIB");
    let out = probe.wait_with_output().unwrap();
    let result: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("probe: {e}: {}", String::from_utf8_lossy(&out.stdout)));
    eprintln!("probe stream through the restart: {result}");
    assert!(result["sent"].as_u64().unwrap() > 400, "{result}");
    assert_eq!(result["lost"], 0, "{result}\n{}", lab.logs());
}

/// What the router did with a node's path while that node's speaker was away.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum WhileAway {
    /// Kept it, marked stale (graceful restart); `in_kernel`: still a next hop of the route.
    KeptStale { in_kernel: bool },
    /// Took it out of its table.
    Withdrawn,
}

/// FRR's IPv4 path for `prefix` through next hop `hop`, if it has one.
fn path_via(lab: &BgpLab, prefix: &str, hop: &str) -> Option<Value> {
    let v = lab
        .frr()
        .json(&format!("show bgp ipv4 unicast {prefix} json"))
        .ok()?;
    v.get("paths")?
        .as_array()?
        .iter()
        .find(|p| p["nexthops"][0]["ip"] == hop)
        .cloned()
}

/// How many times FRR's session with `peer` has reached Established.
fn connections(lab: &BgpLab, peer: &str) -> u64 {
    lab.frr()
        .json(&format!("show bgp neighbors {peer} json"))
        .ok()
        .and_then(|v| v[peer]["connectionsEstablished"].as_u64())
        .unwrap_or(0)
}

/// Restarts node `i`'s speaker as a DaemonSet rolling update does: SIGTERM and wait for the
/// old process to exit, note what the router did with the node's path for `prefix`, start the
/// new process, and wait until its session is Established and the path fresh (not stale).
fn restart_speaker(lab: &mut BgpLab, i: usize, prefix: &str) -> WhileAway {
    let hop = node_v4(i);
    let code = lab
        .speaker_proc(i)
        .unwrap()
        .terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0), "node-{i}'s speaker stops cleanly on SIGTERM");
    let lab_now: &BgpLab = lab;
    // The router hears of the end at once: a FIN, or a Cease before it.
    let away = wait_for(
        Duration::from_secs(5),
        Duration::from_millis(10),
        || match path_via(lab_now, prefix, &hop) {
            None => Some(WhileAway::Withdrawn),
            Some(p) if p["stale"] == true => Some(WhileAway::KeptStale {
                in_kernel: lab_now.fib_next_hops(prefix).contains(&hop),
            }),
            Some(_) => None,
        },
    )
    .unwrap_or_else(|| {
        panic!(
            "node-{i}: FRR neither marked its path stale nor withdrew it\n{}",
            lab_now.logs()
        )
    });
    lab.start_speaker(i).unwrap();
    lab.wait_established(std::slice::from_ref(&hop), SESSION);
    wait_for(SESSION, Duration::from_millis(20), || {
        path_via(lab, prefix, &hop)
            .filter(|p| p.get("stale").is_none())
            .map(|_| ())
    })
    .unwrap_or_else(|| panic!("node-{i}: its path is not fresh again\n{}", lab.logs()));
    away
}

/// Issue 7: a rolling restart of every speaker (one node after the other, as a DaemonSet
/// update does it) under a stream of probes through ECMP at FRR. With graceful restart the
/// router keeps each node's path (stale, still in the kernel) while its speaker is away:
/// no probe is lost and FRR ends with three fresh paths. The same roll without graceful
/// restart withdraws each node's path while it is away: the test notices. (The probe is a
/// single flow and every node serves the address, so a withdrawal there mostly moves the flow
/// rather than losing it; for real clients a moved flow is a broken connection.)
#[test]
fn bgp_mode_rolling_restart_of_every_speaker_loses_no_probes() {
    let test = "bgp_mode_rolling_restart_of_every_speaker_loses_no_probes";
    if skip(test) {
        return;
    }
    const VIP: &str = "203.0.113.10";
    const PREFIX: &str = "203.0.113.10/32";
    // A roll takes about half a second here; the stream (which ends by itself) leaves room
    // for both rolls on a loaded machine.
    const STREAM: Duration = Duration::from_secs(10);
    let all = [1, 2, 3];
    let manifests = |graceful: bool| {
        peer_manifests(
            3,
            "203.0.113.0/24",
            &graceful_peer(graceful),
            &service_yaml("web", VIP, ""),
        )
    };
    let mut lab = ebgp_lab("rr-roll", 3, &manifests(true));
    lab.serve_echo(&[VIP], Path::new(ECHO)).unwrap();
    lab.wait_established(&node_v4s(&all), SESSION);
    lab.wait_next_hops("ipv4", PREFIX, &node_v4s(&all), SESSION)
        .unwrap();

    let stream = ProbeStream::start(
        &lab.client,
        Path::new(ECHO),
        VIP,
        Duration::from_millis(10),
        STREAM,
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let roll_start = Instant::now();
    let graceful: Vec<WhileAway> = all
        .iter()
        .map(|&i| restart_speaker(&mut lab, i, PREFIX))
        .collect();
    let graceful_roll = roll_start.elapsed();
    let graceful_end_ns = unix_ns();
    lab.wait_next_hops("ipv4", PREFIX, &node_v4s(&all), SESSION)
        .unwrap();
    for a in node_v4s(&all) {
        let p = path_via(&lab, PREFIX, &a).unwrap();
        assert!(p.get("stale").is_none(), "{a}: {p}");
    }
    // A second more of probes through the fresh paths: a late loss would count too.
    std::thread::sleep(Duration::from_secs(1));
    let reconfigured_ns = unix_ns();

    // The same roll without graceful restart. Changed peer settings restart each session
    // (without the capability): wait for that, and for three fresh paths again.
    let before: Vec<u64> = node_v4s(&all)
        .iter()
        .map(|a| connections(&lab, a))
        .collect();
    lab.write_manifests(&manifests(false));
    wait_for(SESSION, Duration::from_millis(50), || {
        node_v4s(&all)
            .iter()
            .zip(&before)
            .all(|(a, n)| {
                connections(&lab, a) > *n
                    && lab.frr().neighbor_state(a).as_deref() == Some("Established")
            })
            .then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "sessions not restarted without graceful restart\n{}",
            lab.logs()
        )
    });
    lab.wait_next_hops("ipv4", PREFIX, &node_v4s(&all), SESSION)
        .unwrap();
    let plain_start_ns = unix_ns();
    let roll_start = Instant::now();
    let plain: Vec<WhileAway> = all
        .iter()
        .map(|&i| restart_speaker(&mut lab, i, PREFIX))
        .collect();
    let plain_roll = roll_start.elapsed();
    let plain_end_ns = unix_ns();
    lab.wait_next_hops("ipv4", PREFIX, &node_v4s(&all), SESSION)
        .unwrap();

    let log = stream.finish().unwrap();
    let stream_end_ns = log.start_ns + STREAM.as_nanos();
    let in_window = |from: u128, to: u128| {
        let sent = (to.min(stream_end_ns).saturating_sub(from) / log.interval.as_nanos()) as u64;
        (sent, log.lost_between(from, to))
    };
    let (graceful_sent, graceful_lost) = in_window(log.start_ns, reconfigured_ns);
    let silence = log.longest_silence(log.start_ns, reconfigured_ns);
    let (plain_sent, plain_lost) = in_window(plain_start_ns, plain_end_ns);
    // Changes of the node that answers the (single-flow) stream: each one is a broken
    // connection for a real client.
    let moves = |from: u128, to: u128| {
        let answers: Vec<_> = log
            .answers
            .iter()
            .filter(|a| a.sent_ns >= from && a.sent_ns < to)
            .collect();
        answers
            .windows(2)
            .filter(|w| w[0].node != w[1].node)
            .count()
    };
    let graceful_moves = moves(log.start_ns, reconfigured_ns);
    let plain_moves = moves(plain_start_ns, plain_end_ns);
    eprintln!(
        "{test}: graceful restart: roll of 3 speakers took {graceful_roll:?}; probes from the stream's start to 1 s after the roll: {graceful_sent} sent, {graceful_lost} lost, longest silence {silence:?}, {graceful_moves} moves of the flow; while away: {graceful:?}"
    );
    eprintln!(
        "{test}: without graceful restart: roll took {plain_roll:?}; {plain_sent} probes sent during it, {plain_lost} lost, {plain_moves} moves of the flow; while away: {plain:?}{}",
        if plain_end_ns > stream_end_ns { " (the stream ended before the roll did)" } else { "" }
    );
    assert!(
        graceful_end_ns < stream_end_ns,
        "the probe stream ({STREAM:?}) ended before the graceful roll did ({graceful_roll:?})"
    );
    assert_eq!(
        graceful,
        [WhileAway::KeptStale { in_kernel: true }; 3],
        "with graceful restart FRR keeps every node's path while its speaker is away"
    );
    assert!(graceful_sent > 150, "{graceful_sent} probes");
    assert_eq!(
        graceful_lost,
        0,
        "probes lost in the graceful roll\n{}",
        lab.logs()
    );
    assert_eq!(graceful_moves, 0, "the flow stays on its node");
    // The test notices when graceful restart does not do its job.
    assert_eq!(
        plain,
        [WhileAway::Withdrawn; 3],
        "without graceful restart FRR withdraws each node's path while its speaker is away"
    );
    // The flow's own node is withdrawn once in the roll, so the flow must move (when the
    // stream still ran; on a badly loaded machine it may have ended first).
    if plain_end_ns < stream_end_ns {
        assert!(plain_moves >= 1, "without graceful restart the flow moves");
    }
}

/// Benchmark (by hand): 1,000 Services on 3 nodes, from writing the manifests to FRR holding
/// every route from every node (and the kernel all of them), then the same for removing them.
/// IPv6 addresses (one /128 each; the IPv4 documentation ranges are too small) over IPv4
/// sessions. `cargo test --release -p ferrolb-e2e --test speaker_bgp -- --ignored
/// --nocapture bgp_mode_bench_thousand_services`
#[test]
#[ignore]
fn bgp_mode_bench_thousand_services() {
    let test = "bgp_mode_bench_thousand_services";
    if skip(test) {
        return;
    }
    const N: u64 = 1000;
    let all = [1, 2, 3];
    let base = peer_manifests(
        3,
        "\"2001:db8:ffff::/112\"",
        &format!(
            "myASN: 64512, peerASN: 64500, peerAddress: {ROUTER_V4}, dualStackAddressFamily: true"
        ),
        "",
    );
    let services: String = (1..=N)
        .map(|i| service_yaml(&format!("svc-{i}"), &format!("2001:db8:ffff::{i:x}"), ""))
        .collect();
    let mut lab = ebgp_lab("bm-bench", 3, &base);
    lab.wait_established(&node_v4s(&all), SESSION);
    let kernel_routes = |lab: &BgpLab| {
        lab.router
            .ip(&["-6", "route", "show", "proto", "bgp"])
            .map(|s| {
                s.lines()
                    .filter(|l| l.starts_with("2001:db8:ffff::"))
                    .count() as u64
            })
            .unwrap_or(0)
    };
    let frr_has = |lab: &BgpLab, n: u64| {
        node_v4s(&all)
            .iter()
            .all(|a| lab.frr().received_count("ipv6", a) == Some(n))
    };
    for round in 1..=3 {
        let t0 = Instant::now();
        lab.write_manifests(&format!("{base}{services}"));
        wait_for(Duration::from_secs(120), Duration::from_millis(20), || {
            frr_has(&lab, N).then_some(())
        })
        .unwrap_or_else(|| panic!("FRR never held {N} routes from each node\n{}", lab.logs()));
        let rib = t0.elapsed();
        wait_for(Duration::from_secs(120), Duration::from_millis(20), || {
            (kernel_routes(&lab) == N).then_some(())
        })
        .expect("kernel routes");
        let fib = t0.elapsed();
        let t1 = Instant::now();
        lab.write_manifests(&base);
        wait_for(Duration::from_secs(120), Duration::from_millis(20), || {
            frr_has(&lab, 0).then_some(())
        })
        .expect("withdrawn");
        let gone = t1.elapsed();
        eprintln!(
            "round {round}: {N} Services x 3 nodes: FRR holds all {} paths after {rib:?}, kernel all {N} routes after {fib:?}; removed from FRR after {gone:?}",
            3 * N
        );
    }
    // Inside the speakers: from the reload that saw the Services to handing the routes to the
    // engine, per round, from their logs' timestamps.
    for i in all {
        let log = lab.speaker_proc(i).unwrap().log();
        let mut loaded = None;
        let mut spans = Vec::new();
        for line in log.lines() {
            if line.contains(&format!("services={N}")) {
                loaded = seconds_of_day(line);
            } else if line.contains(&format!("routes set routes={N}")) {
                if let (Some(a), Some(b)) = (loaded.take(), seconds_of_day(line)) {
                    spans.push(format!("{:.0} ms", (b - a) * 1000.0));
                }
            }
        }
        eprintln!("node-{i}: configuration loaded -> routes handed to the engine: {spans:?}");
    }
}

/// Seconds since midnight of a log line's RFC 3339 timestamp (`...T13:52:01.866928Z ...`).
fn seconds_of_day(line: &str) -> Option<f64> {
    let t = line.split_whitespace().next()?.split('T').nth(1)?;
    let t = t.trim_end_matches('Z');
    let mut parts = t.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// Measurement (by hand): a dead node's next hop withdrawn, over `ROUNDS` hard kills (link
/// down, speaker SIGKILLed), hold time 3 s.
/// `cargo test -p ferrolb-e2e --test speaker_bgp -- --ignored --nocapture bgp_mode_bench_dead_node`
#[test]
#[ignore]
fn bgp_mode_bench_dead_node_withdrawal() {
    let test = "bgp_mode_bench_dead_node_withdrawal";
    if skip(test) {
        return;
    }
    const ROUNDS: usize = 10;
    let all = [1, 2, 3];
    let mut lab = ebgp_lab(
        "bm-kills",
        3,
        &peer_manifests(
            3,
            "203.0.113.0/24",
            &format!("myASN: 64512, peerASN: 64500, peerAddress: {ROUTER_V4}, holdTime: 3s"),
            &service_yaml("web", "203.0.113.10", ""),
        ),
    );
    let mut times = Vec::new();
    for round in 0..ROUNDS {
        let victim = 1 + round % 3;
        lab.wait_established(&node_v4s(&all), SESSION);
        lab.wait_next_hops("ipv4", "203.0.113.10/32", &node_v4s(&all), SESSION)
            .unwrap();
        // Kill at a random point of the keepalive cycle.
        std::thread::sleep(Duration::from_millis(300 + 77 * round as u64 % 700));
        let t0 = Instant::now();
        lab.node(victim)
            .ip(&["link", "set", "eth0", "down"])
            .unwrap();
        lab.speaker_proc(victim).unwrap().kill();
        lab.wait_next_hop_gone(
            "ipv4",
            "203.0.113.10/32",
            &node_v4(victim),
            Duration::from_secs(10),
        )
        .unwrap();
        let t = t0.elapsed();
        eprintln!("round {round}: node-{victim} withdrawn after {t:?}");
        times.push(t);
        lab.node(victim).ip(&["link", "set", "eth0", "up"]).unwrap();
        lab.node(victim)
            .ip(&["route", "replace", "default", "via", ROUTER_V4])
            .unwrap();
        lab.start_speaker(victim).unwrap();
    }
    times.sort();
    eprintln!(
        "{ROUNDS} kills, hold 3 s: min {:?}, median {:?}, max {:?}",
        times[0],
        times[ROUNDS / 2],
        times[ROUNDS - 1]
    );
}
