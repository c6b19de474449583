//! The fast path for who owns: heartbeats from each L2 owner to its hot standbys, and a
//! confirmation through other members before a silent owner is taken as down. Sans-IO: inputs
//! with the time in, messages to send and verdicts out; the membership driver carries them.
//!
//! SWIM (foca) stays the source of truth for who exists; it confirms a death in 100-150 ms.
//! This detector only lets a *standby* stop counting a silent owner sooner:
//!
//! 1. A speaker that is second in the ranking of some address (the runtime says which owners,
//!    [`FastDetector::set_watched`]) subscribes to each of those owners; an owner sends every
//!    subscriber a heartbeat every `heartbeat`. Heartbeats are per node, not per address.
//! 2. When nothing at all (heartbeat, membership datagram, answer) came from a watched owner
//!    for `misses` heartbeats, the standby pings it and asks up to [`HELPERS`] other members to
//!    check it (each answers at once if it heard the owner that recently, else pings it).
//! 3. If nothing from the owner and no helper's word that it lives arrives within `confirm`, the
//!    owner is *down* for this speaker: membership leaves it out of the live set it publishes,
//!    the plan moves its addresses, and the quorum counts it out. One lost heartbeat, or a
//!    broken path between the standby and the owner only, is not a death: the owner answers
//!    the ping, or a helper vouches for it.
//! 4. Anything from a down owner brings it back at once (it was alive: a stall, a cut link);
//!    SWIM's own verdict, when it comes, replaces all of this.
//!
//! The trade-off: a speaker whose process gets no CPU for `misses x heartbeat + confirm`
//! (16 ms by default) cannot be told from a dead one by this path; it is taken as down and its
//! addresses move, and move back when it runs again. The defaults hold at 1% loss with both
//! cores of the node busy (lab figures in docs/benchmarks.md); slower timers trade failover
//! time for more tolerance (`--l2-heartbeat-ms`, `--l2-heartbeat-misses`, `--l2-confirm-ms`).
//!
//! Wire format (inside the sealed membership datagram, channel [`CHANNEL`]; big-endian):
//!
//! ```text
//! FastMsg = kind:u8 from_len:u8 from:[u8; from_len] fields
//!   kind 1 Heartbeat  seq:u64 every_ms:u16   2 Subscribe
//!        3 Check      nonce:u64      4 CheckAck  nonce:u64
//!        5 CheckReq   target_len:u8 target nonce:u64
//!        6 CheckOk    target_len:u8 target nonce:u64
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::time::Instant;

/// The payload channel of fast-path messages in a sealed datagram (foca's is 0).
pub const CHANNEL: u8 = 1;
/// At most this many other members are asked to check a silent owner.
pub const HELPERS: usize = 3;
/// A standby renews its subscription this often...
pub const SUBSCRIBE_EVERY: Duration = Duration::from_millis(200);
/// ...and an owner sends heartbeats for this long after the last renewal.
pub const SUBSCRIPTION_LASTS: Duration = Duration::from_secs(1);
/// A verdict of this path lasts at most this long while membership still counts the owner:
/// by then SWIM has declared a dead one down (100-150 ms), so an owner it still counts is
/// alive and only unreachable from here (a broken path between two speakers).
pub const DOWN_AT_MOST: Duration = Duration::from_secs(1);
/// At most this many checks made for others at once (a bound against a flood of requests).
pub const MAX_RELAYS: usize = 1024;

/// The fast path's timers (validated bounds in `main`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FastTimers {
    /// Between two heartbeats from an owner to each subscriber.
    pub heartbeat: Duration,
    /// Heartbeat periods without a word before the owner is checked.
    pub misses: u32,
    /// How long a check waits for the owner or a helper.
    pub confirm: Duration,
}

impl Default for FastTimers {
    fn default() -> Self {
        FastTimers {
            heartbeat: Duration::from_millis(4),
            misses: 3,
            confirm: Duration::from_millis(4),
        }
    }
}

