//! Address ranges of pools: parsing, counting and splitting into CIDRs.
//!
//! A range is kept as two integers of one family, so that every question the allocator and the
//! validator ask (size, overlap, containment, the n-th address) costs the same for a /120 and a
//! /64.

use ipnet::IpNet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// An IP address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// Bits in an address of this family.
    pub fn bits(self) -> u8 {
        match self {
            Family::V4 => 32,
            Family::V6 => 128,
        }
    }
}

impl fmt::Display for Family {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Family::V4 => "IPv4",
            Family::V6 => "IPv6",
        })
    }
}

/// The integer value of an address.
pub fn ip_to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The address of `family` with integer value `value` (truncated to the family's width).
pub fn u128_to_ip(family: Family, value: u128) -> IpAddr {
    match family {
        Family::V4 => IpAddr::V4(Ipv4Addr::from(value as u32)),
        Family::V6 => IpAddr::V6(Ipv6Addr::from(value)),
    }
}

/// An inclusive range of addresses of one family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpRange {
    family: Family,
    start: u128,
    end: u128,
}

/// Why a pool address entry could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    #[error("{0:?} is not a CIDR, a start-end range or an address")]
    Malformed(String),
    #[error("{text:?}: {part:?} is not an IP address")]
    BadAddress { text: String, part: String },
    #[error("{text:?} is not a valid CIDR: {reason}")]
    BadCidr { text: String, reason: String },
    #[error("range {text:?} mixes IPv4 and IPv6")]
    MixedFamilies { text: String },
    #[error("range {text:?} is reversed: its start is after its end")]
    Reversed { text: String },
    #[error("{text:?} covers the whole IPv6 space, which cannot be a pool")]
    WholeSpace { text: String },
}

impl IpRange {
    /// A range from `start` to `end` inclusive; both of one family and in order.
    pub fn new(start: IpAddr, end: IpAddr) -> Option<Self> {
        let family = Family::of(start);
        if family != Family::of(end) {
            return None;
        }
        let (start, end) = (ip_to_u128(start), ip_to_u128(end));
        (start <= end).then_some(Self { family, start, end })
    }

    /// The range a CIDR covers (host bits ignored, as MetalLB does).
    pub fn from_net(net: IpNet) -> Self {
        let net = net.trunc();
        Self {
            family: Family::of(net.addr()),
            start: ip_to_u128(net.network()),
            end: ip_to_u128(net.broadcast()),
        }
    }

    /// Parses a pool entry: `192.0.2.0/24`, `192.0.2.10-192.0.2.20`, `2001:db8::1` ...
    pub fn parse(text: &str) -> Result<Self, AddressError> {
        let trimmed = text.trim();
        let bad_addr = |part: &str| AddressError::BadAddress {
            text: text.to_string(),
            part: part.trim().to_string(),
        };
        if trimmed.is_empty() {
            return Err(AddressError::Malformed(text.to_string()));
        }
        let range = if trimmed.contains('/') {
            let net: IpNet =
                trimmed
                    .parse()
                    .map_err(|e: ipnet::AddrParseError| AddressError::BadCidr {
                        text: text.to_string(),
                        reason: e.to_string(),
                    })?;
            Self::from_net(net)
        } else if let Some((a, b)) = trimmed.split_once('-') {
            let start: IpAddr = a.trim().parse().map_err(|_| bad_addr(a))?;
            let end: IpAddr = b.trim().parse().map_err(|_| bad_addr(b))?;
            if Family::of(start) != Family::of(end) {
                return Err(AddressError::MixedFamilies {
                    text: text.to_string(),
                });
            }
            Self::new(start, end).ok_or_else(|| AddressError::Reversed {
                text: text.to_string(),
            })?
        } else {
            let ip: IpAddr = trimmed.parse().map_err(|_| bad_addr(trimmed))?;
            Self::new(ip, ip).expect("a one-address range is valid")
        };
        if range.len().is_none() {
            return Err(AddressError::WholeSpace {
                text: text.to_string(),
            });
        }
        Ok(range)
    }

