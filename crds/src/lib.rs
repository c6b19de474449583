//! The FerroLB API: group `ferrolb.io`, version `v1beta1`.
//!
//! Every kind has the same shape as its MetalLB counterpart (metallb.io v1beta1, and v1beta2 for
//! BGPPeer), so a MetalLB manifest ports by changing its `apiVersion`. The types here only
//! describe the API and the cheap single-object rules the API server can check at `kubectl apply`
//! time (enums, ranges, patterns, CEL rules local to one object). Everything that needs more than
//! one object, or a parse the schema cannot express, lives in `ferrolb-config`.
//!
//! Durations (`holdTime`, ...) and addresses are kept as strings here on purpose: a bad value must
//! reach `ferrolb-config`, which names the object and field, instead of failing the whole object's
//! deserialisation in a watch stream.

// The derive takes one `printcolumn(...)` per column; clippy reads the repeats as duplicates.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::api::core::v1::SecretReference;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

mod count;
pub use count::AddressCount;

pub mod annotations;
pub mod limits;

/// The API group of every FerroLB kind.
pub const GROUP: &str = "ferrolb.io";
/// The API version of every FerroLB kind.
pub const VERSION: &str = "v1beta1";
/// `apiVersion` as written in manifests.
pub const API_VERSION: &str = "ferrolb.io/v1beta1";

/// The kinds that make up the configuration (the others are written by the components).
pub const CONFIG_KINDS: [&str; 6] = [
    "IPAddressPool",
    "L2Advertisement",
    "BGPAdvertisement",
    "BGPPeer",
    "BFDProfile",
    "Community",
];

fn default_true() -> bool {
    true
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// A set of addresses FerroLB may hand out to LoadBalancer Services.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "ferrolb.io",
    version = "v1beta1",
    kind = "IPAddressPool",
    plural = "ipaddresspools",
    namespaced,
    status = "IPAddressPoolStatus",
    shortname = "ipp",
    category = "ferrolb",
    doc = "A pool of addresses FerroLB hands out to LoadBalancer Services.",
    printcolumn(
        name = "Auto Assign",
        type_ = "boolean",
        json_path = ".spec.autoAssign"
    ),
    printcolumn(
        name = "Avoid Buggy IPs",
        type_ = "boolean",
        json_path = ".spec.avoidBuggyIPs",
        priority = 1
    ),
    printcolumn(name = "Addresses", type_ = "string", json_path = ".spec.addresses"),
    printcolumn(
        name = "Assigned IPv4",
        type_ = "string",
        json_path = ".status.assignedIPv4"
    ),
    printcolumn(
        name = "Available IPv4",
        type_ = "string",
        json_path = ".status.availableIPv4"
    ),
    printcolumn(
        name = "Assigned IPv6",
        type_ = "string",
        json_path = ".status.assignedIPv6"
    ),
    printcolumn(
        name = "Available IPv6",
        type_ = "string",
        json_path = ".status.availableIPv6"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct IPAddressPoolSpec {
    /// Address ranges: CIDRs (`192.0.2.0/24`, `2001:db8::/64`), `start-end` ranges, or single
    /// addresses. IPv4 and IPv6 may be mixed in one pool.
    #[schemars(length(min = 1))]
    pub addresses: Vec<String>,
    /// Whether addresses are handed out to Services that did not ask for this pool.
    #[serde(default = "default_true")]
    pub auto_assign: bool,
    /// Skip IPv4 addresses ending in .0 and .255, which some old client stacks drop.
    #[serde(default, rename = "avoidBuggyIPs", skip_serializing_if = "is_false")]
    pub avoid_buggy_ips: bool,
    /// Restricts the pool to some Services and sets its priority among pools.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_allocation: Option<ServiceAllocation>,
}

/// Which Services a pool serves, and in what order pools are tried.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceAllocation {
    /// Lower numbers are tried first; 0 or unset sorts after every set priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub priority: Option<i32>,
    /// Namespaces whose Services may use the pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespaces: Vec<String>,
    /// Namespaces, by label, whose Services may use the pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub namespace_selectors: Vec<LabelSelector>,
    /// Services, by label, that may use the pool.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_selectors: Vec<LabelSelector>,
}

/// Address usage of a pool, written by the controller. Counts are exact: a value too large for a
/// 64-bit integer (an IPv6 /64 holds 2^64 addresses) is written as a decimal string.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct IPAddressPoolStatus {
    #[serde(rename = "assignedIPv4", default)]
    pub assigned_ipv4: AddressCount,
    #[serde(rename = "assignedIPv6", default)]
    pub assigned_ipv6: AddressCount,
    #[serde(rename = "availableIPv4", default)]
    pub available_ipv4: AddressCount,
    #[serde(rename = "availableIPv6", default)]
    pub available_ipv6: AddressCount,
}

