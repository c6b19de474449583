//! The tokio driver on loopback: two engines peering with each other, and a scripted raw-TCP
//! peer that sends bad input and checks the NOTIFICATION that comes back.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use ferrolb_bgp::packet::{Capability, DecodeContext, Family, Message, Open};
use ferrolb_bgp::{
    BgpEngine, DownReason, EngineConfig, PeerConfig, RouteAttributes, SessionEvent,
    SessionEventKind, ShutdownMode, State,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc::UnboundedReceiver;

const WAIT: Duration = Duration::from_secs(10);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

async fn next_event(rx: &mut UnboundedReceiver<SessionEvent>) -> SessionEvent {
    tokio::time::timeout(WAIT, rx.recv())
        .await
        .expect("no session event in time")
        .expect("event stream closed")
}

async fn engine(router_id: &str, listen: &str) -> (BgpEngine, UnboundedReceiver<SessionEvent>) {
    BgpEngine::start(EngineConfig {
        router_id: router_id.parse().unwrap(),
        listen: vec![listen.parse().unwrap()],
    })
    .await
    .unwrap()
}

fn host_routes(n: u32) -> Vec<(ipnet::IpNet, RouteAttributes)> {
    (0..n)
        .map(|i| {
            let a = std::net::Ipv4Addr::from(0x6440_0000u32 + i);
            (
                ipnet::IpNet::V4(ipnet::Ipv4Net::new(a, 32).unwrap()),
                RouteAttributes::default(),
            )
        })
        .collect()
}

#[tokio::test]
async fn two_engines_establish_and_exchange_routes() {
    // A listens on 127.0.0.1 and waits; B connects from 127.0.0.2.
    let (a, mut a_ev) = engine("192.0.2.1", "127.0.0.1:0").await;
    let port = a.listen_addrs()[0].port();
    let (b, mut b_ev) = engine("192.0.2.2", "127.0.0.2:0").await;
    let mut pa = PeerConfig::new(ip("127.0.0.2"), 65001, 65002);
    pa.passive = true;
    pa.hold_time = 9;
    a.add_peer(pa).unwrap();
    let mut pb = PeerConfig::new(ip("127.0.0.1"), 65002, 65001);
    pb.port = port;
    pb.source_address = Some(ip("127.0.0.2"));
    pb.hold_time = 30;
    b.add_peer(pb).unwrap();
    a.set_routes(ip("127.0.0.2"), host_routes(2000)).unwrap();

    let ev = next_event(&mut a_ev).await;
    let SessionEventKind::Up(info) = ev.kind else {
        panic!("{ev:?}")
    };
    assert_eq!(info.hold_time, 9);
    assert_eq!(info.peer_asn, 65002);
    assert!(info.four_octet_asn && info.extended_messages);
    assert!(matches!(
        next_event(&mut b_ev).await.kind,
        SessionEventKind::Up(_)
    ));

    // 2000 routes in one extended UPDATE plus two End-of-RIB markers.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let c = b.counters(ip("127.0.0.1")).unwrap();
        if c.updates_received >= 3 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{c:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ca = a.counters(ip("127.0.0.2")).unwrap();
    assert_eq!(ca.state, Some(State::Established));
    assert_eq!(ca.prefixes_announced, 2000);
    assert_eq!(ca.updates_sent, 1 + 2);

    // Withdraw everything: one more UPDATE.
    a.set_routes(ip("127.0.0.2"), Vec::new()).unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    while b.counters(ip("127.0.0.1")).unwrap().updates_received < 4 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(
        a.counters(ip("127.0.0.2")).unwrap().prefixes_withdrawn,
        2000
    );

    // Administrative shutdown with a message reaches the other side.
    a.shutdown(ShutdownMode::Cease(Some("maintenance".into())))
        .await;
    let ev = next_event(&mut b_ev).await;
    let SessionEventKind::Down(DownReason::NotificationReceived(n)) = ev.kind else {
        panic!("{ev:?}")
    };
    assert_eq!((n.code, n.subcode), (6, 2));
    assert_eq!(n.shutdown_message().as_deref(), Some("maintenance"));
    b.shutdown(ShutdownMode::Cease(None)).await;
}

/// A scripted peer: connects from `from` to the engine and speaks raw bytes.
async fn raw_peer(from: &str, to: SocketAddr) -> TcpStream {
    let s = TcpSocket::new_v4().unwrap();
    s.bind(SocketAddr::new(ip(from), 0)).unwrap();
    tokio::time::timeout(WAIT, s.connect(to))
        .await
        .unwrap()
        .unwrap()
}

async fn read_message(s: &mut TcpStream) -> Option<Message> {
    let mut head = [0u8; 19];
    tokio::time::timeout(WAIT, s.read_exact(&mut head))
        .await
        .ok()?
        .ok()?;
    let len = u16::from_be_bytes([head[16], head[17]]) as usize;
    let mut frame = head.to_vec();
    frame.resize(len, 0);
    tokio::time::timeout(WAIT, s.read_exact(&mut frame[19..]))
        .await
        .ok()?
        .ok()?;
    let ctx = DecodeContext {
        four_octet_asn: true,
        extended_messages: true,
        ibgp: false,
    };
    Message::decode(&frame, &ctx).ok()
}

/// Reads until a NOTIFICATION arrives (skipping OPEN / KEEPALIVE / UPDATE).
async fn read_notification(s: &mut TcpStream) -> ferrolb_bgp::Notification {
    for _ in 0..10 {
        match read_message(s).await {
            Some(Message::Notification(n)) => return n,
            Some(_) => continue,
            None => panic!("connection ended without NOTIFICATION"),
        }
    }
    panic!("no NOTIFICATION")
}

fn open_bytes(version: u8) -> Vec<u8> {
    let open = Open::new(
        65010,
        90,
        "192.0.2.99".parse().unwrap(),
        vec![
            Capability::Multiprotocol(Family::IPV4_UNICAST),
            Capability::FourOctetAsn(65010),
        ],
    );
    let mut b = Message::Open(open)
        .to_bytes(&DecodeContext::default())
        .unwrap();
    b[19] = version;
    b
}

async fn engine_with_raw_peers(
    peers: &[&str],
) -> (BgpEngine, UnboundedReceiver<SessionEvent>, SocketAddr) {
    let (e, ev) = engine("192.0.2.1", "127.0.0.1:0").await;
    for p in peers {
        let mut c = PeerConfig::new(ip(p), 65001, 65010);
        c.passive = true;
        e.add_peer(c).unwrap();
    }
    let addr = e.listen_addrs()[0];
    (e, ev, addr)
}

#[tokio::test]
async fn bad_input_gets_the_right_notification() {
    let (e, _ev, addr) =
        engine_with_raw_peers(&["127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6"]).await;

    // Unsupported version: 2/1 with the version we speak.
    let mut s = raw_peer("127.0.0.3", addr).await;
    s.write_all(&open_bytes(3)).await.unwrap();
    let n = read_notification(&mut s).await;
    assert_eq!((n.code, n.subcode, n.data.clone()), (2, 1, vec![0, 4]));

    // Wrong marker: 1/1.
    let mut s = raw_peer("127.0.0.4", addr).await;
    let mut bad = open_bytes(4);
    bad[0] = 0;
    s.write_all(&bad).await.unwrap();
    let n = read_notification(&mut s).await;
    assert_eq!((n.code, n.subcode), (1, 1));

    // Wrong length: 1/2 with the length.
    let mut s = raw_peer("127.0.0.5", addr).await;
    s.write_all(&[0xff; 16]).await.unwrap();
    s.write_all(&[0x00, 0x05, 0x04]).await.unwrap();
    let n = read_notification(&mut s).await;
    assert_eq!((n.code, n.subcode, n.data.clone()), (1, 2, vec![0, 5]));

    // Unknown well-known attribute once established: 3/2 with the attribute.
    let mut s = raw_peer("127.0.0.6", addr).await;
    s.write_all(&open_bytes(4)).await.unwrap();
    s.write_all(
        &Message::Keepalive
            .to_bytes(&DecodeContext::default())
            .unwrap(),
    )
    .await
    .unwrap();
    let mut upd = vec![0xff; 16];
    let attrs: &[u8] = &[0x40, 1, 1, 0, 0x40, 99, 1, 7];
    let body_len = 2 + 2 + attrs.len();
    upd.extend_from_slice(&((19 + body_len) as u16).to_be_bytes());
    upd.push(2);
    upd.extend_from_slice(&[0, 0]);
    upd.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
    upd.extend_from_slice(attrs);
    s.write_all(&upd).await.unwrap();
    let n = read_notification(&mut s).await;
    assert_eq!(
        (n.code, n.subcode, n.data.clone()),
        (3, 2, vec![0x40, 99, 1, 7])
    );

    // Connections from unknown addresses are refused without harm.
    let mut s = raw_peer("127.0.0.7", addr).await;
    let mut one = [0u8; 1];
    let r = tokio::time::timeout(WAIT, s.read(&mut one)).await.unwrap();
    assert!(matches!(r, Ok(0) | Err(_)));
    e.shutdown(ShutdownMode::Cease(None)).await;
}

#[tokio::test]
async fn bad_peer_as_is_refused_and_the_other_session_lives_on() {
    let (e, mut ev, addr) = engine_with_raw_peers(&["127.0.0.8", "127.0.0.9"]).await;
    // A good session on .8.
    let mut good = raw_peer("127.0.0.8", addr).await;
    good.write_all(&open_bytes(4)).await.unwrap();
    good.write_all(
        &Message::Keepalive
            .to_bytes(&DecodeContext::default())
            .unwrap(),
    )
    .await
    .unwrap();
    assert!(matches!(
        next_event(&mut ev).await.kind,
        SessionEventKind::Up(_)
    ));
    // A wrong AS on .9.
    let mut bad = raw_peer("127.0.0.9", addr).await;
    let open = Open::new(
        65099,
        90,
        "192.0.2.98".parse().unwrap(),
        vec![Capability::FourOctetAsn(65099)],
    );
    bad.write_all(
        &Message::Open(open)
            .to_bytes(&DecodeContext::default())
            .unwrap(),
    )
    .await
    .unwrap();
    let n = read_notification(&mut bad).await;
    assert_eq!(
        (n.code, n.subcode, n.data),
        (2, 2, 65099u16.to_be_bytes().to_vec())
    );
    assert_eq!(
        e.counters(ip("127.0.0.8")).unwrap().state,
        Some(State::Established)
    );
    e.shutdown(ShutdownMode::Cease(None)).await;
}

#[tokio::test]
async fn hold_timer_expiry_sends_notification() {
    let (e, mut ev, addr) = engine_with_raw_peers(&["127.0.0.10"]).await;
    let mut s = raw_peer("127.0.0.10", addr).await;
    let mut open = Open::new(
        65010,
        3,
        "192.0.2.97".parse().unwrap(),
        vec![Capability::FourOctetAsn(65010)],
    );
    open.hold_time = 3;
    s.write_all(
        &Message::Open(open)
            .to_bytes(&DecodeContext::default())
            .unwrap(),
    )
    .await
    .unwrap();
    s.write_all(
        &Message::Keepalive
            .to_bytes(&DecodeContext::default())
            .unwrap(),
    )
    .await
    .unwrap();
    assert!(matches!(
        next_event(&mut ev).await.kind,
        SessionEventKind::Up(_)
    ));
    // Stay silent (keep reading so our side can write) until the hold timer fires.
    let n = read_notification(&mut s).await;
    assert_eq!((n.code, n.subcode), (4, 0));
    let ev = next_event(&mut ev).await;
    assert!(matches!(
        ev.kind,
        SessionEventKind::Down(DownReason::NotificationSent(_))
    ));
    e.shutdown(ShutdownMode::Cease(None)).await;
}

#[tokio::test]
async fn send_hold_timer_closes_a_session_whose_peer_stopped_reading() {
    // RFC 9687: the peer keeps the TCP connection open but never reads.
    let (e, mut ev) = engine("192.0.2.1", "127.0.0.1:0").await;
    let mut c = PeerConfig::new(ip("127.0.0.11"), 65001, 65010);
    c.passive = true;
    c.send_hold_time = Some(Duration::from_secs(1));
    c.hold_time = 0; // so the hold timer cannot end the session first
    e.add_peer(c).unwrap();
    let addr = e.listen_addrs()[0];
    // A small receive window so the socket buffers fill quickly.
    let sock = TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(4096).unwrap();
    sock.bind(SocketAddr::new(ip("127.0.0.11"), 0)).unwrap();
    let mut s = tokio::time::timeout(WAIT, sock.connect(addr))
        .await
        .unwrap()
        .unwrap();
    let mut open = Open::new(
        65010,
        0,
        "192.0.2.96".parse().unwrap(),
        vec![
            Capability::Multiprotocol(Family::IPV4_UNICAST),
            Capability::FourOctetAsn(65010),
        ],
    );
    open.hold_time = 0;
    s.write_all(
        &Message::Open(open)
            .to_bytes(&DecodeContext::default())
            .unwrap(),
    )
    .await
    .unwrap();
    s.write_all(
        &Message::Keepalive
            .to_bytes(&DecodeContext::default())
            .unwrap(),
    )
    .await
    .unwrap();
    assert!(matches!(
        next_event(&mut ev).await.kind,
        SessionEventKind::Up(_)
    ));
    // More than the socket buffers hold: a million /32s, about 5 MB of UPDATEs.
    let t0 = tokio::time::Instant::now();
    e.set_routes(ip("127.0.0.11"), host_routes(1_000_000))
        .unwrap();
    let ev = next_event(&mut ev).await;
    let SessionEventKind::Down(DownReason::NotificationSent(n)) = ev.kind else {
        panic!("{ev:?}")
    };
    assert_eq!(n.code, 8, "Send Hold Timer Expired");
    eprintln!("closed {:?} after the routes were set", t0.elapsed());
    drop(s);
    e.shutdown(ShutdownMode::Cease(None)).await;
}
