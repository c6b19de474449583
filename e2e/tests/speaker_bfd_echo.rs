//! BFD echo mode (BFDProfile `echoMode`) through the real speaker against FRR bfdd's echo mode
//! (issue 13): the BGP-mode lab (`lab::bgp_lab`), FRR with bfdd in the router namespace, the
//! speaker in file mode. Judges: FRR's BFD JSON (echo counters, state), the router's routes,
//! and the speaker's `/metrics`. Root-only; skips with `SKIP:` otherwise.

use ferrolb_e2e::lab::bgp_lab::{metric, node_name, node_v4, BgpLab, ROUTER_V4};
use ferrolb_e2e::lab::{skip, wait_for};
use serde_json::Value;
use std::time::{Duration, Instant};

const SESSION: Duration = Duration::from_secs(20);
const VIP: &str = "203.0.113.70";
const PEER: &str = "{peer=\"192.0.2.254\"}";

/// FRR (AS 64500) with bfdd: control packets every 300 ms x 3, echo at 50 ms both ways.
fn frr_conf() -> String {
    let n = node_v4(1);
    format!(
        "frr defaults datacenter\nhostname router\n!\nbfd\n profile echo\n  receive-interval 300\n  transmit-interval 300\n  detect-multiplier 3\n  echo-mode\n  echo transmit-interval 50\n  echo receive-interval 50\n !\n!\nrouter bgp 64500\n bgp router-id {ROUTER_V4}\n no bgp ebgp-requires-policy\n neighbor {n} remote-as 64512\n neighbor {n} timers connect 1\n neighbor {n} bfd\n neighbor {n} bfd profile echo\n address-family ipv4 unicast\n  neighbor {n} activate\n exit-address-family\n!\n"
    )
}

/// The node with its InternalIP, a pool and advertisement, a BFDProfile with echo at 50 ms
/// over control packets at 300 ms x 3, the BGPPeer (hold 9 s) and one Service.
fn manifests() -> String {
    format!(
        "apiVersion: v1\nkind: Node\nmetadata: {{name: {node}}}\nstatus: {{addresses: [{{type: InternalIP, address: {ip}}}]}}\n---\napiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: public, namespace: ferrolb-system}}\nspec: {{addresses: [203.0.113.0/24]}}\n---\napiVersion: ferrolb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {{name: public, namespace: ferrolb-system}}\n---\napiVersion: ferrolb.io/v1beta1\nkind: BFDProfile\nmetadata: {{name: echo, namespace: ferrolb-system}}\nspec: {{receiveInterval: 300, transmitInterval: 300, detectMultiplier: 3, echoMode: true, echoInterval: 50}}\n---\napiVersion: ferrolb.io/v1beta1\nkind: BGPPeer\nmetadata: {{name: router, namespace: ferrolb-system}}\nspec: {{myASN: 64512, peerASN: 64500, peerAddress: {ROUTER_V4}, holdTime: 9s, connectTime: 1s, bfdProfile: echo}}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: default\n  annotations: {{ferrolb.io/loadBalancerIPs: \"{VIP}\"}}\nspec: {{type: LoadBalancer, ports: [{{port: 7, protocol: UDP}}]}}\n---\n",
        node = node_name(1),
        ip = node_v4(1),
    )
}

/// FRR's BFD session with the node, with its counters.
fn frr_bfd(lab: &BgpLab) -> Option<(Value, Value)> {
    let peer = node_v4(1);
    let find = |v: Value| {
        v.as_array()?
            .iter()
            .find(|p| p["peer"] == peer.as_str())
            .cloned()
    };
    let state = find(lab.frr().json("show bfd peers json").ok()?)?;
    let counters = find(lab.frr().json("show bfd peers counters json").ok()?)?;
    Some((state, counters))
}

fn counter(v: &Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or(0)
}

fn iptables(lab: &BgpLab, op: &str) {
    lab.router
        .exec(
            "iptables-legacy",
            &[
                "-w", op, "FORWARD", "-p", "udp", "--dport", "3785", "-j", "DROP",
            ],
        )
        .or_else(|_| {
            lab.router.exec(
                "iptables",
                &[
                    "-w", op, "FORWARD", "-p", "udp", "--dport", "3785", "-j", "DROP",
                ],
            )
        })
        .unwrap_or_else(|e| panic!("iptables {op}: {e}"));
}