/// Announces Services' addresses from one node of the segment by ARP / IPv6 NDP.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "ferrolb.io",
    version = "v1beta1",
    kind = "L2Advertisement",
    plural = "l2advertisements",
    namespaced,
    shortname = "l2adv",
    category = "ferrolb",
    doc = "Announces the addresses of the selected pools in layer 2 mode (ARP / NDP).",
    printcolumn(
        name = "IPAddressPools",
        type_ = "string",
        json_path = ".spec.ipAddressPools"
    ),
    printcolumn(
        name = "IPAddressPool Selectors",
        type_ = "string",
        json_path = ".spec.ipAddressPoolSelectors"
    ),
    printcolumn(name = "Interfaces", type_ = "string", json_path = ".spec.interfaces"),
    printcolumn(
        name = "Node Selectors",
        type_ = "string",
        json_path = ".spec.nodeSelectors",
        priority = 10
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct L2AdvertisementSpec {
    /// Pools, by name, whose addresses are announced. With no pools and no pool selectors, all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_address_pools: Vec<String>,
    /// Pools, by label, whose addresses are announced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_address_pool_selectors: Vec<LabelSelector>,
    /// Nodes that may announce; empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_selectors: Vec<LabelSelector>,
    /// Interfaces to announce on; empty means every eligible interface.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<String>,
    /// Services, by label, that this advertisement applies to; empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_selectors: Vec<LabelSelector>,
    /// Soft preferences for the announcing node: matching nodes rank higher, weights of every
    /// matching term summed. When no preferred node is available any eligible node announces.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub preferred_node_selectors: Vec<PreferredNodeSelector>,
    /// FerroLB's, not MetalLB's: the announcing node answers ARP and Neighbor Solicitations
    /// for the address with a MAC derived from the address (locally administered, the same
    /// on every node) and receives its traffic on a macvlan device with that MAC, so on
    /// failover clients keep their neighbour entries and only the switches learn a new port.
    /// Default false.
    #[serde(
        default,
        rename = "virtualMAC",
        skip_serializing_if = "Option::is_none"
    )]
    pub virtual_mac: Option<bool>,
}

/// A weighted soft preference for nodes, as Kubernetes' PreferredSchedulingTerm.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct PreferredNodeSelector {
    /// 1 to 100; higher ranks matching nodes higher.
    #[schemars(range(min = 1, max = 100))]
    pub weight: i32,
    /// The nodes this preference applies to.
    pub preference: LabelSelector,
}

