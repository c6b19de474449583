//! Linux socket options that the standard library and socket2 do not cover: TCP MD5
//! signatures (RFC 2385), the minimum TTL / hop count of GTSM (RFC 5082), and receiving the
//! TTL / hop limit of UDP datagrams (BFD, RFC 5881 / 5883), interface names and indexes
//! (the scope of link-local peers), and the IPv4 packet sockets of BFD echo (sending a packet
//! to a neighbour's MAC address whatever the routing table says, and seeing echo packets come
//! back that the IP layer would drop as having our own source address).
//!
//! This is the crate's only `unsafe` code: `setsockopt(2)` on a socket we own with a value
//! built in safe code, and one `recvmsg(2)` into buffers we own, whose control messages are
//! read with the libc CMSG macros. (socket2's `recvmsg` hands out `MaybeUninit` bytes, which
//! need `unsafe` to read as well.)
#![allow(unsafe_code)]

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;

const TCP_MD5SIG: libc::c_int = 14;
const TCP_MD5SIG_MAXKEYLEN: usize = 80;
const IP_MINTTL: libc::c_int = 21;
const IPV6_MINHOPCOUNT: libc::c_int = 73;

/// `struct tcp_md5sig` from linux/tcp.h.
#[repr(C)]
struct TcpMd5Sig {
    /// `struct __kernel_sockaddr_storage` (128 bytes, 8-aligned in the kernel; the fields
    /// after it are laid out identically as long as the size matches).
    addr: [u64; 16],
    flags: u8,
    prefixlen: u8,
    keylen: u16,
    ifindex: libc::c_int,
    key: [u8; TCP_MD5SIG_MAXKEYLEN],
}

/// The bytes of a `sockaddr_in` / `sockaddr_in6` for `addr`, port 0 (the kernel matches keys
/// by address only).
fn sockaddr_bytes(addr: SocketAddr) -> [u8; 128] {
    let mut b = [0u8; 128];
    match addr {
        SocketAddr::V4(a) => {
            b[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            b[4..8].copy_from_slice(&a.ip().octets());
        }
        SocketAddr::V6(a) => {
            b[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
            b[8..24].copy_from_slice(&a.ip().octets());
        }
    }
    b
}

fn setsockopt<T>(
    fd: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &T,
) -> io::Result<()> {
    // SAFETY: `value` points to a live, initialised `T` of exactly `size_of::<T>()` bytes for
    // the duration of the call; the kernel only reads it. `fd` is a socket owned by the caller.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (value as *const T).cast::<libc::c_void>(),
            std::mem::size_of::<T>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets (or, with an empty key, removes) the TCP MD5 key for segments to and from `peer`.
/// On a listening socket it applies to connections accepted from `peer`.
pub fn set_tcp_md5(fd: &impl AsRawFd, peer: SocketAddr, key: &[u8]) -> io::Result<()> {
    if key.len() > TCP_MD5SIG_MAXKEYLEN {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "TCP MD5 key longer than 80 bytes",
        ));
    }
    let raw = sockaddr_bytes(peer);
    let mut addr = [0u64; 16];
    for (i, chunk) in raw.chunks_exact(8).enumerate() {
        let mut w = [0u8; 8];
        w.copy_from_slice(chunk);
        addr[i] = u64::from_ne_bytes(w);
    }
    let mut sig = TcpMd5Sig {
        addr,
        flags: 0,
        prefixlen: 0,
        keylen: key.len() as u16,
        ifindex: 0,
        key: [0; TCP_MD5SIG_MAXKEYLEN],
    };
    sig.key[..key.len()].copy_from_slice(key);
    setsockopt(fd, libc::IPPROTO_TCP, TCP_MD5SIG, &sig)
}

/// GTSM (RFC 5082): drop segments whose TTL / hop limit is below `min` (255 - hops + 1).
pub fn set_min_ttl(fd: &impl AsRawFd, ipv6: bool, min: u8) -> io::Result<()> {
    let v: libc::c_int = min.into();
    if ipv6 {
        setsockopt(fd, libc::IPPROTO_IPV6, IPV6_MINHOPCOUNT, &v)
    } else {
        setsockopt(fd, libc::IPPROTO_IP, IP_MINTTL, &v)
    }
}

const IP_RECVTTL: libc::c_int = 12;
const IP_TTL: libc::c_int = 2;
const IPV6_RECVHOPLIMIT: libc::c_int = 51;
const IPV6_HOPLIMIT: libc::c_int = 52;

/// Asks the kernel to report each datagram's TTL (IPv4) or hop limit (IPv6) to
/// [`recv_with_ttl`].
pub fn set_recv_ttl(fd: &impl AsRawFd, ipv6: bool) -> io::Result<()> {
    let on: libc::c_int = 1;
    if ipv6 {
        setsockopt(fd, libc::IPPROTO_IPV6, IPV6_RECVHOPLIMIT, &on)
    } else {
        setsockopt(fd, libc::IPPROTO_IP, IP_RECVTTL, &on)
    }
}

/// One datagram from a non-blocking UDP socket set up with [`set_recv_ttl`]: its length, its
/// source, and its TTL / hop limit when the kernel reported one.
pub fn recv_with_ttl(
    fd: &impl AsRawFd,
    buf: &mut [u8],
) -> io::Result<(usize, SocketAddr, Option<u8>)> {
    // 8-aligned, like struct cmsghdr needs; room for several small control messages.
    let mut control = [0u64; 16];
    // SAFETY: all-zero bytes are a valid `sockaddr_storage` and `msghdr`.
    let mut from: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: as above.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_name = (&mut from as *mut libc::sockaddr_storage).cast();
    msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control);
    // SAFETY: every pointer in `msg` points to a live buffer of the stated length owned by
    // this frame; the kernel writes at most those lengths.
    let n = unsafe { libc::recvmsg(fd.as_raw_fd(), &mut msg, libc::MSG_DONTWAIT) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let src = match from.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the kernel filled a sockaddr_in (family AF_INET) into the storage,
            // which is larger and suitably aligned.
            let a =
                unsafe { &*(&from as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            SocketAddr::new(
                std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)).into(),
                u16::from_be(a.sin_port),
            )
        }
        libc::AF_INET6 => {
            // SAFETY: as above, a sockaddr_in6.
            let a =
                unsafe { &*(&from as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
            // The scope tells which link a link-local source is on.
            SocketAddr::V6(std::net::SocketAddrV6::new(
                std::net::Ipv6Addr::from(a.sin6_addr.s6_addr),
                u16::from_be(a.sin6_port),
                0,
                a.sin6_scope_id,
            ))
        }
        _ => {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "datagram without an IP source address",
            ))
        }
    };
    let mut ttl = None;
    // SAFETY: `msg` is the header recvmsg just filled; the CMSG macros stay within
    // `msg_controllen` bytes of `control`, and each value is read unaligned from the data of
    // a control message whose level and type say it holds a c_int.
    unsafe {
        let mut c = libc::CMSG_FIRSTHDR(&msg);
        while !c.is_null() {
            let level = (*c).cmsg_level;
            let kind = (*c).cmsg_type;
            if (level == libc::IPPROTO_IP && kind == IP_TTL)
                || (level == libc::IPPROTO_IPV6 && kind == IPV6_HOPLIMIT)
            {
                let v = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>());
                ttl = u8::try_from(v).ok();
            }
            c = libc::CMSG_NXTHDR(&msg, c);
        }
    }
    Ok((n as usize, src, ttl))
}

