//! Where the speaker's view of the cluster comes from: [`mod@file`] (`file:DIR`, a directory
//! of manifests) or [`mod@kube`] (the API server, through kube-runtime reflectors). Both produce the
//! same stream of [`Snapshot`]s, each the configuration in force with the objects it applies to:
//! an invalid object is left out (or its last valid version kept) and reported, the rest works.

pub mod file;
pub mod index;
pub mod kube;

pub use self::kube::{ClusterInfo, ConfigReport, KubeFeeds, KubeSource};
pub use file::{load_dir, FileSource};

use crate::view::{internal_ip, NodeView, ServiceView};
use ::kube::ResourceExt;
use ferrolb_config::{Config, Resources};
use k8s_openapi::api::core::v1::{Node, Secret, Service};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

/// Everything the planner needs besides the live set and the node's name.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    pub config: Config,
    pub nodes: Vec<NodeView>,
    /// In key order; shared with earlier snapshots where unchanged.
    pub services: Vec<Arc<ServiceView>>,
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

/// A snapshot and how the configuration in it came about.
#[derive(Clone, Debug)]
pub struct Assembled {
    pub snapshot: Snapshot,
    /// The objects the snapshot's configuration was built from: `last` for the next call.
    pub in_force: Resources,
    /// Every problem and what became of each object that has one (empty: all valid).
    pub problems: Vec<String>,
}

/// Builds a snapshot from the objects of either source: `services`, the served ones' views.
/// The configuration is what is in force: every valid object, the `last` valid version of one
/// that turned invalid (or is `unreadable`), the rest left out and reported
/// ([`ferrolb_config::in_force`]).
pub fn assemble(
    resources: &Resources,
    last: &Resources,
    unreadable: &BTreeSet<String>,
    services: Vec<Arc<ServiceView>>,
    nodes: &[Node],
) -> Assembled {
    let outcome = ferrolb_config::in_force(resources, last, unreadable);
    let problems = outcome.report_lines();
    Assembled {
        snapshot: Snapshot {
            config: outcome.config,
            nodes: nodes.iter().map(NodeView::of).collect(),
            services,
            node_ips: node_ips(nodes),
            secrets: resources.secrets.clone(),
        },
        in_force: outcome.resources,
        problems,
    }
}

/// `views` in key order, each shared.
pub fn shared(mut views: Vec<ServiceView>) -> Vec<Arc<ServiceView>> {
    views.sort_by(|a, b| a.key.cmp(&b.key));
    views.into_iter().map(Arc::new).collect()
}
