use super::*;
use crate::view::Serving;
use ferrolb_config::manifest::config_from_yaml;
use std::collections::BTreeMap;

fn config(yaml: &str) -> Config {
    config_from_yaml(yaml).unwrap_or_else(|e| panic!("{e:#?}"))
}

fn node(name: &str, labels: &[(&str, &str)]) -> NodeView {
    NodeView {
        name: name.into(),
        labels: labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        network_unavailable: false,
        excluded: false,
        unschedulable: false,
        not_ready: false,
        untolerated_taint: false,
    }
}

fn service(key: &str, ip: &str) -> ServiceView {
    ServiceView {
        key: key.into(),
        labels: Labels::new(),
        ips: vec![ip.parse().unwrap()],
        local_traffic: false,
        serving: Serving::Everywhere,
        terminating_on: Default::default(),
        endpoints_on: Default::default(),
    }
}

use ferrolb_config::model::Labels;

const L2: &str = "apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: lan}\nspec: {addresses: [192.0.2.0/24, 2001:db8::/120]}\n---\napiVersion: ferrolb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: lan}\n";

fn shared(services: &[ServiceView]) -> Vec<std::sync::Arc<ServiceView>> {
    services.iter().cloned().map(std::sync::Arc::new).collect()
}

/// A ranking's names, to compare with literals.
fn names(ranking: &[std::sync::Arc<str>]) -> Vec<&str> {
    ranking.iter().map(|n| &**n).collect()
}

fn live(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn run(
    config: &Config,
    services: &[ServiceView],
    nodes: &[NodeView],
    live_speakers: &BTreeSet<String>,
    this: &str,
) -> NodePlan {
    plan(Inputs {
        config,
        services: &shared(services),
        nodes,
        live_speakers,
        this_node: this,
    })
}

#[test]
fn every_speaker_agrees_on_the_owner_and_the_standbys_rank_by_hash() {
    let c = config(L2);
    let nodes = [node("n1", &[]), node("n2", &[]), node("n3", &[])];
    let svcs = [
        service("a/web", "192.0.2.10"),
        service("a/v6", "2001:db8::10"),
    ];
    let all = live(&["n1", "n2", "n3"]);
    let plans: Vec<NodePlan> = ["n1", "n2", "n3"]
        .iter()
        .map(|n| run(&c, &svcs, &nodes, &all, n))
        .collect();
    assert!(plans.windows(2).all(|w| w[0].l2 == w[1].l2));
    for d in &plans[0].l2 {
        // The owner first (placement), the others by hash.
        let mut rest: Vec<&str> = vec!["n1", "n2", "n3"];
        rest.retain(|n| Some(*n) != d.owner());
        rest.sort_by_key(|n| rank_key(n, d.ip));
        assert_eq!(names(&d.ranking[1..]), rest);
    }
    let owners: usize = ["n1", "n2", "n3"]
        .iter()
        .zip(&plans)
        .map(|(n, p)| p.l2_owned(n).count())
        .sum();
    assert_eq!(owners, 2, "each address has exactly one owner");
}

#[test]
fn a_dead_node_moves_its_own_addresses_and_few_others() {
    let c = config(L2);
    let nodes = [node("n1", &[]), node("n2", &[]), node("n3", &[])];
    let svcs: Vec<ServiceView> = (1..60)
        .map(|i| service(&format!("a/s{i}"), &format!("192.0.2.{i}")))
        .collect();
    let before = run(&c, &svcs, &nodes, &live(&["n1", "n2", "n3"]), "n1");
    let after = run(&c, &svcs, &nodes, &live(&["n1", "n3"]), "n1");
    let mut others_moved = 0;
    for (b, a) in before.l2.iter().zip(&after.l2) {
        assert_ne!(a.owner(), Some("n2"));
        if b.owner() != Some("n2") && b.owner() != a.owner() {
            others_moved += 1;
        }
    }
    // Bounded loads move a few addresses of live nodes too (the bound rose, the order is
    // fixed): a few, not a reshuffle.
    assert!(
        others_moved <= 3,
        "{others_moved} of 59 moved although their owner lives"
    );
}

/// Owners by address, as node `this` plans them.
fn owners(plan: &NodePlan) -> BTreeMap<IpAddr, String> {
    plan.l2
        .iter()
        .filter_map(|d| Some((d.ip, d.owner()?.to_string())))
        .collect()
}

fn loads(owners: &BTreeMap<IpAddr, String>) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for o in owners.values() {
        *out.entry(o.clone()).or_default() += 1;
    }
    out
}

