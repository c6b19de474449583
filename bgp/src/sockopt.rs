//! Linux socket options that the standard library and socket2 do not cover: TCP MD5
//! signatures (RFC 2385) and the minimum TTL / hop count of GTSM (RFC 5082).
//!
//! This is the crate's only `unsafe` code: one `setsockopt(2)` call on a socket we own, with
//! a value built entirely in safe code.
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

#[cfg(test)]
mod tests {
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
}
