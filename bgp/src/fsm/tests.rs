//! Clock-free tests of every FSM transition and error.

use super::*;
use crate::packet::{RouteRefresh, Update};

const US: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
const LOW_PEER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const HIGH_PEER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 200);

fn cfg() -> FsmConfig {
    let mut c = FsmConfig::new(64512, 65001, US);
    c.hold_time = 90;
    c.connect_retry = Duration::from_secs(5);
    c.idle_hold = Duration::from_secs(1);
    c.idle_hold_max = Duration::from_secs(8);
    c
}

fn peer_open(asn: u32, hold: u16, id: Ipv4Addr) -> Open {
    Open::new(
        asn,
        hold,
        id,
        vec![
            Capability::Multiprotocol(Family::IPV4_UNICAST),
            Capability::Multiprotocol(Family::IPV6_UNICAST),
            Capability::RouteRefresh,
            Capability::FourOctetAsn(asn),
            Capability::ExtendedMessage,
        ],
    )
}

fn recv(conn: ConnId, m: Message) -> Input {
    Input::Received { conn, message: m }
}

fn sent_notification(out: &[Output], conn: ConnId) -> Option<Notification> {
    out.iter().find_map(|o| match o {
        Output::Send(c, Message::Notification(n)) if *c == conn => Some(n.clone()),
        _ => None,
    })
}

fn has(out: &[Output], want: &Output) -> bool {
    out.contains(want)
}

fn down(out: &[Output]) -> Option<DownReason> {
    out.iter().find_map(|o| match o {
        Output::Down(r) => Some(r.clone()),
        _ => None,
    })
}

/// Drives a fresh FSM to Established on connection 1 (outbound).
fn established(c: FsmConfig) -> Fsm {
    let mut fsm = Fsm::new(c);
    fsm.process(Input::Start);
    fsm.process(Input::TcpConnected {
        conn: 1,
        inbound: false,
    });
    fsm.process(recv(1, Message::Open(peer_open(65001, 30, LOW_PEER))));
    let out = fsm.process(recv(1, Message::Keepalive));
    assert!(out.iter().any(|o| matches!(o, Output::Established(_))));
    assert_eq!(fsm.state(), State::Established);
    fsm
}

#[test]
fn idle_until_started() {
    let fsm = Fsm::new(cfg());
    assert_eq!(fsm.state(), State::Idle);
}

#[test]
fn start_active_connects_and_arms_connect_retry() {
    let mut fsm = Fsm::new(cfg());
    let out = fsm.process(Input::Start);
    assert_eq!(
        out,
        vec![
            Output::Connect,
            Output::StartTimer(Timer::ConnectRetry, Duration::from_secs(5))
        ]
    );
    assert_eq!(fsm.state(), State::Connect);
    // A second start changes nothing.
    assert!(fsm.process(Input::Start).is_empty());
}

#[test]
fn start_passive_waits_in_active() {
    let mut c = cfg();
    c.passive = true;
    let mut fsm = Fsm::new(c);
    assert!(fsm.process(Input::Start).is_empty());
    assert_eq!(fsm.state(), State::Active);
    // ConnectRetry never makes a passive peer connect.
    assert!(fsm
        .process(Input::TimerExpired(Timer::ConnectRetry))
        .is_empty());
    let out = fsm.process(Input::TcpConnected {
        conn: 7,
        inbound: true,
    });
    assert!(matches!(
        out.first(),
        Some(Output::StopTimer(Timer::ConnectRetry)) | Some(Output::Send(7, Message::Open(_)))
    ));
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Send(7, Message::Open(_)))));
    assert_eq!(fsm.state(), State::OpenSent);
}

#[test]
fn idle_refuses_connections() {
    let mut fsm = Fsm::new(cfg());
    assert_eq!(
        fsm.process(Input::TcpConnected {
            conn: 3,
            inbound: true
        }),
        vec![Output::Close(3)]
    );
    assert_eq!(fsm.state(), State::Idle);
}

#[test]
fn connect_failure_goes_active_then_retries_on_connect_retry() {
    let mut fsm = Fsm::new(cfg());
    fsm.process(Input::Start);
    assert!(fsm.process(Input::TcpFailed { conn: None }).is_empty());
    assert_eq!(fsm.state(), State::Active);
    let out = fsm.process(Input::TimerExpired(Timer::ConnectRetry));
    assert_eq!(
        out,
        vec![
            Output::Connect,
            Output::StartTimer(Timer::ConnectRetry, Duration::from_secs(5))
        ]
    );
    assert_eq!(fsm.state(), State::Connect);
}

#[test]
fn connect_retry_expiry_in_connect_restarts_the_attempt() {
    let mut fsm = Fsm::new(cfg());
    fsm.process(Input::Start);
    let out = fsm.process(Input::TimerExpired(Timer::ConnectRetry));
    assert_eq!(out[0], Output::CancelConnect);
    assert_eq!(out[1], Output::Connect);
}

