//! What one node announces, and why not otherwise. Pure: every speaker runs the same function on
//! the same inputs and so agrees, without talking, on which node owns each L2 address.
//!
//! Rules (MetalLB's, see shared/reference/metallb-behaviour.md):
//! - nothing is announced for a Service with no serving endpoint anywhere;
//! - a node with the NetworkUnavailable condition or the exclude-from-external-load-balancers
//!   label announces nothing;
//! - L2: candidates are the live speakers on nodes selected by an L2Advertisement that covers the
//!   address's pool and selects the Service (with externalTrafficPolicy Local, only nodes with a
//!   serving endpoint); they are ranked by preferredNodeSelectors weight, then by
//!   sha256(node "#" address); speakers in their rejoin hold-down ([`plan_with_held`]) rank
//!   after all others; the owner is the first candidate of the leading tier that owns fewer
//!   than ceil(1.1 x average) addresses ([`placement`]: balanced, bounded load), moved to the
//!   front of the ranking;
//! - BGP: every eligible node selected by a BGPAdvertisement announces while any endpoint
//!   serves (Local: only nodes with a local serving endpoint), to the advertisement's peers that
//!   select this node, as a prefix of the advertisement's aggregation length.

use crate::view::{NodeView, ServiceView};
use ferrolb_config::community::Community;
use ferrolb_config::model::L2Advertisement;
use ferrolb_config::Config;
use ipnet::IpNet;
use sha2::{Digest, Sha256};
use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

/// Everything the decision depends on.
#[derive(Clone, Copy, Debug)]
pub struct Inputs<'a> {
    pub config: &'a Config,
    /// Sorted by key (as snapshots are); the planner sorts them otherwise.
    pub services: &'a [Arc<ServiceView>],
    pub nodes: &'a [NodeView],
    /// Nodes whose speaker is alive (from membership).
    pub live_speakers: &'a BTreeSet<String>,
    pub this_node: &'a str,
}

/// The L2 decision for one address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct L2Decision {
    pub service: String,
    pub ip: IpAddr,
    /// Candidates, best first; the first announces. At most [`RANKING_KEPT`].
    /// Shared names: a plan holds thousands of rankings of the same few nodes.
    pub ranking: Vec<Arc<str>>,
    /// Interfaces to announce on when this node owns the address; empty: every eligible one.
    pub interfaces: Vec<String>,
    /// Announce from the address's virtual MAC (an L2Advertisement selecting the owner asks
    /// for `virtualMAC`).
    pub virtual_mac: bool,
}

impl L2Decision {
    pub fn owner(&self) -> Option<&str> {
        self.ranking.first().map(|n| &**n)
    }
}

/// A route this node announces.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BgpRoute {
    pub prefix: IpNet,
    /// Services whose addresses the prefix covers.
    pub services: BTreeSet<String>,
    /// Shared by every route of the same peers (thousands of /32s, a handful of peer sets).
    pub peers: Arc<BTreeSet<String>>,
    pub communities: BTreeSet<Community>,
    /// Sent to iBGP peers only.
    pub local_pref: Option<u32>,
    /// Every Service it covers has externalTrafficPolicy Local: when it goes, this node no
    /// longer serves, so it must go at once (no graceful-shutdown drain).
    pub local_only: bool,
    /// Every Service it covers is Local and its endpoints on this node are all terminating:
    /// the route is about to go (graceful shutdown marks it now, while they still serve).
    pub ending: bool,
    /// This node's serving endpoints of the Services it covers whose advertisement asks for
    /// `weightByEndpoints` (externalTrafficPolicy Local only): sent as link bandwidth.
    pub endpoint_weight: Option<u32>,
}

/// Why an address is not announced by this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skipped {
    pub service: String,
    pub ip: Option<IpAddr>,
    pub reason: String,
}

/// This node's whole decision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodePlan {
    /// Every L2 address with its ranking, whoever owns it (the standby needs them all).
    pub l2: Vec<L2Decision>,
    /// Routes this node announces, one per prefix and attribute set.
    pub bgp: Vec<BgpRoute>,
    pub skipped: Vec<Skipped>,
}

impl NodePlan {
    /// The L2 addresses this node announces now.
    pub fn l2_owned<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a L2Decision> + 'a {
        self.l2.iter().filter(move |d| d.owner() == Some(node))
    }
}

/// sha256(node "#" address), the rank key every speaker computes alike.
pub fn rank_key(node: &str, ip: IpAddr) -> [u8; 32] {
    rank_key_from(&rank_prefix(node), &ip.to_string())
}

/// The hasher state after `node "#"`, computed once per node and plan.
fn rank_prefix(node: &str) -> Sha256 {
    let mut h = Sha256::new();
    h.update(node.as_bytes());
    h.update(b"#");
    h
}

