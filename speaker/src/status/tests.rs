use super::*;
use crate::planner::{BgpRoute, L2Decision};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn decision(service: &str, addr: &str, ranking: &[&str]) -> L2Decision {
    L2Decision {
        service: service.into(),
        ip: ip(addr),
        ranking: ranking.iter().map(|s| std::sync::Arc::from(*s)).collect(),
        interfaces: vec![],
        virtual_mac: false,
    }
}

fn announced(l2: &[(&str, &str)], plan: NodePlan) -> Announced {
    Announced {
        l2: l2.iter().map(|(a, i)| (ip(a), i.to_string())).collect(),
        plan: plan.into(),
        ..Default::default()
    }
}

fn plan() -> NodePlan {
    NodePlan {
        l2: vec![
            decision("apps/web", "192.0.2.10", &["node-a", "node-b"]),
            decision("apps/web", "2001:db8::10", &["node-a", "node-b"]),
            decision("apps/db", "192.0.2.11", &["node-b", "node-a"]),
        ],
        bgp: vec![
            BgpRoute {
                prefix: "192.0.2.12/32".parse().unwrap(),
                services: ["apps/api".to_string()].into(),
                peers: std::sync::Arc::new(["tor-1".to_string(), "tor-2".to_string()].into()),
                communities: Default::default(),
                local_pref: None,
                local_only: false,
                endpoint_weight: None,
                ending: false,
            },
            BgpRoute {
                prefix: "2001:db8::12/128".parse().unwrap(),
                services: ["apps/api".to_string()].into(),
                peers: std::sync::Arc::new(["tor-3".to_string()].into()),
                communities: Default::default(),
                local_pref: None,
                local_only: false,
                endpoint_weight: None,
                ending: false,
            },
        ],
        skipped: vec![],
    }
}

#[test]
fn one_l2_object_per_announced_service_with_its_interfaces_and_one_bgp_object_with_its_peers() {
    let now = announced(
        &[
            ("192.0.2.10", "eth0"),
            ("2001:db8::10", "eth0"),
            ("2001:db8::10", "eth1"),
        ],
        plan(),
    );
    let want = desired("node-a", &now);
    let objects: Vec<&StatusObject> = want.values().collect();
    assert_eq!(objects.len(), 2, "{objects:#?}");
    let l2 = objects
        .iter()
        .find(|o| o.protocol == Protocol::Layer2)
        .unwrap();
    assert_eq!(
        (l2.service_namespace.as_str(), l2.service_name.as_str()),
        ("apps", "web")
    );
    assert_eq!(l2.items, vec!["eth0", "eth1"]);
    assert_eq!(l2.name, object_name(Protocol::Layer2, "node-a", "apps/web"));
    assert!(l2.name.starts_with("l2-"));
    let status = l2.status();
    assert_eq!(status["status"]["node"], "node-a");
    assert_eq!(status["status"]["serviceName"], "web");
    assert_eq!(status["status"]["serviceNamespace"], "apps");
    assert_eq!(
        status["status"]["interfaces"],
        json!([{"name": "eth0"}, {"name": "eth1"}])
    );
    assert!(status.get("spec").is_none());
    let object = l2.object();
    assert_eq!(object["kind"], "ServiceL2Status");
    assert_eq!(object["metadata"]["labels"][NODE_LABEL], "node-a");
    assert_eq!(object["metadata"]["labels"][SERVICE_NAME_LABEL], "web");
    assert_eq!(
        object["metadata"]["labels"][SERVICE_NAMESPACE_LABEL],
        "apps"
    );
    assert!(object.get("status").is_none());

    let bgp = objects
        .iter()
        .find(|o| o.protocol == Protocol::Bgp)
        .unwrap();
    assert_eq!(bgp.service_name, "api");
    assert_eq!(bgp.items, vec!["tor-1", "tor-2", "tor-3"]);
    assert_eq!(
        bgp.status()["status"]["peers"],
        json!(["tor-1", "tor-2", "tor-3"])
    );
    assert_eq!(bgp.object()["kind"], "ServiceBGPStatus");
}