/// Announces Services' addresses as BGP routes to the selected peers.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "ferrolb.io",
    version = "v1beta1",
    kind = "BGPAdvertisement",
    plural = "bgpadvertisements",
    namespaced,
    shortname = "bgpadv",
    category = "ferrolb",
    doc = "Announces the addresses of the selected pools as BGP routes.",
    printcolumn(
        name = "IPAddressPools",
        type_ = "string",
        json_path = ".spec.ipAddressPools"
    ),
    printcolumn(
        name = "IPAddressPool Selectors",
        type_ = "string",
        json_path = ".spec.ipAddressPoolSelectors"
    ),
    printcolumn(name = "Peers", type_ = "string", json_path = ".spec.peers"),
    printcolumn(
        name = "Node Selectors",
        type_ = "string",
        json_path = ".spec.nodeSelectors",
        priority = 10
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct BGPAdvertisementSpec {
    /// Prefix length of the IPv4 routes announced (default 32: one route per address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 32))]
    pub aggregation_length: Option<i32>,
    /// Prefix length of the IPv6 routes announced (default 128).
    #[serde(
        default,
        rename = "aggregationLengthV6",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(range(min = 0, max = 128))]
    pub aggregation_length_v6: Option<i32>,
    /// LOCAL_PREF sent to iBGP peers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_pref: Option<u32>,
    /// Communities attached to the routes: `a:b` (16-bit halves), `large:a:b:c` (32-bit parts),
    /// or the name of an alias defined in a Community object.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub communities: Vec<String>,
    /// Pools, by name, whose addresses are announced. With no pools and no pool selectors, all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_address_pools: Vec<String>,
    /// Pools, by label, whose addresses are announced.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_address_pool_selectors: Vec<LabelSelector>,
    /// Nodes that announce; empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_selectors: Vec<LabelSelector>,
    /// BGPPeer names to announce to; empty means all peers.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,
    /// Services, by label, that this advertisement applies to; empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub service_selectors: Vec<LabelSelector>,
    /// FerroLB's, not MetalLB's: for Services with externalTrafficPolicy Local, each node
    /// attaches the link bandwidth extended community (RFC 10005) in proportion to its serving
    /// endpoints of the Service, so routers that weigh their ECMP by it (FRR, Cumulus) send each
    /// node its endpoints' share of the traffic. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight_by_endpoints: Option<bool>,
}

/// How the peer's AS number is learned when `peerASN` is not given.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DynamicAsn {
    /// The peer is in our AS (iBGP).
    Internal,
    /// The peer is in any other AS (eBGP).
    External,
}

