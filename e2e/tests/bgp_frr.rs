//! Interop of ferrolb-bgp with real FRR (zebra + bgpd) in network namespaces.
//!
//! Each test builds its own pair of namespaces (`flb-<tag>-s` for our engine, `flb-<tag>-r`
//! for FRR), then re-runs itself inside the speaker namespace (see `lab::child`), where it
//! starts FRR, runs the engine and checks FRR's view with `vtysh ... json`. Skips with a
//! visible message when not root or when FRR is missing.

use std::net::IpAddr;
use std::time::Duration;

use ferrolb_bgp::{
    BgpEngine, EngineConfig, GracefulRestartConfig, LargeCommunity, PeerConfig, RouteAttributes,
    SessionEvent, SessionEventKind, ShutdownMode, State,
};
use ferrolb_e2e::lab::{self, frr, Frr, TwoNodeLab, ROUTER_V4, ROUTER_V6, SPEAKER_V4, SPEAKER_V6};
use ipnet::IpNet;
use tokio::sync::mpsc::UnboundedReceiver;

const SESSION: Duration = Duration::from_secs(15);

/// Parent: set up the namespaces and run the child; child: run `body`.
fn lab_test(tag: &str, test: &str, limit: Duration, body: impl FnOnce(&str)) {
    if lab::is_child(test) {
        body(tag);
        return;
    }
    if let Some(why) = lab::skip_reason() {
        eprintln!("SKIP: {test}: {why}");
        return;
    }
    let lab = TwoNodeLab::new(tag).unwrap_or_else(|e| panic!("lab setup: {e}"));
    let result = lab::run_in_netns(&lab.speaker, test, limit);
    // Whatever happened to the child, no FRR daemon outlives the test.
    frr::kill_leftovers(&frr_name(tag));
    drop(lab);
    match result {
        Ok(out) => println!("{out}"),
        Err(e) => panic!("{e}"),
    }
}

fn frr_name(tag: &str) -> String {
    format!("flb-{tag}")
}

