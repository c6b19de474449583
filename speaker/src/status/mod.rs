//! What this node tells the cluster about its announcements, in MetalLB's shapes: a
//! ServiceL2Status per Service it announces in layer 2 mode (the interfaces), a
//! ServiceBGPStatus per Service it announces by BGP (the peers), both named after the node
//! and the Service, labelled so they can be found by Service or by node, and owned by this
//! node: deleted when it stops announcing. Also an Event on the Service when this node takes
//! one of its addresses over, and the node's ConfigurationState (`speaker-<node>`).
//!
//! This module is pure (desired objects from what is announced); [`writer`] applies them to
//! the cluster, off the takeover path and coalesced.

pub mod writer;

use crate::planner::NodePlan;
use crate::source::ConfigReport;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;

/// Field manager of every write the speaker makes (server-side apply).
pub const FIELD_MANAGER: &str = "ferrolb-speaker";
/// Event reporter.
pub const REPORTER: &str = "ferrolb-speaker";
/// Labels on the status objects (MetalLB's, in FerroLB's group).
pub const NODE_LABEL: &str = "ferrolb.io/node";
pub const SERVICE_NAME_LABEL: &str = "ferrolb.io/service-name";
pub const SERVICE_NAMESPACE_LABEL: &str = "ferrolb.io/service-namespace";
/// Reason of the Event on a Service this node takes over (MetalLB's).
pub const TAKEOVER_REASON: &str = "nodeAssigned";

/// What this node announces now, as the run loop publishes it after every change.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Announced {
    /// Layer 2: (address, interface) pairs this node answers for.
    pub l2: BTreeSet<(IpAddr, String)>,
    /// The plan they come from: which Service each address belongs to, and the BGP routes.
    pub plan: std::sync::Arc<NodePlan>,
    /// The live speakers the plan was made with (membership's view; empty without it).
    pub live: BTreeSet<String>,
    /// This node sweeps the ServiceL2Status objects of speakers membership declared dead (see
    /// [`sweeper`]).
    pub sweeps: bool,
}

/// A node declared dead keeps nothing that says it announces: its ServiceL2Status objects go
/// once it has been out of the live set for this long (longer than the fast path hides a
/// stalled owner, so a blip deletes nothing).
pub const DEAD_FOR: std::time::Duration = std::time::Duration::from_secs(3);

/// Whether `node` sweeps the dead speakers' ServiceL2Status objects: the first live speaker
/// by name, and only while it stands with a majority (`majority`, the L2 quorum). A minority
/// cannot tell a dead speaker from one cut off from it, so it never sweeps; and the majority
/// has taken over the dead speakers' addresses, so their objects no longer say anything true.
pub fn sweeper(node: &str, live: &BTreeSet<String>, majority: bool) -> bool {
    majority && live.iter().next().is_some_and(|first| first == node)
}

/// The ServiceL2Status objects (name, node) to delete now, of `listed`: those of nodes out of
/// `live` since `absent_since` says for [`DEAD_FOR`] or more (never this node's own), and
/// when to look again for those not yet that long. Nodes are named the same way throughout
/// (the writer uses their label values).
pub fn dead_objects(
    node: &str,
    live: &BTreeSet<String>,
    listed: &[(String, String)],
    absent_since: &BTreeMap<String, std::time::Duration>,
    now: std::time::Duration,
) -> (Vec<String>, Option<std::time::Duration>) {
    let mut delete = Vec::new();
    let mut again: Option<std::time::Duration> = None;
    for (name, owner) in listed {
        if owner == node || live.contains(owner) {
            continue;
        }
        let since = absent_since.get(owner).copied().unwrap_or(now);
        let due = since + DEAD_FOR;
        if due <= now {
            delete.push(name.clone());
        } else {
            again = Some(again.map_or(due, |a| a.min(due)));
        }
    }
    (delete, again)
}

/// Which status kind an object is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Protocol {
    Layer2,
    Bgp,
}

/// One ServiceL2Status or ServiceBGPStatus as this node wants it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StatusObject {
    pub protocol: Protocol,
    pub name: String,
    pub node: String,
    pub service_namespace: String,
    pub service_name: String,
    /// Layer 2: interface names; BGP: peer names. Sorted.
    pub items: Vec<String>,
}

