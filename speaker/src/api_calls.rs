//! Every Kubernetes API call `ferrolb-speaker run --source kube` makes, by API group, resource
//! and verb. deploy/speaker/rbac.yaml must grant exactly these (speaker/tests/deploy_rbac.rs
//! compares them), and the end-to-end test records every request the speaker sends and fails
//! on one missing here. Whoever adds an `Api` call adds it here.

pub use ferrolb_kube::api_calls::{ApiCall, Scope};
use ferrolb_kube::api_calls::{CONFIG_WATCH, METALLB_CONFIG_WATCH, WATCH};

/// Server-side apply: a PATCH, authorized as `create` too when it creates the object.
const APPLY: &[&str] = &["create", "patch"];

/// The calls of the speaker's own, besides the configuration watch
/// ([`ferrolb_kube::ConfigWatch`]).
const OWN_CALLS: &[ApiCall] = &[
    ApiCall {
        scope: Scope::Cluster,
        group: "",
        resource: "services",
        verbs: WATCH,
        used_by: "source::kube (addresses, labels, traffic policy)",
    },
    ApiCall {
        scope: Scope::Cluster,
        group: "discovery.k8s.io",
        resource: "endpointslices",
        verbs: WATCH,
        used_by: "source::kube (where a Service's endpoints serve)",
    },
    ApiCall {
        scope: Scope::Cluster,
        group: "",
        resource: "nodes",
        verbs: WATCH,
        used_by: "source::kube (labels, conditions, InternalIPs for membership)",
    },
    ApiCall {
        scope: Scope::Cluster,
        group: "events.k8s.io",
        resource: "events",
        verbs: &["create", "patch"],
        used_by: "status::writer (takeover Event on the Service; kube-runtime Recorder: create, then patch a series)",
    },
    ApiCall {
        scope: Scope::OwnNamespace,
        group: "",
        resource: "secrets",
        verbs: WATCH,
        used_by: "source::kube (membership key, BGPPeer passwordSecret)",
    },
    ApiCall {
        scope: Scope::OwnNamespace,
        group: "ferrolb.io",
        resource: "servicel2statuses",
        verbs: &["list", "create", "patch", "delete"],
        used_by: "status::writer (list this node's at start, apply, delete when no longer announced)",
    },
    ApiCall {
        scope: Scope::OwnNamespace,
        group: "ferrolb.io",
        resource: "servicel2statuses/status",
        verbs: &["patch"],
        used_by: "status::writer (apply)",
    },
    ApiCall {
        scope: Scope::OwnNamespace,
        group: "ferrolb.io",
        resource: "servicebgpstatuses",
        verbs: &["list", "create", "patch", "delete"],
        used_by: "status::writer (list this node's at start, apply, delete when no longer announced)",
    },
    ApiCall {
        scope: Scope::OwnNamespace,
        group: "ferrolb.io",
        resource: "servicebgpstatuses/status",
        verbs: &["patch"],
        used_by: "status::writer (apply)",
    },
    ApiCall {
        scope: Scope::OwnNamespace,
        group: "coordination.k8s.io",
        resource: "leases",
        verbs: &["get", "create", "update"],
        used_by: "tiebreak (ferrolb-l2-tiebreak, only while the speakers are split in two halves)",
    },
    ApiCall {
        scope: Scope::OwnNamespace,
        group: "ferrolb.io",
        resource: "configurationstates",
        verbs: APPLY,
        used_by: "status::writer (speaker-<node>, apply)",
    },
    ApiCall {
        scope: Scope::OwnNamespace,
        group: "ferrolb.io",
        resource: "configurationstates/status",
        verbs: &["patch"],
        used_by: "status::writer (apply)",
    },
];

/// Every call `run --source kube` makes in the default mode: what deploy/speaker/rbac.yaml
/// grants. The Secrets of its namespace are read once, for the membership key and the BGPPeers'
/// passwords alike.
pub fn api_calls() -> Vec<ApiCall> {
    OWN_CALLS
        .iter()
        .chain(CONFIG_WATCH.iter())
        .copied()
        .collect()
}

/// What MetalLB-compatible mode calls besides (deploy/metallb-compat/ grants it).
pub fn metallb_compat_calls() -> Vec<ApiCall> {
    METALLB_CONFIG_WATCH.to_vec()
}

/// Whether the calls of either mode declare `verb` on `resource` of `group` in `scope`.
pub fn declared(scope: Scope, group: &str, resource: &str, verb: &str) -> bool {
    let calls: Vec<ApiCall> = api_calls()
        .into_iter()
        .chain(metallb_compat_calls())
        .collect();
    ferrolb_kube::api_calls::declared(&calls, scope, group, resource, verb)
}
