//! What the planner needs of Nodes, Services and EndpointSlices.

use ferrolb_config::model::Labels;
use ferrolb_config::service::{service_request, status_ips};
use k8s_openapi::api::core::v1::{Node, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::ResourceExt;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// Nodes with this label (any value) never announce, as in Kubernetes' own service controller.
pub const EXCLUDE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";
/// The label an EndpointSlice carries naming its Service.
const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// A node as the planner sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeView {
    pub name: String,
    pub labels: Labels,
    /// The NetworkUnavailable condition is True.
    pub network_unavailable: bool,
    /// Carries [`EXCLUDE_LABEL`].
    pub excluded: bool,
    /// Cordoned (`spec.unschedulable`), as `kubectl drain` leaves it: a speaker stopping on such
    /// a node is being removed, not restarted.
    pub unschedulable: bool,
    /// The Ready condition is there and not True (the node controller gave up on the kubelet).
    pub not_ready: bool,
    /// Carries a NoSchedule or NoExecute taint that the speaker DaemonSet does not tolerate
    /// ([`SPEAKER_TOLERATES`]): no speaker runs there.
    pub untolerated_taint: bool,
}

/// Taint keys the speaker's Pods tolerate: the DaemonSet's own (deploy/speaker/daemonset.yaml)
/// and the ones the DaemonSet controller adds to every daemon Pod.
pub const SPEAKER_TOLERATES: &[&str] = &[
    "node-role.kubernetes.io/control-plane",
    "node-role.kubernetes.io/master",
    "node.kubernetes.io/not-ready",
    "node.kubernetes.io/unreachable",
    "node.kubernetes.io/disk-pressure",
    "node.kubernetes.io/memory-pressure",
    "node.kubernetes.io/pid-pressure",
    "node.kubernetes.io/unschedulable",
    "node.kubernetes.io/network-unavailable",
];

impl NodeView {
    pub fn of(node: &Node) -> Self {
        let network_unavailable = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| {
                c.iter()
                    .any(|c| c.type_ == "NetworkUnavailable" && c.status == "True")
            });
        let not_ready = node
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status != "True"));
        let untolerated_taint = node
            .spec
            .as_ref()
            .and_then(|s| s.taints.as_ref())
            .is_some_and(|taints| {
                taints.iter().any(|t| {
                    matches!(t.effect.as_str(), "NoSchedule" | "NoExecute")
                        && !SPEAKER_TOLERATES.contains(&t.key.as_str())
                })
            });
        Self {
            name: node.name_any(),
            labels: node.labels().clone(),
            network_unavailable,
            not_ready,
            untolerated_taint,
            excluded: node.labels().contains_key(EXCLUDE_LABEL),
            unschedulable: node
                .spec
                .as_ref()
                .and_then(|s| s.unschedulable)
                .unwrap_or(false),
        }
    }

    /// Whether the node may announce anything at all.
    pub fn eligible(&self) -> bool {
        !self.network_unavailable && !self.excluded
    }
}

/// Node names, sorted, each once. A Service's views name a few nodes each, ten thousand
/// Services at a time: a boxed slice takes a fifth of a BTreeSet's node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeSet(Box<[String]>);

impl NodeSet {
    pub fn contains(&self, node: &str) -> bool {
        self.0.binary_search_by(|n| n.as_str().cmp(node)).is_ok()
    }

    pub fn iter(&self) -> impl Iterator<Item = &String> {
        self.0.iter()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
}

impl FromIterator<String> for NodeSet {
    fn from_iter<I: IntoIterator<Item = String>>(iter: I) -> Self {
        let mut v: Vec<String> = iter.into_iter().collect();
        v.sort_unstable();
        v.dedup();
        NodeSet(v.into_boxed_slice())
    }
}

impl From<BTreeSet<String>> for NodeSet {
    fn from(set: BTreeSet<String>) -> Self {
        NodeSet(set.into_iter().collect())
    }
}

impl<const N: usize> From<[String; N]> for NodeSet {
    fn from(names: [String; N]) -> Self {
        names.into_iter().collect()
    }
}

/// A count per node name, sorted by name (as [`NodeSet`], compact).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeCounts(Box<[(String, u32)]>);

impl NodeCounts {
    pub fn get(&self, node: &str) -> Option<&u32> {
        self.0
            .binary_search_by(|(n, _)| n.as_str().cmp(node))
            .ok()
            .map(|i| &self.0[i].1)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&String, &u32)> {
        self.0.iter().map(|(n, c)| (n, c))
    }
}

impl FromIterator<(String, u32)> for NodeCounts {
    /// A name given twice keeps its last count (as a map would).
    fn from_iter<I: IntoIterator<Item = (String, u32)>>(iter: I) -> Self {
        let map: BTreeMap<String, u32> = iter.into_iter().collect();
        NodeCounts(map.into_iter().collect())
    }
}

impl<const N: usize> From<[(String, u32); N]> for NodeCounts {
    fn from(counts: [(String, u32); N]) -> Self {
        counts.into_iter().collect()
    }
}

/// Where a Service's endpoints serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Serving {
    /// No EndpointSlice is known for the Service (file mode): it counts as serving everywhere.
    Everywhere,
    /// Nodes with at least one serving endpoint (empty: nowhere).
    On(NodeSet),
}

