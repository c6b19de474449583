//! The virtual MAC (L2Advertisement `virtualMAC`) against real kernels: three nodes and a
//! client on one bridge, the client's neighbour entries for both VIPs pinned *permanent* to the
//! VIPs' virtual MACs (as a client that never re-resolves would have them). Through 5 hard
//! kills of each VIP's owner, the client keeps reaching both VIPs, each time on the node that took
//! over: only the bridge moved the MAC to the new port. The nodes' reverse-path filter is
//! strict (`all.rp_filter=1`), as on many distributions, so the macvlan's own loose setting is
//! what lets the traffic in.
//!
//! Then `virtualMAC` is switched off: the owner goes back to its own MAC (its device removed),
//! and a client pinned to that MAC loses the VIP when the owner dies, which is what the
//! virtual MAC is for.
//!
//! The figures of docs/benchmarks.md "Virtual MAC": `cargo test -p ferrolb-e2e --test l2_vmac
//! -- --nocapture` (lines starting with RESULT).

use ferrolb_e2e::lab::l2::{node_mac, node_name, skip_reason, speaker_binary, L2Lab, LabProcess};
use ferrolb_e2e::lab::l2_scenario::{
    kill_hard, manifests, owners, start_echo, start_speaker, write_manifest_text, VIP4, VIP6,
};
use ferrolb_e2e::lab::probe::{percentile, ProbeStream};
use ferrolb_e2e::lab::{wait_for, NetNs};
use ferrolb_speaker::l2::vmac::{virtual_mac, DEVICE_PREFIX};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const ECHO: &str = env!("CARGO_BIN_EXE_ferrolb-lab-echo");
/// Kills in all, alternating between the owners of the IPv4 and the IPv6 VIP: at least 5 of
/// each VIP's owner.
const KILLS: usize = 10;

fn vmac(vip: &str) -> String {
    virtual_mac(vip.parse::<IpAddr>().unwrap()).to_string()
}

/// The lab's manifests with `virtualMAC` on the L2Advertisement (or not).
fn manifest(virtual_mac: bool) -> String {
    let text = manifests(&[1, 2, 3]);
    let plain = "kind: L2Advertisement\nmetadata: {name: lan, namespace: ferrolb-system}\n";
    assert!(text.contains(plain), "the scenario's manifest changed");
    if virtual_mac {
        text.replace(plain, &format!("{plain}spec: {{virtualMAC: true}}\n"))
    } else {
        text
    }
}

/// Pins the client's neighbour entry for `vip` to `mac`, permanent: it never asks again.
fn pin(client: &NetNs, vip: &str, mac: &str) {
    client
        .ip(&[
            "neigh",
            "replace",
            vip,
            "lladdr",
            mac,
            "dev",
            "eth0",
            "nud",
            "permanent",
        ])
        .unwrap();
}

/// The virtual MAC devices on node `i`: (name, MAC).
fn devices(lab: &L2Lab, i: usize) -> Vec<(String, String)> {
    let out = lab
        .node(i)
        .ip(&["-o", "link", "show", "type", "macvlan"])
        .unwrap_or_default();
    out.lines()
        .filter_map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            let name = words.get(1)?.trim_end_matches(':').split('@').next()?;
            let at = words.iter().position(|w| *w == "link/ether")?;
            let mac = words.get(at + 1)?;
            name.starts_with(DEVICE_PREFIX)
                .then(|| (name.to_owned(), mac.to_string()))
        })
        .collect()
}

/// Node numbers holding a device with `mac`.
fn holders(lab: &L2Lab, mac: &str) -> Vec<usize> {
    (1..=3)
        .filter(|&i| devices(lab, i).iter().any(|(_, m)| m == mac))
        .collect()
}

struct Lab {
    speakers: BTreeMap<usize, LabProcess>,
    _echoes: Vec<LabProcess>,
    alive: Vec<usize>,
    speaker: PathBuf,
    logs: PathBuf,
    config: tempfile::TempDir,
    lab: L2Lab,
}

