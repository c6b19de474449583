//! ARP and IPv6 Neighbor Discovery frames, pure: bytes in, decisions and bytes out.
//!
//! The speaker answers ARP requests and Neighbor Solicitations for the addresses it owns, and on
//! takeover sends gratuitous ARP (a request and a reply, since some switches ignore one or the
//! other) and unsolicited Neighbor Advertisements (RFC 4861 7.2.6: to all-nodes, Override set,
//! Solicited clear, with the Target Link-Layer Address option). Frames are built once per
//! (address, interface) and kept, so a takeover sends without building anything.
//!
//! Formats are pnet's packet types (`pnet_packet`); the addresses' lengths, the extension
//! header chain and the NDP options are still checked here, because pnet reads what it is given.
//! The socket, its BPF filter and the frames' reception are `l2::sys`'s: pnet's datalink channel
//! cannot attach a socket filter.

use pnet_packet::arp::{
    ArpHardwareTypes, ArpOperation, ArpOperations, ArpPacket, MutableArpPacket,
};
use pnet_packet::ethernet::{EtherType, EtherTypes, EthernetPacket, MutableEthernetPacket};
use pnet_packet::icmpv6::ndp::{
    MutableNdpOptionPacket, MutableNeighborAdvertPacket, NdpOptionPacket, NdpOptionType,
    NdpOptionTypes, NeighborAdvertFlags, NeighborSolicitPacket,
};
use pnet_packet::icmpv6::{Icmpv6Code, Icmpv6Type, Icmpv6Types};
use pnet_packet::ip::{IpNextHeaderProtocol, IpNextHeaderProtocols};
use pnet_packet::ipv6::{ExtensionPacket, Ipv6Packet, MutableIpv6Packet};
use pnet_packet::Packet;
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

// The protocol numbers, by name (pnet's values; the byte-vector tests use these names too).
const ETHERTYPE_ARP: u16 = EtherTypes::Arp.0;
const ETHERTYPE_IPV6: u16 = EtherTypes::Ipv6.0;
const ICMPV6: u8 = IpNextHeaderProtocols::Icmpv6.0;
const NEIGHBOR_SOLICITATION: u8 = Icmpv6Types::NeighborSolicit.0;
const NEIGHBOR_ADVERTISEMENT: u8 = Icmpv6Types::NeighborAdvert.0;
const OPTION_SOURCE_LLA: u8 = NdpOptionTypes::SourceLLAddr.0;
const OPTION_TARGET_LLA: u8 = NdpOptionTypes::TargetLLAddr.0;
/// NA flags (RFC 4861 4.4): Router, Solicited, Override.
const NA_SOLICITED: u8 = NeighborAdvertFlags::Solicited;
const NA_OVERRIDE: u8 = NeighborAdvertFlags::Override;
const ETHERNET_HEADER: usize = 14;
const ARP_LEN: usize = 28;
const IPV6_HEADER: usize = 40;
/// Type, code, checksum, reserved, target: the fixed part of a solicitation or advertisement.
const ND_FIXED: usize = 24;
/// An advertisement carries one option, the Target Link-Layer Address (8 bytes).
const NA_LEN: usize = ND_FIXED + 8;

impl From<pnet_base::MacAddr> for MacAddr {
    fn from(m: pnet_base::MacAddr) -> Self {
        MacAddr(m.octets())
    }
}

impl From<MacAddr> for pnet_base::MacAddr {
    fn from(m: MacAddr) -> Self {
        let [a, b, c, d, e, f] = m.0;
        pnet_base::MacAddr(a, b, c, d, e, f)
    }
}

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

/// Reads an Ethernet frame as an ARP request or a Neighbor Solicitation.
pub fn parse_query(frame: &[u8]) -> Result<Query, Ignored> {
    let ethernet = EthernetPacket::new(frame).ok_or(Ignored::Truncated)?;
    match ethernet.get_ethertype().0 {
        ETHERTYPE_ARP => parse_arp(ethernet.payload()),
        ETHERTYPE_IPV6 => parse_ns(ethernet.payload(), ethernet.get_source().into()),
        _ => Err(Ignored::NotArpOrIpv6),
    }
}