#[test]
fn late_outbound_connection_after_giving_up_is_closed() {
    let mut fsm = Fsm::new(cfg());
    fsm.process(Input::Start);
    fsm.process(Input::TcpFailed { conn: None });
    assert_eq!(
        fsm.process(Input::TcpConnected {
            conn: 4,
            inbound: false
        }),
        vec![Output::Close(4)]
    );
}

#[test]
fn tcp_connected_sends_open_and_arms_the_large_hold_timer() {
    let mut fsm = Fsm::new(cfg());
    fsm.process(Input::Start);
    let out = fsm.process(Input::TcpConnected {
        conn: 1,
        inbound: false,
    });
    assert!(has(&out, &Output::StopTimer(Timer::ConnectRetry)));
    assert!(has(&out, &Output::Send(1, Message::Open(fsm.our_open()))));
    assert!(has(
        &out,
        &Output::StartTimer(Timer::Hold(1), Duration::from_secs(240))
    ));
    assert_eq!(fsm.state(), State::OpenSent);
}

#[test]
fn our_open_advertises_what_we_speak() {
    let mut c = cfg();
    c.local_asn = 4_200_000_001;
    c.extended_next_hop = true;
    c.graceful_restart = Some(GracefulRestartConfig {
        restart_time: 120,
        restarting: false,
    });
    let open = Fsm::new(c).our_open();
    assert_eq!(open.my_as, AS_TRANS);
    assert_eq!(open.four_octet_asn(), Some(4_200_000_001));
    assert_eq!(
        open.families(),
        vec![Family::IPV4_UNICAST, Family::IPV6_UNICAST]
    );
    for code in [2u8, 5, 6, 64, 65, 70] {
        assert!(open.has(code), "capability {code}");
    }
}

#[test]
fn valid_open_goes_to_open_confirm_with_negotiated_timers() {
    let mut fsm = Fsm::new(cfg());
    fsm.process(Input::Start);
    fsm.process(Input::TcpConnected {
        conn: 1,
        inbound: false,
    });
    let out = fsm.process(recv(1, Message::Open(peer_open(65001, 30, LOW_PEER))));
    assert_eq!(
        out,
        vec![
            Output::Send(1, Message::Keepalive),
            Output::StartTimer(Timer::Hold(1), Duration::from_secs(30)),
            Output::StartTimer(Timer::Keepalive(1), Duration::from_secs(10)),
        ]
    );
    assert_eq!(fsm.state(), State::OpenConfirm);
}

