//! The speaker's work per change at scale: a whole plan for one node (every change replans
//! from scratch) and the L2 selection that follows it, for 1,000 and 10,000 Services on 100
//! Nodes over 10 pools (half announced by L2, half by BGP). Target (issue 18): plan + apply
//! within 10 ms for 10,000 Services.
//!
//! `plan_and_select_after_a_change` is what the running speaker does: the rank-key orders kept
//! from earlier plans ([`RankCache`]), a node lost or back in turn.
//!
//! `cargo bench -p ferrolb-speaker --bench planner`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use ferrolb_config::manifest::config_from_yaml;
use ferrolb_speaker::l2::interfaces::{Exclusions, Interface, DEFAULT_EXCLUSIONS};
use ferrolb_speaker::l2::ownership::wanted;
use ferrolb_speaker::l2::packet::MacAddr;
use ferrolb_speaker::planner::{plan, plan_cached, Inputs, RankCache};
use ferrolb_speaker::view::{NodeView, ServiceView, Serving};
use std::collections::BTreeSet;

fn config() -> ferrolb_config::Config {
    let mut yaml = String::new();
    for p in 0..10 {
        yaml.push_str(&format!(
            "apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {{name: pool{p}}}\nspec: {{addresses: [10.{}.0.0/16]}}\n---\n",
            100 + p
        ));
    }
    yaml.push_str("apiVersion: ferrolb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: l2}\nspec: {ipAddressPools: [pool0, pool1, pool2, pool3, pool4]}\n---\napiVersion: ferrolb.io/v1beta1\nkind: BGPPeer\nmetadata: {name: tor}\nspec: {myASN: 64512, peerASN: 64500, peerAddress: 198.51.100.1}\n---\napiVersion: ferrolb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {name: bgp}\nspec: {ipAddressPools: [pool5, pool6, pool7, pool8, pool9]}\n");
    config_from_yaml(&yaml).unwrap()
}

fn nodes(n: usize) -> Vec<NodeView> {
    (1..=n)
        .map(|i| NodeView {
            name: format!("node-{i}"),
            labels: Default::default(),
            network_unavailable: false,
            excluded: false,
            unschedulable: false,
            not_ready: false,
            untolerated_taint: false,
        })
        .collect()
}

/// In key order and shared, as a snapshot holds them.
fn services(n: usize) -> Vec<std::sync::Arc<ServiceView>> {
    let views = (0..n)
        .map(|s| {
            let (p, k) = (s % 10, s / 10);
            ServiceView {
                key: format!("default/s{s}"),
                labels: Default::default(),
                ips: vec![format!("10.{}.{}.{}", 100 + p, k / 250, k % 250 + 1)
                    .parse()
                    .unwrap()],
                local_traffic: false,
                serving: Serving::Everywhere,
                terminating_on: Default::default(),
                endpoints_on: Default::default(),
            }
        })
        .collect();
    ferrolb_speaker::source::shared(views)
}

fn bench(c: &mut Criterion) {
    let config = config();
    let nodes = nodes(100);
    let live: BTreeSet<String> = nodes.iter().map(|n| n.name.clone()).collect();
    let eth0 = [Interface {
        name: "eth0".into(),
        index: 2,
        mac: MacAddr([2, 0, 0, 0, 0, 1]),
        up: true,
        loopback: false,
        noarp: false,
        has_master: false,
        ethernet: true,
    }];
    let exclusions = Exclusions::new(DEFAULT_EXCLUSIONS).unwrap();
    let mut group = c.benchmark_group("plan_and_select");
    group.sample_size(20);
    for count in [1_000usize, 10_000] {
        let services = services(count);
        group.bench_with_input(BenchmarkId::from_parameter(count), &count, |b, _| {
            b.iter(|| {
                let p = plan(Inputs {
                    config: &config,
                    services: &services,
                    nodes: &nodes,
                    live_speakers: &live,
                    this_node: "node-1",
                });
                wanted(&p, "node-1", &eth0, &exclusions)
            })
        });
    }
    group.finish();

    // What the running speaker does on a change: the same plan with the rank-key orders kept
    // from the plans before (a node lost, then back, in turn).
    let mut group = c.benchmark_group("plan_and_select_after_a_change");
    group.sample_size(20);
    let without_one: BTreeSet<String> = live.iter().skip(1).cloned().collect();
    let held = BTreeSet::new();
    for count in [1_000usize, 10_000] {
        let services = services(count);
        let mut ranks = RankCache::new();
        let mut turn = 0u64;
        group.bench_with_input(BenchmarkId::from_parameter(count), &count, |b, _| {
            b.iter(|| {
                turn += 1;
                let live_now = if turn.is_multiple_of(2) {
                    &live
                } else {
                    &without_one
                };
                let p = plan_cached(
                    Inputs {
                        config: &config,
                        services: &services,
                        nodes: &nodes,
                        live_speakers: live_now,
                        this_node: "node-1",
                    },
                    &held,
                    &mut ranks,
                );
                wanted(&p, "node-1", &eth0, &exclusions)
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
