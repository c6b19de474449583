use super::*;
use proptest::prelude::*;

const LOCAL: u32 = 0x1111;
const REMOTE: u32 = 0x2222;
const MS50: u32 = 50_000;

fn cfg(passive: bool) -> SessionConfig {
    SessionConfig {
        local_discriminator: LOCAL,
        timers: Timers {
            desired_min_tx_us: MS50,
            required_min_rx_us: MS50,
            detect_mult: 3,
        },
        passive,
        auth: None,
        echo_tx_us: None,
        echo_rx_us: 0,
    }
}

/// What the peer sends: `state`, its timers, our discriminator once it knows it.
fn peer(state: SessionState, your: u32, tx_us: u32, rx_us: u32) -> ControlPacket {
    ControlPacket {
        diagnostic: Diagnostic::None,
        state,
        poll: false,
        final_: false,
        control_plane_independent: false,
        demand: false,
        detect_mult: 3,
        my_discriminator: REMOTE,
        your_discriminator: your,
        desired_min_tx_us: tx_us,
        required_min_rx_us: rx_us,
        required_min_echo_rx_us: 0,
        auth: None,
    }
}

fn sent(out: &[Output]) -> Vec<&ControlPacket> {
    out.iter()
        .filter_map(|o| match o {
            Output::Send(p) => Some(p),
            _ => None,
        })
        .collect()
}

fn timer(out: &[Output], t: Timer) -> Option<Duration> {
    out.iter().rev().find_map(|o| match o {
        Output::StartTimer(x, d) if *x == t => Some(*d),
        _ => None,
    })
}

fn changed(out: &[Output]) -> Option<(SessionState, SessionState, Diagnostic)> {
    out.iter().find_map(|o| match o {
        Output::StateChanged {
            from,
            to,
            diagnostic,
        } => Some((*from, *to, *diagnostic)),
        _ => None,
    })
}

/// A session brought Up by the three-way handshake with a peer at 1 s (slow start).
fn up() -> Session {
    let mut s = Session::new(cfg(false));
    s.process(Input::Start);
    s.process(Input::Received(peer(
        SessionState::Down,
        0,
        1_000_000,
        1_000_000,
    )));
    let out = s.process(Input::Received(peer(
        SessionState::Up,
        LOCAL,
        1_000_000,
        1_000_000,
    )));
    assert_eq!(
        changed(&out),
        Some((SessionState::Init, SessionState::Up, Diagnostic::None))
    );
    s
}

#[test]
fn start_sends_down_at_once_with_the_slow_start_interval() {
    let mut s = Session::new(cfg(false));
    assert!(
        s.process(Input::TimerExpired(Timer::Tx)).is_empty(),
        "not started"
    );
    let out = s.process(Input::Start);
    assert_eq!(timer(&out, Timer::Tx), Some(Duration::ZERO));
    let out = s.process(Input::TimerExpired(Timer::Tx));
    let p = sent(&out)[0];
    assert_eq!(p.state, SessionState::Down);
    assert_eq!(p.my_discriminator, LOCAL);
    assert_eq!(p.your_discriminator, 0);
    assert_eq!(p.desired_min_tx_us, SLOW_TX_US, "1 s while not Up");
    assert_eq!(p.required_min_rx_us, MS50);
    assert_eq!(p.required_min_echo_rx_us, 0, "no echo");
    // Before the peer says anything its Required Min RX counts as 1 us: our 1 s applies.
    let next = timer(&out, Timer::Tx).unwrap();
    assert!(next >= Duration::from_millis(750) && next <= Duration::from_secs(1));
    assert_eq!(s.detection_time(), None);
}

#[test]
fn three_way_handshake_down_init_up() {
    let mut s = Session::new(cfg(false));
    s.process(Input::Start);
    let out = s.process(Input::Received(peer(
        SessionState::Down,
        0,
        1_000_000,
        1_000_000,
    )));
    assert_eq!(
        changed(&out),
        Some((SessionState::Down, SessionState::Init, Diagnostic::None))
    );
    let p = sent(&out)[0];
    assert_eq!(
        (p.state, p.your_discriminator),
        (SessionState::Init, REMOTE),
        "the change goes out at once"
    );
    // Detection: the peer's multiplier x max(our rx, its tx) = 3 x 1 s.
    assert_eq!(timer(&out, Timer::Detect), Some(Duration::from_secs(3)));
    let out = s.process(Input::Received(peer(
        SessionState::Up,
        LOCAL,
        1_000_000,
        1_000_000,
    )));
    assert_eq!(s.state(), SessionState::Up);
    assert!(changed(&out).is_some());
}