#[test]
fn keepalive_in_open_confirm_establishes() {
    let mut fsm = Fsm::new(cfg());
    fsm.process(Input::Start);
    fsm.process(Input::TcpConnected {
        conn: 1,
        inbound: false,
    });
    fsm.process(recv(1, Message::Open(peer_open(65001, 30, LOW_PEER))));
    let out = fsm.process(recv(1, Message::Keepalive));
    let n = out
        .iter()
        .find_map(|o| match o {
            Output::Established(n) => Some(n.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(n.hold_time, 30);
    assert_eq!(n.keepalive_time, 10);
    assert!(n.four_octet_asn && n.extended_messages && n.route_refresh);
    assert!(!n.enhanced_route_refresh && !n.graceful_restart && !n.ibgp);
    assert_eq!(n.families, vec![Family::IPV4_UNICAST, Family::IPV6_UNICAST]);
    assert_eq!(fsm.established().unwrap().conn, 1);
}

#[test]
fn hold_time_negotiates_to_the_smaller_and_keepalive_follows() {
    let mut c = cfg();
    c.hold_time = 9;
    let mut fsm = Fsm::new(c.clone());
    fsm.process(Input::Start);
    fsm.process(Input::TcpConnected {
        conn: 1,
        inbound: false,
    });
    let out = fsm.process(recv(1, Message::Open(peer_open(65001, 180, LOW_PEER))));
    assert!(has(
        &out,
        &Output::StartTimer(Timer::Hold(1), Duration::from_secs(9))
    ));
    assert!(has(
        &out,
        &Output::StartTimer(Timer::Keepalive(1), Duration::from_secs(3))
    ));
    // A configured keepalive shorter than hold/3 is kept; a longer one is clamped.
    c.keepalive_time = Some(1);
    let mut fsm = Fsm::new(c);
    fsm.process(Input::Start);
    fsm.process(Input::TcpConnected {
        conn: 1,
        inbound: false,
    });
    let out = fsm.process(recv(1, Message::Open(peer_open(65001, 180, LOW_PEER))));
    assert!(has(
        &out,
        &Output::StartTimer(Timer::Keepalive(1), Duration::from_secs(1))
    ));
}

#[test]
fn zero_hold_time_disables_hold_and_keepalive() {
    let mut fsm = Fsm::new(cfg());
    fsm.process(Input::Start);
    fsm.process(Input::TcpConnected {
        conn: 1,
        inbound: false,
    });
    let out = fsm.process(recv(1, Message::Open(peer_open(65001, 0, LOW_PEER))));
    assert!(has(&out, &Output::StopTimer(Timer::Hold(1))));
    assert!(!out.iter().any(|o| matches!(o, Output::StartTimer(..))));
    let out = fsm.process(recv(1, Message::Keepalive));
    assert!(!out.iter().any(|o| matches!(o, Output::StartTimer(..))));
}

fn open_sent() -> Fsm {
    let mut fsm = Fsm::new(cfg());
    fsm.process(Input::Start);
    fsm.process(Input::TcpConnected {
        conn: 1,
        inbound: false,
    });
    fsm
}

#[test]
fn wrong_peer_as_is_bad_peer_as_with_the_as_field() {
    let mut fsm = open_sent();
    let out = fsm.process(recv(1, Message::Open(peer_open(65099, 90, LOW_PEER))));
    let n = sent_notification(&out, 1).unwrap();
    assert_eq!(
        (n.code, n.subcode, n.data),
        (2, 2, 65099u16.to_be_bytes().to_vec())
    );
    assert!(has(&out, &Output::Close(1)));
    assert!(has(
        &out,
        &Output::StartTimer(Timer::IdleHold, Duration::from_secs(1))
    ));
    assert_eq!(fsm.state(), State::Idle);
    // Not established, so no Down event.
    assert!(down(&out).is_none());
}

/// `dynamicASN: external`: whatever AS the peer has, except ours; the session is eBGP.
#[test]
fn any_external_asn_accepts_every_as_but_ours() {
    let mut c = cfg();
    c.any_external_asn = true;
    c.peer_asn = 0;
    for asn in [65001, 65099, 4_200_000_001] {
        let mut fsm = Fsm::new(c.clone());
        fsm.process(Input::Start);
        fsm.process(Input::TcpConnected {
            conn: 1,
            inbound: false,
        });
        let out = fsm.process(recv(1, Message::Open(peer_open(asn, 90, LOW_PEER))));
        assert!(sent_notification(&out, 1).is_none(), "AS {asn}: {out:?}");
        let out = fsm.process(recv(1, Message::Keepalive));
        let n = out
            .iter()
            .find_map(|o| match o {
                Output::Established(n) => Some(n.clone()),
                _ => None,
            })
            .unwrap_or_else(|| panic!("AS {asn} not established: {out:?}"));
        assert_eq!(n.peer_asn, asn);
        assert!(!n.ibgp, "AS {asn}: a dynamic external peer is eBGP");
    }
    // Our own AS is internal, which this peer must not be.
    let mut fsm = Fsm::new(c);
    fsm.process(Input::Start);
    fsm.process(Input::TcpConnected {
        conn: 1,
        inbound: false,
    });
    let out = fsm.process(recv(1, Message::Open(peer_open(64512, 90, LOW_PEER))));
    let n = sent_notification(&out, 1).unwrap();
    assert_eq!(
        (n.code, n.subcode, n.data),
        (2, 2, 64512u16.to_be_bytes().to_vec())
    );
    assert_eq!(fsm.state(), State::Idle);
}

#[test]
fn as_trans_without_four_octet_capability_is_bad_peer_as() {
    let mut c = cfg();
    c.peer_asn = AS_TRANS as u32;
    let mut fsm = Fsm::new(c);
    fsm.process(Input::Start);
    fsm.process(Input::TcpConnected {
        conn: 1,
        inbound: false,
    });
    let open = Open::new(AS_TRANS as u32, 90, LOW_PEER, vec![]);
    let n = sent_notification(&fsm.process(recv(1, Message::Open(open))), 1).unwrap();
    assert_eq!((n.code, n.subcode), (2, 2));
}

#[test]
fn disagreeing_as_fields_are_bad_peer_as() {
    let mut fsm = open_sent();
    let mut open = peer_open(65001, 90, LOW_PEER);
    open.my_as = 65002;
    let n = sent_notification(&fsm.process(recv(1, Message::Open(open))), 1).unwrap();
    assert_eq!((n.code, n.subcode), (2, 2));
}

#[test]
fn two_octet_peer_without_capability_is_accepted() {
    let mut fsm = open_sent();
    let open = Open::new(65001, 90, LOW_PEER, vec![]);
    fsm.process(recv(1, Message::Open(open)));
    let out = fsm.process(recv(1, Message::Keepalive));
    let n = out
        .iter()
        .find_map(|o| match o {
            Output::Established(n) => Some(n.clone()),
            _ => None,
        })
        .unwrap();
    assert!(!n.four_octet_asn);
    // No multiprotocol capability means IPv4 unicast only (RFC 4760 section 8).
    assert_eq!(n.families, vec![Family::IPV4_UNICAST]);
}

#[test]
fn our_own_identifier_is_bad_bgp_identifier() {
    let mut fsm = open_sent();
    let n = sent_notification(
        &fsm.process(recv(1, Message::Open(peer_open(65001, 90, US)))),
        1,
    )
    .unwrap();
    assert_eq!((n.code, n.subcode), (2, 3));
}

#[test]
fn no_common_family_is_unsupported_capability() {
    let mut c = cfg();
    c.families = vec![Family::IPV6_UNICAST];
    let mut fsm = Fsm::new(c);
    fsm.process(Input::Start);
    fsm.process(Input::TcpConnected {
        conn: 1,
        inbound: false,
    });
    let open = Open::new(
        65001,
        90,
        LOW_PEER,
        vec![Capability::Multiprotocol(Family::IPV4_UNICAST)],
    );
    let n = sent_notification(&fsm.process(recv(1, Message::Open(open))), 1).unwrap();
    assert_eq!((n.code, n.subcode), (2, 7));
    assert_eq!(n.data, vec![1, 4, 0, 2, 0, 1]);
}

#[test]
fn decode_errors_are_answered_with_their_notification() {
    let mut fsm = open_sent();
    let err = MessageError::new(2, 1, vec![0, 4], "unsupported version");
    let out = fsm.process(Input::DecodeError {
        conn: 1,
        error: err,
    });
    let n = sent_notification(&out, 1).unwrap();
    assert_eq!((n.code, n.subcode, n.data), (2, 1, vec![0, 4]));
    assert!(has(&out, &Output::Close(1)));
}

#[test]
fn decode_error_in_established_reports_down() {
    let mut fsm = established(cfg());
    let err = MessageError::new(3, 2, vec![0x40, 99, 0], "unrecognized well-known");
    let out = fsm.process(Input::DecodeError {
        conn: 1,
        error: err.clone(),
    });
    assert_eq!(
        down(&out),
        Some(DownReason::NotificationSent(err.to_notification()))
    );
}

#[test]
fn unexpected_messages_in_open_sent_are_fsm_errors() {
    for m in [
        Message::Keepalive,
        Message::Update(Update::default()),
        Message::RouteRefresh(RouteRefresh::request(Family::IPV4_UNICAST)),
    ] {
        let mut fsm = open_sent();
        let n = sent_notification(&fsm.process(recv(1, m)), 1).unwrap();
        assert_eq!((n.code, n.subcode), (5, 1));
    }
}

#[test]
fn unexpected_messages_in_open_confirm_are_fsm_errors() {
    for m in [
        Message::Open(peer_open(65001, 90, LOW_PEER)),
        Message::Update(Update::default()),
    ] {
        let mut fsm = open_sent();
        fsm.process(recv(1, Message::Open(peer_open(65001, 90, LOW_PEER))));
        let n = sent_notification(&fsm.process(recv(1, m)), 1).unwrap();
        assert_eq!((n.code, n.subcode), (5, 2));
    }
}

#[test]
fn open_in_established_is_an_fsm_error() {
    let mut fsm = established(cfg());
    let out = fsm.process(recv(1, Message::Open(peer_open(65001, 90, LOW_PEER))));
    let n = sent_notification(&out, 1).unwrap();
    assert_eq!((n.code, n.subcode), (5, 3));
    assert!(down(&out).is_some());
}

#[test]
fn hold_timer_expiry_sends_hold_timer_expired() {
    let mut fsm = open_sent();
    let n = sent_notification(&fsm.process(Input::TimerExpired(Timer::Hold(1))), 1).unwrap();
    assert_eq!((n.code, n.subcode), (4, 0));
    let mut fsm = established(cfg());
    let out = fsm.process(Input::TimerExpired(Timer::Hold(1)));
    assert_eq!(
        down(&out),
        Some(DownReason::NotificationSent(Notification::new(4, 0)))
    );
    assert_eq!(fsm.state(), State::Idle);
}

#[test]
fn stale_timers_are_ignored() {
    let mut fsm = established(cfg());
    assert!(fsm.process(Input::TimerExpired(Timer::Hold(99))).is_empty());
    assert!(fsm
        .process(Input::TimerExpired(Timer::Keepalive(99)))
        .is_empty());
    assert!(fsm.process(Input::TimerExpired(Timer::IdleHold)).is_empty());
    assert!(fsm
        .process(Input::TimerExpired(Timer::ConnectRetry))
        .is_empty());
    assert!(fsm.process(recv(42, Message::Keepalive)).is_empty());
    assert_eq!(fsm.state(), State::Established);
}

#[test]
fn keepalive_timer_sends_and_rearms() {
    let mut fsm = established(cfg());
    assert_eq!(
        fsm.process(Input::TimerExpired(Timer::Keepalive(1))),
        vec![
            Output::Send(1, Message::Keepalive),
            Output::StartTimer(Timer::Keepalive(1), Duration::from_secs(10))
        ]
    );
}

#[test]
fn keepalive_and_update_restart_the_hold_timer() {
    let mut fsm = established(cfg());
    let rearm = Output::StartTimer(Timer::Hold(1), Duration::from_secs(30));
    assert_eq!(
        fsm.process(recv(1, Message::Keepalive)),
        vec![rearm.clone()]
    );
    let out = fsm.process(recv(
        1,
        Message::Update(Update::end_of_rib(Family::IPV6_UNICAST)),
    ));
    assert_eq!(
        out,
        vec![
            rearm,
            Output::UpdateReceived {
                end_of_rib: Some(Family::IPV6_UNICAST),
                treat_as_withdraw: false
            }
        ]
    );
}

#[test]
fn treat_as_withdraw_updates_keep_the_session() {
    let mut fsm = established(cfg());
    let u = Update {
        treat_as_withdraw: Some("malformed ORIGIN"),
        nlri: vec!["198.51.100.1/32".parse().unwrap()],
        ..Default::default()
    };
    let out = fsm.process(recv(1, Message::Update(u)));
    assert!(has(
        &out,
        &Output::UpdateReceived {
            end_of_rib: None,
            treat_as_withdraw: true
        }
    ));
    assert_eq!(fsm.state(), State::Established);
}

#[test]
fn route_refresh_requests_are_reported_for_negotiated_families_only() {
    let mut fsm = established(cfg());
    let out = fsm.process(recv(
        1,
        Message::RouteRefresh(RouteRefresh::request(Family::IPV6_UNICAST)),
    ));
    assert_eq!(
        out,
        vec![Output::RouteRefreshRequested(Family::IPV6_UNICAST)]
    );
    let other = Family {
        afi: Afi(25),
        safi: crate::packet::Safi(65),
    };
    assert!(fsm
        .process(recv(1, Message::RouteRefresh(RouteRefresh::request(other))))
        .is_empty());
    let borr = RouteRefresh {
        family: Family::IPV4_UNICAST,
        subtype: RouteRefreshSubtype::Begin,
    };
    assert!(fsm.process(recv(1, Message::RouteRefresh(borr))).is_empty());
}

#[test]
fn notification_in_established_reports_down_and_backs_off() {
    let mut fsm = established(cfg());
    let cease = Notification::cease_with_message(2, "maintenance");
    let out = fsm.process(recv(1, Message::Notification(cease.clone())));
    assert!(has(&out, &Output::Close(1)));
    assert_eq!(down(&out), Some(DownReason::NotificationReceived(cease)));
    assert!(has(
        &out,
        &Output::StartTimer(Timer::IdleHold, Duration::from_secs(1))
    ));
    assert_eq!(fsm.state(), State::Idle);
    // Idle hold over: connect again.
    let out = fsm.process(Input::TimerExpired(Timer::IdleHold));
    assert_eq!(out[0], Output::Connect);
    assert_eq!(fsm.state(), State::Connect);
}

#[test]
fn notification_in_open_sent_backs_off_without_down() {
    let mut fsm = open_sent();
    let out = fsm.process(recv(1, Message::Notification(Notification::new(2, 2))));
    assert!(down(&out).is_none());
    assert!(has(
        &out,
        &Output::StartTimer(Timer::IdleHold, Duration::from_secs(1))
    ));
}

#[test]
fn backoff_doubles_caps_and_resets_once_established() {
    let mut fsm = open_sent();
    let mut delays = Vec::new();
    for _ in 0..6 {
        let out = fsm.process(Input::TcpFailed { conn: Some(1) });
        delays.extend(out.iter().filter_map(|o| match o {
            Output::StartTimer(Timer::IdleHold, d) => Some(d.as_secs()),
            _ => None,
        }));
        fsm.process(Input::TimerExpired(Timer::IdleHold));
        fsm.process(Input::TcpConnected {
            conn: 1,
            inbound: false,
        });
    }
    assert_eq!(delays, vec![1, 2, 4, 8, 8, 8]);
    fsm.process(recv(1, Message::Open(peer_open(65001, 30, LOW_PEER))));
    fsm.process(recv(1, Message::Keepalive));
    let out = fsm.process(Input::TcpFailed { conn: Some(1) });
    assert_eq!(down(&out), Some(DownReason::ConnectionLost));
    assert!(has(
        &out,
        &Output::StartTimer(Timer::IdleHold, Duration::from_secs(1))
    ));
}

#[test]
fn inbound_connection_during_idle_hold_is_accepted() {
    let mut fsm = established(cfg());
    fsm.process(Input::TcpFailed { conn: Some(1) });
    assert_eq!(fsm.state(), State::Idle);
    let out = fsm.process(Input::TcpConnected {
        conn: 2,
        inbound: true,
    });
    assert!(has(&out, &Output::StopTimer(Timer::IdleHold)));
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::Send(2, Message::Open(_)))));
    assert_eq!(fsm.state(), State::OpenSent);
}

