//! BGP metrics and BFD through the real speaker (issues 7 and 8): FRR (zebra, bgpd, bfdd) in a
//! router namespace, node namespaces running `ferrolb-speaker run --source file:DIR` (see
//! `lab::bgp_lab`). Judges: FRR's own tables (`vtysh ... json`), the router's kernel routes and
//! each speaker's `/metrics`. Root-only; skips with `SKIP:` otherwise.

use ferrolb_e2e::lab::bgp_lab::{self, metric, node_v4, node_v4s, BgpLab, ROUTER_V4};
use ferrolb_e2e::lab::{skip, wait_for};
use serde_json::Value;
use std::time::{Duration, Instant};

const SESSION: Duration = Duration::from_secs(20);
const VIP: &str = "203.0.113.10";
const VIP_V6: &str = "2001:db8:ffff::10";
const PEER: &str = "{peer=\"192.0.2.254\"}";

/// Nodes with their InternalIPs, labelled `peer: <label(i)>`.
fn nodes_yaml(n: usize, label: impl Fn(usize) -> String) -> String {
    bgp_lab::nodes_yaml(n, |i| format!("peer: \"{}\"", label(i)))
}

/// A pool, an advertisement of it and one dual-stack Service.
fn service_yaml() -> String {
    format!(
        "apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: public, namespace: ferrolb-system}}\nspec: {{addresses: [203.0.113.0/24, \"2001:db8:ffff::/112\"]}}\n---\napiVersion: ferrolb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {{name: public, namespace: ferrolb-system}}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: default\n  annotations: {{ferrolb.io/loadBalancerIPs: \"{VIP},{VIP_V6}\"}}\nspec: {{type: LoadBalancer, ipFamilyPolicy: RequireDualStack, ipFamilies: [IPv4, IPv6], ports: [{{port: 7, protocol: UDP}}]}}\n---\n"
    )
}

/// FRR as the router (AS 64500): `nodes` as eBGP neighbours with `extra` lines each, both
/// families, ECMP; with `bfd_ms`, bfdd's profile `fast` (that interval x 3) on every neighbour.
fn frr_conf(nodes: &[usize], extra: &str, bfd_ms: Option<u32>) -> String {
    let mut conf = String::from("frr defaults datacenter\nhostname router\n!\n");
    if let Some(ms) = bfd_ms {
        conf.push_str(&format!(
            "bfd\n profile fast\n  receive-interval {ms}\n  transmit-interval {ms}\n  detect-multiplier 3\n !\n!\n"
        ));
    }
    conf.push_str(&format!(
        "router bgp 64500\n bgp router-id {ROUTER_V4}\n no bgp ebgp-requires-policy\n bgp bestpath as-path multipath-relax\n"
    ));
    let mut activate = String::new();
    for &i in nodes {
        let a = node_v4(i);
        conf.push_str(&format!(
            " neighbor {a} remote-as 64512\n neighbor {a} timers connect 1\n"
        ));
        for line in extra.lines().filter(|l| !l.is_empty()) {
            conf.push_str(&format!(" neighbor {a} {line}\n"));
        }
        if bfd_ms.is_some() {
            conf.push_str(&format!(
                " neighbor {a} bfd\n neighbor {a} bfd profile fast\n"
            ));
        }
        activate.push_str(&format!("  neighbor {a} activate\n"));
    }
    conf.push_str(&format!(
        " address-family ipv4 unicast\n  maximum-paths 8\n{activate} exit-address-family\n address-family ipv6 unicast\n  maximum-paths 8\n{activate} exit-address-family\n!\n"
    ));
    conf
}

fn scrape(lab: &BgpLab, i: usize) -> String {
    lab.scrape(i)
        .unwrap_or_else(|e| panic!("{e}\n{}", lab.logs()))
}

