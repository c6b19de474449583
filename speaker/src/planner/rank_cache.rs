//! Each L2 address's nodes in rank-key order (sha256(node "#" address)), kept across plans.
//!
//! Every change replans from scratch, and the rank keys were most of a plan's work: one
//! SHA-256 per (node, address), 500,000 for 5,000 addresses on 100 nodes. The order of the nodes
//! for an address depends only on the address and the nodes' names, not on which are live,
//! held or preferred (the planner filters and re-sorts it stably for those), so it is computed
//! once per address and kept: a Service added costs its own addresses' hashes, a node lost or
//! back costs none. A node never seen before makes every order computed again on its next use;
//! names of nodes long gone are forgotten when they outnumber the cluster's nodes.
//!
//! A cache, not state: a plan with it equals a plan without it ([`super::plan_with_held`] uses a
//! fresh one).

use super::{rank_key, rank_key_from, rank_prefix};
use sha2::Sha256;
use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;

/// The most node names a cache can hold (ids are u16).
const MAX_NAMES: usize = u16::MAX as usize;

#[derive(Clone, Default)]
pub struct RankCache {
    /// Node names ever ranked, by id, with their hasher states after `name "#"`.
    names: Vec<(String, Sha256)>,
    ids: BTreeMap<String, u16>,
    /// Per address: node ids in rank-key order, how many names it covers (a prefix of
    /// `names`), and the plan that last used it.
    orders: HashMap<IpAddr, Order>,
    plan: u64,
}

#[derive(Clone)]
struct Order {
    ids: Vec<u16>,
    covers: usize,
    used: u64,
    /// sha256("#" address): where the address comes in the placement order.
    place_key: [u8; 32],
}

impl std::fmt::Debug for RankCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RankCache")
            .field("names", &self.names.len())
            .field("orders", &self.orders.len())
            .finish()
    }
}

impl RankCache {
    pub fn new() -> RankCache {
        RankCache::default()
    }

    /// Starts a plan over `candidates` nodes: orders not used by the previous one are dropped
    /// (their addresses left). The cache starts over when it holds many more names than the
    /// cluster has nodes (node churn under new names would otherwise grow every order) or
    /// could not take every candidate's (ids are u16), so ids never change within a plan.
    pub(super) fn begin_plan(&mut self, candidates: usize) {
        if self.names.len() > 4 * candidates + 64 || self.names.len() + candidates > MAX_NAMES {
            *self = RankCache {
                plan: self.plan,
                ..RankCache::default()
            };
        }
        let last = self.plan;
        self.orders.retain(|_, o| o.used == last);
        self.plan += 1;
    }

    /// The id of node `name`, registering it.
    pub(super) fn id_of(&mut self, name: &str) -> u16 {
        if let Some(id) = self.ids.get(name) {
            return *id;
        }
        // begin_plan made room for every candidate of the plan: ids fit in u16.
        let id = u16::try_from(self.names.len()).unwrap_or(u16::MAX);
        self.names.push((name.to_owned(), rank_prefix(name)));
        self.ids.insert(name.to_owned(), id);
        id
    }

    /// How many ids there are (every id is below it).
    pub(super) fn len(&self) -> usize {
        self.names.len()
    }

    /// Every registered node's id for `ip`, best rank key first, and the address's placement
    /// key ([`super::placement`]).
    pub(super) fn order(&mut self, ip: IpAddr) -> (&[u16], [u8; 32]) {
        let names = &self.names;
        let plan = self.plan;
        let order = self.orders.entry(ip).or_insert_with(|| Order {
            ids: Vec::new(),
            covers: 0,
            used: plan,
            place_key: rank_key("", ip),
        });
        order.used = plan;
        if order.covers != names.len() {
            let text = ip.to_string();
            let mut keyed: Vec<([u8; 32], u16)> = names
                .iter()
                .enumerate()
                .map(|(id, (_, prefix))| (rank_key_from(prefix, &text), id as u16))
                .collect();
            keyed.sort_unstable();
            // Collected from an iterator over `keyed`, not from `keyed` itself: that would
            // reuse its 17-times larger buffer for every address (17 MB at 5,000 addresses
            // on 100 nodes, measured).
            order.ids = keyed.iter().map(|(_, id)| *id).collect();
            order.covers = names.len();
        }
        (&order.ids, order.place_key)
    }
}

impl RankCache {
    /// The order [`RankCache::order`] computed for `ip` in this plan (empty if it did not).
    pub(super) fn peek(&self, ip: IpAddr) -> &[u16] {
        self.orders.get(&ip).map_or(&[], |o| o.ids.as_slice())
    }
}

#[cfg(test)]
mod tests {
    use super::RankCache;
    use crate::planner::rank_key;
    use std::net::IpAddr;

    #[test]
    fn the_order_is_the_rank_key_order_and_grows_with_new_names() {
        let mut c = RankCache::new();
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        c.begin_plan(20);
        let names: Vec<String> = (1..=20).map(|i| format!("node-{i}")).collect();
        for n in &names[..10] {
            c.id_of(n);
        }
        let check = |c: &mut RankCache, upto: usize| {
            let got: Vec<String> = c
                .order(ip)
                .0
                .iter()
                .map(|id| names[usize::from(*id)].clone())
                .collect();
            let mut want: Vec<String> = names[..upto].to_vec();
            want.sort_by_key(|n| rank_key(n, ip));
            assert_eq!(got, want);
        };
        check(&mut c, 10);
        for n in &names[10..] {
            c.id_of(n);
        }
        check(&mut c, 20);
        // Known names keep their ids.
        assert_eq!(c.id_of("node-3"), 2);
    }

    #[test]
    fn orders_of_addresses_gone_are_dropped_after_a_plan() {
        let mut c = RankCache::new();
        c.id_of("node-1");
        let (a, b): (IpAddr, IpAddr) = ("192.0.2.1".parse().unwrap(), "192.0.2.2".parse().unwrap());
        c.begin_plan(1);
        c.order(a);
        c.order(b);
        c.begin_plan(1);
        c.order(a);
        c.begin_plan(1);
        assert_eq!(c.orders.len(), 1);
        assert!(c.orders.contains_key(&a));
    }

    #[test]
    fn names_of_nodes_long_gone_are_forgotten() {
        let mut c = RankCache::new();
        // Nodes replaced under new names, three at a time, for a long while.
        for round in 0..200 {
            c.begin_plan(3);
            for k in 0..3 {
                c.id_of(&format!("node-{round}-{k}"));
            }
            assert!(c.names.len() <= 4 * 3 + 64 + 3, "{}", c.names.len());
        }
    }
}