#[test]
fn stop_with_shutdown_message_sends_cease_rfc9003() {
    let mut fsm = established(cfg());
    let out = fsm.process(Input::Stop(StopReason::Shutdown(Some(
        "node drained".into(),
    ))));
    let n = sent_notification(&out, 1).unwrap();
    assert_eq!((n.code, n.subcode), (6, 2));
    assert_eq!(n.shutdown_message().as_deref(), Some("node drained"));
    assert!(has(&out, &Output::Close(1)));
    assert_eq!(
        down(&out),
        Some(DownReason::Stopped(StopReason::Shutdown(Some(
            "node drained".into()
        ))))
    );
    assert_eq!(fsm.state(), State::Idle);
    // Stopped peers ignore timers and refuse connections.
    assert!(fsm.process(Input::TimerExpired(Timer::IdleHold)).is_empty());
    assert_eq!(
        fsm.process(Input::TcpConnected {
            conn: 5,
            inbound: true
        }),
        vec![Output::Close(5)]
    );
}

#[test]
fn stop_while_connecting_cancels_the_attempt() {
    let mut fsm = Fsm::new(cfg());
    fsm.process(Input::Start);
    let out = fsm.process(Input::Stop(StopReason::Shutdown(None)));
    assert_eq!(out[0], Output::CancelConnect);
    assert!(down(&out).is_none());
}

