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

/// Where a Service's endpoints serve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Serving {
    /// No EndpointSlice is known for the Service (file mode): it counts as serving everywhere.
    Everywhere,
    /// Nodes with at least one serving endpoint (empty: nowhere).
    On(BTreeSet<String>),
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
    pub terminating_on: BTreeSet<String>,
    /// Serving endpoints per node that are not terminating (1 where only terminating ones are
    /// left), the larger count of the address families, so a dual-stack Pod counts once;
    /// empty when EndpointSlices are not known.
    pub endpoints_on: BTreeMap<String, u32>,
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

/// Views of `services`, with where each serves from `slices` (grouped by their service-name
/// label). `slices_known` false means EndpointSlices are not watched at all (file mode without
/// any): every Service then serves everywhere.
pub fn service_views(
    services: &[Service],
    slices: &[EndpointSlice],
    slices_known: bool,
) -> Vec<ServiceView> {
    let mut by_service: BTreeMap<(String, String), Vec<&EndpointSlice>> = BTreeMap::new();
    for slice in slices {
        if let Some(name) = slice.labels().get(SERVICE_NAME_LABEL) {
            let ns = slice.namespace().unwrap_or_else(|| "default".into());
            by_service
                .entry((ns, name.clone()))
                .or_default()
                .push(slice);
        }
    }
    services
        .iter()
        .map(|svc| {
            let ns = svc.namespace().unwrap_or_else(|| "default".into());
            let name = svc.name_any();
            let slices = by_service.get(&(ns.clone(), name.clone()));
            let serving_endpoints = || {
                slices
                    .into_iter()
                    .flatten()
                    .flat_map(|s| s.endpoints.iter())
                    .filter(|e| endpoint_serves(e.conditions.as_ref()))
            };
            let serving = match slices {
                None if !slices_known => Serving::Everywhere,
                None => Serving::On(BTreeSet::new()),
                Some(_) => Serving::On(
                    serving_endpoints()
                        .filter_map(|e| e.node_name.clone())
                        .collect(),
                ),
            };
            let staying: BTreeSet<String> = serving_endpoints()
                .filter(|e| !endpoint_terminates(e.conditions.as_ref()))
                .filter_map(|e| e.node_name.clone())
                .collect();
            let terminating_on = serving_endpoints()
                .filter_map(|e| e.node_name.clone())
                .filter(|n| !staying.contains(n))
                .collect();
            // Serving endpoints per node and family, those staying apart from those
            // terminating: a node's weight is its staying endpoints, or 1 while only
            // terminating ones are left (they still serve).
            let mut per_family: BTreeMap<(&str, String), (u32, u32)> = BTreeMap::new();
            for slice in slices.into_iter().flatten() {
                for e in slice.endpoints.iter() {
                    if !endpoint_serves(e.conditions.as_ref()) {
                        continue;
                    }
                    if let Some(node) = &e.node_name {
                        let c = per_family
                            .entry((slice.address_type.as_str(), node.clone()))
                            .or_default();
                        if endpoint_terminates(e.conditions.as_ref()) {
                            c.1 += 1;
                        } else {
                            c.0 += 1;
                        }
                    }
                }
            }
            let mut endpoints_on: BTreeMap<String, u32> = BTreeMap::new();
            for ((_, node), (staying, leaving)) in per_family {
                let count = if staying > 0 { staying } else { leaving.min(1) };
                let c = endpoints_on.entry(node).or_default();
                *c = (*c).max(count);
            }
            let spec = svc.spec.as_ref();
            ServiceView {
                key: format!("{ns}/{name}"),
                labels: svc.labels().clone(),
                ips: addresses(svc),
                local_traffic: spec.and_then(|s| s.external_traffic_policy.as_deref())
                    == Some("Local"),
                serving,
                terminating_on,
                endpoints_on,
            }
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
