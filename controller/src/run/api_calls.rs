//! Every Kubernetes API call `run` makes, by API group, resource and verb. `deploy/`'s RBAC must
//! grant exactly these (a test compares them), so a new call without its permission, or a
//! permission nothing uses, fails CI. Whoever adds an `Api` call in `run` adds it here.

pub use ferrolb_kube::api_calls::{ApiCall, Scope};
use ferrolb_kube::api_calls::{
    CONFIG_WATCH, METALLB_CONFIG_WATCH, METALLB_STRAY_WATCH, STRAY_WATCH, WATCH,
};

/// The calls of this component's own, besides the configuration watch
/// ([`ferrolb_kube::ConfigWatch`]).
const OWN_CALLS: &[ApiCall] = &[
    ApiCall {
        scope: Scope::Cluster,
        group: "",
        resource: "services",
        verbs: &["list", "watch", "patch"],
        used_by: "run::lead (watch), reconcile::write (ip-allocated-from-pool annotation)",
    },
    ApiCall {
        scope: Scope::Cluster,
        group: "",
        resource: "services/status",
        verbs: &["patch"],
        used_by: "reconcile::write (status.loadBalancer.ingress)",
    },
    ApiCall {
        scope: Scope::Cluster,
        group: "",
        resource: "namespaces",
        verbs: WATCH,
        used_by: "config::ConfigStores (labels for namespaceSelectors)",
    },
    ApiCall {
        scope: Scope::Cluster,
        group: "events.k8s.io",
        resource: "events",
        verbs: &["create", "patch"],
        used_by: "reconcile::publish (kube-runtime Recorder: create, then patch a series)",
    },
    ApiCall {
        scope: Scope::OwnNamespace,
        group: "ferrolb.io",
        resource: "ipaddresspools/status",
        verbs: &["patch"],
        used_by: "pool_status (address counts)",
    },
    ApiCall {
        scope: Scope::OwnNamespace,
        group: "ferrolb.io",
        resource: "configurationstates",
        verbs: &["get", "create"],
        used_by: "config::StateWriter",
    },
    ApiCall {
        scope: Scope::OwnNamespace,
        group: "ferrolb.io",
        resource: "configurationstates/status",
        verbs: &["patch"],
        used_by: "config::StateWriter",
    },
    ApiCall {
        scope: Scope::OwnNamespace,
        group: "coordination.k8s.io",
        resource: "leases",
        verbs: &["get", "create", "patch"],
        used_by:
            "leader (kube-lease-manager: get, create when missing, apply to lock/renew/release)",
    },
];

/// Every call `run` makes in the default mode: what deploy/controller/rbac.yaml grants.
pub fn api_calls() -> Vec<ApiCall> {
    OWN_CALLS
        .iter()
        .chain(CONFIG_WATCH.iter())
        .chain(STRAY_WATCH.iter())
        .copied()
        .collect()
}

/// What MetalLB-compatible mode calls besides (deploy/metallb-compat/ grants it): MetalLB's
/// objects, and the address counts in its pools' status.
pub fn metallb_compat_calls() -> Vec<ApiCall> {
    METALLB_CONFIG_WATCH
        .iter()
        .chain(METALLB_STRAY_WATCH.iter())
        .copied()
        .chain([ApiCall {
            scope: Scope::MetallbNamespace,
            group: "metallb.io",
            resource: "ipaddresspools/status",
            verbs: &["patch"],
            used_by: "pool_status (address counts, as MetalLB's controller writes them)",
        }])
        .collect()
}