    pub fn family(&self) -> Family {
        self.family
    }

    pub fn start(&self) -> u128 {
        self.start
    }

    pub fn end(&self) -> u128 {
        self.end
    }

    pub fn first(&self) -> IpAddr {
        u128_to_ip(self.family, self.start)
    }

    pub fn last(&self) -> IpAddr {
        u128_to_ip(self.family, self.end)
    }

    /// Number of addresses; `None` only for the whole IPv6 space (2^128), which `parse` rejects.
    pub fn len(&self) -> Option<u128> {
        (self.end - self.start).checked_add(1)
    }

    /// A range always holds at least one address.
    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        Family::of(ip) == self.family && (self.start..=self.end).contains(&ip_to_u128(ip))
    }

    pub fn overlaps(&self, other: &IpRange) -> bool {
        self.family == other.family && self.start <= other.end && other.start <= self.end
    }

    /// IPv4 addresses in the range that end in .0 or .255 (none for IPv6), counted without a scan.
    pub fn buggy_count(&self) -> u128 {
        if self.family != Family::V4 {
            return 0;
        }
        // Addresses x <= n with x % 256 == r, for r in {0, 255}.
        let upto = |n: u128, r: u128| if n < r { 0 } else { (n - r) / 256 + 1 };
        let count = |r: u128| {
            upto(self.end, r)
                - if self.start == 0 {
                    0
                } else {
                    upto(self.start - 1, r)
                }
        };
        count(0) + count(255)
    }

    /// Whether an IPv4 address ends in .0 or .255.
    pub fn is_buggy(ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(v4) => matches!(v4.octets()[3], 0 | 255),
            IpAddr::V6(_) => false,
        }
    }

    /// The smallest list of CIDRs that covers exactly this range.
    pub fn cidrs(&self) -> Vec<IpNet> {
        let bits = u32::from(self.family.bits());
        let mut out = Vec::new();
        let mut start = self.start;
        loop {
            // Largest aligned block at `start` that does not pass `end`.
            let align = if start == 0 {
                bits
            } else {
                start.trailing_zeros().min(bits)
            };
            let remaining = self.end - start; // count - 1
            let fit = if remaining == u128::MAX {
                128
            } else {
                127 - (remaining + 1).leading_zeros()
            };
            let block = align.min(fit);
            let prefix = (bits - block) as u8;
            let net = IpNet::new(u128_to_ip(self.family, start), prefix)
                .expect("prefix is within the family's width");
            out.push(net);
            let size_minus_one = if block == 128 {
                u128::MAX
            } else {
                (1u128 << block) - 1
            };
            match start.checked_add(size_minus_one) {
                Some(last) if last < self.end => start = last + 1,
                _ => break,
            }
        }
        out
    }

    /// The longest prefix among [`Self::cidrs`]: an aggregation length shorter than this would
    /// announce addresses outside the range.
    /// The prefix length of the largest CIDR block the range splits into: the shortest
    /// aggregation MetalLB allows for it (`10.0.0.10-10.0.0.20` splits into .10/31, .12/30,
    /// .16/30 and .20/32, so /30).
    pub fn least_specific_prefix(&self) -> u8 {
        self.cidrs()
            .iter()
            .map(IpNet::prefix_len)
            .min()
            .unwrap_or(self.family.bits())
    }

    pub fn most_specific_prefix(&self) -> u8 {
        self.cidrs()
            .iter()
            .map(IpNet::prefix_len)
            .max()
            .unwrap_or(self.family.bits())
    }
}

