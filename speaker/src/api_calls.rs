//! Every Kubernetes API call `ferrolb-speaker run --source kube` makes, by API group, resource
//! and verb. deploy/speaker/rbac.yaml must grant exactly these (speaker/tests/deploy_rbac.rs
//! compares them), and the end-to-end test records every request the speaker sends and fails
//! on one missing here. Whoever adds an `Api` call adds it here.

/// Where a call applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Objects in any namespace, or cluster-scoped objects: a ClusterRole.
    Cluster,
    /// Objects in the speaker's own namespace: a Role there.
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
/// Server-side apply: a PATCH, authorized as `create` too when it creates the object.
const APPLY: &[&str] = &["create", "patch"];

pub const API_CALLS: &[ApiCall] = &[
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
        group: "ferrolb.io",
        resource: "ipaddresspools",
        verbs: WATCH,
        used_by: "source::kube",
    },
    ApiCall {
        scope: Scope::OwnNamespace,
        group: "ferrolb.io",
        resource: "l2advertisements",
        verbs: WATCH,
        used_by: "source::kube",
    },
    ApiCall {
        scope: Scope::OwnNamespace,
        group: "ferrolb.io",
        resource: "bgpadvertisements",
        verbs: WATCH,
        used_by: "source::kube",
    },
    ApiCall {
        scope: Scope::OwnNamespace,
        group: "ferrolb.io",
        resource: "bgppeers",
        verbs: WATCH,
        used_by: "source::kube",
    },
    ApiCall {
        scope: Scope::OwnNamespace,
        group: "ferrolb.io",
        resource: "bfdprofiles",
        verbs: WATCH,
        used_by: "source::kube",
    },
    ApiCall {
        scope: Scope::OwnNamespace,
        group: "ferrolb.io",
        resource: "communities",
        verbs: WATCH,
        used_by: "source::kube",
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

/// Whether API_CALLS declares `verb` on `resource` of `group` in `scope` (a cluster-wide grant
/// covers the own namespace too).
pub fn declared(scope: Scope, group: &str, resource: &str, verb: &str) -> bool {
    API_CALLS.iter().any(|c| {
        (c.scope == scope || c.scope == Scope::Cluster)
            && c.group == group
            && c.resource == resource
            && c.verbs.contains(&verb)
    })
}
