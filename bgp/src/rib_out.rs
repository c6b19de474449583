//! Adj-RIB-Out of one peer: the routes the caller wants announced, the routes the peer has
//! from us on the current session, and the packed UPDATEs that take one to the other.
//!
//! Announcements are grouped by attribute set (and next hop), and each group is drained into as
//! few UPDATEs as fit the negotiated maximum (4096 bytes, or 65535 with RFC 8654); withdrawals
//! are packed the same way. IPv4 routes with an IPv4 next hop use the classic NLRI field;
//! everything else uses MP_REACH_NLRI / MP_UNREACH_NLRI (RFC 4760), including IPv4 routes with
//! an IPv6 next hop when RFC 8950 was negotiated and IPv6 routes over an IPv4 session (with an
//! IPv4-mapped IPv6 next hop).

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::Arc;

use ipnet::{IpNet, Ipv4Net};

use crate::packet::attributes::{
    attr_type, begin_attribute, encode_mp_reach_head, encode_mp_unreach_head,
    end_attribute_extended, MpNextHop, FLAG_OPTIONAL,
};
use crate::packet::prefix;
use crate::packet::{
    finish_message, msg_type, AsPath, DecodeContext, Family, LargeCommunity, Message, Origin,
    PathAttributes, RouteRefresh, RouteRefreshSubtype, Update, HEADER_LEN,
};

/// The attributes the caller attaches to a route. Routes with equal attributes share UPDATEs.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct RouteAttributes {
    pub origin: Origin,
    /// `None`: our address on the session (or the peer's configured next hop of that family).
    pub next_hop: Option<IpAddr>,
    pub med: Option<u32>,
    /// Sent to iBGP peers only (RFC 4271 5.1.5); iBGP defaults to 100.
    pub local_pref: Option<u32>,
    pub communities: Vec<u32>,
    pub large_communities: Vec<LargeCommunity>,
    pub extended_communities: Vec<[u8; 8]>,
}

/// The GRACEFUL_SHUTDOWN well-known community, 65535:0 (RFC 8326).
pub const GRACEFUL_SHUTDOWN: u32 = 0xFFFF_0000;

impl RouteAttributes {
    /// The same route about to be withdrawn on purpose (RFC 8326): with the GRACEFUL_SHUTDOWN
    /// community, and LOCAL_PREF 0 (sent to iBGP peers only), so routers move the traffic to
    /// other paths while this one still forwards.
    pub fn graceful_shutdown(&self) -> RouteAttributes {
        let mut a = self.clone();
        if !a.communities.contains(&GRACEFUL_SHUTDOWN) {
            a.communities.push(GRACEFUL_SHUTDOWN);
        }
        a.local_pref = Some(0);
        a
    }
}

/// What the encoder must know about the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionParams {
    pub ctx: DecodeContext,
    pub local_asn: u32,
    pub families: Vec<Family>,
    /// Default next hops: our addresses of each family for this peer.
    pub next_hop_v4: Option<Ipv4Addr>,
    pub next_hop_v6: Option<Ipv6Addr>,
    /// RFC 8950 negotiated: IPv4 routes may carry an IPv6 next hop.
    pub ipv4_with_ipv6_next_hop: bool,
    /// Our link-local address on the link the session runs over (BGP unnumbered): IPv6 next
    /// hops carry it beside the global one (RFC 2545 section 3), which the peer installs.
    pub next_hop_link_local: Option<Ipv6Addr>,
    /// RFC 7313 negotiated: frame refreshes with BoRR / EoRR.
    pub enhanced_route_refresh: bool,
}

impl SessionParams {
    fn max_len(&self) -> usize {
        self.ctx.max_message_len()
    }
}

/// Counts from one drain of the Adj-RIB-Out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DrainStats {
    pub updates: u64,
    pub announced: u64,
    pub withdrawn: u64,
    /// Routes that cannot be sent on this session (family not negotiated or no usable next
    /// hop); they stay pending.
    pub unsendable: u64,
}