/// [`rank_key`] from a node's [`rank_prefix`] and the address as text (formatted once per
/// address, not once per node and address).
fn rank_key_from(prefix: &Sha256, ip_text: &str) -> [u8; 32] {
    let mut h = prefix.clone();
    h.update(ip_text.as_bytes());
    h.finalize().into()
}

/// How many candidates each L2 decision keeps: the owner and the next ones, which prepare
/// their frames and sockets ahead of a takeover. A node further down prepares when a new plan
/// puts it there (after enough deaths to matter).
pub const RANKING_KEPT: usize = 4;

pub fn plan(inputs: Inputs<'_>) -> NodePlan {
    plan_with_held(inputs, &BTreeSet::new())
}

/// [`plan`], with `held` speakers (live, but in their rejoin hold-down, see [`crate::rejoin`])
/// ranked after every other L2 candidate: they stand by and take over only when nobody settled
/// is left.
pub fn plan_with_held(inputs: Inputs<'_>, held: &BTreeSet<String>) -> NodePlan {
    plan_cached(inputs, held, &mut RankCache::new())
}

/// [`plan_with_held`], with the addresses' rank-key orders kept in `cache` across plans (the
/// running speaker's: a change costs the hashes of the addresses it brings, not of all).
pub fn plan_cached(inputs: Inputs<'_>, held: &BTreeSet<String>, cache: &mut RankCache) -> NodePlan {
    let Inputs {
        config,
        services,
        nodes,
        live_speakers,
        this_node,
    } = inputs;
    let mut out = NodePlan::default();
    let this = nodes.iter().find(|n| n.name == this_node);
    let mut routes = Routes::new(config, this, this_node);

    let mut unplaced: Vec<Unplaced> = Vec::new();
    // The nodes that may be L2 candidates at all, each with its rank-key prefix and whether it
    // is held: computed once, not once per address (placement refers to them by index).
    let candidate_nodes: Vec<&NodeView> = nodes
        .iter()
        .filter(|n| n.eligible() && live_speakers.contains(&n.name))
        .take(usize::from(u16::MAX))
        .collect();
    cache.begin_plan(candidate_nodes.len());
    // Candidate index of each of the cache's node ids, and whether each candidate is held.
    let mut candidate_of: Vec<Option<u16>> = Vec::new();
    for (i, n) in candidate_nodes.iter().enumerate() {
        let id = usize::from(cache.id_of(&n.name));
        candidate_of.resize(cache.len().max(candidate_of.len()), None);
        candidate_of[id] = Some(i as u16);
    }
    let is_held: Vec<bool> = candidate_nodes
        .iter()
        .map(|n| held.contains(&n.name))
        .collect();
    // The sets of L2Advertisements addresses come under (most share one), each with every
    // candidate's preference weight (None: none of them selects it), computed once per set,
    // not once per address.
    let mut ad_sets: Vec<AdSet<'_>> = Vec::new();
    let mut ad_set_of: HashMap<Vec<u16>, usize> = HashMap::new();
    let mut ad_key: Vec<u16> = Vec::new();
    let any_held = is_held.iter().any(|h| *h);
    let mut sorted: Vec<&ServiceView> = services.iter().map(|s| &**s).collect();
    if !sorted.is_sorted_by(|a, b| a.key <= b.key) {
        sorted.sort_by(|a, b| a.key.cmp(&b.key));
    }
    for svc in sorted {
        let skip = |out: &mut NodePlan, ip: Option<IpAddr>, reason: &str| {
            out.skipped.push(Skipped {
                service: svc.key.clone(),
                ip,
                reason: reason.to_string(),
            })
        };
        if svc.ips.is_empty() {
            skip(&mut out, None, "the Service has no address yet");
            continue;
        }
        if !svc.serving.anywhere() {
            skip(&mut out, None, "no endpoint of the Service is serving");
            continue;
        }
        for &ip in &svc.ips {
            let Some(pool) = config.pool_of(ip) else {
                skip(&mut out, Some(ip), "the address is in no IPAddressPool");
                continue;
            };

            // Layer 2.
            ad_key.clear();
            ad_key.extend(
                config
                    .l2_advertisements
                    .values()
                    .enumerate()
                    .filter(|(_, a)| {
                        a.pools.contains(&pool.name) && a.service_selectors.matches(&svc.labels)
                    })
                    .map(|(i, _)| i as u16),
            );
            let l2_set = (!ad_key.is_empty()).then(|| match ad_set_of.get(ad_key.as_slice()) {
                Some(i) => *i,
                None => {
                    let all: Vec<&L2Advertisement> = config.l2_advertisements.values().collect();
                    let ads: Vec<&L2Advertisement> =
                        ad_key.iter().map(|i| all[usize::from(*i)]).collect();
                    ad_sets.push(AdSet::new(ads, &candidate_nodes));
                    ad_set_of.insert(ad_key.clone(), ad_sets.len() - 1);
                    ad_sets.len() - 1
                }
            });
            if let Some(set) = l2_set {
                let weights = &ad_sets[set].weights;
                let (ids, place_key) = cache.order(ip);
                let candidate = |id: &u16| candidate_of.get(usize::from(*id)).copied().flatten();
                let order = if !any_held
                    && ad_sets[set].uniform
                    && !svc.local_traffic
                    && !candidate_nodes.is_empty()
                {
                    // Every candidate alike (no hold-down, one preference weight, no endpoint
                    // condition): the rank-key order as it is, all of it the leading tier.
                    Order::Ranked
                } else {
                    // (held, preference, candidate index), in rank-key order; the stable sort
                    // below keeps that order among equals.
                    let mut candidates: Vec<(bool, u32, u16)> = ids
                        .iter()
                        .filter_map(candidate)
                        .filter(|i| {
                            !svc.local_traffic
                                || svc.serving.on(&candidate_nodes[usize::from(*i)].name)
                        })
                        .filter_map(|i| {
                            let i_ = usize::from(i);
                            Some((is_held[i_], weights[i_]?, i))
                        })
                        .collect();
                    candidates.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.cmp(&a.1)));
                    // The leading tier: the candidates as preferred as the first (hold-down
                    // state, preference weight); the owner is placed among them (placement).
                    let leading = candidates.first().map_or(0, |first| {
                        candidates
                            .iter()
                            .take_while(|c| (c.0, c.1) == (first.0, first.1))
                            .count()
                    });
                    Order::Listed {
                        order: candidates.iter().map(|c| c.2).collect(),
                        leading,
                    }
                };
                if matches!(&order, Order::Listed { order, .. } if order.is_empty()) {
                    skip(&mut out, Some(ip), "L2: no live, eligible node is selected (or none has a serving endpoint, with externalTrafficPolicy Local)");
                }
                unplaced.push(Unplaced {
                    index: out.l2.len(),
                    order,
                    ads: set,
                    place_key,
                });
                out.l2.push(L2Decision {
                    service: svc.key.clone(),
                    ip,
                    ranking: vec![],
                    interfaces: vec![],
                    virtual_mac: false,
                });
            }

            let advertised = l2_set.is_some()
                || config.bgp_advertisements.values().any(|a| {
                    a.pools.contains(&pool.name) && a.service_selectors.matches(&svc.labels)
                });
            if !advertised {
                skip(
                    &mut out,
                    Some(ip),
                    &format!(
                        "no L2Advertisement or BGPAdvertisement selects pool {} for this Service",
                        pool.name
                    ),
                );
                continue;
            }

            // BGP.
            routes.add(svc, ip, &pool.name, &mut out.skipped);
        }
    }
    // The owner and a few standbys are all anyone uses; the whole ranking would make a plan
    // grow with Services x nodes (500,000 names for 5,000 addresses on 100 nodes).
    let ad_lists: Vec<&[&L2Advertisement]> = ad_sets.iter().map(|s| s.ads.as_slice()).collect();
    let ranked = placement::RankedOrders {
        cache,
        candidate_of: &candidate_of,
    };
    placement::place(&mut out.l2, &unplaced, &candidate_nodes, &ad_lists, &ranked);
    out.bgp = routes.finish();
    out
}

/// A set of L2Advertisements that addresses come under, with each candidate's preference.
struct AdSet<'a> {
    ads: Vec<&'a L2Advertisement>,
    /// Per candidate: its highest preference weight among the advertisements selecting it
    /// (`None`: none selects it).
    weights: Vec<Option<u32>>,
    /// Every candidate selected, all with the same weight.
    uniform: bool,
}

impl<'a> AdSet<'a> {
    fn new(ads: Vec<&'a L2Advertisement>, candidates: &[&NodeView]) -> AdSet<'a> {
        let weights: Vec<Option<u32>> = candidates
            .iter()
            .map(|n| {
                ads.iter()
                    .filter(|a| a.node_selectors.matches(&n.labels))
                    .map(|a| a.node_preference(&n.labels))
                    .max()
            })
            .collect();
        let uniform = weights
            .first()
            .is_none_or(|w| w.is_some() && weights.iter().all(|x| x == w));
        AdSet {
            ads,
            weights,
            uniform,
        }
    }
}

mod placement;
mod rank_cache;
mod routes;

pub use placement::bound as l2_load_bound;
use placement::{Order, Unplaced};
pub use rank_cache::RankCache;
use routes::Routes;

#[cfg(test)]
mod tests;
