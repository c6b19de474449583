//! The soak's invariants, checked against what the cluster and the segment show while the
//! churn goes on. Each check knows what may legitimately be in flux: an address whose holder
//! changed a moment ago, the seconds after a node was lost or came back, the time a new
//! controller needs to take the lead. Outside those windows nothing may be off.

use super::churn::{Model, Shape};
use super::world::{POOL_BGP, POOL_SPARE, POOL_V4, POOL_V6};
use crate::lab::l2::{node_mac, node_name};
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// An address's holder must have been the same this long before its answers are judged.
pub const ADDRESS_SETTLE: Duration = Duration::from_secs(4);
/// After a speaker stops or starts (or a node's link changes): membership's verdict, the
/// rejoin hold-down (3 s) and the make-before-break hand-back.
pub const NODE_SETTLE: Duration = Duration::from_secs(6);
/// BGP after a speaker stops or starts: the router's hold timer (3 s) for a node lost, the
/// session back and the routes sent for one that returns.
pub const BGP_SETTLE: Duration = Duration::from_secs(10);
/// After a controller restart or an API server outage: the new leader's Lease, its lists,
/// its allocations.
pub const CONTROL_SETTLE: Duration = Duration::from_secs(12);
/// After the API server is back: every watcher (the speakers', the checker's own) relists, each
/// at its own moment, so for a while they disagree on what exists (a Service deleted just
/// before the outage is gone for a speaker whose lists came back first and still held for the
/// checker). Addresses are judged again once all have relisted.
pub const RELIST_SETTLE: Duration = Duration::from_secs(5);
/// A Service the soak just changed: the controller's time to act on it.
pub const SERVICE_SETTLE: Duration = Duration::from_secs(10);
/// Status objects of deleted Services and of stopped speakers must be gone by then.
pub const CLEANUP: Duration = Duration::from_secs(6);

/// Node names are looked up among this many.
const MAX_NODES: usize = 64;

/// What the cluster holds at one moment, with the recent history the checks need
/// ([`super::observed`]).
pub struct Snapshot {
    /// Every Service of the soak that has addresses, and its addresses.
    pub services: BTreeMap<String, Vec<IpAddr>>,
    /// ServiceL2Status objects: (Service, node).
    pub l2_statuses: Vec<(String, String)>,
    /// When each address's holders last changed (never: since the start).
    pub address_changed: BTreeMap<IpAddr, Instant>,
    /// The nodes that may answer for each Service's addresses: those its ServiceL2Status
    /// objects name, and those that stopped within the release window.
    pub may_answer: BTreeMap<String, BTreeSet<String>>,
    /// Services announced by one node, the same for longer than the release window.
    pub settled_owner: BTreeMap<String, String>,
    pub statuses_ended: u64,
}

/// What was recently disturbed, for the windows above.
pub struct Calm {
    pub node_event: Option<Instant>,
    pub control_event: Option<Instant>,
    /// The API server is down (the control plane is not calm until it is back and settled).
    pub api_down: bool,
    /// When the API server last came back.
    pub api_back: Option<Instant>,
    /// Nodes whose speaker is not running, and since when.
    pub stopped: BTreeMap<usize, Instant>,
}

impl Calm {
    fn node_calm(&self, now: Instant) -> bool {
        self.node_event
            .is_none_or(|t| now.duration_since(t) >= NODE_SETTLE)
            && self.relisted(now)
    }

    fn bgp_calm(&self, now: Instant) -> bool {
        self.node_event
            .is_none_or(|t| now.duration_since(t) >= BGP_SETTLE)
            && self.relisted(now)
    }

    /// Every watcher has relisted since the API server came back ([`RELIST_SETTLE`]). While it
    /// is down all views stay as they were, and are judged.
    fn relisted(&self, now: Instant) -> bool {
        self.api_back
            .is_none_or(|t| now.duration_since(t) >= RELIST_SETTLE)
    }

    fn control_calm(&self, now: Instant) -> bool {
        !self.api_down
            && self
                .control_event
                .is_none_or(|t| now.duration_since(t) >= CONTROL_SETTLE)
    }
}

#[derive(Default)]
pub struct Checks {
    /// How many checks of each kind were made.
    pub made: BTreeMap<&'static str, u64>,
    pub violations: Vec<String>,
    /// Figures for the report that are not checks.
    pub figures: BTreeMap<&'static str, u64>,
    /// Each Service's addresses as last seen.
    last_ips: BTreeMap<String, Vec<IpAddr>>,
    started: Option<Instant>,
}

/// Every address of the L2 pools: the addresses asked about on the segment.
pub fn pool_addresses() -> BTreeSet<IpAddr> {
    addresses_of(&[POOL_V4, POOL_V6, POOL_SPARE])
}

fn addresses_of(pools: &[&str]) -> BTreeSet<IpAddr> {
    pools
        .iter()
        .filter_map(|p| p.parse::<IpNet>().ok())
        .flat_map(|net| net.hosts().chain([net.network(), net.broadcast()]))
        .collect()
}