impl FastTimers {
    /// Silence after which a watched owner is checked.
    pub fn silence(&self) -> Duration {
        self.heartbeat * self.misses
    }
}

/// A fast-path message; `from` is the sender's node name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FastMsg {
    /// `every_ms`: the sender's heartbeat interval, so a watcher judges it by its pace.
    Heartbeat {
        from: String,
        seq: u64,
        every_ms: u16,
    },
    Subscribe {
        from: String,
    },
    Check {
        from: String,
        nonce: u64,
    },
    CheckAck {
        from: String,
        nonce: u64,
    },
    CheckReq {
        from: String,
        target: String,
        nonce: u64,
    },
    CheckOk {
        from: String,
        target: String,
        nonce: u64,
    },
}

/// Why a fast-path payload could not be read.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FastCodecError {
    #[error("truncated fast-path message")]
    Truncated,
    #[error("bad node name in a fast-path message")]
    BadName,
    #[error("unknown fast-path message kind {0}")]
    BadKind(u8),
    #[error("{0} bytes after a fast-path message")]
    Trailing(usize),
}

impl FastMsg {
    pub fn from(&self) -> &str {
        match self {
            FastMsg::Heartbeat { from, .. }
            | FastMsg::Subscribe { from }
            | FastMsg::Check { from, .. }
            | FastMsg::CheckAck { from, .. }
            | FastMsg::CheckReq { from, .. }
            | FastMsg::CheckOk { from, .. } => from,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        fn name(out: &mut Vec<u8>, n: &str) {
            // Node names are at most 253 bytes (checked where they come from).
            let n = &n.as_bytes()[..n.len().min(255)];
            out.push(n.len() as u8);
            out.extend_from_slice(n);
        }
        let mut out = Vec::with_capacity(32);
        let (kind, from) = match self {
            FastMsg::Heartbeat { from, .. } => (1, from),
            FastMsg::Subscribe { from } => (2, from),
            FastMsg::Check { from, .. } => (3, from),
            FastMsg::CheckAck { from, .. } => (4, from),
            FastMsg::CheckReq { from, .. } => (5, from),
            FastMsg::CheckOk { from, .. } => (6, from),
        };
        out.push(kind);
        name(&mut out, from);
        match self {
            FastMsg::Heartbeat { seq, every_ms, .. } => {
                out.extend_from_slice(&seq.to_be_bytes());
                out.extend_from_slice(&every_ms.to_be_bytes());
            }
            FastMsg::Subscribe { .. } => {}
            FastMsg::Check { nonce, .. } | FastMsg::CheckAck { nonce, .. } => {
                out.extend_from_slice(&nonce.to_be_bytes())
            }
            FastMsg::CheckReq { target, nonce, .. } | FastMsg::CheckOk { target, nonce, .. } => {
                name(&mut out, target);
                out.extend_from_slice(&nonce.to_be_bytes());
            }
        }
        out
    }

    pub fn decode(mut b: &[u8]) -> Result<FastMsg, FastCodecError> {
        fn take<'a>(b: &mut &'a [u8], n: usize) -> Result<&'a [u8], FastCodecError> {
            if b.len() < n {
                return Err(FastCodecError::Truncated);
            }
            let (head, rest) = b.split_at(n);
            *b = rest;
            Ok(head)
        }
        fn name(b: &mut &[u8]) -> Result<String, FastCodecError> {
            let len = usize::from(take(b, 1)?[0]);
            if len == 0 {
                return Err(FastCodecError::BadName);
            }
            String::from_utf8(take(b, len)?.to_vec()).map_err(|_| FastCodecError::BadName)
        }
        fn u64_(b: &mut &[u8]) -> Result<u64, FastCodecError> {
            Ok(u64::from_be_bytes(take(b, 8)?.try_into().expect("8 bytes")))
        }
        let kind = take(&mut b, 1)?[0];
        let from = name(&mut b)?;
        let msg = match kind {
            1 => FastMsg::Heartbeat {
                from,
                seq: u64_(&mut b)?,
                every_ms: u16::from_be_bytes(take(&mut b, 2)?.try_into().expect("2 bytes")),
            },
            2 => FastMsg::Subscribe { from },
            3 => FastMsg::Check {
                from,
                nonce: u64_(&mut b)?,
            },
            4 => FastMsg::CheckAck {
                from,
                nonce: u64_(&mut b)?,
            },
            5 | 6 => {
                let target = name(&mut b)?;
                let nonce = u64_(&mut b)?;
                if kind == 5 {
                    FastMsg::CheckReq {
                        from,
                        target,
                        nonce,
                    }
                } else {
                    FastMsg::CheckOk {
                        from,
                        target,
                        nonce,
                    }
                }
            }
            k => return Err(FastCodecError::BadKind(k)),
        };
        if !b.is_empty() {
            return Err(FastCodecError::Trailing(b.len()));
        }
        Ok(msg)
    }
}

