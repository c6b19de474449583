//! Which candidate owns each layer 2 address: balanced, with a bound on every node's load.
//!
//! Taking each address's first-ranked node (a hash of node and address) leaves some nodes with
//! far more addresses than others: about 1.3 times the average for 200 addresses on 10 nodes,
//! as with MetalLB. Here the addresses are placed one at a time, in an order every speaker
//! computes alike (a hash of the address), each on the first node of its ranking that holds
//! fewer than ceil(1.1 x the average) addresses: consistent hashing with bounded loads (Mirrokni,
//! Thorup, Zadimoghaddam, 2018). No node holds more than that bound unless the constraints leave
//! no other choice, and when a node comes or goes little beyond its own share moves.
//!
//! The bound never overrides a constraint: an address only goes to a node of its ranking's
//! leading tier (the same rejoin hold-down state and the same preferredNodeSelectors weight as
//! the first), past the bound if all of them are full. An address shared by several Services
//! gets one owner and counts once.

use super::{L2Decision, RANKING_KEPT};
use crate::view::NodeView;
use ferrolb_config::model::L2Advertisement;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::sync::Arc;

/// An L2 decision whose owner is not placed yet.
#[derive(Debug)]
pub struct Unplaced {
    /// Its index among the plan's L2 decisions.
    pub index: usize,
    /// Its candidates, best first, as indices into the plan's candidate nodes (a whole ranking
    /// of names per address would cost addresses x nodes strings).
    pub order: Order,
    /// The L2Advertisements that carry it (for the owner's interfaces): an index into
    /// [`place`]'s `ad_sets`.
    pub ads: usize,
    /// sha256("#" address): every speaker places addresses in this order.
    pub place_key: [u8; 32],
}

/// An address's candidates.
#[derive(Debug)]
pub enum Order {
    /// Every candidate, in the address's rank-key order, all of them the leading tier (nothing
    /// tells them apart): read from the rank cache as far as placement needs, usually the
    /// first few, instead of copied for every address.
    Ranked,
    /// These, best first; the first `leading` form the leading tier.
    Listed { order: Vec<u16>, leading: usize },
}

/// The candidates of an [`Order`], best first.
#[derive(Clone)]
enum Candidates<'x> {
    Listed(std::slice::Iter<'x, u16>),
    Ranked {
        ids: std::slice::Iter<'x, u16>,
        candidate_of: &'x [Option<u16>],
    },
}

impl Iterator for Candidates<'_> {
    type Item = u16;

    fn next(&mut self) -> Option<u16> {
        match self {
            Candidates::Listed(it) => it.next().copied(),
            Candidates::Ranked { ids, candidate_of } => {
                ids.find_map(|id| candidate_of.get(usize::from(*id)).copied().flatten())
            }
        }
    }
}

/// Where placement reads the candidates of [`Order::Ranked`] addresses: the rank cache's
/// orders (node ids) and the candidate index of each id.
pub struct RankedOrders<'x> {
    pub cache: &'x super::RankCache,
    pub candidate_of: &'x [Option<u16>],
}

impl RankedOrders<'_> {
    /// All of `u`'s candidates, best first.
    fn all<'x>(&'x self, u: &'x Unplaced, ip: IpAddr) -> Candidates<'x> {
        match &u.order {
            Order::Listed { order, .. } => Candidates::Listed(order.iter()),
            Order::Ranked => Candidates::Ranked {
                ids: self.cache.peek(ip).iter(),
                candidate_of: self.candidate_of,
            },
        }
    }

    /// `u`'s leading tier, best first (never empty for a non-empty order).
    fn leading<'x>(&'x self, u: &'x Unplaced, ip: IpAddr) -> Candidates<'x> {
        match &u.order {
            Order::Listed { order, leading } => {
                Candidates::Listed(order[..(*leading).clamp(1, order.len())].iter())
            }
            Order::Ranked => self.all(u, ip),
        }
    }

    /// Whether `n` is in `u`'s leading tier.
    fn leads(&self, u: &Unplaced, n: u16) -> bool {
        match &u.order {
            Order::Listed { order, leading } => {
                order[..(*leading).clamp(1, order.len())].contains(&n)
            }
            // Every candidate leads.
            Order::Ranked => true,
        }
    }
}

impl Unplaced {
    /// Whether it has no candidate at all (with [`Order::Ranked`], only when the plan has no
    /// candidates, which the planner lists instead).
    fn is_empty(&self) -> bool {
        matches!(&self.order, Order::Listed { order, .. } if order.is_empty())
    }
}

/// ceil(1.1 x `addresses` / `nodes`): the most addresses a node should own.
pub fn bound(addresses: usize, nodes: usize) -> usize {
    if nodes == 0 {
        return 0;
    }
    (11 * addresses).div_ceil(10 * nodes)
}

