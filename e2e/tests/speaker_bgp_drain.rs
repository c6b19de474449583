//! BGP graceful shutdown (RFC 8326) through the real speaker (issue 14): the BGP-mode lab
//! (`lab::bgp_lab`), FRR without graceful restart, three nodes, speakers with
//! `--graceful-shutdown-seconds`. Judges: FRR's table (the community, the paths in use), the
//! router's kernel routes, and a client's probe stream. Root-only; skips with `SKIP:`.

use ferrolb_e2e::lab::bgp_lab::{node_name, node_v4, node_v4s, BgpLab, ROUTER_V4};
use ferrolb_e2e::lab::probe::{unix_ns, ProbeLog, ProbeStream};
use ferrolb_e2e::lab::{skip, wait_for};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

const ECHO: &str = env!("CARGO_BIN_EXE_ferrolb-lab-echo");
const SESSION: Duration = Duration::from_secs(20);
const VIP: &str = "203.0.113.80";
const PREFIX: &str = "203.0.113.80/32";
/// The speakers' graceful-shutdown time.
const DRAIN: Duration = Duration::from_secs(2);

/// FRR (AS 64500) without graceful restart, ECMP over the three nodes, and the receiving side
/// of RFC 8326 as the RFC asks operators to configure it: paths with the GRACEFUL_SHUTDOWN
/// community get LOCAL_PREF 0, so they leave the best paths while they still forward.
fn frr_conf() -> String {
    let mut n = String::new();
    let mut activate = String::new();
    for a in node_v4s(&[1, 2, 3]) {
        n.push_str(&format!(
            " neighbor {a} remote-as 64512\n neighbor {a} timers connect 1\n"
        ));
        activate.push_str(&format!(
            "  neighbor {a} activate\n  neighbor {a} route-map FROM-NODES in\n"
        ));
    }
    format!(
        "frr defaults datacenter\nhostname router\n!\nbgp community-list standard GSHUT seq 5 permit graceful-shutdown\n!\nroute-map FROM-NODES permit 10\n match community GSHUT\n set local-preference 0\n!\nroute-map FROM-NODES permit 20\n!\nrouter bgp 64500\n bgp router-id {ROUTER_V4}\n no bgp ebgp-requires-policy\n bgp bestpath as-path multipath-relax\n{n} address-family ipv4 unicast\n  maximum-paths 8\n{activate} exit-address-family\n!\n"
    )
}

/// Three Nodes (node `excluded` with the exclusion label, node `cordoned` unschedulable), the
/// pool, the advertisement, the BGPPeer and one Service on every node.
fn manifests(excluded: Option<usize>, cordoned: Option<usize>) -> String {
    let mut y = String::new();
    for i in 1..=3 {
        let label = if excluded == Some(i) {
            "\n  labels: {node.kubernetes.io/exclude-from-external-load-balancers: \"\"}"
        } else {
            ""
        };
        let spec = if cordoned == Some(i) {
            "spec: {unschedulable: true}\n"
        } else {
            ""
        };
        y.push_str(&format!(
            "apiVersion: v1\nkind: Node\nmetadata:\n  name: {}{label}\n{spec}status: {{addresses: [{{type: InternalIP, address: {}}}]}}\n---\n",
            node_name(i),
            node_v4(i)
        ));
    }
    y.push_str(&format!(
        "apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: public, namespace: ferrolb-system}}\nspec: {{addresses: [203.0.113.0/24]}}\n---\napiVersion: ferrolb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {{name: public, namespace: ferrolb-system}}\n---\napiVersion: ferrolb.io/v1beta1\nkind: BGPPeer\nmetadata: {{name: router, namespace: ferrolb-system}}\nspec: {{myASN: 64512, peerASN: 64500, peerAddress: {ROUTER_V4}, connectTime: 1s}}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\n  namespace: default\n  annotations: {{ferrolb.io/loadBalancerIPs: \"{VIP}\"}}\nspec: {{type: LoadBalancer, ports: [{{port: 7, protocol: UDP}}]}}\n---\n"
    ));
    y
}

/// FRR's path for the VIP from node address `hop`.
fn path_via(lab: &BgpLab, hop: &str) -> Option<Value> {
    let v = lab
        .frr()
        .json(&format!("show bgp ipv4 unicast {PREFIX} json"))
        .ok()?;
    v.get("paths")?
        .as_array()?
        .iter()
        .find(|p| p["nexthops"][0]["ip"] == hop)
        .cloned()
}

