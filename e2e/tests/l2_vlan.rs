//! VLAN-tagged questions and Neighbor Solicitations with extension headers, against a real
//! kernel and the speaker's real socket filter.
//!
//! Tagged frames: Linux takes a frame's VLAN tag off before packet sockets see it, so a speaker
//! listening on `eth0` would see a question asked on VLAN 100 as an untagged one and answer on
//! the native VLAN. The client asks, with hand-made frames, once untagged and once tagged with
//! VLAN 100 (for other VIPs): only the untagged questions may be answered. Where the kernel has
//! VLAN devices (8021q), a second test puts the node and the client on VLAN 100 for real: the
//! answers come tagged, from `eth0.100`.
//!
//! Extension headers: a Neighbor Solicitation after a Hop-by-Hop and a Destination Options
//! header (as some stacks send) is answered like a plain one.

use ferrolb_e2e::lab::l2::client_solicitation;
use ferrolb_e2e::lab::l2::{capture_lines, node_mac, node_name, skip_reason, speaker_binary};
use ferrolb_e2e::lab::l2::{client_arp_request, L2Lab, LabProcess};
use ferrolb_e2e::lab::l2_scenario::{start_speaker, write_manifest_text};
use ferrolb_e2e::lab::{is_child, run_in_netns, wait_for, Capture};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::time::Duration;

const ECHO: &str = env!("CARGO_BIN_EXE_ferrolb-lab-echo");
const ASK: &str = "ask_untagged_and_tagged";
/// Asked untagged (ARP; NS after extension headers): answered.
const PLAIN4: &str = "192.0.2.200";
const PLAIN6: &str = "2001:db8::200";
/// Asked on VLAN 100 only: not answered (the node has no interface on VLAN 100).
const TAGGED4: &str = "192.0.2.201";
const TAGGED6: &str = "2001:db8::201";
/// Asked with a priority tag only (VLAN ID 0, 802.1p): the native VLAN, answered.
const PRIORITY4: &str = "192.0.2.202";
const PRIORITY6: &str = "2001:db8::202";

fn service(name: &str, v4: &str, v6: &str) -> String {
    format!(
        "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: default\n  annotations: {{ferrolb.io/loadBalancerIPs: \"{v4},{v6}\"}}\nspec: {{type: LoadBalancer, ipFamilyPolicy: RequireDualStack, ipFamilies: [IPv4, IPv6], ports: [{{port: 7, protocol: UDP}}]}}\n"
    )
}

fn manifests(pool: &str, services: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Node\nmetadata: {{name: {}}}\nstatus: {{addresses: [{{type: InternalIP, address: 192.0.2.1}}]}}\n---\napiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: lan, namespace: ferrolb-system}}\nspec: {{addresses: [{pool}]}}\n---\napiVersion: ferrolb.io/v1beta1\nkind: L2Advertisement\nmetadata: {{name: all, namespace: ferrolb-system}}\n{services}",
        node_name(1)
    )
}

/// `frame` with an 802.1Q tag (`tci`: priority and VLAN ID) after its MAC addresses.
fn tagged(frame: &[u8], tci: u16) -> Vec<u8> {
    let mut out = frame[..12].to_vec();
    out.extend_from_slice(&[0x81, 0x00]);
    out.extend_from_slice(&tci.to_be_bytes());
    out.extend_from_slice(&frame[12..]);
    out
}

