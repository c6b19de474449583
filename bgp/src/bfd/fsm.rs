//! One BFD session (RFC 5880 section 6.8, asynchronous mode with the optional Echo function,
//! no demand), sans-IO.
//!
//! [`Session::process`] takes an [`Input`] (start, a decoded packet, a timer expiry, a timer
//! change, admin down/up) and returns the [`Output`]s for the driver: packets to send, timers
//! to (re)start or stop, state changes, discards. Nothing here reads a clock or a socket; the
//! transmit jitter comes from a small deterministic generator seeded with the discriminator.

use std::time::Duration;

use super::auth::{BfdAuth, RxSequence};
use super::packet::{ControlPacket, Diagnostic, SessionState};

/// While the session is not Up we send at most once a second (RFC 5880 section 6.8.3).
pub const SLOW_TX_US: u32 = 1_000_000;

/// Timer settings of a session, in microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timers {
    pub desired_min_tx_us: u32,
    pub required_min_rx_us: u32,
    pub detect_mult: u8,
}

/// What the session needs to know about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SessionConfig {
    /// Non-zero, unique per system.
    pub local_discriminator: u32,
    pub timers: Timers,
    /// Wait for the peer's first packet before sending (RFC 5880 section 6.1).
    pub passive: bool,
    /// Sign what we send and accept only packets signed with this key.
    pub auth: Option<BfdAuth>,
    /// Echo function (RFC 5880 section 6.4): our echo transmit interval; `None` sends none.
    /// Echo runs while the session is Up and the peer advertises a Required Min Echo RX
    /// Interval; it is declared failed after `detect_mult` intervals without one back.
    pub echo_tx_us: Option<u32>,
    /// Our Required Min Echo RX Interval: non-zero only when this side loops the peer's echo
    /// packets back (its forwarding plane does).
    pub echo_rx_us: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Timer {
    /// Time for the next periodic packet.
    Tx,
    /// The detection time passed without a packet from the peer.
    Detect,
    /// Time for the next echo packet.
    EchoTx,
    /// The echo detection time passed without one of our echo packets back.
    EchoDetect,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    Start,
    Received(ControlPacket),
    TimerExpired(Timer),
    /// New timer settings; while Up they take effect through a Poll sequence.
    SetTimers(Timers),
    AdminDown,
    AdminUp,
    /// One of our echo packets came back through the peer.
    EchoReturned,
}

/// Why a packet that decoded fine was still discarded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Discard {
    /// Your Discriminator names another session.
    WrongDiscriminator,
    /// The packet is authenticated and the session is not (RFC 5880 section 6.8.6).
    UnexpectedAuthentication,
    /// The session is authenticated and the packet's authentication is missing or wrong.
    AuthenticationFailed,
    /// We are AdminDown.
    AdminDown,
    /// Poll and Final together.
    PollAndFinal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Send(ControlPacket),
    /// Send echo packet number `seq`.
    SendEcho(u64),
    StartTimer(Timer, Duration),
    StopTimer(Timer),
    StateChanged {
        from: SessionState,
        to: SessionState,
        diagnostic: Diagnostic,
    },
    Discarded(Discard),
}

/// The RFC 5880 state variables of one session.
#[derive(Debug, Clone)]
pub struct Session {
    cfg: SessionConfig,
    started: bool,
    state: SessionState,
    remote_state: SessionState,
    remote_discr: u32,
    diag: Diagnostic,
    /// What we advertise.
    desired_min_tx_us: u32,
    required_min_rx_us: u32,
    /// What we use while a Poll sequence is pending (the old values where the RFC says so).
    effective_tx_us: u32,
    effective_rx_us: u32,
    remote_min_rx_us: u32,
    remote_desired_min_tx_us: u32,
    remote_detect_mult: u8,
    polling: bool,
    /// A Final is owed for a received Poll.
    final_due: bool,
    rng: u32,
    xmit_seq: u32,
    rx_seq: RxSequence,
    remote_min_echo_rx_us: u32,
    echo_active: bool,
    echo_seq: u64,
}

impl Session {
    pub fn new(cfg: SessionConfig) -> Session {
        let desired = cfg.timers.desired_min_tx_us.max(SLOW_TX_US);
        Session {
            cfg,
            started: false,
            state: SessionState::Down,
            remote_state: SessionState::Down,
            remote_discr: 0,
            diag: Diagnostic::None,
            desired_min_tx_us: desired,
            required_min_rx_us: cfg.timers.required_min_rx_us,
            effective_tx_us: desired,
            effective_rx_us: cfg.timers.required_min_rx_us,
            remote_min_rx_us: 1,
            remote_desired_min_tx_us: 0,
            remote_detect_mult: 0,
            polling: false,
            final_due: false,
            rng: cfg.local_discriminator | 1,
            // Any start value will do; the discriminator differs per session.
            xmit_seq: cfg.local_discriminator.rotate_left(16),
            rx_seq: RxSequence::default(),
            remote_min_echo_rx_us: 0,
            echo_active: false,
            echo_seq: 0,
        }
    }

