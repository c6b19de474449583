//! One BFD control packet: decoded; whatever decodes encodes back to a packet that decodes
//! the same, and a session fed with it never panics.
#![no_main]

use ferrolb_bgp::bfd::fsm::{Input, Session, SessionConfig, Timer, Timers};
use ferrolb_bgp::bfd::packet::ControlPacket;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(p) = ControlPacket::decode(data) else {
        return;
    };
    let again = ControlPacket::decode(&p.encode()).expect("our encoding decodes");
    assert_eq!(again, p);
    let mut s = Session::new(SessionConfig {
        local_discriminator: p.your_discriminator.max(1),
        timers: Timers {
            desired_min_tx_us: 50_000,
            required_min_rx_us: 50_000,
            detect_mult: 3,
        },
        passive: data.len() % 2 == 0,
        auth: None,
    });
    s.process(Input::Start);
    s.process(Input::Received(p.clone()));
    s.process(Input::TimerExpired(Timer::Tx));
    s.process(Input::Received(p));
    s.process(Input::TimerExpired(Timer::Detect));
});
