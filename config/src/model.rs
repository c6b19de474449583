//! The validated configuration: what the controller and the speakers act on.
//!
//! Every value here has been checked and every default filled in; names that refer to other
//! objects (pools, peers, communities, BFD profiles) have been resolved. Maps are ordered by name
//! so that everything derived from a `Config` is deterministic.

use crate::addresses::{Family, IpRange};
use crate::community::Community;
use kube::core::{Selector, SelectorExt};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

/// Labels of an object, as selectors see them.
pub type Labels = BTreeMap<String, String>;

/// The whole validated configuration.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Config {
    pub pools: BTreeMap<String, Pool>,
    pub l2_advertisements: BTreeMap<String, L2Advertisement>,
    pub bgp_advertisements: BTreeMap<String, BgpAdvertisement>,
    pub peers: BTreeMap<String, Peer>,
    pub bfd_profiles: BTreeMap<String, BfdProfile>,
    /// Pools that exist but are left out as invalid (set by the running controller): a Service
    /// whose addresses came from one keeps them, untouched, until the pool is fixed or deleted.
    pub withheld_pools: BTreeSet<String>,
}

impl Config {
    /// The pool holding `ip`, if any (pools never overlap).
    pub fn pool_of(&self, ip: IpAddr) -> Option<&Pool> {
        self.pools.values().find(|p| p.contains(ip))
    }
}

/// A list of label selectors, matching when any one of them matches; empty matches everything.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SelectorSet(pub Vec<Selector>);

impl SelectorSet {
    pub fn matches(&self, labels: &Labels) -> bool {
        self.0.is_empty() || self.0.iter().any(|s| s.matches(labels))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// An address pool.
#[derive(Clone, Debug, PartialEq)]
pub struct Pool {
    pub name: String,
    pub labels: Labels,
    /// Sorted and disjoint.
    pub ranges: Vec<IpRange>,
    pub auto_assign: bool,
    pub avoid_buggy_ips: bool,
    pub allocation: Option<PoolAllocation>,
}

impl Pool {
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.ranges.iter().any(|r| r.contains(ip))
    }

    /// Whether `ip` may be handed out: inside the pool and not skipped by avoidBuggyIPs.
    pub fn offers(&self, ip: IpAddr) -> bool {
        self.contains(ip) && !(self.avoid_buggy_ips && IpRange::is_buggy(ip))
    }

    /// Addresses of `family` that may be handed out, exactly.
    pub fn size(&self, family: Family) -> u128 {
        self.ranges
            .iter()
            .filter(|r| r.family() == family)
            .map(|r| {
                let len = r.len().unwrap_or(u128::MAX);
                if self.avoid_buggy_ips {
                    len - r.buggy_count()
                } else {
                    len
                }
            })
            .fold(0u128, u128::saturating_add)
    }

    pub fn has_family(&self, family: Family) -> bool {
        self.ranges.iter().any(|r| r.family() == family)
    }
}

/// Which Services a pool serves and its rank among pools.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PoolAllocation {
    /// Lower is tried first; `None` (unset or 0) sorts after every set priority.
    pub priority: Option<u32>,
    pub namespaces: BTreeSet<String>,
    pub namespace_selectors: SelectorSet,
    pub service_selectors: SelectorSet,
}

impl PoolAllocation {
    /// Whether a Service in `namespace` (whose labels are `namespace_labels`), with
    /// `service_labels`, may take addresses from the pool.
    pub fn allows(
        &self,
        namespace: &str,
        namespace_labels: &Labels,
        service_labels: &Labels,
    ) -> bool {
        let namespace_ok = if self.namespaces.is_empty() && self.namespace_selectors.is_empty() {
            true
        } else {
            self.namespaces.contains(namespace)
                || (!self.namespace_selectors.is_empty()
                    && self.namespace_selectors.matches(namespace_labels))
        };
        namespace_ok && self.service_selectors.matches(service_labels)
    }
}

/// A layer 2 advertisement.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct L2Advertisement {
    pub name: String,
    /// Resolved pool names.
    pub pools: BTreeSet<String>,
    pub node_selectors: SelectorSet,
    /// Empty: every eligible interface.
    pub interfaces: Vec<String>,
    pub service_selectors: SelectorSet,
    /// Soft node preferences: (weight, selector); a node's score is the sum of matching weights.
    pub preferred_nodes: Vec<(u32, Selector)>,
    /// `virtualMAC`: answer and announce from a MAC derived from the address.
    pub virtual_mac: bool,
}

