//! Rejoin hold-down: which live speakers are too new to take addresses over. Pure.
//!
//! A speaker that comes back (a restart is a new generation, whose number is its start time in
//! ms since the epoch) would, ranked by hash alone, take back the addresses it owned before it
//! died, and if it dies again soon (a flapping node) clients lose traffic a second time. So a
//! returning speaker is *held*: ranked after every settled candidate (it is still a hot
//! standby, and still takes over if nobody else is left) until it has been live for the
//! hold-down. Then ownership moves back, make-before-break (the old owner keeps answering for
//! a grace period, see `l2::ownership`).
//!
//! Only a speaker that joins a cluster which was already there is held: a speaker is held while
//! it is younger than the hold-down *and* some live speaker started at least
//! [`COLD_START_WINDOW`] before it. When the whole cluster starts at once nobody is held, so a
//! cold start needs no waiting and no ownership moves afterwards (a slower start is held, and
//! its later move is make-before-break, so harmless). The rule compares start times, which every speaker
//! sees alike (they travel with the membership identity), so all speakers agree on who is held;
//! only the moment the hold-down ends depends on each one's clock, and make-before-break covers
//! that skew.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Speakers started within this of the oldest live one count as one cold start.
pub const COLD_START_WINDOW: Duration = Duration::from_secs(1);

/// Who is held and until when.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Held {
    /// Live speakers in their hold-down.
    pub names: BTreeSet<String>,
    /// The earliest end of a hold-down (ms since the epoch): plan again then.
    pub until_ms: Option<u64>,
}

/// `started_ms`: every live speaker (this one included) with its generation, i.e. its start
/// time in ms since the epoch; `now_ms`: this speaker's clock.
pub fn held(started_ms: &BTreeMap<String, u64>, now_ms: u64, hold_down: Duration) -> Held {
    let hold = hold_down.as_millis() as u64;
    let window = COLD_START_WINDOW.as_millis() as u64;
    let mut out = Held::default();
    if hold == 0 {
        return out;
    }
    let Some(&oldest) = started_ms.values().min() else {
        return out;
    };
    for (name, &start) in started_ms {
        let end = start.saturating_add(hold);
        let joined_late = start.saturating_sub(oldest) >= window;
        if joined_late && now_ms < end {
            out.names.insert(name.clone());
            out.until_ms = Some(out.until_ms.map_or(end, |u| u.min(end)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: Duration = Duration::from_secs(3);

    fn started(list: &[(&str, u64)]) -> BTreeMap<String, u64> {
        list.iter().map(|(n, s)| (n.to_string(), *s)).collect()
    }

    fn names(list: &[&str]) -> BTreeSet<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_cold_start_holds_nobody() {
        // Started within a second of each other: nobody joined an existing cluster.
        let s = started(&[("a", 100_000), ("b", 100_400), ("c", 100_999)]);
        for now in [101_000, 102_000, 104_500, 200_000] {
            assert_eq!(held(&s, now, H), Held::default(), "at {now}");
        }
    }

    #[test]
    fn a_returning_speaker_is_held_until_its_hold_down_ends() {
        let s = started(&[("a", 100_000), ("b", 100_010), ("c", 500_000)]);
        let h = held(&s, 500_020, H);
        assert_eq!(h.names, names(&["c"]));
        assert_eq!(h.until_ms, Some(503_000));
        assert_eq!(held(&s, 502_999, H).names, names(&["c"]));
        assert_eq!(held(&s, 503_000, H), Held::default());
        // Even into a young cluster: what counts is joining after the cold start.
        let young = started(&[("a", 100_000), ("c", 101_600)]);
        assert_eq!(held(&young, 101_700, H).names, names(&["c"]));
    }

    #[test]
    fn every_observer_agrees_whatever_it_saw_first() {
        // The returning speaker's own view and an old speaker's view hold the same node: the
        // rule reads start times, not when each observer first saw whom.
        let s = started(&[("a", 1_000), ("b", 9_000)]);
        assert_eq!(held(&s, 9_001, H).names, names(&["b"]));
        // Alone (its peers not seen yet) a speaker is not held: it must not wait for nothing;
        // the speaker plans only once membership has joined (see `membership`).
        assert_eq!(held(&started(&[("b", 9_000)]), 9_001, H), Held::default());
    }

    #[test]
    fn when_the_old_speakers_die_the_held_one_is_released_at_once() {
        let s = started(&[("c", 500_000)]);
        assert_eq!(held(&s, 500_001, H), Held::default());
    }

    #[test]
    fn the_earliest_end_is_reported_and_zero_disables() {
        let s = started(&[("a", 0), ("b", 10_000), ("c", 11_000)]);
        let h = held(&s, 11_500, H);
        assert_eq!(h.names, names(&["b", "c"]));
        assert_eq!(h.until_ms, Some(13_000));
        assert_eq!(held(&s, 11_500, Duration::ZERO), Held::default());
    }

    #[test]
    fn a_clock_far_behind_never_panics() {
        let s = started(&[("a", u64::MAX - 1), ("b", 0)]);
        let _ = held(&s, 0, H);
        let _ = held(&s, u64::MAX, Duration::from_secs(u64::MAX / 1000));
    }
}
