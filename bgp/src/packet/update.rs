//! UPDATE (RFC 4271 4.3).
//!
//! ```text
//! +-----------------------------------------------------+
//! |   Withdrawn Routes Length (2 octets)                |
//! +-----------------------------------------------------+
//! |   Withdrawn Routes (variable)                       |
//! +-----------------------------------------------------+
//! |   Total Path Attribute Length (2 octets)            |
//! +-----------------------------------------------------+
//! |   Path Attributes (variable)                        |
//! +-----------------------------------------------------+
//! |   Network Layer Reachability Information (variable) |
//! +-----------------------------------------------------+
//! ```

use ipnet::Ipv4Net;

use super::attributes::{MpUnreach, PathAttributes};
use super::error::codes;
use super::prefix::{self, PrefixError};
use super::{DecodeContext, Family, MessageError, Reader};

/// An UPDATE message.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Update {
    pub withdrawn: Vec<Ipv4Net>,
    pub attributes: PathAttributes,
    pub nlri: Vec<Ipv4Net>,
    /// Received only: RFC 7606 says to treat every route of this UPDATE as withdrawn (the
    /// reason is logged). Ignored when encoding.
    pub treat_as_withdraw: Option<&'static str>,
    /// Received only: attribute type codes dropped by "attribute discard" (RFC 7606).
    pub discarded: Vec<u8>,
}

