//! The tokio driver: one task per peer runs the [`Fsm`] and the [`AdjRibOut`], one reader and
//! one writer task per TCP connection, listener tasks hand accepted connections to their peer.
//!
//! The driver only carries out what the FSM outputs; all protocol decisions live in the
//! sans-IO modules.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ipnet::IpNet;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::bfd::driver::{self as bfd_driver, BfdDriver};
use crate::bfd::{BfdChange, BfdConfig, BfdCounters, BfdPorts, SessionState as BfdState};
use crate::config::{
    is_link_local, PeerConfig, PeerKey, SessionEvent, SessionEventKind, SessionInfo,
};
use crate::fsm::{ConnId, Fsm, Input, Negotiated, Output, State, StopReason, Timer};
use crate::packet::{frame_len, DecodeContext, Message, MessageError};
use crate::rib_out::{end_of_rib, AdjRibOut, RouteAttributes, SessionParams};
use crate::sockopt;

/// Errors of the engine API.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("peer {0} already exists")]
    PeerExists(PeerKey),
    #[error("no peer {0}")]
    NoSuchPeer(PeerKey),
    #[error("VRF {vrf}: cannot listen for BGP connections in it: {error}")]
    VrfListen { vrf: String, error: io::Error },
    #[error("invalid peer configuration: {0}")]
    InvalidConfig(String),
    #[error("the engine has shut down")]
    ShutDown,
    #[error("socket: {0}")]
    Io(#[from] io::Error),
}

/// Engine-wide settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineConfig {
    /// Default BGP identifier of all peers.
    pub router_id: Ipv4Addr,
    /// Where to accept connections from peers (e.g. `0.0.0.0:179` and `[::]:179`); empty for
    /// active-only operation.
    pub listen: Vec<SocketAddr>,
}

/// How [`BgpEngine::shutdown`] ends the sessions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShutdownMode {
    /// Cease / Administrative Shutdown with this RFC 9003 message: peers drop our routes.
    Cease(Option<String>),
    /// Close without NOTIFICATION: peers that negotiated graceful restart keep our routes for
    /// the restart time, until the restarted engine sends them again (RFC 4724).
    GracefulRestart,
}

/// Counters of one peer, for metrics. Monotonic except `state`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerCounters {
    pub state: Option<State>,
    pub established_transitions: u64,
    pub messages_sent: u64,
    pub messages_received: u64,
    pub updates_sent: u64,
    pub updates_received: u64,
    pub prefixes_announced: u64,
    pub prefixes_withdrawn: u64,
    pub notifications_sent: u64,
    pub notifications_received: u64,
    pub route_refreshes_received: u64,
    /// Received UPDATEs handled as withdraw (RFC 7606).
    pub treat_as_withdraw: u64,
    /// Desired routes this session cannot carry (family not negotiated, no next hop).
    pub unsendable_routes: u64,
    pub bytes_sent: u64,
}

#[derive(Debug, Default)]
struct Counters {
    state: AtomicU8,
    established_transitions: AtomicU64,
    messages_sent: AtomicU64,
    messages_received: AtomicU64,
    updates_sent: AtomicU64,
    updates_received: AtomicU64,
    prefixes_announced: AtomicU64,
    prefixes_withdrawn: AtomicU64,
    notifications_sent: AtomicU64,
    notifications_received: AtomicU64,
    route_refreshes_received: AtomicU64,
    treat_as_withdraw: AtomicU64,
    unsendable_routes: AtomicU64,
    bytes_sent: AtomicU64,
}

fn state_code(s: State) -> u8 {
    s as u8 + 1
}

fn state_of(code: u8) -> Option<State> {
    Some(match code {
        1 => State::Idle,
        2 => State::Connect,
        3 => State::Active,
        4 => State::OpenSent,
        5 => State::OpenConfirm,
        6 => State::Established,
        _ => return None,
    })
}

impl Counters {
    fn snapshot(&self) -> PeerCounters {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        PeerCounters {
            state: state_of(self.state.load(Ordering::Relaxed)),
            established_transitions: g(&self.established_transitions),
            messages_sent: g(&self.messages_sent),
            messages_received: g(&self.messages_received),
            updates_sent: g(&self.updates_sent),
            updates_received: g(&self.updates_received),
            prefixes_announced: g(&self.prefixes_announced),
            prefixes_withdrawn: g(&self.prefixes_withdrawn),
            notifications_sent: g(&self.notifications_sent),
            notifications_received: g(&self.notifications_received),
            route_refreshes_received: g(&self.route_refreshes_received),
            treat_as_withdraw: g(&self.treat_as_withdraw),
            unsendable_routes: g(&self.unsendable_routes),
            bytes_sent: g(&self.bytes_sent),
        }
    }
}

fn bump(a: &AtomicU64, n: u64) {
    a.fetch_add(n, Ordering::Relaxed);
}

/// What a peer task receives.
enum PeerMsg {
    SetRoutes(Vec<(IpNet, RouteAttributes)>),
    Stop(StopReason, oneshot::Sender<()>),
    Accepted(TcpStream),
    Connected(u64, io::Result<TcpStream>),
    Fsm(Box<Input>),
    Bfd(BfdChange),
    BfdTimers(BfdConfig),
}