impl L2Advertisement {
    /// The preference score of a node with `labels`: higher is preferred.
    pub fn node_preference(&self, labels: &Labels) -> u32 {
        self.preferred_nodes
            .iter()
            .filter(|(_, s)| s.matches(labels))
            .map(|(w, _)| *w)
            .sum()
    }
}

/// A BGP advertisement.
#[derive(Clone, Debug, PartialEq)]
pub struct BgpAdvertisement {
    pub name: String,
    pub aggregation_length: u8,
    pub aggregation_length_v6: u8,
    pub local_pref: Option<u32>,
    /// Aliases resolved.
    pub communities: BTreeSet<Community>,
    /// Resolved pool names.
    pub pools: BTreeSet<String>,
    pub node_selectors: SelectorSet,
    /// Peer names; empty means every peer.
    pub peers: BTreeSet<String>,
    pub service_selectors: SelectorSet,
    /// Attach the link bandwidth extended community in proportion to the node's serving
    /// endpoints (externalTrafficPolicy Local).
    pub weight_by_endpoints: bool,
}

/// The peer's AS as configured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerAsn {
    Fixed(u32),
    /// Whatever the peer says, as long as it equals ours.
    Internal,
    /// Whatever the peer says, as long as it differs from ours.
    External,
}

/// A TCP MD5 password; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(pub String);

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

/// Where a BGP peer is.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PeerAddress {
    Ip(IpAddr),
    /// BGP unnumbered: the router at the other end of this interface, reached at the IPv6
    /// link-local address its Router Advertisements come from.
    Interface(String),
}

impl PeerAddress {
    /// The address family a session to this peer runs over.
    pub fn is_ipv6(&self) -> bool {
        match self {
            PeerAddress::Ip(ip) => ip.is_ipv6(),
            PeerAddress::Interface(_) => true,
        }
    }
}

impl fmt::Display for PeerAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerAddress::Ip(ip) => write!(f, "{ip}"),
            PeerAddress::Interface(name) => write!(f, "interface {name}"),
        }
    }
}

/// A BGP peer.
#[derive(Clone, Debug, PartialEq)]
pub struct Peer {
    pub name: String,
    pub my_asn: u32,
    /// The AS presented to this peer when it differs from `my_asn`.
    pub local_asn: Option<u32>,
    pub peer_asn: PeerAsn,
    pub address: PeerAddress,
    pub source_address: Option<IpAddr>,
    pub port: u16,
    /// Zero: no hold timer and no keepalives.
    pub hold_time: Duration,
    pub keepalive_time: Duration,
    pub connect_time: Duration,
    pub router_id: Option<Ipv4Addr>,
    pub node_selectors: SelectorSet,
    pub password: Option<Password>,
    pub bfd_profile: Option<String>,
    pub graceful_restart: bool,
    pub ebgp_multihop: bool,
    pub vrf: Option<String>,
    /// The session carries both address families (MetalLB's `dualStackAddressFamily`); by
    /// default only the family of the peer's address, as MetalLB does.
    pub dual_stack: bool,
}

impl Peer {
    /// The AS number we present to this peer.
    pub fn local_as(&self) -> u32 {
        self.local_asn.unwrap_or(self.my_asn)
    }

    /// Whether the session is iBGP.
    pub fn is_internal(&self) -> bool {
        match self.peer_asn {
            PeerAsn::Fixed(asn) => asn == self.local_as(),
            PeerAsn::Internal => true,
            PeerAsn::External => false,
        }
    }
}

/// BFD timers and mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BfdProfile {
    pub name: String,
    pub receive_interval_ms: u32,
    pub transmit_interval_ms: u32,
    pub detect_multiplier: u32,
    pub echo_interval_ms: u32,
    pub echo_mode: bool,
    pub passive_mode: bool,
    pub minimum_ttl: u32,
}

/// Defaults, as MetalLB's, for fields left unset.
pub mod defaults {
    use std::time::Duration;

    pub const HOLD_TIME: Duration = Duration::from_secs(90);
    pub const CONNECT_TIME: Duration = Duration::from_secs(10);
    pub const PEER_PORT: u16 = 179;
    pub const BFD_INTERVAL_MS: u32 = 300;
    pub const BFD_MULTIPLIER: u32 = 3;
    pub const BFD_ECHO_INTERVAL_MS: u32 = 50;
    pub const BFD_MINIMUM_TTL: u32 = 254;
}