impl Lab {
    fn owners(&self) -> BTreeMap<String, usize> {
        owners(&self.speaker, self.config.path(), &self.alive).unwrap()
    }

    /// Waits until each VIP's device (by MAC) is on exactly its planned owner.
    fn wait_devices_on_owners(&self, what: &str) {
        let owner = self.owners();
        let settled = wait_for(Duration::from_secs(10), Duration::from_millis(50), || {
            owner
                .iter()
                .all(|(vip, &i)| holders(&self.lab, &vmac(vip)) == vec![i])
                .then_some(())
        });
        assert!(
            settled.is_some(),
            "{what}: devices {:?}, owners {owner:?}",
            (1..=3).map(|i| devices(&self.lab, i)).collect::<Vec<_>>()
        );
    }

    fn revive(&mut self, i: usize) {
        let p = ferrolb_e2e::lab::l2_scenario::revive(
            &self.lab,
            &self.speaker,
            self.config.path(),
            i,
            &self.logs,
        )
        .unwrap();
        self.speakers.insert(i, p);
        self.alive.push(i);
        self.alive.sort();
    }
}

#[test]
fn a_pinned_client_follows_the_virtual_mac_through_hard_kills() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIP: L2 virtual MAC test {why}");
        return;
    }
    let started = Instant::now();
    let tag = "lm-vm";
    let logs = PathBuf::from("/tmp/ferrolb-lab").join(tag);
    let _ = std::fs::remove_dir_all(&logs);
    std::fs::create_dir_all(&logs).unwrap();
    let config = tempfile::tempdir().unwrap();
    let lab = L2Lab::new(tag, 3).unwrap();
    lab.add_vip(&format!("{VIP4}/32")).unwrap();
    lab.add_vip(&format!("{VIP6}/128")).unwrap();
    for i in 1..=3 {
        for key in [
            "net.ipv4.conf.all.rp_filter=1",
            "net.ipv4.conf.eth0.rp_filter=1",
        ] {
            lab.node(i).exec("sysctl", &["-q", "-w", key]).unwrap();
        }
    }
    write_manifest_text(config.path(), &manifest(true)).unwrap();
    let speaker = speaker_binary().unwrap();
    let echoes = (1..=3)
        .map(|i| start_echo(&lab, Path::new(ECHO), i, &logs).unwrap())
        .collect();
    let speakers = (1..=3)
        .map(|i| {
            let p = start_speaker(&lab, &speaker, config.path(), i, &logs, &[]).unwrap();
            (i, p)
        })
        .collect();
    let mut r = Lab {
        speakers,
        _echoes: echoes,
        alive: vec![1, 2, 3],
        speaker,
        logs,
        config,
        lab,
    };
    for (vip, i) in r.owners() {
        r.speakers[&i]
            .wait_log(&format!("L2: announcing ip={vip}"), Duration::from_secs(10))
            .unwrap();
    }
    r.wait_devices_on_owners("at start");

    // Resolution gives the virtual MAC, then the entries are pinned.
    let owner = r.owners();
    for vip in [VIP4, VIP6] {
        let asked = ferrolb_e2e::lab::l2_scenario::ask(&r.lab.client, Path::new(ECHO), vip);
        assert_eq!(asked, Ok(node_name(owner[vip])), "{vip}");
        assert_eq!(
            r.lab.client_neighbour(vip).map(|e| e.0),
            Some(vmac(vip)),
            "{vip} resolves to its virtual MAC"
        );
        pin(&r.lab.client, vip, &vmac(vip));
    }

    let mut outages: BTreeMap<&str, Vec<Duration>> = BTreeMap::new();
    for kill in 0..KILLS {
        let owner = r.owners();
        let d = Duration::from_millis(2000);
        let every = Duration::from_millis(2);
        let streams: Vec<(&str, &str, ProbeStream)> = [("IPv4", VIP4), ("IPv6", VIP6)]
            .into_iter()
            .map(|(family, vip)| {
                let s = ProbeStream::start(&r.lab.client, Path::new(ECHO), vip, every, d);
                (family, vip, s.unwrap())
            })
            .collect();
        std::thread::sleep(Duration::from_millis(400));
        // The owner of each VIP in turn (placement may put them on two nodes).
        let victim = owner[if kill % 2 == 0 { VIP4 } else { VIP6 }];
        kill_hard(&r.lab, r.speakers.get_mut(&victim).unwrap(), victim).unwrap();
        r.alive.retain(|&n| n != victim);
        for (family, vip, s) in streams {
            let log = s.finish().unwrap();
            let now_owner = node_name(r.owners()[vip]);
            assert_eq!(
                log.last_node(),
                Some(now_owner.as_str()),
                "kill {kill}: {family} last answered by {:?}, expected {now_owner}",
                log.last_node()
            );
            if owner[vip] == victim {
                let f = log.failover_from(&node_name(victim)).unwrap_or_else(|| {
                    panic!("kill {kill}: {family}: no failover from node-{victim}")
                });
                eprintln!(
                    "kill {kill}: {family} {} -> {}: outage {:?}, {} probes lost",
                    f.from, f.to, f.outage, f.lost
                );
                assert!(f.outage < Duration::from_millis(500), "{family}: {f:?}");
                outages.entry(family).or_default().push(f.outage);
            } else {
                assert!(
                    log.failovers().is_empty(),
                    "kill {kill}: {family} moved though its owner lived: {:?}",
                    log.failovers()
                );
            }
        }
        // The pins held: nothing re-resolved.
        for vip in [VIP4, VIP6] {
            assert_eq!(
                r.lab.client_neighbour(vip),
                Some((vmac(vip), "PERMANENT".to_string()))
            );
        }
        r.revive(victim);
        r.speakers[&victim]
            .wait_log("listening for ARP and NDP", Duration::from_secs(10))
            .unwrap();
        // The returning node removes the device it left behind; each VIP's device is on its
        // owner alone.
        r.wait_devices_on_owners(&format!("after the return of node-{victim}"));
    }
    for (family, mut d) in outages {
        d.sort();
        eprintln!(
            "RESULT virtual MAC {family}, permanent client entry: {} kills, p50 {:?}, max {:?}, min {:?}",
            d.len(),
            percentile(&d, 50.0),
            d[d.len() - 1],
            d[0]
        );
    }

    // virtualMAC off: the owner answers from its own MAC again and removes its devices.
    write_manifest_text(r.config.path(), &manifest(false)).unwrap();
    let owner = r.owners();
    let gone = wait_for(Duration::from_secs(10), Duration::from_millis(50), || {
        (1..=3).all(|i| devices(&r.lab, i).is_empty()).then_some(())
    });
    assert!(
        gone.is_some(),
        "devices left after virtualMAC was switched off"
    );
    for vip in [VIP4, VIP6] {
        r.lab
            .client
            .ip(&["neigh", "del", vip, "dev", "eth0"])
            .unwrap();
        let asked = ferrolb_e2e::lab::l2_scenario::ask(&r.lab.client, Path::new(ECHO), vip);
        assert_eq!(asked, Ok(node_name(owner[vip])), "{vip}");
        assert_eq!(
            r.lab.client_neighbour(vip).map(|e| e.0),
            Some(node_mac(owner[vip])),
            "{vip} resolves to its owner's own MAC"
        );
    }
    // Pinned to a node's own MAC, the client loses the VIP with that node.
    let victim = owner[VIP4];
    pin(&r.lab.client, VIP4, &node_mac(victim));
    let s = ProbeStream::start(
        &r.lab.client,
        Path::new(ECHO),
        VIP4,
        Duration::from_millis(2),
        Duration::from_millis(1500),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    kill_hard(&r.lab, r.speakers.get_mut(&victim).unwrap(), victim).unwrap();
    let log = s.finish().unwrap();
    assert_eq!(log.last_node(), Some(node_name(victim).as_str()));
    eprintln!(
        "RESULT without the virtual MAC, permanent client entry: no answer for the last {:?} of the stream",
        Duration::from_millis(1500).saturating_sub(Duration::from_millis(300))
    );
    eprintln!("done in {:?}", started.elapsed());
}
