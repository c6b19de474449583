//! The speaker's /metrics, /healthz and /readyz against real kernels: `ferrolb-speaker run` in
//! node namespaces on one bridge (namespaces `flb-op-*`), a client putting hand-made ARP
//! requests and Neighbor Solicitations on the wire, and the counters read back over HTTP must
//! have moved by exactly what was sent, matching what a capture on the client saw.

// The value of a series in a /metrics text (the local closures named `metric` narrow it).

use ferrolb_e2e::lab::bgp_lab::metric as value;
use ferrolb_e2e::lab::l2::client_solicitation;
use ferrolb_e2e::lab::l2::{
    capture_lines, client_arp_request, node_mac, node_name, skip_reason, speaker_binary, L2Lab,
    LabProcess,
};
use ferrolb_e2e::lab::{is_child, run_in_netns, wait_for, Capture, NetNs};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const VIP4: &str = "192.0.2.200";
const VIP6: &str = "2001:db8::200";
/// In the pool but never assigned: nobody owns it, so nothing may count it.
const UNOWNED4: &str = "192.0.2.201";
const CLIENT_MAC_TEXT: &str = "02:00:00:00:00:64";
/// What the client sends (see `send_queries`).
const ARP_FOR_VIP: usize = 5;
const NS_FOR_VIP: usize = 3;
const ARP_FOR_UNOWNED: usize = 4;

fn skip() -> bool {
    if let Some(why) = skip_reason() {
        eprintln!("SKIP: speaker metrics lab test {why}");
        return true;
    }
    false
}

fn manifests(nodes: &[usize]) -> String {
    let mut out = String::new();
    for i in nodes {
        out.push_str(&format!(
            "apiVersion: v1\nkind: Node\nmetadata: {{name: {}}}\nstatus: {{addresses: [{{type: InternalIP, address: 192.0.2.{}}}]}}\n---\n",
            node_name(*i),
            i
        ));
    }
    out.push_str(&format!(
        "apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: lan, namespace: ferrolb-system}}\nspec: {{addresses: [{VIP4}/31, \"{VIP6}/128\"]}}\n---\napiVersion: ferrolb.io/v1beta1\nkind: L2Advertisement\nmetadata: {{name: lan, namespace: ferrolb-system}}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: vip\n  namespace: default\n  annotations: {{ferrolb.io/loadBalancerIPs: \"{VIP4},{VIP6}\", ferrolb.io/allow-shared-ip: lab}}\nspec: {{type: LoadBalancer, ipFamilyPolicy: RequireDualStack, ipFamilies: [IPv4, IPv6], ports: [{{port: 7, protocol: UDP}}]}}\n"
    ));
    out
}

/// A second Service on the IPv4 VIP (shared by key, on another port).
const SHARING_SERVICE: &str = "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: dns\n  namespace: default\n  annotations: {ferrolb.io/loadBalancerIPs: \"192.0.2.200\", ferrolb.io/allow-shared-ip: lab}\nspec: {type: LoadBalancer, ports: [{port: 53, protocol: UDP}]}\n";

