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
//!
//! ## Returns from isolation, and flap damping
//!
//! A speaker that was cut off (it heard nobody for a while, see `membership`) and declared down
//! renews its identity when it is back, keeping its start time. Two more rules hold it, both
//! computed from its identity, which every speaker sees alike:
//! - its return counts as a start ([`Standing::effective_start_ms`]), so the rule above holds
//!   it for a hold-down like any late joiner. When only two speakers are live (a two-node
//!   cluster, or one node of three down) a cut between them leaves each alone: both record a
//!   return within the cold-start window, so nobody is held and nothing moves twice. (A
//!   two-and-two split records nothing: each side hears its partner.);
//! - each return adds [`FLAP_PENALTY`] to a penalty that halves every [`HALF_LIFE`] (route
//!   flap damping, RFC 2439). A speaker whose penalty reached [`SUPPRESS`] is *damped*, held
//!   until the penalty decays below [`REUSE`], as long as some live speaker is clearly steadier
//!   (a quarter of its penalty or less). A link going up and down every few hundred ms so moves
//!   its node's addresses away once, and back once after it has been steady for a while.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// Speakers started within this of the oldest live one count as one cold start.
pub const COLD_START_WINDOW: Duration = Duration::from_secs(1);

/// The penalty one return from isolation adds.
pub const FLAP_PENALTY: u32 = 1000;
/// From this penalty on (a second return within a half-life), a speaker is damped.
pub const SUPPRESS: u32 = 1500;
/// A damped speaker is released when its penalty has decayed below this.
pub const REUSE: u32 = 750;
/// The penalty halves in this time.
pub const HALF_LIFE: Duration = Duration::from_secs(15);
/// The penalty never exceeds this: damped for at most four half-lives after the last return.
pub const MAX_PENALTY: u32 = REUSE * 16;
/// A record of a return further ahead of this speaker's clock is ignored (membership refuses
/// datagrams from clocks further apart anyway).
pub const MAX_AHEAD: Duration = Duration::from_secs(30);

/// A speaker's record of returns from isolation, carried in its membership identity.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Flaps {
    /// When it last came back (ms since the epoch, its clock); 0: never.
    pub last_ms: u64,
    /// The penalty at that moment.
    pub penalty: u32,
}

impl Flaps {
    /// The penalty decayed to `now_ms`.
    pub fn decayed(&self, now_ms: u64) -> f64 {
        let dt = now_ms.saturating_sub(self.last_ms) as f64;
        f64::from(self.penalty.min(MAX_PENALTY)) * 0.5f64.powf(dt / HALF_LIFE.as_millis() as f64)
    }

    /// The record as this speaker's rules read it: a penalty beyond [`MAX_PENALTY`] counts as
    /// that, and a return dated more than [`MAX_AHEAD`] ahead of `now_ms` (a bad clock) as none,
    /// so another speaker's record can never hold it for longer than the rules say.
    pub fn sanitized(&self, now_ms: u64) -> Flaps {
        if self.last_ms > now_ms.saturating_add(MAX_AHEAD.as_millis() as u64) {
            return Flaps::default();
        }
        Flaps {
            last_ms: self.last_ms,
            penalty: self.penalty.min(MAX_PENALTY),
        }
    }

    /// The record after one more return at `now_ms`.
    pub fn returned(&self, now_ms: u64) -> Flaps {
        let p = self.decayed(now_ms) + f64::from(FLAP_PENALTY);
        Flaps {
            last_ms: now_ms.max(self.last_ms),
            penalty: p.min(f64::from(MAX_PENALTY)).round() as u32,
        }
    }

    /// When the damping that the last return started ends, if it started one.
    pub fn damped_until_ms(&self) -> Option<u64> {
        let penalty = self.penalty.min(MAX_PENALTY);
        if penalty < SUPPRESS {
            return None;
        }
        let half_lives = (f64::from(penalty) / f64::from(REUSE)).log2();
        let ms = (half_lives * HALF_LIFE.as_millis() as f64).ceil() as u64;
        Some(self.last_ms.saturating_add(ms))
    }
}

/// What the hold-down rules read of a live speaker.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Standing {
    /// Its start time (ms since the epoch): the generation of its identity.
    pub started_ms: u64,
    pub flaps: Flaps,
}

impl Standing {
    pub fn started(started_ms: u64) -> Standing {
        Standing {
            started_ms,
            flaps: Flaps::default(),
        }
    }

