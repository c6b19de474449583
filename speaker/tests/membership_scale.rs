//! Membership at scale, simulated: N speakers' SWIM (foca, with the speaker's own identity
//! codec and default timers) in one process over a simulated network with latency and loss,
//! on a simulated clock (foca is clock-free: every timer is an event here). Measures the time
//! to converge, false suspicions and false deaths at 1% loss, the time until every member
//! declares a killed one dead, and bytes per second per member on the wire (each datagram as
//! sealed by the speaker: 22-byte prefix, channel byte, 32-byte HMAC, plus IP and UDP headers).
//!
//! The CI variant runs 50 members for 10 simulated seconds; the figures of docs/benchmarks.md
//! ("Membership at scale") come from the ignored one:
//! `cargo test --release -p ferrolb-speaker --test membership_scale -- --ignored --nocapture`.

use ferrolb_speaker::membership::identity::{NodeId, WireCodec};
use ferrolb_speaker::membership::Timers;
use foca::{AccumulatingRuntime, Foca, NoCustomBroadcast, OwnedNotification, Timer};
use rand_foca::rngs::StdRng;
use rand_foca::SeedableRng;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

type Swim = Foca<NodeId, WireCodec, StdRng, NoCustomBroadcast>;

/// Sealing and headers around each foca payload: prefix 22 + channel 1 + HMAC 32 + UDP 8 +
/// IPv4 20 (IPv6 would add 20 more).
const OVERHEAD: usize = 22 + 1 + 32 + 8 + 20;

enum Event {
    Deliver { to: usize, data: Vec<u8> },
    Timer { member: usize, timer: Timer<NodeId> },
}

struct Sim {
    members: Vec<Swim>,
    runtimes: Vec<AccumulatingRuntime<NodeId>>,
    dead: Vec<bool>,
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    events: BTreeMap<u64, Event>,
    seq: u64,
    now_us: u64,
    rng: u64,
    loss: f64,
    bytes_sent: Vec<u64>,
    datagrams_sent: Vec<u64>,
    /// (time, observer, subject) of every MemberDown.
    downs: Vec<(u64, usize, usize)>,
    suspicions: u64,
}

fn id(i: usize) -> NodeId {
    NodeId {
        name: format!("node-{i}"),
        addr: SocketAddr::new(
            IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i as u16 + 1)),
            7946,
        ),
        generation: 1_000,
        flaps: Default::default(),
    }
}

fn index(id: &NodeId) -> usize {
    id.name
        .trim_start_matches("node-")
        .parse()
        .expect("node-<i>")
}

impl Sim {
    fn new(n: usize, loss: f64, seed: u64, max_transmissions: Option<u8>) -> Sim {
        let mut config = Timers::default()
            .to_foca()
            .expect("default timers are valid");
        // As the driver runs it once the cluster is known: scaled with its size, unless given.
        let tx = max_transmissions.unwrap_or(Timers::default().max_transmissions_for(n));
        config.max_transmissions = std::num::NonZeroU8::new(tx).expect("non-zero");
        let members = (0..n)
            .map(|i| {
                Foca::new(
                    id(i),
                    config.clone(),
                    StdRng::seed_from_u64(seed ^ (i as u64 * 7919)),
                    WireCodec,
                )
            })
            .collect();
        Sim {
            members,
            runtimes: (0..n).map(|_| AccumulatingRuntime::new()).collect(),
            dead: vec![false; n],
            queue: BinaryHeap::new(),
            events: BTreeMap::new(),
            seq: 0,
            now_us: 0,
            rng: seed | 1,
            loss,
            bytes_sent: vec![0; n],
            datagrams_sent: vec![0; n],
            downs: Vec::new(),
            suspicions: 0,
        }
    }

