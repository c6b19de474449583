//! ARP and IPv6 Neighbor Discovery frames, pure: bytes in, decisions and bytes out.
//!
//! The speaker answers ARP requests and Neighbor Solicitations for the addresses it owns, and on
//! takeover sends gratuitous ARP (a request and a reply, since some switches ignore one or the
//! other) and unsolicited Neighbor Advertisements (RFC 4861 7.2.6: to all-nodes, Override set,
//! Solicited clear, with the Target Link-Layer Address option). Frames are built once per
//! (address, interface) and kept, so a takeover sends without building anything.

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// An Ethernet MAC address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// The Ethernet multicast address of an IPv6 multicast address (RFC 2464 section 7).
    pub fn ipv6_multicast(group: Ipv6Addr) -> MacAddr {
        let o = group.octets();
        MacAddr([0x33, 0x33, o[12], o[13], o[14], o[15]])
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

const ETHERTYPE_ARP: u16 = 0x0806;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const ETHERNET_HEADER: usize = 14;
const ARP_LEN: usize = 28;
const IPV6_HEADER: usize = 40;
const ICMPV6: u8 = 58;
const NEIGHBOR_SOLICITATION: u8 = 135;
const NEIGHBOR_ADVERTISEMENT: u8 = 136;
const OPTION_SOURCE_LLA: u8 = 1;
const OPTION_TARGET_LLA: u8 = 2;
/// NA flags (RFC 4861 4.4): Router, Solicited, Override.
const NA_SOLICITED: u8 = 0x40;
const NA_OVERRIDE: u8 = 0x20;

/// All-nodes multicast, where unsolicited NAs go.
pub const ALL_NODES: Ipv6Addr = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);

/// The solicited-node multicast group of `addr` (RFC 4291 2.7.1), which the speaker joins for
/// each IPv6 address it owns, or the NIC filters the solicitations out.
pub fn solicited_node_group(addr: Ipv6Addr) -> Ipv6Addr {
    let o = addr.octets();
    Ipv6Addr::new(
        0xff02,
        0,
        0,
        0,
        0,
        1,
        0xff00 | u16::from(o[13]),
        u16::from_be_bytes([o[14], o[15]]),
    )
}

/// A question this node may have to answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Query {
    /// "Who has `target`? Tell `sender_ip` at `sender_mac`."
    Arp {
        sender_mac: MacAddr,
        sender_ip: Ipv4Addr,
        target: Ipv4Addr,
    },
    /// A Neighbor Solicitation for `target`; `source` is unspecified (::) for duplicate address
    /// detection, in which case the answer goes to all-nodes.
    Ndp {
        source_mac: MacAddr,
        source: Ipv6Addr,
        target: Ipv6Addr,
    },
}

/// Why a frame is not a query we answer. Not an error: most frames on a segment are not ours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ignored {
    Truncated,
    NotArpOrIpv6,
    NotAQuery,
    /// RFC 4861 7.1.1 validity checks failed (hop limit, code, checksum, length, target).
    InvalidSolicitation,
}

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn mac_at(b: &[u8], at: usize) -> MacAddr {
    let mut m = [0u8; 6];
    m.copy_from_slice(&b[at..at + 6]);
    MacAddr(m)
}

fn v6_at(b: &[u8], at: usize) -> Ipv6Addr {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[at..at + 16]);
    Ipv6Addr::from(a)
}

/// Reads an Ethernet frame as an ARP request or a Neighbor Solicitation.
pub fn parse_query(frame: &[u8]) -> Result<Query, Ignored> {
    if frame.len() < ETHERNET_HEADER {
        return Err(Ignored::Truncated);
    }
    match be16(frame, 12) {
        ETHERTYPE_ARP => parse_arp(&frame[ETHERNET_HEADER..]),
        ETHERTYPE_IPV6 => parse_ns(&frame[ETHERNET_HEADER..], mac_at(frame, 6)),
        _ => Err(Ignored::NotArpOrIpv6),
    }
}

/*
 ARP for IPv4 over Ethernet (RFC 826):
  htype(2)=1 ptype(2)=0x0800 hlen(1)=6 plen(1)=4 oper(2)=1 request / 2 reply
  sha(6) spa(4) tha(6) tpa(4)
*/
fn parse_arp(arp: &[u8]) -> Result<Query, Ignored> {
    if arp.len() < ARP_LEN {
        return Err(Ignored::Truncated);
    }
    if be16(arp, 0) != 1
        || be16(arp, 2) != 0x0800
        || arp[4] != 6
        || arp[5] != 4
        || be16(arp, 6) != 1
    {
        return Err(Ignored::NotAQuery);
    }
    Ok(Query::Arp {
        sender_mac: mac_at(arp, 8),
        sender_ip: Ipv4Addr::new(arp[14], arp[15], arp[16], arp[17]),
        target: Ipv4Addr::new(arp[24], arp[25], arp[26], arp[27]),
    })
}

