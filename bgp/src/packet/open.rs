//! OPEN (RFC 4271 4.2), capabilities in optional parameters (RFC 5492), extended optional
//! parameters length (RFC 9072).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+
//! |    Version    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |     My Autonomous System      |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |           Hold Time           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                         BGP Identifier                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | Opt Parm Len  |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |             Optional Parameters (variable)                    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use std::net::Ipv4Addr;

use super::capability::Capability;
use super::error::codes;
use super::{Family, MessageError, Reader, AS_TRANS};

const PARAM_CAPABILITIES: u8 = 2;
const PARAM_EXTENDED_LENGTH: u8 = 255;

/// An OPEN message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    /// The 2-octet "My Autonomous System" field (AS_TRANS for 4-octet ASNs).
    pub my_as: u16,
    pub hold_time: u16,
    pub bgp_id: Ipv4Addr,
    pub capabilities: Vec<Capability>,
}

impl Open {
    /// Builds an OPEN for `asn`, putting AS_TRANS in the 2-octet field when needed.
    pub fn new(asn: u32, hold_time: u16, bgp_id: Ipv4Addr, capabilities: Vec<Capability>) -> Self {
        let my_as = u16::try_from(asn).unwrap_or(AS_TRANS);
        Open {
            my_as,
            hold_time,
            bgp_id,
            capabilities,
        }
    }

    /// The sender's ASN: the 4-octet capability if present, else My AS.
    pub fn asn(&self) -> u32 {
        self.four_octet_asn().unwrap_or(self.my_as as u32)
    }

    pub fn four_octet_asn(&self) -> Option<u32> {
        self.capabilities.iter().find_map(|c| match c {
            Capability::FourOctetAsn(a) => Some(*a),
            _ => None,
        })
    }

    pub fn has(&self, code: u8) -> bool {
        self.capabilities.iter().any(|c| c.code() == code)
    }

    /// Families from multiprotocol capabilities; IPv4 unicast if none (RFC 4760 section 8).
    pub fn families(&self) -> Vec<Family> {
        let fams: Vec<Family> = self
            .capabilities
            .iter()
            .filter_map(|c| match c {
                Capability::Multiprotocol(f) => Some(*f),
                _ => None,
            })
            .collect();
        if fams.is_empty() && !self.capabilities.iter().any(|c| c.code() == 1) {
            vec![Family::IPV4_UNICAST]
        } else {
            fams
        }
    }

    pub(crate) fn decode(body: &[u8]) -> Result<Self, MessageError> {
        let short = || {
            MessageError::header_length((body.len() + super::HEADER_LEN) as u16, "OPEN too short")
        };
        let mut r = Reader::new(body);
        let version = r.u8().ok_or_else(short)?;
        if version != 4 {
            return Err(MessageError::open(
                codes::UNSUPPORTED_VERSION,
                vec![0, 4],
                "unsupported BGP version",
            ));
        }
        let my_as = r.u16().ok_or_else(short)?;
        let hold_time = r.u16().ok_or_else(short)?;
        if hold_time == 1 || hold_time == 2 {
            return Err(MessageError::open(
                codes::UNACCEPTABLE_HOLD_TIME,
                Vec::new(),
                "hold time 1 or 2 seconds",
            ));
        }
        let bgp_id = Ipv4Addr::from(r.u32().ok_or_else(short)?);
        if bgp_id.is_unspecified() || bgp_id.is_multicast() {
            return Err(MessageError::open(
                codes::BAD_BGP_IDENTIFIER,
                Vec::new(),
                "BGP identifier 0 or multicast",
            ));
        }
        let opt_len = r.u8().ok_or_else(short)?;
        let malformed =
            || MessageError::open(0, Vec::new(), "optional parameters overrun the OPEN");
        let mut params: Vec<(u8, &[u8])> = Vec::new();
        let extended =
            opt_len == PARAM_EXTENDED_LENGTH && r.rest().first() == Some(&PARAM_EXTENDED_LENGTH);
        if extended {
            // RFC 9072: non-extended type 255 marks 2-octet lengths throughout.
            let _ = r.u8();
            let ext_len = r.u16().ok_or_else(malformed)? as usize;
            if ext_len != r.remaining() {
                return Err(malformed());
            }
            while !r.is_empty() {
                let kind = r.u8().ok_or_else(malformed)?;
                let len = r.u16().ok_or_else(malformed)? as usize;
                params.push((kind, r.take(len).ok_or_else(malformed)?));
            }
        } else {
            if opt_len as usize != r.remaining() {
                return Err(malformed());
            }
            while !r.is_empty() {
                let kind = r.u8().ok_or_else(malformed)?;
                let len = r.u8().ok_or_else(malformed)? as usize;
                params.push((kind, r.take(len).ok_or_else(malformed)?));
            }
        }
        let mut capabilities = Vec::new();
        for (kind, value) in params {
            if kind != PARAM_CAPABILITIES {
                return Err(MessageError::open(
                    codes::UNSUPPORTED_OPTIONAL_PARAMETER,
                    Vec::new(),
                    "optional parameter other than capabilities",
                ));
            }
            let mut cr = Reader::new(value);
            while !cr.is_empty() {
                let code = cr.u8().ok_or_else(malformed)?;
                let len = cr.u8().ok_or_else(malformed)? as usize;
                let v = cr.take(len).ok_or_else(malformed)?;
                capabilities.push(Capability::decode(code, v)?);
            }
        }
        Ok(Open {
            my_as,
            hold_time,
            bgp_id,
            capabilities,
        })
    }

