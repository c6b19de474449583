use super::*;
use std::net::IpAddr;

const OURS: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x01]);
const CLIENT: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 0x99]);

fn hex(s: &str) -> Vec<u8> {
    let clean: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    (0..clean.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&clean[i..i + 2], 16).unwrap())
        .collect()
}

#[test]
fn arp_request_is_parsed_and_answered_by_unicast_reply() {
    // who-has 192.0.2.10 tell 192.0.2.99, as `arping` sends it.
    let request = hex(
        "ffffffffffff 020000000099 0806 0001 0800 06 04 0001 020000000099 c0000263 000000000000 c000020a",
    );
    let q = parse_query(&request).unwrap();
    assert_eq!(
        q,
        Query::Arp {
            sender_mac: CLIENT,
            sender_ip: Ipv4Addr::new(192, 0, 2, 99),
            target: Ipv4Addr::new(192, 0, 2, 10)
        }
    );
    let reply = answer(&q, OURS, |ip| {
        ip == IpAddr::from(Ipv4Addr::new(192, 0, 2, 10))
    })
    .unwrap();
    assert_eq!(
        reply,
        hex("020000000099 020000000001 0806 0001 0800 06 04 0002 020000000001 c000020a 020000000099 c0000263")
    );
    assert_eq!(
        answer(&q, OURS, |_| false),
        None,
        "never for an address we do not own"
    );
}

#[test]
fn gratuitous_arp_is_a_broadcast_request_and_reply() {
    let [request, reply] = gratuitous_arp(OURS, Ipv4Addr::new(192, 0, 2, 10));
    assert_eq!(request, hex("ffffffffffff 020000000001 0806 0001 0800 06 04 0001 020000000001 c000020a 000000000000 c000020a"));
    assert_eq!(reply, hex("ffffffffffff 020000000001 0806 0001 0800 06 04 0002 020000000001 c000020a ffffffffffff c000020a"));
}

#[test]
fn solicited_node_group_and_its_mac() {
    let vip: Ipv6Addr = "2001:db8::abcd:1234".parse().unwrap();
    let group = solicited_node_group(vip);
    assert_eq!(group, "ff02::1:ffcd:1234".parse::<Ipv6Addr>().unwrap());
    assert_eq!(
        MacAddr::ipv6_multicast(group).to_string(),
        "33:33:ff:cd:12:34"
    );
}

fn ns_frame(source: Ipv6Addr, target: Ipv6Addr, slla: Option<MacAddr>, hop_limit: u8) -> Vec<u8> {
    let mut icmp = vec![NEIGHBOR_SOLICITATION, 0, 0, 0, 0, 0, 0, 0];
    icmp.extend_from_slice(&target.octets());
    if let Some(mac) = slla {
        icmp.extend_from_slice(&[OPTION_SOURCE_LLA, 1]);
        icmp.extend_from_slice(&mac.0);
    }
    let destination = solicited_node_group(target);
    let sum = checksum(source, destination, &icmp);
    icmp[2..4].copy_from_slice(&sum.to_be_bytes());
    let mut ip = vec![0x60, 0, 0, 0];
    ip.extend_from_slice(&(icmp.len() as u16).to_be_bytes());
    ip.extend_from_slice(&[ICMPV6, hop_limit]);
    ip.extend_from_slice(&source.octets());
    ip.extend_from_slice(&destination.octets());
    ip.extend_from_slice(&icmp);
    ethernet(
        MacAddr::ipv6_multicast(destination),
        CLIENT,
        ETHERTYPE_IPV6,
        &ip,
    )
}