#[test]
fn down_goes_straight_up_when_the_peer_is_in_init() {
    let mut s = Session::new(cfg(false));
    s.process(Input::Start);
    let out = s.process(Input::Received(peer(
        SessionState::Init,
        LOCAL,
        1_000_000,
        1_000_000,
    )));
    assert_eq!(
        changed(&out),
        Some((SessionState::Down, SessionState::Up, Diagnostic::None))
    );
}

#[test]
fn init_or_up_from_a_peer_that_does_not_know_us_does_not_bring_us_up() {
    // Down + peer Up is not a valid transition: stay Down.
    let mut s = Session::new(cfg(false));
    s.process(Input::Start);
    s.process(Input::Received(peer(
        SessionState::Up,
        LOCAL,
        1_000_000,
        1_000_000,
    )));
    assert_eq!(s.state(), SessionState::Down);
}

#[test]
fn going_up_starts_a_poll_to_the_configured_interval_and_final_ends_it() {
    let mut s = Session::new(cfg(false));
    s.process(Input::Start);
    s.process(Input::Received(peer(
        SessionState::Down,
        0,
        1_000_000,
        1_000_000,
    )));
    let out = s.process(Input::Received(peer(
        SessionState::Up,
        LOCAL,
        1_000_000,
        MS50,
    )));
    let p = sent(&out)[0];
    assert_eq!(p.state, SessionState::Up);
    assert!(p.poll && !p.final_);
    assert_eq!(p.desired_min_tx_us, MS50);
    assert!(s.polling());
    // A faster tx may apply at once; the peer still sends every second.
    assert_eq!(s.tx_interval(), Some(Duration::from_millis(50)));
    let periodic = s.process(Input::TimerExpired(Timer::Tx));
    assert!(sent(&periodic)[0].poll, "Poll repeats until the Final");
    let mut fin = peer(SessionState::Up, LOCAL, MS50, MS50);
    fin.final_ = true;
    let out = s.process(Input::Received(fin));
    assert!(!s.polling());
    assert_eq!(timer(&out, Timer::Detect), Some(Duration::from_millis(150)));
    assert_eq!(s.detection_time(), Some(Duration::from_millis(150)));
    let periodic = s.process(Input::TimerExpired(Timer::Tx));
    assert!(!sent(&periodic)[0].poll);
}

#[test]
fn a_poll_from_the_peer_is_answered_at_once_with_final() {
    let mut s = up();
    let mut fin = peer(SessionState::Up, LOCAL, 1_000_000, MS50);
    fin.final_ = true;
    s.process(Input::Received(fin));
    let mut poll = peer(SessionState::Up, LOCAL, MS50, MS50);
    poll.poll = true;
    let out = s.process(Input::Received(poll));
    let ps = sent(&out);
    assert_eq!(ps.len(), 1);
    assert!(ps[0].final_ && !ps[0].poll);
    // Only once.
    let out = s.process(Input::TimerExpired(Timer::Tx));
    assert!(!sent(&out)[0].final_);
}

#[test]
fn a_final_is_sent_without_poll_even_while_our_own_poll_runs() {
    let mut s = up();
    assert!(s.polling());
    let mut poll = peer(SessionState::Up, LOCAL, MS50, MS50);
    poll.poll = true;
    let out = s.process(Input::Received(poll));
    let p = sent(&out)[0];
    assert!(p.final_ && !p.poll, "never P and F together");
}