impl Serving {
    pub fn anywhere(&self) -> bool {
        match self {
            Serving::Everywhere => true,
            Serving::On(nodes) => !nodes.is_empty(),
        }
    }

    pub fn on(&self, node: &str) -> bool {
        match self {
            Serving::Everywhere => true,
            Serving::On(nodes) => nodes.contains(node),
        }
    }
}

/// A LoadBalancer Service as the planner sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceView {
    /// `namespace/name`.
    pub key: String,
    pub labels: Labels,
    pub ips: Vec<IpAddr>,
    /// externalTrafficPolicy: Local.
    pub local_traffic: bool,
    pub serving: Serving,
    /// Nodes whose serving endpoints are all terminating (`serving` and `terminating`, as
    /// kube-proxy still sends to them while no other is left): they serve, about to stop.
    pub terminating_on: NodeSet,
    /// Serving endpoints per node that are not terminating (1 where only terminating ones are
    /// left), the larger count of the address families, so a dual-stack Pod counts once;
    /// empty when EndpointSlices are not known.
    pub endpoints_on: NodeCounts,
}

/// The Service's addresses: its status, or (for hosts with no controller yet, in file mode)
/// what it requests.
fn addresses(svc: &Service) -> Vec<IpAddr> {
    let from_status = status_ips(svc);
    if !from_status.is_empty() {
        return from_status;
    }
    service_request(svc)
        .map(|r| r.requested_ips)
        .unwrap_or_default()
}

/// The node's first InternalIP (IPv4 preferred), where its speaker's membership listens.
pub fn internal_ip(node: &Node) -> Option<IpAddr> {
    let ips: Vec<IpAddr> = node
        .status
        .as_ref()
        .and_then(|s| s.addresses.as_ref())
        .into_iter()
        .flatten()
        .filter(|a| a.type_ == "InternalIP")
        .filter_map(|a| a.address.parse().ok())
        .collect();
    ips.iter().find(|ip| ip.is_ipv4()).or(ips.first()).copied()
}

/// Whether an endpoint serves: `serving` true, or unset with `ready` unset or true.
fn endpoint_serves(
    conditions: Option<&k8s_openapi::api::discovery::v1::EndpointConditions>,
) -> bool {
    let Some(c) = conditions else { return true };
    match c.serving {
        Some(serving) => serving,
        None => c.ready.unwrap_or(true),
    }
}

/// Whether an endpoint that serves is on its way out.
fn endpoint_terminates(
    conditions: Option<&k8s_openapi::api::discovery::v1::EndpointConditions>,
) -> bool {
    conditions.and_then(|c| c.terminating).unwrap_or(false)
}

/// What a Service contributes to its view (everything but where it serves).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceFacts {
    /// `namespace/name`.
    pub key: String,
    pub labels: Labels,
    pub ips: Vec<IpAddr>,
    /// externalTrafficPolicy: Local.
    pub local_traffic: bool,
}

impl ServiceFacts {
    /// The facts of `svc`, announcing `ips`.
    pub fn of(svc: &Service, ips: Vec<IpAddr>) -> ServiceFacts {
        let ns = svc.namespace().unwrap_or_else(|| "default".into());
        ServiceFacts {
            key: format!("{ns}/{}", svc.name_any()),
            labels: svc.labels().clone(),
            ips,
            local_traffic: svc
                .spec
                .as_ref()
                .and_then(|s| s.external_traffic_policy.as_deref())
                == Some("Local"),
        }
    }
}

/// What an EndpointSlice contributes: its Service and its serving endpoints that name a node
/// (the only ones anything reads), a few bytes each instead of the whole object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SliceFacts {
    /// The Service's `namespace/name` (from the slice's service-name label).
    pub service: String,
    pub address_type: String,
    /// Serving endpoints: node name, and whether the endpoint is terminating.
    pub endpoints: Vec<(String, bool)>,
}

impl SliceFacts {
    /// `None` for a slice without the service-name label (not a Service's).
    pub fn of(slice: &EndpointSlice) -> Option<SliceFacts> {
        let name = slice.labels().get(SERVICE_NAME_LABEL)?;
        let ns = slice.namespace().unwrap_or_else(|| "default".into());
        Some(SliceFacts {
            service: format!("{ns}/{name}"),
            address_type: slice.address_type.clone(),
            endpoints: slice
                .endpoints
                .iter()
                .filter(|e| endpoint_serves(e.conditions.as_ref()))
                .filter_map(|e| {
                    let node = e.node_name.clone()?;
                    Some((node, endpoint_terminates(e.conditions.as_ref())))
                })
                .collect(),
        })
    }
}

