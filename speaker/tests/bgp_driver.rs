//! The speaker's BGP driver against a second engine on loopback (standing in for a router; no
//! root needed): lazy start, sessions and routes from the configuration, changes that touch
//! only what changed, the status read API, and shutdown. Real FRR in namespaces is in
//! e2e/tests/speaker_bgp.rs.

use ferrolb_bgp::{BgpEngine, EngineConfig, PeerConfig, SessionEvent, State};
use ferrolb_speaker::bgp_mode::driver::{BgpDriver, BgpStatus, PeerStatus};
use ferrolb_speaker::planner::{plan, Inputs};
use ferrolb_speaker::source::{load_dir, Snapshot};
use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;
use tokio::sync::mpsc::UnboundedReceiver;

const BASE: &str = "apiVersion: v1\nkind: Node\nmetadata: {name: node-1}\nstatus: {addresses: [{type: InternalIP, address: 192.0.2.1}]}\n---\napiVersion: ferrolb.io/v1beta1\nkind: IPAddressPool\nmetadata: {name: public, namespace: ferrolb-system}\nspec: {addresses: [203.0.113.0/24]}\n---\napiVersion: ferrolb.io/v1beta1\nkind: BGPAdvertisement\nmetadata: {name: public, namespace: ferrolb-system}\n---\n";