#[test]
fn names_are_stable_per_node_and_service_and_differ_otherwise() {
    let a = object_name(Protocol::Layer2, "node-a", "apps/web");
    assert_eq!(a, object_name(Protocol::Layer2, "node-a", "apps/web"));
    assert_ne!(a, object_name(Protocol::Layer2, "node-b", "apps/web"));
    assert_ne!(a, object_name(Protocol::Layer2, "node-a", "apps/db"));
    assert!(object_name(Protocol::Bgp, "node-a", "apps/web").starts_with("bgp-"));
    // "a/bc" and "ab/c" must not collide through concatenation.
    assert_ne!(
        object_name(Protocol::Layer2, "n", "a/bc"),
        object_name(Protocol::Layer2, "n", "ab/c")
    );
}

#[test]
fn nothing_announced_wants_nothing() {
    assert!(desired("node-a", &Announced::default()).is_empty());
    // Ranked but not announcing (the standby), no BGP route: no object.
    let standby = NodePlan {
        bgp: vec![],
        ..plan()
    };
    assert!(desired("node-b", &announced(&[], standby)).is_empty());
}

#[test]
fn takeovers_are_the_services_of_newly_announced_addresses() {
    let before = announced(&[("192.0.2.10", "eth0")], plan());
    let now = announced(
        &[
            ("192.0.2.10", "eth0"),
            ("2001:db8::10", "eth0"),
            ("192.0.2.11", "eth0"),
        ],
        plan(),
    );
    let t = takeovers(&before, &now);
    assert_eq!(
        t,
        vec![
            Takeover {
                protocol: Protocol::Layer2,
                service_namespace: "apps".into(),
                service_name: "db".into(),
                announced: vec!["192.0.2.11".into()],
            },
            Takeover {
                protocol: Protocol::Layer2,
                service_namespace: "apps".into(),
                service_name: "web".into(),
                announced: vec!["2001:db8::10".into()],
            },
        ]
    );
    assert_eq!(
        t[0].note("node-a"),
        "announcing from node \"node-a\" with protocol \"layer2\": 192.0.2.11"
    );
    // Moving to another interface is not a takeover; losing one is not either.
    let moved = announced(&[("192.0.2.10", "eth1")], plan());
    assert!(takeovers(&before, &moved).is_empty());
    assert!(takeovers(&now, &before).is_empty());
}

#[test]
fn bgp_takeovers_are_the_services_of_newly_sent_prefixes() {
    let no_bgp = NodePlan {
        bgp: vec![],
        ..plan()
    };
    // Same addresses in layer 2; both of apps/api's prefixes newly sent: one BGP takeover.
    let t = takeovers(&announced(&[], no_bgp.clone()), &announced(&[], plan()));
    assert_eq!(
        t,
        vec![Takeover {
            protocol: Protocol::Bgp,
            service_namespace: "apps".into(),
            service_name: "api".into(),
            announced: vec!["192.0.2.12/32".into(), "2001:db8::12/128".into()],
        }]
    );
    assert_eq!(
        t[0].note("node-a"),
        "announcing from node \"node-a\" with protocol \"bgp\": 192.0.2.12/32, 2001:db8::12/128"
    );
    // A prefix that only changes peers is no news, nor is one withdrawn.
    let mut fewer_peers = plan();
    fewer_peers.bgp[0].peers = std::sync::Arc::new(["tor-2".to_string()].into());
    assert!(takeovers(&announced(&[], plan()), &announced(&[], fewer_peers)).is_empty());
    assert!(takeovers(&announced(&[], plan()), &announced(&[], no_bgp.clone())).is_empty());
    // A route planned for no peer is not announced: no Event (until a peer is selected).
    let mut no_peer = plan();
    no_peer.bgp.truncate(1);
    no_peer.bgp[0].peers = Default::default();
    assert!(takeovers(&announced(&[], no_bgp), &announced(&[], no_peer.clone())).is_empty());
    assert_eq!(
        takeovers(&announced(&[], no_peer), &announced(&[], plan()))[0].announced,
        vec!["192.0.2.12/32".to_string(), "2001:db8::12/128".to_string()]
    );
}

