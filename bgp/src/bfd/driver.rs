//! The thin tokio part of BFD: receive sockets shared by every session (UDP 3784 single hop,
//! 4784 multihop, per family, bound when the first session needs them), one send socket and
//! one task per session running its [`Session`].
//!
//! Received packets are checked in this order, and every drop is counted: TTL / hop limit
//! (single hop: exactly 255, RFC 5881 section 5; multihop: at least the session's minimum
//! TTL), decoding ([`ControlPacket::decode`]), then the session: by Your Discriminator when
//! set, which must belong to a session with the packet's source address, else by source
//! address.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

mod echo_io;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, info_span, warn, Instrument};

use super::fsm::{Input, Output, Session, SessionConfig, Timer, Timers};
use super::packet::{ControlPacket, SessionState};
use super::{BfdChange, BfdConfig};
use crate::sockopt;

/// UDP ports: where we listen and where peers listen. Tests on one host use other ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BfdPorts {
    pub single_hop: u16,
    pub multihop: u16,
    pub peer_single_hop: u16,
    pub peer_multihop: u16,
}

impl Default for BfdPorts {
    fn default() -> Self {
        BfdPorts {
            single_hop: 3784,
            multihop: 4784,
            peer_single_hop: 3784,
            peer_multihop: 4784,
        }
    }
}

/// Counters of one peer's BFD session, for metrics. Monotonic except `state`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BfdCounters {
    /// `None` while no BFD session runs (no BGP session has come up yet).
    pub state: Option<SessionState>,
    pub control_packets_in: u64,
    pub control_packets_out: u64,
    pub up_events: u64,
    pub down_events: u64,
    /// Packets from the peer's address dropped: bad TTL, undecodable, wrong discriminator,
    /// unexpected authentication.
    pub dropped: u64,
    /// What is in use now (gauges): our interval between packets before jitter (0 when the
    /// peer wants none), and the detection time (0 before the peer's first packet).
    pub tx_interval: Duration,
    pub detection_time: Duration,
    /// Echo packets sent, and back through the peer.
    pub echo_packets_out: u64,
    pub echo_packets_in: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    state: AtomicU8,
    packets_in: AtomicU64,
    packets_out: AtomicU64,
    up_events: AtomicU64,
    down_events: AtomicU64,
    dropped: AtomicU64,
    tx_interval_us: AtomicU64,
    detection_time_us: AtomicU64,
    echo_out: AtomicU64,
    echo_in: AtomicU64,
    /// Discriminator of the session that owns the gauges: a replaced session winding down
    /// must not overwrite its successor's state.
    owner: AtomicU32,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> BfdCounters {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        BfdCounters {
            state: match self.state.load(Ordering::Relaxed) {
                1 => Some(SessionState::AdminDown),
                2 => Some(SessionState::Down),
                3 => Some(SessionState::Init),
                4 => Some(SessionState::Up),
                _ => None,
            },
            control_packets_in: g(&self.packets_in),
            control_packets_out: g(&self.packets_out),
            up_events: g(&self.up_events),
            down_events: g(&self.down_events),
            dropped: g(&self.dropped),
            tx_interval: Duration::from_micros(g(&self.tx_interval_us)),
            detection_time: Duration::from_micros(g(&self.detection_time_us)),
            echo_packets_out: g(&self.echo_out),
            echo_packets_in: g(&self.echo_in),
        }
    }

    fn set_state(&self, disc: u32, s: Option<SessionState>) {
        if self.owner.load(Ordering::Relaxed) == disc {
            self.state
                .store(s.map_or(0, |s| s as u8 + 1), Ordering::Relaxed);
        }
    }
}

fn bump(a: &AtomicU64) {
    a.fetch_add(1, Ordering::Relaxed);
}

enum SessionMsg {
    Packet(ControlPacket),
    /// One of the session's echo packets came back.
    EchoReturned,
    SetTimers(Timers),
}

struct Entry {
    peer: IpAddr,
    /// Our address on the session while it runs echo (its echo packets carry it).
    echo_local: Option<Ipv4Addr>,
    /// The link of a link-local peer, else the session's VRF.
    scope: Option<String>,
    multihop: bool,
    min_ttl: u8,
    tx: mpsc::UnboundedSender<SessionMsg>,
    counters: Arc<Counters>,
}