impl fmt::Display for IpRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.first())
        } else {
            write!(f, "{}-{}", self.first(), self.last())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parses_every_spelling() {
        let r = IpRange::parse("192.0.2.0/24").unwrap();
        assert_eq!((r.first(), r.last()), (ip("192.0.2.0"), ip("192.0.2.255")));
        let r = IpRange::parse(" 192.0.2.10 - 192.0.2.20 ").unwrap();
        assert_eq!(r.len(), Some(11));
        let r = IpRange::parse("2001:db8::/64").unwrap();
        assert_eq!(r.len(), Some(1u128 << 64));
        let r = IpRange::parse("2001:db8::1").unwrap();
        assert_eq!(r.len(), Some(1));
        // Host bits are ignored, as MetalLB does.
        let r = IpRange::parse("192.0.2.77/30").unwrap();
        assert_eq!(r.first(), ip("192.0.2.76"));
    }

    #[test]
    fn rejects_bad_entries_with_a_reason() {
        assert!(matches!(
            IpRange::parse(""),
            Err(AddressError::Malformed(_))
        ));
        assert!(matches!(
            IpRange::parse("192.0.2.0/33"),
            Err(AddressError::BadCidr { .. })
        ));
        assert!(matches!(
            IpRange::parse("192.0.2.300"),
            Err(AddressError::BadAddress { .. })
        ));
        assert!(matches!(
            IpRange::parse("192.0.2.20-192.0.2.10"),
            Err(AddressError::Reversed { .. })
        ));
        assert!(matches!(
            IpRange::parse("192.0.2.1-2001:db8::1"),
            Err(AddressError::MixedFamilies { .. })
        ));
        assert!(matches!(
            IpRange::parse("::/0"),
            Err(AddressError::WholeSpace { .. })
        ));
        assert!(IpRange::parse("0.0.0.0/0").is_ok());
    }

    #[test]
    fn buggy_addresses_are_counted_without_a_scan() {
        assert_eq!(IpRange::parse("192.0.2.0/24").unwrap().buggy_count(), 2);
        assert_eq!(
            IpRange::parse("192.0.2.1-192.0.2.254")
                .unwrap()
                .buggy_count(),
            0
        );
        assert_eq!(
            IpRange::parse("192.0.2.255-192.0.3.0")
                .unwrap()
                .buggy_count(),
            2
        );
        assert_eq!(
            IpRange::parse("10.0.0.0/8").unwrap().buggy_count(),
            2 * 65536
        );
        assert_eq!(IpRange::parse("0.0.0.0/0").unwrap().buggy_count(), 2 << 24);
        assert_eq!(IpRange::parse("2001:db8::/64").unwrap().buggy_count(), 0);
    }

    #[test]
    fn cidr_split_is_minimal() {
        let r = IpRange::parse("192.0.2.10-192.0.2.20").unwrap();
        let cidrs: Vec<String> = r.cidrs().iter().map(ToString::to_string).collect();
        assert_eq!(
            cidrs,
            [
                "192.0.2.10/31",
                "192.0.2.12/30",
                "192.0.2.16/30",
                "192.0.2.20/32"
            ]
        );
        assert_eq!(r.most_specific_prefix(), 32);
        assert_eq!(
            IpRange::parse("192.0.2.0/24")
                .unwrap()
                .most_specific_prefix(),
            24
        );
        assert_eq!(IpRange::parse("0.0.0.0/0").unwrap().cidrs().len(), 1);
        let all_but_zero =
            IpRange::new(ip("::1"), ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")).unwrap();
        assert_eq!(all_but_zero.cidrs().len(), 128);
    }

    proptest! {
        #[test]
        fn cidrs_cover_the_range_exactly(start in any::<u32>(), len in 0u32..100_000) {
            let end = start.saturating_add(len);
            let r = IpRange::new(IpAddr::V4(start.into()), IpAddr::V4(end.into())).unwrap();
            let mut next = u128::from(start);
            for net in r.cidrs() {
                let part = IpRange::from_net(net);
                prop_assert_eq!(part.start(), next);
                next = part.end() + 1;
            }
            prop_assert_eq!(next, u128::from(end) + 1);
        }

        #[test]
        fn buggy_count_matches_a_scan(start in any::<u32>(), len in 0u32..2_000) {
            let end = start.saturating_add(len);
            let r = IpRange::new(IpAddr::V4(start.into()), IpAddr::V4(end.into())).unwrap();
            let scanned = (start..=end).filter(|x| matches!(x & 0xff, 0 | 255)).count() as u128;
            prop_assert_eq!(r.buggy_count(), scanned);
        }
    }
}
