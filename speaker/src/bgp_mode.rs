//! BGP mode, pure part: the planner's routes and the configured peers, turned into what the
//! engine (`ferrolb-bgp`) takes, and the difference between two peer sets, so a change applies
//! to the sessions it concerns and leaves every other session up (MetalLB with FRR resets every
//! session on any change: #1944).

use crate::planner::NodePlan;
use crate::view::NodeView;
use ferrolb_bgp::{
    BfdConfig, Family, GracefulRestartConfig, LargeCommunity, PeerConfig, PeerKey, RouteAttributes,
};
use ferrolb_config::community::Community;
use ferrolb_config::model::{BfdProfile, Peer, PeerAddress, PeerAsn};
use ferrolb_config::Config;
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// How long routers keep our routes while a speaker restarts, with graceful restart.
pub const GRACEFUL_RESTART_TIME: u16 = 120;
/// TTL of eBGP multihop sessions.
const MULTIHOP_TTL: u8 = 255;

/// A peer this node does not set up, and why.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct PeerProblem {
    pub peer: String,
    pub reason: String,
}

/// What this node knows of the link of an unnumbered peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkState {
    /// The router heard on the link (the source of its Router Advertisements).
    Router(Ipv6Addr),
    /// Listening; no Router Advertisement yet.
    Waiting,
    /// The link cannot be watched (no such interface on this node, IPv6 off on it, ...).
    Failed(String),
}

/// The engine's settings for one configured peer, as this node sees it; `links` says where
/// the router of each interface is, for unnumbered peers.
pub fn peer_config(
    peer: &Peer,
    router_id: Option<Ipv4Addr>,
    restarting: bool,
    links: &BTreeMap<String, LinkState>,
) -> Result<PeerConfig, String> {
    let (address, interface) = match &peer.address {
        PeerAddress::Ip(ip) => (*ip, None),
        PeerAddress::Interface(name) => match links.get(name) {
            Some(LinkState::Router(ll)) => (IpAddr::V6(*ll), Some(name.clone())),
            Some(LinkState::Failed(why)) => return Err(format!("spec.interface: {why}")),
            Some(LinkState::Waiting) | None => {
                return Err(format!(
                    "spec.interface: no router heard on {name} yet (waiting for its IPv6 Router Advertisements)"
                ))
            }
        },
    };
    let local_as = peer.local_as();
    let mut c = match peer.peer_asn {
        PeerAsn::Fixed(asn) => PeerConfig::new(address, local_as, asn),
        PeerAsn::Internal => PeerConfig::new(address, local_as, local_as),
        PeerAsn::External => PeerConfig::any_external(address, local_as),
    };
    let seconds = |d: std::time::Duration| u16::try_from(d.as_secs()).unwrap_or(u16::MAX);
    c.interface = interface;
    c.vrf = peer.vrf.clone();
    c.port = peer.port;
    c.router_id = peer.router_id.or(router_id);
    c.source_address = peer.source_address;
    c.hold_time = seconds(peer.hold_time);
    c.keepalive_time = Some(seconds(peer.keepalive_time));
    c.connect_retry = peer.connect_time;
    c.md5_password = peer.password.as_ref().map(|p| p.0.clone());
    c.ebgp_multihop = (peer.ebgp_multihop && !peer.is_internal()).then_some(MULTIHOP_TTL);
    c.graceful_restart = peer.graceful_restart.then_some(GracefulRestartConfig {
        restart_time: GRACEFUL_RESTART_TIME,
        restarting,
    });
    // As MetalLB: a session carries its own address family only, both with
    // dualStackAddressFamily. An unnumbered session carries both: it exists to announce IPv4
    // over IPv6 link-local addresses (RFC 8950).
    c.families = match (peer.dual_stack || c.interface.is_some(), address) {
        (true, _) => vec![Family::IPV4_UNICAST, Family::IPV6_UNICAST],
        (false, IpAddr::V4(_)) => vec![Family::IPV4_UNICAST],
        (false, IpAddr::V6(_)) => vec![Family::IPV6_UNICAST],
    };
    // RFC 8950 on every IPv6 session: where the peer negotiates it, IPv4 routes (with
    // dualStackAddressFamily) may carry the session's IPv6 next hop, so a node without an IPv4
    // address still announces IPv4 addresses (its IPv4 next hop stays first where it has one).
    c.extended_next_hop = address.is_ipv6();
    Ok(c)
}

