//! BGP-4 messages on the wire (RFC 4271 section 4), sans-IO.
//!
//! Every message starts with the common header:
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                                                               |
//! +                                                               +
//! |                                                               |
//! +                                                               +
//! |                           Marker                              |
//! +                                                               +
//! |                                                               |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |          Length               |      Type     |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! Decoding never panics: every failure is a [`MessageError`] that carries the NOTIFICATION
//! (code, subcode, data) to send back. Received UPDATEs with malformed attributes that RFC 7606
//! allows to survive come back as an [`Update`] flagged `treat_as_withdraw` instead of an error.

pub mod attributes;
pub mod capability;
pub mod error;
pub mod notification;
pub mod open;
pub mod prefix;
pub mod route_refresh;
pub mod update;

pub use attributes::{
    AsPath, AsSegment, LargeCommunity, MpReach, MpUnreach, Origin, PathAttributes, RawAttribute,
    SegmentType,
};
pub use capability::{Afi, Capability, Family, GrFamily, GracefulRestartCap, Safi};
pub use error::{codes, MessageError};
pub use notification::Notification;
pub use open::Open;
pub use route_refresh::{RouteRefresh, RouteRefreshSubtype};
pub use update::Update;

/// Length of the common header.
pub const HEADER_LEN: usize = 19;
/// Largest message without the extended message capability (RFC 4271).
pub const MAX_MESSAGE_LEN: usize = 4096;
/// Largest message once both sides advertised extended messages (RFC 8654).
pub const MAX_EXTENDED_MESSAGE_LEN: usize = 65535;
/// The well-known BGP port.
pub const BGP_PORT: u16 = 179;
/// AS_TRANS (RFC 6793): stands in for a 4-octet ASN towards 2-octet speakers.
pub const AS_TRANS: u16 = 23456;

const MARKER: [u8; 16] = [0xff; 16];

/// Message type codes.
pub mod msg_type {
    pub const OPEN: u8 = 1;
    pub const UPDATE: u8 = 2;
    pub const NOTIFICATION: u8 = 3;
    pub const KEEPALIVE: u8 = 4;
    pub const ROUTE_REFRESH: u8 = 5;
}

/// What the decoder must know about the session to read a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecodeContext {
    /// Both sides advertised 4-octet ASNs: AS_PATH carries 4-byte ASNs.
    pub four_octet_asn: bool,
    /// Both sides advertised extended messages: frames up to 65535 bytes.
    pub extended_messages: bool,
    /// The session is iBGP (LOCAL_PREF is expected and its errors matter, RFC 7606 7.5).
    pub ibgp: bool,
}

impl Default for DecodeContext {
    /// Before the OPEN exchange: classic 2-octet, 4096-byte messages.
    fn default() -> Self {
        DecodeContext {
            four_octet_asn: false,
            extended_messages: false,
            ibgp: false,
        }
    }
}

impl DecodeContext {
    /// Largest frame accepted on this session.
    pub fn max_message_len(&self) -> usize {
        if self.extended_messages {
            MAX_EXTENDED_MESSAGE_LEN
        } else {
            MAX_MESSAGE_LEN
        }
    }
}

/// One BGP message.
// UPDATE is by far the most common message; boxing it would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Open(Open),
    Update(Update),
    Notification(Notification),
    Keepalive,
    RouteRefresh(RouteRefresh),
}

impl Message {
    /// The message type code.
    pub fn type_code(&self) -> u8 {
        match self {
            Message::Open(_) => msg_type::OPEN,
            Message::Update(_) => msg_type::UPDATE,
            Message::Notification(_) => msg_type::NOTIFICATION,
            Message::Keepalive => msg_type::KEEPALIVE,
            Message::RouteRefresh(_) => msg_type::ROUTE_REFRESH,
        }
    }

    /// Decodes exactly one message from `frame` (header included; see [`frame_len`]).
    pub fn decode(frame: &[u8], ctx: &DecodeContext) -> Result<Message, MessageError> {
        let (len, kind) = check_header(frame, ctx.max_message_len())?;
        if frame.len() != len {
            return Err(MessageError::header_length(
                len as u16,
                "frame shorter than its length",
            ));
        }
        let body = &frame[HEADER_LEN..];
        match kind {
            msg_type::OPEN => Open::decode(body).map(Message::Open),
            msg_type::UPDATE => Update::decode(body, ctx).map(Message::Update),
            msg_type::NOTIFICATION => Notification::decode(body).map(Message::Notification),
            msg_type::KEEPALIVE => Ok(Message::Keepalive),
            msg_type::ROUTE_REFRESH => RouteRefresh::decode(body).map(Message::RouteRefresh),
            // check_header already refused other types.
            other => Err(MessageError::new(
                codes::MESSAGE_HEADER,
                codes::BAD_MESSAGE_TYPE,
                vec![other],
                "unknown message type",
            )),
        }
    }