#[test]
fn neighbor_solicitation_is_validated_and_answered() {
    let vip: Ipv6Addr = "2001:db8::10".parse().unwrap();
    let client: Ipv6Addr = "2001:db8::99".parse().unwrap();
    let frame = ns_frame(client, vip, Some(CLIENT), 255);
    let q = parse_query(&frame).unwrap();
    assert_eq!(
        q,
        Query::Ndp {
            source_mac: CLIENT,
            source: client,
            target: vip
        }
    );
    let na = answer(&q, OURS, |ip| ip == IpAddr::from(vip)).unwrap();
    // Ethernet to the client, IPv6 from the VIP to the client, hop limit 255.
    assert_eq!(&na[0..6], &CLIENT.0);
    assert_eq!(na[14 + 7], 255);
    let icmp = &na[14 + 40..];
    assert_eq!(icmp[0], NEIGHBOR_ADVERTISEMENT);
    assert_eq!(icmp[4], NA_SOLICITED | NA_OVERRIDE);
    assert_eq!(&icmp[8..24], &vip.octets());
    assert_eq!(&icmp[24..32], &[2, 1, 2, 0, 0, 0, 0, 1]);
    assert_eq!(checksum(vip, client, icmp), 0, "the checksum verifies");

    let mut bad = ns_frame(client, vip, Some(CLIENT), 64);
    assert_eq!(
        parse_query(&bad),
        Err(Ignored::InvalidSolicitation),
        "hop limit must be 255"
    );
    bad = ns_frame(client, vip, Some(CLIENT), 255);
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert_eq!(
        parse_query(&bad),
        Err(Ignored::InvalidSolicitation),
        "checksum"
    );
}

/// `frame` (an NS from [`ns_frame`]) with extension headers `(kind, 8-byte units beyond the
/// first 8)` between the IPv6 header and ICMPv6, each padded with PadN.
fn with_extension_headers(frame: &[u8], headers: &[(u8, u8)]) -> Vec<u8> {
    let (eth, rest) = frame.split_at(14);
    let (ip, icmp) = rest.split_at(40);
    let mut chain = Vec::new();
    let mut kinds: Vec<u8> = headers.iter().map(|h| h.0).collect();
    kinds.push(ICMPV6);
    for (i, (_, units)) in headers.iter().enumerate() {
        let len = (usize::from(*units) + 1) * 8;
        let mut h = vec![kinds[i + 1], *units, 1, (len - 4) as u8];
        h.resize(len, 0);
        chain.extend_from_slice(&h);
    }
    let mut out = eth.to_vec();
    let mut header = ip.to_vec();
    header[6] = kinds[0];
    let payload = (chain.len() + icmp.len()) as u16;
    header[4..6].copy_from_slice(&payload.to_be_bytes());
    out.extend_from_slice(&header);
    out.extend_from_slice(&chain);
    out.extend_from_slice(icmp);
    out
}

#[test]
fn solicitations_after_extension_headers_are_answered() {
    let vip: Ipv6Addr = "2001:db8::10".parse().unwrap();
    let client: Ipv6Addr = "2001:db8::99".parse().unwrap();
    let plain = ns_frame(client, vip, Some(CLIENT), 255);
    let want = parse_query(&plain).unwrap();
    for headers in [
        vec![(HOP_BY_HOP, 0)],
        vec![(DESTINATION_OPTIONS, 1)],
        vec![(HOP_BY_HOP, 0), (DESTINATION_OPTIONS, 0)],
        vec![(HOP_BY_HOP, 0), (ROUTING, 0), (DESTINATION_OPTIONS, 2)],
    ] {
        let frame = with_extension_headers(&plain, &headers);
        assert_eq!(parse_query(&frame), Ok(want), "{headers:?}");
        // The answer is the usual one: no extension headers of ours.
        assert_eq!(
            answer(&want, OURS, |_| true),
            answer(&parse_query(&frame).unwrap(), OURS, |_| true)
        );
    }
    // A fragment header is not walked (RFC 6980), an unknown one neither.
    let mut fragment = with_extension_headers(&plain, &[(HOP_BY_HOP, 0)]);
    fragment[14 + 6] = 44;
    assert_eq!(parse_query(&fragment), Err(Ignored::NotAQuery));
    // A chain longer than the bound, or running past the payload, is refused cleanly.
    let long = with_extension_headers(&plain, &[(DESTINATION_OPTIONS, 0); 9]);
    assert_eq!(parse_query(&long), Err(Ignored::NotAQuery));
    let mut past = with_extension_headers(&plain, &[(HOP_BY_HOP, 0)]);
    past[14 + 40 + 1] = 200;
    assert_eq!(parse_query(&past), Err(Ignored::Truncated));
    // Still validated: the checksum covers the ICMPv6 message after the chain.
    let mut bad = with_extension_headers(&plain, &[(HOP_BY_HOP, 0)]);
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert_eq!(parse_query(&bad), Err(Ignored::InvalidSolicitation));
}