/// Extension headers a Neighbor Solicitation may come after (RFC 8200 4.1): Hop-by-Hop
/// Options, Destination Options, Routing. Each is `next header(1) length(1, 8-byte units not
/// counting the first 8)`, then its data. A Fragment header (44) is not walked: RFC 6980 forbids
/// fragmented Neighbor Discovery.
const HOP_BY_HOP: u8 = 0;
const ROUTING: u8 = 43;
const DESTINATION_OPTIONS: u8 = 60;
/// At most this many extension headers before ICMPv6 (a bound against crafted chains).
const MAX_EXTENSION_HEADERS: usize = 8;

/*
 Neighbor Solicitation (RFC 4861 4.3), after the IPv6 header (hop limit 255) and any extension
 headers ending in next header 58:
  type(1)=135 code(1)=0 checksum(2) reserved(4) target(16) options: type(1) len(1, x8 bytes) ...
*/
fn parse_ns(ip: &[u8], frame_source: MacAddr) -> Result<Query, Ignored> {
    if ip.len() < IPV6_HEADER {
        return Err(Ignored::Truncated);
    }
    if ip[0] >> 4 != 6 {
        return Err(Ignored::NotAQuery);
    }
    let payload_len = usize::from(be16(ip, 4));
    if ip.len() < IPV6_HEADER + payload_len {
        return Err(Ignored::Truncated);
    }
    let end = IPV6_HEADER + payload_len;
    let (mut next, mut at) = (ip[6], IPV6_HEADER);
    for _ in 0..MAX_EXTENSION_HEADERS {
        if !matches!(next, HOP_BY_HOP | ROUTING | DESTINATION_OPTIONS) {
            break;
        }
        if at + 2 > end {
            return Err(Ignored::Truncated);
        }
        let len = (usize::from(ip[at + 1]) + 1) * 8;
        next = ip[at];
        at += len;
    }
    if next != ICMPV6 {
        return Err(Ignored::NotAQuery);
    }
    if at + 24 > end {
        return Err(Ignored::Truncated);
    }
    let icmp = &ip[at..end];
    if icmp[0] != NEIGHBOR_SOLICITATION {
        return Err(Ignored::NotAQuery);
    }
    let source = v6_at(ip, 8);
    let destination = v6_at(ip, 24);
    if ip[7] != 255 || icmp[1] != 0 || checksum(source, destination, icmp) != 0 {
        return Err(Ignored::InvalidSolicitation);
    }
    let target = v6_at(icmp, 8);
    if target.is_multicast() {
        return Err(Ignored::InvalidSolicitation);
    }
    // Options: a zero length is invalid (RFC 4861 7.1.1); the source link-layer address is
    // where a unicast answer goes, else the frame's own source.
    let mut source_mac = frame_source;
    let mut at = 24;
    let mut has_slla = false;
    while at + 2 <= icmp.len() {
        let (kind, len) = (icmp[at], usize::from(icmp[at + 1]) * 8);
        if len == 0 || at + len > icmp.len() {
            return Err(Ignored::InvalidSolicitation);
        }
        if kind == OPTION_SOURCE_LLA && len >= 8 {
            source_mac = mac_at(icmp, at + 2);
            has_slla = true;
        }
        at += len;
    }
    if source.is_unspecified() && has_slla {
        // RFC 4861 7.1.1: no source link-layer option with an unspecified source.
        return Err(Ignored::InvalidSolicitation);
    }
    Ok(Query::Ndp {
        source_mac,
        source,
        target,
    })
}

