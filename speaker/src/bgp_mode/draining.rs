//! Graceful shutdown of routes that stop being wanted (RFC 8326), sans-IO: instead of being
//! withdrawn at once, a route a peer should no longer have is sent again with the
//! GRACEFUL_SHUTDOWN community (and LOCAL_PREF 0 for iBGP), so the router moves the traffic to
//! the other paths while this node still forwards it, and withdrawn when the drain time has
//! passed. A route wanted again before then simply stays. With a drain time of 0 every route
//! is withdrawn at once, as MetalLB does.

use ferrolb_bgp::{PeerKey, RouteAttributes};
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

/// The routes being drained, per peer: the attributes they are sent with meanwhile and when
/// they go.
#[derive(Debug, Default, Clone)]
pub struct Draining {
    by_peer: BTreeMap<PeerKey, BTreeMap<IpNet, (RouteAttributes, Instant)>>,
}

impl Draining {
    /// What to give the engine for `peer`: the `wanted` routes, plus those of `sent` (the set
    /// given last time) that are no longer wanted, marked for graceful shutdown until `drain`
    /// has passed since they left, except those in `at_once` (nothing behind them serves any
    /// more: externalTrafficPolicy Local without a local endpoint).
    pub fn routes(
        &mut self,
        peer: &PeerKey,
        wanted: Vec<(IpNet, RouteAttributes)>,
        sent: Option<&[(IpNet, RouteAttributes)]>,
        at_once: &BTreeSet<IpNet>,
        now: Instant,
        drain: Duration,
    ) -> Vec<(IpNet, RouteAttributes)> {
        let wanted_prefixes: BTreeSet<IpNet> = wanted.iter().map(|(p, _)| *p).collect();
        let leaving = self.by_peer.entry(peer.clone()).or_default();
        // Wanted again: it simply stays.
        leaving.retain(|p, _| !wanted_prefixes.contains(p));
        if !drain.is_zero() {
            for (p, a) in sent.unwrap_or_default() {
                if !wanted_prefixes.contains(p) && !leaving.contains_key(p) && !at_once.contains(p)
                {
                    leaving.insert(*p, (a.graceful_shutdown(), now + drain));
                }
            }
        }
        // Drained: withdrawn now. (Only after the loop above: what was sent last time still
        // holds these routes, and they must not start over.)
        leaving.retain(|_, (_, until)| *until > now);
        let mut out = wanted;
        out.extend(leaving.iter().map(|(p, (a, _))| (*p, a.clone())));
        if leaving.is_empty() {
            self.by_peer.remove(peer);
        }
        out
    }

    /// Keeps only the peers in `running` (the others are gone, with their deadlines).
    pub fn keep_only(&mut self, running: &BTreeSet<PeerKey>) {
        self.by_peer.retain(|k, _| running.contains(k));
    }

    /// The peer is gone: nothing of it is drained any more.
    pub fn forget(&mut self, peer: &PeerKey) {
        self.by_peer.remove(peer);
    }