#[derive(Default)]
struct Demux {
    by_disc: HashMap<u32, Entry>,
    /// By (peer address, multihop, scope: the link of a link-local peer, else the VRF).
    by_peer: HashMap<(IpAddr, bool, Option<String>), u32>,
}

/// (IPv6, multihop, VRF) of a receive socket.
type ReceiverKey = (bool, bool, Option<String>);

/// Where a session runs: the peer, our address (whose scope, for a link-local session, is the
/// link), the device the BGP session is bound to (its link or VRF) and its VRF.
pub(crate) struct BfdPath<'a> {
    pub(crate) peer: IpAddr,
    pub(crate) local: SocketAddr,
    pub(crate) device: Option<&'a str>,
    pub(crate) vrf: Option<&'a str>,
}

/// All BFD sessions of an engine.
pub(crate) struct BfdDriver {
    ports: Mutex<BfdPorts>,
    demux: Arc<Mutex<Demux>>,
    /// Receive tasks by (IPv6, multihop, VRF): packets that arrive in a VRF reach only
    /// sockets bound to it.
    receivers: Mutex<HashMap<ReceiverKey, JoinHandle<()>>>,
    /// Packets dropped that no configured peer sent.
    pub(crate) dropped_unknown: Arc<AtomicU64>,
    echo_receivers: echo_io::EchoReceivers,
    random: RandomState,
}

impl Drop for BfdDriver {
    fn drop(&mut self) {
        let r = self.receivers.get_mut().unwrap_or_else(|e| e.into_inner());
        for t in r.values() {
            t.abort();
        }
    }
}

/// A running session; dropping it sends AdminDown once and ends the session.
pub(crate) struct SessionHandle {
    demux: Weak<Mutex<Demux>>,
    pub(crate) disc: u32,
    tx: mpsc::UnboundedSender<SessionMsg>,
    pub(crate) local: IpAddr,
}

impl SessionHandle {
    pub(crate) fn set_timers(&self, cfg: &BfdConfig) {
        let _ = self.tx.send(SessionMsg::SetTimers(cfg.timers()));
    }
}

impl Drop for SessionHandle {
    fn drop(&mut self) {
        if let Some(d) = self.demux.upgrade() {
            let mut d = d.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(e) = d.by_disc.remove(&self.disc) {
                d.by_peer.remove(&(e.peer, e.multihop, e.scope));
            }
        }
        // The task sees its channel close (this sender and the demux entry's are gone),
        // says AdminDown and ends.
    }
}

impl BfdDriver {
    pub(crate) fn new() -> BfdDriver {
        BfdDriver {
            ports: Mutex::new(BfdPorts::default()),
            demux: Arc::default(),
            receivers: Mutex::default(),
            dropped_unknown: Arc::default(),
            echo_receivers: echo_io::EchoReceivers::default(),
            random: RandomState::new(),
        }
    }

    pub(crate) fn set_ports(&self, ports: BfdPorts) {
        *self.ports.lock().unwrap_or_else(|e| e.into_inner()) = ports;
    }