#[test]
fn detection_timeout_takes_the_session_down_and_forgets_the_peer() {
    let mut s = up();
    let out = s.process(Input::TimerExpired(Timer::Detect));
    assert_eq!(
        changed(&out),
        Some((
            SessionState::Up,
            SessionState::Down,
            Diagnostic::ControlDetectionTimeExpired
        ))
    );
    assert_eq!(
        timer(&out, Timer::Tx),
        Some(Duration::ZERO),
        "Down goes out at once"
    );
    let out = s.process(Input::TimerExpired(Timer::Tx));
    let p = sent(&out)[0];
    assert_eq!(p.state, SessionState::Down);
    assert_eq!(p.diagnostic, Diagnostic::ControlDetectionTimeExpired);
    assert_eq!(p.your_discriminator, 0);
    assert_eq!(p.desired_min_tx_us, SLOW_TX_US, "slow start again");
    assert_eq!(s.remote_discriminator(), 0);
    assert_eq!(s.detection_time(), None);
}

#[test]
fn the_peer_saying_down_or_admin_down_takes_us_down() {
    for state in [SessionState::Down, SessionState::AdminDown] {
        let mut s = up();
        let out = s.process(Input::Received(peer(state, LOCAL, MS50, MS50)));
        assert_eq!(
            changed(&out),
            Some((
                SessionState::Up,
                SessionState::Down,
                Diagnostic::NeighborSignaledDown
            )),
            "{state}"
        );
    }
    // AdminDown in Down leaves us Down, without an event.
    let mut s = Session::new(cfg(false));
    s.process(Input::Start);
    let out = s.process(Input::Received(peer(
        SessionState::AdminDown,
        0,
        MS50,
        MS50,
    )));
    assert_eq!(changed(&out), None);
}

#[test]
fn init_times_out_too() {
    let mut s = Session::new(cfg(false));
    s.process(Input::Start);
    s.process(Input::Received(peer(
        SessionState::Down,
        0,
        1_000_000,
        1_000_000,
    )));
    let out = s.process(Input::TimerExpired(Timer::Detect));
    assert_eq!(
        changed(&out),
        Some((
            SessionState::Init,
            SessionState::Down,
            Diagnostic::ControlDetectionTimeExpired
        ))
    );
}

#[test]
fn spoofed_or_unsupported_packets_are_discarded_without_effect() {
    let mut s = up();
    let before = (s.state(), s.remote_discriminator());
    let mut wrong = peer(SessionState::Down, LOCAL + 1, MS50, MS50);
    let out = s.process(Input::Received(wrong.clone()));
    assert_eq!(out, vec![Output::Discarded(Discard::WrongDiscriminator)]);
    wrong.your_discriminator = LOCAL;
    wrong.auth = Some((1, vec![1, b'x']));
    let out = s.process(Input::Received(wrong.clone()));
    assert_eq!(
        out,
        vec![Output::Discarded(Discard::UnexpectedAuthentication)]
    );
    wrong.auth = None;
    wrong.poll = true;
    wrong.final_ = true;
    let out = s.process(Input::Received(wrong));
    assert_eq!(out, vec![Output::Discarded(Discard::PollAndFinal)]);
    assert_eq!((s.state(), s.remote_discriminator()), before);
}

#[test]
fn passive_waits_for_the_peer_then_talks() {
    let mut s = Session::new(cfg(true));
    let out = s.process(Input::Start);
    assert!(sent(&out).is_empty());
    assert_eq!(timer(&out, Timer::Tx), None);
    assert!(s.process(Input::TimerExpired(Timer::Tx)).is_empty());
    let out = s.process(Input::Received(peer(
        SessionState::Down,
        0,
        1_000_000,
        1_000_000,
    )));
    assert_eq!(sent(&out)[0].state, SessionState::Init);
    assert!(timer(&out, Timer::Tx).is_some(), "periodic packets start");
    // Forgetting the peer (detection timeout) silences a passive session again.
    let out = s.process(Input::TimerExpired(Timer::Detect));
    assert!(sent(&out).is_empty());
    assert!(s.process(Input::TimerExpired(Timer::Tx)).is_empty());
}

