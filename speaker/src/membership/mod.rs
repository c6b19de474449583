//! Membership and failure detection among speakers: who is alive, decided fast and confirmed.
//!
//! SWIM (the `foca` crate, sans-IO) over one UDP socket per speaker (port 7946 by default),
//! every datagram authenticated with the shared key ([`auth`]). Each speaker probes one member
//! per period and, when the direct probe goes unanswered, asks others to probe indirectly before
//! suspecting it; a suspected speaker has a short window to refute before it is declared dead.
//! So a speaker with its own network trouble cannot get a healthy one declared dead, and a dead
//! one is confirmed by everybody in about 100-150 ms (see [`Timers`] for the reasoning, and
//! docs/benchmarks.md "Speaker membership" for measurements). The cost grows with the number of
//! speakers only; membership knows nothing of Services.
//!
//! ```ignore
//! let m = Membership::start(config).await?;          // binds the socket, joins the peers
//! let mut live = m.live();                            // watch::Receiver<BTreeSet<String>>
//! m.set_peers(peers_from_nodes);                      // when Nodes appear or disappear
//! // ... on SIGTERM, after deciding to stop announcing:
//! m.leave().await;                                    // others take over at once
//! ```
//!
//! ## Rejoin without a second outage
//!
//! A speaker that comes back (restart, or healed partition) is a newer generation of the same
//! name; foca replaces the old identity at once and the name reappears in [`Membership::live`].
//! If the planner's ranking puts it first for some address, ownership moves back to it, which
//! in L2 is a second, planned move of that address. That move is kept harmless in three places:
//! (a) [`Membership::members`] is published only once this speaker has joined, so a restarted
//! speaker never plans from its lonely first view; (b) [`crate::rejoin`] holds a speaker that
//! joined an existing cluster (by the start times in the generations, which all speakers see
//! alike) so it ranks last until it has been live for a hold-down; a speaker that was cut off
//! and comes back renews its identity with a record of the return, so it is held the same way
//! and damped if it keeps coming back; (c) `l2::ownership` moves make-before-break: the old owner keeps answering
//! for a grace period after the plan gave the address away. Membership itself never hides a
//! live speaker, so every speaker sees the same set and computes the same ranking.
//!
//! ## Graceful leave
//!
//! [`Membership::leave`] gossips our own departure (to a few members, twice more 5 ms apart)
//! and stops; every other speaker removes us at once instead of after detection.

pub mod auth;
pub mod config;
mod driver;
pub mod fast;
pub mod identity;
pub mod secret;

pub use auth::{MembershipKey, Sealer};
pub use config::{ConfigError, MembershipConfig, Peer, Security, Timers, DEFAULT_PORT};
pub use secret::{find_key, key_from_secret, SecretError};

use driver::{Command, Driver};
use identity::NodeId;
use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use tokio::sync::{mpsc, oneshot, watch};

/// What we know of a live speaker.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberInfo {
    pub addr: SocketAddr,
    /// Start time (ms since the epoch) of that speaker process, +1 per renewal.
    pub generation: u64,
    /// Its returns from isolation (see [`crate::rejoin`]).
    pub flaps: crate::rejoin::Flaps,
    /// When this speaker first saw it live in this generation (the stability signal).
    pub live_since: tokio::time::Instant,
}

/// Counters, for metrics and tests. Everything dropped is counted, never fatal.
#[derive(Debug, Default)]
pub struct Stats {
    pub received: AtomicU64,
    pub sent: AtomicU64,
    pub send_errors: AtomicU64,
    pub recv_errors: AtomicU64,
    pub dropped_malformed: AtomicU64,
    pub dropped_unauthenticated: AtomicU64,
    pub dropped_stale: AtomicU64,
    pub dropped_replay: AtomicU64,
    /// Authenticated but refused by the protocol (undecodable, not for us, ...).
    pub dropped_protocol: AtomicU64,
    pub member_up: AtomicU64,
    pub member_down: AtomicU64,
    /// Our own probes that went unanswered, direct and indirect, making a member suspect.
    pub suspicions: AtomicU64,
    /// Owners the fast path took as down, and those of them that showed life afterwards.
    pub fast_downs: AtomicU64,
    pub fast_backs: AtomicU64,
}

impl Stats {
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Relaxed)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum MembershipError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("binding membership socket {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("starting the membership thread: {0}")]
    Thread(std::io::Error),
}

/// Sets the owners the fast path watches ([`Membership::watch`]) and hears of this speaker's
/// stalls ([`Membership::stalls`]).
#[derive(Clone, Debug)]
pub struct Watcher {
    commands: mpsc::UnboundedSender<Command>,
    pub stalls: watch::Receiver<u64>,
}

impl Watcher {
    pub fn watch(&self, owners: BTreeSet<String>) {
        let _ = self.commands.send(Command::Watch(owners));
    }
}

/// A running membership; dropping it stops it without a goodbye (use [`Membership::leave`]).
#[derive(Debug)]
pub struct Membership {
    live: watch::Receiver<BTreeSet<String>>,
    stalls: watch::Receiver<u64>,
    members: watch::Receiver<BTreeMap<String, MemberInfo>>,
    commands: mpsc::UnboundedSender<Command>,
    stats: Arc<Stats>,
    local_addr: SocketAddr,
}