/// True when `new` differs from `old` only in BFD intervals and multiplier.
fn timers_only_change(old: &PeerConfig, new: &PeerConfig) -> bool {
    let (Some(a), Some(b)) = (old.bfd, new.bfd) else {
        return false;
    };
    let mut same = new.clone();
    same.bfd = Some(BfdConfig {
        receive_interval: a.receive_interval,
        transmit_interval: a.transmit_interval,
        detect_multiplier: a.detect_multiplier,
        ..b
    });
    same == *old
}

struct PeerHandle {
    tx: mpsc::UnboundedSender<PeerMsg>,
    counters: Arc<Counters>,
    /// Kept across restarts of the peer task, so the counters stay monotonic.
    bfd_counters: Arc<bfd_driver::Counters>,
    config: PeerConfig,
    task: JoinHandle<AdjRibOut>,
}

struct Shared {
    router_id: Ipv4Addr,
    peers: Mutex<HashMap<PeerKey, PeerHandle>>,
    /// Listeners of the default VRF.
    listeners: Vec<Arc<TcpListener>>,
    /// Where the default listeners listen: VRF listeners take the same ports.
    listen: Vec<SocketAddr>,
    /// Listeners bound to a VRF device, made with the first peer in that VRF; connections
    /// arriving in a VRF reach only sockets bound to it.
    vrf_listeners: Mutex<HashMap<String, VrfListeners>>,
    events: mpsc::UnboundedSender<SessionEvent>,
    bfd: Arc<BfdDriver>,
}

/// The BGP engine: peers, their sessions and routes. Cheap to share behind an `Arc`.
pub struct BgpEngine {
    shared: Arc<Shared>,
    accept_tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for BgpEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BgpEngine")
            .field("router_id", &self.shared.router_id)
            .finish_non_exhaustive()
    }
}

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

struct VrfListeners {
    listeners: Vec<Arc<TcpListener>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for VrfListeners {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

fn new_listener(addr: SocketAddr, vrf: Option<&str>) -> io::Result<TcpListener> {
    let domain = socket2::Domain::for_address(addr);
    let s = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    s.set_reuse_address(true)?;
    // A listener bound to a VRF device shares the port with the unbound one of the default
    // VRF only with SO_REUSEPORT on both (the kernel then hands each connection to the
    // listener of its VRF, as bgpd's listeners do).
    s.set_reuse_port(true)?;
    if let Some(vrf) = vrf {
        s.bind_device(Some(vrf.as_bytes()))?;
    }
    if addr.is_ipv6() {
        // IPv4 peers get their own listener: MD5 keys are per address family.
        s.set_only_v6(true)?;
    }
    s.set_nonblocking(true)?;
    s.bind(&addr.into())?;
    s.listen(128)?;
    TcpListener::from_std(s.into())
}

impl BgpEngine {
    /// Binds the listeners and starts the engine. Must run inside a tokio runtime.
    pub async fn start(
        config: EngineConfig,
    ) -> Result<(BgpEngine, mpsc::UnboundedReceiver<SessionEvent>), EngineError> {
        let (events, rx) = mpsc::unbounded_channel();
        let mut listeners = Vec::new();
        for addr in &config.listen {
            listeners.push(Arc::new(new_listener(*addr, None)?));
        }
        let shared = Arc::new(Shared {
            router_id: config.router_id,
            peers: Mutex::new(HashMap::new()),
            listeners,
            listen: config.listen.clone(),
            vrf_listeners: Mutex::default(),
            events,
            bfd: Arc::new(BfdDriver::new()),
        });
        let accept_tasks = shared
            .listeners
            .iter()
            .map(|l| tokio::spawn(accept_loop(l.clone(), None, Arc::downgrade(&shared))))
            .collect();
        Ok((
            BgpEngine {
                shared,
                accept_tasks,
            },
            rx,
        ))
    }

    /// The local addresses of the listeners (useful with port 0).
    pub fn listen_addrs(&self) -> Vec<SocketAddr> {
        self.shared
            .listeners
            .iter()
            .filter_map(|l| l.local_addr().ok())
            .collect()
    }

    /// Adds a peer and starts its session.
    pub fn add_peer(&self, config: PeerConfig) -> Result<(), EngineError> {
        config.validate()?;
        let key = config.key();
        if self
            .shared
            .peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&key)
        {
            return Err(EngineError::PeerExists(key));
        }
        self.ensure_vrf_listeners(&config)?;
        self.set_listener_md5(&config, config.md5_password.as_deref().unwrap_or(""))?;
        let mut peers = self.shared.peers.lock().unwrap_or_else(|e| e.into_inner());
        if peers.contains_key(&key) {
            return Err(EngineError::PeerExists(key));
        }
        let handle = spawn_peer(config.clone(), &self.shared, AdjRibOut::new(), None);
        peers.insert(key, handle);
        Ok(())
    }

    /// Listeners bound to the peer's VRF, on the default listeners' ports (none when the
    /// engine does not listen).
    fn ensure_vrf_listeners(&self, config: &PeerConfig) -> Result<(), EngineError> {
        let Some(vrf) = &config.vrf else {
            return Ok(());
        };
        let mut all = self
            .shared
            .vrf_listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if all.contains_key(vrf) {
            return Ok(());
        }
        let mut listeners = Vec::new();
        for addr in &self.shared.listen {
            let l = new_listener(*addr, Some(vrf)).map_err(|error| EngineError::VrfListen {
                vrf: vrf.clone(),
                error,
            })?;
            listeners.push(Arc::new(l));
        }
        let tasks = listeners
            .iter()
            .map(|l| {
                tokio::spawn(accept_loop(
                    l.clone(),
                    Some(vrf.clone()),
                    Arc::downgrade(&self.shared),
                ))
            })
            .collect();
        all.insert(vrf.clone(), VrfListeners { listeners, tasks });
        Ok(())
    }

    /// Changes a peer's settings. When anything changed the session restarts (Cease / Other
    /// Configuration Change) with the new settings; the desired routes are kept.
    pub async fn update_peer(&self, config: PeerConfig) -> Result<(), EngineError> {
        config.validate()?;
        let key = config.key();
        let old = {
            let peers = self.shared.peers.lock().unwrap_or_else(|e| e.into_inner());
            peers
                .get(&key)
                .map(|h| h.config.clone())
                .ok_or_else(|| EngineError::NoSuchPeer(key.clone()))?
        };
        if old == config {
            return Ok(());
        }
        if timers_only_change(&old, &config) {
            // New BFD timers reach the running session through a Poll sequence; BGP stays up.
            let mut peers = self.shared.peers.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(h) = peers.get_mut(&key) {
                if let Some(b) = config.bfd {
                    let _ = h.tx.send(PeerMsg::BfdTimers(b));
                }
                h.config = config;
                return Ok(());
            }
        }
        let bfd_counters = self
            .shared
            .peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .map(|h| h.bfd_counters.clone());
        let mut rib = self
            .stop_peer(key.clone(), StopReason::ConfigChange)
            .await?
            .0
            .unwrap_or_default();
        rib.session_reset();
        self.ensure_vrf_listeners(&config)?;
        self.set_listener_md5(&config, config.md5_password.as_deref().unwrap_or(""))?;
        let handle = spawn_peer(config.clone(), &self.shared, rib, bfd_counters);
        self.shared
            .peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, handle);
        Ok(())
    }