impl Update {
    /// The End-of-RIB marker for a family (RFC 4724 section 2).
    pub fn end_of_rib(family: Family) -> Update {
        if family == Family::IPV4_UNICAST {
            return Update::default();
        }
        Update {
            attributes: PathAttributes {
                mp_unreach: Some(MpUnreach {
                    family,
                    withdrawn: Vec::new(),
                }),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    /// The family this UPDATE marks End-of-RIB for, if it is such a marker.
    pub fn end_of_rib_family(&self) -> Option<Family> {
        if !self.withdrawn.is_empty() || !self.nlri.is_empty() {
            return None;
        }
        let a = &self.attributes;
        if *a == PathAttributes::default() {
            return Some(Family::IPV4_UNICAST);
        }
        match &a.mp_unreach {
            Some(mp)
                if mp.withdrawn.is_empty()
                    && PathAttributes {
                        mp_unreach: None,
                        ..a.clone()
                    } == PathAttributes::default() =>
            {
                Some(mp.family)
            }
            _ => None,
        }
    }

    pub(crate) fn decode(body: &[u8], ctx: &DecodeContext) -> Result<Update, MessageError> {
        let list = |why| MessageError::update(codes::MALFORMED_ATTRIBUTE_LIST, Vec::new(), why);
        let mut r = Reader::new(body);
        let wlen = r
            .u16()
            .ok_or_else(|| list("truncated withdrawn routes length"))? as usize;
        let wbuf = r
            .take(wlen)
            .ok_or_else(|| list("withdrawn routes length overruns the UPDATE"))?;
        let alen = r
            .u16()
            .ok_or_else(|| list("truncated path attribute length"))? as usize;
        let abuf = r
            .take(alen)
            .ok_or_else(|| list("path attribute length overruns the UPDATE"))?;
        let network = |e: PrefixError| {
            MessageError::update(
                codes::INVALID_NETWORK_FIELD,
                Vec::new(),
                match e {
                    PrefixError::Truncated => "truncated prefix",
                    PrefixError::LengthTooLong => "prefix length above 32",
                },
            )
        };
        let withdrawn = prefix::decode_v4_all(wbuf).map_err(network)?;
        let nlri = prefix::decode_v4_all(r.rest()).map_err(network)?;
        let decoded = PathAttributes::decode(abuf, ctx)?;
        let attrs = decoded.attrs;
        let mut treat_as_withdraw = decoded.treat_as_withdraw;
        let reachable = !nlri.is_empty() || attrs.mp_reach.is_some();
        if reachable && treat_as_withdraw.is_none() {
            // RFC 7606 3(d): a missing well-known mandatory attribute is treat-as-withdraw.
            if attrs.origin.is_none() {
                treat_as_withdraw = Some("missing ORIGIN");
            } else if attrs.as_path.is_none() {
                treat_as_withdraw = Some("missing AS_PATH");
            } else if !nlri.is_empty() && attrs.next_hop.is_none() {
                treat_as_withdraw = Some("missing NEXT_HOP");
            } else if ctx.ibgp && attrs.local_pref.is_none() {
                treat_as_withdraw = Some("missing LOCAL_PREF on iBGP");
            }
        }
        Ok(Update {
            withdrawn,
            attributes: attrs,
            nlri,
            treat_as_withdraw,
            discarded: decoded.discarded,
        })
    }

    pub(crate) fn encode_body(&self, ctx: &DecodeContext, out: &mut Vec<u8>) {
        let at = out.len();
        out.extend_from_slice(&[0, 0]);
        for p in &self.withdrawn {
            prefix::encode_v4(p, out);
        }
        let wlen = (out.len() - at - 2) as u16;
        out[at..at + 2].copy_from_slice(&wlen.to_be_bytes());
        let at = out.len();
        out.extend_from_slice(&[0, 0]);
        self.attributes.encode(ctx, out);
        let alen = (out.len() - at - 2) as u16;
        out[at..at + 2].copy_from_slice(&alen.to_be_bytes());
        for p in &self.nlri {
            prefix::encode_v4(p, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::*;
    use crate::packet::attributes::{MpNextHop, MpReach};
    use crate::packet::{hex, vectors, AsPath, LargeCommunity, Message, Origin, HEADER_LEN};

    fn four() -> DecodeContext {
        DecodeContext {
            four_octet_asn: true,
            extended_messages: true,
            ibgp: false,
        }
    }

    fn decode(h: &[u8], ctx: &DecodeContext) -> Result<Update, MessageError> {
        match Message::decode(h, ctx)? {
            Message::Update(u) => Ok(u),
            other => panic!("not an UPDATE: {other:?}"),
        }
    }

    #[test]
    fn frr_update_with_four_octet_path_and_med() {
        let bytes = hex(vectors::FRR_UPDATE_V4_AS4.hex);
        let u = decode(&bytes, &four()).unwrap();
        assert_eq!(u.nlri, vec!["198.51.100.7/32".parse::<Ipv4Net>().unwrap()]);
        let a = &u.attributes;
        assert_eq!(a.origin, Some(Origin::Igp));
        assert_eq!(a.as_path, Some(AsPath::sequence(&[4_200_000_001])));
        assert_eq!(a.next_hop, Some(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(a.med, Some(0));
        assert!(u.treat_as_withdraw.is_none());
        assert_eq!(Message::Update(u).to_bytes(&four()).unwrap(), bytes);
    }

    #[test]
    fn frr_update_relayed_path_of_two() {
        let bytes = hex(vectors::FRR_UPDATE_V4_PATH2.hex);
        let u = decode(&bytes, &four()).unwrap();
        assert_eq!(
            u.attributes.as_path,
            Some(AsPath::sequence(&[65002, 4_200_000_001]))
        );
        assert_eq!(u.attributes.next_hop, Some(Ipv4Addr::new(192, 0, 2, 2)));
        assert_eq!(Message::Update(u).to_bytes(&four()).unwrap(), bytes);
    }

    #[test]
    fn frr_withdraw_and_end_of_rib() {
        let bytes = hex(vectors::FRR_WITHDRAW_V4.hex);
        let u = decode(&bytes, &four()).unwrap();
        assert_eq!(
            u.withdrawn,
            vec!["198.51.100.7/32".parse::<Ipv4Net>().unwrap()]
        );
        assert_eq!(u.end_of_rib_family(), None);
        assert_eq!(Message::Update(u).to_bytes(&four()).unwrap(), bytes);

        let bytes = hex(vectors::FRR_EOR_IPV4.hex);
        let u = decode(&bytes, &four()).unwrap();
        assert_eq!(u.end_of_rib_family(), Some(Family::IPV4_UNICAST));
        assert_eq!(
            Message::Update(Update::end_of_rib(Family::IPV4_UNICAST))
                .to_bytes(&four())
                .unwrap(),
            bytes
        );

        let bytes = hex(vectors::FRR_EOR_IPV6.hex);
        let u = decode(&bytes, &four()).unwrap();
        assert_eq!(u.end_of_rib_family(), Some(Family::IPV6_UNICAST));
        assert_eq!(
            Message::Update(Update::end_of_rib(Family::IPV6_UNICAST))
                .to_bytes(&four())
                .unwrap(),
            bytes
        );
    }

    #[test]
    fn frr_update_with_communities_large_and_extended() {
        let bytes = hex(vectors::FRR_UPDATE_V4_COMMUNITIES.hex);
        let u = decode(&bytes, &four()).unwrap();
        assert_eq!(u.nlri, vec!["198.51.100.0/24".parse::<Ipv4Net>().unwrap()]);
        let a = &u.attributes;
        assert_eq!(a.med, Some(77));
        assert_eq!(
            a.communities,
            vec![(65001 << 16) | 100, (65001 << 16) | 200]
        );
        assert_eq!(
            a.large_communities,
            vec![LargeCommunity {
                global: 4_200_000_001,
                local1: 1,
                local2: 2
            }]
        );
        // Route target 65001:5 (type 0x00, subtype 0x02).
        assert_eq!(a.extended_communities, vec![[0, 2, 0xfd, 0xe9, 0, 0, 0, 5]]);
        assert!(u.treat_as_withdraw.is_none() && u.discarded.is_empty());
        // We order attributes by type code (FRR sends 8, 32, 16): same content, same length.
        let ours = Message::Update(u.clone()).to_bytes(&four()).unwrap();
        assert_eq!(ours.len(), bytes.len());
        assert_eq!(decode(&ours, &four()).unwrap(), u);
    }

    #[test]
    fn frr_mp_reach_ipv6_with_link_local_next_hop() {
        let bytes = hex(vectors::FRR_UPDATE_V6_COMMUNITIES.hex);
        let u = decode(&bytes, &four()).unwrap();
        assert!(u.nlri.is_empty());
        let mp = u.attributes.mp_reach.clone().unwrap();
        assert_eq!(mp.family, Family::IPV6_UNICAST);
        assert_eq!(mp.nlri, vec!["2001:db8:100::/48".parse().unwrap()]);
        let MpNextHop::V6 { global, link_local } = mp.next_hop else {
            panic!("{:?}", mp.next_hop)
        };
        assert_eq!(global, "2001:db8::1".parse::<Ipv6Addr>().unwrap());
        assert!(link_local.unwrap().segments()[0] == 0xfe80);
        assert_eq!(u.attributes.communities.len(), 2);
        assert!(u.treat_as_withdraw.is_none());
        // FRR uses the extended length for MP_REACH_NLRI; we use one octet when it fits.
        let ours = Message::Update(u.clone()).to_bytes(&four()).unwrap();
        assert_eq!(ours.len() + 1, bytes.len());
        assert_eq!(decode(&ours, &four()).unwrap(), u);
    }

    #[test]
    fn full_attribute_set_round_trips() {
        let u = Update {
            attributes: PathAttributes {
                origin: Some(Origin::Incomplete),
                as_path: Some(AsPath::sequence(&[65001, 4_200_000_001])),
                next_hop: Some(Ipv4Addr::new(192, 0, 2, 1)),
                med: Some(77),
                local_pref: Some(200),
                communities: vec![0xfde9_0064, 0xffff_ff01],
                extended_communities: vec![[0, 2, 0xfd, 0xe9, 0, 0, 0, 5]],
                large_communities: vec![LargeCommunity {
                    global: 4_200_000_001,
                    local1: 1,
                    local2: 2,
                }],
                mp_reach: Some(MpReach {
                    family: Family::IPV6_UNICAST,
                    next_hop: MpNextHop::V6 {
                        global: "2001:db8::1".parse().unwrap(),
                        link_local: Some("fe80::1".parse::<Ipv6Addr>().unwrap()),
                    },
                    nlri: vec!["2001:db8:100::5/128".parse().unwrap()],
                }),
                ..Default::default()
            },
            nlri: vec!["198.51.100.5/32".parse().unwrap()],
            ..Default::default()
        };
        let ctx = DecodeContext {
            ibgp: true,
            ..four()
        };
        let bytes = Message::Update(u.clone()).to_bytes(&ctx).unwrap();
        assert_eq!(decode(&bytes, &ctx).unwrap(), u);
    }

    /// Builds an UPDATE body from an attribute field and one /32 of NLRI.
    fn body(attrs: &[u8]) -> Vec<u8> {
        let mut b = vec![0, 0];
        b.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        b.extend_from_slice(attrs);
        b.extend_from_slice(&[32, 198, 51, 100, 9]);
        b
    }

    const ORIGIN: [u8; 4] = [0x40, 1, 1, 0];
    const PATH: [u8; 9] = [0x40, 2, 6, 2, 1, 0, 0, 0xfd, 0xe9];
    const NH: [u8; 7] = [0x40, 3, 4, 192, 0, 2, 1];

    fn good_attrs() -> Vec<u8> {
        [&ORIGIN[..], &PATH[..], &NH[..]].concat()
    }

    #[test]
    fn well_formed_synthetic_update_is_accepted() {
        let u = Update::decode(&body(&good_attrs()), &four()).unwrap();
        assert!(u.treat_as_withdraw.is_none());
        assert_eq!(u.nlri.len(), 1);
    }

    #[test]
    fn rfc7606_treat_as_withdraw_cases() {
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "bad origin value",
                [&[0x40, 1, 1, 7][..], &PATH, &NH].concat(),
            ),
            (
                "origin length",
                [&[0x40, 1, 2, 0, 0][..], &PATH, &NH].concat(),
            ),
            ("origin flags", [&[0xc0, 1, 1, 0][..], &PATH, &NH].concat()),
            (
                "as_path segment type",
                [&ORIGIN[..], &[0x40, 2, 6, 9, 1, 0, 0, 0xfd, 0xe9], &NH].concat(),
            ),
            (
                "as_path overrun",
                [&ORIGIN[..], &[0x40, 2, 6, 2, 2, 0, 0, 0xfd, 0xe9], &NH].concat(),
            ),
            (
                "next hop length",
                [&ORIGIN[..], &PATH, &[0x40, 3, 3, 192, 0, 2]].concat(),
            ),
            (
                "next hop zero",
                [&ORIGIN[..], &PATH, &[0x40, 3, 4, 0, 0, 0, 0]].concat(),
            ),
            ("missing next hop", [&ORIGIN[..], &PATH].concat()),
            ("missing origin", [&PATH[..], &NH].concat()),
            (
                "med length",
                [&good_attrs()[..], &[0x80, 4, 3, 0, 0, 1]].concat(),
            ),
            (
                "communities length",
                [&good_attrs()[..], &[0xc0, 8, 3, 0, 0, 1]].concat(),
            ),
            (
                "large communities length",
                [&good_attrs()[..], &[0xc0, 32, 4, 0, 0, 0, 1]].concat(),
            ),
            (
                "ext communities length",
                [&good_attrs()[..], &[0xc0, 16, 4, 0, 0, 0, 1]].concat(),
            ),
            (
                "attribute overruns field",
                [&good_attrs()[..], &[0xc0, 8, 9, 0]].concat(),
            ),
            (
                "truncated attribute header",
                [&good_attrs()[..], &[0xc0]].concat(),
            ),
        ];
        for (what, attrs) in cases {
            let u = Update::decode(&body(&attrs), &four())
                .unwrap_or_else(|e| panic!("{what}: session reset {e}"));
            assert!(
                u.treat_as_withdraw.is_some(),
                "{what}: not treat-as-withdraw"
            );
        }
    }

    #[test]
    fn rfc7606_attribute_discard_cases() {
        let cases: Vec<(&str, Vec<u8>, u8)> = vec![
            (
                "atomic aggregate with a value",
                [&good_attrs()[..], &[0x40, 6, 1, 0]].concat(),
                6,
            ),
            (
                "aggregator length",
                [&good_attrs()[..], &[0xc0, 7, 3, 0, 0, 1]].concat(),
                7,
            ),
            (
                "local pref from ebgp",
                [&good_attrs()[..], &[0x40, 5, 4, 0, 0, 0, 100]].concat(),
                5,
            ),
            (
                "as4_path on a 4-octet session",
                [&good_attrs()[..], &[0xc0, 17, 6, 2, 1, 0, 0, 0xfd, 0xe9]].concat(),
                17,
            ),
            ("duplicate origin", [&good_attrs()[..], &ORIGIN].concat(), 1),
        ];
        for (what, attrs, code) in cases {
            let u = Update::decode(&body(&attrs), &four()).unwrap();
            assert!(u.treat_as_withdraw.is_none(), "{what}");
            assert_eq!(u.discarded, vec![code], "{what}");
        }
    }

    #[test]
    fn ibgp_requires_local_pref_and_checks_it() {
        let ibgp = DecodeContext {
            ibgp: true,
            ..four()
        };
        let u = Update::decode(&body(&good_attrs()), &ibgp).unwrap();
        assert_eq!(u.treat_as_withdraw, Some("missing LOCAL_PREF on iBGP"));
        let attrs = [&good_attrs()[..], &[0x40, 5, 3, 0, 0, 100]].concat();
        assert!(Update::decode(&body(&attrs), &ibgp)
            .unwrap()
            .treat_as_withdraw
            .is_some());
        let attrs = [&good_attrs()[..], &[0x40, 5, 4, 0, 0, 0, 100]].concat();
        let u = Update::decode(&body(&attrs), &ibgp).unwrap();
        assert!(u.treat_as_withdraw.is_none());
        assert_eq!(u.attributes.local_pref, Some(100));
    }

    #[test]
    fn session_reset_cases() {
        // Unknown well-known attribute: 3/2 with the attribute as data.
        let attrs = [&good_attrs()[..], &[0x40, 99, 1, 7]].concat();
        let e = Update::decode(&body(&attrs), &four()).unwrap_err();
        assert_eq!((e.code, e.subcode, e.data), (3, 2, vec![0x40, 99, 1, 7]));
        // Unknown optional attributes are fine; transitive ones are kept.
        let attrs = [&good_attrs()[..], &[0xc0, 99, 1, 7], &[0x80, 98, 1, 7]].concat();
        let u = Update::decode(&body(&attrs), &four()).unwrap();
        assert_eq!(u.attributes.unknown.len(), 1);
        // Withdrawn length overrun: 3/1.
        let e = Update::decode(&[0, 9, 32, 1, 2, 3, 4, 0, 0], &four()).unwrap_err();
        assert_eq!((e.code, e.subcode), (3, 1));
        // Attribute length overrun of the message: 3/1.
        let e = Update::decode(&[0, 0, 0, 40, 0x40, 1, 1, 0], &four()).unwrap_err();
        assert_eq!((e.code, e.subcode), (3, 1));
        // Bad NLRI: 3/10.
        let mut b = body(&good_attrs());
        let n = b.len();
        b[n - 5] = 40;
        let e = Update::decode(&b, &four()).unwrap_err();
        assert_eq!((e.code, e.subcode), (3, 10));
        // Malformed MP_REACH_NLRI: session reset.
        let attrs = [&good_attrs()[..], &[0x80, 14, 5, 0, 2, 1, 16, 0]].concat();
        let e = Update::decode(&body(&attrs), &four()).unwrap_err();
        assert_eq!((e.code, e.subcode), (3, 9));
        // Repeated MP_UNREACH_NLRI: 3/1.
        let attrs = [
            &good_attrs()[..],
            &[0x80, 15, 3, 0, 2, 1],
            &[0x80, 15, 3, 0, 2, 1],
        ]
        .concat();
        let e = Update::decode(&body(&attrs), &four()).unwrap_err();
        assert_eq!((e.code, e.subcode), (3, 1));
    }

    #[test]
    fn header_errors_inside_update_frames() {
        // An UPDATE frame shorter than 23 bytes is a header length error.
        let mut f = hex("ffffffffffffffffffffffffffffffff001602");
        f.extend_from_slice(&[0, 0, 0]);
        let e = Message::decode(&f, &four()).unwrap_err();
        assert_eq!((e.code, e.subcode), (1, 2));
        assert_eq!(HEADER_LEN, 19);
    }

    #[test]
    fn ipv4_over_mp_reach_with_ipv6_next_hop_rfc8950() {
        let u = Update {
            attributes: PathAttributes {
                origin: Some(Origin::Igp),
                as_path: Some(AsPath::sequence(&[65001])),
                mp_reach: Some(MpReach {
                    family: Family::IPV4_UNICAST,
                    next_hop: MpNextHop::V6 {
                        global: "2001:db8::1".parse().unwrap(),
                        link_local: None,
                    },
                    nlri: vec!["198.51.100.5/32".parse().unwrap()],
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let bytes = Message::Update(u.clone()).to_bytes(&four()).unwrap();
        // MP_REACH_NLRI comes first, AFI 1 SAFI 1, next hop length 16.
        assert_eq!(&bytes[23..30], &[0x80, 14, 26, 0, 1, 1, 16]);
        assert_eq!(decode(&bytes, &four()).unwrap(), u);
    }
}
