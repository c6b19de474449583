//! ROUTE-REFRESH (RFC 2918), with the enhanced route refresh subtypes (RFC 7313).
//!
//! ```text
//!  0       7      15      23      31
//! +-------+-------+-------+-------+
//! |      AFI      | Subtype | SAFI |
//! +-------+-------+-------+-------+
//! ```
//!
//! Subtype 0 is a refresh request, 1 Beginning of Route Refresh, 2 End of Route Refresh.

use super::error::codes;
use super::{Afi, Family, MessageError, Safi};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteRefreshSubtype {
    Request,
    /// BoRR (RFC 7313).
    Begin,
    /// EoRR (RFC 7313).
    End,
    /// Reserved values are ignored by the receiver (RFC 7313 section 5).
    Reserved(u8),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteRefresh {
    pub family: Family,
    pub subtype: RouteRefreshSubtype,
}

impl RouteRefresh {
    pub fn request(family: Family) -> Self {
        RouteRefresh {
            family,
            subtype: RouteRefreshSubtype::Request,
        }
    }

    pub(crate) fn decode(body: &[u8]) -> Result<Self, MessageError> {
        let [a0, a1, sub, safi] = body else {
            // RFC 7313 section 5: ROUTE-REFRESH Message Error / Invalid Message Length,
            // data = the whole message.
            let mut data = vec![0xff; 16];
            data.extend_from_slice(&((body.len() + super::HEADER_LEN) as u16).to_be_bytes());
            data.push(super::msg_type::ROUTE_REFRESH);
            data.extend_from_slice(body);
            return Err(MessageError::new(
                codes::ROUTE_REFRESH_MESSAGE,
                codes::INVALID_MESSAGE_LENGTH,
                data,
                "ROUTE-REFRESH length is not 23",
            ));
        };
        let subtype = match sub {
            0 => RouteRefreshSubtype::Request,
            1 => RouteRefreshSubtype::Begin,
            2 => RouteRefreshSubtype::End,
            other => RouteRefreshSubtype::Reserved(*other),
        };
        Ok(RouteRefresh {
            family: Family {
                afi: Afi(u16::from_be_bytes([*a0, *a1])),
                safi: Safi(*safi),
            },
            subtype,
        })
    }

    pub(crate) fn encode_body(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.family.afi.0.to_be_bytes());
        out.push(match self.subtype {
            RouteRefreshSubtype::Request => 0,
            RouteRefreshSubtype::Begin => 1,
            RouteRefreshSubtype::End => 2,
            RouteRefreshSubtype::Reserved(v) => v,
        });
        out.push(self.family.safi.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{hex, vectors, DecodeContext, Message};

    #[test]
    fn frr_route_refresh_vectors_both_ways() {
        let cases = [
            (
                &vectors::FRR_ROUTE_REFRESH_IPV4,
                Family::IPV4_UNICAST,
                RouteRefreshSubtype::Request,
            ),
            (
                &vectors::FRR_BORR_IPV4,
                Family::IPV4_UNICAST,
                RouteRefreshSubtype::Begin,
            ),
            (
                &vectors::FRR_EORR_IPV6,
                Family::IPV6_UNICAST,
                RouteRefreshSubtype::End,
            ),
        ];
        let ctx = DecodeContext::default();
        for (v, family, subtype) in cases {
            let bytes = hex(v.hex);
            let msg = Message::decode(&bytes, &ctx).unwrap();
            assert_eq!(
                msg,
                Message::RouteRefresh(RouteRefresh { family, subtype }),
                "{}",
                v.what
            );
            assert_eq!(msg.to_bytes(&ctx).unwrap(), bytes, "{}", v.what);
        }
    }

    #[test]
    fn wrong_length_is_route_refresh_error() {
        let err = RouteRefresh::decode(&[0, 1, 0, 1, 0]).unwrap_err();
        assert_eq!((err.code, err.subcode), (7, 1));
        // Shorter than 23 bytes in the header: also 7/1, with the whole message as data.
        let ctx = DecodeContext::default();
        let short = hex("ffffffffffffffffffffffffffffffff0015050001");
        let err = Message::decode(&short, &ctx).unwrap_err();
        assert_eq!((err.code, err.subcode), (7, 1));
        assert_eq!(err.data, short);
    }
}