    /// Whether echo packets are being sent.
    pub fn echo_active(&self) -> bool {
        self.echo_active
    }

    /// The interval between our echo packets (before jitter): ours, or slower if the peer
    /// asks; `None` while echo is off.
    pub fn echo_interval(&self) -> Option<Duration> {
        let ours = self.cfg.echo_tx_us?;
        (self.remote_min_echo_rx_us != 0)
            .then(|| Duration::from_micros(u64::from(ours.max(self.remote_min_echo_rx_us))))
    }

    /// How long without an echo back before the path is declared failed.
    fn echo_detection_time(&self) -> Option<Duration> {
        self.echo_interval()
            .map(|i| i * u32::from(self.cfg.timers.detect_mult.max(1)))
    }

    /// Starts or stops the Echo function: on while Up, configured, and asked for by the peer.
    fn update_echo(&mut self, out: &mut Vec<Output>) {
        let want = self.state == SessionState::Up && self.echo_interval().is_some();
        if want && !self.echo_active {
            self.echo_active = true;
            out.push(Output::StartTimer(Timer::EchoTx, Duration::ZERO));
            if let Some(d) = self.echo_detection_time() {
                out.push(Output::StartTimer(Timer::EchoDetect, d));
            }
        } else if !want && self.echo_active {
            self.echo_active = false;
            out.push(Output::StopTimer(Timer::EchoTx));
            out.push(Output::StopTimer(Timer::EchoDetect));
        }
    }

    fn echo_tx(&mut self, out: &mut Vec<Output>) {
        let Some(every) = self.echo_interval().filter(|_| self.echo_active) else {
            return;
        };
        self.echo_seq += 1;
        out.push(Output::SendEcho(self.echo_seq));
        let next = self.jittered(every);
        out.push(Output::StartTimer(Timer::EchoTx, next));
    }

    fn echo_returned(&mut self, out: &mut Vec<Output>) {
        if !self.echo_active {
            return;
        }
        if let Some(d) = self.echo_detection_time() {
            out.push(Output::StartTimer(Timer::EchoDetect, d));
        }
    }

    fn echo_detect_expired(&mut self, out: &mut Vec<Output>) {
        if self.echo_active && self.state == SessionState::Up {
            // The path through the peer failed though its control packets may still arrive.
            self.change(SessionState::Down, Diagnostic::EchoFunctionFailed, out);
            self.send_now(out);
        }
    }

    pub fn state(&self) -> SessionState {
        self.state
    }

    pub fn remote_state(&self) -> SessionState {
        self.remote_state
    }

    pub fn local_discriminator(&self) -> u32 {
        self.cfg.local_discriminator
    }

    pub fn remote_discriminator(&self) -> u32 {
        self.remote_discr
    }

    pub fn diagnostic(&self) -> Diagnostic {
        self.diag
    }

    pub fn polling(&self) -> bool {
        self.polling
    }

    /// The interval between our periodic packets (before jitter); `None` when the peer asked
    /// for none (Required Min RX 0).
    pub fn tx_interval(&self) -> Option<Duration> {
        (self.remote_min_rx_us != 0)
            .then(|| Duration::from_micros(self.effective_tx_us.max(self.remote_min_rx_us) as u64))
    }

    /// How long without a packet before the session is declared down; `None` before the
    /// first packet from the peer.
    pub fn detection_time(&self) -> Option<Duration> {
        (self.remote_detect_mult != 0).then(|| {
            let every = self.effective_rx_us.max(self.remote_desired_min_tx_us) as u64;
            Duration::from_micros(self.remote_detect_mult as u64 * every)
        })
    }

    /// Feeds one input; returns what to do, in order.
    pub fn process(&mut self, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        let tx_before = self.tx_interval();
        match input {
            Input::Start => {
                if !self.started {
                    self.started = true;
                    self.schedule_tx(Duration::ZERO, &mut out);
                }
            }
            Input::Received(p) => self.received(p, &mut out),
            Input::TimerExpired(Timer::Tx) => self.periodic(&mut out),
            Input::TimerExpired(Timer::Detect) => self.detect_expired(&mut out),
            Input::TimerExpired(Timer::EchoTx) => self.echo_tx(&mut out),
            Input::TimerExpired(Timer::EchoDetect) => self.echo_detect_expired(&mut out),
            Input::EchoReturned => self.echo_returned(&mut out),
            Input::SetTimers(t) => self.set_timers(t, &mut out),
            Input::AdminDown => {
                if self.state != SessionState::AdminDown {
                    self.change(
                        SessionState::AdminDown,
                        Diagnostic::AdministrativelyDown,
                        &mut out,
                    );
                    out.push(Output::StopTimer(Timer::Detect));
                    self.send_now(&mut out);
                }
            }
            Input::AdminUp => {
                if self.state == SessionState::AdminDown {
                    self.change(SessionState::Down, Diagnostic::None, &mut out);
                    self.send_now(&mut out);
                }
            }
        }
        // A faster rate applies at once (the peer's detection time may already be shorter);
        // a slower one from the packet already scheduled.
        if let (Some(before), Some(now)) = (tx_before, self.tx_interval()) {
            if now < before && self.may_send() {
                let next = self.jittered(now);
                out.push(Output::StartTimer(Timer::Tx, next));
            }
        }
        out
    }

