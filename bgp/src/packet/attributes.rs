//! Path attributes (RFC 4271 4.3 and 5, RFC 4760, RFC 1997, RFC 4360, RFC 8092, RFC 6793),
//! with the received-error handling of RFC 7606.
//!
//! Each attribute is a triple <type, length, value>:
//!
//! ```text
//!  0                   1
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5
//! +---------------+---------------+
//! |  Attr. Flags  |Attr. Type Code|
//! +---------------+---------------+
//!  flags: O(ptional) T(ransitive) P(artial) E(xtended length) 0 0 0 0
//! ```
//!
//! followed by a 1-octet length, or 2 octets when E is set, then the value.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use super::error::codes;
use super::prefix::{self, PrefixError};
use super::{Afi, DecodeContext, Family, MessageError, Reader, Safi, AS_TRANS};

pub const FLAG_OPTIONAL: u8 = 0x80;
pub const FLAG_TRANSITIVE: u8 = 0x40;
pub const FLAG_PARTIAL: u8 = 0x20;
pub const FLAG_EXTENDED_LENGTH: u8 = 0x10;

/// Attribute type codes.
pub mod attr_type {
    pub const ORIGIN: u8 = 1;
    pub const AS_PATH: u8 = 2;
    pub const NEXT_HOP: u8 = 3;
    pub const MULTI_EXIT_DISC: u8 = 4;
    pub const LOCAL_PREF: u8 = 5;
    pub const ATOMIC_AGGREGATE: u8 = 6;
    pub const AGGREGATOR: u8 = 7;
    pub const COMMUNITIES: u8 = 8;
    pub const ORIGINATOR_ID: u8 = 9;
    pub const CLUSTER_LIST: u8 = 10;
    pub const MP_REACH_NLRI: u8 = 14;
    pub const MP_UNREACH_NLRI: u8 = 15;
    pub const EXTENDED_COMMUNITIES: u8 = 16;
    pub const AS4_PATH: u8 = 17;
    pub const AS4_AGGREGATOR: u8 = 18;
    pub const LARGE_COMMUNITIES: u8 = 32;
}
use attr_type as t;

/// ORIGIN values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Origin {
    #[default]
    Igp = 0,
    Egp = 1,
    Incomplete = 2,
}

/// AS_PATH segment types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SegmentType {
    Set = 1,
    Sequence = 2,
    ConfedSequence = 3,
    ConfedSet = 4,
}

/// One AS_PATH segment:
///
/// ```text
/// +------------------------------+
/// | segment type (1) | count (1) |
/// +------------------------------+
/// | ASNs (2 or 4 octets each)    |
/// +------------------------------+
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AsSegment {
    pub kind: SegmentType,
    pub asns: Vec<u32>,
}

/// An AS path, ASNs always held as 4 octets.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct AsPath {
    pub segments: Vec<AsSegment>,
}

impl AsPath {
    /// A single AS_SEQUENCE (empty path for an empty slice, as iBGP originates).
    pub fn sequence(asns: &[u32]) -> Self {
        if asns.is_empty() {
            return AsPath::default();
        }
        AsPath {
            segments: vec![AsSegment {
                kind: SegmentType::Sequence,
                asns: asns.to_vec(),
            }],
        }
    }

    /// Path length for comparisons: a set counts as one (RFC 4271 9.1.2.2).
    pub fn length(&self) -> usize {
        self.segments
            .iter()
            .map(|s| match s.kind {
                SegmentType::Sequence => s.asns.len(),
                SegmentType::Set => 1,
                _ => 0,
            })
            .sum()
    }

    fn needs_as4(&self) -> bool {
        self.segments
            .iter()
            .any(|s| s.asns.iter().any(|&a| a > u16::MAX as u32))
    }

    /// Rebuilds the real path from AS_PATH and AS4_PATH received from a 2-octet speaker
    /// (RFC 6793 section 4.2.3).
    pub fn merge_as4(&self, as4: &AsPath) -> AsPath {
        let (n, n4) = (self.length(), as4.length());
        if n < n4 {
            return self.clone();
        }
        let mut keep = n - n4;
        let mut segments = Vec::new();
        for s in &self.segments {
            if keep == 0 {
                break;
            }
            match s.kind {
                SegmentType::Sequence => {
                    let take = keep.min(s.asns.len());
                    segments.push(AsSegment {
                        kind: s.kind,
                        asns: s.asns[..take].to_vec(),
                    });
                    keep -= take;
                }
                SegmentType::Set => {
                    segments.push(s.clone());
                    keep -= 1;
                }
                _ => segments.push(s.clone()),
            }
        }
        segments.extend(as4.segments.iter().cloned());
        AsPath { segments }
    }