fn start_frr(tag: &str, config: &str) -> Frr {
    Frr::start(&TwoNodeLab::router_ns(tag), &frr_name(tag), config)
        .unwrap_or_else(|e| panic!("FRR: {e}"))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

/// FRR configuration: `frr defaults datacenter`, no policy needed, our neighbor `extra`.
fn frr_conf(asn: u32, body: &str) -> String {
    format!(
        "frr defaults datacenter\nhostname router\n!\nrouter bgp {asn}\n bgp router-id {ROUTER_V4}\n no bgp ebgp-requires-policy\n no bgp network import-check\n{body}\n!\n"
    )
}

async fn engine() -> (BgpEngine, UnboundedReceiver<SessionEvent>) {
    BgpEngine::start(EngineConfig {
        router_id: SPEAKER_V4.parse().unwrap(),
        listen: vec!["0.0.0.0:179".parse().unwrap(), "[::]:179".parse().unwrap()],
    })
    .await
    .expect("engine start")
}

async fn wait_up(events: &mut UnboundedReceiver<SessionEvent>) -> ferrolb_bgp::SessionInfo {
    loop {
        let ev = tokio::time::timeout(SESSION, events.recv())
            .await
            .expect("session did not come up in time")
            .expect("events closed");
        if let SessionEventKind::Up(info) = ev.kind {
            return info;
        }
    }
}

fn host_v4(n: u32) -> Vec<(IpNet, RouteAttributes)> {
    (0..n)
        .map(|i| {
            let a = std::net::Ipv4Addr::from(0xc633_6400u32 + (i % 256) + ((i / 256) << 8));
            // 198.51.100.0 + i, spilling into 198.51.101.x ... (test addresses only as /32s).
            (
                IpNet::new(IpAddr::V4(a), 32).unwrap(),
                RouteAttributes::default(),
            )
        })
        .collect()
}

#[test]
fn bgp_ebgp_four_octet_asn_ipv4_session() {
    lab_test(
        "e4",
        "bgp_ebgp_four_octet_asn_ipv4_session",
        Duration::from_secs(60),
        |tag| {
            // FRR passive: we are the active side.
            let frr = start_frr(
            tag,
            &frr_conf(
                65001,
                &format!(
                    " neighbor {SPEAKER_V4} remote-as 4200000001\n neighbor {SPEAKER_V4} passive\n address-family ipv6 unicast\n  neighbor {SPEAKER_V4} activate\n exit-address-family"
                ),
            ),
        );
            runtime().block_on(async {
                let (engine, mut events) = engine().await;
                let mut peer = PeerConfig::new(ip(ROUTER_V4), 4_200_000_001, 65001);
                peer.next_hop_v6 = Some(SPEAKER_V6.parse().unwrap());
                engine.add_peer(peer).unwrap();
                let attrs = RouteAttributes {
                    med: Some(50),
                    communities: vec![(65001 << 16) | 100, 0xffff_ff01],
                    large_communities: vec![LargeCommunity {
                        global: 4_200_000_001,
                        local1: 1,
                        local2: 2,
                    }],
                    ..Default::default()
                };
                engine
                    .set_routes(
                        ip(ROUTER_V4),
                        vec![
                            (net("198.51.100.10/32"), attrs.clone()),
                            (net("2001:db8:100::10/128"), attrs.clone()),
                        ],
                    )
                    .unwrap();
                let info = wait_up(&mut events).await;
                assert_eq!(info.hold_time, 9, "datacenter hold time");
                assert!(info.four_octet_asn);
                frr.wait_state(SPEAKER_V4, "Established", SESSION).unwrap();
                frr.wait_received("ipv4", SPEAKER_V4, 1, SESSION).unwrap();
                frr.wait_received("ipv6", SPEAKER_V4, 1, SESSION).unwrap();

                for (afi, prefix) in [
                    ("ipv4", "198.51.100.10/32"),
                    ("ipv6", "2001:db8:100::10/128"),
                ] {
                    let p = frr
                        .path(afi, prefix)
                        .unwrap_or_else(|| panic!("{prefix} missing"));
                    assert_eq!(p["aspath"]["string"], "4200000001", "{p}");
                    assert_eq!(p["community"]["string"], "65001:100 no-export", "{p}");
                    assert_eq!(p["largeCommunity"]["string"], "4200000001:1:2", "{p}");
                    assert_eq!(p["metric"], 50, "{p}");
                    assert_eq!(p["valid"], true, "{p}");
                }
                let p = frr.path("ipv6", "2001:db8:100::10/128").unwrap();
                assert_eq!(p["nexthops"][0]["ip"], SPEAKER_V6, "{p}");

                // Route refresh from FRR: answered with the table again.
                frr.vtysh(&format!("clear bgp {SPEAKER_V4} soft in"))
                    .unwrap();
                lab::wait_for(SESSION, Duration::from_millis(50), || {
                    (engine.counters(ip(ROUTER_V4))?.route_refreshes_received >= 2).then_some(())
                })
                .expect("route refresh for both families");
                frr.wait_received("ipv4", SPEAKER_V4, 1, SESSION).unwrap();

                // Withdraw the IPv6 route, add an aggregate.
                engine
                    .set_routes(
                        ip(ROUTER_V4),
                        vec![
                            (net("198.51.100.10/32"), attrs.clone()),
                            (net("203.0.113.0/24"), RouteAttributes::default()),
                        ],
                    )
                    .unwrap();
                frr.wait_received("ipv6", SPEAKER_V4, 0, SESSION).unwrap();
                frr.wait_received("ipv4", SPEAKER_V4, 2, SESSION).unwrap();
                assert!(frr.path("ipv4", "203.0.113.0/24").is_some());

                let c = engine.counters(ip(ROUTER_V4)).unwrap();
                assert_eq!(c.state, Some(State::Established));
                assert!(
                    c.prefixes_withdrawn >= 1 && c.prefixes_announced >= 3,
                    "{c:?}"
                );

                // Cease with a shutdown message shows up at FRR.
                engine
                    .shutdown(ShutdownMode::Cease(Some("ferrolb test over".into())))
                    .await;
                frr.wait_received("ipv4", SPEAKER_V4, 0, SESSION).ok();
                let n = frr
                    .json(&format!("show bgp neighbors {SPEAKER_V4} json"))
                    .unwrap();
                let text = n.to_string();
                assert!(text.contains("ferrolb test over"), "{text}");
            });
        },
    );
}

#[test]
fn bgp_ibgp_two_octet_ipv6_session_extended_next_hop() {
    lab_test(
        "i6",
        "bgp_ibgp_two_octet_ipv6_session_extended_next_hop",
        Duration::from_secs(60),
        |tag| {
            let frr = start_frr(
            tag,
            &frr_conf(
                65010,
                &format!(
                    " neighbor {SPEAKER_V6} remote-as 65010\n neighbor {SPEAKER_V6} capability extended-nexthop\n address-family ipv4 unicast\n  neighbor {SPEAKER_V6} activate\n exit-address-family\n address-family ipv6 unicast\n  neighbor {SPEAKER_V6} activate\n exit-address-family"
                ),
            ),
        );
            runtime().block_on(async {
                let (engine, mut events) = engine().await;
                let mut peer = PeerConfig::new(ip(ROUTER_V6), 65010, 65010);
                peer.extended_next_hop = true;
                engine.add_peer(peer).unwrap();
                let attrs = RouteAttributes {
                    local_pref: Some(250),
                    ..Default::default()
                };
                engine
                    .set_routes(
                        ip(ROUTER_V6),
                        vec![
                            (net("2001:db8:100::20/128"), attrs.clone()),
                            (net("198.51.100.20/32"), attrs.clone()),
                        ],
                    )
                    .unwrap();
                let info = wait_up(&mut events).await;
                assert!(info.ipv4_with_ipv6_next_hop, "{info:?}");
                frr.wait_received("ipv6", SPEAKER_V6, 1, SESSION).unwrap();
                frr.wait_received("ipv4", SPEAKER_V6, 1, SESSION).unwrap();
                for (afi, prefix) in [
                    ("ipv4", "198.51.100.20/32"),
                    ("ipv6", "2001:db8:100::20/128"),
                ] {
                    let p = frr
                        .path(afi, prefix)
                        .unwrap_or_else(|| panic!("{prefix} missing"));
                    assert_eq!(p["locPrf"], 250, "{p}");
                    assert_eq!(p["aspath"]["string"], "Local", "{p}");
                }
                let p = frr.path("ipv4", "198.51.100.20/32").unwrap();
                assert_eq!(
                    p["nexthops"][0]["ip"], SPEAKER_V6,
                    "IPv4 route with IPv6 next hop: {p}"
                );
                engine.shutdown(ShutdownMode::Cease(None)).await;
            });
        },
    );
}

#[test]
fn bgp_md5_wrong_then_right_and_frr_active() {
    lab_test(
        "md",
        "bgp_md5_wrong_then_right_and_frr_active",
        Duration::from_secs(60),
        |tag| {
            let frr = start_frr(
            tag,
            &frr_conf(
                65001,
                &format!(
                    " neighbor {SPEAKER_V4} remote-as 65020\n neighbor {SPEAKER_V4} password s3cret\n neighbor {SPEAKER_V4} timers connect 1"
                ),
            ),
        );
            runtime().block_on(async {
                let (engine, mut events) = engine().await;
                // Passive with the wrong key: FRR's connections carry signatures we reject.
                let mut peer = PeerConfig::new(ip(ROUTER_V4), 65020, 65001);
                peer.passive = true;
                peer.md5_password = Some("wrong".into());
                peer.families = vec![ferrolb_bgp::Family::IPV4_UNICAST];
                engine.add_peer(peer.clone()).unwrap();
                engine.set_routes(ip(ROUTER_V4), host_v4(3)).unwrap();
                let early = tokio::time::timeout(Duration::from_secs(3), events.recv()).await;
                assert!(early.is_err(), "session with a wrong MD5 key: {early:?}");
                assert_ne!(
                    frr.neighbor_state(SPEAKER_V4).as_deref(),
                    Some("Established")
                );
                // The right key: FRR (active, connect timer 1 s) gets through.
                peer.md5_password = Some("s3cret".into());
                engine.update_peer(peer).await.unwrap();
                wait_up(&mut events).await;
                frr.wait_received("ipv4", SPEAKER_V4, 3, SESSION).unwrap();
                engine.shutdown(ShutdownMode::Cease(None)).await;
            });
        },
    );
}

#[test]
fn bgp_frr_restart_session_and_routes_come_back() {
    lab_test(
        "fr",
        "bgp_frr_restart_session_and_routes_come_back",
        Duration::from_secs(60),
        |tag| {
            let mut frr = start_frr(
                tag,
                &frr_conf(
                    65001,
                    &format!(
                        " neighbor {SPEAKER_V4} remote-as 65030\n address-family ipv6 unicast\n  neighbor {SPEAKER_V4} activate\n exit-address-family"
                    ),
                ),
            );
            runtime().block_on(async {
                let (engine, mut events) = engine().await;
                let mut peer = PeerConfig::new(ip(ROUTER_V4), 65030, 65001);
                peer.connect_retry = Duration::from_secs(1);
                engine.add_peer(peer).unwrap();
                // No IPv6 next hop configured on an IPv4 session: the /128 goes out with the
                // IPv4-mapped address, which FRR resolves over IPv4.
                let mut routes = host_v4(5);
                routes.push((net("2001:db8:100::30/128"), RouteAttributes::default()));
                engine.set_routes(ip(ROUTER_V4), routes).unwrap();
                wait_up(&mut events).await;
                frr.wait_received("ipv4", SPEAKER_V4, 5, SESSION).unwrap();
                frr.wait_received("ipv6", SPEAKER_V4, 1, SESSION).unwrap();
                let p = frr.path("ipv6", "2001:db8:100::30/128").unwrap();
                assert_eq!(p["nexthops"][0]["ip"], "::ffff:c000:201", "{p}");
                assert_eq!(p["nexthops"][0]["accessible"], true, "{p}");
                frr.restart().unwrap();
                // Down (connection lost) then up again; routes resent.
                wait_up(&mut events).await;
                frr.wait_received("ipv4", SPEAKER_V4, 5, SESSION).unwrap();
                frr.wait_received("ipv6", SPEAKER_V4, 1, SESSION).unwrap();
                assert!(
                    engine
                        .counters(ip(ROUTER_V4))
                        .unwrap()
                        .established_transitions
                        >= 2
                );
                engine.shutdown(ShutdownMode::Cease(None)).await;
            });
        },
    );
}

#[test]
fn bgp_graceful_restart_frr_keeps_our_routes() {
    lab_test(
        "gr",
        "bgp_graceful_restart_frr_keeps_our_routes",
        Duration::from_secs(60),
        |tag| {
            let frr = start_frr(
                tag,
                &frr_conf(
                    65001,
                    &format!(" bgp graceful-restart\n neighbor {SPEAKER_V4} remote-as 65040"),
                ),
            );
            let rt = runtime();
            let gr_peer = |restarting: bool, restart_time: u16| {
                let mut p = PeerConfig::new(ip(ROUTER_V4), 65040, 65001);
                p.graceful_restart = Some(GracefulRestartConfig {
                    restart_time,
                    restarting,
                });
                p.families = vec![ferrolb_bgp::Family::IPV4_UNICAST];
                p
            };
            rt.block_on(async {
                let (engine, mut events) = engine().await;
                engine.add_peer(gr_peer(false, 60)).unwrap();
                engine.set_routes(ip(ROUTER_V4), host_v4(4)).unwrap();
                let info = wait_up(&mut events).await;
                assert!(info.graceful_restart);
                frr.wait_received("ipv4", SPEAKER_V4, 4, SESSION).unwrap();
                // Our restart: the sessions close without a NOTIFICATION.
                engine.shutdown(ShutdownMode::GracefulRestart).await;
            });
            // FRR keeps the routes, marked stale, while we are away.
            lab::wait_for(SESSION, Duration::from_millis(50), || {
                (frr.neighbor_state(SPEAKER_V4).as_deref() != Some("Established")).then_some(())
            })
            .expect("FRR noticed the restart");
            let p = frr
                .path("ipv4", "198.51.100.0/32")
                .expect("route kept during restart");
            assert_eq!(p["stale"], true, "{p}");
            // Nothing is blackholed: the route stays installed in FRR's FIB meanwhile.
            let fib = frr.json("show ip route 198.51.100.0/32 json").unwrap();
            assert_eq!(fib["198.51.100.0/32"][0]["installed"], true, "{fib}");
            let table = frr.json("show bgp ipv4 unicast json").unwrap();
            assert_eq!(
                table["routes"].as_object().map(|r| r.len()),
                Some(4),
                "{table}"
            );
            rt.block_on(async {
                let (engine, mut events) = engine().await;
                // This time with a 2 s restart time, to see FRR give up on us below.
                engine.add_peer(gr_peer(true, 2)).unwrap();
                engine.set_routes(ip(ROUTER_V4), host_v4(4)).unwrap();
                wait_up(&mut events).await;
                frr.wait_received("ipv4", SPEAKER_V4, 4, SESSION).unwrap();
                // End-of-RIB ends the stale period: the route is fresh again.
                lab::wait_for(SESSION, Duration::from_millis(50), || {
                    let p = frr.path("ipv4", "198.51.100.0/32")?;
                    (p.get("stale").is_none()).then_some(())
                })
                .expect("route no longer stale after End-of-RIB");
                // Gone for longer than the restart time: FRR drops the stale routes.
                engine.shutdown(ShutdownMode::GracefulRestart).await;
                lab::wait_for(Duration::from_secs(10), Duration::from_millis(100), || {
                    let t = frr.json("show bgp ipv4 unicast json").ok()?;
                    t["routes"]
                        .as_object()
                        .is_none_or(|r| r.is_empty())
                        .then_some(())
                })
                .expect("stale routes removed after the restart time");
            });
        },
    );
}

#[test]
fn bgp_ten_thousand_prefixes() {
    lab_test(
        "tk",
        "bgp_ten_thousand_prefixes",
        Duration::from_secs(90),
        |tag| {
            let frr = start_frr(
                tag,
                &frr_conf(65001, &format!(" neighbor {SPEAKER_V4} remote-as 65050")),
            );
            runtime().block_on(async {
                let (engine, mut events) = engine().await;
                let mut peer = PeerConfig::new(ip(ROUTER_V4), 65050, 65001);
                peer.families = vec![ferrolb_bgp::Family::IPV4_UNICAST];
                engine.add_peer(peer).unwrap();
                engine.set_routes(ip(ROUTER_V4), host_v4(10_000)).unwrap();
                wait_up(&mut events).await;
                frr.wait_received("ipv4", SPEAKER_V4, 10_000, Duration::from_secs(30))
                    .unwrap();
                let c = engine.counters(ip(ROUTER_V4)).unwrap();
                // Packed: 10,000 /32s in one extended message (or 13 of 4096 bytes).
                assert!(c.updates_sent <= 14, "{c:?}");
                engine.set_routes(ip(ROUTER_V4), Vec::new()).unwrap();
                frr.wait_received("ipv4", SPEAKER_V4, 0, Duration::from_secs(30))
                    .unwrap();
                engine.shutdown(ShutdownMode::Cease(None)).await;
            });
        },
    );
}

#[test]
fn bgp_two_octet_frr_gets_as4_path() {
    lab_test(
        "as2",
        "bgp_two_octet_frr_gets_as4_path",
        Duration::from_secs(60),
        |tag| {
            // FRR sends no capabilities: a 2-octet, IPv4-only speaker.
            let frr = start_frr(
            tag,
            &frr_conf(
                65001,
                &format!(
                    " neighbor {SPEAKER_V4} remote-as 4200000002\n neighbor {SPEAKER_V4} dont-capability-negotiate"
                ),
            ),
        );
            runtime().block_on(async {
                let (engine, mut events) = engine().await;
                engine
                    .add_peer(PeerConfig::new(ip(ROUTER_V4), 4_200_000_002, 65001))
                    .unwrap();
                engine.set_routes(ip(ROUTER_V4), host_v4(2)).unwrap();
                let info = wait_up(&mut events).await;
                assert!(!info.four_octet_asn, "{info:?}");
                frr.wait_received("ipv4", SPEAKER_V4, 2, SESSION).unwrap();
                let p = frr.path("ipv4", "198.51.100.1/32").unwrap();
                // A 2-octet session: AS_PATH carries AS_TRANS. (We also send AS4_PATH with
                // the real ASN, see the codec tests, but FRR ignores AS4_PATH from a peer that
                // advertised the 4-octet capability, which we did.)
                assert_eq!(p["aspath"]["string"], "23456", "{p}");
                engine.shutdown(ShutdownMode::Cease(None)).await;
            });
        },
    );
}

#[test]
fn bgp_gtsm() {
    lab_test("gt", "bgp_gtsm", Duration::from_secs(60), |tag| {
        // FRR only accepts TTL 255 from us (RFC 5082, one hop), and sends with TTL 255.
        // FRR stays passive so the only connection is ours.
        let frr = start_frr(
            tag,
            &frr_conf(
                65001,
                &format!(
                    " neighbor {SPEAKER_V4} remote-as 65070\n neighbor {SPEAKER_V4} ttl-security hops 1\n neighbor {SPEAKER_V4} passive"
                ),
            ),
        );
        runtime().block_on(async {
            let (engine, mut events) = engine().await;
            // With GTSM we send with TTL 255 and FRR, which requires it, accepts the session.
            // (Without GTSM FRR does not reliably refuse us: it sets its minimum TTL on the
            // accepted socket after the accept, so an OPEN can slip through first; that race
            // is FRR's and is not asserted here.)
            let mut peer = PeerConfig::new(ip(ROUTER_V4), 65070, 65001);
            peer.families = vec![ferrolb_bgp::Family::IPV4_UNICAST];
            peer.connect_retry = Duration::from_secs(1);
            peer.gtsm_hops = Some(1);
            engine.add_peer(peer).unwrap();
            wait_up(&mut events).await;
            engine.set_routes(ip(ROUTER_V4), host_v4(2)).unwrap();
            frr.wait_received("ipv4", SPEAKER_V4, 2, SESSION).unwrap();
            engine.remove_peer(ip(ROUTER_V4)).await.unwrap();
            engine.shutdown(ShutdownMode::Cease(None)).await;
        });
    });
}

/// eBGP multihop: FRR two hops away behind a forwarding namespace. With the eBGP default TTL
/// of 1 our packets die at the middle hop; with `ebgp_multihop = 2` the session comes up.
#[test]
fn bgp_ebgp_multihop_through_a_router() {
    const TEST: &str = "bgp_ebgp_multihop_through_a_router";
    const SPEAKER: &str = "192.0.2.1";
    const ROUTER: &str = "203.0.113.2";
    if lab::is_child(TEST) {
        let frr = Frr::start(
            "flb-mh-r",
            &frr_name("mh"),
            &format!(
                "frr defaults datacenter\nhostname router\n!\nrouter bgp 65001\n bgp router-id {ROUTER}\n no bgp ebgp-requires-policy\n neighbor {SPEAKER} remote-as 65080\n neighbor {SPEAKER} ebgp-multihop 2\n neighbor {SPEAKER} passive\n!\n"
            ),
        )
        .unwrap_or_else(|e| panic!("FRR: {e}"));
        runtime().block_on(async {
            let (engine, mut events) = engine().await;
            let mut peer = PeerConfig::new(ip(ROUTER), 65080, 65001);
            peer.families = vec![ferrolb_bgp::Family::IPV4_UNICAST];
            peer.connect_retry = Duration::from_secs(1);
            engine.add_peer(peer.clone()).unwrap();
            engine.set_routes(ip(ROUTER), host_v4(3)).unwrap();
            let early = tokio::time::timeout(Duration::from_secs(2), events.recv()).await;
            assert!(
                early.is_err(),
                "session with TTL 1 across a router: {early:?}"
            );
            peer.ebgp_multihop = Some(2);
            engine.update_peer(peer).await.unwrap();
            wait_up(&mut events).await;
            frr.wait_received("ipv4", SPEAKER, 3, SESSION).unwrap();
            engine.shutdown(ShutdownMode::Cease(None)).await;
        });
        return;
    }
    if let Some(why) = lab::skip_reason() {
        eprintln!("SKIP: {TEST}: {why}");
        return;
    }
    let speaker = lab::NetNs::new("flb-mh-s").unwrap();
    let middle = lab::NetNs::new("flb-mh-m").unwrap();
    let router = lab::NetNs::new("flb-mh-r").unwrap();
    lab::VethPair::new(&speaker, "eth-s", &middle, "eth-ms").unwrap();
    lab::VethPair::new(&middle, "eth-mr", &router, "eth-r").unwrap();
    speaker.add_addr("eth-s", "192.0.2.1/24").unwrap();
    middle.add_addr("eth-ms", "192.0.2.254/24").unwrap();
    middle.add_addr("eth-mr", "203.0.113.254/24").unwrap();
    router.add_addr("eth-r", "203.0.113.2/24").unwrap();
    speaker
        .ip(&["route", "add", "203.0.113.0/24", "via", "192.0.2.254"])
        .unwrap();
    router
        .ip(&["route", "add", "192.0.2.0/24", "via", "203.0.113.254"])
        .unwrap();
    middle
        .exec("sysctl", &["-qw", "net.ipv4.ip_forward=1"])
        .unwrap();
    let result = lab::run_in_netns(&speaker, TEST, Duration::from_secs(60));
    frr::kill_leftovers(&frr_name("mh"));
    match result {
        Ok(out) => println!("{out}"),
        Err(e) => panic!("{e}"),
    }
}
