//! NOTIFICATION (RFC 4271 4.5), with the RFC 9003 shutdown communication.
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | Error code    | Error subcode |   Data (variable)             |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```
//!
//! For Cease / Administrative Shutdown and Administrative Reset, RFC 9003 puts a
//! length-prefixed UTF-8 message in the data:
//!
//! ```text
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! | Error code 6  |    Subcode    |    Length     |     ...       \
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+               /
//! \                 Shutdown Communication ...                    \
//! /                                                               /
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use std::fmt;

use super::error::codes;
use super::MessageError;

/// A NOTIFICATION message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    pub code: u8,
    pub subcode: u8,
    pub data: Vec<u8>,
}

/// RFC 9003 caps the shutdown communication at 255 octets of UTF-8.
pub const MAX_SHUTDOWN_MESSAGE_LEN: usize = 255;

impl Notification {
    pub fn new(code: u8, subcode: u8) -> Self {
        Notification {
            code,
            subcode,
            data: Vec::new(),
        }
    }

    /// Cease with a shutdown communication (RFC 9003); `subcode` is Administrative Shutdown or
    /// Administrative Reset. A message longer than 255 octets is cut at a character boundary.
    pub fn cease_with_message(subcode: u8, message: &str) -> Self {
        let mut end = message.len().min(MAX_SHUTDOWN_MESSAGE_LEN);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        let text = &message.as_bytes()[..end];
        let mut data = Vec::with_capacity(1 + text.len());
        if !text.is_empty() {
            data.push(text.len() as u8);
            data.extend_from_slice(text);
        }
        Notification {
            code: codes::CEASE,
            subcode,
            data,
        }
    }

    /// Cease / Hard Reset (RFC 8538) wrapping another Cease: data = inner code, subcode, data.
    pub fn hard_reset(inner: &Notification) -> Self {
        let mut data = vec![inner.code, inner.subcode];
        data.extend_from_slice(&inner.data);
        Notification {
            code: codes::CEASE,
            subcode: codes::HARD_RESET,
            data,
        }
    }

    /// The Cease inside a Hard Reset (RFC 8538), if this is one.
    pub fn hard_reset_inner(&self) -> Option<Notification> {
        if self.code != codes::CEASE || self.subcode != codes::HARD_RESET {
            return None;
        }
        match self.data.as_slice() {
            [code, subcode, data @ ..] => Some(Notification {
                code: *code,
                subcode: *subcode,
                data: data.to_vec(),
            }),
            _ => None,
        }
    }

    /// The RFC 9003 shutdown communication, if this NOTIFICATION (or the Cease inside a Hard
    /// Reset) carries a valid one.
    pub fn shutdown_message(&self) -> Option<String> {
        if let Some(inner) = self.hard_reset_inner() {
            return inner.shutdown_message();
        }
        if self.code != codes::CEASE
            || !matches!(
                self.subcode,
                codes::ADMINISTRATIVE_SHUTDOWN | codes::ADMINISTRATIVE_RESET
            )
        {
            return None;
        }
        let (&len, rest) = self.data.split_first()?;
        let text = rest.get(..len as usize)?;
        std::str::from_utf8(text).ok().map(str::to_owned)
    }

    pub(crate) fn decode(body: &[u8]) -> Result<Self, MessageError> {
        match body {
            [code, subcode, data @ ..] => Ok(Notification {
                code: *code,
                subcode: *subcode,
                data: data.to_vec(),
            }),
            _ => Err(MessageError::header_length(
                (body.len() + super::HEADER_LEN) as u16,
                "NOTIFICATION shorter than 21 bytes",
            )),
        }
    }

    pub(crate) fn encode_body(&self, out: &mut Vec<u8>) {
        out.push(self.code);
        out.push(self.subcode);
        out.extend_from_slice(&self.data);
    }