/// The owners a plain hash would give (each address's first node by rank key), for comparison.
fn hash_owners(ips: &[IpAddr], names: &[String]) -> BTreeMap<IpAddr, String> {
    ips.iter()
        .map(|ip| {
            let first = names
                .iter()
                .min_by_key(|n| rank_key(n, *ip))
                .unwrap()
                .clone();
            (*ip, first)
        })
        .collect()
}

fn moved(a: &BTreeMap<IpAddr, String>, b: &BTreeMap<IpAddr, String>, leaving: &str) -> usize {
    a.iter()
        .filter(|(ip, o)| o.as_str() != leaving && b.get(*ip).is_some_and(|n| n != *o))
        .count()
}

/// Balanced placement of `count` addresses on ten nodes, then each node leaving in turn and an
/// eleventh joining: returns (most on one node balanced, most by hash alone, worst number of
/// other addresses moved on a leave, others moved on the join).
fn placement_run(count: u32) -> (usize, usize, usize, usize) {
    let c = config(
        "apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: big}\nspec: {addresses: [198.18.0.0/20]}\n---\napiVersion: ferrolb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: big}\n",
    );
    let names: Vec<String> = (1..=11).map(|i| format!("node-{i:02}")).collect();
    let nodes: Vec<NodeView> = names.iter().map(|n| node(n, &[])).collect();
    let ips: Vec<IpAddr> = (0..count)
        .map(|i| IpAddr::from(std::net::Ipv4Addr::from(0xc612_0000 + i)))
        .collect();
    let svcs: Vec<ServiceView> = ips
        .iter()
        .enumerate()
        .map(|(i, ip)| service(&format!("a/s{i}"), &ip.to_string()))
        .collect();
    let ten: BTreeSet<String> = names[..10].iter().cloned().collect();
    let plan_with = |live: &BTreeSet<String>| owners(&run(&c, &svcs, &nodes, live, "node-01"));
    let base = plan_with(&ten);
    assert_eq!(base.len(), count as usize);
    let bound = l2_load_bound(count as usize, 10);
    let max = *loads(&base).values().max().unwrap();
    let hashed = hash_owners(&ips, &names[..10]);
    let hash_max = *loads(&hashed).values().max().unwrap();
    assert!(max <= bound, "{:?}", loads(&base));

    // Every speaker computes the same.
    for this in ["node-04", "node-10"] {
        assert_eq!(owners(&run(&c, &svcs, &nodes, &ten, this)), base);
    }

    // Each node leaving in turn: its share moves, and few others.
    let mut worst_leave = 0;
    for leaving in &names[..10] {
        let mut nine = ten.clone();
        nine.remove(leaving);
        let after = plan_with(&nine);
        assert!(after.values().all(|o| o != leaving));
        assert!(*loads(&after).values().max().unwrap() <= l2_load_bound(count as usize, 9));
        worst_leave = worst_leave.max(moved(&base, &after, leaving));
        let hashed_after = hash_owners(&ips, &nine.iter().cloned().collect::<Vec<_>>());
        assert_eq!(
            moved(&hashed, &hashed_after, leaving),
            0,
            "a hash moves nothing else"
        );
    }
    // A node joining: what it takes, and few others.
    let mut eleven = ten.clone();
    eleven.insert(names[10].clone());
    let joined = plan_with(&eleven);
    assert!(*loads(&joined).values().max().unwrap() <= l2_load_bound(count as usize, 11));
    let others = base
        .iter()
        .filter(|(ip, o)| joined[*ip] != **o && joined[*ip] != names[10])
        .count();
    (max, hash_max, worst_leave, others)
}

