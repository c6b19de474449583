//! From the plan to (address, interface) pairs: which ones this node answers and announces for
//! now, and which ones it stands by for (frames built and sockets open ahead, so a takeover
//! sends at once). Pure.

use crate::l2::interfaces::{select, Exclusions, Interface};
use crate::l2::schedule::{Announcements, Schedule};
use crate::planner::NodePlan;
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// An address on an interface (by name).
pub type Key = (IpAddr, String);

/// What the plan asks of this node's L2 data plane.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Wanted {
    /// Pairs this node owns: it answers queries for them and announces them.
    pub owned: BTreeSet<Key>,
    /// Pairs this node is a candidate for, owned or not.
    pub ranked: BTreeSet<Key>,
    /// Addresses of `ranked` announced from their virtual MAC.
    pub virtual_mac: BTreeSet<IpAddr>,
}

impl Wanted {
    /// Interfaces the data plane needs a socket on.
    pub fn interfaces(&self) -> BTreeSet<&str> {
        self.ranked.iter().map(|(_, i)| i.as_str()).collect()
    }
}

pub fn wanted(
    plan: &NodePlan,
    node: &str,
    interfaces: &[Interface],
    exclusions: &Exclusions,
) -> Wanted {
    let mut w = Wanted::default();
    for d in &plan.l2 {
        if !d.ranking.iter().any(|n| **n == *node) {
            continue;
        }
        let owner = d.owner() == Some(node);
        if d.virtual_mac {
            w.virtual_mac.insert(d.ip);
        }
        for i in select(interfaces, &d.interfaces, exclusions) {
            let key = (d.ip, i.name.clone());
            if owner {
                w.owned.insert(key.clone());
            }
            w.ranked.insert(key);
        }
    }
    w
}

/// What changed between two sets of owned pairs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Change {
    /// Newly owned: start answering (and announce, which [`Ownership::due`] schedules).
    pub gained: Vec<Key>,
    /// Owned again during their release grace: still answered, announced again.
    pub resumed: Vec<Key>,
    /// No longer owned: no more announcements; answered until released.
    pub lost: Vec<Key>,
    /// Stop answering now.
    pub released: Vec<Key>,
}

/// The owned pairs, their announcement schedules, and pairs in their release grace.
///
/// Make-before-break: when the plan gives a pair to another node, this node stops announcing
/// it at once but keeps answering queries for it during `grace`, so a query that arrives
/// before the new owner has seen the same plan (or while its first announcements are on the
/// way) still gets an answer, and no client is left without one. Both answers name a live node
/// that accepts the traffic; the new owner's repeated announcements settle every client on it.
/// Keep the grace shorter than the last burst offset of the [`Schedule`] (2.2 s by default), so
/// a client that took the old owner's answer during the grace is corrected by the new owner's
/// last burst announcement rather than by its own failed re-probes.
#[derive(Clone, Debug)]
pub struct Ownership {
    owned: BTreeSet<Key>,
    announcements: Announcements<Key>,
    releasing: BTreeMap<Key, Instant>,
    grace: Duration,
}

impl Ownership {
    /// Without a release grace (pairs are released as soon as they are lost).
    pub fn new(schedule: Schedule) -> Self {
        Self::with_release_grace(schedule, Duration::ZERO)
    }

    pub fn with_release_grace(schedule: Schedule, grace: Duration) -> Self {
        Ownership {
            owned: BTreeSet::new(),
            announcements: Announcements::new(schedule),
            releasing: BTreeMap::new(),
            grace,
        }
    }

    pub fn owned(&self) -> &BTreeSet<Key> {
        &self.owned
    }

    /// Pairs answered though no longer owned, with the end of their grace.
    pub fn releasing(&self) -> &BTreeMap<Key, Instant> {
        &self.releasing
    }