/// What the driver must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FastOutput {
    /// Send `msg` to the member named `to`.
    Send { to: String, msg: FastMsg },
    /// `node` is down for this speaker (leave it out of the live set).
    Down(String),
    /// `node`, taken as down, showed life: count it again.
    Back(String),
}

#[derive(Clone, Debug)]
struct Watched {
    /// When the owner was last heard (or vouched for).
    last_heard: Instant,
    next_subscribe: Instant,
    /// A check in progress: its nonce and when it ends.
    check: Option<(u64, Instant)>,
    /// The owner's heartbeat interval, from its first heartbeat. Until one arrives the owner is
    /// not judged by this path at all: a speaker with the fast path off (or an older one)
    /// never sends any, and must not be taken as down for it.
    every: Option<Duration>,
}

/// A check this speaker makes for another one (as a helper).
#[derive(Clone, Debug)]
struct Relay {
    asker: String,
    asker_nonce: u64,
    target: String,
    until: Instant,
}

/// The detector of one speaker. See the module documentation.
#[derive(Debug)]
pub struct FastDetector {
    me: String,
    timers: FastTimers,
    /// Live members by name (this speaker excluded): whom we may ask and send to.
    members: BTreeSet<String>,
    watched: BTreeMap<String, Watched>,
    /// When any datagram last came from each member.
    heard: BTreeMap<String, Instant>,
    /// Owners taken as down by this path, and since when; until membership drops them, they
    /// show life, a helper vouches for them, or [`DOWN_AT_MOST`] passes.
    down: BTreeMap<String, Instant>,
    /// Subscribers to our heartbeats and until when.
    subscribers: BTreeMap<String, Instant>,
    next_heartbeat: Option<Instant>,
    seq: u64,
    /// The highest heartbeat sequence seen per sender (a replayed heartbeat is no sign of life).
    last_seq: BTreeMap<String, u64>,
    relays: BTreeMap<u64, Relay>,
    next_nonce: u64,
}

impl FastDetector {
    /// `seq_base`: the first heartbeat sequence number (the start time in ms times 1000, so a
    /// restarted speaker's heartbeats are newer than its previous life's); `nonce_seed`: any
    /// random number.
    pub fn new(me: &str, timers: FastTimers, seq_base: u64, nonce_seed: u64) -> FastDetector {
        FastDetector {
            me: me.to_owned(),
            timers,
            members: BTreeSet::new(),
            watched: BTreeMap::new(),
            heard: BTreeMap::new(),
            down: BTreeMap::new(),
            subscribers: BTreeMap::new(),
            next_heartbeat: None,
            seq: seq_base,
            last_seq: BTreeMap::new(),
            relays: BTreeMap::new(),
            next_nonce: nonce_seed,
        }
    }

    pub fn timers(&self) -> FastTimers {
        self.timers
    }

    /// The owners taken as down now.
    pub fn down(&self) -> impl Iterator<Item = &String> {
        self.down.keys()
    }

    /// Whether `name` is taken as down now.
    pub fn is_down(&self, name: &str) -> bool {
        self.down.contains_key(name)
    }