#[test]
fn addresses_on_ten_nodes_stay_within_the_bound_and_few_others_move() {
    for count in [200u32, 1000] {
        let (max, hash_max, leave, join) = placement_run(count);
        let bound = l2_load_bound(count as usize, 10);
        eprintln!(
            "{count} addresses on 10 nodes: most on one node {max} balanced (bound {bound}), \
             {hash_max} by hash alone; beyond the leaving node's share at most {leave} moved, \
             on a join {join} moved between the old nodes"
        );
        // A few percent: the bound rises or falls by one and the order is fixed.
        let few = (count as usize) * 5 / 100;
        assert!(
            leave <= few,
            "{leave} of {count} moved beyond the leaving node's share"
        );
        assert!(
            join <= few,
            "{join} of {count} moved between the old nodes on a join"
        );
    }
    // As the issue measured: a plain hash puts 1.3 x the average on one node of ten.
    let (_, hash_max, _, _) = placement_run(200);
    assert!(hash_max > l2_load_bound(200, 10), "{hash_max}");
}

/// A Service created or deleted (no node change) moves other addresses when it shifts the load
/// bound or the placement order: how many, on average and at worst, over a fixed sequence of
/// `ops` creations and deletions around `count` addresses on `nodes` nodes. A plain hash
/// (MetalLB) moves none, at the price of the imbalance above.
fn churn_moves(count: u32, nodes: usize, ops: u32) -> (f64, usize) {
    let c = config(
        "apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: big}\nspec: {addresses: [198.18.0.0/20]}\n---\napiVersion: ferrolb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: big}\n",
    );
    let names: Vec<String> = (1..=nodes).map(|i| format!("node-{i:02}")).collect();
    let views: Vec<NodeView> = names.iter().map(|n| node(n, &[])).collect();
    let all: BTreeSet<String> = names.iter().cloned().collect();
    let svc = |i: u32| {
        service(
            &format!("a/s{i}"),
            &IpAddr::from(std::net::Ipv4Addr::from(0xc612_0000 + i)).to_string(),
        )
    };
    let mut present: Vec<u32> = (0..count).collect();
    let mut next = count;
    let plan_of = |present: &[u32]| {
        let svcs: Vec<ServiceView> = present.iter().map(|i| svc(*i)).collect();
        owners(&run(&c, &svcs, &views, &all, "node-01"))
    };
    let mut before = plan_of(&present);
    let (mut total, mut worst) = (0usize, 0usize);
    for op in 0..ops {
        // A fixed pseudo-random walk: create or delete (an address from the middle).
        let step = op.wrapping_mul(2_654_435_761);
        if step % 2 == 0 || present.len() < 2 {
            present.push(next);
            next += 1;
        } else {
            present.remove((step as usize / 2) % present.len());
        }
        let after = plan_of(&present);
        let moved = before
            .iter()
            .filter(|(ip, o)| after.get(*ip).is_some_and(|n| n != *o))
            .count();
        total += moved;
        worst = worst.max(moved);
        before = after;
    }
    (total as f64 / f64::from(ops), worst)
}