/// Places the owner of every decision in `unplaced` (`candidates`: the nodes its `order`
/// indexes) and sets its ranking (the owner, then the next candidates, [`RANKING_KEPT`] in all)
/// and the interfaces it announces on. An address is placed once, for all the Services that
/// share it: on a node of every one's leading tier (of the first Service's, by key, when they
/// have none in common, a configuration whose Services disagree on where the address may go).
pub fn place(
    decisions: &mut [L2Decision],
    unplaced: &[Unplaced],
    candidates: &[&NodeView],
    ad_sets: &[&[&L2Advertisement]],
    ranked: &RankedOrders<'_>,
) {
    // Every speaker places in the same order: by a hash of the address; the decisions of one
    // address together, by Service key. (Keys are unique: an unstable sort gives that order.)
    let mut order: Vec<(&Unplaced, IpAddr)> = unplaced
        .iter()
        .filter(|u| !u.is_empty())
        .map(|u| (u, decisions[u.index].ip))
        .collect();
    order.sort_unstable_by(|(a, ip_a), (b, ip_b)| {
        a.place_key
            .cmp(&b.place_key)
            .then(ip_a.cmp(ip_b))
            .then_with(|| decisions[a.index].service.cmp(&decisions[b.index].service))
    });
    let same_address = |a: &(&Unplaced, IpAddr), b: &(&Unplaced, IpAddr)| a.1 == b.1;
    // The nodes that are some address's candidate.
    let mut seen = vec![false; candidates.len()];
    if order.iter().any(|(u, _)| matches!(u.order, Order::Ranked)) {
        // A ranked order holds every candidate a node id maps to: all of them, unless two
        // Nodes share a name (only the last counts, as in a listed order).
        for c in ranked.candidate_of.iter().flatten() {
            seen[usize::from(*c)] = true;
        }
    }
    for (u, _) in &order {
        if let Order::Listed { order, .. } = &u.order {
            for &i in order {
                seen[usize::from(i)] = true;
            }
        }
    }
    let addresses = order.chunk_by(same_address).count();
    let bound = bound(addresses, seen.iter().filter(|s| **s).count());
    let mut load = vec![0usize; candidates.len()];
    // Each candidate's name once, shared by every ranking it appears in.
    let names: Vec<Arc<str>> = candidates
        .iter()
        .map(|n| Arc::from(n.name.as_str()))
        .collect();
    for group in order.chunk_by(same_address) {
        let ip = group[0].1;
        // The first Service's leading tier, in its order, narrowed to the nodes every other
        // Service of the address also leads with.
        let first = ranked.leading(group[0].0, ip);
        let in_all = |n: &u16| group[1..].iter().all(|(u, _)| ranked.leads(u, *n));
        let narrowed = group.len() > 1 && first.clone().any(|n| in_all(&n));
        let mut tier = first.filter(|n| !narrowed || in_all(n));
        let owner = tier
            .clone()
            .find(|n| load[usize::from(*n)] < bound)
            .or_else(|| tier.next())
            .expect("a leading tier is never empty");
        load[usize::from(owner)] += 1;
        let announcer = candidates[usize::from(owner)];
        for (u, _) in group {
            let ranking: Vec<Arc<str>> = std::iter::once(owner)
                .chain(ranked.all(u, ip).filter(|i| *i != owner))
                .take(RANKING_KEPT)
                .map(|i| Arc::clone(&names[usize::from(i)]))
                .collect();
            let d = &mut decisions[u.index];
            d.ranking = ranking;
            d.interfaces = interfaces(announcer, ad_sets[u.ads]);
            d.virtual_mac = virtual_mac(announcer, ad_sets[u.ads]);
        }
    }
}

/// Whether `owner` announces from the virtual MAC: one of the advertisements selecting it asks
/// for it (as with interfaces, the advertisements that apply to the announcing node decide).
fn virtual_mac(owner: &NodeView, ads: &[&L2Advertisement]) -> bool {
    ads.iter()
        .any(|a| a.virtual_mac && a.node_selectors.matches(&owner.labels))
}

/// The interfaces `owner` announces on for advertisements `ads`: empty (every eligible one) if
/// one of those selecting it names none, else the union of the ones they name.
fn interfaces(owner: &NodeView, ads: &[&L2Advertisement]) -> Vec<String> {
    let selecting = || {
        ads.iter()
            .filter(|a| a.node_selectors.matches(&owner.labels))
    };
    // The common case (an advertisement naming no interface) allocates nothing.
    if selecting().any(|a| a.interfaces.is_empty()) {
        return vec![];
    }
    let set: BTreeSet<String> = selecting()
        .flat_map(|a| a.interfaces.iter().cloned())
        .collect();
    set.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::bound;

    #[test]
    fn the_bound_is_the_ceiling_of_one_point_one_times_the_average() {
        assert_eq!(bound(1000, 10), 110);
        assert_eq!(bound(200, 10), 22);
        assert_eq!(bound(100, 3), 37);
        assert_eq!(bound(2, 3), 1);
        assert_eq!(bound(0, 3), 0);
        assert_eq!(bound(5, 0), 0);
    }
}