    /// Name of the error code and subcode, for logs and session-down reasons.
    pub fn describe(&self) -> String {
        let code = match self.code {
            codes::MESSAGE_HEADER => "Message Header Error",
            codes::OPEN_MESSAGE => "OPEN Message Error",
            codes::UPDATE_MESSAGE => "UPDATE Message Error",
            codes::HOLD_TIMER_EXPIRED => "Hold Timer Expired",
            codes::FSM_ERROR => "Finite State Machine Error",
            codes::CEASE => "Cease",
            codes::ROUTE_REFRESH_MESSAGE => "ROUTE-REFRESH Message Error",
            codes::SEND_HOLD_TIMER_EXPIRED => "Send Hold Timer Expired",
            _ => "Unknown Error",
        };
        let sub = match (self.code, self.subcode) {
            (codes::MESSAGE_HEADER, 1) => "Connection Not Synchronized",
            (codes::MESSAGE_HEADER, 2) => "Bad Message Length",
            (codes::MESSAGE_HEADER, 3) => "Bad Message Type",
            (codes::OPEN_MESSAGE, 1) => "Unsupported Version Number",
            (codes::OPEN_MESSAGE, 2) => "Bad Peer AS",
            (codes::OPEN_MESSAGE, 3) => "Bad BGP Identifier",
            (codes::OPEN_MESSAGE, 4) => "Unsupported Optional Parameter",
            (codes::OPEN_MESSAGE, 6) => "Unacceptable Hold Time",
            (codes::OPEN_MESSAGE, 7) => "Unsupported Capability",
            (codes::UPDATE_MESSAGE, 1) => "Malformed Attribute List",
            (codes::UPDATE_MESSAGE, 2) => "Unrecognized Well-known Attribute",
            (codes::UPDATE_MESSAGE, 3) => "Missing Well-known Attribute",
            (codes::UPDATE_MESSAGE, 4) => "Attribute Flags Error",
            (codes::UPDATE_MESSAGE, 5) => "Attribute Length Error",
            (codes::UPDATE_MESSAGE, 6) => "Invalid ORIGIN Attribute",
            (codes::UPDATE_MESSAGE, 8) => "Invalid NEXT_HOP Attribute",
            (codes::UPDATE_MESSAGE, 9) => "Optional Attribute Error",
            (codes::UPDATE_MESSAGE, 10) => "Invalid Network Field",
            (codes::UPDATE_MESSAGE, 11) => "Malformed AS_PATH",
            (codes::CEASE, 1) => "Maximum Number of Prefixes Reached",
            (codes::CEASE, 2) => "Administrative Shutdown",
            (codes::CEASE, 3) => "Peer De-configured",
            (codes::CEASE, 4) => "Administrative Reset",
            (codes::CEASE, 5) => "Connection Rejected",
            (codes::CEASE, 6) => "Other Configuration Change",
            (codes::CEASE, 7) => "Connection Collision Resolution",
            (codes::CEASE, 8) => "Out of Resources",
            (codes::CEASE, 9) => "Hard Reset",
            (codes::FSM_ERROR, 1) => "Unexpected Message in OpenSent State",
            (codes::FSM_ERROR, 2) => "Unexpected Message in OpenConfirm State",
            (codes::FSM_ERROR, 3) => "Unexpected Message in Established State",
            _ => "",
        };
        let mut s = format!("{code} ({}/{})", self.code, self.subcode);
        if !sub.is_empty() {
            s = format!("{code} / {sub} ({}/{})", self.code, self.subcode);
        }
        if let Some(msg) = self.shutdown_message() {
            s.push_str(&format!(": \"{msg}\""));
        }
        s
    }
}

impl fmt::Display for Notification {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::packet::{hex, vectors, DecodeContext, Message};

    #[test]
    fn frr_shutdown_message_both_ways() {
        let bytes = hex(vectors::FRR_NOTIFICATION_SHUTDOWN.hex);
        let msg = Message::decode(&bytes, &DecodeContext::default()).unwrap();
        let Message::Notification(n) = &msg else {
            panic!("not a notification")
        };
        // FRR wraps the shutdown in a Hard Reset (RFC 8538) since both sides set the N bit.
        assert_eq!((n.code, n.subcode), (6, 9));
        assert_eq!(
            n.shutdown_message().as_deref(),
            Some("\"maintenance window\"")
        );
        let ours = Notification::hard_reset(&Notification::cease_with_message(
            2,
            "\"maintenance window\"",
        ));
        assert_eq!(&ours, n);
        assert_eq!(msg.to_bytes(&DecodeContext::default()).unwrap(), bytes);
    }

    #[test]
    fn long_shutdown_message_is_cut_on_a_char_boundary() {
        let text = "é".repeat(200);
        let n = Notification::cease_with_message(2, &text);
        assert_eq!(n.data[0] as usize, 254);
        assert_eq!(n.shutdown_message().unwrap().chars().count(), 127);
    }

    #[test]
    fn describe_names_code_and_subcode() {
        let n = Notification::new(2, 2);
        assert_eq!(n.describe(), "OPEN Message Error / Bad Peer AS (2/2)");
        let n = Notification::cease_with_message(2, "bye");
        assert!(n.describe().ends_with(": \"bye\""));
    }

    #[test]
    fn invalid_utf8_shutdown_message_is_ignored() {
        let n = Notification {
            code: 6,
            subcode: 2,
            data: vec![2, 0xff, 0xfe],
        };
        assert_eq!(n.shutdown_message(), None);
    }
}
