//! Benchmark harness: the same N static /32s announced to the same FRR by BIRD 2 and by
//! ferrolb-bgp, measured on the wire (tcpdump on FRR's link) and at FRR.
//!
//! Ignored by default; run with
//! `cargo test --release -p ferrolb-e2e --test bgp_bench -- --ignored --nocapture`
//! (`FERROLB_BENCH_N=10000,100000` by default). Results go to docs/benchmarks.md by hand.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ferrolb_bgp::packet::{frame_len, DecodeContext, Message};
use ferrolb_bgp::{BgpEngine, EngineConfig, Family, PeerConfig, RouteAttributes, ShutdownMode};
use ferrolb_e2e::lab::{self, frr, Bird, Capture, Frr, TwoNodeLab, ROUTER_V4, SPEAKER_V4};
use ipnet::IpNet;

const TEST: &str = "bgp_bench_ferrolb_vs_bird";
const TAG: &str = "bn";
const LIMIT: Duration = Duration::from_secs(120);

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64()
}

fn host(i: u32) -> Ipv4Addr {
    // 100.64.0.0/10 holds 4M host routes; used only as prefixes inside the lab namespaces.
    Ipv4Addr::from(0x6440_0000u32 + i)
}

fn frr_conf() -> String {
    format!(
        "frr defaults datacenter\nhostname router\n!\nrouter bgp 65001\n bgp router-id {ROUTER_V4}\n no bgp ebgp-requires-policy\n neighbor {SPEAKER_V4} remote-as 65060\n neighbor {SPEAKER_V4} timers connect 1\n!\n"
    )
}

fn bird_conf(n: u32) -> String {
    let mut c =
        format!("router id {SPEAKER_V4};\nprotocol device {{}}\nprotocol static s4 {{\n ipv4;\n");
    for i in 0..n {
        let _ = writeln!(c, " route {}/32 blackhole;", host(i));
    }
    let _ = write!(
        c,
        "}}\nprotocol bgp frr {{\n disabled;\n local {SPEAKER_V4} as 65060;\n neighbor {ROUTER_V4} as 65001;\n ipv4 {{ import none; export all; }};\n}}\n"
    );
    c
}

/// What one run measured.
#[derive(Debug, Default)]
struct Run {
    establish_ms: f64,
    announce_wire_ms: f64,
    /// Until 99% of the prefixes were on the wire.
    announce_wire99_ms: f64,
    announce_frr_ms: f64,
    announce_updates: usize,
    withdraw_wire_ms: f64,
    withdraw_frr_ms: f64,
    withdraw_updates: usize,
    announced: usize,
    withdrawn: usize,
}

