//! What the plugin reads from the live cluster: one `list` per kind, nothing written. The calls
//! are declared in [`API_CALLS`]; the ClusterRole in deploy/kubectl-plugin/ grants exactly those.

use ferrolb_config::{ConfigError, Resources};
use ferrolb_crds::{
    ConfigurationState, IPAddressPoolStatus, ServiceBGPStatus, ServiceL2Status, CONFIG_KINDS,
};
use ferrolb_kube::api_calls::{ApiCall, Scope};
use ferrolb_kube::config_watch::read_object;
use ferrolb_kube::ConfigApi;
use k8s_openapi::api::core::v1::{Namespace, Node, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::ByteString;
use kube::api::{Api, DynamicObject, ListParams};
use kube::{Client, ResourceExt};
use std::collections::{BTreeMap, BTreeSet};

/// Where FerroLB lives in the cluster, and which Services it serves.
#[derive(Clone, Debug)]
pub struct Target {
    /// The components' namespace: status objects and ConfigurationStates (and the
    /// configuration, unless MetalLB-compatible).
    pub namespace: String,
    /// MetalLB-compatible mode: the configuration is MetalLB's objects in this namespace.
    pub metallb_namespace: Option<String>,
    /// The load balancer class served (`None`: Services without one).
    pub lb_class: Option<String>,
    /// The name of the controller's ConfigurationState.
    pub controller_state: String,
}

const LIST: &[&str] = &["list"];

macro_rules! list {
    ($group:literal, $resource:literal, $why:literal) => {
        ApiCall {
            scope: Scope::Cluster,
            group: $group,
            resource: $resource,
            verbs: LIST,
            used_by: $why,
        }
    };
}

/// Every API call the plugin makes: `list`, cluster-wide (the plugin is told the namespaces at
/// run time, so a ClusterRole grants them).
pub const API_CALLS: &[ApiCall] = &[
    list!(
        "",
        "services",
        "the LoadBalancer Services and their addresses"
    ),
    list!(
        "",
        "namespaces",
        "namespace labels, for pools' namespace selectors"
    ),
    list!(
        "",
        "nodes",
        "node labels and readiness, for the speakers' plan"
    ),
    list!(
        "discovery.k8s.io",
        "endpointslices",
        "serving endpoints, for externalTrafficPolicy Local"
    ),
    list!(
        "events.k8s.io",
        "events",
        "`why`: what the controller last said about the Service"
    ),
    list!(
        "ferrolb.io",
        "ipaddresspools",
        "configuration, and pool usage from its status"
    ),
    list!("ferrolb.io", "l2advertisements", "configuration"),
    list!("ferrolb.io", "bgpadvertisements", "configuration"),
    list!("ferrolb.io", "bgppeers", "configuration"),
    list!("ferrolb.io", "bfdprofiles", "configuration"),
    list!("ferrolb.io", "communities", "configuration"),
    list!(
        "ferrolb.io",
        "servicel2statuses",
        "which node announces a Service in layer 2"
    ),
    list!(
        "ferrolb.io",
        "servicebgpstatuses",
        "which nodes announce a Service by BGP, to which peers"
    ),
    list!(
        "ferrolb.io",
        "configurationstates",
        "whether each component accepted the configuration"
    ),
    list!(
        "metallb.io",
        "ipaddresspools",
        "configuration in MetalLB-compatible mode"
    ),
    list!(
        "metallb.io",
        "l2advertisements",
        "configuration in MetalLB-compatible mode"
    ),
    list!(
        "metallb.io",
        "bgpadvertisements",
        "configuration in MetalLB-compatible mode"
    ),
    list!(
        "metallb.io",
        "bgppeers",
        "configuration in MetalLB-compatible mode"
    ),
    list!(
        "metallb.io",
        "bfdprofiles",
        "configuration in MetalLB-compatible mode"
    ),
    list!(
        "metallb.io",
        "communities",
        "configuration in MetalLB-compatible mode"
    ),
];

/// The live objects, as read.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    /// The configuration objects, as FerroLB's types. Secrets are never read: each BGPPeer's
    /// passwordSecret is taken as present (the speakers' ConfigurationState says if it is not).
    pub resources: Resources,
    /// Configuration objects that cannot be read as their kind, as `Kind/name`.
    pub unreadable: BTreeSet<String>,
    pub read_problems: Vec<ConfigError>,
    /// Each pool's status as the controller wrote it (FerroLB's API only: MetalLB's has another
    /// shape).
    pub pool_status: BTreeMap<String, IPAddressPoolStatus>,
    pub services: Vec<Service>,
    pub namespaces: Vec<Namespace>,
    pub nodes: Vec<Node>,
    pub endpoint_slices: Vec<EndpointSlice>,
    pub l2_statuses: Vec<ServiceL2Status>,
    pub bgp_statuses: Vec<ServiceBGPStatus>,
    pub states: Vec<ConfigurationState>,
    /// Events about Services (read for `why` only).
    pub events: Vec<Event>,
    /// Status objects that could not be read, as `Kind/name: why`.
    pub unreadable_status: Vec<String>,
    /// A note for the user about where the configuration may be instead.
    pub hint: Option<String>,
}