/// Replaces the lab's manifest atomically (a speaker never reads half a file).
fn write_config(dir: &Path, text: &str) {
    let tmp = dir.join(".lab.tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, dir.join("lab.yaml")).unwrap();
}

fn logs_dir(tag: &str) -> PathBuf {
    let d = PathBuf::from("/tmp/ferrolb-lab").join(tag);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn start_speaker(
    lab: &L2Lab,
    speaker: &Path,
    dir: &Path,
    i: usize,
    extra: &[&str],
    logs: &Path,
) -> LabProcess {
    let source = format!("file:{}", dir.display());
    let mut args = vec![
        "run",
        "--source",
        &source,
        "--poll-ms",
        "50",
        "--metrics-addr",
        "127.0.0.1:7472",
    ];
    args.extend_from_slice(extra);
    LabProcess::start(
        lab.node(i),
        speaker,
        &args,
        &[
            ("NODE_NAME", &node_name(i)),
            ("RUST_LOG", "info,ferrolb_speaker=debug"),
        ],
        &logs.join(format!("speaker-{i}.log")),
    )
    .unwrap()
}

/// GET `path` from the speaker in `ns` (HTTP/1.0 through bash, so the lab needs no curl):
/// (status, body), or `None` while nothing listens.
fn http_get(ns: &NetNs, path: &str) -> Option<(u16, String)> {
    let script = format!(
        "exec 3<>/dev/tcp/127.0.0.1/7472 && printf 'GET {path} HTTP/1.0\\r\\n\\r\\n' >&3 && timeout 5 cat <&3"
    );
    let out = ns.exec("bash", &["-c", &script]).ok()?;
    let code = out.split_whitespace().nth(1)?.parse().ok()?;
    let body = out.split("\r\n\r\n").nth(1).unwrap_or_default().to_owned();
    Some((code, body))
}

fn scrape(ns: &NetNs) -> String {
    match http_get(ns, "/metrics") {
        Some((200, body)) => body,
        other => panic!("/metrics: {other:?}"),
    }
}

fn l2(name: &str, ip: &str) -> String {
    format!("ferrolb_layer2_{name}_total{{ip=\"{ip}\",interface=\"eth0\"}}")
}

/// In the client namespace: puts the queries on eth0, 20 ms apart.
fn send_queries() {
    use ferrolb_speaker::l2::sys::PacketSocket;
    let socket = PacketSocket::open(ferrolb_e2e::lab::l2::ifindex("eth0").unwrap()).unwrap();
    let mut frames = Vec::new();
    frames.extend((0..ARP_FOR_VIP).map(|_| client_arp_request(VIP4.parse().unwrap())));
    frames.extend((0..NS_FOR_VIP).map(|_| client_solicitation(VIP6.parse().unwrap(), false)));
    frames.extend((0..ARP_FOR_UNOWNED).map(|_| client_arp_request(UNOWNED4.parse().unwrap())));
    for f in frames {
        socket.send(&f).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
}

const COUNTS_TEST: &str =
    "l2_counters_move_by_exactly_the_queries_sent_and_readyz_waits_for_a_valid_config";

#[test]
fn l2_counters_move_by_exactly_the_queries_sent_and_readyz_waits_for_a_valid_config() {
    if is_child(COUNTS_TEST) {
        send_queries();
        return;
    }
    if skip() {
        return;
    }
    let started = Instant::now();
    let speaker = speaker_binary().unwrap();
    let tag = "op";
    let logs = logs_dir("op-metrics");
    let config = tempfile::tempdir().unwrap();
    let lab = L2Lab::new(tag, 1).unwrap();
    lab.add_vip(&format!("{VIP4}/32")).unwrap();
    lab.add_vip(&format!("{VIP6}/128")).unwrap();
    let node = lab.node(1);
    // A directory that cannot be read as a whole first (a YAML syntax error: a bad object alone
    // would only be left out): the speaker serves, alive but not ready.
    let broken = format!("{}\n---\nkind: [\n", manifests(&[1]));
    write_config(config.path(), &broken);
    let mut p = start_speaker(
        &lab,
        &speaker,
        config.path(),
        1,
        &["--live", "node-1"],
        &logs,
    );
    let (code, body) = wait_for(Duration::from_secs(10), Duration::from_millis(50), || {
        http_get(node, "/readyz")
    })
    .unwrap_or_else(|| panic!("no /readyz:\n{}", p.log()));
    assert_eq!(
        (code, body.as_str()),
        (503, "no valid configuration loaded yet\n")
    );
    assert_eq!(http_get(node, "/healthz").unwrap().0, 200);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(http_get(node, "/readyz").unwrap().0, 503, "{}", p.log());

    let capture = Capture::start(
        lab.client.name(),
        "eth0",
        "arp or icmp6",
        &logs.join("client.pcap"),
    )
    .unwrap();
    let mut capture = capture;
    write_config(config.path(), &manifests(&[1]));
    wait_for(Duration::from_secs(10), Duration::from_millis(50), || {
        (http_get(node, "/readyz")?.0 == 200).then_some(())
    })
    .unwrap_or_else(|| panic!("never ready:\n{}", p.log()));
    let taken_over = Instant::now();
    for vip in [VIP4, VIP6] {
        p.wait_log(&format!("L2: announcing ip={vip}"), Duration::from_secs(5))
            .unwrap();
    }
    let text = scrape(node);
    for vip in [VIP4, VIP6] {
        let series = format!(
            "ferrolb_speaker_announced{{service=\"default/vip\",protocol=\"layer2\",node=\"node-1\",ip=\"{vip}\",interface=\"eth0\"}}"
        );
        assert_eq!(value(&text, &series), Some(1.0), "{series}\n{text}");
        assert_eq!(value(&text, &l2("requests_received", vip)), Some(0.0));
    }

    run_in_netns(&lab.client, COUNTS_TEST, Duration::from_secs(30)).unwrap();
    let want_v4 = ARP_FOR_VIP as f64;
    let want_v6 = NS_FOR_VIP as f64;
    let text = wait_for(Duration::from_secs(5), Duration::from_millis(50), || {
        let text = scrape(node);
        (value(&text, &l2("responses_sent", VIP4)) == Some(want_v4)
            && value(&text, &l2("responses_sent", VIP6)) == Some(want_v6))
        .then_some(text)
    })
    .unwrap_or_else(|| panic!("answers not counted:\n{}\n{}", scrape(node), p.log()));
    assert_eq!(value(&text, &l2("requests_received", VIP4)), Some(want_v4));
    assert_eq!(value(&text, &l2("requests_received", VIP6)), Some(want_v6));
    assert!(
        !text.contains(UNOWNED4),
        "an unowned address counted:\n{text}"
    );

    // The announcement burst (0, 50, 250, 1100, 2200 ms) is over 2.2 s after the takeover and
    // the next refresh is a minute away: 5 rounds, each a gratuitous request and reply (IPv4)
    // or one unsolicited NA (IPv6).
    let settle = Duration::from_millis(2700).saturating_sub(taken_over.elapsed());
    std::thread::sleep(settle);
    let text = scrape(node);
    assert_eq!(
        value(&text, &l2("gratuitous_sent", VIP4)),
        Some(10.0),
        "{text}"
    );
    assert_eq!(
        value(&text, &l2("gratuitous_sent", VIP6)),
        Some(5.0),
        "{text}"
    );
    // Once more after the queries: the requests still count exactly once each.
    assert_eq!(value(&text, &l2("requests_received", VIP4)), Some(want_v4));

    // The capture agrees: what reached the client is what the counters say was sent.
    capture.stop();
    let lines = capture_lines(capture.path());
    let from_node = |l: &&String| l.split_whitespace().nth(1) == Some(node_mac(1).as_str());
    let to_client = |l: &&String| l.contains(&format!("> {CLIENT_MAC_TEXT}"));
    let arp_replies = lines
        .iter()
        .filter(from_node)
        .filter(to_client)
        .filter(|l| l.contains(&format!("Reply {VIP4} is-at")))
        .count();
    let nas = lines
        .iter()
        .filter(from_node)
        .filter(to_client)
        .filter(|l| l.contains("neighbor advertisement") && l.contains(&format!("tgt is {VIP6}")))
        .count();
    let gratuitous4 = lines
        .iter()
        .filter(from_node)
        .filter(|l| l.contains("> ff:ff:ff:ff:ff:ff"))
        .filter(|l| {
            l.contains(&format!("Reply {VIP4} is-at"))
                || l.contains(&format!("who-has {VIP4} tell {VIP4}"))
        })
        .count();
    let unsolicited6 = lines
        .iter()
        .filter(from_node)
        .filter(|l| l.contains("> 33:33:00:00:00:01"))
        .filter(|l| l.contains("neighbor advertisement") && l.contains(&format!("tgt is {VIP6}")))
        .count();
    assert_eq!(
        (arp_replies, nas, gratuitous4, unsolicited6),
        (ARP_FOR_VIP, NS_FOR_VIP, 10, 5),
        "capture:\n{}",
        lines.join("\n")
    );
    // A Service joining an address already owned shows at once, with no change of ownership.
    write_config(
        config.path(),
        &format!("{}{SHARING_SERVICE}", manifests(&[1])),
    );
    let dns = format!(
        "ferrolb_speaker_announced{{service=\"default/dns\",protocol=\"layer2\",node=\"node-1\",ip=\"{VIP4}\",interface=\"eth0\"}}"
    );
    wait_for(Duration::from_secs(5), Duration::from_millis(50), || {
        (value(&scrape(node), &dns) == Some(1.0)).then_some(())
    })
    .unwrap_or_else(|| panic!("no {dns}:\n{}\n{}", scrape(node), p.log()));

    // A bad edit keeps the last good configuration: still ready, still announcing.
    write_config(config.path(), &broken);
    let rejections = || p.log().matches("configuration rejected").count();
    wait_for(Duration::from_secs(5), Duration::from_millis(20), || {
        (rejections() == 2).then_some(())
    })
    .unwrap_or_else(|| panic!("the bad edit was not rejected:\n{}", p.log()));
    assert_eq!(http_get(node, "/readyz").unwrap().0, 200);
    assert!(scrape(node).contains("ferrolb_speaker_announced{service=\"default/vip\""));
    assert_eq!(p.terminate(Duration::from_secs(5)), Some(0), "{}", p.log());
    eprintln!("speaker metrics L2 test took {:?}", started.elapsed());
}

#[test]
fn membership_metrics_count_a_join_and_a_hard_kill() {
    if skip() {
        return;
    }
    let started = Instant::now();
    let speaker = speaker_binary().unwrap();
    let logs = logs_dir("op-members");
    let config = tempfile::tempdir().unwrap();
    let lab = L2Lab::new("opm", 2).unwrap();
    write_config(config.path(), &manifests(&[1, 2]));
    let membership = ["--insecure-membership"];
    let p1 = start_speaker(&lab, &speaker, config.path(), 1, &membership, &logs);
    let mut p2 = start_speaker(&lab, &speaker, config.path(), 2, &membership, &logs);
    let node = lab.node(1);
    let metric = |text: &str, name: &str| value(text, &format!("ferrolb_membership_{name}"));
    let text = wait_for(Duration::from_secs(10), Duration::from_millis(50), || {
        let (code, text) = http_get(node, "/metrics")?;
        (code == 200 && metric(&text, "live_members") == Some(2.0)).then_some(text)
    })
    .unwrap_or_else(|| panic!("node-2 never joined:\n{}", p1.log()));
    assert_eq!(metric(&text, "joins_total"), Some(1.0), "{text}");
    assert_eq!(metric(&text, "deaths_total"), Some(0.0), "{text}");
    let unauthenticated = "datagrams_dropped_total{reason=\"unauthenticated\"}";
    assert_eq!(metric(&text, unauthenticated), Some(0.0), "{text}");

    // A hard kill: the speaker SIGKILLed and its link down.
    p2.kill();
    lab.node(2).ip(&["link", "set", "eth0", "down"]).unwrap();
    // The fast path leaves it out of the live set first; membership's verdict follows.
    let text = wait_for(Duration::from_secs(5), Duration::from_millis(20), || {
        let text = scrape(node);
        (metric(&text, "live_members") == Some(1.0) && metric(&text, "deaths_total") == Some(1.0))
            .then_some(text)
    })
    .unwrap_or_else(|| panic!("node-2 never declared dead:\n{}", p1.log()));
    assert_eq!(metric(&text, "fast_downs_total"), Some(1.0), "{text}");
    assert_eq!(metric(&text, "fast_backs_total"), Some(0.0), "{text}");
    assert_eq!(metric(&text, "joins_total"), Some(1.0), "{text}");
    // Detection goes through suspicion (at least one of our own probes failed).
    assert!(metric(&text, "suspicions_total").unwrap() >= 1.0, "{text}");
    eprintln!(
        "speaker membership metrics test took {:?}",
        started.elapsed()
    );
}

fn with_key(key: &str) -> String {
    format!(
        "{}---\napiVersion: v1\nkind: Secret\nmetadata: {{name: ferrolb-memberlist, namespace: ferrolb-system}}\nstringData: {{secretkey: \"{key}\"}}\n",
        manifests(&[1, 2])
    )
}

#[test]
fn speakers_with_different_keys_show_as_unauthenticated_drops() {
    if skip() {
        return;
    }
    let started = Instant::now();
    let speaker = speaker_binary().unwrap();
    let logs = logs_dir("op-keys");
    let (config1, config2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    write_config(config1.path(), &with_key("the-first-membership-key"));
    write_config(config2.path(), &with_key("another-membership-key!!"));
    let lab = L2Lab::new("opk", 2).unwrap();
    let p1 = start_speaker(&lab, &speaker, config1.path(), 1, &[], &logs);
    let _p2 = start_speaker(&lab, &speaker, config2.path(), 2, &[], &logs);
    let node = lab.node(1);
    let metric = |text: &str, name: &str| value(text, &format!("ferrolb_membership_{name}"));
    let unauthenticated = "datagrams_dropped_total{reason=\"unauthenticated\"}";
    let text = wait_for(Duration::from_secs(10), Duration::from_millis(50), || {
        let (code, text) = http_get(node, "/metrics")?;
        (code == 200 && metric(&text, unauthenticated).is_some_and(|n| n >= 1.0)).then_some(text)
    })
    .unwrap_or_else(|| panic!("no unauthenticated drops counted:\n{}", p1.log()));
    assert_eq!(metric(&text, "live_members"), Some(1.0), "{text}");
    assert_eq!(metric(&text, "joins_total"), Some(0.0), "{text}");
    eprintln!(
        "speaker key mismatch metrics test took {:?}",
        started.elapsed()
    );
}