/// Reads the capture: session establishment from tshark, and the first and last byte of the
/// announcements and of the withdrawals sent by the speaker, by rebuilding the sender's TCP
/// byte stream and splitting it into BGP messages with our own decoder (tshark's BGP
/// dissector rejects extended messages longer than 4096 bytes).
fn analyse(cap: &Capture, run: &mut Run) {
    let synack = cap
        .fields(
            "tcp.flags.syn == 1 && tcp.flags.ack == 1",
            &["frame.time_epoch"],
        )
        .unwrap();
    let keepalives = cap.fields("bgp.type == 4", &["frame.time_epoch"]).unwrap();
    if let (Some(t0), Some(t1)) = (synack.last(), keepalives.get(1)) {
        let t0: f64 = t0[0].parse().unwrap_or(0.0);
        let t1: f64 = t1[0].parse().unwrap_or(0.0);
        run.establish_ms = (t1 - t0) * 1000.0;
    }
    let rows = cap
        .fields_raw(
            &format!("ip.src == {SPEAKER_V4} && tcp.len > 0"),
            &["tcp.stream", "frame.time_epoch", "tcp.seq", "tcp.payload"],
        )
        .unwrap();
    // The sender's busiest stream, segments by sequence number (retransmissions dropped).
    let mut streams: HashMap<String, BTreeMap<u64, (f64, Vec<u8>)>> = HashMap::new();
    for r in rows {
        let (Some(stream), Some(t), Some(seq), Some(hex)) =
            (r.first(), r.get(1), r.get(2), r.get(3))
        else {
            continue;
        };
        let bytes: Vec<u8> = (0..hex.len() / 2)
            .filter_map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
            .collect();
        let (Ok(t), Ok(seq)) = (t.parse::<f64>(), seq.parse::<u64>()) else {
            continue;
        };
        streams
            .entry(stream.clone())
            .or_default()
            .entry(seq)
            .or_insert((t, bytes));
    }
    let Some(segments) = streams
        .into_values()
        .max_by_key(|s| s.values().map(|v| v.1.len()).sum::<usize>())
    else {
        return;
    };
    let mut data = Vec::new();
    let mut times = Vec::new(); // (offset where a segment starts, its time)
    for (_, (t, bytes)) in segments {
        times.push((data.len(), t));
        data.extend_from_slice(&bytes);
    }
    let time_at = |off: usize| -> f64 {
        match times.binary_search_by(|(o, _)| o.cmp(&off)) {
            Ok(i) => times[i].1,
            Err(i) => times[i.saturating_sub(1)].1,
        }
    };
    let ctx = DecodeContext {
        four_octet_asn: true,
        extended_messages: true,
        ibgp: false,
    };
    let mut off = 0;
    let mut ann: Vec<(f64, f64)> = Vec::new();
    // (time the message was complete, prefixes announced so far)
    let mut ann_cum: Vec<(f64, usize)> = Vec::new();
    let mut wd: Vec<(f64, f64)> = Vec::new();
    let (mut n_ann, mut n_wd) = (0usize, 0usize);
    while let Ok(Some(len)) = frame_len(&data[off..], &ctx) {
        if off + len > data.len() {
            break;
        }
        if let Ok(Message::Update(u)) = Message::decode(&data[off..off + len], &ctx) {
            let span = (time_at(off), time_at(off + len - 1));
            let a = u.nlri.len() + u.attributes.mp_reach.as_ref().map_or(0, |m| m.nlri.len());
            let w = u.withdrawn.len()
                + u.attributes
                    .mp_unreach
                    .as_ref()
                    .map_or(0, |m| m.withdrawn.len());
            if a > 0 {
                ann.push(span);
                n_ann += a;
                ann_cum.push((span.1, n_ann));
            }
            if w > 0 {
                wd.push(span);
                n_wd += w;
            }
        }
        off += len;
    }
    let span = |v: &[(f64, f64)]| -> f64 {
        match (v.first(), v.last()) {
            (Some(a), Some(b)) => (b.1 - a.0) * 1000.0,
            _ => f64::NAN,
        }
    };
    run.announce_wire_ms = span(&ann);
    if let (Some(first), Some(at99)) = (
        ann.first(),
        ann_cum.iter().find(|(_, c)| *c * 100 >= n_ann * 99),
    ) {
        run.announce_wire99_ms = (at99.0 - first.0) * 1000.0;
    }
    run.announce_updates = ann.len();
    run.withdraw_wire_ms = span(&wd);
    run.withdraw_updates = wd.len();
    run.announced = n_ann;
    run.withdrawn = n_wd;
    // The FRR-side figures run from the first byte on the wire.
    run.announce_frr_ms -= ann.first().map(|a| a.0 * 1000.0).unwrap_or(0.0);
    run.withdraw_frr_ms -= wd.first().map(|a| a.0 * 1000.0).unwrap_or(0.0);
}

fn wait_count(frr: &Frr, n: u64) -> f64 {
    frr.wait_received("ipv4", SPEAKER_V4, n, LIMIT)
        .unwrap_or_else(|e| panic!("{e}"));
    now()
}

fn bench_bird(frr: &Frr, n: u32, dir: &std::path::Path) -> Run {
    let mut cap = Capture::start(
        &TwoNodeLab::router_ns(TAG),
        "eth-r",
        "tcp port 179",
        &dir.join(format!("bird-{n}.pcap")),
    )
    .unwrap();
    let mut bird = Bird::start(&TwoNodeLab::speaker_ns(TAG), "flb-bn-bird", &bird_conf(n)).unwrap();
    // Like ferrolb (routes set before the session), BIRD holds the whole table before its
    // BGP session starts, so the wire time measures sending, not loading.
    lab::wait_for(LIMIT, Duration::from_millis(50), || {
        bird.birdc("show route count")
            .ok()
            .filter(|s| s.contains(&format!("{n} of {n} routes")))
    })
    .expect("BIRD loaded its static routes");
    bird.birdc("enable frr").unwrap();
    let mut run = Run {
        announce_frr_ms: wait_count(frr, n as u64) * 1000.0,
        ..Default::default()
    };
    bird.birdc("disable s4").unwrap();
    run.withdraw_frr_ms = wait_count(frr, 0) * 1000.0;
    bird.kill();
    cap.stop();
    analyse(&cap, &mut run);
    run
}

