//! The IPv6 next hop for IPv6 routes sent over an IPv4 session: a global IPv6 address of the
//! interface that leads to the peer, the way routers pick one. Without it those routes cannot
//! be sent (the session's own address is IPv4).
//!
//! Pure parsers of the kernel's `/proc/net/route` and `/proc/net/if_inet6`, and one function
//! that reads them.

use std::net::{Ipv4Addr, Ipv6Addr};

/// An IPv4 route: destination, mask, metric, interface.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Route4 {
    iface: String,
    dest: u32,
    mask: u32,
    metric: u32,
}

/// `/proc/net/route`: the kernel prints addresses and masks as hexadecimal words in host byte
/// order.
fn parse_routes(text: &str) -> Vec<Route4> {
    const RTF_UP: u32 = 0x1;
    let word = |s: &str| {
        u32::from_str_radix(s, 16)
            .ok()
            .map(|w| u32::from_be_bytes(w.to_ne_bytes()))
    };
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let flags = u32::from_str_radix(f.get(3)?, 16).ok()?;
            (flags & RTF_UP != 0).then_some(())?;
            Some(Route4 {
                iface: f.first()?.to_string(),
                dest: word(f.get(1)?)?,
                metric: f.get(6)?.parse().ok()?,
                mask: word(f.get(7)?)?,
            })
        })
        .collect()
}

/// `/proc/net/if_inet6`: usable global addresses (scope 0, not tentative, deprecated or failed
/// duplicate address detection) with their interface.
fn parse_if_inet6(text: &str) -> Vec<(Ipv6Addr, String)> {
    const IFA_F_UNUSABLE: u32 = 0x08 | 0x20 | 0x40; // DADFAILED | DEPRECATED | TENTATIVE
    text.lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let addr = u128::from_str_radix(f.first()?, 16).ok()?;
            let scope = u32::from_str_radix(f.get(3)?, 16).ok()?;
            let flags = u32::from_str_radix(f.get(4)?, 16).ok()?;
            let iface = f.get(5)?.to_string();
            (scope == 0 && flags & IFA_F_UNUSABLE == 0).then(|| (Ipv6Addr::from(addr), iface))
        })
        .collect()
}

/// The interface of the most specific route to `peer` (lowest metric among equals).
fn route_iface(peer: Ipv4Addr, routes: &[Route4]) -> Option<&str> {
    let p = u32::from(peer);
    routes
        .iter()
        .filter(|r| p & r.mask == r.dest & r.mask)
        .max_by(|a, b| {
            a.mask
                .count_ones()
                .cmp(&b.mask.count_ones())
                .then(b.metric.cmp(&a.metric))
        })
        .map(|r| r.iface.as_str())
}

/// The first usable global IPv6 address on the interface that routes to `peer`.
pub fn v6_next_hop_from(peer: Ipv4Addr, proc_route: &str, if_inet6: &str) -> Option<Ipv6Addr> {
    let routes = parse_routes(proc_route);
    let iface = route_iface(peer, &routes)?;
    let mut addrs: Vec<Ipv6Addr> = parse_if_inet6(if_inet6)
        .into_iter()
        .filter(|(_, i)| i == iface)
        .map(|(a, _)| a)
        .collect();
    addrs.sort();
    addrs.first().copied()
}

/// The first usable global IPv6 address on `interface` in `if_inet6`.
pub fn global_v6_on_from(interface: &str, if_inet6: &str) -> Option<Ipv6Addr> {
    let mut addrs: Vec<Ipv6Addr> = parse_if_inet6(if_inet6)
        .into_iter()
        .filter(|(_, i)| i == interface)
        .map(|(a, _)| a)
        .collect();
    addrs.sort();
    addrs.first().copied()
}

/// [`global_v6_on_from`] on this network namespace's table: the global next hop of an
/// unnumbered session (`None`: the session's link-local address serves).
pub fn global_v6_on(interface: &str) -> Option<Ipv6Addr> {
    let addrs = std::fs::read_to_string("/proc/net/if_inet6").ok()?;
    global_v6_on_from(interface, &addrs)
}

/// [`v6_next_hop_from`] on this network namespace's tables.
pub fn v6_next_hop(peer: Ipv4Addr) -> Option<Ipv6Addr> {
    let routes = std::fs::read_to_string("/proc/net/route").ok()?;
    let addrs = std::fs::read_to_string("/proc/net/if_inet6").ok()?;
    v6_next_hop_from(peer, &routes, &addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    // A node with eth0 on 192.0.2.0/24 and 2001:db8::1/64, a default route over eth1, and an
    // address still in duplicate address detection.
    const ROUTE: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
eth1\t00000000\t0164A8C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n\
eth1\t0064A8C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n";
    const INET6: &str = "fe800000000000000000000000000001 02 40 20 80     eth0\n\
20010db8000000000000000000000009 02 40 00 c0     eth0\n\
20010db8000000000000000000000001 02 40 00 80     eth0\n\
20010db8000100000000000000000001 03 40 00 80     eth1\n\
00000000000000000000000000000001 01 80 10 80       lo\n";

    #[test]
    fn picks_a_global_address_of_the_interface_towards_the_peer() {
        let hop = |peer: &str| v6_next_hop_from(peer.parse().unwrap(), ROUTE, INET6);
        assert_eq!(hop("192.0.2.254"), Some("2001:db8::1".parse().unwrap()));
        assert_eq!(
            hop("203.0.113.1"),
            Some("2001:db8:1::1".parse().unwrap()),
            "the default route's interface"
        );
        assert_eq!(
            v6_next_hop_from("192.0.2.254".parse().unwrap(), ROUTE, ""),
            None
        );
        assert_eq!(
            v6_next_hop_from("192.0.2.254".parse().unwrap(), "", INET6),
            None
        );
    }

    #[test]
    fn an_interface_s_global_address_or_none() {
        assert_eq!(
            global_v6_on_from("eth0", INET6),
            Some("2001:db8::1".parse().unwrap()),
            "the tentative ::9 is left out"
        );
        assert_eq!(global_v6_on_from("lo", INET6), None, "host scope");
        assert_eq!(global_v6_on_from("eth9", INET6), None);
    }

    #[test]
    fn parses_addresses_in_host_byte_order() {
        let routes = parse_routes(ROUTE);
        assert_eq!(routes.len(), 3);
        assert_eq!(Ipv4Addr::from(routes[1].dest), Ipv4Addr::new(192, 0, 2, 0));
        assert_eq!(routes[1].mask.count_ones(), 24);
    }
}
