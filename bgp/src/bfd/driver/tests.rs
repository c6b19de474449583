use super::*;
use crate::bfd::packet::Diagnostic;

fn entry(peer: &str, multihop: bool, min_ttl: u8) -> Entry {
    let (tx, _rx) = mpsc::unbounded_channel();
    Entry {
        peer: peer.parse().unwrap(),
        echo_local: None,
        scope: None,
        multihop,
        min_ttl,
        tx,
        counters: Arc::default(),
    }
}

/// Sessions 1 (192.0.2.2 single hop), 2 (203.0.113.2 multihop, minimum TTL 254) and 3
/// (192.0.2.2 single hop in VRF blue).
fn demux() -> Demux {
    let mut d = Demux::default();
    d.by_disc.insert(1, entry("192.0.2.2", false, 255));
    d.by_peer
        .insert(("192.0.2.2".parse().unwrap(), false, None), 1);
    d.by_disc.insert(2, entry("203.0.113.2", true, 254));
    d.by_peer
        .insert(("203.0.113.2".parse().unwrap(), true, None), 2);
    let mut blue = entry("192.0.2.2", false, 255);
    blue.scope = Some("blue".into());
    d.by_disc.insert(3, blue);
    d.by_peer.insert(
        ("192.0.2.2".parse().unwrap(), false, Some("blue".into())),
        3,
    );
    d
}

fn packet(your: u32) -> Vec<u8> {
    ControlPacket {
        diagnostic: Diagnostic::None,
        state: if your == 0 {
            SessionState::Down
        } else {
            SessionState::Up
        },
        poll: false,
        final_: false,
        control_plane_independent: false,
        demand: false,
        detect_mult: 3,
        my_discriminator: 99,
        your_discriminator: your,
        desired_min_tx_us: 50_000,
        required_min_rx_us: 50_000,
        required_min_echo_rx_us: 0,
        auth: None,
    }
    .encode()
}

fn routed(
    d: &Demux,
    bytes: &[u8],
    src: &str,
    ttl: Option<u8>,
    mh: bool,
) -> Result<IpAddr, (Option<IpAddr>, DropReason)> {
    route(d, bytes, src.parse().unwrap(), ttl, mh, None)
        .map(|(e, _)| e.peer)
        .map_err(|(e, why)| (e.map(|e| e.peer), why))
}

/// The discriminator of the session a packet received in `vrf` goes to.
fn routed_in(d: &Demux, bytes: &[u8], src: &str, vrf: Option<&str>) -> Result<u32, DropReason> {
    route(d, bytes, src.parse().unwrap(), Some(255), false, vrf)
        .map(|(e, _)| e.counters.owner.load(Ordering::Relaxed))
        .map_err(|(_, why)| why)
}

#[test]
fn the_same_address_in_a_vrf_is_another_session() {
    let d = demux();
    d.by_disc[&1].counters.owner.store(1, Ordering::Relaxed);
    d.by_disc[&3].counters.owner.store(3, Ordering::Relaxed);
    assert_eq!(routed_in(&d, &packet(0), "192.0.2.2", None), Ok(1));
    assert_eq!(routed_in(&d, &packet(0), "192.0.2.2", Some("blue")), Ok(3));
    assert_eq!(routed_in(&d, &packet(3), "192.0.2.2", Some("blue")), Ok(3));
    assert_eq!(
        routed_in(&d, &packet(1), "192.0.2.2", Some("blue")),
        Err(DropReason::WrongSource),
        "a discriminator of the default VRF's session, received in blue"
    );
    assert_eq!(
        routed_in(&d, &packet(0), "192.0.2.2", Some("red")),
        Err(DropReason::UnknownPeer)
    );
}

#[test]
fn single_hop_needs_ttl_255_multihop_the_minimum() {
    let d = demux();
    let sh: IpAddr = "192.0.2.2".parse().unwrap();
    let mh: IpAddr = "203.0.113.2".parse().unwrap();
    assert_eq!(
        routed(&d, &packet(1), "192.0.2.2", Some(255), false),
        Ok(sh)
    );
    assert_eq!(
        routed(&d, &packet(1), "192.0.2.2", Some(254), false),
        Err((Some(sh), DropReason::Ttl(Some(254))))
    );
    assert_eq!(
        routed(&d, &packet(1), "192.0.2.2", None, false),
        Err((Some(sh), DropReason::Ttl(None)))
    );
    assert_eq!(
        routed(&d, &packet(2), "203.0.113.2", Some(254), true),
        Ok(mh)
    );
    assert_eq!(
        routed(&d, &packet(2), "203.0.113.2", Some(253), true),
        Err((Some(mh), DropReason::Ttl(Some(253))))
    );
}

#[test]
fn sessions_are_found_by_discriminator_then_by_source() {
    let d = demux();
    let sh: IpAddr = "192.0.2.2".parse().unwrap();
    // Your Discriminator 0 (the peer's first packets): by source address and port kind.
    assert_eq!(
        routed(&d, &packet(0), "192.0.2.2", Some(255), false),
        Ok(sh)
    );
    assert_eq!(
        routed(&d, &packet(0), "192.0.2.2", Some(255), true),
        Err((None, DropReason::UnknownPeer)),
        "no multihop session with that peer"
    );
    // The multihop session's discriminator from the single-hop peer: a spoof.
    assert_eq!(
        routed(&d, &packet(2), "192.0.2.2", Some(255), false),
        Err((Some(sh), DropReason::WrongSource))
    );
    assert_eq!(
        routed(&d, &packet(7), "192.0.2.2", Some(255), false),
        Err((Some(sh), DropReason::UnknownDiscriminator))
    );
    assert_eq!(
        routed(&d, &packet(1), "192.0.2.99", Some(255), false),
        Err((None, DropReason::WrongSource))
    );
    // IPv4-mapped sources count as IPv4.
    assert_eq!(
        routed(&d, &packet(1), "::ffff:192.0.2.2", Some(255), false),
        Ok(sh)
    );
}

#[test]
fn undecodable_packets_are_blamed_on_the_sender() {
    let d = demux();
    let mut b = packet(1);
    b[0] = 0x60;
    assert_eq!(
        routed(&d, &b, "192.0.2.2", Some(255), false),
        Err((
            Some("192.0.2.2".parse().unwrap()),
            DropReason::Decode(crate::bfd::packet::DecodeError::BadVersion(3))
        ))
    );
}

#[test]
fn one_link_local_address_on_two_links_is_two_sessions() {
    let mut d = Demux::default();
    let ll = "fe80::1";
    for (disc, link) in [(7, "eth1"), (8, "eth2")] {
        let mut e = entry(ll, false, 255);
        e.scope = Some(link.into());
        e.counters.owner.store(disc, Ordering::Relaxed);
        d.by_disc.insert(disc, e);
        d.by_peer
            .insert((ll.parse().unwrap(), false, Some(link.into())), disc);
    }
    assert_eq!(routed_in(&d, &packet(0), ll, Some("eth1")), Ok(7));
    assert_eq!(routed_in(&d, &packet(0), ll, Some("eth2")), Ok(8));
    assert_eq!(
        routed_in(&d, &packet(7), ll, Some("eth2")),
        Err(DropReason::WrongSource),
        "eth1's session, on eth2"
    );
}
