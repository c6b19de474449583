//! From the plan to (address, interface) pairs: which ones this node answers and announces for
//! now, and which ones it stands by for (frames built and sockets open ahead, so a takeover
//! sends at once). Pure.

use crate::l2::interfaces::{select, Exclusions, Interface};
use crate::l2::schedule::{Announcements, Schedule};
use crate::planner::NodePlan;
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Instant;

/// An address on an interface (by name).
pub type Key = (IpAddr, String);

/// What the plan asks of this node's L2 data plane.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Wanted {
    /// Pairs this node owns: it answers queries for them and announces them.
    pub owned: BTreeSet<Key>,
    /// Pairs this node is a candidate for, owned or not.
    pub ranked: BTreeSet<Key>,
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
        if !d.ranking.iter().any(|n| n == node) {
            continue;
        }
        let owner = d.owner() == Some(node);
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
    pub gained: Vec<Key>,
    pub lost: Vec<Key>,
}

/// The owned pairs and their announcement schedules.
#[derive(Clone, Debug)]
pub struct Ownership {
    owned: BTreeSet<Key>,
    announcements: Announcements<Key>,
}

impl Ownership {
    pub fn new(schedule: Schedule) -> Self {
        Ownership {
            owned: BTreeSet::new(),
            announcements: Announcements::new(schedule),
        }
    }

    pub fn owned(&self) -> &BTreeSet<Key> {
        &self.owned
    }

    /// Moves to `owned` at `now`: gained pairs are announced at once and then on the schedule,
    /// lost ones no more.
    pub fn update(&mut self, owned: BTreeSet<Key>, now: Instant) -> Change {
        let gained: Vec<Key> = owned.difference(&self.owned).cloned().collect();
        let lost: Vec<Key> = self.owned.difference(&owned).cloned().collect();
        for k in &lost {
            self.announcements.stop(k);
        }
        for k in &gained {
            self.announcements.start(k.clone(), now);
        }
        self.owned = owned;
        Change { gained, lost }
    }

    /// Pairs to announce at `now`.
    pub fn due(&mut self, now: Instant) -> Vec<Key> {
        self.announcements.due(now)
    }

    pub fn next_deadline(&self) -> Option<Instant> {
        self.announcements.next_deadline()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::l2::packet::MacAddr;
    use crate::planner::L2Decision;
    use std::time::Duration;

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
            ranking: ranking.iter().map(|s| s.to_string()).collect(),
            interfaces: interfaces.iter().map(|s| s.to_string()).collect(),
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
        assert!(ch.lost.is_empty());
        assert_eq!(o.due(t0), vec![key("192.0.2.10", "eth0")]);
        let t1 = t0 + Duration::from_millis(10);
        let ch = o.update([key("2001:db8::10", "eth0")].into(), t1);
        assert_eq!(ch.gained, vec![key("2001:db8::10", "eth0")]);
        assert_eq!(ch.lost, vec![key("192.0.2.10", "eth0")]);
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
}
