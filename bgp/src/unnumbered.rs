//! BGP unnumbered: finding the router at the other end of a link that has only IPv6
//! link-local addresses, the way FRR does (RFC 5549 / 8950 deployments): the router's IPv6
//! Router Advertisements name its link-local address. We ask for one at once with a Router
//! Solicitation (FRR answers at once) and announce ourselves with Router Advertisements of
//! router lifetime 0: FRR learns a peer's link-local address from nothing else (not from
//! the neighbour table, nor from an incoming connection, which it refuses until then), and
//! forgets it when the link flaps, so we keep announcing. Lifetime 0: no host takes us for a
//! default router.
//!
//! The messages are built and checked here without I/O; [`LinkWatch`] is the thin tokio side:
//! one raw ICMPv6 socket bound to the link.

use std::io;
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6};
use std::time::Duration;

use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, info, info_span, warn, Instrument};

use crate::config::is_link_local;
use crate::sockopt;

/// ICMPv6 types (RFC 4861 section 4).
pub const ROUTER_SOLICITATION: u8 = 133;
pub const ROUTER_ADVERTISEMENT: u8 = 134;
/// All-routers and all-nodes link-scope multicast groups.
const ALL_ROUTERS: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 2);
const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
/// How often we announce ourselves; FRR's unnumbered interfaces advertise every 10 s.
const ADVERTISE_EVERY: Duration = Duration::from_secs(10);
/// While no router has been heard: three solicitations 1 s apart (FRR answers at once), then
/// one every 4 s (RFC 4861 6.3.7 / RFC 7559), with an advertisement of ours at most every 3 s
/// (MIN_DELAY_BETWEEN_RAS, RFC 4861 section 10).
const SOLICIT_FIRST: Duration = Duration::from_secs(1);
const SOLICIT_THEN: Duration = Duration::from_secs(4);
const ADVERTISE_WAITING: Duration = Duration::from_secs(3);

/// A Router Solicitation (RFC 4861 section 4.1), without options: the kernel fills in the
/// checksum of raw ICMPv6 sockets.
///
/// ```text
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |     Type      |     Code      |          Checksum             |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                            Reserved                           |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
pub fn router_solicitation() -> [u8; 8] {
    [ROUTER_SOLICITATION, 0, 0, 0, 0, 0, 0, 0]
}

/// A Router Advertisement (RFC 4861 section 4.2) with router lifetime 0, no options: "I am
/// here", not "route through me".
///
/// ```text
///  0                   1                   2                   3
///  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |     Type      |     Code      |          Checksum             |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// | Cur Hop Limit |M|O|  Reserved |       Router Lifetime         |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                         Reachable Time                        |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// |                          Retrans Timer                        |
/// +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
/// ```
pub fn router_advertisement() -> [u8; 16] {
    let mut m = [0u8; 16];
    m[0] = ROUTER_ADVERTISEMENT;
    m
}

/// Why a received message does not name the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NotARouter {
    /// Not a Router Advertisement, or shorter than one.
    NotAnAdvertisement,
    /// Code other than 0 (RFC 4861 section 6.1.2).
    BadCode,
    /// Hop limit not 255: it was forwarded, so it did not come from the link.
    Forwarded(Option<u8>),
    /// Source not link-local (RFC 4861 section 6.1.2).
    NotLinkLocal,
    /// Router lifetime 0: not a router (another FerroLB node announcing itself, or a router
    /// going away).
    NotARouter,
}

/// The router a received ICMPv6 message (without IPv6 header, as raw ICMPv6 sockets deliver
/// it) names: the link-local source of a valid Router Advertisement.
pub fn router_from(
    icmp: &[u8],
    source: Ipv6Addr,
    hop_limit: Option<u8>,
) -> Result<Ipv6Addr, NotARouter> {
    if icmp.len() < 16 || icmp[0] != ROUTER_ADVERTISEMENT {
        return Err(NotARouter::NotAnAdvertisement);
    }
    if icmp[1] != 0 {
        return Err(NotARouter::BadCode);
    }
    if hop_limit != Some(255) {
        return Err(NotARouter::Forwarded(hop_limit));
    }
    if !is_link_local(source.into()) {
        return Err(NotARouter::NotLinkLocal);
    }
    if icmp[6] == 0 && icmp[7] == 0 {
        return Err(NotARouter::NotARouter);
    }
    Ok(source)
}

