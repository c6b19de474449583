//! The thin tokio driver around foca: one UDP socket, a timer queue, and commands.

use super::auth::{AuthError, Sealer};
use super::config::{MembershipConfig, Peer, Security};
use super::fast::{self, FastDetector, FastMsg, FastOutput};
use super::identity::{NodeId, WireCodec};
use super::{MemberInfo, Stats};
use crate::wait::sleep_until_opt;
use foca::{AccumulatingRuntime, Foca, NoCustomBroadcast, OwnedNotification, Timer};
use rand_foca::rngs::StdRng;
use rand_foca::Rng;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

pub(super) enum Command {
    SetPeers(Vec<Peer>),
    /// The owners this speaker is the hot standby of (the fast path watches them).
    Watch(BTreeSet<String>),
    Leave(oneshot::Sender<()>),
}

/// The payload channel of foca's messages in a sealed datagram (the fast path's is
/// [`fast::CHANNEL`]).
const FOCA_CHANNEL: u8 = 0;

type Swim = Foca<NodeId, WireCodec, StdRng, NoCustomBroadcast>;

pub(super) fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

pub(super) struct Driver {
    pub socket: UdpSocket,
    /// The same socket (non-blocking), read without waiting for tokio's readiness.
    pub direct: std::net::UdpSocket,
    pub config: MembershipConfig,
    pub me: NodeId,
    pub stats: Arc<Stats>,
    pub live_tx: watch::Sender<BTreeSet<String>>,
    /// Counts the times this speaker found itself starved for long enough to be taken as down
    /// by the fast path elsewhere.
    pub stalls_tx: watch::Sender<u64>,
    pub members_tx: watch::Sender<BTreeMap<String, MemberInfo>>,
    pub commands: mpsc::UnboundedReceiver<Command>,
}

struct State {
    swim: Swim,
    rt: AccumulatingRuntime<NodeId>,
    sealer: Sealer,
    rng: StdRng,
    timers: BTreeMap<(Instant, u64), Timer<NodeId>>,
    timer_seq: u64,
    peers: Vec<Peer>,
    /// When each live member was first seen live in its current generation.
    since: BTreeMap<String, (u64, Instant)>,
    /// Whether `members` is published yet (see [`super::Membership::members`]).
    joined: bool,
    started: Instant,
    /// When an authenticated datagram last came from each address.
    heard: BTreeMap<SocketAddr, Instant>,
    /// Members declared down while they were still talking to us, kept live until their
    /// renewed identity arrives (see [`Driver::still_talking`]), at most until the instant.
    lingering: BTreeMap<String, (NodeId, Instant)>,
    /// The source of the datagram being handled: a member's own word that it is down (a
    /// graceful leave) is believed at once.
    handling_from: Option<SocketAddr>,
    /// When an authenticated datagram last came from anyone.
    last_heard_any: Instant,
    /// When this speaker last noticed it had heard nobody for [`Driver::silence`].
    cut_off_at: Option<Instant>,
    /// Leaving: foca reports `Defunct` for our own goodbye, which must not renew us.
    leaving: bool,
    /// The fast path for L2 owners, if enabled.
    fast: Option<FastDetector>,
    /// The max_transmissions foca runs with now (scaled with the cluster's size).
    max_transmissions: u8,
    /// Members' names by address and addresses by name (foca's members and lingering ones).
    names: BTreeMap<SocketAddr, String>,
    addrs: BTreeMap<String, SocketAddr>,
}

/// A member declared down that sent us something this recently is alive: it was declared down
/// by others (a healed partition gossips its stale verdicts) and is renewing its identity.
const TALKING: Duration = Duration::from_millis(60);
/// How long such a member is kept live while its renewed identity is on the way.
const LINGER_AT_MOST: Duration = Duration::from_secs(2);
/// A renewal this soon after a silence is a return from isolation (the verdict that we were
/// down reaches us within a few probe periods of the link coming back).
const CUT_OFF_RECENTLY: Duration = Duration::from_secs(2);