/*
 ARP for IPv4 over Ethernet (RFC 826):
  htype(2)=1 ptype(2)=0x0800 hlen(1)=6 plen(1)=4 oper(2)=1 request / 2 reply
  sha(6) spa(4) tha(6) tpa(4)
*/
fn parse_arp(bytes: &[u8]) -> Result<Query, Ignored> {
    let arp = ArpPacket::new(bytes).ok_or(Ignored::Truncated)?;
    // pnet reads the addresses as Ethernet and IPv4 whatever the lengths say: check them.
    if arp.get_hardware_type() != ArpHardwareTypes::Ethernet
        || arp.get_protocol_type() != EtherTypes::Ipv4
        || arp.get_hw_addr_len() != 6
        || arp.get_proto_addr_len() != 4
        || arp.get_operation() != ArpOperations::Request
    {
        return Err(Ignored::NotAQuery);
    }
    Ok(Query::Arp {
        sender_mac: arp.get_sender_hw_addr().into(),
        sender_ip: arp.get_sender_proto_addr(),
        target: arp.get_target_proto_addr(),
    })
}

/// Extension headers a Neighbor Solicitation may come after (RFC 8200 4.1): Hop-by-Hop
/// Options, Destination Options, Routing. Each is `next header(1) length(1, 8-byte units not
/// counting the first 8)`, then its data. A Fragment header (44) is not walked: RFC 6980 forbids
/// fragmented Neighbor Discovery.
const HOP_BY_HOP: u8 = IpNextHeaderProtocols::Hopopt.0;
const ROUTING: u8 = IpNextHeaderProtocols::Ipv6Route.0;
const DESTINATION_OPTIONS: u8 = IpNextHeaderProtocols::Ipv6Opts.0;
/// At most this many extension headers before ICMPv6 (a bound against crafted chains).
const MAX_EXTENSION_HEADERS: usize = 8;

/*
 Neighbor Solicitation (RFC 4861 4.3), after the IPv6 header (hop limit 255) and any extension
 headers ending in next header 58:
  type(1)=135 code(1)=0 checksum(2) reserved(4) target(16) options: type(1) len(1, x8 bytes) ...
*/
fn parse_ns(bytes: &[u8], frame_source: MacAddr) -> Result<Query, Ignored> {
    let ip = Ipv6Packet::new(bytes).ok_or(Ignored::Truncated)?;
    if ip.get_version() != 6 {
        return Err(Ignored::NotAQuery);
    }
    let end = IPV6_HEADER + usize::from(ip.get_payload_length());
    if bytes.len() < end {
        return Err(Ignored::Truncated);
    }
    let (mut next, mut at) = (ip.get_next_header().0, IPV6_HEADER);
    for _ in 0..MAX_EXTENSION_HEADERS {
        if !matches!(next, HOP_BY_HOP | ROUTING | DESTINATION_OPTIONS) {
            break;
        }
        let ext = bytes
            .get(at..end)
            .and_then(ExtensionPacket::new)
            .ok_or(Ignored::Truncated)?;
        next = ext.get_next_header().0;
        at += (usize::from(ext.get_hdr_ext_len()) + 1) * 8;
    }
    if next != ICMPV6 {
        return Err(Ignored::NotAQuery);
    }
    let icmp = bytes.get(at..end).ok_or(Ignored::Truncated)?;
    let ns = NeighborSolicitPacket::new(icmp).ok_or(Ignored::Truncated)?;
    if ns.get_icmpv6_type().0 != NEIGHBOR_SOLICITATION {
        return Err(Ignored::NotAQuery);
    }
    let (source, destination) = (ip.get_source(), ip.get_destination());
    if ip.get_hop_limit() != 255
        || ns.get_icmpv6_code() != Icmpv6Code(0)
        || checksum(source, destination, icmp) != 0
    {
        return Err(Ignored::InvalidSolicitation);
    }
    let target = ns.get_target_addr();
    if target.is_multicast() {
        return Err(Ignored::InvalidSolicitation);
    }
    // Options, walked here: pnet's option iterator computes `length * 8` in a u8, which
    // overflows from length 32 on. A zero length is invalid (RFC 4861 7.1.1); the source
    // link-layer address is where a unicast answer goes, else the frame's own source.
    let mut source_mac = frame_source;
    let mut has_slla = false;
    let mut options = &icmp[ND_FIXED..];
    while let Some(option) = NdpOptionPacket::new(options) {
        let len = usize::from(option.get_length()) * 8;
        if len == 0 || len > options.len() {
            return Err(Ignored::InvalidSolicitation);
        }
        if option.get_option_type().0 == OPTION_SOURCE_LLA && len >= 8 {
            let mut m = [0u8; 6];
            m.copy_from_slice(&options[2..8]);
            source_mac = MacAddr(m);
            has_slla = true;
        }
        options = &options[len..];
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
    // No word skipped: the message's own checksum is summed in, so a right one gives 0.
    pnet_packet::util::ipv6_checksum(
        icmp,
        usize::MAX,
        &[],
        &source,
        &destination,
        IpNextHeaderProtocols::Icmpv6,
    )
}

fn ethernet(dst: MacAddr, src: MacAddr, ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0u8; ETHERNET_HEADER + payload.len()];
    let mut e = MutableEthernetPacket::new(&mut f).expect("sized for the header");
    e.set_destination(dst.into());
    e.set_source(src.into());
    e.set_ethertype(EtherType(ethertype));
    e.set_payload(payload);
    f
}

