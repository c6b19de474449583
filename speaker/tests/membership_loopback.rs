//! Several speakers' membership in one process, over real UDP on loopback (127.0.N.x), with
//! the default (fast) timers. Each test uses its own 127.0.N.0/24 so tests run in parallel.

use ferrolb_speaker::membership::{
    Membership, MembershipConfig, MembershipKey, Peer, Security, Stats,
};
use std::collections::BTreeSet;
use std::net::{IpAddr, UdpSocket};
use std::time::{Duration, Instant};

const PORT: u16 = 17946;

fn key() -> Security {
    Security::Key(MembershipKey::new(b"test-membership-key-0123456789".to_vec()).unwrap())
}

fn ip(net: u8, host: u8) -> IpAddr {
    IpAddr::from([127, 0, net, host])
}

fn peers(net: u8, n: u8) -> Vec<Peer> {
    (1..=n)
        .map(|h| Peer {
            name: format!("node-{h}"),
            ip: ip(net, h),
        })
        .collect()
}

fn config(net: u8, host: u8, n: u8, security: Security) -> MembershipConfig {
    let mut c = MembershipConfig::new(&format!("node-{host}"), ip(net, host), security);
    c.port = PORT;
    c.peers = peers(net, n);
    c
}

fn names(n: &[u8]) -> BTreeSet<String> {
    n.iter().map(|h| format!("node-{h}")).collect()
}

/// Waits (bounded) until `m`'s live set equals `want`; returns how long that took.
async fn wait_live(m: &Membership, want: &BTreeSet<String>, limit: Duration) -> Duration {
    let start = Instant::now();
    let mut rx = m.live();
    let r = tokio::time::timeout(limit, rx.wait_for(|s| s == want)).await;
    assert!(
        r.is_ok(),
        "live set {:?}, wanted {want:?} within {limit:?}",
        *m.live().borrow()
    );
    start.elapsed()
}

async fn start_cluster(net: u8, n: u8) -> Vec<Membership> {
    let mut ms = Vec::new();
    for h in 1..=n {
        ms.push(Membership::start(config(net, h, n, key())).await.unwrap());
    }
    let all = names(&(1..=n).collect::<Vec<_>>());
    for m in &ms {
        wait_live(m, &all, Duration::from_secs(3)).await;
    }
    ms
}

#[tokio::test]
async fn three_speakers_converge_and_a_hard_stop_is_detected_fast() {
    let mut ms = start_cluster(1, 3).await;
    // Let a few probe rounds pass: no one may be lost in a healthy cluster.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for m in &ms {
        assert_eq!(Stats::get(&m.stats().member_down), 0);
        // Not even the first datagrams of a fresh socket may be lost on our side.
        assert_eq!(Stats::get(&m.stats().send_errors), 0);
    }
    // Dropping the handle stops node-3 without a goodbye, like a crash.
    drop(ms.pop());
    for m in &ms {
        let took = wait_live(m, &names(&[1, 2]), Duration::from_secs(2)).await;
        eprintln!("hard stop detected in {took:?}");
        assert!(took < Duration::from_millis(600), "{took:?}");
    }
}

#[tokio::test]
async fn graceful_leave_is_seen_at_once() {
    let mut ms = start_cluster(2, 3).await;
    let leaving = ms.pop().unwrap();
    let start = Instant::now();
    leaving.leave().await;
    for m in &ms {
        wait_live(m, &names(&[1, 2]), Duration::from_secs(1)).await;
    }
    // Faster than failure detection could be (probe period + suspicion = 105 ms).
    let took = start.elapsed();
    eprintln!("leave seen by all in {took:?}");
    assert!(took < Duration::from_millis(60), "{took:?}");
}

#[tokio::test]
async fn a_restarted_speaker_rejoins_as_a_new_generation() {
    let mut ms = start_cluster(3, 3).await;
    let old_gen = ms[0].members().borrow()["node-3"].generation;
    let old_since = ms[0].members().borrow()["node-3"].live_since;
    drop(ms.pop());
    wait_live(&ms[0], &names(&[1, 2]), Duration::from_secs(2)).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    ms.push(Membership::start(config(3, 3, 3, key())).await.unwrap());
    for m in &ms {
        wait_live(m, &names(&[1, 2, 3]), Duration::from_secs(3)).await;
    }
    let info = ms[0].members().borrow()["node-3"].clone();
    assert!(info.generation > old_gen);
    assert!(info.live_since > old_since, "stability signal restarts");
}