#[test]
fn deconfigured_and_config_change_ceases() {
    let mut fsm = established(cfg());
    let n = sent_notification(&fsm.process(Input::Stop(StopReason::Deconfigured)), 1).unwrap();
    assert_eq!((n.code, n.subcode), (6, 3));
    let mut fsm = established(cfg());
    let n = sent_notification(&fsm.process(Input::Stop(StopReason::ConfigChange)), 1).unwrap();
    assert_eq!((n.code, n.subcode), (6, 6));
}

#[test]
fn graceful_restart_stop_sends_no_notification() {
    let mut fsm = established(cfg());
    let out = fsm.process(Input::Stop(StopReason::GracefulRestart));
    assert!(sent_notification(&out, 1).is_none());
    assert!(has(&out, &Output::Close(1)));
}

#[test]
fn restarting_flag_sets_r_and_f_bits_until_established() {
    let mut c = cfg();
    c.graceful_restart = Some(GracefulRestartConfig {
        restart_time: 120,
        restarting: true,
    });
    let gr = |fsm: &Fsm| {
        fsm.our_open()
            .capabilities
            .into_iter()
            .find_map(|c| match c {
                Capability::GracefulRestart(g) => Some(g),
                _ => None,
            })
            .unwrap()
    };
    let fsm = Fsm::new(c.clone());
    let g = gr(&fsm);
    assert!(g.restart_state && g.families.iter().all(|f| f.forwarding_preserved));
    assert_eq!(g.restart_time, 120);
    let fsm = established(c);
    let g = gr(&fsm);
    assert!(!g.restart_state);
}