impl DrainStats {
    fn add(&mut self, o: DrainStats) {
        self.updates += o.updates;
        self.announced += o.announced;
        self.withdrawn += o.withdrawn;
        self.unsendable += o.unsendable;
    }
}

/// An attribute set and how its routes are encoded: one stream of packed UPDATEs.
type GroupKey = (Arc<RouteAttributes>, Encoding);

/// How a route travels on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Encoding {
    /// Classic NLRI, NEXT_HOP attribute.
    Classic(Ipv4Addr),
    /// MP_REACH_NLRI for `family` with this (global IPv6) next hop.
    Mp(Family, Ipv6Addr),
}

/// The Adj-RIB-Out of one peer.
#[derive(Debug, Default)]
pub struct AdjRibOut {
    desired: HashMap<IpNet, Arc<RouteAttributes>>,
    /// What the peer holds from us on this session.
    advertised: HashMap<IpNet, Arc<RouteAttributes>>,
}

impl AdjRibOut {
    pub fn new() -> Self {
        AdjRibOut::default()
    }

    /// Replaces the desired routes. Nothing is sent until [`AdjRibOut::drain`].
    pub fn set_desired(&mut self, routes: impl IntoIterator<Item = (IpNet, RouteAttributes)>) {
        // Share one allocation per distinct attribute set. Callers usually pass long runs of
        // equal attributes, so the previous set is checked before the map.
        let mut interned: HashMap<RouteAttributes, Arc<RouteAttributes>> = HashMap::new();
        let mut last: Option<Arc<RouteAttributes>> = None;
        let routes = routes.into_iter();
        let mut desired = HashMap::with_capacity(routes.size_hint().0);
        for (p, a) in routes {
            let shared = match &last {
                Some(l) if **l == a => l.clone(),
                _ => {
                    let s = interned
                        .entry(a)
                        .or_insert_with_key(|k| Arc::new(k.clone()))
                        .clone();
                    last = Some(s.clone());
                    s
                }
            };
            desired.insert(p.trunc(), shared);
        }
        self.desired = desired;
    }

    pub fn desired_len(&self) -> usize {
        self.desired.len()
    }

    pub fn advertised_len(&self) -> usize {
        self.advertised.len()
    }

    /// Whether a drain would send something.
    pub fn has_pending(&self) -> bool {
        self.desired.len() != self.advertised.len()
            || self
                .desired
                .iter()
                .any(|(p, a)| self.advertised.get(p) != Some(a))
    }

    /// The session went down: the peer holds nothing from us any more.
    pub fn session_reset(&mut self) {
        self.advertised.clear();
    }

