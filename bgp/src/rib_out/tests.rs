use std::collections::BTreeSet;

use super::*;
use crate::packet::attributes::MpReach;
use crate::packet::MAX_EXTENDED_MESSAGE_LEN;

fn params(ext: bool, ibgp: bool) -> SessionParams {
    SessionParams {
        ctx: DecodeContext {
            four_octet_asn: true,
            extended_messages: ext,
            ibgp,
        },
        local_asn: 4_200_000_001,
        families: vec![Family::IPV4_UNICAST, Family::IPV6_UNICAST],
        next_hop_v4: Some(Ipv4Addr::new(192, 0, 2, 10)),
        next_hop_v6: Some("2001:db8::10".parse().unwrap()),
        next_hop_link_local: None,
        ipv4_with_ipv6_next_hop: false,
        enhanced_route_refresh: false,
    }
}

fn v4_hosts(n: u32) -> Vec<IpNet> {
    (0..n)
        .map(|i| IpNet::V4(Ipv4Net::new(Ipv4Addr::from(0xc633_0000u32 + i), 32).unwrap()))
        .collect()
}

fn v6_hosts(n: u32) -> Vec<IpNet> {
    (0..n)
        .map(|i| {
            let a = Ipv6Addr::from(0x2001_0db8_0100_0000_0000_0000_0000_0000u128 + i as u128);
            IpNet::V6(ipnet::Ipv6Net::new(a, 128).unwrap())
        })
        .collect()
}

fn decode_all(buf: &[u8], p: &SessionParams) -> Vec<Message> {
    let frames = split_messages(buf);
    assert_eq!(frames.iter().map(|f| f.len()).sum::<usize>(), buf.len());
    frames
        .into_iter()
        .map(|f| {
            assert!(f.len() <= p.ctx.max_message_len());
            Message::decode(f, &p.ctx).unwrap()
        })
        .collect()
}

fn updates(msgs: &[Message]) -> Vec<&Update> {
    msgs.iter()
        .filter_map(|m| match m {
            Message::Update(u) => Some(u),
            _ => None,
        })
        .collect()
}

fn announced(msgs: &[Message]) -> BTreeSet<IpNet> {
    let mut s = BTreeSet::new();
    for u in updates(msgs) {
        assert!(u.treat_as_withdraw.is_none());
        s.extend(u.nlri.iter().map(|p| IpNet::V4(*p)));
        if let Some(mp) = &u.attributes.mp_reach {
            s.extend(mp.nlri.iter().copied());
        }
    }
    s
}

fn withdrawn(msgs: &[Message]) -> BTreeSet<IpNet> {
    let mut s = BTreeSet::new();
    for u in updates(msgs) {
        s.extend(u.withdrawn.iter().map(|p| IpNet::V4(*p)));
        if let Some(mp) = &u.attributes.mp_unreach {
            s.extend(mp.withdrawn.iter().copied());
        }
    }
    s
}

fn rib_with(prefixes: &[IpNet], attrs: RouteAttributes) -> AdjRibOut {
    let mut rib = AdjRibOut::new();
    rib.set_desired(prefixes.iter().map(|p| (*p, attrs.clone())));
    rib
}

#[test]
fn one_thousand_host_routes_fit_in_two_4096_byte_updates() {
    let p = params(false, false);
    let ps = v4_hosts(1000);
    let mut rib = rib_with(&ps, RouteAttributes::default());
    let mut out = Vec::new();
    let stats = rib.drain(&p, &mut out);
    assert_eq!(stats.updates, 2);
    assert_eq!(stats.announced, 1000);
    let msgs = decode_all(&out, &p);
    let first = updates(&msgs)[0];
    // 4096 - 23 - 20 bytes of attributes (ORIGIN, AS_PATH with one 4-byte ASN, NEXT_HOP)
    // = 4053, / 5 = 810 (../shared/reference/bgp.md).
    assert_eq!(first.nlri.len(), 810);
    assert_eq!(
        first.attributes.as_path,
        Some(AsPath::sequence(&[4_200_000_001]))
    );
    assert_eq!(
        first.attributes.next_hop,
        Some(Ipv4Addr::new(192, 0, 2, 10))
    );
    assert_eq!(first.attributes.local_pref, None);
    assert_eq!(announced(&msgs), ps.into_iter().collect());
    // Nothing left to send.
    assert!(!rib.has_pending());
    let mut again = Vec::new();
    assert_eq!(rib.drain(&p, &mut again), DrainStats::default());
    assert!(again.is_empty());
}

