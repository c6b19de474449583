//! `ferrolb-speaker plan`: the planner's decision for one node, from manifests, offline.

use crate::planner::{plan, Inputs, NodePlan};
use crate::view::{service_views, NodeView};
use ferrolb_config::files::load_config;
use k8s_openapi::api::core::v1::Service;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::PathBuf;

fn is_load_balancer(svc: &Service, lb_class: Option<&str>) -> bool {
    svc.spec.as_ref().is_some_and(|s| {
        s.type_.as_deref() == Some("LoadBalancer") && s.load_balancer_class.as_deref() == lb_class
    })
}

/// Reads manifests and plans for `node`, taking every Node in them as having a live speaker
/// unless `live` names the live ones. `Err` carries the configuration problems.
pub fn offline_plan(
    paths: &[PathBuf],
    node: &str,
    live: Option<&[String]>,
    lb_class: Option<&str>,
) -> Result<NodePlan, Vec<String>> {
    let (manifests, config) = load_config(paths, false)
        .map_err(|errors| errors.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    let nodes: Vec<NodeView> = manifests.nodes.iter().map(NodeView::of).collect();
    if !nodes.iter().any(|n| n.name == node) {
        return Err(vec![format!("Node/{node}: not found in the manifests")]);
    }
    let services: Vec<Service> = manifests
        .services
        .iter()
        .filter(|s| is_load_balancer(s, lb_class))
        .cloned()
        .collect();
    // File mode: a Service without EndpointSlices in the files serves everywhere.
    let views = crate::source::shared(service_views(&services, &manifests.endpoint_slices, false));
    let live_speakers: BTreeSet<String> = match live {
        Some(names) => names.iter().cloned().collect(),
        None => nodes.iter().map(|n| n.name.clone()).collect(),
    };
    Ok(plan(Inputs {
        config: &config,
        services: &views,
        nodes: &nodes,
        live_speakers: &live_speakers,
        this_node: node,
    }))
}

/// The decision as JSON: what this node announces by L2 and BGP, and what it does not, and why.
pub fn to_json(plan: &NodePlan, node: &str) -> Value {
    json!({
        "node": node,
        "l2": plan.l2.iter().map(|d| json!({
            "service": d.service,
            "ip": d.ip.to_string(),
            "owner": d.owner(),
            "announcedHere": d.owner() == Some(node),
            "ranking": d.ranking.iter().map(|n| &**n).collect::<Vec<&str>>(),
            "interfaces": d.interfaces,
            "virtualMAC": d.virtual_mac.then(|| crate::l2::vmac::virtual_mac(d.ip).to_string()),
        })).collect::<Vec<_>>(),
        "bgp": plan.bgp.iter().map(|r| json!({
            "prefix": r.prefix.to_string(),
            "services": r.services,
            "peers": &*r.peers,
            "communities": r.communities.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "localPref": r.local_pref,
        })).collect::<Vec<_>>(),
        "notAnnounced": plan.skipped.iter().map(|s| json!({
            "service": s.service,
            "ip": s.ip.map(|i| i.to_string()),
            "reason": s.reason,
        })).collect::<Vec<_>>(),
    })
}

/// The decision as text, one line per address.
pub fn to_table(plan: &NodePlan, node: &str) -> String {
    let mut out = String::new();
    for d in &plan.l2 {
        let verdict = if d.owner() == Some(node) {
            "ANNOUNCE"
        } else {
            "standby"
        };
        let interfaces = if d.interfaces.is_empty() {
            "all interfaces".to_string()
        } else {
            d.interfaces.join(",")
        };
        let interfaces = if d.virtual_mac {
            format!("{interfaces} from {}", crate::l2::vmac::virtual_mac(d.ip))
        } else {
            interfaces
        };
        out.push_str(&format!(
            "L2   {verdict:<8} {:<40} {:<16} owner {} (ranking {}) on {interfaces}\n",
            d.ip,
            d.service,
            d.owner().unwrap_or("-"),
            d.ranking.join(" > "),
        ));
    }
    for r in &plan.bgp {
        out.push_str(&format!(
            "BGP  ANNOUNCE {:<40} {:<16} to {}\n",
            r.prefix.to_string(),
            r.services.iter().cloned().collect::<Vec<_>>().join(","),
            r.peers.iter().cloned().collect::<Vec<_>>().join(","),
        ));
    }
    for s in &plan.skipped {
        out.push_str(&format!(
            "--   skip     {:<40} {:<16} {}\n",
            s.ip.map_or("-".to_string(), |i| i.to_string()),
            s.service,
            s.reason
        ));
    }
    out
}