    fn decode(value: &[u8], four_octet: bool) -> Option<AsPath> {
        let mut r = Reader::new(value);
        let mut segments = Vec::new();
        while !r.is_empty() {
            let kind = match r.u8()? {
                1 => SegmentType::Set,
                2 => SegmentType::Sequence,
                3 => SegmentType::ConfedSequence,
                4 => SegmentType::ConfedSet,
                _ => return None,
            };
            let count = r.u8()?;
            if count == 0 {
                return None;
            }
            let mut asns = Vec::with_capacity(count as usize);
            for _ in 0..count {
                asns.push(if four_octet {
                    r.u32()?
                } else {
                    r.u16()? as u32
                });
            }
            segments.push(AsSegment { kind, asns });
        }
        Some(AsPath { segments })
    }

    fn encode(&self, four_octet: bool, out: &mut Vec<u8>) {
        for s in &self.segments {
            // Segments hold at most 255 ASNs; split longer ones.
            for chunk in s.asns.chunks(255) {
                out.push(s.kind as u8);
                out.push(chunk.len() as u8);
                for &a in chunk {
                    if four_octet {
                        out.extend_from_slice(&a.to_be_bytes());
                    } else {
                        let a = u16::try_from(a).unwrap_or(AS_TRANS);
                        out.extend_from_slice(&a.to_be_bytes());
                    }
                }
            }
        }
    }
}

/// A large community (RFC 8092): global administrator, two local data parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LargeCommunity {
    pub global: u32,
    pub local1: u32,
    pub local2: u32,
}

/// Next hop inside MP_REACH_NLRI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MpNextHop {
    V4(Ipv4Addr),
    /// Global address, with the link-local one when it is a 32-octet next hop (RFC 2545).
    V6 {
        global: Ipv6Addr,
        link_local: Option<Ipv6Addr>,
    },
}

/// MP_REACH_NLRI (RFC 4760 section 3).
///
/// ```text
/// +---------------------------------------------------------+
/// | Address Family Identifier (2 octets)                    |
/// +---------------------------------------------------------+
/// | Subsequent Address Family Identifier (1 octet)          |
/// +---------------------------------------------------------+
/// | Length of Next Hop Network Address (1 octet)            |
/// +---------------------------------------------------------+
/// | Network Address of Next Hop (variable)                  |
/// +---------------------------------------------------------+
/// | Reserved (1 octet)                                      |
/// +---------------------------------------------------------+
/// | Network Layer Reachability Information (variable)       |
/// +---------------------------------------------------------+
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpReach {
    pub family: Family,
    pub next_hop: MpNextHop,
    pub nlri: Vec<IpNet>,
}

/// MP_UNREACH_NLRI (RFC 4760 section 4).
///
/// ```text
/// +---------------------------------------------------------+
/// | Address Family Identifier (2 octets)                    |
/// +---------------------------------------------------------+
/// | Subsequent Address Family Identifier (1 octet)          |
/// +---------------------------------------------------------+
/// | Withdrawn Routes (variable)                             |
/// +---------------------------------------------------------+
/// ```
///
/// With no withdrawn routes it is the End-of-RIB marker of that family (RFC 4724).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MpUnreach {
    pub family: Family,
    pub withdrawn: Vec<IpNet>,
}

/// An attribute we do not interpret, kept as received.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RawAttribute {
    pub flags: u8,
    pub type_code: u8,
    pub value: Vec<u8>,
}

/// The path attributes of an UPDATE.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PathAttributes {
    pub origin: Option<Origin>,
    /// On a 2-octet session this is the path as received (AS_TRANS included); see
    /// [`AsPath::merge_as4`] with `as4_path`. On encoding towards a 2-octet peer, AS4_PATH is
    /// generated from it when it holds 4-octet ASNs.
    pub as_path: Option<AsPath>,
    pub next_hop: Option<Ipv4Addr>,
    pub med: Option<u32>,
    pub local_pref: Option<u32>,
    pub atomic_aggregate: bool,
    pub aggregator: Option<(u32, Ipv4Addr)>,
    pub communities: Vec<u32>,
    pub originator_id: Option<Ipv4Addr>,
    pub cluster_list: Vec<Ipv4Addr>,
    pub mp_reach: Option<MpReach>,
    pub mp_unreach: Option<MpUnreach>,
    pub extended_communities: Vec<[u8; 8]>,
    pub as4_path: Option<AsPath>,
    pub as4_aggregator: Option<(u32, Ipv4Addr)>,
    pub large_communities: Vec<LargeCommunity>,
    /// Unrecognised optional transitive attributes.
    pub unknown: Vec<RawAttribute>,
}