#[tokio::test]
async fn a_restart_before_detection_replaces_the_old_generation() {
    let mut ms = start_cluster(4, 3).await;
    let old_gen = ms[0].members().borrow()["node-3"].generation;
    drop(ms.pop());
    // Back within one probe period: the new generation wins the name at once.
    tokio::time::sleep(Duration::from_millis(5)).await;
    ms.push(Membership::start(config(4, 3, 3, key())).await.unwrap());
    let mut rx = ms[0].members();
    tokio::time::timeout(
        Duration::from_secs(2),
        rx.wait_for(|m| m.get("node-3").is_some_and(|i| i.generation > old_gen)),
    )
    .await
    .expect("new generation seen")
    .expect("membership running");
    // And it stays live.
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(*ms[0].live().borrow(), names(&[1, 2, 3]));
}

#[tokio::test]
async fn a_speaker_with_the_wrong_key_is_never_a_member() {
    let ms = start_cluster(5, 2).await;
    let wrong = Security::Key(MembershipKey::new(b"another-key-entirely-000000".to_vec()).unwrap());
    let intruder = Membership::start(config(5, 3, 3, wrong)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for m in &ms {
        assert_eq!(*m.live().borrow(), names(&[1, 2]));
    }
    assert_eq!(*intruder.live().borrow(), names(&[3]));
    let refused: u64 = ms
        .iter()
        .map(|m| Stats::get(&m.stats().dropped_unauthenticated))
        .sum();
    assert!(refused > 0, "the intruder's joins were counted");
    // An insecure speaker cannot join keyed ones either.
    let insecure = Membership::start(config(5, 4, 4, Security::Insecure))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(*ms[0].live().borrow(), names(&[1, 2]));
    assert_eq!(*insecure.live().borrow(), names(&[4]));
}

#[tokio::test]
async fn garbage_and_replays_are_dropped_and_counted() {
    let ms = start_cluster(6, 2).await;
    let target = ms[0].local_addr();
    let sock = UdpSocket::bind("127.0.6.9:0").unwrap();
    let mut sizes = vec![0usize, 1, 3, 21, 22, 53, 54, 100, 1500, 9000];
    sizes.extend(0..40);
    for (i, n) in sizes.into_iter().enumerate() {
        let mut d: Vec<u8> = (0..n).map(|j| (i * 31 + j * 7) as u8).collect();
        if i % 2 == 0 && d.len() >= 6 {
            // Right magic and version, so the tag check is reached.
            d[..6].copy_from_slice(b"FLBM\x02\x01");
        }
        let _ = sock.send_to(&d, target);
    }
    // A valid datagram sealed with the right key but replayed: we seal our own (not a real
    // foca payload), send it twice; the first is refused by the protocol, the second as replay.
    let sealer = ferrolb_speaker::membership::Sealer::new(
        Some(MembershipKey::new(b"test-membership-key-0123456789".to_vec()).unwrap()),
        30_000,
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let d = sealer.seal(b"not foca", now, 0xdead_beef);
    sock.send_to(&d, target).unwrap();
    sock.send_to(&d, target).unwrap();
    let stale = sealer.seal(b"old", now - 120_000, 1);
    sock.send_to(&stale, target).unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let s = ms[0].stats();
    assert!(Stats::get(&s.dropped_malformed) > 0);
    assert!(Stats::get(&s.dropped_unauthenticated) > 0);
    assert_eq!(Stats::get(&s.dropped_replay), 1);
    assert_eq!(Stats::get(&s.dropped_stale), 1);
    assert!(Stats::get(&s.dropped_protocol) >= 1);
    // Membership went on undisturbed.
    assert_eq!(*ms[0].live().borrow(), names(&[1, 2]));
    assert_eq!(Stats::get(&s.member_down), 0);
}

#[tokio::test]
async fn peers_added_later_are_joined_and_removed_peers_do_not_matter() {
    let mut a = config(7, 1, 1, key());
    a.peers.clear();
    let mut b = config(7, 2, 2, key());
    b.peers.clear();
    let a = Membership::start(a).await.unwrap();
    let b = Membership::start(b).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(*a.live().borrow(), names(&[1]));
    // Node-2's Node object appears in node-1's view.
    a.set_peers(peers(7, 2));
    wait_live(&a, &names(&[1, 2]), Duration::from_secs(1)).await;
    wait_live(&b, &names(&[1, 2]), Duration::from_secs(1)).await;
    // Removing the Node from the list does not kill a live speaker.
    a.set_peers(peers(7, 1));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(*a.live().borrow(), names(&[1, 2]));
}

#[test]
fn dedicated_thread_works_from_sync_code() {
    let a = Membership::start_dedicated(config(8, 1, 2, key())).unwrap();
    let b = Membership::start_dedicated(config(8, 2, 2, key())).unwrap();
    let deadline = Instant::now() + Duration::from_secs(3);
    while *a.live().borrow() != names(&[1, 2]) || *b.live().borrow() != names(&[1, 2]) {
        assert!(Instant::now() < deadline, "no convergence");
        std::thread::sleep(Duration::from_millis(10));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(b.leave());
    let deadline = Instant::now() + Duration::from_secs(1);
    while *a.live().borrow() != names(&[1]) {
        assert!(Instant::now() < deadline, "leave not seen");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `members()` stays empty until the speaker has joined: every configured peer seen live, or
/// one announce interval (1 s) without them. A restarted speaker so never plans from its
/// lonely first view.
#[tokio::test]
async fn members_are_published_only_once_joined() {
    // A peer that never answers: the join wait ends after the announce interval.
    let alone = Membership::start(config(11, 1, 2, key())).await.unwrap();
    let started = Instant::now();
    let mut rx = alone.members();
    assert!(rx.borrow().is_empty(), "published before joining");
    assert_eq!(
        *alone.live().borrow(),
        names(&[1]),
        "live() is not held back"
    );
    tokio::time::timeout(Duration::from_secs(3), rx.wait_for(|m| !m.is_empty()))
        .await
        .expect("published after the join wait")
        .unwrap();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(900),
        "published after {waited:?}, before the join wait ended"
    );
    assert_eq!(
        rx.borrow().keys().cloned().collect::<BTreeSet<_>>(),
        names(&[1])
    );

    // Peers that answer: published as soon as both see each other, with both in it.
    let a = Membership::start(config(12, 1, 2, key())).await.unwrap();
    let b = Membership::start(config(12, 2, 2, key())).await.unwrap();
    for m in [&a, &b] {
        let started = Instant::now();
        let mut rx = m.members();
        let first = tokio::time::timeout(Duration::from_secs(3), rx.wait_for(|m| !m.is_empty()))
            .await
            .expect("published")
            .unwrap()
            .clone();
        assert_eq!(
            first.keys().cloned().collect::<BTreeSet<_>>(),
            names(&[1, 2])
        );
        assert!(started.elapsed() < Duration::from_millis(900));
    }
}

#[tokio::test]
async fn a_stalled_speaker_comes_back_with_a_record_of_its_return() {
    // node-3 runs on a runtime of its own, which the test stalls for 500 ms: it hears nobody,
    // the other two declare it down, and when it runs again it renews its identity with the
    // return on record (flap damping, see `rejoin`). The other two never were cut off.
    let net = 20;
    let ms = vec![
        Membership::start(config(net, 1, 3, key())).await.unwrap(),
        Membership::start(config(net, 2, 3, key())).await.unwrap(),
    ];
    let (stall_tx, stall_rx) = std::sync::mpsc::channel::<Duration>();
    let third = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let _c = Membership::start(config(net, 3, 3, key())).await.unwrap();
            for _ in 0..1000 {
                if let Ok(d) = stall_rx.try_recv() {
                    // Blocks the runtime, and with it node-3's membership.
                    std::thread::sleep(d);
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            tokio::time::sleep(Duration::from_secs(3)).await;
        });
    });
    for m in &ms {
        wait_live(m, &names(&[1, 2, 3]), Duration::from_secs(3)).await;
    }
    let before = ms[0].members().borrow()["node-3"].clone();
    assert_eq!(before.flaps, Default::default());
    stall_tx.send(Duration::from_millis(500)).unwrap();
    wait_live(&ms[0], &names(&[1, 2]), Duration::from_secs(2)).await;
    let mut rx = ms[0].members();
    let back = tokio::time::timeout(
        Duration::from_secs(2),
        rx.wait_for(|m| {
            m.get("node-3")
                .is_some_and(|i| i.generation > before.generation)
        }),
    )
    .await
    .expect("node-3 back")
    .expect("membership running")["node-3"]
        .clone();
    assert_eq!(back.flaps.penalty, ferrolb_speaker::rejoin::FLAP_PENALTY);
    assert!(back.flaps.last_ms >= before.generation, "{back:?}");
    // The two that were never cut off have no return on record, whatever node-3 said of them.
    for m in &ms {
        let members = m.members().borrow().clone();
        for name in ["node-1", "node-2"] {
            assert_eq!(
                members[name].flaps,
                Default::default(),
                "{name}: {members:?}"
            );
        }
    }
    third.join().unwrap();
}
