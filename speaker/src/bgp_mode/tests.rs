use super::*;
use crate::planner::{plan, Inputs};
use crate::view::{ServiceView, Serving};
use ferrolb_config::manifest::config_from_yaml;
use ferrolb_config::model::Labels;
use std::collections::BTreeSet;

fn no_links() -> BTreeMap<String, LinkState> {
    BTreeMap::new()
}

fn key(address: &str) -> PeerKey {
    address.parse::<IpAddr>().unwrap().into()
}

fn with_vrf_peer(mut c: Config) -> Config {
    c.peers.get_mut("in-vrf").unwrap().vrf = Some("red".into());
    c
}

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

const YAML: &str = "apiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: pub}\nspec: {addresses: [203.0.113.0/28]}\n---\napiVersion: ferrolb.io/v1beta1\nkind: BGPPeer\nmetadata: {name: tor}\nspec: {myASN: 64512, peerASN: 64500, peerAddress: 198.51.100.1, holdTime: 9s, password: s3cret, enableGracefulRestart: true, ebgpMultiHop: true}\n---\napiVersion: ferrolb.io/v1beta1\nkind: BGPPeer\nmetadata: {name: ibgp}\nspec: {myASN: 64512, dynamicASN: internal, peerAddress: 198.51.100.2, nodeSelectors: [{matchLabels: {rack: \"1\"}}]}\n---\napiVersion: ferrolb.io/v1beta1\nkind: BGPPeer\nmetadata: {name: any-external}\nspec: {myASN: 64512, dynamicASN: external, peerAddress: 198.51.100.3, nodeSelectors: [{matchLabels: {rack: \"1\"}}]}\n---\napiVersion: ferrolb.io/v1beta1\nkind: BGPPeer\nmetadata: {name: in-vrf}\nspec: {myASN: 64512, peerASN: 64500, peerAddress: 198.51.100.4, nodeSelectors: [{matchLabels: {rack: \"1\"}}]}\n---\napiVersion: ferrolb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {name: all}\nspec: {communities: [\"64512:7\", \"large:64512:1:2\"], localPref: 200}\n";

#[test]
fn peers_follow_node_selectors_and_carry_their_settings() {
    let c = with_vrf_peer(config(YAML));
    let router_id = Some("192.0.2.10".parse().unwrap());
    let (peers, problems) = node_peers(&c, &node("n1", &[]), router_id, false, &no_links());
    assert!(problems.is_empty());
    assert_eq!(peers.len(), 1, "only tor selects n1");
    let (name, tor) = &peers[&key("198.51.100.1")];
    assert_eq!(name, "tor");
    assert_eq!(
        (
            tor.local_asn,
            tor.peer_asn,
            tor.hold_time,
            tor.keepalive_time
        ),
        (64512, 64500, 9, Some(3))
    );
    assert_eq!(tor.md5_password.as_deref(), Some("s3cret"));
    assert!(!tor.extended_next_hop, "RFC 8950 is for IPv6 sessions");
    assert_eq!(tor.ebgp_multihop, Some(255));
    assert_eq!(
        tor.graceful_restart.map(|g| g.restart_time),
        Some(GRACEFUL_RESTART_TIME)
    );
    assert_eq!(tor.router_id, router_id);

    let (peers, problems) = node_peers(&c, &node("n2", &[("rack", "1")]), None, false, &no_links());
    assert_eq!(peers.len(), 4);
    assert!(problems.is_empty(), "{problems:?}");
    let in_vrf = PeerKey {
        address: "198.51.100.4".parse().unwrap(),
        device: Some("red".into()),
    };
    assert_eq!(peers[&in_vrf].1.vrf.as_deref(), Some("red"));
    let ibgp = &peers[&key("198.51.100.2")].1;
    assert!(ibgp.is_ibgp(), "dynamicASN internal is our own AS");
    let external = &peers[&key("198.51.100.3")].1;
    assert!(
        external.any_external_asn && !external.is_ibgp(),
        "dynamicASN external: any AS but ours"
    );
}