#[derive(Debug, thiserror::Error)]
#[error("listing {what}: {source}")]
pub struct ReadError {
    what: String,
    #[source]
    source: kube::Error,
}

async fn list<K>(api: Api<K>, what: &str) -> Result<Vec<K>, ReadError>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    api.list(&ListParams::default())
        .await
        .map(|l| l.items)
        .map_err(|source| ReadError {
            what: what.into(),
            source,
        })
}

/// Lists `kind` (one of FerroLB's status kinds) in `ns` as raw objects and reads each: those
/// that cannot be read come back as `Kind/name: why`.
async fn list_each<K>(
    client: &Client,
    ns: &str,
    kind: &str,
) -> Result<(Vec<K>, Vec<String>), ReadError>
where
    K: serde::de::DeserializeOwned,
{
    let gvk = kube::api::GroupVersionKind::gvk(ferrolb_crds::GROUP, ferrolb_crds::VERSION, kind);
    let resource = kube::api::ApiResource::from_gvk(&gvk);
    let raw = list(
        Api::<DynamicObject>::namespaced_with(client.clone(), ns, &resource),
        &format!("{kind} in {ns}"),
    )
    .await?;
    let mut good = Vec::new();
    let mut bad = Vec::new();
    for object in raw {
        let name = object.name_any();
        match serde_json::to_value(&object).and_then(serde_json::from_value::<K>) {
            Ok(k) => good.push(k),
            Err(e) => bad.push(format!("{kind}/{name}: cannot be read: {e}")),
        }
    }
    Ok((good, bad))
}

/// Reads everything the reports need. `events_in`: the namespace whose Events to read (`why`).
pub async fn read(
    client: &Client,
    target: &Target,
    events_in: Option<&str>,
) -> Result<Snapshot, ReadError> {
    let ns = target.namespace.as_str();
    let mut snapshot = Snapshot {
        services: list(Api::all(client.clone()), "Services").await?,
        namespaces: list(Api::all(client.clone()), "Namespaces").await?,
        nodes: list(Api::all(client.clone()), "Nodes").await?,
        endpoint_slices: list(Api::all(client.clone()), "EndpointSlices").await?,
        ..Snapshot::default()
    };
    // Read one by one: a status object of another version's shape is reported, not fatal.
    let (l2, bad) = list_each::<ServiceL2Status>(client, ns, "ServiceL2Status").await?;
    snapshot.l2_statuses = l2;
    snapshot.unreadable_status.extend(bad);
    let (bgp, bad) = list_each::<ServiceBGPStatus>(client, ns, "ServiceBGPStatus").await?;
    snapshot.bgp_statuses = bgp;
    snapshot.unreadable_status.extend(bad);
    let (states, bad) = list_each::<ConfigurationState>(client, ns, "ConfigurationState").await?;
    snapshot.states = states;
    snapshot.unreadable_status.extend(bad);
    if let Some(events_ns) = events_in {
        snapshot.events = list(Api::namespaced(client.clone(), events_ns), "Events").await?;
    }
    let (api, config_ns) = match &target.metallb_namespace {
        Some(m) => (ConfigApi::MetalLb, m.as_str()),
        None => (ConfigApi::FerroLb, ns),
    };
    let mut objects: Vec<(&str, DynamicObject)> = Vec::new();
    for kind in CONFIG_KINDS {
        let resource = api.resource(kind).expect("a configuration kind");
        let found = list(
            Api::<DynamicObject>::namespaced_with(client.clone(), config_ns, &resource),
            &format!("{kind} in {config_ns}"),
        )
        .await?;
        objects.extend(found.into_iter().map(|o| (kind, o)));
    }
    let empty = objects.is_empty();
    add_config(&mut snapshot, api, objects);
    if empty && api == ConfigApi::FerroLb {
        snapshot.hint = metallb_hint(client, config_ns).await;
    }
    Ok(snapshot)
}