/// The child, in the client's namespace: the questions, a few times each.
#[test]
fn ask_untagged_and_tagged() {
    if !is_child(ASK) {
        return;
    }
    use ferrolb_speaker::l2::sys::PacketSocket;
    let socket = PacketSocket::open(ferrolb_e2e::lab::l2::ifindex("eth0").unwrap()).unwrap();
    let frames = [
        client_arp_request(PLAIN4.parse::<Ipv4Addr>().unwrap()),
        client_solicitation(PLAIN6.parse().unwrap(), true),
        tagged(
            &client_arp_request(TAGGED4.parse::<Ipv4Addr>().unwrap()),
            100,
        ),
        tagged(&client_solicitation(TAGGED6.parse().unwrap(), false), 100),
        tagged(
            &client_arp_request(PRIORITY4.parse::<Ipv4Addr>().unwrap()),
            0xa000,
        ),
        tagged(
            &client_solicitation(PRIORITY6.parse().unwrap(), false),
            0xa000,
        ),
    ];
    for _ in 0..3 {
        for f in &frames {
            socket.send(f).unwrap();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn logs_dir(tag: &str) -> PathBuf {
    let logs = PathBuf::from("/tmp/ferrolb-lab").join(tag);
    let _ = std::fs::remove_dir_all(&logs);
    std::fs::create_dir_all(&logs).unwrap();
    logs
}

/// Answers from node 1 to the client (not the gratuitous ones, which go to everybody) for
/// `vip` in `lines`.
fn answers_to_client<'a>(lines: &'a [String], vip: &str) -> Vec<&'a String> {
    lines
        .iter()
        .filter(|l| l.contains(&format!("{} > 02:00:00:00:00:64", node_mac(1))))
        .filter(|l| {
            l.contains(&format!("Reply {vip} is-at"))
                || (l.contains("neighbor advertisement") && l.contains(&format!("tgt is {vip}")))
        })
        .collect()
}

#[test]
fn tagged_questions_are_not_answered_untagged_and_extension_headers_are_walked() {
    if is_child(ASK) {
        return;
    }
    if let Some(why) = skip_reason() {
        eprintln!("SKIP: L2 VLAN lab test {why}");
        return;
    }
    let tag = "lm-vt";
    let logs = logs_dir(tag);
    let lab = L2Lab::new(tag, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pool = format!(
        "{PLAIN4}/32, {TAGGED4}/32, {PRIORITY4}/32, \"{PLAIN6}/128\", \"{TAGGED6}/128\", \"{PRIORITY6}/128\""
    );
    let services = service("plain", PLAIN4, PLAIN6)
        + &service("tagged", TAGGED4, TAGGED6)
        + &service("priority", PRIORITY4, PRIORITY6);
    write_manifest_text(dir.path(), &manifests(&pool, &services)).unwrap();
    let speaker = speaker_binary().unwrap();
    let p: LabProcess = start_speaker(&lab, &speaker, dir.path(), 1, &logs, &[]).unwrap();
    for vip in [PLAIN4, PLAIN6, TAGGED4, TAGGED6, PRIORITY4, PRIORITY6] {
        p.wait_log(&format!("L2: announcing ip={vip}"), Duration::from_secs(10))
            .unwrap();
    }
    let pcap = logs.join("client.pcap");
    let mut capture = Capture::start(lab.client.name(), "eth0", "", &pcap).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    run_in_netns(&lab.client, ASK, Duration::from_secs(20)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    capture.stop();
    let lines = capture_lines(&pcap);
    for vip in [PLAIN4, PLAIN6, PRIORITY4, PRIORITY6] {
        let a = answers_to_client(&lines, vip);
        assert!(!a.is_empty(), "{vip}: no answer\n{}", p.log());
        assert!(a.iter().all(|l| !l.contains("vlan")), "{a:#?}");
        eprintln!(
            "{vip}: {} answers to untagged or priority-tagged questions",
            a.len()
        );
    }
    let asked_tagged = lines
        .iter()
        .filter(|l| l.contains("vlan 100,") && (l.contains(TAGGED4) || l.contains(TAGGED6)))
        .count();
    assert!(
        asked_tagged >= 6,
        "the tagged questions were not on the wire"
    );
    for vip in [TAGGED4, TAGGED6] {
        let a = answers_to_client(&lines, vip);
        assert!(a.is_empty(), "{vip} asked on VLAN 100 was answered: {a:#?}");
    }
    eprintln!("tagged questions: {asked_tagged} on the wire, none answered");
}

#[test]
fn on_a_vlan_interface_answers_go_out_tagged() {
    if is_child(ASK) {
        return;
    }
    if let Some(why) = skip_reason() {
        eprintln!("SKIP: L2 VLAN lab test {why}");
        return;
    }
    let tag = "lm-vl";
    let logs = logs_dir(tag);
    let lab = L2Lab::new(tag, 1).unwrap();
    let node = lab.node(1);
    let vlan = [
        "link", "add", "link", "eth0", "name", "eth0.100", "type", "vlan", "id", "100",
    ];
    if let Err(e) = node.ip(&vlan) {
        eprintln!("SKIP: this kernel has no VLAN devices (8021q): {e}");
        return;
    }
    lab.client.ip(&vlan).unwrap();
    let (vip4, vip6) = ("203.0.113.200", "2001:db8:64::200");
    for (ns, v4, v6) in [
        (node, "203.0.113.1/24", "2001:db8:64::1/64"),
        (&lab.client, "203.0.113.100/24", "2001:db8:64::100/64"),
    ] {
        ns.ip(&["link", "set", "eth0.100", "up"]).unwrap();
        ns.add_addr("eth0.100", v4).unwrap();
        ns.add_addr("eth0.100", v6).unwrap();
    }
    lab.add_vip(&format!("{vip4}/32")).unwrap();
    lab.add_vip(&format!("{vip6}/128")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let pool = format!("{vip4}/32, \"{vip6}/128\"");
    write_manifest_text(dir.path(), &manifests(&pool, &service("vip", vip4, vip6))).unwrap();
    let speaker = speaker_binary().unwrap();
    let p: LabProcess = start_speaker(&lab, &speaker, dir.path(), 1, &logs, &[]).unwrap();
    for vip in [vip4, vip6] {
        p.wait_log(&format!("L2: announcing ip={vip}"), Duration::from_secs(10))
            .unwrap();
    }
    let _echo = LabProcess::start_in(
        node.name(),
        Path::new(ECHO),
        &[
            "serve",
            &node_name(1),
            &format!("{vip4}:7"),
            &format!("[{vip6}]:7"),
        ],
        &[],
        &logs.join("echo-1.log"),
    )
    .unwrap();
    let pcap = logs.join("client.pcap");
    let mut capture = Capture::start(lab.client.name(), "eth0", "", &pcap).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    for vip in [vip4, vip6] {
        let addr = if vip.contains(':') {
            format!("[{vip}]:7")
        } else {
            format!("{vip}:7")
        };
        let answered = wait_for(Duration::from_secs(5), Duration::from_millis(100), || {
            lab.client
                .exec(ECHO, &["ask", &addr, "500"])
                .ok()
                .filter(|s| s.trim() == node_name(1))
        });
        assert!(
            answered.is_some(),
            "{vip} not reached over VLAN 100\n{}",
            p.log()
        );
    }
    std::thread::sleep(Duration::from_millis(300));
    capture.stop();
    let lines = capture_lines(&pcap);
    for vip in [vip4, vip6] {
        let a = answers_to_client(&lines, vip);
        assert!(
            a.iter().any(|l| l.contains("vlan 100")),
            "no tagged answer: {a:#?}"
        );
        assert!(
            a.iter().all(|l| l.contains("vlan 100")),
            "untagged answer: {a:#?}"
        );
    }
}