/// The lab, with speakers started with graceful shutdown of `drain`.
fn lab(tag: &str, drain: Duration) -> BgpLab {
    let mut lab = BgpLab::new(tag, 3).unwrap();
    lab.speaker_args = vec![
        "--graceful-shutdown-seconds".into(),
        drain.as_secs().to_string(),
    ];
    lab.start_frr(&frr_conf()).unwrap();
    lab.write_manifests(&manifests(None, None));
    for i in 1..=3 {
        lab.start_speaker(i).unwrap();
    }
    lab.serve_echo(&[VIP], Path::new(ECHO)).unwrap();
    lab.wait_established(&node_v4s(&[1, 2, 3]), SESSION);
    lab.wait_next_hops("ipv4", PREFIX, &node_v4s(&[1, 2, 3]), SESSION)
        .unwrap();
    lab
}

#[test]
fn excluded_node_drains_its_route_with_the_graceful_shutdown_community() {
    let test = "excluded_node_drains_its_route_with_the_graceful_shutdown_community";
    if skip(test) {
        return;
    }
    let lab = lab("gs-x", DRAIN);
    let node3 = node_v4(3);
    // Node 3 gets the exclusion label: its route goes, gracefully. FRR first stops using it
    // (the community, LOCAL_PREF 0 by its policy) while it is still there...
    lab.write_manifests(&manifests(Some(3), None));
    let t0 = Instant::now();
    lab.wait_next_hops("ipv4", PREFIX, &node_v4s(&[1, 2]), SESSION)
        .unwrap();
    let moved = t0.elapsed();
    let p = path_via(&lab, &node3).unwrap_or_else(|| {
        panic!(
            "node-3's path left before the drain time ({moved:?})\n{}",
            lab.logs()
        )
    });
    let communities = p["community"]["string"].as_str().unwrap_or_default();
    assert!(
        communities.contains("graceful-shutdown") || communities.contains("gshut"),
        "{p}"
    );
    assert_eq!(p["locPrf"], 0, "{p}");
    // ... and then it is withdrawn, the drain time after the label.
    wait_for(Duration::from_secs(10), Duration::from_millis(20), || {
        path_via(&lab, &node3).is_none().then_some(())
    })
    .unwrap_or_else(|| panic!("node-3's path never withdrawn\n{}", lab.logs()));
    let withdrawn = t0.elapsed();
    eprintln!("{test}: node-3 excluded: traffic off its path after {moved:?}, path withdrawn after {withdrawn:?} (drain {DRAIN:?})");
    assert!(moved < DRAIN, "{moved:?}");
    assert!(
        withdrawn >= DRAIN - Duration::from_millis(200),
        "{withdrawn:?}"
    );
    // The label goes: the route is back, without the community.
    lab.write_manifests(&manifests(None, None));
    lab.wait_next_hops("ipv4", PREFIX, &node_v4s(&[1, 2, 3]), SESSION)
        .unwrap();
    let p = path_via(&lab, &node3).unwrap();
    assert!(p.get("community").is_none(), "{p}");
}

/// What one roll of removals did to the probe stream.
#[derive(Debug)]
struct Roll {
    /// How long each speaker took to stop.
    stops: Vec<Duration>,
    /// (what, when) of each step, to place lost probes.
    steps: Vec<(String, u128)>,
    from_ns: u128,
    to_ns: u128,
}

impl Roll {
    /// Probes sent, probes lost, and the steps that lost any (with how many).
    fn judge(&self, log: &ProbeLog) -> (u64, u64, Vec<String>) {
        let sent = ((self.to_ns - self.from_ns) / log.interval.as_nanos()) as u64;
        let lost = log.lost_between(self.from_ns, self.to_ns);
        let per_step = self
            .steps
            .windows(2)
            .filter_map(|w| {
                let n = log.lost_between(w[0].1, w[1].1);
                (n > 0).then(|| format!("{}: {n}", w[0].0))
            })
            .collect();
        (sent, lost, per_step)
    }
}