#[test]
fn extended_messages_carry_thirteen_thousand_per_update() {
    let p = params(true, false);
    let ps = v4_hosts(100_000);
    let mut rib = rib_with(&ps, RouteAttributes::default());
    let mut out = Vec::new();
    let stats = rib.drain(&p, &mut out);
    assert_eq!(stats.updates, 8);
    let msgs = decode_all(&out, &p);
    assert_eq!(
        updates(&msgs)[0].nlri.len(),
        (MAX_EXTENDED_MESSAGE_LEN - 43) / 5
    );
    assert_eq!(announced(&msgs).len(), 100_000);
}

#[test]
fn withdrawals_are_packed_too() {
    let p = params(false, false);
    let ps = v4_hosts(1000);
    let mut rib = rib_with(&ps, RouteAttributes::default());
    rib.drain(&p, &mut Vec::new());
    rib.set_desired(Vec::new());
    let mut out = Vec::new();
    let stats = rib.drain(&p, &mut out);
    assert_eq!((stats.updates, stats.withdrawn), (2, 1000));
    let msgs = decode_all(&out, &p);
    // (4096 - 23) / 5 = 814.
    assert_eq!(updates(&msgs)[0].withdrawn.len(), 814);
    assert_eq!(withdrawn(&msgs), ps.into_iter().collect());
}

#[test]
fn ipv6_host_routes_use_mp_reach_and_unreach() {
    let p = params(false, false);
    let ps = v6_hosts(500);
    let mut rib = rib_with(&ps, RouteAttributes::default());
    let mut out = Vec::new();
    let stats = rib.drain(&p, &mut out);
    assert_eq!(stats.updates, 3);
    let msgs = decode_all(&out, &p);
    let mp = updates(&msgs)[0].attributes.mp_reach.clone().unwrap();
    assert_eq!(mp.family, Family::IPV6_UNICAST);
    assert_eq!(
        mp.next_hop,
        MpNextHop::V6 {
            global: "2001:db8::10".parse().unwrap(),
            link_local: None
        }
    );
    // About 237 per 4096-byte UPDATE (../shared/reference/bgp.md).
    assert!((236..=238).contains(&mp.nlri.len()), "{}", mp.nlri.len());
    assert_eq!(announced(&msgs), ps.iter().copied().collect());
    rib.set_desired(Vec::new());
    let mut out = Vec::new();
    rib.drain(&p, &mut out);
    assert_eq!(withdrawn(&decode_all(&out, &p)), ps.into_iter().collect());
}

#[test]
fn attribute_sets_get_their_own_updates() {
    let p = params(false, false);
    let ps = v4_hosts(4);
    let a = RouteAttributes {
        communities: vec![0xfde8_0001],
        ..Default::default()
    };
    let b = RouteAttributes {
        large_communities: vec![LargeCommunity {
            global: 64512,
            local1: 1,
            local2: 2,
        }],
        med: Some(5),
        ..Default::default()
    };
    let mut rib = AdjRibOut::new();
    rib.set_desired(vec![
        (ps[0], a.clone()),
        (ps[1], b.clone()),
        (ps[2], a),
        (ps[3], b),
    ]);
    let mut out = Vec::new();
    assert_eq!(rib.drain(&p, &mut out).updates, 2);
    let msgs = decode_all(&out, &p);
    let us = updates(&msgs);
    assert_eq!(us[0].nlri.len(), 2);
    assert_eq!(us[0].attributes.communities, vec![0xfde8_0001]);
    assert_eq!(us[1].attributes.med, Some(5));
    assert_eq!(us[1].attributes.large_communities.len(), 1);
}

#[test]
fn only_changes_are_sent() {
    let p = params(false, false);
    let ps = v4_hosts(3);
    let mut rib = rib_with(&ps, RouteAttributes::default());
    rib.drain(&p, &mut Vec::new());
    let changed = RouteAttributes {
        med: Some(1),
        ..Default::default()
    };
    rib.set_desired(vec![(ps[0], RouteAttributes::default()), (ps[1], changed)]);
    let mut out = Vec::new();
    let stats = rib.drain(&p, &mut out);
    assert_eq!((stats.announced, stats.withdrawn, stats.updates), (1, 1, 2));
    let msgs = decode_all(&out, &p);
    assert_eq!(withdrawn(&msgs), [ps[2]].into_iter().collect());
    assert_eq!(announced(&msgs), [ps[1]].into_iter().collect());
}