#[test]
fn admin_down_says_so_and_ignores_the_peer_until_admin_up() {
    let mut s = up();
    let out = s.process(Input::AdminDown);
    assert_eq!(
        changed(&out),
        Some((
            SessionState::Up,
            SessionState::AdminDown,
            Diagnostic::AdministrativelyDown
        ))
    );
    assert!(out.contains(&Output::StopTimer(Timer::Detect)));
    assert_eq!(sent(&out)[0].state, SessionState::AdminDown);
    let out = s.process(Input::Received(peer(SessionState::Up, LOCAL, MS50, MS50)));
    assert!(out.contains(&Output::Discarded(Discard::AdminDown)));
    assert_eq!(s.state(), SessionState::AdminDown);
    assert!(s
        .process(Input::TimerExpired(Timer::Detect))
        .iter()
        .all(|o| !matches!(o, Output::StateChanged { .. })));
    let out = s.process(Input::AdminUp);
    assert_eq!(
        changed(&out),
        Some((
            SessionState::AdminDown,
            SessionState::Down,
            Diagnostic::None
        ))
    );
}

#[test]
fn slower_timers_while_up_wait_for_the_final() {
    let mut s = up();
    let mut fin = peer(SessionState::Up, LOCAL, MS50, MS50);
    fin.final_ = true;
    s.process(Input::Received(fin.clone()));
    assert_eq!(s.tx_interval(), Some(Duration::from_millis(50)));
    // Slower tx (300 ms) and faster rx (20 ms).
    let out = s.process(Input::SetTimers(Timers {
        desired_min_tx_us: 300_000,
        required_min_rx_us: 20_000,
        detect_mult: 3,
    }));
    let p = sent(&out)[0];
    assert!(p.poll);
    assert_eq!(
        (p.desired_min_tx_us, p.required_min_rx_us),
        (300_000, 20_000)
    );
    // Until the Final: still sending every 50 ms, detection still on 50 ms.
    assert_eq!(s.tx_interval(), Some(Duration::from_millis(50)));
    assert_eq!(s.detection_time(), Some(Duration::from_millis(150)));
    let mut fin2 = peer(SessionState::Up, LOCAL, 20_000, MS50);
    fin2.final_ = true;
    s.process(Input::Received(fin2));
    assert_eq!(s.tx_interval(), Some(Duration::from_millis(300)));
    assert_eq!(s.detection_time(), Some(Duration::from_millis(60)));
}

#[test]
fn timer_changes_outside_up_apply_at_once_without_poll() {
    let mut s = Session::new(cfg(false));
    s.process(Input::Start);
    let out = s.process(Input::SetTimers(Timers {
        desired_min_tx_us: 20_000,
        required_min_rx_us: 20_000,
        detect_mult: 5,
    }));
    assert!(sent(&out).is_empty());
    assert!(!s.polling());
    let p = s.process(Input::TimerExpired(Timer::Tx));
    let p = sent(&p)[0].clone();
    assert_eq!(p.desired_min_tx_us, SLOW_TX_US, "still slow start");
    assert_eq!(p.required_min_rx_us, 20_000);
    assert_eq!(p.detect_mult, 5);
}

#[test]
fn the_tx_interval_follows_the_peer_and_zero_rx_stops_packets() {
    let mut s = up();
    let mut fin = peer(SessionState::Up, LOCAL, MS50, 200_000);
    fin.final_ = true;
    s.process(Input::Received(fin));
    assert_eq!(
        s.tx_interval(),
        Some(Duration::from_millis(200)),
        "max(ours, its rx)"
    );
    let out = s.process(Input::Received(peer(SessionState::Up, LOCAL, MS50, 0)));
    assert!(out.contains(&Output::StopTimer(Timer::Tx)));
    assert!(s.process(Input::TimerExpired(Timer::Tx)).is_empty());
    // It wants packets again: they start at once.
    let out = s.process(Input::Received(peer(SessionState::Up, LOCAL, MS50, MS50)));
    assert_eq!(timer(&out, Timer::Tx), Some(Duration::ZERO));
}

