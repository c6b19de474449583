//! The speaker's one `unsafe` module: an AF_PACKET socket bound to one interface.
//!
//! Neither std nor socket2 offers packet sockets with a bound `sockaddr_ll`, a classic BPF filter
//! and `PACKET_IGNORE_OUTGOING`, so this module calls socket(2), bind(2), setsockopt(2),
//! recvfrom(2) and sendto(2) through libc. Every call gets a pointer to a local of the exact type
//! and size the kernel expects; nothing here keeps a pointer. Everything outside this module
//! uses the safe [`PacketSocket`].
#![allow(unsafe_code)]

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

const ETH_P_ALL: u16 = 0x0003;

/// Classic BPF, run by the kernel before a frame is queued to us: pass ARP requests, ICMPv6
/// Neighbor Solicitations, and IPv6 packets whose first header is an extension header
/// (Hop-by-Hop, Destination Options or Routing: a solicitation may follow it; the parser walks
/// the chain, and such packets are rare), drop the rest, so a busy segment costs the speaker
/// nothing. Frames that arrived with a VLAN tag are dropped: Linux takes the tag off before
/// packet sockets see the frame, so without this check a question asked on VLAN 100 would be
/// answered untagged, on the native VLAN. The VLAN's own interface (eth0.100) answers it,
/// tagged, when the advertisement selects it. A priority tag (VLAN ID 0, 802.1p only) is the
/// native VLAN, as Linux treats it: those frames pass. The offsets are checked by a test that runs the
/// program on real frames.
fn filter_program() -> Vec<libc::sock_filter> {
    const LDW_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
    const LDH_ABS: u16 = (libc::BPF_LD | libc::BPF_H | libc::BPF_ABS) as u16;
    const LDB_ABS: u16 = (libc::BPF_LD | libc::BPF_B | libc::BPF_ABS) as u16;
    const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const AND_K: u16 = (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16;
    const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    // Jump offsets count from the next instruction.
    vec![
        op(LDW_ABS, 0, 0, VLAN_TAG_PRESENT), // 0: A = 1 if the frame had a VLAN tag
        op(JEQ_K, 3, 0, 0),                  // 1: untagged -> 5, else -> 2
        op(LDW_ABS, 0, 0, VLAN_TAG),         // 2: A = the tag (TCI)
        op(AND_K, 0, 0, 0x0fff),             // 3: A = its VLAN ID
        op(JEQ_K, 0, 13, 0),                 // 4: priority tag only -> 5, else -> 18 drop
        op(LDH_ABS, 0, 0, 12),               // 5: A = ethertype
        op(JEQ_K, 0, 2, 0x0806),             // 6: ARP -> 7, else -> 9
        op(LDH_ABS, 0, 0, 20),               // 7: A = ARP operation
        op(JEQ_K, 8, 9, 1),                  // 8: request -> 17 accept, else -> 18 drop
        op(JEQ_K, 0, 8, 0x86dd),             // 9: IPv6 -> 10, else -> 18 drop
        op(LDB_ABS, 0, 0, 20),               // 10: A = next header
        op(JEQ_K, 0, 2, 58),                 // 11: ICMPv6 -> 12, else -> 14
        op(LDB_ABS, 0, 0, 54),               // 12: A = ICMPv6 type
        op(JEQ_K, 3, 4, 135),                // 13: Neighbor Solicitation -> 17, else -> 18
        op(JEQ_K, 2, 0, 0),                  // 14: Hop-by-Hop -> 17, else -> 15
        op(JEQ_K, 1, 0, 60),                 // 15: Destination Options -> 17, else -> 16
        op(JEQ_K, 0, 1, 43),                 // 16: Routing -> 17, else -> 18 drop
        op(RET_K, 0, 0, 0x0004_0000),        // 17: accept (the whole frame)
        op(RET_K, 0, 0, 0),                  // 18: drop
    ]
}

/// The classic BPF ancillary loads "VLAN tag present" and "VLAN tag" (SKF_AD_OFF +
/// SKF_AD_VLAN_TAG_PRESENT, SKF_AD_OFF + SKF_AD_VLAN_TAG).
const VLAN_TAG_PRESENT: u32 = (-0x1000i32 + 48) as u32;
const VLAN_TAG: u32 = (-0x1000i32 + 44) as u32;

/// An AF_PACKET raw socket bound to one interface, non-blocking, that receives only ARP
/// requests and Neighbor Solicitations arriving on it (never our own outgoing frames).
#[derive(Debug)]
pub struct PacketSocket {
    fd: OwnedFd,
    ifindex: i32,
}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn setsockopt<T>(fd: RawFd, level: libc::c_int, name: libc::c_int, value: &T) -> io::Result<()> {
    // SAFETY: `value` is a live reference to a T and the length passed is exactly size_of::<T>().
    check(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (value as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    })
    .map(|_| ())
}

impl PacketSocket {
    /// Opens the socket on interface `ifindex`. The filter is attached before the socket is
    /// bound to a protocol, so not one unfiltered frame is ever queued.
    pub fn open(ifindex: u32) -> io::Result<PacketSocket> {
        let ifindex = i32::try_from(ifindex)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface index"))?;
        // SAFETY: plain syscall with constant arguments; protocol 0 receives nothing yet.
        let raw = check(unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        })?;
        // SAFETY: `raw` is a fresh descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let program = filter_program();
        let fprog = libc::sock_fprog {
            len: program.len() as libc::c_ushort,
            filter: program.as_ptr() as *mut libc::sock_filter,
        };
        // The kernel copies the program during the call; `program` outlives it.
        setsockopt(raw, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &fprog)?;
        // Our own announcements would otherwise come back to us as "queries" (Linux >= 4.20;
        // on older kernels `recv` drops them by packet type).
        let _ = setsockopt(
            raw,
            libc::SOL_PACKET,
            libc::PACKET_IGNORE_OUTGOING,
            &(1 as libc::c_int),
        );
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut addr: libc::sockaddr_ll = unsafe { zeroed() };
        addr.sll_family = libc::AF_PACKET as libc::c_ushort;
        addr.sll_protocol = ETH_P_ALL.to_be();
        addr.sll_ifindex = ifindex;
        // SAFETY: `addr` is a live sockaddr_ll and the length is its size.
        check(unsafe {
            libc::bind(
                raw,
                (&addr as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        })?;
        Ok(PacketSocket { fd, ifindex })
    }

    /// Opens the socket and registers it with the tokio reactor (which must be running).
    pub fn open_async(ifindex: u32) -> io::Result<tokio::io::unix::AsyncFd<PacketSocket>> {
        let socket = PacketSocket::open(ifindex)?;
        // SAFETY: the PacketSocket owns its descriptor (an OwnedFd it never replaces or
        // closes before drop), so `as_raw_fd` returns the same open descriptor for as long as
        // the AsyncFd owns it.
        unsafe { tokio::io::unix::AsyncFd::register(socket) }.map_err(io::Error::from)
    }

    /// Receives one frame into `buf`; `Ok(None)` for a frame to skip (our own outgoing one).
    /// `WouldBlock` when nothing is queued.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut from: libc::sockaddr_ll = unsafe { zeroed() };
        let mut from_len = size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        // SAFETY: `buf` is writable for buf.len() bytes; `from`/`from_len` describe a live
        // sockaddr_ll the kernel may fill up to `from_len`.
        let n = unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                0,
                (&mut from as *mut libc::sockaddr_ll).cast(),
                &mut from_len,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        if from.sll_pkttype == libc::PACKET_OUTGOING {
            return Ok(None);
        }
        Ok(Some(n as usize))
    }

    /// Sends one whole Ethernet frame out of the interface. `WouldBlock` when the device queue
    /// is full.
    pub fn send(&self, frame: &[u8]) -> io::Result<()> {
        if frame.len() < 14 {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "short frame"));
        }
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut to: libc::sockaddr_ll = unsafe { zeroed() };
        to.sll_family = libc::AF_PACKET as libc::c_ushort;
        // The frame's own ethertype, already in network order.
        to.sll_protocol = u16::from_ne_bytes([frame[12], frame[13]]);
        to.sll_ifindex = self.ifindex;
        to.sll_halen = 6;
        to.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: `frame` is readable for frame.len() bytes; `to` is a live sockaddr_ll.
        let n = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&to as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl AsRawFd for PacketSocket {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Runs the filter program on `frame` the way the kernel does (for tests of the offsets),
/// `tag`: the VLAN tag it arrived with, if any (which the kernel keeps out of the data).
#[cfg(test)]
fn run_filter_tagged(frame: &[u8], tag: Option<u16>) -> u32 {
    let program = filter_program();
    let mut a: u32 = 0;
    let mut pc = 0usize;
    loop {
        let ins = &program[pc];
        let class = u32::from(ins.code) & 0x07;
        match class {
            c if c == libc::BPF_LD && ins.k == VLAN_TAG_PRESENT => {
                a = u32::from(tag.is_some());
                pc += 1;
            }
            c if c == libc::BPF_LD && ins.k == VLAN_TAG => {
                a = u32::from(tag.unwrap_or(0));
                pc += 1;
            }
            c if c == libc::BPF_ALU => {
                a &= ins.k;
                pc += 1;
            }
            c if c == libc::BPF_LD => {
                let at = ins.k as usize;
                let size = if u32::from(ins.code) & 0x18 == libc::BPF_H {
                    2
                } else {
                    1
                };
                if at + size > frame.len() {
                    return 0;
                }
                a = if size == 2 {
                    u32::from(u16::from_be_bytes([frame[at], frame[at + 1]]))
                } else {
                    u32::from(frame[at])
                };
                pc += 1;
            }
            c if c == libc::BPF_JMP => {
                pc += 1 + usize::from(if a == ins.k { ins.jt } else { ins.jf });
            }
            _ => return ins.k,
        }
    }
}

#[cfg(test)]
fn run_filter(frame: &[u8]) -> u32 {
    run_filter_tagged(frame, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::l2::packet::{gratuitous_arp, unsolicited_advertisement, MacAddr};

    #[test]
    fn filter_passes_arp_requests_and_solicitations_only() {
        let mac = MacAddr([2, 0, 0, 0, 0, 1]);
        let [request, reply] = gratuitous_arp(mac, "192.0.2.10".parse().unwrap());
        assert_ne!(run_filter(&request), 0, "ARP request");
        assert_eq!(run_filter(&reply), 0, "ARP reply");
        let na = unsolicited_advertisement(mac, "2001:db8::10".parse().unwrap());
        assert_eq!(run_filter(&na), 0, "Neighbor Advertisement");
        let mut ns = na.clone();
        ns[54] = 135;
        assert_ne!(run_filter(&ns), 0, "Neighbor Solicitation");
        let mut udp = na;
        udp[20] = 17;
        assert_eq!(run_filter(&udp), 0, "UDP over IPv6");
        let mut ipv4 = request.clone();
        ipv4[12..14].copy_from_slice(&[0x08, 0x00]);
        assert_eq!(run_filter(&ipv4), 0, "IPv4");
        assert_eq!(run_filter(&[0u8; 10]), 0, "runt");
        // Asked on a VLAN: not ours to answer on this interface.
        assert_eq!(
            run_filter_tagged(&request, Some(100)),
            0,
            "tagged ARP request"
        );
        assert_eq!(run_filter_tagged(&ns, Some(100)), 0, "tagged solicitation");
        // Priority 5 on VLAN 100: still VLAN 100.
        assert_eq!(
            run_filter_tagged(&request, Some(0xa064)),
            0,
            "tagged, with priority"
        );
        // A priority tag (VLAN 0) is the native VLAN.
        assert_ne!(
            run_filter_tagged(&request, Some(0xa000)),
            0,
            "priority-tagged request"
        );
        assert_ne!(
            run_filter_tagged(&ns, Some(0)),
            0,
            "priority-tagged solicitation"
        );
        // Extension headers first: to the parser, which walks them.
        for (next_header, what) in [
            (0u8, "Hop-by-Hop"),
            (60, "Destination Options"),
            (43, "Routing"),
        ] {
            let mut with = ns.clone();
            with[20] = next_header;
            assert_ne!(run_filter(&with), 0, "{what}");
        }
        let mut fragment = ns.clone();
        fragment[20] = 44;
        assert_eq!(
            run_filter(&fragment),
            0,
            "fragment (RFC 6980: never for ND)"
        );
    }
}
