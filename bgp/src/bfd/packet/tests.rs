use super::*;
use proptest::prelude::*;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

// Captured from FRR 8.4 bfdd (192.0.2.2, 203.0.113.2) and FerroLB (192.0.2.1, 203.0.113.1)
// on the router side of e2e/tests/bfd_frr.rs (FERROLB_BFD_CAPTURE=file.pcap); frame numbers
// of that capture.

/// Frame 26, FRR single hop: Down, diag 3, mult 3, 1 s / 1 s, echo 50 ms, your disc 0.
const FRR_DOWN: &str = "2340031879793fe900000000000f4240000f42400000c350";
/// Frame 34, FRR single hop: Init.
const FRR_INIT: &str = "20800318bd2904d753db8e05000f4240000f42400000c350";
/// Frame 39, FRR single hop: Up with Poll, 50 ms / 50 ms.
const FRR_UP_POLL: &str = "20e00318bd2904d753db8e050000c3500000c3500000c350";
/// Frame 40, FRR single hop: Up with Final.
const FRR_UP_FINAL: &str = "20d00318bd2904d753db8e050000c3500000c3500000c350";
/// Frame 77, FRR multihop after our node died: Down, diag 1 (detection time expired).
const FRR_DOWN_EXPIRED: &str = "214003187571a022000000000000c3500000c3500000c350";
/// Frame 36, ours single hop: Up with Poll, 50 ms / 50 ms, no echo.
const OURS_UP_POLL: &str = "20e0031853db8e05bd2904d70000c3500000c35000000000";
/// Frame 27, ours single hop: Down, slow start (1 s tx), 50 ms rx.
const OURS_DOWN: &str = "2040031853db8e0500000000000f42400000c35000000000";

#[test]
fn frr_vectors_decode_to_what_bfdd_sent() {
    let p = ControlPacket::decode(&hex(FRR_DOWN)).unwrap();
    assert_eq!(
        p,
        ControlPacket {
            diagnostic: Diagnostic::NeighborSignaledDown,
            state: SessionState::Down,
            poll: false,
            final_: false,
            control_plane_independent: false,
            demand: false,
            detect_mult: 3,
            my_discriminator: 0x7979_3fe9,
            your_discriminator: 0,
            desired_min_tx_us: 1_000_000,
            required_min_rx_us: 1_000_000,
            required_min_echo_rx_us: 50_000,
            auth: None,
        }
    );
    let p = ControlPacket::decode(&hex(FRR_INIT)).unwrap();
    assert_eq!(p.state, SessionState::Init);
    assert_eq!(p.your_discriminator, 0x53db_8e05);
    let p = ControlPacket::decode(&hex(FRR_UP_POLL)).unwrap();
    assert!(p.poll && !p.final_);
    assert_eq!(
        (p.desired_min_tx_us, p.required_min_rx_us),
        (50_000, 50_000)
    );
    let p = ControlPacket::decode(&hex(FRR_UP_FINAL)).unwrap();
    assert!(!p.poll && p.final_ && p.state == SessionState::Up);
    let p = ControlPacket::decode(&hex(FRR_DOWN_EXPIRED)).unwrap();
    assert_eq!(p.diagnostic, Diagnostic::ControlDetectionTimeExpired);
    assert_eq!(p.your_discriminator, 0);
}

#[test]
fn every_vector_encodes_back_to_the_same_bytes() {
    for v in [
        FRR_DOWN,
        FRR_INIT,
        FRR_UP_POLL,
        FRR_UP_FINAL,
        FRR_DOWN_EXPIRED,
        OURS_UP_POLL,
        OURS_DOWN,
    ] {
        let b = hex(v);
        assert_eq!(ControlPacket::decode(&b).unwrap().encode(), b, "{v}");
    }
}

#[test]
fn our_packets_encode_as_captured() {
    let up = ControlPacket {
        diagnostic: Diagnostic::None,
        state: SessionState::Up,
        poll: true,
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
    };
    assert_eq!(up.encode(), hex(OURS_UP_POLL));
    let down = ControlPacket {
        state: SessionState::Down,
        poll: false,
        your_discriminator: 0,
        desired_min_tx_us: 1_000_000,
        ..up
    };
    assert_eq!(down.encode(), hex(OURS_DOWN));
}

