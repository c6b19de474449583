//! BFD under BGP on loopback: two engines (A on 127.0.0.1, B on 127.0.0.2) with BFD at
//! 20 ms x 3, B's BFD packets to A passing through a relay in the test that can cut them, and
//! forged packets aimed at A's BFD port.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ferrolb_bgp::bfd::SessionState;
use ferrolb_bgp::packet::error::codes;
use ferrolb_bgp::{
    BfdAuth, BfdConfig, BfdPorts, BgpEngine, DownReason, EngineConfig, PeerConfig, RouteAttributes,
    SessionEvent, SessionEventKind,
};
use tokio::net::UdpSocket;
use tokio::sync::mpsc::UnboundedReceiver;

const WAIT: Duration = Duration::from_secs(10);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// A UDP port free right now on `addr`.
fn free_port(addr: &str) -> u16 {
    std::net::UdpSocket::bind(format!("{addr}:0"))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn next_event(rx: &mut UnboundedReceiver<SessionEvent>) -> SessionEvent {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("no session event in time")
        .expect("event stream closed")
}

async fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Forwards B's BFD packets (to 127.0.0.1:`listen`) on to A (`to`), from 127.0.0.2 with TTL
/// 255, while `open`.
async fn relay(listen: u16, to: SocketAddr, open: Arc<AtomicBool>) {
    let rx = UdpSocket::bind(("127.0.0.1", listen)).await.unwrap();
    let tx = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    tx.set_ttl(255).unwrap();
    let mut buf = [0u8; 512];
    loop {
        let Ok((n, _)) = rx.recv_from(&mut buf).await else {
            return;
        };
        if open.load(Ordering::Relaxed) {
            let _ = tx.send_to(&buf[..n], to).await;
        }
    }
}

struct Pair {
    a: BgpEngine,
    a_ev: UnboundedReceiver<SessionEvent>,
    b: BgpEngine,
    b_ev: UnboundedReceiver<SessionEvent>,
    a_bfd: SocketAddr,
    open: Arc<AtomicBool>,
}

async fn pair(hold_routes_until_up: bool, open: bool) -> Pair {
    pair_with(hold_routes_until_up, open, None, None).await
}

/// With BFD authentication keys for A and B.
async fn pair_with(
    hold_routes_until_up: bool,
    open: bool,
    auth_a: Option<BfdAuth>,
    auth_b: Option<BfdAuth>,
) -> Pair {
    let (a_port, b_port, relay_port) = (
        free_port("127.0.0.1"),
        free_port("127.0.0.2"),
        free_port("127.0.0.1"),
    );
    let open = Arc::new(AtomicBool::new(open));
    let a_bfd = SocketAddr::new(ip("127.0.0.1"), a_port);
    tokio::spawn(relay(relay_port, a_bfd, open.clone()));
    let (a, a_ev) = BgpEngine::start(EngineConfig {
        router_id: "192.0.2.1".parse().unwrap(),
        listen: vec!["127.0.0.1:0".parse().unwrap()],
    })
    .await
    .unwrap();
    let (b, b_ev) = BgpEngine::start(EngineConfig {
        router_id: "192.0.2.2".parse().unwrap(),
        listen: vec![],
    })
    .await
    .unwrap();
    // Each listens on its own port; B's packets go to the relay.
    a.set_bfd_ports(BfdPorts {
        single_hop: a_port,
        multihop: free_port("0.0.0.0"),
        peer_single_hop: b_port,
        peer_multihop: 4784,
    });
    b.set_bfd_ports(BfdPorts {
        single_hop: b_port,
        multihop: free_port("0.0.0.0"),
        peer_single_hop: relay_port,
        peer_multihop: 4784,
    });
    let bfd = BfdConfig {
        receive_interval: Duration::from_millis(20),
        transmit_interval: Duration::from_millis(20),
        detect_multiplier: 3,
        ..Default::default()
    };
    let mut pa = PeerConfig::new(ip("127.0.0.2"), 65001, 65002);
    pa.passive = true;
    pa.hold_time = 30;
    pa.bfd = Some(BfdConfig {
        hold_routes_until_up,
        auth: auth_a,
        ..bfd
    });
    a.add_peer(pa).unwrap();
    let mut pb = PeerConfig::new(ip("127.0.0.1"), 65002, 65001);
    pb.port = a.listen_addrs()[0].port();
    pb.source_address = Some(ip("127.0.0.2"));
    pb.hold_time = 30;
    pb.bfd = Some(BfdConfig {
        auth: auth_b,
        ..bfd
    });
    b.add_peer(pb).unwrap();
    a.set_routes(
        ip("127.0.0.2"),
        vec![(
            "198.51.100.7/32".parse().unwrap(),
            RouteAttributes::default(),
        )],
    )
    .unwrap();
    Pair {
        a,
        a_ev,
        b,
        b_ev,
        a_bfd,
        open,
    }
}

fn bfd_state(e: &BgpEngine, peer: &str) -> Option<SessionState> {
    e.bfd_counters(ip(peer)).and_then(|c| c.state)
}

#[tokio::test]
async fn bfd_comes_up_and_its_loss_ends_the_bgp_session_at_once() {
    let mut p = pair(false, true).await;
    assert!(matches!(
        next_event(&mut p.a_ev).await.kind,
        SessionEventKind::Up(_)
    ));
    assert!(matches!(
        next_event(&mut p.b_ev).await.kind,
        SessionEventKind::Up(_)
    ));
    wait_until("BFD up on both", || {
        bfd_state(&p.a, "127.0.0.2") == Some(SessionState::Up)
            && bfd_state(&p.b, "127.0.0.1") == Some(SessionState::Up)
    })
    .await;
    let c = p.a.bfd_counters(ip("127.0.0.2")).unwrap();
    assert_eq!((c.up_events, c.down_events, c.dropped), (1, 0, 0));
    assert!(
        c.control_packets_in > 0 && c.control_packets_out > 0,
        "{c:?}"
    );

    // After the Poll sequences: A detects B within 3 x 20 ms.
    wait_until("20 ms intervals in use", || {
        let c = p.a.bfd_counters(ip("127.0.0.2")).unwrap();
        c.detection_time == Duration::from_millis(60) && c.tx_interval == Duration::from_millis(20)
    })
    .await;

    // New intervals for A's side only: applied through a Poll sequence, BGP stays up.
    let mut slower = PeerConfig::new(ip("127.0.0.2"), 65001, 65002);
    slower.passive = true;
    slower.hold_time = 30;
    slower.bfd = Some(BfdConfig {
        receive_interval: Duration::from_millis(20),
        transmit_interval: Duration::from_millis(40),
        detect_multiplier: 3,
        ..Default::default()
    });
    p.a.update_peer(slower).await.unwrap();
    wait_until("B detects A on 3 x 40 ms", || {
        p.b.bfd_counters(ip("127.0.0.1")).unwrap().detection_time == Duration::from_millis(120)
    })
    .await;
    assert_eq!(
        p.a.bfd_counters(ip("127.0.0.2")).unwrap().tx_interval,
        Duration::from_millis(40)
    );
    assert!(p.a_ev.try_recv().is_err(), "no BGP event on a timer change");
    assert_eq!(p.a.bfd_counters(ip("127.0.0.2")).unwrap().up_events, 1);

    // B's packets stop reaching A: A's BFD times out (60 ms), A ends BGP with Cease / BFD Down
    // long before the 30 s hold time.
    let cut = tokio::time::Instant::now();
    p.open.store(false, Ordering::Relaxed);
    let ev = next_event(&mut p.a_ev).await;
    let elapsed = cut.elapsed();
    let SessionEventKind::Down(DownReason::NotificationSent(n)) = ev.kind else {
        panic!("{ev:?}")
    };
    assert_eq!((n.code, n.subcode), (codes::CEASE, codes::BFD_DOWN));
    assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
    let ev = next_event(&mut p.b_ev).await;
    let SessionEventKind::Down(DownReason::NotificationReceived(n)) = ev.kind else {
        panic!("{ev:?}")
    };
    assert_eq!(n.subcode, codes::BFD_DOWN);
    let c = p.a.bfd_counters(ip("127.0.0.2")).unwrap();
    assert_eq!(c.down_events, 1);

    // The path is back: BFD and BGP come up again by themselves.
    p.open.store(true, Ordering::Relaxed);
    assert!(matches!(
        next_event(&mut p.a_ev).await.kind,
        SessionEventKind::Up(_)
    ));
    wait_until("BFD up again", || {
        bfd_state(&p.a, "127.0.0.2") == Some(SessionState::Up)
    })
    .await;
}

#[tokio::test]
async fn routes_wait_for_bfd_when_configured() {
    let mut p = pair(true, false).await;
    // BGP is established (B says so), but A announces nothing while BFD cannot come up.
    assert!(matches!(
        next_event(&mut p.b_ev).await.kind,
        SessionEventKind::Up(_)
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        p.a_ev.try_recv().is_err(),
        "A must not declare the session up"
    );
    assert_eq!(p.b.counters(ip("127.0.0.1")).unwrap().updates_received, 0);
    assert_ne!(bfd_state(&p.a, "127.0.0.2"), Some(SessionState::Up));
    p.open.store(true, Ordering::Relaxed);
    assert!(matches!(
        next_event(&mut p.a_ev).await.kind,
        SessionEventKind::Up(_)
    ));
    wait_until("the route and End-of-RIB reach B", || {
        p.b.counters(ip("127.0.0.1")).unwrap().updates_received >= 2
    })
    .await;
}

/// Sends `bytes` to A's BFD port from `from` with `ttl`.
async fn forge(from: &str, to: SocketAddr, ttl: u32, bytes: &[u8]) {
    let s = UdpSocket::bind(format!("{from}:0")).await.unwrap();
    s.set_ttl(ttl).unwrap();
    s.send_to(bytes, to).await.unwrap();
}

#[tokio::test]
async fn forged_and_malformed_packets_are_dropped_and_counted() {
    let mut p = pair(false, true).await;
    assert!(matches!(
        next_event(&mut p.a_ev).await.kind,
        SessionEventKind::Up(_)
    ));
    wait_until("BFD up", || {
        bfd_state(&p.a, "127.0.0.2") == Some(SessionState::Up)
    })
    .await;
    // A valid-looking Down packet that would take the session down if accepted.
    let mut down = vec![0x20, 0x40, 3, 24];
    down.extend_from_slice(&7u32.to_be_bytes());
    down.extend_from_slice(&0u32.to_be_bytes());
    down.extend_from_slice(&[0, 0, 0x4e, 0x20, 0, 0, 0x4e, 0x20, 0, 0, 0, 0]);
    let before = p.a.bfd_counters(ip("127.0.0.2")).unwrap().dropped;
    // From the peer's address: TTL 64 (more than one hop away), bad version, short,
    // bad length, a discriminator that is not A's.
    forge("127.0.0.2", p.a_bfd, 64, &down).await;
    let mut v = down.clone();
    v[0] = 0x40;
    forge("127.0.0.2", p.a_bfd, 255, &v).await;
    forge("127.0.0.2", p.a_bfd, 255, &down[..20]).await;
    let mut l = down.clone();
    l[3] = 200;
    forge("127.0.0.2", p.a_bfd, 255, &l).await;
    let mut d = down.clone();
    d[1] = 0xc0; // Up
    d[8..12].copy_from_slice(&0xdead_beefu32.to_be_bytes());
    forge("127.0.0.2", p.a_bfd, 255, &d).await;
    // From an address that is no peer.
    forge("127.0.0.3", p.a_bfd, 255, &down).await;
    wait_until("all counted", || {
        p.a.bfd_counters(ip("127.0.0.2")).unwrap().dropped >= before + 5
            && p.a.bfd_dropped_unknown() >= 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(bfd_state(&p.a, "127.0.0.2"), Some(SessionState::Up));
    let c = p.a.bfd_counters(ip("127.0.0.2")).unwrap();
    assert_eq!((c.up_events, c.down_events), (1, 0), "{c:?}");
    assert!(p.a_ev.try_recv().is_err(), "BGP undisturbed");
}

#[tokio::test]
async fn authenticated_bfd_comes_up_and_a_wrong_key_keeps_it_down() {
    let key = |k: &[u8]| Some(BfdAuth::new(3, k, true).unwrap());
    let mut p = pair_with(false, true, key(b"rack-1"), key(b"rack-1")).await;
    assert!(matches!(
        next_event(&mut p.a_ev).await.kind,
        SessionEventKind::Up(_)
    ));
    wait_until("authenticated BFD up", || {
        bfd_state(&p.a, "127.0.0.2") == Some(SessionState::Up)
            && bfd_state(&p.b, "127.0.0.1") == Some(SessionState::Up)
    })
    .await;
    assert_eq!(p.a.bfd_counters(ip("127.0.0.2")).unwrap().dropped, 0);

    let mut p = pair_with(false, true, key(b"rack-1"), key(b"rack-2")).await;
    assert!(matches!(
        next_event(&mut p.a_ev).await.kind,
        SessionEventKind::Up(_)
    ));
    wait_until("wrong-key packets dropped", || {
        p.a.bfd_counters(ip("127.0.0.2")).unwrap().dropped >= 3
    })
    .await;
    assert_ne!(bfd_state(&p.a, "127.0.0.2"), Some(SessionState::Up));
    // BFD never came up, so BGP stays (no BFD Down to act on).
    assert!(p.a_ev.try_recv().is_err());
}
