//! The tokio driver: one task per peer runs the [`Fsm`] and the [`AdjRibOut`] (`peer`), one
//! reader and one writer task per TCP connection, listener tasks (one set for the default VRF,
//! one per VRF in use) hand accepted connections to their peer. This module is the engine's
//! API and the peers' registry; `peer` is what runs a peer.
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
    if let Some(vrf) = vrf {
        // A listener bound to a VRF device shares the port with the unbound one of the
        // default VRF only with SO_REUSEPORT on both (the kernel then hands each connection
        // to the listener of its VRF, as bgpd's listeners do). Not on the default listeners
        // before a VRF needs it: another process could then share port 179 with us unseen.
        s.set_reuse_port(true)?;
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
        // The default VRF's listeners now share the port with this VRF's.
        for l in &self.shared.listeners {
            socket2::SockRef::from(l.as_ref())
                .set_reuse_port(true)
                .map_err(|error| EngineError::VrfListen {
                    vrf: vrf.clone(),
                    error,
                })?;
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

mod peer;
use peer::spawn_peer;
