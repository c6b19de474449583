//! The BGP adapter: owns the engine and the running peer set. On every plan it sets up, changes
//! and removes exactly the sessions whose settings changed ([`diff_peers`]) and hands each peer
//! its complete route set (the engine sends only the difference).
//!
//! - The engine starts lazily, with the first BGPPeer that selects this node, so L2-only
//!   clusters open no port 179.
//! - Peers set up by the first engine of this process carry the graceful-restart "restarting"
//!   flag, so routers that kept our routes through a restart keep forwarding to us until our
//!   End-of-RIB. On shutdown, peers with graceful restart are closed without a NOTIFICATION
//!   (routers keep our routes for the restart time); the others get a Cease.
//! - [`BgpStatus`] is the read side for metrics and status: per peer its name, address, state,
//!   the engine's counters and the number of routes it should hold.
//!
//! Passwords are never logged: only names, addresses and states are.

use super::draining::Draining;
use super::{diff_peers, node_peers, routes_per_peer, unnumbered_links, LinkState, PeerProblem};
use crate::planner::NodePlan;
use crate::source::Snapshot;
use ferrolb_bgp::bfd::BfdCounters;
use ferrolb_bgp::unnumbered::LinkWatch;
use ferrolb_bgp::{
    BgpEngine, EngineConfig, PeerConfig, PeerCounters, PeerKey, RouteAttributes, SessionEvent,
    SessionEventKind, SessionInfo, ShutdownMode, State,
};
use ipnet::IpNet;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch, Notify, RwLock};
use tracing::{info, info_span, warn, Instrument, Span};

/// Where the engine accepts connections from routers.
pub fn default_listen() -> Vec<SocketAddr> {
    vec![
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, 179)),
        SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, 179)),
    ]
}

/// The BGP identifier of a node: its InternalIP when that is IPv4, else a stable hash of its
/// name (IPv6-only nodes have no natural 32-bit identifier).
pub fn default_router_id(node: &str, internal_ip: Option<IpAddr>) -> Ipv4Addr {
    if let Some(IpAddr::V4(ip)) = internal_ip {
        return ip;
    }
    let digest = Sha256::digest(node.as_bytes());
    let id = u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]]);
    // 0.0.0.0 is not a valid identifier.
    Ipv4Addr::from(id.max(1))
}

/// One peer as the status API shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus {
    /// The BGPPeer's name.
    pub name: String,
    /// The address, scoped by link (unnumbered) or VRF.
    pub address: PeerKey,
    /// The session state; `None` before the engine has run the peer.
    pub state: Option<State>,
    /// The engine's counters (messages, updates, prefixes, NOTIFICATIONs, ...).
    pub counters: PeerCounters,
    /// Routes this node wants the peer to hold.
    pub routes: usize,
    /// What the running session negotiated.
    pub session: Option<SessionInfo>,
    /// Why the last session ended.
    pub last_down: Option<String>,
    /// The BFD session's counters when the peer has a BFDProfile (zero while the engine is
    /// being started or stopped); `None` without BFD.
    pub bfd: Option<BfdCounters>,
}

#[derive(Clone, Debug, Default)]
struct PeerEntry {
    name: String,
    routes: usize,
    bfd: bool,
    session: Option<SessionInfo>,
    last_down: Option<String>,
}

#[derive(Default)]
struct Shared {
    engine: RwLock<Option<BgpEngine>>,
    peers: Mutex<BTreeMap<PeerKey, PeerEntry>>,
    /// Peers this node cannot set up, one line each (`BGPPeer/name: field: why`).
    problems: watch::Sender<Vec<String>>,
}

/// Read side of the BGP adapter; cheap to clone, usable from any thread.
#[derive(Clone, Default)]
pub struct BgpStatus {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for BgpStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BgpStatus").finish_non_exhaustive()
    }
}

