//! NLRI prefix encoding (RFC 4271 4.3, RFC 4760 section 5): a length in bits, then just
//! enough octets to hold it.
//!
//! ```text
//! +---------------------------+
//! |   Length (1 octet)        |
//! +---------------------------+
//! |   Prefix (variable)       |
//! +---------------------------+
//! ```

use std::net::{Ipv4Addr, Ipv6Addr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

use super::Reader;

/// Why a prefix could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PrefixError {
    Truncated,
    LengthTooLong,
}

/// Octets a prefix of `len` bits occupies on the wire, length byte included.
pub fn encoded_len(len: u8) -> usize {
    1 + (len as usize).div_ceil(8)
}

pub(crate) fn encode_v4(p: &Ipv4Net, out: &mut Vec<u8>) {
    let len = p.prefix_len();
    out.push(len);
    out.extend_from_slice(&p.network().octets()[..(len as usize).div_ceil(8)]);
}

pub(crate) fn encode_v6(p: &Ipv6Net, out: &mut Vec<u8>) {
    let len = p.prefix_len();
    out.push(len);
    out.extend_from_slice(&p.network().octets()[..(len as usize).div_ceil(8)]);
}

pub(crate) fn encode(p: &IpNet, out: &mut Vec<u8>) {
    match p {
        IpNet::V4(p) => encode_v4(p, out),
        IpNet::V6(p) => encode_v6(p, out),
    }
}

/// Reads one IPv4 prefix; host bits beyond the length are cleared.
pub(crate) fn decode_v4(r: &mut Reader<'_>) -> Result<Ipv4Net, PrefixError> {
    let len = r.u8().ok_or(PrefixError::Truncated)?;
    if len > 32 {
        return Err(PrefixError::LengthTooLong);
    }
    let bytes = r
        .take((len as usize).div_ceil(8))
        .ok_or(PrefixError::Truncated)?;
    let mut octets = [0u8; 4];
    octets[..bytes.len()].copy_from_slice(bytes);
    Ipv4Net::new(Ipv4Addr::from(octets), len)
        .map(|n| n.trunc())
        .map_err(|_| PrefixError::LengthTooLong)
}

/// Reads one IPv6 prefix; host bits beyond the length are cleared.
pub(crate) fn decode_v6(r: &mut Reader<'_>) -> Result<Ipv6Net, PrefixError> {
    let len = r.u8().ok_or(PrefixError::Truncated)?;
    if len > 128 {
        return Err(PrefixError::LengthTooLong);
    }
    let bytes = r
        .take((len as usize).div_ceil(8))
        .ok_or(PrefixError::Truncated)?;
    let mut octets = [0u8; 16];
    octets[..bytes.len()].copy_from_slice(bytes);
    Ipv6Net::new(Ipv6Addr::from(octets), len)
        .map(|n| n.trunc())
        .map_err(|_| PrefixError::LengthTooLong)
}

/// Reads a whole field of IPv4 prefixes.
pub(crate) fn decode_v4_all(buf: &[u8]) -> Result<Vec<Ipv4Net>, PrefixError> {
    let mut r = Reader::new(buf);
    let mut out = Vec::new();
    while !r.is_empty() {
        out.push(decode_v4(&mut r)?);
    }
    Ok(out)
}

/// Reads a whole field of IPv6 prefixes.
pub(crate) fn decode_v6_all(buf: &[u8]) -> Result<Vec<Ipv6Net>, PrefixError> {
    let mut r = Reader::new(buf);
    let mut out = Vec::new();
    while !r.is_empty() {
        out.push(decode_v6(&mut r)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_routes_round_trip() {
        let p4: Ipv4Net = "198.51.100.7/32".parse().unwrap();
        let mut out = Vec::new();
        encode_v4(&p4, &mut out);
        assert_eq!(out, [32, 198, 51, 100, 7]);
        assert_eq!(decode_v4_all(&out).unwrap(), vec![p4]);
        let p6: Ipv6Net = "2001:db8::5/128".parse().unwrap();
        let mut out = Vec::new();
        encode_v6(&p6, &mut out);
        assert_eq!(out.len(), encoded_len(128));
        assert_eq!(decode_v6_all(&out).unwrap(), vec![p6]);
    }

    #[test]
    fn short_prefixes_use_few_octets() {
        let p: Ipv4Net = "10.0.0.0/8".parse().unwrap();
        let mut out = Vec::new();
        encode_v4(&p, &mut out);
        assert_eq!(out, [8, 10]);
        assert_eq!(decode_v4_all(&[0]).unwrap()[0].to_string(), "0.0.0.0/0");
    }

    #[test]
    fn bad_prefixes_are_errors() {
        assert_eq!(
            decode_v4_all(&[33, 1, 2, 3, 4, 5]),
            Err(PrefixError::LengthTooLong)
        );
        assert_eq!(decode_v4_all(&[24, 1, 2]), Err(PrefixError::Truncated));
        assert_eq!(decode_v6_all(&[129]), Err(PrefixError::LengthTooLong));
    }
}
