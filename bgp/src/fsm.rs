//! The BGP finite state machine of one peer (RFC 4271 section 8), sans-IO.
//!
//! [`Fsm::process`] takes an [`Input`] (an administrative event, a TCP event, a received
//! message or a timer expiry) and returns the [`Output`]s the driver must carry out: connect,
//! send, close, start or stop a timer, report the session up or down. Nothing here reads a
//! clock or touches a socket, so every transition is tested without either.
//!
//! A peer may have two TCP connections at once (ours and the peer's) until collision
//! detection (RFC 4271 6.8) keeps one; each connection has its own OpenSent / OpenConfirm /
//! Established progress and its own timers, and [`Fsm::state`] reports the most advanced.

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::packet::capability::cap_code;
use crate::packet::error::codes;
use crate::packet::{
    Afi, Capability, DecodeContext, Family, GrFamily, GracefulRestartCap, Message, MessageError,
    Notification, Open, RouteRefreshSubtype, AS_TRANS,
};

/// Identifies one TCP connection; chosen by the driver.
pub type ConnId = u64;

/// RFC 4271 states, as the peer is seen from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum State {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
}

/// Graceful restart settings (RFC 4724), as the restarting speaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GracefulRestartConfig {
    /// How long the peer should keep our routes after our session drops, in seconds (< 4096).
    pub restart_time: u16,
    /// Set the R bit and the F bits in the next OPEN: we have just restarted and kept
    /// forwarding (our routes are still valid). Cleared once a session is established.
    pub restarting: bool,
}

/// Settings of one peer that the FSM needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsmConfig {
    pub local_asn: u32,
    /// The AS the peer must present in its OPEN; ignored when `any_external_asn`.
    pub peer_asn: u32,
    /// Accept any AS in the peer's OPEN except `local_asn` (the session is then eBGP).
    pub any_external_asn: bool,
    pub router_id: Ipv4Addr,
    /// Hold time we propose (0 or >= 3).
    pub hold_time: u16,
    /// Keepalive interval; `None` means a third of the negotiated hold time.
    pub keepalive_time: Option<u16>,
    pub connect_retry: Duration,
    /// First delay before reconnecting after a failure; doubles per consecutive failure.
    pub idle_hold: Duration,
    pub idle_hold_max: Duration,
    /// Never connect; wait for the peer.
    pub passive: bool,
    pub families: Vec<Family>,
    pub extended_messages: bool,
    /// Advertise RFC 8950 (IPv4 unicast routes with IPv6 next hops).
    pub extended_next_hop: bool,
    pub graceful_restart: Option<GracefulRestartConfig>,
    /// `None`: max(8 minutes, 2 x hold time) as RFC 9687 suggests.
    pub send_hold_time: Option<Duration>,
}

impl FsmConfig {
    pub fn is_ibgp(&self) -> bool {
        !self.any_external_asn && self.local_asn == self.peer_asn
    }

    /// Sensible defaults for a load-balancer speaker.
    pub fn new(local_asn: u32, peer_asn: u32, router_id: Ipv4Addr) -> Self {
        FsmConfig {
            local_asn,
            peer_asn,
            any_external_asn: false,
            router_id,
            hold_time: 90,
            keepalive_time: None,
            connect_retry: Duration::from_secs(10),
            idle_hold: Duration::from_millis(500),
            idle_hold_max: Duration::from_secs(60),
            passive: false,
            families: vec![Family::IPV4_UNICAST, Family::IPV6_UNICAST],
            extended_messages: true,
            extended_next_hop: false,
            graceful_restart: None,
            send_hold_time: None,
        }
    }
}

/// The timers of a peer; per-connection ones carry the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    ConnectRetry,
    /// Delay before the next attempt after a failure (backoff).
    IdleHold,
    Hold(ConnId),
    Keepalive(ConnId),
    /// RFC 9687: started while our writes are blocked.
    SendHold(ConnId),
}

/// Why we stop a peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// Cease / Administrative Shutdown, with an optional RFC 9003 message.
    Shutdown(Option<String>),
    /// Cease / Peer De-configured.
    Deconfigured,
    /// Cease / Other Configuration Change (the session must be renegotiated).
    ConfigChange,
    /// Our own restart with graceful restart: close TCP without a NOTIFICATION, so the peer
    /// keeps our routes for the restart time (RFC 4724 section 4).
    GracefulRestart,
}