/// The engine's BFD settings from a BFDProfile; multihop (UDP 4784, minimumTtl) for eBGP
/// multihop peers; echo at echoInterval with echoMode.
pub fn bfd_config(profile: &BfdProfile, multihop: bool) -> Result<BfdConfig, String> {
    if profile.echo_mode && multihop {
        return Err(format!(
            "BFDProfile/{}: spec.echoMode: no echo on multihop sessions (RFC 5883)",
            profile.name
        ));
    }
    let ms = |v: u32| std::time::Duration::from_millis(v.into());
    Ok(BfdConfig {
        receive_interval: ms(profile.receive_interval_ms),
        transmit_interval: ms(profile.transmit_interval_ms),
        detect_multiplier: u8::try_from(profile.detect_multiplier).unwrap_or(u8::MAX),
        passive: profile.passive_mode,
        multihop,
        minimum_ttl: u8::try_from(profile.minimum_ttl).unwrap_or(u8::MAX),
        hold_routes_until_up: false,
        auth: None,
        echo_interval: profile.echo_mode.then(|| ms(profile.echo_interval_ms)),
    })
}

/// The peers this node sets up: those whose node selectors select it, by engine key (address,
/// scoped by link or VRF).
pub fn node_peers(
    config: &Config,
    node: &NodeView,
    router_id: Option<Ipv4Addr>,
    restarting: bool,
    links: &BTreeMap<String, LinkState>,
) -> (BTreeMap<PeerKey, (String, PeerConfig)>, Vec<PeerProblem>) {
    let mut peers = BTreeMap::new();
    let mut problems = Vec::new();
    for peer in node_selected(config, node) {
        let with_bfd = peer_config(peer, router_id, restarting, links).and_then(|mut c| {
            let profile = peer
                .bfd_profile
                .as_ref()
                .and_then(|n| config.bfd_profiles.get(n));
            c.bfd = profile
                .map(|p| bfd_config(p, c.ebgp_multihop.is_some()))
                .transpose()?;
            Ok(c)
        });
        match with_bfd {
            Ok(c) if peers.contains_key(&c.key()) => problems.push(PeerProblem {
                peer: peer.name.clone(),
                reason: format!(
                    "spec.peerAddress: another BGPPeer selecting this node has address {}",
                    c.key()
                ),
            }),
            Ok(c) => {
                peers.insert(c.key(), (peer.name.clone(), c));
            }
            Err(reason) => problems.push(PeerProblem {
                peer: peer.name.clone(),
                reason,
            }),
        }
    }
    (peers, problems)
}

/// The configured peers whose node selectors select `node`.
pub fn node_selected<'a>(config: &'a Config, node: &NodeView) -> impl Iterator<Item = &'a Peer> {
    let labels = node.labels.clone();
    config
        .peers
        .values()
        .filter(move |p| p.node_selectors.matches(&labels))
}

/// The interfaces of this node's unnumbered peers: the links to watch for routers.
pub fn unnumbered_links(config: &Config, node: &NodeView) -> BTreeSet<String> {
    node_selected(config, node)
        .filter_map(|p| match &p.address {
            PeerAddress::Interface(name) => Some(name.clone()),
            PeerAddress::Ip(_) => None,
        })
        .collect()
}

fn attributes(
    communities: impl Iterator<Item = Community>,
    local_pref: Option<u32>,
) -> RouteAttributes {
    let mut a = RouteAttributes {
        local_pref,
        ..Default::default()
    };
    for c in communities {
        match c {
            Community::Standard(v) => a.communities.push(v),
            Community::Large(global, local1, local2) => a.large_communities.push(LargeCommunity {
                global,
                local1,
                local2,
            }),
        }
    }
    a
}

/// The bandwidth one serving endpoint stands for in the link bandwidth community: 1 Mbit/s, in
/// bytes per second. Routers keep the ratio between paths. FRR reads the value as whole Mbit/s
/// and casts bytes per second to 32 bits, so the unit is at least 1 Mbit/s and the total stays
/// below 2^32 bytes per second (capped: 34,359 endpoints and more weigh the same).
pub const BANDWIDTH_PER_ENDPOINT: f32 = 125_000.0;

