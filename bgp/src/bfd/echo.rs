//! The BFD Echo function for IPv4 single-hop sessions (RFC 5880 section 6.4, RFC 5881
//! section 4), sans-IO: the echo packets we send, the check of one coming back, and where the
//! peer is on the link (its MAC address and our interface, from the neighbour table).
//!
//! An echo packet is addressed to ourselves (source and destination: our address on the
//! session) and handed to the peer's MAC address, so the peer's forwarding plane, not its BFD,
//! sends it back: it tests the path through the peer. We look for it on the way back with
//! its TTL one lower (254), as FRR does. The payload is ours alone (the peer never reads it):
//! a magic, our discriminator and a sequence number.
//!
//! ```text
//!  IPv4 header (20 bytes, TTL 255, protocol 17, source = destination = our address)
//!  UDP header (8 bytes, 3785 -> 3785)
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                        Magic ("FLBE")                         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                   Our (local) discriminator                   |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                        Sequence number                        |
//! |                                                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use std::net::Ipv4Addr;

/// UDP port of BFD echo packets (RFC 5881 section 4).
pub const ECHO_PORT: u16 = 3785;
const MAGIC: [u8; 4] = *b"FLBE";
const IP_HEADER: usize = 20;
const UDP_HEADER: usize = 8;
const PAYLOAD: usize = 16;
/// The whole IPv4 packet we send.
pub const ECHO_LEN: usize = IP_HEADER + UDP_HEADER + PAYLOAD;
/// TTL of what we send; it comes back one hop lower.
const SENT_TTL: u8 = 255;
const RETURNED_TTL: u8 = SENT_TTL - 1;

/// The Internet checksum (RFC 1071) of `bytes`, plus `initial` (a pseudo-header's sum).
fn checksum(initial: u32, bytes: &[u8]) -> u16 {
    let mut sum = initial;
    for pair in bytes.chunks(2) {
        let word = u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)]);
        sum += u32::from(word);
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// The echo packet (IPv4 header included) from and to `ours`.
pub fn echo_packet(ours: Ipv4Addr, discriminator: u32, seq: u64, ip_id: u16) -> [u8; ECHO_LEN] {
    let mut p = [0u8; ECHO_LEN];
    let total = ECHO_LEN as u16;
    p[0] = 0x45; // version 4, header 5 words
    p[1] = 0xc0; // DSCP CS6 (network control), as BFD control packets
    p[2..4].copy_from_slice(&total.to_be_bytes());
    p[4..6].copy_from_slice(&ip_id.to_be_bytes());
    p[8] = SENT_TTL;
    p[9] = 17; // UDP
    p[12..16].copy_from_slice(&ours.octets());
    p[16..20].copy_from_slice(&ours.octets());
    let ip_sum = checksum(0, &p[..IP_HEADER]);
    p[10..12].copy_from_slice(&ip_sum.to_be_bytes());

    let udp_len = (UDP_HEADER + PAYLOAD) as u16;
    let u = IP_HEADER;
    p[u..u + 2].copy_from_slice(&ECHO_PORT.to_be_bytes());
    p[u + 2..u + 4].copy_from_slice(&ECHO_PORT.to_be_bytes());
    p[u + 4..u + 6].copy_from_slice(&udp_len.to_be_bytes());
    let d = u + UDP_HEADER;
    p[d..d + 4].copy_from_slice(&MAGIC);
    p[d + 4..d + 8].copy_from_slice(&discriminator.to_be_bytes());
    p[d + 8..d + 16].copy_from_slice(&seq.to_be_bytes());
    // Pseudo-header: source, destination, protocol, UDP length.
    let mut pseudo = 0u32;
    for half in ours.octets().chunks(2) {
        pseudo += 2 * u32::from(u16::from_be_bytes([half[0], half[1]]));
    }
    pseudo += 17 + u32::from(udp_len);
    let mut udp_sum = checksum(pseudo, &p[u..]);
    if udp_sum == 0 {
        udp_sum = 0xffff; // 0 means "no checksum" in UDP over IPv4
    }
    p[u + 6..u + 8].copy_from_slice(&udp_sum.to_be_bytes());
    p
}