impl StatusObject {
    pub fn labels(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            (NODE_LABEL.to_string(), label_value(&self.node)),
            (SERVICE_NAME_LABEL.into(), label_value(&self.service_name)),
            (
                SERVICE_NAMESPACE_LABEL.into(),
                label_value(&self.service_namespace),
            ),
        ])
    }

    /// The object without status, for server-side apply to the main resource.
    pub fn object(&self) -> Value {
        let kind = match self.protocol {
            Protocol::Layer2 => "ServiceL2Status",
            Protocol::Bgp => "ServiceBGPStatus",
        };
        json!({
            "apiVersion": "ferrolb.io/v1beta1",
            "kind": kind,
            "metadata": {"name": self.name, "labels": self.labels()},
            "spec": {},
        })
    }

    /// The status, for server-side apply to the status subresource.
    pub fn status(&self) -> Value {
        let mut object = self.object();
        object["metadata"] = json!({"name": self.name});
        if let Some(o) = object.as_object_mut() {
            o.remove("spec");
        }
        let mut status = json!({
            "node": self.node,
            "serviceName": self.service_name,
            "serviceNamespace": self.service_namespace,
        });
        match self.protocol {
            Protocol::Layer2 => {
                let interfaces: Vec<Value> =
                    self.items.iter().map(|i| json!({"name": i})).collect();
                status["interfaces"] = Value::Array(interfaces);
            }
            Protocol::Bgp => status["peers"] = json!(self.items),
        }
        object["status"] = status;
        object
    }
}

/// A label value for any string: itself when it is a valid label value, else a hash of it
/// (node names may be longer than the 63 characters a label value allows).
pub fn label_value(s: &str) -> String {
    let valid = s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && s.chars().next().is_none_or(|c| c.is_ascii_alphanumeric())
        && s.chars().last().is_none_or(|c| c.is_ascii_alphanumeric());
    if valid {
        s.to_string()
    } else {
        format!("h-{}", &hex_hash(&[s])[..40])
    }
}

fn hex_hash(parts: &[&str]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// The object name: stable for (protocol, node, Service), so every write is an idempotent
/// apply and a restarted speaker finds its objects again.
pub fn object_name(protocol: Protocol, node: &str, service_key: &str) -> String {
    let prefix = match protocol {
        Protocol::Layer2 => "l2",
        Protocol::Bgp => "bgp",
    };
    format!("{prefix}-{}", &hex_hash(&[node, service_key])[..20])
}

fn split_key(key: &str) -> (String, String) {
    match key.split_once('/') {
        Some((ns, name)) => (ns.to_string(), name.to_string()),
        None => ("default".to_string(), key.to_string()),
    }
}

/// What the status objects say, without their names and fields: per protocol and Service
/// key, the interfaces (layer 2) or peers (BGP). Borrowed and cheap, so a writer can tell that
/// nothing it writes changed (most plans: a Service another node owns) without building the
/// objects.
pub type Projection<'a> = BTreeMap<(Protocol, &'a str), BTreeSet<&'a str>>;

/// A [`Projection`] kept past its [`Announced`].
pub type OwnedProjection = BTreeMap<(Protocol, String), BTreeSet<String>>;

/// Whether `kept` says what `now` says.
pub fn same_projection(kept: &OwnedProjection, now: &Projection<'_>) -> bool {
    kept.len() == now.len()
        && kept.iter().zip(now).all(|((k1, v1), (k2, v2))| {
            k1.0 == k2.0
                && k1.1 == k2.1
                && v1.len() == v2.len()
                && v1.iter().zip(v2).all(|(a, b)| a == b)
        })
}

pub fn owned_projection(p: &Projection<'_>) -> OwnedProjection {
    p.iter()
        .map(|((protocol, key), items)| {
            let items = items.iter().map(|s| s.to_string()).collect();
            ((*protocol, key.to_string()), items)
        })
        .collect()
}

pub fn projection(announced: &Announced) -> Projection<'_> {
    let mut out: Projection<'_> = BTreeMap::new();
    let mut ifaces: BTreeMap<IpAddr, Vec<&str>> = BTreeMap::new();
    for (ip, iface) in &announced.l2 {
        ifaces.entry(*ip).or_default().push(iface.as_str());
    }
    if !ifaces.is_empty() {
        for d in &announced.plan.l2 {
            if let Some(names) = ifaces.get(&d.ip) {
                out.entry((Protocol::Layer2, d.service.as_str()))
                    .or_default()
                    .extend(names.iter().copied());
            }
        }
    }
    for route in &announced.plan.bgp {
        for svc in &route.services {
            out.entry((Protocol::Bgp, svc.as_str()))
                .or_default()
                .extend(route.peers.iter().map(String::as_str));
        }
    }
    out
}

/// The status objects this node should have, by name.
pub fn desired(node: &str, announced: &Announced) -> BTreeMap<String, StatusObject> {
    let mut out = BTreeMap::new();
    for ((protocol, key), items) in projection(announced) {
        let (service_namespace, service_name) = split_key(key);
        let object = StatusObject {
            protocol,
            name: object_name(protocol, node, key),
            node: node.to_string(),
            service_namespace,
            service_name,
            items: items.into_iter().map(str::to_string).collect(),
        };
        out.insert(object.name.clone(), object);
    }
    out
}

/// A Service this node started announcing: in layer 2 mode addresses it took over, in BGP
/// mode routes it began to send to its peers (every announcing node says so, as in MetalLB).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Takeover {
    pub protocol: Protocol,
    pub service_namespace: String,
    pub service_name: String,
    /// Layer 2: the addresses; BGP: the prefixes (an aggregate when the advertisement asks
    /// for one).
    pub announced: Vec<String>,
}