    fn next_random(&mut self) -> u32 {
        // xorshift32: jitter only needs to differ between sessions and packets.
        let mut x = self.rng;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.rng = x;
        x
    }

    /// The interval reduced by 0-25 % (10-25 % with a multiplier of 1), RFC 5880 6.8.7.
    fn jittered(&mut self, base: Duration) -> Duration {
        let r = self.next_random() % 1000;
        let permille = if self.cfg.timers.detect_mult == 1 {
            750 + r * 150 / 1000
        } else {
            750 + r * 250 / 1000
        };
        base * permille / 1000
    }

    fn may_send(&self) -> bool {
        self.started && !(self.cfg.passive && self.remote_discr == 0)
    }

    fn schedule_tx(&mut self, first: Duration, out: &mut Vec<Output>) {
        if !self.may_send() {
            out.push(Output::StopTimer(Timer::Tx));
            return;
        }
        out.push(Output::StartTimer(Timer::Tx, first));
    }

    fn periodic(&mut self, out: &mut Vec<Output>) {
        if !self.may_send() {
            return;
        }
        let Some(every) = self.tx_interval() else {
            return;
        };
        let p = self.packet(self.polling, false);
        out.push(Output::Send(p));
        let next = self.jittered(every);
        out.push(Output::StartTimer(Timer::Tx, next));
    }

    /// Sends one packet outside the periodic schedule (state change, Final, Poll start).
    fn send_now(&mut self, out: &mut Vec<Output>) {
        if !self.may_send() {
            return;
        }
        let fin = std::mem::take(&mut self.final_due);
        let p = self.packet(self.polling && !fin, fin);
        out.push(Output::Send(p));
    }

    fn packet(&mut self, poll: bool, final_: bool) -> ControlPacket {
        let mut p = ControlPacket {
            diagnostic: self.diag,
            state: self.state,
            poll,
            final_,
            control_plane_independent: false,
            demand: false,
            detect_mult: self.cfg.timers.detect_mult,
            my_discriminator: self.cfg.local_discriminator,
            your_discriminator: self.remote_discr,
            desired_min_tx_us: self.desired_min_tx_us,
            required_min_rx_us: self.required_min_rx_us,
            required_min_echo_rx_us: self.cfg.echo_rx_us,
            auth: None,
        };
        if let Some(a) = &self.cfg.auth {
            // Every packet gets the next number (required when meticulous, allowed otherwise).
            self.xmit_seq = self.xmit_seq.wrapping_add(1);
            a.sign(&mut p, self.xmit_seq);
        }
        p
    }

    fn change(&mut self, to: SessionState, diag: Diagnostic, out: &mut Vec<Output>) {
        let from = self.state;
        if from == to {
            return;
        }
        self.state = to;
        self.diag = diag;
        out.push(Output::StateChanged {
            from,
            to,
            diagnostic: diag,
        });
        self.update_echo(out);
        if to == SessionState::Up {
            // Leave the slow start rate through a Poll sequence.
            self.advertise(self.cfg.timers, out);
        } else if from == SessionState::Up {
            // Back to the slow rate; no Poll is needed outside Up.
            self.polling = false;
            self.desired_min_tx_us = self.cfg.timers.desired_min_tx_us.max(SLOW_TX_US);
            self.effective_tx_us = self.desired_min_tx_us;
            self.effective_rx_us = self.required_min_rx_us;
        }
    }

    /// Advertises `t`; while Up through a Poll sequence, otherwise at once.
    fn advertise(&mut self, t: Timers, out: &mut Vec<Output>) {
        let up = self.state == SessionState::Up;
        let tx = if up {
            t.desired_min_tx_us
        } else {
            t.desired_min_tx_us.max(SLOW_TX_US)
        };
        let rx = t.required_min_rx_us;
        if tx == self.desired_min_tx_us && rx == self.required_min_rx_us {
            return;
        }
        if up {
            // Until the Final: a slower tx and a faster rx must not take effect yet.
            self.effective_tx_us = self.effective_tx_us.min(tx);
            self.effective_rx_us = self.effective_rx_us.max(rx);
            self.polling = true;
        } else {
            self.effective_tx_us = tx;
            self.effective_rx_us = rx;
        }
        self.desired_min_tx_us = tx;
        self.required_min_rx_us = rx;
        if up {
            self.send_now(out);
        }
        self.restart_detect(out);
    }