/// What RFC 7606 says to do about one malformed attribute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum AttrFault {
    /// Keep the UPDATE, drop the attribute.
    Discard,
    /// Handle every NLRI of the UPDATE as withdrawn.
    TreatAsWithdraw(&'static str),
    /// Reset the session with this NOTIFICATION.
    Reset(MessageError),
}

/// Result of reading the attribute field of a received UPDATE.
#[derive(Debug, Default)]
pub(crate) struct DecodedAttributes {
    pub attrs: PathAttributes,
    pub treat_as_withdraw: Option<&'static str>,
    pub discarded: Vec<u8>,
}

/// The attribute triple as the data of an UPDATE error NOTIFICATION.
fn attribute_data(flags: u8, type_code: u8, value: &[u8]) -> Vec<u8> {
    let mut d = vec![flags, type_code];
    if flags & FLAG_EXTENDED_LENGTH != 0 {
        d.extend_from_slice(&(value.len() as u16).to_be_bytes());
    } else {
        d.push(value.len() as u8);
    }
    d.extend_from_slice(value);
    d
}

fn mp_family_is_unicast_ip(f: Family) -> bool {
    f.safi == Safi::UNICAST && (f.afi == Afi::IPV4 || f.afi == Afi::IPV6)
}

fn decode_mp_nlri(family: Family, buf: &[u8]) -> Result<Vec<IpNet>, PrefixError> {
    if !mp_family_is_unicast_ip(family) {
        // A family we did not negotiate: nothing to interpret (we use no received routes).
        return Ok(Vec::new());
    }
    if family.afi == Afi::IPV4 {
        prefix::decode_v4_all(buf).map(|v| v.into_iter().map(IpNet::V4).collect())
    } else {
        prefix::decode_v6_all(buf).map(|v| v.into_iter().map(IpNet::V6).collect())
    }
}

fn decode_mp_reach(value: &[u8]) -> Option<Result<MpReach, PrefixError>> {
    let mut r = Reader::new(value);
    let afi = r.u16()?;
    let safi = r.u8()?;
    let nh_len = r.u8()? as usize;
    let nh = r.take(nh_len)?;
    let _reserved = r.u8()?;
    let family = Family {
        afi: Afi(afi),
        safi: Safi(safi),
    };
    let next_hop = match nh_len {
        4 => MpNextHop::V4(Ipv4Addr::new(nh[0], nh[1], nh[2], nh[3])),
        16 | 32 => {
            let mut g = [0u8; 16];
            g.copy_from_slice(&nh[..16]);
            let link_local = (nh_len == 32).then(|| {
                let mut l = [0u8; 16];
                l.copy_from_slice(&nh[16..32]);
                Ipv6Addr::from(l)
            });
            MpNextHop::V6 {
                global: Ipv6Addr::from(g),
                link_local,
            }
        }
        _ if !mp_family_is_unicast_ip(family) => MpNextHop::V4(Ipv4Addr::UNSPECIFIED),
        _ => return None,
    };
    Some(decode_mp_nlri(family, r.rest()).map(|nlri| MpReach {
        family,
        next_hop,
        nlri,
    }))
}

