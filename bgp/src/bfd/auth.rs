//! Keyed SHA1 and Meticulous Keyed SHA1 authentication (RFC 5880 sections 4.4 and 6.7.4),
//! sans-IO.
//!
//! The auth section after Auth Type and Auth Len is: Auth Key ID (1), Reserved (1), Sequence
//! Number (4), Auth Key/Hash (20). The hash is SHA1 over the whole packet with the key,
//! zero-padded to 20 bytes, in the hash field.

use sha1::{Digest, Sha1};

use super::packet::ControlPacket;

pub const KEYED_SHA1: u8 = 4;
pub const METICULOUS_KEYED_SHA1: u8 = 5;
/// Bytes after Auth Type and Auth Len.
const DATA_LEN: usize = 26;

/// A session's key. `Copy`, so a configuration holding it stays plain data.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct BfdAuth {
    pub key_id: u8,
    key: [u8; 20],
    /// Meticulous: the sequence number grows with every packet, and replays are refused.
    pub meticulous: bool,
}

impl std::fmt::Debug for BfdAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BfdAuth")
            .field("key_id", &self.key_id)
            .field("key", &"<redacted>")
            .field("meticulous", &self.meticulous)
            .finish()
    }
}

impl BfdAuth {
    /// A key of 1 to 20 bytes.
    pub fn new(key_id: u8, key: &[u8], meticulous: bool) -> Result<BfdAuth, String> {
        if key.is_empty() || key.len() > 20 {
            return Err(format!(
                "bfd.auth: a SHA1 key has 1 to 20 bytes, not {}",
                key.len()
            ));
        }
        let mut k = [0u8; 20];
        k[..key.len()].copy_from_slice(key);
        Ok(BfdAuth {
            key_id,
            key: k,
            meticulous,
        })
    }

    fn auth_type(&self) -> u8 {
        if self.meticulous {
            METICULOUS_KEYED_SHA1
        } else {
            KEYED_SHA1
        }
    }

    fn digest(&self, p: &ControlPacket, seq: u32) -> [u8; 20] {
        let mut with_key = p.clone();
        with_key.auth = Some((self.auth_type(), self.data(seq, &self.key)));
        Sha1::digest(with_key.encode()).into()
    }

    fn data(&self, seq: u32, hash: &[u8; 20]) -> Vec<u8> {
        let mut d = Vec::with_capacity(DATA_LEN);
        d.push(self.key_id);
        d.push(0);
        d.extend_from_slice(&seq.to_be_bytes());
        d.extend_from_slice(hash);
        d
    }

    /// Puts the auth section with sequence number `seq` on `p`.
    pub fn sign(&self, p: &mut ControlPacket, seq: u32) {
        let hash = self.digest(p, seq);
        p.auth = Some((self.auth_type(), self.data(seq, &hash)));
    }
}

/// Why an authenticated session refused a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum AuthError {
    #[error("no authentication")]
    Missing,
    #[error("auth type {0}")]
    WrongType(u8),
    #[error("auth section of {0} bytes")]
    BadLength(usize),
    #[error("key id {0}")]
    WrongKeyId(u8),
    #[error("sequence number {0} outside the window")]
    Replay(u32),
    #[error("digest mismatch")]
    BadDigest,
}

/// The receive side's sequence state (bfd.RcvAuthSeq, bfd.AuthSeqKnown).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RxSequence {
    pub known: bool,
    pub last: u32,
}

impl BfdAuth {
    /// Checks `p` (RFC 5880 6.7.4) and, when it is good, moves the receive sequence on.
    pub fn verify(
        &self,
        p: &ControlPacket,
        rx: &mut RxSequence,
        detect_mult: u8,
    ) -> Result<(), AuthError> {
        let Some((t, data)) = &p.auth else {
            return Err(AuthError::Missing);
        };
        if *t != self.auth_type() {
            return Err(AuthError::WrongType(*t));
        }
        if data.len() != DATA_LEN {
            return Err(AuthError::BadLength(data.len()));
        }
        if data[0] != self.key_id {
            return Err(AuthError::WrongKeyId(data[0]));
        }
        let seq = u32::from_be_bytes([data[2], data[3], data[4], data[5]]);
        if rx.known {
            // Within 3 x Detect Mult packets ahead (wrapping); meticulous refuses repeats.
            let ahead = seq.wrapping_sub(rx.last);
            let window = 3 * u32::from(detect_mult.max(1));
            let min = u32::from(self.meticulous);
            if ahead < min || ahead > window {
                return Err(AuthError::Replay(seq));
            }
        }
        let mut got = [0u8; 20];
        got.copy_from_slice(&data[6..]);
        if self.digest(p, seq) != got {
            return Err(AuthError::BadDigest);
        }
        rx.known = true;
        rx.last = seq;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