#[test]
fn graceful_restart_is_negotiated_when_both_advertise() {
    let mut c = cfg();
    c.graceful_restart = Some(GracefulRestartConfig {
        restart_time: 120,
        restarting: false,
    });
    let mut fsm = Fsm::new(c);
    fsm.process(Input::Start);
    fsm.process(Input::TcpConnected {
        conn: 1,
        inbound: false,
    });
    let mut open = peer_open(65001, 30, LOW_PEER);
    open.capabilities
        .push(Capability::GracefulRestart(GracefulRestartCap {
            restart_state: false,
            notification: false,
            restart_time: 120,
            families: vec![],
        }));
    fsm.process(recv(1, Message::Open(open)));
    fsm.process(recv(1, Message::Keepalive));
    assert!(fsm.established().unwrap().graceful_restart);
}

#[test]
fn extended_next_hop_is_negotiated_when_configured() {
    let mut c = cfg();
    c.extended_next_hop = true;
    let mut fsm = Fsm::new(c);
    fsm.process(Input::Start);
    fsm.process(Input::TcpConnected {
        conn: 1,
        inbound: false,
    });
    let mut open = peer_open(65001, 30, LOW_PEER);
    open.capabilities.push(Capability::ExtendedNextHop(vec![(
        Family::IPV4_UNICAST,
        Afi::IPV6,
    )]));
    fsm.process(recv(1, Message::Open(open)));
    fsm.process(recv(1, Message::Keepalive));
    assert!(fsm.established().unwrap().ipv4_with_ipv6_next_hop());
}

#[test]
fn ibgp_is_detected() {
    let mut c = cfg();
    c.peer_asn = 64512;
    let mut fsm = Fsm::new(c);
    fsm.process(Input::Start);
    fsm.process(Input::TcpConnected {
        conn: 1,
        inbound: false,
    });
    fsm.process(recv(1, Message::Open(peer_open(64512, 30, LOW_PEER))));
    fsm.process(recv(1, Message::Keepalive));
    let n = fsm.established().unwrap();
    assert!(n.ibgp && n.decode_context().ibgp);
}