    /// Appends the UPDATEs that bring the peer from what it has to what is desired, and
    /// records the result as advertised.
    pub fn drain(&mut self, params: &SessionParams, out: &mut Vec<u8>) -> DrainStats {
        let mut stats = DrainStats::default();
        // Withdrawals, grouped by the family they were announced in.
        let mut withdraw_v4: Vec<Ipv4Net> = Vec::new();
        let mut withdraw_mp: BTreeMap<Family, Vec<IpNet>> = BTreeMap::new();
        let gone: Vec<IpNet> = self
            .advertised
            .keys()
            .filter(|p| !self.desired.contains_key(p))
            .copied()
            .collect();
        for p in gone {
            let attrs = self.advertised.remove(&p);
            match (p, attrs.and_then(|a| encoding(&p, &a, params))) {
                (IpNet::V4(p4), Some(Encoding::Classic(_))) => withdraw_v4.push(p4),
                (_, Some(Encoding::Mp(f, _))) => withdraw_mp.entry(f).or_default().push(p),
                // Could not have been sent; nothing to withdraw.
                _ => {}
            }
        }
        withdraw_v4.sort_unstable();
        stats.add(pack_classic_withdraw(&withdraw_v4, params.max_len(), out));
        for (family, mut ps) in withdraw_mp {
            ps.sort_unstable();
            stats.add(pack_mp_withdraw(family, &ps, params.max_len(), out));
        }

        // Announcements, grouped by attribute set and encoding. Attribute sets are interned, so
        // the allocation's address identifies the set (cheap to hash).
        let mut groups: HashMap<(usize, Encoding), (Arc<RouteAttributes>, Vec<IpNet>)> =
            HashMap::new();
        for (p, a) in &self.desired {
            if self
                .advertised
                .get(p)
                .is_some_and(|b| Arc::ptr_eq(a, b) || a == b)
            {
                continue;
            }
            match encoding(p, a, params) {
                Some(enc) => groups
                    .entry((Arc::as_ptr(a) as usize, enc))
                    .or_insert_with(|| (a.clone(), Vec::new()))
                    .1
                    .push(*p),
                None => stats.unsendable += 1,
            }
        }
        let mut groups: Vec<(GroupKey, Vec<IpNet>)> = groups
            .into_iter()
            .map(|((_, enc), (a, ps))| ((a, enc), ps))
            .collect();
        // Deterministic output: by encoding, then by first prefix.
        for (_, ps) in groups.iter_mut() {
            ps.sort_unstable();
        }
        groups.sort_by(|a, b| (a.0 .1, a.1.first()).cmp(&(b.0 .1, b.1.first())));
        for ((attrs, enc), ps) in groups {
            let wire = wire_attributes(&attrs, enc, params);
            let mut attr_bytes = Vec::new();
            wire.encode_without_mp(&params.ctx, &mut attr_bytes);
            let s = match enc {
                Encoding::Classic(_) => {
                    let v4: Vec<Ipv4Net> = ps
                        .iter()
                        .filter_map(|p| match p {
                            IpNet::V4(p) => Some(*p),
                            IpNet::V6(_) => None,
                        })
                        .collect();
                    pack_classic_announce(&attr_bytes, &v4, params.max_len(), out)
                }
                Encoding::Mp(family, nh) => {
                    let nh = MpNextHop::V6 {
                        global: nh,
                        link_local: params.next_hop_link_local,
                    };
                    pack_mp_announce(&attr_bytes, family, &nh, &ps, params.max_len(), out)
                }
            };
            stats.add(s);
            self.advertised.reserve(ps.len());
            for p in ps {
                self.advertised.insert(p, attrs.clone());
            }
        }
        stats
    }

    /// Answers a route refresh for `family` (RFC 2918): the whole table of that family again,
    /// framed by BoRR / EoRR when enhanced route refresh was negotiated (RFC 7313).
    pub fn refresh(
        &mut self,
        family: Family,
        params: &SessionParams,
        out: &mut Vec<u8>,
    ) -> DrainStats {
        // First bring the peer up to date, so no withdrawal is lost.
        let mut stats = self.drain(params, out);
        let ctx = params.ctx;
        if params.enhanced_route_refresh {
            let borr = RouteRefresh {
                family,
                subtype: RouteRefreshSubtype::Begin,
            };
            let _ = Message::RouteRefresh(borr).encode(&ctx, out);
        }
        self.advertised
            .retain(|p, a| encoding(p, a, params).map(encoding_family) != Some(family));
        stats.add(self.drain(params, out));
        if params.enhanced_route_refresh {
            let eorr = RouteRefresh {
                family,
                subtype: RouteRefreshSubtype::End,
            };
            let _ = Message::RouteRefresh(eorr).encode(&ctx, out);
        }
        stats
    }
}

/// End-of-RIB markers for every negotiated family (RFC 4724 section 2).
pub fn end_of_rib(params: &SessionParams, out: &mut Vec<u8>) {
    for f in &params.families {
        let _ = Message::Update(Update::end_of_rib(*f)).encode(&params.ctx, out);
    }
}

fn encoding_family(e: Encoding) -> Family {
    match e {
        Encoding::Classic(_) => Family::IPV4_UNICAST,
        Encoding::Mp(f, _) => f,
    }
}