#[test]
fn routes_reach_the_peers_of_their_advertisement_with_attributes() {
    let c = with_vrf_peer(config(YAML));
    let n1 = node("n1", &[]);
    let svc = ServiceView {
        key: "a/web".into(),
        labels: Labels::new(),
        ips: vec!["203.0.113.5".parse().unwrap()],
        local_traffic: false,
        serving: Serving::Everywhere,
        terminating_on: Default::default(),
        endpoints_on: Default::default(),
    };
    let live = BTreeSet::new();
    let node_plan = plan(Inputs {
        config: &c,
        services: &[std::sync::Arc::new(svc)],
        nodes: std::slice::from_ref(&n1),
        live_speakers: &live,
        this_node: "n1",
    });
    let (peers, _) = node_peers(&c, &n1, None, false, &no_links());
    let routes = routes_per_peer(&node_plan, &peers, false);
    let tor_routes = &routes[&key("198.51.100.1")];
    assert_eq!(tor_routes.len(), 1);
    assert_eq!(tor_routes[0].0.to_string(), "203.0.113.5/32");
    let a = &tor_routes[0].1;
    assert_eq!(a.communities, [64512 << 16 | 7]);
    assert_eq!(
        a.large_communities,
        [LargeCommunity {
            global: 64512,
            local1: 1,
            local2: 2
        }]
    );
    assert_eq!(
        a.local_pref,
        Some(200),
        "the engine sends it to iBGP peers only"
    );
}

#[test]
fn only_changed_peers_are_touched() {
    let c = with_vrf_peer(config(YAML));
    let (peers, _) = node_peers(&c, &node("n2", &[("rack", "1")]), None, false, &no_links());
    let running: BTreeMap<PeerKey, PeerConfig> = peers
        .iter()
        .map(|(k, (_, p))| (k.clone(), p.clone()))
        .collect();
    assert_eq!(diff_peers(&running, &running), PeerChanges::default());

    let mut wanted = running.clone();
    let tor = key("198.51.100.1");
    wanted.get_mut(&tor).unwrap().hold_time = 30;
    let new_peer = PeerConfig::new("198.51.100.9".parse().unwrap(), 64512, 64999);
    wanted.insert(new_peer.key(), new_peer.clone());
    let ibgp = key("198.51.100.2");
    wanted.remove(&ibgp);
    let changes = diff_peers(&running, &wanted);
    assert_eq!(changes.add, [new_peer]);
    assert_eq!(changes.update.len(), 1);
    assert_eq!(changes.update[0].key(), tor);
    assert_eq!(changes.remove, [ibgp]);

    // The graceful-restart "restarting" flag clearing after the first session is no change.
    let (restarting, _) = node_peers(&c, &node("n2", &[("rack", "1")]), None, true, &no_links());
    let restarting: BTreeMap<PeerKey, PeerConfig> =
        restarting.into_iter().map(|(k, (_, p))| (k, p)).collect();
    assert!(diff_peers(&restarting, &running).update.is_empty());
}