/// Both connections up, both OPENs exchanged: returns the outputs of the second OPEN.
fn collide(peer_id: Ipv4Addr) -> (Fsm, Vec<Output>) {
    let mut fsm = Fsm::new(cfg());
    fsm.process(Input::Start);
    fsm.process(Input::TcpConnected {
        conn: 2,
        inbound: true,
    });
    fsm.process(Input::TcpConnected {
        conn: 1,
        inbound: false,
    });
    fsm.process(recv(1, Message::Open(peer_open(65001, 30, peer_id))));
    let out = fsm.process(recv(2, Message::Open(peer_open(65001, 30, peer_id))));
    (fsm, out)
}

#[test]
fn collision_keeps_our_connection_when_our_identifier_is_higher() {
    let (mut fsm, out) = collide(LOW_PEER);
    let n = sent_notification(&out, 2).unwrap();
    assert_eq!((n.code, n.subcode), (6, 7));
    assert!(has(&out, &Output::Close(2)));
    fsm.process(recv(1, Message::Keepalive));
    assert_eq!(fsm.established().unwrap().conn, 1);
}

#[test]
fn collision_keeps_the_peer_connection_when_its_identifier_is_higher() {
    let (mut fsm, out) = collide(HIGH_PEER);
    let n = sent_notification(&out, 1).unwrap();
    assert_eq!((n.code, n.subcode), (6, 7));
    assert!(has(&out, &Output::Close(1)));
    assert_eq!(fsm.state(), State::OpenConfirm);
    fsm.process(recv(2, Message::Keepalive));
    assert_eq!(fsm.established().unwrap().conn, 2);
}

#[test]
fn third_connection_is_refused() {
    let mut fsm = Fsm::new(cfg());
    fsm.process(Input::Start);
    fsm.process(Input::TcpConnected {
        conn: 1,
        inbound: false,
    });
    fsm.process(Input::TcpConnected {
        conn: 2,
        inbound: true,
    });
    assert_eq!(
        fsm.process(Input::TcpConnected {
            conn: 3,
            inbound: true
        }),
        vec![Output::Close(3)]
    );
}

#[test]
fn new_open_from_an_established_peer_replaces_the_session() {
    let mut fsm = established(cfg());
    fsm.process(Input::TcpConnected {
        conn: 2,
        inbound: true,
    });
    let out = fsm.process(recv(2, Message::Open(peer_open(65001, 30, LOW_PEER))));
    assert!(has(&out, &Output::Close(1)));
    assert_eq!(down(&out), Some(DownReason::Replaced));
    assert!(out
        .iter()
        .all(|o| !matches!(o, Output::StartTimer(Timer::IdleHold, _))));
    fsm.process(recv(2, Message::Keepalive));
    assert_eq!(fsm.established().unwrap().conn, 2);
}

#[test]
fn established_inbound_cancels_our_pending_connect() {
    let mut fsm = Fsm::new(cfg());
    fsm.process(Input::Start);
    fsm.process(Input::TcpConnected {
        conn: 9,
        inbound: true,
    });
    fsm.process(recv(9, Message::Open(peer_open(65001, 30, LOW_PEER))));
    let out = fsm.process(recv(9, Message::Keepalive));
    assert!(has(&out, &Output::CancelConnect));
    assert!(has(&out, &Output::StopTimer(Timer::ConnectRetry)));
}

#[test]
fn send_hold_timer_rfc9687() {
    let mut fsm = established(cfg());
    let out = fsm.process(Input::SendBlocked { conn: 1 });
    assert_eq!(
        out,
        vec![Output::StartTimer(
            Timer::SendHold(1),
            Duration::from_secs(480)
        )]
    );
    assert_eq!(
        fsm.process(Input::SendDrained { conn: 1 }),
        vec![Output::StopTimer(Timer::SendHold(1))]
    );
    fsm.process(Input::SendBlocked { conn: 1 });
    let out = fsm.process(Input::TimerExpired(Timer::SendHold(1)));
    let n = sent_notification(&out, 1).unwrap();
    assert_eq!((n.code, n.subcode), (8, 0));
    assert!(has(&out, &Output::Close(1)));
    assert!(matches!(down(&out), Some(DownReason::NotificationSent(_))));
}

#[test]
fn send_hold_time_is_configurable() {
    let mut c = cfg();
    c.send_hold_time = Some(Duration::from_secs(20));
    let mut fsm = established(c);
    assert_eq!(
        fsm.process(Input::SendBlocked { conn: 1 }),
        vec![Output::StartTimer(
            Timer::SendHold(1),
            Duration::from_secs(20)
        )]
    );
}

#[test]
fn connection_loss_in_open_confirm_backs_off() {
    let mut fsm = open_sent();
    fsm.process(recv(1, Message::Open(peer_open(65001, 30, LOW_PEER))));
    let out = fsm.process(Input::TcpFailed { conn: Some(1) });
    assert!(down(&out).is_none());
    assert!(has(&out, &Output::StopTimer(Timer::Hold(1))));
    assert!(has(
        &out,
        &Output::StartTimer(Timer::IdleHold, Duration::from_secs(1))
    ));
}