/// Chooses how `p` goes on the wire on this session, or `None` if it cannot.
fn encoding(p: &IpNet, a: &RouteAttributes, params: &SessionParams) -> Option<Encoding> {
    match p {
        IpNet::V4(_) => {
            if !params.families.contains(&Family::IPV4_UNICAST) {
                return None;
            }
            let nh = a.next_hop.or_else(|| {
                params
                    .next_hop_v4
                    .map(IpAddr::V4)
                    .or(params.next_hop_v6.map(IpAddr::V6))
            })?;
            match nh {
                IpAddr::V4(v4) => Some(Encoding::Classic(v4)),
                IpAddr::V6(v6) if params.ipv4_with_ipv6_next_hop => {
                    Some(Encoding::Mp(Family::IPV4_UNICAST, v6))
                }
                IpAddr::V6(_) => None,
            }
        }
        IpNet::V6(_) => {
            if !params.families.contains(&Family::IPV6_UNICAST) {
                return None;
            }
            let nh = a.next_hop.or_else(|| {
                params
                    .next_hop_v6
                    .map(IpAddr::V6)
                    .or(params.next_hop_v4.map(IpAddr::V4))
            })?;
            let v6 = match nh {
                IpAddr::V6(v6) => v6,
                // IPv6 routes over an IPv4 session: IPv4-mapped IPv6 next hop.
                IpAddr::V4(v4) => v4.to_ipv6_mapped(),
            };
            Some(Encoding::Mp(Family::IPV6_UNICAST, v6))
        }
    }
}

/// The path attributes for a group, MP_REACH excluded.
fn wire_attributes(a: &RouteAttributes, enc: Encoding, params: &SessionParams) -> PathAttributes {
    let ibgp = params.ctx.ibgp;
    PathAttributes {
        origin: Some(a.origin),
        as_path: Some(if ibgp {
            AsPath::default()
        } else {
            AsPath::sequence(&[params.local_asn])
        }),
        next_hop: match enc {
            Encoding::Classic(nh) => Some(nh),
            Encoding::Mp(..) => None,
        },
        med: a.med,
        local_pref: ibgp.then(|| a.local_pref.unwrap_or(100)),
        communities: a.communities.clone(),
        large_communities: a.large_communities.clone(),
        extended_communities: a.extended_communities.clone(),
        ..Default::default()
    }
}

fn start_update(out: &mut Vec<u8>) -> usize {
    let start = out.len();
    out.extend_from_slice(&[0xff; 16]);
    out.extend_from_slice(&[0, 0, msg_type::UPDATE]);
    start
}

fn put_u16_at(out: &mut [u8], at: usize, v: usize) {
    out[at..at + 2].copy_from_slice(&(v as u16).to_be_bytes());
}

/// Classic IPv4 announcements: attributes once, then as many NLRI as fit.
fn pack_classic_announce(
    attrs: &[u8],
    ps: &[Ipv4Net],
    max: usize,
    out: &mut Vec<u8>,
) -> DrainStats {
    let mut stats = DrainStats::default();
    let mut rest = ps;
    while !rest.is_empty() {
        let start = start_update(out);
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        out.extend_from_slice(attrs);
        let mut n = 0;
        for p in rest {
            if out.len() - start + prefix::encoded_len(p.prefix_len()) > max {
                break;
            }
            prefix::encode_v4(p, out);
            n += 1;
        }
        if n == 0 {
            // Attributes alone exceed the limit: nothing can ever be sent with them.
            out.truncate(start);
            stats.unsendable += rest.len() as u64;
            break;
        }
        let _ = finish_message(out, start, max);
        stats.updates += 1;
        stats.announced += n as u64;
        rest = &rest[n..];
    }
    stats
}

