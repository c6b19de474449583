//! Where the speaker's view of the cluster comes from: [`mod@file`] (`file:DIR`, a directory
//! of manifests) or [`mod@kube`] (the API server, through kube-runtime reflectors). Both produce the
//! same stream of [`Snapshot`]s, each a valid configuration with the objects it applies to;
//! an invalid configuration publishes nothing, so the last valid one stays in force.

pub mod file;
pub mod kube;

pub use self::kube::{ClusterInfo, ConfigReport, KubeFeeds, KubeSource};
pub use file::{load_dir, FileSource};

use crate::view::{internal_ip, service_views, NodeView, ServiceView};
use ::kube::ResourceExt;
use ferrolb_config::{Config, Resources};
use k8s_openapi::api::core::v1::{Node, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use std::collections::BTreeMap;
use std::net::IpAddr;

/// Everything the planner needs besides the live set and the node's name.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    pub config: Config,
    pub nodes: Vec<NodeView>,
    pub services: Vec<ServiceView>,
    /// Each Node's InternalIP: where its speaker's membership listens.
    pub node_ips: BTreeMap<String, IpAddr>,
    /// Secrets in the source (the membership key among them).
    pub secrets: Vec<Secret>,
}

/// Services this speaker serves: LoadBalancers of its class (none set: those without a class).
pub fn is_served(svc: &Service, lb_class: Option<&str>) -> bool {
    svc.spec.as_ref().is_some_and(|s| {
        s.type_.as_deref() == Some("LoadBalancer") && s.load_balancer_class.as_deref() == lb_class
    })
}

/// Each Node's InternalIP, by name.
pub fn node_ips(nodes: &[Node]) -> BTreeMap<String, IpAddr> {
    nodes
        .iter()
        .filter_map(|n| Some((n.name_any(), internal_ip(n)?)))
        .collect()
}

/// Builds a snapshot from the objects of either source. `services` are the served ones;
/// `slices_known` says whether EndpointSlices are authoritative (kube mode) or optional (file
/// mode: a Service without any serves everywhere). `earlier` are problems found before (e.g.
/// unreadable files): with any, or with an invalid configuration, `Err` lists them all.
pub fn assemble(
    resources: &Resources,
    services: &[Service],
    slices: &[EndpointSlice],
    slices_known: bool,
    nodes: &[Node],
    earlier: Vec<String>,
) -> Result<Snapshot, Vec<String>> {
    let config = match ferrolb_config::build(resources) {
        Ok(c) if earlier.is_empty() => c,
        Ok(_) => return Err(earlier),
        Err(more) => {
            let mut all = earlier;
            all.extend(more.iter().map(ToString::to_string));
            return Err(all);
        }
    };
    Ok(with_config(
        config,
        services,
        slices,
        slices_known,
        nodes,
        &resources.secrets,
    ))
}

/// A snapshot of the objects under an already valid configuration (kube mode keeps the last
/// valid one in force while the current one is invalid, and still follows Services,
/// EndpointSlices and Nodes).
pub fn with_config(
    config: Config,
    services: &[Service],
    slices: &[EndpointSlice],
    slices_known: bool,
    nodes: &[Node],
    secrets: &[Secret],
) -> Snapshot {
    Snapshot {
        config,
        nodes: nodes.iter().map(NodeView::of).collect(),
        services: service_views(services, slices, slices_known),
        node_ips: node_ips(nodes),
        secrets: secrets.to_vec(),
    }
}