impl PathAttributes {
    /// Reads the attribute field of a received UPDATE, applying RFC 7606.
    pub(crate) fn decode(
        buf: &[u8],
        ctx: &DecodeContext,
    ) -> Result<DecodedAttributes, MessageError> {
        let mut out = DecodedAttributes::default();
        let mut seen = [false; 256];
        let mut r = Reader::new(buf);
        while !r.is_empty() {
            // RFC 7606 section 4: an attribute header or length that overruns the field.
            let Some((flags, type_code)) = r.u8().zip(r.u8()) else {
                out.treat_as_withdraw = Some("truncated attribute header");
                break;
            };
            let len = if flags & FLAG_EXTENDED_LENGTH != 0 {
                r.u16().map(usize::from)
            } else {
                r.u8().map(usize::from)
            };
            let Some(value) = len.and_then(|l| r.take(l)) else {
                out.treat_as_withdraw = Some("attribute length overruns the attribute field");
                break;
            };
            if seen[type_code as usize] {
                if matches!(type_code, t::MP_REACH_NLRI | t::MP_UNREACH_NLRI) {
                    return Err(MessageError::update(
                        codes::MALFORMED_ATTRIBUTE_LIST,
                        Vec::new(),
                        "repeated MP_REACH_NLRI or MP_UNREACH_NLRI",
                    ));
                }
                // RFC 7606 3(g): keep the first, discard the repeats.
                out.discarded.push(type_code);
                continue;
            }
            seen[type_code as usize] = true;
            match out.attrs.decode_one(flags, type_code, value, ctx) {
                Ok(()) => {}
                Err(AttrFault::Discard) => out.discarded.push(type_code),
                Err(AttrFault::TreatAsWithdraw(why)) => {
                    out.treat_as_withdraw.get_or_insert(why);
                }
                Err(AttrFault::Reset(e)) => return Err(e),
            }
        }
        Ok(out)
    }