fn bench_ferrolb(frr: &Frr, n: u32, dir: &std::path::Path) -> Run {
    let mut cap = Capture::start(
        &TwoNodeLab::router_ns(TAG),
        "eth-r",
        "tcp port 179",
        &dir.join(format!("ferrolb-{n}.pcap")),
    )
    .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut run = Run::default();
    rt.block_on(async {
        let (engine, _events) = BgpEngine::start(EngineConfig {
            router_id: SPEAKER_V4.parse().unwrap(),
            listen: vec![],
        })
        .await
        .unwrap();
        let peer_ip: IpAddr = ROUTER_V4.parse().unwrap();
        let mut peer = PeerConfig::new(peer_ip, 65060, 65001);
        peer.families = vec![Family::IPV4_UNICAST];
        engine.add_peer(peer).unwrap();
        let routes: Vec<(IpNet, RouteAttributes)> = (0..n)
            .map(|i| {
                (
                    IpNet::new(IpAddr::V4(host(i)), 32).unwrap(),
                    RouteAttributes::default(),
                )
            })
            .collect();
        engine.set_routes(peer_ip, routes).unwrap();
        run.announce_frr_ms = tokio::task::block_in_place(|| wait_count(frr, n as u64)) * 1000.0;
        engine.set_routes(peer_ip, Vec::new()).unwrap();
        run.withdraw_frr_ms = tokio::task::block_in_place(|| wait_count(frr, 0)) * 1000.0;
        engine.shutdown(ShutdownMode::Cease(None)).await;
    });
    cap.stop();
    analyse(&cap, &mut run);
    run
}

fn row(name: &str, n: u32, r: &Run) -> String {
    assert_eq!(
        (r.announced, r.withdrawn),
        (n as usize, n as usize),
        "{name}: prefixes seen on the wire"
    );
    format!(
        "| {name} | {n} | {:.1} | {} | {:.2} | {:.2} | {:.0} | {} | {:.2} | {:.0} |",
        r.establish_ms,
        r.announce_updates,
        r.announce_wire_ms,
        r.announce_wire99_ms,
        r.announce_frr_ms,
        r.withdraw_updates,
        r.withdraw_wire_ms,
        r.withdraw_frr_ms
    )
}

#[test]
#[ignore = "benchmark: run explicitly with --ignored --release"]
fn bgp_bench_ferrolb_vs_bird() {
    if lab::is_child(TEST) {
        let ns: Vec<u32> = std::env::var("FERROLB_BENCH_N")
            .unwrap_or_else(|_| "10000,100000".into())
            .split(',')
            .filter_map(|s| s.trim().parse().ok())
            .collect();
        let rounds: u32 = ferrolb_e2e::lab::env_number("FERROLB_BENCH_ROUNDS", 3);
        let dir = frr::lab_dir("flb-bn-pcap");
        let _ = std::fs::create_dir_all(&dir);
        println!("| sender | N | establish ms | announce UPDATEs | announce wire ms | 99% on wire ms | announce at FRR ms | withdraw UPDATEs | withdraw wire ms | withdraw at FRR ms |");
        println!("|---|---|---|---|---|---|---|---|---|---|");
        for n in ns {
            for _ in 0..rounds {
                let frr = Frr::start(&TwoNodeLab::router_ns(TAG), "flb-bn", &frr_conf()).unwrap();
                let b = bench_bird(&frr, n, &dir);
                frr.wait_state(SPEAKER_V4, "Active", Duration::from_secs(20))
                    .ok();
                let f = bench_ferrolb(&frr, n, &dir);
                println!("{}", row("BIRD 2.0.12", n, &b));
                println!("{}", row("ferrolb-bgp", n, &f));
                println!(
                    "| ratio ferrolb/BIRD | {n} | | | {:.4} | {:.4} | {:.2} | | {:.4} | {:.2} |",
                    f.announce_wire_ms / b.announce_wire_ms,
                    f.announce_wire99_ms / b.announce_wire99_ms,
                    f.announce_frr_ms / b.announce_frr_ms,
                    f.withdraw_wire_ms / b.withdraw_wire_ms,
                    f.withdraw_frr_ms / b.withdraw_frr_ms
                );
            }
        }
        return;
    }
    if let Some(why) = lab::skip_reason() {
        eprintln!("SKIP: {TEST}: {why}");
        return;
    }
    for (path, package) in [
        (lab::bird::BIRD, "bird2"),
        ("/usr/bin/tcpdump", "tcpdump"),
        ("/usr/bin/tshark", "tshark"),
    ] {
        if !std::path::Path::new(path).exists() {
            eprintln!("SKIP: {TEST}: needs {package}");
            return;
        }
    }
    let lab = TwoNodeLab::new(TAG).unwrap();
    let out = lab::run_in_netns(&lab.speaker, TEST, Duration::from_secs(1200));
    frr::kill_leftovers("flb-bn");
    lab::bird::kill_leftovers("flb-bn-bird");
    match out {
        Ok(o) => println!("{o}"),
        Err(e) => panic!("{e}"),
    }
}