/// Watches one link for its router: the newest router heard, `None` until one is.
#[derive(Debug)]
pub struct LinkWatch {
    interface: String,
    router: watch::Receiver<Option<Ipv6Addr>>,
    task: JoinHandle<()>,
}

impl Drop for LinkWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl LinkWatch {
    /// Opens the link's ICMPv6 socket and starts soliciting and listening. Fails when the
    /// interface does not exist (or IPv6 is off on it). Must run inside a tokio runtime.
    pub fn start(interface: &str) -> io::Result<LinkWatch> {
        let ifindex = sockopt::if_index(interface)
            .map_err(|e| io::Error::new(e.kind(), format!("interface {interface}: {e}")))?;
        let s = socket2::Socket::new(
            socket2::Domain::IPV6,
            socket2::Type::RAW,
            Some(socket2::Protocol::ICMPV6),
        )?;
        s.set_nonblocking(true)?;
        s.bind_device(Some(interface.as_bytes()))?;
        // RFC 4861: neighbour discovery messages leave with hop limit 255.
        s.set_multicast_hops_v6(255)?;
        s.set_unicast_hops_v6(255)?;
        s.set_multicast_if_v6(ifindex)?;
        s.set_multicast_loop_v6(false)?;
        sockopt::set_icmp6_pass_only(&s, &[ROUTER_ADVERTISEMENT])?;
        sockopt::set_recv_ttl(&s, true)?;
        // tokio drives any datagram socket this way; the raw socket keeps its own semantics.
        let sock = UdpSocket::from_std(s.into())?;
        let (tx, router) = watch::channel(None);
        let span = info_span!("link", interface);
        let task = tokio::spawn(run(sock, ifindex, tx).instrument(span));
        Ok(LinkWatch {
            interface: interface.to_owned(),
            router,
            task,
        })
    }

    pub fn interface(&self) -> &str {
        &self.interface
    }

    /// The router heard last on the link.
    pub fn router(&self) -> Option<Ipv6Addr> {
        *self.router.borrow()
    }

    /// A receiver that sees every change of router.
    pub fn subscribe(&self) -> watch::Receiver<Option<Ipv6Addr>> {
        self.router.clone()
    }

    /// Whether the watch still runs (it ends when its socket fails, e.g. the link went away).
    pub fn is_running(&self) -> bool {
        !self.task.is_finished()
    }
}

fn send(sock: &UdpSocket, msg: &[u8], to: Ipv6Addr, ifindex: u32) -> io::Result<()> {
    let dest = SocketAddr::V6(SocketAddrV6::new(to, 0, 0, ifindex));
    sock.try_send_to(msg, dest).map(|_| ())
}