const ICMP6_FILTER: libc::c_int = 1;

/// ICMPv6 raw sockets: pass only messages of these types (`ICMP6_FILTER`, RFC 3542
/// section 3.2), so a busy link costs the reader nothing.
pub fn set_icmp6_pass_only(fd: &impl AsRawFd, types: &[u8]) -> io::Result<()> {
    // A set bit blocks its type.
    let mut filter = [u32::MAX; 8];
    for t in types {
        filter[usize::from(*t >> 5)] &= !(1u32 << (t & 31));
    }
    setsockopt(fd, libc::IPPROTO_ICMPV6, ICMP6_FILTER, &filter)
}

/// The index of the network interface `name` in this network namespace (`if_nametoindex(3)`),
/// the scope of link-local addresses on it.
pub fn if_index(name: &str) -> io::Result<u32> {
    let c = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in interface name"))?;
    // SAFETY: `c` is a live NUL-terminated string; the call only reads it.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(i)
    }
}

/// The name of the network interface with index `index` (`if_indextoname(3)`).
pub fn if_name(index: u32) -> Option<String> {
    let mut buf = [0u8; libc::IF_NAMESIZE];
    // SAFETY: `buf` has the IF_NAMESIZE bytes the call may write (name and NUL).
    let p = unsafe { libc::if_indextoname(index, buf.as_mut_ptr().cast()) };
    if p.is_null() {
        return None;
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    String::from_utf8(buf[..end].to_vec()).ok()
}

const ETH_P_IP: u16 = 0x0800;

fn check(rc: libc::c_int) -> io::Result<libc::c_int> {
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

/// Classic BPF on IPv4 packets (the network header first, as packet sockets of type
/// SOCK_DGRAM see them): unfragmented UDP to port `port` with TTL `ttl`. Jump offsets count
/// from the next instruction.
pub fn udp_port_ttl_filter(port: u16, ttl: u8) -> Vec<libc::sock_filter> {
    const LDB_ABS: u16 = (libc::BPF_LD | libc::BPF_B | libc::BPF_ABS) as u16;
    const LDH_ABS: u16 = (libc::BPF_LD | libc::BPF_H | libc::BPF_ABS) as u16;
    const LDH_IND: u16 = (libc::BPF_LD | libc::BPF_H | libc::BPF_IND) as u16;
    const LDX_MSH: u16 = (libc::BPF_LDX | libc::BPF_B | libc::BPF_MSH) as u16;
    const JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
    const JSET_K: u16 = (libc::BPF_JMP | libc::BPF_JSET | libc::BPF_K) as u16;
    const RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
    let op = |code, jt, jf, k| libc::sock_filter { code, jt, jf, k };
    vec![
        op(LDB_ABS, 0, 0, 9),             // 0: A = protocol
        op(JEQ_K, 0, 8, 17),              // 1: UDP -> 2, else -> 10
        op(LDH_ABS, 0, 0, 6),             // 2: A = flags and fragment offset
        op(JSET_K, 6, 0, 0x1fff),         // 3: a fragment -> 10
        op(LDX_MSH, 0, 0, 0),             // 4: X = IP header length
        op(LDH_IND, 0, 0, 2),             // 5: A = UDP destination port
        op(JEQ_K, 0, 3, u32::from(port)), // 6: port -> 7, else -> 10
        op(LDB_ABS, 0, 0, 8),             // 7: A = TTL
        op(JEQ_K, 0, 1, u32::from(ttl)),  // 8: TTL -> 9, else -> 10
        op(RET_K, 0, 0, 0x0000_ffff),     // 9: accept
        op(RET_K, 0, 0, 0),               // 10: drop
    ]
}

/// An AF_PACKET socket of type SOCK_DGRAM for IPv4 on interface `ifindex` (the kernel adds and
/// strips the Ethernet header), non-blocking. With a `filter` it receives the incoming IPv4
/// packets the filter passes (attached before binding, so nothing unfiltered is ever queued);
/// without one it is for sending only and receives nothing.
pub fn ipv4_packet_socket(
    ifindex: u32,
    filter: Option<&[libc::sock_filter]>,
) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    let ifindex = i32::try_from(ifindex)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface index"))?;
    // SAFETY: plain syscall with constant arguments; protocol 0 receives nothing yet.
    let raw = check(unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_DGRAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    })?;
    // SAFETY: `raw` is a fresh descriptor that nothing else owns.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(raw) };
    let Some(program) = filter else {
        return Ok(fd);
    };
    let fprog = libc::sock_fprog {
        len: program.len() as libc::c_ushort,
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    // The kernel copies the program during the call; `program` outlives it.
    setsockopt(&fd, libc::SOL_SOCKET, libc::SO_ATTACH_FILTER, &fprog)?;
    // What we forward out of this interface ourselves is not for us.
    let _ = setsockopt(
        &fd,
        libc::SOL_PACKET,
        libc::PACKET_IGNORE_OUTGOING,
        &(1 as libc::c_int),
    );
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as libc::c_ushort;
    addr.sll_protocol = ETH_P_IP.to_be();
    addr.sll_ifindex = ifindex;
    // SAFETY: `addr` is a live sockaddr_ll and the length is its size.
    check(unsafe {
        libc::bind(
            raw,
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    })?;
    Ok(fd)
}

/// Sends one IPv4 packet (header included) out of `ifindex` to the neighbour with MAC `mac`,
/// through a socket from [`ipv4_packet_socket`]. `WouldBlock` when the device queue is full.
pub fn send_ipv4_to(
    fd: &impl AsRawFd,
    ifindex: u32,
    mac: [u8; 6],
    packet: &[u8],
) -> io::Result<()> {
    let ifindex = i32::try_from(ifindex)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface index"))?;
    // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
    let mut to: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    to.sll_family = libc::AF_PACKET as libc::c_ushort;
    to.sll_protocol = ETH_P_IP.to_be();
    to.sll_ifindex = ifindex;
    to.sll_halen = 6;
    to.sll_addr[..6].copy_from_slice(&mac);
    // SAFETY: `packet` is readable for packet.len() bytes; `to` is a live sockaddr_ll.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            packet.as_ptr().cast(),
            packet.len(),
            libc::MSG_DONTWAIT,
            (&to as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn interface_names_and_indexes_agree() {
        let lo = if_index("lo").expect("lo exists");
        assert_eq!(if_name(lo).as_deref(), Some("lo"));
        assert!(if_index("no-such-if0").is_err());
        assert!(if_index("a\0b").is_err());
    }

    use super::*;

    #[test]
    fn struct_matches_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<TcpMd5Sig>(), 216);
    }

    #[test]
    fn md5_and_min_ttl_apply_to_a_real_socket() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        set_tcp_md5(&l, "127.0.0.1:0".parse().unwrap(), b"s3cret").unwrap();
        set_tcp_md5(&l, "127.0.0.1:0".parse().unwrap(), b"").unwrap();
        assert!(set_tcp_md5(&l, "127.0.0.1:0".parse().unwrap(), &[0; 81]).is_err());
        set_min_ttl(&l, false, 254).unwrap();
    }

    #[test]
    fn recv_with_ttl_reports_the_ttl_of_each_datagram() {
        for (bind, v6) in [("127.0.0.1:0", false), ("[::1]:0", true)] {
            let Ok(rx) = std::net::UdpSocket::bind(bind) else {
                continue; // no IPv6 here
            };
            rx.set_nonblocking(true).unwrap();
            set_recv_ttl(&rx, v6).unwrap();
            let tx = std::net::UdpSocket::bind(bind).unwrap();
            let s = socket2::SockRef::from(&tx);
            if v6 {
                s.set_unicast_hops_v6(255).unwrap();
            } else {
                s.set_ttl_v4(255).unwrap();
            }
            tx.send_to(b"bfd", rx.local_addr().unwrap()).unwrap();
            let mut buf = [0u8; 64];
            let got = (0..100).find_map(|_| {
                std::thread::sleep(std::time::Duration::from_millis(5));
                recv_with_ttl(&rx, &mut buf).ok()
            });
            let (n, from, ttl) = got.expect("datagram");
            assert_eq!(&buf[..n], b"bfd");
            assert_eq!(from, tx.local_addr().unwrap());
            assert_eq!(ttl, Some(255));
        }
    }
}