/// One of our echo packets, back from the peer: whose (discriminator) and which (sequence).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Returned {
    pub discriminator: u32,
    pub seq: u64,
}

/// Checks an IPv4 packet received on the link: one of ours, looped back by the peer (TTL one
/// lower, source and destination our own `ours`, intact).
pub fn returned(packet: &[u8], ours: Ipv4Addr) -> Option<Returned> {
    if packet.len() < ECHO_LEN || packet[0] != 0x45 || packet[9] != 17 {
        return None;
    }
    if packet[8] != RETURNED_TTL || checksum(0, &packet[..IP_HEADER]) != 0 {
        return None;
    }
    let addr =
        |at: usize| Ipv4Addr::new(packet[at], packet[at + 1], packet[at + 2], packet[at + 3]);
    if addr(12) != ours || addr(16) != ours {
        return None;
    }
    let u = IP_HEADER;
    let port = |at: usize| u16::from_be_bytes([packet[at], packet[at + 1]]);
    if port(u + 2) != ECHO_PORT {
        return None;
    }
    let d = u + UDP_HEADER;
    if packet[d..d + 4] != MAGIC {
        return None;
    }
    let discriminator =
        u32::from_be_bytes([packet[d + 4], packet[d + 5], packet[d + 6], packet[d + 7]]);
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&packet[d + 8..d + 16]);
    Some(Returned {
        discriminator,
        seq: u64::from_be_bytes(seq),
    })
}

/// Where a directly connected IPv4 peer is: its MAC address and the interface, from
/// `/proc/net/arp` (complete entries only; the first one, when the address is on several).
pub fn neighbour(proc_net_arp: &str, peer: Ipv4Addr) -> Option<([u8; 6], String)> {
    neighbours(proc_net_arp, peer).next()
}

/// The peer's MAC address on `device` (after the peer changed its MAC, say).
pub fn neighbour_on(proc_net_arp: &str, peer: Ipv4Addr, device: &str) -> Option<[u8; 6]> {
    neighbours(proc_net_arp, peer).find_map(|(mac, d)| (d == device).then_some(mac))
}