impl Driver {
    pub async fn run(mut self) {
        let foca_config = self
            .config
            .timers
            .to_foca()
            .expect("validated before the driver starts");
        let key = match &self.config.security {
            Security::Key(k) => Some(k.clone()),
            Security::Insecure => None,
        };
        let mut st = State {
            swim: Foca::new(
                self.me.clone(),
                foca_config,
                rand_foca::make_rng::<StdRng>(),
                WireCodec,
            ),
            rt: AccumulatingRuntime::new(),
            sealer: Sealer::new(key, self.config.timers.max_clock_skew.as_millis() as u64),
            rng: rand_foca::make_rng::<StdRng>(),
            timers: BTreeMap::new(),
            timer_seq: 0,
            peers: Vec::new(),
            since: BTreeMap::new(),
            joined: false,
            started: Instant::now(),
            heard: BTreeMap::new(),
            lingering: BTreeMap::new(),
            handling_from: None,
            last_heard_any: Instant::now(),
            cut_off_at: None,
            leaving: false,
            fast: self.config.fast.map(|t| {
                let seed = rand_foca::make_rng::<StdRng>().next_u64();
                FastDetector::new(
                    &self.me.name,
                    t,
                    self.me.generation.saturating_mul(1000),
                    seed,
                )
            }),
            names: BTreeMap::new(),
            addrs: BTreeMap::new(),
            max_transmissions: self.config.timers.max_transmissions,
        };
        st.since
            .insert(self.me.name.clone(), (self.me.generation, Instant::now()));
        self.set_peers(&mut st, self.config.peers.clone());
        self.publish(&mut st);

        let mut announce = tokio::time::interval(self.config.timers.announce_interval);
        announce.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut buf = vec![0u8; 65536];
        loop {
            let next = st.timers.keys().next().map(|(at, _)| *at);
            // While a member lingers, look again when it would have fallen silent or its time
            // is up (a fixed instant: the loop turns every few ms and must not push it away).
            let linger_check = st
                .lingering
                .values()
                .map(|(id, until)| {
                    let silent = st
                        .heard
                        .get(&id.addr)
                        .map_or(Instant::now(), |at| *at + TALKING);
                    silent.min(*until)
                })
                .min();
            let fast_due = st.fast.as_ref().and_then(FastDetector::next_deadline);
            tokio::select! {
                _ = sleep_until_opt(linger_check) => self.publish(&mut st),
                r = self.socket.recv_from(&mut buf) => match r {
                    Ok((n, from)) => {
                        self.on_datagram(&mut st, &buf[..n], from);
                        st.handling_from = Some(from);
                    }
                    Err(e) => {
                        // ICMP errors surface here on some kernels; never fatal.
                        tracing::debug!(error = %e, "membership recv error");
                        self.stats.recv_errors.fetch_add(1, Relaxed);
                    }
                },
                _ = sleep_until_opt(next) => self.fire_timers(&mut st),
                _ = sleep_until_opt(fast_due) => {
                    // Woken this late, this speaker's own heartbeats and answers were as late:
                    // standbys may have taken its addresses, and clients must be told again.
                    if let (Some(due), Some(f)) = (fast_due, st.fast.as_ref()) {
                        let t = f.timers();
                        if Instant::now().saturating_duration_since(due) >= t.silence() {
                            self.stalls_tx.send_modify(|n| *n += 1);
                            tracing::warn!(late_ms = Instant::now().saturating_duration_since(due).as_millis() as u64, "this speaker was stalled: its addresses are announced again");
                        }
                    }
                    // What already arrived counts first: after this thread was starved, the
                    // heartbeats waiting in the socket must not be missed (a stalled watcher
                    // taking everybody down at once was seen in the lab).
                    self.read_waiting(&mut st, &mut buf);
                    let now = Instant::now();
                    self.note_silence(&mut st, now);
                    let out = st.fast.as_mut().map(|f| f.tick(now)).unwrap_or_default();
                    self.fast_outputs(&mut st, out);
                }
                _ = announce.tick() => {
                    self.announce_to_absent_peers(&mut st);
                    // The join wait may have ended.
                    if !st.joined {
                        self.publish(&mut st);
                    }
                }
                cmd = self.commands.recv() => match cmd {
                    Some(Command::SetPeers(p)) => self.set_peers(&mut st, p),
                    Some(Command::Watch(owners)) => {
                        let now = Instant::now();
                        tracing::info!(?owners, "fast path: watching");
                        let out = st
                            .fast
                            .as_mut()
                            .map(|f| f.set_watched(owners, now))
                            .unwrap_or_default();
                        self.fast_outputs(&mut st, out);
                    }
                    Some(Command::Leave(done)) => {
                        self.leave(&mut st).await;
                        let _ = done.send(());
                        return;
                    }
                    // The handle was dropped without leaving: stop silently (hard stop).
                    None => return,
                },
            }
            self.drain(&mut st);
            st.handling_from = None;
        }
    }