#[test]
fn new_session_resends_everything() {
    let p = params(false, false);
    let ps = v4_hosts(10);
    let mut rib = rib_with(&ps, RouteAttributes::default());
    rib.drain(&p, &mut Vec::new());
    rib.session_reset();
    assert!(rib.has_pending());
    let mut out = Vec::new();
    assert_eq!(rib.drain(&p, &mut out).announced, 10);
}

#[test]
fn ibgp_sends_local_pref_and_an_empty_path() {
    let p = params(false, true);
    let ps = v4_hosts(1);
    let mut rib = rib_with(&ps, RouteAttributes::default());
    let mut out = Vec::new();
    rib.drain(&p, &mut out);
    let msgs = decode_all(&out, &p);
    let u = updates(&msgs)[0];
    assert_eq!(u.attributes.local_pref, Some(100));
    assert_eq!(u.attributes.as_path, Some(AsPath::default()));
    let mut rib = rib_with(
        &ps,
        RouteAttributes {
            local_pref: Some(250),
            ..Default::default()
        },
    );
    let mut out = Vec::new();
    rib.drain(&p, &mut out);
    assert_eq!(
        updates(&decode_all(&out, &p))[0].attributes.local_pref,
        Some(250)
    );
}

#[test]
fn ipv4_over_ipv6_session_needs_extended_next_hop() {
    let mut p = params(false, false);
    p.next_hop_v4 = None;
    let ps = v4_hosts(2);
    let mut rib = rib_with(&ps, RouteAttributes::default());
    let mut out = Vec::new();
    let stats = rib.drain(&p, &mut out);
    assert_eq!((stats.unsendable, stats.updates), (2, 0));
    p.ipv4_with_ipv6_next_hop = true;
    let stats = rib.drain(&p, &mut out);
    assert_eq!(stats.announced, 2);
    let msgs = decode_all(&out, &p);
    let mp: MpReach = updates(&msgs)[0].attributes.mp_reach.clone().unwrap();
    assert_eq!(mp.family, Family::IPV4_UNICAST);
    assert!(matches!(mp.next_hop, MpNextHop::V6 { .. }));
    assert_eq!(mp.nlri, ps);
    // Withdrawn through MP_UNREACH of IPv4.
    rib.set_desired(Vec::new());
    let mut out = Vec::new();
    rib.drain(&p, &mut out);
    let msgs = decode_all(&out, &p);
    assert_eq!(
        updates(&msgs)[0]
            .attributes
            .mp_unreach
            .as_ref()
            .unwrap()
            .family,
        Family::IPV4_UNICAST
    );
}

#[test]
fn an_unnumbered_session_sends_global_and_link_local_next_hops() {
    // Over link-local addresses only (no global address on the link): the link-local address
    // fills both fields, as the peer installs the second.
    let ll: Ipv6Addr = "fe80::10".parse().unwrap();
    let mut p = params(false, false);
    p.next_hop_v4 = None;
    p.next_hop_v6 = Some(ll);
    p.next_hop_link_local = Some(ll);
    p.ipv4_with_ipv6_next_hop = true;
    let mut ps = v4_hosts(1);
    ps.extend(v6_hosts(1));
    let mut rib = rib_with(&ps, RouteAttributes::default());
    let mut out = Vec::new();
    let stats = rib.drain(&p, &mut out);
    assert_eq!((stats.announced, stats.unsendable), (2, 0));
    let msgs = decode_all(&out, &p);
    let mut families = Vec::new();
    for u in updates(&msgs) {
        let mp = u.attributes.mp_reach.clone().unwrap();
        assert_eq!(
            mp.next_hop,
            MpNextHop::V6 {
                global: ll,
                link_local: Some(ll)
            }
        );
        families.push(mp.family);
    }
    families.sort_by_key(|f| f.afi);
    assert_eq!(families, vec![Family::IPV4_UNICAST, Family::IPV6_UNICAST]);
    // The wire form: next hop length 32.
    let i = out
        .windows(4)
        .position(|w| w == [0x00, 0x01, 0x01, 32])
        .expect("IPv4 unicast MP_REACH with a 32-byte next hop");
    assert_eq!(&out[i + 4..i + 20], &ll.octets());
    assert_eq!(&out[i + 20..i + 36], &ll.octets());
}