#[test]
fn a_plan_with_the_rank_cache_kept_across_changes_equals_a_fresh_one() {
    let c = config(
        "apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: big}\nspec: {addresses: [198.18.0.0/20]}\n---\napiVersion: ferrolb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: big}\nspec:\n  preferredNodeSelectors:\n  - weight: 10\n    preference: {matchLabels: {zone: a}}\n",
    );
    let names: Vec<String> = (1..=12).map(|i| format!("node-{i:02}")).collect();
    let nodes: Vec<NodeView> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            if i % 3 == 0 {
                node(n, &[("zone", "a")])
            } else {
                node(n, &[])
            }
        })
        .collect();
    let mut cache = crate::planner::RankCache::new();
    let mut present: Vec<u32> = (0..40).collect();
    for step in 0..30u32 {
        // Nodes die and come back, new ones appear, some are held, Services come and go.
        let live: BTreeSet<String> = names
            .iter()
            .enumerate()
            .filter(|(i, _)| {
                *i < 6 + (step as usize % 7) && !(*i + step as usize).is_multiple_of(5)
            })
            .map(|(_, n)| n.clone())
            .collect();
        let held: BTreeSet<String> = live.iter().filter(|n| n.ends_with('4')).cloned().collect();
        if step % 2 == 0 {
            present.push(100 + step);
        } else {
            present.remove((step as usize * 7) % present.len());
        }
        let mut svcs: Vec<ServiceView> = present
            .iter()
            .map(|i| {
                service(
                    &format!("a/s{i}"),
                    &IpAddr::from(std::net::Ipv4Addr::from(0xc612_0000 + i)).to_string(),
                )
            })
            .collect();
        // One Service with Local traffic, served on two nodes.
        svcs[0].local_traffic = true;
        svcs[0].serving = Serving::On(live.iter().take(2).cloned().collect());
        let inputs = Inputs {
            config: &c,
            services: &shared(&svcs),
            nodes: &nodes,
            live_speakers: &live,
            this_node: "node-01",
        };
        assert_eq!(
            crate::planner::plan_cached(inputs, &held, &mut cache),
            crate::planner::plan_with_held(inputs, &held),
            "step {step}"
        );
    }
}

#[test]
fn a_service_created_or_deleted_moves_few_other_addresses() {
    for (count, nodes) in [(10u32, 3usize), (200, 10), (1000, 10)] {
        let (average, worst) = churn_moves(count, nodes, 100);
        eprintln!(
            "{count} addresses on {nodes} nodes, 100 Services created or deleted: \
             {average:.2} other addresses moved per change on average, {worst} at worst"
        );
        // The bound moves by one at a time: at most about one address per node at the bound
        // moves, never a reshuffle. (The sequence alternates creation and deletion, so at 200
        // addresses on 10 nodes, where the bound steps from 22 to 23, every change crosses
        // the step: the worst case, about 2.7 moves per change; a random walk averages 0.45.)
        assert!(average <= 3.0, "{average} moves per change");
        assert!(worst <= nodes / 2 + 2, "{worst} moved by one change");
    }
}

#[test]
fn no_serving_endpoint_means_no_announcement_and_local_traffic_picks_serving_nodes() {
    let c = config(L2);
    let nodes = [node("n1", &[]), node("n2", &[])];
    let mut idle = service("a/idle", "192.0.2.1");
    idle.serving = Serving::On(Default::default());
    let mut local = service("a/local", "192.0.2.2");
    local.local_traffic = true;
    local.serving = Serving::On(live(&["n2"]).into());
    let p = run(&c, &[idle, local], &nodes, &live(&["n1", "n2"]), "n1");
    assert_eq!(p.skipped[0].reason, "no endpoint of the Service is serving");
    assert_eq!(p.l2.len(), 1);
    assert_eq!(names(&p.l2[0].ranking), ["n2"]);
}

#[test]
fn excluded_unavailable_unselected_and_dead_nodes_never_announce() {
    let yaml = format!(
        "{L2}spec:\n  nodeSelectors: [{{matchLabels: {{l2: \"yes\"}}}}]\n  interfaces: [eth1]\n"
    );
    let c = config(&yaml);
    let mut excluded = node("excluded", &[("l2", "yes")]);
    excluded.excluded = true;
    let mut sick = node("sick", &[("l2", "yes")]);
    sick.network_unavailable = true;
    let nodes = [
        excluded,
        sick,
        node("other", &[]),
        node("dead", &[("l2", "yes")]),
        node("good", &[("l2", "yes")]),
    ];
    let p = run(
        &c,
        &[service("a/s", "192.0.2.7")],
        &nodes,
        &live(&["excluded", "sick", "other", "good"]),
        "good",
    );
    assert_eq!(names(&p.l2[0].ranking), ["good"]);
    assert_eq!(p.l2[0].interfaces, ["eth1"]);
}