    fn set_timers(&mut self, t: Timers, out: &mut Vec<Output>) {
        self.cfg.timers = t;
        self.advertise(t, out);
    }

    fn restart_detect(&mut self, out: &mut Vec<Output>) {
        if self.remote_discr == 0 || self.state == SessionState::AdminDown {
            return;
        }
        if let Some(d) = self.detection_time() {
            out.push(Output::StartTimer(Timer::Detect, d));
        }
    }

    fn detect_expired(&mut self, out: &mut Vec<Output>) {
        if matches!(self.state, SessionState::Init | SessionState::Up) {
            self.change(
                SessionState::Down,
                Diagnostic::ControlDetectionTimeExpired,
                out,
            );
        }
        // Forget the peer (RFC 5880 6.8.1): a restarted peer starts with a new discriminator.
        self.remote_discr = 0;
        self.remote_state = SessionState::Down;
        self.remote_detect_mult = 0;
        self.remote_desired_min_tx_us = 0;
        self.remote_min_rx_us = 1;
        self.remote_min_echo_rx_us = 0;
        self.final_due = false;
        self.rx_seq.known = false;
        // Say Down at once (one packet: the periodic one, brought forward).
        self.schedule_tx(Duration::ZERO, out);
    }

    fn received(&mut self, p: ControlPacket, out: &mut Vec<Output>) {
        if p.your_discriminator != 0 && p.your_discriminator != self.cfg.local_discriminator {
            out.push(Output::Discarded(Discard::WrongDiscriminator));
            return;
        }
        match &self.cfg.auth {
            None if p.auth.is_some() => {
                out.push(Output::Discarded(Discard::UnexpectedAuthentication));
                return;
            }
            Some(a) if a.verify(&p, &mut self.rx_seq, p.detect_mult).is_err() => {
                out.push(Output::Discarded(Discard::AuthenticationFailed));
                return;
            }
            _ => {}
        }
        if p.poll && p.final_ {
            out.push(Output::Discarded(Discard::PollAndFinal));
            return;
        }
        let was_silent = self.cfg.passive && self.remote_discr == 0;
        let old_tx = self.tx_interval();
        self.remote_discr = p.my_discriminator;
        self.remote_state = p.state;
        self.remote_min_rx_us = p.required_min_rx_us;
        self.remote_desired_min_tx_us = p.desired_min_tx_us;
        self.remote_detect_mult = p.detect_mult;
        let echo_rx_before = self.remote_min_echo_rx_us;
        self.remote_min_echo_rx_us = p.required_min_echo_rx_us;
        if p.final_ && self.polling {
            self.polling = false;
            self.effective_tx_us = self.desired_min_tx_us;
            self.effective_rx_us = self.required_min_rx_us;
        }
        if self.state == SessionState::AdminDown {
            out.push(Output::Discarded(Discard::AdminDown));
            return;
        }
        let before = self.state;
        if p.state == SessionState::AdminDown {
            if self.state != SessionState::Down {
                self.change(SessionState::Down, Diagnostic::NeighborSignaledDown, out);
            }
        } else {
            match (self.state, p.state) {
                (SessionState::Down, SessionState::Down) => {
                    self.change(SessionState::Init, Diagnostic::None, out)
                }
                (SessionState::Down, SessionState::Init)
                | (SessionState::Init, SessionState::Init | SessionState::Up) => {
                    self.change(SessionState::Up, Diagnostic::None, out)
                }
                (SessionState::Up, SessionState::Down) => {
                    self.change(SessionState::Down, Diagnostic::NeighborSignaledDown, out)
                }
                _ => {}
            }
        }
        if p.poll {
            self.final_due = true;
        }
        if self.state != before || self.final_due {
            self.send_now(out);
        }
        if self.remote_min_echo_rx_us != echo_rx_before {
            // The peer stopped (or started) taking echo packets, or wants them slower.
            if self.echo_active && self.remote_min_echo_rx_us != 0 {
                self.echo_returned(out);
            }
            self.update_echo(out);
        }
        let new_tx = self.tx_interval();
        if new_tx.is_none() {
            out.push(Output::StopTimer(Timer::Tx));
        } else if was_silent || old_tx.is_none() {
            // A passive session starts sending, or the peer asks for packets again.
            self.schedule_tx(Duration::ZERO, out);
        }
        self.restart_detect(out);
    }
}

#[cfg(test)]
mod tests;
