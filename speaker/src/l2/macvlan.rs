//! The thin kernel side of the virtual MAC: one macvlan device per (address, interface), made
//! when the node takes the address and removed when it lets it go, through rtnetlink
//! (netlink-packet-route messages on a blocking netlink socket: each request is answered by
//! the kernel at once, and a takeover must not wait for a task switch).
//!
//! Why a macvlan: a NIC hands up frames for a MAC other than its own only as "other host"
//! (which IP drops) unless a device owns that MAC. The macvlan owns it, and the VIP's traffic
//! arriving on it is delivered locally like any other (the VIP is local on the node, on
//! kube-ipvs0 or as kube-proxy's rules make it).
//!
//! How the device is set up, and why:
//! - mode private: it only receives from the wire, it never talks to its siblings;
//! - NOARP: the kernel never answers ARP on it (the speaker answers, from the same MAC), and
//!   the speaker's interface selection skips it;
//! - IPv6 address generation off: no link-local address, so no DAD, Router Solicitations or
//!   MLD reports from the MAC on a node that does not own it yet;
//! - rp_filter 2 (loose) on it: the route back to a client goes out of the parent, not the
//!   macvlan, so a strict reverse-path filter (1) would drop every packet it receives. The
//!   effective value is the larger of `all` and the device's, so 2 is loose whatever `all` is.
//! - the IPv4 dummy address 192.0.0.8/32 (RFC 7600), scope host, without a prefix route: Linux
//!   rejects every packet arriving on a device with no IPv4 address as soon as any reverse-path
//!   filter is on, loose or strict. Not the VIP: with `arp_ignore=0` the kernel would then
//!   answer ARP for the VIP on the parent, from the parent's MAC. The dummy address is meant
//!   for interfaces without one of their own; nobody asks for it, and a host-scope address is
//!   never picked as the source of traffic leaving the node.