#[test]
fn preferred_nodes_rank_first() {
    let yaml = format!("{L2}spec:\n  preferredNodeSelectors:\n  - weight: 50\n    preference: {{matchLabels: {{zone: a}}}}\n");
    let c = config(&yaml);
    let nodes = [
        node("n1", &[]),
        node("n2", &[("zone", "a")]),
        node("n3", &[]),
    ];
    for i in 1..20 {
        let p = run(
            &c,
            &[service("a/s", &format!("192.0.2.{i}"))],
            &nodes,
            &live(&["n1", "n2", "n3"]),
            "n1",
        );
        assert_eq!(p.l2[0].owner(), Some("n2"));
    }
}

const BGP: &str = "apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: pub}\nspec: {addresses: [203.0.113.0/28, 2001:db8:1::/120]}\n---\napiVersion: ferrolb.io/v1beta1\nkind: BGPPeer\nmetadata: {name: tor}\nspec: {myASN: 64512, peerASN: 64500, peerAddress: 198.51.100.1}\n---\napiVersion: ferrolb.io/v1beta1\nkind: BGPPeer\nmetadata: {name: rack2}\nspec: {myASN: 64512, peerASN: 64500, peerAddress: 198.51.100.2, nodeSelectors: [{matchLabels: {rack: \"2\"}}]}\n---\napiVersion: ferrolb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {name: all}\nspec: {communities: [\"64512:1\"], localPref: 100}\n---\napiVersion: ferrolb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {name: agg}\nspec: {aggregationLength: 28, peers: [tor], localPref: 100}\n";

#[test]
fn bgp_routes_per_node_with_peers_aggregation_and_attributes() {
    let c = config(BGP);
    let nodes = [node("n1", &[]), node("n2", &[("rack", "2")])];
    let svcs = [
        service("a/web", "203.0.113.5"),
        service("a/v6", "2001:db8:1::5"),
    ];
    let p = run(&c, &svcs, &nodes, &live(&[]), "n1");
    let text: Vec<String> = p
        .bgp
        .iter()
        .map(|r| {
            format!(
                "{} {:?} {:?} {:?}",
                r.prefix,
                r.peers,
                r.communities.len(),
                r.local_pref
            )
        })
        .collect();
    assert_eq!(
        text,
        [
            "203.0.113.0/28 {\"tor\"} 0 Some(100)",
            "203.0.113.5/32 {\"tor\"} 1 Some(100)",
            "2001:db8:1::5/128 {\"tor\"} 1 Some(100)",
        ]
    );
    // The IPv6 address is a /128 in both advertisements: one route, attributes merged.
    let p2 = run(&c, &svcs, &nodes, &live(&[]), "n2");
    assert!(
        p2.bgp.iter().any(|r| r.peers.contains("rack2")),
        "n2 is selected by rack2"
    );
}

#[test]
fn bgp_local_traffic_announces_only_from_nodes_with_endpoints() {
    let c = config(BGP);
    let nodes = [node("n1", &[]), node("n2", &[])];
    let mut svc = service("a/web", "203.0.113.5");
    svc.local_traffic = true;
    svc.serving = Serving::On(live(&["n2"]).into());
    assert!(
        run(&c, std::slice::from_ref(&svc), &nodes, &live(&[]), "n1")
            .bgp
            .is_empty()
    );
    assert!(!run(&c, &[svc], &nodes, &live(&[]), "n2").bgp.is_empty());
}