/// Runs a classic BPF program of the kinds used here on `packet`, as the kernel does (for
/// tests of the offsets).
#[cfg(test)]
fn run_filter(program: &[libc::sock_filter], packet: &[u8]) -> u32 {
    let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
    let byte = |at: usize| packet.get(at).map(|b| u32::from(*b));
    let half = |at: usize| Some((byte(at)? << 8) | byte(at + 1)?);
    loop {
        let ins = &program[pc];
        let class = u32::from(ins.code) & 0x07;
        let size = u32::from(ins.code) & 0x18;
        let mode = u32::from(ins.code) & 0xe0;
        pc += 1;
        match class {
            c if c == libc::BPF_LD => {
                let at = ins.k as usize + if mode == libc::BPF_IND { x as usize } else { 0 };
                let v = if size == libc::BPF_B {
                    byte(at)
                } else {
                    half(at)
                };
                match v {
                    Some(v) => a = v,
                    None => return 0,
                }
            }
            c if c == libc::BPF_LDX => match byte(ins.k as usize) {
                Some(b) => x = 4 * (b & 0x0f),
                None => return 0,
            },
            c if c == libc::BPF_JMP => {
                let op = u32::from(ins.code) & 0xf0;
                let hit = if op == libc::BPF_JSET {
                    a & ins.k != 0
                } else {
                    a == ins.k
                };
                pc += usize::from(if hit { ins.jt } else { ins.jf });
            }
            c if c == libc::BPF_RET => return ins.k,
            _ => panic!("instruction {:#x} not modelled", ins.code),
        }
    }
}