impl BgpStatus {
    /// Every configured peer of this node, by address. Counters are zero while the engine is
    /// being started or stopped.
    pub fn peers(&self) -> Vec<PeerStatus> {
        let entries = self.shared.peers.lock().unwrap_or_else(|e| e.into_inner());
        let engine = self.shared.engine.try_read().ok();
        let engine = engine.as_ref().and_then(|g| g.as_ref());
        entries
            .iter()
            .map(|(key, e)| {
                let counters = engine.and_then(|en| en.counters(key)).unwrap_or_default();
                let bfd = e.bfd.then(|| {
                    engine
                        .and_then(|en| en.bfd_counters(key))
                        .unwrap_or_default()
                });
                PeerStatus {
                    name: e.name.clone(),
                    address: key.clone(),
                    state: counters.state,
                    counters,
                    routes: e.routes,
                    session: e.session.clone(),
                    last_down: e.last_down.clone(),
                    bfd,
                }
            })
            .collect()
    }

    /// The BGPPeers this node cannot set up (`BGPPeer/name: field: why`), for its
    /// ConfigurationState; the receiver sees every change.
    pub fn problems(&self) -> watch::Receiver<Vec<String>> {
        self.shared.problems.subscribe()
    }

    /// Whether the engine runs (it starts with the first peer that selects this node).
    pub fn engine_running(&self) -> bool {
        self.shared
            .engine
            .try_read()
            .map(|g| g.is_some())
            .unwrap_or(true)
    }

    fn entry_name(&self, key: &PeerKey) -> String {
        let peers = self.shared.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers.get(key).map(|e| e.name.clone()).unwrap_or_default()
    }
}

/// Whether only the BFD intervals or multiplier differ (the engine keeps the session then).
fn bfd_timers_only(old: &PeerConfig, new: &PeerConfig) -> bool {
    let (Some(a), Some(b)) = (old.bfd, new.bfd) else {
        return false;
    };
    let mut same = new.clone();
    same.bfd = Some(ferrolb_bgp::BfdConfig {
        receive_interval: a.receive_interval,
        transmit_interval: a.transmit_interval,
        detect_multiplier: a.detect_multiplier,
        ..b
    });
    same == *old && a != b
}

fn peer_span(name: &str, key: &PeerKey) -> Span {
    info_span!("bgp_peer", peer = %name, address = %key)
}

/// How often peers that wait for something on the node (an interface, a VRF, a router on a
/// link) are looked at again.
const RETRY_WAITING: Duration = Duration::from_secs(2);

/// The speaker's BGP side.
pub struct BgpDriver {
    node: String,
    listen: Vec<SocketAddr>,
    status: BgpStatus,
    /// Peers handed to the engine, by key: the BGPPeer's name and the settings.
    running: BTreeMap<PeerKey, (String, PeerConfig)>,
    /// The route set last given to each peer.
    routes: BTreeMap<PeerKey, Vec<(IpNet, RouteAttributes)>>,
    /// The links of unnumbered peers being watched for their router, and why one could not
    /// be watched.
    links: BTreeMap<String, Result<LinkWatch, String>>,
    /// Woken when a watched link hears a (new) router.
    wake: Arc<Notify>,
    /// Some peer waits for something on the node: look again in a while.
    waiting: bool,
    /// How long routes that leave are sent with the GRACEFUL_SHUTDOWN community before they
    /// are withdrawn (RFC 8326), on the way out too; zero: withdrawn at once.
    graceful_shutdown: Duration,
    draining: Draining,
    /// The node is cordoned or gone: a stop now is a removal, not a restart.
    leaving: bool,
    /// Prefixes of the last plan whose Services are all externalTrafficPolicy Local, with
    /// those Services.
    local_only: BTreeMap<IpNet, BTreeSet<String>>,
    /// Peers no longer wanted, kept until their routes have drained (graceful shutdown).
    retiring: BTreeSet<PeerKey>,
    /// Problems already logged, so a plan that repeats them stays quiet.
    logged_problems: BTreeSet<PeerProblem>,
    /// No engine has run in this process yet: peers are set up as after a restart.
    first_start: bool,
}