fn arp(op: ArpOperation, sha: MacAddr, spa: Ipv4Addr, tha: MacAddr, tpa: Ipv4Addr) -> Vec<u8> {
    let mut a = vec![0u8; ARP_LEN];
    let mut p = MutableArpPacket::new(&mut a).expect("sized for ARP");
    p.set_hardware_type(ArpHardwareTypes::Ethernet);
    p.set_protocol_type(EtherTypes::Ipv4);
    p.set_hw_addr_len(6);
    p.set_proto_addr_len(4);
    p.set_operation(op);
    p.set_sender_hw_addr(sha.into());
    p.set_sender_proto_addr(spa);
    p.set_target_hw_addr(tha.into());
    p.set_target_proto_addr(tpa);
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
        &arp(ArpOperations::Reply, our_mac, vip, sender_mac, sender_ip),
    )
}

/// Gratuitous ARP, both forms, broadcast: a request (target = sender = vip) and a reply.
pub fn gratuitous_arp(our_mac: MacAddr, vip: Ipv4Addr) -> [Vec<u8>; 2] {
    [
        ethernet(
            MacAddr::BROADCAST,
            our_mac,
            ETHERTYPE_ARP,
            &arp(ArpOperations::Request, our_mac, vip, MacAddr::ZERO, vip),
        ),
        ethernet(
            MacAddr::BROADCAST,
            our_mac,
            ETHERTYPE_ARP,
            &arp(ArpOperations::Reply, our_mac, vip, MacAddr::BROADCAST, vip),
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
    let mut icmp = vec![0u8; NA_LEN];
    {
        let mut na = MutableNeighborAdvertPacket::new(&mut icmp).expect("sized for an NA");
        na.set_icmpv6_type(Icmpv6Type(NEIGHBOR_ADVERTISEMENT));
        na.set_icmpv6_code(Icmpv6Code(0));
        na.set_flags(flags);
        na.set_target_addr(vip);
    }
    {
        let mut option =
            MutableNdpOptionPacket::new(&mut icmp[ND_FIXED..]).expect("sized for the option");
        option.set_option_type(NdpOptionType(OPTION_TARGET_LLA));
        option.set_length(1);
        option.set_data(&our_mac.0);
    }
    let sum = checksum(vip, destination, &icmp);
    MutableNeighborAdvertPacket::new(&mut icmp)
        .expect("sized for an NA")
        .set_checksum(sum);
    let mut ip = vec![0u8; IPV6_HEADER + icmp.len()];
    let mut p = MutableIpv6Packet::new(&mut ip).expect("sized for the header");
    p.set_version(6);
    p.set_payload_length(icmp.len() as u16);
    p.set_next_header(IpNextHeaderProtocol(ICMPV6));
    p.set_hop_limit(255);
    p.set_source(vip);
    p.set_destination(destination);
    p.set_payload(&icmp);
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
