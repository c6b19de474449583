//! `ferrolb-speaker run`: the loop that plans on every change of the sources or of the live set
//! and drives the L2 data plane and the BGP driver.
//!
//! The live set is a `watch` channel. Without membership, file mode uses
//! [`Liveness::EveryNode`] (every Node in the files has a live speaker, so the live set moves
//! when the files do) or a fixed set; membership plugs in as [`Liveness::Members`], whose start
//! times also decide which returning speakers are held ([`crate::rejoin`]); the loop plans
//! again when a hold-down ends. With membership, layer 2 also follows the quorum
//! ([`crate::quorum`]): a speaker that does not see a majority of the speakers announces nothing
//! by L2 and lets go of what it had at once.

use crate::bgp_mode::driver::{BgpDriver, BgpStatus};
use crate::l2::adapter::{L2Adapter, L2Options};
use crate::membership::MemberInfo;
use crate::metrics::Health;
use crate::planner::{plan_cached, Inputs, NodePlan, RankCache};
use crate::quorum::{
    decide_with_lease, electorate, is_minority, standing, Standing, TieBreaker, MINORITY_WAIT,
};
use crate::source::Snapshot;
use crate::status::Announced;
use crate::wait::{changed_opt, sleep_until_opt};
use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

/// How long a speaker in a tie keeps what it announces while the tie-breaker Lease is unread.
const TIE_UNREAD: Duration = Duration::from_secs(1);

/// Which speakers are alive.
#[derive(Debug)]
pub enum Liveness {
    /// Every Node in the sources (file mode without membership).
    EveryNode,
    /// Names from membership, or a fixed set (a channel whose sender is gone).
    Watch(watch::Receiver<BTreeSet<String>>),
    /// Membership's members (empty until joined: nothing is planned before), with speakers
    /// that rejoin held for `hold_down` ([`crate::rejoin`]).
    Members {
        members: watch::Receiver<BTreeMap<String, MemberInfo>>,
        hold_down: Duration,
        /// Told after every plan which owners this node is the hot standby of (the fast
        /// path, [`crate::membership::fast`]).
        watcher: Option<crate::membership::Watcher>,
    },
}

impl Liveness {
    /// A set that never changes.
    pub fn fixed(names: BTreeSet<String>) -> Liveness {
        Liveness::Watch(watch::channel(names).1)
    }
}

/// Settings of the run loop.
#[derive(Clone, Debug)]
pub struct RunOptions {
    pub l2: L2Options,
    /// How often interfaces are re-read (links going down or up, new interfaces).
    pub interface_rescan: Duration,
    /// Told of every loop turn (/healthz) and of a valid plan applied (/readyz).
    pub health: Arc<Health>,
    /// Where the BGP side publishes its peers' state (for metrics).
    pub bgp_status: BgpStatus,
    /// BGP graceful shutdown (RFC 8326): how long leaving routes are drained; zero: off.
    pub bgp_graceful_shutdown: Duration,
    /// The tie-breaker Lease (kube mode); `None`: ties go to the first node by name.
    pub tie_break: Option<TieBreak>,
    /// Follow the L2 quorum (with membership); `false`: plan from the live set alone.
    pub l2_quorum: bool,
}

/// The run loop's side of the tie-breaker Lease ([`crate::quorum`]).
#[derive(Clone, Debug)]
pub struct TieBreak {
    /// The Lease's holder as last seen (`None`: nobody, or not known).
    pub holder: watch::Receiver<Option<String>>,
    /// True while this speaker is in a tie: only then does the Lease task take or renew it.
    pub contend: watch::Sender<bool>,
}

/// Plans and announces until `shutdown` completes, then stops answering and announcing.
pub async fn run(
    opts: RunOptions,
    snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
    liveness: Liveness,
    shutdown: impl Future<Output = ()>,
) {
    run_observed(opts, snapshots, liveness, shutdown, None).await
}

