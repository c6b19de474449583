//! Interop of ferrolb-bgp with BIRD 2 as the receiving router, in network namespaces: a second
//! independent implementation besides FRR. BIRD does not enable extended messages by default,
//! so this also exercises packing into 4096-byte UPDATEs.

use std::net::IpAddr;
use std::time::Duration;

use ferrolb_bgp::{
    BgpEngine, EngineConfig, LargeCommunity, PeerConfig, RouteAttributes, SessionEventKind,
    ShutdownMode,
};
use ferrolb_e2e::lab::{self, Bird, TwoNodeLab, ROUTER_V4, SPEAKER_V4, SPEAKER_V6};
use ipnet::IpNet;

const TEST: &str = "bgp_bird_receives_packed_routes_with_communities";
const TAG: &str = "bd";

fn bird_conf() -> String {
    format!(
        "router id {ROUTER_V4};\nprotocol device {{}}\nprotocol bgp ferro {{\n local {ROUTER_V4} as 65001;\n neighbor {SPEAKER_V4} as 65090;\n ipv4 {{ import all; export none; }};\n ipv6 {{ import all; export none; }};\n}}\n"
    )
}

/// `show route count` says "<n> of <m> routes ... in table masterX" per table; summed.
fn route_count(bird: &Bird) -> Option<u64> {
    let out = bird.birdc("show route count").ok()?;
    let counts: Vec<u64> = out
        .lines()
        .filter(|l| l.contains(" of "))
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    (!counts.is_empty()).then(|| counts.iter().sum())
}

fn wait_count(bird: &Bird, n: u64) {
    lab::wait_for(Duration::from_secs(15), Duration::from_millis(50), || {
        (route_count(bird) == Some(n)).then_some(())
    })
    .unwrap_or_else(|| panic!("BIRD: {n} routes not reached (now {:?})", route_count(bird)));
}

#[test]
fn bgp_bird_receives_packed_routes_with_communities() {
    if lab::is_child(TEST) {
        let bird = Bird::start(&TwoNodeLab::router_ns(TAG), "flb-bd-bird", &bird_conf())
            .unwrap_or_else(|e| panic!("BIRD: {e}"));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (engine, mut events) = BgpEngine::start(EngineConfig {
                router_id: SPEAKER_V4.parse().unwrap(),
                listen: vec![],
            })
            .await
            .unwrap();
            let router: IpAddr = ROUTER_V4.parse().unwrap();
            let mut peer = PeerConfig::new(router, 65090, 65001);
            peer.next_hop_v6 = Some(SPEAKER_V6.parse().unwrap());
            engine.add_peer(peer).unwrap();
            let tagged = RouteAttributes {
                communities: vec![(65090 << 16) | 7],
                large_communities: vec![LargeCommunity {
                    global: 65090,
                    local1: 1,
                    local2: 2,
                }],
                med: Some(20),
                ..Default::default()
            };
            let mut routes: Vec<(IpNet, RouteAttributes)> = (0..2000u32)
                .map(|i| {
                    let a = std::net::Ipv4Addr::from(0x6440_0000u32 + i);
                    (
                        IpNet::new(IpAddr::V4(a), 32).unwrap(),
                        RouteAttributes::default(),
                    )
                })
                .collect();
            routes.push(("198.51.100.10/32".parse().unwrap(), tagged.clone()));
            routes.push(("2001:db8:100::10/128".parse().unwrap(), tagged));
            engine.set_routes(router, routes.clone()).unwrap();
            let ev = tokio::time::timeout(Duration::from_secs(15), events.recv())
                .await
                .expect("session up in time")
                .unwrap();
            let SessionEventKind::Up(info) = ev.kind else {
                panic!("{ev:?}")
            };
            assert!(
                !info.extended_messages,
                "BIRD does not enable them by default"
            );
            tokio::task::block_in_place(|| wait_count(&bird, 2002));
            let c = engine.counters(router).unwrap();
            // 2000 plain /32s need 3 UPDATEs of 4096 bytes; one each for the tagged pair;
            // two End-of-RIB markers.
            assert_eq!(c.updates_sent, 3 + 2 + 2, "{c:?}");
            let v4 = bird.birdc("show route all 198.51.100.10/32").unwrap();
            assert!(v4.contains("(65090,7)"), "{v4}");
            assert!(v4.contains("(65090, 1, 2)"), "{v4}");
            assert!(v4.contains("BGP.med: 20"), "{v4}");
            assert!(v4.contains("BGP.as_path: 65090"), "{v4}");
            let v6 = bird.birdc("show route all 2001:db8:100::10/128").unwrap();
            assert!(v6.contains(&format!("BGP.next_hop: {SPEAKER_V6}")), "{v6}");
            // Withdraw all but one, in packed withdrawals.
            engine.set_routes(router, routes[..1].to_vec()).unwrap();
            tokio::task::block_in_place(|| wait_count(&bird, 1));
            engine.shutdown(ShutdownMode::Cease(None)).await;
        });
        return;
    }
    if let Some(why) = lab::skip_reason() {
        eprintln!("SKIP: {TEST}: {why}");
        return;
    }
    if !std::path::Path::new(lab::bird::BIRD).exists() {
        eprintln!("SKIP: {TEST}: needs bird2");
        return;
    }
    let lab = TwoNodeLab::new(TAG).unwrap();
    let out = lab::run_in_netns(&lab.speaker, TEST, Duration::from_secs(60));
    lab::bird::kill_leftovers("flb-bd-bird");
    match out {
        Ok(o) => println!("{o}"),
        Err(e) => panic!("{e}"),
    }
}