/// Waits until node `i`'s `/metrics` has every `(series, value)` of `want`.
fn wait_metrics(lab: &BgpLab, i: usize, want: &[(&str, f64)]) -> String {
    wait_for(SESSION, Duration::from_millis(100), || {
        let text = lab.scrape(i).ok()?;
        want.iter()
            .all(|(s, v)| metric(&text, s) == Some(*v))
            .then_some(text)
    })
    .unwrap_or_else(|| {
        panic!(
            "node-{i}: want {want:?} in /metrics:\n{}\n{}",
            lab.scrape(i).unwrap_or_default(),
            lab.logs()
        )
    })
}

fn series(name: &str) -> String {
    format!("ferrolb_{name}{PEER}")
}

/// FRR's `show bgp neighbors` of node `i`.
fn neighbor(lab: &BgpLab, i: usize) -> Value {
    let a = node_v4(i);
    lab.frr()
        .json(&format!("show bgp neighbors {a} json"))
        .map(|v| v[&a].clone())
        .unwrap_or(Value::Null)
}

#[test]
fn bgp_metrics_per_peer_and_a_wrong_md5_password_shows_down() {
    let test = "bgp_metrics_per_peer_and_a_wrong_md5_password_shows_down";
    if skip(test) {
        return;
    }
    const RIGHT: &str = "fr0m-the-Secret";
    const WRONG: &str = "n0t-the-Secret";
    let mut lab = BgpLab::new("in-md5", 2).unwrap();
    lab.start_frr(&frr_conf(&[1, 2], &format!("password {RIGHT}"), None))
        .unwrap();
    // One BGPPeer per node (selected by label), each with its own password Secret.
    let config = |node2_password: &str, node2_label: &str| {
        let mut y = nodes_yaml(2, |i| {
            if i == 1 {
                "a".into()
            } else {
                node2_label.into()
            }
        });
        for (peer, password) in [("a", RIGHT), ("b", node2_password)] {
            y.push_str(&format!(
                "apiVersion: v1\nkind: Secret\nmetadata: {{name: router-{peer}, namespace: ferrolb-system}}\ntype: kubernetes.io/basic-auth\nstringData: {{password: {password}}}\n---\napiVersion: ferrolb.io/v1beta1\nkind: BGPPeer\nmetadata: {{name: router-{peer}, namespace: ferrolb-system}}\nspec: {{myASN: 64512, peerASN: 64500, peerAddress: {ROUTER_V4}, connectTime: 1s, dualStackAddressFamily: true, passwordSecret: {{name: router-{peer}}}, nodeSelectors: [{{matchLabels: {{peer: {peer}}}}}]}}\n---\n"
            ));
        }
        y.push_str(&service_yaml());
        y
    };
    lab.write_manifests(&config(WRONG, "b"));
    for i in [1, 2] {
        lab.start_speaker(i).unwrap();
    }
    let up = series("bgp_session_up");
    let prefixes = series("bgp_announced_prefixes_total");
    let sent = series("bgp_updates_sent_total");

    // Node 1: established; both addresses (IPv4 and IPv6 over the IPv4 session) announced,
    // as FRR counts them received.
    lab.wait_established(&node_v4s(&[1]), SESSION);
    lab.frr()
        .wait_received("ipv4", &node_v4(1), 1, SESSION)
        .unwrap();
    lab.frr()
        .wait_received("ipv6", &node_v4(1), 1, SESSION)
        .unwrap();
    let text = wait_metrics(&lab, 1, &[(&up, 1.0), (&prefixes, 2.0)]);
    assert!(
        metric(&text, &sent).is_some_and(|n| n >= 2.0),
        "one UPDATE per family at least:\n{text}"
    );

    // Node 2, wrong password: the log says why it may be, the metric shows the session down
    // with nothing announced, and no password is ever logged.
    lab.speaker_proc(2)
        .unwrap()
        .wait_log("password mismatch", SESSION)
        .unwrap();
    let text = wait_metrics(&lab, 2, &[(&up, 0.0), (&prefixes, 0.0)]);
    assert_eq!(metric(&text, &sent), Some(0.0), "{text}");
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

    // The Secret fixed: node 2 comes up and its metrics follow.
    lab.write_manifests(&config(RIGHT, "b"));
    lab.wait_established(&node_v4s(&[2]), SESSION);
    wait_metrics(&lab, 2, &[(&up, 1.0), (&prefixes, 2.0)]);

    // Node 2 no longer selected by any BGPPeer: its peer series go.
    lab.write_manifests(&config(RIGHT, "none"));
    wait_for(SESSION, Duration::from_millis(100), || {
        let text = lab.scrape(2).ok()?;
        (!text.contains(&up) && !text.contains(&prefixes)).then_some(())
    })
    .unwrap_or_else(|| panic!("node-2 peer series remain:\n{}", scrape(&lab, 2)));
    // Node 1 untouched all along.
    assert_eq!(neighbor(&lab, 1)["connectionsEstablished"], 1);
    assert_eq!(metric(&scrape(&lab, 1), &up), Some(1.0));
}