#[test]
fn local_routes_say_whether_they_end_with_their_terminating_endpoints() {
    let c = config(BGP);
    let nodes = [node("n1", &[]), node("n2", &[])];
    let mut local = service("a/web", "203.0.113.5");
    local.local_traffic = true;
    local.serving = Serving::On(live(&["n1", "n2"]).into());
    local.terminating_on = live(&["n2"]).into();
    let on = |svcs: &[ServiceView], node: &str| run(&c, svcs, &nodes, &live(&[]), node).bgp;
    // (Two routes each: the /32 and the /28 aggregate of the other advertisement.)
    let r1 = on(std::slice::from_ref(&local), "n1");
    assert_eq!(r1.len(), 2);
    assert!(
        r1.iter().all(|r| r.local_only && !r.ending),
        "n1 keeps a serving endpoint"
    );
    let r2 = on(std::slice::from_ref(&local), "n2");
    assert!(
        r2.iter().all(|r| r.local_only && r.ending),
        "n2's endpoints all terminate"
    );
    // A Cluster-policy Service on the same prefixes: the routes neither end nor go at once.
    let cluster = service("a/other", "203.0.113.5");
    let both = on(&[local, cluster], "n2");
    assert_eq!(both.len(), 2, "{both:?}");
    assert!(both.iter().all(|r| !r.local_only && !r.ending), "{both:?}");
}

#[test]
fn a_held_speaker_stands_by_until_nobody_settled_is_left() {
    let c = config(L2);
    let nodes = [node("n1", &[]), node("n2", &[]), node("n3", &[])];
    let svcs = [service("a/web", "192.0.2.10")];
    let all = live(&["n1", "n2", "n3"]);
    let plain = run(&c, &svcs, &nodes, &all, "n1");
    let first = plain.l2[0].ranking[0].to_string();
    let held = live(&[first.as_str()]);
    // Every speaker agrees: the held one ranks last, so the second takes (keeps) the address.
    for this in ["n1", "n2", "n3"] {
        let p = plan_with_held(
            Inputs {
                config: &c,
                services: &shared(&svcs),
                nodes: &nodes,
                live_speakers: &all,
                this_node: this,
            },
            &held,
        );
        let mut expected = plain.l2[0].ranking.clone();
        expected.rotate_left(1);
        assert_eq!(p.l2[0].ranking, expected, "seen from {this}");
    }
    // Alone, the held speaker still takes over: holding never leaves an address unannounced.
    let only = live(&[first.as_str()]);
    let p = plan_with_held(
        Inputs {
            config: &c,
            services: &shared(&svcs),
            nodes: &nodes,
            live_speakers: &only,
            this_node: &first,
        },
        &held,
    );
    assert_eq!(p.l2[0].owner(), Some(first.as_str()));
}

#[test]
fn holding_outranks_node_preference() {
    let c = config(
        "apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: lan}\nspec: {addresses: [192.0.2.0/24]}\n---\napiVersion: ferrolb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: lan}\nspec:\n  preferredNodeSelectors:\n  - weight: 100\n    preference: {matchLabels: {fast: \"yes\"}}\n",
    );
    let nodes = [node("n1", &[("fast", "yes")]), node("n2", &[])];
    let svcs = [service("a/web", "192.0.2.10")];
    let all = live(&["n1", "n2"]);
    assert_eq!(run(&c, &svcs, &nodes, &all, "n1").l2[0].owner(), Some("n1"));
    let p = plan_with_held(
        Inputs {
            config: &c,
            services: &shared(&svcs),
            nodes: &nodes,
            live_speakers: &all,
            this_node: "n1",
        },
        &live(&["n1"]),
    );
    assert_eq!(names(&p.l2[0].ranking), ["n2", "n1"]);
}

