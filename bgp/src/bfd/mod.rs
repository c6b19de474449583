//! BFD (RFC 5880 asynchronous mode; RFC 5881 single hop, RFC 5883 multihop), tied to the BGP
//! sessions: a peer with a [`BfdConfig`] gets a BFD session from the session's local address,
//! and BFD going down after having been up ends the BGP session at once.
//!
//! - [`packet`]: the control packet codec, sans-IO; decode errors say why a packet is dropped.
//! - [`fsm`]: one session's state machine, sans-IO: `process(Input) -> Vec<Output>`, timers as
//!   outputs.
//! - [`driver`]: the thin tokio part: receive sockets shared by all sessions (demultiplexed by
//!   discriminator, else by source address), one send socket and one task per session.
//!
//! Echo mode and demand mode are not implemented. Authentication: Keyed SHA1 and Meticulous
//! Keyed SHA1 ([`auth`]); an unauthenticated session drops authenticated packets (counted).

pub mod auth;
pub mod driver;
pub mod echo;
pub mod fsm;
pub mod packet;

use std::time::Duration;

pub use auth::BfdAuth;
pub use driver::{BfdCounters, BfdPorts};
pub use packet::{Diagnostic, SessionState};

/// Smallest and largest interval accepted (the range of FRR and of MetalLB's BFDProfile).
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);
pub const MAX_INTERVAL: Duration = Duration::from_millis(60_000);

/// BFD settings of one BGP peer (MetalLB's BFDProfile, without echo mode).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BfdConfig {
    /// Required Min RX Interval: the fastest we want to receive.
    pub receive_interval: Duration,
    /// Desired Min TX Interval once the session is up (1 s before: slow start).
    pub transmit_interval: Duration,
    /// Packets missed before the peer declares us down.
    pub detect_multiplier: u8,
    /// Wait for the peer's first packet before sending.
    pub passive: bool,
    /// RFC 5883 (UDP 4784) instead of RFC 5881 (UDP 3784, TTL 255 only).
    pub multihop: bool,
    /// Multihop: the lowest TTL / hop limit accepted (254 = one hop away).
    pub minimum_ttl: u8,
    /// Announce no routes on a new BGP session until BFD is up.
    pub hold_routes_until_up: bool,
    /// Keyed SHA1 or Meticulous Keyed SHA1 authentication.
    pub auth: Option<auth::BfdAuth>,
    /// The Echo function at this interval (IPv4 single hop only): our echo packets go through
    /// the peer and back, and the peer's come back through this node when it forwards on the
    /// link.
    pub echo_interval: Option<Duration>,
}

impl Default for BfdConfig {
    /// MetalLB's and FRR's defaults: 300 ms x 3, active, single hop.
    fn default() -> Self {
        BfdConfig {
            receive_interval: Duration::from_millis(300),
            transmit_interval: Duration::from_millis(300),
            detect_multiplier: 3,
            passive: false,
            multihop: false,
            minimum_ttl: 254,
            hold_routes_until_up: false,
            auth: None,
            echo_interval: None,
        }
    }
}

impl BfdConfig {
    /// Checks the settings; the message names the field.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("receive_interval", self.receive_interval),
            ("transmit_interval", self.transmit_interval),
        ] {
            if v < MIN_INTERVAL || v > MAX_INTERVAL {
                return Err(format!(
                    "bfd.{name}: {} ms is outside 10..60000 ms",
                    v.as_millis()
                ));
            }
        }
        if self.detect_multiplier < 2 {
            return Err(format!(
                "bfd.detect_multiplier: {} is below 2",
                self.detect_multiplier
            ));
        }
        if self.minimum_ttl == 0 {
            return Err("bfd.minimum_ttl: must be at least 1".into());
        }
        if let Some(v) = self.echo_interval {
            if v < MIN_INTERVAL || v > MAX_INTERVAL {
                return Err(format!(
                    "bfd.echo_interval: {} ms is outside 10..60000 ms",
                    v.as_millis()
                ));
            }
            if self.multihop {
                // RFC 5883 section 3: no echo on multihop sessions.
                return Err("bfd.echo_interval: no echo on multihop sessions".into());
            }
        }
        Ok(())
    }

    pub(crate) fn echo_tx_us(&self) -> Option<u32> {
        self.echo_interval
            .map(|d| u32::try_from(d.as_micros()).unwrap_or(u32::MAX))
    }

    pub(crate) fn timers(&self) -> fsm::Timers {
        let us = |d: Duration| u32::try_from(d.as_micros()).unwrap_or(u32::MAX);
        fsm::Timers {
            desired_min_tx_us: us(self.transmit_interval),
            required_min_rx_us: us(self.receive_interval),
            detect_mult: self.detect_multiplier,
        }
    }
}

/// A state change of a peer's BFD session, for the BGP session above it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BfdChange {
    pub from: SessionState,
    pub to: SessionState,
    pub diagnostic: Diagnostic,
    /// The state the peer last reported; AdminDown means it was shut down on purpose.
    pub peer_state: SessionState,
    /// Which session changed (a replaced session's last words are ignored).
    pub local_discriminator: u32,
}

impl BfdChange {
    /// Whether the BGP session above must end now: the session was Up and went down, and not
    /// because the peer's operator shut BFD down (RFC 5882 section 3.2: a client is not taken
    /// down by the peer's AdminDown).
    pub fn path_failed(&self) -> bool {
        self.from == SessionState::Up
            && self.to != SessionState::Up
            && self.to != SessionState::AdminDown
            && self.peer_state != SessionState::AdminDown
    }
}