use crate::l2::packet::MacAddr;
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage, AddressScope};
use netlink_packet_route::link::{
    AfSpecInet, AfSpecInet6, AfSpecUnspec, In6AddrGenMode, InetDevConf, InfoData, InfoKind,
    InfoMacVlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage, MacVlanMode,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::time::Duration;

/// RFC 7600's IPv4 dummy address, on every virtual MAC device (module documentation).
pub const DUMMY_ADDRESS: Ipv4Addr = Ipv4Addr::new(192, 0, 0, 8);

/// A netlink route socket, for requests answered by an acknowledgement.
#[derive(Debug)]
pub struct Rtnetlink {
    socket: Socket,
    sequence: u32,
}

impl Rtnetlink {
    pub fn open() -> io::Result<Rtnetlink> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        // The kernel answers link requests at once; a bound keeps a wedged kernel from
        // stopping the data plane.
        socket2::SockRef::from(&socket).set_read_timeout(Some(Duration::from_secs(2)))?;
        Ok(Rtnetlink {
            socket,
            sequence: 0,
        })
    }

    /// Sends `message` and waits for the kernel's acknowledgement (or its error).
    fn request(&mut self, message: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        self.sequence = self.sequence.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        header.sequence_number = self.sequence;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(message));
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket.send(&buf, 0)?;
        let mut reply = Vec::with_capacity(8192);
        // Bounded: other messages on this socket (there are none, it joins no group) would be
        // skipped, at most a few.
        for _ in 0..16 {
            reply.clear();
            let n = match self.socket.recv(&mut reply, 0) {
                // SO_RCVTIMEO expired.
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    return Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no acknowledgement from the kernel",
                    ))
                }
                other => other?,
            };
            let mut at = 0;
            while at < n {
                // Something we cannot read is not our acknowledgement: read on.
                let Ok(parsed) = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&reply[at..n])
                else {
                    break;
                };
                let len = parsed.header.length as usize;
                if parsed.header.sequence_number == self.sequence {
                    if let NetlinkPayload::Error(e) = parsed.payload {
                        return match e.code {
                            None => Ok(()),
                            Some(_) => Err(e.to_io()),
                        };
                    }
                }
                if len == 0 {
                    break;
                }
                at += len;
            }
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "no acknowledgement from the kernel",
        ))
    }

    /// Makes (or remakes) macvlan device `name` on interface `parent` with `mac`, up, set up as
    /// the module documentation says; `sys_class_net` tells its index.
    pub fn add_macvlan(
        &mut self,
        name: &str,
        parent: u32,
        mac: MacAddr,
        sys_class_net: &Path,
    ) -> io::Result<()> {
        let create = || {
            let mut m = LinkMessage::default();
            m.header.flags = LinkFlags::Noarp;
            m.header.change_mask = LinkFlags::Noarp;
            m.attributes.push(LinkAttribute::IfName(name.to_owned()));
            m.attributes.push(LinkAttribute::Link(parent));
            m.attributes.push(LinkAttribute::Address(mac.0.to_vec()));
            m.attributes.push(LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::MacVlan),
                LinkInfo::Data(InfoData::MacVlan(vec![InfoMacVlan::Mode(
                    MacVlanMode::Private,
                )])),
            ]));
            RouteNetlinkMessage::NewLink(m)
        };
        match self.request(create(), NLM_F_CREATE | NLM_F_EXCL) {
            // Left by an earlier run (the speaker was killed): its settings are unknown.
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                self.delete_link(name)?;
                self.request(create(), NLM_F_CREATE | NLM_F_EXCL)?;
            }
            other => other?,
        }
        // Address generation and rp_filter are per-family settings the kernel takes on an
        // existing device; set while it is down, so it never has a link-local address.
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_owned()));
        let mut conf = InetDevConf::default();
        conf.rp_filter = 2;
        m.attributes.push(LinkAttribute::AfSpecUnspec(vec![
            AfSpecUnspec::Inet(vec![AfSpecInet::DevConfRequest(conf)]),
            AfSpecUnspec::Inet6(vec![AfSpecInet6::AddrGenMode(In6AddrGenMode::None)]),
        ]));
        let configured = self
            .request(RouteNetlinkMessage::SetLink(m), 0)
            .and_then(|()| {
                let index = std::fs::read_to_string(sys_class_net.join(name).join("ifindex"))?;
                let index: u32 = index.trim().parse().map_err(|_| {
                    io::Error::new(io::ErrorKind::InvalidData, format!("ifindex {index:?}"))
                })?;
                let mut a = AddressMessage::default();
                a.header.family = AddressFamily::Inet;
                a.header.prefix_len = 32;
                a.header.scope = AddressScope::Host;
                a.header.index = index;
                a.attributes
                    .push(AddressAttribute::Local(IpAddr::V4(DUMMY_ADDRESS)));
                a.attributes
                    .push(AddressAttribute::Address(IpAddr::V4(DUMMY_ADDRESS)));
                a.attributes
                    .push(AddressAttribute::Flags(AddressFlags::Noprefixroute));
                self.request(
                    RouteNetlinkMessage::NewAddress(a),
                    NLM_F_CREATE | NLM_F_EXCL,
                )
            })
            .and_then(|()| {
                let mut m = LinkMessage::default();
                m.attributes.push(LinkAttribute::IfName(name.to_owned()));
                m.header.flags = LinkFlags::Up;
                m.header.change_mask = LinkFlags::Up;
                self.request(RouteNetlinkMessage::SetLink(m), 0)
            });
        if let Err(e) = configured {
            let _ = self.delete_link(name);
            return Err(e);
        }
        Ok(())
    }

    /// Removes device `name`; one already gone is not an error.
    pub fn delete_link(&mut self, name: &str) -> io::Result<()> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_owned()));
        match self.request(RouteNetlinkMessage::DelLink(m), 0) {
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(()),
            other => other,
        }
    }
}