/// Where MetalLB's pools are, when FerroLB's namespace holds no configuration at all: the usual
/// reason is a cluster running FerroLB in MetalLB-compatible mode.
async fn metallb_hint(client: &Client, ns: &str) -> Option<String> {
    let resource = ConfigApi::MetalLb.resource("IPAddressPool")?;
    let pools = Api::<DynamicObject>::all_with(client.clone(), &resource)
        .list(&ListParams::default())
        .await
        .ok()?;
    let mut namespaces: Vec<String> = pools.items.iter().filter_map(|p| p.namespace()).collect();
    namespaces.sort();
    namespaces.dedup();
    let first = namespaces.first()?;
    Some(format!(
        "no FerroLB configuration in {ns}, but MetalLB's IPAddressPools in {}: if FerroLB runs in \
         MetalLB-compatible mode, pass --metallb-namespace {first}",
        namespaces.join(", ")
    ))
}

/// Reads dynamic configuration objects as FerroLB's types, as the components do.
pub fn add_config(snapshot: &mut Snapshot, api: ConfigApi, objects: Vec<(&str, DynamicObject)>) {
    for (kind, object) in objects {
        // MetalLB's pool status has the same four counters (as plain integers), so the
        // controller's counts are read in either API group.
        if kind == "IPAddressPool" {
            if let Some(status) = object
                .data
                .get("status")
                .and_then(|s| serde_json::from_value::<IPAddressPoolStatus>(s.clone()).ok())
            {
                snapshot.pool_status.insert(object.name_any(), status);
            }
        }
        read_object(
            &mut snapshot.resources,
            &mut snapshot.read_problems,
            &mut snapshot.unreadable,
            api,
            kind,
            &object,
        );
    }
    snapshot.resources.secrets = stand_in_secrets(&snapshot.resources.bgp_peers);
}

/// A basic-auth Secret for every passwordSecret a BGPPeer names: the plugin does not read
/// Secrets (its RBAC stays read-only and secret-free), and a password never changes a plan.
fn stand_in_secrets(peers: &[ferrolb_crds::BGPPeer]) -> Vec<Secret> {
    let mut out = Vec::new();
    for peer in peers {
        let Some(reference) = peer.spec.password_secret.as_ref() else {
            continue;
        };
        let Some(name) = reference.name.as_ref().filter(|n| !n.is_empty()) else {
            continue;
        };
        let namespace = reference
            .namespace
            .clone()
            .or_else(|| peer.namespace())
            .unwrap_or_default();
        let mut secret = Secret {
            type_: Some("kubernetes.io/basic-auth".into()),
            data: Some(BTreeMap::from([(
                "password".to_string(),
                ByteString(b"stand-in".to_vec()),
            )])),
            ..Secret::default()
        };
        secret.metadata.name = Some(name.clone());
        secret.metadata.namespace = Some(namespace);
        out.push(secret);
    }
    out
}