/// The BFD lab: FRR with bfdd (profile `fast`, 50 ms x 3), `n` speakers peering with hold time
/// 9 s and a BFDProfile of `ms` x 3, one dual-stack Service on every node.
fn bfd_lab(tag: &str, n: usize, ms: u32) -> BgpLab {
    let all: Vec<usize> = (1..=n).collect();
    let mut lab = BgpLab::new(tag, n).unwrap();
    lab.start_frr(&frr_conf(&all, "", Some(50))).unwrap();
    lab.frr
        .as_mut()
        .expect("FRR started")
        .start_bfdd()
        .unwrap_or_else(|e| panic!("bfdd: {e}"));
    lab.write_manifests(&bfd_manifests(n, ms));
    for i in all {
        lab.start_speaker(i).unwrap();
    }
    lab
}

fn bfd_manifests(n: usize, ms: u32) -> String {
    format!(
        "{}apiVersion: ferrolb.io/v1beta1\nkind: BFDProfile\nmetadata: {{name: fast, namespace: ferrolb-system}}\nspec: {{receiveInterval: {ms}, transmitInterval: {ms}, detectMultiplier: 3}}\n---\napiVersion: ferrolb.io/v1beta1\nkind: BGPPeer\nmetadata: {{name: router, namespace: ferrolb-system}}\nspec: {{myASN: 64512, peerASN: 64500, peerAddress: {ROUTER_V4}, holdTime: 9s, connectTime: 1s, bfdProfile: fast}}\n---\n{}",
        nodes_yaml(n, |_| String::new()),
        service_yaml()
    )
}

/// FRR's BFD session with node `i`.
fn bfd_peer(lab: &BgpLab, i: usize) -> Option<Value> {
    let v = lab.frr().json("show bfd peers json").ok()?;
    let a = node_v4(i);
    v.as_array()?.iter().find(|p| p["peer"] == a).cloned()
}

/// Waits until FRR's BFD session with each of `nodes` is up with our intervals at `ms` x 3.
fn wait_bfd_up(lab: &BgpLab, nodes: &[usize], ms: u64) {
    for &i in nodes {
        wait_for(SESSION, Duration::from_millis(50), || {
            bfd_peer(lab, i).filter(|p| {
                p["status"] == "up"
                    && p["remote-receive-interval"] == ms
                    && p["remote-transmit-interval"] == ms
                    && p["remote-detect-multiplier"] == 3
            })
        })
        .unwrap_or_else(|| {
            panic!(
                "node-{i}: BFD not up at {ms} ms x 3: {:?}\n{}\n{}",
                bfd_peer(lab, i),
                lab.frr().log("bfdd"),
                lab.logs()
            )
        });
    }
}

/// Node `i` dies hard: its link goes down (no FIN, no BFD Down ever leaves it), then its
/// speaker is SIGKILLed. Returns when the link went down.
fn kill_node(lab: &mut BgpLab, i: usize) -> Instant {
    lab.node(i).ip(&["link", "set", "eth0", "down"]).unwrap();
    let t0 = Instant::now();
    lab.speaker_proc(i).unwrap().kill();
    t0
}