#[cfg(test)]
mod filter_tests {
    use super::*;

    #[test]
    fn the_echo_filter_passes_returned_echo_packets_only() {
        let program = udp_port_ttl_filter(3785, 254);
        let ours = std::net::Ipv4Addr::new(192, 0, 2, 1);
        let mut back = crate::bfd::echo::echo_packet(ours, 1, 1, 7);
        back[8] = 254;
        assert_ne!(run_filter(&program, &back), 0, "an echo one hop back");
        let sent = crate::bfd::echo::echo_packet(ours, 1, 1, 7);
        assert_eq!(run_filter(&program, &sent), 0, "TTL 255: not back");
        let mut other_port = back;
        other_port[23] = 0xca; // 3784: a control packet
        assert_eq!(run_filter(&program, &other_port), 0);
        let mut tcp = back;
        tcp[9] = 6;
        assert_eq!(run_filter(&program, &tcp), 0);
        let mut fragment = back;
        fragment[7] = 1;
        assert_eq!(run_filter(&program, &fragment), 0);
        let mut options = [0u8; 48];
        options[..20].copy_from_slice(&back[..20]);
        options[0] = 0x46; // a 24-byte header: the UDP header moves
        options[24..48].copy_from_slice(&back[20..44]);
        assert_ne!(
            run_filter(&program, &options),
            0,
            "the header length is followed"
        );
        assert_eq!(run_filter(&program, &back[..10]), 0, "short");
    }
}