#[test]
fn bad_packets_are_rejected_with_the_reason() {
    let good = hex(FRR_UP_POLL);
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = good.clone();
        f(&mut b);
        ControlPacket::decode(&b)
    };
    assert_eq!(
        ControlPacket::decode(&good[..23]),
        Err(DecodeError::TooShort)
    );
    assert_eq!(ControlPacket::decode(&[]), Err(DecodeError::TooShort));
    assert_eq!(with(&|b| b[0] = 0x40), Err(DecodeError::BadVersion(2)));
    assert_eq!(with(&|b| b[0] = 0x00), Err(DecodeError::BadVersion(0)));
    assert_eq!(
        with(&|b| b[3] = 20),
        Err(DecodeError::BadLength {
            field: 20,
            received: 24
        })
    );
    assert_eq!(
        with(&|b| b[3] = 48),
        Err(DecodeError::BadLength {
            field: 48,
            received: 24
        })
    );
    assert_eq!(with(&|b| b[2] = 0), Err(DecodeError::ZeroDetectMult));
    assert_eq!(with(&|b| b[1] |= 1), Err(DecodeError::Multipoint));
    assert_eq!(
        with(&|b| b[4..8].fill(0)),
        Err(DecodeError::ZeroMyDiscriminator)
    );
    assert_eq!(
        with(&|b| b[8..12].fill(0)),
        Err(DecodeError::ZeroYourDiscriminator(SessionState::Up))
    );
    // A bit without room for the auth header.
    assert_eq!(
        with(&|b| b[1] |= 4),
        Err(DecodeError::BadLength {
            field: 24,
            received: 24
        })
    );
    // Auth length that disagrees with the packet length.
    assert_eq!(
        with(&|b| {
            b[1] |= 4;
            b[3] = 28;
            b.extend_from_slice(&[1, 5, 0, 0]);
        }),
        Err(DecodeError::BadAuthLength(5))
    );
}

#[test]
fn padding_after_the_length_is_ignored_and_auth_is_kept() {
    let mut b = hex(FRR_UP_FINAL);
    b.extend_from_slice(&[0xff; 8]);
    assert_eq!(
        ControlPacket::decode(&b).unwrap(),
        ControlPacket::decode(&hex(FRR_UP_FINAL)).unwrap()
    );
    // Simple password auth (type 1): key id 1, "secret".
    let mut a = hex(FRR_UP_FINAL);
    a[1] |= 4;
    a[3] = 24 + 9;
    a.extend_from_slice(&[1, 9, 1]);
    a.extend_from_slice(b"secret");
    let p = ControlPacket::decode(&a).unwrap();
    assert_eq!(p.auth, Some((1, [&[1u8][..], b"secret"].concat())));
    assert_eq!(p.encode(), a);
}

#[test]
fn diagnostics_round_trip() {
    for c in 0..32u8 {
        assert_eq!(Diagnostic::from_code(c).code(), c);
    }
}

fn any_packet() -> impl Strategy<Value = ControlPacket> {
    (
        (0u8..32, 0u8..4, any::<[bool; 4]>(), 1u8..=255),
        (
            1u32..,
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
            any::<u32>(),
        ),
        proptest::option::of((any::<u8>(), proptest::collection::vec(any::<u8>(), 0..20))),
    )
        .prop_map(
            |((diag, sta, flags, mult), (my, your, tx, rx, echo), auth)| {
                let state = SessionState::from_bits(sta);
                let your = if your == 0 && state > SessionState::Down {
                    1
                } else {
                    your
                };
                ControlPacket {
                    diagnostic: Diagnostic::from_code(diag),
                    state,
                    poll: flags[0],
                    final_: flags[1],
                    control_plane_independent: flags[2],
                    demand: flags[3],
                    detect_mult: mult,
                    my_discriminator: my,
                    your_discriminator: your,
                    desired_min_tx_us: tx,
                    required_min_rx_us: rx,
                    required_min_echo_rx_us: echo,
                    auth,
                }
            },
        )
}

proptest! {
    #[test]
    fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
        let _ = ControlPacket::decode(&bytes);
    }

    #[test]
    fn valid_packets_survive_a_round_trip(p in any_packet()) {
        prop_assert_eq!(ControlPacket::decode(&p.encode()), Ok(p));
    }
}