    /// When the next drained route goes.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.by_peer
            .values()
            .flat_map(|routes| routes.values().map(|(_, until)| *until))
            .min()
    }

    /// How many routes are being drained.
    pub fn len(&self) -> usize {
        self.by_peer.values().map(BTreeMap::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.by_peer.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolb_bgp::GRACEFUL_SHUTDOWN;

    fn route(p: &str, communities: &[u32]) -> (IpNet, RouteAttributes) {
        (
            p.parse().unwrap(),
            RouteAttributes {
                communities: communities.to_vec(),
                ..Default::default()
            },
        )
    }

    fn prefixes(routes: &[(IpNet, RouteAttributes)]) -> Vec<String> {
        routes.iter().map(|(p, _)| p.to_string()).collect()
    }

    const DRAIN: Duration = Duration::from_secs(5);

    #[test]
    fn a_route_that_leaves_is_sent_with_the_community_then_withdrawn() {
        let peer: PeerKey = "192.0.2.254".parse::<std::net::IpAddr>().unwrap().into();
        let mut d = Draining::default();
        let t0 = Instant::now();
        let both = vec![route("203.0.113.1/32", &[7]), route("203.0.113.2/32", &[])];
        let sent = d.routes(&peer, both.clone(), None, &BTreeSet::new(), t0, DRAIN);
        assert_eq!(sent, both, "nothing leaves: nothing changes");
        assert!(d.is_empty());

        // .2 leaves: still sent, with 65535:0 and LOCAL_PREF 0.
        let one = vec![route("203.0.113.1/32", &[7])];
        let sent = d.routes(&peer, one.clone(), Some(&both), &BTreeSet::new(), t0, DRAIN);
        assert_eq!(prefixes(&sent), ["203.0.113.1/32", "203.0.113.2/32"]);
        assert_eq!(sent[1].1.communities, [GRACEFUL_SHUTDOWN]);
        assert_eq!(sent[1].1.local_pref, Some(0));
        assert_eq!(d.next_deadline(), Some(t0 + DRAIN));
        assert_eq!(d.len(), 1);

        // Later plans keep it, with the same deadline, until the drain time has passed.
        let again = d.routes(
            &peer,
            one.clone(),
            Some(&sent),
            &BTreeSet::new(),
            t0 + DRAIN / 2,
            DRAIN,
        );
        assert_eq!(again, sent);
        assert_eq!(d.next_deadline(), Some(t0 + DRAIN));
        let after = d.routes(
            &peer,
            one.clone(),
            Some(&again),
            &BTreeSet::new(),
            t0 + DRAIN,
            DRAIN,
        );
        assert_eq!(after, one, "withdrawn once drained");
        assert_eq!(d.next_deadline(), None);
        let later = d.routes(
            &peer,
            one.clone(),
            Some(&after),
            &BTreeSet::new(),
            t0 + DRAIN * 2,
            DRAIN,
        );
        assert_eq!(later, one, "and not drained again");
    }

    #[test]
    fn a_route_wanted_again_stays_as_wanted() {
        let peer: PeerKey = "192.0.2.254".parse::<std::net::IpAddr>().unwrap().into();
        let mut d = Draining::default();
        let t0 = Instant::now();
        let both = vec![route("203.0.113.1/32", &[]), route("203.0.113.2/32", &[])];
        let one = vec![route("203.0.113.1/32", &[])];
        let sent = d.routes(&peer, one, Some(&both), &BTreeSet::new(), t0, DRAIN);
        assert_eq!(sent.len(), 2);
        let back = d.routes(
            &peer,
            both.clone(),
            Some(&sent),
            &BTreeSet::new(),
            t0 + DRAIN / 4,
            DRAIN,
        );
        assert_eq!(back, both, "its own attributes again, no community");
        assert!(d.is_empty());
    }

    #[test]
    fn without_a_drain_time_routes_go_at_once() {
        let peer: PeerKey = "192.0.2.254".parse::<std::net::IpAddr>().unwrap().into();
        let mut d = Draining::default();
        let both = vec![route("203.0.113.1/32", &[]), route("203.0.113.2/32", &[])];
        let one = vec![route("203.0.113.1/32", &[])];
        let sent = d.routes(
            &peer,
            one.clone(),
            Some(&both),
            &BTreeSet::new(),
            Instant::now(),
            Duration::ZERO,
        );
        assert_eq!(sent, one);
        assert!(d.is_empty());
    }

    #[test]
    fn a_route_with_nothing_behind_it_goes_at_once() {
        let peer: PeerKey = "192.0.2.254".parse::<std::net::IpAddr>().unwrap().into();
        let mut d = Draining::default();
        let both = vec![route("203.0.113.1/32", &[]), route("203.0.113.2/32", &[])];
        let one = vec![route("203.0.113.1/32", &[])];
        let local: BTreeSet<IpNet> = ["203.0.113.2/32".parse().unwrap()].into();
        let sent = d.routes(
            &peer,
            one.clone(),
            Some(&both),
            &local,
            Instant::now(),
            DRAIN,
        );
        assert_eq!(
            sent, one,
            "externalTrafficPolicy Local, no endpoint left: no drain"
        );
        assert!(d.is_empty());
    }

    #[test]
    fn a_route_already_marked_keeps_one_community() {
        let a = RouteAttributes {
            communities: vec![GRACEFUL_SHUTDOWN],
            ..Default::default()
        };
        assert_eq!(a.graceful_shutdown().communities, [GRACEFUL_SHUTDOWN]);
    }

    #[test]
    fn peers_drain_apart_and_a_removed_peer_is_forgotten() {
        let a: PeerKey = "192.0.2.254".parse::<std::net::IpAddr>().unwrap().into();
        let b: PeerKey = "192.0.2.253".parse::<std::net::IpAddr>().unwrap().into();
        let mut d = Draining::default();
        let t0 = Instant::now();
        let both = vec![route("203.0.113.1/32", &[]), route("203.0.113.2/32", &[])];
        d.routes(&a, vec![], Some(&both), &BTreeSet::new(), t0, DRAIN);
        d.routes(&b, both.clone(), Some(&both), &BTreeSet::new(), t0, DRAIN);
        assert_eq!(d.len(), 2);
        d.forget(&a);
        assert!(d.is_empty());
    }
}