#[test]
fn bfd_profiles_become_the_engines_bfd_settings() {
    let yaml = "apiVersion: ferrolb.io/v1beta1\nkind: BFDProfile\nmetadata: {name: fast}\nspec: {receiveInterval: 50, transmitInterval: 60, detectMultiplier: 4, passiveMode: true, minimumTtl: 250}\n---\napiVersion: ferrolb.io/v1beta1\nkind: BFDProfile\nmetadata: {name: echo}\nspec: {}\n---\napiVersion: ferrolb.io/v1beta1\nkind: BGPPeer\nmetadata: {name: tor}\nspec: {myASN: 64512, peerASN: 64500, peerAddress: 198.51.100.1, bfdProfile: fast}\n---\napiVersion: ferrolb.io/v1beta1\nkind: BGPPeer\nmetadata: {name: far}\nspec: {myASN: 64512, peerASN: 64500, peerAddress: 198.51.100.2, bfdProfile: fast, ebgpMultiHop: true}\n---\napiVersion: ferrolb.io/v1beta1\nkind: BGPPeer\nmetadata: {name: echoing}\nspec: {myASN: 64512, peerASN: 64500, peerAddress: 198.51.100.3, bfdProfile: echo}\n---\napiVersion: ferrolb.io/v1beta1\nkind: BGPPeer\nmetadata: {name: plain}\nspec: {myASN: 64512, peerASN: 64500, peerAddress: 198.51.100.4}\n";
    let mut c = config(yaml);
    c.bfd_profiles.get_mut("echo").unwrap().echo_mode = true;
    let (peers, problems) = node_peers(&c, &node("n1", &[]), None, false, &no_links());
    let get = |a: &str| peers[&key(a)].1.bfd;
    let tor = get("198.51.100.1").expect("BFD for tor");
    assert_eq!(
        tor,
        BfdConfig {
            receive_interval: std::time::Duration::from_millis(50),
            transmit_interval: std::time::Duration::from_millis(60),
            detect_multiplier: 4,
            passive: true,
            multihop: false,
            minimum_ttl: 250,
            hold_routes_until_up: false,
            auth: None,
            echo_interval: None,
        }
    );
    assert!(get("198.51.100.2").unwrap().multihop, "eBGP multihop peer");
    assert_eq!(get("198.51.100.4"), None);
    // Echo at the profile's echoInterval (default 50 ms).
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(
        get("198.51.100.3").unwrap().echo_interval,
        Some(std::time::Duration::from_millis(50))
    );
    // Echo on a multihop session (the configuration refuses it too) is declined here as well.
    let mut multihop_echo = c.clone();
    multihop_echo
        .peers
        .get_mut("echoing")
        .unwrap()
        .ebgp_multihop = true;
    let (_, problems) = node_peers(&multihop_echo, &node("n1", &[]), None, false, &no_links());
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].peer, "echoing");
    assert!(
        problems[0]
            .reason
            .starts_with("BFDProfile/echo: spec.echoMode: "),
        "{}",
        problems[0].reason
    );
    // A changed profile changes the peer, so the engine applies it.
    let mut faster = c.clone();
    faster
        .bfd_profiles
        .get_mut("fast")
        .unwrap()
        .receive_interval_ms = 20;
    let (after, _) = node_peers(&faster, &node("n1", &[]), None, false, &no_links());
    let running = peers
        .iter()
        .map(|(k, (_, p))| (k.clone(), p.clone()))
        .collect();
    let wanted = after
        .iter()
        .map(|(k, (_, p))| (k.clone(), p.clone()))
        .collect();
    let changes = diff_peers(&running, &wanted);
    assert_eq!(changes.update.len(), 2, "tor and far use the profile");
}

#[test]
fn ipv6_sessions_offer_ipv4_routes_with_an_ipv6_next_hop() {
    let c = config("apiVersion: ferrolb.io/v1beta1\nkind: BGPPeer\nmetadata: {name: v6}\nspec: {myASN: 64512, peerASN: 64500, peerAddress: \"2001:db8::1\"}\n");
    let (peers, _) = node_peers(&c, &node("n1", &[]), None, false, &no_links());
    let (_, v6) = &peers[&key("2001:db8::1")];
    assert!(v6.extended_next_hop);
}

#[test]
fn a_session_carries_its_own_family_unless_dual_stack_as_metallb() {
    use ferrolb_bgp::Family;
    let c = config("apiVersion: ferrolb.io/v1beta1\nkind: BGPPeer\nmetadata: {name: v4}\nspec: {myASN: 64512, peerASN: 64500, peerAddress: 192.0.2.1}\n---\napiVersion: ferrolb.io/v1beta1\nkind: BGPPeer\nmetadata: {name: v6}\nspec: {myASN: 64512, peerASN: 64500, peerAddress: \"2001:db8::1\", disableMP: true}\n---\napiVersion: ferrolb.io/v1beta1\nkind: BGPPeer\nmetadata: {name: both}\nspec: {myASN: 64512, peerASN: 64500, peerAddress: 192.0.2.2, dualStackAddressFamily: true}\n");
    let (peers, _) = node_peers(&c, &node("n1", &[]), None, false, &no_links());
    let families = |a: &str| peers[&key(a)].1.families.clone();
    assert_eq!(families("192.0.2.1"), [Family::IPV4_UNICAST]);
    assert_eq!(families("2001:db8::1"), [Family::IPV6_UNICAST]);
    assert_eq!(
        families("192.0.2.2"),
        [Family::IPV4_UNICAST, Family::IPV6_UNICAST]
    );
}