/// What the driver tells the FSM.
// Carries a Message by value like `Message` itself (see there).
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// ManualStart (or ManualStart_with_PassiveTcpEstablishment when configured passive).
    Start,
    Stop(StopReason),
    /// A TCP connection is up: ours (`inbound: false`, after [`Output::Connect`]) or the peer's.
    TcpConnected {
        conn: ConnId,
        inbound: bool,
    },
    /// Our connect attempt failed (`conn: None`), or a connection closed or broke.
    TcpFailed {
        conn: Option<ConnId>,
    },
    Received {
        conn: ConnId,
        message: Message,
    },
    /// A message that could not be decoded; the error holds the NOTIFICATION to send.
    DecodeError {
        conn: ConnId,
        error: MessageError,
    },
    TimerExpired(Timer),
    /// Our writes to `conn` cannot make progress (socket buffer full).
    SendBlocked {
        conn: ConnId,
    },
    /// The write queue of `conn` drained again.
    SendDrained {
        conn: ConnId,
    },
    /// The BFD session to the peer went down after having been up: the path is gone, so every
    /// connection ends at once with Cease / BFD Down (RFC 9384) instead of waiting for the
    /// hold timer.
    BfdDown,
}

/// Parameters agreed in the OPEN exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Negotiated {
    pub conn: ConnId,
    pub peer_asn: u32,
    pub peer_router_id: Ipv4Addr,
    pub hold_time: u16,
    pub keepalive_time: u16,
    pub four_octet_asn: bool,
    pub extended_messages: bool,
    /// Families both sides advertised.
    pub families: Vec<Family>,
    pub route_refresh: bool,
    pub enhanced_route_refresh: bool,
    /// RFC 8950 encodings the peer accepts: (NLRI family, next hop AFI).
    pub extended_next_hop: Vec<(Family, Afi)>,
    /// Both sides advertised graceful restart.
    pub graceful_restart: bool,
    /// The peer's graceful restart capability, if any.
    pub peer_graceful_restart: Option<GracefulRestartCap>,
    pub ibgp: bool,
}

impl Negotiated {
    pub fn decode_context(&self) -> DecodeContext {
        DecodeContext {
            four_octet_asn: self.four_octet_asn,
            extended_messages: self.extended_messages,
            ibgp: self.ibgp,
        }
    }

    /// Whether IPv4 unicast routes may carry an IPv6 next hop (RFC 8950).
    pub fn ipv4_with_ipv6_next_hop(&self) -> bool {
        self.extended_next_hop
            .iter()
            .any(|(f, nh)| *f == Family::IPV4_UNICAST && *nh == Afi::IPV6)
    }
}

/// Why an established session (or an attempt at one) ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DownReason {
    /// We stopped the peer.
    Stopped(StopReason),
    /// The peer sent this NOTIFICATION.
    NotificationReceived(Notification),
    /// We found an error and sent this NOTIFICATION (hold timer expiry included).
    NotificationSent(Notification),
    /// The TCP connection closed or broke without a NOTIFICATION.
    ConnectionLost,
    /// The peer opened a new connection and its OPEN replaced the established session
    /// (the peer restarted).
    Replaced,
}

impl std::fmt::Display for DownReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DownReason::Stopped(r) => write!(f, "stopped: {r:?}"),
            DownReason::NotificationReceived(n) => write!(f, "NOTIFICATION received: {n}"),
            DownReason::NotificationSent(n) => write!(f, "NOTIFICATION sent: {n}"),
            DownReason::ConnectionLost => f.write_str("connection lost"),
            DownReason::Replaced => f.write_str("replaced by a new connection from the peer"),
        }
    }
}