/// The link bandwidth extended community (draft-ietf-idr-link-bandwidth, RFC 10005) for
/// `endpoints` serving endpoints: type 0x00 (two-octet AS specific, transitive), sub-type
/// 0x04, our AS (AS_TRANS when it does not fit in two octets), the bandwidth as an IEEE 754
/// float in bytes per second. The transitive form, as FRR originates it: FRR before 10.5 does
/// not weigh its ECMP by the non-transitive (0x40) one.
pub fn link_bandwidth(local_asn: u32, endpoints: u32) -> [u8; 8] {
    const AS_TRANS: u16 = 23456;
    let asn = u16::try_from(local_asn).unwrap_or(AS_TRANS);
    // The largest f32 below 2^32 (u32::MAX itself rounds up to 2^32 as an f32).
    const MOST: f32 = 4_294_967_040.0;
    let bandwidth = (endpoints as f32 * BANDWIDTH_PER_ENDPOINT).min(MOST);
    let mut c = [0u8; 8];
    c[0] = 0x00;
    c[1] = 0x04;
    c[2..4].copy_from_slice(&asn.to_be_bytes());
    c[4..8].copy_from_slice(&bandwidth.to_bits().to_be_bytes());
    c
}

/// The routes each peer should have, from the node's plan. With `graceful_shutdown`, routes
/// about to end (externalTrafficPolicy Local, this node's endpoints all terminating) carry the
/// GRACEFUL_SHUTDOWN community already, so routers move the traffic while they still serve.
pub fn routes_per_peer(
    plan: &NodePlan,
    peers: &BTreeMap<PeerKey, (String, PeerConfig)>,
    graceful_shutdown: bool,
) -> BTreeMap<PeerKey, Vec<(IpNet, RouteAttributes)>> {
    let by_name: BTreeMap<&str, &PeerKey> = peers
        .iter()
        .map(|(key, (name, _))| (name.as_str(), key))
        .collect();
    let mut out: BTreeMap<PeerKey, Vec<(IpNet, RouteAttributes)>> =
        peers.keys().map(|key| (key.clone(), Vec::new())).collect();
    for route in &plan.bgp {
        for name in route.peers.iter() {
            if let Some(key) = by_name.get(name.as_str()) {
                let mut a = attributes(route.communities.iter().copied(), route.local_pref);
                if let (Some(endpoints), Some((_, config))) =
                    (route.endpoint_weight, peers.get(*key))
                {
                    a.extended_communities
                        .push(link_bandwidth(config.local_asn, endpoints));
                }
                let a = if graceful_shutdown && route.ending {
                    a.graceful_shutdown()
                } else {
                    a
                };
                out.entry((*key).clone())
                    .or_default()
                    .push((route.prefix, a));
            }
        }
    }
    out
}

/// What to do to go from one peer set to another.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PeerChanges {
    pub add: Vec<PeerConfig>,
    /// Peers whose settings changed (the engine resets only these sessions).
    pub update: Vec<PeerConfig>,
    pub remove: Vec<PeerKey>,
}

/// The difference between the running peers and the wanted ones; unchanged peers are not
/// mentioned, so their sessions stay up.
pub fn diff_peers(
    running: &BTreeMap<PeerKey, PeerConfig>,
    wanted: &BTreeMap<PeerKey, PeerConfig>,
) -> PeerChanges {
    let mut changes = PeerChanges::default();
    for (key, want) in wanted {
        match running.get(key) {
            None => changes.add.push(want.clone()),
            Some(have) if comparable(have) != comparable(want) => changes.update.push(want.clone()),
            Some(_) => {}
        }
    }
    changes.remove = running
        .keys()
        .filter(|k| !wanted.contains_key(k))
        .cloned()
        .collect();
    changes
}

/// A peer's settings without the restart flag, which changes after the first session and must
/// not count as a configuration change.
fn comparable(c: &PeerConfig) -> PeerConfig {
    let mut c = c.clone();
    if let Some(gr) = c.graceful_restart.as_mut() {
        gr.restarting = false;
    }
    c
}

pub mod draining;
pub mod driver;
pub mod metrics_feed;
pub mod nexthop;

#[cfg(test)]
mod tests;
