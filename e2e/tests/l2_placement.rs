//! Balanced L2 placement against real kernels: 100 VIPs on three nodes (namespaces `flb-pl-*`),
//! speakers with membership; after each of 10 hard kills of a node (chosen by a fixed
//! pseudo-random sequence) and after each return, every VIP is answered by exactly one node, the
//! one `ferrolb-speaker plan` names, and no node owns more than the bound. The client asks with
//! hand-made ARP requests and a capture counts who answers. Root-only; skips with `SKIP:`.

use ferrolb_e2e::lab::l2::{capture_lines, node_mac, node_name, skip_reason, speaker_binary};
use ferrolb_e2e::lab::l2::{client_arp_request, L2Lab, LabProcess};
use ferrolb_e2e::lab::l2_scenario::{kill_hard, link_up, owners, start_speaker};
use ferrolb_e2e::lab::{is_child, run_in_netns, Capture};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

const TEST: &str = "every_one_of_a_hundred_vips_has_exactly_one_answerer_through_kills_and_returns";
const NODES: usize = 3;
const VIPS: u8 = 100;

fn vip(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, 110 + i)
}

fn manifests() -> String {
    let vips: Vec<Ipv4Addr> = (0..VIPS).map(vip).collect();
    ferrolb_e2e::lab::l2_scenario::vip_services_manifests(NODES, &vips)
}

/// In the client's namespace: one ARP request for every VIP.
fn ask_all() {
    use ferrolb_speaker::l2::sys::PacketSocket;
    let socket = PacketSocket::open(ferrolb_e2e::lab::l2::ifindex("eth0").unwrap()).unwrap();
    for i in 0..VIPS {
        socket.send(&client_arp_request(vip(i))).unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Who answers each VIP now: the MACs of the ARP replies the client sees.
fn answerers(lab: &L2Lab, dir: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let pcap = dir.join("replies.pcap");
    let mut capture = Capture::start(lab.client.name(), "eth0", "arp", &pcap).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    run_in_netns(&lab.client, TEST, Duration::from_secs(20)).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    capture.stop();
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in capture_lines(&pcap) {
        // "... Reply 192.0.2.110 is-at 02:00:00:00:00:01, length 28"
        let Some(rest) = line.split("Reply ").nth(1) else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let (Some(ip), Some("is-at"), Some(mac)) = (words.next(), words.next(), words.next())
        else {
            continue;
        };
        out.entry(ip.to_string())
            .or_default()
            .insert(mac.trim_end_matches(',').to_string());
    }
    out
}

/// Every VIP answered by exactly its planned owner; retried for `settle` (failover, or a
/// returning node's hold-down and the old owner's make-before-break grace).
fn check(
    lab: &L2Lab,
    dir: &Path,
    speaker: &Path,
    alive: &[usize],
    settle: Duration,
    step: &str,
    logs: &dyn Fn() -> String,
) {
    let planned = owners(speaker, dir, alive).unwrap();
    assert_eq!(planned.len(), VIPS as usize, "{step}: {planned:?}");
    let mut load: BTreeMap<usize, usize> = BTreeMap::new();
    for n in planned.values() {
        *load.entry(*n).or_default() += 1;
    }
    let bound = ferrolb_speaker::planner::l2_load_bound(VIPS as usize, alive.len());
    assert!(
        load.values().all(|l| *l <= bound),
        "{step}: loads {load:?} above {bound}"
    );
    let deadline = Instant::now() + settle;
    loop {
        let seen = answerers(lab, dir);
        let wrong: Vec<String> = planned
            .iter()
            .filter_map(|(ip, n)| {
                let want: BTreeSet<String> = [node_mac(*n)].into();
                let got = seen.get(ip).cloned().unwrap_or_default();
                (got != want).then(|| format!("{ip}: {got:?}, planned {}", node_name(*n)))
            })
            .collect();
        if wrong.is_empty() {
            eprintln!("{step}: all {VIPS} VIPs answered by exactly their owner; loads {load:?}");
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{step}: {} VIPs not answered by exactly their owner after {settle:?}: {:?}\n{}",
            wrong.len(),
            &wrong[..wrong.len().min(10)],
            logs()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn every_one_of_a_hundred_vips_has_exactly_one_answerer_through_kills_and_returns() {
    if is_child(TEST) {
        ask_all();
        return;
    }
    if let Some(why) = skip_reason() {
        eprintln!("SKIP: L2 placement lab test {why}");
        return;
    }
    let speaker = speaker_binary().unwrap();
    let lab = L2Lab::new("pl", NODES).unwrap();
    let dir = Path::new("/tmp/ferrolb-lab/flb-pl-files");
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    ferrolb_e2e::lab::l2_scenario::write_manifest_text(dir, &manifests()).unwrap();
    let mut speakers: Vec<Option<LabProcess>> = (1..=NODES)
        .map(|i| Some(start_speaker(&lab, &speaker, dir, i, dir, &[]).unwrap()))
        .collect();
    let logs = || {
        (1..=NODES)
            .map(|i| {
                let log = std::fs::read_to_string(dir.join(format!("speaker-{i}.log")))
                    .unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(15).collect();
                format!(
                    "--- speaker-{i}\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let all: Vec<usize> = (1..=NODES).collect();
    check(
        &lab,
        dir,
        &speaker,
        &all,
        Duration::from_secs(15),
        "start",
        &logs,
    );

    // A fixed pseudo-random sequence of nodes to kill (the same every run).
    let mut state: u32 = 0x2545_f491;
    for round in 1..=10 {
        state = state.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let victim = 1 + (state >> 16) as usize % NODES;
        let mut process = speakers[victim - 1].take().unwrap();
        kill_hard(&lab, &mut process, victim).unwrap();
        let alive: Vec<usize> = all.iter().copied().filter(|n| *n != victim).collect();
        check(
            &lab,
            dir,
            &speaker,
            &alive,
            Duration::from_secs(5),
            &format!("round {round}: node-{victim} killed"),
            &logs,
        );
        link_up(&lab, victim).unwrap();
        speakers[victim - 1] = Some(start_speaker(&lab, &speaker, dir, victim, dir, &[]).unwrap());
        // Back: after its rejoin hold-down (3 s) it takes its share back, the old owners
        // answering for 2 s more (make-before-break).
        check(
            &lab,
            dir,
            &speaker,
            &all,
            Duration::from_secs(12),
            &format!("round {round}: node-{victim} back"),
            &logs,
        );
    }
    drop(speakers);
}