fn service(name: &str, ip: &str) -> String {
    format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: default\n  annotations: {{ferrolb.io/loadBalancerIPs: \"{ip}\"}}\nspec: {{type: LoadBalancer, ports: [{{port: 80}}]}}\n---\n")
}

fn peer(port: u16, hold: &str) -> String {
    format!("apiVersion: ferrolb.io/v1beta1\nkind: BGPPeer\nmetadata: {{name: router, namespace: ferrolb-system}}\nspec: {{myASN: 64512, dynamicASN: external, peerAddress: 127.0.0.1, peerPort: {port}, sourceAddress: 127.0.0.2, holdTime: {hold}, connectTime: 1s, password: not-in-any-log}}\n---\n")
}

fn snapshot(dir: &tempfile::TempDir, yaml: &str) -> Snapshot {
    std::fs::write(dir.path().join("all.yaml"), yaml).unwrap();
    let assembled =
        load_dir(dir.path(), None, &Default::default()).unwrap_or_else(|e| panic!("{e:?}"));
    assert!(assembled.problems.is_empty(), "{:?}", assembled.problems);
    assembled.snapshot
}

async fn apply(driver: &mut BgpDriver, s: &Snapshot) {
    let live: BTreeSet<String> = ["node-1".to_string()].into();
    let p = plan(Inputs {
        config: &s.config,
        services: &s.services,
        nodes: &s.nodes,
        live_speakers: &live,
        this_node: "node-1",
    });
    driver.apply(s, &p).await;
}

/// Waits until the only peer's status satisfies `f`.
async fn wait_status(status: &BgpStatus, f: impl Fn(&PeerStatus) -> bool) -> PeerStatus {
    for _ in 0..200 {
        if let [p] = status.peers().as_slice() {
            if f(p) {
                return p.clone();
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("status never matched: {:?}", status.peers());
}

async fn router() -> (BgpEngine, UnboundedReceiver<SessionEvent>, u16) {
    let (engine, events) = BgpEngine::start(EngineConfig {
        router_id: "192.0.2.254".parse().unwrap(),
        listen: vec!["127.0.0.1:0".parse().unwrap()],
    })
    .await
    .unwrap();
    let port = engine.listen_addrs()[0].port();
    let mut p = PeerConfig::new("127.0.0.2".parse().unwrap(), 64500, 64512);
    p.passive = true;
    p.md5_password = Some("not-in-any-log".into());
    engine.add_peer(p).unwrap();
    (engine, events, port)
}

#[tokio::test]
async fn driver_follows_the_configuration_and_reports_its_peers() {
    let (router, _events, port) = router().await;
    let us: IpAddr = "127.0.0.2".parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let status = BgpStatus::default();
    let mut driver = BgpDriver::with_listen("node-1", status.clone(), vec![]);

    // No BGPPeer: the engine does not even start.
    apply(
        &mut driver,
        &snapshot(&dir, &format!("{BASE}{}", service("a", "203.0.113.1"))),
    )
    .await;
    assert!(!status.engine_running());
    assert!(status.peers().is_empty());

    // A peer in any external AS (the router is AS 64500), with TCP MD5.
    let one = format!("{BASE}{}{}", peer(port, "9s"), service("a", "203.0.113.1"));
    apply(&mut driver, &snapshot(&dir, &one)).await;
    assert!(status.engine_running());
    let p = wait_status(&status, |p| p.state == Some(State::Established)).await;
    assert_eq!((p.name.as_str(), p.routes), ("router", 1));
    assert_eq!(p.session.as_ref().map(|s| s.peer_asn), Some(64500));
    wait_status(&status, |p| p.counters.prefixes_announced == 1).await;

    // Another Service: a route more, the session untouched.
    let two = format!("{one}{}", service("b", "203.0.113.2"));
    apply(&mut driver, &snapshot(&dir, &two)).await;
    let p = wait_status(&status, |p| p.counters.prefixes_announced == 2).await;
    assert_eq!(p.routes, 2);
    assert_eq!(p.counters.established_transitions, 1, "no flap");
    let router_side = router.counters(us).unwrap();
    assert_eq!(router_side.established_transitions, 1);
    assert!(router_side.updates_received >= 2, "{router_side:?}");

    // A new hold time: that session restarts, once.
    let changed = two.replace("holdTime: 9s", "holdTime: 30s");
    apply(&mut driver, &snapshot(&dir, &changed)).await;
    for _ in 0..200 {
        if router.counters(us).unwrap().established_transitions == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(router.counters(us).unwrap().established_transitions, 2);
    let p = wait_status(&status, |p| {
        p.session.as_ref().is_some_and(|s| s.hold_time == 30)
    })
    .await;
    assert_eq!(p.routes, 2, "routes kept across the restart");
    // Applying the same configuration again changes nothing.
    apply(&mut driver, &snapshot(&dir, &changed)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(router.counters(us).unwrap().established_transitions, 2);

    // The peer goes: removed from the engine and from the status.
    apply(
        &mut driver,
        &snapshot(&dir, &format!("{BASE}{}", service("a", "203.0.113.1"))),
    )
    .await;
    assert!(status.peers().is_empty());
    for _ in 0..200 {
        if router.counters(us).unwrap().state != Some(State::Established) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_ne!(router.counters(us).unwrap().state, Some(State::Established));

    driver.shutdown().await;
    assert!(!status.engine_running());
    router
        .shutdown(ferrolb_bgp::ShutdownMode::Cease(None))
        .await;
}

/// The driver in its own task: `apply` never waits, a burst of plans ends in the newest one,
/// and shutdown stops the engine.
#[tokio::test]
async fn driver_task_applies_the_newest_plan_without_making_the_caller_wait() {
    let (router, _events, port) = router().await;
    let us: IpAddr = "127.0.0.2".parse().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let status = BgpStatus::default();
    let task = BgpDriver::with_listen("node-1", status.clone(), vec![]).spawn();
    let live: BTreeSet<String> = ["node-1".to_string()].into();
    let mut yaml = format!("{BASE}{}", peer(port, "9s"));
    // A burst of 20 plans, each with one Service more; only the last must count in the end.
    for i in 1..=20 {
        yaml.push_str(&service(&format!("s{i}"), &format!("203.0.113.{i}")));
        let s = std::sync::Arc::new(snapshot(&dir, &yaml));
        let p = plan(Inputs {
            config: &s.config,
            services: &s.services,
            nodes: &s.nodes,
            live_speakers: &live,
            this_node: "node-1",
        });
        let started = std::time::Instant::now();
        task.apply(s.clone(), std::sync::Arc::new(p));
        assert!(
            started.elapsed() < Duration::from_millis(50),
            "apply waited"
        );
    }
    let p = wait_status(&status, |p| p.counters.prefixes_announced == 20).await;
    assert_eq!(p.routes, 20);
    assert_eq!(router.counters(us).unwrap().established_transitions, 1);

    task.shutdown().await;
    assert!(!status.engine_running());
    router
        .shutdown(ferrolb_bgp::ShutdownMode::Cease(None))
        .await;
}