impl std::fmt::Debug for BgpDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BgpDriver")
            .field("node", &self.node)
            .field("peers", &self.running.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl BgpDriver {
    /// A driver for `node` that publishes into `status`; listens on [`default_listen`].
    pub fn new(node: &str, status: BgpStatus) -> Self {
        Self::with_listen(node, status, default_listen())
    }

    /// As [`BgpDriver::new`] with other listen addresses (empty: connect only).
    pub fn with_listen(node: &str, status: BgpStatus, listen: Vec<SocketAddr>) -> Self {
        BgpDriver {
            node: node.to_owned(),
            listen,
            status,
            running: BTreeMap::new(),
            routes: BTreeMap::new(),
            logged_problems: BTreeSet::new(),
            first_start: true,
            links: BTreeMap::new(),
            wake: Arc::default(),
            waiting: false,
            graceful_shutdown: Duration::ZERO,
            draining: Draining::default(),
            leaving: false,
            local_only: BTreeMap::new(),
            retiring: BTreeSet::new(),
        }
    }

    /// Routes that leave, and every route when the speaker stops for good, are drained for
    /// `time` with the GRACEFUL_SHUTDOWN community before they are withdrawn (RFC 8326).
    pub fn with_graceful_shutdown(mut self, time: Duration) -> Self {
        self.graceful_shutdown = time;
        self
    }

    /// Watches the links of the unnumbered peers that select this node, stops watching the
    /// others, and says what each link's router is.
    fn watch_links(&mut self, wanted: BTreeSet<String>) -> BTreeMap<String, LinkState> {
        self.links.retain(|name, _| wanted.contains(name));
        let mut states = BTreeMap::new();
        for name in wanted {
            let retry = match self.links.get(&name) {
                None | Some(Err(_)) => true,
                Some(Ok(w)) => !w.is_running(),
            };
            if retry {
                let started = LinkWatch::start(&name).map_err(|e| e.to_string());
                if let Ok(w) = &started {
                    let mut changes = w.subscribe();
                    let wake = self.wake.clone();
                    tokio::spawn(async move {
                        while changes.changed().await.is_ok() {
                            wake.notify_one();
                        }
                        // The watch ended (its interface went away): look again at once.
                        wake.notify_one();
                    });
                }
                self.links.insert(name.clone(), started);
            }
            let state = match &self.links[&name] {
                Ok(w) => w.router().map_or(LinkState::Waiting, LinkState::Router),
                Err(why) => LinkState::Failed(why.clone()),
            };
            states.insert(name, state);
        }
        states
    }

    /// The peers this node should run now, with next hops filled in.
    fn wanted(&mut self, snapshot: &Snapshot) -> BTreeMap<PeerKey, (String, PeerConfig)> {
        let Some(node) = snapshot.nodes.iter().find(|n| n.name == self.node) else {
            // Deleted: a stop from now on is a removal.
            self.leaving = true;
            self.links.clear();
            self.waiting = false;
            self.status.shared.problems.send_if_modified(|old| {
                let had = !old.is_empty();
                old.clear();
                had
            });
            return BTreeMap::new();
        };
        self.leaving = node.unschedulable;
        let router_id = default_router_id(&self.node, snapshot.node_ips.get(&self.node).copied());
        let links = self.watch_links(unnumbered_links(&snapshot.config, node));
        let (mut peers, mut problems) =
            node_peers(&snapshot.config, node, Some(router_id), false, &links);
        // A VRF that is not (yet) on this node: the session would run in the default VRF.
        peers.retain(|_, (name, c)| match &c.vrf {
            Some(vrf) if ferrolb_bgp::if_index(vrf).is_err() => {
                problems.push(PeerProblem {
                    peer: name.clone(),
                    reason: format!("spec.vrf: no VRF device {vrf} on this node"),
                });
                false
            }
            _ => true,
        });
        // Whatever a peer waits for on the node may appear: look again.
        self.waiting = problems
            .iter()
            .any(|p| p.reason.starts_with("spec.interface") || p.reason.starts_with("spec.vrf"));
        let problems: BTreeSet<PeerProblem> = problems.into_iter().collect();
        for p in problems.difference(&self.logged_problems) {
            warn!(peer = %p.peer, reason = %p.reason, "BGPPeer not set up on this node");
        }
        let lines: Vec<String> = problems
            .iter()
            .map(|p| format!("BGPPeer/{}: {}", p.peer, p.reason))
            .collect();
        self.status.shared.problems.send_if_modified(|old| {
            let changed = *old != lines;
            if changed {
                old.clone_from(&lines);
            }
            changed
        });
        self.logged_problems = problems;
        let node_v4 = match snapshot.node_ips.get(&self.node) {
            Some(IpAddr::V4(a)) => Some(*a),
            _ => None,
        };
        for (key, (_, c)) in peers.iter_mut() {
            match (key.address, &c.interface) {
                // Unnumbered: IPv4 routes with an IPv6 next hop (RFC 8950), a global address of
                // the link where it has one, else our link-local address on it.
                (_, Some(link)) => c.next_hop_v6 = super::nexthop::global_v6_on(link),
                // IPv6 routes over an IPv4 session need an IPv6 next hop of our own; the main
                // table does not say which interface leads to a peer in a VRF, so none there.
                (IpAddr::V4(v4), None) if c.next_hop_v6.is_none() && c.vrf.is_none() => {
                    c.next_hop_v6 = super::nexthop::v6_next_hop(v4);
                }
                // IPv4 routes over an IPv6 session: the node's IPv4 InternalIP (not in a VRF,
                // where that address is not the VRF's; RFC 8950 carries them there).
                (IpAddr::V6(_), None) if c.next_hop_v4.is_none() && c.vrf.is_none() => {
                    c.next_hop_v4 = node_v4
                }
                _ => {}
            }
        }
        peers
    }

    /// Brings the sessions and routes in line with `snapshot` and `plan`.
    pub async fn apply(&mut self, snapshot: &Snapshot, plan: &NodePlan) {
        let wanted = self.wanted(snapshot);
        if wanted.is_empty() && self.running.is_empty() {
            return;
        }
        if !self.ensure_engine(snapshot).await {
            return;
        }
        let running: BTreeMap<PeerKey, PeerConfig> = self
            .running
            .iter()
            .map(|(k, (_, c))| (k.clone(), c.clone()))
            .collect();
        let plain: BTreeMap<PeerKey, PeerConfig> = wanted
            .iter()
            .map(|(k, (_, c))| (k.clone(), c.clone()))
            .collect();
        let changes = diff_peers(&running, &plain);
        let guard = self.status.shared.engine.read().await;
        let Some(engine) = guard.as_ref() else { return };

        // Wanted again before its routes had drained: it simply stays.
        self.retiring.retain(|k| !wanted.contains_key(k));
        for key in &changes.remove {
            let name = self
                .running
                .get(key)
                .map(|r| r.0.clone())
                .unwrap_or_default();
            // With graceful shutdown a peer that goes keeps its session until its routes have
            // drained (RFC 8326: sent with 65535:0, then withdrawn), then ends it.
            let has_routes = self.routes.get(key).is_some_and(|r| !r.is_empty());
            if !self.graceful_shutdown.is_zero() && has_routes {
                if self.retiring.insert(key.clone()) {
                    info!(peer = %name, address = %key, "peer no longer wanted: its routes drain before the session ends");
                }
                continue;
            }
            self.retiring.remove(key);
            async {
                match engine.remove_peer(key).await {
                    Ok(()) => info!("peer removed"),
                    Err(e) => warn!(error = %e, "removing the peer failed"),
                }
            }
            .instrument(peer_span(&name, key))
            .await;
            self.running.remove(key);
            self.routes.remove(key);
            self.draining.forget(key);
        }
        for c in &changes.update {
            let key = c.key();
            let name = wanted[&key].0.clone();
            let timers_only = self
                .running
                .get(&key)
                .is_some_and(|(_, old)| bfd_timers_only(old, c));
            let updated = async {
                match engine.update_peer(c.clone()).await {
                    Ok(()) if timers_only => {
                        // The engine moves the running BFD session to them (Poll sequence).
                        info!("BFD timers changed; BGP session kept");
                        true
                    }
                    Ok(()) => {
                        info!("peer settings changed; session restarted");
                        true
                    }
                    Err(e) => {
                        warn!(error = %e, "changing the peer failed");
                        false
                    }
                }
            }
            .instrument(peer_span(&name, &key))
            .await;
            if updated {
                self.running.insert(key, (name, c.clone()));
            } else if !engine.peers().contains(&key) {
                // The engine dropped the old session: set the peer up anew on the next plan.
                self.running.remove(&key);
                self.routes.remove(&key);
                // Its drain deadlines would otherwise wake the driver at once, forever.
                self.draining.forget(&key);
            }
        }
        for c in &changes.add {
            let key = c.key();
            let name = wanted[&key].0.clone();
            let mut c = c.clone();
            if let Some(gr) = c.graceful_restart.as_mut() {
                gr.restarting = self.first_start;
            }
            let _span = peer_span(&name, &key).entered();
            match engine.add_peer(c.clone()) {
                Ok(()) => {
                    info!(
                        peer_asn = c.peer_asn,
                        any_external_asn = c.any_external_asn,
                        port = c.port,
                        hold = c.hold_time,
                        md5 = c.md5_password.is_some(),
                        graceful_restart = c.graceful_restart.is_some(),
                        "peer added"
                    );
                    self.running.insert(key, (name, c));
                }
                // Not running: tried again on the next plan.
                Err(e) => warn!(error = %e, "adding the peer failed"),
            }
        }
        // A name can change without the settings changing.
        for (key, (name, _)) in &wanted {
            if let Some(r) = self.running.get_mut(key) {
                r.0.clone_from(name);
            }
        }

        // Retiring peers get no route from the plan (another peer may carry their name now:
        // a BGPPeer whose address changed), so everything they had drains.
        let active: BTreeMap<PeerKey, (String, PeerConfig)> = self
            .running
            .iter()
            .filter(|(k, _)| !self.retiring.contains(*k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let mut routes = routes_per_peer(plan, &active, !self.graceful_shutdown.is_zero());
        for key in &self.retiring {
            routes.insert(key.clone(), Vec::new());
        }
        // Routes that leave with nothing behind them any more go at once: the last plan's
        // externalTrafficPolicy Local routes whose prefix is no longer planned and whose
        // Services no longer serve on this node. (One that leaves for another reason, the
        // exclusion label say, while its endpoints still serve here, drains as any other.)
        let planned: BTreeSet<IpNet> = plan.bgp.iter().map(|r| r.prefix).collect();
        let serves_here = |key: &String| {
            snapshot
                .services
                .iter()
                .any(|s| &s.key == key && s.serving.on(&self.node))
        };
        let at_once: BTreeSet<IpNet> = self
            .local_only
            .iter()
            .filter(|(p, services)| !planned.contains(p) && !services.iter().any(serves_here))
            .map(|(p, _)| *p)
            .collect();
        self.local_only = plan
            .bgp
            .iter()
            .filter(|r| r.local_only)
            .map(|r| (r.prefix, r.services.clone()))
            .collect();
        let now = std::time::Instant::now();
        for (key, set) in routes {
            // Routes that leave stay a while, marked for graceful shutdown.
            let set = self.draining.routes(
                &key,
                set,
                self.routes.get(&key).map(Vec::as_slice),
                &at_once,
                now,
                self.graceful_shutdown,
            );
            if self.routes.get(&key) == Some(&set) {
                continue;
            }
            let name = self.running[&key].0.clone();
            let _span = peer_span(&name, &key).entered();
            match engine.set_routes(&key, set.clone()) {
                Ok(()) => {
                    let draining = set
                        .iter()
                        .filter(|(_, a)| a.communities.contains(&ferrolb_bgp::GRACEFUL_SHUTDOWN))
                        .count();
                    info!(routes = set.len(), draining, "routes set");
                    self.routes.insert(key, set);
                }
                Err(e) => warn!(error = %e, "setting the routes failed"),
            }
        }
        // Deadlines of peers no longer running cannot be met: drop them.
        let running_keys: BTreeSet<PeerKey> = self.running.keys().cloned().collect();
        self.draining.keep_only(&running_keys);
        // Retiring peers whose routes have drained: their sessions end now.
        let drained: Vec<PeerKey> = self
            .retiring
            .iter()
            .filter(|k| self.routes.get(*k).is_none_or(Vec::is_empty))
            .cloned()
            .collect();
        for key in drained {
            let name = self
                .running
                .get(&key)
                .map(|r| r.0.clone())
                .unwrap_or_default();
            async {
                match engine.remove_peer(&key).await {
                    Ok(()) => info!("peer removed after its routes drained"),
                    Err(e) => warn!(error = %e, "removing the peer failed"),
                }
            }
            .instrument(peer_span(&name, &key))
            .await;
            self.retiring.remove(&key);
            self.running.remove(&key);
            self.routes.remove(&key);
            self.draining.forget(&key);
        }
        drop(guard);
        if !self.running.is_empty() {
            self.first_start = false;
        }
        self.publish();
    }

    /// Updates the status entries from the running set.
    fn publish(&self) {
        let mut entries = self
            .status
            .shared
            .peers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        entries.retain(|k, _| self.running.contains_key(k));
        for (key, (name, c)) in &self.running {
            let e = entries.entry(key.clone()).or_default();
            e.name.clone_from(name);
            e.bfd = c.bfd.is_some();
            e.routes = self.routes.get(key).map_or(0, Vec::len);
        }
    }

    /// Starts the engine if it does not run; false when it cannot start (logged).
    async fn ensure_engine(&mut self, snapshot: &Snapshot) -> bool {
        let mut guard = self.status.shared.engine.write().await;
        if guard.is_some() {
            return true;
        }
        let router_id = default_router_id(&self.node, snapshot.node_ips.get(&self.node).copied());
        // Without IPv6 in the namespace the [::] listener fails; IPv4 alone still serves.
        let mut attempts = vec![self.listen.clone()];
        attempts.push(
            self.listen
                .iter()
                .copied()
                .filter(|a| a.is_ipv4())
                .collect(),
        );
        // Without the right to bind port 179 (NET_BIND_SERVICE), or with it taken: connect
        // out only, which is how most routers are configured to meet us anyway.
        if !self.listen.is_empty() {
            attempts.push(Vec::new());
        }
        let mut last_error = None;
        for listen in attempts {
            match BgpEngine::start(EngineConfig {
                router_id,
                listen: listen.clone(),
            })
            .await
            {
                Ok((engine, events)) => {
                    if listen.is_empty() && !self.listen.is_empty() {
                        warn!(error = ?last_error, wanted = ?self.listen, "cannot listen for BGP connections; connecting out only");
                    }
                    info!(%router_id, listen = ?listen, "BGP engine started");
                    tokio::spawn(log_events(events, self.status.clone()));
                    *guard = Some(engine);
                    return true;
                }
                Err(e) => last_error = Some(e),
            }
        }
        if let Some(e) = last_error {
            warn!(error = %e, listen = ?self.listen, "the BGP engine cannot start; retrying on the next change");
        }
        false
    }

    /// Ends every session. A restart (the node is neither cordoned nor gone) closes peers with
    /// graceful restart without NOTIFICATION, so routers keep our routes while we restart.
    /// Every other session (all of them when the node is being removed) first has its routes
    /// drained for the graceful-shutdown time, when one is set (RFC 8326: sent again with the
    /// GRACEFUL_SHUTDOWN community, so routers move the traffic while this node still
    /// forwards), then ends with a Cease.
    pub async fn shutdown(&mut self) {
        let Some(engine) = self.status.shared.engine.write().await.take() else {
            return;
        };
        let restart = !self.leaving;
        let kept: Vec<PeerKey> = self
            .running
            .iter()
            // A retiring peer is going for good: it gets a Cease, not a stale path at the
            // router that no restarted speaker would ever refresh.
            .filter(|(k, (_, c))| {
                restart && c.graceful_restart.is_some() && !self.retiring.contains(*k)
            })
            .map(|(k, _)| k.clone())
            .collect();
        let ended: Vec<(PeerKey, String)> = self
            .running
            .iter()
            .filter(|(k, _)| !kept.contains(k))
            .map(|(k, (name, _))| (k.clone(), name.clone()))
            .collect();
        info!(
            removal = !restart,
            graceful_restart = kept.len(),
            ended = ended.len(),
            graceful_shutdown = ?self.graceful_shutdown,
            "stopping the BGP engine"
        );
        if !self.graceful_shutdown.is_zero() {
            let mut drained = 0;
            for (key, name) in &ended {
                let routes: Vec<_> = self
                    .routes
                    .get(key)
                    .map(|r| r.iter().map(|(p, a)| (*p, a.graceful_shutdown())).collect())
                    .unwrap_or_default();
                if routes.is_empty() {
                    continue;
                }
                let _span = peer_span(name, key).entered();
                drained += routes.len();
                if let Err(e) = engine.set_routes(key, routes) {
                    warn!(error = %e, "routes not marked for graceful shutdown");
                }
            }
            if drained > 0 {
                info!(routes = drained, time = ?self.graceful_shutdown, "graceful shutdown: routes sent with 65535:0, withdrawn when the time is up");
                tokio::time::sleep(self.graceful_shutdown).await;
            }
        }
        let mode = if kept.is_empty() {
            ShutdownMode::Cease(Some("ferrolb-speaker stopping".into()))
        } else {
            for (key, name) in &ended {
                let _ = engine
                    .remove_peer(key)
                    .instrument(peer_span(name, key))
                    .await;
            }
            ShutdownMode::GracefulRestart
        };
        engine.shutdown(mode).await;
        self.running.clear();
        self.routes.clear();
        self.links.clear();
        self.draining = Draining::default();
        self.retiring.clear();
        self.publish();
    }
}

/// The BGP driver in a task of its own, so that engine calls that wait on a session (a
/// peer's removal, a settings change) never hold up the L2 data plane in the run loop. Only the
/// newest plan counts: plans that arrive while one is being applied are coalesced.
#[derive(Debug)]
pub struct BgpTask {
    plans: watch::Sender<Option<(Arc<Snapshot>, Arc<NodePlan>)>>,
    task: tokio::task::JoinHandle<()>,
}

impl BgpTask {
    /// Hands the driver the newest snapshot and plan; never waits.
    pub fn apply(&self, snapshot: Arc<Snapshot>, plan: Arc<NodePlan>) {
        self.plans.send_replace(Some((snapshot, plan)));
    }

    /// Stops taking plans, then shuts the engine down as [`BgpDriver::shutdown`] does.
    pub async fn shutdown(self) {
        drop(self.plans);
        if let Err(e) = self.task.await {
            warn!(error = %e, "the BGP driver task ended abnormally");
        }
    }
}

impl BgpDriver {
    /// Runs the driver in its own task; see [`BgpTask`].
    pub fn spawn(mut self) -> BgpTask {
        let (plans, mut rx) = watch::channel::<Option<(Arc<Snapshot>, Arc<NodePlan>)>>(None);
        let task = tokio::spawn(async move {
            let wake = self.wake.clone();
            loop {
                // A new plan; or, for the newest one, a router heard on a link, a retry of
                // peers that wait for an interface, a VRF or a router, or a drained route's
                // time up.
                let drained = self.draining.next_deadline();
                tokio::select! {
                    changed = rx.changed() => if changed.is_err() { break },
                    _ = wake.notified() => {}
                    _ = tokio::time::sleep(RETRY_WAITING), if self.waiting => {}
                    _ = crate::wait::sleep_until_opt(drained.map(Into::into)) => {}
                }
                let latest = rx.borrow_and_update().clone();
                if let Some((snapshot, plan)) = latest {
                    self.apply(&snapshot, &plan).await;
                }
            }
            self.shutdown().await;
        });
        BgpTask { plans, task }
    }
}

/// Logs session events with the peer's name and keeps the status entries current.
async fn log_events(mut events: mpsc::UnboundedReceiver<SessionEvent>, status: BgpStatus) {
    while let Some(ev) = events.recv().await {
        let name = status.entry_name(&ev.peer);
        let span = peer_span(&name, &ev.peer);
        let _e = span.enter();
        let mut peers = status
            .shared
            .peers
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        match ev.kind {
            SessionEventKind::Up(info) => {
                info!(
                    peer_asn = info.peer_asn,
                    peer_router_id = %info.peer_router_id,
                    local_address = %info.local_address,
                    hold = info.hold_time,
                    graceful_restart = info.graceful_restart,
                    "BGP session established"
                );
                // The entry may not be published yet when a session comes up at once; the
                // next publish fills in the name (and drops it if the peer is gone).
                peers.entry(ev.peer).or_default().session = Some(info);
            }
            SessionEventKind::Down(reason) => {
                warn!(%reason, "BGP session down");
                if let Some(e) = peers.get_mut(&ev.peer) {
                    e.session = None;
                    e.last_down = Some(reason.to_string());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn router_id_is_the_ipv4_internal_ip_or_a_stable_hash() {
        let v4: IpAddr = "192.0.2.7".parse().unwrap();
        assert_eq!(
            default_router_id("n1", Some(v4)),
            Ipv4Addr::new(192, 0, 2, 7)
        );
        let v6: IpAddr = "2001:db8::7".parse().unwrap();
        let a = default_router_id("n1", Some(v6));
        assert_eq!(a, default_router_id("n1", None), "stable");
        assert_ne!(a, default_router_id("n2", None));
        assert!(!a.is_unspecified());
    }

    #[test]
    fn only_new_bfd_timers_keep_the_session() {
        let addr: IpAddr = "192.0.2.254".parse().unwrap();
        let mut old = PeerConfig::new(addr, 64512, 64500);
        old.bfd = Some(ferrolb_bgp::BfdConfig::default());
        let mut faster = old.clone();
        faster.bfd = Some(ferrolb_bgp::BfdConfig {
            receive_interval: std::time::Duration::from_millis(50),
            transmit_interval: std::time::Duration::from_millis(50),
            detect_multiplier: 5,
            ..ferrolb_bgp::BfdConfig::default()
        });
        assert!(bfd_timers_only(&old, &faster));
        assert!(!bfd_timers_only(&old, &old), "nothing changed");
        let mut passive = faster.clone();
        passive.bfd.as_mut().unwrap().passive = true;
        assert!(!bfd_timers_only(&old, &passive), "the mode changed too");
        let mut hold = faster.clone();
        hold.hold_time = 9;
        assert!(!bfd_timers_only(&old, &hold), "a BGP setting changed too");
        let mut none = old.clone();
        none.bfd = None;
        assert!(!bfd_timers_only(&old, &none), "BFD removed");
    }
}
