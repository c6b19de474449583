//! What the L2 fast path costs on the wire: ten speakers (file mode, membership authenticated
//! with a key) and 1,000 IPv6 addresses, every node's eth0 counters read over 10 s once the
//! takeover bursts are over; the same with the fast path off (`--l2-heartbeat-ms 0`) for the
//! difference. Run by hand for docs/benchmarks.md:
//! `cargo test -p ferrolb-e2e --test l2_fast_cost -- --ignored --nocapture` (as root).

use ferrolb_e2e::lab::l2::{node_name, skip_reason, speaker_binary, L2Lab, LabProcess};
use ferrolb_e2e::lab::l2_scenario::{start_speaker, write_manifest_text};
use ferrolb_e2e::lab::NetNs;
use std::path::PathBuf;
use std::time::Duration;

const NODES: usize = 10;
const ADDRESSES: usize = 1000;

fn manifest() -> String {
    let mut out = String::new();
    for i in 1..=NODES {
        out.push_str(&format!(
            "apiVersion: v1\nkind: Node\nmetadata: {{name: {}}}\nstatus: {{addresses: [{{type: InternalIP, address: 192.0.2.{i}}}]}}\n---\n",
            node_name(i)
        ));
    }
    out.push_str(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: ferrolb-memberlist, namespace: ferrolb-system}\nstringData: {secretkey: \"lab-key-for-the-fast-path-cost-figures\"}\n---\n\
         apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: many, namespace: ferrolb-system}\nspec: {addresses: [\"2001:db8:1::/118\"]}\n---\n\
         apiVersion: ferrolb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: many, namespace: ferrolb-system}\n",
    );
    for k in 1..=ADDRESSES {
        out.push_str(&format!(
            "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: s{k}\n  namespace: default\n  annotations: {{ferrolb.io/loadBalancerIPs: \"2001:db8:1::{k:x}\"}}\nspec: {{type: LoadBalancer, ipFamilies: [IPv6], ports: [{{port: 7, protocol: UDP}}]}}\n"
        ));
    }
    out
}

/// eth0's (tx packets, tx bytes, rx packets, rx bytes).
fn counters(ns: &NetNs) -> [u64; 4] {
    let out = ns.ip(&["-s", "-j", "link", "show", "dev", "eth0"]).unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let s = &v[0]["stats64"];
    let n = |dir: &str, what: &str| s[dir][what].as_u64().unwrap_or(0);
    [
        n("tx", "packets"),
        n("tx", "bytes"),
        n("rx", "packets"),
        n("rx", "bytes"),
    ]
}

#[test]
#[ignore = "ten speakers for half a minute; run by hand for docs/benchmarks.md"]
fn l2_fast_path_cost_ten_nodes_1000_addresses_measured() {
    if let Some(why) = skip_reason() {
        eprintln!("SKIP: L2 lab test {why}");
        return;
    }
    let speaker = speaker_binary().unwrap();
    let window = Duration::from_secs(10);
    for (label, extra) in [
        ("fast path on (defaults)", &[][..]),
        ("fast path off", &["--l2-heartbeat-ms", "0"][..]),
    ] {
        let logs = PathBuf::from("/tmp/ferrolb-lab/fc");
        let _ = std::fs::remove_dir_all(&logs);
        std::fs::create_dir_all(&logs).unwrap();
        let config = tempfile::tempdir().unwrap();
        write_manifest_text(config.path(), &manifest()).unwrap();
        let lab = L2Lab::new("fc", NODES).unwrap();
        let speakers: Vec<LabProcess> = (1..=NODES)
            .map(|i| start_speaker(&lab, &speaker, config.path(), i, &logs, extra).unwrap())
            .collect();
        for s in &speakers {
            s.wait_log("membership joined", Duration::from_secs(30))
                .unwrap();
        }
        // Past the takeover bursts (the last at 2.2 s) before counting.
        std::thread::sleep(Duration::from_secs(6));
        let before: Vec<[u64; 4]> = lab.nodes.iter().map(counters).collect();
        std::thread::sleep(window);
        let after: Vec<[u64; 4]> = lab.nodes.iter().map(counters).collect();
        let secs = window.as_secs_f64();
        let per: Vec<[f64; 4]> = before
            .iter()
            .zip(&after)
            .map(|(b, a)| std::array::from_fn(|k| (a[k] - b[k]) as f64 / secs))
            .collect();
        let mean = |k: usize| per.iter().map(|p| p[k]).sum::<f64>() / per.len() as f64;
        let max = |k: usize| per.iter().map(|p| p[k]).fold(0.0, f64::max);
        eprintln!(
            "RESULT {label}: {NODES} speakers, {ADDRESSES} addresses, per speaker: sent {:.0} packets/s (max {:.0}), {:.1} KB/s (max {:.1}); received {:.0} packets/s, {:.1} KB/s",
            mean(0),
            max(0),
            mean(1) / 1000.0,
            max(1) / 1000.0,
            mean(2),
            mean(3) / 1000.0
        );
        for s in &speakers {
            assert!(
                !s.log().contains("panicked"),
                "a speaker panicked:\n{}",
                s.log()
            );
        }
    }
}