/// Every node in turn is drained and removed (cordoned, its speaker stopped with SIGTERM, its
/// link down at once), checked to have left no path at the router within 1 s, then brought back
/// with a new speaker (started with the lab's current arguments). With `remove` false it is a
/// rolling restart instead: not cordoned, the link stays up, the new speaker starts at once.
fn roll(lab: &mut BgpLab, remove: bool) -> Roll {
    let from_ns = unix_ns();
    let mut stops = Vec::new();
    let mut steps: Vec<(String, u128)> = Vec::new();
    for i in 1..=3 {
        // kubectl drain: the node is cordoned, then its Pods stop.
        if remove {
            steps.push((format!("node-{i} cordoned"), unix_ns()));
            lab.write_manifests(&manifests(None, Some(i)));
            std::thread::sleep(Duration::from_millis(300));
        }
        steps.push((format!("node-{i} SIGTERM"), unix_ns()));
        let t0 = Instant::now();
        let code = lab
            .speaker_proc(i)
            .unwrap()
            .terminate(DRAIN + Duration::from_secs(8));
        assert_eq!(code, Some(0), "node-{i}'s speaker stops cleanly");
        stops.push(t0.elapsed());
        if remove {
            // The node goes away at once.
            steps.push((format!("node-{i} stopped, link down"), unix_ns()));
            lab.node(i).ip(&["link", "set", "eth0", "down"]).unwrap();
            lab.wait_next_hop_gone("ipv4", PREFIX, &node_v4(i), Duration::from_secs(1))
                .unwrap();
            // It comes back for the next round.
            steps.push((format!("node-{i} back"), unix_ns()));
            lab.node(i).ip(&["link", "set", "eth0", "up"]).unwrap();
            lab.node(i)
                .ip(&["route", "replace", "default", "via", ROUTER_V4])
                .unwrap();
            lab.write_manifests(&manifests(None, None));
        } else {
            steps.push((format!("node-{i} stopped, restarting"), unix_ns()));
        }
        lab.start_speaker(i).unwrap();
        lab.wait_next_hops("ipv4", PREFIX, &node_v4s(&[1, 2, 3]), SESSION)
            .unwrap();
    }
    let to_ns = unix_ns();
    steps.push(("end".into(), to_ns));
    Roll {
        stops,
        steps,
        from_ns,
        to_ns,
    }
}

