//! What the allocator needs to know of a Service, read from the Kubernetes object.

use ferrolb_config::addresses::Family;
use ferrolb_config::model::Labels;
use ferrolb_config::service::{service_request, status_ips, ServiceRequest};
use ferrolb_config::ConfigError;
use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;
use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;

/// A Service's identity: namespace and name, ordered.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServiceKey {
    pub namespace: String,
    pub name: String,
}

impl ServiceKey {
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    pub fn of(svc: &Service) -> Self {
        Self::new(
            svc.namespace().unwrap_or_else(|| "default".into()),
            svc.name_any(),
        )
    }
}

impl fmt::Display for ServiceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

/// How many families a Service wants, from `spec.ipFamilyPolicy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FamilyPolicy {
    SingleStack,
    PreferDualStack,
    RequireDualStack,
}

/// The allocator's view of one Service.
#[derive(Clone, Debug, PartialEq)]
pub struct ServiceInfo {
    pub key: ServiceKey,
    pub labels: Labels,
    pub request: ServiceRequest,
    /// Families in preference order (the first is the primary one).
    pub families: Vec<Family>,
    pub policy: FamilyPolicy,
    /// (protocol, port) pairs, for the sharing rules.
    pub ports: Vec<(String, i32)>,
    /// externalTrafficPolicy: Local.
    pub local_traffic: bool,
    pub selector: BTreeMap<String, String>,
    /// Addresses in `status.loadBalancer.ingress`.
    pub current_ips: Vec<IpAddr>,
    /// The pool its addresses came from, as the ip-allocated-from-pool annotation (any
    /// spelling) says.
    pub allocated_from: Option<String>,
    /// Creation time (RFC 3339) or empty: older Services are served first.
    pub created: String,
}

/// Whether a Service is FerroLB's to serve: `type: LoadBalancer` and the load balancer class
/// this controller handles (`None`: Services without a class).
pub fn is_ours(svc: &Service, lb_class: Option<&str>) -> bool {
    let Some(spec) = svc.spec.as_ref() else {
        return false;
    };
    spec.type_.as_deref() == Some("LoadBalancer") && spec.load_balancer_class.as_deref() == lb_class
}

fn family_of_name(name: &str) -> Option<Family> {
    match name.to_ascii_lowercase().as_str() {
        "ipv4" => Some(Family::V4),
        "ipv6" => Some(Family::V6),
        _ => None,
    }
}

/// Reads a Service. Errors are the Service's own (bad annotations, contradictory families).
pub fn service_info(svc: &Service) -> Result<ServiceInfo, Vec<ConfigError>> {
    let request = service_request(svc)?;
    let spec = svc.spec.clone().unwrap_or_default();
    let policy = match spec.ip_family_policy.as_deref() {
        Some("PreferDualStack") => FamilyPolicy::PreferDualStack,
        Some("RequireDualStack") => FamilyPolicy::RequireDualStack,
        _ => FamilyPolicy::SingleStack,
    };
    let mut families: Vec<Family> = Vec::new();
    let mut push = |f: Family| {
        if !families.contains(&f) {
            families.push(f);
        }
    };
    if let Some(list) = spec.ip_families.as_ref().filter(|l| !l.is_empty()) {
        list.iter()
            .filter_map(|f| family_of_name(f))
            .for_each(&mut push);
    } else {
        let cluster_ips = spec
            .cluster_ips
            .iter()
            .flatten()
            .chain(spec.cluster_ip.iter());
        cluster_ips
            .filter_map(|ip| ip.parse::<IpAddr>().ok())
            .for_each(|ip| push(Family::of(ip)));
        // A Service without ipFamilies or clusterIPs (a manifest for `plan`): the requested
        // addresses say which families, else IPv4, as the API server defaults on IPv4 clusters.
        request
            .requested_ips
            .iter()
            .for_each(|ip| push(Family::of(*ip)));
    }
    if families.is_empty() {
        families.push(Family::V4);
    }
    if policy == FamilyPolicy::SingleStack {
        families.truncate(1);
    }
    let current_ips = status_ips(svc);
    let allocated_from =
        ferrolb_crds::annotations::spellings(ferrolb_crds::annotations::IP_ALLOCATED_FROM_POOL)
            .iter()
            .find_map(|k| svc.annotations().get(k).cloned());
    Ok(ServiceInfo {
        key: ServiceKey::of(svc),
        labels: svc.labels().clone(),
        request,
        families,
        policy,
        ports: spec
            .ports
            .iter()
            .flatten()
            .map(|p| (p.protocol.clone().unwrap_or_else(|| "TCP".into()), p.port))
            .collect(),
        local_traffic: spec.external_traffic_policy.as_deref() == Some("Local"),
        selector: spec.selector.unwrap_or_default(),
        current_ips,
        allocated_from,
        created: svc
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| t.0.to_string())
            .unwrap_or_default(),
    })
}
