//! Placement is a contract between speakers: every speaker computes every L2 owner and standby
//! alike, and during a rolling upgrade old and new speakers run side by side. A change to what
//! the planner decides for the same inputs makes them disagree (two owners, or none) until the
//! last one is upgraded. This test pins the decisions for a generated cluster (preferences,
//! addresses shared by several Services, Local traffic, dual stack, aggregation, several
//! advertisements per pool, dead nodes) to a digest: a planner change that alters it must be
//! deliberate, and its upgrade impact documented (docs/operating.md), before the digest is
//! updated.

use ferrolb_speaker::offline::offline_plan;
use ferrolb_speaker::planner::NodePlan;
use sha2::{Digest, Sha256};
use std::fmt::Write;
use std::path::PathBuf;

/// xorshift64*: a fixed sequence, the same on every machine.
struct Sequence(u64);

impl Sequence {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Twelve Nodes (one excluded), three pools, two L2 and three BGP advertisements, two peers,
/// 240 Services with their status and most with an EndpointSlice.
fn cluster_yaml() -> String {
    let mut seq = Sequence(0x5eed_f00d_cafe_beef);
    let mut y = String::new();
    for i in 1..=12 {
        let mut labels = format!("zone: \"{}\"", if i % 3 == 0 { "a" } else { "b" });
        if i == 5 {
            labels.push_str(", node.kubernetes.io/exclude-from-external-load-balancers: \"\"");
        }
        if i % 4 == 0 {
            labels.push_str(", bgp: \"yes\"");
        }
        writeln!(y, "---\napiVersion: v1\nkind: Node\nmetadata: {{name: node-{i:02}, labels: {{{labels}}}}}\nstatus: {{addresses: [{{type: InternalIP, address: 192.0.2.{i}}}]}}").unwrap();
    }
    y.push_str(
        "---
apiVersion: ferrolb.io/v1beta1
kind: IPAddressPool
metadata: {name: plain, namespace: ferrolb-system}
spec: {addresses: [198.18.0.0/24, '2001:db8::/120']}
---
apiVersion: ferrolb.io/v1beta1
kind: IPAddressPool
metadata: {name: pref, namespace: ferrolb-system}
spec: {addresses: [198.18.1.0/24]}
---
apiVersion: ferrolb.io/v1beta1
kind: IPAddressPool
metadata: {name: routed, namespace: ferrolb-system}
spec: {addresses: [198.18.2.0/24]}
---
apiVersion: ferrolb.io/v1beta1
kind: L2Advertisement
metadata: {name: plain, namespace: ferrolb-system}
spec: {ipAddressPools: [plain]}
---
apiVersion: ferrolb.io/v1beta1
kind: L2Advertisement
metadata: {name: pref, namespace: ferrolb-system}
spec:
  ipAddressPools: [pref]
  preferredNodeSelectors:
  - weight: 30
    preference: {matchLabels: {zone: a}}
---
apiVersion: ferrolb.io/v1beta1
kind: L2Advertisement
metadata: {name: pref-db, namespace: ferrolb-system}
spec:
  ipAddressPools: [pref]
  serviceSelectors: [{matchLabels: {tier: db}}]
  nodeSelectors: [{matchLabels: {zone: b}}]
  interfaces: [eth1]
---
apiVersion: ferrolb.io/v1beta1
kind: BGPPeer
metadata: {name: tor-a, namespace: ferrolb-system}
spec: {myASN: 64512, peerASN: 64500, peerAddress: 192.0.2.250}
---
apiVersion: ferrolb.io/v1beta1
kind: BGPPeer
metadata: {name: tor-b, namespace: ferrolb-system}
spec: {myASN: 64512, peerASN: 64500, peerAddress: 192.0.2.251, nodeSelectors: [{matchLabels: {bgp: 'yes'}}]}
---
apiVersion: ferrolb.io/v1beta1
kind: BGPAdvertisement
metadata: {name: all, namespace: ferrolb-system}
spec: {ipAddressPools: [routed, plain], communities: ['64500:1'], localPref: 100}
---
apiVersion: ferrolb.io/v1beta1
kind: BGPAdvertisement
metadata: {name: agg, namespace: ferrolb-system}
spec: {ipAddressPools: [routed], aggregationLength: 28, peers: [tor-b], communities: ['64500:2'], localPref: 200}
---
apiVersion: ferrolb.io/v1beta1
kind: BGPAdvertisement
metadata: {name: agg-more, namespace: ferrolb-system}
spec: {ipAddressPools: [routed], aggregationLength: 28, peers: [tor-b], communities: ['64500:3'], localPref: 200}
",
    );
    for s in 0..240u64 {
        let (pool, base) = [
            ("plain", "198.18.0"),
            ("pref", "198.18.1"),
            ("routed", "198.18.2"),
        ][seq.below(3) as usize];
        // Most addresses belong to one Service; some are shared by several.
        let k = if seq.chance(90) {
            s / 3 + 1
        } else {
            seq.below(20) + 1
        };
        let mut ips = vec![format!("{base}.{k}")];
        if pool == "plain" && seq.chance(30) {
            ips.push(format!("2001:db8::{k:x}"));
        }
        let policy = if seq.chance(30) { "Local" } else { "Cluster" };
        let tier = if seq.chance(50) { "web" } else { "db" };
        let ingress: Vec<String> = ips.iter().map(|ip| format!("{{ip: \"{ip}\"}}")).collect();
        writeln!(y, "---\napiVersion: v1\nkind: Service\nmetadata: {{name: s{s:03}, namespace: apps, labels: {{tier: {tier}}}, annotations: {{metallb.io/allow-shared-ip: key{k}}}}}\nspec: {{type: LoadBalancer, externalTrafficPolicy: {policy}, ports: [{{port: 80, protocol: TCP}}]}}\nstatus: {{loadBalancer: {{ingress: [{}]}}}}", ingress.join(", ")).unwrap();
        if seq.chance(80) {
            let mut endpoints = Vec::new();
            for j in 0..3 {
                let node = seq.below(12) + 1;
                let terminating = seq.chance(20);
                endpoints.push(format!("{{addresses: [10.0.{}.{j}], nodeName: node-{node:02}, conditions: {{ready: true, terminating: {terminating}}}}}", s % 250));
            }
            writeln!(y, "---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: s{s:03}-1, namespace: apps, labels: {{kubernetes.io/service-name: s{s:03}}}}}\naddressType: IPv4\nendpoints: [{}]\nports: [{{port: 80, protocol: TCP}}]", endpoints.join(", ")).unwrap();
        }
    }
    y
}

/// What speakers must agree on, one line per decision and route.
fn decisions(plan: &NodePlan) -> String {
    let mut out = String::new();
    for d in &plan.l2 {
        let ranking: Vec<&str> = d.ranking.iter().map(|n| &**n).collect();
        writeln!(
            out,
            "l2 {} {} {} {} {}",
            d.service,
            d.ip,
            ranking.join(">"),
            d.interfaces.join(","),
            d.virtual_mac
        )
        .unwrap();
    }
    for r in &plan.bgp {
        writeln!(
            out,
            "bgp {} {:?} {:?} {:?} {:?} {} {} {:?}",
            r.prefix,
            r.services,
            r.peers,
            r.communities
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            r.local_pref,
            r.local_only,
            r.ending,
            r.endpoint_weight
        )
        .unwrap();
    }
    out
}

#[test]
fn placement_for_the_same_inputs_does_not_change() {
    let dir = std::env::temp_dir().join(format!("ferrolb-golden-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file: PathBuf = dir.join("cluster.yaml");
    std::fs::write(&file, cluster_yaml()).unwrap();
    let some_dead: Vec<String> = [1, 2, 3, 4, 6, 7, 8, 9, 10, 11]
        .iter()
        .map(|i| format!("node-{i:02}"))
        .collect();
    let mut all = String::new();
    for node in [
        "node-01", "node-03", "node-04", "node-05", "node-08", "node-12",
    ] {
        for live in [None, Some(some_dead.as_slice())] {
            let plan = offline_plan(std::slice::from_ref(&file), node, live, None)
                .unwrap_or_else(|e| panic!("{node}: {e:?}"));
            writeln!(all, "# {node} {}", live.is_some()).unwrap();
            all.push_str(&decisions(&plan));
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(all.lines().count() > 1_000, "the fixture decides little");
    let digest: String = Sha256::digest(all.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(
        digest, GOLDEN,
        "placement changed for the same inputs: old and new speakers would disagree during an \
         upgrade. If this is deliberate, document the upgrade impact, then update GOLDEN."
    );
}

/// The digest of [`decisions`] for the fixture, from the planner as released.
const GOLDEN: &str = "e8bded9a21e65ab8f0f44a7d85d5daad7d53ad0d6030be239649602a843b2ab4";
