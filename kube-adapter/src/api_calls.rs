//! API calls declared by resource and verb. Each component lists every call it makes; its RBAC
//! manifests must grant exactly those (tests compare them), and its end-to-end tests fail on a
//! request that is not declared.

/// Where a call applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Objects in any namespace, or cluster-scoped objects: a ClusterRole.
    Cluster,
    /// Objects in the component's own namespace: a Role there.
    OwnNamespace,
    /// Objects in MetalLB's namespace, in MetalLB-compatible mode only: a Role there
    /// (deploy/metallb-compat/).
    MetallbNamespace,
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

/// list + watch: what a reflector does.
pub const WATCH: &[&str] = &["list", "watch"];

/// The plural names of the configuration kinds, in both API groups.
pub const CONFIG_RESOURCES: [&str; 6] = [
    "ipaddresspools",
    "l2advertisements",
    "bgpadvertisements",
    "bgppeers",
    "bfdprofiles",
    "communities",
];

macro_rules! watch_calls {
    ($scope:expr, $group:literal, $used_by:literal) => {
        [
            ApiCall {
                scope: $scope,
                group: $group,
                resource: "ipaddresspools",
                verbs: WATCH,
                used_by: $used_by,
            },
            ApiCall {
                scope: $scope,
                group: $group,
                resource: "l2advertisements",
                verbs: WATCH,
                used_by: $used_by,
            },
            ApiCall {
                scope: $scope,
                group: $group,
                resource: "bgpadvertisements",
                verbs: WATCH,
                used_by: $used_by,
            },
            ApiCall {
                scope: $scope,
                group: $group,
                resource: "bgppeers",
                verbs: WATCH,
                used_by: $used_by,
            },
            ApiCall {
                scope: $scope,
                group: $group,
                resource: "bfdprofiles",
                verbs: WATCH,
                used_by: $used_by,
            },
            ApiCall {
                scope: $scope,
                group: $group,
                resource: "communities",
                verbs: WATCH,
                used_by: $used_by,
            },
            ApiCall {
                scope: $scope,
                group: "",
                resource: "secrets",
                verbs: WATCH,
                used_by: "ferrolb_kube::ConfigWatch (BGPPeer passwordSecret)",
            },
        ]
    };
}

macro_rules! stray_calls {
    ($group:literal) => {
        [
            stray_call!($group, "ipaddresspools"),
            stray_call!($group, "l2advertisements"),
            stray_call!($group, "bgpadvertisements"),
            stray_call!($group, "bgppeers"),
            stray_call!($group, "bfdprofiles"),
            stray_call!($group, "communities"),
        ]
    };
}

macro_rules! stray_call {
    ($group:literal, $resource:literal) => {
        ApiCall {
            scope: Scope::Cluster,
            group: $group,
            resource: $resource,
            verbs: WATCH,
            used_by: "ferrolb_kube::ConfigWatch::watch_strays (objects where they are not read, reported)",
        }
    };
}

/// What [`ConfigWatch`](crate::ConfigWatch) calls in FerroLB's own API group.
pub const CONFIG_WATCH: [ApiCall; 7] = watch_calls!(
    Scope::OwnNamespace,
    "ferrolb.io",
    "ferrolb_kube::ConfigWatch (the configuration)"
);

/// What [`ConfigWatch`](crate::ConfigWatch) calls in MetalLB-compatible mode.
pub const METALLB_CONFIG_WATCH: [ApiCall; 7] = watch_calls!(
    Scope::MetallbNamespace,
    "metallb.io",
    "ferrolb_kube::ConfigWatch (MetalLB's objects as they are)"
);

/// Whether `calls` declare `verb` on `resource` of `group` in `scope` (a cluster-wide grant
/// covers every namespace).
pub fn declared(calls: &[ApiCall], scope: Scope, group: &str, resource: &str, verb: &str) -> bool {
    calls.iter().any(|c| {
        (c.scope == scope || c.scope == Scope::Cluster)
            && c.group == group
            && c.resource == resource
            && c.verbs.contains(&verb)
    })
}

/// Every single (scope, API group, resource, verb) `calls` declare: what an RBAC manifest must
/// grant them, one grant at a time (tests compare the two).
pub fn single_grants(
    calls: &[ApiCall],
) -> std::collections::BTreeSet<(Scope, String, String, String)> {
    calls
        .iter()
        .flat_map(|c| {
            c.verbs.iter().map(move |v| {
                (
                    c.scope,
                    c.group.to_string(),
                    c.resource.to_string(),
                    v.to_string(),
                )
            })
        })
        .collect()
}

/// What [`ConfigWatch::watch_strays`](crate::ConfigWatch::watch_strays) calls in FerroLB's own
/// API group (the controller, to report objects where they are not read).
pub const STRAY_WATCH: [ApiCall; 6] = stray_calls!("ferrolb.io");

/// The same in MetalLB-compatible mode.
pub const METALLB_STRAY_WATCH: [ApiCall; 6] = stray_calls!("metallb.io");