impl Takeover {
    /// The Event's note, MetalLB's wording plus what is announced.
    pub fn note(&self, node: &str) -> String {
        let protocol = match self.protocol {
            Protocol::Layer2 => "layer2",
            Protocol::Bgp => "bgp",
        };
        format!(
            "announcing from node \"{node}\" with protocol \"{protocol}\": {}",
            self.announced.join(", ")
        )
    }
}

/// Services announced in `now` but not in `before`, grouped by protocol and Service: L2
/// addresses newly answered for, BGP prefixes newly sent to at least one peer (a prefix that
/// only gains or loses a peer is no news).
pub fn takeovers(before: &Announced, now: &Announced) -> Vec<Takeover> {
    let old: BTreeSet<IpAddr> = before.l2.iter().map(|(ip, _)| *ip).collect();
    let gained: BTreeSet<IpAddr> = now
        .l2
        .iter()
        .map(|(ip, _)| *ip)
        .filter(|ip| !old.contains(ip))
        .collect();
    let mut by_service: BTreeMap<(Protocol, String), Vec<String>> = BTreeMap::new();
    for d in &now.plan.l2 {
        if gained.contains(&d.ip) {
            by_service
                .entry((Protocol::Layer2, d.service.clone()))
                .or_default()
                .push(d.ip.to_string());
        }
    }
    fn sent(announced: &Announced) -> BTreeSet<(&str, ipnet::IpNet)> {
        announced
            .plan
            .bgp
            .iter()
            .filter(|r| !r.peers.is_empty())
            .flat_map(|r| r.services.iter().map(move |s| (s.as_str(), r.prefix)))
            .collect()
    }
    // Most plans leave the routes as they were: nothing new to tell, nothing to collect.
    let same_routes = before.plan.bgp == now.plan.bgp;
    let old_routes = if same_routes {
        BTreeSet::new()
    } else {
        sent(before)
    };
    let new_routes = if same_routes {
        BTreeSet::new()
    } else {
        sent(now)
    };
    for (service, prefix) in new_routes.difference(&old_routes) {
        by_service
            .entry((Protocol::Bgp, service.to_string()))
            .or_default()
            .push(prefix.to_string());
    }
    by_service
        .into_iter()
        .map(|((protocol, key), announced)| {
            let (service_namespace, service_name) = split_key(&key);
            Takeover {
                protocol,
                service_namespace,
                service_name,
                announced,
            }
        })
        .collect()
}

/// The name of this node's ConfigurationState.
pub fn configuration_state_name(node: &str) -> String {
    format!("speaker-{node}")
}

fn now() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now())
}

/// The report with this node's own problems added: BGPPeers it cannot set up (an interface or
/// VRF it lacks, no router heard on a link). The configuration can be valid and still not run
/// in full here; the node's ConfigurationState says so.
pub fn with_node_problems(report: &ConfigReport, node_problems: &[String]) -> ConfigReport {
    match report {
        ConfigReport::Unknown => ConfigReport::Unknown,
        ConfigReport::Valid if node_problems.is_empty() => ConfigReport::Valid,
        ConfigReport::Valid => ConfigReport::Invalid(node_problems.to_vec()),
        ConfigReport::Invalid(errors) => {
            ConfigReport::Invalid(errors.iter().chain(node_problems).cloned().collect())
        }
    }
}

/// [`with_node_problems`] as the two change: the report the status writer follows.
pub fn merge_node_problems(
    mut config: tokio::sync::watch::Receiver<ConfigReport>,
    mut problems: tokio::sync::watch::Receiver<Vec<String>>,
) -> tokio::sync::watch::Receiver<ConfigReport> {
    let first = with_node_problems(&config.borrow_and_update(), &problems.borrow_and_update());
    let (tx, rx) = tokio::sync::watch::channel(first);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                r = config.changed() => if r.is_err() { return },
                r = problems.changed() => if r.is_err() { return },
            }
            let merged =
                with_node_problems(&config.borrow_and_update(), &problems.borrow_and_update());
            tx.send_if_modified(|old| {
                let changed = *old != merged;
                if changed {
                    *old = merged.clone();
                }
                changed
            });
            if tx.is_closed() {
                return;
            }
        }
    });
    rx
}

/// The ConfigurationState's status for a report (`None`: nothing to say yet): the result, every
/// problem, and a condition per object with problems.
pub fn configuration_status(report: &ConfigReport) -> Option<Value> {
    match report {
        ConfigReport::Unknown => None,
        ConfigReport::Valid => Some(json!({
            "result": "Valid",
            "conditions": ferrolb_config::state_conditions(&[], &now()),
        })),
        ConfigReport::Invalid(errors) => Some(json!({
            "result": "Invalid",
            "errorSummary": errors.join("\n"),
            "conditions": ferrolb_config::state_conditions(errors, &now()),
        })),
    }
}

#[cfg(test)]
mod tests;
