//! Peer settings and session events: the vocabulary of the engine's public API.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use crate::bfd::BfdConfig;
use crate::fsm::{DownReason, FsmConfig, GracefulRestartConfig};
use crate::packet::{Family, BGP_PORT};

/// Which peer: its address, and the device that scopes it: the link of a link-local peer
/// (unnumbered) or the VRF of a peer in a VRF. The same address may then be two peers, as it
/// may be on two links or in two VRFs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PeerKey {
    pub address: IpAddr,
    pub device: Option<String>,
}

impl From<IpAddr> for PeerKey {
    fn from(address: IpAddr) -> Self {
        PeerKey {
            address,
            device: None,
        }
    }
}

impl From<&PeerKey> for PeerKey {
    fn from(k: &PeerKey) -> Self {
        k.clone()
    }
}

impl PartialEq<IpAddr> for PeerKey {
    fn eq(&self, other: &IpAddr) -> bool {
        self.device.is_none() && self.address == *other
    }
}

impl std::fmt::Display for PeerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.device {
            Some(d) => write!(f, "{}%{d}", self.address),
            None => write!(f, "{}", self.address),
        }
    }
}

/// True for fe80::/10.
pub fn is_link_local(a: IpAddr) -> bool {
    matches!(a, IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80)
}

/// How to reach and talk to one peer. Peers are identified by [`PeerConfig::key`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerConfig {
    pub address: IpAddr,
    /// The link a link-local `address` is on (BGP unnumbered): the connection is bound to it
    /// and the address scoped by it. Required for a link-local address.
    pub interface: Option<String>,
    /// The Linux VRF device the session runs in: connections are bound to it and accepted
    /// by a listener bound to it.
    pub vrf: Option<String>,
    /// TCP port of the peer (179).
    pub port: u16,
    pub local_asn: u32,
    /// The AS the peer must present; ignored when `any_external_asn`.
    pub peer_asn: u32,
    /// Accept any AS but our own from the peer (MetalLB's `dynamicASN: external`): the
    /// session is eBGP whatever AS the peer turns out to have.
    pub any_external_asn: bool,
    /// BGP identifier; `None` uses the engine's.
    pub router_id: Option<Ipv4Addr>,
    /// Bind outgoing connections to this address.
    pub source_address: Option<IpAddr>,
    /// Proposed hold time in seconds (0, or 3 and more).
    pub hold_time: u16,
    /// `None`: a third of the negotiated hold time.
    pub keepalive_time: Option<u16>,
    pub connect_retry: Duration,
    /// Only accept connections from the peer, never connect.
    pub passive: bool,
    /// TCP MD5 signature key (RFC 2385).
    pub md5_password: Option<String>,
    /// eBGP multihop: TTL of our packets (eBGP defaults to 1, iBGP to the system default).
    pub ebgp_multihop: Option<u8>,
    /// GTSM (RFC 5082): send with TTL 255 and accept only packets within this many hops.
    pub gtsm_hops: Option<u8>,
    pub families: Vec<Family>,
    /// Advertise RFC 8950 so IPv4 routes can use an IPv6 next hop (IPv6-only sessions).
    pub extended_next_hop: bool,
    pub extended_messages: bool,
    pub graceful_restart: Option<GracefulRestartConfig>,
    /// Next hops for routes that do not name one; `None`: our address on the session.
    pub next_hop_v4: Option<Ipv4Addr>,
    pub next_hop_v6: Option<Ipv6Addr>,
    /// RFC 9687; `None`: max(8 minutes, 2 x hold time).
    pub send_hold_time: Option<Duration>,
    /// First reconnect delay after a failure, doubled per consecutive failure up to a minute.
    pub idle_hold: Duration,
    /// Run BFD with the peer; its going down ends the BGP session at once.
    pub bfd: Option<BfdConfig>,
}

impl PeerConfig {
    /// A peer with the defaults of a load-balancer speaker: active, IPv4 and IPv6 unicast,
    /// hold 90 s, extended messages, no MD5, no graceful restart.
    pub fn new(address: IpAddr, local_asn: u32, peer_asn: u32) -> Self {
        PeerConfig {
            address,
            interface: None,
            vrf: None,
            port: BGP_PORT,
            local_asn,
            peer_asn,
            any_external_asn: false,
            router_id: None,
            source_address: None,
            hold_time: 90,
            keepalive_time: None,
            connect_retry: Duration::from_secs(5),
            passive: false,
            md5_password: None,
            ebgp_multihop: None,
            gtsm_hops: None,
            families: vec![Family::IPV4_UNICAST, Family::IPV6_UNICAST],
            extended_next_hop: false,
            extended_messages: true,
            graceful_restart: None,
            next_hop_v4: None,
            next_hop_v6: None,
            send_hold_time: None,
            idle_hold: Duration::from_millis(200),
            bfd: None,
        }
    }