    /// A return from isolation counts as a start.
    pub fn effective_start_ms(&self) -> u64 {
        self.started_ms.max(self.flaps.last_ms)
    }

    fn sanitized(&self, now_ms: u64) -> Standing {
        Standing {
            started_ms: self.started_ms,
            flaps: self.flaps.sanitized(now_ms),
        }
    }
}

/// Who is held and until when.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Held {
    /// Live speakers in their hold-down.
    pub names: BTreeSet<String>,
    /// The earliest end of a hold-down (ms since the epoch): plan again then.
    pub until_ms: Option<u64>,
}

/// `members`: every live speaker (this one included); `now_ms`: this speaker's clock. A
/// `hold_down` of zero holds nobody (no rejoin hold-down, no damping).
pub fn held(members: &BTreeMap<String, Standing>, now_ms: u64, hold_down: Duration) -> Held {
    let hold = hold_down.as_millis() as u64;
    let window = COLD_START_WINDOW.as_millis() as u64;
    let mut out = Held::default();
    if hold == 0 {
        return out;
    }
    let members: BTreeMap<&String, Standing> = members
        .iter()
        .map(|(n, m)| (n, m.sanitized(now_ms)))
        .collect();
    let Some(oldest) = members.values().map(Standing::effective_start_ms).min() else {
        return out;
    };
    let steadiest = members
        .values()
        .map(|m| m.flaps.decayed(now_ms))
        .fold(f64::INFINITY, f64::min);
    for (name, m) in &members {
        let start = m.effective_start_ms();
        let joined_late = start.saturating_sub(oldest) >= window;
        let mut end = None;
        if joined_late && now_ms < start.saturating_add(hold) {
            end = Some(start.saturating_add(hold));
        }
        if let Some(until) = m.flaps.damped_until_ms() {
            let penalty = m.flaps.decayed(now_ms);
            // Only against a clearly steadier speaker: speakers that flap alike stay alike.
            if now_ms < until && steadiest * 4.0 <= penalty {
                end = Some(end.map_or(until, |e: u64| e.max(until)));
            }
        }
        if let Some(end) = end {
            out.names.insert((*name).clone());
            out.until_ms = Some(out.until_ms.map_or(end, |u| u.min(end)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: Duration = Duration::from_secs(3);

    fn started(list: &[(&str, u64)]) -> BTreeMap<String, Standing> {
        list.iter()
            .map(|(n, s)| (n.to_string(), Standing::started(*s)))
            .collect()
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

    fn with_flaps(list: &[(&str, u64, Flaps)]) -> BTreeMap<String, Standing> {
        list.iter()
            .map(|(n, s, f)| {
                let standing = Standing {
                    started_ms: *s,
                    flaps: *f,
                };
                (n.to_string(), standing)
            })
            .collect()
    }

    #[test]
    fn a_return_from_isolation_is_held_like_a_rejoin() {
        let back = Flaps::default().returned(500_000);
        assert_eq!(back.penalty, FLAP_PENALTY);
        let s = with_flaps(&[
            ("a", 100_000, Flaps::default()),
            ("b", 100_010, Flaps::default()),
            ("c", 100_020, back),
        ]);
        let h = held(&s, 500_100, H);
        assert_eq!(h.names, names(&["c"]));
        assert_eq!(h.until_ms, Some(503_000));
        assert_eq!(held(&s, 503_000, H), Held::default());
    }

    #[test]
    fn a_cluster_coming_back_together_holds_nobody() {
        // A two-node cluster heals: both sides were cut off (each heard nobody), both
        // return within the cold-start window, so neither is held and nothing moves twice.
        let s = with_flaps(&[
            ("a", 100_000, Flaps::default().returned(500_000)),
            ("b", 100_010, Flaps::default().returned(500_300)),
        ]);
        for now in [500_300, 501_000, 503_100, 510_000] {
            assert_eq!(held(&s, now, H), Held::default(), "at {now}");
        }
    }

    /// `c` comes back every `period_ms` from 10 s on, `returns` times.
    fn flapping(period_ms: u64, returns: u64) -> (Flaps, u64) {
        let mut f = Flaps::default();
        let mut at = 10_000;
        for _ in 0..returns {
            f = f.returned(at);
            at += period_ms;
        }
        (f, at - period_ms)
    }

    #[test]
    fn a_flapping_speaker_is_held_throughout_and_released_once_steady() {
        // Returns every 600 ms for 10 s: held from the first return to the end of the damping
        // without a gap, so its addresses move away once and come back once.
        let mut f = Flaps::default();
        let mut last_end = 0;
        for k in 0..17u64 {
            let at = 10_000 + 600 * k;
            f = f.returned(at);
            let s = with_flaps(&[("a", 0, Flaps::default()), ("c", 0, f)]);
            for now in (at..at + 600).step_by(50) {
                let h = held(&s, now, H);
                assert!(h.names.contains("c"), "return {k}, at {now}: {h:?}");
                last_end = h.until_ms.unwrap();
            }
        }
        let last = 10_000 + 600 * 16;
        assert!(f.penalty >= SUPPRESS * 4, "{f:?}");
        assert_eq!(Some(last_end), f.damped_until_ms());
        // Damped for longer than the plain hold-down, and at most four half-lives.
        assert!(last_end > last + H.as_millis() as u64);
        assert!(last_end <= last + 4 * HALF_LIFE.as_millis() as u64);
        let s = with_flaps(&[("a", 0, Flaps::default()), ("c", 0, f)]);
        assert!(held(&s, last_end - 1, H).names.contains("c"));
        assert_eq!(held(&s, last_end, H), Held::default());
    }

    #[test]
    fn one_return_is_not_damped_and_the_penalty_decays() {
        let f = Flaps::default().returned(10_000);
        assert_eq!(f.damped_until_ms(), None);
        // Two returns a half-life apart: 1500, damped for one half-life; a little further
        // apart, not damped.
        let hl = HALF_LIFE.as_millis() as u64;
        let g = f.returned(10_000 + hl);
        assert_eq!(g.penalty, 1500);
        assert_eq!(g.damped_until_ms(), Some(10_000 + 2 * hl));
        let g = f.returned(10_000 + hl + 1_000);
        assert!(g.penalty < SUPPRESS, "{g:?}");
        assert_eq!(g.damped_until_ms(), None);
        // Two in quick succession: damped for log2(2000/750) half-lives (~21 s).
        let (d, last) = flapping(300, 2);
        let until = d.damped_until_ms().unwrap();
        assert!(
            (last + 21_000..last + 21_500).contains(&until),
            "{d:?} {until}"
        );
    }

    #[test]
    fn speakers_flapping_alike_are_not_damped() {
        let (f, last) = flapping(600, 10);
        let s = with_flaps(&[("a", 0, f), ("b", 0, f), ("c", 0, Flaps::default())]);
        // Against a steady speaker both are damped...
        let h = held(&s, last + 5_000, H);
        assert_eq!(h.names, names(&["a", "b"]));
        // ...but alone together, neither.
        let s = with_flaps(&[("a", 0, f), ("b", 0, f)]);
        assert_eq!(held(&s, last + 5_000, H), Held::default());
    }

    #[test]
    fn the_penalty_is_bounded_and_extreme_values_never_panic() {
        let (f, _) = flapping(1, 10_000);
        assert_eq!(f.penalty, MAX_PENALTY);
        let wild = Flaps {
            last_ms: u64::MAX,
            penalty: u32::MAX,
        };
        let _ = wild.returned(0);
        let _ = wild.damped_until_ms();
        let s = with_flaps(&[("a", u64::MAX, wild), ("b", 0, Flaps::default())]);
        let _ = held(&s, 0, H);
        let _ = held(&s, u64::MAX, H);
        // Another speaker's record never holds it beyond the rules: the penalty is capped...
        let huge = Flaps {
            last_ms: 100_000,
            penalty: u32::MAX,
        };
        let s = with_flaps(&[("a", 0, Flaps::default()), ("c", 0, huge)]);
        let end = held(&s, 100_001, H).until_ms.unwrap();
        assert_eq!(Some(end), huge.sanitized(100_001).damped_until_ms());
        assert!(end <= 100_000 + 4 * HALF_LIFE.as_millis() as u64);
        // ...and a return dated far ahead of our clock counts as none.
        let ahead = Flaps {
            last_ms: 10_000_000,
            penalty: 5_000,
        };
        let s = with_flaps(&[("a", 0, Flaps::default()), ("c", 0, ahead)]);
        assert_eq!(held(&s, 100_000, H), Held::default());
    }
}