    /// Appends the encoded message (header included) to `out`.
    ///
    /// Fails only when the message does not fit in `max_len` bytes.
    pub fn encode(
        &self,
        ctx: &DecodeContext,
        out: &mut Vec<u8>,
    ) -> Result<(), crate::packet::error::EncodeError> {
        let start = out.len();
        out.extend_from_slice(&MARKER);
        out.extend_from_slice(&[0, 0, self.type_code()]);
        match self {
            Message::Open(open) => open.encode_body(out),
            Message::Update(update) => update.encode_body(ctx, out),
            Message::Notification(n) => n.encode_body(out),
            Message::Keepalive => {}
            Message::RouteRefresh(rr) => rr.encode_body(out),
        }
        finish_message(out, start, ctx.max_message_len())
    }

    /// Encodes into a fresh buffer.
    pub fn to_bytes(&self, ctx: &DecodeContext) -> Result<Vec<u8>, error::EncodeError> {
        let mut out = Vec::new();
        self.encode(ctx, &mut out)?;
        Ok(out)
    }
}

/// Writes the length field of the message that starts at `start`; refuses oversize messages
/// (and truncates them away so `out` stays a valid stream).
pub(crate) fn finish_message(
    out: &mut Vec<u8>,
    start: usize,
    max_len: usize,
) -> Result<(), error::EncodeError> {
    let len = out.len() - start;
    if len > max_len {
        out.truncate(start);
        return Err(error::EncodeError::TooLong { len, max: max_len });
    }
    out[start + 16..start + 18].copy_from_slice(&(len as u16).to_be_bytes());
    Ok(())
}

/// Checks the common header and returns (length, type).
fn check_header(buf: &[u8], max_len: usize) -> Result<(usize, u8), MessageError> {
    if buf.len() < HEADER_LEN {
        return Err(MessageError::header_length(
            buf.len() as u16,
            "shorter than a header",
        ));
    }
    if buf[..16] != MARKER {
        return Err(MessageError::new(
            codes::MESSAGE_HEADER,
            codes::CONNECTION_NOT_SYNCHRONIZED,
            Vec::new(),
            "marker is not all ones",
        ));
    }
    let len = u16::from_be_bytes([buf[16], buf[17]]);
    let kind = buf[18];
    let min = match kind {
        msg_type::OPEN => 29,
        msg_type::UPDATE => 23,
        msg_type::NOTIFICATION => 21,
        msg_type::KEEPALIVE => 19,
        // RFC 7313 section 5: a wrong ROUTE-REFRESH length is a ROUTE-REFRESH error, decided
        // by the body decoder.
        msg_type::ROUTE_REFRESH => 19,
        other => {
            return Err(MessageError::new(
                codes::MESSAGE_HEADER,
                codes::BAD_MESSAGE_TYPE,
                vec![other],
                "unknown message type",
            ))
        }
    };
    let usize_len = len as usize;
    // OPEN and KEEPALIVE never exceed 4096 (RFC 8654 section 4).
    let max = if matches!(kind, msg_type::OPEN | msg_type::KEEPALIVE) {
        MAX_MESSAGE_LEN
    } else {
        max_len
    };
    if usize_len < min || usize_len > max || (kind == msg_type::KEEPALIVE && usize_len != 19) {
        return Err(MessageError::header_length(len, "bad message length"));
    }
    Ok((usize_len, kind))
}

/// Framing: how long the first message in `buf` is, once its header has arrived.
///
/// `Ok(None)` means "need more bytes"; `Ok(Some(n))` means the frame is `buf[..n]` when
/// `buf.len() >= n` (the caller waits for the rest otherwise); errors are header errors.
pub fn frame_len(buf: &[u8], ctx: &DecodeContext) -> Result<Option<usize>, MessageError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    check_header(&buf[..HEADER_LEN], ctx.max_message_len()).map(|(len, _)| Some(len))
}

