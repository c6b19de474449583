//! The speaker's Prometheus metrics (MetalLB's speaker metrics under the `ferrolb_` prefix, plus
//! membership) and its HTTP endpoints `/metrics`, `/healthz`, `/readyz`.
//!
//! How values get here:
//! - L2 counters are handed out as [`L2Counters`] (clones of the series' atomics), which the
//!   answering tasks bump without taking any lock; the series lives while the address is ranked
//!   on this node ([`Metrics::forget_l2`] ends it).
//! - Everything an engine already counts itself (membership, BGP peers, BFD sessions) is copied
//!   in with plain setters taking plain data and cumulative totals ([`Metrics::set_membership`],
//!   [`Metrics::set_bgp_peer`], [`Metrics::set_bfd_session`]), typically from a sampler
//!   registered with [`Health::on_scrape`], so the engines keep counting on their own atomics
//!   and nothing is copied between scrapes.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::collections::{BTreeMap, BTreeSet};
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
struct AnnouncedLabels {
    service: String,
    protocol: String,
    node: String,
    ip: String,
    interface: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct L2Labels {
    ip: String,
    interface: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IpLabel {
    ip: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PeerLabel {
    peer: String,
}

/// How an address is announced (the `protocol` label, MetalLB's values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Protocol {
    Layer2,
    Bgp,
}

impl Protocol {
    fn label(self) -> &'static str {
        match self {
            Protocol::Layer2 => "layer2",
            Protocol::Bgp => "bgp",
        }
    }
}

/// One announced address of one Service: on `interface` in L2 mode, `""` in BGP mode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announced {
    pub service: String,
    pub ip: IpAddr,
    pub interface: String,
}

/// The counters of one address on one interface, bumped by the data plane without a lock.
#[derive(Clone, Debug, Default)]
pub struct L2Counters {
    requests: Counter,
    responses: Counter,
    gratuitous: Counter,
}

impl L2Counters {
    /// An ARP request or Neighbor Solicitation for the address arrived.
    pub fn request(&self) {
        self.requests.inc();
    }

    /// An ARP reply or solicited Neighbor Advertisement for it went out.
    pub fn response(&self) {
        self.responses.inc();
    }

    /// An announcement frame went out (gratuitous ARP request or reply, unsolicited NA).
    pub fn gratuitous(&self) {
        self.gratuitous.inc();
    }
}

/// Membership totals since the speaker started (cumulative, as membership counts them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MembershipSample {
    pub joins: u64,
    pub deaths: u64,
    pub suspicions: u64,
    /// Owners the L2 fast path took as down, and those of them that showed life again.
    pub fast_downs: u64,
    pub fast_backs: u64,
    /// Live speakers, this one included.
    pub live_members: u64,
    /// Datagrams dropped, by reason: `malformed`, `unauthenticated` (wrong or no key: the
    /// usual sign of speakers with different Secrets), `stale`, `replay`, `protocol`.
    pub dropped: [(&'static str, u64); 5],
}

impl Default for MembershipSample {
    fn default() -> Self {
        MembershipSample {
            joins: 0,
            deaths: 0,
            suspicions: 0,
            fast_downs: 0,
            fast_backs: 0,
            live_members: 0,
            dropped: [
                ("malformed", 0),
                ("unauthenticated", 0),
                ("stale", 0),
                ("replay", 0),
                ("protocol", 0),
            ],
        }
    }
}

/// One BGP peer's state; the counts are cumulative for the peer's life in the engine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BgpPeerSample {
    pub peer: String,
    pub session_up: bool,
    pub updates_sent: u64,
    pub updates_received: u64,
    /// Prefixes currently advertised to the peer.
    pub announced_prefixes: u64,
}

impl BgpPeerSample {
    /// From the engine's counters of `peer`; `announced_prefixes` is the size of the route
    /// set last given to the engine for it (the engine counts announcements, not the table).
    /// The `peer` label is the address, with `%link` or `%vrf` when scoped.
    pub fn from_engine(
        peer: &ferrolb_bgp::PeerKey,
        c: &ferrolb_bgp::PeerCounters,
        announced_prefixes: u64,
    ) -> Self {
        BgpPeerSample {
            peer: peer.to_string(),
            session_up: c.state == Some(ferrolb_bgp::State::Established),
            updates_sent: c.updates_sent,
            updates_received: c.updates_received,
            announced_prefixes,
        }
    }
}