    fn on_datagram(&self, st: &mut State, datagram: &[u8], from: SocketAddr) {
        self.stats.received.fetch_add(1, Relaxed);
        // Fast-path messages carry their own replay protection (see `fast`).
        let remember = |p: &[u8]| p.first() != Some(&fast::CHANNEL);
        let payload = match st.sealer.open_with(datagram, wall_ms(), remember) {
            Ok(p) => p,
            Err(e) => {
                let counter = match e {
                    AuthError::Malformed => &self.stats.dropped_malformed,
                    AuthError::WrongMode(_) | AuthError::BadTag => {
                        &self.stats.dropped_unauthenticated
                    }
                    AuthError::Stale => &self.stats.dropped_stale,
                    AuthError::Replay => &self.stats.dropped_replay,
                };
                counter.fetch_add(1, Relaxed);
                tracing::debug!(%from, error = %e, "membership datagram dropped");
                return;
            }
        };
        let now = Instant::now();
        self.note_silence(st, now);
        st.last_heard_any = now;
        st.heard.insert(from, now);
        let (channel, body) = match payload.split_first() {
            Some((c, b)) => (*c, b),
            None => {
                self.stats.dropped_protocol.fetch_add(1, Relaxed);
                return;
            }
        };
        match channel {
            FOCA_CHANNEL => {
                // A membership datagram (guarded by the replay cache) is a sign of life for the
                // fast path; its own messages prove life only by their contents (see `fast`).
                if let (Some(name), Some(f)) = (st.names.get(&from), st.fast.as_mut()) {
                    let out = f.heard(&name.clone(), now);
                    self.fast_outputs(st, out);
                }
                if let Err(e) = st.swim.handle_data(body, &mut st.rt) {
                    self.stats.dropped_protocol.fetch_add(1, Relaxed);
                    tracing::debug!(%from, error = %e, "membership payload refused");
                }
            }
            fast::CHANNEL => match (FastMsg::decode(body), st.fast.as_mut()) {
                // A key holder may only speak for itself: the name must be its address's.
                (Ok(msg), Some(_))
                    if st.names.get(&from).map(String::as_str) != Some(msg.from()) =>
                {
                    self.stats.dropped_protocol.fetch_add(1, Relaxed);
                    tracing::debug!(%from, claimed = msg.from(), "fast-path message from another member's address");
                }
                (Ok(msg), Some(f)) => {
                    let out = f.receive(msg, now);
                    self.fast_outputs(st, out);
                }
                // The fast path is off here: its messages are not an error.
                (Ok(_), None) => {}
                (Err(e), _) => {
                    self.stats.dropped_protocol.fetch_add(1, Relaxed);
                    tracing::debug!(%from, error = %e, "fast-path payload refused");
                }
            },
            c => {
                self.stats.dropped_protocol.fetch_add(1, Relaxed);
                tracing::debug!(%from, channel = c, "membership payload on an unknown channel");
            }
        }
    }

    /// Handles every datagram already waiting in the socket (at most a bounded number). Read
    /// through the direct handle: tokio's `try_recv_from` trusts the reactor's readiness, which
    /// after a stall may not have seen the socket yet.
    fn read_waiting(&self, st: &mut State, buf: &mut [u8]) {
        for _ in 0..1024 {
            match self.direct.recv_from(buf) {
                Ok((n, from)) => {
                    self.on_datagram(st, &buf[..n], from);
                    st.handling_from = Some(from);
                    self.drain(st);
                    st.handling_from = None;
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    tracing::debug!(error = %e, "membership recv error");
                    self.stats.recv_errors.fetch_add(1, Relaxed);
                    break;
                }
            }
        }
    }