fn revive_node(lab: &mut BgpLab, i: usize) {
    lab.node(i).ip(&["link", "set", "eth0", "up"]).unwrap();
    lab.node(i)
        .ip(&["route", "replace", "default", "via", ROUTER_V4])
        .unwrap();
    lab.start_speaker(i).unwrap();
}

#[test]
fn bfd_through_the_speaker_kill_interval_change_and_bfd_failure() {
    let test = "bfd_through_the_speaker_kill_interval_change_and_bfd_failure";
    if skip(test) {
        return;
    }
    let all = [1, 2, 3];
    let mut lab = bfd_lab("in-bfd", 3, 50);
    let prefix = format!("{VIP}/32");
    lab.wait_established(&node_v4s(&all), SESSION);
    lab.wait_next_hops("ipv4", &prefix, &node_v4s(&all), SESSION)
        .unwrap();
    // FRR's bfdd sees our BFDProfile's intervals; the hold time stays 9 s.
    wait_bfd_up(&lab, &all, 50);
    assert_eq!(neighbor(&lab, 2)["bgpTimerHoldTimeMsecs"], 9000);
    let bfd_up = series("bfd_session_up");
    let ups = series("bfd_session_up_events_total");
    let downs = series("bfd_session_down_events_total");
    for i in all {
        let text = wait_metrics(&lab, i, &[(&bfd_up, 1.0), (&ups, 1.0), (&downs, 0.0)]);
        for dir in ["input", "output"] {
            let s = series(&format!("bfd_control_packet_{dir}_total"));
            assert!(metric(&text, &s).is_some_and(|n| n > 0.0), "{s}:\n{text}");
        }
    }

    // A node killed hard: only BFD can tell the router before the 9 s hold time.
    let t0 = kill_node(&mut lab, 2);
    lab.wait_next_hop_gone("ipv4", &prefix, &node_v4(2), Duration::from_secs(10))
        .unwrap();
    let withdrawn = t0.elapsed();
    eprintln!("{test}: node-2 killed, next hop gone from RIB and FIB after {withdrawn:?} (BFD 50 ms x 3, hold 9 s)");
    assert!(
        withdrawn < Duration::from_millis(1500),
        "withdrawn after {withdrawn:?}: BFD should beat the 9 s hold time by far"
    );
    assert_eq!(bfd_peer(&lab, 2).unwrap()["status"], "down");
    // BFD ended the BGP session itself, 9 s before the hold timer would have.
    assert_ne!(neighbor(&lab, 2)["bgpState"], "Established");
    lab.wait_next_hops("ipv4", &prefix, &node_v4s(&[1, 3]), SESSION)
        .unwrap();

    // New intervals in the BFDProfile: the engine moves the running sessions by Poll, BGP is
    // not reset (FRR counts no new connection and no drop).
    let before: Vec<Value> = [1, 3].iter().map(|&i| neighbor(&lab, i)).collect();
    for v in &before {
        assert_eq!(v["connectionsEstablished"], 1, "{v}");
    }
    lab.write_manifests(&bfd_manifests(3, 100));
    wait_bfd_up(&lab, &[1, 3], 100);
    for (k, &i) in [1, 3].iter().enumerate() {
        let now = neighbor(&lab, i);
        assert_eq!(now["bgpState"], "Established", "{now}");
        for key in ["connectionsEstablished", "connectionsDropped"] {
            assert_eq!(now[key], before[k][key], "node-{i} {key}: {now}");
        }
        lab.speaker_proc(i)
            .unwrap()
            .wait_log("BFD timers changed; BGP session kept", SESSION)
            .unwrap();
        wait_metrics(&lab, i, &[(&bfd_up, 1.0), (&ups, 1.0), (&downs, 0.0)]);
    }

    // BFD alone fails on node 1 (its BFD packets dropped, TCP untouched): both sides end the
    // BGP session at once instead of waiting 9 s for the hold timer.
    let drop_bfd = [
        ("INPUT", "--dport"),
        ("INPUT", "--sport"),
        ("OUTPUT", "--dport"),
        ("OUTPUT", "--sport"),
    ];
    let dropped_before = neighbor(&lab, 1)["connectionsDropped"]
        .as_u64()
        .unwrap_or(0);
    let t1 = Instant::now();
    for (chain, port) in drop_bfd {
        lab.node(1)
            .exec(
                "iptables-legacy",
                &["-w", "-I", chain, "-p", "udp", port, "3784", "-j", "DROP"],
            )
            .expect("iptables-legacy (apt-get install iptables)");
    }
    wait_for(Duration::from_secs(5), Duration::from_millis(20), || {
        (neighbor(&lab, 1)["connectionsDropped"].as_u64() > Some(dropped_before)).then_some(())
    })
    .unwrap_or_else(|| panic!("FRR kept the BGP session of node-1\n{}", lab.logs()));
    let reset = t1.elapsed();
    eprintln!("{test}: BFD packets of node-1 dropped, BGP session reset after {reset:?}");
    assert!(reset < Duration::from_millis(1500), "{reset:?}");
    let node1 = lab.speaker_proc(1).unwrap();
    node1
        .wait_log("BFD down: ending the BGP session", Duration::from_secs(5))
        .unwrap();
    wait_metrics(&lab, 1, &[(&downs, 1.0)]);
    // BFD back: the sessions come up again, and stay.
    let _ = lab.node(1).exec("iptables-legacy", &["-w", "-F"]);
    lab.wait_established(&node_v4s(&[1]), SESSION);
    wait_bfd_up(&lab, &[1], 100);
    wait_metrics(&lab, 1, &[(&bfd_up, 1.0), (&ups, 2.0), (&downs, 1.0)]);
    lab.wait_next_hops("ipv4", &prefix, &node_v4s(&[1, 3]), SESSION)
        .unwrap();

    // Node 2 back: BFD and its route again.
    revive_node(&mut lab, 2);
    lab.wait_established(&node_v4s(&[2]), SESSION);
    wait_bfd_up(&lab, &[2], 100);
    lab.wait_next_hops("ipv4", &prefix, &node_v4s(&all), SESSION)
        .unwrap();
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Measurement (by hand, for docs/benchmarks.md): 20 hard kills of a node's speaker, BFD
/// 50 ms x 3, hold time 9 s; time from link down to the next hop gone from FRR's RIB and the
/// router's kernel FIB (both polled every 10 ms).
/// `cargo test -p ferrolb-e2e --test speaker_bgp_bfd -- --ignored --nocapture bfd_bench`
#[test]
#[ignore]
fn bfd_bench_speaker_hard_kills() {
    let test = "bfd_bench_speaker_hard_kills";
    if skip(test) {
        return;
    }
    const ROUNDS: usize = 20;
    let all = [1, 2, 3];
    let mut lab = bfd_lab("in-bfdb", 3, 50);
    let prefix = format!("{VIP}/32");
    let mut times = Vec::new();
    for round in 0..ROUNDS {
        let victim = 1 + round % 3;
        lab.wait_established(&node_v4s(&all), SESSION);
        wait_bfd_up(&lab, &all, 50);
        lab.wait_next_hops("ipv4", &prefix, &node_v4s(&all), SESSION)
            .unwrap();
        // Kill at a varying point of the packet cycle.
        std::thread::sleep(Duration::from_millis(200 + 37 * round as u64 % 300));
        let t0 = kill_node(&mut lab, victim);
        lab.wait_next_hop_gone("ipv4", &prefix, &node_v4(victim), Duration::from_secs(10))
            .unwrap();
        let t = t0.elapsed();
        eprintln!("round {round}: node-{victim} gone from RIB and FIB after {t:?}");
        times.push(t);
        revive_node(&mut lab, victim);
    }
    times.sort();
    eprintln!(
        "{ROUNDS} kills, BFD 50 ms x 3, hold 9 s: min {:?}, p50 {:?}, p99 {:?}, max {:?}",
        times[0],
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times[ROUNDS - 1]
    );
}