    /// A peer in any AS but `local_asn` (`dynamicASN: external`).
    pub fn any_external(address: IpAddr, local_asn: u32) -> Self {
        PeerConfig {
            any_external_asn: true,
            ..PeerConfig::new(address, local_asn, 0)
        }
    }

    pub fn is_ibgp(&self) -> bool {
        !self.any_external_asn && self.local_asn == self.peer_asn
    }

    /// The peer's identity in the engine: the address, scoped by the interface of a
    /// link-local peer or else by the VRF.
    pub fn key(&self) -> PeerKey {
        PeerKey {
            address: self.address,
            device: self.interface.clone().or_else(|| self.vrf.clone()),
        }
    }

    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.address, self.port)
    }

    pub(crate) fn fsm_config(&self, default_router_id: Ipv4Addr) -> FsmConfig {
        let mut c = FsmConfig::new(
            self.local_asn,
            self.peer_asn,
            self.router_id.unwrap_or(default_router_id),
        );
        c.any_external_asn = self.any_external_asn;
        c.hold_time = self.hold_time;
        c.keepalive_time = self.keepalive_time;
        c.connect_retry = self.connect_retry;
        c.idle_hold = self.idle_hold;
        c.passive = self.passive;
        c.families = self.families.clone();
        c.extended_messages = self.extended_messages;
        c.extended_next_hop = self.extended_next_hop;
        c.graceful_restart = self.graceful_restart;
        c.send_hold_time = self.send_hold_time;
        c
    }

    /// Checks the settings; the error says what is wrong.
    pub fn validate(&self) -> Result<(), crate::EngineError> {
        let bad = |m: &str| Err(crate::EngineError::InvalidConfig(m.to_owned()));
        if self.local_asn == 0 || (self.peer_asn == 0 && !self.any_external_asn) {
            return bad("ASN 0 is reserved");
        }
        if self.hold_time == 1 || self.hold_time == 2 {
            return bad("hold time must be 0 or at least 3 seconds");
        }
        if self.md5_password.as_ref().is_some_and(|p| p.len() > 80) {
            return bad("TCP MD5 password longer than 80 bytes");
        }
        if self.gtsm_hops == Some(0) {
            return bad("GTSM hops must be at least 1");
        }
        if self.gtsm_hops.is_some() && self.ebgp_multihop.is_some() {
            return bad("GTSM and eBGP multihop are exclusive");
        }
        if self.families.is_empty() {
            return bad("no address family");
        }
        if is_link_local(self.address) && self.interface.is_none() {
            return bad("a link-local peer address needs its interface");
        }
        if self.interface.is_some() && !is_link_local(self.address) {
            return bad("an interface peer is reached by its link-local address");
        }
        if self.interface.is_some()
            && (self.ebgp_multihop.is_some() || self.source_address.is_some())
        {
            return bad(
                "a peer on an interface is directly connected: no multihop, no source address",
            );
        }
        if self.graceful_restart.is_some_and(|g| g.restart_time > 4095) {
            return bad("graceful restart time above 4095 seconds");
        }
        if let Some(b) = &self.bfd {
            b.validate().map_err(crate::EngineError::InvalidConfig)?;
        }
        Ok(())
    }
}

/// A session event for the caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionEvent {
    pub peer: PeerKey,
    pub kind: SessionEventKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEventKind {
    /// The session is established.
    Up(SessionInfo),
    /// The established session ended.
    Down(DownReason),
}

/// What was negotiated, for logs and status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    pub peer_asn: u32,
    pub peer_router_id: Ipv4Addr,
    pub local_address: IpAddr,
    pub hold_time: u16,
    pub keepalive_time: u16,
    pub families: Vec<Family>,
    pub four_octet_asn: bool,
    pub extended_messages: bool,
    pub graceful_restart: bool,
    pub ipv4_with_ipv6_next_hop: bool,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_external_peer_is_ebgp_and_valid_without_a_peer_asn() {
        let p = PeerConfig::any_external("192.0.2.1".parse().unwrap(), 64512);
        assert!(p.validate().is_ok());
        assert!(!p.is_ibgp());
        let fsm = p.fsm_config("192.0.2.10".parse().unwrap());
        assert!(fsm.any_external_asn && !fsm.is_ibgp());
        let fixed = PeerConfig::new("192.0.2.1".parse().unwrap(), 64512, 0);
        assert!(fixed.validate().is_err(), "ASN 0 is still reserved");
    }
}