impl Checks {
    fn count(&mut self, what: &'static str) {
        *self.made.entry(what).or_default() += 1;
    }

    fn violation(&mut self, now: Instant, what: String) {
        let at = self
            .started
            .map(|s| now.duration_since(s))
            .unwrap_or_default();
        self.violations
            .push(format!("at {:.1} s: {what}", at.as_secs_f64()));
    }

    /// Reads one snapshot of the cluster against the model.
    pub fn observe(&mut self, now: Instant, snap: &Snapshot, model: &Model, calm: &Calm) {
        self.started.get_or_insert(now);
        // Who holds what.
        let mut held: BTreeMap<IpAddr, BTreeSet<String>> = BTreeMap::new();
        for (svc, ips) in &snap.services {
            for ip in ips {
                held.entry(*ip).or_default().insert(svc.clone());
            }
        }
        for (ip, holders) in &held {
            self.count("address held by one Service or shared by allowed ones");
            let keys: BTreeSet<Option<String>> = holders
                .iter()
                .map(|s| model.services.get(s).and_then(|m| m.shape.sharing_key()))
                .collect();
            // A holder edited a moment ago may still show its old address (the controller
            // has not acted yet): judged once every holder has settled.
            let settled = holders.iter().all(|h| {
                model
                    .services
                    .get(h)
                    .is_none_or(|m| now.duration_since(m.changed_at) >= SERVICE_SETTLE)
            });
            if settled && holders.len() > 1 && (keys.len() > 1 || keys.contains(&None)) {
                self.violation(
                    now,
                    format!("{ip} held by {holders:?}, which may not share"),
                );
            }
            self.count("address inside a pool");
            let spare_recent = model
                .spare_changed_at
                .is_some_and(|t| now.duration_since(t) < SERVICE_SETTLE);
            let inside = [POOL_V4, POOL_V6, POOL_BGP]
                .iter()
                .chain((model.spare_pool || spare_recent).then_some(&POOL_SPARE))
                .filter_map(|p| p.parse::<IpNet>().ok())
                .any(|net| net.contains(ip));
            if !inside {
                self.violation(now, format!("{ip} held by {holders:?} is in no pool"));
            }
        }
        self.services(now, snap, model, calm);
        self.l2_statuses(now, snap, model, calm);
    }

    /// Addresses never change without a cause; Services that can always be served are.
    fn services(&mut self, now: Instant, snap: &Snapshot, model: &Model, calm: &Calm) {
        let spare_moved = model
            .spare_changed_at
            .is_some_and(|t| now.duration_since(t) < SERVICE_SETTLE);
        for (svc, m) in &model.services {
            let mut ips = snap.services.get(svc).cloned().unwrap_or_default();
            ips.sort();
            let settled = now.duration_since(m.changed_at) >= SERVICE_SETTLE;
            if let Some(before) = self.last_ips.get(svc).cloned() {
                self.count("addresses unchanged without a cause");
                if !before.is_empty() && before != ips && settled && !spare_moved {
                    self.violation(
                        now,
                        format!(
                            "Service {svc} ({:?}) went from {before:?} to {ips:?} without an edit",
                            m.shape
                        ),
                    );
                }
            }
            if m.shape.always_served() && settled && calm.control_calm(now) {
                self.count("Service served");
                let wanted = if m.shape == Shape::DualStack { 2 } else { 1 };
                if ips.len() != wanted {
                    self.violation(
                        now,
                        format!(
                            "Service {svc} ({:?}) has {ips:?} {:.0} s after its last change",
                            m.shape,
                            now.duration_since(m.changed_at).as_secs_f64()
                        ),
                    );
                }
            }
            if m.shape == Shape::BadAnnotation && m.fresh {
                self.count("bad annotation refused");
                if !ips.is_empty() {
                    self.violation(
                        now,
                        format!("Service {svc} was created with a bad annotation and got {ips:?}"),
                    );
                }
            }
            self.last_ips.insert(svc.clone(), ips);
        }
        self.last_ips.retain(|s, _| model.services.contains_key(s));
    }

    /// Status objects name only existing Services and running speakers.
    fn l2_statuses(&mut self, now: Instant, snap: &Snapshot, model: &Model, calm: &Calm) {
        for (svc, node) in &snap.l2_statuses {
            self.count("ServiceL2Status of an existing Service");
            let gone_for = if model.services.contains_key(svc) {
                None
            } else {
                Some(
                    model
                        .deleted
                        .get(svc)
                        .map_or(Duration::MAX, |at| now.duration_since(*at)),
                )
            };
            if gone_for.is_some_and(|d| d >= CLEANUP) {
                self.violation(
                    now,
                    format!("ServiceL2Status of deleted Service {svc} (node {node}) left behind"),
                );
            }
            self.count("ServiceL2Status of a running speaker");
            let stopped_for = (1..=MAX_NODES)
                .find(|i| node_name(*i) == *node)
                .and_then(|i| calm.stopped.get(&i))
                .map(|t| now.duration_since(*t));
            if stopped_for.is_some_and(|d| d >= CLEANUP) {
                self.violation(now, format!("ServiceL2Status of {svc} still names {node}, whose speaker stopped {:.0} s ago", stopped_for.unwrap_or_default().as_secs_f64()));
            }
        }
    }

