//! The free addresses of one family of one pool, as disjoint intervals.
//!
//! Taking the lowest free address, taking a given address and giving one back are O(log n) in
//! the number of intervals, whatever the pool's size: a /64 costs what a /120 does.

use ferrolb_config::addresses::IpRange;
use std::collections::BTreeMap;

/// Disjoint, non-adjacent inclusive intervals of free addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FreeSet {
    /// start -> end (inclusive).
    intervals: BTreeMap<u128, u128>,
}

impl FreeSet {
    /// Everything in `ranges` is free.
    pub fn new(ranges: impl IntoIterator<Item = IpRange>) -> Self {
        let mut set = Self::default();
        for r in ranges {
            set.insert_interval(r.start(), r.end());
        }
        set
    }

    fn insert_interval(&mut self, mut start: u128, mut end: u128) {
        // Merge with a left neighbour that touches or overlaps.
        if let Some((&s, &e)) = self.intervals.range(..=start).next_back() {
            if e.checked_add(1).is_none_or(|next| next >= start) {
                start = s;
                end = end.max(e);
                self.intervals.remove(&s);
            }
        }
        // Merge with right neighbours that touch or overlap.
        while let Some((&s, &e)) = self.intervals.range(start..).next() {
            if end.checked_add(1).is_some_and(|next| s > next) {
                break;
            }
            end = end.max(e);
            self.intervals.remove(&s);
        }
        self.intervals.insert(start, end);
    }

    #[cfg(test)]
    pub fn contains(&self, addr: u128) -> bool {
        self.intervals
            .range(..=addr)
            .next_back()
            .is_some_and(|(_, &e)| addr <= e)
    }

    /// Marks `addr` used; false if it was not free.
    pub fn take(&mut self, addr: u128) -> bool {
        let Some((&s, &e)) = self.intervals.range(..=addr).next_back() else {
            return false;
        };
        if addr > e {
            return false;
        }
        self.intervals.remove(&s);
        if s < addr {
            self.intervals.insert(s, addr - 1);
        }
        if addr < e {
            self.intervals.insert(addr + 1, e);
        }
        true
    }

    /// Marks `addr` free again.
    pub fn give_back(&mut self, addr: u128) {
        self.insert_interval(addr, addr);
    }

    /// The lowest free address for which `usable` holds, without taking it. `usable` rejects
    /// few addresses (avoidBuggyIPs skips two in 256), so this looks at few candidates.
    pub fn lowest(&self, usable: impl Fn(u128) -> bool) -> Option<u128> {
        for (&s, &e) in &self.intervals {
            let mut candidate = s;
            loop {
                if usable(candidate) {
                    return Some(candidate);
                }
                if candidate == e {
                    break;
                }
                candidate += 1;
            }
        }
        None
    }

    /// Number of intervals.
    #[cfg(test)]
    pub fn fragments(&self) -> usize {
        self.intervals.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::collections::BTreeSet;

    fn range(s: &str) -> IpRange {
        IpRange::parse(s).unwrap()
    }

    #[test]
    fn takes_the_lowest_and_merges_on_give_back() {
        let mut f = FreeSet::new([range("192.0.2.0/30")]);
        let base = u128::from(u32::from(std::net::Ipv4Addr::new(192, 0, 2, 0)));
        assert_eq!(f.lowest(|_| true), Some(base));
        assert!(f.take(base));
        assert!(!f.take(base));
        assert!(f.take(base + 2));
        assert_eq!(f.fragments(), 2);
        assert_eq!(f.lowest(|_| true), Some(base + 1));
        f.give_back(base + 2);
        f.give_back(base);
        assert_eq!(f.fragments(), 1);
        assert_eq!(f, FreeSet::new([range("192.0.2.0/30")]));
    }

    #[test]
    fn handles_the_top_of_the_address_space() {
        let mut f = FreeSet::new([range("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe/127")]);
        assert!(f.take(u128::MAX));
        f.give_back(u128::MAX);
        assert_eq!(f.fragments(), 1);
        assert!(f.contains(u128::MAX));
    }

    proptest! {
        /// Against a plain set of numbers, any sequence of takes and gives agrees.
        #[test]
        fn agrees_with_a_model(ops in proptest::collection::vec((any::<bool>(), 0u128..64), 0..200)) {
            let mut f = FreeSet::new([IpRange::new("::".parse().unwrap(), "::3f".parse().unwrap()).unwrap()]);
            let mut model: BTreeSet<u128> = (0..64).collect();
            for (take, addr) in ops {
                if take {
                    prop_assert_eq!(f.take(addr), model.remove(&addr));
                } else if !model.contains(&addr) {
                    f.give_back(addr);
                    model.insert(addr);
                }
                prop_assert_eq!(f.lowest(|_| true), model.first().copied());
                prop_assert_eq!(f.lowest(|a| a % 3 == 0), model.iter().copied().find(|a| a % 3 == 0));
            }
            for a in 0..64 {
                prop_assert_eq!(f.contains(a), model.contains(&a));
            }
        }
    }
}