#[test]
fn jitter_keeps_intervals_between_75_and_100_percent() {
    let mut s = up();
    let mut fin = peer(SessionState::Up, LOCAL, MS50, MS50);
    fin.final_ = true;
    s.process(Input::Received(fin));
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..500 {
        let out = s.process(Input::TimerExpired(Timer::Tx));
        let d = timer(&out, Timer::Tx).unwrap();
        assert!(
            d >= Duration::from_micros(37_500) && d <= Duration::from_millis(50),
            "{d:?}"
        );
        seen.insert(d);
    }
    assert!(seen.len() > 50, "jitter varies");
    // Multiplier 1: at most 90 %.
    let mut c = cfg(false);
    c.timers.detect_mult = 1;
    let mut s = Session::new(c);
    s.process(Input::Start);
    for _ in 0..200 {
        let d = timer(&s.process(Input::TimerExpired(Timer::Tx)), Timer::Tx).unwrap();
        assert!(
            d <= Duration::from_millis(900) && d >= Duration::from_millis(750),
            "{d:?}"
        );
    }
}

fn any_input() -> impl Strategy<Value = Input> {
    let packet = (
        0u8..4,
        any::<[bool; 3]>(),
        prop_oneof![Just(0u32), Just(LOCAL), Just(LOCAL + 1)],
        prop_oneof![
            Just(0u32),
            Just(1u32),
            Just(MS50),
            Just(1_000_000u32),
            any::<u32>()
        ],
        prop_oneof![Just(0u32), Just(MS50), any::<u32>()],
        1u8..=255,
    )
        .prop_map(|(sta, f, your, tx, rx, mult)| {
            let mut p = peer(
                match sta {
                    0 => SessionState::AdminDown,
                    1 => SessionState::Down,
                    2 => SessionState::Init,
                    _ => SessionState::Up,
                },
                your,
                tx,
                rx,
            );
            p.poll = f[0];
            p.final_ = f[1];
            if f[2] {
                p.auth = Some((2, vec![0; 22]));
            }
            p.detect_mult = mult;
            Input::Received(p)
        });
    prop_oneof![
        6 => packet,
        2 => Just(Input::TimerExpired(Timer::Tx)),
        2 => Just(Input::TimerExpired(Timer::Detect)),
        1 => Just(Input::Start),
        1 => Just(Input::AdminDown),
        1 => Just(Input::AdminUp),
        1 => (1u32..2_000_000, 1u32..2_000_000, 1u8..10).prop_map(|(tx, rx, m)| Input::SetTimers(Timers {
            desired_min_tx_us: tx,
            required_min_rx_us: rx,
            detect_mult: m,
        })),
    ]
}

proptest! {
    /// Whatever happens, the packets we send are valid and follow the RFC's rules.
    #[test]
    fn any_input_sequence_keeps_the_invariants(
        passive in any::<bool>(),
        inputs in proptest::collection::vec(any_input(), 1..60),
    ) {
        let mut s = Session::new(cfg(passive));
        for input in inputs {
            for out in s.process(input) {
                if let Output::Send(p) = out {
                    prop_assert!(!(p.poll && p.final_));
                    prop_assert_eq!(p.my_discriminator, LOCAL);
                    prop_assert!(p.state <= SessionState::Down || p.your_discriminator != 0);
                    prop_assert_eq!(ControlPacket::decode(&p.encode()), Ok(p.clone()));
                    if p.state != SessionState::Up {
                        prop_assert!(p.desired_min_tx_us >= SLOW_TX_US);
                    }
                    prop_assert!(!(passive && s.remote_discriminator() == 0 && p.state != SessionState::AdminDown));
                }
            }
        }
    }
}

#[test]
fn only_a_real_failure_asks_bgp_to_go_down() {
    use crate::bfd::BfdChange;
    let change = |from, to, peer_state| BfdChange {
        from,
        to,
        diagnostic: Diagnostic::None,
        peer_state,
        local_discriminator: LOCAL,
    };
    use SessionState::*;
    assert!(change(Up, Down, Up).path_failed(), "detection timeout");
    assert!(change(Up, Down, Down).path_failed(), "the peer lost us");
    assert!(
        !change(Up, Down, AdminDown).path_failed(),
        "peer shut down on purpose"
    );
    assert!(
        !change(Up, AdminDown, Up).path_failed(),
        "we shut down on purpose"
    );
    assert!(!change(Init, Down, Down).path_failed(), "never was up");
    assert!(!change(Down, Up, Up).path_failed());
}