    pub(crate) fn encode_body(&self, out: &mut Vec<u8>) {
        out.push(4);
        out.extend_from_slice(&self.my_as.to_be_bytes());
        out.extend_from_slice(&self.hold_time.to_be_bytes());
        out.extend_from_slice(&self.bgp_id.octets());
        let len_at = out.len();
        out.push(0);
        // One capabilities parameter per capability, as FRR and BIRD do; stays within the
        // 255-byte classic limit for everything we advertise.
        for cap in &self.capabilities {
            out.push(PARAM_CAPABILITIES);
            let at = out.len();
            out.push(0);
            cap.encode(out);
            out[at] = (out.len() - at - 1).min(255) as u8;
        }
        out[len_at] = (out.len() - len_at - 1).min(255) as u8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::capability::{GrFamily, GracefulRestartCap};
    use crate::packet::{hex, vectors, DecodeContext, Message};

    fn decode_open(h: &str) -> Open {
        match Message::decode(&hex(h), &DecodeContext::default()).unwrap() {
            Message::Open(o) => o,
            other => panic!("not an OPEN: {other:?}"),
        }
    }

    #[test]
    fn frr_open_decodes_and_reencodes_identically() {
        let open = decode_open(vectors::FRR_OPEN_AS65002.hex);
        assert_eq!(open.my_as, 65002);
        assert_eq!(open.hold_time, 9);
        assert_eq!(open.bgp_id, Ipv4Addr::new(192, 0, 2, 2));
        assert_eq!(open.asn(), 65002);
        assert_eq!(
            open.families(),
            vec![Family::IPV4_UNICAST, Family::IPV6_UNICAST]
        );
        assert!(open.capabilities.contains(&Capability::RouteRefresh));
        assert!(open
            .capabilities
            .contains(&Capability::EnhancedRouteRefresh));
        assert!(open.capabilities.contains(&Capability::ExtendedMessage));
        assert!(open
            .capabilities
            .contains(&Capability::GracefulRestart(GracefulRestartCap {
                restart_state: true,
                notification: true,
                restart_time: 120,
                families: vec![
                    GrFamily {
                        family: Family::IPV4_UNICAST,
                        forwarding_preserved: false
                    },
                    GrFamily {
                        family: Family::IPV6_UNICAST,
                        forwarding_preserved: false
                    },
                ],
            })));
        // Add-path (69), FQDN (73), long-lived GR (71) and Cisco route refresh (128) are unknown
        // to us and kept raw.
        assert!(open
            .capabilities
            .iter()
            .any(|c| matches!(c, Capability::Unknown { code: 73, .. })));
        let bytes = Message::Open(open)
            .to_bytes(&DecodeContext::default())
            .unwrap();
        assert_eq!(bytes, hex(vectors::FRR_OPEN_AS65002.hex));
    }

    #[test]
    fn frr_open_with_four_octet_asn() {
        let open = decode_open(vectors::FRR_OPEN_AS4200000001.hex);
        assert_eq!(open.my_as, AS_TRANS);
        assert_eq!(open.asn(), 4_200_000_001);
        let bytes = Message::Open(open)
            .to_bytes(&DecodeContext::default())
            .unwrap();
        assert_eq!(bytes, hex(vectors::FRR_OPEN_AS4200000001.hex));
    }

    #[test]
    fn open_new_uses_as_trans() {
        let o = Open::new(4_200_000_001, 90, Ipv4Addr::new(192, 0, 2, 9), vec![]);
        assert_eq!(o.my_as, AS_TRANS);
        let o = Open::new(64512, 90, Ipv4Addr::new(192, 0, 2, 9), vec![]);
        assert_eq!(o.my_as, 64512);
    }

    fn body_with(version: u8, hold: u16, id: [u8; 4], params: &[u8]) -> Vec<u8> {
        let mut b = vec![version, 0xfd, 0xe8];
        b.extend_from_slice(&hold.to_be_bytes());
        b.extend_from_slice(&id);
        b.push(params.len() as u8);
        b.extend_from_slice(params);
        b
    }

    #[test]
    fn unsupported_version_says_we_speak_4() {
        let err = Open::decode(&body_with(3, 90, [1, 2, 3, 4], &[])).unwrap_err();
        assert_eq!((err.code, err.subcode, err.data), (2, 1, vec![0, 4]));
    }

    #[test]
    fn hold_time_one_or_two_is_unacceptable() {
        for hold in [1, 2] {
            let err = Open::decode(&body_with(4, hold, [1, 2, 3, 4], &[])).unwrap_err();
            assert_eq!((err.code, err.subcode), (2, 6));
        }
        assert!(Open::decode(&body_with(4, 0, [1, 2, 3, 4], &[])).is_ok());
        assert!(Open::decode(&body_with(4, 3, [1, 2, 3, 4], &[])).is_ok());
    }

    #[test]
    fn zero_identifier_is_bad() {
        let err = Open::decode(&body_with(4, 90, [0, 0, 0, 0], &[])).unwrap_err();
        assert_eq!((err.code, err.subcode), (2, 3));
    }

    #[test]
    fn non_capability_parameter_is_unsupported() {
        let err = Open::decode(&body_with(4, 90, [1, 2, 3, 4], &[1, 1, 0])).unwrap_err();
        assert_eq!((err.code, err.subcode), (2, 4));
    }

    #[test]
    fn overrunning_parameters_are_rejected() {
        let err = Open::decode(&body_with(4, 90, [1, 2, 3, 4], &[2, 9, 1])).unwrap_err();
        assert_eq!(err.code, 2);
    }

    #[test]
    fn extended_optional_parameters_rfc9072() {
        let mut params = vec![255, 255, 0, 9, 2, 0, 6];
        params.extend_from_slice(&[65, 4, 0, 0, 0xfd, 0xe9]);
        let mut b = vec![4, 0xfd, 0xe8, 0, 90, 1, 2, 3, 4];
        b.extend_from_slice(&params[..1]);
        b.extend_from_slice(&params[1..]);
        let open = Open::decode(&b).unwrap();
        assert_eq!(open.four_octet_asn(), Some(65001));
    }

    #[test]
    fn capabilities_round_trip() {
        let caps = vec![
            Capability::Multiprotocol(Family::IPV6_UNICAST),
            Capability::ExtendedNextHop(vec![(Family::IPV4_UNICAST, crate::packet::Afi::IPV6)]),
            Capability::GracefulRestart(GracefulRestartCap {
                restart_state: true,
                notification: false,
                restart_time: 300,
                families: vec![GrFamily {
                    family: Family::IPV4_UNICAST,
                    forwarding_preserved: true,
                }],
            }),
            Capability::FourOctetAsn(4_200_000_000),
            Capability::Unknown {
                code: 200,
                value: vec![1, 2],
            },
        ];
        let open = Message::Open(Open::new(
            4_200_000_000,
            90,
            Ipv4Addr::new(192, 0, 2, 1),
            caps,
        ));
        let ctx = DecodeContext::default();
        let bytes = open.to_bytes(&ctx).unwrap();
        assert_eq!(Message::decode(&bytes, &ctx).unwrap(), open);
    }

    #[test]
    fn malformed_known_capability_is_an_open_error() {
        // 4-octet ASN capability with 3 bytes.
        let err =
            Open::decode(&body_with(4, 90, [1, 2, 3, 4], &[2, 5, 65, 3, 0, 0, 1])).unwrap_err();
        assert_eq!(err.code, 2);
    }
}