#[test]
fn bfd_echo_both_ways_with_frr_and_an_echo_path_failure_ends_the_session() {
    let test = "bfd_echo_both_ways_with_frr_and_an_echo_path_failure_ends_the_session";
    if skip(test) {
        return;
    }
    let prefix = format!("{VIP}/32");
    let mut lab = BgpLab::new("echo", 1).unwrap();
    // A Kubernetes node forwards (kube-proxy and every CNI need it): FRR's echo packets, sent
    // to FRR's own address through the node, come back that way. No ICMP redirects for them.
    for key in [
        "net.ipv4.ip_forward=1",
        "net.ipv4.conf.all.send_redirects=0",
        "net.ipv4.conf.eth0.send_redirects=0",
    ] {
        lab.node(1).exec("sysctl", &["-q", "-w", key]).unwrap();
    }
    lab.start_frr(&frr_conf()).unwrap();
    lab.frr
        .as_mut()
        .expect("FRR started")
        .start_bfdd()
        .unwrap_or_else(|e| panic!("bfdd: {e}"));
    lab.write_manifests(&manifests());
    lab.start_speaker(1).unwrap();
    lab.wait_established(&[node_v4(1)], SESSION);
    lab.wait_next_hops("ipv4", &prefix, &[node_v4(1)], SESSION)
        .unwrap();

    // Echo both ways: FRR's echo packets come back through the node (its echo-packet-input
    // rises), ours come back through FRR's forwarding plane (our echo input rises), and FRR
    // sees our Required Min Echo RX of 50 ms.
    let (state, _) = wait_for(SESSION, Duration::from_millis(100), || {
        frr_bfd(&lab).filter(|(s, c)| {
            s["status"] == "up"
                && s["remote-echo-receive-interval"] == 50
                && counter(c, "echo-packet-input") > 10
        })
    })
    .unwrap_or_else(|| {
        panic!(
            "FRR's echo not looped back by the node: {:?}\n{}\n{}",
            frr_bfd(&lab),
            lab.frr().log("bfdd"),
            lab.logs()
        )
    });
    eprintln!("{test}: FRR's view of the session: {state}");
    let text = wait_for(SESSION, Duration::from_millis(100), || {
        let text = lab.scrape(1).ok()?;
        let back = metric(&text, &format!("ferrolb_bfd_echo_packet_input_total{PEER}"))?;
        (back > 10.0).then_some(text)
    })
    .unwrap_or_else(|| {
        panic!(
            "our echo packets do not come back:\n{}\n{}",
            lab.scrape(1).unwrap_or_default(),
            lab.logs()
        )
    });
    let out = metric(
        &text,
        &format!("ferrolb_bfd_echo_packet_output_total{PEER}"),
    )
    .unwrap();
    assert!(out > 10.0, "{text}");
    assert_eq!(
        metric(&text, &format!("ferrolb_bfd_session_up{PEER}")),
        Some(1.0)
    );

    // The router stops forwarding echo packets (UDP 3785) and nothing else: control packets
    // still flow both ways, so only echo can tell. Ours stop coming back: our session goes
    // down at once (Echo Function Failed), and with it the BGP session and the route, long
    // before the 9 s hold time and the 900 ms control detection time.
    iptables(&lab, "-A");
    let t0 = Instant::now();
    lab.wait_next_hop_gone("ipv4", &prefix, &node_v4(1), Duration::from_secs(10))
        .unwrap();
    let gone = t0.elapsed();
    eprintln!("{test}: echo path cut, route gone after {gone:?} (echo 50 ms x 3, control 300 ms x 3, hold 9 s)");
    assert!(
        gone < Duration::from_millis(850),
        "{gone:?}: not detected by echo"
    );
    let log = lab.speaker_proc(1).unwrap().log();
    assert!(log.contains("echo function failed"), "{log}");

    // The path back: everything comes up again.
    iptables(&lab, "-D");
    lab.wait_next_hops("ipv4", &prefix, &[node_v4(1)], SESSION)
        .unwrap();
}