/// Runs two sessions against each other: `rounds` times each fires its Tx timer and the
/// other receives what it sent. Returns the discards each saw.
fn exchange(a: &mut Session, b: &mut Session, rounds: usize) -> (Vec<Discard>, Vec<Discard>) {
    let mut seen = (Vec::new(), Vec::new());
    let discards = |out: &[Output], into: &mut Vec<Discard>| {
        into.extend(out.iter().filter_map(|o| match o {
            Output::Discarded(d) => Some(*d),
            _ => None,
        }))
    };
    for _ in 0..rounds {
        let from_a: Vec<ControlPacket> = sent(&a.process(Input::TimerExpired(Timer::Tx)))
            .into_iter()
            .cloned()
            .collect();
        for p in from_a {
            let out = b.process(Input::Received(p));
            discards(&out, &mut seen.1);
            for q in sent(&out) {
                discards(&a.process(Input::Received(q.clone())), &mut seen.0);
            }
        }
        let from_b: Vec<ControlPacket> = sent(&b.process(Input::TimerExpired(Timer::Tx)))
            .into_iter()
            .cloned()
            .collect();
        for p in from_b {
            let out = a.process(Input::Received(p));
            discards(&out, &mut seen.0);
            for q in sent(&out) {
                discards(&b.process(Input::Received(q.clone())), &mut seen.1);
            }
        }
    }
    seen
}

fn authed(local: u32, key: &[u8]) -> Session {
    let mut c = cfg(false);
    c.local_discriminator = local;
    c.auth = Some(BfdAuth::new(1, key, true).unwrap());
    let mut s = Session::new(c);
    s.process(Input::Start);
    s
}

#[test]
fn authenticated_sessions_come_up_and_a_wrong_key_never_does() {
    let (mut a, mut b) = (authed(LOCAL, b"s3cret"), authed(REMOTE, b"s3cret"));
    let (da, db) = exchange(&mut a, &mut b, 3);
    assert_eq!((da, db), (vec![], vec![]));
    assert_eq!((a.state(), b.state()), (SessionState::Up, SessionState::Up));
    let p = sent(&a.process(Input::TimerExpired(Timer::Tx)))[0].clone();
    assert_eq!(
        p.auth.as_ref().map(|x| x.0),
        Some(crate::bfd::auth::METICULOUS_KEYED_SHA1)
    );
    // A replay of that packet is refused (meticulous), and so is an unsigned one.
    b.process(Input::Received(p.clone()));
    assert_eq!(
        b.process(Input::Received(p.clone())),
        vec![Output::Discarded(Discard::AuthenticationFailed)]
    );
    let mut unsigned = p;
    unsigned.auth = None;
    assert_eq!(
        b.process(Input::Received(unsigned)),
        vec![Output::Discarded(Discard::AuthenticationFailed)]
    );

    let (mut a, mut c) = (authed(LOCAL, b"s3cret"), authed(REMOTE, b"other"));
    let (da, dc) = exchange(&mut a, &mut c, 3);
    assert!(!da.is_empty() && da.iter().all(|d| *d == Discard::AuthenticationFailed));
    assert!(!dc.is_empty());
    assert_eq!(
        (a.state(), c.state()),
        (SessionState::Down, SessionState::Down)
    );
}

/// The peer's Up packet asking for echo packets no faster than `echo_us`.
fn peer_echo(echo_us: u32) -> ControlPacket {
    ControlPacket {
        required_min_echo_rx_us: echo_us,
        ..peer(SessionState::Up, LOCAL, 1_000_000, 1_000_000)
    }
}

/// A session with echo configured at 50 ms (and looping the peer's back at 50 ms), Up.
fn echo_up() -> Session {
    let mut s = Session::new(SessionConfig {
        echo_tx_us: Some(MS50),
        echo_rx_us: MS50,
        ..cfg(false)
    });
    s.process(Input::Start);
    s.process(Input::Received(peer(
        SessionState::Down,
        0,
        1_000_000,
        1_000_000,
    )));
    s
}

fn echoes(out: &[Output]) -> Vec<u64> {
    out.iter()
        .filter_map(|o| match o {
            Output::SendEcho(n) => Some(*n),
            _ => None,
        })
        .collect()
}

