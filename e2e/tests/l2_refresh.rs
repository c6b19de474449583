//! Periodic announcements on the wire: one node owning 40 VIPs, run with
//! `--l2-refresh-seconds 5 --l2-refresh-rate 10`. After the takeover burst (all 40 at once),
//! every VIP is announced again about 5 s later, at no more than the rate allows: a capture on
//! the client counts the gratuitous replies per VIP and per second.

use ferrolb_e2e::lab::l2::{capture_lines, node_mac, skip_reason, speaker_binary};
use ferrolb_e2e::lab::l2::{L2Lab, LabProcess};
use ferrolb_e2e::lab::l2_scenario::{start_speaker, write_manifest_text};
use ferrolb_e2e::lab::Capture;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

const VIPS: u8 = 40;
const RATE: usize = 10;

fn vip(i: u8) -> Ipv4Addr {
    Ipv4Addr::new(192, 0, 2, 150 + i)
}

fn manifests() -> String {
    let vips: Vec<Ipv4Addr> = (0..VIPS).map(vip).collect();
    ferrolb_e2e::lab::l2_scenario::vip_services_manifests(1, &vips)
}

#[test]
fn refreshes_come_on_the_period_at_the_rate() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIP: L2 refresh lab test {why}");
        return;
    }
    let tag = "lm-rf";
    let logs = PathBuf::from("/tmp/ferrolb-lab").join(tag);
    let _ = std::fs::remove_dir_all(&logs);
    std::fs::create_dir_all(&logs).unwrap();
    let lab = L2Lab::new(tag, 1).unwrap();
    let dir = tempfile::tempdir().unwrap();
    write_manifest_text(dir.path(), &manifests()).unwrap();
    let pcap = logs.join("client.pcap");
    let mut capture = Capture::start(lab.client.name(), "eth0", "arp", &pcap).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let speaker = speaker_binary().unwrap();
    let rate = RATE.to_string();
    let _p: LabProcess = start_speaker(
        &lab,
        &speaker,
        dir.path(),
        1,
        &logs,
        &["--l2-refresh-seconds", "5", "--l2-refresh-rate", &rate],
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(14));
    capture.stop();
    // Gratuitous replies from the node (broadcast), by VIP: times in seconds.
    let mut times: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    for line in capture_lines(&pcap) {
        if !line.contains(&format!("{} > ff:ff:ff:ff:ff:ff", node_mac(1))) {
            continue;
        }
        let Some(rest) = line.split("Reply ").nth(1) else {
            continue;
        };
        let ip = rest
            .split_whitespace()
            .next()
            .unwrap_or_default()
            .to_string();
        let at: f64 = line.split_whitespace().next().unwrap().parse().unwrap();
        times.entry(ip).or_default().push(at);
    }
    assert_eq!(times.len(), VIPS as usize, "{:?}", times.keys());
    let start = times.values().flatten().copied().fold(f64::MAX, f64::min);
    // The burst: 0, 50, 250, 1100 and 2200 ms; the refresh after 2.2 + 5 s.
    let mut refreshes: Vec<f64> = Vec::new();
    for (ip, t) in &times {
        let late: Vec<f64> = t.iter().map(|x| x - start).filter(|x| *x > 4.0).collect();
        assert!(
            !late.is_empty(),
            "{ip} never refreshed: {:?}",
            t.iter().map(|x| x - start).collect::<Vec<_>>()
        );
        assert!(late[0] >= 7.0, "{ip} refreshed too early: {late:?}");
        refreshes.push(late[0]);
    }
    refreshes.sort_by(f64::total_cmp);
    let spread = refreshes[refreshes.len() - 1] - refreshes[0];
    // 40 refreshes at 10 a second, the bucket full at first: about 3 s from first to last.
    let most_in_a_second = refreshes
        .iter()
        .map(|t| {
            refreshes
                .iter()
                .filter(|u| **u >= *t && **u < t + 1.0)
                .count()
        })
        .max()
        .unwrap();
    eprintln!(
        "RESULT refresh: {VIPS} VIPs, first refresh {:.2} s after the takeover, spread over {spread:.2} s, at most {most_in_a_second} in any second (rate {RATE}/s, bucket {RATE})",
        refreshes[0]
    );
    assert!(most_in_a_second <= 2 * RATE + 1, "{most_in_a_second}");
    assert!(spread >= 2.0, "not spread: {spread}");
}
