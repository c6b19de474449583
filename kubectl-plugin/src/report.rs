//! The reports, from a [`Snapshot`] alone (no I/O): what each pool has left, which address each
//! Service has and who announces it, and, for one Service, why it has no address or is not
//! announced. Reasons come from the code the components and the offline `plan` commands run
//! (the controller's allocator, the speakers' planner), so they use the same words.

use crate::snapshot::{Snapshot, Target};
use ferrolb_config::{in_force, Config, Resources};
use ferrolb_controller::allocator::service::is_ours;
use ferrolb_controller::plan::{align, allocation_config, plan_objects, PlanReport};
use ferrolb_crds::{AddressCount, ConfigurationResult};
use ferrolb_speaker::planner::{plan as plan_node, Inputs, NodePlan};
use ferrolb_speaker::view::{cluster_service_views, NodeView};
use k8s_openapi::api::core::v1::Service;
use kube::ResourceExt;
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// A family's use of a pool.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Usage {
    pub used: AddressCount,
    pub free: AddressCount,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PoolStatus {
    pub name: String,
    pub ipv4: Usage,
    pub ipv6: Usage,
    /// Why the pool is not in force (left out as invalid), if it is not.
    pub problem: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct L2Announcer {
    pub node: String,
    pub interfaces: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BgpAnnouncer {
    pub node: String,
    pub peers: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Announcers {
    pub layer2: Vec<L2Announcer>,
    pub bgp: Vec<BgpAnnouncer>,
}

impl Announcers {
    fn is_empty(&self) -> bool {
        self.layer2.is_empty() && self.bgp.is_empty()
    }

    fn text(&self) -> String {
        let mut parts = Vec::new();
        for a in &self.layer2 {
            if a.interfaces.is_empty() {
                parts.push(format!("L2 {}", a.node));
            } else {
                parts.push(format!("L2 {} ({})", a.node, a.interfaces.join(",")));
            }
        }
        if !self.bgp.is_empty() {
            let nodes: Vec<String> = self
                .bgp
                .iter()
                .map(|b| format!("{} ({})", b.node, b.peers.join(",")))
                .collect();
            parts.push(format!("BGP {}", nodes.join(", ")));
        }
        parts.join("; ")
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ServiceStatus {
    pub namespace: String,
    pub name: String,
    pub addresses: Vec<String>,
    pub pool: Option<String>,
    pub announced: Announcers,
    /// Why it has no address, or why it is not announced.
    pub problem: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ComponentState {
    pub name: String,
    pub result: String,
    pub problems: Vec<String>,
}

/// `kubectl ferrolb status`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct StatusReport {
    pub pools: Vec<PoolStatus>,
    pub services: Vec<ServiceStatus>,
    pub components: Vec<ComponentState>,
    /// Status objects that could not be read (left out of the rest), as `Kind/name: why`.
    pub unreadable: Vec<String>,
}

/// `kubectl ferrolb why`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct WhyReport {
    pub namespace: String,
    pub name: String,
    pub addresses: Vec<String>,
    pub pool: Option<String>,
    pub announced: Announcers,
    /// One line: the answer.
    pub verdict: String,
    /// What led to it, most important first.
    pub reasons: Vec<String>,
}

/// The snapshot, with the configuration built and planned as the components would.
pub struct Analysis<'a> {
    snapshot: &'a Snapshot,
    target: &'a Target,
    config: Config,
    config_problems: Vec<String>,
    plan: PlanReport,
    ours: Vec<Service>,
}

fn ingress_ips(svc: &Service) -> Vec<String> {
    svc.status
        .as_ref()
        .and_then(|s| s.load_balancer.as_ref())
        .and_then(|lb| lb.ingress.as_ref())
        .map(|ingress| ingress.iter().filter_map(|i| i.ip.clone()).collect())
        .unwrap_or_default()
}

fn pool_of(svc: &Service) -> Option<String> {
    ferrolb_crds::annotations::spellings(ferrolb_crds::annotations::IP_ALLOCATED_FROM_POOL)
        .iter()
        .find_map(|k| svc.annotations().get(k).cloned())
}

fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

impl<'a> Analysis<'a> {
    pub fn new(snapshot: &'a Snapshot, target: &'a Target) -> Self {
        // Nothing was in force before as far as the plugin knows: an invalid object is left
        // out, as on a component's first start (ConfigurationState tells what they kept).
        let outcome = in_force(
            &snapshot.resources,
            &Resources::default(),
            &snapshot.unreadable,
        );
        let config = allocation_config(&outcome);
        let mut config_problems: Vec<String> = snapshot
            .read_problems
            .iter()
            .map(ToString::to_string)
            .collect();
        config_problems.extend(outcome.report_lines());
        let lb_class = target.lb_class.as_deref();
        let ours: Vec<Service> = snapshot
            .services
            .iter()
            .filter(|s| is_ours(s, lb_class))
            .cloned()
            .collect();
        let plan = plan_objects(&config, &snapshot.namespaces, &ours, lb_class);
        Analysis {
            snapshot,
            target,
            config,
            config_problems,
            plan,
            ours,
        }
    }

    /// The announcers of one Service, from the speakers' status objects.
    fn announcers(&self, namespace: &str, name: &str) -> Announcers {
        let mut out = Announcers::default();
        for s in &self.snapshot.l2_statuses {
            let Some(st) = &s.status else { continue };
            if st.service_namespace.as_deref() == Some(namespace)
                && st.service_name.as_deref() == Some(name)
            {
                out.layer2.push(L2Announcer {
                    node: st.node.clone().unwrap_or_default(),
                    interfaces: st.interfaces.iter().map(|i| i.name.clone()).collect(),
                });
            }
        }
        for s in &self.snapshot.bgp_statuses {
            let Some(st) = &s.status else { continue };
            if st.service_namespace.as_deref() == Some(namespace)
                && st.service_name.as_deref() == Some(name)
            {
                let mut peers = st.peers.clone();
                peers.sort();
                out.bgp.push(BgpAnnouncer {
                    node: st.node.clone().unwrap_or_default(),
                    peers,
                });
            }
        }
        out.layer2.sort_by(|a, b| a.node.cmp(&b.node));
        out.bgp.sort_by(|a, b| a.node.cmp(&b.node));
        out
    }

    /// The controller's plan's reason for a Service without an address.
    fn allocation_problem(&self, namespace: &str, name: &str) -> Option<String> {
        self.plan
            .services
            .iter()
            .find(|p| p.namespace == namespace && p.name == name)
            .and_then(|p| p.error.clone())
    }

    /// Nodes whose speaker reported a ConfigurationState: taken as the live speakers.
    fn live_speakers(&self) -> BTreeSet<String> {
        self.snapshot
            .states
            .iter()
            .filter_map(|s| s.name_any().strip_prefix("speaker-").map(str::to_owned))
            .collect()
    }

    /// Every node's plan, as its speaker would make it.
    fn node_plans(&self) -> BTreeMap<String, NodePlan> {
        let nodes: Vec<NodeView> = self.snapshot.nodes.iter().map(NodeView::of).collect();
        let views = ferrolb_speaker::source::shared(cluster_service_views(
            &self.ours,
            &self.snapshot.endpoint_slices,
        ));
        let live = self.live_speakers();
        nodes
            .iter()
            .map(|n| {
                let plan = plan_node(Inputs {
                    config: &self.config,
                    services: &views,
                    nodes: &nodes,
                    live_speakers: &live,
                    this_node: &n.name,
                });
                (n.name.clone(), plan)
            })
            .collect()
    }

    /// Why a Service with addresses has no announcer, from the planner's decisions on every
    /// node, one line per finding.
    fn announcement_problems(
        &self,
        namespace: &str,
        name: &str,
        ips: &[String],
        plans: &BTreeMap<String, NodePlan>,
    ) -> Vec<String> {
        let service = key(namespace, name);
        let live = self.live_speakers();
        let mut out = Vec::new();
        if live.is_empty() {
            out.push(format!(
                "no speaker has reported: there is no ConfigurationState speaker-<node> in {}",
                self.target.namespace
            ));
        }
        for ip in ips {
            let mut l2_owner: Option<(String, Vec<String>)> = None;
            let mut bgp_nodes: BTreeMap<String, Vec<String>> = BTreeMap::new();
            let mut skipped: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (node, plan) in plans {
                for d in plan.l2.iter().filter(|d| d.service == service) {
                    if d.ip.to_string() == *ip {
                        if let Some(owner) = d.owner() {
                            l2_owner = Some((
                                owner.to_string(),
                                d.ranking.iter().map(|n| n.to_string()).collect(),
                            ));
                        }
                    }
                }
                for r in &plan.bgp {
                    if r.services.contains(&service) && r.prefix.contains(&ip_of(ip)) {
                        bgp_nodes
                            .entry(node.clone())
                            .or_default()
                            .extend(r.peers.iter().cloned());
                    }
                }
                for s in plan.skipped.iter().filter(|s| s.service == service) {
                    if s.ip.is_none_or(|i| i.to_string() == *ip) {
                        skipped
                            .entry(s.reason.clone())
                            .or_default()
                            .push(node.clone());
                    }
                }
            }
            if let Some((owner, ranking)) = l2_owner {
                out.push(format!(
                    "{ip}: L2: {owner} should announce it (ranking {}), but has not reported it \
                     (no ServiceL2Status): is its speaker running and ready?",
                    ranking.join(" > ")
                ));
            }
            if !bgp_nodes.is_empty() {
                let nodes: Vec<String> = bgp_nodes
                    .iter()
                    .map(|(n, p)| format!("{n} (to {})", p.join(",")))
                    .collect();
                out.push(format!(
                    "{ip}: BGP: {} should announce it, but none has reported it \
                     (no ServiceBGPStatus): are the sessions established?",
                    nodes.join(", ")
                ));
            }
            for (reason, mut nodes) in skipped {
                nodes.dedup();
                // Reasons that hold cluster-wide are said once; per-node ones name the nodes.
                if nodes.len() == plans.len() {
                    out.push(format!("{ip}: {reason}"));
                } else {
                    out.push(format!("{ip}: {reason} (on {})", nodes.join(", ")));
                }
            }
        }
        out
    }

    /// Problems in the components' ConfigurationStates and in the configuration as read.
    fn components(&self) -> Vec<ComponentState> {
        let mut out: Vec<ComponentState> = self
            .snapshot
            .states
            .iter()
            .map(|s| {
                let status = s.status.clone().unwrap_or_default();
                ComponentState {
                    name: s.name_any(),
                    result: match status.result {
                        Some(ConfigurationResult::Valid) => "Valid",
                        Some(ConfigurationResult::Invalid) => "Invalid",
                        _ => "Unknown",
                    }
                    .into(),
                    problems: status
                        .error_summary
                        .unwrap_or_default()
                        .lines()
                        .map(str::to_owned)
                        .collect(),
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    pub fn status(&self) -> StatusReport {
        let planned: BTreeMap<&str, &ferrolb_controller::plan::PoolPlan> = self
            .plan
            .pools
            .iter()
            .map(|p| (p.name.as_str(), p))
            .collect();
        // Every pool read, those left out as invalid too (Services may still hold their
        // addresses).
        let mut names: Vec<String> = self
            .snapshot
            .resources
            .pools
            .iter()
            .map(ResourceExt::name_any)
            .collect();
        names.sort();
        names.dedup();
        let pools = names
            .iter()
            .map(|name| {
                let problem = (!self.config.pools.contains_key(name)).then(|| {
                    let id = format!("IPAddressPool/{name}:");
                    let found: Vec<&str> = self
                        .config_problems
                        .iter()
                        .filter(|p| p.starts_with(&id))
                        .map(String::as_str)
                        .collect();
                    if found.is_empty() {
                        "left out as invalid".to_string()
                    } else {
                        format!("left out as invalid: {}", found.join("; "))
                    }
                });
                // The controller's own counts where it wrote them; the plan's otherwise.
                match (
                    self.snapshot.pool_status.get(name),
                    planned.get(name.as_str()),
                ) {
                    (Some(s), _) => PoolStatus {
                        name: name.clone(),
                        ipv4: Usage {
                            used: s.assigned_ipv4,
                            free: s.available_ipv4,
                        },
                        ipv6: Usage {
                            used: s.assigned_ipv6,
                            free: s.available_ipv6,
                        },
                        problem,
                    },
                    (None, Some(p)) => PoolStatus {
                        name: name.clone(),
                        ipv4: Usage {
                            used: p.assigned_ipv4,
                            free: p.available_ipv4,
                        },
                        ipv6: Usage {
                            used: p.assigned_ipv6,
                            free: p.available_ipv6,
                        },
                        problem,
                    },
                    (None, None) => PoolStatus {
                        name: name.clone(),
                        ipv4: Usage::default(),
                        ipv6: Usage::default(),
                        problem,
                    },
                }
            })
            .collect();
        let mut plans: Option<BTreeMap<String, NodePlan>> = None;
        let mut services = Vec::new();
        for svc in &self.ours {
            let namespace = svc.namespace().unwrap_or_default();
            let name = svc.name_any();
            let addresses = ingress_ips(svc);
            let announced = self.announcers(&namespace, &name);
            let problem = if addresses.is_empty() {
                Some(
                    self.allocation_problem(&namespace, &name)
                        .unwrap_or_else(|| "the controller has not written an address yet".into()),
                )
            } else if announced.is_empty() {
                let plans = plans.get_or_insert_with(|| self.node_plans());
                let found = self.announcement_problems(&namespace, &name, &addresses, plans);
                Some(
                    found
                        .into_iter()
                        .next()
                        .map(|p| format!("not announced: {p}"))
                        .unwrap_or_else(|| "not announced".into()),
                )
            } else {
                None
            };
            services.push(ServiceStatus {
                pool: pool_of(svc),
                namespace,
                name,
                addresses,
                announced,
                problem,
            });
        }
        services.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
        StatusReport {
            pools,
            services,
            components: self.components(),
            unreadable: self.snapshot.unreadable_status.clone(),
        }
    }

    /// Why `namespace/name` has the addresses and announcers it has (or none). `Err` when there
    /// is no such Service.
    pub fn why(&self, namespace: &str, name: &str) -> Result<WhyReport, String> {
        let svc = self
            .snapshot
            .services
            .iter()
            .find(|s| s.namespace().as_deref() == Some(namespace) && s.name_any() == name)
            .ok_or_else(|| format!("Service {namespace}/{name} not found"))?;
        let addresses = ingress_ips(svc);
        let mut report = WhyReport {
            namespace: namespace.into(),
            name: name.into(),
            addresses: addresses.clone(),
            pool: pool_of(svc),
            announced: self.announcers(namespace, name),
            verdict: String::new(),
            reasons: Vec::new(),
        };
        let lb_class = self.target.lb_class.as_deref();
        if !is_ours(svc, lb_class) {
            let spec = svc.spec.clone().unwrap_or_default();
            report.verdict = "not served by FerroLB".into();
            if spec.type_.as_deref() != Some("LoadBalancer") {
                report.reasons.push(format!(
                    "spec.type is {}, not LoadBalancer",
                    spec.type_.as_deref().unwrap_or("ClusterIP")
                ));
            } else {
                report.reasons.push(format!(
                    "spec.loadBalancerClass is {}; this FerroLB serves {}",
                    spec.load_balancer_class.as_deref().unwrap_or("unset"),
                    lb_class.map_or("Services without a class".into(), |c| format!(
                        "the class {c}"
                    ))
                ));
            }
            return Ok(report);
        }
        if svc.metadata.deletion_timestamp.is_some() {
            report.verdict = "being deleted: it keeps its addresses until it is gone".into();
            return Ok(report);
        }
        if addresses.is_empty() {
            match self.allocation_problem(namespace, name) {
                Some(reason) => {
                    report.verdict = format!("no address: {reason}");
                }
                None => {
                    let would = self
                        .plan
                        .services
                        .iter()
                        .find(|p| p.namespace == namespace && p.name == name);
                    report.verdict = "no address yet: the controller has not written one".into();
                    if let Some(p) = would {
                        report.reasons.push(format!(
                            "the configuration gives it {} from pool {}: is the controller \
                             running and leading?",
                            p.ips.join(","),
                            p.pool.as_deref().unwrap_or("-")
                        ));
                    }
                }
            }
            self.controller_findings(svc, &mut report.reasons);
            return Ok(report);
        }
        let plans = self.node_plans();
        if !report.announced.is_empty() {
            report.verdict = format!("announced: {}", report.announced.text());
            // The status objects are per Service, not per address: an address that no node's
            // plan announces (the IPv6 one of a dual-stack Service, say) is said here.
            let service = key(namespace, name);
            let unplanned: Vec<String> = addresses
                .iter()
                .filter(|text| {
                    let ip = ip_of(text);
                    !plans.values().any(|p| {
                        p.l2.iter()
                            .any(|d| d.service == service && d.ip == ip && d.owner().is_some())
                            || p.bgp
                                .iter()
                                .any(|r| r.services.contains(&service) && r.prefix.contains(&ip))
                    })
                })
                .cloned()
                .collect();
            if !unplanned.is_empty() {
                report.verdict = format!(
                    "announced: {}; but not {}",
                    report.announced.text(),
                    unplanned.join(",")
                );
                report.reasons = self.announcement_problems(namespace, name, &unplanned, &plans);
            }
            return Ok(report);
        }
        report.verdict = format!("has {} but is not announced", addresses.join(","));
        report.reasons = self.announcement_problems(namespace, name, &addresses, &plans);
        for c in self.components() {
            if c.name.starts_with("speaker-") && c.result != "Valid" {
                report.reasons.push(format!(
                    "ConfigurationState {} is {}: {}",
                    c.name,
                    c.result,
                    c.problems.join("; ")
                ));
            }
        }
        Ok(report)
    }

    /// What the controller reported: its ConfigurationState, its newest Event on the Service.
    fn controller_findings(&self, svc: &Service, reasons: &mut Vec<String>) {
        let state = self
            .components()
            .into_iter()
            .find(|c| c.name == self.target.controller_state);
        match state {
            None => reasons.push(format!(
                "the controller has not reported: no ConfigurationState {} in {}",
                self.target.controller_state, self.target.namespace
            )),
            Some(c) if c.result != "Valid" => reasons.push(format!(
                "the controller's configuration is {}: {}",
                c.result,
                c.problems.join("; ")
            )),
            Some(_) => {}
        }
        if !self.config_problems.is_empty() {
            reasons.push(format!(
                "the configuration has problems (left out): {}",
                self.config_problems.join("; ")
            ));
        }
        let uid = svc.uid();
        let newest = self
            .snapshot
            .events
            .iter()
            .filter(|e| {
                e.regarding.as_ref().is_some_and(|r| {
                    r.kind.as_deref() == Some("Service")
                        && r.name.as_deref() == Some(svc.name_any().as_str())
                        && (uid.is_none() || r.uid == uid)
                })
            })
            .filter(|e| {
                e.reporting_controller
                    .as_deref()
                    .is_some_and(|c| c.contains("ferrolb"))
            })
            .max_by_key(|e| event_time(e));
        if let Some(e) = newest {
            reasons.push(format!(
                "the controller said ({}): {}",
                e.reason.as_deref().unwrap_or("-"),
                e.note.as_deref().unwrap_or("")
            ));
        }
    }
}

fn event_time(e: &k8s_openapi::api::events::v1::Event) -> String {
    e.series
        .as_ref()
        .map(|s| s.last_observed_time.0.to_string())
        .or_else(|| e.event_time.as_ref().map(|t| t.0.to_string()))
        .or_else(|| {
            e.metadata
                .creation_timestamp
                .as_ref()
                .map(|t| t.0.to_string())
        })
        .unwrap_or_default()
}

fn ip_of(text: &str) -> std::net::IpAddr {
    text.parse()
        .unwrap_or(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED))
}

impl StatusReport {
    pub fn table(&self) -> String {
        let mut out = String::new();
        let mut rows = vec![vec![
            "POOL".to_string(),
            "IPV4 USED".into(),
            "IPV4 FREE".into(),
            "IPV6 USED".into(),
            "IPV6 FREE".into(),
            "PROBLEM".into(),
        ]];
        for p in &self.pools {
            rows.push(vec![
                p.name.clone(),
                p.ipv4.used.to_string(),
                p.ipv4.free.to_string(),
                p.ipv6.used.to_string(),
                p.ipv6.free.to_string(),
                p.problem.clone().unwrap_or_default(),
            ]);
        }
        out.push_str(&align(&rows));
        out.push('\n');
        let mut rows = vec![vec![
            "NAMESPACE".to_string(),
            "NAME".into(),
            "ADDRESSES".into(),
            "POOL".into(),
            "ANNOUNCED BY".into(),
            "PROBLEM".into(),
        ]];
        for s in &self.services {
            rows.push(vec![
                s.namespace.clone(),
                s.name.clone(),
                if s.addresses.is_empty() {
                    "<none>".into()
                } else {
                    s.addresses.join(",")
                },
                s.pool.clone().unwrap_or_else(|| "-".into()),
                if s.announced.is_empty() {
                    "-".into()
                } else {
                    s.announced.text()
                },
                s.problem.clone().unwrap_or_default(),
            ]);
        }
        out.push_str(&align(&rows));
        out.push('\n');
        let mut rows = vec![vec![
            "COMPONENT".to_string(),
            "CONFIGURATION".into(),
            "PROBLEMS".into(),
        ]];
        for c in &self.components {
            rows.push(vec![
                c.name.clone(),
                c.result.clone(),
                c.problems.len().to_string(),
            ]);
        }
        out.push_str(&align(&rows));
        for u in &self.unreadable {
            out.push_str(&format!("unreadable, left out: {u}\n"));
        }
        out
    }
}

impl WhyReport {
    pub fn text(&self) -> String {
        let mut out = format!(
            "Service {}/{}: {}\n",
            self.namespace, self.name, self.verdict
        );
        if !self.addresses.is_empty() {
            out.push_str(&format!(
                "  addresses: {} (pool {})\n",
                self.addresses.join(","),
                self.pool.as_deref().unwrap_or("-")
            ));
        }
        for r in &self.reasons {
            out.push_str(&format!("  - {r}\n"));
        }
        out
    }
}