/// [`run`], also sending what is announced after every change to `announced` (for the status
/// writer; sending never waits), and nothing once stopped.
pub async fn run_observed(
    opts: RunOptions,
    mut snapshots: watch::Receiver<Option<Arc<Snapshot>>>,
    mut liveness: Liveness,
    shutdown: impl Future<Output = ()>,
    announced: Option<watch::Sender<Announced>>,
) {
    // `plan`: the plan, the live set it was made with, and whether this node sweeps.
    let publish = |l2: &L2Adapter, plan: Option<(&Arc<NodePlan>, &BTreeSet<String>, bool)>| {
        if let Some(tx) = &announced {
            tx.send_if_modified(|a| {
                let changed = a.l2 != *l2.owned()
                    || plan.is_some_and(|(p, live, sweeps)| {
                        *a.plan != **p || a.live != *live || a.sweeps != sweeps
                    });
                if changed {
                    a.l2 = l2.owned().clone();
                    if let Some((p, live, sweeps)) = plan {
                        a.plan = Arc::clone(p);
                        a.live = live.clone();
                        a.sweeps = sweeps;
                    }
                }
                changed
            });
        }
    };
    let node = opts.l2.node.clone();
    crate::bgp_mode::metrics_feed::feed_on_scrape(&opts.health, opts.bgp_status.clone());
    let bgp = BgpDriver::new(&node, opts.bgp_status.clone())
        .with_graceful_shutdown(opts.bgp_graceful_shutdown)
        .spawn();
    let mut l2 = L2Adapter::new(opts.l2);
    let mut tie_break = opts.tie_break.clone();
    let mut tie_open = tie_break.is_some();
    let mut last_standing = (Standing::Majority, false);
    // A tie whose Lease has not been read yet (or not for half a lease): since when, and when
    // that grace ends.
    let mut tie_unread_since: Option<Instant> = None;
    let mut tie_unread_until: Option<Instant> = None;
    // Since when this speaker has been in a minority, and when it may try the Lease.
    let mut minority_since: Option<Instant> = None;
    let mut minority_wait_until: Option<Instant> = None;
    opts.health.metrics.set_l2_quorum(true);
    let mut rescan = tokio::time::interval(opts.interface_rescan);
    rescan.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut snapshots_open = true;
    let mut live_open = !matches!(liveness, Liveness::EveryNode);
    let mut stalls_open = true;
    // This speaker's stalls, as membership notices them (announce everything again then).
    let mut stalls = match &liveness {
        Liveness::Members {
            watcher: Some(w), ..
        } => Some(w.stalls.clone()),
        _ => None,
    };
    // The layer 2 addresses this node owned after the last plan, to count takeovers.
    let mut owned_here: BTreeSet<IpAddr> = BTreeSet::new();
    // When a rejoin hold-down ends: plan again then.
    let mut held_until: Option<Instant> = None;
    // The owners last given to the fast path to watch.
    let mut watched: BTreeSet<String> = BTreeSet::new();
    // Every member's (generation, live-since) when last seen, the live set of the last plan,
    // and the members back from a fast-path verdict in this one (see below).
    let mut last_seen: BTreeMap<String, (u64, Instant)> = BTreeMap::new();
    let mut last_live: BTreeSet<String> = BTreeSet::new();
    // Each address's rank-key order, kept from plan to plan.
    let mut ranks = RankCache::new();
    let mut unhidden: BTreeSet<String> = BTreeSet::new();
    tokio::pin!(shutdown);
    loop {
        opts.health.tick();
        let deadline = l2.next_deadline().map(Instant::from_std);
        let replan = tokio::select! {
            _ = &mut shutdown => break,
            r = snapshots.changed(), if snapshots_open => {
                snapshots_open = r.is_ok();
                r.is_ok()
            }
            r = async {
                match &mut liveness {
                    Liveness::Watch(rx) => rx.changed().await,
                    Liveness::Members { members, .. } => members.changed().await,
                    Liveness::EveryNode => std::future::pending().await,
                }
            }, if live_open => {
                live_open = r.is_ok();
                r.is_ok()
            }
            r = changed_opt(tie_break.as_mut().map(|t| &mut t.holder)), if tie_open => {
                tie_open = r.is_ok();
                r.is_ok()
            }
            _ = sleep_until_opt(tie_unread_until) => {
                tie_unread_until = None;
                true
            }
            _ = sleep_until_opt(minority_wait_until) => {
                minority_wait_until = None;
                true
            }
            _ = sleep_until_opt(held_until) => {
                held_until = None;
                true
            }
            _ = sleep_until_opt(deadline) => {
                l2.send_due(std::time::Instant::now());
                false
            }
            r = changed_opt(stalls.as_mut()), if stalls_open => {
                stalls_open = r.is_ok();
                if r.is_ok() {
                    l2.announce_again(std::time::Instant::now());
                }
                false
            }
            _ = rescan.tick() => {
                l2.refresh(std::time::Instant::now());
                publish(&l2, None);
                false
            }
        };
        if !replan {
            continue;
        }
        let Some(snapshot) = snapshots.borrow_and_update().clone() else {
            continue;
        };
        let mut held = BTreeSet::new();
        let with_quorum = opts.l2_quorum && matches!(liveness, Liveness::Members { .. });
        let live: BTreeSet<String> = match &mut liveness {
            Liveness::EveryNode => snapshot.nodes.iter().map(|n| n.name.clone()).collect(),
            Liveness::Watch(rx) => rx.borrow_and_update().clone(),
            Liveness::Members {
                members, hold_down, ..
            } => {
                let members = members.borrow_and_update().clone();
                if members.is_empty() {
                    continue; // not joined yet
                }
                let (h, until) = held_down(&members, *hold_down);
                held = h;
                held_until = until;
                // Back with the same generation and the same live-since: only hidden for a
                // moment by the fast path, never stopped.
                unhidden = members
                    .iter()
                    .filter(|(n, m)| {
                        !last_live.contains(*n)
                            && last_seen.get(*n) == Some(&(m.generation, m.live_since))
                    })
                    .map(|(n, _)| n.clone())
                    .collect();
                for (n, m) in &members {
                    last_seen.insert(n.clone(), (m.generation, m.live_since));
                }
                // Forget long-gone names (bounded by the cluster's churn).
                if last_seen.len() > 4 * members.len() + 64 {
                    last_seen.retain(|n, _| members.contains_key(n));
                }
                members.into_keys().collect()
            }
        };
        if !snapshot.nodes.iter().any(|n| n.name == node) {
            warn!(node = %node, "this node is not among the Nodes of the configuration; announcing nothing");
        }
        // Plan and apply: what a change costs this loop (logged with the plan).
        let started = std::time::Instant::now();
        let cpu_started = thread_cpu();
        let mut p = plan_cached(
            Inputs {
                config: &snapshot.config,
                services: &snapshot.services,
                nodes: &snapshot.nodes,
                live_speakers: &live,
                this_node: &node,
            },
            &held,
            &mut ranks,
        );
        // The owners this node stands by for, from the plan as placed (before the quorum
        // below may take this node out): the fast path watches them.
        if let Liveness::Members {
            watcher: Some(w), ..
        } = &liveness
        {
            let owners = watched_owners(&p, &node, &live);
            if owners != watched {
                w.watch(owners.clone());
                watched = owners;
            }
        }
        let voters = electorate(&snapshot.nodes);
        let mut contend = false;
        let now_standing = if !with_quorum {
            Standing::Majority
        } else if let Some(t) = &tie_break {
            // A minority tries the Lease only after MINORITY_WAIT (plan again then).
            let minority_for = if is_minority(&voters, &live) {
                let since = *minority_since.get_or_insert_with(Instant::now);
                if since.elapsed() < MINORITY_WAIT {
                    minority_wait_until = Some(since + MINORITY_WAIT);
                }
                since.elapsed()
            } else {
                minority_since = None;
                minority_wait_until = None;
                Duration::ZERO
            };
            let holder = t.holder.borrow().clone();
            let d = decide_with_lease(&voters, &live, holder.as_deref(), minority_for);
            contend = d.contend;
            d.standing
        } else {
            standing(&voters, &live, &TieBreaker::FirstByName)
        };
        if let Some(t) = &tie_break {
            t.contend
                .send_if_modified(|c| std::mem::replace(c, contend) != contend);
        }
        // Entering a tie, the Lease is read within a round trip: meanwhile keep what this node
        // announces and take nothing new, for at most TIE_UNREAD (well within the lease, so a
        // side that lost the API stops before the other may take the Lease over).
        let unread = now_standing == Standing::TieLost
            && tie_break
                .as_ref()
                .is_some_and(|t| t.holder.borrow().is_none());
        let mut keep_own = false;
        if unread {
            let since = *tie_unread_since.get_or_insert_with(Instant::now);
            keep_own = since.elapsed() < TIE_UNREAD;
            tie_unread_until = keep_own.then_some(since + TIE_UNREAD);
        } else {
            tie_unread_since = None;
            tie_unread_until = None;
        }
        if (now_standing, keep_own) != last_standing {
            if keep_own {
                info!(live = ?live, "L2 quorum: a tie, reading the tie-breaker Lease (keeping what this node announces, taking nothing new)");
            } else if now_standing.may_announce() {
                info!(standing = now_standing.as_str(), live = ?live, "L2 quorum: announcing again");
            } else {
                warn!(standing = now_standing.as_str(), live = ?live, "L2 quorum lost: standing down, no layer 2 answers from this node");
            }
            last_standing = (now_standing, keep_own);
        }
        opts.health
            .metrics
            .set_l2_quorum(now_standing.may_announce() || keep_own);
        if keep_own {
            for d in &mut p.l2 {
                if !(d.owner() == Some(node.as_str()) && owned_here.contains(&d.ip)) {
                    d.ranking.retain(|n| **n != *node);
                }
            }
        } else if !now_standing.may_announce() {
            // The other side may hold a majority and takes every address: let go at once, no
            // make-before-break grace (which would mean two owners).
            for d in &mut p.l2 {
                d.ranking.retain(|n| **n != *node);
            }
            l2.release_all_now();
        }
        let (owned_count, l2_count) = (p.l2_owned(&node).count(), p.l2.len());
        let owned: BTreeSet<IpAddr> =
            p.l2.iter()
                .filter(|d| d.owner().is_some())
                .map(|d| d.ip)
                .collect();
        let unowned =
            p.l2.iter()
                .filter(|d| d.owner().is_none() && !owned.contains(&d.ip))
                .map(|d| d.ip)
                .collect::<BTreeSet<IpAddr>>();
        opts.health.metrics.set_l2_plan(owned.len(), unowned.len());
        let mine: BTreeSet<IpAddr> = p.l2_owned(&node).map(|d| d.ip).collect();
        for ip in mine.difference(&owned_here) {
            opts.health.metrics.takeover(*ip);
        }
        owned_here = mine;
        // One plan, shared by the data plane, the status writer and the BGP driver.
        let p = Arc::new(p);
        l2.apply(&p, std::time::Instant::now());
        // An owner the fast path took as down that showed life never stopped answering: what
        // this node took over from it goes back at once, not after the make-before-break grace.
        if !unhidden.is_empty() {
            let back: BTreeSet<IpAddr> =
                p.l2.iter()
                    .filter(|d| d.owner().is_some_and(|o| unhidden.contains(o)))
                    .map(|d| d.ip)
                    .collect();
            l2.release_now_of(&back);
            unhidden.clear();
        }
        last_live = live.clone();
        opts.health.set_config_loaded(true);
        opts.health.set_data_plane_running(true);
        // Without the quorum a dead speaker cannot be told from a cut-off one: no sweeping.
        let sweeps = crate::status::sweeper(
            &node,
            &live,
            with_quorum && now_standing == Standing::Majority,
        );
        publish(&l2, Some((&p, &live, sweeps)));
        bgp.apply(snapshot, p);
        info!(
            live = ?live,
            held = ?held,
            owned = owned_count,
            l2 = l2_count,
            took_us = started.elapsed().as_micros() as u64,
            cpu_us = thread_cpu()
                .zip(cpu_started)
                .map(|(now, then)| now.saturating_sub(then).as_micros() as u64),
            "plan computed"
        );
    }
    opts.health.set_data_plane_running(false);
    info!("shutting down: no more answers or announcements");
    l2.shutdown();
    publish(&l2, Some((&Arc::default(), &BTreeSet::new(), false)));
    bgp.shutdown().await;
}