#[test]
fn duplicate_address_detection_is_answered_to_all_nodes() {
    let vip: Ipv6Addr = "2001:db8::10".parse().unwrap();
    let q = parse_query(&ns_frame(Ipv6Addr::UNSPECIFIED, vip, None, 255)).unwrap();
    let na = answer(&q, OURS, |_| true).unwrap();
    assert_eq!(&na[0..6], &[0x33, 0x33, 0, 0, 0, 1]);
    assert_eq!(na[14 + 40 + 4], NA_OVERRIDE, "Solicited clear");
    assert_eq!(
        parse_query(&ns_frame(Ipv6Addr::UNSPECIFIED, vip, Some(CLIENT), 255)),
        Err(Ignored::InvalidSolicitation)
    );
}

#[test]
fn unsolicited_advertisement_goes_to_all_nodes_with_override() {
    let vip: Ipv6Addr = "2001:db8::10".parse().unwrap();
    let na = unsolicited_advertisement(OURS, vip);
    assert_eq!(&na[0..6], &[0x33, 0x33, 0, 0, 0, 1]);
    assert_eq!(&na[14 + 24..14 + 40], &ALL_NODES.octets());
    let icmp = &na[14 + 40..];
    assert_eq!(icmp[4], NA_OVERRIDE);
    assert_eq!(checksum(vip, ALL_NODES, icmp), 0);
}

#[test]
fn no_frame_panics_the_parser() {
    let mut x: u32 = 0x1234_5678;
    for len in 0..200 {
        for _ in 0..50 {
            let frame: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let _ = parse_query(&frame);
            let mut arp = frame.clone();
            if arp.len() >= 14 {
                arp[12] = 0x08;
                arp[13] = 0x06;
            }
            let _ = parse_query(&arp);
            let mut v6 = frame;
            if v6.len() >= 14 {
                v6[12] = 0x86;
                v6[13] = 0xdd;
            }
            let _ = parse_query(&v6);
        }
    }
}

#[test]
fn every_option_length_is_judged_without_a_panic() {
    // pnet's own option iterator computes `length * 8` in a u8 (it overflows from 32 on), so
    // the parser walks the options itself: every length byte, with a right checksum, gives an
    // answer or a clean refusal.
    let vip: Ipv6Addr = "2001:db8::10".parse().unwrap();
    let client: Ipv6Addr = "2001:db8::99".parse().unwrap();
    let destination = solicited_node_group(vip);
    let plain = ns_frame(client, vip, Some(CLIENT), 255);
    let icmp_at = 14 + 40;
    for len in 0..=255u8 {
        let mut frame = plain.clone();
        frame[icmp_at + 24 + 1] = len;
        frame[icmp_at + 2..icmp_at + 4].copy_from_slice(&[0, 0]);
        let sum = checksum(client, destination, &frame[icmp_at..]);
        frame[icmp_at + 2..icmp_at + 4].copy_from_slice(&sum.to_be_bytes());
        let got = parse_query(&frame);
        if len == 1 {
            assert_eq!(got, parse_query(&plain));
        } else {
            assert_eq!(got, Err(Ignored::InvalidSolicitation), "length {len}");
        }
    }
}
