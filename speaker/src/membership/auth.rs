//! Authentication of membership datagrams: HMAC-SHA256 with the shared key, and a freshness
//! check (timestamp window plus a cache of recently seen nonces) against replay.
//!
//! Without it anyone on the segment could claim to be a speaker, or tell the speakers that the
//! owner of an address is dead and trigger a takeover.
//!
//! ```text
//! 0      4        5      6                14            22         len-32      len
//! +------+--------+------+----------------+-------------+-- ... ---+-----------+
//! | FLBM | ver=2  | mode | timestamp (ms) | nonce (u64) |  payload |  HMAC tag |
//! +------+--------+------+----------------+-------------+-- ... ---+-----------+
//! mode 1: tag = HMAC-SHA256(key, bytes 0..len-32)       mode 0 (insecure): no tag
//! payload = channel:u8 body   channel 0: foca's message, 1: the L2 fast path's (`fast`)
//! ```
//!
//! The timestamp is the sender's wall clock; a datagram more than `max_clock_skew` away from
//! the receiver's clock is refused (counted as `stale`), so node clocks must agree within that
//! window (NTP; the default is a generous 30 s). Within the window every nonce is accepted once.
//! The key is shared by all speakers, so it authenticates "a speaker", not which one; that is the
//! same trust model as memberlist's.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::collections::{HashSet, VecDeque};

const MAGIC: &[u8; 4] = b"FLBM";
/// 2: identities carry their record of returns (see `identity`) and the payload starts with
/// a channel byte; a version-1 speaker's datagrams are refused as malformed, never misread.
const VERSION: u8 = 2;
const MODE_INSECURE: u8 = 0;
const MODE_HMAC: u8 = 1;
/// Bytes before the payload.
pub const PREFIX_LEN: usize = 22;
/// Bytes after the payload in HMAC mode.
pub const TAG_LEN: usize = 32;
/// Shortest key we accept; memberlist-style keys are 16, 24 or 32 bytes, MetalLB's are longer.
pub const MIN_KEY_LEN: usize = 16;
/// Upper bound on remembered nonces; at hundreds of datagrams per second per node this covers
/// minutes, far more than the default window.
const MAX_NONCES: usize = 1 << 17;

/// The shared membership key. Its bytes never appear in Debug output or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct MembershipKey(Vec<u8>);

impl std::fmt::Debug for MembershipKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MembershipKey({} bytes)", self.0.len())
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum KeyError {
    #[error("membership key is {0} bytes; at least {MIN_KEY_LEN} are required")]
    TooShort(usize),
}

impl MembershipKey {
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<MembershipKey, KeyError> {
        let bytes = bytes.into();
        if bytes.len() < MIN_KEY_LEN {
            return Err(KeyError::TooShort(bytes.len()));
        }
        Ok(MembershipKey(bytes))
    }

    fn mac(&self) -> Hmac<Sha256> {
        Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length")
    }
}

/// Why a datagram was dropped before reaching the protocol.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone, Copy)]
pub enum AuthError {
    #[error("not a membership datagram (bad magic, version or length)")]
    Malformed,
    #[error("authenticated and unauthenticated speakers mixed (mode {0})")]
    WrongMode(u8),
    #[error("bad HMAC")]
    BadTag,
    #[error("timestamp outside the allowed clock skew")]
    Stale,
    #[error("replayed datagram")]
    Replay,
}

/// Seals outgoing and opens incoming datagrams; holds the replay cache.
#[derive(Debug)]
pub struct Sealer {
    key: Option<MembershipKey>,
    max_skew_ms: u64,
    seen: HashSet<u64>,
    expiry: VecDeque<(u64, u64)>,
}

impl Sealer {
    /// `key: None` is the insecure mode (no tag, still the freshness check).
    pub fn new(key: Option<MembershipKey>, max_skew_ms: u64) -> Sealer {
        Sealer {
            key,
            max_skew_ms,
            seen: HashSet::new(),
            expiry: VecDeque::new(),
        }
    }