    fn nonce(&mut self) -> u64 {
        // A Weyl sequence from a random seed: distinct for 2^64 checks, not guessable up front.
        self.next_nonce = self.next_nonce.wrapping_add(0x9e37_79b9_7f4a_7c15);
        self.next_nonce
    }

    /// The live members as membership sees them. A member membership dropped is forgotten
    /// here, down or not (its verdict is SWIM's now).
    pub fn set_members(&mut self, members: BTreeSet<String>, now: Instant) -> Vec<FastOutput> {
        let mut out = Vec::new();
        self.down.retain(|n, _| members.contains(n));
        self.last_seq.retain(|n, _| members.contains(n));
        self.heard.retain(|n, _| members.contains(n));
        self.subscribers.retain(|n, _| members.contains(n));
        for (name, w) in self.watched.iter_mut() {
            if !self.members.contains(name) && members.contains(name) {
                // Back in membership after SWIM dropped it: count from now, and wait for its
                // first heartbeat again.
                w.last_heard = now;
                w.check = None;
                w.every = None;
            }
        }
        self.members = members;
        self.members.remove(&self.me);
        self.subscribe_due(now, &mut out);
        out
    }

    /// The owners this speaker is the hot standby of (from the plan).
    pub fn set_watched(&mut self, owners: BTreeSet<String>, now: Instant) -> Vec<FastOutput> {
        let mut out = Vec::new();
        // An owner taken as down stays watched: the plan no longer ranks it, but it is checked
        // again (it may be alive behind a broken path).
        let down = &self.down;
        self.watched
            .retain(|n, _| owners.contains(n) || down.contains_key(n));
        for o in owners {
            if o == self.me || self.watched.contains_key(&o) {
                continue;
            }
            self.watched.insert(
                o,
                Watched {
                    last_heard: now,
                    next_subscribe: now,
                    check: None,
                    every: None,
                },
            );
        }
        self.subscribe_due(now, &mut out);
        out
    }

    /// First-hand, fresh word from `name`: a membership datagram (the replay cache guards
    /// those), a new heartbeat, or an answer to one of our nonces. It is alive.
    pub fn heard(&mut self, name: &str, now: Instant) -> Vec<FastOutput> {
        let mut out = Vec::new();
        self.heard.insert(name.to_owned(), now);
        if let Some(w) = self.watched.get_mut(name) {
            w.last_heard = now;
            w.check = None;
        }
        if self.down.remove(name).is_some() {
            out.push(FastOutput::Back(name.to_owned()));
        }
        out
    }

    /// Whether this speaker itself heard `name` within two heartbeat periods: recent enough
    /// that an owner which died after its last heartbeat is not vouched for again (which
    /// would put off its takeover by a whole round).
    fn heard_within(&self, name: &str, now: Instant) -> bool {
        let window = (self.timers.heartbeat * 2).min(self.timers.silence());
        self.heard
            .get(name)
            .is_some_and(|at| now.saturating_duration_since(*at) <= window)
    }

    fn send(out: &mut Vec<FastOutput>, to: &str, msg: FastMsg) {
        out.push(FastOutput::Send {
            to: to.to_owned(),
            msg,
        });
    }