    fn decode_one(
        &mut self,
        flags: u8,
        type_code: u8,
        value: &[u8],
        ctx: &DecodeContext,
    ) -> Result<(), AttrFault> {
        let well_known = matches!(
            type_code,
            t::ORIGIN | t::AS_PATH | t::NEXT_HOP | t::LOCAL_PREF | t::ATOMIC_AGGREGATE
        );
        let optional_transitive = matches!(
            type_code,
            t::AGGREGATOR
                | t::COMMUNITIES
                | t::EXTENDED_COMMUNITIES
                | t::AS4_PATH
                | t::AS4_AGGREGATOR
                | t::LARGE_COMMUNITIES
        );
        let optional_non_transitive = matches!(
            type_code,
            t::MULTI_EXIT_DISC
                | t::ORIGINATOR_ID
                | t::CLUSTER_LIST
                | t::MP_REACH_NLRI
                | t::MP_UNREACH_NLRI
        );
        let ot = flags & (FLAG_OPTIONAL | FLAG_TRANSITIVE);
        let flags_ok = if well_known {
            ot == FLAG_TRANSITIVE
        } else if optional_transitive {
            ot == FLAG_OPTIONAL | FLAG_TRANSITIVE
        } else if optional_non_transitive {
            ot == FLAG_OPTIONAL
        } else {
            true
        };
        let withdraw = |why| Err(AttrFault::TreatAsWithdraw(why));
        let reset = |sub, why| {
            Err(AttrFault::Reset(MessageError::update(
                sub,
                attribute_data(flags, type_code, value),
                why,
            )))
        };
        if !flags_ok {
            // RFC 7606 3(c): a flags conflict makes the attribute malformed.
            return match type_code {
                t::MP_REACH_NLRI | t::MP_UNREACH_NLRI => {
                    reset(codes::ATTRIBUTE_FLAGS_ERROR, "MP attribute flags")
                }
                t::ATOMIC_AGGREGATE | t::AGGREGATOR | t::AS4_PATH | t::AS4_AGGREGATOR => {
                    Err(AttrFault::Discard)
                }
                t::LOCAL_PREF if !ctx.ibgp => Err(AttrFault::Discard),
                _ => withdraw("attribute flags conflict"),
            };
        }
        let u32_of = |v: &[u8]| -> Option<u32> {
            let b: [u8; 4] = v.try_into().ok()?;
            Some(u32::from_be_bytes(b))
        };
        match type_code {
            t::ORIGIN => match value {
                [0] => self.origin = Some(Origin::Igp),
                [1] => self.origin = Some(Origin::Egp),
                [2] => self.origin = Some(Origin::Incomplete),
                _ => return withdraw("malformed ORIGIN"),
            },
            t::AS_PATH => match AsPath::decode(value, ctx.four_octet_asn) {
                Some(p) => self.as_path = Some(p),
                None => return withdraw("malformed AS_PATH"),
            },
            t::NEXT_HOP => match u32_of(value).map(Ipv4Addr::from) {
                Some(nh) if !nh.is_unspecified() && !nh.is_multicast() && !nh.is_broadcast() => {
                    self.next_hop = Some(nh)
                }
                Some(_) => return withdraw("semantically invalid NEXT_HOP"),
                None => return withdraw("malformed NEXT_HOP"),
            },
            t::MULTI_EXIT_DISC => match u32_of(value) {
                Some(v) => self.med = Some(v),
                None => return withdraw("malformed MULTI_EXIT_DISC"),
            },
            t::LOCAL_PREF => {
                if !ctx.ibgp {
                    // RFC 7606 7.5: LOCAL_PREF from an external peer is discarded.
                    return Err(AttrFault::Discard);
                }
                match u32_of(value) {
                    Some(v) => self.local_pref = Some(v),
                    None => return withdraw("malformed LOCAL_PREF"),
                }
            }
            t::ATOMIC_AGGREGATE => {
                if !value.is_empty() {
                    return Err(AttrFault::Discard);
                }
                self.atomic_aggregate = true;
            }
            t::AGGREGATOR => {
                let mut r = Reader::new(value);
                let want = if ctx.four_octet_asn { 8 } else { 6 };
                if value.len() != want {
                    return Err(AttrFault::Discard);
                }
                let asn = if ctx.four_octet_asn {
                    r.u32()
                } else {
                    r.u16().map(u32::from)
                };
                match asn.zip(r.u32()) {
                    Some((a, id)) => self.aggregator = Some((a, Ipv4Addr::from(id))),
                    None => return Err(AttrFault::Discard),
                }
            }
            t::AS4_AGGREGATOR => {
                let mut r = Reader::new(value);
                match (value.len() == 8).then(|| r.u32().zip(r.u32())).flatten() {
                    Some((a, id)) => self.as4_aggregator = Some((a, Ipv4Addr::from(id))),
                    None => return Err(AttrFault::Discard),
                }
            }
            t::COMMUNITIES => {
                if value.is_empty() || !value.len().is_multiple_of(4) {
                    return withdraw("malformed COMMUNITIES");
                }
                self.communities = value
                    .chunks_exact(4)
                    .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
            }
            t::ORIGINATOR_ID => match u32_of(value) {
                Some(v) if ctx.ibgp => self.originator_id = Some(Ipv4Addr::from(v)),
                _ if !ctx.ibgp => return Err(AttrFault::Discard),
                _ => return withdraw("malformed ORIGINATOR_ID"),
            },
            t::CLUSTER_LIST => {
                if !ctx.ibgp {
                    return Err(AttrFault::Discard);
                }
                if value.is_empty() || !value.len().is_multiple_of(4) {
                    return withdraw("malformed CLUSTER_LIST");
                }
                self.cluster_list = value
                    .chunks_exact(4)
                    .map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3]))
                    .collect();
            }
            t::EXTENDED_COMMUNITIES => {
                if value.is_empty() || !value.len().is_multiple_of(8) {
                    return withdraw("malformed EXTENDED_COMMUNITIES");
                }
                self.extended_communities = value
                    .chunks_exact(8)
                    .map(|c| {
                        let mut a = [0u8; 8];
                        a.copy_from_slice(c);
                        a
                    })
                    .collect();
            }
            t::LARGE_COMMUNITIES => {
                if value.is_empty() || !value.len().is_multiple_of(12) {
                    return withdraw("malformed LARGE_COMMUNITIES");
                }
                self.large_communities = value
                    .chunks_exact(12)
                    .map(|c| LargeCommunity {
                        global: u32::from_be_bytes([c[0], c[1], c[2], c[3]]),
                        local1: u32::from_be_bytes([c[4], c[5], c[6], c[7]]),
                        local2: u32::from_be_bytes([c[8], c[9], c[10], c[11]]),
                    })
                    .collect();
            }
            t::AS4_PATH => {
                // RFC 6793 section 6: a malformed AS4_PATH is discarded, as is one received
                // from a 4-octet speaker (it must not send one).
                if ctx.four_octet_asn {
                    return Err(AttrFault::Discard);
                }
                match AsPath::decode(value, true) {
                    Some(p) => self.as4_path = Some(p),
                    None => return Err(AttrFault::Discard),
                }
            }
            t::MP_REACH_NLRI => match decode_mp_reach(value) {
                Some(Ok(mp)) => self.mp_reach = Some(mp),
                Some(Err(_)) => {
                    return reset(
                        codes::OPTIONAL_ATTRIBUTE_ERROR,
                        "malformed MP_REACH_NLRI prefixes",
                    )
                }
                None => return reset(codes::OPTIONAL_ATTRIBUTE_ERROR, "malformed MP_REACH_NLRI"),
            },
            t::MP_UNREACH_NLRI => {
                let mut r = Reader::new(value);
                let Some((afi, safi)) = r.u16().zip(r.u8()) else {
                    return reset(codes::OPTIONAL_ATTRIBUTE_ERROR, "malformed MP_UNREACH_NLRI");
                };
                let family = Family {
                    afi: Afi(afi),
                    safi: Safi(safi),
                };
                match decode_mp_nlri(family, r.rest()) {
                    Ok(withdrawn) => self.mp_unreach = Some(MpUnreach { family, withdrawn }),
                    Err(_) => {
                        return reset(
                            codes::OPTIONAL_ATTRIBUTE_ERROR,
                            "malformed MP_UNREACH_NLRI prefixes",
                        )
                    }
                }
            }
            _ => {
                if flags & FLAG_OPTIONAL == 0 {
                    return reset(
                        codes::UNRECOGNIZED_WELL_KNOWN_ATTRIBUTE,
                        "unrecognized well-known attribute",
                    );
                }
                if flags & FLAG_TRANSITIVE != 0 {
                    self.unknown.push(RawAttribute {
                        flags,
                        type_code,
                        value: value.to_vec(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Appends the attribute field (without its 2-octet length) in the order RFC 7606 5.1
    /// recommends: MP_REACH / MP_UNREACH first, then by type code.
    pub fn encode(&self, ctx: &DecodeContext, out: &mut Vec<u8>) {
        if let Some(mp) = &self.mp_reach {
            let at = begin_attribute(FLAG_OPTIONAL, t::MP_REACH_NLRI, out);
            encode_mp_reach_head(mp.family, &mp.next_hop, out);
            for p in &mp.nlri {
                prefix::encode(p, out);
            }
            end_attribute(at, out);
        }
        if let Some(mp) = &self.mp_unreach {
            let at = begin_attribute(FLAG_OPTIONAL, t::MP_UNREACH_NLRI, out);
            encode_mp_unreach_head(mp.family, out);
            for p in &mp.withdrawn {
                prefix::encode(p, out);
            }
            end_attribute(at, out);
        }
        self.encode_without_mp(ctx, out);
    }

    /// Everything but MP_REACH_NLRI / MP_UNREACH_NLRI.
    pub(crate) fn encode_without_mp(&self, ctx: &DecodeContext, out: &mut Vec<u8>) {
        if let Some(o) = self.origin {
            put_attr(FLAG_TRANSITIVE, t::ORIGIN, &[o as u8], out);
        }
        if let Some(p) = &self.as_path {
            // Always a 2-octet length, as FRR sends it (paths grow when relayed).
            let at = begin_attribute(FLAG_TRANSITIVE, t::AS_PATH, out);
            p.encode(ctx.four_octet_asn, out);
            end_attribute_extended(at, out);
        }
        if let Some(nh) = self.next_hop {
            put_attr(FLAG_TRANSITIVE, t::NEXT_HOP, &nh.octets(), out);
        }
        if let Some(med) = self.med {
            put_attr(FLAG_OPTIONAL, t::MULTI_EXIT_DISC, &med.to_be_bytes(), out);
        }
        if let Some(lp) = self.local_pref {
            put_attr(FLAG_TRANSITIVE, t::LOCAL_PREF, &lp.to_be_bytes(), out);
        }
        if self.atomic_aggregate {
            put_attr(FLAG_TRANSITIVE, t::ATOMIC_AGGREGATE, &[], out);
        }
        if let Some((asn, id)) = self.aggregator {
            let at = begin_attribute(FLAG_OPTIONAL | FLAG_TRANSITIVE, t::AGGREGATOR, out);
            if ctx.four_octet_asn {
                out.extend_from_slice(&asn.to_be_bytes());
            } else {
                out.extend_from_slice(&u16::try_from(asn).unwrap_or(AS_TRANS).to_be_bytes());
            }
            out.extend_from_slice(&id.octets());
            end_attribute(at, out);
        }
        if !self.communities.is_empty() {
            let at = begin_attribute(FLAG_OPTIONAL | FLAG_TRANSITIVE, t::COMMUNITIES, out);
            for c in &self.communities {
                out.extend_from_slice(&c.to_be_bytes());
            }
            end_attribute(at, out);
        }
        if let Some(id) = self.originator_id {
            put_attr(FLAG_OPTIONAL, t::ORIGINATOR_ID, &id.octets(), out);
        }
        if !self.cluster_list.is_empty() {
            let at = begin_attribute(FLAG_OPTIONAL, t::CLUSTER_LIST, out);
            for id in &self.cluster_list {
                out.extend_from_slice(&id.octets());
            }
            end_attribute(at, out);
        }
        if !self.extended_communities.is_empty() {
            let at = begin_attribute(
                FLAG_OPTIONAL | FLAG_TRANSITIVE,
                t::EXTENDED_COMMUNITIES,
                out,
            );
            for c in &self.extended_communities {
                out.extend_from_slice(c);
            }
            end_attribute(at, out);
        }
        // AS4_PATH: explicit, or derived for a 2-octet peer when the path needs it.
        let as4 = match (&self.as4_path, &self.as_path) {
            (Some(p), _) => Some(p),
            (None, Some(p)) if !ctx.four_octet_asn && p.needs_as4() => Some(p),
            _ => None,
        };
        if let Some(p) = as4.filter(|_| !ctx.four_octet_asn) {
            let at = begin_attribute(FLAG_OPTIONAL | FLAG_TRANSITIVE, t::AS4_PATH, out);
            p.encode(true, out);
            end_attribute(at, out);
        }
        let as4_agg = self.as4_aggregator.or_else(|| {
            self.aggregator
                .filter(|(a, _)| !ctx.four_octet_asn && *a > u16::MAX as u32)
        });
        if let Some((asn, id)) = as4_agg.filter(|_| !ctx.four_octet_asn) {
            let mut v = asn.to_be_bytes().to_vec();
            v.extend_from_slice(&id.octets());
            put_attr(FLAG_OPTIONAL | FLAG_TRANSITIVE, t::AS4_AGGREGATOR, &v, out);
        }
        if !self.large_communities.is_empty() {
            let at = begin_attribute(FLAG_OPTIONAL | FLAG_TRANSITIVE, t::LARGE_COMMUNITIES, out);
            for c in &self.large_communities {
                out.extend_from_slice(&c.global.to_be_bytes());
                out.extend_from_slice(&c.local1.to_be_bytes());
                out.extend_from_slice(&c.local2.to_be_bytes());
            }
            end_attribute(at, out);
        }
        for raw in &self.unknown {
            // Re-advertised unknown transitive attributes get the Partial bit (RFC 4271 5).
            let flags = (raw.flags | FLAG_PARTIAL) & !FLAG_EXTENDED_LENGTH;
            let at = begin_attribute(flags, raw.type_code, out);
            out.extend_from_slice(&raw.value);
            end_attribute(at, out);
        }
    }
}

/// Writes flags and type with a 2-octet length placeholder (E bit set); returns its offset.
pub(crate) fn begin_attribute(flags: u8, type_code: u8, out: &mut Vec<u8>) -> usize {
    out.push(flags | FLAG_EXTENDED_LENGTH);
    out.push(type_code);
    let at = out.len();
    out.extend_from_slice(&[0, 0]);
    at
}

/// Fills in the length written by [`begin_attribute`]; uses a 1-octet length when the value is
/// short (what other implementations send, and a byte shorter).
pub(crate) fn end_attribute(at: usize, out: &mut Vec<u8>) {
    let len = out.len() - at - 2;
    if len <= 255 {
        out[at - 2] &= !FLAG_EXTENDED_LENGTH;
        out[at] = len as u8;
        out.remove(at + 1);
    } else {
        out[at..at + 2].copy_from_slice(&(len.min(u16::MAX as usize) as u16).to_be_bytes());
    }
}

/// Fills in the length written by [`begin_attribute`], always keeping 2 octets (for
/// attributes that grow while prefixes are packed into them).
pub(crate) fn end_attribute_extended(at: usize, out: &mut [u8]) {
    let len = out.len() - at - 2;
    out[at..at + 2].copy_from_slice(&(len.min(u16::MAX as usize) as u16).to_be_bytes());
}

fn put_attr(flags: u8, type_code: u8, value: &[u8], out: &mut Vec<u8>) {
    out.push(flags);
    out.push(type_code);
    out.push(value.len() as u8);
    out.extend_from_slice(value);
}

pub(crate) fn encode_mp_reach_head(family: Family, next_hop: &MpNextHop, out: &mut Vec<u8>) {
    out.extend_from_slice(&family.afi.0.to_be_bytes());
    out.push(family.safi.0);
    match next_hop {
        MpNextHop::V4(a) => {
            out.push(4);
            out.extend_from_slice(&a.octets());
        }
        MpNextHop::V6 { global, link_local } => {
            out.push(if link_local.is_some() { 32 } else { 16 });
            out.extend_from_slice(&global.octets());
            if let Some(ll) = link_local {
                out.extend_from_slice(&ll.octets());
            }
        }
    }
    out.push(0);
}

pub(crate) fn encode_mp_unreach_head(family: Family, out: &mut Vec<u8>) {
    out.extend_from_slice(&family.afi.0.to_be_bytes());
    out.push(family.safi.0);
}

impl MpNextHop {
    /// The next hop to put in MP_REACH for a family: IPv4 next hops for IPv6 NLRI become
    /// IPv4-mapped IPv6 addresses; IPv6 next hops for IPv4 NLRI need RFC 8950.
    pub fn for_address(addr: IpAddr) -> MpNextHop {
        match addr {
            IpAddr::V4(a) => MpNextHop::V4(a),
            IpAddr::V6(global) => MpNextHop::V6 {
                global,
                link_local: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn as4_merge_rfc6793() {
        // 2-octet view: 65001 23456 23456 65003; real: 65001 4200000001 4200000002 65003.
        let two = AsPath::sequence(&[65001, 23456, 23456, 65003]);
        let four = AsPath::sequence(&[4_200_000_001, 4_200_000_002, 65003]);
        let merged = two.merge_as4(&four);
        assert_eq!(merged.length(), 4);
        let flat: Vec<u32> = merged
            .segments
            .iter()
            .flat_map(|s| s.asns.clone())
            .collect();
        assert_eq!(flat, vec![65001, 4_200_000_001, 4_200_000_002, 65003]);
        // AS4_PATH longer than AS_PATH is ignored.
        let short = AsPath::sequence(&[65001]);
        assert_eq!(short.merge_as4(&four), short);
    }

    #[test]
    fn as_path_towards_two_octet_peer_gets_as4_path() {
        let attrs = PathAttributes {
            origin: Some(Origin::Igp),
            as_path: Some(AsPath::sequence(&[4_200_000_001])),
            next_hop: Some(Ipv4Addr::new(192, 0, 2, 1)),
            ..Default::default()
        };
        let two = DecodeContext::default();
        let mut out = Vec::new();
        attrs.encode(&two, &mut out);
        assert_eq!(
            out,
            [
                0x40, 1, 1, 0, // ORIGIN IGP
                0x50, 2, 0, 4, 2, 1, 0x5b, 0xa0, // AS_PATH [AS_TRANS]
                0x40, 3, 4, 192, 0, 2, 1, // NEXT_HOP
                0xc0, 17, 6, 2, 1, 0xfa, 0x56, 0xea, 0x01 // AS4_PATH [4200000001]
            ]
        );
        let decoded = PathAttributes::decode(&out, &two).unwrap();
        assert!(decoded.treat_as_withdraw.is_none());
        let a = decoded.attrs;
        assert_eq!(
            a.as_path.unwrap().merge_as4(a.as4_path.as_ref().unwrap()),
            AsPath::sequence(&[4_200_000_001])
        );
        // A 4-octet session carries the ASN directly and no AS4_PATH.
        let four = DecodeContext {
            four_octet_asn: true,
            ..two
        };
        let mut out = Vec::new();
        attrs_clone_for_four(&four, &mut out);
        assert!(!out.windows(2).any(|w| w == [0xc0, 17]));
    }

    fn attrs_clone_for_four(ctx: &DecodeContext, out: &mut Vec<u8>) {
        PathAttributes {
            as_path: Some(AsPath::sequence(&[4_200_000_001])),
            ..Default::default()
        }
        .encode(ctx, out);
    }

    #[test]
    fn long_values_use_extended_length() {
        let attrs = PathAttributes {
            communities: (0..100).collect(),
            ..Default::default()
        };
        let mut out = Vec::new();
        attrs.encode(&DecodeContext::default(), &mut out);
        assert_eq!(out[0], 0xd0);
        assert_eq!(u16::from_be_bytes([out[2], out[3]]), 400);
        let back = PathAttributes::decode(&out, &DecodeContext::default()).unwrap();
        assert_eq!(back.attrs.communities.len(), 100);
    }
}
