//! Membership configuration: who we are, whom to contact, the key, and the SWIM timers.

use super::auth::MembershipKey;
use std::net::{IpAddr, SocketAddr};
use std::num::{NonZeroU8, NonZeroUsize};
use std::time::Duration;

/// Default UDP port, the one memberlist (and so MetalLB) uses.
pub const DEFAULT_PORT: u16 = 7946;

/// A speaker we should talk to: a Node's name and its InternalIP (status.addresses).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Peer {
    pub name: String,
    pub ip: IpAddr,
}

/// The SWIM timers, tuned for L2 failover: a hard-killed node confirmed dead by every other
/// speaker in about 100-150 ms, and no false deaths at 1% packet loss on a busy CPU.
///
/// How the defaults get there (N speakers, loss p = 1%):
///
/// - `probe_period` 30 ms: each speaker probes one member per period, so a dead member is
///   probed by someone within about one period (with N-1 probers, on average much sooner), and
///   the probe fails at the end of that period. The cost is one ping and one ack per speaker per
///   period, independent of N and of the number of Services; about 70 small datagrams per
///   second per speaker, plus the occasional indirect round.
/// - `probe_rtt` 10 ms: LAN round trips are well under 1 ms; 10 ms leaves room for a scheduler
///   that is busy and still leaves 20 ms of the period for the indirect round (4 hops).
/// - `num_indirect_probes` 3: a suspicion needs the direct exchange to fail (~2p) *and* every
///   indirect path (4 datagrams each, ~4p) to fail: 2% x 4% = 0.08% of probes with one helper
///   (3 speakers), 0.0003% with three. So the node with a bad NIC, whose own probes fail, cannot
///   get anyone else declared dead: other speakers still reach the target through the helpers
///   and the target keeps answering them.
/// - `suspect_to_down_after` 75 ms: the time a suspected speaker has to hear of the suspicion
///   and refute it (bump its incarnation); updates are gossiped every `gossip_interval` (10 ms)
///   to 3 members while any are pending, and piggybacked on every probe, so a refutation
///   normally lands within 20-30 ms and can lose two rounds of datagrams before the deadline.
///   Detection therefore costs about (time until probed) + 30 ms + 75 ms + one gossip hop:
///   roughly 100-150 ms.
/// - `max_transmissions` 8: each update rides on 8 datagrams, enough to reach every member of
///   a cluster of hundreds at 1% loss (memberlist uses 4 x log10(N+1)).
/// - `announce_interval` 1 s: how often we send a join (Announce) to configured peers that are
///   not live, so a speaker that starts first, or comes back, finds the others without help.
/// - `max_clock_skew` 30 s: see [`super::auth`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Timers {
    pub probe_period: Duration,
    pub probe_rtt: Duration,
    pub num_indirect_probes: usize,
    pub suspect_to_down_after: Duration,
    pub max_transmissions: u8,
    pub gossip_interval: Duration,
    pub gossip_fanout: usize,
    pub announce_interval: Duration,
    pub max_clock_skew: Duration,
}

impl Default for Timers {
    fn default() -> Self {
        Timers {
            probe_period: Duration::from_millis(30),
            probe_rtt: Duration::from_millis(10),
            num_indirect_probes: 3,
            suspect_to_down_after: Duration::from_millis(75),
            max_transmissions: 8,
            gossip_interval: Duration::from_millis(10),
            gossip_fanout: 3,
            announce_interval: Duration::from_secs(1),
            max_clock_skew: Duration::from_secs(30),
        }
    }
}

/// Why a configuration cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("no membership key: create the Secret ferrolb-memberlist (key secretkey) in namespace ferrolb-system, or pass --insecure-membership")]
    NoKey,
    #[error("node name is empty or longer than 253 bytes")]
    BadNodeName,
    #[error("probe_rtt ({rtt:?}) must be non-zero and shorter than probe_period ({period:?})")]
    ProbeRtt { rtt: Duration, period: Duration },
    #[error("{0} must be non-zero")]
    Zero(&'static str),
}