    /// A fast-path message from a member.
    pub fn receive(&mut self, msg: FastMsg, now: Instant) -> Vec<FastOutput> {
        let from = msg.from().to_owned();
        if from == self.me || !self.members.contains(&from) {
            return Vec::new();
        }
        let mut out = Vec::new();
        match msg {
            FastMsg::Heartbeat { seq, every_ms, .. } => {
                let last = self.last_seq.entry(from.clone()).or_insert(0);
                if seq <= *last {
                    return out; // replayed or reordered: no news
                }
                *last = seq;
                if let Some(w) = self.watched.get_mut(&from) {
                    w.every = Some(Duration::from_millis(u64::from(every_ms.max(1))));
                }
                out.extend(self.heard(&from, now));
            }
            // Requests are no sign of life (they are not guarded against replay): only fresh
            // heartbeats and answers to our own nonces are.
            FastMsg::Subscribe { .. } => {
                self.subscribers.insert(from, now + SUBSCRIPTION_LASTS);
                if self.next_heartbeat.is_none() {
                    self.next_heartbeat = Some(now);
                }
            }
            FastMsg::Check { nonce, .. } => {
                let me = self.me.clone();
                Self::send(&mut out, &from, FastMsg::CheckAck { from: me, nonce });
            }
            FastMsg::CheckAck { nonce, .. } => {
                let ours = self
                    .watched
                    .get(&from)
                    .and_then(|w| w.check)
                    .is_some_and(|(n, _)| n == nonce);
                let relayed = self.relays.get(&nonce).is_some_and(|r| r.target == from);
                if ours || relayed {
                    out.extend(self.heard(&from, now));
                }
                if let Some(r) = self.relays.remove(&nonce) {
                    if r.target == from {
                        let msg = FastMsg::CheckOk {
                            from: self.me.clone(),
                            target: r.target,
                            nonce: r.asker_nonce,
                        };
                        Self::send(&mut out, &r.asker, msg);
                    }
                }
            }
            FastMsg::CheckReq { target, nonce, .. } => {
                if target == self.me {
                    let me = self.me.clone();
                    Self::send(&mut out, &from, FastMsg::CheckAck { from: me, nonce });
                } else if self.heard_within(&target, now) {
                    let msg = FastMsg::CheckOk {
                        from: self.me.clone(),
                        target,
                        nonce,
                    };
                    Self::send(&mut out, &from, msg);
                } else if self.members.contains(&target) && self.relays.len() < MAX_RELAYS {
                    let ours = self.nonce();
                    self.relays.insert(
                        ours,
                        Relay {
                            asker: from,
                            asker_nonce: nonce,
                            target: target.clone(),
                            until: now + self.timers.confirm,
                        },
                    );
                    let me = self.me.clone();
                    Self::send(
                        &mut out,
                        &target,
                        FastMsg::Check {
                            from: me,
                            nonce: ours,
                        },
                    );
                }
            }
            FastMsg::CheckOk { target, nonce, .. } => {
                let ours = self
                    .watched
                    .get(&target)
                    .and_then(|w| w.check)
                    .is_some_and(|(n, _)| n == nonce);
                if ours {
                    // A helper heard the owner: alive, whatever our own path says. Second-hand
                    // word only ends this check: it is not ours to pass on (a vouch that counted
                    // as hearing would be vouched on, and a dead owner kept alive by rumour).
                    if let Some(w) = self.watched.get_mut(&target) {
                        w.last_heard = now;
                        w.check = None;
                    }
                    if self.down.remove(&target).is_some() {
                        out.push(FastOutput::Back(target));
                    }
                }
            }
        }
        out
    }

    fn subscribe_due(&mut self, now: Instant, out: &mut Vec<FastOutput>) {
        let me = self.me.clone();
        for (name, w) in self.watched.iter_mut() {
            if w.next_subscribe <= now && self.members.contains(name) {
                w.next_subscribe = now + SUBSCRIBE_EVERY;
                Self::send(out, name, FastMsg::Subscribe { from: me.clone() });
            }
        }
    }