    /// Judges who answered each address (`answers`: address -> MACs) against who holds it and
    /// which nodes the status objects name: an address held and settled is answered, only by
    /// nodes that announce it or just handed it over, and by exactly one once its owner has
    /// been the same for the release window; a free address is answered by nobody.
    pub fn answers(
        &mut self,
        now: Instant,
        answers: &BTreeMap<IpAddr, BTreeSet<String>>,
        snap: &Snapshot,
        nodes: usize,
        calm: &Calm,
    ) {
        self.started.get_or_insert(now);
        if !calm.node_calm(now) {
            return;
        }
        let mut holders: BTreeMap<IpAddr, BTreeSet<&String>> = BTreeMap::new();
        for (svc, ips) in &snap.services {
            for ip in ips {
                holders.entry(*ip).or_default().insert(svc);
            }
        }
        let node_of = |mac: &String| (1..=nodes).find(|i| node_mac(*i) == *mac).map(node_name);
        for (ip, macs) in answers {
            let settled = snap
                .address_changed
                .get(ip)
                .is_none_or(|t| now.duration_since(*t) >= ADDRESS_SETTLE);
            if !settled {
                continue;
            }
            let Some(holders) = holders.get(ip) else {
                self.count("free address unanswered");
                if !macs.is_empty() {
                    self.violation(
                        now,
                        format!("{ip} is held by no Service but answered by {macs:?}"),
                    );
                }
                continue;
            };
            self.count("held address answered");
            if macs.is_empty() {
                self.violation(
                    now,
                    format!("{ip} (held by {holders:?}) answered by nobody"),
                );
                continue;
            }
            let may: BTreeSet<&String> = holders
                .iter()
                .flat_map(|h| snap.may_answer.get(*h).into_iter().flatten())
                .collect();
            for mac in macs {
                self.count("answered only by a node that announces it");
                match node_of(mac) {
                    None => self.violation(now, format!("{ip} answered by {mac}, no node's MAC")),
                    Some(node) if !may.contains(&node) => self.violation(
                        now,
                        format!("{ip} (held by {holders:?}) answered by {node}, which no ServiceL2Status names (now or within the release window: {may:?})"),
                    ),
                    Some(_) => {}
                }
            }
            let settled_owner = holders.iter().all(|h| snap.settled_owner.contains_key(*h));
            if macs.len() > 1 {
                if settled_owner {
                    self.violation(now, format!("{ip} (held by {holders:?}, owner settled) answered by {} MACs {macs:?}", macs.len()));
                } else {
                    *self
                        .figures
                        .entry("address answered by two nodes within a hand-over's release grace")
                        .or_default() += 1;
                }
            }
        }
    }

    /// Judges the router's table (`rib`: prefix -> next hops) for the BGP pool: a held address
    /// settled for 4 s is routed over exactly the nodes whose speakers run (every node is
    /// eligible and has an endpoint), a free one not at all. Waits [`BGP_SETTLE`] after a
    /// speaker stops or starts.
    pub fn routes(
        &mut self,
        now: Instant,
        rib: &BTreeMap<String, Vec<String>>,
        snap: &Snapshot,
        nodes: usize,
        calm: &Calm,
    ) {
        self.started.get_or_insert(now);
        if !calm.bgp_calm(now) {
            return;
        }
        let running: Vec<String> = (1..=nodes)
            .filter(|i| !calm.stopped.contains_key(i))
            .map(|i| format!("192.0.2.{i}"))
            .collect();
        let held: BTreeSet<IpAddr> = snap.services.values().flatten().copied().collect();
        for ip in addresses_of(&[POOL_BGP]) {
            let settled = snap
                .address_changed
                .get(&ip)
                .is_none_or(|t| now.duration_since(*t) >= ADDRESS_SETTLE);
            if !settled {
                continue;
            }
            let hops = rib.get(&format!("{ip}/32")).cloned().unwrap_or_default();
            if held.contains(&ip) {
                self.count("BGP address routed over exactly the running nodes");
                if hops != running {
                    self.violation(now, format!("{ip}/32 at the router via {hops:?}, not every running node {running:?}"));
                }
            } else {
                self.count("free BGP address not routed");
                if !hops.is_empty() {
                    self.violation(
                        now,
                        format!("{ip}/32 is held by no Service but routed via {hops:?}"),
                    );
                }
            }
        }
    }
}