const UNNUMBERED: &str = "apiVersion: ferrolb.io/v1beta1\nkind: BGPPeer\nmetadata: {name: tor-a}\nspec: {myASN: 64512, dynamicASN: external, interface: eth1}\n---\napiVersion: ferrolb.io/v1beta1\nkind: BGPPeer\nmetadata: {name: tor-b}\nspec: {myASN: 64512, peerASN: 64500, interface: eth2, nodeSelectors: [{matchLabels: {rack: \"1\"}}]}\n---\napiVersion: ferrolb.io/v1beta1\nkind: BGPPeer\nmetadata: {name: red}\nspec: {myASN: 64512, peerASN: 64500, peerAddress: 198.51.100.1, vrf: red}\n---\napiVersion: ferrolb.io/v1beta1\nkind: BGPPeer\nmetadata: {name: blue}\nspec: {myASN: 64512, peerASN: 64500, peerAddress: 198.51.100.1, vrf: blue}\n";

#[test]
fn unnumbered_peers_run_once_their_link_has_a_router() {
    let c = config(UNNUMBERED);
    let n1 = node("n1", &[]);
    assert_eq!(
        unnumbered_links(&c, &n1),
        BTreeSet::from(["eth1".to_string()]),
        "tor-b does not select n1"
    );
    let (peers, problems) = node_peers(&c, &n1, None, false, &no_links());
    assert_eq!(peers.len(), 2, "only the VRF peers");
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].peer, "tor-a");
    assert!(
        problems[0]
            .reason
            .starts_with("spec.interface: no router heard on eth1"),
        "{}",
        problems[0].reason
    );
    let failed = BTreeMap::from([(
        "eth1".to_string(),
        LinkState::Failed("interface eth1: No such device".into()),
    )]);
    let (_, problems) = node_peers(&c, &n1, None, false, &failed);
    assert_eq!(
        problems[0].reason,
        "spec.interface: interface eth1: No such device"
    );

    let router: std::net::Ipv6Addr = "fe80::5e:1".parse().unwrap();
    let links = BTreeMap::from([("eth1".to_string(), LinkState::Router(router))]);
    let (peers, problems) = node_peers(&c, &n1, None, false, &links);
    assert!(problems.is_empty(), "{problems:?}");
    let k = PeerKey {
        address: router.into(),
        device: Some("eth1".into()),
    };
    let (name, tor) = &peers[&k];
    assert_eq!(name, "tor-a");
    assert_eq!(tor.interface.as_deref(), Some("eth1"));
    assert!(tor.any_external_asn);
    assert!(
        tor.extended_next_hop,
        "IPv4 routes over the link-local session"
    );
    assert_eq!(
        tor.families,
        [
            ferrolb_bgp::Family::IPV4_UNICAST,
            ferrolb_bgp::Family::IPV6_UNICAST
        ],
        "an unnumbered session carries both families"
    );
    assert_eq!(tor.ebgp_multihop, None);
    assert!(tor.validate().is_ok());
}

#[test]
fn one_address_in_two_vrfs_is_two_sessions() {
    let c = config(UNNUMBERED);
    let (peers, problems) = node_peers(&c, &node("n1", &[]), None, false, &no_links());
    assert_eq!(problems.len(), 1, "tor-a waits for its router");
    let in_vrf = |vrf: &str| PeerKey {
        address: "198.51.100.1".parse().unwrap(),
        device: Some(vrf.into()),
    };
    assert_eq!(peers[&in_vrf("red")].0, "red");
    assert_eq!(peers[&in_vrf("blue")].0, "blue");
    assert_eq!(peers[&in_vrf("blue")].1.vrf.as_deref(), Some("blue"));
}

#[test]
fn the_link_bandwidth_community_is_transitive_with_our_as_and_the_endpoints_in_bytes() {
    // 2 endpoints = 2 x 1 Mbit/s = 250,000 bytes/s = 0x48742400 as an IEEE float.
    assert_eq!(
        link_bandwidth(64512, 2),
        [0x00, 0x04, 0xfc, 0x00, 0x48, 0x74, 0x24, 0x00]
    );
    // Never past 2^32 bytes/s, which FRR would read wrapped.
    let most = f32::from_bits(u32::from_be_bytes(
        link_bandwidth(64512, u32::MAX)[4..8].try_into().unwrap(),
    ));
    assert!(most < 4_294_967_296.0 && most > 4.0e9, "{most}");
    // A four-octet AS is sent as AS_TRANS (23456).
    assert_eq!(
        link_bandwidth(4_200_000_000, 1)[2..4],
        23456u16.to_be_bytes()
    );
}