/// A BGP router that speakers on the selected nodes peer with.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[kube(
    group = "ferrolb.io",
    version = "v1beta1",
    kind = "BGPPeer",
    plural = "bgppeers",
    namespaced,
    shortname = "bgpp",
    category = "ferrolb",
    doc = "A BGP router that the speakers on the selected nodes peer with.",
    printcolumn(name = "Address", type_ = "string", json_path = ".spec.peerAddress"),
    printcolumn(name = "ASN", type_ = "integer", json_path = ".spec.myASN"),
    printcolumn(name = "Peer ASN", type_ = "string", json_path = ".spec.peerASN"),
    printcolumn(
        name = "Dynamic ASN",
        type_ = "string",
        json_path = ".spec.dynamicASN",
        priority = 1
    ),
    printcolumn(name = "BFD Profile", type_ = "string", json_path = ".spec.bfdProfile"),
    printcolumn(
        name = "Multi Hops",
        type_ = "boolean",
        json_path = ".spec.ebgpMultiHop"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(
    validation = Rule::new("!(has(self.peerASN) && has(self.dynamicASN))").message("peerASN and dynamicASN are mutually exclusive"),
    validation = Rule::new("has(self.peerASN) || has(self.dynamicASN)").message("one of peerASN or dynamicASN must be set"),
    validation = Rule::new("!(has(self.password) && has(self.passwordSecret) && has(self.passwordSecret.name) && self.passwordSecret.name != '')").message("password and passwordSecret are mutually exclusive")
)]
#[serde(rename_all = "camelCase")]
pub struct BGPPeerSpec {
    /// Our AS number.
    #[serde(rename = "myASN")]
    pub my_asn: u32,
    /// The peer's AS number. Exactly one of peerASN and dynamicASN must be set.
    #[serde(default, rename = "peerASN", skip_serializing_if = "Option::is_none")]
    pub peer_asn: Option<u32>,
    /// The AS number presented to this peer instead of myASN (FRR's `local-as`).
    #[serde(default, rename = "localASN", skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub local_asn: Option<u32>,
    /// Accept whatever AS the peer announces, as long as it is internal or external as given.
    #[serde(
        default,
        rename = "dynamicASN",
        skip_serializing_if = "Option::is_none"
    )]
    pub dynamic_asn: Option<DynamicAsn>,
    /// The peer's address.
    #[serde(default)]
    pub peer_address: String,
    /// Unnumbered BGP: the node interface whose router to peer with, over IPv6 link-local
    /// addresses (the router is found by its Router Advertisements). Exclusive with
    /// peerAddress; no ebgpMultiHop or sourceAddress with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
    /// Our source address for the session; by default the kernel's choice.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_address: Option<String>,
    /// The peer's TCP port (default 179).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub peer_port: Option<i32>,
    /// Proposed hold time, a duration such as `90s` (0 or at least 3 s; default 90 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hold_time: Option<String>,
    /// Keepalive interval, at most the hold time (default hold time / 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive_time: Option<String>,
    /// How long to wait between connection attempts (default 10 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect_time: Option<String>,
    /// BGP identifier to use; by default the node's IPv4 address.
    #[serde(default, rename = "routerID", skip_serializing_if = "Option::is_none")]
    pub router_id: Option<String>,
    /// Nodes whose speakers peer with this router; empty means all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub node_selectors: Vec<LabelSelector>,
    /// TCP MD5 password, in clear. Prefer passwordSecret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password: Option<String>,
    /// A Secret of type kubernetes.io/basic-auth whose key `password` holds the TCP MD5 password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret: Option<SecretReference>,
    /// Name of a BFDProfile; the session then runs BFD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bfd_profile: Option<String>,
    /// Announce graceful restart so routers keep our routes while a speaker restarts.
    #[serde(default, skip_serializing_if = "is_false")]
    pub enable_graceful_restart: bool,
    /// The eBGP peer is more than one hop away.
    #[serde(default, skip_serializing_if = "is_false")]
    pub ebgp_multi_hop: bool,
    /// The node's Linux VRF device the session runs in (empty: the default VRF).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vrf: Option<String>,
    /// Deprecated in MetalLB and without effect there: a session carries only its own address
    /// family unless dualStackAddressFamily is set. The same here.
    #[serde(default, rename = "disableMP", skip_serializing_if = "is_false")]
    pub disable_mp: bool,
    /// The session carries both IPv4 and IPv6 routes (IPv4 over an IPv6 session with RFC 8950
    /// where the router negotiates it); by default only its own family, as in MetalLB.
    #[serde(default, skip_serializing_if = "is_false")]
    pub dual_stack_address_family: bool,
}

/// Timers and mode of the BFD sessions of the BGPPeers that name this profile.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "ferrolb.io",
    version = "v1beta1",
    kind = "BFDProfile",
    plural = "bfdprofiles",
    namespaced,
    shortname = "bfdp",
    category = "ferrolb",
    doc = "Timers and mode of BFD sessions.",
    printcolumn(
        name = "Passive Mode",
        type_ = "boolean",
        json_path = ".spec.passiveMode"
    ),
    printcolumn(
        name = "Transmit Interval",
        type_ = "integer",
        json_path = ".spec.transmitInterval"
    ),
    printcolumn(
        name = "Receive Interval",
        type_ = "integer",
        json_path = ".spec.receiveInterval"
    ),
    printcolumn(
        name = "Multiplier",
        type_ = "integer",
        json_path = ".spec.detectMultiplier"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct BFDProfileSpec {
    /// Minimum interval, in milliseconds, at which we want to receive control packets (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 60000))]
    pub receive_interval: Option<u32>,
    /// Minimum interval, in milliseconds, at which we send control packets (default 300).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 60000))]
    pub transmit_interval: Option<u32>,
    /// Packets that may be missed before the session is declared down (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 2, max = 255))]
    pub detect_multiplier: Option<u32>,
    /// Echo packet interval in milliseconds (default 50).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 10, max = 60000))]
    pub echo_interval: Option<u32>,
    /// Use echo mode (IPv4 single-hop sessions in the default VRF; echo packets every
    /// echoInterval through the peer and back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub echo_mode: Option<bool>,
    /// Wait for the peer to start the session instead of sending first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passive_mode: Option<bool>,
    /// Minimum incoming TTL for multihop sessions (default 254).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 254))]
    pub minimum_ttl: Option<u32>,
}

/// Named BGP communities that BGPAdvertisements can refer to.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "ferrolb.io",
    version = "v1beta1",
    kind = "Community",
    plural = "communities",
    namespaced,
    shortname = "bgpcomm",
    category = "ferrolb",
    doc = "Named BGP communities for use in BGPAdvertisements.",
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct CommunitySpec {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub communities: Vec<CommunityAlias>,
}

/// One named community.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct CommunityAlias {
    /// The alias used in BGPAdvertisement.spec.communities.
    #[schemars(length(min = 1))]
    pub name: String,
    /// `a:b` or `large:a:b:c`.
    pub value: String,
}