/// Whether datagrams are authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Security {
    Key(MembershipKey),
    /// Only with `--insecure-membership`: anyone on the segment can take part.
    Insecure,
}

impl Security {
    /// The key if there is one; without a key only an explicit opt-in gives the insecure mode.
    pub fn choose(
        key: Option<MembershipKey>,
        insecure_allowed: bool,
    ) -> Result<Security, ConfigError> {
        match (key, insecure_allowed) {
            (Some(k), _) => Ok(Security::Key(k)),
            (None, true) => Ok(Security::Insecure),
            (None, false) => Err(ConfigError::NoKey),
        }
    }
}

/// Everything membership needs to start.
#[derive(Clone, Debug)]
pub struct MembershipConfig {
    /// This node's name (NODE_NAME).
    pub node_name: String,
    /// The address others reach us at (our InternalIP); we bind it with [`Self::port`].
    pub ip: IpAddr,
    pub port: u16,
    /// Bind the wildcard address instead of `ip` (e.g. when the InternalIP is not local).
    pub bind_any: bool,
    pub peers: Vec<Peer>,
    pub security: Security,
    pub timers: Timers,
    /// The fast path for L2 owners ([`super::fast`]); None: off.
    pub fast: Option<super::fast::FastTimers>,
}

impl MembershipConfig {
    pub fn new(node_name: &str, ip: IpAddr, security: Security) -> MembershipConfig {
        MembershipConfig {
            node_name: node_name.to_owned(),
            ip,
            port: DEFAULT_PORT,
            bind_any: false,
            peers: Vec::new(),
            security,
            timers: Timers::default(),
            fast: Some(super::fast::FastTimers::default()),
        }
    }

    pub fn advertised_addr(&self) -> SocketAddr {
        SocketAddr::new(self.ip, self.port)
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node_name.is_empty() || self.node_name.len() > 253 {
            return Err(ConfigError::BadNodeName);
        }
        self.timers.to_foca().map(|_| ())
    }
}

impl Timers {
    /// The foca configuration these timers mean; checks foca's own constraints first so a bad
    /// value is a clear error rather than a misbehaving cluster.
    pub fn to_foca(&self) -> Result<foca::Config, ConfigError> {
        let t = self;
        for (name, d) in [
            ("probe_period", t.probe_period),
            ("suspect_to_down_after", t.suspect_to_down_after),
            ("gossip_interval", t.gossip_interval),
            ("announce_interval", t.announce_interval),
        ] {
            if d.is_zero() {
                return Err(ConfigError::Zero(name));
            }
        }
        if t.probe_rtt.is_zero() || t.probe_rtt >= t.probe_period {
            return Err(ConfigError::ProbeRtt {
                rtt: t.probe_rtt,
                period: t.probe_period,
            });
        }
        let indirect = NonZeroUsize::new(t.num_indirect_probes)
            .ok_or(ConfigError::Zero("num_indirect_probes"))?;
        let fanout =
            NonZeroUsize::new(t.gossip_fanout).ok_or(ConfigError::Zero("gossip_fanout"))?;
        let max_tx =
            NonZeroU8::new(t.max_transmissions).ok_or(ConfigError::Zero("max_transmissions"))?;
        let mut c = foca::Config::simple();
        c.probe_period = t.probe_period;
        c.probe_rtt = t.probe_rtt;
        c.num_indirect_probes = indirect;
        c.max_transmissions = max_tx;
        c.suspect_to_down_after = t.suspect_to_down_after;
        // Identities renew themselves (generation), so remembering the dead costs one entry
        // per node name; keep them long enough that stale gossip about them stays refused.
        c.remove_down_after = Some(Duration::from_secs(3600));
        // Payloads: a header plus updates; stay well under a 1500-byte MTU after our framing.
        c.max_packet_size = NonZeroUsize::new(1200).expect("non-zero");
        // A speaker declared dead while alive (partition, stall) learns it at once and renews.
        c.notify_down_members = true;
        c.periodic_gossip = Some(foca::PeriodicParams {
            frequency: t.gossip_interval,
            num_members: fanout,
        });
        c.periodic_announce = Some(foca::PeriodicParams {
            frequency: Duration::from_secs(30),
            num_members: NonZeroUsize::new(1).expect("non-zero"),
        });
        c.periodic_announce_to_down_members = Some(foca::PeriodicParams {
            frequency: t.announce_interval,
            num_members: NonZeroUsize::new(2).expect("non-zero"),
        });
        Ok(c)
    }

