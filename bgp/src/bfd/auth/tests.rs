use super::*;
use crate::bfd::packet::{Diagnostic, SessionState};

fn up() -> ControlPacket {
    ControlPacket {
        diagnostic: Diagnostic::None,
        state: SessionState::Up,
        poll: false,
        final_: false,
        control_plane_independent: false,
        demand: false,
        detect_mult: 3,
        my_discriminator: 0x53db_8e05,
        your_discriminator: 0xbd29_04d7,
        desired_min_tx_us: 50_000,
        required_min_rx_us: 50_000,
        required_min_echo_rx_us: 0,
        auth: None,
    }
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// The same packet signed by an independent SHA1 (Python's hashlib over header, auth header
/// and the zero-padded key): Meticulous Keyed SHA1, key id 7, key "ferrolb", sequence
/// 0x01020304.
const SIGNED: &str = "20c4033453db8e05bd2904d70000c3500000c35000000000051c070001020304247b0c77312a403561e65bf38605c13293c10ad1";

#[test]
fn signing_matches_an_independent_sha1() {
    let a = BfdAuth::new(7, b"ferrolb", true).unwrap();
    let mut p = up();
    a.sign(&mut p, 0x0102_0304);
    assert_eq!(p.encode(), hex(SIGNED));
    let decoded = ControlPacket::decode(&hex(SIGNED)).unwrap();
    let mut rx = RxSequence::default();
    assert_eq!(a.verify(&decoded, &mut rx, 3), Ok(()));
    assert_eq!(
        rx,
        RxSequence {
            known: true,
            last: 0x0102_0304
        }
    );
}

#[test]
fn tampering_wrong_keys_and_replays_are_refused() {
    let a = BfdAuth::new(7, b"ferrolb", true).unwrap();
    let signed = |seq| {
        let mut p = up();
        a.sign(&mut p, seq);
        p
    };
    let mut rx = RxSequence::default();
    a.verify(&signed(10), &mut rx, 3).unwrap();
    let mut changed = signed(11);
    changed.desired_min_tx_us = 1;
    assert_eq!(a.verify(&changed, &mut rx, 3), Err(AuthError::BadDigest));
    let other = BfdAuth::new(7, b"ferroLB", true).unwrap();
    assert_eq!(
        other.verify(&signed(11), &mut rx, 3),
        Err(AuthError::BadDigest)
    );
    let other_id = BfdAuth::new(8, b"ferrolb", true).unwrap();
    assert_eq!(
        other_id.verify(&signed(11), &mut rx, 3),
        Err(AuthError::WrongKeyId(7))
    );
    let keyed = BfdAuth::new(7, b"ferrolb", false).unwrap();
    assert_eq!(
        keyed.verify(&signed(11), &mut rx, 3),
        Err(AuthError::WrongType(METICULOUS_KEYED_SHA1))
    );
    assert_eq!(a.verify(&up(), &mut rx, 3), Err(AuthError::Missing));
    // Meticulous: the same number again is a replay; 3 x 3 ahead is the limit.
    assert_eq!(
        a.verify(&signed(10), &mut rx, 3),
        Err(AuthError::Replay(10))
    );
    assert_eq!(
        a.verify(&signed(20), &mut rx, 3),
        Err(AuthError::Replay(20))
    );
    assert_eq!(a.verify(&signed(19), &mut rx, 3), Ok(()));
    assert_eq!(rx.last, 19);
    // Non-meticulous accepts a repeat; both wrap around.
    let mut rx = RxSequence {
        known: true,
        last: u32::MAX,
    };
    let mut p = up();
    keyed.sign(&mut p, u32::MAX);
    assert_eq!(keyed.verify(&p, &mut rx, 3), Ok(()));
    keyed.sign(&mut p, 1);
    assert_eq!(keyed.verify(&p, &mut rx, 3), Ok(()));
    assert_eq!(
        a.verify(
            &signed(0),
            &mut RxSequence {
                known: true,
                last: u32::MAX
            },
            3
        ),
        Ok(())
    );
}

#[test]
fn keys_have_one_to_twenty_bytes_and_never_print() {
    assert!(BfdAuth::new(1, b"", false).is_err());
    assert!(BfdAuth::new(1, &[7; 21], false).is_err());
    let a = BfdAuth::new(1, &[b'k'; 20], false).unwrap();
    assert!(!format!("{a:?}").contains("kkkk"));
}