/// What the FSM asks the driver to do.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// Open a TCP connection to the peer; report it with [`Input::TcpConnected`] or
    /// [`Input::TcpFailed`] `{ conn: None }`.
    Connect,
    /// Abandon the pending connect attempt.
    CancelConnect,
    Send(ConnId, Message),
    /// Flush what is queued on `conn` (bounded), then close it.
    Close(ConnId),
    StartTimer(Timer, Duration),
    StopTimer(Timer),
    /// The session is up on `Negotiated::conn`: send the routes.
    Established(Negotiated),
    /// The established session ended.
    Down(DownReason),
    /// The peer asked for our routes again (RFC 2918 / RFC 7313).
    RouteRefreshRequested(Family),
    /// An UPDATE arrived (for counters); `treat_as_withdraw` per RFC 7606.
    UpdateReceived {
        end_of_rib: Option<Family>,
        treat_as_withdraw: bool,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ConnState {
    OpenSent,
    OpenConfirm,
    Established,
}

#[derive(Debug, Clone)]
struct Conn {
    id: ConnId,
    inbound: bool,
    state: ConnState,
    negotiated: Option<Negotiated>,
}

/// Hold time while waiting for the OPEN (RFC 4271 8.2.2 suggests 4 minutes).
const OPEN_HOLD_TIME: Duration = Duration::from_secs(240);

/// The FSM of one peer.
#[derive(Debug, Clone)]
pub struct Fsm {
    cfg: FsmConfig,
    started: bool,
    connecting: bool,
    idle_hold_pending: bool,
    conns: Vec<Conn>,
    consecutive_failures: u32,
}

impl Fsm {
    pub fn new(cfg: FsmConfig) -> Self {
        Fsm {
            cfg,
            started: false,
            connecting: false,
            idle_hold_pending: false,
            conns: Vec::new(),
            consecutive_failures: 0,
        }
    }

    pub fn config(&self) -> &FsmConfig {
        &self.cfg
    }

    /// The state as RFC 4271 names it (the most advanced connection wins).
    pub fn state(&self) -> State {
        if !self.started {
            return State::Idle;
        }
        if let Some(best) = self.conns.iter().map(|c| c.state).max_by_key(|s| *s as u8) {
            return match best {
                ConnState::OpenSent => State::OpenSent,
                ConnState::OpenConfirm => State::OpenConfirm,
                ConnState::Established => State::Established,
            };
        }
        if self.connecting {
            State::Connect
        } else if self.idle_hold_pending {
            State::Idle
        } else {
            State::Active
        }
    }

    /// The negotiated parameters of the established session, if any.
    pub fn established(&self) -> Option<&Negotiated> {
        self.conns
            .iter()
            .find(|c| c.state == ConnState::Established)
            .and_then(|c| c.negotiated.as_ref())
    }

    /// Feeds one input; returns what to do, in order.
    pub fn process(&mut self, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        match input {
            Input::Start => self.start(&mut out),
            Input::Stop(reason) => self.stop(reason, &mut out),
            Input::TcpConnected { conn, inbound } => self.connected(conn, inbound, &mut out),
            Input::TcpFailed { conn: None } => {
                if self.connecting {
                    // Connect -> Active: wait for ConnectRetry (which keeps running).
                    self.connecting = false;
                }
            }
            Input::TcpFailed { conn: Some(id) } => {
                if let Some(c) = self.remove_conn(id, &mut out) {
                    self.lost(c, DownReason::ConnectionLost, &mut out);
                }
            }
            Input::Received { conn, message } => self.received(conn, message, &mut out),
            Input::DecodeError { conn, error } => {
                self.fail_conn(conn, error.to_notification(), &mut out)
            }
            Input::TimerExpired(t) => self.timer(t, &mut out),
            Input::SendBlocked { conn } => {
                if self.conn(conn).is_some() {
                    out.push(Output::StartTimer(
                        Timer::SendHold(conn),
                        self.send_hold_time(),
                    ));
                }
            }
            Input::SendDrained { conn } => {
                if self.conn(conn).is_some() {
                    out.push(Output::StopTimer(Timer::SendHold(conn)));
                }
            }
            Input::BfdDown => {
                let ids: Vec<ConnId> = self.conns.iter().map(|c| c.id).collect();
                for id in ids {
                    self.fail_conn(
                        id,
                        Notification::new(codes::CEASE, codes::BFD_DOWN),
                        &mut out,
                    );
                }
            }
        }
        out
    }

    fn send_hold_time(&self) -> Duration {
        self.cfg.send_hold_time.unwrap_or_else(|| {
            Duration::from_secs(480).max(Duration::from_secs(2 * self.cfg.hold_time as u64))
        })
    }

    fn conn(&self, id: ConnId) -> Option<&Conn> {
        self.conns.iter().find(|c| c.id == id)
    }

    fn start(&mut self, out: &mut Vec<Output>) {
        if self.started {
            return;
        }
        self.started = true;
        self.consecutive_failures = 0;
        self.attempt(out);
    }

    /// Idle -> Connect (active) or Active (passive).
    fn attempt(&mut self, out: &mut Vec<Output>) {
        self.idle_hold_pending = false;
        if self.cfg.passive || !self.conns.is_empty() {
            return;
        }
        self.connecting = true;
        out.push(Output::Connect);
        out.push(Output::StartTimer(
            Timer::ConnectRetry,
            self.cfg.connect_retry,
        ));
    }

    fn stop(&mut self, reason: StopReason, out: &mut Vec<Output>) {
        if !self.started {
            return;
        }
        self.started = false;
        let notification = match &reason {
            StopReason::Shutdown(msg) => Some(Notification::cease_with_message(
                codes::ADMINISTRATIVE_SHUTDOWN,
                msg.as_deref().unwrap_or(""),
            )),
            StopReason::Deconfigured => {
                Some(Notification::new(codes::CEASE, codes::PEER_DECONFIGURED))
            }
            StopReason::ConfigChange => Some(Notification::new(
                codes::CEASE,
                codes::OTHER_CONFIGURATION_CHANGE,
            )),
            StopReason::GracefulRestart => None,
        };
        if self.connecting {
            self.connecting = false;
            out.push(Output::CancelConnect);
        }
        out.push(Output::StopTimer(Timer::ConnectRetry));
        out.push(Output::StopTimer(Timer::IdleHold));
        self.idle_hold_pending = false;
        let mut was_established = false;
        for c in std::mem::take(&mut self.conns) {
            was_established |= c.state == ConnState::Established;
            if let Some(n) = &notification {
                out.push(Output::Send(c.id, Message::Notification(n.clone())));
            }
            out.push(Output::Close(c.id));
            stop_conn_timers(c.id, out);
        }
        if was_established {
            out.push(Output::Down(DownReason::Stopped(reason)));
        }
    }

    fn connected(&mut self, id: ConnId, inbound: bool, out: &mut Vec<Output>) {
        if !self.started || self.conns.len() >= 2 || self.conn(id).is_some() {
            // Idle refuses connections; a third connection has nothing to collide with.
            out.push(Output::Close(id));
            return;
        }
        if !inbound {
            if !self.connecting {
                // An attempt we already gave up on.
                out.push(Output::Close(id));
                return;
            }
            self.connecting = false;
        } else if self.connecting && self.conns.is_empty() {
            // The peer was faster; our attempt may still complete and collide, or fail.
        }
        if self.idle_hold_pending {
            self.idle_hold_pending = false;
            out.push(Output::StopTimer(Timer::IdleHold));
        }
        if !self.connecting {
            out.push(Output::StopTimer(Timer::ConnectRetry));
        }
        self.conns.push(Conn {
            id,
            inbound,
            state: ConnState::OpenSent,
            negotiated: None,
        });
        out.push(Output::Send(id, Message::Open(self.our_open())));
        out.push(Output::StartTimer(Timer::Hold(id), OPEN_HOLD_TIME));
    }

    /// The OPEN we send.
    pub fn our_open(&self) -> Open {
        let cfg = &self.cfg;
        let mut caps: Vec<Capability> = cfg
            .families
            .iter()
            .map(|f| Capability::Multiprotocol(*f))
            .collect();
        caps.push(Capability::RouteRefresh);
        caps.push(Capability::EnhancedRouteRefresh);
        caps.push(Capability::FourOctetAsn(cfg.local_asn));
        if cfg.extended_messages {
            caps.push(Capability::ExtendedMessage);
        }
        if cfg.extended_next_hop {
            caps.push(Capability::ExtendedNextHop(vec![(
                Family::IPV4_UNICAST,
                Afi::IPV6,
            )]));
        }
        if let Some(gr) = cfg.graceful_restart {
            caps.push(Capability::GracefulRestart(GracefulRestartCap {
                restart_state: gr.restarting,
                notification: false,
                restart_time: gr.restart_time.min(4095),
                families: cfg
                    .families
                    .iter()
                    .map(|f| GrFamily {
                        family: *f,
                        forwarding_preserved: gr.restarting,
                    })
                    .collect(),
            }));
        }
        Open::new(cfg.local_asn, cfg.hold_time, cfg.router_id, caps)
    }

    fn remove_conn(&mut self, id: ConnId, out: &mut Vec<Output>) -> Option<Conn> {
        let pos = self.conns.iter().position(|c| c.id == id)?;
        let c = self.conns.remove(pos);
        stop_conn_timers(id, out);
        Some(c)
    }

    /// A connection is gone; report and recover.
    fn lost(&mut self, c: Conn, reason: DownReason, out: &mut Vec<Output>) {
        if c.state == ConnState::Established {
            out.push(Output::Down(reason));
        }
        if self.conns.is_empty() && !self.connecting && self.started {
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            let shift = (self.consecutive_failures - 1).min(16);
            let delay = self
                .cfg
                .idle_hold
                .saturating_mul(1 << shift)
                .min(self.cfg.idle_hold_max);
            self.idle_hold_pending = true;
            out.push(Output::StopTimer(Timer::ConnectRetry));
            out.push(Output::StartTimer(Timer::IdleHold, delay));
        }
    }

    /// Answers an error on `id` with `n`, closes it and recovers.
    fn fail_conn(&mut self, id: ConnId, n: Notification, out: &mut Vec<Output>) {
        if self.conn(id).is_none() {
            return;
        }
        out.push(Output::Send(id, Message::Notification(n.clone())));
        out.push(Output::Close(id));
        if let Some(c) = self.remove_conn(id, out) {
            self.lost(c, DownReason::NotificationSent(n), out);
        }
    }

    fn timer(&mut self, t: Timer, out: &mut Vec<Output>) {
        if !self.started {
            return;
        }
        match t {
            Timer::ConnectRetry => {
                if !self.conns.is_empty() || self.cfg.passive {
                    return;
                }
                if self.connecting {
                    out.push(Output::CancelConnect);
                }
                self.connecting = true;
                out.push(Output::Connect);
                out.push(Output::StartTimer(
                    Timer::ConnectRetry,
                    self.cfg.connect_retry,
                ));
            }
            Timer::IdleHold => {
                if self.idle_hold_pending {
                    self.attempt(out);
                }
            }
            Timer::Hold(id) => {
                self.fail_conn(id, Notification::new(codes::HOLD_TIMER_EXPIRED, 0), out)
            }
            Timer::Keepalive(id) => {
                let Some(c) = self.conn(id) else { return };
                let Some(n) = &c.negotiated else { return };
                let every = Duration::from_secs(n.keepalive_time as u64);
                out.push(Output::Send(id, Message::Keepalive));
                out.push(Output::StartTimer(Timer::Keepalive(id), every));
            }
            Timer::SendHold(id) => {
                // RFC 9687: the peer stopped reading; we probably cannot even send this.
                self.fail_conn(
                    id,
                    Notification::new(codes::SEND_HOLD_TIMER_EXPIRED, 0),
                    out,
                )
            }
        }
    }

    fn received(&mut self, id: ConnId, message: Message, out: &mut Vec<Output>) {
        let Some(state) = self.conn(id).map(|c| c.state) else {
            return;
        };
        let fsm_error = |sub| Notification::new(codes::FSM_ERROR, sub);
        match (state, message) {
            (_, Message::Notification(n)) => {
                out.push(Output::Close(id));
                if let Some(c) = self.remove_conn(id, out) {
                    self.lost(c, DownReason::NotificationReceived(n), out);
                }
            }
            (ConnState::OpenSent, Message::Open(open)) => self.open_received(id, open, out),
            (ConnState::OpenSent, _) => {
                self.fail_conn(id, fsm_error(codes::FSM_UNEXPECTED_IN_OPEN_SENT), out)
            }
            (ConnState::OpenConfirm, Message::Keepalive) => self.establish(id, out),
            (ConnState::OpenConfirm, _) => {
                self.fail_conn(id, fsm_error(codes::FSM_UNEXPECTED_IN_OPEN_CONFIRM), out)
            }
            (ConnState::Established, Message::Keepalive) => self.restart_hold(id, out),
            (ConnState::Established, Message::Update(u)) => {
                self.restart_hold(id, out);
                out.push(Output::UpdateReceived {
                    end_of_rib: u.end_of_rib_family(),
                    treat_as_withdraw: u.treat_as_withdraw.is_some(),
                });
            }
            (ConnState::Established, Message::RouteRefresh(rr)) => {
                let negotiated = self
                    .conn(id)
                    .and_then(|c| c.negotiated.as_ref())
                    .is_some_and(|n| n.families.contains(&rr.family));
                // RFC 2918: a refresh for a family we did not negotiate is ignored; BoRR and
                // EoRR only frame routes the peer sends us.
                if negotiated && rr.subtype == RouteRefreshSubtype::Request {
                    out.push(Output::RouteRefreshRequested(rr.family));
                }
            }
            (ConnState::Established, Message::Open(_)) => {
                self.fail_conn(id, fsm_error(codes::FSM_UNEXPECTED_IN_ESTABLISHED), out)
            }
        }
    }

    fn restart_hold(&self, id: ConnId, out: &mut Vec<Output>) {
        if let Some(n) = self.conn(id).and_then(|c| c.negotiated.as_ref()) {
            if n.hold_time > 0 {
                out.push(Output::StartTimer(
                    Timer::Hold(id),
                    Duration::from_secs(n.hold_time as u64),
                ));
            }
        }
    }

    /// Checks the peer's OPEN (RFC 4271 6.2) and negotiates.
    fn check_open(&self, id: ConnId, open: &Open) -> Result<Negotiated, Notification> {
        let cfg = &self.cfg;
        let open_err = |sub, data: Vec<u8>| Notification {
            code: codes::OPEN_MESSAGE,
            subcode: sub,
            data,
        };
        let four = open.four_octet_asn();
        let asn_ok = if cfg.any_external_asn {
            open.asn() != cfg.local_asn
        } else {
            open.asn() == cfg.peer_asn
        };
        if !asn_ok || (four.is_none() && open.my_as == AS_TRANS) {
            return Err(open_err(
                codes::BAD_PEER_AS,
                open.my_as.to_be_bytes().to_vec(),
            ));
        }
        if four.is_some_and(|a| a <= u16::MAX as u32 && a != open.my_as as u32) {
            // RFC 6793 section 4.1: the two fields disagree on a 2-octet ASN.
            return Err(open_err(
                codes::BAD_PEER_AS,
                open.my_as.to_be_bytes().to_vec(),
            ));
        }
        if open.bgp_id == cfg.router_id {
            return Err(open_err(codes::BAD_BGP_IDENTIFIER, Vec::new()));
        }
        let peer_families = open.families();
        let families: Vec<Family> = cfg
            .families
            .iter()
            .copied()
            .filter(|f| peer_families.contains(f))
            .collect();
        if families.is_empty() {
            // Nothing in common to carry: tell which capabilities we need (RFC 5492).
            let mut data = Vec::new();
            for f in &cfg.families {
                Capability::Multiprotocol(*f).encode(&mut data);
            }
            return Err(open_err(codes::UNSUPPORTED_CAPABILITY, data));
        }
        let hold_time = cfg.hold_time.min(open.hold_time);
        let keepalive_time = if hold_time == 0 {
            0
        } else {
            let third = (hold_time / 3).max(1);
            cfg.keepalive_time.map_or(third, |k| k.clamp(1, third))
        };
        let extended_next_hop = if cfg.extended_next_hop {
            open.capabilities
                .iter()
                .find_map(|c| match c {
                    Capability::ExtendedNextHop(v) => Some(v.clone()),
                    _ => None,
                })
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let peer_gr = open.capabilities.iter().find_map(|c| match c {
            Capability::GracefulRestart(g) => Some(g.clone()),
            _ => None,
        });
        Ok(Negotiated {
            conn: id,
            peer_asn: open.asn(),
            peer_router_id: open.bgp_id,
            hold_time,
            keepalive_time,
            four_octet_asn: four.is_some(),
            extended_messages: cfg.extended_messages && open.has(cap_code::EXTENDED_MESSAGE),
            families,
            route_refresh: open.has(cap_code::ROUTE_REFRESH),
            enhanced_route_refresh: open.has(cap_code::ENHANCED_ROUTE_REFRESH),
            extended_next_hop,
            graceful_restart: cfg.graceful_restart.is_some() && peer_gr.is_some(),
            peer_graceful_restart: peer_gr,
            ibgp: cfg.is_ibgp(),
        })
    }

    fn open_received(&mut self, id: ConnId, open: Open, out: &mut Vec<Output>) {
        let negotiated = match self.check_open(id, &open) {
            Ok(n) => n,
            Err(n) => return self.fail_conn(id, n, out),
        };
        // Collision detection (RFC 4271 6.8) against the other connection, if it got as far
        // as knowing the peer's identifier.
        let other = self
            .conns
            .iter()
            .find(|c| c.id != id && c.negotiated.is_some())
            .map(|c| (c.id, c.inbound, c.state));
        if let Some((other_id, other_inbound, other_state)) = other {
            let this_inbound = self.conn(id).is_some_and(|c| c.inbound);
            if other_state == ConnState::Established {
                // A new OPEN from a peer we are established with: it restarted and the old
                // session is dead on its side. Replace it rather than wait for the hold timer.
                out.push(Output::Close(other_id));
                if let Some(c) = self.remove_conn(other_id, out) {
                    self.lost(c, DownReason::Replaced, out);
                }
            } else {
                // Keep the connection initiated by the speaker with the higher identifier.
                let local_wins = u32::from(self.cfg.router_id) > u32::from(open.bgp_id);
                let keep_inbound = !local_wins;
                let close = if this_inbound == other_inbound {
                    id
                } else if this_inbound == keep_inbound {
                    other_id
                } else {
                    id
                };
                let cease = Notification::new(codes::CEASE, codes::CONNECTION_COLLISION_RESOLUTION);
                out.push(Output::Send(close, Message::Notification(cease)));
                out.push(Output::Close(close));
                self.remove_conn(close, out);
                if close == id {
                    return;
                }
            }
        }
        let hold = negotiated.hold_time;
        let keepalive = negotiated.keepalive_time;
        if let Some(c) = self.conns.iter_mut().find(|c| c.id == id) {
            c.state = ConnState::OpenConfirm;
            c.negotiated = Some(negotiated);
        }
        out.push(Output::Send(id, Message::Keepalive));
        if hold > 0 {
            out.push(Output::StartTimer(
                Timer::Hold(id),
                Duration::from_secs(hold as u64),
            ));
            out.push(Output::StartTimer(
                Timer::Keepalive(id),
                Duration::from_secs(keepalive as u64),
            ));
        } else {
            out.push(Output::StopTimer(Timer::Hold(id)));
        }
    }

    fn establish(&mut self, id: ConnId, out: &mut Vec<Output>) {
        let Some(c) = self.conns.iter_mut().find(|c| c.id == id) else {
            return;
        };
        c.state = ConnState::Established;
        let negotiated = c.negotiated.clone();
        self.consecutive_failures = 0;
        if self.connecting {
            // Our own attempt is moot now.
            self.connecting = false;
            out.push(Output::CancelConnect);
            out.push(Output::StopTimer(Timer::ConnectRetry));
        }
        if let Some(gr) = &mut self.cfg.graceful_restart {
            // The restart is over once a session is up again.
            gr.restarting = false;
        }
        self.restart_hold(id, out);
        if let Some(n) = negotiated {
            out.push(Output::Established(n));
        }
    }
}

fn stop_conn_timers(id: ConnId, out: &mut Vec<Output>) {
    out.push(Output::StopTimer(Timer::Hold(id)));
    out.push(Output::StopTimer(Timer::Keepalive(id)));
    out.push(Output::StopTimer(Timer::SendHold(id)));
}

#[cfg(test)]
mod tests;