/// Classic IPv4 withdrawals, as many per UPDATE as fit.
fn pack_classic_withdraw(ps: &[Ipv4Net], max: usize, out: &mut Vec<u8>) -> DrainStats {
    let mut stats = DrainStats::default();
    let mut rest = ps;
    while !rest.is_empty() {
        let start = start_update(out);
        let wlen_at = out.len();
        out.extend_from_slice(&[0, 0]);
        let mut n = 0;
        for p in rest {
            // +2 for the (empty) attribute length that follows.
            if out.len() - start + prefix::encoded_len(p.prefix_len()) + 2 > max {
                break;
            }
            prefix::encode_v4(p, out);
            n += 1;
        }
        let wlen = out.len() - wlen_at - 2;
        put_u16_at(out, wlen_at, wlen);
        out.extend_from_slice(&[0, 0]);
        let _ = finish_message(out, start, max);
        stats.updates += 1;
        stats.withdrawn += n as u64;
        rest = &rest[n..];
    }
    stats
}

/// MP_REACH_NLRI announcements: MP_REACH first (RFC 7606 5.1), growing with each prefix.
fn pack_mp_announce(
    attrs: &[u8],
    family: Family,
    nh: &MpNextHop,
    ps: &[IpNet],
    max: usize,
    out: &mut Vec<u8>,
) -> DrainStats {
    let mut stats = DrainStats::default();
    let mut rest = ps;
    while !rest.is_empty() {
        let start = start_update(out);
        out.extend_from_slice(&[0, 0]);
        let alen_at = out.len();
        out.extend_from_slice(&[0, 0]);
        let attr_start = out.len();
        let mp_at = begin_attribute(FLAG_OPTIONAL, attr_type::MP_REACH_NLRI, out);
        encode_mp_reach_head(family, nh, out);
        let mut n = 0;
        for p in rest {
            if out.len() - start + prefix::encoded_len(p.prefix_len()) + attrs.len() > max {
                break;
            }
            prefix::encode(p, out);
            n += 1;
        }
        if n == 0 {
            out.truncate(start);
            stats.unsendable += rest.len() as u64;
            break;
        }
        end_attribute_extended(mp_at, out);
        out.extend_from_slice(attrs);
        let alen = out.len() - attr_start;
        put_u16_at(out, alen_at, alen);
        let _ = finish_message(out, start, max);
        stats.updates += 1;
        stats.announced += n as u64;
        rest = &rest[n..];
    }
    stats
}

/// MP_UNREACH_NLRI withdrawals.
fn pack_mp_withdraw(family: Family, ps: &[IpNet], max: usize, out: &mut Vec<u8>) -> DrainStats {
    let mut stats = DrainStats::default();
    let mut rest = ps;
    while !rest.is_empty() {
        let start = start_update(out);
        out.extend_from_slice(&[0, 0]);
        let alen_at = out.len();
        out.extend_from_slice(&[0, 0]);
        let attr_start = out.len();
        let mp_at = begin_attribute(FLAG_OPTIONAL, attr_type::MP_UNREACH_NLRI, out);
        encode_mp_unreach_head(family, out);
        let mut n = 0;
        for p in rest {
            if out.len() - start + prefix::encoded_len(p.prefix_len()) > max {
                break;
            }
            prefix::encode(p, out);
            n += 1;
        }
        end_attribute_extended(mp_at, out);
        let alen = out.len() - attr_start;
        put_u16_at(out, alen_at, alen);
        let _ = finish_message(out, start, max);
        stats.updates += 1;
        stats.withdrawn += n as u64;
        rest = &rest[n..];
    }
    stats
}

/// Splits a byte stream of whole messages (what [`AdjRibOut::drain`] produces) into frames.
pub fn split_messages(buf: &[u8]) -> Vec<&[u8]> {
    let mut v = Vec::new();
    let mut rest = buf;
    while rest.len() >= HEADER_LEN {
        let len = u16::from_be_bytes([rest[16], rest[17]]) as usize;
        if len < HEADER_LEN || len > rest.len() {
            break;
        }
        let (m, r) = rest.split_at(len);
        v.push(m);
        rest = r;
    }
    v
}

#[cfg(test)]
mod tests;