/// A bounds-checked reader; every read returns `None` on truncation instead of panicking.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Reader { buf }
    }
    pub(crate) fn remaining(&self) -> usize {
        self.buf.len()
    }
    pub(crate) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }
    pub(crate) fn rest(&self) -> &'a [u8] {
        self.buf
    }
    pub(crate) fn u8(&mut self) -> Option<u8> {
        let (&b, rest) = self.buf.split_first()?;
        self.buf = rest;
        Some(b)
    }
    pub(crate) fn u16(&mut self) -> Option<u16> {
        let b = self.take(2)?;
        Some(u16::from_be_bytes([b[0], b[1]]))
    }
    pub(crate) fn u32(&mut self) -> Option<u32> {
        let b = self.take(4)?;
        Some(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.buf.len() {
            return None;
        }
        let (head, rest) = self.buf.split_at(n);
        self.buf = rest;
        Some(head)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FRR_KEEPALIVE: &str = crate::packet::vectors::FRR_KEEPALIVE.hex;

    pub(crate) fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn keepalive_both_ways() {
        let bytes = hex(FRR_KEEPALIVE);
        let ctx = DecodeContext::default();
        assert_eq!(Message::decode(&bytes, &ctx).unwrap(), Message::Keepalive);
        assert_eq!(Message::Keepalive.to_bytes(&ctx).unwrap(), bytes);
    }

    #[test]
    fn bad_marker_is_connection_not_synchronized() {
        let mut bytes = hex(FRR_KEEPALIVE);
        bytes[3] = 0;
        let err = Message::decode(&bytes, &DecodeContext::default()).unwrap_err();
        assert_eq!((err.code, err.subcode), (1, 1));
    }

    #[test]
    fn bad_length_carries_the_length_field() {
        let mut bytes = hex(FRR_KEEPALIVE);
        bytes[17] = 0x14;
        bytes.push(0);
        let err = Message::decode(&bytes, &DecodeContext::default()).unwrap_err();
        assert_eq!(
            (err.code, err.subcode, err.data.clone()),
            (1, 2, vec![0, 0x14])
        );
        // Longer than 4096 without extended messages.
        let mut big = hex("ffffffffffffffffffffffffffffffff100102");
        big.resize(0x1001, 0);
        let err = frame_len(&big, &DecodeContext::default()).unwrap_err();
        assert_eq!((err.code, err.subcode), (1, 2));
        let ext = DecodeContext {
            extended_messages: true,
            ..DecodeContext::default()
        };
        assert_eq!(frame_len(&big, &ext).unwrap(), Some(0x1001));
    }

    #[test]
    fn bad_type_carries_the_type() {
        let bytes = hex("ffffffffffffffffffffffffffffffff001309");
        let err = Message::decode(&bytes, &DecodeContext::default()).unwrap_err();
        assert_eq!((err.code, err.subcode, err.data), (1, 3, vec![9]));
    }

    #[test]
    fn framing_waits_for_a_header() {
        let bytes = hex(FRR_KEEPALIVE);
        let ctx = DecodeContext::default();
        assert_eq!(frame_len(&bytes[..10], &ctx).unwrap(), None);
        assert_eq!(frame_len(&bytes, &ctx).unwrap(), Some(19));
    }

    #[test]
    fn truncated_inputs_never_panic() {
        let ctx = DecodeContext::default();
        for v in crate::packet::vectors::ALL {
            let bytes = hex(v.hex);
            for cut in 0..bytes.len() {
                let _ = Message::decode(&bytes[..cut], &ctx);
                let _ = Update::decode(&bytes[HEADER_LEN.min(cut)..cut], &ctx);
            }
        }
    }
}

#[cfg(test)]
pub(crate) mod vectors;
#[cfg(test)]
pub(crate) use tests::hex;

#[cfg(test)]
mod never_panics {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Arbitrary bodies behind a valid header, for every type and session flavour.
        #[test]
        fn any_body_decodes_or_errors(kind in 1u8..=5, body in proptest::collection::vec(any::<u8>(), 0..300), four in any::<bool>(), ibgp in any::<bool>()) {
            let mut frame = vec![0xff; 16];
            frame.extend_from_slice(&((body.len() + HEADER_LEN) as u16).to_be_bytes());
            frame.push(kind);
            frame.extend_from_slice(&body);
            let ctx = DecodeContext { four_octet_asn: four, extended_messages: false, ibgp };
            if let Ok(msg) = Message::decode(&frame, &ctx) {
                // Whatever decodes must encode again without panicking.
                let _ = msg.to_bytes(&ctx);
            }
        }

        /// Mutations of the captured FRR messages.
        #[test]
        fn mutated_frr_vectors(idx in 0usize..12, pos in any::<usize>(), byte in any::<u8>()) {
            let v = vectors::ALL[idx % vectors::ALL.len()];
            let mut frame = hex(v.hex);
            let p = pos % frame.len();
            frame[p] = byte;
            let ctx = DecodeContext { four_octet_asn: true, extended_messages: true, ibgp: false };
            let _ = Message::decode(&frame, &ctx);
        }
    }
}