    fn ports(&self) -> BfdPorts {
        *self.ports.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn ensure_receiver(&self, v6: bool, multihop: bool, vrf: Option<&str>) -> io::Result<()> {
        let mut r = self.receivers.lock().unwrap_or_else(|e| e.into_inner());
        let key = (v6, multihop, vrf.map(str::to_owned));
        if r.get(&key).is_some_and(|t| !t.is_finished()) {
            return Ok(());
        }
        let ports = self.ports();
        let port = if multihop {
            ports.multihop
        } else {
            ports.single_hop
        };
        let ip: IpAddr = if v6 {
            Ipv6Addr::UNSPECIFIED.into()
        } else {
            Ipv4Addr::UNSPECIFIED.into()
        };
        let addr = SocketAddr::new(ip, port);
        let s = socket2::Socket::new(
            socket2::Domain::for_address(addr),
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )?;
        if v6 {
            s.set_only_v6(true)?;
        }
        s.set_reuse_address(true)?;
        s.set_nonblocking(true)?;
        if let Some(vrf) = vrf {
            s.bind_device(Some(vrf.as_bytes()))?;
        }
        sockopt::set_recv_ttl(&s, v6)?;
        s.bind(&addr.into())?;
        let sock = UdpSocket::from_std(s.into())?;
        let demux = Arc::downgrade(&self.demux);
        let unknown = self.dropped_unknown.clone();
        let span = info_span!("bfd_rx", port, v6, vrf);
        let vrf = key.2.clone();
        r.insert(
            key,
            tokio::spawn(receive(sock, multihop, vrf, demux, unknown).instrument(span)),
        );
        Ok(())
    }

    fn new_discriminator(&self, d: &Demux) -> u32 {
        let mut h = self.random.build_hasher();
        h.write_usize(d.by_disc.len());
        let mut disc = h.finish() as u32;
        while disc == 0 || d.by_disc.contains_key(&disc) {
            disc = disc.wrapping_add(1);
        }
        disc
    }

    /// Starts the session on `path`; state changes go to `notify`.
    pub(crate) fn open(
        &self,
        path: BfdPath<'_>,
        cfg: &BfdConfig,
        counters: Arc<Counters>,
        notify: impl Fn(BfdChange) + Send + 'static,
    ) -> io::Result<SessionHandle> {
        let BfdPath {
            peer,
            local,
            device,
            vrf,
        } = path;
        self.ensure_receiver(peer.is_ipv6(), cfg.multihop, vrf)?;
        let ports = self.ports();
        let sock = send_socket(local, device, &self.random)?;
        let port = if cfg.multihop {
            ports.peer_multihop
        } else {
            ports.peer_single_hop
        };
        let dest = match (peer, local) {
            (IpAddr::V6(p), SocketAddr::V6(l)) if l.scope_id() != 0 => {
                SocketAddr::V6(std::net::SocketAddrV6::new(p, port, 0, l.scope_id()))
            }
            _ => SocketAddr::new(peer, port),
        };
        // Which session a packet from `peer` belongs to: by the link for a link-local peer
        // (the same address can be a router on two links), else by the VRF.
        let scope = if crate::config::is_link_local(peer) {
            device.map(str::to_owned)
        } else {
            vrf.map(str::to_owned)
        };
        let local = local.ip();
        let (tx, rx) = mpsc::unbounded_channel();
        let disc = {
            let mut d = self.demux.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(old) = d.by_peer.remove(&(peer, cfg.multihop, scope.clone())) {
                d.by_disc.remove(&old);
            }
            let disc = self.new_discriminator(&d);
            d.by_disc.insert(
                disc,
                Entry {
                    peer,
                    echo_local: None,
                    scope: scope.clone(),
                    multihop: cfg.multihop,
                    min_ttl: if cfg.multihop { cfg.minimum_ttl } else { 255 },
                    tx: tx.clone(),
                    counters: counters.clone(),
                },
            );
            d.by_peer.insert((peer, cfg.multihop, scope), disc);
            disc
        };
        let (echo, echo_tx_us, echo_rx_us) = self.echo(cfg, peer, local, vrf, disc);
        let session = Session::new(SessionConfig {
            local_discriminator: disc,
            timers: cfg.timers(),
            passive: cfg.passive,
            auth: cfg.auth,
            echo_tx_us,
            echo_rx_us,
        });
        counters.owner.store(disc, Ordering::Relaxed);
        counters.set_state(disc, Some(SessionState::Down));
        let span = info_span!("bfd", %peer, %local, disc);
        tokio::spawn(
            SessionTask {
                session,
                sock,
                echo,
                dest,
                timers: HashMap::new(),
                counters,
                notify: Box::new(notify),
            }
            .run(rx)
            .instrument(span),
        );
        Ok(SessionHandle {
            demux: Arc::downgrade(&self.demux),
            disc,
            tx,
            local,
        })
    }
}

impl BfdDriver {
    /// The Echo function for a new session, where configured and possible (IPv4, single
    /// hop, default VRF, the peer in the neighbour table): the sender, our echo transmit
    /// interval and the Required Min Echo RX Interval we advertise (non-zero only when this
    /// node forwards on the link, so the peer's echo packets come back). Where it is not
    /// possible the session runs asynchronous BFD alone, and says why.
    fn echo(
        &self,
        cfg: &BfdConfig,
        peer: IpAddr,
        local: IpAddr,
        vrf: Option<&str>,
        disc: u32,
    ) -> (Option<echo_io::EchoIo>, Option<u32>, u32) {
        let Some(tx_us) = cfg.echo_tx_us() else {
            return (None, None, 0);
        };
        let (IpAddr::V4(peer4), IpAddr::V4(local4)) = (peer, local) else {
            warn!("BFD echo is for IPv4 sessions; this one runs without");
            return (None, None, 0);
        };
        if cfg.multihop || vrf.is_some() {
            warn!("BFD echo runs on single-hop sessions in the default VRF; this one runs without");
            return (None, None, 0);
        }
        let setup = echo_io::setup(peer4, local4, disc).and_then(|s| {
            self.echo_receivers
                .ensure(s.ifindex, Arc::downgrade(&self.demux))
                .map_err(|e| format!("echo receiver: {e}"))?;
            Ok(s)
        });
        match setup {
            Ok(s) => {
                let mut d = self.demux.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(e) = d.by_disc.get_mut(&disc) {
                    e.echo_local = Some(local4);
                }
                let rx_us = if s.loops_back {
                    tx_us
                } else {
                    warn!("IP forwarding is off on the interface to the peer: its echo packets would not come back, so we ask for none (ours still run)");
                    0
                };
                (Some(s.io), Some(tx_us), rx_us)
            }
            Err(why) => {
                warn!(%why, "BFD echo cannot run on this session; asynchronous BFD only");
                (None, None, 0)
            }
        }
    }
}

/// A UDP socket on `local` (bound to `device` if given), source port 49152-65535 (RFC 5881
/// section 4), TTL 255.
fn send_socket(
    local: SocketAddr,
    device: Option<&str>,
    random: &RandomState,
) -> io::Result<UdpSocket> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(local),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    s.set_nonblocking(true)?;
    if let Some(device) = device {
        s.bind_device(Some(device.as_bytes()))?;
    }
    if local.is_ipv6() {
        s.set_unicast_hops_v6(255)?;
    } else {
        s.set_ttl_v4(255)?;
    }
    let mut h = random.build_hasher();
    h.write(b"port");
    let mut port = 49152 + (h.finish() % 16384) as u16;
    let mut last = None;
    for _ in 0..64 {
        let mut at = local;
        at.set_port(port);
        match s.bind(&at.into()) {
            Ok(()) => return UdpSocket::from_std(s.into()),
            Err(e) => last = Some(e),
        }
        port = 49152 + (port - 49152 + 997) % 16384;
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free source port")))
}

/// Why the receive path dropped a packet (for logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DropReason {
    Ttl(Option<u8>),
    Decode(super::packet::DecodeError),
    UnknownDiscriminator,
    WrongSource,
    UnknownPeer,
}