    /// Sends the fast path's messages and publishes its verdicts.
    fn fast_outputs(&self, st: &mut State, out: Vec<FastOutput>) {
        let mut changed = false;
        for o in out {
            match o {
                FastOutput::Send { to, msg } => self.send_fast(st, &to, &msg),
                FastOutput::Down(node) => {
                    let t = st
                        .fast
                        .as_ref()
                        .map(FastDetector::timers)
                        .unwrap_or_default();
                    tracing::warn!(
                        %node,
                        silent_ms = t.silence().as_millis() as u64,
                        confirm_ms = t.confirm.as_millis() as u64,
                        "owner silent and no helper heard it: taken as down (fast path)"
                    );
                    self.stats.fast_downs.fetch_add(1, Relaxed);
                    changed = true;
                }
                FastOutput::Back(node) => {
                    tracing::warn!(%node, "owner taken as down showed life: counted again (fast path)");
                    self.stats.fast_backs.fetch_add(1, Relaxed);
                    changed = true;
                }
            }
        }
        if changed {
            self.publish(st);
        }
    }

    /// A fast-path message to member `to` (nothing if its address is unknown): its channel
    /// byte, then the message, sealed.
    fn send_fast(&self, st: &mut State, to: &str, msg: &fast::FastMsg) {
        let Some(addr) = st.addrs.get(to).copied() else {
            return;
        };
        let mut payload = Vec::with_capacity(40);
        payload.push(fast::CHANNEL);
        payload.extend_from_slice(&msg.encode());
        self.send_sealed(st, addr, &payload);
    }

    fn send_sealed(&self, st: &mut State, to: SocketAddr, payload: &[u8]) {
        let sealed = st.sealer.seal(payload, wall_ms(), st.rng.next_u64());
        // Straight to the kernel: tokio's try_send_to says WouldBlock until its reactor
        // has seen the fresh socket writable, which dropped the first join messages.
        match socket2::SockRef::from(&self.socket).send_to(&sealed, &to.into()) {
            Ok(_) => {
                self.stats.sent.fetch_add(1, Relaxed);
            }
            Err(e) => {
                self.stats.send_errors.fetch_add(1, Relaxed);
                tracing::debug!(%to, error = %e, "membership send");
            }
        }
    }

    /// A speaker that heard nobody at all for [`Driver::silence`] was cut off (its link, its
    /// membership port, or a stall): while the others run, some member probes or acks it
    /// every probe period. Checked on every datagram and timer, so the end of a silence is
    /// seen by the first datagram after it.
    fn note_silence(&self, st: &mut State, now: Instant) {
        if now.saturating_duration_since(st.last_heard_any) >= self.silence()
            && st.swim.num_members() + st.peers.len() > 0
        {
            st.cut_off_at = Some(now);
        }
    }

    /// As long as membership needs to declare a member down (a failed probe, then the
    /// suspicion: 85 ms by default), so every outage that gets this speaker declared down is
    /// seen; at least two probe periods, since a speaker hears an ack for its own probe of a
    /// live member every period (and heartbeats every few ms with the fast path).
    fn silence(&self) -> Duration {
        let t = &self.config.timers;
        (t.probe_rtt + t.suspect_to_down_after)
            .min(t.probe_period * 5)
            .max(t.probe_period * 2)
    }

    /// Declared down while alive: come back as the next generation, at once.
    fn renew(&self, st: &mut State) {
        let now = Instant::now();
        let cut_off = st
            .cut_off_at
            .is_some_and(|at| now.saturating_duration_since(at) < CUT_OFF_RECENTLY);
        let id = st.swim.identity().renewed(cut_off, wall_ms());
        let (generation, penalty) = (id.generation, id.flaps.penalty);
        match st.swim.change_identity(id, &mut st.rt) {
            Ok(()) => tracing::warn!(
                generation,
                cut_off,
                flap_penalty = penalty,
                "declared down while alive; rejoined"
            ),
            Err(e) => tracing::error!(error = %e, "membership: renewing the identity failed"),
        }
    }