/// One BFD session's state; the counts are cumulative for the session's life.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BfdSessionSample {
    pub peer: String,
    pub session_up: bool,
    pub control_packets_in: u64,
    pub control_packets_out: u64,
    pub up_events: u64,
    pub down_events: u64,
    pub echo_packets_in: u64,
    pub echo_packets_out: u64,
}

type PerPeerGauge = Family<PeerLabel, Gauge>;
type PerPeerCounter = Family<PeerLabel, Counter>;

/// Every metric family of the speaker.
#[derive(Default)]
pub struct Metrics {
    registry: Registry,
    announced: Family<AnnouncedLabels, Gauge>,
    /// Series of `announced` per protocol, so a new set replaces the old one.
    announced_now: Mutex<BTreeMap<Protocol, BTreeSet<AnnouncedLabels>>>,
    l2_requests: Family<L2Labels, Counter>,
    l2_responses: Family<L2Labels, Counter>,
    l2_gratuitous: Family<L2Labels, Counter>,
    joins: Counter,
    deaths: Counter,
    suspicions: Counter,
    fast_downs: Counter,
    fast_backs: Counter,
    live_members: Gauge,
    dropped: Family<ReasonLabel, Counter>,
    bgp_session_up: PerPeerGauge,
    bgp_updates_sent: PerPeerCounter,
    bgp_updates_received: PerPeerCounter,
    bgp_announced_prefixes: PerPeerGauge,
    bfd_session_up: PerPeerGauge,
    bfd_packets_in: PerPeerCounter,
    bfd_packets_out: PerPeerCounter,
    bfd_up_events: PerPeerCounter,
    bfd_down_events: PerPeerCounter,
    bfd_echo_in: PerPeerCounter,
    bfd_echo_out: PerPeerCounter,
    ready: Gauge,
    config_loaded: Gauge,
    config_problems: Gauge,
    l2_planned: Gauge,
    l2_unowned: Gauge,
    l2_quorum: Gauge,
    takeovers: Family<IpLabel, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

/// Brings a counter to `total`; a smaller total (the source restarted) starts the series again.
fn set_total<S: Clone + Hash + Eq>(family: &Family<S, Counter>, labels: &S, total: u64) {
    let counter = family.get_or_create_owned(labels);
    let now = counter.get();
    if total >= now {
        counter.inc_by(total - now);
    } else {
        family.remove(labels);
        family.get_or_create(labels).inc_by(total);
    }
}

fn raise_to(counter: &Counter, total: u64) {
    let now = counter.get();
    if total > now {
        counter.inc_by(total - now);
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut m = Self {
            registry: Registry::with_prefix("ferrolb"),
            ..Self::default()
        };
        let r = &mut m.registry;
        r.register(
            "speaker_announced",
            "Addresses announced by this node (1 per service, protocol, node, ip and interface)",
            m.announced.clone(),
        );
        r.register(
            "layer2_requests_received",
            "ARP requests and Neighbor Solicitations received for an address this node announces",
            m.l2_requests.clone(),
        );
        r.register(
            "layer2_responses_sent",
            "ARP replies and solicited Neighbor Advertisements sent",
            m.l2_responses.clone(),
        );
        r.register(
            "layer2_gratuitous_sent",
            "Announcement frames sent: gratuitous ARP requests and replies, unsolicited Neighbor Advertisements",
            m.l2_gratuitous.clone(),
        );
        r.register(
            "membership_joins",
            "Speakers seen joining (or rejoining) membership",
            m.joins.clone(),
        );
        r.register(
            "membership_deaths",
            "Speakers declared down, after failing probes or by leaving",
            m.deaths.clone(),
        );
        r.register(
            "membership_suspicions",
            "Unanswered direct and indirect probes by this speaker that made a speaker suspect",
            m.suspicions.clone(),
        );
        r.register(
            "membership_fast_downs",
            "Owners the L2 fast path (heartbeats to hot standbys) took as down before membership did",
            m.fast_downs.clone(),
        );
        r.register(
            "membership_fast_backs",
            "Owners taken as down by the L2 fast path that showed life again (a stall or a cut, not a death)",
            m.fast_backs.clone(),
        );
        r.register(
            "membership_live_members",
            "Live speakers, this one included",
            m.live_members.clone(),
        );
        // Every reason from the start, at 0: an alert or a rate() sees a counter before its
        // first drop.
        for (reason, _) in MembershipSample::default().dropped {
            let _ = m.dropped.get_or_create(&ReasonLabel { reason });
        }
        let r = &mut m.registry;
        r.register(
            "membership_datagrams_dropped",
            "Membership datagrams dropped, by reason (unauthenticated: a different or no key)",
            m.dropped.clone(),
        );
        r.register(
            "bgp_session_up",
            "BGP session state (1 established, 0 otherwise), per peer",
            m.bgp_session_up.clone(),
        );
        r.register(
            "bgp_updates_sent",
            "BGP UPDATE messages sent, per peer",
            m.bgp_updates_sent.clone(),
        );
        r.register(
            "bgp_updates_received",
            "BGP UPDATE messages received, per peer",
            m.bgp_updates_received.clone(),
        );
        r.register(
            "bgp_announced_prefixes_total",
            "Prefixes currently advertised, per peer",
            m.bgp_announced_prefixes.clone(),
        );
        r.register(
            "bfd_session_up",
            "BFD session state (1 up, 0 otherwise), per peer",
            m.bfd_session_up.clone(),
        );
        r.register(
            "bfd_control_packet_input",
            "BFD control packets received, per peer",
            m.bfd_packets_in.clone(),
        );
        r.register(
            "bfd_control_packet_output",
            "BFD control packets sent, per peer",
            m.bfd_packets_out.clone(),
        );
        r.register(
            "bfd_echo_packet_input",
            "BFD echo packets of ours back through the peer, per peer",
            m.bfd_echo_in.clone(),
        );
        r.register(
            "bfd_echo_packet_output",
            "BFD echo packets sent, per peer",
            m.bfd_echo_out.clone(),
        );
        r.register(
            "bfd_session_up_events",
            "BFD sessions going up, per peer",
            m.bfd_up_events.clone(),
        );
        r.register(
            "bfd_session_down_events",
            "BFD sessions going down, per peer",
            m.bfd_down_events.clone(),
        );
        r.register(
            "speaker_ready",
            "1 when /readyz answers 200: a configuration is loaded and the data plane runs",
            m.ready.clone(),
        );
        r.register(
            "config_loaded",
            "1 once a valid configuration has been loaded",
            m.config_loaded.clone(),
        );
        r.register(
            "config_problems",
            "Problems this speaker reports in its ConfigurationState (0: valid and fully set up here)",
            m.config_problems.clone(),
        );
        r.register(
            "layer2_planned_addresses",
            "Layer 2 addresses the plan gives an owner (the same on every speaker that sees the same cluster)",
            m.l2_planned.clone(),
        );
        r.register(
            "layer2_takeovers",
            "Times this node became the owner of a layer 2 address and started announcing it (the sum over nodes counts owner changes)",
            m.takeovers.clone(),
        );
        r.register(
            "layer2_unowned_addresses",
            "Layer 2 addresses of Services that no live, eligible node can announce",
            m.l2_unowned.clone(),
        );
        r.register(
            "layer2_quorum",
            "1 while this speaker sees a majority of the speakers (or won a tie) and may announce by layer 2; 0 while it stands down",
            m.l2_quorum.clone(),
        );
        m
    }

    pub fn set_l2_quorum(&self, may_announce: bool) {
        self.l2_quorum.set(i64::from(may_announce));
    }

    pub fn set_config_problems(&self, problems: usize) {
        self.config_problems.set(problems as i64);
    }

    /// This node became the owner of `ip`.
    pub fn takeover(&self, ip: IpAddr) {
        self.takeovers
            .get_or_create(&IpLabel { ip: ip.to_string() })
            .inc();
    }

    /// From the latest plan: how many layer 2 addresses have an owner, and how many have none.
    pub fn set_l2_plan(&self, planned: usize, unowned: usize) {
        self.l2_planned.set(planned as i64);
        self.l2_unowned.set(unowned as i64);
    }

    /// Replaces what this node announces by `protocol` with `now`.
    pub fn set_announced(&self, protocol: Protocol, node: &str, now: &[Announced]) {
        let labels: BTreeSet<AnnouncedLabels> = now
            .iter()
            .map(|a| AnnouncedLabels {
                service: a.service.clone(),
                protocol: protocol.label().to_owned(),
                node: node.to_owned(),
                ip: a.ip.to_string(),
                interface: a.interface.clone(),
            })
            .collect();
        let mut known = self.announced_now.lock().unwrap_or_else(|e| e.into_inner());
        let before = known.entry(protocol).or_default();
        for gone in before.difference(&labels) {
            self.announced.remove(gone);
        }
        for l in &labels {
            self.announced.get_or_create(l).set(1);
        }
        *before = labels;
    }

    /// The counters of `ip` on `interface` (created at zero the first time).
    pub fn l2_counters(&self, ip: IpAddr, interface: &str) -> L2Counters {
        let labels = L2Labels {
            ip: ip.to_string(),
            interface: interface.to_owned(),
        };
        L2Counters {
            requests: self.l2_requests.get_or_create_owned(&labels),
            responses: self.l2_responses.get_or_create_owned(&labels),
            gratuitous: self.l2_gratuitous.get_or_create_owned(&labels),
        }
    }

    /// Ends the series of `ip` on `interface` (this node no longer stands for it there).
    pub fn forget_l2(&self, ip: IpAddr, interface: &str) {
        let labels = L2Labels {
            ip: ip.to_string(),
            interface: interface.to_owned(),
        };
        for family in [&self.l2_requests, &self.l2_responses, &self.l2_gratuitous] {
            family.remove(&labels);
        }
    }

    pub fn set_membership(&self, s: &MembershipSample) {
        raise_to(&self.joins, s.joins);
        raise_to(&self.deaths, s.deaths);
        raise_to(&self.suspicions, s.suspicions);
        raise_to(&self.fast_downs, s.fast_downs);
        raise_to(&self.fast_backs, s.fast_backs);
        self.live_members
            .set(i64::try_from(s.live_members).unwrap_or(i64::MAX));
        for (reason, total) in s.dropped {
            raise_to(
                &self.dropped.get_or_create_owned(&ReasonLabel { reason }),
                total,
            );
        }
    }

    pub fn set_bgp_peer(&self, s: &BgpPeerSample) {
        let l = PeerLabel {
            peer: s.peer.clone(),
        };
        self.bgp_session_up
            .get_or_create(&l)
            .set(i64::from(s.session_up));
        set_total(&self.bgp_updates_sent, &l, s.updates_sent);
        set_total(&self.bgp_updates_received, &l, s.updates_received);
        self.bgp_announced_prefixes
            .get_or_create(&l)
            .set(i64::try_from(s.announced_prefixes).unwrap_or(i64::MAX));
    }

    /// The peer is no longer configured: its series go.
    pub fn remove_bgp_peer(&self, peer: &str) {
        let l = PeerLabel { peer: peer.into() };
        self.bgp_session_up.remove(&l);
        self.bgp_updates_sent.remove(&l);
        self.bgp_updates_received.remove(&l);
        self.bgp_announced_prefixes.remove(&l);
    }

    pub fn set_bfd_session(&self, s: &BfdSessionSample) {
        let l = PeerLabel {
            peer: s.peer.clone(),
        };
        self.bfd_session_up
            .get_or_create(&l)
            .set(i64::from(s.session_up));
        set_total(&self.bfd_packets_in, &l, s.control_packets_in);
        set_total(&self.bfd_packets_out, &l, s.control_packets_out);
        set_total(&self.bfd_up_events, &l, s.up_events);
        set_total(&self.bfd_down_events, &l, s.down_events);
        set_total(&self.bfd_echo_in, &l, s.echo_packets_in);
        set_total(&self.bfd_echo_out, &l, s.echo_packets_out);
    }

    /// The session is no longer configured: its series go.
    pub fn remove_bfd_session(&self, peer: &str) {
        let l = PeerLabel { peer: peer.into() };
        self.bfd_session_up.remove(&l);
        for family in [
            &self.bfd_packets_in,
            &self.bfd_packets_out,
            &self.bfd_up_events,
            &self.bfd_down_events,
            &self.bfd_echo_in,
            &self.bfd_echo_out,
        ] {
            family.remove(&l);
        }
    }

    /// The Prometheus (OpenMetrics) text exposition.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

type Sampler = Box<dyn Fn(&Metrics) + Send + Sync>;

/// What `/healthz` and `/readyz` report, and the metrics `/metrics` serves.
pub struct Health {
    pub metrics: Arc<Metrics>,
    started: Instant,
    /// Milliseconds after `started` of the run loop's last turn.
    last_tick_ms: AtomicU64,
    /// The run loop turns at least every interface rescan; a longer silence means it is stuck.
    stall_limit: Duration,
    config_loaded: AtomicBool,
    data_plane_running: AtomicBool,
    samplers: Mutex<Vec<Sampler>>,
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("alive", &self.liveness().is_ok())
            .field("ready", &self.readiness().is_ok())
            .finish()
    }
}

impl Default for Health {
    fn default() -> Self {
        Self::new(Duration::from_secs(30))
    }
}

impl Health {
    /// `stall_limit`: how long the run loop may go without a turn before `/healthz` fails.
    pub fn new(stall_limit: Duration) -> Self {
        Health {
            metrics: Arc::new(Metrics::new()),
            started: Instant::now(),
            last_tick_ms: AtomicU64::new(0),
            stall_limit,
            config_loaded: AtomicBool::new(false),
            data_plane_running: AtomicBool::new(false),
            samplers: Mutex::new(Vec::new()),
        }
    }