/// The view of a Service from its facts and its EndpointSlices' (`slices_known` false: slices
/// are not watched at all, file mode without any, and a Service without any serves everywhere).
pub fn view_of(facts: &ServiceFacts, slices: &[&SliceFacts], slices_known: bool) -> ServiceView {
    let serving_endpoints = || slices.iter().flat_map(|s| s.endpoints.iter());
    let serving = if slices.is_empty() && !slices_known {
        Serving::Everywhere
    } else {
        Serving::On(serving_endpoints().map(|(n, _)| n.clone()).collect())
    };
    let staying: BTreeSet<&str> = serving_endpoints()
        .filter(|(_, terminating)| !terminating)
        .map(|(n, _)| n.as_str())
        .collect();
    let terminating_on = serving_endpoints()
        .filter(|(n, _)| !staying.contains(n.as_str()))
        .map(|(n, _)| n.clone())
        .collect();
    // Serving endpoints per node and family, those staying apart from those terminating: a
    // node's weight is its staying endpoints, or 1 while only terminating ones are left (they
    // still serve).
    let mut per_family: BTreeMap<(&str, &str), (u32, u32)> = BTreeMap::new();
    for slice in slices {
        for (node, terminating) in &slice.endpoints {
            let c = per_family
                .entry((slice.address_type.as_str(), node.as_str()))
                .or_default();
            if *terminating {
                c.1 += 1;
            } else {
                c.0 += 1;
            }
        }
    }
    let mut endpoints_on: BTreeMap<&str, u32> = BTreeMap::new();
    for ((_, node), (staying, leaving)) in per_family {
        let count = if staying > 0 { staying } else { leaving.min(1) };
        let c = endpoints_on.entry(node).or_default();
        *c = (*c).max(count);
    }
    ServiceView {
        key: facts.key.clone(),
        labels: facts.labels.clone(),
        ips: facts.ips.clone(),
        local_traffic: facts.local_traffic,
        serving,
        terminating_on,
        endpoints_on: endpoints_on
            .into_iter()
            .map(|(n, c)| (n.to_string(), c))
            .collect(),
    }
}

/// Views of `services` as a speaker in kube mode sees them: only the addresses in each
/// Service's status (what the controller granted), where each serves from `slices`.
pub fn cluster_service_views(services: &[Service], slices: &[EndpointSlice]) -> Vec<ServiceView> {
    views_with(services, slices, true, status_ips)
}

/// Views of `services`, with where each serves from `slices` (grouped by their service-name
/// label). `slices_known` false means EndpointSlices are not watched at all (file mode without
/// any): every Service then serves everywhere. A Service without an address in its status
/// announces the addresses it requests (file mode, offline: hosts with no controller).
pub fn service_views(
    services: &[Service],
    slices: &[EndpointSlice],
    slices_known: bool,
) -> Vec<ServiceView> {
    views_with(services, slices, slices_known, addresses)
}

fn views_with(
    services: &[Service],
    slices: &[EndpointSlice],
    slices_known: bool,
    addresses: fn(&Service) -> Vec<IpAddr>,
) -> Vec<ServiceView> {
    let facts: Vec<SliceFacts> = slices.iter().filter_map(SliceFacts::of).collect();
    let mut by_service: BTreeMap<&str, Vec<&SliceFacts>> = BTreeMap::new();
    for f in &facts {
        by_service.entry(f.service.as_str()).or_default().push(f);
    }
    services
        .iter()
        .map(|svc| {
            let facts = ServiceFacts::of(svc, addresses(svc));
            let slices = by_service
                .get(facts.key.as_str())
                .map_or(&[][..], Vec::as_slice);
            view_of(&facts, slices, slices_known)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminating_endpoints_are_told_apart_per_node() {
        let svc: Service = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web", "namespace": "default"},
            "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local"}
        }))
        .unwrap();
        let ep = |node: &str, serving: bool, terminating: bool| {
            serde_json::json!({"addresses": ["198.51.100.1"], "nodeName": node,
                "conditions": {"serving": serving, "terminating": terminating}})
        };
        let slice: EndpointSlice = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "web-1", "namespace": "default",
                "labels": {"kubernetes.io/service-name": "web"}},
            "addressType": "IPv4",
            "endpoints": [
                ep("n1", true, false),
                ep("n2", true, true),
                ep("n3", true, true), ep("n3", true, false),
                ep("n4", false, true),
            ]
        }))
        .unwrap();
        let v = &service_views(&[svc], &[slice], true)[0];
        assert!(v.local_traffic);
        assert_eq!(
            v.serving,
            Serving::On(["n1", "n2", "n3"].map(String::from).into())
        );
        assert_eq!(
            v.terminating_on,
            ["n2".to_string()].into(),
            "n3 still has an endpoint that stays; n4's does not serve"
        );
    }
}