    fn fire_timers(&self, st: &mut State) {
        let now = Instant::now();
        self.note_silence(st, now);
        let mut due = Vec::new();
        while let Some(entry) = st.timers.first_entry() {
            if entry.key().0 > now {
                break;
            }
            due.push(entry.remove());
        }
        // foca wants SendIndirectProbe handled before ProbeRandomMember when both are late.
        due.sort();
        for t in due {
            if let Err(e) = st.swim.handle_timer(t, &mut st.rt) {
                tracing::debug!(error = %e, "membership timer");
            }
        }
    }

    fn set_peers(&self, st: &mut State, mut peers: Vec<Peer>) {
        peers.retain(|p| p.name != self.me.name);
        peers.sort();
        peers.dedup_by(|a, b| a.name == b.name);
        let new: Vec<Peer> = peers
            .iter()
            .filter(|p| !st.peers.contains(p))
            .cloned()
            .collect();
        st.peers = peers;
        for p in new {
            self.announce(st, &p);
        }
    }

    fn announce(&self, st: &mut State, p: &Peer) {
        // The destination's generation is unknown; foca accepts an Announce for any
        // generation of the right name.
        let dst = NodeId {
            name: p.name.clone(),
            addr: SocketAddr::new(p.ip, self.config.port),
            generation: 0,
            flaps: Default::default(),
        };
        let _ = st.swim.announce(dst, &mut st.rt);
    }

    fn announce_to_absent_peers(&self, st: &mut State) {
        let live: BTreeSet<&str> = st
            .swim
            .iter_members()
            .map(|m| m.id().name.as_str())
            .collect();
        let absent: Vec<Peer> = st
            .peers
            .iter()
            .filter(|p| !live.contains(p.name.as_str()))
            .cloned()
            .collect();
        for p in absent {
            self.announce(st, &p);
        }
    }