    /// Frames `payload` for sending, at wall-clock `now_ms`, with a fresh random `nonce`.
    pub fn seal(&self, payload: &[u8], now_ms: u64, nonce: u64) -> Vec<u8> {
        let mut out = Vec::with_capacity(PREFIX_LEN + payload.len() + TAG_LEN);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(if self.key.is_some() {
            MODE_HMAC
        } else {
            MODE_INSECURE
        });
        out.extend_from_slice(&now_ms.to_be_bytes());
        out.extend_from_slice(&nonce.to_be_bytes());
        out.extend_from_slice(payload);
        if let Some(key) = &self.key {
            let mut mac = key.mac();
            mac.update(&out);
            out.extend_from_slice(&mac.finalize().into_bytes());
        }
        out
    }

    /// Checks a received datagram at wall-clock `now_ms`; returns its payload.
    pub fn open<'a>(&mut self, datagram: &'a [u8], now_ms: u64) -> Result<&'a [u8], AuthError> {
        self.open_with(datagram, now_ms, |_| true)
    }

    /// [`Sealer::open`], with the replay cache only for payloads `remember` accepts: messages
    /// that carry their own protection (sequence numbers, nonces of our own) stay out of it,
    /// so hundreds of heartbeats per second do not crowd out the membership traffic's nonces.
    pub fn open_with<'a>(
        &mut self,
        datagram: &'a [u8],
        now_ms: u64,
        remember: impl Fn(&[u8]) -> bool,
    ) -> Result<&'a [u8], AuthError> {
        if datagram.len() < PREFIX_LEN || &datagram[..4] != MAGIC || datagram[4] != VERSION {
            return Err(AuthError::Malformed);
        }
        let mode = datagram[5];
        let body_end = match (mode, &self.key) {
            (MODE_HMAC, Some(key)) => {
                if datagram.len() < PREFIX_LEN + TAG_LEN {
                    return Err(AuthError::Malformed);
                }
                let (body, tag) = datagram.split_at(datagram.len() - TAG_LEN);
                let mut mac = key.mac();
                mac.update(body);
                // verify_slice compares in constant time.
                mac.verify_slice(tag).map_err(|_| AuthError::BadTag)?;
                body.len()
            }
            (MODE_INSECURE, None) => datagram.len(),
            (m, _) => return Err(AuthError::WrongMode(m)),
        };
        let ts = u64::from_be_bytes(datagram[6..14].try_into().expect("8 bytes"));
        let nonce = u64::from_be_bytes(datagram[14..22].try_into().expect("8 bytes"));
        if ts.abs_diff(now_ms) > self.max_skew_ms {
            return Err(AuthError::Stale);
        }
        let payload = &datagram[PREFIX_LEN..body_end];
        if !remember(payload) {
            return Ok(payload);
        }
        self.forget_expired(now_ms);
        if self.seen.contains(&nonce) {
            return Err(AuthError::Replay);
        }
        if self.seen.len() >= MAX_NONCES {
            if let Some((_, old)) = self.expiry.pop_front() {
                self.seen.remove(&old);
            }
        }
        self.seen.insert(nonce);
        // A nonce must be remembered as long as its timestamp could still pass the window.
        self.expiry
            .push_back((ts.saturating_add(self.max_skew_ms), nonce));
        Ok(payload)
    }

    fn forget_expired(&mut self, now_ms: u64) {
        // Entries are pushed in arrival order, not strictly by expiry; scanning from the front
        // and stopping at the first live one is conservative (keeps some a little longer).
        while let Some(&(exp, nonce)) = self.expiry.front() {
            if exp >= now_ms {
                break;
            }
            self.expiry.pop_front();
            self.seen.remove(&nonce);
        }
    }

    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.seen.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> Option<MembershipKey> {
        Some(MembershipKey::new(vec![b; 32]).unwrap())
    }

    #[test]
    fn round_trip_with_key() {
        let tx = Sealer::new(key(1), 1000);
        let mut rx = Sealer::new(key(1), 1000);
        let d = tx.seal(b"hello", 5000, 42);
        assert_eq!(d.len(), PREFIX_LEN + 5 + TAG_LEN);
        assert_eq!(rx.open(&d, 5100).unwrap(), b"hello");
    }

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        // RFC 4231 test case 2 checks the primitive we build on (short key, so test the Mac
        // directly rather than through MembershipKey, which refuses short keys).
        let mut mac = Hmac::<Sha256>::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        let tag = mac.finalize().into_bytes();
        let hex: String = tag.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn wrong_key_flipped_bit_and_truncation_are_refused() {
        let tx = Sealer::new(key(1), 1000);
        let mut rx = Sealer::new(key(2), 1000);
        let d = tx.seal(b"hello", 5000, 1);
        assert_eq!(rx.open(&d, 5000), Err(AuthError::BadTag));
        let mut rx = Sealer::new(key(1), 1000);
        for i in 0..d.len() {
            let mut bad = d.clone();
            bad[i] ^= 0x01;
            assert!(rx.open(&bad, 5000).is_err(), "flip at {i} accepted");
        }
        for cut in 0..d.len() {
            assert!(rx.open(&d[..cut], 5000).is_err(), "cut at {cut} accepted");
        }
        // The untouched datagram still opens: failures did not poison the replay cache.
        assert!(rx.open(&d, 5000).is_ok());
    }

    #[test]
    fn replay_within_window_is_refused_and_stale_is_refused() {
        let tx = Sealer::new(key(1), 1000);
        let mut rx = Sealer::new(key(1), 1000);
        let d = tx.seal(b"x", 5000, 7);
        assert!(rx.open(&d, 5000).is_ok());
        assert_eq!(rx.open(&d, 5500), Err(AuthError::Replay));
        assert_eq!(rx.open(&d, 6001), Err(AuthError::Stale));
        assert_eq!(
            rx.open(&tx.seal(b"x", 9000, 8), 5000),
            Err(AuthError::Stale)
        );
    }

    #[test]
    fn payloads_left_out_of_the_replay_cache_are_still_authenticated() {
        let tx = Sealer::new(key(1), 1000);
        let mut rx = Sealer::new(key(1), 1000);
        let own = |p: &[u8]| p.first() != Some(&1);
        let fast = tx.seal(&[1, 9], 5000, 7);
        assert!(rx.open_with(&fast, 5000, own).is_ok());
        assert!(rx.open_with(&fast, 5001, own).is_ok(), "its own protection");
        assert_eq!(rx.remembered(), 0);
        let foca = tx.seal(&[0, 9], 5000, 8);
        assert!(rx.open_with(&foca, 5000, own).is_ok());
        assert_eq!(rx.open_with(&foca, 5001, own), Err(AuthError::Replay));
        let mut bad = fast.clone();
        bad[PREFIX_LEN] ^= 1;
        assert_eq!(rx.open_with(&bad, 5000, own), Err(AuthError::BadTag));
        assert_eq!(rx.open_with(&fast, 9000, own), Err(AuthError::Stale));
    }

    #[test]
    fn nonces_are_forgotten_after_the_window() {
        let tx = Sealer::new(key(1), 100);
        let mut rx = Sealer::new(key(1), 100);
        for i in 0..50u64 {
            assert!(rx.open(&tx.seal(b"x", 1000 + i, i), 1000 + i).is_ok());
        }
        assert_eq!(rx.remembered(), 50);
        assert!(rx.open(&tx.seal(b"x", 5000, 999), 5000).is_ok());
        assert_eq!(rx.remembered(), 1);
    }

    #[test]
    fn insecure_and_keyed_speakers_do_not_mix() {
        let insecure = Sealer::new(None, 1000);
        let mut keyed = Sealer::new(key(1), 1000);
        let d = insecure.seal(b"x", 0, 1);
        assert_eq!(d.len(), PREFIX_LEN + 1);
        assert_eq!(keyed.open(&d, 0), Err(AuthError::WrongMode(0)));
        let mut insecure_rx = Sealer::new(None, 1000);
        let d = keyed.seal(b"x", 0, 2);
        assert_eq!(insecure_rx.open(&d, 0), Err(AuthError::WrongMode(1)));
        assert_eq!(
            insecure_rx.open(&insecure.seal(b"y", 0, 3), 0).unwrap(),
            b"y"
        );
    }

    #[test]
    fn garbage_is_malformed() {
        let mut rx = Sealer::new(key(1), 1000);
        assert_eq!(rx.open(b"", 0), Err(AuthError::Malformed));
        assert_eq!(rx.open(&[0u8; 100], 0), Err(AuthError::Malformed));
    }

    #[test]
    fn short_keys_are_refused_and_debug_hides_the_key() {
        assert_eq!(MembershipKey::new(vec![1; 8]), Err(KeyError::TooShort(8)));
        let k = MembershipKey::new(b"0123456789abcdefXYZ".to_vec()).unwrap();
        assert_eq!(format!("{k:?}"), "MembershipKey(19 bytes)");
    }
}