    /// Removes a peer (Cease / Peer De-configured) and waits for its session to close.
    pub async fn remove_peer(&self, peer: impl Into<PeerKey>) -> Result<(), EngineError> {
        let key = peer.into();
        let vrf = self.stop_peer(key, StopReason::Deconfigured).await?.1;
        self.drop_unused_vrf_listeners(vrf);
        Ok(())
    }

    /// Closes a VRF's listeners once no peer uses the VRF.
    fn drop_unused_vrf_listeners(&self, vrf: Option<String>) {
        let Some(vrf) = vrf else { return };
        let used = self
            .shared
            .peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .any(|h| h.config.vrf.as_ref() == Some(&vrf));
        if !used {
            self.shared
                .vrf_listeners
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&vrf);
        }
    }

    /// Sets the routes a peer should have from us; the engine sends the difference.
    pub fn set_routes(
        &self,
        peer: impl Into<PeerKey>,
        routes: Vec<(IpNet, RouteAttributes)>,
    ) -> Result<(), EngineError> {
        let peer = peer.into();
        let peers = self.shared.peers.lock().unwrap_or_else(|e| e.into_inner());
        let h = peers
            .get(&peer)
            .ok_or(EngineError::NoSuchPeer(peer.clone()))?;
        h.tx.send(PeerMsg::SetRoutes(routes))
            .map_err(|_| EngineError::ShutDown)
    }

    /// Counters of a peer.
    pub fn counters(&self, peer: impl Into<PeerKey>) -> Option<PeerCounters> {
        let peers = self.shared.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers.get(&peer.into()).map(|h| h.counters.snapshot())
    }

    /// BFD counters of a peer (all zero and `state: None` without BFD).
    pub fn bfd_counters(&self, peer: impl Into<PeerKey>) -> Option<BfdCounters> {
        let peers = self.shared.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers.get(&peer.into()).map(|h| h.bfd_counters.snapshot())
    }

    /// BFD packets dropped that came from no configured peer's address.
    pub fn bfd_dropped_unknown(&self) -> u64 {
        self.shared.bfd.dropped_unknown.load(Ordering::Relaxed)
    }

    /// BFD UDP ports (3784 / 4784 unless changed); takes effect for receive sockets not yet
    /// bound, so call it before adding peers. Tests on one host use it.
    pub fn set_bfd_ports(&self, ports: BfdPorts) {
        self.shared.bfd.set_ports(ports);
    }

    /// The configured peers.
    pub fn peers(&self) -> Vec<PeerKey> {
        let peers = self.shared.peers.lock().unwrap_or_else(|e| e.into_inner());
        peers.keys().cloned().collect()
    }

    /// Ends every session and stops the engine.
    pub async fn shutdown(self, mode: ShutdownMode) {
        let reason = match mode {
            ShutdownMode::Cease(m) => StopReason::Shutdown(m),
            ShutdownMode::GracefulRestart => StopReason::GracefulRestart,
        };
        for key in self.peers() {
            let _ = self.stop_peer(key, reason.clone()).await;
        }
        for t in &self.accept_tasks {
            t.abort();
        }
        self.shared
            .vrf_listeners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    fn set_listener_md5(&self, config: &PeerConfig, key: &str) -> Result<(), EngineError> {
        let in_vrf: Vec<Arc<TcpListener>> = match &config.vrf {
            None => self.shared.listeners.clone(),
            Some(vrf) => self
                .shared
                .vrf_listeners
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(vrf)
                .map(|v| v.listeners.clone())
                .unwrap_or_default(),
        };
        for l in &in_vrf {
            let Ok(local) = l.local_addr() else { continue };
            if local.is_ipv4() != config.address.is_ipv4() {
                continue;
            }
            match sockopt::set_tcp_md5(
                l.as_ref(),
                SocketAddr::new(config.address, 0),
                key.as_bytes(),
            ) {
                Ok(()) => {}
                // Removing a key that was never set.
                Err(e) if key.is_empty() && e.raw_os_error() == Some(libc::ENOENT) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Stops a peer task; returns its Adj-RIB-Out (with the desired routes) and its VRF.
    async fn stop_peer(
        &self,
        key: PeerKey,
        reason: StopReason,
    ) -> Result<(Option<AdjRibOut>, Option<String>), EngineError> {
        let handle = self
            .shared
            .peers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key)
            .ok_or(EngineError::NoSuchPeer(key))?;
        let (done_tx, done_rx) = oneshot::channel();
        let _ = handle.tx.send(PeerMsg::Stop(reason, done_tx));
        let _ = tokio::time::timeout(Duration::from_secs(5), done_rx).await;
        let rib = match tokio::time::timeout(Duration::from_secs(5), handle.task).await {
            Ok(Ok(rib)) => Some(rib),
            _ => None,
        };
        if handle.config.md5_password.is_some() {
            let _ = self.set_listener_md5(&handle.config, "");
        }
        Ok((rib, handle.config.vrf.clone()))
    }
}

impl Drop for BgpEngine {
    fn drop(&mut self) {
        for t in &self.accept_tasks {
            t.abort();
        }
    }
}

/// Hands accepted connections to their peer: by source address, scoped by the link of a
/// link-local source or else by the listener's VRF.
async fn accept_loop(
    listener: Arc<TcpListener>,
    vrf: Option<String>,
    shared: std::sync::Weak<Shared>,
) {
    loop {
        let (stream, from) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let ip = match from.ip() {
            IpAddr::V6(v6) => v6
                .to_ipv4_mapped()
                .map(IpAddr::V4)
                .unwrap_or(IpAddr::V6(v6)),
            v4 => v4,
        };
        let device = match from {
            SocketAddr::V6(v6) if is_link_local(ip) => sockopt::if_name(v6.scope_id()),
            _ => vrf.clone(),
        };
        let key = PeerKey {
            address: ip,
            device,
        };
        let peers = shared.peers.lock().unwrap_or_else(|e| e.into_inner());
        match peers.get(&key) {
            Some(h) => {
                let _ = h.tx.send(PeerMsg::Accepted(stream));
            }
            None => debug!(%from, "connection from an unknown address refused"),
        }
    }
}

fn spawn_peer(
    config: PeerConfig,
    shared: &Arc<Shared>,
    rib: AdjRibOut,
    bfd_counters: Option<Arc<bfd_driver::Counters>>,
) -> PeerHandle {
    let (tx, rx) = mpsc::unbounded_channel();
    let counters = Arc::new(Counters::default());
    let bfd_counters = bfd_counters.unwrap_or_default();
    let fsm = Fsm::new(config.fsm_config(shared.router_id));
    let span = info_span!("bgp_peer", peer = %config.key());
    let task = PeerTask {
        config: config.clone(),
        fsm,
        rib,
        tx: tx.clone(),
        conns: HashMap::new(),
        timers: HashMap::new(),
        connect: None,
        connect_seq: 0,
        session: None,
        counters: counters.clone(),
        events: shared.events.clone(),
        closing: Vec::new(),
        md5_hint_logged: false,
        bfd_driver: shared.bfd.clone(),
        bfd: None,
        bfd_counters: bfd_counters.clone(),
        bfd_up: false,
        waiting_for_bfd: None,
    };
    let task = tokio::spawn(task.run(rx).instrument(span));
    PeerHandle {
        tx,
        counters,
        bfd_counters,
        config,
        task,
    }
}

struct ConnHandle {
    writer: mpsc::UnboundedSender<Vec<u8>>,
    writer_task: JoinHandle<()>,
    reader: JoinHandle<()>,
    local: Option<SocketAddr>,
    ctx: DecodeContext,
}

struct Session {
    conn: ConnId,
    params: SessionParams,
}

struct PeerTask {
    config: PeerConfig,
    fsm: Fsm,
    rib: AdjRibOut,
    tx: mpsc::UnboundedSender<PeerMsg>,
    conns: HashMap<ConnId, ConnHandle>,
    timers: HashMap<Timer, Instant>,
    /// The outgoing connection attempt: its number, when it started, its task.
    connect: Option<(u64, Instant, JoinHandle<()>)>,
    connect_seq: u64,
    session: Option<Session>,
    counters: Arc<Counters>,
    events: mpsc::UnboundedSender<SessionEvent>,
    /// Writers of closed connections still flushing (a NOTIFICATION, then FIN).
    closing: Vec<JoinHandle<()>>,
    /// The MD5 mismatch hint was logged since the last established session.
    md5_hint_logged: bool,
    bfd_driver: Arc<BfdDriver>,
    /// The peer's BFD session, started from the local address of the first established
    /// session (and again when that address changes).
    bfd: Option<bfd_driver::SessionHandle>,
    bfd_counters: Arc<bfd_driver::Counters>,
    bfd_up: bool,
    /// An established session whose routes wait for BFD to come up.
    waiting_for_bfd: Option<Negotiated>,
}

impl PeerTask {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<PeerMsg>) -> AdjRibOut {
        self.feed(Input::Start);
        loop {
            let deadline = self
                .timers
                .iter()
                .min_by_key(|(_, d)| **d)
                .map(|(t, d)| (*t, *d));
            let msg = tokio::select! {
                m = rx.recv() => match m {
                    Some(m) => m,
                    None => {
                        self.feed(Input::Stop(StopReason::Deconfigured));
                        break;
                    }
                },
                _ = sleep_until(deadline.map(|d| d.1)) => {
                    if let Some((t, _)) = deadline {
                        self.timers.remove(&t);
                        self.feed(Input::TimerExpired(t));
                    }
                    continue;
                }
            };
            match msg {
                PeerMsg::SetRoutes(routes) => {
                    self.rib.set_desired(routes);
                    self.flush_rib();
                }
                PeerMsg::Stop(reason, done) => {
                    self.feed(Input::Stop(reason));
                    self.close_all().await;
                    let _ = done.send(());
                    break;
                }
                PeerMsg::Accepted(stream) => {
                    debug!(from = ?stream.peer_addr().ok(), "connection accepted");
                    if let Err(e) = self.prepare_accepted(&stream) {
                        warn!(error = %e, "socket options on accepted connection failed");
                    }
                    let id = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
                    self.attach(id, stream);
                    self.feed(Input::TcpConnected {
                        conn: id,
                        inbound: true,
                    });
                }
                PeerMsg::Connected(seq, result) => {
                    if self.connect.as_ref().map(|c| c.0) != Some(seq) {
                        continue;
                    }
                    self.connect = None;
                    match result {
                        Ok(stream) => {
                            debug!(local = ?stream.local_addr().ok(), "connected");
                            let id = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
                            self.attach(id, stream);
                            self.feed(Input::TcpConnected {
                                conn: id,
                                inbound: false,
                            });
                        }
                        Err(e) => {
                            self.connect_failed(&e);
                            self.feed(Input::TcpFailed { conn: None });
                        }
                    }
                }
                PeerMsg::Fsm(input) => self.feed(*input),
                PeerMsg::Bfd(change) => self.bfd_changed(change),
                PeerMsg::BfdTimers(b) => {
                    self.config.bfd = Some(b);
                    if let Some(h) = &self.bfd {
                        h.set_timers(&b);
                    }
                }
            }
        }
        if let Some((_, _, t)) = self.connect.take() {
            t.abort();
        }
        self.rib
    }

    /// A TCP MD5 mismatch shows as nothing but silence (the peer's kernel drops every
    /// unsigned or wrongly signed segment), so say so once per failure streak.
    fn connect_failed(&mut self, e: &io::Error) {
        if self.config.md5_password.is_some()
            && e.kind() == io::ErrorKind::TimedOut
            && !self.md5_hint_logged
        {
            self.md5_hint_logged = true;
            warn!(error = %e, "connect failed; TCP MD5 is configured for this peer and a password mismatch drops every segment silently: check that both sides use the same password");
        } else {
            debug!(error = %e, "connect failed");
        }
    }

    fn prepare_accepted(&self, stream: &TcpStream) -> io::Result<()> {
        stream.set_nodelay(true)?;
        if let Some(hops) = self.config.gtsm_hops {
            let v6 = self.config.address.is_ipv6();
            sockopt::set_min_ttl(stream, v6, 255 - hops + 1)?;
            set_ttl(stream, v6, 255)?;
        } else if let Some(ttl) = self.ttl() {
            set_ttl(stream, self.config.address.is_ipv6(), ttl as u32)?;
        }
        Ok(())
    }

    fn ttl(&self) -> Option<u8> {
        match (self.config.ebgp_multihop, self.config.is_ibgp()) {
            (Some(t), _) => Some(t),
            (None, false) => Some(1),
            (None, true) => None,
        }
    }

    /// Runs one input through the FSM and carries out its outputs.
    fn feed(&mut self, input: Input) {
        for out in self.fsm.process(input) {
            self.apply(out);
        }
        self.counters
            .state
            .store(state_code(self.fsm.state()), Ordering::Relaxed);
    }

    fn send_bytes(&mut self, conn: ConnId, bytes: Vec<u8>) {
        if bytes.is_empty() {
            return;
        }
        if let Some(c) = self.conns.get(&conn) {
            bump(&self.counters.bytes_sent, bytes.len() as u64);
            let _ = c.writer.send(bytes);
        }
    }

    fn apply(&mut self, out: Output) {
        match out {
            Output::Connect => self.start_connect(),
            Output::CancelConnect => self.abandon_connect(),
            Output::Send(conn, msg) => {
                let ctx = self.conns.get(&conn).map(|c| c.ctx).unwrap_or_default();
                match &msg {
                    Message::Notification(n) => {
                        info!(notification = %n, "sending NOTIFICATION");
                        bump(&self.counters.notifications_sent, 1);
                    }
                    Message::Update(_) => bump(&self.counters.updates_sent, 1),
                    _ => {}
                }
                bump(&self.counters.messages_sent, 1);
                match msg.to_bytes(&ctx) {
                    Ok(b) => self.send_bytes(conn, b),
                    Err(e) => warn!(error = %e, "message not sent"),
                }
            }
            Output::Close(conn) => {
                if let Some(c) = self.conns.remove(&conn) {
                    // Dropping the sender lets the writer flush, then shut the socket down.
                    drop(c.writer);
                    self.closing.retain(|t| !t.is_finished());
                    self.closing.push(c.writer_task);
                    let reader = c.reader;
                    tokio::spawn(async move {
                        // Keep reading (and discarding) briefly so the peer gets a FIN and
                        // our NOTIFICATION rather than a reset.
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        reader.abort();
                    });
                }
            }
            Output::StartTimer(t, d) => {
                self.timers.insert(t, Instant::now() + d);
            }
            Output::StopTimer(t) => {
                self.timers.remove(&t);
            }
            Output::Established(n) => self.established(n),
            Output::Down(reason) => {
                info!(%reason, "session down");
                if self.waiting_for_bfd.take().is_some() {
                    // Never declared up, so not down either.
                    return;
                }
                self.session = None;
                self.rib.session_reset();
                let _ = self.events.send(SessionEvent {
                    peer: self.config.key(),
                    kind: SessionEventKind::Down(reason),
                });
            }
            Output::RouteRefreshRequested(family) => {
                bump(&self.counters.route_refreshes_received, 1);
                if let Some(s) = &self.session {
                    let mut buf = Vec::new();
                    let stats = self.rib.refresh(family, &s.params, &mut buf);
                    let conn = s.conn;
                    self.count_drain(stats);
                    self.send_bytes(conn, buf);
                }
            }
            Output::UpdateReceived {
                treat_as_withdraw, ..
            } => {
                bump(&self.counters.updates_received, 1);
                if treat_as_withdraw {
                    bump(&self.counters.treat_as_withdraw, 1);
                }
            }
        }
    }

    fn count_drain(&self, s: crate::rib_out::DrainStats) {
        bump(&self.counters.updates_sent, s.updates);
        bump(&self.counters.messages_sent, s.updates);
        bump(&self.counters.prefixes_announced, s.announced);
        bump(&self.counters.prefixes_withdrawn, s.withdrawn);
        self.counters
            .unsendable_routes
            .store(s.unsendable, Ordering::Relaxed);
    }

    /// A session is established: start BFD if configured, and announce routes unless they
    /// wait for BFD.
    fn established(&mut self, n: Negotiated) {
        let Some(bfd) = self.config.bfd else {
            return self.declare_up(n);
        };
        let local = self.conns.get(&n.conn).and_then(|c| c.local).map(|a| {
            let mut a = a;
            a.set_ip(unmap(a.ip()));
            a
        });
        if let Some(local) = local {
            if self.bfd.as_ref().map(|h| h.local) != Some(local.ip()) {
                self.bfd = None;
                self.bfd_up = false;
                let tx = self.tx.clone();
                let device = self.config.interface.as_ref().or(self.config.vrf.as_ref());
                match self.bfd_driver.open(
                    bfd_driver::BfdPath {
                        peer: self.config.address,
                        local,
                        device: device.map(String::as_str),
                        vrf: self.config.vrf.as_deref(),
                    },
                    &bfd,
                    self.bfd_counters.clone(),
                    move |c| {
                        let _ = tx.send(PeerMsg::Bfd(c));
                    },
                ) {
                    Ok(h) => self.bfd = Some(h),
                    Err(e) => warn!(error = %e, "BFD session could not start"),
                }
            }
        }
        if bfd.hold_routes_until_up && !self.bfd_up {
            info!("session established; routes wait for BFD to come up");
            self.waiting_for_bfd = Some(n);
            return;
        }
        self.declare_up(n);
    }

    fn bfd_changed(&mut self, c: BfdChange) {
        if self.bfd.as_ref().map(|h| h.disc) != Some(c.local_discriminator) {
            return; // from a session already replaced
        }
        self.bfd_up = c.to == BfdState::Up;
        if self.bfd_up {
            if let Some(n) = self.waiting_for_bfd.take() {
                self.declare_up(n);
            }
        } else if c.path_failed() {
            warn!(diagnostic = %c.diagnostic, "BFD down: ending the BGP session");
            self.feed(Input::BfdDown);
        } else if c.from == BfdState::Up {
            info!(to = %c.to, peer = %c.peer_state, "BFD administratively down; BGP stays up");
        }
    }

    fn declare_up(&mut self, n: Negotiated) {
        let local = self
            .conns
            .get(&n.conn)
            .and_then(|c| c.local)
            .map(|a| match a.ip() {
                IpAddr::V6(v6) => v6
                    .to_ipv4_mapped()
                    .map(IpAddr::V4)
                    .unwrap_or(IpAddr::V6(v6)),
                v4 => v4,
            });
        let local_ip = local.unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        let params = SessionParams {
            ctx: n.decode_context(),
            local_asn: self.config.local_asn,
            families: n.families.clone(),
            next_hop_v4: self.config.next_hop_v4.or(match local_ip {
                IpAddr::V4(a) if !a.is_unspecified() => Some(a),
                _ => None,
            }),
            next_hop_v6: self.config.next_hop_v6.or(match local_ip {
                IpAddr::V6(a) => Some(a),
                _ => None,
            }),
            ipv4_with_ipv6_next_hop: n.ipv4_with_ipv6_next_hop(),
            next_hop_link_local: match local_ip {
                IpAddr::V6(a) if is_link_local(local_ip) => Some(a),
                _ => None,
            },
            enhanced_route_refresh: n.enhanced_route_refresh,
        };
        if let Some(c) = self.conns.get_mut(&n.conn) {
            c.ctx = params.ctx;
        }
        info!(
            peer_as = n.peer_asn,
            hold = n.hold_time,
            "session established"
        );
        bump(&self.counters.established_transitions, 1);
        self.md5_hint_logged = false;
        let info = SessionInfo {
            peer_asn: n.peer_asn,
            peer_router_id: n.peer_router_id,
            local_address: local_ip,
            hold_time: n.hold_time,
            keepalive_time: n.keepalive_time,
            families: n.families.clone(),
            four_octet_asn: n.four_octet_asn,
            extended_messages: n.extended_messages,
            graceful_restart: n.graceful_restart,
            ipv4_with_ipv6_next_hop: n.ipv4_with_ipv6_next_hop(),
        };
        self.rib.session_reset();
        let mut buf = Vec::new();
        let stats = self.rib.drain(&params, &mut buf);
        self.count_drain(stats);
        // End-of-RIB after the initial table (RFC 4724; harmless without graceful restart).
        end_of_rib(&params, &mut buf);
        bump(&self.counters.updates_sent, params.families.len() as u64);
        bump(&self.counters.messages_sent, params.families.len() as u64);
        self.session = Some(Session {
            conn: n.conn,
            params,
        });
        self.send_bytes(n.conn, buf);
        let _ = self.events.send(SessionEvent {
            peer: self.config.key(),
            kind: SessionEventKind::Up(info),
        });
    }

    fn flush_rib(&mut self) {
        let Some(s) = &self.session else { return };
        if !self.rib.has_pending() {
            return;
        }
        let mut buf = Vec::new();
        let stats = self.rib.drain(&s.params, &mut buf);
        let conn = s.conn;
        self.count_drain(stats);
        self.send_bytes(conn, buf);
    }

    /// Stops the outgoing attempt. One that ran for the whole connect-retry time timed out,
    /// though the FSM's timer (of the same length) ended it before its own timeout did: it
    /// says so, as the MD5 hint depends on it.
    fn abandon_connect(&mut self) {
        let Some((_, started, t)) = self.connect.take() else {
            return;
        };
        t.abort();
        let retry = self.config.connect_retry.max(Duration::from_secs(1));
        if started.elapsed() + Duration::from_millis(50) >= retry {
            self.connect_failed(&io::Error::new(
                io::ErrorKind::TimedOut,
                "connect timed out",
            ));
        } else {
            debug!("connect attempt cancelled");
        }
    }

    fn start_connect(&mut self) {
        self.abandon_connect();
        self.connect_seq += 1;
        let seq = self.connect_seq;
        debug!(attempt = seq, timeout = ?self.config.connect_retry, "connecting");
        let tx = self.tx.clone();
        let cfg = self.config.clone();
        let ttl = self.ttl();
        let t = tokio::spawn(async move {
            let r = connect(&cfg, ttl).await;
            let _ = tx.send(PeerMsg::Connected(seq, r));
        });
        self.connect = Some((seq, Instant::now(), t));
    }

    fn attach(&mut self, id: ConnId, stream: TcpStream) {
        let local = stream.local_addr().ok();
        let (r, w) = stream.into_split();
        let (wtx, wrx) = mpsc::unbounded_channel();
        let writer_task = tokio::spawn(writer(id, w, wrx, self.tx.clone()));
        let reader = tokio::spawn(reader(
            id,
            r,
            self.tx.clone(),
            self.counters.clone(),
            ReaderCtx {
                extended_messages: self.config.extended_messages,
                ibgp: self.config.is_ibgp(),
            },
        ));
        self.conns.insert(
            id,
            ConnHandle {
                writer: wtx,
                writer_task,
                reader,
                local,
                ctx: DecodeContext::default(),
            },
        );
    }

    /// Closes every connection and waits (bounded) until the writers have flushed what was
    /// queued (the Cease NOTIFICATION) and shut the sockets down.
    async fn close_all(&mut self) {
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        for id in ids {
            self.apply(Output::Close(id));
        }
        let writers = std::mem::take(&mut self.closing);
        let all = futures_join_all(writers);
        let _ = tokio::time::timeout(Duration::from_secs(3), all).await;
    }
}

/// Awaits every handle (no extra dependency for one join).
async fn futures_join_all(handles: Vec<JoinHandle<()>>) {
    for h in handles {
        let _ = h.await;
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn set_ttl(stream: &TcpStream, v6: bool, ttl: u32) -> io::Result<()> {
    let s = socket2::SockRef::from(stream);
    if v6 {
        s.set_unicast_hops_v6(ttl)
    } else {
        s.set_ttl_v4(ttl)
    }
}

/// Where to connect to: a link-local address carries its link's index as scope.
fn peer_socket_addr(cfg: &PeerConfig) -> io::Result<SocketAddr> {
    match (cfg.address, &cfg.interface) {
        (IpAddr::V6(v6), Some(interface)) if is_link_local(cfg.address) => {
            let scope = sockopt::if_index(interface)
                .map_err(|e| io::Error::new(e.kind(), format!("interface {interface}: {e}")))?;
            Ok(SocketAddr::V6(std::net::SocketAddrV6::new(
                v6, cfg.port, 0, scope,
            )))
        }
        _ => Ok(cfg.socket_addr()),
    }
}

async fn connect(cfg: &PeerConfig, ttl: Option<u8>) -> io::Result<TcpStream> {
    let addr = peer_socket_addr(cfg)?;
    let v6 = addr.is_ipv6();
    let s = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )?;
    s.set_nonblocking(true)?;
    s.set_tcp_nodelay(true)?;
    // The link of an unnumbered peer, else the VRF: routes and source addresses come from it.
    if let Some(device) = cfg.interface.as_ref().or(cfg.vrf.as_ref()) {
        s.bind_device(Some(device.as_bytes()))
            .map_err(|e| io::Error::new(e.kind(), format!("binding to {device}: {e}")))?;
    }
    if let Some(pw) = &cfg.md5_password {
        sockopt::set_tcp_md5(&s, addr, pw.as_bytes())?;
    }
    if let Some(hops) = cfg.gtsm_hops {
        sockopt::set_min_ttl(&s, v6, 255 - hops + 1)?;
        if v6 {
            s.set_unicast_hops_v6(255)?;
        } else {
            s.set_ttl_v4(255)?;
        }
    } else if let Some(ttl) = ttl {
        if v6 {
            s.set_unicast_hops_v6(ttl as u32)?;
        } else {
            s.set_ttl_v4(ttl as u32)?;
        }
    }
    if let Some(src) = cfg.source_address {
        s.bind(&SocketAddr::new(src, 0).into())?;
    }
    let socket = TcpSocket::from_std_stream(s.into());
    tokio::time::timeout(
        cfg.connect_retry.max(Duration::from_secs(1)),
        socket.connect(addr),
    )
    .await
    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))?
}