async fn receive(
    sock: UdpSocket,
    multihop: bool,
    vrf: Option<String>,
    demux: Weak<Mutex<Demux>>,
    unknown: Arc<AtomicU64>,
) {
    let mut buf = [0u8; 1500];
    loop {
        let r = sock
            .async_io(Interest::READABLE, || {
                sockopt::recv_with_ttl(&sock, &mut buf)
            })
            .await;
        let (n, from, ttl) = match r {
            Ok(x) => x,
            Err(e) => {
                debug!(error = %e, "receive failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let Some(demux) = demux.upgrade() else { return };
        let d = demux.lock().unwrap_or_else(|e| e.into_inner());
        // The link of a link-local source, else the receiver's VRF.
        let scope = match from {
            SocketAddr::V6(a) if crate::config::is_link_local(from.ip()) => {
                sockopt::if_name(a.scope_id())
            }
            _ => vrf.clone(),
        };
        match route(&d, &buf[..n], from.ip(), ttl, multihop, scope.as_deref()) {
            Ok((entry, packet)) => {
                let _ = entry.tx.send(SessionMsg::Packet(packet));
            }
            Err((entry, why)) => {
                debug!(%from, ?why, "BFD packet dropped");
                match entry {
                    Some(e) => bump(&e.counters.dropped),
                    None => bump(&unknown),
                }
            }
        }
    }
}

type Routed<'a> = Result<(&'a Entry, ControlPacket), (Option<&'a Entry>, DropReason)>;

/// Finds the session a datagram belongs to, or why it is dropped (and whom to blame).
fn route<'a>(
    d: &'a Demux,
    bytes: &[u8],
    src: IpAddr,
    ttl: Option<u8>,
    multihop: bool,
    scope: Option<&str>,
) -> Routed<'a> {
    let src = match src {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(src),
        v4 => v4,
    };
    let by_src = d
        .by_peer
        .get(&(src, multihop, scope.map(str::to_owned)))
        .and_then(|disc| d.by_disc.get(disc));
    let min_ttl = by_src.map_or(if multihop { 1 } else { 255 }, |e| e.min_ttl);
    if ttl.is_none_or(|t| t < min_ttl) {
        return Err((by_src, DropReason::Ttl(ttl)));
    }
    let p = ControlPacket::decode(bytes).map_err(|e| (by_src, DropReason::Decode(e)))?;
    if p.your_discriminator != 0 {
        let Some(e) = d.by_disc.get(&p.your_discriminator) else {
            return Err((by_src, DropReason::UnknownDiscriminator));
        };
        if e.peer != src || e.multihop != multihop || e.scope.as_deref() != scope {
            return Err((by_src, DropReason::WrongSource));
        }
        return Ok((e, p));
    }
    match by_src {
        Some(e) => Ok((e, p)),
        None => Err((None, DropReason::UnknownPeer)),
    }
}

struct SessionTask {
    session: Session,
    sock: UdpSocket,
    echo: Option<echo_io::EchoIo>,
    dest: SocketAddr,
    timers: HashMap<Timer, Instant>,
    counters: Arc<Counters>,
    notify: Box<dyn Fn(BfdChange) + Send>,
}

impl SessionTask {
    async fn run(mut self, mut rx: mpsc::UnboundedReceiver<SessionMsg>) {
        self.feed(Input::Start);
        loop {
            let next = self
                .timers
                .iter()
                .min_by_key(|(_, at)| **at)
                .map(|(t, at)| (*t, *at));
            tokio::select! {
                m = rx.recv() => match m {
                    Some(SessionMsg::Packet(p)) => {
                        bump(&self.counters.packets_in);
                        self.feed(Input::Received(p));
                    }
                    Some(SessionMsg::SetTimers(t)) => self.feed(Input::SetTimers(t)),
                    Some(SessionMsg::EchoReturned) => {
                        bump(&self.counters.echo_in);
                        self.feed(Input::EchoReturned);
                    }
                    None => {
                        // Removed: tell the peer it was on purpose, not a failure.
                        self.feed(Input::AdminDown);
                        let disc = self.session.local_discriminator();
                        self.counters.set_state(disc, None);
                        return;
                    }
                },
                _ = sleep_until(next.map(|n| n.1)) => {
                    if let Some((t, _)) = next {
                        self.timers.remove(&t);
                        self.feed(Input::TimerExpired(t));
                    }
                }
            }
        }
    }

    fn feed(&mut self, input: Input) {
        for out in self.session.process(input) {
            match out {
                Output::Send(p) => {
                    bump(&self.counters.packets_out);
                    if let Err(e) = self.sock.try_send_to(&p.encode(), self.dest) {
                        debug!(error = %e, "BFD packet not sent");
                    }
                }
                Output::SendEcho(seq) => {
                    if let Some(e) = self.echo.as_mut() {
                        bump(&self.counters.echo_out);
                        if let Err(err) = e.send(seq) {
                            debug!(error = %err, "echo packet not sent");
                        }
                    }
                }
                Output::StartTimer(t, d) => {
                    self.timers.insert(t, Instant::now() + d);
                }
                Output::StopTimer(t) => {
                    self.timers.remove(&t);
                }
                Output::StateChanged {
                    from,
                    to,
                    diagnostic,
                } => {
                    info!(%from, %to, %diagnostic, "BFD session state");
                    if to == SessionState::Up {
                        if let Some(e) = self.echo.as_mut() {
                            e.refresh();
                        }
                    }
                    self.counters
                        .set_state(self.session.local_discriminator(), Some(to));
                    if to == SessionState::Up {
                        bump(&self.counters.up_events);
                    } else if from == SessionState::Up {
                        bump(&self.counters.down_events);
                    }
                    (self.notify)(BfdChange {
                        from,
                        to,
                        diagnostic,
                        peer_state: self.session.remote_state(),
                        local_discriminator: self.session.local_discriminator(),
                    });
                }
                Output::Discarded(why) => {
                    debug!(?why, "BFD packet discarded");
                    bump(&self.counters.dropped);
                }
            }
        }
        let us = |d: Option<Duration>| d.map_or(0, |d| d.as_micros() as u64);
        let c = &self.counters;
        if c.owner.load(Ordering::Relaxed) != self.session.local_discriminator() {
            return;
        }
        c.tx_interval_us
            .store(us(self.session.tx_interval()), Ordering::Relaxed);
        c.detection_time_us
            .store(us(self.session.detection_time()), Ordering::Relaxed);
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests;