    /// Moves to `owned` at `now`: gained pairs are announced at once and then on the schedule,
    /// lost ones no more (and answered until their grace ends, see [`Ownership::due_releases`]).
    pub fn update(&mut self, owned: BTreeSet<Key>, now: Instant) -> Change {
        let mut change = Change::default();
        for k in owned.difference(&self.owned) {
            if self.releasing.remove(k).is_some() {
                change.resumed.push(k.clone());
            } else {
                change.gained.push(k.clone());
            }
            self.announcements.start(k.clone(), now);
        }
        for k in self.owned.difference(&owned) {
            self.announcements.stop(k);
            change.lost.push(k.clone());
            if self.grace.is_zero() {
                change.released.push(k.clone());
            } else {
                self.releasing.insert(k.clone(), now + self.grace);
            }
        }
        self.owned = owned;
        change
    }

    /// Pairs whose grace has ended at `now`: stop answering them.
    pub fn due_releases(&mut self, now: Instant) -> Vec<Key> {
        let due: Vec<Key> = self
            .releasing
            .iter()
            .filter(|(_, end)| **end <= now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in &due {
            self.releasing.remove(k);
        }
        due
    }

    /// Starts a takeover burst again for every owned pair (after this node was stalled long
    /// enough for a standby to take its addresses: clients must come back).
    pub fn announce_again(&mut self, now: Instant) {
        for k in &self.owned {
            self.announcements.start(k.clone(), now);
        }
    }

    /// Drops the pairs matching `which`, owned or in grace, at once (their interface is gone,
    /// or the speaker stops); returns them to stop answering.
    pub fn release_now(&mut self, which: impl Fn(&Key) -> bool) -> Vec<Key> {
        let mut out: Vec<Key> = self.owned.iter().filter(|k| which(k)).cloned().collect();
        for k in &out {
            self.owned.remove(k);
            self.announcements.stop(k);
        }
        let in_grace: Vec<Key> = self
            .releasing
            .keys()
            .filter(|k| which(k))
            .cloned()
            .collect();
        for k in in_grace {
            self.releasing.remove(&k);
            out.push(k);
        }
        out
    }

    /// Pairs to announce at `now`.
    pub fn due(&mut self, now: Instant) -> Vec<Key> {
        self.announcements.due(now)
    }

    /// The next announcement or end of a grace.
    pub fn next_deadline(&self) -> Option<Instant> {
        let release = self.releasing.values().min().copied();
        match (self.announcements.next_deadline(), release) {
            (Some(a), Some(r)) => Some(a.min(r)),
            (a, r) => a.or(r),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::l2::packet::MacAddr;
    use crate::planner::L2Decision;

    fn iface(name: &str) -> Interface {
        Interface {
            name: name.into(),
            index: 2,
            mac: MacAddr([2, 0, 0, 0, 0, 1]),
            up: true,
            loopback: false,
            noarp: false,
            has_master: false,
            ethernet: true,
        }
    }

    fn decision(ip: &str, ranking: &[&str], interfaces: &[&str]) -> L2Decision {
        L2Decision {
            service: "default/web".into(),
            ip: ip.parse().unwrap(),
            ranking: ranking.iter().map(|s| std::sync::Arc::from(*s)).collect(),
            interfaces: interfaces.iter().map(|s| s.to_string()).collect(),
            virtual_mac: false,
        }
    }

    fn key(ip: &str, i: &str) -> Key {
        (ip.parse().unwrap(), i.into())
    }

    #[test]
    fn owner_answers_on_selected_interfaces_and_standby_prepares() {
        let plan = NodePlan {
            l2: vec![
                decision("192.0.2.10", &["a", "b"], &[]),
                decision("2001:db8::10", &["b", "a"], &["eth1"]),
                decision("192.0.2.11", &["c"], &[]),
            ],
            ..Default::default()
        };
        let all = [iface("eth0"), iface("eth1"), iface("veth9")];
        let w = wanted(&plan, "a", &all, &Exclusions::default_list());
        assert_eq!(
            w.owned,
            [key("192.0.2.10", "eth0"), key("192.0.2.10", "eth1")].into()
        );
        assert_eq!(
            w.ranked,
            [
                key("192.0.2.10", "eth0"),
                key("192.0.2.10", "eth1"),
                key("2001:db8::10", "eth1")
            ]
            .into()
        );
        assert_eq!(w.interfaces(), ["eth0", "eth1"].into());
        let nobody = wanted(&plan, "z", &all, &Exclusions::default_list());
        assert_eq!(nobody, Wanted::default());
    }

    #[test]
    fn update_reports_gains_and_losses_and_drives_announcements() {
        let mut o = Ownership::new(Schedule::default());
        let t0 = Instant::now();
        let ch = o.update([key("192.0.2.10", "eth0")].into(), t0);
        assert_eq!(ch.gained, vec![key("192.0.2.10", "eth0")]);
        assert!(ch.lost.is_empty() && ch.released.is_empty());
        assert_eq!(o.due(t0), vec![key("192.0.2.10", "eth0")]);
        let t1 = t0 + Duration::from_millis(10);
        let ch = o.update([key("2001:db8::10", "eth0")].into(), t1);
        assert_eq!(ch.gained, vec![key("2001:db8::10", "eth0")]);
        assert_eq!(ch.lost, vec![key("192.0.2.10", "eth0")]);
        assert_eq!(ch.released, ch.lost, "no grace: released at once");
        assert_eq!(o.next_deadline(), Some(t1), "the new one at once");
        assert_eq!(
            o.due(t0 + Duration::from_secs(1)),
            vec![key("2001:db8::10", "eth0")]
        );
        let same = o.update(o.owned().clone(), t1);
        assert_eq!(same, Change::default());
        o.update(BTreeSet::new(), t1);
        assert_eq!(o.next_deadline(), None);
    }

    #[test]
    fn a_lost_pair_is_answered_during_its_grace_then_released() {
        let grace = Duration::from_secs(2);
        let mut o = Ownership::with_release_grace(Schedule::default(), grace);
        let t0 = Instant::now();
        let k = key("192.0.2.10", "eth0");
        o.update([k.clone()].into(), t0);
        let _ = o.due(t0);
        let t1 = t0 + Duration::from_secs(10);
        let ch = o.update(BTreeSet::new(), t1);
        assert_eq!(ch.lost, vec![k.clone()]);
        assert!(ch.released.is_empty(), "make-before-break: still answered");
        assert_eq!(o.next_deadline(), Some(t1 + grace));
        assert!(o.due(t1 + grace).is_empty(), "never announced again");
        assert!(o
            .due_releases(t1 + grace - Duration::from_millis(1))
            .is_empty());
        assert_eq!(o.due_releases(t1 + grace), vec![k.clone()]);
        assert_eq!(o.next_deadline(), None);
    }

    #[test]
    fn a_pair_regained_during_its_grace_resumes_and_release_now_is_immediate() {
        let mut o = Ownership::with_release_grace(Schedule::default(), Duration::from_secs(2));
        let t0 = Instant::now();
        let (a, b) = (key("192.0.2.10", "eth0"), key("192.0.2.11", "eth1"));
        o.update([a.clone(), b.clone()].into(), t0);
        o.update(BTreeSet::new(), t0);
        let ch = o.update([a.clone()].into(), t0 + Duration::from_millis(500));
        assert_eq!(ch.resumed, vec![a.clone()]);
        assert!(ch.gained.is_empty(), "already answered: not joined twice");
        assert_eq!(o.due(t0 + Duration::from_millis(500)), vec![a.clone()]);
        // An interface gone: its pairs go now, owned or in grace.
        assert_eq!(o.release_now(|k| k.1 == "eth1"), vec![b]);
        assert_eq!(o.release_now(|_| true), vec![a]);
        assert!(o.owned().is_empty() && o.releasing().is_empty());
        assert_eq!(o.next_deadline(), None);
    }
}