/// The Internet checksum of the ICMPv6 message `icmp` with its pseudo-header; 0 when a
/// received message's checksum is right.
pub fn checksum(source: Ipv6Addr, destination: Ipv6Addr, icmp: &[u8]) -> u16 {
    let mut sum: u32 = 0;
    let mut add = |bytes: &[u8]| {
        for chunk in bytes.chunks(2) {
            let word = if chunk.len() == 2 {
                u16::from_be_bytes([chunk[0], chunk[1]])
            } else {
                u16::from(chunk[0]) << 8
            };
            sum += u32::from(word);
        }
    };
    add(&source.octets());
    add(&destination.octets());
    add(&(icmp.len() as u32).to_be_bytes());
    add(&[0, 0, 0, ICMPV6]);
    add(icmp);
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn ethernet(dst: MacAddr, src: MacAddr, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(ETHERNET_HEADER + payload.len());
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&ethertype.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

fn arp(oper: u16, sha: MacAddr, spa: Ipv4Addr, tha: MacAddr, tpa: Ipv4Addr) -> [u8; ARP_LEN] {
    let mut a = [0u8; ARP_LEN];
    a[0..2].copy_from_slice(&1u16.to_be_bytes());
    a[2..4].copy_from_slice(&0x0800u16.to_be_bytes());
    a[4] = 6;
    a[5] = 4;
    a[6..8].copy_from_slice(&oper.to_be_bytes());
    a[8..14].copy_from_slice(&sha.0);
    a[14..18].copy_from_slice(&spa.octets());
    a[18..24].copy_from_slice(&tha.0);
    a[24..28].copy_from_slice(&tpa.octets());
    a
}

/// The unicast ARP reply telling `sender` that `vip` is at `our_mac`.
pub fn arp_reply(
    our_mac: MacAddr,
    vip: Ipv4Addr,
    sender_mac: MacAddr,
    sender_ip: Ipv4Addr,
) -> Vec<u8> {
    ethernet(
        sender_mac,
        our_mac,
        ETHERTYPE_ARP,
        &arp(2, our_mac, vip, sender_mac, sender_ip),
    )
}

/// Gratuitous ARP, both forms, broadcast: a request (target = sender = vip) and a reply.
pub fn gratuitous_arp(our_mac: MacAddr, vip: Ipv4Addr) -> [Vec<u8>; 2] {
    [
        ethernet(
            MacAddr::BROADCAST,
            our_mac,
            ETHERTYPE_ARP,
            &arp(1, our_mac, vip, MacAddr::ZERO, vip),
        ),
        ethernet(
            MacAddr::BROADCAST,
            our_mac,
            ETHERTYPE_ARP,
            &arp(2, our_mac, vip, MacAddr::BROADCAST, vip),
        ),
    ]
}

/// A Neighbor Advertisement for `vip` at `our_mac`, from `vip`, to `destination`.
fn neighbor_advertisement(
    our_mac: MacAddr,
    vip: Ipv6Addr,
    dst_mac: MacAddr,
    destination: Ipv6Addr,
    flags: u8,
) -> Vec<u8> {
    /*
     NA (RFC 4861 4.4): type(1)=136 code(1)=0 checksum(2) R|S|O|reserved(4) target(16)
     option Target Link-Layer Address: type(1)=2 length(1)=1 mac(6)
    */
    let mut icmp = [0u8; 32];
    icmp[0] = NEIGHBOR_ADVERTISEMENT;
    icmp[4] = flags;
    icmp[8..24].copy_from_slice(&vip.octets());
    icmp[24] = OPTION_TARGET_LLA;
    icmp[25] = 1;
    icmp[26..32].copy_from_slice(&our_mac.0);
    let sum = checksum(vip, destination, &icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut ip = Vec::with_capacity(IPV6_HEADER + icmp.len());
    ip.extend_from_slice(&[0x60, 0, 0, 0]);
    ip.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    ip.push(ICMPV6);
    ip.push(255);
    ip.extend_from_slice(&vip.octets());
    ip.extend_from_slice(&destination.octets());
    ip.extend_from_slice(&icmp);
    ethernet(dst_mac, our_mac, ETHERTYPE_IPV6, &ip)
}

/// The answer to a Neighbor Solicitation: unicast with Solicited set, or to all-nodes without
/// it when the solicitation came from the unspecified address (RFC 4861 7.2.4).
pub fn solicited_advertisement(
    our_mac: MacAddr,
    vip: Ipv6Addr,
    source_mac: MacAddr,
    source: Ipv6Addr,
) -> Vec<u8> {
    if source.is_unspecified() {
        neighbor_advertisement(
            our_mac,
            vip,
            MacAddr::ipv6_multicast(ALL_NODES),
            ALL_NODES,
            NA_OVERRIDE,
        )
    } else {
        neighbor_advertisement(our_mac, vip, source_mac, source, NA_SOLICITED | NA_OVERRIDE)
    }
}

/// An unsolicited Neighbor Advertisement, sent on takeover (RFC 4861 7.2.6).
pub fn unsolicited_advertisement(our_mac: MacAddr, vip: Ipv6Addr) -> Vec<u8> {
    neighbor_advertisement(
        our_mac,
        vip,
        MacAddr::ipv6_multicast(ALL_NODES),
        ALL_NODES,
        NA_OVERRIDE,
    )
}

/// The answer to `query` if it asks for an address in `owned`, from an interface with `our_mac`.
pub fn answer(
    query: &Query,
    our_mac: MacAddr,
    owns: impl Fn(std::net::IpAddr) -> bool,
) -> Option<Vec<u8>> {
    match *query {
        Query::Arp {
            sender_mac,
            sender_ip,
            target,
        } if owns(target.into()) => Some(arp_reply(our_mac, target, sender_mac, sender_ip)),
        Query::Ndp {
            source_mac,
            source,
            target,
        } if owns(target.into()) => {
            Some(solicited_advertisement(our_mac, target, source_mac, source))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
