//! Every Kubernetes API call `run` makes, by API group, resource and verb. `deploy/`'s RBAC must
//! grant exactly these (a test compares them), so a new call without its permission, or a
//! permission nothing uses, fails CI. Whoever adds an `Api` call in `run` adds it here.

/// Where a call applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Objects in any namespace, or cluster-scoped objects: a ClusterRole.
    Cluster,
    /// Objects in the controller's own namespace: a Role there.
    OwnNamespace,
}

/// One resource and the verbs used on it.
#[derive(Clone, Copy, Debug)]
pub struct ApiCall {
    pub scope: Scope,
    pub group: &'static str,
    /// Plural resource name, with `/subresource` when it is one.
    pub resource: &'static str,
    pub verbs: &'static [&'static str],
    /// Where in the code, and why.
    pub used_by: &'static str,
}

const WATCH: &[&str] = &["list", "watch"];

pub const API_CALLS: &[ApiCall] = &[
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
        resource: "ipaddresspools",
        verbs: WATCH,
        used_by: "config::ConfigStores",
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
        resource: "l2advertisements",
        verbs: WATCH,
        used_by: "config::ConfigStores (validated with the pools)",
    },
    ApiCall {
        scope: Scope::OwnNamespace,
        group: "ferrolb.io",
        resource: "bgpadvertisements",
        verbs: WATCH,
        used_by: "config::ConfigStores (validated with the pools)",
    },
    ApiCall {
        scope: Scope::OwnNamespace,
        group: "ferrolb.io",
        resource: "bgppeers",
        verbs: WATCH,
        used_by: "config::ConfigStores (validated with the pools)",
    },
    ApiCall {
        scope: Scope::OwnNamespace,
        group: "ferrolb.io",
        resource: "bfdprofiles",
        verbs: WATCH,
        used_by: "config::ConfigStores (validated with the pools)",
    },
    ApiCall {
        scope: Scope::OwnNamespace,
        group: "ferrolb.io",
        resource: "communities",
        verbs: WATCH,
        used_by: "config::ConfigStores (validated with the pools)",
    },
    ApiCall {
        scope: Scope::OwnNamespace,
        group: "",
        resource: "secrets",
        verbs: WATCH,
        used_by: "config::ConfigStores (BGPPeer passwordSecret references are validated)",
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