    async fn leave(&self, st: &mut State) {
        // Say we are leaving to a few members, then repeat twice so one lost datagram does
        // not turn a planned handover into a 100 ms failure detection.
        st.leaving = true;
        let _ = st.swim.leave_cluster(&mut st.rt);
        self.drain(st);
        for _ in 0..2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
            let _ = st.swim.gossip(&mut st.rt);
            self.drain(st);
        }
    }

    /// Sends what foca queued, schedules its timers, and publishes membership changes.
    fn drain(&self, st: &mut State) {
        // A renewal queues more to send: at most one round more (foca is not undead after it).
        for _ in 0..2 {
            if !self.drain_once(st) {
                break;
            }
        }
    }

    /// One pass of [`Driver::drain`]; true if the identity was renewed.
    fn drain_once(&self, st: &mut State) -> bool {
        let mut renew = false;
        while let Some((to, data)) = st.rt.to_send() {
            let mut payload = Vec::with_capacity(data.len() + 1);
            payload.push(FOCA_CHANNEL);
            payload.extend_from_slice(&data);
            self.send_sealed(st, to.addr, &payload);
        }
        let now = Instant::now();
        while let Some((after, timer)) = st.rt.to_schedule() {
            // foca has no suspicion notification; this timer is armed exactly when it suspects.
            if matches!(timer, Timer::ChangeSuspectToDown { .. }) {
                self.stats.suspicions.fetch_add(1, Relaxed);
            }
            st.timer_seq += 1;
            st.timers.insert((now + after, st.timer_seq), timer);
        }
        let mut changed = false;
        while let Some(n) = st.rt.to_notify() {
            match &n {
                OwnedNotification::MemberUp(id) => {
                    self.stats.member_up.fetch_add(1, Relaxed);
                    tracing::info!(node = %id.name, "speaker up");
                }
                OwnedNotification::MemberDown(id) => {
                    self.stats.member_down.fetch_add(1, Relaxed);
                    let own_word = st.handling_from == Some(id.addr);
                    if !own_word && self.still_talking(st, id) {
                        tracing::info!(node = %id.name, "declared down but still talking to us: kept live while it renews");
                        st.lingering
                            .insert(id.name.clone(), (id.clone(), now + LINGER_AT_MOST));
                    } else {
                        tracing::warn!(node = %id.name, "speaker down");
                    }
                }
                OwnedNotification::Defunct => renew = !st.leaving,
                _ => {}
            }
            changed = true;
        }
        if renew {
            self.renew(st);
        }
        if changed {
            self.publish(st);
        }
        renew
    }

    /// Whether `id`'s address sent us an authenticated datagram within [`TALKING`]. A member
    /// that really died is declared down 75 ms or more after its last datagram, so this never
    /// keeps a dead member alive for more than a few milliseconds.
    fn still_talking(&self, st: &State, id: &NodeId) -> bool {
        st.heard
            .get(&id.addr)
            .is_some_and(|at| at.elapsed() < TALKING)
    }

    fn publish(&self, st: &mut State) {
        let now = Instant::now();
        let me = st.swim.identity().clone();
        let mut members = BTreeMap::new();
        let mut current = vec![me];
        current.extend(st.swim.iter_members().map(|m| m.id().clone()));
        // Lingering members stay until their new identity is a member, they fall silent, or
        // their time is up.
        let present: BTreeSet<String> = current.iter().map(|id| id.name.clone()).collect();
        let lingering = std::mem::take(&mut st.lingering);
        for (name, (id, until)) in lingering {
            if present.contains(&name) {
                continue;
            }
            if now < until && self.still_talking(st, &id) {
                current.push(id.clone());
                st.lingering.insert(name, (id, until));
            } else {
                tracing::warn!(node = %name, "speaker down");
            }
        }
        for id in current {
            let since = match st.since.get(&id.name) {
                Some((g, at)) if *g == id.generation => *at,
                _ => now,
            };
            members.insert(
                id.name.clone(),
                MemberInfo {
                    addr: id.addr,
                    generation: id.generation,
                    flaps: id.flaps,
                    live_since: since,
                },
            );
        }
        st.since = members
            .iter()
            .map(|(n, m)| (n.clone(), (m.generation, m.live_since)))
            .collect();
        // Updates must reach every member of a large cluster: ride on more datagrams there.
        let want = self.config.timers.max_transmissions_for(members.len());
        if want != st.max_transmissions {
            if let (Ok(mut c), Some(t)) =
                (self.config.timers.to_foca(), std::num::NonZeroU8::new(want))
            {
                c.max_transmissions = t;
                if st.swim.set_config(c).is_ok() {
                    tracing::info!(
                        members = members.len(),
                        max_transmissions = want,
                        "membership: updates ride on more datagrams"
                    );
                    st.max_transmissions = want;
                }
            }
        }
        st.addrs = members.iter().map(|(n, m)| (n.clone(), m.addr)).collect();
        st.names = members.iter().map(|(n, m)| (m.addr, n.clone())).collect();
        if let Some(f) = st.fast.as_mut() {
            let out = f.set_members(members.keys().cloned().collect(), now);
            for o in out {
                if let FastOutput::Send { to, msg } = o {
                    self.send_fast(st, &to, &msg);
                }
            }
            // Owners the fast path took as down are left out of what the plan sees; SWIM's
            // verdict follows (or they show life and come back).
            let me = &self.me.name;
            if let Some(f) = st.fast.as_ref() {
                members.retain(|n, _| n == me || !f.is_down(n));
            }
        }
        let names: BTreeSet<String> = members.keys().cloned().collect();
        self.live_tx.send_if_modified(|old| {
            if *old != names {
                *old = names;
                true
            } else {
                false
            }
        });
        if !st.joined {
            let all_peers = st.peers.iter().all(|p| members.contains_key(&p.name));
            st.joined = all_peers || now >= st.started + self.config.timers.announce_interval;
            if !st.joined {
                return;
            }
            tracing::info!(
                members = members.len(),
                all_peers,
                "membership joined: plans may use it"
            );
        }
        self.members_tx.send_if_modified(|old| {
            if *old != members {
                *old = members;
                true
            } else {
                false
            }
        });
    }
}