#[test]
fn weighted_advertisements_carry_this_nodes_serving_endpoints() {
    let c = config(
        "apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: pub}\nspec: {addresses: [203.0.113.0/28]}\n---\napiVersion: ferrolb.io/v1beta1\nkind: BGPPeer\nmetadata: {name: tor}\nspec: {myASN: 64512, peerASN: 64500, peerAddress: 198.51.100.1}\n---\napiVersion: ferrolb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {name: weighted}\nspec: {weightByEndpoints: true}\n",
    );
    let nodes = [node("n1", &[]), node("n2", &[])];
    let mut local = service("a/web", "203.0.113.5");
    local.local_traffic = true;
    local.serving = Serving::On(live(&["n1", "n2"]).into());
    local.endpoints_on = [("n1".to_string(), 1), ("n2".to_string(), 3)].into();
    // externalTrafficPolicy Cluster: kube-proxy spreads the traffic anyway, nothing to weigh.
    let cluster = service("a/db", "203.0.113.6");
    let weight = |node: &str, ip: &str| {
        run(
            &c,
            &[local.clone(), cluster.clone()],
            &nodes,
            &live(&[]),
            node,
        )
        .bgp
        .iter()
        .find(|r| r.prefix.addr().to_string() == ip)
        .map(|r| r.endpoint_weight)
    };
    assert_eq!(weight("n1", "203.0.113.5"), Some(Some(1)));
    assert_eq!(weight("n2", "203.0.113.5"), Some(Some(3)));
    assert_eq!(weight("n1", "203.0.113.6"), Some(None));
    // Without the field, no weight.
    let plain = config(BGP);
    let route = run(&plain, &[local], &nodes, &live(&[]), "n2");
    assert!(route.bgp.iter().all(|r| r.endpoint_weight.is_none()));
}

#[test]
fn an_address_shared_by_services_with_different_candidates_has_one_owner() {
    let c = config(L2);
    let nodes = [node("n1", &[]), node("n2", &[]), node("n3", &[])];
    let all = live(&["n1", "n2", "n3"]);
    // Many addresses, so that the bound pushes owners off their hash-first node.
    let mut svcs: Vec<ServiceView> = (1..40)
        .map(|i| service(&format!("a/s{i:02}"), &format!("192.0.2.{i}")))
        .collect();
    for i in 1..40 {
        // The same address, Local with endpoints on n2 and n3 only.
        let mut local = service(&format!("b/l{i:02}"), &format!("192.0.2.{i}"));
        local.local_traffic = true;
        local.serving = Serving::On(live(&["n2", "n3"]).into());
        svcs.push(local);
    }
    let plan = run(&c, &svcs, &nodes, &all, "n1");
    let mut owners: BTreeMap<IpAddr, BTreeSet<String>> = BTreeMap::new();
    for d in &plan.l2 {
        owners
            .entry(d.ip)
            .or_default()
            .insert(d.owner().unwrap().to_string());
    }
    for (ip, o) in &owners {
        assert_eq!(o.len(), 1, "{ip} has owners {o:?}");
        assert!(
            !o.contains("n1"),
            "{ip}: the Local Service has no endpoint on n1"
        );
    }
}

#[test]
fn virtual_mac_follows_the_advertisements_that_select_the_owner() {
    let c = config(
        "apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: lan}\nspec: {addresses: [192.0.2.0/28]}\n---\napiVersion: ferrolb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: virtual}\nspec: {virtualMAC: true, nodeSelectors: [{matchLabels: {rack: a}}]}\n---\napiVersion: ferrolb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: plain}\nspec: {nodeSelectors: [{matchLabels: {rack: b}}]}\n",
    );
    let svcs = [service("a/web", "192.0.2.10")];
    let on = |labels: &[(&str, &str)]| {
        let nodes = [node("n1", labels)];
        let p = run(&c, &svcs, &nodes, &live(&["n1"]), "n1");
        assert_eq!(p.l2[0].owner(), Some("n1"));
        p.l2[0].virtual_mac
    };
    assert!(on(&[("rack", "a")]));
    assert!(!on(&[("rack", "b")]));
    // Without the field, never.
    let plain = config(L2);
    let p = run(&plain, &svcs, &[node("n1", &[])], &live(&["n1"]), "n1");
    assert!(!p.l2[0].virtual_mac);
}