    /// The run loop turned.
    pub fn tick(&self) {
        let ms = self.started.elapsed().as_millis() as u64;
        self.last_tick_ms.store(ms, Ordering::Relaxed);
    }

    pub fn set_config_loaded(&self, yes: bool) {
        self.config_loaded.store(yes, Ordering::SeqCst);
    }

    pub fn set_data_plane_running(&self, yes: bool) {
        self.data_plane_running.store(yes, Ordering::SeqCst);
    }

    /// Runs `sample` before every scrape (to copy an engine's own counters in).
    pub fn on_scrape(&self, sample: impl Fn(&Metrics) + Send + Sync + 'static) {
        self.samplers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Box::new(sample));
    }

    /// `Ok` while the run loop keeps turning.
    pub fn liveness(&self) -> Result<(), String> {
        let last = Duration::from_millis(self.last_tick_ms.load(Ordering::Relaxed));
        let silent = self.started.elapsed().saturating_sub(last);
        if silent > self.stall_limit {
            Err(format!(
                "the run loop has not turned for {} ms",
                silent.as_millis()
            ))
        } else {
            Ok(())
        }
    }

    /// `Ok` once a valid configuration is loaded and the data plane runs.
    pub fn readiness(&self) -> Result<(), &'static str> {
        if !self.config_loaded.load(Ordering::SeqCst) {
            Err("no valid configuration loaded yet")
        } else if !self.data_plane_running.load(Ordering::SeqCst) {
            Err("the data plane is not running")
        } else {
            Ok(())
        }
    }

    /// Samples every registered source, then encodes.
    pub fn scrape(&self) -> String {
        self.metrics.ready.set(i64::from(self.readiness().is_ok()));
        self.metrics
            .config_loaded
            .set(i64::from(self.config_loaded.load(Ordering::SeqCst)));
        for sample in self
            .samplers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            sample(&self.metrics);
        }
        self.metrics.encode()
    }
}

async fn metrics(State(h): State<Arc<Health>>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        h.scrape(),
    )
}

fn verdict(r: Result<(), String>) -> (StatusCode, String) {
    match r {
        Ok(()) => (StatusCode::OK, "ok\n".into()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

async fn healthz(State(h): State<Arc<Health>>) -> (StatusCode, String) {
    verdict(h.liveness())
}

async fn readyz(State(h): State<Arc<Health>>) -> (StatusCode, String) {
    verdict(h.readiness().map_err(str::to_owned))
}

pub fn router(health: Arc<Health>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(health)
}

/// Binds `addr` now (so a taken port is an error at start), serving later on the runtime.
pub fn bind(addr: std::net::SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let listener = std::net::TcpListener::bind(addr)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

/// Serves the endpoints on `listener` until the process ends. Must run inside a tokio runtime.
pub fn serve(
    listener: std::net::TcpListener,
    health: Arc<Health>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    Ok(tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router(health)).await {
            tracing::warn!(error = %e, "metrics server stopped");
        }
    }))
}

#[cfg(test)]
mod tests;
