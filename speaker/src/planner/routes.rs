//! The BGP routes this node announces: one per prefix and peer set, gathered address by
//! address.
//!
//! Which peers an advertisement reaches from this node does not depend on the address, so it
//! is worked out once per plan; each address then only adds its Service to the route of its
//! prefix (a plan at 10,000 Services used to build a peer list and two map keys per address).

use super::{BgpRoute, Skipped};
use crate::view::{NodeView, ServiceView, Serving};
use ferrolb_config::addresses::Family;
use ferrolb_config::community::Community;
use ferrolb_config::Config;
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::Arc;

/// What a BGPAdvertisement means on this node.
enum Here {
    /// It does not select this node (or the node may not announce at all).
    Absent,
    /// It selects this node, but none of its peers does.
    NoPeers,
    /// Its peers that select this node: an index into [`Routes::peer_sets`].
    Peers(usize),
}

/// One route being gathered.
struct Gathered {
    services: BTreeSet<String>,
    communities: BTreeSet<Community>,
    local_pref: Option<u32>,
    local_only: bool,
    ending: bool,
    /// Serving endpoints on this node of the Services whose advertisement weighs by them.
    weights: BTreeMap<String, u32>,
}

/// The routes of a plan, gathered address by address.
pub(super) struct Routes<'a> {
    config: &'a Config,
    this_node: &'a str,
    /// Per BGPAdvertisement, in the configuration's order.
    here: Vec<Here>,
    /// Distinct peer sets, each shared by all its routes.
    peer_sets: Vec<Arc<BTreeSet<String>>>,
    /// By prefix and peer set; ordered once at the end.
    routes: HashMap<(IpNet, usize), Gathered>,
}

impl<'a> Routes<'a> {
    /// `this`: this node's view (`None`: not among the Nodes, nothing is announced).
    pub(super) fn new(config: &'a Config, this: Option<&NodeView>, this_node: &'a str) -> Self {
        let mut peer_sets: Vec<Arc<BTreeSet<String>>> = Vec::new();
        let here = config
            .bgp_advertisements
            .values()
            .map(|adv| {
                let Some(this) = this else {
                    return Here::Absent;
                };
                if !this.eligible() || !adv.node_selectors.matches(&this.labels) {
                    return Here::Absent;
                }
                let peers: BTreeSet<String> = config
                    .peers
                    .values()
                    .filter(|p| adv.peers.is_empty() || adv.peers.contains(&p.name))
                    .filter(|p| p.node_selectors.matches(&this.labels))
                    .map(|p| p.name.clone())
                    .collect();
                if peers.is_empty() {
                    return Here::NoPeers;
                }
                let id = match peer_sets.iter().position(|s| **s == peers) {
                    Some(id) => id,
                    None => {
                        peer_sets.push(Arc::new(peers));
                        peer_sets.len() - 1
                    }
                };
                Here::Peers(id)
            })
            .collect();
        Routes {
            config,
            this_node,
            here,
            peer_sets,
            routes: HashMap::new(),
        }
    }

    /// Adds address `ip` of `svc` (from pool `pool`) to the routes of every advertisement
    /// that carries it here; what it cannot be announced for goes to `skipped`.
    pub(super) fn add(
        &mut self,
        svc: &ServiceView,
        ip: IpAddr,
        pool: &str,
        skipped: &mut Vec<Skipped>,
    ) {
        let this_node = self.this_node;
        let mut skip = |reason: &str| {
            skipped.push(Skipped {
                service: svc.key.clone(),
                ip: Some(ip),
                reason: reason.to_string(),
            })
        };
        for (adv, here) in self.config.bgp_advertisements.values().zip(&self.here) {
            if !adv.pools.contains(pool) || !adv.service_selectors.matches(&svc.labels) {
                continue;
            }
            let peers = match here {
                Here::Absent => continue,
                _ if svc.local_traffic && !svc.serving.on(this_node) => {
                    skip("BGP: externalTrafficPolicy Local and no serving endpoint on this node");
                    continue;
                }
                Here::NoPeers => {
                    skip("BGP: no peer of the advertisement selects this node");
                    continue;
                }
                Here::Peers(id) => *id,
            };
            let length = match Family::of(ip) {
                Family::V4 => adv.aggregation_length,
                Family::V6 => adv.aggregation_length_v6,
            };
            let prefix = IpNet::new(ip, length)
                .expect("validated aggregation length")
                .trunc();
            let route = self
                .routes
                .entry((prefix, peers))
                .or_insert_with(|| Gathered {
                    services: BTreeSet::new(),
                    communities: BTreeSet::new(),
                    local_pref: None,
                    local_only: true,
                    ending: true,
                    weights: BTreeMap::new(),
                });
            // Several advertisements for the same prefix and peers make one route:
            // communities united, the highest local preference kept.
            route.communities.extend(adv.communities.iter().copied());
            route.local_pref = route.local_pref.max(adv.local_pref);
            route.local_only &= svc.local_traffic;
            route.ending &= svc.local_traffic && svc.terminating_on.contains(this_node);
            // Not without EndpointSlices (file mode): nothing to weigh by.
            let known = !matches!(svc.serving, Serving::Everywhere);
            if adv.weight_by_endpoints && svc.local_traffic && known {
                // A Service counts once per route, whichever advertisements carry it.
                let w = svc.endpoints_on.get(this_node).copied().unwrap_or(0);
                route.weights.entry(svc.key.clone()).or_insert(w);
            }
            if !route.services.contains(&svc.key) {
                route.services.insert(svc.key.clone());
            }
        }
    }

    /// The routes, by prefix and then peer names.
    pub(super) fn finish(self) -> Vec<BgpRoute> {
        let peer_sets = self.peer_sets;
        let mut out: Vec<BgpRoute> = self
            .routes
            .into_iter()
            .map(|((prefix, peers), g)| {
                // A route that also carries Cluster Services (an aggregate) takes traffic for
                // them too: its endpoints say nothing of that share, so it is not weighted.
                let endpoint_weight =
                    (!g.weights.is_empty() && g.local_only).then(|| g.weights.values().sum());
                BgpRoute {
                    prefix,
                    services: g.services,
                    peers: Arc::clone(&peer_sets[peers]),
                    communities: g.communities,
                    local_pref: g.local_pref,
                    local_only: g.local_only,
                    ending: g.ending,
                    endpoint_weight,
                }
            })
            .collect();
        out.sort_unstable_by(|a, b| (a.prefix, &*a.peers).cmp(&(b.prefix, &*b.peers)));
        out
    }
}