/// Issue 14, BGP: every node in turn drained and removed under a probe stream every 2 ms
/// through the router's ECMP (FRR without graceful restart). First without graceful shutdown
/// (the speakers withdraw at SIGTERM, as MetalLB): the flow's node takes probes with it when
/// its link goes. Then with `--graceful-shutdown-seconds 2`: no probe lost, and no path of a
/// removed node left at the router 1 s after it went. Then a rolling restart of every speaker
/// (not cordoned): no probe lost either.
#[test]
fn removing_each_node_in_turn_loses_no_probes() {
    let test = "removing_each_node_in_turn_loses_no_probes";
    if skip(test) {
        return;
    }
    const STREAM: Duration = Duration::from_secs(45);
    let mut lab = lab("gs-rm", Duration::ZERO);
    // The speakers started from now on drain.
    lab.speaker_args = vec![
        "--graceful-shutdown-seconds".into(),
        DRAIN.as_secs().to_string(),
    ];
    let stream = ProbeStream::start(
        &lab.client,
        Path::new(ECHO),
        VIP,
        Duration::from_millis(2),
        STREAM,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let plain = roll(&mut lab, true);
    let graceful = roll(&mut lab, true);
    let restart = roll(&mut lab, false);
    let log = stream.finish().unwrap();
    let stream_end_ns = log.start_ns + STREAM.as_nanos();
    assert!(
        restart.to_ns < stream_end_ns,
        "the probe stream ended before the removals did"
    );
    let (plain_sent, plain_lost, plain_where) = plain.judge(&log);
    let (sent, lost, lost_where) = graceful.judge(&log);
    eprintln!("{test}: without graceful shutdown: speakers stopped in {:?}; {plain_sent} probes sent, {plain_lost} lost {plain_where:?}", plain.stops);
    eprintln!("{test}: with graceful shutdown ({DRAIN:?}): speakers stopped in {:?}; {sent} probes sent, {lost} lost {lost_where:?}", graceful.stops);
    let (r_sent, r_lost, r_where) = restart.judge(&log);
    eprintln!("{test}: rolling restart with graceful shutdown ({DRAIN:?}), no graceful restart: speakers stopped in {:?}; {r_sent} probes sent, {r_lost} lost {r_where:?}", restart.stops);
    assert_eq!(lost, 0, "probes lost in the removals\n{}", lab.logs());
    assert_eq!(
        r_lost,
        0,
        "probes lost in the rolling restart\n{}",
        lab.logs()
    );
    // The test notices when graceful shutdown does nothing: the flow's own node was removed
    // once, at once.
    assert!(
        plain_lost > 0,
        "no probe lost without graceful shutdown either"
    );
}

/// The ETP Local Service of the last test: endpoints on node 1 (serving) and node 2 (`node2`:
/// its conditions, or `None` for no endpoint there any more).
fn local_manifests(node2: Option<&str>) -> String {
    let mut y = manifests(None, None).replace(
        "spec: {type: LoadBalancer, ports:",
        "spec: {type: LoadBalancer, externalTrafficPolicy: Local, ports:",
    );
    let mut endpoints = format!(
        "{{addresses: [198.51.100.51], nodeName: {}, conditions: {{ready: true, serving: true, terminating: false}}}}",
        node_name(1)
    );
    if let Some(conditions) = node2 {
        endpoints.push_str(&format!(
            ", {{addresses: [198.51.100.52], nodeName: {}, conditions: {conditions}}}",
            node_name(2)
        ));
    }
    y.push_str(&format!("apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: web-1, namespace: default, labels: {{kubernetes.io/service-name: web}}}}\naddressType: IPv4\nendpoints: [{endpoints}]\nports: [{{port: 7, protocol: UDP}}]\n---\n"));
    y
}

/// Issue 14, ETP Local: the last endpoint on node 2 terminates (serving and terminating, as
/// kube-proxy still sends to it): the node keeps its route, with the GRACEFUL_SHUTDOWN
/// community, so the router moves the traffic to node 1 while node 2 still serves; when the
/// endpoint is gone (and with it what answered on node 2) the route goes at once, not after
/// the drain time. Several flows, so some start on node 2: none loses a probe.
#[test]
fn etp_local_terminating_endpoint_moves_traffic_before_it_goes() {
    let test = "etp_local_terminating_endpoint_moves_traffic_before_it_goes";
    if skip(test) {
        return;
    }
    const STREAM: Duration = Duration::from_secs(8);
    // Eight flows over two nodes: some start on node 2 (all eight on node 1: 1 run in 256).
    const FLOWS: usize = 8;
    const SERVING: &str = "{ready: true, serving: true, terminating: false}";
    const TERMINATING: &str = "{ready: false, serving: true, terminating: true}";
    let mut lab = BgpLab::new("gs-etp", 3).unwrap();
    lab.speaker_args = vec![
        "--graceful-shutdown-seconds".into(),
        DRAIN.as_secs().to_string(),
    ];
    lab.start_frr(&frr_conf()).unwrap();
    lab.write_manifests(&local_manifests(Some(SERVING)));
    for i in 1..=3 {
        lab.start_speaker(i).unwrap();
    }
    lab.serve_echo(&[VIP], Path::new(ECHO)).unwrap();
    lab.wait_established(&node_v4s(&[1, 2, 3]), SESSION);
    lab.wait_next_hops("ipv4", PREFIX, &node_v4s(&[1, 2]), SESSION)
        .unwrap();
    let streams: Vec<ProbeStream> = (0..FLOWS)
        .map(|_| {
            ProbeStream::start(
                &lab.client,
                Path::new(ECHO),
                VIP,
                Duration::from_millis(2),
                STREAM,
            )
            .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));

    // Node 2's endpoint terminates: its route stays, marked; the router moves off it.
    let terminating_ns = unix_ns();
    lab.write_manifests(&local_manifests(Some(TERMINATING)));
    let t0 = Instant::now();
    lab.wait_next_hops("ipv4", PREFIX, &node_v4s(&[1]), SESSION)
        .unwrap();
    let moved = t0.elapsed();
    let p = path_via(&lab, &node_v4(2)).expect("node-2's path is still there");
    assert_eq!(p["locPrf"], 0, "{p}");
    std::thread::sleep(Duration::from_millis(500));

    // The endpoint is gone, and so is what answered on node 2: the route goes at once.
    let gone_ns = unix_ns();
    lab.write_manifests(&local_manifests(None));
    lab.echoes[1].kill();
    let t1 = Instant::now();
    wait_for(Duration::from_secs(10), Duration::from_millis(10), || {
        path_via(&lab, &node_v4(2)).is_none().then_some(())
    })
    .expect("node-2's path withdrawn");
    let withdrawn = t1.elapsed();
    let logs: Vec<ProbeLog> = streams.into_iter().map(|s| s.finish().unwrap()).collect();
    let mut on_node2 = 0;
    for log in &logs {
        let before = log
            .answers
            .iter()
            .rev()
            .find(|a| a.sent_ns < terminating_ns)
            .map(|a| a.node.clone());
        if before.as_deref() == Some(node_name(2).as_str()) {
            on_node2 += 1;
        }
    }
    let lost: Vec<u64> = logs
        .iter()
        .map(|l| l.lost_between(l.start_ns, l.start_ns + STREAM.as_nanos()))
        .collect();
    eprintln!("{test}: node-2's endpoint terminating: traffic off node-2 after {moved:?}; endpoint gone: path withdrawn after {withdrawn:?} (drain time {DRAIN:?} not waited); {on_node2} of {FLOWS} flows were on node-2; probes lost per flow {lost:?}");
    assert!(
        withdrawn < DRAIN,
        "{withdrawn:?}: a route with no endpoint behind it must not be drained"
    );
    assert!(gone_ns > terminating_ns);
    if on_node2 == 0 {
        eprintln!("NOTE: {test}: no flow hashed to node-2 this run; only the withdrawal timing was checked");
    }
    assert!(
        lost.iter().all(|n| *n == 0),
        "probes lost: {lost:?}\n{}",
        lab.logs()
    );
}

/// Issue 14 with graceful restart at the router and on the peer: a restart (the node not
/// cordoned) keeps graceful-restart semantics: the speaker stops at once and FRR keeps the
/// path, stale, while it is away; a removal (cordoned) drains and ends with a Cease, so no
/// stale path is left; a crash (SIGKILL) keeps the stale path for the restart time as before.
/// Six 2 ms flows through the restart and the removal: none loses a probe.
#[test]
fn with_graceful_restart_a_restart_keeps_the_path_and_a_removal_leaves_none() {
    let test = "with_graceful_restart_a_restart_keeps_the_path_and_a_removal_leaves_none";
    if skip(test) {
        return;
    }
    let gr = |y: String| {
        y.replace(
            "connectTime: 1s}",
            "connectTime: 1s, enableGracefulRestart: true}",
        )
    };
    let mut lab = BgpLab::new("gs-gr", 3).unwrap();
    lab.speaker_args = vec![
        "--graceful-shutdown-seconds".into(),
        DRAIN.as_secs().to_string(),
    ];
    lab.start_frr(&frr_conf().replace(
        " bgp bestpath as-path multipath-relax\n",
        " bgp bestpath as-path multipath-relax\n bgp graceful-restart\n",
    ))
    .unwrap();
    lab.write_manifests(&gr(manifests(None, None)));
    for i in 1..=3 {
        lab.start_speaker(i).unwrap();
    }
    lab.wait_established(&node_v4s(&[1, 2, 3]), SESSION);
    lab.wait_next_hops("ipv4", PREFIX, &node_v4s(&[1, 2, 3]), SESSION)
        .unwrap();
    let stale = |lab: &BgpLab, i: usize| path_via(lab, &node_v4(i)).map(|p| p["stale"] == true);
    lab.serve_echo(&[VIP], Path::new(ECHO)).unwrap();
    // Several flows, so that each node carries some.
    let streams: Vec<ProbeStream> = (0..6)
        .map(|_| {
            ProbeStream::start(
                &lab.client,
                Path::new(ECHO),
                VIP,
                Duration::from_millis(2),
                Duration::from_secs(15),
            )
            .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let start_ns = unix_ns();

    // Node 1 restarts: out at once, its path kept stale.
    let t0 = Instant::now();
    let code = lab
        .speaker_proc(1)
        .unwrap()
        .terminate(Duration::from_secs(10));
    assert_eq!(code, Some(0));
    let restart_stop = t0.elapsed();
    wait_for(Duration::from_secs(5), Duration::from_millis(10), || {
        (stale(&lab, 1) == Some(true)).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "node-1's path not kept stale: {:?}\n{}",
            path_via(&lab, &node_v4(1)),
            lab.logs()
        )
    });
    lab.start_speaker(1).unwrap();
    wait_for(SESSION, Duration::from_millis(20), || {
        (stale(&lab, 1) == Some(false)).then_some(())
    })
    .expect("node-1's path fresh again");

    // Node 2 is removed: drained, then no path left, stale or not.
    lab.write_manifests(&gr(manifests(None, Some(2))));
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    let code = lab
        .speaker_proc(2)
        .unwrap()
        .terminate(DRAIN + Duration::from_secs(8));
    assert_eq!(code, Some(0));
    let removal_stop = t0.elapsed();
    wait_for(Duration::from_secs(1), Duration::from_millis(10), || {
        path_via(&lab, &node_v4(2)).is_none().then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "node-2's path left behind: {:?}\n{}",
            path_via(&lab, &node_v4(2)),
            lab.logs()
        )
    });

    let end_ns = unix_ns();

    // Node 3 crashes: its path is kept stale, as graceful restart wants.
    lab.speaker_proc(3).unwrap().kill();
    wait_for(Duration::from_secs(5), Duration::from_millis(10), || {
        (stale(&lab, 3) == Some(true)).then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "node-3's path not kept stale after SIGKILL: {:?}",
            path_via(&lab, &node_v4(3))
        )
    });
    let lost: Vec<u64> = streams
        .into_iter()
        .map(|st| st.finish().unwrap().lost_between(start_ns, end_ns))
        .collect();
    eprintln!("{test}: restart: speaker out in {restart_stop:?}, path kept stale; removal: speaker out in {removal_stop:?} (drain {DRAIN:?}), no path left; crash: path kept stale; probes lost per flow through the restart and the removal: {lost:?}");
    assert!(lost.iter().all(|n| *n == 0), "probes lost: {lost:?}");
    assert!(
        restart_stop < Duration::from_secs(1),
        "{restart_stop:?}: a restart does not drain graceful-restart peers"
    );
    assert!(removal_stop >= DRAIN, "{removal_stop:?}: a removal drains");
}