    /// Time passed: heartbeats, renewals, suspicions and verdicts that are due.
    pub fn tick(&mut self, now: Instant) -> Vec<FastOutput> {
        let mut out = Vec::new();
        // Heartbeats to every current subscriber, on a fixed cadence.
        self.subscribers.retain(|_, until| *until > now);
        if self.subscribers.is_empty() {
            self.next_heartbeat = None;
        } else if let Some(at) = self.next_heartbeat.filter(|at| *at <= now) {
            self.seq += 1;
            let (me, seq) = (self.me.clone(), self.seq);
            for s in self.subscribers.keys() {
                let msg = FastMsg::Heartbeat {
                    from: me.clone(),
                    seq,
                    every_ms: u16::try_from(self.timers.heartbeat.as_millis()).unwrap_or(u16::MAX),
                };
                Self::send(&mut out, s, msg);
            }
            // Catch up without a burst after a stall.
            let mut next = at + self.timers.heartbeat;
            if next <= now {
                next = now + self.timers.heartbeat;
            }
            self.next_heartbeat = Some(next);
        }
        self.subscribe_due(now, &mut out);
        self.relays.retain(|_, r| r.until > now);
        // Suspicions and verdicts. An owner is judged by its own pace (the slower of its
        // heartbeat and ours), and only once it sent one; one taken as down is checked again
        // every silence, and given back after DOWN_AT_MOST if membership still counts it.
        let mut start = Vec::new();
        for (name, w) in self.watched.iter_mut() {
            let Some(every) = w.every else { continue };
            if !self.members.contains(name) {
                continue;
            }
            let silence = self.timers.silence().max(every * self.timers.misses);
            if let Some(since) = self.down.get(name) {
                if now.saturating_duration_since(*since) >= DOWN_AT_MOST {
                    self.down.remove(name);
                    w.last_heard = now;
                    w.check = None;
                    out.push(FastOutput::Back(name.clone()));
                    continue;
                }
                match w.check {
                    Some((_, until)) if until <= now => {
                        w.check = None;
                        w.last_heard = now; // next check in one silence
                    }
                    Some(_) => {}
                    None if now.saturating_duration_since(w.last_heard) >= silence => {
                        start.push(name.clone());
                    }
                    None => {}
                }
                continue;
            }
            match w.check {
                Some((_, until)) if until <= now => {
                    w.check = None;
                    // Nothing since the check began (anything heard clears it).
                    self.down.insert(name.clone(), now);
                    out.push(FastOutput::Down(name.clone()));
                }
                Some(_) => {}
                None if now.saturating_duration_since(w.last_heard) >= silence => {
                    start.push(name.clone());
                }
                None => {}
            }
        }
        for target in start {
            let nonce = self.nonce();
            if let Some(w) = self.watched.get_mut(&target) {
                w.check = Some((nonce, now + self.timers.confirm));
            }
            let me = self.me.clone();
            Self::send(
                &mut out,
                &target,
                FastMsg::Check {
                    from: me.clone(),
                    nonce,
                },
            );
            // Helpers: the members most recently heard (a helper that hears nobody is no help).
            let mut helpers: Vec<(&String, Option<Instant>)> = self
                .members
                .iter()
                .filter(|m| **m != target)
                .map(|m| (m, self.heard.get(m).copied()))
                .collect();
            // Latest first (None, never heard, sorts last), then by name.
            helpers.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
            let helpers: Vec<String> = helpers
                .into_iter()
                .take(HELPERS)
                .map(|(m, _)| m.clone())
                .collect();
            for h in helpers {
                let msg = FastMsg::CheckReq {
                    from: me.clone(),
                    target: target.clone(),
                    nonce,
                };
                Self::send(&mut out, &h, msg);
            }
        }
        out
    }

    /// When [`FastDetector::tick`] has something to do next.
    pub fn next_deadline(&self) -> Option<Instant> {
        let watch = self
            .watched
            .iter()
            .filter(|(n, _)| self.members.contains(*n))
            .map(|(n, w)| {
                let judged = w.every.map(|every| {
                    let silence = self.timers.silence().max(every * self.timers.misses);
                    let when = match w.check {
                        Some((_, until)) => until,
                        None => w.last_heard + silence,
                    };
                    match self.down.get(n) {
                        Some(since) => when.min(*since + DOWN_AT_MOST),
                        None => when,
                    }
                });
                judged.map_or(w.next_subscribe, |j| j.min(w.next_subscribe))
            });
        let relays = self.relays.values().map(|r| r.until);
        let subs = self.subscribers.values().copied();
        watch
            .chain(relays)
            .chain(subs)
            .chain(self.next_heartbeat)
            .min()
    }
}

#[cfg(test)]
mod tests;