#[test]
fn label_values_are_valid_for_any_name() {
    assert_eq!(label_value("node-a"), "node-a");
    let long = "n".repeat(64);
    let v = label_value(&long);
    assert!(v.len() <= 63 && v.starts_with("h-"), "{v}");
    assert_ne!(label_value(&"m".repeat(64)), v);
    assert!(label_value("a/b").starts_with("h-"));
    assert!(label_value("-x").starts_with("h-"));
}

#[test]
fn the_configuration_state_carries_every_error_line() {
    assert_eq!(configuration_state_name("node-a"), "speaker-node-a");
    assert_eq!(configuration_status(&ConfigReport::Unknown), None);
    let valid = configuration_status(&ConfigReport::Valid).unwrap();
    assert_eq!(valid["result"], "Valid");
    assert_eq!(valid["conditions"][0]["type"], "Valid");
    assert_eq!(valid["conditions"][0]["status"], "True");
    let invalid = ConfigReport::Invalid(vec![
        "IPAddressPool/a: spec.addresses[0]: overlaps IPAddressPool/b".into(),
        "L2Advertisement/x: spec.ipAddressPools[0]: no IPAddressPool \"c\"".into(),
    ]);
    let status = configuration_status(&invalid).unwrap();
    assert_eq!(status["result"], "Invalid");
    assert_eq!(status["errorSummary"].as_str().unwrap().lines().count(), 2);
    let types: Vec<&str> = status["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["Valid", "IPAddressPool.a", "L2Advertisement.x"],
        "{status}"
    );
    assert_eq!(status["conditions"][1]["reason"], "Invalid");
}

#[test]
fn node_problems_join_the_report() {
    let line = "BGPPeer/tor: spec.vrf: no VRF device red on this node".to_string();
    assert_eq!(
        with_node_problems(&ConfigReport::Unknown, std::slice::from_ref(&line)),
        ConfigReport::Unknown,
        "nothing to say before the caches are filled"
    );
    assert_eq!(
        with_node_problems(&ConfigReport::Valid, &[]),
        ConfigReport::Valid
    );
    assert_eq!(
        with_node_problems(&ConfigReport::Valid, std::slice::from_ref(&line)),
        ConfigReport::Invalid(vec![line.clone()])
    );
    let invalid = ConfigReport::Invalid(vec!["IPAddressPool/a: spec.addresses[0]: bad".into()]);
    assert_eq!(
        with_node_problems(&invalid, std::slice::from_ref(&line)),
        ConfigReport::Invalid(vec!["IPAddressPool/a: spec.addresses[0]: bad".into(), line])
    );
}

fn names(n: &[&str]) -> BTreeSet<String> {
    n.iter().map(|s| s.to_string()).collect()
}

#[test]
fn the_first_live_speaker_of_a_majority_sweeps() {
    let live = names(&["node-b", "node-a", "node-c"]);
    assert!(sweeper("node-a", &live, true));
    assert!(!sweeper("node-b", &live, true));
    // A minority cannot tell the dead from the cut-off.
    assert!(!sweeper("node-a", &live, false));
    assert!(!sweeper("node-a", &BTreeSet::new(), true));
}

#[test]
fn objects_of_a_dead_node_go_after_dead_for_and_never_ours_or_the_living() {
    let live = names(&["node-a", "node-b"]);
    let listed: Vec<(String, String)> = [
        ("web-a", "node-a"),
        ("web-b", "node-b"),
        ("web-c", "node-c"),
        ("db-c", "node-c"),
        ("web-d", "node-d"),
    ]
    .iter()
    .map(|(n, o)| (n.to_string(), o.to_string()))
    .collect();
    let s = std::time::Duration::from_secs;
    // node-c out for 5 s, node-d just now (not yet in the map: absent from now on).
    let absent = BTreeMap::from([("node-c".to_string(), s(10))]);
    let (delete, again) = dead_objects("node-a", &live, &listed, &absent, s(15));
    assert_eq!(delete, vec!["web-c".to_string(), "db-c".to_string()]);
    assert_eq!(again, Some(s(15) + DEAD_FOR));
    // Our own objects are ours to manage, even if we are not in the live set.
    let (delete, again) = dead_objects("node-c", &live, &listed, &absent, s(15));
    assert!(delete.is_empty(), "{delete:?}");
    assert_eq!(again, Some(s(15) + DEAD_FOR));
}