    /// How many datagrams each update rides on in a cluster of `members`: the configured
    /// value, raised to memberlist's 4 x ceil(log10(N + 1)) for large clusters. Simulated at
    /// 250 speakers, 8 left one of them learning of a death by its own probe 5 s later; 12 told
    /// every one within 190 ms (speaker/tests/membership_scale.rs).
    pub fn max_transmissions_for(&self, members: usize) -> u8 {
        let digits = ((members + 1) as f64).log10().ceil() as u32;
        let scaled = 4u32.saturating_mul(digits).min(u32::from(u8::MAX)) as u8;
        self.max_transmissions.max(scaled)
    }

    /// A rough upper bound of the time from a hard kill to every live speaker declaring the
    /// node dead, ignoring loss: probed within a period, failing at its end, then suspicion,
    /// then a few gossip hops.
    pub fn expected_worst_detection(&self) -> Duration {
        self.probe_period * 2 + self.suspect_to_down_after + self.gossip_interval * 3
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_fast() {
        let t = Timers::default();
        let c = t.to_foca().unwrap();
        assert_eq!(c.probe_period, Duration::from_millis(30));
        assert!(
            c.probe_rtt * 2 < c.probe_period,
            "room for the indirect round"
        );
        assert!(t.expected_worst_detection() <= Duration::from_millis(200));
        // Suspicion spans several gossip rounds so a refutation survives lost datagrams.
        assert!(t.suspect_to_down_after >= t.gossip_interval * 5);
        assert!(c.notify_down_members);
    }

    #[test]
    fn updates_ride_on_more_datagrams_in_large_clusters() {
        let t = Timers::default();
        assert_eq!(t.max_transmissions_for(3), 8);
        assert_eq!(t.max_transmissions_for(99), 8);
        assert_eq!(t.max_transmissions_for(100), 12);
        assert_eq!(t.max_transmissions_for(250), 12);
        assert_eq!(t.max_transmissions_for(1000), 16);
        assert_eq!(t.max_transmissions_for(usize::MAX / 2), 76);
    }

    #[test]
    fn bad_timers_are_clear_errors() {
        let t = Timers {
            probe_rtt: Duration::from_millis(30),
            ..Timers::default()
        };
        assert!(matches!(t.to_foca(), Err(ConfigError::ProbeRtt { .. })));
        let t = Timers {
            num_indirect_probes: 0,
            ..Timers::default()
        };
        assert_eq!(
            t.to_foca().unwrap_err(),
            ConfigError::Zero("num_indirect_probes")
        );
        let t = Timers {
            suspect_to_down_after: Duration::ZERO,
            ..Timers::default()
        };
        assert_eq!(
            t.to_foca().unwrap_err(),
            ConfigError::Zero("suspect_to_down_after")
        );
    }

    #[test]
    fn without_a_key_only_the_explicit_flag_gives_insecure() {
        assert_eq!(Security::choose(None, false), Err(ConfigError::NoKey));
        assert_eq!(Security::choose(None, true), Ok(Security::Insecure));
        let k = MembershipKey::new(vec![7; 32]).unwrap();
        assert_eq!(
            Security::choose(Some(k.clone()), true),
            Ok(Security::Key(k))
        );
        assert!(ConfigError::NoKey
            .to_string()
            .contains("ferrolb-memberlist"));
    }

    #[test]
    fn node_name_is_checked() {
        let mut c = MembershipConfig::new("", "192.0.2.1".parse().unwrap(), Security::Insecure);
        assert_eq!(c.validate(), Err(ConfigError::BadNodeName));
        c.node_name = "n".repeat(254);
        assert_eq!(c.validate(), Err(ConfigError::BadNodeName));
        c.node_name = "node-a".into();
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.advertised_addr().port(), 7946);
    }
}