/// Which node announces a Service in layer 2 mode, written by the speakers.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "ferrolb.io",
    version = "v1beta1",
    kind = "ServiceL2Status",
    plural = "servicel2statuses",
    namespaced,
    status = "ServiceL2StatusStatus",
    shortname = "svcl2",
    category = "ferrolb",
    doc = "The node that announces a Service in layer 2 mode.",
    printcolumn(name = "Allocated Node", type_ = "string", json_path = ".status.node"),
    printcolumn(
        name = "Service Name",
        type_ = "string",
        json_path = ".status.serviceName"
    ),
    printcolumn(
        name = "Service Namespace",
        type_ = "string",
        json_path = ".status.serviceNamespace"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
pub struct ServiceL2StatusSpec {}

/// Observed layer 2 announcement of a Service.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceL2StatusStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<InterfaceInfo>,
}

/// A network interface a Service is announced on.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct InterfaceInfo {
    pub name: String,
}

/// Which peers a node announces a Service to, written by the speakers.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "ferrolb.io",
    version = "v1beta1",
    kind = "ServiceBGPStatus",
    plural = "servicebgpstatuses",
    namespaced,
    status = "ServiceBGPStatusStatus",
    shortname = "svcbgp",
    category = "ferrolb",
    doc = "The peers a node announces a Service to.",
    printcolumn(name = "Node", type_ = "string", json_path = ".status.node"),
    printcolumn(
        name = "Service Name",
        type_ = "string",
        json_path = ".status.serviceName"
    ),
    printcolumn(
        name = "Service Namespace",
        type_ = "string",
        json_path = ".status.serviceNamespace"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
pub struct ServiceBGPStatusSpec {}

/// Observed BGP announcement of a Service by one node.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ServiceBGPStatusStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,
}

/// Whether a component (the controller, or the speaker of one node) accepted the configuration.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "ferrolb.io",
    version = "v1beta1",
    kind = "ConfigurationState",
    plural = "configurationstates",
    namespaced,
    status = "ConfigurationStateStatus",
    shortname = "cfgstate",
    category = "ferrolb",
    doc = "Whether a FerroLB component accepted the current configuration.",
    printcolumn(name = "Result", type_ = "string", json_path = ".status.result"),
    printcolumn(name = "Errors", type_ = "string", json_path = ".status.errorSummary"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
pub struct ConfigurationStateSpec {}

/// The outcome of loading the configuration.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ConfigurationResult {
    Valid,
    Invalid,
    Unknown,
}

/// Observed configuration state of one component.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConfigurationStateStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<ConfigurationResult>,
    /// Every problem found, one per line, as `Kind/name: field: message`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_summary: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Kinds whose spec may be left out, as in MetalLB (`kind: L2Advertisement` with no spec
/// announces every pool). Their CRD defaults `spec` to `{}`, so the API server always returns one.
pub const KINDS_WITH_OPTIONAL_SPEC: [&str; 7] = [
    "L2Advertisement",
    "BGPAdvertisement",
    "BFDProfile",
    "Community",
    "ServiceL2Status",
    "ServiceBGPStatus",
    "ConfigurationState",
];