#[test]
fn states_follow_rfc4271_names() {
    let mut fsm = Fsm::new(cfg());
    let mut seen = vec![fsm.state()];
    fsm.process(Input::Start);
    seen.push(fsm.state());
    fsm.process(Input::TcpFailed { conn: None });
    seen.push(fsm.state());
    fsm.process(Input::TimerExpired(Timer::ConnectRetry));
    fsm.process(Input::TcpConnected {
        conn: 1,
        inbound: false,
    });
    seen.push(fsm.state());
    fsm.process(recv(1, Message::Open(peer_open(65001, 30, LOW_PEER))));
    seen.push(fsm.state());
    fsm.process(recv(1, Message::Keepalive));
    seen.push(fsm.state());
    assert_eq!(
        seen,
        vec![
            State::Idle,
            State::Connect,
            State::Active,
            State::OpenSent,
            State::OpenConfirm,
            State::Established
        ]
    );
}

mod random_inputs {
    use super::*;
    use proptest::prelude::*;

    fn input() -> impl Strategy<Value = Input> {
        let conn = 1u64..4;
        prop_oneof![
            Just(Input::Start),
            Just(Input::Stop(StopReason::Shutdown(Some("bye".into())))),
            Just(Input::Stop(StopReason::GracefulRestart)),
            (conn.clone(), any::<bool>())
                .prop_map(|(conn, inbound)| Input::TcpConnected { conn, inbound }),
            Just(Input::TcpFailed { conn: None }),
            conn.clone()
                .prop_map(|c| Input::TcpFailed { conn: Some(c) }),
            (
                conn.clone(),
                any::<bool>(),
                prop_oneof![Just(0u16), Just(3), Just(90)]
            )
                .prop_map(|(c, high, hold)| recv(
                    c,
                    Message::Open(peer_open(
                        65001,
                        hold,
                        if high { HIGH_PEER } else { LOW_PEER }
                    ))
                )),
            conn.clone()
                .prop_map(|c| recv(c, Message::Open(peer_open(65099, 90, LOW_PEER)))),
            conn.clone().prop_map(|c| recv(c, Message::Keepalive)),
            conn.clone()
                .prop_map(|c| recv(c, Message::Update(Update::default()))),
            conn.clone().prop_map(|c| recv(
                c,
                Message::RouteRefresh(RouteRefresh::request(Family::IPV4_UNICAST))
            )),
            conn.clone()
                .prop_map(|c| recv(c, Message::Notification(Notification::new(6, 2)))),
            conn.clone().prop_map(|c| Input::DecodeError {
                conn: c,
                error: MessageError::new(1, 1, vec![], "x")
            }),
            conn.clone().prop_map(|c| Input::SendBlocked { conn: c }),
            conn.clone()
                .prop_map(|c| Input::TimerExpired(Timer::Hold(c))),
            conn.clone()
                .prop_map(|c| Input::TimerExpired(Timer::Keepalive(c))),
            conn.clone()
                .prop_map(|c| Input::TimerExpired(Timer::SendHold(c))),
            Just(Input::TimerExpired(Timer::ConnectRetry)),
            Just(Input::TimerExpired(Timer::IdleHold)),
        ]
    }

    proptest! {
        /// Any sequence of events: no panic, never more than two connections, every Up is
        /// matched by at most one Down, and an Established state has negotiated parameters.
        #[test]
        fn fsm_survives_any_event_sequence(passive in any::<bool>(), inputs in proptest::collection::vec(input(), 0..60)) {
            let mut c = cfg();
            c.passive = passive;
            let mut fsm = Fsm::new(c);
            let mut up = 0i32;
            for i in inputs {
                for o in fsm.process(i) {
                    match o {
                        Output::Established(_) => up += 1,
                        Output::Down(_) => up -= 1,
                        _ => {}
                    }
                    prop_assert!((0..=1).contains(&up), "up/down out of balance: {up}");
                }
                prop_assert!(fsm.conns.len() <= 2);
                prop_assert_eq!(fsm.state() == State::Established, fsm.established().is_some());
                prop_assert_eq!(up == 1, fsm.state() == State::Established);
            }
        }
    }
}

#[test]
fn bfd_down_ends_the_session_at_once_with_cease_bfd_down_and_reconnects() {
    let mut fsm = established(cfg());
    let out = fsm.process(Input::BfdDown);
    let n = Notification::new(codes::CEASE, codes::BFD_DOWN);
    assert_eq!(sent_notification(&out, 1), Some(n.clone()));
    assert!(has(&out, &Output::Close(1)));
    assert_eq!(down(&out), Some(DownReason::NotificationSent(n)));
    assert_eq!(fsm.state(), State::Idle);
    assert!(out
        .iter()
        .any(|o| matches!(o, Output::StartTimer(Timer::IdleHold, _))));
    // Without a connection there is nothing to end.
    assert!(fsm.process(Input::BfdDown).is_empty());
}
