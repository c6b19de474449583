//! When takeover announcements go out. Pure: the caller passes the time in.
//!
//! On becoming the owner of an address a node announces at once, then again shortly after for
//! frames lost on the way (+50 ms, +250 ms), then after 1.1 s and 2.2 s for kernels older than
//! 4.12 that ignore updates within 1 s of the last one, then every minute so switch MAC tables
//! (which age out after about 300 s) and clients that missed everything learn it too.
//!
//! The refreshes are rate-limited across all addresses (a token bucket, `refresh_rate` per
//! second): a node that took over thousands of addresses at once would otherwise refresh them
//! all in the same millisecond every minute. Takeover bursts are never held back.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Offsets from the takeover of the first announcements, then the refresh period.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Schedule {
    /// Offsets of the burst, ascending, the first usually zero.
    pub burst: Vec<Duration>,
    /// Period of the announcements after the burst (zero: none).
    pub refresh: Duration,
    /// At most this many refresh announcements per second, over all addresses (zero: no
    /// limit).
    pub refresh_rate: u32,
}

/// The default refresh rate: 500 addresses per second refreshes 30,000 addresses a minute.
pub const DEFAULT_REFRESH_RATE: u32 = 500;

impl Default for Schedule {
    fn default() -> Self {
        Schedule {
            burst: [0, 50, 250, 1100, 2200]
                .into_iter()
                .map(Duration::from_millis)
                .collect(),
            refresh: Duration::from_secs(60),
            refresh_rate: DEFAULT_REFRESH_RATE,
        }
    }
}

impl Schedule {
    /// Whether announcement number `n` is a refresh (after the burst).
    pub fn is_refresh(&self, n: usize) -> bool {
        n >= self.burst.len()
    }

    /// Offset from the takeover of announcement number `n` (from 0); `None` when there is none.
    pub fn offset(&self, n: usize) -> Option<Duration> {
        if let Some(&d) = self.burst.get(n) {
            return Some(d);
        }
        if self.refresh.is_zero() {
            return None;
        }
        let last = self.burst.last().copied().unwrap_or_default();
        let after = u32::try_from(n - self.burst.len() + 1).ok()?;
        Some(last + self.refresh.checked_mul(after)?)
    }
}

#[derive(Clone, Debug)]
struct Entry {
    since: Instant,
    /// Index of the next announcement in the schedule.
    next: usize,
}

/// Announcements under way, one per key (an address on an interface).
#[derive(Clone, Debug)]
pub struct Announcements<K: Ord + Clone> {
    schedule: Schedule,
    entries: BTreeMap<K, Entry>,
    bucket: Bucket,
    /// Refreshes are due but wait for tokens until then.
    throttled_until: Option<Instant>,
}

/// The refresh token bucket: `rate` a second, as many at most.
#[derive(Clone, Debug)]
struct Bucket {
    rate: u32,
    tokens: f64,
    counted: Option<Instant>,
}