fn neighbours(proc_net_arp: &str, peer: Ipv4Addr) -> impl Iterator<Item = ([u8; 6], String)> + '_ {
    const ATF_COM: u32 = 0x2;
    proc_net_arp.lines().skip(1).filter_map(move |line| {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.first()?.parse::<Ipv4Addr>().ok()? != peer {
            return None;
        }
        let flags = u32::from_str_radix(f.get(2)?.trim_start_matches("0x"), 16).ok()?;
        if flags & ATF_COM == 0 {
            return None;
        }
        let mut mac = [0u8; 6];
        let parts: Vec<&str> = f.get(3)?.split(':').collect();
        if parts.len() != 6 {
            return None;
        }
        for (b, p) in mac.iter_mut().zip(parts) {
            *b = u8::from_str_radix(p, 16).ok()?;
        }
        Some((mac, f.get(5)?.to_string()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const OURS: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

    /// As it comes back: the peer's forwarding plane took one from the TTL and fixed the
    /// header checksum.
    fn looped_back(mut p: [u8; ECHO_LEN]) -> [u8; ECHO_LEN] {
        p[8] -= 1;
        p[10..12].copy_from_slice(&[0, 0]);
        let sum = checksum(0, &p[..20]);
        p[10..12].copy_from_slice(&sum.to_be_bytes());
        p
    }

    #[test]
    fn echo_bytes() {
        let p = echo_packet(OURS, 0x0102_0304, 7, 0xabcd);
        assert_eq!(
            &p[..20],
            &[
                0x45, 0xc0, 0, 44, 0xab, 0xcd, 0, 0, 255, 17, 0x8b, 0x30, 192, 0, 2, 1, 192, 0, 2,
                1
            ],
            "IPv4 header"
        );
        assert_eq!(checksum(0, &p[..20]), 0, "the header checksum holds");
        assert_eq!(
            &p[20..26],
            &[0x0e, 0xc9, 0x0e, 0xc9, 0, 24],
            "UDP 3785 -> 3785"
        );
        assert_eq!(&p[28..32], b"FLBE");
        assert_eq!(&p[32..36], &[1, 2, 3, 4]);
        assert_eq!(&p[36..44], &[0, 0, 0, 0, 0, 0, 0, 7]);
        // The UDP checksum over pseudo-header, header and payload comes out as 0 (or 0xffff).
        let mut pseudo = Vec::new();
        pseudo.extend(OURS.octets());
        pseudo.extend(OURS.octets());
        pseudo.extend([0, 17, 0, 24]);
        pseudo.extend(&p[20..]);
        assert_eq!(checksum(0, &pseudo), 0);
    }

    #[test]
    fn our_echo_back_from_the_peer_is_recognised() {
        let sent = echo_packet(OURS, 99, 12, 1);
        assert_eq!(returned(&sent, OURS), None, "not back yet: TTL 255");
        assert_eq!(
            returned(&looped_back(sent), OURS),
            Some(Returned {
                discriminator: 99,
                seq: 12
            })
        );
    }

    #[test]
    fn anything_else_is_not_our_echo() {
        let back = looped_back(echo_packet(OURS, 99, 12, 1));
        assert_eq!(
            returned(&back, Ipv4Addr::new(192, 0, 2, 2)),
            None,
            "not ours"
        );
        assert_eq!(returned(&back[..43], OURS), None, "short");
        let mut corrupt = back;
        corrupt[12] ^= 1;
        assert_eq!(returned(&corrupt, OURS), None, "bad header checksum");
        let mut foreign = back;
        foreign[28] = b'X';
        assert_eq!(
            returned(&foreign, OURS),
            None,
            "someone else's payload (FRR's)"
        );
        let twice = looped_back(back);
        assert_eq!(returned(&twice, OURS), None, "two hops");
    }

    #[test]
    fn the_neighbour_table_gives_mac_and_interface() {
        let arp =
            "IP address       HW type     Flags       HW address            Mask     Device\n\
192.0.2.254      0x1         0x2         02:00:00:00:00:fe     *        eth0\n\
192.0.2.9        0x1         0x0         00:00:00:00:00:00     *        eth0\n\
198.51.100.1     0x1         0x6         0a:0b:0c:0d:0e:0f     *        eth1\n";
        assert_eq!(
            neighbour(arp, Ipv4Addr::new(192, 0, 2, 254)),
            Some(([2, 0, 0, 0, 0, 0xfe], "eth0".to_string()))
        );
        assert_eq!(
            neighbour(arp, Ipv4Addr::new(198, 51, 100, 1)),
            Some(([0xa, 0xb, 0xc, 0xd, 0xe, 0xf], "eth1".to_string()))
        );
        assert_eq!(
            neighbour(arp, Ipv4Addr::new(192, 0, 2, 9)),
            None,
            "incomplete"
        );
        assert_eq!(
            neighbour_on(arp, Ipv4Addr::new(198, 51, 100, 1), "eth1"),
            Some([0xa, 0xb, 0xc, 0xd, 0xe, 0xf])
        );
        assert_eq!(
            neighbour_on(arp, Ipv4Addr::new(198, 51, 100, 1), "eth0"),
            None
        );
        assert_eq!(neighbour(arp, Ipv4Addr::new(192, 0, 2, 7)), None);
        assert_eq!(neighbour("", Ipv4Addr::new(192, 0, 2, 7)), None);
    }
}
