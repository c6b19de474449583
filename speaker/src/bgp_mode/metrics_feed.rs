//! Copies the BGP driver's peers into the metric families at scrape time: the engine keeps
//! counting on its own atomics, and a scrape reads them once ([`BgpStatus::peers`]), maps them
//! to plain samples ([`samples`]) and ends the series of peers that are gone.

use super::driver::{BgpStatus, PeerStatus};
use crate::metrics::{BfdSessionSample, BgpPeerSample, Health, Metrics};
use ferrolb_bgp::bfd::SessionState;
use ferrolb_bgp::State;
use std::collections::BTreeSet;
use std::sync::Mutex;

/// The BGP and BFD samples of the peers, by address (the `peer` label). Announced prefixes
/// count only while the session is established: routes the session cannot carry (family not
/// negotiated, no next hop) are left out. Peers without a BFDProfile have no BFD sample.
pub fn samples(peers: &[PeerStatus]) -> (Vec<BgpPeerSample>, Vec<BfdSessionSample>) {
    let mut bgp = Vec::with_capacity(peers.len());
    let mut bfd = Vec::new();
    for p in peers {
        let up = p.state == Some(State::Established);
        let carried = (p.routes as u64).saturating_sub(p.counters.unsendable_routes);
        bgp.push(BgpPeerSample::from_engine(
            &p.address,
            &p.counters,
            if up { carried } else { 0 },
        ));
        if let Some(b) = &p.bfd {
            bfd.push(BfdSessionSample {
                peer: p.address.to_string(),
                session_up: b.state == Some(SessionState::Up),
                control_packets_in: b.control_packets_in,
                control_packets_out: b.control_packets_out,
                up_events: b.up_events,
                down_events: b.down_events,
                echo_packets_in: b.echo_packets_in,
                echo_packets_out: b.echo_packets_out,
            });
        }
    }
    (bgp, bfd)
}

/// The peers whose series were set on the last scrape, to end those that disappear.
#[derive(Default)]
struct Published {
    bgp: BTreeSet<String>,
    bfd: BTreeSet<String>,
}

impl Published {
    fn apply(&mut self, metrics: &Metrics, peers: &[PeerStatus]) {
        let (bgp, bfd) = samples(peers);
        let bgp_now: BTreeSet<String> = bgp.iter().map(|s| s.peer.clone()).collect();
        let bfd_now: BTreeSet<String> = bfd.iter().map(|s| s.peer.clone()).collect();
        for gone in self.bgp.difference(&bgp_now) {
            metrics.remove_bgp_peer(gone);
        }
        for gone in self.bfd.difference(&bfd_now) {
            metrics.remove_bfd_session(gone);
        }
        for s in &bgp {
            metrics.set_bgp_peer(s);
        }
        for s in &bfd {
            metrics.set_bfd_session(s);
        }
        self.bgp = bgp_now;
        self.bfd = bfd_now;
    }
}

/// Feeds the BGP peer and BFD session families from `status` before every scrape.
pub fn feed_on_scrape(health: &Health, status: BgpStatus) {
    let published = Mutex::new(Published::default());
    health.on_scrape(move |metrics| {
        let peers = status.peers();
        published
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .apply(metrics, &peers);
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferrolb_bgp::{BfdCounters, PeerCounters};
    use std::net::IpAddr;

    fn peer(addr: &str, state: Option<State>, routes: usize) -> PeerStatus {
        PeerStatus {
            name: format!("peer-{addr}"),
            address: addr.parse::<IpAddr>().unwrap().into(),
            state,
            counters: PeerCounters {
                state,
                updates_sent: 4,
                updates_received: 2,
                ..Default::default()
            },
            routes,
            session: None,
            last_down: None,
            bfd: None,
        }
    }

    fn value(text: &str, series: &str) -> Option<String> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ').map(str::to_owned))
    }

    #[test]
    fn established_peer_counts_its_carried_routes_and_a_down_one_none() {
        let mut up = peer("192.0.2.254", Some(State::Established), 3);
        up.counters.unsendable_routes = 1;
        let down = peer("2001:db8::fe", Some(State::Active), 3);
        let (bgp, bfd) = samples(&[up, down]);
        assert!(bfd.is_empty(), "no BFDProfile, no BFD sample");
        assert_eq!(
            bgp[0],
            BgpPeerSample {
                peer: "192.0.2.254".into(),
                session_up: true,
                updates_sent: 4,
                updates_received: 2,
                announced_prefixes: 2,
            }
        );
        assert_eq!(
            (
                bgp[1].peer.as_str(),
                bgp[1].session_up,
                bgp[1].announced_prefixes
            ),
            ("2001:db8::fe", false, 0)
        );
    }

    #[test]
    fn bfd_counters_map_to_the_session_sample() {
        let mut p = peer("192.0.2.254", Some(State::Established), 1);
        p.bfd = Some(BfdCounters {
            state: Some(SessionState::Up),
            control_packets_in: 40,
            control_packets_out: 41,
            up_events: 1,
            down_events: 0,
            ..Default::default()
        });
        let mut waiting = peer("192.0.2.253", Some(State::Connect), 1);
        // Configured, but no BFD session runs before the BGP session is up.
        waiting.bfd = Some(BfdCounters::default());
        let (_, bfd) = samples(&[p, waiting]);
        assert_eq!(
            bfd,
            vec![
                BfdSessionSample {
                    peer: "192.0.2.254".into(),
                    session_up: true,
                    control_packets_in: 40,
                    control_packets_out: 41,
                    up_events: 1,
                    down_events: 0,
                    echo_packets_in: 0,
                    echo_packets_out: 0,
                },
                BfdSessionSample {
                    peer: "192.0.2.253".into(),
                    ..Default::default()
                },
            ]
        );
    }

    #[test]
    fn series_follow_the_peers_and_end_when_a_peer_goes() {
        let metrics = Metrics::new();
        let mut published = Published::default();
        let mut a = peer("192.0.2.254", Some(State::Established), 2);
        a.bfd = Some(BfdCounters {
            state: Some(SessionState::Up),
            up_events: 1,
            ..Default::default()
        });
        let b = peer("192.0.2.253", Some(State::Idle), 2);
        published.apply(&metrics, &[a.clone(), b]);
        let text = metrics.encode();
        let up_a = "ferrolb_bgp_session_up{peer=\"192.0.2.254\"}";
        let up_b = "ferrolb_bgp_session_up{peer=\"192.0.2.253\"}";
        let bfd_a = "ferrolb_bfd_session_up{peer=\"192.0.2.254\"}";
        assert_eq!(value(&text, up_a).as_deref(), Some("1"), "{text}");
        assert_eq!(value(&text, up_b).as_deref(), Some("0"), "{text}");
        assert_eq!(value(&text, bfd_a).as_deref(), Some("1"), "{text}");
        assert_eq!(
            value(
                &text,
                "ferrolb_bgp_announced_prefixes_total{peer=\"192.0.2.254\"}"
            )
            .as_deref(),
            Some("2"),
            "{text}"
        );
        assert!(!text.contains("ferrolb_bfd_session_up{peer=\"192.0.2.253\"}"));

        // BFD goes down, then peer b is removed and a loses its BFDProfile.
        a.bfd = None;
        published.apply(&metrics, &[a]);
        let text = metrics.encode();
        assert_eq!(value(&text, up_a).as_deref(), Some("1"), "{text}");
        assert!(!text.contains(up_b), "{text}");
        assert!(!text.contains(bfd_a), "{text}");
        assert!(!text.contains("bfd_session_up_events_total{peer=\"192.0.2.254\"}"));
    }
}