impl Bucket {
    /// Takes a token at `now`, if one is left (always, without a limit).
    fn take(&mut self, now: Instant) -> bool {
        let rate = f64::from(self.rate);
        if rate == 0.0 {
            return true;
        }
        let elapsed = self
            .counted
            .map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64());
        self.tokens = (self.tokens + elapsed * rate).min(rate);
        self.counted = Some(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

impl<K: Ord + Clone> Announcements<K> {
    pub fn new(schedule: Schedule) -> Self {
        Announcements {
            bucket: Bucket {
                rate: schedule.refresh_rate,
                tokens: f64::from(schedule.refresh_rate),
                counted: None,
            },
            schedule,
            entries: BTreeMap::new(),
            throttled_until: None,
        }
    }

    /// `key` became ours at `now`: announce it at once and then on the schedule. A key already
    /// announced keeps its schedule.
    pub fn start(&mut self, key: K, now: Instant) {
        self.entries.entry(key).or_insert(Entry {
            since: now,
            next: 0,
        });
    }

    /// `key` is no longer ours: no more announcements.
    pub fn stop(&mut self, key: &K) {
        self.entries.remove(key);
    }

    pub fn contains(&self, key: &K) -> bool {
        self.entries.contains_key(key)
    }

    pub fn keys(&self) -> impl Iterator<Item = &K> {
        self.entries.keys()
    }

    /// Keys to announce at `now`, each once however many of its times have passed (a late
    /// wake-up sends one announcement, not a burst of stale ones); refreshes only as far as the
    /// rate allows, the others stay due.
    pub fn due(&mut self, now: Instant) -> Vec<K> {
        let mut due = Vec::new();
        self.throttled_until = None;
        for (key, e) in &mut self.entries {
            let Some(at) = self.schedule.offset(e.next) else {
                continue;
            };
            if e.since + at > now {
                continue;
            }
            if self.schedule.is_refresh(e.next) && !self.bucket.take(now) {
                let wait = Duration::from_secs_f64(1.0 / f64::from(self.schedule.refresh_rate));
                self.throttled_until = Some(now + wait);
                continue;
            }
            due.push(key.clone());
            e.next += 1;
            while let Some(at) = self.schedule.offset(e.next) {
                if e.since + at > now {
                    break;
                }
                e.next += 1;
            }
        }
        due
    }

    /// When `due` next has something to return (a refresh held back by the rate: when a
    /// token is back).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.entries
            .values()
            .filter_map(|e| {
                let at = e.since + self.schedule.offset(e.next)?;
                Some(match self.throttled_until {
                    Some(t) if self.schedule.is_refresh(e.next) => at.max(t),
                    _ => at,
                })
            })
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn default_schedule_bursts_then_refreshes_every_minute() {
        let s = Schedule::default();
        let offsets: Vec<_> = (0..8).map(|n| s.offset(n).unwrap()).collect();
        assert_eq!(
            offsets,
            [0, 50, 250, 1100, 2200, 62_200, 122_200, 182_200].map(ms)
        );
        assert!(
            s.refresh < Duration::from_secs(300),
            "refresh before switch MAC tables age out"
        );
    }

    #[test]
    fn no_refresh_means_the_burst_only() {
        let s = Schedule {
            burst: vec![ms(0), ms(10)],
            refresh: Duration::ZERO,
            refresh_rate: 0,
        };
        assert_eq!(s.offset(1), Some(ms(10)));
        assert_eq!(s.offset(2), None);
        let mut a = Announcements::new(s);
        let t0 = Instant::now();
        a.start("x", t0);
        assert_eq!(a.due(t0 + ms(100)), vec!["x"]);
        assert_eq!(a.next_deadline(), None);
        assert!(a.due(t0 + ms(1000)).is_empty());
    }

    #[test]
    fn takeover_announces_at_once_then_on_each_offset() {
        let mut a = Announcements::new(Schedule::default());
        let t0 = Instant::now();
        a.start("vip", t0);
        assert_eq!(a.next_deadline(), Some(t0));
        assert_eq!(a.due(t0), vec!["vip"]);
        assert!(a.due(t0).is_empty(), "not twice for the same time");
        assert_eq!(a.next_deadline(), Some(t0 + ms(50)));
        assert!(a.due(t0 + ms(49)).is_empty());
        let mut sent = vec![0];
        for t in (1..=70_000).step_by(1) {
            if !a.due(t0 + ms(t)).is_empty() {
                sent.push(t);
            }
        }
        assert_eq!(sent, vec![0, 50, 250, 1100, 2200, 62_200]);
    }

    #[test]
    fn refreshes_are_spread_by_the_rate_and_bursts_never_wait() {
        let s = Schedule {
            burst: vec![ms(0)],
            refresh: Duration::from_secs(60),
            refresh_rate: 100,
        };
        let mut a = Announcements::new(s);
        let t0 = Instant::now();
        for k in 0..1000 {
            a.start(k, t0);
        }
        // A takeover of 1,000 addresses announces them all at once.
        assert_eq!(a.due(t0).len(), 1000);
        // A minute later their refreshes come at 100 a second (the bucket starts full).
        let at = t0 + Duration::from_secs(60);
        let mut sent_by: Vec<(u64, usize)> = Vec::new();
        let mut total = 0;
        let mut t = at;
        let mut wakeups = 0;
        while total < 1000 && wakeups < 10_000 {
            total += a.due(t).len();
            sent_by.push(((t - at).as_millis() as u64, total));
            let next = a.next_deadline().unwrap();
            assert!(next > t, "the loop never spins");
            t = next;
            wakeups += 1;
        }
        assert_eq!(total, 1000);
        let after = |ms_: u64| {
            sent_by
                .iter()
                .filter(|(m, _)| *m <= ms_)
                .map(|s| s.1)
                .max()
                .unwrap()
        };
        assert!(after(0) <= 100, "{}", after(0));
        assert!((150..=250).contains(&after(1000)), "{}", after(1000));
        let done = sent_by.iter().find(|s| s.1 == 1000).unwrap().0;
        assert!(
            (8_500..=9_500).contains(&done),
            "all refreshed after {done} ms"
        );
        // A new takeover meanwhile is not held back.
        a.start(5000, at + ms(10));
        let sent_now = a.due(at + ms(10));
        assert!(sent_now.contains(&5000));
    }

    #[test]
    fn a_late_wakeup_sends_once_and_resumes_the_schedule() {
        let mut a = Announcements::new(Schedule::default());
        let t0 = Instant::now();
        a.start(1, t0);
        assert_eq!(a.due(t0 + ms(1500)), vec![1], "one frame, not four");
        assert_eq!(a.next_deadline(), Some(t0 + ms(2200)));
    }

    #[test]
    fn restarting_an_announced_key_keeps_its_schedule_and_stop_ends_it() {
        let mut a = Announcements::new(Schedule::default());
        let t0 = Instant::now();
        a.start(1, t0);
        a.due(t0);
        a.start(1, t0 + ms(10));
        assert_eq!(a.next_deadline(), Some(t0 + ms(50)));
        a.start(2, t0 + ms(20));
        assert_eq!(a.next_deadline(), Some(t0 + ms(20)));
        assert_eq!(a.due(t0 + ms(60)), vec![1, 2]);
        a.stop(&1);
        assert!(!a.contains(&1));
        assert_eq!(a.keys().copied().collect::<Vec<_>>(), vec![2]);
        assert_eq!(a.next_deadline(), Some(t0 + ms(70)));
    }
}