#[test]
fn echo_starts_when_up_and_asked_for_and_runs_at_the_slower_interval() {
    let mut s = echo_up();
    let out = s.process(Input::TimerExpired(Timer::Tx));
    assert_eq!(
        sent(&out)[0].required_min_echo_rx_us,
        MS50,
        "we loop echoes back"
    );
    // Up, but the peer takes no echo packets: none sent.
    let out = s.process(Input::Received(peer_echo(0)));
    assert_eq!(changed(&out).map(|c| c.1), Some(SessionState::Up));
    assert!(!s.echo_active());
    assert_eq!(timer(&out, Timer::EchoTx), None);
    // The peer asks for them no faster than 200 ms: echo on at 200 ms, 3 x 200 ms detection.
    let out = s.process(Input::Received(peer_echo(200_000)));
    assert!(s.echo_active());
    assert_eq!(timer(&out, Timer::EchoTx), Some(Duration::ZERO));
    assert_eq!(
        timer(&out, Timer::EchoDetect),
        Some(Duration::from_millis(600))
    );
    let out = s.process(Input::TimerExpired(Timer::EchoTx));
    assert_eq!(echoes(&out), [1]);
    let next = timer(&out, Timer::EchoTx).unwrap();
    assert!(
        next >= Duration::from_millis(150) && next <= Duration::from_millis(200),
        "{next:?}"
    );
    assert_eq!(echoes(&s.process(Input::TimerExpired(Timer::EchoTx))), [2]);
    // Each echo back restarts the detection.
    let out = s.process(Input::EchoReturned);
    assert_eq!(
        timer(&out, Timer::EchoDetect),
        Some(Duration::from_millis(600))
    );
    // The peer stops taking them: echo off.
    let out = s.process(Input::Received(peer_echo(0)));
    assert!(!s.echo_active());
    assert!(out.contains(&Output::StopTimer(Timer::EchoTx)));
    assert!(out.contains(&Output::StopTimer(Timer::EchoDetect)));
    assert!(echoes(&s.process(Input::TimerExpired(Timer::EchoTx))).is_empty());
}

#[test]
fn echo_failure_takes_the_session_down_with_its_diagnostic() {
    let mut s = echo_up();
    s.process(Input::Received(peer_echo(MS50)));
    assert!(s.echo_active());
    s.process(Input::TimerExpired(Timer::EchoTx));
    // Control packets still arrive; the echo path does not.
    s.process(Input::Received(peer_echo(MS50)));
    let out = s.process(Input::TimerExpired(Timer::EchoDetect));
    assert_eq!(
        changed(&out),
        Some((
            SessionState::Up,
            SessionState::Down,
            Diagnostic::EchoFunctionFailed
        ))
    );
    let p = sent(&out)[0];
    assert_eq!(
        (p.state, p.diagnostic),
        (SessionState::Down, Diagnostic::EchoFunctionFailed),
        "the peer is told at once"
    );
    assert!(!s.echo_active());
    assert!(out.contains(&Output::StopTimer(Timer::EchoTx)));
    // Late expiries and returns change nothing.
    assert!(changed(&s.process(Input::TimerExpired(Timer::EchoDetect))).is_none());
    assert!(s.process(Input::EchoReturned).is_empty());
}

#[test]
fn without_echo_configured_none_is_sent_or_advertised() {
    let mut s = up();
    let out = s.process(Input::Received(peer_echo(MS50)));
    assert!(!s.echo_active());
    assert!(echoes(&out).is_empty());
    let out = s.process(Input::TimerExpired(Timer::Tx));
    assert_eq!(sent(&out)[0].required_min_echo_rx_us, 0);
    assert!(s.process(Input::TimerExpired(Timer::EchoTx)).is_empty());
}

#[test]
fn echo_stops_when_the_session_goes_down() {
    let mut s = echo_up();
    s.process(Input::Received(peer_echo(MS50)));
    let out = s.process(Input::TimerExpired(Timer::Detect));
    assert_eq!(
        changed(&out),
        Some((
            SessionState::Up,
            SessionState::Down,
            Diagnostic::ControlDetectionTimeExpired
        ))
    );
    assert!(!s.echo_active());
    assert!(out.contains(&Output::StopTimer(Timer::EchoDetect)));
}