/// Issue 14: a BGPPeer that no longer selects a node drains that node's routes before its
/// session ends: the path stays with the community (and out of use) for the drain time, then
/// the session ends and the path goes.
#[test]
fn a_peer_that_stops_selecting_a_node_drains_before_its_session_ends() {
    let test = "a_peer_that_stops_selecting_a_node_drains_before_its_session_ends";
    if skip(test) {
        return;
    }
    let lab = lab("gs-sel", DRAIN);
    let node3 = node_v4(3);
    let not_node3 = manifests(None, None)
        .replace(
            &format!("  name: {}\n", node_name(3)),
            &format!("  name: {}\n  labels: {{rack: \"3\"}}\n", node_name(3)),
        )
        .replace(
            "connectTime: 1s}",
            "connectTime: 1s, nodeSelectors: [{matchExpressions: [{key: rack, operator: NotIn, values: [\"3\"]}]}]}",
        );
    lab.write_manifests(&not_node3);
    let t0 = Instant::now();
    lab.wait_next_hops("ipv4", PREFIX, &node_v4s(&[1, 2]), SESSION)
        .unwrap();
    let moved = t0.elapsed();
    let p = path_via(&lab, &node3).expect("node-3's path still there, drained");
    assert_eq!(p["locPrf"], 0, "{p}");
    assert_eq!(
        lab.frr().neighbor_state(&node3).as_deref(),
        Some("Established"),
        "the session waits for the drain"
    );
    wait_for(Duration::from_secs(10), Duration::from_millis(20), || {
        (path_via(&lab, &node3).is_none()
            && lab.frr().neighbor_state(&node3).as_deref() != Some("Established"))
        .then_some(())
    })
    .unwrap_or_else(|| panic!("node-3's session never ended\n{}", lab.logs()));
    let ended = t0.elapsed();
    eprintln!("{test}: traffic off node-3's path after {moved:?}; session ended and path gone after {ended:?} (drain {DRAIN:?})");
    assert!(moved < DRAIN, "{moved:?}");
    assert!(ended >= DRAIN - Duration::from_millis(200), "{ended:?}");
}
