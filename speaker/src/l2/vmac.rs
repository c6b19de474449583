//! The virtual MAC of an address (L2Advertisement `virtualMAC`), pure.
//!
//! Every node derives the same MAC from the address alone, so whichever node owns the address
//! answers with the same link-layer address: a client's neighbour entry stays right across a
//! failover, and only the switches move the MAC to the new owner's port (on its gratuitous
//! frames, which come from that MAC). The owner receives the address's traffic on a macvlan
//! device with that MAC (see `macvlan`), named from the address and the parent interface.
//!
//! - IPv4: `02:4c:a:b:c:d`, the address itself after a fixed, locally administered prefix, so
//!   two IPv4 addresses never share a MAC.
//! - IPv6: `06:` and 40 bits of SHA-256 of the address: the low bits of the address alone would
//!   collide across pools (2001:db8:1::10 and 2001:db8:2::10). Two of 10,000 IPv6 addresses on
//!   one segment share a MAC with a probability of about 5 in 100,000.
//!
//! Both prefixes are locally administered unicast (bit 1 set, bit 0 clear in the first octet),
//! never a vendor's address, and differ between the families.

use crate::l2::packet::MacAddr;
use sha2::{Digest, Sha256};
use std::net::IpAddr;

/// The prefix of the names of the macvlan devices the speaker makes; anything named so is its
/// own (and removed when no owned address needs it).
pub const DEVICE_PREFIX: &str = "flbv";

/// The MAC every node answers and announces `ip` from.
pub fn virtual_mac(ip: IpAddr) -> MacAddr {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            MacAddr([0x02, 0x4c, o[0], o[1], o[2], o[3]])
        }
        IpAddr::V6(v6) => {
            let h = Sha256::digest(v6.octets());
            MacAddr([0x06, h[0], h[1], h[2], h[3], h[4]])
        }
    }
}

/// The name of the macvlan device for `ip` on the interface with index `parent`: at most 15
/// bytes (IFNAMSIZ - 1), stable, and different per parent (an address may be announced on
/// several interfaces, each with its own device).
pub fn device_name(ip: IpAddr, parent: u32) -> String {
    let mut h = Sha256::new();
    match ip {
        IpAddr::V4(v4) => h.update(v4.octets()),
        IpAddr::V6(v6) => h.update(v6.octets()),
    }
    h.update(parent.to_be_bytes());
    let d = h.finalize();
    format!(
        "{DEVICE_PREFIX}{:02x}{:02x}{:02x}{:02x}{:02x}",
        d[0], d[1], d[2], d[3], d[4]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn ipv4_macs_carry_the_address() {
        assert_eq!(
            virtual_mac(ip("192.0.2.200")).to_string(),
            "02:4c:c0:00:02:c8"
        );
        assert_eq!(
            virtual_mac(ip("203.0.113.7")).to_string(),
            "02:4c:cb:00:71:07"
        );
    }

    #[test]
    fn macs_are_locally_administered_unicast_and_stable() {
        for a in ["192.0.2.1", "2001:db8::200", "2001:db8:1::10", "::1"] {
            let m = virtual_mac(ip(a));
            assert_eq!(m.0[0] & 0x01, 0, "{a}: unicast");
            assert_eq!(m.0[0] & 0x02, 0x02, "{a}: locally administered");
            assert_eq!(m, virtual_mac(ip(a)), "{a}: the same every time");
        }
        // Fixed bytes: every node of every version derives the same MAC.
        assert_eq!(
            virtual_mac(ip("2001:db8::200")),
            virtual_mac(ip("2001:0db8:0:0:0:0:0:0200"))
        );
    }

    #[test]
    fn ipv6_addresses_with_the_same_low_bits_get_different_macs() {
        let a = virtual_mac(ip("2001:db8:1::10"));
        let b = virtual_mac(ip("2001:db8:2::10"));
        assert_ne!(a, b);
        assert_ne!(a.0[0], virtual_mac(ip("192.0.2.16")).0[0], "families apart");
        let many: BTreeSet<MacAddr> = (0..4096u16)
            .map(|i| {
                virtual_mac(IpAddr::V6(std::net::Ipv6Addr::new(
                    0x2001, 0xdb8, 0, 0, 0, 0, 0, i,
                )))
            })
            .collect();
        assert_eq!(many.len(), 4096);
    }

    #[test]
    fn device_names_fit_ifnamsiz_and_differ_per_parent() {
        let a = device_name(ip("192.0.2.200"), 2);
        assert!(a.starts_with(DEVICE_PREFIX));
        assert!(a.len() <= 15, "{a}");
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_ne!(a, device_name(ip("192.0.2.200"), 3));
        assert_ne!(a, device_name(ip("192.0.2.201"), 2));
        assert_eq!(a, device_name(ip("192.0.2.200"), 2));
    }
}