type Crd =
    k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

/// Makes `spec` optional with a `{}` default in the CRD of a kind whose spec fields are all
/// optional; the derive marks it required.
fn default_empty_spec(mut crd: Crd) -> Crd {
    if !KINDS_WITH_OPTIONAL_SPEC.contains(&crd.spec.names.kind.as_str()) {
        return crd;
    }
    for version in &mut crd.spec.versions {
        let Some(schema) = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
        else {
            continue;
        };
        if let Some(required) = schema.required.as_mut() {
            required.retain(|field| field != "spec");
            if required.is_empty() {
                schema.required = None;
            }
        }
        if let Some(spec) = schema.properties.as_mut().and_then(|p| p.get_mut("spec")) {
            spec.default = Some(
                k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSON(
                    serde_json::json!({}),
                ),
            );
        }
    }
    crd
}

/// Every FerroLB CustomResourceDefinition, in a stable order.
pub fn all_crds() -> Vec<Crd> {
    [
        IPAddressPool::crd(),
        L2Advertisement::crd(),
        BGPAdvertisement::crd(),
        BGPPeer::crd(),
        BFDProfile::crd(),
        Community::crd(),
        ServiceL2Status::crd(),
        ServiceBGPStatus::crd(),
        ConfigurationState::crd(),
    ]
    .into_iter()
    .map(default_empty_spec)
    .map(pool_address_pattern)
    .collect()
}

/// Puts [`limits::POOL_ADDRESS_PATTERN`] on every IPAddressPool address entry.
fn pool_address_pattern(mut crd: Crd) -> Crd {
    if crd.spec.names.kind != "IPAddressPool" {
        return crd;
    }
    for version in &mut crd.spec.versions {
        let items = version
            .schema
            .as_mut()
            .and_then(|s| s.open_api_v3_schema.as_mut())
            .and_then(|s| s.properties.as_mut())
            .and_then(|p| p.get_mut("spec"))
            .and_then(|s| s.properties.as_mut())
            .and_then(|p| p.get_mut("addresses"))
            .and_then(|a| a.items.as_mut());
        if let Some(
            k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::JSONSchemaPropsOrArray::Schema(item),
        ) = items
        {
            item.pattern = Some(limits::POOL_ADDRESS_PATTERN.to_string());
        }
    }
    crd
}

/// Stand-ins for MetalLB's CRDs of the configuration kinds, for tests against an API server
/// without MetalLB (the emulator): FerroLB's schemas under `metallb.io`, v1beta1, and v1beta2
/// for BGPPeer (MetalLB's storage version). On a cluster that ran MetalLB its own CRDs are there.
pub fn metallb_stand_in_crds() -> Vec<Crd> {
    all_crds()
        .into_iter()
        .filter(|c| CONFIG_KINDS.contains(&c.spec.names.kind.as_str()))
        .map(|mut crd| {
            crd.spec.group = "metallb.io".into();
            crd.metadata.name = Some(format!("{}.metallb.io", crd.spec.names.plural));
            crd.spec.names.categories = None;
            crd.spec.names.short_names = None;
            if crd.spec.names.kind == "BGPPeer" {
                for version in &mut crd.spec.versions {
                    version.name = "v1beta2".into();
                }
            }
            crd
        })
        .collect()
}

/// [`metallb_stand_in_crds`] as one multi-document YAML stream.
pub fn metallb_stand_in_crds_yaml() -> String {
    let mut out = String::new();
    for crd in metallb_stand_in_crds() {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd).expect("CRD serialises to YAML"));
    }
    out
}

/// All CRDs as one multi-document YAML stream: what `crdgen` prints and `deploy/crds/` holds.
pub fn all_crds_yaml() -> String {
    let mut out = String::new();
    for crd in all_crds() {
        out.push_str("---\n");
        // Serialising a CRD built by the derive cannot fail: it is plain data.
        out.push_str(&serde_yaml::to_string(&crd).expect("CRD serialises to YAML"));
    }
    out
}
