//! Linux socket options that the standard library and socket2 do not cover: TCP MD5
//! signatures (RFC 2385), the minimum TTL / hop count of GTSM (RFC 5082), and receiving the
//! TTL / hop limit of UDP datagrams (BFD, RFC 5881 / 5883), and interface names and indexes
//! (the scope of link-local peers).
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