#[derive(Clone, Copy)]
struct ReaderCtx {
    extended_messages: bool,
    ibgp: bool,
}

/// Reads frames, decodes them with the context the OPEN exchange implies, and passes them on.
async fn reader(
    id: ConnId,
    mut r: OwnedReadHalf,
    tx: mpsc::UnboundedSender<PeerMsg>,
    counters: Arc<Counters>,
    rc: ReaderCtx,
) {
    let mut buf: Vec<u8> = Vec::with_capacity(65536);
    let mut start = 0usize;
    let mut ctx = DecodeContext::default();
    let fail = |error: MessageError| {
        let _ = tx.send(PeerMsg::Fsm(Box::new(Input::DecodeError {
            conn: id,
            error,
        })));
    };
    loop {
        // Decode every whole frame in the buffer.
        loop {
            let avail = &buf[start..];
            let len = match frame_len(avail, &ctx) {
                Ok(Some(len)) if avail.len() >= len => len,
                Ok(_) => break,
                Err(e) => return fail(e),
            };
            let frame = &avail[..len];
            start += len;
            bump(&counters.messages_received, 1);
            match Message::decode(frame, &ctx) {
                Ok(msg) => {
                    match &msg {
                        Message::Open(open) => {
                            // The session's encoding follows from the OPEN exchange; messages
                            // right behind the peer's KEEPALIVE must already use it.
                            ctx.four_octet_asn = open.four_octet_asn().is_some();
                            ctx.extended_messages = rc.extended_messages
                                && open.has(crate::packet::capability::cap_code::EXTENDED_MESSAGE);
                            ctx.ibgp = rc.ibgp;
                        }
                        Message::Notification(n) => {
                            bump(&counters.notifications_received, 1);
                            info!(notification = %n, "NOTIFICATION received");
                        }
                        _ => {}
                    }
                    if tx
                        .send(PeerMsg::Fsm(Box::new(Input::Received {
                            conn: id,
                            message: msg,
                        })))
                        .is_err()
                    {
                        return;
                    }
                }
                Err(e) => return fail(e),
            }
        }
        if start > 0 {
            buf.drain(..start);
            start = 0;
        }
        match r.read_buf(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = tx.send(PeerMsg::Fsm(Box::new(Input::TcpFailed { conn: Some(id) })));
                return;
            }
            Ok(_) => {}
        }
    }
}

/// Writes what is queued, many messages per syscall; reports when writes stall (RFC 9687).
async fn writer(
    id: ConnId,
    mut w: OwnedWriteHalf,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    tx: mpsc::UnboundedSender<PeerMsg>,
) {
    let mut buf: Vec<u8> = Vec::new();
    while let Some(first) = rx.recv().await {
        buf.clear();
        buf.extend_from_slice(&first);
        while let Ok(more) = rx.try_recv() {
            buf.extend_from_slice(&more);
        }
        // Try without waiting first; only a full socket buffer counts as blocked.
        let written = match w.try_write(&buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(_) => break,
        };
        if written < buf.len() {
            let _ = tx.send(PeerMsg::Fsm(Box::new(Input::SendBlocked { conn: id })));
            if w.write_all(&buf[written..]).await.is_err() {
                break;
            }
            let _ = tx.send(PeerMsg::Fsm(Box::new(Input::SendDrained { conn: id })));
        }
    }
    // Sender dropped: the connection is being closed.
    let _ = tokio::time::timeout(Duration::from_secs(2), w.shutdown()).await;
}

fn unmap(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}