struct Prepared {
    driver: Driver,
    handle: Membership,
}

fn prepare(
    config: MembershipConfig,
    socket: std::net::UdpSocket,
) -> Result<Prepared, MembershipError> {
    let local_addr = socket
        .local_addr()
        .map_err(|source| MembershipError::Bind {
            addr: config.advertised_addr(),
            source,
        })?;
    let me = NodeId {
        name: config.node_name.clone(),
        addr: config.advertised_addr(),
        generation: driver::wall_ms(),
        flaps: Default::default(),
    };
    let (live_tx, live) = watch::channel(BTreeSet::from([me.name.clone()]));
    let (members_tx, members) = watch::channel(BTreeMap::new());
    let (cmd_tx, commands) = mpsc::unbounded_channel();
    let (stalls_tx, stalls) = watch::channel(0u64);
    let stats = Arc::new(Stats::default());
    // A second handle on the same socket, read directly (see `Driver::read_waiting`).
    let direct = socket.try_clone().map_err(|source| MembershipError::Bind {
        addr: local_addr,
        source,
    })?;
    let socket =
        tokio::net::UdpSocket::from_std(socket).map_err(|source| MembershipError::Bind {
            addr: local_addr,
            source,
        })?;
    Ok(Prepared {
        driver: Driver {
            socket,
            direct,
            config,
            me,
            stats: stats.clone(),
            live_tx,
            stalls_tx,
            members_tx,
            commands,
        },
        handle: Membership {
            live,
            stalls,
            members,
            commands: cmd_tx,
            stats,
            local_addr,
        },
    })
}

fn bind(config: &MembershipConfig) -> Result<std::net::UdpSocket, MembershipError> {
    config.validate()?;
    let ip = match (config.bind_any, config.ip) {
        (false, ip) => ip,
        (true, IpAddr::V4(_)) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        (true, IpAddr::V6(_)) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let addr = SocketAddr::new(ip, config.port);
    let socket =
        std::net::UdpSocket::bind(addr).map_err(|source| MembershipError::Bind { addr, source })?;
    socket
        .set_nonblocking(true)
        .map_err(|source| MembershipError::Bind { addr, source })?;
    Ok(socket)
}

impl Membership {
    /// Binds the socket and starts membership as a task on the current tokio runtime, joining
    /// the configured peers.
    pub async fn start(config: MembershipConfig) -> Result<Membership, MembershipError> {
        let socket = bind(&config)?;
        let p = prepare(config, socket)?;
        tokio::spawn(p.driver.run());
        Ok(p.handle)
    }

    /// Like [`Membership::start`] but on its own thread with its own single-threaded runtime,
    /// so a busy application runtime cannot delay probes and acks into false suspicions.
    /// This is what the speaker uses; callable from sync or async code.
    pub fn start_dedicated(config: MembershipConfig) -> Result<Membership, MembershipError> {
        let socket = bind(&config)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(MembershipError::Thread)?;
        // Registering the socket needs the runtime it will be polled on.
        let p = {
            let _guard = rt.enter();
            prepare(config, socket)?
        };
        let driver = p.driver;
        std::thread::Builder::new()
            .name("ferrolb-membership".into())
            .spawn(move || rt.block_on(driver.run()))
            .map_err(MembershipError::Thread)?;
        Ok(p.handle)
    }

    /// Names of the live speakers, this node included; changes as speakers join and die.
    pub fn live(&self) -> watch::Receiver<BTreeSet<String>> {
        self.live.clone()
    }

    /// The live speakers with their address, generation and how long they have been live.
    ///
    /// Empty until this speaker has joined: it has seen every configured peer live, or one
    /// `announce_interval` has passed since the start. A speaker that plans from its own
    /// lonely view right after a restart would claim every address for a moment; waiting
    /// for the join lets it see the older speakers first (and be held, see
    /// [`crate::rejoin`]).
    pub fn members(&self) -> watch::Receiver<BTreeMap<String, MemberInfo>> {
        self.members.clone()
    }

    /// The owners this speaker is the hot standby of: the fast path watches them (see
    /// [`fast`]); without the fast path this does nothing.
    pub fn watch(&self, owners: BTreeSet<String>) {
        let _ = self.commands.send(Command::Watch(owners));
    }

    /// A handle that can only set the watched owners (for the planning loop).
    pub fn watcher(&self) -> Watcher {
        Watcher {
            commands: self.commands.clone(),
            stalls: self.stalls.clone(),
        }
    }

    /// Counts the times this speaker woke up too late for its own heartbeats (starved of CPU,
    /// or stopped): the fast path elsewhere may have taken its addresses, so the planning loop
    /// announces them again when this changes.
    pub fn stalls(&self) -> watch::Receiver<u64> {
        self.stalls.clone()
    }

    /// Replaces the peer list (from the Nodes' InternalIPs); new peers are sent a join at once,
    /// absent ones are retried every `announce_interval`.
    pub fn set_peers(&self, peers: Vec<Peer>) {
        let _ = self.commands.send(Command::SetPeers(peers));
    }

    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Announces our departure so the others take over at once, then stops.
    pub async fn leave(self) {
        let (done, wait) = oneshot::channel();
        if self.commands.send(Command::Leave(done)).is_ok() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(1), wait).await;
        }
    }
}