#[test]
fn ipv6_over_ipv4_session_uses_a_mapped_next_hop() {
    let mut p = params(false, false);
    p.next_hop_v6 = None;
    let ps = v6_hosts(1);
    let mut rib = rib_with(&ps, RouteAttributes::default());
    let mut out = Vec::new();
    rib.drain(&p, &mut out);
    let msgs = decode_all(&out, &p);
    let mp = updates(&msgs)[0].attributes.mp_reach.clone().unwrap();
    assert_eq!(
        mp.next_hop,
        MpNextHop::V6 {
            global: "::ffff:192.0.2.10".parse().unwrap(),
            link_local: None
        }
    );
}

#[test]
fn families_not_negotiated_stay_pending() {
    let mut p = params(false, false);
    p.families = vec![Family::IPV4_UNICAST];
    let mut ps = v4_hosts(1);
    ps.extend(v6_hosts(1));
    let mut rib = rib_with(&ps, RouteAttributes::default());
    let stats = rib.drain(&p, &mut Vec::new());
    assert_eq!((stats.announced, stats.unsendable), (1, 1));
}

#[test]
fn explicit_next_hop_is_used() {
    let p = params(false, false);
    let ps = v4_hosts(1);
    let nh = Ipv4Addr::new(198, 51, 100, 254);
    let mut rib = rib_with(
        &ps,
        RouteAttributes {
            next_hop: Some(IpAddr::V4(nh)),
            ..Default::default()
        },
    );
    let mut out = Vec::new();
    rib.drain(&p, &mut out);
    assert_eq!(
        updates(&decode_all(&out, &p))[0].attributes.next_hop,
        Some(nh)
    );
}

#[test]
fn enhanced_route_refresh_frames_the_table() {
    let mut p = params(false, false);
    p.enhanced_route_refresh = true;
    let ps = v4_hosts(5);
    let mut rib = rib_with(&ps, RouteAttributes::default());
    rib.drain(&p, &mut Vec::new());
    let mut out = Vec::new();
    let stats = rib.refresh(Family::IPV4_UNICAST, &p, &mut out);
    assert_eq!(stats.announced, 5);
    let msgs = decode_all(&out, &p);
    assert_eq!(msgs.len(), 3);
    assert!(
        matches!(&msgs[0], Message::RouteRefresh(r) if r.subtype == RouteRefreshSubtype::Begin)
    );
    assert!(matches!(&msgs[2], Message::RouteRefresh(r) if r.subtype == RouteRefreshSubtype::End));
    // A plain refresh has no framing, and leaves the other family alone.
    p.enhanced_route_refresh = false;
    let mut out = Vec::new();
    assert_eq!(rib.refresh(Family::IPV6_UNICAST, &p, &mut out).announced, 0);
    assert!(out.is_empty());
}

#[test]
fn end_of_rib_for_each_family() {
    let p = params(false, false);
    let mut out = Vec::new();
    end_of_rib(&p, &mut out);
    let msgs = decode_all(&out, &p);
    let fams: Vec<_> = updates(&msgs)
        .iter()
        .map(|u| u.end_of_rib_family().unwrap())
        .collect();
    assert_eq!(fams, vec![Family::IPV4_UNICAST, Family::IPV6_UNICAST]);
}

#[test]
fn two_octet_peer_gets_as_trans_and_as4_path() {
    let mut p = params(false, false);
    p.ctx.four_octet_asn = false;
    let ps = v4_hosts(1);
    let mut rib = rib_with(&ps, RouteAttributes::default());
    let mut out = Vec::new();
    rib.drain(&p, &mut out);
    let msgs = decode_all(&out, &p);
    let a = &updates(&msgs)[0].attributes;
    assert_eq!(a.as_path, Some(AsPath::sequence(&[23456])));
    assert_eq!(a.as4_path, Some(AsPath::sequence(&[4_200_000_001])));
}