    fn random(&mut self) -> f64 {
        // xorshift64*: the network's own randomness, deterministic per seed.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        (self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }

    fn push(&mut self, at_us: u64, e: Event) {
        self.seq += 1;
        self.queue.push(Reverse((at_us, self.seq)));
        self.events.insert(self.seq, e);
    }

    /// Sends, schedules and notifies what member `i`'s runtime accumulated.
    fn drain(&mut self, i: usize) {
        while let Some((to, data)) = self.runtimes[i].to_send() {
            self.bytes_sent[i] += (data.len() + OVERHEAD) as u64;
            self.datagrams_sent[i] += 1;
            if self.random() < self.loss {
                continue;
            }
            // 100-300 us on a LAN, a little scheduling jitter included.
            let latency = 100 + (self.random() * 200.0) as u64;
            let to = index(&to);
            self.push(
                self.now_us + latency,
                Event::Deliver {
                    to,
                    data: data.to_vec(),
                },
            );
        }
        while let Some((after, timer)) = self.runtimes[i].to_schedule() {
            if matches!(timer, Timer::ChangeSuspectToDown { .. }) {
                self.suspicions += 1;
            }
            let at = self.now_us + after.as_micros() as u64;
            self.push(at, Event::Timer { member: i, timer });
        }
        let mut defunct = false;
        while let Some(n) = self.runtimes[i].to_notify() {
            match n {
                OwnedNotification::MemberDown(who) => {
                    self.downs.push((self.now_us, i, index(&who)));
                }
                OwnedNotification::Defunct => defunct = true,
                _ => {}
            }
        }
        if defunct {
            // As the driver does: come back as the next generation.
            let renewed = self.members[i].identity().renewed(false, 0);
            let _ = self.members[i].change_identity(renewed, &mut self.runtimes[i]);
            self.drain(i);
        }
    }

    /// Runs until `until_us` (simulated).
    fn run(&mut self, until_us: u64) {
        while let Some(Reverse((at, seq))) = self.queue.peek().copied() {
            if at > until_us {
                break;
            }
            self.queue.pop();
            self.now_us = at;
            let Some(e) = self.events.remove(&seq) else {
                continue;
            };
            let i = match e {
                Event::Deliver { to, data } => {
                    if self.dead[to] {
                        continue;
                    }
                    let _ = self.members[to].handle_data(&data, &mut self.runtimes[to]);
                    to
                }
                Event::Timer { member, timer } => {
                    if self.dead[member] {
                        continue;
                    }
                    let _ = self.members[member].handle_timer(timer, &mut self.runtimes[member]);
                    member
                }
            };
            self.drain(i);
        }
        self.now_us = until_us;
    }

    /// Everyone announces itself to member 0 and two others, as speakers do to their peers.
    fn join(&mut self) {
        let n = self.members.len();
        for i in 0..n {
            for to in [0, (i + 1) % n, (i + n / 2) % n] {
                if to != i {
                    let _ = self.members[i].announce(id(to), &mut self.runtimes[i]);
                }
            }
            self.drain(i);
        }
    }

    fn converged(&self) -> bool {
        let n = self.members.len();
        self.members
            .iter()
            .enumerate()
            .filter(|(i, _)| !self.dead[*i])
            .all(|(_, m)| m.num_members() == n - 1 - self.dead.iter().filter(|d| **d).count())
    }
}

struct Figures {
    max_tx: u8,
    converged_ms: f64,
    false_downs: usize,
    suspicions_per_member_s: f64,
    detect_p50_ms: f64,
    detect_all_ms: f64,
    /// Members that had not declared the dead one down 1 s after the kill, and after 10 s.
    late_1s: usize,
    missed_10s: usize,
    bytes_per_member_s: f64,
    datagrams_per_member_s: f64,
}

fn measure(n: usize, loss: f64, steady: Duration, seed: u64, max_tx: Option<u8>) -> Figures {
    let mut sim = Sim::new(n, loss, seed, max_tx);
    sim.join();
    let mut converged_us = None;
    for step in 1..=300u64 {
        sim.run(step * 100_000);
        if sim.converged() {
            converged_us = Some(sim.now_us);
            break;
        }
    }
    let converged_us =
        converged_us.unwrap_or_else(|| panic!("{n} members never converged in 30 s"));
    // Steady state: loss only, nobody dies.
    let start = sim.now_us + 2_000_000;
    sim.run(start);
    let (bytes0, datagrams0, suspicions0) = (
        sim.bytes_sent.iter().sum::<u64>(),
        sim.datagrams_sent.iter().sum::<u64>(),
        sim.suspicions,
    );
    let downs0 = sim.downs.len();
    let end = start + steady.as_micros() as u64;
    sim.run(end);
    let secs = steady.as_secs_f64();
    let bytes = (sim.bytes_sent.iter().sum::<u64>() - bytes0) as f64 / n as f64 / secs;
    let datagrams = (sim.datagrams_sent.iter().sum::<u64>() - datagrams0) as f64 / n as f64 / secs;
    let false_downs = sim.downs.len() - downs0;
    let suspicions = (sim.suspicions - suspicions0) as f64 / n as f64 / secs;
    // A hard kill of one member: when does each of the others declare it down?
    let victim = n / 3;
    sim.dead[victim] = true;
    let killed = sim.now_us;
    sim.run(killed + 10_000_000);
    let mut first: BTreeMap<usize, u64> = BTreeMap::new();
    for (at, by, who) in &sim.downs {
        if *at >= killed && *who == victim {
            first.entry(*by).or_insert(at - killed);
        }
    }
    let missed = n - 1 - first.len();
    let mut seen: Vec<u64> = first.into_values().collect();
    seen.sort();
    let within_1s = seen.iter().filter(|t| **t <= 1_000_000).count();
    let ms = |us: u64| us as f64 / 1000.0;
    Figures {
        max_tx: max_tx.unwrap_or(Timers::default().max_transmissions_for(n)),
        converged_ms: ms(converged_us),
        false_downs,
        suspicions_per_member_s: suspicions,
        detect_p50_ms: ms(seen[seen.len() / 2]),
        detect_all_ms: ms(*seen.last().expect("seen")),
        late_1s: n - 1 - within_1s,
        missed_10s: missed,
        bytes_per_member_s: bytes,
        datagrams_per_member_s: datagrams,
    }
}

fn report(n: usize, loss: f64, f: &Figures) {
    eprintln!(
        "RESULT {n} members, {:.0}% loss, max_transmissions {}: converged in {:.0} ms; steady: {} false deaths, {:.3} suspicions per member per s, {:.0} datagrams and {:.1} KB per member per s; a hard kill declared down by half the others in {:.0} ms, by all in {:.0} ms ({} not within 1 s, {} not within 10 s)",
        loss * 100.0,
        f.max_tx,
        f.converged_ms,
        f.false_downs,
        f.suspicions_per_member_s,
        f.datagrams_per_member_s,
        f.bytes_per_member_s / 1000.0,
        f.detect_p50_ms,
        f.detect_all_ms,
        f.late_1s,
        f.missed_10s,
    );
}

#[test]
fn fifty_members_at_one_percent_loss_no_false_death_and_a_death_seen_by_all() {
    let f = measure(50, 0.01, Duration::from_secs(10), 42, None);
    report(50, 0.01, &f);
    assert_eq!(f.false_downs, 0);
    assert_eq!((f.late_1s, f.missed_10s), (0, 0));
    assert!(f.detect_all_ms < 1000.0, "{}", f.detect_all_ms);
}

#[test]
#[ignore = "minutes in a debug build; run with --release for docs/benchmarks.md"]
fn membership_at_scale_measured() {
    let tx: Option<u8> = std::env::var("FERROLB_MAX_TRANSMISSIONS")
        .ok()
        .and_then(|v| v.parse().ok());
    for n in [3, 10, 100, 250] {
        for loss in [0.0, 0.01] {
            let f = measure(n, loss, Duration::from_secs(60), 7 + n as u64, tx);
            report(n, loss, &f);
        }
    }
}
