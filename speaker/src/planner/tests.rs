use super::*;
use crate::view::Serving;
use ferrolb_config::manifest::config_from_yaml;

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
    }
}

use ferrolb_config::model::Labels;

const L2: &str = "apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: lan}\nspec: {addresses: [192.0.2.0/24, 2001:db8::/120]}\n---\napiVersion: ferrolb.io/v1beta1\nkind: L2Advertisement\nmetadata: {name: lan}\n";

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
        services,
        nodes,
        live_speakers,
        this_node: this,
    })
}

#[test]
fn every_speaker_agrees_on_the_owner_and_the_ranking_is_by_hash() {
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
        let mut expected: Vec<&str> = vec!["n1", "n2", "n3"];
        expected.sort_by_key(|n| rank_key(n, d.ip));
        assert_eq!(d.ranking, expected);
    }
    let owners: usize = ["n1", "n2", "n3"]
        .iter()
        .zip(&plans)
        .map(|(n, p)| p.l2_owned(n).count())
        .sum();
    assert_eq!(owners, 2, "each address has exactly one owner");
}

#[test]
fn a_dead_node_moves_only_its_own_addresses() {
    let c = config(L2);
    let nodes = [node("n1", &[]), node("n2", &[]), node("n3", &[])];
    let svcs: Vec<ServiceView> = (1..60)
        .map(|i| service(&format!("a/s{i}"), &format!("192.0.2.{i}")))
        .collect();
    let before = run(&c, &svcs, &nodes, &live(&["n1", "n2", "n3"]), "n1");
    let after = run(&c, &svcs, &nodes, &live(&["n1", "n3"]), "n1");
    for (b, a) in before.l2.iter().zip(&after.l2) {
        if b.owner() != Some("n2") {
            assert_eq!(
                b.owner(),
                a.owner(),
                "{} moved although its owner lives",
                b.ip
            );
        } else {
            assert_eq!(
                a.owner(),
                b.ranking.get(1).map(String::as_str),
                "the standby takes over"
            );
        }
    }
}

#[test]
fn no_serving_endpoint_means_no_announcement_and_local_traffic_picks_serving_nodes() {
    let c = config(L2);
    let nodes = [node("n1", &[]), node("n2", &[])];
    let mut idle = service("a/idle", "192.0.2.1");
    idle.serving = Serving::On(BTreeSet::new());
    let mut local = service("a/local", "192.0.2.2");
    local.local_traffic = true;
    local.serving = Serving::On(live(&["n2"]));
    let p = run(&c, &[idle, local], &nodes, &live(&["n1", "n2"]), "n1");
    assert_eq!(p.skipped[0].reason, "no endpoint of the Service is serving");
    assert_eq!(p.l2.len(), 1);
    assert_eq!(p.l2[0].ranking, ["n2"]);
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
    assert_eq!(p.l2[0].ranking, ["good"]);
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
    svc.serving = Serving::On(live(&["n2"]));
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
    local.serving = Serving::On(live(&["n1", "n2"]));
    local.terminating_on = live(&["n2"]);
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
    let first = plain.l2[0].ranking[0].clone();
    let held = live(&[first.as_str()]);
    // Every speaker agrees: the held one ranks last, so the second takes (keeps) the address.
    for this in ["n1", "n2", "n3"] {
        let p = plan_with_held(
            Inputs {
                config: &c,
                services: &svcs,
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
            services: &svcs,
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
            services: &svcs,
            nodes: &nodes,
            live_speakers: &all,
            this_node: "n1",
        },
        &live(&["n1"]),
    );
    assert_eq!(p.l2[0].ranking, vec!["n2".to_string(), "n1".to_string()]);
}