/// The CPU time this thread has had (CLOCK_THREAD_CPUTIME_ID: exact, where the scheduler's
/// statistics lag by up to a tick). Plan and apply run without awaiting, on one thread: the
/// difference is what they cost, whatever else shares the machine.
fn thread_cpu() -> Option<Duration> {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    let secs = u64::try_from(t.tv_sec).ok()?;
    let nanos = u32::try_from(t.tv_nsec).ok()?;
    Some(Duration::new(secs, nanos))
}

/// Up to this many live speakers, each watches all the others with the fast path.
pub const FULL_MESH_UP_TO: usize = 16;

/// Whom the fast path watches: the owners of the addresses this node is second for (if one of
/// them dies, this node takes over), and in clusters of up to [`FULL_MESH_UP_TO`] speakers
/// every other one. The quorum counts what the fast path sees, so both sides of a cut must
/// see it at the same speed: a side that only waited for membership would take over ~100 ms
/// after the other side stood down. (With many addresses every node is second for some address
/// of nearly every other node anyway, so the mesh costs little more than the standby rule.)
fn watched_owners(p: &NodePlan, node: &str, live: &BTreeSet<String>) -> BTreeSet<String> {
    let mut owners: BTreeSet<String> =
        p.l2.iter()
            .filter(|d| d.ranking.get(1).map(|n| &**n) == Some(node))
            .filter_map(|d| d.owner().map(str::to_owned))
            .collect();
    if live.len() <= FULL_MESH_UP_TO {
        owners.extend(live.iter().filter(|n| *n != node).cloned());
    }
    owners
}

/// The speakers in their rejoin hold-down or damped now, and when the first hold ends.
fn held_down(
    members: &BTreeMap<String, MemberInfo>,
    hold_down: Duration,
) -> (BTreeSet<String>, Option<Instant>) {
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let standing = members
        .iter()
        .map(|(n, m)| {
            let s = crate::rejoin::Standing {
                started_ms: m.generation,
                flaps: m.flaps,
            };
            (n.clone(), s)
        })
        .collect();
    let h = crate::rejoin::held(&standing, now_ms, hold_down);
    let until = h
        .until_ms
        .map(|u| Instant::now() + Duration::from_millis(u.saturating_sub(now_ms)));
    (h.names, until)
}