async fn run(sock: UdpSocket, ifindex: u32, tx: watch::Sender<Option<Ipv6Addr>>) {
    let mut advertise = tokio::time::interval(ADVERTISE_EVERY);
    let mut buf = [0u8; 1500];
    let mut failures = 0u32;
    let mut solicited = 0u32;
    let mut next_solicit = tokio::time::Instant::now();
    let mut last_advert: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            // Until a router is heard (and while our link-local address is still tentative,
            // when sends fail), ask for its advertisement and announce ourselves, rate-limited.
            _ = tokio::time::sleep_until(next_solicit), if tx.borrow().is_none() => {
                if let Err(e) = send(&sock, &router_solicitation(), ALL_ROUTERS, ifindex) {
                    debug!(error = %e, "router solicitation not sent");
                }
                solicited += 1;
                let gap = if solicited < 3 { SOLICIT_FIRST } else { SOLICIT_THEN };
                next_solicit = tokio::time::Instant::now() + gap;
                if last_advert.is_none_or(|t| t.elapsed() >= ADVERTISE_WAITING) {
                    match send(&sock, &router_advertisement(), ALL_NODES, ifindex) {
                        Ok(()) => last_advert = Some(tokio::time::Instant::now()),
                        Err(e) => debug!(error = %e, "router advertisement not sent"),
                    }
                }
            }
            _ = advertise.tick() => {
                // The interface went away (or was made anew): this socket is bound to a dead
                // index; end, so the watch is started again on the new one.
                if crate::sockopt::if_name(ifindex).is_none() {
                    warn!("the interface is gone; watch ended");
                    return;
                }
                match send(&sock, &router_advertisement(), ALL_NODES, ifindex) {
                    Ok(()) => last_advert = Some(tokio::time::Instant::now()),
                    Err(e) => debug!(error = %e, "router advertisement not sent"),
                }
            }
            got = sock.async_io(Interest::READABLE, || sockopt::recv_with_ttl(&sock, &mut buf)) => {
                match got {
                    Ok((n, SocketAddr::V6(from), hops)) => {
                        failures = 0;
                        match router_from(&buf[..n], *from.ip(), hops) {
                            Ok(router) => {
                                if *tx.borrow() != Some(router) {
                                    info!(%router, "router heard on the link");
                                    tx.send_replace(Some(router));
                                }
                            }
                            Err(why) => debug!(from = %from.ip(), ?why, "ICMPv6 message ignored"),
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        failures += 1;
                        debug!(error = %e, "receive failed");
                        if failures > 100 {
                            warn!(error = %e, "link socket keeps failing; watch ended");
                            return;
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTER: Ipv6Addr = Ipv6Addr::new(0xfe80, 0, 0, 0, 0x200, 0x5eff, 0xfe00, 0x5301);

    #[test]
    fn solicitation_and_advertisement_bytes() {
        assert_eq!(router_solicitation(), [133, 0, 0, 0, 0, 0, 0, 0]);
        let ra = router_advertisement();
        assert_eq!(ra[0], 134);
        assert_eq!(
            &ra[6..8],
            &[0, 0],
            "router lifetime 0: not a default router"
        );
        assert!(ra[1..].iter().all(|b| *b == 0));
    }

    #[test]
    fn a_router_advertisement_from_the_link_names_the_router() {
        // FRR's: hop limit 64, lifetime 1800 s, reachable and retrans 0, source link-layer
        // address option.
        let mut frr = vec![
            134, 0, 0x12, 0x34, 64, 0, 0x07, 0x08, 0, 0, 0, 0, 0, 0, 0, 0,
        ];
        frr.extend([1, 1, 0x02, 0, 0x5e, 0, 0x53, 0x01]);
        assert_eq!(router_from(&frr, ROUTER, Some(255)), Ok(ROUTER));
    }

    #[test]
    fn anything_else_names_no_router() {
        assert_eq!(
            router_from(&router_advertisement(), ROUTER, Some(255)),
            Err(NotARouter::NotARouter),
            "lifetime 0: another FerroLB node, not a router"
        );
        let mut ra = router_advertisement();
        ra[7] = 30; // a router's lifetime
        assert_eq!(
            router_from(&ra, ROUTER, Some(64)),
            Err(NotARouter::Forwarded(Some(64)))
        );
        assert_eq!(
            router_from(&ra, ROUTER, None),
            Err(NotARouter::Forwarded(None))
        );
        assert_eq!(
            router_from(&ra, "2001:db8::1".parse().unwrap(), Some(255)),
            Err(NotARouter::NotLinkLocal)
        );
        assert_eq!(
            router_from(&router_solicitation(), ROUTER, Some(255)),
            Err(NotARouter::NotAnAdvertisement)
        );
        assert_eq!(
            router_from(&ra[..15], ROUTER, Some(255)),
            Err(NotARouter::NotAnAdvertisement)
        );
        let mut coded = ra;
        coded[1] = 1;
        assert_eq!(
            router_from(&coded, ROUTER, Some(255)),
            Err(NotARouter::BadCode)
        );
        assert_eq!(
            router_from(&[], ROUTER, Some(255)),
            Err(NotARouter::NotAnAdvertisement)
        );
    }
}
